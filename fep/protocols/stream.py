"""The byte-stream decoder every protocol's framing builds on: a buffer with its offset in
the stream, and the rule for errors (items decoded before a bad frame are handed out first;
the error is raised by the next call, the bad bytes already dropped, so decoding goes on)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from fep.errors import FrameError

T = TypeVar("T")


class StreamDecoder(Generic[T]):
    """Subclasses implement ``_next()``: decode one item from the head of ``_buffer`` and
    ``_consume`` its bytes, return None when more bytes are needed, or raise FrameError
    (with ``offset`` from ``_base``) after dropping what cannot be a frame."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        # Stream offset of _buffer[0], for errors that say where in the stream they are.
        self._base = 0
        self._pending: FrameError | None = None
        # Bytes dropped as line garbage (not part of any frame).
        self.skipped = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def drain(self) -> bytes:
        """Hand out (and forget) the bytes not decoded yet: another decoder goes on."""
        data = bytes(self._buffer)
        self._consume(len(data))
        self._pending = None
        return data

    def _consume(self, n: int) -> None:
        del self._buffer[:n]
        self._base += n

    def _next(self) -> T | None:
        raise NotImplementedError

    def receive(self, data: bytes) -> list[T]:
        """Every item completed so far; an empty list means: need more bytes."""
        self._buffer += data
        if self._pending is not None:
            error, self._pending = self._pending, None
            raise error
        items: list[T] = []
        while True:
            try:
                item = self._next()
            except FrameError as error:
                if not items:
                    raise
                self._pending = error
                break
            if item is None:
                break
            items.append(item)
        return items

    def decode_all(self, data: bytes) -> Iterator[T | FrameError]:
        """Every item and every error ``data`` completes, in stream order, until more bytes
        are needed: an error is handed out (not raised) and decoding goes on behind it, so
        a good frame after a bad one is not left waiting for the next bytes (the loop each
        protocol's ``receive`` would write for itself). Items are decoded one at a time, as
        they are taken: the caller may act on the decoder between them (skip to the next
        frame start after an error, or stop and ``drain`` what is not its own), and an item
        before an error is never lost to it, whatever a subclass's ``receive`` does."""
        self._buffer += data
        if self._pending is not None:
            error, self._pending = self._pending, None
            yield error
        while True:
            before = self._base
            try:
                item = self._next()
            except FrameError as error:
                if self._base == before:
                    # Raised without dropping a byte (against the rule above): one byte goes,
                    # so the work stays bounded by the bytes and nothing spins.
                    if not self._buffer:
                        yield error
                        return
                    self.skipped += 1
                    self._consume(1)
                yield error
                continue
            if item is None:
                return
            yield item
