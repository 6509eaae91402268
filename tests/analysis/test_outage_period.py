"""The outages and indices of a period (fep.analysis.outages.join_days,
fep.analysis.jobs.run_outage_period), and the analysis service's alarm on area outages.

The three days 2026-12-01..2026-12-04 (the 4th excluded) of area T1 (summary S, members A,
B, C, D: four customers):

- A down 12-01 23:00, up 12-02 00:20: one outage of 80 minutes (the days: 60 + 20, cut);
- B down 12-01 23:30, up 12-02 00:10: 40 minutes (30 + 10);
- C down 12-02 23:58, up 12-03 00:02: 4 minutes, momentary (the days: 2 + 2, each cut, so
  each sustained in its day);
- D down 12-03 12:00, up 12:30 (30 minutes), and down 12-03 23:50, up 12-04 00:30: 10
  minutes in the period, cut at its end, so sustained.

The period: sustained A 80, B 40, D 30 and D 10: 4 interruptions, 160 customer minutes;
momentary: C. SAIFI 4/4 = 1, SAIDI 160/4 = 40 min, CAIDI 160/4 = 40 min, MAIFI 1/4 = 0.25.
A and B are out together 23:30-00:10: 2 of 4 members (the default share, 50 %), one area
outage of 40 minutes across midnight. Day by day (``fep outages --day``): 12-01 2 sustained,
90 min; 12-02 3 sustained (A, B and C, cut), 32 min; 12-03 3 sustained (C, cut, and D
twice), 42 min: 8 interruptions of 164 customer minutes in all, where the period has 4 and
160 (and C's 4 momentary minutes)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from fep.analysis import areas, jobs
from fep.analysis.daemon import AnalysisService
from fep.analysis.outages import (
    Outage,
    daily_saidi,
    join_days,
    major_event_days,
    med_threshold,
)
from fep.analysis.settings import VeeSettings
from fep.analysis.store import AnalysisStore, RunRecord, StoredOutage
from fep.model import EventKind, MeterEvent, Severity
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.analysis.test_daemon import Sink, settings, wait_for
from tests.postgres import fresh_database

T0 = datetime(2026, 12, 1, tzinfo=UTC)
FIRST, END = date(2026, 12, 1), date(2026, 12, 4)
VEE = VeeSettings()
NETWORK = "area,meter,role\nT1,,\nT1,S,summary\n" + "".join(
    f"T1,{m},member\n" for m in "ABCD")


def at(day: int, h: int = 0, m: int = 0) -> datetime:
    return datetime(2026, 12, day, h, m, tzinfo=UTC)


def down(meter: str, t: datetime) -> MeterEvent:
    return MeterEvent(meter, "down", EventKind.POWER_OUTAGE, Severity.MAJOR, t)


def up(meter: str, t: datetime) -> MeterEvent:
    return MeterEvent(meter, "up", EventKind.POWER_RESTORED, Severity.INFO, t)


THREE_DAYS = [down("A", at(1, 23)), up("A", at(2, 0, 20)),
              down("B", at(1, 23, 30)), up("B", at(2, 0, 10)),
              down("C", at(2, 23, 58)), up("C", at(3, 0, 2)),
              down("D", at(3, 12)), up("D", at(3, 12, 30)),
              down("D", at(3, 23, 50)), up("D", at(4, 0, 30))]


async def three_days(case: unittest.TestCase, store: Any, network: str = NETWORK) -> Any:
    await store.open()
    case.addCleanup(store.close)
    await store.write(THREE_DAYS)
    await AnalysisStore(store).save_network(areas.read_csv(network))
    return store


def figures(report: Any) -> tuple[Any, ...]:
    i = report.indices
    return (i.customers, i.sustained, i.momentary, i.customer_minutes, i.saifi, i.saidi,
            i.caidi, i.maifi)


def spans(report: Any) -> list[tuple[str, datetime, datetime, str]]:
    return [(o.meter, o.since, o.until, o.as_dict()["cut"]) for o in report.outages]


THE_PERIOD = (4, 4, 1, D("160.000"), D("1.000"), D("40.000"), D("40.000"), D("0.250"))
THE_OUTAGES = [("A", at(1, 23), at(2, 0, 20), ""), ("B", at(1, 23, 30), at(2, 0, 10), ""),
               ("C", at(2, 23, 58), at(3, 0, 2), ""), ("D", at(3, 12), at(3, 12, 30), ""),
               ("D", at(3, 23, 50), at(4), "end")]


def y25(month: int, day: int, h: int = 0, m: int = 0) -> datetime:
    return datetime(2025, month, day, h, m, tzinfo=UTC)


async def store_history(store: Any) -> None:
    """The analysis service's stored days before the three days, for T1's 4 customers:

    - 2025-06-02 A 20 min (SAIDI 5), 06-09 A and B 12 min each (6), 06-16 C 32 (8), 06-23
      D 40 (10);
    - 06-30 analysed without outages and 07-07 with only a momentary 3 minutes: SAIDI 0,
      left out;
    - 2020-01-06 D out 10 hours (SAIDI 150), stored but more than five years before;
    - 2025-08-01 A out 10 hours in the events only: the day was not analysed, so it is no
      history.

    alpha = mean(ln 5, ln 6, ln 8, ln 10) = 1.946, beta = their standard deviation 0.307,
    T_MED = exp(1.946 + 2.5 x 0.307) = 15.064 min."""
    analysis = AnalysisStore(store)
    rows = {date(2025, 6, 2): [("A", y25(6, 2, 9), 20)],
            date(2025, 6, 9): [("A", y25(6, 9, 9), 12), ("B", y25(6, 9, 9), 12)],
            date(2025, 6, 16): [("C", y25(6, 16, 9), 32)],
            date(2025, 6, 23): [("D", y25(6, 23, 9), 40)],
            date(2025, 6, 30): [],
            date(2025, 7, 7): [("A", y25(7, 7, 9), 3)],
            date(2020, 1, 6): [("D", datetime(2020, 1, 6, 9, tzinfo=UTC), 600)]}
    for day, outages in rows.items():
        await analysis.save_run(RunRecord(day, "outages", T0, T0, True, {"areas": []}, None))
        await analysis.save_outages(("meter",), None, None, [
            StoredOutage("meter", m, t, t + timedelta(minutes=n), "events", (m,), {"cut": ""})
            for m, t, n in outages])
    await store.write([down("A", y25(8, 1, 8)), up("A", y25(8, 1, 18))])


class MajorEventDayTests(unittest.TestCase):
    """IEEE 1366 2.5 beta, one step per test."""

    def test_daily_saidi_puts_an_interruption_on_the_day_it_began(self) -> None:
        """A 23:00-00:20 (80 min) is all on 12-01; C's 4 minutes are momentary; 4
        customers."""
        found = daily_saidi([Outage("A", at(1, 23), at(2, 0, 20)),
                             Outage("B", at(2, 10), at(2, 10, 40)),
                             Outage("C", at(2, 12), at(2, 12, 4))], "ABCD")
        self.assertEqual(found, {FIRST: D("20.000"), date(2026, 12, 2): D("10.000")})

    def test_the_threshold(self) -> None:
        """SAIDI 5, 6, 8, 10 and a day of 0 (left out): T_MED = 15.064."""
        self.assertEqual(med_threshold([D(5), D(6), D(8), D(10), D(0)]), D("15.064"))

    def test_no_threshold_without_two_days(self) -> None:
        self.assertIsNone(med_threshold([D(5), D(0)]))
        self.assertEqual(major_event_days({FIRST: D(1000)}, None), [])

    def test_days_above_the_threshold(self) -> None:
        self.assertEqual(major_event_days({FIRST: D(30), date(2026, 12, 3): D(10),
                                           date(2026, 12, 4): D("15.064")}, D("15.064")),
                         [FIRST])


class JoinDaysTests(unittest.TestCase):
    """join_days: outages the days cut at midnight are one outage of the period."""

    def test_an_outage_cut_at_midnight_is_joined(self) -> None:
        found = join_days([Outage("A", at(1, 23), at(2), cut_end=True),
                           Outage("A", at(2), at(2, 0, 20), cut_start=True)], at(1, 0), at(4, 0))
        self.assertEqual(found, [Outage("A", at(1, 23), at(2, 0, 20))])

    def test_an_outage_over_whole_days_is_joined_once(self) -> None:
        """Down 12-01 22:00, up 12-03 01:00: three day pieces, one outage of 27 hours."""
        found = join_days([Outage("A", at(1, 22), at(2), cut_end=True),
                           Outage("A", at(2), at(3), cut_start=True, cut_end=True),
                           Outage("A", at(3), at(3, 1), cut_start=True)], at(1, 0), at(4, 0))
        self.assertEqual(found, [Outage("A", at(1, 22), at(3, 1))])
        self.assertEqual(found[0].duration, timedelta(hours=27))

    def test_flag_outages_join_across_midnight(self) -> None:
        """Flags give no cut at a day's start: a flagged run cut at 24:00 and the next
        day's run from 00:00 are one outage."""
        found = join_days([Outage("A", at(1, 23, 30), at(2), "flags", cut_end=True),
                           Outage("A", at(2), at(2, 0, 45), "flags")], at(1, 0), at(4, 0))
        self.assertEqual(found, [Outage("A", at(1, 23, 30), at(2, 0, 45), "flags")])

    def test_a_cut_nothing_continues_ended_at_midnight(self) -> None:
        """Flagged up to 24:00, the next day's first interval not flagged: the outage
        ended at midnight, it is no longer cut inside the period."""
        found = join_days([Outage("A", at(1, 23, 30), at(2), "flags", cut_end=True)],
                          at(1, 0), at(4, 0))
        self.assertEqual(found, [Outage("A", at(1, 23, 30), at(2), "flags")])

    def test_cuts_at_the_period_bounds_stay(self) -> None:
        found = join_days([Outage("A", at(1), at(1, 0, 3), cut_start=True),
                           Outage("B", at(3, 23, 58), at(4), cut_end=True),
                           Outage("C", at(2, 10), at(2, 10, 40))], at(1, 0), at(4, 0))
        self.assertEqual([(o.meter, o.cut_start, o.cut_end) for o in found],
                         [("A", True, False), ("B", False, True), ("C", False, False)])
        self.assertFalse(found[0].momentary())

    def test_different_meters_and_gaps_are_not_joined(self) -> None:
        found = join_days([Outage("A", at(1, 23), at(2), cut_end=True),
                           Outage("B", at(2), at(2, 0, 5), cut_start=True),
                           Outage("C", at(1, 23), at(1, 23, 30)),
                           Outage("C", at(1, 23, 30), at(1, 23, 40))], at(1, 0), at(4, 0))
        self.assertEqual(len(found), 4)


class PeriodBehaviours:
    """run_outage_period on a real store; ``new_store`` gives SQLite or PostgreSQL."""

    new_store: Callable[[], Any]
    addCleanup: Callable[..., None]
    assertEqual: Callable[..., None]

    async def service_run(self, store: Any, today: date, days: int, **more: str) -> Sink:
        """The analysis service's outages of the ``days`` days before ``today``, on a fake
        clock at 01:00 of ``today`` advanced to its 02:00 run."""
        clock = Clock()
        clock.advance(datetime.combine(today, datetime.min.time(), UTC).timestamp() + 3600)
        sink = Sink()
        service = AnalysisService(clock, store, settings(days=str(days), analyses="outages",
                                                         **more), VEE, sink)
        await service.startService()
        clock.advance(3600)
        await wait_for(lambda: service.runs == 1 and service._running is None)
        await service.stopService()
        return sink

    async def test_three_days_with_an_outage_across_midnight(self) -> None:
        """The worked example (docs/analysis.md "Indices over a period"), found when asked:
        nothing of the period was analysed by the service."""
        store = await three_days(self, self.new_store())  # type: ignore[arg-type]
        report = await jobs.run_outage_period(store, VEE, FIRST, END, area="T1")
        self.assertEqual(spans(report), THE_OUTAGES)
        self.assertEqual(figures(report), THE_PERIOD)
        self.assertEqual([(a.area, a.since, a.until, a.meters, a.peak, a.members)
                          for a in report.areas],
                         [("T1", at(1, 23, 30), at(2, 0, 10), ("A", "B"), 2, 4)])
        self.assertEqual((report.stored, len(report.computed)), ([], 3))
        self.assertEqual(report.period(), {"since": "2026-12-01", "until": "2026-12-04",
                                           "days": 3, "stored_days": 0, "computed_days": 3})

    async def test_the_days_one_by_one(self) -> None:
        """Each day alone counts the pieces the midnight cuts make: 8 sustained
        interruptions of 164 minutes against the period's 4 of 160 and one momentary."""
        store = await three_days(self, self.new_store())  # type: ignore[arg-type]
        days = [await jobs.run_outages(store, VEE, FIRST + timedelta(days=n), area="T1")
                for n in range(3)]
        self.assertEqual([(d.indices.sustained, d.indices.customer_minutes) for d in days],
                         [(2, D("90.000")), (3, D("32.000")), (3, D("42.000"))])

    async def test_stored_days_are_read_as_the_service_stored_them(self) -> None:
        """Analysed by the service, the days are read from `outages` and give the same
        figures; an outage written after the service's run is not in them (the stored
        day is what counts), while the day computed when asked sees it."""
        store = await three_days(self, self.new_store())  # type: ignore[arg-type]
        await self.service_run(store, END, 3)
        await store.write([down("B", at(3, 5)), up("B", at(3, 5, 40))])
        report = await jobs.run_outage_period(store, VEE, FIRST, END, area="T1")
        self.assertEqual((report.stored, report.computed),
                         ([FIRST, date(2026, 12, 2), date(2026, 12, 3)], []))
        self.assertEqual(spans(report), THE_OUTAGES)
        self.assertEqual(figures(report), THE_PERIOD)
        self.assertEqual(len(report.areas), 1)
        day = await jobs.run_outages(store, VEE, date(2026, 12, 3), area="T1")
        self.assertIn(("B", at(3, 5), at(3, 5, 40), ""), spans(day))

    async def test_stored_and_missing_days_together(self) -> None:
        """Only 12-02 analysed by the service: it is read, 12-01 and 12-03 are found when
        asked, and the outages across midnight are joined all the same."""
        store = await three_days(self, self.new_store())  # type: ignore[arg-type]
        await self.service_run(store, date(2026, 12, 3), 1)
        report = await jobs.run_outage_period(store, VEE, FIRST, END, area="T1")
        self.assertEqual((report.stored, report.computed),
                         ([date(2026, 12, 2)], [FIRST, date(2026, 12, 3)]))
        self.assertEqual(spans(report), THE_OUTAGES)
        self.assertEqual(figures(report), THE_PERIOD)

    async def test_a_day_stored_for_other_areas_or_failed_is_found_when_asked(self) -> None:
        """A run for area T2 only (T1's customers are not in its rows), a failed run, and
        a run recorded before runs named their areas do not make a day stored."""
        store = await three_days(self, self.new_store())  # type: ignore[arg-type]
        analysis = AnalysisStore(store)
        for day, ok, summary in ((FIRST, True, {"areas": ["T2"]}),
                                 (date(2026, 12, 2), False, {"areas": []}),
                                 (date(2026, 12, 3), True, {"outages": 0})):
            await analysis.save_run(RunRecord(day, "outages", T0, T0, ok, summary, None))
        report = await jobs.run_outage_period(store, VEE, FIRST, END, area="T1")
        self.assertEqual((report.stored, len(report.computed)), ([], 3))
        self.assertEqual(figures(report), THE_PERIOD)
        # A run for T1 covers T1 (and an area below it).
        await analysis.save_run(RunRecord(FIRST, "outages", T0, T0, True, {"areas": ["T1"]},
                                          None))
        await analysis.save_outages(("meter",), at(1, 0), at(2, 0), [
            StoredOutage("meter", "A", at(1, 23), at(2), "events", ("A",), {"cut": "end"}),
            StoredOutage("meter", "B", at(1, 23, 30), at(2), "events", ("B",),
                         {"cut": "end"})])
        report = await jobs.run_outage_period(store, VEE, FIRST, END, area="T1")
        self.assertEqual(report.stored, [FIRST])
        self.assertEqual(figures(report), THE_PERIOD)

    async def test_a_month_is_the_sum_of_its_days(self) -> None:
        """November 2026, no outage across midnight: A 60 min on the 3rd and 15 on the
        28th, B 30 on the 10th, C 2 (momentary) on the 15th, D 45 on the 20th. The month:
        4 sustained, 150 customer minutes, SAIFI 1, SAIDI 37.5 min, CAIDI 37.5 min, MAIFI
        0.25; the 30 days' SAIFI, SAIDI, MAIFI and counts sum to the month's."""
        store = self.new_store()
        await store.open()
        self.addCleanup(store.close)

        def nov(day: int, h: int, m: int = 0) -> datetime:
            return datetime(2026, 11, day, h, m, tzinfo=UTC)

        await store.write([down("A", nov(3, 8)), up("A", nov(3, 9)),
                           down("A", nov(28, 18)), up("A", nov(28, 18, 15)),
                           down("B", nov(10, 14)), up("B", nov(10, 14, 30)),
                           down("C", nov(15, 1)), up("C", nov(15, 1, 2)),
                           down("D", nov(20, 22)), up("D", nov(20, 22, 45))])
        await AnalysisStore(store).save_network(areas.read_csv(NETWORK))
        month = await jobs.run_outage_period(store, VEE, date(2026, 11, 1),
                                             date(2026, 12, 1), area="T1")
        self.assertEqual(figures(month), (4, 4, 1, D("150.000"), D("1.000"), D("37.500"),
                                          D("37.500"), D("0.250")))
        days = [await jobs.run_outages(store, VEE, date(2026, 11, n), area="T1")
                for n in range(1, 31)]
        for field in ("sustained", "momentary", "customer_minutes", "saifi", "saidi",
                      "maifi"):
            self.assertEqual(sum((getattr(d.indices, field) for d in days), D(0)),
                             getattr(month.indices, field), field)

    async def test_major_event_days_are_excluded(self) -> None:
        """The three days by the stored history (``store_history``, T_MED 15.064): 12-01's
        SAIDI is 120/4 = 30 (A's 80 and B's 40 minutes began that day), a major event day;
        12-03's 40/4 = 10 is not. Without 12-01's interruptions: D's 30 and 10 minutes,
        SAIFI 2/4 = 0.5, SAIDI 40/4 = 10 min, CAIDI 20 min; C's momentary one stays, MAIFI
        0.25. The indices with every day are unchanged."""
        store = await three_days(self, self.new_store())  # type: ignore[arg-type]
        # Without a history (nothing stored before the period): no threshold, no day.
        report = await jobs.run_outage_period(store, VEE, FIRST, END, area="T1",
                                              exclude_med=True)
        assert report.med is not None
        self.assertEqual((report.med.t_med, report.med.days), (None, []))
        self.assertEqual(report.med.indices, report.indices)
        await store_history(store)
        report = await jobs.run_outage_period(store, VEE, FIRST, END, area="T1",
                                              exclude_med=True)
        assert report.med is not None
        self.assertEqual((report.med.t_med, report.med.history_days, report.med.days),
                         (D("15.064"), 6, [FIRST]))
        self.assertEqual(figures(attrs.evolve(report, indices=report.med.indices)),
                         (4, 2, 1, D("40.000"), D("0.500"), D("10.000"), D("20.000"),
                          D("0.250")))
        self.assertEqual(figures(report), THE_PERIOD)
        self.assertEqual(report.period()["major_event_days"], "2026-12-01")

    async def test_periods_are_bounded(self) -> None:
        store = await three_days(self, self.new_store())  # type: ignore[arg-type]
        with self.assertRaisesRegex(ValueError, "367 days: at most 366"):  # type: ignore[attr-defined]
            await jobs.run_outage_period(store, VEE, date(2026, 1, 1), date(2027, 1, 3))
        with self.assertRaisesRegex(ValueError, "empty"):  # type: ignore[attr-defined]
            await jobs.run_outage_period(store, VEE, END, FIRST)
        with self.assertRaises(LookupError):  # type: ignore[attr-defined]
            await jobs.run_outage_period(store, VEE, FIRST, END, area="T9")
        # A leap year's 366 days are allowed.
        report = await jobs.run_outage_period(store, VEE, date(2028, 1, 1), date(2029, 1, 1))
        self.assertEqual(report.period()["days"], 366)


class AreaAlarmBehaviours(PeriodBehaviours):
    async def test_the_service_raises_one_alarm_per_area_outage(self) -> None:
        """The three days, and area T2 (no summary meter) whose members E and F are both
        out 12-02 08:00-08:20: an alarm on S for T1's area outage at its start, 12-01
        23:30 (still out at the day's end), not again for its rest on 12-02; one on E, T2's
        first member, at 08:00."""
        store = await three_days(self, self.new_store(), NETWORK  # type: ignore[arg-type]
                                 + "T2,,\nT2,E,member\nT2,F,member\n")
        await store.write([down("E", at(2, 8)), up("E", at(2, 8, 20)),
                           down("F", at(2, 8)), up("F", at(2, 8, 20))])
        sink = await self.service_run(store, END, 3)
        alarms = [e for e in sink.records if isinstance(e, MeterEvent)]
        self.assertEqual([(e.meter, e.code, e.severity, e.time, e.kind, e.text) for e in alarms],
                         [("S", "analysis:area-outage", Severity.MAJOR, at(1, 23, 30),
                           EventKind.OTHER, "area T1: 2 of 4 meters out from 2026-12-01 23:30 "
                           "for 30 min (still out at the day's end): A B"),
                          ("E", "analysis:area-outage", Severity.MAJOR, at(2, 8),
                           EventKind.OTHER, "area T2: 2 of 2 meters out from 2026-12-02 08:00 "
                           "for 20 min: E F")])
        runs = {r.day: r.summary for r in await AnalysisStore(store).runs(FIRST, END)}
        self.assertEqual([runs[d]["alarms"] for d in sorted(runs)], [1, 1, 0])
        self.assertEqual(runs[FIRST]["areas"], [])

    async def test_the_service_with_areas_raises_each_alarm_once(self) -> None:
        """``areas = T1, T1`` (the same area twice): its area outage alarmed once."""
        store = await three_days(self, self.new_store())  # type: ignore[arg-type]
        sink = await self.service_run(store, date(2026, 12, 2), 1, areas="T1 T1")
        self.assertEqual([e.meter for e in sink.records if isinstance(e, MeterEvent)], ["S"])


class SqlitePeriodTests(AreaAlarmBehaviours, unittest.TestCase):
    def new_store(self) -> SqliteStore:
        return SqliteStore(self.mktemp() + ".sqlite", reactor)


class PostgresPeriodTests(AreaAlarmBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)
