"""A simulated GPRS modem (a DTU in transparent mode) with a simulated meter behind it: it
dials in to fep's GPRS listener, registers, pushes the meter's data and answers pulls over
the same socket; it can reconnect (also in the middle of a push), go half-open (vanish
without a FIN) and send garbage before its registration.

The meter behind it is fep's DLMS simulator (fep.sim.dlms_meter, ciphered Data-Notifications
and a wrapper server) or its IEC 62056-21 simulator (fep.sim.iec62056_21, readouts). The
meter's clock advances one ``step`` per push, so every push carries its own meter time.

``python -m fep.sim.gprs_modem --connect tcp:host=127.0.0.1:port=4070 --imei 356938035643809``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from fep.channels.identify import encode_binary_registration
from fep.protocols.dlms import wrapper
from fep.protocols.dlms.security import SecurityKeys
from fep.protocols.dlms.server import ServerSettings
from fep.sim import serve
from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK, LOGICAL_DEVICE, DlmsMeterServerFactory
from fep.sim.dlms_meter import SimulatedDlmsMeter
from fep.sim.iec62056_21 import IecMeterServerFactory, SimulatedIecMeter

# Where the simulated meters' clocks start (each push moves them one step on).
CLOCK_START = datetime(2024, 1, 1, tzinfo=UTC)
# The wrapper port pushes are sent to (a push setup's destination, not the pull client's).
PUSH_WPORT = 102


@attrs.define
class ModemSpec:
    """Who the modem is and how it says so: ``registration`` is ``ascii``, ``binary`` or
    ``none`` (the first push identifies it: DLMS system title, IEC identification)."""

    imei: str
    iccid: str | None = None
    serial: str | None = None
    registration: str = "ascii"
    meter: str = "dlms"  # or "iec62056-21"
    system_title: bytes = b"FEPSIM\x00\x01"
    keys: SecurityKeys | None = attrs.field(
        factory=lambda: SecurityKeys(EXAMPLE_EK, EXAMPLE_AK), repr=False
    )
    iec_address: str = "12345678"
    step: timedelta = timedelta(minutes=15)
    garbage: bytes = b""
    # A DLMS meter that pushes the moment a pull's AARQ arrives (before its AARE): the
    # head end must tell that push from the answer it waits for.
    push_on_pull: bool = False
    # The modem's secret, sent in its registration (SECRET=..., binary tag 05).
    secret: str | None = attrs.field(default=None, repr=False)
    # The DLMS meter's LLS password (None: no low-level authentication).
    password: bytes | None = attrs.field(default=None, repr=False)

    def registration_bytes(self) -> bytes:
        if self.registration == "ascii":
            line = f"ID:{self.imei}"
            if self.iccid:
                line += f";ICCID={self.iccid}"
            if self.serial:
                line += f";SN={self.serial}"
            if self.secret:
                line += f";SECRET={self.secret}"
            return (line + "\r\n").encode("ascii")
        if self.registration == "binary":
            return encode_binary_registration(imei=self.imei, iccid=self.iccid, serial=self.serial,
                                              secret=self.secret)
        return b""


class ModemConnection(Protocol):
    """One TCP connection of the modem."""

    def __init__(self, modem: SimulatedGprsModem) -> None:
        self.modem = modem
        self.inner: Protocol | None = None
        self.connected_d: Deferred[ModemConnection] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.mute = False

    def connectionMade(self) -> None:
        self.inner = self.modem.meter_protocol()
        self.inner.makeConnection(self.transport)
        self.connected_d.callback(self)

    def dataReceived(self, data: bytes) -> None:
        if self.mute or self.inner is None:
            return
        if self.modem.intercept is not None and self.modem.intercept(self, data):
            return  # the DTU's own configuration mode took it (fep.sim.terminal)
        self.modem.pulled(data)
        if self.modem.spec.push_on_pull and _is_aarq(data):
            self.modem.push()
        self.inner.dataReceived(data)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.mute:
            self.transport.write(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self.inner is not None:
            self.inner.connectionLost(reason)
        if not self.lost.called:
            self.lost.callback(None)


def _is_aarq(data: bytes) -> bool:
    """A wrapper frame carrying an AARQ (tag 0x60) at the start of ``data``."""
    return len(data) > 8 and data[:2] == b"\x00\x01" and data[8] == 0x60


class SimulatedGprsModem:
    """A modem and its meter. ``connect()`` dials in and registers; ``push()`` sends one
    push; ``start(every, count)`` pushes on a schedule. ``pushes`` lists the meter time of
    every push written whole (what the head end must end up with)."""

    def __init__(self, reactor: IReactorTime, endpoint: Any, spec: ModemSpec) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.spec = spec
        self.pushes: list[datetime] = []
        self.ticks = 0
        self.connection: ModemConnection | None = None
        self.stale: list[ModemConnection] = []
        self.pulls = 0
        # What the DTU itself takes before its meter sees it (its AT pass-through): called
        # with the connection and the bytes, True when it took them.
        self.intercept: Callable[[ModemConnection, bytes], bool] | None = None
        self._busy_until = 0.0
        self._loop: IDelayedCall | None = None
        self._remaining = 0
        self._every = 1.0
        if spec.meter == "dlms":
            self.dlms_meter = SimulatedDlmsMeter(
                serial=spec.serial or spec.imei[-8:],
                now=self.meter_time,
                system_title=spec.system_title,
            )
            self.dlms_factory = DlmsMeterServerFactory(
                self.dlms_meter,
                ServerSettings(system_title=spec.system_title, keys=spec.keys,
                               password=spec.password),
            )
        else:
            self.iec_meter = SimulatedIecMeter(
                address=spec.iec_address,
                serial=spec.serial,
                clock=lambda: self.meter_time().timestamp(),
                # No value with a time stamp of its own: every reading of a push carries
                # the push's meter time.
                extra_lines=["32.7.0(230.1*V)"],
            )
            self.iec_factory = IecMeterServerFactory([self.iec_meter], reactor)

    # -- the meter behind the modem -------------------------------------------------------------

    def meter_time(self) -> datetime:
        return CLOCK_START + self.ticks * self.spec.step

    def meter_protocol(self) -> Protocol:
        factory: Any = self.dlms_factory if self.spec.meter == "dlms" else self.iec_factory
        protocol: Protocol = factory.buildProtocol(None)
        return protocol

    def pulled(self, data: bytes) -> None:
        """The head end sent something: a meter on a serial line does not push while it
        answers (IEC 62056-21 cannot tell a push from an answer), so pushes wait a while."""
        self.pulls += 1
        if self.spec.meter != "dlms":
            self._busy_until = self.reactor.seconds() + 1.0

    def push_bytes(self) -> bytes:
        """The next push as the meter sends it (its clock moved one step on)."""
        self.ticks += 1
        if self.spec.meter == "dlms":
            assert self.connection is not None and self.connection.inner is not None
            server = self.connection.inner.server  # type: ignore[attr-defined]
            apdu = server.push(self.dlms_meter.push_body())
            return wrapper.encode_wrapper(wrapper.WrapperFrame(LOGICAL_DEVICE, PUSH_WPORT, apdu))
        meter = self.iec_meter
        return meter.identification_message().encode() + meter.readout_block()

    # -- connecting -----------------------------------------------------------------------------

    def connect(self, register: bool = True) -> Deferred[ModemConnection]:
        """Dial in; garbage (if any) and the registration go first. A push-identified modem
        (registration ``none``) pushes at once."""

        async def run() -> ModemConnection:
            protocol = ModemConnection(self)
            await self.endpoint.connect(_Once(protocol))
            self.connection = protocol
            if self.spec.garbage:
                protocol.write(self.spec.garbage)
            if register:
                protocol.write(self.spec.registration_bytes())
                if self.spec.registration == "none":
                    self.push()
            return protocol

        return Deferred.fromCoroutine(run())

    def push(self) -> bool:
        """One push on the current connection; False when there is none."""
        if self.connection is None or self.connection.mute:
            return False
        data = self.push_bytes()
        self.connection.write(data)
        self.pushes.append(self.meter_time())
        return True

    async def reconnect_mid_push(self, close_old: bool = False) -> None:
        """Write half of the next push, then dial in again (leaving the old connection
        half-open, or closing it), register, and send that push whole on the new one: what
        a DTU does with the serial bytes it could not deliver."""
        assert self.connection is not None
        old = self.connection
        data = self.push_bytes()
        old.write(data[: len(data) // 2])
        if close_old:
            old.transport.loseConnection()  # type: ignore[union-attr]
        else:
            old.mute = True
            self.stale.append(old)
        await self.connect(register=False)
        assert self.connection is not None
        self.connection.write(self.spec.registration_bytes() + data)
        self.pushes.append(self.meter_time())

    def go_half_open(self) -> None:
        """Vanish without a FIN: stop sending and reading; the socket stays open."""
        self.stop()
        if self.connection is not None:
            self.connection.mute = True
            transport = self.connection.transport
            if transport is not None:
                transport.stopReading()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.stop()
        for connection in [*self.stale, self.connection]:
            if connection is not None and connection.transport is not None:
                connection.transport.abortConnection()  # type: ignore[attr-defined]

    # -- pushing on a schedule --------------------------------------------------------------------

    def start(self, every: float, count: int) -> None:
        self._every = every
        self._remaining = count
        self._loop = self.reactor.callLater(every, self._tick)

    def _tick(self) -> None:
        self._loop = None
        if self._remaining <= 0:
            return
        wait = self._busy_until - self.reactor.seconds()
        if wait > 0:
            self._loop = self.reactor.callLater(wait, self._tick)
            return
        if self.push():
            self._remaining -= 1
        if self._remaining > 0:
            self._loop = self.reactor.callLater(self._every, self._tick)

    @property
    def pushing(self) -> bool:
        return self._loop is not None

    def stop(self) -> None:
        if self._loop is not None and self._loop.active():
            self._loop.cancel()
        self._loop = None


class _Once(Factory):
    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_instance


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fep.sim.gprs_modem",
        description="A simulated GPRS modem with a meter behind it, dialling in to fep",
    )
    parser.add_argument("--connect", required=True, help="fep's GPRS listener (endpoint)")
    parser.add_argument("--imei", default="356938035643809")
    parser.add_argument("--iccid")
    parser.add_argument("--serial", help="the meter's serial number")
    parser.add_argument("--registration", choices=("ascii", "binary", "none"), default="ascii")
    parser.add_argument("--meter", choices=("dlms", "iec62056-21"), default="dlms")
    parser.add_argument("--system-title", default="4645505349000001", help="DLMS (hex)")
    parser.add_argument("--every", type=float, default=5.0, help="push period in seconds")
    parser.add_argument("--count", type=int, default=1_000_000, help="pushes to send")
    parser.add_argument("--garbage", default="", help="text sent before the registration")
    args = parser.parse_args(argv)

    from twisted.internet.endpoints import clientFromString

    reactor = serve.command_reactor()
    spec = ModemSpec(
        imei=args.imei,
        iccid=args.iccid,
        serial=args.serial,
        registration=args.registration,
        meter=args.meter,
        system_title=bytes.fromhex(args.system_title),
        garbage=args.garbage.encode("latin-1"),
    )
    modem = SimulatedGprsModem(reactor, clientFromString(reactor, args.connect), spec)

    def connected(_: object) -> None:
        print(f"modem {args.imei} ({args.meter}) connected to {args.connect}", flush=True)
        modem.start(args.every, args.count)
        assert modem.connection is not None
        modem.connection.lost.addCallback(lambda _: reactor.stop())

    def failed(failure: Failure) -> None:
        print(f"cannot connect: {failure.getErrorMessage()}", file=sys.stderr, flush=True)
        reactor.stop()

    reactor.callWhenRunning(lambda: modem.connect().addCallbacks(connected, failed))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
