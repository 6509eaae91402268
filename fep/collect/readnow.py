"""Read-now: an operator's read of one meter (the API's ``POST meters/{id}/read``, the
console's ``read()``, ``fep read --meter`` through the daemon's control socket) as an
on-demand job of the collection engine that the door waits for.

The job goes into the job store like any other (priority on-demand, pinned to this node, one
attempt, a deadline to start by), so the scheduler leases it under the same limits as its
own jobs: one session at a time per line (a bus, a serial port, a modem), the dial-up pool's
lines, the global cap, the permits per cell and APN, a woken GPRS modem before a ``gprs:``
route. A meter whose line is busy waits its turn. The job runner reads it through the
daemon's channels, hands the records to the router once and tells the operator's activity,
as for every job; it also keeps the records (or the error) for the waiting door
(:class:`ReadsNow`). When this node runs no scheduler (``[collect] enabled = no``), the
same job runs at once in place, through the same runner and channels, whose line locks
still make it wait for a busy line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from fep.collect.limits import ResourcePolicy
from fep.collect.tasks import Job, JobKind, JobStatus, Outcome, Priority
from fep.directory import addressed
from fep.errors import ChannelError, ConfigError, FepError, FrameError, NotSupported, ProtocolError
from fep.interfaces import IJobStore, IMeterReader
from fep.model import Meter, Record

log = Logger(namespace="fep.collect.readnow")

# Job parameters of a read-now: who asked, and the per-read protocol settings (meter
# metadata keys the door allowed).
READ_NOW = "read_now"
OPTIONS = "options"
# Seconds a read-now may wait for its line (and for a slot of the engine) before it is
# recorded as missed: with the read itself, below the HTTP API's idle timeout (300 s).
DEFAULT_WAIT = 180.0
GPRS = "gprs:"
# Seconds between looks at the job store for a read-now's end recorded elsewhere (its
# deadline passed in another node's pass).
CHECK_EVERY = 5.0


def read_now_job(
    meter: Meter,
    now: float,
    policy: ResourcePolicy,
    *,
    who: str,
    node: str,
    options: Mapping[str, object] | None = None,
    wait: float = DEFAULT_WAIT,
) -> Job:
    """The on-demand job of a read-now of ``meter``, pinned to ``node`` (the door waits on
    it there)."""
    return Job(
        id=0,
        task=None,
        meter=meter.id,
        kind=JobKind.REGISTERS,
        route=meter.route,
        resource=policy.key(meter.route),
        params={READ_NOW: who, OPTIONS: dict(options or {})},
        pinned=node,
        priority=Priority.ON_DEMAND,
        due=now,
        run_at=now,
        deadline=now + wait,
        max_attempts=1,
    )


def is_read_now(job: Job) -> bool:
    return READ_NOW in job.params


def with_options(meter: Meter, job: Job) -> Meter:
    """The meter as a read-now job reads it: its metadata with the read's options."""
    options = job.params.get(OPTIONS) or {}
    if not options:
        return meter
    return attrs.evolve(meter, metadata={**meter.metadata, **options})


@attrs.define
class _Waiting:
    done: Deferred[tuple[JobStatus, Outcome]] = attrs.field(factory=Deferred)
    records: list[Record] | None = None
    error: BaseException | None = None


class ReadsNow:
    """The read-now jobs this node's doors wait for: the job runner keeps their records
    (``kept``) or error (``failed``) as it reads, and their end (``ended``, from the job's
    final status) wakes the door."""

    def __init__(self) -> None:
        self._waiting: dict[int, _Waiting] = {}

    def expect(self, job_id: int) -> _Waiting:
        waiting = self._waiting[job_id] = _Waiting()
        return waiting

    def forget(self, job_id: int) -> None:
        self._waiting.pop(job_id, None)

    def kept(self, job_id: int, records: list[Record]) -> None:
        waiting = self._waiting.get(job_id)
        if waiting is not None:
            waiting.records = list(records)

    def failed(self, job_id: int, error: BaseException) -> None:
        waiting = self._waiting.get(job_id)
        if waiting is not None:
            waiting.error = error

    def ended(self, job_id: int, status: JobStatus, outcome: Outcome) -> None:
        waiting = self._waiting.get(job_id)
        if waiting is not None and not waiting.done.called:
            waiting.done.callback((status, outcome))


def _named(meter: Meter, status: JobStatus, outcome: Outcome,
           error: BaseException | None) -> FepError:
    """The error a door gets for a read-now that did not succeed: of the family of what
    failed it, its text naming meter, route and protocol."""
    text = outcome.error or (str(error) if error is not None else str(status))
    for prefix in (f"meter {meter.id}: ", f"{meter.id}: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if status == JobStatus.MISSED:
        text = f"not read: {text}"
    message = f"meter {meter.id} (route {meter.route}, protocol {meter.protocol}): {text}"
    if isinstance(error, ProtocolError):
        return ProtocolError(message, meter=meter.id, route=meter.route,
                             protocol=meter.protocol)
    if isinstance(error, FrameError):
        return FrameError(message)
    if isinstance(error, NotSupported):
        return NotSupported(message, meter=meter.id, protocol=meter.protocol)
    if isinstance(error, ConfigError):
        return ConfigError(message)
    if isinstance(error, ChannelError) or error is None or not isinstance(error, FepError):
        # A line that never came free or a job that never started is the channel's.
        return ChannelError(message, route=meter.route)
    return FepError(message)


@implementer(IMeterReader)
class ReadNow:
    """IMeterReader of one node's collection engine: ``read_now`` makes the read-now job,
    lets the scheduler run it (or runs it in place when no scheduler runs here) and fires
    with its records."""

    def __init__(
        self,
        reactor: IReactorTime,
        jobs: IJobStore,
        scheduler: Any,
        reads: ReadsNow,
        *,
        node: str,
        wait: float = DEFAULT_WAIT,
        check_every: float = CHECK_EVERY,
    ) -> None:
        self.reactor = reactor
        self.jobs = jobs
        # fep.collect.scheduler.Scheduler: its resources, attempt(), kick() and running.
        self.scheduler = scheduler
        self.reads = reads
        self.node = node
        self.wait = wait
        self.check_every = check_every
        self._local = 0  # ids of jobs run in place (negative: never a stored job's)

    def read_now(self, meter: Meter, *, who: str,
                 options: Mapping[str, object] | None = None) -> Deferred[list[Record]]:
        return Deferred.fromCoroutine(self._read_now(meter, who, options))

    async def _read_now(self, meter: Meter, who: str,
                        options: Mapping[str, object] | None) -> list[Record]:
        now = float(self.reactor.seconds())
        job = read_now_job(meter, now, self.scheduler.resources, who=who, node=self.node,
                           options=options, wait=self.wait)
        fields = {"who": who, "meter": meter.id, "route": meter.route,
                  "protocol": meter.protocol}
        if self.scheduler.running and job.resource.startswith(GPRS):
            # (The resource: a meter read through a terminal that logs in, dlt698:ID, is on
            # its terminal's gprs: session too.)
            # A modem is connected to one node; only that node can lend its session, and
            # the records are kept for the door on the node that read them. A read asked on
            # another node is refused at once, naming the node to ask (not missed 180 s on).
            home = await self.jobs.home(job.resource)
            if home is not None and home != self.node:
                raise ChannelError(
                    f"meter {meter.id} (route {meter.route}, protocol {meter.protocol}): "
                    f"its modem is connected to node {home}, not to this node "
                    f"({self.node}): read it through node {home}", route=meter.route)
        if not self.scheduler.running:
            self._local -= 1
            job = attrs.evolve(job, id=self._local)
            log.info("{who} reads meter {meter} now over {route} (no scheduler on this "
                     "node: in place)", **fields)
            waiting = self.reads.expect(job.id)
            try:
                outcome: Outcome = await self.scheduler.attempt(job, addressed(meter))
            finally:
                self.reads.forget(job.id)
            status = JobStatus.DONE if outcome.ok else JobStatus.FAILED
        else:
            job_id = await self.jobs.add_job(job)
            waiting = self.reads.expect(job_id)
            log.info("{who} reads meter {meter} now over {route}: job {job}", job=job_id,
                     **fields)
            self.scheduler.kick()
            checker = LoopingCall(
                lambda: Deferred.fromCoroutine(self._check(job_id, waiting)))
            checker.clock = self.reactor
            checker.start(self.check_every, now=False).addErrback(
                lambda f: log.warn("read-now job {job}: not checked: {error}", job=job_id,
                                   error=f.value))
            try:
                status, outcome = await waiting.done
            finally:
                if checker.running:
                    checker.stop()
                self.reads.forget(job_id)
        if status == JobStatus.DONE:
            return list(waiting.records or [])
        raise _named(meter, status, outcome, waiting.error)

    async def _check(self, job_id: int, waiting: _Waiting) -> None:
        """The job's end as the job store has it, for an end this node did not record
        (another node's pass found its deadline passed)."""
        try:
            job = await self.jobs.job(job_id)
        except FepError as e:
            log.warn("read-now job {job}: not checked: {error}", job=job_id, error=e)
            return
        if job is None or not job.status.final or waiting.done.called:
            return
        outcome = Outcome(job.status == JobStatus.DONE, result=job.result or "",
                          error=job.error, records=job.records)
        waiting.done.callback((job.status, outcome))
