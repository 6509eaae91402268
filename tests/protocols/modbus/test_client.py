"""The Modbus client transaction layer: answers matched to their request over RTU and TCP,
exception responses as named errors, noise, stale answers, echoes, resends and silence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import ProtocolError, SessionTimeout
from fep.protocols.modbus import rtu, tcp
from fep.protocols.modbus.client import (
    Answered,
    Failed,
    Framing,
    ModbusClient,
    Noise,
    Refused,
    Resent,
    Send,
)
from fep.protocols.modbus.pdu import (
    ExceptionResponse,
    Function,
    IllegalDataAddress,
    ReadRequest,
    RegistersResponse,
    ServerDeviceBusy,
    WriteRegistersRequest,
    WriteResponse,
    WriteSingleRequest,
    read_holding_registers,
)

READ = read_holding_registers(0x6B, 3)
ANSWER = RegistersResponse(Function.READ_HOLDING_REGISTERS, (555, 0, 100))


def rtu_client(**kw: object) -> ModbusClient:
    return ModbusClient(Framing.RTU, 17, meter="rec-1", route="serial:/dev/ttyS0", **kw)  # type: ignore[arg-type]


class RtuClientTests(unittest.TestCase):
    def test_request_bytes_are_the_published_query(self) -> None:
        # PI-MBUS-300: slave 17, read holding registers 40108..40110.
        self.assertEqual(rtu_client().send(READ), [Send(bytes.fromhex("11 03 006B 0003 7687"))])

    def test_answer_is_matched(self) -> None:
        c = rtu_client()
        c.send(READ)
        actions = c.receive(rtu.encode(17, ANSWER.encode()))
        self.assertEqual(actions, [Answered(READ, ANSWER)])
        self.assertIsNone(c.waiting_for)

    def test_exception_response_is_a_named_error(self) -> None:
        c = rtu_client()
        c.send(READ)
        [action] = c.receive(rtu.encode(17, ExceptionResponse(3, 2).encode()))
        assert isinstance(action, Refused)
        self.assertIsInstance(action.error, IllegalDataAddress)
        self.assertEqual((action.error.meter, action.error.route, action.error.address),
                         ("rec-1", "serial:/dev/ttyS0", 0x6B))
        c.send(READ)
        [action] = c.receive(rtu.encode(17, ExceptionResponse(3, 6).encode()))
        assert isinstance(action, Refused)
        self.assertIsInstance(action.error, ServerDeviceBusy)

    def test_another_unit_is_no_answer(self) -> None:
        c = rtu_client()
        c.send(READ)
        actions = c.receive(rtu.encode(18, ANSWER.encode()) + rtu.encode(17, ANSWER.encode()))
        self.assertIsInstance(actions[0], Noise)
        self.assertEqual(actions[1], Answered(READ, ANSWER))
        self.assertEqual(c.stale, 1)

    def test_garbage_and_a_damaged_frame_before_the_answer(self) -> None:
        c = rtu_client()
        c.send(READ)
        good = rtu.encode(17, ANSWER.encode())
        damaged = good[:-1] + bytes([good[-1] ^ 0xFF])
        actions = c.receive(b"\x00\xff\x13" + damaged + good)
        self.assertEqual(actions[-1], Answered(READ, ANSWER))
        self.assertTrue(all(isinstance(a, Noise) for a in actions[:-1]))
        self.assertGreater(c.noise, 0)

    def test_an_echoed_request_is_skipped(self) -> None:
        c = rtu_client()
        [send] = c.send(READ)
        assert isinstance(send, Send)
        actions = c.receive(send.data + rtu.encode(17, ANSWER.encode()))
        self.assertEqual(actions, [Answered(READ, ANSWER)])
        self.assertEqual(c.echoes, 1)

    def test_a_single_write_answer_equal_to_its_request_is_no_echo(self) -> None:
        # Function 5/6 answers repeat the request byte for byte (pymodbus found this).
        c = rtu_client()
        write = WriteSingleRequest(Function.WRITE_SINGLE_COIL, 1, 0xFF00)
        [send] = c.send(write)
        assert isinstance(send, Send)
        echo = WriteResponse(Function.WRITE_SINGLE_COIL, 1, 0xFF00)
        self.assertEqual(c.receive(send.data), [Answered(write, echo)])

    def test_wrong_byte_count_is_not_taken(self) -> None:
        c = rtu_client()
        c.send(READ)
        short = RegistersResponse(Function.READ_HOLDING_REGISTERS, (1, 2))
        actions = c.receive(rtu.encode(17, short.encode()))
        self.assertTrue(all(isinstance(a, Noise) for a in actions))
        self.assertIsNotNone(c.waiting_for)

    def test_silence_resends_then_fails_naming_meter_and_route(self) -> None:
        c = rtu_client(retries=2)
        [send] = c.send(READ)
        self.assertEqual(c.timeout(), [Resent(1, "no answer in time"), send])
        self.assertEqual(c.timeout(), [Resent(2, "no answer in time"), send])
        [failed] = c.timeout()
        assert isinstance(failed, Failed)
        self.assertIsInstance(failed.error, SessionTimeout)
        self.assertEqual((failed.error.meter, failed.error.route),
                         ("rec-1", "serial:/dev/ttyS0"))
        self.assertIn("function 3 at address 107", str(failed.error))

    def test_a_pause_drops_a_partial_frame(self) -> None:
        c = rtu_client()
        c.send(READ)
        good = rtu.encode(17, ANSWER.encode())
        self.assertEqual(c.receive(good[:5]), [])
        [noise] = c.silence()
        self.assertIsInstance(noise, Noise)
        self.assertEqual(c.receive(good), [Answered(READ, ANSWER)])

    def test_one_request_at_a_time(self) -> None:
        c = rtu_client()
        c.send(READ)
        with self.assertRaises(ProtocolError):
            c.send(READ)

    def test_write_echo_is_the_answer(self) -> None:
        c = rtu_client()
        write = WriteRegistersRequest(16, [0, 5])
        c.send(write)
        echo = WriteResponse(Function.WRITE_MULTIPLE_REGISTERS, 16, 2)
        self.assertEqual(c.receive(rtu.encode(17, echo.encode())), [Answered(write, echo)])

    def test_units_out_of_range_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            ModbusClient(Framing.RTU, 0)
        with self.assertRaises(ValueError):
            ModbusClient(Framing.RTU, 248)

    @given(st.binary(max_size=200))
    def test_arbitrary_bytes_never_raise(self, data: bytes) -> None:
        c = rtu_client()
        c.send(READ)
        for action in c.receive(data):
            self.assertIsInstance(action, Noise | Answered | Refused)


class TcpClientTests(unittest.TestCase):
    def test_transaction_ids_count_and_match(self) -> None:
        c = ModbusClient(Framing.TCP, 1)
        [send] = c.send(READ)
        assert isinstance(send, Send)
        self.assertEqual(send.data, tcp.encode(1, 1, READ.encode()))
        stale = tcp.encode(9, 1, ANSWER.encode())
        actions = c.receive(stale + tcp.encode(1, 1, ANSWER.encode()))
        self.assertIsInstance(actions[0], Noise)
        self.assertEqual(actions[1], Answered(READ, ANSWER))
        [send] = c.send(ReadRequest(Function.READ_INPUT_REGISTERS, 0, 1))
        assert isinstance(send, Send)
        self.assertEqual(send.data[:2], b"\x00\x02")

    def test_answer_split_over_reads(self) -> None:
        c = ModbusClient(Framing.TCP, 1)
        c.send(READ)
        wire = tcp.encode(1, 1, ANSWER.encode())
        self.assertEqual(c.receive(wire[:4]), [])
        self.assertEqual(c.receive(wire[4:]), [Answered(READ, ANSWER)])

    def test_unit_255_takes_the_answer_of_any_unit_behind_a_device(self) -> None:
        c = ModbusClient(Framing.TCP, 255)
        c.send(READ)
        self.assertEqual(c.receive(tcp.encode(1, 1, ANSWER.encode())), [Answered(READ, ANSWER)])
