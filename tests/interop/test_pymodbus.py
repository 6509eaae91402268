"""Modbus written by others against fep: pymodbus (3.16, test-only; fep never imports it).

- pymodbus's simulator data model (``SimDevice``) holds a pulse counter module's registers
  (etc/devices/generic-counter16.ini) in a child process, served over Modbus TCP and over
  RTU on one end of a socat pty pair; fep's ``modbus-pulse`` protocol reads it (values,
  scaling, status bits and the clock match what the server holds) and sets its clock, and
  fep's session drives every function code (1-6, 15, 16) and an exception response
  against it.
- pymodbus's client reads fep's simulated pulse recorder over TCP and over RTU on a pty
  pair: counters, voltages, status, clock, and a history record through the select window.

On the pty pairs fep's routes are 8N1: a pty accepts even parity once and refuses it
(tcsetattr EINVAL) when a port is opened again, and carries the bytes whatever the parity.

Each side checks every frame the other sends (MBAP header, CRC, byte counts), so these tests
fail when the bytes fep writes or expects are wrong.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from fep.channels.endpoints import client_endpoint
from fep.model import Meter, Reading
from fep.protocols.modbus.client import Framing, ModbusClient
from fep.protocols.modbus.pdu import (
    BitsResponse,
    IllegalDataAddress,
    RegistersResponse,
    WriteCoilsRequest,
    WriteRegistersRequest,
    read_coils,
    read_discrete_inputs,
    read_holding_registers,
    read_input_registers,
    write_coil,
    write_register,
)
from fep.protocols.modbus.recorder import Procedure
from fep.protocols.modbus.session import ModbusSession, PulseRecorderProtocol
from fep.sim.pulse_recorder import PulseRecorder, RecorderServerFactory, at, serve_pty
from tests.channels.test_serialport import socat_pty_pair
from tests.daemon.harness import free_port
from tests.interop import pymodbus_recorder as held

reactor: Any = global_reactor
ROOT = Path(__file__).resolve().parent.parent.parent
SERVER = Path(__file__).resolve().parent / "pymodbus_recorder.py"


def start_pymodbus(case: unittest.TestCase, *args: str) -> Deferred[subprocess.Popen[str]]:
    """The pymodbus server process; fires once it says ``ready``. Ended by its pid."""
    proc = subprocess.Popen([sys.executable, str(SERVER), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=str(ROOT))

    def stop() -> None:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()

    case.addCleanup(stop)
    assert proc.stdout is not None

    def ready(line: str) -> subprocess.Popen[str]:
        if line.strip() != "ready":
            raise AssertionError(f"pymodbus server did not start: {line!r}")
        return proc

    return deferToThread(proc.stdout.readline).addCallback(ready)


def counter_meter(route: str) -> Meter:
    return Meter("counter-1", "modbus", route, metadata={
        "modbus_device_map": "generic-counter16", "modbus_unit": str(held.UNIT),
        "pulse1_constant": "1000", "pulse1_wiring": "kyz"})


def function_codes() -> Procedure[dict[str, Any]]:
    """Every function code against the held registers, and one refused read."""
    out: dict[str, Any] = {}
    r = yield read_coils(0, 16)
    assert isinstance(r, BitsResponse)
    out["coils"] = list(r.bits[:16])
    yield write_coil(1, True)
    yield WriteCoilsRequest(8, [False, True, True])
    r = yield read_coils(0, 16)
    assert isinstance(r, BitsResponse)
    out["coils after"] = list(r.bits[:16])
    r = yield read_discrete_inputs(0, 5)
    assert isinstance(r, BitsResponse)
    out["discrete"] = list(r.bits[:5])
    yield write_register(200, 0xBEEF)
    yield WriteRegistersRequest(205, [1, 2, 3])
    r = yield read_holding_registers(200, 10)
    assert isinstance(r, RegistersResponse)
    out["holding"] = list(r.registers)
    r = yield read_input_registers(0, 2)
    assert isinstance(r, RegistersResponse)
    out["input"] = list(r.registers)
    try:
        yield read_holding_registers(6, 2)
    except IllegalDataAddress as e:
        out["refused"] = e
    return out


class FepReadsPymodbusTests(unittest.TestCase):
    timeout = 60

    def check_read(self, records: list[Any]) -> None:
        readings = {r.native_id: r for r in records if isinstance(r, Reading)}
        # 13:30:15 Europe/Berlin (CET) is 12:30:15 UTC.
        self.assertEqual(readings["clock"].meter_time, datetime(2024, 3, 1, 12, 30, 15,
                                                                tzinfo=UTC))
        self.assertEqual(readings["counter.1"].value, held.COUNTERS[0])
        self.assertEqual(readings["counter.2"].value, held.COUNTERS[1])
        self.assertEqual((readings["supply"].value, readings["supply"].unit_text),
                         (Decimal("230.1"), "V"))
        self.assertEqual(readings["battery"].value, Decimal("3.62"))
        self.assertEqual({k: readings[k].value for k in ("door", "key", "tamper", "power_fail",
                                                         "low_battery")},
                         dict(zip(("door", "key", "tamper", "power_fail", "low_battery"),
                                  held.STATUS, strict=True)))
        self.assertEqual(readings["status"].value, 0b10101)

    @inlineCallbacks
    def test_read_over_tcp(self) -> Any:
        port = free_port()
        yield start_pymodbus(self, "tcp", str(port))
        meter = counter_meter(f"tcp:host=127.0.0.1:port={port}")
        records = yield PulseRecorderProtocol().read(
            reactor, client_endpoint(reactor, meter.route), meter, 5)
        self.check_read(records)

    @inlineCallbacks
    def test_read_over_rtu_on_a_pty_pair(self) -> Any:
        a, b = yield socat_pty_pair(self)
        yield start_pymodbus(self, "rtu", a, "9600")
        meter = counter_meter(f"serial:{b}:9600:8N1")
        records = yield PulseRecorderProtocol().read(
            reactor, client_endpoint(reactor, meter.route), meter, 5)
        self.check_read(records)

    @inlineCallbacks
    def test_set_clock_over_rtu(self) -> Any:
        a, b = yield socat_pty_pair(self)
        proc = yield start_pymodbus(self, "rtu", a, "19200")
        meter = counter_meter(f"serial:{b}:19200:8N1")
        protocol = PulseRecorderProtocol()
        when = datetime(2024, 7, 1, 10, 0, 5, tzinfo=UTC)
        written = yield protocol.set_clock(reactor, client_endpoint(reactor, meter.route),
                                           meter, 5, when)
        self.assertEqual(written, when)
        line = yield deferToThread(proc.stdout.readline)
        # Function 16 at holding 0: 12:00:05 CEST.
        self.assertEqual(line.strip(), "write 16 0 [2024, 7, 1, 12, 0, 5]")
        clock = yield protocol.read_clock(reactor, client_endpoint(reactor, meter.route), meter, 5)
        self.assertEqual(clock, when)

    @inlineCallbacks
    def test_counter_preset_over_tcp(self) -> Any:
        port = free_port()
        proc = yield start_pymodbus(self, "tcp", str(port))
        meter = counter_meter(f"tcp:host=127.0.0.1:port={port}")
        protocol = PulseRecorderProtocol()
        done = yield protocol.run_command(reactor, client_endpoint(reactor, meter.route), meter,
                                          "parameter-set", {"counter2": "4321"}, 5,
                                          lambda _: None)
        self.assertEqual(done, {"counter2": 4321})
        line = yield deferToThread(proc.stdout.readline)
        self.assertEqual(line.strip(), "write 16 101 [4321]")  # function 16 at holding 101
        records = yield protocol.read(reactor, client_endpoint(reactor, meter.route), meter, 5)
        counters = {r.native_id: r.value for r in records if isinstance(r, Reading)
                    and r.native_id in ("counter.1", "counter.2")}
        self.assertEqual(counters, {"counter.1": held.COUNTERS[0], "counter.2": 4321})

    @inlineCallbacks
    def check_function_codes(self, framing: Framing, route: str) -> Any:
        client = ModbusClient(framing, held.UNIT, meter="counter-1", route=route)
        session: ModbusSession[dict[str, Any]] = ModbusSession(
            reactor, client, function_codes(), 5, meter="counter-1", route=route)
        from fep.protocols.session import run_session

        out = yield run_session(reactor, client_endpoint(reactor, route), session, route, 5)
        self.assertEqual(out["coils"], held.COILS)
        expected = list(held.COILS)
        expected[1] = True
        expected[8:11] = [False, True, True]
        self.assertEqual(out["coils after"], expected)
        self.assertEqual(out["discrete"], held.STATUS)
        self.assertEqual(out["holding"], [0xBEEF, 0, 0, 0, 0, 1, 2, 3, 0, 0])
        self.assertEqual(out["input"], held.VOLTAGES)
        self.assertEqual((out["refused"].address, out["refused"].route), (6, route))

    @inlineCallbacks
    def test_every_function_code_over_tcp(self) -> Any:
        port = free_port()
        yield start_pymodbus(self, "tcp", str(port))
        yield self.check_function_codes(Framing.TCP, f"tcp:host=127.0.0.1:port={port}")

    @inlineCallbacks
    def test_every_function_code_over_rtu(self) -> Any:
        a, b = yield socat_pty_pair(self)
        yield start_pymodbus(self, "rtu", a, "38400")
        yield self.check_function_codes(Framing.RTU, f"serial:{b}:38400:8N1")


# ---------------------------------------------------------------------------
# pymodbus reads fep's simulator
# ---------------------------------------------------------------------------

NOW = at("2024-03-02T00:00:00")


def make_recorder() -> PulseRecorder:
    return PulseRecorder(clock=lambda: NOW, started=at("2024-03-01T00:00:00"),
                         schedule=[(at("2024-03-01T10:03:17"), "door-open")])


def pymodbus_reads(client: Any, unit: int) -> dict[str, Any]:
    """What pymodbus's client reads from fep's recorder (runs in a thread)."""
    out: dict[str, Any] = {}
    try:
        assert client.connect(), "pymodbus could not connect"
        out["input"] = client.read_input_registers(0, count=7, device_id=unit).registers
        out["index"] = client.read_input_registers(8, count=4, device_id=unit).registers
        out["holding"] = client.read_holding_registers(0, count=3, device_id=unit).registers
        w = client.write_registers(16, [0, 95], device_id=unit)
        out["select"] = (w.isError(), w.address, w.count)
        out["record"] = client.read_input_registers(100, count=9, device_id=unit).registers
        bad = client.read_input_registers(7, count=1, device_id=unit)
        out["refused"] = (bad.isError(), getattr(bad, "exception_code", None))
    finally:
        client.close()
    return out


class PymodbusReadsFepTests(unittest.TestCase):
    timeout = 60

    def check(self, out: dict[str, Any], rec: PulseRecorder) -> None:
        c1, c2 = rec.inputs[0].counter, rec.inputs[1].counter
        self.assertEqual(out["input"], [c1 >> 16, c1 & 0xFFFF, c2 >> 16, c2 & 0xFFFF,
                                        rec.supply_centivolts, rec.battery_millivolts, 1])
        self.assertEqual(out["index"], [0, 96, 0, 1])  # 96 records, 1 event (door open)
        self.assertEqual(out["holding"], [int(NOW) >> 16, int(NOW) & 0xFFFF, 900])
        self.assertEqual(out["select"], (False, 16, 2))
        record = next(h for h in rec.history if h.number == 95)
        words = out["record"]
        self.assertEqual(words[0] << 16 | words[1], 95)
        self.assertEqual(words[2] << 16 | words[3], int(at("2024-03-01T23:45:00")))
        self.assertEqual(words[4] << 16 | words[5], record.counters[0])
        self.assertEqual(words[6] << 16 | words[7], record.counters[1])
        self.assertEqual(out["refused"], (True, 2))

    @inlineCallbacks
    def test_pymodbus_reads_the_simulator_over_tcp(self) -> Any:
        from pymodbus.client import ModbusTcpClient

        rec = make_recorder()
        port = reactor.listenTCP(0, RecorderServerFactory(rec, reactor, unit=5),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = ModbusTcpClient("127.0.0.1", port=port.getHost().port, timeout=3, retries=0)
        out = yield deferToThread(pymodbus_reads, client, 5)
        self.check(out, rec)

    @inlineCallbacks
    def test_pymodbus_reads_the_simulator_over_rtu_on_a_pty_pair(self) -> Any:
        from pymodbus.client import ModbusSerialClient

        a, b = yield socat_pty_pair(self)
        rec = make_recorder()
        serial = serve_pty(reactor, a, RecorderServerFactory(rec, reactor, framing="rtu",
                                                             unit=5), 9600)
        self.addCleanup(serial.loseConnection)
        # 8N1 on pymodbus's side (see pymodbus_recorder.py); the simulator keeps 8E1.
        client = ModbusSerialClient(b, baudrate=9600, parity="N", bytesize=8, stopbits=1,
                                    timeout=3, retries=0)
        out = yield deferToThread(pymodbus_reads, client, 5)
        self.check(out, rec)

