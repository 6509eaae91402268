"""Estimation: values for the intervals a meter's consumption lacks, each marked with its
method and source, kept apart from the real values (fep.analysis.store) and never preferred
to a real value: ``merge`` lets a re-collected real value win at query time.

Methods, in the order ``fill`` tries them for a gap:

- ``prorate``: the register advance across the gap is known (a cumulative channel's
  readings on both sides, or the day's register readings): it is shared over the missing
  intervals in proportion to a profile (the similar days' values), or evenly without one.
- ``interpolate``: a gap of at most ``max_interpolate`` intervals with a real value on both
  sides: a straight line between the neighbours.
- ``profile``: the mean of the same interval of the meter's similar days (same weekday in
  the weeks before, else the days before).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import attrs

from fep.analysis.series import Point
from fep.model import Quality

INTERPOLATE = "interpolate"
PROFILE = "profile"
PRORATE = "prorate"
METHODS = (INTERPOLATE, PROFILE, PRORATE)

_PLACES = Decimal("0.001")


@attrs.frozen
class Estimate:
    """An estimated consumption for one interval: how it was made and from what."""

    meter: str
    obis: str
    start: datetime
    value: Decimal
    method: str
    source: str


def gaps(starts: Sequence[datetime], present: Iterable[datetime], period: timedelta
         ) -> list[list[datetime]]:
    """The runs of consecutive starts (of ``starts``) that are not ``present``."""
    have = set(present)
    out: list[list[datetime]] = []
    for t in sorted(starts):
        if t in have:
            continue
        if out and out[-1][-1] + period == t:
            out[-1].append(t)
        else:
            out.append([t])
    return out


def interpolate(gap: Sequence[datetime], before: Point, after: Point) -> list[Decimal]:
    """Values on the straight line from ``before`` to ``after`` at each start of ``gap``:
    ``v(t) = a + (b - a) * (t - t_a) / (t_b - t_a)``."""
    assert before.value is not None and after.value is not None
    span = (after.start - before.start).total_seconds()
    return [
        (before.value + (after.value - before.value)
         * Decimal((t - before.start).total_seconds()) / Decimal(span)).quantize(_PLACES)
        for t in gap
    ]


def similar_days(day: datetime, available: Iterable[datetime], count: int) -> list[datetime]:
    """Up to ``count`` earlier days like ``day`` (midnights): the same weekday first, most
    recent first, then the other days before it, most recent first."""
    earlier = sorted((d for d in set(available) if d < day), reverse=True)
    same = [d for d in earlier if d.weekday() == day.weekday()]
    other = [d for d in earlier if d.weekday() != day.weekday()]
    return (same + other)[:count]


def profile(gap: Sequence[datetime], days: Mapping[datetime, Mapping[datetime, Point]]
            ) -> list[Decimal | None]:
    """For each start of ``gap``, the mean value of the same time of day over the similar
    days given (each day's series by start, keyed by its midnight); None where none has it."""
    out: list[Decimal | None] = []
    for t in gap:
        midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
        values = []
        for day, series in days.items():
            p = series.get(day + (t - midnight))
            if p is not None and p.value is not None:
                values.append(p.value)
        out.append((sum(values, Decimal(0)) / len(values)).quantize(_PLACES) if values else None)
    return out


def prorate(advance: Decimal, weights: Sequence[Decimal | None]) -> list[Decimal]:
    """``advance`` shared over the intervals in proportion to their weights (evenly when a
    weight is missing or they sum to zero); the last share takes the rounding rest so the
    shares sum to ``advance`` exactly."""
    n = len(weights)
    if n == 0:
        return []
    if any(w is None for w in weights) or sum((w for w in weights if w), Decimal(0)) <= 0:
        parts = [Decimal(1)] * n
    else:
        parts = [w for w in weights if w is not None]
    whole = sum(parts, Decimal(0))
    shares = [(advance * w / whole).quantize(_PLACES) for w in parts[:-1]]
    shares.append(advance - sum(shares, Decimal(0)))
    return shares


def fill(
    meter: str,
    obis: str,
    starts: Sequence[datetime],
    usage: Mapping[datetime, Point],
    period: timedelta,
    *,
    max_interpolate: int,
    history: Mapping[datetime, Mapping[datetime, Point]] | None = None,
    advances: Mapping[tuple[datetime, datetime], Decimal] | None = None,
) -> list[Estimate]:
    """Estimates for every interval of ``starts`` that ``usage`` lacks.

    ``advances`` maps a gap ``(first start, last start)`` to the register advance known over
    it (prorated first); short gaps between two real values are interpolated; the rest come
    from ``history`` (similar days, by midnight), prorated over the profile when an advance
    is known. Intervals no method can fill stay missing."""
    have = {t for t, p in usage.items() if p.value is not None}
    out: list[Estimate] = []
    for gap in gaps(starts, have, period):
        weights = profile(gap, history or {})
        sources = ",".join(sorted(d.date().isoformat() for d in (history or {})))
        advance = (advances or {}).get((gap[0], gap[-1]))
        if advance is not None:
            values = prorate(advance, weights)
            out += [Estimate(meter, obis, t, v, PRORATE,
                             f"register advance {advance}" + (f"; profile {sources}"
                                                              if None not in weights else ""))
                    for t, v in zip(gap, values, strict=True)]
            continue
        before, after = usage.get(gap[0] - period), usage.get(gap[-1] + period)
        if (len(gap) <= max_interpolate and before is not None and after is not None
                and before.value is not None and after.value is not None):
            out += [Estimate(meter, obis, t, v, INTERPOLATE,
                             f"{before.start.isoformat()}..{after.start.isoformat()}")
                    for t, v in zip(gap, interpolate(gap, before, after), strict=True)]
            continue
        out += [Estimate(meter, obis, t, v, PROFILE, f"similar days {sources}")
                for t, v in zip(gap, weights, strict=True) if v is not None]
    return out


def merge(real: Mapping[datetime, Point], estimates: Iterable[Estimate]
          ) -> dict[datetime, Point]:
    """The series the balance uses: every real value, and an estimate (flagged ESTIMATED)
    only where no real value is: a value re-collected later always wins."""
    out = {t: p for t, p in real.items() if p.value is not None}
    for e in estimates:
        if e.start not in out:
            out[e.start] = Point(e.start, e.value, Quality.ESTIMATED)
    return dict(sorted(out.items()))
