"""The Twisted DL/T 645 session: settings from the meter, timers and errors (MemoryReactorClock),
and whole reads over loopback TCP and a socat pty pair against the simulated meter bus:
values, a meter error, silence, garbage, damaged answers, follow-up frames, multidrop."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import alsoProvides, implementer
from zope.interface.verify import verifyObject

from fep.errors import ChannelError, ConfigError, SessionTimeout
from fep.interfaces import IMeterProtocol, IPushChannel
from fep.model import IntervalBlock, Meter, MeterEvent, ObisCode, Reading, Record
from fep.protocols.dlt645.client import DEFAULT_ITEMS_2007
from fep.protocols.dlt645.frames import FrameDecoder
from fep.protocols.dlt645.services import ErrorStatus, Unauthorized
from fep.protocols.dlt645.session import Dlt645Protocol, settings_for
from fep.sim.dlt645 import Dlt645BusFactory, SimulatedDlt645Meter, make_meters, serve_pty
from tests.channels.test_serialport import socat_pty_pair

reactor: Any = global_reactor

ROUTE = "tcp:host=10.0.0.7:port=8645"
ADDRESS = "000000123456"


def meter(address: str | None = ADDRESS, **metadata: str) -> Meter:
    return Meter(id="m1", protocol="dlt645", route=ROUTE, address=address, metadata=metadata)


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """Connects the factory's protocol to a StringTransport at once."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.protocol: Any = None

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        self.protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 0))
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)


@implementer(IStreamClientEndpoint)
class FailingEndpoint:
    def __init__(self, result: Deferred[Any]) -> None:
        self.result = result

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        return self.result


def failure_of(d: Deferred[Any]) -> Failure:
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures, "the read did not fail"
    return failures[0]


def error_of(d: Deferred[Any]) -> Any:
    """The exception a read failed with (typed Any: tests look at its fields)."""
    return failure_of(d).value


def by_id(records: Sequence[Record]) -> dict[str, Reading]:
    return {r.native_id or "": r for r in records if isinstance(r, Reading)}


class ProtocolObjectTests(unittest.TestCase):
    def test_provides_imeterprotocol_named_dlt645(self) -> None:
        proto = Dlt645Protocol()
        self.assertTrue(verifyObject(IMeterProtocol, proto))
        self.assertEqual(proto.name, "dlt645")

    def test_registry_gives_this_protocol(self) -> None:
        from fep.protocols.registry import meter_protocol

        self.assertIsInstance(meter_protocol("dlt645"), Dlt645Protocol)


class SettingsTests(unittest.TestCase):
    def test_defaults_are_the_wildcard_address_and_the_head_end_items(self) -> None:
        s = settings_for(meter(address=None))
        self.assertEqual(s.address, "AAAAAAAAAAAA")
        self.assertEqual(s.reading_items, DEFAULT_ITEMS_2007)
        self.assertEqual((s.edition, s.wakeup, s.retries), (2007, True, 1))
        self.assertEqual((s.meter, s.route), ("m1", ROUTE))

    def test_metadata_sets_items_edition_wakeup_and_profile(self) -> None:
        s = settings_for(
            meter(
                dlt645_items="00010000, 02010100,06000001",
                dlt645_wakeup="no",
                dlt645_retries="3",
                dlt645_profile_blocks="96",
                dlt645_profile_period="5",
                dlt645_profile_since="2024-05-17T00:00",
                tz="Asia/Shanghai",
            )
        )
        self.assertEqual(s.items, (0x00010000, 0x02010100, 0x06000001))
        self.assertEqual((s.wakeup, s.retries, s.profile_blocks), (False, 3, 96))
        self.assertEqual(s.profile_period, timedelta(minutes=5))
        # A bare start time is the meter's wall clock.
        self.assertEqual(s.profile_since, datetime(2024, 5, 16, 16, 0, tzinfo=UTC))
        s97 = settings_for(meter(dlt645_edition="1997", dlt645_items="9010,B611"))
        self.assertEqual((s97.edition, s97.items), (1997, (0x9010, 0xB611)))

    def test_wrong_settings_are_config_errors_naming_the_key(self) -> None:
        cases = {
            "address": meter(address="12345678901X"),
            "dlt645_items": meter(dlt645_items="00010000,zz"),
            "dlt645_edition": meter(dlt645_edition="2001"),
            "dlt645_wakeup": meter(dlt645_wakeup="maybe"),
            "tz": meter(tz="Mars/Olympus"),
            "dlt645_retries": meter(dlt645_retries="many"),
            "dlt645_profile_since": meter(dlt645_profile_since="yesterday"),
        }
        for key, m in cases.items():
            with self.assertRaises(ConfigError, msg=key) as caught:
                settings_for(m)
            self.assertEqual(caught.exception.key, key)
            self.assertIn("meter m1", str(caught.exception))

    def test_unknown_or_wrong_size_di_is_refused(self) -> None:
        for items in ("12345678", "9010", "0001000"):
            with self.assertRaises(ConfigError) as caught:
                settings_for(meter(dlt645_items=items))
            self.assertEqual(caught.exception.key, "dlt645_items")

    def test_read_fails_at_once_on_a_config_error(self) -> None:
        d = Dlt645Protocol().read(MemoryReactorClock(), FakeEndpoint(), meter(address="X"), 5.0)
        self.assertIsInstance(failure_of(d).value, ConfigError)


class MemorySessionTests(unittest.TestCase):
    def start(
        self, m: Meter | None = None, timeout: float = 5.0
    ) -> tuple[MemoryReactorClock, FakeEndpoint, Deferred[list[Record]]]:
        clock = MemoryReactorClock()
        endpoint = FakeEndpoint()
        d = Dlt645Protocol().read(clock, endpoint, m or meter(), timeout)
        return clock, endpoint, d

    def test_first_request_has_the_wakeup_and_the_meter_address(self) -> None:
        _, endpoint, _ = self.start(meter(dlt645_items="00010000"))
        # FE FE FE FE 68 56 34 12 00 00 00 68 11 04 33 33 34 33 CS 16
        sent = endpoint.transport.value()
        self.assertEqual(sent[:12], bytes.fromhex("FEFEFEFE 68 563412000000 68"))
        self.assertEqual(sent[12:18], bytes.fromhex("11 04 33333433"))

    def test_wakeup_no_sends_the_bare_frame(self) -> None:
        _, endpoint, _ = self.start(meter(dlt645_items="00010000", dlt645_wakeup="no"))
        self.assertEqual(endpoint.transport.value()[:1], b"\x68")

    def test_silence_resends_once_then_times_out_naming_meter_route_and_di(self) -> None:
        clock, endpoint, d = self.start(meter(dlt645_items="02010100"))
        first = endpoint.transport.value()
        endpoint.transport.clear()
        clock.advance(5.0)
        self.assertEqual(endpoint.transport.value(), first)
        self.assertNoResult(d)
        clock.advance(5.0)
        error = error_of(d)
        self.assertIsInstance(error, SessionTimeout)
        self.assertEqual((error.meter, error.route, error.protocol), ("m1", ROUTE, "dlt645"))
        self.assertIn("no valid answer to read of DI 02010100 within 5.0 s", str(error))
        self.assertTrue(endpoint.transport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_each_answer_restarts_the_timer(self) -> None:
        sim = SimulatedDlt645Meter(clock=lambda: 1_709_280_000.0)
        clock, endpoint, d = self.start(meter(dlt645_items="00010000,02010100"), timeout=5.0)
        for _ in range(2):
            clock.advance(4.0)
            (request,) = FrameDecoder().receive(endpoint.transport.value())
            endpoint.transport.clear()
            answer = sim.answer(request)
            assert answer is not None
            endpoint.protocol.dataReceived(answer.encode(preamble=4))
        records = self.successResultOf(d)
        self.assertEqual(set(by_id(records)), {"00010000", "02010100"})
        self.assertTrue(endpoint.transport.disconnecting)

    def test_a_report_in_the_same_read_as_the_last_answer_goes_back_to_the_channel(
        self,
    ) -> None:
        # A GPRS session lent to the read: another meter's report right behind the last
        # answer is not the read's; the channel's report handler gets its bytes.
        given: list[bytes] = []
        _, endpoint, d = self.start(meter(dlt645_items="00010000"))
        alsoProvides(endpoint.transport, IPushChannel)
        endpoint.transport.pushed = lambda records: succeed(None)  # type: ignore[attr-defined]
        endpoint.transport.unconsumed = given.append  # type: ignore[attr-defined]
        sim = SimulatedDlt645Meter(address=ADDRESS, clock=lambda: 1_709_280_000.0)
        other = SimulatedDlt645Meter(address="000000000102", clock=lambda: 1_709_280_000.0)
        (request,) = FrameDecoder().receive(endpoint.transport.value())
        answer = sim.answer(request)
        assert answer is not None
        report = other.report().encode()
        endpoint.protocol.dataReceived(answer.encode() + report)
        self.assertEqual(set(by_id(self.successResultOf(d))), {"00010000"})
        self.assertEqual(b"".join(given), report)

    def test_connection_lost_mid_read_is_a_channel_error(self) -> None:
        _, endpoint, d = self.start()
        endpoint.protocol.connectionLost(Failure(ConnectionError("gone")))
        error = error_of(d)
        self.assertIsInstance(error, ChannelError)
        self.assertIn("read of DI 0000FF00", str(error))
        self.assertEqual(error.route, ROUTE)

    def test_refused_connection_is_a_channel_error_with_the_route(self) -> None:
        endpoint = FailingEndpoint(fail(ConnectionRefusedError()))
        d = Dlt645Protocol().read(MemoryReactorClock(), endpoint, meter(), 5.0)
        error = error_of(d)
        self.assertIsInstance(error, ChannelError)
        self.assertEqual(error.route, ROUTE)

    def test_connect_that_hangs_is_cancelled_after_the_timeout(self) -> None:
        clock = MemoryReactorClock()
        d = Dlt645Protocol().read(clock, FailingEndpoint(Deferred()), meter(), 3.0)
        clock.advance(3.0)
        self.assertIn("no connection within 3.0 s", str(failure_of(d).value))


@implementer(ILogObserver)
class LogCapture:
    """Collects the dlt645 session's log events (its counters are fields of the last)."""

    def __init__(self, case: unittest.TestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self)
        case.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "fep.protocols.dlt645":
            self.events.append(event)

    def summary(self) -> dict[str, Any]:
        done = [e for e in self.events if "records" in e]
        assert done, "no session summary logged"
        return done[-1]


class LoopbackTests(unittest.TestCase):
    """Real reactor, real sockets: the session against the simulated bus over TCP."""

    def setUp(self) -> None:
        self.meters = make_meters(3, ADDRESS)
        self.factory = Dlt645BusFactory(self.meters, reactor)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        self.log = LogCapture(self)

    def read(self, m: Meter, timeout: float = 5.0) -> Deferred[list[Record]]:
        return Dlt645Protocol().read(reactor, self.endpoint, m, timeout)

    @inlineCallbacks
    def test_default_read_of_one_meter_on_a_three_meter_bus(self) -> Any:
        sim = self.meters[1]
        records = yield self.read(meter("000000123457"))
        got = by_id(records)
        self.assertEqual(got["00010000"].value, sim.energy(1))
        self.assertEqual(got["00010000"].meter, "m1")
        self.assertEqual(got["00000000"].value, sim.energy(0))
        self.assertEqual(got["02010300"].value, Decimal("219.8"))
        self.assertEqual(got["02020300"].value, Decimal("-0.250"))
        self.assertEqual(got["02030000"].value, sim.active_power(0))
        clock = got["04000101+04000102"]
        assert clock.meter_time is not None
        self.assertLess(abs((clock.meter_time - clock.received_time).total_seconds()), 2.0)
        self.assertEqual([m.log != [] for m in self.meters], [False, True, False])
        self.assertEqual(self.factory.answers, len(DEFAULT_ITEMS_2007))

    @inlineCallbacks
    def test_meter_error_answer_fails_the_read_with_the_named_error(self) -> Any:
        self.meters[0].refusals[0x04000101] = ErrorStatus.UNAUTHORIZED
        d = self.read(meter(dlt645_items="00010000,04000101,02010100"))
        error = yield self.assertFailure(d, Unauthorized)
        self.assertEqual((error.meter, error.route), ("m1", ROUTE))
        self.assertIn("DI 04000101", str(error))
        self.assertEqual(self.meters[0].log[-1], "refused 11: 04")

    @inlineCallbacks
    def test_missing_item_is_logged_and_skipped(self) -> Any:
        self.meters[0].missing = {0x02800002}
        records = yield self.read(meter(dlt645_items="02800002,00010000"))
        self.assertEqual(set(by_id(records)), {"00010000"})
        skipped = [e for e in self.log.events if e.get("di") == "02800002"]
        self.assertEqual(len(skipped), 1)
        self.assertIn("no requested data", skipped[0]["why"])
        self.assertEqual(self.log.summary()["skipped"], 1)

    @inlineCallbacks
    def test_silent_meter_times_out_after_one_resend(self) -> Any:
        self.factory.silent = True
        d = self.read(meter(dlt645_items="00010000"), timeout=0.3)
        error = yield self.assertFailure(d, SessionTimeout)
        self.assertIn("DI 00010000 within 0.3 s", str(error))
        self.assertEqual(self.factory.requests, 2)

    @inlineCallbacks
    def test_garbage_on_the_line_is_skipped_and_counted(self) -> Any:
        self.factory.noise = b"\x00\xff\x68\x10garbage\x16"
        records = yield self.read(meter(dlt645_items="00010000,02010100"))
        self.assertEqual(len(by_id(records)), 2)
        self.assertEqual(self.log.summary()["garbage"], 2 * len(self.factory.noise))
        self.assertEqual(self.log.summary()["noise"], 0)

    @inlineCallbacks
    def test_damaged_answer_is_asked_for_again(self) -> Any:
        self.factory.damage_answers = 1
        records = yield self.read(meter(dlt645_items="00010000,02010100"))
        self.assertEqual(len(by_id(records)), 2)
        summary = self.log.summary()
        self.assertEqual((summary["noise"], summary["resent"]), (1, 1))
        self.assertEqual(self.meters[0].log[:2], ["read 00010000", "read 00010000"])

    @inlineCallbacks
    def test_lost_answer_is_asked_for_again_after_the_timeout(self) -> Any:
        self.factory.drop_answers = 1
        records = yield self.read(meter(dlt645_items="02010100"), timeout=0.3)
        self.assertEqual(by_id(records)["02010100"].value, Decimal("220.1"))
        self.assertEqual(self.log.summary()["resent"], 1)

    @inlineCallbacks
    def test_long_answers_come_in_follow_up_frames(self) -> Any:
        sim = self.meters[0]
        sim.max_data = 20
        sim.started = reactor.seconds() - 2 * 3600
        records = yield self.read(
            meter(dlt645_items="0000FF00,06000002,03110001", dlt645_profile_blocks="6")
        )
        got = by_id(records)
        self.assertEqual(len([k for k in got if k.startswith("0000")]), 5)
        blocks = {str(b.obis): b for b in records if isinstance(b, IntervalBlock)}
        energy = blocks["1-0:1.8.0*255"]
        self.assertEqual(len(energy.values), 6)
        self.assertEqual(energy.period, timedelta(minutes=15))
        events = [e for e in records if isinstance(e, MeterEvent)]
        self.assertEqual([e.code for e in events], ["03110000", "03110000-end"])
        follow_ups = [entry for entry in sim.log if entry.startswith("follow-up")]
        self.assertGreater(len(follow_ups), 20)

    @inlineCallbacks
    def test_byte_by_byte_answers_and_an_echoing_line(self) -> Any:
        self.factory.split_answers = True
        self.factory.echo = True
        records = yield self.read(meter(dlt645_items="00010000,02020100"))
        self.assertEqual(by_id(records)["02020100"].value, Decimal("5.123"))

    @inlineCallbacks
    def test_1997_meter(self) -> Any:
        sim = SimulatedDlt645Meter(address="000000000003", edition=1997)
        self.factory.meters = [sim]
        records = yield self.read(meter("3", dlt645_edition="1997"))
        got = by_id(records)
        self.assertEqual(got["9010"].value, sim.energy(1))
        self.assertEqual(got["B611"].obis, ObisCode(1, 0, 32, 7, 0))
        self.assertIn("C010+C011", got)

    @inlineCallbacks
    def test_meter_time_zone_from_metadata(self) -> Any:
        self.meters[0].tz = timezone(timedelta(hours=3))
        records = yield self.read(meter(dlt645_items="04000101,04000102", tz="Europe/Moscow"))
        clock = by_id(records)["04000101+04000102"]
        assert clock.meter_time is not None
        self.assertLess(abs((clock.meter_time - clock.received_time).total_seconds()), 2.0)


class PtyTests(unittest.TestCase):
    @inlineCallbacks
    def test_read_over_a_socat_pty_pair(self) -> Any:
        a, b = yield socat_pty_pair(self)
        sims = make_meters(2, ADDRESS)
        port = serve_pty(reactor, a, Dlt645BusFactory(sims, reactor))
        self.addCleanup(port.loseConnection)
        route = f"serial:{b}:baudrate=2400:bytesize=8:parity=E"
        m = Meter(id="pty-meter", protocol="dlt645", route=route, address="000000123457")
        records = yield Dlt645Protocol().read(reactor, clientFromString(reactor, route), m, 5.0)
        got = by_id(records)
        self.assertEqual(got["00010000"].value, sims[1].energy(1))
        self.assertEqual(got["02010100"].meter, "pty-meter")
        self.assertEqual(sims[0].log, [])
