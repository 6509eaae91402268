"""Ethernet serial servers as Twisted client endpoints: RFC 2217 (telnet Com Port Control)
``rfc2217:host=10.0.0.5:port=4001:baudrate=300:bytesize=7:parity=E``.

A connect opens TCP to the server, negotiates COM-PORT-OPTION and binary, sets the line
(speed, data bits, parity, stop bits, flow control) and waits for the server to acknowledge
each setting; only then does the meter session get its connection. Its transport provides
ISerialLine: ``set_baudrate`` sends SET-BAUDRATE once the bytes written before have left
the wire, so an IEC 62056-21 mode C baud switch happens at the serial server's port. The
line discipline options of ``serial:`` routes (``echo``, ``gap``) apply too.

A serial server port in raw TCP mode needs no code of ours: it is a ``tcp:`` route
(docs/channels/serial.md).

The telnet and RFC 2217 logic is in fep.channels.rfc2217 (sans-IO); this is the adapter.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.channels import rfc2217
from fep.channels.lines import LineSettings
from fep.channels.serialport import (
    LINE_OPTIONS,
    PacedLine,
    parse_frame,
    parse_line_option,
    whole_stopbits,
)
from fep.errors import ChannelError
from fep.interfaces import ISerialLine
from fep.reactors import IConnectingReactor

log = Logger(namespace="fep.channels.serialserver")

# Seconds the server has to agree to RFC 2217 and acknowledge the line settings.
DEFAULT_NEGOTIATION_TIMEOUT = 10.0


@implementer(IAddress)
@attrs.frozen
class SerialServerAddress:
    """The address of a serial-server transport: the server's host and TCP port."""

    host: str
    port: int


@attrs.frozen
class SerialServerSettings(LineSettings):
    """An ``rfc2217:`` route: where the server is and how its serial port is to be set."""

    host: str
    port: int
    timeout: float = attrs.field(default=DEFAULT_NEGOTIATION_TIMEOUT, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if not self.host:
            raise ValueError("rfc2217 route without a host")
        if not 0 < self.port < 65536:
            raise ValueError(f"option port: {self.port} is not 1..65535")
        if not self.timeout > 0:
            raise ValueError(f"option timeout: {self.timeout} s is not positive")
        super().__attrs_post_init__()

    @property
    def route(self) -> str:
        frame = f"{self.bytesize}{self.parity}{self.stopbits:g}"
        return f"rfc2217:host={self.host}:port={self.port}:{self.baudrate}:{frame}"


def parse_rfc2217_args(*args: str, **kwargs: str) -> SerialServerSettings:
    """Endpoint-string arguments -> settings. Positional: host, port, then optionally the
    baudrate and a frame such as ``7E1``; keywords: host, port, timeout and the line options
    of serial routes (baudrate, bytesize, parity, stopbits, xonxoff, rtscts, echo, gap)."""
    if len(args) > 4:
        raise ValueError(f"too many positional arguments in rfc2217 route: {args!r}")
    values: dict[str, Any] = {}
    names = ("host", "port", "baudrate", "frame")
    for name, text in zip(names, args, strict=False):
        if name == "frame":
            values.update(parse_frame(text))
        elif name == "baudrate":
            values[name] = parse_line_option(name, text)
        else:
            values[name] = text
    for key, text in kwargs.items():
        if key in ("host", "port"):
            values[key] = text
        elif key == "timeout":
            values[key] = _seconds(key, text)
        elif key in LINE_OPTIONS:
            values[key] = parse_line_option(key, text)
        else:
            raise ValueError(
                f"unknown rfc2217 option {key!r} (known: host, port, timeout, "
                f"{', '.join(LINE_OPTIONS)})"
            )
    if "host" not in values or "port" not in values:
        raise ValueError("rfc2217 route needs host and port (rfc2217:host=HOST:port=PORT)")
    try:
        values["port"] = int(values["port"])
    except ValueError:
        raise ValueError(f"option port: {values['port']!r} is not a number") from None
    whole_stopbits(values)
    return SerialServerSettings(**values)


def _seconds(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"option {name}: {text!r} is not a number of seconds") from None


@implementer(ITransport, ISerialLine)
class SerialServerTransport:
    """The meter session's transport over an RFC 2217 connection: serial data in and out
    (IAC-escaped on the way), line speed changes through the server."""

    def __init__(self, negotiator: _Negotiator) -> None:
        self._negotiator = negotiator
        self._tcp: Any = negotiator.transport
        settings = negotiator.settings
        self.settings = settings
        self._baudrate = settings.baudrate
        self._char_bits = settings.char_bits
        self.disconnecting = False
        self.line = PacedLine(
            negotiator.reactor,
            line=f"rfc2217:{settings.host.lower()}:{settings.port}",
            echo=settings.echo,
            gap=settings.gap,
            send=self._send,
            apply_baudrate=self._apply_baudrate,
            baudrate=lambda: self._baudrate,
            char_bits=self._char_bits,
        )

    # -- ISerialLine ---------------------------------------------------------------------

    @property
    def baudrate(self) -> int:
        """The speed the server has acknowledged last."""
        return self._baudrate

    @property
    def char_bits(self) -> float:
        return self._char_bits

    def set_baudrate(self, baudrate: int) -> None:
        """Ask the server for a new speed once the bytes written before have left the wire;
        the session is cut if the server does not set it."""
        self.line.set_baudrate(baudrate)

    def _apply_baudrate(self, baudrate: int) -> None:
        self._tcp.write(self._negotiator.client.set_baudrate(baudrate))
        # Our bytes are timed at the new speed from now on; the server's acknowledgement
        # confirms it (or the session ends, see _Negotiator).
        self._baudrate = baudrate

    def out_waiting(self) -> int:
        """Bytes not yet sent on to the server: held for the gap or in the TCP buffer."""
        tcp = self._tcp
        buffered = len(getattr(tcp, "dataBuffer", b"")) - getattr(tcp, "offset", 0)
        return max(buffered, 0) + int(getattr(tcp, "_tempDataLen", 0)) + self.line.held_bytes()

    # -- ITransport ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.line.write(data)

    def writeSequence(self, data: Any) -> None:
        self.line.write(b"".join(data))

    def _send(self, data: bytes) -> None:
        self._tcp.write(self._negotiator.client.encode(data))

    def loseConnection(self) -> None:
        self.disconnecting = True
        self._tcp.loseConnection()

    def abortConnection(self) -> None:
        self.disconnecting = True
        abort = getattr(self._tcp, "abortConnection", None)
        (abort or self._tcp.loseConnection)()

    def getPeer(self) -> SerialServerAddress:
        return SerialServerAddress(self.settings.host, self.settings.port)

    def getHost(self) -> SerialServerAddress:
        return SerialServerAddress(self.settings.host, self.settings.port)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._tcp.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._tcp.unregisterProducer()


class _Negotiator(Protocol):
    """The TCP protocol of one RFC 2217 connection: negotiates, then carries the meter
    session's bytes both ways."""

    def __init__(
        self,
        reactor: IReactorTime,
        settings: SerialServerSettings,
        factory: IProtocolFactory,
        ready: Deferred[IProtocol],
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.client = rfc2217.Rfc2217Client(settings)
        self._factory = factory
        self._ready = ready
        self._timer: IDelayedCall | None = None
        self.session: IProtocol | None = None
        self.session_transport: SerialServerTransport | None = None
        self._error: ChannelError | None = None
        self.dropped = 0  # serial bytes that came before the line was set up
        self.bad_telnet = 0  # subnegotiations given up (the bytes after them read on)

    @property
    def route(self) -> str:
        return self.settings.route

    def connectionMade(self) -> None:
        self._timer = self.reactor.callLater(self.settings.timeout, self._negotiation_timed_out)
        assert self.transport is not None
        self.transport.write(self.client.start())

    def _negotiation_timed_out(self) -> None:
        self._timer = None
        agreed = "agreed to RFC 2217 but did not acknowledge the line settings" \
            if self.client.us(rfc2217.COM_PORT_OPTION) else "did not agree to RFC 2217"
        self._abort(ChannelError(
            f"serial server {self.settings.host}:{self.settings.port} {agreed} within "
            f"{self.settings.timeout:g} s (a raw TCP port is a tcp: route)",
            route=self.route,
        ))

    def _abort(self, error: ChannelError) -> None:
        if self._error is None:
            self._error = error
        if self.session is None and not self._ready.called:
            self._ready.errback(Failure(error))
        log.warn("{route}: {error}", route=self.route, error=error.message)
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        for action in self.client.receive_data(data):
            if isinstance(action, rfc2217.Send):
                assert self.transport is not None
                self.transport.write(action.data)
            elif isinstance(action, rfc2217.Received):
                self._serial_data(action.data)
            elif isinstance(action, rfc2217.Ready):
                self._line_ready()
            elif isinstance(action, rfc2217.Acknowledged):
                log.debug("{route}: server set {setting} = {value}", route=self.route,
                          setting=action.setting, value=action.value)
            elif isinstance(action, rfc2217.SettingRefused):
                self._abort(ChannelError(
                    f"serial server set {action.setting} to {action.got!r}, not "
                    f"{action.asked!r}",
                    route=self.route,
                ))
                return
            elif isinstance(action, rfc2217.BadTelnet):
                self.bad_telnet += 1
                log.warn("{route}: serial server sent bad telnet: {why}", route=self.route,
                         why=action.why)
            elif isinstance(action, rfc2217.Refused):
                self._abort(ChannelError(f"{action.why}", route=self.route))
                return

    def _serial_data(self, data: bytes) -> None:
        if self.session is None or self.session_transport is None:
            self.dropped += len(data)
            return
        data = self.session_transport.line.received(data)
        if data:
            self.session.dataReceived(data)

    def _line_ready(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._ready.called:  # cancelled meanwhile
            return
        protocol = self._factory.buildProtocol(self._transport_address())
        if protocol is None:
            self._abort(ChannelError("factory refused the connection", route=self.route))
            return
        self.session = protocol
        self.session_transport = SerialServerTransport(self)
        protocol.makeConnection(self.session_transport)
        self._ready.callback(protocol)

    def _transport_address(self) -> SerialServerAddress:
        return SerialServerAddress(self.settings.host, self.settings.port)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.session_transport is not None:
            self.session_transport.line.close()
        if self.session is not None:
            if self._error is not None:
                reason = Failure(self._error)
            self.session.connectionLost(reason)
        elif not self._ready.called:
            self._ready.errback(Failure(self._error or ChannelError(
                f"serial server closed the connection while negotiating: "
                f"{reason.getErrorMessage()}",
                route=self.route,
            )))


@implementer(IStreamClientEndpoint)
class Rfc2217Endpoint:
    """Connects to a serial server's RFC 2217 port through ``tcp`` (an endpoint to the
    server; by default a HostnameEndpoint) and fires once the line is set up."""

    def __init__(
        self,
        reactor: IConnectingReactor,
        settings: SerialServerSettings,
        tcp: IStreamClientEndpoint | None = None,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self._tcp = tcp or HostnameEndpoint(
            reactor, settings.host, settings.port, timeout=settings.timeout
        )

    @property
    def route(self) -> str:
        return self.settings.route

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        negotiator: list[_Negotiator] = []

        def cancel(d: Deferred[IProtocol]) -> None:
            connecting.cancel()
            if negotiator and negotiator[0].transport is not None:
                negotiator[0].transport.abortConnection()  # type: ignore[attr-defined]

        ready: Deferred[IProtocol] = Deferred(cancel)

        def build() -> _Negotiator:
            n = _Negotiator(self.reactor, self.settings, protocolFactory, ready)
            negotiator.append(n)
            return n

        factory = Factory.forProtocol(build)
        factory.noisy = False  # one per session: "Starting factory" lines would drown the log
        connecting = self._tcp.connect(factory)

        def not_connected(failure: Failure) -> None:
            if ready.called or failure.check(CancelledError):
                return
            ready.errback(Failure(ChannelError(
                f"cannot connect to serial server {self.settings.host}:{self.settings.port}: "
                f"{failure.getErrorMessage()}",
                route=self.route,
            )))

        connecting.addErrback(not_connected)
        return ready


def rfc2217_endpoint(
    reactor: IConnectingReactor, *args: str, **kwargs: str
) -> Rfc2217Endpoint:
    """The endpoint for ``rfc2217:`` route arguments (what the endpoint plugin calls)."""
    return Rfc2217Endpoint(reactor, parse_rfc2217_args(*args, **kwargs))
