"""The collection engine against a simulated DL/T 645-2007 bus over TCP: load records by
time range with gaps read again, and the clock read from its DIs and set by broadcast."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import attrs
from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect import gaps
from fep.collect.tasks import JobStatus, Task
from fep.model import Meter
from fep.sim.dlt645 import Dlt645BusFactory, make_meters
from tests.collect.harness import engine_for, jobs_ended, listen


async def save(engine, task: Task) -> None:
    now = reactor.seconds()
    await engine.jobs.save_task(attrs.evolve(task, next_due=now + 3600), now)


class Dlt645JobTests(unittest.TestCase):
    timeout = 60

    def bus(self, **kw):
        sims = make_meters(2, started=time.time() - 86400, **kw)
        port = listen(self, Dlt645BusFactory(sims, reactor))
        route = f"tcp:host=127.0.0.1:port={port}"
        return sims, [Meter(f"d{n}", "dlt645", f"{route}@{s.address}")
                      for n, s in enumerate(sims, 1)]

    async def test_load_records_by_range(self) -> None:
        _, fleet = self.bus()
        engine, store = await engine_for(self, fleet)
        await save(engine, Task(name="lp", kind="load-profile", schedule="every 15m",
                                options={"horizon": "2h"}))
        await engine.scheduler.run_now("lp")
        jobs = await jobs_ended(engine, 2)
        self.assertEqual({j.status for j in jobs}, {JobStatus.DONE}, [j.error for j in jobs])
        now = datetime.fromtimestamp(max(j.started_at for j in jobs), UTC)
        period = timedelta(minutes=15)
        expected = gaps.grid(now - timedelta(hours=2), now, period)
        for meter in fleet:
            blocks = await store.intervals(meter.id, obis="1.8.0")
            self.assertEqual(gaps.missing(blocks, now - timedelta(hours=2), now, period), [])
            starts = {s for b in blocks for s, _, _ in b.intervals()}
            self.assertTrue(set(expected) <= starts)
        # Both meters on one line: one job at a time, never overlapping.
        a, b = sorted(jobs, key=lambda j: j.started_at)
        self.assertLessEqual(a.finished_at, b.started_at)

    async def test_clock_read_and_broadcast_set(self) -> None:
        sims, fleet = self.bus(clock_offset=90.0)
        engine, _ = await engine_for(self, fleet[:1])
        await save(engine, Task(name="clock", kind="clock", schedule="every 1d",
                                options={"lower": "10s", "upper": "5m"}))
        await engine.scheduler.run_now("clock")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual(job.status, JobStatus.DONE, job.error)
        deviation = float(job.result.split("deviation ")[1].split(" s")[0])
        self.assertTrue(85 < deviation < 95, job.result)
        self.assertIn("clock set", job.result)
        # A broadcast: every meter on the bus took the time.
        for sim in sims:
            self.assertLess(abs(sim.clock_offset), 2)
