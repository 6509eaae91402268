"""Pushes as field meters send them (issue 17): HDLC frames with or without the LLC header,
segmented over several frames, wrapper frames, the framing told per connection; published
captures of Kaifa, Aidon and Kamstrup HAN pushes (tests/fixtures/dlms, sources named in each
file) decoded through pushframing.py and push.py."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from twisted.trial import unittest

from fep.model import ObisCode, Quality
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms import axdr, hdlc, wrapper
from fep.protocols.dlms.pushframing import (
    MAX_PUSH_APDU,
    FramingProblem,
    PushedApdu,
    PushStream,
)
from tests.protocols.dlms.fixtures import hex_fixture

KAIFA_LIST3 = "hdlc_kaifa_push_1.txt"  # KFM_001 three-phase list 3, bare values
KAIFA_SE = "hdlc_kaifa_push_2.txt"  # Kaifa Swedish list: OBIS/value pairs
AIDON_SE = "hdlc_ui_push.txt"  # Aidon Swedish list: 579-byte UI frame, structures
AIDON_LIST2 = "aidon_han_list2.hex"
KAIFA_LIST1 = "kaifa_han_list1.hex"
KAMSTRUP_LIST1 = "kamstrup_han_list1.hex"
KAMSTRUP_SE = "kamstrup_han_se_list.hex"
PUBLISHED = (KAIFA_LIST3, KAIFA_SE, AIDON_SE, AIDON_LIST2, KAIFA_LIST1, KAMSTRUP_LIST1,
             KAMSTRUP_SE)


def apdus(items: list[object]) -> list[PushedApdu]:
    return [i for i in items if isinstance(i, PushedApdu)]


def problems(items: list[object]) -> list[FramingProblem]:
    return [i for i in items if isinstance(i, FramingProblem)]


def published_apdu(name: str) -> bytes:
    frame = hdlc.decode_frame(hex_fixture(name))
    return frame.information[3:]  # after the LLC header E6 E7 00


def segments(apdu: bytes, size: int, *, llc: bytes = hdlc.LLC_RESPONSE,
             source: hdlc.HdlcAddress | None = None) -> bytes:
    """``apdu`` as a meter segments it: UI frames of ``size`` information bytes, the
    segmentation bit on all but the last."""
    payload = llc + apdu
    parts = [payload[i : i + size] for i in range(0, len(payload), size)]
    return b"".join(
        hdlc.encode_frame(hdlc.HdlcFrame(
            hdlc.FrameKind.UI, hdlc.HdlcAddress(16), source or hdlc.HdlcAddress(32),
            segmented=n < len(parts) - 1, information=part))
        for n, part in enumerate(parts)
    )


class FramingDetectionTests(unittest.TestCase):
    def test_every_published_hdlc_push_gives_its_apdu(self) -> None:
        for name in PUBLISHED:
            stream = PushStream()
            items = stream.receive(hex_fixture(name))
            self.assertEqual(stream.framing, "hdlc", name)
            (pushed,) = apdus(items)
            self.assertEqual(pushed.apdu, published_apdu(name), name)
            self.assertTrue(pushed.address.startswith("hdlc:"), name)
            self.assertIsInstance(A.decode_apdu(pushed.apdu), A.DataNotification)

    def test_the_hdlc_source_address_names_the_sender(self) -> None:
        (kamstrup,) = apdus(PushStream().receive(hex_fixture(KAMSTRUP_LIST1)))
        self.assertEqual(kamstrup.address, "hdlc:16")  # 0x21: logical address 16
        (aidon,) = apdus(PushStream().receive(hex_fixture(AIDON_LIST2)))
        self.assertEqual(aidon.address, "hdlc:4/65")
        (kaifa,) = apdus(PushStream().receive(hex_fixture(KAIFA_LIST1)))
        self.assertEqual(kaifa.address, "hdlc:1/0")

    def test_wrapper_frames_are_told_by_their_version(self) -> None:
        apdu = published_apdu(KAMSTRUP_LIST1)
        stream = PushStream()
        (pushed,) = apdus(stream.receive(wrapper.encode_wrapper(wrapper.WrapperFrame(1, 16, apdu))))
        self.assertEqual(stream.framing, "wrapper")
        self.assertEqual((pushed.apdu, pushed.address, pushed.wport), (apdu, "wport:1", 1))

    def test_the_framing_is_decided_per_connection_byte_by_byte(self) -> None:
        data = b"\x7e\x7e" + hex_fixture(KAIFA_LIST3) + hex_fixture(KAIFA_LIST3)
        stream = PushStream()
        items: list[object] = []
        for i in range(len(data)):
            items += stream.receive(data[i : i + 1])
        self.assertEqual(len(apdus(items)), 2)
        self.assertEqual(problems(items), [])

    def test_hdlc_push_without_the_llc_header(self) -> None:
        apdu = published_apdu(AIDON_LIST2)
        frame = hdlc.encode_frame(hdlc.HdlcFrame(
            hdlc.FrameKind.UI, hdlc.HdlcAddress(16), hdlc.HdlcAddress(1), information=apdu))
        (pushed,) = apdus(PushStream().receive(frame))
        self.assertEqual(pushed.apdu, apdu)

    def test_request_llc_header_is_taken_too(self) -> None:
        apdu = published_apdu(AIDON_LIST2)
        (pushed,) = apdus(PushStream().receive(segments(apdu, 2000, llc=hdlc.LLC_REQUEST)))
        self.assertEqual(pushed.apdu, apdu)


class SegmentationTests(unittest.TestCase):
    def test_an_apdu_segmented_over_several_frames_is_joined(self) -> None:
        apdu = published_apdu(AIDON_SE)  # 570 bytes
        data = segments(apdu, 200)
        self.assertEqual(data.count(b"\x7e\xa8"), 2)  # two frames with the segmentation bit
        (pushed,) = apdus(PushStream().receive(data))
        self.assertEqual(pushed.apdu, apdu)

    def test_truncated_segments_are_a_problem_and_the_next_push_is_kept(self) -> None:
        apdu = published_apdu(AIDON_SE)
        cut = segments(apdu, 200)
        first_segment = hdlc.HdlcFrameDecoder().receive(cut)[0]
        self.assertTrue(first_segment.segmented)
        data = hdlc.encode_frame(first_segment) + hex_fixture(KAMSTRUP_LIST1)
        items = PushStream().receive(data)
        self.assertEqual([type(i) for i in items], [FramingProblem, PushedApdu])
        self.assertIn("broken off after 200 bytes", items[0].detail)  # type: ignore[union-attr]
        self.assertEqual(apdus(items)[0].apdu, published_apdu(KAMSTRUP_LIST1))

    def test_segments_left_open_at_the_end_of_the_connection_are_a_problem(self) -> None:
        stream = PushStream()
        data = segments(published_apdu(AIDON_SE), 200)
        self.assertEqual(apdus(stream.receive(data[:-10])), [])
        cut_short, broken = stream.close()
        assert isinstance(cut_short, FramingProblem) and isinstance(broken, FramingProblem)
        self.assertIn("cut short", cut_short.detail)
        self.assertIn("connection ended", broken.detail)

    def test_a_bad_frame_among_segments_breaks_the_apdu_off(self) -> None:
        data = bytearray(segments(published_apdu(AIDON_SE), 200))
        data[250] ^= 0xFF  # inside the second segment: its FCS fails
        items = PushStream().receive(bytes(data))
        self.assertEqual(apdus(items), [])
        self.assertTrue(problems(items))

    def test_reassembly_is_bounded(self) -> None:
        frame = hdlc.encode_frame(hdlc.HdlcFrame(
            hdlc.FrameKind.UI, hdlc.HdlcAddress(16), hdlc.HdlcAddress(1), segmented=True,
            information=b"\x0f" + bytes(2000)))
        stream = PushStream()
        items: list[object] = []
        for _ in range(MAX_PUSH_APDU // 2000 + 2):
            items += stream.receive(frame)
            self.assertLess(stream.buffered, MAX_PUSH_APDU + 2100)
        self.assertTrue(any("over" in p.detail for p in problems(items)))
        self.assertEqual(apdus(items), [])

    def test_frames_that_carry_no_push_are_problems(self) -> None:
        snrm = hdlc.encode_frame(hdlc.HdlcFrame(
            hdlc.FrameKind.SNRM, hdlc.HdlcAddress(1), hdlc.HdlcAddress(16)))
        items = PushStream().receive(snrm + hex_fixture(KAIFA_LIST1))
        self.assertEqual([type(i) for i in items], [FramingProblem, PushedApdu])


def notification(name: str) -> A.DataNotification:
    message = A.decode_apdu(published_apdu(name))
    assert isinstance(message, A.DataNotification)
    return message


class PublishedListTests(unittest.TestCase):
    """The readings of each published capture: OBIS codes, scalers, units and times."""

    def by_obis(self, name: str, deviation: int | None = -120) -> dict[str, object]:
        from fep.protocols.dlms.push import decode_push

        content = decode_push("m", notification(name), default_deviation=deviation)
        self.content = content
        return {str(r.obis): (r.value, r.unit_text) for r in content.readings}

    def test_kaifa_list3_bare_values_by_the_kfm001_layout(self) -> None:
        values = self.by_obis(KAIFA_LIST3)
        self.assertEqual(values["1-1:0.2.129*255"], ("KFM_001", None))
        self.assertEqual(values["0-0:96.1.0*255"], ("7340157011253544", None))
        self.assertEqual(values["1-0:1.7.0*255"], (Decimal(1103), "W"))
        self.assertEqual(values["1-0:31.7.0*255"], (Decimal("2.191"), "A"))
        self.assertEqual(values["1-0:32.7.0*255"], (Decimal("226.6"), "V"))
        self.assertEqual(values["1-0:1.8.0*255"], (Decimal(146883017), "Wh"))
        self.assertEqual(values["1-0:4.8.0*255"], (Decimal(20009365), "varh"))
        self.assertNotIn("0-0:1.0.0*255", values)  # the clock: the readings' meter time
        # 2023-09-04 16:52 Norwegian summer time, no deviation sent: UTC+2.
        self.assertEqual(self.content.meter_time, datetime(2023, 9, 4, 14, 52, tzinfo=UTC))
        self.assertEqual(self.content.serial, "7340157011253544")
        self.assertEqual(len(values), 17)

    def test_kaifa_list1_single_value(self) -> None:
        values = self.by_obis(KAIFA_LIST1)
        self.assertEqual(values, {"1-0:1.7.0*255": (Decimal(0x157E), "W")})

    def test_kaifa_swedish_pairs_take_the_kfm001_scalers(self) -> None:
        values = self.by_obis(KAIFA_SE)
        self.assertEqual(values["1-0:31.7.0*255"], (Decimal("0.446"), "A"))
        voltage = values["1-0:32.7.0*255"]
        assert isinstance(voltage, tuple)
        self.assertEqual(voltage[1], "V")
        self.assertTrue(200 < voltage[0] < 260, voltage)

    def test_aidon_structures_carry_their_own_scalers(self) -> None:
        values = self.by_obis(AIDON_LIST2)
        self.assertEqual(values["1-0:1.7.0*255"], (Decimal(1362), "W"))
        self.assertEqual(values["1-0:31.7.0*255"], (Decimal("9.3"), "A"))
        self.assertEqual(values["1-0:32.7.0*255"], (Decimal("250.0"), "V"))
        self.assertEqual(self.content.serial, "7359992890941742")

    def test_aidon_swedish_list_clock_entry_gives_the_time(self) -> None:
        self.by_obis(AIDON_SE, deviation=-60)
        # 0-0:1.0.0.255 = 2019-12-16 07:59:40, no deviation: CET is UTC+1.
        self.assertEqual(self.content.meter_time, datetime(2019, 12, 16, 6, 59, 40, tzinfo=UTC))

    def test_kamstrup_pairs_take_the_kamstrup_layout(self) -> None:
        values = self.by_obis(KAMSTRUP_SE, deviation=-60)
        self.assertEqual(values["1-1:1.7.0*255"], (Decimal(826), "W"))
        self.assertEqual(values["1-1:31.7.0*255"], (Decimal("2.37"), "A"))
        self.assertEqual(values["1-1:72.7.0*255"], (Decimal(236), "V"))
        self.assertEqual(self.content.meter_time, datetime(2022, 1, 24, 17, 58, 50, tzinfo=UTC))
        self.assertEqual(self.content.serial, "5706567326590407")
        self.assertEqual(self.content.list_identifier, "Kamstrup_V0001")


class DateTimeValueTests(unittest.TestCase):
    """A COSEM date-time sent as an octet-string of 12 becomes a time wherever the class and
    attribute (or the layout) say it is one; never hex."""

    STAMP = axdr.CosemDateTime.decode(bytes.fromhex("07e7090401103400ff ffc4 80"))

    def test_capture_time_of_an_extended_register(self) -> None:
        from fep.protocols.dlms.cosem import register_reading

        value = axdr.octet_string(self.STAMP.encode())
        reading = register_reading("m", ObisCode(1, 0, 1, 6, 0, 255), value, None,
                                   class_id=4, attribute=5)
        # 16:52 local at deviation -60 (Blue Book: UTC = local + deviation): 15:52 UTC.
        self.assertEqual(reading.value, "2023-09-04T15:52:00+00:00")
        self.assertEqual(reading.quality, Quality.DST)  # clock status 0x80

    def test_an_octet_string_that_is_no_date_time_stays_hex(self) -> None:
        from fep.protocols.dlms.cosem import register_reading

        value = axdr.octet_string(self.STAMP.encode())
        reading = register_reading("m", ObisCode(0, 0, 96, 1, 0, 255), value, None)
        self.assertEqual(reading.value, self.STAMP.encode().hex())

    def test_a_layout_date_time_item(self) -> None:
        from fep.protocols.dlms.layouts import parse_layouts, table_of
        from fep.protocols.dlms.push import decode_push

        table = table_of(parse_layouts(
            "[t]\nidentifier = T1\nitems =\n 0-0:96.1.0.255\n 1-0:1.6.0.255 date-time\n"))
        body = axdr.structure(axdr.visible_string("T1"), axdr.octet_string(self.STAMP.encode()))
        content = decode_push("m", A.DataNotification(body), layouts=table)
        stamp = next(r for r in content.readings if str(r.obis) == "1-0:1.6.0*255")
        self.assertEqual(stamp.value, "2023-09-04T15:52:00+00:00")
