"""The daemon reads a pulse recorder on its schedule: the simulated two-channel recorder on
Modbus TCP (the test's reactor), read by the real ``twistd fep`` through its collection engine with
the ``modbus-pulse`` protocol; energy and demand intervals reach the store with their units
and the recorder's door-open event with its severity."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from fep.model import Meter
from fep.sim.pulse_recorder import PulseRecorder, RecorderServerFactory
from tests.daemon.harness import Daemon, add_meters, sqlite_rows, wait_for, write_config


class PulseRecorderDaemonTests(unittest.TestCase):
    timeout = 120

    async def test_recorder_is_polled_into_the_store(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        now = time.time()
        recorder = PulseRecorder(started=(now - 3 * 3600) // 900 * 900,
                                 schedule=[(now - 1800, "door-open")])
        port = reactor.listenTCP(0, RecorderServerFactory(recorder, reactor, unit=2),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        meter = Meter("rec-1", "modbus-pulse", f"tcp:host=127.0.0.1:port={port.getHost().port}",
                      address="2", metadata={
                          "modbus_device_map": "sim-pr2", "pulse1_constant": "1000",
                          "pulse1_wiring": "kyz", "pulse2_constant": "500",
                          "pulse2_quantity": "reactive-import", "pulse_history": "8"})
        await add_meters(f"sqlite:{db}", [meter])
        daemon = Daemon(write_config(workdir, f"sqlite:{db}", push_port=0,
                                     period=1.0), workdir)
        daemon.start()
        self.addCleanup(daemon.kill)

        rows = partial(sqlite_rows, db)

        async def stored() -> bool:
            return bool(rows("SELECT 1 FROM events WHERE meter = 'rec-1'")) and bool(
                rows("SELECT 1 FROM intervals WHERE obis = '1-2:3.29.0*255'"))

        await wait_for(stored, 60, "intervals and events of the recorder")
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
        units = dict(rows("SELECT obis, unit_code FROM intervals WHERE meter = 'rec-1' "
                          "GROUP BY obis"))
        self.assertEqual(units["1-1:1.29.0*255"], 30)  # Wh
        self.assertEqual(units["1-1:1.5.0*255"], 27)  # W
        self.assertEqual(units["1-2:3.29.0*255"], 32)  # varh
        self.assertEqual(units["1-2:3.5.0*255"], 29)  # var
        # Input 1: 1200 pulses/h (KYZ, 1 Wh a pulse): 300 Wh in every 15 minutes.
        values = {v for (v,) in rows("SELECT value FROM intervals WHERE obis = "
                                     "'1-1:1.29.0*255'")}
        self.assertEqual(values, {"300"})
        # Input 2: 600 pulses/h (KY, 2 varh a pulse): 300 varh in every 15 minutes.
        values = {v for (v,) in rows("SELECT value FROM intervals WHERE obis = "
                                     "'1-2:3.29.0*255'")}
        self.assertEqual(values, {"300"})
        self.assertEqual(rows("SELECT code, severity FROM events WHERE meter = 'rec-1'"),
                         [("door-open", "major")])
        status = rows("SELECT value FROM readings WHERE meter = 'rec-1' AND "
                      "obis = '0-0:96.51.0*255'")
        self.assertTrue(status and all(v == "1" for (v,) in status))
