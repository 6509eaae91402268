"""Modbus RTU framing: ``unit PDU CRC``, the CRC-16/Modbus (polynomial 0xA001 reflected,
initial 0xFFFF, sent low byte first), the inter-frame silence, and a streaming decoder that
finds frames in a byte stream by their length and CRC and resynchronises after garbage.

Source: MODBUS over Serial Line Specification and Implementation Guide V1.02 (2.5.1 RTU
transmission mode, 6.2.2 CRC generation). A frame ends after 3.5 character times of silence;
above 19200 Bd the guide fixes 1.75 ms for the frame gap (and 750 us between characters).
The decoder does not rely on timing (a TCP-to-serial server or a pty keeps none): it reads the
PDU length from the function code and byte count, checks the CRC, and drops one byte at a
time until a frame checks; a client tells it the PDU lengths it awaits (``expected``), so
a bogus byte count is dropped at once. The session calls ``silence()`` when the line has
been quiet for the frame gap, which throws away a partial frame. Sans-IO: no Twisted.
The decoder raises FrameError and nothing else (fuzzed by tests/fuzz); an ADU is at most
MAX_ADU bytes.
"""

from __future__ import annotations

from typing import Final

import attrs

from fep.errors import FrameError
from fep.protocols.modbus.pdu import pdu_length
from fep.protocols.stream import StreamDecoder

BROADCAST: Final = 0
MAX_UNIT: Final = 247
MAX_ADU: Final = 256


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE: Final = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/Modbus of ``data`` (the value; on the wire it goes low byte first)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def frame_gap(baudrate: int, char_bits: float = 11) -> float:
    """Seconds of silence that end a frame: 3.5 characters, or 1.75 ms above 19200 Bd."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * char_bits / baudrate


@attrs.frozen
class RtuFrame:
    unit: int
    pdu: bytes

    def encode(self) -> bytes:
        return encode(self.unit, self.pdu)


def encode(unit: int, pdu: bytes) -> bytes:
    """The wire bytes of one RTU frame."""
    if not 0 <= unit <= 255:
        raise ValueError(f"unit {unit} out of 0..255")
    if not 1 <= len(pdu) <= MAX_ADU - 3:
        raise ValueError(f"PDU of {len(pdu)} bytes (1..253)")
    body = bytes((unit,)) + pdu
    return body + crc16(body).to_bytes(2, "little")


class RtuDecoder(StreamDecoder[RtuFrame]):
    """RTU frames from a byte stream. ``requests=True`` reads what a client sends (the
    simulated recorder's side), else what a device answers."""

    def __init__(self, *, requests: bool = False) -> None:
        super().__init__()
        self.requests = requests
        self.frames = 0
        # PDU lengths a client waits for (its answer, or an exception): a head announcing
        # another length is garbage at once instead of a wait for bytes that never come.
        self.expected: frozenset[int] | None = None

    def silence(self) -> int:
        """The line was quiet for the frame gap: a partial frame can no longer complete.
        Drops it and returns how many bytes went."""
        dropped = len(self._buffer)
        if dropped:
            self.skipped += dropped
            self._consume(dropped)
        return dropped

    def _drop(self, why: str, field: str) -> FrameError:
        offset = self._base
        self._consume(1)
        self.skipped += 1
        return FrameError(why, offset=offset, field=field)

    def _next(self) -> RtuFrame | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        unit = buf[0]
        if unit > MAX_UNIT or (unit == BROADCAST and not self.requests):
            raise self._drop(f"unit address {unit} cannot start a frame", "unit")
        try:
            n = pdu_length(buf[1:], request=self.requests)
        except FrameError as e:
            raise self._drop(e.message, e.field or "function code") from None
        if n is None:
            return None
        if self.expected is not None and n not in self.expected:
            raise self._drop(f"a {n}-byte PDU where {sorted(self.expected)} is awaited",
                             "byte count")
        if len(buf) < 1 + n + 2:
            return None
        end = 1 + n
        if crc16(memoryview(buf)[:end]) != int.from_bytes(buf[end : end + 2], "little"):
            raise self._drop(f"CRC mismatch in a {end + 2}-byte frame", "CRC")
        frame = RtuFrame(unit, bytes(buf[1:end]))
        self._consume(end + 2)
        self.frames += 1
        return frame


__all__ = ["RtuDecoder", "RtuFrame", "crc16", "encode", "frame_gap"]
