"""Peer test: python-gsmmodem-new (PyPI, test-only) drives fep's simulated GSM modem over a
socat pty pair: its start-up dialogue, sending in PDU and text mode (a long UCS2 text as
concatenated parts), delivery reports, receiving on +CMTI, and the sweep of stored messages.

The library is blocking and threaded: its calls run in a thread (deferToThread) while the
emulator answers in the reactor.
"""

from __future__ import annotations

import threading
from typing import Any

from gsmmodem.modem import GsmModem, ReceivedSms, SentSms
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from fep.sim.gsm_modem import GsmModemEmulator, GsmNetwork, SimulatedFieldDevice, serve_pty
from tests.channels.test_serialport import socat_pty_pair

reactor: Any = global_reactor
MODEM = "+491700000001"
DEVICE = "+491510000009"


class Received:
    """Messages the library's callback got, with an event to wait on in the thread."""

    def __init__(self) -> None:
        self.messages: list[ReceivedSms] = []
        self.event = threading.Event()

    def __call__(self, sms: ReceivedSms) -> None:
        self.messages.append(sms)
        self.event.set()


class GsmModemLibraryTests(unittest.TestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        a, b = yield socat_pty_pair(self)
        self.device_path = b
        # Network latency apart: the library reads two URCs arriving in one burst as one
        # notification and handles only the first.
        self.network = GsmNetwork(reactor, report_delay=0.05, delivery_delay=0.2)
        self.modem = GsmModemEmulator(MODEM, capacity=10)
        self.network.attach(self.modem)
        self.device = SimulatedFieldDevice(
            self.network, DEVICE, replies={"STATUS?": "STATUS OK 12.1V"}
        )
        port = serve_pty(reactor, a, self.modem)
        self.addCleanup(port.loseConnection)
        self.received = Received()

    def connect(self, **kwargs: Any) -> GsmModem:
        """Runs in the library's thread."""
        library = GsmModem(
            self.device_path, 115200, smsReceivedCallbackFunc=self.received, **kwargs
        )
        library.connect()
        return library

    def run_library(self, work: Any, **kwargs: Any) -> Any:
        def in_thread() -> Any:
            library = self.connect(**kwargs)
            try:
                return work(library)
            finally:
                library.close()

        return deferToThread(in_thread)

    @inlineCallbacks
    def test_start_up_dialogue_and_identification(self) -> Any:
        def work(library: GsmModem) -> dict[str, Any]:
            return {
                "manufacturer": library.manufacturer,
                "model": library.model,
                "imei": library.imei,
                "imsi": library.imsi,
                "signal": library.signalStrength,
                "network": library.networkName,
                "smsc": library.smsc,
                "coverage": library.waitForNetworkCoverage(5),
            }

        got = yield self.run_library(work)
        self.assertEqual(
            got,
            {
                "manufacturer": "fep",
                "model": "Simulated GSM modem",
                "imei": "490154203237518",
                "imsi": "262011234567890",
                "signal": 20,
                "network": "fep mobile",
                "smsc": "+491710760000",
                "coverage": 20,
            },
        )
        # The library picked the ME memory from AT+CPMS=? and asked for +CMTI and +CDSI.
        self.assertEqual(self.modem.mem, ["ME", "ME", "ME"])
        self.assertEqual(self.modem.cnmi[:4], [2, 1, 0, 2])
        self.assertIn("ATE0", self.modem.commands)

    @inlineCallbacks
    def test_pdu_mode_send_with_delivery_report_and_the_devices_answer(self) -> Any:
        def work(library: GsmModem) -> tuple[int, int, list[tuple[str, str]]]:
            sent = library.sendSms(
                DEVICE, "STATUS?", waitForDeliveryReport=True, deliveryTimeout=10
            )
            self.assertTrue(self.received.event.wait(10))
            return sent.reference, sent.status, [(m.number, m.text) for m in self.received.messages]

        reference, status, messages = yield self.run_library(work)
        self.assertEqual(status, SentSms.DELIVERED)
        (sms,) = self.network.sent
        self.assertEqual(
            (sms.destination, sms.submit.body, sms.reference), (DEVICE, "STATUS?", reference)
        )
        self.assertTrue(sms.submit.status_report)
        self.assertEqual(messages, [(DEVICE, "STATUS OK 12.1V")])
        # The library deleted what it read: the report and the answer.
        self.assertEqual(self.modem.stores["ME"].used, 0)

    @inlineCallbacks
    def test_long_ucs2_text_goes_as_concatenated_parts(self) -> Any:
        text = "Zählerstand © 1.8.0 " * 12

        def work(library: GsmModem) -> None:
            library.sendSms(DEVICE, text)

        # No status reports here: the library reads a +CDSI between two parts in another
        # thread and its AT+CMGR lands inside the next part's PDU (its race, not the modem's).
        yield self.run_library(work, AT_CNMI="2,1,0,0,0")
        self.assertGreater(len(self.network.sent), 1)
        self.assertEqual([m.text for m in self.device.received], [text])

    @inlineCallbacks
    def test_text_mode_send_and_receive(self) -> Any:
        def work(library: GsmModem) -> list[tuple[str, str]]:
            library.smsTextMode = True
            library.sendSms(DEVICE, "RELAY 2 ON")
            reactor.callFromThread(self.device.send, MODEM, "RELAY 2 IS ON")
            self.assertTrue(self.received.event.wait(10))
            return [(m.number, m.text) for m in self.received.messages]

        messages = yield self.run_library(work, requestDelivery=False)
        self.assertEqual(self.modem.cmgf, 1)
        self.assertEqual(self.network.messages[0].text, "RELAY 2 ON")
        self.assertEqual(messages, [(DEVICE, "RELAY 2 IS ON")])

    @inlineCallbacks
    def test_messages_stored_while_away_are_swept(self) -> Any:
        self.network.delivery_delay = 0
        for text in ("ALARM 1", "ALARM 2 " + "x" * 200):
            self.device.send(MODEM, text)
        # Delivered before the library set AT+CNMI: stored without an indication.
        yield deferLater(reactor, 0, lambda: None)
        self.assertEqual(self.modem.stores["SM"].used, 3)

        def work(library: GsmModem) -> list[str]:
            library._setSmsMemory(readDelete="SM")  # where they were stored
            library.processStoredSms()
            return [m.text for m in self.received.messages]

        texts = yield self.run_library(work)
        # The library does not join concatenated parts: the long alarm comes as two texts.
        self.assertEqual(texts[0], "ALARM 1")
        self.assertEqual("".join(texts[1:]), "ALARM 2 " + "x" * 200)
        self.assertEqual(self.modem.stores["SM"].used, 0)
