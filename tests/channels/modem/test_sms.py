"""The SMS channel against the simulated GSM modem: set-up, sending (PDU and text mode,
concatenated, flash), delivery reports, receiving on +CMTI, the sweep at start, storage full,
handler failures, corrupt messages, reconnection; over loopback TCP and a socat pty pair."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest

from fep.channels.modem.pdu import DeliveryStatus, data_coding
from fep.channels.modem.sms import (
    DeliveryReport,
    IncomingSms,
    OutgoingSms,
    SmsChannel,
    SmsCommandError,
    SmsSettings,
)
from fep.errors import ChannelError
from fep.sim.gsm_modem import (
    GsmModemEmulator,
    GsmModemFactory,
    GsmNetwork,
    SimulatedFieldDevice,
    serve_pty,
)
from tests.channels.test_serialport import socat_pty_pair

reactor: Any = global_reactor
MODEM = "+491700000001"
DEVICE = "+491510000009"


class Inbox:
    """Collects what a channel hands over; ``next()`` waits for the next one."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._waiting: list[Deferred[Any]] = []
        self.taken = 0

    def __call__(self, item: Any) -> None:
        self.items.append(item)
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.taken < len(self.items):
            d = self._waiting.pop(0)
            item = self.items[self.taken]
            self.taken += 1
            d.callback(item)

    def next(self, timeout: float = 5.0) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self._waiting.append(d)
        self._wake()
        if not d.called:
            d.addTimeout(timeout, reactor)
        return d


def until(condition: Any, timeout: float = 5.0) -> Deferred[None]:
    """Fires once ``condition()`` is true, checking on each reactor turn."""

    async def wait() -> None:
        deadline = reactor.seconds() + timeout
        while not condition():
            if reactor.seconds() > deadline:
                raise AssertionError("condition not met in time")
            await deferLater(reactor, 0.005, lambda: None)

    return Deferred.fromCoroutine(wait())


class ChannelCase(unittest.TestCase):
    mode = "pdu"
    capacity = 20

    def setUp(self) -> None:
        self.network = GsmNetwork(reactor)
        self.modem = GsmModemEmulator(MODEM, capacity=self.capacity)
        self.network.attach(self.modem)
        self.device = SimulatedFieldDevice(
            self.network, DEVICE, replies={"STATUS?": "STATUS OK 12.1V"}
        )
        self.inbox = Inbox()
        self.reports = Inbox()
        self.port = reactor.listenTCP(0, GsmModemFactory(self.modem), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def route(self) -> str:
        return f"tcp:127.0.0.1:{self.port.getHost().port}"

    def channel(self, **settings: Any) -> SmsChannel:
        settings.setdefault("mode", self.mode)
        settings.setdefault("command_timeout", 2.0)
        settings.setdefault("reconnect_delay", 0.05)
        channel = SmsChannel(reactor, SmsSettings(self.route(), **settings))
        channel.add_message_handler(self.inbox)
        channel.add_report_handler(self.reports)
        channel.startService()
        self.addCleanup(channel.stopService)
        return channel

    def started(self, **settings: Any) -> Deferred[SmsChannel]:
        channel = self.channel(**settings)
        return channel.ready().addCallback(lambda _: channel)


class SetUpTests(ChannelCase):
    @inlineCallbacks
    def test_modem_is_set_up_for_pdu_mode_indications_and_reports(self) -> Any:
        yield self.started()
        self.assertEqual(self.modem.cmgf, 0)
        self.assertEqual(self.modem.cnmi, [2, 1, 0, 2, 0])
        self.assertEqual(self.modem.mem, ["SM", "SM", "SM"])
        self.assertEqual(self.modem.cmer[3], 1)  # +CIEV for the smsfull indicator
        self.assertEqual(self.modem.cmee, 1)

    @inlineCallbacks
    def test_sim_pin_is_given_and_never_logged(self) -> Any:
        self.modem.pin, self.modem.pin_ok = "4711", False
        channel = yield self.started(pin="4711")
        self.assertTrue(self.modem.pin_ok)
        self.assertNotIn("4711", repr(channel.settings))

    @inlineCallbacks
    def test_pin_stays_out_of_errors_when_the_modem_does_not_answer(self) -> Any:
        self.modem.pin, self.modem.pin_ok = "4711", False
        channel = yield self.started(pin="4711")
        self.modem.silent = True
        with self.assertRaises(ChannelError) as cm:
            yield Deferred.fromCoroutine(channel._command('AT+CPIN="4711"', 0.05))
        self.assertNotIn("4711", str(cm.exception))
        self.assertIn("<pin>", str(cm.exception))

    @inlineCallbacks
    def test_sim_pin_missing_is_a_channel_error(self) -> Any:
        self.modem.pin, self.modem.pin_ok = "4711", False
        channel = SmsChannel(reactor, SmsSettings(self.route(), command_timeout=2.0))
        channel.running = True
        self.addCleanup(lambda: channel.stopService())
        with self.assertRaises(ChannelError) as cm:
            yield Deferred.fromCoroutine(channel._open())
        self.assertIn("PIN", str(cm.exception))
        self.assertEqual(cm.exception.route, self.route())

    @inlineCallbacks
    def test_line_lost_is_reopened(self) -> Any:
        channel = yield self.started()
        assert self.modem.transport is not None
        self.modem.transport.loseConnection()
        yield until(lambda: not channel.is_ready)
        yield channel.ready()
        yield channel.send(DEVICE, "after reconnect")
        self.assertEqual(self.network.messages[-1].text, "after reconnect")


class SendTests(ChannelCase):
    @inlineCallbacks
    def test_send_with_delivery_report(self) -> Any:
        channel = yield self.started()
        outgoing: OutgoingSms = yield channel.send(DEVICE, "RELAY 1 ON")
        self.assertEqual(len(outgoing.references), 1)
        (sms,) = self.network.sent
        self.assertEqual((sms.destination, sms.submit.body), (DEVICE, "RELAY 1 ON"))
        self.assertTrue(sms.submit.status_report)
        reports: list[DeliveryReport] = yield outgoing.delivered
        self.assertEqual([r.outcome for r in reports], [DeliveryStatus.DELIVERED])
        self.assertEqual(outgoing.outcome, DeliveryStatus.DELIVERED)
        # The report came through the modem's memory (+CDSI) and was deleted.
        yield until(lambda: self.modem.stores["SM"].used == 0)

    @inlineCallbacks
    def test_failed_delivery_report(self) -> Any:
        self.network.report_status[DEVICE] = 0x46
        channel = yield self.started()
        outgoing = yield channel.send(DEVICE, "too late")
        reports = yield outgoing.delivered
        self.assertEqual(reports[0].text, "validity period expired")
        self.assertEqual(outgoing.outcome, DeliveryStatus.FAILED)

    @inlineCallbacks
    def test_long_text_goes_as_concatenated_parts_and_arrives_joined(self) -> Any:
        channel = yield self.started()
        text = "Zählerstand 1.8.0 = 12345,6 kWh; Störung © " * 6
        outgoing = yield channel.send(DEVICE, text)
        self.assertEqual(len(outgoing.references), len(self.network.sent))
        self.assertGreater(len(outgoing.references), 1)
        yield until(lambda: bool(self.device.received))
        self.assertEqual(self.device.received[0].text, text)
        reports = yield outgoing.delivered
        self.assertEqual(len(reports), len(outgoing.references))

    @inlineCallbacks
    def test_flash_message_is_class_0(self) -> Any:
        channel = yield self.started()
        yield channel.send(DEVICE, "LOOK", flash=True, report=False)
        self.assertEqual(data_coding(self.network.sent[0].submit.dcs).message_class, 0)
        self.assertFalse(self.network.sent[0].submit.status_report)

    @inlineCallbacks
    def test_modem_refusal_names_the_error_and_the_route(self) -> Any:
        channel = yield self.started()
        self.modem.fail_sends.append(331)
        with self.assertRaises(SmsCommandError) as cm:
            yield channel.send(DEVICE, "no network")
        self.assertIn("no network service", str(cm.exception))
        self.assertEqual(cm.exception.route, self.route())
        self.assertEqual(cm.exception.result.error, 331)
        self.assertEqual(channel.stats["send_failures"], 1)
        # The channel goes on.
        yield channel.send(DEVICE, "again")
        self.assertEqual(self.network.messages[-1].text, "again")

    @inlineCallbacks
    def test_send_before_the_line_is_open_fails(self) -> Any:
        channel = SmsChannel(reactor, SmsSettings(self.route()))
        with self.assertRaises(ChannelError):
            yield channel.send(DEVICE, "x")


class ReceiveTests(ChannelCase):
    @inlineCallbacks
    def test_alarm_from_a_device_is_handed_over_and_deleted(self) -> Any:
        channel = yield self.started()
        self.device.send(MODEM, "ALARM door open")
        incoming: IncomingSms = yield self.inbox.next()
        self.assertEqual((incoming.sender, incoming.text), (DEVICE, "ALARM door open"))
        self.assertTrue(incoming.complete)
        yield until(lambda: self.modem.stores["SM"].used == 0)
        self.assertEqual(channel.stats["received"], 1)

    @inlineCallbacks
    def test_answer_to_a_status_query(self) -> Any:
        channel = yield self.started()
        yield channel.send(DEVICE, "STATUS?")
        incoming = yield self.inbox.next()
        self.assertEqual(incoming.text, "STATUS OK 12.1V")

    @inlineCallbacks
    def test_concatenated_message_is_joined_and_its_parts_deleted(self) -> Any:
        yield self.started()
        text = "EVENTLOG " + ";".join(f"E{i:03d}" for i in range(60))
        parts = self.device.send(MODEM, text)
        self.assertGreater(len(parts), 1)
        incoming = yield self.inbox.next()
        self.assertEqual((incoming.text, incoming.parts), (text, len(parts)))
        yield until(lambda: self.modem.stores["SM"].used == 0)

    @inlineCallbacks
    def test_messages_stored_while_fep_was_away_are_swept_at_start(self) -> Any:
        self.device.send(MODEM, "ALARM 1")
        self.device.send(MODEM, "ALARM 2 " + "x" * 200)
        yield until(lambda: self.modem.stores["SM"].used == 3)
        channel = yield self.started()
        first = yield self.inbox.next()
        second = yield self.inbox.next()
        self.assertEqual(sorted([first.text, second.text]), ["ALARM 1", "ALARM 2 " + "x" * 200])
        yield until(lambda: self.modem.stores["SM"].used == 0)
        self.assertGreaterEqual(channel.stats["sweeps"], 1)

    @inlineCallbacks
    def test_failing_handler_keeps_the_message_for_the_next_sweep(self) -> Any:
        channel = yield self.started()
        failures = [RuntimeError("store down")]

        def flaky(incoming: IncomingSms) -> None:
            if failures:
                raise failures.pop()

        channel._message_handlers.insert(0, flaky)
        self.device.send(MODEM, "ALARM kept")
        yield until(lambda: channel.stats["handler_failures"] == 1)
        self.assertEqual(self.modem.stores["SM"].used, 1)
        yield channel.sweep()
        incoming = yield self.inbox.next()
        self.assertEqual(incoming.text, "ALARM kept")
        self.assertEqual(self.modem.stores["SM"].used, 0)

    @inlineCallbacks
    def test_corrupt_stored_message_is_counted_logged_and_deleted(self) -> Any:
        self.modem.stores["SM"].put(bytes.fromhex("0004ZZ".replace("ZZ", "0B91")))
        channel = yield self.started()
        yield until(lambda: channel.stats["undecodable"] == 1)
        yield until(lambda: self.modem.stores["SM"].used == 0)
        self.assertEqual(self.inbox.items, [])


class StorageFullTests(ChannelCase):
    capacity = 2

    @inlineCallbacks
    def test_full_memory_while_away_is_emptied_and_the_held_messages_follow(self) -> Any:
        for n in range(4):
            self.device.send(MODEM, f"ALARM {n}")
        yield until(lambda: len(self.network.pending_for(MODEM)) == 2)
        yield self.started()
        texts = []
        for _ in range(4):
            incoming = yield self.inbox.next()
            texts.append(incoming.text)
        self.assertEqual(sorted(texts), [f"ALARM {n}" for n in range(4)])
        self.assertEqual(self.network.pending_for(MODEM), [])

    @inlineCallbacks
    def test_memory_full_indication_starts_a_sweep(self) -> Any:
        channel = yield self.started()
        gate: Deferred[None] = Deferred()
        seen: list[str] = []

        def slow(incoming: IncomingSms) -> Deferred[None]:
            seen.append(incoming.text)
            return gate

        channel._message_handlers.insert(0, slow)
        for n in range(3):
            self.device.send(MODEM, f"ALARM {n}")
        yield until(lambda: channel.stats["storage_full"] >= 1)
        self.assertIn("+CIEV: 5,1", self.modem.unsolicited)
        gate.callback(None)
        texts = []
        for _ in range(3):
            incoming = yield self.inbox.next()
            texts.append(incoming.text)
        self.assertEqual(sorted(texts), ["ALARM 0", "ALARM 1", "ALARM 2"])


class TextModeTests(ChannelCase):
    mode = "text"

    @inlineCallbacks
    def test_plain_text_goes_in_text_mode(self) -> Any:
        channel = yield self.started()
        self.assertEqual((self.modem.cmgf, self.modem.csdh, self.modem.cscs), (1, 1, "GSM"))
        outgoing = yield channel.send(DEVICE, "RELAY 2 OFF @ 12:00")
        self.assertIn(f'AT+CMGS="{DEVICE}",145', self.modem.commands)
        self.assertEqual(self.network.messages[-1].text, "RELAY 2 OFF @ 12:00")
        reports = yield outgoing.delivered
        self.assertEqual(reports[0].outcome, DeliveryStatus.DELIVERED)

    @inlineCallbacks
    def test_text_outside_the_alphabet_falls_back_to_pdu_mode(self) -> Any:
        channel = yield self.started()
        yield channel.send(DEVICE, "Zähler © [x]")
        self.assertEqual(self.network.messages[-1].text, "Zähler © [x]")
        self.assertEqual(self.modem.commands[-1], "AT+CMGF=1")
        self.assertEqual(self.modem.cmgf, 1)

    @inlineCallbacks
    def test_receives_gsm_ucs2_and_concatenated_messages(self) -> Any:
        yield self.started()
        texts = ["ALARM Tür offen", "Störung ©", "LOG " + "y" * 200]
        for text in texts:
            self.device.send(MODEM, text)
        got = []
        for _ in texts:
            incoming = yield self.inbox.next()
            got.append(incoming.text)
        self.assertEqual(sorted(got), sorted(texts))


class ChannelOverPtyTests(unittest.TestCase):
    """The peer test of python-gsmmodem-new (tests.interop.test_gsmmodem), with fep's channel
    on the same simulated modem over a socat pty pair."""

    @inlineCallbacks
    def test_send_receive_report_concatenate_and_sweep_over_a_pty(self) -> Any:
        a, b = yield socat_pty_pair(self)
        network = GsmNetwork(reactor)
        modem = GsmModemEmulator(MODEM, capacity=10)
        network.attach(modem)
        device = SimulatedFieldDevice(network, DEVICE, replies={"STATUS?": "STATUS OK 12.1V"})
        device.send(MODEM, "ALARM while away")
        yield until(lambda: modem.stores["SM"].used == 1)
        port = serve_pty(reactor, a, modem)
        self.addCleanup(port.loseConnection)
        inbox = Inbox()
        channel = SmsChannel(reactor, SmsSettings(f"serial:{b}:115200:8N1", command_timeout=3))
        channel.add_message_handler(inbox)
        channel.startService()
        self.addCleanup(channel.stopService)
        yield channel.ready()
        swept = yield inbox.next()
        self.assertEqual(swept.text, "ALARM while away")
        outgoing = yield channel.send(DEVICE, "STATUS?")
        answer = yield inbox.next()
        self.assertEqual((answer.sender, answer.text), (DEVICE, "STATUS OK 12.1V"))
        reports = yield outgoing.delivered
        self.assertEqual(reports[0].outcome, DeliveryStatus.DELIVERED)
        long_text = "Zählerstand © 1.8.0 " * 12
        yield channel.send(DEVICE, long_text)
        yield until(lambda: len(device.received) == 2)
        self.assertEqual(device.received[1].text, long_text)
        yield until(lambda: modem.stores["SM"].used == 0)
