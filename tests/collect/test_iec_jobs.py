"""The collection engine against a simulated IEC 62056-21 meter over TCP (the channel layer's
real endpoints, a SQLite store), all in programming mode: load profile gaps re-collected
from P.01 like DLMS gaps, the logbook (P.98) as events, the clock policy with W5 0.9.1/0.9.2
and time-set, parameter-set, and a wrong password failing the job with the meter's
refusal."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect import commands
from fep.collect.engine import approval_of, resource_policy
from fep.collect.tasks import CommandStatus, JobStatus, Task
from fep.model import EventKind, Meter
from fep.sim.iec62056_21 import IecMeterServerFactory, SimulatedIecMeter
from tests.collect.harness import engine_for, jobs_ended, listen
from tests.daemon.harness import wait_for
from tests.fakes import ShiftedClock

PASSWORD = {"iec_password": "00000000"}


def serve(testcase: Any, sim: SimulatedIecMeter) -> str:
    return f"tcp:host=127.0.0.1:port={listen(testcase, IecMeterServerFactory([sim], reactor))}"


async def save(engine: Any, task: Task) -> None:
    now = reactor.seconds()
    await engine.jobs.save_task(attrs.evolve(task, next_due=task.first_due(now) + 3600), now)


def rows(store: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(store.path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


class IecLoadProfileTests(unittest.TestCase):
    timeout = 60

    async def test_profile_gaps_are_recollected_from_p01_like_dlms_gaps(self) -> None:
        # Five minutes into a quarter hour on every run: no new interval ends half-way.
        clock = ShiftedClock(reactor, phase=300.0, period=900.0)
        sim = SimulatedIecMeter(clock=clock.seconds)
        meter = Meter("i1", "iec62056-21", serve(self, sim), metadata=PASSWORD)
        engine, store = await engine_for(self, [meter], clock=clock)
        await save(engine, Task(name="lp", kind="load-profile", schedule="every 15m",
                                options={"horizon": "3h"}))
        await engine.scheduler.run_now("lp")
        (first,) = await jobs_ended(engine, 1)
        self.assertEqual(first.status, JobStatus.DONE, first.error)
        starts = rows(store, "SELECT obis, start_time FROM intervals ORDER BY 1, 2")
        by_obis: dict[str, list[str]] = {}
        for obis, start in starts:
            by_obis.setdefault(obis, []).append(start)
        self.assertEqual(set(by_obis), {"1-0:1.5.0*255", "1-0:2.5.0*255"})
        # Every quarter hour of the last three hours that has ended (12), and the one
        # before, which the captures from the horizon's start hold.
        self.assertIn(len(by_obis["1-0:1.5.0*255"]), (12, 13))
        # Holes: two intervals of one channel, one of the other.
        holes = by_obis["1-0:1.5.0*255"][3:5] + by_obis["1-0:2.5.0*255"][7:8]
        conn = sqlite3.connect(store.path)
        conn.execute("DELETE FROM intervals WHERE (obis = '1-0:1.5.0*255' AND start_time IN "
                     "(?, ?)) OR (obis = '1-0:2.5.0*255' AND start_time = ?)", holes)
        conn.commit()
        conn.close()
        self.assertEqual(len(rows(store, "SELECT 1 FROM intervals")), len(starts) - 3)
        await engine.scheduler.run_now("lp")
        second = next(j for j in await jobs_ended(engine, 2) if j.id != first.id)
        self.assertEqual(second.status, JobStatus.DONE, second.error)
        self.assertTrue(second.result.startswith("3 of 3 missing intervals read"),
                        second.result)
        self.assertEqual(rows(store, "SELECT obis, start_time FROM intervals ORDER BY 1, 2"),
                         starts)
        # The second session asked the meter for the holes' range only, by R5 P.01.
        reads = [c for c in sim.commands_seen if c.startswith("R5 P.01(")]
        self.assertEqual(len(reads), 2)
        self.assertNotEqual(reads[0], reads[1])
        self.assertGreater(second.bytes_in, 0)
        self.assertLess(second.bytes_in, first.bytes_in)


class IecEventAndClockTests(unittest.TestCase):
    timeout = 60

    async def test_the_logbook_becomes_events(self) -> None:
        now = reactor.seconds()
        sim = SimulatedIecMeter(logbook=[(now - 7200.0, 0x80), (now - 7000.0, 0x40),
                                         (now - 30 * 86400.0, 0x80)])
        meter = Meter("i1", "iec62056-21", serve(self, sim), metadata=PASSWORD)
        engine, store = await engine_for(self, [meter])
        await save(engine, Task(name="ev", kind="events", schedule="every 1h",
                                options={"horizon": "1d"}))
        await engine.scheduler.run_now("ev")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual((job.status, job.result), (JobStatus.DONE, "2 events"), job.error)
        events = await store.events("i1")
        self.assertEqual([e.kind for e in events],
                         [EventKind.POWER_OUTAGE, EventKind.POWER_RESTORED])

    async def test_the_clock_task_sets_a_meter_between_the_bounds(self) -> None:
        sim = SimulatedIecMeter(clock_offset=90.0)
        meter = Meter("i1", "iec62056-21", serve(self, sim), metadata=PASSWORD)
        engine, _ = await engine_for(self, [meter])
        await save(engine, Task(name="clock", kind="clock", schedule="every 1d",
                                options={"lower": "10s", "upper": "5m"}))
        await engine.scheduler.run_now("clock")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual(job.status, JobStatus.DONE, job.error)
        deviation = float(job.result.split("deviation ")[1].split(" s")[0])
        self.assertTrue(88 < deviation < 92, job.result)
        self.assertIn("clock set", job.result)
        self.assertLess(abs(sim.clock_offset), 1.0)

    async def test_a_wrong_password_fails_the_job_with_the_meters_refusal(self) -> None:
        sim = SimulatedIecMeter(password="other", clock_offset=90.0)
        meter = Meter("i1", "iec62056-21", serve(self, sim), metadata=PASSWORD)
        engine, _ = await engine_for(self, [meter])
        await save(engine, Task(name="clock", kind="clock", schedule="every 1d",
                                retries=0, options={"lower": "10s", "upper": "5m"}))
        await engine.scheduler.run_now("clock")
        (job,) = await jobs_ended(engine, 1)
        self.assertEqual(job.status, JobStatus.FAILED)
        self.assertIn("meter i1: P1 (password) refused by the meter: break (B0)", job.error)
        self.assertEqual(sim.clock_offset, 90.0)


class IecCommandTests(unittest.TestCase):
    timeout = 60

    async def command(self, sim: SimulatedIecMeter, action: str, **params: Any) -> Any:
        meter = Meter("i1", "iec62056-21", serve(self, sim), metadata=PASSWORD)
        engine, _ = await engine_for(self, [meter])
        asked = await commands.request(
            engine.jobs, meter, action, params, "alice", reactor.seconds(),
            approval=approval_of(engine.settings), policy=resource_policy(engine.settings),
            retry_delay=0.2)
        self.assertEqual(asked.status, CommandStatus.QUEUED)  # none of these needs approval
        engine.scheduler.kick()

        async def settled() -> bool:
            c = await engine.jobs.command(asked.id)
            return c.status in (CommandStatus.DONE, CommandStatus.FAILED)

        await wait_for(settled, 30, f"command {asked.id} to end", every=0.05)
        return await engine.jobs.command(asked.id)

    async def test_time_set_puts_the_meter_clock_within_a_second(self) -> None:
        sim = SimulatedIecMeter(clock_offset=-40.0)
        done = await self.command(sim, "time-set")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertLess(abs(sim.clock_offset), 1.0)

    async def test_parameter_set_writes_the_register(self) -> None:
        sim = SimulatedIecMeter()
        done = await self.command(sim, "parameter-set", **{"demand-period": "30"})
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertEqual(sim.parameters["0.8.0"], "30")
        self.assertIn("demand-period=30", done.outcome)

    async def test_time_sync_applies_the_clock_policy(self) -> None:
        sim = SimulatedIecMeter(clock_offset=timedelta(minutes=20).total_seconds())
        done = await self.command(sim, "time-sync", lower="10s", upper="5m")
        self.assertEqual(done.status, CommandStatus.DONE, done.outcome)
        self.assertIn("alarm, not corrected", done.outcome)
        self.assertEqual(sim.clock_offset, 1200.0)
