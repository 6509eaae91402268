"""Outage analysis (fep.analysis.outages): hand-worked examples, one behaviour per test.

The day is 2026-12-01 UTC; ``t(h, m)`` is a time of it; intervals are 15 minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from twisted.trial import unittest

from fep.analysis.outages import (
    Outage,
    area_outages,
    event_outages,
    flag_outages,
    indices,
    meter_outages,
)
from fep.analysis.series import Point
from fep.model import EventKind, MeterEvent, Quality, Severity

SINCE = datetime(2026, 12, 1, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=1)
Q15 = timedelta(minutes=15)


def t(h: int, m: int = 0, s: int = 0) -> datetime:
    return SINCE + timedelta(hours=h, minutes=m, seconds=s)


def down(meter: str, at: datetime, code: str = "power-down") -> MeterEvent:
    return MeterEvent(meter, code, EventKind.POWER_OUTAGE, Severity.MAJOR, at)


def up(meter: str, at: datetime) -> MeterEvent:
    return MeterEvent(meter, "power-up", EventKind.POWER_RESTORED, Severity.INFO, at)


class EventOutageTests(unittest.TestCase):
    def test_down_then_up_is_one_outage(self) -> None:
        """Down 10:00, up 10:40: one outage of 40 minutes."""
        found = event_outages("M", [down("M", t(10)), up("M", t(10, 40))], SINCE, UNTIL)
        self.assertEqual(found, [Outage("M", t(10), t(10, 40))])
        self.assertEqual(found[0].duration, timedelta(minutes=40))

    def test_a_second_down_while_out_is_ignored(self) -> None:
        """A last gasp at 10:00 and a power-down log entry at 10:00:02, up at 10:30: one
        outage from the first down."""
        found = event_outages("M", [down("M", t(10), "last-gasp"), down("M", t(10, 0, 2)),
                                    up("M", t(10, 30))], SINCE, UNTIL)
        self.assertEqual(found, [Outage("M", t(10), t(10, 30))])

    def test_an_up_without_a_down_is_ignored(self) -> None:
        self.assertEqual(event_outages("M", [up("M", t(3))], SINCE, UNTIL), [])

    def test_an_outage_open_at_the_end_is_cut_there(self) -> None:
        """Down 23:50, no up in the day: 10 minutes, cut at the end (so sustained)."""
        found = event_outages("M", [down("M", t(23, 50)), up("M", UNTIL + Q15)], SINCE, UNTIL)
        self.assertEqual(found, [Outage("M", t(23, 50), UNTIL, cut_end=True)])
        self.assertFalse(found[0].momentary())

    def test_an_outage_from_the_day_before_is_cut_at_the_start(self) -> None:
        """Down the day before at 23:00, up 00:20: 20 minutes in the day; an outage over
        before the day is not in it."""
        found = event_outages("M", [down("M", SINCE - timedelta(hours=3)),
                                    up("M", SINCE - timedelta(hours=2)),
                                    down("M", SINCE - timedelta(hours=1)), up("M", t(0, 20))],
                              SINCE, UNTIL)
        self.assertEqual(found, [Outage("M", SINCE, t(0, 20), cut_start=True)])


def points(flags: dict[int, Quality], present: range) -> list[Point]:
    return [Point(SINCE + i * Q15, D(1), flags.get(i, Quality.OK)) for i in present]


class FlagOutageTests(unittest.TestCase):
    def test_a_run_of_flagged_intervals(self) -> None:
        """Intervals 4 and 5 (01:00, 01:15) flagged power down: one outage 01:00-01:30."""
        pd = Quality.POWER_DOWN
        found = flag_outages("M", points({4: pd, 5: pd}, range(96)), SINCE, UNTIL, Q15)
        self.assertEqual(found, [Outage("M", t(1), t(1, 30), "flags")])

    def test_unrecorded_intervals_between_flags_join_the_run(self) -> None:
        """Flagged 4, nothing recorded 5-7, flagged 8 (the restore): one outage 01:00-02:15;
        flagged 20 alone, after recorded intervals: another, 05:00-05:15."""
        pd = Quality.POWER_DOWN
        present = [i for i in range(96) if i not in (5, 6, 7)]
        found = flag_outages("M", [p for p in points({4: pd, 8: pd, 20: pd}, range(96))
                                   if (p.start - SINCE) // Q15 in present], SINCE, UNTIL, Q15)
        self.assertEqual(found, [Outage("M", t(1), t(2, 15), "flags"),
                                 Outage("M", t(5), t(5, 15), "flags")])

    def test_a_run_at_the_end_of_the_day_is_cut(self) -> None:
        found = flag_outages("M", points({95: Quality.POWER_DOWN}, range(96)), SINCE, UNTIL,
                             Q15)
        self.assertEqual(found, [Outage("M", t(23, 45), UNTIL, "flags", cut_end=True)])

    def test_flags_count_only_where_no_event_outage_overlaps(self) -> None:
        """Events say 01:05-01:20; the flags on 01:00 and 01:15 are the same outage. The flag
        on 05:00 has no event: it adds an outage from the flags."""
        pd = Quality.POWER_DOWN
        found = meter_outages("M", [down("M", t(1, 5)), up("M", t(1, 20))],
                              points({4: pd, 5: pd, 20: pd}, range(96)), SINCE, UNTIL, Q15)
        self.assertEqual(found, [Outage("M", t(1, 5), t(1, 20)),
                                 Outage("M", t(5), t(5, 15), "flags")])


class AreaOutageTests(unittest.TestCase):
    members = [f"M{i:02}" for i in range(10)]

    def test_half_the_members_out_at_once(self) -> None:
        """10 members, share 50 %: M00-M04 out 10:00-10:40 and M05 10:10-10:20. Five are out
        from 10:00 (the share is met), six at 10:10 (the peak), five again from 10:20, none
        from 10:40: one area outage 10:00-10:40 of six meters."""
        outs = [Outage(m, t(10), t(10, 40)) for m in self.members[:5]]
        outs.append(Outage("M05", t(10, 10), t(10, 20)))
        found = area_outages("T1", self.members, outs)
        self.assertEqual(len(found), 1)
        self.assertEqual((found[0].since, found[0].until, found[0].peak), (t(10), t(10, 40), 6))
        self.assertEqual(found[0].meters, tuple(self.members[:6]))
        self.assertEqual(found[0].duration, timedelta(minutes=40))

    def test_staggered_restore_ends_when_the_share_is_lost(self) -> None:
        """Six out at 10:00, restored at 10:30, 10:31, ... 10:35: five remain until 10:31,
        four from 10:31: the area outage is 10:00-10:31."""
        outs = [Outage(m, t(10), t(10, 30 + i)) for i, m in enumerate(self.members[:6])]
        found = area_outages("T1", self.members, outs)
        self.assertEqual([(a.since, a.until) for a in found], [(t(10), t(10, 31))])

    def test_fewer_than_the_share_is_no_area_outage(self) -> None:
        """Four of ten out at once, 40 % < 50 %; with a share of 40 % it is one."""
        outs = [Outage(m, t(10), t(10, 40)) for m in self.members[:4]]
        self.assertEqual(area_outages("T1", self.members, outs), [])
        self.assertEqual(len(area_outages("T1", self.members, outs, share=D("0.4"))), 1)

    def test_outages_not_at_the_same_time_are_not_an_area_outage(self) -> None:
        """Five members out one after the other, each for 10 minutes: never five at once."""
        outs = [Outage(m, t(10 + i), t(10 + i, 10)) for i, m in enumerate(self.members[:5])]
        self.assertEqual(area_outages("T1", self.members, outs), [])


class IndexTests(unittest.TestCase):
    def test_the_indices_of_a_day(self) -> None:
        """4 customers. A: 60 min and a 2 min blink; B: 30 min; C: 5 min exactly (momentary,
        IEEE 1366: 5 minutes or less); D: nothing. Sustained: A 60, B 30 → SAIFI 2/4 = 0.5,
        SAIDI 90/4 = 22.5 min, CAIDI 90/2 = 45 min; momentary: A's blink and C → MAIFI
        2/4 = 0.5. An outage of a meter not in the set does not count."""
        outs = [Outage("A", t(1), t(2)), Outage("A", t(5), t(5, 2)),
                Outage("B", t(3), t(3, 30)), Outage("C", t(4), t(4, 5)),
                Outage("X", t(1), t(9))]
        found = indices(outs, ["A", "B", "C", "D"])
        self.assertEqual((found.customers, found.sustained, found.momentary), (4, 2, 2))
        self.assertEqual(found.customer_minutes, D(90))
        self.assertEqual((found.saifi, found.saidi, found.caidi, found.maifi),
                         (D("0.5"), D("22.5"), D(45), D("0.5")))

    def test_the_momentary_threshold_is_configurable(self) -> None:
        """With a 1-minute threshold C's 5 minutes are sustained: SAIFI 1/1, SAIDI 5."""
        found = indices([Outage("C", t(4), t(4, 5))], ["C"], momentary=timedelta(minutes=1))
        self.assertEqual((found.saifi, found.saidi, found.caidi, found.maifi),
                         (D(1), D(5), D(5), D(0)))

    def test_a_cut_outage_is_sustained(self) -> None:
        """Down 23:58, still out at midnight: 2 minutes in the day, but sustained."""
        found = indices([Outage("A", t(23, 58), UNTIL, cut_end=True)], ["A"])
        self.assertEqual((found.sustained, found.momentary, found.saidi), (1, 0, D(2)))

    def test_no_sustained_outage_has_no_caidi(self) -> None:
        found = indices([], ["A", "B"])
        self.assertEqual((found.saifi, found.saidi, found.caidi, found.maifi),
                         (D(0), D(0), None, D(0)))


class AcceptanceTests(unittest.TestCase):
    def test_30_of_50_meters_out_for_40_minutes(self) -> None:
        """Issue 21: 30 of an area's 50 members go down at 10:00 and up at 10:40 (events).
        Per meter: 30 outages of 40 min. The area: 30/50 = 60 % ≥ 50 %, one area outage
        10:00-10:40 (40 min) of 30 meters. The day over the 50: SAIFI 30/50 = 0.6, SAIDI
        30·40/50 = 24 min, CAIDI 1200/30 = 40 min, MAIFI 0."""
        members = [f"M{i:02}" for i in range(50)]
        events = {m: [down(m, t(10)), up(m, t(10, 40))] for m in members[:30]}
        outs = [o for m in members
                for o in meter_outages(m, events.get(m, []), [], SINCE, UNTIL, Q15)]
        self.assertEqual(len(outs), 30)
        self.assertEqual({o.duration for o in outs}, {timedelta(minutes=40)})
        area = area_outages("T1", members, outs)
        self.assertEqual(len(area), 1)
        self.assertEqual((area[0].since, area[0].until, area[0].duration),
                         (t(10), t(10, 40), timedelta(minutes=40)))
        self.assertEqual(area[0].meters, tuple(members[:30]))
        found = indices(outs, members)
        self.assertEqual((found.saifi, found.saidi, found.caidi, found.maifi),
                         (D("0.6"), D(24), D(40), D(0)))
