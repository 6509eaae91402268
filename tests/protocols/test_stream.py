"""StreamDecoder.decode_all (fep.protocols.stream): every item and error of the bytes in
stream order, decoding going on behind an error, one item at a time."""

from __future__ import annotations

from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.dlt645.frames import Frame, FrameDecoder
from fep.protocols.iec62056_21 import frames as iec
from fep.protocols.stream import StreamDecoder

GOOD = Frame("000000000101", 0x91, b"\x33\x34").encode()
DAMAGED = GOOD[:-2] + bytes([GOOD[-2] ^ 0x01]) + GOOD[-1:]


def kinds(items: list[object]) -> list[str]:
    """"frame" or "error" for each item, a run of errors (one damaged frame may be several:
    its first byte is dropped and the search goes on inside it) as one."""
    out: list[str] = []
    for item in items:
        kind = "error" if isinstance(item, FrameError) else "frame"
        if not (kind == "error" and out[-1:] == ["error"]):
            out.append(kind)
    return out


class DecodeAllTests(unittest.TestCase):
    def test_frames_and_errors_in_stream_order_none_left_behind(self) -> None:
        decoder = FrameDecoder()
        items = list(decoder.decode_all(GOOD + DAMAGED + GOOD + DAMAGED + GOOD))
        self.assertEqual(kinds(items), ["frame", "error", "frame", "error", "frame"])
        self.assertEqual(decoder.buffered, 0)

    def test_an_error_held_back_by_receive_comes_first(self) -> None:
        decoder = FrameDecoder()
        self.assertEqual(len(decoder.receive(GOOD + DAMAGED)), 1)
        self.assertEqual(kinds(list(decoder.decode_all(GOOD))), ["error", "frame"])

    def test_a_message_before_an_error_is_not_lost_where_receive_raises_at_once(self) -> None:
        # The IEC 62056-21 decoder's receive raises at a bad frame at once; decode_all still
        # hands out the identification before it.
        decoder = iec.FrameDecoder()
        data = b"/FEP5SIM100\r\n" + b"X" + iec.DataBlock.build(b"1.8.0(1)").encode()
        items = list(decoder.decode_all(data))
        self.assertIsInstance(items[0], iec.Identification)
        self.assertEqual(kinds(items), ["frame", "error", "frame"])

    def test_items_are_decoded_as_they_are_taken(self) -> None:
        # Stopping after the first leaves the rest in the buffer, for whoever goes on.
        decoder = FrameDecoder()
        for _ in decoder.decode_all(GOOD + GOOD):
            break
        self.assertEqual(decoder.drain(), GOOD)

    def test_a_decoder_that_raises_without_dropping_bytes_does_not_spin(self) -> None:
        class Stuck(StreamDecoder[bytes]):
            def _next(self) -> bytes | None:
                if not self._buffer:
                    return None
                raise FrameError("no progress", offset=self._base)

        decoder = Stuck()
        self.assertEqual(len(list(decoder.decode_all(b"abc"))), 3)
        self.assertEqual((decoder.buffered, decoder.skipped), (0, 3))
