"""`make bench`'s PostgreSQL ingest rows with two tiny batch sizes: each batch size gets a
database of its own, so the second one no longer stops at ``relation "tasks" already
exists`` (the first run's migrations had made the job store's tables, which the old
"drop fep's tables" step did not know)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import psycopg2
from twisted.internet import reactor as global_reactor
from twisted.trial import unittest

from fep.bench import ingest_rows, make_readings
from tests.postgres import drop_later, postgres_server

reactor: Any = global_reactor


class PostgresIngestRowsTests(unittest.TestCase):
    timeout = 60

    async def test_two_batch_sizes_each_run_on_a_fresh_database(self) -> None:
        server = postgres_server()
        name = f"fep_test_bench_{secrets.token_hex(4)}"
        self.addCleanup(drop_later, server, name)
        workdir = Path(self.mktemp())
        workdir.mkdir(parents=True)
        readings = make_readings(60, meters=5)

        rows = await ingest_rows(reactor, readings, [20, 30], workdir, sqlite=False,
                                 postgres=server, database=name, repeat=2)

        self.assertEqual([(a, b) for a, b, _ in rows], [
            ("ingest PostgreSQL (spool on)", "batch 20"),
            ("ingest PostgreSQL (spool on)", "batch 30"),
        ])
        # fep's rate next to a plain COPY of the same rows in the same run, and the ratio.
        for _, _, c in rows:
            self.assertRegex(
                c, r"^[\d,]+ readings/s; plain COPY [\d,]+/s; ratio \d+\.\d\d \(best of 2\)$")
        # The database left is the last run's alone: its rows, not both runs'.
        conn = psycopg2.connect(server.rsplit("/", 1)[0] + "/" + name, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM readings")
                self.assertEqual(cur.fetchone(), (60,))
                # In this month's partition, as a live node's readings are, not in DEFAULT.
                cur.execute("SELECT count(*) FROM readings_default")
                self.assertEqual(cur.fetchone(), (0,))
        finally:
            conn.close()


class SqliteIngestRowsTests(unittest.TestCase):
    async def test_the_sqlite_row_gives_the_bytes_per_stored_reading(self) -> None:
        workdir = Path(self.mktemp())
        workdir.mkdir(parents=True)
        rows = await ingest_rows(reactor, make_readings(60, meters=5), [20], workdir)
        ((name, case, result),) = rows
        self.assertEqual((name, case), ("ingest SQLite (spool on)",
                                        "batch 20, a backlog in transactions of 50,000"))
        self.assertRegex(result, r"^[\d,]+ readings/s; [\d,]+ bytes per stored reading$")
        # Measured on the closed file: its WAL was checkpointed into it and removed.
        self.assertTrue((workdir / "bench-20.sqlite").exists())
        self.assertFalse((workdir / "bench-20.sqlite-wal").exists())


class PlainCopyTests(unittest.TestCase):
    def test_the_reference_copies_the_rows_fep_copies(self) -> None:
        """The plain COPY the ingest is compared with writes the same compact rows, columns
        and table as fep's COPY writer (migration 0019)."""
        from fep.bench import COPY_READINGS
        from fep.store.copy import READING_COLUMNS, TABLES

        self.assertEqual(COPY_READINGS, f"COPY {TABLES[0][0]} ({READING_COLUMNS}) FROM STDIN")
