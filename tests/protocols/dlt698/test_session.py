"""The Twisted DL/T 698.45 session: settings from the meter's metadata, the step timer and
errors on a MemoryReactorClock, the protocol's capabilities, and a pushed report taken in
a read over loopback TCP."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from fep.errors import ConfigError, SessionTimeout
from fep.interfaces import IClock, IEventReader, IMeterProtocol, IProfileReader
from fep.model import Meter, MeterEvent
from fep.protocols.dlt698.data import OAD
from fep.protocols.dlt698.frames import FrameDecoder
from fep.protocols.dlt698.session import Dlt698Protocol, settings_for
from fep.protocols.registry import meter_protocol
from fep.sim.dlt698 import Dlt698MeterFactory, SimulatedDlt698Meter

reactor: Any = global_reactor

ROUTE = "tcp:host=10.0.0.7:port=8698"


def meter(address: str | None = "000000123456", **metadata: str) -> Meter:
    return Meter(id="m1", protocol="dlt698", route=ROUTE, address=address, metadata=metadata)


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    def __init__(self) -> None:
        self.transport = StringTransport()
        self.protocol: Any = None

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        self.protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 0))
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)


def error_of(d: Deferred[Any]) -> Any:
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures, "the read did not fail"
    return failures[0].value


class SettingsTests(unittest.TestCase):
    def test_metadata_becomes_settings(self) -> None:
        s = settings_for(meter(dlt698_items="00100200, 20000200", dlt698_frozen="50040200",
                               dlt698_frozen_last="3", dlt698_connect="no",
                               dlt698_password="secret", dlt698_client="0x10",
                               dlt698_proxy="000000000001", dlt698_wakeup="no",
                               dlt698_retries="3"))  # fmt: skip
        self.assertEqual(s.items, (OAD(0x0010, 2), OAD(0x2000, 2)))
        self.assertEqual([(r.oad, r.last) for r in s.records], [(OAD(0x5004, 2), 3)])
        self.assertEqual((s.connect, s.password, s.client), (False, "secret", 0x10))
        self.assertEqual(s.address.address, "000000123456")
        self.assertEqual([p.address for p in s.proxies], ["000000000001"])
        self.assertEqual((s.meter, s.route), ("m1", ROUTE))
        self.assertEqual((s.wakeup, s.retries), (False, 3))

    def test_no_address_is_the_wildcard(self) -> None:
        self.assertEqual(settings_for(meter(None)).address.address, "AAAAAAAAAAAA")

    def test_bad_metadata_names_the_key(self) -> None:
        for key, value in (("dlt698_items", "0010020"), ("dlt698_connect", "maybe"),
                           ("dlt698_retries", "x"), ("tz", "Mars/Base"),
                           ("dlt698_proxy", "12ab")):
            with self.assertRaises(ConfigError) as caught:
                settings_for(meter(**{key: value}))
            self.assertEqual(caught.exception.key, key)


class SessionTests(unittest.TestCase):
    def test_the_protocol_provides_its_capabilities(self) -> None:
        protocol = meter_protocol("dlt698")
        for interface in (IMeterProtocol, IProfileReader, IEventReader, IClock):
            verifyObject(interface, protocol)

    def test_silence_times_out_after_the_retry_naming_meter_and_route(self) -> None:
        clock = MemoryReactorClock()
        endpoint = FakeEndpoint()
        d = Dlt698Protocol().read(clock, endpoint, meter(dlt698_retries="1"), 5.0)
        (frame,) = FrameDecoder().receive(endpoint.transport.value())
        self.assertEqual(frame.data[0], 0x02)  # CONNECT first
        clock.advance(5.0)  # no answer: sent again
        self.assertEqual(endpoint.transport.value().count(b"\x68\x38\x00"), 2)
        clock.advance(5.0)
        error = error_of(d)
        self.assertIsInstance(error, SessionTimeout)
        self.assertEqual((error.meter, error.route, error.protocol), ("m1", ROUTE, "dlt698"))
        self.assertIn("no valid answer to CONNECT within 5.0 s", str(error))
        self.assertFalse(clock.getDelayedCalls())

    def test_bad_settings_fail_before_connecting(self) -> None:
        endpoint = FakeEndpoint()
        d = Dlt698Protocol().read(MemoryReactorClock(), endpoint, meter(dlt698_items="zz"), 5.0)
        self.assertIsInstance(error_of(d), ConfigError)
        self.assertIsNone(endpoint.protocol)


class LoopbackTests(unittest.TestCase):
    @inlineCallbacks
    def test_a_report_pushed_during_a_read_is_left_unacknowledged(self) -> Any:
        sim = SimulatedDlt698Meter("000000123456")
        sim.report_outage(piid=5)
        port = reactor.listenTCP(0, Dlt698MeterFactory([sim], reactor), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        records = yield Dlt698Protocol().read(reactor, endpoint, meter(
            dlt698_items="20000200"), 5.0)
        # The read goes on and ends; the report is neither acknowledged nor kept (the
        # terminal sends it again to the path that keeps it before acknowledging).
        self.assertEqual([r.native_id for r in records],
                         ["20000201", "20000202", "20000203"])
        self.assertEqual(sim.acknowledged, [])
        self.assertNotIn(MeterEvent, {type(r) for r in records})
