"""Validation rules: pure functions over one meter's interval points and registers, each
returning the findings (validation exceptions) it makes.

A finding names its rule, the meter and channel, the time range ``[since, until)`` it
concerns, the quality flag it sets on the values of that range and its details. Rules never
change a value: the flags are kept apart from the values (fep.analysis.store), so what the
meter sent stays as it was. docs/analysis.md explains each rule with a worked example.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from fep.analysis.series import EPOCH, Point, grid
from fep.model import IntervalBlock, Quality

MISSING = "missing"
HIGH = "high-limit"
LOW = "low-limit"
SPIKE = "spike"
HISTORY_HIGH = "history-high"
HISTORY_LOW = "history-low"
ZERO = "zero-consumption"
REVERSE = "reverse-energy"
REGISTER = "register-advance"
DUPLICATE = "duplicate"
SHIFTED = "shifted"
ROLLOVER = "rollover"
POWER_DOWN = "power-down"
CLOCK_INVALID = "clock-invalid"
CLOCK_DEVIATION = "clock-deviation"
TIME_CHANGE = "time-change"
METER_CHANGE = "meter-change"

RULES = (MISSING, HIGH, LOW, SPIKE, HISTORY_HIGH, HISTORY_LOW, ZERO, REVERSE, REGISTER,
         DUPLICATE, SHIFTED, ROLLOVER, POWER_DOWN, CLOCK_INVALID, CLOCK_DEVIATION, TIME_CHANGE,
         METER_CHANGE)


@attrs.frozen
class Finding:
    """One validation exception: ``rule`` found ``details`` about ``meter``'s channel
    ``obis`` over ``[since, until)`` and flags those values with ``flag``."""

    rule: str
    meter: str
    obis: str
    since: datetime
    until: datetime
    flag: Quality
    details: Mapping[str, Any] = attrs.field(factory=dict)


def _runs(starts: Sequence[datetime], period: timedelta) -> list[tuple[datetime, datetime]]:
    """Consecutive interval starts as ``[since, until)`` ranges."""
    out: list[list[datetime]] = []
    for t in sorted(starts):
        if out and out[-1][1] == t:
            out[-1][1] = t + period
        else:
            out.append([t, t + period])
    return [(a, b) for a, b in out]


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f") if value == value.to_integral() else str(value)


# ---------------------------------------------------------------------------
# Missing intervals
# ---------------------------------------------------------------------------


def missing(meter: str, obis: str, series: Iterable[Point], since: datetime, until: datetime,
            period: timedelta) -> list[Finding]:
    """Each run of grid intervals in ``[since, until)`` with no point or a point without a
    value is one finding, flagged MISSING, with the number of intervals missing."""
    present = {p.start for p in series if p.value is not None}
    gaps = [t for t in grid(since, until, period) if t not in present]
    return [Finding(MISSING, meter, obis, a, b, Quality.MISSING,
                    {"intervals": int((b - a) / period)}) for a, b in _runs(gaps, period)]


# ---------------------------------------------------------------------------
# Limits: absolute, spikes against the meter's own history, daily totals against history
# ---------------------------------------------------------------------------


def limits(meter: str, obis: str, usage: Iterable[Point], period: timedelta, *,
           high: Decimal | None, low: Decimal | None) -> list[Finding]:
    """Each interval whose consumption is above ``high`` or below ``low`` (absolute
    values in the channel's unit) is a finding, flagged SUSPECT."""
    out = []
    for p in usage:
        if p.value is None:
            continue
        if high is not None and p.value > high:
            out.append(Finding(HIGH, meter, obis, p.start, p.start + period, Quality.SUSPECT,
                               {"value": _text(p.value), "limit": _text(high)}))
        elif low is not None and p.value < low:
            out.append(Finding(LOW, meter, obis, p.start, p.start + period, Quality.SUSPECT,
                               {"value": _text(p.value), "limit": _text(low)}))
    return out


def reference(history: Iterable[Point]) -> Decimal | None:
    """The mean interval consumption of a history (None when it has no value)."""
    values = [p.value for p in history if p.value is not None]
    if not values:
        return None
    return sum(values, Decimal(0)) / len(values)


def spikes(meter: str, obis: str, usage: Iterable[Point], period: timedelta, *,
           history: Iterable[Point], factor: Decimal, floor: Decimal) -> list[Finding]:
    """An interval whose consumption is above ``factor`` times the mean interval
    consumption of the meter's own history and above ``floor`` (so a nearly idle meter does
    not flag every kettle) is a spike, flagged SUSPECT. No history, no finding."""
    mean = reference(history)
    if mean is None:
        return []
    limit = max(mean * factor, floor)
    return [
        Finding(SPIKE, meter, obis, p.start, p.start + period, Quality.SUSPECT,
                {"value": _text(p.value), "mean": _text(mean.quantize(Decimal("0.001"))),
                 "factor": _text(factor)})
        for p in usage
        if p.value is not None and p.value > limit
    ]


def history_limits(meter: str, obis: str, day: date, day_total: Decimal, *,
                   history_totals: Sequence[Decimal], high_factor: Decimal,
                   low_factor: Decimal) -> list[Finding]:
    """A day whose total is above ``high_factor`` or below ``low_factor`` times the mean
    daily total of the meter's own history is a finding over the whole day, flagged
    SUSPECT. No history, no finding."""
    if not history_totals:
        return []
    mean = sum(history_totals, Decimal(0)) / len(history_totals)
    since = datetime.combine(day, datetime.min.time(), tzinfo=EPOCH.tzinfo)
    until = since + timedelta(days=1)
    details = {"total": _text(day_total), "mean": _text(mean.quantize(Decimal("0.001")))}
    if day_total > mean * high_factor:
        return [Finding(HISTORY_HIGH, meter, obis, since, until, Quality.SUSPECT,
                        {**details, "factor": _text(high_factor)})]
    if day_total < mean * low_factor:
        return [Finding(HISTORY_LOW, meter, obis, since, until, Quality.SUSPECT,
                        {**details, "factor": _text(low_factor)})]
    return []


# ---------------------------------------------------------------------------
# Zero consumption, reverse energy, rollover
# ---------------------------------------------------------------------------


def zero_consumption(meter: str, obis: str, daily_totals: Mapping[date, Decimal | None], *,
                     days: int) -> list[Finding]:
    """``days`` or more consecutive days with a total of zero (days without data break the
    run) make one finding over the run, flagged SUSPECT."""
    out = []
    run: list[date] = []
    ordered = sorted(daily_totals)

    def flush() -> None:
        if len(run) >= days:
            since = datetime.combine(run[0], datetime.min.time(), tzinfo=EPOCH.tzinfo)
            until = datetime.combine(run[-1], datetime.min.time(),
                                     tzinfo=EPOCH.tzinfo) + timedelta(days=1)
            out.append(Finding(ZERO, meter, obis, since, until, Quality.SUSPECT,
                               {"days": len(run)}))
        run.clear()

    for day in ordered:
        total = daily_totals[day]
        if total is None or total != 0:
            flush()
            continue
        if run and run[-1] + timedelta(days=1) != day:
            flush()
        run.append(day)
    flush()
    return out


def reverse_energy(meter: str, obis: str, usage: Iterable[Point], period: timedelta
                   ) -> list[Finding]:
    """Each run of intervals with negative consumption (an interval channel's negative
    value, or a cumulative register that went back without a rollover) is a finding,
    flagged SUSPECT, with the energy that ran backwards."""
    negative = {p.start: p.value for p in usage if p.value is not None and p.value < 0}
    return [
        Finding(REVERSE, meter, obis, a, b, Quality.SUSPECT, {
            "intervals": int((b - a) / period),
            "energy": _text(sum((v for t, v in negative.items() if a <= t < b), Decimal(0)))})
        for a, b in _runs(list(negative), period)
    ]


def rollovers(meter: str, obis: str, registers: Iterable[Point], period: timedelta, *,
              modulus: Decimal) -> list[Finding]:
    """A cumulative register that falls by more than half its ``modulus`` from one interval
    to the next has passed its last digit: a finding (flagged OVERFLOW, the consumption is
    counted through by fep.analysis.series.consumption)."""
    ordered = sorted((p for p in registers if p.value is not None), key=lambda p: p.start)
    out = []
    for before, after in itertools.pairwise(ordered):
        assert before.value is not None and after.value is not None
        if before.value - after.value > modulus / 2:
            out.append(Finding(ROLLOVER, meter, obis, after.start, after.start + period,
                               Quality.OVERFLOW, {
                                   "before": _text(before.value), "after": _text(after.value),
                                   "advance": _text(after.value + modulus - before.value)}))
    return out


# ---------------------------------------------------------------------------
# Register advance against the sum of intervals
# ---------------------------------------------------------------------------


def register_advance(meter: str, obis: str, since: datetime, until: datetime, *,
                     start_reading: Decimal, end_reading: Decimal, interval_sum: Decimal,
                     tolerance: Decimal, tolerance_abs: Decimal,
                     change: MeterChange | None = None) -> list[Finding]:
    """The register's advance over ``[since, until)`` (its readings at both ends) and the
    sum of the intervals of that range differ by more than ``tolerance`` (a fraction of the
    advance) and more than ``tolerance_abs``: a finding over the range, flagged SUSPECT.

    Across a meter ``change`` the advance is the old meter's (its last reading less the
    start reading) plus the new one's (the end reading less its first reading); the caller
    sums only the intervals those two spans cover."""
    extra: dict[str, str] = {}
    if change is None:
        advance = end_reading - start_reading
    else:
        before = change.before_value - start_reading
        after = end_reading - change.after_value
        advance = before + after
        extra = {"advance_before": _text(before), "advance_after": _text(after)}
    difference = advance - interval_sum
    allowed = max(abs(advance) * tolerance, tolerance_abs)
    if abs(difference) <= allowed:
        return []
    return [Finding(REGISTER, meter, obis, since, until, Quality.SUSPECT, {
        "advance": _text(advance), "intervals": _text(interval_sum),
        "difference": _text(difference), "allowed": _text(allowed), **extra})]


# ---------------------------------------------------------------------------
# Meter change: a register reset together with a new serial number
# ---------------------------------------------------------------------------


@attrs.frozen
class MeterChange:
    """The meter at a metering point was replaced between two register readings: the old
    meter's last (``before``) and the new one's first (``after``), each a Point at the time
    the register was read, with the serial numbers the meters reported."""

    before: Point
    after: Point
    old_serial: str
    new_serial: str

    @property
    def before_value(self) -> Decimal:
        assert self.before.value is not None
        return self.before.value

    @property
    def after_value(self) -> Decimal:
        assert self.after.value is not None
        return self.after.value


def meter_changes(readings: Iterable[Point], serials: Iterable[tuple[datetime, str]]
                  ) -> list[MeterChange]:
    """Each fall of a register between two readings (a reset, near zero or not) where the
    serial number the meter reported last at or before the first reading differs from the
    one it reported first at or after the second: a meter change, neither a rollover nor
    reverse energy. A fall without a serial on both sides is not one (the other rules judge
    it)."""
    ordered = sorted((p for p in readings if p.value is not None), key=lambda p: p.start)
    known = sorted(serials)
    out = []
    for before, after in itertools.pairwise(ordered):
        assert before.value is not None and after.value is not None
        if after.value >= before.value:
            continue
        old = [s for t, s in known if t <= before.start]
        new = [s for t, s in known if t >= after.start]
        if old and new and old[-1] != new[0]:
            out.append(MeterChange(before, after, old[-1], new[0]))
    return out


def meter_change(meter: str, obis: str, change: MeterChange, since: datetime,
                 until: datetime, period: timedelta, *, register: str) -> list[Finding]:
    """The finding of one meter ``change`` of ``register``: over the intervals between its
    two readings (when the meter was replaced) cut to ``[since, until)``, flagged
    COUNTER_RESET, with the serials and readings on both sides."""
    first = change.before.start - (change.before.start - EPOCH) % period
    last = change.after.start - (change.after.start - EPOCH) % period
    end = last + period if change.after.start > last or last == first else last
    first, end = max(first, since), min(end, until)
    if first >= end:
        return []
    return [Finding(METER_CHANGE, meter, obis, first, end, Quality.COUNTER_RESET, {
        "register": register, "old_serial": change.old_serial,
        "new_serial": change.new_serial, "last_old": _text(change.before_value),
        "first_new": _text(change.after_value),
        "removed": change.before.start.isoformat(),
        "installed": change.after.start.isoformat()})]


# ---------------------------------------------------------------------------
# Duplicate and shifted intervals
# ---------------------------------------------------------------------------


def duplicates_and_shifts(meter: str, blocks: Iterable[IntervalBlock]) -> list[Finding]:
    """Intervals delivered more than once with different values (DUPLICATE; the store keeps
    the first), and intervals whose start is not on the epoch grid of their period (SHIFTED:
    a meter clock off by part of a period), each flagged SUSPECT."""
    seen: dict[tuple[str, datetime], object] = {}
    reported: set[tuple[str, datetime]] = set()
    out = []
    for block in blocks:
        obis = str(block.obis)
        for start, value, _status in block.intervals():
            key = (obis, start)
            if key in seen and seen[key] != value and key not in reported:
                reported.add(key)
                out.append(Finding(DUPLICATE, meter, obis, start, start + block.period,
                                   Quality.SUSPECT, {"first": str(seen[key]), "again": str(value)}))
            seen.setdefault(key, value)
        offset = (block.start - EPOCH) % block.period
        if offset:
            out.append(Finding(SHIFTED, meter, obis, block.start,
                               block.start + len(block.values) * block.period, Quality.SUSPECT,
                               {"offset_s": int(offset.total_seconds())}))
    return out


# ---------------------------------------------------------------------------
# Status flags from the meter
# ---------------------------------------------------------------------------

STATUS_RULES = ((POWER_DOWN, Quality.POWER_DOWN), (CLOCK_INVALID, Quality.CLOCK_INVALID))


def status_flags(meter: str, obis: str, series: Iterable[Point], period: timedelta
                 ) -> list[Finding]:
    """Each run of intervals the meter itself marked power down or clock invalid is a
    finding carrying that flag."""
    ordered = list(series)
    out = []
    for rule, flag in STATUS_RULES:
        starts = [p.start for p in ordered if p.status & flag]
        out += [Finding(rule, meter, obis, a, b, flag, {"intervals": int((b - a) / period)})
                for a, b in _runs(starts, period)]
    return out


def flags_by_interval(findings: Iterable[Finding], period: timedelta
                      ) -> dict[tuple[str, str, datetime], Quality]:
    """The quality flag of each interval (meter, channel, start) the findings cover, OR-ed."""
    out: dict[tuple[str, str, datetime], Quality] = {}
    for f in findings:
        t = f.since
        while t < f.until:
            key = (f.meter, f.obis, t)
            out[key] = out.get(key, Quality.OK) | f.flag
            t += period
    return out
