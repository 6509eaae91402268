"""The daemon reads a bus of three meters of mixed protocols and addresses (IEC 62056-21
device address, DL/T 645 address, DLMS HDLC physical address) on one serial line, a socat
pty pair whose far end is the simulated bus on the test's reactor, all in one cycle; a
fourth address on the bus that nobody answers fails alone."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from fep.model import Meter
from fep.sim.bus import mixed_bus, serve_pty
from tests.channels.test_serialport import socat_pty_pair
from tests.daemon.harness import Daemon, add_meters, sqlite_rows, wait_for, write_config


class SerialBusTests(unittest.TestCase):
    timeout = 120

    async def test_bus_of_three_mixed_meters_read_in_one_cycle(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        fep_end, bus_end = await socat_pty_pair(self)
        bus = mixed_bus(reactor, iec=["10000001"], dlt645=["000000123456"], dlms=[17])
        port = serve_pty(reactor, bus_end, bus)
        self.addCleanup(port.loseConnection)
        line = f"serial:{fep_end}"
        meters = [
            Meter("iec-1", "iec62056-21", f"{line}:300:7E1:gap=0.02@10000001"),
            Meter("gone-9", "iec62056-21", f"{line}:300:7E1:gap=0.02@10000009"),
            Meter("dlt-1", "dlt645", f"{line}:2400:8E1:gap=0.02@000000123456"),
            Meter("dlms-17", "dlms", f"{line}:9600:8N1:gap=0.02@1/17",
                  metadata={"dlms_link": "hdlc"}),
        ]
        await add_meters(f"sqlite:{db}", meters)
        # One cycle: the period is far longer than the test.
        config = write_config(workdir, f"sqlite:{db}", push_port=0, period=600)
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)

        rows = partial(sqlite_rows, db)

        def outcomes() -> dict[str, list[str]]:
            # The collection engine's job outcomes (the default task's first run is at
            # start): done or failed, per meter.
            out: dict[str, list[str]] = {}
            for meter, status in rows("SELECT meter, status FROM jobs ORDER BY id"):
                if status in ("done", "failed"):
                    out.setdefault(meter, []).append("ok" if status == "done" else "failed")
            return out

        async def cycle_done() -> bool:
            return len(outcomes()) == len(meters)

        await wait_for(cycle_done, 60, "one reading cycle over the bus")
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
        self.assertEqual(outcomes(), {"iec-1": ["ok"], "gone-9": ["failed"], "dlt-1": ["ok"],
                                      "dlms-17": ["ok"]})
        stored = {m for (m,) in rows("SELECT DISTINCT meter FROM readings")}
        self.assertEqual(stored, {"iec-1", "dlt-1", "dlms-17"})
        units = dict(rows("SELECT meter, unit_code FROM readings WHERE obis = '1-0:1.8.0*255' "
                          "GROUP BY meter"))
        self.assertEqual(units, {"iec-1": 30, "dlt-1": 30, "dlms-17": 30})
        answered = bus.buses[0].answered()
        self.assertTrue(all(answered.values()), answered)
