"""COSEM classes into records: registers with scaler and unit, profile buffers into interval
blocks, event logs into events, the object list, pushed Data-Notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from twisted.trial import unittest

from fep.errors import FrameError
from fep.model import EventKind, ObisCode, Quality, Severity
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms import axdr
from fep.protocols.dlms.axdr import Data, DataType
from fep.protocols.dlms.cosem import (
    CaptureObject,
    ScalerUnit,
    decode_capture_objects,
    decode_object_list,
    event_log,
    profile_blocks,
    register_reading,
    scaled_value,
)
from fep.protocols.dlms.layouts import LayoutTable
from fep.protocols.dlms.push import decode_push
from fep.sim import dlms_meter as sim
from tests.protocols.dlms.fixtures import hex_fixture

NOW = datetime(2024, 5, 2, 10, 7, 12, tzinfo=UTC)


def meter() -> sim.SimulatedDlmsMeter:
    return sim.SimulatedDlmsMeter(now=lambda: NOW, history=timedelta(days=2))


class RegisterTests(unittest.TestCase):
    def test_scaler_applied_unit_kept(self) -> None:
        su = ScalerUnit.from_data(axdr.decode_all(bytes.fromhex("02020FFF1623")))
        reading = register_reading("m", sim.VOLTAGE_L1, axdr.long_unsigned(2304), su)
        self.assertEqual(reading.value, Decimal("230.4"))
        self.assertEqual(reading.unit_text, "V")
        self.assertEqual(reading.native_id, "3/1.0.32.7.0.255/2")

    def test_count_unit_has_no_unit(self) -> None:
        su = ScalerUnit.from_data(axdr.structure(axdr.integer(0), axdr.enum_value(255)))
        self.assertIsNone(su.unit)

    def test_bad_scaler_unit_names_field(self) -> None:
        with self.assertRaises(FrameError) as caught:
            ScalerUnit.from_data(axdr.unsigned(3))
        self.assertEqual(caught.exception.field, "scaler_unit")


class ProfileTests(unittest.TestCase):
    def test_simulated_load_profile_becomes_blocks(self) -> None:
        m = meter()
        columns = decode_capture_objects(m.get(A.AttributeDescriptor(7, sim.LOAD_PROFILE, 3), None))
        start = datetime(2024, 5, 2, 0, 0, tzinfo=UTC)
        end = datetime(2024, 5, 2, 6, 0, tzinfo=UTC)
        selection = A.range_selection(
            axdr.CosemDateTime.from_datetime(start), axdr.CosemDateTime.from_datetime(end)
        )
        rows = m.get(A.AttributeDescriptor(7, sim.LOAD_PROFILE, 2), selection)
        assert isinstance(rows, Data)
        self.assertEqual(len(rows), 25)  # 00:00 .. 06:00 inclusive, every 15 min
        units = {sim.ACTIVE_IMPORT: ScalerUnit(0, sim.WH), sim.ACTIVE_EXPORT: ScalerUnit(0, sim.WH)}
        blocks = profile_blocks("m", rows, columns, 900, units)
        self.assertEqual([b.obis for b in blocks], [sim.ACTIVE_IMPORT, sim.ACTIVE_EXPORT])
        block = blocks[0]
        self.assertEqual(block.period, timedelta(minutes=15))
        self.assertEqual(block.start, start - timedelta(minutes=15))
        self.assertEqual(block.values[0], Decimal(sim.energy_wh(start)))
        self.assertEqual(block.values[-1], Decimal(sim.energy_wh(end)))
        self.assertEqual(block.unit, sim.WH)
        # the interval ending 03:00 carries the power-down bit of the AMR status
        self.assertEqual(block.statuses[12], Quality.POWER_DOWN)
        self.assertEqual(block.statuses[11], Quality.OK)

    def test_gap_splits_the_block_and_null_clock_follows_previous(self) -> None:
        columns = [
            decode_capture_objects(axdr.array([c.to_data() for c in sim.LOAD_PROFILE_COLUMNS]))
        ][0]
        t0 = datetime(2024, 1, 1, 0, 15, tzinfo=UTC)
        rows = axdr.array(
            [
                sim.SimulatedDlmsMeter(now=lambda: NOW).load_profile_row(t0),
                axdr.structure(
                    axdr.NULL,
                    axdr.unsigned(0),
                    axdr.double_long_unsigned(5),
                    axdr.double_long_unsigned(6),
                ),
                sim.SimulatedDlmsMeter(now=lambda: NOW).load_profile_row(t0 + timedelta(hours=2)),
            ]
        )
        blocks = profile_blocks("m", rows, columns, 900, {})
        imports = [b for b in blocks if b.obis == sim.ACTIVE_IMPORT]
        self.assertEqual([len(b.values) for b in imports], [2, 1])
        self.assertEqual(imports[0].values[1], Decimal(5))
        self.assertEqual(imports[1].start, t0 + timedelta(hours=2) - timedelta(minutes=15))

    def test_profile_without_clock_column_is_refused(self) -> None:
        columns = decode_capture_objects(axdr.array([sim.LOAD_PROFILE_COLUMNS[2].to_data()]))
        with self.assertRaises(FrameError):
            profile_blocks("m", axdr.array([]), columns, 900, {})


class EventLogTests(unittest.TestCase):
    def test_standard_event_codes(self) -> None:
        m = meter()
        m.events += [(NOW - timedelta(hours=1), 1), (NOW, 44), (NOW, 199)]
        rows = m.get(A.AttributeDescriptor(7, sim.EVENT_LOG, 2), None)
        assert isinstance(rows, Data)
        events = event_log("m", rows, list(sim.EVENT_LOG_COLUMNS), sim.EVENT_LOG)
        self.assertEqual(
            [(e.kind, e.severity) for e in events],
            [
                (EventKind.POWER_OUTAGE, Severity.CRITICAL),
                (EventKind.COVER_OPEN, Severity.CRITICAL),
                (EventKind.OTHER, Severity.INFO),
            ],
        )
        self.assertEqual(events[2].code, "dlms:99.98.0:199")
        self.assertEqual(events[0].time, NOW - timedelta(hours=1))


class ObjectListTests(unittest.TestCase):
    def test_object_list_round_trips(self) -> None:
        m = meter()
        data = m.get(A.AttributeDescriptor(15, sim.ASSOCIATION, 2), None)
        assert isinstance(data, Data)
        entries = decode_object_list(axdr.decode_all(axdr.encode(data)))
        self.assertEqual(entries, m.object_list())
        self.assertIn((3, sim.ACTIVE_IMPORT), [(e.class_id, e.logical_name) for e in entries])


class PushTests(unittest.TestCase):
    def test_kamstrup_pairs_with_its_scalers(self) -> None:
        notification = A.decode_apdu(hex_fixture("kamstrup_han_list1.hex")[11:-3])
        assert isinstance(notification, A.DataNotification)
        # Kamstrup sends Norwegian local time without a deviation: CEST in October is UTC+2
        content = decode_push("m", notification, default_deviation=-120)
        by_obis = {r.obis: r for r in content.readings}
        current = by_obis[ObisCode.parse("1-1:31.7.0*255")]
        self.assertEqual((current.value, current.unit_text), (Decimal("5.64"), "A"))
        power = by_obis[ObisCode.parse("1-1:1.7.0*255")]
        self.assertEqual((power.value, power.unit_text), (Decimal(1468), "W"))
        self.assertEqual(content.meter_time, datetime(2017, 10, 20, 1, 43, 30, tzinfo=UTC))
        self.assertEqual(len(content.readings), 12)

    def test_simulator_push_structures_carry_units(self) -> None:
        m = meter()
        content = decode_push("m", A.DataNotification(m.push_body()))
        self.assertEqual(content.logical_device_name, b"FEPFEP0000001")
        self.assertEqual(content.meter_time, NOW.replace(microsecond=0))
        voltage = next(r for r in content.readings if r.obis == sim.VOLTAGE_L1)
        self.assertEqual(voltage.unit_text, "V")
        self.assertEqual(voltage.value, Decimal(2301 + NOW.minute % 7) / 10)

    def test_body_without_names_is_a_frame_error(self) -> None:
        # Without layouts (a single bare value is Kaifa's list 1 by the shipped ones).
        with self.assertRaises(FrameError):
            decode_push("m", A.DataNotification(axdr.structure(axdr.unsigned(1))),
                        layouts=LayoutTable())
        with self.assertRaises(FrameError):
            decode_push("m", A.DataNotification(Data(DataType.UNSIGNED, 1)))


class OutOfRangeTests(unittest.TestCase):
    """Issue 14: values a meter (or an attacker) sends that Python's Decimal or datetime
    cannot hold are FrameErrors or unspecified times, never another exception."""

    CLOCK = CaptureObject(8, ObisCode(0, 0, 1, 0, 0, 255), 2)
    VALUE = CaptureObject(3, ObisCode(1, 0, 1, 8, 0, 255), 2)

    def test_scaler_beyond_integer8_is_a_frame_error(self) -> None:
        scaler_unit = axdr.structure(axdr.long64_unsigned(10**18), axdr.enum_value(30))
        with self.assertRaises(FrameError):
            ScalerUnit.from_data(scaler_unit)

    def test_scaler_decimal_cannot_apply_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError):
            scaled_value(axdr.unsigned(5), ScalerUnit(10**18, None))

    def test_date_time_past_year_9999_has_no_instant(self) -> None:
        late = axdr.CosemDateTime(
            axdr.CosemDate(9999, 12, 31), axdr.CosemTime(23, 59, 0, 0), 32767, 0
        )
        self.assertIsNone(late.to_datetime())
        early = axdr.CosemDateTime(axdr.CosemDate(1, 1, 1), axdr.CosemTime(0, 0, 0, 0), -32767)
        self.assertIsNone(early.to_datetime())

    def test_deviation_of_a_day_or_more_declares_no_zone(self) -> None:
        # Found by the fuzzer: timezone() raised ValueError for 1 day 5 h 52 min.
        stamp = axdr.CosemDateTime(
            axdr.CosemDate(2026, 1, 1), axdr.CosemTime(0, 0, 0, 0), -1792, 0
        )
        self.assertIsNone(stamp.local_zone())
        self.assertIsNotNone(stamp.to_datetime())

    def test_capture_period_out_of_the_calendar_is_a_frame_error(self) -> None:
        stamp = axdr.CosemDateTime.from_datetime(datetime(2026, 1, 1, tzinfo=UTC))
        rows = axdr.array([
            axdr.structure(axdr.date_time(stamp), axdr.unsigned(1)),
            axdr.structure(axdr.NULL, axdr.unsigned(2)),
        ])
        for period in (2**62, 10**11):
            with self.subTest(period=period), self.assertRaises(FrameError):
                profile_blocks("m", rows, [self.CLOCK, self.VALUE], period, {})

    def test_event_log_row_past_year_9999_is_a_frame_error(self) -> None:
        late = axdr.CosemDateTime(
            axdr.CosemDate(9999, 12, 31), axdr.CosemTime(23, 59, 0, 0), 32767, 0
        )
        rows = axdr.array([axdr.structure(axdr.date_time(late), axdr.unsigned(1))])
        with self.assertRaises(FrameError):
            event_log("m", rows, [self.CLOCK, self.VALUE], ObisCode(0, 0, 99, 98, 0, 255))


class FuzzFoundTests(unittest.TestCase):
    def test_object_list_rights_that_are_no_array_are_a_frame_error(self) -> None:
        # Found by the fuzzer: access rights {enum, enum} instead of two arrays raised
        # TypeError from Data.__iter__.
        raw = bytes.fromhex("01010204120008110009060000010000FF0202010202030F011601000F011601")
        with self.assertRaises(FrameError):
            decode_object_list(axdr.decode_all(raw))
