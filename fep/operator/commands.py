"""Operator commands shared by the console and the API, with one set of approval rules.

Commands that only look (meters, readings, stats) need a ``viewer``; commands that talk to
meters or start work (``read``, ``run``, meter ``command``s and their ``approve``/``reject``)
need an ``operator``. Meter commands then follow the collection engine's own approval rules
(which commands need a second person's approval; never the requester's own): the console
and the API pass who is asking (``console:NAME``, ``api:TOKEN-NAME``) and the engine decides.
The console's users are operators (an authorized key is a full login); API tokens carry
their role.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.logger import Logger

from fep.errors import FepError
from fep.model import Record
from fep.operator import readoptions
from fep.operator.context import OperatorContext

log = Logger(namespace="fep.operator.commands")

ROLES = ("viewer", "operator", "admin")
# command -> least role allowed to run it
APPROVAL: dict[str, str] = {"read": "operator", "run": "operator", "command": "operator",
                             "approve": "operator", "reject": "operator"}
# Control plans: looking needs a viewer, every step an operator (fep.collect.plans; the
# approver must be another operator than the submitter, whatever the door).
PLAN_STEPS = ("submit", "approve", "reject", "start", "pause", "cancel")
APPROVAL.update({"plan_create": "operator", **{f"plan_{s}": "operator" for s in PLAN_STEPS}})
# A concentrator's meter archive written from the meter list (fep.collect.archive_sync).
APPROVAL["concentrator_sync"] = "operator"
# Edits of interval values (fep.operator.edit_commands): asking, approving, rejecting.
APPROVAL.update({"edit": "operator", "edit_approve": "operator", "edit_reject": "operator"})


class CommandRefused(FepError):
    """The caller may not run this command, or it cannot run here."""

    def __init__(self, message: str, *, status: int = 403) -> None:
        self.status = status
        super().__init__(message)


def allowed(command: str, role: str) -> bool:
    needed = APPROVAL.get(command, "viewer")
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def check(command: str, role: str, who: str) -> None:
    if not allowed(command, role):
        log.warn("{who} ({role}) refused command {command}", who=who, role=role,
                 command=command)
        raise CommandRefused(f"{command} needs the {APPROVAL[command]} role; {who} is a "
                             f"{role}")


async def read_meter(
    ctx: OperatorContext, meter_id: str, *, who: str, role: str,
    options: Mapping[str, object] | None = None,
) -> list[Record]:
    """Read a known meter now through the collection engine (``ctx.reader``, an
    IMeterReader): an on-demand job under the scheduler's limits, through the daemon's
    channels (line locks, modem pool, GPRS sessions, wake-up); its records go to the router
    like a poll's. ``options`` are extra protocol settings for this read (meter metadata
    keys), only those fep.operator.readoptions allows for the meter's protocol (refused with
    status 400)."""
    check("read", role, who)
    if ctx.reader is None:
        raise CommandRefused("no collection engine is wired in to read meters", status=503)
    meter = ctx.directory.get(meter_id)
    if meter is None:
        meter = await ctx.store.meter(meter_id)
    if meter is None:
        raise CommandRefused(f"no meter {meter_id!r}", status=404)
    allowed: Mapping[str, object] = {}
    if options:
        try:
            allowed = readoptions.checked(meter.protocol, options)
        except readoptions.ReadOptionRefused as e:
            log.warn("{who} refused read of meter {meter}: {error}", who=who, meter=meter.id,
                     error=str(e))
            raise CommandRefused(f"meter {meter.id}: {e}", status=400) from None
    records: list[Record] = await ctx.reader.read_now(meter, who=who, options=allowed)
    return records


async def control_read(ctx: OperatorContext, request: Mapping[str, Any]) -> dict[str, Any]:
    """The control socket's ``read`` (``fep read --meter ID`` while the daemon runs):
    ``{"command": "read", "meter": ID, "options": {...}, "who": NAME}`` reads the meter
    through ``read_meter`` like the API and the console, and answers ``{"meter": ID,
    "records": [...]}`` in fep.serialize's list form. Whoever can open the socket (mode
    0600, the daemon's own user) acts as an operator, named ``cli:NAME``."""
    from fep.serialize import record_to_list

    meter = request.get("meter")
    if not isinstance(meter, str) or not meter:
        raise CommandRefused("read: give the meter's id (\"meter\")", status=400)
    options = request.get("options") or {}
    if not isinstance(options, dict):
        raise CommandRefused("read: options is an object of protocol settings", status=400)
    name = str(request.get("who") or "control")
    records = await read_meter(ctx, meter, who=f"cli:{name}", role="operator",
                               options={str(k): v for k, v in options.items()})
    return {"meter": meter, "records": [record_to_list(r) for r in records]}


async def run_task(ctx: OperatorContext, task: str, *, who: str, role: str) -> dict[str, Any]:
    check("run", role, who)
    if ctx.scheduler is None:
        raise CommandRefused("no task scheduler is wired into this daemon", status=503)
    log.info("{who} runs task {task}", who=who, task=task)
    try:
        result: dict[str, Any] = await ctx.scheduler.run(task)
    except KeyError:
        raise CommandRefused(f"no task {task!r}", status=404) from None
    return result


def _scheduler(ctx: OperatorContext) -> Any:
    if ctx.scheduler is None:
        raise CommandRefused("no task scheduler is wired into this daemon", status=503)
    return ctx.scheduler


async def request_command(ctx: OperatorContext, meter: str, action: str,
                          params: dict[str, Any], *, who: str, role: str) -> dict[str, Any]:
    """A meter command (disconnect, reconnect, ...) through the collection engine, under its
    approval rules: the command may wait for someone else's approval."""
    check("command", role, who)
    scheduler = _scheduler(ctx)
    log.info("{who} asks for command {action} on meter {meter}", who=who, action=action,
             meter=meter)
    result: dict[str, Any] = await scheduler.request_command(meter, action, params, who)
    return result


async def approve_command(ctx: OperatorContext, command_id: int, *, who: str,
                          role: str) -> dict[str, Any]:
    check("approve", role, who)
    scheduler = _scheduler(ctx)
    log.info("{who} approves command {id}", who=who, id=command_id)
    result: dict[str, Any] = await scheduler.approve_command(command_id, who)
    return result


async def reject_command(ctx: OperatorContext, command_id: int, reason: str, *, who: str,
                         role: str) -> dict[str, Any]:
    check("reject", role, who)
    scheduler = _scheduler(ctx)
    log.info("{who} rejects command {id}: {reason}", who=who, id=command_id, reason=reason)
    result: dict[str, Any] = await scheduler.reject_command(command_id, who, reason)
    return result


# -- control plans --------------------------------------------------------------------------


def _plans(ctx: OperatorContext) -> Any:
    if ctx.plans is None:
        raise CommandRefused("no control plans in this daemon", status=503)
    return ctx.plans


async def list_plans(ctx: OperatorContext, *, who: str, role: str, limit: int = 100,
                     status: str | None = None) -> list[dict[str, Any]]:
    check("plans", role, who)
    found: list[dict[str, Any]] = await _plans(ctx).plans(limit, status)
    return found


async def show_plan(ctx: OperatorContext, plan_id: int, *, who: str, role: str
                    ) -> dict[str, Any]:
    check("plan", role, who)
    try:
        found: dict[str, Any] = await _plans(ctx).plan(plan_id)
    except KeyError:
        raise CommandRefused(f"no plan {plan_id}", status=404) from None
    return found


async def create_plan(ctx: OperatorContext, spec: dict[str, Any], *, who: str, role: str
                      ) -> dict[str, Any]:
    """A draft plan: a command over a group of meters, at a rate (fep.collect.plans)."""
    check("plan_create", role, who)
    log.info("{who} makes a plan: {action} on {target}", who=who, action=spec.get("action"),
             target=spec.get("target") or f"{len(spec.get('meters') or [])} meters")
    made: dict[str, Any] = await _plans(ctx).create(spec, who)
    return made


async def plan_step(ctx: OperatorContext, plan_id: int, step: str, *, who: str, role: str,
                    reason: str = "") -> dict[str, Any]:
    """submit, approve, reject, start, pause or cancel a plan, as ``who``."""
    if step not in PLAN_STEPS:
        raise CommandRefused(f"no plan step {step!r} (known: {', '.join(PLAN_STEPS)})",
                             status=404)
    check(f"plan_{step}", role, who)
    log.info("{who}: plan {id} {step}", who=who, id=plan_id, step=step, reason=reason)
    try:
        done: dict[str, Any] = await _plans(ctx).step(plan_id, step, who, reason)
    except KeyError:
        raise CommandRefused(f"no plan {plan_id}", status=404) from None
    return done


async def sync_concentrator(ctx: OperatorContext, concentrator_id: str, *, who: str, role: str,
                            repair: bool = True) -> dict[str, Any]:  # fmt: skip
    """Put a concentrator's meter archive in step with the meter list (or, ``repair`` off,
    report how it differs) through the daemon's channels; the report as JSON."""
    check("concentrator_sync", role, who)
    if ctx.concentrator_sync is None:
        raise CommandRefused("no concentrator synchronisation is wired in", status=503)
    meter = ctx.directory.get(concentrator_id)
    if meter is None or meter.protocol != "gw3761":
        raise CommandRefused(f"no concentrator {concentrator_id!r} (a gw3761 meter)",
                             status=404)  # fmt: skip
    report: dict[str, Any] = await ctx.concentrator_sync(concentrator_id, repair, who)
    return report
