"""The energy balance formula against hand-worked intervals, and the loss band's alarms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from twisted.trial import unittest

from fep.analysis.areas import Direction
from fep.analysis.balance import BalanceRow, Band, balance, out_of_band, rank
from fep.analysis.series import Point
from fep.model import Quality

Q15 = timedelta(minutes=15)
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def t(n: int) -> datetime:
    return T0 + n * Q15


def s(*values: int | None, estimated: tuple[int, ...] = ()) -> dict[datetime, Point]:
    return {t(i): Point(t(i), D(v), Quality.ESTIMATED if i in estimated else Quality.OK)
            for i, v in enumerate(values) if v is not None}


class BalanceTests(unittest.TestCase):
    def test_two_intervals_worked_by_hand(self) -> None:
        """Summary in: 1000, 2000; summary out (to a neighbour): 100, 200.
        Input = 900, 1800. Members a: 500, 1000; b: 355, 728 (b's second is an estimate).
        Consumption = 855, 1728. Loss = 45, 72; rates 45/900 = 5 %, 72/1800 = 4 %.
        Day: input 2700, consumption 2583, loss 117, rate 117/2700 = 4.333 %.
        Complete members: a only (b has an estimate) = 50 %; estimated values 1 of 4 = 25 %.
        """
        rows, day = balance(
            "T1", [t(0), t(1)], Q15,
            {"in": (Direction.IN, s(1000, 2000)), "out": (Direction.OUT, s(100, 200))},
            {"a": s(500, 1000), "b": s(355, 728, estimated=(1,))})
        self.assertEqual([(r.input, r.consumption, r.loss, r.loss_rate) for r in rows],
                         [(D(900), D(855), D(45), D("5.000")),
                          (D(1800), D(1728), D(72), D("4.000"))])
        self.assertEqual((day.input, day.consumption, day.loss, day.loss_rate),
                         (D(2700), D(2583), D(117), D("4.333")))
        self.assertEqual((day.complete, day.estimated, day.intervals, day.members),
                         (D("50.000"), D("25.000"), 2, 2))
        self.assertEqual(rows[1].complete, D("50.000"))

    def test_an_interval_without_every_summary_value_is_left_out(self) -> None:
        """The summary meter lacks interval 1: only interval 0 counts (input 100, members 96:
        4 %). A member lacking interval 0 counts as zero there and is not complete."""
        rows, day = balance("T1", [t(0), t(1)], Q15, {"in": (Direction.IN, s(100, None))},
                            {"a": s(96, 50), "b": s(None, 40)})
        self.assertEqual(len(rows), 1)
        self.assertEqual((day.input, day.consumption, day.loss_rate, day.intervals),
                         (D(100), D(96), D("4.000"), 1))
        self.assertEqual(day.complete, D("50.000"))

    def test_no_input_no_rate(self) -> None:
        _rows, day = balance("T1", [t(0)], Q15, {"in": (Direction.IN, s(0))}, {"a": s(0)})
        self.assertIsNone(day.loss_rate)


class BandTests(unittest.TestCase):
    def row(self, rate: str | None) -> BalanceRow:
        return BalanceRow("T1", t(0), t(96), D(100), D(100), D(0),
                          None if rate is None else D(rate), 1, D(100), D(0), 96)

    def test_alarms(self) -> None:
        band = Band(D(1), D(6))
        self.assertIsNone(out_of_band(self.row("4.0"), band))
        self.assertIsNone(out_of_band(self.row(None), band))
        self.assertIn("above 6 %", out_of_band(self.row("6.5"), band) or "")
        self.assertIn("below 1 %", out_of_band(self.row("0.5"), band) or "")
        self.assertIn("negative loss", out_of_band(self.row("-0.1"), band) or "")


def day_row(area: str, rate: str | None) -> BalanceRow:
    return BalanceRow(area, t(0), t(96), D(100), D(100), D(0),
                      None if rate is None else D(rate), 1, D(100), D(0), 96)


class RankTests(unittest.TestCase):
    def test_by_loss_and_by_change(self) -> None:
        """Today T1 4 %, T2 9 %, T3 6 %, T4 no rate; the day before T1 1 %, T2 8.5 %, T3 6 %.
        By loss: T2, T3, T1, then T4. Changes: T1 +3, T2 +0.5, T3 0, T4 none: by change
        T1, T2, T3, T4."""
        today = [day_row("T1", "4"), day_row("T2", "9"), day_row("T3", "6"),
                 day_row("T4", None)]
        before = [day_row("T1", "1"), day_row("T2", "8.5"), day_row("T3", "6")]
        self.assertEqual([r.area for r in rank(today, before)], ["T2", "T3", "T1", "T4"])
        by_change = rank(today, before, by="change")
        self.assertEqual([(r.area, r.change) for r in by_change],
                         [("T1", D(3)), ("T2", D("0.5")), ("T3", D(0)), ("T4", None)])
