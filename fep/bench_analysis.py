"""The analysis rows of `make bench`: validating (and estimating) and balancing one day of
96-interval data for a fleet of meters, in interval rows per second, on SQLite and
PostgreSQL.

The fleet: ``meters`` meters in transformer areas of ``area_size`` meters each, one the
area's summary meter (input: what its members take plus 4 %) and the others members with a
steady load and one meter in a hundred missing two intervals (so validation finds gaps and
estimation fills them). The day is written to the store first (not timed), then
``jobs.run_vee`` and ``jobs.run_balance`` run as ``fep vee run`` and ``fep balance`` do;
each is timed, and the rate is the day's interval rows (meters x 96) over its seconds.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from fep.model import IntervalBlock, Meter, ObisCode

CHANNEL = ObisCode(1, 0, 1, 29, 0)
Q15 = timedelta(minutes=15)
DAY = date(2026, 12, 1)
# Meters written to the store per call while setting the day up.
WRITE_CHUNK = 500


@attrs.frozen
class AnalysisRates:
    meters: int
    rows: int
    vee_seconds: float
    balance_seconds: float
    areas: int
    estimates: int

    @property
    def vee_rate(self) -> float:
        return self.rows / self.vee_seconds

    @property
    def balance_rate(self) -> float:
        return self.rows / self.balance_seconds

    @property
    def both_rate(self) -> float:
        return self.rows / (self.vee_seconds + self.balance_seconds)


def fleet(meters: int, area_size: int = 100) -> tuple[str, list[str]]:
    """The areas CSV and the meter ids of a fleet: areas of ``area_size`` meters, the first
    of each its summary meter."""
    ids = [f"B{n:06d}" for n in range(meters)]
    lines = ["area,name,kind,parent,meter,role,direction,phase"]
    for first in range(0, meters, area_size):
        area = f"T{first // area_size:05d}"
        lines.append(f"{area},,transformer,,,,,")
        for n, meter in enumerate(ids[first:first + area_size]):
            lines.append(f"{area},,,,{meter},{'summary' if n == 0 else 'member'},"
                         f"{'in' if n == 0 else ''},{'ABC'[n % 3] if n else ''}")
    return "\n".join(lines) + "\n", ids


def day_blocks(ids: list[str], area_size: int = 100) -> list[IntervalBlock]:
    """A day of 96 intervals per meter (see the module's docstring)."""
    start = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC)
    out: list[IntervalBlock] = []
    for first in range(0, len(ids), area_size):
        members = ids[first + 1:first + area_size]
        load = [Decimal(40 + (n * 7) % 120) for n in range(len(members))]
        summary = (sum(load, Decimal(0)) / Decimal("0.96")).quantize(Decimal(1))
        out.append(IntervalBlock(ids[first], CHANNEL, start, Q15, (summary,) * 96))
        for meter, value in zip(members, load, strict=True):
            if int(meter[1:]) % 100 == 1:  # two intervals missing: a gap to estimate
                out.append(IntervalBlock(meter, CHANNEL, start, Q15, (value,) * 40))
                out.append(IntervalBlock(meter, CHANNEL, start + 42 * Q15, Q15, (value,) * 54))
            else:
                out.append(IntervalBlock(meter, CHANNEL, start, Q15, (value,) * 96))
    return out


async def analysis_rate(reactor: Any, url: str, meters: int, *,
                        area_size: int = 100) -> AnalysisRates:
    """Set a fleet's day up in the store at ``url`` (a new, empty one), then time the day's
    validation and estimation and its balance."""
    from fep.analysis import areas, jobs
    from fep.analysis.settings import VeeSettings
    from fep.analysis.store import AnalysisStore
    from fep.store import open_store

    csv, ids = fleet(meters, area_size)
    store = open_store(url, reactor)
    await store.open()
    try:
        await store.add_meters([Meter(m, "dlms", "tcp:127.0.0.1:4059") for m in ids])
        await AnalysisStore(store).save_network(areas.read_csv(csv))
        blocks = day_blocks(ids, area_size)
        for first in range(0, len(blocks), WRITE_CHUNK):
            await store.write(blocks[first:first + WRITE_CHUNK])
        rows = sum(len(b.values) for b in blocks)
        # Rules that need a history (spikes, history limits, zero days) find none: the rate
        # is of the day's own checks, the reads and the writes.
        settings = VeeSettings()
        started = time.perf_counter()
        vee = await jobs.run_vee(store, settings, DAY)
        vee_seconds = time.perf_counter() - started
        started = time.perf_counter()
        balances = await jobs.run_balance(store, settings, DAY)
        balance_seconds = time.perf_counter() - started
    finally:
        await store.close()
    return AnalysisRates(meters, rows, vee_seconds, balance_seconds, len(balances),
                         sum(vee.estimates.values()))
