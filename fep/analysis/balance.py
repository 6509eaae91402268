"""The energy balance of an area: what entered it (summary meters) against what its members
consumed, the loss and the loss rate, per interval and per day.

For each interval ``t``::

    input(t)       = sum of the summary meters measuring ``in`` - sum of those measuring ``out``
    consumption(t) = sum of the members' consumption
    loss(t)        = input(t) - consumption(t)
    loss rate(t)   = loss(t) / input(t) * 100 %        (none when input(t) = 0)

The day is the sum of its intervals. ``complete`` is the share of members (in %) with a real
value in every interval of the range; ``estimated`` the share of member values that are
estimates. An interval counts only when every summary meter has a value for it (a balance
with half its input is no balance); the members' missing values count as zero and lower
``complete``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import attrs

from fep.analysis.areas import Direction
from fep.analysis.series import Point
from fep.model import Quality

_RATE = Decimal("0.001")

Series = Mapping[datetime, Point]


def summary_input(
    summary: Mapping[str, tuple[Direction, Series]], t: datetime
) -> tuple[Decimal, Quality] | None:
    """An area's input at ``t`` from its summary meters (what flows in added, what flows
    out taken away) and their statuses OR-ed; None when one of them has no value then."""
    energy = Decimal(0)
    status = Quality.OK
    for direction, series in summary.values():
        p = series.get(t)
        if p is None or p.value is None:
            return None
        energy += p.value if direction == Direction.IN else -p.value
        status |= p.status
    return energy, status


@attrs.frozen
class BalanceRow:
    """The balance of one area over ``[since, until)``."""

    area: str
    since: datetime
    until: datetime
    input: Decimal
    consumption: Decimal
    loss: Decimal
    loss_rate: Decimal | None
    members: int
    complete: Decimal
    estimated: Decimal
    intervals: int

    def as_dict(self) -> dict[str, object]:
        return {
            "area": self.area, "since": self.since, "until": self.until,
            "input": self.input, "consumption": self.consumption, "loss": self.loss,
            "loss_rate": self.loss_rate, "members": self.members, "complete": self.complete,
            "estimated": self.estimated, "intervals": self.intervals,
        }


def _rate(loss: Decimal, energy: Decimal) -> Decimal | None:
    return None if energy == 0 else (loss / energy * 100).quantize(_RATE)


def balance(
    area: str,
    starts: Sequence[datetime],
    period: timedelta,
    summary: Mapping[str, tuple[Direction, Series]],
    members: Mapping[str, Series],
) -> tuple[list[BalanceRow], BalanceRow]:
    """The balance of each interval of ``starts`` and of the whole range."""
    rows: list[BalanceRow] = []
    member_complete = {m: True for m in members}
    member_values = estimated_values = 0
    total_in = total_use = Decimal(0)
    counted = 0
    for t in starts:
        given = summary_input(summary, t)
        whole = given is not None
        energy = given[0] if given is not None else Decimal(0)
        use = Decimal(0)
        real = estimated = 0
        for meter, series in members.items():
            p = series.get(t)
            if p is None or p.value is None:
                member_complete[meter] = False
                continue
            use += p.value
            if p.status & Quality.ESTIMATED:
                estimated += 1
                member_complete[meter] = False
            else:
                real += 1
        member_values += real + estimated
        estimated_values += estimated
        if not whole:
            continue
        counted += 1
        total_in += energy
        total_use += use
        n = len(members) or 1
        rows.append(BalanceRow(
            area, t, t + period, energy, use, energy - use, _rate(energy - use, energy),
            len(members), (Decimal(real) / n * 100).quantize(_RATE),
            (Decimal(estimated) / n * 100).quantize(_RATE), 1))
    n = len(members) or 1
    day = BalanceRow(
        area, starts[0] if starts else datetime.min, (starts[-1] + period) if starts
        else datetime.min, total_in, total_use, total_in - total_use,
        _rate(total_in - total_use, total_in), len(members),
        (Decimal(sum(member_complete.values())) / n * 100).quantize(_RATE),
        (Decimal(estimated_values) / (member_values or 1) * 100).quantize(_RATE), counted)
    return rows, day


@attrs.frozen
class Band:
    """The loss rate an area is expected to stay within, in %."""

    low: Decimal = Decimal(0)
    high: Decimal = Decimal(10)


def out_of_band(row: BalanceRow, band: Band) -> str | None:
    """Why the row's loss rate is an alarm (negative: likely wiring, meter or archive error;
    above or below the band), or None."""
    if row.loss_rate is None:
        return None
    if row.loss_rate < 0:
        return (f"area {row.area}: negative loss {row.loss_rate} % (input {row.input},"
                f" consumption {row.consumption}): wiring, meter or archive error?")
    if row.loss_rate > band.high:
        return f"area {row.area}: loss {row.loss_rate} % above {band.high} %"
    if row.loss_rate < band.low:
        return f"area {row.area}: loss {row.loss_rate} % below {band.low} %"
    return None


@attrs.frozen
class Rank:
    """An area's place by loss: its loss rate, the rate of the period before and the change."""

    area: str
    loss_rate: Decimal | None
    before: Decimal | None
    change: Decimal | None

    def as_dict(self) -> dict[str, object]:
        return {"area": self.area, "loss_rate": self.loss_rate, "before": self.before,
                "change": self.change}


def rank(rows: Sequence[BalanceRow], before: Sequence[BalanceRow], *, by: str = "loss"
         ) -> list[Rank]:
    """Areas ordered by loss rate (``by="loss"``) or by its rise since the period before
    (``by="change"``), highest first; areas without a rate (or a change) come last."""
    previous = {r.area: r.loss_rate for r in before}
    ranks = []
    for r in rows:
        old = previous.get(r.area)
        change = None if r.loss_rate is None or old is None else r.loss_rate - old
        ranks.append(Rank(r.area, r.loss_rate, old, change))
    key = (lambda x: x.loss_rate) if by == "loss" else (lambda x: x.change)
    return sorted(ranks, key=lambda x: (key(x) is None, -(key(x) or 0), x.area))
