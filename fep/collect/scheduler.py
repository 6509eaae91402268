"""The scheduler: turns due task runs into jobs, leases jobs for this node, runs them under
the limits (one job at a time per resource, shared pools, a global cap, connection permits
per cell/APN), retries failures with backoff and records jobs that miss their deadline.

Each pass (every ``poll`` seconds, when a task run falls due, and after each job ends):

1. jobs whose deadline passed before they could run are recorded as missed;
2. due task runs are claimed (one node wins each run) and expanded into one job per meter;
3. runnable jobs are leased for this node, by priority (on-demand, alarm, scheduled,
   backfill) then time, no more than the resources and the cap leave room for;
4. leased jobs are started, highest priority first, while the cap and permits allow.

Leases are renewed while this node holds the jobs; a node that dies stops renewing and its
jobs go to the others when the leases expire. Time is the reactor's clock, so everything
here runs on a MemoryReactorClock in tests.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from fep.channels.forwarding import forwarding_target
from fep.channels.routes import parse_route
from fep.collect.concentrators import CHILDREN, line_order, point_groups, through_points
from fep.collect.limits import Permits, ResourcePolicy
from fep.collect.schedule import Every
from fep.collect.tasks import Job, JobKind, JobStatus, Outcome, Priority, Task
from fep.directory import MeterDirectory, addressed
from fep.errors import FepError, RouteError
from fep.interfaces import IJobStore, IProfileReader, IWakeUp
from fep.model import Meter
from fep.protocols.registry import protocol_provides

log = Logger()

# Job parameter of a concentrator's job: the meters behind it, read once it succeeded.
OWNED = "owned"

# More than this many skipped runs of a task are not counted one by one.
_MAX_SKIPPED_COUNT = 100_000


def job_for(
    task: Task,
    meter: Meter,
    due: float,
    policy: ResourcePolicy,
    *,
    priority: int | None = None,
    deadline: float | None = None,
    params: dict[str, Any] | None = None,
) -> Job:
    """The job of one task run for one meter."""
    return Job(
        id=0,
        task=task.name,
        meter=meter.id,
        kind=JobKind(str(task.kind)),
        route=meter.route,
        resource=policy.key(meter.route),
        items=task.items,
        params={**task.options, **(params or {})},
        priority=int(task.priority if priority is None else priority),
        due=due,
        run_at=due,
        deadline=task.deadline_after(due) if deadline is None else deadline,
        max_attempts=task.retries + 1,
        retry_delay=task.retry_delay,
        backoff=task.backoff,
    )


def expand(
    task: Task,
    meters: Sequence[Meter],
    due: float,
    policy: ResourcePolicy,
    *,
    priority: int | None = None,
    deadline: float | None = None,
    known: Sequence[Meter] | None = None,
) -> list[Job]:
    """The jobs of a task run due at ``due``: one per target meter, in meter-list order per
    line, except the meters of a concentrator that is in the run too: their jobs are made
    when the concentrator's job ends (``OWNED``), read after it, or recorded as missed when
    it failed. A meter whose ``concentrator`` setting is wrong gets a failed job naming
    the error. The meters behind a concentrator that reads them by point are read by one
    job of that concentrator (``CHILDREN``; for registers and load profiles, unless the
    task says ``via = forward``), in the run even when the task does not name the
    concentrator itself; their own jobs are recorded when it ends (``children_jobs``).
    ``known``: every meter (default ``meters``)."""
    everyone = list(meters if known is None else known)
    targets = [m for m in meters if task.target.matches(m)]
    jobs: list[Job] = []
    if through_points(str(task.kind), task.options):
        groups, targets, refused = point_groups(targets, everyone)
        for group in groups:
            children = {m.id: point for m, point in group.children}
            jobs.append(job_for(task, group.concentrator, due, policy, priority=priority,
                                deadline=deadline, params={CHILDREN: children}))
        for meter, error in refused:
            job = job_for(task, meter, due, policy, priority=priority, deadline=deadline)
            jobs.append(attrs.evolve(job, status=JobStatus.FAILED, error=str(error),
                                     finished_at=due))
    lines: dict[str, list[Meter]] = {}
    for m in targets:
        lines.setdefault(policy.key(m.route), []).append(m)
    index = {m.id: m for m in everyone}
    index.update((m.id, m) for m in targets)
    for on_line in lines.values():
        steps, bad = line_order(on_line, index)
        for step in steps:
            params = {OWNED: [m.id for m in step.owned]} if step.owned else None
            jobs.append(job_for(task, step.meter, due, policy, priority=priority,
                                deadline=deadline, params=params))
        for meter, error in bad:
            job = job_for(task, meter, due, policy, priority=priority, deadline=deadline)
            jobs.append(attrs.evolve(job, status=JobStatus.FAILED, error=str(error),
                                     finished_at=due))
    return jobs


def owned_jobs(concentrator: Job, status: JobStatus, meters: Sequence[Meter],
               policy: ResourcePolicy, now: float) -> list[Job]:
    """The jobs of the meters behind a concentrator whose job of a run just ended: to run
    now when it succeeded, recorded as missed otherwise."""
    params = {k: v for k, v in concentrator.params.items() if k != OWNED}
    done = status == JobStatus.DONE
    return [
        Job(
            id=0,
            task=concentrator.task,
            meter=m.id,
            kind=concentrator.kind,
            route=m.route,
            resource=policy.key(m.route),
            items=concentrator.items,
            params=params,
            priority=concentrator.priority,
            due=concentrator.due,
            run_at=now,
            deadline=concentrator.deadline,
            max_attempts=concentrator.max_attempts,
            retry_delay=concentrator.retry_delay,
            backoff=concentrator.backoff,
            status=JobStatus.PENDING if done else JobStatus.MISSED,
            error=None if done else f"concentrator {concentrator.meter} {status}: "
            "not read this run",
            finished_at=None if done else now,
        )
        for m in meters
    ]


def children_jobs(concentrator: Job, status: JobStatus, outcome: Outcome,
                  meters: Callable[[str], Meter | None], policy: ResourcePolicy,
                  now: float) -> list[Job]:  # fmt: skip
    """The jobs of the meters a concentrator's job read by point (``CHILDREN``), ended as
    if each had been read: done or failed as the outcome of its point says (the runner's
    ``details["children"]``), missed or failed with the concentrator's error when the job
    ended without one for it."""
    params = {k: v for k, v in concentrator.params.items() if k != CHILDREN}
    said = outcome.details.get("children") or {}
    out = []
    for meter_id in concentrator.params.get(CHILDREN) or {}:
        meter = meters(meter_id)
        route = meter.route if meter is not None else concentrator.route
        detail = said.get(meter_id)
        result = error = None
        records, attempts = 0, concentrator.attempts
        if meter is not None and detail is not None and forwarded_second(
                concentrator, meter, str(detail.get("status"))):
            # Not in the concentrator's storage: its own job reads it by forwarding.
            out.append(Job(
                id=0, task=concentrator.task, meter=meter_id, kind=concentrator.kind,
                route=route, resource=policy.key(route), params=params,
                priority=concentrator.priority, due=concentrator.due, run_at=now,
                deadline=concentrator.deadline, max_attempts=concentrator.max_attempts,
                retry_delay=concentrator.retry_delay, backoff=concentrator.backoff,
            ))  # fmt: skip
            continue
        if detail is None:
            ended = JobStatus.MISSED if status == JobStatus.MISSED else JobStatus.FAILED
            error = (f"concentrator {concentrator.meter} {status}: "
                     f"{outcome.error or 'not read'}")  # fmt: skip
        else:
            attempts = int(detail.get("attempt") or attempts)
            records = int(detail.get("records") or 0)
            text = detail.get("text") or ""
            ok = detail.get("status") in CHILD_OK
            ended = JobStatus.DONE if ok else JobStatus.FAILED
            if ok:
                result = text
            else:
                error = f"through concentrator {concentrator.meter}: {text}"
        out.append(Job(
            id=0, task=concentrator.task, meter=meter_id, kind=concentrator.kind, route=route,
            resource=policy.key(route), items=concentrator.items, params=params,
            priority=concentrator.priority, due=concentrator.due, run_at=now,
            deadline=concentrator.deadline, max_attempts=concentrator.max_attempts,
            retry_delay=concentrator.retry_delay, backoff=concentrator.backoff, status=ended,
            attempts=attempts, started_at=concentrator.started_at, finished_at=now,
            result=result, error=error, records=records,
            first_ok=ended == JobStatus.DONE and attempts <= 1,
        ))  # fmt: skip
    return out


# The point statuses of a concentrator job's details that make a meter's job done: read
# now, or nothing missing (already stored).
CHILD_OK = ("read", "stored")
# The statuses of a load-profile point the concentrator's storage could not give.
NOT_STORED = ("no-data", "denied")


def forwarded_second(concentrator: Job, meter: Meter, status: str) -> bool:
    """Whether a meter the concentrator's job of a load profile could not give from its
    storage is read again by forwarding: its route forwards through that concentrator
    (``gw3761:DCU1:port=N``) and its protocol reads load profiles."""
    if concentrator.kind != JobKind.LOAD_PROFILE or status not in NOT_STORED:
        return False
    try:
        through, _ = forwarding_target(parse_route(meter.route))
    except RouteError:
        return False  # no port: the concentrator cannot forward to it
    return through == concentrator.meter and protocol_provides(meter.protocol, IProfileReader)


def latest_run(task: Task, due: float, now: float) -> tuple[float, int, float]:
    """(the latest run at or before ``now`` starting from ``due``, how many earlier runs it
    skips, the run after it)."""
    schedule = task.parsed_schedule()
    if isinstance(schedule, Every):
        steps = int((now - due) // schedule.period)
        latest = due + steps * schedule.period
        return latest, steps, schedule.next_after(latest)
    latest, skipped = due, 0
    following = schedule.next_after(latest)
    while following <= now and skipped < _MAX_SKIPPED_COUNT:
        latest, skipped = following, skipped + 1
        following = schedule.next_after(latest)
    return latest, skipped, following


RunJob = Callable[[Job, Meter], Deferred[Outcome]]


class Scheduler(service.Service):
    """The collection engine of one node. ``run_job(job, meter)`` runs one attempt and fires
    with its Outcome (fep.collect.runner.JobRunner.run); ``job_ended(job, status, outcome)``,
    when given, hears of every job that reached a final status on this node."""

    name = "scheduler"

    def __init__(
        self,
        reactor: IReactorTime,
        jobs: IJobStore,
        directory: MeterDirectory,
        run_job: RunJob,
        *,
        node: str,
        concurrency: int = 50,
        lease: float = 60.0,
        poll: float = 1.0,
        refresh: float = 30.0,
        resources: ResourcePolicy | None = None,
        permits: Permits | None = None,
        wakeup: IWakeUp | None = None,
        wakeup_timeout: float = 120.0,
        job_ended: Callable[[Job, JobStatus, Outcome], Deferred[None]] | None = None,
    ) -> None:
        self.reactor = reactor
        self.jobs = jobs
        self.directory = directory
        self.run_job = run_job
        self.node = node
        self.concurrency = concurrency
        self.lease = lease
        self.poll = poll
        self.refresh = refresh
        self.resources = resources or ResourcePolicy()
        self.permits = permits or Permits({})
        self.wakeup = wakeup
        self.wakeup_timeout = wakeup_timeout
        self.job_ended = job_ended
        # Leased here, not started; started and not finished; resources they hold.
        self.queue: list[Job] = []
        self.active: dict[int, Deferred[None]] = {}
        self.in_use: Counter[str] = Counter()
        self._pass: Deferred[None] | None = None
        self._again = False
        self._timer: IDelayedCall | None = None
        self._renewer: LoopingCall | None = None
        self._refreshed_at: float | None = None
        # Times a pass must happen at (retries of this node's jobs), soonest first.
        self._wakes: list[float] = []
        self.passes = 0
        self.started = 0
        self.finished: Counter[str] = Counter()

    def now(self) -> float:
        return float(self.reactor.seconds())

    # -- service ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._renewer = LoopingCall(self._renew)
        self._renewer.clock = self.reactor
        self._renewer.start(max(self.lease / 3, 0.01), now=False).addErrback(
            lambda f: log.failure("lease renewal stopped", f)
        )
        self.kick()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

        async def stop() -> None:
            if self._pass is not None:
                await self._pass
            queued, self.queue = self.queue, []
            for job in queued:
                self.in_use[job.resource] -= 1
            if queued:
                try:
                    await self.jobs.release(self.node, [j.id for j in queued])
                except FepError as e:
                    log.warn("could not give back {n} leased jobs: {error}", n=len(queued),
                             error=e)
            # Jobs under way finish (their records are worth keeping) and are recorded.
            await DeferredList(list(self.active.values()))
            # ... their ends committed (the job store records them in batches).
            await self.jobs.settle()
            if self._renewer is not None and self._renewer.running:
                self._renewer.stop()

        return Deferred.fromCoroutine(stop())

    # -- passes -------------------------------------------------------------------------

    def kick(self, delay: float = 0.0) -> None:
        """Run a pass soon (at most ``delay`` seconds from now)."""
        if not self.running:
            return
        if self._pass is not None:
            self._again = True
            return
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= self.now() + delay:
                return
            self._timer.cancel()
        self._timer = self.reactor.callLater(delay, self._start_pass)

    def _start_pass(self) -> None:
        self._timer = None
        if self._pass is not None or not self.running:
            return
        self._pass = Deferred.fromCoroutine(self._one_pass())
        self._pass.addErrback(lambda f: log.failure("scheduler pass failed", f))
        self._pass.addBoth(self._pass_done)

    def _pass_done(self, result: object) -> None:
        self._pass = None
        if not self.running:
            return
        if self._again:
            self._again = False
            self.kick()
        else:
            self.kick(self._next_delay)

    _next_delay: float = 1.0

    async def _one_pass(self) -> None:
        self.passes += 1
        now = self.now()
        next_due: float | None = None
        try:
            for job in await self.jobs.expire(now):
                self.finished[JobStatus.MISSED] += 1
                log.warn(
                    "job {job} ({kind}) for {meter} missed: {error}",
                    job=job.id, kind=str(job.kind), meter=job.meter, route=job.route,
                    error=job.error,
                )
                await self._ended(job, JobStatus.MISSED, Outcome(False, error=job.error))
            next_due = await self._expand_due(now)
            await self._lease(now)
        except FepError as e:
            log.warn("scheduler pass: {error}", error=e)
        self._dispatch()
        now = self.now()
        while self._wakes and self._wakes[0] <= now:
            heapq.heappop(self._wakes)
        delay = self.poll
        for at in (next_due, self._wakes[0] if self._wakes else None):
            if at is not None:
                delay = min(delay, max(0.0, at - now))
        self._next_delay = delay

    async def _meters(self, now: float, *, force: bool = False) -> list[Meter]:
        if force or self._refreshed_at is None or now - self._refreshed_at >= self.refresh:
            try:
                await self.directory.refresh()
                self._refreshed_at = now
            except FepError as e:
                log.warn("cannot refresh the meter list: {error}", error=e)
        return self.directory.all()

    async def _expand_due(self, now: float) -> float | None:
        """Expand every due run this node wins; fires with the earliest future run."""
        earliest: float | None = None
        for task in await self.jobs.tasks():
            if not task.enabled or task.next_due is None:
                continue
            due = task.next_due
            if due > now:
                earliest = due if earliest is None else min(earliest, due)
                continue
            latest, skipped, following = latest_run(task, due, now)
            if task.ends_at is not None and latest > task.ends_at:
                await self.jobs.claim_run(task.name, due, None, now)
                log.info("task {task} ended", task=task.name)
                continue
            if task.ends_at is not None and following > task.ends_at:
                following_due: float | None = None
            else:
                following_due = following
            if not await self.jobs.claim_run(task.name, due, following_due, now):
                continue  # another node has this run
            if following_due is not None:
                earliest = following if earliest is None else min(earliest, following)
            if skipped:
                log.warn(
                    "task {task}: {skipped} runs before the one due at {due} were not made "
                    "(no node was running)", task=task.name, skipped=skipped, due=latest,
                )
            meters = await self._meters(now)
            new = expand(task, meters, latest, self.resources)
            added = await self.jobs.add_jobs(new, now)
            log.info(
                "task {task}: run due at {due} expanded into {count} jobs",
                task=task.name, due=latest, count=added,
            )
        return earliest

    async def _lease(self, now: float) -> None:
        room = self.concurrency - len(self.active) - len(self.queue)
        if room <= 0:
            return
        leased = await self.jobs.lease(
            self.node,
            now,
            now + self.lease,
            room,
            dict(self.in_use),
            self.resources.capacities(),
        )
        for job in leased:
            self.in_use[job.resource] += 1
        self.queue.extend(leased)

    def _dispatch(self) -> None:
        if not self.running:
            return
        self.queue.sort(key=lambda j: (j.priority, j.run_at, j.id))
        waiting: list[Job] = []
        for job in self.queue:
            if len(self.active) >= self.concurrency:
                waiting.append(job)
                continue
            meter = self.directory.get(job.meter)
            if meter is not None and not self.permits.available(meter):
                waiting.append(job)
                continue
            keys = self.permits.take(meter) if meter is not None else []
            d = Deferred.fromCoroutine(self._execute(job, meter, keys))
            self.active[job.id] = d
            self.started += 1
            d.addBoth(self._executed, job)
        self.queue = waiting

    def _executed(self, result: object, job: Job) -> None:
        self.active.pop(job.id, None)
        self.in_use[job.resource] -= 1
        if self.in_use[job.resource] <= 0:
            del self.in_use[job.resource]
        if result is not None:
            log.failure("job {job} for {meter} crashed", result, job=job.id,  # type: ignore[arg-type]
                        meter=job.meter)
        self.kick()

    def _renew(self) -> Deferred[Any] | None:
        ids = [j.id for j in self.queue] + list(self.active)
        if not ids:
            return None
        d = self.jobs.renew(self.node, ids, self.now() + self.lease)
        d.addErrback(lambda f: log.warn("lease renewal failed: {error}", error=f.value))
        return d

    # -- one job ------------------------------------------------------------------------

    async def _execute(self, leased: Job, meter: Meter | None, permits: list[str]) -> None:
        try:
            now = self.now()
            job = await self.jobs.start(leased.id, self.node, now, now + self.lease)
            if job is None:
                log.info("job {job}: lease lost before it started", job=leased.id)
                return
            if meter is None:
                await self._meters(now, force=True)  # a meter added since: look again
                meter = self.directory.get(job.meter)
            if meter is None:
                outcome = Outcome(False, error=f"meter {job.meter} is not in the meter list",
                                  retry=False)
            else:
                outcome = await self.attempt(job, addressed(meter))
            await self._record(job, outcome)
        finally:
            self.permits.give(permits)

    async def attempt(self, job: Job, meter: Meter) -> Outcome:
        """One attempt of ``job`` for ``meter``: its modem woken up first when it has a
        ``gprs:`` route and is not connected, then the runner; any failure an Outcome.
        (A read-now runs its job through here in place when no scheduler runs.)"""
        try:
            if (
                self.wakeup is not None
                and job.params.get("wake_up", True)
                and meter.route.startswith("gprs:")
                and not self.wakeup.is_connected(meter.route)
            ):
                log.info("{meter}: modem not connected; waking it up", meter=meter.id,
                         route=meter.route)
                await self.wakeup.wake_up(meter, self.wakeup_timeout)
            outcome: Outcome = await self.run_job(job, meter)
            return outcome
        except FepError as e:
            return Outcome(False, error=str(e))
        except Exception as e:
            log.failure("job {job} for {meter} failed unexpectedly", job=job.id,
                        meter=meter.id)
            return Outcome(False, error=f"internal error: {e!r}")

    async def _record(self, job: Job, outcome: Outcome) -> None:
        now = self.now()
        run_at: float | None = None
        if outcome.ok:
            status = JobStatus.DONE
        elif outcome.retry and job.attempts < job.max_attempts:
            run_at = job.retry_at(now)
            if job.deadline is not None and run_at > job.deadline:
                status = JobStatus.FAILED
                outcome = Outcome(
                    False, result=outcome.result, error=f"{outcome.error} (no time left to "
                    "retry before the deadline)", bytes_in=outcome.bytes_in,
                    bytes_out=outcome.bytes_out, records=outcome.records, retry=False,
                    details=outcome.details,
                )
                run_at = None
            else:
                status = JobStatus.PENDING
                heapq.heappush(self._wakes, run_at)
        else:
            status = JobStatus.FAILED
        fields = {"job": job.id, "meter": job.meter, "route": job.route, "kind": str(job.kind),
                  "attempt": job.attempts}
        if status == JobStatus.DONE:
            log.info("job {job} ({kind}) for {meter} done: {result}", result=outcome.result,
                     **fields)
        elif status == JobStatus.PENDING:
            log.info("job {job} ({kind}) for {meter} attempt {attempt} failed: {error}; "
                     "retry at {run_at}", error=outcome.error, run_at=run_at, **fields)
        else:
            log.warn("job {job} ({kind}) for {meter} failed: {error}", error=outcome.error,
                     **fields)
        try:
            recorded = await self.jobs.finish(job, self.node, str(status), outcome, now, run_at)
        except FepError as e:
            log.warn("job {job}: outcome not recorded: {error}", job=job.id, error=e)
            return
        if not recorded:
            log.warn("job {job}: lease lost while it ran; another node has it", job=job.id)
            return
        if status.final:
            self.finished[status] += 1
            await self._ended(job, status, outcome)

    async def _ended(self, job: Job, status: JobStatus, outcome: Outcome) -> None:
        if job.params.get(CHILDREN):
            children = children_jobs(job, status, outcome, self.directory.get,
                                     self.resources, self.now())  # fmt: skip
            try:
                await self.jobs.add_jobs(children, self.now())
            except FepError as e:
                log.warn("concentrator {meter}: outcomes of the meters behind it not "
                         "recorded: {error}", meter=job.meter, route=job.route, error=e)
            else:
                self.finished.update(j.status for j in children if j.status.final)
            self.kick()
        owned = job.params.get(OWNED)
        if owned:
            meters = [m for m in (self.directory.get(i) for i in owned) if m is not None]
            jobs = owned_jobs(job, status, meters, self.resources, self.now())
            try:
                await self.jobs.add_jobs(jobs, self.now())
            except FepError as e:
                log.warn("concentrator {meter}: jobs of the meters behind it not made: "
                         "{error}", meter=job.meter, error=e)
            if status != JobStatus.DONE:
                log.warn("concentrator {meter} {status}: {count} meters behind it not read "
                         "this run", meter=job.meter, route=job.route, status=str(status),
                         count=len(jobs))
            self.kick()
        if self.job_ended is None:
            return
        try:
            await self.job_ended(job, status, outcome)
        except Exception:
            log.failure("after job {job}", job=job.id)

    # -- on demand ----------------------------------------------------------------------

    async def run_now(
        self, task_name: str, meters: Sequence[str] | None = None, priority: int | None = None
    ) -> int:
        """A run of a task now (outside its schedule), for all its meters or the ones named;
        fires with how many jobs were made."""
        task = await self.jobs.task(task_name)
        if task is None:
            raise FepError(f"no task {task_name!r}")
        now = self.now()
        candidates = await self._meters(now, force=True)
        everyone = list(candidates)
        if meters is not None:
            wanted = set(meters)
            candidates = [m for m in candidates if m.id in wanted]
        new = expand(task, candidates, now, self.resources,
                     priority=Priority.ON_DEMAND if priority is None else priority,
                     known=everyone)
        added = await self.jobs.add_jobs(new, now)
        self.kick()
        return added

    async def meter_registered(self, meter: Meter) -> int:
        """A meter that just registered gets its default tasks: every enabled task with
        option ``on_register`` whose target includes it runs for it now."""
        now = self.now()
        self.directory.replace([*[m for m in self.directory.all() if m.id != meter.id], meter])
        new = [
            job_for(task, meter, now, self.resources, priority=Priority.ON_DEMAND)
            for task in await self.jobs.tasks()
            if task.enabled
            and str(task.option("on_register", "no")).lower() in ("yes", "true", "1")
            and task.target.matches(meter)
        ]
        added = await self.jobs.add_jobs(new, now)
        if added:
            log.info("meter {meter} registered: {count} default task jobs", meter=meter.id,
                     count=added)
        self.kick()
        return added
