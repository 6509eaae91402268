"""The DLMS/COSEM TCP-UDP wrapper (IEC 62056-47): the 8-byte header (version, source and
destination wPort, length) around each APDU, its encoder and a resynchronising stream decoder.

Sans-IO: no Twisted here. The APDU is opaque bytes; several wPorts (client SAPs and logical
devices) may share one connection, each frame carrying its own pair of ports.
"""

from __future__ import annotations

from typing import Final, NoReturn

import attrs

from fep.errors import FrameError
from fep.protocols.stream import StreamDecoder

WRAPPER_VERSION: Final = 1
HEADER_LEN: Final = 8
# The whole wrapper frame must fit a 16-bit length (and one UDP datagram's 16-bit size),
# so the APDU can be at most 0xFFFF minus the header.
MAX_APDU: Final = 0xFFFF - HEADER_LEN

_VERSION_BYTES: Final = WRAPPER_VERSION.to_bytes(2, "big")


def _check_port(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} {value} is not a 16-bit wPort")


@attrs.frozen
class WrapperFrame:
    """One wrapped APDU: ``source_wport`` is the sender's port (e.g. client SAP 16),
    ``destination_wport`` the receiver's (e.g. management logical device 1)."""

    source_wport: int
    destination_wport: int
    apdu: bytes

    def __attrs_post_init__(self) -> None:
        _check_port("source wPort", self.source_wport)
        _check_port("destination wPort", self.destination_wport)

    def reply(self, apdu: bytes) -> WrapperFrame:
        """A frame going back the way this one came (ports swapped)."""
        return WrapperFrame(self.destination_wport, self.source_wport, apdu)


def encode_wrapper(frame: WrapperFrame) -> bytes:
    """The frame on the wire: version, source, destination, length (u16 big-endian each),
    then the APDU. ValueError for an empty APDU or one over ``MAX_APDU`` bytes."""
    length = len(frame.apdu)
    if not 1 <= length <= MAX_APDU:
        raise ValueError(f"wrapped APDU must be 1..{MAX_APDU} bytes, not {length}")
    return (
        _VERSION_BYTES
        + frame.source_wport.to_bytes(2, "big")
        + frame.destination_wport.to_bytes(2, "big")
        + length.to_bytes(2, "big")
        + frame.apdu
    )


class WrapperDecoder(StreamDecoder[WrapperFrame]):
    """Turns a TCP byte stream into WrapperFrames.

    A header whose version is not 1 raises FrameError(field="version") once, and the bytes
    up to the next plausible header (``00 01`` with a length in range) are dropped and
    counted in ``skipped``. A length of 0 or over ``max_apdu`` raises
    FrameError(field="length"); that 8-byte header is dropped and decoding resynchronises
    the same way (an APDU after it is garbage unless it happens to hold a plausible header).
    ``max_apdu`` (default ``MAX_APDU``) bounds what a peer can make us buffer.
    """

    def __init__(self, *, max_apdu: int = MAX_APDU) -> None:
        super().__init__()
        if not 1 <= max_apdu <= MAX_APDU:
            raise ValueError(f"max_apdu must be 1..{MAX_APDU}")
        self.max_apdu = max_apdu
        # True while dropping bytes after a bad header: one error per garbage run.
        self._resyncing = False

    def _plausible_at(self, i: int) -> bool | None:
        """Whether a header may start at ``_buffer[i]``; None when too few bytes tell."""
        buf = self._buffer
        if i + 2 > len(buf):
            # A lone 00 at the end may be the start of 00 01.
            return None if buf[i:] in (b"", b"\x00") else False
        if buf[i : i + 2] != _VERSION_BYTES:
            return False
        if i + HEADER_LEN > len(buf):
            return None
        length = int.from_bytes(buf[i + 6 : i + 8], "big")
        return 1 <= length <= self.max_apdu

    def _resync(self) -> None:
        """Drop bytes up to the next plausible header (or keep a possible partial one).

        Candidates are found with ``bytearray.find`` (C speed): junk without ``00 01`` costs
        one scan, and each candidate looked at in Python is at least 2 bytes dropped."""
        buf = self._buffer
        size = len(buf)
        i = 1 if buf else 0
        while i < size:
            j = buf.find(_VERSION_BYTES, i)
            if j < 0:
                # No version bytes left: all goes, but a trailing 00 may start one.
                i = size - 1 if buf[size - 1] == 0 else size
                break
            if self._plausible_at(j) is not False:
                i = j
                break
            i = j + 1
        self.skipped += i
        self._consume(i)

    def _next(self) -> WrapperFrame | None:
        buf = self._buffer
        if self._resyncing:
            # Still in garbage: only a plausible header ends the run.
            while buf and self._plausible_at(0) is False:
                self._resync()
            if self._plausible_at(0) is not True:
                return None
            self._resyncing = False
        if len(buf) < HEADER_LEN:
            if len(buf) >= 2 and buf[:2] != _VERSION_BYTES:
                return self._bad_version()
            return None
        base = self._base
        if buf[:2] != _VERSION_BYTES:
            return self._bad_version()
        length = int.from_bytes(buf[6:8], "big")
        if not 1 <= length <= self.max_apdu:
            # The version was right: drop this header whole, then look for the next one.
            self.skipped += HEADER_LEN
            self._consume(HEADER_LEN)
            self._resyncing = True
            raise FrameError(
                f"wrapper length {length} is outside 1..{self.max_apdu}",
                offset=base + 6,
                field="length",
            )
        if len(buf) < HEADER_LEN + length:
            return None
        frame = WrapperFrame(
            int.from_bytes(buf[2:4], "big"),
            int.from_bytes(buf[4:6], "big"),
            bytes(buf[HEADER_LEN : HEADER_LEN + length]),
        )
        self._consume(HEADER_LEN + length)
        return frame

    def _bad_version(self) -> NoReturn:
        base = self._base
        version = int.from_bytes(self._buffer[:2], "big")
        self.skipped += 1
        self._consume(1)
        self._resyncing = True
        raise FrameError(
            f"wrapper version {version} where {WRAPPER_VERSION} was expected",
            offset=base,
            field="version",
        )
