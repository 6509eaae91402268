"""How a fuzz target cuts one input into several byte strings (a table and the tables it is
decoded with, chunks of a stream) and how a seed is put together the same way."""

from __future__ import annotations

from collections.abc import Iterator, Sequence


def split(data: bytes, count: int) -> list[bytes]:
    """``count`` parts: each but the last is a 2-byte big-endian length and that many bytes
    (fewer at the end of ``data``), the last is what remains."""
    parts: list[bytes] = []
    at = 0
    for _ in range(count - 1):
        length = int.from_bytes(data[at : at + 2], "big")
        parts.append(data[at + 2 : at + 2 + length])
        at += 2 + length
    parts.append(data[at:])
    return parts


def join(parts: Sequence[bytes]) -> bytes:
    """The input ``split(_, len(parts))`` cuts back into ``parts``."""
    head = b"".join(len(p).to_bytes(2, "big") + p for p in parts[:-1])
    return head + (parts[-1] if parts else b"")


def chunks(data: bytes) -> Iterator[bytes]:
    """A stream in the pieces a socket might hand over: the first byte gives the piece size
    (1..256), the rest is the stream."""
    if not data:
        return
    size = data[0] + 1
    for at in range(1, len(data), size):
        yield data[at : at + size]
    yield b""


def stream_chunks(stream: bytes, size: int = 256) -> bytes:
    """A seed for ``chunks``: ``stream`` handed over ``size`` bytes at a time."""
    return bytes([size - 1]) + stream
