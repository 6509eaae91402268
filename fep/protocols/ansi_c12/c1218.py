"""ANSI C12.18 on the wire: packets (``EE`` start, identity, control with toggle bit, sequence,
length, data, CRC-16), ACK/NAK, multi-packet messages, a streaming decoder, and the PSEM
service requests and responses (identify, negotiate, logon, security, read, write, logoff,
terminate, wait) with the C12 response codes as named errors.

Sans-IO: no Twisted here. Packets in, messages out; requests in, bytes out.

What decoding may raise (and nothing else, fuzzed by tests/fuzz): FrameError for bytes that
do not form a packet, request or answer; C12ResponseError (a ProtocolError) from the answer
decoders for the meter's error codes; ProtocolError from ``Link`` when a packet is not
acknowledged after its retries. Work is bounded by the bytes given (a packet is at most
MAX_DATA bytes).
"""

from __future__ import annotations

import enum
import re
from typing import ClassVar, Final

import attrs

from fep.errors import FrameError, ProtocolError
from fep.protocols.stream import StreamDecoder

PROTOCOL: Final = "ansi-c12"

STP: Final = 0xEE
ACK: Final = 0x06
NAK: Final = 0x15
HEADER_LEN: Final = 6
CRC_LEN: Final = 2
# The largest data field a 2-byte length with an 8192-byte packet allows (C12.18 5.3.2).
MAX_DATA: Final = 8183
# A partial read's offset is 3 bytes: no table C12.18 can read is bigger than this.
MAX_TABLE_SIZE: Final = 1 << 24

# Control field bits (C12.18 5.3.2).
MULTI_PACKET_BIT: Final = 0x80
FIRST_PACKET_BIT: Final = 0x40
TOGGLE_BIT: Final = 0x20
DATA_FORMAT_MASK: Final = 0x03


def crc16(data: bytes | bytearray) -> int:
    """The C12.18 packet CRC: CRC-16/CCITT reflected (poly 0x1021 as 0x8408), initial value
    FFFF, result complemented (the HDLC/X.25 CRC); sent low byte first, over every byte
    from ``EE`` to the end of the data."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def table_checksum(data: bytes | bytearray) -> int:
    """The 1-byte checksum after table data in read answers and write requests: the two's
    complement of the sum of the data bytes."""
    return (-sum(data)) & 0xFF


# ---------------------------------------------------------------------------
# Packets
# ---------------------------------------------------------------------------


@attrs.frozen
class Packet:
    """One C12.18 packet. ``sequence`` counts the packets still to come in a multi-packet
    message (0 on the last); ``toggle`` alternates between new packets of one sender so
    the receiver can spot a retransmission."""

    data: bytes
    identity: int = 0
    toggle: bool = False
    multi: bool = False
    first: bool = False
    sequence: int = 0
    data_format: int = 0

    @property
    def control(self) -> int:
        return (
            (MULTI_PACKET_BIT if self.multi else 0)
            | (FIRST_PACKET_BIT if self.first else 0)
            | (TOGGLE_BIT if self.toggle else 0)
            | (self.data_format & DATA_FORMAT_MASK)
        )

    def encode(self) -> bytes:
        if len(self.data) > MAX_DATA:
            raise ValueError(f"C12.18 packet data is at most {MAX_DATA} bytes")
        if not (0 <= self.identity <= 0xFF and 0 <= self.sequence <= 0xFF):
            raise ValueError("identity and sequence are one byte each")
        body = (
            bytes([STP, self.identity, self.control, self.sequence])
            + len(self.data).to_bytes(2, "big")
            + self.data
        )
        return body + crc16(body).to_bytes(2, "little")

    @classmethod
    def from_control(cls, data: bytes, identity: int, control: int, sequence: int) -> Packet:
        return cls(
            data,
            identity,
            bool(control & TOGGLE_BIT),
            bool(control & MULTI_PACKET_BIT),
            bool(control & FIRST_PACKET_BIT),
            sequence,
            control & DATA_FORMAT_MASK,
        )


@attrs.frozen
class Ack:
    """The one-byte acknowledgement of a good packet."""

    def encode(self) -> bytes:
        return bytes([ACK])


@attrs.frozen
class Nak:
    """The one-byte negative acknowledgement of a damaged packet: resend it."""

    def encode(self) -> bytes:
        return bytes([NAK])


LinkItem = Packet | Ack | Nak


def packetize(
    message: bytes, *, packet_size: int, identity: int = 0, toggle: bool = False
) -> list[Packet]:
    """A message cut into packets of at most ``packet_size`` bytes on the wire (header and
    CRC included, as negotiated), with alternating toggle bits starting at ``toggle``."""
    room = packet_size - HEADER_LEN - CRC_LEN
    if room < 1:
        raise ValueError(f"packet size {packet_size} leaves no room for data")
    if len(message) <= room:
        return [Packet(message, identity, toggle)]
    chunks = [message[i : i + room] for i in range(0, len(message), room)]
    if len(chunks) > 0xFF + 1:
        raise ValueError(f"message of {len(message)} bytes needs more than 256 packets")
    return [
        Packet(
            chunk,
            identity,
            toggle ^ bool(i % 2),
            multi=True,
            first=i == 0,
            sequence=len(chunks) - 1 - i,
        )
        for i, chunk in enumerate(chunks)
    ]


# What may start an item after garbage: searched in C, not byte by byte (junk streams).
_ITEM_START: Final = re.compile(b"[\xee\x06\x15]")


class PacketDecoder(StreamDecoder[LinkItem]):
    """Turns a byte stream into Packets, Acks and Naks.

    ``receive(data)`` returns every item completed so far (an empty list means "need more").
    Bytes that cannot start an item (anything but EE, 06, 15) are skipped and counted in
    ``skipped``. A packet with an impossible length raises FrameError after dropping its
    EE; one with a bad CRC raises FrameError after dropping the whole packet (answer it
    with a NAK). Items completed before an error are returned first and the error comes on
    the next call; ``offset`` is counted from the start of the stream.
    """

    def _next(self) -> LinkItem | None:
        buf = self._buffer
        found = _ITEM_START.search(buf)
        skip = found.start() if found is not None else len(buf)
        self.skipped += skip
        self._consume(skip)
        if not buf:
            return None
        if buf[0] == ACK:
            self._consume(1)
            return Ack()
        if buf[0] == NAK:
            self._consume(1)
            return Nak()
        if len(buf) < HEADER_LEN:
            return None
        base = self._base
        length = int.from_bytes(buf[4:6], "big")
        if length > MAX_DATA:
            self._consume(1)
            raise FrameError(
                f"packet length {length} is over {MAX_DATA}", offset=base + 4, field="length"
            )
        total = HEADER_LEN + length + CRC_LEN
        if len(buf) < total:
            return None
        raw = bytes(buf[:total])
        self._consume(total)
        computed = crc16(raw[:-2])
        received = int.from_bytes(raw[-2:], "little")
        if computed != received:
            raise FrameError(
                f"bad packet CRC: computed 0x{computed:04X}, received 0x{received:04X}",
                offset=base + total - 2,
                field="CRC",
            )
        return Packet.from_control(raw[HEADER_LEN:-2], raw[1], raw[2], raw[3])


class MessageAssembler:
    """Joins the packets of one side into messages, dropping retransmissions.

    ``packet(p)`` returns the whole message once its last packet is in, None while a
    multi-packet message is incomplete or when ``p`` repeats the previous packet (same
    toggle bit and data: the other side missed our ACK); FrameError for a packet out of
    sequence (the partial message is dropped).
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._expect: int | None = None
        self._last: Packet | None = None

    def packet(self, packet: Packet) -> bytes | None:
        if self._last is not None and packet == self._last:
            return None
        self._last = packet
        if not packet.multi:
            if self._expect is not None:
                self._reset()
                raise FrameError(
                    "single packet in the middle of a multi-packet message", field="control"
                )
            return packet.data
        if packet.first:
            self._parts = [packet.data]
        elif self._expect is None or packet.sequence != self._expect:
            expected = self._expect
            self._reset()
            raise FrameError(
                f"packet sequence {packet.sequence} where "
                + ("a first packet" if expected is None else f"{expected}")
                + " was expected",
                field="sequence",
            )
        else:
            self._parts.append(packet.data)
        if packet.sequence == 0:
            message = b"".join(self._parts)
            self._reset()
            return message
        self._expect = packet.sequence - 1
        return None

    def _reset(self) -> None:
        self._parts = []
        self._expect = None

    def reset(self) -> None:
        """Forget everything, the last packet too (a new session starts)."""
        self._reset()
        self._last = None


# ---------------------------------------------------------------------------
# Response codes
# ---------------------------------------------------------------------------


class ResponseCode(enum.IntEnum):
    """PSEM response codes (C12.18 5.3.4)."""

    OK = 0x00
    ERR = 0x01
    SNS = 0x02
    ISC = 0x03
    ONP = 0x04
    IAR = 0x05
    BSY = 0x06
    DNR = 0x07
    DLK = 0x08
    RNO = 0x09
    ISSS = 0x0A


RESPONSE_TEXT: Final = {
    ResponseCode.OK: "acknowledge",
    ResponseCode.ERR: "error",
    ResponseCode.SNS: "service not supported",
    ResponseCode.ISC: "insufficient security clearance",
    ResponseCode.ONP: "operation not possible",
    ResponseCode.IAR: "inappropriate action requested",
    ResponseCode.BSY: "device busy",
    ResponseCode.DNR: "data not ready",
    ResponseCode.DLK: "data locked",
    ResponseCode.RNO: "renegotiate request",
    ResponseCode.ISSS: "invalid service sequence state",
}


class C12ResponseError(ProtocolError):
    """The meter answered a service with a response code other than ok."""

    code: ClassVar[int] = ResponseCode.ERR

    def __init__(
        self,
        message: str,
        *,
        response_code: int,
        service: str,
        meter: str | None = None,
        route: str | None = None,
    ) -> None:
        super().__init__(message, meter=meter, route=route, protocol=PROTOCOL)
        self.response_code = response_code
        self.service = service


class ServiceNotSupported(C12ResponseError):
    code = ResponseCode.SNS


class InsufficientSecurityClearance(C12ResponseError):
    """``isc``: the password was refused or the user may not do this."""

    code = ResponseCode.ISC


class OperationNotPossible(C12ResponseError):
    code = ResponseCode.ONP


class InappropriateActionRequested(C12ResponseError):
    code = ResponseCode.IAR


class DeviceBusy(C12ResponseError):
    code = ResponseCode.BSY


class DataNotReady(C12ResponseError):
    code = ResponseCode.DNR


class DataLocked(C12ResponseError):
    code = ResponseCode.DLK


class RenegotiateRequest(C12ResponseError):
    code = ResponseCode.RNO


class InvalidServiceSequenceState(C12ResponseError):
    code = ResponseCode.ISSS


_ERROR_CLASSES: Final[dict[int, type[C12ResponseError]]] = {
    cls.code: cls
    for cls in (
        C12ResponseError,
        ServiceNotSupported,
        InsufficientSecurityClearance,
        OperationNotPossible,
        InappropriateActionRequested,
        DeviceBusy,
        DataNotReady,
        DataLocked,
        RenegotiateRequest,
        InvalidServiceSequenceState,
    )
}


def check_response(
    data: bytes, service: str, *, meter: str | None = None, route: str | None = None
) -> bytes:
    """The body after the response code of an answer to ``service``; the named
    C12ResponseError when the code is not ok; FrameError for an empty answer."""
    if not data:
        raise FrameError(f"empty answer to {service}", offset=0, field="response code")
    code = data[0]
    if code == ResponseCode.OK:
        return data[1:]
    cls = _ERROR_CLASSES.get(code, C12ResponseError)
    try:
        text = f"{ResponseCode(code).name.lower()} ({RESPONSE_TEXT[ResponseCode(code)]})"
    except ValueError:
        text = f"response code 0x{code:02X}"
    who = f"meter {meter}" if meter else "meter"
    raise cls(
        f"{who} refused {service}: {text}",
        response_code=code,
        service=service,
        meter=meter,
        route=route,
    )


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------

# Negotiate baud rate codes (C12.18 5.3.4.3).
BAUD_CODES: Final = {
    300: 1,
    600: 2,
    1200: 3,
    2400: 4,
    4800: 5,
    9600: 6,
    14400: 7,
    19200: 8,
    28800: 9,
    57600: 10,
}
BAUD_BY_CODE: Final = {code: rate for rate, code in BAUD_CODES.items()}
# Baud code 00: externally defined (C12.21 modem lines); kept as baud 0.
EXTERNAL_BAUD: Final = 0


@attrs.frozen
class Identify:
    code: ClassVar[int] = 0x20
    name: ClassVar[str] = "identify"

    def encode(self) -> bytes:
        return bytes([self.code])


@attrs.frozen
class Terminate:
    code: ClassVar[int] = 0x21
    name: ClassVar[str] = "terminate"

    def encode(self) -> bytes:
        return bytes([self.code])


@attrs.frozen
class Read:
    """Full read (30) of a table, or partial read by offset (3F) when ``offset`` is given."""

    table: int
    offset: int | None = None
    count: int | None = None
    name: ClassVar[str] = "read"

    def encode(self) -> bytes:
        if (self.offset is None) != (self.count is None):
            raise ValueError("a partial read needs both offset and count")
        table = self.table.to_bytes(2, "big")
        if self.offset is None or self.count is None:
            return b"\x30" + table
        return b"\x3f" + table + self.offset.to_bytes(3, "big") + self.count.to_bytes(2, "big")


@attrs.frozen
class Write:
    """Full write (40) of a table, or partial write by offset (4F) when ``offset`` is given:
    ``table [offset] count data checksum``."""

    table: int
    data: bytes
    offset: int | None = None
    name: ClassVar[str] = "write"

    def encode(self) -> bytes:
        head = b"\x40" + self.table.to_bytes(2, "big")
        if self.offset is not None:
            head = b"\x4f" + self.table.to_bytes(2, "big") + self.offset.to_bytes(3, "big")
        return (
            head
            + len(self.data).to_bytes(2, "big")
            + self.data
            + bytes([table_checksum(self.data)])
        )


@attrs.frozen
class Logon:
    """Logon (50): a 2-byte user id and a 10-byte user name padded with spaces."""

    user_id: int = 0
    user: bytes = b""
    code: ClassVar[int] = 0x50
    name: ClassVar[str] = "logon"

    def encode(self) -> bytes:
        if len(self.user) > 10:
            raise ValueError("a C12.18 user name is at most 10 bytes")
        return bytes([self.code]) + self.user_id.to_bytes(2, "big") + self.user.ljust(10, b" ")


@attrs.frozen
class Security:
    """Security (51): the 20-byte password. A shorter one is padded with ``pad``: NUL by
    default, as binary passwords are (termineter pads the same way); some meters expect
    spaces. Decoded requests keep all 20 bytes as sent."""

    password: bytes
    pad: int = 0x00
    code: ClassVar[int] = 0x51
    name: ClassVar[str] = "security"

    def padded(self) -> bytes:
        if len(self.password) > 20:
            raise ValueError("a C12.18 password is at most 20 bytes")
        return self.password.ljust(20, bytes([self.pad]))

    def encode(self) -> bytes:
        return bytes([self.code]) + self.padded()

    def matches(self, expected: bytes) -> bool:
        """Whether this password is ``expected`` padded with NULs or spaces (the meter side:
        clients differ in how they pad)."""
        sent = self.padded()
        return any(sent == expected.ljust(20, fill) for fill in (b"\0", b" "))


@attrs.frozen
class Logoff:
    code: ClassVar[int] = 0x52
    name: ClassVar[str] = "logoff"

    def encode(self) -> bytes:
        return bytes([self.code])


@attrs.frozen
class Negotiate:
    """Negotiate (60, or 61 with one baud rate): packet size, number of packets, baud."""

    packet_size: int = 64
    max_packets: int = 1
    baud: int | None = None
    name: ClassVar[str] = "negotiate"

    def encode(self) -> bytes:
        body = self.packet_size.to_bytes(2, "big") + bytes([self.max_packets])
        if self.baud is None:
            return b"\x60" + body
        try:
            code = BAUD_CODES[self.baud]
        except KeyError:
            raise ValueError(f"no C12.18 baud code for {self.baud}") from None
        return b"\x61" + body + bytes([code])


@attrs.frozen
class Wait:
    """Wait (70): keep the session open ``seconds`` longer."""

    seconds: int
    code: ClassVar[int] = 0x70
    name: ClassVar[str] = "wait"

    def encode(self) -> bytes:
        return bytes([self.code, self.seconds])


Request = Identify | Terminate | Read | Write | Logon | Security | Logoff | Negotiate | Wait


def decode_request(data: bytes) -> Request:
    """The request a message carries (the meter side; simulators); FrameError otherwise."""
    if not data:
        raise FrameError("empty request", offset=0, field="request code")
    code, body = data[0], data[1:]

    def need(n: int) -> None:
        if len(body) != n:
            raise FrameError(
                f"request 0x{code:02X} has {n} bytes after its code, got {len(body)}",
                offset=1,
                field="request",
            )

    if code in (0x20, 0x21, 0x52):
        need(0)
        simple: dict[int, Request] = {0x20: Identify(), 0x21: Terminate(), 0x52: Logoff()}
        return simple[code]
    if code == 0x30:
        need(2)
        return Read(int.from_bytes(body, "big"))
    if code == 0x3F:
        need(7)
        return Read(
            int.from_bytes(body[:2], "big"),
            int.from_bytes(body[2:5], "big"),
            int.from_bytes(body[5:7], "big"),
        )
    if code in (0x40, 0x4F):
        head = 2 if code == 0x40 else 5
        if len(body) < head + 3:
            raise FrameError("write request too short", offset=1, field="request")
        count = int.from_bytes(body[head : head + 2], "big")
        need(head + 2 + count + 1)
        table_data = body[head + 2 : head + 2 + count]
        if table_checksum(table_data) != body[-1]:
            raise FrameError("bad table data checksum", offset=len(data) - 1, field="checksum")
        offset = int.from_bytes(body[2:5], "big") if code == 0x4F else None
        return Write(int.from_bytes(body[:2], "big"), table_data, offset)
    if code == 0x50:
        need(12)
        return Logon(int.from_bytes(body[:2], "big"), body[2:].rstrip(b" "))
    if code == 0x51:
        need(20)
        return Security(body)
    if code == 0x60:
        need(3)
        return Negotiate(int.from_bytes(body[:2], "big"), body[2])
    if 0x61 <= code <= 0x6B:
        # 61..6B carry 1..11 baud rates; the answer picks one, fep keeps the first.
        need(3 + code - 0x60)
        if body[3] not in BAUD_BY_CODE:
            raise FrameError(f"unknown baud code {body[3]}", offset=4, field="baud")
        return Negotiate(int.from_bytes(body[:2], "big"), body[2], BAUD_BY_CODE[body[3]])
    if code == 0x70:
        need(1)
        return Wait(body[0])
    raise FrameError(f"unknown request code 0x{code:02X}", offset=0, field="request code")


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------


class Standard(enum.IntEnum):
    """The reference standard an identify answer names."""

    C12_18 = 0x00
    C12_21 = 0x02
    C12_22 = 0x03


# Identify features (code -> what follows it). C12.21: 01 <auth-ser> (auth type, algorithm)
# and 02 <auth-ser-ticket> (auth type, algorithm, ticket length, ticket); C12.18-2006 and
# C12.22: 06 security mechanism and 08 device class (universal ids: tag, length, value),
# 07 session control (one byte), 09 device identity (format, length, identity). Elster's
# MeteringSDK reads a C12.21 07 as device identity (length, identity): fep takes whichever
# of the two lets the rest of the list parse.
FEATURE_AUTH_SERVICE: Final = 0x01
FEATURE_AUTH_TICKET: Final = 0x02


def _feature_sizes(body: bytes, at: int) -> list[int]:
    """The sizes the bytes after the feature code at ``at`` may have, most likely first;
    [] for an unknown code or a length byte past the end."""
    code = body[at]

    def length(offset: int, extra: int) -> list[int]:
        return [extra + body[at + offset]] if at + offset < len(body) else []

    if code == FEATURE_AUTH_SERVICE:
        return [2]
    if code == FEATURE_AUTH_TICKET:
        return length(3, 3)
    if code in (0x06, 0x08, 0x09):
        return length(2, 2)
    if code == 0x07:
        return [1, *length(1, 1)]
    return []


def _parse_features(body: bytes, start: int) -> list[tuple[int, bytes]]:
    """The features from ``start`` to the end-of-list byte, which must end ``body``."""
    n = len(body)
    # parses[i]: the size to take at i so that the rest parses to the end (None: no way).
    parses: list[int | None] = [None] * (n + 1)
    for at in range(n - 1, start - 1, -1):
        if body[at] == 0x00:
            parses[at] = 0 if at == n - 1 else None
            continue
        for size in _feature_sizes(body, at):
            after = at + 1 + size
            if after < n and parses[after] is not None:
                parses[at] = size
                break
    if start < n and parses[start] is not None:
        features: list[tuple[int, bytes]] = []
        at = start
        while body[at] != 0x00:
            take = parses[at]
            assert take is not None
            features.append((body[at], body[at + 1 : at + 1 + take]))
            at += 1 + take
        return features
    # No way through: name the first fault on the most likely reading.
    at = start
    while at < n and body[at] != 0x00:
        sizes = _feature_sizes(body, at)
        if not sizes:
            raise FrameError(
                f"unknown identify feature 0x{body[at]:02X}", offset=at + 1, field="features"
            )
        if at + 1 + sizes[0] > n:
            raise FrameError("identify feature cut short", offset=at + 1, field="features")
        at += 1 + sizes[0]
    if at >= n:
        raise FrameError(
            "identify feature list without end of list", offset=at + 1, field="features"
        )
    raise FrameError("bytes after the identify end of list", offset=at + 2, field="features")


@attrs.frozen
class IdentifyResponse:
    """Identify answer: ``ok std ver rev <features> 00``. ``features`` keeps each feature
    code with its bytes as sent (01/02 C12.21 authentication service and ticket, 06
    security mechanism, 07 session control, 08 device class, 09 device identity)."""

    standard: int = Standard.C12_18
    version: int = 1
    revision: int = 0
    features: tuple[tuple[int, bytes], ...] = ()

    def encode(self) -> bytes:
        body = b"".join(bytes([code]) + payload for code, payload in self.features)
        return bytes([ResponseCode.OK, self.standard, self.version, self.revision]) + body + b"\0"

    @classmethod
    def decode(cls, data: bytes, *, meter: str | None = None) -> IdentifyResponse:
        body = check_response(data, "identify", meter=meter)
        if len(body) < 4:
            raise FrameError("identify answer too short", offset=1, field="identify")
        return cls(body[0], body[1], body[2], tuple(_parse_features(body, 3)))


@attrs.frozen
class NegotiateResponse:
    """Negotiate answer: ``ok packet-size nbr-packets [baud]``; ``baud`` 0 (code 00) is
    "externally defined": the line's speed is not the protocol's to set (a modem)."""

    packet_size: int
    max_packets: int
    baud: int | None = None

    def encode(self) -> bytes:
        body = bytes([ResponseCode.OK]) + self.packet_size.to_bytes(2, "big")
        body += bytes([self.max_packets])
        if self.baud is not None:
            body += bytes([EXTERNAL_BAUD if self.baud == EXTERNAL_BAUD else BAUD_CODES[self.baud]])
        return body

    @classmethod
    def decode(cls, data: bytes, *, meter: str | None = None) -> NegotiateResponse:
        body = check_response(data, "negotiate", meter=meter)
        if len(body) not in (3, 4):
            raise FrameError(
                f"negotiate answer has {len(body)} bytes after ok", offset=1, field="negotiate"
            )
        baud = None
        if len(body) == 4 and body[3] == EXTERNAL_BAUD:
            baud = EXTERNAL_BAUD
        elif len(body) == 4:
            if body[3] not in BAUD_BY_CODE:
                raise FrameError(f"unknown baud code {body[3]}", offset=4, field="baud")
            baud = BAUD_BY_CODE[body[3]]
        return cls(int.from_bytes(body[:2], "big"), body[2], baud)


def encode_ok() -> bytes:
    """The bare ok answer (logon, security, logoff, terminate, wait, write)."""
    return bytes([ResponseCode.OK])


def encode_error(code: int) -> bytes:
    return bytes([code])


def decode_ok(data: bytes, service: str, *, meter: str | None = None) -> None:
    """Check a bare answer; the named error when it is not ok."""
    body = check_response(data, service, meter=meter)
    if body:
        raise FrameError(f"{service} answer has {len(body)} unexpected bytes", offset=1)


def encode_read_response(table_data: bytes) -> bytes:
    """Read answer: ``ok count data checksum``."""
    return (
        bytes([ResponseCode.OK])
        + len(table_data).to_bytes(2, "big")
        + table_data
        + bytes([table_checksum(table_data)])
    )


def decode_read_response(
    data: bytes, *, meter: str | None = None, table: int | None = None
) -> bytes:
    """The table data of a read answer, its count and checksum checked."""
    service = "read" if table is None else f"read of table {table}"
    body = check_response(data, service, meter=meter)
    if len(body) < 3:
        raise FrameError("read answer too short", offset=1, field="count")
    count = int.from_bytes(body[:2], "big")
    if len(body) != count + 3:
        raise FrameError(
            f"read answer count {count} but {len(body) - 3} data bytes", offset=1, field="count"
        )
    table_data = body[2:-1]
    if table_checksum(table_data) != body[-1]:
        raise FrameError(
            f"bad table data checksum: computed 0x{table_checksum(table_data):02X}, "
            f"received 0x{body[-1]:02X}",
            offset=len(data) - 1,
            field="checksum",
        )
    return table_data


# ---------------------------------------------------------------------------
# The link: ACK/NAK, retransmission, toggle bit (client side)
# ---------------------------------------------------------------------------


@attrs.frozen
class Sent:
    """Every packet of our last message was acknowledged; the answer comes next."""


@attrs.frozen
class Received:
    """A whole message from the other side (already acknowledged)."""

    data: bytes


@attrs.frozen
class Retransmit:
    """A NAK asked for our last packet again (``attempt`` counts resends so far)."""

    attempt: int


LinkEvent = Sent | Received | Retransmit

DEFAULT_RETRIES: Final = 3


class Link:
    """One end of a C12.18 link with no I/O: ``send(message)`` and ``timeout()`` give the
    bytes to write; ``receive(data)`` gives the bytes to write back (ACKs, NAKs, the next
    or repeated packet) and the events. Our toggle bit alternates per new packet; packets
    from the other side are ACKed, damaged ones NAKed, repeats ACKed and dropped. After
    ``retries`` resends of one packet (NAKs or timeouts) a ProtocolError is raised.
    """

    def __init__(
        self,
        *,
        identity: int = 0,
        packet_size: int = 64,
        retries: int = DEFAULT_RETRIES,
        meter: str | None = None,
    ) -> None:
        self.identity = identity
        self.packet_size = packet_size
        self.retries = retries
        self.meter = meter
        self._toggle = False
        self._outgoing: list[Packet] = []
        self._attempt = 0
        self._decoder = PacketDecoder()
        self._assembler = MessageAssembler()
        # NAKs this side sent for damaged packets (a count: a NAK byte can also stand in a
        # packet's data, so the bytes written do not tell).
        self.naks_sent = 0

    @property
    def awaiting_ack(self) -> bool:
        return bool(self._outgoing)

    @property
    def attempt(self) -> int:
        """Resends of the packet now waiting for its ACK (0 on the first try)."""
        return self._attempt

    def send(self, message: bytes) -> bytes:
        """The first packet of ``message`` (the others go out as each one is ACKed)."""
        if self._outgoing:
            raise ProtocolError(
                "C12.18: a message is still waiting for its ACK",
                meter=self.meter,
                protocol=PROTOCOL,
            )
        self._outgoing = packetize(
            message, packet_size=self.packet_size, identity=self.identity, toggle=self._toggle
        )
        self._toggle ^= len(self._outgoing) % 2 == 1
        self._attempt = 0
        return self._outgoing[0].encode()

    def timeout(self) -> bytes:
        """No ACK came in time: the packet again, or ProtocolError when out of retries."""
        if not self._outgoing:
            return b""
        return self._resend("no ACK")

    def _resend(self, why: str) -> bytes:
        self._attempt += 1
        if self._attempt > self.retries:
            self._outgoing = []
            raise ProtocolError(
                f"meter {self.meter or '?'}: C12.18 packet not acknowledged after "
                f"{self.retries} retries ({why})",
                meter=self.meter,
                protocol=PROTOCOL,
            )
        return self._outgoing[0].encode()

    def receive(self, data: bytes) -> tuple[bytes, list[LinkEvent]]:
        out = bytearray()
        events: list[LinkEvent] = []
        for item in self._decoder.decode_all(data):
            if isinstance(item, FrameError):
                # A damaged packet: ask for it again, then go on with what follows.
                out.append(NAK)
                self.naks_sent += 1
            else:
                self._take(item, out, events)
        return bytes(out), events

    def _take(self, item: LinkItem, out: bytearray, events: list[LinkEvent]) -> None:
        if isinstance(item, Ack):
            if self._outgoing:
                self._outgoing.pop(0)
                self._attempt = 0
                if self._outgoing:
                    out += self._outgoing[0].encode()
                else:
                    events.append(Sent())
        elif isinstance(item, Nak):
            if self._outgoing:
                out += self._resend("NAK")
                events.append(Retransmit(self._attempt))
        else:
            if len(self._outgoing) == 1:
                # A packet from the other side while our last packet waits for its ACK: the
                # ACK was lost on the line, and an answer proves the packet arrived.
                self._outgoing = []
                self._attempt = 0
                events.append(Sent())
            out.append(ACK)
            try:
                message = self._assembler.packet(item)
            except FrameError:
                return
            if message is not None:
                events.append(Received(message))

    def reset(self) -> None:
        """Start over (a new session on the same line)."""
        self._toggle = False
        self._outgoing = []
        self._attempt = 0
        self._decoder = PacketDecoder()
        self._assembler.reset()
