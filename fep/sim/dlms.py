"""A simulated DLMS/COSEM meter for tests, the demo and benchmarks: serves its objects over
the TCP wrapper or HDLC (over TCP or a serial pty), with no security, LLS or HLS-GMAC and
suite-0 ciphering, and pushes ciphered Data-Notifications to a receiver on a schedule.

``python -m fep.sim.dlms --tcp 4059``
``python -m fep.sim.dlms --tcp 4061 --hdlc --password 12345678``
``python -m fep.sim.dlms --push tcp:host=127.0.0.1:port=4059 --every 5 --ek 00.. --ak D0..``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from fep.errors import FrameError
from fep.protocols.dlms import hdlc, wrapper
from fep.protocols.dlms.cosem import KeyId
from fep.protocols.dlms.security import SecurityKeys
from fep.protocols.dlms.server import DlmsServer, ServerSettings
from fep.sim import serve
from fep.sim.dlms_meter import SimulatedDlmsMeter

log = Logger(namespace="fep.sim.dlms")

# Green Book example keys: what the demo and tests use unless told otherwise.
EXAMPLE_EK = bytes(range(16))
EXAMPLE_AK = bytes(range(0xD0, 0xE0))
# Management logical device (server logical address 1), as most meters have.
LOGICAL_DEVICE = 1


class DlmsMeterServerProtocol(Protocol):
    """One client connection to the simulated meter (wrapper or HDLC)."""

    def __init__(self, factory: DlmsMeterServerFactory) -> None:
        self.factory = factory
        self.server = DlmsServer(
            factory.meter,
            factory.association_settings(),
            invocation_counter=factory.next_counter(),
            received_counters=factory.received_counters,
            seen_counters=factory.seen_counters,
        )
        self.server.errors = factory.errors  # one list per simulated meter
        self.wrapper_decoder = wrapper.WrapperDecoder()
        self.hdlc_link = (
            hdlc.HdlcServerLink(hdlc.HdlcAddress(LOGICAL_DEVICE, factory.physical_address))
            if factory.hdlc
            else None
        )

    def dataReceived(self, data: bytes) -> None:
        if not self.factory.meter.powered:
            # Without power the meter's modem is off: the connection is gone.
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        if self.hdlc_link is not None:
            self._hdlc(data)
        else:
            self._wrapper(data)

    def _wrapper(self, data: bytes) -> None:
        # Every frame of the bytes: a request behind a bad frame is answered now.
        for frame in self.wrapper_decoder.decode_all(data):
            if isinstance(frame, FrameError):
                log.info("simulated meter: wrapper frame error: {e}", e=str(frame))
                continue
            if frame.destination_wport != LOGICAL_DEVICE:
                continue
            answer = self.server.receive(frame.apdu)
            if answer is not None:
                self.transport.write(wrapper.encode_wrapper(frame.reply(answer)))  # type: ignore[union-attr]

    def _hdlc(self, data: bytes) -> None:
        assert self.hdlc_link is not None
        try:
            events = self.hdlc_link.receive_data(data)
        except FrameError as e:
            log.info("simulated meter: HDLC frame error: {e}", e=str(e))
            return
        for event in events:
            if isinstance(event, hdlc.SendFrame):
                self.transport.write(event.data)  # type: ignore[union-attr]
            elif isinstance(event, hdlc.ApduReceived):
                answer = self.server.receive(event.apdu)
                if answer is not None:
                    for chunk in self.hdlc_link.send(answer):
                        self.transport.write(chunk)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.factory.invocation_counter = max(
            self.factory.invocation_counter, self.server.invocation_counter
        )


class DlmsMeterServerFactory(Factory):
    def __init__(
        self,
        meter: SimulatedDlmsMeter,
        settings: ServerSettings,
        *,
        hdlc: bool = False,
        physical_address: int | None = None,
        forget_counters_on_new_key: bool = True,
    ) -> None:
        self.meter = meter
        self.settings = settings
        # As the Green Book has it, an invocation counter belongs to its key: with a new
        # global unicast encryption key the meter forgets the last counters it accepted and
        # counts its own from 1 again. False: as many field meters do, it keeps both.
        self.forget_counters_on_new_key = forget_counters_on_new_key
        self.hdlc = hdlc
        self.physical_address = physical_address
        self.invocation_counter = 1
        self.received_counters: dict[bytes, int] = {}
        # Every (client system title, invocation counter) the meter was sent, in order.
        self.seen_counters: list[tuple[bytes, int]] = []
        self.errors: list[str] = []

    def association_settings(self) -> ServerSettings:
        """The settings of a new association: with the keys the meter took by key
        transfer since the last one (a meter switches keys between associations)."""
        moved = self.meter.transferred_keys
        if moved and self.settings.keys is not None:
            keys = self.settings.keys
            self.settings = attrs.evolve(self.settings, keys=SecurityKeys(
                moved.pop(KeyId.GLOBAL_UNICAST_ENCRYPTION, keys.block_cipher_key),
                moved.pop(KeyId.AUTHENTICATION, keys.authentication_key),
            ))
            assert self.settings.keys is not None
            if (self.forget_counters_on_new_key
                    and self.settings.keys.block_cipher_key != keys.block_cipher_key):
                self.received_counters.clear()  # in place: the servers share this dict
                self.invocation_counter = 1
        if moved and KeyId.MASTER in moved:
            self.meter.kek = moved.pop(KeyId.MASTER)
        moved.clear()
        return self.settings

    def next_counter(self) -> int:
        # Each association continues where the last left off: a meter never reuses one.
        start = self.invocation_counter
        self.invocation_counter += 10_000
        return start

    def buildProtocol(self, addr: Any) -> Protocol | None:
        if not self.meter.powered:
            return None  # a meter without power answers nothing: the connection is closed
        return DlmsMeterServerProtocol(self)


class PushingDlmsMeterProtocol(Protocol):
    """Connects to a receiver and sends a Data-Notification every ``every`` seconds."""

    def __init__(self, factory: PushingDlmsMeterFactory) -> None:
        self.factory = factory
        self._loop: LoopingCall | None = None

    def push(self) -> None:
        f = self.factory
        apdu = f.server.push(f.meter.push_body())
        frame = wrapper.WrapperFrame(LOGICAL_DEVICE, f.destination_wport, apdu)
        assert self.transport is not None
        self.transport.write(wrapper.encode_wrapper(frame))
        f.pushed += 1

    def connectionMade(self) -> None:
        self._loop = LoopingCall(self.push)
        self._loop.clock = self.factory.reactor
        self._loop.start(self.factory.every, now=True)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self._loop is not None and self._loop.running:
            self._loop.stop()


class PushingDlmsMeterFactory(ClientFactory):
    def __init__(
        self,
        meter: SimulatedDlmsMeter,
        settings: ServerSettings,
        every: float,
        reactor: IReactorTime,
        *,
        destination_wport: int = 1,
        invocation_counter: int = 1,
    ) -> None:
        self.meter = meter
        self.server = DlmsServer(meter, settings, invocation_counter=invocation_counter)
        self.every = every
        self.reactor = reactor
        self.destination_wport = destination_wport
        self.pushed = 0

    def buildProtocol(self, addr: Any) -> Protocol:
        return PushingDlmsMeterProtocol(self)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fep.sim.dlms", description="A simulated DLMS/COSEM meter"
    )
    parser.add_argument("--tcp", type=int, metavar="PORT", help="listen on this TCP port")
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--hdlc", action="store_true", help="HDLC framing instead of wrapper")
    parser.add_argument("--pty", metavar="DEVICE", help="serve HDLC on this serial device")
    parser.add_argument("--serial", default="FEP0000001", help="the meter's serial number")
    parser.add_argument(
        "--system-title", default="4645505349000001", help="the meter's system title (hex, 8 bytes)"
    )
    parser.add_argument("--password", help="LLS password (enables low-level authentication)")
    parser.add_argument("--ek", help="block cipher key (hex); default the Green Book key")
    parser.add_argument("--ak", help="authentication key (hex); default the Green Book key")
    parser.add_argument(
        "--no-lowest", action="store_true", help="refuse associations without authentication"
    )
    parser.add_argument("--push", metavar="ENDPOINT", help="push Data-Notifications here")
    parser.add_argument("--every", type=float, default=5.0, help="push period in seconds")
    parser.add_argument("--capture-period", type=int, default=900)
    args = parser.parse_args(argv)
    if not (args.tcp is not None or args.pty or args.push):
        parser.error("give --tcp, --pty or --push")

    from twisted.internet.endpoints import clientFromString

    reactor = serve.command_reactor()
    title = bytes.fromhex(args.system_title)
    keys = SecurityKeys(
        bytes.fromhex(args.ek) if args.ek else EXAMPLE_EK,
        bytes.fromhex(args.ak) if args.ak else EXAMPLE_AK,
    )
    meter = SimulatedDlmsMeter(
        serial=args.serial, system_title=title, capture_period=args.capture_period
    )
    settings = ServerSettings(
        system_title=title,
        password=args.password.encode() if args.password else None,
        keys=keys,
        allow_lowest=not args.no_lowest,
    )
    if args.tcp is not None:
        factory = DlmsMeterServerFactory(meter, settings, hdlc=args.hdlc)
        link = "hdlc" if args.hdlc else "wrapper"
        serve.serve_tcp(
            reactor, args.tcp, factory, args.interface, f"DLMS meter {args.serial} ({link})"
        )
    if args.pty:
        serve.serve_pty(
            reactor, args.pty, DlmsMeterServerFactory(meter, settings, hdlc=True),
            baudrate=9600, frame="8N1",
        )
        print(f"serving DLMS meter {args.serial} (hdlc) on {args.pty}", flush=True)
    if args.push:
        from twisted.application.internet import ClientService

        service = ClientService(
            clientFromString(reactor, args.push),
            PushingDlmsMeterFactory(meter, settings, args.every, reactor),
        )
        service.startService()
        print(f"pushing DLMS meter {args.serial} to {args.push} every {args.every} s", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
