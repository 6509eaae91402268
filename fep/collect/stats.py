"""Communication statistics: how many jobs succeeded, at the first attempt and after retries,
per day and per task, route, channel type and meter, and per task run.

The job store keeps the counts (table ``collect_stats``, updated in the transaction that
records a job's end); this module names the scopes and computes the rates.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import attrs

SCOPES = ("task", "route", "channel", "meter")


def day_of(t: float) -> str:
    """The UTC day (YYYY-MM-DD) a time falls on."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def channel_of(route: str) -> str:
    """The channel type of a route: its scheme (tcp, serial, gprs, dialup, unix, ...)."""
    return route.partition(":")[0].strip().lower() or "?"


def task_key(task: str | None, kind: str) -> str:
    """The statistics key of a job's task; jobs without one (on-demand reads, commands,
    manual re-collection) count under ``on-demand:KIND``."""
    return task if task else f"on-demand:{kind}"


def scope_keys(task: str | None, kind: str, route: str, resource: str, meter: str) -> list[
    tuple[str, str]
]:
    return [
        ("task", task_key(task, kind)),
        ("route", resource),
        ("channel", channel_of(route)),
        ("meter", meter),
    ]


def _rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


class _Rates:
    """The rates of a count of ended jobs: at the first attempt, and at all."""

    __slots__ = ()
    jobs: int
    first_ok: int
    ok: int

    @property
    def first_pass_rate(self) -> float | None:
        return _rate(self.first_ok, self.jobs)

    @property
    def success_rate(self) -> float | None:
        return _rate(self.ok, self.jobs)


@attrs.frozen
class StatsRow(_Rates):
    """One day's counts for one scope key. ``jobs`` counts jobs that ended (done, failed or
    missed); ``first_ok`` those that succeeded at their first attempt; ``ok`` at all."""

    day: str
    scope: str
    key: str
    jobs: int = 0
    first_ok: int = 0
    ok: int = 0
    failed: int = 0
    missed: int = 0
    attempts: int = 0


@attrs.frozen
class RunStats(_Rates):
    """How the jobs of one task run (task, due time) ended so far; ``open`` are those still
    pending, leased or running."""

    task: str
    due: float
    jobs: int = 0
    first_ok: int = 0
    ok: int = 0
    failed: int = 0
    missed: int = 0
    open: int = 0


def total(rows: Iterable[StatsRow], scope: str = "task") -> StatsRow:
    """The sum of one scope's rows (every job counts once in each scope)."""
    picked = [r for r in rows if r.scope == scope]
    return StatsRow(
        day=min((r.day for r in picked), default=""),
        scope=scope,
        key="*",
        jobs=sum(r.jobs for r in picked),
        first_ok=sum(r.first_ok for r in picked),
        ok=sum(r.ok for r in picked),
        failed=sum(r.failed for r in picked),
        missed=sum(r.missed for r in picked),
        attempts=sum(r.attempts for r in picked),
    )


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"
