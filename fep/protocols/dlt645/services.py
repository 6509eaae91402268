"""DL/T 645 services: request frames for each function of the 2007 edition (and the read
services of the 1997 edition), and decoders of the meter's responses, its abnormal responses
raised as named errors from the error-status bits.

Sans-IO: builders return ``frames.Frame``; decoders take the Frame a ``FrameDecoder`` gave.
The decoders raise FrameError for a payload that does not fit; ``check_response`` raises
ProtocolError (MeterErrorResponse for the meter's error bits); nothing else escapes
(fuzzed by tests/fuzz).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Final

import attrs

from fep.errors import FrameError, ProtocolError
from fep.protocols.dlt645.frames import (
    BROADCAST_ADDRESS,
    WILDCARD_ADDRESS,
    Frame,
    control_code,
    decode_address,
    encode_address,
)

PROTOCOL: Final = "dlt645"


class Function(enum.IntEnum):
    """DL/T 645-2007 function codes (control code bits 0-4)."""

    BROADCAST_TIME = 0x08
    READ_DATA = 0x11
    READ_FOLLOW_UP = 0x12
    READ_ADDRESS = 0x13
    WRITE_DATA = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD = 0x17
    CHANGE_PASSWORD = 0x18
    MAX_DEMAND_RESET = 0x19
    METER_RESET = 0x1A
    EVENT_RESET = 0x1B
    RELAY_CONTROL = 0x1C


class Function1997(enum.IntEnum):
    """DL/T 645-1997 function codes."""

    READ_DATA = 0x01
    READ_FOLLOW_UP = 0x02
    REREAD = 0x03
    WRITE_DATA = 0x04
    BROADCAST_TIME = 0x08
    WRITE_ADDRESS = 0x0A
    CHANGE_BAUD = 0x0C
    CHANGE_PASSWORD = 0x0F
    MAX_DEMAND_RESET = 0x10


class ErrorStatus(enum.IntFlag):
    """The error-status byte (ERR) of a DL/T 645-2007 abnormal response."""

    OTHER = 0x01
    NO_REQUESTED_DATA = 0x02
    UNAUTHORIZED = 0x04  # wrong password or not authorised
    BAUD_NOT_CHANGEABLE = 0x08
    YEAR_ZONES_EXCEEDED = 0x10
    DAY_PERIODS_EXCEEDED = 0x20
    TARIFFS_EXCEEDED = 0x40


class RelayAction(enum.IntEnum):
    """N1 of relay control (1C): what the meter is told to do with its supply relay, its
    alarm and its guarantee (a guaranteed supply refuses trips)."""

    TRIP = 0x1A
    CLOSE_ALLOWED = 0x1B  # the customer closes it (the meter's button)
    DIRECT_CLOSE = 0x1C
    ALARM = 0x2A
    ALARM_RELEASE = 0x2B
    GUARANTEE = 0x3A
    GUARANTEE_RELEASE = 0x3B


class ControlErrorStatus(enum.IntFlag):
    """The two-byte error word of an abnormal answer to relay control (1C), as State Grid
    cost-control meters give it (a one-byte answer is the ordinary ErrorStatus). Bits 0-5;
    later bits differ between meter generations and are named by number."""

    SUSPENDED = 0x0001  # the meter is suspended (too many MAC errors)
    MAC_ERROR = 0x0002
    UNAUTHORIZED = 0x0004  # wrong password or not authorised
    AUTH_TIMEOUT = 0x0008  # identity authentication timed out (or never done)
    EXPIRED = 0x0010  # the command's validity time has passed
    GUARANTEED = 0x0020  # trip refused: the supply is guaranteed


class ErrorStatus1997(enum.IntFlag):
    """The error-status byte of a DL/T 645-1997 abnormal response."""

    ILLEGAL_DATA = 0x01
    WRONG_DATA_IDENTIFIER = 0x02
    WRONG_PASSWORD = 0x04
    YEAR_ZONES_EXCEEDED = 0x10
    DAY_PERIODS_EXCEEDED = 0x20
    TARIFFS_EXCEEDED = 0x40


_ERROR_TEXT: Final[dict[int, str]] = {
    ErrorStatus.OTHER: "other error",
    ErrorStatus.NO_REQUESTED_DATA: "no requested data",
    ErrorStatus.UNAUTHORIZED: "wrong password or unauthorised",
    ErrorStatus.BAUD_NOT_CHANGEABLE: "baud rate cannot be changed",
    ErrorStatus.YEAR_ZONES_EXCEEDED: "too many year time zones",
    ErrorStatus.DAY_PERIODS_EXCEEDED: "too many daily periods",
    ErrorStatus.TARIFFS_EXCEEDED: "too many tariffs",
}
_CONTROL_ERROR_TEXT: Final[dict[int, str]] = {
    ControlErrorStatus.SUSPENDED: "meter suspended",
    ControlErrorStatus.MAC_ERROR: "MAC error",
    ControlErrorStatus.UNAUTHORIZED: "wrong password or unauthorised",
    ControlErrorStatus.AUTH_TIMEOUT: "identity authentication timed out",
    ControlErrorStatus.EXPIRED: "command validity time passed",
    ControlErrorStatus.GUARANTEED: "trip refused: supply guaranteed",
}
_ERROR_TEXT_1997: Final[dict[int, str]] = {
    ErrorStatus1997.ILLEGAL_DATA: "illegal data",
    ErrorStatus1997.WRONG_DATA_IDENTIFIER: "wrong data identifier",
    ErrorStatus1997.WRONG_PASSWORD: "wrong password",
    ErrorStatus1997.YEAR_ZONES_EXCEEDED: "too many year time zones",
    ErrorStatus1997.DAY_PERIODS_EXCEEDED: "too many daily periods",
    ErrorStatus1997.TARIFFS_EXCEEDED: "too many tariffs",
}


class MeterErrorResponse(ProtocolError):
    """The meter answered abnormally (control bit 6): ``status`` is its error-status byte,
    ``reasons`` the named bits, ``function`` the function it refused."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        function: int,
        edition: int,
        meter: str | None = None,
        route: str | None = None,
        control_word: bool = False,
    ) -> None:
        super().__init__(message, meter=meter, route=route, protocol=PROTOCOL)
        self.status = status
        self.function = function
        self.edition = edition
        # The two-byte error word of relay control (ControlErrorStatus), not the ERR byte.
        self.control_word = control_word

    @property
    def reasons(self) -> list[str]:
        table = _ERROR_TEXT if self.edition == 2007 else _ERROR_TEXT_1997
        if self.control_word:
            table = _CONTROL_ERROR_TEXT
        names = [text for bit, text in table.items() if self.status & bit]
        known = sum(table)
        names += [f"bit {n}" for n in range(16) if self.status & ~known & (1 << n)]
        return names or [f"unknown error 0x{self.status:02X}"]

    @property
    def code(self) -> str:
        """The meter's own code as it sent it: ``0x04``, or ``0x0020`` for a two-byte word."""
        if self.control_word:
            return f"0x{self.status:04X}"
        return f"0x{self.status:02X}"


class NoRequestedData(MeterErrorResponse):
    """The meter has no data for the identifier asked (2007 bit 1, 1997 bit 1)."""


class Unauthorized(MeterErrorResponse):
    """The password was wrong or the operation is not authorised (bit 2)."""


# Which functions belong to the 1997 edition: its codes are all below 0x11 (0x08, broadcast
# time, is in both and has no response).
def edition_of(function: int) -> int:
    return 2007 if function >= 0x11 or function == 0x08 else 1997


def _function_name(function: int) -> str:
    try:
        if edition_of(function) == 2007:
            return Function(function).name.lower().replace("_", " ")
        return Function1997(function).name.lower().replace("_", " ") + " (1997)"
    except ValueError:
        return f"function 0x{function:02X}"


# ---------------------------------------------------------------------------
# Field encodings shared by requests
# ---------------------------------------------------------------------------


def encode_bcd(digits: str, length: int) -> bytes:
    """``length`` BCD bytes of a digit string, low byte first (most significant digit first in
    the text): ``("123456", 3)`` -> ``56 34 12``."""
    if not digits.isdigit() or len(digits) > 2 * length:
        raise ValueError(f"{digits!r} is not at most {2 * length} decimal digits")
    return bytes.fromhex(digits.rjust(2 * length, "0"))[::-1]


def decode_bcd(raw: bytes, offset: int = 0, field: str = "BCD") -> str:
    """The digit string of BCD bytes sent low byte first."""
    text = raw[::-1].hex()
    if not text.isdigit():
        raise FrameError(f"not BCD: {raw.hex(' ')}", offset=offset, field=field)
    return text


def encode_di(di: int, size: int = 4) -> bytes:
    """A data identifier on the wire: DI0 first (``00010000`` -> ``00 00 01 00``)."""
    if not 0 <= di < 1 << (8 * size):
        raise ValueError(f"data identifier out of range for {size} bytes: {di:#x}")
    return di.to_bytes(size, "little")


@attrs.frozen
class Password:
    """A password with its authority level: ``PA P0 P1 P2`` on the wire (P0..P2 BCD, low
    byte first). Level 0 is the highest authority in DL/T 645-2007."""

    level: int = 0
    code: str = "000000"

    def encode(self) -> bytes:
        if not 0 <= self.level <= 0xFF:
            raise ValueError(f"password level out of range: {self.level}")
        return bytes([self.level]) + encode_bcd(self.code, 3)

    @classmethod
    def decode(cls, raw: bytes, offset: int = 0) -> Password:
        if len(raw) != 4:
            raise FrameError("password is 4 bytes", offset=offset, field="password")
        return cls(raw[0], decode_bcd(raw[1:], offset + 1, "password"))


def encode_operator(operator: str) -> bytes:
    """The operator code C0..C3: 8 BCD digits, low byte first."""
    return encode_bcd(operator, 4)


# ---------------------------------------------------------------------------
# Requests (master -> meter)
# ---------------------------------------------------------------------------


def read_data(
    address: str, di: int, *, blocks: int | None = None, since: datetime | None = None
) -> Frame:
    """Read data (11): one data identifier; ``blocks`` (and ``since``, meter-local wall
    clock) ask for load-profile records, ``DI N mmhhDDMMYY``."""
    data = encode_di(di)
    if blocks is not None:
        if not 1 <= blocks <= 0xFF:
            raise ValueError(f"block count out of range 1..255: {blocks}")
        data += bytes([blocks])
        if since is not None:
            data += encode_bcd(since.strftime("%y%m%d%H%M"), 5)
    elif since is not None:
        raise ValueError("since needs blocks")
    return Frame(address, control_code(Function.READ_DATA), data)


def read_follow_up(address: str, di: int, seq: int) -> Frame:
    """Read follow-up data (12): the frame numbered ``seq`` of a long answer."""
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"follow-up sequence out of range: {seq}")
    return Frame(address, control_code(Function.READ_FOLLOW_UP), encode_di(di) + bytes([seq]))


def read_address() -> Frame:
    """Read communication address (13), sent to the wildcard address: only for a point-to-point
    line, where the one meter answers with its address."""
    return Frame(WILDCARD_ADDRESS, control_code(Function.READ_ADDRESS))


def write_data(
    address: str, di: int, value: bytes, password: Password, operator: str = "00000000"
) -> Frame:
    """Write data (14): ``DI PA P0P1P2 C0..C3 data``."""
    data = encode_di(di) + password.encode() + encode_operator(operator) + value
    return Frame(address, control_code(Function.WRITE_DATA), data)


def write_address(new_address: str) -> Frame:
    """Write communication address (15), to the wildcard address (point-to-point only)."""
    return Frame(
        WILDCARD_ADDRESS, control_code(Function.WRITE_ADDRESS), encode_address(new_address)
    )


def broadcast_time_sync(meter_time: datetime) -> Frame:
    """Broadcast time synchronisation (08) to every meter: ``ssmmhhDDMMYY`` of the meters'
    local wall clock. Meters do not answer it."""
    return Frame(
        BROADCAST_ADDRESS,
        control_code(Function.BROADCAST_TIME),
        encode_bcd(meter_time.strftime("%y%m%d%H%M%S"), 6),
    )


def freeze(
    address: str,
    *,
    month: int | None = None,
    day: int | None = None,
    hour: int | None = None,
    minute: int | None = None,
) -> Frame:
    """Freeze (16): ``mmhhDDMM``; a field left None is sent as 99 (every). All four None
    freezes at once; month None is a monthly freeze, month and day None a daily one."""
    parts = [minute, hour, day, month]
    for p in parts:
        if p is not None and not 0 <= p <= 98:
            raise ValueError(f"freeze time field out of range: {p}")
    data = bytes(0x99 if p is None else int(f"{p:02d}", 16) for p in parts)
    return Frame(address, control_code(Function.FREEZE), data)


# Communication rate feature word Z (DL/T 645-2007 7.2.2).
BAUD_BITS: Final = {600: 0x02, 1200: 0x04, 2400: 0x08, 4800: 0x10, 9600: 0x20, 19200: 0x40}
_BAUD_BY_BIT: Final = {bit: baud for baud, bit in BAUD_BITS.items()}


def change_baud(address: str, baud: int) -> Frame:
    """Change communication rate (17): the feature word Z with one bit set."""
    try:
        z = BAUD_BITS[baud]
    except KeyError:
        raise ValueError(f"DL/T 645 baud rates are {sorted(BAUD_BITS)}, not {baud}") from None
    return Frame(address, control_code(Function.CHANGE_BAUD), bytes([z]))


def change_password(address: str, old: Password, new: Password) -> Frame:
    """Change password (18): ``DI (04000C01 + new level) old-password new-password``."""
    if not 0 <= new.level <= 9:
        raise ValueError(f"password level out of range 0..9: {new.level}")
    di = 0x04000C01 + new.level
    return Frame(
        address,
        control_code(Function.CHANGE_PASSWORD),
        encode_di(di) + old.encode() + new.encode(),
    )


def max_demand_reset(address: str, password: Password, operator: str = "00000000") -> Frame:
    """Maximum demand reset (19): ``PA P0P1P2 C0..C3``."""
    data = password.encode() + encode_operator(operator)
    return Frame(address, control_code(Function.MAX_DEMAND_RESET), data)


def meter_reset(address: str, password: Password, operator: str = "00000000") -> Frame:
    """Meter reset (1A, clears energy, demand and events): ``PA P0P1P2 C0..C3``."""
    data = password.encode() + encode_operator(operator)
    return Frame(address, control_code(Function.METER_RESET), data)


ALL_EVENTS: Final = 0xFFFFFFFF


def event_reset(
    address: str, password: Password, operator: str = "00000000", di: int = ALL_EVENTS
) -> Frame:
    """Event reset (1B): ``PA P0P1P2 C0..C3 DI``; DI FFFFFFFF clears every event record."""
    data = password.encode() + encode_operator(operator) + encode_di(di)
    return Frame(address, control_code(Function.EVENT_RESET), data)


def relay_control(
    address: str,
    action: RelayAction,
    password: Password,
    operator: str,
    valid_until: datetime,
) -> Frame:
    """Relay control (1C): ``PA P0P1P2 C0..C3 N1 N2 N3..N8``: the action (N1), a reserved
    byte (N2, 00) and the time after which the meter must not act on the command
    (``ssmmhhDDMMYY`` of its local wall clock)."""
    data = (
        password.encode()
        + encode_operator(operator)
        + bytes([RelayAction(action), 0])
        + encode_bcd(valid_until.strftime("%y%m%d%H%M%S"), 6)
    )
    return Frame(address, control_code(Function.RELAY_CONTROL), data)


def write_data_1997(address: str, di: int, value: bytes, password: Password) -> Frame:
    """DL/T 645-1997 write data (04): ``DI0 DI1 PA P0P1P2 data`` (no operator code)."""
    data = encode_di(di, 2) + password.encode() + value
    return Frame(address, control_code(Function1997.WRITE_DATA), data)


def max_demand_reset_1997(address: str, password: Password) -> Frame:
    """DL/T 645-1997 maximum demand reset (10): the password ``PA P0P1P2``."""
    return Frame(address, control_code(Function1997.MAX_DEMAND_RESET), password.encode())


def read_data_1997(address: str, di: int) -> Frame:
    """DL/T 645-1997 read data (01): a 2-byte data identifier."""
    return Frame(address, control_code(Function1997.READ_DATA), encode_di(di, 2))


def read_follow_up_1997(address: str, di: int) -> Frame:
    """DL/T 645-1997 read follow-up data (02)."""
    return Frame(address, control_code(Function1997.READ_FOLLOW_UP), encode_di(di, 2))


# ---------------------------------------------------------------------------
# Responses (meter -> master)
# ---------------------------------------------------------------------------


def check_response(
    frame: Frame, request: Frame, *, meter: str | None = None, route: str | None = None
) -> Frame:
    """``frame`` if it is the meter's normal answer to ``request``; MeterErrorResponse (a
    subclass named for the error bits) for an abnormal answer; ProtocolError for a frame
    that answers something else. ``meter`` names the meter in errors (default: its
    address)."""
    who = meter or frame.address
    if not frame.is_response:
        raise ProtocolError(
            f"meter {who}: expected a response, got a master frame (control 0x{frame.control:02X})",
            meter=who,
            route=route,
            protocol=PROTOCOL,
        )
    if frame.function != request.function:
        raise ProtocolError(
            f"meter {who}: response to {_function_name(frame.function)} "
            f"where {_function_name(request.function)} was asked",
            meter=who,
            route=route,
            protocol=PROTOCOL,
        )
    if request.address not in (WILDCARD_ADDRESS, BROADCAST_ADDRESS) and (
        frame.address != request.address
    ):
        raise ProtocolError(
            f"meter {who}: answer from address {frame.address}, asked {request.address}",
            meter=who,
            route=route,
            protocol=PROTOCOL,
        )
    if frame.is_error:
        raise error_response(frame, meter=meter, route=route)
    return frame


def error_response(
    frame: Frame, *, meter: str | None = None, route: str | None = None
) -> MeterErrorResponse:
    """The named error for an abnormal response frame (control bit 6 set)."""
    who = meter or frame.address
    edition = edition_of(frame.function)
    status = frame.data[0] if frame.data else 0
    word = frame.function == Function.RELAY_CONTROL and len(frame.data) >= 2
    if word:
        status = int.from_bytes(frame.data[:2], "little")
    no_data: int
    unauthorized: int
    if edition == 2007:
        no_data, unauthorized = ErrorStatus.NO_REQUESTED_DATA, ErrorStatus.UNAUTHORIZED
    else:
        no_data = ErrorStatus1997.WRONG_DATA_IDENTIFIER
        unauthorized = ErrorStatus1997.WRONG_PASSWORD
    cls: type[MeterErrorResponse] = MeterErrorResponse
    if status & unauthorized:
        cls = Unauthorized
    elif status & no_data:
        cls = NoRequestedData
    probe = MeterErrorResponse("", status=status, function=frame.function, edition=edition,
                               control_word=word)
    message = (
        f"meter {who} refused {_function_name(frame.function)}: "
        f"{', '.join(probe.reasons)} (error status {probe.code})"
    )
    return cls(
        message,
        status=status,
        function=frame.function,
        edition=edition,
        meter=who,
        route=route,
        control_word=word,
    )


@attrs.frozen
class ReadResult:
    """The answer to a read: the DI echoed, its data bytes (0x33 removed), whether follow-up
    frames remain, and the follow-up frame number when the answer is a follow-up frame."""

    di: int
    data: bytes
    follow_up: bool = False
    seq: int | None = None


def decode_read(frame: Frame, di: int | None = None) -> ReadResult:
    """The payload of a normal answer to read data / read follow-up (either edition);
    FrameError if it is too short or echoes another DI than ``di``."""
    size = 4 if edition_of(frame.function) == 2007 else 2
    data = frame.data
    if len(data) < size:
        raise FrameError(
            f"read answer of {len(data)} bytes has no {size}-byte data identifier",
            offset=10,
            field="DI",
        )
    echoed = int.from_bytes(data[:size], "little")
    if di is not None and echoed != di:
        raise FrameError(
            f"read answer for DI {echoed:0{2 * size}X}, asked {di:0{2 * size}X}",
            offset=10,
            field="DI",
        )
    payload = data[size:]
    seq: int | None = None
    if frame.function == Function.READ_FOLLOW_UP:
        if not payload:
            raise FrameError("follow-up answer without its frame number", field="SEQ")
        payload, seq = payload[:-1], payload[-1]
    return ReadResult(echoed, payload, frame.has_follow_up, seq)


def decode_read_address(frame: Frame) -> str:
    """The communication address a meter gave in answer to read address (13)."""
    if len(frame.data) != 6:
        raise FrameError(
            f"read-address answer is 6 bytes, got {len(frame.data)}", offset=10, field="address"
        )
    return decode_address(frame.data, 10)


def decode_change_baud(frame: Frame) -> int:
    """The baud rate a meter confirmed in answer to change communication rate (17)."""
    if len(frame.data) != 1 or frame.data[0] not in _BAUD_BY_BIT:
        raise FrameError(
            f"change-baud answer is one rate bit, got {frame.data.hex(' ')}",
            offset=10,
            field="Z",
        )
    return _BAUD_BY_BIT[frame.data[0]]


def decode_change_password(frame: Frame) -> Password:
    """The new password a meter confirmed in answer to change password (18)."""
    return Password.decode(frame.data, 10)


# ---------------------------------------------------------------------------
# Meter side (simulators): answers to requests
# ---------------------------------------------------------------------------


def response(request: Frame, data: bytes = b"", *, follow_up: bool = False) -> Frame:
    """The normal answer to ``request`` carrying ``data``."""
    return Frame(
        request.address,
        control_code(request.function, response=True, follow_up=follow_up),
        data,
    )


def refusal(request: Frame, status: int, address: str | None = None) -> Frame:
    """The abnormal answer to ``request`` with error-status byte ``status``."""
    return Frame(
        address or request.address,
        control_code(request.function, response=True, error=True),
        bytes([status]),
    )
