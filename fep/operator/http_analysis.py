"""The analysis tier's part of the JSON API (fep.analysis): communication analysis
(``GET /api/v1/comms``) and operators' edits of interval values (``/api/v1/edits``,
``POST /api/v1/meters/{meter}/edits``). docs/openapi.yaml describes them; fep.operator.http
dispatches to them like to its own handlers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.web.server import Request

from fep.operator import edit_commands
from fep.operator.context import OperatorContext

Handler = Callable[..., Coroutine[Any, Any, Any]]


class AnalysisApi:
    """The handlers; ``errors`` makes the API's error (status, message)."""

    def __init__(self, ctx: OperatorContext, arg: Callable[[Request, str], str | None],
                 time_arg: Callable[[Request, str], datetime | None],
                 error: Callable[[int, str], Exception],
                 json_body: Callable[[Request], dict[str, Any]]) -> None:
        self.ctx = ctx
        self._body = json_body
        self._arg = arg
        self._time_arg = time_arg
        self._error = error

    def routes(self) -> list[tuple[bytes, tuple[str, ...], Handler]]:
        return [(b"GET", ("comms",), self.comms),
                (b"GET", ("edits",), self.edits),
                (b"POST", ("meters", "*", "edits"), self.request_edit),
                (b"POST", ("edits", "*", "approve"), self.approve_edit),
                (b"POST", ("edits", "*", "reject"), self.reject_edit)]

    async def comms(self, request: Request, user: Any) -> Any:
        """The success rates of the jobs that ended in [from, to) (default: yesterday, UTC)
        per scope, against ``target`` (default 98 %), and the meters below it."""
        from fep.analysis import jobs
        from fep.analysis.daemon import share

        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        since = self._time_arg(request, "from") or today - timedelta(days=1)
        until = self._time_arg(request, "to") or since + timedelta(days=1)
        if until <= since:
            raise self._error(400, "to: must be after from")
        try:
            target = share(self._arg(request, "target") or "98 %")
        except ValueError as e:
            raise self._error(400, f"target: {e}") from None
        area = self._arg(request, "area") or None
        try:
            report = await jobs.run_comms(self.ctx.store, since, until, area=area,
                                          target=target)
        except LookupError as e:
            raise self._error(404, str(e.args[0])) from None
        body = report.as_dict()
        if (self._arg(request, "below") or "").lower() in ("1", "yes", "true"):
            body.pop("rows")
        return {"from": since, "to": until, **body}

    async def edits(self, request: Request, user: Any) -> Any:
        """Edits, newest first: ``meter``, ``status`` (pending, applied, rejected), and
        ``from``/``to`` on the interval start."""
        status = self._arg(request, "status")
        if status is not None and status not in ("pending", "applied", "rejected"):
            raise self._error(400, "status: pending, applied or rejected")
        return {"edits": await edit_commands.list_edits(
            self.ctx, who=f"api:{user.name}", role=user.role, meter=self._arg(request, "meter"),
            status=status, since=self._time_arg(request, "from"),
            until=self._time_arg(request, "to"))}

    async def request_edit(self, request: Request, user: Any, meter: str) -> Any:
        body = self._body(request)
        if "start" not in body:
            raise self._error(400, "start: required (the interval's start, ISO-8601)")
        if not isinstance(body.get("reason", ""), str):
            raise self._error(400, "reason: expected text")
        return await edit_commands.request_edit(
            self.ctx, meter, body["start"], who=f"api:{user.name}", role=user.role,
            reason=body.get("reason", ""), value=body.get("value"),
            accept=body.get("accept") is True)

    def _edit_id(self, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise self._error(404, f"no edit {text!r}") from None

    async def approve_edit(self, request: Request, user: Any, edit: str) -> Any:
        return await edit_commands.decide_edit(self.ctx, self._edit_id(edit), approve=True,
                                               who=f"api:{user.name}", role=user.role)

    async def reject_edit(self, request: Request, user: Any, edit: str) -> Any:
        reason = self._body(request).get("reason", "")
        if not isinstance(reason, str):
            raise self._error(400, "reason: expected text")
        return await edit_commands.decide_edit(self.ctx, self._edit_id(edit), approve=False,
                                               who=f"api:{user.name}", role=user.role,
                                               reason=reason)
