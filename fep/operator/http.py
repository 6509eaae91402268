"""The operator web server (twisted.web): the JSON API under ``/api/v1``, the status page,
its static files and the Prometheus metrics, on one port (loopback by default).

Every API call and ``/metrics`` need ``Authorization: Bearer TOKEN`` (a token of the token
file); the status page itself and its static files carry no data and are open, and the page
calls the API with the token the operator gives it. docs/openapi.yaml describes the API.
The guards (body caps before and after a token, security headers, 429 after failed logins,
JSON depth) are fep/operator/webguard.py's; docs/security.md lists them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.server import Request

from fep.collect.commands import NoSuchCommand, SameOperator, WrongState
from fep.errors import ChannelError, FepError, FrameError, ProtocolError, StoreError
from fep.model import IntervalBlock, Meter, MeterEvent, ObisCode, Reading, is_secret
from fep.operator import commands
from fep.operator.context import OperatorContext
from fep.operator.metrics import FepMetrics
from fep.operator.stats import gather
from fep.operator.tokens import ApiUser, TokenFile
from fep.operator.webguard import (
    DEFAULT_LIMITS,
    MAX_JSON_DEPTH,
    AuthFailures,
    GuardedSite,
    JsonTooDeep,
    WebLimits,
    loads_bounded,
    source_of,
)

log = Logger(namespace="fep.operator.http")

API_PREFIX = b"api"
DEFAULT_LIMIT = 100
MAX_LIMIT = 5000
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


# -- JSON forms --------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Exact: decimals travel as text (JSON numbers would round through floats).
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def meter_json(meter: Meter) -> dict[str, Any]:
    return {
        "id": meter.id,
        "protocol": meter.protocol,
        "route": meter.route,
        "serial": meter.serial,
        "address": meter.address,
        "group": meter.metadata.get("group"),
        "metadata": {k: v for k, v in meter.metadata.items() if not is_secret(k)},
    }


def reading_json(r: Reading) -> dict[str, Any]:
    return {
        "meter": r.meter,
        "obis": str(r.obis),
        "time": r.time.isoformat(),
        "value": json_value(r.value),
        "unit": r.unit_text,
        "unit_code": r.unit.code if r.unit else None,
        "scaler": r.scaler,
        "meter_time": json_value(r.meter_time),
        "received_time": r.received_time.isoformat(),
        "quality": int(r.quality),
        "source": r.source,
        "native_id": r.native_id,
    }


def block_json(b: IntervalBlock, until: datetime | None = None) -> dict[str, Any]:
    points = [
        [start.isoformat(), json_value(value), int(status)]
        for start, value, status in b.intervals()
        if until is None or start < until
    ]
    return {
        "meter": b.meter,
        "obis": str(b.obis),
        "unit": _unit(b),
        "period_s": int(b.period.total_seconds()),
        "start": b.start.isoformat(),
        "points": points,
    }


def _unit(b: IntervalBlock) -> str | None:
    from fep.model import unit_text

    return unit_text(b.unit, b.scaler)


def event_json(e: MeterEvent) -> dict[str, Any]:
    return {
        "meter": e.meter,
        "code": e.code,
        "kind": e.kind.value,
        "severity": e.severity.value,
        "time": e.time.isoformat(),
        "text": e.text,
        "received_time": e.received_time.isoformat(),
        "source": e.source,
    }


# -- query arguments ---------------------------------------------------------------------------


def _arg(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode())
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


def time_arg(request: Request, name: str) -> datetime | None:
    text = _arg(request, name)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name}: not an ISO-8601 time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def int_arg(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    text = _arg(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name}: not a whole number: {text!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name}: {value} is outside {lo}..{hi}")
    return value


def obis_arg(request: Request) -> str | None:
    text = _arg(request, "obis")
    if text is None:
        return None
    try:
        return str(ObisCode.parse(text))
    except ValueError as e:
        raise ApiError(400, f"obis: {e}") from None


# -- the API ------------------------------------------------------------------------------------

Handler = Callable[..., Coroutine[Any, Any, Any]]


class Api:
    """The handlers, by method and path; each returns a JSON-able value (or bytes with a
    content type for exports)."""

    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        self.routes: list[tuple[bytes, tuple[str, ...], Handler]] = [
            (b"GET", ("meters",), self.meters),
            (b"GET", ("meters", "*"), self.meter),
            (b"GET", ("meters", "*", "readings"), self.readings),
            (b"GET", ("meters", "*", "profile"), self.profile),
            (b"GET", ("meters", "*", "events"), self.events),
            (b"POST", ("meters", "*", "read"), self.read),
            (b"GET", ("sessions",), self.sessions),
            (b"GET", ("channels",), self.channels),
            (b"GET", ("tasks",), self.tasks),
            (b"POST", ("tasks", "*", "run"), self.run_task),
            (b"GET", ("jobs",), self.jobs),
            (b"GET", ("commands",), self.commands),
            (b"POST", ("meters", "*", "commands"), self.request_command),
            (b"POST", ("commands", "*", "approve"), self.approve_command),
            (b"POST", ("commands", "*", "reject"), self.reject_command),
            (b"GET", ("plans",), self.plans),
            (b"POST", ("plans",), self.create_plan),
            (b"GET", ("plans", "*"), self.plan),
            *[(b"POST", ("plans", "*", step), self._plan_step(step))
              for step in commands.PLAN_STEPS],
            (b"GET", ("stats",), self.stats),
            (b"GET", ("success-rate",), self.success_rate),
            (b"GET", ("alarms",), self.alarms),
            (b"GET", ("export", "cim"), self.export_cim),
            (b"POST", ("meters", "*", "archive-sync"), self.sync_concentrator),
        ]
        from fep.operator.http_analysis import AnalysisApi

        # The analysis tier's endpoints (fep/operator/http_analysis.py).
        self.routes += AnalysisApi(ctx, _arg, time_arg, ApiError, _json_body).routes()

    def find(self, method: bytes, path: list[str]) -> tuple[Handler, list[str]]:
        allowed = False
        for m, pattern, handler in self.routes:
            if len(pattern) != len(path):
                continue
            if all(p == "*" or p == seg for p, seg in zip(pattern, path, strict=True)):
                if m == method:
                    return handler, [s for p, s in zip(pattern, path, strict=True) if p == "*"]
                allowed = True
        if allowed:
            raise ApiError(405, f"{method.decode()} is not allowed here")
        raise ApiError(404, "no such resource: /api/v1/" + "/".join(path))

    async def _meter(self, meter_id: str) -> Meter:
        meter = self.ctx.directory.get(meter_id) or await self.ctx.store.meter(meter_id)
        if meter is None:
            raise ApiError(404, f"no meter {meter_id!r}")
        return meter

    async def meters(self, request: Request, user: ApiUser) -> Any:
        meters = await self.ctx.store.meters()
        group = _arg(request, "group")
        out = []
        for m in meters:
            if group is not None and m.metadata.get("group") != group:
                continue
            row = meter_json(m)
            status = self.ctx.activity.last.get(m.id)
            row["last"] = status.as_dict() if status else None
            out.append(row)
        return {"meters": out}

    async def meter(self, request: Request, user: ApiUser, meter_id: str) -> Any:
        row = meter_json(await self._meter(meter_id))
        status = self.ctx.activity.last.get(meter_id)
        row["last"] = status.as_dict() if status else None
        return row

    async def readings(self, request: Request, user: ApiUser, meter_id: str) -> Any:
        await self._meter(meter_id)
        since, until = time_arg(request, "from"), time_arg(request, "to")
        limit = int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = int_arg(request, "offset", 0, 0, 10**9)
        obis = obis_arg(request)
        # Ordered by time, so whatever lies before `to` comes first: one more than the page
        # tells whether there is a next page.
        found = await self.ctx.store.readings(meter_id, since=since, obis=obis,
                                              limit=offset + limit + 1)
        if until is not None:
            found = [r for r in found if r.time < until]
        page = found[offset:offset + limit]
        more = len(found) > offset + limit
        return {
            "meter": meter_id,
            "offset": offset,
            "limit": limit,
            "next_offset": offset + limit if more else None,
            "readings": [reading_json(r) for r in page],
        }

    async def profile(self, request: Request, user: ApiUser, meter_id: str) -> Any:
        await self._meter(meter_id)
        since, until = time_arg(request, "from"), time_arg(request, "to")
        blocks = await self.ctx.store.intervals(meter_id, obis=obis_arg(request), since=since)
        out = [block_json(b, until) for b in blocks]
        return {"meter": meter_id, "blocks": [b for b in out if b["points"]]}

    async def events(self, request: Request, user: ApiUser, meter_id: str) -> Any:
        await self._meter(meter_id)
        since, until = time_arg(request, "from"), time_arg(request, "to")
        found = await self.ctx.store.events(meter_id, since=since)
        return {"meter": meter_id,
                "events": [event_json(e) for e in found if until is None or e.time < until]}

    async def read(self, request: Request, user: ApiUser, meter_id: str) -> Any:
        raw = _json_body(request).get("options", {})
        if not isinstance(raw, dict):
            raise ApiError(400, "options: expected an object of protocol settings")
        options = {str(k): v for k, v in raw.items()}
        try:
            records = await commands.read_meter(self.ctx, meter_id, who=f"api:{user.name}",
                                                role=user.role, options=options)
        except (ChannelError, ProtocolError, FrameError) as e:
            # The read-now's error names meter, route and protocol already.
            raise ApiError(502, _naming(str(e), "meter", meter_id)) from None
        return {
            "meter": meter_id,
            "readings": [reading_json(r) for r in records if isinstance(r, Reading)],
            "profile": [block_json(b) for b in records if isinstance(b, IntervalBlock)],
            "events": [event_json(e) for e in records if isinstance(e, MeterEvent)],
        }

    async def sync_concentrator(self, request: Request, user: ApiUser, meter_id: str) -> Any:
        check = _json_body(request).get("check", False)
        if not isinstance(check, bool):
            raise ApiError(400, "check: expected true or false")
        try:
            return await commands.sync_concentrator(self.ctx, meter_id, who=f"api:{user.name}",
                                                    role=user.role, repair=not check)
        except (ChannelError, ProtocolError, FrameError) as e:
            raise ApiError(502, _naming(str(e), "concentrator", meter_id)) from None

    async def sessions(self, request: Request, user: ApiUser) -> Any:
        return {"sessions": [s.as_dict() for s in self.ctx.live_sessions()],
                "inbound_registry": self.ctx.sessions is not None}

    async def channels(self, request: Request, user: ApiUser) -> Any:
        return {"channels": self.ctx.activity.channels()}

    def _scheduler(self) -> Any:
        if self.ctx.scheduler is None:
            raise ApiError(503, "no task scheduler is wired into this daemon")
        return self.ctx.scheduler

    async def tasks(self, request: Request, user: ApiUser) -> Any:
        return {"tasks": await self._scheduler().tasks()}

    async def jobs(self, request: Request, user: ApiUser) -> Any:
        limit = int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        return {"jobs": await self._scheduler().jobs(limit)}

    async def run_task(self, request: Request, user: ApiUser, task: str) -> Any:
        return await commands.run_task(self.ctx, task, who=f"api:{user.name}", role=user.role)

    async def commands(self, request: Request, user: ApiUser) -> Any:
        limit = int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        return {"commands": await self._scheduler().commands(limit)}

    async def request_command(self, request: Request, user: ApiUser, meter_id: str) -> Any:
        await self._meter(meter_id)
        body = _json_body(request)
        action = body.get("action")
        params = body.get("params", {})
        if not isinstance(action, str) or not action:
            raise ApiError(400, "action: required, e.g. \"disconnect\"")
        if not isinstance(params, dict):
            raise ApiError(400, "params: expected an object")
        return await commands.request_command(self.ctx, meter_id, action, params,
                                              who=f"api:{user.name}", role=user.role)

    def _command_id(self, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ApiError(400, f"not a command id: {text!r}") from None

    async def approve_command(self, request: Request, user: ApiUser, command_id: str) -> Any:
        return await commands.approve_command(self.ctx, self._command_id(command_id),
                                              who=f"api:{user.name}", role=user.role)

    async def reject_command(self, request: Request, user: ApiUser, command_id: str) -> Any:
        reason = _json_body(request).get("reason", "")
        if not isinstance(reason, str):
            raise ApiError(400, "reason: expected text")
        return await commands.reject_command(self.ctx, self._command_id(command_id), reason,
                                             who=f"api:{user.name}", role=user.role)

    def _plan_id(self, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ApiError(404, f"no plan {text!r}") from None

    async def plans(self, request: Request, user: ApiUser) -> Any:
        limit = int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        return {"plans": await commands.list_plans(
            self.ctx, who=f"api:{user.name}", role=user.role, limit=limit,
            status=_arg(request, "status"))}

    async def plan(self, request: Request, user: ApiUser, plan_id: str) -> Any:
        return await commands.show_plan(self.ctx, self._plan_id(plan_id),
                                        who=f"api:{user.name}", role=user.role)

    async def create_plan(self, request: Request, user: ApiUser) -> Any:
        spec = _json_body(request)
        if "target" in spec and str(spec["target"]).strip().lower().startswith("file:"):
            raise ApiError(400, "target file: only on the command line; give meters: [...]")
        return await commands.create_plan(self.ctx, spec, who=f"api:{user.name}",
                                          role=user.role)

    def _plan_step(self, step: str) -> Handler:
        async def handler(request: Request, user: ApiUser, plan_id: str) -> Any:
            reason = _json_body(request).get("reason", "")
            if not isinstance(reason, str):
                raise ApiError(400, "reason: expected text")
            return await commands.plan_step(self.ctx, self._plan_id(plan_id), step,
                                            who=f"api:{user.name}", role=user.role,
                                            reason=reason)

        return handler

    async def stats(self, request: Request, user: ApiUser) -> Any:
        stats = gather(self.ctx)
        if self.ctx.plans is not None:
            stats["plans"] = await self.ctx.plans.active()
        return stats

    async def success_rate(self, request: Request, user: ApiUser) -> Any:
        minutes = int_arg(request, "minutes", 60, 1, 24 * 60)
        since = datetime.now(UTC) - timedelta(minutes=minutes)
        return {"minutes": minutes, "buckets": self.ctx.activity.success_rate(since)}

    async def alarms(self, request: Request, user: ApiUser) -> Any:
        if self.ctx.alarms is None:
            return {"alarms": [], "enabled": False}
        limit = int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        severity = _arg(request, "severity")
        found = await self.ctx.alarms.recent(limit=limit, severity=severity)
        return {"alarms": [a.as_dict() for a in found], "enabled": True}

    async def export_cim(self, request: Request, user: ApiUser) -> Any:
        from fep.operator import cim as cim_export

        meter_id = _arg(request, "meter")
        if not meter_id:
            raise ApiError(400, "meter: required")
        meter = await self._meter(meter_id)
        since, until = time_arg(request, "from"), time_arg(request, "to")
        kind = _arg(request, "kind") or "readings"
        if kind not in ("readings", "events"):
            raise ApiError(400, "kind: readings or events")
        if kind == "readings":
            from fep.operator.console_analysis import settings_of

            xml = await cim_export.export_readings(self.ctx.store, meter, since, until,
                                                   vee=settings_of(self.ctx))
        else:
            xml = await cim_export.export_events(self.ctx.store, meter, since, until)
        return (b"application/xml; charset=utf-8", xml)


def _naming(text: str, kind: str, meter_id: str) -> str:
    """An error's text naming the meter (or concentrator) once: errors from the channels and
    protocols name it already ("meter M ...", "concentrator C: ...")."""
    for named in (f"meter {meter_id}", f"concentrator {meter_id}"):
        if text.startswith((named + " ", named + ":")):
            return text
    return f"{kind} {meter_id}: {text}"


def _json_body(request: Request) -> dict[str, Any]:
    """A POST body: empty, or a JSON object."""
    body = request.content.read() if request.content is not None else b""
    if not body.strip():
        return {}
    try:
        payload = loads_bounded(body, MAX_JSON_DEPTH)
    except JsonTooDeep as e:
        raise ApiError(400, str(e)) from None
    except ValueError:
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the body must be a JSON object")
    return payload


def _bearer(request: Request) -> bytes | None:
    header = request.getHeader(b"authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip()


def _write_json(request: Request, status: int, body: Any) -> None:
    data = json.dumps(body, default=json_value, separators=(",", ":")).encode()
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.write(data)


def _too_many_failures(request: Request, failures: AuthFailures | None) -> bool:
    """A source refused for its failed logins gets 429 (whatever token it sends now)."""
    if failures is None:
        return False
    left = failures.blocked(source_of(request))
    if not left:
        return False
    failures.refused += 1
    request.setHeader(b"retry-after", str(int(left) + 1).encode())
    _write_json(request, 429, {"error": "too many failed logins from this address; "
                                        f"try again in {int(left) + 1} s"})
    return True


def _unauthorized(request: Request, failures: AuthFailures | None) -> None:
    if failures is not None:
        failures.failed(source_of(request))
    request.setHeader(b"www-authenticate", b'Bearer realm="fep"')


class ApiResource(resource.Resource):
    """/api/v1/...: token check, dispatch, JSON out, errors as {"error": ...}."""

    isLeaf = True

    def __init__(self, api: Api, tokens: TokenFile,
                 failures: AuthFailures | None = None) -> None:
        super().__init__()
        self.api = api
        self.tokens = tokens
        self.failures = failures

    def render(self, request: Request) -> int | bytes:
        path = [p.decode("utf-8", "replace") for p in request.postpath or []]
        if path and path[-1] == "":
            path.pop()
        if not path or path[0] != "v1":
            _write_json(request, 404, {"error": "the API lives under /api/v1"})
            return b""
        if _too_many_failures(request, self.failures):
            return b""
        user = self.tokens.user(_bearer(request))
        if user is None:
            _unauthorized(request, self.failures)
            _write_json(request, 401, {"error": "a valid token is required "
                                                "(Authorization: Bearer TOKEN)"})
            return b""
        assert request.method is not None
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = Deferred.fromCoroutine(self._handle(request, request.method, path[1:], user, gone))
        d.addErrback(self._failed, request)
        return server.NOT_DONE_YET

    async def _handle(self, request: Request, method: bytes, path: list[str],
                      user: ApiUser, gone: list[bool]) -> None:
        try:
            handler, params = self.api.find(method, path)
            result = await handler(request, user, *params)
            if gone:
                return  # the client left; a read it asked for still stored its records
        except ApiError as e:
            status, body = e.status, {"error": e.message}
        except commands.CommandRefused as e:
            status, body = e.status, {"error": str(e)}
        except NoSuchCommand as e:
            status, body = 404, {"error": str(e)}
        except SameOperator as e:  # four eyes: forbidden to this operator, not a bad request
            status, body = 403, {"error": str(e)}
        except WrongState as e:  # already approved, rejected, changed meanwhile
            status, body = 409, {"error": str(e)}
        except StoreError as e:
            status, body = 503, {"error": f"store: {e}"}
        except FepError as e:
            status, body = 400, {"error": str(e)}
        else:
            if isinstance(result, tuple):
                content_type, data = result
                request.setHeader(b"content-type", content_type)
                request.write(data)
            else:
                _write_json(request, 200, result)
            request.finish()
            return
        if status >= 500:
            log.warn("API {method} {path} by {user}: {error}", method=method.decode(),
                     path="/".join(path), user=user.name, error=body["error"])
        if gone:
            return
        _write_json(request, status, body)
        request.finish()

    def _failed(self, failure: Failure, request: Request) -> None:
        log.failure("API request failed", failure)
        if not request.finished and request.channel is not None:
            _write_json(request, 500, {"error": "internal error; see the daemon's log"})
            request.finish()


class StaticFiles(resource.Resource):
    """The status page's files, from the package (no build step, no CDN)."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        name = "/".join(p.decode("utf-8", "replace") for p in request.postpath or [])
        folder = resources.files("fep.operator").joinpath("static")
        if not name or "/" in name or name.startswith("."):
            request.setResponseCode(404)
            return b"not found"
        entry = folder.joinpath(name)
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if not entry.is_file() or suffix not in STATIC_TYPES:
            request.setResponseCode(404)
            return b"not found"
        request.setHeader(b"content-type", STATIC_TYPES[suffix].encode())
        request.setHeader(b"cache-control", b"no-cache")
        return entry.read_bytes()


class StatusPage(resource.Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return resources.files("fep.operator").joinpath("static", "status.html").read_bytes()


class _Root(resource.Resource):
    def render_GET(self, request: Request) -> bytes:
        request.redirect(b"/status")
        return b""

    def getChild(self, path: bytes, request: Request) -> resource.Resource:
        if path == b"":
            return self
        return resource.NoResource()


class MetricsGuard(resource.Resource):
    """/metrics behind the same tokens (Prometheus sends them as a bearer credential)."""

    isLeaf = True

    def __init__(self, inner: Any, tokens: TokenFile | None,
                 failures: AuthFailures | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.tokens = tokens
        self.failures = failures

    def render(self, request: Request) -> Any:
        if self.tokens is not None and _too_many_failures(request, self.failures):
            return b""
        if self.tokens is not None and self.tokens.user(_bearer(request)) is None:
            request.setResponseCode(401)
            _unauthorized(request, self.failures)
            return b"a valid token is required\n"
        return self.inner.render(request)


def site(ctx: OperatorContext, tokens: TokenFile, metrics: FepMetrics | None = None, *,
         metrics_auth: bool = True, limits: WebLimits = DEFAULT_LIMITS,
         failures: AuthFailures | None = None) -> server.Site:
    """The whole web server. ``limits`` caps request bodies (before and after a valid
    token); ``failures`` limits failed logins per source (default: 10 in 60 s, then 429 for
    300 s)."""
    if failures is None:
        failures = AuthFailures(ctx.reactor.seconds)
    root = _Root()
    root.putChild(API_PREFIX, ApiResource(Api(ctx), tokens, failures))
    root.putChild(b"status", StatusPage())
    root.putChild(b"static", StaticFiles())
    if metrics is not None:
        from prometheus_client.twisted import MetricsResource

        root.putChild(b"metrics", MetricsGuard(MetricsResource(metrics.registry),
                                               tokens if metrics_auth else None, failures))

    def valid_token(request: Request) -> bool:
        return tokens.user(_bearer(request)) is not None

    factory = GuardedSite(root, valid_token=valid_token, limits=limits, failures=failures)
    factory.displayTracebacks = False
    factory.noisy = False
    return factory


def status_url(base: str, token: str) -> str:
    """The status page's address with the token in its fragment (never sent to the
    server in a URL, so never in an access log)."""
    return f"{base.rstrip('/')}/status#token={quote(token)}"
