"""The analysis service (fep.analysis.daemon): the day's analyses run by the daemon on a
schedule, with a fake clock (twisted.internet.task.Clock) and the real store (SQLite and
PostgreSQL; the store's own threads and connections run on the real reactor).

The day 2026-12-01 of area T1: summary S 100 Wh every interval, member A 85, member B 5
except at 10:00, where it is -5 (reverse energy). Input 9600, consumption 85 x 96 + 5 x 95 -
5 = 8630, loss 970 = 10.104 %, above the band's 8 %: a line-loss alarm on S. B's reverse
interval is a finding ``reverse-energy`` of the rule ``reverse``, which ``vee_alarms``
names: an alarm ``analysis:vee:reverse-energy`` on B (it is below the low limit 0 too: a
finding ``low-limit``, of a rule ``vee_alarms`` does not name). A lost power from 10:00 to
10:40: one stored meter outage and, one of the two members being half of them (the default
share), an area outage of T1 and its alarm ``analysis:area-outage`` on S."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from fep.analysis import areas
from fep.analysis.balance import Band
from fep.analysis.daemon import ANALYSIS, AnalysisService
from fep.analysis.settings import VeeSettings
from fep.analysis.store import AnalysisStore
from fep.config import parse_config
from fep.errors import ConfigError, StoreError
from fep.interfaces import ICollectionListener, IRecordSink
from fep.model import EventKind, IntervalBlock, Meter, MeterEvent, ObisCode, Record, Severity
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.daemon.harness import wait_for as harness_wait_for
from tests.postgres import fresh_database

Q15 = timedelta(minutes=15)
DAY = date(2026, 12, 1)
T0 = datetime(2026, 12, 1, tzinfo=UTC)
CHANNEL = ObisCode(1, 0, 1, 29, 0)


@implementer(IRecordSink)
class Sink:
    """The router as the service sees it: what it submits is recorded."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def submit(self, records: Sequence[Record]) -> Deferred[None]:
        self.records += records
        return succeed(None)


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Until ``condition`` holds (the store's thread answers on the real reactor): the
    daemon tests' event wait, with a deadline on the clock."""

    async def holds() -> bool:
        return condition()

    await harness_wait_for(holds, timeout, "the analysis run to end", every=0.01)


def settings(**changes: Any) -> Any:
    items = [(k, v) for k, v in {"enabled": "yes", "days": "1", **changes}.items()]
    return ANALYSIS.read(items)


VEE = VeeSettings(band=Band(D(0), D(8)))


class ServiceBehaviours:
    def new_store(self) -> Any:
        raise NotImplementedError

    async def area_day(self, gap: int | None = None) -> Any:
        """The day of area T1; ``gap``: A's interval left out (not collected yet)."""
        store = self.new_store()
        await store.open()
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        b = [D(5)] * 96
        b[40] = D(-5)
        a = [IntervalBlock("A", CHANNEL, T0, Q15, (D(85),) * 96)] if gap is None else [
            IntervalBlock("A", CHANNEL, T0, Q15, (D(85),) * gap),
            IntervalBlock("A", CHANNEL, T0 + (gap + 1) * Q15, Q15, (D(85),) * (95 - gap))]
        await store.write([
            IntervalBlock("S", CHANNEL, T0, Q15, (D(100),) * 96),
            *a,
            IntervalBlock("B", CHANNEL, T0, Q15, tuple(b)),
            MeterEvent("A", "down", EventKind.POWER_OUTAGE, Severity.MAJOR,
                       T0 + timedelta(hours=10)),
            MeterEvent("A", "up", EventKind.POWER_RESTORED, Severity.INFO,
                       T0 + timedelta(hours=10, minutes=40)),
        ])
        await AnalysisStore(store).save_network(areas.read_csv(
            "area,meter,role\nT1,,\nT1,S,summary\nT1,A,member\nT1,B,member\n"))
        return store

    async def test_runs_the_days_analyses_at_the_configured_time(self) -> None:
        store = await self.area_day()
        clock = Clock()
        clock.advance(datetime(2026, 12, 2, 1, 0, tzinfo=UTC).timestamp())
        sink = Sink()
        service = AnalysisService(clock, store, settings(), VEE, sink)
        await service.startService()
        # 01:00: the next run is at 02:00, an hour away; nothing ran yet.
        (call,) = clock.getDelayedCalls()
        self.assertEqual(call.getTime() - clock.seconds(), 3600)  # type: ignore[attr-defined]
        self.assertEqual(service.runs, 0)
        clock.advance(3600)
        await wait_for(lambda: service.runs == 1 and service._running is None)
        analysis = AnalysisStore(store)
        runs = await analysis.runs(DAY, DAY + timedelta(days=1))
        self.assertEqual([(r.analysis, r.ok, r.error) for r in runs],  # type: ignore[attr-defined]
                         [("balance", True, None), ("comms", True, None),
                          ("outages", True, None), ("vee", True, None)])
        by_name = {r.analysis: r.summary for r in runs}
        self.assertEqual(by_name["balance"], {"areas": 1, "alarms": 1})
        self.assertEqual(by_name["vee"]["findings"], {"low-limit": 1, "reverse-energy": 1})
        self.assertEqual(by_name["vee"]["alarms"], 1)
        self.assertEqual(by_name["outages"]["outages"], 1)
        (balance,) = await analysis.balances(T0, T0 + timedelta(days=1))
        self.assertEqual(balance.loss_rate, D("10.104"))
        self.assertEqual(sorted((e.meter, e.code, e.severity, e.time)
                                for e in sink.records if isinstance(e, MeterEvent)),
                         [("B", "analysis:vee:reverse-energy", Severity.MINOR,
                           T0 + timedelta(hours=10)),
                          ("S", "analysis:area-outage", Severity.MAJOR,
                           T0 + timedelta(hours=10)),
                          ("S", "analysis:line-loss", Severity.MAJOR, T0)])
        ten, ten40 = T0 + timedelta(hours=10), T0 + timedelta(hours=10, minutes=40)
        self.assertEqual(
            [(o.kind, o.subject, o.since, o.until, o.meters)
             for o in await analysis.outages(T0, T0 + timedelta(days=1))],
            [("area", "T1", ten, ten40, ("A",)), ("meter", "A", ten, ten40, ("A",))])
        # The next run is tomorrow at 02:00.
        (call,) = clock.getDelayedCalls()
        self.assertEqual(datetime.fromtimestamp(call.getTime(), UTC),
                         datetime(2026, 12, 3, 2, 0, tzinfo=UTC))
        await service.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])

    async def test_a_daemon_started_late_runs_the_missed_day_at_once(self) -> None:
        """Started at 03:00 with no run of 2026-12-01 recorded: it runs at once; started
        again at 03:30, the day is done: the next run is the next day's."""
        store = await self.area_day()
        clock = Clock()
        clock.advance(datetime(2026, 12, 2, 3, 0, tzinfo=UTC).timestamp())
        service = AnalysisService(clock, store, settings(analyses="balance"), VEE, Sink())
        await service.startService()
        clock.advance(0)
        await wait_for(lambda: service.runs == 1 and service._running is None)
        (run,) = await AnalysisStore(store).runs(DAY, DAY + timedelta(days=1))
        self.assertEqual(run.reason, "missed")
        await service.stopService()
        clock.advance(1800)
        again = AnalysisService(clock, store, settings(analyses="balance"), VEE, Sink())
        await again.startService()
        (call,) = clock.getDelayedCalls()
        self.assertEqual(datetime.fromtimestamp(call.getTime(), UTC),
                         datetime(2026, 12, 3, 2, 0, tzinfo=UTC))
        await again.stopService()

    async def test_days_are_analysed_oldest_first_and_a_failure_is_recorded(self) -> None:
        """days = 2: 2026-11-30 then 2026-12-01. An unknown area fails each analysis with
        its error recorded; the service carries on to the next run."""
        store = await self.area_day()
        clock = Clock()
        clock.advance(datetime(2026, 12, 2, 2, 0, tzinfo=UTC).timestamp() - 1)
        service = AnalysisService(clock, store, settings(days="2", areas="NOPE",
                                                         analyses="vee, balance"), VEE, Sink())
        await service.startService()
        clock.advance(1)
        await wait_for(lambda: service.runs == 1 and service._running is None)
        runs = await AnalysisStore(store).runs(DAY - timedelta(days=1), DAY + timedelta(days=1))
        self.assertEqual([(r.day, r.analysis, r.ok, r.error) for r in runs], [
            (DAY - timedelta(days=1), "balance", False, "LookupError: no area 'NOPE'"),
            (DAY - timedelta(days=1), "vee", False, "LookupError: no area 'NOPE'"),
            (DAY, "balance", False, "LookupError: no area 'NOPE'"),
            (DAY, "vee", False, "LookupError: no area 'NOPE'")])
        self.assertEqual(len(self.flushLoggedErrors(LookupError)), 4)  # type: ignore[attr-defined]
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        await service.stopService()


    async def test_areas_and_groups(self) -> None:
        """areas = T1 and groups = north, where the meter list puts S and A in the group
        north and B in none: VEE validates S and A only (no reverse finding of B, no VEE
        alarm), the balance of T1 runs."""
        store = await self.area_day()
        await store.add_meters([Meter("S", "dlms", "tcp:x:1", metadata={"group": "north"}),
                                Meter("A", "dlms", "tcp:x:1", metadata={"group": "north"}),
                                Meter("B", "dlms", "tcp:x:1")])
        clock = Clock()
        clock.advance(datetime(2026, 12, 2, 2, 0, tzinfo=UTC).timestamp() - 1)
        sink = Sink()
        service = AnalysisService(clock, store, settings(areas="T1", groups="north",
                                                         analyses="vee, balance"), VEE, sink)
        await service.startService()
        clock.advance(1)
        await wait_for(lambda: service.runs == 1 and service._running is None)
        runs = {r.analysis: r.summary
                for r in await AnalysisStore(store).runs(DAY, DAY + timedelta(days=1))}
        self.assertEqual((runs["vee"]["meters"], runs["vee"]["findings"], runs["vee"]["alarms"]),
                         (2, {}, 0))
        self.assertEqual(runs["balance"], {"areas": 1, "alarms": 1})
        await service.stopService()


    async def test_a_stop_waits_for_the_analysis_under_way_only(self) -> None:
        """Stopped while vee runs: the stop waits for vee to end, then balance is not
        started; only vee is recorded."""
        store = await self.area_day()
        clock = Clock()
        clock.advance(datetime(2026, 12, 2, 2, 0, tzinfo=UTC).timestamp() - 1)
        service = AnalysisService(clock, store, settings(analyses="vee, balance"), VEE,
                                  Sink())
        blocker: Deferred[None] = Deferred()

        async def slow_vee(day: date) -> dict[str, Any]:
            await blocker
            return {"slow": True}

        service._vee = slow_vee  # type: ignore[method-assign]
        await service.startService()
        clock.advance(1)
        stopped = service.stopService()
        self.assertFalse(stopped.called)
        blocker.callback(None)
        await stopped
        await wait_for(lambda: service._running is None)
        runs = await AnalysisStore(store).runs(DAY, DAY + timedelta(days=1))
        self.assertEqual([(r.analysis, r.summary) for r in runs], [("vee", {"slow": True})])
        self.assertEqual(clock.getDelayedCalls(), [])


    async def test_a_start_that_cannot_read_its_runs_still_starts(self) -> None:
        """Started at 03:00 while the runs cannot be read: logged, and the next run is at
        02:00 the day after (the daemon is not stopped)."""
        store = await self.area_day()
        clock = Clock()
        clock.advance(datetime(2026, 12, 2, 3, 0, tzinfo=UTC).timestamp())
        service = AnalysisService(clock, store, settings(), VEE, Sink())

        def broken(since: date, until: date) -> Deferred[Any]:
            return fail(StoreError("store down"))

        service.analysis.runs = broken  # type: ignore[method-assign]
        await service.startService()
        (call,) = clock.getDelayedCalls()
        self.assertEqual(datetime.fromtimestamp(call.getTime(), UTC),
                         datetime(2026, 12, 3, 2, 0, tzinfo=UTC))
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)  # type: ignore[attr-defined]
        await service.stopService()


AT_0200 = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
FIFTY = T0 + 50 * Q15  # A's interval the re-collection brings


class AfterCollectionBehaviours(ServiceBehaviours):
    """The service told by the collection engine (ICollectionListener): re-collection of
    an analysed day, and the end of the day's collection."""

    async def analysed_at_0200(self, **changes: Any) -> tuple[Any, Clock, AnalysisService]:
        """The day with A's interval 50 missing, analysed at 02:00 (``days`` 1 unless
        changed), the clock just after the run."""
        store = await self.area_day(gap=50)
        clock = Clock()
        clock.advance(AT_0200.timestamp() - 1)
        service = AnalysisService(clock, store, settings(analyses="vee, balance", **changes),
                                  VEE, Sink())
        await service.startService()
        self.addCleanup(service.stopService)  # type: ignore[attr-defined]
        clock.advance(1)
        await wait_for(lambda: service.runs == 1 and service._running is None)
        return store, clock, service

    async def loss(self, store: Any) -> D:
        (balance,) = await AnalysisStore(store).balances(T0, T0 + timedelta(days=1))
        return balance.loss_rate

    async def estimates_of_a(self, store: Any) -> list[datetime]:
        found = await AnalysisStore(store).estimates(["A"], str(CHANNEL), T0,
                                                     T0 + timedelta(days=1))
        return [e.start for e in found.get("A", [])]

    async def test_a_re_collected_interval_is_analysed_again_without_waiting_for_at(
            self) -> None:
        """Analysed at 02:00 with A's interval 50 estimated; at 10:00 the collection engine
        re-collects it (40 Wh): 300 s later the day is analysed again, reason
        re-collection: the estimate is gone and the balance changed."""
        store, clock, service = await self.analysed_at_0200()
        self.assertEqual(await self.estimates_of_a(store), [FIFTY])
        before = await self.loss(store)
        clock.advance(8 * 3600)  # 10:00
        await store.write([IntervalBlock("A", CHANNEL, FIFTY, Q15, (D(40),))])
        service.collected("load-profile", {"A": [DAY]})
        clock.advance(299)
        self.assertEqual(service.reanalyses, 0)
        clock.advance(1)
        await wait_for(lambda: service.reanalyses == 1 and service._running is None)
        self.assertEqual(await self.estimates_of_a(store), [])
        after = await self.loss(store)
        self.assertNotEqual(after, before)
        self.assertEqual(after, D("10.573"))  # (9600 - 8585) / 9600
        runs = await AnalysisStore(store).runs(DAY, DAY + timedelta(days=1))
        self.assertEqual({(r.analysis, r.reason) for r in runs},
                         {("vee", "re-collection"), ("balance", "re-collection")})
        self.assertEqual(await AnalysisStore(store).pending(), {})
        self.assertEqual(service.runs, 1)  # the day's run is still tomorrow's at

    async def test_a_burst_of_re_collection_gives_one_run(self) -> None:
        """Jobs storing intervals of the day at 10:00, 10:02, 10:04 and 10:04:59: one
        re-analysis, 300 s after the last."""
        _, clock, service = await self.analysed_at_0200()
        clock.advance(8 * 3600)
        for step in (0, 120, 120, 59):
            clock.advance(step)
            service.collected("load-profile", {"A": [DAY], "B": [DAY]})
        clock.advance(299)
        self.assertEqual(service.reanalyses, 0)
        clock.advance(1)
        await wait_for(lambda: service.reanalyses == 1 and service._running is None)
        clock.advance(3600)
        await wait_for(lambda: service._running is None)
        self.assertEqual(service.reanalyses, 1)
        # Only the day's next run is left on the clock.
        (call,) = clock.getDelayedCalls()
        self.assertEqual(datetime.fromtimestamp(call.getTime(), UTC),
                         datetime(2026, 12, 3, 2, 0, tzinfo=UTC))

    async def test_a_day_not_analysed_yet_is_left_to_its_run(self) -> None:
        """The day collected at 00:30, before its analysis at 02:00 (the day's own
        collection): no re-analysis, the 02:00 run analyses it, reason scheduled."""
        store = await self.area_day()
        clock = Clock()
        clock.advance(datetime(2026, 12, 2, 0, 30, tzinfo=UTC).timestamp())
        service = AnalysisService(clock, store, settings(analyses="balance"), VEE, Sink())
        await service.startService()
        self.addCleanup(service.stopService)  # type: ignore[attr-defined]
        service.collected("load-profile", {"A": [DAY], "B": [DAY + timedelta(days=1)]})
        self.assertEqual(list(service.pending), [DAY])  # today's values are not noted
        clock.advance(300)
        await wait_for(lambda: service.reanalyses == 1 and service._running is None)
        self.assertEqual(await AnalysisStore(store).runs(DAY, DAY + timedelta(days=1)), [])
        clock.advance(5400)  # 02:00
        await wait_for(lambda: service.runs == 1 and service._running is None)
        runs = await AnalysisStore(store).runs(DAY, DAY + timedelta(days=1))
        self.assertEqual([(r.analysis, r.reason) for r in runs], [("balance", "scheduled")])
        self.assertEqual((service.pending, await AnalysisStore(store).pending()), ({}, {}))

    async def test_the_days_run_covers_what_was_noted_before_it(self) -> None:
        """Noted at 00:30 with reanalyse_delay 2 h: the 02:00 run analyses the day, which
        then waits no more (no re-analysis at 02:30, nothing kept)."""
        store = await self.area_day()
        clock = Clock()
        clock.advance(datetime(2026, 12, 2, 0, 30, tzinfo=UTC).timestamp())
        service = AnalysisService(clock, store, settings(analyses="balance",
                                                         reanalyse_delay="7200"), VEE, Sink())
        await service.startService()
        self.addCleanup(service.stopService)  # type: ignore[attr-defined]
        service.collected("load-profile", {"A": [DAY]})
        await wait_for(lambda: service._saving is None)
        clock.advance(5400)
        await wait_for(lambda: service.runs == 1 and service._running is None)
        self.assertEqual((service.pending, await AnalysisStore(store).pending()), ({}, {}))
        clock.advance(1800)
        await wait_for(lambda: service._running is None)
        self.assertEqual(service.reanalyses, 0)

    async def test_at_most_reanalyse_days_a_run_the_oldest_first(self) -> None:
        """days = 2 analysed at 02:00; both re-collected at 10:00 with reanalyse_days = 1:
        2026-11-30 first, 2026-12-01 in the next run."""
        store, clock, service = await self.analysed_at_0200(days="2", reanalyse_days="1")
        clock.advance(8 * 3600)
        service.collected("events", {"A": [DAY, DAY - timedelta(days=1)]})
        clock.advance(300)
        await wait_for(lambda: service.reanalyses == 1 and service._running is None)
        reasons = {r.day: r.reason for r in await AnalysisStore(store).runs(
            DAY - timedelta(days=1), DAY + timedelta(days=1))}
        self.assertEqual(reasons, {DAY - timedelta(days=1): "re-collection",
                                   DAY: "scheduled"})
        clock.advance(300)
        await wait_for(lambda: service.reanalyses == 2 and service._running is None)
        runs = await AnalysisStore(store).runs(DAY, DAY + timedelta(days=1))
        self.assertEqual({r.reason for r in runs}, {"re-collection"})

    async def test_a_restart_loses_nothing_noted(self) -> None:
        """Re-collected at 10:00 and stopped at 10:01: the day is kept in analysis_pending;
        the daemon started again re-analyses it ``reanalyse_delay`` after its start."""
        store, clock, service = await self.analysed_at_0200()
        clock.advance(8 * 3600)
        await store.write([IntervalBlock("A", CHANNEL, FIFTY, Q15, (D(40),))])
        service.collected("load-profile", {"A": [DAY]})
        clock.advance(60)
        await service.stopService()
        self.assertEqual(list(await AnalysisStore(store).pending()), [DAY])
        again = AnalysisService(clock, store, settings(analyses="vee, balance"), VEE, Sink())
        await again.startService()
        self.addCleanup(again.stopService)  # type: ignore[attr-defined]
        clock.advance(300)
        await wait_for(lambda: again.reanalyses == 1 and again._running is None)
        self.assertEqual(await self.estimates_of_a(store), [])
        self.assertEqual(await AnalysisStore(store).pending(), {})

    async def test_one_run_at_a_time(self) -> None:
        """Re-collected at 02:01 while the day's run is under way (its vee slow): the
        re-analysis due at 02:06 waits for the day's run to end, then runs."""
        store = await self.area_day()
        clock = Clock()
        clock.advance(AT_0200.timestamp() - 1)
        service = AnalysisService(clock, store, settings(analyses="vee"), VEE, Sink())
        blocker: Deferred[None] = Deferred()

        async def slow_vee(day: date) -> dict[str, Any]:
            await blocker
            return {"slow": True}

        service._vee = slow_vee  # type: ignore[method-assign]
        await service.startService()
        self.addCleanup(service.stopService)  # type: ignore[attr-defined]
        clock.advance(1)
        clock.advance(60)
        service.collected("load-profile", {"A": [DAY]})
        clock.advance(300)
        self.assertEqual((service.runs, service.reanalyses), (1, 0))
        blocker.callback(None)
        await wait_for(lambda: service.reanalyses == 1 and service._running is None)
        runs = await AnalysisStore(store).runs(DAY, DAY + timedelta(days=1))
        self.assertEqual([(r.analysis, r.reason) for r in runs], [("vee", "re-collection")])

    async def test_a_note_the_store_refuses_is_logged_and_still_analysed(self) -> None:
        store, clock, service = await self.analysed_at_0200()

        def refused(notes: Any) -> Deferred[None]:
            return fail(StoreError("store down"))

        service.analysis.note_pending = refused  # type: ignore[method-assign]
        clock.advance(8 * 3600)
        service.collected("load-profile", {"A": [DAY]})
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)  # type: ignore[attr-defined]
        clock.advance(300)
        await wait_for(lambda: service.reanalyses == 1 and service._running is None)
        runs = await AnalysisStore(store).runs(DAY, DAY + timedelta(days=1))
        self.assertEqual({r.reason for r in runs}, {"re-collection"})

    async def lp_task(self, store: Any, now: datetime) -> Any:
        """A load-profile task every hour whose 00:00 run is made: one job, pending."""
        from fep.collect.jobstore import job_store
        from fep.collect.tasks import Job, Task

        jobs = job_store(store)
        midnight = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
        task = Task(name="lp", kind="load-profile", schedule="every 1h", next_due=midnight)
        await jobs.save_task(task, now.timestamp())
        await jobs.claim_run("lp", midnight, midnight + 3600, now.timestamp())
        await jobs.add_jobs([Job(id=0, meter="A", kind="load-profile", route="tcp:x:1",
                                 resource="tcp:x:1", due=midnight, run_at=midnight,
                                 task="lp")], now.timestamp())
        return jobs

    async def test_after_collection_the_days_run_starts_when_the_collection_ended(
            self) -> None:
        """after = collection: at 00:20 the load-profile task's 00:00 run still has a job
        running: nothing; it ends at 00:40 and the engine says so: the day's run starts 5 s
        later, reason collection, and 02:00 runs nothing more."""
        from fep.collect.tasks import Outcome

        store = await self.area_day()
        clock = Clock()
        now = datetime(2026, 12, 2, 0, 20, tzinfo=UTC)
        clock.advance(now.timestamp())
        jobs = await self.lp_task(store, now)
        (job,) = await jobs.lease("a", now.timestamp(), now.timestamp() + 3600, 10, {}, {})
        await jobs.start(job.id, "a", now.timestamp(), now.timestamp() + 3600)
        service = AnalysisService(clock, store, settings(analyses="balance",
                                                         after="collection"),
                                  VEE, Sink(), jobs=jobs)
        await service.startService()
        self.addCleanup(service.stopService)  # type: ignore[attr-defined]
        clock.advance(0)  # the look at start: a job is running
        await wait_for(lambda: service._check is None)
        self.assertEqual(service.runs, 0)
        clock.advance(1200)  # 00:40
        await jobs.finish(job, "a", "done", Outcome(True), clock.seconds(), None)
        service.job_ended("lp", "load-profile", job.due, "done")
        clock.advance(5)
        await wait_for(lambda: service.runs == 1 and service._running is None)
        runs = await AnalysisStore(store).runs(DAY, DAY + timedelta(days=1))
        self.assertEqual([(r.analysis, r.reason) for r in runs], [("balance", "collection")])
        clock.advance(AT_0200.timestamp() - clock.seconds())
        await wait_for(lambda: service._running is None)
        self.assertEqual(service.runs, 1)
        (call,) = clock.getDelayedCalls()
        self.assertEqual(datetime.fromtimestamp(call.getTime(), UTC),
                         datetime(2026, 12, 3, 2, 0, tzinfo=UTC))

    async def test_after_collection_at_is_the_latest_start(self) -> None:
        """after = collection with the run's job never ending: the day's run starts at
        02:00 all the same, reason scheduled."""
        store = await self.area_day()
        clock = Clock()
        now = datetime(2026, 12, 2, 0, 20, tzinfo=UTC)
        clock.advance(now.timestamp())
        jobs = await self.lp_task(store, now)
        service = AnalysisService(clock, store, settings(analyses="balance",
                                                         after="collection"),
                                  VEE, Sink(), jobs=jobs)
        await service.startService()
        self.addCleanup(service.stopService)  # type: ignore[attr-defined]
        clock.advance(0)
        await wait_for(lambda: service._check is None)
        service.job_ended("lp", "load-profile", 0.0, "failed")  # another run's job
        clock.advance(5)
        await wait_for(lambda: service._check is None)
        self.assertEqual(service.runs, 0)
        clock.advance(AT_0200.timestamp() - clock.seconds())
        await wait_for(lambda: service.runs == 1 and service._running is None)
        runs = await AnalysisStore(store).runs(DAY, DAY + timedelta(days=1))
        self.assertEqual([(r.analysis, r.reason) for r in runs], [("balance", "scheduled")])


class SqliteServiceTests(AfterCollectionBehaviours, unittest.TestCase):
    def new_store(self) -> SqliteStore:
        return SqliteStore(self.mktemp() + ".sqlite", reactor)


class PostgresServiceTests(AfterCollectionBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)


class SectionTests(unittest.TestCase):
    def test_defaults(self) -> None:
        s = ANALYSIS.read(None)
        self.assertEqual((s.enabled, s.at, s.days, s.analyses, s.areas, s.vee_alarms,
                          s.target),
                         (False, time(2, 0), 2, ("vee", "balance", "outages", "comms"), (),
                          ("reverse", "register"), D("0.98")))
        self.assertEqual((s.after, s.reanalyse, s.reanalyse_delay, s.reanalyse_days),
                         ("time", True, 300.0, 7))

    def test_errors_name_the_key(self) -> None:
        for key, value in (("at", "2am"), ("analyses", "vee, load"),
                           ("vee_alarms", "sparks"), ("target", "120 %"),
                           ("after", "lunch"), ("reanalyse_delay", "-1"),
                           ("reanalyse_days", "0")):
            with self.assertRaises(ConfigError) as caught:
                ANALYSIS.read([(key, value)], "fep.ini")
            self.assertEqual((caught.exception.section, caught.exception.key),
                             ("analysis", key))


class CompositionTests(unittest.TestCase):
    def test_the_service_is_a_named_child_before_the_operator_tier(self) -> None:
        """Enabled, ``analysis`` is a child of the daemon after the router (it stops
        before the router, which takes its alarms) and before the operator tier; its sink
        is the daemon's router, its store the daemon's."""
        from fep.service import FepService

        data = Path(tempfile.mkdtemp(prefix="fep-"))
        self.addCleanup(shutil.rmtree, data, True)
        config = parse_config(
            f"[fep]\nnode = a\ndata_dir = {data}\n[store]\nurl = sqlite:{data}/fep.sqlite\n"
            "[collect]\nperiod = 3600\n[analysis]\nenabled = yes\n")
        daemon = FepService(config, reactor)
        names = [child.name for child in daemon]
        self.assertEqual(names[-2:], ["analysis", "operator"])
        self.assertLess(names.index("router"), names.index("analysis"))
        service = daemon.getServiceNamed("analysis")
        self.assertIs(service.sink, daemon.router)
        self.assertIs(service.store, daemon.store)
        # The collection engine tells it what it re-collected and when its jobs end.
        self.assertIn(service, daemon.collection.listeners)
        self.assertIs(service.jobs, daemon.collection.jobs)
        verifyObject(ICollectionListener, service)
        quiet = FepService(parse_config(
            f"[fep]\nnode = a\ndata_dir = {data}\n[store]\nurl = sqlite:{data}/fep.sqlite\n"
            "[analysis]\nenabled = yes\nreanalyse = no\n"), reactor)
        self.assertEqual(quiet.collection.listeners, [])
        off = FepService(parse_config(
            f"[fep]\nnode = a\ndata_dir = {data}\n[store]\nurl = sqlite:{data}/fep.sqlite\n"),
            reactor)
        self.assertNotIn("analysis", [child.name for child in off])
