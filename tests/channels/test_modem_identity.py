"""Modem identity on the GPRS listeners (issue 14): a connection that claims the name of a
live session does not take it (policies ``keep`` and ``replace-when-silent``), proofs of
identity (a per-modem secret in the registration, source networks per listener), and a job
never talks to a session other than the one it was planned with."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv6Address
from twisted.internet.protocol import Factory
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from fep.channels.gprs import GprsSettings, gprs_settings
from fep.channels.identify import Identifier, encode_binary_registration, make_rules
from fep.channels.modem_identity import (
    SourceNetworks,
    modem_secret,
    parse_source_networks,
    proof_matches,
)
from fep.channels.routes import Channels
from fep.config import parse_config
from fep.errors import ChannelError, ConfigError
from fep.model import Meter
from tests.channels.test_gprs import (
    IMEI,
    OTHER_IMEI,
    Answering,
    ChannelTestCase,
    ModemTransport,
    PushingDlmsMeter,
    dlms_meter,
)

REGISTRATION = f"ID:{IMEI}\r\n".encode()
SECRET = "s3cr3t-Modem-9"


def events(observer: EventLoggingObserver, name: str) -> list[dict[str, Any]]:
    return [e for e in observer if e.get("event") == name]


class ConflictKeepTests(ChannelTestCase):
    """The default policy: the incumbent keeps its name; the newcomer is held, given
    nothing, and closed after the quarantine."""

    def setUp(self) -> None:
        super().setUp()
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.incumbent, self.incumbent_transport = self.connect(40001)
        self.incumbent.dataReceived(REGISTRATION)
        self.assertEqual(self.incumbent.state, "attached")

    def test_the_default_policy_is_keep(self) -> None:
        self.assertEqual(GprsSettings().conflict, "keep")

    def test_an_impostor_does_not_take_a_live_sessions_name(self) -> None:
        impostor, _transport = self.connect(40002)
        impostor.dataReceived(REGISTRATION)
        self.assertEqual(impostor.state, "contested")
        self.assertEqual(self.incumbent.state, "attached")
        self.assertFalse(self.incumbent_transport.disconnecting)
        self.assertIs(self.channel.registry.find([f"imei={IMEI}"]), self.incumbent)
        self.assertEqual(impostor.names, [])
        self.assertEqual(impostor.meters, [])
        self.assertEqual((self.channel.stats.conflicts, self.channel.stats.replaced), (1, 0))
        states = {i.peer: i.state for i in self.channel.sessions()}
        self.assertEqual(states, {"10.1.2.3:40001": "attached", "10.1.2.3:40002": "contested"})

    def test_the_impostor_is_closed_after_the_quarantine(self) -> None:
        impostor, transport = self.connect(40002)
        impostor.dataReceived(REGISTRATION)
        self.clock.advance(self.settings.conflict_quarantine - 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.aborted)
        self.assertEqual(self.channel.stats.conflicts_closed, 1)
        self.assertFalse(self.incumbent_transport.disconnecting)

    def test_the_impostors_pushes_are_not_stored(self) -> None:
        impostor, _ = self.connect(40002)
        impostor.dataReceived(REGISTRATION + PushingDlmsMeter().push())
        impostor.dataReceived(PushingDlmsMeter().push())
        self.assertEqual(self.sink.records, [])

    def test_the_next_pull_goes_to_the_incumbent_and_the_impostor_gets_nothing(self) -> None:
        impostor, impostor_transport = self.connect(40002)
        impostor.dataReceived(REGISTRATION)
        channels = Channels(self.clock)
        channels.register_scheme("gprs", self.channel.endpoint_for, backoff=False)
        endpoint = channels.endpoint_for(f"gprs:imei={IMEI}")
        job: Any = self.successResultOf(endpoint.connect(Factory.forProtocol(Answering)))
        job.transport.write(b"AARQ with the password")
        self.assertEqual(self.incumbent_transport.value(), b"AARQ with the password")
        self.assertEqual(impostor_transport.value(), b"")

    def test_even_a_silent_incumbent_keeps_its_name(self) -> None:
        self.clock.advance(100)
        impostor, _transport = self.connect(40002)
        impostor.dataReceived(REGISTRATION)
        self.assertEqual(impostor.state, "contested")
        self.assertIs(self.channel.registry.find([f"imei={IMEI}"]), self.incumbent)

    def test_the_conflict_is_logged_as_a_security_event_with_both_peers(self) -> None:
        impostor, _ = self.connect(40002)
        impostor.dataReceived(REGISTRATION)
        (event,) = events(self.logged, "gprs_identity_conflict")
        self.assertEqual((event["peer"], event["incumbent_peer"], event["policy"]),
                         ("10.1.2.3:40002", "10.1.2.3:40001", "keep"))
        self.assertEqual((event["modem"], event["meter"]), (f"imei={IMEI}", "dlms-1"))
        self.clock.advance(self.settings.conflict_quarantine)
        self.assertEqual(len(events(self.logged, "gprs_identity_conflict_closed")), 1)

    def test_an_unknown_quarantined_modems_name_is_not_taken_either(self) -> None:
        first, first_transport = self.connect(40003)
        first.dataReceived(f"ID:{OTHER_IMEI}\r\n".encode())
        self.assertEqual(first.state, "quarantined")
        second, _ = self.connect(40004)
        second.dataReceived(f"ID:{OTHER_IMEI}\r\n".encode())
        self.assertEqual((first.state, second.state), ("quarantined", "contested"))
        self.assertFalse(first_transport.disconnecting)

    def test_a_registration_is_not_made_for_a_contested_modem(self) -> None:
        self.channel.settings = GprsSettings(unknown="register")
        first, _ = self.connect(40003)
        first.dataReceived(f"ID:{OTHER_IMEI};SN=KFM77\r\n".encode())
        self.assertEqual(first.state, "attached")
        # A second claimant of an unknown modem's name (quarantined first, then it
        # would register): nothing is registered for it.
        self.channel.settings = GprsSettings(unknown="register")
        self.store.meters.clear()
        second, _ = self.connect(40004)
        second.dataReceived(f"ID:{OTHER_IMEI};SN=KFM77\r\n".encode())
        self.assertEqual(second.state, "contested")
        self.assertEqual(self.store.meters, [])


    def test_the_metrics_count_identity_events(self) -> None:
        from fep.operator.context import OperatorContext
        from fep.operator.metrics import FepCollector

        impostor, _ = self.connect(40002)
        impostor.dataReceived(REGISTRATION)
        self.clock.advance(self.settings.conflict_quarantine)
        ctx = OperatorContext(store=self.store, router=object(),  # type: ignore[arg-type]
                              directory=self.directory, sessions=self.channel)  # type: ignore[arg-type]
        (family,) = [f for f in FepCollector(ctx).families()
                     if f.name == "fep_gprs_identity_events"]
        counts = {s.labels["kind"]: s.value for s in family.samples}
        self.assertEqual((counts["conflicts"], counts["conflicts_closed"]), (1, 1))


class ConflictReplaceWhenSilentTests(ChannelTestCase):
    settings = GprsSettings(conflict="replace-when-silent", heartbeat_window=60.0,
                            idle_timeout=300.0)

    def setUp(self) -> None:
        super().setUp()
        self.incumbent, self.incumbent_transport = self.connect(40001)
        self.incumbent.dataReceived(REGISTRATION)

    def test_a_silent_incumbent_is_replaced_at_once(self) -> None:
        self.clock.advance(61)
        newcomer, _ = self.connect(40002)
        newcomer.dataReceived(REGISTRATION)
        self.assertEqual(newcomer.state, "attached")
        self.assertTrue(self.incumbent_transport.aborted)
        self.assertEqual((self.channel.stats.conflicts, self.channel.stats.replaced), (1, 1))

    def test_an_incumbent_that_answers_within_its_window_keeps_the_name(self) -> None:
        self.clock.advance(30)
        newcomer, transport = self.connect(40002)
        newcomer.dataReceived(REGISTRATION)
        self.assertEqual(newcomer.state, "contested")
        self.clock.advance(20)
        self.incumbent.dataReceived(b"\xfe")  # its heartbeat: it answers
        self.clock.advance(10)  # the window the newcomer waited for is over
        self.assertTrue(transport.aborted)
        self.assertEqual(self.incumbent.state, "attached")
        self.assertIs(self.channel.registry.find([f"imei={IMEI}"]), self.incumbent)
        self.assertEqual(self.channel.stats.conflicts_closed, 1)

    def test_an_incumbent_silent_through_its_window_is_replaced(self) -> None:
        self.clock.advance(30)
        newcomer, _ = self.connect(40002)
        push = PushingDlmsMeter().push()
        newcomer.dataReceived(REGISTRATION + push)
        self.clock.advance(29)
        self.assertEqual(newcomer.state, "contested")
        self.assertEqual(self.sink.records, [])
        self.clock.advance(1)
        self.assertEqual(newcomer.state, "attached")
        self.assertTrue(self.incumbent_transport.aborted)
        # What it sent while held is decoded once it is let in.
        self.assertEqual(len(self.sink.records), 5)

    def test_an_incumbent_gone_meanwhile_lets_the_newcomer_in(self) -> None:
        newcomer, _ = self.connect(40002)
        newcomer.dataReceived(REGISTRATION)
        self.incumbent.drop()
        self.incumbent.connectionLost()
        self.clock.advance(60)
        self.assertEqual(newcomer.state, "attached")

    def test_bad_policy_names_the_key(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            GprsSettings(conflict="newest")
        self.assertEqual(caught.exception.key, "conflict")


class ReplaceWhenSilentRoundingTests(ChannelTestCase):
    settings = GprsSettings(conflict="replace-when-silent", heartbeat_window=1.0,
                            idle_timeout=300.0)

    def test_the_end_of_the_window_decides_whatever_the_float_rounding(self) -> None:
        # Reactor times are floats: the moment the newcomer's wait ends can come out a hair
        # before "last heard + window" (here 0.05 + 1.0). The incumbent, silent since, has
        # not answered: it is replaced, the newcomer is not closed.
        self.clock.advance(0.05)
        incumbent, incumbent_transport = self.connect(40001)
        incumbent.dataReceived(REGISTRATION)
        self.clock.advance(0.29)
        newcomer, transport = self.connect(40002)
        newcomer.dataReceived(REGISTRATION)
        self.assertEqual(newcomer.state, "contested")
        timer = newcomer._contest_timer
        assert timer is not None
        self.clock.advance(timer.getTime() - self.clock.seconds())
        self.assertEqual(newcomer.state, "attached")
        self.assertFalse(transport.aborted)
        self.assertTrue(incumbent_transport.aborted)
        self.assertEqual(self.channel.stats.replaced, 1)


class SecretTests(ChannelTestCase):
    """A meter whose record names a modem secret: its modem must give it."""

    meters = (
        Meter("dlms-1", "dlms", f"gprs:imei={IMEI}",
              metadata={**dlms_meter().metadata, "modem_secret": SECRET}),
    )

    def setUp(self) -> None:
        super().setUp()
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def assert_refused(self, registration: bytes) -> None:
        session, transport = self.connect()
        session.dataReceived(registration)
        self.assertTrue(transport.aborted)
        self.assertEqual(session.names, [])
        self.assertEqual(self.channel.stats.proof_failed, 1)
        (event,) = events(self.logged, "gprs_proof_failed")
        self.assertEqual(event["peer"], "10.1.2.3:40001")

    def test_the_right_secret_attaches(self) -> None:
        session, _ = self.connect()
        session.dataReceived(f"ID:{IMEI};SECRET={SECRET}\r\n".encode())
        self.assertEqual(session.state, "attached")

    def test_no_secret_is_refused(self) -> None:
        self.assert_refused(REGISTRATION)

    def test_a_wrong_secret_is_refused(self) -> None:
        self.assert_refused(f"ID:{IMEI};SECRET=guess\r\n".encode())

    def test_the_binary_registration_carries_the_secret(self) -> None:
        session, _ = self.connect()
        session.dataReceived(encode_binary_registration(imei=IMEI, secret=SECRET))
        self.assertEqual(session.state, "attached")

    def test_a_refused_impostor_does_not_disturb_the_incumbent(self) -> None:
        incumbent, incumbent_transport = self.connect(40005)
        incumbent.dataReceived(f"ID:{IMEI};SECRET={SECRET}\r\n".encode())
        self.assert_refused(REGISTRATION)
        self.assertEqual(self.channel.stats.conflicts, 0)
        self.assertFalse(incumbent_transport.disconnecting)

    def test_the_secret_is_never_logged_nor_listed(self) -> None:
        session, _ = self.connect()
        session.dataReceived(f"ID:{IMEI};SECRET={SECRET}\r\n".encode())
        other, _ = self.connect(40002)
        other.dataReceived(f"ID:{IMEI};SECRET={SECRET}x\r\n".encode())
        self.assertTrue(len(self.logged) > 0)
        for event in self.logged:
            self.assertNotIn(SECRET, repr(event))
        assert session.identity is not None
        self.assertNotIn(SECRET, repr(session.identity))
        self.assertNotIn(SECRET, repr(self.channel.sessions()))
        self.assertEqual(session.identity.as_dict(), {"imei": IMEI})

    def test_a_secret_is_read_through_one_function(self) -> None:
        self.assertEqual(modem_secret(self.meters[0]), SECRET)
        self.assertIsNone(modem_secret(dlms_meter()))
        self.channel.secret_for = lambda meter: "from-a-vault"
        session, _ = self.connect()
        session.dataReceived(b"ID:%s;SECRET=from-a-vault\r\n" % IMEI.encode())
        self.assertEqual(session.state, "attached")

    def test_proof_matches(self) -> None:
        self.assertTrue(proof_matches(None, []))
        self.assertTrue(proof_matches("a", ["a", "a"]))
        self.assertFalse(proof_matches("a", ["a", "b"]))
        self.assertFalse(proof_matches(None, ["a"]))

    def test_identifier_keeps_the_secret_out_of_the_keys(self) -> None:
        identifier = Identifier(make_rules(["ascii", "binary"]))
        result = identifier.receive(f"ID:{IMEI};SN=KFM1;SECRET={SECRET}\r\n".encode())
        assert result is not None
        self.assertEqual(result.identity.keys, (("imei", IMEI), ("serial", "KFM1")))
        self.assertEqual(result.identity.proof, SECRET)


class SourceNetworkTests(ChannelTestCase):
    def test_a_peer_outside_the_listeners_networks_is_refused_before_any_byte(self) -> None:
        self.channel.settings = GprsSettings(
            allow=parse_source_networks("10.0.0.0/8 tcp:4070=192.168.0.0/16"))
        session, transport = self.connect()
        self.assertTrue(transport.aborted)
        self.assertEqual(self.channel.stats.source_refused, 1)
        session.dataReceived(REGISTRATION)
        self.assertEqual(session.names, [])

    def test_a_peer_inside_is_served(self) -> None:
        self.channel.settings = GprsSettings(allow=parse_source_networks("10.1.0.0/16"))
        session, _transport = self.connect()
        session.dataReceived(REGISTRATION)
        self.assertEqual(session.state, "attached")
        self.assertEqual(self.channel.stats.source_refused, 0)

    def test_networks_per_listener(self) -> None:
        allow = parse_source_networks("10.0.0.0/8, ssl:4071=100.64.0.0/10 ssl:4071=::1/128")
        self.assertTrue(allow.allows("tcp:4070", "10.1.2.3"))
        self.assertFalse(allow.allows("tcp:4070", "100.64.0.1"))
        self.assertTrue(allow.allows("ssl:4071", "100.64.0.1"))
        self.assertTrue(allow.allows("ssl:4071", "::1"))
        self.assertFalse(allow.allows("ssl:4071", "10.1.2.3"))
        self.assertTrue(allow.allows("tcp:4070", "::ffff:10.1.2.3"))
        self.assertTrue(SourceNetworks().allows("tcp:4070", "203.0.113.9"))
        self.assertFalse(allow.allows("tcp:4070", "?"))

    def test_ipv6_peers(self) -> None:
        self.channel.settings = GprsSettings(allow=parse_source_networks("2001:db8::/32"))
        session = self.factory.buildProtocol(IPv6Address("TCP", "2001:db8::5", 4000))
        assert session is not None
        transport = ModemTransport()
        transport.peerAddr = IPv6Address("TCP", "2001:db8::5", 4000)
        session.makeConnection(transport)
        self.assertFalse(transport.disconnecting)

    def test_bad_networks_name_the_key(self) -> None:
        with self.assertRaises(ValueError):
            parse_source_networks("10.0.0.300/8")
        with self.assertRaises(ValueError):
            parse_source_networks("=10.0.0.0/8")


class PlannedSessionTests(ChannelTestCase):
    """A job's endpoint is made when its attempt starts: every connect must find the
    session it was planned with, else nothing is sent."""

    settings = GprsSettings(conflict="replace-when-silent", heartbeat_window=60.0,
                            idle_timeout=300.0)

    def endpoint(self) -> Any:
        channels = Channels(self.clock)
        channels.register_scheme("gprs", self.channel.endpoint_for, backoff=False)
        return channels.endpoint_for(f"gprs:imei={IMEI}")

    def test_a_session_that_took_the_name_since_the_plan_gets_no_job(self) -> None:
        first, _ = self.connect(40001)
        first.dataReceived(REGISTRATION)
        endpoint = self.endpoint()
        self.clock.advance(61)
        second, second_transport = self.connect(40002)
        second.dataReceived(REGISTRATION)  # replaces the silent first session
        self.assertEqual(second.state, "attached")
        failure = self.failureResultOf(endpoint.connect(Factory.forProtocol(Answering)))
        failure.trap(ChannelError)
        self.assertIn("meter dlms-1", str(failure.value))
        self.assertIn("changed since the job was planned", str(failure.value))
        self.assertEqual(failure.value.route, f"gprs:imei={IMEI}")
        self.assertEqual(second_transport.value(), b"")
        self.assertEqual(self.channel.stats.changed_sessions, 1)

    def test_a_reconnect_after_the_session_ended_is_not_the_planned_session(self) -> None:
        first, _first_transport = self.connect(40001)
        first.dataReceived(REGISTRATION)
        endpoint = self.endpoint()
        first.drop()
        first.connectionLost()
        second, second_transport = self.connect(40002)
        second.dataReceived(REGISTRATION)
        self.failureResultOf(endpoint.connect(Factory.forProtocol(Answering)), ChannelError)
        self.assertEqual(second_transport.value(), b"")

    def test_every_connect_of_one_job_needs_the_same_session(self) -> None:
        # A load-profile job connects once per missing range.
        first, _first_transport = self.connect(40001)
        first.dataReceived(REGISTRATION)
        endpoint = self.endpoint()
        job: Any = self.successResultOf(endpoint.connect(Factory.forProtocol(Answering)))
        job.transport.loseConnection()
        self.clock.advance(0)
        self.clock.advance(61)
        second, second_transport = self.connect(40002)
        second.dataReceived(REGISTRATION)
        self.failureResultOf(endpoint.connect(Factory.forProtocol(Answering)), ChannelError)
        self.assertEqual(second_transport.value(), b"")

    def test_the_planned_session_serves(self) -> None:
        first, first_transport = self.connect(40001)
        first.dataReceived(REGISTRATION)
        endpoint = self.endpoint()
        job: Any = self.successResultOf(endpoint.connect(Factory.forProtocol(Answering)))
        job.transport.write(b"hello")
        self.assertEqual(first_transport.value(), b"hello")

    def test_without_a_session_at_plan_time_the_first_connect_pins_one(self) -> None:
        endpoint = self.endpoint()
        first, _ = self.connect(40001)
        first.dataReceived(REGISTRATION)
        job: Any = self.successResultOf(endpoint.connect(Factory.forProtocol(Answering)))
        job.transport.loseConnection()
        self.clock.advance(0)
        self.clock.advance(61)
        second, _ = self.connect(40002)
        second.dataReceived(REGISTRATION)
        self.failureResultOf(endpoint.connect(Factory.forProtocol(Answering)), ChannelError)


class ConfigTests(unittest.TestCase):
    def test_the_ini_keys_become_settings(self) -> None:
        text = ("[gprs]\nlisten = tcp:4070\nconflict = replace-when-silent\n"
                "heartbeat_window = 90\nconflict_quarantine = 5\n"
                "allow = 10.0.0.0/8 tcp:4070=192.168.1.0/24\n")
        settings = gprs_settings(parse_config("[fep]\n[store]\n" + text).gprs)
        self.assertEqual((settings.conflict, settings.heartbeat_window,
                          settings.conflict_quarantine), ("replace-when-silent", 90.0, 5.0))
        self.assertTrue(settings.allow.allows("tcp:4070", "192.168.1.7"))
        self.assertFalse(settings.allow.allows("tcp:4070", "10.0.0.1"))
        self.assertTrue(settings.allow.allows("tcp:4071", "10.0.0.1"))

    def test_defaults(self) -> None:
        settings = gprs_settings(parse_config("[fep]\n[store]\n[gprs]\nlisten = tcp:4070\n").gprs)
        self.assertEqual((settings.conflict, settings.heartbeat_window,
                          settings.conflict_quarantine), ("keep", 120.0, 30.0))
        self.assertEqual(settings.allow, SourceNetworks())

    def test_bad_values_name_the_key(self) -> None:
        for text, key in (("conflict = newest", "conflict"), ("allow = 10.0.0/33", "allow")):
            with self.assertRaises(ConfigError) as caught:
                parse_config(f"[fep]\n[store]\n[gprs]\nlisten = tcp:4070\n{text}\n")
            self.assertEqual(caught.exception.key, key)



