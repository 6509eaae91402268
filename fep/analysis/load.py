"""Load analysis: the daily load curve of a meter or an area, its peak, base and load factor,
the typical day, the loading of an area's transformer against its rated capacity and the
imbalance between the phases of its members.

Demand is the energy of an interval divided by the interval's length in hours: in the
channel's unit per hour (Wh in 15 minutes -> W: the energy times 4). For one day::

    energy       = the sum of the day's interval values
    peak         = the highest interval demand; peak_time the start of its (first) interval
    base         = the lowest interval demand
    average      = energy / (intervals with a value x the interval's hours)
    load factor  = average / peak x 100 %                       (none when the peak is 0)

An area's load is what its transformer delivers: the input of its summary meters (``in``
less ``out``, an interval counting only when every summary meter has a value, as in the
balance), or the sum of its members' consumption when it has no summary meter.

Transformer loading (an area with a ``capacity`` in kVA): the demand in kW (``kw`` converts
the channel's unit per hour to kW: 0.001 for Wh) over the power factor (active power to
apparent power, 1 by default) against the capacity::

    loading(t)   = demand(t) x kw / power_factor / capacity x 100 %
    loading      = loading at the peak; overload_minutes: the minutes of the intervals whose
                   loading is above 100 %

Phase imbalance (members carrying their phase): the day's energy of each phase, a
three-phase (``ABC``) member counted a third on each; the imbalance of three values is the
largest deviation from their mean over the mean (the NEMA definition)::

    imbalance    = max |E_p - mean(E)| / mean(E) x 100 %          (none when the mean is 0)
    imbalance_peak, imbalance_time: the highest imbalance of an interval and its start

The typical day: per time of day, the mean demand over the period's working days (Monday to
Friday) and over its weekend days, each from the days with a value at that time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal

import attrs

from fep.analysis.areas import Direction
from fep.analysis.series import Point
from fep.model import Quality

_Q = Decimal("0.001")
_PCT = Decimal("0.01")
PHASES = ("A", "B", "C")

Series = Mapping[datetime, Point]


def _q(value: Decimal | None, quantum: Decimal = _Q) -> Decimal | None:
    return None if value is None else value.quantize(quantum)


@attrs.frozen
class DayLoad:
    """One day's load of a meter or an area (``kind``)."""

    subject: str
    kind: str
    day: date
    intervals: int
    energy: Decimal
    peak: Decimal | None
    peak_time: datetime | None
    base: Decimal | None
    average: Decimal | None
    load_factor: Decimal | None
    capacity: Decimal | None = None
    loading: Decimal | None = None
    overload_minutes: int | None = None
    phase_a: Decimal | None = None
    phase_b: Decimal | None = None
    phase_c: Decimal | None = None
    imbalance: Decimal | None = None
    imbalance_peak: Decimal | None = None
    imbalance_time: datetime | None = None

    def as_dict(self) -> dict[str, object]:
        out = {f.name: getattr(self, f.name) for f in attrs.fields(type(self))}
        out["day"] = self.day.isoformat()
        return out


@attrs.frozen
class ProfilePoint:
    """The typical demand of a time of day over the working days or the weekend days."""

    subject: str
    days: str  # "weekday" or "weekend"
    time: str  # HH:MM
    demand: Decimal
    count: int

    def as_dict(self) -> dict[str, object]:
        return {"subject": self.subject, "days": self.days, "time": self.time,
                "demand": self.demand, "count": self.count}


def demand(value: Decimal, period: timedelta) -> Decimal:
    """An interval's energy as demand: per hour."""
    return value * Decimal(3600) / Decimal(int(period.total_seconds()))


def imbalance(values: Sequence[Decimal]) -> Decimal | None:
    """The largest deviation from the mean over the mean, in % (NEMA); none for a zero mean."""
    if not values:
        return None
    mean = sum(values, Decimal(0)) / len(values)
    if mean == 0:
        return None
    return (max(abs(v - mean) for v in values) / mean * 100).quantize(_PCT)


def area_series(starts: Iterable[datetime],
                summary: Mapping[str, tuple[Direction, Series]],
                members: Mapping[str, Series]) -> dict[datetime, Point]:
    """An area's load per interval: its summary meters' input, else its members' sum (the
    statuses OR-ed: a sum with an estimate in it is estimated)."""
    out: dict[datetime, Point] = {}
    for t in starts:
        total = Decimal(0)
        status = Quality.OK
        if summary:
            whole = True
            for direction, series in summary.values():
                p = series.get(t)
                if p is None or p.value is None:
                    whole = False
                    break
                total += p.value if direction == Direction.IN else -p.value
                status |= p.status
            if whole:
                out[t] = Point(t, total, status)
            continue
        present = [p for s in members.values() if (p := s.get(t)) is not None
                   and p.value is not None]
        if present:
            for p in present:
                status |= p.status
            out[t] = Point(t, sum((p.value for p in present if p.value is not None),
                                  Decimal(0)), status)
    return out


def phase_series(starts: Iterable[datetime], members: Mapping[str, tuple[str, Series]]
                 ) -> dict[str, dict[datetime, Decimal]]:
    """Each phase's energy per interval from members carrying a phase (``ABC``: a third on
    each); members without a phase are left out."""
    out: dict[str, dict[datetime, Decimal]] = {p: {} for p in PHASES}
    for t in starts:
        for phase, series in members.values():
            p = series.get(t)
            if not phase or p is None or p.value is None:
                continue
            shares = [(phase, p.value)] if phase in PHASES else [
                (x, p.value / 3) for x in PHASES]
            for x, v in shares:
                out[x][t] = out[x].get(t, Decimal(0)) + v
    return out


def day_load(subject: str, kind: str, day: date, starts: Sequence[datetime],
             period: timedelta, series: Series, *, capacity: Decimal | None = None,
             kw: Decimal = Decimal("0.001"), power_factor: Decimal = Decimal(1),
             phases: Mapping[str, Mapping[datetime, Decimal]] | None = None) -> DayLoad:
    """The load of one day (``starts``: its interval starts) of a series."""
    points = [(t, p.value) for t in starts if (p := series.get(t)) is not None
              and p.value is not None]
    energy = sum((v for _t, v in points), Decimal(0))
    peak = peak_time = base = average = factor = None
    loading = None
    overload: int | None = None
    if points:
        demands = [(t, demand(v, period)) for t, v in points]
        peak_time, peak = max(demands, key=lambda x: (x[1], -x[0].timestamp()))
        base = min(d for _t, d in demands)
        hours = Decimal(len(points)) * Decimal(int(period.total_seconds())) / 3600
        average = energy / hours
        factor = None if peak == 0 else (average / peak * 100).quantize(_PCT)
        if capacity is not None:
            def load_of(d: Decimal) -> Decimal:
                return d * kw / power_factor / capacity * 100

            loading = load_of(peak).quantize(_PCT)
            minutes = int(period.total_seconds() // 60)
            overload = sum(minutes for _t, d in demands if load_of(d) > 100)
    a = b = c = imb = imb_peak = None
    imb_time = None
    if phases is not None and any(phases.get(p) for p in PHASES):
        totals = [sum(phases.get(p, {}).values(), Decimal(0)) for p in PHASES]
        a, b, c = totals
        imb = imbalance(totals)
        for t in starts:
            if not any(t in phases.get(p, {}) for p in PHASES):
                continue
            x = imbalance([phases.get(p, {}).get(t, Decimal(0)) for p in PHASES])
            if x is not None and (imb_peak is None or x > imb_peak):
                imb_peak, imb_time = x, t
    return DayLoad(subject, kind, day, len(points), energy, _q(peak), peak_time, _q(base),
                   _q(average), factor, capacity, loading, overload, a, b, c, imb, imb_peak,
                   imb_time)


def typical_day(subject: str, series: Series, period: timedelta) -> list[ProfilePoint]:
    """The mean demand per time of day over the working days and over the weekend days."""
    sums: dict[tuple[str, str], list[Decimal]] = {}
    for t, p in series.items():
        if p.value is None:
            continue
        days = "weekend" if t.weekday() >= 5 else "weekday"
        sums.setdefault((days, f"{t:%H:%M}"), []).append(demand(p.value, period))
    return [ProfilePoint(subject, days, time, (sum(v, Decimal(0)) / len(v)).quantize(_Q),
                         len(v))
            for (days, time), v in sorted(sums.items())]
