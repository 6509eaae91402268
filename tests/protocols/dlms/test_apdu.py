"""xDLMS APDUs: published request/response bytes, round-trips of every APDU, and arbitrary
bytes giving an APDU or a FrameError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.model import ObisCode
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms import axdr
from fep.protocols.dlms.axdr import CosemDate, CosemDateTime, CosemTime, Data, DataType
from tests.protocols.dlms.fixtures import hex_fixture
from tests.protocols.dlms.strategies import apdus
from tests.scale import examples

CLOCK = A.AttributeDescriptor(8, ObisCode.parse("0-0:1.0.0*255"), 2)


class PublishedApduTests(unittest.TestCase):
    def test_get_clock_time(self) -> None:
        # Green Book, security suite 0 example: the plaintext is a GET of the clock's time
        # (class 8, 0.0.1.0.0.255, attribute 2) with invoke-id-and-priority 00.
        raw = bytes.fromhex("C0010000080000010000FF0200")
        request = A.decode_apdu(raw)
        self.assertEqual(request, A.GetRequest(CLOCK, None, invoke=0x00))
        self.assertEqual(A.encode_apdu(request), raw)

    def test_kamstrup_data_notification(self) -> None:
        frame = hex_fixture("kamstrup_han_list1.hex")
        raw = frame[11:-3]
        notification = A.decode_apdu(raw)
        assert isinstance(notification, A.DataNotification)
        self.assertEqual(notification.long_invoke, 0)
        assert notification.date_time is not None
        self.assertEqual(notification.date_time.date, CosemDate(2017, 10, 20, 5))
        self.assertEqual(len(notification.body), 25)
        self.assertEqual(A.encode_apdu(notification), raw)

    def test_notification_without_date_time(self) -> None:
        raw = bytes.fromhex("0F400000000002011203E8")
        notification = A.decode_apdu(raw)
        self.assertEqual(
            notification,
            A.DataNotification(axdr.structure(axdr.long_unsigned(1000)), None, 0x40000000),
        )
        self.assertEqual(A.encode_apdu(notification), raw)

    def test_get_response_with_data_access_error(self) -> None:
        response = A.decode_apdu(bytes.fromhex("C401C10104"))
        self.assertEqual(response, A.GetResponse(A.GetResult(error=4), 0xC1))
        self.assertEqual(A.result_name(4), "object-undefined")
        self.assertEqual(A.result_name(77), "result 77")

    def test_get_response_block(self) -> None:
        response = A.decode_apdu(bytes.fromhex("C402C100000000010003010203"))
        self.assertEqual(response, A.GetResponseBlock(False, 1, raw=b"\x01\x02\x03"))

    def test_range_selection_bytes(self) -> None:
        start = CosemDateTime(CosemDate(2024, 1, 1, None), CosemTime(0, 0, 0, 0), 0, None)
        end = CosemDateTime(CosemDate(2024, 1, 2, None), CosemTime(0, 0, 0, 0), 0, None)
        request = A.GetRequest(
            A.AttributeDescriptor(7, ObisCode.parse("1-0:99.1.0*255"), 2),
            A.range_selection(start, end),
        )
        raw = A.encode_apdu(request)
        # selector 1, structure of 4: the clock column, from, to, an empty column list
        self.assertEqual(
            raw.hex(),
            "c001c1"
            "0007"
            "0100630100ff"
            "02"
            "01"
            "01"
            "0204"
            "0204"
            "120008"
            "09060000010000ff"
            "0f02"
            "120000"
            "090c"
            "07e80101ff"
            "00000000"
            "0000"
            "ff"
            "090c"
            "07e80102ff"
            "00000000"
            "0000"
            "ff"
            "0100",
        )
        self.assertEqual(A.decode_apdu(raw), request)

    def test_exception_response_describes_itself(self) -> None:
        response = A.decode_apdu(bytes.fromhex("D80106"))
        assert isinstance(response, A.ExceptionResponseApdu)
        self.assertEqual(response.describe(), "service-not-allowed, invocation-counter-error")

    def test_confirmed_service_error_describes_itself(self) -> None:
        response = A.decode_apdu(bytes.fromhex("0E010601"))
        assert isinstance(response, A.ConfirmedServiceErrorApdu)
        self.assertEqual(response.describe(), "initiate: initiate dlms-version-too-low")

    def test_acse_and_ciphered_tags_are_named(self) -> None:
        with self.assertRaises(FrameError) as caught:
            A.decode_apdu(bytes.fromhex("6100"))
        self.assertIn("AARE", str(caught.exception))
        with self.assertRaises(FrameError) as caught:
            A.decode_apdu(bytes.fromhex("CC00"))
        self.assertIn("ciphered", str(caught.exception))


class RoundTripTests(unittest.TestCase):
    @settings(max_examples=examples(500))
    @given(apdus)
    def test_every_apdu_round_trips(self, apdu: A.Apdu) -> None:
        raw = A.encode_apdu(apdu)
        decoded = A.decode_apdu(raw)
        self.assertEqual(A.encode_apdu(decoded), raw)

    @settings(max_examples=examples(1500))
    @given(st.sampled_from([t.value for t in A.Tag]), st.binary(max_size=120))
    def test_arbitrary_bodies_give_an_apdu_or_frame_error(self, tag: int, body: bytes) -> None:
        try:
            A.decode_apdu(bytes((tag,)) + body)
        except FrameError:
            pass

    @given(st.binary(max_size=60))
    def test_arbitrary_bytes(self, raw: bytes) -> None:
        try:
            A.decode_apdu(raw)
        except FrameError:
            pass

    def test_value_types_survive(self) -> None:
        value = Data(DataType.FLOAT64, 1.25)
        raw = A.encode_apdu(A.GetResponse(A.GetResult(data=value)))
        decoded = A.decode_apdu(raw)
        assert isinstance(decoded, A.GetResponse)
        self.assertEqual(decoded.result.data, value)
