"""The sans-IO AT engine: recorded real-modem answers, echo and result-code modes, unsolicited
codes, body prompts, online data and escape, timeouts, profiles, and arbitrary bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.channels.modem.at import (
    ESCAPE,
    PROFILES,
    AtEngine,
    CarrierLost,
    Command,
    Data,
    Deadline,
    Noise,
    Output,
    Response,
    ResultCode,
    State,
    TimedOut,
    Transmit,
    Unsolicited,
    basic_commands,
    format_info,
    format_result,
    modem_profile,
    split_params,
)
from fep.channels.modem.error_codes import cme_code, cme_meaning, cms_meaning
from fep.errors import ChannelError, ConfigError
from tests.channels.modem.published import (
    CMGS_ANSWER_WITH_REPORT,
    CMGS_PROMPT,
    DIALOGUES,
    ZTE_CMGS_AFTER_BODY,
    ZTE_CMGS_BEFORE_PROMPT,
)
from tests.scale import examples


def of(outputs: list[Output], kind: type) -> list:
    return [o for o in outputs if isinstance(o, kind)]


def run(engine: AtEngine, text: str, answer: bytes, timeout: float = 5.0) -> list[Output]:
    out = engine.submit(Command(text, timeout))
    return out + engine.receive(answer)


class RecordedDialogueTests(unittest.TestCase):
    """python-gsmmodem's recorded answers of Wavecom, Huawei, ZTE, Qualcomm and Nokia modems
    (tests/channels/modem/published.py names the source)."""

    def check(self, echo: bool, chunk: int | None) -> None:
        for d in DIALOGUES:
            engine = AtEngine()
            out = engine.submit(Command(d.command))
            self.assertEqual(out, [Transmit(d.command.encode() + b"\r"), Deadline(5.0)])
            answer = (d.command.encode() + b"\r" if echo else b"") + d.answer
            pieces = [answer] if chunk is None else [
                answer[i:i + chunk] for i in range(0, len(answer), chunk)
            ]
            for piece in pieces:
                out += engine.receive(piece)
            urcs = tuple(u.name for u in of(out, Unsolicited))
            self.assertEqual(urcs, d.unsolicited, d)
            self.assertEqual(of(out, Noise), [], d)
            responses = of(out, Response)
            if d.final is None:
                self.assertEqual(responses, [], d)
                expired = engine.expire()
                self.assertEqual(expired[0], TimedOut(Command(d.command), d.lines), d)
                continue
            self.assertEqual(len(responses), 1, d)
            self.assertEqual(responses[0].result.line, d.final, d)
            self.assertEqual(responses[0].lines, d.lines, d)
            self.assertIn(Deadline(None), out, d)
            self.assertIs(engine.state, State.IDLE)

    def test_every_recorded_answer_parses_with_echo_off(self) -> None:
        self.check(echo=False, chunk=None)

    def test_every_recorded_answer_parses_with_echo_on(self) -> None:
        self.check(echo=True, chunk=None)

    def test_every_recorded_answer_parses_byte_by_byte(self) -> None:
        self.check(echo=True, chunk=1)

    def test_recorded_errors_carry_their_meaning(self) -> None:
        engine = AtEngine()
        [busy] = of(run(engine, "AT+CSCA?", b"\r\n+CME ERROR: 14\r\n"), Response)
        self.assertEqual((busy.code, busy.result.error), (ResultCode.CME_ERROR, 14))
        self.assertEqual(busy.result.meaning, "SIM busy")
        [smsc] = of(run(engine, "AT+CSCA?", b"\r\n+CMS ERROR: 330\r\n"), Response)
        self.assertEqual(smsc.result.describe(), "+CMS ERROR 330: SMSC address unknown")
        [zte] = of(run(engine, "AT+WIND?", b"\r\nCOMMAND NOT SUPPORT\r\n"), Response)
        self.assertIs(zte.code, ResultCode.ERROR)

    def test_zte_pdu_send_with_unsolicited_codes_around_the_prompt(self) -> None:
        engine = AtEngine()
        body = b"0011000B917248001064F30000AA05E8329BFD06"
        out = engine.submit(Command("AT+CMGS=18", 10.0, body))
        self.assertEqual(out, [Transmit(b"AT+CMGS=18\r"), Deadline(10.0)])
        self.assertIs(engine.state, State.PROMPT)
        out = engine.receive(b"AT+CMGS=18\r" + ZTE_CMGS_BEFORE_PROMPT)
        self.assertEqual([u.name for u in of(out, Unsolicited)], ["+ZDONR", "+ZPASR"])
        self.assertEqual(of(out, Transmit), [Transmit(body + b"\x1a")])
        self.assertIs(engine.state, State.BODY)
        out = engine.receive(body + b"\x1a" + ZTE_CMGS_AFTER_BODY)
        self.assertEqual([u.name for u in of(out, Unsolicited)], ["+ZDONR", "+ZPASR"] * 2)
        [response] = of(out, Response)
        self.assertEqual((response.code, response.lines), (ResultCode.OK, ("+CMGS: 5",)))

    def test_status_report_indication_after_the_send(self) -> None:
        engine = AtEngine(echo=False)
        engine.submit(Command('AT+CMGS="+27820001111"', 10.0, b"hello"))
        out = engine.receive(CMGS_PROMPT)
        self.assertEqual(out, [Transmit(b"hello\x1a")])
        out = engine.receive(CMGS_ANSWER_WITH_REPORT)
        [response] = of(out, Response)
        self.assertEqual(response.lines, ("+CMGS: 183",))
        [report] = of(out, Unsolicited)
        self.assertEqual((report.name, report.params), ("+CDSI", ("SM", "3")))


class ResultCodeTests(unittest.TestCase):
    def test_each_verbose_final_result_code(self) -> None:
        for line, code in [
            ("OK", ResultCode.OK), ("ERROR", ResultCode.ERROR),
            ("NO CARRIER", ResultCode.NO_CARRIER), ("NO DIALTONE", ResultCode.NO_DIALTONE),
            ("NO DIAL TONE", ResultCode.NO_DIALTONE), ("BUSY", ResultCode.BUSY),
            ("NO ANSWER", ResultCode.NO_ANSWER),
        ]:
            engine = AtEngine()
            [response] = of(run(engine, "ATDT5551234", f"\r\n{line}\r\n".encode()), Response)
            self.assertIs(response.code, code, line)
            self.assertIs(engine.state, State.IDLE)

    def test_numeric_result_codes_after_atv0(self) -> None:
        engine = AtEngine()
        # V0 takes effect for this command's own result code already.
        [response] = of(run(engine, "ATE0V0", b"ATE0V0\r0\r"), Response)
        self.assertTrue(response.ok)
        self.assertEqual((engine.echo, engine.verbose), (False, False))
        for number, code in [(b"7", ResultCode.BUSY), (b"6", ResultCode.NO_DIALTONE),
                             (b"8", ResultCode.NO_ANSWER), (b"3", ResultCode.NO_CARRIER),
                             (b"4", ResultCode.ERROR)]:
            [response] = of(run(engine, "ATD5551234", number + b"\r", 60), Response)
            self.assertIs(response.code, code)

    def test_numeric_connect_with_speed(self) -> None:
        engine = AtEngine(verbose=False)
        out = run(engine, "ATD5551234", b"12\rhello meter")
        [response] = of(out, Response)
        self.assertEqual((response.code, response.result.speed), (ResultCode.CONNECT, 9600))
        self.assertEqual(of(out, Data), [Data(b"hello meter")])

    def test_digits_are_information_in_verbose_mode(self) -> None:
        engine = AtEngine()
        [response] = of(run(engine, "ATI0", b"\r\n0\r\n\r\nOK\r\n"), Response)
        self.assertEqual((response.code, response.lines), (ResultCode.OK, ("0",)))

    def test_cme_error_given_as_text(self) -> None:
        engine = AtEngine()
        [response] = of(run(engine, "AT+CPIN?", b"\r\n+CME ERROR: SIM not inserted\r\n"),
                        Response)
        self.assertEqual(response.result.error, 10)
        self.assertEqual(response.result.meaning, "SIM not inserted")

    def test_error_tables(self) -> None:
        self.assertEqual(cme_meaning(11), "SIM PIN required")
        self.assertEqual(cme_meaning(107), "GPRS services not allowed")
        self.assertIn("unknown", cme_meaning(1234))
        self.assertEqual(cms_meaning(322), "memory full")
        self.assertEqual(cms_meaning(0xD0), "(U)SIM SMS storage full")
        self.assertIn("24.011", cms_meaning(17))
        self.assertIn("manufacturer", cms_meaning(513))
        self.assertEqual(cme_code("incorrect password"), 16)

    def test_format_result_both_modes(self) -> None:
        self.assertEqual(format_result(ResultCode.CONNECT, detail="9600"), b"\r\nCONNECT 9600\r\n")
        self.assertEqual(format_result(ResultCode.CONNECT, verbose=False, detail="9600"), b"12\r")
        self.assertEqual(format_result(ResultCode.BUSY, verbose=False), b"7\r")
        self.assertEqual(format_result(ResultCode.CMS_ERROR, error=322), b"\r\n+CMS ERROR: 322\r\n")
        self.assertEqual(format_info("+CSQ: 18,99", verbose=False), b"+CSQ: 18,99\r\n")


class QueueAndTimeoutTests(unittest.TestCase):
    def test_commands_go_out_one_at_a_time(self) -> None:
        engine = AtEngine()
        first = engine.submit(Command("ATZ"))
        second = engine.submit(Command("AT+CMEE=1", 2.0))
        self.assertEqual(first, [Transmit(b"ATZ\r"), Deadline(5.0)])
        self.assertEqual(second, [])
        self.assertEqual(engine.pending, 1)
        out = engine.receive(b"\r\nOK\r\n")
        self.assertEqual(out[1:], [Transmit(b"AT+CMEE=1\r"), Deadline(2.0)])
        out = engine.receive(b"\r\nOK\r\n")
        self.assertEqual(out[1:], [Deadline(None)])

    def test_timeout_moves_on_to_the_next_command(self) -> None:
        engine = AtEngine()
        engine.submit(Command("AT+CPIN?"))
        engine.submit(Command("AT"))
        engine.receive(b"\r\n+CPIN: READY\r\n")
        out = engine.expire()
        self.assertEqual(out, [TimedOut(Command("AT+CPIN?"), ("+CPIN: READY",)),
                               Transmit(b"AT\r"), Deadline(5.0)])

    def test_prompt_timeout_sends_escape_to_cancel(self) -> None:
        engine = AtEngine()
        engine.submit(Command("AT+CMGS=20", body=b"00"))
        out = engine.expire()
        self.assertEqual(out[0], Transmit(b"\x1b"))
        self.assertIsInstance(out[1], TimedOut)
        self.assertIs(engine.state, State.IDLE)

    def test_expire_when_idle_does_nothing(self) -> None:
        self.assertEqual(AtEngine().expire(), [])

    def test_reset_returns_the_abandoned_commands(self) -> None:
        engine = AtEngine()
        engine.submit(Command("AT"))
        engine.submit(Command("ATI"))
        self.assertEqual(engine.reset(), [Command("AT"), Command("ATI")])
        self.assertIs(engine.state, State.IDLE)

    def test_bad_commands_are_refused(self) -> None:
        for text in ("", "AT\r", "AT+CMGS=\n", "ATD\u20ac"):
            self.assertRaises(ValueError, Command, text)
        self.assertRaises(ValueError, Command, "AT", 0)
        self.assertRaises(ValueError, Command, "AT+CMGS=3", 5, b"a\x1ab")


class UnsolicitedTests(unittest.TestCase):
    def test_new_message_indication_between_commands(self) -> None:
        out = AtEngine().receive(b'\r\n+CMTI: "SM",3\r\n')
        self.assertEqual(out, [Unsolicited("+CMTI", '"SM",3', '+CMTI: "SM",3')])
        self.assertEqual(out[0].params, ("SM", "3"))

    def test_ring_during_a_command(self) -> None:
        engine = AtEngine()
        out = run(engine, "AT+CSQ", b"\r\nRING\r\n\r\n+CSQ: 20,0\r\n\r\nOK\r\n")
        self.assertEqual([u.name for u in of(out, Unsolicited)], ["RING"])
        self.assertEqual(of(out, Response)[0].lines, ("+CSQ: 20,0",))

    def test_registration_is_unsolicited_unless_asked_for(self) -> None:
        engine = AtEngine()
        out = run(engine, "AT+CSQ", b"\r\n+CREG: 1\r\n\r\n+CSQ: 20,0\r\n\r\nOK\r\n")
        self.assertEqual([u.line for u in of(out, Unsolicited)], ["+CREG: 1"])
        out = run(engine, "AT+CREG?", b"\r\n+CREG: 0,1\r\n\r\nOK\r\n")
        self.assertEqual(of(out, Unsolicited), [])
        self.assertEqual(of(out, Response)[0].lines, ("+CREG: 0,1",))

    def test_two_line_codes_carry_their_body(self) -> None:
        engine = AtEngine()
        out = engine.receive(b'\r\n+CMT: "+31628870634",,"11/01/09,10:26:26+04"\r\n'
                             b"This is text message 2\r\n")
        self.assertEqual([(u.name, u.body) for u in out],
                         [("+CMT", "This is text message 2")])
        out = engine.receive(b"\r\n+CDS: 25\r\n0791448720003023060A810107525252\r\n")
        self.assertEqual([(u.name, u.body) for u in out],
                         [("+CDS", "0791448720003023060A810107525252")])
        # Text-mode +CDS is one line.
        out = engine.receive(b'\r\n+CDS: 6,46,"+31628870634",145,"11/01/09,10:26:26+04",'
                             b'"11/01/09,10:26:30+04",0\r\n')
        self.assertEqual([(u.name, u.body, u.params[1]) for u in out], [("+CDS", None, "46")])

    def test_split_params_keeps_commas_inside_quotes(self) -> None:
        self.assertEqual(split_params('1,"a,b",,x'), ("1", "a,b", "", "x"))
        self.assertEqual(split_params(""), ())

    def test_stray_line_is_noise(self) -> None:
        engine = AtEngine()
        out = engine.receive(b"\r\nOK\r\n\r\nhello\r\n")
        self.assertEqual(out, [Noise(b"OK", "line outside any command"),
                               Noise(b"hello", "line outside any command")])
        self.assertEqual(engine.noise, 7)

    def test_overlong_line_is_dropped_as_noise(self) -> None:
        engine = AtEngine(max_line=16)
        out = engine.receive(b"x" * 40)
        self.assertEqual(out, [Noise(b"x" * 40, "line too long")])
        out = run(engine, "AT", b"\r\nOK\r\n")
        self.assertTrue(of(out, Response)[0].ok)


class OnlineTests(unittest.TestCase):
    def connected(self) -> tuple[AtEngine, list[Output]]:
        engine = AtEngine()
        out = run(engine, "ATDT5551234", b"ATDT5551234\r\r\nCONNECT 9600/V.32\r\n/ISK5\r\n", 60)
        return engine, out

    def test_connect_hands_over_the_rest_of_the_bytes_as_data(self) -> None:
        engine, out = self.connected()
        [response] = of(out, Response)
        self.assertEqual((response.code, response.result.detail, response.result.speed),
                         (ResultCode.CONNECT, "9600/V.32", 9600))
        self.assertEqual(of(out, Data), [Data(b"/ISK5\r\n")])
        self.assertIn(Deadline(None), out)
        self.assertIs(engine.state, State.ONLINE)
        self.assertEqual(engine.receive(b"OK\r\nNO CARRIER"), [Data(b"OK\r\nNO CARRIER")])

    def test_connect_line_end_split_over_two_reads(self) -> None:
        engine = AtEngine()
        run(engine, "ATD1", b"\r\nCONNECT\r", 60)
        self.assertEqual(engine.receive(b"\n\x02data"), [Data(b"\x02data")])

    def test_carrier_loss_while_online(self) -> None:
        engine, _ = self.connected()
        engine.submit(Command("ATH"))
        out = engine.receive(b"\x02meter data\r\nNO")
        self.assertEqual(out, [Data(b"\x02meter data\r\nNO")])
        out = engine.receive(b" CARRIER\r\n\r\nRING\r\n")
        self.assertEqual(out[0], CarrierLost("NO CARRIER"))
        self.assertIs(engine.state, State.COMMAND)
        self.assertEqual([u.name for u in of(out, Unsolicited)], ["RING"])
        self.assertIn(Transmit(b"ATH\r"), out)

    def test_escape_and_hang_up(self) -> None:
        engine, _ = self.connected()
        engine.submit(Command("ATH", 10.0))
        out = engine.escape(2.0)
        self.assertEqual(out, [Transmit(b"+++"), Deadline(2.0)])
        self.assertIs(engine.state, State.ESCAPING)
        out = engine.receive(b"late meter bytes\r\nOK\r\n")
        self.assertEqual(out[0], Data(b"late meter bytes"))
        self.assertEqual(out[1].command.text, ESCAPE.text)
        self.assertTrue(out[1].ok)
        self.assertEqual(out[2:], [Transmit(b"ATH\r"), Deadline(10.0)])
        [hung_up] = of(engine.receive(b"\r\nOK\r\n"), Response)
        self.assertTrue(hung_up.ok)

    def test_escape_timeout_leaves_the_line_online(self) -> None:
        engine, _ = self.connected()
        engine.escape()
        out = engine.expire()
        self.assertIsInstance(out[0], TimedOut)
        self.assertIs(engine.state, State.ONLINE)

    def test_escape_refused_when_not_online(self) -> None:
        self.assertRaises(ChannelError, AtEngine().escape)

    def test_carrier_detect_drop_reported_by_the_adapter(self) -> None:
        engine, _ = self.connected()
        self.assertEqual(engine.carrier_lost(), [CarrierLost("carrier detect dropped"),
                                                 Deadline(None)])
        self.assertEqual(AtEngine().carrier_lost(), [])


class ProfileTests(unittest.TestCase):
    def test_basic_commands_of_a_command_line(self) -> None:
        self.assertEqual(basic_commands("ATE0V1Q0X4"), ["E0", "V1", "Q0", "X4"])
        self.assertEqual(basic_commands("AT&C1&D2S0=0"), ["&C1", "&D2", "S0=0"])
        self.assertEqual(basic_commands("ATE1+CMEE=1"), ["E1"])
        self.assertEqual(basic_commands("ATDT0123,V0"), [])

    def test_every_profile_initialises_to_echo_off_verbose(self) -> None:
        for name, profile in PROFILES.items():
            engine = profile.engine()
            commands = profile.init_commands()
            out = engine.submit(commands[0])
            for command in commands[1:]:
                engine.submit(command)
            for command in commands:
                self.assertEqual(of(out, Transmit), [Transmit(command.encode())], name)
                out = engine.receive(command.encode() + b"\r\nOK\r\n" if engine.echo else
                                     b"\r\nOK\r\n")
                self.assertTrue(of(out, Response)[0].ok, name)
            self.assertEqual((engine.echo, engine.verbose), (False, True), name)

    def test_init_strings_replaced_from_configuration(self) -> None:
        profile = modem_profile("generic", ["ATZ", " AT&F ", ""])
        self.assertEqual(profile.init, ("ATZ", "AT&F"))

    def test_unknown_model_and_bad_init_are_config_errors(self) -> None:
        error = self.assertRaises(ConfigError, modem_profile, "nokia-3310")
        self.assertIn("generic", str(error))
        self.assertRaises(ConfigError, modem_profile, "generic", ["AT\u00e9"])


# -- hypothesis

LINES = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40
).filter(lambda s: s.strip() == s and s.upper() not in
         {"OK", "ERROR", "BUSY", "NO CARRIER", "NO ANSWER", "NO DIALTONE", "NO DIAL TONE",
          "COMMAND NOT SUPPORT", "RING"}
         and not s.upper().startswith(("CONNECT", "+CME ERROR", "+CMS ERROR"))
         and s.partition(":")[0].strip().upper() not in AtEngine().urc_names
         # a bare number is a result code in numeric mode; the echo is the command's text
         and not s.isdigit() and s.upper() != "AT+XYZ")
FINALS = st.sampled_from([ResultCode.OK, ResultCode.ERROR, ResultCode.BUSY,
                          ResultCode.NO_ANSWER, ResultCode.NO_DIALTONE, ResultCode.NO_CARRIER])


class HypothesisTests(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(lines=st.lists(LINES, max_size=5), final=FINALS, echo=st.booleans(),
           verbose=st.booleans(), cuts=st.lists(st.integers(1, 30), max_size=20))
    def test_rendered_answers_parse_back(self, lines, final, echo, verbose, cuts) -> None:
        engine = AtEngine(echo=echo, verbose=verbose)
        command = Command("AT+XYZ")
        out = engine.submit(command)
        wire = command.encode() if echo else b""
        wire += b"".join(format_info(line, verbose=verbose) for line in lines)
        wire += format_result(final, verbose=verbose)
        at = 0
        for cut in cuts:
            out += engine.receive(wire[at:at + cut])
            at += cut
        out += engine.receive(wire[at:])
        responses = of(out, Response)
        self.assertEqual(len(responses), 1)
        self.assertEqual((responses[0].code, responses[0].lines), (final, tuple(lines)))

    @settings(max_examples=examples(300), deadline=None)
    @given(st.lists(st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"\r\nOK\r\n", b"\r\nCONNECT 2400\r\n", b"> ", b"\r\nNO CARRIER\r\n",
                         b'\r\n+CMT: ,22\r\n', b"0\r", b"\x1a", b"\r\n+CME ERROR: x\r\n"]),
        st.just("submit"), st.just("body"), st.just("expire"), st.just("escape"),
        st.just("lost"),
    ), max_size=30))
    def test_arbitrary_bytes_never_raise(self, steps) -> None:
        engine = AtEngine(max_line=128)
        kinds = (Transmit, Deadline, Response, TimedOut, Unsolicited, Data, CarrierLost, Noise)
        for step in steps:
            if step == "submit":
                out = engine.submit(Command("ATD5551234", 60))
            elif step == "body":
                out = engine.submit(Command("AT+CMGS=5", 5, b"abc"))
            elif step == "expire":
                out = engine.expire()
            elif step == "escape":
                if engine.state is not State.ONLINE:
                    self.assertRaises(ChannelError, engine.escape)
                    continue
                out = engine.escape()
            elif step == "lost":
                out = engine.carrier_lost()
            else:
                out = engine.receive(step)
            for item in out:
                self.assertIsInstance(item, kinds)
            self.assertLessEqual(len(engine._buffer), 128 + 64)
