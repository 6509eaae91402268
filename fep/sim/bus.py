"""A simulated multidrop bus: several of fep's meter simulators, of mixed protocols and
addresses, on one line (a pty, or a TCP port standing in for a serial server's).

Every byte on the line reaches every meter, as on RS-485; each meter answers only what is
addressed to it (IEC 62056-21 device address, DL/T 645 address, HDLC physical address) and
ignores the rest, foreign protocols included. A meter's answer goes onto the shared line;
a speed change (IEC 62056-21 mode C) changes the line for all.

``python -m fep.sim.bus --pty /dev/pts/5 --iec 10000001 --dlt645 000000123456 --dlms 17``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer

from fep.interfaces import ISerialLine
from fep.reactors import IConnectingReactor
from fep.sim import serve

log = Logger(namespace="fep.sim.bus")


@attrs.frozen
class BusMember:
    """One simulated meter on the bus: what it is (for logs) and the factory of the
    simulator serving it (IecMeterServerFactory, Dlt645BusFactory, DlmsMeterServerFactory,
    C12MeterServerFactory, ...)."""

    name: str
    factory: IProtocolFactory


@implementer(IAddress)
@attrs.frozen
class BusAddress:
    member: str


@implementer(ITransport)
class _Tap:
    """A member's connection to the shared line: what it writes goes onto the line, a speed
    change changes the line. A meter cannot close the bus: loseConnection is ignored."""

    def __init__(self, bus: SimulatedBus, member: BusMember) -> None:
        self._bus = bus
        self.member = member
        self.written = 0
        self.disconnecting = False
        if ISerialLine(bus.transport, None) is not None:
            directlyProvides(self, ISerialLine)

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self._bus.put(data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def set_baudrate(self, baudrate: int) -> None:
        ISerialLine(self._bus.transport).set_baudrate(baudrate)

    @property
    def baudrate(self) -> int:
        return int(getattr(self._bus.transport, "baudrate", 0))

    def loseConnection(self) -> None:
        return None

    def abortConnection(self) -> None:
        return None

    def getPeer(self) -> BusAddress:
        return BusAddress("line")

    def getHost(self) -> BusAddress:
        return BusAddress(self.member.name)


class SimulatedBus(Protocol):
    """The meters' side of one line: every byte heard goes to every member. ``echo``: the
    line carries the master's transmission back to it, as through an RS-485 adapter that
    hears itself in half-duplex."""

    def __init__(self, members: Sequence[BusMember], *, echo: bool = False) -> None:
        self.members = list(members)
        self.echo = echo
        self.protocols: list[tuple[BusMember, IProtocol, _Tap]] = []
        self.heard = 0

    def connectionMade(self) -> None:
        for member in self.members:
            protocol = member.factory.buildProtocol(BusAddress(member.name))
            if protocol is None:
                continue
            tap = _Tap(self, member)
            self.protocols.append((member, protocol, tap))
            protocol.makeConnection(tap)

    def put(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        self.heard += len(data)
        if self.echo:
            self.put(data)
        for member, protocol, _tap in self.protocols:
            try:
                protocol.dataReceived(data)
            except Exception:
                # A simulator that trips over a foreign protocol's bytes is a bug in it;
                # the other meters on the line carry on.
                log.failure("bus member {member} failed on {size} bytes", member=member.name,
                            size=len(data))

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        for _member, protocol, _tap in self.protocols:
            protocol.connectionLost(reason)

    def answered(self) -> dict[str, int]:
        """Bytes each member has put on the line."""
        return {member.name: tap.written for member, _p, tap in self.protocols}


class SimulatedBusFactory(ServerFactory[SimulatedBus]):
    """A bus per connection (a serial line is one connection)."""

    noisy = False

    def __init__(self, members: Sequence[BusMember], *, echo: bool = False) -> None:
        self.members = list(members)
        self.echo = echo
        self.buses: list[SimulatedBus] = []

    def buildProtocol(self, addr: object) -> SimulatedBus:
        bus = SimulatedBus(self.members, echo=self.echo)
        bus.factory = self
        self.buses.append(bus)
        return bus


def mixed_bus(
    reactor: IReactorTime,
    *,
    iec: Sequence[str] = (),
    dlt645: Sequence[str] = (),
    dlms: Sequence[int] = (),
    answer_delay: float = 0.0,
    echo: bool = False,
) -> SimulatedBusFactory:
    """A bus of IEC 62056-21 meters (device addresses), DL/T 645-2007 meters (12-digit
    addresses) and DLMS meters over HDLC (physical addresses; logical device 1, no
    security), in that order; ``echo``: the line echoes the master."""
    from decimal import Decimal

    from fep.protocols.dlms.server import ServerSettings
    from fep.sim.dlms import DlmsMeterServerFactory
    from fep.sim.dlms_meter import SimulatedDlmsMeter
    from fep.sim.dlt645 import Dlt645BusFactory, SimulatedDlt645Meter
    from fep.sim.iec62056_21 import IecMeterServerFactory, Register, SimulatedIecMeter

    members: list[BusMember] = []
    for n, address in enumerate(iec, 1):
        meter = SimulatedIecMeter(
            address=address,
            identification=f"BUS{n:03d}",
            registers=[
                Register("1.8.0", Decimal(1000 * n) + Decimal("0.5"), Decimal("0.9")),
                Register("2.8.0", Decimal(10 * n), Decimal("0.1")),
            ],
        )
        members.append(BusMember(f"iec62056-21@{address}",
                                 IecMeterServerFactory([meter], reactor, answer_delay)))
    for address in dlt645:
        members.append(BusMember(
            f"dlt645@{address}",
            Dlt645BusFactory([SimulatedDlt645Meter(address=address)], reactor, answer_delay),
        ))
    for physical in dlms:
        dlms_meter = SimulatedDlmsMeter(serial=f"BUS{physical:07d}")
        members.append(BusMember(
            f"dlms@1/{physical}",
            DlmsMeterServerFactory(dlms_meter, ServerSettings(), hdlc=True,
                                   physical_address=physical),
        ))
    return SimulatedBusFactory(members, echo=echo)


def serve_pty(
    reactor: IConnectingReactor, device: str, factory: SimulatedBusFactory, *, baudrate: int = 300,
    frame: str = "7E1",
) -> Any:
    """Serve the bus on a serial device or pty (line settings as the meters start)."""
    return serve.serve_pty(reactor, device, factory, baudrate=baudrate, frame=frame)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fep.sim.bus",
        description="Simulated meters of mixed protocols on one multidrop line",
    )
    parser.add_argument("--pty", metavar="DEVICE", help="serve on this serial device or pty")
    parser.add_argument("--tcp", type=int, metavar="PORT", help="serve on this TCP port")
    parser.add_argument("--interface", default="127.0.0.1", help="TCP listen address")
    parser.add_argument("--iec", action="append", default=[], metavar="ADDRESS",
                        help="an IEC 62056-21 meter with this device address (repeatable)")
    parser.add_argument("--dlt645", action="append", default=[], metavar="ADDRESS",
                        help="a DL/T 645-2007 meter with this 12-digit address (repeatable)")
    parser.add_argument("--dlms", action="append", type=int, default=[], metavar="PHYSICAL",
                        help="a DLMS meter over HDLC at this physical address (repeatable)")
    parser.add_argument("--baud", type=int, default=300, help="line speed at start")
    parser.add_argument("--frame", default="7E1", help="data bits, parity, stop bits")
    parser.add_argument("--delay", type=float, default=0.0, help="answer delay in seconds")
    parser.add_argument("--echo", action="store_true",
                        help="echo the master's bytes back (a half-duplex RS-485 adapter)")
    args = parser.parse_args(argv)
    if not (args.pty or args.tcp is not None):
        parser.error("give --pty or --tcp")
    if not (args.iec or args.dlt645 or args.dlms):
        parser.error("give at least one meter (--iec, --dlt645, --dlms)")

    reactor = serve.command_reactor()
    factory = mixed_bus(reactor, iec=args.iec, dlt645=args.dlt645, dlms=args.dlms,
                        answer_delay=args.delay, echo=args.echo)
    names = ", ".join(m.name for m in factory.members)
    if args.tcp is not None:
        serve.serve_tcp(reactor, args.tcp, factory, args.interface, names)
    if args.pty:
        serve_pty(reactor, args.pty, factory, baudrate=args.baud, frame=args.frame)
        print(f"serving {names} on {args.pty}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
