"""The meter change rule (fep.analysis.rules.meter_changes, meter_change) and how the
register and rollover rules and estimation treat a day with a meter change
(fep.analysis.jobs.validate_meter). The day 2026-12-01 UTC, 15-minute intervals, energy in
Wh; each docstring works the expected values out.

The metering point M had meter A100 until 10:00 (its register 5000 at 00:00, 5600 at 10:00:
15 Wh an interval) and meter B200 from 10:15 (its register 3 at 10:15, then 10 Wh an
interval: 3 + 55 x 10 = 553 at 24:00); the serial numbers are the meters' own readings of
0-0:96.1.0."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

from twisted.trial import unittest

from fep.analysis import jobs, rules
from fep.analysis.series import Point
from fep.analysis.settings import RULE_NAMES, RuleSet, VeeSettings
from fep.model import ObisCode, Quality

Q15 = timedelta(minutes=15)
DAY = date(2026, 12, 1)
T0 = datetime(2026, 12, 1, tzinfo=UTC)
OBIS = "1-0:1.29.0*255"
SERIALS = [(T0, "A100"), (T0 + 40 * Q15, "A100"), (T0 + 41 * Q15, "B200"),
           (T0 + 96 * Q15, "B200")]


def t(n: int) -> datetime:
    return T0 + n * Q15


class MeterChangesTests(unittest.TestCase):
    def test_a_fall_with_a_new_serial_is_a_meter_change(self) -> None:
        """Register readings 5000 (00:00), 5600 (10:00), 3 (10:15), 553 (24:00). The fall
        5600 -> 3 lies between 10:00 (last serial at or before: A100) and 10:15 (first
        serial at or after: B200): a meter change over the interval between the readings,
        [10:00, 10:15), flagged COUNTER_RESET."""
        readings = [Point(t(0), D(5000)), Point(t(40), D(5600)), Point(t(41), D(3)),
                    Point(t(96), D(553))]
        changes = rules.meter_changes(readings, SERIALS)
        self.assertEqual([(c.before.start, c.after.start, c.old_serial, c.new_serial)
                          for c in changes], [(t(40), t(41), "A100", "B200")])
        found = rules.meter_change("M", OBIS, changes[0], t(0), t(96), Q15,
                                   register="1-0:1.8.0*255")
        self.assertEqual([(f.rule, f.since, f.until, f.flag) for f in found],
                         [(rules.METER_CHANGE, t(40), t(41), Quality.COUNTER_RESET)])
        self.assertEqual((found[0].details["last_old"], found[0].details["first_new"]),
                         ("5600", "3"))

    def test_no_meter_change_without_a_new_serial(self) -> None:
        """The same fall with A100 on both sides is no meter change (it is reverse energy
        or a rollover, for those rules); a fall with no serial after it neither; a new
        serial where the register went up is no reset."""
        readings = [Point(t(40), D(5600)), Point(t(41), D(3))]
        self.assertEqual(rules.meter_changes(readings, [(t(0), "A100"), (t(41), "A100")]),
                         [])
        self.assertEqual(rules.meter_changes(readings, [(t(0), "A100")]), [])
        up = [Point(t(40), D(5600)), Point(t(41), D(7000))]
        self.assertEqual(rules.meter_changes(up, SERIALS), [])

    def test_daily_readings_only_place_the_change_over_the_day(self) -> None:
        """Readings only at 00:00 (5000, A100) and 24:00 (553, B200): the change is
        somewhere in the day, [00:00, 24:00)."""
        changes = rules.meter_changes([Point(t(0), D(5000)), Point(t(96), D(553))],
                                      [(t(0), "A100"), (t(96), "B200")])
        found = rules.meter_change("M", OBIS, changes[0], t(0), t(96), Q15, register="r")
        self.assertEqual([(f.since, f.until) for f in found], [(t(0), t(96))])


class CumulativeChannelTests(unittest.TestCase):
    """The channel is the register itself (1-0:1.8.0, the value at each interval's end),
    with a modulus of 10000 so that the fall 5600 -> 3 (5597 > 5000) would
    pass for a rollover: reg(-1) = 5000 (00:00), reg(i) = 5000 + 15 (i + 1) for i = 0..39
    (5600 at 10:00), reg(40) = 3 (10:15, B200), reg(i) = 3 + 10 (i - 40) to reg(95) = 553."""

    settings = VeeSettings(channel=ObisCode(1, 0, 1, 8, 0), modulus=D(10000))
    raw = ([Point(t(-1), D(5000))] + [Point(t(i), D(5000 + 15 * (i + 1))) for i in range(40)]
           + [Point(t(i), D(3 + 10 * (i - 40))) for i in range(40, 96)])

    def test_the_change_is_no_rollover_and_its_interval_is_estimated(self) -> None:
        """The change's interval 40 (10:00-10:15, its consumption 3 - 5600 no energy) is a
        meter-change finding, not a rollover; it is estimated like a lost one, by a
        straight line between 15 (09:45) and 10 (10:15): 12.5."""
        findings, estimates = jobs.validate_meter("M", RuleSet(), self.settings, DAY,
                                                  self.raw, serials=SERIALS)
        self.assertEqual([(f.rule, f.since, f.until) for f in findings],
                         [(rules.METER_CHANGE, t(40), t(41))])
        self.assertEqual([(e.start, e.value, e.method) for e in estimates],
                         [(t(40), D("12.5"), "interpolate")])

    def test_without_the_rule_the_fall_is_a_rollover(self) -> None:
        """Without ``meter-change`` the fall is taken for a rollover: advance
        3 + 10000 - 5600 = 4403."""
        rule_set = RuleSet(rules=frozenset(RULE_NAMES) - {"meter-change"})
        findings, _ = jobs.validate_meter("M", rule_set, self.settings, DAY, self.raw,
                                          serials=SERIALS)
        self.assertEqual([(f.rule, f.since, f.details.get("advance")) for f in findings],
                         [(rules.ROLLOVER, t(40), "4403")])


class IntervalChannelTests(unittest.TestCase):
    """The interval channel: 15 Wh in intervals 0..39, nothing in 40 (the meter being
    replaced), 10 Wh in 41..95. Register readings 5000 (00:00), 5600 (10:00), 3 (10:15)
    and the day's end reading."""

    settings = VeeSettings()
    rule_set = RuleSet(register_tolerance=D("0.005"))
    raw = ([Point(t(i), D(15)) for i in range(40)]
           + [Point(t(i), D(10)) for i in range(41, 96)])

    def registers(self, end: int) -> list[Point]:
        return [Point(t(0), D(5000)), Point(t(40), D(5600)), Point(t(41), D(3)),
                Point(t(96), D(end))]

    def test_the_register_advance_is_split_at_the_change(self) -> None:
        """End reading 553: A100 advanced 5600 - 5000 = 600 over 00:00-10:00 (40 x 15 =
        600), B200 553 - 3 = 550 over 10:15-24:00 (55 x 10 = 550): 1150 against 1150, no
        register finding (the plain end - start, -4447, is no advance at all). The findings
        are the
        missing interval and the meter change; the missing interval is interpolated (15,
        10: 12.5), not prorated from the day's register advance."""
        findings, estimates = jobs.validate_meter("M", self.rule_set, self.settings, DAY,
                                                  self.raw, self.registers(553), SERIALS)
        self.assertEqual([(f.rule, f.since, f.until) for f in findings],
                         [(rules.METER_CHANGE, t(40), t(41)), (rules.MISSING, t(40), t(41))])
        self.assertEqual(findings[0].details["register"], "1-0:1.8.0*255")
        self.assertEqual([(e.value, e.method) for e in estimates],
                         [(D("12.5"), "interpolate")])

    def test_a_mismatch_after_the_change_is_still_found(self) -> None:
        """End reading 653: B200 advanced 650 against 550 of intervals; the advance is
        600 + 650 = 1250 against 1150, difference 100 > 0.5 % of 1250 = 6.25: a finding
        with both advances."""
        findings, _ = jobs.validate_meter("M", self.rule_set, self.settings, DAY, self.raw,
                                          self.registers(653), SERIALS)
        register = [f for f in findings if f.rule == rules.REGISTER]
        self.assertEqual([(f.details["advance"], f.details["intervals"],
                           f.details["difference"], f.details["advance_before"],
                           f.details["advance_after"]) for f in register],
                         [("1250", "1150", "100", "600", "650")])

    def test_daily_readings_give_no_advance_to_compare(self) -> None:
        """Registers read only at 00:00 (5000, A100) and 24:00 (553, B200), every interval
        present: the change is somewhere in the day, so neither meter's advance is known
        from the readings: no register finding (and no prorating), the meter change over
        the whole day."""
        raw = [Point(t(i), D(10)) for i in range(96)]
        findings, _ = jobs.validate_meter(
            "M", self.rule_set, self.settings, DAY, raw,
            [Point(t(0), D(5000)), Point(t(96), D(553))], [(t(0), "A100"), (t(96), "B200")])
        self.assertEqual([(f.rule, f.since, f.until) for f in findings],
                         [(rules.METER_CHANGE, t(0), t(96))])
