"""Listeners with limits (fep.channels.listeners): connection cap, per-source cap, idle
timeout and pre-identification byte cap, on a memory reactor and string transports."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
from twisted.logger import Logger
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from fep.channels.listeners import (
    LimitedFactory,
    ListenerLimits,
    ListenerSet,
    limits_for,
    source_of,
    ssh_authenticated,
    with_backlog,
)
from fep.config import default_config, parse_config
from fep.interfaces import IIdentifiedTransport, peer_identified
from fep.ratelog import RateLimitedLog


class Recorder(Protocol):
    """Keeps what it receives; says the peer is identified on a line ``HELLO``."""

    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"HELLO\n" in self.received:
            peer_identified(self.transport)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


class Logged:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def addr(host: str = "192.0.2.1", port: int = 40000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


class LimitedFactoryTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.logged = Logged()
        self.protocols: list[Recorder] = []

        def build() -> Recorder:
            p = Recorder()
            self.protocols.append(p)
            return p

        self.inner = Factory.forProtocol(build)

    def factory(self, **limits: Any) -> LimitedFactory:
        events = RateLimitedLog(Logger(observer=self.logged), self.clock, burst=2)
        return LimitedFactory(self.inner, ListenerLimits(**limits), "test", clock=self.clock,
                              events=events)

    def connect(self, factory: LimitedFactory, host: str = "192.0.2.1",
                port: int = 40000) -> tuple[Any, StringTransportWithDisconnection]:
        protocol = factory.buildProtocol(addr(host, port))
        transport = StringTransportWithDisconnection(peerAddress=addr(host, port))
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def test_connection_past_the_cap_is_closed_at_once_and_counted(self) -> None:
        factory = self.factory(max_connections=2, max_per_source=0)
        self.connect(factory, "192.0.2.1")
        self.connect(factory, "192.0.2.2")
        _refused, transport = self.connect(factory, "192.0.2.3")
        self.assertTrue(transport.disconnected)  # aborted in connectionMade
        self.assertEqual(len(self.protocols), 2)  # the listener's protocol was never built
        self.assertEqual(factory.stats.refused_connections, 1)
        self.assertEqual(factory.stats.open, 2)

    def test_a_slot_is_free_again_when_a_connection_ends(self) -> None:
        factory = self.factory(max_connections=1, max_per_source=0)
        _, first = self.connect(factory)
        first.loseConnection()
        _, second = self.connect(factory)
        self.assertFalse(second.disconnected)
        self.assertEqual(factory.stats.open, 1)
        self.assertEqual(factory.stats.accepted, 2)

    def test_per_source_cap_refuses_only_that_source(self) -> None:
        factory = self.factory(max_connections=100, max_per_source=2)
        for port in (1, 2):
            self.connect(factory, "198.51.100.7", port)
        _, refused = self.connect(factory, "198.51.100.7", 3)
        _, other = self.connect(factory, "198.51.100.8", 4)
        self.assertTrue(refused.disconnected)
        self.assertFalse(other.disconnected)
        self.assertEqual(factory.stats.refused_source, 1)
        self.assertEqual(factory.per_source, {"198.51.100.7": 2, "198.51.100.8": 1})

    def test_per_source_count_is_released(self) -> None:
        factory = self.factory(max_per_source=1)
        _, first = self.connect(factory, "198.51.100.7")
        first.loseConnection()
        self.assertEqual(factory.per_source, {})
        _, again = self.connect(factory, "198.51.100.7")
        self.assertFalse(again.disconnected)

    def test_idle_connection_is_closed_after_the_timeout(self) -> None:
        factory = self.factory(idle_timeout=30.0)
        _, transport = self.connect(factory)
        self.clock.advance(20)
        transport.protocol.dataReceived(b"x")  # resets the timer
        self.clock.advance(20)
        self.assertFalse(transport.disconnected)
        self.clock.advance(11)
        self.assertTrue(transport.disconnected)
        self.assertEqual(factory.stats.idle_closed, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_idle_timer_is_left_when_the_peer_goes(self) -> None:
        factory = self.factory(idle_timeout=30.0)
        _, transport = self.connect(factory)
        transport.loseConnection()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.protocols[0].lost)

    def test_bytes_past_the_cap_before_identification_close_the_connection(self) -> None:
        factory = self.factory(max_unidentified_bytes=100)
        protocol, transport = self.connect(factory)
        protocol.dataReceived(b"j" * 60)
        protocol.dataReceived(b"j" * 60)
        self.assertTrue(transport.disconnected)
        # The chunk that crossed the cap never reached the listener's protocol.
        self.assertEqual(self.protocols[0].received, b"j" * 60)
        self.assertEqual(factory.stats.overflow_closed, 1)
        protocol.dataReceived(b"more")
        self.assertEqual(self.protocols[0].received, b"j" * 60)

    def test_identified_peer_may_send_more(self) -> None:
        factory = self.factory(max_unidentified_bytes=100)
        protocol, transport = self.connect(factory)
        protocol.dataReceived(b"HELLO\n")
        protocol.dataReceived(b"d" * 10_000)
        self.assertFalse(transport.disconnected)
        self.assertEqual(factory.stats.identified, 1)
        self.assertEqual(len(self.protocols[0].received), 10_006)

    def test_a_big_read_reaches_an_unidentified_protocol_in_slices_until_it_gives_up(
            self) -> None:
        seen: list[int] = []

        class GivesUp(Protocol):
            def dataReceived(self, data: bytes) -> None:
                seen.append(len(data))
                if sum(seen) > 5000:
                    self.transport.loseConnection()  # type: ignore[union-attr]

        factory = LimitedFactory(Factory.forProtocol(GivesUp), ListenerLimits(), "test",
                                 clock=self.clock)
        protocol, _ = self.connect(factory)
        protocol.dataReceived(b"j" * 65536)
        self.assertEqual(seen, [4096, 4096])

    def test_bytes_after_identification_in_the_same_read_do_not_count(self) -> None:
        factory = self.factory(max_unidentified_bytes=5000)
        protocol, transport = self.connect(factory)
        protocol.dataReceived(b"HELLO\n" + b"d" * 60000)  # e.g. queued pushes after the first
        self.assertFalse(transport.disconnected)
        self.assertEqual(len(self.protocols[0].received), 60006)

    def test_an_identified_protocol_gets_the_rest_of_a_read_at_once(self) -> None:
        protocol, _ = self.connect(self.factory())
        protocol.dataReceived(b"HELLO\n" + b"d" * 20000)
        self.assertEqual(len(self.protocols[0].received), 20006)

    def test_identify_on_write(self) -> None:
        factory = LimitedFactory(self.inner, ListenerLimits(max_unidentified_bytes=10), "http",
                                 clock=self.clock, identify_on_write=True)
        protocol, transport = self.connect(factory)
        self.protocols[0].transport.write(b"HTTP/1.1 401 Unauthorized\r\n\r\n")
        protocol.dataReceived(b"x" * 100)
        self.assertFalse(transport.disconnected)
        self.assertEqual(transport.value(), b"HTTP/1.1 401 Unauthorized\r\n\r\n")

    def test_identified_when_probe(self) -> None:
        factory = LimitedFactory(self.inner, ListenerLimits(max_unidentified_bytes=10), "ssh",
                                 clock=self.clock, identified_when=ssh_authenticated)
        protocol, _transport = self.connect(factory)
        protocol.dataReceived(b"abc")
        self.assertFalse(protocol.identified)
        self.protocols[0].avatar = object()  # type: ignore[attr-defined]
        protocol.dataReceived(b"def")
        self.assertTrue(protocol.identified)

    def test_refusals_are_logged_rate_limited(self) -> None:
        factory = self.factory(max_connections=1, max_per_source=0)
        self.connect(factory, "192.0.2.1")
        for i in range(10):
            self.connect(factory, f"192.0.2.{i + 2}")
        self.assertEqual(factory.stats.refused_connections, 10)
        self.assertEqual(len(self.logged.events), 2)
        self.clock.advance(60)
        self.assertEqual(len(self.logged.events), 3)
        self.assertEqual(self.logged.events[-1]["log_suppressed"], 8)

    def test_transport_offers_the_hook(self) -> None:
        protocol, _ = self.connect(self.factory())
        self.assertTrue(verifyObject(IIdentifiedTransport, protocol))
        peer_identified(object())  # any other transport: nothing happens


class ConfigTests(unittest.TestCase):
    def test_defaults(self) -> None:
        section = default_config().listeners
        self.assertEqual(limits_for("push_iec62056_21", section), ListenerLimits())
        self.assertEqual(limits_for("push_dlms", section).max_unidentified_bytes, 16384)
        gprs = limits_for("gprs", section)
        self.assertEqual(gprs.max_connections, 20000)
        self.assertEqual(gprs.max_unidentified_bytes, 65536)

    def test_section_default_and_listener_override(self) -> None:
        config = parse_config("[fep]\n[store]\n[listeners]\nmax_per_source = 4\n"
                              "push_dlms.max_per_source = 2\nssh.idle_timeout =\n")
        self.assertEqual(limits_for("push_dlms", config.listeners).max_per_source, 2)
        self.assertEqual(limits_for("push_iec62056_21", config.listeners).max_per_source, 4)
        self.assertEqual(limits_for("ssh", config.listeners).idle_timeout, 300.0)

    def test_listener_set_keeps_the_counts(self) -> None:
        limits = ListenerSet(default_config().listeners, MemoryReactorClock())
        limits.wrap(Factory.forProtocol(Protocol), "gprs", "gprs tcp:4070")
        self.assertEqual(limits.stats()["gprs tcp:4070"]["accepted"], 0)

    def test_sources(self) -> None:
        self.assertEqual(source_of(addr("203.0.113.5")), "203.0.113.5")
        self.assertEqual(source_of(UNIXAddress(None)), "unix")

    def test_gprs_backlog(self) -> None:
        self.assertEqual(with_backlog("tcp:4070:interface=0.0.0.0"),
                         "tcp:4070:interface=0.0.0.0:backlog=4096")
        self.assertEqual(with_backlog("tcp:4070:backlog=100"), "tcp:4070:backlog=100")
        self.assertEqual(with_backlog("unix:/tmp/x"), "unix:/tmp/x")
