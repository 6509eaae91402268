"""CIM export: a meter's day of readings and load profile as IEC 61968-9 MeterReadings and
its events as EndDeviceEvents, validated with lxml against the message structure
(fep/operator/schema/*.xsd), from the store, the API and `fep export cim`."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path

from lxml import etree
from twisted.internet import reactor
from twisted.trial import unittest

from fep.model import IntervalBlock, Meter, Reading
from fep.operator import cim
from fep.operator.http import site
from fep.operator.tokens import TokenFile
from tests.inprocess import fep_main as run_fep
from tests.operator.helpers import (
    DAY,
    ENERGY,
    POWER,
    TOKENS,
    VIEWER_TOKEN,
    WH,
    W,
    http,
    make_context,
    sample_records,
)

NS = {"m": cim.MR_NS}
EV = {"e": cim.EDE_NS}


def schema(name: str) -> etree.XMLSchema:
    path = resources.files("fep.operator").joinpath("schema", name)
    return etree.XMLSchema(etree.fromstring(path.read_bytes()))


def validate(xml: bytes, name: str) -> etree._Element:
    document = etree.fromstring(xml)
    checker = schema(name)
    if not checker.validate(document):
        raise AssertionError(f"{name}: {checker.error_log}")
    return document


METER = Meter("m1", "dlms", "tcp:host=h:port=1", serial="SER001")


def day_of_readings() -> list[Reading]:
    return [Reading("m1", ENERGY, Decimal("1000.125") + Decimal(h) / 4, WH, 3,
                    meter_time=DAY + timedelta(hours=h), source="dlms") for h in range(24)]


class MeterReadingsTests(unittest.TestCase):
    def test_a_day_of_readings_and_profile_validates_with_reading_types(self) -> None:
        profile = IntervalBlock("m1", POWER, DAY, timedelta(minutes=15),
                                tuple(Decimal(i) for i in range(96)), unit=W)
        xml = cim.meter_readings(METER, day_of_readings(), [profile], DAY,
                                 DAY + timedelta(days=1))
        doc = validate(xml, "MeterReadings.xsd")
        readings = doc.findall("m:MeterReading/m:Readings", NS)
        self.assertEqual(len(readings), 24)
        first = readings[0]
        self.assertEqual(first.findtext("m:timeStamp", namespaces=NS), "2026-03-01T00:00:00Z")
        self.assertEqual(first.findtext("m:value", namespaces=NS), "1000.125")
        self.assertEqual(first.find("m:ReadingType", NS).get("ref"),
                         "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0")  # forward kWh register
        intervals = doc.findall("m:MeterReading/m:IntervalBlocks/m:IntervalReadings", NS)
        self.assertEqual(len(intervals), 96)
        # An interval value is stamped with its interval's end.
        self.assertEqual(intervals[0].findtext("m:timeStamp", namespaces=NS),
                         "2026-03-01T00:15:00Z")
        block_type = doc.find("m:MeterReading/m:IntervalBlocks/m:ReadingType", NS).get("ref")
        self.assertEqual(block_type, "0.0.2.12.1.1.37.0.0.0.0.0.0.0.0.0.38.0")  # 15-min W
        types = {t.findtext("m:mRID", namespaces=NS): t for t in doc.findall("m:ReadingType", NS)}
        self.assertEqual(set(types), {block_type, "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"})
        self.assertEqual(types[block_type].findtext("m:measuringPeriod", namespaces=NS), "2")
        self.assertEqual(doc.findtext("m:MeterReading/m:Meter/m:mRID", namespaces=NS), "m1")

    def test_time_range_is_end_exclusive(self) -> None:
        xml = cim.meter_readings(METER, day_of_readings(), [], DAY + timedelta(hours=6),
                                 DAY + timedelta(hours=8))
        doc = validate(xml, "MeterReadings.xsd")
        self.assertEqual(len(doc.findall("m:MeterReading/m:Readings", NS)), 2)
        self.assertEqual(doc.findtext("m:MeterReading/m:valuesInterval/m:start",
                                      namespaces=NS), "2026-03-01T06:00:00Z")

    def test_the_schema_refuses_a_message_missing_its_meter(self) -> None:
        xml = cim.meter_readings(METER, day_of_readings()[:1], [])
        doc = etree.fromstring(xml)
        reading = doc.find("m:MeterReading", NS)
        reading.remove(reading.find("m:Meter", NS))
        self.assertFalse(schema("MeterReadings.xsd").validate(doc))

    def test_reading_types_by_quantity(self) -> None:
        from fep.model import ObisCode, Unit

        cases = {
            "1-0:2.8.0": (Unit.by_code(30), 3, "0.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.72.0"),
            "1-0:32.7.0": (Unit.by_code(35), 0, "0.0.0.12.0.1.54.0.0.0.0.0.0.0.128.0.29.0"),
            "1-0:71.7.0": (Unit.by_code(33), 0, "0.0.0.12.0.1.4.0.0.0.0.0.0.0.32.0.5.0"),
            "1-0:1.6.0": (Unit.by_code(27), 3, "0.0.0.6.1.1.37.0.0.0.0.0.0.0.0.3.38.0"),
        }
        for text, (unit, scaler, expected) in cases.items():
            self.assertEqual(cim.reading_type(ObisCode.parse(text), unit, scaler).mrid,
                             expected, text)


class EndDeviceEventsTests(unittest.TestCase):
    def test_events_validate_with_event_types(self) -> None:
        events = [r for r in sample_records("m1") if type(r).__name__ == "MeterEvent"]
        doc = validate(cim.end_device_events(METER, events), "EndDeviceEvents.xsd")
        found = doc.findall("e:EndDeviceEvent", EV)
        self.assertEqual([e.find("e:EndDeviceEventType", EV).get("ref") for e in found],
                         ["3.26.0.85", "3.26.0.216"])
        self.assertEqual(found[0].findtext("e:severity", namespaces=EV), "critical")
        self.assertEqual(found[0].findtext("e:Assets/e:mRID", namespaces=EV), "m1")
        self.assertEqual(found[0].findtext("e:EndDeviceEventDetails/e:value/e:value",
                                           namespaces=EV), "dlms:99.98.0:1")
        self.assertEqual(len(doc.findall("e:EndDeviceEventType", EV)), 2)


class ExportFromTheStoreTests(unittest.TestCase):
    timeout = 60

    async def test_api_and_command_line_export_a_day_that_validates(self) -> None:
        ctx = await make_context(self, [Meter("m1", "dlms", "tcp:host=h:port=1")])
        await ctx.store.write([*day_of_readings(), *sample_records("m1")])
        port = reactor.listenTCP(0, site(ctx, TokenFile.parse(TOKENS)), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}/api/v1/export/cim"
        r = await http(f"{base}?meter=m1&from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z",
                       token=VIEWER_TOKEN)
        self.assertEqual(r.status, 200)
        self.assertTrue(r.headers.getRawHeaders(b"content-type")[0].startswith(
            b"application/xml"))
        doc = validate(r.body, "MeterReadings.xsd")
        # 24 hourly readings of the day (the sample's five share their times) and the
        # 96-interval profile.
        self.assertEqual(len(doc.findall("m:MeterReading/m:Readings", NS)), 24)
        self.assertEqual(len(doc.findall(".//m:IntervalReadings", NS)), 96)
        r = await http(f"{base}?meter=m1&kind=events", token=VIEWER_TOKEN)
        validate(r.body, "EndDeviceEvents.xsd")
        for bad in ("", "?meter=nope", "?meter=m1&kind=bills"):
            r = await http(f"{base}{bad}", token=VIEWER_TOKEN)
            self.assertIn(r.status, (400, 404), bad)

        out = Path(self.mktemp() + ".xml").resolve()
        db = ctx.store.url
        result = run_fep("--db", db, "export", "cim", "m1", "--from", "2026-03-01",
                         "--to", "2026-03-02", "-o", str(out))
        self.assertEqual(result.returncode, 0, result.stderr)
        doc = validate(out.read_bytes(), "MeterReadings.xsd")
        self.assertEqual(len(doc.findall("m:MeterReading/m:Readings", NS)), 24)
        result = run_fep("--db", db, "export", "cim", "m1", "--kind", "events")
        self.assertEqual(result.returncode, 0, result.stderr)
        validate(result.stdout.encode(), "EndDeviceEvents.xsd")
        missing = run_fep("--db", db, "export", "cim", "ghost")
        self.assertEqual(missing.returncode, 2)
        self.assertIn("ghost", missing.stderr)
