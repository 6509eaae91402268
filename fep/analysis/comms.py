"""Communication analysis: the collection success rate over a period, from the outcomes of
the jobs the collection engine recorded (the job store's ``jobs``), per meter, per area, per
channel (the route's kind), per route that several meters share, per concentrator and over
all, against a target (98 % by
default); the meters below the target with their last error; and suspected outages from
communication loss (every meter of an area silent in a collection cycle).

A job counts once it ended (done, failed or missed), in the period its end falls in; a job
of a command (disconnect, time set...) is no collection and does not count. A job is ok when
it ended done, whatever its attempts; the rate is ok jobs over ended jobs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

import attrs

from fep.analysis.areas import AreaKind, Network
from fep.collect.stats import channel_of

DEFAULT_TARGET = Decimal("0.98")
SCOPES = ("all", "area", "channel", "route", "concentrator", "meter")


@attrs.frozen
class JobOutcome:
    """One ended job as communication analysis sees it. ``due`` is its cycle: the task run
    it belongs to is (task, due)."""

    meter: str
    route: str
    task: str | None
    due: datetime
    finished: datetime
    ok: bool
    status: str = "done"
    error: str | None = None


@attrs.frozen
class CommsRow:
    """The success of one scope key: ``rate`` = ``ok`` / ``jobs`` (None without jobs),
    ``below`` when the rate is under the target."""

    scope: str
    key: str
    jobs: int
    ok: int
    failed: int
    rate: Decimal | None
    below: bool

    def as_dict(self) -> dict[str, object]:
        return {"scope": self.scope, "key": self.key, "jobs": self.jobs, "ok": self.ok,
                "failed": self.failed, "rate": percent(self.rate), "below": self.below}


@attrs.frozen
class MeterBelow:
    """A meter below the target: its counts and its last failure (time and error)."""

    meter: str
    jobs: int
    ok: int
    rate: Decimal
    last_failed: datetime | None
    last_error: str

    def as_dict(self) -> dict[str, object]:
        return {"meter": self.meter, "jobs": self.jobs, "ok": self.ok,
                "rate": percent(self.rate), "last_failed": self.last_failed,
                "last_error": self.last_error}


@attrs.frozen
class CommsReport:
    target: Decimal
    rows: list[CommsRow]
    below: list[MeterBelow]

    def as_dict(self) -> dict[str, object]:
        return {"target": percent(self.target), "rows": [r.as_dict() for r in self.rows],
                "below": [m.as_dict() for m in self.below]}


def percent(rate: Decimal | None) -> Decimal | None:
    """A rate as a percentage with two decimals (0.975 -> 97.50)."""
    return None if rate is None else (rate * 100).quantize(Decimal("0.01"))


def _rate(ok: int, jobs: int) -> Decimal | None:
    return None if not jobs else Decimal(ok) / Decimal(jobs)


def areas_of(network: Network) -> dict[str, list[str]]:
    """Each meter's areas: the ones it is a summary or member meter of, and every area
    above them."""
    paths = {a.id: [p.id for p in network.path(a.id)] for a in network.areas}
    out: dict[str, list[str]] = defaultdict(list)
    for link in network.meters:
        for area in paths.get(link.area, [link.area]):
            if area not in out[link.meter]:
                out[link.meter].append(area)
    return dict(out)


def analyse(outcomes: Iterable[JobOutcome], *, network: Network | None = None,
            concentrators: Mapping[str, str] | None = None,
            target: Decimal = DEFAULT_TARGET) -> CommsReport:
    """The success rates of ``outcomes`` per scope (``all``, ``area``, ``channel``, ``route``
    (a route that several meters share), ``concentrator``, ``meter``, in that order, keys
    sorted) and the meters below
    ``target``, worst first (then by id). ``concentrators`` maps a meter behind a
    concentrator to the concentrator's id."""
    in_areas = areas_of(network) if network is not None else {}
    owners = concentrators or {}
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    last_fail: dict[str, JobOutcome] = {}
    outcomes = list(outcomes)
    # A route is a scope of its own where meters share it (a bus on a serial line or a
    # serial server's port): a meter's own route would only repeat the meter's row.
    users: dict[str, set[str]] = defaultdict(set)
    for o in outcomes:
        users[o.route].add(o.meter)
    for o in outcomes:
        keys = [("all", "all"), ("channel", channel_of(o.route)), ("meter", o.meter)]
        if len(users[o.route]) > 1:
            keys.append(("route", o.route))
        keys += [("area", a) for a in in_areas.get(o.meter, ())]
        if o.meter in owners:
            keys.append(("concentrator", owners[o.meter]))
        for scope_key in keys:
            c = counts[scope_key]
            c[0] += 1
            c[1] += 1 if o.ok else 0
        if not o.ok:
            seen = last_fail.get(o.meter)
            if seen is None or o.finished >= seen.finished:
                last_fail[o.meter] = o
    rows = []
    for (scope, key), (jobs, ok) in sorted(counts.items(),
                                           key=lambda kv: (SCOPES.index(kv[0][0]), kv[0][1])):
        rate = _rate(ok, jobs)
        rows.append(CommsRow(scope, key, jobs, ok, jobs - ok, rate,
                             rate is not None and rate < target))
    below = []
    for row in rows:
        if row.scope == "meter" and row.below:
            assert row.rate is not None
            fail = last_fail.get(row.key)
            below.append(MeterBelow(
                row.key, row.jobs, row.ok, row.rate,
                fail.finished if fail is not None else None,
                (fail.error or fail.status) if fail is not None else ""))
    below.sort(key=lambda m: (m.rate, m.meter))
    return CommsReport(target, rows, below)


@attrs.frozen
class SilentArea:
    """A suspected outage from communication loss: every meter of ``area`` (its summary
    meters too) failed in each collection cycle from ``since`` (the first silent cycle's
    due time) until one answered again at ``until`` (the end of its first ok job; None:
    still silent). ``cycles`` counts the silent cycles."""

    area: str
    since: datetime
    until: datetime | None
    meters: tuple[str, ...]
    cycles: int

    def as_dict(self) -> dict[str, object]:
        return {"area": self.area, "since": self.since, "until": self.until,
                "cycles": self.cycles, "meters": " ".join(self.meters)}


def silent_areas(outcomes: Iterable[JobOutcome], network: Network,
                 areas: Sequence[str] | None = None) -> list[SilentArea]:
    """The suspected outages of each transformer area with meters (or of ``areas``). A cycle
    is a task run (task, due) in which the area's meters had jobs: it is silent when every meter of
    the area has a job in it and none ended ok. Cycles are taken in due order; a silent one
    opens a suspected outage, the next cycle in which any of them answered closes it (at
    the end of that cycle's first ok job). A cycle that reached only some of the meters
    neither opens nor closes one unless a meter answered in it."""
    by_area: dict[str, set[str]] = defaultdict(set)
    for link in network.meters:
        by_area[link.area].add(link.meter)
    transformers = {a.id for a in network.areas if a.kind == AreaKind.TRANSFORMER}
    wanted = list(areas) if areas is not None else sorted(set(by_area) & transformers)
    cycles: dict[tuple[str | None, datetime], list[JobOutcome]] = defaultdict(list)
    for o in outcomes:
        cycles[(o.task, o.due)].append(o)
    order = sorted(cycles, key=lambda k: (k[1], k[0] or ""))
    found: list[SilentArea] = []
    for area in wanted:
        meters = by_area.get(area, set())
        if not meters:
            continue
        since: datetime | None = None
        count = 0
        for key in order:
            mine = [o for o in cycles[key] if o.meter in meters]
            if not mine:
                continue
            answered = [o for o in mine if o.ok]
            if answered:
                if since is not None:
                    found.append(SilentArea(area, since, min(o.finished for o in answered),
                                            tuple(sorted(meters)), count))
                    since, count = None, 0
            elif {o.meter for o in mine} >= meters:
                if since is None:
                    since = key[1]
                count += 1
        if since is not None:
            found.append(SilentArea(area, since, None, tuple(sorted(meters)), count))
    return sorted(found, key=lambda s: (s.since, s.area))
