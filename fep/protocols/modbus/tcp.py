"""Modbus TCP framing: the MBAP header (transaction id, protocol id 0, length, unit id)
before each PDU, and a streaming decoder that resynchronises.

Source: MODBUS Messaging on TCP/IP Implementation Guide V1.0b, 3.1.3 (MBAP header: 7 bytes,
big-endian; the length counts the unit identifier and the PDU). Sans-IO: no Twisted.
The decoder raises FrameError and nothing else (fuzzed by tests/fuzz); a run of junk costs
one error.
"""

from __future__ import annotations

import re
import struct
from typing import Final

import attrs

from fep.errors import FrameError
from fep.protocols.stream import StreamDecoder

MBAP_LEN: Final = 7
MODBUS_PROTOCOL_ID: Final = 0
# Unit id + PDU: at most 1 + 253 bytes.
MAX_LENGTH: Final = 254
DEFAULT_PORT: Final = 502


@attrs.frozen
class TcpFrame:
    transaction: int
    unit: int
    pdu: bytes

    def encode(self) -> bytes:
        return encode(self.transaction, self.unit, self.pdu)


def encode(transaction: int, unit: int, pdu: bytes) -> bytes:
    """The wire bytes of one MBAP frame."""
    if not 0 <= transaction <= 0xFFFF:
        raise ValueError(f"transaction id {transaction} out of 0..65535")
    if not 0 <= unit <= 255:
        raise ValueError(f"unit {unit} out of 0..255")
    if not 1 <= len(pdu) <= MAX_LENGTH - 1:
        raise ValueError(f"PDU of {len(pdu)} bytes (1..253)")
    return struct.pack(">HHHB", transaction, MODBUS_PROTOCOL_ID, len(pdu) + 1, unit) + pdu


# Where a plausible MBAP header starts: any transaction id, protocol id 0, length 2..254.
_HEADER: Final = re.compile(b"(?s)..\x00\x00\x00[\x02-\xfe]")


class MbapDecoder(StreamDecoder[TcpFrame]):
    """MBAP frames from a byte stream. A header with another protocol id or a length out of
    2..254 cannot start a frame: one byte is dropped and the search goes on."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0

    def _drop(self, why: str, field: str, at: int) -> FrameError:
        # Drop up to the next place a header could start (protocol id 0, length 2..254),
        # found in C: a junk stream costs one error per run, not one per byte.
        offset = self._base + at
        found = _HEADER.search(self._buffer, 1)
        n = found.start() if found is not None else max(1, len(self._buffer) - (MBAP_LEN - 2))
        self._consume(n)
        self.skipped += n
        return FrameError(why, offset=offset, field=field)

    def _next(self) -> TcpFrame | None:
        buf = self._buffer
        if len(buf) < MBAP_LEN:
            return None
        transaction, protocol, length, unit = struct.unpack_from(">HHHB", buf)
        if protocol != MODBUS_PROTOCOL_ID:
            raise self._drop(f"protocol id {protocol}, not 0 (Modbus)", "protocol id", 2)
        if not 2 <= length <= MAX_LENGTH:
            raise self._drop(f"MBAP length {length} out of 2..{MAX_LENGTH}", "length", 4)
        end = MBAP_LEN - 1 + length
        if len(buf) < end:
            return None
        frame = TcpFrame(transaction, unit, bytes(buf[MBAP_LEN:end]))
        self._consume(end)
        self.frames += 1
        return frame


__all__ = ["DEFAULT_PORT", "MbapDecoder", "TcpFrame", "encode"]
