"""Serial ports as Twisted client endpoints: ``serial:/dev/ttyUSB0:baudrate=300:bytesize=7``.

The transport is a Twisted SerialPort that also provides fep's ISerialLine (baud switch for
IEC 62056-21 mode C). Twisted's own ``setBaudRate`` calls a method pyserial 3 removed, so the
speed is set on the pyserial object; modem control lines are never touched here, since ptys
(tests, simulators) answer those ioctls with ENOTTY.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IAddress, IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.serialport import SerialPort
from zope.interface import implementer

from fep.errors import ChannelError
from fep.interfaces import ISerialLine

PARITIES = {"N": "N", "E": "E", "O": "O", "M": "M", "S": "S"}
BYTESIZES = (5, 6, 7, 8)
STOPBITS = (1, 1.5, 2)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@implementer(IAddress)
@attrs.frozen
class SerialAddress:
    """The address of a serial transport: its device path."""

    device: str


@attrs.frozen
class SerialSettings:
    """Line settings of a serial route (IEC 62056-21 starts at 300 Bd 7E1)."""

    device: str
    baudrate: int = 300
    bytesize: int = 7
    parity: str = "E"
    stopbits: float = 1
    xonxoff: bool = False
    rtscts: bool = False

    def __attrs_post_init__(self) -> None:
        if not self.device:
            raise ValueError("serial route without a device path")
        if self.baudrate <= 0:
            raise ValueError(f"bad baudrate {self.baudrate}")
        if self.bytesize not in BYTESIZES:
            raise ValueError(f"bad bytesize {self.bytesize} (5..8)")
        if self.parity not in PARITIES:
            raise ValueError(f"bad parity {self.parity!r} (N, E, O, M, S)")
        if self.stopbits not in STOPBITS:
            raise ValueError(f"bad stopbits {self.stopbits} (1, 1.5, 2)")

    @property
    def char_bits(self) -> float:
        """Bits one character takes on the wire: start + data + parity + stop."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits


def _flag(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be yes/no, got {text!r}")


def parse_serial_args(*args: str, **kwargs: str) -> SerialSettings:
    """Endpoint-string arguments -> settings. Positional: device path, then optionally the
    baudrate and a frame such as ``7E1``; keywords: baudrate, bytesize, parity, stopbits,
    xonxoff, rtscts (and ``device``)."""
    if len(args) > 3:
        raise ValueError(f"too many positional arguments in serial route: {args!r}")
    values: dict[str, Any] = {}
    if args:
        values["device"] = args[0]
    if len(args) >= 2:
        values["baudrate"] = int(args[1])
    if len(args) == 3:
        frame = args[2].upper()
        if len(frame) < 3 or not frame[0].isdigit():
            raise ValueError(f"bad serial frame {args[2]!r} (e.g. 7E1, 8N1)")
        values["bytesize"] = int(frame[0])
        values["parity"] = frame[1]
        values["stopbits"] = float(frame[2:])
    for key, text in kwargs.items():
        if key == "device":
            values["device"] = text
        elif key == "baudrate":
            values["baudrate"] = int(text)
        elif key == "bytesize":
            values["bytesize"] = int(text)
        elif key == "parity":
            values["parity"] = text.upper()[:1]
        elif key == "stopbits":
            values["stopbits"] = float(text)
        elif key in ("xonxoff", "rtscts"):
            values[key] = _flag(key, text)
        else:
            raise ValueError(f"unknown serial option {key!r}")
    if "stopbits" in values and values["stopbits"] == int(values["stopbits"]):
        values["stopbits"] = int(values["stopbits"])
    if "device" not in values:
        raise ValueError("serial route without a device path")
    return SerialSettings(**values)


@implementer(ISerialLine)
class FepSerialPort(SerialPort):
    """A Twisted SerialPort whose speed can be changed (ISerialLine) on pyserial 3."""

    def __init__(self, protocol: IProtocol, settings: SerialSettings, reactor: Any) -> None:
        self.settings = settings
        self._char_bits = settings.char_bits
        super().__init__(
            protocol,
            settings.device,
            reactor,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
            xonxoff=settings.xonxoff,
            rtscts=settings.rtscts,
        )

    @property
    def baudrate(self) -> int:
        return int(self._serial.baudrate)

    @property
    def char_bits(self) -> float:
        return self._char_bits

    def set_baudrate(self, baudrate: int) -> None:
        """Change the speed now; callers wait for written bytes to leave first (the
        IEC session does, from the reactor)."""
        self._serial.baudrate = baudrate

    def out_waiting(self) -> int:
        """Bytes still in the kernel's output queue (0 where the driver cannot tell)."""
        try:
            return int(self._serial.out_waiting)
        except (OSError, AttributeError):
            return 0

    def getHost(self) -> SerialAddress:
        return SerialAddress(self.settings.device)

    def getPeer(self) -> SerialAddress:
        return SerialAddress(self.settings.device)


@implementer(IStreamClientEndpoint)
class SerialEndpoint:
    """Opens a serial port as a connection; fails with ChannelError naming the device."""

    def __init__(self, reactor: Any, settings: SerialSettings) -> None:
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
            FepSerialPort(protocol, self.settings, self.reactor)
        except (SerialException, OSError, ValueError) as e:
            return fail(
                ChannelError(
                    f"cannot open serial port {self.settings.device}: {e}", route=self.route
                )
            )
        return succeed(protocol)


def serial_endpoint(reactor: Any, *args: str, **kwargs: str) -> SerialEndpoint:
    """The endpoint for ``serial:`` route arguments (what the endpoint plugin calls)."""
    return SerialEndpoint(reactor, parse_serial_args(*args, **kwargs))
