"""DL/T 698.45 link frames: ``[FE..] 68 L L C SA A.. CA HCS HCS APDU FCS FCS 16``, the
control field, the server address (SA) and client address (CA), the CRC-16 of HCS and FCS,
the split-frame header (link-layer segmentation), and a stream decoder that resynchronises.

The length field counts every byte but the 68 and the 16 (bits 0-13; bit 14 set means the
count is in kilobytes, which no sane frame uses and fep refuses). HCS covers the header from
the length to CA, FCS everything from the length to the end of the APDU, both the PPP FCS-16
(RFC 1662: reflected 0x8408, initial FFFF, final complement) sent low byte first.

Sans-IO: no Twisted here. Decoding raises FrameError and nothing else (fuzzed by
tests/fuzz); a frame is at most ``MAX_FRAME`` bytes, so the work per frame is bounded.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from fep.errors import FrameError
from fep.protocols.stream import StreamDecoder

PREAMBLE: Final = 0xFE
START: Final = 0x68
END: Final = 0x16
# The length field's 14 bits: a frame of 16383 + 2 bytes at most.
LENGTH_MASK: Final = 0x3FFF
LENGTH_UNIT_KB: Final = 0x4000
MAX_FRAME: Final = LENGTH_MASK + 2
# 68, length (2), control, SA, at least one address byte, CA, HCS (2), FCS (2), 16.
MIN_FRAME: Final = 12

# Control field (DL/T 698.45 5.3.2).
DIR_BIT: Final = 0x80  # 1: sent by the server (meter, terminal)
PRM_BIT: Final = 0x40  # 1: the exchange was started by the client (master); 0: by the server
SPLIT_BIT: Final = 0x20  # the APDU field holds one fragment of a split APDU
SCRAMBLE_BIT: Final = 0x08  # the user data are scrambled (+0x33), as DL/T 645 does
FUNCTION_MASK: Final = 0x07


class Function(enum.IntEnum):
    """The control field's function code."""

    LINK = 1  # link management: login, heartbeat, logout
    USER_DATA = 3  # application data


class AddressType(enum.IntEnum):
    """SA bits 7-6."""

    SINGLE = 0
    WILDCARD = 1
    GROUP = 2
    BROADCAST = 3


# ---------------------------------------------------------------------------
# CRC-16 (FCS-16 of RFC 1662, as DL/T 698.45 prints it in its annex)
# ---------------------------------------------------------------------------


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_FCS_TABLE: Final = _table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """The check value of HCS and FCS: ``crc16(b"123456789") == 0x906E``."""
    crc = 0xFFFF
    table = _FCS_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


# ---------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------


@attrs.frozen
class ServerAddress:
    """SA and the server address bytes it announces.

    ``address`` is the address as people write it (most significant digit first; BCD digits
    for a single address, e.g. a meter's ``"000000000001"``); on the wire the bytes go low
    byte first. ``logical`` is the logical address (bits 5-4 of SA; 0 the meter itself, 1 its
    second logical device). A wildcard address may hold ``A`` digits.
    """

    address: str = "AAAAAAAAAAAA"
    type: AddressType = AddressType.SINGLE
    logical: int = 0

    def __attrs_post_init__(self) -> None:
        text = self.address
        if not text or len(text) % 2 or len(text) > 32:
            raise ValueError(f"server address is 1..16 bytes of hex digits, got {text!r}")
        try:
            bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"server address is hex digits, got {text!r}") from None
        if not 0 <= self.logical <= 3:
            raise ValueError(f"logical address {self.logical} is not 0..3")

    @classmethod
    def broadcast(cls) -> ServerAddress:
        return cls("AA", AddressType.BROADCAST)

    @classmethod
    def wildcard(cls, length: int = 6) -> ServerAddress:
        return cls("AA" * length, AddressType.WILDCARD)

    @property
    def wire(self) -> bytes:
        """The address bytes as sent (low byte first)."""
        return bytes.fromhex(self.address)[::-1]

    def encode(self) -> bytes:
        wire = self.wire
        sa = (int(self.type) << 6) | (self.logical << 4) | (len(wire) - 1)
        return bytes([sa]) + wire

    def matches(self, other: ServerAddress) -> bool:
        """Whether a frame for ``self`` (a request's target, possibly wildcard or broadcast)
        is meant for the server at ``other``."""
        if self.type is AddressType.BROADCAST:
            return True
        if self.logical != other.logical:
            return False
        if self.type is AddressType.WILDCARD:
            mine, theirs = self.address.upper(), other.address.upper()
            if len(mine) != len(theirs):
                return False
            return all(a in ("A", b) for a, b in zip(mine, theirs, strict=True))
        return self.address.upper() == other.address.upper()


def server_address(address: str | ServerAddress) -> ServerAddress:
    """A ServerAddress from a meter's address text (12 digits, padded to whole bytes) or
    itself; ``AA..`` digits make a wildcard address."""
    if isinstance(address, ServerAddress):
        return address
    text = address.strip().upper()
    if len(text) % 2:
        text = "0" + text
    kind = AddressType.WILDCARD if "A" in text else AddressType.SINGLE
    return ServerAddress(text, kind)


def decode_server_address(raw: bytes) -> ServerAddress:
    """SA and its address bytes (``raw`` exactly those bytes)."""
    sa = raw[0]
    wire = raw[1:]
    return ServerAddress(wire[::-1].hex().upper(), AddressType(sa >> 6), (sa >> 4) & 0x03)


# ---------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------


@attrs.frozen
class Frame:
    """One DL/T 698.45 link frame: its control field, server and client address, and its
    APDU (for a split frame: the fragment header and one piece of the APDU; see
    ``Fragment``). ``data`` is as meant: scrambled frames are unscrambled on decode."""

    control: int
    server: ServerAddress
    client: int = 0
    data: bytes = b""

    @property
    def function(self) -> int:
        return self.control & FUNCTION_MASK

    @property
    def from_server(self) -> bool:
        """DIR: sent by the server (meter, terminal) rather than the client (fep)."""
        return bool(self.control & DIR_BIT)

    @property
    def client_started(self) -> bool:
        """PRM: the exchange was started by the client (a request or its response), not by
        the server (a login, a heartbeat, a report)."""
        return bool(self.control & PRM_BIT)

    @property
    def split(self) -> bool:
        return bool(self.control & SPLIT_BIT)

    @property
    def scrambled(self) -> bool:
        return bool(self.control & SCRAMBLE_BIT)

    def encode(self, preamble: int = 0) -> bytes:
        """The frame's wire bytes, after ``preamble`` FE wake-up bytes."""
        if not 0 <= self.control <= 0xFF or self.control & 0x10:
            raise ValueError(f"control field 0x{self.control:02X}: bit 4 is reserved")
        if not 0 <= self.client <= 0xFF:
            raise ValueError(f"client address {self.client} is not 0..255")
        data = scramble(self.data) if self.scrambled else self.data
        address = self.server.encode()
        length = 2 + 1 + len(address) + 1 + 2 + len(data) + 2
        if length > LENGTH_MASK:
            raise ValueError(f"frame of {length + 2} bytes is longer than {MAX_FRAME}")
        head = length.to_bytes(2, "little") + bytes([self.control]) + address + bytes([self.client])
        head += crc16(head).to_bytes(2, "little")
        body = head + data
        return (
            bytes([PREAMBLE]) * preamble
            + bytes([START])
            + body
            + crc16(body).to_bytes(2, "little")
            + bytes([END])
        )


def control(
    function: Function | int = Function.USER_DATA,
    *,
    from_server: bool = False,
    client_started: bool = True,
    split: bool = False,
    scrambled: bool = False,
) -> int:
    """A control field from its parts."""
    return (
        int(function)
        | (DIR_BIT if from_server else 0)
        | (PRM_BIT if client_started else 0)
        | (SPLIT_BIT if split else 0)
        | (SCRAMBLE_BIT if scrambled else 0)
    )


def scramble(data: bytes) -> bytes:
    return bytes((b + 0x33) & 0xFF for b in data)


def unscramble(data: bytes | bytearray) -> bytes:
    return bytes((b - 0x33) & 0xFF for b in data)


def decode_frame(raw: bytes) -> Frame:
    """Exactly one frame (leading FE bytes allowed) into a Frame; FrameError otherwise."""
    start = 0
    while start < len(raw) and raw[start] == PREAMBLE:
        start += 1
    if start == len(raw) or raw[start] != START:
        raise FrameError("no 68 start byte after the preamble", offset=start, field="start")
    decoder = FrameDecoder()
    frames = decoder.receive(raw)
    if len(frames) != 1 or decoder.buffered:
        raise FrameError(
            f"expected one whole frame, got {len(frames)} and {decoder.buffered} bytes over",
            offset=len(raw),
            field="length",
        )
    return frames[0]


def _header(buf: bytearray | bytes, base: int, max_frame: int = MAX_FRAME
            ) -> tuple[int, int] | None:  # fmt: skip
    """(frame length, header length up to HCS) of the frame at the head of ``buf``, None
    when more bytes are needed; FrameError when the header cannot be a frame's."""
    if len(buf) < 5:
        return None
    length_field = int.from_bytes(buf[1:3], "little")
    if length_field & 0x8000 or length_field & LENGTH_UNIT_KB:
        raise FrameError(
            f"length field 0x{length_field:04X} has its unit or reserved bit set",
            offset=base + 1,
            field="length",
        )
    total = length_field + 2
    if total > max_frame:
        raise FrameError(
            f"frame of {total} bytes is longer than the {max_frame} this line takes",
            offset=base + 1,
            field="length",
        )
    control_field = buf[3]
    if control_field & 0x10 or (control_field & FUNCTION_MASK) not in (1, 3):
        raise FrameError(
            f"control field 0x{control_field:02X} is none of DL/T 698.45",
            offset=base + 3,
            field="control",
        )
    address_len = (buf[4] & 0x0F) + 1
    header = 1 + 2 + 1 + 1 + address_len + 1  # up to CA
    if total < header + 2 + 2 + 1:
        raise FrameError(
            f"length {length_field} is too short for a header of {header} bytes",
            offset=base + 1,
            field="length",
        )
    return total, header


class FrameDecoder(StreamDecoder[Frame]):
    """Turns a byte stream (either direction) into Frames.

    ``receive(data)`` returns every frame completed so far. FE wake-up bytes and garbage
    before a 68 are skipped (counted in ``skipped``); a 68 whose header does not hold up
    (bad control field, bad length, HCS wrong) costs one byte and the search goes on from the
    next 68 (``bytes.find``), so junk is crossed in time linear in its length. A frame whose
    FCS or end byte is wrong raises FrameError (offset from the start of the stream), its
    first byte already dropped.

    ``max_frame`` (default: what the length field allows) makes longer frames no frames:
    a header whose HCS happens to hold in line noise then costs at most that many bytes of
    FCS work before the search goes on.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        super().__init__()
        self.max_frame = max_frame

    def _skip_garbage(self) -> None:
        at = self._buffer.find(START)
        n = len(self._buffer) if at < 0 else at
        self.skipped += n
        self._consume(n)

    def _next(self) -> Frame | None:
        while True:
            self._skip_garbage()
            buf = self._buffer
            base = self._base
            try:
                found = _header(buf, base, self.max_frame)
            except FrameError:
                # Not a frame's header: a 68 in line noise. Go on from the next byte.
                self.skipped += 1
                self._consume(1)
                continue
            if found is None:
                return None
            total, header = found
            if len(buf) < header + 2:
                return None
            hcs = int.from_bytes(buf[header : header + 2], "little")
            if crc16(buf[1:header]) != hcs:
                self.skipped += 1
                self._consume(1)
                continue
            break
        if len(buf) < total:
            return None
        frame_bytes = bytes(buf[:total])
        if frame_bytes[-1] != END:
            self._consume(1)
            raise FrameError(
                f"frame end byte is 0x{frame_bytes[-1]:02X}, not 16",
                offset=base + total - 1,
                field="end",
            )
        fcs = int.from_bytes(frame_bytes[-3:-1], "little")
        computed = crc16(frame_bytes[1:-3])
        if computed != fcs:
            self._consume(1)
            raise FrameError(
                f"bad FCS: computed 0x{computed:04X}, received 0x{fcs:04X}",
                offset=base + total - 3,
                field="FCS",
            )
        self._consume(total)
        control_field = frame_bytes[3]
        server = decode_server_address(frame_bytes[4 : header - 1])
        data = frame_bytes[header + 2 : -3]
        if control_field & SCRAMBLE_BIT:
            data = unscramble(data)
        return Frame(control_field, server, frame_bytes[header - 1], data)


# ---------------------------------------------------------------------------
# Split frames (link-layer segmentation, DL/T 698.45 5.3.4)
# ---------------------------------------------------------------------------


class FragmentType(enum.IntEnum):
    """Bits 15-14 of the fragment header."""

    FIRST = 0
    LAST = 1
    ACK = 2
    MIDDLE = 3


MAX_FRAGMENT_SEQUENCE: Final = 0x0FFF


@attrs.frozen
class Fragment:
    """One piece of a split APDU: its sequence number (0..4095) and type, and the bytes."""

    sequence: int
    type: FragmentType
    data: bytes = b""

    def encode(self) -> bytes:
        if not 0 <= self.sequence <= MAX_FRAGMENT_SEQUENCE:
            raise ValueError(f"fragment sequence {self.sequence} is not 0..4095")
        head = self.sequence | (int(self.type) << 14)
        return head.to_bytes(2, "little") + self.data


def decode_fragment(data: bytes) -> Fragment:
    if len(data) < 2:
        raise FrameError("split frame without its fragment header", offset=0, field="fragment")
    head = int.from_bytes(data[:2], "little")
    if head & 0x3000:
        raise FrameError(
            f"fragment header 0x{head:04X} has reserved bits set", offset=0, field="fragment"
        )
    return Fragment(head & MAX_FRAGMENT_SEQUENCE, FragmentType(head >> 14), data[2:])


def split_apdu(apdu: bytes, size: int) -> list[Fragment]:
    """An APDU cut into fragments of at most ``size`` bytes (one piece: no split)."""
    if size < 1:
        raise ValueError("fragment size must be positive")
    pieces = [apdu[i : i + size] for i in range(0, len(apdu), size)] or [b""]
    if len(pieces) > MAX_FRAGMENT_SEQUENCE + 1:
        raise ValueError("APDU needs more than 4096 fragments")
    out = []
    for n, piece in enumerate(pieces):
        kind = (
            FragmentType.FIRST
            if n == 0
            else FragmentType.LAST
            if n == len(pieces) - 1
            else FragmentType.MIDDLE
        )
        out.append(Fragment(n, kind, piece))
    return out


class Reassembler:
    """Puts the fragments of one split APDU together, in order: ``accept`` returns the
    whole APDU after the last fragment, None before; FrameError for a fragment out of
    sequence (the partial APDU is dropped) or an APDU over ``limit`` bytes."""

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._next = 0
        self.active = False

    def reset(self) -> None:
        self._parts = []
        self._size = 0
        self._next = 0
        self.active = False

    def accept(self, fragment: Fragment) -> bytes | None:
        if fragment.type is FragmentType.ACK:
            raise FrameError("an acknowledgement is no piece of an APDU", field="fragment")
        if fragment.type is FragmentType.FIRST:
            self.reset()
            self.active = True
        elif not self.active or fragment.sequence != self._next:
            expected = self._next if self.active else "a first fragment"
            self.reset()
            raise FrameError(
                f"split frame {fragment.sequence} out of sequence (expected {expected})",
                field="fragment",
            )
        self._size += len(fragment.data)
        if self._size > self.limit:
            self.reset()
            raise FrameError(f"split APDU over {self.limit} bytes", field="fragment")
        self._parts.append(fragment.data)
        self._next = (fragment.sequence + 1) & MAX_FRAGMENT_SEQUENCE
        if fragment.type is FragmentType.LAST:
            whole = b"".join(self._parts)
            self.reset()
            return whole
        return None


def fragment_ack(sequence: int) -> bytes:
    """The APDU field of the acknowledgement of fragment ``sequence``."""
    return Fragment(sequence, FragmentType.ACK).encode()


__all__ = [
    "END",
    "MAX_FRAME",
    "PREAMBLE",
    "START",
    "AddressType",
    "Fragment",
    "FragmentType",
    "Frame",
    "FrameDecoder",
    "Function",
    "Reassembler",
    "ServerAddress",
    "control",
    "crc16",
    "decode_fragment",
    "decode_frame",
    "fragment_ack",
    "server_address",
    "split_apdu",
]
