"""The DL/T 645 client state machine with bytes alone: published exchanges, the simulated
meter in memory (items, blocks, follow-up frames, events, clock, load profile), the meter's
error answers, silence, noise, repeated and echoed frames, and arbitrary bytes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError, ProtocolError, SessionTimeout
from fep.model import EventKind, IntervalBlock, MeterEvent, ObisCode, Quality, Reading, Record
from fep.protocols.dlt645 import services
from fep.protocols.dlt645.client import (
    DEFAULT_ITEMS_2007,
    LOAD_CLASS_LENGTHS,
    Action,
    ClientSettings,
    Dlt645Client,
    Failed,
    Finished,
    LoadRecord,
    Noise,
    Resent,
    Send,
    Skipped,
    decode_load_records,
    encode_load_class,
    encode_load_record,
    parse_load_records,
)
from fep.protocols.dlt645.frames import Frame, FrameDecoder, control_code
from fep.protocols.dlt645.services import ErrorStatus, MeterErrorResponse, Unauthorized
from fep.sim.dlt645 import SimulatedDlt645Meter
from tests.protocols.dlt645.published import FRAMES

START = 1_709_280_000.0  # 2024-03-01 08:00:00 UTC, 16:00 on the meter's UTC+8 clock
ADDRESS = "000000123456"


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def make_client(clock: FakeClock | None = None, **kwargs: object) -> Dlt645Client:
    kwargs.setdefault("address", ADDRESS)
    kwargs.setdefault("meter", "m1")
    kwargs.setdefault("route", "tcp:host=10.0.0.7:port=8645")
    clock = clock or FakeClock()
    return Dlt645Client(ClientSettings(**kwargs), now=clock.utc)  # type: ignore[arg-type]


def converse(
    client: Dlt645Client,
    meters: Sequence[SimulatedDlt645Meter],
    *,
    mangle: object = None,
) -> list[Action]:
    """Run a whole session against meters in memory: every request goes to every meter,
    every answer back (through ``mangle(bytes) -> bytes`` if given). Returns the actions
    other than Send."""
    decoder = FrameDecoder()
    out: list[Action] = []
    queue = client.start()
    while queue:
        action = queue.pop(0)
        if not isinstance(action, Send):
            out.append(action)
            continue
        for request in decoder.receive(action.data):
            for meter in meters:
                answer = meter.answer(request)
                if answer is None:
                    continue
                wire = answer.encode(preamble=4)
                if callable(mangle):
                    wire = mangle(wire)
                queue += client.receive(wire)
    return out


def finished(actions: Sequence[Action]) -> list[Record]:
    ends = [a for a in actions if isinstance(a, Finished | Failed)]
    assert len(ends) == 1, ends
    end = ends[0]
    if isinstance(end, Failed):
        raise AssertionError(f"session failed: {end.error}")
    return list(end.records)


def failure(actions: Sequence[Action]) -> ProtocolError:
    ends = [a for a in actions if isinstance(a, Finished | Failed)]
    assert len(ends) == 1 and isinstance(ends[0], Failed), ends
    return ends[0].error


def readings(records: Sequence[Record]) -> dict[str, Reading]:
    return {r.native_id or "": r for r in records if isinstance(r, Reading)}


def answer_bytes(frame: Frame | None) -> bytes:
    assert frame is not None, "the meter did not answer"
    return frame.encode(preamble=4)


def only_send(actions: Sequence[Action]) -> Send:
    (send,) = actions
    assert isinstance(send, Send), send
    return send


def last_sent(actions: Sequence[Action]) -> bytes:
    send = actions[-1]
    assert isinstance(send, Send), send
    return send.data


def number(reading: Reading) -> Decimal:
    assert isinstance(reading.value, Decimal), reading
    return reading.value


class PublishedExchangeTests(unittest.TestCase):
    def test_first_request_is_the_luat_published_read_with_wakeup(self) -> None:
        # luatdoc.papapoi.com/572: FE FE FE FE, read 00010000 of meter 000012345678.
        client = make_client(address="12345678", items=(0x00010000,))
        send = only_send(client.start())
        self.assertEqual(send, Send(FRAMES["luat_read_total_forward_active_request"]))

    def test_issue_exchange_gives_four_hundredths_of_a_kwh(self) -> None:
        # fep issue 4: meter 398192000337, answer 0.04 kWh forward active total.
        client = make_client(address="398192000337", items=(0x00010000,), wakeup=False)
        send = only_send(client.start())
        self.assertEqual(send, Send(FRAMES["read_total_forward_active_request"]))
        records = finished(client.receive(FRAMES["read_total_forward_active_response"]))
        reading = readings(records)["00010000"]
        self.assertEqual(reading.value, Decimal("0.04"))
        self.assertEqual(reading.obis, ObisCode(1, 0, 1, 8, 0))
        self.assertEqual(reading.unit_text, "kWh")
        self.assertEqual(reading.meter, "m1")

    def test_1997_kaledl_exchange_gives_one_hundredth_of_a_kwh(self) -> None:
        # kaledl.com/down/1493168.html: meter 138000130754, DI 9010.
        client = make_client(address="138000130754", edition=1997, items=(0x9010,), wakeup=False)
        send = only_send(client.start())
        self.assertEqual(send, Send(FRAMES["kaledl_1997_read_9010_request_2"]))
        records = finished(client.receive(FRAMES["kaledl_1997_read_9010_response"]))
        self.assertEqual(readings(records)["9010"].value, Decimal("0.01"))

    def test_1997_heyuan_exchange_gives_100_volts(self) -> None:
        # Heyuan ASDU-LS manual: meter 000000000003, DI B611.
        client = make_client(address="3", edition=1997, items=(0xB611,), wakeup=False)
        send = only_send(client.start())
        self.assertEqual(send, Send(FRAMES["heyuan_1997_read_b611_request"]))
        records = finished(client.receive(FRAMES["heyuan_1997_read_b611_response"]))
        self.assertEqual(readings(records)["B611"].value, Decimal("100"))


class SimulatedMeterTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()
        self.meter = SimulatedDlt645Meter(clock=self.clock)
        self.clock.now += 2 * 3600  # two hours of consumption since the meter started

    def test_default_items_read_in_order_with_units_and_obis(self) -> None:
        client = make_client(self.clock)
        records = finished(converse(client, [self.meter]))
        self.assertEqual(
            self.meter.log,
            [f"read {di:08X}" for di in DEFAULT_ITEMS_2007],
        )
        got = readings(records)
        # 1234.56 kWh + 1.5 kWh/h for two hours; combined = forward + reverse.
        self.assertEqual(got["00010000"].value, Decimal("1237.56"))
        self.assertEqual(got["00020000"].value, Decimal("12.44"))
        self.assertEqual(got["00000000"].value, Decimal("1250.00"))
        self.assertEqual(got["00000000"].obis, ObisCode(1, 0, 15, 8, 0))
        tariffs = [number(got[f"0000{n:02X}00"]) for n in range(1, 5)]
        self.assertEqual(sum(tariffs, Decimal(0)), got["00000000"].value)
        self.assertEqual(got["02010200"].value, Decimal("221.3"))
        self.assertEqual(got["02010200"].obis, ObisCode(1, 0, 52, 7, 0))
        self.assertEqual(got["02020300"].value, Decimal("-0.250"))
        self.assertEqual(got["02020300"].unit_text, "A")
        self.assertEqual(got["02030000"].unit_text, "kW")

    def test_clock_is_one_reading_with_the_meter_time_and_ours(self) -> None:
        self.meter.clock_offset = 42.0  # the meter's clock runs 42 s ahead
        client = make_client(self.clock)
        got = readings(finished(converse(client, [self.meter])))
        clock = got["04000101+04000102"]
        self.assertEqual(clock.obis, ObisCode(0, 0, 1, 0, 0))
        self.assertEqual(clock.meter_time, self.clock.utc() + timedelta(seconds=42))
        self.assertEqual(clock.received_time, self.clock.utc())
        # The date and time DIs themselves are the meter's wall clock (UTC+8).
        self.assertEqual(got["04000102"].value, "18:00:42")
        self.assertEqual(got["04000101"].value, "2024-03-01")

    def test_long_answer_is_read_in_follow_up_frames(self) -> None:
        self.meter.max_data = 16  # 12 bytes of data in the first frame, 11 in the others
        client = make_client(self.clock, items=(0x0000FF00, 0x0201FF00))
        got = readings(finished(converse(client, [self.meter])))
        self.assertEqual(
            self.meter.log,
            ["read 0000FF00", "follow-up 0000FF00 1", "read 0201FF00"],
        )
        self.assertEqual(len([k for k in got if k.startswith("0000")]), 5)
        tariffs = [number(got[f"0000{n:02X}00"]) for n in range(1, 5)]
        self.assertEqual(sum(tariffs, Decimal(0)), got["00000000"].value)

    def test_event_records_become_meter_events(self) -> None:
        client = make_client(self.clock, items=(0x03110001, 0x03110002, 0x03300D01, 0x03110003))
        events = [r for r in finished(converse(client, [self.meter])) if isinstance(r, MeterEvent)]
        kinds = [(e.code, e.kind, e.time) for e in events]
        self.assertEqual(
            kinds,
            [
                ("03110000", EventKind.POWER_OUTAGE, datetime(2024, 3, 1, 2, 0, tzinfo=UTC)),
                ("03110000-end", EventKind.POWER_RESTORED,
                 datetime(2024, 3, 1, 2, 47, 30, tzinfo=UTC)),
                ("03110000", EventKind.POWER_OUTAGE, datetime(2024, 1, 15, 22, 10, tzinfo=UTC)),
                ("03110000-end", EventKind.POWER_RESTORED,
                 datetime(2024, 1, 16, 0, 5, tzinfo=UTC)),
                ("03300D00", EventKind.COVER_OPEN, datetime(2024, 2, 20, 9, 15, tzinfo=UTC)),
            ],
        )  # fmt: skip
        # The third power-down record was never filled: no events from it.
        self.assertEqual(self.meter.log[-1], "read 03110003")

    def test_no_requested_data_skips_that_item_and_reads_the_rest(self) -> None:
        self.meter.missing = {0x0201FF00}
        client = make_client(self.clock, items=(0x00010000, 0x0201FF00, 0x02800002))
        actions = converse(client, [self.meter])
        skipped = [a for a in actions if isinstance(a, Skipped)]
        self.assertEqual([s.di for s in skipped], ["0201FF00"])
        self.assertIn("no requested data", skipped[0].why)
        self.assertEqual(set(readings(finished(actions))), {"00010000", "02800002"})
        self.assertEqual(client.skipped, [("0201FF00", skipped[0].why)])

    def test_1997_meter_is_read_with_two_byte_identifiers(self) -> None:
        meter = SimulatedDlt645Meter(clock=self.clock, edition=1997)
        client = make_client(self.clock, edition=1997)
        got = readings(finished(converse(client, [meter])))
        self.assertEqual(got["9010"].value, meter.energy(1))
        self.assertEqual(got["9014"].value, meter.energy(1, 4))
        self.assertEqual(got["B612"].value, Decimal("221"))
        self.assertEqual(got["B623"].value, Decimal("0.25"))  # 1997 currents are unsigned
        self.assertIn("C010+C011", got)

    def test_1997_long_answer_uses_1997_follow_up(self) -> None:
        meter = SimulatedDlt645Meter(clock=self.clock, edition=1997, max_data=16)
        client = make_client(self.clock, edition=1997, items=(0x901F,))
        got = readings(finished(converse(client, [meter])))
        self.assertEqual(len(got), 5)
        self.assertEqual(meter.log, ["read 901F"])  # follow-ups (02) are not logged by name

    def test_multidrop_only_the_addressed_meter_answers(self) -> None:
        other = SimulatedDlt645Meter(address="000000123457", clock=self.clock, started=START)
        other.registers[1].start = Decimal("9000")
        client = make_client(self.clock, address="000000123457", items=(0x00010000,))
        got = readings(finished(converse(client, [self.meter, other])))
        self.assertEqual(got["00010000"].value, Decimal("9003.00"))
        self.assertEqual(self.meter.log, [])

    def test_wildcard_address_accepts_the_meter_s_own_address(self) -> None:
        client = make_client(self.clock, address="AAAAAAAAAAAA", items=(0x00010000,))
        got = readings(finished(converse(client, [self.meter])))
        self.assertEqual(got["00010000"].meter, "m1")


class LoadProfileTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()
        self.meter = SimulatedDlt645Meter(clock=self.clock, max_data=120)
        self.clock.now += 3 * 3600 + 60  # 12 records of 15 minutes, the last at 11:00 UTC

    def blocks(self, actions: Sequence[Action]) -> dict[str, IntervalBlock]:
        return {str(r.obis): r for r in finished(actions) if isinstance(r, IntervalBlock)}

    def test_given_time_read_gives_interval_blocks_of_each_quantity(self) -> None:
        client = make_client(self.clock, items=(0x06000001,), profile_blocks=4)
        blocks = self.blocks(converse(client, [self.meter]))
        # The request asks for 4 records from 10:15 UTC (18:15 meter time), DI N mmhhDDMMYY.
        energy = blocks["1-0:1.8.0*255"]
        self.assertEqual(energy.start, datetime(2024, 3, 1, 10, 0, tzinfo=UTC))
        self.assertEqual(energy.period, timedelta(minutes=15))
        self.assertEqual(len(energy.values), 4)
        last = self.meter.energy(1, 0, self.clock.utc() - timedelta(minutes=1))
        self.assertEqual(energy.values[-1], last)
        self.assertEqual((energy.unit.symbol if energy.unit else None, energy.scaler), ("Wh", 3))
        self.assertEqual(blocks["1-0:32.7.0*255"].values, (Decimal("220.1"),) * 4)
        self.assertEqual(blocks["1-0:1.4.0*255"].scaler, 3)
        # Class 5 (quadrant reactive energy) is not recorded by the simulated meter.
        self.assertNotIn("1-0:5.8.0*255", blocks)
        self.assertEqual(self.meter.log[0], "read 06000001")
        self.assertGreater(len(self.meter.log), 2)  # the answer took follow-up frames

    def test_request_carries_the_block_count_and_meter_local_start(self) -> None:
        since = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
        client = make_client(self.clock, items=(0x06000001,), profile_blocks=6,
                             profile_since=since)  # fmt: skip
        send = only_send(client.start())
        (frame,) = FrameDecoder().receive(send.data)
        self.assertEqual(frame.data, bytes.fromhex("01000006 06 0017010324"))

    def test_latest_block_read_asks_for_the_count_only(self) -> None:
        client = make_client(self.clock, items=(0x06000002,), profile_blocks=2)
        blocks = self.blocks(converse(client, [self.meter]))
        # Records at 10:45 and 11:00 UTC: the first interval started at 10:30.
        self.assertEqual(blocks["1-0:1.8.0*255"].start, datetime(2024, 3, 1, 10, 30, tzinfo=UTC))
        self.assertEqual(len(blocks["1-0:1.8.0*255"].values), 2)


def record(minute: int, valid: bool = True, classes: tuple[bytes, ...] | None = None) -> bytes:
    at = datetime(2024, 5, 17, 12, minute, tzinfo=UTC)
    if classes is None:
        classes = (encode_load_class(1, [Decimal("230.0"), Decimal("231.0"), Decimal("229.5"),
                                         Decimal("1.000"), Decimal("2.000"), Decimal("3.000"),
                                         Decimal("50.00")]),
                   b"", b"",
                   encode_load_class(4, [Decimal(100 + minute), Decimal(1), Decimal(2),
                                         Decimal(3)]),
                   b"", b"")  # fmt: skip
    return encode_load_record(LoadRecord(at, classes, valid))


class LoadRecordTests(unittest.TestCase):
    def test_record_layout(self) -> None:
        raw = record(15)
        self.assertEqual(raw[:2], b"\xa0\xa0")
        # time (5) + class 1 (17) + AA + AA + AA + class 4 (16) + AA + AA + AA
        self.assertEqual(raw[2], 5 + 17 + 16 + 6)
        # mm hh DD MM YY of the meter's wall clock (UTC+8): 20:15 on 17 May 2024.
        self.assertEqual(raw[3:8], bytes.fromhex("1520170524"))
        self.assertEqual(raw[-1], 0xE5)
        self.assertEqual(raw[-2], sum(raw[:-2]) & 0xFF)
        self.assertEqual(raw[8 + 17], 0xAA)

    def test_records_round_trip(self) -> None:
        parsed = parse_load_records(record(0) + record(15, valid=False))
        self.assertEqual([r.time.minute for r in parsed], [0, 15])
        self.assertEqual([r.valid for r in parsed], [True, False])
        self.assertEqual([len(c) for c in parsed[0].classes], [17, 0, 0, 16, 0, 0])

    def test_gap_starts_a_new_block_and_bad_records_are_flagged(self) -> None:
        data = record(0) + record(15, valid=False) + record(45)
        blocks = decode_load_records(data, meter="m1", period=timedelta(minutes=15))
        energy = [b for b in blocks if b.obis == ObisCode(1, 0, 1, 8, 0)]
        self.assertEqual([len(b.values) for b in energy], [2, 1])
        self.assertEqual(energy[0].values, (Decimal("100.00"), Decimal("115.00")))
        self.assertEqual(energy[0].statuses, (Quality.OK, Quality.DATA_NOT_VALID))
        self.assertEqual(energy[0].start, datetime(2024, 5, 17, 11, 45, tzinfo=UTC))
        self.assertEqual(energy[1].start, datetime(2024, 5, 17, 12, 30, tzinfo=UTC))

    def test_bad_checksum_is_a_frame_error(self) -> None:
        raw = bytearray(record(0))
        raw[-2] ^= 1
        with self.assertRaises(FrameError) as caught:
            parse_load_records(bytes(raw))
        self.assertEqual(caught.exception.field, "record CS")

    def test_missing_separator_is_a_frame_error(self) -> None:
        raw = bytearray(record(0))
        raw[8 + 17] = 0x00
        raw[-2] = sum(raw[:-2]) & 0xFF
        with self.assertRaises(FrameError):
            parse_load_records(bytes(raw))

    def test_class_lengths_are_the_standard_s(self) -> None:
        self.assertEqual(LOAD_CLASS_LENGTHS, (17, 24, 8, 16, 16, 6))

    @given(st.binary(max_size=120))
    def test_arbitrary_bytes_give_records_or_a_frame_error(self, raw: bytes) -> None:
        try:
            decode_load_records(raw, meter="m1", period=timedelta(minutes=15))
        except FrameError:
            pass


class ErrorAnswerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.client = make_client(items=(0x00010000, 0x02010100))
        self.send = only_send(self.client.start())
        (self.request,) = FrameDecoder().receive(self.send.data)

    def test_unauthorised_answer_fails_with_the_named_error(self) -> None:
        refusal = services.refusal(self.request, ErrorStatus.UNAUTHORIZED)
        error = failure(self.client.receive(answer_bytes(refusal)))
        self.assertIsInstance(error, Unauthorized)
        self.assertEqual((error.meter, error.route), ("m1", "tcp:host=10.0.0.7:port=8645"))
        self.assertIn("DI 00010000", error.message)
        self.assertIn("wrong password or unauthorised", error.message)

    def test_other_error_fails_the_session(self) -> None:
        refusal = services.refusal(self.request, ErrorStatus.OTHER)
        error = failure(self.client.receive(answer_bytes(refusal)))
        assert isinstance(error, MeterErrorResponse)
        self.assertEqual(error.status, ErrorStatus.OTHER)

    def test_answer_from_another_address_fails(self) -> None:
        answer = Frame("000000999999", 0x91, bytes.fromhex("00000100 00010000"))
        error = failure(self.client.receive(answer_bytes(answer)))
        self.assertIn("answer from address 000000999999", error.message)
        self.assertEqual(error.meter, "m1")

    def test_answer_for_another_di_fails(self) -> None:
        answer = services.response(self.request, bytes.fromhex("00000200 00010000"))
        error = failure(self.client.receive(answer_bytes(answer)))
        self.assertIn("DI 00020000, asked 00010000", error.message)

    def test_answer_that_cannot_be_decoded_skips_the_item(self) -> None:
        answer = services.response(self.request, bytes.fromhex("00000100 000100"))
        actions = self.client.receive(answer_bytes(answer))
        (skipped,) = [a for a in actions if isinstance(a, Skipped)]
        self.assertIn("answer not understood", skipped.why)
        self.assertIsInstance(actions[-1], Send)  # on to the next item

    def test_follow_up_with_the_wrong_number_fails(self) -> None:
        first = services.response(self.request, bytes.fromhex("00000100 0001"), follow_up=True)
        actions = self.client.receive(answer_bytes(first))
        (follow,) = FrameDecoder().receive(last_sent(actions))
        self.assertEqual(follow.data, bytes.fromhex("0000010001"))
        wrong = services.response(follow, bytes.fromhex("00000100 0000 03"))
        error = failure(self.client.receive(answer_bytes(wrong)))
        self.assertIn("follow-up frame 3", error.message)

    def test_endless_follow_ups_are_cut_off(self) -> None:
        client = make_client(items=(0x00010000,), max_follow_ups=3)
        send = only_send(client.start())
        actions: list[Action] = [send]
        for _ in range(5):
            (request,) = FrameDecoder().receive(last_sent(actions))
            seq = request.data[4:] if request.function == 0x12 else b""
            answer = services.response(request, request.data[:4] + b"\x00" + seq, follow_up=True)
            actions = client.receive(answer_bytes(answer))
            if isinstance(actions[-1], Failed):
                break
        self.assertIn("still has follow-up frames after 3", failure(actions).message)


class SilenceAndNoiseTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()
        self.meter = SimulatedDlt645Meter(clock=self.clock)

    def test_silence_resends_then_times_out_naming_meter_route_and_di(self) -> None:
        client = make_client(self.clock, items=(0x02010100,))
        send = only_send(client.start())
        actions = client.timeout()
        self.assertEqual(actions, [Resent(1, "no answer"), send])
        error = failure(client.timeout())
        self.assertIsInstance(error, SessionTimeout)
        self.assertEqual((error.meter, error.route), ("m1", "tcp:host=10.0.0.7:port=8645"))
        self.assertIn("no valid answer to read of DI 02010100", error.message)

    def test_no_retries_fails_at_the_first_timeout(self) -> None:
        client = make_client(self.clock, retries=0)
        client.start()
        self.assertIsInstance(failure(client.timeout()), SessionTimeout)

    def test_garbage_before_answers_is_skipped_and_counted(self) -> None:
        client = make_client(self.clock, items=(0x00010000, 0x02010100))
        records = finished(
            converse(client, [self.meter], mangle=lambda wire: b"\x00\x13\x68\x99" + wire)
        )
        self.assertEqual(set(readings(records)), {"00010000", "02010100"})
        self.assertEqual(client.line_garbage, 8)
        self.assertEqual(client.noise, 0)

    def test_damaged_answer_is_asked_for_again_at_once(self) -> None:
        client = make_client(self.clock, items=(0x00010000, 0x02010100))
        spoilt = [1]

        def damage(wire: bytes) -> bytes:
            if spoilt[0]:
                spoilt[0] -= 1
                return wire[:-2] + bytes([wire[-2] ^ 0xFF, wire[-1]])
            return wire

        actions = converse(client, [self.meter], mangle=damage)
        self.assertEqual(set(readings(finished(actions))), {"00010000", "02010100"})
        noise = [a for a in actions if isinstance(a, Noise)]
        self.assertEqual(len(noise), 1)
        self.assertIn("bad checksum", noise[0].why)
        self.assertIn(Resent(1, "damaged answer"), actions)
        self.assertEqual(self.meter.log, ["read 00010000", "read 00010000", "read 02010100"])
        self.assertEqual((client.noise, client.resent), (1, 1))

    def test_only_damaged_answers_end_in_a_timeout_that_says_so(self) -> None:
        client = make_client(self.clock, items=(0x00010000,))
        damage = lambda wire: wire[:-2] + bytes([wire[-2] ^ 0xFF, wire[-1]])  # noqa: E731
        actions = converse(client, [self.meter], mangle=damage)
        self.assertEqual(
            [type(a) for a in actions], [Noise, Resent, Noise]
        )  # one resend (retries=1), then nothing more until the timer runs out
        error = failure(client.timeout())
        self.assertIn("only damaged answers to read of DI 00010000", error.message)

    def test_second_answer_to_a_resent_request_is_ignored(self) -> None:
        client = make_client(self.clock, items=(0x00010000, 0x02010100))
        send = only_send(client.start())
        (request,) = FrameDecoder().receive(send.data)
        client.timeout()  # resent; then both answers arrive
        first = answer_bytes(self.meter.answer(request))
        actions = client.receive(first)
        self.assertIsInstance(actions[-1], Send)  # the next item asked
        self.assertEqual(client.receive(first), [])
        self.assertEqual(client.stale, 1)
        self.assertEqual(client.current_di, 0x02010100)

    def test_own_request_echoed_back_is_ignored(self) -> None:
        client = make_client(self.clock, items=(0x00010000,))
        send = only_send(client.start())
        (request,) = FrameDecoder().receive(send.data)
        answer = answer_bytes(self.meter.answer(request))
        self.assertEqual(client.receive(send.data), [])
        records = finished(client.receive(answer))
        self.assertEqual(client.echoes, 1)
        self.assertTrue(records)

    def test_answer_split_byte_by_byte_is_put_together(self) -> None:
        client = make_client(self.clock, items=(0x02010100,))
        send = only_send(client.start())
        (request,) = FrameDecoder().receive(send.data)
        wire = answer_bytes(self.meter.answer(request))
        actions: list[Action] = []
        for b in wire:
            actions += client.receive(bytes([b]))
        self.assertEqual(readings(finished(actions))["02010100"].value, Decimal("220.1"))


class SettingsTests(unittest.TestCase):
    def test_unknown_di_is_refused_before_any_byte_is_sent(self) -> None:
        with self.assertRaises(ValueError) as caught:
            ClientSettings(items=(0x12345678,))
        self.assertIn("DI 12345678", str(caught.exception))

    def test_bad_address_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            ClientSettings(address="12345X")

    def test_short_address_is_padded_and_duplicates_dropped(self) -> None:
        s = ClientSettings(address="123456", items=(0x00010000, 0x00010000, 0x02010100))
        self.assertEqual(s.address, "000000123456")
        self.assertEqual(s.items, (0x00010000, 0x02010100))

    def test_default_items_depend_on_the_edition(self) -> None:
        self.assertEqual(ClientSettings().reading_items, DEFAULT_ITEMS_2007)
        self.assertEqual(ClientSettings(edition=1997).reading_items[0], 0x901F)

    def test_session_cannot_start_twice(self) -> None:
        client = make_client()
        client.start()
        with self.assertRaises(ProtocolError):
            client.start()


# Every DI kind: a register, a block, an event record, the load profile.
ITEMS = (0x00010000, 0x0201FF00, 0x03110001, 0x06000002, 0x04000101)


class ArbitraryBytesTests(unittest.TestCase):
    @settings(max_examples=200)
    @given(st.lists(st.binary(max_size=40), max_size=8))
    def test_arbitrary_line_bytes_give_actions_only(self, chunks: list[bytes]) -> None:
        client = make_client(items=ITEMS)
        client.start()
        for chunk in chunks:
            for action in client.receive(chunk):
                if isinstance(action, Failed):
                    self.assertIsInstance(action.error, ProtocolError)
        for action in client.timeout() + client.timeout():
            if isinstance(action, Failed):
                self.assertIsInstance(action.error, ProtocolError)

    @settings(max_examples=200)
    @given(
        st.sampled_from(ITEMS),
        st.binary(max_size=200),
        st.booleans(),
        st.booleans(),
    )
    def test_well_framed_answers_with_arbitrary_data_give_actions_only(
        self, di: int, payload: bytes, follow_up: bool, error: bool
    ) -> None:
        client = make_client(items=(di,))
        client.start()
        control = control_code(0x11, response=True, follow_up=follow_up, error=error)
        data = di.to_bytes(4, "little") + payload[:251]
        actions = client.receive(Frame(ADDRESS, control, data).encode())
        for action in actions:
            if isinstance(action, Failed):
                self.assertIsInstance(action.error, ProtocolError)
        if not follow_up or error:
            self.assertTrue(client.done or any(isinstance(a, Send) for a in actions))
