"""The simulated concentrator, driven by fep's own gw3761 master side: login and heartbeat,
class 1 and 2 data of its points turned into records, multi-frame answers, the archive,
events with ACD, forwarding to its DL/T 645 meters, faults, and its Twisted adapter."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from fep.model import EventKind, IntervalBlock, MeterEvent, ObisCode, Reading
from fep.protocols.dlt645 import services as dlt645
from fep.protocols.dlt645.frames import FrameDecoder as Dlt645Decoder
from fep.protocols.gw3761 import services
from fep.protocols.gw3761.formats import Clock, TimeFields
from fep.protocols.gw3761.frames import (
    ALL_POINTS,
    Address,
    Afn,
    Frame,
    FrameDecoder,
    Reassembler,
    decode_frame,
)
from fep.protocols.gw3761.records import RecordMapper
from fep.protocols.gw3761.services import (
    ArchiveEntry,
    CurveRequest,
    Data,
    Denied,
    EventsRequest,
    ForwardAnswer,
    ForwardRequest,
    Master,
)
from fep.sim.concentrator import ConcentratorFactory, SimulatedConcentrator, make_concentrator

START = 1_709_280_000.0  # 2024-03-01 08:00:00 UTC, 16:00 in the terminal's zone


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def exchange(sim: SimulatedConcentrator, request: Frame) -> list[services.Event]:
    """Request over the wire, answers back over the wire and reassembled."""
    wire = sim.receive(request.encode(), FrameDecoder())
    decoder, joiner = FrameDecoder(), Reassembler()
    events: list[services.Event] = []
    for frame in decoder.receive(b"".join(wire)):
        whole = joiner.add(frame)
        if whole is not None:
            events.append(services.decode_event(whole))
    return events


def data_of(events: list[services.Event]) -> Data:
    (event,) = events
    assert isinstance(event, Data), event
    return event


class SimTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()
        self.sim = make_concentrator(5, clock=self.clock)
        self.master = Master(Address("4403", 4))
        self.mapper = RecordMapper("DCU1", {p: f"M{p}" for p in range(1, 6)})

    def ask(self, afn: int, points: list[int], fns: list[int], value: object = None
            ) -> list[services.Event]:  # fmt: skip
        data = b"".join(services.request_units(afn, points, fns, value))
        return exchange(self.sim, self.master.request(afn, data))


class LinkTests(SimTestCase):
    def test_login_heartbeat_logout_decode(self) -> None:
        for raw, kind in ((self.sim.login(), services.Login),
                          (self.sim.heartbeat(), services.Heartbeat),
                          (self.sim.logout(), services.Logout)):  # fmt: skip
            frame = decode_frame(raw)
            self.assertTrue(frame.seq.con)
            self.assertIsInstance(services.decode_event(frame), kind)

    def test_master_confirms_login_with_its_sequence(self) -> None:
        login = decode_frame(self.sim.login())
        confirm = self.master.confirm(login)
        self.assertEqual(confirm.seq.seq, login.seq.seq)
        self.assertEqual(confirm.control.to_byte(), 0x0B)
        # The sim ignores confirmations of its own frames.
        self.assertEqual(self.sim.answer(confirm), [])


class Class1Tests(SimTestCase):
    def test_terminal_clock(self) -> None:
        data = data_of(self.ask(Afn.CLASS1, [0], [2]))
        (item,) = data.items
        self.assertIsInstance(item.value, Clock)
        self.assertEqual(item.value.time, datetime(2024, 3, 1, 16, 0))

    def test_current_energy_of_points_becomes_readings(self) -> None:
        data = data_of(self.ask(Afn.CLASS1, [1, 2, 3], [129]))
        self.assertEqual([i.point for i in data.items], [1, 2, 3])
        records = self.mapper.records(data)
        totals = {r.meter: r.value for r in records
                  if isinstance(r, Reading) and r.obis == ObisCode(1, 0, 1, 8, 0)}  # fmt: skip
        meter = self.sim.meters[1]
        self.assertEqual(totals["M2"], meter.energy(1).quantize(Decimal("0.0001")))
        self.assertEqual(len(records), 3 * 5)  # total and four tariffs each
        self.assertTrue(all(r.source == "DCU1" for r in records))

    def test_instantaneous_values(self) -> None:
        data = data_of(self.ask(Afn.CLASS1, [1], [25]))
        by_obis = {str(r.obis): r for r in self.mapper.records(data) if isinstance(r, Reading)}
        self.assertEqual(by_obis["1-0:32.7.0*255"].value, Decimal("220.1"))
        self.assertEqual(by_obis["1-0:71.7.0*255"].value, Decimal("-0.250"))
        self.assertEqual(by_obis["1-0:13.7.0*255"].value, Decimal("0.985"))

    def test_all_points_in_one_request(self) -> None:
        data = data_of(self.ask(Afn.CLASS1, [ALL_POINTS], [129]))
        self.assertEqual([i.point for i in data.items], [1, 2, 3, 4, 5])

    def test_silent_meter_has_no_data(self) -> None:
        self.sim.silent.add(self.sim.meters[0].address)
        data = data_of(self.ask(Afn.CLASS1, [1, 2], [129]))
        self.assertEqual([i.point for i in data.items], [2])
        (denied,) = self.ask(Afn.CLASS1, [1], [129])
        self.assertIsInstance(denied, Denied)


class Class2Tests(SimTestCase):
    def test_daily_frozen_energy_of_yesterday(self) -> None:
        day = date(2024, 2, 29)
        data = data_of(self.ask(Afn.CLASS2, [1, 2], [161], day))
        records = self.mapper.records(data)
        total = next(r for r in records if isinstance(r, Reading) and r.meter == "M1"
                     and r.obis == ObisCode(1, 0, 1, 8, 0))  # fmt: skip
        # Filed at 00:00 of its day, terminal time (UTC+8).
        self.assertEqual(total.meter_time, datetime.fromisoformat("2024-02-28T16:00:00+00:00"))
        self.assertEqual(total.native_id, "0D:F161")

    def test_future_day_is_denied(self) -> None:
        (event,) = self.ask(Afn.CLASS2, [1], [161], date(2024, 3, 2))
        self.assertIsInstance(event, Denied)

    def test_96_point_curve_in_a_multi_frame_answer(self) -> None:
        self.sim.max_user = 450
        ask = CurveRequest(datetime(2024, 2, 29, 0, 15), 1, 96)
        wire = self.sim.receive(self.master.request(
            Afn.CLASS2, b"".join(services.request_units(Afn.CLASS2, [1, 2, 3], [101], ask))
        ).encode(), FrameDecoder())  # fmt: skip
        self.assertGreater(len(wire), 1)
        events = exchange(self.sim, self.master.request(
            Afn.CLASS2, b"".join(services.request_units(Afn.CLASS2, [1, 2, 3], [101], ask))))
        blocks = [r for r in self.mapper.records(data_of(events)) if isinstance(r, IntervalBlock)]
        self.assertEqual([b.meter for b in blocks], ["M1", "M2", "M3"])
        self.assertEqual({len(b.values) for b in blocks}, {96})
        self.assertEqual(blocks[0].period, timedelta(minutes=15))
        # The point at 00:15 closes the day's first interval, 00:00 terminal time.
        self.assertEqual(blocks[0].start, datetime.fromisoformat("2024-02-28T16:00:00+00:00"))
        # 1.5 kWh an hour (the meter's register keeps two decimals).
        self.assertEqual(sum(blocks[0].values[8:12]), Decimal("1.5"))


class SummaryMeterTests(unittest.TestCase):
    def test_the_summary_point_measures_its_members_and_the_loss(self) -> None:
        sim = make_concentrator(5, clock=FakeClock(), summary_loss=Decimal("0.03"))
        self.assertEqual(sorted(sim.archive), [1, 2, 3, 4, 5, 6])
        self.assertEqual(sim.archive[6].address, "000000000006")
        master = Master(Address("4403", 4))
        ask = CurveRequest(datetime(2024, 2, 29, 0, 15), 1, 96)
        events = exchange(sim, master.request(Afn.CLASS2, b"".join(
            services.request_units(Afn.CLASS2, [1, 2, 3, 4, 5, 6], [101], ask))))
        mapper = RecordMapper("DCU1", {p: f"M{p}" for p in range(1, 7)})
        days = {b.meter: sum((v for v in b.values if isinstance(v, Decimal)), Decimal(0))
                for b in mapper.records(data_of(events)) if isinstance(b, IntervalBlock)}
        # Five consumers of 1.5 kWh an hour: 180 kWh a day; the transformer's meter 3 % more.
        self.assertEqual(sum(days[f"M{p}"] for p in range(1, 6)), Decimal("180"))
        self.assertEqual(days["M6"], Decimal("185.4"))


class ArchiveTests(SimTestCase):
    def test_read_back_the_archive(self) -> None:
        data = data_of(self.ask(Afn.QUERY_PARAMETERS, [0], [10], ()))
        entries = [e for i in data.items for e in i.value]
        self.assertEqual([e.address for e in entries], [m.address for m in self.sim.meters])
        self.assertEqual({e.port for e in entries}, {31})

    def test_write_then_read_back(self) -> None:
        new = ArchiveEntry(6, 6, 2, "000000123456", baud=9600)
        request = self.master.request(
            Afn.SET_PARAMETERS,
            services.encode_unit(Afn.SET_PARAMETERS, [0], [10], False, {(0, 10): (new,)}))
        (event,) = exchange(self.sim, request)
        self.assertIsInstance(event, services.Confirmed)
        data = data_of(self.ask(Afn.QUERY_PARAMETERS, [0], [10], (6,)))
        self.assertEqual(data.items[0].value, (new,))

    def test_archive_mismatch_fault(self) -> None:
        self.sim.mismatch_archive()
        self.assertEqual(len(self.sim.archive), 4)
        self.assertIsNone(self.sim.meter_at(1))


class EventTests(SimTestCase):
    def test_acd_until_events_are_read(self) -> None:
        frame = decode_frame(self.sim.receive(self.master.request(
            Afn.CLASS1, b"".join(services.request_units(Afn.CLASS1, [0], [2]))).encode(),
            FrameDecoder())[0])  # fmt: skip
        self.assertTrue(frame.control.acd)
        self.assertEqual(frame.ec and frame.ec.important, 2)
        data = data_of(self.ask(Afn.CLASS3, [0], [1], EventsRequest(0, 2)))
        events = [r for r in self.mapper.records(data) if isinstance(r, MeterEvent)]
        self.assertEqual([e.kind for e in events],
                         [EventKind.POWER_OUTAGE, EventKind.POWER_RESTORED,
                          EventKind.METER_ERROR])  # fmt: skip
        self.assertEqual(events[2].meter, "M1")
        frame = decode_frame(self.sim.receive(self.master.request(
            Afn.CLASS1, b"".join(services.request_units(Afn.CLASS1, [0], [2]))).encode(),
            FrameDecoder())[0])  # fmt: skip
        self.assertFalse(frame.control.acd)


class ForwardTests(SimTestCase):
    def test_forwarded_read_equals_the_meter_direct(self) -> None:
        meter = self.sim.meters[2]
        request = dlt645.read_data(meter.address, 0x00010000)
        direct = meter.answer(request)
        assert direct is not None
        data = data_of(self.ask(Afn.FORWARD, [0], [1], ForwardRequest(31, request.encode())))
        answer = data.items[0].value
        self.assertIsInstance(answer, ForwardAnswer)
        (frame,) = Dlt645Decoder().receive(answer.payload)
        self.assertEqual(frame, direct)

    def test_silent_meter_gives_an_empty_answer(self) -> None:
        meter = self.sim.meters[0]
        self.sim.silent.add(meter.address)
        request = dlt645.read_data(meter.address, 0x00010000).encode()
        data = data_of(self.ask(Afn.FORWARD, [0], [1], ForwardRequest(31, request)))
        self.assertEqual(data.items[0].value.payload, b"")


class FaultTests(SimTestCase):
    def test_stale_time_label_is_ignored(self) -> None:
        self.master.delay = 2
        old = TimeFields(day=1, hour=15, minute=50, second=0)  # ten minutes ago
        request = self.master.request(Afn.CLASS1, b"".join(
            services.request_units(Afn.CLASS1, [0], [2])), now=old)  # fmt: skip
        self.assertEqual(exchange(self.sim, request), [])
        self.assertEqual(self.sim.stale, 1)
        fresh = TimeFields(day=1, hour=16, minute=0, second=0)
        request = self.master.request(Afn.CLASS1, b"".join(
            services.request_units(Afn.CLASS1, [0], [2])), now=fresh)  # fmt: skip
        self.assertEqual(len(exchange(self.sim, request)), 1)

    def test_dropped_and_damaged_answers(self) -> None:
        self.sim.drop_answers = 1
        self.assertEqual(self.ask(Afn.CLASS1, [0], [2]), [])
        self.sim.damage_answers = 1
        wire = self.sim.receive(self.master.request(Afn.CLASS1, b"".join(
            services.request_units(Afn.CLASS1, [0], [2]))).encode(), FrameDecoder())  # fmt: skip
        from fep.errors import FrameError

        self.assertRaises(FrameError, FrameDecoder().receive, wire[0])

    def test_garbage_is_counted_not_answered(self) -> None:
        self.assertEqual(self.sim.receive(b"\x68\x32\x00\x32\x00\x68" + bytes(14), FrameDecoder()),
                         [])  # fmt: skip
        self.assertEqual(self.sim.bad_frames, 1)

    def test_a_request_behind_a_bad_frame_in_the_same_bytes_is_answered_at_once(self) -> None:
        # A request, a damaged one, then another: the second good request is answered now,
        # not when the master sends again.
        def request() -> bytes:
            return self.master.request(Afn.CLASS1, b"".join(
                services.request_units(Afn.CLASS1, [0], [2]))).encode()  # fmt: skip
        first, damaged, second = request(), bytearray(request()), request()
        damaged[-2] ^= 0x01
        wire = self.sim.receive(first + bytes(damaged) + second, FrameDecoder())
        self.assertEqual(len(wire), 2)
        self.assertEqual(self.sim.bad_frames, 1)

    def test_unknown_fn_is_denied(self) -> None:
        raw = bytes.fromhex("0000") + bytes([0x80, 0x1D])  # F240
        (event,) = exchange(self.sim, self.master.request(Afn.CLASS1, raw))
        self.assertIsInstance(event, Denied)


class AdapterTests(unittest.TestCase):
    def test_dialling_concentrator_logs_in_and_beats(self) -> None:
        reactor = MemoryReactorClock()
        reactor.advance(START)
        sim = make_concentrator(2, clock=reactor.seconds)
        factory = ConcentratorFactory(sim, reactor, dials=True, heartbeat=30)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        (login,) = FrameDecoder().receive(transport.value())
        self.assertIsInstance(services.decode_event(login), services.Login)
        transport.clear()
        reactor.advance(30)
        (beat,) = FrameDecoder().receive(transport.value())
        self.assertIsInstance(services.decode_event(beat), services.Heartbeat)
        transport.clear()
        master = Master(sim.address)
        protocol.dataReceived(master.request(Afn.CLASS1, b"".join(
            services.request_units(Afn.CLASS1, [0], [2]))).encode())  # fmt: skip
        (answer,) = FrameDecoder().receive(transport.value())
        self.assertEqual(answer.afn, Afn.CLASS1)
        protocol.connectionLost()
        self.assertEqual(reactor.getDelayedCalls(), [])
