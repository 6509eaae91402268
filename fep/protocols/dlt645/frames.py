"""DL/T 645 link frames: ``[FE..] 68 A0..A5 68 C L DATA CS 16``, the BCD address, the control
code, the +0x33 data offset, the checksum, and a streaming decoder that resynchronises.

The frame layout is the same in DL/T 645-1997 and DL/T 645-2007; only the function codes
and the data identifiers differ (see ``services``). Sans-IO: no Twisted here.
Decoding raises FrameError and nothing else (fuzzed by tests/fuzz); a frame's data is at
most 255 bytes.
"""

from __future__ import annotations

from typing import Final

import attrs

from fep.errors import FrameError
from fep.protocols.stream import StreamDecoder

PREAMBLE: Final = 0xFE
START: Final = 0x68
END: Final = 0x16
DATA_OFFSET: Final = 0x33
# Header (68 A0..A5 68 C L) and trailer (CS 16) around the data field.
HEADER_LEN: Final = 10
TRAILER_LEN: Final = 2
MAX_DATA: Final = 255

ADDRESS_DIGITS: Final = 12
BROADCAST_ADDRESS: Final = "999999999999"
WILDCARD_ADDRESS: Final = "AAAAAAAAAAAA"

# Control code bits (DL/T 645-2007 7.1.3; the 1997 edition has the same three high bits).
DIRECTION_BIT: Final = 0x80
ERROR_BIT: Final = 0x40
FOLLOW_UP_BIT: Final = 0x20
FUNCTION_MASK: Final = 0x1F


def checksum(data: bytes | bytearray) -> int:
    """CS: the sum modulo 256 of every byte from the first 68 up to the last data byte."""
    return sum(data) & 0xFF


def scramble(data: bytes) -> bytes:
    """The data field as sent: every byte plus 0x33 modulo 256."""
    return bytes((b + DATA_OFFSET) & 0xFF for b in data)


def unscramble(data: bytes | bytearray) -> bytes:
    """The data field as meant: every byte as received minus 0x33 modulo 256."""
    return bytes((b - DATA_OFFSET) & 0xFF for b in data)


def _address_byte_ok(byte: int) -> bool:
    # Each address byte is two BCD digits, or AA: the wildcard of abbreviated addressing.
    return byte == 0xAA or ((byte >> 4) <= 9 and (byte & 0x0F) <= 9)


def encode_address(address: str) -> bytes:
    """The 6 wire bytes of an address given most significant digit first, low byte first on
    the wire: ``"398192000337"`` -> ``37 03 00 92 81 39``. Shorter digit strings are padded
    with leading zeros; ``A`` pairs are wildcards."""
    text = address.strip().upper()
    if len(text) > ADDRESS_DIGITS or not text:
        raise ValueError(f"DL/T 645 address has 1..12 digits, got {address!r}")
    text = text.rjust(ADDRESS_DIGITS, "0")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"DL/T 645 address is BCD digits or AA: {address!r}") from None
    if not all(_address_byte_ok(b) for b in raw):
        raise ValueError(f"DL/T 645 address is BCD digits or AA: {address!r}")
    return raw[::-1]


def decode_address(raw: bytes | bytearray, offset: int = 0) -> str:
    """The address text (most significant digit first) of 6 wire bytes."""
    for i, byte in enumerate(raw):
        if not _address_byte_ok(byte):
            raise FrameError(
                f"address byte 0x{byte:02X} is neither BCD nor AA",
                offset=offset + i,
                field="address",
            )
    return bytes(raw[::-1]).hex().upper()


@attrs.frozen
class Frame:
    """One DL/T 645 frame with its data field as meant (the 0x33 offset removed)."""

    address: str
    control: int
    data: bytes = b""

    @property
    def function(self) -> int:
        """The function code, bits 0-4 of the control code."""
        return self.control & FUNCTION_MASK

    @property
    def is_response(self) -> bool:
        """Bit 7: sent by the meter (slave) rather than the master."""
        return bool(self.control & DIRECTION_BIT)

    @property
    def is_error(self) -> bool:
        """Bit 6: the meter answers abnormally; the data field is its error status."""
        return bool(self.control & ERROR_BIT)

    @property
    def has_follow_up(self) -> bool:
        """Bit 5: more frames follow (read them with the follow-up service)."""
        return bool(self.control & FOLLOW_UP_BIT)

    @property
    def is_broadcast(self) -> bool:
        return self.address == BROADCAST_ADDRESS

    def encode(self, preamble: int = 0) -> bytes:
        """The frame's wire bytes, after ``preamble`` FE wake-up bytes."""
        if len(self.data) > MAX_DATA:
            raise ValueError(f"DL/T 645 data field is at most {MAX_DATA} bytes")
        if not 0 <= self.control <= 0xFF:
            raise ValueError(f"control code out of range: {self.control}")
        body = (
            bytes([START])
            + encode_address(self.address)
            + bytes([START, self.control, len(self.data)])
            + scramble(self.data)
        )
        return bytes([PREAMBLE]) * preamble + body + bytes([checksum(body), END])


def control_code(
    function: int, *, response: bool = False, error: bool = False, follow_up: bool = False
) -> int:
    """A control code from its function and flag bits."""
    if not 0 <= function <= FUNCTION_MASK:
        raise ValueError(f"function code out of range 0..0x1F: {function}")
    return (
        function
        | (DIRECTION_BIT if response else 0)
        | (ERROR_BIT if error else 0)
        | (FOLLOW_UP_BIT if follow_up else 0)
    )


def decode_frame(raw: bytes) -> Frame:
    """Exactly one frame (leading FE bytes allowed) into a Frame; FrameError otherwise."""
    decoder = FrameDecoder()
    start = 0
    while start < len(raw) and raw[start] == PREAMBLE:
        start += 1
    if start == len(raw) or raw[start] != START:
        raise FrameError("no 68 start byte after the preamble", offset=start, field="start")
    frames = decoder.receive(raw)
    if len(frames) != 1 or decoder.buffered:
        # A complete frame that was not well formed already raised; here the bytes ran out.
        raise FrameError(
            f"expected one whole frame, got {len(frames)} and {decoder.buffered} bytes over",
            offset=len(raw),
            field="length",
        )
    return frames[0]


class FrameDecoder(StreamDecoder[Frame]):
    """Turns a byte stream (either direction) into Frames.

    ``receive(data)`` returns every frame completed so far (an empty list means "need more").
    FE preambles and line garbage before a 68 are skipped silently, and so is a 68 not
    followed by a second 68 seven bytes on (it was garbage too). A frame whose end byte or
    checksum is wrong raises FrameError with ``offset`` counted from the start of the
    stream; its first byte is dropped first, so the next ``receive`` (even ``b""``) goes
    on searching from the byte after it. Frames completed before an error in the same call
    are returned, and the error is raised by the following call.
    """

    def _skip_garbage(self) -> None:
        at = self._buffer.find(START)
        n = len(self._buffer) if at < 0 else at
        self.skipped += n
        self._consume(n)

    def _next(self) -> Frame | None:
        while True:
            self._skip_garbage()
            buf = self._buffer
            if len(buf) < HEADER_LEN:
                # The second 68 may already show this is no frame.
                if len(buf) >= 8 and buf[7] != START:
                    self.skipped += 1
                    self._consume(1)
                    continue
                return None
            if buf[7] != START:
                self.skipped += 1
                self._consume(1)
                continue
            break
        base = self._base
        length = buf[9]
        total = HEADER_LEN + length + TRAILER_LEN
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
        computed = checksum(frame_bytes[:-2])
        received = frame_bytes[-2]
        if computed != received:
            self._consume(1)
            raise FrameError(
                f"bad checksum: computed 0x{computed:02X}, received 0x{received:02X}",
                offset=base + total - 2,
                field="CS",
            )
        try:
            address = decode_address(frame_bytes[1:7], base + 1)
        except FrameError:
            self._consume(1)
            raise
        self._consume(total)
        return Frame(address, frame_bytes[8], unscramble(frame_bytes[HEADER_LEN:-2]))
