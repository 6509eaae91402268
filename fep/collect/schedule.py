"""Task schedules: ``every N`` (aligned to interval boundaries) or a five-field cron line, and
when the next run after a given time falls.

Times are POSIX seconds (UTC), as the reactor's clock gives them. Forms::

    every 15m            at :00, :15, :30, :45 of every hour (boundaries of the epoch grid)
    every 1d +2h30m      every day at 02:30 UTC
    every 90s            at multiples of 90 s since the epoch
    */15 * * * *         cron: minute hour day-of-month month day-of-week (0 or 7 = Sunday), UTC
    0 2 * * 1-5          02:00 on weekdays

Units: s, m, h, d (``every 900`` means seconds).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import attrs

from fep.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# How far ahead a cron line is searched before it is declared one that never fires.
_CRON_SEARCH_DAYS = 366 * 5


def parse_duration(text: str, key: str = "duration") -> float:
    """``15m``, ``1h``, ``90s``, ``2d``, ``900`` (seconds) -> seconds. Compound forms like
    ``2h30m`` are accepted."""
    total = 0.0
    rest = text.strip()
    if not rest:
        raise ConfigError(f"empty {key}", key=key)
    for part in re.findall(r"\d+(?:\.\d+)?\s*[smhd]?", rest):
        m = _DURATION.match(part)
        assert m is not None
        total += float(m[1]) * _UNITS[m[2]]
    if re.sub(r"\d+(?:\.\d+)?\s*[smhd]?", "", rest).strip():
        raise ConfigError(f"{key} {text!r}: expected e.g. 15m, 1h, 2h30m, 90s, 1d", key=key)
    return total


def format_duration(seconds: float) -> str:
    """The short form of a duration: 900 -> ``15m``, 5400 -> ``1h30m``."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    left = int(seconds)
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if left >= size:
            out += f"{left // size}{unit}"
            left %= size
    if left or not out:
        out += f"{left}s"
    return out


@attrs.frozen
class Every:
    """Every ``period`` seconds on the epoch grid, shifted by ``offset``."""

    period: float
    offset: float = 0.0

    def next_after(self, t: float) -> float:
        k = (t - self.offset) // self.period + 1
        return self.offset + k * self.period

    def __str__(self) -> str:
        text = f"every {format_duration(self.period)}"
        if self.offset:
            text += f" +{format_duration(self.offset)}"
        return text


def _cron_field(text: str, low: int, high: int, name: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, _, step_text = part.partition("/")
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name}: bad step {step_text!r}")
            step = int(step_text)
        if part == "*":
            lo, hi = low, high
        elif "-" in part:
            a, _, b = part.partition("-")
            if not (a.isdigit() and b.isdigit()):
                raise ValueError(f"{name}: bad range {part!r}")
            lo, hi = int(a), int(b)
        elif part.isdigit():
            lo = hi = int(part)
            if step != 1:
                hi = high
        else:
            raise ValueError(f"{name}: {part!r} is not a number, range or *")
        if not (low <= lo <= high and low <= hi <= high and lo <= hi):
            raise ValueError(f"{name}: {part!r} outside {low}..{high}")
        values.update(range(lo, hi + 1, step))
    return frozenset(values)


@attrs.frozen
class Cron:
    """A five-field cron line in UTC: minute hour day-of-month month day-of-week. As in cron,
    when both day fields are restricted a day matching either runs."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        fields = text.split()
        if len(fields) != 5:
            raise ValueError("a cron line has five fields: minute hour day month weekday")
        weekdays = _cron_field(fields[4], 0, 7, "day of week")
        if 7 in weekdays:
            weekdays = (weekdays - {7}) | {0}
        return cls(
            text=" ".join(fields),
            minutes=_cron_field(fields[0], 0, 59, "minute"),
            hours=_cron_field(fields[1], 0, 23, "hour"),
            days=_cron_field(fields[2], 1, 31, "day of month"),
            months=_cron_field(fields[3], 1, 12, "month"),
            weekdays=weekdays,
            any_day=fields[2] == "*",
            any_weekday=fields[4] == "*",
        )

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow

    def next_after(self, t: float) -> float:
        start = datetime.fromtimestamp(t, UTC).replace(second=0, microsecond=0)
        start += timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for _ in range(_CRON_SEARCH_DAYS):
            if self._day_matches(day):
                first_day = day.date() == start.date()
                for hour in sorted(self.hours):
                    if first_day and hour < start.hour:
                        continue
                    for minute in sorted(self.minutes):
                        at = day.replace(hour=hour, minute=minute)
                        if at >= start:
                            return at.timestamp()
            day += timedelta(days=1)
        raise ValueError(f"cron line {self.text!r} never fires")

    def __str__(self) -> str:
        return self.text


Schedule = Every | Cron


def parse_schedule(text: str) -> Schedule:
    """A schedule from its text (see the module doc); ConfigError says what is wrong."""
    stripped = text.strip()
    try:
        if stripped.lower().startswith("every"):
            rest = stripped[5:].strip()
            period_text, _, offset_text = rest.partition("+")
            period = parse_duration(period_text, "schedule")
            offset = parse_duration(offset_text, "schedule") if offset_text.strip() else 0.0
            if period <= 0:
                raise ValueError("the period must be positive")
            return Every(period, offset % period)
        return Cron.parse(stripped)
    except (ValueError, ConfigError) as e:
        message = e.message if isinstance(e, ConfigError) else str(e)
        raise ConfigError(
            f"schedule {text!r}: {message} (use e.g. 'every 15m', 'every 1d +2h' or a cron "
            "line '*/15 * * * *')",
            key="schedule",
        ) from None
