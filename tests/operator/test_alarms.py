"""Alarms: the classification table, raising and debouncing on a real store, notification
rules to a real SMTP sink and a fake SMS sender (until the SMS channel is wired), NOTIFY on
PostgreSQL received by a real LISTEN, alarm pushes decoded into events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest
from txpostgres import txpostgres
from zope.interface import implementer
from zope.interface.verify import verifyObject

from fep.errors import ChannelError, ConfigError
from fep.interfaces import INotifier
from fep.model import EventKind, Meter, MeterEvent, Severity
from fep.operator.alarms import Alarm, AlarmEngine, AlarmTable, EmailNotifier, SmsNotifier
from fep.operator.interfaces import ISmsSender
from fep.store import open_store
from tests.daemon.harness import wait_for
from tests.operator.helpers import make_context
from tests.operator.smtpsink import SmtpSink
from tests.postgres import fresh_database

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

TABLE = """
[classify]
; the field device's SMS alarm text
text:*last gasp* = power-outage critical
; a site where the terminal cover switch is noisy
dlms:99.98.0:40 = terminal-cover-open minor

[raise]
min_severity = minor

[notify:control-room]
severity = critical, major
group = north*
email = ops@example.com, duty@example.com
sms = +491701234567

[notify:everyone]
kind = power-*
email = ops@example.com
"""


def last_gasp(meter: str, when: datetime, code: str = "dlms:99.98.0:1") -> MeterEvent:
    return MeterEvent(meter, code, EventKind.POWER_OUTAGE, Severity.CRITICAL, when,
                      "power down", source="test")


@implementer(ISmsSender)
@attrs.define
class FakeSms:
    """Stands in for the SMS channel (the sms branch's modem) in unit tests."""

    route: str = "fake:modem"
    sent: list[tuple[str, str]] = attrs.Factory(list)

    def send(self, number: str, text: str) -> Deferred[None]:
        self.sent.append((number, text))
        return succeed(None)


@attrs.define
class FlakySms:
    """An SMS channel that refuses each number's first ``failures[number]`` messages."""

    failures: dict[str, int]
    route: str = "fake:modem"
    tries: dict[str, int] = attrs.Factory(dict)
    sent: list[tuple[str, str]] = attrs.Factory(list)

    def send(self, number: str, text: str) -> Deferred[None]:
        self.tries[number] = self.tries.get(number, 0) + 1
        if self.tries[number] <= self.failures.get(number, 0):
            return fail(ChannelError(f"modem refused the message to {number}"))
        self.sent.append((number, text))
        return succeed(None)


class AlarmTableTests(unittest.TestCase):
    def test_classification_rules_and_defaults(self) -> None:
        table = AlarmTable.parse(TABLE)
        sms = MeterEvent("m", "other", EventKind.OTHER, Severity.INFO, T0, "PWR Last Gasp 12",
                         source="sms:+491700000000")
        self.assertEqual(table.classification(sms), (EventKind.POWER_OUTAGE, Severity.CRITICAL))
        cover = MeterEvent("m", "dlms:99.98.0:40", EventKind.TERMINAL_COVER_OPEN,
                           Severity.CRITICAL, T0)
        self.assertEqual(table.classification(cover),
                         (EventKind.TERMINAL_COVER_OPEN, Severity.MINOR))
        other = last_gasp("m", T0, "dlt645:03110000")
        self.assertEqual(table.classification(other), (EventKind.POWER_OUTAGE, Severity.CRITICAL))
        self.assertEqual([r.name for r in table.rules], ["control-room", "everyone"])
        self.assertEqual(table.rules[0].emails, ("ops@example.com", "duty@example.com"))

    def test_errors_name_file_section_and_key(self) -> None:
        cases = [
            ("[classify]\nx* = burning critical\n", "classify", "x*"),
            ("[classify]\nx* = power-outage\n", "classify", "x*"),
            ("[raise]\nmin_severity = loud\n", "raise", "min_severity"),
            ("[notify:a]\nseverity = critical\n", "notify:a", None),
            ("[notify:a]\nemail = a@b\nphone = 1\n", "notify:a", "phone"),
            ("[elsewhere]\n", "elsewhere", None),
        ]
        for text, section, key in cases:
            with self.assertRaises(ConfigError) as caught:
                AlarmTable.parse(text, "alarms.ini")
            error = caught.exception
            self.assertEqual((error.file, error.section, error.key),
                             ("alarms.ini", section, key), text)


class AlarmEngineTests(unittest.TestCase):
    async def engine(self, table: str = TABLE, debounce: float = 300.0,
                     smtp_port: int = 1) -> AlarmEngine:
        self.ctx = await make_context(self, [
            Meter("m-north", "dlms", "tcp:host=127.0.0.1:port=1", metadata={"group": "north-1"}),
            Meter("m-south", "dlms", "tcp:host=127.0.0.1:port=1", metadata={"group": "south"}),
        ])
        self.sms = FakeSms()
        self.ctx.sms = self.sms
        email = EmailNotifier(reactor, "127.0.0.1", smtp_port, "fep@test", attempts=1)
        engine = AlarmEngine(self.ctx, AlarmTable.parse(table), debounce=debounce, email=email)
        self.ctx.alarms = engine
        await engine.start()
        return engine

    async def test_last_gasp_mails_and_texts_once_within_the_debounce_time(self) -> None:
        sink = await SmtpSink.start(self)
        engine = await self.engine(smtp_port=sink.port)
        await engine.take([last_gasp("m-north", T0)])
        # The same outage reported again a minute later, and the first report replayed.
        await engine.take([last_gasp("m-north", T0 + timedelta(minutes=1)),
                           last_gasp("m-north", T0)])
        await engine.stop()

        async def mailed() -> bool:
            return len(sink.messages) >= 1

        await wait_for(mailed, 10, "the alarm e-mail")
        await engine.stop()
        self.assertEqual(len(sink.messages), 1)
        sender, recipients, message = sink.messages[0]
        self.assertEqual(sender, "fep@test")
        self.assertEqual(sorted(recipients), ["duty@example.com", "ops@example.com"])
        self.assertEqual(message["Subject"], "[fep critical] power-outage at meter m-north")
        self.assertIn("code: dlms:99.98.0:1", message.get_payload())
        self.assertEqual(self.sms.sent, [("+491701234567",
                                          "fep CRITICAL: power-outage meter m-north "
                                          "2026-03-01 12:00:00Z")])
        [alarm] = await engine.recent()
        self.assertEqual((alarm.count, alarm.last_time), (2, T0 + timedelta(minutes=1)))
        self.assertEqual(engine.stats()["debounced"], 1)
        self.assertEqual(engine.stats()["notifications"], {"email:sent": 1, "sms:sent": 1})

    async def test_after_the_debounce_time_the_same_kind_raises_again(self) -> None:
        engine = await self.engine(debounce=60, table="[raise]\nmin_severity = minor\n")
        await engine.take([last_gasp("m-north", T0)])
        await engine.take([last_gasp("m-north", T0 + timedelta(minutes=5))])
        await engine.take([last_gasp("m-south", T0 + timedelta(minutes=5))])
        alarms = await engine.recent()
        self.assertEqual(len(alarms), 3)
        self.assertEqual(engine.stats()["raised"], {"critical": 3})

    async def test_rules_pick_targets_by_severity_group_and_kind(self) -> None:
        engine = await self.engine()
        engine.email = None  # no relay: outcomes are recorded as unavailable
        # South is not in the control room's groups, but power kinds go to everyone.
        await engine.take([last_gasp("m-south", T0)])
        self.assertEqual(self.sms.sent, [])
        self.assertEqual(engine.stats()["notifications"], {"email:unavailable": 1})
        # A minor cover alarm in the north matches no rule.
        await engine.take([MeterEvent("m-north", "dlms:99.98.0:40",
                                      EventKind.TERMINAL_COVER_OPEN, Severity.CRITICAL, T0)])
        self.assertEqual(engine.stats()["notifications"], {"email:unavailable": 1})
        # Info events are stored by the store but raise nothing.
        await engine.take([MeterEvent("m-north", "dlms:99.98.0:4", EventKind.CLOCK_SET,
                                      Severity.INFO, T0)])
        kinds = sorted(a.kind.value for a in await engine.recent())
        self.assertEqual(kinds, ["power-outage", "terminal-cover-open"])

    async def test_a_failed_mail_is_recorded_and_a_missing_sms_channel_is_said(self) -> None:
        engine = await self.engine(smtp_port=1)  # nothing listens on port 1
        self.ctx.sms = None
        await engine.take([last_gasp("m-north", T0)])
        await engine.stop()
        self.assertEqual(engine.stats()["notifications"],
                         {"email:failed": 1, "sms:unavailable": 1})

    async def test_a_restart_keeps_debouncing_and_replays_raise_nothing(self) -> None:
        engine = await self.engine()
        engine.email = None
        now = datetime.now(UTC)
        await engine.take([last_gasp("m-north", now)])
        again = AlarmEngine(self.ctx, engine.table, debounce=300, email=None)
        await again.start()
        await again.take([last_gasp("m-north", now)])  # the spool replays the batch
        await again.take([last_gasp("m-north", now + timedelta(seconds=30))])
        [alarm] = await again.recent()
        self.assertEqual(alarm.count, 2)
        self.assertEqual(again.stats()["raised"], {})

    async def test_engine_takes_committed_batches_from_the_router(self) -> None:
        engine = await self.engine()
        engine.email = None
        self.ctx.router.committed_hooks.append(engine.committed)  # type: ignore[attr-defined]
        await self.ctx.router.submit([last_gasp("m-north", T0)])
        self.assertTrue(await self.ctx.router.flush(5))  # type: ignore[attr-defined]
        [alarm] = await engine.recent()
        self.assertEqual(alarm.meter, "m-north")
        self.assertEqual(alarm.group, "north-1")
        self.assertEqual(len(await self.ctx.store.events("m-north")), 1)

    def test_a_text_message_that_fails_is_sent_again(self) -> None:
        # The SMS channel refuses twice (a busy modem) then takes it: the alarm still goes
        # out, after 30 s and 120 s more; a number that keeps failing does not stop the next.
        clock = Clock()
        sender = FlakySms(failures={"+1": 2, "+2": 5})
        notifier = SmsNotifier(sender, clock)
        alarm = Alarm("m", EventKind.POWER_OUTAGE, Severity.CRITICAL, "PWR", T0, "down")
        d = notifier.notify(alarm, ["+2", "+1"])
        self.assertEqual(sender.tries, {"+2": 1})
        clock.advance(30)
        clock.advance(120)
        self.assertEqual(sender.tries, {"+2": 3, "+1": 1})
        self.assertNoResult(d)
        clock.advance(30)
        clock.advance(120)
        self.assertEqual(sender.tries, {"+2": 3, "+1": 3})
        self.assertEqual(sender.sent, [("+1", alarm.sms_text())])
        self.failureResultOf(d, ChannelError)

    def test_notifiers_provide_inotifier(self) -> None:
        self.assertTrue(verifyObject(INotifier, EmailNotifier(reactor, "h", 25, "f@x")))
        self.assertTrue(verifyObject(INotifier, SmsNotifier(FakeSms())))
        self.assertTrue(verifyObject(ISmsSender, FakeSms()))


class PostgresNotifyTests(unittest.TestCase):
    timeout = 30

    async def test_a_listen_on_fep_alarm_receives_every_new_alarm(self) -> None:
        url = fresh_database(self)
        store = open_store(url, reactor)
        await store.open()
        self.addCleanup(store.close)
        listener = txpostgres.Connection()
        await listener.connect(url)
        self.addCleanup(listener.close)
        heard: list[Any] = []
        listener.addNotifyObserver(heard.append)
        await listener.runOperation("LISTEN fep_alarm")

        from fep.directory import MeterDirectory
        from fep.operator.context import OperatorContext

        await store.add_meters([Meter("m1", "dlms", "tcp:host=h:port=1",
                                      metadata={"group": "g1"})])
        directory = MeterDirectory(store)
        await directory.refresh()
        ctx = OperatorContext(store=store, router=None, directory=directory,  # type: ignore
                              reactor=reactor, node="pg-node")
        engine = AlarmEngine(ctx, AlarmTable(), debounce=300, email=None)
        await engine.start()
        await engine.take([last_gasp("m1", T0)])
        await engine.take([last_gasp("m1", T0 + timedelta(seconds=10))])  # debounced
        await engine.take([last_gasp("m1", T0)])  # a replay

        async def heard_one() -> bool:
            return len(heard) >= 1

        await wait_for(heard_one, 10, "the NOTIFY")
        await listener.runOperation("SELECT 1")  # anything else queued arrives before this
        self.assertEqual(len(heard), 1)
        self.assertEqual(heard[0].channel, "fep_alarm")
        payload = json.loads(heard[0].payload)
        self.assertEqual((payload["meter"], payload["kind"], payload["severity"],
                          payload["group"], payload["node"]),
                         ("m1", "power-outage", "critical", "g1", "pg-node"))
        [alarm] = await engine.recent()
        self.assertEqual((alarm.id, alarm.count), (payload["id"], 2))


class AlarmPushDecodingTests(unittest.TestCase):
    def test_an_event_object_in_a_push_becomes_a_meter_event(self) -> None:
        from fep.protocols.dlms.apdu import DataNotification
        from fep.protocols.dlms.push import decode_push
        from fep.sim.dlms_meter import SimulatedDlmsMeter

        meter = SimulatedDlmsMeter(now=lambda: T0)
        content = decode_push("m1", DataNotification(meter.alarm_push_body(1)))
        self.assertEqual(content.readings, ())
        [event] = content.events
        self.assertEqual((event.code, event.kind, event.severity, event.time, event.text),
                         ("dlms:99.98.0:1", EventKind.POWER_OUTAGE, Severity.CRITICAL, T0,
                          "power down"))
        # Filed like the same event read from the standard event log.
        unknown = decode_push("m1", DataNotification(meter.alarm_push_body(250)))
        self.assertEqual((unknown.events[0].code, unknown.events[0].kind),
                         ("dlms:99.98.0:250", EventKind.OTHER))


class ShippedExampleTests(unittest.TestCase):
    def test_the_example_alarm_table_loads(self) -> None:
        from pathlib import Path

        example = Path(__file__).resolve().parents[2] / "etc" / "alarms.example.ini"
        table = AlarmTable.load(example)
        self.assertEqual([r.name for r in table.rules], ["control-room", "north-field-crew"])
        self.assertEqual(table.min_severity, Severity.MINOR)


class ArbitraryTableTextTests(unittest.TestCase):
    """Operators write these files by hand: any text is a table or a ConfigError."""

    def test_any_text_is_a_table_or_a_config_error(self) -> None:
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        from fep.operator.tokens import TokenFile

        lines = st.lists(st.one_of(
            st.sampled_from(["[classify]", "[raise]", "[notify:x]", "[other]",
                             "min_severity = major", "email = a@b", "severity = loud",
                             "x* = power-outage critical", "y = tilt", "a viewer 0123456789abcdef",
                             "b operator short"]),
            st.text(max_size=40)), max_size=8)

        @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(lines)
        def check(parts: list[str]) -> None:
            text = "\n".join(parts)
            for parse in (AlarmTable.parse, TokenFile.parse):
                try:
                    parse(text)
                except ConfigError:
                    pass

        check()
