"""Concentrators (Q/GDW 1376.1) that dial in, through the GPRS channel with a Clock and
in-memory transports: found by the address of their login, login/heartbeat/report confirmed
on the connection, reports stored under the meters behind them, bad input counted with the
session kept, a pull over the session with a heartbeat and a report in its middle, a second
login of the same address contested, a DTU registration in front of the login, an unknown
concentrator quarantined."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from fep.channels.gprs import GprsChannel, GprsSettings, ModemSession, concentrators_at
from fep.channels.routes import parse_route
from fep.directory import MeterDirectory
from fep.model import Meter, MeterEvent, Reading, Record
from fep.protocols.gw3761.frames import Address, FrameDecoder
from fep.protocols.gw3761.services import EventRecord
from fep.protocols.gw3761.session import Gw3761Protocol, Gw3761PushHandler
from fep.sim.concentrator import SimulatedConcentrator, make_concentrator
from tests.channels.test_gprs import IMEI, ModemTransport, Sink, Store

ROUTE = "gprs:dcu=4403-0004"


def dcu(route: str = ROUTE, address: str | None = "4403:4") -> Meter:
    return Meter("DCU1", "gw3761", route, address=address,
                 metadata={"gw3761_items": "0C:F129", "gw3761_points": "1"})


def child(meter_id: str, point: str) -> Meter:
    return Meter(meter_id, "dlt645", "tcp:host=127.0.0.1:port=1",
                 metadata={"concentrator": "DCU1", "point": point})


class _ChannelCase(unittest.TestCase):
    meters: tuple[Meter, ...] = (dcu(), child("m1", "P1"), child("m2", "P2"))

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.sink = Sink()
        self.store = Store()
        self.directory = MeterDirectory(self.store)  # type: ignore[arg-type]
        self.directory.replace(list(self.meters))
        self.channel = GprsChannel(
            self.clock, GprsSettings(rules=("ascii", "gw3761"), identify_timeout=30.0,
                                     idle_timeout=600.0),
            sink=self.sink, directory=self.directory, store=self.store)
        self.factory = self.channel.factory("tcp:4070")
        self.sim = make_concentrator(2, "4403:0004")
        self.decoder = FrameDecoder()

    def connect(self, port: int = 40001) -> tuple[ModemSession, ModemTransport]:
        from twisted.internet.address import IPv4Address

        session = self.factory.buildProtocol(IPv4Address("TCP", "10.1.2.3", port))
        assert isinstance(session, ModemSession)
        transport = ModemTransport(port)
        session.makeConnection(transport)
        return session, transport

    def to_sim(self, transport: ModemTransport) -> list[bytes]:
        """What fep wrote, given to the simulated concentrator; its answers."""
        data = transport.value()
        transport.clear()
        return self.sim.receive(data, self.decoder)


class ConcentratorChannelTests(_ChannelCase):
    def test_a_login_attaches_by_address_and_is_confirmed(self) -> None:
        session, transport = self.connect()
        session.dataReceived(self.sim.login())
        self.assertEqual(session.state, "attached")
        (info,) = self.channel.sessions()
        self.assertEqual((info.modem, info.meters), ("gw3761=4403:0004", ("DCU1",)))
        self.assertIsInstance(session.handler, Gw3761PushHandler)
        self.to_sim(transport)
        self.assertEqual(self.sim.confirmations, [0])
        session.dataReceived(self.sim.heartbeat() + self.sim.heartbeat())
        self.to_sim(transport)
        self.assertEqual(self.sim.confirmations, [0, 1, 2])
        # The session holds its meter's route: a job for DCU1 finds it.
        self.assertTrue(self.channel.is_connected(ROUTE))
        self.assertEqual(session.info().frames, 3)

    def test_a_report_is_stored_under_the_point_meter_then_confirmed(self) -> None:
        session, transport = self.connect()
        session.dataReceived(self.sim.login())
        self.to_sim(transport)
        self.sim.events_read = len(self.sim.events)
        session.handler.link.known_events = len(self.sim.events)  # type: ignore[union-attr]
        when = self.sim.now()
        raw = self.sim.report_event(EventRecord(13, when, 2, True, {"flags": 8}))
        session.dataReceived(raw)
        (event,) = self.sink.records
        assert isinstance(event, MeterEvent)
        self.assertEqual((event.meter, event.code, event.source), ("m2", "ERC13", "DCU1"))
        self.to_sim(transport)
        self.assertEqual(self.sim.confirmations, [0, raw[13] & 0x0F])
        self.assertEqual(self.sim.events_read, len(self.sim.events))

    def test_a_report_not_stored_is_not_confirmed(self) -> None:
        session, transport = self.connect()
        failing: Deferred[None] = Deferred()
        self.sink.submit = lambda records: failing  # type: ignore[method-assign]
        session.dataReceived(self.sim.login())
        self.to_sim(transport)
        raw = self.sim.report_event(EventRecord(13, self.sim.now(), 2, True, {"flags": 8}))
        session.dataReceived(raw)
        written = transport.value()
        failing.errback(RuntimeError("store down"))
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(transport.value(), written)
        frames = FrameDecoder().receive(written)
        # Only the event fetch (ACD: events not read) went out, no confirmation.
        self.assertEqual([f.afn for f in frames], [0x0E])

    def test_bad_input_is_counted_and_the_session_stays(self) -> None:
        session, transport = self.connect()
        session.dataReceived(self.sim.login())
        beat = bytearray(self.sim.heartbeat())
        beat[-2] ^= 0xFF
        # A bad checksum; a header whose length puts the end byte on a 00.
        session.dataReceived(bytes(beat) + b"\x68\x32\x00\x32\x00\x68" + b"\x00" * 14)
        handler = session.handler
        assert isinstance(handler, Gw3761PushHandler)
        self.assertEqual(handler.stats.bad["checksum"], 1)
        self.assertEqual(handler.stats.bad["length"], 1)
        session.dataReceived(self.sim.heartbeat())
        self.to_sim(transport)
        self.assertEqual(len(self.sim.confirmations), 2)
        self.assertEqual(session.state, "attached")
        self.assertFalse(transport.disconnecting)

    def test_a_pull_over_the_session_with_a_heartbeat_and_a_report_in_its_middle(
        self,
    ) -> None:
        session, transport = self.connect()
        session.dataReceived(self.sim.login())
        self.to_sim(transport)
        self.sim.events_read = len(self.sim.events)
        session.handler.link.known_events = len(self.sim.events)  # type: ignore[union-attr]
        endpoint = self.channel.endpoint_for(parse_route(ROUTE))
        read = Gw3761Protocol().read(self.clock, endpoint, dcu(), 10.0)
        self.assertEqual(session.info().state, "pipe")
        request = transport.value()
        transport.clear()
        # The concentrator beats its heart and reports an event before it answers.
        report = self.sim.report_event(EventRecord(13, self.sim.now(), 1, True, {"flags": 8}))
        session.dataReceived(self.sim.heartbeat() + report)
        # The heartbeat is confirmed by the read; the report waits for the report handler.
        self.to_sim(transport)
        self.assertEqual(len(self.sim.confirmations), 2)
        self.assertEqual(self.sink.records, [])
        for answer in self.sim.receive(request, self.decoder):
            session.dataReceived(answer)
        records: list[Record] = self.successResultOf(read)
        self.assertTrue(any(isinstance(r, Reading) and r.meter == "DCU1/P1" for r in records))
        self.clock.advance(0)
        self.assertEqual(session.info().state, "attached")
        # After the read: the report stored under m1 once, then confirmed.
        (event,) = self.sink.records
        self.assertEqual((event.meter, event.code), ("m1", "ERC13"))  # type: ignore[union-attr]
        self.to_sim(transport)
        self.assertEqual(self.sim.confirmations[-1], report[13] & 0x0F)
        self.assertEqual(self.sim.events_read, len(self.sim.events))
        # The session's new handler kept the event counter read.
        self.assertEqual(session.handler.link.known_events,  # type: ignore[union-attr]
                         len(self.sim.events))

    def test_frames_in_the_chunk_of_the_last_answer_go_to_the_handler_in_order(
        self,
    ) -> None:
        session, transport = self.connect()
        session.dataReceived(self.sim.login())
        self.to_sim(transport)
        self.sim.events_read = len(self.sim.events)
        session.handler.link.known_events = len(self.sim.events)  # type: ignore[union-attr]
        endpoint = self.channel.endpoint_for(parse_route(ROUTE))
        read = Gw3761Protocol().read(self.clock, endpoint, dcu(), 10.0)
        request = transport.value()
        transport.clear()
        answers = b"".join(self.sim.receive(request, self.decoder))
        beat = self.sim.heartbeat()
        report = self.sim.report_event(EventRecord(13, self.sim.now(), 2, True, {"flags": 8}))
        # The last answer, a heartbeat and the first half of a report in one chunk.
        session.dataReceived(answers + beat + report[:9])
        self.assertTrue(self.successResultOf(read))
        self.clock.advance(0)
        session.dataReceived(report[9:])
        self.assertEqual([r.meter for r in self.sink.records], ["m2"])
        self.to_sim(transport)
        self.assertEqual(self.sim.confirmations[-2:], [beat[13] & 0x0F, report[13] & 0x0F])
        self.assertEqual(session.handler.stats.bad_total, 0)  # type: ignore[union-attr]

    def test_acd_on_a_pulls_answers_makes_the_handler_fetch_the_events(self) -> None:
        session, transport = self.connect()
        session.dataReceived(self.sim.login())  # the login has no ACD: nothing fetched
        self.to_sim(transport)
        endpoint = self.channel.endpoint_for(parse_route(ROUTE))
        read = Gw3761Protocol().read(self.clock, endpoint, dcu(), 10.0)
        for answer in self.to_sim(transport):  # the answers carry ACD, EC = 2
            session.dataReceived(answer)
        records: list[Record] = self.successResultOf(read)
        self.assertFalse(any(isinstance(r, MeterEvent) for r in records))
        self.clock.advance(0)
        # After the read the session's handler asks AFN 0E F1 from 0 to 2.
        for answer in self.to_sim(transport):
            session.dataReceived(answer)
        codes = sorted((r.meter, r.code) for r in self.sink.records)  # type: ignore[attr-defined]
        self.assertEqual(codes, [("DCU1", "ERC14"), ("DCU1", "ERC14.on"), ("m1", "ERC13")])
        handler = session.handler
        assert isinstance(handler, Gw3761PushHandler)
        self.assertEqual((handler.link.known_events, handler.stats.bad_total), (2, 0))
        self.assertEqual(self.sim.events_read, 2)

    def test_junk_during_a_pull_is_logged_rate_limited_and_the_read_goes_on(self) -> None:
        from twisted.logger import globalLogPublisher

        seen: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        session, transport = self.connect()
        session.dataReceived(self.sim.login())
        self.to_sim(transport)
        self.sim.events_read = len(self.sim.events)
        endpoint = self.channel.endpoint_for(parse_route(ROUTE))
        read = Gw3761Protocol().read(self.clock, endpoint, dcu(), 10.0)
        request = transport.value()
        beat = bytearray(self.sim.heartbeat())
        beat[-2] ^= 0xFF
        for _ in range(8):
            session.dataReceived(bytes(beat))
        for answer in self.sim.receive(request, self.decoder):
            session.dataReceived(answer)
        self.assertTrue(self.successResultOf(read))
        noise = [e for e in seen if e.get("log_format", "").startswith("{meter} ({address})")]
        self.assertEqual(len(noise), 5)
        self.assertEqual((noise[0]["meter"], noise[0]["address"]), ("DCU1", "4403:0004"))
        self.assertEqual(session.state, "attached")

    def test_a_pull_waits_for_an_event_fetch_and_ignores_its_late_answer(self) -> None:
        self.sim.acd_on_link = True
        session, transport = self.connect()
        session.dataReceived(self.sim.login())  # ACD: two events not read: fetched
        fetch = [f for f in FrameDecoder().receive(transport.value()) if f.afn == 0x0E]
        self.assertEqual(len(fetch), 1)
        self.assertEqual(fetch[0].seq.seq, 8)
        transport.clear()
        endpoint = self.channel.endpoint_for(parse_route(ROUTE))
        read = Gw3761Protocol().read(self.clock, endpoint, dcu(), 10.0)
        self.assertEqual(session.info().state, "attached")  # waiting for the fetch
        self.clock.advance(5.0)  # PIPE_WAIT: the fetch did not come back in time
        self.assertEqual(session.info().state, "pipe")
        request = transport.value()
        transport.clear()
        late = b"".join(self.sim.receive(fetch[0].encode(), FrameDecoder()))
        answers = b"".join(self.sim.receive(request, self.decoder))
        session.dataReceived(late)
        session.dataReceived(answers)
        records: list[Record] = self.successResultOf(read)
        self.assertTrue(records)
        self.assertFalse(any(isinstance(r, MeterEvent) for r in records))

    def test_a_second_login_of_the_same_address_is_contested(self) -> None:
        first, _ = self.connect()
        first.dataReceived(self.sim.login())
        second, transport = self.connect(40002)
        second.dataReceived(SimulatedConcentrator(Address("4403", 4)).login())
        self.assertEqual(second.state, "contested")
        self.assertEqual(transport.value(), b"")  # not confirmed
        self.clock.advance(self.channel.settings.conflict_quarantine + 1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(first.state, "attached")

    def test_an_unknown_concentrator_is_quarantined_and_not_confirmed(self) -> None:
        session, transport = self.connect()
        session.dataReceived(SimulatedConcentrator(Address("4403", 9)).login())
        self.assertEqual(session.state, "quarantined")
        self.assertEqual(transport.value(), b"")


class DtuInFrontTests(_ChannelCase):
    """A DTU that registers (ID:<imei>) before the concentrator's login: the meter is found
    by its route, the login goes to the report handler and is confirmed."""

    meters = (dcu(f"gprs:imei={IMEI}", address="4403:0004"),)

    def test_registration_then_login(self) -> None:
        session, transport = self.connect()
        session.dataReceived(f"ID:{IMEI}\r\n".encode() + self.sim.login())
        self.assertEqual(session.state, "attached")
        self.assertEqual([m.id for m in session.meters], ["DCU1"])
        self.to_sim(transport)
        self.assertEqual(self.sim.confirmations, [0])


class ConcentratorsAtTests(unittest.TestCase):
    def test_by_normalised_address_and_protocol(self) -> None:
        meters = [dcu(address="4403:4"), Meter("DCU2", "gw3761", ROUTE, address="4403:#4"),
                  Meter("x", "dlt645", ROUTE, address="4403:0004"),
                  Meter("bad", "gw3761", ROUTE, address="nonsense"),
                  Meter("none", "gw3761", ROUTE)]
        found: list[Any] = concentrators_at(meters, "4403:0004")
        self.assertEqual([m.id for m in found], ["DCU1", "DCU2"])


class UnknownPolicyTests(_ChannelCase):
    """Under ``unknown = register`` a login no meter's address matches cannot make a route
    (its address holds a colon): quarantined, nothing registered; under ``reject`` closed."""

    def test_an_unknown_concentrator_is_quarantined_under_register(self) -> None:
        self.channel.settings = attrs.evolve(self.channel.settings, unknown="register")
        session, transport = self.connect()
        session.dataReceived(SimulatedConcentrator(Address("4403", 9)).login())
        self.assertEqual(session.state, "quarantined")
        self.assertEqual(self.store.meters, [])
        self.assertEqual(transport.value(), b"")

    def test_an_unknown_concentrator_is_closed_under_reject(self) -> None:
        self.channel.settings = attrs.evolve(self.channel.settings, unknown="reject")
        session, transport = self.connect()
        session.dataReceived(SimulatedConcentrator(Address("4403", 9)).login())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")


class PushHandlerLogTests(unittest.TestCase):
    def test_bad_input_is_logged_rate_limited_with_the_address(self) -> None:
        from twisted.logger import Logger

        from fep.model import utcnow
        from fep.protocols.gw3761.reports import ConcentratorLink
        from fep.ratelog import RateLimitedLog

        events: list[dict[str, Any]] = []
        sim = make_concentrator(0, "4403:0004")
        link = ConcentratorLink("DCU1", Address("4403", 4), now=utcnow, clock=lambda: 0.0)
        written: list[bytes] = []
        handler = Gw3761PushHandler(link, Sink(), reply=written.append, source="gprs:x",
                                    events=RateLimitedLog(Logger(observer=events.append)))
        beat = bytearray(sim.heartbeat())
        beat[-2] ^= 0xFF
        for _ in range(7):
            handler.data_received(bytes(beat))
        self.assertEqual(link.stats.bad["checksum"], 7)
        self.assertEqual(len(events), 5)  # then counted, summed up when the window ends
        self.assertEqual((events[0]["meter"], events[0]["address"], events[0]["bad_kind"]),
                         ("DCU1", "4403:0004", "checksum"))
        handler.data_received(sim.heartbeat())
        self.assertEqual(len(written), 1)
