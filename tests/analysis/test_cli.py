"""`fep areas`, `fep vee` and `fep balance` on a small area in a SQLite file.

The area T1 has a summary meter S (100 Wh every interval) and members A (50 Wh) and B
(46 Wh): loss 4 Wh of 100 = 4 % per interval and for the day. B lacks intervals 2 and 3,
which validation reports as one missing run and estimation interpolates (46, 46)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from fep.model import IntervalBlock, ObisCode
from fep.store.sqlite import SqliteStore
from tests.inprocess import fep_main

CHANNEL = ObisCode(1, 0, 1, 29, 0)
Q15 = timedelta(minutes=15)
DAY = datetime(2026, 12, 1, tzinfo=UTC)
AREAS = """area,name,kind,parent,meter,role,direction,phase
F1,Feeder 1,feeder,,,,,
T1,Transformer 1,transformer,F1,,,,
T1,,,,S,summary,in,
T1,,,,A,member,,A
T1,,,,B,member,,B
"""


class AnalysisCliTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.db = "sqlite:" + self.mktemp() + ".sqlite"
        store = SqliteStore(self.db[len("sqlite:"):], reactor)
        await store.open()
        b = [D(46)] * 96
        await store.write([
            IntervalBlock("S", CHANNEL, DAY, Q15, (D(100),) * 96),
            IntervalBlock("A", CHANNEL, DAY, Q15, (D(50),) * 96),
            IntervalBlock("B", CHANNEL, DAY, Q15, tuple(b[:2])),
            IntervalBlock("B", CHANNEL, DAY + 4 * Q15, Q15, tuple(b[4:])),
        ])
        await store.close()
        self.csv = Path(self.mktemp() + ".csv")
        self.csv.write_text(AREAS, encoding="utf-8")
        result = fep_main("--db", self.db, "areas", "import", str(self.csv))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("2 areas and 3 meters imported", result.stdout)

    def test_areas_list_show_export(self) -> None:
        tree = fep_main("--db", self.db, "areas", "list", "--tree")
        self.assertEqual(tree.stdout.splitlines(), [
            "F1 (feeder) Feeder 1: 0 summary, 0 members",
            "  T1 (transformer) Transformer 1: 1 summary, 2 members"])
        show = fep_main("--db", self.db, "areas", "show", "T1", "--format", "csv")
        self.assertEqual(show.stdout.splitlines(), [
            "T1 (transformer) Transformer 1: F1 / T1", "area,meter,role,direction,phase",
            "T1,S,summary,in,", "T1,A,member,,A", "T1,B,member,,B"])
        export = fep_main("--db", self.db, "areas", "export")
        self.assertEqual(export.stdout.splitlines()[0], "area,name,kind,parent,meter,role,"
                         "direction,phase")
        self.assertIn("T1,,,,B,member,,B", export.stdout.splitlines())
        missing = fep_main("--db", self.db, "areas", "show", "T9")
        self.assertEqual(missing.returncode, 2)
        self.assertIn("no area 'T9'", missing.stderr)

    def test_vee_run_then_balance(self) -> None:
        run = fep_main("--db", self.db, "vee", "run", "--day", "2026-12-01")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("3 meters validated; findings: missing 1; estimates: interpolate 2",
                      run.stdout)
        exceptions = fep_main("--db", self.db, "vee", "exceptions", "--day", "2026-12-01",
                              "--format", "csv")
        self.assertEqual(exceptions.stdout.splitlines()[1:], [
            "B,1-0:1.29.0*255,missing,2026-12-01T00:30:00Z,2026-12-01T01:00:00Z,MISSING,"
            "intervals=2"])
        balance = fep_main("--db", self.db, "balance", "--day", "2026-12-01", "--area", "T1",
                           "--format", "csv")
        self.assertEqual(balance.returncode, 0, balance.stderr)
        # input 9600, consumption 50*96 + 46*96 (two of B's estimated) = 9216, loss 384 = 4 %;
        # A is complete, B is not: 50 %; 2 of 192 member values are estimates: 1.042 %.
        self.assertEqual(balance.stdout.splitlines()[1],
                         "T1,2026-12-01T00:00:00Z,2026-12-02T00:00:00Z,9600,9216.000,384.000,"
                         "4.000,2,50.000,1.042,96")
        self.assertEqual(balance.stderr, "")

    def test_vee_series_real_then_estimated_then_real_again(self) -> None:
        """B's intervals 2 and 3 are missing: before the run they show MISSING, after it
        estimated (46 on the line between 46 and 46) and still flagged missing from the
        meter; once re-collected the real value shows, no longer missing."""
        def series() -> list[str]:
            result = fep_main("--db", self.db, "vee", "series", "--meter", "B", "--day",
                              "2026-12-01", "--format", "csv")
            self.assertEqual(result.returncode, 0, result.stderr)
            return result.stdout.splitlines()[1:5]

        self.assertEqual(series(), [
            "2026-12-01T00:00:00Z,46,OK,,", "2026-12-01T00:15:00Z,46,OK,,",
            "2026-12-01T00:30:00Z,,MISSING,,", "2026-12-01T00:45:00Z,,MISSING,,"])
        fep_main("--db", self.db, "vee", "run", "--day", "2026-12-01")
        estimated = series()
        self.assertTrue(estimated[2].startswith(
            "2026-12-01T00:30:00Z,46.000,ESTIMATED|MISSING,interpolate,"), estimated[2])

        async def recollect() -> None:
            store = SqliteStore(self.db[len("sqlite:"):], reactor)
            await store.open()
            await store.write([IntervalBlock("B", CHANNEL, DAY + 2 * Q15, Q15,
                                             (D(47), D(45)))])
            await store.close()

        return Deferred.fromCoroutine(recollect()).addCallback(lambda _: self.assertEqual(
            series()[2:], ["2026-12-01T00:30:00Z,47,OK,,", "2026-12-01T00:45:00Z,45,OK,,"]))

    def test_a_band_from_the_vee_file_raises_the_alarm(self) -> None:
        vee = Path(self.mktemp() + ".ini")
        vee.write_text("[balance]\nlow = 0\nhigh = 3\n", encoding="utf-8")
        balance = fep_main("--db", self.db, "balance", "--day", "2026-12-01", "--vee", str(vee))
        self.assertEqual(balance.returncode, 0, balance.stderr)
        self.assertIn("alarm: area T1: loss", balance.stderr)
        self.assertIn("above 3 %", balance.stderr)

    def test_import_merges_by_area_unless_replace(self) -> None:
        """A file naming only T2 adds T2 and keeps F1 and T1; with --replace it is the whole
        network."""
        more = Path(self.mktemp() + ".csv")
        more.write_text("area,meter,role\nT2,,\nT2,C,member\n", encoding="utf-8")
        self.assertEqual(fep_main("--db", self.db, "areas", "import", str(more)).returncode, 0)
        listed = fep_main("--db", self.db, "areas", "list", "--format", "csv")
        self.assertEqual([line.split(",")[0] for line in listed.stdout.splitlines()[1:]],
                         ["F1", "T1", "T2"])
        self.assertEqual(fep_main("--db", self.db, "areas", "import", str(more),
                                  "--replace").returncode, 0)
        listed = fep_main("--db", self.db, "areas", "list", "--format", "csv")
        self.assertEqual([line.split(",")[0] for line in listed.stdout.splitlines()[1:]],
                         ["T2"])

    def test_balance_per_interval(self) -> None:
        """--intervals: one row per interval; interval 2 has no value of B and no estimate
        yet (no vee run): consumption 50, loss 50 = 50 %, complete 50 %."""
        result = fep_main("--db", self.db, "balance", "--day", "2026-12-01", "--intervals",
                          "--format", "csv")
        rows = result.stdout.splitlines()[1:]
        self.assertEqual(len(rows), 96)
        self.assertEqual(rows[0].split(",")[3:9], ["100", "96", "4", "4.000", "2", "100.000"])
        self.assertEqual(rows[2].split(",")[3:9], ["100", "50", "50", "50.000", "2", "50.000"])

    def test_rank_against_the_day_before(self) -> None:
        """The day before has no data: its stored balance has no rate, so the change is
        empty. T1's loss today without estimates (no vee run; B's two gaps count as zero):
        input 9600, consumption 4800 + 94 x 46 = 9124, loss 476 = 4.958 %."""
        fep_main("--db", self.db, "balance", "--day", "2026-11-30")
        ranked = fep_main("--db", self.db, "balance", "--day", "2026-12-01", "--rank", "loss",
                          "--format", "csv")
        self.assertEqual(ranked.returncode, 0, ranked.stderr)
        self.assertEqual(ranked.stdout.splitlines(), ["area,loss_rate,before,change",
                                                      "T1,4.958,,"])

    def test_month(self) -> None:
        """December has only 1 Dec in the store: the month's row is that day's numbers over
        the whole month."""
        month = fep_main("--db", self.db, "balance", "--month", "2026-12", "--format", "csv")
        self.assertEqual(month.returncode, 0, month.stderr)
        self.assertEqual(month.stdout.splitlines()[1].split(",")[:7], [
            "T1", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", "9600", "9124", "476",
            "4.958"])
        for argv, message in ((("--month", "2026-13"), "not a month"),
                              ((), "give --day YYYY-MM-DD or --month YYYY-MM"),
                              (("--month", "2026-12", "--day", "2026-12-01"), "or --month"),
                              (("--month", "2026-12", "--rank", "loss"), "--rank is for")):
            result = fep_main("--db", self.db, "balance", *argv)
            self.assertEqual(result.returncode, 2, argv)
            self.assertIn(message, result.stderr)

    def test_bad_day_is_a_usage_error(self) -> None:
        result = fep_main("--db", self.db, "balance", "--day", "yesterday")
        self.assertEqual(result.returncode, 2)
        self.assertIn("not a day", result.stderr)


class AnalysisRunsCliTests(unittest.TestCase):
    """`fep analysis runs` and `fep analysis pending`: what the analysis service ran, with
    its reason, and the days waiting for a re-analysis."""

    async def test_runs_show_their_reason_and_pending_days_their_meters(self) -> None:
        from datetime import date

        from fep.analysis.store import AnalysisStore, RunRecord

        db = self.mktemp() + ".sqlite"
        store = SqliteStore(db, reactor)
        await store.open()
        analysis = AnalysisStore(store)
        two = datetime(2026, 12, 2, 2, tzinfo=UTC)
        ten = datetime(2026, 12, 2, 10, 5, tzinfo=UTC)
        await analysis.save_run(RunRecord(date(2026, 11, 30), "balance", two, two, True,
                                          {"areas": 1, "alarms": 0}, None))
        await analysis.save_run(RunRecord(date(2026, 12, 1), "balance", ten, ten, True,
                                          {"areas": 1, "alarms": 1}, None, "re-collection"))
        await analysis.note_pending([(date(2026, 11, 29), "A", ten), (date(2026, 11, 29), "B",
                                                                     ten)])
        await store.close()
        runs = fep_main("--db", "sqlite:" + db, "analysis", "runs", "--from", "2026-11-30",
                        "--to", "2026-12-02", "--format", "csv")
        self.assertEqual(runs.returncode, 0, runs.stderr)
        self.assertEqual(runs.stdout.splitlines(), [
            "day,analysis,reason,ok,started,finished,summary,error",
            '2026-11-30,balance,scheduled,yes,2026-12-02T02:00:00Z,2026-12-02T02:00:00Z,'
            '"{""alarms"": 0, ""areas"": 1}",',
            '2026-12-01,balance,re-collection,yes,2026-12-02T10:05:00Z,2026-12-02T10:05:00Z,'
            '"{""alarms"": 1, ""areas"": 1}",'])
        pending = fep_main("--db", "sqlite:" + db, "analysis", "pending", "--format", "csv")
        self.assertEqual(pending.stdout.splitlines(), ["day,meters,last_noted",
                                                       "2026-11-29,2,2026-12-02T10:05:00Z"])
        empty = fep_main("--db", "sqlite:" + db, "analysis", "runs", "--from", "2026-12-02",
                         "--to", "2026-12-01")
        self.assertEqual(empty.returncode, 2)
        self.assertIn("is empty", empty.stderr)
