"""Modbus PDUs, RTU frames (CRC-16/Modbus) and MBAP frames: published bytes, every function
code both ways, exception responses as named errors, and decoders that resynchronise after
arbitrary bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.modbus import pdu, rtu, tcp
from fep.protocols.modbus.pdu import (
    BitsResponse,
    ExceptionResponse,
    Function,
    IllegalDataAddress,
    ReadRequest,
    RegistersResponse,
    WriteCoilsRequest,
    WriteRegistersRequest,
    WriteResponse,
    WriteSingleRequest,
    check_response,
    decode_request,
    decode_response,
    exception_for,
)
from tests.protocols.modbus.published import (
    CRC_CHECK,
    CRC_EXAMPLE,
    PDU_EXAMPLES,
    RTU_READ_HOLDING_QUERY,
)

REQUESTS = st.one_of(
    st.builds(ReadRequest, st.sampled_from([Function.READ_COILS, Function.READ_DISCRETE_INPUTS]),
              st.integers(0, 60000), st.integers(1, 2000)),
    st.builds(ReadRequest, st.sampled_from([Function.READ_HOLDING_REGISTERS,
                                            Function.READ_INPUT_REGISTERS]),
              st.integers(0, 60000), st.integers(1, 125)),
    st.builds(WriteSingleRequest, st.just(Function.WRITE_SINGLE_REGISTER),
              st.integers(0, 65535), st.integers(0, 65535)),
    st.builds(WriteSingleRequest, st.just(Function.WRITE_SINGLE_COIL),
              st.integers(0, 65535), st.sampled_from([0, 0xFF00])),
    st.builds(WriteCoilsRequest, st.integers(0, 60000),
              st.lists(st.booleans(), min_size=1, max_size=1968)),
    st.builds(WriteRegistersRequest, st.integers(0, 60000),
              st.lists(st.integers(0, 65535), min_size=1, max_size=123)),
)
RESPONSES = st.one_of(
    st.builds(RegistersResponse, st.sampled_from([Function.READ_HOLDING_REGISTERS,
                                                  Function.READ_INPUT_REGISTERS]),
              st.lists(st.integers(0, 65535), min_size=1, max_size=125).map(tuple)),
    st.builds(BitsResponse, st.sampled_from([Function.READ_COILS,
                                             Function.READ_DISCRETE_INPUTS]),
              st.lists(st.booleans(), min_size=8, max_size=8 * 250).map(
                  lambda b: tuple(b[: len(b) // 8 * 8]))),
    st.builds(WriteResponse, st.sampled_from([Function.WRITE_SINGLE_REGISTER,
                                              Function.WRITE_MULTIPLE_REGISTERS]),
              st.integers(0, 65535), st.integers(0, 65535)),
    st.builds(ExceptionResponse, st.integers(1, 127), st.integers(0, 255)),
)


class PublishedPduTests(unittest.TestCase):
    def test_every_published_request_decodes_and_encodes_back(self) -> None:
        for name, (request, _) in PDU_EXAMPLES.items():
            self.assertEqual(decode_request(request).encode(), request, name)

    def test_every_published_response_decodes_and_encodes_back(self) -> None:
        for name, (_, response) in PDU_EXAMPLES.items():
            self.assertEqual(decode_response(response).encode(), response, name)

    def test_every_published_response_answers_its_request(self) -> None:
        for name, (request, response) in PDU_EXAMPLES.items():
            self.assertIsNone(check_response(decode_request(request), decode_response(response)),
                              name)

    def test_read_coils_example_bits_least_significant_first(self) -> None:
        response = decode_response(PDU_EXAMPLES["read_coils"][1])
        assert isinstance(response, BitsResponse)
        # Coils 20..38 (19 of them): 0xCD = 1100 1101 gives coils 27..20 = 1,1,0,0,1,1,0,1.
        self.assertEqual(response.bits[:8], (True, False, True, True, False, False, True, True))
        self.assertEqual(response.bits[16:19], (True, False, True))

    def test_read_holding_example_values(self) -> None:
        response = decode_response(PDU_EXAMPLES["read_holding_registers"][1])
        self.assertEqual(response, RegistersResponse(Function.READ_HOLDING_REGISTERS,
                                                     (555, 0, 100)))

    def test_exception_example_is_illegal_data_address(self) -> None:
        response = decode_response(PDU_EXAMPLES["exception"][1])
        self.assertEqual(response, ExceptionResponse(1, 2))
        error = exception_for(response.function, response.code, address=0x04A1, unit=17,
                              meter="rec-1", route="tcp:x:502")
        self.assertIsInstance(error, IllegalDataAddress)
        self.assertEqual((error.meter, error.route, error.function), ("rec-1", "tcp:x:502", 1))
        self.assertIn("illegal data address", str(error))
        self.assertIn("1185", str(error))

    def test_unknown_exception_code_keeps_its_number(self) -> None:
        error = exception_for(3, 0x42)
        self.assertIs(type(error), pdu.ModbusException)
        self.assertEqual(error.code, 0x42)

    def test_requests_out_of_range_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            ReadRequest(Function.READ_HOLDING_REGISTERS, 0, 126)
        with self.assertRaises(ValueError):
            ReadRequest(Function.READ_COILS, 0, 2001)
        with self.assertRaises(ValueError):
            ReadRequest(Function.READ_INPUT_REGISTERS, 65535, 2)
        with self.assertRaises(ValueError):
            WriteSingleRequest(Function.WRITE_SINGLE_COIL, 0, 1)
        with self.assertRaises(ValueError):
            WriteRegistersRequest(0, [0] * 124)

    def test_wrong_byte_count_is_no_answer(self) -> None:
        request = ReadRequest(Function.READ_HOLDING_REGISTERS, 0, 3)
        answer = RegistersResponse(Function.READ_HOLDING_REGISTERS, (1, 2))
        self.assertIn("4 data bytes, expected 6", check_response(request, answer) or "")

    def test_write_echo_must_match(self) -> None:
        request = WriteRegistersRequest(10, [1, 2])
        self.assertIsNotNone(check_response(request, WriteResponse(
            Function.WRITE_MULTIPLE_REGISTERS, 10, 3)))
        self.assertIsNone(check_response(request, WriteResponse(
            Function.WRITE_MULTIPLE_REGISTERS, 10, 2)))

    @given(REQUESTS)
    def test_requests_round_trip(self, request: pdu.Request) -> None:
        wire = request.encode()
        self.assertEqual(pdu.pdu_length(wire, request=True), len(wire))
        self.assertEqual(decode_request(wire), request)

    @given(RESPONSES)
    def test_responses_round_trip(self, response: pdu.Response) -> None:
        wire = response.encode()
        self.assertEqual(pdu.pdu_length(wire, request=False), len(wire))
        self.assertEqual(decode_response(wire), response)

    @given(st.binary(max_size=300))
    def test_arbitrary_pdus_decode_or_raise_frame_error(self, data: bytes) -> None:
        for decode in (decode_request, decode_response):
            try:
                decode(data)
            except (FrameError, ValueError):
                pass


class CrcTests(unittest.TestCase):
    def test_catalogue_check_value(self) -> None:
        data, crc = CRC_CHECK
        self.assertEqual(rtu.crc16(data), crc)

    def test_modicon_guide_example(self) -> None:
        data, crc = CRC_EXAMPLE
        self.assertEqual(rtu.crc16(data), crc)
        self.assertEqual(rtu.encode(data[0], data[1:])[-2:], bytes.fromhex("4112"))

    def test_modicon_read_holding_query(self) -> None:
        frame = rtu.encode(0x11, PDU_EXAMPLES["read_holding_registers"][0])
        self.assertEqual(frame, RTU_READ_HOLDING_QUERY)

    def test_frame_gap(self) -> None:
        # 3.5 characters of 11 bits at 9600 Bd; a fixed 1.75 ms above 19200 Bd.
        self.assertAlmostEqual(rtu.frame_gap(9600), 3.5 * 11 / 9600)
        self.assertAlmostEqual(rtu.frame_gap(19200, 10), 3.5 * 10 / 19200)
        self.assertEqual(rtu.frame_gap(38400), 0.00175)


def rtu_frames(decoder: rtu.RtuDecoder, data: bytes) -> tuple[list[rtu.RtuFrame], int]:
    frames: list[rtu.RtuFrame] = []
    errors = 0
    feed = data
    while True:
        try:
            got = decoder.receive(feed)
        except FrameError as e:
            errors += 1
            assert e.offset is not None
            feed = b""
            continue
        feed = b""
        if not got:
            return frames, errors
        frames.extend(got)


class RtuDecoderTests(unittest.TestCase):
    def test_published_query_decodes_as_a_request(self) -> None:
        frames, errors = rtu_frames(rtu.RtuDecoder(requests=True), RTU_READ_HOLDING_QUERY)
        self.assertEqual(frames, [rtu.RtuFrame(0x11, RTU_READ_HOLDING_QUERY[1:-2])])
        self.assertEqual(errors, 0)

    def test_byte_by_byte(self) -> None:
        response = rtu.encode(0x11, PDU_EXAMPLES["read_holding_registers"][1])
        decoder = rtu.RtuDecoder()
        frames: list[rtu.RtuFrame] = []
        for b in response:
            frames.extend(decoder.receive(bytes([b])))
        self.assertEqual(frames, [rtu.RtuFrame(0x11, response[1:-2])])

    def test_bad_crc_is_dropped_and_the_next_frame_found(self) -> None:
        good = rtu.encode(1, PDU_EXAMPLES["read_input_registers"][1])
        bad = good[:-1] + bytes([good[-1] ^ 1])
        decoder = rtu.RtuDecoder()
        decoder.expected = frozenset({2, 4})
        frames, errors = rtu_frames(decoder, bad + good)
        self.assertEqual(frames, [rtu.RtuFrame(1, good[1:-2])])
        self.assertGreater(errors, 0)

    def test_silence_drops_a_partial_frame(self) -> None:
        decoder = rtu.RtuDecoder()
        good = rtu.encode(1, PDU_EXAMPLES["read_input_registers"][1])
        self.assertEqual(decoder.receive(good[:4]), [])
        self.assertEqual(decoder.silence(), 4)
        self.assertEqual(decoder.receive(good), [rtu.RtuFrame(1, good[1:-2])])

    def test_expected_lengths_drop_a_bogus_byte_count_at_once(self) -> None:
        decoder = rtu.RtuDecoder()
        decoder.expected = frozenset({2, 4})
        good = rtu.encode(1, PDU_EXAMPLES["read_input_registers"][1])
        # 01 03 FF would wait for 255 bytes without the expectation.
        frames, errors = rtu_frames(decoder, bytes.fromhex("0103FF") + good)
        self.assertEqual(errors, 3)  # one per byte of 01 03 FF
        self.assertEqual(frames, [rtu.RtuFrame(1, good[1:-2])])

    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_give_frame_errors_or_checked_frames(self, data: bytes) -> None:
        for requests in (False, True):
            frames, _ = rtu_frames(rtu.RtuDecoder(requests=requests), data)
            for frame in frames:
                self.assertIn(frame.encode(), data)

    @given(st.binary(max_size=40), RESPONSES, st.integers(1, 247))
    def test_a_frame_after_garbage_is_found(self, garbage: bytes, response: pdu.Response,
                                            unit: int) -> None:
        wire = rtu.encode(unit, response.encode())
        decoder = rtu.RtuDecoder()
        decoder.expected = frozenset({2, len(response.encode())})
        frames, _ = rtu_frames(decoder, garbage)
        decoder.silence()
        frames, _ = rtu_frames(decoder, wire)
        self.assertEqual(frames, [rtu.RtuFrame(unit, response.encode())])


def mbap_frames(decoder: tcp.MbapDecoder, data: bytes) -> tuple[list[tcp.TcpFrame], int]:
    frames: list[tcp.TcpFrame] = []
    errors = 0
    feed = data
    while True:
        try:
            got = decoder.receive(feed)
        except FrameError:
            errors += 1
            feed = b""
            continue
        feed = b""
        if not got:
            return frames, errors
        frames.extend(got)


class MbapTests(unittest.TestCase):
    def test_header_layout(self) -> None:
        # MBAP: transaction 0x0001, protocol 0, length 6 (unit + 5-byte PDU), unit 0x11.
        wire = tcp.encode(1, 0x11, PDU_EXAMPLES["read_holding_registers"][0])
        self.assertEqual(wire, bytes.fromhex("0001 0000 0006 11 03 006B 0003"))

    def test_two_frames_in_one_read_and_split_frames(self) -> None:
        a = tcp.encode(7, 1, PDU_EXAMPLES["read_input_registers"][1])
        b = tcp.encode(8, 1, PDU_EXAMPLES["exception"][1])
        decoder = tcp.MbapDecoder()
        self.assertEqual(decoder.receive(a + b[:3]), [tcp.TcpFrame(7, 1, a[7:])])
        self.assertEqual(decoder.receive(b[3:]), [tcp.TcpFrame(8, 1, b[7:])])

    def test_other_protocol_id_is_garbage(self) -> None:
        good = tcp.encode(1, 1, PDU_EXAMPLES["read_input_registers"][1])
        bad = good[:2] + b"\x00\x01" + good[4:]
        frames, errors = mbap_frames(tcp.MbapDecoder(), bad + good)
        self.assertEqual(frames[-1], tcp.TcpFrame(1, 1, good[7:]))
        self.assertGreater(errors, 0)

    def test_a_run_of_junk_costs_one_error_not_one_per_byte(self) -> None:
        # Issue 14: resynchronising dropped one byte per FrameError (0.4 MB/s of junk).
        good = tcp.encode(1, 1, PDU_EXAMPLES["read_input_registers"][1])
        decoder = tcp.MbapDecoder()
        frames, errors = mbap_frames(decoder, b"\xff" * 10_000 + good)
        self.assertEqual((frames, errors), ([tcp.TcpFrame(1, 1, good[7:])], 1))
        self.assertEqual(decoder.skipped, 10_000)

    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_give_frame_errors_or_frames(self, data: bytes) -> None:
        frames, _ = mbap_frames(tcp.MbapDecoder(), data)
        for frame in frames:
            self.assertIn(frame.encode(), data)
