"""A-XDR (IEC 62056-6-2 / Blue Book 4.1.5): the COSEM ``Data`` type, encoded and decoded.

Every value keeps its COSEM data type (``Data(type, value)``), so what is decoded encodes back
to the same bytes. Decoding works on a complete APDU body: running out of bytes, an unknown
type tag or nesting deeper than ``MAX_DEPTH`` is a FrameError naming the offset and the field.
"""

from __future__ import annotations

import enum
import operator
import struct
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs

from fep.errors import FrameError

# Nesting deeper than this is refused: no meter sends it, and hostile input must not reach
# Python's recursion limit.
MAX_DEPTH = 24
# A compact-array's elements carry no tags, and null-data, arrays and structures in them take
# no bytes: a description could make a few bytes decode to billions of values. The values a
# compact-array decodes to are bounded by this many per byte of its contents (plus a small
# allowance); an ordinary array or structure needs at least one byte (a tag) per value.
MAX_COMPACT_VALUES_PER_BYTE = 16
COMPACT_VALUES_ALLOWANCE = 256


class DataType(enum.IntEnum):
    """The COSEM data type tags (Blue Book table 2)."""

    NULL_DATA = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    COMPACT_ARRAY = 19
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DONT_CARE = 255


# Fixed-size integer types: tag -> struct format.
_INT_FORMATS: dict[int, struct.Struct] = {
    DataType.DOUBLE_LONG: struct.Struct(">i"),
    DataType.DOUBLE_LONG_UNSIGNED: struct.Struct(">I"),
    DataType.BCD: struct.Struct(">B"),
    DataType.INTEGER: struct.Struct(">b"),
    DataType.LONG: struct.Struct(">h"),
    DataType.UNSIGNED: struct.Struct(">B"),
    DataType.LONG_UNSIGNED: struct.Struct(">H"),
    DataType.LONG64: struct.Struct(">q"),
    DataType.LONG64_UNSIGNED: struct.Struct(">Q"),
    DataType.ENUM: struct.Struct(">B"),
}
_FLOAT_FORMATS: dict[int, struct.Struct] = {
    DataType.FLOAT32: struct.Struct(">f"),
    DataType.FLOAT64: struct.Struct(">d"),
}
_NUMBER_TYPES = frozenset(_INT_FORMATS) | frozenset(_FLOAT_FORMATS)
_KNOWN_TAGS = frozenset(int(t) for t in DataType)
_TAG_TYPES = {int(t): t for t in DataType}

NOT_SPECIFIED = None


@attrs.frozen(slots=True)
class CosemDate:
    """A COSEM date (5 bytes). None means "not specified" (0xFF/0xFFFF on the wire); month
    0xFD/0xFE (DST end/begin) and day 0xFD/0xFE (second last/last day) stay as numbers."""

    year: int | None
    month: int | None
    day: int | None
    weekday: int | None = None

    def encode(self) -> bytes:
        return (0xFFFF if self.year is None else self.year).to_bytes(2, "big") + bytes(
            (_ff(self.month), _ff(self.day), _ff(self.weekday))
        )

    @classmethod
    def decode(cls, raw: bytes) -> CosemDate:
        """From its 5 bytes; FrameError for any other length."""
        _check_size(raw, 5, "CosemDate")
        year = int.from_bytes(raw[0:2], "big")
        return cls(None if year == 0xFFFF else year, _none(raw[2]), _none(raw[3]), _none(raw[4]))


@attrs.frozen(slots=True)
class CosemTime:
    """A COSEM time (4 bytes); None means "not specified" (0xFF)."""

    hour: int | None
    minute: int | None
    second: int | None
    hundredths: int | None = None

    def encode(self) -> bytes:
        return bytes((_ff(self.hour), _ff(self.minute), _ff(self.second), _ff(self.hundredths)))

    @classmethod
    def decode(cls, raw: bytes) -> CosemTime:
        """From its 4 bytes; FrameError for any other length."""
        _check_size(raw, 4, "CosemTime")
        return cls(_none(raw[0]), _none(raw[1]), _none(raw[2]), _none(raw[3]))


class ClockStatus(enum.IntFlag):
    """The clock status byte of a COSEM date-time (Blue Book 4.1.6.1)."""

    INVALID_VALUE = 0x01
    DOUBTFUL_VALUE = 0x02
    DIFFERENT_CLOCK_BASE = 0x04
    INVALID_CLOCK_STATUS = 0x08
    DAYLIGHT_SAVING_ACTIVE = 0x80


@attrs.frozen(slots=True)
class CosemDateTime:
    """A COSEM date-time (12 bytes): local date and time, the deviation of local time from
    UTC and the clock status.

    ``deviation`` follows the Blue Book: minutes from local time to UTC, so UTC = local +
    deviation (a meter on CET sends -60). None means not specified (0x8000); ``status`` None
    means 0xFF (not specified).
    """

    date: CosemDate
    time: CosemTime
    deviation: int | None = None
    status: int | None = None

    def encode(self) -> bytes:
        deviation = 0x8000 if self.deviation is None else self.deviation & 0xFFFF
        return (
            self.date.encode()
            + self.time.encode()
            + deviation.to_bytes(2, "big")
            + bytes((_ff(self.status),))
        )

    @classmethod
    def decode(cls, raw: bytes) -> CosemDateTime:
        """From its 12 bytes; FrameError for any other length."""
        _check_size(raw, 12, "CosemDateTime")
        deviation = (raw[9] << 8 | raw[10]) - ((raw[9] & 0x80) << 9)
        year = raw[0] << 8 | raw[1]
        b = tuple(None if byte == 0xFF else byte for byte in raw[2:9])
        return cls(
            CosemDate(None if year == 0xFFFF else year, b[0], b[1], b[2]),
            CosemTime(b[3], b[4], b[5], b[6]),
            None if deviation == -0x8000 else deviation,
            _none(raw[11]),
        )

    @classmethod
    def from_datetime(
        cls, when: datetime, *, deviation: int | None = 0, status: int | None = 0
    ) -> CosemDateTime:
        """The local wall time of ``when`` shifted by ``deviation`` (UTC when 0)."""
        utc = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
        local = utc - timedelta(minutes=deviation or 0)
        return cls(
            CosemDate(local.year, local.month, local.day, local.isoweekday()),
            CosemTime(local.hour, local.minute, local.second, local.microsecond // 10000),
            deviation,
            status,
        )

    def to_datetime(self, default_deviation: int | None = None) -> datetime | None:
        """The instant in UTC, or None when the date or time is not fully specified (or
        is no instant Python's datetime can hold, e.g. year 9999 pushed past its end by the
        deviation).

        ``default_deviation`` is used when the meter leaves the deviation unspecified (its
        configured time zone); with neither, the wall time is taken as UTC.
        """
        d, t = self.date, self.time
        if None in (d.year, d.month, d.day, t.hour, t.minute):
            return None
        assert d.year is not None and d.month is not None and d.day is not None
        assert t.hour is not None and t.minute is not None
        if d.month > 12 or d.day > 31:
            return None
        try:
            local = datetime(
                d.year,
                d.month,
                d.day,
                t.hour,
                t.minute,
                t.second or 0,
                (t.hundredths or 0) * 10000 if (t.hundredths or 0) < 100 else 0,
            )
        except ValueError:
            return None
        deviation = self.deviation if self.deviation is not None else default_deviation
        try:
            utc = local + timedelta(minutes=deviation or 0)
        except OverflowError:
            return None
        return utc.replace(tzinfo=UTC)

    @staticmethod
    def datetime_from_octets(
        raw: bytes, default_deviation: int | None = None
    ) -> datetime | None:
        """``CosemDateTime.decode(raw).to_datetime(default_deviation)`` for 12 bytes, without
        the three records in between (a profile decodes one per row)."""
        year = raw[0] << 8 | raw[1]
        month, day, hour, minute = raw[2], raw[3], raw[5], raw[6]
        if year == 0xFFFF or month == 0xFF or day == 0xFF or hour == 0xFF or minute == 0xFF:
            return None
        if month > 12 or day > 31:
            return None
        second = raw[7]
        hundredths = raw[8]
        try:
            local = datetime(
                year,
                month,
                day,
                hour,
                minute,
                0 if second == 0xFF else second,
                hundredths * 10000 if hundredths < 100 else 0,
            )
        except ValueError:
            return None
        deviation: int | None = (raw[9] << 8 | raw[10]) - ((raw[9] & 0x80) << 9)
        if deviation == -0x8000:
            deviation = default_deviation
        try:
            utc = local + timedelta(minutes=deviation or 0)
        except OverflowError:
            return None
        return utc.replace(tzinfo=UTC)

    def local_zone(self) -> timezone | None:
        """The fixed offset the meter declared, if any (UTC offset = -deviation); None too
        for a deviation of a day or more, which no time zone has."""
        if self.deviation is None or not -1440 < self.deviation < 1440:
            return None
        return timezone(timedelta(minutes=-self.deviation))


def _check_size(raw: bytes, size: int, what: str) -> None:
    if len(raw) != size:
        raise FrameError(f"{what} of {len(raw)} bytes, not {size}", field=what)


def _ff(value: int | None) -> int:
    return 0xFF if value is None else value


def _none(byte: int) -> int | None:
    return None if byte == 0xFF else byte


@attrs.frozen(slots=True)
class TypeDescription:
    """The contents description of a compact-array: a simple type, or an array
    (``count`` elements of ``children[0]``), or a structure of ``children``."""

    type: DataType
    children: tuple[TypeDescription, ...] = ()
    count: int = 0

    def encode(self) -> bytes:
        if self.type == DataType.ARRAY:
            return b"\x01" + self.count.to_bytes(2, "big") + self.children[0].encode()
        if self.type == DataType.STRUCTURE:
            return (
                b"\x02"
                + encode_length(len(self.children))
                + b"".join(c.encode() for c in self.children)
            )
        return bytes((self.type,))

    def min_size(self) -> int:
        """Fewest bytes one element of this description takes (0 for null-data)."""
        if self.type == DataType.ARRAY:
            return self.count * self.children[0].min_size()
        if self.type == DataType.STRUCTURE:
            return sum(c.min_size() for c in self.children)
        return _FIXED_SIZES.get(self.type, 1)

    def value_count(self) -> int:
        """How many Data values one element of this description decodes to (itself and
        every nested item)."""
        if self.type == DataType.ARRAY:
            return 1 + self.count * self.children[0].value_count()
        if self.type == DataType.STRUCTURE:
            return 1 + sum(c.value_count() for c in self.children)
        return 1


@attrs.frozen(slots=True)
class CompactArray:
    """A compact-array's value: its description and the elements, each a Data of that type."""

    description: TypeDescription
    elements: tuple[Data, ...]


class Data:
    """One COSEM value with its data type.

    ``value`` by type: None (null-data, dont-care), tuple of Data (array, structure), bool,
    str of '0'/'1' (bit-string), int (integer types, bcd, enum), float, bytes (octet-string),
    str (visible-string, utf8-string), CosemDateTime, CosemDate, CosemTime, CompactArray.

    A plain slotted class, not an attrs one: a 96-row profile buffer makes ~500 of these and
    an attrs frozen __init__ costs 2.5 times as much. Treat instances as immutable.
    """

    __slots__ = ("type", "value")

    def __init__(self, type: DataType, value: Any = None) -> None:
        self.type = type
        self.value = value

    def __repr__(self) -> str:
        return f"Data(type={self.type!r}, value={self.value!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Data):
            return NotImplemented
        return self.type == other.type and self.value == other.value

    def __hash__(self) -> int:
        return hash((self.type, self.value))

    def native(self) -> Any:
        """The plain Python value: lists for arrays and structures, recursively."""
        if self.type in (DataType.ARRAY, DataType.STRUCTURE):
            return [item.native() for item in self.value]
        if self.type == DataType.COMPACT_ARRAY:
            return [item.native() for item in self.value.elements]
        return self.value

    # The sequence methods run for every item a COSEM layer looks at: the type is checked by
    # identity first (decoded values hold the DataType members), by value only after.
    def __iter__(self) -> Any:
        """Arrays and structures iterate over their items."""
        t = self.type
        if t is _STRUCTURE or t is _ARRAY or t in _SEQUENCE_TAGS:
            return iter(self.value)
        raise TypeError(f"{self.type.name} is not a sequence")

    def __len__(self) -> int:
        t = self.type
        if t is _STRUCTURE or t is _ARRAY or t in _SEQUENCE_TAGS:
            return len(self.value)
        raise TypeError(f"{self.type.name} is not a sequence")

    def __getitem__(self, index: int) -> Data:
        t = self.type
        if t is _STRUCTURE or t is _ARRAY or t in _SEQUENCE_TAGS:
            item: Data = self.value[index]
            return item
        raise TypeError(f"{self.type.name} is not a sequence")


_STRUCTURE = DataType.STRUCTURE
_ARRAY = DataType.ARRAY
_SEQUENCE_TAGS = frozenset((DataType.ARRAY, DataType.STRUCTURE))


_FIXED_SIZES: dict[int, int] = {
    DataType.NULL_DATA: 0,
    DataType.DONT_CARE: 0,
    DataType.BOOLEAN: 1,
    DataType.DATE_TIME: 12,
    DataType.DATE: 5,
    DataType.TIME: 4,
    **{t: f.size for t, f in _INT_FORMATS.items()},
    **{t: f.size for t, f in _FLOAT_FORMATS.items()},
}

NULL = Data(DataType.NULL_DATA)


# -- constructors -----------------------------------------------------------------------------


def structure(*items: Data) -> Data:
    return Data(DataType.STRUCTURE, tuple(items))


def array(items: Iterable[Data]) -> Data:
    return Data(DataType.ARRAY, tuple(items))


def octet_string(value: bytes) -> Data:
    return Data(DataType.OCTET_STRING, bytes(value))


def visible_string(value: str) -> Data:
    return Data(DataType.VISIBLE_STRING, value)


def boolean(value: bool) -> Data:
    return Data(DataType.BOOLEAN, bool(value))


def integer(value: int) -> Data:
    return Data(DataType.INTEGER, value)


def long(value: int) -> Data:
    return Data(DataType.LONG, value)


def unsigned(value: int) -> Data:
    return Data(DataType.UNSIGNED, value)


def long_unsigned(value: int) -> Data:
    return Data(DataType.LONG_UNSIGNED, value)


def double_long(value: int) -> Data:
    return Data(DataType.DOUBLE_LONG, value)


def double_long_unsigned(value: int) -> Data:
    return Data(DataType.DOUBLE_LONG_UNSIGNED, value)


def long64_unsigned(value: int) -> Data:
    return Data(DataType.LONG64_UNSIGNED, value)


def enum_value(value: int) -> Data:
    return Data(DataType.ENUM, value)


def date_time(value: CosemDateTime) -> Data:
    """A date-time as meters send it in attributes: an octet-string of 12 bytes."""
    return Data(DataType.OCTET_STRING, value.encode())


# -- length -----------------------------------------------------------------------------------


def encode_length(n: int) -> bytes:
    """A-XDR length: one byte below 0x80, else 0x8N and N big-endian bytes."""
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def decode_length(buf: bytes, pos: int, field: str = "length") -> tuple[int, int]:
    """(length, position after it). Raises FrameError when truncated or when the length
    takes more than 4 bytes (the caller checks it against the bytes left)."""
    if pos >= len(buf):
        raise FrameError(f"{field}: truncated", offset=pos, field=field)
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    if size == 0 or size > 4:
        raise FrameError(f"{field}: length of {size} bytes", offset=pos, field=field)
    end = pos + 1 + size
    if end > len(buf):
        raise FrameError(f"{field}: truncated", offset=pos, field=field)
    return int.from_bytes(buf[pos + 1 : end], "big"), end


# -- encode -----------------------------------------------------------------------------------


def encode(data: Data) -> bytes:
    """The A-XDR bytes of one tagged value."""
    out = bytearray()
    _encode_into(out, data, tagged=True)
    return bytes(out)


def _encode_into(out: bytearray, data: Data, tagged: bool) -> None:
    t = data.type
    v = data.value
    if tagged:
        out.append(t)
    fmt = _INT_FORMATS.get(t) or _FLOAT_FORMATS.get(t)
    if fmt is not None:
        try:
            out += fmt.pack(v)
        except struct.error as e:
            raise ValueError(f"{t.name}: {v!r} does not fit ({e})") from None
    elif t in (DataType.NULL_DATA, DataType.DONT_CARE):
        pass
    elif t in (DataType.ARRAY, DataType.STRUCTURE):
        out += encode_length(len(v))
        for item in v:
            _encode_into(out, item, tagged)
    elif t == DataType.BOOLEAN:
        out.append(1 if v else 0)
    elif t == DataType.OCTET_STRING:
        out += encode_length(len(v))
        out += v
    elif t == DataType.VISIBLE_STRING:
        raw = v.encode("latin-1")
        out += encode_length(len(raw))
        out += raw
    elif t == DataType.UTF8_STRING:
        raw = v.encode("utf-8")
        out += encode_length(len(raw))
        out += raw
    elif t == DataType.BIT_STRING:
        out += encode_length(len(v))
        out += _pack_bits(v)
    elif t in (DataType.DATE_TIME, DataType.DATE, DataType.TIME):
        out += v.encode()
    elif t == DataType.COMPACT_ARRAY:
        out += v.description.encode()
        body = bytearray()
        for item in v.elements:
            _encode_untagged(body, item, v.description)
        out += encode_length(len(body))
        out += body
    else:  # pragma: no cover - every DataType is handled above
        raise ValueError(f"cannot encode {t!r}")


def _encode_untagged(out: bytearray, data: Data, desc: TypeDescription) -> None:
    """Compact-array contents: no tags, and no counts for the described structures/arrays."""
    if desc.type in (DataType.ARRAY, DataType.STRUCTURE):
        children = (
            desc.children if desc.type == DataType.STRUCTURE else ((desc.children[0],) * desc.count)
        )
        if len(data.value) != len(children):
            raise ValueError(
                f"compact-array element has {len(data.value)} items, description {len(children)}"
            )
        for item, child in zip(data.value, children, strict=True):
            _encode_untagged(out, item, child)
    else:
        _encode_into(out, data, tagged=False)


def _pack_bits(bits: str) -> bytes:
    if not bits:
        return b""
    padded = bits + "0" * (-len(bits) % 8)
    return int(padded, 2).to_bytes(len(padded) // 8, "big")


# -- decode -----------------------------------------------------------------------------------


def decode(buf: bytes, pos: int = 0) -> tuple[Data, int]:
    """One tagged value from ``buf`` at ``pos``: (value, position after it).

    Raises FrameError when the bytes run out, a type tag is unknown, a length or count
    cannot fit the bytes left, nesting is deeper than ``MAX_DEPTH``, a utf8-string is not
    UTF-8, or a compact-array would decode to more values than its bytes allow. Work and
    memory are linear in ``len(buf)``; nothing else escapes."""
    data, end = _decode(buf, pos, 0)
    _earn(end - pos)
    return data, end


def decode_all(buf: bytes) -> Data:
    """Exactly one tagged value filling ``buf``. Raises FrameError as ``decode`` does, and
    for bytes after the value."""
    data, end = _decode(buf, 0, 0)
    _earn(end)
    if end != len(buf):
        raise FrameError(
            f"{len(buf) - end} bytes after the value", offset=end, field="trailing bytes"
        )
    return data


def _truncated(t: int, pos: int) -> FrameError:
    name = _TAG_TYPES[t].name.lower().replace("_", "-") if t in _TAG_TYPES else str(t)
    return FrameError(f"{name} truncated", offset=pos, field=name)


def _decode(buf: bytes, pos: int, depth: int) -> tuple[Data, int]:
    try:
        t = buf[pos]
    except IndexError:
        raise FrameError("data truncated: no type tag", offset=pos, field="data type") from None
    handler = _HANDLERS.get(t)
    if handler is None:
        raise FrameError(f"unknown data type tag {t}", offset=pos, field="data type")
    return handler(buf, pos + 1, depth)


# Fast paths, one per tag, for the types that fill profile buffers and pushes; the rest go
# through _decode_body. Each checks its bounds and raises FrameError like the general path.
_Handler = Callable[[bytes, int, int], tuple[Data, int]]


def _fixed_handler(t: DataType, fmt: struct.Struct) -> _Handler:
    size = fmt.size
    unpack = fmt.unpack_from

    def handler(buf: bytes, pos: int, depth: int) -> tuple[Data, int]:
        end = pos + size
        if end > len(buf):
            raise _truncated(t, pos)
        return Data(t, unpack(buf, pos)[0]), end

    return handler


def _octet_string(buf: bytes, pos: int, depth: int) -> tuple[Data, int]:
    if pos < len(buf) and buf[pos] < 0x80:
        start = pos + 1
        end = start + buf[pos]
    else:
        n, start = decode_length(buf, pos, "octet_string")
        end = start + n
    if end > len(buf):
        raise _truncated(DataType.OCTET_STRING, pos)
    return Data(_OCTET_STRING, bytes(buf[start:end])), end


def _sequence_handler(t: DataType) -> _Handler:
    rows = t == DataType.ARRAY  # an array of structures: rows of one shape, see _rows

    def handler(buf: bytes, pos: int, depth: int) -> tuple[Data, int]:
        if depth >= MAX_DEPTH:
            raise FrameError("data nested too deep", offset=pos, field="data")
        if pos < len(buf) and buf[pos] < 0x80:
            n = buf[pos]
            pos += 1
        else:
            n, pos = decode_length(buf, pos, t.name.lower())
        if n > len(buf) - pos:  # every item takes at least one byte (its tag)
            raise _truncated(t, pos)
        if rows and n > 1 and buf[pos] == 2:
            template = _row_template(buf, pos, depth + 1)
            if template is not None:
                return _rows(buf, pos, n, depth + 1, template)
        items: list[Data] = []
        append = items.append
        handlers = _HANDLERS
        fixed = _FIXED_UNPACK
        inner = depth + 1
        size = len(buf)
        for _ in range(n):
            try:
                tag = buf[pos]
            except IndexError:
                raise FrameError(
                    "data truncated: no type tag", offset=pos, field="data type"
                ) from None
            # Fixed-size numbers inline: they are most of a profile buffer.
            entry = fixed.get(tag)
            if entry is not None:
                member, width, unpack = entry
                end = pos + 1 + width
                if end > size:
                    raise _truncated(member, pos + 1)
                append(Data(member, unpack(buf, pos + 1)[0]))
                pos = end
                continue
            if tag == 9 and pos + 1 < size and buf[pos + 1] < 0x80:
                # A short octet-string (logical names, date-times) inline too.
                start = pos + 2
                end = start + buf[pos + 1]
                if end > size:
                    raise _truncated(_OCTET_STRING, pos + 1)
                append(Data(_OCTET_STRING, bytes(buf[start:end])))
                pos = end
                continue
            handler = handlers.get(tag)
            if handler is None:
                raise FrameError(f"unknown data type tag {tag}", offset=pos, field="data type")
            item, pos = handler(buf, pos + 1, inner)
            append(item)
        return Data(t, tuple(items)), pos

    return handler


# -- arrays of rows ----------------------------------------------------------------------------
# A profile buffer or a push's register list is an array of structures that all have the same
# shape: the same tags, counts and octet-string lengths, only the values differ. The first
# row's shape becomes a template: one struct format reading a whole row (its tags and lengths
# too) and a generated function building its Data. Each row whose tags and lengths are the
# template's is read in one unpack; any other row (or one running past the bytes) goes through
# the general path, which decodes it or raises the FrameError it always did.

_ROW_CODES: dict[int, str] = {
    DataType.DOUBLE_LONG: "i",
    DataType.DOUBLE_LONG_UNSIGNED: "I",
    DataType.BCD: "B",
    DataType.INTEGER: "b",
    DataType.LONG: "h",
    DataType.UNSIGNED: "B",
    DataType.LONG_UNSIGNED: "H",
    DataType.LONG64: "q",
    DataType.LONG64_UNSIGNED: "Q",
    DataType.ENUM: "B",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
    DataType.BOOLEAN: "?",
}
_ROW_SIZES = {t: struct.calcsize(">" + c) for t, c in _ROW_CODES.items()}
# A row of more values than this is read by the general path (templates are for rows).
_MAX_ROW_VALUES = 64
# Templates by row shape; a bounded memo (cleared when full), not state.
_MAX_TEMPLATES = 256
_TEMPLATES: dict[tuple[int, ...], _RowTemplate] = {}
_LAST_TEMPLATE: list[_RowTemplate | None] = [None]
# Bytes decoded (by decode/decode_all), spent on compiling templates: a compile costs about
# as much CPU as decoding _COMPILE_COST bytes the general way; the credit is capped.
_COMPILE_COST = 4096
_MAX_COMPILE_CREDIT = 256 * 1024
_COMPILE_CREDIT = [_MAX_COMPILE_CREDIT]


def _earn(decoded: int) -> None:
    credit = _COMPILE_CREDIT[0] + decoded
    _COMPILE_CREDIT[0] = credit if credit < _MAX_COMPILE_CREDIT else _MAX_COMPILE_CREDIT


@attrs.frozen(slots=True)
class _RowTemplate:
    depth: int
    size: int
    unpack: Callable[[bytes, int], tuple[Any, ...]]
    header: Callable[[tuple[Any, ...]], tuple[int, ...]]
    expected: tuple[int, ...]
    build: Callable[[tuple[Any, ...]], Data]


def _row_shape(buf: bytes, pos: int, depth: int) -> tuple[int, ...] | None:
    """The shape of the structure at ``pos``, decoded at ``depth``, as flat ints (2 count,
    a number's tag, 9 length, 0), or None unless it holds only numbers, booleans, short
    octet-strings, null-data and structures with short counts, within the bytes and depth."""
    shape: list[int] = []
    size = len(buf)
    remaining = [1]  # items left at each open structure
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            continue
        remaining[-1] -= 1
        if pos + 1 >= size or len(shape) > _MAX_ROW_VALUES:
            return None
        tag = buf[pos]
        if tag == 2:
            count = buf[pos + 1]
            if count >= 0x80 or depth + len(remaining) - 1 >= MAX_DEPTH:
                return None
            shape += (2, count)
            remaining.append(count)
            pos += 2
        elif tag in _ROW_SIZES:
            shape.append(tag)
            pos += 1 + _ROW_SIZES[tag]
        elif tag == 9:
            length = buf[pos + 1]
            if length >= 0x80:
                return None
            shape += (9, length)
            pos += 2 + length
        elif tag == 0:
            shape.append(0)
            pos += 1
        else:
            return None
    return tuple(shape) if pos <= size else None


def _compile_row(shape: tuple[int, ...], depth: int) -> _RowTemplate:
    codes = [">"]
    header: list[int] = []
    expected: list[int] = []
    names: dict[str, Any] = {"D": Data}
    fields = iter(shape)
    index = 0

    def field(code: str, value: int | None) -> int:
        nonlocal index
        codes.append(code)
        if value is not None:
            header.append(index)
            expected.append(value)
        index += 1
        return index - 1

    def expression() -> str:
        tag = next(fields)
        field("B", tag)
        names[f"T{tag}"] = DataType(tag)
        if tag == 2:
            count = next(fields)
            field("B", count)
            return f"D(T2, ({''.join(expression() + ', ' for _ in range(count))}))"
        if tag == 0:
            return "D(T0)"
        if tag == 9:
            length = next(fields)
            field("B", length)
            return f"D(T9, v[{field(f'{length}s', None)}])"
        return f"D(T{tag}, v[{field(_ROW_CODES[tag], None)}])"

    source = f"def build(v):\n    return {expression()}\n"
    exec(source, names)  # the source holds ints (tags, counts, lengths), no input text
    layout = struct.Struct("".join(codes))
    getter = operator.itemgetter(*header)  # a row is a structure: two header fields at least
    return _RowTemplate(
        depth, layout.size, layout.unpack_from, getter, tuple(expected), names["build"]
    )


def _row_template(buf: bytes, pos: int, depth: int) -> _RowTemplate | None:
    # The template used last fits most arrays (the same meter, the same profile again): its
    # unpack checks every tag, count and length of the first row, i.e. its whole shape.
    last = _LAST_TEMPLATE[0]
    if (
        last is not None
        and last.depth == depth
        and pos + last.size <= len(buf)
        and last.header(last.unpack(buf, pos)) == last.expected
    ):
        return last
    shape = _row_shape(buf, pos, depth)
    if shape is None:
        return None
    key = (depth, *shape)  # the depth decides whether nested rows are too deep
    template = _TEMPLATES.get(key)
    if template is None:
        # Compiling costs as much as decoding a few KiB: it is paid from the bytes decoded
        # before, so that input made of ever new shapes is not decoded slower than by the
        # general path by more than a small factor.
        if _COMPILE_CREDIT[0] < _COMPILE_COST:
            return None
        _COMPILE_CREDIT[0] -= _COMPILE_COST
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _TEMPLATES.clear()
        template = _TEMPLATES[key] = _compile_row(shape, depth)
    _LAST_TEMPLATE[0] = template
    return template


def _rows(buf: bytes, pos: int, n: int, depth: int, template: _RowTemplate) -> tuple[Data, int]:
    """An array's ``n`` elements from ``pos``, decoded at ``depth``: rows of the template's
    shape in one unpack each, any other element through the general path."""
    size = len(buf)
    width, unpack, header, expected, build = (
        template.size, template.unpack, template.header, template.expected, template.build
    )
    items: list[Data] = []
    append = items.append
    for _ in range(n):
        if pos + width <= size:
            values = unpack(buf, pos)
            if header(values) == expected:
                append(build(values))
                pos += width
                continue
        item, pos = _decode(buf, pos, depth)
        append(item)
    return Data(DataType.ARRAY, tuple(items)), pos


def _general_handler(t: DataType) -> _Handler:
    def handler(buf: bytes, pos: int, depth: int) -> tuple[Data, int]:
        return _decode_body(buf, pos, t, depth)

    return handler


def _decode_body(buf: bytes, pos: int, t: DataType, depth: int) -> tuple[Data, int]:
    fmt = _INT_FORMATS.get(t) or _FLOAT_FORMATS.get(t)
    if fmt is not None:
        end = pos + fmt.size
        if end > len(buf):
            raise _truncated(t, pos)
        return Data(t, fmt.unpack_from(buf, pos)[0]), end
    if t == DataType.OCTET_STRING or t == DataType.VISIBLE_STRING or t == DataType.UTF8_STRING:
        n, start = decode_length(buf, pos, t.name.lower())
        end = start + n
        if end > len(buf):
            raise _truncated(t, pos)
        raw = bytes(buf[start:end])
        if t == DataType.OCTET_STRING:
            return Data(t, raw), end
        try:
            text = raw.decode("utf-8") if t == DataType.UTF8_STRING else raw.decode("latin-1")
        except UnicodeDecodeError:
            raise FrameError("utf8-string is not UTF-8", offset=start, field="utf8-string")
        return Data(t, text), end
    if t == DataType.ARRAY or t == DataType.STRUCTURE:
        if depth >= MAX_DEPTH:
            raise FrameError("data nested too deep", offset=pos, field="data")
        n, pos = decode_length(buf, pos, t.name.lower())
        if n > len(buf) - pos:  # every item takes at least one byte (its tag)
            raise _truncated(t, pos)
        items = []
        for _ in range(n):
            item, pos = _decode(buf, pos, depth + 1)
            items.append(item)
        return Data(t, tuple(items)), pos
    if t == DataType.NULL_DATA or t == DataType.DONT_CARE:
        return Data(t), pos
    if t == DataType.BOOLEAN:
        if pos >= len(buf):
            raise _truncated(t, pos)
        return Data(t, buf[pos] != 0), pos + 1
    if t == DataType.BIT_STRING:
        nbits, start = decode_length(buf, pos, "bit-string")
        end = start + (nbits + 7) // 8
        if end > len(buf):
            raise _truncated(t, pos)
        if nbits == 0:
            return Data(t, ""), end
        bits = bin(int.from_bytes(buf[start:end], "big"))[2:].zfill((end - start) * 8)
        return Data(t, bits[:nbits]), end
    if t == DataType.DATE_TIME or t == DataType.DATE or t == DataType.TIME:
        size = _FIXED_SIZES[t]
        end = pos + size
        if end > len(buf):
            raise _truncated(t, pos)
        raw = bytes(buf[pos:end])
        value: CosemDateTime | CosemDate | CosemTime
        if t == DataType.DATE_TIME:
            value = CosemDateTime.decode(raw)
        elif t == DataType.DATE:
            value = CosemDate.decode(raw)
        else:
            value = CosemTime.decode(raw)
        return Data(t, value), end
    if t == DataType.COMPACT_ARRAY:
        desc, pos = _decode_description(buf, pos, depth)
        n, start = decode_length(buf, pos, "compact-array contents")
        end = start + n
        if end > len(buf):
            raise _truncated(t, pos)
        step = desc.min_size()
        if step == 0 and n:
            raise FrameError(
                "compact-array of empty elements with contents", offset=pos, field="compact-array"
            )
        if n:
            if n < step:
                raise FrameError(
                    f"compact-array contents of {n} bytes hold no element of {step} bytes",
                    offset=pos,
                    field="compact-array",
                )
            # Bounded before any element is built: values per element x most elements.
            values = desc.value_count() * (n // step)
            if values > MAX_COMPACT_VALUES_PER_BYTE * n + COMPACT_VALUES_ALLOWANCE:
                raise FrameError(
                    f"compact-array of {n} bytes would decode to {values} values",
                    offset=pos,
                    field="compact-array",
                )
        elements = []
        pos = start
        bounded = buf[:end]  # an element must not read past the contents
        while pos < end:
            element, pos = _decode_untagged(bounded, pos, desc, depth + 1)
            elements.append(element)
        return Data(t, CompactArray(desc, tuple(elements))), end
    raise FrameError(f"unknown data type tag {int(t)}", offset=pos - 1, field="data type")


def _decode_description(buf: bytes, pos: int, depth: int) -> tuple[TypeDescription, int]:
    if depth >= MAX_DEPTH:
        raise FrameError("type description nested too deep", offset=pos, field="compact-array")
    if pos >= len(buf):
        raise FrameError("type description truncated", offset=pos, field="compact-array")
    tag = buf[pos]
    if tag not in _KNOWN_TAGS or tag == DataType.COMPACT_ARRAY:
        raise FrameError(f"type description with tag {tag}", offset=pos, field="compact-array")
    t = _TAG_TYPES[tag]
    pos += 1
    if t == DataType.ARRAY:
        if pos + 2 > len(buf):
            raise FrameError("type description truncated", offset=pos, field="compact-array")
        count = int.from_bytes(buf[pos : pos + 2], "big")
        child, pos = _decode_description(buf, pos + 2, depth + 1)
        return TypeDescription(t, (child,), count), pos
    if t == DataType.STRUCTURE:
        n, pos = decode_length(buf, pos, "compact-array")
        if n > len(buf) - pos:
            raise FrameError("type description truncated", offset=pos, field="compact-array")
        children = []
        for _ in range(n):
            child, pos = _decode_description(buf, pos, depth + 1)
            children.append(child)
        return TypeDescription(t, tuple(children)), pos
    return TypeDescription(t), pos


def _decode_untagged(buf: bytes, pos: int, desc: TypeDescription, depth: int) -> tuple[Data, int]:
    if depth >= MAX_DEPTH:
        raise FrameError("data nested too deep", offset=pos, field="compact-array")
    if desc.type == DataType.ARRAY or desc.type == DataType.STRUCTURE:
        children = (
            desc.children if desc.type == DataType.STRUCTURE else ((desc.children[0],) * desc.count)
        )
        items = []
        for child in children:
            item, pos = _decode_untagged(buf, pos, child, depth + 1)
            items.append(item)
        return Data(desc.type, tuple(items)), pos
    return _decode_body(buf, pos, desc.type, depth)


# -- helpers for the COSEM layer --------------------------------------------------------------


def as_int(data: Data, field: str = "value") -> int:
    """An integer-typed value, or FrameError naming the field."""
    if data.type in _INT_FORMATS or data.type == DataType.BOOLEAN:
        return int(data.value)
    raise FrameError(f"{field}: expected an integer, got {data.type.name}", field=field)


def as_number(data: Data, field: str = "value") -> int | float:
    """A number-typed value, or FrameError naming the field."""
    if data.type in _NUMBER_TYPES:
        number: int | float = data.value
        return number
    raise FrameError(f"{field}: expected a number, got {data.type.name}", field=field)


def as_bytes(data: Data, field: str = "value") -> bytes:
    """An octet-string's bytes, or FrameError naming the field."""
    if data.type == DataType.OCTET_STRING:
        raw: bytes = data.value
        return raw
    raise FrameError(f"{field}: expected an octet-string, got {data.type.name}", field=field)


def as_datetime(data: Data, field: str = "value") -> CosemDateTime:
    """A date-time sent as octet-string(12) (the usual way) or as date-time; FrameError
    naming the field for anything else."""
    if data.type == DataType.DATE_TIME:
        value: CosemDateTime = data.value
        return value
    if data.type == DataType.OCTET_STRING and len(data.value) == 12:
        return CosemDateTime.decode(data.value)
    raise FrameError(f"{field}: expected a date-time, got {data.type.name}", field=field)


def is_number(data: Data) -> bool:
    return data.type in _NUMBER_TYPES


_OCTET_STRING = DataType.OCTET_STRING
_HANDLERS: dict[int, _Handler] = {t: _general_handler(DataType(t)) for t in _KNOWN_TAGS}
_HANDLERS.update({t: _fixed_handler(DataType(t), f) for t, f in _INT_FORMATS.items()})
_HANDLERS.update({t: _fixed_handler(DataType(t), f) for t, f in _FLOAT_FORMATS.items()})
_HANDLERS[DataType.OCTET_STRING] = _octet_string
_HANDLERS[DataType.ARRAY] = _sequence_handler(DataType.ARRAY)
_HANDLERS[DataType.STRUCTURE] = _sequence_handler(DataType.STRUCTURE)
_FIXED_UNPACK: dict[int, tuple[DataType, int, Callable[..., tuple[Any, ...]]]] = {
    t: (DataType(t), f.size, f.unpack_from) for t, f in (_INT_FORMATS | _FLOAT_FORMATS).items()
}
