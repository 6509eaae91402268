"""The clock and meter change rules through the store: ``run_vee`` on SQLite and
PostgreSQL, and ``fep vee run`` (in process) on a SQLite file.

Day 2026-12-01 UTC, 15-minute intervals of 1-0:1.29.0, the default clock tolerance 60 s.

Meter C (10 Wh every interval): its clock task found +2 s at 30 Nov 23:00 (within bounds)
and +95 s at 1 Dec 06:07 (clock set); the meter logged a clock adjustment from 15:40 back to
15:10. Findings: clock-deviation [00:00, 06:15) (from the last good check, the day before,
to the correction), time-change [06:00, 06:15) (-95 s: the meter at 06:08:35 set to 06:07),
time-change [15:00, 15:45) (-1800 s).

Meter R was replaced at 10:00-10:15: A100 read 5000 at 00:00 and 5600 at 10:00 (15 Wh in
intervals 0..39), B200 3 at 10:15 and 553 at 24:00 (10 Wh in 41..95); interval 40 was not
recorded. Findings: meter-change [10:00, 10:15), missing [10:00, 10:15); the register
advance 600 + 550 = 1150 matches the intervals 600 + 550; interval 40 is interpolated
(15, 10: 12.5)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import jobs
from fep.analysis.settings import VeeSettings, load
from fep.analysis.store import AnalysisStore
from fep.collect.clock import TIME_SET_RESULT, ClockAction, ClockPolicy, outcome_text
from fep.collect.jobstore import JobStore
from fep.collect.tasks import Job
from fep.model import (
    EventKind,
    IntervalBlock,
    Meter,
    MeterEvent,
    ObisCode,
    Quality,
    Reading,
    Severity,
)
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.inprocess import fep_main
from tests.postgres import fresh_database

CHANNEL = ObisCode(1, 0, 1, 29, 0)
REGISTER = ObisCode(1, 0, 1, 8, 0)
SERIAL = ObisCode(0, 0, 96, 1, 0)
Q15 = timedelta(minutes=15)
T0 = datetime(2026, 12, 1, tzinfo=UTC)
DAY = date(2026, 12, 1)


def at(hh: int, mm: int = 0, ss: int = 0, day: int = 0) -> datetime:
    return T0 + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


def t(n: int) -> datetime:
    return T0 + n * Q15


def clock_job(due: datetime, ended: datetime, deviation: float, action: ClockAction) -> Job:
    return Job(id=0, meter="C", kind="clock", route="tcp:10.0.0.1:4059", resource="C",
               due=due.timestamp(), run_at=due.timestamp(), task="clock", status="done",
               finished_at=ended.timestamp(),
               result=outcome_text(deviation, ClockPolicy(10, 300), action))


def clock_event(time: datetime, code: int, text: str) -> MeterEvent:
    return MeterEvent("C", f"dlms:0.0.99.98.0:{code}", EventKind.CLOCK_SET, Severity.INFO,
                      time, text, source="dlms")


async def fill(store: Any) -> None:
    await store.add_meters([Meter(m, "dlms", "tcp:10.0.0.1:4059") for m in "CR"])
    await store.write([
        IntervalBlock("C", CHANNEL, T0, Q15, (D(10),) * 96),
        clock_event(at(15, 40), 4, "clock adjusted (old date/time)"),
        clock_event(at(15, 10), 5, "clock adjusted (new date/time)"),
        IntervalBlock("R", CHANNEL, T0, Q15, (D(15),) * 40),
        IntervalBlock("R", CHANNEL, t(41), Q15, (D(10),) * 55),
        *[Reading("R", REGISTER, D(v), meter_time=t(n))
          for n, v in ((0, 5000), (40, 5600), (41, 3), (96, 553))],
        *[Reading("R", SERIAL, s, meter_time=t(n))
          for n, s in ((0, "A100"), (40, "A100"), (41, "B200"), (96, "B200"))],
    ])
    await JobStore(store).add_jobs([
        clock_job(at(23, day=-1), at(23, 0, 5, day=-1), 2, ClockAction.NONE),
        clock_job(at(6), at(6, 7), 95, ClockAction.SET),
    ], T0.timestamp())


EXPECTED = [
    ("C", "clock-deviation", t(0), t(25), Quality.SUSPECT | Quality.CLOCK_INVALID),
    ("C", "time-change", t(24), t(25), Quality.SUSPECT | Quality.CLOCK_ADJUSTED),
    ("C", "time-change", t(60), t(63), Quality.SUSPECT | Quality.CLOCK_ADJUSTED),
    ("R", "meter-change", t(40), t(41), Quality.COUNTER_RESET),
    ("R", "missing", t(40), t(41), Quality.MISSING),
]


class ClockAndMeterChangeStoreBehaviours:
    def new_store(self) -> Any:
        raise NotImplementedError

    async def test_run_vee_stores_the_findings_and_flags(self) -> None:
        store = self.new_store()
        await store.open()
        try:
            await fill(store)
            result = await jobs.run_vee(store, load(None), DAY)
            analysis = AnalysisStore(store)
            found = await analysis.findings(T0, at(24))
            flags_c = await analysis.flags("C", str(CHANNEL), T0, at(24))
        finally:
            await store.close()
        self.assertEqual(dict(result.findings), {"clock-deviation": 1, "time-change": 2,
                                                 "meter-change": 1, "missing": 1})
        self.assertEqual(sorted((f.meter, f.rule, f.since, f.until, f.flag) for f in found),
                         sorted(EXPECTED))
        # 00:00..06:15 off, 06:00 also set back, 15:00..15:45 set back: 28 intervals.
        self.assertEqual(len(flags_c), 28)
        self.assertEqual(flags_c[t(24)], Quality.SUSPECT | Quality.CLOCK_INVALID
                         | Quality.CLOCK_ADJUSTED)
        self.assertEqual(dict(result.estimates), {"interpolate": 1})

    async def test_a_cumulative_channels_change_is_estimated_in_the_analysed_series(self
                                                                                    ) -> None:
        """Meter K's channel is its register (1-0:1.8.0, modulus 10000): 5000 at 00:00, +15
        an interval to 5600 at 10:00 (A100), 3 at 10:15 (B200), +10 an interval to 553.
        The consumption of 10:00-10:15 (3 - 5600) is no energy: run_vee flags it
        COUNTER_RESET and interpolates 12.5 (15, 10); the analysed series and the usage the
        balance and load read show the estimate, not the readings' difference: the day
        is 40 x 15 + 12.5 + 55 x 10 = 1162.5 Wh."""
        settings = VeeSettings(channel=REGISTER, modulus=D(10000))
        values = [D(5000 + 15 * i) for i in range(41)] + [D(3 + 10 * i) for i in range(56)]
        store = self.new_store()
        await store.open()
        try:
            await store.add_meters([Meter("K", "dlms", "tcp:10.0.0.1:4059")])
            await store.write([IntervalBlock("K", REGISTER, t(-1), Q15, tuple(values)),
                               Reading("K", SERIAL, "A100", meter_time=t(0)),
                               Reading("K", SERIAL, "B200", meter_time=t(41))])
            result = await jobs.run_vee(store, settings, DAY)
            analysis = AnalysisStore(store)
            series = await jobs.validated_series(store, settings, "K", DAY)
            usage = await jobs.analysed_usage(analysis, settings, ["K"], T0, at(24))
        finally:
            await store.close()
        self.assertEqual(dict(result.findings), {"meter-change": 1})
        self.assertEqual((series[40].value, series[40].quality, series[40].method),
                         (D("12.5"), Quality.ESTIMATED | Quality.COUNTER_RESET,
                          "interpolate"))
        self.assertEqual((series[39].value, series[41].value), (D(15), D(10)))
        self.assertEqual(usage["K"][t(40)].value, D("12.5"))
        self.assertEqual(sum((p.value for p in usage["K"].values() if p.value is not None),
                             D(0)), D("1162.5"))

    async def test_clock_evidence_of_the_period(self) -> None:
        """C's two clock task results, an operator's time-set at 16:05 (a command's job),
        a registers job's result (not a clock check) and the two clock events; the clock
        job of 30 Nov 23:00 is before the period asked and not read."""
        store = self.new_store()
        await store.open()
        try:
            await fill(store)
            due = at(16).timestamp()
            await JobStore(store).add_jobs([
                Job(id=0, meter="C", kind="command", route="tcp:10.0.0.1:4059",
                    resource="C", due=due, run_at=due, status="done",
                    finished_at=at(16, 5).timestamp(), result=TIME_SET_RESULT),
                Job(id=0, meter="C", kind="registers", route="tcp:10.0.0.1:4059",
                    resource="C", due=due, run_at=due, task="daily", status="done",
                    finished_at=at(16, 1).timestamp(), result="12 readings"),
            ], T0.timestamp())
            found = await AnalysisStore(store).clock_evidence(["C", "R"], T0, at(24))
        finally:
            await store.close()
        results, events = found["C"]
        self.assertEqual(results, [(at(6, 7), outcome_text(95, ClockPolicy(10, 300),
                                                           ClockAction.SET)),
                                   (at(16, 5), TIME_SET_RESULT)])
        self.assertEqual([(e.time, e.text) for e in events],
                         [(at(15, 10), "clock adjusted (new date/time)"),
                          (at(15, 40), "clock adjusted (old date/time)")])
        self.assertEqual(found["R"], ([], []))

    async def test_serials_of_the_day_and_the_last_before(self) -> None:
        """R reported A100 on 29 Nov and 30 Nov 12:00 and B200 at 10:15: read for the day,
        the last before it (30 Nov 12:00, A100) and B200; X reported nothing."""
        store = self.new_store()
        await store.open()
        try:
            await store.write([Reading("R", SERIAL, "A100", meter_time=at(0, day=-2)),
                               Reading("R", SERIAL, "A100", meter_time=at(12, day=-1)),
                               Reading("R", SERIAL, "B200", meter_time=at(10, 15))])
            found = await AnalysisStore(store).serials(["R", "X"], str(SERIAL), T0 - Q15,
                                                       at(24) + Q15)
        finally:
            await store.close()
        self.assertEqual(found, {"R": [(at(12, day=-1), "A100"), (at(10, 15), "B200")],
                                 "X": []})


class SqliteClockAndMeterChangeTests(ClockAndMeterChangeStoreBehaviours, unittest.TestCase):
    def new_store(self) -> SqliteStore:
        return SqliteStore(self.mktemp() + ".sqlite", reactor)


class PostgresClockAndMeterChangeTests(ClockAndMeterChangeStoreBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)


class VeeRunCliTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.db = "sqlite:" + self.mktemp() + ".sqlite"
        store = SqliteStore(self.db[len("sqlite:"):], reactor)
        await store.open()
        try:
            await fill(store)
        finally:
            await store.close()

    def test_fep_vee_run_finds_both(self) -> None:
        run = fep_main("--db", self.db, "vee", "run", "--day", "2026-12-01")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("2 meters validated; findings: clock-deviation 1, meter-change 1, "
                      "missing 1, time-change 2; estimates: interpolate 1", run.stdout)
        exceptions = fep_main("--db", self.db, "vee", "exceptions", "--day", "2026-12-01",
                              "--format", "csv")
        self.assertEqual(exceptions.returncode, 0, exceptions.stderr)
        rows = [line.split(",")[:6] for line in exceptions.stdout.splitlines()[1:]]
        self.assertEqual(rows, [
            ["C", "1-0:1.29.0*255", "clock-deviation", "2026-12-01T00:00:00Z",
             "2026-12-01T06:15:00Z", "CLOCK_INVALID|SUSPECT"],
            ["C", "1-0:1.29.0*255", "time-change", "2026-12-01T06:00:00Z",
             "2026-12-01T06:15:00Z", "CLOCK_ADJUSTED|SUSPECT"],
            ["C", "1-0:1.29.0*255", "time-change", "2026-12-01T15:00:00Z",
             "2026-12-01T15:45:00Z", "CLOCK_ADJUSTED|SUSPECT"],
            ["R", "1-0:1.29.0*255", "meter-change", "2026-12-01T10:00:00Z",
             "2026-12-01T10:15:00Z", "COUNTER_RESET"],
            ["R", "1-0:1.29.0*255", "missing", "2026-12-01T10:00:00Z",
             "2026-12-01T10:15:00Z", "MISSING"],
        ])
        self.assertIn("old_serial=A100", exceptions.stdout)
        self.assertIn("size_s=-1800.0", exceptions.stdout)
