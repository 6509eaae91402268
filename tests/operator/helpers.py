"""Shared pieces of the operator tests: a real SQLite store with spool and router behind an
OperatorContext, a fake scheduler, and a small HTTP client on twisted.web's Agent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

from fep.directory import MeterDirectory
from fep.errors import ConfigError
from fep.model import (
    EventKind,
    IntervalBlock,
    Meter,
    MeterEvent,
    ObisCode,
    Reading,
    Severity,
    Unit,
)
from fep.operator.context import OperatorContext
from fep.operator.interfaces import IScheduler
from fep.store import open_store
from fep.store.router import Router
from fep.store.spool import Spool

VIEWER_TOKEN = "viewer-token-0123456789"
OPERATOR_TOKEN = "operator-token-0123456789"
SECOND_OPERATOR_TOKEN = "second-operator-token-0123"
TOKENS = (f"# name role token\nwatch viewer {VIEWER_TOKEN}\nalice operator {OPERATOR_TOKEN}\n"
          f"bob operator {SECOND_OPERATOR_TOKEN}\n")


def write_tokens(path: Path, text: str = TOKENS) -> Path:
    """An API token file at ``path``, private to its owner as the daemon demands."""
    path.write_text(text)
    path.chmod(0o600)
    return path

DAY = datetime(2026, 3, 1, tzinfo=UTC)
WH = Unit.by_code(30)
W = Unit.by_code(27)
ENERGY = ObisCode(1, 0, 1, 8, 0, 255)
POWER = ObisCode(1, 0, 1, 7, 0, 255)


def sample_records(meter: str = "m1") -> list[Any]:
    """Five register readings an hour apart, a day of 15-minute load profile, two events."""
    readings = [
        Reading(meter, ENERGY, Decimal("1000.5") + i, WH, 3, meter_time=DAY + timedelta(hours=i),
                source="test")
        for i in range(5)
    ]
    profile = IntervalBlock(
        meter, POWER, DAY, timedelta(minutes=15),
        tuple(Decimal(100 + (i % 8) * 10) for i in range(96)), unit=W, scaler=0, source="test")
    events = [
        MeterEvent(meter, "dlms:99.98.0:1", EventKind.POWER_OUTAGE, Severity.CRITICAL,
                   DAY + timedelta(hours=2), "power down", source="test"),
        MeterEvent(meter, "dlms:99.98.0:2", EventKind.POWER_RESTORED, Severity.MAJOR,
                   DAY + timedelta(hours=3), "power up", source="test"),
    ]
    return [*readings, profile, *events]


@implementer(IScheduler)
@attrs.define
class FakeScheduler:
    """Stands in for the collection engine until it is wired in."""

    runs: list[str] = attrs.Factory(list)

    def tasks(self) -> Deferred[list[dict[str, Any]]]:
        return succeed([{"name": "daily-profile", "type": "profile", "period_s": 86400}])

    def jobs(self, limit: int) -> Deferred[list[dict[str, Any]]]:
        return succeed([{"task": "daily-profile", "meter": "m1", "state": "done",
                         "outcome": "ok"}][:limit])

    def run(self, task: str) -> Deferred[dict[str, Any]]:
        if task != "daily-profile":
            raise KeyError(task)
        self.runs.append(task)
        return succeed({"task": task, "queued": 1})

    def job_outcomes(self) -> dict[str, int]:
        return {"ok": 3, "failed": 1}

    # Meter commands with the collection engine's rules as the fake knows them:
    # disconnect needs a second person's approval, reconnect does not.
    command_list: list[dict[str, Any]] = attrs.Factory(list)

    def commands(self, limit: int) -> Deferred[list[dict[str, Any]]]:
        return succeed(list(reversed(self.command_list))[:limit])

    def request_command(self, meter: str, action: str, params: dict[str, Any],
                        who: str) -> Deferred[dict[str, Any]]:
        if action not in ("disconnect", "reconnect"):
            raise ConfigError(f"unknown command {action!r}")
        command = {"id": len(self.command_list) + 1, "meter": meter, "action": action,
                   "params": params, "requested_by": who, "approved_by": None,
                   "status": "requested" if action == "disconnect" else "queued"}
        self.command_list.append(command)
        return succeed(dict(command))

    def approve_command(self, command_id: int, who: str) -> Deferred[dict[str, Any]]:
        command = self._awaiting(command_id)
        from fep.collect.commands import SameOperator, operator_of

        if operator_of(who) == operator_of(command["requested_by"]):
            raise SameOperator(f"command {command_id} was requested by {who}: someone else "
                               "must approve it")
        command.update(status="queued", approved_by=who)
        return succeed(dict(command))

    def reject_command(self, command_id: int, who: str,
                       reason: str) -> Deferred[dict[str, Any]]:
        command = self._awaiting(command_id)
        command.update(status="rejected", rejected_by=who, reason=reason)
        return succeed(dict(command))

    def _awaiting(self, command_id: int) -> dict[str, Any]:
        from fep.collect.commands import NoSuchCommand, WrongState

        if not 0 < command_id <= len(self.command_list):
            raise NoSuchCommand(f"no command {command_id}")
        command = self.command_list[command_id - 1]
        if command["status"] != "requested":
            raise WrongState(f"command {command_id} is {command['status']}, not awaiting "
                             "approval")
        return command


async def make_context(case: unittest.TestCase, meters: list[Meter]) -> OperatorContext:
    """A context on a real SQLite store (with spool and router) holding ``meters``."""
    workdir = Path(case.mktemp()).resolve()
    workdir.mkdir(parents=True)
    store = open_store(f"sqlite:{workdir}/fep.sqlite", reactor)
    await store.open()
    case.addCleanup(store.close)
    await store.add_meters(meters)
    router = Router(Spool(workdir / "spool", reactor), store, reactor, max_delay=0.01)
    router.startService()
    case.addCleanup(router.stopService)
    directory = MeterDirectory(store)
    await directory.refresh()
    ctx = OperatorContext(store=store, router=router, directory=directory, reactor=reactor,
                          node="test-node", read_timeout=3.0)
    # The doors read through a collection engine as in the daemon (its scheduler not
    # started: each read-now runs in place, through the same runner and channels).
    from fep.channels.routes import Channels
    from fep.collect.engine import CollectionEngine
    from fep.config import parse_config

    settings = parse_config(f"[fep]\n[store]\n[collect]\ntimeout = {ctx.read_timeout}\n")
    engine = CollectionEngine(
        reactor, store, router, directory, settings.collect, node=ctx.node,
        endpoint_for=Channels(reactor),
        # Looked up at each read: a test may give the context other protocols.
        protocol_for=lambda name: ctx.protocol_for(name),
    )
    engine.observers.append(ctx.activity)
    ctx.reader = engine.reader
    return ctx


@attrs.frozen
class Response:
    status: int
    headers: Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def http(url: str, *, method: bytes = b"GET", token: str | None = None,
               body: bytes | None = None) -> Response:
    import io

    from twisted.web.client import FileBodyProducer

    headers = Headers()
    if token is not None:
        headers.addRawHeader(b"authorization", b"Bearer " + token.encode())
    producer = FileBodyProducer(io.BytesIO(body)) if body is not None else None
    agent = Agent(reactor)
    response = await agent.request(method, url.encode(), headers, producer)
    data = await readBody(response)
    return Response(response.code, response.headers, data)
