"""Closed days of intervals kept as one row per series and day (migration 0020,
fep.store.compaction) on the real PostgreSQL: every interval reads back as it was through the
view, the store and the analysis tier; only regular days move; a late re-read of a compacted
day is not stored twice and a new interval of it is stored once; compaction and a writer of
old intervals wait for each other; runs go on where the last ended; the keeper, the command
and the setting."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from fep.errors import ConfigError, StoreError
from fep.model import IntervalBlock, ObisCode, Quality
from fep.store import compaction
from fep.store.compaction import (
    COMPACT_LOCK,
    compact_cutoff,
    compact_intervals,
)
from fep.store.partitions import PartitionKeeper, ensure_partitions
from fep.store.postgres import PostgresStore
from tests.postgres import fresh_database
from tests.store.test_partitions import connect, query
from tests.store.test_postgres import ProxiedStore

ENERGY = ObisCode.parse("1.0.1.29.0.255")
QUARTER = timedelta(minutes=15)
COLUMNS = ("meter, obis, start_time, period_s, value, value_text, value_type, status,"
           " unit_code, scaler, received_time, source")


def midnight(days_ago: int) -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=days_ago)


def day_of(meter: str, day: datetime, values: Any, *, period: timedelta = QUARTER,
           received: datetime | None = None, **kw: Any) -> IntervalBlock:
    return IntervalBlock(meter, kw.pop("obis", ENERGY), day, period, tuple(values),
                         received_time=received or day + timedelta(days=1, hours=2),
                         source=kw.pop("source", "dlms"), **kw)


def shapes(day: datetime) -> tuple[list[IntervalBlock], set[str]]:
    """Days of every shape on ``day``, and the meters whose day is not regular (it stays)."""
    later = day + timedelta(days=1, hours=5)
    blocks = [
        # Whole days of exact numbers: decimals keep their scale, integers stay integers.
        day_of("whole", day, [Decimal(v) / 8 for v in range(96)]),
        day_of("scaled", day, [Decimal("1.50"), Decimal("-0.001")] * 48, scaler=-2),
        day_of("integers", day, list(range(1000, 1096))),
        # Gaps: the morning and the evening only.
        day_of("gaps", day, [Decimal(v) for v in range(20)]),
        day_of("gaps", day + timedelta(hours=18), [Decimal(v) for v in range(10)],
               received=day + timedelta(days=1, hours=2)),
        # Statuses on some intervals, and two deliveries of one day.
        day_of("flagged", day, [Decimal(1)] * 96, statuses=tuple(
            Quality.POWER_DOWN if i % 7 == 0 else Quality.OK for i in range(96))),
        day_of("twice", day, [Decimal(2)] * 48),
        day_of("twice", day + timedelta(hours=12), [Decimal(3)] * 48, received=later),
        # Hourly values.
        day_of("hourly", day, [Decimal(5)] * 24, period=timedelta(hours=1)),
        # Not regular: text, a missing value, two periods, a start off the grid, periods
        # under a minute, two sources.
        day_of("text", day, ["on"] * 96),
        day_of("none", day, [Decimal(1), None, Decimal(2)]),
        day_of("periods", day, [Decimal(1)] * 4),
        day_of("periods", day + timedelta(hours=12), [Decimal(1)] * 4,
               period=timedelta(minutes=30)),
        day_of("offgrid", day + timedelta(minutes=5), [Decimal(1)] * 10),
        day_of("seconds", day, [Decimal(1)] * 10, period=timedelta(seconds=30)),
        day_of("sources", day, [Decimal(1)] * 4),
        day_of("sources", day + timedelta(hours=6), [Decimal(1)] * 4, source="gw3761:DCU1"),
    ]
    return blocks, {"text", "none", "periods", "offgrid", "seconds", "sources"}


async def waiting_for_the_lock(case: unittest.TestCase, conn: Any) -> None:
    """Until a connection of fep waits for the compaction lock (PostgreSQL shows it in
    pg_locks): the event the tests wait for, looked at every 20 ms, for 30 s at most."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ((n,),) = query(conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND NOT granted AND objid = %s", (COMPACT_LOCK & 0xFFFF_FFFF,))
        if n:
            return
        await deferLater(reactor, 0.02, lambda: None)
    case.fail("nobody waited for the compaction lock")


class CompactionTests(unittest.TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        self.url = fresh_database(self)
        self.store = PostgresStore(self.url, reactor)
        await self.store.open()
        self.addCleanup(self.store.close)
        self.conn = connect(self.url)
        self.addCleanup(self.conn.close)
        self.old = midnight(20)
        # The months of the old days have their partitions, as on a node that lived then.
        await ensure_partitions(self.store, self.old, 1)

    def view(self) -> list[tuple[Any, ...]]:
        return query(self.conn, f"SELECT {COLUMNS} FROM intervals ORDER BY meter, obis,"
                     " start_time")

    def count(self, table: str) -> int:
        ((n,),) = query(self.conn, f"SELECT count(*) FROM {table}")
        return int(n)

    async def test_regular_days_become_day_rows_and_read_back_as_they_were(self) -> None:
        blocks, irregular = shapes(self.old)
        fresh = day_of("whole", midnight(2), [Decimal(1)] * 96)
        stored = await self.store.write([*blocks, fresh])
        before = self.view()
        self.assertEqual(len(before), stored)
        per_meter = {m: await self.store.intervals(m) for m in ("gaps", "twice", "whole")}
        analysed = await self.analysed()
        self.assertEqual(await self.store.count("intervals"), stored)

        result = await compact_intervals(self.store, datetime.now(UTC))
        regular = {b.meter for b in blocks} - irregular
        self.assertEqual(result.days, len(regular))
        days = {m for (m,) in query(self.conn, "SELECT s.meter FROM interval_days d"
                                    " JOIN record_series s ON s.id = d.series")}
        self.assertEqual(days, regular)
        # Every interval reads back as it was, column by column; the store joins them into
        # the same blocks.
        self.assertEqual(self.view(), before)
        self.assertEqual(await self.store.count("intervals"), stored)
        for meter, read in per_meter.items():
            self.assertEqual(await self.store.intervals(meter), read)
        # What stays as rows: the irregular days and the day two days ago.
        self.assertEqual(self.count("interval_rows"),
                         sum(len(b.values) for b in blocks if b.meter in irregular) + 96)
        self.assertEqual(self.count("interval_days"), len(regular))
        # The arrays say only what differs from the usual.
        shape = dict(query(
            self.conn, "SELECT s.meter, (d.slots IS NOT NULL, d.statuses IS NOT NULL,"
            " d.received_times IS NOT NULL)::text FROM interval_days d"
            " JOIN record_series s ON s.id = d.series"))
        self.assertEqual(shape["whole"], "(f,f,f)")
        self.assertEqual(shape["gaps"], "(t,f,f)")
        self.assertEqual(shape["flagged"], "(f,t,f)")
        self.assertEqual(shape["twice"], "(f,f,t)")

        # The per-meter read from a time within a compacted day, and the analysis tier's
        # reads of a day range, see only their intervals.
        since = self.old + timedelta(hours=18, minutes=30)
        (block,) = await self.store.intervals("gaps", since=since)
        self.assertEqual((block.start, len(block.values)), (since, 8))
        self.assertEqual(await self.analysed(), analysed)
        points, samples = analysed
        self.assertEqual([len(points["whole"]), len(points["hourly"])], [96, 24])
        self.assertEqual(len(samples["hourly"][str(ENERGY)]), 1)

    async def analysed(self) -> tuple[Any, Any]:
        """What the analysis tier reads of a day, and of an hour's range."""
        from fep.analysis.store import AnalysisStore

        analysis = AnalysisStore(self.store)
        points = await analysis.intervals(["whole", "hourly", "gaps"], str(ENERGY), self.old,
                                          self.old + timedelta(days=1))
        samples = await analysis.samples(["hourly"], [str(ENERGY)], self.old + timedelta(
            hours=23), self.old + timedelta(days=2))
        return points, samples

    async def test_a_late_reread_is_not_stored_twice_and_a_new_interval_once(self) -> None:
        gaps = [day_of("m1", self.old, [Decimal(v) for v in range(40)]),
                day_of("m1", self.old + timedelta(hours=12), [Decimal(v) for v in range(48)])]
        await self.store.write(gaps)
        await compact_intervals(self.store, datetime.now(UTC))
        self.assertEqual((self.count("interval_days"), self.count("interval_rows")), (1, 0))
        before = self.view()
        # The whole day read again (a re-collection of the profile): only the eight
        # intervals the day row has not (10:00 to 12:00) are new.
        again = day_of("m1", self.old, [Decimal(v) for v in range(40)]
                       + [Decimal(-1)] * 8 + [Decimal(v) for v in range(48)])
        self.assertEqual(await self.store.write([again]), 8)
        self.assertEqual(await self.store.write([again]), 0)
        after = self.view()
        self.assertEqual(len(after), 96)
        self.assertEqual(len(set(after) - set(before)), 8)
        self.assertEqual(self.count("interval_rows"), 8)
        # The day is not compacted again while it has a day row: the eight stay as rows.
        result = await compact_intervals(self.store, datetime.now(UTC), since=self.old)
        self.assertEqual(result.days, 0)
        self.assertEqual(self.view(), after)

    async def test_compaction_and_a_writer_of_old_intervals_wait_for_each_other(self) -> None:
        self.patch(compaction, "LOCK_TIMEOUT", "200ms")
        block = day_of("m1", self.old, [Decimal(1)] * 96)
        await self.store.write([block])
        holder = psycopg2.connect(self.url)
        self.addCleanup(holder.close)
        holder.autocommit = True
        # A writer's batch under way (it holds the lock shared): compaction gives up its turn.
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock_shared(%s)", (COMPACT_LOCK,))
        with self.assertRaises(StoreError) as raised:
            await compact_intervals(self.store, datetime.now(UTC))
        self.assertIn("lock timeout", str(raised.exception))
        self.assertEqual(self.count("interval_days"), 0)
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock_shared(%s)", (COMPACT_LOCK,))
        self.assertEqual((await compact_intervals(self.store, datetime.now(UTC))).days, 1)

        # Compaction under way (the lock held exclusively): a batch of old intervals waits
        # for it, then stores only what the day rows do not hold.
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (COMPACT_LOCK,))
        late = day_of("m1", self.old - timedelta(days=1), [Decimal(2)] * 4)
        write = Deferred.fromCoroutine(self._write([block, late]))
        await waiting_for_the_lock(self, self.conn)
        self.assertFalse(write.called)
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (COMPACT_LOCK,))
        self.assertEqual(await write, 4)
        # A batch of fresh intervals does not take the lock at all.
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (COMPACT_LOCK,))
        self.assertEqual(await self.store.write([day_of("m1", midnight(0), [Decimal(1)])]), 1)
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (COMPACT_LOCK,))

    async def _write(self, records: list[IntervalBlock]) -> int:
        return int(await self.store.write(records))


    async def test_a_backlog_younger_than_the_day_rows_is_copied_straight_in(self) -> None:
        await self.store.write([day_of("m1", self.old, [Decimal(1)] * 96)])
        await compact_intervals(self.store, datetime.now(UTC))
        writer = self.store._copy
        assert writer is not None
        direct = writer.direct_batches
        # Five days ago: older than the days being collected, younger than any day row.
        self.assertEqual(await self.store.write([day_of("m1", midnight(5), [Decimal(2)] * 96)]),
                         96)
        self.assertEqual(writer.direct_batches, direct + 1)
        # A batch reaching into the compacted days goes through staging and the check.
        staged = writer.staged_batches
        self.assertEqual(await self.store.write([
            day_of("m1", midnight(6), [Decimal(3)] * 96),
            day_of("m1", self.old, [Decimal(1)] * 96)]), 96)
        self.assertEqual(writer.staged_batches, staged + 1)

    async def test_a_run_goes_on_where_the_last_ended(self) -> None:
        await self.store.write([day_of("m1", self.old, [Decimal(1)] * 96)])
        now = datetime.now(UTC)
        first = await compact_intervals(self.store, now)
        self.assertEqual(first.days, 1)
        self.assertEqual(first.compacted_before, compact_cutoff(now, 7))
        # A day older than the mark, stored after the run, stays until a run looks again.
        await self.store.write([day_of("m2", self.old, [Decimal(1)] * 96)])
        second = await compact_intervals(self.store, now)
        self.assertEqual((second.days, second.blocks), (0, 0))
        # Looking again from a time within that day looks at the whole day.
        again = await compact_intervals(self.store, now, since=self.old + timedelta(hours=9))
        self.assertEqual((again.days, again.intervals), (1, 96))
        # The next day, the day that closed since.
        await self.store.write([day_of("m1", compact_cutoff(now, 7), [Decimal(1)] * 96)])
        later = await compact_intervals(self.store, now + timedelta(days=1))
        self.assertEqual(later.days, 1)
        self.assertEqual(self.count("interval_rows"), 0)

    async def test_a_run_told_to_stop_ends_after_its_block_and_the_next_goes_on(self) -> None:
        self.patch(compaction, "SERIES_CHUNK", 1)
        await self.store.write([day_of(f"m{i}", self.old, [Decimal(i)] * 96) for i in range(3)])
        turns: list[bool] = [True, False]
        stopped = await compact_intervals(self.store, datetime.now(UTC),
                                          keep_going=lambda: turns.pop(0) if turns else False)
        self.assertEqual((stopped.days, stopped.blocks, stopped.compacted_before), (1, 1, None))
        rest = await compact_intervals(self.store, datetime.now(UTC))
        self.assertEqual(rest.days, 2)
        self.assertEqual(self.count("interval_rows"), 0)

    async def test_the_cutoff_is_bounded_by_the_databases_clock(self) -> None:
        # A caller's clock years ahead compacts nothing younger than three days by the
        # database's clock (writers of the last two days take no lock).
        await self.store.write([day_of("m1", midnight(d), [Decimal(1)] * 96)
                                for d in (1, 2, 3, 4)])
        result = await compact_intervals(self.store, datetime.now(UTC) + timedelta(days=900))
        self.assertEqual(result.days, 1)  # the day before the day before yesterday
        self.assertEqual(self.count("interval_rows"), 3 * 96)
        self.assertRaises(StoreError, compact_cutoff, datetime.now(UTC), 2)

    async def test_the_keeper_compacts_daily_when_set(self) -> None:
        await self.store.write([day_of("m1", self.old, [Decimal(1)] * 96)])
        clock = MemoryReactorClock()
        clock.advance(time.time())
        keeper = PartitionKeeper(clock, self.store, months_ahead=0, compact_after=7)
        keeper.startService()
        self.addCleanup(keeper.stopService)
        clock.advance(0)
        await keeper.last_run
        self.assertEqual(self.count("interval_days"), 1)
        self.assertEqual(self.count("interval_rows"), 0)


class CompactCommandTests(unittest.TestCase):
    """`fep db compact` in-process (tests.inprocess)."""

    async def test_compacts_with_progress_by_month(self) -> None:
        from tests.inprocess import fep_main

        url = fresh_database(self)
        store = PostgresStore(url, reactor)
        await store.open()
        old = midnight(40)
        await ensure_partitions(store, old, 2)
        await store.write([day_of(f"m{i}", old + timedelta(days=i), [Decimal(i)] * 96)
                           for i in range(30)])
        await store.close()
        done = fep_main("--db", url, "db", "compact")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"{old:%Y-%m}: ", done.stdout)
        self.assertIn(" day rows", done.stdout)
        # Days that ended at least seven days ago: 40 - 7 of them, at most 30.
        self.assertIn("2,880 intervals moved into 30 day rows", done.stdout)
        conn = connect(url)
        self.addCleanup(conn.close)
        self.assertEqual(query(conn, "SELECT count(*) FROM interval_days"), [(30,)])
        again = fep_main("--db", url, "db", "compact", "--after", "3")
        self.assertIn("0 intervals moved into 0 day rows", again.stdout)

    def test_too_young_and_sqlite_are_usage_errors(self) -> None:
        from tests.inprocess import fep_main

        url = fresh_database(self)
        young = fep_main("--db", url, "db", "compact", "--after", "2")
        self.assertEqual(young.returncode, 2)
        self.assertIn("at least 3 days", young.stderr)
        path = self.mktemp()
        lite = fep_main("--db", f"sqlite:{path}", "db", "compact")
        self.assertEqual(lite.returncode, 2)
        self.assertIn("compaction is for PostgreSQL", lite.stderr)


class SettingTests(unittest.TestCase):
    def test_compact_after_in_days_at_least_three_or_empty(self) -> None:
        from fep.config import parse_config

        def store(value: str | None) -> Any:
            line = "" if value is None else f"compact_after = {value}\n"
            return parse_config(f"[fep]\n[store]\nurl = postgresql://x/y\n{line}").store

        self.assertEqual(store(None).compact_after, 7)
        self.assertEqual(store("10 days").compact_after, 10)
        self.assertEqual(store("3").compact_after, 3)
        self.assertIsNone(store("").compact_after)
        with self.assertRaises(ConfigError) as raised:
            store("2 days")
        self.assertIn("compact_after", str(raised.exception))


class CompactedPlanTests(unittest.TestCase):
    """The analysis tier's read of a day range (fep.analysis.store, bounded by start_day as
    well as start_time) reads the day rows of those days only: the partitions of other months
    are pruned, the unique key's index finds the series' days."""

    async def test_a_range_of_days_reads_only_its_months_day_rows(self) -> None:
        from fep.store.partitions import add_months, month_start

        url = fresh_database(self)
        store = PostgresStore(url, reactor)
        await store.open()
        self.addCleanup(store.close)
        first = add_months(month_start(datetime.now(UTC)), -2)
        second = add_months(first, 1)
        await ensure_partitions(store, first, 2)
        await store.write([day_of(f"m{m}", month + timedelta(days=d), [Decimal(d)] * 96)
                           for month in (first, second) for m in range(50) for d in range(5)])
        self.assertEqual((await compact_intervals(store, datetime.now(UTC))).days, 500)
        conn = connect(url)
        self.addCleanup(conn.close)
        query(conn, "ANALYZE interval_days")
        query(conn, "ANALYZE interval_rows")
        query(conn, "ANALYZE record_series")
        since, until = second + timedelta(days=1), second + timedelta(days=2)
        sql = ("EXPLAIN SELECT meter, start_time, value FROM intervals WHERE obis = %s"
               " AND start_time >= %s AND start_time < %s"
               " AND start_day >= date_trunc('day', %s::timestamptz, 'UTC') AND start_day < %s"
               " AND meter IN %s ORDER BY meter, start_time")
        text = "\n".join(r[0] for r in query(conn, sql, (
            str(ENERGY), since, until, since, until, ("m1", "m7", "m30"))))
        self.assertIn(f"interval_days_p{second:%Y_%m}", text)
        self.assertNotIn(f"interval_days_p{first:%Y_%m}", text)
        self.assertNotIn("interval_days_default", text)
        self.assertNotIn("Seq Scan on interval_days", text)
        # And the rows read back are that day's.
        rows = query(conn, sql[len("EXPLAIN "):], (str(ENERGY), since, until, since, until,
                                                   ("m1", "m7", "m30")))
        self.assertEqual(len(rows), 3 * 96)
        self.assertEqual({r[2] for r in rows}, {Decimal(1)})
        # Every row of the first month moved: a vacuum (autovacuum's work) gives its
        # partition's pages back to the disk.
        query(conn, f"VACUUM intervals_p{first:%Y_%m}")
        self.assertEqual(query(conn, "SELECT pg_relation_size(%s)",
                               (f"intervals_p{first:%Y_%m}",)), [(0,)])


class CompactionCutTests(ProxiedStore):
    """The database connection lost in the middle of a run (the node killed, the network
    gone): the block under way is rolled back by the server, the blocks before it stay done,
    and the next run finishes; every interval is still there once."""

    async def test_a_connection_lost_mid_run_loses_and_doubles_nothing(self) -> None:
        self.patch(compaction, "SERIES_CHUNK", 1)
        old = midnight(20)
        await ensure_partitions(self.store, old, 1)
        blocks = [day_of(f"m{i}", old, [Decimal(i)] * 96) for i in range(3)]
        await self.store.write(blocks)
        conn = connect(self.url)
        self.addCleanup(conn.close)
        before = query(conn, f"SELECT {COLUMNS} FROM intervals ORDER BY meter, start_time")
        holder = psycopg2.connect(self.url)
        self.addCleanup(holder.close)
        holder.autocommit = True
        calls: list[int] = []

        def keep_going() -> bool:
            calls.append(1)
            if len(calls) == 2:  # the first block is done: the second will wait for a writer
                with holder.cursor() as cur:
                    cur.execute("SELECT pg_advisory_lock_shared(%s)", (COMPACT_LOCK,))
            return True

        run = Deferred.fromCoroutine(compact_intervals(self.store, datetime.now(UTC),
                                                       keep_going=keep_going))
        await waiting_for_the_lock(self, conn)
        self.proxy.drop_connections()  # while the second block's transaction is open
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock_shared(%s)", (COMPACT_LOCK,))
        # The store either gives the error or runs the block again on a new connection
        # (its transaction was rolled back either way).
        try:
            await run
        except StoreError:
            pass
        self.assertEqual(query(conn, f"SELECT {COLUMNS} FROM intervals ORDER BY meter,"
                               " start_time"), before)
        await compact_intervals(self.store, datetime.now(UTC), since=old)
        self.assertEqual(query(conn, "SELECT count(*) FROM interval_days"), [(3,)])
        self.assertEqual(query(conn, "SELECT count(*) FROM interval_rows"), [(0,)])
        self.assertEqual(query(conn, f"SELECT {COLUMNS} FROM intervals ORDER BY meter,"
                               " start_time"), before)
        self.assertEqual(await self.store.write(blocks), 0)
