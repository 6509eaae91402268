"""The console's read-only analysis commands (fep.analysis), the API's GET /api/v1/vee/exceptions,
/balance, /outages and /load as tables: ``vee_exceptions()``, ``balance()``, ``outages()``,
``load()``. A day is ``YYYY-MM-DD`` (default yesterday, UTC). Mixed into the console's
OperatorCommands, whose ``ctx`` and ``_log`` they use; a viewer may run them."""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import UTC, date, datetime, timedelta
from typing import Any

from twisted.internet.defer import Deferred

from fep.operator import commands

NAMES = ("vee_exceptions", "balance", "outages", "load")


def settings_of(ctx: Any) -> Any:
    """The daemon's vee.ini (its editor's), else the built-in defaults."""
    from fep.analysis.settings import VeeSettings

    editor = getattr(ctx, "edits", None)
    return editor.vee if editor is not None else VeeSettings()


def _day(text: str | None) -> date:
    if not text:
        return datetime.now(UTC).date() - timedelta(days=1)
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        raise commands.CommandRefused(f"not a day (YYYY-MM-DD): {text!r}", status=400) from None


def _outage_period(day: str | None, month: str | None, since: str | None,
                   until: str | None) -> tuple[date, date | None]:
    """A day, or the whole days of a month or of [since, until)."""
    if sum(1 for v in (day, month, since) if v) > 1:
        raise commands.CommandRefused("day, month or since/until: one of them", status=400)
    if month:
        first = _day(str(month) + "-01")
        return first, date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    if since or until:
        if not (since and until):
            raise commands.CommandRefused("since and until go together (until excluded)",
                                          status=400)
        return _day(since), _day(until)
    return _day(day), None


def _table(rows: list[dict[str, Any]], columns: list[str], title: str) -> Any:
    from fep.operator.manhole import Table

    return Table(rows, columns, title)


class AnalysisCommands:
    ctx: Any

    def _log(self, command: str, **fields: Any) -> None:
        raise NotImplementedError

    def _run(self, work: Coroutine[Any, Any, Any]) -> Deferred[Any]:
        async def run() -> Any:
            try:
                return await work
            except LookupError as e:
                raise commands.CommandRefused(str(e.args[0]), status=404) from None

        return Deferred.fromCoroutine(run())

    def vee_exceptions(self, day: str | None = None, meter: str | None = None
                       ) -> Deferred[Any]:
        """The validation exceptions of a day, e.g. vee_exceptions("2026-12-01", meter="m1")."""
        from fep.analysis.series import day_bounds, quality_text
        from fep.analysis.store import AnalysisStore

        self._log("vee_exceptions()", day=day, meter=meter)
        since, until = day_bounds(_day(day))

        async def work() -> Any:
            found = await AnalysisStore(self.ctx.store).findings(since, until, meter)
            rows = [{"meter": f.meter, "rule": f.rule, "since": f.since, "until": f.until,
                     "flag": quality_text(f.flag),
                     "details": " ".join(f"{k}={v}" for k, v in sorted(f.details.items()))}
                    for f in found]
            return _table(rows, ["meter", "rule", "since", "until", "flag", "details"],
                          f"{len(rows)} validation exceptions")

        return self._run(work())

    def balance(self, day: str | None = None, area: str | None = None) -> Deferred[Any]:
        """The energy balance and line loss of a day's areas (nothing stored)."""
        from fep.analysis import jobs

        self._log("balance()", day=day, area=area)

        async def work() -> Any:
            found = await jobs.balance_report(self.ctx.store, settings_of(self.ctx), _day(day),
                                              area=area)
            rows = [{**r.day.as_dict(), "alarm": r.alarm or ""} for r in found]
            return _table(rows, ["area", "input", "consumption", "loss", "loss_rate",
                                 "members", "complete", "estimated", "alarm"],
                          f"balance of {len(rows)} areas")

        return self._run(work())

    def outages(self, day: str | None = None, area: str | None = None, *,
                month: str | None = None, since: str | None = None,
                until: str | None = None, exclude_med: bool = False) -> Deferred[Any]:
        """A day's outages per meter and per area, and the indices (SAIFI, SAIDI, ...);
        or a period's: ``month="2026-12"``, or ``since="2026-12-01", until="2026-12-04"``
        (whole days, until excluded); ``exclude_med=True`` adds its major event days and
        its indices without them to the title."""
        from fep.analysis import jobs

        self._log("outages()", day=day, area=area, month=month, since=since, until=until)
        first, end = _outage_period(day, month, since, until)

        async def work() -> Any:
            if end is not None:
                try:
                    period = await jobs.run_outage_period(
                        self.ctx.store, settings_of(self.ctx), first, end, area=area,
                        exclude_med=exclude_med)
                except ValueError as e:
                    raise commands.CommandRefused(str(e), status=400) from None
                found, areas, i = period.outages, period.areas, period.indices
                what = (f"{first}..{end} (excluded), {(end - first).days} days "
                        f"({len(period.stored)} stored): ")
                if period.med is not None:
                    m = period.med.indices
                    what += (f"T_MED {period.med.t_med}, major event days "
                             f"{' '.join(str(d) for d in period.med.days) or 'none'}, "
                             f"without them SAIFI {m.saifi}, SAIDI {m.saidi}, CAIDI {m.caidi}, "
                             f"MAIFI {m.maifi}; ")
            else:
                report = await jobs.run_outages(self.ctx.store, settings_of(self.ctx),
                                                first, area=area)
                found, areas, i = report.outages, report.areas, report.indices
                what = ""
            rows = [{"record": "outage", **o.as_dict()} for o in found]
            rows += [{"record": "area-outage", "meter": a.area, "since": a.since,
                      "until": a.until, "minutes": a.as_dict()["minutes"]}
                     for a in areas]
            title = (f"{what}{len(found)} outages, {len(areas)} area outages; "
                     f"customers {i.customers}, SAIFI {i.saifi}, SAIDI {i.saidi}, "
                     f"CAIDI {i.caidi}, MAIFI {i.maifi}")
            return _table(rows, ["record", "meter", "since", "until", "minutes"], title)

        return self._run(work())

    def load(self, day: str | None = None, area: str | None = None,
             meter: str | None = None) -> Deferred[Any]:
        """A day's load: peak, base, load factor, transformer loading, phase imbalance (and
        its source), over- and under-voltage minutes and the share within limits."""
        from fep.analysis import jobs

        self._log("load()", day=day, area=area, meter=meter)

        async def work() -> Any:
            report = await jobs.run_load(self.ctx.store, settings_of(self.ctx), _day(day),
                                         area=area, meter=meter)
            rows = [d.as_dict() for d in report.days]
            return _table(rows, ["subject", "kind", "energy", "peak", "peak_time", "base",
                                 "load_factor", "loading", "overload_minutes", "imbalance",
                                 "imbalance_source", "over_voltage_minutes",
                                 "under_voltage_minutes", "voltage_within"],
                          f"load of {len(rows)}")

        return self._run(work())
