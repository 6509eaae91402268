"""Drives a ``fep.protocols.stream.StreamDecoder`` over a fuzz input the way a session does:
the bytes in pieces, each FrameError taken as a dropped frame, then on with ``receive(b"")``
until the decoder needs more. A decoder that neither progresses nor stops is a bug."""

from __future__ import annotations

from typing import Any

from fep.errors import FrameError
from fep.protocols.stream import StreamDecoder
from tests.fuzz.parts import chunks


def drive(decoder: StreamDecoder[Any], data: bytes) -> list[Any]:
    items: list[Any] = []
    for piece in chunks(data):
        feed = piece
        # Every FrameError drops at least one byte: more errors than bytes is a loop.
        for _ in range(len(data) + 2):
            try:
                got = decoder.receive(feed)
            except FrameError:
                feed = b""
                continue
            items += got
            break
        else:
            raise AssertionError(f"{type(decoder).__name__} raises without dropping bytes")
    return items
