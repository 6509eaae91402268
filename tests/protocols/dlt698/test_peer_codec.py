"""DL/T 698.45 bytes the ``dlt698`` package (test-only) encodes are decoded by fep and encoded
back byte for byte, and fep's bytes are taken by the package's decoders: frames (with every
address type and the scrambling flag), the CRC, typed data and the APDUs of reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from twisted.trial import unittest

from fep.protocols.dlt698.apdu import (
    GetKind,
    GetRecord,
    GetRequest,
    ProxyRequest,
    ProxyResponse,
    ProxyTarget,
    ResultNormal,
    ResultRecord,
    decode_apdu,
    encode_apdu,
)
from fep.protocols.dlt698.data import (
    CSD,
    OAD,
    Data,
    DataType,
    decode_data,
    encode_data,
    selector9,
    tsa_from_address,
)
from fep.protocols.dlt698.frames import (
    AddressType,
    Frame,
    ServerAddress,
    control,
    crc16,
    decode_frame,
    split_apdu,
)
from tests.protocols.dlt698.published import APDUS, FRAMES
from tests.system import require_module


def peer() -> Any:
    return require_module("dlt698", pip="dlt698")


class FramesTests(unittest.TestCase):
    def test_the_crc_agrees(self) -> None:
        from dlt698 import codec

        peer()
        for data in (b"123456789", b"", bytes(range(256)), *FRAMES.values()):
            self.assertEqual(crc16(data), codec.crc16(data))

    def test_frames_the_package_encodes_round_trip_in_fep(self) -> None:
        from dlt698 import _native as n
        from dlt698 import codec

        peer()
        cases = [
            (n.AddressType.single, bytes.fromhex("563412000000"), 0, 0x43, 0),
            (n.AddressType.single, bytes.fromhex("0709190516200113"), 3, 0xC3, 0x10),
            (n.AddressType.wildcard, b"\xaa" * 6, 0, 0x43, 0),
            (n.AddressType.group, b"\x01\x02\x03", 2, 0x43, 1),
            (n.AddressType.broadcast, b"\xaa", 0, 0x43, 0),
            (n.AddressType.single, b"\x01", 0, 0x4B, 0),  # scrambled user data
            (n.AddressType.single, b"\x01", 0, 0x81, 0),  # link management
        ]
        for kind, address, logical, ctrl, client in cases:
            payload = APDUS["apdu_get_record_request"]
            frame = codec.Frame(client=client, control=ctrl, payload=payload,
                                server=n.ServerAddress(bytes=address, logical=logical,
                                                       type=kind))  # fmt: skip
            raw = codec.encode_frame(frame)
            mine = decode_frame(raw)
            self.assertEqual(mine.encode(), raw)
            self.assertEqual((mine.server.type, mine.server.logical, mine.server.wire),
                             (AddressType(int(kind)), logical, address))
            self.assertEqual(mine.data, payload)  # unscrambled when the flag says so

    def test_frames_fep_encodes_are_taken_by_the_package(self) -> None:
        from dlt698 import codec

        peer()
        for ctrl in (control(), control(from_server=True), control(scrambled=True)):
            frame = Frame(ctrl, ServerAddress("000000123456"), 0x10, APDUS["apdu_release_request"])
            theirs = codec.decode_frame(frame.encode())
            self.assertEqual((theirs.control, theirs.client, theirs.payload),
                             (ctrl, 0x10, APDUS["apdu_release_request"]))
            self.assertEqual(theirs.server.bytes, bytes.fromhex("563412000000"))

    def test_fep_fragments_are_the_packages(self) -> None:
        from dlt698.protocol import link

        peer()
        for fragment in split_apdu(bytes(range(100)), 30):
            theirs = link.decode_fragment(fragment.encode())
            self.assertEqual((theirs.sequence, int(theirs.type), theirs.data),
                             (fragment.sequence, int(fragment.type), fragment.data))


class DataAndApduTests(unittest.TestCase):
    def test_typed_data_both_ways(self) -> None:
        d = peer()
        theirs = [
            d.Data.array([d.Data.uint32(123456), d.Data.uint32(0)]),
            d.Data.structure([d.Data.int32(-5), d.Data.date_time_s([7, 232, 2, 29, 23, 59, 0])]),
            d.Data.visible_string("fep"),
            d.Data.octet_string(b"\x01\x02"),
            d.Data.int64(-(2**40)),
            d.Data.uint8(7),
            d.Data.boolean(True),
            d.Data.null(),
        ]
        for value in theirs:
            raw = d.encode_data(value)
            mine, end = decode_data(raw)
            self.assertEqual((encode_data(mine), end), (raw, len(raw)))
            self.assertEqual(d.decode_data(encode_data(mine)), value)

    def test_read_requests_fep_sends_are_what_the_package_decodes(self) -> None:
        d = peer()
        from dlt698 import codec

        request = GetRequest(GetKind.NORMAL_LIST, 9, (OAD(0x0010, 2), OAD(0x2000, 2)))
        theirs = codec.decode_apdu(encode_apdu(request))
        self.assertEqual([(a.oi, a.attribute, a.index) for a in theirs.attributes],
                         [(0x0010, 2, 0), (0x2000, 2, 0)])
        self.assertEqual(theirs.piid, 9)
        record = GetRequest(GetKind.RECORD, 3, records=(GetRecord(
            OAD(0x5004, 2), selector9(1), (CSD(oad=OAD(0x2021, 2)),)),))  # fmt: skip
        raw = encode_apdu(record)
        self.assertEqual(codec.encode_apdu(codec.decode_apdu(raw)), raw)
        self.assertIsNotNone(d)

    def test_published_apdus_are_the_same_to_both(self) -> None:
        from dlt698 import codec

        peer()
        for name, raw in APDUS.items():
            self.assertEqual(codec.encode_apdu(codec.decode_apdu(raw)), raw, name)
            self.assertEqual(encode_apdu(decode_apdu(raw)), raw, name)

    def test_proxy_requests_and_responses_are_the_packages(self) -> None:
        from dlt698 import codec

        peer()
        tsa = tsa_from_address("000000000001")
        record = GetRecord(OAD(0x5004, 2), selector9(1), (CSD(oad=OAD(0x2021, 2)),))
        row = (Data.date_time_s(datetime(2026, 11, 30)),)
        for apdu in (
            ProxyRequest(1, 1, 60, (ProxyTarget(tsa, 30, (OAD(0x0010, 2), OAD(0x2000, 2))),
                                    ProxyTarget(tsa_from_address("000000000002"), 30,
                                                (OAD(0x0010, 2),)))),
            ProxyRequest(2, 2, 30, tsa=tsa, record=record),
            ProxyResponse(1, 1, ((tsa, (ResultNormal(OAD(0x2000, 2), Data.array(
                [Data(DataType.LONG_UNSIGNED, 2201)])), ResultNormal(OAD(0x0010, 2), dar=33))),)),
            ProxyResponse(2, 2, tsa=tsa, record=ResultRecord(OAD(0x5004, 2), record.rcsd,
                                                             (row,))),
        ):
            raw = encode_apdu(apdu)
            self.assertEqual(codec.encode_apdu(codec.decode_apdu(raw)), raw, type(apdu))

    def test_a_value_fep_builds_is_the_packages(self) -> None:
        d = peer()
        mine = Data.array([Data(DataType.LONG_UNSIGNED, 2201)])
        self.assertEqual(d.decode_data(encode_data(mine)), d.Data.array([d.Data.uint16(2201)]))
