"""ANSI C12.18: packets, CRC, decoder, multi-packet messages, services, response codes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.ansi_c12 import c1218
from fep.protocols.ansi_c12.c1218 import (
    Ack,
    C12ResponseError,
    Identify,
    IdentifyResponse,
    InsufficientSecurityClearance,
    Logoff,
    Logon,
    MessageAssembler,
    Nak,
    Negotiate,
    NegotiateResponse,
    Packet,
    PacketDecoder,
    Read,
    Security,
    Terminate,
    Wait,
    Write,
    crc16,
    decode_read_response,
    decode_request,
    encode_read_response,
    packetize,
)
from tests.protocols.ansi_c12.published import PACKETS

PACKETS_ST = st.builds(
    Packet,
    data=st.binary(max_size=300),
    identity=st.integers(0, 255),
    toggle=st.booleans(),
    multi=st.booleans(),
    first=st.booleans(),
    sequence=st.integers(0, 255),
    data_format=st.integers(0, 3),
)
REQUESTS_ST = st.one_of(
    st.just(Identify()),
    st.just(Terminate()),
    st.just(Logoff()),
    st.builds(Read, table=st.integers(0, 0xFFFF)),
    st.builds(
        Read,
        table=st.integers(0, 0xFFFF),
        offset=st.integers(0, 0xFFFFFF),
        count=st.integers(0, 0xFFFF),
    ),
    st.builds(Write, table=st.integers(0, 0xFFFF), data=st.binary(max_size=64)),
    st.builds(
        Write,
        table=st.integers(0, 0xFFFF),
        data=st.binary(max_size=64),
        offset=st.integers(0, 0xFFFFFF),
    ),
    st.builds(
        Logon,
        user_id=st.integers(0, 0xFFFF),
        user=st.binary(max_size=10).map(lambda b: b.rstrip(b" ")),
    ),
    st.builds(Security, password=st.binary(min_size=20, max_size=20)),
    st.builds(
        Negotiate,
        packet_size=st.integers(0, 0xFFFF),
        max_packets=st.integers(0, 255),
        baud=st.none() | st.sampled_from(sorted(c1218.BAUD_CODES)),
    ),
    st.builds(Wait, seconds=st.integers(0, 255)),
)


class PublishedPacketTests(unittest.TestCase):
    def test_identify_request_is_byte_exact(self) -> None:
        self.assertEqual(Packet(Identify().encode()).encode(), PACKETS["identify_request"])

    def test_negotiate_request_is_byte_exact(self) -> None:
        packet = Packet(Negotiate(1024, 128, 9600).encode(), toggle=True)
        self.assertEqual(packet.encode(), PACKETS["negotiate_request"])

    def test_table_0_read_is_byte_exact(self) -> None:
        packet = Packet(Read(0).encode(), toggle=True)
        self.assertEqual(packet.encode(), PACKETS["read_table_0_request"])

    def test_published_packets_decode_to_their_requests(self) -> None:
        decoded = {}
        for name, raw in PACKETS.items():
            (packet,) = PacketDecoder().receive(raw)
            assert isinstance(packet, Packet)
            decoded[name] = decode_request(packet.data)
        self.assertEqual(
            decoded,
            {
                "identify_request": Identify(),
                "negotiate_request": Negotiate(1024, 128, 9600),
                "read_table_0_request": Read(0),
            },
        )


class CrcTests(unittest.TestCase):
    def test_crc_is_x25_check_value(self) -> None:
        # The catalogued check value of CRC-16/X-25 (CRC-16/IBM-SDLC) over "123456789".
        self.assertEqual(crc16(b"123456789"), 0x906E)

    def test_crc_goes_low_byte_first(self) -> None:
        raw = PACKETS["identify_request"]
        self.assertEqual(int.from_bytes(raw[-2:], "little"), crc16(raw[:-2]))


class PacketTests(unittest.TestCase):
    def test_control_bits(self) -> None:
        packet = Packet(b"", toggle=True, multi=True, first=True, data_format=1)
        self.assertEqual(packet.control, 0xE1)

    def test_data_over_8183_bytes_is_refused(self) -> None:
        self.assertRaises(ValueError, Packet(bytes(8184)).encode)

    @given(PACKETS_ST)
    def test_round_trip(self, packet: Packet) -> None:
        self.assertEqual(PacketDecoder().receive(packet.encode()), [packet])


class DecoderTests(unittest.TestCase):
    def test_ack_then_packet(self) -> None:
        items = PacketDecoder().receive(b"\x06" + PACKETS["identify_request"])
        self.assertEqual(items[0], Ack())
        self.assertIsInstance(items[1], Packet)

    def test_nak_alone(self) -> None:
        self.assertEqual(PacketDecoder().receive(b"\x15"), [Nak()])

    def test_packet_split_in_single_bytes_comes_out_once_complete(self) -> None:
        decoder = PacketDecoder()
        raw = PACKETS["negotiate_request"]
        got = [item for b in raw[:-1] for item in decoder.receive(bytes([b]))]
        self.assertEqual(got, [])
        self.assertEqual(len(decoder.receive(raw[-1:])), 1)

    def test_garbage_before_a_packet_is_skipped_and_counted(self) -> None:
        decoder = PacketDecoder()
        items = decoder.receive(b"\x00\x41\xff" + PACKETS["identify_request"])
        self.assertEqual([type(i) for i in items], [Packet])
        self.assertEqual(decoder.skipped, 3)

    def test_bad_crc_raises_then_the_next_packet_decodes(self) -> None:
        bad = bytearray(PACKETS["read_table_0_request"])
        bad[-1] ^= 0xFF
        decoder = PacketDecoder()
        with self.assertRaises(FrameError) as cm:
            decoder.receive(bytes(bad) + PACKETS["identify_request"])
        self.assertEqual((cm.exception.field, cm.exception.offset), ("CRC", len(bad) - 2))
        self.assertEqual(len(decoder.receive(b"")), 1)

    def test_impossible_length_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError) as cm:
            PacketDecoder().receive(bytes.fromhex("EE000000FFFF"))
        self.assertEqual(cm.exception.field, "length")

    def test_items_before_an_error_are_returned_and_the_error_comes_next(self) -> None:
        bad = bytearray(PACKETS["identify_request"])
        bad[-1] ^= 1
        decoder = PacketDecoder()
        self.assertEqual(decoder.receive(b"\x06" + bytes(bad)), [Ack()])
        self.assertRaises(FrameError, decoder.receive, b"")

    @given(st.lists(st.binary(max_size=40), max_size=8))
    def test_arbitrary_bytes_give_items_need_more_or_frame_errors(
        self, chunks: list[bytes]
    ) -> None:
        decoder = PacketDecoder()
        for chunk in chunks:
            try:
                for item in decoder.receive(chunk):
                    self.assertIsInstance(item, Packet | Ack | Nak)
            except FrameError:
                pass


class MultiPacketTests(unittest.TestCase):
    def test_short_message_is_one_plain_packet(self) -> None:
        (packet,) = packetize(b"abc", packet_size=64)
        self.assertEqual((packet.multi, packet.sequence), (False, 0))

    def test_long_message_counts_down_to_zero_with_toggling_bits(self) -> None:
        packets = packetize(bytes(20), packet_size=16, toggle=True)
        self.assertEqual(
            [(p.first, p.sequence, p.toggle, len(p.data)) for p in packets],
            [(True, 2, True, 8), (False, 1, False, 8), (False, 0, True, 4)],
        )
        self.assertTrue(all(len(p.encode()) <= 16 for p in packets))

    def test_assembler_joins_the_packets(self) -> None:
        assembler = MessageAssembler()
        results = [assembler.packet(p) for p in packetize(bytes(range(20)), packet_size=16)]
        self.assertEqual(results, [None, None, bytes(range(20))])

    def test_repeated_packet_is_dropped(self) -> None:
        assembler = MessageAssembler()
        first, second = packetize(bytes(10), packet_size=16)
        self.assertIsNone(assembler.packet(first))
        self.assertIsNone(assembler.packet(first))
        self.assertEqual(assembler.packet(second), bytes(10))

    def test_missing_packet_is_a_sequence_error(self) -> None:
        assembler = MessageAssembler()
        packets = packetize(bytes(30), packet_size=16)
        assembler.packet(packets[0])
        with self.assertRaises(FrameError) as cm:
            assembler.packet(packets[2])
        self.assertEqual(cm.exception.field, "sequence")

    def test_repeated_single_packet_is_dropped_until_reset(self) -> None:
        assembler = MessageAssembler()
        packet = Packet(b"\x00")
        self.assertEqual(assembler.packet(packet), b"\x00")
        self.assertIsNone(assembler.packet(packet))
        assembler.reset()
        self.assertEqual(assembler.packet(packet), b"\x00")

    @given(st.binary(max_size=2000), st.integers(9, 300))
    def test_packetize_then_assemble_round_trip(self, message: bytes, size: int) -> None:
        assembler = MessageAssembler()
        results = [assembler.packet(p) for p in packetize(message, packet_size=size)]
        self.assertEqual(results[-1], message)

    @given(st.lists(PACKETS_ST, max_size=6))
    def test_arbitrary_packets_give_messages_none_or_frame_errors(
        self, packets: list[Packet]
    ) -> None:
        assembler = MessageAssembler()
        for packet in packets:
            try:
                result = assembler.packet(packet)
            except FrameError:
                continue
            self.assertIsInstance(result, bytes | None)


class RequestTests(unittest.TestCase):
    def test_logon_pads_the_user_name_to_ten_bytes(self) -> None:
        self.assertEqual(Logon(2, b"fep").encode(), bytes.fromhex("500002") + b"fep       ")

    def test_security_pads_the_password_to_twenty_bytes_with_nul(self) -> None:
        self.assertEqual(Security(b"secret").encode(), b"\x51secret" + b"\0" * 14)

    def test_security_padding_can_be_spaces(self) -> None:
        self.assertEqual(Security(b"secret", pad=0x20).encode(), b"\x51secret" + b" " * 14)

    def test_decoded_password_matches_either_padding(self) -> None:
        for pad in (0x00, 0x20):
            received = decode_request(Security(b"secret", pad=pad).encode())
            assert isinstance(received, Security)
            self.assertTrue(received.matches(b"secret"))
            self.assertFalse(received.matches(b"secreT"))

    def test_partial_read_carries_offset_and_count(self) -> None:
        self.assertEqual(Read(23, 10, 20).encode(), bytes.fromhex("3F 0017 00000A 0014"))

    def test_write_ends_with_the_table_checksum(self) -> None:
        self.assertEqual(Write(5, b"\x01\x02").encode(), bytes.fromhex("40 0005 0002 0102 FD"))

    def test_wait_carries_seconds(self) -> None:
        self.assertEqual(Wait(30).encode(), b"\x70\x1e")

    def test_negotiate_without_baud_is_60(self) -> None:
        self.assertEqual(Negotiate(512, 2).encode(), bytes.fromhex("60 0200 02"))

    def test_write_with_bad_checksum_is_a_frame_error(self) -> None:
        self.assertRaises(FrameError, decode_request, bytes.fromhex("40 0005 0002 0102 00"))

    @given(REQUESTS_ST)
    def test_request_round_trip(self, request: c1218.Request) -> None:
        self.assertEqual(decode_request(request.encode()), request)

    @given(st.binary(max_size=40))
    def test_arbitrary_bytes_give_a_request_or_a_frame_error(self, raw: bytes) -> None:
        try:
            decode_request(raw)
        except FrameError:
            pass


class ResponseTests(unittest.TestCase):
    def test_identify_answer_without_features(self) -> None:
        answer = IdentifyResponse.decode(bytes.fromhex("00 00 01 00 00"))
        self.assertEqual(answer, IdentifyResponse(0, 1, 0, ()))

    def test_identify_answer_keeps_its_features(self) -> None:
        answer = IdentifyResponse.decode(bytes.fromhex("00 02 01 00 07 01 00"))
        self.assertEqual((answer.standard, answer.features), (2, ((0x07, b"\x01"),)))

    def test_identify_answer_without_end_of_list_is_a_frame_error(self) -> None:
        self.assertRaises(FrameError, IdentifyResponse.decode, bytes.fromhex("00 00 01 00"))

    def test_negotiate_answer(self) -> None:
        answer = NegotiateResponse.decode(bytes.fromhex("00 0100 02 06"))
        self.assertEqual(answer, NegotiateResponse(256, 2, 9600))

    def test_read_answer_gives_the_table_data(self) -> None:
        self.assertEqual(decode_read_response(bytes.fromhex("00 0002 0102 FD")), b"\x01\x02")

    def test_read_answer_with_bad_checksum_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError) as cm:
            decode_read_response(bytes.fromhex("00 0002 0102 FE"))
        self.assertEqual(cm.exception.field, "checksum")

    def test_read_answer_with_wrong_count_is_a_frame_error(self) -> None:
        self.assertRaises(FrameError, decode_read_response, bytes.fromhex("00 0003 0102 FD"))

    def test_isc_answer_to_security_names_meter_and_code(self) -> None:
        with self.assertRaises(InsufficientSecurityClearance) as cm:
            c1218.decode_ok(b"\x03", "security", meter="elster-1")
        error = cm.exception
        self.assertEqual(
            (error.meter, error.response_code, error.protocol), ("elster-1", 3, "ansi-c12")
        )
        self.assertEqual(
            str(error), "meter elster-1 refused security: isc (insufficient security clearance)"
        )

    def test_every_error_code_has_its_own_class(self) -> None:
        classes = set()
        for code in range(1, 11):
            with self.assertRaises(C12ResponseError) as cm:
                c1218.check_response(bytes([code]), "read")
            classes.add(type(cm.exception))
        self.assertEqual(len(classes), 10)

    def test_unknown_code_is_a_plain_response_error(self) -> None:
        with self.assertRaises(C12ResponseError) as cm:
            c1218.check_response(b"\x42", "read")
        self.assertIn("0x42", str(cm.exception))

    @given(st.binary(max_size=300))
    def test_read_answer_round_trip(self, table_data: bytes) -> None:
        self.assertEqual(decode_read_response(encode_read_response(table_data)), table_data)

    @given(
        st.sampled_from([0, 2, 3]),
        st.integers(0, 255),
        st.integers(0, 255),
        st.lists(st.tuples(st.just(0x07), st.binary(min_size=1, max_size=1)), max_size=3),
    )
    def test_identify_answer_round_trip(self, std: int, ver: int, rev: int, features: list) -> None:
        answer = IdentifyResponse(std, ver, rev, tuple(features))
        self.assertEqual(IdentifyResponse.decode(answer.encode()), answer)

    @given(st.binary(max_size=40))
    def test_arbitrary_answers_give_a_value_or_a_typed_error(self, raw: bytes) -> None:
        for decode in (
            IdentifyResponse.decode,
            NegotiateResponse.decode,
            decode_read_response,
            lambda d: c1218.decode_ok(d, "logon"),
        ):
            try:
                decode(raw)
            except (FrameError, C12ResponseError):
                pass
