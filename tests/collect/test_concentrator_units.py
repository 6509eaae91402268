"""Concentrator jobs with fakes: a task run's meters behind a point-reading concentrator
become one job of it (``children``), their outcomes become their own jobs when it ends
(done, failed, missed; counted in the statistics), and the runner asks only what is left
(meters settled by an earlier attempt, what the store already holds)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest
from zope.interface import implementer

from fep.collect.concentrators import CHILDREN, check_owner, point_groups, point_of
from fep.collect.limits import ResourcePolicy
from fep.collect.runner import JobRunner
from fep.collect.scheduler import Scheduler, children_jobs, expand
from fep.collect.tasks import Job, JobStatus, Outcome, Target, Task
from fep.errors import ChannelError, ConfigError
from fep.interfaces import IConcentratorReader, IMeterProtocol
from fep.model import (
    IntervalBlock,
    Meter,
    ObisCode,
    PointOutcome,
    PointRead,
    PointsRead,
    PointStatus,
    Reading,
)
from tests.collect.fakes import ManualRunner, directory_with, sync_store
from tests.collect.harness import StoreSink
from tests.fakes import SyncReactor, fired

T0 = 900.0 * 1_888_889
DCU = Meter("DCU1", "gw3761", "tcp:host=10.0.0.1:port=9761", address="4403:0001")


def child(n: int, **metadata: str) -> Meter:
    return Meter(f"M{n}", "dlt645", "gw3761:DCU1", address=f"{n:012d}",
                 metadata={"concentrator": "DCU1", "point": str(n), **metadata})  # fmt: skip


def fleet(count: int = 3) -> list[Meter]:
    return [DCU, *(child(n) for n in range(1, count + 1))]


class ExpandTests(unittest.TestCase):
    policy = ResourcePolicy()

    def test_the_meters_behind_become_one_job_of_their_concentrator(self) -> None:
        alone = Meter("X", "dlt645", "tcp:host=10.0.0.9:port=1")
        jobs = expand(Task(name="lp", kind="load-profile", schedule="every 1d"),
                      [*fleet(), alone], T0, self.policy)  # fmt: skip
        self.assertEqual([(j.meter, dict(j.params)) for j in jobs],
                         [("DCU1", {CHILDREN: {"M1": 1, "M2": 2, "M3": 3}}), ("X", {})])
        self.assertEqual(jobs[0].resource, "tcp:10.0.0.1:9761")

    def test_the_concentrator_need_not_be_a_target(self) -> None:
        task = Task(name="r", kind="registers", schedule="every 1d",
                    target=Target.parse("meters:M2"))
        (job,) = expand(task, fleet(), T0, self.policy)
        self.assertEqual((job.meter, dict(job.params)), ("DCU1", {CHILDREN: {"M2": 2}}))
        # run-now of some meters: the concentrator comes from the whole list.
        (job,) = expand(task, [child(2)], T0, self.policy, known=fleet())
        self.assertEqual(job.meter, "DCU1")

    def test_a_fleet_of_one_meter_per_line_is_indexed_once_not_per_line(self) -> None:
        """Every meter on a line of its own (GPRS): the fleet is indexed once per run and
        every line's ordering uses that index; indexing it per line was O(meters²), 10^10
        steps for 100,000 meters."""
        from fep.collect import scheduler as scheduler_module
        from fep.collect.concentrators import line_order

        indexes: list[Any] = []

        def recording(meters: Any, known: Any = ()) -> Any:
            indexes.append(known)
            return line_order(meters, known)

        self.patch(scheduler_module, "line_order", recording)
        meters = [Meter(f"G{n}", "dlms", f"tcp:host=10.1.{n // 250}.{n % 250}:port=4059")
                  for n in range(2000)]
        jobs = expand(Task(name="r", kind="registers", schedule="every 1d"), meters, T0,
                      self.policy)
        self.assertEqual(len({j.resource for j in jobs}), 2000)
        self.assertEqual(len(indexes), 2000)
        self.assertEqual({id(i) for i in indexes}, {id(indexes[0])})
        self.assertEqual(len(indexes[0]), 2000)

    def test_bad_points_fail_at_once_naming_the_key(self) -> None:
        meters = [*fleet(2), child(3, point=""), Meter("M4", "dlt645", "gw3761:DCU1",
                  metadata={"concentrator": "DCU1", "point": "P2"})]  # fmt: skip
        jobs = expand(Task(name="r", kind="registers", schedule="every 1d"), meters, T0,
                      self.policy)  # fmt: skip
        failed = {j.meter: j.error for j in jobs if j.status == JobStatus.FAILED}
        self.assertIn("needs its measuring point", failed["M3"])
        self.assertIn("point 2 of concentrator DCU1 is meter M2's", failed["M4"])
        self.assertEqual(dict(jobs[0].params), {CHILDREN: {"M1": 1, "M2": 2}})

    def test_points_are_1_to_2040_with_or_without_p(self) -> None:
        self.assertEqual(point_of(child(1, point="P7")), 7)
        self.assertEqual(point_of(child(1, point="2040")), 2040)
        for bad in ("0", "2041", "x", ""):
            with self.assertRaises(ConfigError) as caught:
                point_of(child(1, point=bad))
            self.assertEqual(caught.exception.key, "point")
            self.assertIn("meter M1", str(caught.exception))

    def test_via_forward_gives_each_meter_its_own_job(self) -> None:
        for via in ("forward", "FORWARD "):
            jobs = expand(Task(name="r", kind="registers", schedule="every 1d",
                               options={"via": via}), fleet(), T0, self.policy)  # fmt: skip
            self.assertEqual(sorted(j.meter for j in jobs), ["DCU1", "M1", "M2", "M3"])
            self.assertEqual({dict(j.params).get(CHILDREN) for j in jobs}, {None})
        (job,) = expand(Task(name="r", kind="registers", schedule="every 1d",
                             options={"via": "points"}), fleet(), T0, self.policy)  # fmt: skip
        self.assertEqual(job.meter, "DCU1")

    def test_an_unknown_via_is_refused_when_the_task_is_made(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            Task(name="r", kind="registers", schedule="every 1d", options={"via": "fowrard"})
        self.assertEqual(caught.exception.key, "via")
        self.assertIn("task r: via must be points or forward, not 'fowrard'",
                      str(caught.exception))

    def test_events_and_clock_jobs_stay_the_meters_own(self) -> None:
        for kind in ("events", "clock"):
            jobs = expand(Task(name="e", kind=kind, schedule="every 1d"), fleet(), T0,
                          self.policy)  # fmt: skip
            self.assertEqual(sorted((j.meter, j.status) for j in jobs),
                             [(m.id, JobStatus.PENDING) for m in fleet()])
            self.assertEqual({dict(j.params).get(CHILDREN) for j in jobs}, {None})

    def test_a_point_reading_concentrator_is_not_a_line_owner(self) -> None:
        check_owner(child(1), {"DCU1": DCU})  # another "line": no error
        groups, rest, bad = point_groups([child(1)], [DCU])
        self.assertEqual((len(groups), rest, bad), (1, [], []))


def outcome_of(**children: tuple[str, str, int, int]) -> Outcome:
    return Outcome(True, details={"children": {
        m: {"status": s, "text": t, "records": r, "attempt": a}
        for m, (s, t, r, a) in children.items()}})


class ChildrenJobsTests(unittest.TestCase):
    job = Job(id=7, meter="DCU1", kind="load-profile", route=DCU.route, resource="r", due=T0,
              run_at=T0, task="lp", attempts=2, params={CHILDREN: {"M1": 1, "M2": 2, "M3": 3}})

    def test_each_meter_ends_as_its_point_did(self) -> None:
        out = children_jobs(self.job, JobStatus.DONE, outcome_of(
            M1=("read", "read through concentrator DCU1: 6 records", 6, 1),
            M2=("stored", "nothing missing (already stored)", 0, 2),
            M3=("no-data", "#2 0D:F101: no data for P3 in the answer", 0, 2)),
            {m.id: m for m in fleet()}.get, ResourcePolicy(), T0 + 5)  # fmt: skip
        got = {j.meter: (j.status, j.attempts, j.first_ok, j.records) for j in out}
        self.assertEqual(got, {"M1": (JobStatus.DONE, 1, True, 6),
                               "M2": (JobStatus.DONE, 2, False, 0),
                               "M3": (JobStatus.FAILED, 2, False, 0)})  # fmt: skip
        m3 = next(j for j in out if j.meter == "M3")
        self.assertEqual(m3.error, "through concentrator DCU1: #2 0D:F101: no data for P3 in "
                                   "the answer")  # fmt: skip
        self.assertEqual((m3.route, m3.task, m3.due), ("gw3761:DCU1", "lp", T0))
        self.assertNotIn(CHILDREN, m3.params)

    def test_what_its_storage_lacks_is_read_by_forwarding_when_the_route_allows(self) -> None:
        forwarded = {m.id: m for m in fleet()}
        forwarded["M3"] = Meter("M3", "dlt645", "gw3761:DCU1:port=2", address="3")
        forwarded["M2"] = Meter("M2", "dlt645", "gw3761:DCU1:port=2", address="2")
        out = {j.meter: j for j in children_jobs(self.job, JobStatus.DONE, outcome_of(
            M1=("no-data", "no data", 0, 2), M2=("denied", "denied", 0, 2),
            M3=("no-answer", "no answer", 0, 2)), forwarded.get, ResourcePolicy(),
            T0 + 5)}  # fmt: skip
        # M1 has no port to forward to; M3's concentrator did not answer: both failed.
        self.assertEqual({m: j.status for m, j in out.items()},
                         {"M1": JobStatus.FAILED, "M2": JobStatus.PENDING,
                          "M3": JobStatus.FAILED})  # fmt: skip
        m2 = out["M2"]
        self.assertEqual((m2.route, m2.kind, m2.attempts, m2.task, m2.due),
                         ("gw3761:DCU1:port=2", "load-profile", 0, "lp", T0))
        self.assertNotIn(CHILDREN, m2.params)
        registers = attrs.evolve(self.job, kind="registers")
        (m2,) = [j for j in children_jobs(registers, JobStatus.DONE, outcome_of(
            M2=("no-data", "no data", 0, 1)), forwarded.get, ResourcePolicy(), T0)
            if j.meter == "M2"]  # fmt: skip
        self.assertEqual(m2.status, JobStatus.FAILED)

    def test_without_a_word_for_them_they_share_the_concentrators_end(self) -> None:
        for status, expected in ((JobStatus.MISSED, JobStatus.MISSED),
                                 (JobStatus.FAILED, JobStatus.FAILED)):  # fmt: skip
            out = children_jobs(self.job, status, Outcome(False, error="no route"),
                                lambda _: None, ResourcePolicy(), T0)  # fmt: skip
            self.assertEqual({j.status for j in out}, {expected})
            self.assertEqual(out[0].error, f"concentrator DCU1 {status}: no route")


class SchedulerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = SyncReactor()
        self.reactor.advance(T0 + 1)
        self.store, self.jobs = sync_store(self.reactor, self)
        self.runner = ManualRunner()
        self.scheduler = Scheduler(self.reactor, self.jobs, directory_with(self.store, fleet()),
                                   self.runner, node="a", poll=1.0)  # fmt: skip
        self.scheduler.startService()

    def tearDown(self) -> None:
        for _, _, d in self.runner.attempts:
            if not d.called:
                d.callback(Outcome(False, error="test over", retry=False))
        fired(self.scheduler.stopService())

    def test_the_meters_jobs_are_recorded_when_the_concentrators_ends(self) -> None:
        fired(self.jobs.save_task(Task(name="lp", kind="load-profile", schedule="every 1d",
                                       retries=1, retry_delay=5, next_due=T0), T0))
        self.reactor.advance(1)
        self.assertEqual(self.runner.running(), ["DCU1"])
        job, _, d = self.runner.attempts[0]
        self.assertEqual(dict(job.params[CHILDREN]), {"M1": 1, "M2": 2, "M3": 3})
        self.assertEqual(fired(self.jobs.jobs(meter="M1")), [])
        d.callback(Outcome(False, error="connection lost", details={"children": {}}))
        self.reactor.advance(5)
        self.runner.attempts[-1][2].callback(outcome_of(
            M1=("read", "ok", 6, 1), M2=("read", "ok", 6, 2), M3=("denied", "denied", 0, 2)))
        status = {m: [(str(j.status), j.attempts) for j in fired(self.jobs.jobs(meter=m))]
                  for m in ("DCU1", "M1", "M2", "M3")}  # fmt: skip
        self.assertEqual(status, {"DCU1": [("done", 2)], "M1": [("done", 1)],
                                  "M2": [("done", 2)], "M3": [("failed", 2)]})
        rows = {r.key: (r.jobs, r.first_ok, r.ok, r.failed)
                for r in fired(self.jobs.stats("2000-01-01", "meter"))}
        self.assertEqual(rows, {"DCU1": (1, 0, 1, 0), "M1": (1, 1, 1, 0), "M2": (1, 0, 1, 0),
                                "M3": (1, 0, 0, 1)})  # fmt: skip
        (run,) = fired(self.jobs.run_stats("lp"))
        self.assertEqual((run.jobs, run.ok), (4, 3))


@implementer(IMeterProtocol, IConcentratorReader)
class FakeConcentrator:
    """Answers each read_points with what the test queued; remembers what was asked."""

    name = "gw3761"

    def __init__(self) -> None:
        self.asked: list[list[PointRead]] = []
        self.answers: list[PointsRead] = []

    def read(self, *args: Any) -> Deferred[list[Any]]:
        raise AssertionError("a concentrator job reads by point")

    def curve_channels(self, concentrator: Meter) -> tuple[str, ...]:
        return ("1.0.1.29.0.255",)

    def daily_times(self, concentrator: Meter, since: datetime, until: datetime
                    ) -> list[datetime]:  # fmt: skip
        return [since]

    def read_points(self, reactor: Any, endpoint: Any, concentrator: Meter,
                    reads: Sequence[PointRead], timeout: float
                    ) -> Deferred[PointsRead]:  # fmt: skip
        self.asked.append(list(reads))
        return succeed(self.answers.pop(0))


DAY = datetime(2024, 3, 1, tzinfo=UTC)
QUARTER = timedelta(minutes=15)


def block(meter: str, start: datetime, count: int) -> IntervalBlock:
    return IntervalBlock(meter, ObisCode(1, 0, 1, 29, 0), start, QUARTER, (1.0,) * count,
                         source="DCU1")  # fmt: skip


class RunnerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = SyncReactor()
        self.reactor.advance(DAY.timestamp() + 2 * 86400)
        self.store, self.jobs = sync_store(self.reactor, self)
        self.fake = FakeConcentrator()
        self.runner = JobRunner(self.reactor, StoreSink(self.store), self.store, self.jobs,
                                endpoint_for=lambda r, route: object(),
                                protocol_for=lambda name: self.fake)  # fmt: skip

    def job(self, kind: str, attempts: int = 1, **params: Any) -> Job:
        return Job(id=3, meter="DCU1", kind=kind, route=DCU.route, resource="r", due=T0,
                   run_at=T0, attempts=attempts, items=("0C:F129",),
                   params={CHILDREN: {"M1": 1, "M2": 2, "M3": 3}, **params})  # fmt: skip

    def test_a_retry_asks_only_the_meters_left(self) -> None:
        lost = ChannelError("connection lost", route=DCU.route)
        self.fake.answers = [
            PointsRead((), (PointOutcome("M1", 1, PointStatus.READ, 2),
                            PointOutcome("M2", 2, PointStatus.NO_DATA, 0, "no data for P2"),
                            PointOutcome("M3", 3, PointStatus.UNANSWERED, 0, "not read")),
                       lost),
            PointsRead((), (PointOutcome("M3", 3, PointStatus.READ, 2),)),
        ]
        first = fired(self.runner.run(self.job("registers"), DCU))
        self.assertFalse(first.ok)
        self.assertTrue(first.retry)
        self.assertIn("1 of 3 meters behind it not read yet", first.error)
        self.assertEqual([(r.meter, r.current, r.items) for r in self.fake.asked[0]],
                         [(m, True, ("0C:F129",)) for m in ("M1", "M2", "M3")])
        second = fired(self.runner.run(self.job("registers", attempts=2), DCU))
        self.assertTrue(second.ok)
        self.assertEqual([r.meter for r in self.fake.asked[1]], ["M3"])
        children = second.details["children"]
        self.assertEqual({m: (c["status"], c["attempt"]) for m, c in children.items()},
                         {"M1": ("read", 1), "M2": ("no-data", 1), "M3": ("read", 2)})
        self.assertEqual(second.result, "2 of 3 meters behind it read, 1 failed")
        fired(self.runner.job_ended(self.job("registers"), JobStatus.DONE, second))
        self.assertEqual(self.runner._settled, {})

    def test_requests_without_an_answer_are_tried_again_data_refused_is_not(self) -> None:
        self.fake.answers = [
            PointsRead((), (PointOutcome("M1", 1, PointStatus.READ, 2),
                            PointOutcome("M2", 2, PointStatus.NO_ANSWER, 0, "#2: no answer"),
                            PointOutcome("M3", 3, PointStatus.DENIED, 0, "#3: denied"))),
            PointsRead((), (PointOutcome("M2", 2, PointStatus.NO_ANSWER, 0, "#1: no answer"),)),
        ]
        first = fired(self.runner.run(self.job("registers"), DCU))
        self.assertEqual((first.ok, first.retry), (False, True))
        self.assertEqual(first.error, "requests for them went unanswered; 1 of 3 meters behind "
                                      "it not read yet")  # fmt: skip
        last = fired(self.runner.run(self.job("registers", attempts=2), DCU))
        self.assertEqual([r.meter for r in self.fake.asked[1]], ["M2"])
        self.assertFalse(last.ok)
        # Its last attempt: the scheduler fails the job, and M2's with the reason.
        (m2,) = [j for j in children_jobs(self.job("registers", attempts=2), JobStatus.FAILED,
                                          last, lambda _: None, ResourcePolicy(), T0)
                 if j.meter == "M2"]  # fmt: skip
        self.assertEqual((m2.status, m2.error),
                         (JobStatus.FAILED, "through concentrator DCU1: #1: no answer"))

    def test_load_profile_asks_what_the_store_lacks(self) -> None:
        until = DAY + timedelta(days=1)
        fired(self.store.write([
            block("M1", DAY, 96),
            Reading("M1", ObisCode(1, 0, 1, 8, 0), 5, meter_time=DAY, source="DCU1"),
            block("M2", DAY, 40), block("M2", DAY + 50 * QUARTER, 46),
        ]))
        self.fake.answers = [PointsRead((), (
            PointOutcome("M2", 2, PointStatus.READ, 2), PointOutcome("M3", 3, PointStatus.READ, 2)
        ))]
        outcome = fired(self.runner.run(self.job("load-profile", since=DAY.isoformat(),
                                                 until=until.isoformat()), DCU))  # fmt: skip
        self.assertTrue(outcome.ok, outcome.error)
        asked = {r.meter: r for r in self.fake.asked[0]}
        self.assertEqual(sorted(asked), ["M2", "M3"])
        self.assertEqual(asked["M2"].ranges, ((DAY + 40 * QUARTER, DAY + 50 * QUARTER),))
        self.assertEqual(asked["M2"].daily, (DAY,))
        self.assertEqual(asked["M3"].ranges, ((DAY, until),))
        self.assertEqual(outcome.details["children"]["M1"]["status"], "stored")
