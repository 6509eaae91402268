"""C12.19 procedures (ST7 initiate, ST8 response) and the snapshots (ST24-26): the codecs
with bytes alone, then the client's clock and command sessions against the simulated
meter joined in memory (tests.protocols.ansi_c12.test_client.Wire): each command changes
the meter's state, and each refusal the meter can give becomes an error naming the
meter, the command and the meter's result code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError, NotSupported, ProtocolError
from fep.model import Reading
from fep.protocols.ansi_c12.c1218 import C12ResponseError
from fep.protocols.ansi_c12.c1219 import (
    ActualRegisters,
    ActualTimeTou,
    CurrentRegisters,
    DataBlock,
    DemandRecord,
    GeneralConfig,
    NiFormat,
    TimeFormat,
    TimeOffset,
    encode_ltime,
)
from fep.protocols.ansi_c12.client import (
    C1218Client,
    ClockJob,
    ClockResult,
    CommandJob,
    CommandResult,
    Failed,
    Finished,
    MeterData,
)
from fep.protocols.ansi_c12.procedures import (
    ProcedureRefused,
    ProcedureRequest,
    ProcedureResponse,
    RemoteReset,
    ResultCode,
    SetDateTime,
)
from fep.protocols.ansi_c12.snapshots import (
    ST25_PREV_DEMAND_RESET,
    Snapshot,
    decode_self_reads,
    decode_snapshot,
    encode_self_reads,
    encode_snapshot,
    snapshot_readings,
)
from fep.sim.ansi_c12 import ST74_HISTORY_LOG, ST76_EVENT_LOG, SimulatedC12Meter
from tests.protocols.ansi_c12.test_client import NOW, FakeClock, Wire, settings_

LITTLE = GeneralConfig(big_endian=False, time_format=TimeFormat.UINT8)
BIG_BCD = GeneralConfig(big_endian=True, time_format=TimeFormat.BCD)


class ProcedureCodecTests(unittest.TestCase):
    def test_initiate_record_layout(self) -> None:
        # TBL_PROC_NBR in ST0's byte order: PROC_NBR bits 0..10, STD_VS_MFG bit 11,
        # SELECTOR bits 12..15; then SEQ_NBR and the parameters.
        request = ProcedureRequest(9, 0x2A, b"\x01")
        self.assertEqual(request.encode(LITTLE), b"\x09\x00\x2a\x01")
        self.assertEqual(request.encode(BIG_BCD), b"\x00\x09\x2a\x01")
        mfg = ProcedureRequest(2, 7, b"\x00", mfg=True, selector=3)
        self.assertEqual(mfg.encode(LITTLE), b"\x02\x38\x07\x00")
        self.assertEqual(ProcedureRequest.decode(mfg.encode(LITTLE), LITTLE), mfg)
        self.assertEqual(mfg.label, "MP2")
        self.assertEqual(request.label, "SP9 (remote reset)")

    def test_initiate_record_is_termineters(self) -> None:
        # termineter's own C1219ProcedureInit (test-only peer) builds the same bytes.
        from c1219.data import C1219ProcedureInit

        for number, mfg, seq, params in ((9, False, 200, b"\x03"), (10, False, 2, b"\x03" * 8),
                                         (2, True, 99, b"\x01")):
            theirs = C1219ProcedureInit("<", number, mfg, 0, seq, params).build()
            self.assertEqual(ProcedureRequest(number, seq, params, mfg).encode(LITTLE), theirs)

    def test_response_record(self) -> None:
        response = ProcedureResponse.decode(b"\x09\x00\x2a\x00\x04", LITTLE)
        self.assertEqual((response.number, response.seq, response.result, response.data),
                         (9, 0x2A, 0, b"\x04"))
        self.assertEqual(response.check(ProcedureRequest(9, 0x2A)), b"\x04")
        with self.assertRaises(FrameError):
            ProcedureResponse.decode(b"\x09\x00\x2a", LITTLE)

    def test_each_result_code_is_an_error_naming_meter_command_and_code(self) -> None:
        request = ProcedureRequest(9, 5, b"\x01")
        for code in range(1, 7):
            answer = ProcedureResponse(9, 5, code)
            with self.assertRaises(ProcedureRefused) as raised:
                answer.check(request, command="demand-reset", meter="m7", route="tcp:x:1")
            e = raised.exception
            self.assertEqual((e.result_code, e.procedure, e.command, e.meter, e.route),
                             (code, 9, "demand-reset", "m7", "tcp:x:1"))
            self.assertIn("meter m7 refused demand-reset (SP9 (remote reset)): result code "
                          f"{code} (", e.message)
        with self.assertRaises(ProcedureRefused) as raised:
            ProcedureResponse(9, 5, ResultCode.NO_AUTHORIZATION).check(request, meter="m7")
        self.assertIn("no authorization", raised.exception.message)

    def test_a_response_to_another_procedure_is_an_error(self) -> None:
        with self.assertRaises(ProtocolError) as raised:
            ProcedureResponse(9, 6, 0).check(ProcedureRequest(9, 5), meter="m7")
        self.assertNotIsInstance(raised.exception, ProcedureRefused)
        self.assertIn("sequence 6, not SP9 (remote reset) sequence 5", raised.exception.message)

    def test_remote_reset_flags(self) -> None:
        self.assertEqual(RemoteReset().encode(), b"\x01")
        self.assertEqual(RemoteReset(True, True).encode(), b"\x03")
        self.assertEqual(RemoteReset(False, False, 3).encode(), bytes([0x04 | 3 << 3]))
        self.assertEqual(RemoteReset.decode(b"\x1f"), RemoteReset(True, True, 3))
        with self.assertRaises(ValueError):
            RemoteReset.decode(b"\x80")

    def test_set_date_time_in_each_time_format(self) -> None:
        when = datetime(2024, 3, 1, 12, 30, 45, tzinfo=UTC)
        params = SetDateTime(when, day_of_week=5, gmt=True)
        self.assertEqual(params.encode(LITTLE), b"\x03" + bytes([24, 3, 1, 12, 30, 45]) + b"\x15")
        self.assertEqual(params.encode(BIG_BCD), b"\x03\x24\x03\x01\x12\x30\x45\x15")
        seconds = GeneralConfig(time_format=TimeFormat.SECONDS)
        self.assertEqual(params.encode(seconds),
                         b"\x03" + int(when.timestamp()).to_bytes(4, "little") + b"\x15")
        back = SetDateTime.decode(params.encode(BIG_BCD), BIG_BCD)
        self.assertEqual((back.when, back.mask, back.day_of_week, back.gmt), (when, 3, 5, True))
        for bad in (b"\x03\x00", b"\x00" + bytes([24, 3, 1, 12, 30, 45]) + b"\x00",
                    b"\x03" + bytes([24, 13, 1, 12, 30, 45]) + b"\x00"):
            with self.assertRaises(ValueError):
                SetDateTime.decode(bad, LITTLE)


class TimeOffsetTests(unittest.TestCase):
    def test_st53_laid_out_by_st51(self) -> None:
        actual = ActualTimeTou(dst_auto=True, time_zone_offset=True)
        self.assertEqual(ActualTimeTou.decode(actual.encode(LITTLE), LITTLE), actual)
        offset = TimeOffset(2 * 3600, 60, -300)
        raw = offset.encode(BIG_BCD, actual)
        self.assertEqual(raw, b"\x02\x00\x00\x3c\xfe\xd4")
        self.assertEqual(TimeOffset.decode(raw, BIG_BCD, actual), offset)
        self.assertEqual(offset.zone(False), timezone(timedelta(hours=-5)))
        self.assertEqual(offset.zone(True), timezone(timedelta(hours=-4)))
        only_zone = ActualTimeTou(time_zone_offset=True)
        self.assertEqual(TimeOffset.decode(b"\x3c\x00", LITTLE, only_zone).zone(False),
                         timezone(timedelta(hours=1)))
        self.assertIsNone(TimeOffset.decode(b"", LITTLE, ActualTimeTou()).zone(True))


REGISTERS = ActualRegisters(date_time_field=True, season_info=True, demand_reset_counter=True,
                            nbr_self_reads=3, nbr_summations=1, nbr_demands=1, nbr_occur=1)


def registers_of(energy: str, demand: str, resets: int) -> CurrentRegisters:
    return CurrentRegisters(
        DataBlock((Decimal(energy),), (DemandRecord((Decimal(demand),), (None,)),)),
        (), resets)


class SnapshotTests(unittest.TestCase):
    config = GeneralConfig(time_format=TimeFormat.UINT8, ni_format1=NiFormat.INT32_1,
                           ni_format2=NiFormat.INT32_1)

    def test_demand_reset_snapshot_round_trip(self) -> None:
        snap = Snapshot(datetime(2024, 3, 1, 12, 0, tzinfo=UTC), registers_of("12.5", "3", 4), 2)
        raw = encode_snapshot(snap, self.config, REGISTERS)
        self.assertEqual(raw[:6], bytes([24, 3, 1, 12, 0, 2]))  # END_DATE_TIME, SEASON
        self.assertEqual(decode_snapshot(raw, self.config, REGISTERS, 25), snap)
        with self.assertRaises(FrameError):
            decode_snapshot(raw + b"\0", self.config, REGISTERS, 25)

    def test_self_reads_oldest_first_with_sequence_numbers(self) -> None:
        t = [datetime(2024, 3, d, 0, 0, tzinfo=UTC) for d in (1, 2, 3, 4)]
        reads = [Snapshot(t[k], registers_of(str(k), "0", 0)) for k in range(4)]
        # Circular list of three: the fourth self-read (sequence 9) overwrote slot 0.
        slots = (reads[3], reads[1], reads[2])
        raw = encode_self_reads(slots, 3, 0, 9, self.config, REGISTERS)
        got = decode_self_reads(raw, self.config, REGISTERS)
        self.assertEqual([(s.end_time, s.seq) for s in got.reads],
                         [(t[1], 7), (t[2], 8), (t[3], 9)])

    def test_snapshot_readings_are_filed_by_billing_period(self) -> None:
        when = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
        snap = Snapshot(when, registers_of("12.5", "3", 4), seq=123)
        (energy, demand) = snapshot_readings("m1", snap, ST25_PREV_DEMAND_RESET, REGISTERS)
        self.assertEqual((energy.obis.f, demand.obis.f), (101, 101))
        self.assertEqual((energy.meter_time, energy.value), (when, Decimal("12.5")))
        self.assertTrue(energy.native_id and energy.native_id.startswith("ST25 "))
        (energy, _) = snapshot_readings("m1", snap, 26, REGISTERS)
        self.assertEqual(energy.obis.f, 23)
        self.assertTrue(energy.native_id and energy.native_id.startswith("ST26 self-read 123"))
        (energy, _) = snapshot_readings("m1", snap, 24, REGISTERS)
        self.assertEqual(energy.obis.f, 126)


def run(meter: SimulatedC12Meter, job: ClockJob | CommandJob | None = None,
        now: datetime = NOW, **kw: object) -> Finished | Failed:
    kw.setdefault("password", b"secret")
    if kw["password"] is None:
        del kw["password"]
    client = C1218Client(settings_(job=job, **kw), now=lambda: now)
    end = Wire(client, meter).run()
    assert isinstance(end, Finished | Failed), end
    return end


def meter_() -> SimulatedC12Meter:
    return SimulatedC12Meter(clock=FakeClock())


class CommandSessionTests(unittest.TestCase):
    def done(self, meter: SimulatedC12Meter, job: CommandJob, **kw: object) -> CommandResult:
        end = run(meter, job, **kw)
        assert isinstance(end, Finished), end
        assert isinstance(end.data, CommandResult)
        return end.data

    def refused(self, meter: SimulatedC12Meter, job: CommandJob, **kw: object) -> Exception:
        end = run(meter, job, **kw)
        assert isinstance(end, Failed), end
        self.assertEqual(meter.log[-1], "terminate")
        return end.error

    def test_demand_reset_counts_zeroes_and_snapshots(self) -> None:
        meter = meter_()
        before = meter.current_registers()
        done = self.done(meter, CommandJob("demand-reset"))
        self.assertEqual(done.done, {"procedure": "SP9 (remote reset)", "demand_resets": 4})
        self.assertEqual((meter.demand_resets, meter.demand_kw), (4, Decimal(0)))
        self.assertEqual(meter.current_registers().total.demands[0].demands, (Decimal(0),))
        assert meter.last_reset is not None
        self.assertEqual(meter.last_reset.registers.total.demands[0].demands[0],
                         before.total.demands[0].demands[0])
        self.assertIn("write 7", meter.log)
        self.assertEqual(meter.procedures, [(9, 0)])
        self.assertEqual(meter.log[-2:], ["logoff", "terminate"])

    def test_demand_reset_with_a_self_read_and_the_snapshots_as_readings(self) -> None:
        meter = meter_()
        self.done(meter, CommandJob("demand-reset", self_read=True))
        self.assertEqual(len(meter.self_reads), 1)
        end = run(meter, None)
        assert isinstance(end, Finished) and isinstance(end.data, MeterData)
        records = [r for r in end.data.to_records("m1") if isinstance(r, Reading)]
        snap = {str(r.obis): r for r in records if (r.native_id or "").startswith("ST25")}
        self_read = {str(r.obis): r for r in records if (r.native_id or "").startswith("ST26")}
        self.assertEqual(snap["1-0:1.6.0*101"].value, Decimal("4.2"))
        self.assertEqual(self_read["1-0:1.6.0*1"].value, Decimal("4.2"))
        now = {str(r.obis): r for r in records if (r.native_id or "").startswith("ST23")}
        self.assertEqual(now["1-0:1.6.0*255"].value, Decimal(0))

    def test_a_second_demand_reset_within_the_exclusion_is_a_timing_constraint(self) -> None:
        meter = meter_()
        self.done(meter, CommandJob("demand-reset"))
        error = self.refused(meter, CommandJob("demand-reset"))
        assert isinstance(error, ProcedureRefused)
        self.assertEqual((error.result_code, error.command, error.meter), (4, "demand-reset", "m1"))
        self.assertIn("meter m1 refused demand-reset (SP9 (remote reset)): result code 4 "
                      "(timing constraint", error.message)
        self.assertEqual(meter.demand_resets, 4)
        # Five minutes later it is allowed again.
        meter.clock.now += 301  # type: ignore[attr-defined]
        self.done(meter, CommandJob("demand-reset"))
        self.assertEqual(meter.demand_resets, 5)

    def test_a_read_only_password_gets_no_authorization(self) -> None:
        meter = meter_()
        meter.read_password = b"reader"
        error = self.refused(meter, CommandJob("demand-reset"), password=b"reader")
        assert isinstance(error, ProcedureRefused)
        self.assertEqual(error.result_code, ResultCode.NO_AUTHORIZATION)
        self.assertIn("result code 5 (no authorization", error.message)
        self.assertEqual(meter.demand_resets, 3)

    def test_refusals_on_demand(self) -> None:
        meter = meter_()
        for code in (1, 2, 3, 6):
            meter.refusals = {9: code}
            error = self.refused(meter, CommandJob("demand-reset"))
            assert isinstance(error, ProcedureRefused)
            self.assertEqual(error.result_code, code)
            self.assertIn(f"result code {code} (", error.message)
        self.assertEqual(meter.demand_resets, 3)

    def test_a_refused_st7_write_names_the_meters_response_code(self) -> None:
        meter = meter_()
        error = self.refused(meter, CommandJob("demand-reset"), password=None)
        self.assertIsInstance(error, C12ResponseError)
        self.assertIn("meter m1 refused write of ST7 (demand-reset: SP9 (remote reset)): isc",
                      str(error))
        self.assertEqual(meter.demand_resets, 3)

    def test_relay_by_the_manufacturer_procedure(self) -> None:
        meter = meter_()
        done = self.done(meter, CommandJob("disconnect", relay_procedure=2))
        self.assertEqual(done.done, {"procedure": "MP2", "relay": "open"})
        self.assertFalse(meter.relay_closed)
        self.assertEqual(self.done(meter, CommandJob("relay-state", relay_procedure=2)).done,
                         {"procedure": "MP2", "relay": "open"})
        self.done(meter, CommandJob("reconnect", relay_procedure=2))
        self.assertTrue(meter.relay_closed)

    def test_relay_without_a_procedure_is_not_supported(self) -> None:
        error = self.refused(meter_(), CommandJob("disconnect"))
        self.assertIsInstance(error, NotSupported)
        self.assertIn("c12_relay_procedure", str(error))

    def test_a_procedure_st0_does_not_list_is_not_supported(self) -> None:
        meter = meter_()
        error = self.refused(meter, CommandJob("disconnect", relay_procedure=5))
        self.assertIsInstance(error, NotSupported)
        self.assertIn("meter m1: disconnect needs MP5, which the meter's ST0 does not list",
                      str(error))
        self.assertNotIn("write 7", meter.log)

    def test_event_log_clear(self) -> None:
        meter = meter_()
        done = self.done(meter, CommandJob("event-log-clear"))
        self.assertEqual(done.done["lists"], "event,history")
        self.assertEqual(meter.cleared_logs, {ST74_HISTORY_LOG, ST76_EVENT_LOG})
        self.assertEqual(meter.log_data(ST76_EVENT_LOG).valid_entries(), [])


class ClockSessionTests(unittest.TestCase):
    def test_read_the_clock(self) -> None:
        meter = meter_()
        meter.clock_offset = 90
        end = run(meter, ClockJob())
        assert isinstance(end, Finished) and isinstance(end.data, ClockResult)
        self.assertEqual(end.data.deviation, 90)
        self.assertEqual(meter.procedures, [])

    def test_set_the_clock_within_a_second(self) -> None:
        meter = meter_()
        meter.clock_offset = -3600
        server = NOW + timedelta(seconds=0.4)
        end = run(meter, ClockJob(set_clock=True), now=server)
        assert isinstance(end, Finished) and isinstance(end.data, ClockResult)
        self.assertEqual(end.data.set_to, NOW)
        self.assertEqual(meter.procedures, [(10, 0)])
        self.assertLess(abs((meter.now() - server).total_seconds()), 1)

    def test_a_local_clock_takes_the_zone_of_st53(self) -> None:
        # The meter's clock is local (GMT flag clear) 5 h behind UTC, ST53 says -300 min.
        meter = LocalClockMeter(clock=FakeClock())
        end = run(meter, ClockJob())
        assert isinstance(end, Finished) and isinstance(end.data, ClockResult)
        self.assertEqual(end.data.clock.time, NOW)
        self.assertFalse(end.data.clock.gmt)
        self.assertIn("read 53", meter.log)
        # Set: the local time goes to the meter, GMT flag clear.
        end = run(meter, ClockJob(set_clock=True), now=NOW + timedelta(hours=1))
        assert isinstance(end, Finished) and isinstance(end.data, ClockResult)
        self.assertEqual(meter.set_params[1:7], bytes([24, 3, 1, 8, 0, 0]))
        self.assertEqual(meter.set_params[7] & 0x10, 0)


class LocalClockMeter(SimulatedC12Meter):
    """A meter whose clock is local, UTC-5 as ST53 says (ST51/ST53 listed in ST0)."""

    zone = timezone(timedelta(hours=-5))
    set_params = b""

    @property
    def config(self) -> GeneralConfig:
        base = super().config
        return attrs.evolve(base, std_tables_used=base.std_tables_used | {51, 53})

    def table(self, number: int) -> bytes | None:
        config = self.config
        actual = ActualTimeTou(time_zone_offset=True)
        if number == 51:
            return actual.encode(config)
        if number == 53:
            return TimeOffset(zone_minutes=-300).encode(config, actual)
        if number == 52:
            return encode_ltime(self.now().astimezone(self.zone), config) + b"\x05"
        return super().table(number)

    def _set_date_time(self, params: bytes) -> int:
        self.set_params = params
        return super()._set_date_time(params)


class ArbitraryBytesTests(unittest.TestCase):
    """Arbitrary bytes into every new decoder: a value or FrameError (ValueError for the
    meter side's parameter decoders, which answer it with result 2), nothing else."""

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=64), st.sampled_from([LITTLE, BIG_BCD]))
    def test_decoders(self, data: bytes, config: GeneralConfig) -> None:
        registers = ActualRegisters(date_time_field=True, demand_reset_counter=True,
                                    nbr_self_reads=2, nbr_summations=1, nbr_demands=1,
                                    nbr_occur=1)
        decoders = (
            lambda: ProcedureRequest.decode(data, config),
            lambda: ProcedureResponse.decode(data, config),
            lambda: ActualTimeTou.decode(data, config),
            lambda: TimeOffset.decode(data, config, ActualTimeTou(True, True, True)),
            lambda: decode_snapshot(data, config, registers, 25),
            lambda: decode_self_reads(data, config, registers),
        )
        for decode in decoders:
            try:
                decode()
            except FrameError:
                pass
        for param_decode in (lambda: RemoteReset.decode(data),
                             lambda: SetDateTime.decode(data, config)):
            try:
                param_decode()
            except ValueError:
                pass
