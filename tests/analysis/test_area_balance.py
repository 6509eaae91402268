"""A simulated transformer area in a real store (SQLite and PostgreSQL): a summary meter and 50
members with a known 4 % technical loss, one member bypassed on the last day.

Each member's interval consumption is a random load (40..160 Wh per 15 minutes, a fixed
seed); the summary meter measures what the members really took plus the loss:
``input = round(consumption / 0.96)``, so ``(input - consumption) / input`` is 4 % up to the
rounding of one Wh per interval. On the last day member M17 is bypassed: the consumer still
draws (the summary meter sees it) but the meter records nothing, so the area loses about
another 2 % (one member of 50) and leaves its band of 2..5 %.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest
from zope.interface import implementer

from fep.analysis import areas, jobs
from fep.analysis.balance import Band
from fep.analysis.settings import RuleSet, VeeSettings
from fep.analysis.store import AnalysisStore
from fep.interfaces import IRecordSink
from fep.model import IntervalBlock, Meter, ObisCode, Quality, Reading, Record
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.postgres import fresh_database

CHANNEL = ObisCode(1, 0, 1, 29, 0)
Q15 = timedelta(minutes=15)
DAYS = [date(2026, 11, 30) + timedelta(days=n) for n in range(4)]  # Mon 30 Nov .. Thu 3 Dec
BYPASS_DAY = DAYS[-1]
MEMBERS = [f"M{n:02d}" for n in range(1, 51)]
BYPASSED = "M17"
# Intervals removed from the store, then re-collected: a short gap (interpolated) and a
# long one (estimated from the profile of similar days).
SHORT_GAP = ("M05", range(10, 13))
LONG_GAP = ("M06", range(40, 72))
GAP_DAY = DAYS[2]


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def true_load() -> dict[tuple[str, date], list[int]]:
    rng = random.Random(21)
    return {(m, day): [rng.randint(40, 160) for _ in range(96)] for day in DAYS
            for m in MEMBERS}


def recorded(load: dict[tuple[str, date], list[int]], meter: str, day: date) -> list[int]:
    """What ``meter`` records for ``day`` (Wh per interval): the summary meter what the
    members took plus the loss, the bypassed member nothing (zeros) on the bypass day."""
    if meter == "SUM":
        return [round(sum(load[(m, day)][i] for m in MEMBERS) / D("0.96")) for i in range(96)]
    if meter == BYPASSED and day == BYPASS_DAY:
        return [0] * 96
    return load[(meter, day)]


def blocks(load: dict[tuple[str, date], list[int]], *, removed: bool) -> list[IntervalBlock]:
    out = []
    for day in DAYS:
        start = midnight(day)
        out.append(IntervalBlock("SUM", CHANNEL, start, Q15,
                                 tuple(D(v) for v in recorded(load, "SUM", day))))
        for m in MEMBERS:
            values = [D(v) for v in recorded(load, m, day)]
            gaps = [g for (meter, g) in (SHORT_GAP, LONG_GAP) if meter == m]
            if removed and day == GAP_DAY and gaps:
                # Stored as the runs around the gap, as a meter read in pieces would be.
                cut = set(gaps[0])
                run: list[int] = []
                for i in [*range(96), None]:
                    if i is not None and i not in cut:
                        run.append(i)
                        continue
                    if run:
                        out.append(IntervalBlock(m, CHANNEL, start + run[0] * Q15, Q15,
                                                 tuple(values[k] for k in run)))
                    run = []
            else:
                out.append(IntervalBlock(m, CHANNEL, start, Q15, tuple(values)))
    return out


def areas_csv() -> str:
    """The area as `fep areas import` takes it: T1 with SUM (in) and the 50 members."""
    rows = ["area,name,kind,parent,meter,role,direction,phase",
            "T1,Transformer 1,transformer,,,,,", "T1,,,,SUM,summary,in,"]
    rows += [f"T1,,,,{m},member,,{'ABC'[n % 3]}" for n, m in enumerate(MEMBERS)]
    return "\n".join(rows) + "\n"


def network() -> areas.Network:
    return areas.read_csv(areas_csv())


# Members: at most 1 kWh per interval; the summary meter (group "summary") has no upper limit.
SETTINGS = VeeSettings(
    rule_sets={"default": RuleSet(high=D(1000), spike_factor=D(10), spike_floor=D(1000)),
               "summary": RuleSet(name="summary", high=None)},
    band=Band(D(2), D(5)), max_interpolate=4, similar_days=2)


class AreaBalanceBehaviours:
    """The simulated area, on whichever store ``new_store`` gives."""

    def new_store(self) -> Any:
        raise NotImplementedError

    async def loaded(self) -> tuple[Any, AnalysisStore, dict[tuple[str, date], list[int]]]:
        store = self.new_store()
        await store.open()
        self.addCleanup(store.close)
        await store.add_meters([Meter(m, "dlms", f"tcp:host=10.0.0.1:port={n + 4000}",
                                      metadata={"group": "summary"} if m == "SUM" else {})
                                for n, m in enumerate(["SUM", *MEMBERS])])
        analysis = AnalysisStore(store)
        await analysis.save_network(network())
        load = true_load()
        await store.write(blocks(load, removed=True))
        return store, analysis, load

    async def test_loss_on_complete_days_and_the_bypassed_meters_area(self) -> None:
        store, analysis, _load = await self.loaded()
        for day in DAYS[:2]:
            (result,) = await jobs.run_balance(store, SETTINGS, day)
            assert result.day.loss_rate is not None
            # Complete days: every member has every interval.
            self.assertEqual(result.day.complete, D(100))
            self.assertEqual(result.day.intervals, 96)
            self.assertLess(abs(result.day.loss_rate - 4), D("0.2"))
            self.assertIsNone(result.alarm)
        (bypassed,) = await jobs.run_balance(store, SETTINGS, BYPASS_DAY, area="T1")
        assert bypassed.day.loss_rate is not None
        self.assertGreater(bypassed.day.loss_rate, 5)
        self.assertIn("area T1", bypassed.alarm or "")
        events = await store.events("SUM")
        self.assertEqual([(e.code, e.time) for e in events],
                         [(jobs.LOSS_ALARM, midnight(BYPASS_DAY))])
        stored = await analysis.balances(midnight(DAYS[0]), midnight(DAYS[-1]) + timedelta(1))
        self.assertEqual([r.since.date() for r in stored], [*DAYS[:2], BYPASS_DAY])

    async def test_month_is_the_sum_of_its_days(self) -> None:
        """December holds three of the four days (1..3 Dec): the month's input, consumption
        and loss are the sums of those days' (288 intervals), and a month raises no alarm
        even though the bypass day does."""
        store, _analysis, _load = await self.loaded()
        days = [(await jobs.run_balance(store, SETTINGS, day, sink=Sink()))[0].day
                for day in DAYS[1:]]
        sink = Sink()
        (month,) = await jobs.run_balance(store, SETTINGS, date(2026, 12, 1),
                                          end=date(2027, 1, 1), sink=sink)
        self.assertEqual(month.day.intervals, 288)
        self.assertEqual((month.day.input, month.day.consumption, month.day.loss),
                         (sum(d.input for d in days), sum(d.consumption for d in days),
                          sum(d.loss for d in days)))
        self.assertEqual((month.day.since, month.day.until),
                         (midnight(date(2026, 12, 1)), midnight(date(2027, 1, 1))))
        self.assertEqual(sink.records, [])

    async def test_estimates_fill_gaps_until_the_real_values_come(self) -> None:
        store, analysis, load = await self.loaded()
        since, until = midnight(GAP_DAY), midnight(GAP_DAY) + timedelta(days=1)
        stored_before = await store.intervals("M05")
        result = await jobs.run_vee(store, SETTINGS, GAP_DAY)
        # What the meters sent is left as it was; the flags are kept beside it.
        self.assertEqual(await store.intervals("M05"), stored_before)
        flags = await analysis.flags("M06", str(CHANNEL), since, until)
        self.assertEqual(sorted(flags), [since + i * Q15 for i in LONG_GAP[1]])
        self.assertEqual(set(flags.values()), {Quality.MISSING})
        self.assertEqual(result.meters, 51)
        self.assertEqual(result.findings, {"missing": 2})
        made = await analysis.estimates(["M05", "M06"], str(CHANNEL), since, until)
        self.assertEqual({e.method for e in made["M05"]}, {"interpolate"})
        self.assertEqual(len(made["M05"]), 3)
        self.assertEqual({e.method for e in made["M06"]}, {"profile"})
        self.assertEqual(len(made["M06"]), 32)
        # The interpolated values lie on the line between the neighbours 09 and 13.
        before, after = load[("M05", GAP_DAY)][9], load[("M05", GAP_DAY)][13]
        self.assertEqual(made["M05"][0].value,
                         (D(before) + (D(after) - D(before)) / 4).quantize(D("0.001")))
        findings = await analysis.findings(since, until, "M06")
        self.assertEqual([(f.rule, f.since, f.until) for f in findings],
                         [("missing", since + 40 * Q15, since + 72 * Q15)])

        (estimated,) = await jobs.run_balance(store, SETTINGS, GAP_DAY)
        self.assertEqual(estimated.day.complete, D(96))
        self.assertGreater(estimated.day.estimated, 0)
        assert estimated.day.loss_rate is not None
        self.assertLess(abs(estimated.day.loss_rate - 4), D("0.2"))

        # Re-collected: the real values are written; at once they win over the estimates.
        await store.write([b for b in blocks(load, removed=False)
                           if b.meter in ("M05", "M06") and b.start == since])
        (real,) = await jobs.run_balance(store, SETTINGS, GAP_DAY)
        self.assertEqual((real.day.complete, real.day.estimated), (D(100), D(0)))
        # And the next run of the day removes the estimates and the missing findings.
        again = await jobs.run_vee(store, SETTINGS, GAP_DAY)
        self.assertNotIn("missing", again.findings)
        left = await analysis.estimates(["M05", "M06"], str(CHANNEL), since, until)
        self.assertEqual(dict(left), {})

    async def test_register_advance_against_the_stored_intervals(self) -> None:
        """The summary meter's register read at both midnights of the first day: advance =
        the day's intervals + 5000 Wh, beyond 0.5 % of about 500 kWh (about 2600 Wh): one
        register-advance finding, on SUM only."""
        store, analysis, load = await self.loaded()
        day, since = DAYS[0], midnight(DAYS[0])
        intervals = sum(round(sum(load[(m, day)][i] for m in MEMBERS) / D("0.96"))
                        for i in range(96))
        register = ObisCode(1, 0, 1, 8, 0)
        await store.write([
            Reading("SUM", register, D(1000000), meter_time=since),
            Reading("SUM", register, D(1000000 + intervals + 5000),
                    meter_time=since + timedelta(days=1))])
        found = await analysis.registers(["SUM", "M01"], str(register), since,
                                         since + timedelta(days=1))
        self.assertEqual([p.value for p in found["SUM"]],
                         [D(1000000), D(1000000 + intervals + 5000)])
        self.assertEqual(found["M01"], [])
        result = await jobs.run_vee(store, SETTINGS, day)
        self.assertEqual(result.findings, {"register-advance": 1})
        (finding,) = await analysis.findings(since, since + timedelta(days=1))
        self.assertEqual((finding.meter, finding.details["difference"]), ("SUM", "5000"))

    async def test_network_round_trips_through_the_store(self) -> None:
        _store, analysis, _load = await self.loaded()
        stored = await analysis.network()
        self.assertEqual(stored.areas, network().areas)
        self.assertEqual(set(stored.meters), set(network().meters))


@implementer(IRecordSink)
class Sink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def submit(self, records: Sequence[Record]) -> Deferred[None]:
        self.records += records
        return succeed(None)


class SqliteAreaBalanceTests(AreaBalanceBehaviours, unittest.TestCase):
    def new_store(self) -> SqliteStore:
        return SqliteStore(self.mktemp() + ".sqlite", reactor)


class PostgresAreaBalanceTests(AreaBalanceBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)

