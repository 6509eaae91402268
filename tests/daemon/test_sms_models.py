"""Acceptance: recorded dialogues of real modem models (tests/fixtures/modems, replayed on a
socat pty by tests/channels/modem/replay.py) as the daemon's [sms] modem. Each model
initialises, receives a field device's alarm text (stored once as a meter event, deleted
from the SIM) and sends a text (the alarm notification to the operator's number).

The Nokia N79 offers no message memory over AT: the daemon sends through it and says it
cannot read (tests/channels/modem/test_replay_models.py)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from fep.model import Meter
from fep.sim.gsm_modem import GsmNetwork, SimulatedFieldDevice, serve_pty
from tests.channels.modem.replay import ReplayModem, load_script
from tests.channels.test_serialport import socat_pty_pair
from tests.daemon import harness
from tests.daemon.harness import Daemon, wait_for, write_config

MODEM = "+491700000001"
DEVICE = "+491510000009"
OPERATOR = "+491701234567"
PIN = "1234"

TABLE = f"""
[notify:control-room]
severity = critical
sms = {OPERATOR}
"""


class SmsModelDaemonTests(unittest.TestCase):
    timeout = 180

    async def run_model(self, name: str, mode: str = "pdu") -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        await harness.add_meters(f"sqlite:{db}", [
            Meter("meter-1", "iec62056_21", "tcp:host=127.0.0.1:port=1",
                  metadata={"sms_number": DEVICE})])

        a, b = await socat_pty_pair(self)
        network = GsmNetwork(reactor)
        modem = ReplayModem(load_script(name), MODEM, capacity=10)
        network.attach(modem)
        device = SimulatedFieldDevice(network, DEVICE)
        serial = serve_pty(reactor, a, modem)
        self.addCleanup(serial.loseConnection)

        (workdir / "alarms.ini").write_text(TABLE)
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, collect=False,
            extra=(f"[alarms]\ntable = {workdir / 'alarms.ini'}\n"
                   f"[sms]\nport = serial:{b}:115200:8N1\nmode = {mode}\npin = {PIN}\n"
                   "sweep_interval = 600\n"
                   "rules =\n    POWER\\s*FAIL => power-outage critical PWR\n"
                   "[control]\nenabled = no\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        rows = partial(harness.sqlite_rows, db)

        await daemon.logged("dialect", timeout=90)
        await daemon.logged(" ready (", timeout=90)
        device.send(MODEM, "POWER FAIL L1")

        async def notified() -> bool:
            return bool(rows("SELECT 1 FROM alarm_notifications WHERE outcome = 'sent'",
                             strict=False)) and bool(network.messages)

        await wait_for(notified, 60, f"{name}: the alarm text sent through the modem",
                       every=0.2)

        async def deleted() -> bool:
            return all(store.used == 0 for store in modem.stores.values())

        await wait_for(deleted, 30, f"{name}: the received text deleted from the SIM")
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])

        self.assertEqual(
            rows("SELECT meter, kind, code, source FROM events"),
            [("meter-1", "power-outage", "PWR", f"sms:{DEVICE}")])
        self.assertEqual(rows("SELECT channel, target, outcome FROM alarm_notifications"),
                         [("sms", OPERATOR, "sent")])
        [text] = network.messages
        self.assertEqual(text.destination, OPERATOR)
        self.assertIn("power-outage meter meter-1", text.text)
        log = daemon.log_text()
        manufacturer = modem.script.answers["AT+CGMI"][0].strip()
        self.assertIn(manufacturer, log)
        self.assertNotIn("did not answer", log)

    async def test_huawei_k3715(self) -> None:
        await self.run_model("huawei_k3715")

    async def test_huawei_e1752(self) -> None:
        await self.run_model("huawei_e1752")

    async def test_wavecom_multiband_900e_1800(self) -> None:
        await self.run_model("wavecom_multiband")

    async def test_qualcomm_m6280_in_text_mode(self) -> None:
        await self.run_model("qualcomm_m6280", mode="text")

    async def test_zte_k3565z(self) -> None:
        await self.run_model("zte_k3565z")

    async def test_siemens_mc35i(self) -> None:
        await self.run_model("siemens_mc35i")
