"""Clock validation: the intervals a meter stamped while its clock was off, and those a
time change shortened or lengthened, found from what is known of the meter's clock.

What is known comes from two places (``evidence``): the clock task's checks, whose jobs
keep the measured deviation and what was done about it (fep.collect.clock's result text:
within bounds, clock set, or alarm), and the meter's own clock events (``clock-set``: time
changed, as an old/new pair where the protocol logs both times; ``clock-deviation``: the
meter or its concentrator saying the clock is invalid or out of tolerance, of unknown size).

Two rules use it (docs/analysis.md, "Clock deviation and time changes"):

- ``clock-deviation``: a check finding the clock off by more than the tolerance means the
  clock went wrong some time after the last good check; the intervals from that check to
  the correction (or the next good check, or the day's end) are SUSPECT and CLOCK_INVALID.
- ``time-change``: a clock set by more than the tolerance moves the meter from the old
  time to the new one inside an interval: set forward, the intervals between the two times
  are short (the meter skipped part of them); set back, they are long (the meter went
  through them twice). Every interval touched between the old and the new time is SUSPECT
  and CLOCK_ADJUSTED.

Pure functions: the store reads the checks and events (fep.analysis.store), the VEE job
(fep.analysis.jobs) calls these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

import attrs

from fep.analysis.rules import CLOCK_DEVIATION, TIME_CHANGE, Finding
from fep.analysis.series import EPOCH
from fep.collect.clock import TIME_SET_RESULT, ClockAction, read_outcome
from fep.model import EventKind, MeterEvent, Quality

# A clock-set event naming one of these is a change of the meter's local time rule, not of
# its clock: UTC (what fep keeps) goes on unchanged.
_SEASON_WORDS = ("daylight", "summer", "winter", "season")
# The halves of a pair: "clock adjusted (old date/time)", "time changed (new time)".
_OLD = re.compile(r"\bold\b")
_NEW = re.compile(r"\bnew\b")


@attrs.frozen
class ClockCheck:
    """What was known of a meter's clock at ``time``: its deviation (meter minus server,
    seconds; None when the meter or its concentrator only said the clock is invalid or out
    of tolerance) and whether it was set right after (``corrected``)."""

    time: datetime
    deviation: float | None
    corrected: bool = False
    source: str = ""


@attrs.frozen
class TimeChange:
    """The meter's clock set from ``old`` to ``new`` (both on the meter's clock, as its
    intervals are stamped); ``new`` None when the size is not known."""

    old: datetime
    new: datetime | None
    source: str = ""

    @property
    def size(self) -> float | None:
        """Seconds the clock moved: positive forward, negative back."""
        return None if self.new is None else (self.new - self.old).total_seconds()


@attrs.frozen
class ClockEvidence:
    checks: tuple[ClockCheck, ...] = ()
    changes: tuple[TimeChange, ...] = ()


def evidence(results: Iterable[tuple[datetime, str]], events: Iterable[MeterEvent]
             ) -> ClockEvidence:
    """A meter's clock checks and time changes from its clock jobs' results (the time the
    job ended, its result text) and its clock events.

    A check that set the clock (``clock set``, deviation d at time t) is also a time
    change from t + d (where the meter's clock was) to t; an operator's ``time-set``
    command is a time change of unknown size. Clock-set events come as an
    old/new pair (DLMS 4/5, ANSI C12.19 3/4: the texts name ``old`` and ``new``); each old
    one is paired with the nearest new one; any other clock-set event is a change of
    unknown size, and one naming daylight saving or summer/winter time is no change at
    all. Clock-deviation events are checks: with the deviation their text gives (fep's own
    alarm), else of unknown size."""
    checks: list[ClockCheck] = []
    changes: list[TimeChange] = []
    for at, text in results:
        if text == TIME_SET_RESULT:  # an operator's time-set: set, by an unknown amount
            changes.append(TimeChange(at, None, "time-set command"))
            continue
        read = read_outcome(text)
        if read is None:
            continue
        deviation, action = read
        corrected = action == ClockAction.SET
        checks.append(ClockCheck(at, deviation, corrected, "clock task"))
        if corrected:
            changes.append(TimeChange(at + timedelta(seconds=deviation), at, "clock task"))
    olds: list[MeterEvent] = []
    news: list[MeterEvent] = []
    for e in events:
        text = e.text.lower()
        if e.kind == EventKind.CLOCK_DEVIATION:
            read = read_outcome(e.text)
            if read is None or e.source != "fep":  # fep's alarm repeats its job's check
                checks.append(ClockCheck(e.time, None if read is None else read[0],
                                         source=e.code))
        elif e.kind != EventKind.CLOCK_SET or any(w in text for w in _SEASON_WORDS):
            continue
        elif _OLD.search(text):
            olds.append(e)
        elif _NEW.search(text):
            news.append(e)
        else:
            changes.append(TimeChange(e.time, None, e.code))
    for old in sorted(olds, key=lambda e: e.time):
        if news:
            new = min(news, key=lambda e: abs(e.time - old.time))
            news.remove(new)
            changes.append(TimeChange(old.time, new.time, old.code))
        else:
            changes.append(TimeChange(old.time, None, old.code))
    changes += [TimeChange(e.time, None, e.code) for e in news]  # a new time without its old
    return ClockEvidence(tuple(sorted(checks, key=lambda c: c.time)),
                         tuple(sorted(changes, key=lambda c: c.old)))


def _floor(t: datetime, period: timedelta) -> datetime:
    return t - (t - EPOCH) % period


def _touched(a: datetime, b: datetime, period: timedelta, since: datetime, until: datetime
             ) -> tuple[datetime, datetime] | None:
    """The grid intervals touching ``[a, b]`` (at least the one holding ``a``), cut to
    ``[since, until)``; None when none of them is in it."""
    first = _floor(a, period)
    last = _floor(b, period)
    end = last + period if b > last or last == first else last
    first, end = max(first, since), min(end, until)
    return (first, end) if first < end else None


def _seconds(value: float) -> str:
    return f"{value:+.1f}"


def deviations(meter: str, obis: str, evidence: ClockEvidence, since: datetime,
               until: datetime, period: timedelta, *, tolerance: timedelta
               ) -> list[Finding]:
    """Each spell of the meter's clock off by more than ``tolerance`` (a check above it, or
    of unknown size) that touches the day ``[since, until)``: from the last good check (a
    check within the tolerance, or a correction: a check that set the clock, or a time
    change) to the correction, else to the next good check, else to the day's end. With no
    good check before, the spell starts at the day's start. A finding flagged SUSPECT and
    CLOCK_INVALID over the intervals it touches."""
    limit = tolerance.total_seconds()
    # Good moments: checks within the tolerance and every correction. Time changes
    # correct the clock (something set it), whatever their size.
    moments: list[tuple[datetime, str, ClockCheck | None]] = []
    for c in evidence.checks:
        bad = c.deviation is None or abs(c.deviation) > limit
        moments.append((c.time, "bad" if bad else "good", c))
        if bad and c.corrected:
            moments.append((c.time, "corrected", c))
    moments += [(ch.new or ch.old, "corrected", None) for ch in evidence.changes]
    order = {"good": 0, "bad": 1, "corrected": 2}
    moments.sort(key=lambda m: (m[0], order[m[1]]))
    out: list[Finding] = []
    last_good: datetime | None = None
    # An open spell: its start (the last good moment, or the day's start), whether a good
    # moment started it, and its first bad check.
    spell: tuple[datetime, bool, ClockCheck] | None = None

    def close(end: datetime, how: str) -> None:
        assert spell is not None
        start, after_good, check = spell
        touched = _touched(start, end, period, since, until)
        if touched is None:
            return
        out.append(Finding(CLOCK_DEVIATION, meter, obis, touched[0], touched[1],
                           Quality.SUSPECT | Quality.CLOCK_INVALID, {
                               "deviation_s": "unknown" if check.deviation is None
                               else _seconds(check.deviation),
                               "checked": check.time.isoformat(), "source": check.source,
                               "tolerance_s": f"{limit:g}",
                               "from": start.isoformat() if after_good else "no good check",
                               "until": f"{how} {end.isoformat()}"}))

    for at, what, check in moments:
        if what == "bad":
            assert check is not None
            if spell is None:
                spell = ((last_good, True, check) if last_good is not None
                         else (min(since, at), False, check))
            continue
        if spell is not None:
            close(at, "corrected" if what == "corrected" else "good check")
            spell = None
        last_good = at
    if spell is not None:
        close(max(until, spell[0]), "not corrected: day end")
    return out


def time_changes(meter: str, obis: str, evidence: ClockEvidence, since: datetime,
                 until: datetime, period: timedelta, *, tolerance: timedelta
                 ) -> list[Finding]:
    """Each time change in the day by more than ``tolerance`` (or of unknown size): a
    finding flagged SUSPECT and CLOCK_ADJUSTED over the intervals touching the span
    between the old and the new time (set forward, they are short; set back, long). A
    change of unknown size flags the interval it falls in."""
    limit = tolerance.total_seconds()
    out: list[Finding] = []
    for change in evidence.changes:
        size = change.size
        if size is not None and abs(size) <= limit:
            continue
        low = change.old if change.new is None else min(change.old, change.new)
        high = change.old if change.new is None else max(change.old, change.new)
        touched = _touched(low, high, period, since, until)
        if touched is None:
            continue
        details = {"old": change.old.isoformat(), "source": change.source,
                   "tolerance_s": f"{limit:g}"}
        if size is None:
            details |= {"size_s": "unknown"}
        else:
            assert change.new is not None
            details |= {"new": change.new.isoformat(), "size_s": _seconds(size),
                        "intervals": "short" if size > 0 else "long"}
        out.append(Finding(TIME_CHANGE, meter, obis, touched[0], touched[1],
                           Quality.SUSPECT | Quality.CLOCK_ADJUSTED, details))
    return out


def clock_findings(meter: str, obis: str, evidence: ClockEvidence, since: datetime,
                   until: datetime, period: timedelta, *, tolerance: timedelta
                   ) -> list[Finding]:
    """Both clock rules over one meter's day."""
    return (deviations(meter, obis, evidence, since, until, period, tolerance=tolerance)
            + time_changes(meter, obis, evidence, since, until, period, tolerance=tolerance))
