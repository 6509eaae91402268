"""The C12.18 client state machine (sans-IO) against the simulated meter in memory, and the
C12.19 pieces it adds: ST12 units of measure, ST22 data selection, ST23 values as Readings.

Table bytes are assembled by hand from the C12.19 layouts where a test names its fields.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FepError, FrameError, ProtocolError, SessionTimeout
from fep.model import (
    UNITS,
    EventKind,
    IntervalBlock,
    MeterEvent,
    ObisCode,
    Quality,
    Reading,
    Severity,
    unit_text,
)
from fep.protocols.ansi_c12.c1218 import (
    ACK,
    NAK,
    Identify,
    InsufficientSecurityClearance,
    InvalidServiceSequenceState,
    Link,
    Negotiate,
    Packet,
    PacketDecoder,
    Read,
    Received,
    ResponseCode,
    Security,
    Sent,
    Terminate,
    decode_request,
    encode_error,
    encode_read_response,
)
from fep.protocols.ansi_c12.c1219 import (
    LP_COMMON_CLOCK_FORWARD,
    LP_COMMON_POWER_FAIL,
    ST74_HISTORY_LOG,
    ST76_EVENT_LOG,
    ActualLoadProfile,
    ActualLog,
    ActualRegisters,
    CurrentRegisters,
    DataBlock,
    DataSelection,
    DemandRecord,
    GeneralConfig,
    ListStatus,
    LogData,
    LogEntry,
    LpBlock,
    LpChannel,
    LpChannelStatus,
    LpInterval,
    LpSelection,
    LpSetDims,
    NiFormat,
    TimeBase,
    TimeFormat,
    UomEntry,
    decode_log,
    decode_lp_data,
    decode_lp_selection,
    decode_lp_status,
    decode_uom_entries,
    encode_log,
    encode_lp_data,
    encode_lp_selection,
    encode_uom_entries,
    log_data_length,
    log_events,
    lp_data_length,
    profile_blocks,
    register_readings,
    uom_quantity,
)
from fep.protocols.ansi_c12.client import (
    Action,
    C1218Client,
    ClientSettings,
    Failed,
    Finished,
    MeterData,
    Retransmitted,
    Send,
    SwitchBaud,
    parse_password,
)
from fep.sim.ansi_c12 import SimulatedC12Meter
from tests.protocols.ansi_c12.published import PACKETS

NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: float = NOW.timestamp()) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settings_(**kw: object) -> ClientSettings:
    base: dict[str, object] = {"meter": "m1", "route": "tcp:host=10.0.0.9:port=1153"}
    base.update(kw)
    return ClientSettings(**base)  # type: ignore[arg-type]


class Wire:
    """The client and a simulated meter joined in memory through a meter-side Link.

    ``to_meter``/``to_client`` may rewrite each chunk (line faults); ``answers`` may
    replace the meter's answer message."""

    def __init__(
        self,
        client: C1218Client,
        meter: SimulatedC12Meter,
        *,
        to_meter: Callable[[bytes], bytes] = lambda b: b,
        to_client: Callable[[bytes], bytes] = lambda b: b,
        answers: Callable[[bytes, bytes], bytes] = lambda request, answer: answer,
    ) -> None:
        self.client = client
        self.meter = meter
        self.link = Link()
        self.to_meter = to_meter
        self.to_client = to_client
        self.answers = answers
        self.actions: list[Action] = []
        self.requests: list[bytes] = []

    def meter_side(self, data: bytes) -> bytes:
        out, events = self.link.receive(data)
        for event in events:
            if isinstance(event, Received):
                self.requests.append(event.data)
                answer = self.answers(event.data, self.meter.answer(event.data))
                out += self.link.send(answer)
                if event.data[:1] in (b"\x60", b"\x61"):
                    self.link.packet_size = self.meter.packet_size
        return out

    def run(self, actions: list[Action] | None = None, limit: int = 500) -> Action:
        actions = self.client.start() if actions is None else actions
        for _ in range(limit):
            self.actions += actions
            for action in actions:
                if isinstance(action, (Finished, Failed)):
                    return action
            wire = b"".join(a.data for a in actions if isinstance(a, Send))
            if not wire:
                raise AssertionError(f"client went quiet: {actions}")
            back = self.to_client(self.meter_side(self.to_meter(wire)))
            actions = self.client.receive(back) if back else self.client.timeout()
        raise AssertionError("no end to the conversation")


def read_all(**kw: object) -> tuple[MeterData, Wire]:
    meter = SimulatedC12Meter(clock=FakeClock())
    wire = Wire(C1218Client(settings_(password=b"secret", **kw), now=lambda: NOW), meter)
    end = wire.run()
    assert isinstance(end, Finished), end
    return end.data, wire


class ConversationTests(unittest.TestCase):
    def test_first_bytes_are_the_published_identify_request(self) -> None:
        client = C1218Client(settings_())
        self.assertEqual(client.start(), [Send(PACKETS["identify_request"])])

    def test_full_session_reads_the_tables_in_order(self) -> None:
        _, wire = read_all()
        self.assertEqual(
            wire.meter.log,
            ["identify", "negotiate", "logon", "security", "read 0", "read 1", "read 5",
             "read 3", "read 52", "read 21", "read 11", "read 12", "read 13", "read 14",
             "read 15", "read 16", "read 22", "read 23", "read 61",
             "read 62", "read 63", "read 64", "read 24", "read 25", "read 26", "read 71",
             "read 74", "read 76", "logoff", "terminate"],
        )  # fmt: skip

    def test_requests_are_the_c1218_encodings(self) -> None:
        _, wire = read_all(user=b"reader", user_id=7, packet_size=128, max_packets=2)
        self.assertEqual(wire.requests[1], b"\x60\x00\x80\x02")
        self.assertEqual(wire.requests[2], b"\x50\x00\x07reader    ")
        self.assertEqual(wire.requests[3], b"\x51secret" + bytes(14))
        self.assertEqual(wire.requests[4], b"\x30\x00\x00")

    def test_results_are_decoded(self) -> None:
        data, _ = read_all()
        self.assertEqual(data.manufacturer.serial_number, "SIM0000001")
        assert data.device is not None and data.current is not None
        self.assertEqual(data.device.identification, "FEP C12 SIMULATOR")
        self.assertEqual(data.current.total.summations[0], Decimal("1234.5"))
        self.assertEqual(data.skipped, ())
        self.assertEqual(data.clock_deviation, 0.0)

    def test_clock_deviation_is_kept(self) -> None:
        meter = SimulatedC12Meter(clock=FakeClock(), clock_offset=90)
        wire = Wire(C1218Client(settings_(password=b"secret"), now=lambda: NOW), meter)
        end = wire.run()
        assert isinstance(end, Finished)
        self.assertEqual(end.data.clock_deviation, 90.0)
        records = end.data.to_records("m1", NOW)
        (clock,) = [r for r in records if isinstance(r, Reading) and r.native_id == "ST52"]
        assert clock.meter_time is not None
        self.assertEqual(clock.obis, ObisCode(0, 0, 1, 0, 0))
        self.assertEqual(clock.meter_time - clock.received_time, timedelta(seconds=90))

    def test_records_carry_units_and_obis(self) -> None:
        data, _ = read_all()
        by = {str(r.obis): r for r in data.to_records("m1", NOW) if isinstance(r, Reading)}
        energy = by["1-0:1.8.0*255"]
        self.assertEqual((energy.value, energy.unit_text), (Decimal("1234.5"), "kWh"))
        self.assertEqual(by["1-0:2.8.0*255"].unit_text, "kWh")
        self.assertEqual(by["1-0:3.8.0*255"].unit_text, "kvarh")
        self.assertEqual(by["1-0:1.6.0*255"].unit_text, "kW")
        self.assertEqual(by["1-0:1.8.1*255"].value, Decimal("740.7"))
        self.assertEqual(by["0-0:96.1.0*255"].value, "SIM0000001")
        self.assertEqual(by["0-0:0.0.0*255"].value, "FEP C12 SIMULATOR")

    def test_negotiated_packet_size_is_used_for_long_answers(self) -> None:
        data, wire = read_all(packet_size=32, max_packets=8)
        self.assertEqual(data.negotiated.packet_size, 32)
        self.assertEqual(wire.client.link.packet_size, 32)
        self.assertIsNotNone(data.current)

    def test_negotiated_baud_switch_comes_between_the_ack_and_the_logon(self) -> None:
        _, wire = read_all(baud=19200)
        switch = wire.actions.index(SwitchBaud(19200))
        self.assertEqual(wire.requests[1], b"\x61\x01\x00\x04\x08")
        # The negotiate answer's ACK goes out at the old speed, the logon at the new one.
        self.assertEqual(wire.actions[switch - 1], Send(bytes([ACK])))
        after = wire.actions[switch + 1]
        assert isinstance(after, Send)
        self.assertEqual(PacketDecoder().receive(after.data), [Packet(b"\x50\x00\x00fep       ")])

    def test_wrong_password_is_isc_with_meter_and_route_after_terminate(self) -> None:
        meter = SimulatedC12Meter(clock=FakeClock())
        wire = Wire(C1218Client(settings_(password=b"nope")), meter)
        end = wire.run()
        assert isinstance(end, Failed)
        error = end.error
        assert isinstance(error, InsufficientSecurityClearance)
        self.assertEqual((error.meter, error.route), ("m1", "tcp:host=10.0.0.9:port=1153"))
        self.assertEqual((error.service, error.response_code), ("security", ResponseCode.ISC))
        self.assertIn("refused security", error.message)
        self.assertEqual(meter.log[-2:], ["security", "terminate"])
        self.assertNotIn("nope", repr(wire.client.settings))

    def test_without_password_the_meter_refuses_protected_tables(self) -> None:
        meter = SimulatedC12Meter(clock=FakeClock())
        wire = Wire(C1218Client(settings_()), meter)
        end = wire.run()
        assert isinstance(end, Finished)
        skipped = dict(end.data.skipped)
        self.assertIn("isc", skipped["ST52"])
        self.assertIsNone(end.data.clock)
        self.assertEqual(end.data.manufacturer.serial_number, "SIM0000001")

    def test_refused_mandatory_table_fails_with_the_named_error(self) -> None:
        def refuse_st1(request: bytes, answer: bytes) -> bytes:
            return encode_error(ResponseCode.ISSS) if request == b"\x30\x00\x01" else answer

        meter = SimulatedC12Meter(clock=FakeClock())
        wire = Wire(C1218Client(settings_(password=b"secret")), meter, answers=refuse_st1)
        end = wire.run()
        assert isinstance(end, Failed)
        self.assertIsInstance(end.error, InvalidServiceSequenceState)
        self.assertIn("read of table 1", str(end.error))

    def test_decade_1_tables_apply_the_transformer_multiplier_and_name_sources(self) -> None:
        meter = SimulatedC12Meter(clock=FakeClock(), multiplier=Decimal(40))
        wire = Wire(C1218Client(settings_(password=b"secret"), now=lambda: NOW), meter)
        end = wire.run()
        assert isinstance(end, Finished)
        sources = end.data.sources
        assert sources is not None
        self.assertEqual(sources.demand_minutes(3), 15)
        by = {str(r.obis): r for r in end.data.to_records("m1") if isinstance(r, Reading)}
        # The meter counts secondary kWh (1234.5 at start); ST16 asks for ST15's x40.
        energy = by["1-0:1.8.0*255"]
        self.assertEqual((energy.value, energy.unit_text), (Decimal("49380.0000"), "kWh"))
        self.assertEqual(
            energy.native_id,
            "ST23 total summation 0 (source 0: active power, bulk, Q1+Q4, x10^3; id +A; "
            "constants x40+0 applied)",
        )
        self.assertEqual(by["1-0:1.6.0*255"].value, Decimal("4.2") * 40)
        # The volts source has no constants to apply.
        self.assertEqual(by["1-0:130.0.0*255"].value, Decimal("230.1"))
        profile = [r for r in end.data.to_records("m1") if isinstance(r, IntervalBlock)]
        # UINT16 Wh / 1000 x 40: 225 Wh is 9 kWh.
        self.assertEqual(profile[0].values[0], Decimal(9))

    def test_table_not_listed_in_st0_is_not_asked_for(self) -> None:
        meter = SimulatedC12Meter(clock=FakeClock())

        def no_decade_1(request: bytes, answer: bytes) -> bytes:
            if request == b"\x30\x00\x00":
                config = GeneralConfig.decode(answer[3:-1])
                used = config.std_tables_used - {11, 12, 13, 14, 15, 16}
                return encode_read_response(attrs.evolve(config, std_tables_used=used).encode())
            return answer

        wire = Wire(C1218Client(settings_(password=b"secret")), meter, answers=no_decade_1)
        end = wire.run()
        assert isinstance(end, Finished)
        self.assertNotIn("read 12", meter.log)
        self.assertNotIn("read 16", meter.log)
        self.assertEqual((end.data.uoms, end.data.sources), ((), None))
        by = {r.native_id: r for r in end.data.to_records("m1") if isinstance(r, Reading)}
        # Without ST12 the values keep manufacturer-specific codes and no unit.
        first = by["ST23 total summation 0"]
        self.assertEqual((first.obis, first.unit), (ObisCode(1, 0, 128, 0, 0), None))

    def test_checksum_error_in_a_table_fails_as_frame_error(self) -> None:
        def spoil(request: bytes, answer: bytes) -> bytes:
            return answer[:-1] + bytes([answer[-1] ^ 1]) if request == b"\x30\x00\x17" else answer

        wire = Wire(C1218Client(settings_(password=b"secret")), SimulatedC12Meter(), answers=spoil)
        end = wire.run()
        assert isinstance(end, Failed)
        assert isinstance(end.error, FrameError)
        self.assertEqual(end.error.field, "checksum")
        self.assertEqual(wire.meter.log[-1], "terminate")


class LineFaultTests(unittest.TestCase):
    def test_damaged_request_is_nakked_and_sent_again(self) -> None:
        spoiled = [False]

        def damage_read_23(data: bytes) -> bytes:
            if not spoiled[0] and b"\x30\x00\x17" in data:
                spoiled[0] = True
                return data[:-1] + bytes([data[-1] ^ 0xFF])
            return data

        meter = SimulatedC12Meter(clock=FakeClock())
        wire = Wire(C1218Client(settings_(password=b"secret")), meter, to_meter=damage_read_23)
        end = wire.run()
        self.assertIsInstance(end, Finished)
        self.assertIn(Retransmitted(1, "NAK"), wire.actions)
        self.assertEqual(meter.log.count("read 23"), 1)

    def test_damaged_answer_is_nakked_and_taken_when_repeated(self) -> None:
        spoiled = [False]

        def damage_first_answer(data: bytes) -> bytes:
            if not spoiled[0] and len(data) > 8:
                spoiled[0] = True
                return data[:-1] + bytes([data[-1] ^ 0xFF])
            return data

        class Repeating(Wire):
            def meter_side(self, data: bytes) -> bytes:
                if data == bytes([NAK]):
                    return self.link.receive(data)[0]
                return super().meter_side(data)

        meter = SimulatedC12Meter(clock=FakeClock())
        wire = Repeating(
            C1218Client(settings_(password=b"secret")), meter, to_client=damage_first_answer
        )
        end = wire.run()
        self.assertIsInstance(end, Finished)
        self.assertIn(Send(bytes([NAK])), wire.actions)

    def test_no_ack_resends_then_times_out_with_meter_and_route(self) -> None:
        client = C1218Client(settings_(retries=2))
        first = client.start()
        self.assertEqual(client.timeout(), [first[0], Retransmitted(1, "no ACK")])
        self.assertEqual(client.timeout(), [first[0], Retransmitted(2, "no ACK")])
        (end,) = client.timeout()
        assert isinstance(end, Failed)
        self.assertIsInstance(end.error, SessionTimeout)
        assert isinstance(end.error, ProtocolError)
        self.assertEqual((end.error.meter, end.error.route), ("m1", "tcp:host=10.0.0.9:port=1153"))
        self.assertEqual(client.receive(bytes([ACK])), [])

    def test_acked_request_without_answer_times_out_naming_the_request(self) -> None:
        client = C1218Client(settings_())
        client.start()
        self.assertEqual(client.receive(bytes([ACK])), [])
        (end,) = client.timeout()
        assert isinstance(end, Failed)
        self.assertIsInstance(end.error, SessionTimeout)
        self.assertIn("no answer to identify", str(end.error))

    def test_answer_without_ack_counts_as_the_ack(self) -> None:
        meter = SimulatedC12Meter(clock=FakeClock())

        def drop_acks(data: bytes) -> bytes:
            return data.lstrip(bytes([ACK]))

        wire = Wire(C1218Client(settings_(password=b"secret")), meter, to_client=drop_acks)
        self.assertIsInstance(wire.run(), Finished)
        self.assertNotIn(Retransmitted(1, "no ACK"), wire.actions)

    def test_answer_after_the_end_is_ignored(self) -> None:
        _, wire = read_all()
        self.assertEqual(wire.client.receive(Packet(b"\x00").encode()), [])


class ArbitraryBytesTests(unittest.TestCase):
    @settings(max_examples=200)
    @given(st.lists(st.binary(max_size=40), max_size=8), st.booleans())
    def test_arbitrary_meter_bytes_give_actions_or_typed_errors(
        self, chunks: list[bytes], ack_first: bool
    ) -> None:
        client = C1218Client(settings_())
        client.start()
        if ack_first:
            client.receive(bytes([ACK]))
        for chunk in chunks:
            for action in client.receive(chunk):
                self.assertIsInstance(action, (Send, Retransmitted, Failed, SwitchBaud))
                if isinstance(action, Failed):
                    self.assertIsInstance(action.error, FepError)

    @settings(max_examples=200)
    @given(st.integers(0, 12), st.binary(min_size=1, max_size=60))
    def test_arbitrary_answer_at_any_step_ends_typed(self, step: int, answer: bytes) -> None:
        """The n-th answer replaced by arbitrary bytes (in a good packet): the session goes
        on, or ends in Failed with a fep error; never another exception."""
        count = [0]

        def replace(request: bytes, real: bytes) -> bytes:
            count[0] += 1
            return answer if count[0] == step + 1 else real

        meter = SimulatedC12Meter(clock=FakeClock())
        wire = Wire(C1218Client(settings_(password=b"secret")), meter, answers=replace)
        end = wire.run()
        if isinstance(end, Failed):
            self.assertIsInstance(end.error, FepError)


class PasswordTests(unittest.TestCase):
    def test_text_password(self) -> None:
        self.assertEqual(parse_password("secret"), b"secret")

    def test_hex_password(self) -> None:
        self.assertEqual(parse_password("hex:00ff10"), b"\x00\xff\x10")
        self.assertEqual(parse_password("0x4142"), b"AB")

    def test_too_long_or_bad_hex(self) -> None:
        self.assertRaises(ValueError, parse_password, "x" * 21)
        self.assertRaises(ValueError, parse_password, "hex:zz")

    def test_space_padding_on_request(self) -> None:
        meter = SimulatedC12Meter(clock=FakeClock())
        wire = Wire(C1218Client(settings_(password=b"secret", password_pad=0x20)), meter)
        self.assertIsInstance(wire.run(), Finished)
        self.assertEqual(wire.requests[3], b"\x51secret" + b" " * 14)

    def test_settings_check_packet_size(self) -> None:
        self.assertRaises(ValueError, ClientSettings, packet_size=8)
        self.assertRaises(ValueError, ClientSettings, max_packets=0)


# ---------------------------------------------------------------------------
# C12.19 additions: ST12, ST22, register mapping
# ---------------------------------------------------------------------------

CONFIG = GeneralConfig()


class UomTests(unittest.TestCase):
    def test_st12_entry_bit_layout(self) -> None:
        # ID_CODE 0 (W), TIME_BASE 0, MULTIPLIER 2 (10^3), Q1 and Q4: bits 0-7 = 0,
        # 11-13 = 2 -> 0x1000, bit 14 -> 0x4000, bit 17 -> 0x20000; little endian.
        (entry,) = decode_uom_entries(bytes.fromhex("00500200"), CONFIG)
        self.assertEqual(entry, UomEntry(0, TimeBase.BULK, 2, q1=True, q4=True))
        self.assertEqual(entry.exponent, 3)
        self.assertEqual(uom_quantity(entry, rate=False), (1, 30))
        self.assertEqual(uom_quantity(entry, rate=True), (1, 27))

    def test_big_endian_tables(self) -> None:
        big = GeneralConfig(big_endian=True)
        (entry,) = decode_uom_entries(bytes.fromhex("00025000"), big)
        self.assertEqual((entry.multiplier, entry.q1, entry.q4), (2, True, True))

    def test_st12_length_must_be_whole_entries(self) -> None:
        self.assertRaises(FrameError, decode_uom_entries, b"\x00\x00\x00", CONFIG)

    def test_quadrants_phases_and_unknowns(self) -> None:
        cases = [
            (UomEntry(0, q2=True, q3=True), (2, 30)),
            (UomEntry(0, q1=True, q2=True, q3=True, q4=True, net_flow=True), (16, 30)),
            (UomEntry(1, q3=True, q4=True), (4, 32)),
            (UomEntry(1, q4=True), (8, 32)),
            (UomEntry(2, q1=True, q4=True), (9, 31)),
            (UomEntry(0, q1=True, q4=True, segmentation=6), (41, 30)),
            (UomEntry(8, TimeBase.INSTANTANEOUS, segmentation=7), (72, 35)),
            (UomEntry(12, TimeBase.INSTANTANEOUS), (11, 33)),
            (UomEntry(0, q1=True), (None, 30)),
            (UomEntry(0, q1=True, q4=True, segmentation=1), (None, 30)),
            (UomEntry(64), (None, None)),
            (UomEntry(0, q1=True, q4=True, nfs=True), (None, None)),
        ]
        for uom, expected in cases:
            self.assertEqual(uom_quantity(uom, rate=False), expected, uom)

    @given(st.integers(0, 2**32 - 1).map(lambda v: v & ~(0xFF << 23) | (v & (1 << 31))))
    def test_entry_round_trip(self, raw: int) -> None:
        entry = UomEntry.from_int(raw)
        self.assertEqual(entry.to_int(), raw)
        self.assertEqual(decode_uom_entries(encode_uom_entries((entry,), CONFIG), CONFIG), (entry,))

    @given(st.binary(max_size=40))
    def test_arbitrary_st12_bytes(self, data: bytes) -> None:
        try:
            entries = decode_uom_entries(data, CONFIG)
        except FrameError:
            return
        for entry in entries:
            uom_quantity(entry, rate=True)


REGS = ActualRegisters(nbr_summations=2, nbr_demands=2, nbr_coin_values=1, nbr_occur=1)


class SelectionTests(unittest.TestCase):
    def test_st22_layout(self) -> None:
        # SUMMATION_SELECT 00 01, DEMAND_SELECT 02 FF, MIN_OR_MAX_FLAGS 01 (demand 0 is a
        # maximum, demand 1 a minimum), COINCIDENT_SELECT 03, COIN_DEMAND_ASSOC 00.
        raw = bytes.fromhex("0001 02ff 01 03 00")
        selection = DataSelection.decode(raw, REGS)
        self.assertEqual(selection, DataSelection((0, 1), (2, 0xFF), (True, False), (3,), (0,)))
        self.assertEqual(selection.encode(REGS), raw)

    def test_short_st22_is_a_frame_error(self) -> None:
        self.assertRaises(FrameError, DataSelection.decode, b"\x00\x01\x02", REGS)

    @given(st.binary(max_size=12))
    def test_arbitrary_st22_bytes(self, data: bytes) -> None:
        try:
            DataSelection.decode(data, REGS)
        except FrameError:
            pass

    def test_readings_from_selection_and_units(self) -> None:
        uoms = (
            UomEntry(0, TimeBase.BULK, 2, q1=True, q4=True),  # kWh delivered
            UomEntry(0, TimeBase.BULK, 0, q1=True, q4=True),  # Wh delivered: same OBIS
            UomEntry(0, TimeBase.BLOCK_DEMAND, 2, q1=True, q4=True),  # kW
            UomEntry(8, TimeBase.INSTANTANEOUS, 0),
        )
        selection = DataSelection((0, 1), (2, 0xFF), (True, False), (3,), (0,))
        peak = datetime(2024, 2, 29, 18, 15, tzinfo=UTC)
        block = DataBlock(
            (Decimal("12.5"), Decimal("12500")),
            (DemandRecord((Decimal("3.1"),), (peak,)), DemandRecord((Decimal("0.2"),))),
            ((Decimal("229.9"),),),
        )
        readings = register_readings(
            "m1", CurrentRegisters(block), REGS, selection, uoms, meter_time=NOW,
            received_time=NOW,
        )  # fmt: skip
        got = {r.native_id: (str(r.obis), r.value, r.unit_text, r.meter_time) for r in readings}
        self.assertEqual(
            got,
            {
                "ST23 total summation 0": ("1-0:1.8.0*255", Decimal("12.5"), "kWh", NOW),
                # A second source with the same quantity keeps a manufacturer code.
                "ST23 total summation 1": ("1-0:128.1.0*255", Decimal("12500"), "Wh", NOW),
                "ST23 total demand 0 occurrence 0": ("1-0:1.6.0*255", Decimal("3.1"), "kW", peak),
                "ST23 total demand 1 occurrence 0": ("1-0:129.1.0*255", Decimal("0.2"), None, NOW),
                "ST23 total coincident 0 occurrence 0": (
                    "1-0:130.0.0*255", Decimal("229.9"), "V", NOW,
                ),
            },
        )  # fmt: skip

    def test_minimum_demand_gets_d_3(self) -> None:
        uoms = (UomEntry(0, TimeBase.BLOCK_DEMAND, 2, q1=True, q4=True),)
        regs = ActualRegisters(nbr_demands=1, nbr_occur=1)
        selection = DataSelection((), (0,), (False,), (), ())
        block = DataBlock((), (DemandRecord((Decimal("0.5"),)),))
        (reading,) = register_readings("m", CurrentRegisters(block), regs, selection, uoms)
        self.assertEqual(str(reading.obis), "1-0:1.3.0*255")


class RequestEncodingTests(unittest.TestCase):
    """The requests the client builds decode back on the meter side."""

    def test_round_trips(self) -> None:
        for request in (Identify(), Negotiate(256, 4), Negotiate(64, 1, 9600), Read(23),
                        Security(b"secret"), Terminate()):  # fmt: skip
            self.assertEqual(decode_request(request.encode()).encode(), request.encode())

    def test_link_decoder_sees_whole_packets(self) -> None:
        client = C1218Client(settings_())
        (send,) = client.start()
        assert isinstance(send, Send)
        (packet,) = PacketDecoder().receive(send.data)
        self.assertEqual(packet, Packet(b"\x20"))
        self.assertEqual(Link().receive(send.data)[1], [Received(b"\x20")])
        self.assertNotIn(Sent(), Link().receive(send.data)[1])


# ---------------------------------------------------------------------------
# Load profile (ST61-64) and logs (ST71/74/76)
# ---------------------------------------------------------------------------

LP_CONFIG = GeneralConfig(
    time_format=TimeFormat.UINT8,
    ni_format1=NiFormat.INT32_1,
    std_tables_used=frozenset({61, 62, 63, 64}),
)
# ST61: LP_MEMORY_LEN 4096; LP_FLAGS 0x0C50 = BLK_END_READ (bit 4), SCALAR_DIVISOR_SET1
# (bit 6), EXTENDED_INT_STATUS (bit 10), SIMPLE_INT_STATUS (bit 11); LP_FMATS 0; set 1:
# 4 blocks of 24 intervals, 2 channels, 15 minutes. Little endian.
ST61 = bytes.fromhex("00100000 500c 00 0400 1800 02 0f")
# ST62: channel 1 (flags 0, source 0, end reading source 0), channel 2 (0, 2, 2);
# INT_FMT_CDE1 2 (UINT16); scalars 1, 1; divisors 1000, 1000.
ST62 = bytes.fromhex("000000 000202 02 0100 0100 e803 e803")
# ST63: flags 0x24 (circular list, active mode); 3 valid blocks; newest is element 0;
# sequence 7; 3 unread; 2 valid intervals in the newest block.
ST63 = bytes.fromhex("24 0300 0000 07000000 0300 0200")


def lp_block(end: datetime | None, values: list[tuple[int, int]], common: int = 0) -> LpBlock:
    intervals = tuple(
        LpInterval((Decimal(a), Decimal(b)), common if i == 0 else 0, (0, 0))
        for i, (a, b) in enumerate(values)
    )
    pad = tuple(LpInterval((Decimal(0), Decimal(0)), 0, (0, 0)) for _ in range(24 - len(values)))
    return LpBlock(end, intervals + pad, (Decimal("1.5"), Decimal("2.5")), (), (),
                   frozenset(range(len(values))))  # fmt: skip


class LoadProfileTableTests(unittest.TestCase):
    def test_st61_to_st63_layouts(self) -> None:
        actual = ActualLoadProfile.decode(ST61, LP_CONFIG)
        self.assertEqual(actual.sets[0], LpSetDims(4, 24, 2, 15))
        self.assertEqual(actual.sets[1:], (None, None, None))
        self.assertTrue(actual.block_end_read and actual.extended_status and actual.simple_status)
        self.assertTrue(actual.scalar_divisor(0))
        self.assertFalse(actual.block_end_pulse or actual.closure_status)
        self.assertEqual(actual.encode(LP_CONFIG), ST61)
        (selection, *_) = decode_lp_selection(ST62, LP_CONFIG, actual)
        assert selection is not None
        self.assertEqual(
            selection,
            LpSelection((LpChannel(0, 0), LpChannel(2, 2)), 2, (1, 1), (1000, 1000)),
        )
        self.assertEqual(encode_lp_selection((selection,), LP_CONFIG), ST62)
        (status, *_) = decode_lp_status(ST63, LP_CONFIG, actual)
        assert status is not None
        self.assertEqual((status.circular, status.nbr_valid, status.last_element), (True, 3, 0))
        self.assertEqual((status.last_seq, status.valid_in_newest), (7, 2))
        self.assertEqual(status.encode("little", lp=True), ST63)
        # Circular list, newest at element 0: oldest first is 2, 3, 0.
        self.assertEqual(status.order(4), [2, 3, 0])

    def test_extended_status_nibbles_high_first(self) -> None:
        # One block of one interval, three UINT8 channels, extended status only:
        # STIME 24-03-01 12:15; status bytes 0x21 0x45: common 2 (power fail), channel 1
        # status 1 (overflow), channel 2 4 (skipped), channel 3 5 (test mode); values 7 8 9.
        actual = ActualLoadProfile(0, 0x400, 0, (LpSetDims(1, 1, 3, 15), None, None, None))
        selection = LpSelection(tuple(LpChannel(i) for i in range(3)), 1)
        data = bytes.fromhex("18 03 01 0c 0f 21 45 07 08 09")
        (block,) = decode_lp_data(data, LP_CONFIG, actual, selection)
        self.assertEqual(block.end_time, datetime(2024, 3, 1, 12, 15, tzinfo=UTC))
        (interval,) = block.intervals
        self.assertEqual((interval.common, interval.statuses), (2, (1, 4, 5)))
        self.assertEqual(interval.values, (7, 8, 9))
        self.assertEqual(encode_lp_data((block,), LP_CONFIG, actual, selection), data)
        self.assertEqual(lp_data_length(LP_CONFIG, actual, selection), len(data))

    def test_blocks_become_interval_blocks(self) -> None:
        actual = ActualLoadProfile.decode(ST61, LP_CONFIG)
        (selection, *_) = decode_lp_selection(ST62, LP_CONFIG, actual)
        (status, *_) = decode_lp_status(ST63, LP_CONFIG, actual)
        assert selection is not None and status is not None
        t = datetime(2024, 3, 1, 0, 0, tzinfo=UTC)
        full = [(100, 10)] * 24
        blocks = (
            lp_block(t + timedelta(hours=12, minutes=30), [(250, 25), (260, 26)]),  # newest
            lp_block(None, []),  # never written
            lp_block(t, full, common=LP_COMMON_POWER_FAIL),  # oldest
            lp_block(t + timedelta(hours=12), full),  # a gap of six hours before it
        )
        data = encode_lp_data(blocks, LP_CONFIG, actual, selection)
        self.assertEqual(len(data), lp_data_length(LP_CONFIG, actual, selection))
        decoded = decode_lp_data(data, LP_CONFIG, actual, selection)
        uoms = (UomEntry(0, TimeBase.BULK, 2, q1=True, q4=True), UomEntry(0),
                UomEntry(1, TimeBase.BULK, 2, q1=True, q2=True))  # fmt: skip
        out = profile_blocks("m1", actual, selection, status, decoded, uoms, received_time=NOW)
        got = [
            (str(b.obis), b.start, len(b.values), b.values[0], unit_text(b.unit, b.scaler))
            for b in out
        ]
        self.assertEqual(
            got,
            [
                ("1-0:1.29.0*255", t - timedelta(hours=6), 24, Decimal("0.1"), "kWh"),
                ("1-0:1.29.0*255", t + timedelta(hours=6), 26, Decimal("0.1"), "kWh"),
                ("1-0:3.29.0*255", t - timedelta(hours=6), 24, Decimal("0.01"), "kvarh"),
                ("1-0:3.29.0*255", t + timedelta(hours=6), 26, Decimal("0.01"), "kvarh"),
            ],
        )
        first, joined = out[0], out[1]
        self.assertEqual((first.unit, first.scaler), (UNITS[30], 3))
        self.assertEqual(first.statuses[0], Quality.POWER_DOWN)
        self.assertEqual(joined.values[-2:], (Decimal("0.25"), Decimal("0.26")))
        self.assertEqual(joined.period, timedelta(minutes=15))

    def test_invalid_intervals_and_channel_statuses_become_qualities(self) -> None:
        actual = ActualLoadProfile(0, 0xC00, 0, (LpSetDims(1, 2, 1, 60), None, None, None))
        selection = LpSelection((LpChannel(9),), 2)
        block = LpBlock(
            datetime(2024, 3, 1, 2, tzinfo=UTC),
            (LpInterval((Decimal(5),), LP_COMMON_CLOCK_FORWARD, (LpChannelStatus.OVERFLOW,)),
             LpInterval((Decimal(6),), 0, (LpChannelStatus.SKIPPED,))),
            valid=frozenset({0}),
        )  # fmt: skip
        status = ListStatus(nbr_valid=1, valid_in_newest=2)
        (out,) = profile_blocks("m", actual, selection, status, (block,))
        self.assertEqual(out.obis, ObisCode(1, 0, 133, 0, 1))  # no ST12 entry for source 9
        self.assertEqual(out.statuses, (Quality.CLOCK_ADJUSTED | Quality.OVERFLOW, Quality.MISSING))
        self.assertEqual(out.start, datetime(2024, 3, 1, 0, tzinfo=UTC))

    @given(st.binary(max_size=80), st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128, 3]))
    def test_arbitrary_lp_bytes_are_decoded_or_refused(self, data: bytes, fmt: int) -> None:
        actual = ActualLoadProfile(0, 0x1C30, 0, (LpSetDims(2, 3, 2, 15), None, None, None))
        selection = LpSelection((LpChannel(0), LpChannel(1)), fmt)
        for decode in (
            lambda: ActualLoadProfile.decode(data, LP_CONFIG),
            lambda: decode_lp_selection(data, LP_CONFIG, actual),
            lambda: decode_lp_status(data, LP_CONFIG, actual),
            lambda: decode_lp_data(data, LP_CONFIG, actual, selection),
        ):
            try:
                decode()
            except FrameError:
                pass

    @given(
        st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)), min_size=3,
                 max_size=3),
        st.integers(0, 15), st.integers(0, 5),
    )  # fmt: skip
    def test_lp_round_trip(self, values: list[tuple[int, int]], common: int, nibble: int) -> None:
        actual = ActualLoadProfile(0, 0xC10, 0, (LpSetDims(1, 3, 2, 5), None, None, None))
        selection = LpSelection((LpChannel(0), LpChannel(1)), 2)
        block = LpBlock(
            datetime(2024, 3, 1, 1, 15, tzinfo=UTC),
            tuple(LpInterval((Decimal(a), Decimal(b)), common, (nibble, 0)) for a, b in values),
            (Decimal("1.5"), Decimal(2)),
            valid=frozenset({0, 2}),
        )
        data = encode_lp_data((block,), LP_CONFIG, actual, selection)
        self.assertEqual(decode_lp_data(data, LP_CONFIG, actual, selection), (block,))


# ST71: LOG_FLAGS 0x06 (history date/time and history sequence number), 6 standard events,
# no manufacturer events, 2-byte history and event arguments, 4 entries in each log.
ST71 = bytes.fromhex("06 06 00 02 02 0400 0400")


class LogTableTests(unittest.TestCase):
    def test_st71_layout(self) -> None:
        actual = ActualLog.decode(ST71, LP_CONFIG)
        self.assertEqual(
            actual,
            ActualLog(False, True, True, False, False, 6, 0, 2, 2, 4, 4),
        )
        self.assertEqual(actual.encode(LP_CONFIG), ST71)

    def test_st74_entries_and_circular_order(self) -> None:
        actual = ActualLog.decode(ST71, LP_CONFIG)
        # Header: circular (0x04), 3 valid, newest at element 0, sequence 9, 1 unread.
        # Entries: time (UINT8 YY MM DD hh mm ss), sequence, user, code, argument.
        entry = "18 03 01 {hh} 00 00 {seq} 0000 {code} 0000"
        data = bytes.fromhex(
            "04 0300 0000 09000000 0100"
            + entry.format(hh="0c", seq="0900", code="1400")  # element 0: newest, code 20
            + "00" * 14  # element 1: unused
            + entry.format(hh="0a", seq="0700", code="0100")  # element 2: oldest, code 1
            + entry.format(hh="0b", seq="0800", code="0200")  # element 3: code 2
        )
        self.assertEqual(log_data_length(LP_CONFIG, actual, ST74_HISTORY_LOG), len(data))
        log = decode_log(data, LP_CONFIG, actual, ST74_HISTORY_LOG)
        self.assertEqual(encode_log(log, LP_CONFIG, actual, ST74_HISTORY_LOG), data)
        events = log_events("m1", log, ST74_HISTORY_LOG, received_time=NOW)
        self.assertEqual(
            [(e.code, e.kind, e.time.hour) for e in events],
            [("std-1", EventKind.POWER_OUTAGE, 10), ("std-2", EventKind.POWER_RESTORED, 11),
             ("std-20", EventKind.OTHER, 12)],
        )  # fmt: skip
        self.assertIn("seq 7", events[0].text)
        self.assertEqual(events[0].severity, Severity.MAJOR)

    def test_st76_has_time_and_sequence_always_and_manufacturer_codes(self) -> None:
        actual = ActualLog(event_number=True, event_data_length=1, nbr_event_entries=2)
        # Descending list: element 0 is the newest. Entry: time, event number, sequence,
        # user, code (0x802F: manufacturer code 47), argument.
        data = bytes.fromhex(
            "01 0200 0000 02000000 0000"
            + "18 03 01 0c 00 00 0500 0200 0100 2f08 aa"
            + "18 03 01 0b 00 00 0400 0100 0000 2f00 00"
        )
        self.assertEqual(log_data_length(LP_CONFIG, actual, ST76_EVENT_LOG), len(data))
        log = decode_log(data, LP_CONFIG, actual, ST76_EVENT_LOG)
        self.assertEqual(log.entries[0], LogEntry(datetime(2024, 3, 1, 12, tzinfo=UTC), 47,
                                                  True, 0, 1, 5, 2, b"\xaa"))  # fmt: skip
        events = log_events("m1", log, ST76_EVENT_LOG)
        self.assertEqual([e.code for e in events], ["std-47", "mfg-47"])
        self.assertEqual(events[0].severity, Severity.CRITICAL)
        self.assertIn("argument aa", events[1].text)

    @given(st.binary(max_size=60))
    def test_arbitrary_log_bytes_are_decoded_or_refused(self, data: bytes) -> None:
        actual = ActualLog(
            event_number=True,
            history_seq_nbr=True,
            history_data_length=1,
            event_data_length=3,
            nbr_history_entries=2,
            nbr_event_entries=2,
        )
        for decode in (
            lambda: ActualLog.decode(data, LP_CONFIG),
            lambda: decode_log(data, LP_CONFIG, actual, ST74_HISTORY_LOG),
            lambda: decode_log(data, LP_CONFIG, actual, ST76_EVENT_LOG),
        ):
            try:
                result = decode()
            except FrameError:
                continue
            if isinstance(result, LogData):
                log_events("m", result, ST76_EVENT_LOG)


class ProfileAndLogSessionTests(unittest.TestCase):
    def test_session_reads_profile_and_logs_into_records(self) -> None:
        data, _ = read_all()
        records = data.to_records("m1", NOW)
        blocks = [r for r in records if isinstance(r, IntervalBlock)]
        events = [r for r in records if isinstance(r, MeterEvent)]
        self.assertEqual({str(b.obis) for b in blocks}, {"1-0:1.29.0*255", "1-0:3.29.0*255"})
        energy = next(b for b in blocks if b.obis.c == 1)
        # The simulator started at NOW: two full blocks of history and the intervals since.
        self.assertEqual(energy.start, NOW - timedelta(hours=12))
        self.assertEqual(len(energy.values), 48)
        self.assertEqual(
            (energy.values[0], unit_text(energy.unit, energy.scaler)), (Decimal("0.225"), "kWh")
        )
        # The simulator's daily power failure is interval 10 (02:30).
        self.assertEqual(energy.statuses.index(Quality.POWER_DOWN), 10)
        self.assertEqual(
            [e.code for e in events],
            ["std-1", "std-2", "std-4", "std-20", "std-7", "std-44", "std-47", "std-48"],
        )

    def test_big_tables_come_in_partial_reads(self) -> None:
        whole, _ = read_all()
        parts, wire = read_all(packet_size=64, max_packets=2)
        partial = [entry for entry in wire.meter.log if entry.startswith("read 64 at")]
        self.assertGreater(len(partial), 1)
        self.assertEqual(partial[0], "read 64 at 0+108")  # 2 x (64 - 8) - 4 bytes a part
        self.assertEqual(parts.lp_blocks, whole.lp_blocks)
        self.assertEqual(parts.history_log, whole.history_log)

    def test_a_profile_declared_beyond_what_reads_address_is_refused_unread(self) -> None:
        # Issue 14: a meter's ST61 sizes ST64; 65,535 blocks of 65,535 intervals of 255
        # channels would have the client reading (and holding) terabytes.
        from fep.protocols.ansi_c12.c1218 import encode_read_response
        from fep.protocols.ansi_c12.c1219 import (
            ActualLoadProfile,
            LpChannel,
            LpSelection,
            LpSetDims,
            encode_lp_selection,
        )

        meter = SimulatedC12Meter(clock=FakeClock())
        huge = ActualLoadProfile(0, meter.lp_actual.flags & ~0x40, 0,
                                 (LpSetDims(65_535, 65_535, 255, 15), None, None, None))
        selection = LpSelection((LpChannel(0),) * 255, 2)
        tables = {
            b"\x30\x00\x3d": huge.encode(meter.config),  # read ST61
            b"\x30\x00\x3e": encode_lp_selection(  # read ST62
                (selection, None, None, None), meter.config
            ),
        }

        def answers(request: bytes, answer: bytes) -> bytes:
            if request in tables:
                return encode_read_response(tables[request])
            return answer

        client = C1218Client(settings_(password=b"secret"), now=lambda: NOW)
        wire = Wire(client, meter, answers=answers)
        end = wire.run()
        self.assertIsInstance(end, Failed)
        assert isinstance(end, Failed)
        self.assertIn("partial read can address", str(end.error))
        self.assertFalse([e for e in meter.log if e.startswith("read 64")])

    def test_profile_and_events_can_be_left_out(self) -> None:
        data, wire = read_all(profile=False, events=False)
        self.assertFalse([e for e in wire.meter.log if e.startswith(("read 6", "read 7"))])
        self.assertEqual((data.lp_blocks, data.history_log), ((), None))
