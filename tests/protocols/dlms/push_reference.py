"""The push decoder as it was before issue 20's rework (fep/protocols/dlms/push.py at
1f3c4e5), plus issue 17's lists that mix name/value pairs with structures (the Austrian
Kaifa MA309 list): the reference the reworked single-pass decoder is compared with
(test_push_reference.py). Test-only; not maintained for speed."""

from __future__ import annotations

from datetime import UTC, datetime

from fep.errors import FrameError
from fep.model import EventKind, MeterEvent, ObisCode, Severity, Unit
from fep.protocols.dlms import axdr
from fep.protocols.dlms.apdu import DataNotification
from fep.protocols.dlms.axdr import Data, DataType
from fep.protocols.dlms.cosem import STANDARD_EVENTS, ScalerUnit, register_reading
from fep.protocols.dlms.layouts import LayoutTable, shipped_layouts
from fep.protocols.dlms.push import (
    LOGICAL_DEVICE_NAME,
    SERIAL_NUMBERS,
    PushContent,
    _conventional_unit,
    _is_clock,
    _is_event_object,
    _obis_of,
    _text,
    list_identifier,
)

Entry = tuple[ObisCode, Data, ScalerUnit | None, bool]


def _serial_of(obis: ObisCode, value: Data) -> str | None:
    if obis in SERIAL_NUMBERS:
        return _text(value)
    return None


def _layout_unit(
    layouts: LayoutTable, identifier: str | None, obis: ObisCode
) -> tuple[ScalerUnit | None, bool]:
    item = layouts.item_for(identifier, obis)
    if item is None:
        return None, False
    if item.date_time:
        return None, True
    return _scaled(item.scaler, item.unit), False


def _scaled(scaler: int, unit: Unit | None) -> ScalerUnit | None:
    # Issue 17: a layout item's scaler applies without a unit too (a power factor).
    return ScalerUnit(scaler, unit) if unit is not None or scaler else None



def _entries(body: Data, layouts: LayoutTable | None = None) -> list[Entry]:
    if layouts is None:
        layouts = shipped_layouts()
    items = list(body) if body.type in (DataType.ARRAY, DataType.STRUCTURE) else []
    identifier = list_identifier(body)
    if items and all(i.type == DataType.STRUCTURE and len(i) >= 2 for i in items):
        entries: list[Entry] = []
        for n, item in enumerate(items):
            obis = _obis_of(item[0])
            if obis is None:
                raise FrameError(f"push entry {n}: no logical name", field="notification-body")
            scaler_unit = (
                ScalerUnit.from_data(item[2], f"push entry {n} scaler_unit")
                if len(item) >= 3 and item[2].type == DataType.STRUCTURE
                else None
            )
            from_layout, date_time = _layout_unit(layouts, identifier, obis)
            entries.append((obis, item[1], scaler_unit or from_layout, date_time))
        return entries
    start = next((i for i, item in enumerate(items) if _obis_of(item) is not None), None)
    pairs_shape = (
        start is not None and start <= 1 and (len(items) - start) % 2 == 0
        and all(_obis_of(item) is not None for item in items[start::2])
    )
    # Bare values in the order of a layout, found by the list's identifier and length.
    layout = layouts.for_bare_list(identifier, len(items)) if items and not pairs_shape else None
    if layout is None and items and identifier is None:
        layout = layouts.for_bare_list(None, len(items))
    if layout is not None:
        return [
            (item.obis, value,
             _scaled(item.scaler, item.unit),
             item.date_time)
            for item, value in zip(layout.items, items, strict=True)
        ]
    # Structures and name/value pairs mixed (issue 17).
    if not pairs_shape and any(item.type == DataType.STRUCTURE for item in items):
        mixed = _mixed(items, layouts, identifier)
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
    pairs: list[Entry] = []
    for k in range(start, len(items), 2):
        obis = _obis_of(items[k])
        if obis is None:
            raise FrameError(f"push item {k}: expected a logical name", field="notification-body")
        from_layout, date_time = _layout_unit(layouts, identifier, obis)
        pairs.append((obis, items[k + 1], from_layout or _conventional_unit(obis), date_time))
    return pairs



def _mixed(items: list[Data], layouts: LayoutTable, identifier: str | None
           ) -> list[Entry] | None:
    """Each item a {name, value[, scaler_unit]} structure or a name followed by its value;
    None when the list is not that."""
    entries: list[Entry] = []
    k = 0
    while k < len(items):
        item = items[k]
        if item.type == DataType.STRUCTURE and len(item) >= 2:
            obis = _obis_of(item[0])
            if obis is None:
                return None
            scaler_unit = (
                ScalerUnit.from_data(item[2], f"push entry {k} scaler_unit")
                if len(item) >= 3 and item[2].type == DataType.STRUCTURE
                else None
            )
            from_layout, date_time = _layout_unit(layouts, identifier, obis)
            entries.append((obis, item[1], scaler_unit or from_layout, date_time))
            k += 1
            continue
        obis = _obis_of(item)
        if obis is None or k + 1 >= len(items):
            return None
        from_layout, date_time = _layout_unit(layouts, identifier, obis)
        entries.append((obis, items[k + 1], from_layout or _conventional_unit(obis), date_time))
        k += 2
    return entries


def reference_decode_push(
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
    entries = _entries(notification.body, layouts)
    meter_time = (
        notification.date_time.to_datetime(default_deviation) if notification.date_time else None
    )
    device_name: bytes | None = None
    serial: str | None = None
    for obis, value, _, _ in entries:
        if _is_clock(obis):
            stamp = axdr.as_datetime(value, "push clock").to_datetime(default_deviation)
            if stamp is not None:
                meter_time = stamp
        elif obis == LOGICAL_DEVICE_NAME and value.type == DataType.OCTET_STRING:
            device_name = value.value
        elif serial is None:
            serial = _serial_of(obis, value)
    readings = []
    events = []
    for obis, value, scaler_unit, date_time in entries:
        if _is_clock(obis) or obis == LOGICAL_DEVICE_NAME:
            continue
        if _is_event_object(obis):
            code = axdr.as_int(value, f"push event object {obis}")
            kind, severity, text = STANDARD_EVENTS.get(
                code, (EventKind.OTHER, Severity.INFO, f"event {code}"))
            events.append(MeterEvent(
                meter=meter, code=f"dlms:99.98.{obis.e}:{code}", kind=kind, severity=severity,
                time=meter_time or received or datetime.now(UTC), text=text,
                source="dlms-push"))
            continue
        readings.append(register_reading(
            meter, obis, value, scaler_unit, meter_time=meter_time, date_time=date_time,
            default_deviation=default_deviation))
    return PushContent(tuple(readings), meter_time, device_name, tuple(events), serial,
                       list_identifier(notification.body))


def reference_logical_device_name(
    notification: DataNotification, layouts: LayoutTable | None = None
) -> bytes | None:
    for obis, value, _, _ in _entries(notification.body, layouts):
        if obis == LOGICAL_DEVICE_NAME and value.type == DataType.OCTET_STRING:
            return bytes(value.value)
    return None
