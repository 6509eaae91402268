"""A SIM that is slow after a change: the SMS channel waits for ``+CPIN: NOT READY`` to turn
READY and asks again after "SIM busy", within ``sim_wait``; past it, a clear error."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from fep.channels.modem.sms import SmsChannel, SmsSettings
from fep.errors import ChannelError
from fep.sim.gsm_modem import GsmModemEmulator
from tests.channels.modem.test_sms import MODEM, ChannelCase, reactor


class SlowSim(GsmModemEmulator):
    """AT+CPIN? answers NOT READY the first ``not_ready`` times (a SIM just inserted)."""

    not_ready = 2

    def _cmd_cpin(self, op: str, arg: str, lines: list[str]) -> None:
        if op == "?" and self.not_ready > 0:
            self.not_ready -= 1
            lines.append("+CPIN: NOT READY")
            return
        super()._cmd_cpin(op, arg, lines)


class SlowSimTests(ChannelCase):
    def setUp(self) -> None:
        super().setUp()
        self.modem = SlowSim(MODEM, capacity=self.capacity)
        self.network.attach(self.modem)
        self.port.factory.modem = self.modem  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_not_ready_sim_is_waited_for(self) -> Any:
        channel = yield self.started(sim_wait=20.0)
        self.assertEqual(self.modem.not_ready, 0)  # type: ignore[attr-defined]
        self.assertEqual(self.modem.commands.count("AT+CPIN?"), 3)
        self.assertTrue(channel.is_ready)

    @inlineCallbacks
    def test_a_sim_that_stays_not_ready_is_a_clear_error(self) -> Any:
        self.modem.not_ready = 100  # type: ignore[attr-defined]
        channel = SmsChannel(reactor, SmsSettings(self.route(), command_timeout=2.0,
                                                  sim_wait=1.5))
        channel.running = True
        self.addCleanup(lambda: channel.stopService())
        with self.assertRaises(ChannelError) as cm:
            yield Deferred.fromCoroutine(channel._open())
        self.assertIn("the SIM is not ready after 1.5 s (NOT READY)", str(cm.exception))
        self.assertIn("fep Simulated GSM modem on tcp:127.0.0.1:", str(cm.exception))
