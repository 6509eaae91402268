"""Records from the body of a pushed Data-Notification.

Meters lay out their push bodies in a few common ways; this module reads them without
configuration:
- a list of structures ``{logical name, value[, scaler_unit]}`` (Aidon HAN, fep's simulator,
  many IDIS push setups that capture registers with their scaler and unit);
- a flat structure of ``logical name, value`` pairs, optionally after a list identifier
  (Kamstrup HAN): the unit is taken from the OBIS code's quantity (scaler 0), since the
  meter does not send one.
A clock entry (0.0.1.0.0.255) or the notification's date-time gives the readings' meter
time; the logical device name (0.0.42.0.0.255) identifies the meter when nothing else does.
An event object (0.0.96.11.e.255, the code of the event just logged in event log
0.0.99.98.e.255, as IDIS alarm and last-gasp pushes carry it) becomes a MeterEvent filed
under the same code as when that log is read (``dlms:99.98.e:CODE``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import attrs

from fep.errors import FrameError
from fep.model import EventKind, MeterEvent, ObisCode, Reading, Severity, Unit
from fep.protocols.dlms import axdr
from fep.protocols.dlms.apdu import DataNotification
from fep.protocols.dlms.axdr import Data, DataType
from fep.protocols.dlms.cosem import STANDARD_EVENTS, ScalerUnit, register_reading

CLOCK = ObisCode(0, 0, 1, 0, 0, 255)
LOGICAL_DEVICE_NAME = ObisCode(0, 0, 42, 0, 0, 255)


@attrs.frozen
class PushContent:
    """What a push said: the readings, the meter time, the logical device name if sent."""

    readings: tuple[Reading, ...]
    meter_time: datetime | None
    logical_device_name: bytes | None
    events: tuple[MeterEvent, ...] = ()


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


# Scalers of meters that push name/value pairs without scaler_unit, by the list identifier
# they send first: (C, D) of the OBIS code -> scaler. Kamstrup HAN (Norway) documents
# currents in 0.01 A and energies in 0.01 kWh.
_KAMSTRUP = {(31, 7): -2, (51, 7): -2, (71, 7): -2, (1, 8): 1, (2, 8): 1, (3, 8): 1, (4, 8): 1}
_LIST_SCALERS: dict[str, dict[tuple[int, int], int]] = {
    "Kamstrup_V0001": _KAMSTRUP,
}


def _entries(body: Data) -> list[tuple[ObisCode, Data, ScalerUnit | None]]:
    items = list(body) if body.type in (DataType.ARRAY, DataType.STRUCTURE) else []
    if items and all(i.type == DataType.STRUCTURE and len(i) >= 2 for i in items):
        entries = []
        for n, item in enumerate(items):
            obis = _obis_of(item[0])
            if obis is None:
                raise FrameError(f"push entry {n}: no logical name", field="notification-body")
            scaler_unit = (
                ScalerUnit.from_data(item[2], f"push entry {n} scaler_unit")
                if len(item) >= 3 and item[2].type == DataType.STRUCTURE
                else None
            )
            entries.append((obis, item[1], scaler_unit))
        return entries
    # Flat pairs, possibly after leading identifiers (list version, list id).
    start = next((i for i, item in enumerate(items) if _obis_of(item) is not None), None)
    if start is None or (len(items) - start) % 2:
        raise FrameError(
            "push body is neither {name, value} structures nor name/value pairs",
            field="notification-body",
        )
    pairs: list[tuple[ObisCode, Data, ScalerUnit | None]] = []
    overrides = _LIST_SCALERS.get(
        items[0].value if items[0].type == DataType.VISIBLE_STRING else "", {}
    )
    for k in range(start, len(items), 2):
        obis = _obis_of(items[k])
        if obis is None:
            raise FrameError(f"push item {k}: expected a logical name", field="notification-body")
        scaler = overrides.get((obis.c, obis.d))
        conventional = _conventional_unit(obis)
        if scaler is not None and conventional is not None:
            pairs.append((obis, items[k + 1], ScalerUnit(scaler, conventional.unit)))
        else:
            pairs.append((obis, items[k + 1], conventional))
    return pairs


def logical_device_name(notification: DataNotification) -> bytes | None:
    """The logical device name (0.0.42.0.0.255) a push carries, if it carries one.
    Raises FrameError when the body is in none of the layouts this module knows."""
    for obis, value, _ in _entries(notification.body):
        if obis == LOGICAL_DEVICE_NAME and value.type == DataType.OCTET_STRING:
            return bytes(value.value)
    return None


def decode_push(
    meter: str, notification: DataNotification, *, default_deviation: int | None = None,
    received: datetime | None = None,
) -> PushContent:
    """The readings and events of one Data-Notification for ``meter``.
    ``default_deviation`` (Blue Book sign, minutes) places times the meter sends without a
    deviation; ``received`` files events that carry no time at all.

    Raises FrameError when the body is in none of the layouts this module knows, an entry
    has no logical name, a scaler_unit, clock or event code has the wrong type, or a scaler
    cannot be applied. Nothing else escapes."""
    entries = _entries(notification.body)
    meter_time = (
        notification.date_time.to_datetime(default_deviation) if notification.date_time else None
    )
    device_name: bytes | None = None
    for obis, value, _ in entries:
        if obis == CLOCK:
            stamp = axdr.as_datetime(value, "push clock").to_datetime(default_deviation)
            if stamp is not None:
                meter_time = stamp
        elif obis == LOGICAL_DEVICE_NAME and value.type == DataType.OCTET_STRING:
            device_name = value.value
    readings = []
    events = []
    for obis, value, scaler_unit in entries:
        if obis in (CLOCK, LOGICAL_DEVICE_NAME):
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
        readings.append(register_reading(meter, obis, value, scaler_unit, meter_time=meter_time))
    return PushContent(tuple(readings), meter_time, device_name, tuple(events))
