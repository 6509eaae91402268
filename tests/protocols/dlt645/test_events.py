"""DL/T 645-2007 event records (DI3 = 03) as MeterEvents.

Record bytes are assembled from the DL/T 645-2007 record layouts (occurrence time, end time,
operator code); no published event record captures were found.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError, ProtocolError
from fep.model import EventKind, Severity
from fep.protocols.dlt645.dataid import (
    EVENT_RECORDS,
    decode_events,
    encode_event_time,
    event_record,
)

T1 = datetime(2024, 5, 17, 5, 45, 30, tzinfo=UTC)  # 13:45:30 in the meter's UTC+8
T2 = datetime(2024, 5, 17, 6, 0, 0, tzinfo=UTC)


class EventRecordTests(unittest.TestCase):
    def test_power_down_gives_outage_and_restoration(self) -> None:
        data = encode_event_time(T1) + encode_event_time(T2)
        events = decode_events(0x03110001, data, meter="m1")
        self.assertEqual(
            [(e.kind, e.time, e.code) for e in events],
            [
                (EventKind.POWER_OUTAGE, T1, "03110000"),
                (EventKind.POWER_RESTORED, T2, "03110000-end"),
            ],
        )

    def test_older_records_file_under_the_same_code(self) -> None:
        data = encode_event_time(T1) + encode_event_time(None)
        (event,) = decode_events(0x03110005, data, meter="m1")
        self.assertEqual(event.code, "03110000")

    def test_power_down_still_going_has_no_restoration(self) -> None:
        data = encode_event_time(T1) + encode_event_time(None)
        self.assertEqual(len(decode_events(0x03110001, data, meter="m1")), 1)

    def test_empty_record_gives_no_events(self) -> None:
        self.assertEqual(decode_events(0x03110001, bytes(12), meter="m1"), [])

    def test_cover_open_is_critical_and_keeps_its_energy_snapshot_undecoded(self) -> None:
        data = encode_event_time(T1) + encode_event_time(T2) + bytes(48)
        (event,) = decode_events(0x03300D01, data, meter="m1")
        self.assertEqual(
            (event.kind, event.severity, event.time), (EventKind.COVER_OPEN, Severity.CRITICAL, T1)
        )

    def test_time_change_is_filed_at_the_time_before(self) -> None:
        data = bytes.fromhex("78563412") + encode_event_time(T1) + encode_event_time(T2)
        (event,) = decode_events(0x03300401, data, meter="m1")
        self.assertEqual((event.kind, event.time), (EventKind.CLOCK_SET, T1))

    def test_short_record_is_a_frame_error_naming_the_di(self) -> None:
        with self.assertRaises(FrameError) as cm:
            decode_events(0x03110001, bytes(11), meter="m1")
        self.assertEqual(cm.exception.field, "DI 03110001")

    def test_impossible_time_is_a_frame_error(self) -> None:
        data = bytes.fromhex("000000321324") + bytes(6)
        self.assertRaises(FrameError, decode_events, 0x03110001, data, meter="m1")

    def test_count_di_is_no_event_record(self) -> None:
        self.assertIsNone(event_record(0x03110000))
        self.assertRaises(ProtocolError, decode_events, 0x03110000, bytes(3), meter="m1")

    @given(st.sampled_from(EVENT_RECORDS), st.integers(1, 10), st.binary(max_size=70))
    def test_arbitrary_bytes_give_events_or_a_frame_error(self, record, n, raw) -> None:
        try:
            events = decode_events(record.base | n, raw, meter="m1")
        except FrameError:
            return
        self.assertTrue(all(e.code.startswith(record.code) for e in events))
