"""The collection engine on multidrop lines, on a fake clock (MemoryReactorClock, SQLite job
store run synchronously, the real job runner and protocols): the meters of one line are read
one at a time in meter-list order, a meter that never answers costs the line its own timeout
and nothing more (and other lines nothing), and a concentrator is read before the meters it
owns, which are recorded as missed in a run where it does not answer.

The lines are in memory: the simulated bus (fep.sim.bus) on one end, one session at a
time on the other, bytes delivered through the clock as a real line would deliver them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from fep.channels.routes import Channels, Route
from fep.collect.runner import JobRunner
from fep.collect.scheduler import Scheduler
from fep.collect.tasks import JobStatus, Task
from fep.model import Meter
from fep.sim.bus import SimulatedBusFactory, mixed_bus
from tests.collect.fakes import directory_with, sync_store
from tests.fakes import SyncReactor, fired

TIMEOUT = 5.0


class _SessionEnd:
    """The session's transport on an in-memory line."""

    disconnecting = False

    def __init__(self, line: MemoryLine, protocol: Any) -> None:
        self.line = line
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        if self.line.session is self:
            self.line.clock.callLater(0, self.line.bus.dataReceived, data)

    def writeSequence(self, data: Sequence[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.line.session is self:
            self.line.session = None
            self.line.clock.callLater(0, self.protocol.connectionLost,
                                      Failure(ConnectionError("closed")))

    abortConnection = loseConnection

    def getPeer(self) -> None:
        return None

    def getHost(self) -> None:
        return None


class _BusEnd:
    """The bus's transport: what the meters put on the line reaches the session."""

    def __init__(self, line: MemoryLine) -> None:
        self.line = line

    def write(self, data: bytes) -> None:
        session = self.line.session
        if session is not None:
            self.line.clock.callLater(0, session.protocol.dataReceived, data)

    def loseConnection(self) -> None:
        return None


class MemoryLine:
    """A serial line in memory with a simulated bus on it; ``endpoint()`` opens it."""

    def __init__(self, clock: SyncReactor, bus: SimulatedBusFactory) -> None:
        self.clock = clock
        self.bus = bus.buildProtocol(None)
        self.bus.makeConnection(_BusEnd(self))  # type: ignore[arg-type]
        self.session: _SessionEnd | None = None
        self.opened = 0

    def endpoint(self, route: Route) -> IStreamClientEndpoint:
        line = self

        @implementer(IStreamClientEndpoint)
        class _Open:
            def connect(self, factory: Any) -> Deferred[Any]:
                assert line.session is None, "two sessions on one line at once"
                protocol = factory.buildProtocol(None)
                line.session = _SessionEnd(line, protocol)
                line.opened += 1
                protocol.makeConnection(line.session)
                return succeed(protocol)

        return _Open()


class _Sink:
    def __init__(self, clock: SyncReactor) -> None:
        self.clock = clock
        self.submitted: list[tuple[float, str]] = []

    def submit(self, records: Sequence[Any]) -> Deferred[None]:
        for meter in sorted({r.meter for r in records}):
            self.submitted.append((self.clock.seconds(), meter))
        return succeed(None)

    def when(self, meter: str) -> float:
        return next(t for t, m in self.submitted if m == meter)

    def order(self) -> list[str]:
        return [m for _, m in self.submitted]


def iec(meter_id: str, line: str, address: str) -> Meter:
    return Meter(meter_id, "iec62056-21", f"{line}@{address}")


def dlt(meter_id: str, line: str, address: str, **metadata: str) -> Meter:
    return Meter(meter_id, "dlt645", f"{line}@{address}",
                 metadata={"dlt645_retries": "0", **metadata})


class LineTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = SyncReactor()
        self.clock.advance(1_700_000_000)
        self.start = self.clock.seconds()

    def engine(self, meters: list[Meter], lines: dict[str, MemoryLine]) -> _Sink:
        store, jobs = sync_store(self.clock, self)
        self.jobs = jobs
        channels = Channels(self.clock)
        for scheme, line in lines.items():
            channels.register_scheme(scheme, line.endpoint)
        sink = _Sink(self.clock)
        runner = JobRunner(self.clock, sink, store, jobs, endpoint_for=channels,
                           timeout=TIMEOUT)
        task = Task(name="regs", kind="registers", schedule="every 1h", retries=0,
                    next_due=self.start)
        fired(jobs.save_task(task, self.start))
        self.scheduler = Scheduler(self.clock, jobs, directory_with(store, meters), runner.run,
                                   node="n", concurrency=4, poll=1.0)
        self.scheduler.startService()
        self.addCleanup(self.stop)
        return sink

    def stop(self) -> None:
        d = self.scheduler.stopService()
        self.run_until(self.clock.seconds() - self.start + 3 * TIMEOUT)
        fired(d)

    def run_until(self, until: float, step: float = 0.01) -> None:
        while self.clock.seconds() < self.start + until - 1e-9:
            self.clock.advance(step)

    def outcomes(self) -> dict[str, tuple[str, str | None]]:
        return {j.meter: (str(j.status), j.error) for j in fired(self.jobs.jobs(limit=None))}


class BusTimeoutTests(LineTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bus = MemoryLine(self.clock, mixed_bus(
            self.clock, iec=["10000001"], dlt645=["000000123456"]))

    def test_meter_that_never_answers_costs_its_own_timeout_only(self) -> None:
        meters = [
            iec("a-first", "bus:1", "10000001"),
            iec("b-silent", "bus:1", "10000009"),  # nobody on the bus has this address
            dlt("c-last", "bus:1", "000000123456"),
        ]
        sink = self.engine(meters, {"bus": self.bus})
        self.run_until(TIMEOUT - 0.05)
        self.assertEqual(sink.order(), ["a-first"])
        self.run_until(TIMEOUT + 0.5)
        self.assertEqual(sink.order(), ["a-first", "c-last"])
        outcomes = self.outcomes()
        self.assertEqual({m: s for m, (s, _) in outcomes.items()},
                         {"a-first": "done", "b-silent": "failed", "c-last": "done"})
        # The meter after the silent one was read as soon as the silent one's time was up.
        self.assertLess(sink.when("c-last") - self.start - TIMEOUT, 0.2)
        self.assertEqual(self.bus.opened, 3)

    def test_each_silent_meter_costs_one_timeout(self) -> None:
        meters = [
            iec("silent-1", "bus:1", "10000008"),
            iec("silent-2", "bus:1", "10000009"),
            dlt("z-last", "bus:1", "000000123456"),
        ]
        sink = self.engine(meters, {"bus": self.bus})
        self.run_until(2 * TIMEOUT + 0.5)
        self.assertEqual(sorted(s for s, _ in self.outcomes().values()),
                         ["done", "failed", "failed"])
        self.assertLess(abs(sink.when("z-last") - self.start - 2 * TIMEOUT), 0.2)

    def test_silent_meter_does_not_hold_up_another_line(self) -> None:
        other = MemoryLine(self.clock, mixed_bus(self.clock, dlt645=["000000123456"]))
        meters = [
            iec("silent", "bus:1", "10000009"),
            dlt("elsewhere", "other:2", "000000123456"),
        ]
        sink = self.engine(meters, {"bus": self.bus, "other": other})
        self.run_until(0.5)
        self.assertEqual(sink.order(), ["elsewhere"])


class ConcentratorTests(LineTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.line = MemoryLine(self.clock, mixed_bus(
            self.clock, dlt645=["000000000001", "000000000002", "000000000003"]))

    def test_concentrator_is_read_before_the_meters_it_owns(self) -> None:
        meters = [
            dlt("m2", "bus:1", "000000000002", concentrator="c1"),
            dlt("other", "bus:1", "000000000003"),
            dlt("m3", "bus:1", "000000000003", concentrator="c1"),
            dlt("c1", "bus:1", "000000000001"),
        ]
        sink = self.engine(meters, {"bus": self.line})
        self.run_until(1)
        order = sink.order()
        self.assertEqual(sorted(order), ["c1", "m2", "m3", "other"])
        self.assertLess(order.index("c1"), order.index("m2"))
        self.assertLess(order.index("c1"), order.index("m3"))
        self.assertEqual({s for s, _ in self.outcomes().values()}, {"done"})

    def test_meters_behind_a_silent_concentrator_are_skipped_that_run(self) -> None:
        meters = [
            dlt("c9", "bus:1", "000000000009"),  # not answering
            dlt("m2", "bus:1", "000000000002", concentrator="c9"),
            dlt("m3", "bus:1", "000000000003", concentrator="c9"),
            dlt("free", "bus:1", "000000000001"),
        ]
        sink = self.engine(meters, {"bus": self.line})
        self.run_until(TIMEOUT + 0.5)
        self.assertEqual(sink.order(), ["free"])
        outcomes = self.outcomes()
        self.assertEqual(outcomes["c9"][0], "failed")
        for meter in ("m2", "m3"):
            self.assertEqual(outcomes[meter][0], "missed")
            self.assertIn("concentrator c9 failed", outcomes[meter][1])
        # One timeout for the concentrator, none for the meters behind it.
        self.assertLess(sink.when("free") - self.start - TIMEOUT, 0.2)
        self.assertEqual(self.line.opened, 2)
        (row,) = [r for r in fired(self.jobs.stats("2000-01-01", "task"))]
        self.assertEqual((row.jobs, row.ok, row.failed, row.missed), (4, 1, 1, 2))

    def test_meter_not_on_its_concentrators_line_is_refused_naming_it(self) -> None:
        meters = [
            dlt("c1", "bus:1", "000000000001"),
            dlt("astray", "bus:other", "000000000002", concentrator="c1"),
            dlt("m3", "bus:1", "000000000003", concentrator="nobody"),
        ]
        sink = self.engine(meters, {"bus": self.line})
        self.run_until(1)
        self.assertEqual(sink.order(), ["c1"])
        outcomes = self.outcomes()
        self.assertEqual(outcomes["astray"][0], "failed")
        self.assertIn("meter astray", outcomes["astray"][1])
        self.assertIn("concentrator", outcomes["astray"][1])
        self.assertEqual(outcomes["m3"][0], "failed")
        self.assertIn("'nobody'", outcomes["m3"][1])
        self.assertEqual(JobStatus(outcomes["c1"][0]), JobStatus.DONE)
