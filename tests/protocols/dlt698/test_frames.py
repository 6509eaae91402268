"""DL/T 698.45 link frames: published frames decoded and encoded byte for byte, the CRC-16,
the control and address fields, FE wake-up bytes, the stream decoder's resync and bounds,
and split frames (fragments) reassembled and sent."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.dlt698.frames import (
    AddressType,
    Fragment,
    FragmentType,
    Frame,
    FrameDecoder,
    Function,
    Reassembler,
    ServerAddress,
    control,
    crc16,
    decode_fragment,
    decode_frame,
    fragment_ack,
    server_address,
    split_apdu,
)
from tests.protocols.dlt698.published import FRAMES


class CrcTests(unittest.TestCase):
    def test_check_value_of_the_standard_crc(self) -> None:
        # The FCS-16 of RFC 1662 (the standard's annex): "123456789" gives 906E.
        self.assertEqual(crc16(b"123456789"), 0x906E)

    def test_published_frames_carry_the_hcs_and_fcs_fep_computes(self) -> None:
        for name, raw in FRAMES.items():
            header_end = 5 + (raw[4] & 0x0F) + 1 + 1
            self.assertEqual(crc16(raw[1:header_end]),
                             int.from_bytes(raw[header_end : header_end + 2], "little"), name)
            self.assertEqual(crc16(raw[1:-3]), int.from_bytes(raw[-3:-1], "little"), name)


class PublishedFrameTests(unittest.TestCase):
    def test_every_published_frame_round_trips_byte_for_byte(self) -> None:
        for name, raw in FRAMES.items():
            frame = decode_frame(raw)
            self.assertEqual(frame.encode(), raw, name)

    def test_fields_of_the_published_get_frame(self) -> None:
        # 68 17 00 43 05 07 09 19 05 16 20 00 ...: a client request (DIR 0, PRM 1, user
        # data) to the single address 201605190907, client address 0.
        frame = decode_frame(FRAMES["frame_get_communication_address"])
        self.assertEqual(frame.control, 0x43)
        self.assertFalse(frame.from_server)
        self.assertTrue(frame.client_started)
        self.assertEqual(frame.function, Function.USER_DATA)
        self.assertEqual(frame.server, ServerAddress("201605190907", AddressType.SINGLE, 0))
        self.assertEqual(frame.client, 0)
        self.assertEqual(frame.data.hex(), "0501014001020000")

    def test_extended_logical_address_and_client_address(self) -> None:
        frame = decode_frame(FRAMES["frame_get_phase_a_voltage"])
        self.assertEqual(frame.server.address, "00000000013001")
        self.assertEqual(frame.server.logical, 2)
        self.assertEqual(frame.client, 0xA1)

    def test_a_login_is_server_started_link_management(self) -> None:
        frame = decode_frame(FRAMES["frame_peer_login"])
        self.assertEqual(frame.function, Function.LINK)
        self.assertTrue(frame.from_server)
        self.assertFalse(frame.client_started)

    def test_wakeup_bytes_before_a_frame(self) -> None:
        raw = FRAMES["frame_get_communication_address"]
        frame = decode_frame(b"\xfe" * 4 + raw)
        self.assertEqual(frame.encode(preamble=4), b"\xfe" * 4 + raw)


class FrameFieldTests(unittest.TestCase):
    def test_control_field_bits(self) -> None:
        self.assertEqual(control(), 0x43)
        self.assertEqual(control(from_server=True), 0xC3)
        self.assertEqual(control(Function.LINK, from_server=True, client_started=False), 0x81)
        self.assertEqual(control(split=True, scrambled=True), 0x6B)

    def test_scrambled_user_data_are_sent_plus_33(self) -> None:
        frame = Frame(control(scrambled=True), ServerAddress("000000000001"), 0, b"\x05\x01")
        wire = frame.encode()
        self.assertIn(b"\x38\x34", wire)
        self.assertEqual(decode_frame(wire), frame)

    def test_wildcard_and_broadcast_addresses(self) -> None:
        wild = server_address("AAAAAAAAAAAA")
        self.assertEqual(wild.type, AddressType.WILDCARD)
        self.assertTrue(wild.matches(ServerAddress("000000123456")))
        self.assertTrue(ServerAddress("AAAAAAAA3456", AddressType.WILDCARD).matches(
            ServerAddress("000000123456")))  # fmt: skip
        self.assertFalse(ServerAddress("000000123457").matches(ServerAddress("000000123456")))
        self.assertTrue(ServerAddress.broadcast().matches(ServerAddress("000000123456")))
        raw = Frame(0x43, ServerAddress.broadcast(), 0, b"\x05").encode()
        self.assertEqual(raw[4], 0xC0)

    def test_the_length_unit_flag_is_refused(self) -> None:
        raw = bytearray(FRAMES["frame_get_communication_address"])
        raw[2] |= 0x40
        with self.assertRaises(FrameError):
            decode_frame(bytes(raw))

    def test_a_frame_over_the_length_field_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            Frame(0x43, ServerAddress("000000000001"), 0, b"\x00" * 16400).encode()

    @given(st.binary(max_size=300), st.integers(0, 255), st.sampled_from([0x43, 0xC3, 0x81]),
           st.text("0123456789", min_size=1, max_size=16).map(lambda t: t * 2))
    def test_any_frame_round_trips(self, data: bytes, client: int, ctrl: int,
                                   address: str) -> None:  # fmt: skip
        frame = Frame(ctrl, ServerAddress(address), client, data)
        self.assertEqual(decode_frame(frame.encode()), frame)


class StreamTests(unittest.TestCase):
    def test_frames_split_anywhere_come_out_whole(self) -> None:
        raw = b"".join(FRAMES.values())
        for step in (1, 2, 7, 64):
            decoder = FrameDecoder()
            got = []
            for i in range(0, len(raw), step):
                got += decoder.receive(raw[i : i + step])
            self.assertEqual([f.encode() for f in got], list(FRAMES.values()))
            self.assertEqual(decoder.buffered, 0)

    def test_junk_and_false_starts_are_skipped(self) -> None:
        raw = FRAMES["frame_peer_get_frequency"]
        junk = b"\x00\x68\xff\xff\x68\x17\x00\x43\x05" + b"\x68" * 20
        decoder = FrameDecoder()
        frames = decoder.receive(b"\xfe\xfe" + junk + raw + b"\x11\x22" + raw)
        self.assertEqual(len(frames), 2)
        self.assertEqual(decoder.skipped, 2 + len(junk) + 2)

    def test_a_bad_fcs_raises_and_the_next_frame_still_comes(self) -> None:
        raw = FRAMES["frame_peer_get_frequency"]
        bad = bytearray(raw)
        bad[-3] ^= 0x01
        decoder = FrameDecoder()
        with self.assertRaises(FrameError) as caught:
            decoder.receive(bytes(bad))
        self.assertEqual(caught.exception.field, "FCS")
        self.assertEqual([f.encode() for f in decoder.receive(raw)], [raw])

    def test_a_bad_hcs_is_no_frame_start(self) -> None:
        raw = FRAMES["frame_peer_get_frequency"]
        bad = bytearray(raw)
        bad[7] ^= 0x01  # HCS
        decoder = FrameDecoder()
        self.assertEqual(decoder.receive(bytes(bad) + raw)[0].encode(), raw)

    def test_junk_is_crossed_in_bounded_time(self) -> None:
        # 68s that never make a header, and FE floods: each byte costs O(1).
        for junk in (b"\x68" * 200_000, b"\xfe" * 200_000, b"\x68\x17\x00\x43" * 50_000):
            decoder = FrameDecoder()
            started = time.process_time()
            self.assertEqual(decoder.receive(junk), [])
            self.assertLess(time.process_time() - started, 5.0)
            self.assertLessEqual(decoder.buffered, 24)  # at most one header waits for its HCS


    def test_frames_longer_than_the_line_takes_are_noise(self) -> None:
        raw = FRAMES["frame_peer_connect_response"]  # 87 bytes
        self.assertEqual(FrameDecoder(max_frame=87).receive(raw)[0].encode(), raw)
        decoder = FrameDecoder(max_frame=86)
        self.assertEqual(decoder.receive(raw), [])
        self.assertEqual(decoder.skipped, len(raw))


class SplitFrameTests(unittest.TestCase):
    def test_fragment_header_encoding(self) -> None:
        self.assertEqual(Fragment(0, FragmentType.FIRST, b"x").encode(), b"\x00\x00x")
        self.assertEqual(Fragment(1, FragmentType.LAST).encode(), b"\x01\x40")
        self.assertEqual(fragment_ack(5), b"\x05\x80")
        self.assertEqual(Fragment(2, FragmentType.MIDDLE).encode(), b"\x02\xc0")
        self.assertEqual(decode_fragment(b"\x07\xc0ab"), Fragment(7, FragmentType.MIDDLE, b"ab"))

    def test_an_apdu_split_and_put_together(self) -> None:
        apdu = bytes(range(256)) * 3
        pieces = split_apdu(apdu, 100)
        self.assertEqual([p.type for p in pieces][:2], [FragmentType.FIRST, FragmentType.MIDDLE])
        self.assertEqual(pieces[-1].type, FragmentType.LAST)
        r = Reassembler()
        got = [r.accept(decode_fragment(p.encode())) for p in pieces]
        self.assertEqual(got[-1], apdu)
        self.assertTrue(all(g is None for g in got[:-1]))

    def test_a_fragment_out_of_sequence_drops_the_partial_apdu(self) -> None:
        pieces = split_apdu(b"a" * 30, 10)
        r = Reassembler()
        r.accept(pieces[0])
        with self.assertRaises(FrameError):
            r.accept(pieces[2])
        self.assertFalse(r.active)
        with self.assertRaises(FrameError):
            r.accept(pieces[1])  # no first fragment any more

    def test_reassembly_is_bounded(self) -> None:
        r = Reassembler(limit=25)
        pieces = split_apdu(b"a" * 30, 10)
        r.accept(pieces[0])
        r.accept(pieces[1])
        with self.assertRaises(FrameError):
            r.accept(pieces[2])

    def test_split_frames_on_the_wire(self) -> None:
        pieces = split_apdu(b"\x85" * 50, 20)
        address = ServerAddress("000000000001")
        wire = b"".join(Frame(control(from_server=True, split=True), address, 0, p.encode())
                        .encode() for p in pieces)  # fmt: skip
        frames = FrameDecoder().receive(wire)
        self.assertTrue(all(f.split for f in frames))
        r = Reassembler()
        self.assertEqual([r.accept(decode_fragment(f.data)) for f in frames][-1], b"\x85" * 50)
