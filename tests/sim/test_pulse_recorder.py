"""The simulated pulse recorder: counting to the pulse (KYZ/KY, rollover), records and
events, outages and restarts, clock set, the ring, its Modbus server's refusals and line
faults; and ``fep read --protocol modbus`` against ``python -m fep.sim.pulse_recorder``
over TCP and a socat pty pair."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from fep.protocols.modbus import rtu, tcp
from fep.protocols.modbus.pdu import (
    ExceptionResponse,
    Function,
    ReadRequest,
    RegistersResponse,
    WriteCoilsRequest,
    WriteRegistersRequest,
    decode_response,
    read_holding_registers,
    read_input_registers,
)
from fep.pulse import Wiring
from fep.sim.pulse_recorder import (
    EVENT_CODES,
    Input,
    PulseRecorder,
    RateProfile,
    RecorderServerFactory,
    at,
)
from tests.channels.test_serialport import socat_pty_pair
from tests.processes import fep_command, start_module

DAY = at("2024-03-01T00:00:00")


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class RecorderModelTests(unittest.TestCase):
    def test_rate_profile_pulses_exactly(self) -> None:
        profile = RateProfile.parse("0=1200,8=3600,18=2400")
        self.assertEqual(profile.pulses(DAY, DAY + 86400), 8 * 1200 + 10 * 3600 + 6 * 2400)
        self.assertEqual(profile.pulses(DAY + 7.5 * 3600, DAY + 8.5 * 3600), 600 + 1800)
        self.assertEqual(RateProfile(((0.0, Fraction(7)),)).pulses(DAY, DAY + 600),
                         Fraction(7, 6))
        with self.assertRaises(ValueError):
            RateProfile(((1.0, Fraction(5)),))

    def test_kyz_counts_two_per_pulse_and_counters_roll_over(self) -> None:
        clock = FakeClock(DAY + 3600)
        rec = PulseRecorder(clock=clock, started=DAY, inputs=(
            Input(RateProfile(((0.0, Fraction(1000)),)), Wiring.KYZ, width=16, start=65000),
            Input(RateProfile(((0.0, Fraction(1000)),)), Wiring.KY)))
        rec.advance()
        self.assertEqual(rec.inputs[0].counter, (65000 + 2000) % 65536)
        self.assertEqual(rec.inputs[1].counter, 1000)
        self.assertEqual([h.end for h in rec.history], [int(DAY) + 900 * k for k in range(1, 5)])

    def test_outage_stops_counting_and_restarts_from_zero(self) -> None:
        clock = FakeClock(DAY + 3600)
        rec = PulseRecorder(clock=clock, started=DAY, outages=[(DAY + 1000, DAY + 2000)])
        rec.advance()
        ends = [h.end - int(DAY) for h in rec.history]
        self.assertEqual(ends, [900, 2700, 3600])  # nothing written while off
        self.assertEqual(rec.history[1].flags, 3)  # restart and power fail
        # 1200 pulses/h KYZ: a transition every 1.5 s from the start; those after the
        # restart at 2000 s up to 2700 s: 1800 - 1333.
        self.assertEqual(rec.history[1].counters[0], 2700 * 2 // 3 - 2000 * 2 // 3)
        self.assertEqual([e.code for e in rec.events], [EVENT_CODES["power-loss"],
                                                        EVENT_CODES["power-restore"]])

    def test_status_follows_the_schedule(self) -> None:
        clock = FakeClock(DAY + 3600)
        rec = PulseRecorder(clock=clock, started=DAY, schedule=[
            (DAY + 10, "door-open"), (DAY + 20, "tamper"), (DAY + 30, "door-close")])
        rec.advance()
        self.assertEqual(rec.status, 0b100)
        self.assertEqual([e.time - int(DAY) for e in rec.events], [10, 20, 30])

    def test_ring_keeps_the_newest_records(self) -> None:
        rec = PulseRecorder(clock=FakeClock(DAY + 86400), started=DAY, history_capacity=10)
        rec.advance()
        self.assertEqual([h.number for h in rec.history], list(range(87, 97)))

    def test_clock_set_moves_the_period_grid_and_is_logged(self) -> None:
        clock = FakeClock(DAY + 3600)
        rec = PulseRecorder(clock=clock, started=DAY)
        rec.answer(WriteRegistersRequest(0, [int(DAY + 3660) >> 16, int(DAY + 3660) & 0xFFFF]))
        self.assertEqual(rec.now(), DAY + 3660)
        self.assertEqual(rec.events[-1].code, EVENT_CODES["clock-set"])
        clock.t += 900
        rec.advance()
        self.assertEqual(rec.history[-1].end, int(DAY) + 4500)

    def test_refusals(self) -> None:
        rec = PulseRecorder(clock=FakeClock(DAY + 3600), started=DAY)
        self.assertEqual(rec.answer(read_input_registers(7, 1)), ExceptionResponse(4, 2))
        self.assertEqual(rec.answer(WriteRegistersRequest(2, [60])), ExceptionResponse(16, 2))
        self.assertEqual(rec.answer(WriteRegistersRequest(1, [0])), ExceptionResponse(16, 3))
        # No discrete inputs; coils 0 and 1 only (the counter resets).
        self.assertEqual(rec.answer(ReadRequest(Function.READ_DISCRETE_INPUTS, 0, 1)),
                         ExceptionResponse(2, 1))
        self.assertEqual(rec.answer(ReadRequest(Function.READ_COILS, 1, 2)),
                         ExceptionResponse(1, 2))


class ServerTests(unittest.TestCase):
    def connect(self, framing: str = "rtu") -> tuple[Any, StringTransport, Any]:
        rec = PulseRecorder(clock=FakeClock(DAY + 3600), started=DAY)
        factory = RecorderServerFactory(rec, MemoryReactorClock(), framing=framing, unit=4)
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport, factory

    def ask(self, proto: Any, transport: StringTransport, factory: Any, data: bytes) -> bytes:
        transport.clear()
        proto.dataReceived(data)
        factory.reactor.advance(0)
        return bytes(transport.value())

    def test_rtu_answers_its_unit_only(self) -> None:
        proto, transport, factory = self.connect()
        out = self.ask(proto, transport, factory, rtu.encode(4, read_holding_registers(2, 1)
                                                             .encode()))
        self.assertEqual(out, rtu.encode(4, RegistersResponse(
            Function.READ_HOLDING_REGISTERS, (900,)).encode()))
        self.assertEqual(self.ask(proto, transport, factory,
                                  rtu.encode(5, read_holding_registers(2, 1).encode())), b"")

    def test_tcp_answers_another_unit_as_a_gateway_would(self) -> None:
        proto, transport, factory = self.connect("tcp")
        out = self.ask(proto, transport, factory, tcp.encode(9, 7, read_holding_registers(2, 1)
                                                             .encode()))
        self.assertEqual(out, tcp.encode(9, 7, ExceptionResponse(3, 0x0B).encode()))

    def test_line_faults(self) -> None:
        proto, transport, factory = self.connect()
        request = rtu.encode(4, read_holding_registers(2, 1).encode())
        factory.drop_answers = 1
        self.assertEqual(self.ask(proto, transport, factory, request), b"")
        factory.damage_answers = 1
        damaged = self.ask(proto, transport, factory, request)
        self.assertNotEqual(rtu.crc16(damaged[:-2]), int.from_bytes(damaged[-2:], "little"))
        factory.noise = b"\xff\x00"
        self.assertTrue(self.ask(proto, transport, factory, request).startswith(b"\xff\x00"))
        factory.noise = b""
        factory.silent = True
        self.assertEqual(self.ask(proto, transport, factory, request), b"")
        self.assertEqual(factory.requests, 4)

    def test_coil_writes_are_refused_and_garbage_ignored(self) -> None:
        proto, transport, factory = self.connect()
        out = self.ask(proto, transport, factory,
                       rtu.encode(4, WriteCoilsRequest(0, [True]).encode()))
        self.assertEqual(decode_response(out[1:-2]), ExceptionResponse(15, 1))
        self.assertEqual(self.ask(proto, transport, factory, b"\x04\x03\x00"), b"")


def start_simulator(case: unittest.TestCase, *args: str) -> Deferred[str]:
    """``python -m fep.sim.pulse_recorder ARGS``; fires with its first stdout line."""
    line: Deferred[str] = start_module(case, "fep.sim.pulse_recorder", *args)
    return line


def fep_read(*args: str) -> Deferred[subprocess.CompletedProcess[str]]:
    return fep_command("read", "--protocol", "modbus", *args)


class CommandLineTests(unittest.TestCase):
    timeout = 90

    def check(self, result: subprocess.CompletedProcess[str]) -> None:
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        by_obis = {}
        for row in rows:
            by_obis.setdefault(row["obis"], []).append(row)
        # Readings: the decoded status (door closed), voltages, counters, clock.
        self.assertEqual(by_obis["0-0:96.5.0*255"][0]["value"], 0)
        self.assertEqual(by_obis["0-0:96.51.0*255"][0]["value"], False)
        self.assertEqual(by_obis["0-0:96.50.0*255"][0]["unit"], "V")
        self.assertIn("0-1:96.128.0*255", by_obis)
        # Intervals: the newest 4 periods of input 1 (KYZ, 1 Wh a pulse) in Wh.
        energy = by_obis["1-1:1.29.0*255"]
        self.assertEqual(len(energy), 4)
        self.assertEqual({row["unit"] for row in energy}, {"Wh"})

    @inlineCallbacks
    def test_fep_read_over_tcp(self) -> Any:
        line = yield start_simulator(self, "--port", "0", "--unit", "9")
        self.assertTrue(line.startswith("serving unit 9"), line)
        route = "tcp:host=127.0.0.1:port=" + line.rsplit(":", 1)[1]
        result = yield fep_read(route, "--device-map", "sim-pr2", "--unit-id", "9",
                                "-o", "pulse1_constant=1000", "-o", "pulse1_wiring=kyz",
                                "-o", "pulse_history=4", "--format", "json")
        self.check(result)

    @inlineCallbacks
    def test_fep_read_over_a_pty_pair(self) -> Any:
        a, b = yield socat_pty_pair(self)
        line = yield start_simulator(self, "--pty", a, "--baud", "19200")
        self.assertIn(a, line)
        result = yield fep_read(f"serial:{b}:19200:8E1", "--device-map", "sim-pr2",
                                "-o", "pulse1_constant=1000", "-o", "pulse_history=4",
                                "--format", "json")
        self.check(result)

    @inlineCallbacks
    def test_unknown_device_map_is_a_usage_error(self) -> Any:
        result = yield fep_read("tcp:host=127.0.0.1:port=1", "--device-map", "no-such")
        self.assertEqual(result.returncode, 2)
        self.assertIn("no-such", result.stderr)


class ClockCapabilityTests(unittest.TestCase):
    def test_pulse_recorders_offer_the_clock_to_the_collection_engine(self) -> None:
        from zope.interface.verify import verifyObject

        from fep.interfaces import IClock
        from fep.protocols.registry import meter_protocol

        self.assertTrue(verifyObject(IClock, meter_protocol("modbus-pulse")))
