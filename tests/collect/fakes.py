"""Test doubles for the collection engine: a real SQLite job store run synchronously on the
shared fake reactor (tests/fakes.py), and a job runner whose attempts the test ends by hand."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from fep.collect.jobstore import JobStore
from fep.collect.tasks import Job, Outcome
from fep.directory import MeterDirectory
from fep.model import Meter
from fep.store.sqlite import SqliteStore
from tests.fakes import SyncPool, SyncReactor, fired


def sync_store(reactor: SyncReactor, testcase: Any) -> tuple[SqliteStore, JobStore]:
    """An open in-memory SQLite store (records and jobs) working on the fake clock."""
    store = SqliteStore(":memory:", reactor, threadpool=SyncPool())  # type: ignore[arg-type]
    d = store.open()
    assert d.called, "the synchronous store opened at once"
    testcase.addCleanup(store.close)
    return store, JobStore(store)


class ManualRunner:
    """Runs nothing: each attempt waits until the test ends it with ``succeed``/``fail``."""

    def __init__(self) -> None:
        self.attempts: list[tuple[Job, Meter, Deferred[Outcome]]] = []

    def __call__(self, job: Job, meter: Meter) -> Deferred[Outcome]:
        d: Deferred[Outcome] = Deferred()
        self.attempts.append((job, meter, d))
        return d

    def running(self) -> list[str]:
        """Meters whose attempt is under way."""
        return [meter.id for _, meter, d in self.attempts if not d.called]

    def started(self) -> list[str]:
        return [meter.id for _, meter, _ in self.attempts]

    def _find(self, meter: str) -> Deferred[Outcome]:
        for _, m, d in self.attempts:
            if m.id == meter and not d.called:
                return d
        raise AssertionError(f"no attempt under way for {meter}; running: {self.running()}")

    def succeed(self, meter: str, result: str = "ok") -> None:
        self._find(meter).callback(Outcome(True, result=result))

    def fail(self, meter: str, error: str = "no answer", retry: bool = True) -> None:
        self._find(meter).callback(Outcome(False, error=error, retry=retry))


def directory_with(store: SqliteStore, meters: list[Meter]) -> MeterDirectory:
    fired(store.add_meters(meters))
    directory = MeterDirectory(store)
    fired(directory.refresh_d())
    return directory
