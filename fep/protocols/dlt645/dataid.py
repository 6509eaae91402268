"""DL/T 645 data identifiers (DI): each one's data format, unit and OBIS equivalent, and the
decoding of its data bytes into ``fep.model.Reading`` (``native_id`` = the DI in hex); event
record DIs into ``fep.model.MeterEvent``.

DL/T 645-2007 identifiers are 4 bytes ``DI3 DI2 DI1 DI0`` (written most significant first,
``00010000``; sent DI0 first); DL/T 645-1997 ones are 2 bytes (``9010``). Numbers are BCD
sent low byte first; where the standard makes a quantity signed, the top bit of the most
significant byte is the sign. Meter times are the meter's local wall clock: decoders take
the meter's time zone and give UTC.

OBIS mapping conventions (fep's, where DL/T 645 has no counterpart): "combined active" is
C=15 (the default combination word adds forward and reverse), combined reactive 1/2 are
C=3/C=4, the four quadrants C=5..8; settlement period n back (DI0 = n) is F = 100 + n,
the current period F = 255. Signed instantaneous reactive power keeps its sign under
C=3/23/43/63.

Decoding raises FrameError for data that do not fit the DI's format and ProtocolError for a
DI fep has no format for, nothing else (fuzzed by tests/fuzz).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from types import MappingProxyType
from typing import Final

import attrs

from fep.errors import FrameError, ProtocolError
from fep.model import (
    UNITS,
    EventKind,
    MeterEvent,
    ObisCode,
    Reading,
    Severity,
    Unit,
    Value,
    utcnow,
)
from fep.protocols.dlt645.services import PROTOCOL, decode_bcd, encode_bcd

# DL/T 645 is China's standard; its meters keep China Standard Time unless configured.
DEFAULT_METER_TZ: Final[tzinfo] = timezone(timedelta(hours=8), "UTC+08:00")

WH, VARH, VAH = UNITS[30], UNITS[32], UNITS[31]
W, VAR, VA = UNITS[27], UNITS[29], UNITS[28]
VOLT, AMPERE, HERTZ = UNITS[35], UNITS[33], UNITS[44]


class Kind(enum.Enum):
    """How a DI's data bytes are laid out."""

    NUMBER = "number"  # BCD with decimals, maybe signed
    DEMAND = "demand"  # BCD demand then YYMMDDhhmm of when it occurred
    DATE = "date"  # YYMMDDWW
    TIME = "time"  # hhmmss
    DATETIME = "datetime"  # YYMMDDWWhhmmss
    DIGITS = "digits"  # BCD digit string (address, meter number)


@attrs.frozen
class DataFormat:
    """A data layout: ``length`` bytes; for numbers the BCD ``decimals`` and sign."""

    kind: Kind
    length: int
    decimals: int = 0
    signed: bool = False

    @property
    def number_length(self) -> int:
        """Bytes of the numeric part (a demand's value before its time)."""
        return self.length - 5 if self.kind is Kind.DEMAND else self.length


def _number(length: int, decimals: int, signed: bool = False) -> DataFormat:
    return DataFormat(Kind.NUMBER, length, decimals, signed)


@attrs.frozen
class DataItem:
    """One data identifier: its name, format, OBIS equivalent and unit (``scaler`` is the
    unit's decimal prefix as the meter reports it: kWh is Wh with scaler 3)."""

    di: int
    size: int  # 4 for 2007 identifiers, 2 for 1997
    name: str
    fmt: DataFormat
    obis: ObisCode
    unit: Unit | None = None
    scaler: int = 0

    @property
    def native_id(self) -> str:
        return f"{self.di:0{2 * self.size}X}"

    def decode(
        self,
        data: bytes,
        *,
        meter: str,
        tz: tzinfo = DEFAULT_METER_TZ,
        received_time: datetime | None = None,
        offset: int = 0,
    ) -> Reading:
        """A Reading from this DI's data bytes (0x33 already removed)."""
        fmt = self.fmt
        field = f"DI {self.native_id}"
        if len(data) != fmt.length:
            raise FrameError(
                f"{field} ({self.name}) has {fmt.length} data bytes, got {len(data)}",
                offset=offset,
                field=field,
            )
        value: Value
        meter_time: datetime | None = None
        if fmt.kind in (Kind.NUMBER, Kind.DEMAND):
            value = _decode_number(data[: fmt.number_length], fmt, offset, field)
            if fmt.kind is Kind.DEMAND:
                meter_time = _decode_stamp(data[fmt.number_length :], tz, offset, field)
        elif fmt.kind is Kind.DATE:
            day = _decode_date(data, offset, field)
            value = day.isoformat()
        elif fmt.kind is Kind.TIME:
            value = _decode_time(data, offset, field).isoformat()
        elif fmt.kind is Kind.DATETIME:
            day = _decode_date(data[3:], offset + 3, field)
            when = datetime.combine(day, _decode_time(data[:3], offset, field), tz)
            meter_time = when.astimezone(UTC)
            value = meter_time.isoformat()
        else:
            value = decode_bcd(data, offset, field)
        return Reading(
            meter=meter,
            obis=self.obis,
            value=value,
            unit=self.unit,
            scaler=self.scaler,
            meter_time=meter_time,
            received_time=received_time if received_time is not None else utcnow(),
            source=PROTOCOL,
            native_id=self.native_id,
        )

    def encode(
        self, value: Value, *, meter_time: datetime | None = None, tz: tzinfo = DEFAULT_METER_TZ
    ) -> bytes:
        """The data bytes a meter sends for ``value`` (the meter side; simulators)."""
        fmt = self.fmt
        if fmt.kind in (Kind.NUMBER, Kind.DEMAND):
            if not isinstance(value, Decimal | int) or isinstance(value, bool):
                raise ValueError(f"DI {self.native_id} takes a number, got {value!r}")
            raw = _encode_number(Decimal(value), fmt)
            if fmt.kind is Kind.DEMAND:
                if meter_time is None:
                    raw += bytes(5)
                else:
                    local = meter_time.astimezone(tz)
                    if not 2000 <= local.year <= 2099:
                        raise ValueError(f"DL/T 645 years are 2000..2099, got {local.year}")
                    raw += encode_bcd(local.strftime("%y%m%d%H%M"), 5)
            return raw
        if not isinstance(value, str):
            raise ValueError(f"DI {self.native_id} takes text, got {value!r}")
        if fmt.kind is Kind.DATE:
            return _encode_date(date.fromisoformat(value))
        if fmt.kind is Kind.TIME:
            return encode_bcd(time.fromisoformat(value).strftime("%H%M%S"), 3)
        if fmt.kind is Kind.DATETIME:
            local = datetime.fromisoformat(value).astimezone(tz)
            return encode_bcd(local.strftime("%H%M%S"), 3) + _encode_date(local.date())
        return encode_bcd(value, fmt.length)


def _decode_number(raw: bytes, fmt: DataFormat, offset: int, field: str) -> Decimal:
    negative = False
    if fmt.signed and raw:
        # The sign is bit 7 of the most significant byte, the last one sent.
        negative = bool(raw[-1] & 0x80)
        raw = raw[:-1] + bytes([raw[-1] & 0x7F])
    digits = decode_bcd(raw, offset, field)
    number = Decimal(int(digits)).scaleb(-fmt.decimals)
    return -number if negative else number


def _encode_number(value: Decimal, fmt: DataFormat) -> bytes:
    scaled = value.scaleb(fmt.decimals)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more than {fmt.decimals} decimals")
    units = int(scaled)
    negative = units < 0
    if negative and not fmt.signed:
        raise ValueError(f"{value} is negative for an unsigned format")
    digits = str(abs(units))
    limit = 2 * fmt.number_length - (1 if fmt.signed else 0)
    if len(digits) > limit:
        raise ValueError(f"{value} does not fit {fmt.number_length} BCD bytes")
    raw = encode_bcd(digits, fmt.number_length)
    if negative:
        raw = raw[:-1] + bytes([raw[-1] | 0x80])
    return raw


def _decode_time(raw: bytes, offset: int, field: str) -> time:
    ss, mm, hh = (int(decode_bcd(raw[i : i + 1], offset + i, field)) for i in range(3))
    try:
        return time(hh, mm, ss)
    except ValueError as e:
        message = f"{field}: bad time {hh:02}:{mm:02}:{ss:02}"
        raise FrameError(message, offset=offset, field=field) from e


def _decode_date(raw: bytes, offset: int, field: str) -> date:
    # WW DD MM YY on the wire; the weekday is the meter's own and is not checked.
    decode_bcd(raw[:1], offset, field)
    dd, mo, yy = (int(decode_bcd(raw[i : i + 1], offset + i, field)) for i in (1, 2, 3))
    try:
        return date(2000 + yy, mo, dd)
    except ValueError as e:
        message = f"{field}: bad date {yy:02}-{mo:02}-{dd:02}"
        raise FrameError(message, offset=offset, field=field) from e


def _encode_date(day: date) -> bytes:
    if not 2000 <= day.year <= 2099:
        raise ValueError(f"DL/T 645 years are 2000..2099, got {day.year}")
    # Weekday 0 is Sunday in DL/T 645.
    return encode_bcd(day.strftime("%y%m%d") + f"{day.isoweekday() % 7:02d}", 4)


def _decode_stamp(raw: bytes, tz: tzinfo, offset: int, field: str) -> datetime | None:
    """``mm hh DD MM YY`` on the wire (YYMMDDhhmm); all zeros means no time recorded."""
    digits = decode_bcd(raw, offset, field)
    if int(digits) == 0:
        return None
    yy, mo, dd, hh, mi = (int(digits[i : i + 2]) for i in range(0, 10, 2))
    try:
        # DL/T 645 years are two digits of 2000..2099 (strptime's %y would give 1969..1999).
        local = datetime(2000 + yy, mo, dd, hh, mi, tzinfo=tz)
    except ValueError as e:
        raise FrameError(f"{field}: bad time stamp {digits}", offset=offset, field=field) from e
    return local.astimezone(UTC)


# ---------------------------------------------------------------------------
# The catalogues
# ---------------------------------------------------------------------------

# DI2 of energy (DI3=00) and maximum demand (DI3=01): name, OBIS C, units, signed.
_ENERGY_KINDS: Final = (
    (0x00, "combined active", 15, WH, W, True),
    (0x01, "forward active", 1, WH, W, False),
    (0x02, "reverse active", 2, WH, W, False),
    (0x03, "combined reactive 1", 3, VARH, VAR, True),
    (0x04, "combined reactive 2", 4, VARH, VAR, True),
    (0x05, "quadrant I reactive", 5, VARH, VAR, False),
    (0x06, "quadrant II reactive", 6, VARH, VAR, False),
    (0x07, "quadrant III reactive", 7, VARH, VAR, False),
    (0x08, "quadrant IV reactive", 8, VARH, VAR, False),
    (0x09, "forward apparent", 9, VAH, VA, False),
    (0x0A, "reverse apparent", 10, VAH, VA, False),
)
TARIFFS: Final = 4
SETTLEMENT_PERIODS: Final = 12
_PHASES: Final = ((1, "phase A", 20), (2, "phase B", 40), (3, "phase C", 60))


def _period(n: int) -> tuple[int, str]:
    return (255, "current") if n == 0 else (100 + n, f"settlement {n} back")


def _catalogue_2007() -> Iterable[DataItem]:
    for di2, name, c, energy_unit, demand_unit, signed in _ENERGY_KINDS:
        for di1 in range(TARIFFS + 1):
            rate = "total" if di1 == 0 else f"tariff {di1}"
            for di0 in range(SETTLEMENT_PERIODS + 1):
                f, when = _period(di0)
                yield DataItem(
                    (0x00 << 24) | (di2 << 16) | (di1 << 8) | di0,
                    4,
                    f"{when} {name} energy, {rate}",
                    _number(4, 2, signed),
                    ObisCode(1, 0, c, 8, di1, f),
                    energy_unit,
                    3,
                )
                if di2 == 0x00:
                    continue  # no combined-active maximum demand in DL/T 645-2007
                yield DataItem(
                    (0x01 << 24) | (di2 << 16) | (di1 << 8) | di0,
                    4,
                    f"{when} {name} maximum demand, {rate}",
                    DataFormat(Kind.DEMAND, 8, 4, signed),
                    ObisCode(1, 0, c, 6, di1, f),
                    demand_unit,
                    3,
                )
    for n, phase, c0 in _PHASES:
        yield DataItem(
            0x02010000 | n << 8,
            4,
            f"{phase} voltage",
            _number(2, 1),
            ObisCode(1, 0, c0 + 12, 7, 0),
            VOLT,
        )
        yield DataItem(
            0x02020000 | n << 8,
            4,
            f"{phase} current",
            _number(3, 3, True),
            ObisCode(1, 0, c0 + 11, 7, 0),
            AMPERE,
        )
    for n, phase, c0 in ((0, "total", 0), *_PHASES):
        active_c = 16 if n == 0 else c0 + 16
        yield DataItem(
            0x02030000 | n << 8,
            4,
            f"{phase} active power",
            _number(3, 4, True),
            ObisCode(1, 0, active_c, 7, 0),
            W,
            3,
        )
        yield DataItem(
            0x02040000 | n << 8,
            4,
            f"{phase} reactive power",
            _number(3, 4, True),
            ObisCode(1, 0, c0 + 3, 7, 0),
            VAR,
            3,
        )
        yield DataItem(
            0x02050000 | n << 8,
            4,
            f"{phase} apparent power",
            _number(3, 4, True),
            ObisCode(1, 0, c0 + 9, 7, 0),
            VA,
            3,
        )
        yield DataItem(
            0x02060000 | n << 8,
            4,
            f"{phase} power factor",
            _number(2, 3, True),
            ObisCode(1, 0, c0 + 13, 7, 0),
        )
    yield DataItem(0x02800002, 4, "grid frequency", _number(2, 2), ObisCode(1, 0, 14, 7, 0), HERTZ)
    yield DataItem(
        0x04000101, 4, "date and weekday", DataFormat(Kind.DATE, 4), ObisCode(1, 0, 0, 9, 2)
    )
    yield DataItem(0x04000102, 4, "time", DataFormat(Kind.TIME, 3), ObisCode(1, 0, 0, 9, 1))
    yield DataItem(
        0x0400010C,
        4,
        "date, weekday and time",
        DataFormat(Kind.DATETIME, 7),
        ObisCode(0, 0, 1, 0, 0),
    )
    yield DataItem(
        0x04000401, 4, "communication address", DataFormat(Kind.DIGITS, 6), ObisCode(0, 0, 96, 1, 1)
    )
    yield DataItem(
        0x04000402, 4, "meter number", DataFormat(Kind.DIGITS, 6), ObisCode(0, 0, 96, 1, 0)
    )


def _catalogue_1997() -> Iterable[DataItem]:
    # 90xx/91xx: this month; 94xx/95xx: last month (DL/T 645-1997 appendix A).
    kinds = ((0x1, "forward active", 1, WH), (0x2, "reverse active", 2, WH))
    reactive = ((0x1, "forward reactive", 3, VARH), (0x2, "reverse reactive", 4, VARH))
    for base, f, when in ((0x9000, 255, "current"), (0x9400, 101, "last month")):
        for group, entries in ((0x00, kinds), (0x100, reactive)):
            for nibble, name, c, unit in entries:
                for rate_n in range(TARIFFS + 1):
                    rate = "total" if rate_n == 0 else f"tariff {rate_n}"
                    yield DataItem(
                        base | group | nibble << 4 | rate_n,
                        2,
                        f"{when} {name} energy, {rate}",
                        _number(4, 2),
                        ObisCode(1, 0, c, 8, rate_n, f),
                        unit,
                        3,
                    )
    for n, phase, c0 in _PHASES:
        yield DataItem(
            0xB610 | n, 2, f"{phase} voltage", _number(2, 0), ObisCode(1, 0, c0 + 12, 7, 0), VOLT
        )
        yield DataItem(
            0xB620 | n, 2, f"{phase} current", _number(2, 2), ObisCode(1, 0, c0 + 11, 7, 0), AMPERE
        )
    for n, phase, c0 in ((0, "total", 0), *_PHASES):
        active_c = 1 if n == 0 else c0 + 1
        yield DataItem(
            0xB630 | n,
            2,
            f"{phase} active power",
            _number(3, 4),
            ObisCode(1, 0, active_c, 7, 0),
            W,
            3,
        )
        yield DataItem(
            0xB640 | n,
            2,
            f"{phase} reactive power",
            _number(2, 2),
            ObisCode(1, 0, c0 + 3, 7, 0),
            VAR,
            3,
        )
        yield DataItem(
            0xB650 | n, 2, f"{phase} power factor", _number(2, 3), ObisCode(1, 0, c0 + 13, 7, 0)
        )
    yield DataItem(0xC010, 2, "date and weekday", DataFormat(Kind.DATE, 4), ObisCode(1, 0, 0, 9, 2))
    yield DataItem(0xC011, 2, "time", DataFormat(Kind.TIME, 3), ObisCode(1, 0, 0, 9, 1))
    yield DataItem(0xC032, 2, "meter number", DataFormat(Kind.DIGITS, 6), ObisCode(0, 0, 96, 1, 0))


CATALOGUE_2007: Final[Mapping[int, DataItem]] = MappingProxyType(
    {item.di: item for item in _catalogue_2007()}
)
CATALOGUE_1997: Final[Mapping[int, DataItem]] = MappingProxyType(
    {item.di: item for item in _catalogue_1997()}
)


def catalogue(edition: int = 2007) -> Mapping[int, DataItem]:
    if edition == 2007:
        return CATALOGUE_2007
    if edition == 1997:
        return CATALOGUE_1997
    raise ValueError(f"DL/T 645 editions are 2007 and 1997, not {edition}")


def lookup(di: int, edition: int = 2007) -> DataItem:
    """The DataItem of a data identifier; ProtocolError naming it when fep has no format."""
    try:
        return catalogue(edition)[di]
    except KeyError:
        size = 4 if edition == 2007 else 2
        raise ProtocolError(
            f"no format known for DL/T 645-{edition} DI {di:0{2 * size}X}", protocol=PROTOCOL
        ) from None


def parse_di(text: str) -> int:
    """A DI written as hex, most significant byte first (``00010000``, ``9010``)."""
    cleaned = text.strip().replace(" ", "")
    if len(cleaned) not in (4, 8):
        raise ValueError(f"a DI is 4 or 8 hex digits: {text!r}")
    return int(cleaned, 16)


def block_members(di: int, edition: int = 2007) -> list[DataItem]:
    """The items a block DI (one byte FF) stands for, in the order the meter sends them."""
    size = 4 if edition == 2007 else 2
    table = catalogue(edition)
    for shift in range(0, 8 * size, 8):
        if (di >> shift) & 0xFF == 0xFF:
            # 1997 blocks put F in the low nibble only (901F: total and tariffs 1-4).
            base = di & ~(0xFF << shift)
            return [table[base | k << shift] for k in range(256) if base | k << shift in table]
        if size == 2 and shift == 0 and di & 0x0F == 0x0F:
            base = di & ~0x0F
            return [table[base | k] for k in range(16) if base | k in table]
    return []


def decode(
    di: int,
    data: bytes,
    *,
    meter: str,
    edition: int = 2007,
    tz: tzinfo = DEFAULT_METER_TZ,
    received_time: datetime | None = None,
) -> list[Reading]:
    """Readings from the data bytes of a read answer for ``di``: one for a single DI, one
    per member present for a block DI (``0001FF00``: total then tariffs)."""
    table = catalogue(edition)
    if di in table:
        return [table[di].decode(data, meter=meter, tz=tz, received_time=received_time)]
    members = block_members(di, edition)
    if not members:
        lookup(di, edition)  # raises the named error
    readings: list[Reading] = []
    at = 0
    for item in members:
        if at >= len(data):
            break
        chunk = data[at : at + item.fmt.length]
        readings.append(
            item.decode(chunk, meter=meter, tz=tz, received_time=received_time, offset=at)
        )
        at += item.fmt.length
    if at != len(data):
        raise FrameError(
            f"block DI {di:X}: {len(data) - at} data bytes left over",
            offset=at,
            field=f"DI {di:X}",
        )
    return readings


# ---------------------------------------------------------------------------
# Event records (DI3 = 03) as MeterEvents
# ---------------------------------------------------------------------------


@attrs.frozen
class EventRecord:
    """An event record DI family: ``base | n`` is the n-th last record (n = 1..10).

    ``start_at`` is the offset of the occurrence time (YYMMDDhhmmss) in the record, ``end_at``
    that of the end time when the record has one, ``min_length`` the bytes fep needs (meters
    append energy snapshots of varying length after the times; those are not decoded).
    """

    base: int
    name: str
    kind: EventKind
    severity: Severity
    start_at: int
    min_length: int
    end_at: int | None = None
    end_kind: EventKind | None = None

    @property
    def code(self) -> str:
        # One code for every "n-th last" DI of the family, so the same event read again as
        # an older record files under the same (meter, code, time).
        return f"{self.base:08X}"


EVENT_RECORDS: Final[tuple[EventRecord, ...]] = (
    EventRecord(0x03110000, "power down", EventKind.POWER_OUTAGE, Severity.MAJOR, 0, 12, 6,
                EventKind.POWER_RESTORED),
    EventRecord(0x03300D00, "meter cover opened", EventKind.COVER_OPEN, Severity.CRITICAL, 0, 12,
                6),
    EventRecord(0x03300E00, "terminal cover opened", EventKind.TERMINAL_COVER_OPEN,
                Severity.CRITICAL, 0, 12, 6),
    EventRecord(0x03300100, "meter cleared", EventKind.OTHER, Severity.MAJOR, 0, 10),
    EventRecord(0x03300300, "events cleared", EventKind.OTHER, Severity.MINOR, 0, 14),
    # Time change: operator code (4), time before (6), time after (6); filed at the time
    # before, the moment the meter's own clock was changed.
    EventRecord(0x03300400, "time changed", EventKind.CLOCK_SET, Severity.INFO, 4, 16),
)  # fmt: skip
_EVENTS_BY_BASE: Final = {record.base: record for record in EVENT_RECORDS}
EVENT_RECORD_DEPTH: Final = 10


def event_record(di: int) -> EventRecord | None:
    """The event record family of a DI (``03110001`` -> power down), None for others."""
    record = _EVENTS_BY_BASE.get(di & 0xFFFFFF00)
    if record is None or not 1 <= di & 0xFF <= EVENT_RECORD_DEPTH:
        return None
    return record


def decode_events(
    di: int,
    data: bytes,
    *,
    meter: str,
    tz: tzinfo = DEFAULT_METER_TZ,
    received_time: datetime | None = None,
) -> list[MeterEvent]:
    """MeterEvents from an event record (``03110001`` = the last power down): the start as
    one event and, where the record has an end time, the end as another. A record never
    filled (all zero) gives none."""
    record = event_record(di)
    field = f"DI {di:08X}"
    if record is None:
        raise ProtocolError(f"DI {di:08X} is no event record fep knows", protocol=PROTOCOL)
    if len(data) < record.min_length:
        raise FrameError(
            f"{field} ({record.name}) needs {record.min_length} bytes, got {len(data)}",
            offset=len(data),
            field=field,
        )
    received = received_time if received_time is not None else utcnow()
    events: list[MeterEvent] = []
    start = _decode_event_time(data, record.start_at, tz, field)
    if start is not None:
        events.append(
            MeterEvent(meter, record.code, record.kind, record.severity, start,
                       record.name, received, PROTOCOL)
        )  # fmt: skip
    if record.end_at is not None:
        # Checked even where no end event is made: a bad end time means a misread record.
        end = _decode_event_time(data, record.end_at, tz, field)
        if end is not None and start is not None and record.end_kind is not None:
            events.append(
                MeterEvent(meter, f"{record.code}-end", record.end_kind, Severity.INFO, end,
                           f"{record.name} ended", received, PROTOCOL)
            )  # fmt: skip
    return events


def _decode_event_time(data: bytes, at: int, tz: tzinfo, field: str) -> datetime | None:
    raw = data[at : at + 6]
    digits = decode_bcd(raw, at, field)
    if int(digits) == 0:
        return None
    yy, mo, dd, hh, mi, ss = (int(digits[i : i + 2]) for i in range(0, 12, 2))
    try:
        return datetime(2000 + yy, mo, dd, hh, mi, ss, tzinfo=tz).astimezone(UTC)
    except ValueError as e:
        message = f"{field}: bad event time {digits}"
        raise FrameError(message, offset=at, field=field) from e


def encode_event_time(when: datetime | None, tz: tzinfo = DEFAULT_METER_TZ) -> bytes:
    """YYMMDDhhmmss as an event record holds it (zeros for None); the meter side."""
    if when is None:
        return bytes(6)
    return encode_bcd(when.astimezone(tz).strftime("%y%m%d%H%M%S"), 6)
