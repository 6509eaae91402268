"""The read of the meters behind a concentrator, sans-IO: what the collection engine's
concentrator job asks (``fep.model.PointRead``: a meter's point, its current values, daily
frozen values, curve ranges) as Q/GDW 1376.1 requests, several points per request, and the
outcome of each point once the session ends.

Points that need the same data are asked together (up to ``POINTS_PER_REQUEST`` per request,
multi-frame answers as the terminal's frame size needs). What is asked:

- ``current``: the read's items (``0C:F129`` style names), by default class 1 F129 (forward
  active energy indications) and F25 (instantaneous values); items of other kinds and the
  terminal's own (F2 clock, class 3 events) are left out;
- ``daily``: class 2 F161 (daily frozen forward active energy) of each terminal-local day
  whose 00:00 is one of the times asked;
- ``ranges``: class 2 F101 (forward active energy per interval) at the density of the
  period (15 min: density 1), the points that close the intervals starting in each range.

A point's outcome: ``read`` when every request for it was answered with its data,
``no-data`` when an answer lacked it, ``denied`` or ``no-answer`` when a request for it was
denied or went unanswered after its resends, ``unanswered`` when the session ended first.
No Twisted here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final

import attrs

from fep.model import ObisCode, PointOutcome, PointRead, PointsRead, PointStatus, Record
from fep.protocols.gw3761 import services
from fep.protocols.gw3761.client import (
    CLOCK_SET,
    POINTS_PER_REQUEST,
    Action,
    ClientSettings,
    Gw3761Client,
    parse_item,
)
from fep.protocols.gw3761.exchange import Step
from fep.protocols.gw3761.frames import Afn
from fep.protocols.gw3761.records import CURVES, RecordMapper
from fep.protocols.gw3761.services import CurveRequest, Item

CURRENT_ITEMS: Final = ((int(Afn.CLASS1), 129), (int(Afn.CLASS1), 25))
DAILY_FN: Final = 161
CURVE_FN: Final = 101
# Interval period -> the curve density code (A.?? of class 2 curves).
DENSITIES: Final = {minutes: code for code, minutes in services.DENSITY_MINUTES.items()}

_DENIED = "denied: no data"


def curve_channel() -> str:
    """The OBIS code (text) of the curve a range read stores: F101's."""
    c, d, *_ = CURVES[CURVE_FN]
    return str(ObisCode(1, 0, c, d, 0))


def daily_times(tz: tzinfo, since: datetime, until: datetime) -> list[datetime]:
    """The UTC times (terminal-local 00:00) of the daily values of the days in
    ``[since, until)``."""
    out: list[datetime] = []
    day = since.astimezone(tz).date()
    while True:
        at = datetime.combine(day, time(), tz).astimezone(UTC)
        if at >= until:
            return out
        if at >= since:
            out.append(at)
        day += timedelta(days=1)


def current_items(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """The per-point items among ``names`` (AFN:Fn; other names are the meters' own
    protocol's and left out); the defaults when none is left."""
    items: list[tuple[int, int]] = []
    for name in names:
        try:
            afn, fn = parse_item(name)
        except ValueError:
            continue
        if afn == Afn.CLASS3 or (afn == Afn.CLASS1 and fn == 2):
            continue  # the terminal's own: events, its clock
        items.append((afn, fn))
    return tuple(items) or CURRENT_ITEMS


class _SeenMapper(RecordMapper):
    """The record mapper noting the points each answer had data for."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.seen: set[int] = set()

    def item_records(self, afn: int, item: Item, received: datetime) -> list[Record]:
        self.seen.add(item.point)
        return super().item_records(afn, item, received)


@attrs.frozen
class _Group:
    """Points that need the same data."""

    current: bool
    items: tuple[tuple[int, int], ...]
    days: tuple[date, ...]
    ranges: tuple[tuple[datetime, datetime], ...]  # terminal-local first and last+1 points
    density: int


class PointsClient(Gw3761Client):
    """Reads ``reads`` of one concentrator (``settings``: its address, zone, resends)."""

    def __init__(self, settings: ClientSettings, reads: Sequence[PointRead],
                 now: Callable[[], datetime] | None = None) -> None:  # fmt: skip
        point_meters = tuple((r.point, r.meter) for r in reads)
        super().__init__(attrs.evolve(settings, point_meters=point_meters, items=(),
                                      set_clock=False, name_points=True), now)  # fmt: skip
        s = self.settings
        self.seen = _SeenMapper(s.meter or str(s.address), dict(point_meters), s.tz,
                                name_points=True)  # fmt: skip
        self.mapper = self.seen
        self.reads = tuple(reads)
        self._asked: dict[str, tuple[int, ...]] = {}
        self._pending: Counter[int] = Counter()
        self._failure: dict[int, tuple[PointStatus, str]] = {}
        # The requests were made (the session connected and started).
        self.started = False

    # -- the requests -----------------------------------------------------------------------

    def _group_of(self, read: PointRead) -> _Group:
        tz = self.settings.tz
        minutes = int(read.period.total_seconds() // 60)
        density = DENSITIES.get(minutes)
        ranges: list[tuple[datetime, datetime]] = []
        if read.ranges and density is None:
            raise ValueError(f"no curve density of {minutes} min")
        for lo, hi in read.ranges:
            first = (lo + read.period).astimezone(tz).replace(tzinfo=None)
            end = (hi + read.period).astimezone(tz).replace(tzinfo=None)
            ranges.append((first, end))
        days = tuple(t.astimezone(tz).date() for t in read.daily)
        items = current_items(read.items) if read.current else ()
        return _Group(read.current, items, days, tuple(ranges), density or 1)

    def _step(self, what: str, afn: int, units: list[bytes], points: Sequence[int]) -> Step:
        what = f"#{len(self._asked) + 1} {what}"
        self._asked[what] = tuple(points)
        self._pending.update(points)
        return Step(what, afn, b"".join(units))

    def _curve_requests(self, fn: int, points: Sequence[int], first: datetime, end: datetime,
                        density: int) -> list[Step]:  # fmt: skip
        step = timedelta(minutes=services.DENSITY_MINUTES[density])
        out = []
        start = first
        while start < end:
            count = min(int((end - start) / step), 96)
            if count <= 0:
                break
            units = services.request_units(Afn.CLASS2, points, [fn],
                                           CurveRequest(start, density, count))  # fmt: skip
            out.append(self._step(f"0D:F{fn} P{points[0]}.. from {start.isoformat()}",
                                  int(Afn.CLASS2), units, points))  # fmt: skip
            start += count * step
        return out

    def _plan(self) -> list[Step]:
        self.started = True
        groups: dict[_Group, list[int]] = {}
        for read in self.reads:
            groups.setdefault(self._group_of(read), []).append(read.point)
        plan: list[Step] = []
        for group, all_points in groups.items():
            ordered = sorted(set(all_points))
            for at in range(0, len(ordered), POINTS_PER_REQUEST):
                points = ordered[at : at + POINTS_PER_REQUEST]
                for afn, fn in group.items:
                    if afn == Afn.CLASS2 and fn in services.CURVE_FNS:
                        plan += self._curve_requests(fn, points, *self._yesterday(), 1)
                        continue
                    units = services.request_units(afn, points, [fn], self._value(afn, fn))
                    plan.append(self._step(f"{afn:02X}:F{fn} P{points[0]}..", afn, units,
                                           points))  # fmt: skip
                for day in group.days:
                    units = services.request_units(Afn.CLASS2, points, [DAILY_FN], day)
                    plan.append(self._step(f"0D:F{DAILY_FN} P{points[0]}.. of {day}",
                                           int(Afn.CLASS2), units, points))  # fmt: skip
                for first, end in group.ranges:
                    plan += self._curve_requests(CURVE_FN, points, first, end, group.density)
        return plan

    def _yesterday(self) -> tuple[datetime, datetime]:
        today = self._local_now().date()
        step = timedelta(minutes=15)
        midnight = datetime.combine(today, time())
        return midnight - timedelta(days=1) + step, midnight + step

    # -- keeping count ----------------------------------------------------------------------

    def _next(self) -> list[Action]:
        if self._current is not None and self._current.what != CLOCK_SET:
            self._ended_request(self._current.what)
        self.seen.seen.clear()
        return super()._next()

    def _ended_request(self, what: str) -> None:
        points = self._asked.get(what, ())
        skipped = self.skipped[-1][1] if self.skipped and self.skipped[-1][0] == what else None
        for point in points:
            self._pending[point] -= 1
            if point in self._failure:
                continue
            if skipped == _DENIED:
                self._failure[point] = (PointStatus.DENIED, f"{what}: denied by the "
                                                            "concentrator (no data)")
            elif skipped == "no answer":
                self._failure[point] = (PointStatus.NO_ANSWER, f"{what}: no answer")
            elif skipped is not None:
                self._failure[point] = (PointStatus.NO_DATA, f"{what}: {skipped}")
            elif point not in self.seen.seen:
                self._failure[point] = (PointStatus.NO_DATA, f"{what}: no data for P{point} "
                                                             "in the answer")

    def result(self, error: Exception | None = None) -> PointsRead:
        """The records and each point's outcome; ``error``: what ended the session early."""
        counts = Counter(r.meter for r in self.records)
        outcomes = []
        for read in self.reads:
            if self._pending[read.point] > 0 or not self.started:
                why = f"not read: {error}" if error is not None else "not read"
                status, text = PointStatus.UNANSWERED, why
            elif read.point in self._failure:
                status, text = self._failure[read.point]
            else:
                status, text = PointStatus.READ, ""
            outcomes.append(PointOutcome(read.meter, read.point, status, counts[read.meter],
                                         text or None))  # fmt: skip
        return PointsRead(tuple(self.records), tuple(outcomes), error)


__all__ = ["CURRENT_ITEMS", "PointsClient", "curve_channel", "current_items", "daily_times"]
