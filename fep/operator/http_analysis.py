"""The analysis tier's part of the JSON API (fep.analysis): communication analysis
(``GET /api/v1/comms``), operators' edits of interval values (``/api/v1/edits``,
``POST /api/v1/meters/{meter}/edits``), and, read only, the validation exceptions
(``GET /api/v1/vee/exceptions``), the energy balance (``GET /api/v1/balance``), the outages
(``GET /api/v1/outages``) and the load (``GET /api/v1/load``) of a period, and what the
status page charts (``/balance/history``, ``/outages/map``, ``/vee/quality``: stored rows
over a range of days only).
docs/openapi.yaml describes them; fep.operator.http dispatches to them like to its own
handlers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
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
                (b"GET", ("vee", "exceptions"), self.vee_exceptions),
                (b"GET", ("balance",), self.balance),
                (b"GET", ("outages",), self.outages),
                (b"GET", ("load",), self.load),
                (b"GET", ("balance", "history"), self.balance_history),
                (b"GET", ("outages", "map"), self.outage_map),
                (b"GET", ("vee", "quality"), self.vee_quality),
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

    # -- read-only analyses of a period ------------------------------------------------

    def _settings(self) -> Any:
        """The daemon's vee.ini (the editor's), else the built-in defaults."""
        from fep.operator.console_analysis import settings_of

        return settings_of(self.ctx)

    def _day(self, request: Request, name: str, default: date | None = None) -> date:
        text = self._arg(request, name)
        if not text:
            if default is None:
                raise self._error(400, f"{name}: required (YYYY-MM-DD)")
            return default
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise self._error(400, f"{name}: not a day (YYYY-MM-DD): {text!r}") from None

    @staticmethod
    def _yesterday() -> date:
        return datetime.now(UTC).date() - timedelta(days=1)

    async def vee_exceptions(self, request: Request, user: Any) -> Any:
        """The validation exceptions stored for ``day`` (default yesterday), of ``meter``."""
        from fep.analysis.series import day_bounds, quality_text
        from fep.analysis.store import AnalysisStore

        day = self._day(request, "day", self._yesterday())
        since, until = day_bounds(day)
        found = await AnalysisStore(self.ctx.store).findings(since, until,
                                                             self._arg(request, "meter"))
        return {"day": day.isoformat(), "exceptions": [
            {"meter": f.meter, "obis": f.obis, "rule": f.rule, "since": f.since,
             "until": f.until, "flag": quality_text(f.flag), "details": dict(f.details)}
            for f in found]}

    async def balance(self, request: Request, user: Any) -> Any:
        """The balance of ``day`` (default yesterday) or ``month`` (YYYY-MM) of every area
        with summary meters, or of ``area``; ``intervals=yes`` adds each interval's balance
        (``rows``). Computed when asked: nothing stored, no alarm raised; ``stored=yes``
        gives the balances as stored instead (cheap: the status page's panel)."""
        from fep.analysis import jobs

        month = self._arg(request, "month")
        end = None
        if month:
            try:
                day = date.fromisoformat(month + "-01")
            except ValueError:
                raise self._error(400, f"month: not a month (YYYY-MM): {month!r}") from None
            end = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
        else:
            day = self._day(request, "day", self._yesterday())
        if (self._arg(request, "stored") or "").lower() in ("1", "yes", "true"):
            return await self._stored_balance(day, end, self._arg(request, "area") or None)
        try:
            results = await jobs.balance_report(self.ctx.store, self._settings(), day,
                                                area=self._arg(request, "area") or None,
                                                end=end)
        except LookupError as e:
            raise self._error(404, str(e.args[0])) from None
        with_intervals = (self._arg(request, "intervals") or "").lower() in ("1", "yes",
                                                                             "true")
        return {"day": day.isoformat(), "end": end.isoformat() if end else None,
                "areas": [{**r.day.as_dict(), "alarm": r.alarm if end is None else None,
                           **({"rows": [i.as_dict() for i in r.intervals]}
                              if with_intervals else {})}
                          for r in results]}

    async def _stored_balance(self, day: date, end: date | None, area: str | None) -> Any:
        """The balances of the period as stored (by ``fep balance`` or the analysis
        service), each with the alarm text its band gives; cheap enough for a status page."""
        from fep.analysis.balance import out_of_band
        from fep.analysis.series import day_bounds
        from fep.analysis.store import AnalysisStore

        since = day_bounds(day)[0]
        until = day_bounds(end)[0] if end is not None else since + timedelta(days=1)
        settings = self._settings()
        rows = [r for r in await AnalysisStore(self.ctx.store).balances(since, until, area)
                if r.since == since and r.until == until]
        return {"day": day.isoformat(), "end": end.isoformat() if end else None,
                "stored": True,
                "areas": [{**r.as_dict(), "alarm": out_of_band(r, settings.band_for(r.area))
                           if end is None else None} for r in rows]}

    def _outage_period(self, request: Request) -> tuple[date, date | None]:
        """``day`` (default yesterday), or the whole days of ``month`` (YYYY-MM) or of
        ``since`` (included) to ``until`` (excluded), at most MAX_OUTAGE_DAYS."""
        from fep.analysis.jobs import MAX_OUTAGE_DAYS

        month, since = self._arg(request, "month"), self._arg(request, "since")
        until = self._arg(request, "until")
        if sum(1 for v in (self._arg(request, "day"), month, since) if v) > 1:
            raise self._error(400, "day, month or since/until: one of them")
        if month:
            try:
                first = date.fromisoformat(month + "-01")
            except ValueError:
                raise self._error(400, f"month: not a month (YYYY-MM): {month!r}") from None
            return first, date(first.year + (first.month == 12), first.month % 12 + 1, 1)
        if not since and not until:
            return self._day(request, "day", self._yesterday()), None
        first, end = self._day(request, "since"), self._day(request, "until")
        if end <= first:
            raise self._error(400, "until: must be after since (until is excluded)")
        if (end - first).days > MAX_OUTAGE_DAYS:
            raise self._error(400, f"since, until: at most {MAX_OUTAGE_DAYS} days, got "
                              f"{(end - first).days}")
        return first, end

    async def outages(self, request: Request, user: Any) -> Any:
        """The outages of ``day`` (default yesterday) per meter and per area, the indices,
        and the suspected outages from communication loss: ``area``, ``momentary`` (5m),
        ``share`` (50 %). With ``month`` or ``since``/``until`` (whole days, until
        excluded), those of the period (an outage crossing midnight once) and its
        indices, from the stored days where the analysis service analysed them;
        ``exclude_med=yes`` adds its major event days and its indices without them."""
        from fep.analysis import jobs
        from fep.analysis.settings import _decimal, _duration

        day, end = self._outage_period(request)
        try:
            momentary = _duration(self._arg(request, "momentary") or "5m")
        except ValueError as e:
            raise self._error(400, f"momentary: {e}") from None
        try:
            share = _decimal(self._arg(request, "share") or "50 %")
        except ValueError as e:
            raise self._error(400, f"share: {e}") from None
        if not 0 < share <= 1:
            raise self._error(400, "share: above 0 and at most 100 %")
        area = self._arg(request, "area") or None
        if end is not None:
            try:
                period = await jobs.run_outage_period(
                    self.ctx.store, self._settings(), day, end, area=area,
                    momentary=momentary, share=share, exclude_med=(
                        self._arg(request, "exclude_med") or "").lower() in ("1", "yes",
                                                                              "true"))
            except LookupError as e:
                raise self._error(404, str(e.args[0])) from None
            except ValueError as e:
                raise self._error(400, str(e)) from None
            body = {**period.period(),
                    "stored": [d.isoformat() for d in period.stored],
                    "outages": [o.as_dict() for o in period.outages],
                    "areas": [a.as_dict() for a in period.areas],
                    "indices": period.indices.as_dict()}
            if period.med is not None:
                body["major_event_days"] = [d.isoformat() for d in period.med.days]
                body["indices_excluding_med"] = period.med.indices.as_dict()
            return body
        try:
            report = await jobs.run_outages(self.ctx.store, self._settings(), day,
                                            area=area, momentary=momentary, share=share)
        except LookupError as e:
            raise self._error(404, str(e.args[0])) from None
        return {"day": day.isoformat(),
                "outages": [o.as_dict() for o in report.outages],
                "areas": [a.as_dict() for a in report.areas],
                "indices": report.indices.as_dict(),
                "suspected": [x.as_dict() for x in report.suspected]}

    async def load(self, request: Request, user: Any) -> Any:
        """The daily load of the days [``from``, ``to``) (default yesterday) of ``meter``, or
        of ``area`` and the areas below it, or of every area; ``members=yes`` adds each
        area's member meters, ``profile=yes`` the typical day."""
        from fep.analysis import jobs

        first = self._day(request, "from", self._yesterday())
        end = self._day(request, "to", first + timedelta(days=1))
        if end <= first:
            raise self._error(400, "to: must be after from")
        area, meter = self._arg(request, "area") or None, self._arg(request, "meter") or None
        if area and meter:
            raise self._error(400, "area or meter, not both")
        profile = (self._arg(request, "profile") or "").lower() in ("1", "yes", "true")
        members = (self._arg(request, "members") or "").lower() in ("1", "yes", "true")
        try:
            report = await jobs.run_load(self.ctx.store, self._settings(), first, end,
                                         area=area, meter=meter, profile=profile,
                                         members=members)
        except LookupError as e:
            raise self._error(404, str(e.args[0])) from None
        body: dict[str, Any] = {"from": first.isoformat(), "to": end.isoformat(),
                                "days": [d.as_dict() for d in report.days]}
        if profile:
            body["profile"] = [p.as_dict() for p in report.profile]
        return body

    # -- the status page's charts: stored rows over a range of days --------------------

    def _range(self, request: Request, default_days: int) -> tuple[date, date]:
        """``from`` and ``to`` (excluded) days; without them the ``default_days`` before
        today (UTC); at most CHART_DAYS days."""
        today = datetime.now(UTC).date()
        end = self._day(request, "to", today)
        first = self._day(request, "from", end - timedelta(days=default_days))
        if end <= first:
            raise self._error(400, "to: must be after from")
        if (end - first).days > CHART_DAYS:
            raise self._error(400, f"from, to: at most {CHART_DAYS} days")
        return first, end

    async def balance_history(self, request: Request, user: Any) -> Any:
        """Each area's stored day balances over the days [``from``, ``to``) (default the 30
        days before today), with its band: the loss over time."""
        from fep.analysis.series import day_bounds
        from fep.analysis.store import AnalysisStore

        first, end = self._range(request, 30)
        area = self._arg(request, "area") or None
        analysis = AnalysisStore(self.ctx.store)
        if area is not None and (await analysis.network()).area(area) is None:
            raise self._error(404, f"no area {area!r}")
        settings = self._settings()
        rows = await analysis.balances(day_bounds(first)[0], day_bounds(end)[0], area)
        by_area: dict[str, list[Any]] = {}
        for r in rows:
            if r.until - r.since == timedelta(days=1):  # days, not months
                by_area.setdefault(r.area, []).append(r)
        areas = []
        for name in sorted(by_area):
            band = settings.band_for(name)
            areas.append({"area": name, "low": band.low, "high": band.high, "days": [
                {"day": r.since.date().isoformat(), "loss_rate": r.loss_rate,
                 "input": r.input, "loss": r.loss, "complete": r.complete,
                 "estimated": r.estimated} for r in by_area[name]]})
        return {"from": first.isoformat(), "to": end.isoformat(), "areas": areas}

    async def outage_map(self, request: Request, user: Any) -> Any:
        """The area tree with, per area, its members out at the end of the days [``from``,
        ``to``) (default the 7 days before today) and the stored outages of the period."""
        from fep.analysis.outage_map import outage_map
        from fep.analysis.series import day_bounds
        from fep.analysis.store import AnalysisStore

        first, end = self._range(request, 7)
        since, until = day_bounds(first)[0], day_bounds(end)[0]
        analysis = AnalysisStore(self.ctx.store)
        network = await analysis.network()
        stored = await analysis.outages(since, until, started=since - MAP_LOOKBACK)
        return {"from": first.isoformat(), "to": end.isoformat(), "until": until,
                "areas": [r.as_dict() for r in outage_map(network, stored, until)]}

    async def vee_quality(self, request: Request, user: Any) -> Any:
        """Per day of [``from``, ``to``) (default the 30 days before today), the analysed
        channel's intervals by class as the day's last VEE run left them."""
        from fep.analysis.quality import CLASSES
        from fep.analysis.store import AnalysisStore

        first, end = self._range(request, 30)
        channel = str(self._settings().channel)
        days = await AnalysisStore(self.ctx.store).quality_days(channel, first, end)
        return {"from": first.isoformat(), "to": end.isoformat(), "channel": channel,
                "classes": list(CLASSES), "days": [d.as_dict() for d in days]}


# The longest range of days a chart's query covers.
CHART_DAYS = 366
# How long before a period an outage it overlaps may have begun and still be found (a
# stored day's outages begin in their day; a suspected outage keeps its first start).
MAP_LOOKBACK = timedelta(days=7)
