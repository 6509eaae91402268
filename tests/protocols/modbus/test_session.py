"""The Modbus Twisted session on a memory reactor: a timer per request, resends, the RTU
frame gap before each request and after a partial frame, named errors, a lost connection;
and PulseRecorderProtocol's settings checked before connecting."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from fep.errors import ChannelError, ConfigError, SessionTimeout
from fep.interfaces import IMeterProtocol
from fep.model import Meter
from fep.protocols.modbus import rtu, tcp
from fep.protocols.modbus.client import Framing, ModbusClient
from fep.protocols.modbus.pdu import (
    ExceptionResponse,
    Function,
    IllegalDataAddress,
    RegistersResponse,
    read_holding_registers,
    read_input_registers,
)
from fep.protocols.modbus.recorder import Procedure
from fep.protocols.modbus.session import ModbusSession, PulseRecorderProtocol
from fep.protocols.registry import meter_protocol


def two_reads() -> Procedure[list[int]]:
    a = yield read_holding_registers(0, 1)
    b = yield read_input_registers(0, 1)
    assert isinstance(a, RegistersResponse) and isinstance(b, RegistersResponse)
    return [a.registers[0], b.registers[0]]


class SerialTransport(StringTransport):
    """A string transport with the line speed a serial port shows."""

    baudrate = 9600
    char_bits = 11


def answer(unit: int, function: Function, value: int) -> bytes:
    return rtu.encode(unit, RegistersResponse(function, (value,)).encode())


class SessionTests(unittest.TestCase):
    def session(self, framing: Framing = Framing.RTU, transport: Any = None,
                retries: int = 1) -> tuple[ModbusSession[list[int]], Any, MemoryReactorClock]:
        clock = MemoryReactorClock()
        client = ModbusClient(framing, 1, retries=retries, meter="rec-1", route="serial:/dev/x")
        session: ModbusSession[list[int]] = ModbusSession(
            clock, client, two_reads(), 2.0, meter="rec-1", route="serial:/dev/x")
        transport = transport or SerialTransport()
        session.makeConnection(transport)
        return session, transport, clock

    def test_two_requests_with_the_frame_gap_between(self) -> None:
        session, transport, clock = self.session()
        gap = 3.5 * 11 / 9600
        self.assertEqual(transport.value(), rtu.encode(1, read_holding_registers(0, 1).encode()))
        transport.clear()
        clock.advance(0.05)
        session.dataReceived(answer(1, Function.READ_HOLDING_REGISTERS, 7))
        self.assertEqual(transport.value(), b"")  # the line must be quiet for 3.5 characters
        clock.advance(gap * 0.9)
        self.assertEqual(transport.value(), b"")
        clock.advance(gap * 0.2)
        self.assertEqual(transport.value(), rtu.encode(1, read_input_registers(0, 1).encode()))
        session.dataReceived(answer(1, Function.READ_INPUT_REGISTERS, 9))
        self.assertEqual(self.successResultOf(session.done), [7, 9])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_pause_drops_a_partial_frame(self) -> None:
        session, _transport, clock = self.session()
        good = answer(1, Function.READ_HOLDING_REGISTERS, 7)
        session.dataReceived(good[:3])
        clock.advance(0.01)  # longer than the gap: those 3 bytes were no frame
        self.assertEqual(session.client.noise, 1)
        session.dataReceived(good)
        clock.advance(0.01)
        session.dataReceived(answer(1, Function.READ_INPUT_REGISTERS, 9))
        self.assertEqual(self.successResultOf(session.done), [7, 9])

    def test_silence_resends_then_times_out_naming_meter_and_route(self) -> None:
        session, transport, clock = self.session(retries=1)
        first = transport.value()
        transport.clear()
        clock.advance(2.0)
        self.assertEqual(transport.value(), first)  # sent again
        clock.advance(2.0)
        error = self.failureResultOf(session.done, SessionTimeout).value
        self.assertEqual((error.meter, error.route), ("rec-1", "serial:/dev/x"))
        self.assertIn("within 2.0 s", str(error))

    def test_exception_response_fails_the_procedure_with_its_name(self) -> None:
        session, _transport, _clock = self.session()
        session.dataReceived(rtu.encode(1, ExceptionResponse(3, 2).encode()))
        error = self.failureResultOf(session.done, IllegalDataAddress).value
        self.assertEqual((error.meter, error.route, error.address), ("rec-1", "serial:/dev/x",
                                                                     0))

    def test_lost_connection_names_what_was_awaited(self) -> None:
        session, _transport, clock = self.session()
        session.connectionLost(Failure(ConnectionError("gone")))
        error = self.failureResultOf(session.done, ChannelError).value
        self.assertEqual(error.route, "serial:/dev/x")
        self.assertIn("function 3 at address 0", str(error))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_tcp_has_no_gap(self) -> None:
        session, transport, _clock = self.session(Framing.TCP, StringTransport())
        transport.clear()
        session.dataReceived(tcp.encode(1, 1, RegistersResponse(
            Function.READ_HOLDING_REGISTERS, (7,)).encode()))
        self.assertEqual(transport.value(), tcp.encode(2, 1, read_input_registers(0, 1).encode()))


class ProtocolTests(unittest.TestCase):
    def test_registered_under_both_names(self) -> None:
        for name in ("modbus", "modbus-pulse"):
            protocol = meter_protocol(name)
            self.assertIsInstance(protocol, PulseRecorderProtocol)
            self.assertTrue(verifyObject(IMeterProtocol, protocol))

    def test_settings_are_checked_before_connecting(self) -> None:
        clock = MemoryReactorClock()
        meter = Meter("rec-1", "modbus", "tcp:host=127.0.0.1:port=502",
                      metadata={"pulse1_constant": "1000"})
        error = self.failureResultOf(PulseRecorderProtocol().read(clock, object(), meter, 1),
                                     ConfigError).value
        self.assertEqual(error.key, "modbus_device_map")
