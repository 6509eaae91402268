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

Each interval value carries its quality as ReadingQualities, each a ReadingQualityType code
``systemId.categorization.index`` of IEC 61968-9 (Annex D, the reading quality code scheme):
system 1 for what the meter flagged (the end device), 2 for what fep's analysis found or
made (the metering system); ``1.0.0`` for a valid value with nothing to say (``quality_codes``
has the table). The analysed channel (the vee.ini's ``[vee] channel``, an interval channel)
is exported as the analysis sees it: the real value, else the estimate (``2.8.0``, its method
and source in the quality's comment), an operator's replacement (``2.7.0``) or acceptance
(``2.10.1``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree as ET

import attrs

from fep.analysis.series import in_base_unit
from fep.model import (
    EventKind,
    IntervalBlock,
    Meter,
    MeterEvent,
    ObisCode,
    Quality,
    Reading,
    Unit,
)

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


# IEC 61968-9 ReadingQualityType codes (systemId.categorization.index). Systems: 1 the end
# device (the meter's own flags), 2 the metering system (fep's validation, estimation and
# editing). Categories: 0 valid, 1 diagnostics, 2 power quality, 4 data collection,
# 5 reasonability, 6 validation, 7 edited, 8 estimated, 10 questionable.
VALID = "1.0.0"  # data valid
METER_CODES: dict[Quality, str] = {
    Quality.ESTIMATED: "1.8.0",  # estimated (by the meter)
    Quality.OVERFLOW: "1.4.1",  # overflow condition detected
    Quality.CLOCK_INVALID: "1.1.9",  # clock error
    Quality.CLOCK_ADJUSTED: "1.4.9",  # clock changed
    Quality.DST: "1.4.16",  # daylight saving time in effect
    Quality.POWER_DOWN: "1.2.32",  # power fail
    Quality.DATA_NOT_VALID: "1.5.257",  # the device reported an error code
    Quality.COUNTER_RESET: "1.4.8",  # reset occurred
}
FAILED_VALIDATION = "2.6.0"  # failed validation, generic (fep's rules: SUSPECT)
ESTIMATED = "2.8.0"  # estimated, generic (fep's estimation; the method in the comment)
EDITED = "2.7.0"  # manually edited, generic (an operator's replacement)
ACCEPTED = "2.10.1"  # questionable, accepted (an operator accepted the value as it is)
KNOWN_MISSING = "2.5.259"  # a known missing read (nothing to export in its place)


@attrs.frozen
class QualityCode:
    """One ReadingQuality of a value: its ReadingQualityType code and a comment."""

    code: str
    comment: str = ""


def quality_codes(status: Quality, method: str = "", source: str = "") -> list[QualityCode]:
    """The ReadingQualities of a value with ``status`` (and, for fep's estimates and
    operators' edits, the ``method`` and ``source`` of the analysed series)."""
    comment = f"{method}: {source}" if source else method
    if method == "edited":
        return [QualityCode(EDITED, source)]
    codes: list[QualityCode] = []
    if status & Quality.ESTIMATED and method:
        codes.append(QualityCode(ESTIMATED, comment))
    elif status & Quality.ESTIMATED:
        codes.append(QualityCode(METER_CODES[Quality.ESTIMATED]))
    codes += [QualityCode(code) for flag, code in METER_CODES.items()
              if flag != Quality.ESTIMATED and status & flag]
    if status & Quality.SUSPECT:
        codes.append(QualityCode(FAILED_VALIDATION))
    if method == "accepted":
        codes.append(QualityCode(ACCEPTED, source))
    return codes or [QualityCode(VALID)]


@attrs.frozen
class AnalysedPoint:
    """One interval of the analysed channel: its value and quality as the analysis sees it
    (fep.analysis.jobs.SeriesRow)."""

    start: datetime
    value: Decimal | None
    quality: Quality
    method: str = ""
    source: str = ""


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


def _decimal(value: Any) -> Decimal | None:
    text = _number(value)
    return None if text is None else Decimal(text)


def _qualities(parent: ET.Element, qualities: Iterable[QualityCode]) -> None:
    for q in qualities:
        quality = _sub(parent, "ReadingQualities")
        if q.comment:
            _sub(quality, "comment", q.comment)
        _sub(quality, "ReadingQualityType", ref=q.code)


def _interval_block(mr: ET.Element, rtype: ReadingType, period: timedelta,
                    points: Sequence[tuple[datetime, str | None, list[QualityCode]]]) -> None:
    element = _sub(mr, "IntervalBlocks")
    for start, text, qualities in points:
        interval = _sub(element, "IntervalReadings")
        # An interval value is stamped with the end of its interval.
        _sub(interval, "timeStamp", _time(start + period))
        _sub(interval, "value", text)
        _qualities(interval, qualities)
    _sub(element, "ReadingType", ref=rtype.mrid)


def register_checks(findings: Iterable[Any], register: ObisCode, times: Iterable[datetime],
                    within: timedelta) -> dict[tuple[ObisCode, datetime], list[QualityCode]]:
    """fep's validation of the readings of ``register`` taken at ``times``, as
    ReadingQualities to add to the meter's own: a register-advance finding (the register's
    advance over a day against the sum of its intervals) fails the two readings it compared,
    those nearest its range's bounds within ``within`` (as the rule picks them); a meter
    change fails the old meter's last reading and the new meter's first. Each is ``2.6.0``
    failed validation with the rule and its figures in the comment."""
    from fep.analysis.rules import METER_CHANGE, REGISTER

    ordered = sorted(set(times))

    def nearest(at: datetime) -> datetime | None:
        close = [t for t in ordered if abs(t - at) <= within]
        return min(close, key=lambda t: abs(t - at)) if close else None

    out: dict[tuple[ObisCode, datetime], list[QualityCode]] = {}
    for f in findings:
        d = f.details
        if f.rule == REGISTER:
            comment = (f"{REGISTER}: advance {d.get('advance')}, intervals "
                       f"{d.get('intervals')}, difference {d.get('difference')} (allowed "
                       f"{d.get('allowed')})")
            marked = [nearest(f.since), nearest(f.until)]
        elif f.rule == METER_CHANGE and str(d.get("register")) == str(register):
            comment = (f"{METER_CHANGE}: serial {d.get('old_serial')} -> "
                       f"{d.get('new_serial')}, last {d.get('last_old')}, first "
                       f"{d.get('first_new')}")
            marked = [datetime.fromisoformat(str(d[k])) for k in ("removed", "installed")
                      if d.get(k)]
        else:
            continue
        for t in marked:
            if t is None:
                continue
            codes = out.setdefault((register, t), [])
            if all(c.comment != comment for c in codes):
                codes.append(QualityCode(FAILED_VALIDATION, comment))
    return out


def meter_readings(meter: Meter, readings: Iterable[Reading], blocks: Iterable[IntervalBlock],
                   since: datetime | None = None, until: datetime | None = None, *,
                   analysed: Mapping[ObisCode, Sequence[AnalysedPoint]] | None = None,
                   checks: Mapping[tuple[ObisCode, datetime], Sequence[QualityCode]]
                   | None = None) -> bytes:
    """A MeterReadings message for one meter; ``analysed`` gives a channel's intervals as
    the analysis sees them (estimates and edits included), exported instead of its stored
    values; ``checks`` adds fep's validation to register readings (by channel and time),
    beside the meter's own quality of each."""
    root = ET.Element("MeterReadings", xmlns=MR_NS)
    mr = _sub(root, "MeterReading")
    types: dict[str, ReadingType] = {}
    blocks = list(blocks)
    analysed = analysed or {}
    merged: dict[ObisCode, tuple[IntervalBlock, dict[datetime, AnalysedPoint]]] = {}
    for block in blocks:
        if block.obis in analysed:
            # The analysed channel: one IntervalBlocks of the stored values as analysed, and
            # the estimates and edits between them.
            # In the channel's base unit, as the analysis sees it (fep.analysis.series).
            first, points_of = merged.setdefault(block.obis, (block, {}))
            for start, value, status in block.intervals():
                points_of.setdefault(start, AnalysedPoint(
                    start, in_base_unit(_decimal(value), block.scaler), status))
            continue
        rtype = reading_type(block.obis, block.unit, block.scaler, block.period)
        points = [(start, _number(value), quality_codes(status))
                  for start, value, status in block.intervals()
                  if (since is None or start >= since) and (until is None or start < until)]
        points = [(start, text, q) for start, text, q in points if text is not None]
        if not points:
            continue
        types[rtype.mrid] = rtype
        _interval_block(mr, rtype, block.period, points)
    for obis, (first, points_of) in merged.items():
        for p in analysed[obis]:
            if p.value is not None or p.method:
                points_of[p.start] = p
        rtype = reading_type(obis, first.unit, 0, first.period)
        rows = [(t, _number(p.value), quality_codes(p.quality, p.method, p.source))
                for t, p in sorted(points_of.items())
                if (since is None or t >= since) and (until is None or t < until)]
        rows = [(t, text, q) for t, text, q in rows if text is not None]
        if rows:
            types[rtype.mrid] = rtype
            _interval_block(mr, rtype, first.period, rows)
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
        extra = list((checks or {}).get((reading.obis, reading.time), ()))
        qualities = quality_codes(reading.quality)
        if extra and [q.code for q in qualities] == [VALID]:
            qualities = []  # failed validation: no longer "data valid"
        _qualities(element, qualities + extra)
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


# The most days of the analysed channel an export looks up.
MAX_ANALYSED_DAYS = 62


async def export_readings(store: Any, meter: Meter, since: datetime | None,
                          until: datetime | None, *, vee: Any = None) -> bytes:
    """A meter's readings and intervals; the analysed channel of ``vee`` (VeeSettings; the
    defaults when None) as the analysis sees it, on the days it has stored values."""
    from fep.analysis.jobs import validated_series
    from fep.analysis.series import is_cumulative
    from fep.analysis.settings import VeeSettings
    from fep.analysis.store import AnalysisStore

    vee = vee or VeeSettings()
    readings = await store.readings(meter.id, since=since)
    blocks = await store.intervals(meter.id, since=since)
    analysed: dict[ObisCode, list[AnalysedPoint]] = {}
    if not is_cumulative(vee.channel):
        days: set[date] = {start.date() for b in blocks if b.obis == vee.channel
                           for start, _v, _s in b.intervals()
                           if (since is None or start >= since)
                           and (until is None or start < until)}
        for day in sorted(days)[:MAX_ANALYSED_DAYS]:
            rows = await validated_series(store, vee, meter.id, day)
            analysed.setdefault(vee.channel, []).extend(
                AnalysedPoint(r.start, r.value, r.quality, r.method, r.source) for r in rows)
    checks: dict[tuple[ObisCode, datetime], list[QualityCode]] = {}
    times = [r.time for r in readings if r.obis == vee.register
             and (until is None or r.time < until)]
    if times:
        # The register's days around its readings: a finding's range is a day.
        low, high = min(times) - timedelta(days=1), max(times) + timedelta(days=1)
        findings = await AnalysisStore(store).findings(low, high, meter.id)
        checks = register_checks(findings, vee.register, times, vee.period / 2)
    return meter_readings(meter, readings, blocks, since, until, analysed=analysed,
                          checks=checks)


async def export_events(store: Any, meter: Meter, since: datetime | None,
                        until: datetime | None) -> bytes:
    events = await store.events(meter.id, since=since)
    return end_device_events(meter, [e for e in events if until is None or e.time < until])
