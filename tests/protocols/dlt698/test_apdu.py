"""DL/T 698.45 APDUs and typed data: the published APDUs decoded to what they say and
encoded back byte for byte; every data type round-trips; bad input is a FrameError with
bounded work."""

from __future__ import annotations

import time
from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.dlt698.apdu import (
    ActionRequest,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    GetKind,
    GetRecord,
    GetRequest,
    GetResponse,
    LinkRequest,
    LinkResponse,
    LinkType,
    ProxyRequest,
    ProxyResponse,
    ProxyTarget,
    ReportNotification,
    ReportResponse,
    ResultNormal,
    ResultRecord,
    SecurityRequest,
    SetRequest,
    TimeTag,
    decode_apdu,
    encode_apdu,
)
from fep.protocols.dlt698.data import (
    CSD,
    MS,
    OAD,
    OMD,
    ROAD,
    RSD,
    TI,
    BitString,
    Data,
    DataType,
    Region,
    ScalerUnit,
    decode_data,
    encode_data,
    selector2,
    selector9,
    tsa_address,
    tsa_from_address,
)
from tests.protocols.dlt698.published import APDUS


class PublishedApduTests(unittest.TestCase):
    def test_every_published_apdu_round_trips_byte_for_byte(self) -> None:
        for name, raw in APDUS.items():
            self.assertEqual(encode_apdu(decode_apdu(raw)), raw, name)

    def test_get_normal_response_holds_the_communication_address(self) -> None:
        apdu = decode_apdu(APDUS["apdu_get_normal_response"])
        assert isinstance(apdu, GetResponse)
        self.assertEqual(apdu.kind, GetKind.NORMAL)
        self.assertEqual(apdu.results, (ResultNormal(
            OAD(0x4001, 2), Data(DataType.OCTET_STRING, bytes.fromhex("123456789012"))),))

    def test_get_list_response_voltages_and_currents(self) -> None:
        apdu = decode_apdu(APDUS["apdu_get_list_response"])
        assert isinstance(apdu, GetResponse)
        voltages, currents = apdu.results
        assert voltages.data is not None and currents.data is not None
        self.assertEqual([d.value for d in voltages.data.items], [0x096D] * 3)  # 241.3 V
        self.assertEqual([d.value for d in currents.data.items], [1000] * 3)  # 1.000 A

    def test_record_request_selects_by_frozen_time(self) -> None:
        apdu = decode_apdu(APDUS["apdu_get_record_request"])
        assert isinstance(apdu, GetRequest)
        record = apdu.records[0]
        self.assertEqual(record.oad, OAD(0x5004, 2))
        self.assertEqual(record.rsd.selector, 1)
        oad, value = record.rsd.parameters
        self.assertEqual((oad, value.value), (OAD(0x2021, 2), (2016, 1, 20, 0, 0, 0)))
        self.assertEqual([c.oad for c in record.rcsd], [OAD(0x2021, 2), OAD(0x0010, 2)])

    def test_record_response_rows(self) -> None:
        apdu = decode_apdu(APDUS["apdu_get_record_response"])
        assert isinstance(apdu, GetResponse)
        (result,) = apdu.records
        assert result.rows is not None
        (row,) = result.rows
        self.assertEqual(row[0].tag, DataType.DATE_TIME_S)
        self.assertEqual([d.value for d in row[1].items], [0] * 5)

    def test_record_request_for_a_meter_set_with_selector_4(self) -> None:
        apdu = decode_apdu(APDUS["apdu_get_record_meters_request"])
        assert isinstance(apdu, GetRequest)
        record = apdu.records[0]
        self.assertEqual(record.oad, OAD(0x6012, 3))
        self.assertEqual(record.rsd.selector, 5)
        ms = record.rsd.parameters[1]
        self.assertEqual(ms.choice, 3)
        self.assertEqual(next(tsa_address(t) for t in ms.items), "0000000121")
        self.assertEqual(record.rcsd[-1].road, ROAD(OAD(0x5004, 2),
                                                   (OAD(0x0010, 2), OAD(0x0020, 2))))

    def test_login_and_its_response(self) -> None:
        login = decode_apdu(APDUS["apdu_link_login_request"])
        self.assertEqual(login, LinkRequest(0, LinkType.LOGIN, 180,
                                            (2016, 5, 19, 4, 8, 5, 0, 164)))
        answer = decode_apdu(APDUS["apdu_link_login_response"])
        assert isinstance(answer, LinkResponse)
        self.assertEqual(answer.result, 0x80)  # success, clock trusted
        self.assertEqual(answer.request_time[:7], (2016, 5, 19, 4, 8, 5, 0))

    def test_connect_request_and_response(self) -> None:
        request = decode_apdu(APDUS["apdu_connect_request"])
        assert isinstance(request, ConnectRequest)
        self.assertEqual((request.version, request.send_max, request.timeout, request.mechanism),
                         (0x10, 1024, 100, 0))
        self.assertEqual(encode_apdu(ConnectRequest(0)), APDUS["apdu_connect_request"])
        response = decode_apdu(APDUS["apdu_connect_response"])
        assert isinstance(response, ConnectResponse)
        self.assertEqual(response.factory[:4], b"TOPS")
        self.assertEqual(response.result, 0)

    def test_error_response(self) -> None:
        self.assertEqual(decode_apdu(APDUS["apdu_error_response"]), ErrorResponse(3, 2))

    def test_set_and_action(self) -> None:
        request = decode_apdu(APDUS["apdu_set_normal_request"])
        assert isinstance(request, SetRequest)
        self.assertEqual(request.values[0][0], OAD(0x4000, 2))
        action = decode_apdu(APDUS["apdu_action_normal_request"])
        assert isinstance(action, ActionRequest)
        # OMD 00100100 with parameter integer 0: method 1 (reset) of forward active energy.
        self.assertEqual(action.methods[0], (OMD(0x0010, 1, 0), Data(DataType.INTEGER, 0)))


class ApduEncodingTests(unittest.TestCase):
    def check(self, apdu: object) -> None:
        raw = encode_apdu(apdu)  # type: ignore[arg-type]
        self.assertEqual(decode_apdu(raw), apdu)

    def test_get_requests_of_every_kind(self) -> None:
        record = GetRecord(OAD(0x5004, 2), selector9(1), (CSD(oad=OAD(0x2021, 2)),))
        self.check(GetRequest(GetKind.NORMAL, 1, (OAD(0x0010, 2),)))
        self.check(GetRequest(GetKind.NORMAL_LIST, 2, (OAD(0x0010, 2), OAD(0x2000, 2))))
        self.check(GetRequest(GetKind.RECORD, 3, records=(record,)))
        self.check(GetRequest(GetKind.RECORD_LIST, 4, records=(record, record)))
        self.check(GetRequest(GetKind.NEXT, 5, block=7))
        self.check(GetRequest(GetKind.NORMAL, 6, (OAD(0x0010, 2),),
                              time_tag=TimeTag((2024, 1, 2, 3, 4, 5), TI(1, 5))))

    def test_get_responses_of_every_kind(self) -> None:
        normal = ResultNormal(OAD(0x2000, 2), Data.array([Data(DataType.LONG_UNSIGNED, 2201)]))
        refused = ResultNormal(OAD(0x2001, 2), dar=6)
        record = ResultRecord(OAD(0x5004, 2), (CSD(oad=OAD(0x2021, 2)),),
                              ((Data.date_time_s(datetime(2024, 1, 1)),),))
        self.check(GetResponse(GetKind.NORMAL_LIST, 1, (normal, refused)))
        self.check(GetResponse(GetKind.RECORD, 2, records=(record,)))
        self.check(GetResponse(GetKind.NEXT, 3, (normal,), last=False, block=1))
        self.check(GetResponse(GetKind.NEXT, 3, records=(record,), last=True, block=2))
        self.check(GetResponse(GetKind.NEXT, 3, last=True, block=2, dar=14))

    def test_report_notification_and_response(self) -> None:
        report = ReportNotification(5, (ResultNormal(OAD(0x3011, 2), Data.null()),))
        self.check(report)
        self.check(ReportResponse(5, (OAD(0x3011, 2),)))

    def test_proxy_get_list_and_record(self) -> None:
        tsa = tsa_from_address("000000000001")
        self.assertEqual(tsa.hex(), "05000000000001")
        self.check(ProxyRequest(1, 1, 60, (ProxyTarget(tsa, 30, (OAD(0x0010, 2),)),)))
        record = GetRecord(OAD(0x5004, 2), selector9(1), (CSD(oad=OAD(0x0010, 2)),))
        self.check(ProxyRequest(2, 2, 60, tsa=tsa, record=record))
        self.check(ProxyResponse(1, 1, ((tsa, (ResultNormal(OAD(0x0010, 2), dar=33),)),)))

    def test_proxy_action_list(self) -> None:
        # PROXY ActionRequestList (choice 5): timeout, then per meter its TSA, timeout and
        # methods with parameters; the response per meter its methods' results.
        from fep.protocols.dlt698.apdu import ActionResult, ProxyAction
        from fep.protocols.dlt698.data import OMD

        tsa = tsa_from_address("000000000001")
        request = ProxyRequest(5, 3, 60, actions=(ProxyAction(tsa, 30, (
            (OMD(0x4300, 6), Data.null()),)),))
        self.assertEqual(encode_apdu(request).hex(),
                         "090503003c" "01" "0705000000000001" "001e" "01" "43000600" "00"
                         "00")
        self.check(request)
        self.check(ProxyResponse(5, 3, actions=((tsa, (ActionResult(OMD(0x4300, 6), 0),
                                                       ActionResult(OMD(0x8000, 129), 3,
                                                                    Data.null()))),)))

    def test_security_apdus_carry_their_ciphertext_not_deciphered(self) -> None:
        raw = bytes.fromhex("10 01 08 05 01 01 40 01 02 00 00 01 02 aa bb")
        self.assertEqual(decode_apdu(raw), SecurityRequest(
            bytes.fromhex("0501014001020000"), ciphered=True, rn=b"\xaa\xbb"))
        self.check(decode_apdu(raw))

    def test_bytes_after_an_apdu_are_refused(self) -> None:
        with self.assertRaises(FrameError):
            decode_apdu(APDUS["apdu_release_request"] + b"\x00")

    def test_unknown_tag_and_truncation_are_frame_errors(self) -> None:
        with self.assertRaises(FrameError):
            decode_apdu(b"\x42\x00")
        raw = APDUS["apdu_get_record_response"]
        for n in range(len(raw)):
            with self.assertRaises(FrameError):
                decode_apdu(raw[:n])


def _data() -> st.SearchStrategy[Data]:
    leaves = st.one_of(
        st.just(Data.null()),
        st.booleans().map(lambda b: Data(DataType.BOOL, b)),
        st.integers(-(2**31), 2**31 - 1).map(lambda v: Data(DataType.DOUBLE_LONG, v)),
        st.integers(0, 2**32 - 1).map(lambda v: Data(DataType.DOUBLE_LONG_UNSIGNED, v)),
        st.integers(-128, 127).map(lambda v: Data(DataType.INTEGER, v)),
        st.integers(0, 65535).map(lambda v: Data(DataType.LONG_UNSIGNED, v)),
        st.integers(-(2**63), 2**63 - 1).map(lambda v: Data(DataType.LONG64, v)),
        st.binary(max_size=200).map(lambda v: Data(DataType.OCTET_STRING, v)),
        st.text(st.characters(max_codepoint=126, min_codepoint=32), max_size=20)
        .map(lambda v: Data(DataType.VISIBLE_STRING, v)),
        st.integers(0, 255).map(lambda v: Data(DataType.ENUM, v)),
        st.tuples(st.integers(0, 65535), *[st.integers(0, 255)] * 5)
        .map(lambda v: Data(DataType.DATE_TIME_S, v)),
        st.integers(0, 0xFFFFFFFF).map(
            lambda v: Data(DataType.OAD, OAD(v >> 16, (v >> 8) & 0xFF, v & 0xFF))),
    )
    return st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=5).map(Data.array),
        st.lists(inner, max_size=5).map(Data.structure)), max_leaves=20)


class DataTests(unittest.TestCase):
    @given(_data())
    def test_any_data_round_trips(self, data: Data) -> None:
        raw = encode_data(data)
        self.assertEqual(decode_data(raw), (data, len(raw)))

    def test_the_descriptor_types_round_trip(self) -> None:
        values = [
            Data(DataType.BIT_STRING, BitString(10, b"\xff\xc0")),
            Data(DataType.DATE_TIME, (2024, 3, 1, 5, 8, 0, 0, 999)),
            Data(DataType.DATE, (2024, 3, 1, 5)),
            Data(DataType.TIME, (23, 59, 59)),
            Data(DataType.FLOAT64, 1.5),
            Data(DataType.UTF8_STRING, "电能表"),
            Data(DataType.OMD, OMD(0x4000, 127, 0)),
            Data(DataType.ROAD, ROAD(OAD(0x5004, 2), (OAD(0x0010, 2),))),
            Data(DataType.TI, TI(1, 15)),
            Data(DataType.TSA, tsa_from_address("000000123456")),
            Data(DataType.SCALER_UNIT, ScalerUnit(-2, 30)),
            Data(DataType.REGION, Region(0, Data(DataType.UNSIGNED, 1),
                                         Data(DataType.UNSIGNED, 9))),
            Data(DataType.RSD, selector2(OAD(0x2021, 2), Data.date_time_s(datetime(2024, 1, 1)),
                                         Data.date_time_s(datetime(2024, 1, 2)),
                                         Data(DataType.TI, TI(1, 15)))),
            Data(DataType.RSD, RSD(10, (3, MS(1)))),
            Data(DataType.RSD, RSD(6, ((2024, 1, 1, 0, 0, 0), (2024, 1, 2, 0, 0, 0), TI(2, 1),
                                       MS(4, (1, 2))))),
            Data(DataType.CSD, CSD(road=ROAD(OAD(0x3011, 2), (OAD(0x201E, 2),)))),
            Data(DataType.MS, MS(5, (Region(2, Data(DataType.UNSIGNED, 1),
                                            Data(DataType.UNSIGNED, 3)),))),
            Data(DataType.RCSD, (CSD(oad=OAD(0x2021, 2)),)),
        ]
        for data in values:
            raw = encode_data(data)
            self.assertEqual(decode_data(raw), (data, len(raw)), data.tag.name)

    def test_long_lengths_use_the_axdr_long_form(self) -> None:
        data = Data(DataType.OCTET_STRING, b"x" * 300)
        self.assertEqual(encode_data(data)[:4], b"\x09\x82\x01\x2c")

    def test_unknown_type_names_its_offset(self) -> None:
        with self.assertRaises(FrameError) as caught:
            decode_data(b"\x01\x02\x12\x00\x01\x07")
        self.assertEqual((caught.exception.offset, caught.exception.field), (5, "Data type"))

    def test_counts_beyond_the_input_fail_at_once(self) -> None:
        started = time.process_time()
        with self.assertRaises(FrameError):
            decode_data(b"\x01\x84\x7f\xff\xff\xff" + b"\x00" * 100)
        self.assertLess(time.process_time() - started, 0.5)

    def test_nesting_is_limited(self) -> None:
        with self.assertRaises(FrameError):
            decode_data(b"\x01\x01" * 100 + b"\x00")

    def test_date_time_s_to_datetime(self) -> None:
        from datetime import UTC
        data = Data(DataType.DATE_TIME_S, (2016, 1, 20, 0, 0, 0))
        self.assertEqual(data.to_datetime(UTC), datetime(2016, 1, 20, tzinfo=UTC))
        self.assertIsNone(Data(DataType.DATE_TIME_S, (0xFFFF, 255, 255, 255, 255, 255))
                          .to_datetime(UTC))
