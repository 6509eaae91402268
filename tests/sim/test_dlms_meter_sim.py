"""The simulated DLMS meter's load profile from a table (`fep.sim.dlms_meter.IntervalTable`):
the given energy of each interval in register 1.0.1.29.0.255, no buffer row where the meter
recorded nothing, and rows it withheld served once the table gives them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from twisted.trial import unittest

from fep.protocols.dlms import apdu as A
from fep.protocols.dlms import axdr
from fep.protocols.dlms.apdu import DataAccessResult
from fep.protocols.dlms.axdr import Data
from fep.protocols.dlms.cosem import ScalerUnit, decode_capture_objects, profile_blocks
from fep.sim import dlms_meter as sim

Q15 = timedelta(minutes=15)
DAY = datetime(2026, 11, 30, tzinfo=UTC)


class IntervalTableTests(unittest.TestCase):
    def setUp(self) -> None:
        # Interval k of the day holds 100 + k Wh; 04:00..04:30 withheld until released.
        self.withheld = {DAY + k * Q15 for k in range(16, 19)}

        def energy(start: datetime) -> int | None:
            if not DAY <= start < DAY + timedelta(days=1) or start in self.withheld:
                return None
            return 100 + (start - DAY) // Q15

        self.meter = sim.SimulatedDlmsMeter(now=lambda: DAY + timedelta(days=1, minutes=7),
                                            intervals=sim.IntervalTable(energy))

    def blocks(self) -> list:
        columns = decode_capture_objects(
            self.meter.get(A.AttributeDescriptor(7, sim.LOAD_PROFILE, 3), None))
        selection = A.range_selection(axdr.CosemDateTime.from_datetime(DAY),
                                      axdr.CosemDateTime.from_datetime(DAY + timedelta(days=1)))
        rows = self.meter.get(A.AttributeDescriptor(7, sim.LOAD_PROFILE, 2), selection)
        assert isinstance(rows, Data)
        su = self.meter.get(A.AttributeDescriptor(3, sim.INTERVAL_IMPORT, 3), None)
        assert isinstance(su, Data)
        return profile_blocks("m", rows, columns, 900,
                              {sim.INTERVAL_IMPORT: ScalerUnit.from_data(su)})

    def test_the_table_is_the_profile_and_unrecorded_intervals_have_no_row(self) -> None:
        blocks = self.blocks()
        self.assertEqual({b.obis for b in blocks}, {sim.INTERVAL_IMPORT})
        self.assertEqual([(b.start, len(b.values)) for b in blocks],
                         [(DAY, 16), (DAY + 19 * Q15, 77)])
        values = [v for b in blocks for v in b.values]
        self.assertEqual(values, [Decimal(100 + k) for k in range(96) if not 16 <= k < 19])
        self.assertEqual(blocks[0].unit, sim.WH)
        # Entries in use: the rows the meter holds (the day's 93, none before or after).
        entries = self.meter.get(A.AttributeDescriptor(7, sim.LOAD_PROFILE, 7), None)
        assert isinstance(entries, Data)
        self.assertEqual(axdr.as_int(entries), 93)

    def test_withheld_intervals_are_served_once_the_table_gives_them(self) -> None:
        self.withheld.clear()
        (block,) = self.blocks()
        self.assertEqual((block.start, block.values),
                         (DAY, tuple(Decimal(100 + k) for k in range(96))))

    def test_the_register_holds_the_last_interval_and_is_in_the_object_list(self) -> None:
        value = self.meter.get(A.AttributeDescriptor(3, sim.INTERVAL_IMPORT, 2), None)
        assert isinstance(value, Data)
        self.assertEqual(axdr.as_int(value), 195)  # 23:45..24:00, the last interval ended
        self.assertEqual(self.meter.get(A.AttributeDescriptor(4, sim.INTERVAL_IMPORT, 2), None),
                         DataAccessResult.OBJECT_CLASS_INCONSISTENT)
        self.assertIn(sim.INTERVAL_IMPORT,
                      [e.logical_name for e in self.meter.object_list()])

    def test_without_a_table_the_profile_is_the_registers(self) -> None:
        plain = sim.SimulatedDlmsMeter(now=lambda: DAY)
        columns = decode_capture_objects(
            plain.get(A.AttributeDescriptor(7, sim.LOAD_PROFILE, 3), None))
        self.assertEqual(tuple(columns), sim.LOAD_PROFILE_COLUMNS)
        self.assertNotIn(sim.INTERVAL_IMPORT, [e.logical_name for e in plain.object_list()])
