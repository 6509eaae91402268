"""Load-profile gaps: which intervals of a meter's stored series are missing over a horizon,
as time ranges to read again.

Intervals are named by their start and lie on the epoch grid of their period (a 15-minute
profile has intervals starting at :00, :15, :30, :45). A meter's series is every channel
(OBIS code) stored for it within the horizon; an interval is missing when any of those
channels lacks it, or every interval when nothing is stored yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from fep.model import IntervalBlock

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Range = tuple[datetime, datetime]


def floor_to(t: datetime, period: timedelta) -> datetime:
    """The start of the grid interval ``t`` falls in."""
    return _EPOCH + ((t - _EPOCH) // period) * period


def grid(since: datetime, until: datetime, period: timedelta) -> list[datetime]:
    """Starts of the whole grid intervals in ``[since, until)`` (an interval counts when it
    has ended by ``until``)."""
    first = floor_to(since, period)
    if first < since:
        first += period
    out = []
    t = first
    while t + period <= until:
        out.append(t)
        t += period
    return out


def stored_starts(blocks: Iterable[IntervalBlock]) -> dict[str, set[datetime]]:
    """Interval starts per channel (str of the OBIS code)."""
    series: dict[str, set[datetime]] = {}
    for block in blocks:
        starts = series.setdefault(str(block.obis), set())
        for i in range(len(block.values)):
            starts.add(block.start + i * block.period)
    return series


def missing(
    blocks: Iterable[IntervalBlock], since: datetime, until: datetime, period: timedelta,
    expected: Sequence[datetime] | None = None,
) -> list[datetime]:
    """Starts of the grid intervals in ``[since, until)`` some channel lacks (``expected``:
    the starts instead of the epoch grid, for a profile of local days or calendar months)."""
    expected = grid(since, until, period) if expected is None else list(expected)
    series = stored_starts(blocks)
    if not series:
        return expected
    return [t for t in expected if any(t not in starts for starts in series.values())]


def ranges(
    starts: Sequence[datetime], period: timedelta, *, join: int = 4, most: int = 4
) -> list[Range]:
    """Missing interval starts as ``[since, until)`` ranges to read: runs less than ``join``
    intervals apart are read as one, and at most ``most`` ranges are made (the last one then
    covers the rest)."""
    out: list[list[datetime]] = []
    for t in sorted(starts):
        if out and t - out[-1][1] < join * period:
            out[-1][1] = t + period
        else:
            out.append([t, t + period])
    if len(out) > most:
        out = [*out[: most - 1], [out[most - 1][0], out[-1][1]]]
    return [(a, b) for a, b in out]
