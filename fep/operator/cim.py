"""CIM export for an MDMS: IEC 61968-9 MeterReadings (register readings and load-profile
interval blocks, each with its ReadingType) and EndDeviceEvents, as XML, by meter and time
range (``fep export cim ...`` and the API's /export/cim).

The message structure follows the standard's 2011 message schemas (namespaces
``http://iec.ch/TC57/2011/MeterReadings#`` and ``.../EndDeviceEvents#``): the subset fep fills
is written down as XSDs in ``fep/operator/schema/`` and the tests validate the exports
against them.

ReadingType mRIDs are the 18-field codes of IEC 61968-9 Annex C (macroPeriod.aggregate.
measuringPeriod.accumulation.flowDirection.commodity.measurementKind.interharmonic(2).
argument(2).tou.cpp.consumptionTier.phases.multiplier.unit.currency), derived from the OBIS
code's quantity (C) and processing (D) groups, the unit and the interval length.
EndDeviceEventType refs are ``type.domain.subDomain.eventOrAction`` codes (Annex E) by common
event kind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree as ET

import attrs

from fep.model import EventKind, IntervalBlock, Meter, MeterEvent, ObisCode, Reading, Unit

MR_NS = "http://iec.ch/TC57/2011/MeterReadings#"
EDE_NS = "http://iec.ch/TC57/2011/EndDeviceEvents#"

# DLMS unit code -> CIM UnitSymbol code (IEC 61968-9 / 61970-301 UnitSymbol enumeration).
CIM_UNITS = {
    30: 72,  # Wh
    27: 38,  # W
    32: 73,  # VArh
    29: 63,  # VAr
    31: 71,  # VAh
    28: 61,  # VA
    35: 29,  # V
    33: 5,  # A
    44: 33,  # Hz
    56: 0,  # percent has no symbol of its own here
}
# measuringPeriod (TimeAttributeKind) by interval length in minutes.
MEASURING_PERIODS = {1: 3, 2: 10, 3: 14, 5: 6, 10: 1, 15: 2, 20: 31, 30: 5, 60: 7, 1440: 4}
# PhaseCode for per-phase OBIS quantities.
PHASE_A, PHASE_B, PHASE_C = 128, 64, 32


@attrs.frozen
class ReadingType:
    """The fields of one ReadingType (IEC 61968-9 Annex C)."""

    macro_period: int = 0
    aggregate: int = 0
    measuring_period: int = 0
    accumulation: int = 0
    flow_direction: int = 0
    commodity: int = 1  # electricity, secondary metered
    measurement_kind: int = 0
    phases: int = 0
    multiplier: int = 0
    unit: int = 0
    name: str = ""

    @property
    def mrid(self) -> str:
        fields = (self.macro_period, self.aggregate, self.measuring_period, self.accumulation,
                  self.flow_direction, self.commodity, self.measurement_kind, 0, 0, 0, 0, 0,
                  0, 0, self.phases, self.multiplier, self.unit, 0)
        return ".".join(str(f) for f in fields)


def reading_type(obis: ObisCode, unit: Unit | None, scaler: int,
                 period: timedelta | None = None) -> ReadingType:
    """The ReadingType of an OBIS quantity (``period`` for load-profile intervals)."""
    c, d = obis.c, obis.d
    flow = 0
    phases = 0
    kind = 0
    if c in (1, 3, 9, 21, 23, 41, 43, 61, 63):
        flow = 1  # forward (import)
    elif c in (2, 4, 10, 22, 24, 42, 44, 62, 64):
        flow = 19  # reverse (export)
    elif c in (15, 16):
        flow = 4  # total (absolute)
    if c in (21, 22, 23, 24, 31, 32):
        phases = PHASE_A
    elif c in (41, 42, 43, 44, 51, 52):
        phases = PHASE_B
    elif c in (61, 62, 63, 64, 71, 72):
        phases = PHASE_C
    if c in (31, 51, 71, 11, 91):
        kind = 4  # current
    elif c in (32, 52, 72, 12):
        kind = 54  # voltage
    elif c == 14:
        kind = 15  # frequency
    elif d in (8, 9, 29):
        kind = 12  # energy
    elif d in (4, 5, 6, 7, 27):
        kind = 37  # power (demand)
    accumulation = 0
    if period is not None:
        # Energy per interval is deltaData; power, voltage and current per interval are
        # the interval's (instantaneous/average) value.
        accumulation = 4 if kind == 12 else 12
    elif d in (8, 9):
        accumulation = 1  # bulkQuantity (a register)
    elif d == 6:
        accumulation = 6  # indicating (maximum demand)
    elif d in (7, 27) or kind in (4, 54, 15):
        accumulation = 12  # instantaneous
    measuring = 0
    if period is not None:
        measuring = MEASURING_PERIODS.get(int(period.total_seconds() // 60), 0)
    cim_unit = CIM_UNITS.get(unit.code, 0) if unit is not None else 0
    return ReadingType(
        measuring_period=measuring, accumulation=accumulation, flow_direction=flow,
        measurement_kind=kind, phases=phases, multiplier=scaler, unit=cim_unit,
        name=f"{obis}" + (f" {period.total_seconds() / 60:g} min" if period else ""))


# EndDeviceEventType codes (type 3 = electric meter) by common kind.
EVENT_TYPES: dict[EventKind, str] = {
    EventKind.POWER_OUTAGE: "3.26.0.85",
    EventKind.POWER_RESTORED: "3.26.0.216",
    EventKind.COVER_OPEN: "3.12.141.66",
    EventKind.TERMINAL_COVER_OPEN: "3.12.29.39",
    EventKind.MAGNETIC_TAMPER: "3.12.66.257",
    EventKind.TILT: "3.12.0.257",
    EventKind.CLOCK_DEVIATION: "3.36.116.79",
    EventKind.CLOCK_SET: "3.36.116.24",
    EventKind.REVERSE_ENERGY: "3.26.131.219",
    EventKind.PHASE_LOSS: "3.26.131.85",
    EventKind.OVER_VOLTAGE: "3.26.38.93",
    EventKind.UNDER_VOLTAGE: "3.26.38.150",
    EventKind.OVER_CURRENT: "3.26.31.93",
    EventKind.PHASE_IMBALANCE: "3.26.131.139",
    EventKind.COMMUNICATION_FAILURE: "3.1.0.85",
    EventKind.METER_ERROR: "3.18.0.79",
    EventKind.OTHER: "3.0.0.0",
}


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | Decimal):
        return format(Decimal(value), "f")
    return None


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs_: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs_)
    if text is not None:
        element.text = text
    return element


def _names(parent: ET.Element, *names: str) -> None:
    for name in names:
        holder = _sub(parent, "Names")
        _sub(holder, "name", name)


def _meter(parent: ET.Element, meter: Meter) -> None:
    element = _sub(parent, "Meter")
    _sub(element, "mRID", meter.id)
    _names(element, meter.id, *([meter.serial] if meter.serial else []))


def meter_readings(meter: Meter, readings: Iterable[Reading], blocks: Iterable[IntervalBlock],
                   since: datetime | None = None, until: datetime | None = None) -> bytes:
    """A MeterReadings message for one meter."""
    root = ET.Element("MeterReadings", xmlns=MR_NS)
    mr = _sub(root, "MeterReading")
    types: dict[str, ReadingType] = {}
    blocks = list(blocks)
    for block in blocks:
        rtype = reading_type(block.obis, block.unit, block.scaler, block.period)
        points = [(start, _number(value)) for start, value, _ in block.intervals()
                  if (since is None or start >= since) and (until is None or start < until)]
        points = [(start, text) for start, text in points if text is not None]
        if not points:
            continue
        types[rtype.mrid] = rtype
        element = _sub(mr, "IntervalBlocks")
        for start, text in points:
            interval = _sub(element, "IntervalReadings")
            # An interval value is stamped with the end of its interval.
            _sub(interval, "timeStamp", _time(start + block.period))
            _sub(interval, "value", text)
        _sub(element, "ReadingType", ref=rtype.mrid)
    _meter(mr, meter)
    for reading in readings:
        if (since is not None and reading.time < since) or (until is not None
                                                           and reading.time >= until):
            continue
        text = _number(reading.value)
        if text is None:
            continue
        rtype = reading_type(reading.obis, reading.unit, reading.scaler)
        types[rtype.mrid] = rtype
        element = _sub(mr, "Readings")
        _sub(element, "reportedDateTime", _time(reading.received_time))
        _sub(element, "source", reading.source or "fep")
        _sub(element, "timeStamp", _time(reading.time))
        _sub(element, "value", text)
        _sub(element, "ReadingType", ref=rtype.mrid)
    if since is not None or until is not None:
        interval = _sub(mr, "valuesInterval")
        if until is not None:
            _sub(interval, "end", _time(until))
        if since is not None:
            _sub(interval, "start", _time(since))
    for mrid in sorted(types):
        rtype = types[mrid]
        element = _sub(root, "ReadingType")
        _sub(element, "mRID", mrid)
        _sub(element, "accumulation", str(rtype.accumulation))
        _sub(element, "aggregate", str(rtype.aggregate))
        _sub(element, "commodity", str(rtype.commodity))
        _sub(element, "flowDirection", str(rtype.flow_direction))
        _sub(element, "macroPeriod", str(rtype.macro_period))
        _sub(element, "measurementKind", str(rtype.measurement_kind))
        _sub(element, "measuringPeriod", str(rtype.measuring_period))
        _sub(element, "multiplier", str(rtype.multiplier))
        _sub(element, "phases", str(rtype.phases))
        _sub(element, "unit", str(rtype.unit))
        _names(element, rtype.name)
    return _bytes(root)


def end_device_events(meter: Meter, events: Iterable[MeterEvent]) -> bytes:
    """An EndDeviceEvents message for one meter's events."""
    root = ET.Element("EndDeviceEvents", xmlns=EDE_NS)
    used: set[str] = set()
    for event in events:
        ref = EVENT_TYPES[event.kind]
        used.add(ref)
        element = _sub(root, "EndDeviceEvent")
        identity = f"{event.meter}|{event.code}|{event.time.isoformat()}"
        _sub(element, "mRID", hashlib.sha256(identity.encode()).hexdigest()[:32])
        _sub(element, "createdDateTime", _time(event.time))
        _sub(element, "reason", event.text or event.kind.value)
        _sub(element, "severity", event.severity.value)
        assets = _sub(element, "Assets")
        _sub(assets, "mRID", meter.id)
        _names(assets, meter.id)
        detail = _sub(element, "EndDeviceEventDetails")
        _sub(detail, "name", "code")
        value = _sub(detail, "value")
        _sub(value, "value", event.code)
        _sub(element, "EndDeviceEventType", ref=ref)
    for ref in sorted(used):
        element = _sub(root, "EndDeviceEventType")
        _sub(element, "mRID", ref)
        kind_type, domain, sub_domain, action = ref.split(".")
        _sub(element, "domain", domain)
        _sub(element, "eventOrAction", action)
        _sub(element, "subDomain", sub_domain)
        _sub(element, "type", kind_type)
    return _bytes(root)


def _bytes(root: ET.Element) -> bytes:
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


async def export_readings(store: Any, meter: Meter, since: datetime | None,
                          until: datetime | None) -> bytes:
    readings = await store.readings(meter.id, since=since)
    blocks = await store.intervals(meter.id, since=since)
    return meter_readings(meter, readings, blocks, since, until)


async def export_events(store: Any, meter: Meter, since: datetime | None,
                        until: datetime | None) -> bytes:
    events = await store.events(meter.id, since=since)
    return end_device_events(meter, [e for e in events if until is None or e.time < until])
