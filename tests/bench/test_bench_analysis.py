"""`make bench`'s analysis rows (fep.bench_analysis) on a tiny fleet: 30 meters in areas of
10 (3 areas, each a summary meter and 9 members), B000001 (one meter in a hundred) missing two
intervals; SQLite and PostgreSQL, each on a new database."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.trial import unittest

from fep.bench import analysis_bench_rows
from fep.bench_analysis import day_blocks, fleet
from tests.postgres import drop_later, postgres_server

reactor: Any = global_reactor


class FleetTests(unittest.TestCase):
    def test_the_fleet(self) -> None:
        csv, ids = fleet(30, 10)
        self.assertEqual(len(ids), 30)
        self.assertIn("T00001,,,,B000010,summary,in,", csv.splitlines())
        blocks = day_blocks(ids, 10)
        self.assertEqual(sum(len(b.values) for b in blocks), 30 * 96 - 2)


class AnalysisRowsTests(unittest.TestCase):
    timeout = 120

    async def test_rows_on_sqlite_and_postgres(self) -> None:
        server = postgres_server()
        name = f"fep_test_bench_{secrets.token_hex(4)}"
        self.addCleanup(drop_later, server, name)
        workdir = Path(self.mktemp())
        workdir.mkdir(parents=True)
        rows = await analysis_bench_rows(reactor, 30, workdir, postgres=server, database=name,
                                         area_size=10)
        self.assertEqual([a for a, _b, _c in rows], [
            "analysis SQLite: validate + estimate a day (fep vee run)",
            "analysis SQLite: balance a day (fep balance)", "analysis SQLite: both",
            "analysis PostgreSQL: validate + estimate a day (fep vee run)",
            "analysis PostgreSQL: balance a day (fep balance)", "analysis PostgreSQL: both"])
        self.assertTrue(all(b == "30 meters x 96 intervals, 3 areas, 2 estimates"
                            for _a, b, _c in rows), rows)
        self.assertTrue(all(" rows/s" in c for _a, _b, c in rows))
