"""Modem dialects, sans-IO: answers without a final result code, unsolicited codes inside an
answer, the quirks table, and the readers of answers that differ between models
(AT+CPMS=?, AT+CNMI=?, AT+CGMI, AT+CFUN?), on recorded answers of real modems (sources named
per test; tests/fixtures/modems/README.md)."""

from __future__ import annotations

from twisted.trial import unittest

from fep.channels.modem.at import (
    AtEngine,
    Command,
    Deadline,
    Output,
    Response,
    ResultCode,
    TimedOut,
    Unsolicited,
)
from fep.channels.modem.dialects import (
    DIALECTS,
    GENERIC,
    choose_indications,
    choose_memories,
    dialect_for,
    identification,
    offered_indications,
    offered_memories,
    radio_off,
)


def of(outputs: list[Output], kind: type) -> list:
    return [o for o in outputs if isinstance(o, kind)]


class NoFinalResultTests(unittest.TestCase):
    """Wavecom Multiband 900E 1800 answers AT+CPIN? with "+CPIN: READY" and no OK
    (python-gsmmodem-new test/fakemodems.py)."""

    def test_known_dialect_ends_the_answer_at_its_line(self) -> None:
        engine = AtEngine()
        engine.submit(Command("AT+CPIN?", final_optional=0.0))
        out = engine.receive(b"\r\n+CPIN: READY\r\n")
        [response] = of(out, Response)
        self.assertEqual((response.code, response.lines), (ResultCode.OK, ("+CPIN: READY",)))
        self.assertTrue(response.result.implied)

    def test_unknown_dialect_waits_a_grace_then_implies_ok(self) -> None:
        engine = AtEngine()
        engine.submit(Command("AT+CPIN?", 5.0, final_optional=1.0))
        out = engine.receive(b"\r\n+CPIN: READY\r\n")
        self.assertEqual(out, [Deadline(1.0)])
        [response] = of(engine.expire(), Response)
        self.assertTrue(response.ok and response.result.implied)

    def test_a_modem_that_does_send_ok_is_answered_normally(self) -> None:
        engine = AtEngine()
        engine.submit(Command("AT+CPIN?", 5.0, final_optional=1.0))
        out = engine.receive(b"\r\n+CPIN: READY\r\n\r\nOK\r\n")
        [response] = of(out, Response)
        self.assertFalse(response.result.implied)

    def test_no_line_at_all_is_still_a_timeout(self) -> None:
        engine = AtEngine()
        engine.submit(Command("AT+CPIN?", 5.0, final_optional=1.0))
        self.assertIsInstance(engine.expire()[0], TimedOut)


class UnsolicitedInsideAnswersTests(unittest.TestCase):
    def test_huawei_rssi_between_the_lines_of_a_read(self) -> None:
        # gammu issues #126/#138: the E1752 reports "^RSSI:13" every few seconds.
        engine = AtEngine()
        engine.submit(Command("AT+CMGR=1"))
        out = engine.receive(
            b"\r\n+CMGR: 0,,24\r\n^RSSI:13\r\n"
            b"07917248014000F506B70AA18092020000317071518590803170715185418000\r\n"
            b"\r\n^BOOT:20952161,0,0,0,75\r\n\r\nOK\r\n"
        )
        self.assertEqual([u.name for u in of(out, Unsolicited)], ["^RSSI", "^BOOT"])
        [response] = of(out, Response)
        self.assertEqual(len(response.lines), 2)

    def test_a_dialects_own_code_is_taken_once_named(self) -> None:
        engine = AtEngine()
        engine.urc_names = engine.urc_names | {"^DSFLOWRPT"}
        engine.submit(Command("AT+CSQ"))
        out = engine.receive(b"\r\n^DSFLOWRPT:00000000,0,0\r\n+CSQ: 17,99\r\n\r\nOK\r\n")
        self.assertEqual([u.name for u in of(out, Unsolicited)], ["^DSFLOWRPT"])
        self.assertEqual(of(out, Response)[0].lines, ("+CSQ: 17,99",))

    def test_new_message_indication_inside_a_send(self) -> None:
        engine = AtEngine()
        engine.submit(Command("AT+CMGS=18", 10.0, b"00"))
        out = engine.receive(b"AT+CMGS=18\r\r\n+CMTI: \"SM\",4\r\n> ")
        out += engine.receive(b"00\x1a\r\n+CMGS: 7\r\n\r\nOK\r\n")
        self.assertEqual([u.value for u in of(out, Unsolicited)], ['"SM",4'])
        self.assertEqual(of(out, Response)[0].lines, ("+CMGS: 7",))


class EchoTests(unittest.TestCase):
    def test_echo_that_stays_on_after_ate0(self) -> None:
        # Siemens MC35i in gammu issue #97 echoes every command.
        engine = AtEngine()
        out = engine.submit(Command("ATE0"))
        out += engine.receive(b"ATE0\r\r\nOK\r\n")
        engine.submit(Command("AT+CGMM"))
        out += engine.receive(b"AT+CGMM\r\r\nMC35i\r\n\r\nOK\r\n")
        responses = of(out, Response)
        self.assertEqual([r.lines for r in responses], [(), ("MC35i",)])


class ErrorFormTests(unittest.TestCase):
    def test_numeric_and_verbose_forms_mean_the_same(self) -> None:
        engine = AtEngine()
        for answer in (b"\r\n+CMS ERROR: 330\r\n", b"\r\n+CMS ERROR: SMSC address unknown\r\n"):
            engine.submit(Command("AT+CMGS=18"))
            [response] = of(engine.receive(answer), Response)
            self.assertEqual(response.result.error, 330)
            self.assertEqual(response.result.describe(), "+CMS ERROR 330: SMSC address unknown")
        for answer in (b"\r\n+CME ERROR: 14\r\n", b"\r\n+CME ERROR: SIM busy\r\n"):
            engine.submit(Command("AT+CSCA?"))
            [response] = of(engine.receive(answer), Response)
            self.assertEqual(response.result.describe(), "+CME ERROR 14: SIM busy")

    def test_manufacturer_code_says_so(self) -> None:
        # Wavecom's "+CME ERROR: 515" after AT+CFUN=1 (python-gsmmodem-new fakemodems.py).
        engine = AtEngine()
        engine.submit(Command("AT+CMGF=0"))
        [response] = of(engine.receive(b"\r\n+CME ERROR: 515\r\n"), Response)
        self.assertIn("manufacturer-specific", response.result.describe())


class MemoryTests(unittest.TestCase):
    def test_forms_of_the_memory_list(self) -> None:
        cases = {
            # python-gsmmodem-new fakemodems.py: Huawei, ZTE, Qualcomm
            '+CPMS: ("ME","MT","SM","SR"),("ME","MT","SM","SR"),("ME","MT","SM","SR")':
                [("ME", "MT", "SM", "SR")] * 3,
            # Wavecom: two groups in an extra pair of parentheses
            '+CPMS: (("SM","BM","SR"),("SM"))': [("SM", "BM", "SR"), ("SM",)],
            # Nokia N79: none
            "+CPMS: (),(),()": [(), (), ()],
            # Siemens MC35i, gammu issue #97
            '+CPMS: ("MT","SM","ME"),("MT","SM","ME"),("MT","SM")':
                [("MT", "SM", "ME"), ("MT", "SM", "ME"), ("MT", "SM")],
            # Cinterion MC75i, gammu pull request #1207
            '+CPMS: ("ME","SM","MT"),("ME","SM","MT"),("SM","MT")':
                [("ME", "SM", "MT"), ("ME", "SM", "MT"), ("SM", "MT")],
            '+CPMS: "SM","ME"': [("SM", "ME")] * 3,
        }
        for line, expected in cases.items():
            self.assertEqual(offered_memories([line]), expected, line)
        self.assertIsNone(offered_memories(["OK"]))

    def test_choice_follows_what_is_offered(self) -> None:
        self.assertEqual(choose_memories([("SM", "BM", "SR"), ("SM",)], "SM"), ("SM", "SM"))
        self.assertEqual(choose_memories([("ME", "MT", "SM", "SR")] * 3, "ME"),
                         ("ME", "ME", "ME"))
        # MC75i: ME wanted, but not offered as the receive memory: SM there.
        self.assertEqual(
            choose_memories([("ME", "SM", "MT"), ("ME", "SM", "MT"), ("SM", "MT")], "ME"),
            ("ME", "ME", "SM"))
        # Wanted memory not offered at all: SM instead.
        self.assertEqual(choose_memories([("SM", "BM", "SR"), ("SM",)], "ME"), ("SM", "SM"))
        self.assertIsNone(choose_memories([(), (), ()], "SM"))


class IndicationTests(unittest.TestCase):
    def test_cinterion_mc75i_takes_only_bfr_1(self) -> None:
        # gammu pull request #1207: "+CNMI: (0-3),(0,1),(0,2,3),(0,2),(1)"; it refused the
        # fifth parameter 0 and accepted AT+CNMI=2,1,0,2,1.
        ranges = offered_indications(["+CNMI: (0-3),(0,1),(0,2,3),(0,2),(1)"])
        self.assertEqual(choose_indications(ranges or [], reports=True), "AT+CNMI=2,1,0,2,1")

    def test_common_ranges(self) -> None:
        # gammu issues #438 and #680: "+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)".
        ranges = offered_indications(["+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)"])
        self.assertEqual(choose_indications(ranges or [], reports=True), "AT+CNMI=2,1,0,2,0")
        self.assertEqual(choose_indications(ranges or [], reports=False), "AT+CNMI=2,1,0,0,0")

    def test_no_usable_mode_gives_none(self) -> None:
        self.assertIsNone(choose_indications([frozenset({0}), frozenset({0})], reports=True))
        self.assertIsNone(offered_indications(["ERROR"]))


class IdentificationTests(unittest.TestCase):
    def test_answers_as_models_give_them(self) -> None:
        self.assertEqual(identification([" WAVECOM MODEM"], "+CGMI"), "WAVECOM MODEM")
        self.assertEqual(identification([" MULTIBAND  900E  1800"], "+CGMM"),
                         "MULTIBAND 900E 1800")
        self.assertEqual(identification(["+CGMI: SIMCOM_Ltd"], "+CGMI"), "SIMCOM_Ltd")
        self.assertEqual(identification(["", "huawei"], "+CGMI"), "huawei")

    def test_quirks_table(self) -> None:
        self.assertEqual(dialect_for("WAVECOM MODEM", "MULTIBAND 900E 1800").name, "wavecom")
        self.assertTrue(dialect_for("WAVECOM MODEM", "").answers_without_final("AT+CPIN?"))
        self.assertEqual(dialect_for("QUALCOMM INCORPORATED", "M6280").name, "qualcomm-zte")
        self.assertTrue(dialect_for("ZTE INCORPORATED", "K3565-Z").csmp_clears_smsc)
        self.assertEqual(dialect_for("huawei", "E1752").name, "huawei")
        self.assertIs(dialect_for("SIEMENS", "MC35i"), GENERIC)
        for dialect in DIALECTS:
            self.assertTrue(dialect.source, dialect.name)

    def test_radio_state(self) -> None:
        self.assertTrue(radio_off(["+CFUN: 0"]))
        self.assertFalse(radio_off(["+CFUN: 1"]))
        # ZTE K3565-Z answers AT+CFUN? with ranges: not taken for off.
        self.assertFalse(radio_off(["+CFUN: (0-1,4-7),(0-1)"]))
