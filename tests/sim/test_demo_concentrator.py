"""The README's demo fleet (`make demo`, fep.sim.demo): its configuration and meter list,
as the demo writes them, start the daemon, and the 20 DL/T 645 meters behind its simulated
Q/GDW 1376.1 concentrator are read as meters of their own through the concentrator's job,
by point (the other demo meters' simulators are not started here: their reads fail and
are not looked at); with the transformer's summary meter they make the demo's area, whose
load profiles the demo's task reads through the concentrator and whose balance of yesterday
finds the simulated line loss."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from fep.sim import demo
from fep.sim.concentrator import ConcentratorFactory, make_concentrator
from tests.collect.harness import listen
from tests.daemon.harness import Daemon, free_port, sqlite_rows, wait_for
from tests.processes import fep_command


class DemoConcentratorTests(unittest.TestCase):
    timeout = 240

    async def test_the_demo_reads_the_meters_behind_its_concentrator(self) -> None:
        sim = make_concentrator(demo.DCU_METERS, demo.DCU_ADDRESS,
                                summary_loss=Decimal(demo.DCU_LOSS))
        dcu_port = listen(self, ConcentratorFactory(sim, reactor))
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        config = demo.write_config(workdir, free_port(), 2.0, free_port(), free_port(), None)
        meters = demo.write_meters(workdir, 1, 1, 1, 1, 1, False, 1, dcu_port)
        areas = demo.write_areas(workdir)
        for args in (("db", "upgrade"), ("meters", "import", str(meters)),
                     ("areas", "import", str(areas)), demo.PROFILE_TASK):
            done = await fep_command("--config", str(config), *args, timeout=120)
            self.assertEqual(done.returncode, 0, done.stderr)
        behind = [demo.dcu_meter_id(n) for n in range(1, demo.DCU_METERS + 1)]
        rows = sqlite_rows(workdir / "fep.sqlite",
                           "SELECT id, route, metadata FROM meters WHERE id LIKE 'DCU-M%'")
        self.assertEqual(sorted(r[0] for r in rows), behind)
        self.assertEqual({r[1] for r in rows}, {"gw3761:DCU-0001:port=31"})
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.ready(node="demo", timeout=120)

        def read() -> set[str]:
            found = sqlite_rows(workdir / "fep.sqlite",
                                "SELECT DISTINCT meter FROM readings WHERE meter LIKE 'DCU-M%' "
                                "AND obis = '1-0:1.8.0*255'")
            return {r[0] for r in found}

        async def all_read() -> bool:
            return read() == set(behind)

        await wait_for(all_read, 150, "the 20 meters behind the concentrator to be read",
                       every=0.5)
        # Read by the concentrator's job, by point (docs/collection.md, concentrator jobs):
        # the simulator answered the job's requests, and forwarded nothing to its meters.
        self.assertGreater(sim.requests, 0)
        self.assertEqual(sim.forwarded, 0)

        # The area's curves of yesterday (96 intervals of each of its 21 meters), read by the
        # demo's load-profile task through the concentrator; then its balance.
        day = demo.balance_day(datetime.now(UTC))

        async def day_read() -> bool:
            (row,) = sqlite_rows(
                workdir / "fep.sqlite",
                "SELECT count(*) FROM intervals WHERE obis = '1-0:1.29.0*255' "
                f"AND start_time >= '{day}T00:00:00' AND start_time < '{day}T24:00:00'")
            return bool(row[0] >= 96 * (demo.DCU_METERS + 1))

        await wait_for(day_read, 150, f"the area's intervals of {day}", every=0.5)
        done = await fep_command("--config", str(config), "balance", "--day", day, "--area",
                                 demo.DCU_AREA, "--format", "json", timeout=120)
        self.assertEqual(done.returncode, 0, done.stderr)
        balance = json.loads(done.stdout)
        # Input 3 % more than the 20 members' consumption: 0.03 / 1.03 of it is lost.
        self.assertEqual((balance["area"], balance["members"], balance["intervals"],
                          balance["complete"], balance["loss_rate"]),
                         (demo.DCU_AREA, demo.DCU_METERS, 96, 100.0, 2.913))
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
