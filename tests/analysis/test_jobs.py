"""The analysis jobs: one meter's day validated and estimated (cumulative and interval
channels, register readings), and the balance's alarm through a record sink."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest
from zope.interface import implementer

from fep.analysis import areas, jobs
from fep.analysis.balance import Band
from fep.analysis.series import Point
from fep.analysis.settings import RuleSet, VeeSettings
from fep.analysis.store import AnalysisStore
from fep.interfaces import IRecordSink
from fep.model import IntervalBlock, ObisCode, Record
from fep.store.sqlite import SqliteStore

Q15 = timedelta(minutes=15)
DAY = date(2026, 12, 1)
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def t(n: int) -> datetime:
    return T0 + n * Q15


class CumulativeChannelTests(unittest.TestCase):
    def test_gap_prorated_from_the_register_and_rollover_counted_through(self) -> None:
        """A five-digit register (modulus 100000) read at the end of each interval:
        reg(i) = (99510 + 10 i) mod 100000 for i = -1..95, so 10 Wh per interval, and at
        i = 49 it passes 99990 -> 0 (a rollover, consumption 10). Readings 10, 11, 12 are
        lost: missing is one run of 3 readings (02:30..03:15, t10..t13); consumption
        10..13 (4 intervals) is unknown, and the advance across the gap,
        reg(13) - reg(9) = 99640 - 99600 = 40, is prorated evenly: 10 each."""
        settings = VeeSettings(channel=ObisCode(1, 0, 1, 8, 0), modulus=D(100000))
        raw = [Point(t(i), D((99510 + 10 * i) % 100000)) for i in range(-1, 96)
               if i not in (10, 11, 12)]
        findings, estimates = jobs.validate_meter("m", RuleSet(), settings, DAY, raw)
        self.assertEqual([(f.rule, f.since, f.until) for f in findings],
                         [("missing", t(10), t(13)), ("rollover", t(49), t(50))])
        self.assertEqual([(e.start, e.value, e.method) for e in estimates],
                         [(t(i), D(10), "prorate") for i in range(10, 14)])
        self.assertIn("register advance 40", estimates[0].source)


    def test_rollover_inside_a_gap(self) -> None:
        """reg(i) = (99910 + 10 i) mod 100000 for i = -1..95 passes 99990 -> 0 at i = 9.
        Readings 8..10 are lost: the advance across the gap reg(11) - reg(7) = 20 - 99980
        is negative, plus the modulus 40: consumption 8..11 gets 10 each."""
        settings = VeeSettings(channel=ObisCode(1, 0, 1, 8, 0), modulus=D(100000))
        raw = [Point(t(i), D((99910 + 10 * i) % 100000)) for i in range(-1, 96)
               if i not in (8, 9, 10)]
        _findings, estimates = jobs.validate_meter("m", RuleSet(), settings, DAY, raw)
        self.assertEqual([(e.start, e.value) for e in estimates],
                         [(t(i), D(10)) for i in range(8, 12)])

    def test_a_register_going_back_across_a_gap_is_not_prorated(self) -> None:
        """Readings 100, (lost), 90: the register went back; no advance to share, and with
        no neighbours on both sides of consumption and no history nothing is estimated."""
        settings = VeeSettings(channel=ObisCode(1, 0, 1, 8, 0))
        raw = [Point(t(-1), D(100)), Point(t(1), D(90))]
        _findings, estimates = jobs.validate_meter("m", RuleSet(), settings, DAY, raw)
        self.assertEqual(estimates, [])


class IntervalChannelTests(unittest.TestCase):
    settings = VeeSettings()
    rule_set = RuleSet(register_tolerance=D("0.005"))

    def test_register_advance_against_the_intervals(self) -> None:
        """96 intervals of 10 Wh sum to 960; the register went 5000 -> 6000 (advance 1000):
        difference 40 > 0.5 % of 1000 = 5: a finding."""
        raw = [Point(t(i), D(10)) for i in range(96)]
        registers = [Point(t(0), D(5000)), Point(t(96), D(6000))]
        findings, _ = jobs.validate_meter("m", self.rule_set, self.settings, DAY, raw,
                                          registers)
        self.assertEqual([(f.rule, f.details["difference"]) for f in findings],
                         [("register-advance", "40")])

    def test_one_gap_prorated_from_the_days_register_advance(self) -> None:
        """Intervals 20 and 21 are missing (94 x 10 = 940 known). The register advanced
        5000 -> 5970 = 970: the gap holds 970 - 940 = 30, shared evenly 15 and 15 (the
        straight line between the neighbours would have given 10 and 10)."""
        raw = [Point(t(i), D(10)) for i in range(96) if i not in (20, 21)]
        registers = [Point(t(0), D(5000)), Point(t(96), D(5970))]
        findings, estimates = jobs.validate_meter("m", self.rule_set, self.settings, DAY, raw,
                                                  registers)
        self.assertEqual([f.rule for f in findings], ["missing"])
        self.assertEqual([(e.value, e.method) for e in estimates],
                         [(D(15), "prorate"), (D(15), "prorate")])


class HistoryTests(unittest.TestCase):
    def test_history_limits_use_complete_days_only(self) -> None:
        """Two history days: 30 Nov complete at 10 Wh per interval (960), 29 Nov with one
        interval of 10 (incomplete, left out). Today 96 x 40 = 3840 > 3 x 960: high. Were
        29 Nov counted the mean would be 485 and the finding would say so."""
        previous = T0 - timedelta(days=1)
        raw = ([Point(previous - timedelta(days=1), D(10))]
               + [Point(previous + i * Q15, D(10)) for i in range(96)]
               + [Point(t(i), D(40)) for i in range(96)])
        findings, _ = jobs.validate_meter("m", RuleSet(rules=frozenset({"history"})),
                                          VeeSettings(), DAY, raw)
        self.assertEqual([(f.rule, f.details["mean"]) for f in findings],
                         [("history-high", "960")])


class BatchTests(unittest.TestCase):
    async def test_meters_in_batches_and_chunks(self) -> None:
        """Five meters validated one at a time with two meters bound per statement give what
        one pass gives: each meter lacks its intervals 0..3 (one missing run each)."""
        from fep.analysis import store as analysis_store

        self.patch(analysis_store, "CHUNK", 2)
        store = SqliteStore(self.mktemp() + ".sqlite", reactor)
        await store.open()
        self.addCleanup(store.close)
        channel = ObisCode(1, 0, 1, 29, 0)
        await store.write([IntervalBlock(f"m{n}", channel, t(4), Q15, (D(1),) * 92)
                           for n in range(5)])
        await AnalysisStore(store).save_network(areas.read_csv(
            "area,meter\nT1,\n" + "".join(f"T1,m{n}\n" for n in range(5))))
        result = await jobs.run_vee(store, VeeSettings(), DAY, batch=1)
        self.assertEqual((result.meters, result.findings), (5, {"missing": 5}))
        found = await AnalysisStore(store).findings(T0, t(96))
        self.assertEqual(sorted(f.meter for f in found), [f"m{n}" for n in range(5)])


@implementer(IRecordSink)
class Sink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def submit(self, records: Sequence[Record]) -> Deferred[None]:
        self.records += records
        return succeed(None)


class BalanceAlarmTests(unittest.TestCase):
    async def test_the_alarm_goes_through_the_sink(self) -> None:
        """Summary 100 and member 90 every interval: loss 10 % above the band's 8 %: one
        event analysis:line-loss on the summary meter at the day's start, given to the
        sink (the router in the daemon), not written to the store directly."""
        store = SqliteStore(self.mktemp() + ".sqlite", reactor)
        await store.open()
        self.addCleanup(store.close)
        channel = ObisCode(1, 0, 1, 29, 0)
        await store.write([IntervalBlock("S", channel, T0, Q15, (D(100),) * 96),
                           IntervalBlock("A", channel, T0, Q15, (D(90),) * 96)])
        await AnalysisStore(store).save_network(areas.read_csv(
            "area,meter,role\nT1,,\nT1,S,summary\nT1,A,member\n"))
        sink = Sink()
        settings = VeeSettings(band=Band(D(0), D(8)))
        (result,) = await jobs.run_balance(store, settings, DAY, sink=sink)
        self.assertEqual(result.day.loss_rate, D("10.000"))
        (event,) = sink.records
        assert not isinstance(event, IntervalBlock)
        self.assertEqual((event.meter, event.code, event.time),
                         ("S", jobs.LOSS_ALARM, T0))
        self.assertIn("loss 10.000 % above 8 %", getattr(event, "text", ""))
        self.assertEqual(await store.events("S"), [])
