"""Control plans: the rate limiter on a fake clock, target groups, and the lifecycle in the
plan store (SQLite and PostgreSQL) with explicit times: four eyes, no release before
approval and start, releases at the rate, pause and cancel withdrawing what has not started,
outcomes settled from the commands, the deadline, the audit trail."""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.trial import unittest

from fep.collect.limits import ResourcePolicy
from fep.collect.plans import (
    MeterState,
    PlanError,
    PlanRunner,
    PlanStatus,
    RateLimiter,
    create,
    resolve_target,
)
from fep.collect.planstore import PlanStore
from fep.collect.tasks import CommandStatus, JobStatus, Outcome
from fep.model import Meter
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.postgres import fresh_database

T0 = 1_800_000_000.0


def fleet(lines: int = 2, per_line: int = 3) -> list[Meter]:
    """DLMS meters on ``lines`` buses (one TCP port each), addressed 17, 18, ..."""
    return [
        Meter(f"m{line}-{n}", "dlms", f"tcp:host=127.0.0.1:port={4000 + line}@1/{17 + n}",
              metadata={"group": "north" if line == 0 else "south"})
        for line in range(lines) for n in range(per_line)
    ]


class RateLimiterTests(unittest.TestCase):
    """The limiter alone, on a fake clock."""

    def releases(self, limiter: RateLimiter, lines: list[str], until: float,
                 step: float = 0.01) -> list[tuple[float, str]]:
        clock = Clock()
        clock.advance(T0)
        out: list[tuple[float, str]] = []
        queue = list(lines)
        while clock.seconds() < T0 + until and queue:
            for line in list(queue):
                if limiter.allows(line, clock.seconds()):
                    limiter.take(line, clock.seconds())
                    out.append((clock.seconds() - T0, line))
                    queue.remove(line)
                    break
            else:
                clock.advance(step)
        return out

    def test_releases_are_spaced_at_the_rate(self) -> None:
        limiter = RateLimiter(600.0)  # one every 0.1 s
        got = self.releases(limiter, ["a"] * 100, 60)
        self.assertEqual(len(got), 100)
        times = [t for t, _ in got]
        # In any window of W seconds: at most (W + slack) * rate/60 + 1.
        for w in (0.5, 1.0, 5.0):
            for i, start in enumerate(times):
                inside = sum(1 for t in times[i:] if t <= start + w)
                self.assertLessEqual(inside, (w + limiter.slack) * 10 + 1)
        self.assertGreaterEqual(times[-1], 9.7)  # 100 meters at 10 a second: ~10 s

    def test_each_line_has_its_own_rate(self) -> None:
        limiter = RateLimiter(6000.0, line_rate=60.0)  # overall fast, 1 a second per line
        got = self.releases(limiter, ["a"] * 5 + ["b"] * 5, 10)
        for line in ("a", "b"):
            times = [t for t, ln in got if ln == line]
            self.assertEqual(len(times), 5)
            gaps = [b - a for a, b in itertools.pairwise(times)]
            self.assertTrue(all(g >= 1.0 - limiter.slack - 1e-6 for g in gaps), gaps)
        # The lines go side by side, not one after the other.
        self.assertLess(max(t for t, _ in got), 5.0)

    def test_no_credit_piles_up_while_idle(self) -> None:
        limiter = RateLimiter(60.0)
        limiter.take("a", T0)
        # A minute later the plan wakes up: one goes, the next only a second after.
        later = T0 + 60
        self.assertTrue(limiter.allows("a", later))
        limiter.take("a", later)
        self.assertFalse(limiter.allows("a", later + 0.5))
        self.assertTrue(limiter.allows("a", later + 1.0 - limiter.slack))

    def test_state_keeps_only_keys_ahead(self) -> None:
        limiter = RateLimiter(60.0, line_rate=30.0)
        limiter.take("a", T0)
        self.assertEqual(set(limiter.state(T0)), {"*", "line:a"})
        self.assertEqual(limiter.state(T0 + 5), {})


class TargetTests(unittest.TestCase):
    def test_kinds(self) -> None:
        meters = [*fleet(), Meter("c1", "dlms", "tcp:host=h:port=1",
                                  metadata={"concentrator": "k9"})]
        ids = [m.id for m in resolve_target("group:north", meters)]
        self.assertEqual(ids, ["m0-0", "m0-1", "m0-2"])
        self.assertEqual([m.id for m in resolve_target("tag:south", meters)],
                         ["m1-0", "m1-1", "m1-2"])
        self.assertEqual([m.id for m in resolve_target("meters:m1-2,m0-0,m1-2", meters)],
                         ["m1-2", "m0-0"])
        self.assertEqual([m.id for m in resolve_target("concentrator:k9", meters)], ["c1"])
        self.assertEqual(len(resolve_target("route:tcp:host=127.0.0.1:port=4001", meters)), 3)
        self.assertEqual(len(resolve_target("all", meters)), 7)
        text = "m0-1\n# a comment\n\nm1-1  # trailing\n"
        self.assertEqual([m.id for m in resolve_target("file:ids.txt", meters,
                                                       read_file=lambda p: text)],
                         ["m0-1", "m1-1"])

    def test_refusals(self) -> None:
        meters = fleet()
        for text in ("meters:m0-0,nope", "group:east", "file:ids.txt", "bogus:x"):
            with self.assertRaises(PlanError) as caught:
                resolve_target(text, meters)
            self.assertIn("target", str(caught.exception))


class PlanStoreBehaviours:
    """The plan store against a real database; times are given explicitly (a fake clock)."""

    def new_store(self) -> Any:
        raise NotImplementedError

    async def plans(self, meters: list[Meter] | None = None) -> PlanStore:
        store = self.new_store()
        await store.open()
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        self.meters = meters if meters is not None else fleet()
        await store.add_meters(self.meters)
        return PlanStore(store)

    async def draft(self, plans: PlanStore, **spec: Any) -> Any:
        spec = {"action": "disconnect", "target": "all", "rate": 60, **spec}
        return await create(plans, spec, spec.pop("who", "cli:alice"), T0, self.meters,
                            ResourcePolicy())

    async def running(self, plans: PlanStore, **spec: Any) -> Any:
        plan = await self.draft(plans, **spec)
        await plans.step(plan.id, "submit", "cli:alice", T0)
        await plans.step(plan.id, "approve", "api:bob", T0 + 1)
        return await plans.step(plan.id, "start", "console:bob", T0 + 2)

    async def test_four_eyes_and_no_release_before_approval_and_start(self) -> None:
        plans = await self.plans()
        plan = await self.draft(plans)
        self.assertEqual((plan.status, plan.total, plan.counts), (PlanStatus.DRAFT, 6,
                                                                  {"pending": 6}))
        t = self  # type: Any
        with t.assertRaises(PlanError):
            await plans.step(plan.id, "approve", "api:bob", T0)  # not submitted yet
        with t.assertRaises(PlanError):
            await plans.step(plan.id, "start", "api:bob", T0)  # not approved
        await plans.step(plan.id, "submit", "cli:alice", T0)
        for same in ("cli:alice", "api:alice", "console:alice", "alice"):
            with t.assertRaises(PlanError) as caught:
                await plans.step(plan.id, "approve", same, T0)
            t.assertIn("someone else", str(caught.exception))
        with t.assertRaises(PlanError):
            await plans.step(plan.id, "start", "api:bob", T0)  # still not approved
        # Nothing is released while it is not running.
        for status_now in (T0, T0 + 100):
            tick = await plans.tick(plan.id, status_now, "n1")
            t.assertEqual(tick.released, 0)
        t.assertEqual(await plans.commands(), [])
        approved = await plans.step(plan.id, "approve", "api:bob", T0 + 1)
        t.assertEqual((approved.status, approved.approved_by), (PlanStatus.APPROVED,
                                                                "api:bob"))
        t.assertEqual((await plans.tick(plan.id, T0 + 2, "n1")).released, 0)
        t.assertEqual(await plans.commands(), [])
        trail = [(a.who, a.action) for a in await plans.plan_audit(plan.id)]
        t.assertEqual(trail, [("cli:alice", "created"), ("cli:alice", "submitted"),
                              ("api:bob", "approved")])

    async def test_a_rejected_plan_never_runs(self) -> None:
        plans = await self.plans()
        plan = await self.draft(plans)
        await plans.step(plan.id, "submit", "cli:alice", T0)
        t = self  # type: Any
        with t.assertRaises(PlanError):
            await plans.step(plan.id, "reject", "api:alice", T0)
        rejected = await plans.step(plan.id, "reject", "api:bob", T0, "wrong group")
        t.assertEqual((rejected.status, rejected.reason), (PlanStatus.REJECTED, "wrong group"))
        for step in ("approve", "start"):
            with t.assertRaises(PlanError):
                await plans.step(plan.id, step, "api:carol", T0)

    async def test_releases_at_the_rate_as_approved_commands(self) -> None:
        plans = await self.plans()
        plan = await self.running(plans, rate=60, attempts=2, retry_delay=5)
        t = self  # type: Any
        t.assertEqual(plan.status, PlanStatus.RUNNING)
        first = await plans.tick(plan.id, T0 + 2, "n1")
        t.assertEqual(first.released, 1)
        t.assertAlmostEqual(first.next_at, T0 + 3 - 0.1)
        t.assertEqual((await plans.tick(plan.id, T0 + 2.5, "n1")).released, 0)
        t.assertEqual((await plans.tick(plan.id, T0 + 2.95, "n1")).released, 1)
        (_second, one) = await plans.commands()
        t.assertEqual((one.meter, one.action, one.status, one.requested_by, one.approved_by,
                       one.approval_required),
                      ("m0-0", "disconnect", CommandStatus.QUEUED, "cli:alice", "api:bob",
                       True))
        t.assertEqual(one.params["plan"], plan.id)
        trail = [(a.who, a.action, a.detail) for a in await plans.audit(one.id)]
        t.assertEqual(trail[1], ("api:bob", "approved", f"approved via plan {plan.id}"))
        t.assertEqual([a for _, a, _ in trail], ["requested", "approved", "queued"])
        job = await plans.job(one.job)
        t.assertEqual((job.max_attempts, job.retry_delay, job.priority, job.resource),
                      (2, 5.0, 0, "tcp:127.0.0.1:4000"))
        rows = {r.meter: r for r in await plans.meters(plan.id)}
        t.assertEqual(rows["m0-0"].state, MeterState.RELEASED)
        t.assertEqual(rows["m0-0"].command, one.id)

    async def run_jobs(self, plans: PlanStore, now: float) -> int:
        """A node runs every job it can lease now, each done at once."""
        ran = 0
        for leased in await plans.lease("n1", now, now + 60, 100, {}, {}):
            job = await plans.start(leased.id, "n1", now, now + 60)
            await plans.finish(job, "n1", "done", Outcome(True, "ok"), now, None)
            await plans.transition(job.command, ["queued"], "done", "n1", "done", "ok", now,
                                   fields={"outcome": "disconnect done"})
            ran += 1
        return ran

    async def test_per_line_rate(self) -> None:
        plans = await self.plans()
        plan = await self.running(plans, rate=6000, line_rate=60)
        t = self  # type: Any
        tick = await plans.tick(plan.id, T0 + 2, "n1")
        t.assertEqual(tick.released, 2)  # one on each line, not two on the first
        lines = {r.line for r in await plans.meters(plan.id, "released")}
        t.assertEqual(lines, {"tcp:127.0.0.1:4000", "tcp:127.0.0.1:4001"})
        t.assertEqual(await self.run_jobs(plans, T0 + 2.2), 2)
        t.assertEqual((await plans.tick(plan.id, T0 + 2.5, "n1")).released, 0)
        t.assertEqual((await plans.tick(plan.id, T0 + 3, "n1")).released, 2)

    async def test_a_busy_line_waits(self) -> None:
        """A line with a command of the plan waiting for it or on it gets no other until
        that one ended: its commands start as they are released, never in a heap."""
        plans = await self.plans(fleet(1, 3))
        plan = await self.running(plans, rate=6000)
        t = self  # type: Any
        first = await plans.tick(plan.id, T0 + 2, "n1")
        t.assertEqual(first.released, 1)
        second = await plans.tick(plan.id, T0 + 3, "n1")
        t.assertEqual((second.released, second.next_at, second.under_way), (0, None, True))
        t.assertEqual(await self.run_jobs(plans, T0 + 3), 1)
        t.assertEqual((await plans.tick(plan.id, T0 + 3.1, "n1")).released, 1)
        # A shared pool of two lines takes two at once.
        await self.run_jobs(plans, T0 + 3.2)
        last = await plans.tick(plan.id, T0 + 4, "n1", {"tcp:127.0.0.1:4000": 2})
        t.assertEqual(last.released, 1)  # the last meter

    async def test_outcomes_settle_and_the_plan_ends(self) -> None:
        meters = [*fleet(3, 1), Meter("nr", "dlms", "tcp:host=h:port=9",
                                      metadata={"commands": "demand-reset"})]
        plans = await self.plans(meters)
        plan = await self.running(plans, rate=6000)
        t = self  # type: Any
        t.assertEqual(plan.counts, {"pending": 3, "not-supported": 1})
        (unsupported,) = await plans.meters(plan.id, "not-supported")
        t.assertIn("device does not have it", unsupported.reason)
        await plans.tick(plan.id, T0 + 2, "n1")
        await plans.tick(plan.id, T0 + 3, "n1")
        await plans.tick(plan.id, T0 + 4, "n1")
        commands = {c.meter: c for c in await plans.commands()}
        t.assertEqual(set(commands), {"m0-0", "m1-0", "m2-0"})
        for meter, status, outcome in (("m0-0", "done", "disconnect done"),
                                       ("m1-0", "failed", "meter refused: 0x0B"),
                                       ("m2-0", "failed", "missed: deadline passed")):
            await plans.transition(commands[meter].id, ["queued"], status, "n1", status,
                                   outcome, T0 + 5, fields={"outcome": outcome})
        tick = await plans.tick(plan.id, T0 + 6, "n1")
        t.assertEqual(tick.status, PlanStatus.DONE)
        done = await plans.plan(plan.id)
        t.assertEqual(done.counts, {"done": 1, "failed": 1, "skipped": 1, "not-supported": 1})
        rows = {r.meter: r for r in await plans.meters(plan.id)}
        t.assertEqual(rows["m1-0"].reason, "meter refused: 0x0B")
        t.assertIn("deadline passed", rows["m2-0"].reason)
        t.assertEqual(done.finished_at, T0 + 6)
        t.assertEqual([a.action for a in await plans.plan_audit(plan.id)][-1], "done")

    async def test_pause_withholds_what_has_not_started_and_start_resumes(self) -> None:
        plans = await self.plans()
        plan = await self.running(plans, rate=900)  # two go at once (slack 0.1 s)
        t = self  # type: Any
        t.assertEqual((await plans.tick(plan.id, T0 + 2, "n1")).released, 2)
        # One of the two jobs has started on a node: it goes on; the other is withheld.
        leased = await plans.lease("n1", T0 + 2, T0 + 60, 1, {}, {})
        started = await plans.start(leased[0].id, "n1", T0 + 2, T0 + 60)
        paused = await plans.step(plan.id, "pause", "console:carol", T0 + 3)
        t.assertEqual(paused.status, PlanStatus.PAUSED)
        t.assertEqual(paused.counts, {"released": 1, "pending": 5})
        jobs = {j.id: j for j in await plans.jobs()}
        t.assertEqual(jobs[started.id].status, JobStatus.RUNNING)
        (withheld,) = [j for j in jobs.values() if j.id != started.id]
        t.assertEqual(withheld.status, JobStatus.MISSED)
        command = await plans.command(withheld.command)
        t.assertEqual(command.status, CommandStatus.FAILED)
        t.assertIn("withheld", command.outcome)
        t.assertEqual([a.action for a in await plans.audit(command.id)][-1], "withheld")
        for now in (T0 + 4, T0 + 30):
            t.assertEqual((await plans.tick(plan.id, now, "n1")).released, 0)
        resumed = await plans.step(plan.id, "start", "console:carol", T0 + 31)
        t.assertEqual(resumed.status, PlanStatus.RUNNING)
        # The line whose command is still on: nothing more there until it ended.
        t.assertEqual((await plans.tick(plan.id, T0 + 31, "n1")).released, 1)
        trail = [a.action for a in await plans.plan_audit(plan.id)]
        t.assertEqual(trail[-2:], ["paused", "resumed"])

    async def test_cancel_skips_the_rest(self) -> None:
        plans = await self.plans()
        plan = await self.running(plans, rate=900)
        t = self  # type: Any
        await plans.tick(plan.id, T0 + 2, "n1")
        cancelled = await plans.step(plan.id, "cancel", "api:alice", T0 + 3, "storm")
        t.assertEqual(cancelled.status, PlanStatus.CANCELLED)
        t.assertEqual(cancelled.counts, {"skipped": 6})
        t.assertEqual(cancelled.finished_at, T0 + 3)
        t.assertEqual({c.status for c in await plans.commands()}, {CommandStatus.FAILED})
        t.assertEqual({j.status for j in await plans.jobs()}, {JobStatus.MISSED})
        t.assertEqual((await plans.tick(plan.id, T0 + 4, "n1")).released, 0)
        with t.assertRaises(PlanError):
            await plans.step(plan.id, "start", "api:bob", T0 + 5)

    async def test_deadline_skips_what_was_not_released(self) -> None:
        plans = await self.plans()
        plan = await self.running(plans, rate=60, deadline_s=1.5)
        t = self  # type: Any
        t.assertEqual(plan.deadline_at, T0 + 2 + 1.5)
        await plans.tick(plan.id, T0 + 2, "n1")
        (job,) = await plans.jobs()
        t.assertEqual(job.deadline, T0 + 3.5)
        await plans.tick(plan.id, T0 + 4, "n1")
        after = await plans.plan(plan.id)
        t.assertEqual(after.counts, {"released": 1, "skipped": 5})
        (row, *_) = await plans.meters(plan.id, "skipped")
        t.assertEqual(row.reason, "deadline passed before it was released")

    async def test_a_start_time_starts_it(self) -> None:
        plans = await self.plans()
        plan = await self.draft(plans, start=T0 + 100)
        await plans.step(plan.id, "submit", "cli:alice", T0)
        await plans.step(plan.id, "approve", "cli:bob", T0)
        t = self  # type: Any
        t.assertEqual(await plans.active(T0 + 50), [])
        t.assertEqual(await plans.active(T0 + 100), [plan.id])
        tick = await plans.tick(plan.id, T0 + 100, "n1")
        t.assertEqual((tick.status, tick.released), ("running", 1))
        t.assertEqual([a.who for a in await plans.plan_audit(plan.id)][-1], "n1")


class SqlitePlanStoreTests(PlanStoreBehaviours, unittest.TestCase):
    def new_store(self) -> SqliteStore:
        if not hasattr(self, "path"):
            self.path = self.mktemp() + ".sqlite"
        return SqliteStore(self.path, reactor)


class PostgresPlanStoreTests(PlanStoreBehaviours, unittest.TestCase):
    def new_store(self) -> PostgresStore:
        if not hasattr(self, "url"):
            self.url = fresh_database(self)
        return PostgresStore(self.url, reactor, pool_size=2)

    async def test_two_nodes_keep_one_rate(self) -> None:
        """Two nodes ticking the same plan at the same moments release what one would: the
        release holds the plan's row."""
        plans = await self.plans(fleet(4, 5))
        other = PlanStore(self.new_store())
        await other.store.open()
        self.addCleanup(other.store.close)
        plan = await self.running(plans, rate=600, line_rate=6000)
        released = 0
        for step in range(20):
            now = T0 + 2 + step * 0.05
            ticks = await gatherResults([plans.tick(plan.id, now, "n1"),
                                         other.tick(plan.id, now, "n2")])
            released += sum(t.released for t in ticks)
            await self.run_jobs(plans, now)
        # One second at 10 a second (the first at once, then every 0.1 s, 0.1 s early).
        self.assertLessEqual(released, 11)
        self.assertGreaterEqual(released, 9)
        commands = await plans.commands(limit=100)
        self.assertEqual(len(commands), released)
        self.assertEqual(len({c.meter for c in commands}), released)


class PlanRunnerTests(unittest.TestCase):
    """The executor's passes on a fake clock, over a fake plan store."""

    def test_passes_follow_the_rate_and_poll(self) -> None:
        clock = Clock()
        clock.advance(T0)
        kicked: list[float] = []

        class FakeStore:
            def __init__(self) -> None:
                self.limiter = RateLimiter(600.0)
                self.left = 5
                self.ticks: list[float] = []

            async def active(self, now: float) -> list[int]:
                return [1] if self.left else []

            async def tick(self, plan_id: int, now: float, node: str, capacities: Any) -> Any:
                from fep.collect.planstore import Tick

                self.ticks.append(now)
                released = 0
                while self.left and self.limiter.allows("a", now):
                    self.limiter.take("a", now)
                    self.left -= 1
                    released += 1
                return Tick("running", released, self.limiter.next_at(now) if self.left
                            else None, under_way=False)

        store = FakeStore()
        runner = PlanRunner(clock, store, node="n1", released=lambda: kicked.append(
            clock.seconds()), poll=1.0)
        runner.startService()
        self.addCleanup(runner.stopService)
        for _ in range(100):
            clock.advance(0.01)
        self.assertEqual(store.left, 0)
        self.assertGreaterEqual(len(kicked), 4)
        # Five at 10 a second: the last about 0.3 s after the first, never in one go.
        self.assertGreaterEqual(kicked[-1] - kicked[0], 0.29)
        # With nothing to do, it looks again every poll.
        before = len(store.ticks)
        clock.advance(5)
        self.assertEqual(len(store.ticks), before)
