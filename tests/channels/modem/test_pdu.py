"""SMS PDUs: published PDUs, the GSM 7-bit alphabet, addresses, timestamps, validity periods,
user-data headers, concatenation, round trips and arbitrary bytes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.channels.modem.pdu import (
    TON_ALPHANUMERIC,
    TON_INTERNATIONAL,
    Address,
    Alphabet,
    Concat,
    DataCoding,
    Deliver,
    DeliveryStatus,
    Direction,
    EnhancedValidity,
    InformationElement,
    Reassembler,
    StatusReport,
    Submit,
    UserData,
    data_coding,
    dcs_octet,
    decode_hex_pdu,
    decode_pdu,
    decode_timestamp,
    encode_address,
    encode_pdu,
    encode_smsc,
    encode_timestamp,
    gsm7_decode,
    gsm7_encodable,
    gsm7_encode,
    pack_septets,
    relative_validity,
    relative_validity_octet,
    split_body,
    status_text,
    submit_parts,
    tpdu_length,
    unpack_septets,
)
from fep.errors import FrameError
from tests.channels.modem.published_pdus import PDUS
from tests.channels.modem.strategies import gsm7_text, tpdus, ucs2_text
from tests.scale import examples


def zone(hours: float) -> timezone:
    return timezone(timedelta(hours=hours))


def pdu(name: str) -> bytes:
    return bytes.fromhex(PDUS[name])


class PublishedPduTests(unittest.TestCase):
    """Published PDUs decode to what their sources say they hold."""

    def test_dreamfabric_deliver_hellohello(self) -> None:
        message = decode_pdu(pdu("dreamfabric_deliver_hellohello"))
        assert isinstance(message, Deliver)
        self.assertEqual(str(message.smsc), "+27381000015")
        self.assertEqual(message.originator.number, "27838890001")
        self.assertEqual(message.timestamp, datetime(1999, 3, 29, 15, 16, 59, tzinfo=zone(2)))
        self.assertEqual(message.body, "hellohello")
        self.assertEqual(message.coding, DataCoding(Alphabet.GSM7))

    def test_dreamfabric_submit_hellohello_valid_four_days(self) -> None:
        message = decode_pdu(pdu("dreamfabric_submit_hellohello"))
        assert isinstance(message, Submit)
        self.assertIsNone(message.smsc)
        self.assertEqual(str(message.destination), "+46708251358")
        self.assertEqual(message.validity, timedelta(days=4))
        self.assertEqual(message.body, "hellohello")

    def test_accessvba_submit_national_number_and_longest_relative_validity(self) -> None:
        message = decode_pdu(pdu("accessvba_submit_pretty_world"))
        assert isinstance(message, Submit)
        self.assertEqual(str(message.smsc), "+8613800280500")
        self.assertEqual(message.reference, 0x51)
        self.assertEqual(str(message.destination), "1861")
        self.assertEqual(message.validity, timedelta(weeks=63))
        self.assertEqual(message.body, "Hello,my pretty world!")

    def test_accessvba_submit_short_message_type_0(self) -> None:
        message = decode_pdu(pdu("accessvba_submit_type0_hello"))
        assert isinstance(message, Submit)
        self.assertEqual((message.pid, message.body), (0x40, "hello"))
        self.assertEqual(str(message.destination), "+819001234567")

    def test_developershome_deliver_read_with_cmgr(self) -> None:
        message = decode_pdu(pdu("gsmmodem_deliver_easy_to_read"))
        assert isinstance(message, Deliver)
        self.assertEqual(str(message.smsc), "+85290000000")
        self.assertEqual(str(message.originator), "+85291234567")
        self.assertEqual(message.timestamp, datetime(2007, 4, 12, 23, 25, 42, tzinfo=zone(8)))
        self.assertEqual(message.body, "It is easy to read text messages via AT commands.")

    def test_gsmmodem_deliver_with_extension_table_characters(self) -> None:
        message = decode_pdu(pdu("gsmmodem_deliver_extension_chars"))
        assert isinstance(message, Deliver)
        self.assertEqual(str(message.originator), "+27821234567")
        self.assertEqual(message.body, "@{tést}!")

    def test_gsmmodem_deliver_test2(self) -> None:
        message = decode_pdu(pdu("gsmmodem_deliver_test2"))
        assert isinstance(message, Deliver)
        self.assertEqual(str(message.smsc), "+2782913593")
        self.assertEqual(message.timestamp, datetime(2013, 3, 8, 15, 2, 16, tzinfo=zone(2)))
        self.assertEqual(message.body, "Test2")

    def test_diafaan_submit_asks_for_a_status_report(self) -> None:
        message = decode_pdu(pdu("diafaan_submit_status_report_requested"))
        assert isinstance(message, Submit)
        self.assertEqual(str(message.smsc), "+31624000000")
        self.assertEqual(str(message.destination), "+31628870634")
        self.assertEqual(message.validity, timedelta(days=3))
        self.assertTrue(message.status_report)
        self.assertEqual(message.body, "www.diafaan.com")

    def test_diafaan_status_report_says_delivered(self) -> None:
        report = decode_pdu(pdu("diafaan_status_report"))
        assert isinstance(report, StatusReport)
        self.assertEqual(report.reference, 214)
        self.assertEqual(str(report.recipient), "+31628870634")
        self.assertEqual(report.timestamp, datetime(2011, 1, 11, 17, 59, 15, tzinfo=zone(1)))
        self.assertEqual(report.discharge, datetime(2011, 1, 11, 17, 59, 17, tzinfo=zone(1)))
        self.assertEqual(report.outcome, DeliveryStatus.DELIVERED)

    def test_zte_status_report_with_odd_fields_still_decodes(self) -> None:
        report = decode_pdu(pdu("gsmmodem_zte_status_report"))
        assert isinstance(report, StatusReport)
        self.assertEqual(report.reference, 28)
        self.assertEqual(report.recipient.number, "#08427829207025")
        self.assertEqual(report.timestamp, datetime(2013, 7, 26, 14, 29, 27, tzinfo=zone(2)))
        self.assertEqual(report.discharge, datetime(2013, 7, 26, 14, 29, 31, tzinfo=zone(2)))

    def test_concatenated_part_with_8bit_reference(self) -> None:
        message = decode_pdu(pdu("gsmmodem_deliver_concatenated_part"))
        assert isinstance(message, Deliver)
        self.assertEqual((str(message.originator), str(message.smsc)), ("2781188", "+2781191"))
        self.assertEqual(message.user_data.concat, Concat(0xC3, 1, 1))
        self.assertEqual(
            message.body,
            "Hello!You have R 19.50 FREE airtime available. R 19.50 will expire on 01/07/2013. ",
        )

    def test_alphanumeric_sender_and_ucs2_part(self) -> None:
        message = decode_pdu(pdu("gsmmodem_deliver_alphanumeric_ucs2_part"))
        assert isinstance(message, Deliver)
        self.assertEqual(message.originator, Address("Megafon", TON_ALPHANUMERIC, 0))
        self.assertEqual(message.timestamp, datetime(2014, 5, 27, 14, 1, 48, tzinfo=zone(4)))
        self.assertEqual(message.user_data.concat, Concat(0x56, 2, 1))
        self.assertEqual(
            message.body, "SMS code: 4856, confirmation of association between account and Meg"
        )

    def test_ucs2_submit(self) -> None:
        message = decode_pdu(pdu("gsmmodem_submit_ucs2"))
        assert isinstance(message, Submit)
        self.assertEqual((str(message.destination), message.body), ("+34616585119", "あ叶葉"))

    def test_8bit_submit(self) -> None:
        message = decode_pdu(pdu("gsmmodem_submit_8bit"))
        assert isinstance(message, Submit)
        self.assertEqual(message.coding.alphabet, Alphabet.DATA8)
        self.assertEqual(message.body, b"Hello world!")

    def test_absolute_validity(self) -> None:
        message = decode_pdu(pdu("gsmmodem_submit_absolute_validity"))
        assert isinstance(message, Submit)
        self.assertEqual(message.validity, datetime(2013, 7, 10, 13, 39, tzinfo=zone(2)))
        self.assertEqual(message.body, "Timestamp validity test")

    def test_address_length_past_its_digits_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError) as cm:
            decode_pdu(pdu("gsmmodem_submit_bad_address_length"))
        self.assertEqual(cm.exception.field, "TP-DA")

    def test_published_submits_encode_byte_exact(self) -> None:
        cases = {
            "dreamfabric_submit_hellohello": Submit(
                Address.parse("+46708251358"),
                UserData("hellohello"),
                validity=timedelta(days=4),
            ),
            "gsmmodem_submit_hello_world": Submit(
                Address.parse("+27820001111"), UserData("Hello World!")
            ),
            "gsmmodem_submit_ucs2_year_validity": Submit(
                Address.parse("+123456789"),
                UserData("世界您好\uff01"),
                dcs=dcs_octet(Alphabet.UCS2),
                validity=timedelta(weeks=52),
                smsc=Address.parse("+44000000000"),
            ),
            "gsmmodem_submit_national": Submit(
                Address("0126541234", 2),
                UserData("Test message: local numbers"),
                reference=13,
                validity=timedelta(days=3),
                status_report=True,
                smsc=Address("12345", 2),
            ),
            "gsmmodem_submit_absolute_validity": Submit(
                Address.parse("+27820001111"),
                UserData("Timestamp validity test"),
                validity=datetime(2013, 7, 10, 13, 39, tzinfo=zone(2)),
            ),
        }
        for name, submit in cases.items():
            self.assertEqual(encode_pdu(submit), pdu(name), name)

    def test_published_deliver_encodes_byte_exact(self) -> None:
        deliver = Deliver(
            Address("27838890001", 4, 8),
            datetime(1999, 3, 29, 15, 16, 59, tzinfo=zone(2)),
            UserData("hellohello"),
            smsc=Address.parse("+27381000015"),
        )
        self.assertEqual(encode_pdu(deliver), pdu("dreamfabric_deliver_hellohello"))

    def test_published_status_report_encodes_byte_exact(self) -> None:
        report = decode_pdu(pdu("diafaan_status_report"))
        self.assertEqual(encode_pdu(report), pdu("diafaan_status_report"))

    def test_long_text_splits_into_the_published_three_parts(self) -> None:
        text = " ".join(
            [
                "Lorem ipsum dolor sit amet, consectetur adipisicing elit, sed do eiusmod tempor",
                "incididunt ut labore et dolore magna aliqua.Ut enim ad minim veniam,",
                "quinostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo",
                "consequat.Duis aute irure dolor in reprehenderit in voluptate velit esse",
                "cillum doloe eu fugiat nulla pariatur.Excepteur sint occaecat cupidatat non",
                "proident, sunt in culpa qui officia deserunt mollit anim id est laborum",
            ]
        )
        parts = submit_parts("+15125551234", text, reject_duplicates=True)
        self.assertEqual(
            [encode_pdu(p) for p in parts],
            [pdu("gsmmodem_lorem_part1"), pdu("gsmmodem_lorem_part2"), pdu("gsmmodem_lorem_part3")],
        )

    def test_tpdu_length_leaves_out_the_smsc_field(self) -> None:
        # dreamfabric: the SMS-SUBMIT without its 00 SMSC octet is 23 octets (AT+CMGS=23).
        self.assertEqual(tpdu_length(pdu("dreamfabric_submit_hellohello")), 23)
        self.assertEqual(tpdu_length(pdu("dreamfabric_deliver_hellohello")), 28)


class Gsm7Tests(unittest.TestCase):
    # Packed septets published in python-gsmmodem-new test/test_pdu.py (TestGsm7) and
    # "hellohello" in dreamfabric's "SMS messages and the PDU format".
    PACKED = {
        "hellohello": "E8329BFD4697D9EC37",
        "Hello World!": "C8329BFD065DDF72363904",
        "[{abc}]~": "1BDE0615168F37A98D6FD303",
        "{åΦΓΛΩΠΨΣΘ€}": "1BD44332A1542C174C6653DEA400",
        "12345678": "31D98C56B3DD70",
    }

    def test_published_packings(self) -> None:
        for text, packed in self.PACKED.items():
            self.assertEqual(pack_septets(gsm7_encode(text)).hex().upper(), packed, text)
            septets = len(gsm7_encode(text))
            self.assertEqual(gsm7_decode(unpack_septets(bytes.fromhex(packed), septets)), text)

    def test_extension_characters_take_two_septets(self) -> None:
        self.assertEqual(gsm7_encode("€"), b"\x1b\x65")
        self.assertEqual(gsm7_encode("a|b"), b"\x61\x1b\x40\x62")

    def test_dollar_and_currency_sign_are_different_codes(self) -> None:
        self.assertEqual(gsm7_encode("$¤"), b"\x02\x24")

    def test_text_outside_the_alphabet_is_refused_naming_the_character(self) -> None:
        with self.assertRaises(ValueError) as cm:
            gsm7_encode("ab世")
        self.assertIn("position 2", str(cm.exception))
        self.assertFalse(gsm7_encodable("ab世"))

    def test_escape_before_an_unknown_code_gives_the_basic_character(self) -> None:
        self.assertEqual(gsm7_decode(b"\x1b\x41"), "A")

    def test_double_and_trailing_escape_give_a_space(self) -> None:
        self.assertEqual(gsm7_decode(b"\x1b\x1bx"), " x")
        self.assertEqual(gsm7_decode(b"a\x1b"), "a ")

    @given(gsm7_text, st.integers(0, 6))
    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_packing_round_trips_after_fill_bits(self, text: str, fill: int) -> None:
        septets = gsm7_encode(text)
        packed = pack_septets(septets, fill)
        self.assertEqual(gsm7_decode(unpack_septets(packed, len(septets), fill)), text)


class AddressTests(unittest.TestCase):
    def test_international_number_with_odd_digit_count_gets_a_filler(self) -> None:
        self.assertEqual(
            encode_address(Address.parse("+46708251358")).hex().upper(), "0B916407281553F8"
        )

    def test_alphanumeric_sender_counts_useful_semi_octets(self) -> None:
        # python-gsmmodem-new TestSmsPduAddressFields: "abc" -> 06D061F118.
        self.assertEqual(encode_address(Address("abc", TON_ALPHANUMERIC, 0)).hex(), "06d061f118")

    def test_parse_tells_international_unknown_and_alphanumeric_apart(self) -> None:
        self.assertEqual(Address.parse("+49 170 1234"), Address("491701234", TON_INTERNATIONAL))
        self.assertEqual(Address.parse("0170").ton, 0)
        self.assertEqual(Address.parse("FieldUnit").ton, TON_ALPHANUMERIC)

    def test_smsc_field_counts_octets_and_is_00_when_absent(self) -> None:
        # python-gsmmodem-new TestSmsPduSmscField: +9876543210 -> 06918967452301.
        self.assertEqual(encode_smsc(Address.parse("+9876543210")).hex(), "06918967452301")
        self.assertEqual(encode_smsc(None), b"\x00")

    def test_bad_addresses_are_refused(self) -> None:
        self.assertRaises(ValueError, Address, "1" * 21)
        self.assertRaises(ValueError, Address, "12x")
        self.assertRaises(ValueError, Address, "TwelveChars!", TON_ALPHANUMERIC)


class TimeTests(unittest.TestCase):
    # python-gsmmodem-new test/test_pdu.py, TestTimestamp.
    PUBLISHED = {
        "51117200000000": datetime(2015, 11, 27, tzinfo=zone(0)),
        "51117200000080": datetime(2015, 11, 27, tzinfo=zone(2)),
        "70402132522423": datetime(2007, 4, 12, 23, 25, 42, tzinfo=zone(8)),
        "7040213252242B": datetime(2007, 4, 12, 23, 25, 42, tzinfo=zone(-8)),
    }

    def test_published_timestamps_both_ways(self) -> None:
        for text, moment in self.PUBLISHED.items():
            self.assertEqual(decode_timestamp(bytes.fromhex(text)), moment)
            self.assertEqual(encode_timestamp(moment).hex().upper(), text)

    def test_decoded_zone_is_kept(self) -> None:
        moment = decode_timestamp(bytes.fromhex("7040213252242B"))
        self.assertEqual(moment.utcoffset(), timedelta(hours=-8))

    def test_naive_or_odd_zone_is_refused(self) -> None:
        self.assertRaises(ValueError, encode_timestamp, datetime(2024, 1, 1))
        self.assertRaises(
            ValueError,
            encode_timestamp,
            datetime(2024, 1, 1, tzinfo=timezone(timedelta(minutes=7))),
        )

    def test_month_13_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError) as cm:
            decode_timestamp(bytes.fromhex("42310000000000"), offset=9)
        self.assertEqual((cm.exception.field, cm.exception.offset), ("TP-SCTS", 9))

    def test_non_bcd_digit_is_a_frame_error_naming_its_octet(self) -> None:
        with self.assertRaises(FrameError) as cm:
            decode_timestamp(bytes.fromhex("421100A0000000"))
        self.assertEqual(cm.exception.offset, 3)

    def test_published_relative_validity_periods(self) -> None:
        # python-gsmmodem-new TestRelativeValidityPeriod; the four ranges of 23.040 9.2.3.12.1.
        for period, octet in (
            (timedelta(minutes=30), 5),
            (timedelta(hours=16), 151),
            (timedelta(days=3), 169),
            (timedelta(weeks=5), 197),
        ):
            self.assertEqual(relative_validity_octet(period), octet)
            self.assertEqual(relative_validity(octet), period)

    def test_relative_validity_rounds_up(self) -> None:
        self.assertEqual(
            relative_validity(relative_validity_octet(timedelta(minutes=7))).seconds, 600
        )
        self.assertRaises(ValueError, relative_validity_octet, timedelta(weeks=64))

    @given(st.integers(0, 255))
    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_every_relative_octet_round_trips(self, octet: int) -> None:
        self.assertEqual(relative_validity_octet(relative_validity(octet)), octet)

    def test_enhanced_validity_relative_seconds(self) -> None:
        self.assertEqual(
            EnhancedValidity(bytes((0x42, 30, 0, 0, 0, 0, 0))).period, timedelta(seconds=30)
        )
        self.assertTrue(EnhancedValidity(bytes((0x42, 30, 0, 0, 0, 0, 0))).single_shot)
        self.assertEqual(
            EnhancedValidity(bytes.fromhex("03214300000000")).period,
            timedelta(hours=12, minutes=34),
        )


class DataCodingTests(unittest.TestCase):
    def test_general_groups(self) -> None:
        self.assertEqual(data_coding(0x00), DataCoding(Alphabet.GSM7))
        self.assertEqual(data_coding(0x08), DataCoding(Alphabet.UCS2))
        self.assertEqual(data_coding(0x04), DataCoding(Alphabet.DATA8))
        self.assertEqual(data_coding(0x10), DataCoding(Alphabet.GSM7, message_class=0))
        self.assertEqual(data_coding(0x11).message_class, 1)
        self.assertTrue(data_coding(0x20).compressed)

    def test_reserved_alphabet_and_groups_mean_the_default_alphabet(self) -> None:
        self.assertEqual(data_coding(0x0C).alphabet, Alphabet.GSM7)
        self.assertEqual(data_coding(0x80).alphabet, Alphabet.GSM7)

    def test_message_waiting_and_class_groups(self) -> None:
        self.assertEqual(data_coding(0xC8).waiting, "discard")
        self.assertEqual(data_coding(0xE0).alphabet, Alphabet.UCS2)
        self.assertEqual(data_coding(0xF6), DataCoding(Alphabet.DATA8, 2))
        self.assertEqual(data_coding(0xF0), DataCoding(Alphabet.GSM7, 0))

    def test_dcs_octet(self) -> None:
        self.assertEqual(dcs_octet(Alphabet.UCS2), 0x08)
        self.assertEqual(dcs_octet(Alphabet.GSM7, 0), 0x10)
        self.assertRaises(ValueError, dcs_octet, Alphabet.GSM7, 4)


class UserDataHeaderTests(unittest.TestCase):
    def test_published_concatenation_elements(self) -> None:
        # python-gsmmodem-new TestUdhConcatenation: 8-bit 0003170301, 16-bit 080401800402.
        self.assertEqual(Concat(23, 3, 1).element(), InformationElement(0, bytes.fromhex("170301")))
        self.assertEqual(
            Concat(384, 4, 2, wide=True).element(), InformationElement(8, bytes.fromhex("01800402"))
        )

    def test_sixteen_bit_reference_is_read_back(self) -> None:
        parts = submit_parts("+4912345", "x" * 200, reference=0x1234, wide_reference=True)
        decoded = [decode_pdu(encode_pdu(p)) for p in parts]
        self.assertEqual(
            [d.user_data.concat for d in decoded if isinstance(d, Submit)],
            [Concat(0x1234, 2, 1, True), Concat(0x1234, 2, 2, True)],
        )

    def test_part_number_above_total_means_no_concatenation(self) -> None:
        data = UserData("x", (InformationElement(0, bytes((1, 2, 3))),))
        self.assertIsNone(data.concat)

    def test_unknown_elements_are_kept(self) -> None:
        submit = Submit(
            Address.parse("+4912345"),
            UserData("hi", (InformationElement(0x05, bytes.fromhex("0B8423F0")),)),
        )
        self.assertEqual(decode_pdu(encode_pdu(submit)), submit)

    def test_header_running_past_the_user_data_is_a_frame_error(self) -> None:
        deliver = Deliver(
            Address.parse("+1"),
            datetime(2024, 1, 1, tzinfo=zone(0)),
            UserData(b"", (InformationElement(0, bytes((1, 2))),)),
            dcs=dcs_octet(Alphabet.DATA8),
        )
        raw = bytearray(encode_pdu(deliver))
        # UDL 5, UDHL 4, IE 00 of 2 octets.
        self.assertEqual(raw[-6:], bytes((5, 4, 0, 2, 1, 2)))
        raw[-5] = 9
        with self.assertRaises(FrameError) as cm:
            decode_pdu(raw)
        self.assertEqual(cm.exception.field, "TP-UDH")


class SplitTests(unittest.TestCase):
    def test_gsm7_fits_160_in_one_part_and_153_per_part_after(self) -> None:
        self.assertEqual(len(split_body("a" * 160, Alphabet.GSM7, 6)), 1)
        self.assertEqual([len(p) for p in split_body("a" * 161, Alphabet.GSM7, 6)], [153, 8])

    def test_extension_character_is_never_cut_in_half(self) -> None:
        pieces = split_body("a" * 152 + "€" + "b" * 10, Alphabet.GSM7, 6)
        self.assertEqual(pieces[0], "a" * 152)
        self.assertTrue(str(pieces[1]).startswith("€"))

    def test_ucs2_fits_70_and_67_per_part(self) -> None:
        self.assertEqual(len(split_body("ж" * 70, Alphabet.UCS2, 6)), 1)
        self.assertEqual([len(p) for p in split_body("ж" * 71, Alphabet.UCS2, 6)], [67, 4])

    def test_surrogate_pair_is_never_cut(self) -> None:
        # 67 UTF-16 units fit a part; the 67th would be the first half of the pair.
        pieces = split_body("ж" * 66 + "😀" + "ж" * 5, Alphabet.UCS2, 6)
        self.assertEqual(pieces, ["ж" * 66, "😀" + "ж" * 5])

    def test_8bit_fits_140_and_134_per_part(self) -> None:
        self.assertEqual([len(p) for p in split_body(b"x" * 141, Alphabet.DATA8, 6)], [134, 7])

    def test_submit_parts_chooses_ucs2_for_text_gsm7_cannot_carry(self) -> None:
        (part,) = submit_parts("+4912345", "Zähler 12 Störung ©")
        self.assertEqual(part.coding.alphabet, Alphabet.UCS2)
        (part,) = submit_parts("+4912345", "Zähler 12 Störung")
        self.assertEqual(part.coding.alphabet, Alphabet.GSM7)

    def test_flash_and_status_report_options(self) -> None:
        (part,) = submit_parts("+4912345", "wake", message_class=0, status_report=True)
        self.assertEqual(part.coding.message_class, 0)
        self.assertTrue(decode_hex_pdu(encode_pdu(part).hex()).status_report)  # type: ignore[union-attr]


class ReassemblyTests(unittest.TestCase):
    def deliveries(self, text: str, reference: int = 7) -> list[Deliver]:
        moment = datetime(2024, 5, 1, 12, tzinfo=zone(0))
        return [
            Deliver(Address.parse("+4915550001"), moment, p.user_data, dcs=p.dcs)
            for p in submit_parts("+1", text, reference=reference)
        ]

    def test_single_message_comes_out_at_once(self) -> None:
        (part,) = self.deliveries("short")
        message = Reassembler().add(part, 0.0)
        assert message is not None
        self.assertEqual((message.text, str(message.sender)), ("short", "+4915550001"))

    @given(gsm7_text.map(lambda t: (t * 3)[:400]) | ucs2_text.map(lambda t: t * 4), st.randoms())
    @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_parts_in_any_order_with_duplicates_join(self, text: str, rnd: object) -> None:
        parts = self.deliveries(text)
        shuffled = parts + parts[:1]
        rnd.shuffle(shuffled)  # type: ignore[attr-defined]
        joiner = Reassembler()
        results = [m for m in (joiner.add(p, 0.0) for p in shuffled) if m is not None]
        self.assertEqual(results[0].text, text)
        self.assertEqual(results[0].parts, tuple(parts))

    def test_two_messages_with_different_references_do_not_mix(self) -> None:
        a, b = self.deliveries("A" * 200, 1), self.deliveries("B" * 200, 2)
        joiner = Reassembler()
        self.assertIsNone(joiner.add(a[0], 0))
        self.assertIsNone(joiner.add(b[1], 0))
        message = joiner.add(a[1], 0)
        assert message is not None
        self.assertEqual(message.text, "A" * 200)
        self.assertEqual(joiner.pending, 1)

    def test_incomplete_message_expires(self) -> None:
        a = self.deliveries("A" * 200)
        joiner = Reassembler(timeout=60)
        joiner.add(a[0], 0)
        self.assertEqual(joiner.expire(59), [])
        self.assertEqual(joiner.expire(60), [(a[0],)])
        self.assertEqual(joiner.pending, 0)

    def test_surrogate_pair_split_by_a_foreign_sender_joins_again(self) -> None:
        # Some phones cut UCS2 between the two halves of a pair; the joined text is whole.
        moment = datetime(2024, 5, 1, tzinfo=zone(0))
        raw = "😀".encode("utf-16-be")
        halves = [
            raw[:2].decode("utf-16-be", "surrogatepass"),
            raw[2:].decode("utf-16-be", "surrogatepass"),
        ]
        parts = [
            Deliver(Address.parse("+1"), moment, UserData(h, (Concat(9, 2, n).element(),)), dcs=8)
            for n, h in enumerate(halves, 1)
        ]
        back = [decode_pdu(encode_pdu(p)) for p in parts]
        joiner = Reassembler()
        joiner.add(back[0], 0)  # type: ignore[arg-type]
        message = joiner.add(back[1], 0)  # type: ignore[arg-type]
        assert message is not None
        self.assertEqual(message.text, "😀")


class RoundTripTests(unittest.TestCase):
    @given(tpdus)
    @settings(max_examples=examples(400), deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    def test_every_pdu_round_trips(self, tpdu: Deliver | Submit | StatusReport) -> None:
        self.assertEqual(decode_pdu(encode_pdu(tpdu)), tpdu)

    @given(tpdus)
    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_without_smsc_field_too(self, tpdu: Deliver | Submit | StatusReport) -> None:
        decoded = decode_pdu(encode_pdu(tpdu, with_smsc=False), with_smsc=False)
        self.assertEqual(decoded, tpdu if tpdu.smsc is None else attrs_evolve(tpdu, smsc=None))

    @given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz €[]{}😀ÄöÜß日本", max_size=600))
    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_split_and_join_give_the_text_back(self, text: str) -> None:
        moment = datetime(2024, 1, 1, tzinfo=zone(0))
        joiner = Reassembler()
        message = None
        for part in submit_parts("+4912345", text, reference=3):
            sent = decode_pdu(encode_pdu(part))
            assert isinstance(sent, Submit)
            message = joiner.add(Deliver(sent.destination, moment, sent.user_data, dcs=sent.dcs), 0)
        assert message is not None
        self.assertEqual(message.text, text)


def attrs_evolve(tpdu: object, **changes: object) -> object:
    import attrs

    return attrs.evolve(tpdu, **changes)  # type: ignore[misc]


class ArbitraryBytesTests(unittest.TestCase):
    @given(st.binary(max_size=200), st.sampled_from([None, *Direction]), st.booleans())
    @settings(max_examples=examples(1000), deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    def test_arbitrary_bytes_decode_or_raise_frame_error(
        self, data: bytes, direction: Direction | None, with_smsc: bool
    ) -> None:
        try:
            decoded = decode_pdu(data, with_smsc=with_smsc, direction=direction)
        except FrameError:
            return
        # Whatever decodes can be shown and written back.
        repr(decoded)
        encode_pdu(decoded)

    @given(tpdus, st.data())
    @settings(max_examples=examples(300), deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    def test_damaged_pdus_decode_or_raise_frame_error(
        self, tpdu: Deliver | Submit | StatusReport, data: st.DataObject
    ) -> None:
        raw = bytearray(encode_pdu(tpdu))
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(raw)))
        try:
            decode_pdu(bytes(raw[:cut]))
        except FrameError:
            pass

    @given(st.text(max_size=80))
    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_arbitrary_hex_text_decodes_or_raises_frame_error(self, text: str) -> None:
        try:
            decode_hex_pdu(text)
        except FrameError:
            pass

    def test_truncated_pdu_names_the_field_it_ends_in(self) -> None:
        raw = pdu("dreamfabric_deliver_hellohello")
        with self.assertRaises(FrameError) as cm:
            decode_pdu(raw[:20])
        self.assertEqual((cm.exception.field, cm.exception.offset), ("TP-SCTS", 19))

    def test_trailing_octets_are_refused(self) -> None:
        with self.assertRaises(FrameError) as cm:
            decode_pdu(pdu("dreamfabric_submit_hellohello") + b"\x00")
        self.assertEqual(cm.exception.field, "TP-UD")

    def test_reserved_message_type_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError) as cm:
            decode_pdu(bytes.fromhex("0003"))
        self.assertEqual(cm.exception.field, "TP-MTI")

    def test_direction_tells_submit_report_from_submit(self) -> None:
        raw = pdu("dreamfabric_submit_hellohello")
        self.assertIsInstance(decode_pdu(raw, direction=Direction.FROM_MODEM), Submit)
        self.assertRaises(FrameError, decode_pdu, raw, direction=Direction.TO_MODEM)


class StatusTests(unittest.TestCase):
    def test_status_ranges(self) -> None:
        self.assertEqual(status_text(0x00), "received by the recipient")
        self.assertEqual(status_text(0x46), "validity period expired")
        self.assertIn("0x1A", status_text(0x1A))
        report = StatusReport(
            1,
            Address.parse("+1"),
            datetime(2024, 1, 1, tzinfo=zone(0)),
            datetime(2024, 1, 1, tzinfo=zone(0)),
            0x21,
        )
        self.assertEqual(report.outcome, DeliveryStatus.PENDING)
        self.assertEqual(decode_pdu(encode_pdu(report)), report)
