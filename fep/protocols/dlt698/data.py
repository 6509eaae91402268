"""DL/T 698.45 typed data (A-XDR): the ``Data`` choice with every type of the standard's
table (null, array, structure, bool, bit-string, integers of 8..64 bits, octet and visible
strings, enum, floats, date_time, date, time, date_time_s, OI, OAD, ROAD, OMD, TI, TSA, MAC,
RN, Region, Scaler_Unit, RSD, CSD, MS, SID, SID_MAC, COMDCB, RCSD) and the descriptors the
services use on their own (OAD, OMD, ROAD, CSD, RCSD, RSD with selectors 0..10, MS, TI).

``decode_data(raw)`` -> (Data, end offset), ``encode_data(Data)`` -> bytes: the pair is
byte-for-byte inverse (the tag and every raw field are kept, so ``long`` stays ``long``).
Every decoder checks each length against the bytes left before it loops (a count of N
elements needs N bytes at least) and nesting is limited, so an input's work is bounded by
its length. Errors are FrameError with the offset and field. Sans-IO.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Any, Final

import attrs

from fep.errors import FrameError

MAX_DEPTH: Final = 16


class DataType(enum.IntEnum):
    NULL = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOL = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DATE_TIME_S = 28
    OI = 80
    OAD = 81
    ROAD = 82
    OMD = 83
    TI = 84
    TSA = 85
    MAC = 86
    RN = 87
    REGION = 88
    SCALER_UNIT = 89
    RSD = 90
    CSD = 91
    MS = 92
    SID = 93
    SID_MAC = 94
    COMDCB = 95
    RCSD = 96


# Fixed-size integers: tag -> (size, signed).
_INTEGERS: Final = {
    DataType.DOUBLE_LONG: (4, True),
    DataType.DOUBLE_LONG_UNSIGNED: (4, False),
    DataType.INTEGER: (1, True),
    DataType.LONG: (2, True),
    DataType.UNSIGNED: (1, False),
    DataType.LONG_UNSIGNED: (2, False),
    DataType.LONG64: (8, True),
    DataType.LONG64_UNSIGNED: (8, False),
    DataType.ENUM: (1, False),
    DataType.OI: (2, False),
}
# Calendar types: tag -> field sizes (year is 2 bytes, milliseconds 2).
_CALENDAR: Final = {
    DataType.DATE_TIME: (2, 1, 1, 1, 1, 1, 1, 2),  # year month day weekday h m s ms
    DataType.DATE: (2, 1, 1, 1),  # year month day weekday
    DataType.TIME: (1, 1, 1),  # h m s
    DataType.DATE_TIME_S: (2, 1, 1, 1, 1, 1),  # year month day h m s
}


# ---------------------------------------------------------------------------
# Descriptors
# ---------------------------------------------------------------------------


@attrs.frozen(order=True)
class OAD:
    """Object attribute descriptor: OI, attribute (bits 0-4 the attribute number, 5-7 its
    feature), element index (0: the whole attribute). ``str`` is the usual 8 hex digits."""

    oi: int
    attribute: int = 2
    index: int = 0

    @classmethod
    def parse(cls, text: str) -> OAD:
        digits = text.strip().replace(" ", "")
        if len(digits) != 8:
            raise ValueError(f"an OAD is 8 hex digits, got {text!r}")
        raw = bytes.fromhex(digits)
        return cls(int.from_bytes(raw[:2], "big"), raw[2], raw[3])

    @property
    def number(self) -> int:
        """The attribute number (without its feature bits)."""
        return self.attribute & 0x1F

    def encode(self) -> bytes:
        return self.oi.to_bytes(2, "big") + bytes([self.attribute, self.index])

    def __str__(self) -> str:
        return f"{self.oi:04X}{self.attribute:02X}{self.index:02X}"


@attrs.frozen(order=True)
class OMD:
    """Object method descriptor: OI, method number, operation mode."""

    oi: int
    method: int
    mode: int = 0

    def encode(self) -> bytes:
        return self.oi.to_bytes(2, "big") + bytes([self.method, self.mode])

    def __str__(self) -> str:
        return self.encode().hex().upper()


@attrs.frozen
class ROAD:
    """Record object attribute descriptor: a record object and the columns wanted of it."""

    oad: OAD
    columns: tuple[OAD, ...] = ()


@attrs.frozen
class TI:
    """Time interval: unit (0 s, 1 min, 2 h, 3 day, 4 month, 5 year) and count."""

    unit: int
    interval: int

    def delta(self) -> timedelta | None:
        """The interval as a timedelta (None for months and years)."""
        seconds = {0: 1, 1: 60, 2: 3600, 3: 86400}.get(self.unit)
        return None if seconds is None else timedelta(seconds=seconds * self.interval)


@attrs.frozen
class BitString:
    """A bit-string: ``bits`` long, its bytes most significant bit first."""

    bits: int
    data: bytes


@attrs.frozen
class ScalerUnit:
    scaler: int
    unit: int


@attrs.frozen
class Region:
    """A range: kind (0 [start, end), 1 (start, end], 2 [start, end], 3 (start, end))."""

    kind: int
    start: Data
    end: Data


@attrs.frozen
class MS:
    """Meter set: choice 0 none, 1 all, 2 user types, 3 addresses (TSA), 4 serial numbers,
    5..7 regions of those; ``items`` as decoded (ints, TSA bytes or Regions)."""

    choice: int
    items: tuple[Any, ...] = ()


@attrs.frozen
class CSD:
    """Column selection: an OAD, or a ROAD (a record column of sub-columns)."""

    oad: OAD | None = None
    road: ROAD | None = None

    def __attrs_post_init__(self) -> None:
        if (self.oad is None) == (self.road is None):
            raise ValueError("a CSD is one of an OAD and a ROAD")


@attrs.frozen
class RSD:
    """Row selection of a record read: ``selector`` 0..10 with its parameters, as decoded
    (Selector1: (OAD, Data); 2: (OAD, start, end, interval); 3: tuple of Selector2s;
    4/5: (date_time_s, MS); 6/7/8: (start, end, TI, MS); 9: (n,); 10: (n, MS))."""

    selector: int
    parameters: tuple[Any, ...] = ()


@attrs.frozen
class SID:
    identifier: int
    extra: bytes


@attrs.frozen
class COMDCB:
    baud: int
    parity: int
    data_bits: int
    stop_bits: int
    flow: int


class Data:
    """One typed value: ``tag`` and the value as Python holds it (tuple of Data for array
    and structure, int, bool, bytes, str, float, a tuple of calendar fields, a
    descriptor).

    A plain slotted class, not an attrs one (as fep.protocols.dlms.axdr.Data): a record
    answer makes hundreds of these and an attrs frozen __init__ costs three times as much.
    Treat instances as immutable.
    """

    __slots__ = ("tag", "value")

    def __init__(self, tag: DataType, value: Any = None) -> None:
        self.tag = tag
        self.value = value

    def __repr__(self) -> str:
        return f"Data(tag={self.tag!r}, value={self.value!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Data):
            return NotImplemented
        return self.tag == other.tag and self.value == other.value

    def __hash__(self) -> int:
        return hash((self.tag, self.value))

    # -- constructors used by simulators and tests -----------------------------------------

    @classmethod
    def null(cls) -> Data:
        return cls(DataType.NULL)

    @classmethod
    def array(cls, items: Sequence[Data]) -> Data:
        return cls(DataType.ARRAY, tuple(items))

    @classmethod
    def structure(cls, items: Sequence[Data]) -> Data:
        return cls(DataType.STRUCTURE, tuple(items))

    @classmethod
    def date_time_s(cls, when: datetime) -> Data:
        return cls(
            DataType.DATE_TIME_S,
            (when.year, when.month, when.day, when.hour, when.minute, when.second),
        )

    @classmethod
    def date_time(cls, when: datetime) -> Data:
        weekday = (when.isoweekday()) % 7  # 0 Sunday .. 6 Saturday
        return cls(
            DataType.DATE_TIME,
            (when.year, when.month, when.day, weekday, when.hour, when.minute, when.second,
             when.microsecond // 1000),
        )  # fmt: skip

    @property
    def items(self) -> tuple[Data, ...]:
        if self.tag not in (DataType.ARRAY, DataType.STRUCTURE):
            raise TypeError(f"{self.tag.name} has no items")
        items: tuple[Data, ...] = self.value
        return items

    def to_datetime(self, tz: tzinfo) -> datetime | None:
        """A date_time / date_time_s / date as a datetime in ``tz`` (None when a field is
        not given: FF or FFFF, or out of range)."""
        if self.tag not in (DataType.DATE_TIME, DataType.DATE_TIME_S, DataType.DATE):
            return None
        f = self.value
        if self.tag is DataType.DATE_TIME:
            year, month, day, _, hour, minute, second, ms = f
        elif self.tag is DataType.DATE_TIME_S:
            year, month, day, hour, minute, second = f
            ms = 0
        else:
            year, month, day, _ = f
            hour = minute = second = ms = 0
        try:
            return datetime(year, month, day, hour, minute, second, (ms % 1000) * 1000,
                            tzinfo=tz)  # fmt: skip
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.tag.name.lower()}:{self.value!r}"


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


class Reader:
    """Bytes with a position; every read checks what is left (FrameError otherwise)."""

    def __init__(self, data: bytes, offset: int = 0, base: int = 0) -> None:
        self.data = data
        self.pos = offset
        # Added to positions in errors (where ``data`` starts in the frame).
        self.base = base

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def error(self, message: str, field: str, at: int | None = None) -> FrameError:
        return FrameError(message, offset=self.base + (self.pos if at is None else at),
                          field=field)  # fmt: skip

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or n > self.left:
            raise self.error(f"{field}: {n} bytes wanted, {self.left} left", field)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, field: str) -> int:
        if self.left < 1:
            raise self.error(f"{field}: no byte left", field)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uint(self, n: int, field: str) -> int:
        return int.from_bytes(self.take(n, field), "big")

    def length(self, field: str) -> int:
        """An A-XDR length: one byte below 0x80, else 0x8N and N bytes."""
        first = self.byte(field)
        if first < 0x80:
            return first
        n = first & 0x7F
        if n == 0 or n > 4:
            raise self.error(f"{field}: length form 0x{first:02X}", field, self.pos - 1)
        return self.uint(n, field)

    def count(self, field: str, min_size: int = 1) -> int:
        """A SEQUENCE OF count, checked against what is left (each element at least
        ``min_size`` bytes)."""
        n = self.length(field)
        if n * min_size > self.left:
            raise self.error(f"{field}: {n} elements in {self.left} bytes", field)
        return n

    def optional(self, field: str) -> bool:
        flag = self.byte(field)
        if flag not in (0, 1):
            raise self.error(f"{field}: OPTIONAL flag 0x{flag:02X}", field, self.pos - 1)
        return flag == 1


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    size = (n.bit_length() + 7) // 8
    return bytes([0x80 | size]) + n.to_bytes(size, "big")


def read_oad(r: Reader) -> OAD:
    raw = r.take(4, "OAD")
    return OAD(int.from_bytes(raw[:2], "big"), raw[2], raw[3])


def read_omd(r: Reader) -> OMD:
    raw = r.take(4, "OMD")
    return OMD(int.from_bytes(raw[:2], "big"), raw[2], raw[3])


def read_road(r: Reader) -> ROAD:
    oad = read_oad(r)
    n = r.count("ROAD columns", 4)
    return ROAD(oad, tuple(read_oad(r) for _ in range(n)))


def encode_road(road: ROAD) -> bytes:
    return road.oad.encode() + encode_length(len(road.columns)) + b"".join(
        c.encode() for c in road.columns
    )


def read_csd(r: Reader) -> CSD:
    choice = r.byte("CSD")
    if choice == 0:
        return CSD(oad=read_oad(r))
    if choice == 1:
        return CSD(road=read_road(r))
    raise r.error(f"CSD choice {choice}", "CSD", r.pos - 1)


def encode_csd(csd: CSD) -> bytes:
    if csd.oad is not None:
        return b"\x00" + csd.oad.encode()
    assert csd.road is not None
    return b"\x01" + encode_road(csd.road)


def read_rcsd(r: Reader) -> tuple[CSD, ...]:
    n = r.count("RCSD", 5)
    return tuple(read_csd(r) for _ in range(n))


def encode_rcsd(columns: Sequence[CSD]) -> bytes:
    return encode_length(len(columns)) + b"".join(encode_csd(c) for c in columns)


def read_ti(r: Reader) -> TI:
    unit = r.byte("TI unit")
    return TI(unit, r.uint(2, "TI interval"))


def encode_ti(ti: TI) -> bytes:
    return bytes([ti.unit]) + ti.interval.to_bytes(2, "big")


def read_tsa(r: Reader) -> bytes:
    n = r.length("TSA")
    return r.take(n, "TSA")


def encode_tsa(tsa: bytes) -> bytes:
    return encode_length(len(tsa)) + tsa


def tsa_from_address(address: str) -> bytes:
    """A TSA's content for a meter address written most significant digit first
    (``"000000000001"`` -> ``05 00 00 00 00 00 01``)."""
    raw = bytes.fromhex(address if len(address) % 2 == 0 else "0" + address)
    if not 1 <= len(raw) <= 16:
        raise ValueError(f"TSA address is 1..16 bytes, got {address!r}")
    return bytes([len(raw) - 1]) + raw


def tsa_address(tsa: bytes) -> str:
    """The address text of a TSA's content (the inverse of ``tsa_from_address``)."""
    return tsa[1:].hex().upper()


def _read_calendar(r: Reader, tag: DataType) -> tuple[int, ...]:
    return tuple(r.uint(n, tag.name) for n in _CALENDAR[tag])


def _encode_calendar(tag: DataType, fields: Sequence[int]) -> bytes:
    sizes = _CALENDAR[tag]
    if len(fields) != len(sizes):
        raise ValueError(f"{tag.name} has {len(sizes)} fields")
    return b"".join(int(v).to_bytes(n, "big") for v, n in zip(fields, sizes, strict=True))


def read_region(r: Reader, depth: int) -> Region:
    kind = r.byte("Region")
    return Region(kind, read_data(r, depth + 1), read_data(r, depth + 1))


def read_ms(r: Reader, depth: int) -> MS:
    choice = r.byte("MS")
    if choice in (0, 1):
        return MS(choice)
    if choice == 2:
        n = r.count("MS user types", 1)
        return MS(choice, tuple(r.byte("MS user type") for _ in range(n)))
    if choice == 3:
        n = r.count("MS addresses", 2)
        return MS(choice, tuple(read_tsa(r) for _ in range(n)))
    if choice == 4:
        n = r.count("MS numbers", 2)
        return MS(choice, tuple(r.uint(2, "MS number") for _ in range(n)))
    if choice in (5, 6, 7):
        n = r.count("MS regions", 3)
        return MS(choice, tuple(read_region(r, depth) for _ in range(n)))
    raise r.error(f"MS choice {choice}", "MS", r.pos - 1)


def encode_ms(ms: MS) -> bytes:
    out = bytes([ms.choice])
    if ms.choice in (0, 1):
        return out
    out += encode_length(len(ms.items))
    for item in ms.items:
        if ms.choice == 2:
            out += bytes([item])
        elif ms.choice == 3:
            out += encode_tsa(item)
        elif ms.choice == 4:
            out += int(item).to_bytes(2, "big")
        else:
            out += _encode_region(item)
    return out


def _encode_region(region: Region) -> bytes:
    return bytes([region.kind]) + encode_data(region.start) + encode_data(region.end)


def read_rsd(r: Reader, depth: int = 0) -> RSD:
    at = r.pos
    selector = r.byte("RSD")
    p: tuple[Any, ...]
    if selector == 0:
        p = ()
    elif selector == 1:
        p = (read_oad(r), read_data(r, depth + 1))
    elif selector == 2:
        p = _read_selector2(r, depth)
    elif selector == 3:
        n = r.count("Selector3", 7)
        p = tuple(_read_selector2(r, depth) for _ in range(n))
    elif selector in (4, 5):
        p = (_read_calendar(r, DataType.DATE_TIME_S), read_ms(r, depth))
    elif selector in (6, 7, 8):
        p = (
            _read_calendar(r, DataType.DATE_TIME_S),
            _read_calendar(r, DataType.DATE_TIME_S),
            read_ti(r),
            read_ms(r, depth),
        )
    elif selector == 9:
        p = (r.byte("Selector9"),)
    elif selector == 10:
        p = (r.byte("Selector10"), read_ms(r, depth))
    else:
        raise r.error(f"RSD selector {selector}", "RSD", at)
    return RSD(selector, p)


def _read_selector2(r: Reader, depth: int) -> tuple[Any, ...]:
    return (read_oad(r), read_data(r, depth + 1), read_data(r, depth + 1),
            read_data(r, depth + 1))  # fmt: skip


def encode_rsd(rsd: RSD) -> bytes:
    s, p = rsd.selector, rsd.parameters
    out = bytes([s])
    if s == 0:
        return out
    if s == 1:
        return out + p[0].encode() + encode_data(p[1])
    if s == 2:
        return out + _encode_selector2(p)
    if s == 3:
        return out + encode_length(len(p)) + b"".join(_encode_selector2(x) for x in p)
    if s in (4, 5):
        return out + _encode_calendar(DataType.DATE_TIME_S, p[0]) + encode_ms(p[1])
    if s in (6, 7, 8):
        return (
            out
            + _encode_calendar(DataType.DATE_TIME_S, p[0])
            + _encode_calendar(DataType.DATE_TIME_S, p[1])
            + encode_ti(p[2])
            + encode_ms(p[3])
        )
    if s == 9:
        return out + bytes([p[0]])
    if s == 10:
        return out + bytes([p[0]]) + encode_ms(p[1])
    raise ValueError(f"RSD selector {s} is not 0..10")


def _encode_selector2(p: Sequence[Any]) -> bytes:
    return p[0].encode() + encode_data(p[1]) + encode_data(p[2]) + encode_data(p[3])


def selector1(oad: OAD, value: Data) -> RSD:
    """Rows whose column ``oad`` equals ``value`` (e.g. the frozen time 20210200)."""
    return RSD(1, (oad, value))


def selector2(oad: OAD, start: Data, end: Data, interval: Data | None = None) -> RSD:
    """Rows with ``oad`` in [start, end), every ``interval`` (a TI, or null: all)."""
    return RSD(2, (oad, start, end, interval or Data.null()))


def selector9(last: int) -> RSD:
    """The last ``last``-th record (1: the latest)."""
    return RSD(9, (last,))


# The fixed-size types every answer is full of, read with one struct call each: tag ->
# (type, struct, whether the value is the struct's tuple (calendar) or its one number).
_FIXED: Final = {
    int(tag): (tag, struct.Struct(fmt), tag in _CALENDAR)
    for tag, fmt in (
        (DataType.DOUBLE_LONG, ">i"), (DataType.DOUBLE_LONG_UNSIGNED, ">I"),
        (DataType.INTEGER, ">b"), (DataType.LONG, ">h"), (DataType.UNSIGNED, ">B"),
        (DataType.LONG_UNSIGNED, ">H"), (DataType.LONG64, ">q"),
        (DataType.LONG64_UNSIGNED, ">Q"), (DataType.ENUM, ">B"), (DataType.OI, ">H"),
        (DataType.DATE_TIME, ">HBBBBBBH"), (DataType.DATE, ">HBBB"), (DataType.TIME, ">BBB"),
        (DataType.DATE_TIME_S, ">HBBBBB"),
    )
}  # fmt: skip
_TAGS: Final = {int(tag): tag for tag in DataType}


def read_data(r: Reader, depth: int = 0) -> Data:
    """One Data (tag and value) from ``r``."""
    if depth > MAX_DEPTH:
        raise r.error(f"data nested deeper than {MAX_DEPTH}", "Data")
    at = r.pos
    raw_tag = r.byte("Data type")
    fixed = _FIXED.get(raw_tag)
    if fixed is not None:
        kind, layout, calendar = fixed
        if layout.size > len(r.data) - r.pos:
            raise r.error(f"{kind.name}: {layout.size} bytes wanted, {r.left} left", kind.name)
        values = layout.unpack_from(r.data, r.pos)
        r.pos += layout.size
        return Data(kind, values if calendar else values[0])
    tag = _TAGS.get(raw_tag)
    if tag is None:
        raise r.error(f"unknown data type {raw_tag}", "Data type", at)
    if tag is DataType.NULL:
        return Data(tag)
    if tag in (DataType.ARRAY, DataType.STRUCTURE):
        n = r.count(tag.name.lower(), 1)
        return Data(tag, tuple(read_data(r, depth + 1) for _ in range(n)))
    if tag is DataType.BOOL:
        return Data(tag, r.byte("bool") != 0)
    if tag is DataType.BIT_STRING:
        bits = r.length("bit-string")
        return Data(tag, BitString(bits, r.take((bits + 7) // 8, "bit-string")))
    if tag in _INTEGERS:
        size, signed = _INTEGERS[tag]
        return Data(tag, int.from_bytes(r.take(size, tag.name), "big", signed=signed))
    if tag in (DataType.OCTET_STRING, DataType.MAC, DataType.RN, DataType.TSA):
        return Data(tag, r.take(r.length(tag.name), tag.name))
    if tag is DataType.VISIBLE_STRING:
        return Data(tag, r.take(r.length(tag.name), tag.name).decode("latin-1"))
    if tag is DataType.UTF8_STRING:
        raw = r.take(r.length(tag.name), tag.name)
        try:
            return Data(tag, raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise r.error("UTF8-string is not UTF-8", tag.name, at) from None
    if tag is DataType.FLOAT32:
        return Data(tag, struct.unpack(">f", r.take(4, "float32"))[0])
    if tag is DataType.FLOAT64:
        return Data(tag, struct.unpack(">d", r.take(8, "float64"))[0])
    if tag in _CALENDAR:
        return Data(tag, _read_calendar(r, tag))
    if tag is DataType.OAD:
        return Data(tag, read_oad(r))
    if tag is DataType.ROAD:
        return Data(tag, read_road(r))
    if tag is DataType.OMD:
        return Data(tag, read_omd(r))
    if tag is DataType.TI:
        return Data(tag, read_ti(r))
    if tag is DataType.REGION:
        return Data(tag, read_region(r, depth))
    if tag is DataType.SCALER_UNIT:
        scaler = int.from_bytes(r.take(1, "scaler"), "big", signed=True)
        return Data(tag, ScalerUnit(scaler, r.byte("unit")))
    if tag is DataType.RSD:
        return Data(tag, read_rsd(r, depth))
    if tag is DataType.CSD:
        return Data(tag, read_csd(r))
    if tag is DataType.MS:
        return Data(tag, read_ms(r, depth))
    if tag is DataType.SID:
        return Data(tag, _read_sid(r))
    if tag is DataType.SID_MAC:
        sid = _read_sid(r)
        return Data(tag, (sid, r.take(r.length("MAC"), "MAC")))
    if tag is DataType.COMDCB:
        return Data(tag, COMDCB(*r.take(5, "COMDCB")))
    assert tag is DataType.RCSD
    return Data(tag, read_rcsd(r))


def _read_sid(r: Reader) -> SID:
    identifier = r.uint(4, "SID")
    return SID(identifier, r.take(r.length("SID data"), "SID data"))


def _encode_sid(sid: SID) -> bytes:
    return sid.identifier.to_bytes(4, "big") + encode_length(len(sid.extra)) + sid.extra


def encode_data(data: Data) -> bytes:
    """The bytes of one Data (tag first)."""
    tag, v = data.tag, data.value
    head = bytes([int(tag)])
    if tag is DataType.NULL:
        return head
    if tag in (DataType.ARRAY, DataType.STRUCTURE):
        return head + encode_length(len(v)) + b"".join(encode_data(x) for x in v)
    if tag is DataType.BOOL:
        return head + (b"\x01" if v else b"\x00")
    if tag is DataType.BIT_STRING:
        return head + encode_length(v.bits) + v.data
    if tag in _INTEGERS:
        size, signed = _INTEGERS[tag]
        return head + int(v).to_bytes(size, "big", signed=signed)
    if tag in (DataType.OCTET_STRING, DataType.MAC, DataType.RN, DataType.TSA):
        return head + encode_length(len(v)) + bytes(v)
    if tag is DataType.VISIBLE_STRING:
        raw = v.encode("latin-1")
        return head + encode_length(len(raw)) + raw
    if tag is DataType.UTF8_STRING:
        raw = v.encode("utf-8")
        return head + encode_length(len(raw)) + raw
    if tag is DataType.FLOAT32:
        return head + struct.pack(">f", v)
    if tag is DataType.FLOAT64:
        return head + struct.pack(">d", v)
    if tag in _CALENDAR:
        return head + _encode_calendar(tag, v)
    if tag in (DataType.OAD, DataType.OMD):
        return head + v.encode()
    if tag is DataType.ROAD:
        return head + encode_road(v)
    if tag is DataType.TI:
        return head + encode_ti(v)
    if tag is DataType.REGION:
        return head + _encode_region(v)
    if tag is DataType.SCALER_UNIT:
        return head + v.scaler.to_bytes(1, "big", signed=True) + bytes([v.unit])
    if tag is DataType.RSD:
        return head + encode_rsd(v)
    if tag is DataType.CSD:
        return head + encode_csd(v)
    if tag is DataType.MS:
        return head + encode_ms(v)
    if tag is DataType.SID:
        return head + _encode_sid(v)
    if tag is DataType.SID_MAC:
        sid, mac = v
        return head + _encode_sid(sid) + encode_length(len(mac)) + mac
    if tag is DataType.COMDCB:
        return head + bytes([v.baud, v.parity, v.data_bits, v.stop_bits, v.flow])
    assert tag is DataType.RCSD
    return head + encode_rcsd(v)


def decode_data(raw: bytes, offset: int = 0) -> tuple[Data, int]:
    """One Data from ``raw`` at ``offset``: the Data and the offset after it."""
    r = Reader(raw, offset)
    data = read_data(r)
    return data, r.pos


def integer(tag: DataType, value: int) -> Data:
    """An integer Data of the given type, range-checked."""
    size, signed = _INTEGERS[tag]
    value.to_bytes(size, "big", signed=signed)  # OverflowError when it does not fit
    return Data(tag, value)


__all__ = [
    "CSD",
    "MS",
    "OAD",
    "OMD",
    "ROAD",
    "RSD",
    "TI",
    "BitString",
    "Data",
    "DataType",
    "Reader",
    "Region",
    "ScalerUnit",
    "decode_data",
    "encode_data",
    "encode_length",
    "encode_rcsd",
    "encode_rsd",
    "integer",
    "read_data",
    "read_rcsd",
    "read_rsd",
    "selector1",
    "selector2",
    "selector9",
    "tsa_address",
    "tsa_from_address",
]
