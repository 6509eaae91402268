"""Records from the body of a pushed Data-Notification.

Meters lay out their push bodies in a few common ways; this module reads them without
configuration:
- a list of structures ``{logical name, value[, scaler_unit]}`` (Aidon HAN, fep's simulator,
  many IDIS push setups that capture registers with their scaler and unit);
- a flat structure of ``logical name, value`` pairs, optionally after a list identifier
  (Kamstrup HAN): the unit and scaler from the list's layout (layouts.py), else the unit
  of the OBIS code's quantity (scaler 0), since the meter does not send one;
- bare values in the fixed order of a layout (layouts.py) found by the list identifier at
  the head of the list (Kaifa HAN ``KFM_001``) or by the list's length;
- structures and name/value pairs mixed in one list (the Austrian Kaifa MA309 customer
  interface: the clock as a pair, then structures with their scaler_unit).
A value the layout marks as a date-time is decoded as one (a 12-byte octet-string).
A clock entry (0.0.1.0.0.255) or the notification's date-time gives the readings' meter
time; the logical device name (0.0.42.0.0.255) identifies the meter when nothing else does.
An event object (0.0.96.11.e.255, the code of the event just logged in event log
0.0.99.98.e.255, as IDIS alarm and last-gasp pushes carry it) becomes a MeterEvent filed
under the same code as when that log is read (``dlms:99.98.e:CODE``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import attrs

from fep.errors import FrameError
from fep.model import (
    EventKind,
    MeterEvent,
    ObisCode,
    Quality,
    Reading,
    Severity,
    Unit,
    trusted_reading,
)
from fep.protocols.dlms import axdr
from fep.protocols.dlms.apdu import DataNotification
from fep.protocols.dlms.axdr import Data, DataType
from fep.protocols.dlms.cosem import (
    _INTEGER_TYPES,
    _SCALER_UNITS,
    STANDARD_EVENTS,
    CosemClass,
    ScalerUnit,
    register_reading,
)
from fep.protocols.dlms.layouts import LayoutItem, LayoutTable, shipped_layouts

CLOCK = ObisCode(0, 0, 1, 0, 0, 255)
LOGICAL_DEVICE_NAME = ObisCode(0, 0, 42, 0, 0, 255)
# Where pushed lists carry the meter's serial number: the device ID 1 (0-0:96.1.0, Aidon and
# Kaifa HAN), its manufacturing number (0-0:96.1.1) and the meter ID (1-1:0.0.5, Kamstrup).
SERIAL_NUMBERS = frozenset({
    ObisCode(0, 0, 96, 1, 0, 255), ObisCode(0, 0, 96, 1, 1, 255), ObisCode(1, 1, 0, 0, 5, 255),
})


@attrs.frozen
class PushContent:
    """What a push said: the readings, the meter time, the logical device name if sent."""

    readings: tuple[Reading, ...]
    meter_time: datetime | None
    logical_device_name: bytes | None
    events: tuple[MeterEvent, ...] = ()
    # The meter's serial number as the list gives it (SERIAL_NUMBERS), its identifier.
    serial: str | None = None
    list_identifier: str | None = None


def _is_event_object(obis: ObisCode) -> bool:
    return (obis.a, obis.b, obis.c, obis.d, obis.f) == (0, 0, 96, 11, 255)


def _obis_of(data: Data) -> ObisCode | None:
    if data.type == DataType.OCTET_STRING and len(data.value) == 6:
        return ObisCode.from_bytes(data.value)
    return None


def _conventional_unit(obis: ObisCode) -> ScalerUnit | None:
    """The unit an electricity OBIS code's quantity is measured in, where the meter sends
    none: active power/energy (C 1, 2, 15, 16; D 7 power, D 8 energy), reactive (C 3, 4),
    current (C 31, 51, 71) and voltage (C 32, 52, 72)."""
    if obis.a != 1:
        return None
    c, d = obis.c, obis.d
    power, energy = d in (4, 5, 6, 7), d in (8, 9, 29)
    if c in (1, 2, 15, 16, 21, 22, 41, 42, 61, 62):
        if power:
            return ScalerUnit(0, Unit.by_code(27))  # W
        if energy:
            return ScalerUnit(0, Unit.by_code(30))  # Wh
    if c in (3, 4, 23, 24, 43, 44, 63, 64):
        if power:
            return ScalerUnit(0, Unit.by_code(29))  # var
        if energy:
            return ScalerUnit(0, Unit.by_code(32))  # varh
    if c in (31, 51, 71, 11, 91) and d == 7:
        return ScalerUnit(0, Unit.by_code(33))  # A
    if c in (32, 52, 72, 12) and d == 7:
        return ScalerUnit(0, Unit.by_code(35))  # V
    return None


def _text(data: Data) -> str | None:
    """A list identifier's text (visible or octet string of printable ASCII)."""
    if data.type in (DataType.VISIBLE_STRING, DataType.UTF8_STRING):
        return str(data.value)
    if data.type == DataType.OCTET_STRING:
        raw: bytes = data.value
        if raw and all(32 <= b < 127 for b in raw):
            return raw.decode("ascii")
    return None


def _is_list_id(obis: ObisCode) -> bool:
    return (obis.c, obis.d, obis.e) == (0, 2, 129)


def list_identifier(body: Data) -> str | None:
    """The identifier a pushed list carries: the text or OBIS code at its head, or the
    value of its 0.2.129 (list version identifier) entry."""
    items = list(body) if body.type in (DataType.ARRAY, DataType.STRUCTURE) else []
    if not items:
        return None
    head = items[0]
    if head.type == DataType.STRUCTURE and len(head) >= 2:
        obis = _obis_of(head[0])
        return _text(head[1]) if obis is not None and _is_list_id(obis) else None
    obis = _obis_of(head)
    if obis is not None:
        if _is_list_id(obis) and len(items) > 1:
            return _text(items[1])
        return str(obis)
    return _text(head)


class _Name:
    """What a logical name is to a push, worked out once per 6-byte name: its OBIS code, its
    role (a register, the clock, the logical device name, an event object, a serial number),
    the unit its quantity is conventionally in and a register's native id."""

    __slots__ = ("conventional", "native_id", "obis", "role")

    def __init__(self, obis: ObisCode) -> None:
        self.obis = obis
        if _is_clock(obis):
            self.role = _CLOCK
        elif obis == LOGICAL_DEVICE_NAME:
            self.role = _DEVICE_NAME
        elif _is_event_object(obis):
            self.role = _EVENT
        elif obis in SERIAL_NUMBERS:
            self.role = _SERIAL
        else:
            self.role = _REGISTER
        self.conventional = _conventional_unit(obis)
        self.native_id = (
            f"{int(CosemClass.REGISTER)}/{obis.a}.{obis.b}.{obis.c}.{obis.d}.{obis.e}.{obis.f}/2")


_REGISTER, _CLOCK, _DEVICE_NAME, _EVENT, _SERIAL = range(5)
# Names already worked out: a bounded memo of a pure function of the six bytes.
_NAMES: dict[bytes, _Name] = {}
_MAX_NAMES = 4096


def _name_of(data: Data) -> _Name | None:
    """The logical name ``data`` is (an octet-string of 6), else None."""
    if data.type != _OCTET_STRING:
        return None
    raw = data.value
    if len(raw) != 6:
        return None
    if type(raw) is not bytes:
        raw = bytes(raw)
    name = _NAMES.get(raw)
    if name is None:
        name = _Name(ObisCode.from_bytes(raw))
        if len(_NAMES) < _MAX_NAMES:
            _NAMES[raw] = name
    return name


_OCTET_STRING = DataType.OCTET_STRING
_STRUCTURE = DataType.STRUCTURE
_SEQUENCES = (DataType.ARRAY, DataType.STRUCTURE)
_INTEGER = DataType.INTEGER
_ENUM = DataType.ENUM

# A list's entry: its name, value, scaler and unit (None: none known), and whether the
# value is a date-time by its layout.
Entry = tuple[_Name, Data, ScalerUnit | None, bool]


def _layout_unit(item: LayoutItem | None) -> tuple[ScalerUnit | None, bool]:
    if item is None:
        return None, False
    if item.date_time:
        return None, True
    return _item_scaler_unit(item), False


def _item_scaler_unit(item: LayoutItem) -> ScalerUnit | None:
    """A layout item's scaler and unit (None: it gives neither); a scaler alone applies to a
    quantity without unit (a power factor)."""
    if item.unit is None and not item.scaler:
        return None
    return ScalerUnit(item.scaler, item.unit)


def _entries(body: Data, identifier: str | None, layouts: LayoutTable | None = None
             ) -> list[Entry]:
    """The entries of a pushed list (``identifier``: its ``list_identifier``), one pass
    over its items for each layout tried."""
    if layouts is None:
        layouts = shipped_layouts()
    items: list[Data] = list(body.value) if body.type in _SEQUENCES else []
    units = layouts.units_of(identifier)
    entries: list[Entry] = []
    usual = _usual_entries(items, units) if items else None
    if usual is not None:
        return usual
    if items and all(i.type == _STRUCTURE and len(i.value) >= 2 for i in items):
        for n, item in enumerate(items):
            entry = _structure_entry(item, n, units)
            if entry is None:
                raise FrameError(f"push entry {n}: no logical name", field="notification-body")
            entries.append(entry)
        return entries
    names = [_name_of(item) for item in items]
    start = next((i for i, name in enumerate(names) if name is not None), None)
    pairs_shape = (
        start is not None and start <= 1 and (len(items) - start) % 2 == 0
        and all(name is not None for name in names[start::2])
    )
    # Bare values in the order of a layout, found by the list's identifier and length.
    layout = layouts.for_bare_list(identifier, len(items)) if items and not pairs_shape else None
    if layout is None and items and identifier is None:
        layout = layouts.for_bare_list(None, len(items))
    if layout is not None:
        return [
            (_layout_name(item.obis), value,
             _item_scaler_unit(item),
             item.date_time)
            for item, value in zip(layout.items, items, strict=True)
        ]
    # Structures with name/value pairs among them (the Austrian Kaifa MA309 list: the
    # clock as a bare pair, then {name, value[, scaler_unit]} structures).
    if not pairs_shape and any(i.type == _STRUCTURE for i in items):
        mixed = _mixed_entries(items, units)
        if mixed is not None:
            return mixed
    # Flat pairs, possibly after leading identifiers (list version, list id).
    if start is None or (len(items) - start) % 2:
        known = layouts.named(identifier)
        if known:
            lengths = ", ".join(str(len(k.items)) for k in known)
            raise FrameError(
                f"list {identifier!r} of {len(items)} values matches none of its layouts "
                f"({lengths} values)", field="notification-body")
        raise FrameError(
            "push body is neither {name, value} structures nor name/value pairs, and no "
            f"push layout is known for it (identifier {identifier!r}, {len(items)} values)",
            field="notification-body",
        )
    for k in range(start, len(items), 2):
        name = names[k]
        if name is None:
            raise FrameError(f"push item {k}: expected a logical name", field="notification-body")
        from_layout, date_time = _layout_unit(units.get(name.obis))
        entries.append((name, items[k + 1], from_layout or name.conventional, date_time))
    return entries


def _structure_entry(item: Data, n: int, units: dict[ObisCode, LayoutItem]) -> Entry | None:
    """The entry of one ``{logical name, value[, scaler_unit]}`` structure (None: its first
    field is no logical name); the layouts' unit where it sends no scaler_unit."""
    fields = item.value
    name = _name_of(fields[0])
    if name is None:
        return None
    scaler_unit: ScalerUnit | None = None
    if len(fields) >= 3:
        pair = fields[2]
        if pair.type is _STRUCTURE or pair.type == _STRUCTURE:
            scaler_unit = _scaler_unit(pair, n)
    if scaler_unit is None and units:
        scaler_unit, date_time = _layout_unit(units.get(name.obis))
    elif units:
        date_time = _layout_unit(units.get(name.obis))[1]
    else:
        date_time = False
    return (name, fields[1], scaler_unit, date_time)


def _mixed_entries(items: list[Data], units: dict[ObisCode, LayoutItem]) -> list[Entry] | None:
    """The entries of a list whose items are each either a ``{name, value[, scaler_unit]}``
    structure or a bare logical name followed by its value; None when it is not one."""
    entries: list[Entry] = []
    k = 0
    while k < len(items):
        item = items[k]
        if item.type == _STRUCTURE and len(item.value) >= 2:
            entry = _structure_entry(item, k, units)
            if entry is None:
                return None
            entries.append(entry)
            k += 1
            continue
        name = _name_of(item)
        if name is None or k + 1 >= len(items):
            return None
        from_layout, date_time = _layout_unit(units.get(name.obis))
        entries.append((name, items[k + 1], from_layout or name.conventional, date_time))
        k += 2
    return entries


def _usual_entries(items: list[Data], units: dict[ObisCode, LayoutItem]) -> list[Entry] | None:
    """The entries of a list of structures as meters usually send it ({logical name, value
    [, scaler_unit]}, names seen before, scaler_units decoded before or none) with no call
    per entry; None at the first item that is not usual (the general code then decodes the
    list, or raises)."""
    entries: list[Entry] = []
    append = entries.append
    names = _NAMES
    scaler_units = _SCALER_UNITS
    for item in items:
        if item.type is not _STRUCTURE:
            return None
        fields = item.value
        if len(fields) < 2:
            return None
        first = fields[0]
        raw = first.value
        if first.type is not _OCTET_STRING or type(raw) is not bytes:
            return None
        name = names.get(raw)
        if name is None:
            return None
        scaler_unit: ScalerUnit | None = None
        if len(fields) >= 3:
            pair = fields[2]
            if pair.type is _STRUCTURE:
                scaler_and_unit = pair.value
                if len(scaler_and_unit) != 2:
                    return None
                scaler, unit = scaler_and_unit
                if scaler.type is not _INTEGER or unit.type is not _ENUM:
                    return None
                scaler_unit = scaler_units.get((scaler.value, unit.value))
                if scaler_unit is None:
                    return None
            elif pair.type == _STRUCTURE:
                return None
        date_time = False
        if units:
            item_unit = units.get(name.obis)
            if item_unit is not None:
                if item_unit.date_time:
                    date_time = True
                elif scaler_unit is None:
                    scaler_unit = _item_scaler_unit(item_unit)
        append((name, fields[1], scaler_unit, date_time))
    return entries


def _scaler_unit(pair: Data, n: int) -> ScalerUnit:
    """An entry's {scaler, unit}: the usual pair from ScalerUnit's memo, else decoded."""
    fields = pair.value
    if len(fields) == 2:
        scaler, unit = fields
        if scaler.type is _INTEGER and unit.type is _ENUM:
            known = _SCALER_UNITS.get((scaler.value, unit.value))
            if known is not None:
                return known
    return ScalerUnit.from_data(pair, f"push entry {n} scaler_unit")


def _layout_name(obis: ObisCode) -> _Name:
    """The name of a layout's item (layouts are few and fixed: every name is kept)."""
    raw = obis.to_bytes()
    name = _NAMES.get(raw)
    if name is None:
        name = _Name(obis)
        if len(_NAMES) < _MAX_NAMES:
            _NAMES[raw] = name
    return name


def _is_clock(obis: ObisCode) -> bool:
    """The clock (0-b:1.0.0.255; Kamstrup HAN sends it as 0-1:1.0.0.255)."""
    return (obis.a, obis.c, obis.d, obis.e, obis.f) == (0, 1, 0, 0, 255)


def logical_device_name(
    notification: DataNotification, layouts: LayoutTable | None = None
) -> bytes | None:
    """The logical device name (0.0.42.0.0.255) a push carries, if it carries one.
    Raises FrameError when the body is in none of the layouts this module knows."""
    body = notification.body
    for name, value, _, _ in _entries(body, list_identifier(body), layouts):
        if name.role == _DEVICE_NAME and value.type == DataType.OCTET_STRING:
            return bytes(value.value)
    return None


def decode_push(
    meter: str, notification: DataNotification, *, default_deviation: int | None = None,
    received: datetime | None = None, layouts: LayoutTable | None = None,
) -> PushContent:
    """The readings and events of one Data-Notification for ``meter``.
    ``default_deviation`` (Blue Book sign, minutes) places times the meter sends without a
    deviation; ``received`` files events that carry no time at all; ``layouts`` read lists
    of bare values and give units and scalers the list does not carry.

    Raises FrameError when the body is in none of the layouts this module knows (or its
    identifier's layouts do not fit it), an entry has no logical name, a scaler_unit, clock,
    date-time or event code has the wrong type, or a scaler cannot be applied. Nothing else
    escapes."""
    body = notification.body
    identifier = list_identifier(body)
    entries = _entries(body, identifier, layouts)
    meter_time = (
        notification.date_time.to_datetime(default_deviation) if notification.date_time else None
    )
    device_name: bytes | None = None
    serial: str | None = None
    # The clock, device name and serial first: the clock's time is every reading's.
    for name, value, _, _ in entries:
        role = name.role
        if not role or role == _EVENT:  # a register (role 0) or an event
            continue
        if role == _CLOCK:
            stamp = axdr.as_datetime(value, "push clock").to_datetime(default_deviation)
            if stamp is not None:
                meter_time = stamp
        elif role == _DEVICE_NAME:
            if value.type == DataType.OCTET_STRING:
                device_name = value.value
        elif serial is None:
            serial = _text(value)
    readings: list[Reading] = []
    append = readings.append
    events = []
    # The integer registers of one push share the time it was received (register_reading,
    # for the other values, asks the clock once per reading).
    now = datetime.now(UTC)
    ok = Quality.OK
    # The usual registers are built without Reading's converters when the push's time is
    # already what they would make of it (UTC or none); else through Reading itself.
    build = (trusted_reading if meter_time is None or meter_time.tzinfo is UTC
             else Reading)
    for name, value, scaler_unit, date_time in entries:
        role = name.role
        if role:
            if role in (_CLOCK, _DEVICE_NAME):
                continue
            if role == _EVENT:
                obis = name.obis
                code = axdr.as_int(value, f"push event object {obis}")
                kind, severity, text = STANDARD_EVENTS.get(
                    code, (EventKind.OTHER, Severity.INFO, f"event {code}"))
                events.append(MeterEvent(
                    meter=meter, code=f"dlms:99.98.{obis.e}:{code}", kind=kind,
                    severity=severity, time=meter_time or received or datetime.now(UTC),
                    text=text, source="dlms-push"))
                continue
        if value.type in _INTEGER_TYPES and not date_time:
            # The usual register: an integer, scaled exactly (register_reading's first case).
            number = Decimal(value.value)
            if scaler_unit is None:
                append(build(meter, name.obis, number, None, 0, meter_time, now, ok, "dlms",
                             name.native_id))
                continue
            if scaler_unit.scaler:
                try:
                    number = number.scaleb(scaler_unit.scaler)
                except ArithmeticError:  # decimal.InvalidOperation, decimal.Overflow
                    raise FrameError(f"scaler {scaler_unit.scaler} cannot be applied",
                                     field="scaler") from None
            append(build(meter, name.obis, number, scaler_unit.unit, 0, meter_time, now, ok,
                         "dlms", name.native_id))
            continue
        append(register_reading(
            meter, name.obis, value, scaler_unit, meter_time=meter_time, date_time=date_time,
            default_deviation=default_deviation))
    return PushContent(tuple(readings), meter_time, device_name, tuple(events), serial,
                       identifier)
