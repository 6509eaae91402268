"""Test doubles for the collection engine: a MemoryReactorClock whose store thread runs work
at once (so a real SQLite job store runs on the fake clock), and a job runner whose attempts
the test ends by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from fep.collect.jobstore import JobStore
from fep.collect.tasks import Job, Outcome
from fep.directory import MeterDirectory
from fep.model import Meter
from fep.store.sqlite import SqliteStore


class SyncReactor(MemoryReactorClock):
    """A MemoryReactorClock where callFromThread calls at once (work runs on this thread)."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


class SyncPool:
    """A thread pool that runs each piece of work at once, on the calling thread."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        try:
            result = f(*a, **kw)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


def sync_store(reactor: SyncReactor, testcase: Any) -> tuple[SqliteStore, JobStore]:
    """An open in-memory SQLite store (records and jobs) working on the fake clock."""
    store = SqliteStore(":memory:", reactor, threadpool=SyncPool())  # type: ignore[arg-type]
    d = store.open()
    assert d.called, "the synchronous store opened at once"
    testcase.addCleanup(store.close)
    return store, JobStore(store)


def fired(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired (the synchronous store fires at once)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


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
