"""The clock rules (fep.analysis.clock) against hand-worked cases: the day 2026-12-01 UTC,
15-minute intervals, a tolerance of 60 s. Each docstring works the expected ranges out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from twisted.trial import unittest

from fep.analysis import clock
from fep.analysis.daemon import FINDINGS_OF, vee_alarm
from fep.analysis.rules import CLOCK_DEVIATION, TIME_CHANGE, Finding
from fep.analysis.settings import RULE_NAMES, load, parse
from fep.collect.clock import TIME_SET_RESULT, ClockAction, ClockPolicy, outcome_text, read_outcome
from fep.errors import ConfigError
from fep.model import EventKind, MeterEvent, Quality, Severity

Q15 = timedelta(minutes=15)
DAY = datetime(2026, 12, 1, tzinfo=UTC)
END = DAY + timedelta(days=1)
OBIS = "1-0:1.29.0*255"
TOLERANCE = timedelta(seconds=60)
POLICY = ClockPolicy(10, 300)


def at(hh: int, mm: int = 0, ss: int = 0, day: int = 0) -> datetime:
    return DAY + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


def result(deviation: float, action: ClockAction) -> str:
    return outcome_text(deviation, POLICY, action)


def event(kind: EventKind, time: datetime, text: str, source: str = "dlms") -> MeterEvent:
    return MeterEvent("M", f"{source}:x", kind, Severity.INFO, time, text, source=source)


def findings(evidence: clock.ClockEvidence) -> list[tuple[str, datetime, datetime]]:
    found = clock.clock_findings("M", OBIS, evidence, DAY, END, Q15, tolerance=TOLERANCE)
    return [(f.rule, f.since, f.until) for f in found]


class ResultTextTests(unittest.TestCase):
    def test_the_clock_tasks_result_reads_back(self) -> None:
        """The result the clock job keeps (fep.collect.runner) gives its deviation and
        action back; the alarm event's text gives the deviation and no action."""
        self.assertEqual(result(95, ClockAction.SET),
                         "clock deviation +95.0 s (bounds 10 s, 300 s): clock set")
        self.assertEqual(read_outcome(result(95, ClockAction.SET)), (95.0, ClockAction.SET))
        self.assertEqual(read_outcome(result(-2.5, ClockAction.NONE)),
                         (-2.5, ClockAction.NONE))
        self.assertEqual(read_outcome("clock deviation +400.0 s (bounds 10 s, 300 s): above "
                                      "the upper bound, not corrected"), (400.0, None))
        self.assertIsNone(read_outcome("12 readings"))


class DeviationTests(unittest.TestCase):
    def test_from_the_last_good_check_to_the_correction(self) -> None:
        """Checks: 30 Nov 23:00 +2 s (within), 1 Dec 06:07 +95 s, clock set. 95 > 60: the
        clock went wrong after 23:00 the day before; the day's intervals from its start to
        the one holding 06:07 (06:00-06:15) are flagged: [00:00, 06:15), 25 intervals. The
        correction is also a time change: the meter was at 06:08:35 and was set back to
        06:07:00, 95 s back: the 06:00 interval is long: [06:00, 06:15)."""
        evidence = clock.evidence([(at(23, day=-1), result(2, ClockAction.NONE)),
                                   (at(6, 7), result(95, ClockAction.SET))], [])
        found = clock.clock_findings("M", OBIS, evidence, DAY, END, Q15, tolerance=TOLERANCE)
        self.assertEqual([(f.rule, f.since, f.until) for f in found], [
            (CLOCK_DEVIATION, at(0), at(6, 15)), (TIME_CHANGE, at(6), at(6, 15))])
        deviation, change = found
        self.assertEqual(deviation.flag, Quality.SUSPECT | Quality.CLOCK_INVALID)
        self.assertEqual((deviation.details["deviation_s"], deviation.details["from"],
                          deviation.details["until"]),
                         ("+95.0", at(23, day=-1).isoformat(),
                          f"corrected {at(6, 7).isoformat()}"))
        self.assertEqual(change.flag, Quality.SUSPECT | Quality.CLOCK_ADJUSTED)
        self.assertEqual((change.details["size_s"], change.details["intervals"]),
                         ("-95.0", "long"))
        self.assertEqual(int((deviation.until - deviation.since) / Q15), 25)

    def test_a_good_check_in_the_day_starts_the_spell_and_an_alarm_runs_to_the_end(self
                                                                                    ) -> None:
        """08:00 +3 s (good), 14:20 +400 s above the upper bound: alarm, not corrected
        (fep's alarm event at 14:20 repeats the job's check and adds nothing). The clock
        is wrong from after 08:00 to the end of the day: [08:00, 24:00), 64 intervals. No
        time change: nothing set the clock."""
        alarm = event(EventKind.CLOCK_DEVIATION, at(14, 20),
                      "clock deviation +400.0 s (bounds 10 s, 300 s): above the upper "
                      "bound, not corrected", source="fep")
        evidence = clock.evidence([(at(8), result(3, ClockAction.NONE)),
                                   (at(14, 20), result(400, ClockAction.ALARM))], [alarm])
        self.assertEqual(findings(evidence), [(CLOCK_DEVIATION, at(8), END)])

    def test_an_operators_time_set_ends_the_spell(self) -> None:
        """08:00 +3 s (good), 14:20 +400 s: alarm, not corrected; an operator's time-set
        command sets the clock at 16:05 (by an amount it did not read): the spell is
        [08:00, 16:15), and the time-set a time change of unknown size in its interval
        [16:00, 16:15)."""
        evidence = clock.evidence([(at(8), result(3, ClockAction.NONE)),
                                   (at(14, 20), result(400, ClockAction.ALARM)),
                                   (at(16, 5), TIME_SET_RESULT)], [])
        self.assertEqual(findings(evidence), [(CLOCK_DEVIATION, at(8), at(16, 15)),
                                              (TIME_CHANGE, at(16), at(16, 15))])

    def test_within_the_tolerance_nothing(self) -> None:
        """10:00 +45 s, clock set (45 > the task's lower bound 10 s, so set): 45 <= 60, no
        deviation finding and no time change finding."""
        evidence = clock.evidence([(at(10), result(45, ClockAction.SET))], [])
        self.assertEqual(findings(evidence), [])

    def test_the_meters_clock_invalid_event_until_the_clock_task_sets_it(self) -> None:
        """The meter says ``clock invalid`` at 02:00 (size unknown; no good check known
        before it): from the day's start to the clock task's correction at 03:10 (-20 s,
        within the tolerance, so no time change finding): [00:00, 03:15)."""
        evidence = clock.evidence(
            [(at(3, 10), result(-20, ClockAction.SET))],
            [event(EventKind.CLOCK_DEVIATION, at(2), "clock invalid")])
        found = clock.clock_findings("M", OBIS, evidence, DAY, END, Q15, tolerance=TOLERANCE)
        self.assertEqual([(f.rule, f.since, f.until) for f in found],
                         [(CLOCK_DEVIATION, at(0), at(3, 15))])
        self.assertEqual((found[0].details["deviation_s"], found[0].details["from"]),
                         ("unknown", "no good check"))

    def test_an_uncorrected_spell_of_the_day_before_covers_the_whole_day(self) -> None:
        """30 Nov 12:00 +2 s (good), 30 Nov 18:00 +500 s alarm, nothing since: the whole
        1 Dec is flagged, [00:00, 24:00)."""
        evidence = clock.evidence([(at(12, day=-1), result(2, ClockAction.NONE)),
                                   (at(18, day=-1), result(500, ClockAction.ALARM))], [])
        self.assertEqual(findings(evidence), [(CLOCK_DEVIATION, DAY, END)])


class TimeChangeTests(unittest.TestCase):
    def test_event_pairs_forward_and_back(self) -> None:
        """DLMS pairs: old 10:05, new 10:50: set forward 45 min (+2700 s), the intervals
        from 10:00 to the one holding 10:50 are short: [10:00, 11:00). Old 15:40, new
        15:10: set back 30 min (-1800 s), long: [15:00, 15:45). Each old time pairs with
        the nearest new one."""
        evidence = clock.evidence([], [
            event(EventKind.CLOCK_SET, at(10, 5), "clock adjusted (old date/time)"),
            event(EventKind.CLOCK_SET, at(10, 50), "clock adjusted (new date/time)"),
            event(EventKind.CLOCK_SET, at(15, 40), "clock adjusted (old date/time)"),
            event(EventKind.CLOCK_SET, at(15, 10), "clock adjusted (new date/time)"),
        ])
        found = clock.time_changes("M", OBIS, evidence, DAY, END, Q15, tolerance=TOLERANCE)
        self.assertEqual([(f.since, f.until, f.details["size_s"], f.details["intervals"])
                          for f in found],
                         [(at(10), at(11), "+2700.0", "short"),
                          (at(15), at(15, 45), "-1800.0", "long")])

    def test_a_change_of_unknown_size_flags_its_interval_and_a_season_change_nothing(self
                                                                                      ) -> None:
        """IEC 62056-21 ``device clock set`` at 20:20 (no old/new pair): its interval
        [20:15, 20:30). A DLMS daylight saving event at 02:00 is a change of the local time
        rule only (UTC goes on): nothing. A pair 1 s apart (within 60 s): nothing."""
        evidence = clock.evidence([], [
            event(EventKind.CLOCK_SET, at(20, 20), "device clock set"),
            event(EventKind.CLOCK_SET, at(2), "daylight saving time enabled or disabled"),
            event(EventKind.CLOCK_SET, at(4), "time changed (old time)"),
            event(EventKind.CLOCK_SET, at(4, 0, 1), "time changed (new time)"),
        ])
        found = clock.time_changes("M", OBIS, evidence, DAY, END, Q15, tolerance=TOLERANCE)
        self.assertEqual([(f.since, f.until, f.details["size_s"]) for f in found],
                         [(at(20, 15), at(20, 30), "unknown")])

    def test_a_time_change_corrects_the_clock(self) -> None:
        """The meter says ``clock invalid`` at 09:00; a pair old 09:30 / new 09:31 (60 s,
        within the tolerance) sets it: the spell runs from the day start to the interval
        holding the new time, [00:00, 09:45); no time change finding."""
        evidence = clock.evidence([], [
            event(EventKind.CLOCK_DEVIATION, at(9), "clock invalid"),
            event(EventKind.CLOCK_SET, at(9, 30), "clock adjusted (old date/time)"),
            event(EventKind.CLOCK_SET, at(9, 31), "clock adjusted (new date/time)"),
        ])
        self.assertEqual(findings(evidence), [(CLOCK_DEVIATION, at(0), at(9, 45))])


class SettingsTests(unittest.TestCase):
    def test_the_vee_ini_keys(self) -> None:
        """``clock_tolerance`` (a duration) per rule set, ``[vee] serial`` the OBIS code
        of the reported serial number, and the rule names ``clock`` and ``meter-change``."""
        settings = parse("[vee]\nserial = 1-0:96.1.0\n[rules:default]\nrules = clock, "
                         "meter-change\nclock_tolerance = 2m\n[rules:tight]\n"
                         "clock_tolerance = 20s\n")
        self.assertEqual(str(settings.serial), "1-0:96.1.0*255")
        self.assertEqual(settings.rule_sets["default"].rules,
                         frozenset({"clock", "meter-change"}))
        self.assertEqual(settings.rule_sets["default"].clock_tolerance, timedelta(minutes=2))
        self.assertEqual(settings.rule_sets["tight"].clock_tolerance, timedelta(seconds=20))
        self.assertEqual(parse("").rule_sets["default"].clock_tolerance, TOLERANCE)
        self.assertEqual(str(parse("").serial), "0-0:96.1.0*255")

    def test_a_negative_tolerance_is_refused(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse("[rules:default]\nclock_tolerance = -5s\n", "vee.ini")
        self.assertIn("clock_tolerance", str(caught.exception))

    def test_the_example_file_runs_both(self) -> None:
        loaded = load(Path(__file__).parents[2] / "etc" / "vee.example.ini")
        self.assertLessEqual({"clock", "meter-change"}, loaded.rule_sets["default"].rules)
        self.assertEqual(loaded.rule_sets["default"].clock_tolerance, TOLERANCE)

    def test_the_analysis_service_can_alarm_on_both(self) -> None:
        """``vee_alarms`` takes every rule name: the new ones name their findings."""
        self.assertEqual(set(FINDINGS_OF), set(RULE_NAMES))
        self.assertEqual(FINDINGS_OF["clock"], (CLOCK_DEVIATION, TIME_CHANGE))
        self.assertEqual(FINDINGS_OF["meter-change"], ("meter-change",))
        finding = Finding("meter-change", "M", OBIS, at(10), at(10, 15), Quality.COUNTER_RESET,
                          {"old_serial": "A100", "new_serial": "B200"})
        self.assertEqual(vee_alarm(finding).code, "analysis:vee:meter-change")
