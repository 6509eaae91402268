"""Operator commands shared by the console and the API, with one set of approval rules.

Commands that only look (meters, readings, stats) need a ``viewer``; commands that talk to
meters or start work (``read``, ``run``) need an ``operator``. The console's users are
operators (an authorized key is a full login); API tokens carry their role.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger

from fep.errors import FepError
from fep.model import Meter, Record
from fep.operator.context import OperatorContext

log = Logger(namespace="fep.operator.commands")

ROLES = ("viewer", "operator")
# command -> least role allowed to run it
APPROVAL: dict[str, str] = {"read": "operator", "run": "operator"}


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
        raise CommandRefused(f"{command} needs the {APPROVAL[command]} role; {who} is a {role}")


async def read_meter(
    ctx: OperatorContext, meter_id: str, *, who: str, role: str,
    options: dict[str, str] | None = None,
) -> list[Record]:
    """Read a known meter now over its route; its records go to the router like a poll's.
    ``options`` are extra protocol settings for this read (meter metadata keys)."""
    check("read", role, who)
    from fep.channels.endpoints import client_endpoint
    from fep.protocols.registry import meter_protocol

    meter = ctx.directory.get(meter_id)
    if meter is None:
        meter = await ctx.store.meter(meter_id)
    if meter is None:
        raise CommandRefused(f"no meter {meter_id!r}", status=404)
    if options:
        meter = Meter(meter.id, meter.protocol, meter.route, meter.serial, meter.address,
                      meter.credentials, {**meter.metadata, **options})
    log.info("{who} reads meter {meter} over {route}", who=who, meter=meter.id,
             route=meter.route, protocol=meter.protocol)
    ctx.activity.read_started(meter)
    try:
        protocol = meter_protocol(meter.protocol)
        endpoint = client_endpoint(ctx.reactor, meter.route)
        records: Sequence[Record] = await protocol.read(
            ctx.reactor, endpoint, meter, ctx.read_timeout)
        await ctx.router.submit(list(records))
    except Exception as e:
        ctx.activity.read_finished(meter, e)
        raise
    ctx.activity.read_finished(meter, None, len(records))
    return list(records)


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
