"""Interval series: one meter's one channel as (start, value, status) points, and the
per-interval consumption the analysis works on.

A load-profile channel holds either the energy of each interval (an interval channel, OBIS
value group D = 29, e.g. ``1-0:1.29.0``) or the register's reading at the end of each
interval (a cumulative channel, D = 8 or 9, e.g. ``1-0:1.8.0`` as DLMS profiles capture it).
The consumption of interval ``t`` is the interval value itself, or ``reg(t) - reg(t - 1)``
for a cumulative channel, which needs both readings: one missing reading leaves two
consumptions unknown. A register that passes its modulus (rollover) is counted through:
``reg(t) + modulus - reg(t - 1)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import attrs

from fep.model import IntervalBlock, ObisCode, Quality

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CUMULATIVE_D = (8, 9)


@attrs.frozen
class Point:
    """One interval: its start, value (None when the meter sent none) and status."""

    start: datetime
    value: Decimal | None
    status: Quality = Quality.OK


def quality_text(flags: Quality) -> str:
    """``OK`` or the flag names joined by ``|`` (``ESTIMATED|SUSPECT``)."""
    names = [f.name for f in Quality if f and f in flags and f.name]
    return "|".join(names) if names else "OK"


def is_cumulative(obis: ObisCode) -> bool:
    return obis.d in CUMULATIVE_D


def decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def points(blocks: Iterable[IntervalBlock], obis: ObisCode | None = None) -> list[Point]:
    """The points of the blocks (of one channel when ``obis`` is given), ordered by start;
    values are Decimal, numbers of other types converted, text values None."""
    out = [
        Point(start, decimal(value), status)
        for block in blocks
        if obis is None or block.obis == obis
        for start, value, status in block.intervals()
    ]
    out.sort(key=lambda p: p.start)
    return out


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """``[00:00, 24:00)`` UTC of a day."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def grid(since: datetime, until: datetime, period: timedelta) -> list[datetime]:
    """Interval starts on the epoch grid of ``period`` in ``[since, until)``."""
    offset = (since - EPOCH) % period
    t = since if not offset else since - offset + period
    out = []
    while t < until:
        out.append(t)
        t += period
    return out


def consumption(
    series: Iterable[Point],
    period: timedelta,
    *,
    cumulative: bool,
    modulus: Decimal | None = None,
) -> dict[datetime, Point]:
    """Per-interval consumption by interval start. An interval channel's points are kept as
    they are; a cumulative channel's consumption at ``t`` is the difference of the readings
    at ``t`` and ``t - period`` (the statuses of both OR-ed), present only when both are; a
    decrease of more than half the modulus is a rollover, counted through."""
    by_start = {p.start: p for p in series}
    if not cumulative:
        return dict(sorted(by_start.items()))
    out: dict[datetime, Point] = {}
    for start, point in sorted(by_start.items()):
        before = by_start.get(start - period)
        if before is None or before.value is None or point.value is None:
            continue
        delta = point.value - before.value
        status = before.status | point.status
        if delta < 0 and modulus is not None and before.value - point.value > modulus / 2:
            delta += modulus
            status |= Quality.OVERFLOW
        out[start] = Point(start, delta, status)
    return out


def total(series: Mapping[datetime, Point]) -> Decimal:
    return sum((p.value for p in series.values() if p.value is not None), Decimal(0))


def in_base_unit(value: Decimal | None, scaler: int | None) -> Decimal | None:
    """A stored value (in ``10**scaler`` units: 1.5 kWh is 1.5 with scaler 3) in its base
    unit (1500 Wh), so that meters storing kWh and meters storing Wh add up in one area;
    whole numbers stay plain (1500, not 1.5E+3)."""
    if value is None or not scaler or not value.is_finite():
        return value
    scaled = value.scaleb(int(scaler))
    exponent = scaled.as_tuple().exponent
    return scaled.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else scaled
