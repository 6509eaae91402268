"""The day's collection (fep.collect.daycollection): whether the load-profile runs after
midnight that start before the analysis' ``at`` have ended, from the job store's tasks and
open jobs (a small fake of both)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest

from fep.collect.daycollection import day_collected
from fep.collect.tasks import Task

MIDNIGHT = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
AT = MIDNIGHT + 2 * 3600


class Jobs:
    """Tasks, and the open jobs of each task as (due, ...)."""

    def __init__(self, tasks: list[Task], open_dues: dict[str, list[float]]) -> None:
        self._tasks = tasks
        self.open_dues = open_dues

    def tasks(self) -> Deferred[list[Task]]:
        return succeed(self._tasks)

    def open_jobs(self, task: str, since: float, until: float) -> Deferred[int]:
        return succeed(sum(1 for due in self.open_dues.get(task, []) if since <= due < until))


def task(name: str = "lp", kind: str = "load-profile", schedule: str = "every 1h",
         next_due: float | None = MIDNIGHT + 3600, **changes: Any) -> Task:
    return attrs.evolve(Task(name=name, kind=kind, schedule=schedule), next_due=next_due,
                        **changes)


class DayCollectedTests(unittest.TestCase):
    async def check(self, tasks: list[Task], open_dues: dict[str, list[float]] | None = None
                    ) -> bool | None:
        return await day_collected(Jobs(tasks, open_dues or {}), MIDNIGHT, AT)  # type: ignore[arg-type]

    async def test_ended_when_the_run_after_midnight_has_no_open_job(self) -> None:
        self.assertIs(await self.check([task()]), True)
        self.assertIs(await self.check([task()], {"lp": [MIDNIGHT]}), False)
        # A job of yesterday's last run still open is not the day's collection.
        self.assertIs(await self.check([task()], {"lp": [MIDNIGHT - 3600]}), True)

    async def test_a_run_not_made_yet_is_waited_for(self) -> None:
        """00:30 cron run, the task's next run still due at 00:30: not made, not ended."""
        cron = task(schedule="30 0 * * *", next_due=MIDNIGHT + 1800)
        self.assertIs(await self.check([cron]), False)
        self.assertIs(await self.check([attrs.evolve(cron, next_due=MIDNIGHT + 86400 + 1800)]),
                      True)

    async def test_only_enabled_load_profile_tasks_before_at_are_waited_for(self) -> None:
        """Nothing to wait for (None): a registers task, a disabled one, one whose first run
        after midnight is at 03:00, after ``at``."""
        others = [task(name="regs", kind="registers", next_due=MIDNIGHT),
                  task(name="off", next_due=MIDNIGHT, enabled=False),
                  task(name="late", schedule="0 3 * * *", next_due=MIDNIGHT + 3 * 3600)]
        self.assertIsNone(await self.check(others, {"regs": [MIDNIGHT]}))
        self.assertIs(await self.check([*others, task()], {"lp": [MIDNIGHT + 60]}), False)
