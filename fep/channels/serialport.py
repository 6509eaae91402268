"""Serial ports as Twisted client endpoints: ``serial:/dev/ttyUSB0:baudrate=300:bytesize=7``.

The transport is a Twisted SerialPort that also provides fep's ISerialLine (baud switch for
IEC 62056-21 mode C). Twisted's own ``setBaudRate`` calls a method pyserial 3 removed, so the
speed is set on the pyserial object; modem control lines are never touched here, since ptys
(tests, simulators) answer those ioctls with ENOTTY.

Two route options drive the line discipline (fep.channels.lines): ``echo=yes`` drops the
bytes an RS-485 half-duplex adapter echoes back, ``gap=SECONDS`` leaves that much silence
after the last byte heard (or after the previous session on the device) before fep
transmits. A speed change waits until fep's written bytes have left the wire.
"""

from __future__ import annotations

import math
import os
import termios
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import fdesc
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.serialport import SerialPort
from zope.interface import implementer

from fep.channels.lines import EchoSuppressor, LinePacer, LineSettings, wire_time
from fep.errors import ChannelError
from fep.interfaces import ISerialLine
from fep.reactors import IConnectingReactor

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
# When each line (device, serial-server port) last fell silent, for the gap before the next
# session on it: sessions on one line follow each other, each with a fresh transport.
_LINE_QUIET: dict[str, float] = {}


@implementer(IAddress)
@attrs.frozen
class SerialAddress:
    """The address of a serial transport: its device path."""

    device: str


@attrs.frozen
class SerialSettings(LineSettings):
    """A ``serial:`` route: the device path and how its line is set."""

    device: str

    def __attrs_post_init__(self) -> None:
        if not self.device:
            raise ValueError("serial route without a device path")
        super().__attrs_post_init__()


def is_pty(device: str) -> bool:
    """Whether ``device`` is a Unix 98 pseudo-terminal slave (tests and simulators use
    socat pty pairs as serial lines)."""
    try:
        rdev = os.stat(device).st_rdev
    except OSError:
        return False
    return 136 <= os.major(rdev) <= 143


def _flag(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"option {name}: must be yes or no, got {text!r}")


def _number(name: str, text: str, kind: Callable[[str], Any]) -> Any:
    try:
        return kind(text.strip())
    except ValueError:
        raise ValueError(f"option {name}: {text!r} is not a number") from None


def parse_frame(text: str) -> dict[str, Any]:
    """A frame such as ``7E1`` or ``8N1`` -> bytesize, parity and stopbits."""
    frame = text.upper()
    if len(frame) < 3 or not frame[0].isdigit():
        raise ValueError(f"bad serial frame {text!r} (e.g. 7E1, 8N1)")
    return {
        "bytesize": int(frame[0]),
        "parity": frame[1],
        "stopbits": _number("stopbits", frame[2:], float),
    }


LINE_OPTIONS = ("baudrate", "bytesize", "parity", "stopbits", "xonxoff", "rtscts", "echo",
                "gap")


def parse_line_option(key: str, text: str) -> Any:
    """One line option's value from its route text; ValueError names the option."""
    if key in ("baudrate", "bytesize"):
        return _number(key, text, int)
    if key == "parity":
        return text.strip().upper()[:1]
    if key in ("stopbits", "gap"):
        return _number(key, text, float)
    if key in ("xonxoff", "rtscts", "echo"):
        return _flag(key, text)
    raise ValueError(f"unknown option {key!r}")


def whole_stopbits(values: dict[str, Any]) -> None:
    if "stopbits" in values and values["stopbits"] == int(values["stopbits"]):
        values["stopbits"] = int(values["stopbits"])


def parse_serial_args(*args: str, **kwargs: str) -> SerialSettings:
    """Endpoint-string arguments -> settings. Positional: device path, then optionally the
    baudrate and a frame such as ``7E1``; keywords: baudrate, bytesize, parity, stopbits,
    xonxoff, rtscts, echo, gap (and ``device``)."""
    if len(args) > 3:
        raise ValueError(f"too many positional arguments in serial route: {args!r}")
    values: dict[str, Any] = {}
    if args:
        values["device"] = args[0]
    if len(args) >= 2:
        values["baudrate"] = _number("baudrate", args[1], int)
    if len(args) == 3:
        values.update(parse_frame(args[2]))
    for key, text in kwargs.items():
        if key == "device":
            values["device"] = text
        elif key in LINE_OPTIONS:
            values[key] = parse_line_option(key, text)
        else:
            raise ValueError(
                f"unknown serial option {key!r} (known: device, {', '.join(LINE_OPTIONS)})"
            )
    whole_stopbits(values)
    if "device" not in values:
        raise ValueError("serial route without a device path")
    return SerialSettings(**values)


class PacedLine:
    """The Twisted side of a line's discipline for one transport: holds fep's writes for
    the inter-frame gap, expects their echo when the line echoes, and applies a speed change
    only once the bytes written before it have left the wire."""

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        line: str,
        echo: bool,
        gap: float,
        send: Callable[[bytes], None],
        apply_baudrate: Callable[[int], None],
        baudrate: Callable[[], int],
        char_bits: float,
        drop_stale: bool = False,
    ) -> None:
        self.reactor = reactor
        # A pull session speaks first: what the line carries before fep's first byte is
        # stale (a late answer to the previous session on the bus, noise) and is dropped.
        self._drop_stale = drop_stale
        self.stale = 0
        self.line = line
        self.echo = EchoSuppressor() if echo else None
        self.pacer = LinePacer(gap, _LINE_QUIET.get(line, -math.inf))
        self._send = send
        self._apply_baudrate = apply_baudrate
        self._baudrate = baudrate
        self._char_bits = char_bits
        self._held: list[bytes | int] = []
        self._release: IDelayedCall | None = None
        self._baud_call: IDelayedCall | None = None
        self.closed = False

    def held_bytes(self) -> int:
        """Bytes written but held back for the gap."""
        return sum(len(item) for item in self._held if isinstance(item, bytes))

    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        if self._held or self._baud_call is not None:
            self._held.append(data)
            return
        wait = self.pacer.delay(self.reactor.seconds())
        if wait > 0:
            self._held.append(data)
            self._release = self.reactor.callLater(wait, self._release_held)
            return
        self._transmit(data)

    def _transmit(self, data: bytes) -> None:
        self._drop_stale = False
        now = self.reactor.seconds()
        took = wire_time(len(data), self._baudrate(), self._char_bits)
        if self.echo is not None:
            self.echo.sent(data, now, took)
        self.pacer.transmitted(now, took)
        self._send(data)

    def _release_held(self) -> None:
        self._release = None
        wait = self.pacer.delay(self.reactor.seconds())
        if wait > 0:  # a byte was heard meanwhile: the gap starts again
            self._release = self.reactor.callLater(wait, self._release_held)
            return
        while self._held and not self.closed:
            item = self._held.pop(0)
            if isinstance(item, int):
                self._change_baudrate(item)
                if self._baud_call is not None:
                    return  # the rest goes out at the new speed, from _baud_changed
                continue
            self._transmit(item)

    def received(self, data: bytes) -> bytes:
        """What of bytes heard on the line goes to the session (the echo does not)."""
        now = self.reactor.seconds()
        self.pacer.heard(now)
        if self._drop_stale:
            self.stale += len(data)
            return b""
        if self.echo is None:
            return data
        return self.echo.received(data, now)

    def set_baudrate(self, baudrate: int) -> None:
        if self._held or self._baud_call is not None:
            self._held.append(baudrate)
            return
        self._change_baudrate(baudrate)

    def _change_baudrate(self, baudrate: int) -> None:
        wait = self.pacer.drained_in(self.reactor.seconds())
        if wait <= 0.001:
            self._apply_baudrate(baudrate)
            return
        self._baud_call = self.reactor.callLater(wait, self._baud_changed, baudrate)

    def _baud_changed(self, baudrate: int) -> None:
        self._baud_call = None
        if self.closed:
            return
        self._apply_baudrate(baudrate)
        if self._held:
            self._release_held()

    def close(self) -> None:
        """The transport is gone: drop what is held, remember when the line fell silent."""
        self.closed = True
        for call in (self._release, self._baud_call):
            if call is not None and call.active():
                call.cancel()
        self._release = self._baud_call = None
        self._held.clear()
        _LINE_QUIET[self.line] = max(self.pacer.busy_until, self.reactor.seconds())


@implementer(ISerialLine)
class FepSerialPort(SerialPort):
    """A Twisted SerialPort whose speed can be changed (ISerialLine) on pyserial 3.

    ``session``: the port is opened for one pull session (the serial endpoint does so):
    input left from before is discarded, and so is what comes before fep's first write.
    """

    def __init__(
        self, protocol: IProtocol, settings: SerialSettings, reactor: IConnectingReactor, *,
        session: bool = False,
    ) -> None:
        self.settings = settings
        self._char_bits = settings.char_bits
        pty = is_pty(settings.device)
        self.line = PacedLine(
            reactor,
            line=f"serial:{settings.device}",
            echo=settings.echo,
            gap=settings.gap,
            send=super().write,
            apply_baudrate=self._apply_baudrate,
            baudrate=lambda: self.baudrate,
            # A pty moves bytes at memory speed: nothing is ever left on a wire to wait for
            # (a simulated bus writes every meter's answers on one pty, whatever its speed).
            char_bits=0.0 if pty else settings.char_bits,
            drop_stale=session,
        )
        framing = {"bytesize": settings.bytesize, "parity": settings.parity}
        if settings.parity != "N" and pty:
            # Linux refuses (EINVAL) to set parity on a pseudo-terminal unless the speed
            # changes too; a pty carries bytes whatever the framing, so it gets 8N1.
            framing = {"bytesize": 8, "parity": "N"}
        super().__init__(
            protocol,
            settings.device,
            reactor,
            baudrate=settings.baudrate,
            stopbits=settings.stopbits,
            xonxoff=settings.xonxoff,
            rtscts=settings.rtscts,
            **framing,
        )

    @property
    def baudrate(self) -> int:
        return int(self._serial.baudrate)

    @property
    def char_bits(self) -> float:
        return self._char_bits

    def set_baudrate(self, baudrate: int) -> None:
        """Change the speed once the bytes written before have left the wire (at once when
        there are none; the IEC session already waits for their wire time)."""
        self.line.set_baudrate(baudrate)

    def _apply_baudrate(self, baudrate: int) -> None:
        if baudrate == self._serial.baudrate:
            return  # pyserial 3.5 on a pty fails (EINVAL) to set the speed it already has
        try:
            self._serial.baudrate = baudrate
        except termios.error as e:
            raise OSError(*e.args) from None

    def write(self, data: bytes) -> None:
        self.line.write(data)

    def writeSequence(self, data: Any) -> None:
        self.line.write(b"".join(data))

    def doRead(self) -> Any:
        return fdesc.readFromFD(self.fileno(), self._heard)

    def _heard(self, data: bytes) -> None:
        data = self.line.received(data)
        if data:
            self.protocol.dataReceived(data)

    def connectionLost(self, reason: Any) -> None:
        self.line.close()
        super().connectionLost(reason)

    def out_waiting(self) -> int:
        """Bytes not yet on the wire: held for the gap, or in the kernel's output queue (0
        where the driver cannot tell)."""
        try:
            queued = int(self._serial.out_waiting)
        except (OSError, AttributeError):
            queued = 0
        return queued + self.line.held_bytes()

    def getHost(self) -> SerialAddress:
        return SerialAddress(self.settings.device)

    def getPeer(self) -> SerialAddress:
        return SerialAddress(self.settings.device)


@implementer(IStreamClientEndpoint)
class SerialEndpoint:
    """Opens a serial port as a connection; fails with ChannelError naming the device."""

    def __init__(self, reactor: IConnectingReactor, settings: SerialSettings) -> None:
        self.reactor = reactor
        self.settings = settings

    @property
    def route(self) -> str:
        s = self.settings
        frame = f"{s.bytesize}{s.parity}{s.stopbits:g}"
        return f"serial:{s.device}:{s.baudrate}:{frame}"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        from serial import SerialException

        address = SerialAddress(self.settings.device)
        protocol = protocolFactory.buildProtocol(address)
        if protocol is None:
            return fail(ChannelError("factory refused the connection", route=self.route))
        try:
            FepSerialPort(protocol, self.settings, self.reactor, session=True)
        except (SerialException, OSError, ValueError) as e:
            return fail(
                ChannelError(
                    f"cannot open serial port {self.settings.device}: {e}", route=self.route
                )
            )
        return succeed(protocol)


def serial_endpoint(reactor: IConnectingReactor, *args: str, **kwargs: str) -> SerialEndpoint:
    """The endpoint for ``serial:`` route arguments (what the endpoint plugin calls)."""
    return SerialEndpoint(reactor, parse_serial_args(*args, **kwargs))
