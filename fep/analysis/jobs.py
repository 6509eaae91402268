"""The analysis jobs: validate and estimate a day (``run_vee``), balance areas over a day
(``run_balance``). Thin: they read from the store, call the pure functions of
fep.analysis and write the results back; the command line (``fep vee run``, ``fep balance``)
runs them, and so can a scheduled task later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from fep.analysis import clock, estimate, quality, rules
from fep.analysis.areas import Direction, Network
from fep.analysis.balance import BalanceRow, balance, out_of_band
from fep.analysis.comms import DEFAULT_TARGET, CommsReport, SilentArea, analyse, silent_areas
from fep.analysis.edits import apply as apply_edits
from fep.analysis.edits import latest_applied
from fep.analysis.estimate import Estimate
from fep.analysis.load import (
    PHASES,
    DayLoad,
    PhaseImbalance,
    ProfilePoint,
    Sample,
    area_series,
    day_load,
    day_voltage,
    measured_imbalance,
    phase_of,
    phase_series,
    phase_values,
    summed_phases,
    typical_day,
)
from fep.analysis.outages import (
    DEFAULT_AREA_SHARE,
    DEFAULT_MOMENTARY,
    AreaOutage,
    Indices,
    Outage,
    area_outages,
    daily_saidi,
    indices,
    join_days,
    major_event_days,
    med_threshold,
    meter_outages,
)
from fep.analysis.rules import Finding
from fep.analysis.series import (
    EPOCH,
    Point,
    consumption,
    day_bounds,
    grid,
    is_cumulative,
    total,
)
from fep.analysis.settings import RuleSet, VeeSettings
from fep.analysis.store import AnalysisStore, RunRecord, StoredOutage
from fep.collect.concentrators import concentrator_of
from fep.interfaces import IRecordSink
from fep.model import EventKind, IntervalBlock, Meter, MeterEvent, Quality, Severity

LOSS_ALARM = "analysis:line-loss"
COMMS_ALARM = "analysis:comms-rate"
AREA_OUTAGE_ALARM = "analysis:area-outage"
# The longest period whose outages are found in one go (a year, leap or not).
MAX_OUTAGE_DAYS = 366
# The daily SAIDI history of the major event day threshold: the five years (IEEE 1366)
# before a period.
MED_HISTORY = timedelta(days=5 * 365 + 1)
# How far back communication outcomes are read to find a suspected outage going at a
# period's start.
COMMS_LOOKBACK = timedelta(days=1)
_DAY = timedelta(days=1)


@attrs.frozen
class VeeResult:
    day: date
    meters: int
    findings: Mapping[str, int]
    estimates: Mapping[str, int]


def _midnight(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _by_day(usage: Mapping[datetime, Point]) -> dict[datetime, dict[datetime, Point]]:
    days: dict[datetime, dict[datetime, Point]] = {}
    for t, p in usage.items():
        days.setdefault(_midnight(t), {})[t] = p
    return days


def _complete(series: Mapping[datetime, Point], expected: int) -> bool:
    return sum(1 for p in series.values() if p.value is not None) == expected


def _nearest(readings: Sequence[Point], at: datetime, within: timedelta) -> Decimal | None:
    near = [p for p in readings if p.value is not None and abs(p.start - at) <= within]
    if not near:
        return None
    return min(near, key=lambda p: abs(p.start - at)).value


def validate_meter(
    meter: str,
    rule_set: RuleSet,
    settings: VeeSettings,
    day: date,
    raw: Sequence[Point],
    registers: Sequence[Point] = (),
    serials: Sequence[tuple[datetime, str]] = (),
    clock_evidence: clock.ClockEvidence | None = None,
) -> tuple[list[Finding], list[Estimate]]:
    """The findings and estimates of one meter's day, from its channel's points over the
    history window (``raw``), its register readings in the day, the serial numbers it
    reported and what is known of its clock."""
    obis, period = str(settings.channel), settings.period
    since, until = day_bounds(day)
    cumulative = is_cumulative(settings.channel)
    usage = consumption(raw, period, cumulative=cumulative, modulus=settings.modulus)
    on = rule_set.rules
    # Meter changes: on the register readings, and on a cumulative channel's own readings
    # (each point the register at its interval's end). The interval whose consumption
    # spans a change has none (the new meter's reading less the old one's is not energy).
    register_changes: list[rules.MeterChange] = []
    channel_changes: list[rules.MeterChange] = []
    if "meter-change" in on and serials:
        register_changes = rules.meter_changes(registers, serials)
        if cumulative:
            channel_changes = rules.meter_changes(
                [Point(p.start + period, p.value) for p in raw], serials)
            usage = dict(usage)
            for c in channel_changes:
                t = c.after.start - period
                if t in usage:
                    usage[t] = Point(t, None, usage[t].status)
    today = {t: p for t, p in usage.items() if since <= t < until}
    history = {t: p for t, p in usage.items() if t < since}
    raw_today = [p for p in raw if since <= p.start < until]
    found: list[Finding] = []
    for c in register_changes:
        found += rules.meter_change(meter, obis, c, since, until, period,
                                    register=str(settings.register))
    for c in channel_changes:
        found += rules.meter_change(meter, obis, c, since, until, period, register=obis)
    if "clock" in on and clock_evidence is not None:
        found += clock.clock_findings(meter, obis, clock_evidence, since, until, period,
                                      tolerance=rule_set.clock_tolerance)
    if "missing" in on:
        found += rules.missing(meter, obis, raw_today, since, until, period)
    if "limits" in on:
        found += rules.limits(meter, obis, today.values(), period, high=rule_set.high,
                              low=rule_set.low)
    if "spike" in on:
        found += rules.spikes(meter, obis, today.values(), period, history=history.values(),
                              factor=rule_set.spike_factor, floor=rule_set.spike_floor)
    days = _by_day(usage)
    expected = len(grid(since, until, period))
    if "history" in on and _complete(today, expected):
        totals = [total(s) for d, s in days.items() if d < since and _complete(s, expected)]
        found += rules.history_limits(meter, obis, day, total(today), history_totals=totals,
                                      high_factor=rule_set.history_high,
                                      low_factor=rule_set.history_low)
    if "zero" in on:
        daily: dict[date, Decimal | None] = {
            d.date(): total(s) if _complete(s, expected) else None for d, s in days.items()}
        found += [f for f in rules.zero_consumption(meter, obis, daily,
                                                    days=rule_set.zero_days)
                  if f.until > since]
    if "reverse" in on:
        found += rules.reverse_energy(meter, obis, today.values(), period)
    if "rollover" in on and cumulative and settings.modulus is not None:
        changed = {c.after.start - period for c in channel_changes}
        found += [f for f in rules.rollovers(meter, obis, raw, period,
                                             modulus=settings.modulus)
                  if f.since >= since and f.since not in changed]
    if "register" in on and registers:
        found += _register_rule(meter, obis, rule_set, period, since, until, today,
                                registers, register_changes)
    if "duplicates" in on:
        found += rules.duplicates_and_shifts(meter, [
            IntervalBlock(meter, settings.channel, p.start, period, (p.value,))
            for p in raw_today])
    if "status" in on:
        found += rules.status_flags(meter, obis, raw_today, period)
    # Across a meter change the day's register advance is no energy to prorate.
    return found, _estimates(meter, settings, day, usage, raw,
                             () if register_changes else registers,
                             {c.after.start - period for c in channel_changes})


def _register_rule(meter: str, obis: str, rule_set: RuleSet, period: timedelta,
                   since: datetime, until: datetime, today: Mapping[datetime, Point],
                   registers: Sequence[Point], changes: Sequence[rules.MeterChange]
                   ) -> list[Finding]:
    """The register advance over the day against the sum of its intervals, on a complete
    day. Across a meter change in the day, the old meter's advance (to its last reading)
    and the new one's (from its first) against the intervals of those two spans, each
    complete; the intervals between the two readings (the meter being replaced) are left
    out."""
    start = _nearest(registers, since, period / 2)
    end = _nearest(registers, until, period / 2)
    if start is None or end is None:
        return []
    change = next((c for c in changes if since - period / 2 <= c.before.start
                   and c.after.start <= until + period / 2), None)
    spans = [(since, until)] if change is None else [
        (since, max(since, _grid_floor(change.before.start, period))),
        (min(until, _grid_ceil(change.after.start, period)), until)]
    starts = [t for a, b in spans for t in grid(a, b, period)]
    counted = {t: today[t] for t in starts if t in today}
    if not _complete(counted, len(starts)):
        return []
    return rules.register_advance(
        meter, obis, since, until, start_reading=start, end_reading=end,
        interval_sum=total(counted), tolerance=rule_set.register_tolerance,
        tolerance_abs=rule_set.register_tolerance_abs, change=change)


def _grid_floor(t: datetime, period: timedelta) -> datetime:
    return t - (t - EPOCH) % period


def _grid_ceil(t: datetime, period: timedelta) -> datetime:
    floor = _grid_floor(t, period)
    return floor if floor == t else floor + period


def _estimates(meter: str, settings: VeeSettings, day: date, usage: Mapping[datetime, Point],
               raw: Sequence[Point], registers: Sequence[Point],
               changed: frozenset[datetime] | set[datetime] = frozenset()) -> list[Estimate]:
    obis, period = str(settings.channel), settings.period
    since, until = day_bounds(day)
    starts = grid(since, until, period)
    today = {t: p for t, p in usage.items() if since <= t < until}
    days = {d: s for d, s in _by_day(usage).items() if d < since}
    similar = estimate.similar_days(since, days, settings.similar_days)
    history = {d: days[d] for d in similar}
    advances: dict[tuple[datetime, datetime], Decimal] = {}
    gaps = estimate.gaps(starts, {t for t, p in today.items() if p.value is not None}, period)
    if is_cumulative(settings.channel):
        by_start = {p.start: p.value for p in raw if p.value is not None}
        for gap in gaps:
            before, after = by_start.get(gap[0] - period), by_start.get(gap[-1])
            if before is None or after is None or changed & set(gap):
                continue  # across a meter change the readings are two meters''
            advance = after - before
            if advance < 0 and settings.modulus is not None and -advance > settings.modulus / 2:
                advance += settings.modulus  # the register rolled over inside the gap
            if advance >= 0:
                advances[(gap[0], gap[-1])] = advance
    elif len(gaps) == 1 and registers:
        start = _nearest(registers, since, period / 2)
        end = _nearest(registers, until, period / 2)
        if start is not None and end is not None and end - start - total(today) >= 0:
            advances[(gaps[0][0], gaps[0][-1])] = end - start - total(today)
    return estimate.fill(meter, obis, starts, today, period,
                         max_interpolate=settings.max_interpolate, history=history,
                         advances=advances)


async def run_vee(store: Any, settings: VeeSettings, day: date, *, area: str | None = None,
                  groups: Sequence[str] | None = None,
                  analysis: AnalysisStore | None = None, batch: int = 200) -> VeeResult:
    """Validate and estimate one day of the channel of every meter (the meter list's and
    the areas'; or those of ``area`` and the areas below it; with ``groups``, only the
    meters of the meter list in one of them): findings and flags replace the day's earlier
    ones, and so do the estimates (a value re-collected since is no longer estimated)."""
    analysis = analysis or AnalysisStore(store)
    meters: dict[str, Meter | None] = {m.id: m for m in await store.meters()}
    network = await analysis.network()
    if area is not None:
        if network.area(area) is None:
            raise LookupError(f"no area {area!r}")
        ids = sorted({m.meter for a in network.subtree(area) for m in network.meters
                      if m.area == a.id})
        meters = {m: meters.get(m) for m in ids}
    else:
        # The meter list and every meter an area names (a summary meter may be read by
        # another system and only imported).
        meters.update({m.meter: None for m in network.meters if m.meter not in meters})
    if groups:
        wanted = set(groups)
        meters = {k: m for k, m in meters.items() if m is not None and wanted & {
            g.strip() for g in m.metadata.get("group", "").split(",")}}
    ids = sorted(meters)
    obis, period = str(settings.channel), settings.period
    since, until = day_bounds(day)
    window = since - timedelta(days=settings.history_days) - period
    found_by_rule: Counter[str] = Counter()
    made_by_method: Counter[str] = Counter()
    # A batch of meters at a time: its history read in one query, its results written in
    # one transaction, and no more than a batch's history held in memory.
    for first in range(0, len(ids), batch):
        chunk = ids[first:first + batch]
        raw = await analysis.intervals(chunk, obis, window, until)
        registers = await analysis.registers(chunk, str(settings.register), since - period,
                                             until + period)
        sets = {m: settings.rule_set(meters[m]) for m in chunk}
        # The serials the meters reported around the day's register readings (and the
        # last before), and their clock checks over the history window: a spell of a
        # wrong clock may have started before the day.
        serials: Mapping[str, Sequence[tuple[datetime, str]]] = {}
        if any("meter-change" in r.rules for r in sets.values()):
            serials = await analysis.serials(chunk, str(settings.serial), since - period,
                                             until + period)
        evidence: Mapping[str, tuple[list[tuple[datetime, str]], list[MeterEvent]]] = {}
        if any("clock" in r.rules for r in sets.values()):
            evidence = await analysis.clock_evidence(chunk, window, until)
        findings: list[Finding] = []
        estimates: list[Estimate] = []
        for meter in chunk:
            results, events = evidence.get(meter, ([], []))
            found, made = validate_meter(meter, sets[meter], settings, day, raw[meter],
                                         registers[meter], serials.get(meter, ()),
                                         clock.evidence(results, events))
            findings += found
            estimates += made
        flags = rules.flags_by_interval(findings, period)
        await analysis.save_validation(chunk, obis, since, until, findings, flags)
        await analysis.save_estimates(chunk, obis, since, until, period, estimates)
        edited = latest_applied(await analysis.edits(meters=chunk, obis=obis, since=since,
                                                     until=until, status="applied"))
        await analysis.save_quality(obis, day, _day_quality(
            settings, day, chunk, raw, flags, estimates, edited))
        found_by_rule.update(f.rule for f in findings)
        made_by_method.update(e.method for e in estimates)
    await analysis.sum_quality(obis, day)
    return VeeResult(day, len(ids), dict(found_by_rule), dict(made_by_method))


def _day_quality(settings: VeeSettings, day: date, meters: Sequence[str],
                 raw: Mapping[str, Sequence[Point]],
                 flags: Mapping[tuple[str, str, datetime], Quality],
                 estimates: Sequence[Estimate], edited: Mapping[tuple[str, datetime], Any]
                 ) -> dict[str, quality.DayQuality]:
    """Each meter's day by quality class, as the run leaves it (fep.analysis.quality)."""
    period = settings.period
    since, until = day_bounds(day)
    starts = grid(since, until, period)
    made: dict[str, set[datetime]] = {m: set() for m in meters}
    for e in estimates:
        made[e.meter].add(e.start)
    flagged: dict[str, dict[datetime, Quality]] = {m: {} for m in meters}
    for (m, _, t), q in flags.items():
        flagged.setdefault(m, {})[t] = q
    changed: dict[str, set[datetime]] = {m: set() for m in meters}
    for m, t in edited:
        changed.setdefault(m, set()).add(t)
    out = {}
    for meter in meters:
        usage = consumption([p for p in raw[meter] if p.start >= since - period], period,
                            cumulative=is_cumulative(settings.channel),
                            modulus=settings.modulus)
        real = {t for t, p in usage.items() if since <= t < until and p.value is not None}
        out[meter] = quality.meter_day(
            day, starts, real, flagged[meter], made[meter], changed[meter])
    return out


@attrs.frozen
class SeriesRow:
    """One interval of a meter's channel as the analysis sees it: the real consumption (its
    status OR-ed with the validation flags), else the estimate (ESTIMATED, with method and
    source), else nothing (MISSING)."""

    start: datetime
    value: Decimal | None
    quality: Quality
    method: str = ""
    source: str = ""


async def validated_series(store: Any, settings: VeeSettings, meter: str, day: date, *,
                           analysis: AnalysisStore | None = None) -> list[SeriesRow]:
    """A meter's day of consumption with its quality: real values always win over estimates
    (a value re-collected after estimation shows as real at once)."""
    analysis = analysis or AnalysisStore(store)
    obis, period = str(settings.channel), settings.period
    since, until = day_bounds(day)
    raw = await analysis.intervals([meter], obis, since - period, until)
    made = {e.start: e for e in (await analysis.estimates([meter], obis, since, until)).get(
        meter, [])}
    flags = await analysis.flags(meter, obis, since, until)
    edited = latest_applied(await analysis.edits(meter=meter, obis=obis, since=since,
                                                 until=until, status="applied"))
    cumulative = is_cumulative(settings.channel)
    usage = consumption(raw[meter], period, cumulative=cumulative, modulus=settings.modulus)
    if cumulative:  # a meter change's interval: the readings of two meters, no energy
        usage = {t: p for t, p in usage.items()
                 if not flags.get(t, Quality.OK) & Quality.COUNTER_RESET}
    rows = []
    for t in grid(since, until, period):
        p = usage.get(t)
        edit = edited.get((meter, t))
        if edit is not None and edit.action == "replace":
            rows.append(SeriesRow(t, edit.after, Quality.OK, "edited",
                                  f"edit {edit.id} by {edit.requested_by}: {edit.reason}"))
            continue
        row = _analysed(t, p, made, flags)
        if edit is not None:  # accepted as it is: no longer suspect
            row = attrs.evolve(row, quality=row.quality & ~Quality.SUSPECT, method="accepted",
                               source=f"edit {edit.id} by {edit.requested_by}: {edit.reason}")
        rows.append(row)
    return rows


def _analysed(t: datetime, p: Point | None, made: Mapping[datetime, Estimate],
              flags: Mapping[datetime, Quality]) -> SeriesRow:
    if p is not None and p.value is not None:
        # Re-collected since validation: no longer missing.
        return SeriesRow(t, p.value, p.status | (flags.get(t, Quality.OK)
                                                 & ~Quality.MISSING))
    if t in made:
        e = made[t]
        return SeriesRow(t, e.value, Quality.ESTIMATED | flags.get(t, Quality.OK),
                         e.method, e.source)
    return SeriesRow(t, None, Quality.MISSING | flags.get(t, Quality.OK))


async def analysed_usage(analysis: AnalysisStore, settings: VeeSettings, ids: Sequence[str],
                         since: datetime, until: datetime) -> dict[str, dict[datetime, Point]]:
    """The consumption of each meter's intervals in ``[since, until)`` as the analysis sees
    it: the operators' applied replacements, else the real values, else the estimates."""
    obis, period = str(settings.channel), settings.period
    raw = await analysis.intervals(ids, obis, since - period, until)
    made = await analysis.estimates(ids, obis, since, until)
    # Operators' replacements win over real values and estimates.
    edited = latest_applied(await analysis.edits(meters=ids, obis=obis, since=since,
                                                 until=until, status="applied"))
    cumulative = is_cumulative(settings.channel)
    # On a cumulative channel the interval of a meter change (flagged by the rule) holds the
    # readings of two meters, no energy: its estimate stands in for it.
    changed = await analysis.flagged(ids, obis, since, until, Quality.COUNTER_RESET) \
        if cumulative else set()
    usage = {}
    for meter in ids:
        real = consumption(raw[meter], period, cumulative=cumulative, modulus=settings.modulus)
        real = {t: p for t, p in real.items() if (meter, t) not in changed}
        usage[meter] = apply_edits(
            estimate.merge({t: p for t, p in real.items() if since <= t < until},
                           made.get(meter, [])), edited, meter, period)
    return usage


@attrs.frozen
class AreaBalance:
    day: BalanceRow
    intervals: list[BalanceRow]
    alarm: str | None


def children_counted(network: Network, area: str) -> list[str]:
    """The child areas whose delivered energy counts as the consumption of ``area``: every
    child, less one whose summary meter ``area`` lists among its own summary meters (the
    parent then measures it itself, e.g. as energy ``out``)."""
    own = {m.meter for m in network.summary(area)}
    return [c.id for c in network.children(area)
            if not own & {m.meter for m in network.summary(c.id)}]


def _delivery_meters(network: Network, area: str) -> set[str]:
    """The meters whose values give what ``area`` delivers (see ``_delivered``)."""
    summary = network.summary(area)
    if summary:
        return {m.meter for m in summary}
    out = {m.meter for m in network.members(area)}
    for child in children_counted(network, area):
        out |= _delivery_meters(network, child)
    return out


def _delivered(network: Network, area: str, starts: Sequence[datetime],
               usage: Mapping[str, Mapping[datetime, Point]]) -> dict[datetime, Point]:
    """What an area takes from its parent: its summary meters' input, or, without summary
    meters, its members' consumption and what its children take, summed."""
    summary = network.summary(area)
    if summary:
        return area_series(starts, {m.meter: (m.direction, usage[m.meter]) for m in summary},
                           {})
    parts: dict[str, Mapping[datetime, Point]] = {
        m.meter: usage[m.meter] for m in network.members(area)}
    for child in children_counted(network, area):
        parts[f"area:{child}"] = _delivered(network, child, starts, usage)
    return area_series(starts, {}, parts)


async def area_balance(analysis: AnalysisStore, network: Network, settings: VeeSettings,
                       area: str, since: datetime, until: datetime) -> AreaBalance:
    """The balance of one area over ``[since, until)``, estimates filling what the store
    lacks (a real value always wins). A feeder or substation with child areas counts what
    each child takes (``_delivered``) as the consumption of one member beside its own
    members."""
    period = settings.period
    summary = network.summary(area)
    members = [m.meter for m in network.members(area)]
    children = children_counted(network, area)
    ids = {m.meter for m in summary} | set(members)
    for child in children:
        ids |= _delivery_meters(network, child)
    usage = await analysed_usage(analysis, settings, sorted(ids), since, until)
    starts = grid(since, until, period)
    consumers: dict[str, Mapping[datetime, Point]] = {m: usage[m] for m in members}
    for child in children:
        consumers[f"area:{child}"] = _delivered(network, child, starts, usage)
    rows, day = balance(area, starts, period,
                        {m.meter: (m.direction, usage[m.meter]) for m in summary}, consumers)
    return AreaBalance(day, rows, out_of_band(day, settings.band_for(area)))


async def balance_report(store: Any, settings: VeeSettings, day: date, *,
                         area: str | None = None, end: date | None = None,
                         analysis: AnalysisStore | None = None,
                         network: Network | None = None) -> list[AreaBalance]:
    """The balance of each area with summary meters (or of ``area``) over ``day`` (or the
    days ``[day, end)``), computed and returned only: nothing stored, no alarm raised."""
    analysis = analysis or AnalysisStore(store)
    network = network or await analysis.network()
    if area is not None and network.area(area) is None:
        raise LookupError(f"no area {area!r}")
    # An area named is balanced with each area below it that has summary meters (depth
    # first: the tree); without one, every area with summary meters.
    names = [area] + [a.id for a in network.subtree(area)[1:] if network.summary(a.id)] \
        if area is not None else [a.id for a in network.areas if network.summary(a.id)]
    since, until = day_bounds(day)
    if end is not None:
        until = day_bounds(end)[0]
        if until <= since:
            raise ValueError(f"the period {day}..{end} is empty")
    return [await area_balance(analysis, network, settings, name, since, until)
            for name in names]


async def run_balance(store: Any, settings: VeeSettings, day: date, *, area: str | None = None,
                      end: date | None = None, sink: IRecordSink | None = None,
                      analysis: AnalysisStore | None = None) -> list[AreaBalance]:
    """Balance each area with summary meters (or ``area`` and each area below it with
    summary meters) over ``day`` (or the days ``[day, end)``, e.g. a month) and store the
    rows. For a single day, raise an alarm (a
    MeterEvent on the area's first summary meter, through ``sink`` or else written to the
    store) for each area whose loss rate left its band."""
    analysis = analysis or AnalysisStore(store)
    network = await analysis.network()
    since, until = day_bounds(day)
    if end is not None:
        until = day_bounds(end)[0]
    results = await balance_report(store, settings, day, area=area, end=end,
                                   analysis=analysis, network=network)
    await analysis.save_balances([r.day for r in results])
    events = [
        MeterEvent(meter=network.summary(r.day.area)[0].meter, code=LOSS_ALARM,
                   kind=EventKind.OTHER, severity=Severity.MAJOR, time=r.day.since,
                   text=r.alarm, source="analysis")
        for r in results
        if r.alarm is not None and network.summary(r.day.area) and until - since == _DAY]
    if events:
        if sink is not None:
            await sink.submit(events)
        else:
            await store.write(events)
    return results



@attrs.frozen
class OutageReport:
    """A period's outages: per meter, per area, and the indices over the customers; and the
    suspected outages from communication loss (which no index counts)."""

    outages: list[Outage]
    areas: list[AreaOutage]
    indices: Indices
    suspected: list[SilentArea] = attrs.field(factory=list)


async def _outage_scope(store: Any, network: Network, area: str | None
                        ) -> tuple[list[str], list[str]]:
    """The areas whose outages are found and the customers: the members of ``area`` and
    the areas below it; without ``area``, the meter list and every area member, less the
    summary meters (they serve no customer)."""
    if area is not None:
        if network.area(area) is None:
            raise LookupError(f"no area {area!r}")
        scope = [a.id for a in network.subtree(area)]
        return scope, sorted({m.meter for a in scope for m in network.members(a)})
    summary = {m.meter for m in network.meters if m.role == "summary"}
    members = {m.meter for m in network.meters if m.role == "member"}
    listed = {m.id for m in await store.meters()}
    return [a.id for a in network.areas], sorted(members | (listed - summary))


async def _meter_outages(analysis: AnalysisStore, settings: VeeSettings,
                         customers: Sequence[str], since: datetime, until: datetime,
                         batch: int) -> list[Outage]:
    """The customers' outages in ``[since, until)``, a batch of meters at a time."""
    obis, period = str(settings.channel), settings.period
    found: list[Outage] = []
    for first in range(0, len(customers), batch):
        chunk = customers[first:first + batch]
        events = await analysis.power_events(chunk, since, until)
        raw = await analysis.intervals(chunk, obis, since, until)
        for meter in chunk:
            found += meter_outages(meter, events[meter], raw[meter], since, until, period)
    return found


async def run_outages(store: Any, settings: VeeSettings, day: date, *, area: str | None = None,
                      momentary: timedelta = DEFAULT_MOMENTARY,
                      share: Decimal = DEFAULT_AREA_SHARE,
                      analysis: AnalysisStore | None = None, batch: int = 200) -> OutageReport:
    """The outages of one day: each customer meter's (from its power events, else the
    power-down flags of its channel's intervals), the area outages of every area with
    members (or of ``area`` and the areas below it) and the indices over the customers.
    Customers are the members of ``area`` and the areas below it; without ``area``, the
    meter list and every area member, less the summary meters (they serve no customer)."""
    analysis = analysis or AnalysisStore(store)
    network = await analysis.network()
    scope, customers = await _outage_scope(store, network, area)
    since, until = day_bounds(day)
    found = await _meter_outages(analysis, settings, customers, since, until, batch)
    by_area = [a for name in scope for a in area_outages(
        name, [m.meter for m in network.members(name)], found, share=share, until=until)]
    # Suspected outages from communication loss: the cycles of the day, and of the day
    # before for one already going at its start.
    in_scope = set(scope)
    suspected = [s for s in silent_areas(await analysis.job_outcomes(since - COMMS_LOOKBACK,
                                                                      until), network)
                 if s.area in in_scope and (s.until is None or s.until > since)]
    return OutageReport(found, by_area, indices(found, customers, momentary=momentary),
                        suspected)


@attrs.frozen
class PeriodOutageReport:
    """The outages of the days ``[first, end)``: per meter and per area, an outage crossing
    midnight once; the indices over the period; which days were read as the analysis
    service stored them (``stored``) and which were found when asked (``computed``)."""

    first: date
    end: date
    outages: list[Outage]
    areas: list[AreaOutage]
    indices: Indices
    stored: list[date]
    computed: list[date]
    med: MajorEvents | None = None

    def period(self) -> dict[str, object]:
        out: dict[str, object] = {
            "since": self.first.isoformat(), "until": self.end.isoformat(),
            "days": (self.end - self.first).days, "stored_days": len(self.stored),
            "computed_days": len(self.computed)}
        if self.med is not None:
            out.update(self.med.as_dict())
        return out


@attrs.frozen
class MajorEvents:
    """The major event days of a period (IEEE 1366 2.5 beta): the threshold ``t_med`` from
    the daily SAIDI of the ``history_days`` stored days before the period (None: too
    little history), the period's days above it, and the indices without their
    interruptions."""

    t_med: Decimal | None
    history_days: int
    days: list[date]
    indices: Indices

    def as_dict(self) -> dict[str, object]:
        return {"t_med": self.t_med, "history_days": self.history_days,
                "major_event_days": " ".join(d.isoformat() for d in self.days)}


def stored_outage_days(runs: Sequence[RunRecord], network: Network, area: str | None
                       ) -> set[date]:
    """The days whose stored outages hold every customer of ``area`` (or of the whole
    network): an ``outages`` run that ended ok and covered them (its summary's ``areas``:
    empty for every area; a run recorded without it covered what is not known)."""
    wanted = {a.id for a in network.path(area)} if area is not None else set()
    days = set()
    for r in runs:
        covered = r.summary.get("areas")
        if r.analysis != "outages" or not r.ok or not isinstance(covered, list):
            continue
        if not covered or wanted & set(covered):
            days.add(r.day)
    return days


def _stored_outage(o: StoredOutage) -> Outage:
    cut = str(o.details.get("cut", "")).split("/")
    # A meter's outage is stored closed (cut at its day's end), never open.
    until = o.until if o.until is not None else o.since
    return Outage(o.subject, o.since, until, o.source, cut_start="start" in cut,
                  cut_end="end" in cut)


async def run_outage_period(store: Any, settings: VeeSettings, first: date, end: date, *,
                            area: str | None = None,
                            momentary: timedelta = DEFAULT_MOMENTARY,
                            share: Decimal = DEFAULT_AREA_SHARE,
                            analysis: AnalysisStore | None = None,
                            batch: int = 200,
                            exclude_med: bool = False) -> PeriodOutageReport:
    """The outages of the whole UTC days ``[first, end)`` (``end`` excluded; at most
    MAX_OUTAGE_DAYS) and the indices over them, for the customers of ``run_outages``
    (as the network model has them now). Each day's meter outages are read from the store
    when the analysis service analysed the day (``stored_outage_days``), else found as
    ``run_outages`` finds them; an outage the days cut at midnight is joined again
    (``join_days``), and the area outages are found over the joined outages. With
    ``exclude_med``, the major event days too (``major_events``). Read only: nothing is
    stored, no alarm raised."""
    days = (end - first).days
    if days <= 0:
        raise ValueError(f"the period {first}..{end} is empty")
    if days > MAX_OUTAGE_DAYS:
        raise ValueError(f"the period {first}..{end} is {days} days: at most "
                         f"{MAX_OUTAGE_DAYS}")
    analysis = analysis or AnalysisStore(store)
    network = await analysis.network()
    scope, customers = await _outage_scope(store, network, area)
    since, until = day_bounds(first)[0], day_bounds(end)[0]
    stored = stored_outage_days(await analysis.runs(first, end), network, area)
    served = set(customers)
    found = await _stored_outages(analysis, stored, served, since, until)
    computed = [d for d in (first + timedelta(days=n) for n in range(days))
                if d not in stored]
    for day in computed:
        day_since, day_until = day_bounds(day)
        found += await _meter_outages(analysis, settings, customers, day_since, day_until,
                                      batch)
    joined = join_days(found, since, until)
    by_area = [a for name in scope for a in area_outages(
        name, [m.meter for m in network.members(name)], joined, share=share, until=until)]
    med = None
    if exclude_med:
        med = await major_events(analysis, network, area, customers, first, joined,
                                 momentary=momentary)
    return PeriodOutageReport(first, end, joined, by_area,
                              indices(joined, customers, momentary=momentary),
                              sorted(stored), computed, med)


async def _stored_outages(analysis: AnalysisStore, stored: set[date], served: set[str],
                          since: datetime, until: datetime) -> list[Outage]:
    """The meter outages of the ``stored`` days in ``[since, until)`` of the ``served``."""
    if not stored:
        return []
    return [_stored_outage(o) for o in await analysis.outages(since, until, "meter",
                                                              started=since)
            if o.since.date() in stored and o.subject in served and o.until is not None]


async def major_events(analysis: AnalysisStore, network: Network, area: str | None,
                       customers: Sequence[str], first: date, outages: Sequence[Outage], *,
                       momentary: timedelta = DEFAULT_MOMENTARY) -> MajorEvents:
    """The major event days among those of ``outages`` (a period's, from ``first``), by
    the threshold of the daily SAIDI of the stored days of the MED_HISTORY before
    ``first`` (only days the analysis service analysed: the history is not found when
    asked), and the period's indices without the interruptions that began on them."""
    history_first = first - MED_HISTORY
    since, until = day_bounds(history_first)[0], day_bounds(first)[0]
    stored = stored_outage_days(await analysis.runs(history_first, first), network, area)
    past = join_days(await _stored_outages(analysis, stored, set(customers), since, until),
                     since, until)
    threshold = med_threshold(daily_saidi(past, customers, momentary=momentary).values())
    days = major_event_days(daily_saidi(outages, customers, momentary=momentary),
                            threshold)
    kept = [o for o in outages if o.since.date() not in set(days)]
    return MajorEvents(threshold, len(stored), days,
                       indices(kept, customers, momentary=momentary))


def area_outage_alarms(report: OutageReport, network: Network, since: datetime
                       ) -> list[MeterEvent]:
    """An alarm (``analysis:area-outage``, major, at its start) for each area outage of a
    day starting at ``since``, on the area's first summary meter, else its first member.
    One going on at the day's start (its meters' outages cut there) was raised by the day
    before and is not raised again."""
    cut = {o.meter for o in report.outages if o.cut_start}
    events = []
    for a in report.areas:
        carriers = network.summary(a.area) or network.members(a.area)
        if not carriers or (a.since == since and cut & set(a.meters)):
            continue
        minutes = f"{a.duration.total_seconds() / 60:g}"
        events.append(MeterEvent(
            meter=carriers[0].meter, code=AREA_OUTAGE_ALARM, kind=EventKind.OTHER,
            severity=Severity.MAJOR, time=a.since, source="analysis",
            text=f"area {a.area}: {len(a.meters)} of {a.members} meters out from "
                 f"{a.since:%Y-%m-%d %H:%M} for {minutes} min"
                 + (" (still out at the day's end)" if a.cut_end else "")
                 + f": {' '.join(a.meters[:10])}" + (" ..." if len(a.meters) > 10 else "")))
    return events


async def run_comms(store: Any, since: datetime, until: datetime, *, area: str | None = None,
                    target: Decimal = DEFAULT_TARGET,
                    analysis: AnalysisStore | None = None) -> CommsReport:
    """The communication analysis of the jobs that ended in ``[since, until)`` (of the
    meters of ``area`` and the areas below it, or of every meter)."""
    analysis = analysis or AnalysisStore(store)
    network = await analysis.network()
    outcomes = await analysis.job_outcomes(since, until)
    if area is not None:
        if network.area(area) is None:
            raise LookupError(f"no area {area!r}")
        scope = {a.id for a in network.subtree(area)}
        mine = {m.meter for m in network.meters if m.area in scope}
        outcomes = [o for o in outcomes if o.meter in mine]
    owners = {m.id: owner for m in await store.meters()
              if (owner := concentrator_of(m)) is not None}
    return analyse(outcomes, network=network, concentrators=owners, target=target)


async def run_silent_areas(store: Any, since: datetime, until: datetime, *,
                           lookback: timedelta = COMMS_LOOKBACK,
                           analysis: AnalysisStore | None = None) -> list[SilentArea]:
    """The suspected outages from communication loss of the cycles that ended in
    ``[since - lookback, until)`` (the lookback finds one already going at ``since``) and
    store them (kind ``comms``): one found again is updated (closed once they answered)."""
    analysis = analysis or AnalysisStore(store)
    network = await analysis.network()
    outcomes = await analysis.job_outcomes(since - lookback, until)
    found = silent_areas(outcomes, network)
    # One going on since before the lookback keeps the start it was stored with.
    known = {o.subject: o for o in await analysis.outages(since - lookback, until, "comms")}
    for n, s in enumerate(found):
        old = known.get(s.area)
        if old is not None and old.since < s.since and (old.until is None
                                                        or old.until >= s.since):
            found[n] = attrs.evolve(s, since=old.since)
    await analysis.save_outages(("comms",), None, None, [
        StoredOutage("comms", s.area, s.since, s.until, "communication", s.meters,
                     {"cycles": s.cycles}) for s in found])
    return found


@attrs.frozen
class LoadReport:
    """The daily load of each meter or area asked for, and their typical days."""

    days: list[DayLoad]
    profile: list[ProfilePoint] = attrs.field(factory=list)


# The quantities a meter may measure per phase, in the order the imbalance prefers them.
MEASURED = ("current", "power")
PhaseSamples = Mapping[str, Sequence[Sample]]


def _measured_kinds(settings: VeeSettings) -> dict[str, tuple[str, str]]:
    """Stored obis -> (quantity, phase) of the per-phase channels in the settings."""
    out = {}
    for kind, codes in (("voltage", settings.voltage_channels),
                        ("current", settings.current_channels),
                        ("power", settings.power_channels)):
        for code in codes:
            out[str(code)] = (kind, phase_of(code))
    return out


async def run_load(store: Any, settings: VeeSettings, day: date, end: date | None = None, *,
                   area: str | None = None, meter: str | None = None, profile: bool = False,
                   members: bool = False,
                   analysis: AnalysisStore | None = None) -> LoadReport:
    """The load of the days ``[day, end)`` (one day without ``end``): of ``meter``; or of
    ``area`` and each area below it; or of every area; with ``members``, each area's row is
    followed by its member meters'. With them, the voltage and the phase imbalance the
    meters measured themselves (``[load]`` of vee.ini names the channels). Read only:
    nothing is stored."""
    analysis = analysis or AnalysisStore(store)
    network = await analysis.network()
    since = day_bounds(day)[0]
    until = day_bounds(end)[0] if end is not None else since + _DAY
    if until <= since:
        raise ValueError(f"the period {day}..{end} is empty")
    period = settings.period
    days = [since + n * _DAY for n in range((until - since) // _DAY)]
    found: list[DayLoad] = []
    shapes: list[ProfilePoint] = []
    kinds = _measured_kinds(settings)

    async def measured(ids: Sequence[str]) -> dict[str, dict[str, dict[str, list[Sample]]]]:
        """meter -> quantity -> phase -> samples."""
        stored = await analysis.samples(ids, list(kinds), since, until)
        out: dict[str, dict[str, dict[str, list[Sample]]]] = {}
        for m, codes in stored.items():
            for code, samples in codes.items():
                kind, phase = kinds[code]
                out.setdefault(m, {}).setdefault(kind, {p: [] for p in PHASES})[
                    phase].extend(samples)
        return out

    def each_day(subject: str, kind: str, series: Mapping[datetime, Point], *,
                 capacity: Decimal | None = None,
                 phases: Mapping[str, Mapping[datetime, Decimal]] | None = None,
                 volts: PhaseSamples | None = None,
                 quantities: Mapping[str, Sequence[PhaseSamples]] | None = None) -> None:
        for first in days:
            last = first + _DAY
            voltage = day_voltage(volts, first, last, settings.voltage_limits) if volts else None
            own: PhaseImbalance | None = None
            for source in MEASURED:
                meters = (quantities or {}).get(source)
                if meters:
                    own = measured_imbalance(source, summed_phases(
                        [phase_values(x, first, last) for x in meters]))
                if own is not None:
                    break
            found.append(day_load(subject, kind, first.date(), grid(first, last, period),
                                  period, series, capacity=capacity, kw=settings.load_kw,
                                  power_factor=settings.power_factor, phases=phases,
                                  measured=own, voltage=voltage))
        if profile:
            shapes.extend(typical_day(subject, series, period))

    def own_day(m: str, series: Mapping[datetime, Point],
                by: Mapping[str, Mapping[str, PhaseSamples]]) -> None:
        mine = by.get(m, {})
        each_day(m, "meter", series, volts=mine.get("voltage"),
                 quantities={q: [mine[q]] for q in MEASURED if q in mine})

    if meter is not None:
        usage = await analysed_usage(analysis, settings, [meter], since, until)
        own_day(meter, usage[meter], await measured([meter]))
        return LoadReport(found, shapes)
    if area is not None and network.area(area) is None:
        raise LookupError(f"no area {area!r}")
    scope = network.subtree(area) if area is not None else list(network.areas)
    starts = grid(since, until, period)
    for a in scope:
        summary, links = network.summary(a.id), network.members(a.id)
        ids = sorted({m.meter for m in summary} | {m.meter for m in links})
        usage = await analysed_usage(analysis, settings, ids, since, until)
        by = await measured(ids)
        series = area_series(starts, {m.meter: (m.direction, usage[m.meter]) for m in summary},
                             {m.meter: usage[m.meter] for m in links})
        phases = phase_series(starts, {m.meter: (m.phase, usage[m.meter]) for m in links})
        # The area's voltage: of every meter of it, a single-phase member's on the phase
        # it is connected to (whatever channel it records); its measured imbalance: its
        # summary meters' phases summed, when each of them is an input that measures them.
        volts: dict[str, list[Sample]] = {p: [] for p in PHASES}
        on = {m.meter: m.phase for m in links if m.phase in PHASES}
        for one in ids:
            for p, samples in by.get(one, {}).get("voltage", {}).items():
                volts[on.get(one, p)].extend(samples)
        inputs = bool(summary) and all(m.direction == Direction.IN for m in summary)
        quantities = {q: [by.get(m.meter, {}).get(q, {}) for m in summary]
                      for q in MEASURED} if inputs else {}
        each_day(a.id, "area", series, capacity=a.capacity, phases=phases, volts=volts,
                 quantities=quantities)
        if members:
            for m in links:
                own_day(m.meter, usage[m.meter], by)
    return LoadReport(found, shapes)


def comms_alarms(report: CommsReport, network: Network, since: datetime) -> list[MeterEvent]:
    """An alarm (``analysis:comms-rate``, minor, at ``since``) on the first summary meter of
    each area whose success rate is below the report's target; an area without a summary
    meter has none to carry it and raises none."""
    events = []
    for row in report.rows:
        summary = network.summary(row.key) if row.scope == "area" else []
        if not row.below or not summary:
            continue
        d = row.as_dict()
        events.append(MeterEvent(
            meter=summary[0].meter, code=COMMS_ALARM, kind=EventKind.OTHER,
            severity=Severity.MINOR, time=since, source="analysis",
            text=f"area {row.key}: collection success {d['rate']} % below the target "
                 f"{report.as_dict()['target']} % ({row.ok} of {row.jobs} jobs ok)"))
    return events
