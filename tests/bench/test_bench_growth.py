"""`make bench --only growth` at a tiny size: fep's ingest into a table already holding rows
against an empty one, the fill spread over past days (PostgreSQL: in the monthly partitions
of their months, none in DEFAULT), the bytes per stored reading and interval, and, on
PostgreSQL, databases of the run's own that are gone afterwards."""

from __future__ import annotations

import os
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg2
from twisted.internet import reactor as global_reactor
from twisted.trial import unittest

from fep.bench_growth import (
    INTERVAL_OBIS,
    QUANTITIES,
    READING_OBIS,
    STEPS,
    fill_days,
    fill_sqlite,
    fill_start,
    postgres_growth,
    sqlite_growth,
    today,
    unique_database,
)
from fep.bench_ingest import BENCH_DATABASE
from fep.store import open_store
from fep.store.rows import text_time
from tests.postgres import postgres_server

reactor: Any = global_reactor

# 35 days of one meter's five quantities, 96 values a day each: the fill reaches back over
# at least one month boundary, so rows sit in older partitions than this month's.
METERS = 1
DAYS = 35
ROWS = METERS * QUANTITIES * STEPS * DAYS
READINGS = 50  # per ingest run


def _databases(server: str, prefix: str) -> list[str]:
    conn = psycopg2.connect(server, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))
            return [name for (name,) in cur.fetchall()]
    finally:
        conn.close()


class FillTests(unittest.TestCase):
    def test_the_fill_is_96_values_a_day_per_meter_ending_yesterday(self) -> None:
        self.assertEqual(fill_days(ROWS, METERS), DAYS)
        self.assertEqual(fill_days(ROWS + 1, METERS), DAYS + 1)  # a partial last day
        self.assertEqual(fill_days(ROWS, METERS, quantities=1), DAYS * QUANTITIES)
        self.assertEqual(fill_start(ROWS, METERS), today() - timedelta(days=DAYS))
        with self.assertRaises(ValueError):  # the ingest has five quantities, no more
            fill_days(ROWS, METERS, quantities=QUANTITIES + 1)

    async def test_sqlite_fill(self) -> None:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        store = open_store(f"sqlite:{path}", reactor)
        await store.open()
        await store.close()
        # Two days of three meters with two quantities each.
        rows = 3 * 2 * STEPS * 2
        start = fill_start(rows, 3, quantities=2)
        self.assertEqual(start, today() - timedelta(days=2))
        fill_sqlite(path, rows, 3, start, quantities=2)
        conn = sqlite3.connect(path)
        try:
            for table, column, codes in (("readings", "read_at", READING_OBIS),
                                         ("intervals", "start_time", INTERVAL_OBIS)):
                found = conn.execute(
                    f"SELECT meter, obis, count(*), min({column}), max({column}) FROM {table}"
                    " GROUP BY meter, obis ORDER BY meter, obis").fetchall()
                last = today() - timedelta(minutes=15)
                self.assertEqual(found, sorted(
                    (f"bench-{m:05d}", code, 2 * STEPS, text_time(start), text_time(last))
                    for m in range(3) for code in codes[:2]))
        finally:
            conn.close()

    def test_database_names_differ_between_runs(self) -> None:
        a, b = unique_database(), unique_database()
        self.assertNotEqual(a, b)
        self.assertIn(str(os.getpid()), a)


class SqliteGrowthTests(unittest.TestCase):
    timeout = 60

    async def test_rows_at_a_tiny_size(self) -> None:
        workdir = Path(self.mktemp())
        workdir.mkdir(parents=True)
        result = await sqlite_growth(reactor, ROWS, workdir, readings=READINGS, meters=METERS,
                                     batch=20, repeat=2)
        self.assertGreater(result.empty_rate, 0)
        self.assertGreater(result.full_rate, 0)
        self.assertAlmostEqual(result.ratio, result.full_rate / result.empty_rate)
        self.assertEqual(result.days, DAYS)
        # The fill, then the at-size runs' readings of today; as many intervals as filled.
        readings, intervals = result.sizes
        self.assertEqual((readings.table, readings.rows), ("readings", ROWS + 2 * READINGS))
        self.assertEqual((intervals.table, intervals.rows), ("intervals", ROWS))
        self.assertGreater(readings.per_row, 0)
        self.assertGreater(intervals.per_row, 0)
        self.assertGreater(result.file_bytes, readings.bytes + intervals.bytes)
        if os.path.exists("/proc/self/io"):
            assert result.empty_written is not None and result.full_written is not None
            self.assertGreater(result.spool_payload, 0)
        rows = result.table()
        self.assertEqual(rows[0][0], "ingest at size SQLite (spool on, batch 20, a backlog in"
                                     " transactions of 50,000)")
        self.assertRegex(rows[0][2], r"^empty table [\d,]+ readings/s; at size [\d,]+ "
                         r"readings/s; ratio \d+\.\d\d \(best of 2\); target >= 0\.8: "
                         r"(met|not met); every run, empty / at size: [\d,]+ / [\d,]+, "
                         r"[\d,]+ / [\d,]+$")
        self.assertRegex(rows[1][2], r"^[\d,]+ bytes per stored reading$")
        self.assertRegex(rows[2][2], r"^[\d,]+ bytes per stored interval$")


class PostgresGrowthTests(unittest.TestCase):
    timeout = 120

    async def test_rows_at_a_tiny_size_in_databases_of_its_own(self) -> None:
        server = postgres_server()
        workdir = Path(self.mktemp())
        workdir.mkdir(parents=True)
        prefix = f"{BENCH_DATABASE}_growth_"
        result = await postgres_growth(reactor, server, ROWS, workdir, readings=READINGS,
                                       meters=METERS, batch=20, repeat=2)
        self.assertGreater(result.ratio, 0)
        readings, intervals = result.sizes
        self.assertEqual(readings.rows, ROWS + 2 * READINGS)
        self.assertEqual(intervals.rows, ROWS)
        # 35 days back from today reach at least the month before this one.
        self.assertGreaterEqual(readings.partitions, 2)
        self.assertGreaterEqual(intervals.partitions, 2)
        self.assertGreater(readings.per_row, 0)
        self.assertGreater(intervals.per_row, 0)
        self.assertRegex(result.table()[1][2], r"^[\d,]+ bytes per stored reading$")
        # Then fep's compaction: the days that ended three days ago and before are day rows
        # (five quantities of one meter each), the later ones stay rows; none lost.
        assert result.compacted_days is not None and result.compacted_rows is not None
        self.assertEqual(result.compacted_days.rows, (DAYS - 3) * QUANTITIES * STEPS)
        self.assertEqual(result.compacted_rows.rows, 3 * QUANTITIES * STEPS)
        self.assertRegex(result.table()[3][2], r"^[\d.,]+ bytes per stored interval \(day "
                         r"rows [\d.,]+, rows [\d,]+\); target <= 64: (not )?met$")
        # Both databases dropped at the end.
        self.assertEqual(_databases(server, prefix), [])

    async def test_past_rows_land_in_their_months_partitions_not_default(self) -> None:
        from fep.bench_growth import fill_postgres, make_past_partitions
        from fep.bench_ingest import drop_postgres, fresh_postgres

        server = postgres_server()
        name = unique_database()
        self.addCleanup(drop_postgres, server, name)
        url = fresh_postgres(server, name)
        store = open_store(url, reactor)
        await store.open()
        await store.close()
        start = fill_start(ROWS, METERS)
        await make_past_partitions(reactor, url, start)
        fill_postgres(url, ROWS, METERS, start)
        conn = psycopg2.connect(url, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                for table in ("readings", "intervals"):
                    cur.execute(f"SELECT count(*) FROM {table}_default")
                    self.assertEqual(cur.fetchone(), (0,))
                    cur.execute(f"SELECT count(*) FROM {table}")
                    self.assertEqual(cur.fetchone(), (ROWS,))
        finally:
            conn.close()



class RunDatabasesTests(unittest.TestCase):
    def test_a_run_names_its_databases_for_itself_and_drops_only_those(self) -> None:
        from fep.bench_ingest import drop_postgres, drop_run_databases, fresh_postgres

        server = postgres_server()
        self.assertIn(f"_{os.getpid()}_", BENCH_DATABASE)
        ours, other = BENCH_DATABASE + "_ingest", BENCH_DATABASE + "x"
        for name in (ours, other):
            self.addCleanup(drop_postgres, server, name)
            fresh_postgres(server, name)
        self.assertIn(ours, drop_run_databases(server))
        self.assertEqual(_databases(server, BENCH_DATABASE), [other])
