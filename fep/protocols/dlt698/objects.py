"""DL/T 698.45 objects as fep's records: the OI table (energy 00xx, demand 10xx, variables
20xx, clock 4000, events 30xx, frozen 50xx) with the OBIS-like code, unit and scaler of each
element, and the answers of GET (results and records) turned into Readings, IntervalBlocks
and MeterEvents.

Values are scaled once here: an energy register of 12345 (double-long-unsigned, scaler -2,
kWh) becomes ``Reading(value=Decimal("123.45"), unit=Wh, scaler=3)``, as every protocol of
fep files it. ``native_id`` keeps the OAD of the element (``00100201``: forward active
energy, total), and for a record column ``50040200/00100201`` (its frozen object first).
Meter-local times (date_time_s) are read in the meter's zone and kept in UTC. Sans-IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Final

import attrs

from fep.model import (
    EventKind,
    IntervalBlock,
    MeterEvent,
    ObisCode,
    Quality,
    Reading,
    Record,
    Severity,
    Unit,
    Value,
    trusted_reading,
)
from fep.protocols.dlt698.apdu import ResultNormal, ResultRecord
from fep.protocols.dlt698.data import CSD, OAD, Data, DataType

PROTOCOL: Final = "dlt698"

WH, VARH, VAH = Unit.by_code(30), Unit.by_code(32), Unit.by_code(31)
W, VAR, VA = Unit.by_code(27), Unit.by_code(29), Unit.by_code(28)
VOLT, AMPERE, HERTZ, CELSIUS = (Unit.by_code(35), Unit.by_code(33), Unit.by_code(44),
                                Unit.by_code(9))  # fmt: skip

CLOCK: Final = OAD(0x4000, 2)
CLOCK_OBIS: Final = ObisCode(0, 0, 1, 0, 0)
FROZEN_TIME: Final = OAD(0x2021, 2)  # the frozen record's time (date_time_s)
FROZEN_NUMBER: Final = OAD(0x2023, 2)  # the frozen record's sequence number
EVENT_NUMBER: Final = OAD(0x2022, 2)
EVENT_START: Final = OAD(0x201E, 2)
EVENT_END: Final = OAD(0x2020, 2)
EVENT_SOURCE: Final = OAD(0x2024, 2)

TARIFFS: Final = 4


@attrs.frozen
class Quantity:
    """How one element of an attribute is filed: its OBIS-like code, unit and display
    scaler (kWh: Wh, 3), and the decimal scaler of the raw number (energy: -2)."""

    name: str
    obis: ObisCode
    unit: Unit | None = None
    scaler: int = 0
    raw_scaler: int = 0
    demand: bool = False  # a structure {value, date_time_s}: the time is meter_time


@attrs.frozen
class ObjectInfo:
    """One OI and attribute: its name and the quantities of its elements (1-based: element
    1 is the total of an energy array, phase A of a voltage array; an attribute that is one
    value has one quantity, element 0)."""

    oi: int
    attribute: int
    name: str
    elements: tuple[Quantity, ...]
    array: bool = True


# Energy and demand kinds: OI low byte -> name, OBIS C, energy unit, demand unit.
_ENERGY: Final = (
    (0x00, "combined active", 15, WH, W),
    (0x10, "forward active", 1, WH, W),
    (0x20, "reverse active", 2, WH, W),
    (0x30, "combined reactive 1", 3, VARH, VAR),
    (0x40, "combined reactive 2", 4, VARH, VAR),
    (0x50, "quadrant I reactive", 5, VARH, VAR),
    (0x60, "quadrant II reactive", 6, VARH, VAR),
    (0x70, "quadrant III reactive", 7, VARH, VAR),
    (0x80, "quadrant IV reactive", 8, VARH, VAR),
    (0x90, "forward apparent", 9, VAH, VA),
    (0xA0, "reverse apparent", 10, VAH, VA),
)
_PHASES: Final = ((1, "phase A", 20), (2, "phase B", 40), (3, "phase C", 60))


def _table() -> dict[tuple[int, int], ObjectInfo]:
    table: dict[tuple[int, int], ObjectInfo] = {}

    def add(info: ObjectInfo) -> None:
        table[(info.oi, info.attribute)] = info

    for low, name, c, energy_unit, demand_unit in _ENERGY:
        rates = ("total", *(f"tariff {t}" for t in range(1, TARIFFS + 1)))
        for phase, phase_name, offset in ((0, "", 0), *_PHASES):
            oi = low | phase
            label = f"{phase_name} {name}".strip()
            add(ObjectInfo(oi, 2, f"{label} energy", tuple(
                Quantity(f"{label} energy, {rate}", ObisCode(1, 0, c + offset, 8, t),
                         energy_unit, 3, -2)
                for t, rate in enumerate(rates))))  # fmt: skip
            add(ObjectInfo(oi, 4, f"{label} energy (high precision)", tuple(
                Quantity(f"{label} energy, {rate}", ObisCode(1, 0, c + offset, 8, t),
                         energy_unit, 3, -4)
                for t, rate in enumerate(rates))))  # fmt: skip
            if low == 0x00:
                continue  # no combined-active demand
            add(ObjectInfo(0x1000 | oi, 2, f"{label} maximum demand", tuple(
                Quantity(f"{label} maximum demand, {rate}", ObisCode(1, 0, c + offset, 6, t),
                         demand_unit, 3, -4, demand=True)
                for t, rate in enumerate(rates))))  # fmt: skip
    phases = (("phase A", 0), ("phase B", 20), ("phase C", 40))
    add(ObjectInfo(0x2000, 2, "voltage", tuple(
        Quantity(f"{p} voltage", ObisCode(1, 0, 32 + o, 7, 0), VOLT, 0, -1) for p, o in phases)))
    add(ObjectInfo(0x2001, 2, "current", tuple(
        Quantity(f"{p} current", ObisCode(1, 0, 31 + o, 7, 0), AMPERE, 0, -3)
        for p, o in phases)))  # fmt: skip
    totals = (("total", None), ("phase A", 20), ("phase B", 40), ("phase C", 60))
    for oi, name, c, unit in ((0x2004, "active power", 16, W), (0x2005, "reactive power", 3, VAR),
                              (0x2006, "apparent power", 9, VA)):  # fmt: skip
        add(ObjectInfo(oi, 2, name, tuple(
            Quantity(f"{p} {name}", ObisCode(1, 0, c if o is None else (c % 20) + o, 7, 0),
                     unit, 0, -1)
            for p, o in totals)))  # fmt: skip
    add(ObjectInfo(0x200A, 2, "power factor", tuple(
        Quantity(f"{p} power factor", ObisCode(1, 0, 13 + (o or 0), 7, 0), None, 0, -3)
        for p, o in totals)))  # fmt: skip
    add(ObjectInfo(0x200F, 2, "grid frequency",
                   (Quantity("grid frequency", ObisCode(1, 0, 14, 7, 0), HERTZ, 0, -2),),
                   array=False))  # fmt: skip
    add(ObjectInfo(0x2010, 2, "meter temperature",
                   (Quantity("meter temperature", ObisCode(0, 0, 96, 9, 0), CELSIUS, 0, -1),),
                   array=False))  # fmt: skip
    add(ObjectInfo(0x2011, 2, "clock battery voltage",
                   (Quantity("clock battery voltage", ObisCode(0, 0, 96, 6, 3), VOLT, 0, -2),),
                   array=False))  # fmt: skip
    add(ObjectInfo(0x2017, 2, "current active demand",
                   (Quantity("current active demand", ObisCode(1, 0, 1, 4, 0), W, 3, -4),),
                   array=False))  # fmt: skip
    add(ObjectInfo(0x4000, 2, "date and time",
                   (Quantity("date and time", CLOCK_OBIS),), array=False))
    add(ObjectInfo(0x4001, 2, "communication address",
                   (Quantity("communication address", ObisCode(0, 0, 96, 1, 0)),), array=False))
    add(ObjectInfo(0x4002, 2, "meter number",
                   (Quantity("meter number", ObisCode(0, 0, 96, 1, 1)),), array=False))
    return table


OBJECTS: Final = _table()


def object_info(oad: OAD) -> ObjectInfo | None:
    return OBJECTS.get((oad.oi, oad.number))


def quantity(oad: OAD) -> Quantity | None:
    """The quantity of one element (``oad.index`` 1..n) or of a single-value attribute."""
    info = object_info(oad)
    if info is None:
        return None
    if not info.array:
        return info.elements[0] if oad.index == 0 else None
    if 1 <= oad.index <= len(info.elements):
        return info.elements[oad.index - 1]
    return None


def obis_table() -> list[tuple[str, str, str]]:
    """(OAD of the element, OBIS code, name) of every quantity fep maps: the table
    docs/protocols/dlt698.md prints."""
    rows = []
    for info in OBJECTS.values():
        for n, q in enumerate(info.elements, 1):
            oad = OAD(info.oi, info.attribute, n if info.array else 0)
            rows.append((str(oad), str(q.obis), q.name))
    return rows


# ---------------------------------------------------------------------------
# Events (30xx event objects)
# ---------------------------------------------------------------------------


@attrs.frozen
class EventInfo:
    oi: int
    name: str
    kind: EventKind
    severity: Severity
    end_kind: EventKind | None = None  # what the end of the event is, when it is one


_EVENT_LIST: Final = (
    EventInfo(0x3000, "voltage loss", EventKind.PHASE_LOSS, Severity.MAJOR),
    EventInfo(0x3001, "under-voltage", EventKind.UNDER_VOLTAGE, Severity.MINOR),
    EventInfo(0x3002, "over-voltage", EventKind.OVER_VOLTAGE, Severity.MINOR),
    EventInfo(0x3003, "phase break", EventKind.PHASE_LOSS, Severity.MAJOR),
    EventInfo(0x3004, "current loss", EventKind.OTHER, Severity.MINOR),
    EventInfo(0x3005, "over-current", EventKind.OVER_CURRENT, Severity.MINOR),
    EventInfo(0x3007, "power reversal", EventKind.REVERSE_ENERGY, Severity.MINOR),
    EventInfo(0x3008, "overload", EventKind.OTHER, Severity.MINOR),
    EventInfo(0x3011, "power down", EventKind.POWER_OUTAGE, Severity.MAJOR,
              EventKind.POWER_RESTORED),
    EventInfo(0x3012, "programming", EventKind.OTHER, Severity.INFO),
    EventInfo(0x3013, "meter cleared", EventKind.OTHER, Severity.MAJOR),
    EventInfo(0x3014, "demand cleared", EventKind.OTHER, Severity.MINOR),
    EventInfo(0x3015, "events cleared", EventKind.OTHER, Severity.MINOR),
    EventInfo(0x3016, "clock set", EventKind.CLOCK_SET, Severity.INFO),
    EventInfo(0x301B, "meter cover opened", EventKind.COVER_OPEN, Severity.CRITICAL),
    EventInfo(0x301C, "terminal cover opened", EventKind.TERMINAL_COVER_OPEN, Severity.CRITICAL),
    EventInfo(0x301D, "voltage imbalance", EventKind.PHASE_IMBALANCE, Severity.MINOR),
    EventInfo(0x301E, "current imbalance", EventKind.PHASE_IMBALANCE, Severity.MINOR),
    EventInfo(0x302A, "constant magnetic field", EventKind.MAGNETIC_TAMPER, Severity.CRITICAL),
    EventInfo(0x3106, "terminal power down", EventKind.POWER_OUTAGE, Severity.MAJOR,
              EventKind.POWER_RESTORED),
)  # fmt: skip
EVENTS: Final = {e.oi: e for e in _EVENT_LIST}

# Frozen objects (50xx): OI -> name, and the period of their records where it is fixed.
FROZEN: Final = {
    0x5000: ("instant", None),
    0x5001: ("second", None),
    0x5002: ("minute", None),
    0x5003: ("hour", timedelta(hours=1)),
    0x5004: ("day", timedelta(days=1)),
    0x5005: ("settlement day", None),
    0x5006: ("month", None),
    0x5007: ("year", None),
}


# ---------------------------------------------------------------------------
# Values to records
# ---------------------------------------------------------------------------


class NoMapping(Exception):
    """An attribute fep has no quantity for, or a value of another type than it should
    be (the item is skipped and said so; nothing else is lost)."""


def _number(data: Data) -> int | float | None:
    if data.tag is DataType.NULL:
        return None
    if isinstance(data.value, bool) or not isinstance(data.value, int | float):
        raise NoMapping(f"a number was expected, got {data.tag.name.lower()}")
    value: int | float = data.value
    return value


def scaled(data: Data, raw_scaler: int) -> Value:
    """A numeric Data as a Decimal with the raw scaler applied (None for null)."""
    number = _number(data)
    if number is None:
        return None
    return Decimal(str(number)).scaleb(raw_scaler) if raw_scaler else Decimal(str(number))


def _plain(data: Data) -> Value:
    if data.tag is DataType.NULL:
        return None
    if isinstance(data.value, bytes):
        return data.value.hex().upper()
    if isinstance(data.value, bool | int | str):
        return data.value
    return str(data.value)


def readings(
    result: ResultNormal,
    *,
    meter: str,
    tz: tzinfo,
    received: datetime,
    meter_time: datetime | None = None,
    prefix: str = "",
) -> list[Reading]:
    """The Readings of one attribute's value (every element of an array: total and
    tariffs, the phases). NoMapping when fep has no quantity for it or the value's shape
    is not the standard's."""
    if result.data is None:
        raise NoMapping(f"refused: DAR {result.dar}")
    return _readings_of(result.oad, result.data, meter=meter, tz=tz, received=received,
                        meter_time=meter_time, prefix=prefix)  # fmt: skip


def _readings_of(
    oad: OAD,
    data: Data,
    *,
    meter: str,
    tz: tzinfo,
    received: datetime,
    meter_time: datetime | None,
    prefix: str,
) -> list[Reading]:
    info = object_info(oad)
    if info is None:
        raise NoMapping(f"no quantity known for OI {oad.oi:04X} attribute {oad.number}")
    if info.array and oad.index == 0:
        if data.tag is DataType.NULL:
            return []
        if data.tag is not DataType.ARRAY:
            raise NoMapping(f"{info.name}: an array was expected, got {data.tag.name.lower()}")
        out: list[Reading] = []
        for n, element in enumerate(data.items[: len(info.elements)], 1):
            out += _readings_of(OAD(oad.oi, oad.attribute, n), element, meter=meter, tz=tz,
                                received=received, meter_time=meter_time, prefix=prefix)
        return out
    q = quantity(oad)
    if q is None:
        raise NoMapping(f"no quantity known for element {oad.index} of {oad}")
    when = meter_time
    native_id = prefix + str(oad)
    if oad.oi == CLOCK.oi:
        stamp = data.to_datetime(tz)
        if stamp is None:
            raise NoMapping(f"clock value {data} is no time")
        stamp = stamp.astimezone(UTC)
        return [Reading(meter, q.obis, stamp.isoformat(), meter_time=stamp,
                        received_time=received, source=PROTOCOL,
                        native_id=native_id)]  # fmt: skip
    if q.demand:
        if data.tag is DataType.NULL:
            return []
        if data.tag is not DataType.STRUCTURE or len(data.items) != 2:
            raise NoMapping(f"{q.name}: a structure {{value, time}} was expected")
        value = scaled(data.items[0], q.raw_scaler)
        at = data.items[1].to_datetime(tz)
        when = at.astimezone(UTC) if at is not None else meter_time
    elif q.unit is None and q.raw_scaler == 0 and not isinstance(data.value, int | float):
        value = _plain(data)
    else:
        value = scaled(data, q.raw_scaler)
    return [_reading(meter, q, value, when, received, native_id)]


def _reading(meter: str, q: Quantity, value: Value, when: datetime | None,
             received: datetime, native_id: str) -> Reading:
    """The Reading of one value of ``q``; built without Reading's converters when the
    times are already what they would make (UTC), as a frozen record's thousands of
    readings per answer are."""
    if received.tzinfo is UTC and (when is None or when.tzinfo is UTC):
        return trusted_reading(meter, q.obis, value, q.unit, q.scaler, when, received,
                               Quality.OK, PROTOCOL, native_id)  # fmt: skip
    return Reading(meter, q.obis, value, q.unit, q.scaler, meter_time=when,
                   received_time=received, source=PROTOCOL, native_id=native_id)


def _column_oads(rcsd: Sequence[CSD]) -> list[OAD | None]:
    return [c.oad for c in rcsd]


def _find(columns: Sequence[OAD | None], wanted: OAD) -> int | None:
    for i, oad in enumerate(columns):
        if oad is not None and oad.oi == wanted.oi and oad.number == wanted.number:
            return i
    return None


def _column_plan(columns: Sequence[OAD | None], time_col: int | None, prefix: str
                 ) -> list[tuple[OAD, Quantity | None, str] | None]:  # fmt: skip
    """How each column of a record answer's rows is read: None (not a value: no OAD, the
    frozen time, the frozen number); (OAD, quantity, native id) for one number of a known
    quantity; (OAD, None, "") for what _readings_of reads row by row (arrays, the clock,
    demands, texts, OADs with no quantity known)."""
    plan: list[tuple[OAD, Quantity | None, str] | None] = []
    for i, oad in enumerate(columns):
        if oad is None or i == time_col or oad.oi == FROZEN_NUMBER.oi:
            plan.append(None)
            continue
        info = object_info(oad)
        q = quantity(oad) if info is not None and not (info.array and oad.index == 0) else None
        if (q is None or oad.oi == CLOCK.oi or q.demand
                or (q.unit is None and q.raw_scaler == 0)):
            plan.append((oad, None, ""))
        else:
            plan.append((oad, q, prefix + str(oad)))
    return plan


def record_records(
    result: ResultRecord,
    *,
    meter: str,
    tz: tzinfo,
    received: datetime,
    period: timedelta | None = None,
) -> tuple[list[Record], list[tuple[str, str]]]:
    """The records of a record answer: frozen rows (50xx) as Readings filed at their frozen
    time (20210200), or IntervalBlocks per quantity when ``period`` is given (a row's time
    closes the interval before it, as load profiles hold registers); event rows (30xx) as
    MeterEvents (the start, and the end where the event has one). Also the columns not
    understood, (native id, why)."""
    if result.rows is None:
        raise NoMapping(f"record {result.oad} refused: DAR {result.dar}")
    columns = _column_oads(result.rcsd)
    skipped: list[tuple[str, str]] = []
    if result.oad.oi in EVENTS or 0x3000 <= result.oad.oi <= 0x31FF:
        return _events(result, columns, meter=meter, tz=tz, received=received), skipped
    time_col = _find(columns, FROZEN_TIME)
    out: list[Reading] = []
    prefix = f"{result.oad}/"
    plan = _column_plan(columns, time_col, prefix)
    for row in result.rows:
        when = None
        if time_col is not None:
            stamp = row[time_col].to_datetime(tz)
            when = stamp.astimezone(UTC) if stamp is not None else None
        for data, column in zip(row, plan, strict=True):
            if column is None:
                continue
            oad, q, native_id = column
            try:
                if q is None:
                    out += _readings_of(oad, data, meter=meter, tz=tz, received=received,
                                        meter_time=when, prefix=prefix)  # fmt: skip
                    continue
                # One number of a quantity known for the whole column (the usual frozen
                # row): what _readings_of makes of it, without looking the column up again.
                value = scaled(data, q.raw_scaler)
            except NoMapping as e:
                item = (prefix + str(oad), str(e))
                if item not in skipped:
                    skipped.append(item)
                continue
            out.append(_reading(meter, q, value, when, received, native_id))
    if period is None:
        return list(out), skipped
    return list(_blocks(out, period, received)), skipped


# Day- and month-frozen values filed as interval series carry their own OBIS F group (the
# minute-frozen profile keeps 255), so the three series of one register never share an
# interval start in the store.
DAY_SERIES: Final = 1
MONTH_SERIES: Final = 2


def month_start(t: datetime) -> datetime:
    """00:00 on the first of ``t``'s month (``t``'s zone)."""
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(t: datetime, n: int) -> datetime:
    """``t`` (a month start) ``n`` calendar months later, in its zone."""
    index = t.year * 12 + t.month - 1 + n
    return t.replace(year=index // 12, month=index % 12 + 1)


def frozen_boundaries(kind: str, since: datetime, until: datetime, tz: tzinfo) -> list[datetime]:
    """The starts (UTC) of the whole day (``kind`` "day": local midnights) or month
    ("month": the first of each month, local) intervals in [since, until) that have ended
    by ``until``."""
    local = since.astimezone(tz)
    if kind == "day":
        t = local.replace(hour=0, minute=0, second=0, microsecond=0)
        step = (lambda x: (x + timedelta(days=1)).astimezone(tz))  # noqa: E731
    else:
        t = month_start(local)
        step = (lambda x: add_months(x, 1))  # noqa: E731
    if t < local:
        t = step(t)
    out = []
    while step(t) <= until:
        out.append(t.astimezone(UTC))
        t = step(t)
    return out


def frozen_series(readings_: Iterable[Record], kind: str, tz: tzinfo) -> list[IntervalBlock]:
    """Day- or month-frozen rows (Readings at their frozen time) as one-interval blocks: a
    row frozen at local midnight (the first of a month) closes the day (month) before it;
    the blocks' OBIS carry F = DAY_SERIES or MONTH_SERIES."""
    series = DAY_SERIES if kind == "day" else MONTH_SERIES
    out = []
    for r in readings_:
        if not isinstance(r, Reading) or r.meter_time is None \
                or not isinstance(r.value, Decimal | int):
            continue
        end = r.time.astimezone(tz)
        start = end - timedelta(days=1) if kind == "day" else add_months(month_start(end), -1)
        start_utc = start.astimezone(UTC)
        if kind == "month" and end != month_start(end):
            continue  # not frozen at a month's start: no month it closes
        out.append(IntervalBlock(
            meter=r.meter, obis=attrs.evolve(r.obis, f=series), start=start_utc,
            period=r.time - start_utc, values=(r.value,), statuses=(Quality.OK,),
            unit=r.unit, scaler=r.scaler, received_time=r.received_time, source=PROTOCOL))
    return out


def _blocks(readings_: Iterable[Reading], period: timedelta,
            received: datetime) -> list[IntervalBlock]:  # fmt: skip
    """Runs of readings ``period`` apart, one block per quantity and run."""
    series: dict[str, list[Reading]] = {}
    for r in readings_:
        if r.meter_time is not None and isinstance(r.value, Decimal | int):
            series.setdefault(r.native_id or str(r.obis), []).append(r)
    blocks = []
    for points in series.values():
        points.sort(key=lambda p: p.time)
        run = [points[0]]
        for point in [*points[1:], None]:
            if point is not None and point.time - run[-1].time == period:
                run.append(point)
                continue
            first = run[0]
            blocks.append(IntervalBlock(
                meter=first.meter, obis=first.obis, start=first.time - period, period=period,
                values=tuple(p.value for p in run), statuses=tuple(Quality.OK for _ in run),
                unit=first.unit, scaler=first.scaler, received_time=received, source=PROTOCOL,
            ))  # fmt: skip
            if point is not None:
                run = [point]
    return blocks


def _events(
    result: ResultRecord,
    columns: Sequence[OAD | None],
    *,
    meter: str,
    tz: tzinfo,
    received: datetime,
) -> list[Record]:
    info = EVENTS.get(result.oad.oi) or EventInfo(
        result.oad.oi, f"event {result.oad.oi:04X}", EventKind.OTHER, Severity.MINOR
    )
    start_col = _find(columns, EVENT_START)
    end_col = _find(columns, EVENT_END)
    number_col = _find(columns, EVENT_NUMBER)
    out: list[Record] = []
    for row in result.rows or ():
        number = row[number_col].value if number_col is not None else None
        suffix = f" #{number}" if isinstance(number, int) else ""
        start = row[start_col].to_datetime(tz) if start_col is not None else None
        end = row[end_col].to_datetime(tz) if end_col is not None else None
        code = f"{result.oad.oi:04X}"
        if start is not None:
            out.append(MeterEvent(meter, code, info.kind, info.severity, start,
                                  f"{info.name} began{suffix}", received, PROTOCOL))
        if end is not None:
            out.append(MeterEvent(meter, f"{code}-end", info.end_kind or info.kind,
                                  Severity.INFO if info.end_kind else info.severity, end,
                                  f"{info.name} ended{suffix}", received, PROTOCOL))
    return out


__all__ = [
    "CLOCK",
    "CLOCK_OBIS",
    "EVENTS",
    "FROZEN",
    "FROZEN_TIME",
    "OBJECTS",
    "PROTOCOL",
    "NoMapping",
    "ObjectInfo",
    "Quantity",
    "obis_table",
    "object_info",
    "quantity",
    "readings",
    "record_records",
]
