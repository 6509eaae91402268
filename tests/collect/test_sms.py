"""SMS uses: alarm/status rules into MeterEvents (through the channel and the simulated modem
to the record sink), the wake-up primitive with the field device's hook, operator
notifications (INotifier), the [sms] config section and the daemon's wiring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from fep.channels.modem.sms import IncomingSms, SmsChannel, SmsSettings
from fep.collect.sms import (
    SmsEventRouter,
    SmsWakeUp,
    number_key,
    parse_rule,
    parse_rules,
)
from fep.config import parse_config
from fep.errors import ChannelError, ConfigError
from fep.interfaces import INotifier, IRecordSink
from fep.model import EventKind, Meter, MeterEvent, Record, Severity
from fep.operator.alarms import Alarm, SmsNotifier
from fep.sim.gsm_modem import (
    GsmModemEmulator,
    GsmModemFactory,
    GsmNetwork,
    SentMessage,
    SimulatedFieldDevice,
)
from tests.channels.modem.test_sms import until

reactor: Any = global_reactor
MODEM = "+491700000001"
DEVICE = "+491510000009"
RULES = parse_rules(
    r"""
    POWER\s*(FAIL|OFF)            => power-outage critical PWR
    TAMPER|COVER OPEN             => cover-open
    ALARM (?P<code>E\d+) (?P<text>.*) => meter-error minor
    # comments and blank lines are skipped

    STATUS (?P<text>.*)           => other info STATUS
    """
)
METER = Meter("gw-17", "dlms", "gprs:imei=1", metadata={"sms_number": "+49 151 0000009"})


class Meters:
    def __init__(self, *meters: Meter) -> None:
        self.meters = list(meters)

    def all(self) -> list[Meter]:
        return self.meters


@implementer(IRecordSink)
class Sink:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.gate: Deferred[None] | None = None

    def submit(self, records: Any) -> Deferred[None]:
        self.records.extend(records)
        return self.gate if self.gate is not None else succeed(None)


def sms(text: str, sender: str = DEVICE) -> IncomingSms:
    moment = datetime(2024, 5, 17, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    return IncomingSms(sender, text, moment, datetime.now(UTC))


class RuleTests(unittest.TestCase):
    def test_rule_parts(self) -> None:
        rule = parse_rule(r"POWER\s*FAIL => power-outage critical PWR")
        self.assertEqual(
            (rule.kind, rule.severity, rule.code),
            (EventKind.POWER_OUTAGE, Severity.CRITICAL, "PWR"),
        )
        rule = parse_rule("TAMPER => magnetic-tamper")
        self.assertEqual((rule.severity, rule.code), (Severity.MAJOR, None))
        self.assertEqual(parse_rule("X => other OTHERCODE").code, "OTHERCODE")

    def test_bad_rules_say_what_is_wrong(self) -> None:
        for line, words in (
            ("no arrow here", "expected"),
            ("X => flood", "unknown event kind"),
            ("X => other loud CODE", "unknown severity"),
            ("(unclosed => other", "bad pattern"),
        ):
            with self.assertRaises(ValueError) as cm:
                parse_rule(line)
            self.assertIn(words, str(cm.exception))

    def test_number_key(self) -> None:
        self.assertEqual(number_key("+49 151 0000009"), number_key("0049-151-0000009"))


class EventRouterTests(unittest.TestCase):
    def setUp(self) -> None:
        self.sink = Sink()
        self.router = SmsEventRouter(RULES, Meters(METER), self.sink)

    def test_first_matching_rule_makes_the_event(self) -> None:
        self.router(sms("Power fail at 12:29"))
        (event,) = self.sink.records
        assert isinstance(event, MeterEvent)
        self.assertEqual(
            (event.meter, event.code, event.kind, event.severity),
            ("gw-17", "PWR", EventKind.POWER_OUTAGE, Severity.CRITICAL),
        )
        self.assertEqual(event.time, datetime(2024, 5, 17, 10, 30, tzinfo=UTC))
        self.assertEqual((event.text, event.source), ("Power fail at 12:29", f"sms:{DEVICE}"))

    def test_named_groups_give_code_and_text(self) -> None:
        self.router(sms("ALARM E42 phase L2 lost"))
        (event,) = self.sink.records
        assert isinstance(event, MeterEvent)
        self.assertEqual((event.code, event.text), ("E42", "phase L2 lost"))

    def test_default_code_is_the_kind(self) -> None:
        self.router(sms("cover open"))
        self.assertEqual(self.sink.records[0].code, "cover-open")  # type: ignore[union-attr]

    def test_unknown_sender_and_unmatched_text_make_nothing(self) -> None:
        self.assertIsNone(self.router(sms("POWER FAIL", sender="+4930000")))
        self.assertIsNone(self.router(sms("hello")))
        self.assertEqual(self.sink.records, [])
        self.assertEqual(self.router.stats, {"events": 0, "unknown_sender": 1, "unmatched": 1})


class ChannelCase(unittest.TestCase):
    def setUp(self) -> None:
        self.network = GsmNetwork(reactor)
        self.modem = GsmModemEmulator(MODEM)
        self.network.attach(self.modem)
        self.port = reactor.listenTCP(0, GsmModemFactory(self.modem), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.channel = SmsChannel(
            reactor,
            SmsSettings(f"tcp:127.0.0.1:{self.port.getHost().port}", command_timeout=2.0),
        )
        self.channel.startService()
        self.addCleanup(self.channel.stopService)


class AlarmEndToEndTests(ChannelCase):
    @inlineCallbacks
    def test_device_alarm_becomes_an_event_and_leaves_the_sim_once_durable(self) -> Any:
        sink = Sink()
        sink.gate = Deferred()
        self.channel.add_message_handler(SmsEventRouter(RULES, Meters(METER), sink))
        device = SimulatedFieldDevice(self.network, DEVICE)
        yield self.channel.ready()
        device.send(MODEM, "TAMPER detected on terminal cover")
        yield until(lambda: bool(sink.records))
        (event,) = sink.records
        assert isinstance(event, MeterEvent)
        self.assertEqual((event.meter, event.kind), ("gw-17", EventKind.COVER_OPEN))
        self.assertEqual(self.modem.stores["SM"].used, 1)  # not durable yet: kept
        sink.gate.callback(None)
        yield until(lambda: self.modem.stores["SM"].used == 0)


class WakeUpTests(ChannelCase):
    @inlineCallbacks
    def test_wake_up_reaches_the_device_and_runs_its_hook(self) -> Any:
        woken: list[SentMessage] = []
        device = SimulatedFieldDevice(
            self.network, DEVICE, wakeup_text="WAKEUP", on_wakeup=lambda d, m: woken.append(m)
        )
        yield self.channel.ready()
        outgoing = yield SmsWakeUp(self.channel, "WAKEUP").wake_up(METER)
        yield until(lambda: bool(woken))
        self.assertEqual((device.wakeups, woken[0].sender), (1, MODEM))
        self.assertEqual(outgoing.destination, "+491510000009")

    @inlineCallbacks
    def test_meter_wakeup_text_wins(self) -> Any:
        device = SimulatedFieldDevice(self.network, DEVICE, wakeup_text="CONNECT 1")
        meter = Meter(
            "gw-18", "dlms", "gprs:imei=2",
            metadata={"sms_number": DEVICE, "sms_wakeup_text": "CONNECT 1"},
        )  # fmt: skip
        yield self.channel.ready()
        yield SmsWakeUp(self.channel, "WAKEUP").wake_up(meter)
        yield until(lambda: device.wakeups == 1)

    @inlineCallbacks
    def test_meter_without_number_fails_naming_it(self) -> Any:
        meter = Meter("gw-19", "dlms", "gprs:imei=3")
        with self.assertRaises(ChannelError) as cm:
            yield SmsWakeUp(self.channel).wake_up(meter)
        self.assertIn("gw-19", str(cm.exception))
        self.assertIn("sms_number", str(cm.exception))


class NotifierTests(ChannelCase):
    """The alarm engine's SMS notifier over the real SMS channel and the GSM emulator."""

    def alarm(self) -> Alarm:
        return Alarm("gw-17", EventKind.POWER_OUTAGE, Severity.CRITICAL, "PWR",
                     datetime(2024, 5, 17, 10, 30, tzinfo=UTC), "mains lost")

    def test_provides_inotifier(self) -> None:
        self.assertTrue(verifyObject(INotifier, SmsNotifier(self.channel)))

    @inlineCallbacks
    def test_alarm_goes_to_every_number(self) -> Any:
        yield self.channel.ready()
        yield SmsNotifier(self.channel).notify(self.alarm(), ["+491520000001", "+491520000002"])
        yield until(lambda: len(self.network.messages) == 2)
        self.assertEqual(
            sorted(m.destination for m in self.network.messages),
            ["+491520000001", "+491520000002"],
        )
        self.assertEqual({m.text for m in self.network.messages},
                         {"fep CRITICAL: power-outage meter gw-17 2024-05-17 10:30:00Z"})

    @inlineCallbacks
    def test_modem_refusal_is_a_channel_error(self) -> Any:
        yield self.channel.ready()
        self.modem.fail_sends.append(331)
        with self.assertRaises(ChannelError):
            yield SmsNotifier(self.channel).notify(self.alarm(), ["+491520000001"])
        self.assertEqual(self.network.messages, [])


class ConfigTests(unittest.TestCase):
    MINIMAL = "[fep]\n[store]\n"

    def test_sms_section(self) -> None:
        config = parse_config(
            self.MINIMAL
            + "[sms]\nport = serial:/dev/ttyUSB2:115200:8N1\nmode = text\npin = 4711\n"
            + "rules =\n    POWER FAIL => power-outage critical\n    TAMPER => cover-open\n"
        )
        self.assertEqual(config.sms.mode, "text")
        self.assertEqual(len(parse_rules(config.sms.rules)), 2)
        self.assertNotIn("4711", repr(config.sms))

    def test_defaults(self) -> None:
        config = parse_config(self.MINIMAL)
        self.assertEqual((config.sms.port, config.sms.mode, config.sms.rules), ("", "pdu", ()))

    def test_bad_rule_names_the_key(self) -> None:
        with self.assertRaises(ConfigError) as cm:
            parse_config(self.MINIMAL + "[sms]\nrules = X => flood\n", "etc/site.ini")
        self.assertEqual((cm.exception.section, cm.exception.key), ("sms", "rules"))
        self.assertIn("flood", str(cm.exception))

    def test_bad_mode_names_the_key(self) -> None:
        with self.assertRaises(ConfigError) as cm:
            parse_config(self.MINIMAL + "[sms]\nmode = fax\n")
        self.assertEqual(cm.exception.key, "mode")

    def test_daemon_builds_the_channel_and_its_uses(self) -> None:
        from fep.service import FepService

        tmp = self.mktemp()
        config = parse_config(
            f"[fep]\ndata_dir = {tmp}\n[store]\nurl = sqlite:{tmp}/fep.sqlite\n"
            "[sms]\nport = serial:/dev/ttyUSB2:115200:8N1\nrules = TAMPER => cover-open\n"
        )
        daemon = FepService(config, reactor)
        self.assertIsInstance(daemon.sms, SmsChannel)
        self.assertEqual(daemon.sms.route, "serial:/dev/ttyUSB2:115200:8N1")
        # The alarm engine texts alarms through the same channel.
        self.assertIs(daemon.operator.ctx.sms, daemon.sms)
        self.assertIsInstance(daemon.sms_wakeup, SmsWakeUp)
        plain = parse_config(f"[fep]\ndata_dir = {tmp}\n[store]\nurl = sqlite:{tmp}/fep.sqlite\n")
        self.assertIsNone(FepService(plain, reactor).sms)
