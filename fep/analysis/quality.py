"""The quality share of a day's intervals: how many the analysis holds as valid (a real value
that passed validation), suspect (a real value a rule flagged), estimated, edited (an
operator's applied replacement or acceptance) or missing (no value at all). Pure functions;
``jobs.run_vee`` counts each meter's day and the store keeps the counts and the day's sum
(the status page's chart of validated against estimated intervals)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import date, datetime

import attrs

from fep.model import Quality

# The classes, in the order the status page stacks them.
CLASSES = ("valid", "suspect", "estimated", "edited", "missing")


@attrs.frozen
class DayQuality:
    """The counts of one day's intervals by class (of one meter, or summed over meters)."""

    day: date
    meters: int = 0
    intervals: int = 0
    valid: int = 0
    suspect: int = 0
    estimated: int = 0
    edited: int = 0
    missing: int = 0

    def __add__(self, other: DayQuality) -> DayQuality:
        return DayQuality(self.day, *(getattr(self, f) + getattr(other, f) for f in (
            "meters", "intervals", *CLASSES)))

    def as_dict(self) -> dict[str, object]:
        return {"day": self.day.isoformat(), "meters": self.meters,
                "intervals": self.intervals,
                **{c: getattr(self, c) for c in CLASSES}}


def classify(starts: Sequence[datetime], real: Collection[datetime],
             flags: Mapping[datetime, Quality], estimated: Collection[datetime],
             edited: Collection[datetime]) -> dict[str, int]:
    """Count each interval of ``starts`` in one class, the first that applies: edited (an
    applied edit), suspect (a real value flagged SUSPECT), valid (another real value),
    estimated, missing."""
    counts = dict.fromkeys(CLASSES, 0)
    for t in starts:
        if t in edited:
            counts["edited"] += 1
        elif t in real:
            counts["suspect" if flags.get(t, Quality.OK) & Quality.SUSPECT else "valid"] += 1
        elif t in estimated:
            counts["estimated"] += 1
        else:
            counts["missing"] += 1
    return counts


def meter_day(day: date, starts: Sequence[datetime], real: Collection[datetime],
              flags: Mapping[datetime, Quality], estimated: Collection[datetime],
              edited: Collection[datetime]) -> DayQuality:
    """One meter's day: ``classify``'s counts over its grid."""
    return DayQuality(day, 1, len(starts), **classify(starts, real, flags, estimated, edited))


def total(day: date, meters: Iterable[DayQuality]) -> DayQuality:
    """The sum of the meters' counts of ``day``."""
    out = DayQuality(day)
    for m in meters:
        out = out + m
    return out
