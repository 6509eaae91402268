"""Pulse channels and their arithmetic: from a recorder's pulse counter snapshots to energy
per integration period, demand, block and rolling demand, and maximum demand per billing
period, with counter rollover, recorder restarts and missing periods flagged, never turned
into a false spike. Protocol-independent: any recorder read (Modbus, DLMS, a CSV) that
yields counter snapshots per period end can use it.

**Pulses and counts.** A meter's pulse output gives one *pulse* per ``1/constant`` of
energy (the meter constant, pulses per kWh or kvarh, is on its nameplate). fep counts a
pulse as one full cycle of the output as a two-wire (KY, Form A) input sees it: the contact
closes once per pulse. A three-wire (KYZ, Form C) output toggles between K-Y and K-Z and
the recorder counts both transitions, two *counts* per pulse, so fep halves KYZ counts
relative to KY: ``energy = counts / (2 if KYZ else 1) / constant``. The same pulse train
recorded both ways gives the same energy; the same count configured both ways gives
energies a factor of two apart.

**Counter snapshots.** A recorder stores, at the end of each integration period, its
cumulative counter per channel (``width`` bits, rolling over to 0) and a flag when it
restarted (the counter was reset) during that period. Consecutive snapshots give the counts
of a period:

- next >= previous: the difference;
- next < previous, no restart flag, and the wrapped difference is plausible
  (<= ``max_counts`` per period): a rollover, the wrapped difference, flagged OVERFLOW
  (the value is exact);
- restart flag: the counter counts from the restart: its value is the counts of this period
  since the restart (a lower bound: pulses before the restart and while the recorder was
  off are lost), flagged COUNTER_RESET and POWER_DOWN;
- next < previous and implausible as a rollover: an unflagged reset, handled as above;
- a jump up beyond ``max_counts``: not believed, value None flagged DATA_NOT_VALID;
- periods with no snapshot: value None flagged MISSING (and POWER_DOWN when the next
  snapshot says the recorder restarted); when snapshots are missing but the counter kept
  counting (no restart), the counts are shared evenly over the periods, flagged ESTIMATED.

**Demand** is average power over a window: energy / window length. The period demand is
over each integration period; *block* demand over fixed windows of ``block`` length aligned
to the clock (e.g. 30 min from two 15-min periods); *rolling* (sliding) demand over the last
``rolling`` periods, one value per period. A window with a missing or invalid period has no
demand (None, flagged); a window with a restart is a lower bound and is flagged. The
maximum demand of a billing period (from ``billing_day`` at 00:00 in ``tz``, monthly) is
the largest demand of its windows with the window's end time; flagged windows without a
value never count.

OBIS codes (IEC 62056-6-1; value group B is the recorder input, 1-1:... for input 1):
energy per period ``C.29.0`` (time integral 5),
period demand ``C.5.0`` (last average 1) and its maximum ``C.6.0``, block demand ``C.15.0``
(last average 2) and ``C.16.0``, rolling demand ``C.25.0`` (last average 3) and ``C.26.0``;
C is 1/2 (active import/export) or 3/4 (reactive import/export).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from fractions import Fraction
from typing import Final

import attrs

from fep.model import IntervalBlock, ObisCode, Quality, Reading, Unit, Value

WH: Final = Unit.by_code(30)
VARH: Final = Unit.by_code(32)
W: Final = Unit.by_code(27)
VAR: Final = Unit.by_code(29)

# Flags that mean a period's value is not there to be used.
UNUSABLE: Final = Quality.MISSING | Quality.DATA_NOT_VALID


class Wiring(enum.StrEnum):
    """How the recorder input is wired to the meter's pulse output."""

    KYZ = "kyz"  # three-wire Form C: both transitions counted, two counts per pulse
    KY = "ky"  # two-wire Form A: one count per pulse

    @property
    def counts_per_pulse(self) -> int:
        return 2 if self is Wiring.KYZ else 1


class Quantity(enum.StrEnum):
    """What a pulse channel measures: OBIS value group C and the units."""

    ACTIVE_IMPORT = "active-import"
    ACTIVE_EXPORT = "active-export"
    REACTIVE_IMPORT = "reactive-import"
    REACTIVE_EXPORT = "reactive-export"

    @property
    def obis_c(self) -> int:
        return {"active-import": 1, "active-export": 2, "reactive-import": 3,
                "reactive-export": 4}[self.value]

    @property
    def energy_unit(self) -> Unit:
        return WH if self.obis_c in (1, 2) else VARH

    @property
    def power_unit(self) -> Unit:
        return W if self.obis_c in (1, 2) else VAR


def _fraction(value: Fraction | Decimal | int | str) -> Fraction:
    return value if isinstance(value, Fraction) else Fraction(value)


def to_decimal(value: Fraction) -> Decimal:
    """An exact Fraction as a Decimal: exact when it terminates, else 28 significant
    digits."""
    if value.denominator == 1:
        return Decimal(value.numerator)
    d = value.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:
        # Terminating: scale to an integer and place the point exactly.
        digits = 0
        scaled = value
        while scaled.denominator != 1:
            scaled *= 10
            digits += 1
        return Decimal(scaled.numerator).scaleb(-digits)
    return Decimal(value.numerator) / Decimal(value.denominator)


@attrs.frozen
class PulseChannel:
    """One pulse input of a recorder: what it measures and how counts become energy.

    ``energy_per_pulse`` is in Wh (varh for reactive), per *pulse* (see the module
    docstring: KYZ gives two counts per pulse). ``counter_width`` is the recorder counter's
    bits; ``max_counts`` bounds the counts one integration period can plausibly hold (default
    half the counter range): beyond it a jump is not believed."""

    name: str
    quantity: Quantity = Quantity.ACTIVE_IMPORT
    energy_per_pulse: Fraction = attrs.field(default=Fraction(1), converter=_fraction)
    wiring: Wiring = Wiring.KY
    counter_width: int = 32
    max_counts: int | None = None
    obis_c: int | None = None
    # OBIS value group B: the channel (0: none given). A recorder's inputs take 1, 2, ...
    # so two inputs measuring the same quantity keep apart.
    obis_b: int = 0

    def __attrs_post_init__(self) -> None:
        if self.energy_per_pulse <= 0:
            raise ValueError(f"channel {self.name}: energy per pulse must be positive")
        if not 1 <= self.counter_width <= 64:
            raise ValueError(f"channel {self.name}: counter width {self.counter_width} (1..64)")
        if self.max_counts is not None and self.max_counts < 1:
            raise ValueError(f"channel {self.name}: max_counts must be positive")

    @classmethod
    def from_constant(
        cls, name: str, pulses_per_kwh: Fraction | Decimal | int | str, **kwargs: object
    ) -> PulseChannel:
        """A channel from the meter constant in pulses per kWh (kvarh)."""
        constant = _fraction(pulses_per_kwh)
        if constant <= 0:
            raise ValueError(f"channel {name}: meter constant must be positive")
        return cls(name, energy_per_pulse=Fraction(1000) / constant, **kwargs)  # type: ignore[arg-type]

    @property
    def modulus(self) -> int:
        return 1 << self.counter_width

    @property
    def plausible_counts(self) -> int:
        return self.max_counts if self.max_counts is not None else self.modulus // 2

    @property
    def c(self) -> int:
        return self.obis_c if self.obis_c is not None else self.quantity.obis_c

    def obis(self, d: int) -> ObisCode:
        return ObisCode(1, self.obis_b, self.c, d, 0)

    @property
    def energy_obis(self) -> ObisCode:
        return self.obis(29)

    def energy(self, counts: Fraction | int) -> Fraction:
        """Energy (Wh or varh) of ``counts`` recorder counts."""
        return Fraction(counts) * self.energy_per_pulse / self.wiring.counts_per_pulse


@attrs.frozen
class CounterSample:
    """A recorder's counter value at the end of an integration period; ``restarted`` when
    the recorder restarted (reset the counter) during the period that ends here."""

    end: datetime
    counter: int
    restarted: bool = False


@attrs.frozen
class PeriodCounts:
    """The counts of one integration period ``[start, start + period)``; None when not
    known (see ``quality``). Counts are a Fraction only when shared out (ESTIMATED)."""

    start: datetime
    counts: Fraction | None
    quality: Quality = Quality.OK


def period_counts(
    channel: PulseChannel, samples: Sequence[CounterSample], period: timedelta
) -> list[PeriodCounts]:
    """The counts of every period from the first sample's end to the last sample's end
    (the first sample is the baseline). Samples are taken in time order; a repeated end
    keeps the first. Periods with no snapshot are MISSING; see the module docstring for
    rollover and restart."""
    if period <= timedelta(0):
        raise ValueError("integration period must be positive")
    ordered: list[CounterSample] = []
    for s in sorted(samples, key=lambda s: s.end):
        if ordered and s.end == ordered[-1].end:
            continue
        ordered.append(s)
    out: list[PeriodCounts] = []
    for prev, cur in itertools.pairwise(ordered):
        span = cur.end - prev.end
        steps, rest = divmod(span, period)
        if rest or steps < 1:
            # Period ends not on the grid (the recorder's clock moved): the counts
            # cannot be placed in periods.
            first = prev.end + period
            while first <= cur.end - period:
                out.append(PeriodCounts(first - period, None, Quality.DATA_NOT_VALID))
                first += period
            out.append(PeriodCounts(cur.end - period, None,
                                    Quality.DATA_NOT_VALID | Quality.CLOCK_INVALID))
            continue
        starts = [prev.end + k * period for k in range(steps)]
        delta = (cur.counter - prev.counter) % channel.modulus
        wrapped = cur.counter < prev.counter
        restarted = cur.restarted or (wrapped and delta > channel.plausible_counts * steps)
        if restarted:
            lost = Quality.MISSING | Quality.POWER_DOWN
            out.extend(PeriodCounts(s, None, lost) for s in starts[:-1])
            flags = Quality.COUNTER_RESET | Quality.POWER_DOWN
            counts = cur.counter % channel.modulus
            if counts > channel.plausible_counts:
                out.append(PeriodCounts(starts[-1], None, flags | Quality.DATA_NOT_VALID))
            else:
                out.append(PeriodCounts(starts[-1], Fraction(counts), flags))
            continue
        if delta > channel.plausible_counts * steps:
            out.extend(PeriodCounts(s, None, Quality.DATA_NOT_VALID) for s in starts)
            continue
        flags = Quality.OVERFLOW if wrapped else Quality.OK
        if steps == 1:
            out.append(PeriodCounts(starts[0], Fraction(delta), flags))
        else:
            share = Fraction(delta, steps)
            out.extend(PeriodCounts(s, share, flags | Quality.ESTIMATED) for s in starts)
    return out


# ---------------------------------------------------------------------------
# Demand
# ---------------------------------------------------------------------------


@attrs.frozen
class DemandSettings:
    """How demand is worked out: the integration ``period``; ``block`` window (a multiple
    of the period, None for none); ``rolling`` window in periods (0 for none); billing
    periods monthly from ``billing_day`` (1..28) at 00:00 in ``tz``."""

    period: timedelta = timedelta(minutes=15)
    block: timedelta | None = None
    rolling: int = 0
    billing_day: int = 1
    tz: tzinfo = UTC

    def __attrs_post_init__(self) -> None:
        if self.period <= timedelta(0):
            raise ValueError("integration period must be positive")
        if timedelta(days=1) % self.period:
            raise ValueError(f"integration period {self.period} does not divide a day")
        if self.block is not None and (self.block <= timedelta(0) or self.block % self.period):
            raise ValueError(f"block window {self.block} is no multiple of the period "
                             f"{self.period}")
        if self.block is not None and timedelta(days=1) % self.block:
            raise ValueError(f"block window {self.block} does not divide a day")
        if self.rolling < 0 or self.rolling == 1:
            raise ValueError(f"rolling window of {self.rolling} periods (0 for none, or 2+)")
        if not 1 <= self.billing_day <= 28:
            raise ValueError(f"billing day {self.billing_day} (1..28)")

    @property
    def lookback(self) -> int:
        """Periods before the first wanted one that windows reaching back need."""
        block = self.block // self.period if self.block is not None else 1
        return max(block, self.rolling, 1) - 1

    def billing_start(self, at: datetime) -> datetime:
        """The start of the billing period holding the instant ``at``."""
        local = at.astimezone(self.tz)
        start = local.replace(day=self.billing_day, hour=0, minute=0, second=0, microsecond=0)
        if start > local:
            year, month = (local.year, local.month - 1) if local.month > 1 else (
                local.year - 1, 12)
            start = start.replace(year=year, month=month)
        return start.astimezone(UTC)


@attrs.frozen
class Window:
    """Demand over ``[end - length, end)``: ``value`` in W (var), None when not known."""

    end: datetime
    length: timedelta
    value: Fraction | None
    quality: Quality = Quality.OK


@attrs.frozen
class MaximumDemand:
    """The largest demand of a billing period's windows that were read, with the end of
    its window."""

    billing_start: datetime
    value: Fraction
    time: datetime
    quality: Quality = Quality.OK


def _window(periods: Sequence[PeriodCounts], channel: PulseChannel, end: datetime,
            length: timedelta) -> Window:
    quality = Quality.OK
    for p in periods:
        quality |= p.quality
    if any(p.counts is None for p in periods):
        return Window(end, length, None, quality | Quality.MISSING)
    total = sum((p.counts for p in periods if p.counts is not None), Fraction(0))
    power = channel.energy(total) * 3600 / Fraction(int(length.total_seconds()))
    return Window(end, length, power, quality)


def period_demand(
    channel: PulseChannel, counts: Sequence[PeriodCounts], period: timedelta
) -> list[Window]:
    return [_window([p], channel, p.start + period, period) for p in counts]


def block_demand(
    channel: PulseChannel, counts: Sequence[PeriodCounts], settings: DemandSettings
) -> list[Window]:
    """Demand over clock-aligned blocks; a block is given only when every period of it was
    read (present or flagged)."""
    if settings.block is None:
        return []
    per = settings.block // settings.period
    by_start = {p.start: p for p in counts}
    out = []
    seen: set[datetime] = set()
    for p in counts:
        midnight = p.start.replace(hour=0, minute=0, second=0, microsecond=0)
        block_start = midnight + ((p.start - midnight) // settings.block) * settings.block
        if block_start in seen:
            continue
        seen.add(block_start)
        members = [by_start.get(block_start + k * settings.period) for k in range(per)]
        if any(m is None for m in members):
            continue
        out.append(_window([m for m in members if m is not None], channel,
                           block_start + settings.block, settings.block))
    return out


def rolling_demand(
    channel: PulseChannel, counts: Sequence[PeriodCounts], settings: DemandSettings
) -> list[Window]:
    """Demand over the last ``rolling`` periods, one value at the end of each period that
    has that many periods read before it."""
    n = settings.rolling
    if n < 2:
        return []
    by_start = {p.start: p for p in counts}
    out = []
    for p in counts:
        members = [by_start.get(p.start - k * settings.period) for k in range(n - 1, -1, -1)]
        if any(m is None for m in members):
            continue
        out.append(_window([m for m in members if m is not None], channel,
                           p.start + settings.period, settings.period * n))
    return out


def maximum_demand(windows: Sequence[Window], settings: DemandSettings) -> list[MaximumDemand]:
    """Per billing period, the largest window value and the end of its window (the earliest
    on a tie). A window belongs to the billing period its start falls in."""
    best: dict[datetime, MaximumDemand] = {}
    for w in windows:
        if w.value is None or w.quality & UNUSABLE:
            continue
        billing = settings.billing_start(w.end - w.length)
        cur = best.get(billing)
        if cur is None or w.value > cur.value or (w.value == cur.value and w.end < cur.time):
            best[billing] = MaximumDemand(billing, w.value, w.end, w.quality)
    return [best[k] for k in sorted(best)]


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


def _decimal(value: Fraction | None) -> Value:
    return None if value is None else to_decimal(value)


def _block(meter: str, obis: ObisCode, start: datetime, period: timedelta,
           values: list[Value], statuses: list[Quality], unit: Unit,
           source: str) -> IntervalBlock:
    return IntervalBlock(meter=meter, obis=obis, start=start, period=period,
                         values=tuple(values), statuses=tuple(statuses), unit=unit,
                         source=source)


def _runs(items: list[tuple[datetime, Value, Quality]], step: timedelta) -> list[
        list[tuple[datetime, Value, Quality]]]:
    """Split (start, value, quality) items into runs of consecutive starts."""
    runs: list[list[tuple[datetime, Value, Quality]]] = []
    for item in items:
        if runs and item[0] == runs[-1][-1][0] + step:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _window_blocks(meter: str, obis: ObisCode, windows: Sequence[Window], step: timedelta,
                   unit: Unit, source: str, since: datetime | None) -> list[IntervalBlock]:
    """Windows as interval blocks: each value filed under ``[end - step, end)``."""
    items = [(w.end - step, _decimal(w.value), w.quality) for w in windows
             if since is None or w.end - step >= since]
    return [
        _block(meter, obis, run[0][0], step, [v for _, v, _ in run], [q for _, _, q in run],
               unit, source)
        for run in _runs(items, step)
    ]


def channel_records(
    meter: str,
    channel: PulseChannel,
    samples: Sequence[CounterSample],
    settings: DemandSettings,
    *,
    since: datetime | None = None,
    source: str = "",
) -> list[IntervalBlock | Reading]:
    """Every record of one channel from its counter snapshots: energy and period demand
    per integration period, block and rolling demand where configured, and the maximum
    demand of each billing period (over the windows read). Intervals starting before
    ``since`` were stored already: they only feed windows that reach back and are not
    given again."""
    counts = period_counts(channel, samples, settings.period)
    energy = [(p.start, _decimal(None if p.counts is None else channel.energy(p.counts)),
               p.quality) for p in counts if since is None or p.start >= since]
    records: list[IntervalBlock | Reading] = [
        _block(meter, channel.energy_obis, run[0][0], settings.period,
               [v for _, v, _ in run], [q for _, _, q in run],
               channel.quantity.energy_unit, source)
        for run in _runs(energy, settings.period)
    ]
    power = channel.quantity.power_unit
    series: list[tuple[int, list[Window], timedelta]] = [
        (5, period_demand(channel, counts, settings.period), settings.period)
    ]
    if settings.block is not None and settings.block != settings.period:
        series.append((15, block_demand(channel, counts, settings), settings.block))
    if settings.rolling >= 2:
        series.append((25, rolling_demand(channel, counts, settings), settings.period))
    for d, windows, step in series:
        records.extend(_window_blocks(meter, channel.obis(d), windows, step, power, source,
                                      since))
        fresh = [w for w in windows if since is None or w.end - step >= since]
        for md in maximum_demand(fresh, settings):
            records.append(Reading(
                meter=meter, obis=channel.obis(d + 1), value=to_decimal(md.value), unit=power,
                meter_time=md.time, quality=md.quality, source=source,
                native_id=f"maximum demand, billing period from {md.billing_start.isoformat()}",
            ))
    return records


__all__ = [
    "CounterSample",
    "DemandSettings",
    "MaximumDemand",
    "PeriodCounts",
    "PulseChannel",
    "Quantity",
    "Window",
    "Wiring",
    "block_demand",
    "channel_records",
    "maximum_demand",
    "period_counts",
    "period_demand",
    "rolling_demand",
    "to_decimal",
]
