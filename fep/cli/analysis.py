"""`fep areas`, `fep vee`, `fep balance`, `fep outages` and `fep comms`: the network model,
validation and estimation of a day, the energy balance of areas, the outages and the
communication analysis (fep.analysis); `fep analysis runs` and `pending`: what the analysis
service ran and why, and the days re-collected waiting for it."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fep.cli.arguments import with_store
from fep.cli.output import EXIT_OK, UsageError, write_rows
from fep.errors import ConfigError

if TYPE_CHECKING:
    from fep.analysis.settings import VeeSettings
    from fep.reactors import IFepReactor

DEFAULT_VEE = Path("etc/vee.ini")
AREA_COLUMNS = ("area", "name", "kind", "parent", "summary", "members")
LINK_COLUMNS = ("area", "meter", "role", "direction", "phase")
BALANCE_COLUMNS = ("area", "since", "until", "input", "consumption", "loss", "loss_rate",
                   "members", "complete", "estimated", "intervals")
FINDING_COLUMNS = ("meter", "obis", "rule", "since", "until", "flag", "details")
SERIES_COLUMNS = ("start", "value", "quality", "method", "source")
RANK_COLUMNS = ("area", "loss_rate", "before", "change")
OUTAGE_COLUMNS = ("meter", "since", "until", "minutes", "source", "cut")
AREA_OUTAGE_COLUMNS = ("area", "since", "until", "minutes", "out", "peak", "members", "meters")
EDIT_COLUMNS = ("id", "meter", "obis", "start", "action", "before", "after", "status",
                "requested_by", "requested_at", "decided_by", "decided_at", "reason", "note")
SUSPECTED_COLUMNS = ("area", "since", "until", "cycles", "meters")
COMMS_COLUMNS = ("scope", "key", "jobs", "ok", "failed", "rate", "below")
BELOW_COLUMNS = ("meter", "jobs", "ok", "rate", "last_failed", "last_error")
LOAD_COLUMNS = ("subject", "kind", "day", "intervals", "energy", "peak", "peak_time", "base",
                "average", "load_factor", "capacity", "loading", "overload_minutes", "phase_a",
                "phase_b", "phase_c", "imbalance", "imbalance_peak", "imbalance_time",
                "imbalance_source", "imbalance_network",
                # fep.analysis.load.VOLTAGE_FIELDS (spelt out: the analysis loads lazily)
                "voltage_minutes", "over_voltage_minutes", "under_voltage_minutes",
                "over_voltage_a", "over_voltage_b", "over_voltage_c", "under_voltage_a",
                "under_voltage_b", "under_voltage_c", "voltage_max", "voltage_max_time",
                "voltage_min", "voltage_min_time", "voltage_within")
PROFILE_COLUMNS = ("subject", "days", "time", "demand", "count")
PERIOD_COLUMNS = ("since", "until", "days", "stored_days", "computed_days", "t_med",
                  "history_days", "major_event_days")
RUN_COLUMNS = ("day", "analysis", "reason", "ok", "started", "finished", "summary", "error")
PENDING_COLUMNS = ("day", "meters", "last_noted")
INDEX_COLUMNS = ("customers", "sustained", "momentary", "customer_minutes", "saifi", "saidi",
                 "caidi", "maifi")


def _quality(flags: Any) -> str:
    """``OK`` or the flag names joined by ``|`` (``ESTIMATED|SUSPECT``)."""
    names = [f.name for f in type(flags) if f and f in flags and f.name]
    return "|".join(names) if names else "OK"


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"not a day (YYYY-MM-DD): {text!r}") from None


def _settings(args: argparse.Namespace) -> VeeSettings:
    from fep.analysis.settings import load

    if args.vee:
        return load(args.vee)
    return load(DEFAULT_VEE if DEFAULT_VEE.exists() else None)


async def cmd_areas(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.analysis import areas
    from fep.analysis.store import AnalysisStore

    async def work(store: Any) -> int:
        analysis = AnalysisStore(store)
        network = await analysis.network()
        if args.areas_command == "import":
            try:
                text = Path(args.file).read_text(encoding="utf-8-sig")
            except OSError as e:
                raise ConfigError(f"cannot read: {e.strerror}", file=args.file) from None
            new = areas.read_csv(text, args.file)
            merged = new if args.replace else areas.merge(network, new)
            await analysis.save_network(merged)
            print(f"{len(new.areas)} areas and {len(new.meters)} meters imported from "
                  f"{args.file}")
        elif args.areas_command == "export":
            sys.stdout.write(areas.write_csv(network))
        elif args.areas_command == "list":
            if args.tree:
                print("\n".join(areas.tree_lines(network)))
            else:
                write_rows([{"area": a.id, "name": a.name, "kind": str(a.kind),
                             "parent": a.parent, "summary": len(network.summary(a.id)),
                             "members": len(network.members(a.id))} for a in network.areas],
                           AREA_COLUMNS, args.format)
        else:
            area = network.area(args.area)
            if area is None:
                raise UsageError(f"no area {args.area!r}")
            path = " / ".join(a.id for a in network.path(area.id))
            print(f"{area.id} ({area.kind}) {area.name}: {path}")
            links = network.summary(area.id) + network.members(area.id)
            write_rows([{"area": m.area, "meter": m.meter, "role": str(m.role),
                         "direction": str(m.direction) if m.role == "summary" else "",
                         "phase": m.phase} for m in links], LINK_COLUMNS, args.format)
        return EXIT_OK

    return await with_store(args, work)


async def cmd_vee(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.analysis import jobs
    from fep.analysis.series import day_bounds
    from fep.analysis.store import AnalysisStore

    settings = _settings(args)
    if args.vee_command in ("edit", "edits", "approve", "reject"):
        return await _edits(args, settings)
    day = _day(args.day)

    async def work(store: Any) -> int:
        if args.vee_command == "run":
            try:
                result = await jobs.run_vee(store, settings, day, area=args.area)
            except LookupError as e:
                raise UsageError(str(e.args[0])) from None
            found = ", ".join(f"{k} {v}" for k, v in sorted(result.findings.items())) or "none"
            made = ", ".join(f"{k} {v}" for k, v in sorted(result.estimates.items())) or "none"
            print(f"{day}: {result.meters} meters validated; findings: {found}; "
                  f"estimates: {made}")
        elif args.vee_command == "series":
            rows = await jobs.validated_series(store, settings, args.meter, day)
            write_rows([{"start": r.start, "value": r.value, "quality": _quality(r.quality),
                         "method": r.method, "source": r.source} for r in rows],
                       SERIES_COLUMNS, args.format)
        else:
            since, until = day_bounds(day)
            findings = await AnalysisStore(store).findings(since, until, args.meter)
            write_rows([{"meter": f.meter, "obis": f.obis, "rule": f.rule, "since": f.since,
                         "until": f.until, "flag": _quality(f.flag),
                         "details": " ".join(f"{k}={v}" for k, v in sorted(f.details.items()))}
                        for f in findings], FINDING_COLUMNS, args.format)
        return EXIT_OK

    return await with_store(args, work)


async def _edits(args: argparse.Namespace, settings: VeeSettings) -> int:
    """``fep vee edit|edits|approve|reject``: as the invoking operator (OS user, or the
    API token in FEP_TOKEN), four eyes when ``--config``'s ``[analysis] edit_approval``."""
    from fep.analysis.edits import Editor
    from fep.cli.arguments import parse_time
    from fep.cli.collect import cli_operator
    from fep.config import default_config, load_config

    config = load_config(args.config) if args.config else default_config()
    step = {"edit": "edit", "approve": "edit_approve", "reject": "edit_reject"}.get(
        args.vee_command)
    who = cli_operator(args, step) if step else ""
    value = None
    if args.vee_command == "edit":
        if (args.value is None) == (not args.accept):
            raise UsageError("give --value V to replace, or --accept")
        if args.value is not None:
            try:
                value = Decimal(args.value)
            except InvalidOperation:
                raise UsageError(f"--value: not a number: {args.value!r}") from None

    async def work(store: Any) -> int:
        editor = Editor(store, settings, approval=config.analysis.edit_approval)
        if args.vee_command == "edit":
            done = [await editor.request(args.meter, parse_time(args.start),
                                         reason=args.reason, who=who, value=value,
                                         accept=args.accept)]
        elif args.vee_command == "edits":
            done = await editor.edits(meter=args.meter, status=args.status)
        else:
            done = [await editor.decide(args.id, approve=args.vee_command == "approve",
                                        who=who, note=getattr(args, "reason", "") or "")]
        write_rows([e.as_dict() for e in done], EDIT_COLUMNS, args.format)
        return EXIT_OK

    return await with_store(args, work)


def _month(text: str) -> tuple[date, date]:
    """The first day of a month ``YYYY-MM`` and of the month after it."""
    try:
        first = date.fromisoformat(text + "-01")
    except ValueError:
        raise UsageError(f"not a month (YYYY-MM): {text!r}") from None
    after = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return first, after


async def cmd_balance(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.analysis import jobs

    settings = _settings(args)
    if (args.day is None) == (args.month is None):
        raise UsageError("give --day YYYY-MM-DD or --month YYYY-MM")
    day, end = (_day(args.day), None) if args.day else _month(args.month)
    if args.rank and end is not None:
        raise UsageError("--rank is for a --day")

    async def work(store: Any) -> int:
        try:
            results = await jobs.run_balance(store, settings, day, area=args.area, end=end)
        except LookupError as e:
            raise UsageError(str(e.args[0])) from None
        if args.rank:
            from fep.analysis.balance import rank
            from fep.analysis.series import day_bounds
            from fep.analysis.store import AnalysisStore

            since, _until = day_bounds(day)
            before = [r for r in await AnalysisStore(store).balances(
                since - timedelta(days=1), since) if r.until == since]
            ranked = rank([r.day for r in results], before, by=args.rank)
            write_rows([r.as_dict() for r in ranked], RANK_COLUMNS, args.format)
        else:
            rows = [r.day for r in results] if not args.intervals else [
                row for r in results for row in r.intervals]
            shown = [r.as_dict() for r in rows]
            if args.area and args.format == "table":
                # The tree below --area: each area indented by its depth under it.
                from fep.analysis.store import AnalysisStore

                network = await AnalysisStore(store).network()
                top = len(network.path(args.area))
                for row in shown:
                    depth = len(network.path(str(row["area"]))) - top
                    row["area"] = "  " * depth + str(row["area"])
            write_rows(shown, BALANCE_COLUMNS, args.format)
        for r in results:
            if r.alarm:
                print(f"alarm: {r.alarm}", file=sys.stderr)
        return EXIT_OK

    return await with_store(args, work)


def _outage_period(args: argparse.Namespace) -> tuple[date, date | None]:
    """The day, or the whole UTC days ``[first, end)`` of ``--month`` or of ``--since``
    (included) to ``--until`` (excluded)."""
    given = [n for n, v in (("--day", args.day), ("--month", args.month),
                            ("--since", args.since)) if v]
    if len(given) != 1:
        raise UsageError("give one of --day YYYY-MM-DD, --month YYYY-MM, or --since "
                         "YYYY-MM-DD with --until YYYY-MM-DD")
    if (args.since is None) != (args.until is None):
        raise UsageError("--since and --until go together (--until excluded)")
    if args.day:
        if args.exclude_med:
            raise UsageError("--exclude-med is for a period (--month, --since/--until)")
        return _day(args.day), None
    if args.month:
        return _month(args.month)
    return _day(args.since), _day(args.until)


async def cmd_outages(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.analysis import jobs
    from fep.analysis.settings import _decimal, _duration

    settings = _settings(args)
    day, end = _outage_period(args)
    try:
        momentary = _duration(args.momentary)
        share = _decimal(args.share)
    except ValueError as e:
        raise UsageError(f"--momentary 5m or --share 50 %: {e}") from None
    if not 0 < share <= 1:
        raise UsageError(f"--share must be above 0 and at most 100 %: {args.share!r}")

    async def work(store: Any) -> int:
        period: jobs.PeriodOutageReport | None = None
        try:
            if end is None:
                report = await jobs.run_outages(store, settings, day, area=args.area,
                                                momentary=momentary, share=share)
            else:
                period = await jobs.run_outage_period(store, settings, day, end,
                                                      area=args.area, momentary=momentary,
                                                      share=share,
                                                      exclude_med=args.exclude_med)
        except LookupError as e:
            raise UsageError(str(e.args[0])) from None
        except ValueError as e:
            raise UsageError(str(e)) from None
        if period is not None:
            p = period.period()
            sections: tuple[tuple[str, str, list[dict[str, Any]], tuple[str, ...]], ...] = (
                ("period", "period (until excluded)", [p],
                 PERIOD_COLUMNS if period.med is not None else PERIOD_COLUMNS[:5]),
                ("outage", "outages per meter", [o.as_dict() for o in period.outages],
                 OUTAGE_COLUMNS),
                ("area-outage", "area outages", [a.as_dict() for a in period.areas],
                 AREA_OUTAGE_COLUMNS),
                ("indices", f"indices of the period (momentary: {args.momentary} or less)",
                 [period.indices.as_dict()], INDEX_COLUMNS))
            if period.med is not None:
                sections += (("indices-excluding-med", "indices without the major event "
                              "days", [period.med.indices.as_dict()], INDEX_COLUMNS),)
                if period.med.t_med is None:
                    print("no major event day threshold: fewer than two days with "
                          "sustained interruptions stored in the five years before",
                          file=sys.stderr)
        else:
            sections = (
                ("outage", "outages per meter", [o.as_dict() for o in report.outages],
                 OUTAGE_COLUMNS),
                ("area-outage", "area outages", [a.as_dict() for a in report.areas],
                 AREA_OUTAGE_COLUMNS),
                ("indices", f"indices (momentary: {args.momentary} or less)",
                 [report.indices.as_dict()], INDEX_COLUMNS),
                ("suspected-outage", "suspected outages (communication loss)",
                 [s.as_dict() for s in report.suspected], SUSPECTED_COLUMNS))
        if args.format == "json":
            write_rows([{"record": record, **row} for record, _title, rows, _c in sections
                        for row in rows], ("record",), "json")
            return EXIT_OK
        for n, (_record, title, rows, columns) in enumerate(sections):
            if args.format == "table":
                print(("\n" if n else "") + f"{title}:")
            write_rows(rows, columns, args.format)
        return EXIT_OK

    return await with_store(args, work)


def _period(args: argparse.Namespace) -> tuple[datetime, datetime]:
    """``--from``/``--to`` (a day YYYY-MM-DD or an ISO time, UTC); by default yesterday
    (UTC); ``--to`` defaults to a day after ``--from``."""
    from fep.cli.arguments import parse_time

    def when(text: str) -> datetime:
        if len(text) == 10:
            return datetime.combine(_day(text), time(0), tzinfo=UTC)
        return parse_time(text)

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = when(args.since) if args.since else today - timedelta(days=1)
    until = when(args.until) if args.until else since + timedelta(days=1)
    if until <= since:
        raise UsageError(f"the period {since:%Y-%m-%dT%H:%M}Z..{until:%Y-%m-%dT%H:%M}Z is "
                         "empty")
    return since, until


async def cmd_comms(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.analysis import jobs
    from fep.analysis.daemon import share

    since, until = _period(args)
    try:
        target = share(args.target)
    except ValueError as e:
        raise UsageError(f"--target: {e}") from None

    async def work(store: Any) -> int:
        try:
            report = await jobs.run_comms(store, since, until, area=args.area, target=target)
        except LookupError as e:
            raise UsageError(str(e.args[0])) from None
        if args.below:
            write_rows([m.as_dict() for m in report.below], BELOW_COLUMNS, args.format)
        else:
            write_rows([r.as_dict() for r in report.rows
                        if args.scope is None or r.scope == args.scope], COMMS_COLUMNS,
                       args.format)
        return EXIT_OK

    return await with_store(args, work)


async def cmd_analysis(reactor: IFepReactor, args: argparse.Namespace) -> int:
    """`fep analysis runs`: each analysis of each day the service ran, with its reason
    (scheduled, collection, missed, re-collection), summary or error; `fep analysis
    pending`: the days re-collected since their analysis, waiting for it."""
    import json

    from fep.analysis.store import AnalysisStore

    async def work(store: Any) -> int:
        analysis = AnalysisStore(store)
        if args.analysis_command == "pending":
            write_rows([{"day": day.isoformat(), "meters": len(meters),
                         "last_noted": max(meters.values())}
                        for day, meters in sorted((await analysis.pending()).items())],
                       PENDING_COLUMNS, args.format)
            return EXIT_OK
        today = datetime.now(UTC).date()
        first = _day(args.since) if args.since else today - timedelta(days=7)
        end = _day(args.until) if args.until else today + timedelta(days=1)
        if end <= first:
            raise UsageError(f"the period {first}..{end} is empty")
        write_rows([{"day": r.day.isoformat(), "analysis": r.analysis, "reason": r.reason,
                     "ok": "yes" if r.ok else "no", "started": r.started_at,
                     "finished": r.finished_at,
                     "summary": json.dumps(dict(r.summary), sort_keys=True), "error": r.error}
                    for r in await analysis.runs(first, end)], RUN_COLUMNS, args.format)
        return EXIT_OK

    return await with_store(args, work)


def load_days(since: str | None, until: str | None) -> tuple[date, date]:
    """``--from``/``--to`` as days (``--to`` excluded): yesterday (UTC) by default, a day
    after ``--from`` without ``--to``."""
    today = datetime.now(UTC).date()
    first = _day(since) if since else today - timedelta(days=1)
    end = _day(until) if until else first + timedelta(days=1)
    if end <= first:
        raise UsageError(f"the period {first}..{end} is empty")
    return first, end


async def cmd_load(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.analysis import jobs

    settings = _settings(args)
    if args.area and args.meter:
        raise UsageError("give --area or --meter, not both")
    first, end = load_days(args.since, args.until)

    async def work(store: Any) -> int:
        try:
            report = await jobs.run_load(store, settings, first, end, area=args.area,
                                         meter=args.meter, profile=args.profile,
                                         members=args.members)
        except LookupError as e:
            raise UsageError(str(e.args[0])) from None
        if args.profile:
            write_rows([p.as_dict() for p in report.profile], PROFILE_COLUMNS, args.format)
        else:
            write_rows([d.as_dict() for d in report.days], LOAD_COLUMNS, args.format)
        return EXIT_OK

    return await with_store(args, work)


def add_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Register areas, vee and balance with the `fep` parser."""
    fmt = {"choices": ("json", "csv", "table"), "default": "table"}
    vee_file = {"help": f"the vee.ini (default: {DEFAULT_VEE} when present, else built-in "
                        "defaults)"}

    areas = sub.add_parser("areas", help="the network model: areas and their meters")
    asub = areas.add_subparsers(dest="areas_command", required=True, parser_class=parser_class)
    imp = asub.add_parser("import", help="add or replace areas from a CSV file "
                          "(area,name,kind,parent,meter,role,direction,phase)")
    imp.add_argument("file")
    imp.add_argument("--replace", action="store_true",
                     help="the file is the whole network (default: merge by area)")
    asub.add_parser("export", help="the network as CSV (the import format)")
    lst = asub.add_parser("list", help="list the areas")
    lst.add_argument("--tree", action="store_true", help="as an indented tree")
    lst.add_argument("--format", **fmt)
    show = asub.add_parser("show", help="an area's place in the tree and its meters")
    show.add_argument("area")
    show.add_argument("--format", **fmt)
    areas.set_defaults(run=cmd_areas)

    vee = sub.add_parser("vee", help="validation and estimation of interval data")
    vsub = vee.add_subparsers(dest="vee_command", required=True, parser_class=parser_class)
    run = vsub.add_parser("run", help="validate and estimate one day")
    run.add_argument("--day", required=True, help="YYYY-MM-DD (UTC)")
    run.add_argument("--area", help="only the meters of this area and the areas below it")
    run.add_argument("--vee", **vee_file)
    exc = vsub.add_parser("exceptions", help="the validation exceptions of a day")
    exc.add_argument("--day", required=True, help="YYYY-MM-DD (UTC)")
    exc.add_argument("--meter")
    exc.add_argument("--vee", **vee_file)
    exc.add_argument("--format", **fmt)
    series = vsub.add_parser("series", help="a meter's day as analysed: real values, else "
                             "estimates, with their quality")
    series.add_argument("--meter", required=True)
    series.add_argument("--day", required=True, help="YYYY-MM-DD (UTC)")
    series.add_argument("--vee", **vee_file)
    series.add_argument("--format", **fmt)
    edit = vsub.add_parser("edit", help="replace or accept an interval's value, with a "
                           "reason (audited; approved by another operator when [analysis] "
                           "edit_approval)")
    edit.add_argument("--meter", required=True)
    edit.add_argument("--start", required=True, help="the interval's start (ISO, UTC)")
    edit.add_argument("--value", help="the new value")
    edit.add_argument("--accept", action="store_true", help="accept the value as it is")
    edit.add_argument("--reason", required=True)
    edit.add_argument("--by", help="only your own identity (OS user or FEP_TOKEN's name)")
    edit.add_argument("--vee", **vee_file)
    edit.add_argument("--format", **fmt)
    edits = vsub.add_parser("edits", help="operators' edits, newest first")
    edits.add_argument("--meter")
    edits.add_argument("--status", choices=("pending", "applied", "rejected"))
    edits.add_argument("--vee", **vee_file)
    edits.add_argument("--format", **fmt)
    for name, helptext in (("approve", "approve an edit someone else asked for"),
                           ("reject", "reject an edit someone else asked for")):
        step = vsub.add_parser(name, help=helptext)
        step.add_argument("id", type=int)
        if name == "reject":
            step.add_argument("--reason", required=True)
        step.add_argument("--by", help="only your own identity (OS user or FEP_TOKEN's name)")
        step.add_argument("--vee", **vee_file)
        step.add_argument("--format", **fmt)
    vee.set_defaults(run=cmd_vee)

    balance = sub.add_parser("balance", help="energy balance and line loss of areas for a day")
    balance.add_argument("--day", help="YYYY-MM-DD (UTC)")
    balance.add_argument("--month", help="YYYY-MM (UTC): the month's balance, no alarm")
    balance.add_argument("--area", help="one area and each area below it with summary meters, "
                         "as a tree (default: every area with summary meters)")
    balance.add_argument("--intervals", action="store_true", help="one row per interval")
    balance.add_argument("--rank", choices=("loss", "change"),
                         help="the areas ranked by loss rate, or by its change since the day "
                         "before (as stored by its own balance run)")
    balance.add_argument("--vee", **vee_file)
    balance.add_argument("--format", **fmt)
    balance.set_defaults(run=cmd_balance)

    outages = sub.add_parser("outages", help="outages of a day or a period per meter and "
                             "per area, and the indices SAIFI, SAIDI, CAIDI, MAIFI")
    outages.add_argument("--day", help="YYYY-MM-DD (UTC)")
    outages.add_argument("--month", help="YYYY-MM (UTC): the month's whole days")
    outages.add_argument("--since", help="YYYY-MM-DD (UTC), the period's first day")
    outages.add_argument("--until", help="YYYY-MM-DD (UTC), the day after the period "
                         "(excluded); at most 366 days after --since")
    outages.add_argument("--exclude-med", action="store_true",
                         help="a period's major event days (IEEE 1366 2.5 beta, from the "
                         "stored daily SAIDI of the five years before) and its indices "
                         "without them")
    outages.add_argument("--area", help="only the members of this area and the areas below it")
    outages.add_argument("--momentary", default="5m",
                         help="the longest momentary interruption (default 5m; IEEE 1366)")
    outages.add_argument("--share", default="50 %",
                         help="the share of an area's members out at once that makes an "
                         "area outage (default 50 %%)")
    outages.add_argument("--vee", **vee_file)
    outages.add_argument("--format", **fmt)
    outages.set_defaults(run=cmd_outages)

    comms = sub.add_parser("comms", help="collection success rate per meter, area, channel "
                           "and concentrator against the target, from the jobs' outcomes")
    comms.add_argument("--from", dest="since",
                       help="YYYY-MM-DD or ISO time, UTC (default: yesterday)")
    comms.add_argument("--to", dest="until", help="YYYY-MM-DD or ISO time, UTC, excluded "
                       "(default: a day after --from)")
    comms.add_argument("--area", help="only the meters of this area and the areas below it")
    comms.add_argument("--below", action="store_true",
                       help="the meters below the target, worst first, with their last error")
    comms.add_argument("--scope", choices=("all", "area", "channel", "route",
                                            "concentrator", "meter"),
                       help="only the rows of one scope")
    comms.add_argument("--target", default="98 %",
                       help="the success-rate target (default 98 %%)")
    comms.add_argument("--format", **fmt)
    comms.set_defaults(run=cmd_comms)

    service = sub.add_parser("analysis", help="the analysis service's runs (with their "
                             "reason) and the re-collected days waiting for it")
    ssub = service.add_subparsers(dest="analysis_command", required=True,
                                  parser_class=parser_class)
    runs = ssub.add_parser("runs", help="each analysis of each day: reason, summary, error")
    runs.add_argument("--from", dest="since", help="YYYY-MM-DD (UTC; default: a week ago)")
    runs.add_argument("--to", dest="until", help="YYYY-MM-DD, excluded (default: tomorrow)")
    runs.add_argument("--format", **fmt)
    pending = ssub.add_parser("pending", help="days re-collected since their analysis, "
                              "waiting for it")
    pending.add_argument("--format", **fmt)
    service.set_defaults(run=cmd_analysis)

    load = sub.add_parser("load", help="daily load of meters and areas: peak, base, load "
                          "factor, transformer loading, phase imbalance (measured or "
                          "estimated), over- and under-voltage minutes, typical day")
    load.add_argument("--from", dest="since", help="YYYY-MM-DD (UTC; default: yesterday)")
    load.add_argument("--to", dest="until",
                      help="YYYY-MM-DD, excluded (default: a day after --from)")
    load.add_argument("--area", help="this area and each area below it (default: every area)")
    load.add_argument("--meter", help="one meter")
    load.add_argument("--members", action="store_true",
                      help="each area's member meters too, after the area's row")
    load.add_argument("--profile", action="store_true",
                      help="the typical day (weekday and weekend) instead of the days")
    load.add_argument("--vee", **vee_file)
    load.add_argument("--format", **fmt)
    load.set_defaults(run=cmd_load)

