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
from fep.model import IntervalBlock, Meter, ObisCode, Quality, Reading, Unit
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


REGISTER = ObisCode(1, 0, 1, 8, 0)
KWH_WH = Unit.by_code(30)


class RegisterReadingTests(unittest.TestCase):
    """Register readings carry the meter's own quality and fep's validation of them.

    Meter R on 1 Dec 2026: 96 intervals of 10 Wh (960 Wh in the day) on 1-0:1.29.0, and its
    register 1-0:1.8.0 read at 00:00 (5000 Wh), at 12:00 (5500 Wh, the meter flagged its
    clock adjusted) and at 24:00 (6000 Wh). The register advanced 1000 Wh, the intervals sum
    to 960 Wh: a difference of 40 Wh against the allowed max(0.5 % x 1000, 0) = 5 Wh, so the
    `register-advance` rule fails the day. Exported: the two readings it compared (00:00 and
    24:00) carry 2.6.0 failed validation with the figures in the comment instead of 1.0.0;
    the noon reading keeps the meter's 1.4.9 (clock changed) only.
    """

    async def test_register_readings_with_their_quality(self) -> None:
        store = SqliteStore(self.mktemp() + ".sqlite", reactor)
        await store.open()
        self.addCleanup(store.close)
        end = DAY + timedelta(days=1)
        await store.write([
            IntervalBlock("R", CHANNEL, DAY, Q15, (D(10),) * 96, (Quality.OK,) * 96, unit=WH),
            Reading("R", REGISTER, D(5000), unit=KWH_WH, meter_time=DAY),
            Reading("R", REGISTER, D(5500), unit=KWH_WH, meter_time=DAY + timedelta(hours=12),
                    quality=Quality.CLOCK_ADJUSTED),
            Reading("R", REGISTER, D(6000), unit=KWH_WH, meter_time=end)])
        meter = Meter("R", "dlms", "tcp:h:1")
        await store.add_meters([meter])
        settings = VeeSettings()
        await jobs.run_vee(store, settings, DAY.date())
        xml = await cim.export_readings(store, meter, DAY, end + timedelta(seconds=1),
                                        vee=settings)
        doc = validate(xml, "MeterReadings.xsd")
        got = {}
        for r in doc.findall("m:MeterReading/m:Readings", NS):
            got[r.findtext("m:timeStamp", namespaces=NS)] = (
                r.findtext("m:value", namespaces=NS),
                [(q.find("m:ReadingQualityType", NS).get("ref"),
                  q.findtext("m:comment", default="", namespaces=NS))
                 for q in r.findall("m:ReadingQualities", NS)])
        self.assertEqual(set(got), {"2026-12-01T00:00:00Z", "2026-12-01T12:00:00Z",
                                    "2026-12-02T00:00:00Z"})
        self.assertEqual(got["2026-12-01T12:00:00Z"], ("5500", [("1.4.9", "")]))
        for stamp in ("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"):
            value, qualities = got[stamp]
            self.assertIn(value, ("5000", "6000"))
            self.assertEqual([c for c, _ in qualities], ["2.6.0"], stamp)
            self.assertIn("register-advance: advance 1000, intervals 960, difference 40",
                          qualities[0][1])

    def test_a_meter_change_fails_the_old_meters_last_and_the_new_ones_first(self) -> None:
        """A meter change found on 1 Dec (old serial A1 last read 7000 at 10:00, new B2 first
        read 3 at 10:30) fails those two readings; a reading of another register is left."""
        from fep.analysis.rules import METER_CHANGE, Finding

        removed, installed = DAY + timedelta(hours=10), DAY + timedelta(hours=10, minutes=30)
        finding = Finding(METER_CHANGE, "R", str(CHANNEL), DAY + timedelta(hours=10),
                          DAY + timedelta(hours=10, minutes=45), Quality.COUNTER_RESET, {
                              "register": str(REGISTER), "old_serial": "A1",
                              "new_serial": "B2", "last_old": "7000", "first_new": "3",
                              "removed": removed.isoformat(),
                              "installed": installed.isoformat()})
        checks = cim.register_checks([finding], REGISTER, [removed, installed, DAY], Q15 / 2)
        self.assertEqual(set(checks), {(REGISTER, removed), (REGISTER, installed)})
        self.assertEqual(checks[(REGISTER, removed)],
                         [QualityCode("2.6.0",
                                      "meter-change: serial A1 -> B2, last 7000, first 3")])
        other = ObisCode(1, 0, 2, 8, 0)
        self.assertEqual(cim.register_checks([finding], other, [removed], Q15 / 2), {})
