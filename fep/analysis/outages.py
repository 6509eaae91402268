"""Outage analysis: outages per meter (from power-down and power-up events, else from the
power-down flags of its intervals), area outages (many members of an area out at once) and
the reliability indices SAIFI, SAIDI, CAIDI and MAIFI of a period (IEEE 1366), customers
being meters.

Outages are cut to the period ``[since, until)``: one already going at ``since`` starts
there (``cut_start``), one still going at ``until`` ends there (``cut_end``). A cut outage
counts in the period as a sustained interruption: what it lasts beyond the period is not
known from the period alone.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal

import attrs

from fep.analysis.series import Point, grid
from fep.model import EventKind, MeterEvent, Quality

DEFAULT_MOMENTARY = timedelta(minutes=5)
DEFAULT_AREA_SHARE = Decimal("0.5")
POWER_KINDS = (EventKind.POWER_OUTAGE, EventKind.POWER_RESTORED)


@attrs.frozen
class Outage:
    """One meter without power over ``[since, until)``, found from ``source`` (``events``
    or ``flags``)."""

    meter: str
    since: datetime
    until: datetime
    source: str = "events"
    cut_start: bool = False
    cut_end: bool = False

    @property
    def duration(self) -> timedelta:
        return self.until - self.since

    def momentary(self, threshold: timedelta = DEFAULT_MOMENTARY) -> bool:
        """IEEE 1366: an interruption of ``threshold`` or less; a cut outage is sustained."""
        return self.duration <= threshold and not (self.cut_start or self.cut_end)

    def as_dict(self) -> dict[str, object]:
        return {"meter": self.meter, "since": self.since, "until": self.until,
                "minutes": _minutes(self.duration), "source": self.source,
                "cut": "/".join(n for n, c in (("start", self.cut_start),
                                                ("end", self.cut_end)) if c)}


def _minutes(span: timedelta) -> Decimal:
    return (Decimal(int(span.total_seconds() * 1000)) / 60000).quantize(Decimal("0.001"))


def _overlaps(a_since: datetime, a_until: datetime, b_since: datetime,
              b_until: datetime) -> bool:
    return a_since < b_until and b_since < a_until


def event_outages(meter: str, events: Iterable[MeterEvent], since: datetime,
                  until: datetime) -> list[Outage]:
    """The meter's outages in ``[since, until)`` from its power-outage (power down, last
    gasp) and power-restored events. Events before ``since`` tell whether the meter was
    already out at ``since``. A down opens an outage, the next up closes it; a second down
    while out (a last gasp and a power-down log entry) and an up without a down before it
    are ignored. An outage still open at ``until`` is cut there."""
    power = sorted((e for e in events if e.kind in POWER_KINDS and e.time < until),
                   key=lambda e: (e.time, e.kind != EventKind.POWER_OUTAGE))
    spans: list[tuple[datetime, datetime | None]] = []
    down: datetime | None = None
    for e in power:
        if e.kind == EventKind.POWER_OUTAGE:
            if down is None:
                down = e.time
        elif down is not None:
            spans.append((down, e.time))
            down = None
    if down is not None:
        spans.append((down, None))
    out = []
    for start, end in spans:
        stop = until if end is None else end
        if stop <= since and end is not None:
            continue
        out.append(Outage(meter, max(start, since), min(stop, until), "events",
                          cut_start=start < since, cut_end=end is None))
    return out


def flag_outages(meter: str, points: Sequence[Point], since: datetime, until: datetime,
                 period: timedelta) -> list[Outage]:
    """The meter's outages in ``[since, until)`` from its intervals' power-down flags: a run
    of flagged intervals, with only intervals the meter did not record at all between them
    (a meter without power records nothing), is one outage from the first flagged
    interval's start to the last one's end. Interval resolution: an upper bound."""
    by_start = {p.start: p for p in points if since <= p.start < until}
    out: list[Outage] = []
    first: datetime | None = None
    last: datetime | None = None
    for t in grid(since, until, period):
        p = by_start.get(t)
        if p is None:
            continue
        if p.status & Quality.POWER_DOWN:
            if first is None:
                first = t
            last = t
        elif first is not None and last is not None:
            out.append(Outage(meter, first, last + period, "flags"))
            first = last = None
    if first is not None and last is not None:
        out.append(Outage(meter, first, min(last + period, until), "flags",
                          cut_end=last + period >= until))
    return out


def meter_outages(meter: str, events: Iterable[MeterEvent], points: Sequence[Point],
                  since: datetime, until: datetime, period: timedelta) -> list[Outage]:
    """The meter's outages in ``[since, until)``: from its events, and from its intervals'
    power-down flags where no event outage overlaps them (events are exact, flags have
    interval resolution)."""
    found = event_outages(meter, events, since, until)
    found += [o for o in flag_outages(meter, points, since, until, period)
              if not any(_overlaps(o.since, o.until, e.since, e.until) for e in found)]
    return sorted(found, key=lambda o: o.since)


def join_days(outages: Iterable[Outage], since: datetime, until: datetime) -> list[Outage]:
    """The outages of the days of ``[since, until)`` (each found in its own day, so cut at
    midnight) as outages of the period: an outage cut at a day's end (``cut_end``) and one
    of the same meter starting at that very time are one outage, from the first's start to
    the second's end. Joined, an outage is cut only at the period's bounds: one cut at a
    day's end that nothing continues ended there (its next day found the meter in power)."""
    joined: list[Outage] = []
    last: dict[str, int] = {}
    for o in sorted(outages, key=lambda o: (o.meter, o.since)):
        n = last.get(o.meter)
        if n is not None and joined[n].cut_end and joined[n].until == o.since:
            joined[n] = attrs.evolve(joined[n], until=o.until, cut_end=o.cut_end)
            continue
        last[o.meter] = len(joined)
        joined.append(o)
    return sorted((attrs.evolve(o, cut_start=o.cut_start and o.since <= since,
                                cut_end=o.cut_end and o.until >= until) for o in joined),
                  key=lambda o: (o.meter, o.since))


@attrs.frozen
class AreaOutage:
    """Many members of an area out at once: ``since`` is when the share was reached,
    ``until`` when it was lost again; ``meters`` are the members out at some time in
    between, ``peak`` the most out at once, of ``members``."""

    area: str
    since: datetime
    until: datetime
    meters: tuple[str, ...]
    peak: int
    members: int
    cut_end: bool = False

    @property
    def duration(self) -> timedelta:
        return self.until - self.since

    def as_dict(self) -> dict[str, object]:
        return {"area": self.area, "since": self.since, "until": self.until,
                "minutes": _minutes(self.duration), "out": len(self.meters),
                "peak": self.peak, "members": self.members,
                "meters": " ".join(self.meters)}


def area_outages(area: str, members: Sequence[str], outages: Iterable[Outage], *,
                 share: Decimal = DEFAULT_AREA_SHARE, until: datetime | None = None
                 ) -> list[AreaOutage]:
    """The area's outages: each time at least ``share`` of its ``members`` were out at once
    (overlapping outages of different members)."""
    members_set = set(members)
    mine = [o for o in outages if o.meter in members_set]
    if not members_set or not mine:
        return []
    need = share * len(members_set)
    # Ends before starts at the same time: outages are half-open.
    marks = sorted([(o.since, 1, o.meter) for o in mine]
                   + [(o.until, -1, o.meter) for o in mine])
    out_now: dict[str, int] = {}
    result: list[AreaOutage] = []
    start: datetime | None = None
    peak = 0
    for t, step, meter in marks:
        out_now[meter] = out_now.get(meter, 0) + step
        if not out_now[meter]:
            del out_now[meter]
        count = len(out_now)
        if start is None and count >= need and count:
            start, peak = t, count
        elif start is not None and count >= need:
            peak = max(peak, count)
        elif start is not None and count < need:
            result.append(_area_outage(area, len(members_set), mine, start, t, peak,
                                       until is not None and t >= until))
            start = None
    return result


def _area_outage(area: str, members: int, outages: Sequence[Outage], since: datetime,
                 until: datetime, peak: int, cut_end: bool) -> AreaOutage:
    meters = sorted({o.meter for o in outages if _overlaps(o.since, o.until, since, until)})
    return AreaOutage(area, since, until, tuple(meters), peak, members, cut_end)


@attrs.frozen
class Indices:
    """The reliability indices of a period over ``customers`` meters (IEEE 1366):

    - SAIFI = Σ Nᵢ / N_T: sustained interruptions per customer served;
    - SAIDI = Σ rᵢ·Nᵢ / N_T: minutes of sustained interruption per customer served;
    - CAIDI = SAIDI / SAIFI = Σ rᵢ·Nᵢ / Σ Nᵢ: the mean minutes of a sustained interruption
      (none without one);
    - MAIFI = Σ IDᵢ·Nₘᵢ / N_T: momentary interruptions per customer served.
    """

    customers: int
    sustained: int
    momentary: int
    customer_minutes: Decimal
    saifi: Decimal | None
    saidi: Decimal | None
    caidi: Decimal | None
    maifi: Decimal | None

    def as_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


_PLACES = Decimal("0.001")


def indices(outages: Iterable[Outage], customers: Sequence[str], *,
            momentary: timedelta = DEFAULT_MOMENTARY) -> Indices:
    """The indices over the ``customers`` (meters) from their outages in the period (as
    cut to it): an outage longer than ``momentary`` is sustained, one of ``momentary`` or
    less momentary (IEEE 1366)."""
    served = set(customers)
    mine = [o for o in outages if o.meter in served]
    sustained = [o for o in mine if not o.momentary(momentary)]
    n_momentary = len(mine) - len(sustained)
    minutes = sum((Decimal(int(o.duration.total_seconds())) / 60 for o in sustained),
                  Decimal(0))
    total = len(served)

    def per(value: Decimal) -> Decimal | None:
        return (value / total).quantize(_PLACES) if total else None

    return Indices(
        total, len(sustained), n_momentary, minutes.quantize(_PLACES),
        per(Decimal(len(sustained))), per(minutes),
        (minutes / len(sustained)).quantize(_PLACES) if sustained else None,
        per(Decimal(n_momentary)))


# Major event days (IEEE 1366, the 2.5 beta method).
MED_BETAS = Decimal("2.5")


def daily_saidi(outages: Iterable[Outage], customers: Sequence[str], *,
                momentary: timedelta = DEFAULT_MOMENTARY) -> dict[date, Decimal]:
    """The SAIDI of each day with a sustained interruption of the ``customers`` (IEEE
    1366): the customer minutes of the sustained interruptions that began on the day (all
    their minutes, however long they last after it) over the customers served."""
    served = set(customers)
    if not served:
        return {}
    minutes: dict[date, Decimal] = {}
    for o in outages:
        if o.meter in served and not o.momentary(momentary):
            day = o.since.date()
            minutes[day] = minutes.get(day, Decimal(0)) + Decimal(
                int(o.duration.total_seconds())) / 60
    return {d: (m / len(served)).quantize(_PLACES) for d, m in sorted(minutes.items())}


def med_threshold(history: Iterable[Decimal]) -> Decimal | None:
    """T_MED = exp(alpha + 2.5 beta) of the daily SAIDI ``history`` (IEEE 1366 2.5 beta):
    alpha and beta the mean and the (sample) standard deviation of the natural logarithms
    of the days' SAIDI, days of SAIDI zero left out. None with fewer than two such days."""
    logs = [math.log(v) for v in history if v > 0]
    if len(logs) < 2:
        return None
    alpha, beta = statistics.fmean(logs), statistics.stdev(logs)
    return Decimal(math.exp(alpha + float(MED_BETAS) * beta)).quantize(_PLACES)


def major_event_days(daily: Mapping[date, Decimal], threshold: Decimal | None) -> list[date]:
    """The days whose SAIDI is above ``threshold`` (none without one)."""
    if threshold is None:
        return []
    return sorted(d for d, v in daily.items() if v > threshold)
