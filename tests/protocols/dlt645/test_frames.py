"""DL/T 645 frames: published bytes, address and control codes, the resynchronising decoder."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.dlt645.frames import (
    BROADCAST_ADDRESS,
    WILDCARD_ADDRESS,
    Frame,
    FrameDecoder,
    checksum,
    control_code,
    decode_address,
    decode_frame,
    encode_address,
)
from tests.protocols.dlt645.published import FRAMES

BCD_BYTE = st.integers(0, 99).map(lambda n: f"{n:02d}")
ADDRESSES = st.lists(BCD_BYTE, min_size=6, max_size=6).map("".join)
FRAMES_ST = st.builds(
    Frame,
    address=ADDRESSES,
    control=st.integers(0, 255),
    data=st.binary(max_size=255),
)


class PublishedFrameTests(unittest.TestCase):
    def test_every_published_frame_decodes_and_encodes_back_byte_exact(self) -> None:
        for name, raw in FRAMES.items():
            frame = decode_frame(raw)
            preamble = len(raw) - len(raw.lstrip(b"\xfe"))
            self.assertEqual(frame.encode(preamble=preamble), raw, name)

    def test_issue_request_fields(self) -> None:
        frame = decode_frame(FRAMES["read_total_forward_active_request"])
        self.assertEqual(frame.address, "398192000337")
        self.assertEqual(frame.control, 0x11)
        self.assertEqual(frame.data, bytes.fromhex("00000100"))

    def test_issue_response_is_a_normal_response_without_follow_up(self) -> None:
        frame = decode_frame(FRAMES["read_total_forward_active_response"])
        self.assertEqual(
            (frame.is_response, frame.is_error, frame.has_follow_up, frame.function),
            (True, False, False, 0x11),
        )
        self.assertEqual(frame.data, bytes.fromhex("00000100 04000000"))

    def test_broadcast_read_address_goes_to_the_wildcard_address(self) -> None:
        frame = decode_frame(FRAMES["broadcast_read_address"])
        self.assertEqual((frame.address, frame.control, frame.data), (WILDCARD_ADDRESS, 0x13, b""))

    def test_preamble_before_the_frame_is_skipped(self) -> None:
        frame = decode_frame(FRAMES["luat_read_total_forward_active_request"])
        self.assertEqual(frame.address, "000012345678")


class AddressTests(unittest.TestCase):
    def test_address_goes_low_byte_first(self) -> None:
        self.assertEqual(encode_address("398192000337"), bytes.fromhex("370300928139"))

    def test_short_address_is_padded_with_leading_zeros(self) -> None:
        self.assertEqual(encode_address("1"), bytes.fromhex("010000000000"))

    def test_broadcast_address_is_all_99(self) -> None:
        self.assertEqual(encode_address(BROADCAST_ADDRESS), b"\x99" * 6)

    def test_abbreviated_address_keeps_its_wildcard_bytes(self) -> None:
        self.assertEqual(decode_address(bytes.fromhex("785634AAAAAA")), "AAAAAA345678")

    def test_non_bcd_address_is_refused_when_encoding(self) -> None:
        self.assertRaises(ValueError, encode_address, "0000000000AB")

    def test_non_bcd_address_byte_is_a_frame_error_naming_its_offset(self) -> None:
        with self.assertRaises(FrameError) as cm:
            decode_address(bytes.fromhex("0102030F0506"), offset=1)
        self.assertEqual((cm.exception.field, cm.exception.offset), ("address", 4))


class ControlCodeTests(unittest.TestCase):
    def test_flags_set_the_three_high_bits(self) -> None:
        self.assertEqual(control_code(0x11, response=True, error=True, follow_up=True), 0xF1)

    def test_function_above_five_bits_is_refused(self) -> None:
        self.assertRaises(ValueError, control_code, 0x20)

    def test_error_response_flags(self) -> None:
        frame = Frame("000000000001", 0xD1, b"\x02")
        self.assertTrue(frame.is_response and frame.is_error)
        self.assertFalse(frame.has_follow_up)


class EncodeTests(unittest.TestCase):
    def test_data_is_sent_plus_33(self) -> None:
        raw = Frame("000000000001", 0x11, bytes([0x00, 0xCD, 0xFF])).encode()
        self.assertEqual(raw[10:13], bytes([0x33, 0x00, 0x32]))

    def test_checksum_covers_start_to_last_data_byte(self) -> None:
        raw = Frame("000000000001", 0x11, b"\x01").encode()
        self.assertEqual(raw[-2], checksum(raw[:-2]))

    def test_preamble_is_fe_bytes(self) -> None:
        self.assertEqual(Frame("1", 0x13).encode(preamble=4)[:5], b"\xfe\xfe\xfe\xfe\x68")

    def test_data_field_over_255_bytes_is_refused(self) -> None:
        self.assertRaises(ValueError, Frame("1", 0x14, bytes(256)).encode)


class DecoderTests(unittest.TestCase):
    def test_frame_split_in_single_bytes_comes_out_once_complete(self) -> None:
        decoder = FrameDecoder()
        raw = FRAMES["read_total_forward_active_response"]
        got = [f for byte in raw[:-1] for f in decoder.receive(bytes([byte]))]
        self.assertEqual(got, [])
        self.assertEqual(decoder.receive(raw[-1:]), [decode_frame(raw)])

    def test_two_frames_in_one_chunk(self) -> None:
        raw = FRAMES["read_total_forward_active_request"] + FRAMES["broadcast_read_address"]
        self.assertEqual(len(FrameDecoder().receive(raw)), 2)

    def test_garbage_before_a_frame_is_skipped_and_counted(self) -> None:
        decoder = FrameDecoder()
        noise = b"\x00\x68\x12\xff\x68\x68\x01"
        frames = decoder.receive(noise + FRAMES["broadcast_read_address"])
        self.assertEqual([f.function for f in frames], [0x13])
        self.assertEqual(decoder.skipped, len(noise))

    def test_bad_checksum_raises_then_the_decoder_resynchronises(self) -> None:
        bad = bytearray(FRAMES["read_total_forward_active_response"])
        bad[-2] ^= 0xFF
        decoder = FrameDecoder()
        with self.assertRaises(FrameError) as cm:
            decoder.receive(bytes(bad) + FRAMES["broadcast_read_address"])
        self.assertEqual((cm.exception.field, cm.exception.offset), ("CS", len(bad) - 2))
        self.assertEqual([f.function for f in decoder.receive(b"")], [0x13])

    def test_bad_end_byte_is_a_frame_error(self) -> None:
        bad = bytearray(FRAMES["broadcast_read_address"])
        bad[-1] = 0x17
        with self.assertRaises(FrameError) as cm:
            FrameDecoder().receive(bytes(bad))
        self.assertEqual(cm.exception.field, "end")

    def test_frames_before_an_error_are_returned_and_the_error_comes_next(self) -> None:
        bad = bytearray(FRAMES["broadcast_read_address"])
        bad[-2] ^= 1
        decoder = FrameDecoder()
        good = decoder.receive(FRAMES["read_total_forward_active_request"] + bytes(bad))
        self.assertEqual(len(good), 1)
        self.assertRaises(FrameError, decoder.receive, b"")

    def test_decode_frame_of_a_truncated_frame_is_a_frame_error(self) -> None:
        self.assertRaises(FrameError, decode_frame, FRAMES["broadcast_read_address"][:-1])

    @given(FRAMES_ST, st.integers(0, 4))
    def test_round_trip(self, frame: Frame, preamble: int) -> None:
        self.assertEqual(decode_frame(frame.encode(preamble=preamble)), frame)

    @given(st.binary(max_size=64), FRAMES_ST, st.binary(max_size=64))
    def test_a_frame_is_found_in_garbage_that_holds_no_68(
        self, before: bytes, frame: Frame, after: bytes
    ) -> None:
        before = before.replace(b"\x68", b"")
        frames = FrameDecoder().receive(before + frame.encode() + after.replace(b"\x68", b""))
        self.assertEqual(frames, [frame])

    @given(st.lists(st.binary(max_size=40), max_size=8))
    def test_arbitrary_bytes_give_frames_need_more_or_frame_errors(
        self, chunks: list[bytes]
    ) -> None:
        decoder = FrameDecoder()
        for chunk in chunks:
            try:
                for frame in decoder.receive(chunk):
                    self.assertIsInstance(frame, Frame)
            except FrameError:
                pass
