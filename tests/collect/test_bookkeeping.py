"""Job bookkeeping in batches (fep.collect.jobstore.Bookkeeping) on a fake clock, with a
real SQLite job store run synchronously: starts and finishes within the interval share one
transaction, the engine is answered at once (write-behind), the status shown is what is
committed (at most the interval late), a failed batch is tried again without losing or
doubling anything, each job's changes keep their order, and a job whose end was never
committed (the process died) is leased and run again once its lease expires."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial import unittest

from fep.collect.jobstore import (
    BOOKKEEPING_INTERVAL,
    FINISH,
    START,
    Bookkeeping,
    Change,
    JobStore,
    _groups,
    finish_change,
    start_change,
)
from fep.collect.readnow import READ_NOW
from fep.collect.scheduler import Scheduler
from fep.collect.stats import day_of
from fep.collect.tasks import Job, JobStatus, Outcome
from fep.errors import StoreError
from fep.model import Meter
from fep.store.sqlite import SqliteStore
from tests.collect.fakes import ManualRunner, directory_with
from tests.collect.jobstore_behaviours import NOW, job
from tests.fakes import SyncPool, SyncReactor, fired

INTERVAL = BOOKKEEPING_INTERVAL


class Counting:
    """The store's ``interact`` counted, and made to fail (before running, or after a
    commit: a lost answer) when told to."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.real: Callable[..., Deferred[Any]] = store.interact
        self.calls = 0
        self.fail_next = 0
        self.lose_answer_next = 0
        store.interact = self  # type: ignore[method-assign]

    def __call__(self, work: Any, *args: Any) -> Deferred[Any]:
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            return fail(StoreError("database is locked"))
        d = self.real(work, *args)
        if self.lose_answer_next:
            self.lose_answer_next -= 1
            fired(d)
            return fail(StoreError("connection lost during COMMIT"))
        return d


class BookkeepingTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = SyncReactor()
        self.clock.advance(NOW)
        self.store = SqliteStore(":memory:", self.clock,  # type: ignore[arg-type]
                                 threadpool=SyncPool())  # type: ignore[arg-type]
        fired(self.store.open())
        self.addCleanup(self.store.close)
        self.jobs = JobStore(self.store, reactor=self.clock, interval=INTERVAL,
                             write_behind=True)
        self.counting = Counting(self.store)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [], "a batch left waiting")

    def lease(self, count: int, node: str = "n1") -> list[Job]:
        lines = [f"tcp:host=10.0.4.1:port={n + 1}" for n in range(count)]  # one line each
        fired(self.jobs.add_jobs([job(f"m{n}", due=NOW - n, route=lines[n], resource=lines[n])
                                  for n in range(count)], NOW))
        leased: list[Job] = fired(self.jobs.lease(node, NOW, NOW + 60, count, {}, {}))
        self.assertEqual(len(leased), count)
        return leased

    def stored(self) -> dict[int, Job]:
        return {j.id: j for j in fired(self.jobs.jobs(limit=None))}

    def ok_stats(self) -> tuple[int, int]:
        rows = fired(self.jobs.stats(day_of(NOW), "task"))
        return (sum(r.jobs for r in rows), sum(r.attempts for r in rows))

    def test_starts_and_finishes_within_the_interval_share_one_transaction(self) -> None:
        leased = self.lease(3)
        before = self.counting.calls
        started = [fired(self.jobs.start(j.id, "n1", NOW + 0.01, NOW + 60)) for j in leased]
        # Answered at once from the lease, before anything is committed.
        self.assertEqual([(j.status, j.attempts) for j in started],
                         [(JobStatus.RUNNING, 1)] * 3)
        self.assertEqual(self.counting.calls, before)
        for j in started:
            self.assertTrue(fired(self.jobs.finish(j, "n1", "done", Outcome(True, result="ok",
                                                                          records=5),
                                                   NOW + 0.02, None)))
        self.assertEqual(self.counting.calls, before)
        self.assertEqual({j.status for j in self.stored().values()}, {JobStatus.LEASED})
        before = self.counting.calls
        self.clock.advance(INTERVAL)
        self.assertEqual(self.counting.calls, before + 1)
        self.assertEqual(self.jobs.bookkeeping.batches, 1)
        after = self.stored()
        self.assertEqual({(j.status, j.attempts, j.records, j.first_ok, j.node, j.started_at)
                          for j in after.values()},
                         {(JobStatus.DONE, 1, 5, True, "n1", NOW + 0.01)})
        self.assertEqual(self.ok_stats(), (3, 3))

    def test_the_status_shown_is_at_most_the_interval_late(self) -> None:
        (leased,) = self.lease(1)
        self.clock.advance(1)
        started = fired(self.jobs.start(leased.id, "n1", NOW + 1, NOW + 61))
        fired(self.jobs.finish(started, "n1", "done", Outcome(True), NOW + 1, None))
        self.clock.advance(INTERVAL * 0.9)
        self.assertEqual(fired(self.jobs.job(leased.id)).status, JobStatus.LEASED)
        self.clock.advance(INTERVAL * 0.1)
        self.assertEqual(fired(self.jobs.job(leased.id)).status, JobStatus.DONE)

    def test_changes_queued_while_a_batch_commits_go_in_the_next_one(self) -> None:
        leased = self.lease(2)
        held: list[Deferred[Any]] = []
        real = self.counting.real

        def slow(work: Any, *args: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            held.append(d)
            d.addCallback(lambda _: fired(real(work, *args)))
            return d

        self.counting.real = slow
        first = fired(self.jobs.start(leased[0].id, "n1", NOW, NOW + 60))
        self.clock.advance(INTERVAL)
        self.assertEqual(len(held), 1)  # the first batch is committing
        fired(self.jobs.start(leased[1].id, "n1", NOW, NOW + 60))
        fired(self.jobs.finish(first, "n1", "done", Outcome(True), NOW, None))
        self.clock.advance(INTERVAL)
        self.assertEqual(len(held), 1)  # one batch at a time
        self.counting.real = real
        held[0].callback(None)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.jobs.bookkeeping.batches, 2)
        self.assertEqual(sorted(str(j.status) for j in self.stored().values()),
                         ["done", "running"])

    def test_a_flush_during_a_batch_commits_the_rest_right_after_it(self) -> None:
        leased = self.lease(2)
        held: list[Deferred[Any]] = []
        real = self.counting.real

        def slow(work: Any, *args: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            held.append(d)
            d.addCallback(lambda _: fired(real(work, *args)))
            return d

        self.counting.real = slow
        fired(self.jobs.start(leased[0].id, "n1", NOW, NOW + 60))
        self.clock.advance(INTERVAL)
        fired(self.jobs.start(leased[1].id, "n1", NOW, NOW + 60))
        flushed = self.jobs.flush()
        self.assertFalse(flushed.called)
        self.counting.real = real
        held[0].callback(None)  # the first batch commits; the second leaves at once
        self.assertIsNone(fired(flushed))
        self.assertEqual(self.jobs.bookkeeping.batches, 2)
        self.assertEqual({j.status for j in self.stored().values()}, {JobStatus.RUNNING})

    def test_a_failed_batch_is_tried_again_without_losing_or_doubling(self) -> None:
        leased = self.lease(3)
        started = [fired(self.jobs.start(j.id, "n1", NOW, NOW + 60)) for j in leased]
        for j in started:
            fired(self.jobs.finish(j, "n1", "done", Outcome(True), NOW, None))
        self.counting.fail_next = 2
        self.clock.advance(INTERVAL)
        self.assertEqual(self.jobs.bookkeeping.failures, 1)
        self.assertEqual(self.jobs.bookkeeping.pending, 6)
        self.clock.advance(0.1)  # the first retry fails too; the next waits longer
        self.assertEqual(self.jobs.bookkeeping.failures, 2)
        self.assertEqual({j.status for j in self.stored().values()}, {JobStatus.LEASED})
        self.clock.advance(0.2)
        self.assertEqual(self.jobs.bookkeeping.failures, 0)
        self.assertEqual(self.jobs.bookkeeping.pending, 0)
        self.assertEqual({(j.status, j.attempts) for j in self.stored().values()},
                         {(JobStatus.DONE, 1)})
        self.assertEqual(self.ok_stats(), (3, 3))

    def test_a_batch_committed_but_not_answered_is_not_applied_twice(self) -> None:
        leased = self.lease(2)
        started = [fired(self.jobs.start(j.id, "n1", NOW, NOW + 60)) for j in leased]
        for j in started:
            fired(self.jobs.finish(j, "n1", "done", Outcome(True, records=7), NOW, None))
        self.counting.lose_answer_next = 1
        self.clock.advance(INTERVAL)
        self.assertEqual(self.jobs.bookkeeping.failures, 1)
        self.clock.advance(0.1)  # tried again: the guards refuse it, nothing changes
        self.assertEqual(self.jobs.bookkeeping.pending, 0)
        self.assertEqual({(j.status, j.attempts, j.records) for j in self.stored().values()},
                         {(JobStatus.DONE, 1, 7)})
        self.assertEqual(self.ok_stats(), (2, 2))
        # Not taken for lost leases: a later finish of these jobs would not wait for it.
        self.assertEqual(self.jobs._refused, set())

    def test_a_retry_keeps_its_order_with_the_next_attempt(self) -> None:
        (leased,) = self.lease(1)
        first = fired(self.jobs.start(leased.id, "n1", NOW, NOW + 60))
        fired(self.jobs.finish(first, "n1", "pending", Outcome(False, error="silence"), NOW,
                               NOW + 10))
        self.clock.advance(INTERVAL)
        self.clock.advance(10)
        (again,) = fired(self.jobs.lease("n1", NOW + 10, NOW + 70, 1, {}, {}))
        second = fired(self.jobs.start(again.id, "n1", NOW + 10, NOW + 70))
        self.assertEqual(second.attempts, 2)
        fired(self.jobs.finish(second, "n1", "done", Outcome(True), NOW + 11, None))
        self.clock.advance(INTERVAL)
        done = self.stored()[leased.id]
        self.assertEqual((done.status, done.attempts, done.first_ok), (JobStatus.DONE, 2, False))

    def test_a_job_whose_end_was_not_committed_runs_again(self) -> None:
        (leased,) = self.lease(1)
        started = fired(self.jobs.start(leased.id, "n1", NOW, NOW + 60))
        self.assertTrue(fired(self.jobs.finish(started, "n1", "done", Outcome(True), NOW,
                                               None)))
        # The process dies before the batch commits: its queue is gone with it.
        timer = self.clock.getDelayedCalls()
        self.assertEqual(len(timer), 1)
        timer[0].cancel()
        other = JobStore(self.store, reactor=self.clock, interval=INTERVAL, write_behind=True)
        self.assertEqual(fired(other.lease("n2", NOW + 30, NOW + 90, 5, {}, {})), [])
        self.clock.advance(61)
        (again,) = fired(other.lease("n2", NOW + 61, NOW + 121, 5, {}, {}))
        self.assertEqual((again.id, again.node, again.attempts), (leased.id, "n2", 0))
        rerun = fired(other.start(again.id, "n2", NOW + 61, NOW + 121))
        fired(other.finish(rerun, "n2", "done", Outcome(True), NOW + 62, None))
        fired(other.flush())
        self.assertEqual(self.stored()[leased.id].status, JobStatus.DONE)
        self.assertEqual(self.ok_stats(), (1, 1))

    def test_a_lost_lease_is_found_when_the_batch_commits(self) -> None:
        (leased,) = self.lease(1)
        # Another node took the job over (this node's lease expired unseen).
        fired(self.store.interact(lambda conn: conn.execute(
            "UPDATE jobs SET node = 'n2' WHERE id = ?", (leased.id,))))
        started = fired(self.jobs.start(leased.id, "n1", NOW, NOW + 60))
        self.assertEqual(started.status, JobStatus.RUNNING)  # the answer came first
        self.clock.advance(INTERVAL)
        self.assertEqual(self.stored()[leased.id].attempts, 0)
        # The refused start makes the finish wait for its own answer: refused too.
        finished = self.jobs.finish(started, "n1", "done", Outcome(True), NOW, None)
        self.assertFalse(finished.called)
        self.clock.advance(INTERVAL)
        self.assertFalse(fired(finished))
        self.assertEqual(self.stored()[leased.id].node, "n2")

    def test_flush_commits_at_once(self) -> None:
        leased = self.lease(2)
        for j in leased:
            fired(self.jobs.start(j.id, "n1", NOW, NOW + 60))
        fired(self.jobs.flush())
        self.assertEqual({j.status for j in self.stored().values()}, {JobStatus.RUNNING})
        fired(self.jobs.flush())  # nothing queued: at once

    def test_settle_drops_what_a_failing_database_refuses(self) -> None:
        (leased,) = self.lease(1)
        fired(self.jobs.start(leased.id, "n1", NOW, NOW + 60))
        self.counting.fail_next = 1
        fired(self.jobs.settle())
        self.assertEqual(self.jobs.bookkeeping.dropped, 1)
        self.assertEqual(self.jobs.bookkeeping.pending, 0)
        self.assertEqual(self.stored()[leased.id].status, JobStatus.LEASED)
        # Still usable afterwards.
        fired(self.jobs.finish(attrs.evolve(leased, attempts=1), "n1", "done", Outcome(True),
                               NOW, None))
        fired(self.jobs.flush())
        self.assertEqual(self.jobs.bookkeeping.batches, 1)

    def test_without_write_behind_a_failure_goes_to_the_caller(self) -> None:
        honest = JobStore(self.store, reactor=self.clock, interval=INTERVAL)
        (leased,) = self.lease(1)
        started = honest.start(leased.id, "n1", NOW, NOW + 60)
        self.assertFalse(started.called)  # waits for its batch
        self.counting.fail_next = 1
        self.clock.advance(INTERVAL)
        self.assertRaises(StoreError, fired, started)
        self.assertEqual(honest.bookkeeping.pending, 0)
        self.assertEqual(self.stored()[leased.id].status, JobStatus.LEASED)

    def test_commands_wait_for_their_commit(self) -> None:
        # A plan's pause or cancel withdraws the command jobs the database has as not
        # started: a command's job starts only once its start is committed.
        fired(self.jobs.add_jobs([job("c", task=None, command=7, kind="command")], NOW))
        (leased,) = fired(self.jobs.lease("n1", NOW, NOW + 60, 1, {}, {}))
        starting = self.jobs.start(leased.id, "n1", NOW, NOW + 60)
        self.assertFalse(starting.called)
        self.clock.advance(INTERVAL)
        started = fired(starting)
        self.assertEqual(self.stored()[leased.id].status, JobStatus.RUNNING)
        finished = self.jobs.finish(started, "n1", "done", Outcome(True), NOW, None)
        self.assertFalse(finished.called)
        self.clock.advance(INTERVAL)
        self.assertTrue(fired(finished))


    def test_a_read_now_end_waits_for_its_commit(self) -> None:
        # The door answers with the readings once the job is recorded done.
        fired(self.jobs.add_jobs([job("r", task=None, params={READ_NOW: "api:alice"})], NOW))
        (leased,) = fired(self.jobs.lease("n1", NOW, NOW + 60, 1, {}, {}))
        started = fired(self.jobs.start(leased.id, "n1", NOW, NOW + 60))
        finished = self.jobs.finish(started, "n1", "done", Outcome(True), NOW, None)
        self.assertFalse(finished.called)
        self.clock.advance(INTERVAL)
        self.assertTrue(fired(finished))
        self.assertEqual(self.stored()[leased.id].status, JobStatus.DONE)


class SchedulerBookkeepingTests(unittest.TestCase):
    """The scheduler on a write-behind job store: jobs run back to back without waiting for
    their bookkeeping, which is committed in batches and once more when it stops."""

    def setUp(self) -> None:
        self.clock = SyncReactor()
        self.clock.advance(NOW)
        self.store = SqliteStore(":memory:", self.clock,  # type: ignore[arg-type]
                                 threadpool=SyncPool())  # type: ignore[arg-type]
        fired(self.store.open())
        self.addCleanup(self.store.close)
        self.jobs = JobStore(self.store, reactor=self.clock, interval=INTERVAL,
                             write_behind=True)
        self.counting = Counting(self.store)
        self.runner = ManualRunner()

    def test_jobs_run_back_to_back_and_stopping_commits_their_ends(self) -> None:
        line = "tcp:host=10.0.5.1:port=4059"
        fleet = [Meter(f"m{n}", "dlms", f"{line}@{n}") for n in range(3)]
        scheduler = Scheduler(self.clock, self.jobs, directory_with(self.store, fleet),
                              self.runner, node="n1", poll=1.0)
        scheduler.startService()
        fired(self.jobs.add_jobs([
            Job(id=0, meter=m.id, kind="registers", route=m.route, resource=line,
                due=NOW - n, run_at=NOW - n) for n, m in enumerate(fleet)], NOW))
        scheduler.kick()
        self.clock.advance(0)
        for meter in ("m2", "m1"):
            self.assertEqual(self.runner.running(), [meter])
            self.runner.succeed(meter)
            self.clock.advance(0)  # the next job of the line at once, nothing committed
        self.assertEqual(self.runner.running(), ["m0"])
        self.assertEqual(self.jobs.bookkeeping.batches, 0)
        self.clock.advance(INTERVAL)
        self.assertEqual(self.jobs.bookkeeping.batches, 1)
        self.assertEqual(sorted(str(j.status) for j in fired(self.jobs.jobs())),
                         ["done", "done", "running"])
        stopping = scheduler.stopService()
        self.runner.succeed("m0")
        fired(stopping)  # without the clock moving: stopping committed the last end
        self.assertEqual({j.status for j in fired(self.jobs.jobs())}, {JobStatus.DONE})
        self.assertEqual(self.ok_stats(), 3)

    def ok_stats(self) -> int:
        return sum(r.ok for r in fired(self.jobs.stats(day_of(NOW), "task")))


class BatchLimitTests(unittest.TestCase):
    """Bookkeeping alone, on a fake clock, with a fake transaction."""

    def setUp(self) -> None:
        self.clock = SyncReactor()
        self.batches: list[list[int]] = []
        self.failing = False

    def run_batch(self, changes: Any) -> Deferred[list[Any]]:
        if self.failing:
            return fail(StoreError("down"))
        self.batches.append([c.job_id for c in changes])
        return succeed([True] * len(changes))

    def test_a_full_batch_leaves_at_once(self) -> None:
        self.assertEqual(Bookkeeping(self.run_batch, self.clock, INTERVAL).max_batch, 1000)
        book = Bookkeeping(self.run_batch, self.clock, INTERVAL, max_batch=3)
        for n in range(7):
            book.add(start_change(n, "n", NOW, NOW))
        self.assertEqual(self.batches, [[0, 1, 2], [3, 4, 5]])
        self.clock.advance(INTERVAL)
        self.assertEqual(self.batches, [[0, 1, 2], [3, 4, 5], [6]])

    def test_retries_wait_longer_each_time_up_to_thirty_seconds(self) -> None:
        book = Bookkeeping(self.run_batch, self.clock, INTERVAL)
        change = start_change(1, "n", NOW, NOW)
        change.retry = True  # its caller was answered already
        book.add(change)
        self.failing = True
        self.clock.advance(INTERVAL)
        delays = []
        for _ in range(12):
            (call,) = self.clock.getDelayedCalls()
            delays.append(round(call.getTime() - self.clock.seconds(), 3))
            self.clock.advance(delays[-1])
        self.assertEqual(delays[:4], [0.1, 0.2, 0.4, 0.8])
        self.assertEqual(delays[-3:], [30.0, 30.0, 30.0])
        self.failing = False
        self.clock.advance(30)
        self.assertEqual(self.batches, [[1]])
        self.assertEqual(self.clock.getDelayedCalls(), [])


    def test_a_batch_that_raises_is_a_failed_batch(self) -> None:
        raised = []

        def broken(changes: Any) -> Deferred[list[Any]]:
            if not raised:
                raised.append(True)
                raise StoreError("cannot even start")
            return self.run_batch(changes)

        book = Bookkeeping(broken, self.clock, INTERVAL)
        change = start_change(1, "n", NOW, NOW)
        change.retry = True
        book.add(change)
        self.clock.advance(INTERVAL)
        self.assertEqual((book.failures, book.pending), (1, 1))
        self.clock.advance(0.1)
        self.assertEqual((self.batches, book.pending), ([[1]], 0))


class GroupTests(unittest.TestCase):
    """Which changes share a statement: a job's changes keep their order."""

    def kinds(self, changes: list[Change]) -> list[tuple[str, list[int]]]:
        return [(kind, [c.job_id for c in members]) for kind, members in _groups(changes)]

    def finish(self, job_id: int) -> Change:
        return finish_change(attrs.evolve(job(f"m{job_id}"), id=job_id, attempts=1), "n", "done",
                             Outcome(True), NOW, None)

    def test_starts_and_finishes_of_different_jobs_share_statements(self) -> None:
        changes = [start_change(1, "n", NOW, NOW), start_change(2, "n", NOW, NOW),
                   self.finish(1), start_change(3, "n", NOW, NOW), self.finish(2)]
        self.assertEqual(self.kinds(changes), [(START, [1, 2, 3]), (FINISH, [1, 2])])

    def test_a_job_changes_in_the_order_given(self) -> None:
        changes = [self.finish(1), start_change(1, "n", NOW, NOW), self.finish(1),
                   start_change(2, "n", NOW, NOW)]
        self.assertEqual(self.kinds(changes),
                         [(FINISH, [1]), (START, [1, 2]), (FINISH, [1])])
