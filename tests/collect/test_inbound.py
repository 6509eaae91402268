"""The engine's side of inbound GPRS sessions on a fake clock with a real SQLite job store:
a modem attached here makes this node the home of its routes (another node leaves their
jobs alone) until its session ends; a registered meter gets its on_register tasks; a wake-up
sends the text and waits for the modem to attach, or fails naming the meter."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from fep.collect.inbound import ModemWakeUp, SessionHomes
from fep.collect.scheduler import Scheduler
from fep.collect.tasks import Job, Priority, Task
from fep.errors import ChannelError
from fep.interfaces import IModemSessionObserver, IWakeUp
from fep.model import Meter
from tests.collect.fakes import ManualRunner, directory_with, sync_store
from tests.fakes import SyncReactor, fired

T0 = 900.0 * 1_888_889
MODEM = "gprs:imei=356938035643809"
GPRS_METER = Meter("g1", "dlms", MODEM)
TCP_METER = Meter("t1", "dlms", "tcp:host=10.0.0.1:port=4059")


class SessionHomesTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = SyncReactor()
        self.reactor.advance(T0)
        self.store, self.jobs = sync_store(self.reactor, self)
        self.runner = ManualRunner()
        directory = directory_with(self.store, [GPRS_METER, TCP_METER])
        self.scheduler = Scheduler(self.reactor, self.jobs, directory, self.runner, node="a")
        self.connected: set[str] = set()
        self.homes = SessionHomes(self.reactor, self.jobs, self.scheduler, node="a",
                                  connected=self.connected.__contains__)

    def now(self) -> float:
        return float(self.reactor.seconds())

    def add_jobs(self) -> None:
        policy = self.scheduler.resources
        fired(self.jobs.add_jobs([
            Job(id=0, meter=m.id, kind="registers", route=m.route,
                resource=policy.key(m.route), due=self.now(), run_at=self.now())
            for m in (GPRS_METER, TCP_METER)
        ], self.now()))

    def leased_by(self, node: str) -> list[str]:
        found = fired(self.jobs.lease(node, self.now(), self.now() + 60, 10, {}, {}))
        fired(self.jobs.release(node, [j.id for j in found]))
        return sorted(j.meter for j in found)

    def test_is_a_session_observer(self) -> None:
        verifyObject(IModemSessionObserver, self.homes)

    def test_an_attached_modem_keeps_its_jobs_on_this_node(self) -> None:
        self.add_jobs()
        self.connected.add(MODEM)
        self.homes.modem_attached([GPRS_METER, TCP_METER])
        # Another node may take the TCP meter's job, not the one of the modem here.
        self.assertEqual(self.leased_by("b"), ["t1"])
        self.assertEqual(self.leased_by("a"), ["g1", "t1"])

    def test_a_session_that_ends_gives_its_jobs_back_to_every_node(self) -> None:
        self.add_jobs()
        self.connected.add(MODEM)
        self.homes.modem_attached([GPRS_METER])
        self.connected.discard(MODEM)
        self.homes.modem_gone([GPRS_METER])
        self.assertEqual(self.leased_by("b"), ["g1", "t1"])

    def test_a_stale_session_ending_after_a_reconnect_keeps_the_home(self) -> None:
        self.add_jobs()
        self.connected.add(MODEM)
        self.homes.modem_attached([GPRS_METER])  # the new session
        self.homes.modem_gone([GPRS_METER])  # the old one it replaced
        self.assertEqual(self.leased_by("b"), ["t1"])

    def test_a_registered_meter_gets_its_on_register_tasks(self) -> None:
        now = self.now()
        task = Task(name="first", kind="load-profile", schedule="every 1d",
                    options={"on_register": "yes"})
        fired(self.jobs.save_task(task, now))
        fired(self.jobs.save_task(Task(name="regs", kind="registers", schedule="every 1d"),
                                  now))
        new = Meter("gprs-1", "dlms", "gprs:imei=356938035640001")
        self.homes.meter_registered(new)
        (job,) = fired(self.jobs.jobs())
        self.assertEqual((job.meter, job.task, job.priority), ("gprs-1", "first",
                                                                 Priority.ON_DEMAND))


class ModemWakeUpTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = SyncReactor()
        self.connected: set[str] = set()
        self.sent: list[str] = []
        self.send_result: Deferred[Any] | None = None

    def wakeup(self) -> ModemWakeUp:
        def send(meter: Meter) -> Deferred[Any]:
            self.sent.append(meter.id)
            return self.send_result if self.send_result is not None else succeed(None)

        return ModemWakeUp(self.reactor, send, self.connected.__contains__)

    def outcome(self, d: Deferred[None]) -> list[Any]:
        results: list[Any] = []
        d.addBoth(results.append)
        return results

    def test_provides_the_engines_wakeup_and_observes_sessions(self) -> None:
        w = self.wakeup()
        verifyObject(IWakeUp, w)
        verifyObject(IModemSessionObserver, w)
        self.assertFalse(w.is_connected(MODEM))
        self.connected.add(MODEM)
        self.assertTrue(w.is_connected(MODEM))

    def test_fires_once_the_woken_modem_attached(self) -> None:
        w = self.wakeup()
        done = self.outcome(w.wake_up(GPRS_METER, 60))
        self.assertEqual(self.sent, ["g1"])
        self.reactor.advance(30)
        w.modem_attached([TCP_METER])  # someone else: still waiting
        self.assertEqual(done, [])
        self.connected.add(MODEM)
        w.modem_attached([GPRS_METER])
        self.assertEqual(done, [None])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_modem_that_dials_in_while_the_text_is_sent_is_not_waited_for(self) -> None:
        self.send_result = Deferred()
        w = self.wakeup()
        done = self.outcome(w.wake_up(GPRS_METER, 60))
        self.connected.add(MODEM)
        self.send_result.callback(None)
        self.assertEqual(done, [None])

    def test_a_modem_that_does_not_dial_in_fails_the_wait_naming_the_meter(self) -> None:
        w = self.wakeup()
        done = self.outcome(w.wake_up(GPRS_METER, 60))
        self.reactor.advance(59)
        self.assertEqual(done, [])
        self.reactor.advance(1)
        (failure,) = done
        self.assertIsInstance(failure.value, ChannelError)
        self.assertIn("g1", str(failure.value))
        self.assertIn("did not connect within 60 s", str(failure.value))
        self.assertEqual(failure.value.route, MODEM)

    def test_a_text_that_cannot_be_sent_fails_at_once(self) -> None:
        self.send_result = fail(ChannelError("meter g1 has no sms_number", route="sms:x"))
        w = self.wakeup()
        (failure,) = self.outcome(w.wake_up(GPRS_METER, 60))
        self.assertIn("no sms_number", str(failure.value))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(120)  # the timer is gone: nothing left unhandled
