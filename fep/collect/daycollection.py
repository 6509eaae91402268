"""The day's collection: whether the collection engine's load-profile runs that cover the
day before have ended (the analysis service's ``[analysis] after = collection`` starts the
day's analyses then).

The day before ``midnight`` (UTC) is collected when every enabled load-profile task whose
schedule has a run between ``midnight`` and ``latest`` (the analysis' ``at``) has had that
run made (its next run is due after it) and no job of the task due from ``midnight`` on is
still pending, leased or running: each ended done, failed (retries spent) or missed. A task
whose first run after midnight comes at or after ``latest`` is not waited for; when no task
is waited for there is nothing to tell (None) and ``latest`` decides.
"""

from __future__ import annotations

from fep.collect.tasks import JobKind
from fep.interfaces import IJobStore

# A hair before midnight: schedules name the first run strictly after a time.
_BEFORE = 0.001
# The end of time for a task that has no next run (it ended).
_NEVER = 1e15


async def day_collected(jobs: IJobStore, midnight: float, latest: float) -> bool | None:
    """True when the load-profile runs after ``midnight`` (POSIX seconds) that start before
    ``latest`` have all ended, False while one has not, None when there is none."""
    waited = False
    for task in await jobs.tasks():
        if not task.enabled or str(task.kind) != JobKind.LOAD_PROFILE:
            continue
        first = task.parsed_schedule().next_after(midnight - _BEFORE)
        if task.starts_at is not None and task.starts_at > first:
            first = task.parsed_schedule().next_after(task.starts_at - _BEFORE)
        if first >= latest or (task.ends_at is not None and first > task.ends_at):
            continue
        waited = True
        if task.next_due is not None and task.next_due <= first:
            return False  # its run is not made yet
        until = _NEVER if task.next_due is None else task.next_due
        if await jobs.open_jobs(task.name, midnight, until):
            return False
    return True if waited else None
