"""Pulse recorder procedures without bytes: live registers, history catch-up from an index
or a time (in order, no gap, no double), the event log, the clock, settings from meter
metadata, and the records made from a read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from twisted.trial import unittest

from fep.errors import ConfigError
from fep.model import EventKind, IntervalBlock, Meter, MeterEvent, ObisCode, Quality, Reading
from fep.protocols.modbus.client import Framing
from fep.protocols.modbus.devicemap import Register, Table, load_device_map
from fep.protocols.modbus.pdu import (
    Function,
    IllegalDataAddress,
    ReadRequest,
    Request,
    WriteRegistersRequest,
)
from fep.protocols.modbus.recorder import (
    ReadSettings,
    combine,
    plan_reads,
    read_clock,
    read_live,
    read_recorder,
    recorder_records,
    set_clock,
    settings_for,
    split32,
)
from fep.pulse import Wiring
from fep.sim.pulse_recorder import PulseRecorder, at
from tests.protocols.modbus.drive import drive

DAY = at("2024-03-01T00:00:00")
P15 = timedelta(minutes=15)
SIM = load_device_map("sim-pr2")


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def recorder(**kw: object) -> tuple[PulseRecorder, FakeClock]:
    clock = FakeClock(kw.pop("now", DAY + 86400))  # type: ignore[arg-type]
    return PulseRecorder(clock=clock, started=DAY, **kw), clock  # type: ignore[arg-type]


def meter(**md: str) -> Meter:
    return Meter("rec-1", "modbus-pulse", "tcp:host=127.0.0.1:port=1502",
                 metadata={"modbus_device_map": "sim-pr2", **md})


class RegisterTests(unittest.TestCase):
    def test_32_bit_values_in_both_word_orders(self) -> None:
        self.assertEqual(combine([0x0001, 0x0002], "u32", "big"), 0x00010002)
        self.assertEqual(combine([0x0002, 0x0001], "u32", "little"), 0x00010002)
        self.assertEqual(combine([0xFFFF, 0xFFFE], "s32"), -2)
        self.assertEqual(combine([0x8000], "s16"), -32768)
        self.assertEqual(split32(0x12345678), (0x1234, 0x5678))
        self.assertEqual(split32(0x12345678, "little"), (0x5678, 0x1234))

    def test_reads_are_merged_per_table_only_where_contiguous(self) -> None:
        regs = [Register(Table.INPUT, 0, "u32"), Register(Table.INPUT, 2, "u32"),
                Register(Table.INPUT, 4), Register(Table.INPUT, 8, "u32"),
                Register(Table.HOLDING, 0, "u32"), Register(Table.HOLDING, 2)]
        self.assertEqual(plan_reads(regs, 125), [
            ReadRequest(Function.READ_INPUT_REGISTERS, 0, 5),
            ReadRequest(Function.READ_INPUT_REGISTERS, 8, 2),
            ReadRequest(Function.READ_HOLDING_REGISTERS, 0, 3)])
        self.assertEqual(len(plan_reads([Register(Table.INPUT, i) for i in range(10)], 4)), 3)


class LiveTests(unittest.TestCase):
    def test_live_registers(self) -> None:
        rec, _ = recorder(schedule=[(DAY + 3600, "door-open"), (DAY + 7200, "low-battery")])
        log: list[Request] = []
        _, data = drive(read_live(SIM), rec.answer, log)
        self.assertEqual(data.clock, datetime(2024, 3, 2, tzinfo=UTC))
        self.assertEqual(data.period, P15)
        self.assertEqual(data.counters, {"1": rec.inputs[0].counter, "2": rec.inputs[1].counter})
        self.assertEqual(data.values, {"supply": Decimal("230.12"), "battery": Decimal("3.601")})
        self.assertEqual(data.status_word, 0b10001)
        self.assertEqual(data.status, {"door": True, "key": False, "tamper": False,
                                       "power_fail": False, "low_battery": True})
        self.assertEqual(data.newest_record, 96)
        self.assertEqual(len(log), 3)  # input 0..6 and 8..11 (7 is unmapped), holding 0..2

    def test_clock_read_and_set(self) -> None:
        rec, clock = recorder()
        when = datetime(2024, 3, 2, 0, 5, tzinfo=UTC)
        self.assertEqual(drive(set_clock(SIM, when), rec.answer), when)
        self.assertEqual(drive(read_clock(SIM), rec.answer), when)
        clock.t += 10
        self.assertEqual(drive(read_clock(SIM), rec.answer), when + timedelta(seconds=10))
        self.assertEqual(rec.events[-1].code, 10)  # clock-set logged

    def test_a_read_only_clock_cannot_be_set(self) -> None:
        m = load_device_map("sim-pr2")
        import attrs
        with self.assertRaises(ConfigError):
            drive(set_clock(attrs.evolve(m, clock_writable=False), datetime.now(UTC)),
                  lambda r: None)  # type: ignore[arg-type,return-value]

    def test_ymdhms_clock_in_the_recorders_zone(self) -> None:
        m = load_device_map("generic-counter16")
        regs = {}

        def answer(request: Request):  # type: ignore[no-untyped-def]
            from fep.protocols.modbus.pdu import RegistersResponse, WriteResponse
            if isinstance(request, WriteRegistersRequest):
                for i, v in enumerate(request.values):
                    regs[request.address + i] = v
                return WriteResponse(request.function, request.address, len(request.values))
            assert isinstance(request, ReadRequest)
            return RegistersResponse(request.function, tuple(
                regs[a] for a in range(request.address, request.address + request.count)))

        when = datetime(2024, 7, 1, 10, 0, 0, tzinfo=UTC)
        drive(set_clock(m, when), answer)
        self.assertEqual([regs[i] for i in range(6)], [2024, 7, 1, 12, 0, 0])  # CEST
        self.assertEqual(drive(read_clock(m), answer), when)


class HistoryTests(unittest.TestCase):
    def test_default_read_takes_the_newest_periods(self) -> None:
        rec, _ = recorder()
        data = drive(read_recorder(SIM, ReadSettings(periods=8, lookback=1)), rec.answer)
        numbers = [r.number for r in data.history]
        self.assertEqual(numbers, list(range(87, 97)))  # 8 + baseline + 1 for windows
        self.assertEqual(data.history[-1].end, datetime(2024, 3, 2, tzinfo=UTC))

    def test_catch_up_since_a_time_is_in_order_without_gap_or_double(self) -> None:
        rec, _ = recorder()
        since = datetime(2024, 3, 1, 18, 0, tzinfo=UTC)
        data = drive(read_recorder(SIM, ReadSettings(since=since)), rec.answer)
        ends = [r.end for r in data.history]
        self.assertEqual(ends[0], since)
        self.assertEqual(ends, [since + k * P15 for k in range(len(ends))])
        self.assertEqual(ends[-1], datetime(2024, 3, 2, tzinfo=UTC))

    def test_catch_up_over_a_power_outage_steps_back_far_enough(self) -> None:
        # Records missing while the recorder was off put the record for ``since`` later in
        # the ring than the clock says: the read still starts at it.
        rec, _ = recorder(outages=[(DAY + 20 * 3600, DAY + 22 * 3600 + 300)])
        since = datetime(2024, 3, 1, 19, 0, tzinfo=UTC)
        data = drive(read_recorder(SIM, ReadSettings(since=since, lookback=2)), rec.answer)
        self.assertEqual(data.history[0].end, since - 2 * P15)
        self.assertEqual(len({r.number for r in data.history}), len(data.history))
        restarted = [r for r in data.history if r.flags & 1]
        self.assertEqual([r.end for r in restarted], [datetime(2024, 3, 1, 22, 15, tzinfo=UTC)])

    def test_catch_up_since_an_index(self) -> None:
        rec, _ = recorder()
        data = drive(read_recorder(SIM, ReadSettings(since_index=90)), rec.answer)
        self.assertEqual([r.number for r in data.history], list(range(90, 97)))

    def test_records_the_ring_no_longer_holds_are_counted_missing(self) -> None:
        rec, _ = recorder(history_capacity=20)
        data = drive(read_recorder(SIM, ReadSettings(since_index=50)), rec.answer)
        self.assertEqual(data.history[0].number, 77)
        self.assertEqual(data.history_missing, 27)

    def test_events_since_the_first_period_read(self) -> None:
        rec, _ = recorder(schedule=[(DAY + 3600, "door-open"), (DAY + 23 * 3600, "tamper"),
                                    (DAY + 23.5 * 3600, "door-close")])
        data = drive(read_recorder(SIM, ReadSettings(periods=8)), rec.answer)
        self.assertEqual([(e.code, e.time) for e in data.events], [
            (7, datetime(2024, 3, 1, 23, 0, tzinfo=UTC)),
            (4, datetime(2024, 3, 1, 23, 30, tzinfo=UTC))])

    def test_events_read_back_over_several_windows(self) -> None:
        schedule = [(DAY + 60 * k, "key-on" if k % 2 else "key-off") for k in range(1, 46)]
        rec, _ = recorder(schedule=schedule)
        data = drive(read_recorder(SIM, ReadSettings(since=datetime(2024, 3, 1, tzinfo=UTC))),
                     rec.answer)
        self.assertEqual([e.number for e in data.events], list(range(1, 46)))

    def test_no_history_yet(self) -> None:
        rec, _ = recorder(now=DAY + 600)
        data = drive(read_recorder(SIM, ReadSettings()), rec.answer)
        self.assertEqual((data.newest_record, data.history), (0, ()))

    def test_an_unmapped_register_is_a_named_error(self) -> None:
        rec, _ = recorder()
        with self.assertRaises(IllegalDataAddress):
            drive(read_clock(load_device_map("generic-counter16")), rec.answer)


class SettingsTests(unittest.TestCase):
    def test_defaults(self) -> None:
        s = settings_for(meter())
        self.assertEqual((s.unit, s.framing, s.retries, s.channels), (1, Framing.TCP, 1, {}))
        self.assertEqual(s.read.periods, 96)
        s = settings_for(Meter("r", "modbus", "serial:/dev/ttyS0", address="7",
                               metadata={"modbus_device_map": "sim-pr2"}))
        self.assertEqual((s.unit, s.framing), (7, Framing.RTU))

    def test_channels_from_metadata(self) -> None:
        s = settings_for(meter(pulse1_constant="800", pulse1_wiring="KYZ",
                               pulse2_energy_per_pulse="2.5", pulse2_quantity="reactive-import",
                               pulse_block="30", pulse_rolling="3", pulse_billing_day="15"))
        ch1, ch2 = s.channels["1"], s.channels["2"]
        self.assertEqual((ch1.wiring, float(ch1.energy_per_pulse)), (Wiring.KYZ, 1.25))
        self.assertEqual((ch2.wiring, ch2.energy_obis), (Wiring.KY, ObisCode(1, 2, 3, 29, 0)))
        self.assertEqual((s.demand.block, s.demand.rolling, s.demand.billing_day),
                         (timedelta(minutes=30), 3, 15))
        self.assertEqual(s.read.lookback, 2)

    def test_since_argument_and_metadata(self) -> None:
        since = datetime(2024, 3, 1, 12, tzinfo=UTC)
        self.assertEqual(settings_for(meter(), since).read.since, since)
        self.assertEqual(settings_for(meter(pulse_since="2024-03-01T12:00")).read.since, since)

    def test_mistakes_name_their_key(self) -> None:
        for md, key in [
            ({"modbus_device_map": ""}, "modbus_device_map"),
            ({"modbus_device_map": "nope"}, "modbus_device_map"),
            ({"pulse1_constant": "x"}, "pulse1_constant"),
            ({"pulse1_constant": "-5"}, "pulse1_constant"),
            ({"pulse1_constant": "5", "pulse1_energy_per_pulse": "1"}, "pulse1_constant"),
            ({"pulse1_constant": "5", "pulse1_wiring": "kz"}, "pulse1_wiring"),
            ({"pulse1_constant": "5", "pulse1_quantity": "gas"}, "pulse1_quantity"),
            ({"modbus_unit": "300"}, "modbus_unit"),
            ({"modbus_framing": "ascii"}, "modbus_framing"),
            ({"pulse_since": "yesterday"}, "pulse_since"),
            ({"pulse_tz": "Nowhere/Land"}, "pulse_tz"),
        ]:
            with self.assertRaises(ConfigError) as e:
                settings_for(meter(**md))
            self.assertEqual(e.exception.key, key, md)
            self.assertIn("rec-1", str(e.exception) + (e.exception.file or "rec-1"))


class RecordTests(unittest.TestCase):
    def test_records_of_a_read(self) -> None:
        rec, _ = recorder(schedule=[(DAY + 23 * 3600, "door-open")])
        s = settings_for(meter(pulse1_constant="1000", pulse1_wiring="kyz",
                               pulse2_constant="1000", pulse_history="4"))
        data = drive(read_recorder(s.device, s.read), rec.answer)
        records = recorder_records("rec-1", s, data)
        readings = {r.native_id: r for r in records if isinstance(r, Reading)}
        self.assertEqual(readings["clock"].value, "2024-03-02T00:00:00+00:00")
        self.assertEqual(readings["battery"].unit_text, "V")
        self.assertIs(readings["door"].value, True)
        blocks = {r.obis: r for r in records if isinstance(r, IntervalBlock)}
        energy1 = blocks[ObisCode(1, 1, 1, 29, 0)]
        # Input 1: 2400 pulses/h from 18:00 (the sim's default 1200/h all day here), KYZ.
        self.assertEqual(len(energy1.values), 4)
        self.assertEqual(energy1.start, datetime(2024, 3, 1, 23, 0, tzinfo=UTC))
        self.assertEqual(set(energy1.values), {Decimal(300)})
        self.assertEqual(set(energy1.statuses), {Quality.OK})
        self.assertEqual(set(blocks[ObisCode(1, 2, 1, 29, 0)].values), {Decimal(150)})
        [event] = [r for r in records if isinstance(r, MeterEvent)]
        self.assertEqual((event.code, event.kind), ("door-open", EventKind.COVER_OPEN))
