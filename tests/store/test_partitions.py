"""PostgreSQL record tables partitioned by month (migration 0015, fep.store.partitions) and
kept as compact rows behind views (migration 0019): every row kept by the migrations, the
unique key as the one index serving the per-meter queries,
partitions made ahead (rows waiting in DEFAULT moved), retention, and the daemon's keeper on a
fake clock."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from fep.errors import StoreError
from fep.model import EventKind, IntervalBlock, MeterEvent, ObisCode, Reading, Record, Severity
from fep.store import migrations
from fep.store import partitions as partitions_module
from fep.store.compaction import compact_intervals
from fep.store.partitions import (
    Partition,
    PartitionKeeper,
    add_months,
    apply_retention,
    create_partition,
    ensure_partitions,
    expired,
    month_start,
    parse_partition,
    partitions_of,
    retention_cutoff,
    rows_table,
)
from fep.store.postgres import PostgresStore
from fep.store.rows import encode_value, period_seconds
from tests.postgres import fresh_database
from tests.store.behaviours import reading

# Readings in the populated database the migration test converts (as many intervals, a
# tenth as many events). The acceptance figure is 1,000,000 readings (set
# FEP_MIGRATION_ROWS=1000000); the default keeps the test to seconds.
MIGRATION_ROWS = int(os.environ.get("FEP_MIGRATION_ROWS", "20000"))

# The record tables as they were before migration 0015 (and read since 0019 as views).
READING_COLUMNS = (
    "meter, obis, value, value_text, value_type, unit_code, scaler, meter_time, read_at,"
    " received_time, quality, source, native_id"
)
INTERVAL_COLUMNS = (
    "meter, obis, start_time, period_s, value, value_text, value_type, status, unit_code,"
    " scaler, received_time, source"
)
EVENT_COLUMNS = "meter, code, kind, severity, time, text, received_time, source"
TABLES = {"readings": ("read_at", READING_COLUMNS),
          "intervals": ("start_time", INTERVAL_COLUMNS),
          "events": ("time", EVENT_COLUMNS)}
KEYS = {"readings": "meter, obis, read_at", "intervals": "meter, obis, start_time",
        "events": "meter, code, time"}
# Meters whose clock is far off: their rows land in DEFAULT, never lost.
WRONG_CLOCKS = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2099, 6, 1, 12, tzinfo=UTC))


def spread_records(n: int, now: datetime) -> list[Record]:
    """``n`` readings of every value type spread over the fourteen months before ``now``'s
    month and the one after, two from wrong clocks, ``n`` intervals and ``n // 10`` events."""
    this = month_start(now)
    months = [add_months(this, -k) for k in range(14)] + [add_months(this, 1)]
    values: list[Any] = [Decimal("1.5"), 7, True, None, "text\twith\nbreaks", Decimal("-0.001")]
    records: list[Record] = []
    for i in range(n):
        at = months[i % len(months)] + timedelta(seconds=i)
        records.append(reading(values[i % len(values)], meter=f"m{i % 997}",
                               meter_time=None if i % 13 == 0 else at, received_time=at,
                               native_id=None if i % 2 else "x"))
    for k, at in enumerate(WRONG_CLOCKS):
        records.append(reading(Decimal(k), meter="m-wrong-clock", meter_time=at,
                               received_time=this))
    for m in range(max(1, n // 96)):
        start = months[m % len(months)] + timedelta(days=m % 20)
        records.append(IntervalBlock(f"m{m}", ObisCode.parse("1.8.0"), start,
                                     timedelta(minutes=15),
                                     tuple(Decimal(v) / 8 for v in range(96)),
                                     received_time=this, source="dlms"))
    for i in range(n // 10):
        records.append(MeterEvent(f"m{i % 97}", f"c{i % 7}", EventKind.POWER_OUTAGE,
                                  Severity.MAJOR, months[i % len(months)] + timedelta(minutes=i),
                                  "t", this))
    return records


def connect(url: str) -> Any:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    return conn


def query(conn: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description is not None else []


def checksums(conn: Any) -> dict[str, tuple[int, int]]:
    """Each table's row count and the sum of a 60-bit hash of every row's text."""
    out = {}
    for table, (_, columns) in TABLES.items():
        ((count, total),) = query(
            conn, f"SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))"
            f"::bit(60)::bigint), 0) FROM (SELECT {columns} FROM {table}) t")
        out[table] = (int(count), int(total))
    return out


def schema_before_0015(url: str) -> None:
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(migrations.CREATE_TABLE["postgresql"])
            for migration in migrations.load("postgresql"):
                if migration.version >= 15:
                    continue
                cur.execute(migration.sql)
                cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                            (migration.version, migration.name))
    finally:
        conn.close()


def wide_rows(records: list[Record]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of the schema before migration 0015 (meter ids and codes as text)."""
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in TABLES}
    for r in records:
        if isinstance(r, Reading):
            number, text, kind = encode_value(r.value)
            rows["readings"].append((
                r.meter, str(r.obis), number, text, kind, None if r.unit is None else r.unit.code,
                r.scaler, r.meter_time, r.meter_time or r.received_time, r.received_time,
                int(r.quality), r.source, r.native_id))
        elif isinstance(r, IntervalBlock):
            for start, v, status in r.intervals():
                number, text, kind = encode_value(v)
                rows["intervals"].append((
                    r.meter, str(r.obis), start, period_seconds(r.period, r), number, text, kind,
                    int(status), None if r.unit is None else r.unit.code, r.scaler,
                    r.received_time, r.source))
        elif isinstance(r, MeterEvent):
            rows["events"].append((r.meter, r.code, str(r.kind), str(r.severity), r.time,
                                    r.text, r.received_time, r.source))
    return rows


def copy_in(url: str, records: list[Record]) -> None:
    from psycopg2.extras import execute_values

    conn = connect(url)
    try:
        with conn.cursor() as cur:
            for table, rows in wide_rows(records).items():
                execute_values(cur, f"INSERT INTO {table} ({TABLES[table][1]}) VALUES %s",
                               rows, page_size=2000)
    finally:
        conn.close()


class MigrationTests(unittest.TestCase):
    """Migrations 0015 and 0019 on a populated database of the schema before them."""

    timeout = 300 if MIGRATION_ROWS <= 100_000 else 7200

    async def test_the_migration_keeps_every_row_of_a_populated_database(self) -> None:
        url = fresh_database(self)
        schema_before_0015(url)
        now = datetime.now(UTC)
        records = spread_records(MIGRATION_ROWS, now)
        copy_in(url, records)
        conn = connect(url)
        self.addCleanup(conn.close)
        before = checksums(conn)
        self.assertEqual(before["readings"][0], MIGRATION_ROWS + len(WRONG_CLOCKS))

        store = PostgresStore(url, reactor)
        started = time.monotonic()
        await store.open()
        took = time.monotonic() - started
        self.addCleanup(store.close)
        if "FEP_MIGRATION_ROWS" in os.environ:
            print(f"\nmigrations 0015 to 0020 of {MIGRATION_ROWS} readings: {took:.1f} s")
        # Every row: counts and checksums of every column.
        self.assertEqual(checksums(conn), before)

        for table, (column, _) in TABLES.items():
            rows = rows_table(table)
            ((kind,),) = query(conn, "SELECT c.relkind::text FROM pg_class c"
                               " WHERE c.relname = %s", (table,))
            self.assertEqual(kind, "v")  # a view of the compact rows (0019)
            ((kind, key),) = query(conn, "SELECT c.relkind::text, pg_get_partkeydef(c.oid)"
                                   " FROM pg_class c WHERE c.relname = %s", (rows,))
            self.assertEqual((kind, key.replace('"', "")), ("p", f"RANGE ({column})"))
            # The unique key (series, time) is the one index.
            indexes = query(conn, "SELECT indexrelid::regclass::text FROM pg_index"
                            " WHERE indrelid = %s::regclass", (rows,))
            self.assertEqual(indexes, [(f"{rows}_unique",)])
            ((definition,),) = query(conn, "SELECT pg_get_indexdef(%s::regclass)",
                                     (f"{rows}_unique",))
            self.assertIn(f"(series, {column})", definition.replace('"', ""))
            names = {name for (name,) in query(
                conn, "SELECT inhrelid::regclass::text FROM pg_inherits"
                " WHERE inhparent = %s::regclass", (rows,))}
            self.assertIn(f"{table}_default", names)
            for k in range(4):  # this month and three ahead
                month = add_months(month_start(now), k)
                self.assertIn(f"{table}_p{month:%Y_%m}", names)
        # Only the wrong clocks' rows wait in DEFAULT.
        self.assertEqual(query(conn, "SELECT read_at FROM readings_default ORDER BY read_at"),
                         [(t,) for t in WRONG_CLOCKS])
        self.assertEqual(query(conn, "SELECT count(*) FROM intervals_default"), [(0,)])
        # The unique key still deduplicates, and the store reads what was migrated.
        self.assertEqual(await store.write(records[:500]), 0)
        self.assertEqual(await store.write(records[-500:]), 0)
        self.assertEqual(len(await store.readings("m5")),
                         len([r for r in records if isinstance(r, Reading) and r.meter == "m5"]))
        self.assertEqual(len(await store.readings("m-wrong-clock")), 2)

        # Migration 0020 and a compaction: the closed days of intervals become day rows, and
        # the view reads every interval as it was; writing them again stores none.
        started = time.monotonic()
        result = await compact_intervals(store, now)
        if "FEP_MIGRATION_ROWS" in os.environ:
            print(f"compaction: {result.describe()}, {time.monotonic() - started:.1f} s")
        self.assertGreater(result.days, 0)
        self.assertEqual(result.intervals, 96 * result.days)
        ((days,),) = query(conn, "SELECT count(*) FROM interval_days")
        self.assertEqual(days, result.days)
        self.assertEqual(checksums(conn), before)
        self.assertEqual(await store.write(
            [r for r in records if isinstance(r, IntervalBlock)]), 0)
        self.assertEqual(checksums(conn), before)


def plan(conn: Any, sql: str, params: Any) -> str:
    return "\n".join(row[0] for row in query(conn, "EXPLAIN " + sql, params))


class QueryPlanTests(unittest.TestCase):
    """The per-meter queries on partitioned tables: only the partitions of the time range
    are read (pruning), each through the unique key's index (its leading column `meter`)."""

    async def test_per_meter_queries_use_the_unique_key_in_the_partitions_of_their_range(
        self,
    ) -> None:
        url = fresh_database(self)
        store = PostgresStore(url, reactor)
        await store.open()
        self.addCleanup(store.close)
        now = datetime.now(UTC)
        since = add_months(month_start(now), -1)
        until = month_start(now)
        await ensure_partitions(store, since, 1)
        # Two months of 500 meters: 40 readings and 20 events each a month.
        records: list[Record] = []
        for month in (since, until):
            for m in range(500):
                for k in range(40):
                    at = month + timedelta(hours=k * 12, seconds=m)
                    records.append(reading(meter=f"m{m}", meter_time=at, received_time=at))
                    if k < 20:
                        records.append(MeterEvent(f"m{m}", f"c{k % 3}", EventKind.POWER_OUTAGE,
                                                  Severity.MAJOR, at, "t", at))
        await store.write(records)
        conn = connect(url)
        self.addCleanup(conn.close)
        for table in TABLES:
            query(conn, f"ANALYZE {rows_table(table)}")
        query(conn, "ANALYZE record_series")
        readings = plan(conn, "SELECT * FROM readings WHERE meter = %s AND read_at >= %s"
                        " AND read_at < %s ORDER BY read_at, obis", ("m5", since, until))
        events = plan(conn, "SELECT * FROM events WHERE meter = %s AND time >= %s"
                      " AND time < %s ORDER BY time, code", ("m5", since, until))
        for table, text in (("readings", readings), ("events", events)):
            self.assertNotIn(f"Seq Scan on {table}_", text)
            self.assertNotIn("Seq Scan on record_series", text)
            self.assertIn(f"on {table}_p{since:%Y_%m}", text)
            self.assertIn("_key", text)  # the unique key's index of the partition
            # Pruned: one month read, not the other fourteen nor DEFAULT.
            self.assertEqual(text.count(f"on {table}_p"), text.count(f"on {table}_p{since:%Y_%m}"))
            self.assertNotIn(f"{table}_default", text)
            if "FEP_SHOW_PLANS" in os.environ:
                print(f"\n{text}")
        # The analysis's shape (fep.analysis.store): a quantity of many meters over a range.
        meters = [f"m{m}" for m in range(0, 500, 100)]
        registers = plan(conn, "SELECT meter, read_at, value FROM readings WHERE obis = %s"
                         " AND read_at >= %s AND read_at <= %s AND meter IN %s"
                         " ORDER BY meter, read_at",
                         ("1-0:1.8.0*255", since, until - timedelta(seconds=1), tuple(meters)))
        self.assertNotIn("Seq Scan on readings_", registers)
        self.assertNotIn("Seq Scan on record_series", registers)
        self.assertIn(f"readings_p{since:%Y_%m}_series_read_at_key", registers)
        self.assertNotIn(f"readings_p{until:%Y_%m}", registers)
        if "FEP_SHOW_PLANS" in os.environ:
            print(f"\n{registers}")


class PartitionUnitTests(unittest.TestCase):
    def test_bounds_are_read_from_the_catalogue_text(self) -> None:
        p = parse_partition("readings", "readings_p2026_12", "FOR VALUES FROM ('2026-12-01 "
                            "00:00:00+00') TO ('2027-01-01 00:00:00+00')")
        self.assertEqual((p.lower, p.upper), (datetime(2026, 12, 1, tzinfo=UTC),
                                              datetime(2027, 1, 1, tzinfo=UTC)))
        self.assertTrue(parse_partition("readings", "readings_default", "DEFAULT").default)
        open_ended = parse_partition("readings", "x", "FOR VALUES FROM (MINVALUE) TO "
                                     "('2001-01-01 00:00:00+00')")
        self.assertIsNone(open_ended.lower)
        self.assertRaises(StoreError, parse_partition, "readings", "x", "FOR VALUES IN (1)")

    def test_only_partitions_wholly_before_the_cutoff_expire_never_default(self) -> None:
        cutoff = datetime(2025, 1, 1, tzinfo=UTC)

        def month(y: int, m: int) -> Partition:
            lower = datetime(y, m, 1, tzinfo=UTC)
            return Partition("readings", f"readings_p{y}_{m:02d}", lower, add_months(lower, 1))

        straddling = Partition("readings", "custom", datetime(2024, 12, 15, tzinfo=UTC),
                               datetime(2025, 1, 15, tzinfo=UTC))
        older = Partition("readings", "ancient", None, datetime(2001, 1, 1, tzinfo=UTC))
        partitions = [month(2025, 1), month(2024, 12), month(2024, 11), straddling, older,
                      Partition("readings", "readings_default", None, None, default=True),
                      Partition("readings", "open", datetime(2024, 1, 1, tzinfo=UTC), None)]
        self.assertEqual([p.name for p in expired(partitions, cutoff)],
                         ["ancient", "readings_p2024_11", "readings_p2024_12"])

    def test_the_cutoff_keeps_this_month_and_n_whole_months_before_it(self) -> None:
        now = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
        self.assertEqual(retention_cutoff(now, 24), datetime(2024, 12, 1, tzinfo=UTC))
        self.assertEqual(retention_cutoff(now, 1), datetime(2026, 11, 1, tzinfo=UTC))
        self.assertEqual(retention_cutoff(datetime(2027, 1, 1, tzinfo=UTC), 13),
                         datetime(2025, 12, 1, tzinfo=UTC))
        self.assertRaises(StoreError, retention_cutoff, now, 0)


class PartitionStoreTests(unittest.TestCase):
    """Partitions made ahead and removed by retention on a migrated store."""

    async def setUp(self) -> None:  # type: ignore[override]
        self.url = fresh_database(self)
        self.store = PostgresStore(self.url, reactor)
        await self.store.open()
        self.addCleanup(self.store.close)
        self.conn = connect(self.url)
        self.addCleanup(self.conn.close)

    def names(self, table: str) -> set[str]:
        return {name for (name,) in query(
            self.conn, "SELECT inhrelid::regclass::text FROM pg_inherits"
            " WHERE inhparent = %s::regclass", (rows_table(table),))}

    async def test_rows_waiting_in_default_move_to_their_new_partition(self) -> None:
        later = datetime(2061, 3, 10, tzinfo=UTC)
        rows = [reading(meter="m1", meter_time=later + timedelta(hours=h)) for h in range(5)]
        rows.append(reading(meter="m1", meter_time=datetime(2061, 4, 1, tzinfo=UTC)))
        self.assertEqual(await self.store.write(rows), 6)
        self.assertEqual(query(self.conn, "SELECT count(*) FROM readings_default"), [(6,)])
        changes = await ensure_partitions(self.store, later, 0)
        moved = {c.partition: c.rows_moved for c in changes}
        self.assertEqual(moved, {"readings_p2061_03": 5, "intervals_p2061_03": 0,
                                 "events_p2061_03": 0, "interval_days_p2061_03": 0})
        self.assertEqual(query(self.conn, "SELECT count(*) FROM readings_p2061_03"), [(5,)])
        self.assertEqual(query(self.conn, "SELECT count(*) FROM readings_default"), [(1,)])
        self.assertEqual(await self.store.count("readings"), 6)
        # Still once: the replay is refused by the new partition's unique key.
        self.assertEqual(await self.store.write(rows), 0)
        self.assertEqual(await self.store.count("readings"), 6)
        # Made once: a second run changes nothing.
        self.assertEqual(await ensure_partitions(self.store, later, 0), [])

    async def test_nodes_making_the_same_partitions_at_once_make_each_once(self) -> None:
        other = PostgresStore(self.url, reactor)
        await other.open()
        self.addCleanup(other.close)
        when = datetime(2062, 7, 1, tzinfo=UTC)
        a, b = await gatherResults([
            Deferred.fromCoroutine(ensure_partitions(self.store, when, 2)),
            Deferred.fromCoroutine(ensure_partitions(other, when, 2))])
        made = sorted(c.partition for c in a + b)
        self.assertEqual(len(made), 12)  # three months of four tables
        self.assertEqual(len(set(made)), 12)
        self.assertLessEqual({"readings_p2062_07", "readings_p2062_08", "readings_p2062_09"},
                             self.names("readings"))

    async def test_a_partition_of_a_month_is_made_once(self) -> None:
        month = datetime(2063, 1, 1, tzinfo=UTC)
        self.assertEqual(await self.store.interact(create_partition, "events", "time", month), 0)
        self.assertIsNone(await self.store.interact(create_partition, "events", "time", month))
        (p,) = [p for p in await self.store.interact(partitions_of, "events")
                if p.name == "events_p2063_01"]
        self.assertEqual((p.lower, p.upper), (month, datetime(2063, 2, 1, tzinfo=UTC)))
        # Detached by hand: left alone, said in the log (that month's rows go to DEFAULT).
        query(self.conn, "ALTER TABLE event_rows DETACH PARTITION events_p2063_01")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.assertIsNone(await self.store.interact(create_partition, "events", "time", month))
        self.assertEqual([e["name"] for e in events if "name" in e], ["events_p2063_01"])

    async def test_a_partition_change_gives_up_when_its_locks_are_not_had_in_time(
        self,
    ) -> None:
        self.patch(partitions_module, "LOCK_TIMEOUT", "200ms")
        reader = psycopg2.connect(self.url)  # a long query under way on DEFAULT
        self.addCleanup(reader.close)
        with reader.cursor() as cur:
            cur.execute("SELECT count(*) FROM readings_default")
        month = datetime(2064, 2, 1, tzinfo=UTC)
        with self.assertRaises(StoreError) as caught:
            await self.store.interact(create_partition, "readings", "read_at", month)
        self.assertIn("lock timeout", str(caught.exception))
        self.assertNotIn("readings_p2064_02", self.names("readings"))
        reader.rollback()
        self.assertEqual(
            await self.store.interact(create_partition, "readings", "read_at", month), 0)

    async def old_months(self) -> list[datetime]:
        months = [datetime(2001, m, 1, tzinfo=UTC) for m in (1, 2, 3)]
        for month in months:
            for table, (column, _) in TABLES.items():
                await self.store.interact(create_partition, table, column, month)
        await self.store.write([reading(meter="m1", meter_time=m + timedelta(days=3))
                                for m in months])
        return months

    async def test_retention_detaches_or_drops_only_whole_old_months(self) -> None:
        await self.old_months()
        cutoff = datetime(2001, 3, 1, tzinfo=UTC)
        dry = await apply_retention(self.store, cutoff, "detach", dry_run=True)
        self.assertEqual([c.describe() for c in dry["readings"]], [
            "readings: would detach readings_p2001_01 (2001-01-01 .. 2001-02-01)",
            "readings: would detach readings_p2001_02 (2001-02-01 .. 2001-03-01)"])
        self.assertEqual(await self.store.count("readings"), 3)

        done = await apply_retention(self.store, cutoff, "detach")
        self.assertEqual([c.partition for c in done["events"]],
                         ["events_p2001_01", "events_p2001_02"])
        self.assertNotIn("readings_p2001_01", self.names("readings"))
        self.assertIn("readings_p2001_03", self.names("readings"))
        self.assertIn("readings_default", self.names("readings"))
        self.assertEqual(await self.store.count("readings"), 1)
        # Detached: the rows are kept in a plain table.
        self.assertEqual(query(self.conn, "SELECT count(*) FROM readings_p2001_01"), [(1,)])

        dropped = await apply_retention(self.store, datetime(2001, 4, 1, tzinfo=UTC), "drop")
        self.assertEqual([c.describe() for c in dropped["readings"]],
                         ["readings: dropped readings_p2001_03 (2001-03-01 .. 2001-04-01)"])
        self.assertEqual(query(self.conn, "SELECT to_regclass('readings_p2001_03')"), [(None,)])
        self.assertEqual(await self.store.count("readings"), 0)


class KeeperTests(unittest.TestCase):
    """The daemon's PartitionKeeper on a fake clock: at start and daily, partitions ahead
    and retention."""

    async def test_partitions_ahead_and_retention_at_start_and_daily(self) -> None:
        url = fresh_database(self)
        store = PostgresStore(url, reactor)
        await store.open()
        self.addCleanup(store.close)
        conn = connect(url)
        self.addCleanup(conn.close)
        # An old month with a reading, and a reading of a month not made yet (in DEFAULT).
        for table, (column, _) in TABLES.items():
            await store.interact(create_partition, table, column, datetime(2069, 5, 1,
                                                                           tzinfo=UTC))
        await store.write([reading(meter="m1", meter_time=datetime(2069, 5, 2, tzinfo=UTC)),
                           reading(meter="m1", meter_time=datetime(2070, 8, 2, tzinfo=UTC))])

        clock = MemoryReactorClock()
        clock.advance(datetime(2070, 5, 31, 12, tzinfo=UTC).timestamp())
        keeper = PartitionKeeper(clock, store, months_ahead=3, retention_months=12,
                                 retention_action="drop")
        keeper.startService()
        self.addCleanup(keeper.stopService)
        clock.advance(0)
        await keeper.last_run
        made = {c.partition: c.rows_moved for c in keeper.changes if c.action == "created"}
        self.assertEqual(made["readings_p2070_08"], 1)
        self.assertLessEqual({f"readings_p2070_{m:02d}" for m in (5, 6, 7, 8)}, set(made))
        self.assertNotIn("readings_p2070_09", made)
        # Cutoff 2069-05-01: the May 2069 partition reaches it, so it stays.
        self.assertEqual(query(conn, "SELECT count(*) FROM readings_p2069_05"), [(1,)])

        # A day later it is June: one more month ahead, and May 2069 is past the cutoff.
        clock.advance(86400)
        await keeper.last_run
        self.assertEqual(keeper.runs, 2)
        self.assertEqual(sorted(c.describe() for c in keeper.changes if c.table == "readings"),
                         ["readings: created readings_p2070_09 (2070-09-01 .. 2070-10-01)",
                          "readings: dropped readings_p2069_05 (2069-05-01 .. 2069-06-01)"])
        self.assertEqual(query(conn, "SELECT to_regclass('readings_p2069_05')"), [(None,)])
        self.assertEqual(await store.count("readings"), 1)

    async def test_a_failed_run_is_tried_again_within_the_hour(self) -> None:
        url = fresh_database(self)
        store = PostgresStore(url, reactor)
        clock = MemoryReactorClock()
        keeper = PartitionKeeper(clock, store, months_ahead=1)
        keeper.startService()
        self.addCleanup(keeper.stopService)
        clock.advance(0)
        await keeper.last_run  # the store is not open: the run fails
        self.assertEqual((keeper.runs, keeper.changes), (1, []))
        await store.open()
        self.addCleanup(store.close)
        clock.advance(3600)
        await keeper.last_run
        self.assertEqual(keeper.runs, 2)
        # The fake clock's month (January 1970) and the next, for each of the four tables.
        self.assertEqual(len(keeper.changes), 8)


class RetentionCommandTests(unittest.TestCase):
    """`fep db retention` in-process (tests.inprocess)."""

    async def test_lists_then_drops_the_old_partitions_per_table(self) -> None:
        from tests.inprocess import fep_main

        url = fresh_database(self)
        store = PostgresStore(url, reactor)
        await store.open()
        for month in (datetime(2001, 1, 1, tzinfo=UTC), datetime(2001, 2, 1, tzinfo=UTC)):
            for table, (column, _) in TABLES.items():
                await store.interact(create_partition, table, column, month)
            await store.write([reading(meter="m1", meter_time=month + timedelta(days=1))])
        await store.write([reading(meter="m1", meter_time=WRONG_CLOCKS[0])])
        await store.close()

        dry = fep_main("--db", url, "db", "retention", "--keep", "12", "--dry-run")
        self.assertEqual(dry.returncode, 0, dry.stderr)
        self.assertIn("readings: would detach readings_p2001_01 (2001-01-01 .. 2001-02-01)\n",
                      dry.stdout)
        self.assertIn("events: would detach events_p2001_02 (2001-02-01 .. 2001-03-01)\n",
                      dry.stdout)
        conn = connect(url)
        self.addCleanup(conn.close)
        self.assertEqual(query(conn, "SELECT count(*) FROM readings"), [(3,)])
        self.assertIn("readings: 1 rows in readings_default (times outside the monthly "
                      "partitions; retention leaves them)\n", dry.stdout)

        config = os.path.join(self.mktemp() + ".ini")
        with open(config, "w") as f:
            f.write(f"[fep]\n[store]\nurl = {url}\nretention = 1 year\nretention_action = drop\n")
        done = fep_main("--config", config, "db", "retention")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("keeping 12 months and this one", done.stdout)
        self.assertIn("intervals: dropped intervals_p2001_01 (2001-01-01 .. 2001-02-01)\n",
                      done.stdout)
        self.assertEqual(query(conn, "SELECT count(*) FROM readings"), [(1,)])  # DEFAULT's
        self.assertEqual(query(conn, "SELECT to_regclass('readings_p2001_02')"), [(None,)])
        again = fep_main("--db", url, "db", "retention", "--keep", "12", "--detach")
        self.assertIn("readings: nothing wholly before", again.stdout)

    def test_without_a_retention_it_is_a_usage_error(self) -> None:
        from tests.inprocess import fep_main

        url = "postgresql://fep@127.0.0.1:1/fep"  # refused before connecting
        result = fep_main("--db", url, "db", "retention")
        self.assertEqual(result.returncode, 2)
        self.assertIn("give --keep N", result.stderr)
        zero = fep_main("--db", url, "db", "retention", "--keep", "0")
        self.assertEqual(zero.returncode, 2)

    def test_on_sqlite_it_is_not_supported(self) -> None:
        from tests.inprocess import fep_main

        db = f"sqlite:{os.path.abspath(self.mktemp())}.sqlite"
        result = fep_main("--db", db, "db", "retention", "--keep", "3", "--drop")
        self.assertEqual(result.returncode, 2)
        self.assertIn("retention is not supported on SQLite", result.stderr)
        self.assertFalse(os.path.exists(db[len("sqlite:"):]))  # nothing opened or made
