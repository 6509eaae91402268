"""The DLMS TCP/UDP wrapper (IEC 62056-47): header encoding, stream decoding, resync."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.dlms.wrapper import (
    MAX_APDU,
    WRAPPER_VERSION,
    WrapperDecoder,
    WrapperFrame,
    encode_wrapper,
)

# A UDP datagram carrying a general-glo-ciphering data-notification, from u9n/dlms-cosem
# tests/test_udp_message.py (first of data_examples_encrypted_data_nofication): version 1,
# source wPort 1, destination wPort 1, length 0x46 = 70.
PUBLISHED = bytes.fromhex(
    "0001000100010046DB082F192291991641033B30000001E5025CE9D2271FD78BE8C204211A916A9D7F58"
    "7E0A7A814CADEA89E9593F01F92EA8C087B5BDFDEFEAB6BECF282DFE49C08F5BE6DC8400"
)


def drain(decoder: WrapperDecoder, data: bytes) -> tuple[list[WrapperFrame], list[FrameError]]:
    """Every frame and error the decoder gives for ``data``, calling until it is done."""
    frames: list[WrapperFrame] = []
    errors: list[FrameError] = []
    while True:
        try:
            got = decoder.receive(data)
        except FrameError as error:
            errors.append(error)
            data = b""
            continue
        data = b""
        if not got:
            return frames, errors
        frames.extend(got)


class EncodeTests(unittest.TestCase):
    def test_published_datagram_decodes(self) -> None:
        (frame,) = WrapperDecoder().receive(PUBLISHED)
        self.assertEqual(frame.source_wport, 1)
        self.assertEqual(frame.destination_wport, 1)
        self.assertEqual(len(frame.apdu), 70)
        self.assertEqual(frame.apdu[0], 0xDB)  # general-glo-ciphering tag

    def test_published_datagram_encodes_byte_exact(self) -> None:
        self.assertEqual(encode_wrapper(WrapperFrame(1, 1, PUBLISHED[8:])), PUBLISHED)

    def test_header_layout(self) -> None:
        data = encode_wrapper(WrapperFrame(0x0010, 0x0001, b"\x60\x1d"))
        self.assertEqual(data.hex(), "0001001000010002601d")
        self.assertEqual(WRAPPER_VERSION, 1)

    def test_reply_swaps_ports(self) -> None:
        self.assertEqual(WrapperFrame(16, 1, b"a").reply(b"b"), WrapperFrame(1, 16, b"b"))

    def test_bad_values_refused(self) -> None:
        self.assertRaises(ValueError, encode_wrapper, WrapperFrame(1, 1, b""))
        self.assertRaises(ValueError, encode_wrapper, WrapperFrame(1, 1, bytes(MAX_APDU + 1)))
        self.assertRaises(ValueError, WrapperFrame, 0x10000, 1, b"a")
        self.assertRaises(ValueError, WrapperFrame, 1, -1, b"a")

    def test_largest_apdu_round_trips(self) -> None:
        frame = WrapperFrame(1, 2, bytes(range(256)) * (MAX_APDU // 256) + b"x" * (MAX_APDU % 256))
        self.assertEqual(WrapperDecoder().receive(encode_wrapper(frame)), [frame])


class DecoderTests(unittest.TestCase):
    def test_byte_by_byte(self) -> None:
        decoder = WrapperDecoder()
        out = []
        for byte in PUBLISHED:
            out.extend(decoder.receive(bytes([byte])))
        self.assertEqual(out, [WrapperFrame(1, 1, PUBLISHED[8:])])
        self.assertEqual(decoder.buffered, 0)

    def test_several_wports_on_one_connection(self) -> None:
        frames = [WrapperFrame(16, 1, b"\x01"), WrapperFrame(32, 17, b"\x02\x03")]
        data = b"".join(encode_wrapper(f) for f in frames)
        self.assertEqual(WrapperDecoder().receive(data), frames)

    def test_bad_version_raises_once_and_resyncs(self) -> None:
        good = encode_wrapper(WrapperFrame(16, 1, b"\xc0\x01"))
        garbage = b"\x00\x02\x00\x10\x00\x03\x00\x02\xff\xee\x55"
        decoder = WrapperDecoder()
        frames, errors = drain(decoder, garbage + good)
        self.assertEqual(frames, [WrapperFrame(16, 1, b"\xc0\x01")])
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0].field, "version")
        self.assertEqual(errors[0].offset, 0)
        self.assertEqual(decoder.skipped, len(garbage))

    def test_garbage_arriving_in_pieces_gives_one_error(self) -> None:
        decoder = WrapperDecoder()
        errors = 0
        for piece in (b"\x12\x34", b"\x56\x78\x9a", b"\xbc\xde\xf0\x00"):
            try:
                self.assertEqual(decoder.receive(piece), [])
            except FrameError:
                errors += 1
        good = encode_wrapper(WrapperFrame(1, 16, b"\x61"))
        self.assertEqual(decoder.receive(good), [WrapperFrame(1, 16, b"\x61")])
        self.assertEqual(errors, 1)

    def test_zero_length_refused(self) -> None:
        decoder = WrapperDecoder()
        good = encode_wrapper(WrapperFrame(1, 16, b"\x61"))
        frames, errors = drain(decoder, b"\x00\x01\x00\x01\x00\x10\x00\x00" + good)
        self.assertEqual([e.field for e in errors], ["length"])
        self.assertEqual(frames, [WrapperFrame(1, 16, b"\x61")])

    def test_length_over_limit_refused(self) -> None:
        decoder = WrapperDecoder(max_apdu=100)
        good = encode_wrapper(WrapperFrame(1, 16, b"\x61"))
        frames, errors = drain(decoder, b"\x00\x01\x00\x01\x00\x10\x00\x65" + bytes(101) + good)
        self.assertEqual(errors[0].field, "length")
        self.assertEqual(frames[-1], WrapperFrame(1, 16, b"\x61"))

    def test_frame_before_error_is_handed_out_first(self) -> None:
        decoder = WrapperDecoder()
        good = encode_wrapper(WrapperFrame(1, 16, b"\x61"))
        self.assertEqual(decoder.receive(good + b"\x09\x09\x09"), [WrapperFrame(1, 16, b"\x61")])
        with self.assertRaises(FrameError):
            decoder.receive(b"")

    def test_truncated_frame_waits(self) -> None:
        decoder = WrapperDecoder()
        self.assertEqual(decoder.receive(PUBLISHED[:-1]), [])
        self.assertEqual(decoder.receive(PUBLISHED[-1:]), [WrapperFrame(1, 1, PUBLISHED[8:])])


frames_strategy = st.builds(
    WrapperFrame,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(min_size=1, max_size=300),
)


class PropertyTests(unittest.TestCase):
    @given(st.lists(frames_strategy, max_size=5), st.data())
    def test_round_trip_in_random_pieces(
        self, frames: list[WrapperFrame], data: st.DataObject
    ) -> None:
        stream = b"".join(encode_wrapper(f) for f in frames)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
        decoder = WrapperDecoder()
        out = []
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            out.extend(decoder.receive(stream[start:end]))
        self.assertEqual(out, frames)

    @given(st.binary(max_size=400))
    def test_random_bytes_give_frames_or_frame_errors(self, data: bytes) -> None:
        decoder = WrapperDecoder()
        frames, _ = drain(decoder, data)
        for frame in frames:
            self.assertIsInstance(frame, WrapperFrame)
        self.assertLessEqual(decoder.buffered, len(data))

    @given(st.binary(max_size=60), frames_strategy)
    def test_good_frame_after_garbage_is_found(self, garbage: bytes, frame: WrapperFrame) -> None:
        # Garbage that does not itself hold a plausible header: the frame after it is found.
        if b"\x00\x01" in garbage or garbage.endswith(b"\x00"):
            garbage = garbage.replace(b"\x00", b"\x07")
        decoder = WrapperDecoder()
        frames, errors = drain(decoder, garbage + encode_wrapper(frame))
        self.assertEqual(frames, [frame])
        self.assertLessEqual(len(errors), 1)


class _CountingDecoder(WrapperDecoder):
    """Counts the header candidates looked at in Python (the work done per junk byte)."""

    looked_at = 0

    def _plausible_at(self, i: int) -> bool | None:
        self.looked_at += 1
        return super()._plausible_at(i)


class JunkTests(unittest.TestCase):
    """Issue 14: junk is skipped with bytes.find, not byte by byte in Python."""

    JUNK_SIZE = 20 * 1024 * 1024

    def test_twenty_megabytes_of_junk_cost_few_python_steps(self) -> None:
        import random

        # Random bytes, then 64 KiB without version bytes: whatever junk "frame" the random
        # part leaves open is completed by it, and the rest is skipped.
        junk = random.Random(14).randbytes(self.JUNK_SIZE - 65536) + b"\x07" * 65536
        decoder = _CountingDecoder()
        good = encode_wrapper(WrapperFrame(1, 16, b"\x61"))
        calls = 0
        frames: list[WrapperFrame] = []
        # The way a session feeds it: 64 KiB reads, then until it is done.
        for start in range(0, len(junk), 65536):
            data = junk[start : start + 65536]
            while True:
                calls += 1
                try:
                    got = decoder.receive(data)
                except FrameError:
                    data = b""
                    continue
                data = b""
                frames.extend(got)
                if not got:
                    break
        frames.extend(drain(decoder, good)[0])
        self.assertEqual(frames[-1], WrapperFrame(1, 16, b"\x61"))
        # Random junk holds "00 01" about once in 64 KiB; byte by byte was 20 million steps.
        self.assertLess(decoder.looked_at, self.JUNK_SIZE // 1000)
        self.assertLess(calls, self.JUNK_SIZE // 1000)
        # Every junk byte was either skipped or taken for a (junk) frame: none is left over.
        taken = sum(8 + len(f.apdu) for f in frames[:-1])
        self.assertEqual(decoder.skipped + taken, self.JUNK_SIZE)
        self.assertEqual(decoder.buffered, 0)

    def test_junk_of_version_bytes_still_progresses_two_bytes_a_step(self) -> None:
        # "00 01 00 01 ..." with a zero length: every candidate is looked at, but each step
        # drops at least two bytes.
        junk = b"\x00\x01\x00\x00\x00\x00\x00\x00" * 20000 + b"\x07"
        decoder = _CountingDecoder()
        _, errors = drain(decoder, junk)
        self.assertLessEqual(decoder.looked_at, len(junk))
        self.assertGreater(len(errors), 0)
        self.assertEqual(decoder.buffered, 0)
