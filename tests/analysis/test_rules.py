"""Each validation rule against a small hand-worked case; the expected values are worked out
in the docstrings (energy in Wh, 15-minute intervals from 2026-12-01 00:00 UTC)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

from twisted.trial import unittest

from fep.analysis import rules
from fep.analysis.series import Point
from fep.model import IntervalBlock, ObisCode, Quality

Q15 = timedelta(minutes=15)
T0 = datetime(2026, 12, 1, tzinfo=UTC)
OBIS = "1-0:1.29.0*255"


def t(n: int) -> datetime:
    return T0 + n * Q15


def series(*values: int | str | None, status: dict[int, Quality] | None = None) -> list[Point]:
    return [Point(t(i), None if v is None else D(v), (status or {}).get(i, Quality.OK))
            for i, v in enumerate(values)]


class MissingTests(unittest.TestCase):
    def test_runs_of_absent_intervals_are_one_finding_each(self) -> None:
        """Grid 00:00..02:00 = 8 intervals (0..7). Present: 0, 1, 4, 6 (5 has no value).
        Missing: 2-3 (2 intervals, 00:30..01:00), 5 (00:15 long, 01:15..01:30), 7
        (01:45..02:00)."""
        points = [Point(t(0), D(1)), Point(t(1), D(1)), Point(t(4), D(1)), Point(t(5), None),
                  Point(t(6), D(1))]
        found = rules.missing("m", OBIS, points, t(0), t(8), Q15)
        self.assertEqual([(f.since, f.until, f.details["intervals"]) for f in found],
                         [(t(2), t(4), 2), (t(5), t(6), 1), (t(7), t(8), 1)])
        self.assertEqual({f.flag for f in found}, {Quality.MISSING})

    def test_a_complete_series_has_none(self) -> None:
        self.assertEqual(rules.missing("m", OBIS, series(1, 2, 3, 4), t(0), t(4), Q15), [])


class LimitTests(unittest.TestCase):
    def test_values_above_high_and_below_low(self) -> None:
        """high 100, low 0: 150 (interval 1) is above, -5 (interval 3) below; 100 and 0 are
        within (the limits are inclusive)."""
        found = rules.limits("m", OBIS, series(100, 150, 0, -5), Q15, high=D(100), low=D(0))
        self.assertEqual([(f.rule, f.since, f.details["value"]) for f in found],
                         [(rules.HIGH, t(1), "150"), (rules.LOW, t(3), "-5")])
        self.assertTrue(all(f.flag == Quality.SUSPECT for f in found))

    def test_spike_against_the_meters_own_history(self) -> None:
        """History 10, 20, 30, 40: mean 25. Factor 4: limit 100. Today 99 is not a spike,
        101 is; floor 50 does not raise the limit (100 > 50)."""
        history = [Point(t(i - 8), D(v)) for i, v in enumerate((10, 20, 30, 40))]
        found = rules.spikes("m", OBIS, series(99, 101), Q15, history=history, factor=D(4),
                             floor=D(50))
        self.assertEqual([(f.since, f.details["mean"]) for f in found], [(t(1), "25")])

    def test_spike_floor_keeps_an_idle_meter_quiet(self) -> None:
        """History mean 1, factor 4: limit 4, but the floor 500 makes it 500: 300 passes."""
        history = [Point(t(-1), D(1))]
        self.assertEqual(rules.spikes("m", OBIS, series(300), Q15, history=history,
                                      factor=D(4), floor=D(500)), [])

    def test_no_history_no_spike(self) -> None:
        self.assertEqual(rules.spikes("m", OBIS, series(10**6), Q15, history=[], factor=D(2),
                                      floor=D(0)), [])

    def test_day_total_relative_to_history(self) -> None:
        """History totals 10, 12, 8 kWh: mean 10. High factor 3: above 30 is high (31 is);
        low factor 0.2: below 2 is low (1.5 is); 2 is within."""
        history = [D(10000), D(12000), D(8000)]
        day = date(2026, 12, 1)

        def check(day_total: int) -> list[str]:
            return [f.rule for f in rules.history_limits(
                "m", OBIS, day, D(day_total), history_totals=history, high_factor=D(3),
                low_factor=D("0.2"))]

        self.assertEqual(check(31000), [rules.HISTORY_HIGH])
        self.assertEqual(check(1500), [rules.HISTORY_LOW])
        self.assertEqual(check(2000), [])
        found = rules.history_limits("m", OBIS, day, D(31000), history_totals=history,
                                     high_factor=D(3), low_factor=D("0.2"))[0]
        self.assertEqual((found.since, found.until), (T0, T0 + timedelta(days=1)))


class ZeroConsumptionTests(unittest.TestCase):
    def test_n_days_of_zero_in_a_row(self) -> None:
        """Days 1..6: 5, 0, 0, 0, 7, 0. N = 3: days 2-4 are one finding (3 days); day 6 alone
        is too short."""
        totals = {date(2026, 12, d): D(v) for d, v in zip(range(1, 7), (5, 0, 0, 0, 7, 0),
                                                              strict=True)}
        found = rules.zero_consumption("m", OBIS, totals, days=3)
        self.assertEqual([(f.since.date(), f.until.date(), f.details["days"]) for f in found],
                         [(date(2026, 12, 2), date(2026, 12, 5), 3)])

    def test_a_day_without_data_breaks_the_run(self) -> None:
        totals = {date(2026, 12, 1): D(0), date(2026, 12, 2): None, date(2026, 12, 3): D(0)}
        self.assertEqual(rules.zero_consumption("m", OBIS, totals, days=2), [])

    def test_a_missing_day_breaks_the_run(self) -> None:
        totals = {date(2026, 12, 1): D(0), date(2026, 12, 3): D(0)}
        self.assertEqual(rules.zero_consumption("m", OBIS, totals, days=2), [])


class ReverseAndRolloverTests(unittest.TestCase):
    def test_negative_consumption_runs(self) -> None:
        """Values 5, -2, -3, 4, -1: runs 1-2 (energy -5) and 4 (energy -1)."""
        found = rules.reverse_energy("m", OBIS, series(5, -2, -3, 4, -1), Q15)
        self.assertEqual([(f.since, f.until, f.details["energy"]) for f in found],
                         [(t(1), t(3), "-5"), (t(4), t(5), "-1")])

    def test_rollover_of_a_register(self) -> None:
        """Modulus 100000 (a five-digit register): 99990 -> 20 fell by 99970 > 50000, a
        rollover with advance 20 + 100000 - 99990 = 30; 20 -> 10 fell by 10: no rollover
        (that is reverse energy)."""
        found = rules.rollovers("m", OBIS, series(99980, 99990, 20, 10), Q15,
                                modulus=D(100000))
        self.assertEqual([(f.since, f.details["advance"], f.flag) for f in found],
                         [(t(2), "30", Quality.OVERFLOW)])


class RegisterAdvanceTests(unittest.TestCase):
    def check(self, end: int, interval_sum: int) -> list[rules.Finding]:
        return rules.register_advance("m", OBIS, t(0), t(96), start_reading=D(1000000),
                                      end_reading=D(end), interval_sum=D(interval_sum),
                                      tolerance=D("0.01"), tolerance_abs=D(50))

    def test_within_tolerance(self) -> None:
        """Advance 1010000 - 1000000 = 10000; 1 % of it is 100 (above the absolute 50);
        intervals 9901 differ by 99: within."""
        self.assertEqual(self.check(1010000, 9901), [])

    def test_beyond_tolerance(self) -> None:
        """Advance 10000, intervals 9899: difference 101 > 100: a finding."""
        (found,) = self.check(1010000, 9899)
        self.assertEqual(dict(found.details), {"advance": "10000", "intervals": "9899",
                                               "difference": "101", "allowed": "100"})

    def test_absolute_tolerance_for_small_advances(self) -> None:
        """Advance 1000: 1 % is 10, the absolute 50 wins: intervals 955 (difference 45)
        pass, 949 (51) do not."""
        self.assertEqual(self.check(1001000, 955), [])
        self.assertEqual(len(self.check(1001000, 949)), 1)


class DuplicateAndShiftTests(unittest.TestCase):
    def test_duplicate_with_another_value_and_a_shifted_block(self) -> None:
        """Block A: 00:00, 00:15 = 1, 2. Block B repeats 00:15 with 3 (a duplicate) and
        00:30 = 4. Block C starts at 00:47: 2 minutes off the grid (offset 120 s)."""
        obis = ObisCode(1, 0, 1, 29, 0)
        a = IntervalBlock("m", obis, t(0), Q15, (D(1), D(2)))
        b = IntervalBlock("m", obis, t(1), Q15, (D(3), D(4)))
        same = IntervalBlock("m", obis, t(0), Q15, (D(1),))
        c = IntervalBlock("m", obis, t(3) + timedelta(minutes=2), Q15, (D(5),))
        found = rules.duplicates_and_shifts("m", [a, b, same, c])
        self.assertEqual([(f.rule, f.since) for f in found],
                         [(rules.DUPLICATE, t(1)), (rules.SHIFTED, t(3) + timedelta(minutes=2))])
        self.assertEqual(dict(found[0].details), {"first": "2", "again": "3"})
        self.assertEqual(found[1].details["offset_s"], 120)


class StatusFlagTests(unittest.TestCase):
    def test_power_down_and_clock_invalid_runs(self) -> None:
        """Statuses: 1-2 power down, 3 clock invalid and power down."""
        points = series(1, 0, 0, 1, 1, status={
            1: Quality.POWER_DOWN, 2: Quality.POWER_DOWN,
            3: Quality.CLOCK_INVALID | Quality.POWER_DOWN})
        found = rules.status_flags("m", OBIS, points, Q15)
        self.assertEqual([(f.rule, f.since, f.until) for f in found],
                         [(rules.POWER_DOWN, t(1), t(4)), (rules.CLOCK_INVALID, t(3), t(4))])

    def test_flags_by_interval_or_the_findings(self) -> None:
        """A spike on 1 and a power down on 1-2: interval 1 is SUSPECT|POWER_DOWN."""
        spike = rules.Finding(rules.SPIKE, "m", OBIS, t(1), t(2), Quality.SUSPECT)
        down = rules.Finding(rules.POWER_DOWN, "m", OBIS, t(1), t(3), Quality.POWER_DOWN)
        flags = rules.flags_by_interval([spike, down], Q15)
        self.assertEqual(flags, {("m", OBIS, t(1)): Quality.SUSPECT | Quality.POWER_DOWN,
                                 ("m", OBIS, t(2)): Quality.POWER_DOWN})
