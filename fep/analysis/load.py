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

Phase imbalance measured by the meters themselves (``measured_imbalance``): where a meter
records a quantity of each phase per interval (current 1-0:31/51/71.x, active power
1-0:21/41/61.x), the imbalance of each interval with the three phases present and of the
day's means; an area's from its summary meters (each ``in``, the phases summed), else the
estimate from its members' place. ``imbalance_source`` says which: ``current``, ``power``
or ``network``.

Voltage (``day_voltage``): each interval of a phase voltage channel (1-0:32/52/72.x) stands
for its whole length; a value above ``nominal x (1 + over)`` or below ``nominal x (1 -
under)`` puts its minutes over or under (the minutes of an area: of any of its meters). A
phase's share within limits is its minutes within over its minutes measured; ``within`` is
the lowest phase's (EN 50160 asks 95 % of each phase's 10-minute means within +-10 %)::

    over_voltage_minutes   the minutes during which some phase was over (the union)
    voltage_within         min over the phases of (measured - over - under) / measured x 100 %

The typical day: per time of day, the mean demand over the period's working days (Monday to
Friday) and over its weekend days, each from the days with a value at that time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal

import attrs

from fep.analysis.areas import Direction
from fep.analysis.balance import Series, summary_input
from fep.analysis.series import Point
from fep.model import ObisCode, Quality

_Q = Decimal("0.001")
_PCT = Decimal("0.01")
PHASES = ("A", "B", "C")

PhaseValues = Mapping[str, Mapping[datetime, Decimal]]


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
    imbalance_source: str | None = None
    imbalance_network: Decimal | None = None
    voltage: DayVoltage | None = None

    def as_dict(self) -> dict[str, object]:
        out = {f.name: getattr(self, f.name) for f in attrs.fields(type(self))
               if f.name != "voltage"}
        out["day"] = self.day.isoformat()
        out.update(self.voltage.as_dict() if self.voltage is not None else dict.fromkeys(
            VOLTAGE_FIELDS))
        return out


VOLTAGE_FIELDS = ("voltage_minutes", "over_voltage_minutes", "under_voltage_minutes",
                  "over_voltage_a", "over_voltage_b", "over_voltage_c", "under_voltage_a",
                  "under_voltage_b", "under_voltage_c", "voltage_max", "voltage_max_time",
                  "voltage_min", "voltage_min_time", "voltage_within")


@attrs.frozen
class Sample:
    """One stored interval of a measured quantity: its start, length and value (V, A, W)."""

    start: datetime
    period: timedelta
    value: Decimal


@attrs.frozen
class VoltageLimits:
    """The voltage band: ``over`` and ``under`` in % of ``nominal`` (V); EN 50160: 230 V
    +-10 %, 207 to 253 V."""

    nominal: Decimal = Decimal(230)
    over: Decimal = Decimal(10)
    under: Decimal = Decimal(10)

    @property
    def high(self) -> Decimal:
        return self.nominal * (100 + self.over) / 100

    @property
    def low(self) -> Decimal:
        return self.nominal * (100 - self.under) / 100


@attrs.frozen
class DayVoltage:
    """One day's voltage of a meter or an area: minutes measured, over and under the limits
    (in all and per phase), the highest and lowest value and the share within limits."""

    minutes: int
    over_minutes: int
    under_minutes: int
    over: tuple[int, int, int]  # phases A, B, C
    under: tuple[int, int, int]
    highest: Decimal
    highest_time: datetime
    lowest: Decimal
    lowest_time: datetime
    within: Decimal

    def as_dict(self) -> dict[str, object]:
        return dict(zip(VOLTAGE_FIELDS, (
            self.minutes, self.over_minutes, self.under_minutes, *self.over, *self.under,
            self.highest, self.highest_time, self.lowest, self.lowest_time, self.within),
            strict=True))


@attrs.frozen
class PhaseImbalance:
    """The three phases' day values, the day's imbalance and the highest of an interval, and
    where they come from (``network``: energy per phase from the members' place;
    ``current``: mean A, ``power``: mean W, as the meters measured them)."""

    source: str
    phase_a: Decimal
    phase_b: Decimal
    phase_c: Decimal
    imbalance: Decimal | None
    peak: Decimal | None
    peak_time: datetime | None


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


def phase_of(code: ObisCode) -> str:
    """The phase of a per-phase OBIS quantity (C 21-40: ``A``, 41-60: ``B``, 61-80: ``C``)."""
    return PHASES[(code.c - 21) // 20]


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
        status = Quality.OK
        if summary:
            given = summary_input(summary, t)
            if given is not None:
                out[t] = Point(t, *given)
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


def network_imbalance(starts: Sequence[datetime], phases: PhaseValues
                      ) -> PhaseImbalance | None:
    """The imbalance of the day's energy per phase from the members' place (``phase_series``)
    and the highest of an interval; none without a member on a phase."""
    if not any(phases.get(p) for p in PHASES):
        return None
    a, b, c = totals = [sum(phases.get(p, {}).values(), Decimal(0)) for p in PHASES]
    peak = peak_time = None
    for t in starts:
        if not any(t in phases.get(p, {}) for p in PHASES):
            continue
        x = imbalance([phases.get(p, {}).get(t, Decimal(0)) for p in PHASES])
        if x is not None and (peak is None or x > peak):
            peak, peak_time = x, t
    return PhaseImbalance("network", a, b, c, imbalance(totals), peak, peak_time)


def measured_imbalance(source: str, phases: PhaseValues) -> PhaseImbalance | None:
    """The imbalance of a quantity a meter measures on each phase (``source``: ``current``
    or ``power``): of the means and of each interval, over the intervals that have all three
    phases; none without such an interval."""
    full = sorted(t for t in phases.get("A", {}) if all(t in phases.get(p, {})
                                                       for p in PHASES[1:]))
    if not full:
        return None
    means = [sum((phases[p][t] for t in full), Decimal(0)) / len(full) for p in PHASES]
    peak = peak_time = None
    for t in full:
        x = imbalance([phases[p][t] for p in PHASES])
        if x is not None and (peak is None or x > peak):
            peak, peak_time = x, t
    a, b, c = (m.quantize(_Q) for m in means)
    return PhaseImbalance(source, a, b, c, imbalance(means), peak, peak_time)


def phase_values(samples: Mapping[str, Sequence[Sample]], since: datetime, until: datetime
                 ) -> dict[str, dict[datetime, Decimal]]:
    """Each phase's values by interval start in ``[since, until)``."""
    return {p: {x.start: x.value for x in samples.get(p, ()) if since <= x.start < until}
            for p in PHASES}


def summed_phases(meters: Sequence[PhaseValues]) -> dict[str, dict[datetime, Decimal]]:
    """Each phase's sum over ``meters`` (an area's summary meters) at the times every one of
    them has all three phases; nothing without meters."""
    out: dict[str, dict[datetime, Decimal]] = {p: {} for p in PHASES}
    if not meters:
        return out
    times = set.intersection(*(set.intersection(*(set(m.get(p, {})) for p in PHASES))
                               for m in meters))
    for t in times:
        for p in PHASES:
            out[p][t] = sum((m[p][t] for m in meters), Decimal(0))
    return out


def _union(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _seconds(spans: Iterable[tuple[datetime, datetime]]) -> int:
    return int(sum(((e - s).total_seconds() for s, e in _union(spans)), 0.0))


def _minutes(spans: Iterable[tuple[datetime, datetime]]) -> int:
    return _seconds(spans) // 60


def day_voltage(phases: Mapping[str, Sequence[Sample]], since: datetime, until: datetime,
                limits: VoltageLimits = VoltageLimits()) -> DayVoltage | None:
    """The voltage of ``[since, until)`` from the samples of each phase (``A``, ``B``, ``C``;
    an area's: of all its meters), each standing for its interval (cut at ``until``); none
    without a sample."""
    high, low = limits.high, limits.low
    measured: dict[str, list[tuple[datetime, datetime]]] = {p: [] for p in PHASES}
    over: dict[str, list[tuple[datetime, datetime]]] = {p: [] for p in PHASES}
    under: dict[str, list[tuple[datetime, datetime]]] = {p: [] for p in PHASES}
    every: list[Sample] = []
    for p in PHASES:
        for x in phases.get(p, ()):
            if not since <= x.start < until:
                continue
            span = (x.start, min(x.start + x.period, until))
            measured[p].append(span)
            every.append(x)
            if x.value > high:
                over[p].append(span)
            elif x.value < low:
                under[p].append(span)
    if not every:
        return None
    shares = []
    for p in PHASES:
        seen = _seconds(measured[p])
        if seen:
            out = _seconds(over[p] + under[p])
            shares.append((Decimal(seen - out) / seen * 100).quantize(_PCT))
    top = max(every, key=lambda x: (x.value, -x.start.timestamp()))
    bottom = min(every, key=lambda x: (x.value, x.start.timestamp()))

    def each(spans: Mapping[str, list[tuple[datetime, datetime]]]) -> tuple[int, int, int]:
        a, b, c = (_minutes(spans[p]) for p in PHASES)
        return a, b, c

    return DayVoltage(
        _minutes(s for p in PHASES for s in measured[p]),
        _minutes(s for p in PHASES for s in over[p]),
        _minutes(s for p in PHASES for s in under[p]),
        each(over), each(under), top.value, top.start, bottom.value, bottom.start,
        min(shares))


def day_load(subject: str, kind: str, day: date, starts: Sequence[datetime],
             period: timedelta, series: Series, *, capacity: Decimal | None = None,
             kw: Decimal = Decimal("0.001"), power_factor: Decimal = Decimal(1),
             phases: PhaseValues | None = None, measured: PhaseImbalance | None = None,
             voltage: DayVoltage | None = None) -> DayLoad:
    """The load of one day (``starts``: its interval starts) of a series; the phase
    imbalance ``measured`` by the meters wins over the estimate from ``phases`` (then kept
    as ``imbalance_network``)."""
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
    network = network_imbalance(starts, phases) if phases is not None else None
    chosen = measured or network
    kept = network.imbalance if measured is not None and network is not None else None
    a = b = c = imb = imb_peak = None
    imb_time = None
    if chosen is not None:
        a, b, c = chosen.phase_a, chosen.phase_b, chosen.phase_c
        imb, imb_peak, imb_time = chosen.imbalance, chosen.peak, chosen.peak_time
    return DayLoad(subject, kind, day, len(points), energy, _q(peak), peak_time, _q(base),
                   _q(average), factor, capacity, loading, overload, a, b, c, imb, imb_peak,
                   imb_time, None if chosen is None else chosen.source, kept, voltage)


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
