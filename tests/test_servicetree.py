"""The service tree (fep.servicetree): children start one after the other, each once the one
before is ready; stop in reverse, each once the one after has stopped; a stop while starting
cancels the start under way; a listener's start fires once it listens, fails when it cannot."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from fep.servicetree import Listener, OrderedMultiService, Step


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.gates: dict[str, Deferred[None]] = {}

    def step(self, name: str, *, wait_start: bool = False, wait_stop: bool = False) -> Step:
        async def start() -> None:
            self.events.append(f"start {name}")
            if wait_start:
                gate: Deferred[None] = Deferred()
                self.gates[f"start {name}"] = gate
                await gate
            self.events.append(f"ready {name}")

        async def stop() -> None:
            self.events.append(f"stop {name}")
            if wait_stop:
                gate: Deferred[None] = Deferred()
                self.gates[f"stop {name}"] = gate
                await gate
            self.events.append(f"stopped {name}")

        return Step(name, start, stop)


class PlainService(service.Service):
    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.opened: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        self.events.append(f"start {self.name}")

    def stopService(self) -> None:
        super().stopService()
        self.events.append(f"stop {self.name}")


class OrderedMultiServiceTests(unittest.TestCase):
    def test_a_child_starts_once_the_one_before_is_ready(self) -> None:
        r = Recorder()
        tree = OrderedMultiService()
        tree.add(r.step("store", wait_start=True), "store")
        tree.add(r.step("router"), "router")
        started = tree.startService()
        self.assertEqual(r.events, ["start store"])
        r.gates["start store"].callback(None)
        self.assertEqual(r.events, ["start store", "ready store", "start router",
                                    "ready router"])
        self.assertIsNone(self.successResultOf(started))

    def test_ready_callable_for_a_service_of_another_shape(self) -> None:
        events: list[str] = []
        tree = OrderedMultiService()
        pool = PlainService(events)
        tree.add(pool, "modem-pool", ready=lambda: pool.opened)
        tree.add(PlainService(events), "scheduler")
        started = tree.startService()
        self.assertEqual(events, ["start modem-pool"])
        pool.opened.callback(None)
        self.assertEqual(events, ["start modem-pool", "start scheduler"])
        self.successResultOf(started)

    def test_stop_is_in_reverse_each_waiting_for_the_one_after(self) -> None:
        r = Recorder()
        tree = OrderedMultiService()
        for name in ("store", "router", "listener"):
            tree.add(r.step(name, wait_stop=name == "router"), name)
        self.successResultOf(tree.startService())
        del r.events[:]
        stopped = tree.stopService()
        self.assertEqual(r.events, ["stop listener", "stopped listener", "stop router"])
        self.assertNoResult(stopped)
        r.gates["stop router"].callback(None)
        self.assertEqual(r.events[-3:], ["stopped router", "stop store", "stopped store"])
        self.successResultOf(stopped)

    def test_a_failing_start_fails_the_tree_and_starts_nothing_after(self) -> None:
        r = Recorder()
        tree = OrderedMultiService()

        async def broken() -> None:
            raise RuntimeError("no spool")

        tree.add(r.step("store"), "store")
        tree.add(Step("router", broken), "router")
        tree.add(r.step("listener"), "listener")
        failure = self.failureResultOf(tree.startService(), RuntimeError)
        self.assertIn("no spool", str(failure.value))
        self.assertEqual(r.events, ["start store", "ready store"])
        # Stopping afterwards stops what had started (the listener never did).
        self.successResultOf(tree.stopService())
        self.assertNotIn("stop listener", r.events)
        self.assertIn("stopped store", r.events)

    def test_a_stop_while_starting_cancels_the_start_under_way(self) -> None:
        r = Recorder()
        tree = OrderedMultiService()
        tree.add(r.step("store", wait_start=True), "store")
        tree.add(r.step("router"), "router")
        started = tree.startService()
        started.addErrback(lambda f: None)
        self.successResultOf(tree.stopService())
        self.assertEqual(r.events, ["start store", "stop store", "stopped store"])
        self.assertFalse(tree.running)

    def test_a_child_that_fails_to_stop_does_not_keep_the_others_running(self) -> None:
        r = Recorder()
        tree = OrderedMultiService()

        def broken() -> Deferred[None]:
            raise RuntimeError("cannot")

        tree.add(r.step("store"), "store")
        tree.add(Step("router", stop=broken), "router")
        self.successResultOf(tree.startService())
        self.successResultOf(tree.stopService())
        self.assertIn("stopped store", r.events)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_children_are_not_started_at_privileged_start(self) -> None:
        # twistd calls privilegedStartService on the root first: a listener must not listen
        # before the store it feeds is open.
        reactor = MemoryReactorClock()
        tree = OrderedMultiService()
        tree.add(Listener(TCP4ServerEndpoint(reactor, 0), Factory.forProtocol(Protocol)),
                 "push")
        tree.privilegedStartService()
        self.assertEqual(reactor.tcpServers, [])
        self.successResultOf(tree.startService())
        self.assertEqual(len(reactor.tcpServers), 1)


class ListenerTests(unittest.TestCase):
    def test_start_fires_with_the_port_and_announces_it(self) -> None:
        reactor = MemoryReactorClock()
        told: list[Any] = []
        listener = Listener(TCP4ServerEndpoint(reactor, 4059),
                            Factory.forProtocol(Protocol), told.append)
        port = self.successResultOf(listener.startService())
        self.assertEqual(told, [port])
        self.assertIs(listener.port, port)
        self.successResultOf(maybeDeferred(listener.stopService))

    def test_factory_built_at_start(self) -> None:
        reactor = MemoryReactorClock()
        built: list[Factory] = []

        def build() -> Factory:
            built.append(Factory.forProtocol(Protocol))
            return built[-1]

        listener = Listener(TCP4ServerEndpoint(reactor, 4059), build)
        self.assertEqual(built, [])
        self.successResultOf(listener.startService())
        self.assertIs(reactor.tcpServers[0][1], built[0])

    def test_cannot_listen_fails_the_start(self) -> None:
        from twisted.internet import reactor

        taken = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        listener = Listener(
            TCP4ServerEndpoint(reactor, taken.getHost().port, interface="127.0.0.1"),
            Factory.forProtocol(Protocol))
        with self.assertRaises(CannotListenError):
            listener.startService()
        self.successResultOf(maybeDeferred(listener.stopService))
        self.assertFalse(listener.running)

    def test_a_factory_that_cannot_be_built_fails_the_start_and_stops_cleanly(self) -> None:
        reactor = MemoryReactorClock()

        def build() -> Factory:
            raise ValueError("no tokens file")

        listener = Listener(TCP4ServerEndpoint(reactor, 4059), build)
        with self.assertRaises(ValueError):
            listener.startService()
        self.assertIsNone(listener.stopService())
        self.assertFalse(listener.running)
