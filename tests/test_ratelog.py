"""Rate-limited logs of repeated bad input (fep.ratelog)."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial import unittest

from fep.ratelog import RateLimitedLog


class RateLimitedLogTests(unittest.TestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.clock = Clock()
        self.log = RateLimitedLog(Logger(observer=self.events.append), self.clock,
                                  interval=10.0, burst=3)

    def test_first_events_pass_then_one_summary_with_the_count(self) -> None:
        for i in range(100):
            self.log.warn("junk from {peer}", peer=f"10.0.0.{i}")
        self.assertEqual(len(self.events), 3)
        self.clock.advance(10)
        self.assertEqual(len(self.events), 4)
        self.assertEqual(formatEvent(self.events[-1]),
                         "junk from 10.0.0.99 (97 more like this in the last 10 s)")
        self.assertEqual(self.log.suppressed, 97)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_new_window_logs_again(self) -> None:
        for _ in range(5):
            self.log.warn("junk")
        self.clock.advance(10)
        self.log.warn("junk")
        self.assertEqual([formatEvent(e) for e in self.events][-1], "junk")
        self.assertEqual(len(self.events), 5)  # 3, the summary, and the new window's first

    def test_kinds_are_counted_apart(self) -> None:
        for _ in range(5):
            self.log.warn("a {x}", x=1, kind="a")
            self.log.warn("b {x}", x=1, kind="b")
        self.assertEqual(len(self.events), 6)

    def test_quiet_windows_leave_no_timer(self) -> None:
        self.log.info("once")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_without_a_clock_the_summary_comes_with_the_next_window(self) -> None:
        now = [0.0]
        log = RateLimitedLog(Logger(observer=self.events.append), interval=10.0, burst=1)
        log._now = lambda: now[0]  # type: ignore[method-assign]
        for _ in range(4):
            log.warn("junk")
        now[0] = 11.0
        log.warn("junk")
        self.assertEqual([formatEvent(e) for e in self.events],
                         ["junk", "junk (3 more like this in the last 10 s)", "junk"])

    def test_flush_logs_pending_summaries(self) -> None:
        for _ in range(5):
            self.log.warn("junk")
        self.log.flush()
        self.assertIn("2 more like this", formatEvent(self.events[-1]))
        self.assertEqual(self.clock.getDelayedCalls(), [])
