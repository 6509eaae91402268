"""Q/GDW 1376.1 frames: the published frames byte for byte, the fields, the stream decoder's
resynchronisation and bounds, DA/DT group encodings and multi-frame reassembly."""

from __future__ import annotations

from datetime import datetime

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.gw3761.formats import TimeFields
from fep.protocols.gw3761.frames import (
    ALL_POINTS,
    PROTOCOL_130,
    PROTOCOL_1376,
    Address,
    Afn,
    Control,
    EventCounter,
    Frame,
    FrameDecoder,
    Reassembler,
    Seq,
    TimeLabel,
    decode_frame,
    encode_da,
    encode_dt,
    fn_groups,
    fns_of,
    point_groups,
    points_of,
    split_into_frames,
)
from tests.protocols.gw3761.published import FRAMES, GOOD


class PublishedFrameTests(unittest.TestCase):
    def test_every_published_frame_round_trips_byte_for_byte(self) -> None:
        for name, raw in GOOD.items():
            frame = decode_frame(raw)
            self.assertEqual(frame.encode(), raw, name)

    def test_login_fields(self) -> None:
        # iteye: C9 = DIR 1, PRM 1, function 9 (link test); A 4403:0004; SEQ 71.
        frame = decode_frame(FRAMES["iteye_login"])
        self.assertEqual(frame.protocol, PROTOCOL_1376)
        self.assertEqual(frame.control, Control(9, uplink=True, initiator=True))
        self.assertEqual(frame.address, Address("4403", 4))
        self.assertEqual(str(frame.address), "4403:0004")
        self.assertEqual(frame.afn, Afn.LINK)
        self.assertEqual(frame.seq, Seq(1, tpv=False, fir=True, fin=True, con=True))
        self.assertEqual(frame.data, bytes.fromhex("00000100"))

    def test_reset_carries_pw_and_time_label(self) -> None:
        frame = decode_frame(FRAMES["node_reset"])
        self.assertEqual(frame.pw, bytes(16))
        self.assertEqual(frame.address.master, 2)
        sent = TimeFields(day=7, hour=13, minute=53, second=28)
        self.assertEqual(frame.tp, TimeLabel(0, sent, 5))

    def test_answer_with_acd_carries_event_counter(self) -> None:
        frame = decode_frame(FRAMES["node_reset_confirm"])
        self.assertTrue(frame.control.acd)
        self.assertEqual(frame.ec, EventCounter(0x11, 0))
        self.assertEqual(frame.data, bytes.fromhex("00000100"))

    def test_forward_answer_splits_data_from_ec_and_tp(self) -> None:
        frame = decode_frame(FRAMES["node_forward_read_answer"])
        self.assertEqual(frame.ec, EventCounter(0x4F, 0))
        self.assertEqual(frame.tp and frame.tp.delay, 5)
        self.assertTrue(frame.data.endswith(bytes.fromhex("4916")))

    def test_bad_published_frame_is_refused(self) -> None:
        with self.assertRaises(FrameError):
            decode_frame(FRAMES["bad_android_archive_query"])

    def test_q_gdw_130_identifier_is_kept(self) -> None:
        frame = attrs.evolve(decode_frame(FRAMES["node_login"]), protocol=PROTOCOL_130)
        raw = frame.encode()
        self.assertEqual(raw[1] & 3, PROTOCOL_130)
        self.assertEqual(decode_frame(raw).protocol, PROTOCOL_130)


class StreamTests(unittest.TestCase):
    def test_junk_between_frames_is_skipped(self) -> None:
        decoder = FrameDecoder()
        junk = b"\x00\x68\x68\x32\x68\xff" * 3
        login, beat = FRAMES["node_login"], FRAMES["node_heartbeat"]
        frames = decoder.receive(junk + login + junk + beat)
        self.assertEqual([f.encode() for f in frames], [login, beat])
        self.assertEqual(decoder.skipped, 2 * len(junk))

    def test_frame_byte_by_byte(self) -> None:
        decoder = FrameDecoder()
        out = []
        for b in FRAMES["node_forward_read"]:
            out += decoder.receive(bytes([b]))
        self.assertEqual([f.encode() for f in out], [FRAMES["node_forward_read"]])

    def test_bad_checksum_raises_then_decoding_goes_on(self) -> None:
        bad = bytearray(FRAMES["node_login"])
        bad[-2] ^= 0xFF
        decoder = FrameDecoder()
        with self.assertRaises(FrameError) as caught:
            decoder.receive(bytes(bad) + FRAMES["node_heartbeat"])
        self.assertEqual(caught.exception.field, "CS")
        self.assertEqual([f.afn for f in decoder.receive(b"")], [Afn.LINK])

    def test_length_field_beyond_the_bound_is_noise(self) -> None:
        decoder = FrameDecoder(max_user=255)
        big = bytes([0x68, 0xFE, 0x0F, 0xFE, 0x0F, 0x68])  # L = 1023 bytes
        frames = decoder.receive(big + FRAMES["node_login"])
        self.assertEqual(len(frames), 1)
        self.assertEqual(decoder.buffered, 0)

    def test_unequal_length_fields_are_noise(self) -> None:
        decoder = FrameDecoder()
        self.assertEqual(decoder.receive(bytes.fromhex("683200330068") + FRAMES["lora_login"])[0]
                         .encode(), FRAMES["lora_login"])  # fmt: skip

    def test_waiting_is_bounded_by_the_length_field(self) -> None:
        decoder = FrameDecoder()
        self.assertEqual(decoder.receive(FRAMES["node_reset"][:-1]), [])
        self.assertEqual(len(decoder.receive(FRAMES["node_reset"][-1:])), 1)


class DataUnitIdentifierTests(unittest.TestCase):
    def test_p0_and_all_points(self) -> None:
        self.assertEqual(points_of(0, 0), (0,))
        self.assertEqual(points_of(0xFF, 0), (ALL_POINTS,))
        self.assertEqual(encode_da([0]), b"\x00\x00")

    def test_point_groups_of_eight(self) -> None:
        # DA2 = 1: P1..P8; DA2 = 2: P9..P16 (clause 5.1.1.1).
        self.assertEqual(encode_da([1]), b"\x01\x01")
        self.assertEqual(encode_da([9, 10, 16]), bytes([0b10000011, 2]))
        self.assertEqual(points_of(0b10000011, 2), (9, 10, 16))
        self.assertEqual(points_of(0x80, 255), (2040,))

    def test_fn_groups(self) -> None:
        self.assertEqual(encode_dt([1]), b"\x01\x00")
        self.assertEqual(encode_dt([129]), b"\x01\x10")
        self.assertEqual(encode_dt([161, 162]), b"\x03\x14")
        self.assertEqual(fns_of(0x03, 0x14), (161, 162))
        self.assertEqual(fns_of(0x80, 30), (248,))

    def test_bad_identifiers(self) -> None:
        for da in ((0x01, 0), (0, 3)):
            self.assertRaises(FrameError, points_of, *da)
        for dt in ((0, 1), (1, 31)):
            self.assertRaises(FrameError, fns_of, *dt)
        self.assertRaises(ValueError, encode_da, [1, 9])
        self.assertRaises(ValueError, encode_dt, [1, 9])

    def test_grouping_many_points(self) -> None:
        self.assertEqual(point_groups([0, 3, 1, 9, 17, 18]), [(0,), (1, 3), (9,), (17, 18)])
        self.assertEqual(fn_groups([161, 177, 162]), [(161, 162), (177,)])

    @given(st.sets(st.integers(1, 2040), min_size=1, max_size=50))
    def test_points_round_trip_through_their_groups(self, points: set[int]) -> None:
        back = set()
        for group in point_groups(points):
            da = encode_da(group)
            back |= set(points_of(da[0], da[1]))
        self.assertEqual(back, points)


def _answer(seq: int, fir: bool, fin: bool, data: bytes) -> Frame:
    return Frame(Control(8, uplink=True, initiator=False), Address("4403", 4), Afn.CLASS2,
                 Seq(seq, fir=fir, fin=fin), data)  # fmt: skip


class ReassemblyTests(unittest.TestCase):
    def test_single_frame_passes(self) -> None:
        frame = _answer(3, True, True, b"\x00\x00\x01\x00")
        self.assertIs(Reassembler().add(frame), frame)

    def test_three_frames_join(self) -> None:
        r = Reassembler()
        self.assertIsNone(r.add(_answer(15, True, False, b"a")))
        self.assertIsNone(r.add(_answer(0, False, False, b"b")))
        whole = r.add(_answer(1, False, True, b"c"))
        assert whole is not None
        self.assertEqual(whole.data, b"abc")
        self.assertEqual(whole.seq.seq, 15)
        self.assertTrue(whole.seq.single)
        self.assertEqual(r.pending(), 0)

    def test_broken_sequence_is_refused_and_dropped(self) -> None:
        r = Reassembler()
        r.add(_answer(1, True, False, b"a"))
        with self.assertRaises(FrameError):
            r.add(_answer(3, False, True, b"c"))
        self.assertEqual(r.pending(), 0)
        with self.assertRaises(FrameError):
            r.add(_answer(4, False, True, b"d"))

    def test_too_many_frames(self) -> None:
        r = Reassembler(max_frames=3)
        r.add(_answer(0, True, False, b"a"))
        for seq in (1, 2):
            r.add(_answer(seq, False, False, b"a"))
        with self.assertRaises(FrameError):
            r.add(_answer(3, False, False, b"a"))

    def test_split_then_join(self) -> None:
        units = [bytes([0, 0, 1, 0]) + bytes(30) for _ in range(10)]
        template = _answer(0, True, True, b"")
        frames = split_into_frames(template, units, 100, 14)
        self.assertGreater(len(frames), 3)
        self.assertTrue(all(len(f.user_data()) <= 100 for f in frames))
        r = Reassembler()
        results = [r.add(decode_frame(f.encode())) for f in frames]
        whole = results[-1]
        assert whole is not None
        self.assertEqual(whole.data, b"".join(units))


class AnyBytesTests(unittest.TestCase):
    @given(st.binary(max_size=300), st.integers(1, 64))
    def test_any_stream_gives_frames_or_frame_errors(self, data: bytes, size: int) -> None:
        from tests.fuzz.gw3761_targets import gw3761_frame

        gw3761_frame(bytes([size - 1]) + data)

    @given(st.lists(st.sampled_from(sorted(GOOD.values())), max_size=4), st.binary(max_size=20))
    def test_whole_frames_survive_noise_between_them(self, frames: list[bytes],
                                                     noise: bytes) -> None:  # fmt: skip
        decoder = FrameDecoder()
        got = []
        for raw in frames:
            feed = noise + raw
            for _ in range(len(feed) + 2):
                try:
                    got += decoder.receive(feed)
                except FrameError:
                    feed = b""
                    continue
                break
        # Noise may hide a frame's start only by forming a bad frame with it; every frame
        # that came whole and after clean bytes is found.
        if not any(b == 0x68 for b in noise):
            self.assertEqual([f.encode() for f in got], frames)


class TimeLabelTests(unittest.TestCase):
    def test_age_across_a_month_end(self) -> None:
        label = TimeLabel(0, TimeFields(day=31, hour=23, minute=59, second=0), 5)
        # Sent 2024-01-31 23:59, received 2024-02-01 00:02: three minutes.
        self.assertEqual(label.age(datetime(2024, 2, 1, 0, 2)), 180)
        self.assertFalse(label.stale(datetime(2024, 2, 1, 0, 2)))
        self.assertTrue(label.stale(datetime(2024, 2, 1, 0, 5)))

    def test_no_delay_is_never_stale(self) -> None:
        label = TimeLabel(0, TimeFields(day=1, hour=0, minute=0, second=0), 0)
        self.assertFalse(label.stale(datetime(2024, 3, 20)))
