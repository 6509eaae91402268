"""Each estimation method against a small hand-worked case (energy in Wh, 15-minute
intervals); and consumption from cumulative channels, which estimation builds on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from twisted.trial import unittest

from fep.analysis import estimate
from fep.analysis.series import Point, consumption
from fep.model import Quality

Q15 = timedelta(minutes=15)
DAY = datetime(2026, 12, 7, tzinfo=UTC)  # a Monday
OBIS = "1-0:1.29.0*255"


def t(n: int, day: datetime = DAY) -> datetime:
    return day + n * Q15


def usage(values: dict[int, int], day: datetime = DAY) -> dict[datetime, Point]:
    return {t(i, day): Point(t(i, day), D(v)) for i, v in values.items()}


class InterpolationTests(unittest.TestCase):
    def test_straight_line_between_neighbours(self) -> None:
        """10 at 00:00 and 50 at 01:00, 3 missing between: step (50 - 10) / 4 = 10, so
        20, 30, 40."""
        values = estimate.interpolate([t(1), t(2), t(3)], Point(t(0), D(10)), Point(t(4), D(50)))
        self.assertEqual(values, [D(20), D(30), D(40)])

    def test_fill_interpolates_short_gaps_only(self) -> None:
        """Gap 1-2 (2 intervals) between 10 and 40: 20, 30. Gap 4-8 (5 intervals) is longer
        than max_interpolate 4 and there is no history: left missing."""
        series = usage({0: 10, 3: 40, 9: 5})
        made = estimate.fill("m", OBIS, [t(i) for i in range(10)], series, Q15,
                             max_interpolate=4)
        self.assertEqual([(e.start, e.value, e.method) for e in made],
                         [(t(1), D(20), "interpolate"), (t(2), D(30), "interpolate")])

    def test_a_gap_at_the_edge_is_not_interpolated(self) -> None:
        series = usage({1: 10})
        self.assertEqual(estimate.fill("m", OBIS, [t(0), t(1)], series, Q15,
                                       max_interpolate=4), [])


class ProfileTests(unittest.TestCase):
    def test_similar_days_prefer_the_same_weekday(self) -> None:
        """For Monday 7 Dec: Mondays 30 Nov and 23 Nov first, then the other days, most
        recent first (Sunday 6 Dec, Saturday 5 Dec)."""
        days = [DAY - timedelta(days=n) for n in (1, 2, 7, 14)]
        self.assertEqual(estimate.similar_days(DAY, days, 3),
                         [DAY - timedelta(days=7), DAY - timedelta(days=14),
                          DAY - timedelta(days=1)])

    def test_mean_of_the_same_interval_of_similar_days(self) -> None:
        """Interval 08:00 (n = 32) was 100 and 140 on the two similar days: 120. Interval
        08:15 has only 90 on one of them: 90."""
        a, b = DAY - timedelta(days=7), DAY - timedelta(days=14)
        history = {a: usage({32: 100, 33: 90}, a), b: usage({32: 140}, b)}
        self.assertEqual(estimate.profile([t(32), t(33), t(34)], history),
                         [D(120), D(90), None])

    def test_fill_uses_the_profile_for_long_gaps(self) -> None:
        a = DAY - timedelta(days=7)
        history = {a: usage({i: 10 * i for i in range(96)}, a)}
        made = estimate.fill("m", OBIS, [t(i) for i in range(8)], usage({0: 0, 7: 70}), Q15,
                             max_interpolate=2, history=history)
        self.assertEqual([(e.value, e.method) for e in made],
                         [(D(10 * i), "profile") for i in range(1, 7)])
        self.assertIn(a.date().isoformat(), made[0].source)


class ProrationTests(unittest.TestCase):
    def test_prorate_in_proportion_to_weights(self) -> None:
        """10000 Wh over weights 1, 2, 3, 4 (sum 10): 1000, 2000, 3000, 4000."""
        self.assertEqual(estimate.prorate(D(10000), [D(1), D(2), D(3), D(4)]),
                         [D(1000), D(2000), D(3000), D(4000)])

    def test_prorate_evenly_without_a_profile(self) -> None:
        """100 over 3 intervals: 33.333, 33.333 and the rest 33.334 (the sum stays 100)."""
        shares = estimate.prorate(D(100), [None, None, None])
        self.assertEqual(shares, [D("33.333"), D("33.333"), D("33.334")])
        self.assertEqual(sum(shares), D(100))

    def test_fill_prorates_a_known_advance_first(self) -> None:
        """Gap 1-2 with a known advance of 60 and no profile: 30 and 30 (not the straight
        line between the neighbours 10 and 40)."""
        made = estimate.fill("m", OBIS, [t(i) for i in range(4)], usage({0: 10, 3: 40}), Q15,
                             max_interpolate=4, advances={(t(1), t(2)): D(60)})
        self.assertEqual([(e.value, e.method) for e in made],
                         [(D(30), "prorate"), (D(30), "prorate")])


class MergeTests(unittest.TestCase):
    def test_a_real_value_wins_over_an_estimate(self) -> None:
        """Estimates for 1 and 2; a real value for 1 came in later: 1 is real, 2 estimated."""
        made = [estimate.Estimate("m", OBIS, t(1), D(99), "interpolate", ""),
                estimate.Estimate("m", OBIS, t(2), D(98), "interpolate", "")]
        merged = estimate.merge(usage({0: 10, 1: 11}), made)
        self.assertEqual([(p.value, p.status) for p in merged.values()],
                         [(D(10), Quality.OK), (D(11), Quality.OK),
                          (D(98), Quality.ESTIMATED)])


class CumulativeConsumptionTests(unittest.TestCase):
    def test_differences_of_register_readings(self) -> None:
        """Readings 1000, 1010, (missing), 1040, 1045: consumption at 1 = 10; 2 and 3 need the
        missing reading, so only 4 = 5 remains (the 30 across the gap is for proration)."""
        raw = [Point(t(0), D(1000)), Point(t(1), D(1010)), Point(t(3), D(1040)),
               Point(t(4), D(1045))]
        out = consumption(raw, Q15, cumulative=True)
        self.assertEqual({k: p.value for k, p in out.items()}, {t(1): D(10), t(4): D(5)})

    def test_rollover_is_counted_through(self) -> None:
        """Modulus 100000: 99990 -> 15 is 25 Wh, flagged OVERFLOW."""
        raw = [Point(t(0), D(99990)), Point(t(1), D(15))]
        (p,) = consumption(raw, Q15, cumulative=True, modulus=D(100000)).values()
        self.assertEqual((p.value, p.status), (D(25), Quality.OVERFLOW))
