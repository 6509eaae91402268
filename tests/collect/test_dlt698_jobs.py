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
from fep.model import Meter, ObisCode
from fep.protocols.dlt698.objects import DAY_SERIES, MONTH_SERIES, add_months
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

    async def test_day_and_month_frozen_tables_with_gaps_read_again(self) -> None:
        sim, meter = self.meter(frozen_days=7, frozen_months=6)
        days, months = sim.frozen_times(0x5004), sim.frozen_times(0x5006)
        # The meter lost the rows frozen two and three days ago, and two months ago.
        sim.holes = {days[-3], days[-4], months[-3]}
        engine, store = await engine_for(self, [meter])
        await save(engine, Task(name="day", kind="load-profile", schedule="every 1d",
                                items=("50040200",), options={"horizon": "5d"}))
        await save(engine, Task(name="month", kind="load-profile", schedule="every 1d",
                                items=("50060200",), options={"horizon": "130d"}))
        await engine.scheduler.run_now("day")
        await engine.scheduler.run_now("month")
        first = await jobs_ended(engine, 2)
        for job in first:
            self.assertEqual(job.status, JobStatus.DONE, job.error)
        day, month = ObisCode(1, 0, 1, 8, 0, DAY_SERIES), ObisCode(1, 0, 1, 8, 0, MONTH_SERIES)
        got_days = await store.intervals(meter.id, obis=str(day))
        got_months = await store.intervals(meter.id, obis=str(month))
        tz = sim.tz
        def starts(blocks: list) -> set[str]:  # the store joins consecutive intervals
            return {t.astimezone(tz).strftime("%m-%d") for b in blocks
                    for t, _, _ in b.intervals()}  # fmt: skip

        def ends(blocks: list) -> set[datetime]:
            return {(t + b.period).astimezone(tz) for b in blocks for t, _, _ in b.intervals()}

        day_starts = starts(got_days)
        lost_days = {(datetime.fromtimestamp(t, tz) - timedelta(days=1)).strftime("%m-%d")
                     for t in (days[-3], days[-4])}  # fmt: skip
        # Each block is one local day, from local midnight; the lost days are not there.
        self.assertTrue(got_days)
        self.assertFalse(day_starts & lost_days)
        for b in got_days:
            self.assertEqual((b.period, b.start.astimezone(tz).hour), (timedelta(days=1), 0))
        # Each month block is one calendar month from the first, its value the register
        # frozen at the month's end.
        self.assertTrue(got_months)
        for b in got_months:
            for t, _, _ in b.intervals():
                local = t.astimezone(tz)
                self.assertEqual((local.day, local.hour), (1, 0))
                self.assertEqual((t + b.period).astimezone(tz), add_months(local, 1))
        lost_month = datetime.fromtimestamp(months[-3], tz)
        self.assertNotIn(lost_month, ends(got_months))
        # The rows come back; the next runs read only the gaps and the series are whole.
        sim.holes = set()
        sim.log.clear()
        await engine.scheduler.run_now("day")
        await engine.scheduler.run_now("month")
        second = [j for j in await jobs_ended(engine, 4) if j not in first]
        for job in second:
            self.assertEqual(job.status, JobStatus.DONE, job.error)
            self.assertIn(" missing intervals read", job.result)
            self.assertNotIn("did not give", job.result)
        got_days = await store.intervals(meter.id, obis=str(day))
        self.assertLessEqual(lost_days, starts(got_days))
        got_months = await store.intervals(meter.id, obis=str(month))
        self.assertIn(lost_month, ends(got_months))
        self.assertTrue(any(e.startswith("record 50040200") for e in sim.log))
        self.assertTrue(any(e.startswith("record 50060200") for e in sim.log))
        # The minute-frozen profile's intervals are another series (F 255): not touched.
        self.assertEqual(await store.intervals(meter.id, obis="1.8.0"), [])
        await engine.scheduler.run_now("day")
        third = [j for j in await jobs_ended(engine, 5) if j not in first + second]
        self.assertEqual(third[0].result, "no interval missing")

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
