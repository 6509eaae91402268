"""The collection engine of one node, put together from the ``[collect]`` settings: the job
store on the record store's database, the job runner, the scheduler, and the built-in
``default`` task that keeps the old behaviour (every meter's registers each period)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from fep.collect.dlt698_route import line_through_terminal
from fep.collect.jobstore import BOOKKEEPING_INTERVAL, JobStore, job_store
from fep.collect.limits import Permits, ResourcePolicy, resource_of
from fep.collect.readnow import ReadNow
from fep.collect.runner import JobRunner
from fep.collect.schedule import format_duration
from fep.collect.scheduler import Scheduler
from fep.collect.settings import CollectSection
from fep.collect.tasks import DEFAULT_TASK, Priority, Target, Task
from fep.directory import MeterDirectory
from fep.errors import FepError
from fep.interfaces import IMeterProtocol, IRecordSink, IStore, IWakeUp
from fep.model import Meter
from fep.protocols.registry import meter_protocol
from fep.reactors import IConnectingReactor

log = Logger()


def resource_policy(
    settings: CollectSection, pools: Mapping[str, int] | None = None,
    line_of: Callable[[str], str] | None = None,
) -> ResourcePolicy:
    """Resources from ``[collect] shared_lines``, on top of ``pools`` the node's channels
    bring (the dial-up modem pool's number of lines); ``line_of`` the channels' resource of
    a route (a forwarding route's is its concentrator's line)."""
    policy = ResourcePolicy(pools={**(pools or {}), **settings.shared_lines})
    return policy if line_of is None else attrs.evolve(policy, line_of=line_of)


def _safe(line_of: Callable[[str], str]) -> Callable[[str], str]:
    """``line_of``, falling back to the route's own resource when it fails (a route that
    does not parse, a concentrator not known yet)."""

    def key(route: str) -> str:
        try:
            return line_of(route)
        except FepError:
            return resource_of(route)

    return key


def through_terminals(policy: ResourcePolicy,
                      meter_of: Callable[[str], Meter | None]) -> ResourcePolicy:  # fmt: skip
    """``policy`` with a meter behind a DL/T 698.45 terminal (``dlt698:ID``) on the
    terminal's resource (fep.collect.dlt698_route); ``meter_of``: the meter list by id."""
    return attrs.evolve(policy, line_of=line_through_terminal(meter_of, policy.key))


def approval_of(settings: CollectSection) -> frozenset[str]:
    return settings.approval


def default_task(period: float, now: float) -> Task:
    """The built-in task: every meter's registers every ``period`` seconds (no retries: the
    next period reads again). Its first run is now, the next ones on the period's
    boundaries."""
    task = Task(
        name=DEFAULT_TASK,
        kind="registers",
        schedule=f"every {format_duration(period)}",
        target=Target(),
        priority=Priority.SCHEDULED,
        retries=0,
    )
    return attrs.evolve(task, next_due=now)


class CollectionEngine:
    """The engine's parts: ``jobs`` (the job store), ``runner``, ``scheduler`` (the
    service to start and stop), ``reader`` (the doors' read-now, fep.collect.readnow)."""

    def __init__(
        self,
        reactor: IConnectingReactor,
        store: IStore,
        sink: IRecordSink,
        directory: MeterDirectory,
        settings: CollectSection,
        *,
        node: str,
        endpoint_for: Callable[[IConnectingReactor, str], IStreamClientEndpoint],
        wakeup: IWakeUp | None = None,
        protocol_for: Callable[[str], IMeterProtocol] = meter_protocol,
        pools: Mapping[str, int] | None = None,
        firmware_dir: Path | None = None,
        terminals: Any = None,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        # firmware-upgrade images: the daemon's Config.firmware_directory, else the setting
        self.firmware_dir = firmware_dir or (
            Path(settings.firmware_dir) if settings.firmware_dir else None)
        # Job starts and ends recorded in batches, the engine not waiting for them.
        self.jobs: JobStore = job_store(store, reactor=reactor, interval=BOOKKEEPING_INTERVAL,
                                        write_behind=True)
        # The channel layer's resource of a route when it knows one (Channels.resource_of:
        # a route through a concentrator occupies the concentrator's line).
        channel_line = getattr(endpoint_for, "resource_of", None)
        line_of = None if channel_line is None else _safe(channel_line)
        self.runner = JobRunner(
            reactor,
            sink,
            store,
            self.jobs,
            endpoint_for=endpoint_for,
            timeout=settings.timeout,
            node=node,
            protocol_for=protocol_for,
            firmware_dir=self.firmware_dir,
            resolve=directory.resolve if directory.secrets is not None else None,
            secrets=directory.secrets,
            terminals=terminals,
            meter_of=directory.get,
        )
        self.scheduler = Scheduler(
            reactor,
            self.jobs,
            directory,
            self.runner.run,
            node=node,
            concurrency=settings.concurrency,
            lease=settings.lease,
            poll=settings.poll,
            resources=through_terminals(resource_policy(settings, pools, line_of), directory.get),
            permits=Permits({"cell": settings.cell_permits, "apn": settings.apn_permits}),
            wakeup=wakeup,
            wakeup_timeout=settings.wakeup_timeout,
            job_ended=self.runner.job_ended,
        )

        # The doors' read-now (API, console, `fep read --meter`): a job of this engine.
        self.reader = ReadNow(reactor, self.jobs, self.scheduler, self.runner.reads_now,
                              node=node)

    @property
    def observers(self) -> list[Any]:
        """Told of every job's meter session as it starts and ends (the operator tier's
        Activity): ``read_started(meter)``, ``read_finished(meter, error, records)``."""
        return self.runner.observers

    @property
    def listeners(self) -> list[Any]:
        """Told what load-profile and events jobs collected and of every job's end
        (ICollectionListener: the analysis service)."""
        return self.runner.listeners

    async def prepare(self) -> None:
        """Keep the ``default`` task as ``[collect]`` says (made, re-timed or disabled)."""
        now = float(self.reactor.seconds())
        current = await self.jobs.task(DEFAULT_TASK)
        wanted = default_task(self.settings.period, now)
        if not self.settings.default_task:
            if current is not None and current.enabled:
                await self.jobs.set_task_enabled(DEFAULT_TASK, False, now)
                log.info("task {task} disabled ([collect] default_task = no)",
                         task=DEFAULT_TASK)
            return
        if current is None or current.schedule != wanted.schedule or not current.enabled:
            await self.jobs.save_task(wanted, now)
            log.info("task {task}: {schedule}", task=DEFAULT_TASK, schedule=wanted.schedule)
