"""The simulated C12.18 meter: service states and refusals, the password, tables that
decode with fep's C12.19 decoders, registers that grow, packet limits, and its command line
read end to end by ``fep read --protocol ansi-c12.18`` (TCP and a socat pty pair)."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial import unittest

from fep.protocols.ansi_c12.c1218 import (
    Identify,
    IdentifyResponse,
    Logoff,
    Logon,
    Negotiate,
    NegotiateResponse,
    Read,
    ResponseCode,
    Security,
    Terminate,
    Wait,
    decode_read_response,
)
from fep.protocols.ansi_c12.c1219 import (
    ActualLoadProfile,
    ActualLog,
    ActualRegisters,
    Clock,
    DataSelection,
    DeviceId,
    GeneralConfig,
    ListStatus,
    LpSetDims,
    ManufacturerId,
    ModeStatus,
    decode_current_registers,
    decode_log,
    decode_lp_data,
    decode_lp_selection,
    decode_lp_status,
    decode_uom_entries,
    lp_data_length,
)
from fep.sim.ansi_c12 import MT0_DATA, MeterState, SimulatedC12Meter
from tests.channels.test_serialport import socat_pty_pair
from tests.inprocess import fep_deferred as fep_command
from tests.processes import start_module, tcp_simulator

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def logged_on(meter: SimulatedC12Meter, password: bytes | None = b"secret") -> None:
    for request in (Identify(), Negotiate(256, 4), Logon(2, b"op")):
        assert meter.answer(request.encode())[0] == 0
    if password is not None:
        meter.answer(Security(password).encode())


def read(meter: SimulatedC12Meter, table: int) -> bytes:
    return decode_read_response(meter.answer(Read(table).encode()), table=table)


class ServiceTests(unittest.TestCase):
    def test_identify_then_negotiate(self) -> None:
        meter = SimulatedC12Meter()
        identify = IdentifyResponse.decode(meter.answer(Identify().encode()))
        self.assertEqual((identify.standard, identify.version), (0, 1))
        answer = NegotiateResponse.decode(meter.answer(Negotiate(2048, 20, 19200).encode()))
        # The meter caps packet size and count at its own limits and takes the baud.
        self.assertEqual(answer, NegotiateResponse(1024, 8, 19200))

    def test_services_out_of_sequence_are_isss(self) -> None:
        meter = SimulatedC12Meter()
        self.assertEqual(meter.answer(Read(0).encode()), bytes([ResponseCode.ISSS]))
        meter.answer(Identify().encode())
        self.assertEqual(meter.answer(Security(b"secret").encode()), bytes([ResponseCode.ISSS]))

    def test_password_guards_all_but_st0_and_st1(self) -> None:
        meter = SimulatedC12Meter()
        logged_on(meter, password=None)
        self.assertEqual(meter.answer(Read(1).encode())[0], ResponseCode.OK)
        self.assertEqual(meter.answer(Read(23).encode()), bytes([ResponseCode.ISC]))
        self.assertEqual(meter.answer(Security(b"wrong").encode()), bytes([ResponseCode.ISC]))
        self.assertEqual(meter.answer(Security(b"secret", pad=0x20).encode())[0], 0)
        self.assertEqual(meter.answer(Read(23).encode())[0], ResponseCode.OK)

    def test_meter_without_password_serves_everything(self) -> None:
        meter = SimulatedC12Meter(password=None)
        logged_on(meter, password=None)
        self.assertEqual(meter.answer(Read(52).encode())[0], ResponseCode.OK)

    def test_logoff_and_terminate_reset_the_state(self) -> None:
        meter = SimulatedC12Meter()
        logged_on(meter)
        self.assertEqual(meter.answer(Logoff().encode()), b"\x00")
        self.assertEqual((meter.state, meter.secured), (MeterState.ID, False))
        self.assertEqual(meter.answer(Wait(5).encode()), b"\x00")
        self.assertEqual(meter.answer(Terminate().encode()), b"\x00")
        self.assertEqual(meter.state, MeterState.BASE)

    def test_unknown_table_is_iar_and_bad_request_is_err(self) -> None:
        meter = SimulatedC12Meter()
        logged_on(meter)
        self.assertEqual(meter.answer(Read(99).encode()), bytes([ResponseCode.IAR]))
        self.assertEqual(meter.answer(b"\x99"), bytes([ResponseCode.ERR]))
        self.assertTrue(meter.log[-1].startswith("bad request"))

    def test_partial_read(self) -> None:
        meter = SimulatedC12Meter()
        logged_on(meter)
        whole = read(meter, 1)
        part = decode_read_response(meter.answer(Read(1, 4, 8).encode()))
        self.assertEqual(part, whole[4:12])
        self.assertEqual(meter.answer(Read(1, 30, 8).encode()), bytes([ResponseCode.IAR]))

    def test_answer_larger_than_the_negotiated_packets_is_onp(self) -> None:
        meter = SimulatedC12Meter()
        for request in (Identify(), Negotiate(16, 1), Logon(), Security(b"secret")):
            meter.answer(request.encode())
        self.assertEqual(meter.answer(Read(23).encode()), bytes([ResponseCode.ONP]))


class TableTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock()
        self.meter = SimulatedC12Meter(clock=self.clock, clock_offset=60, serial="X123")
        logged_on(self.meter)
        self.config = GeneralConfig.decode(read(self.meter, 0))

    def test_identification_tables(self) -> None:
        self.assertEqual(
            self.config.std_tables_used,
            frozenset(
                {0, 1, 3, 5, 7, 8, 11, 12, 13, 14, 15, 16, 21, 22, 23, 24, 25, 26, 51, 52, 53,
                 61, 62, 63, 64, 71, 74, 76}
            ),
        )
        mfg = ManufacturerId.decode(read(self.meter, 1), self.config)
        self.assertEqual(
            (mfg.manufacturer, mfg.model, mfg.serial_number), ("FEP", "C12SIM", "X123")
        )
        device = DeviceId.decode(read(self.meter, 5), self.config)
        self.assertEqual(device.identification, "FEP C12 SIMULATOR")
        self.assertEqual(len(read(self.meter, 3)), 5)  # termineter needs 5 bytes
        self.assertEqual(int(ModeStatus.decode(read(self.meter, 3), self.config).mode), 1)

    def test_clock_runs_with_its_offset(self) -> None:
        clock = Clock.decode(read(self.meter, 52), self.config)
        self.assertEqual(clock.time.timestamp(), T0 + 60)
        self.assertTrue(clock.gmt)

    def test_registers_grow_with_wall_time(self) -> None:
        registers = ActualRegisters.decode(read(self.meter, 21))
        before = decode_current_registers(read(self.meter, 23), self.config, registers)
        self.clock.now += 3600
        after = decode_current_registers(read(self.meter, 23), self.config, registers)
        self.assertEqual(after.total.summations[0] - before.total.summations[0], Decimal("0.9"))
        self.assertEqual(len(after.tiers), 2)
        self.assertEqual(after.demand_resets, 3)

    def test_selection_points_at_st12_entries(self) -> None:
        registers = ActualRegisters.decode(read(self.meter, 21))
        selection = DataSelection.decode(read(self.meter, 22), registers)
        uoms = decode_uom_entries(read(self.meter, 12), self.config)
        self.assertEqual([uoms[i].id_code for i in selection.summations], [0, 0, 1])
        self.assertEqual(uoms[selection.demands[0]].time_base, 4)
        self.assertEqual(uoms[selection.coincidents[0]].id_code, 8)


class ProfileAndLogTests(unittest.TestCase):
    def setUp(self) -> None:
        # Started on a block boundary (00:00 of a day): two blocks of history before it.
        self.clock = FakeClock(1_709_251_200.0)  # 2024-03-01 00:00 UTC
        self.meter = SimulatedC12Meter(clock=self.clock)
        logged_on(self.meter)
        self.config = GeneralConfig.decode(read(self.meter, 0))
        self.actual = ActualLoadProfile.decode(read(self.meter, 61), self.config)
        selection = decode_lp_selection(read(self.meter, 62), self.config, self.actual)[0]
        assert selection is not None
        self.selection = selection

    def status(self) -> ListStatus:
        status = decode_lp_status(read(self.meter, 63), self.config, self.actual)[0]
        assert status is not None
        return status

    def test_dimensions(self) -> None:
        self.assertEqual(self.actual.sets[0], LpSetDims(4, 24, 2, 15))
        self.assertEqual([c.source for c in self.selection.channels], [0, 2])
        data = read(self.meter, 64)
        self.assertEqual(len(data), lp_data_length(self.config, self.actual, self.selection))

    def test_intervals_accrue_with_the_clock_and_blocks_wrap(self) -> None:
        status = self.status()
        self.assertEqual(
            (status.nbr_valid, status.last_element, status.valid_in_newest), (2, 1, 24)
        )
        self.clock.now += 15 * 60
        status = self.status()
        self.assertEqual((status.nbr_valid, status.last_element, status.valid_in_newest), (3, 2, 1))
        self.clock.now += 2 * 6 * 3600  # two more blocks: the oldest is overwritten
        status = self.status()
        self.assertEqual((status.nbr_valid, status.last_element, status.valid_in_newest), (4, 0, 1))
        blocks = decode_lp_data(read(self.meter, 64), self.config, self.actual, self.selection)
        newest = blocks[0]
        assert newest.end_time is not None
        self.assertEqual(newest.end_time.timestamp(), self.clock.now)
        self.assertEqual(newest.valid, frozenset({0}))
        # 0.9 kWh an hour over 15 minutes, varying over the hour: 225, 247, 270, 292 Wh.
        self.assertEqual([i.values[0] for i in blocks[1].intervals[:4]], [225, 247, 270, 292])

    def test_logs(self) -> None:
        actual = ActualLog.decode(read(self.meter, 71), self.config)
        history = decode_log(read(self.meter, 74), self.config, actual, 74)
        events = decode_log(read(self.meter, 76), self.config, actual, 76)
        self.assertEqual([e.code for e in history.valid_entries()], [1, 2, 4, 20, 7])
        self.assertEqual([e.code for e in events.valid_entries()], [44, 47, 48])
        first = history.valid_entries()[0].time
        assert first is not None
        self.assertEqual(first.timestamp(), self.clock.now - 3 * 3600)



def start_simulator(case: unittest.TestCase, *args: str) -> Deferred[str]:
    """Run ``python -m fep.sim.ansi_c12 ARGS``; fires with its first line."""
    return start_module(case, "fep.sim.ansi_c12", *args)


def fep_read(*args: str) -> Deferred[subprocess.CompletedProcess[str]]:
    return fep_command("read", "--protocol", "ansi-c12.18", *args)


class CommandLineTests(unittest.TestCase):
    """The acceptance path: the simulator process, read by ``fep read``."""

    def tcp_route(self, *args: str) -> Deferred[str]:
        route: Deferred[str] = tcp_simulator(self, "ansi_c12", "--tcp", "0", *args)
        return route

    @inlineCallbacks
    def test_fep_read_over_tcp_with_the_password(self) -> Any:
        route = yield self.tcp_route("--password", "pw1", "--serial", "SN42")
        result = yield fep_read(route, "-o", "c12_password=pw1", "--format", "json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('"SN42"', result.stdout)
        self.assertIn('"1-0:1.8.0*255"', result.stdout)
        self.assertIn('"kWh"', result.stdout)
        self.assertIn('"0-0:1.0.0*255"', result.stdout)
        self.assertIn('"1-0:1.29.0*255"', result.stdout)  # load profile intervals
        self.assertIn('"std-47"', result.stdout)  # the tamper event

    @inlineCallbacks
    def test_fep_read_with_a_wrong_password_exits_3_naming_the_refusal(self) -> Any:
        route = yield self.tcp_route("--password", "pw1")
        result = yield fep_read(route, "-o", "c12_password=nope")
        self.assertEqual(result.returncode, 3)
        self.assertIn("refused security: isc (insufficient security clearance)", result.stderr)
        self.assertIn(route, result.stderr)
        self.assertNotIn("nope", result.stderr)

    @inlineCallbacks
    def test_fep_read_tables_prints_each_decoded_or_in_hex(self) -> Any:
        route = yield self.tcp_route("--password", "pw1", "--multiplier", "40")
        result = yield fep_read(
            route, "--password", "pw1", "--table", "15", "--table", "ST23", "--table", "MT0"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        self.assertEqual([row["label"] for row in rows], ["ST15", "ST23", "MT0"])
        constants, registers, mfg = rows
        self.assertEqual(constants["name"], "CONSTANTS_TBL")
        self.assertEqual(constants["fields"][0]["multiplier"], 40)
        # ST23 as stored: secondary values, the multiplier not applied.
        self.assertGreaterEqual(registers["fields"]["total"]["summations"][0], 1234.5)
        self.assertLess(registers["fields"]["total"]["summations"][0], 1300)
        self.assertEqual(mfg["hex"], MT0_DATA.hex())
        self.assertIsNone(mfg["name"])

    @inlineCallbacks
    def test_fep_read_registers_with_the_multiplier_applied(self) -> Any:
        route = yield self.tcp_route("--password", "", "--multiplier", "40")
        result = yield fep_read(route, "-o", "c12_profile=no", "-o", "c12_events=no")
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = {row["obis"]: row for row in map(json.loads, result.stdout.splitlines())}
        self.assertGreaterEqual(rows["1-0:1.8.0*255"]["value"], 40 * 1234.5)
        self.assertEqual(rows["1-0:1.8.0*255"]["unit"], "kWh")

    @inlineCallbacks
    def test_fep_read_of_the_simulator_as_a_c1221_meter(self) -> Any:
        route = yield self.tcp_route("--password", "", "--c1221", "--auth-key",
                                     "0123456789ABCDEF", "--auth-key-id", "3")  # fmt: skip
        result = yield fep_read(
            route, "--protocol", "ansi-c12.21", "-o", "c12_auth_key=0123456789ABCDEF",
            "-o", "c12_auth_key_id=3", "-o", "c12_response_timeout=2",
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        self.assertIn("1-0:1.8.0*255", {row.get("obis") for row in rows})

    @inlineCallbacks
    def test_bad_table_number_is_a_usage_error(self) -> Any:
        route = yield self.tcp_route("--password", "")
        result = yield fep_read(route, "--table", "ST2048")
        self.assertEqual(result.returncode, 2)
        self.assertIn("not a C12.19 table: 'ST2048'", result.stderr)

    @inlineCallbacks
    def test_fep_read_over_a_pty_pair(self) -> Any:
        a, b = yield socat_pty_pair(self)
        line = yield start_simulator(self, "--pty", a, "--password", "")
        self.assertIn(a, line)
        route = f"serial:{b}:baudrate=9600:bytesize=8:parity=N"
        result = yield fep_read(route, "--format", "json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('"SIM0000001"', result.stdout)
        self.assertIn('"1-0:2.8.0*255"', result.stdout)
