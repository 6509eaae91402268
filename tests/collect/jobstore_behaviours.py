"""What every job store must do, run against SQLite (its store thread) and PostgreSQL.

A test case mixes ``JobStoreBehaviours`` into a trial TestCase and provides
``new_store()`` (an unopened IStore on the test's database, the same one on every call).
"""

from __future__ import annotations

from typing import Any

import attrs
from zope.interface.verify import verifyObject

from fep.collect.jobstore import JobStore
from fep.collect.tasks import (
    Command,
    CommandStatus,
    Job,
    JobStatus,
    Outcome,
    Priority,
    Target,
    Task,
)
from fep.interfaces import IJobStore

NOW = 1_700_000_000.0


def job(meter: str, *, due: float = NOW, task: str | None = "t", **kw: Any) -> Job:
    route = kw.pop("route", f"tcp:host=10.0.0.1:port={abs(hash(meter)) % 60000 + 1}")
    return Job(id=0, meter=meter, kind=kw.pop("kind", "registers"), route=route,
               resource=kw.pop("resource", route), due=due, run_at=kw.pop("run_at", due),
               task=task, **kw)


class JobStoreBehaviours:
    def new_store(self) -> Any:
        raise NotImplementedError

    async def jobs_store(self) -> JobStore:
        store = self.new_store()
        await store.open()
        self.addCleanup(store.close)
        return JobStore(store)

    async def test_provides_the_interface(self) -> None:
        jobs = await self.jobs_store()
        self.assertTrue(verifyObject(IJobStore, jobs))

    async def test_tasks_round_trip(self) -> None:
        jobs = await self.jobs_store()
        task = Task(name="lp-north", kind="load-profile", schedule="every 15m",
                    target=Target.parse("group:north"), items=["1.0.99.1.0.255"],
                    priority="backfill", retries=3, retry_delay=30, deadline=600,
                    options={"horizon": "2d", "interval": "15m"}, next_due=NOW + 900)
        await jobs.save_task(task, NOW)
        (got,) = await jobs.tasks()
        self.assertEqual(got, task)
        self.assertEqual(dict(got.options), {"horizon": "2d", "interval": "15m"})
        self.assertEqual(got.priority, Priority.BACKFILL)
        await jobs.save_task(attrs.evolve(task, schedule="every 1h"), NOW)
        self.assertEqual((await jobs.task("lp-north")).schedule, "every 1h")
        self.assertTrue(await jobs.set_task_enabled("lp-north", False, NOW))
        self.assertFalse((await jobs.task("lp-north")).enabled)
        self.assertFalse(await jobs.set_task_enabled("nope", False, NOW))
        self.assertTrue(await jobs.delete_task("lp-north"))
        self.assertIsNone(await jobs.task("lp-north"))

    async def test_a_run_is_claimed_once(self) -> None:
        jobs = await self.jobs_store()
        await jobs.save_task(Task(name="t", kind="registers", schedule="every 15m",
                                  next_due=NOW), NOW)
        self.assertTrue(await jobs.claim_run("t", NOW, NOW + 900, NOW))
        self.assertFalse(await jobs.claim_run("t", NOW, NOW + 900, NOW))
        self.assertEqual((await jobs.task("t")).next_due, NOW + 900)

    async def test_one_on_demand_job_is_added_with_its_id(self) -> None:
        jobs = await self.jobs_store()
        asked = job("a", task=None, priority=Priority.ON_DEMAND, pinned="n1",
                    params={"read_now": "api:alice", "options": {"dlms_objects": "x"}})
        first = await jobs.add_job(asked)
        second = await jobs.add_job(asked)  # no task run: never one per meter
        self.assertNotEqual(first, second)
        got = await jobs.job(first)
        self.assertEqual((got.meter, got.task, got.pinned, got.priority, got.status),
                         ("a", None, "n1", Priority.ON_DEMAND, JobStatus.PENDING))
        self.assertEqual(got.params["read_now"], "api:alice")
        self.assertEqual(dict(got.params["options"]), {"dlms_objects": "x"})

    async def test_a_task_run_has_one_job_per_meter(self) -> None:
        jobs = await self.jobs_store()
        self.assertEqual(await jobs.add_jobs([job("a"), job("b")], NOW), 2)
        self.assertEqual(await jobs.add_jobs([job("a"), job("b"), job("c")], NOW), 1)
        self.assertEqual(await jobs.add_jobs([job("x", task=None), job("x", task=None)], NOW),
                         2)
        self.assertEqual(len(await jobs.jobs(limit=None)), 5)

    async def test_jobs_round_trip(self) -> None:
        jobs = await self.jobs_store()
        original = job("a", items=["3/1.0.1.8.0.255/2", "8/0.0.1.0.0.255/2"], params={"k": 1},
                       priority=Priority.ALARM, deadline=NOW + 60, max_attempts=3,
                       retry_delay=7.5, backoff=3.0, pinned="n1")
        await jobs.add_jobs([original], NOW)
        (got,) = await jobs.jobs()
        self.assertEqual(attrs.evolve(got, id=0), original)
        self.assertEqual(dict(got.params), {"k": 1})
        self.assertEqual(await jobs.job(got.id), got)

    async def test_lease_by_priority_then_time(self) -> None:
        jobs = await self.jobs_store()
        await jobs.add_jobs([
            job("late", run_at=NOW - 1, priority=Priority.SCHEDULED),
            job("early", run_at=NOW - 9, priority=Priority.SCHEDULED),
            job("backfill", priority=Priority.BACKFILL),
            job("urgent", priority=Priority.ON_DEMAND),
            job("future", run_at=NOW + 5, priority=Priority.ON_DEMAND),
        ], NOW)
        leased = await jobs.lease("n1", NOW, NOW + 60, 3, {}, {})
        self.assertEqual([j.meter for j in leased], ["urgent", "early", "late"])
        self.assertEqual({(j.status, j.node, j.lease_until) for j in leased},
                         {(JobStatus.LEASED, "n1", NOW + 60)})
        rest = await jobs.lease("n2", NOW, NOW + 60, 10, {}, {})
        self.assertEqual([j.meter for j in rest], ["backfill"])

    async def test_lease_respects_resources(self) -> None:
        jobs = await self.jobs_store()
        await jobs.add_jobs([
            job("bus1", resource="bus", due=NOW - 3),
            job("bus2", resource="bus", due=NOW - 2),
            job("pool1", resource="dialup:*", due=NOW - 3),
            job("pool2", resource="dialup:*", due=NOW - 2),
            job("pool3", resource="dialup:*", due=NOW - 1),
            job("own", resource="own"),
        ], NOW)
        leased = await jobs.lease("n1", NOW, NOW + 60, 10, {"own": 1}, {"dialup:*": 2})
        self.assertEqual(sorted(j.meter for j in leased), ["bus1", "pool1", "pool2"])
        # Another node: the bus and the pool are in use by n1 ("own" was held back by n1's
        # own count only).
        other = await jobs.lease("n2", NOW, NOW + 60, 10, {}, {"dialup:*": 2})
        self.assertEqual([j.meter for j in other], ["own"])
        # n1 itself: its own room is what limits it.
        more = await jobs.lease("n1", NOW, NOW + 60, 10, {"bus": 1, "dialup:*": 1},
                                {"dialup:*": 2})
        self.assertEqual(sorted(j.meter for j in more), ["pool3"])

    async def test_expired_leases_are_leased_again(self) -> None:
        jobs = await self.jobs_store()
        await jobs.add_jobs([job("a")], NOW)
        (held,) = await jobs.lease("dead", NOW, NOW + 30, 1, {}, {})
        started = await jobs.start(held.id, "dead", NOW, NOW + 30)
        self.assertEqual((started.status, started.attempts), (JobStatus.RUNNING, 1))
        self.assertEqual(await jobs.lease("alive", NOW + 29, NOW + 90, 1, {}, {}), [])
        (again,) = await jobs.lease("alive", NOW + 31, NOW + 90, 1, {}, {})
        self.assertEqual((again.id, again.node, again.attempts), (held.id, "alive", 1))
        # The dead node's late word counts for nothing.
        self.assertIsNone(await jobs.start(held.id, "dead", NOW + 32, NOW + 60))
        self.assertFalse(await jobs.finish(started, "dead", "done", Outcome(True), NOW + 32,
                                           None))
        mine = await jobs.start(again.id, "alive", NOW + 32, NOW + 90)
        self.assertTrue(await jobs.finish(mine, "alive", "done", Outcome(True, result="ok",
                                                                          bytes_in=10,
                                                                          bytes_out=4),
                                          NOW + 33, None))
        (done,) = await jobs.jobs()
        self.assertEqual((done.status, done.node, done.attempts, done.bytes_in, done.result,
                          done.first_ok, done.finished_at),
                         (JobStatus.DONE, "alive", 2, 10, "ok", None, NOW + 33))

    async def test_renew_keeps_a_lease(self) -> None:
        jobs = await self.jobs_store()
        await jobs.add_jobs([job("a")], NOW)
        (held,) = await jobs.lease("n1", NOW, NOW + 30, 1, {}, {})
        self.assertEqual(await jobs.renew("n1", [held.id], NOW + 100), 1)
        self.assertEqual(await jobs.renew("n2", [held.id], NOW + 100), 0)
        self.assertEqual(await jobs.lease("n2", NOW + 50, NOW + 80, 1, {}, {}), [])

    async def test_pinned_jobs_and_session_homes(self) -> None:
        jobs = await self.jobs_store()
        await jobs.add_jobs([job("pinned", pinned="n2"), job("gprs", resource="gprs:imei=1")],
                            NOW)
        self.assertIsNone(await jobs.home("gprs:imei=1"))
        await jobs.set_home("gprs:imei=1", "n2", NOW)
        self.assertEqual(await jobs.home("gprs:imei=1"), "n2")
        self.assertEqual(await jobs.lease("n1", NOW, NOW + 30, 5, {}, {}), [])
        leased = await jobs.lease("n2", NOW, NOW + 30, 5, {}, {})
        self.assertEqual(sorted(j.meter for j in leased), ["gprs", "pinned"])
        await jobs.set_home("gprs:imei=1", None, NOW)
        self.assertIsNone(await jobs.home("gprs:imei=1"))

    async def test_retry_then_statistics(self) -> None:
        jobs = await self.jobs_store()
        await jobs.add_jobs([job("a", route="gprs:imei=1", resource="gprs:imei=1",
                                 max_attempts=2)], NOW)
        (held,) = await jobs.lease("n1", NOW, NOW + 30, 1, {}, {})
        first = await jobs.start(held.id, "n1", NOW, NOW + 30)
        await jobs.finish(first, "n1", "pending", Outcome(False, error="silence"), NOW + 1,
                          NOW + 11)
        self.assertEqual(await jobs.lease("n1", NOW + 10, NOW + 40, 1, {}, {}), [])
        (again,) = await jobs.lease("n1", NOW + 11, NOW + 40, 1, {}, {})
        second = await jobs.start(again.id, "n1", NOW + 11, NOW + 40)
        await jobs.finish(second, "n1", "done", Outcome(True), NOW + 12, None)
        rows = {(r.scope, r.key): r for r in await jobs.stats("2000-01-01")}
        self.assertEqual(set(rows), {("task", "t"), ("route", "gprs:imei=1"),
                                     ("channel", "gprs"), ("meter", "a")})
        row = rows[("channel", "gprs")]
        self.assertEqual((row.jobs, row.first_ok, row.ok, row.failed, row.attempts),
                         (1, 0, 1, 0, 2))

    async def test_missed_jobs_are_recorded(self) -> None:
        jobs = await self.jobs_store()
        await jobs.add_jobs([job("a", deadline=NOW + 10), job("b", deadline=NOW + 100)], NOW)
        missed = await jobs.expire(NOW + 11)
        self.assertEqual([j.meter for j in missed], ["a"])
        self.assertEqual((await jobs.jobs(meter="a"))[0].status, JobStatus.MISSED)
        (row,) = await jobs.stats("2000-01-01", "meter")
        self.assertEqual((row.key, row.jobs, row.missed), ("a", 1, 1))
        # Past its deadline a job is not leased either.
        self.assertEqual(await jobs.lease("n1", NOW + 101, NOW + 130, 5, {}, {}), [])

    async def test_a_newer_run_supersedes_a_waiting_one(self) -> None:
        jobs = await self.jobs_store()
        await jobs.add_jobs([job("a", due=NOW), job("b", due=NOW)], NOW)
        await jobs.add_jobs([job("a", due=NOW + 900)], NOW + 900)
        old = next(j for j in await jobs.jobs(meter="a") if j.due == NOW)
        self.assertEqual(old.status, JobStatus.MISSED)
        self.assertIn("superseded", old.error)
        self.assertEqual((await jobs.jobs(meter="b"))[0].status, JobStatus.PENDING)

    async def test_release_gives_back_leases(self) -> None:
        jobs = await self.jobs_store()
        await jobs.add_jobs([job("a")], NOW)
        (held,) = await jobs.lease("n1", NOW, NOW + 30, 1, {}, {})
        self.assertEqual(await jobs.release("n1", [held.id]), 1)
        (back,) = await jobs.lease("n2", NOW, NOW + 30, 1, {}, {})
        self.assertEqual(back.id, held.id)

    async def test_commands_and_their_audit_trail(self) -> None:
        jobs = await self.jobs_store()
        asked = await jobs.add_command(
            Command(id=0, meter="m1", action="disconnect", params={"reason": "unpaid"},
                    requested_by="alice", requested_at=NOW, approval_required=True),
            None,
        )
        self.assertEqual((asked.status, asked.job), (CommandStatus.REQUESTED, None))
        self.assertIsNone(await jobs.transition(asked.id, ["queued"], "running", "x", "x", "",
                                                NOW))
        approved = await jobs.transition(
            asked.id, ["requested"], "queued", "bob", "approved", "ok", NOW + 5,
            job=job("m1", task=None, kind="command"),
            fields={"approved_by": "bob", "approved_at": NOW + 5},
        )
        self.assertEqual((approved.status, approved.approved_by), ("queued", "bob"))
        (queued,) = await jobs.jobs(meter="m1")
        self.assertEqual((queued.id, queued.command), (approved.job, asked.id))
        await jobs.command_progress(asked.id, {"blocks": 3})
        self.assertEqual(dict((await jobs.command(asked.id)).progress), {"blocks": 3})
        trail = await jobs.audit(asked.id)
        self.assertEqual([(a.who, a.action) for a in trail],
                         [("alice", "requested"), ("bob", "approved")])
        self.assertEqual([c.id for c in await jobs.commands(meter="m1")], [asked.id])

    async def test_a_job_settles_only_the_command_it_still_carries(self) -> None:
        jobs = await self.jobs_store()
        asked = await jobs.add_command(
            Command(id=0, meter="m1", action="time-set", params={}, requested_by="alice",
                    requested_at=NOW),
            job("m1", task=None, kind="command"),
        )
        first = asked.job
        # Held for approval, approved: a new job carries it.
        await jobs.transition(asked.id, ["queued"], "requested", "fep", "held", "", NOW)
        approved = await jobs.transition(asked.id, ["requested"], "queued", "bob", "approved",
                                         "", NOW + 1, job=job("m1", task=None, kind="command"))
        self.assertNotEqual(approved.job, first)
        # The held job's end comes late: it does not settle the approved command.
        self.assertIsNone(await jobs.transition(asked.id, ["queued", "running"], "done",
                                                "n1", "done", "held", NOW + 2, of_job=first))
        done = await jobs.transition(asked.id, ["queued", "running"], "done", "n1", "done",
                                     "clock set", NOW + 3, of_job=approved.job)
        self.assertEqual(done.status, CommandStatus.DONE)

    async def test_bookkeeping_in_batches_answered_at_once(self) -> None:
        from twisted.internet import reactor

        store = self.new_store()
        await store.open()
        self.addCleanup(store.close)
        jobs = JobStore(store, reactor=reactor, interval=0.01, write_behind=True)
        lines = [f"tcp:host=10.0.3.1:port={n + 1}" for n in range(250)]  # one line each
        await jobs.add_jobs([job(f"m{n}", due=NOW - n, route=lines[n], resource=lines[n])
                             for n in range(250)], NOW)
        leased = await jobs.lease("n1", NOW, NOW + 60, 250, {}, {})
        self.assertEqual(len(leased), 250)
        started = []
        for j in leased:
            d = jobs.start(j.id, "n1", NOW + 1, NOW + 61)
            self.assertTrue(d.called)  # from the lease, not the database
            started.append(await d)
        for j in started[:200]:
            self.assertTrue(await jobs.finish(j, "n1", "done",
                                              Outcome(True, result="ok", records=3),
                                              NOW + 2, None))
        for j in started[200:]:
            await jobs.finish(j, "n1", "pending", Outcome(False, error="silence"), NOW + 2,
                              NOW + 30)
        await jobs.flush()
        self.assertLessEqual(jobs.bookkeeping.batches, 3)
        stored = await jobs.jobs(limit=None)
        done = [j for j in stored if j.status == JobStatus.DONE]
        waiting = [j for j in stored if j.status == JobStatus.PENDING]
        self.assertEqual((len(done), len(waiting)), (200, 50))
        self.assertEqual({(j.attempts, j.records, j.first_ok, j.node, j.started_at)
                          for j in done}, {(1, 3, True, "n1", NOW + 1)})
        self.assertEqual({(j.attempts, j.run_at, j.node, j.first_ok) for j in waiting},
                         {(1, NOW + 30, None, False)})
        (row,) = await jobs.stats("2000-01-01", "task")
        self.assertEqual((row.jobs, row.ok, row.attempts), (200, 200, 200))
