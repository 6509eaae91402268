"""A modem that stops answering in the middle of a text: the silence is counted and logged
with the modem and its port, the line is reopened, a received text is handed over once when
the modem answers again, and a text being sent is sent again (when the modem never took it)
or reported as failed (when it may have gone), never dropped in silence."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher

from fep.channels.modem.at import ModemTimeout
from fep.sim.gsm_modem import GsmModemEmulator
from tests.channels.modem.test_sms import DEVICE, MODEM, ChannelCase, until

reactor: Any = global_reactor


class StoppingModem(GsmModemEmulator):
    """Stops answering part-way: in the middle of a +CMGR answer (``cut_read``), or after
    taking a text's body without answering (``swallow_send``)."""

    cut_read = False
    swallow_send = False

    def _write(self, data: bytes) -> None:
        if self.cut_read and b"+CMGR:" in data:
            self.cut_read = False
            self.silent = True
            data = data[: len(data) // 2]  # the header and half the PDU, then nothing
        super()._write(data)

    def _body_byte(self, byte: int) -> None:
        if self.swallow_send and byte == 0x1A:
            # The text goes to the network, the answer never comes.
            self.swallow_send = False
            self._send(self._pdu_submit(*self._pending_pdu()))
            self._body = None
            self.silent = True
            return
        super()._body_byte(byte)

    def _pending_pdu(self) -> tuple[str, str]:
        assert self._body is not None and self._body_command is not None
        return self._body_command[1], self._body.decode("latin-1")


class SilentModemTests(ChannelCase):
    def setUp(self) -> None:
        super().setUp()
        modem = StoppingModem(MODEM, capacity=self.capacity)
        self.network.attach(modem)
        self.modem = modem
        # The factory serves the emulator it was built with.
        self.port.factory.modem = modem  # type: ignore[attr-defined]
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def log_lines(self) -> list[str]:
        return [formatEvent(e) for e in self.logged]

    @inlineCallbacks
    def test_silence_mid_read_loses_nothing_and_hands_the_text_over_once(self) -> Any:
        channel = yield self.started(command_timeout=0.5, sweep_interval=0)
        self.modem.cut_read = True  # type: ignore[attr-defined]
        self.device.send(MODEM, "POWER FAIL L2")
        yield until(lambda: channel.stats["timeouts"] >= 1, 10)
        # Counted, logged with the modem and its port, and the line given up.
        route = self.route()
        self.assertTrue(any("did not answer AT+CMGR=1" in line and route in line
                            for line in self.log_lines()), self.log_lines())
        self.assertEqual(self.inbox.items, [])
        self.assertEqual(self.modem.stores["SM"].used, 1)  # still on the SIM
        yield until(lambda: not channel.is_ready, 10)
        self.modem.silent = False
        # Back: the sweep at start reads it; handed over once, then deleted.
        yield until(lambda: channel.is_ready, 10)
        message = yield self.inbox.next(10)
        self.assertEqual(message.text, "POWER FAIL L2")
        yield until(lambda: self.modem.stores["SM"].used == 0, 10)
        yield channel.sweep()
        self.assertEqual(len(self.inbox.items), 1)

    @inlineCallbacks
    def test_silence_before_the_text_was_taken_sends_it_once_the_modem_is_back(self) -> Any:
        channel = yield self.started(command_timeout=0.5, send_timeout=0.5)
        self.modem.silent = True

        def answer_again() -> None:
            self.modem.silent = False

        sending = channel.send(DEVICE, "STATUS?")
        yield until(lambda: channel.stats["timeouts"] >= 1, 10)
        answer_again()
        outgoing = yield sending
        self.assertEqual(len(outgoing.references), 1)
        self.assertEqual([m.text for m in self.network.messages], ["STATUS?"])
        self.assertEqual(channel.stats["send_retries"], 1)
        self.assertEqual(channel.stats["send_failures"], 0)

    @inlineCallbacks
    def test_silence_after_the_text_was_taken_is_reported_not_resent(self) -> Any:
        channel = yield self.started(command_timeout=0.5, send_timeout=0.5)
        self.modem.swallow_send = True  # type: ignore[attr-defined]
        error = yield self.assertFailure(channel.send(DEVICE, "RELAY 2 ON"), ModemTimeout)
        self.assertTrue(error.body_sent)
        self.assertIn(f"SMS modem fep Simulated GSM modem on {self.route()}", str(error))
        self.assertEqual(channel.stats["send_failures"], 1)
        self.assertEqual(channel.stats["send_retries"], 0)
        self.assertTrue(any("may have gone" in line for line in self.log_lines()))
        # It went once (the network has it); fep did not send it a second time.
        self.assertEqual([m.text for m in self.network.messages], ["RELAY 2 ON"])
        self.modem.silent = False
        yield until(lambda: channel.is_ready, 10)
        self.assertEqual(len(self.network.messages), 1)
        self.assertEqual(DEVICE, self.network.messages[0].destination)
