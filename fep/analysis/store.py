"""The analysis store: areas, validation exceptions and flags, estimates and balances
(sql/*/0011_analysis.sql) on the store's own connection, SQLite or PostgreSQL.

Written like the job store (fep.collect.jobstore): each operation a generator of queries
(``Q``) run in one transaction by the dialect's driver. Times are bound as the dialect keeps
them (UTC text for SQLite, aware datetimes for PostgreSQL), energy as decimal text or
numeric, so the tables sit beside ``intervals`` and compare with it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred

from fep.analysis.areas import Area, AreaKind, AreaMeter, Direction, Network, Role
from fep.analysis.balance import BalanceRow
from fep.analysis.comms import JobOutcome
from fep.analysis.edits import Edit
from fep.analysis.estimate import Estimate
from fep.analysis.load import Sample
from fep.analysis.quality import DayQuality
from fep.analysis.rules import Finding
from fep.analysis.series import Point, decimal, in_base_unit
from fep.collect import jobstore
from fep.collect.clock import TIME_SET_RESULT
from fep.collect.jobstore import Op, Q
from fep.model import EventKind, MeterEvent, Quality, Severity, utcnow
from fep.store.rows import decode_value, parse_time, text_time

T = TypeVar("T")


class _Dialect:
    """How values are bound and read back in one dialect."""

    def __init__(self, name: str) -> None:
        self.name = name

    def time(self, value: datetime) -> Any:
        return text_time(value.astimezone(UTC)) if self.name == "sqlite" else value

    def number(self, value: Decimal | None) -> Any:
        if value is None:
            return None
        return str(value) if self.name == "sqlite" else value

    def days(self, since: datetime, until: datetime) -> tuple[str, tuple[Any, ...]]:
        """A condition on the intervals' UTC day, beside one on start in ``[since, until)``:
        on PostgreSQL the compacted days outside it go unread (interval_days is partitioned
        and keyed by day); nothing on SQLite."""
        if self.name == "sqlite":
            return "", ()
        return (" AND start_day >= date_trunc('day', ?::timestamptz, 'UTC')"
                " AND start_day < ?", (since.astimezone(UTC), until.astimezone(UTC)))

    @staticmethod
    def time_of(value: Any) -> datetime:
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return parse_time(value)

    @staticmethod
    def number_of(value: Any) -> Decimal | None:
        return None if value is None else Decimal(str(value))


def _marks(n: int) -> str:
    return ", ".join("?" * n)


# Meters bound per statement: well below SQLite's limit of host parameters.
CHUNK = 500


def _chunks(meters: Sequence[str]) -> list[Sequence[str]]:
    return [meters[i:i + CHUNK] for i in range(0, len(meters), CHUNK)]


# ---------------------------------------------------------------------------
# Areas
# ---------------------------------------------------------------------------


def _network(d: _Dialect) -> Op[Network]:
    areas = yield Q("SELECT id, name, kind, parent, capacity FROM areas ORDER BY id",
                    fetch=True)
    links = yield Q("SELECT area, meter, role, direction, phase FROM area_meters"
                    " ORDER BY area, role DESC, meter", fetch=True)
    return Network(
        tuple(Area(r[0], r[1], AreaKind(r[2]), r[3], d.number_of(r[4])) for r in areas),
        tuple(AreaMeter(r[0], r[1], Role(r[2]), Direction(r[3]), r[4]) for r in links))


def _save_network(d: _Dialect, network: Network) -> Op[int]:
    """Replace the whole network with ``network`` (already merged and checked)."""
    yield Q("DELETE FROM area_meters")
    yield Q("DELETE FROM areas")
    if network.areas:
        yield Q("INSERT INTO areas (id, name, kind, parent, capacity) VALUES (?, ?, ?, ?, ?)",
                many=[(a.id, a.name, str(a.kind), a.parent, d.number(a.capacity))
                      for a in network.areas])
    if network.meters:
        yield Q("INSERT INTO area_meters (area, meter, role, direction, phase)"
                " VALUES (?, ?, ?, ?, ?)",
                many=[(m.area, m.meter, str(m.role), str(m.direction), m.phase)
                      for m in network.meters])
    return len(network.areas)


# ---------------------------------------------------------------------------
# Intervals and registers (read only: the store's own tables)
# ---------------------------------------------------------------------------


def _intervals(d: _Dialect, meters: Sequence[str], obis: str, since: datetime,
               until: datetime) -> Op[dict[str, list[Point]]]:
    out: dict[str, list[Point]] = {m: [] for m in meters}
    days, bounds = d.days(since, until)
    for chunk in _chunks(meters):
        rows = yield Q(
            "SELECT meter, start_time, value, value_text, value_type, status, scaler"
            f" FROM intervals WHERE obis = ? AND start_time >= ? AND start_time < ?{days}"
            f" AND meter IN ({_marks(len(chunk))}) ORDER BY meter, start_time",
            (obis, d.time(since), d.time(until), *bounds, *chunk), fetch=True)
        for r in rows:
            out[r[0]].append(Point(d.time_of(r[1]), in_base_unit(
                decimal(decode_value(r[2], r[3], r[4])), r[6]), Quality(r[5])))
    return out



_UNUSABLE = Quality.DATA_NOT_VALID | Quality.MISSING


def _samples(d: _Dialect, meters: Sequence[str], codes: Sequence[str], since: datetime,
             until: datetime) -> Op[dict[str, dict[str, list[Sample]]]]:
    """The intervals of ``codes`` (measured quantities: voltage, current, power) of each
    meter, each with its own length and the stored scaler applied; values the meter marked
    not valid or missing, and values that are no finite number, are left out."""
    out: dict[str, dict[str, list[Sample]]] = {m: {} for m in meters}
    if not codes:
        return out
    days, bounds = d.days(since, until)
    for chunk in _chunks(meters):
        rows = yield Q(
            "SELECT meter, obis, start_time, period_s, value, value_text, value_type, status,"
            " scaler FROM intervals"
            f" WHERE obis IN ({_marks(len(codes))}) AND start_time >= ? AND start_time < ?"
            f"{days} AND meter IN ({_marks(len(chunk))}) ORDER BY meter, obis, start_time",
            (*codes, d.time(since), d.time(until), *bounds, *chunk), fetch=True)
        for r in rows:
            value = decimal(decode_value(r[4], r[5], r[6]))
            if (value is None or not value.is_finite() or Quality(r[7]) & _UNUSABLE
                    or int(r[3]) <= 0):
                continue
            out[r[0]].setdefault(r[1], []).append(Sample(
                d.time_of(r[2]), timedelta(seconds=int(r[3])), value.scaleb(int(r[8] or 0))))
    return out


def _registers(d: _Dialect, meters: Sequence[str], obis: str, since: datetime,
               until: datetime) -> Op[dict[str, list[Point]]]:
    out: dict[str, list[Point]] = {m: [] for m in meters}
    for chunk in _chunks(meters):
        rows = yield Q(
            "SELECT meter, read_at, value, value_text, value_type, quality, scaler"
            " FROM readings WHERE obis = ? AND read_at >= ? AND read_at <= ?"
            f" AND meter IN ({_marks(len(chunk))}) ORDER BY meter, read_at",
            (obis, d.time(since), d.time(until), *chunk), fetch=True)
        for r in rows:
            out[r[0]].append(Point(d.time_of(r[1]), in_base_unit(
                decimal(decode_value(r[2], r[3], r[4])), r[6]), Quality(r[5])))
    return out


def _power_events(d: _Dialect, meters: Sequence[str], since: datetime, until: datetime
                  ) -> Op[dict[str, list[MeterEvent]]]:
    """Each meter's power-outage and power-restored events in ``[since, until)`` and its last
    one before ``since`` (whether it was already out)."""
    out: dict[str, list[MeterEvent]] = {m: [] for m in meters}
    kinds = (str(EventKind.POWER_OUTAGE), str(EventKind.POWER_RESTORED))
    columns = "e.meter, e.code, e.kind, e.severity, e.time, e.text, e.source"
    for chunk in _chunks(meters):
        marks = _marks(len(chunk))
        rows = yield Q(
            f"SELECT {columns} FROM events e WHERE e.kind IN (?, ?) AND e.time >= ?"
            f" AND e.time < ? AND e.meter IN ({marks})",
            (*kinds, d.time(since), d.time(until), *chunk), fetch=True)
        before = yield Q(
            f"SELECT {columns} FROM events e JOIN (SELECT meter, MAX(time) AS last"
            f" FROM events WHERE kind IN (?, ?) AND time < ? AND meter IN ({marks})"
            " GROUP BY meter) b ON e.meter = b.meter AND e.time = b.last"
            " WHERE e.kind IN (?, ?)",
            (*kinds, d.time(since), *chunk, *kinds), fetch=True)
        for r in list(before) + list(rows):
            out[r[0]].append(MeterEvent(r[0], r[1], EventKind(r[2]), Severity(r[3]),
                                        d.time_of(r[4]), r[5], source=r[6]))
    for events in out.values():
        events.sort(key=lambda e: e.time)
    return out


_JOB_LATENESS = timedelta(days=1)


def _clock_evidence(d: _Dialect, meters: Sequence[str], since: datetime, until: datetime
                    ) -> Op[dict[str, tuple[list[tuple[datetime, str]], list[MeterEvent]]]]:
    """Each meter's clock checks in ``[since, until)``: the results of its clock jobs that
    ended done (the clock task's and ``time-sync`` and ``time-set`` commands':
    fep.collect.clock's texts, with the time the job ended) and its clock-set and
    clock-deviation events."""
    out: dict[str, tuple[list[tuple[datetime, str]], list[MeterEvent]]] = {
        m: ([], []) for m in meters}
    kinds = (str(EventKind.CLOCK_SET), str(EventKind.CLOCK_DEVIATION))
    # A job ends after it is due, and within a day of it (jobs_meter index on due).
    for chunk in _chunks(meters):
        marks = _marks(len(chunk))
        jobs = yield Q(
            "SELECT meter, finished_at, result FROM jobs WHERE status = 'done'"
            f" AND meter IN ({marks}) AND due >= ? AND due < ? AND finished_at >= ?"
            " AND finished_at < ? AND (result LIKE 'clock deviation %' OR result = ?)"
            " ORDER BY finished_at, id",
            (*chunk, (since - _JOB_LATENESS).timestamp(), until.timestamp(), since.timestamp(),
             until.timestamp(), TIME_SET_RESULT), fetch=True)
        for r in jobs:
            out[r[0]][0].append((datetime.fromtimestamp(float(r[1]), UTC), r[2]))
        events = yield Q(
            "SELECT meter, code, kind, severity, time, text, source FROM events"
            f" WHERE kind IN (?, ?) AND time >= ? AND time < ? AND meter IN ({marks})"
            " ORDER BY meter, time",
            (*kinds, d.time(since), d.time(until), *chunk), fetch=True)
        for r in events:
            out[r[0]][1].append(MeterEvent(r[0], r[1], EventKind(r[2]), Severity(r[3]),
                                           d.time_of(r[4]), r[5], source=r[6]))
    return out


def _serials(d: _Dialect, meters: Sequence[str], obis: str, since: datetime, until: datetime
             ) -> Op[dict[str, list[tuple[datetime, str]]]]:
    """The serial numbers each meter reported (readings of ``obis``) in ``[since, until]``,
    and the last one it reported before ``since`` (which meter was there at the start)."""
    out: dict[str, list[tuple[datetime, str]]] = {m: [] for m in meters}
    columns = "r.meter, r.read_at, r.value, r.value_text, r.value_type"
    for chunk in _chunks(meters):
        marks = _marks(len(chunk))
        before = yield Q(
            f"SELECT {columns} FROM readings r JOIN (SELECT meter, MAX(read_at) AS last"
            f" FROM readings WHERE obis = ? AND read_at < ? AND meter IN ({marks})"
            " GROUP BY meter) b ON r.meter = b.meter AND r.read_at = b.last WHERE r.obis = ?",
            (obis, d.time(since), *chunk, obis), fetch=True)
        rows = yield Q(
            f"SELECT {columns} FROM readings r WHERE r.obis = ? AND r.read_at >= ?"
            f" AND r.read_at <= ? AND r.meter IN ({marks}) ORDER BY r.meter, r.read_at",
            (obis, d.time(since), d.time(until), *chunk), fetch=True)
        for r in list(before) + list(rows):
            value = decode_value(r[2], r[3], r[4])
            if value is not None:
                out[r[0]].append((d.time_of(r[1]), str(value).strip()))
    return out


# ---------------------------------------------------------------------------
# Validation results
# ---------------------------------------------------------------------------


def _save_validation(d: _Dialect, meters: Sequence[str], obis: str, since: datetime,
                     until: datetime, findings: Sequence[Finding],
                     flags: Mapping[tuple[str, str, datetime], Quality], now: datetime
                     ) -> Op[int]:
    """Replace the meters' findings and flags of ``[since, until)`` by a new run's."""
    for chunk in _chunks(meters):
        marks = _marks(len(chunk))
        yield Q("DELETE FROM validation_exceptions WHERE obis = ? AND since >= ?"
                f" AND since < ? AND meter IN ({marks})",
                (obis, d.time(since), d.time(until), *chunk))
        yield Q("DELETE FROM interval_flags WHERE obis = ? AND start_time >= ?"
                f" AND start_time < ? AND meter IN ({marks})",
                (obis, d.time(since), d.time(until), *chunk))
    # One row per (meter, channel, rule, since): a statement may not update a row twice.
    findings = list({(f.meter, f.obis, f.rule, f.since): f for f in findings}.values())
    if findings:
        yield Q("INSERT INTO validation_exceptions (meter, obis, rule, since, until, flag,"
                " details, found_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (meter, obis, rule, since) DO UPDATE SET until = excluded.until,"
                " flag = excluded.flag, details = excluded.details,"
                " found_at = excluded.found_at",
                many=[(f.meter, f.obis, f.rule, d.time(f.since), d.time(f.until), int(f.flag),
                       json.dumps(dict(f.details), sort_keys=True), d.time(now))
                      for f in findings])
    if flags:
        yield Q("INSERT INTO interval_flags (meter, obis, start_time, flags)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (meter, obis, start_time)"
                " DO UPDATE SET flags = excluded.flags",
                many=[(m, o, d.time(t), int(q)) for (m, o, t), q in sorted(flags.items())])
    return len(findings)


def _findings(d: _Dialect, meter: str | None, since: datetime, until: datetime
              ) -> Op[list[Finding]]:
    sql = ("SELECT rule, meter, obis, since, until, flag, details FROM validation_exceptions"
           " WHERE since < ? AND until > ?")
    params: list[Any] = [d.time(until), d.time(since)]
    if meter is not None:
        sql += " AND meter = ?"
        params.append(meter)
    rows = yield Q(sql + " ORDER BY meter, since, rule", params, fetch=True)
    return [Finding(r[0], r[1], r[2], d.time_of(r[3]), d.time_of(r[4]), Quality(r[5]),
                    json.loads(r[6])) for r in rows]


def _flags(d: _Dialect, meter: str, obis: str, since: datetime, until: datetime
           ) -> Op[dict[datetime, Quality]]:
    rows = yield Q("SELECT start_time, flags FROM interval_flags WHERE meter = ? AND obis = ?"
                   " AND start_time >= ? AND start_time < ? ORDER BY start_time",
                   (meter, obis, d.time(since), d.time(until)), fetch=True)
    return {d.time_of(r[0]): Quality(r[1]) for r in rows}



def _flagged(d: _Dialect, meters: Sequence[str], obis: str, since: datetime, until: datetime,
             flag: Quality) -> Op[set[tuple[str, datetime]]]:
    """The intervals (meter, start) of ``[since, until)`` whose flags include ``flag``."""
    out: set[tuple[str, datetime]] = set()
    for chunk in _chunks(meters):
        rows = yield Q("SELECT meter, start_time FROM interval_flags WHERE obis = ?"
                       " AND start_time >= ? AND start_time < ? AND (flags & ?) <> 0"
                       f" AND meter IN ({_marks(len(chunk))})",
                       (obis, d.time(since), d.time(until), int(flag), *chunk), fetch=True)
        out |= {(r[0], d.time_of(r[1])) for r in rows}
    return out


# ---------------------------------------------------------------------------
# Estimates
# ---------------------------------------------------------------------------


def _save_estimates(d: _Dialect, meters: Sequence[str], obis: str, since: datetime,
                    until: datetime, period: timedelta, estimates: Sequence[Estimate],
                    now: datetime) -> Op[int]:
    """Replace the meters' estimates of ``[since, until)`` by a new run's (estimates that a
    re-collected real value made needless are so removed)."""
    for chunk in _chunks(meters):
        yield Q("DELETE FROM estimates WHERE obis = ? AND start_time >= ? AND start_time < ?"
                f" AND meter IN ({_marks(len(chunk))})",
                (obis, d.time(since), d.time(until), *chunk))
    if estimates:
        yield Q("INSERT INTO estimates (meter, obis, start_time, period_s, value, method,"
                " source, made_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (meter, obis, start_time) DO UPDATE SET value = excluded.value,"
                " method = excluded.method, source = excluded.source,"
                " made_at = excluded.made_at",
                many=[(e.meter, e.obis, d.time(e.start), int(period.total_seconds()),
                       d.number(e.value), e.method, e.source, d.time(now)) for e in estimates])
    return len(estimates)


def _estimates(d: _Dialect, meters: Sequence[str], obis: str, since: datetime,
               until: datetime) -> Op[dict[str, list[Estimate]]]:
    out: dict[str, list[Estimate]] = defaultdict(list)
    for chunk in _chunks(meters):
        rows = yield Q("SELECT meter, obis, start_time, value, method, source FROM estimates"
                       " WHERE obis = ? AND start_time >= ? AND start_time < ?"
                       f" AND meter IN ({_marks(len(chunk))}) ORDER BY meter, start_time",
                       (obis, d.time(since), d.time(until), *chunk), fetch=True)
        for r in rows:
            value = d.number_of(r[3])
            assert value is not None
            out[r[0]].append(Estimate(r[0], r[1], d.time_of(r[2]), value, r[4], r[5]))
    return out


# ---------------------------------------------------------------------------
# Balances
# ---------------------------------------------------------------------------

_BALANCE_COLUMNS = ("area, since, until, input, consumption, loss, loss_rate, members,"
                    " complete, estimated, intervals")


def _save_balances(d: _Dialect, rows: Sequence[BalanceRow], now: datetime) -> Op[int]:
    if rows:
        yield Q(f"INSERT INTO balances ({_BALANCE_COLUMNS}, computed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (area, since, until) DO UPDATE SET input = excluded.input,"
                " consumption = excluded.consumption, loss = excluded.loss,"
                " loss_rate = excluded.loss_rate, members = excluded.members,"
                " complete = excluded.complete, estimated = excluded.estimated,"
                " intervals = excluded.intervals, computed_at = excluded.computed_at",
                many=[(r.area, d.time(r.since), d.time(r.until), d.number(r.input),
                       d.number(r.consumption), d.number(r.loss), d.number(r.loss_rate),
                       r.members, d.number(r.complete), d.number(r.estimated), r.intervals,
                       d.time(now)) for r in rows])
    return len(rows)


def _balances(d: _Dialect, area: str | None, since: datetime, until: datetime
              ) -> Op[list[BalanceRow]]:
    sql = f"SELECT {_BALANCE_COLUMNS} FROM balances WHERE since >= ? AND since < ?"
    params: list[Any] = [d.time(since), d.time(until)]
    if area is not None:
        sql += " AND area = ?"
        params.append(area)
    rows = yield Q(sql + " ORDER BY area, since", params, fetch=True)

    def n(value: Any) -> Decimal:
        found = d.number_of(value)
        assert found is not None
        return found

    return [BalanceRow(r[0], d.time_of(r[1]), d.time_of(r[2]), n(r[3]), n(r[4]), n(r[5]),
                       d.number_of(r[6]), int(r[7]), n(r[8]), n(r[9]), int(r[10]))
            for r in rows]


# ---------------------------------------------------------------------------
# Interval quality (sql/*/0017_interval_quality.sql)
# ---------------------------------------------------------------------------

_QUALITY_COUNTS = "intervals, valid, suspect, estimated, edited, missing"


def _save_quality(d: _Dialect, obis: str, day: date, meters: Sequence[DayQuality],
                  ids: Sequence[str], now: datetime) -> Op[int]:
    """Replace the day's counts of the meters ``ids`` by ``meters`` (one per meter, in the
    order of ``ids``)."""
    for chunk in _chunks(ids):
        yield Q("DELETE FROM interval_quality WHERE obis = ? AND day = ?"
                f" AND meter IN ({_marks(len(chunk))})", (obis, day.isoformat(), *chunk))
    if meters:
        yield Q(f"INSERT INTO interval_quality (meter, obis, day, {_QUALITY_COUNTS},"
                " computed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                many=[(m, obis, day.isoformat(), q.intervals, q.valid, q.suspect,
                       q.estimated, q.edited, q.missing, d.time(now))
                      for m, q in zip(ids, meters, strict=True)])
    return len(meters)


def _sum_quality(d: _Dialect, obis: str, day: date, now: datetime) -> Op[DayQuality]:
    """Write the day's sum over its meters' counts (one day's rows: read once per run)."""
    rows = yield Q("SELECT COUNT(*), SUM(intervals), SUM(valid), SUM(suspect),"
                   " SUM(estimated), SUM(edited), SUM(missing) FROM interval_quality"
                   " WHERE obis = ? AND day = ?", (obis, day.isoformat()), fetch=True)
    found = DayQuality(day, *(int(v or 0) for v in rows[0]))
    yield Q("DELETE FROM interval_quality_days WHERE obis = ? AND day = ?",
            (obis, day.isoformat()))
    yield Q(f"INSERT INTO interval_quality_days (obis, day, meters, {_QUALITY_COUNTS},"
            " computed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (obis, day.isoformat(), found.meters, found.intervals, found.valid,
             found.suspect, found.estimated, found.edited, found.missing, d.time(now)))
    return found


def _quality_days(d: _Dialect, obis: str, since: date, until: date) -> Op[list[DayQuality]]:
    rows = yield Q(f"SELECT day, meters, {_QUALITY_COUNTS} FROM interval_quality_days"
                   " WHERE obis = ? AND day >= ? AND day < ? ORDER BY day",
                   (obis, since.isoformat(), until.isoformat()), fetch=True)
    return [DayQuality(date.fromisoformat(r[0]), *(int(v) for v in r[1:])) for r in rows]


# ---------------------------------------------------------------------------
# Job outcomes (read only: the collection engine's table, sql/*/0002_collect.sql)
# ---------------------------------------------------------------------------


def _job_outcomes(d: _Dialect, since: datetime, until: datetime) -> Op[list[JobOutcome]]:
    """The jobs that ended in ``[since, until)``, commands' jobs left out."""
    rows = yield Q("SELECT meter, route, task, due, finished_at, status, error FROM jobs"
                   " WHERE command IS NULL AND status IN ('done', 'failed', 'missed')"
                   " AND finished_at >= ? AND finished_at < ? ORDER BY finished_at, id",
                   (since.timestamp(), until.timestamp()), fetch=True)
    return [JobOutcome(r[0], r[1], r[2], datetime.fromtimestamp(float(r[3]), UTC),
                       datetime.fromtimestamp(float(r[4]), UTC), r[5] == "done", r[5], r[6])
            for r in rows]


# ---------------------------------------------------------------------------
# The analysis service's runs and stored outages (sql/*/0012_analysis_runs.sql)
# ---------------------------------------------------------------------------


@attrs.frozen
class RunRecord:
    day: date
    analysis: str
    started_at: datetime
    finished_at: datetime | None
    ok: bool
    summary: Mapping[str, Any]
    error: str | None
    # Why it ran (migration 0018): scheduled, collection, missed or re-collection.
    reason: str = "scheduled"


def _save_run(d: _Dialect, run: RunRecord) -> Op[None]:
    yield Q("INSERT INTO analysis_runs (day, analysis, started_at, finished_at, ok, summary,"
            " error, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, analysis) DO"
            " UPDATE SET started_at = excluded.started_at, finished_at = excluded.finished_at,"
            " ok = excluded.ok, summary = excluded.summary, error = excluded.error,"
            " reason = excluded.reason",
            (run.day.isoformat(), run.analysis, d.time(run.started_at),
             None if run.finished_at is None else d.time(run.finished_at), int(run.ok),
             json.dumps(dict(run.summary), sort_keys=True, default=str), run.error,
             run.reason))


def _runs(d: _Dialect, since: date, until: date) -> Op[list[RunRecord]]:
    rows = yield Q("SELECT day, analysis, started_at, finished_at, ok, summary, error, reason"
                   " FROM analysis_runs WHERE day >= ? AND day < ? ORDER BY day, analysis",
                   (since.isoformat(), until.isoformat()), fetch=True)
    return [RunRecord(date.fromisoformat(r[0]), r[1], d.time_of(r[2]),
                      None if r[3] is None else d.time_of(r[3]), bool(r[4]), json.loads(r[5]),
                      r[6], r[7]) for r in rows]


# Days re-collected since they were analysed, waiting for their analysis (migration 0018):
# per day, each meter and when it was last noted.
Pending = dict[date, dict[str, datetime]]


def _note_pending(d: _Dialect, notes: Sequence[tuple[date, str, datetime]]) -> Op[None]:
    for day, meter, at in notes:
        yield Q("INSERT INTO analysis_pending (day, meter, noted_at) VALUES (?, ?, ?)"
                " ON CONFLICT (day, meter) DO UPDATE SET noted_at = excluded.noted_at",
                (day.isoformat(), meter, d.time(at)))


def _pending(d: _Dialect) -> Op[Pending]:
    rows = yield Q("SELECT day, meter, noted_at FROM analysis_pending ORDER BY day, meter",
                   fetch=True)
    out: Pending = {}
    for day, meter, at in rows:
        out.setdefault(date.fromisoformat(day), {})[meter] = d.time_of(at)
    return out


def _clear_pending(d: _Dialect, days: Sequence[date], before: datetime) -> Op[None]:
    for day in days:
        yield Q("DELETE FROM analysis_pending WHERE day = ? AND noted_at < ?",
                (day.isoformat(), d.time(before)))


@attrs.frozen
class StoredOutage:
    """An outage as stored: ``kind`` meter, area or comms; ``subject`` the meter or area;
    ``until`` None while open."""

    kind: str
    subject: str
    since: datetime
    until: datetime | None
    source: str = ""
    meters: tuple[str, ...] = ()
    details: Mapping[str, Any] = attrs.field(factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "subject": self.subject, "since": self.since,
                "until": self.until, "source": self.source, "meters": " ".join(self.meters),
                "details": dict(self.details)}


def _save_outages(d: _Dialect, kinds: Sequence[str], since: datetime | None,
                  until: datetime | None, outages: Sequence[StoredOutage], now: datetime
                  ) -> Op[int]:
    """Replace the outages of ``kinds`` starting in ``[since, until)`` by ``outages`` (with
    no period: add or update them, by kind, subject and start)."""
    if since is not None and until is not None:
        for kind in kinds:
            yield Q("DELETE FROM outages WHERE kind = ? AND since >= ? AND since < ?",
                    (kind, d.time(since), d.time(until)))
    if outages:
        yield Q("INSERT INTO outages (kind, subject, since, until, source, meters, details,"
                " found_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (kind, subject, since) DO UPDATE SET until = excluded.until,"
                " source = excluded.source, meters = excluded.meters,"
                " details = excluded.details, found_at = excluded.found_at",
                many=[(o.kind, o.subject, d.time(o.since),
                       None if o.until is None else d.time(o.until), o.source,
                       " ".join(o.meters), json.dumps(dict(o.details), sort_keys=True,
                                                      default=str), d.time(now))
                      for o in outages])
    return len(outages)


def _outages(d: _Dialect, since: datetime, until: datetime, kind: str | None,
             started: datetime | None = None) -> Op[list[StoredOutage]]:
    """The stored outages overlapping ``[since, until)`` (open ones included); with
    ``started``, only those that began at or after it (a range of the index on since)."""
    sql = ("SELECT kind, subject, since, until, source, meters, details FROM outages"
           " WHERE since < ? AND (until IS NULL OR until > ?)")
    params: list[Any] = [d.time(until), d.time(since)]
    if started is not None:
        sql += " AND since >= ?"
        params.append(d.time(started))
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    rows = yield Q(sql + " ORDER BY since, kind, subject", params, fetch=True)
    return [StoredOutage(r[0], r[1], d.time_of(r[2]), None if r[3] is None else d.time_of(r[3]),
                         r[4], tuple(r[5].split()), json.loads(r[6])) for r in rows]


# ---------------------------------------------------------------------------
# Edits (sql/*/0012_analysis_runs.sql)
# ---------------------------------------------------------------------------

_EDIT_COLUMNS = ("id, meter, obis, start_time, action, value_before, value_after, reason,"
                 " requested_by, requested_at, status, decided_by, decided_at, note")


def _edit_of(d: _Dialect, r: Sequence[Any]) -> Edit:
    return Edit(int(r[0]), r[1], r[2], d.time_of(r[3]), r[4], d.number_of(r[5]),
                d.number_of(r[6]), r[7], r[8], d.time_of(r[9]), r[10], r[11],
                None if r[12] is None else d.time_of(r[12]), r[13])


def _add_edit(d: _Dialect, e: Edit) -> Op[Edit]:
    rows = yield Q("INSERT INTO interval_edits (meter, obis, start_time, action, value_before,"
                   " value_after, reason, requested_by, requested_at, status, decided_by,"
                   " decided_at, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                   f" RETURNING {_EDIT_COLUMNS}",
                   (e.meter, e.obis, d.time(e.start), e.action, d.number(e.before),
                    d.number(e.after), e.reason, e.requested_by, d.time(e.requested_at),
                    e.status, e.decided_by,
                    None if e.decided_at is None else d.time(e.decided_at), e.note),
                   fetch=True)
    return _edit_of(d, rows[0])


def _decide_edit(d: _Dialect, edit_id: int, status: str, who: str, at: datetime, note: str
                 ) -> Op[Edit | None]:
    rows = yield Q("UPDATE interval_edits SET status = ?, decided_by = ?, decided_at = ?,"
                   f" note = ? WHERE id = ? AND status = 'pending' RETURNING {_EDIT_COLUMNS}",
                   (status, who, d.time(at), note, edit_id), fetch=True)
    return _edit_of(d, rows[0]) if rows else None


def _edits(d: _Dialect, edit_id: int | None, meters: Sequence[str] | None, obis: str | None,
           since: datetime | None, until: datetime | None, status: str | None
           ) -> Op[list[Edit]]:
    where: list[str] = []
    params: list[Any] = []
    for clause, value in (("id = ?", edit_id), ("obis = ?", obis), ("status = ?", status),
                          ("start_time >= ?", None if since is None else d.time(since)),
                          ("start_time < ?", None if until is None else d.time(until))):
        if value is not None:
            where.append(clause)
            params.append(value)
    out: list[Edit] = []
    for chunk in _chunks(list(meters)) if meters is not None else [None]:
        extra = [] if chunk is None else [f"meter IN ({_marks(len(chunk))})"]
        sql = f"SELECT {_EDIT_COLUMNS} FROM interval_edits"
        if where or extra:
            sql += " WHERE " + " AND ".join(where + extra)
        rows = yield Q(sql + " ORDER BY id DESC", [*params, *(chunk or [])], fetch=True)
        out += [_edit_of(d, r) for r in rows]
    return sorted(out, key=lambda e: -e.id)


# ---------------------------------------------------------------------------
# The store object
# ---------------------------------------------------------------------------


class AnalysisStore:
    """The analysis tables on an open SqliteStore or PostgresStore (sharing its connection,
    thread or pool, like the job store)."""

    def __init__(self, store: Any, now: Callable[[], datetime] = utcnow) -> None:
        from fep.store.postgres import PostgresStore

        self.store = store
        self._now = now
        # A wrapper (the operator tier's timed store) passes interact on: its store decides.
        base = getattr(store, "wrapped", store)
        self.dialect = _Dialect("postgresql" if isinstance(base, PostgresStore) else "sqlite")

    def _do(self, make: Callable[..., Op[T]], *args: Any) -> Deferred[T]:
        d = self.dialect
        if d.name == "postgresql":

            async def interaction(cursor: Any) -> T:
                return await jobstore._run_postgres(cursor, make(d, *args))

            result: Deferred[T] = self.store.interact(interaction)
            return result

        def work(conn: Any) -> T:
            return jobstore._run_sqlite(conn, make(d, *args))

        done: Deferred[T] = self.store.interact(work)
        return done

    # areas
    def network(self) -> Deferred[Network]:
        return self._do(_network)

    def save_network(self, network: Network) -> Deferred[int]:
        return self._do(_save_network, network)

    # data
    def intervals(self, meters: Sequence[str], obis: str, since: datetime, until: datetime
                  ) -> Deferred[dict[str, list[Point]]]:
        return self._do(_intervals, list(meters), obis, since, until)

    def samples(self, meters: Sequence[str], codes: Sequence[str], since: datetime,
                until: datetime) -> Deferred[dict[str, dict[str, list[Sample]]]]:
        return self._do(_samples, list(meters), list(codes), since, until)

    def registers(self, meters: Sequence[str], obis: str, since: datetime, until: datetime
                  ) -> Deferred[dict[str, list[Point]]]:
        return self._do(_registers, list(meters), obis, since, until)

    def power_events(self, meters: Sequence[str], since: datetime, until: datetime
                     ) -> Deferred[dict[str, list[MeterEvent]]]:
        return self._do(_power_events, list(meters), since, until)

    # validation
    def clock_evidence(self, meters: Sequence[str], since: datetime, until: datetime
                       ) -> Deferred[dict[str, tuple[list[tuple[datetime, str]],
                                                     list[MeterEvent]]]]:
        return self._do(_clock_evidence, meters, since, until)

    def serials(self, meters: Sequence[str], obis: str, since: datetime, until: datetime
                ) -> Deferred[dict[str, list[tuple[datetime, str]]]]:
        return self._do(_serials, meters, obis, since, until)

    def save_validation(self, meters: Sequence[str], obis: str, since: datetime,
                        until: datetime, findings: Sequence[Finding],
                        flags: Mapping[tuple[str, str, datetime], Quality]) -> Deferred[int]:
        return self._do(_save_validation, list(meters), obis, since, until, list(findings),
                        dict(flags), self._now())

    def findings(self, since: datetime, until: datetime, meter: str | None = None
                 ) -> Deferred[list[Finding]]:
        return self._do(_findings, meter, since, until)

    def flags(self, meter: str, obis: str, since: datetime, until: datetime
              ) -> Deferred[dict[datetime, Quality]]:
        return self._do(_flags, meter, obis, since, until)

    def flagged(self, meters: Sequence[str], obis: str, since: datetime, until: datetime,
                flag: Quality) -> Deferred[set[tuple[str, datetime]]]:
        return self._do(_flagged, meters, obis, since, until, flag)

    # estimates
    def save_estimates(self, meters: Sequence[str], obis: str, since: datetime,
                       until: datetime, period: timedelta, estimates: Iterable[Estimate]
                       ) -> Deferred[int]:
        return self._do(_save_estimates, list(meters), obis, since, until, period,
                        list(estimates), self._now())

    def estimates(self, meters: Sequence[str], obis: str, since: datetime, until: datetime
                  ) -> Deferred[dict[str, list[Estimate]]]:
        return self._do(_estimates, list(meters), obis, since, until)

    # balances
    def save_balances(self, rows: Sequence[BalanceRow]) -> Deferred[int]:
        return self._do(_save_balances, list(rows), self._now())

    def balances(self, since: datetime, until: datetime, area: str | None = None
                 ) -> Deferred[list[BalanceRow]]:
        return self._do(_balances, area, since, until)

    # interval quality
    def save_quality(self, obis: str, day: date, meters: Mapping[str, DayQuality]
                     ) -> Deferred[int]:
        """Replace the day's counts of these meters (a VEE run's batch)."""
        ids = sorted(meters)
        return self._do(_save_quality, obis, day, [meters[m] for m in ids], ids, self._now())

    def sum_quality(self, obis: str, day: date) -> Deferred[DayQuality]:
        """Store (and return) the day's sum over every meter counted for it."""
        return self._do(_sum_quality, obis, day, self._now())

    def quality_days(self, obis: str, since: date, until: date) -> Deferred[list[DayQuality]]:
        """The days' sums in ``[since, until)`` as stored (one row a day)."""
        return self._do(_quality_days, obis, since, until)

    # communication analysis
    def job_outcomes(self, since: datetime, until: datetime) -> Deferred[list[JobOutcome]]:
        return self._do(_job_outcomes, since, until)

    # the analysis service
    def save_run(self, run: RunRecord) -> Deferred[None]:
        return self._do(_save_run, run)

    def runs(self, since: date, until: date) -> Deferred[list[RunRecord]]:
        return self._do(_runs, since, until)

    def note_pending(self, notes: Sequence[tuple[date, str, datetime]]) -> Deferred[None]:
        """Keep (day, meter, when) re-collected, waiting for the day's analysis."""
        return self._do(_note_pending, list(notes))

    def pending(self) -> Deferred[Pending]:
        """The days waiting for their analysis since a re-collection, with their meters."""
        return self._do(_pending)

    def clear_pending(self, days: Sequence[date], before: datetime) -> Deferred[None]:
        """Forget what was noted of ``days`` before ``before`` (their analysis started
        after it)."""
        return self._do(_clear_pending, list(days), before)

    def save_outages(self, kinds: Sequence[str], since: datetime | None,
                     until: datetime | None, outages: Iterable[StoredOutage]) -> Deferred[int]:
        return self._do(_save_outages, list(kinds), since, until, list(outages), self._now())

    def outages(self, since: datetime, until: datetime, kind: str | None = None, *,
                started: datetime | None = None) -> Deferred[list[StoredOutage]]:
        return self._do(_outages, since, until, kind, started)

    # edits
    def add_edit(self, edit: Edit) -> Deferred[Edit]:
        return self._do(_add_edit, edit)

    def decide_edit(self, edit_id: int, status: str, who: str, at: datetime, note: str
                    ) -> Deferred[Edit | None]:
        return self._do(_decide_edit, edit_id, status, who, at, note)

    async def edit(self, edit_id: int) -> Edit | None:
        found = await self._do(_edits, edit_id, None, None, None, None, None)
        return found[0] if found else None

    def edits(self, *, meter: str | None = None, meters: Sequence[str] | None = None,
              obis: str | None = None, since: datetime | None = None,
              until: datetime | None = None, status: str | None = None
              ) -> Deferred[list[Edit]]:
        chosen = list(meters) if meters is not None else ([meter] if meter else None)
        return self._do(_edits, None, chosen, obis, since, until, status)
