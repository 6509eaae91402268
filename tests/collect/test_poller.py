"""The periodic reader on multidrop lines, on a Clock: the meters of one line are read one
at a time in list order, a meter that never answers costs the line its own timeout and
nothing more (and other lines nothing), and a concentrator is read before the meters it
owns, which are skipped in a cycle where it does not answer.

The lines are in memory: the simulated bus (fep.sim.bus) on one end, one session at a
time on the other, bytes delivered through the Clock as a real line would deliver them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from fep.channels.routes import Channels, Route
from fep.collect.directory import MeterDirectory
from fep.collect.poller import PeriodicReader
from fep.model import Meter
from fep.sim.bus import SimulatedBusFactory, mixed_bus

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

    def __init__(self, clock: Clock, bus: SimulatedBusFactory) -> None:
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


class _Store:
    def __init__(self, meters: list[Meter]) -> None:
        self._meters = meters

    def meters(self) -> Deferred[list[Meter]]:
        return succeed(list(self._meters))


class _Sink:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.submitted: list[tuple[float, str]] = []

    def submit(self, records: Sequence[Any]) -> Deferred[None]:
        for meter in sorted({r.meter for r in records}):
            self.submitted.append((self.clock.seconds(), meter))
        return succeed(None)

    def when(self, meter: str) -> float:
        return next(t for t, m in self.submitted if m == meter)


def reader_on(clock: Clock, meters: list[Meter], lines: dict[str, MemoryLine]) -> tuple[
    PeriodicReader, _Sink
]:
    channels = Channels(clock)
    for scheme, line in lines.items():
        channels.register_scheme(scheme, line.endpoint)
    sink = _Sink(clock)
    reader = PeriodicReader(
        clock, MeterDirectory(_Store(meters)), sink,  # type: ignore[arg-type]
        period=3600, timeout=TIMEOUT, concurrency=4, endpoint_for=channels,
    )
    return reader, sink


def run(clock: Clock, reader: PeriodicReader, until: float, step: float = 0.01) -> None:
    """Start the reader (one cycle now) and let Clock time pass up to ``until``."""
    if not reader.running:
        reader.startService()
    while clock.seconds() < until - 1e-9:
        clock.advance(step)


def iec(meter_id: str, line: str, address: str) -> Meter:
    return Meter(meter_id, "iec62056-21", f"{line}@{address}")


def dlt(meter_id: str, line: str, address: str, **metadata: str) -> Meter:
    return Meter(meter_id, "dlt645", f"{line}@{address}",
                 metadata={"dlt645_retries": "0", **metadata})


class BusTimeoutTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.bus = MemoryLine(self.clock, mixed_bus(
            self.clock, iec=["10000001"], dlt645=["000000123456"]))

    def test_meter_that_never_answers_costs_its_own_timeout_only(self) -> None:
        meters = [
            iec("first", "bus:1", "10000001"),
            iec("silent", "bus:1", "10000009"),  # nobody on the bus has this address
            dlt("last", "bus:1", "000000123456"),
        ]
        reader, sink = reader_on(self.clock, meters, {"bus": self.bus})
        run(self.clock, reader, TIMEOUT - 0.05)
        self.assertEqual([m for _, m in sink.submitted], ["first"])
        self.assertEqual((reader.reads_ok, reader.reads_failed), (1, 0))
        run(self.clock, reader, TIMEOUT + 0.5)
        self.assertEqual([m for _, m in sink.submitted], ["first", "last"])
        self.assertEqual((reader.reads_ok, reader.reads_failed), (2, 1))
        # The meter after the silent one was read as soon as the silent one's time was up.
        self.assertLess(sink.when("last") - TIMEOUT, 0.2)
        self.assertEqual(self.bus.opened, 3)
        reader.stopService()

    def test_each_silent_meter_costs_one_timeout(self) -> None:
        meters = [
            iec("silent-1", "bus:1", "10000008"),
            iec("silent-2", "bus:1", "10000009"),
            dlt("last", "bus:1", "000000123456"),
        ]
        reader, sink = reader_on(self.clock, meters, {"bus": self.bus})
        run(self.clock, reader, 2 * TIMEOUT + 0.5)
        self.assertEqual(reader.reads_failed, 2)
        self.assertLess(abs(sink.when("last") - 2 * TIMEOUT), 0.2)
        reader.stopService()

    def test_silent_meter_does_not_hold_up_another_line(self) -> None:
        other = MemoryLine(self.clock, mixed_bus(self.clock, dlt645=["000000123456"]))
        meters = [
            iec("silent", "bus:1", "10000009"),
            dlt("elsewhere", "other:2", "000000123456"),
        ]
        reader, sink = reader_on(self.clock, meters, {"bus": self.bus, "other": other})
        run(self.clock, reader, 0.5)
        self.assertEqual([m for _, m in sink.submitted], ["elsewhere"])
        reader.stopService()


class ConcentratorTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.line = MemoryLine(self.clock, mixed_bus(
            self.clock, dlt645=["000000000001", "000000000002", "000000000003"]))

    def test_concentrator_is_read_before_the_meters_it_owns(self) -> None:
        meters = [
            dlt("m2", "bus:1", "000000000002", concentrator="c1"),
            dlt("other", "bus:1", "000000000003"),
            dlt("m3", "bus:1", "000000000003", concentrator="c1"),
            dlt("c1", "bus:1", "000000000001"),
        ]
        reader, sink = reader_on(self.clock, meters, {"bus": self.line})
        run(self.clock, reader, 1)
        self.assertEqual([m for _, m in sink.submitted], ["other", "c1", "m2", "m3"])
        self.assertEqual(reader.reads_ok, 4)
        reader.stopService()

    def test_meters_behind_a_silent_concentrator_are_skipped_that_cycle(self) -> None:
        meters = [
            dlt("c9", "bus:1", "000000000009"),  # not answering
            dlt("m2", "bus:1", "000000000002", concentrator="c9"),
            dlt("m3", "bus:1", "000000000003", concentrator="c9"),
            dlt("free", "bus:1", "000000000001"),
        ]
        reader, sink = reader_on(self.clock, meters, {"bus": self.line})
        run(self.clock, reader, TIMEOUT + 0.5)
        self.assertEqual([m for _, m in sink.submitted], ["free"])
        self.assertEqual((reader.reads_failed, reader.reads_skipped), (1, 2))
        # One timeout for the concentrator, none for the meters behind it.
        self.assertLess(sink.when("free") - TIMEOUT, 0.2)
        reader.stopService()

    def test_meter_not_on_its_concentrators_line_is_refused_naming_it(self) -> None:
        from twisted.logger import globalLogPublisher

        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        meters = [
            dlt("c1", "bus:1", "000000000001"),
            dlt("astray", "bus:other", "000000000002", concentrator="c1"),
            dlt("m3", "bus:1", "000000000003", concentrator="nobody"),
        ]
        reader, sink = reader_on(self.clock, meters, {"bus": self.line})
        run(self.clock, reader, 1)
        self.assertEqual([m for _, m in sink.submitted], ["c1"])
        self.assertEqual(reader.reads_failed, 2)
        errors = [str(e.get("error")) for e in logged if e.get("error") is not None]
        self.assertTrue(any("astray" in e and "concentrator" in e for e in errors), errors)
        self.assertTrue(any("m3" in e and "'nobody'" in e for e in errors), errors)
        reader.stopService()
