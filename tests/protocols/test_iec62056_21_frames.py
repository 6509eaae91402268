"""IEC 62056-21 framing: messages, BCC, the streaming decoder."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.iec62056_21.frames import (
    BREAK,
    Ack,
    Command,
    DataBlock,
    FrameDecoder,
    Identification,
    Nak,
    OptionSelect,
    SignOn,
    bcc,
    parse_identification,
)
from tests.protocols.test_iec62056_21_readout import fixture_bytes

ID_CHARS = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_ ")


class SignOnTests(unittest.TestCase):
    def test_sign_on_without_address_is_slash_question_bang(self) -> None:
        self.assertEqual(SignOn().encode(), b"/?!\r\n")

    def test_sign_on_carries_the_device_address(self) -> None:
        self.assertEqual(SignOn("12345678").encode(), b"/?12345678!\r\n")

    def test_decoder_reads_a_sign_on(self) -> None:
        self.assertEqual(FrameDecoder().receive(b"/?0042!\r\n"), [SignOn("0042")])

    def test_sign_on_with_bad_address_character_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError) as cm:
            FrameDecoder().receive(b"/?12#4!\r\n")
        self.assertEqual(cm.exception.field, "address")


class IdentificationTests(unittest.TestCase):
    def test_landis_gyr_identification_fields(self) -> None:
        ident = parse_identification(b"/LGZ4ZMF100AC.M26")
        self.assertEqual(
            (ident.manufacturer, ident.baud_char, ident.identification),
            ("LGZ", "4", "ZMF100AC.M26"),
        )
        self.assertEqual(ident.baudrate, 4800)

    def test_escape_sequence_is_kept_apart_from_the_identification(self) -> None:
        ident = parse_identification(b"/LGZ4\\2ZMD3102400.B31")
        self.assertEqual((ident.escapes, ident.identification), ("\\2", "ZMD3102400.B31"))
        self.assertEqual(ident.encode(), b"/LGZ4\\2ZMD3102400.B31\r\n")

    def test_lower_case_third_letter_means_fast_reaction(self) -> None:
        self.assertTrue(parse_identification(b"/ISk5MT174-0002").fast_reaction)
        self.assertFalse(parse_identification(b"/LGZ4ZMF100AC.M26").fast_reaction)

    def test_identification_without_baud_character_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError):
            parse_identification(b"/LG")

    @given(
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3),
        st.sampled_from("0123456ABCDEF"),
        st.text(ID_CHARS, max_size=16),
    )
    def test_identification_round_trips(self, man: str, baud: str, text: str) -> None:
        ident = Identification(man, baud, text)
        self.assertEqual(FrameDecoder().receive(ident.encode()), [ident])


class OptionSelectTests(unittest.TestCase):
    def test_option_select_bytes(self) -> None:
        self.assertEqual(OptionSelect(baud_char="5").encode(), b"\x06050\r\n")

    def test_decoder_reads_option_select_split_in_two(self) -> None:
        decoder = FrameDecoder()
        self.assertEqual(decoder.receive(b"\x0605"), [])
        self.assertEqual(decoder.receive(b"0\r\n"), [OptionSelect("5", "0", "0")])

    def test_lone_ack_followed_by_another_message(self) -> None:
        self.assertEqual(FrameDecoder().receive(b"\x06\x15"), [Ack(), Nak()])

    def test_option_select_without_crlf_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError):
            FrameDecoder().receive(b"\x06050xx")


class BccTests(unittest.TestCase):
    def test_bcc_is_xor_of_bytes(self) -> None:
        self.assertEqual(bcc(b"\x01\x02\x04"), 0x07)

    def test_published_e350_readout_bcc_checks(self) -> None:
        raw = fixture_bytes("landis_gyr_e350_m26.txt")
        messages = FrameDecoder().receive(raw)
        block = messages[1]
        assert isinstance(block, DataBlock)
        self.assertEqual((block.received_bcc, block.computed_bcc), (0x01, 0x01))

    def test_published_mt174_readout_bcc_checks(self) -> None:
        block = FrameDecoder().receive(fixture_bytes("iskra_mt174.txt"))[1]
        assert isinstance(block, DataBlock)
        self.assertTrue(block.bcc_ok)
        self.assertEqual(block.received_bcc, 0x19)

    def test_bad_bcc_names_both_values(self) -> None:
        block = DataBlock(b"1.8.0(1*kWh)\r\n!\r\n", 0x42)
        computed = block.computed_bcc
        with self.assertRaises(FrameError) as cm:
            block.check()
        self.assertEqual(
            cm.exception.message,
            f"bad BCC in readout: computed 0x{computed:02X}, received 0x42",
        )
        self.assertEqual(cm.exception.field, "BCC")

    def test_break_command_bytes(self) -> None:
        # SOH B 0 ETX BCC, BCC = 'B' ^ '0' ^ ETX = 0x71 (IEC 62056-21 annex, break command).
        self.assertEqual(BREAK.encode(), b"\x01B0\x03\x71")

    def test_command_with_bad_bcc_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError) as cm:
            FrameDecoder().receive(b"\x01B0\x03\x00")
        self.assertEqual(cm.exception.field, "BCC")


class DecoderTests(unittest.TestCase):
    def test_block_split_anywhere_gives_the_same_messages(self) -> None:
        raw = fixture_bytes("landis_gyr_e350_m26.txt")
        whole = FrameDecoder().receive(raw)
        for cut in range(1, len(raw)):
            decoder = FrameDecoder()
            got = decoder.receive(raw[:cut]) + decoder.receive(raw[cut:])
            self.assertEqual(got, whole, f"cut at {cut}")

    def test_data_block_waits_for_the_bcc_byte(self) -> None:
        decoder = FrameDecoder()
        self.assertEqual(decoder.receive(b"\x02!\r\n\x03"), [])
        self.assertEqual(len(decoder.receive(b"\x00")), 1)

    def test_garbage_byte_error_names_stream_offset(self) -> None:
        decoder = FrameDecoder()
        with self.assertRaises(FrameError) as cm:
            decoder.receive(b"\x06050\r\nZ")
        self.assertEqual(cm.exception.offset, 6)

    def test_decoder_goes_on_after_an_error(self) -> None:
        decoder = FrameDecoder()
        with self.assertRaises(FrameError):
            decoder.receive(b"xx/?!\r\n")
        self.assertEqual(decoder.skip_to_frame_start(), 1)
        self.assertEqual(decoder.receive(b""), [SignOn()])

    def test_a_block_in_small_pieces_is_searched_once(self) -> None:
        # Issue 14: each piece searched the whole pending block for its ETX again.
        decoder = FrameDecoder()
        decoder.receive(b"\x02")
        searched = []
        real_find = bytearray.find

        class Counting(bytearray):
            def find(self, sub, start=0, *rest):  # type: ignore[no-untyped-def, override]
                searched.append(len(self) - start)
                return real_find(self, sub, start, *rest)

        decoder._buffer = Counting(decoder._buffer)
        for _ in range(2000):
            decoder.receive(b"1.8.0(1)\r\n")
        (block,) = decoder.receive(b"!\r\n\x03\x00")
        self.assertIsInstance(block, DataBlock)
        self.assertLess(sum(searched), 4 * 2000 * 10)

    def test_endless_line_is_refused(self) -> None:
        with self.assertRaises(FrameError):
            FrameDecoder().receive(b"/" + b"A" * 300)

    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_give_messages_need_more_or_frame_error(self, data: bytes) -> None:
        decoder = FrameDecoder()
        rest = data
        for _ in range(len(data) + 1):
            try:
                messages = decoder.receive(rest)
            except FrameError:
                rest = b""
                continue
            for m in messages:
                self.assertIsInstance(
                    m, SignOn | Identification | OptionSelect | Ack | Nak | Command | DataBlock
                )
            break
        self.assertLessEqual(decoder.buffered, len(data))
