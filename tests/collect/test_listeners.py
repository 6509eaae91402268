"""The collection engine's listeners (ICollectionListener): what load-profile and events
jobs collected that the store did not hold, per meter and UTC day, and every job's end;
against a simulated DLMS meter over TCP and a SQLite store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from fep.collect.engine import resource_policy
from fep.collect.tasks import Task
from fep.interfaces import ICollectionListener
from fep.model import Meter
from fep.sim import dlms_meter
from tests.collect.harness import engine_for, jobs_ended
from tests.collect.test_dlms_jobs import save, serve
from tests.daemon.harness import wait_for


@implementer(ICollectionListener)
class Listener:
    def __init__(self) -> None:
        self.collected_: list[tuple[str, dict[str, list[date]]]] = []
        self.ended: list[tuple[str | None, str, str]] = []

    def collected(self, kind: str, days: Mapping[str, Sequence[date]]) -> None:
        self.collected_.append((kind, {m: list(d) for m, d in days.items()}))

    def job_ended(self, task: str | None, kind: str, due: float, status: str) -> None:
        self.ended.append((task, kind, status))


async def until(condition: Any) -> None:
    async def holds() -> bool:
        return bool(condition())

    await wait_for(holds, 30, "the listener to hear", every=0.05)


class ListenerTests(unittest.TestCase):
    timeout = 60

    async def test_a_gap_re_collected_is_told_with_its_day_once(self) -> None:
        """A re-collection job of yesterday 02:00-04:00: the listener hears of meter m1's
        yesterday, and of the job's end; the same job again finds nothing missing and says
        nothing more."""
        from fep.cli.collect import recollect_job

        listener = Listener()
        verifyObject(ICollectionListener, listener)
        sim = dlms_meter.SimulatedDlmsMeter()
        meter = Meter("m1", "dlms", serve(self, sim))
        engine, _ = await engine_for(self, [meter])
        engine.listeners.append(listener)
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        since, until_ = day - timedelta(days=1, hours=-2), day - timedelta(days=1, hours=-4)
        for ended in (1, 2):
            job = recollect_job(meter, since, until_, reactor.seconds(),
                                resource_policy(engine.settings), interval=900)
            await engine.jobs.add_jobs([job], reactor.seconds())
            engine.scheduler.kick()
            await jobs_ended(engine, ended)
            await until(lambda n=ended: len(listener.ended) == n)
        self.assertEqual(listener.collected_,
                         [("load-profile", {"m1": [since.date()]})])
        self.assertEqual([(kind, status) for _, kind, status in listener.ended],
                         [("load-profile", "done")] * 2)

    async def test_events_already_stored_are_not_told_again(self) -> None:
        """An events job reads its window again each run: the first run's events are told
        (the days they fall on), the second run's, all stored, are not."""
        now = datetime.now(UTC).replace(microsecond=0)
        two_days = now - timedelta(days=2)
        sim = dlms_meter.SimulatedDlmsMeter(events=[(two_days, 1), (now - timedelta(hours=1), 2)])
        engine, _ = await engine_for(self, [Meter("m1", "dlms", serve(self, sim))])
        listener = Listener()
        engine.listeners.append(listener)
        await save(engine, Task(name="ev", kind="events", schedule="every 1h",
                                options={"horizon": "3d"}))
        for ended in (1, 2):
            await engine.scheduler.run_now("ev")
            await jobs_ended(engine, ended)
            await until(lambda n=ended: len(listener.ended) == n)
        self.assertEqual(listener.collected_, [("events", {"m1": sorted(
            {two_days.date(), (now - timedelta(hours=1)).date()})})])
        self.assertEqual(listener.ended, [("ev", "events", "done")] * 2)

    async def test_a_failing_listener_is_logged_and_the_job_still_ends(self) -> None:
        @implementer(ICollectionListener)
        class Broken(Listener):
            def job_ended(self, task: str | None, kind: str, due: float,
                          status: str) -> None:
                raise RuntimeError("broken listener")

        sim = dlms_meter.SimulatedDlmsMeter(events=[(datetime.now(UTC), 1)])
        engine, _ = await engine_for(self, [Meter("m1", "dlms", serve(self, sim))])
        listener, broken = Listener(), Broken()
        engine.listeners.extend([broken, listener])
        await save(engine, Task(name="ev", kind="events", schedule="every 1h"))
        await engine.scheduler.run_now("ev")
        await jobs_ended(engine, 1)
        await until(lambda: listener.ended)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ConcentratorListenerTests(unittest.TestCase):
    timeout = 60

    async def test_the_meters_read_by_point_are_told_each_with_its_days(self) -> None:
        """A concentrator's load-profile job reads its three meters' curves of a day (UTC+8,
        so two UTC days): each meter is told with both days; the next cycle, everything
        stored, tells nothing."""
        from tests.collect.test_concentrator_jobs import Fleet, day_task, the_day
        from tests.collect.test_concentrator_jobs import save as save_task

        fleet = Fleet(self, 1, 3)
        engine, _ = await engine_for(self, fleet.meters)
        listener = Listener()
        engine.listeners.append(listener)
        await save_task(engine, day_task())
        for cycle in (1, 2):
            await engine.scheduler.run_now("daily")
            await jobs_ended(engine, 4 * cycle, task="daily")
            await until(lambda n=cycle: sum(1 for e in listener.ended if e[2] == "done") >= n)
        since, until_ = the_day()
        days = sorted({since.date(), (until_ - timedelta(minutes=15)).date()})
        self.assertEqual(listener.collected_, [("load-profile", {
            "DCU1-M1": days, "DCU1-M2": days, "DCU1-M3": days})])
