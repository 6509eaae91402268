"""`fep comms` and the suspected outages of `fep outages` on a store (SQLite file).

Transformer area T1 has summary meter S and members A and B, all on ``tcp:``; they are read
each hour by the task ``daily``. On 2026-12-01: 01:00 all three ok; 02:00 and 03:00 all
three fail (``timeout``); 04:00 S and A fail, B is ok (its job ends at 04:05). So 12 jobs,
4 ok: 33.33 %; S and A 1 of 4 each (25.00 %), B 2 of 4 (50.00 %). A suspected outage of T1
from 02:00 to 04:05, over 2 silent cycles; it is no power outage: the indices count none."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect.jobstore import JobStore
from fep.collect.tasks import Job
from fep.model import Meter
from fep.store.sqlite import SqliteStore
from tests.inprocess import fep_main

T0 = datetime(2026, 12, 1, tzinfo=UTC)
H = timedelta(hours=1)


def job(meter: str, hour: int, ok: bool) -> Job:
    due = (T0 + hour * H).timestamp()
    return Job(id=0, meter=meter, kind="registers", route="tcp:10.0.0.1:4059",
               resource=meter, due=due, run_at=due, task="daily",
               status="done" if ok else "failed", finished_at=due + 300,
               error=None if ok else "timeout")


class CommsCliTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.db = "sqlite:" + self.mktemp() + ".sqlite"
        store = SqliteStore(self.db[len("sqlite:"):], reactor)
        await store.open()
        await store.add_meters([Meter(m, "dlms", "tcp:10.0.0.1:4059") for m in "SAB"])
        jobs = [job(m, 1, True) for m in "SAB"]
        jobs += [job(m, h, False) for h in (2, 3) for m in "SAB"]
        jobs += [job("S", 4, False), job("A", 4, False), job("B", 4, True)]
        await JobStore(store).add_jobs(jobs, T0.timestamp())
        await store.close()
        csv = Path(self.mktemp() + ".csv")
        csv.write_text("area,meter,role\nT1,,\nT1,S,summary\nT1,A,member\nT1,B,member\n",
                       encoding="utf-8")
        result = fep_main("--db", self.db, "areas", "import", str(csv))
        self.assertEqual(result.returncode, 0, result.stderr)

    def comms(self, *more: str) -> list[dict]:
        result = fep_main("--db", self.db, "comms", "--from", "2026-12-01", "--format",
                          "json", *more)
        self.assertEqual(result.returncode, 0, result.stderr)
        return [json.loads(line) for line in result.stdout.splitlines()]

    def test_rates_per_scope(self) -> None:
        rows = {(r["scope"], r["key"]): (r["jobs"], r["ok"], str(r["rate"]), r["below"])
                for r in self.comms()}
        self.assertEqual(rows, {
            ("all", "all"): (12, 4, "33.33", True), ("area", "T1"): (12, 4, "33.33", True),
            ("channel", "tcp"): (12, 4, "33.33", True),
            # The three meters share one route (a serial server's port): a row of its own.
            ("route", "tcp:10.0.0.1:4059"): (12, 4, "33.33", True),
            ("meter", "A"): (4, 1, "25.0", True), ("meter", "B"): (4, 2, "50.0", True),
            ("meter", "S"): (4, 1, "25.0", True)})

    def test_below_with_the_last_error_and_a_scope(self) -> None:
        below = self.comms("--below")
        self.assertEqual([(r["meter"], str(r["rate"]), r["last_error"], r["last_failed"])
                          for r in below],
                         [("A", "25.0", "timeout", "2026-12-01T04:05:00Z"),
                          ("S", "25.0", "timeout", "2026-12-01T04:05:00Z"),
                          ("B", "50.0", "timeout", "2026-12-01T03:05:00Z")])
        self.assertEqual([r["key"] for r in self.comms("--scope", "meter")], ["A", "B", "S"])

    def test_a_lower_target_and_a_later_period(self) -> None:
        """At 30 % nobody is below; from 04:00 on only the 04:00 cycle counts (1 of 3)."""
        self.assertEqual(self.comms("--below", "--target", "25 %"), [])
        later = {r["key"]: str(r["rate"]) for r in self.comms("--from", "2026-12-01T04:00",
                                                         "--scope", "all")}
        self.assertEqual(later, {"all": "33.33"})
        result = fep_main("--db", self.db, "comms", "--from", "2026-12-01", "--area", "T9")
        self.assertEqual(result.returncode, 2)
        self.assertIn("no area 'T9'", result.stderr)
        result = fep_main("--db", self.db, "comms", "--target", "150 %")
        self.assertEqual(result.returncode, 2)

    def test_outages_shows_the_suspected_outage(self) -> None:
        result = fep_main("--db", self.db, "outages", "--day", "2026-12-01", "--format",
                          "json")
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        [suspected] = [r for r in rows if r["record"] == "suspected-outage"]
        self.assertEqual((suspected["area"], suspected["since"], suspected["until"],
                          suspected["cycles"], suspected["meters"]),
                         ("T1", "2026-12-01T02:00:00Z", "2026-12-01T04:05:00Z", 2, "A B S"))
        [index] = [r for r in rows if r["record"] == "indices"]
        self.assertEqual(index["sustained"], 0)
        table = fep_main("--db", self.db, "outages", "--day", "2026-12-01")
        self.assertIn("suspected outages (communication loss):", table.stdout)
