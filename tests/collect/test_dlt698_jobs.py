"""The collection engine against a simulated DL/T 698.45 meter over TCP: the minute-frozen
profile by time range with gaps read again, and the clock read (40000200) and set (SET of
40000200) under the clock policy."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import attrs
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from fep.collect import gaps
from fep.collect.tasks import JobStatus, Task
from fep.model import Meter
from fep.protocols.dlt698.session import Dlt698Protocol
from fep.protocols.registry import protocol_commands
from fep.sim.dlt698 import Dlt698MeterFactory, SimulatedDlt698Meter
from tests.collect.harness import engine_for, jobs_ended, listen


async def save(engine, task: Task) -> None:
    now = reactor.seconds()
    await engine.jobs.save_task(attrs.evolve(task, next_due=now + 3600), now)


class Dlt698JobTests(unittest.TestCase):
    timeout = 60

    def meter(self, **kw) -> tuple[SimulatedDlt698Meter, Meter]:
        sim = SimulatedDlt698Meter("000000123456", started=time.time() - 86400, **kw)
        port = listen(self, Dlt698MeterFactory([sim], reactor))
        return sim, Meter("m698", "dlt698", f"tcp:host=127.0.0.1:port={port}",
                          address=sim.address)

    async def test_the_frozen_profile_by_range_with_gaps_read_again(self) -> None:
        sim, meter = self.meter()
        period = timedelta(minutes=15)
        # The meter lost two rows of its minute-frozen table an hour ago...
        rows = sim.frozen_times(0x5002)
        sim.holes = {rows[-5], rows[-4]}
        engine, store = await engine_for(self, [meter])
        await save(engine, Task(name="lp", kind="load-profile", schedule="every 15m",
                                options={"horizon": "2h"}))
        await engine.scheduler.run_now("lp")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual(job.status, JobStatus.DONE, job.error)
        now = datetime.fromtimestamp(job.started_at, UTC)
        start = now - timedelta(hours=2)
        closed_until = datetime.fromtimestamp(rows[-1], UTC) - period
        blocks = await store.intervals(meter.id, obis="1.8.0")
        # ... so the intervals they close are missing after the first read.
        lost = [datetime.fromtimestamp(t, UTC) - period for t in sorted(sim.holes)]
        self.assertEqual(gaps.missing(blocks, start, closed_until, period), lost)
        # The rows come back (read from the meter's backup); the next run reads the gap
        # again and the profile is whole.
        sim.holes = set()
        sim.log.clear()
        await engine.scheduler.run_now("lp")
        await jobs_ended(engine, 2)
        blocks = await store.intervals(meter.id, obis="1.8.0")
        self.assertEqual(gaps.missing(blocks, start, closed_until, period), [])
        self.assertTrue(any(entry.startswith("record 50020200") for entry in sim.log))

    async def test_clock_read_and_set(self) -> None:
        sim, meter = self.meter(clock_offset=90.0)
        engine, _ = await engine_for(self, [meter])
        await save(engine, Task(name="clock", kind="clock", schedule="every 1d",
                                options={"lower": "10s", "upper": "5m"}))
        await engine.scheduler.run_now("clock")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual(job.status, JobStatus.DONE, job.error)
        deviation = float(job.result.split("deviation ")[1].split(" s")[0])
        self.assertTrue(85 < deviation < 95, job.result)
        self.assertIn("clock set", job.result)
        self.assertLess(abs(sim.clock_offset), 2)
        self.assertIn("set 40000200", sim.log)

    async def test_events_since_a_time(self) -> None:
        sim, meter = self.meter()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", int(meter.route.rsplit("=", 1)[1]))
        events = await Dlt698Protocol().read_events(reactor, endpoint, meter, None, 5.0)
        self.assertEqual([e.kind.value for e in events],
                         ["power-outage", "power-restored"] * sim.outages)
        # From the start of the last outage on (date_time_s has whole seconds).
        since = datetime.fromtimestamp(int(sim.outage_rows()[-1][1]), UTC)
        later = await Dlt698Protocol().read_events(reactor, endpoint, meter, since, 5.0)
        self.assertEqual([e.time >= since for e in later], [True, True])

    def test_the_protocol_runs_time_set_and_time_sync(self) -> None:
        # With the control commands (tests/collect/test_dlt698_control.py).
        self.assertLessEqual({"time-set", "time-sync"}, protocol_commands("dlt698"))
