"""The SMS channel against recorded dialogues of real modem models (tests/fixtures/modems,
replayed by tests/channels/modem/replay.py over loopback TCP): each model initialises,
receives a text and sends one; each model's recorded oddity is met and named."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from fep.channels.modem.sms import IncomingSms, SmsChannel, SmsSettings
from fep.sim.gsm_modem import GsmNetwork, SimulatedFieldDevice
from tests.channels.modem.replay import MODELS, ReplayModem, load_script
from tests.channels.modem.test_sms import Inbox, until

reactor: Any = global_reactor
MODEM = "+491700000001"
DEVICE = "+491510000009"
PIN = "1234"


class ReplayFactory(Factory):
    def __init__(self, modem: ReplayModem) -> None:
        self.modem = modem

    def buildProtocol(self, addr: Any) -> ReplayModem:
        return self.modem


class ModelCase(unittest.TestCase):
    model = ""
    mode = "pdu"

    def setUp(self) -> None:
        self.network = GsmNetwork(reactor)
        self.modem = ReplayModem(load_script(self.model), MODEM, capacity=10)
        self.network.attach(self.modem)
        self.device = SimulatedFieldDevice(
            self.network, DEVICE, replies={"STATUS?": "STATUS OK 12.1V"}
        )
        self.inbox = Inbox()
        self.port = reactor.listenTCP(0, ReplayFactory(self.modem), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def channel(self, **settings: Any) -> SmsChannel:
        settings.setdefault("mode", self.mode)
        settings.setdefault("pin", PIN)
        settings.setdefault("command_timeout", 3.0)
        settings.setdefault("reconnect_delay", 0.05)
        settings.setdefault("sim_wait", 20.0)
        route = f"tcp:127.0.0.1:{self.port.getHost().port}"
        channel = SmsChannel(reactor, SmsSettings(route, **settings))
        channel.add_message_handler(self.inbox)
        channel.startService()
        self.addCleanup(channel.stopService)
        return channel

    @inlineCallbacks
    def exchange(self, **settings: Any) -> Any:
        """Initialise, receive one text, send one; returns the channel."""
        channel = self.channel(**settings)
        yield channel.ready()
        self.device.send(MODEM, "POWER FAIL L1")
        incoming: IncomingSms = yield self.inbox.next(10)
        self.assertEqual((incoming.sender, incoming.text), (DEVICE, "POWER FAIL L1"))
        # Deleted once handed over: the memory the channel chose is empty again.
        yield until(lambda: all(store.used == 0 for store in self.modem.stores.values()), 10)
        yield channel.send(DEVICE, "STATUS?")
        self.assertEqual([m.text for m in self.device.received], ["STATUS?"])
        # The device's answer comes back through the same dialect.
        answer: IncomingSms = yield self.inbox.next(10)
        self.assertEqual(answer.text, "STATUS OK 12.1V")
        self.assertEqual(channel.stats["timeouts"], 0)
        self.assertEqual(channel.stats["received"], 2)
        self.assertEqual(channel.stats["sent"], 1)
        return channel


class HuaweiK3715Tests(ModelCase):
    model = "huawei_k3715"

    @inlineCallbacks
    def test_initialise_receive_send_with_rssi_reports_inside_answers(self) -> Any:
        channel = yield self.exchange()
        self.assertEqual((channel.manufacturer, channel.model), ("huawei", "K3715"))
        self.assertEqual(channel.dialect.name, "huawei")
        self.assertIn("AT^CURC=0", self.modem.commands)
        # ^RSSI came inside AT+CPMS=? and AT+CMGR answers and broke neither.
        self.assertIn("^RSSI:13", self.modem.injected)
        self.assertIn("^RSSI:9", self.modem.injected)


class HuaweiE1752Tests(ModelCase):
    model = "huawei_e1752"

    @inlineCallbacks
    def test_initialise_receive_send_with_command_not_support(self) -> Any:
        channel = yield self.exchange()
        self.assertEqual(channel.model, "E1752")
        # AT+CIND=? is unknown to it: "COMMAND NOT SUPPORT" is taken as ERROR, not waited on.
        self.assertIn("AT+CIND=?", self.modem.refused + self.modem.commands)


class WavecomTests(ModelCase):
    model = "wavecom_multiband"

    @inlineCallbacks
    def test_initialise_receive_send_with_cpin_without_ok_and_busy_after_cfun(self) -> Any:
        channel = yield self.exchange()
        # The padding of its identification is dropped; its dialect known.
        self.assertEqual((channel.manufacturer, channel.model),
                         ("WAVECOM MODEM", "MULTIBAND 900E 1800"))
        self.assertEqual(channel.dialect.name, "wavecom")
        # Radio was off: switched on, then two "+CME ERROR: 515" waited out.
        self.assertIn("AT+CFUN=1", self.modem.commands)
        self.assertEqual(channel.stats["busy_retries"], 2)
        # Two memory groups offered: two set (three would be refused).
        self.assertIn('AT+CPMS="SM","SM"', self.modem.commands)
        self.assertNotIn('AT+CPMS="SM","SM","SM"', self.modem.refused)


class QualcommM6280Tests(ModelCase):
    model = "qualcomm_m6280"
    mode = "text"

    @inlineCallbacks
    def test_initialise_receive_send_with_pin_first_sim_busy_and_smsc_cleared(self) -> Any:
        channel = yield self.exchange()
        self.assertEqual(channel.dialect.name, "qualcomm-zte")
        # Every command before the PIN was refused with +CME ERROR: 11: the PIN went first.
        self.assertEqual(self.modem.refused[0], "ATZ")
        self.assertIn(f'AT+CPIN="{PIN}"', self.modem.commands)
        # AT+CSCA? answered "SIM busy" three times, then the SIM's SMSC.
        self.assertGreaterEqual(channel.stats["busy_retries"], 3)
        # Text mode: its AT+CSMP clears the SMSC; the channel set it again.
        csmp = self.modem.commands.index("AT+CSMP=49,167,0,0")
        self.assertEqual(self.modem.commands[csmp + 1], 'AT+CSCA="+491710760000",145')


class QualcommWithoutQuirkTests(ModelCase):
    model = "qualcomm_m6280"
    mode = "text"

    @inlineCallbacks
    def test_without_its_dialect_the_cleared_smsc_fails_the_send_naming_modem_and_cause(
        self,
    ) -> Any:
        from fep.channels.modem import sms as sms_module
        from fep.channels.modem.dialects import GENERIC
        from fep.channels.modem.sms import SmsCommandError

        self.patch(sms_module, "dialect_for", lambda manufacturer, model: GENERIC)
        channel = self.channel()
        yield channel.ready()
        error = yield self.assertFailure(channel.send(DEVICE, "STATUS?"), SmsCommandError)
        self.assertIn("QUALCOMM INCORPORATED M6280 on tcp:127.0.0.1:", str(error))
        self.assertIn("+CMS ERROR 330: SMSC address unknown", str(error))
        self.assertEqual(channel.stats["send_failures"], 1)


class ZteK3565ZTests(ModelCase):
    model = "zte_k3565z"

    @inlineCallbacks
    def test_initialise_receive_send_with_odd_cfun_and_cmgr_without_status(self) -> Any:
        channel = yield self.exchange()
        self.assertEqual(channel.model, "K3565-Z")
        # "+CFUN: (0-1,4-7),(0-1)" is not taken for a radio that is off.
        self.assertNotIn("AT+CFUN=1", self.modem.commands)


class SiemensMc35iTests(ModelCase):
    model = "siemens_mc35i"

    @inlineCallbacks
    def test_initialise_receive_send_with_echo_that_stays_on(self) -> Any:
        channel = yield self.exchange()
        self.assertEqual((channel.manufacturer, channel.model), ("SIEMENS", "MC35i"))
        self.assertTrue(self.modem.echo)
        self.assertIn('AT+CPMS="SM","SM","SM"', self.modem.commands)


class NokiaN79Tests(ModelCase):
    model = "nokia_n79"

    @inlineCallbacks
    def test_a_phone_without_message_memory_sends_only_and_says_so(self) -> Any:
        channel = self.channel()
        yield channel.ready()
        self.assertEqual(channel.model, "Nokia N79")
        self.assertIsNone(channel._memory)
        # Nothing swept, no indications asked for.
        self.assertFalse(any(c.startswith(("AT+CMGL", "AT+CNMI=2")) for c in
                             self.modem.commands))
        self.assertEqual(channel.stats["sweeps"], 0)
        yield channel.send(DEVICE, "RELAY 2 ON")
        self.assertEqual([m.text for m in self.device.received], ["RELAY 2 ON"])


class EveryModelTests(unittest.TestCase):
    def test_every_script_names_its_source(self) -> None:
        for name in (*MODELS, "nokia_n79"):
            script = load_script(name)
            self.assertTrue(script.source.startswith(("python-gsmmodem-new", "gammu")), name)
            self.assertIn("AT+CGMI", script.answers, name)
