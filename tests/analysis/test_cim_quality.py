"""The CIM export's reading qualities (IEC 61968-9 ReadingQualityType codes, fep.operator.cim):
the table of codes, and a day of meter A exported from a SQLite store after validation,
estimation and an operator's edit, validated against fep/operator/schema/MeterReadings.xsd.

A's 1-0:1.29.0 intervals are 100 Wh every 15 minutes, 01:15 flagged POWER_DOWN by the meter,
02:00 and 02:15 never read (validation: missing; estimation: 100 each by interpolation), 03:00
replaced by an operator (90 Wh, "meter swap"). Exported as one IntervalBlocks of 96
intervals: 01:15 with the meter's power fail 1.2.32; 02:00 and 02:15 estimated 2.8.0 with
the method in the comment; 03:00 edited 2.7.0, value 90, the edit's reason in the comment;
the others 1.0.0 (valid).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import jobs
from fep.analysis.edits import Editor
from fep.analysis.settings import VeeSettings
from fep.model import IntervalBlock, Meter, ObisCode, Quality, Unit
from fep.operator import cim
from fep.operator.cim import QualityCode, quality_codes
from fep.store.sqlite import SqliteStore
from tests.operator.test_cim import NS, validate

CHANNEL = ObisCode(1, 0, 1, 29, 0)
Q15 = timedelta(minutes=15)
DAY = datetime(2026, 12, 1, tzinfo=UTC)
WH = Unit.by_code(30)


class QualityCodeTests(unittest.TestCase):
    def test_the_table(self) -> None:
        self.assertEqual(quality_codes(Quality.OK), [QualityCode("1.0.0")])
        self.assertEqual(quality_codes(Quality.POWER_DOWN | Quality.CLOCK_ADJUSTED),
                         [QualityCode("1.4.9"), QualityCode("1.2.32")])
        self.assertEqual(quality_codes(Quality.SUSPECT), [QualityCode("2.6.0")])
        self.assertEqual(quality_codes(Quality.ESTIMATED), [QualityCode("1.8.0")])
        self.assertEqual(quality_codes(Quality.ESTIMATED | Quality.MISSING, "interpolate",
                                       "00:45..01:30"),
                         [QualityCode("2.8.0", "interpolate: 00:45..01:30")])
        self.assertEqual(quality_codes(Quality.OK, "edited", "edit 1 by cli:a: swap"),
                         [QualityCode("2.7.0", "edit 1 by cli:a: swap")])
        self.assertEqual(quality_codes(Quality.OK, "accepted", "edit 2 by cli:a: checked"),
                         [QualityCode("2.10.1", "edit 2 by cli:a: checked")])


class ExportTests(unittest.TestCase):
    async def test_a_day_with_estimates_and_an_edit(self) -> None:
        store = SqliteStore(self.mktemp() + ".sqlite", reactor)
        await store.open()
        self.addCleanup(store.close)
        values = [D(100)] * 96
        statuses = [Quality.OK] * 96
        statuses[5] = Quality.POWER_DOWN
        await store.write([
            IntervalBlock("A", CHANNEL, DAY, Q15, tuple(values[:8]), tuple(statuses[:8]),
                          unit=WH),
            IntervalBlock("A", CHANNEL, DAY + 10 * Q15, Q15, tuple(values[10:]),
                          tuple(statuses[10:]), unit=WH)])
        await store.add_meters([Meter("A", "dlms", "tcp:h:1")])
        settings = VeeSettings()
        await jobs.run_vee(store, settings, DAY.date())
        await Editor(store, settings).request("A", DAY + 12 * Q15, reason="meter swap",
                                              who="cli:alice", value=D(90))
        xml = await cim.export_readings(store, Meter("A", "dlms", "tcp:h:1"), DAY,
                                        DAY + timedelta(days=1), vee=settings)
        doc = validate(xml, "MeterReadings.xsd")
        blocks = doc.findall("m:MeterReading/m:IntervalBlocks", NS)
        self.assertEqual(len(blocks), 1)
        got = {}
        for r in blocks[0].findall("m:IntervalReadings", NS):
            got[r.findtext("m:timeStamp", namespaces=NS)] = (
                r.findtext("m:value", namespaces=NS),
                [(q.find("m:ReadingQualityType", NS).get("ref"),
                  q.findtext("m:comment", default="", namespaces=NS))
                 for q in r.findall("m:ReadingQualities", NS)])
        self.assertEqual(len(got), 96)

        def at(minutes: int) -> tuple[str, list[tuple[str, str]]]:
            # Stamped with the end of the interval.
            end = DAY + timedelta(minutes=minutes) + Q15
            return got[end.isoformat().replace("+00:00", "Z")]

        self.assertEqual(at(0), ("100", [("1.0.0", "")]))
        self.assertEqual(at(75), ("100", [("1.2.32", "")]))
        for minutes in (120, 135):
            value, qualities = at(minutes)
            self.assertEqual(D(value), D(100))
            self.assertEqual([code for code, _ in qualities], ["2.8.0"])
            self.assertTrue(qualities[0][1].startswith("interpolate"), qualities)
        value, qualities = at(180)
        self.assertEqual((D(value), [c for c, _ in qualities]), (D(90), ["2.7.0"]))
        self.assertIn("meter swap", qualities[0][1])
