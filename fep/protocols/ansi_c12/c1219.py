"""ANSI C12.19 standard tables decoded to records: ST0 general configuration (data order,
formats, table sets), ST1 manufacturer identification, ST3 end-device mode and status,
ST5 device identification, ST52 clock. Each record also encodes back (simulators).

Sans-IO: table bytes (from a C12.18 read answer) in, attrs records out. Decoders after ST0
take the ``GeneralConfig`` because ST0 fixes byte order, character set, time format and
the identifier form of every other table.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final, Literal

import attrs

from fep.errors import FrameError
from fep.model import ObisCode, Reading, utcnow

ST0_GENERAL_CONFIG: Final = 0
ST1_MANUFACTURER_ID: Final = 1
ST3_MODE_STATUS: Final = 3
ST5_DEVICE_ID: Final = 5
ST52_CLOCK: Final = 52

SOURCE: Final = "ansi-c12"
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
