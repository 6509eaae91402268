"""Two fep daemons (``twistd fep``, separate processes) share one PostgreSQL and the same task
set: each job of a run is leased by one node and runs once; when one node is killed in the
middle of a run (SIGKILL: no goodbye), the other takes its jobs once their leases expire and
completes the run. Jobs are made by `fep tasks run-now` from a third process."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from fep.collect.jobstore import job_store
from fep.collect.tasks import Task
from fep.model import Meter
from fep.sim.dlt645 import Dlt645BusFactory, make_meters
from fep.store import open_store
from tests.collect.harness import listen
from tests.daemon.harness import ROOT, Daemon, wait_for
from tests.postgres import fresh_database

METERS = 40
LEASE = 3.0


def config(workdir: Path, url: str, node: str) -> Path:
    path = workdir / f"{node}.ini"
    path.write_text(
        f"[fep]\nnode = {node}\ndata_dir = {workdir / node}\n"
        f"[store]\nurl = {url}\n"
        "[spool]\nmax_delay = 0.02\n"
        f"[collect]\ntimeout = 3\nconcurrency = 3\nlease = {LEASE}\npoll = 0.2\n"
        "default_task = no\n"
        f"[log]\nlevel = info\njson_file = {workdir / node}/fep.log.json\n"
    )
    return path


class TwoNodeTests(unittest.TestCase):
    timeout = 180

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement, params)
                return cursor.fetchall()
        finally:
            conn.close()

    async def fep(self, *args: str) -> str:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "fep.cli", "--db", self.url, *args], env=env,
            path=str(ROOT))
        self.assertEqual(code, 0, err.decode())
        return out.decode()

    def run_jobs(self, due: float) -> dict[str, tuple[str, str, int]]:
        rows = self.sql("SELECT meter, status, node, attempts FROM jobs WHERE task = 'regs'"
                        " AND due = %s", due)
        return {m: (s, n, a) for m, s, n, a in rows}

    async def run_now(self) -> float:
        before = {d for (d,) in self.sql("SELECT DISTINCT due FROM jobs")}
        print(await self.fep("tasks", "run-now", "regs"))
        (due,) = [d for (d,) in self.sql("SELECT DISTINCT due FROM jobs") if d not in before]
        return float(due)

    async def all_done(self, due: float, timeout: float) -> dict[str, tuple[str, str, int]]:
        async def done() -> bool:
            jobs = self.run_jobs(due)
            return len(jobs) == METERS and all(s == "done" for s, _, _ in jobs.values())

        await wait_for(done, timeout, "every job of the run to be done", every=0.1)
        return self.run_jobs(due)

    async def test_each_job_once_and_a_dead_nodes_jobs_finished_by_the_other(self) -> None:
        self.url = fresh_database(self)
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        buses: dict[str, Dlt645BusFactory] = {}
        meters = []
        for n in range(METERS):
            (sim,) = make_meters(1, first_address=f"{n + 1:012d}")
            bus = Dlt645BusFactory([sim], reactor, answer_delay=0.15)
            port = listen(self, bus)
            meters.append(Meter(f"m{n:02d}", "dlt645",
                                f"tcp:host=127.0.0.1:port={port}@{sim.address}"))
            buses[meters[-1].id] = bus
        store = open_store(self.url, reactor)
        await store.open()
        await store.add_meters(meters)
        now = time.time()
        await job_store(store).save_task(
            Task(name="regs", kind="registers", schedule="every 1d", items="00010000,02010100",
                 retries=2, retry_delay=1.0, next_due=now + 86400), now)
        await store.close()

        nodes = {name: Daemon(config(workdir, self.url, name), workdir / name)
                 for name in ("a", "b")}
        for name, daemon in nodes.items():
            (workdir / name).mkdir()
            daemon.log = workdir / f"{name}.twistd.log"
            daemon.start()
            self.addCleanup(daemon.kill)

        async def both_up() -> bool:
            return all(f"fep node {name} running" in d.log_text() for name, d in nodes.items())

        await wait_for(both_up, 60, "both nodes to start")
        # A run with both nodes alive: every job leased and run by exactly one node.
        first = await self.run_now()
        jobs = await self.all_done(first, 60)
        self.assertEqual({a for _, _, a in jobs.values()}, {1})
        self.assertEqual({n for _, n, _ in jobs.values()}, {"a", "b"})
        self.assertEqual({m: b.connections for m, b in buses.items()},
                         dict.fromkeys(buses, 1))
        readings = dict(self.sql("SELECT meter, count(*) FROM readings GROUP BY meter"))
        self.assertEqual(set(readings), set(buses))

        # A second run; node b dies while it holds jobs.
        before = {m: b.connections for m, b in buses.items()}
        second = await self.run_now()
        held: dict[str, tuple[str, float]] = {}

        async def b_is_busy() -> bool:
            # One query, so that what b holds and what it has done are seen at one moment.
            rows = self.sql("SELECT meter, status, lease_until FROM jobs WHERE due = %s"
                            " AND node = 'b' AND status IN ('leased', 'running', 'done')",
                            second)
            done = sum(s == "done" for _, s, _ in rows)
            rows = [(m, s, u) for m, s, u in rows if s != "done"]
            if sum(s == "running" for _, s, _ in rows) >= 2 and done >= 2:
                held.update({m: (s, u) for m, s, u in rows})
                return True
            return False

        await wait_for(b_is_busy, 30, "node b to run jobs of the second run", every=0.02)
        nodes["b"].kill()
        killed_at = time.time()
        at_kill = self.run_jobs(second)
        b_done = {m for m, (s, n, _) in at_kill.items() if s == "done" and n == "b"}
        orphans = {m for m, (s, n, _) in at_kill.items() if n == "b" and s != "done"}
        self.assertTrue(orphans, (held, at_kill))
        jobs = await self.all_done(second, 60)
        finished = dict(self.sql("SELECT meter, finished_at FROM jobs WHERE due = %s", second))
        for meter in orphans:
            status, node, attempts = jobs[meter]
            self.assertEqual((status, node), ("done", "a"), meter)
            self.assertGreaterEqual(attempts, 1)
            # Taken over only once b's lease had run out.
            self.assertGreaterEqual(finished[meter], killed_at + 1.0, meter)
        for meter in b_done:
            self.assertEqual(jobs[meter], ("done", "b", 1))
        # Every meter was read once in the second run; a meter whose job b had under way
        # when it died was connected to once more.
        for meter, bus in buses.items():
            extra = bus.connections - before[meter]
            if meter in orphans:
                self.assertIn(extra, (1, 2), meter)
            else:
                self.assertEqual(extra, 1, meter)
        # The statistics count each job once.
        (total,) = self.sql("SELECT sum(jobs) FROM collect_stats WHERE scope = 'task'")[0]
        self.assertEqual(total, 2 * METERS)
        self.assertEqual(await nodes["a"].interrupt(), 0, nodes["a"].log_text()[-3000:])
