"""ANSI C12.19 standard tables decoded to records: ST0 general configuration (data order,
formats, table sets), ST1 manufacturer identification, ST3 end-device mode and status,
ST5 device identification, ST11-16 data sources (limits, units of measure, demand
control, data control, constants, source links), ST21 actual registers, ST22 data
selection, ST23 current register data (as Readings with OBIS codes and units), ST52 clock,
ST61-64 load profile (as IntervalBlocks) and ST71/74/76 history and event logs (as
MeterEvents). Each record also encodes back (simulators).

Sans-IO: table bytes (from a C12.18 read answer) in, attrs records out. Decoders after ST0
take the ``GeneralConfig`` because ST0 fixes byte order, character set, time format and
the identifier form of every other table.

Every decoder raises FrameError (and nothing else, fuzzed by tests/fuzz) for bytes that do
not fit the layout the tables before it describe, and builds no more records than the
table's bytes can hold: counts taken from other tables are checked against the length of
the table they describe.
"""

from __future__ import annotations

import enum
import math
import struct
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Final, Literal, TypeVar

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
    utcnow,
)

ST0_GENERAL_CONFIG: Final = 0
ST1_MANUFACTURER_ID: Final = 1
ST3_MODE_STATUS: Final = 3
ST5_DEVICE_ID: Final = 5
ST51_ACTUAL_TIME_TOU: Final = 51
ST52_CLOCK: Final = 52
ST53_TIME_OFFSET: Final = 53

SOURCE: Final = "ansi-c12"
_T = TypeVar("_T")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class TimeFormat(enum.IntEnum):
    """TM_FORMAT of ST0: how every date and time in the meter's tables is laid out."""

    NONE = 0
    BCD = 1  # YY MM DD hh mm ss, each one BCD byte
    UINT8 = 2  # YY MM DD hh mm ss, each one binary byte
    MINUTES_SECONDS = 3  # UINT32 minutes since 1970 then UINT8 seconds
    SECONDS = 4  # UINT32 seconds since 1970


_TIME_LENGTH: Final = {0: 0, 1: 6, 2: 6, 3: 5, 4: 4}


def _need(data: bytes, n: int, table: int, what: str = "") -> None:
    if len(data) < n:
        raise FrameError(
            f"ST{table} {what or 'table'} needs {n} bytes, got {len(data)}",
            offset=len(data),
            field=f"ST{table}",
        )


def _text(raw: bytes) -> str:
    # ISO 7-bit and ISO 8859/1 are the character sets C12.19 meters use; latin-1 reads both.
    return raw.decode("latin-1").rstrip(" \x00")


def _bits(raw: bytes) -> frozenset[int]:
    """The numbers of the set bits of a C12.19 SET (bit i of byte n is element 8n + i)."""
    return frozenset(8 * n + i for n, byte in enumerate(raw) for i in range(8) if byte >> i & 1)


def _bitset(members: frozenset[int], size: int) -> bytes:
    raw = bytearray(size)
    for m in members:
        if m >= 8 * size:
            raise ValueError(f"set member {m} does not fit {size} bytes")
        raw[m // 8] |= 1 << (m % 8)
    return bytes(raw)


def _bcd_byte(value: int, offset: int, table: int) -> int:
    high, low = value >> 4, value & 0x0F
    if high > 9 or low > 9:
        raise FrameError(f"ST{table}: 0x{value:02X} is not BCD", offset=offset, field=f"ST{table}")
    return 10 * high + low


# ---------------------------------------------------------------------------
# ST0 general configuration
# ---------------------------------------------------------------------------


@attrs.frozen
class GeneralConfig:
    """ST0 GEN_CONFIG_TBL."""

    big_endian: bool = False
    char_format: int = 1  # 1 ISO 7-bit, 2 ISO 8859/1
    model_select: int = 0
    time_format: int = TimeFormat.UINT8
    data_access_method: int = 0
    id_form_bcd: bool = False  # ID_FORM: 0 characters, 1 BCD
    int_format: int = 0
    ni_format1: int = 0
    ni_format2: int = 0
    device_class: bytes = b"    "
    nameplate_type: int = 0
    default_set_used: int = 0
    max_proc_parm_length: int = 0
    max_resp_data_len: int = 0
    std_version: int = 1
    std_revision: int = 0
    dim_std_tables: int = 0
    dim_mfg_tables: int = 0
    dim_std_procs: int = 0
    dim_mfg_procs: int = 0
    dim_mfg_status: int = 0
    nbr_pending: int = 0
    std_tables_used: frozenset[int] = frozenset()
    mfg_tables_used: frozenset[int] = frozenset()
    std_procs_used: frozenset[int] = frozenset()
    mfg_procs_used: frozenset[int] = frozenset()
    std_tables_write: frozenset[int] = frozenset()
    mfg_tables_write: frozenset[int] = frozenset()

    @property
    def byte_order(self) -> Literal["little", "big"]:
        return "big" if self.big_endian else "little"

    @property
    def length(self) -> int:
        return (
            19
            + 2 * (self.dim_std_tables + self.dim_mfg_tables)
            + (self.dim_std_procs + self.dim_mfg_procs)
        )

    @classmethod
    def decode(cls, data: bytes) -> GeneralConfig:
        _need(data, 19, 0, "header")
        fc1, fc2, fc3 = data[0], data[1], data[2]
        dims = data[13:18]
        std_t, mfg_t, std_p, mfg_p, _mfg_status = dims
        _need(data, 19 + 2 * (std_t + mfg_t) + std_p + mfg_p, 0, "table sets")
        at = 19
        sets: list[frozenset[int]] = []
        for size in (std_t, mfg_t, std_p, mfg_p, std_t, mfg_t):
            sets.append(_bits(data[at : at + size]))
            at += size
        return cls(
            big_endian=bool(fc1 & 0x01),
            char_format=(fc1 >> 1) & 0x07,
            model_select=(fc1 >> 4) & 0x07,
            time_format=fc2 & 0x07,
            data_access_method=(fc2 >> 3) & 0x03,
            id_form_bcd=bool(fc2 & 0x20),
            int_format=(fc2 >> 6) & 0x03,
            ni_format1=fc3 & 0x0F,
            ni_format2=fc3 >> 4,
            device_class=data[3:7],
            nameplate_type=data[7],
            default_set_used=data[8],
            max_proc_parm_length=data[9],
            max_resp_data_len=data[10],
            std_version=data[11],
            std_revision=data[12],
            dim_std_tables=std_t,
            dim_mfg_tables=mfg_t,
            dim_std_procs=std_p,
            dim_mfg_procs=mfg_p,
            dim_mfg_status=data[17],
            nbr_pending=data[18],
            std_tables_used=sets[0],
            mfg_tables_used=sets[1],
            std_procs_used=sets[2],
            mfg_procs_used=sets[3],
            std_tables_write=sets[4],
            mfg_tables_write=sets[5],
        )

    def encode(self) -> bytes:
        if len(self.device_class) != 4:
            raise ValueError("DEVICE_CLASS is 4 bytes")
        fc1 = int(self.big_endian) | (self.char_format & 7) << 1 | (self.model_select & 7) << 4
        fc2 = (
            (self.time_format & 7)
            | (self.data_access_method & 3) << 3
            | int(self.id_form_bcd) << 5
            | (self.int_format & 3) << 6
        )
        fc3 = (self.ni_format1 & 0x0F) | (self.ni_format2 & 0x0F) << 4
        head = bytes([fc1, fc2, fc3]) + self.device_class
        head += bytes(
            [
                self.nameplate_type,
                self.default_set_used,
                self.max_proc_parm_length,
                self.max_resp_data_len,
                self.std_version,
                self.std_revision,
                self.dim_std_tables,
                self.dim_mfg_tables,
                self.dim_std_procs,
                self.dim_mfg_procs,
                self.dim_mfg_status,
                self.nbr_pending,
            ]
        )
        return head + b"".join(
            _bitset(members, size)
            for members, size in (
                (self.std_tables_used, self.dim_std_tables),
                (self.mfg_tables_used, self.dim_mfg_tables),
                (self.std_procs_used, self.dim_std_procs),
                (self.mfg_procs_used, self.dim_mfg_procs),
                (self.std_tables_write, self.dim_std_tables),
                (self.mfg_tables_write, self.dim_mfg_tables),
            )
        )


# ---------------------------------------------------------------------------
# ST1 manufacturer identification, ST5 device identification
# ---------------------------------------------------------------------------


def _decode_id(raw: bytes, bcd: bool, offset: int, table: int) -> str:
    if not bcd:
        return _text(raw)
    return "".join(f"{_bcd_byte(b, offset + i, table):02d}" for i, b in enumerate(raw))


def _encode_id(text: str, size: int, bcd: bool) -> bytes:
    if not bcd:
        raw = text.encode("latin-1")
        if len(raw) > size:
            raise ValueError(f"{text!r} is longer than {size} characters")
        return raw.ljust(size, b" ")
    if not text.isdigit() or len(text) > 2 * size:
        raise ValueError(f"{text!r} is not at most {2 * size} digits")
    return bytes.fromhex(text.rjust(2 * size, "0"))


@attrs.frozen
class ManufacturerId:
    """ST1 GENERAL_MFG_ID_TBL."""

    manufacturer: str
    model: str
    hw_version: int = 0
    hw_revision: int = 0
    fw_version: int = 0
    fw_revision: int = 0
    serial_number: str = ""

    @classmethod
    def decode(cls, data: bytes, config: GeneralConfig) -> ManufacturerId:
        serial_len = 8 if config.id_form_bcd else 16
        _need(data, 16 + serial_len, 1)
        return cls(
            _text(data[0:4]),
            _text(data[4:12]),
            data[12],
            data[13],
            data[14],
            data[15],
            _decode_id(data[16 : 16 + serial_len], config.id_form_bcd, 16, 1),
        )

    def encode(self, config: GeneralConfig) -> bytes:
        return (
            _encode_id(self.manufacturer, 4, False)
            + _encode_id(self.model, 8, False)
            + bytes([self.hw_version, self.hw_revision, self.fw_version, self.fw_revision])
            + _encode_id(self.serial_number, 8 if config.id_form_bcd else 16, config.id_form_bcd)
        )


@attrs.frozen
class DeviceId:
    """ST5 DEVICE_IDENT_TBL: the utility's identification of the meter."""

    identification: str

    @classmethod
    def decode(cls, data: bytes, config: GeneralConfig) -> DeviceId:
        size = 10 if config.id_form_bcd else 20
        _need(data, size, 5)
        return cls(_decode_id(data[:size], config.id_form_bcd, 0, 5))

    def encode(self, config: GeneralConfig) -> bytes:
        size = 10 if config.id_form_bcd else 20
        return _encode_id(self.identification, size, config.id_form_bcd)


# ---------------------------------------------------------------------------
# ST3 end device mode and status
# ---------------------------------------------------------------------------


class EdMode(enum.IntFlag):
    METERING = 0x01
    TEST_MODE = 0x02
    METER_SHOP_MODE = 0x04
    FACTORY = 0x08


class StdStatus(enum.IntFlag):
    """ED_STD_STATUS1 flags."""

    UNPROGRAMMED = 0x0001
    CONFIGURATION_ERROR = 0x0002
    SELF_CHECK_ERROR = 0x0004
    RAM_FAILURE = 0x0008
    ROM_FAILURE = 0x0010
    NONVOLATILE_MEMORY_FAILURE = 0x0020
    CLOCK_ERROR = 0x0040
    MEASUREMENT_ERROR = 0x0080
    LOW_BATTERY = 0x0100
    LOW_LOSS_POTENTIAL = 0x0200
    DEMAND_OVERLOAD = 0x0400
    POWER_FAILURE = 0x0800
    TAMPER_DETECT = 0x1000
    REVERSE_ROTATION = 0x2000


@attrs.frozen
class ModeStatus:
    """ST3 ED_MODE_STATUS_TBL."""

    mode: EdMode
    std_status: StdStatus
    std_status2: int = 0
    mfg_status: bytes = b""

    @classmethod
    def decode(cls, data: bytes, config: GeneralConfig) -> ModeStatus:
        _need(data, 4 + config.dim_mfg_status, 3)
        return cls(
            EdMode(data[0] & 0x0F),
            StdStatus(int.from_bytes(data[1:3], config.byte_order) & 0x3FFF),
            data[3],
            data[4 : 4 + config.dim_mfg_status],
        )

    def encode(self, config: GeneralConfig) -> bytes:
        return (
            bytes([self.mode])
            + int(self.std_status).to_bytes(2, config.byte_order)
            + bytes([self.std_status2])
            + self.mfg_status.ljust(config.dim_mfg_status, b"\0")
        )


# ---------------------------------------------------------------------------
# ST52 clock
# ---------------------------------------------------------------------------


@attrs.frozen
class Clock:
    """ST52 CLOCK_TBL: the meter's clock in UTC, with its TIME_DATE_QUAL flags."""

    time: datetime
    day_of_week: int = 0  # 0 Sunday .. 6 Saturday, 7 not given
    dst: bool = False
    gmt: bool = False
    tz_applied: bool = False
    dst_applied: bool = False

    @classmethod
    def decode(cls, data: bytes, config: GeneralConfig, tz: tzinfo = UTC) -> Clock:
        """``tz`` is the meter's zone, used when the GMT flag says the clock is local."""
        size = _TIME_LENGTH.get(config.time_format)
        if not size:
            raise FrameError(
                f"ST0 time format {config.time_format} gives no clock", offset=0, field="ST52"
            )
        _need(data, size + 1, 52)
        qual = data[size]
        gmt = bool(qual & 0x10)
        zone = UTC if gmt else tz
        when = decode_ltime(data[:size], config, zone, 52)
        return cls(
            when.astimezone(UTC),
            qual & 0x07,
            bool(qual & 0x08),
            gmt,
            bool(qual & 0x20),
            bool(qual & 0x40),
        )

    def encode(self, config: GeneralConfig, tz: tzinfo = UTC) -> bytes:
        zone = UTC if self.gmt else tz
        qual = (
            (self.day_of_week & 0x07)
            | int(self.dst) << 3
            | int(self.gmt) << 4
            | int(self.tz_applied) << 5
            | int(self.dst_applied) << 6
        )
        return encode_ltime(self.time.astimezone(zone), config) + bytes([qual])

    def reading(self, meter: str, received_time: datetime | None = None) -> Reading:
        """The clock as a Reading of 0-0:1.0.0 (value: the meter's time in UTC, ISO)."""
        return Reading(
            meter=meter,
            obis=ObisCode(0, 0, 1, 0, 0),
            value=self.time.isoformat(),
            meter_time=self.time,
            received_time=received_time if received_time is not None else utcnow(),
            source=SOURCE,
            native_id="ST52",
        )


@attrs.frozen
class ActualTimeTou:
    """ST51 ACT_TIME_TOU_TBL, the flags that lay out ST53: CAP_DST_AUTO_FLAG (ST53 has
    DST_TIME_EFF and DST_TIME_AMT) and CAP_TM_ZN_OFFSET_FLAG (ST53 has TIME_ZONE_OFFSET)."""

    func1: int = 0
    dst_auto: bool = False
    time_zone_offset: bool = False
    func2_rest: int = 0
    calendar_func: int = 0
    nbr_non_recurr_dates: int = 0
    nbr_recurr_dates: int = 0
    nbr_tier_switches: int = 0
    calendar_tbl_size: int = 0

    @classmethod
    def decode(cls, data: bytes, config: GeneralConfig) -> ActualTimeTou:
        _need(data, 9, 51)
        order = config.byte_order
        f2 = data[1]
        return cls(data[0], bool(f2 & 0x01), bool(f2 & 0x10), f2 & 0xEE, data[2], data[3],
                   data[4], int.from_bytes(data[5:7], order), int.from_bytes(data[7:9], order))

    def encode(self, config: GeneralConfig) -> bytes:
        order = config.byte_order
        f2 = int(self.dst_auto) | int(self.time_zone_offset) << 4 | self.func2_rest
        return (bytes([self.func1, f2, self.calendar_func, self.nbr_non_recurr_dates,
                       self.nbr_recurr_dates])
                + self.nbr_tier_switches.to_bytes(2, order)
                + self.calendar_tbl_size.to_bytes(2, order))


# The TIME (time of day) of TM_FORMAT 1 (BCD) and 2 (UINT8): hh mm ss.
_TOD_LENGTH: Final = {1: 3, 2: 3}


@attrs.frozen
class TimeOffset:
    """ST53 TIME_OFFSET_TBL laid out by ST51: when DST changes take effect (time of day,
    seconds after midnight) and by how many minutes, and the zone's offset from GMT in
    minutes (east positive). fep reads it for TM_FORMAT 1 and 2 (a 3-byte TIME)."""

    dst_time_eff: int | None = None
    dst_minutes: int | None = None
    zone_minutes: int | None = None

    @classmethod
    def decode(cls, data: bytes, config: GeneralConfig, actual: ActualTimeTou) -> TimeOffset:
        at = 0
        eff = amount = zone = None
        if actual.dst_auto:
            size = _TOD_LENGTH.get(config.time_format)
            if size is None:
                raise FrameError(f"ST53: no TIME layout for TM_FORMAT {config.time_format}",
                                 offset=0, field="ST53")
            _need(data, size + 1, 53)
            raw = data[:size]
            parts = ([_bcd_byte(b, i, 53) for i, b in enumerate(raw)]
                     if config.time_format == TimeFormat.BCD else list(raw))
            eff = parts[0] * 3600 + parts[1] * 60 + parts[2]
            amount = data[size]
            at = size + 1
        if actual.time_zone_offset:
            _need(data, at + 2, 53)
            zone = int.from_bytes(data[at : at + 2], config.byte_order, signed=True)
        return cls(eff, amount, zone)

    def encode(self, config: GeneralConfig, actual: ActualTimeTou) -> bytes:
        out = b""
        if actual.dst_auto:
            eff = self.dst_time_eff or 0
            parts = [eff // 3600, eff // 60 % 60, eff % 60]
            if config.time_format == TimeFormat.BCD:
                out += bytes(int(f"{p:02d}", 16) for p in parts)
            else:
                out += bytes(parts)
            out += bytes([self.dst_minutes or 0])
        if actual.time_zone_offset:
            out += (self.zone_minutes or 0).to_bytes(2, config.byte_order, signed=True)
        return out

    def zone(self, dst: bool) -> tzinfo | None:
        """The meter's zone as a fixed offset (plus the DST amount when ``dst``), or
        None when ST53 gives no offset."""
        if self.zone_minutes is None:
            return None
        from datetime import timezone

        minutes = self.zone_minutes + ((self.dst_minutes or 0) if dst else 0)
        return timezone(timedelta(minutes=minutes))


def decode_ltime(data: bytes, config: GeneralConfig, tz: tzinfo, table: int) -> datetime:
    """An LTIME_DATE in the layout ST0's TM_FORMAT gives, as an aware datetime in ``tz``."""
    fmt = config.time_format
    if fmt in (TimeFormat.BCD, TimeFormat.UINT8):
        if fmt == TimeFormat.BCD:
            parts = [_bcd_byte(b, i, table) for i, b in enumerate(data[:6])]
        else:
            parts = list(data[:6])
        yy, mo, dd, hh, mi, ss = parts
        # Two-digit years: C12.19 meters count 1970..2069 (00..69 are 2000s).
        year = 2000 + yy if yy < 70 else 1900 + yy
        try:
            return datetime(year, mo, dd, hh, mi, ss, tzinfo=tz)
        except ValueError as e:
            raise FrameError(
                f"ST{table}: impossible date/time {parts}", offset=0, field=f"ST{table}"
            ) from e
    order = config.byte_order
    if fmt == TimeFormat.MINUTES_SECONDS:
        seconds = int.from_bytes(data[:4], order) * 60 + data[4]
    elif fmt == TimeFormat.SECONDS:
        seconds = int.from_bytes(data[:4], order)
    else:
        raise FrameError(f"ST0 time format {fmt} is not known", offset=0, field="TM_FORMAT")
    return _from_epoch(seconds, tz, table)


def _from_epoch(seconds: int, tz: tzinfo, table: int) -> datetime:
    # Counted from 1970 in the meter's own zone when the clock is local.
    try:
        naive = _EPOCH.replace(tzinfo=None) + timedelta(seconds=seconds)
        # Converting to UTC must stay within datetime's range too.
        return naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz)
    except OverflowError as e:
        raise FrameError(
            f"ST{table}: time {seconds} s after 1970 is out of range",
            offset=0,
            field=f"ST{table}",
        ) from e


def encode_ltime(when: datetime, config: GeneralConfig) -> bytes:
    fmt = config.time_format
    if fmt in (TimeFormat.BCD, TimeFormat.UINT8):
        if not 1970 <= when.year <= 2069:
            raise ValueError(f"two-digit years cover 1970..2069, not {when.year}")
        parts = [when.year % 100, when.month, when.day, when.hour, when.minute, when.second]
        if fmt == TimeFormat.BCD:
            return bytes(int(f"{p:02d}", 16) for p in parts)
        return bytes(parts)
    seconds = int((when.replace(tzinfo=None) - _EPOCH.replace(tzinfo=None)).total_seconds())
    order = config.byte_order
    if fmt == TimeFormat.MINUTES_SECONDS:
        return (seconds // 60).to_bytes(4, order) + bytes([seconds % 60])
    if fmt == TimeFormat.SECONDS:
        return seconds.to_bytes(4, order)
    raise ValueError(f"time format {fmt} has no clock")


# ---------------------------------------------------------------------------
# Non-integer numbers (NI_FMAT1 / NI_FMAT2 of ST0)
# ---------------------------------------------------------------------------

ST21_ACTUAL_REGISTERS: Final = 21
ST23_CURRENT_REGISTERS: Final = 23


class NiFormat(enum.IntEnum):
    """NI_FORMAT1/NI_FORMAT2 of ST0: how non-integer values (registers) are sent."""

    FLOAT64 = 0
    FLOAT32 = 1
    FLOAT_CHAR12 = 2
    FLOAT_CHAR6 = 3
    INT32_1 = 4  # INT32 with four implied decimals (1 is 0.0001)
    FIXED_BCD6 = 5
    FIXED_BCD4 = 6
    INT24 = 7
    INT32 = 8
    INT40 = 9
    INT48 = 10
    INT64 = 11
    FIXED_BCD8 = 12
    FLOAT_CHAR21 = 13


NI_LENGTH: Final = {0: 8, 1: 4, 2: 12, 3: 6, 4: 4, 5: 6, 6: 4, 7: 3, 8: 4, 9: 5, 10: 6, 11: 8,
                    12: 8, 13: 21}  # fmt: skip


# The decimal exponents an NI character float may have (a FLOAT64's range, with margin).
_NI_MAX_EXPONENT: Final = 400


def decode_ni(raw: bytes, fmt: int, order: Literal["little", "big"], table: int) -> Decimal:
    """One non-integer value of ``fmt``; FrameError for a value that is not a finite
    number (or a character float beyond a FLOAT64's exponents). Integers are two's
    complement; fixed BCD is read most significant digit first."""
    field = f"ST{table}"
    if fmt in (NiFormat.FLOAT64, NiFormat.FLOAT32):
        value = struct.unpack(
            ("<" if order == "little" else ">") + ("d" if fmt == NiFormat.FLOAT64 else "f"), raw
        )[0]
        if not math.isfinite(value):
            raise FrameError(f"{field}: register is not a finite number", offset=0, field=field)
        return Decimal(repr(value))
    if fmt in (NiFormat.FLOAT_CHAR6, NiFormat.FLOAT_CHAR12, NiFormat.FLOAT_CHAR21):
        text = raw.decode("latin-1").strip(" \x00")
        try:
            number = Decimal(text)
        except InvalidOperation:
            number = Decimal("NaN")
        if not number.is_finite():
            raise FrameError(f"{field}: {text!r} is not a number", offset=0, field=field)
        if not -_NI_MAX_EXPONENT <= number.adjusted() <= _NI_MAX_EXPONENT:
            # 21 characters can say 1E+999999999999999: a number no meter measures, and
            # one whose arithmetic (int(), scaling) would not end.
            raise FrameError(f"{field}: {text!r} is out of range", offset=0, field=field)
        return number
    if fmt in (NiFormat.FIXED_BCD4, NiFormat.FIXED_BCD6, NiFormat.FIXED_BCD8):
        digits = raw.hex()
        if not digits.isdigit():
            raise FrameError(f"{field}: {digits} is not BCD", offset=0, field=field)
        return Decimal(int(digits))
    if fmt in NI_LENGTH:
        number = Decimal(int.from_bytes(raw, order, signed=True))
        return number.scaleb(-4) if fmt == NiFormat.INT32_1 else number
    raise FrameError(f"NI format {fmt} is not known", offset=0, field="NI_FORMAT")


def encode_ni(value: Decimal, fmt: int, order: Literal["little", "big"]) -> bytes:
    size = NI_LENGTH[fmt]
    if fmt in (NiFormat.FLOAT64, NiFormat.FLOAT32):
        code = ("<" if order == "little" else ">") + ("d" if fmt == NiFormat.FLOAT64 else "f")
        return struct.pack(code, float(value))
    if fmt in (NiFormat.FLOAT_CHAR6, NiFormat.FLOAT_CHAR12, NiFormat.FLOAT_CHAR21):
        text = str(value).encode("latin-1")
        if len(text) > size:
            raise ValueError(f"{value} does not fit {size} characters")
        return text.rjust(size, b" ")
    if fmt in (NiFormat.FIXED_BCD4, NiFormat.FIXED_BCD6, NiFormat.FIXED_BCD8):
        if value < 0 or value != value.to_integral_value():
            raise ValueError(f"fixed BCD takes whole non-negative numbers, not {value}")
        return bytes.fromhex(str(int(value)).rjust(2 * size, "0"))
    scaled = value.scaleb(4) if fmt == NiFormat.INT32_1 else value
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} is not a whole number of units for NI format {fmt}")
    try:
        return int(scaled).to_bytes(size, order, signed=True)
    except OverflowError:
        raise ValueError(f"{value} does not fit NI format {fmt}") from None


# ---------------------------------------------------------------------------
# ST21 actual registers, ST23 current register data
# ---------------------------------------------------------------------------


@attrs.frozen
class ActualRegisters:
    """ST21 ACT_REGS_TBL: which fields ST23 carries and how many of each."""

    season_info: bool = False
    date_time_field: bool = False
    demand_reset_counter: bool = False
    demand_reset_lock: bool = False
    cum_demand: bool = False
    cont_cum_demand: bool = False
    time_remaining: bool = False
    func2: int = 0
    nbr_self_reads: int = 0
    nbr_summations: int = 0
    nbr_demands: int = 0
    nbr_coin_values: int = 0
    nbr_occur: int = 0
    nbr_tiers: int = 0
    nbr_present_demands: int = 0
    nbr_present_values: int = 0

    @classmethod
    def decode(cls, data: bytes) -> ActualRegisters:
        _need(data, 10, 21)
        f1 = data[0]
        return cls(
            season_info=bool(f1 & 0x01),
            date_time_field=bool(f1 & 0x02),
            demand_reset_counter=bool(f1 & 0x04),
            demand_reset_lock=bool(f1 & 0x08),
            cum_demand=bool(f1 & 0x10),
            cont_cum_demand=bool(f1 & 0x20),
            time_remaining=bool(f1 & 0x40),
            func2=data[1],
            nbr_self_reads=data[2],
            nbr_summations=data[3],
            nbr_demands=data[4],
            nbr_coin_values=data[5],
            nbr_occur=data[6],
            nbr_tiers=data[7],
            nbr_present_demands=data[8],
            nbr_present_values=data[9],
        )

    def encode(self) -> bytes:
        flags = (
            self.season_info,
            self.date_time_field,
            self.demand_reset_counter,
            self.demand_reset_lock,
            self.cum_demand,
            self.cont_cum_demand,
            self.time_remaining,
        )
        f1 = sum(int(flag) << i for i, flag in enumerate(flags))
        return bytes(
            [
                f1,
                self.func2,
                self.nbr_self_reads,
                self.nbr_summations,
                self.nbr_demands,
                self.nbr_coin_values,
                self.nbr_occur,
                self.nbr_tiers,
                self.nbr_present_demands,
                self.nbr_present_values,
            ]
        )


@attrs.frozen
class DemandRecord:
    """DEMANDS_RCD: the ``nbr_occur`` highest demands, with their times when ST21 says so."""

    demands: tuple[Decimal, ...]
    event_times: tuple[datetime | None, ...] = ()
    cum_demand: Decimal | None = None
    cont_cum_demand: Decimal | None = None


@attrs.frozen
class DataBlock:
    """DATA_BLK_RCD: summations (energy), demands and coincident values of one tier (or
    the total)."""

    summations: tuple[Decimal, ...]
    demands: tuple[DemandRecord, ...] = ()
    coincidents: tuple[tuple[Decimal, ...], ...] = ()


@attrs.frozen
class CurrentRegisters:
    """ST23 CURRENT_REG_DATA_TBL: the total block and one block per TOU tier."""

    total: DataBlock
    tiers: tuple[DataBlock, ...] = ()
    demand_resets: int | None = None


_STIME_LENGTH: Final = {0: 0, 1: 5, 2: 5, 3: 4, 4: 4}


# Records a table's bytes may make beyond one per byte: a layout whose records take no
# bytes at all (ST21 with zero occurrences and no time format, say) makes records from
# counts alone, and counts multiply (self-reads x tiers x demands); past the bound the
# table is refused rather than build millions of empty records.
RECORDS_PER_TABLE = 20_000


class _Reader:
    """Walks table bytes field by field, naming the table and offset on a shortfall."""

    def __init__(self, data: bytes, table: int, config: GeneralConfig, tz: tzinfo) -> None:
        self.data = data
        self.at = 0
        self.table = table
        self.config = config
        self.tz = tz
        self.records_left = len(data) + RECORDS_PER_TABLE

    def spend(self, records: int) -> None:
        """Count ``records`` about to be built; FrameError past the table's bound."""
        self.records_left -= records
        if self.records_left < 0:
            raise FrameError(
                f"ST{self.table}: its layout makes more than {len(self.data) + RECORDS_PER_TABLE}"
                f" records from {len(self.data)} bytes",
                offset=self.at,
                field=f"ST{self.table}",
            )

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise FrameError(
                f"ST{self.table} ends at byte {len(self.data)}, a field needs {self.at + n}",
                offset=len(self.data),
                field=f"ST{self.table}",
            )
        raw = self.data[self.at : self.at + n]
        self.at += n
        return raw

    def ni(self, fmt: int) -> Decimal:
        if fmt not in NI_LENGTH:
            raise FrameError(f"NI format {fmt} is not known", offset=0, field="NI_FORMAT")
        at = self.at
        try:
            return decode_ni(self.take(NI_LENGTH[fmt]), fmt, self.config.byte_order, self.table)
        except FrameError as e:
            e.offset = at
            raise

    def stime(self) -> datetime | None:
        """An STIME_DATE (no seconds); all zeros means never."""
        fmt = self.config.time_format
        raw = self.take(_STIME_LENGTH.get(fmt, 0))
        if not any(raw):
            return None
        if fmt in (TimeFormat.BCD, TimeFormat.UINT8):
            when = decode_ltime(raw + b"\0", self.config, self.tz, self.table)
        else:
            count = int.from_bytes(raw, self.config.byte_order)
            seconds = count * 60 if fmt == TimeFormat.MINUTES_SECONDS else count
            when = _from_epoch(seconds, self.tz, self.table)
        return when.astimezone(UTC)


def _encode_stime(when: datetime | None, config: GeneralConfig, tz: tzinfo) -> bytes:
    fmt = config.time_format
    size = _STIME_LENGTH.get(fmt, 0)
    if when is None:
        return bytes(size)
    local = when.astimezone(tz)
    if fmt in (TimeFormat.BCD, TimeFormat.UINT8):
        return encode_ltime(local, config)[:5]
    seconds = int((local.replace(tzinfo=None) - _EPOCH.replace(tzinfo=None)).total_seconds())
    value = seconds // 60 if fmt == TimeFormat.MINUTES_SECONDS else seconds
    return value.to_bytes(4, config.byte_order)


# For the tables laid out like ST23 (fep.protocols.ansi_c12.snapshots).
TableReader = _Reader
encode_stime = _encode_stime


def decode_current_registers(
    data: bytes, config: GeneralConfig, registers: ActualRegisters, tz: tzinfo = UTC
) -> CurrentRegisters:
    """ST23 laid out by ST0 (formats) and ST21 (counts and optional fields); ``tz`` is the
    meter's zone for demand times. FrameError (only) for bytes that do not fit, or a layout
    that would make more records than ``RECORDS_PER_TABLE`` beyond the bytes given."""
    reader = _Reader(data, 23, config, tz)
    current = read_register_data(reader, registers)
    if reader.at != len(data):
        raise FrameError(
            f"ST23 has {len(data) - reader.at} bytes more than ST21 describes",
            offset=reader.at,
            field="ST23",
        )
    return current


def read_register_data(reader: _Reader, registers: ActualRegisters) -> CurrentRegisters:
    """One REGISTER_DATA_RCD (ST23, and each snapshot of ST24-26) from ``reader``."""
    config = reader.config
    resets = reader.take(1)[0] if registers.demand_reset_counter else None

    def block() -> DataBlock:
        reader.spend(1 + (registers.nbr_demands + registers.nbr_coin_values)
                     * (1 + registers.nbr_occur))
        sums = tuple(reader.ni(config.ni_format1) for _ in range(registers.nbr_summations))
        demands = []
        for _ in range(registers.nbr_demands):
            times: tuple[datetime | None, ...] = ()
            if registers.date_time_field:
                times = tuple(reader.stime() for _ in range(registers.nbr_occur))
            cum = reader.ni(config.ni_format1) if registers.cum_demand else None
            cont = reader.ni(config.ni_format1) if registers.cont_cum_demand else None
            values = tuple(reader.ni(config.ni_format2) for _ in range(registers.nbr_occur))
            demands.append(DemandRecord(values, times, cum, cont))
        coins = tuple(
            tuple(reader.ni(config.ni_format2) for _ in range(registers.nbr_occur))
            for _ in range(registers.nbr_coin_values)
        )
        return DataBlock(sums, tuple(demands), coins)

    total = block()
    tiers = tuple(block() for _ in range(registers.nbr_tiers))
    return CurrentRegisters(total, tiers, resets)


def encode_current_registers(
    current: CurrentRegisters, config: GeneralConfig, registers: ActualRegisters, tz: tzinfo = UTC
) -> bytes:
    """ST23 bytes for ``current`` (the meter side); the counts must match ``registers``."""
    order = config.byte_order
    out = bytearray()
    if registers.demand_reset_counter:
        out.append(current.demand_resets or 0)

    def block(data: DataBlock) -> None:
        if len(data.summations) != registers.nbr_summations:
            raise ValueError("summation count differs from ST21")
        for value in data.summations:
            out.extend(encode_ni(value, config.ni_format1, order))
        if len(data.demands) != registers.nbr_demands:
            raise ValueError("demand count differs from ST21")
        for demand in data.demands:
            if registers.date_time_field:
                times = demand.event_times or (None,) * registers.nbr_occur
                for when in times:
                    out.extend(_encode_stime(when, config, tz))
            if registers.cum_demand:
                out.extend(encode_ni(demand.cum_demand or Decimal(0), config.ni_format1, order))
            if registers.cont_cum_demand:
                value = demand.cont_cum_demand or Decimal(0)
                out.extend(encode_ni(value, config.ni_format1, order))
            for value in demand.demands:
                out.extend(encode_ni(value, config.ni_format2, order))
        for coincident in data.coincidents:
            for value in coincident:
                out.extend(encode_ni(value, config.ni_format2, order))

    block(current.total)
    if len(current.tiers) != registers.nbr_tiers:
        raise ValueError("tier count differs from ST21")
    for tier in current.tiers:
        block(tier)
    return bytes(out)


# ---------------------------------------------------------------------------
# ST12 units of measure, ST22 data selection: what each ST23 value is
# ---------------------------------------------------------------------------

ST12_UOM_ENTRY: Final = 12
ST22_DATA_SELECTION: Final = 22
NO_SOURCE: Final = 0xFF

# MULTIPLIER of UOM_ENTRY_BFLD: the power of ten the value is counted in.
UOM_MULTIPLIER_EXPONENT: Final = (0, 2, 3, 6, 9, -2, -3, -6)


class TimeBase(enum.IntEnum):
    """TIME_BASE of UOM_ENTRY_BFLD."""

    BULK = 0  # bulk quantity of commodity: a dial reading (energy for power ID codes)
    INSTANTANEOUS = 1
    PERIOD = 2  # period-based, one cycle of the fundamental
    SUB_BLOCK_DEMAND = 3
    BLOCK_DEMAND = 4
    NET_BULK = 5
    THERMAL = 6
    EVENT = 7


@attrs.frozen
class UomEntry:
    """One UOM_ENTRY_BFLD of ST12 (a UINT32 bit field in ST0's byte order)."""

    id_code: int
    time_base: int = TimeBase.BULK
    multiplier: int = 0
    q1: bool = False
    q2: bool = False
    q3: bool = False
    q4: bool = False
    net_flow: bool = False
    segmentation: int = 0  # 0 none, 1 A-B, 2 B-C, 3 C-A, 4 N-G, 5 A-N, 6 B-N, 7 C-N
    harmonic: bool = False
    nfs: bool = False  # not following the standard: the ID code is the manufacturer's

    @property
    def exponent(self) -> int:
        return UOM_MULTIPLIER_EXPONENT[self.multiplier & 7]

    @classmethod
    def from_int(cls, raw: int) -> UomEntry:
        return cls(
            raw & 0xFF,
            (raw >> 8) & 7,
            (raw >> 11) & 7,
            bool(raw >> 14 & 1),
            bool(raw >> 15 & 1),
            bool(raw >> 16 & 1),
            bool(raw >> 17 & 1),
            bool(raw >> 18 & 1),
            (raw >> 19) & 7,
            bool(raw >> 22 & 1),
            bool(raw >> 31 & 1),
        )

    def to_int(self) -> int:
        return (
            (self.id_code & 0xFF)
            | (self.time_base & 7) << 8
            | (self.multiplier & 7) << 11
            | int(self.q1) << 14
            | int(self.q2) << 15
            | int(self.q3) << 16
            | int(self.q4) << 17
            | int(self.net_flow) << 18
            | (self.segmentation & 7) << 19
            | int(self.harmonic) << 22
            | int(self.nfs) << 31
        )


def decode_uom_entries(data: bytes, config: GeneralConfig) -> tuple[UomEntry, ...]:
    """ST12 UOM_ENTRY_TBL: NBR_UOM_ENTRIES (ST11) four-byte entries; the count is taken
    from the table's length, so ST11 need not be read."""
    if len(data) % 4:
        raise FrameError(
            f"ST12 is {len(data)} bytes, not a whole number of 4-byte entries",
            offset=len(data) - len(data) % 4,
            field="ST12",
        )
    order = config.byte_order
    return tuple(
        UomEntry.from_int(int.from_bytes(data[i : i + 4], order)) for i in range(0, len(data), 4)
    )


def encode_uom_entries(entries: tuple[UomEntry, ...], config: GeneralConfig) -> bytes:
    return b"".join(e.to_int().to_bytes(4, config.byte_order) for e in entries)


@attrs.frozen
class DataSelection:
    """ST22 DATA_SELECTION_TBL: the source index (into ST12 and the other source tables)
    of every summation, demand and coincident value of ST23; 0xFF means none."""

    summations: tuple[int, ...] = ()
    demands: tuple[int, ...] = ()
    demand_is_max: tuple[bool, ...] = ()  # MIN_OR_MAX_FLAGS: True maximum, False minimum
    coincidents: tuple[int, ...] = ()
    coincident_demand: tuple[int, ...] = ()  # COIN_DEMAND_ASSOC: which demand it goes with

    @classmethod
    def decode(cls, data: bytes, registers: ActualRegisters) -> DataSelection:
        s, d, c = registers.nbr_summations, registers.nbr_demands, registers.nbr_coin_values
        flags = (d + 7) // 8
        _need(data, s + d + flags + 2 * c, 22)
        maxes = _bits(data[s + d : s + d + flags])
        at = s + d + flags
        return cls(
            tuple(data[:s]),
            tuple(data[s : s + d]),
            tuple(i in maxes for i in range(d)),
            tuple(data[at : at + c]),
            tuple(data[at + c : at + 2 * c]),
        )

    def encode(self, registers: ActualRegisters) -> bytes:
        d = registers.nbr_demands
        if (len(self.summations), len(self.demands), len(self.coincidents)) != (
            registers.nbr_summations,
            d,
            registers.nbr_coin_values,
        ):
            raise ValueError("selection counts differ from ST21")
        maxes = frozenset(i for i, is_max in enumerate(self.demand_is_max) if is_max)
        assoc = self.coincident_demand or (0,) * len(self.coincidents)
        return (
            bytes(self.summations)
            + bytes(self.demands)
            + _bitset(maxes, (d + 7) // 8)
            + bytes(self.coincidents)
            + bytes(assoc)
        )


# ---------------------------------------------------------------------------
# ST11, ST13-16: the rest of decade 1 (data sources)
# ---------------------------------------------------------------------------

ST11_ACTUAL_SOURCES: Final = 11
ST13_DEMAND_CONTROL: Final = 13
ST14_DATA_CONTROL: Final = 14
ST15_CONSTANTS: Final = 15
ST16_SOURCE_DEFINITION: Final = 16


class ConstantsSelector(enum.IntEnum):
    """CONSTANTS_SELECTOR of ST11: which record ST15 holds."""

    GAS_AGA3 = 0
    GAS_AGA7 = 1
    ELECTRIC = 2


@attrs.frozen
class ActualSources:
    """ST11 ACT_SOURCES_LIM_TBL: what the other decade-1 tables hold. ``no_offset`` is
    bit 7 of SOURCE_FLAGS (NO_OFFSET_FLAG in C12.19-2008: ST15 records carry no OFFSET;
    a filler bit, always 0, in the 1997 edition)."""

    pf_exclude: bool = False
    reset_exclude: bool = False
    block_demand: bool = False
    sliding_demand: bool = False
    thermal_demand: bool = False
    set1_present: bool = False
    set2_present: bool = False
    no_offset: bool = False
    nbr_uom_entries: int = 0
    nbr_demand_ctrl_entries: int = 0
    data_ctrl_length: int = 0
    nbr_data_ctrl_entries: int = 0
    nbr_constants_entries: int = 0
    constants_selector: int = ConstantsSelector.ELECTRIC
    nbr_sources: int = 0

    @classmethod
    def decode(cls, data: bytes) -> ActualSources:
        _need(data, 8, 11)
        flags = data[0]
        return cls(*(bool(flags >> bit & 1) for bit in range(8)), *data[1:8])

    def encode(self) -> bytes:
        flags = (
            self.pf_exclude,
            self.reset_exclude,
            self.block_demand,
            self.sliding_demand,
            self.thermal_demand,
            self.set1_present,
            self.set2_present,
            self.no_offset,
        )
        return bytes(
            [
                sum(int(flag) << bit for bit, flag in enumerate(flags)),
                self.nbr_uom_entries,
                self.nbr_demand_ctrl_entries,
                self.data_ctrl_length,
                self.nbr_data_ctrl_entries,
                self.nbr_constants_entries,
                self.constants_selector,
                self.nbr_sources,
            ]
        )


@attrs.frozen
class DemandInterval:
    """INT_CONTROL_RCD of ST13: a sliding demand's sub-interval and multiplier (when ST11
    has SLIDING_DEMAND_FLAG), else a block demand's interval length; minutes."""

    sub_interval: int | None = None
    multiplier: int | None = None
    length: int | None = None

    @property
    def minutes(self) -> int:
        if self.length is not None:
            return self.length
        return (self.sub_interval or 0) * (self.multiplier or 0)


@attrs.frozen
class DemandControl:
    """ST13 DEMAND_CONTROL_TBL: reset exclusion (minutes), power-failure recognition
    (seconds), exclusion and cold-load pickup (minutes) when ST11 says the meter has
    them, and one DemandInterval per source (index = source index)."""

    reset_exclusion: int | None = None
    p_fail_recognition: int | None = None
    p_fail_exclusion: int | None = None
    cold_load_pickup: int | None = None
    intervals: tuple[DemandInterval, ...] = ()

    @classmethod
    def decode(cls, data: bytes, config: GeneralConfig, actual: ActualSources) -> DemandControl:
        reader = _Reader(data, ST13_DEMAND_CONTROL, config, UTC)
        reset = reader.take(1)[0] if actual.reset_exclude else None
        recognition = exclusion = pickup = None
        if actual.pf_exclude:
            recognition, exclusion, pickup = reader.take(3)
        intervals = []
        for _ in range(actual.nbr_demand_ctrl_entries):
            if actual.sliding_demand:
                sub, mult = reader.take(2)
                intervals.append(DemandInterval(sub, mult))
            else:
                intervals.append(
                    DemandInterval(length=int.from_bytes(reader.take(2), config.byte_order))
                )
        _all_used(reader)
        return cls(reset, recognition, exclusion, pickup, tuple(intervals))

    def encode(self, config: GeneralConfig, actual: ActualSources) -> bytes:
        out = bytearray()
        if actual.reset_exclude:
            out.append(self.reset_exclusion or 0)
        if actual.pf_exclude:
            out += bytes(
                [self.p_fail_recognition or 0, self.p_fail_exclusion or 0,
                 self.cold_load_pickup or 0]
            )  # fmt: skip
        if len(self.intervals) != actual.nbr_demand_ctrl_entries:
            raise ValueError("demand control entries differ from ST11")
        for interval in self.intervals:
            if actual.sliding_demand:
                out += bytes([interval.sub_interval or 0, interval.multiplier or 0])
            else:
                out += (interval.length or 0).to_bytes(2, config.byte_order)
        return bytes(out)


def _all_used(reader: _Reader) -> None:
    if reader.at != len(reader.data):
        raise FrameError(
            f"ST{reader.table} has {len(reader.data) - reader.at} bytes more than ST11 "
            "describes",
            offset=reader.at,
            field=f"ST{reader.table}",
        )


def decode_data_control(data: bytes, actual: ActualSources) -> tuple[bytes, ...]:
    """ST14 DATA_CONTROL_TBL: NBR_DATA_CTRL_ENTRIES manufacturer-defined identifiers of
    DATA_CTRL_LENGTH bytes each (index = source index)."""
    size, count = actual.data_ctrl_length, actual.nbr_data_ctrl_entries
    if len(data) != size * count:
        raise FrameError(
            f"ST14 is {len(data)} bytes, ST11 gives {count} entries of {size}",
            offset=min(len(data), size * count),
            field="ST14",
        )
    return tuple(data[i * size : (i + 1) * size] for i in range(count))


def encode_data_control(ids: tuple[bytes, ...], actual: ActualSources) -> bytes:
    if len(ids) != actual.nbr_data_ctrl_entries:
        raise ValueError("data control entries differ from ST11")
    size = actual.data_ctrl_length
    return b"".join(i[:size].ljust(size, b"\0") for i in ids)


@attrs.frozen
class SetConstants:
    """SET_APPLIED_RCD of ST15: whether the meter already applied this set, and the
    ratios of the instrument transformers (RATIO_F1 flow/current, RATIO_P1 pressure/
    potential)."""

    applied: bool
    ratio_f1: Decimal
    ratio_p1: Decimal


@attrs.frozen
class ElectricConstants:
    """ELECTRIC_CONSTANTS_RCD of ST15 (CONSTANTS_SELECTOR 2): a value is read as
    ``value * multiplier + offset`` where ST16 says the constants are still to be
    applied."""

    multiplier: Decimal = Decimal(1)
    offset: Decimal = Decimal(0)
    set1: SetConstants | None = None
    set2: SetConstants | None = None

    def apply(self, value: Decimal) -> Decimal:
        """``value * multiplier + offset``, with no more decimals than ``value`` has where
        the result needs none (1234.5000 x 40.0000 is 49380.0000)."""
        result = value * self.multiplier + self.offset
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and result.is_finite():
            try:
                shorter = result.quantize(Decimal(1).scaleb(exponent))
            except InvalidOperation:
                return result
            if shorter == result:
                return shorter
        return result


def decode_constants(
    data: bytes, config: GeneralConfig, actual: ActualSources
) -> tuple[ElectricConstants, ...]:
    """ST15 CONSTANTS_TBL: NBR_CONSTANTS_ENTRIES electric records (index = source index)
    in NI_FORMAT1; the gas records (selectors 0 and 1) are not decoded (FrameError)."""
    if actual.constants_selector != ConstantsSelector.ELECTRIC:
        raise FrameError(
            f"ST15 constants selector {actual.constants_selector} (gas) is not decoded",
            offset=0,
            field="CONSTANTS_SELECTOR",
        )
    reader = _Reader(data, ST15_CONSTANTS, config, UTC)
    ni = config.ni_format1

    def set_rcd(present: bool) -> SetConstants | None:
        if not present:
            return None
        flags = reader.take(1)[0]
        return SetConstants(bool(flags & 1), reader.ni(ni), reader.ni(ni))

    out = []
    for _ in range(actual.nbr_constants_entries):
        multiplier = reader.ni(ni)
        offset = Decimal(0) if actual.no_offset else reader.ni(ni)
        out.append(
            ElectricConstants(
                multiplier, offset, set_rcd(actual.set1_present), set_rcd(actual.set2_present)
            )
        )
    _all_used(reader)
    return tuple(out)


def encode_constants(
    constants: tuple[ElectricConstants, ...], config: GeneralConfig, actual: ActualSources
) -> bytes:
    if len(constants) != actual.nbr_constants_entries:
        raise ValueError("constants entries differ from ST11")
    order, ni = config.byte_order, config.ni_format1
    out = bytearray()
    for entry in constants:
        out += encode_ni(entry.multiplier, ni, order)
        if not actual.no_offset:
            out += encode_ni(entry.offset, ni, order)
        for present, rcd in ((actual.set1_present, entry.set1),
                             (actual.set2_present, entry.set2)):  # fmt: skip
            if present:
                rcd = rcd or SetConstants(True, Decimal(1), Decimal(1))
                out.append(int(rcd.applied))
                out += encode_ni(rcd.ratio_f1, ni, order) + encode_ni(rcd.ratio_p1, ni, order)
    return bytes(out)


@attrs.frozen
class SourceLink:
    """SOURCE_LINK_BFLD of ST16: which decade-1 tables have an entry for this source (at
    the same index), whether it counts in engineering units (else pulses) and whether
    its ST15 constants are still to be applied by the reader."""

    uom_entry: bool = False
    demand_ctrl: bool = False
    data_ctrl: bool = False
    constants: bool = False
    engineering_units: bool = True
    constant_to_be_applied: bool = False

    @classmethod
    def from_int(cls, raw: int) -> SourceLink:
        return cls(*(bool(raw >> bit & 1) for bit in range(6)))

    def to_int(self) -> int:
        flags = (
            self.uom_entry,
            self.demand_ctrl,
            self.data_ctrl,
            self.constants,
            self.engineering_units,
            self.constant_to_be_applied,
        )
        return sum(int(flag) << bit for bit, flag in enumerate(flags))


def decode_source_links(data: bytes, actual: ActualSources) -> tuple[SourceLink, ...]:
    """ST16 SOURCES_TBL: NBR_SOURCES one-byte links."""
    if len(data) != actual.nbr_sources:
        raise FrameError(
            f"ST16 is {len(data)} bytes, ST11 gives {actual.nbr_sources} sources",
            offset=min(len(data), actual.nbr_sources),
            field="ST16",
        )
    return tuple(SourceLink.from_int(b) for b in data)


def encode_source_links(links: tuple[SourceLink, ...]) -> bytes:
    return bytes(link.to_int() for link in links)


_ID_CODE_NAMES: Final = {
    0: "active power", 1: "reactive power", 2: "apparent power", 8: "RMS voltage",
    12: "RMS current", 24: "power factor", 33: "frequency",
}  # fmt: skip
_TIME_BASE_NAMES: Final = ("bulk", "instantaneous", "period", "sub-block demand",
                           "block demand", "net bulk", "thermal demand", "event count")  # fmt: skip
_SEGMENT_NAMES: Final = ("", "A-B", "B-C", "C-A", "N-G", "A-N", "B-N", "C-N")


def describe_uom(uom: UomEntry) -> str:
    """A short text for a unit-of-measure entry, e.g. ``active power, bulk, Q1+Q4, x10^3``."""
    parts = [
        f"manufacturer ID code {uom.id_code}"
        if uom.nfs
        else _ID_CODE_NAMES.get(uom.id_code, f"ID code {uom.id_code}"),
        _TIME_BASE_NAMES[uom.time_base & 7],
    ]
    quadrants = [f"Q{n}" for n, q in enumerate((uom.q1, uom.q2, uom.q3, uom.q4), 1) if q]
    if quadrants:
        parts.append("+".join(quadrants) + (" net" if uom.net_flow else ""))
    if uom.segmentation:
        parts.append(f"phase {_SEGMENT_NAMES[uom.segmentation & 7]}")
    if uom.harmonic:
        parts.append("harmonic")
    if uom.exponent:
        parts.append(f"x10^{uom.exponent}")
    return ", ".join(parts)


def _plain(number: Decimal) -> str:
    """A number without trailing zeros or exponent: 40.0000 is 40."""
    return format(number.normalize(), "f") if number.is_finite() else str(number)


@attrs.frozen
class SourceSet:
    """The data sources of decade 1 together: ST12 units, ST13 demand intervals, ST14
    identifiers, ST15 constants and ST16 links, for each source index (the number ST22
    and ST62 use).

    C12.19 lays ST12-15 out by source index. ST12's entry at the source's index is its
    unit whatever ST16's UOM_ENTRY_FLAG says (a published Hexing capture has the flag off
    on demand sources whose ST12 entries exist). ST13-15 entries belong to a source whose
    ST16 flag is set: the entry at its index; where the table is shorter than the source
    list, the k-th entry for the k-th flagged source (the Hexing layout), and a single
    entry serves every flagged source. Without ST16 no constants are applied."""

    actual: ActualSources | None = None
    uoms: tuple[UomEntry, ...] = ()
    demand_control: DemandControl | None = None
    data_control: tuple[bytes, ...] = ()
    constants: tuple[ElectricConstants, ...] = ()
    links: tuple[SourceLink, ...] = ()

    def link(self, index: int) -> SourceLink | None:
        return self.links[index] if index < len(self.links) else None

    def _entry(self, entries: tuple[_T, ...], flag: str, index: int) -> _T | None:
        link = self.link(index)
        if link is None or not getattr(link, flag) or not entries:
            return None
        if index < len(entries):
            return entries[index]
        if len(entries) == 1:
            return entries[0]
        position = sum(1 for other in self.links[:index] if getattr(other, flag))
        return entries[position] if position < len(entries) else None

    def uom(self, index: int) -> UomEntry | None:
        return self.uoms[index] if index < len(self.uoms) else None

    def constants_to_apply(self, index: int) -> ElectricConstants | None:
        """The ST15 record the reader must apply to this source's values, if any."""
        link = self.link(index)
        if link is None or not link.constant_to_be_applied:
            return None
        return self._entry(self.constants, "constants", index)

    def value(self, index: int, raw: Decimal) -> Decimal:
        """A value of this source with its pending constants applied."""
        constants = self.constants_to_apply(index)
        return constants.apply(raw) if constants is not None else raw

    def in_engineering_units(self, index: int) -> bool:
        """False for a source counted in pulses whose constants do not convert it."""
        link = self.link(index)
        return link is None or link.engineering_units or bool(self.constants_to_apply(index))

    def demand_minutes(self, index: int) -> int | None:
        control = self.demand_control
        if control is None:
            return None
        interval = self._entry(control.intervals, "demand_ctrl", index)
        return interval.minutes if interval is not None else None

    def data_control_id(self, index: int) -> bytes | None:
        return self._entry(self.data_control, "data_ctrl", index)

    def name(self, index: int) -> str:
        """``source N: <unit of measure>`` with the ST14 identifier, the demand interval
        and the constants applied, where the meter gives them."""
        uom = self.uom(index)
        parts = [describe_uom(uom) if uom is not None else "no unit of measure"]
        link = self.link(index)
        ident = self.data_control_id(index)
        if ident:
            text = ident.rstrip(b"\0 ")
            printable = text and all(0x20 <= b < 0x7F for b in text)
            parts.append(f"id {text.decode('ascii') if printable else ident.hex()}")
        minutes = self.demand_minutes(index)
        if minutes:
            parts.append(f"{minutes} min demand")
        if link is not None and not link.engineering_units:
            parts.append("pulses")
        constants = self.constants_to_apply(index)
        if constants is not None:
            parts.append(
                f"constants x{_plain(constants.multiplier)}+{_plain(constants.offset)} applied"
            )
        return f"source {index}: " + "; ".join(parts)


# ID_CODE -> (unit of a dial reading, unit of a rate, OBIS value group C) for the codes fep
# maps; unit codes are DLMS's (fep.model.UNITS). Power codes 0 (W), 1 (var), 2 (VA) have
# their C chosen by quadrant below; the rest have one C.
_POWER_UNITS: Final = {0: (30, 27), 1: (32, 29), 2: (31, 28)}
_OTHER_QUANTITIES: Final = {
    8: (35, 12),  # RMS volts
    12: (33, 11),  # RMS current
    24: (255, 13),  # power factor (from apparent power)
    33: (44, 14),  # frequency
}
# SEGMENTATION 5/6/7 (phase A/B/C to neutral) moves C by 20/40/60 (OBIS L1/L2/L3).
_PHASE_SHIFT: Final = {0: 0, 5: 20, 6: 40, 7: 60}


def _power_c(uom: UomEntry) -> int | None:
    quads = (uom.q1, uom.q2, uom.q3, uom.q4)
    if uom.id_code == 0:
        table = {
            (True, False, False, True): 1,  # delivered (import) +A
            (False, True, True, False): 2,  # received (export) -A
        }
        if all(quads):
            return 16 if uom.net_flow else 15
        return table.get(quads)
    if uom.id_code == 1:
        single = {(True, False, False, False): 5, (False, True, False, False): 6,
                  (False, False, True, False): 7, (False, False, False, True): 8}  # fmt: skip
        pairs = {(True, True, False, False): 3, (False, False, True, True): 4}
        return pairs.get(quads, single.get(quads))
    if uom.id_code == 2:
        return {(True, False, False, True): 9, (False, True, True, False): 10}.get(quads)
    return None


def uom_quantity(uom: UomEntry, *, rate: bool) -> tuple[int | None, int | None]:
    """(OBIS value group C, DLMS unit code) of a source, each None where fep has no
    mapping; ``rate`` asks for the power unit (demands) instead of the energy unit."""
    if uom.nfs or uom.harmonic:
        return None, None
    shift = _PHASE_SHIFT.get(uom.segmentation)
    if uom.id_code in _POWER_UNITS:
        energy, power = _POWER_UNITS[uom.id_code]
        unit = power if rate or uom.time_base not in (TimeBase.BULK, TimeBase.NET_BULK) else energy
        c = _power_c(uom)
        return (None if c is None or shift is None else c + shift), unit
    if uom.id_code in _OTHER_QUANTITIES:
        unit, c = _OTHER_QUANTITIES[uom.id_code]
        return (None if shift is None else c + shift), unit
    return None, None


# Manufacturer-specific OBIS C (128..199) for values fep has no standard code for: the
# item's index goes in D, the tier in E, a demand's occurrence in F.
MFG_C_SUMMATION: Final = 128
MFG_C_DEMAND: Final = 129
MFG_C_COINCIDENT: Final = 130
MFG_C_CUM_DEMAND: Final = 131
MFG_C_CONT_CUM_DEMAND: Final = 132


def register_readings(
    meter: str,
    current: CurrentRegisters,
    registers: ActualRegisters,
    selection: DataSelection | None = None,
    uoms: tuple[UomEntry, ...] = (),
    *,
    sources: SourceSet | None = None,
    meter_time: datetime | None = None,
    received_time: datetime | None = None,
) -> list[Reading]:
    """ST23 values as Readings. A value whose source (ST22) has a unit of measure (ST12)
    fep knows gets its OBIS code (C from quantity, quadrants and phase; D 8 for dial
    readings, 6 maximum and 3 minimum demand, 2 cumulative demand; E the tier) and its
    unit with the MULTIPLIER as scaler; any other value gets a manufacturer-specific code
    (C 128..132, D its index, E the tier) and no unit. ``native_id`` names the ST23 item.
    Demand times, when the meter keeps them, are the readings' meter_time.

    ``sources`` (ST11-16) replaces ``uoms`` when given: ST16 says which sources have a
    unit, constants still to be applied (ST15) are applied to the values, a source
    counted in pulses gets no unit, and ``native_id`` also names the source."""
    from fep.model import UNITS  # local: model imports nothing from here, keep it one-way

    received = received_time if received_time is not None else utcnow()
    out: list[Reading] = []
    used: set[ObisCode] = set()
    known = sources if sources is not None else SourceSet(uoms=uoms)
    named = bool(known.links)

    def source_index(kind: str, index: int) -> int | None:
        if selection is None:
            return None
        picks = {"summation": selection.summations, "demand": selection.demands,
                 "coincident": selection.coincidents}[kind]  # fmt: skip
        if index >= len(picks) or picks[index] == NO_SOURCE:
            return None
        return picks[index]

    def quantity(source: int | None, rate: bool) -> tuple[UomEntry | None, int | None, int | None]:
        uom = known.uom(source) if source is not None else None
        if uom is None or source is None:
            return None, None, None
        c, unit = uom_quantity(uom, rate=rate)
        if not known.in_engineering_units(source):
            unit = None
        return uom, c, unit

    def add(
        value: Decimal,
        standard: tuple[int | None, int] | None,
        mfg: ObisCode,
        source: int | None,
        uom: UomEntry | None,
        unit_code: int | None,
        native: str,
        when: datetime | None,
    ) -> None:
        obis = mfg
        if standard is not None and standard[0] is not None:
            candidate = ObisCode(1, 0, standard[0], standard[1], mfg.e)
            if candidate not in used:
                obis = candidate
        used.add(obis)
        unit = UNITS.get(unit_code) if unit_code is not None else None
        if source is not None:
            value = known.value(source, value)
            if named:
                native = f"{native} ({known.name(source)})"
        out.append(
            Reading(
                meter=meter,
                obis=obis,
                value=value,
                unit=unit,
                scaler=uom.exponent if uom is not None and unit is not None else 0,
                meter_time=when if when is not None else meter_time,
                received_time=received,
                source=SOURCE,
                native_id=native,
            )
        )

    for tier, block in enumerate((current.total, *current.tiers)):
        where = "total" if tier == 0 else f"tier {tier}"
        for i, value in enumerate(block.summations):
            src = source_index("summation", i)
            uom, c, unit = quantity(src, False)
            add(value, (c, 8), ObisCode(1, 0, MFG_C_SUMMATION, i, tier), src, uom, unit,
                f"ST23 {where} summation {i}", None)  # fmt: skip
        for i, demand in enumerate(block.demands):
            src = source_index("demand", i)
            uom, c, unit = quantity(src, True)
            is_max = (
                selection is None or i >= len(selection.demand_is_max) or selection.demand_is_max[i]
            )
            for k, value in enumerate(demand.demands):
                when = demand.event_times[k] if k < len(demand.event_times) else None
                standard = (c, 6 if is_max else 3) if k == 0 else None
                mfg = ObisCode(1, 0, MFG_C_DEMAND, i, tier, 255 if k == 0 else k)
                add(value, standard, mfg, src, uom, unit,
                    f"ST23 {where} demand {i} occurrence {k}", when)  # fmt: skip
            if demand.cum_demand is not None:
                add(demand.cum_demand, (c, 2), ObisCode(1, 0, MFG_C_CUM_DEMAND, i, tier), src,
                    uom, unit, f"ST23 {where} demand {i} cumulative", None)  # fmt: skip
            if demand.cont_cum_demand is not None:
                add(demand.cont_cum_demand, None,
                    ObisCode(1, 0, MFG_C_CONT_CUM_DEMAND, i, tier), src, uom, unit,
                    f"ST23 {where} demand {i} continuous cumulative", None)  # fmt: skip
        for i, values in enumerate(block.coincidents):
            src = source_index("coincident", i)
            uom, _, unit = quantity(src, True)
            for k, value in enumerate(values):
                add(value, None, ObisCode(1, 0, MFG_C_COINCIDENT, i, tier, 255 if k == 0 else k),
                    src, uom, unit, f"ST23 {where} coincident {i} occurrence {k}",
                    None)  # fmt: skip
    return out


# ---------------------------------------------------------------------------
# ST61-64 load profile (data set 1)
# ---------------------------------------------------------------------------

ST61_ACTUAL_LOAD_PROFILE: Final = 61
ST62_LP_SELECTION: Final = 62
ST63_LP_STATUS: Final = 63
ST64_LP_DATA_SET1: Final = 64

# INT_FMT_CDE of ST62: the type of each interval value.
_INT_FORMATS: Final = {1: (1, False), 2: (2, False), 4: (4, False), 8: (1, True),
                       16: (2, True), 32: (4, True)}  # fmt: skip
INT_FMT_NI1: Final = 64
INT_FMT_NI2: Final = 128


class LpChannelStatus(enum.IntEnum):
    """A channel's nibble in EXTENDED_INT_STATUS."""

    NONE = 0
    OVERFLOW = 1
    PARTIAL = 2
    LONG = 3
    SKIPPED = 4
    TEST_MODE = 5


# The common nibble of EXTENDED_INT_STATUS.
LP_COMMON_DST: Final = 0x1
LP_COMMON_POWER_FAIL: Final = 0x2
LP_COMMON_CLOCK_FORWARD: Final = 0x4
LP_COMMON_CLOCK_BACKWARD: Final = 0x8


@attrs.frozen
class LpSetDims:
    """One data set's dimensions in ST61."""

    nbr_blocks: int
    nbr_block_intervals: int
    nbr_channels: int
    max_int_time: int  # minutes


@attrs.frozen
class ActualLoadProfile:
    """ST61 ACT_LP_TBL. ``sets`` has one entry per data set 1..4, None where ST0 does not
    list its data table (64..67)."""

    memory_len: int = 0
    flags: int = 0
    formats: int = 0
    sets: tuple[LpSetDims | None, ...] = (None, None, None, None)

    @property
    def block_end_read(self) -> bool:
        return bool(self.flags & 0x10)

    @property
    def block_end_pulse(self) -> bool:
        return bool(self.flags & 0x20)

    def scalar_divisor(self, set_index: int) -> bool:
        return bool(self.flags >> (6 + set_index) & 1)

    @property
    def extended_status(self) -> bool:
        return bool(self.flags & 0x400)

    @property
    def simple_status(self) -> bool:
        return bool(self.flags & 0x800)

    @property
    def closure_status(self) -> bool:
        return bool(self.flags & 0x1000)

    @classmethod
    def decode(cls, data: bytes, config: GeneralConfig) -> ActualLoadProfile:
        order = config.byte_order
        _need(data, 7, 61)
        sets: list[LpSetDims | None] = []
        at = 7
        for table in range(64, 68):
            if table not in config.std_tables_used:
                sets.append(None)
                continue
            _need(data, at + 6, 61, f"data set {table - 63}")
            sets.append(
                LpSetDims(
                    int.from_bytes(data[at : at + 2], order),
                    int.from_bytes(data[at + 2 : at + 4], order),
                    data[at + 4],
                    data[at + 5],
                )
            )
            at += 6
        return cls(
            int.from_bytes(data[0:4], order),
            int.from_bytes(data[4:6], order),
            data[6],
            tuple(sets),
        )

    def encode(self, config: GeneralConfig) -> bytes:
        order = config.byte_order
        out = self.memory_len.to_bytes(4, order) + self.flags.to_bytes(2, order)
        out += bytes([self.formats])
        for dims in self.sets:
            if dims is not None:
                out += dims.nbr_blocks.to_bytes(2, order) + dims.nbr_block_intervals.to_bytes(
                    2, order
                )
                out += bytes([dims.nbr_channels, dims.max_int_time])
        return out


@attrs.frozen
class LpChannel:
    """LP_SEL_RCD: where a channel's intervals come from (a source index, as in ST22)."""

    source: int
    end_reading_source: int = NO_SOURCE
    flags: int = 0


@attrs.frozen
class LpSelection:
    """One data set's part of ST62 LP_SELECT_TBL."""

    channels: tuple[LpChannel, ...]
    int_format: int = 2
    scalars: tuple[int, ...] = ()
    divisors: tuple[int, ...] = ()


def decode_lp_selection(
    data: bytes, config: GeneralConfig, actual: ActualLoadProfile
) -> tuple[LpSelection | None, ...]:
    """ST62, one LpSelection per data set ST61 has (None for the others)."""
    order = config.byte_order
    reader = _Reader(data, 62, config, UTC)
    out: list[LpSelection | None] = []
    for index, dims in enumerate(actual.sets):
        if dims is None:
            out.append(None)
            continue
        channels = []
        for _ in range(dims.nbr_channels):
            flags, source, end = reader.take(3)
            channels.append(LpChannel(source, end, flags))
        fmt = reader.take(1)[0]
        scalars: tuple[int, ...] = ()
        divisors: tuple[int, ...] = ()
        if actual.scalar_divisor(index):
            n = dims.nbr_channels
            scalars = tuple(int.from_bytes(reader.take(2), order) for _ in range(n))
            divisors = tuple(int.from_bytes(reader.take(2), order) for _ in range(n))
        out.append(LpSelection(tuple(channels), fmt, scalars, divisors))
    return tuple(out)


def encode_lp_selection(selections: tuple[LpSelection | None, ...], config: GeneralConfig) -> bytes:
    order = config.byte_order
    out = bytearray()
    for selection in selections:
        if selection is None:
            continue
        for ch in selection.channels:
            out += bytes([ch.flags, ch.source, ch.end_reading_source])
        out.append(selection.int_format)
        for number in (*selection.scalars, *selection.divisors):
            out += number.to_bytes(2, order)
    return bytes(out)


@attrs.frozen
class ListStatus:
    """The list header of ST63 (per data set), ST74 and ST76: ORDER (False ascending),
    LIST_TYPE (False FIFO, True circular), where the newest entry is and how many are
    valid; ``valid_in_newest`` is ST63's NBR_VALID_INT (intervals in the newest block)."""

    descending: bool = False
    overflow: bool = False
    circular: bool = True
    inhibit_overflow: bool = False
    nbr_valid: int = 0
    last_element: int = 0
    last_seq: int = 0
    nbr_unread: int = 0
    valid_in_newest: int = 0
    flags_rest: int = 0  # ST63: INTERVAL_ORDER, ACTIVE_MODE, TEST_MODE bits as sent

    def order(self, size: int) -> list[int]:
        """Indices of the valid elements of a list of ``size``, oldest first."""
        if size <= 0 or self.nbr_valid <= 0:
            return []
        count = min(self.nbr_valid, size)
        last = self.last_element % size
        if self.descending:
            # Element N is newer than N+1: the oldest is furthest after the newest.
            return [(last + count - 1 - k) % size for k in range(count)]
        return [(last - count + 1 + k) % size for k in range(count)]

    @classmethod
    def decode(cls, raw: bytes, order: Literal["little", "big"], lp: bool = False) -> ListStatus:
        flags = raw[0]
        return cls(
            bool(flags & 1),
            bool(flags & 2),
            bool(flags & 4),
            bool(flags & 8),
            int.from_bytes(raw[1:3], order),
            int.from_bytes(raw[3:5], order),
            int.from_bytes(raw[5:9], order),
            int.from_bytes(raw[9:11], order),
            int.from_bytes(raw[11:13], order) if lp else 0,
            flags & 0xF0,
        )

    def encode(self, order: Literal["little", "big"], lp: bool = False) -> bytes:
        flags = (
            int(self.descending)
            | int(self.overflow) << 1
            | int(self.circular) << 2
            | int(self.inhibit_overflow) << 3
            | self.flags_rest
        )
        out = bytes([flags]) + self.nbr_valid.to_bytes(2, order)
        out += self.last_element.to_bytes(2, order) + self.last_seq.to_bytes(4, order)
        out += self.nbr_unread.to_bytes(2, order)
        return out + (self.valid_in_newest.to_bytes(2, order) if lp else b"")


def decode_lp_status(
    data: bytes, config: GeneralConfig, actual: ActualLoadProfile
) -> tuple[ListStatus | None, ...]:
    """ST63 LP_STATUS_TBL: 13 bytes per data set ST61 has."""
    out: list[ListStatus | None] = []
    at = 0
    for dims in actual.sets:
        if dims is None:
            out.append(None)
            continue
        _need(data, at + 13, 63)
        out.append(ListStatus.decode(data[at : at + 13], config.byte_order, lp=True))
        at += 13
    return tuple(out)


@attrs.frozen
class LpInterval:
    """One interval of a block: values per channel (raw, before scalar/divisor), the
    common status nibble and each channel's status nibble."""

    values: tuple[Decimal, ...]
    common: int = 0
    statuses: tuple[int, ...] = ()


@attrs.frozen
class LpBlock:
    """LP_BLK1_DAT_RCD: the block's end time (the end of its last interval), end readings,
    the simple status SET (valid intervals) and the intervals."""

    end_time: datetime | None
    intervals: tuple[LpInterval, ...]
    end_readings: tuple[Decimal, ...] = ()
    end_pulses: tuple[int, ...] = ()
    closure: tuple[int, ...] = ()
    valid: frozenset[int] | None = None


def _lp_value(reader: _Reader, fmt: int) -> Decimal:
    if fmt == INT_FMT_NI1:
        return reader.ni(reader.config.ni_format1)
    if fmt == INT_FMT_NI2:
        return reader.ni(reader.config.ni_format2)
    if fmt not in _INT_FORMATS:
        raise FrameError(f"ST62 interval format {fmt} is not known", offset=0, field="ST62")
    size, signed = _INT_FORMATS[fmt]
    return Decimal(int.from_bytes(reader.take(size), reader.config.byte_order, signed=signed))


def _encode_lp_value(value: Decimal, fmt: int, config: GeneralConfig) -> bytes:
    if fmt in (INT_FMT_NI1, INT_FMT_NI2):
        ni = config.ni_format1 if fmt == INT_FMT_NI1 else config.ni_format2
        return encode_ni(value, ni, config.byte_order)
    size, signed = _INT_FORMATS[fmt]
    return int(value).to_bytes(size, config.byte_order, signed=signed)


def decode_lp_data(
    data: bytes,
    config: GeneralConfig,
    actual: ActualLoadProfile,
    selection: LpSelection,
    tz: tzinfo = UTC,
    set_index: int = 0,
    table: int = ST64_LP_DATA_SET1,
) -> tuple[LpBlock, ...]:
    """ST64 (data set 1; 65-67 with ``set_index``): every block as stored.

    Raises FrameError (and nothing else) when the bytes do not fit the layout ST0, ST61 and
    ST62 describe. The table's length bounds the work: its size must be the one
    ``lp_data_length`` gives before a block is decoded, and a layout whose blocks or
    intervals take no bytes (0 channels and no status or time fields) is refused, so the
    records built are never more than the bytes given."""
    dims = actual.sets[set_index]
    if dims is None:
        raise FrameError(f"ST61 has no data set {set_index + 1}", offset=0, field="ST61")
    reader = _Reader(data, table, config, tz)
    n_ch, n_int = dims.nbr_channels, dims.nbr_block_intervals
    _check_lp_layout(data, config, actual, selection, set_index, table)
    blocks = []
    for _ in range(dims.nbr_blocks):
        end = reader.stime()
        reads: list[Decimal] = []
        pulses: list[int] = []
        for _ in range(n_ch):
            if actual.block_end_read:
                reads.append(reader.ni(config.ni_format1))
            if actual.block_end_pulse:
                pulses.append(int.from_bytes(reader.take(4), config.byte_order))
        closure: tuple[int, ...] = ()
        if actual.closure_status:
            closure = tuple(int.from_bytes(reader.take(2), config.byte_order) for _ in range(n_ch))
        valid = _bits(reader.take((n_int + 7) // 8)) if actual.simple_status else None
        intervals = []
        for _ in range(n_int):
            common = 0
            statuses: tuple[int, ...] = ()
            if actual.extended_status:
                raw = reader.take(n_ch // 2 + 1)
                # Nibbles high first: the common flags, then channel 1, 2, ...
                nibbles = [b >> s & 0x0F for b in raw for s in (4, 0)]
                common, statuses = nibbles[0], tuple(nibbles[1 : 1 + n_ch])
            values = tuple(_lp_value(reader, selection.int_format) for _ in range(n_ch))
            intervals.append(LpInterval(values, common, statuses))
        blocks.append(LpBlock(end, tuple(intervals), tuple(reads), tuple(pulses), closure, valid))
    if reader.at != len(data):
        raise FrameError(
            f"ST{table} has {len(data) - reader.at} bytes more than ST61 describes",
            offset=reader.at,
            field=f"ST{table}",
        )
    return tuple(blocks)


def _check_lp_layout(
    data: bytes,
    config: GeneralConfig,
    actual: ActualLoadProfile,
    selection: LpSelection,
    set_index: int,
    table: int,
) -> None:
    dims = actual.sets[set_index]
    assert dims is not None
    fmt = selection.int_format
    if dims.nbr_channels and fmt not in (*_INT_FORMATS, INT_FMT_NI1, INT_FMT_NI2):
        raise FrameError(f"ST62 interval format {fmt} is not known", offset=0, field="ST62")
    for ni, used in ((config.ni_format1, actual.block_end_read or fmt == INT_FMT_NI1),
                     (config.ni_format2, fmt == INT_FMT_NI2)):  # fmt: skip
        if used and dims.nbr_channels and ni not in NI_LENGTH:
            raise FrameError(f"NI format {ni} is not known", offset=0, field="NI_FORMAT")
    length = lp_data_length(config, actual, selection, set_index)
    blocks, intervals = dims.nbr_blocks, dims.nbr_block_intervals
    if blocks and not length:
        raise FrameError(
            f"ST61 data set {set_index + 1} declares {blocks} blocks of no bytes",
            offset=0,
            field="ST61",
        )
    if blocks and intervals and not dims.nbr_channels and not actual.extended_status:
        raise FrameError(
            f"ST61 data set {set_index + 1} declares {intervals} intervals of no bytes "
            "(no channel, no extended status)",
            offset=0,
            field="ST61",
        )
    if len(data) != length:
        raise FrameError(
            f"ST{table} has {len(data)} bytes, ST61/ST62 describe {length}",
            offset=min(len(data), length),
            field=f"ST{table}",
        )


def encode_lp_data(
    blocks: tuple[LpBlock, ...],
    config: GeneralConfig,
    actual: ActualLoadProfile,
    selection: LpSelection,
    tz: tzinfo = UTC,
    set_index: int = 0,
) -> bytes:
    dims = actual.sets[set_index]
    assert dims is not None
    out = bytearray()
    for block in blocks:
        out += _encode_stime(block.end_time, config, tz)
        for ch in range(dims.nbr_channels):
            if actual.block_end_read:
                value = block.end_readings[ch] if ch < len(block.end_readings) else Decimal(0)
                out += encode_ni(value, config.ni_format1, config.byte_order)
            if actual.block_end_pulse:
                pulse = block.end_pulses[ch] if ch < len(block.end_pulses) else 0
                out += pulse.to_bytes(4, config.byte_order)
        if actual.closure_status:
            for ch in range(dims.nbr_channels):
                closure = block.closure[ch] if ch < len(block.closure) else 0
                out += closure.to_bytes(2, config.byte_order)
        if actual.simple_status:
            valid = block.valid if block.valid is not None else frozenset()
            out += _bitset(valid, (dims.nbr_block_intervals + 7) // 8)
        for interval in block.intervals:
            if actual.extended_status:
                nibbles = [interval.common, *interval.statuses]
                nibbles += [0] * (2 * (dims.nbr_channels // 2 + 1) - len(nibbles))
                out += bytes(nibbles[i] << 4 | nibbles[i + 1] for i in range(0, len(nibbles), 2))
            for value in interval.values:
                out += _encode_lp_value(value, selection.int_format, config)
    return bytes(out)


def _lp_quality(common: int, status: int, valid: bool) -> Quality:
    quality = Quality.OK
    if not valid:
        quality |= Quality.MISSING
    if common & LP_COMMON_DST:
        quality |= Quality.DST
    if common & LP_COMMON_POWER_FAIL:
        quality |= Quality.POWER_DOWN
    if common & (LP_COMMON_CLOCK_FORWARD | LP_COMMON_CLOCK_BACKWARD):
        quality |= Quality.CLOCK_ADJUSTED
    by_status: dict[int, Quality] = {
        LpChannelStatus.OVERFLOW: Quality.OVERFLOW,
        LpChannelStatus.PARTIAL: Quality.CLOCK_ADJUSTED,
        LpChannelStatus.LONG: Quality.CLOCK_ADJUSTED,
        LpChannelStatus.SKIPPED: Quality.MISSING,
        LpChannelStatus.TEST_MODE: Quality.DATA_NOT_VALID,
    }
    return quality | by_status.get(status, Quality.OK)


MFG_C_PROFILE: Final = 133


def profile_blocks(
    meter: str,
    actual: ActualLoadProfile,
    selection: LpSelection,
    status: ListStatus,
    blocks: tuple[LpBlock, ...],
    uoms: tuple[UomEntry, ...] = (),
    *,
    sources: SourceSet | None = None,
    set_index: int = 0,
    received_time: datetime | None = None,
) -> list[IntervalBlock]:
    """The valid intervals of a data set, oldest first, one IntervalBlock per channel and
    run of consecutive blocks. Blocks are taken in ST63's list order; every block but the
    newest is full, the newest has NBR_VALID_INT intervals; a block's end time is the end of
    its last valid interval. Values get the channel's scalar/divisor (ST62) and, where ST12
    knows the source, an OBIS code (D 29 energy per interval, D 5 average demand, D 7
    other quantities), unit and scaler; others 1-0:133.<channel>.<set>. ``sources``
    (ST11-16) replaces ``uoms`` when given: constants still to be applied (ST15) are
    applied to the intervals and a source counted in pulses gets no unit."""
    from fep.model import UNITS

    known = sources if sources is not None else SourceSet(uoms=uoms)

    dims = actual.sets[set_index]
    if dims is None or dims.max_int_time <= 0:
        return []
    received = received_time if received_time is not None else utcnow()
    period = timedelta(minutes=dims.max_int_time)
    # Runs of consecutive blocks: (start, per channel [(value, quality), ...]).
    runs: list[tuple[datetime, list[list[tuple[Decimal, Quality]]]]] = []
    order = status.order(len(blocks))
    for position, index in enumerate(order):
        block = blocks[index]
        newest = position == len(order) - 1
        count = min(status.valid_in_newest if newest else dims.nbr_block_intervals,
                    len(block.intervals))  # fmt: skip
        if block.end_time is None or count <= 0:
            continue
        start = block.end_time - count * period
        if runs and runs[-1][0] + len(runs[-1][1][0]) * period == start:
            per_channel = runs[-1][1]
        else:
            per_channel = [[] for _ in range(dims.nbr_channels)]
            runs.append((start, per_channel))
        for i in range(count):
            interval = block.intervals[i]
            valid = block.valid is None or i in block.valid
            for ch in range(dims.nbr_channels):
                raw = interval.values[ch]
                if selection.scalars and selection.divisors and selection.divisors[ch]:
                    raw = raw * selection.scalars[ch] / selection.divisors[ch]
                nibble = interval.statuses[ch] if ch < len(interval.statuses) else 0
                per_channel[ch].append((raw, _lp_quality(interval.common, nibble, valid)))
    out: list[IntervalBlock] = []
    for ch, channel in enumerate(selection.channels[: dims.nbr_channels]):
        uom = known.uom(channel.source)
        c, unit_code = uom_quantity(uom, rate=False) if uom else (None, None)
        d = 29
        if uom is not None and uom.time_base in (TimeBase.BLOCK_DEMAND, TimeBase.SUB_BLOCK_DEMAND):
            c, unit_code = uom_quantity(uom, rate=True)
            d = 5
        elif uom is not None and uom.time_base not in (TimeBase.BULK, TimeBase.NET_BULK):
            d = 7
        obis = (
            ObisCode(1, 0, c, d, 0)
            if c is not None
            else ObisCode(1, 0, MFG_C_PROFILE, ch, set_index + 1)
        )
        if not known.in_engineering_units(channel.source):
            unit_code = None
        unit = UNITS.get(unit_code) if unit_code is not None else None
        for start, per_channel in runs:
            if not per_channel[ch]:
                continue
            out.append(
                IntervalBlock(
                    meter=meter,
                    obis=obis,
                    start=start,
                    period=period,
                    values=tuple(known.value(channel.source, v) for v, _ in per_channel[ch]),
                    statuses=tuple(q for _, q in per_channel[ch]),
                    unit=unit,
                    scaler=uom.exponent if uom is not None and unit is not None else 0,
                    received_time=received,
                    source=SOURCE,
                )
            )
    return out


# ---------------------------------------------------------------------------
# ST71 actual log, ST74 history log, ST76 event log
# ---------------------------------------------------------------------------

ST71_ACTUAL_LOG: Final = 71
ST74_HISTORY_LOG: Final = 74
ST76_EVENT_LOG: Final = 76


@attrs.frozen
class ActualLog:
    """ST71 ACT_LOG_TBL (the C12.19-1997 part: version 2 adds bytes fep ignores)."""

    event_number: bool = False
    history_date_time: bool = True
    history_seq_nbr: bool = False
    history_inhibit_overflow: bool = False
    event_inhibit_overflow: bool = False
    nbr_std_events: int = 0
    nbr_mfg_events: int = 0
    history_data_length: int = 0
    event_data_length: int = 0
    nbr_history_entries: int = 0
    nbr_event_entries: int = 0

    @classmethod
    def decode(cls, data: bytes, config: GeneralConfig) -> ActualLog:
        _need(data, 9, 71)
        flags, order = data[0], config.byte_order
        return cls(
            bool(flags & 1),
            bool(flags & 2),
            bool(flags & 4),
            bool(flags & 8),
            bool(flags & 16),
            data[1],
            data[2],
            data[3],
            data[4],
            int.from_bytes(data[5:7], order),
            int.from_bytes(data[7:9], order),
        )

    def encode(self, config: GeneralConfig) -> bytes:
        flags = (
            int(self.event_number)
            | int(self.history_date_time) << 1
            | int(self.history_seq_nbr) << 2
            | int(self.history_inhibit_overflow) << 3
            | int(self.event_inhibit_overflow) << 4
        )
        order = config.byte_order
        return (
            bytes([flags, self.nbr_std_events, self.nbr_mfg_events])
            + bytes([self.history_data_length, self.event_data_length])
            + self.nbr_history_entries.to_bytes(2, order)
            + self.nbr_event_entries.to_bytes(2, order)
        )


@attrs.frozen
class LogEntry:
    """One entry of ST74 or ST76. ``code`` is the TABLE_IDB_BFLD's number (the event
    code), ``mfg`` its STD_VS_MFG flag; ``seq`` the history or event sequence number."""

    time: datetime | None
    code: int
    mfg: bool = False
    selector: int = 0
    user_id: int = 0
    event_number: int | None = None
    seq: int | None = None
    argument: bytes = b""


@attrs.frozen
class LogData:
    """ST74 HISTORY_LOG_DATA_TBL or ST76 EVENT_LOG_DATA_TBL: the list header and every
    entry as stored; ``valid_entries()`` gives the valid ones oldest first."""

    status: ListStatus
    entries: tuple[LogEntry, ...]

    def valid_entries(self) -> list[LogEntry]:
        return [self.entries[i] for i in self.status.order(len(self.entries))]


def decode_log(
    data: bytes, config: GeneralConfig, actual: ActualLog, table: int, tz: tzinfo = UTC
) -> LogData:
    """ST74 (history) or ST76 (event) entries laid out by ST71; times in ``tz`` unless the
    meter keeps them in UTC."""
    history = table == ST74_HISTORY_LOG
    order = config.byte_order
    reader = _Reader(data, table, config, tz)
    status = ListStatus.decode(reader.take(11), order)
    size = _TIME_LENGTH.get(config.time_format, 0)
    entries = []
    count = actual.nbr_history_entries if history else actual.nbr_event_entries
    for _ in range(count):
        when = None
        if not history or actual.history_date_time:
            raw = reader.take(size)
            if size and any(raw):
                when = decode_ltime(raw, config, tz, table).astimezone(UTC)
        number = int.from_bytes(reader.take(2), order) if actual.event_number else None
        seq = None
        if not history or actual.history_seq_nbr:
            seq = int.from_bytes(reader.take(2), order)
        user = int.from_bytes(reader.take(2), order)
        code = int.from_bytes(reader.take(2), order)
        argument = reader.take(actual.history_data_length if history else actual.event_data_length)
        entries.append(
            LogEntry(
                when, code & 0x7FF, bool(code & 0x800), code >> 12, user, number, seq, argument
            )
        )
    if reader.at != len(data):
        raise FrameError(
            f"ST{table} has {len(data) - reader.at} bytes more than ST71 describes",
            offset=reader.at,
            field=f"ST{table}",
        )
    return LogData(status, tuple(entries))


def encode_log(
    log: LogData, config: GeneralConfig, actual: ActualLog, table: int, tz: tzinfo = UTC
) -> bytes:
    history = table == ST74_HISTORY_LOG
    order = config.byte_order
    out = bytearray(log.status.encode(order))
    length = actual.history_data_length if history else actual.event_data_length
    for entry in log.entries:
        if not history or actual.history_date_time:
            size = _TIME_LENGTH.get(config.time_format, 0)
            out += (
                bytes(size)
                if entry.time is None
                else encode_ltime(entry.time.astimezone(tz), config)
            )
        if actual.event_number:
            out += (entry.event_number or 0).to_bytes(2, order)
        if not history or actual.history_seq_nbr:
            out += (entry.seq or 0).to_bytes(2, order)
        out += entry.user_id.to_bytes(2, order)
        code = (entry.code & 0x7FF) | int(entry.mfg) << 11 | (entry.selector & 0xF) << 12
        out += code.to_bytes(2, order)
        out += entry.argument[:length].ljust(length, b"\0")
    return bytes(out)


# Standard event codes (C12.19 annex, the list printed with ST72-76) fep gives a kind:
# code -> (kind, severity, text).
_STD_EVENTS: Final[dict[int, tuple[EventKind, Severity, str]]] = {
    1: (EventKind.POWER_OUTAGE, Severity.MAJOR, "primary power down"),
    2: (EventKind.POWER_RESTORED, Severity.INFO, "primary power up"),
    3: (EventKind.CLOCK_SET, Severity.INFO, "time changed (old time)"),
    4: (EventKind.CLOCK_SET, Severity.INFO, "time changed (new time)"),
    5: (EventKind.CLOCK_SET, Severity.INFO, "time changed (old time)"),
    6: (EventKind.CLOCK_SET, Severity.INFO, "time changed (new time)"),
    7: (EventKind.OTHER, Severity.INFO, "end device accessed for read"),
    8: (EventKind.OTHER, Severity.INFO, "end device accessed for write"),
    9: (EventKind.OTHER, Severity.INFO, "procedure invoked"),
    10: (EventKind.OTHER, Severity.INFO, "table written to"),
    11: (EventKind.OTHER, Severity.INFO, "end device programmed"),
    12: (EventKind.OTHER, Severity.INFO, "communication terminated normally"),
    13: (EventKind.COMMUNICATION_FAILURE, Severity.MINOR, "communication terminated abnormally"),
    16: (EventKind.OTHER, Severity.INFO, "history log cleared"),
    18: (EventKind.OTHER, Severity.INFO, "event log cleared"),
    20: (EventKind.OTHER, Severity.INFO, "demand reset occurred"),
    21: (EventKind.OTHER, Severity.INFO, "self read occurred"),
    22: (EventKind.OTHER, Severity.INFO, "daylight saving time on"),
    23: (EventKind.OTHER, Severity.INFO, "daylight saving time off"),
    36: (EventKind.OTHER, Severity.INFO, "meter reprogrammed"),
    37: (EventKind.METER_ERROR, Severity.MAJOR, "configuration error detected"),
    38: (EventKind.METER_ERROR, Severity.MAJOR, "self check error detected"),
    39: (EventKind.METER_ERROR, Severity.MAJOR, "RAM failure detected"),
    40: (EventKind.METER_ERROR, Severity.MAJOR, "ROM failure detected"),
    41: (EventKind.METER_ERROR, Severity.MAJOR, "nonvolatile memory failure detected"),
    42: (EventKind.METER_ERROR, Severity.MAJOR, "clock error detected"),
    43: (EventKind.METER_ERROR, Severity.MAJOR, "measurement error detected"),
    44: (EventKind.METER_ERROR, Severity.MINOR, "low battery detected"),
    45: (EventKind.PHASE_LOSS, Severity.MAJOR, "low loss potential detected"),
    46: (EventKind.OVER_CURRENT, Severity.MINOR, "demand overload detected"),
    47: (EventKind.OTHER, Severity.CRITICAL, "tamper attempt detected"),
    48: (EventKind.REVERSE_ENERGY, Severity.MAJOR, "reverse rotation detected"),
}


def log_events(
    meter: str, log: LogData, table: int, *, received_time: datetime | None = None
) -> list[MeterEvent]:
    """The valid entries of ST74/ST76 as MeterEvents, oldest first. The code is
    ``std-N`` or ``mfg-N``; the text names the table, the entry's sequence number, user
    and argument. Entries without a time (ST71 keeps none for the history log) are left
    out: a MeterEvent is filed under its time."""
    received = received_time if received_time is not None else utcnow()
    out = []
    for entry in log.valid_entries():
        if entry.time is None:
            continue
        kind, severity, text = (
            (EventKind.OTHER, Severity.INFO, f"manufacturer event {entry.code}")
            if entry.mfg
            else _STD_EVENTS.get(
                entry.code, (EventKind.OTHER, Severity.INFO, f"event {entry.code}")
            )
        )
        details = [f"ST{table}"]
        if entry.seq is not None:
            details.append(f"seq {entry.seq}")
        details.append(f"user {entry.user_id}")
        if entry.argument.strip(b"\0"):
            details.append(f"argument {entry.argument.hex()}")
        out.append(
            MeterEvent(
                meter=meter,
                code=f"{'mfg' if entry.mfg else 'std'}-{entry.code}",
                kind=kind,
                severity=severity,
                time=entry.time,
                text=f"{text} ({', '.join(details)})",
                received_time=received,
                source=SOURCE,
            )
        )
    return out


def lp_data_length(
    config: GeneralConfig, actual: ActualLoadProfile, selection: LpSelection, set_index: int = 0
) -> int:
    """How many bytes ST64 (or 65-67) holds, from ST0, ST61 and ST62: a client reads a
    table bigger than one answer in parts."""
    dims = actual.sets[set_index]
    if dims is None:
        return 0
    n_ch, n_int = dims.nbr_channels, dims.nbr_block_intervals
    fmt = selection.int_format
    if fmt == INT_FMT_NI1:
        value = NI_LENGTH.get(config.ni_format1, 0)
    elif fmt == INT_FMT_NI2:
        value = NI_LENGTH.get(config.ni_format2, 0)
    else:
        value = _INT_FORMATS.get(fmt, (0, False))[0]
    block = _STIME_LENGTH.get(config.time_format, 0)
    block += n_ch * ((NI_LENGTH.get(config.ni_format1, 0) if actual.block_end_read else 0)
                     + (4 if actual.block_end_pulse else 0)
                     + (2 if actual.closure_status else 0))  # fmt: skip
    block += (n_int + 7) // 8 if actual.simple_status else 0
    block += n_int * ((n_ch // 2 + 1 if actual.extended_status else 0) + n_ch * value)
    return dims.nbr_blocks * block


def log_data_length(config: GeneralConfig, actual: ActualLog, table: int) -> int:
    """How many bytes ST74 or ST76 holds, from ST0 and ST71."""
    time_size = _TIME_LENGTH.get(config.time_format, 0)
    if table == ST74_HISTORY_LOG:
        entry = (time_size if actual.history_date_time else 0) + (
            2 if actual.history_seq_nbr else 0
        )
        entry += 4 + actual.history_data_length
        count = actual.nbr_history_entries
    else:
        entry = time_size + 2 + 4 + actual.event_data_length
        count = actual.nbr_event_entries
    entry += 2 if actual.event_number else 0
    return 11 + count * entry
