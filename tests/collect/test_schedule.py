"""Schedules (every N aligned, cron lines), durations, targets, clock policy and gap ranges:
the pure parts of the collection engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from twisted.trial import unittest

from fep.collect import gaps
from fep.collect.clock import ClockAction, ClockPolicy
from fep.collect.schedule import format_duration, parse_duration, parse_schedule
from fep.collect.scheduler import latest_run
from fep.collect.tasks import Priority, Target, Task
from fep.errors import ConfigError
from fep.model import IntervalBlock, Meter, ObisCode


def t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class ScheduleTests(unittest.TestCase):
    def test_every_is_aligned_to_interval_boundaries(self) -> None:
        every = parse_schedule("every 15m")
        self.assertEqual(every.next_after(t("2024-03-01T10:07:31")), t("2024-03-01T10:15:00"))
        self.assertEqual(every.next_after(t("2024-03-01T10:15:00")), t("2024-03-01T10:30:00"))

    def test_every_with_an_offset(self) -> None:
        daily = parse_schedule("every 1d +2h30m")
        self.assertEqual(daily.next_after(t("2024-03-01T10:00")), t("2024-03-02T02:30"))
        self.assertEqual(str(daily), "every 1d +2h30m")

    def test_cron_lines(self) -> None:
        quarter = parse_schedule("*/15 * * * *")
        self.assertEqual(quarter.next_after(t("2024-03-01T10:07:31")), t("2024-03-01T10:15"))
        weekdays = parse_schedule("0 2 * * 1-5")  # 2024-03-01 is a Friday
        self.assertEqual(weekdays.next_after(t("2024-03-01T03:00")), t("2024-03-04T02:00"))
        first = parse_schedule("30 0 1 * *")
        self.assertEqual(first.next_after(t("2024-02-10T00:00")), t("2024-03-01T00:30"))
        either = parse_schedule("0 0 13 * 5")  # the 13th or a Friday, as cron has it
        self.assertEqual(either.next_after(t("2024-03-01T01:00")), t("2024-03-08T00:00"))
        sunday = parse_schedule("0 12 * * 7")
        self.assertEqual(sunday.next_after(t("2024-03-01T00:00")), t("2024-03-03T12:00"))

    def test_bad_schedules_say_what_to_write(self) -> None:
        for text in ("sometimes", "every", "every 0m", "61 * * * *", "* * * *", "*/0 * * * *"):
            with self.assertRaises(ConfigError) as caught:
                parse_schedule(text)
            self.assertIn("every 15m", str(caught.exception))

    def test_a_cron_line_that_never_fires(self) -> None:
        with self.assertRaises(ValueError):
            parse_schedule("0 0 31 2 *").next_after(t("2024-01-01T00:00"))

    def test_durations(self) -> None:
        self.assertEqual(parse_duration("2h30m"), 9000)
        self.assertEqual(parse_duration("900"), 900)
        self.assertEqual(format_duration(5400), "1h30m")
        self.assertEqual(format_duration(0.5), "0.5s")
        with self.assertRaises(ConfigError):
            parse_duration("soon")

    def test_runs_missed_while_down_are_counted_and_the_latest_made(self) -> None:
        task = Task(name="x", kind="registers", schedule="every 15m")
        due = t("2024-03-01T10:00")
        latest, skipped, following = latest_run(task, due, t("2024-03-01T11:05"))
        self.assertEqual((latest, skipped, following),
                         (t("2024-03-01T11:00"), 4, t("2024-03-01T11:15")))
        cron = Task(name="y", kind="registers", schedule="*/30 * * * *")
        self.assertEqual(latest_run(cron, due, t("2024-03-01T11:05"))[:2],
                         (t("2024-03-01T11:00"), 2))

    def test_default_deadline_is_the_next_run(self) -> None:
        task = Task(name="x", kind="registers", schedule="every 15m")
        self.assertEqual(task.deadline_after(t("2024-03-01T10:00")), t("2024-03-01T10:15"))
        self.assertEqual(Task(name="x", kind="clock", schedule="every 1d", deadline=60)
                         .deadline_after(100.0), 160.0)


class TargetAndPriorityTests(unittest.TestCase):
    def test_targets(self) -> None:
        m = Meter("m1", "dlms", "gprs:imei=1", metadata={"group": "north, feeder-7"})
        self.assertTrue(Target.parse("all").matches(m))
        self.assertTrue(Target.parse("group:feeder-7").matches(m))
        self.assertFalse(Target.parse("group:south").matches(m))
        self.assertTrue(Target.parse("meters:m0,m1").matches(m))
        self.assertTrue(Target.parse("protocol:dlms").matches(m))
        self.assertTrue(Target.parse("route:gprs:").matches(m))
        self.assertEqual(str(Target.parse("meters: a , b")), "meters:a,b")
        with self.assertRaises(ConfigError):
            Target.parse("everyone")

    def test_priorities(self) -> None:
        self.assertEqual(Priority.parse("on-demand"), Priority.ON_DEMAND)
        self.assertEqual(Priority.parse("3"), Priority.BACKFILL)
        self.assertLess(Priority.ALARM, Priority.SCHEDULED)
        with self.assertRaises(ConfigError):
            Priority.parse("urgent")


class ClockPolicyTests(unittest.TestCase):
    def test_below_between_above(self) -> None:
        policy = ClockPolicy(10, 300)
        self.assertEqual(policy.decide(-9.9), ClockAction.NONE)
        self.assertEqual(policy.decide(10), ClockAction.SET)
        self.assertEqual(policy.decide(-300), ClockAction.SET)
        self.assertEqual(policy.decide(300.1), ClockAction.ALARM)

    def test_a_meters_own_bounds_win(self) -> None:
        m = Meter("m", "dlms", "tcp:x:1", metadata={"clock_upper": "1h"})
        self.assertEqual(ClockPolicy.for_meter({"lower": "30s", "upper": "5m"}, m),
                         ClockPolicy(30, 3600))
        with self.assertRaises(ConfigError):
            ClockPolicy(100, 10)


class GapTests(unittest.TestCase):
    P = timedelta(minutes=15)
    T = datetime(2024, 3, 1, tzinfo=UTC)

    def block(self, obis: str, start: datetime, n: int) -> IntervalBlock:
        return IntervalBlock("m", ObisCode.parse(obis), start, self.P, tuple(range(n)))

    def test_nothing_stored_means_everything_missing(self) -> None:
        missing = gaps.missing([], self.T + timedelta(minutes=5), self.T + timedelta(hours=1),
                               self.P)
        self.assertEqual(missing, [self.T + self.P * k for k in (1, 2, 3)])

    def test_a_channel_lacking_an_interval_makes_it_missing(self) -> None:
        blocks = [
            self.block("1.8.0", self.T, 8),
            self.block("2.8.0", self.T, 3),
            self.block("2.8.0", self.T + 4 * self.P, 4),
        ]
        self.assertEqual(gaps.missing(blocks, self.T, self.T + 8 * self.P, self.P),
                         [self.T + 3 * self.P])

    def test_ranges_join_near_gaps_and_stay_few(self) -> None:
        starts = [self.T + self.P * k for k in (0, 1, 3, 20, 40, 60, 80)]
        self.assertEqual(gaps.ranges(starts, self.P, join=4, most=3), [
            (self.T, self.T + 4 * self.P),
            (self.T + 20 * self.P, self.T + 21 * self.P),
            (self.T + 40 * self.P, self.T + 81 * self.P),
        ])
