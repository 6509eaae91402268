"""Closed days of intervals moved into one row per series and day (PostgreSQL, migration 0020).

An interval row costs 120-130 bytes for one number; a day of a meter's channel is 96 of
them and does not change once closed. Compaction moves each *regular* closed day out of
``interval_rows`` into ``interval_days`` (its values as one array: 12-15 bytes an interval),
and the view ``intervals`` reads both, so every query, report and operator's SQL reads as
before. A day is regular when its intervals share one period of at least a minute that
divides the day, start on its multiples from midnight UTC, share one source, unit, scaler
and value type, and every value is an exact number (decimal or integer). Other days (text
values, a change of period mid-day, a missing value) stay as rows; so does a day already
compacted once that gets a new interval later (it stays beside its day row).

Which days: those ending ``compact_after`` days or more before today's UTC midnight (at
least ``MIN_AGE_DAYS``; the database's clock bounds it too), in the monthly partitions
only (never the DEFAULT partition, whose rows are clocks gone wrong). Each run starts where
the last ended (``interval_compaction.compacted_before``) and works through each month's
range one block of ``SERIES_CHUNK`` series numbers at a time (the unique key's index
serves each block), one short transaction each, so a run can stop anywhere and the next
goes on.

Exactly once across the two tables: a writer never puts a row in ``interval_rows`` for an
interval a day row holds. Batches whose intervals are all younger than ``FRESH`` (the usual
case: the day being collected) cannot meet a day row and are copied as before, without a
lock. A batch with older intervals takes ``COMPACT_LOCK`` shared and reads
``interval_compaction.day_rows_before`` (which a run moves forward under the lock before its
first block): when an interval of the batch is older than that, the batch leaves out the
intervals day rows hold (fep.store.copy); otherwise (a backlog of the last days) it is
copied as usual. Compaction takes the lock exclusively for each block, so a late re-read of
a closed day and the move of that day never interleave. The margin between ``FRESH`` (2
days) and ``MIN_AGE_DAYS`` (3) covers nodes whose clocks differ by up to a day.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from fep.errors import StoreError
from fep.store.partitions import create_partition, month_start, partitions_of

# Any number will do as long as every node uses the same one.
COMPACT_LOCK = 0x6665_7020
# Intervals younger than this never meet a day row: their batches skip the check.
FRESH = timedelta(days=2)
MIN_AGE_DAYS = 3
DEFAULT_COMPACT_AFTER = 7
# Series numbers per block (one transaction): with 96 intervals a day, a block of a month
# is at most 100 x 31 x 96 rows.
SERIES_CHUNK = 100
# How long a block waits for writers of old intervals (which hold the lock shared for one
# batch) before the run gives up until its next turn.
LOCK_TIMEOUT = "10s"

# One block (series numbers first to last, inclusive; a range lo to hi within one month): the
# regular days not compacted already aggregated into day rows in one pass over the rows
# (the unique key's index gives them in order), then those days' rows deleted by the same
# index. The last SELECT gives the day rows made, the intervals they hold and the rows
# deleted (equal, or the block is rolled back).
_DAY = "date_trunc('day', start_time, 'UTC')"
COMPACT_SQL = f"""
WITH days AS (
    SELECT {_DAY} AS day_start, max(received_time) AS received_time, series,
           min(source) AS source, min(period_s) AS period_s, min(unit_code) AS unit_code,
           min(scaler) AS scaler, min(value_type::text)::"char" AS value_type,
           array_agg(value ORDER BY start_time) AS vals,
           CASE WHEN count(*) = 86400 / min(period_s) THEN NULL
                ELSE array_agg((extract(epoch FROM start_time - {_DAY}) / period_s)::smallint
                               ORDER BY start_time) END AS slots,
           CASE WHEN bool_and(status = 0) THEN NULL
                ELSE array_agg(status ORDER BY start_time) END AS statuses,
           CASE WHEN min(received_time) = max(received_time) THEN NULL
                ELSE array_agg(received_time ORDER BY start_time) END AS received_times
    FROM interval_rows
    WHERE series >= %(first)s AND series <= %(last)s
      AND start_time >= %(lo)s AND start_time < %(hi)s
    GROUP BY series, {_DAY}
    HAVING min(period_s) = max(period_s) AND min(period_s) >= 60
       AND 86400 %% min(period_s) = 0
       AND bool_and(value IS NOT NULL AND value_text IS NULL AND value_type IN ('D', 'I')
                    AND extract(epoch FROM start_time - {_DAY}) %% period_s = 0)
       AND min(value_type::text) = max(value_type::text)
       AND min(source) = max(source) AND min(scaler) = max(scaler)
       AND min(coalesce(unit_code, -1)) = max(coalesce(unit_code, -1))
), made AS (
    INSERT INTO interval_days (day_start, received_time, series, source, period_s, unit_code,
                               scaler, value_type, vals, slots, statuses, received_times)
    SELECT g.* FROM days g
    WHERE NOT EXISTS (SELECT 1 FROM interval_days d
                      WHERE d.series = g.series AND d.day_start = g.day_start)
    RETURNING series, day_start, cardinality(vals) AS n
), moved AS (
    DELETE FROM interval_rows r USING made m
    WHERE r.series = m.series AND r.start_time >= m.day_start
      AND r.start_time < m.day_start + interval '1 day'
      AND r.start_time >= %(lo)s AND r.start_time < %(hi)s
    RETURNING 1
)
SELECT (SELECT count(*) FROM made), (SELECT coalesce(sum(n), 0) FROM made),
       (SELECT count(*) FROM moved)
"""


@attrs.frozen
class CompactionResult:
    """What one run did: day rows made, interval rows moved into them, and the instant
    before which every interval has now been examined."""

    days: int = 0
    intervals: int = 0
    compacted_before: datetime | None = None
    blocks: int = 0

    def describe(self) -> str:
        upto = ("" if self.compacted_before is None
                else f" (intervals before {self.compacted_before:%Y-%m-%d} examined)")
        return (f"{self.intervals:,} intervals moved into {self.days:,} day rows"
                f"{upto}")


def midnight(t: datetime) -> datetime:
    """The first instant of ``t``'s UTC day."""
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, t.day, tzinfo=UTC)


def compact_cutoff(now: datetime, compact_after: int) -> datetime:
    """The midnight UTC before which days may be compacted: ``compact_after`` days before
    today's."""
    if compact_after < MIN_AGE_DAYS:
        raise StoreError(f"compact_after must be at least {MIN_AGE_DAYS} days (intervals "
                         f"younger than {FRESH.days} days are written without checking day "
                         f"rows), not {compact_after}")
    return midnight(now) - timedelta(days=compact_after)


# ---------------------------------------------------------------------------
# Interactions (each run with the store's ``interact``: one transaction)
# ---------------------------------------------------------------------------


async def _plan(cursor: Any, cutoff: datetime) -> tuple[datetime | None, datetime, int]:
    """Where the last run ended, the cutoff bounded by the database's own clock, and the
    highest series number."""
    await cursor.execute(
        "SELECT (SELECT compacted_before FROM interval_compaction),"
        " least(%s::timestamptz, date_trunc('day', now(), 'UTC') - %s * interval '1 day'),"
        " (SELECT coalesce(max(id), 0) FROM record_series)", (cutoff, MIN_AGE_DAYS))
    since, bounded, last = cursor.fetchone()
    return since, bounded, int(last)


async def _compact_block(cursor: Any, lo: datetime, hi: datetime, first: int, last: int
                         ) -> tuple[int, int]:
    """One block under the lock: (day rows made, interval rows moved)."""
    await cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (COMPACT_LOCK,))
    await cursor.execute(COMPACT_SQL, {"lo": lo, "hi": hi, "first": first, "last": last})
    days, intervals, deleted = (int(n) for n in cursor.fetchone())
    if deleted != intervals:  # never seen: the transaction is rolled back, nothing moved
        raise StoreError(f"compaction of series {first} to {last} from {lo:%Y-%m-%d}: "
                         f"{intervals} intervals into day rows but {deleted} rows deleted")
    return days, intervals


async def _starting(cursor: Any, cutoff: datetime) -> None:
    """Before a run's first block, under the lock: day rows may hold intervals before
    ``cutoff`` from now on (writers check those)."""
    await cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (COMPACT_LOCK,))
    await cursor.execute(
        "INSERT INTO interval_compaction (one, day_rows_before) VALUES (true, %s)"
        " ON CONFLICT (one) DO UPDATE SET day_rows_before ="
        " greatest(interval_compaction.day_rows_before, EXCLUDED.day_rows_before)",
        (cutoff,))


async def _mark(cursor: Any, before: datetime) -> None:
    await cursor.execute("UPDATE interval_compaction SET compacted_before = %s", (before,))


def day_rows_before(cursor: Any) -> datetime | None:
    """In a writer's transaction (a synchronous psycopg2 cursor): take the compaction lock
    shared, then the instant before which day rows may hold intervals (None: there are
    none). No run can start a block, nor move that instant, until the transaction ends."""
    cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", (COMPACT_LOCK,))
    cursor.execute("SELECT day_rows_before FROM interval_compaction")
    row = cursor.fetchone()
    return None if row is None else row[0]


async def compact_intervals(
    store: Any,
    now: datetime,
    compact_after: int = DEFAULT_COMPACT_AFTER,
    *,
    since: datetime | None = None,
    progress: Callable[[datetime, int, int], None] | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> CompactionResult:
    """Compact the regular days of intervals that end ``compact_after`` days before today's
    midnight (``now``), from where the last run ended (or ``since``: look again from
    there). ``progress(month, days, intervals)`` is told after each month's range. When
    ``keep_going()`` turns false (the daemon stopping) the run ends after its current
    block, unmarked: the next run goes on from where this one started, past what it moved."""
    cutoff = compact_cutoff(now, compact_after)
    last_end, cutoff, last_series = await store.interact(_plan, cutoff)
    # Whole days only: a range starting mid-day would make a day row of half a day.
    start = last_end if since is None else midnight(since)
    if start is not None and start >= cutoff:
        return CompactionResult(compacted_before=last_end)
    days = intervals = blocks = 0
    await store.interact(_starting, cutoff)
    for p in await store.interact(partitions_of, "intervals"):
        if p.default or p.lower is None or p.upper is None:
            continue
        lo = p.lower if start is None else max(p.lower, start)
        hi = min(p.upper, cutoff)
        if lo >= hi:
            continue
        # The month's day rows go to their own partition, made here if fep has not yet.
        await store.interact(create_partition, "interval_days", "day_start",
                             month_start(p.lower))
        month_days = month_intervals = 0
        for first in range(1, last_series + 1, SERIES_CHUNK):
            if keep_going is not None and not keep_going():
                return CompactionResult(days + month_days, intervals + month_intervals,
                                        last_end, blocks)
            made, moved = await store.interact(
                _compact_block, lo, hi, first, first + SERIES_CHUNK - 1)
            month_days += made
            month_intervals += moved
            blocks += 1
        days += month_days
        intervals += month_intervals
        if progress is not None:
            progress(p.lower, month_days, month_intervals)
    if last_end is None or cutoff > last_end or since is not None:
        await store.interact(_mark, max(cutoff, last_end or cutoff))
    return CompactionResult(days, intervals, max(cutoff, last_end or cutoff), blocks)
