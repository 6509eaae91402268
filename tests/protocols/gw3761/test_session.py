"""The gw3761 session: settings from a meter, the sans-IO read of a simulated concentrator
(batches of points, multi-frame answers, frames the terminal starts meanwhile, silence and
retries), and ``fep read --protocol gw3761`` against the simulator over TCP."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import attrs
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from fep.errors import ConfigError, SessionTimeout
from fep.model import EventKind, IntervalBlock, Meter, MeterEvent, Reading
from fep.protocols.gw3761 import services
from fep.protocols.gw3761.client import (
    ClientSettings,
    Failed,
    Finished,
    Gw3761Client,
    Send,
    parse_item,
)
from fep.protocols.gw3761.formats import TimeFields
from fep.protocols.gw3761.frames import (
    Address,
    Afn,
    Control,
    Frame,
    FrameDecoder,
    Function,
    Seq,
    TimeLabel,
    decode_frame,
)
from fep.protocols.gw3761.session import settings_for
from fep.protocols.registry import meter_protocol, protocol_commands
from fep.sim.concentrator import SimulatedConcentrator, make_concentrator
from tests.inprocess import fep_deferred
from tests.processes import start_module

START = 1_709_280_000.0  # 2024-03-01 08:00:00 UTC


def run(client: Gw3761Client, sim: SimulatedConcentrator, limit: int = 200) -> list[object]:
    """Drive the client against the simulator, sans IO; the final action."""
    decoder = FrameDecoder()
    actions: list[object] = list(client.start())
    for _ in range(limit):
        sends = [a for a in actions if isinstance(a, Send)]
        ends = [a for a in actions if isinstance(a, Finished | Failed)]
        if ends:
            return ends
        if not sends:
            actions = list(client.timeout())
            continue
        actions = []
        for send in sends:
            for answer in sim.receive(send.data, decoder):
                actions += client.receive(answer)
    raise AssertionError("the read did not end")


def now() -> datetime:
    return datetime.fromtimestamp(START, UTC)


class SettingsTests(unittest.TestCase):
    def test_from_metadata(self) -> None:
        meter = Meter("DCU1", "gw3761", "tcp:x", address="4403:0004", metadata={
            "gw3761_points": "1,P2", "gw3761_items": "0C:F129,0D:F161", "gw3761_day": "2024-02-29",
        })  # fmt: skip
        s = settings_for(meter)
        self.assertEqual(s.address, Address("4403", 4))
        self.assertEqual(s.points, (1, 2))
        self.assertEqual(s.items, ((0x0C, 129), (0x0D, 161)))
        self.assertEqual(s.day, date(2024, 2, 29))
        self.assertTrue(s.name_points)

    def test_bad_settings_name_their_key(self) -> None:
        for metadata, key in (({"gw3761_items": "0C:F240"}, "gw3761_items"),
                              ({"gw3761_points": "x"}, "gw3761_points"),
                              ({"gw3761_day": "yesterday"}, "gw3761_day")):  # fmt: skip
            with self.assertRaises(ConfigError) as caught:
                settings_for(Meter("D", "gw3761", "tcp:x", address="4403:0004",
                                   metadata=metadata))  # fmt: skip
            self.assertEqual(caught.exception.key, key)
        with self.assertRaises(ConfigError) as caught:
            settings_for(Meter("D", "gw3761", "tcp:x", address="4403"))
        self.assertEqual(caught.exception.key, "address")

    def test_items(self) -> None:
        self.assertEqual(parse_item("0d:f161"), (0x0D, 161))
        self.assertRaises(ValueError, parse_item, "0C")

    def test_registered(self) -> None:
        self.assertEqual(meter_protocol("gw3761").name, "gw3761")


class ClientTests(unittest.TestCase):
    def setUp(self) -> None:
        self.sim = make_concentrator(20, clock=lambda: START)

    def test_class1_of_twenty_points_in_one_request(self) -> None:
        points = tuple(range(1, 21))
        client = Gw3761Client(ClientSettings(Address("4403", 4), points, ((0x0C, 129),),
                                             point_meters=tuple((p, f"M{p}") for p in points)),
                              now)  # fmt: skip
        (end,) = run(client, self.sim)
        assert isinstance(end, Finished)
        meters = {r.meter for r in end.records}
        self.assertEqual(len(meters), 20)
        self.assertEqual(self.sim.requests, 1)

    def test_daily_frozen_and_a_96_point_curve(self) -> None:
        self.sim.max_user = 512
        client = Gw3761Client(ClientSettings(Address("4403", 4), (1, 2, 3),
                                             ((0x0D, 161), (0x0D, 101))), now)  # fmt: skip
        (end,) = run(client, self.sim)
        assert isinstance(end, Finished)
        blocks = [r for r in end.records if isinstance(r, IntervalBlock)]
        self.assertEqual(sorted(len(b.values) for b in blocks), [96, 96, 96])
        frozen = [r for r in end.records if isinstance(r, Reading) and r.native_id == "0D:F161"]
        self.assertEqual(len(frozen), 3 * 5)

    def test_heartbeat_in_between_is_confirmed(self) -> None:
        client = Gw3761Client(ClientSettings(Address("4403", 4), (1,), ((0x0C, 2),)), now)
        (send,) = client.start()
        assert isinstance(send, Send)
        actions = client.receive(self.sim.heartbeat())
        confirm = [a for a in actions if isinstance(a, Send)]
        self.assertEqual(len(confirm), 1)
        self.assertEqual(client.confirmed, 1)
        answers = self.sim.receive(send.data, FrameDecoder())
        self.assertIsInstance(client.receive(answers[0])[-1], Finished)

    def test_reported_events_are_confirmed_and_kept(self) -> None:
        client = Gw3761Client(ClientSettings(Address("4403", 4), (1,), ((0x0C, 2),)), now)
        client.start()
        events = services.Events(2, 0, 0, 1, (services.EventRecord(
            21, datetime(2024, 3, 1, 15, 0), fields={"fault": 1}),))  # fmt: skip
        report = Frame(Control(Function.USER_DATA, uplink=True, initiator=True),
                       self.sim.address, Afn.CLASS3, Seq(5, con=True),
                       services.encode_unit(Afn.CLASS3, [0], [1], True, {(0, 1): events}))
        actions = client.receive(report.encode())
        (confirm,) = [a for a in actions if isinstance(a, Send)]
        self.assertIsInstance(services.decode_event(decode_frame(confirm.data)),
                              services.Confirmed)  # fmt: skip
        (event,) = client.records
        assert isinstance(event, MeterEvent)
        self.assertEqual((event.code, event.kind), ("ERC21", EventKind.METER_ERROR))

    def test_clock_set_sends_the_time_at_sending_and_a_denial_fails(self) -> None:
        self.sim.clock_offset = 3600
        settings = ClientSettings(Address("4403", 4), (1,), (), set_clock=True)
        client = Gw3761Client(settings, now)
        (end,) = run(client, self.sim)
        self.assertIsInstance(end, Finished)
        self.assertEqual(self.sim.now(), datetime(2024, 3, 1, 16, 0))
        self.assertEqual(client.clock_set and client.clock_set.time, datetime(2024, 3, 1, 16, 0))
        self.sim.refuse.add((0x05, 31))
        (end,) = run(Gw3761Client(settings, now), self.sim)
        assert isinstance(end, Failed)
        self.assertIn("refused the clock set", str(end.error))

    def test_a_frame_past_its_time_label_is_counted_and_dropped(self) -> None:
        client = Gw3761Client(ClientSettings(Address("4403", 4), (1,), ((0x0C, 2),)), now)
        client.start()
        beat = decode_frame(self.sim.heartbeat())
        old = attrs.evolve(beat, seq=attrs.evolve(beat.seq, tpv=True), tp=TimeLabel(
            0, TimeFields(day=1, hour=15, minute=0, second=0), 5))  # an hour ago, 5 min
        actions = client.receive(old.encode())
        self.assertEqual(client.stale, 1)
        self.assertEqual([a for a in actions if isinstance(a, Send)], [])

    def test_silence_is_resent_then_fails(self) -> None:
        self.sim.drop_answers = 5
        client = Gw3761Client(ClientSettings(Address("4403", 4), (1,), ((0x0C, 2),)), now)
        (end,) = run(client, self.sim)
        assert isinstance(end, Failed)
        self.assertIsInstance(end.error, SessionTimeout)
        self.assertEqual(client.resent, 1)

    def test_denied_item_is_skipped(self) -> None:
        self.sim.silent.add(self.sim.meters[0].address)
        client = Gw3761Client(ClientSettings(Address("4403", 4), (1,), ((0x0C, 129),
                                                                       (0x0C, 2))), now)
        (end,) = run(client, self.sim)
        assert isinstance(end, Finished)
        self.assertEqual(client.skipped, [("0C:F129", "denied: no data")])


class CommandLineTests(unittest.TestCase):
    """The acceptance path: the simulator process, read by the ``fep read`` command."""

    @inlineCallbacks
    def test_fep_read_prints_json_lines_of_a_points_classes(self) -> Any:
        line = yield start_module(self, "fep.sim.concentrator", "--port", "0", "--meters", "5")
        self.assertTrue(line.startswith("serving concentrator 4403:0004"), line)
        route = "tcp:host=127.0.0.1:port=" + line.rsplit(":", 1)[1]
        result = yield fep_deferred("read", route, "--protocol", "gw3761", "--address",
                                    "4403:0004", "--point", "2", "--point", "3", "--fn",
                                    "0C:F129", "--fn", "0D:F161", "--meter", "DCU1")
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        self.assertEqual({r["meter"] for r in rows}, {"DCU1/P2", "DCU1/P3"})
        self.assertEqual({r["obis"] for r in rows},
                         {f"1-0:1.8.{t}*255" for t in range(5)})  # fmt: skip
        # Current and yesterday's frozen values: total and four tariffs of two points.
        self.assertEqual(len(rows), 2 * 2 * 5)

    @inlineCallbacks
    def test_clock_read_and_set_and_events(self) -> Any:
        from twisted.internet import reactor
        from twisted.internet.endpoints import clientFromString

        line = yield start_module(self, "fep.sim.concentrator", "--port", "0", "--meters", "1",
                                  "--clock-offset", "3600")
        port = line.rsplit(":", 1)[1]
        protocol = meter_protocol("gw3761")
        meter = Meter("DCU1", "gw3761", f"tcp:host=127.0.0.1:port={port}", address="4403:0004")

        def endpoint() -> Any:
            return clientFromString(reactor, f"tcp:host=127.0.0.1:port={port}")

        before = yield protocol.read_clock(reactor, endpoint(), meter, 10)
        self.assertLess(abs((before - datetime.now(UTC)).total_seconds() - 3600), 5)
        sent = yield protocol.set_clock(reactor, endpoint(), meter, 10)
        self.assertLess(abs((sent - datetime.now(UTC)).total_seconds()), 5)
        after = yield protocol.read_clock(reactor, endpoint(), meter, 10)
        self.assertLess(abs((after - datetime.now(UTC)).total_seconds()), 5)
        self.assertEqual(protocol_commands("gw3761"), {"time-set", "time-sync", "terminal-reset",
                                                       "parameter-read", "parameter-set"})
        events = yield protocol.read_events(reactor, endpoint(), meter, None, 10)
        self.assertEqual([e.code for e in events], ["ERC14", "ERC14.on", "ERC13"])
        self.assertEqual({e.meter for e in events}, {"DCU1", "DCU1/P1"})

    @inlineCallbacks
    def test_simulator_dials_a_master_station_and_logs_in(self) -> Any:
        from twisted.internet import reactor
        from twisted.internet.defer import Deferred
        from twisted.internet.protocol import Factory, Protocol

        got: Deferred[bytes] = Deferred()

        class Station(Protocol):
            def dataReceived(self, data: bytes) -> None:
                if not got.called:
                    got.callback(data)

        port = reactor.listenTCP(0, Factory.forProtocol(Station), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        line = yield start_module(self, "fep.sim.concentrator", "--connect",
                                  f"127.0.0.1:{port.getHost().port}", "--meters", "2")
        self.assertTrue(line.startswith("dialling "), line)
        data = yield got
        (frame,) = FrameDecoder().receive(data)
        self.assertIsInstance(services.decode_event(frame), services.Login)


class ReadOptionTests(unittest.TestCase):
    def test_what_to_read_passes_how_to_reach_is_refused(self) -> None:
        from fep.operator.readoptions import ReadOptionRefused, checked

        self.assertEqual(checked("gw3761", {"gw3761_points": "1, P2", "gw3761_items": "0C:F129",
                                            "gw3761_day": "2024-02-29"}),
                         {"gw3761_points": "1,P2", "gw3761_items": "0C:F129",
                          "gw3761_day": "2024-02-29"})  # fmt: skip
        for option in ("gw3761_master", "gw3761_delay", "address"):
            self.assertRaises(ReadOptionRefused, checked, "gw3761", {option: "1"})
