"""Commands with an audit trail: request, approve (or reject), execute as a job, each step
written down with who did it and when.

Which commands need approval is configured (``[collect] approval``); a command that needs
none is queued at once. ``push-setup`` (it can point a meter's pushes at any host) always
needs approval, and a ``time-set`` that would move a meter's clock by more than its clock
policy's upper bound is held for approval when it runs (:func:`clock_hold`). The approver
must be another operator than the requester (four eyes), compared by operator identity
(:func:`operator_of`), whatever door each came through (console key, API token, CLI user).
Execution is an on-demand job (fep.collect.runner runs it, retrying up to ``attempts``);
the command's end (done or failed, with its outcome) is written when the job ends.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from fep.collect import firmware
from fep.collect.limits import ResourcePolicy
from fep.collect.tasks import (
    COMMANDS,
    KEY_TRANSFER,
    TERMINAL_CONFIG,
    TERMINAL_RESET,
    Command,
    CommandStatus,
    Job,
    JobKind,
    Priority,
)
from fep.errors import ConfigError
from fep.interfaces import IJobStore
from fep.model import Meter
from fep.protocols.registry import protocol_command_check, protocol_commands, protocol_variant

DEFAULT_ATTEMPTS = 3
DEFAULT_RETRY_DELAY = 30.0
# Commands that need approval whatever ``[collect] approval`` says: pointing pushes (or a
# terminal) at a host, a meter key rotation, and a concentrator's reset.
ALWAYS_APPROVED = frozenset({"push-setup", KEY_TRANSFER, TERMINAL_CONFIG, TERMINAL_RESET})
# The doors an operator comes through; ``who`` is ``DOOR:OPERATOR`` (or a bare operator).
DOORS = ("console", "api", "cli")


def operator_of(who: str) -> str:
    """The operator identity of a ``who`` (``console:alice``, ``api:alice`` and
    ``cli:alice`` are all ``alice``): what four eyes compares."""
    door, sep, name = who.strip().partition(":")
    if sep and door in DOORS:
        return name.strip()
    return who.strip()


def needs_approval(action: str, approval: Collection[str]) -> bool:
    """Whether a command waits for approval before it is queued."""
    return action in approval or action in ALWAYS_APPROVED


# A concentrator's parameters that point it at a master station (Q/GDW 1376.1 AFN 04 F3).
_STATION_PARAMETERS = frozenset({"host", "port", "host2", "port2", "apn"})


def redirects(meter: Meter, action: str, params: Mapping[str, Any]) -> bool:
    """A ``parameter-set`` that points a gw3761 concentrator at another master station: it
    always needs approval, as a terminal-config does."""
    return (action == "parameter-set" and meter.protocol == "gw3761"
            and bool(set(params) & _STATION_PARAMETERS))  # fmt: skip


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


def job_params(action: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """What a command's job carries for the scheduler: a terminal-config by SMS does not
    wait for the terminal's GPRS session (``wake_up`` False: a terminal set to a wrong
    master station never dials in; the text is what brings it back)."""
    if action == TERMINAL_CONFIG and str(params.get("via", "sms")).strip().lower() == "sms":
        return {"wake_up": False}
    return {}


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
        params=job_params(command.action, command.params),
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


class SameOperator(CommandError):
    """Four eyes: the operator who asked for a command (or made or submitted a plan) may not
    approve or reject it himself; someone else must (the API answers 403)."""


class WrongState(CommandError):
    """A command (or plan) whose status does not allow the step asked for: already approved,
    rejected, changed meanwhile (the API answers 409)."""


class NoSuchCommand(CommandError):
    """A command id that names no command (the API answers 404)."""


class CommandNotSupported(CommandError):
    """A command the meter's protocol or device does not have, refused when it is asked."""


def meter_commands(meter: Meter) -> frozenset[str]:
    """The commands ``meter`` can be sent: its protocol's (fep.protocols.registry.
    protocol_commands), narrowed by the meter's ``commands`` metadata (a comma-separated
    list) when its device has fewer (e.g. a meter without a disconnect relay)."""
    supported = protocol_commands(meter.protocol)
    variant = protocol_variant(meter)
    if variant is not None:
        supported &= variant[1]
    device = str(meter.metadata.get("commands", "") or "").strip()
    if device:
        supported &= {n.strip().lower() for n in device.split(",") if n.strip()}
    if str(meter.metadata.get("terminal", "") or "").strip():
        # A meter-list entry naming its GPRS terminal's profile (fep.collect.terminals).
        supported |= {TERMINAL_CONFIG}
    return supported


def check_supported(meter: Meter, action: str) -> None:
    """CommandNotSupported naming meter, protocol and command when ``meter`` cannot run
    ``action``; listing what it can."""
    supported = meter_commands(meter)
    if action in supported:
        return
    variant = protocol_variant(meter)
    why = ("its device does not have it (meter metadata commands)"
           if action in protocol_commands(meter.protocol) else
           f"protocol {meter.protocol} does not support it")
    if variant is not None and action in protocol_commands(meter.protocol) and (
            action not in variant[1]):
        why = f"its protocol variant {variant[0]} does not have it"
    if action == TERMINAL_CONFIG:
        why = "it names no GPRS terminal profile (meter metadata terminal)"
    raise CommandNotSupported(
        f"meter {meter.id}: command {action} refused: {why} (supported: "
        f"{', '.join(sorted(supported)) or 'none'})", key="action")


def check_params(meter: Meter, action: str, params: Mapping[str, Any]) -> None:
    """CommandError when the meter's protocol finds the command's parameters wrong for the
    meter (fep.protocols.registry.protocol_command_check: a Modbus ``parameter-set`` of a
    parameter its device map lacks), naming meter, command and parameter. A terminal-config
    is checked against the meter's terminal profile (fep.collect.terminals.check_request)."""
    if action == TERMINAL_CONFIG:
        from fep.collect.terminals import check_request

        try:
            check_request(meter, params)
        except ConfigError as e:
            raise CommandError(f"meter {meter.id}: {action}: {e}") from None
        return
    check = protocol_command_check(meter.protocol)
    if check is None:
        return
    try:
        check(meter, action, params)
    except ConfigError as e:
        raise CommandError(str(e)) from None


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
    firmware_dir: Path | None = None,
) -> Command:
    """Record a command request; queue its job at once unless it needs approval. The job
    makes up to ``attempts`` attempts, ``retry_delay`` seconds apart (a firmware upgrade
    resumes where the last attempt stopped). A firmware upgrade names an image of
    ``firmware_dir``, never a path; its SHA-256 is recorded with the command
    (fep.collect.firmware)."""
    if action not in COMMANDS:
        raise CommandError(f"unknown command {action!r} (known: {', '.join(COMMANDS)})")
    if not operator_of(who):
        raise CommandError("a command needs the name of who asks for it")
    check_supported(meter, action)
    check_params(meter, action, params)
    if action == firmware.ACTION:
        try:
            params = await firmware.requested_params(meter.id, params, firmware_dir)
        except firmware.ImageRefused as e:
            raise CommandError(str(e)) from None
    needs = needs_approval(action, approval) or redirects(meter, action, params)
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
        raise NoSuchCommand(f"no command {command_id}")
    if command.meter != meter.id:
        raise CommandError(f"command {command_id} is for meter {command.meter}, not {meter.id}")
    if command.status != CommandStatus.REQUESTED:
        raise WrongState(f"command {command_id} is {command.status}, not awaiting approval")
    if not operator_of(who):
        raise CommandError("an approval needs the name of who approves")
    if operator_of(who) == operator_of(command.requested_by):
        raise SameOperator(
            f"command {command_id} was requested by {command.requested_by}, the same operator "
            f"({operator_of(who)}) as {who}: someone else must approve it"
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
        raise WrongState(f"command {command_id} changed meanwhile; look again")
    result: Command = done
    return result


def clock_hold(command: Command, deviation: float, upper: float) -> str | None:
    """Why a ``time-set`` must wait for approval before it sets the clock, or None: a
    correction larger than the meter's clock policy upper bound (the bound above which the
    clock task only alarms) needs someone else's approval, unless it already has it."""
    if command.action != "time-set" or command.approved_by:
        return None
    if abs(deviation) <= upper:
        return None
    return (f"the clock of meter {command.meter} is {deviation:+.0f} s off, beyond the clock "
            f"policy's upper bound of {upper:g} s: setting it needs approval")


async def hold(jobs: IJobStore, command: Command, who: str, reason: str, now: float
               ) -> Command | None:
    """Put a queued or running command back to await approval (audited as 'held')."""
    held: Command | None = await jobs.transition(
        command.id, [CommandStatus.QUEUED, CommandStatus.RUNNING], CommandStatus.REQUESTED,
        who, "held", reason, now, fields={"approval_required": 1},
    )
    return held


async def reject(jobs: IJobStore, command_id: int, who: str, reason: str, now: float) -> Command:
    done = await jobs.transition(
        command_id, [CommandStatus.REQUESTED], CommandStatus.REJECTED, who, "rejected",
        reason, now, fields={"outcome": f"rejected: {reason}", "finished_at": now},
    )
    if done is None:
        if await jobs.command(command_id) is None:
            raise NoSuchCommand(f"no command {command_id}")
        raise WrongState(f"command {command_id} is not awaiting approval")
    result: Command = done
    return result
