"""A meter behind a DL/T 698.45 terminal read through the terminal (metadata
``dlt698_terminal``, set for its jobs by the ``dlt698:ID`` route): the session is the
terminal's, the meter's reads are PROXY-Requests, its records its own; a report the
terminal pushes meanwhile on a channel that carries pushes is kept and acknowledged."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest
from zope.interface import alsoProvides, implementer

from fep.errors import ConfigError
from fep.interfaces import IPushChannel
from fep.model import IntervalBlock, Meter, MeterEvent, Reading, Record
from fep.protocols.dlt698.apdu import LinkType
from fep.protocols.dlt698.frames import FrameDecoder
from fep.protocols.dlt698.session import Dlt698Protocol, settings_for
from fep.sim.dlt698 import Dlt698MeterFactory, SimulatedDlt698Meter
from tests.protocols.dlt698.test_session import FakeEndpoint

reactor: Any = global_reactor
TERMINAL = "000000009999"
CHILDREN = ("000000000001", "000000000002")


def child(address: str = CHILDREN[0], **metadata: str) -> Meter:
    return Meter(id=f"m-{address[-1]}", protocol="dlt698", route="dlt698:T1", address=address,
                 metadata={"concentrator": "T1", "dlt698_terminal": TERMINAL, **metadata})


def concentrator(clock: Any = None) -> SimulatedDlt698Meter:
    kwargs = {"clock": clock} if clock is not None else {}
    sim = SimulatedDlt698Meter(TERMINAL, **kwargs)
    for n, address in enumerate(CHILDREN, 1):
        sim.children[address] = SimulatedDlt698Meter(address, start_kwh=100.0 * n, **kwargs)
    return sim


class SettingsTests(unittest.TestCase):
    def test_the_session_is_the_terminals_and_the_meters_reads_are_proxied(self) -> None:
        s = settings_for(child(dlt698_items="00100200,20000200"))
        self.assertEqual(s.address.address, TERMINAL)
        self.assertEqual((s.items, s.records), ((), ()))
        (proxy,) = s.proxies
        self.assertEqual((proxy.address, proxy.meter), (CHILDREN[0], "m-1"))
        self.assertEqual([str(o) for o in proxy.items], ["00100200", "20000200"])

    def test_a_clock_set_and_a_relay_read_back_go_in_proxy_requests(self) -> None:
        s = settings_for(child(), set_clock=True)
        self.assertFalse(s.set_clock)
        (proxy,) = s.proxies
        self.assertTrue(proxy.set_clock)
        from fep.protocols.dlt698.control import DEFAULT_RELAY, command_methods

        methods = command_methods("disconnect", {})
        s = settings_for(child(), actions=methods, read_back=(DEFAULT_RELAY,))
        (proxy,) = s.proxies
        self.assertEqual((proxy.actions, proxy.read_after, s.read_back),
                         (methods, ((DEFAULT_RELAY, 0),), ()))

    def test_what_cannot_go_through_a_terminal_names_the_key(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            settings_for(child(dlt698_proxy="000000000003"))
        self.assertEqual(caught.exception.key, "dlt698_proxy")
        with self.assertRaises(ConfigError) as caught:
            settings_for(Meter("m", "dlt698", "dlt698:T1", metadata={
                "dlt698_terminal": TERMINAL}))
        self.assertEqual(caught.exception.key, "address")


class LoopbackTests(unittest.TestCase):
    def endpoint(self, sim: SimulatedDlt698Meter) -> TCP4ClientEndpoint:
        port = reactor.listenTCP(0, Dlt698MeterFactory([sim], reactor), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)

    @inlineCallbacks
    def test_registers_of_each_meter_behind_are_read_through_proxy(self) -> Any:
        sim = concentrator()
        endpoint = self.endpoint(sim)
        for n, address in enumerate(CHILDREN, 1):
            records = yield Dlt698Protocol().read(reactor, endpoint, child(
                address, dlt698_items="00100200"), 5.0)
            self.assertTrue(records)
            self.assertEqual({r.meter for r in records}, {f"m-{n}"})
            total = [r for r in records if isinstance(r, Reading) and r.native_id == "00100201"]
            self.assertGreaterEqual(float(total[0].value), 100.0 * n)
        self.assertIn(f"proxy {CHILDREN[0]} 00100200", sim.log)
        self.assertIn(f"proxy {CHILDREN[1]} 00100200", sim.log)
        self.assertNotIn("get 00100200", sim.log)

    @inlineCallbacks
    def test_profile_events_and_clock_through_the_terminal(self) -> Any:
        sim = concentrator()
        endpoint = self.endpoint(sim)
        now = datetime.now(UTC)
        blocks = yield Dlt698Protocol().read_profile(
            reactor, endpoint, child(), now - timedelta(hours=2), now, 5.0)
        self.assertTrue(blocks)
        self.assertTrue(all(isinstance(b, IntervalBlock) and b.meter == "m-1" for b in blocks))
        events = yield Dlt698Protocol().read_events(reactor, endpoint, child(), None, 5.0)
        self.assertTrue(events)
        self.assertTrue(all(isinstance(e, MeterEvent) and e.meter == "m-1" for e in events))
        clock = yield Dlt698Protocol().read_clock(reactor, endpoint, child(), 5.0)
        self.assertLess(abs((clock - now).total_seconds()), 120)
        self.assertTrue(any(line.startswith(f"proxy record {CHILDREN[0]} 5002")
                            for line in sim.log), sim.log)


@implementer(IPushChannel)
class PushChannel:
    def __init__(self) -> None:
        self.pushes: list[list[Record]] = []
        self.kept: list[Deferred[None]] = []
        self.returned: list[bytes] = []

    def pushed(self, records: Sequence[Record]) -> Deferred[None]:
        self.pushes.append(list(records))
        d: Deferred[None] = Deferred()
        self.kept.append(d)
        return d

    def unconsumed(self, data: bytes) -> None:
        self.returned.append(data)


class ReportDuringAReadTests(unittest.TestCase):
    def test_a_report_on_a_push_carrying_channel_is_kept_then_acknowledged(self) -> None:
        # (And a LINK heartbeat during the read is answered.)
        clock = MemoryReactorClock()
        clock.advance(1_765_000_000)
        sim = concentrator(clock=clock.seconds)
        sim.report_outage(piid=5)
        endpoint = FakeEndpoint()
        channel = PushChannel()
        alsoProvides(endpoint.transport, IPushChannel)
        endpoint.transport.pushed = channel.pushed  # type: ignore[attr-defined]
        endpoint.transport.unconsumed = channel.unconsumed  # type: ignore[attr-defined]
        d = Dlt698Protocol().read(clock, endpoint, child(dlt698_items="20000200"), 5.0)
        transport: StringTransport = endpoint.transport
        decoder = FrameDecoder()
        # A heartbeat arrives as the read begins: answered on the borrowed session.
        endpoint.protocol.dataReceived(sim.link(LinkType.HEARTBEAT))
        for _ in range(20):
            sent = transport.value()
            transport.clear()
            if not sent:
                break
            for frame in decoder.receive(sent):
                for answer in sim.answer(frame):
                    endpoint.protocol.dataReceived(answer.encode())
        records = self.successResultOf(d)
        self.assertEqual(sim.log.count("LinkResponse"), 1)
        self.assertEqual({r.meter for r in records}, {"m-1"})
        # The terminal's report went to the channel as a push, not into the read.
        (pushed,) = channel.pushes
        self.assertTrue(pushed and all(isinstance(r, MeterEvent) for r in pushed))
        self.assertEqual(sim.acknowledged, [])
        self.assertEqual(transport.value(), b"")
        # Acknowledged only once kept (the pipe is still the job's: written on it).
        channel.kept[0].callback(None)
        for frame in decoder.receive(transport.value()):
            sim.answer(frame)
        self.assertEqual([str(o) for o in sim.acknowledged], ["30110200"])

    def test_frames_after_the_last_answer_go_back_to_the_channel(self) -> None:
        clock = MemoryReactorClock()
        sim = concentrator(clock=clock.seconds)
        endpoint = FakeEndpoint()
        channel = PushChannel()
        alsoProvides(endpoint.transport, IPushChannel)
        endpoint.transport.pushed = channel.pushed  # type: ignore[attr-defined]
        endpoint.transport.unconsumed = channel.unconsumed  # type: ignore[attr-defined]
        d = Dlt698Protocol().read(clock, endpoint, child(dlt698_items="20000200"), 5.0)
        transport: StringTransport = endpoint.transport
        decoder = FrameDecoder()
        heartbeat = sim.link(LinkType.HEARTBEAT)
        for _ in range(20):
            sent = transport.value()
            transport.clear()
            if not sent:
                break
            for frame in decoder.receive(sent):
                answers = b"".join(a.encode() for a in sim.answer(frame))
                if "release" in sim.log[-1:]:
                    # The terminal's heartbeat in the same segment as the last answer,
                    # and the start of another after it.
                    answers += heartbeat + heartbeat[:5]
                endpoint.protocol.dataReceived(answers)
        self.successResultOf(d)
        endpoint.protocol.dataReceived(heartbeat[5:])
        self.assertEqual(b"".join(channel.returned), heartbeat + heartbeat)
