"""The README's demo fleet (`make demo`, fep.sim.demo): its configuration and meter list,
as the demo writes them, start the daemon, and the 20 DL/T 645 meters behind its simulated
Q/GDW 1376.1 concentrator are read as meters of their own through the concentrator's job,
by point (the other demo meters' simulators are not started here: their reads fail and
are not looked at)."""

from __future__ import annotations

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
        sim = make_concentrator(demo.DCU_METERS, demo.DCU_ADDRESS)
        dcu_port = listen(self, ConcentratorFactory(sim, reactor))
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        config = demo.write_config(workdir, free_port(), 2.0, free_port(), free_port(), None)
        meters = demo.write_meters(workdir, 1, 1, 1, 1, 1, False, 1, dcu_port)
        for args in (("db", "upgrade"), ("meters", "import", str(meters))):
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
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
