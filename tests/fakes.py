"""Shared test doubles for unit tests that must not wait on the wall clock: a memory reactor
with a fake clock whose thread work runs at once, a synchronous thread pool, helpers to read
fired Deferreds and to advance the clock until one fires, and the real reactor with its clock
set to a chosen moment (for integration tests that must not depend on the time of day)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy


class SyncPool:
    """A thread pool that runs each piece of work at once, on the calling thread (the
    interface ``deferToThreadPool`` and ``adbapi`` use)."""

    started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def callInThread(self, f: Callable[..., Any], *a: Any, **kw: Any) -> None:
        f(*a, **kw)

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        try:
            result = f(*a, **kw)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class SyncReactor(MemoryReactorClock):
    """A MemoryReactorClock where work for a thread runs at once on this thread:
    ``callFromThread`` calls at once, ``callInThread`` and ``getThreadPool()`` (for code that
    uses ``deferToThreadPool(reactor, reactor.getThreadPool(), ...)``) run synchronously."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = SyncPool()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)

    def callInThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)

    def getThreadPool(self) -> SyncPool:
        return self.pool


def fired(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired (the synchronous fakes fire at once)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def advance_until(
    reactor: MemoryReactorClock, d: Deferred[Any], step: float = 0.01, limit: float = 600.0
) -> Any:
    """Advance the fake clock by ``step`` until ``d`` fires (at most ``limit`` fake
    seconds); its result."""
    results: list[Any] = []
    d.addBoth(results.append)
    waited = 0.0
    while not results:
        if waited >= limit:
            raise AssertionError(f"not fired after {limit} s on the fake clock")
        reactor.advance(step)
        waited += step
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def advance_while(
    reactor: MemoryReactorClock, condition: Callable[[], bool], step: float = 0.01,
    limit: float = 600.0,
) -> None:
    """Advance the fake clock by ``step`` while ``condition()`` holds (at most ``limit``)."""
    waited = 0.0
    while condition():
        if waited >= limit:
            raise AssertionError(f"still waiting after {limit} s on the fake clock")
        reactor.advance(step)
        waited += step


class ShiftedClock:
    """The real reactor with its clock (``seconds()``) moved so that the test starts at
    ``phase`` seconds into a ``period``: an integration test on the real reactor that counts
    quarter hours sees the same position in the quarter on every run, whatever the time of
    day. Timers are relative, so they run on the real clock; ``now()`` gives the shifted
    time as a UTC datetime for simulated meters."""

    def __init__(self, real: Any, phase: float = 300.0, period: float = 900.0) -> None:
        self._real = real
        start = real.seconds()
        self.shift = (start - start % period + phase) - start
        directlyProvides(self, providedBy(real))

    def seconds(self) -> float:
        return float(self._real.seconds()) + self.shift

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.seconds(), UTC)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)
