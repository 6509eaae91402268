"""GPRS terminal profiles (etc/terminals, fep.channels.terminals): parsing with errors naming
file, section and key; the texts and lines a change becomes; and the AT pass-through
(fep.channels.terminal_session) against the simulated terminal (fep.sim.terminal) of every
shipped profile, in memory on a fake clock: the terminal applies the change and restarts, a
wrong password is refused with its answer, silence times out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial import unittest

from fep.channels.terminal_session import PassThrough, TerminalRefused
from fep.channels.terminals import (
    TerminalChange,
    load_profiles,
    parse_change,
    parse_profile,
    shipped_profiles,
)
from fep.errors import ChannelError, ConfigError
from fep.sim.gprs_modem import ModemConnection, ModemSpec, SimulatedGprsModem
from fep.sim.gsm_modem import SentMessage
from fep.sim.terminal import SimulatedTerminal

MINIMAL = """
[terminal]
password = yes
[sms]
text = {password}:{commands}
[setting.server]
sms = SRV={host},{port}
"""


class ProfileTests(unittest.TestCase):
    def test_the_shipped_profiles_take_every_setting(self) -> None:
        profiles = shipped_profiles()
        self.assertEqual(sorted(profiles), ["generic-at-sms", "generic-pwd-sms"])
        for profile in profiles.values():
            self.assertEqual(profile.takes,
                             ("apn", "host", "port", "host2", "port2", "heartbeat", "mode"))
            self.assertIsNotNone(profile.sms)
            self.assertIsNotNone(profile.tcp)

    def test_texts_and_lines_of_a_change(self) -> None:
        at, pwd = shipped_profiles()["generic-at-sms"], shipped_profiles()["generic-pwd-sms"]
        change = TerminalChange(apn="m2m.example", host="10.1.2.3", port=4070, heartbeat=120)
        self.assertEqual(at.sms_texts(change, "123456"), [
            "123456,AT+APN=m2m.example;AT+SERVER=10.1.2.3,4070;AT+HEART=120;AT+RESET"])
        self.assertEqual(at.tcp_lines(change, "123456"), [
            "AT+APN=m2m.example", "AT+SERVER=10.1.2.3,4070", "AT+HEART=120", "AT+RESET"])
        self.assertEqual(pwd.sms_texts(change, "123456"), [
            "#PWD123456#APN=m2m.example#IP=10.1.2.3#PORT=4070#HEART=120#RESET#"])
        self.assertEqual(pwd.tcp_lines(change, "9"), [
            "#PWD9#APN=m2m.example#", "#PWD9#IP=10.1.2.3#PORT=4070#", "#PWD9#HEART=120#",
            "#PWD9#RESET#"])

    def test_a_long_change_is_split_over_texts_each_with_the_password(self) -> None:
        profile = parse_profile(MINIMAL.replace("[sms]", "[sms]\nmax_length = 30") +
                                "[setting.apn]\nsms = APN={apn}\n", "tiny")
        texts = profile.sms_texts(TerminalChange(apn="a" * 20, host="h", port=1), "pw")
        self.assertEqual(texts, ["pw:SRV=h,1", "pw:APN=" + "a" * 20])

    def test_requests_are_checked_naming_the_parameter(self) -> None:
        at = shipped_profiles()["generic-at-sms"]
        self.assertEqual(parse_change({"port": "4071", "host": "fep.example", "via": "tcp"}),
                         (TerminalChange(host="fep.example", port=4071), "tcp"))
        for params, key in (
            ({"port": "70000", "host": "h"}, "port"),
            ({"host": "a;AT+RESET", "port": "1"}, "host"),
            ({"apn": "x", "via": "fax"}, "via"),
            ({"via": "sms"}, "params"),
            ({"heartbeat": "soon"}, "heartbeat"),
        ):
            with self.assertRaises(ConfigError) as caught:
                parse_change(params)
            self.assertEqual(caught.exception.key, key, params)
        with self.assertRaises(ConfigError) as caught:
            at.check(TerminalChange(port=4071), "sms")
        self.assertEqual(caught.exception.key, "host")
        self.assertIn("sets host, port together", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            at.check(TerminalChange(mode="fast"), "sms")
        self.assertEqual(caught.exception.key, "mode")
        tiny = parse_profile(MINIMAL, "tiny")
        with self.assertRaises(ConfigError) as caught:
            tiny.check(TerminalChange(apn="x"), "sms")
        self.assertIn("has no setting apn", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            tiny.check(TerminalChange(host="h", port=1), "tcp")
        self.assertEqual(caught.exception.key, "via")

    def test_errors_name_file_section_and_key(self) -> None:
        cases = [
            (MINIMAL + "[setting.x]\nsms = X={colour}\n", "setting.x", "sms", "{colour}"),
            (MINIMAL + "[setting.x]\nsms = X={apn}\nfax = 1\n", "setting.x", "fax",
             "unknown key"),
            (MINIMAL.replace("{password}:", ""), "sms", "text", "{password}"),
            (MINIMAL + "[tcp]\nlogin = PWD={password}\nok = (\n", "tcp", "ok",
             "regular expression"),
            (MINIMAL + "[tcp]\nlogin = PWD={password}\nguard = soon\n", "tcp", "guard",
             "not a number"),
            (MINIMAL + "[tcp]\nline = {command}\n", "tcp", "login", "password"),
            (MINIMAL + "[setting.again]\nsms = P={port}\n", "setting.again", None,
             "set by two sections"),
            (MINIMAL + "[extra]\n", "extra", None, "unknown section"),
            (MINIMAL.replace("password = yes", "password = perhaps"), "terminal", "password",
             "yes or no"),
        ]
        for text, section, key, words in cases:
            with self.assertRaises(ConfigError) as caught:
                parse_profile(text, "bad", "/etc/fep/terminals/bad.ini")
            e = caught.exception
            self.assertEqual((e.file, e.section, e.key), ("/etc/fep/terminals/bad.ini",
                                                          section, key), text)
            self.assertIn(words, str(e))

    def test_a_directory_of_ones_own_replaces_a_shipped_profile(self) -> None:
        mine = Path(self.mktemp())
        mine.mkdir()
        (mine / "generic-at-sms.ini").write_text(MINIMAL)
        (mine / "acme-x1.ini").write_text(MINIMAL)
        profiles = load_profiles([mine])
        self.assertEqual(sorted(profiles), ["acme-x1", "generic-at-sms", "generic-pwd-sms"])
        self.assertEqual(profiles["generic-at-sms"].takes, ("host", "port"))
        with self.assertRaises(ConfigError) as caught:
            load_profiles([mine / "missing"])
        self.assertEqual(caught.exception.key, "terminal_profiles")


class Session:
    """fep's pass-through and a simulated terminal's session joined in memory."""

    def __init__(self, testcase: unittest.TestCase, name: str, password: str,
                 answering: bool = True) -> None:
        self.clock = Clock()
        self.profile = shipped_profiles()[name]
        modem = SimulatedGprsModem(self.clock, None, ModemSpec("356938035649002"))
        self.terminal = SimulatedTerminal(self.clock, modem, self.profile, "s3cret",
                                          port=4070, endpoint_for=self._endpoint)
        self.connection = ModemConnection(modem)
        modem.connection = self.connection
        if not answering:
            modem.intercept = lambda connection, data: True
        self.dialled: list[tuple[str, int]] = []
        self.password = password

    def _endpoint(self, host: str, port: int) -> Any:
        self.dialled.append((host, port))
        return _Nowhere()

    def run(self, change: TerminalChange) -> Deferred[list[str]]:
        assert self.profile.tcp is not None
        protocol = PassThrough(self.clock, self.profile.tcp, self.password,
                               self.profile.tcp_lines(change, self.password), "gprs:imei=1")
        server = iosim.FakeTransport(self.connection, isServer=True)
        client = iosim.FakeTransport(protocol, isServer=False)
        pump = iosim.connect(self.connection, server, protocol, client, greet=False)
        for _ in range(200):
            pump.flush()
            self.clock.advance(0.25)
        return protocol.done


class _Abrupt(Protocol):
    """Answers OK to everything and closes its session at AT+RESET without a word."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        if b"AT+RESET" in data:
            self.transport.loseConnection()
        else:
            self.transport.write(b"\r\nOK\r\n")


class _Nowhere:
    def connect(self, factory: Any) -> Deferred[Any]:
        return Deferred()  # never answers: the test looks at where it dialled


class PassThroughTests(unittest.TestCase):
    def test_each_shipped_profile_sets_the_terminal_and_it_dials_the_new_address(self
                                                                                  ) -> None:
        for name in ("generic-at-sms", "generic-pwd-sms"):
            session = Session(self, name, "s3cret")
            change = TerminalChange(host="10.9.8.7", port=4071, host2="10.9.8.8", port2=4072,
                                    heartbeat=90)
            answers = self.successResultOf(session.run(change))
            self.assertEqual(len(answers), len(session.profile.tcp_lines(change, "x")) + (
                1 if session.profile.tcp and session.profile.tcp.login else 0), name)
            self.assertEqual(session.terminal.applied[-1][0], "tcp")
            self.assertEqual(session.terminal.settings["port"], 4071)
            self.assertEqual(session.terminal.settings["port2"], 4072)
            self.assertEqual(session.terminal.settings["heartbeat"], 90)
            self.assertEqual(session.terminal.restarts, 1)
            self.assertEqual(session.dialled, [("10.9.8.7", 4071)], name)

    def test_a_wrong_password_is_refused_with_the_terminals_answer(self) -> None:
        for name, step, answer in (("generic-at-sms", "login", "ERROR"),
                                   ("generic-pwd-sms", "command 1", "PASSWORD ERROR")):
            session = Session(self, name, "wrong")
            failure = self.failureResultOf(session.run(TerminalChange(apn="x")),
                                           TerminalRefused)
            self.assertEqual((failure.value.step, failure.value.answer), (step, answer))
            self.assertEqual(session.terminal.restarts, 0)
            self.assertEqual(session.terminal.settings["apn"], "internet")
            self.assertEqual(session.terminal.refused, [("tcp", "wrong password")])
            # After a refusal fep leaves configuration mode (AT+ENTM): the meter is reached.
            self.assertFalse(session.terminal._config_mode)

    def test_a_terminal_that_restarts_without_answering_is_done(self) -> None:
        clock = Clock()
        profile = shipped_profiles()["generic-at-sms"]
        assert profile.tcp is not None
        for restarts, ends in ((True, "done"), (False, "failed")):
            fep = PassThrough(clock, profile.tcp, "pw", ["AT+HEART=60", "AT+RESET"], "gprs:x",
                              restarts=restarts)
            dtu = _Abrupt()
            pump = iosim.connect(dtu, iosim.FakeTransport(dtu, isServer=True), fep,
                                 iosim.FakeTransport(fep, isServer=False), greet=False)
            for _ in range(20):
                pump.flush()
                clock.advance(0.25)
            if ends == "done":
                self.assertEqual(self.successResultOf(fep.done),
                                 ["OK", "OK", "(session closed: restarting)"])
            else:
                failure = self.failureResultOf(fep.done, ChannelError)
                self.assertIn("session ended while waiting for command 2",
                              str(failure.value))

    def test_silence_times_out_naming_the_step(self) -> None:
        session = Session(self, "generic-at-sms", "s3cret", answering=False)
        failure = self.failureResultOf(session.run(TerminalChange(apn="x")), ChannelError)
        self.assertIn("did not answer the escape sequence within 10 s", str(failure.value))


class SmsTextTests(unittest.TestCase):
    """The simulated terminal reads a profile's texts back."""

    def text(self, name: str, body: str) -> tuple[SimulatedTerminal, list[str]]:
        clock = Clock()
        modem = SimulatedGprsModem(clock, None, ModemSpec("356938035649003"))
        terminal = SimulatedTerminal(clock, modem, shipped_profiles()[name], "s3cret",
                                     endpoint_for=lambda h, p: _Nowhere())
        replies: list[str] = []
        terminal._reply = lambda to, text: replies.append(text)  # type: ignore[method-assign]
        terminal._text(SentMessage("+4917000", "+4915100", body, ()))
        clock.advance(1)
        return terminal, replies

    def test_each_profile_round_trips(self) -> None:
        change = TerminalChange(apn="m2m", host="10.0.0.1", port=5000, mode="transparent")
        at = shipped_profiles()["generic-at-sms"]
        [body] = at.sms_texts(change, "s3cret")
        terminal, replies = self.text("generic-at-sms", body)
        self.assertEqual(replies, ["OK"])
        self.assertEqual(terminal.applied, [("sms", {"apn": "m2m", "host": "10.0.0.1",
                                                     "port": 5000, "mode": "transparent"})])
        self.assertEqual(terminal.dialled, [("10.0.0.1", 5000)])
        pwd = shipped_profiles()["generic-pwd-sms"]
        [body] = pwd.sms_texts(TerminalChange(host="10.0.0.2", port=5001, mode="udp"), "s3cret")
        terminal, replies = self.text("generic-pwd-sms", body)
        self.assertEqual(replies, ["OK"])
        self.assertEqual(terminal.settings["port"], 5001)

    def test_a_wrong_password_is_answered_and_nothing_changes(self) -> None:
        at = shipped_profiles()["generic-at-sms"]
        [body] = at.sms_texts(TerminalChange(apn="m2m"), "guess")
        terminal, replies = self.text("generic-at-sms", body)
        self.assertEqual(replies, ["PASSWORD ERROR"])
        self.assertEqual((terminal.applied, terminal.restarts), ([], 0))
        self.assertIs(at.sms and at.sms.verdict(replies[0]), False)


class DialTests(unittest.TestCase):
    def test_the_second_master_station_when_the_first_does_not_answer(self) -> None:
        clock = Clock()
        modem = SimulatedGprsModem(clock, None, ModemSpec("356938035649004"))
        dialled: list[tuple[str, int]] = []

        def endpoint(host: str, port: int) -> Any:
            dialled.append((host, port))
            return _Refusing() if port == 4071 else _Nowhere()

        terminal = SimulatedTerminal(clock, modem, shipped_profiles()["generic-at-sms"],
                                     "s3cret", endpoint_for=endpoint)
        terminal._reply = lambda to, text: None  # type: ignore[method-assign]
        [body] = shipped_profiles()["generic-at-sms"].sms_texts(
            TerminalChange(host="10.0.0.1", port=4071, host2="10.0.0.2", port2=4072), "s3cret")
        terminal._text(SentMessage("+4917000", "+4915100", body, ()))
        clock.advance(1)
        self.assertEqual(dialled, [("10.0.0.1", 4071), ("10.0.0.2", 4072)])
        self.assertEqual(terminal.dialled, dialled)


class _Refusing:
    def connect(self, factory: Any) -> Deferred[Any]:
        from twisted.internet.error import ConnectionRefusedError

        d: Deferred[Any] = Deferred()
        d.errback(ConnectionRefusedError())
        return d


class AnswerFuzzTests(unittest.TestCase):
    """Whatever a terminal sends, the dialogue neither raises nor keeps more than its bound."""

    def test_any_bytes(self) -> None:
        from hypothesis import given, settings
        from hypothesis import strategies as st
        from twisted.internet.testing import StringTransport

        from fep.channels.terminal_session import MAX_BUFFER

        profile = shipped_profiles()["generic-at-sms"]
        assert profile.tcp is not None
        tcp = profile.tcp

        @settings(max_examples=200, deadline=None)
        @given(st.lists(st.binary(max_size=3000), max_size=8))
        def run(chunks: list[bytes]) -> None:
            clock = Clock()
            fep = PassThrough(clock, tcp, "pw", ["AT+HEART=60", "AT+RESET"], "gprs:x")
            fep.makeConnection(StringTransport())
            clock.advance(tcp.guard)
            for chunk in chunks:
                fep.dataReceived(chunk)
                self.assertLessEqual(len(fep._buffer), MAX_BUFFER)
            clock.advance(tcp.answer_timeout * 10)
            self.assertTrue(fep.done.called)
            fep.done.addErrback(lambda f: f.trap(ChannelError))

        run()
