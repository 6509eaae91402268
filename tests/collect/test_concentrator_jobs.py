"""Concentrator jobs against simulated Q/GDW 1376.1 concentrators listening on TCP: one
cycle of a load-profile task stores every meter's daily frozen energy and 96-point curve of
the day exactly once over one session per concentrator; each meter behind a concentrator
gets its own job outcome and statistics; a session dropped midway is finished on the retry
without asking again what was read; a meter that gave nothing is re-collected by the next
run; register tasks read the current values by point.

The acceptance figure is 5 concentrators with 200 meters each (``CONCENTRATORS`` x
``METERS``); it ran in 6 to 11 s on two busy cores (SQLite). ``make test`` runs 80 meters
each (`tests.scale`), still more than the 64 points a dropped session leaves read;
``make test-full`` runs the 200.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect.operator import EngineScheduler
from fep.collect.tasks import JobStatus, Task
from fep.model import Meter
from fep.protocols.gw3761.records import DEFAULT_TERMINAL_TZ
from fep.sim.concentrator import ConcentratorFactory, SimulatedConcentrator, make_concentrator
from tests.collect.harness import engine_for, jobs_ended, listen
from tests.daemon.harness import free_port, wait_for
from tests.inprocess import fep_main
from tests.postgres import fresh_database
from tests.scale import scaled

CONCENTRATORS = 5
METERS = scaled(200, 80)
# Daily values per meter: the total and four tariffs of forward active energy.
TARIFFS = 5
INTERVALS = 96
# The moment the day of the tests is taken from (the module's import).
DAY_OF_TESTS = time.time()


def the_day() -> tuple[datetime, datetime]:
    """Yesterday in the concentrators' zone (UTC+8), as UTC [since, until): a day they have
    whole, whatever the time of day the test runs (taken once per test: the same day for
    all its cycles even when midnight passes meanwhile)."""
    today = datetime.fromtimestamp(DAY_OF_TESTS, DEFAULT_TERMINAL_TZ).date()
    start = datetime.combine(today - timedelta(days=1), datetime.min.time(),
                             DEFAULT_TERMINAL_TZ)  # fmt: skip
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


class Fleet:
    """Simulated concentrators on loopback and the meter list naming them and their
    meters (``DCU<i>``, ``DCU<i>-M<point>``)."""

    def __init__(self, testcase: unittest.TestCase, concentrators: int, meters: int,
                 forward_port: int | None = None, **factory: Any) -> None:  # fmt: skip
        self.sims: list[SimulatedConcentrator] = []
        self.factories: list[ConcentratorFactory] = []
        self.meters: list[Meter] = []
        for i in range(1, concentrators + 1):
            sim = make_concentrator(meters, f"4403:{i:04X}", first_meter=f"{i * 1000:012d}")
            f = ConcentratorFactory(sim, reactor, **factory.get(f"DCU{i}", {}))
            port = listen(testcase, f)
            self.sims.append(sim)
            self.factories.append(f)
            dcu = f"DCU{i}"
            self.meters.append(Meter(dcu, "gw3761", f"tcp:host=127.0.0.1:port={port}",
                                     address=f"4403:{i:04X}"))  # fmt: skip
            for point, m in enumerate(sim.meters, 1):
                route = f"gw3761:{dcu}" + (f":port={forward_port}" if forward_port else "")
                self.meters.append(Meter(f"{dcu}-M{point}", "dlt645", route,
                                         address=m.address,
                                         metadata={"concentrator": dcu, "point": str(point)}))

    @property
    def children(self) -> list[Meter]:
        return [m for m in self.meters if m.protocol == "dlt645"]


async def save(engine: Any, task: Task) -> None:
    now = reactor.seconds()
    await engine.jobs.save_task(attrs.evolve(task, next_due=now + 3600), now)


def day_task(name: str = "daily", **kw: Any) -> Task:
    since, until = the_day()
    return Task(name=name, kind="load-profile", schedule="every 1d", retry_delay=0.2,
                options={"since": since.isoformat(), "until": until.isoformat()}, **kw)


class Acceptance:
    """The acceptance: SQLite (ConcentratorJobTests) and PostgreSQL (the last class)."""

    timeout = 120
    url: str | None = None
    concentrators = CONCENTRATORS
    meters = METERS

    async def cycle(self, engine: Any, name: str, jobs: int) -> list[Any]:
        await engine.scheduler.run_now(name)
        return await jobs_ended(engine, jobs, timeout=90, task=name)

    async def test_one_cycle_stores_every_meters_day_once_over_one_session_each(self) -> None:
        fleet = Fleet(self, self.concentrators, self.meters)
        engine, store = await engine_for(self, fleet.meters, url=self.url)
        await save(engine, day_task())
        total = self.concentrators * (self.meters + 1)
        jobs = await self.cycle(engine, "daily", total)
        by_meter = {j.meter: j for j in jobs}
        self.assertEqual(len(by_meter), total)
        failed = [(j.meter, j.error) for j in jobs if j.status != JobStatus.DONE]
        self.assertEqual(failed, [])
        children = self.concentrators * self.meters
        self.assertEqual(await store.count("intervals"), children * INTERVALS)
        self.assertEqual(await store.count("readings"), children * TARIFFS)
        # One session per concentrator, no connection per meter.
        self.assertEqual([f.connections for f in fleet.factories], [1] * self.concentrators)
        # Each meter behind a concentrator: its own job, done at the first attempt, its
        # records counted; the concentrator's job says how many it read.
        child = by_meter["DCU1-M7"]
        self.assertEqual((child.attempts, child.first_ok, child.records), (1, True, 1 + 5))
        self.assertEqual(child.route, "gw3761:DCU1")
        self.assertIn("read through concentrator DCU1", child.result)
        self.assertIn(f"{self.meters} of {self.meters} meters behind it read",
                      by_meter["DCU1"].result)  # fmt: skip
        stats = {r.key: r for r in await engine.jobs.stats("2000-01-01", "meter")}
        self.assertEqual((stats["DCU1-M7"].jobs, stats["DCU1-M7"].ok), (1, 1))
        self.assertEqual((stats["DCU1"].jobs, stats["DCU1"].ok), (1, 1))
        (task_row,) = await engine.jobs.stats("2000-01-01", "task")
        self.assertEqual((task_row.jobs, task_row.ok, task_row.first_ok), (total,) * 3)
        # The operator tier (status page, API, console) sees them as jobs of their own.
        seen = EngineScheduler(engine, store)
        shown = {j["meter"]: j for j in await seen.jobs(total)}
        last = f"DCU5-M{self.meters}"
        self.assertEqual(shown[last]["state"], "done")
        self.assertIn("read through concentrator DCU5", shown[last]["outcome"])
        self.assertEqual(seen.job_outcomes(), {"done": total})
        blocks = await store.intervals(f"DCU2-M{self.meters}")
        since, _ = the_day()
        self.assertEqual([(b.start, len(b.values)) for b in blocks], [(since, INTERVALS)])
        self.assertEqual({b.source for b in blocks}, {"DCU2"})
        # The next cycle finds nothing missing: nothing asked, nothing stored again.
        asked = [s.requests for s in fleet.sims]
        await save(engine, day_task("again"))
        again = await self.cycle(engine, "again", total)
        self.assertEqual({j.status for j in again}, {JobStatus.DONE})
        self.assertEqual([s.requests for s in fleet.sims], asked)
        self.assertEqual(await store.count("intervals"), children * INTERVALS)
        self.assertEqual(await store.count("readings"), children * TARIFFS)
        self.assertIn("already stored", {j.meter: j for j in again}["DCU3-M1"].result)

    async def test_a_session_dropped_midway_is_finished_on_the_retry(self) -> None:
        # DCU2 hangs up after its second answer: the first 64 points' daily values and curves.
        fleet = Fleet(self, 2, self.meters, DCU2={"hang_up_after": 2})
        engine, store = await engine_for(self, fleet.meters, url=self.url)
        await save(engine, day_task(retries=2))
        jobs = await self.cycle(engine, "daily", 2 * (self.meters + 1))
        by_meter = {j.meter: j for j in jobs}
        self.assertEqual({j.status for j in jobs}, {JobStatus.DONE},
                         [(j.meter, j.error) for j in jobs if j.status != JobStatus.DONE])
        dcu = by_meter["DCU2"]
        self.assertEqual((dcu.attempts, dcu.first_ok), (2, False))
        self.assertEqual([f.connections for f in fleet.factories], [1, 2])
        self.assertEqual(fleet.factories[1].hang_ups, 1)
        # The retry asked only what was left: as many requests as one clean cycle.
        self.assertEqual(fleet.sims[1].requests, fleet.sims[0].requests)
        self.assertEqual((by_meter["DCU2-M64"].attempts, by_meter["DCU2-M64"].first_ok),
                         (1, True))  # fmt: skip
        self.assertEqual((by_meter["DCU2-M65"].attempts, by_meter["DCU2-M65"].first_ok),
                         (2, False))  # fmt: skip
        children = 2 * self.meters
        self.assertEqual(await store.count("intervals"), children * INTERVALS)
        self.assertEqual(await store.count("readings"), children * TARIFFS)



class ConcentratorJobTests(Acceptance, unittest.TestCase):
    async def test_a_meter_that_gave_nothing_fails_and_is_recollected_next_run(self) -> None:
        fleet = Fleet(self, 1, 10)
        sim = fleet.sims[0]
        sim.silent.add(sim.meters[2].address)
        engine, store = await engine_for(self, fleet.meters, url=self.url)
        await save(engine, day_task())
        jobs = {j.meter: j for j in await self.cycle(engine, "daily", 11)}
        self.assertEqual(jobs["DCU1-M3"].status, JobStatus.FAILED)
        self.assertIn("through concentrator DCU1", jobs["DCU1-M3"].error)
        self.assertIn("no data for P3", jobs["DCU1-M3"].error)
        self.assertEqual(jobs["DCU1"].status, JobStatus.DONE)
        self.assertIn("9 of 10 meters behind it read, 1 failed", jobs["DCU1"].result)
        self.assertEqual(await store.intervals("DCU1-M3"), [])
        # The meter answers again: the next run asks only for it (the gap logic).
        sim.silent.clear()
        asked = sim.requests
        await save(engine, day_task("again"))
        again = {j.meter: j for j in await self.cycle(engine, "again", 11)}
        self.assertEqual({j.status for j in again.values()}, {JobStatus.DONE})
        self.assertEqual(sim.requests - asked, 2)
        self.assertIn("read through", again["DCU1-M3"].result)
        self.assertIn("already stored", again["DCU1-M4"].result)
        self.assertEqual(await store.count("intervals"), 10 * INTERVALS)

    async def test_what_the_concentrators_storage_lacks_is_read_by_forwarding(self) -> None:
        # Meter 2 is on the concentrator's port 31 but not in its archive: the concentrator
        # has no data for point 2, the meter answers forwarded DL/T 645 requests.
        fleet = Fleet(self, 1, 3, forward_port=31)
        sim = fleet.sims[0]
        del sim.archive[2]
        engine, store = await engine_for(self, fleet.meters, url=self.url)
        await save(engine, day_task())
        jobs = {j.meter: j for j in await self.cycle(engine, "daily", 4)}
        self.assertEqual({m: j.status for m, j in jobs.items()},
                         dict.fromkeys(("DCU1", "DCU1-M1", "DCU1-M2", "DCU1-M3"),
                                       JobStatus.DONE),
                         [(j.route, j.error) for j in jobs.values()])  # fmt: skip
        self.assertIn("read through concentrator DCU1", jobs["DCU1-M1"].result)
        second = jobs["DCU1-M2"]
        self.assertEqual(second.route, "gw3761:DCU1:port=31")
        self.assertIn("missing intervals read", second.result)
        self.assertGreater(sim.forwarded, 0)
        blocks = await store.intervals("DCU1-M2")
        self.assertTrue(blocks)
        self.assertEqual({b.source for b in blocks} & {"DCU1"}, set())
        self.assertEqual(await store.intervals("DCU1-M1", obis="1.8.0"), [])
        self.assertEqual(len((await store.intervals("DCU1-M1"))[0].values), INTERVALS)

    async def test_fep_recollect_of_a_meter_behind_asks_its_concentrator(self) -> None:
        fleet = Fleet(self, 1, 5)
        sim = fleet.sims[0]
        sim.silent.add(sim.meters[2].address)
        url = f"sqlite:{Path(self.mktemp()).resolve()}.sqlite"
        engine, store = await engine_for(self, fleet.meters, url=url)
        await save(engine, day_task())
        await self.cycle(engine, "daily", 6)
        self.assertEqual(await store.intervals("DCU1-M3"), [])
        sim.silent.clear()
        asked = sim.requests
        since, until = the_day()
        done = fep_main("--db", url, "recollect", "DCU1-M3", "--from", since.isoformat(),
                        "--to", until.isoformat())  # fmt: skip
        self.assertIn("will be read again through concentrator DCU1", done.stdout, done.stderr)
        engine.scheduler.kick()

        async def read_again() -> bool:
            jobs = await engine.jobs.jobs(meter="DCU1-M3", limit=None)
            return any(j.task is None and JobStatus(j.status).final for j in jobs)

        await wait_for(read_again, 30, "the re-collection of DCU1-M3", every=0.05)
        (job,) = [j for j in await engine.jobs.jobs(meter="DCU1-M3", limit=None)
                  if j.task is None]  # fmt: skip
        self.assertEqual(job.status, JobStatus.DONE, job.error)
        self.assertEqual(sim.requests - asked, 2)  # its daily value and its curve
        self.assertEqual([len(b.values) for b in await store.intervals("DCU1-M3")],
                         [INTERVALS])  # fmt: skip

    async def test_an_unreachable_concentrator_fails_its_meters_with_the_reason(self) -> None:
        fleet = Fleet(self, 1, 3)
        closed = free_port()
        meters = [attrs.evolve(m, route=f"tcp:host=127.0.0.1:port={closed}")
                  if m.id == "DCU1" else m for m in fleet.meters]  # fmt: skip
        engine, _ = await engine_for(self, meters, url=self.url)
        await save(engine, day_task(retries=0))
        jobs = {j.meter: j for j in await self.cycle(engine, "daily", 4)}
        self.assertEqual({j.status for j in jobs.values()}, {JobStatus.FAILED},
                         [(j.meter, j.result, j.error) for j in jobs.values()])
        self.assertIn("cannot connect", jobs["DCU1"].error)
        self.assertIn("3 of 3 meters behind it not read yet", jobs["DCU1"].error)
        self.assertIn("through concentrator DCU1: not read: ", jobs["DCU1-M2"].error)
        self.assertIn("cannot connect", jobs["DCU1-M2"].error)

    async def test_a_register_task_reads_current_values_by_point(self) -> None:
        fleet = Fleet(self, 1, 20)
        url = f"sqlite:{Path(self.mktemp()).resolve()}.sqlite"
        engine, store = await engine_for(self, fleet.meters, url=url)
        await save(engine, Task(name="regs", kind="registers", schedule="every 1d",
                                items=("0C:F129",)))  # fmt: skip
        jobs = {j.meter: j for j in await self.cycle(engine, "regs", 21)}
        self.assertEqual({j.status for j in jobs.values()}, {JobStatus.DONE})
        readings = await store.readings("DCU1-M20")
        self.assertEqual({r.native_id for r in readings}, {"0C:F129"})
        self.assertEqual({r.source for r in readings}, {"DCU1"})
        self.assertEqual(fleet.factories[0].connections, 1)
        self.assertEqual(fleet.sims[0].requests, 1)
        # The command line shows the meter's own job and statistics.
        shown = fep_main("--db", url, "jobs", "--meter", "DCU1-M20", "--format", "json")
        (row,) = [json.loads(line) for line in shown.stdout.splitlines()]
        self.assertEqual((row["meter"], row["status"]), ("DCU1-M20", "done"))
        stats = fep_main("--db", url, "stats", "--by", "meter", "--format", "json")
        rows = {r["key"]: r for r in map(json.loads, stats.stdout.splitlines())}
        self.assertEqual((rows["DCU1-M20"]["jobs"], rows["DCU1"]["jobs"]), (1, 1))
        # run-now of one meter behind it: a job of the concentrator for that meter.
        await engine.scheduler.stopService()
        now = fep_main("--db", url, "tasks", "run-now", "regs", "--meter", "DCU1-M3")
        self.assertIn("1 jobs to run now", now.stdout)
        (queued,) = [j for j in await engine.jobs.jobs(task="regs", limit=None)
                     if not JobStatus(j.status).final]  # fmt: skip
        self.assertEqual((queued.meter, dict(queued.params)),
                         ("DCU1", {"children": {"DCU1-M3": 3}}))


class PostgresConcentratorJobTests(Acceptance, unittest.TestCase):
    """The same on PostgreSQL (the production store)."""

    def setUp(self) -> None:
        self.url = fresh_database(self)
