"""The COSEM interface classes a head end reads (Blue Book): their class ids, attribute and
method indexes, and how their values become fep records (registers with scaler and unit,
profile buffers as IntervalBlocks, event logs as MeterEvents, the object list, the clock)."""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import attrs

from fep.errors import FrameError
from fep.model import (
    EventKind,
    IntervalBlock,
    MeterEvent,
    ObisCode,
    Quality,
    Reading,
    Severity,
    Unit,
    Value,
)
from fep.protocols.dlms import axdr
from fep.protocols.dlms.axdr import CosemDateTime, Data, DataType


class CosemClass(enum.IntEnum):
    DATA = 1
    REGISTER = 3
    EXTENDED_REGISTER = 4
    DEMAND_REGISTER = 5
    PROFILE_GENERIC = 7
    CLOCK = 8
    ASSOCIATION_LN = 15
    IMAGE_TRANSFER = 18
    PUSH_SETUP = 40
    SECURITY_SETUP = 64
    DISCONNECT_CONTROL = 70


# Attribute and method indexes by class (the ones fep uses; index 1 is always the name).
class RegisterAttr(enum.IntEnum):
    VALUE = 2
    SCALER_UNIT = 3
    STATUS = 4  # extended register; demand register: current_average_value is 2
    CAPTURE_TIME = 5


class DemandAttr(enum.IntEnum):
    CURRENT_AVERAGE_VALUE = 2
    LAST_AVERAGE_VALUE = 3
    SCALER_UNIT = 4
    STATUS = 5
    CAPTURE_TIME = 6
    START_TIME_CURRENT = 7
    PERIOD = 8
    NUMBER_OF_PERIODS = 9


class ProfileAttr(enum.IntEnum):
    BUFFER = 2
    CAPTURE_OBJECTS = 3
    CAPTURE_PERIOD = 4
    SORT_METHOD = 5
    SORT_OBJECT = 6
    ENTRIES_IN_USE = 7
    PROFILE_ENTRIES = 8


class ClockAttr(enum.IntEnum):
    TIME = 2
    TIME_ZONE = 3
    STATUS = 4
    DAYLIGHT_SAVINGS_BEGIN = 5
    DAYLIGHT_SAVINGS_END = 6
    DAYLIGHT_SAVINGS_DEVIATION = 7
    DAYLIGHT_SAVINGS_ENABLED = 8
    CLOCK_BASE = 9


class AssociationAttr(enum.IntEnum):
    OBJECT_LIST = 2
    ASSOCIATED_PARTNERS_ID = 3
    APPLICATION_CONTEXT_NAME = 4
    XDLMS_CONTEXT_INFO = 5
    AUTHENTICATION_MECHANISM_NAME = 6
    SECRET = 7
    ASSOCIATION_STATUS = 8


ASSOCIATION_REPLY_TO_HLS = 1  # method of class 15: reply_to_HLS_authentication
CURRENT_ASSOCIATION = ObisCode(0, 0, 40, 0, 0, 255)
CLOCK = ObisCode(0, 0, 1, 0, 0, 255)


class ImageTransferAttr(enum.IntEnum):
    BLOCK_SIZE = 2
    TRANSFERRED_BLOCKS_STATUS = 3
    FIRST_NOT_TRANSFERRED_BLOCK = 4
    ENABLED = 5
    STATUS = 6
    TO_ACTIVATE_INFO = 7


class ImageTransferMethod(enum.IntEnum):
    INITIATE = 1
    TRANSFER_BLOCK = 2
    VERIFY = 3
    ACTIVATE = 4


class ImageTransferStatus(enum.IntEnum):
    NOT_INITIATED = 0
    INITIATED = 1
    VERIFICATION_INITIATED = 2
    VERIFICATION_SUCCESSFUL = 3
    VERIFICATION_FAILED = 4
    ACTIVATION_INITIATED = 5
    ACTIVATION_SUCCESSFUL = 6
    ACTIVATION_FAILED = 7


class PushSetupAttr(enum.IntEnum):
    PUSH_OBJECT_LIST = 2
    SEND_DESTINATION_AND_METHOD = 3
    COMMUNICATION_WINDOW = 4
    RANDOMISATION_START_INTERVAL = 5
    NUMBER_OF_RETRIES = 6
    REPETITION_DELAY = 7


PUSH_METHOD = 1


class SecuritySetupAttr(enum.IntEnum):
    SECURITY_POLICY = 2
    SECURITY_SUITE = 3
    CLIENT_SYSTEM_TITLE = 4
    SERVER_SYSTEM_TITLE = 5


class SecuritySetupMethod(enum.IntEnum):
    SECURITY_ACTIVATE = 1
    KEY_TRANSFER = 2


class KeyId(enum.IntEnum):
    """Which key a security setup key transfer carries (Blue Book, class 64 key_id)."""

    GLOBAL_UNICAST_ENCRYPTION = 0
    GLOBAL_BROADCAST_ENCRYPTION = 1
    AUTHENTICATION = 2
    MASTER = 3  # the key encryption key itself (security setup version 1)


KEY_SIZE = 16  # security suite 0: AES-128


def key_transfer_data(keys: Sequence[tuple[KeyId, bytes]], kek: bytes) -> Data:
    """The parameter of security setup ``key_transfer`` (method 2): an array of
    ``key_data ::= structure {key_id: enum, key_wrapped: octet-string}``, each key wrapped
    with the master key (KEK) by the AES key wrap of RFC 3394."""
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap

    if len(kek) != KEY_SIZE:
        raise ValueError(f"a suite 0 master key (KEK) is {KEY_SIZE} bytes")
    items = []
    for key_id, key in keys:
        if len(key) != KEY_SIZE:
            raise ValueError(f"a suite 0 key is {KEY_SIZE} bytes")
        items.append(axdr.structure(axdr.enum_value(int(key_id)),
                                    axdr.octet_string(aes_key_wrap(kek, key))))
    return axdr.array(items)


def unwrap_key_transfer(data: Data, kek: bytes) -> list[tuple[KeyId, bytes]]:
    """The keys of a ``key_transfer`` parameter, unwrapped with the KEK (the meter's side).
    Raises FrameError for a malformed parameter, an unknown key id or a wrapped key that
    does not unwrap with this KEK (the RFC 3394 integrity check); nothing else."""
    from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

    if data.type != DataType.ARRAY or not 0 < len(data) <= len(KeyId):
        raise FrameError("key_transfer takes an array of 1..4 key_data", field="key_data")
    found = []
    for item in data:
        if item.type != DataType.STRUCTURE or len(item) != 2:
            raise FrameError("key_data is a structure of key_id and key_wrapped",
                             field="key_data")
        try:
            key_id = KeyId(axdr.as_int(item[0], "key_id"))
        except ValueError:
            raise FrameError("unknown key_id", field="key_id") from None
        wrapped = axdr.as_bytes(item[1], "key_wrapped")
        if len(wrapped) != KEY_SIZE + 8:
            raise FrameError("a wrapped suite 0 key is 24 bytes", field="key_wrapped")
        try:
            found.append((key_id, aes_key_unwrap(kek, wrapped)))
        except (InvalidUnwrap, ValueError):
            raise FrameError("wrapped key does not unwrap with the master key",
                             field="key_wrapped") from None
    return found


class DisconnectAttr(enum.IntEnum):
    OUTPUT_STATE = 2
    CONTROL_STATE = 3
    CONTROL_MODE = 4


class DisconnectMethod(enum.IntEnum):
    REMOTE_DISCONNECT = 1
    REMOTE_RECONNECT = 2


class ControlState(enum.IntEnum):
    DISCONNECTED = 0
    CONNECTED = 1
    READY_FOR_RECONNECTION = 2


# -- registers --------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class ScalerUnit:
    """A register's scaler (power of ten) and unit (the DLMS unit enumeration)."""

    scaler: int
    unit: Unit | None

    @classmethod
    def from_data(cls, data: Data, field: str = "scaler_unit") -> ScalerUnit:
        """Raises FrameError unless ``data`` is a structure {integer8 scaler, enum unit}."""
        if data.type != DataType.STRUCTURE or len(data.value) != 2:
            raise FrameError(f"{field}: expected structure {{scaler, unit}}", field=field)
        first, second = data.value
        usual = first.type == DataType.INTEGER and second.type == DataType.ENUM
        if usual:
            known = _SCALER_UNITS.get((first.value, second.value))
            if known is not None:
                return known
        decoded = cls._from_pair(first, second, field)
        if usual and len(_SCALER_UNITS) < _MAX_SCALER_UNITS:
            _SCALER_UNITS[(first.value, second.value)] = decoded
        return decoded

    @classmethod
    def _from_pair(cls, first: Data, second: Data, field: str) -> ScalerUnit:
        scaler = axdr.as_int(first, f"{field} scaler")
        if not -128 <= scaler <= 127:  # an integer (int8) in the Blue Book
            raise FrameError(f"{field}: scaler {scaler} is not an integer8", field=field)
        code = axdr.as_int(second, f"{field} unit")
        try:
            unit: Unit | None = Unit.by_code(code)
        except (KeyError, ValueError):
            unit = None
        if code in (255, 0):  # 255: count (no unit), 0: not defined
            unit = None
        return cls(scaler, unit)

    def to_data(self) -> Data:
        return axdr.structure(
            axdr.integer(self.scaler), axdr.enum_value(self.unit.code if self.unit else 255)
        )


NO_SCALER = ScalerUnit(0, None)
# {integer scaler, enum unit} pairs already decoded: a bounded memo of a pure function.
_SCALER_UNITS: dict[tuple[int, int], ScalerUnit] = {}
_MAX_SCALER_UNITS = 4096


def scaled_value(data: Data, scaler_unit: ScalerUnit | None) -> Value:
    """A register value with its scaler applied: numbers become Decimal (exact), strings
    and octet-strings stay as text (octet-strings as hex), booleans stay. Raises FrameError
    when the scaler cannot be applied (out of Decimal's range)."""
    t = data.type
    if t in _INTEGER_TYPES:  # the usual case first: an integer, scaled exactly
        number = Decimal(data.value)
        if not scaler_unit or not scaler_unit.scaler:
            return number
        try:
            return number.scaleb(scaler_unit.scaler)
        except ArithmeticError:  # decimal.InvalidOperation, decimal.Overflow
            raise FrameError(
                f"scaler {scaler_unit.scaler} cannot be applied", field="scaler"
            ) from None
    if axdr.is_number(data):
        raw = data.value
        number = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
        scaler = scaler_unit.scaler if scaler_unit else 0
        try:
            return number.scaleb(scaler) if scaler else number
        except ArithmeticError:  # decimal.InvalidOperation, decimal.Overflow
            raise FrameError(f"scaler {scaler} cannot be applied", field="scaler") from None
    if t == DataType.BOOLEAN:
        return bool(data.value)
    if t in (DataType.VISIBLE_STRING, DataType.UTF8_STRING):
        text: str = data.value
        return text
    if t == DataType.OCTET_STRING:
        raw_bytes: bytes = data.value
        if raw_bytes and all(32 <= b < 127 for b in raw_bytes):
            return raw_bytes.decode("ascii")
        return raw_bytes.hex()
    if t == DataType.NULL_DATA:
        return None
    if t == DataType.BIT_STRING:
        bits: str = data.value
        return bits
    return str(data.native())


# (class id, attribute) whose value is a date-time, sent as date-time or as an octet-string
# of 12: the clock's time, an extended register's capture time, a demand register's capture
# time and start of the current period.
DATE_TIME_ATTRIBUTES = frozenset({(8, 2), (4, 5), (5, 6), (5, 7)})


def is_date_time(value: Data) -> bool:
    """Whether ``value`` can be a COSEM date-time (the type, or an octet-string of 12)."""
    return value.type == DataType.DATE_TIME or (
        value.type == DataType.OCTET_STRING and len(value.value) == 12)


def register_reading(
    meter: str,
    obis: ObisCode,
    value: Data,
    scaler_unit: ScalerUnit | None,
    *,
    meter_time: datetime | None = None,
    class_id: int = CosemClass.REGISTER,
    attribute: int = 2,
    quality: Quality = Quality.OK,
    date_time: bool = False,
    default_deviation: int | None = None,
) -> Reading:
    """A Reading of one COSEM attribute value; the value is in the unit's base (Wh, V, ...)
    with the scaler already applied. A date-time (``date_time``, the attribute is one of
    ``DATE_TIME_ATTRIBUTES``, or the value's type says so) becomes its instant in UTC (ISO
    8601; its deviation applied, ``default_deviation`` where the meter sends none), its
    clock status in the quality, never hex. Raises FrameError as ``scaled_value`` does,
    or for a date-time that is none."""
    if value.type == DataType.DATE_TIME or (
        (date_time or (class_id, attribute) in DATE_TIME_ATTRIBUTES) and is_date_time(value)
    ):
        stamp = axdr.as_datetime(value, f"{obis} date-time")
        when = stamp.to_datetime(default_deviation)
        return Reading(
            meter=meter,
            obis=obis,
            value=when.isoformat() if when else None,
            meter_time=meter_time if meter_time is not None else when,
            quality=quality | clock_quality(stamp),
            source="dlms",
            native_id=f"{class_id}/{obis.a}.{obis.b}.{obis.c}.{obis.d}.{obis.e}.{obis.f}/"
                      f"{attribute}",
        )
    if date_time:
        raise FrameError(f"{obis}: expected a date-time, got {value.type.name}",
                         field="date-time")
    return Reading(
        meter=meter,
        obis=obis,
        value=scaled_value(value, scaler_unit),
        unit=scaler_unit.unit if scaler_unit else None,
        scaler=0,
        meter_time=meter_time,
        quality=quality,
        source="dlms",
        native_id=_native_id(class_id, obis, attribute),
    )


@functools.lru_cache(maxsize=4096)
def _native_id(class_id: int, obis: ObisCode, attribute: int) -> str:
    return f"{class_id}/{obis.a}.{obis.b}.{obis.c}.{obis.d}.{obis.e}.{obis.f}/{attribute}"


# -- object list ------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class ObjectListEntry:
    """One object of an Association LN's object_list."""

    class_id: int
    version: int
    logical_name: ObisCode
    # (attribute index, access mode) and (method index, access mode)
    attribute_access: tuple[tuple[int, int], ...] = ()
    method_access: tuple[tuple[int, int], ...] = ()

    def to_data(self) -> Data:
        return axdr.structure(
            axdr.long_unsigned(self.class_id),
            axdr.unsigned(self.version),
            axdr.octet_string(self.logical_name.to_bytes()),
            axdr.structure(
                axdr.array(
                    axdr.structure(axdr.integer(i), axdr.enum_value(mode), axdr.NULL)
                    for i, mode in self.attribute_access
                ),
                axdr.array(
                    axdr.structure(axdr.integer(i), axdr.enum_value(mode))
                    for i, mode in self.method_access
                ),
            ),
        )


def decode_object_list(data: Data) -> list[ObjectListEntry]:
    """An Association LN's object_list. Raises FrameError when it is not an array of
    structures {class_id, version, logical_name[, access rights]} of those types."""
    if data.type != DataType.ARRAY:
        raise FrameError("object_list: expected an array", field="object_list")
    entries = []
    for n, item in enumerate(data):
        field = f"object_list[{n}]"
        if item.type != DataType.STRUCTURE or len(item) < 3:
            raise FrameError(f"{field}: expected a structure", field=field)
        rights: list[tuple[int, int]] = []
        methods: list[tuple[int, int]] = []
        if len(item) > 3 and item[3].type == DataType.STRUCTURE and len(item[3]) >= 2:
            for rows, out in ((item[3][0], rights), (item[3][1], methods)):
                if rows.type != DataType.ARRAY:
                    raise FrameError(f"{field}: access rights are not arrays", field=field)
                for right in rows:
                    if right.type == DataType.STRUCTURE and len(right) >= 2:
                        out.append((axdr.as_int(right[0]), axdr.as_int(right[1])))
        entries.append(
            ObjectListEntry(
                axdr.as_int(item[0], f"{field} class_id"),
                axdr.as_int(item[1], f"{field} version"),
                _obis(item[2], f"{field} logical_name"),
                tuple(rights),
                tuple(methods),
            )
        )
    return entries


def _obis(data: Data, field: str) -> ObisCode:
    raw = axdr.as_bytes(data, field)
    if len(raw) != 6:
        raise FrameError(f"{field}: {len(raw)} bytes, not a logical name", field=field)
    return ObisCode.from_bytes(raw)


# -- profile generic --------------------------------------------------------------------------


@attrs.frozen(slots=True)
class CaptureObject:
    """One column of a profile: the captured attribute (and data index)."""

    class_id: int
    logical_name: ObisCode
    attribute: int
    data_index: int = 0

    def to_data(self) -> Data:
        return axdr.structure(
            axdr.long_unsigned(self.class_id),
            axdr.octet_string(self.logical_name.to_bytes()),
            axdr.integer(self.attribute),
            axdr.long_unsigned(self.data_index),
        )


def decode_capture_objects(data: Data) -> list[CaptureObject]:
    """A profile's capture_objects. Raises FrameError unless it is an array of structures
    {class_id, logical_name, attribute, data_index} of those types."""
    if data.type != DataType.ARRAY:
        raise FrameError("capture_objects: expected an array", field="capture_objects")
    columns = []
    for n, item in enumerate(data):
        field = f"capture_objects[{n}]"
        if item.type != DataType.STRUCTURE or len(item) != 4:
            raise FrameError(f"{field}: expected a structure of 4", field=field)
        columns.append(
            CaptureObject(
                axdr.as_int(item[0], field),
                _obis(item[1], field),
                axdr.as_int(item[2], field),
                axdr.as_int(item[3], field),
            )
        )
    return columns


def _is_clock(column: CaptureObject) -> bool:
    return column.class_id == CosemClass.CLOCK and column.attribute == ClockAttr.TIME


# Bits of the AMR profile status (IDIS 0.0.96.10.1.255 / DSMR) mapped to fep's quality flags.
_AMR_STATUS_BITS = {
    0x01: Quality.DATA_NOT_VALID,  # critical error
    0x02: Quality.CLOCK_INVALID,
    0x04: Quality.DATA_NOT_VALID,
    0x08: Quality.DST,  # daylight saving
    0x20: Quality.CLOCK_ADJUSTED,
    0x80: Quality.POWER_DOWN,
}


def amr_status_quality(status: int) -> Quality:
    quality = Quality.OK
    for bit, flag in _AMR_STATUS_BITS.items():
        if status & bit:
            quality |= flag
    return quality


# The quality of every status byte, and the types a status byte comes as.
_AMR_QUALITIES = tuple(amr_status_quality(code) for code in range(256))
_STATUS_TYPES = frozenset(
    (DataType.UNSIGNED, DataType.LONG_UNSIGNED, DataType.DOUBLE_LONG_UNSIGNED, DataType.ENUM)
)
_INTEGER_TYPES = frozenset(
    (
        DataType.DOUBLE_LONG,
        DataType.DOUBLE_LONG_UNSIGNED,
        DataType.INTEGER,
        DataType.LONG,
        DataType.UNSIGNED,
        DataType.LONG_UNSIGNED,
        DataType.LONG64,
        DataType.LONG64_UNSIGNED,
        DataType.ENUM,
        DataType.BCD,
    )
)


def _scaled_column(cells: list[Data], scaler_unit: ScalerUnit | None) -> tuple[Value, ...]:
    """``scaled_value`` of every cell of a column: integers inline, the rest through it."""
    scaler = scaler_unit.scaler if scaler_unit else 0
    out: list[Value] = []
    append = out.append
    for cell in cells:
        if cell.type in _INTEGER_TYPES:
            number = Decimal(cell.value)
            if scaler:
                try:
                    number = number.scaleb(scaler)
                except ArithmeticError:
                    scaled_value(cell, scaler_unit)  # raises its FrameError
                    raise
            append(number)
        else:
            append(scaled_value(cell, scaler_unit))
    return tuple(out)


def _is_status(column: CaptureObject) -> bool:
    return column.logical_name.c == 96 and column.logical_name.d == 10


def profile_blocks(
    meter: str,
    rows: Data,
    columns: Sequence[CaptureObject],
    capture_period: int,
    scaler_units: dict[ObisCode, ScalerUnit],
    *,
    default_deviation: int | None = None,
) -> list[IntervalBlock]:
    """The rows of a profile buffer as IntervalBlocks, one run per value column.

    Each row's clock column gives the end of its interval (the capture time); a null clock
    (compressed buffers) means the previous row's time plus the capture period. Rows not one
    period apart start a new block. A status column (0.x.96.10.x.255) becomes the statuses.

    Raises FrameError when the buffer is not an array of rows of the columns' shape, a clock
    cell is not a date-time (or none comes before a null one), a time steps out of the
    calendar, or a value's scaler cannot be applied.
    """
    if rows.type not in (DataType.ARRAY, DataType.COMPACT_ARRAY):
        raise FrameError("buffer: expected an array", field="buffer")
    items = rows.value.elements if rows.type == DataType.COMPACT_ARRAY else rows.value
    if capture_period <= 0:
        raise FrameError("capture_period is 0: not an interval profile", field="capture_period")
    try:
        return _profile_blocks(
            meter, items, columns, timedelta(seconds=capture_period), scaler_units,
            default_deviation,
        )
    except OverflowError:
        # A capture period or a time stepped past what datetime holds (year 9999).
        raise FrameError(
            f"capture_period {capture_period} s leads out of the calendar", field="capture_period"
        ) from None


def _profile_blocks(
    meter: str,
    items: Sequence[Data],
    columns: Sequence[CaptureObject],
    period: timedelta,
    scaler_units: dict[ObisCode, ScalerUnit],
    default_deviation: int | None,
) -> list[IntervalBlock]:
    clock_index = next((i for i, c in enumerate(columns) if _is_clock(c)), None)
    if clock_index is None:
        raise FrameError("the profile captures no clock column", field="capture_objects")
    status_index = next((i for i, c in enumerate(columns) if _is_status(c)), None)
    value_columns = [i for i, c in enumerate(columns) if i != clock_index and i != status_index]
    # Interval end times and, per row, the values; the rows where a run of rows one period
    # apart breaks (a row whose time is not its predecessor's plus the period).
    stamps: list[datetime] = []
    statuses: list[Quality] = []
    breaks: list[int] = []
    previous: datetime | None = None
    previous_raw: bytes | None = None  # the previous row's clock octets, if it sent them
    step = int(period.total_seconds()) if period.microseconds == 0 else None
    width = len(columns)
    table: list[tuple[Data, ...]] = []
    structure, null, octets = DataType.STRUCTURE, DataType.NULL_DATA, DataType.OCTET_STRING
    status_types, qualities, ok = _STATUS_TYPES, _AMR_QUALITIES, Quality.OK
    from_octets = CosemDateTime.datetime_from_octets
    for n, row in enumerate(items):
        cells = row.value
        if row.type is not structure or len(cells) != width:
            raise FrameError(
                f"buffer row {n}: expected a structure of {width}", field="buffer"
            )
        cell = cells[clock_index]
        kind = cell.type
        raw = cell.value
        stamp: datetime | None = None
        if kind is null:
            if previous is None:
                raise FrameError(f"buffer row {n}: no time and none before", field="buffer")
            stamp = previous + period
            previous_raw = None
        elif kind is octets and len(raw) == 12:
            # The usual row: the clock one period after the previous row's, on the same day
            # with the same deviation: its time is the previous one's plus the period
            # (_next_stamp, inline).
            if (
                previous_raw is not None and previous is not None and step is not None
                and raw[:5] == previous_raw[:5] and raw[8:11] == previous_raw[8:11]
                and previous.year < 9999
            ):
                hour, minute, second = raw[5], raw[6], raw[7]
                if (hour <= 23 and minute <= 59 and (second <= 59 or second == 0xFF)
                        and hour * 3600 + minute * 60 + second % 0xFF
                        - (previous_raw[5] * 3600 + previous_raw[6] * 60
                           + previous_raw[7] % 0xFF) == step):
                    stamp = previous + period
            if stamp is None:
                stamp = from_octets(raw, default_deviation)
                if stamp is None:
                    raise FrameError(f"buffer row {n}: clock not specified", field="buffer")
                if n and (previous is None or stamp - previous != period):
                    breaks.append(n)
            previous_raw = raw
        else:
            stamp = axdr.as_datetime(cell, f"buffer row {n} clock").to_datetime(default_deviation)
            if stamp is None:
                raise FrameError(f"buffer row {n}: clock not specified", field="buffer")
            if n and (previous is None or stamp - previous != period):
                breaks.append(n)
            previous_raw = None
        previous = stamp
        stamps.append(stamp)
        status = ok
        if status_index is not None:
            status_cell = cells[status_index]
            if status_cell.type in status_types:
                code = status_cell.value
                status = qualities[code] if 0 <= code < 256 else amr_status_quality(int(code))
            elif axdr.is_number(status_cell):
                status = amr_status_quality(int(status_cell.value))
        statuses.append(status)
        table.append(cells)
    runs = list(zip([0, *breaks], [*breaks, len(stamps)], strict=True)) if stamps else []
    blocks: list[IntervalBlock] = []
    for i in value_columns:
        column = columns[i]
        unit_scaler = scaler_units.get(column.logical_name)
        for run_start, run_end in runs:
            values = _scaled_column([table[k][i] for k in range(run_start, run_end)],
                                    unit_scaler)
            blocks.append(
                IntervalBlock(
                    meter=meter,
                    obis=column.logical_name,
                    start=stamps[run_start] - period,
                    period=period,
                    values=values,
                    statuses=tuple(statuses[run_start:run_end]),
                    unit=unit_scaler.unit if unit_scaler else None,
                    scaler=0,
                    source="dlms",
                )
            )
    return blocks


# -- event logs -------------------------------------------------------------------------------

# DLMS UA / IDIS standard event codes (Blue Book "Standard event log", fraud detection,
# power quality and disconnector logs): code -> (kind, severity, text).
STANDARD_EVENTS: dict[int, tuple[EventKind, Severity, str]] = {
    1: (EventKind.POWER_OUTAGE, Severity.CRITICAL, "power down"),
    2: (EventKind.POWER_RESTORED, Severity.MAJOR, "power up"),
    3: (EventKind.CLOCK_SET, Severity.INFO, "daylight saving time enabled or disabled"),
    4: (EventKind.CLOCK_SET, Severity.INFO, "clock adjusted (old date/time)"),
    5: (EventKind.CLOCK_SET, Severity.INFO, "clock adjusted (new date/time)"),
    6: (EventKind.CLOCK_DEVIATION, Severity.MAJOR, "clock invalid"),
    7: (EventKind.METER_ERROR, Severity.MINOR, "replace battery"),
    8: (EventKind.METER_ERROR, Severity.MINOR, "battery voltage low"),
    10: (EventKind.OTHER, Severity.INFO, "error register cleared"),
    12: (EventKind.METER_ERROR, Severity.MAJOR, "program memory error"),
    13: (EventKind.METER_ERROR, Severity.MAJOR, "RAM error"),
    14: (EventKind.METER_ERROR, Severity.MAJOR, "NV memory error"),
    15: (EventKind.METER_ERROR, Severity.MAJOR, "watchdog error"),
    16: (EventKind.METER_ERROR, Severity.MAJOR, "measurement system error"),
    17: (EventKind.OTHER, Severity.INFO, "firmware ready for activation"),
    18: (EventKind.OTHER, Severity.INFO, "firmware activated"),
    40: (EventKind.TERMINAL_COVER_OPEN, Severity.CRITICAL, "terminal cover removed"),
    41: (EventKind.OTHER, Severity.INFO, "terminal cover closed"),
    42: (EventKind.MAGNETIC_TAMPER, Severity.CRITICAL, "strong DC field detected"),
    43: (EventKind.OTHER, Severity.INFO, "no strong DC field anymore"),
    44: (EventKind.COVER_OPEN, Severity.CRITICAL, "meter cover removed"),
    45: (EventKind.OTHER, Severity.INFO, "meter cover closed"),
    46: (EventKind.OTHER, Severity.MAJOR, "association authentication failure (n times)"),
    47: (EventKind.OTHER, Severity.INFO, "one or more parameters changed"),
    48: (EventKind.OTHER, Severity.INFO, "global key(s) changed"),
    51: (EventKind.OTHER, Severity.MAJOR, "association authentication failure"),
    52: (EventKind.OTHER, Severity.MAJOR, "decryption or authentication failure"),
    53: (EventKind.OTHER, Severity.MAJOR, "replay attack"),
    59: (EventKind.OTHER, Severity.INFO, "disconnector: manual disconnection"),
    60: (EventKind.OTHER, Severity.INFO, "disconnector: manual connection"),
    61: (EventKind.OTHER, Severity.INFO, "disconnector: remote disconnection"),
    62: (EventKind.OTHER, Severity.INFO, "disconnector: remote connection"),
    76: (EventKind.UNDER_VOLTAGE, Severity.MAJOR, "under voltage L1"),
    77: (EventKind.UNDER_VOLTAGE, Severity.MAJOR, "under voltage L2"),
    78: (EventKind.UNDER_VOLTAGE, Severity.MAJOR, "under voltage L3"),
    79: (EventKind.OVER_VOLTAGE, Severity.MAJOR, "over voltage L1"),
    80: (EventKind.OVER_VOLTAGE, Severity.MAJOR, "over voltage L2"),
    81: (EventKind.OVER_VOLTAGE, Severity.MAJOR, "over voltage L3"),
    82: (EventKind.PHASE_LOSS, Severity.CRITICAL, "missing voltage L1"),
    83: (EventKind.PHASE_LOSS, Severity.CRITICAL, "missing voltage L2"),
    84: (EventKind.PHASE_LOSS, Severity.CRITICAL, "missing voltage L3"),
    85: (EventKind.OTHER, Severity.INFO, "normal voltage L1"),
    86: (EventKind.OTHER, Severity.INFO, "normal voltage L2"),
    87: (EventKind.OTHER, Severity.INFO, "normal voltage L3"),
    88: (EventKind.PHASE_IMBALANCE, Severity.MINOR, "phase sequence reversal"),
    89: (EventKind.OTHER, Severity.MINOR, "missing neutral"),
    90: (EventKind.PHASE_IMBALANCE, Severity.MINOR, "phase asymmetry"),
    91: (EventKind.OVER_CURRENT, Severity.MAJOR, "current unbalance"),
    92: (EventKind.OTHER, Severity.INFO, "bad voltage quality L1"),
    100: (EventKind.REVERSE_ENERGY, Severity.MAJOR, "reverse energy flow"),
}


def event_log(
    meter: str,
    rows: Data,
    columns: Sequence[CaptureObject],
    log: ObisCode,
    *,
    default_deviation: int | None = None,
) -> list[MeterEvent]:
    """An event log profile (clock, event code[, ...]) as MeterEvents with common kinds;
    unknown codes become ``other`` events that keep the code. Raises FrameError when a row
    has the wrong shape, its time is not a date-time (or no instant), its code no integer."""
    if rows.type != DataType.ARRAY:
        raise FrameError("event log: expected an array", field="buffer")
    clock_index = next((i for i, c in enumerate(columns) if _is_clock(c)), None)
    code_index = next((i for i, c in enumerate(columns) if not _is_clock(c)), None)
    if clock_index is None or code_index is None:
        raise FrameError("event log captures no clock and code", field="capture_objects")
    events = []
    for n, row in enumerate(rows):
        if row.type != DataType.STRUCTURE or len(row) != len(columns):
            raise FrameError(f"event log row {n}: wrong shape", field="buffer")
        when = axdr.as_datetime(row[clock_index], f"event log row {n}").to_datetime(
            default_deviation
        )
        if when is None:
            raise FrameError(f"event log row {n}: time not specified", field="buffer")
        code = axdr.as_int(row[code_index], f"event log row {n} code")
        kind, severity, text = STANDARD_EVENTS.get(
            code, (EventKind.OTHER, Severity.INFO, f"event {code}")
        )
        events.append(
            MeterEvent(
                meter=meter,
                code=f"dlms:{log.c}.{log.d}.{log.e}:{code}",
                kind=kind,
                severity=severity,
                time=when,
                text=text,
                source="dlms",
            )
        )
    return events


# -- clock ------------------------------------------------------------------------------------


def clock_quality(stamp: CosemDateTime) -> Quality:
    status = stamp.status or 0
    quality = Quality.OK
    if status & (axdr.ClockStatus.INVALID_VALUE | axdr.ClockStatus.DOUBTFUL_VALUE):
        quality |= Quality.CLOCK_INVALID
    if status & axdr.ClockStatus.DAYLIGHT_SAVING_ACTIVE:
        quality |= Quality.DST
    return quality
