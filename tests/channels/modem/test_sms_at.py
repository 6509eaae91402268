"""27.005 answers read by sms_at: modem answers recorded in python-gsmmodem-new's
test/test_modem.py (github.com/babca/python-gsmmodem; text and PDU mode +CMGL/+CMGR of three
stored messages, status reports of a ZTE and a generic modem), and arbitrary lines."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.channels.modem.pdu import (
    Address,
    Deliver,
    StatusReport,
    Submit,
    UserData,
    submit_parts,
)
from fep.channels.modem.sms_at import (
    indicator_index,
    listed_indexes,
    memory_usage,
    new_message_slot,
    parse_text_timestamp,
    quoted_number,
    read_message,
    routed_message,
    routed_report,
    sent_reference,
    text_body,
)
from fep.errors import FrameError


def zone(hours: float) -> timezone:
    return timezone(timedelta(hours=hours))


# python-gsmmodem-new test/test_modem.py, TestSms.initFakeModemResponses.
TEXT_CMGL = [
    '+CMGL: 0,"REC UNREAD","+27748577604",,"13/01/28,14:51:42+08"',
    "Hello raspberry pi",
    '+CMGL: 1,"REC READ","+2784000153099999",,"13/02/07,01:31:44+08"',
    "New and here to stay! Don't just recharge SUPACHARGE and get your recharged "
    "airtime+FREE CellC to CellC mins & SMSs+Free data to use anytime. T&C apply. Cell C",
]
PDU_HELLO = "07917248014000F3240B917247587706F400003110824115248012C8329BFD06C9C373B8B82C97E741F034"
PDU_CELLC = (
    "07917248010080F020109172480010359099990000312070101344809FCEF21D14769341E8B2BC0CA2BF41737A"
    "381F0211DFEE131DA4AECFE92079798C0ECBCF65D0B40A0D0E9141E9B1080ABBC9A073990ECABFEB7290BC3C4"
    "687E5E73219144ECBE9E976796594168BA06199CD1E82E86FD0B0CC660F41EDB47B0E3281A6CDE97C659497CB"
    "2072981E06D1DFA0FABC0C0ABBF3F474BBEC02514D4350180E67E75DA06199CD060D01"
)
# TestSmsStatusReports: a generic modem's report in PDU mode, a ZTE's (status missing), and a
# text-mode report with an empty status.
PDU_REPORT = "07917248014000F506B70AA18092020000317071518590803170715185418000"
ZTE_REPORT = "0297F1061C0F910B487228297020F5317062419272803170624192138000"
TEXT_REPORT = '+CMGR: ,6,20,"0870000000",129,"13/04/29,19:58:00+04","13/04/29,19:59:00+04",0'


class PublishedAnswerTests(unittest.TestCase):
    def test_text_mode_read(self) -> None:
        stored = read_message([TEXT_CMGL[0].replace("+CMGL: 0,", "+CMGR: "), TEXT_CMGL[1]], True)
        assert stored is not None and isinstance(stored.tpdu, Deliver)
        self.assertEqual(stored.status, 0)
        self.assertEqual(str(stored.tpdu.originator), "+27748577604")
        self.assertEqual(stored.tpdu.timestamp, datetime(2013, 1, 28, 14, 51, 42, tzinfo=zone(2)))
        self.assertEqual(stored.tpdu.body, "Hello raspberry pi")

    def test_text_mode_listing_indexes(self) -> None:
        self.assertEqual(listed_indexes(TEXT_CMGL), [0, 1])

    def test_pdu_mode_listing_and_reads(self) -> None:
        lines = ["+CMGL: 0,0,,35", PDU_HELLO, "+CMGL: 1,1,,161", PDU_CELLC]
        self.assertEqual(listed_indexes(lines), [0, 1])
        hello = read_message(["+CMGR: 0,,35", PDU_HELLO], False)
        assert hello is not None and isinstance(hello.tpdu, Deliver)
        self.assertEqual((str(hello.tpdu.originator), hello.tpdu.body), (
            "+27748577604", "Hello raspberry pi"))  # fmt: skip
        self.assertEqual(hello.tpdu.timestamp, datetime(2013, 1, 28, 14, 51, 42, tzinfo=zone(2)))
        cellc = read_message(["+CMGR: 1,,161", PDU_CELLC], False)
        assert cellc is not None and isinstance(cellc.tpdu, Deliver)
        self.assertEqual(cellc.status, 1)
        self.assertEqual(str(cellc.tpdu.originator), "+2784000153099999")
        self.assertEqual(cellc.tpdu.body, TEXT_CMGL[3])
        self.assertEqual(cellc.tpdu.timestamp, datetime(2013, 2, 7, 1, 31, 44, tzinfo=zone(2)))

    def test_pdu_mode_status_report(self) -> None:
        stored = read_message(["+CMGR: 0,,24", PDU_REPORT], False)
        assert stored is not None and isinstance(stored.tpdu, StatusReport)
        report = stored.tpdu
        self.assertEqual((report.recipient.number, report.reference, report.status), (
            "0829200000", 183, 0))  # fmt: skip
        self.assertEqual(report.timestamp, datetime(2013, 7, 17, 15, 58, 9, tzinfo=zone(2)))
        self.assertEqual(report.discharge, datetime(2013, 7, 17, 15, 58, 14, tzinfo=zone(2)))

    def test_zte_report_without_its_status_field(self) -> None:
        stored = read_message(["+CMGR: ,,27", ZTE_REPORT], False)
        assert stored is not None and isinstance(stored.tpdu, StatusReport)
        self.assertEqual((stored.status, stored.tpdu.reference), (0, 28))

    def test_text_mode_status_report_with_an_empty_status(self) -> None:
        stored = read_message([TEXT_REPORT], True)
        assert stored is not None and isinstance(stored.tpdu, StatusReport)
        report = stored.tpdu
        self.assertEqual((str(report.recipient), report.reference, report.status), (
            "0870000000", 20, 0))  # fmt: skip
        self.assertEqual(report.timestamp, datetime(2013, 4, 29, 19, 58, tzinfo=zone(1)))
        self.assertEqual(report.discharge, datetime(2013, 4, 29, 19, 59, tzinfo=zone(1)))

    def test_routed_text_mode_message_and_report(self) -> None:
        # The +CMT and +CDS lines of tests.channels.modem.test_at (python-gsmmodem's).
        deliver = routed_message(
            '"+31628870634",,"11/01/09,10:26:26+04"', "This is text message 2", True
        )
        self.assertEqual((str(deliver.originator), deliver.body), (
            "+31628870634", "This is text message 2"))  # fmt: skip
        report = routed_report(
            '6,46,"+31628870634",145,"11/01/09,10:26:26+04","11/01/09,10:26:30+04",0', None, True
        )
        self.assertEqual((report.reference, str(report.recipient)), (46, "+31628870634"))

    def test_routed_pdu_report(self) -> None:
        report = routed_report("24", PDU_REPORT, False)
        self.assertEqual(report.reference, 183)


class HelperTests(unittest.TestCase):
    def test_sent_reference(self) -> None:
        self.assertEqual(sent_reference(["+CMGS: 183"]), 183)
        self.assertEqual(sent_reference(["", '+CMGS: 7,"13/04/29,19:58:00+04"']), 7)
        self.assertRaises(FrameError, sent_reference, ["OK"])

    def test_memory_usage(self) -> None:
        # The Wavecom answer recorded in tests.channels.modem.published (python-gsmmodem's).
        usage = memory_usage(['+CPMS: "SM",14,50,"SM",14,50,"SM",50,50'])
        self.assertEqual([(u.memory, u.used, u.total, u.full) for u in usage], [
            ("SM", 14, 50, False), ("SM", 14, 50, False), ("SM", 50, 50, True)])  # fmt: skip

    def test_indicator_index(self) -> None:
        line = '+CIND: ("battchg",(0-5)),("signal",(0-5)),("service",(0,1)),("smsfull",(0,1))'
        self.assertEqual(indicator_index([line], "smsfull"), 4)
        self.assertIsNone(indicator_index([line], "roam"))

    def test_new_message_slot(self) -> None:
        self.assertEqual(new_message_slot('"ME",12'), ("ME", 12))
        self.assertRaises(FrameError, new_message_slot, '"SM"')

    def test_timestamps(self) -> None:
        self.assertEqual(
            parse_text_timestamp('"07/04/12,23:25:42-32"'),
            datetime(2007, 4, 12, 23, 25, 42, tzinfo=zone(-8)),
        )
        self.assertEqual(parse_text_timestamp("99/12/31,23:59:59").year, 1999)
        self.assertRaises(FrameError, parse_text_timestamp, "24/13/01,00:00:00+00")

    def test_text_body_only_for_what_text_mode_can_carry(self) -> None:
        self.assertEqual(text_body("Zähler @ 1"), b"Z{hler \x00 1")
        self.assertIsNone(text_body("€ 5"))  # extension table: the escape would cancel
        self.assertIsNone(text_body("两"))
        self.assertIsNone(text_body("two\nlines"))
        self.assertIsNone(text_body("x" * 161))

    def test_quoted_number(self) -> None:
        self.assertEqual(quoted_number(Address.parse("+4915")), '"+4915",145')
        self.assertEqual(quoted_number(Address.parse("0151")), '"0151",129')

    def test_empty_slot_reads_as_none(self) -> None:
        self.assertIsNone(read_message([], False))

    def test_stored_submit_is_read_as_submit(self) -> None:
        (submit,) = submit_parts("+4915", "draft")
        from fep.channels.modem.pdu import encode_pdu

        pdu = encode_pdu(submit)
        stored = read_message([f"+CMGR: 2,,{len(pdu) - 1}", pdu.hex()], False)
        assert stored is not None
        self.assertIsInstance(stored.tpdu, Submit)
        self.assertEqual(stored.tpdu, Submit(Address.parse("+4915"), UserData("draft")))


class ArbitraryLinesTests(unittest.TestCase):
    @given(st.lists(st.text(max_size=60), max_size=4), st.booleans())
    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_arbitrary_answers_read_or_raise_frame_error(
        self, lines: list[str], text: bool
    ) -> None:
        for candidate in (lines, ["+CMGR: " + "".join(lines[:1]), *lines[1:]]):
            try:
                read_message(candidate, text)
            except FrameError:
                pass
        for function in (listed_indexes, memory_usage, sent_reference):
            try:
                function(lines)
            except FrameError:
                pass

    @given(st.text(max_size=80), st.none() | st.text(max_size=80), st.booleans())
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_arbitrary_indications_decode_or_raise_frame_error(
        self, value: str, body: str | None, text: bool
    ) -> None:
        for function in (routed_message, routed_report):
            try:
                function(value, body, text)
            except FrameError:
                pass
        try:
            new_message_slot(value)
        except FrameError:
            pass
