"""DL/T 645 services: request frames, response decoders, abnormal answers as named errors."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError, ProtocolError
from fep.protocols.dlt645 import services
from fep.protocols.dlt645.frames import Frame, decode_frame
from fep.protocols.dlt645.services import (
    ErrorStatus,
    MeterErrorResponse,
    NoRequestedData,
    Password,
    Unauthorized,
)
from tests.protocols.dlt645.published import FRAMES

METER = "398192000337"
PASSWORD = Password(2, "123456")


class PublishedRequestTests(unittest.TestCase):
    def test_read_data_builds_the_issue_request(self) -> None:
        frame = services.read_data(METER, 0x00010000)
        self.assertEqual(frame.encode(), FRAMES["read_total_forward_active_request"])

    def test_read_address_builds_the_issue_broadcast(self) -> None:
        self.assertEqual(services.read_address().encode(), FRAMES["broadcast_read_address"])

    def test_read_data_with_preamble_builds_the_luat_request(self) -> None:
        frame = services.read_data("12345678", 0x00010000)
        self.assertEqual(frame.encode(preamble=4), FRAMES["luat_read_total_forward_active_request"])

    def test_1997_read_builds_the_kaledl_request(self) -> None:
        frame = services.read_data_1997("3430163", 0x9010)
        self.assertEqual(frame.encode(), FRAMES["kaledl_1997_read_9010_request"])

    def test_1997_read_builds_the_heyuan_request(self) -> None:
        frame = services.read_data_1997("3", 0xB611)
        self.assertEqual(frame.encode(), FRAMES["heyuan_1997_read_b611_request"])


class RequestLayoutTests(unittest.TestCase):
    def test_read_follow_up_appends_the_frame_number(self) -> None:
        frame = services.read_follow_up(METER, 0x00010000, 2)
        self.assertEqual((frame.control, frame.data), (0x12, bytes.fromhex("0000010002")))

    def test_load_profile_read_carries_block_count_and_start(self) -> None:
        frame = services.read_data(METER, 0x06000001, blocks=4, since=datetime(2024, 5, 17, 13, 45))
        self.assertEqual(frame.data, bytes.fromhex("01000006 04 4513170524"))

    def test_write_data_puts_password_and_operator_before_the_value(self) -> None:
        frame = services.write_data(METER, 0x04000102, b"\x00\x30\x12", PASSWORD, "12345678")
        self.assertEqual(frame.control, 0x14)
        self.assertEqual(frame.data, bytes.fromhex("02010004 02563412 78563412 003012"))

    def test_broadcast_time_sync_goes_to_99_with_ss_mm_hh_dd_mm_yy(self) -> None:
        frame = services.broadcast_time_sync(datetime(2024, 5, 17, 13, 45, 30))
        self.assertEqual(
            (frame.address, frame.control, frame.data),
            ("999999999999", 0x08, bytes.fromhex("304513170524")),
        )

    def test_freeze_now_is_all_99(self) -> None:
        self.assertEqual(services.freeze(METER).data, b"\x99" * 4)

    def test_daily_freeze_sends_minute_and_hour(self) -> None:
        frame = services.freeze(METER, hour=23, minute=59)
        self.assertEqual((frame.control, frame.data), (0x16, bytes.fromhex("59239999")))

    def test_change_baud_sets_the_rate_bit(self) -> None:
        frame = services.change_baud(METER, 9600)
        self.assertEqual((frame.control, frame.data), (0x17, b"\x20"))

    def test_change_baud_to_an_unknown_rate_is_refused(self) -> None:
        self.assertRaises(ValueError, services.change_baud, METER, 1000)

    def test_change_password_names_the_new_level_in_its_di(self) -> None:
        frame = services.change_password(METER, Password(0, "000000"), Password(2, "654321"))
        self.assertEqual(frame.data, bytes.fromhex("030C0004 00000000 02214365"))

    def test_max_demand_reset_sends_password_and_operator(self) -> None:
        frame = services.max_demand_reset(METER, PASSWORD, "1")
        self.assertEqual((frame.control, frame.data), (0x19, bytes.fromhex("0256341201000000")))

    def test_meter_reset_is_function_1a(self) -> None:
        self.assertEqual(services.meter_reset(METER, PASSWORD).control, 0x1A)

    def test_event_reset_of_everything_ends_with_ffffffff(self) -> None:
        frame = services.event_reset(METER, PASSWORD)
        self.assertEqual((frame.control, frame.data[-4:]), (0x1B, b"\xff" * 4))


class ResponseTests(unittest.TestCase):
    def test_issue_response_reads_its_di_and_data(self) -> None:
        request = services.read_data(METER, 0x00010000)
        frame = services.check_response(
            decode_frame(FRAMES["read_total_forward_active_response"]), request
        )
        result = services.decode_read(frame, 0x00010000)
        self.assertEqual(
            (result.di, result.data, result.follow_up), (0x00010000, b"\x04\0\0\0", False)
        )

    def test_1997_response_reads_its_two_byte_di(self) -> None:
        request = services.read_data_1997("138000130754", 0x9010)
        frame = services.check_response(
            decode_frame(FRAMES["kaledl_1997_read_9010_response"]), request
        )
        self.assertEqual(services.decode_read(frame).di, 0x9010)

    def test_follow_up_answer_gives_its_frame_number(self) -> None:
        request = services.read_follow_up(METER, 0x06000001, 1)
        answer = services.response(request, bytes.fromhex("01000006 AABB 01"), follow_up=True)
        result = services.decode_read(services.check_response(answer, request))
        self.assertEqual((result.data, result.seq, result.follow_up), (b"\xaa\xbb", 1, True))

    def test_answer_for_another_di_is_a_frame_error(self) -> None:
        request = services.read_data(METER, 0x00010000)
        answer = services.response(request, bytes.fromhex("00000200 00000000"))
        with self.assertRaises(FrameError) as cm:
            services.decode_read(answer, 0x00010000)
        self.assertEqual(cm.exception.field, "DI")

    def test_read_address_answer_gives_the_meter_address(self) -> None:
        answer = Frame("398192000337", 0x93, bytes.fromhex("370300928139"))
        self.assertEqual(services.decode_read_address(answer), "398192000337")

    def test_change_baud_answer_gives_the_rate(self) -> None:
        answer = services.response(services.change_baud(METER, 2400), b"\x08")
        self.assertEqual(services.decode_change_baud(answer), 2400)

    def test_change_password_answer_gives_the_new_password(self) -> None:
        request = services.change_password(METER, PASSWORD, Password(4, "000111"))
        answer = services.response(request, Password(4, "000111").encode())
        self.assertEqual(services.decode_change_password(answer), Password(4, "000111"))

    def test_answer_from_another_meter_is_a_protocol_error(self) -> None:
        request = services.read_data(METER, 0x00010000)
        answer = Frame("000000000001", 0x91, bytes(8))
        self.assertRaises(ProtocolError, services.check_response, answer, request)

    def test_answer_to_another_function_is_a_protocol_error(self) -> None:
        request = services.read_data(METER, 0x00010000)
        answer = services.response(services.read_address(), bytes(6))
        self.assertRaises(ProtocolError, services.check_response, answer, request)

    def test_wildcard_request_accepts_any_answering_address(self) -> None:
        answer = Frame("398192000337", 0x93, bytes.fromhex("370300928139"))
        self.assertIs(services.check_response(answer, services.read_address()), answer)


class ErrorResponseTests(unittest.TestCase):
    def test_no_requested_data_is_its_own_error_naming_the_meter(self) -> None:
        request = services.read_data(METER, 0x00010000)
        with self.assertRaises(NoRequestedData) as cm:
            services.check_response(
                services.refusal(request, ErrorStatus.NO_REQUESTED_DATA), request
            )
        error = cm.exception
        self.assertEqual((error.meter, error.status, error.protocol), (METER, 0x02, "dlt645"))
        self.assertIn("meter 398192000337 refused read data: no requested data", str(error))

    def test_wrong_password_is_unauthorized(self) -> None:
        request = services.write_data(METER, 0x04000102, b"\0\0\0", PASSWORD)
        refusal = services.refusal(request, ErrorStatus.UNAUTHORIZED)
        self.assertRaises(Unauthorized, services.check_response, refusal, request)

    def test_every_set_bit_is_named(self) -> None:
        request = services.change_baud(METER, 9600)
        error = services.error_response(services.refusal(request, 0x09))
        self.assertEqual(error.reasons, ["other error", "baud rate cannot be changed"])
        self.assertIs(type(error), MeterErrorResponse)

    def test_given_meter_name_is_used_in_the_message(self) -> None:
        request = services.read_data(METER, 0x00010000)
        error = services.error_response(services.refusal(request, 0x02), meter="feeder-7")
        self.assertTrue(str(error).startswith("meter feeder-7 refused"))

    def test_1997_wrong_data_identifier_is_no_requested_data(self) -> None:
        request = services.read_data_1997(METER, 0x9010)
        error = services.error_response(services.refusal(request, 0x02))
        self.assertIsInstance(error, NoRequestedData)
        self.assertIn("wrong data identifier", str(error))

    @given(st.integers(0, 255))
    def test_any_status_byte_gives_a_meter_error(self, status: int) -> None:
        request = services.read_data(METER, 0x00010000)
        error = services.error_response(services.refusal(request, status))
        self.assertIsInstance(error, MeterErrorResponse)
        self.assertTrue(error.reasons)


class FieldTests(unittest.TestCase):
    @given(st.integers(0, 255), st.integers(0, 999999).map(lambda n: f"{n:06d}"))
    def test_password_round_trip(self, level: int, code: str) -> None:
        password = Password(level, code)
        self.assertEqual(Password.decode(password.encode()), password)

    @given(st.binary(max_size=8))
    def test_arbitrary_password_bytes_give_a_password_or_a_frame_error(self, raw: bytes) -> None:
        try:
            self.assertIsInstance(Password.decode(raw), Password)
        except FrameError:
            pass

    @given(st.integers(0, 255), st.binary(max_size=20))
    def test_arbitrary_read_answers_give_a_result_or_a_frame_error(
        self, control: int, data: bytes
    ) -> None:
        try:
            result = services.decode_read(Frame(METER, control, data))
        except FrameError:
            return
        self.assertIsInstance(result, services.ReadResult)
