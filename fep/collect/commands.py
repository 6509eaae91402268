"""Commands with an audit trail: request, approve (or reject), execute as a job, each step
written down with who did it and when.

Which commands need approval is configured (``[collect] approval``); a command that needs
none is queued at once. The approver must be someone other than the requester (four eyes).
Execution is an on-demand job (fep.collect.runner runs it, retrying up to ``attempts``);
the command's end (done or failed, with its outcome) is written when the job ends.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from fep.collect.limits import ResourcePolicy
from fep.collect.tasks import (
    COMMANDS,
    KEY_TRANSFER,
    Command,
    CommandStatus,
    Job,
    JobKind,
    Priority,
)
from fep.errors import ConfigError
from fep.interfaces import IJobStore
from fep.model import Meter

DEFAULT_ATTEMPTS = 3
DEFAULT_RETRY_DELAY = 30.0
# Commands that need approval whatever ``[collect] approval`` says: a meter key rotation.
ALWAYS_APPROVED = frozenset({KEY_TRANSFER})


def parse_approval(text: str) -> frozenset[str]:
    """``disconnect, reconnect, firmware-upgrade`` (or ``all``, or empty: none)."""
    names = {n.strip().lower() for n in text.replace(";", ",").split(",") if n.strip()}
    if "all" in names:
        return frozenset(COMMANDS)
    unknown = names - set(COMMANDS)
    if unknown:
        raise ConfigError(
            f"unknown command(s) {', '.join(sorted(unknown))} (known: {', '.join(COMMANDS)})",
            key="approval",
        )
    return frozenset(names)


def command_job(
    command: Command,
    meter: Meter,
    now: float,
    policy: ResourcePolicy,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    deadline: float | None = None,
) -> Job:
    """The on-demand job that runs a command."""
    return Job(
        id=0,
        task=None,
        meter=meter.id,
        kind=JobKind.COMMAND,
        route=meter.route,
        resource=policy.key(meter.route),
        command=command.id,
        priority=Priority.ON_DEMAND,
        due=now,
        run_at=now,
        deadline=deadline,
        max_attempts=max(1, attempts),
        retry_delay=retry_delay,
        backoff=1.0,
    )


class CommandError(ConfigError):
    """A command request or approval refused (unknown command, wrong status, same person)."""


async def request(
    jobs: IJobStore,
    meter: Meter,
    action: str,
    params: Mapping[str, Any],
    who: str,
    now: float,
    *,
    approval: Collection[str],
    policy: ResourcePolicy,
    attempts: int = DEFAULT_ATTEMPTS,
    retry_delay: float = DEFAULT_RETRY_DELAY,
) -> Command:
    """Record a command request; queue its job at once unless it needs approval. The job
    makes up to ``attempts`` attempts, ``retry_delay`` seconds apart (a firmware upgrade
    resumes where the last attempt stopped)."""
    if action not in COMMANDS:
        raise CommandError(f"unknown command {action!r} (known: {', '.join(COMMANDS)})")
    if not who.strip():
        raise CommandError("a command needs the name of who asks for it")
    needs = action in approval or action in ALWAYS_APPROVED
    command = Command(
        id=0,
        meter=meter.id,
        action=action,
        params={**params, "attempts": attempts, "retry_delay": retry_delay},
        requested_by=who,
        requested_at=now,
        status=CommandStatus.REQUESTED if needs else CommandStatus.QUEUED,
        approval_required=needs,
    )
    job = None if needs else command_job(
        command, meter, now, policy, attempts=attempts, retry_delay=retry_delay
    )
    stored: Command = await jobs.add_command(command, job)
    return stored


async def approve(
    jobs: IJobStore, command_id: int, who: str, now: float, meter: Meter, policy: ResourcePolicy
) -> Command:
    """Approve a requested command (by someone other than its requester) and queue it."""
    command = await jobs.command(command_id)
    if command is None:
        raise CommandError(f"no command {command_id}")
    if command.meter != meter.id:
        raise CommandError(f"command {command_id} is for meter {command.meter}, not {meter.id}")
    if command.status != CommandStatus.REQUESTED:
        raise CommandError(f"command {command_id} is {command.status}, not awaiting approval")
    if who.strip() == command.requested_by:
        raise CommandError(
            f"command {command_id} was requested by {who}: someone else must approve it"
        )
    job = command_job(
        command,
        meter,
        now,
        policy,
        attempts=int(command.params.get("attempts", DEFAULT_ATTEMPTS)),
        retry_delay=float(command.params.get("retry_delay", DEFAULT_RETRY_DELAY)),
    )
    done = await jobs.transition(
        command_id, [CommandStatus.REQUESTED], CommandStatus.QUEUED, who, "approved",
        "queued for execution", now, job=job, fields={"approved_by": who, "approved_at": now},
    )
    if done is None:
        raise CommandError(f"command {command_id} changed meanwhile; look again")
    result: Command = done
    return result


async def reject(jobs: IJobStore, command_id: int, who: str, reason: str, now: float) -> Command:
    done = await jobs.transition(
        command_id, [CommandStatus.REQUESTED], CommandStatus.REJECTED, who, "rejected",
        reason, now, fields={"outcome": f"rejected: {reason}", "finished_at": now},
    )
    if done is None:
        raise CommandError(f"command {command_id} is not awaiting approval")
    result: Command = done
    return result
