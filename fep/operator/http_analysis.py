"""The analysis tier's part of the JSON API (fep.analysis): communication analysis
(``GET /api/v1/comms``). docs/openapi.yaml describes it; fep.operator.http dispatches to
it like to its own handlers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.web.server import Request

from fep.operator.context import OperatorContext

Handler = Callable[..., Coroutine[Any, Any, Any]]


class AnalysisApi:
    """The handlers; ``errors`` makes the API's error (status, message)."""

    def __init__(self, ctx: OperatorContext, arg: Callable[[Request, str], str | None],
                 time_arg: Callable[[Request, str], datetime | None],
                 error: Callable[[int, str], Exception]) -> None:
        self.ctx = ctx
        self._arg = arg
        self._time_arg = time_arg
        self._error = error

    def routes(self) -> list[tuple[bytes, tuple[str, ...], Handler]]:
        return [(b"GET", ("comms",), self.comms)]

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
