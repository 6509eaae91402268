"""The collection engine as the operator tier sees it: the ``scheduler`` plug point
(fep.interfaces.IScheduler) of the API, the console and the metrics -- tasks, the
newest jobs, a task run now, job outcomes, and meter commands under the engine's approval
rules (``[collect] approval``, four eyes)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from fep.collect import commands as cmd
from fep.collect.engine import CollectionEngine, approval_of
from fep.collect.schedule import Every
from fep.collect.tasks import Command, Job, Task
from fep.errors import ConfigError, FepError
from fep.interfaces import IScheduler
from fep.model import Meter


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat()


def _plain(value: Any) -> Any:
    """A JSON-able copy (the engine's mappings are frozen)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def task_dict(task: Task, last: Any = None) -> dict[str, Any]:
    """A task with its last run's outcome (fep.collect.stats.RunStats), if it ran."""
    try:
        schedule = task.parsed_schedule()
        period = schedule.period if isinstance(schedule, Every) else None
    except FepError:
        period = None
    out: dict[str, Any] = {
        "name": task.name,
        "type": str(task.kind),
        "schedule": task.schedule,
        "period_s": period,
        "target": str(task.target),
        "items": list(task.items),
        "priority": task.priority.label,
        "retries": task.retries,
        "enabled": task.enabled,
        "next_run": _iso(task.next_due),
        "last_run": None,
    }
    if last is not None:
        out["last_run"] = {
            "due": _iso(last.due), "jobs": last.jobs, "ok": last.ok, "failed": last.failed,
            "missed": last.missed, "open": last.open,
        }
    return out


def job_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "task": job.task,
        "meter": job.meter,
        "kind": str(job.kind),
        "route": job.route,
        "state": str(job.status),
        "outcome": job.result if job.error is None else job.error,
        "attempts": job.attempts,
        "node": job.node,
        "due": _iso(job.due),
        "started": _iso(job.started_at),
        "finished": _iso(job.finished_at),
        "bytes_in": job.bytes_in,
        "bytes_out": job.bytes_out,
        "records": job.records,
        "command": job.command,
    }


def command_dict(command: Command) -> dict[str, Any]:
    return {
        "id": command.id,
        "meter": command.meter,
        "action": command.action,
        "params": _plain(command.params),
        "status": str(command.status),
        "approval_required": command.approval_required,
        "requested_by": command.requested_by,
        "requested_at": _iso(command.requested_at),
        "approved_by": command.approved_by,
        "approved_at": _iso(command.approved_at),
        "job": command.job,
        "outcome": command.outcome,
        "progress": _plain(command.progress),
        "finished_at": _iso(command.finished_at),
    }


@implementer(IScheduler)
class EngineScheduler:
    """IScheduler on a node's CollectionEngine; the meter list is the engine's directory
    (looked up again for a meter it does not know yet)."""

    def __init__(self, engine: CollectionEngine, store: Any) -> None:
        self.engine = engine
        self.store = store
        self.scheduler = engine.scheduler
        self.jobs_store = engine.jobs
        self.approval = approval_of(engine.settings)

    def _now(self) -> float:
        return float(self.engine.reactor.seconds())

    async def _meter(self, meter_id: str) -> Meter:
        meter: Meter | None = self.scheduler.directory.get(meter_id)
        if meter is None:
            meter = await self.store.meter(meter_id)
        if meter is None:
            raise ConfigError(f"no meter {meter_id!r}", key="meter")
        return meter

    # -- tasks and jobs -------------------------------------------------------------------

    def tasks(self) -> Deferred[list[dict[str, Any]]]:
        async def run() -> list[dict[str, Any]]:
            out = []
            for task in await self.jobs_store.tasks():
                runs = await self.jobs_store.run_stats(task.name, 1)
                out.append(task_dict(task, runs[0] if runs else None))
            return out

        return Deferred.fromCoroutine(run())

    def jobs(self, limit: int) -> Deferred[list[dict[str, Any]]]:
        async def run() -> list[dict[str, Any]]:
            return [job_dict(j) for j in await self.jobs_store.jobs(limit=limit)]

        return Deferred.fromCoroutine(run())

    def run(self, task: str) -> Deferred[dict[str, Any]]:
        async def run() -> dict[str, Any]:
            if await self.jobs_store.task(task) is None:
                raise KeyError(task)
            queued = await self.scheduler.run_now(task)
            return {"task": task, "queued": queued}

        return Deferred.fromCoroutine(run())

    def job_outcomes(self) -> dict[str, int]:
        return {str(status): n for status, n in self.scheduler.finished.items()}

    # -- commands -------------------------------------------------------------------------

    def commands(self, limit: int) -> Deferred[list[dict[str, Any]]]:
        async def run() -> list[dict[str, Any]]:
            return [command_dict(c) for c in await self.jobs_store.commands(limit=limit)]

        return Deferred.fromCoroutine(run())

    def request_command(
        self, meter: str, action: str, params: dict[str, Any], who: str
    ) -> Deferred[dict[str, Any]]:
        async def run() -> dict[str, Any]:
            found = await self._meter(meter)
            command = await cmd.request(
                self.jobs_store, found, action, params, who, self._now(),
                approval=self.approval, policy=self.scheduler.resources,
                firmware_dir=self.engine.firmware_dir,
            )
            self.scheduler.kick()
            return command_dict(command)

        return Deferred.fromCoroutine(run())

    def approve_command(self, command_id: int, who: str) -> Deferred[dict[str, Any]]:
        async def run() -> dict[str, Any]:
            asked = await self.jobs_store.command(command_id)
            if asked is None:
                raise cmd.NoSuchCommand(f"no command {command_id}")
            command = await cmd.approve(
                self.jobs_store, command_id, who, self._now(), await self._meter(asked.meter),
                self.scheduler.resources,
            )
            self.scheduler.kick()
            return command_dict(command)

        return Deferred.fromCoroutine(run())

    def reject_command(self, command_id: int, who: str, reason: str) -> Deferred[dict[str, Any]]:
        async def run() -> dict[str, Any]:
            command = await cmd.reject(self.jobs_store, command_id, who, reason, self._now())
            out = command_dict(command)
            out["reason"] = reason
            return out

        return Deferred.fromCoroutine(run())
