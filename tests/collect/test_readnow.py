"""Read-now as a job of the collection engine (fep.collect.readnow), on a fake clock with a
real SQLite job store run synchronously and a protocol whose reads the test ends by hand:
the door's read is an on-demand job pinned to this node that the scheduler runs under its
resource limits (a meter whose line is busy waits its turn), with the read's options; its
records go to the sink once and come back to the door; a failure names meter, route and
protocol; a read that cannot start before its deadline is missed; a sleeping GPRS modem is
woken first; with no scheduler running the same job runs in place."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest

from fep.collect.engine import CollectionEngine
from fep.collect.readnow import OPTIONS, READ_NOW
from fep.collect.tasks import Job, JobStatus, Priority
from fep.config import parse_config
from fep.errors import ChannelError, ProtocolError
from fep.model import Meter, ObisCode, Reading, Record
from tests.collect.fakes import directory_with, sync_store
from tests.collect.test_scheduler import FakeWakeUp
from tests.fakes import SyncReactor, advance_until, fired

T0 = 900.0 * 1_888_889
BUS = "tcp:host=10.0.0.1:port=4001"


def reading(meter: str) -> Reading:
    return Reading(meter, ObisCode(1, 0, 1, 8, 0, 255), Decimal("12.5"),
                   meter_time=datetime(2026, 12, 7, tzinfo=UTC))


class HandProtocol:
    """A meter protocol whose reads wait until the test ends them."""

    def __init__(self) -> None:
        self.reads: list[tuple[Meter, Deferred[list[Record]]]] = []

    def read(self, reactor: Any, endpoint: Any, meter: Meter,
             timeout: float) -> Deferred[list[Record]]:
        d: Deferred[list[Record]] = Deferred()
        self.reads.append((meter, d))
        return d

    def reading(self) -> list[str]:
        return [m.id for m, d in self.reads if not d.called]

    def answer(self, meter: str) -> list[Record]:
        for m, d in self.reads:
            if m.id == meter and not d.called:
                records: list[Record] = [reading(meter)]
                d.callback(records)
                return records
        raise AssertionError(f"no read of {meter} under way: {self.reading()}")

    def fail(self, meter: str, error: Exception) -> None:
        for m, d in self.reads:
            if m.id == meter and not d.called:
                d.errback(error)
                return
        raise AssertionError(f"no read of {meter} under way: {self.reading()}")


class Sink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def submit(self, records: Any) -> Deferred[None]:
        self.records.extend(records)
        return succeed(None)


class Observer:
    def __init__(self) -> None:
        self.told: list[tuple[str, str]] = []

    def read_started(self, meter: Meter) -> None:
        self.told.append(("started", meter.id))

    def read_finished(self, meter: Meter, error: Any, records: int) -> None:
        self.told.append(("finished" if error is None else "failed", meter.id))


class ReadNowTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = SyncReactor()
        self.reactor.advance(T0)
        self.store, _ = sync_store(self.reactor, self)
        self.protocol = HandProtocol()
        self.sink = Sink()
        self.observer = Observer()
        self.fleet = [
            Meter("m1", "dlms", f"{BUS}@1"),
            Meter("m2", "dlms", f"{BUS}@2"),
            Meter("g1", "iec62056-21", "gprs:imei=356938035643809"),
        ]

    def engine(self, *, start: bool = True, **kw: Any) -> CollectionEngine:
        settings = parse_config("[fep]\n[store]\n[collect]\ndefault_task = no\npoll = 1\n"
                                "timeout = 3\n").collect
        engine = CollectionEngine(
            self.reactor, self.store, self.sink, directory_with(self.store, self.fleet),
            settings, node="a", endpoint_for=lambda reactor, route: object(),
            protocol_for=lambda name: self.protocol, **kw)  # type: ignore[arg-type,return-value]
        engine.observers.append(self.observer)
        if start:
            engine.scheduler.startService()
            self.addCleanup(self.stop, engine)
        return engine

    def stop(self, engine: CollectionEngine) -> None:
        for _, d in self.protocol.reads:
            if not d.called:
                d.errback(ChannelError("test over"))
        d = engine.scheduler.stopService()
        advance_until(self.reactor, d)

    def meter(self, meter_id: str) -> Meter:
        return next(m for m in self.fleet if m.id == meter_id)

    def settle(self) -> None:
        for _ in range(5):
            self.reactor.advance(0.01)

    def test_a_read_now_is_an_on_demand_job_the_door_waits_for(self) -> None:
        engine = self.engine()
        done = engine.reader.read_now(self.meter("m1"), who="api:alice",
                                      options={"dlms_objects": "3/1.0.1.8.0.255/2"})
        self.settle()
        self.assertEqual(self.protocol.reading(), ["m1"])
        read_as = self.protocol.reads[0][0]
        self.assertEqual(read_as.metadata["dlms_objects"], "3/1.0.1.8.0.255/2")
        self.assertEqual(read_as.address, "1")  # the route's @ADDRESS, as for every job
        self.assertFalse(done.called)
        records = self.protocol.answer("m1")
        self.assertEqual(advance_until(self.reactor, done), records)
        self.assertEqual(self.sink.records, records)  # to the router once
        self.assertEqual(self.observer.told, [("started", "m1"), ("finished", "m1")])
        [job] = fired(engine.jobs.jobs())
        self.assertEqual((job.status, job.priority, job.pinned, job.task, job.records),
                         (JobStatus.DONE, Priority.ON_DEMAND, "a", None, 1))
        self.assertEqual(job.params[READ_NOW], "api:alice")
        self.assertEqual(dict(job.params[OPTIONS]), {"dlms_objects": "3/1.0.1.8.0.255/2"})

    def test_a_meter_whose_line_is_busy_waits_its_turn(self) -> None:
        engine = self.engine()
        policy = engine.scheduler.resources
        busy = Job(id=0, meter="m1", kind="registers", route=self.meter("m1").route,
                   resource=policy.key(self.meter("m1").route), due=self.reactor.seconds(),
                   run_at=self.reactor.seconds(), task="regs")
        fired(engine.jobs.add_jobs([busy], self.reactor.seconds()))
        engine.scheduler.kick()
        self.settle()
        self.assertEqual(self.protocol.reading(), ["m1"])
        done = engine.reader.read_now(self.meter("m2"), who="console:bob")
        self.reactor.advance(30)
        # Same bus, another address: the read-now waits while m1's read holds the line.
        self.assertEqual(self.protocol.reading(), ["m1"])
        self.assertFalse(done.called)
        self.protocol.answer("m1")
        self.settle()
        self.assertEqual(self.protocol.reading(), ["m2"])
        records = self.protocol.answer("m2")
        self.assertEqual(advance_until(self.reactor, done), records)

    def test_a_failed_read_names_meter_route_and_protocol(self) -> None:
        engine = self.engine()
        done = engine.reader.read_now(self.meter("m2"), who="api:alice")
        self.settle()
        self.protocol.fail("m2", ProtocolError("association refused"))
        with self.assertRaises(ProtocolError) as caught:
            advance_until(self.reactor, done)
        text = str(caught.exception)
        for part in ("m2", f"{BUS}@2", "dlms", "association refused"):
            self.assertIn(part, text)
        self.assertEqual(caught.exception.meter, "m2")
        self.assertEqual(self.observer.told, [("started", "m2"), ("failed", "m2")])
        [job] = fired(engine.jobs.jobs())
        self.assertEqual((job.status, job.attempts), (JobStatus.FAILED, 1))  # no retry

    def test_a_read_that_cannot_start_before_its_deadline_is_missed(self) -> None:
        engine = self.engine()
        engine.reader.wait = 60.0
        policy = engine.scheduler.resources
        busy = Job(id=0, meter="m1", kind="registers", route=self.meter("m1").route,
                   resource=policy.key(self.meter("m1").route), due=self.reactor.seconds(),
                   run_at=self.reactor.seconds(), task="regs")
        fired(engine.jobs.add_jobs([busy], self.reactor.seconds()))
        engine.scheduler.kick()
        self.settle()
        done = engine.reader.read_now(self.meter("m2"), who="api:alice")
        with self.assertRaises(ChannelError) as caught:
            advance_until(self.reactor, done, step=1.0, limit=120)
        text = str(caught.exception)
        self.assertIn("meter m2 (route", text)
        self.assertIn("not read", text)
        self.assertEqual(self.protocol.reading(), ["m1"])

    def test_a_sleeping_gprs_modem_is_woken_before_the_read(self) -> None:
        wakeup = FakeWakeUp()
        engine = self.engine(wakeup=wakeup)
        done = engine.reader.read_now(self.meter("g1"), who="api:alice")
        self.settle()
        self.assertEqual([m.id for m, _, _ in wakeup.asked], ["g1"])
        self.assertEqual(self.protocol.reading(), [])
        wakeup.asked[0][2].callback(None)
        self.settle()
        records = self.protocol.answer("g1")
        self.assertEqual(advance_until(self.reactor, done), records)

    def test_a_gprs_meter_whose_modem_is_on_another_node_is_refused_at_once(self) -> None:
        # Its modem's session lives on node b: only b can lend it. The door on a is told
        # so at once, naming the node, instead of a job that would be missed minutes later.
        engine = self.engine()
        g1 = self.meter("g1")
        resource = engine.scheduler.resources.key(g1.route)
        fired(engine.jobs.set_home(resource, "b", self.reactor.seconds()))
        done = engine.reader.read_now(g1, who="api:alice")
        self.settle()
        failure = self.failureResultOf(done, ChannelError)
        self.assertIn("meter g1 (route gprs:imei=356938035643809", str(failure.value))
        self.assertIn("connected to node b", str(failure.value))
        self.assertEqual(fired(engine.jobs.jobs()), [])
        self.assertEqual(self.protocol.reading(), [])
        # Its home here (or nowhere known): read as usual.
        fired(engine.jobs.set_home(resource, "a", self.reactor.seconds()))
        done = engine.reader.read_now(g1, who="api:alice")
        self.settle()
        records = self.protocol.answer("g1")
        self.assertEqual(advance_until(self.reactor, done), records)

    def test_with_no_scheduler_running_the_same_job_runs_in_place(self) -> None:
        engine = self.engine(start=False)
        done = engine.reader.read_now(self.meter("m1"), who="api:alice",
                                      options={"dlms_objects": "3/1.0.1.8.0.255/2"})
        self.assertEqual(self.protocol.reading(), ["m1"])
        self.assertEqual(self.protocol.reads[0][0].metadata["dlms_objects"],
                         "3/1.0.1.8.0.255/2")
        records = self.protocol.answer("m1")
        self.assertEqual(fired(done), records)
        self.assertEqual(self.sink.records, records)
        self.assertEqual(fired(engine.jobs.jobs()), [])
        self.assertEqual(self.observer.told, [("started", "m1"), ("finished", "m1")])
        failing = engine.reader.read_now(self.meter("m2"), who="api:alice")
        self.protocol.fail("m2", ChannelError("connection refused"))
        with self.assertRaises(ChannelError) as caught:
            fired(failing)
        self.assertIn(f"meter m2 (route {BUS}@2, protocol dlms): connection refused",
                      str(caught.exception))
