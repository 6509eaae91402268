"""The data formats of Q/GDW 1376.1 appendix A (A.1 to A.28) as one table: each format's size
and layout, decoded into Python values and encoded back.

Numbers are BCD sent low byte first. Signed formats keep the sign in the top bit of the
last (most significant) byte. A value whose bytes are all ``EE`` is "no data" (the
standard's fill for an item the terminal does not have) and decodes to None; None encodes
to ``EE`` bytes. Times are the terminal's local wall clock, decoded to naive ``datetime``
(A.15; A.1 as a ``Clock`` that keeps its weekday), ``date`` (A.20, A.21) or ``TimeFields``
for the partial ones; the protocol edge
(fep.protocols.gw3761.records) gives them the concentrator's time zone.

Decimal values keep the format's decimal places (``Decimal("1234.5600")`` for A.14), so a
decoded value encodes back to the same bytes. A.2 and A.3 carry their own power of ten:
the decoded ``Decimal`` keeps it as its exponent (``Decimal("1.23E+3")``).

Decoding raises FrameError for bytes that do not fit the format, nothing else (fuzzed by
tests/fuzz); encoding raises ValueError for a value the format cannot hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

import attrs

from fep.errors import FrameError

NO_DATA: Final = 0xEE


@attrs.frozen
class Clock:
    """A.1: a terminal's calendar clock with the weekday it gives (1 Monday .. 7 Sunday, 0
    not given), kept so the bytes encode back as they came."""

    time: datetime
    weekday: int = 0

    @classmethod
    def of(cls, when: datetime) -> Clock:
        """The clock a terminal shows at ``when`` (naive local time), weekday filled in."""
        return cls(when.replace(microsecond=0, tzinfo=None), when.isoweekday())


@attrs.frozen
class TimeFields:
    """A time given in parts (the formats that carry no year, or no date): the fields the
    format has, the others None."""

    month: int | None = None
    day: int | None = None
    hour: int | None = None
    minute: int | None = None
    second: int | None = None


def _bcd_byte(byte: int, field: str, offset: int) -> int:
    high, low = byte >> 4, byte & 0x0F
    if high > 9 or low > 9:
        raise FrameError(f"0x{byte:02X} is not BCD", offset=offset, field=field)
    return high * 10 + low


def _to_bcd(n: int) -> int:
    if not 0 <= n <= 99:
        raise ValueError(f"{n} does not fit two BCD digits")
    return (n // 10) << 4 | n % 10


def _digits(raw: bytes, name: str, offset: int) -> int:
    """The BCD digits of ``raw`` (low byte first) as an integer."""
    value = 0
    for i, byte in enumerate(reversed(raw)):
        value = value * 100 + _bcd_byte(byte, name, offset + len(raw) - 1 - i)
    return value


def _bcd_bytes(n: int, size: int) -> bytes:
    if n < 0 or n >= 100**size:
        raise ValueError(f"{n} does not fit {2 * size} BCD digits")
    out = bytearray()
    for _ in range(size):
        n, pair = divmod(n, 100)
        out.append(_to_bcd(pair))
    return bytes(out)


@attrs.frozen
class Format:
    """One data format of appendix A: ``name`` (``"A.14"``), ``size`` in bytes, ``kind``
    (``number``, ``signed``, ``digits``, ``time``, ``clock``, ``a2``, ``a3``), ``decimals``
    for numbers,
    ``fields`` for times (wire order, from: ``Y M D h m s W`` where ``W`` is A.1's
    weekday-and-month byte), ``unit`` as the standard prints it and its ``layout`` text."""

    name: str
    size: int
    kind: str
    layout: str
    decimals: int = 0
    fields: str = ""
    unit: str = ""

    def decode(self, raw: bytes, offset: int = 0) -> Any:
        """The value of exactly ``size`` bytes (None for EE fill)."""
        if len(raw) != self.size:
            raise FrameError(
                f"{self.name} is {self.size} bytes, got {len(raw)}", offset=offset, field=self.name
            )
        if all(b == NO_DATA for b in raw):
            return None
        if self.kind == "number":
            return Decimal(_digits(raw, self.name, offset)).scaleb(-self.decimals)
        if self.kind == "signed":
            last = raw[-1]
            negative = bool(last & 0x80)
            magnitude = _digits(raw[:-1] + bytes([last & 0x7F]), self.name, offset)
            value = Decimal(magnitude).scaleb(-self.decimals)
            # copy_negate keeps -0 signed as the wire has it, so it encodes back the same.
            return value.copy_negate() if negative else value
        if self.kind == "digits":
            _digits(raw, self.name, offset)  # BCD check
            return bytes(reversed(raw)).hex()
        if self.kind == "time":
            return self._decode_time(raw, offset)
        if self.kind == "clock":
            when = self._decode_time(raw, offset)
            return Clock(when, raw[4] >> 5)
        if self.kind == "a2":
            return _decode_a2(raw, offset)
        if self.kind == "a3":
            return _decode_a3(raw, offset)
        raise AssertionError(self.kind)

    def encode(self, value: Any) -> bytes:
        """The ``size`` bytes of ``value`` (None: EE fill)."""
        if value is None:
            return bytes([NO_DATA]) * self.size
        if self.kind == "number":
            n = _scaled(value, self.decimals, self.name)
            return _bcd_bytes(n, self.size)
        if self.kind == "signed":
            d = Decimal(value)
            n = _scaled(abs(d), self.decimals, self.name)
            raw = bytearray(_bcd_bytes(n, self.size))
            if raw[-1] & 0x80:
                raise ValueError(f"{value} is too large for {self.name}")
            if d.is_signed():
                raw[-1] |= 0x80
            return bytes(raw)
        if self.kind == "digits":
            text = str(value)
            if len(text) != 2 * self.size or not text.isdigit():
                raise ValueError(f"{self.name} is {2 * self.size} decimal digits: {value!r}")
            return bytes.fromhex(text)[::-1]
        if self.kind == "time":
            return self._encode_time(value)
        if self.kind == "clock":
            clock = value if isinstance(value, Clock) else Clock.of(value)
            raw = bytearray(self._encode_time(clock.time))
            raw[4] = (raw[4] & 0x1F) | (clock.weekday & 7) << 5
            return bytes(raw)
        if self.kind == "a2":
            return _encode_a2(Decimal(value))
        if self.kind == "a3":
            return _encode_a3(Decimal(value))
        raise AssertionError(self.kind)

    def _decode_time(self, raw: bytes, offset: int) -> Any:
        parts: dict[str, int] = {}
        for i, (field, byte) in enumerate(zip(self.fields, raw, strict=True)):
            if field == "W":
                # A.1: weekday in D7-D5 (0: not given), month in D4-D0.
                parts["M"] = _bcd_byte(byte & 0x1F, self.name, offset + i)
            else:
                parts[field] = _bcd_byte(byte, self.name, offset + i)
        try:
            if "Y" in parts and "h" in parts:
                return datetime(
                    2000 + parts["Y"], parts["M"], parts["D"], parts["h"], parts["m"],
                    parts.get("s", 0),
                )
            if "Y" in parts:
                return date(2000 + parts["Y"], parts["M"], parts.get("D", 1))
            fields = TimeFields(
                parts.get("M"), parts.get("D"), parts.get("h"), parts.get("m"), parts.get("s")
            )
            _check_fields(fields)
            return fields
        except ValueError as e:
            raise FrameError(f"{self.name}: {e}", offset=offset, field=self.name) from None

    def _encode_time(self, value: Any) -> bytes:
        if isinstance(value, datetime):
            parts = {"Y": value.year - 2000, "M": value.month, "D": value.day,
                     "h": value.hour, "m": value.minute, "s": value.second}  # fmt: skip
        elif isinstance(value, date):
            parts = {"Y": value.year - 2000, "M": value.month, "D": value.day}
        elif isinstance(value, TimeFields):
            parts = {k: v for k, v in zip("MDhms", attrs.astuple(value), strict=True)
                     if v is not None}  # fmt: skip
        else:
            raise ValueError(f"{self.name} takes a datetime, date or TimeFields: {value!r}")
        out = bytearray()
        for field in self.fields:
            if field == "W":
                out.append(_to_bcd(parts["M"]))
                continue
            if field not in parts:
                raise ValueError(f"{self.name} needs field {field} of {value!r}")
            out.append(_to_bcd(parts[field]))
        return bytes(out)


def _check_fields(fields: TimeFields) -> None:
    limits = (("month", 1, 12), ("day", 1, 31), ("hour", 0, 23), ("minute", 0, 59),
              ("second", 0, 59))  # fmt: skip
    for name, low, high in limits:
        v = getattr(fields, name)
        if v is not None and not low <= v <= high:
            raise ValueError(f"{name} {v} out of range")


def _scaled(value: Any, decimals: int, name: str) -> int:
    d = Decimal(value).scaleb(decimals)
    if d != d.to_integral_value():
        raise ValueError(f"{value} has more than {decimals} decimals for {name}")
    return int(d)


# A.2: ±XXX x 10^(4-G), G in D7-D5 of byte 2, sign in D4, hundreds in D3-D0.
def _decode_a2(raw: bytes, offset: int) -> Decimal:
    g = raw[1] >> 5
    negative = bool(raw[1] & 0x10)
    hundreds = raw[1] & 0x0F
    if hundreds > 9:
        raise FrameError("A.2 hundreds digit is not BCD", offset=offset + 1, field="A.2")
    n = hundreds * 100 + _bcd_byte(raw[0], "A.2", offset)
    return Decimal((1 if negative else 0, tuple(int(c) for c in str(n)), 4 - g))


def _encode_a2(value: Decimal) -> bytes:
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    n = int("".join(map(str, digits)) or "0")
    while n >= 1000 and n % 10 == 0:
        n //= 10
        exponent += 1
    while exponent > 4 and n < 100:
        n *= 10
        exponent -= 1
    if n >= 1000 or not -3 <= exponent <= 4:
        raise ValueError(f"{value} does not fit A.2 (±XXX x 10^-3..10^4)")
    g = 4 - exponent
    return bytes([_to_bcd(n % 100), g << 5 | (0x10 if sign else 0) | n // 100])


# A.3: ±XXXXXXX with G in D6 of byte 4 (0: kWh or li, 1: MWh or yuan), sign in D4.
def _decode_a3(raw: bytes, offset: int) -> Decimal:
    top = raw[3]
    if top & 0x0F > 9:
        raise FrameError("A.3 top digit is not BCD", offset=offset + 3, field="A.3")
    n = (top & 0x0F) * 1_000_000 + _digits(raw[:3], "A.3", offset)
    negative = bool(top & 0x10)
    exponent = 3 if top & 0x40 else 0
    return Decimal((1 if negative else 0, tuple(int(c) for c in str(n)), exponent))


def _encode_a3(value: Decimal) -> bytes:
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    n = int("".join(map(str, digits)) or "0")
    if exponent not in (0, 3):
        n = int(abs(value).scaleb(-3 if exponent > 3 else 0))
        exponent = 3 if exponent > 3 else 0
    if n >= 10_000_000:
        raise ValueError(f"{value} does not fit A.3 (±XXXXXXX)")
    raw = bytearray(_bcd_bytes(n % 1_000_000, 3))
    raw.append((0x40 if exponent == 3 else 0) | (0x10 if sign else 0) | n // 1_000_000)
    return bytes(raw)


_TABLE: tuple[Format, ...] = (
    Format("A.1", 6, "clock", "ss mm hh DD (week|MM) YY", fields="smhDWY"),
    Format("A.2", 2, "a2", "±XXX x 10^G"),
    Format("A.3", 4, "a3", "±XXXXXXX kWh (G=0) or MWh (G=1)", unit="kWh"),
    Format("A.4", 1, "signed", "±XX (S0: up 0 / down 1)", unit="%"),
    Format("A.5", 2, "signed", "±XXX.X", decimals=1),
    Format("A.6", 2, "signed", "±XX.XX", decimals=2),
    Format("A.7", 2, "number", "XXX.X", decimals=1, unit="V"),
    Format("A.8", 2, "number", "XXXX"),
    Format("A.9", 3, "signed", "±XX.XXXX", decimals=4, unit="kW"),
    Format("A.10", 3, "number", "XXXXXX"),
    Format("A.11", 4, "number", "XXXXXX.XX", decimals=2, unit="kWh"),
    Format("A.12", 6, "digits", "XXXXXXXXXXXX (address, number)"),
    Format("A.13", 4, "number", "XXXX.XXXX", decimals=4, unit="kWh"),
    Format("A.14", 5, "number", "XXXXXX.XXXX", decimals=4, unit="kWh"),
    Format("A.15", 5, "time", "mm hh DD MM YY", fields="mhDMY"),
    Format("A.16", 4, "time", "ss mm hh DD", fields="smhD"),
    Format("A.17", 4, "time", "mm hh DD MM", fields="mhDM"),
    Format("A.18", 3, "time", "mm hh DD", fields="mhD"),
    Format("A.19", 2, "time", "mm hh", fields="mh"),
    Format("A.20", 3, "time", "DD MM YY", fields="DMY"),
    Format("A.21", 2, "time", "MM YY", fields="MY"),
    Format("A.22", 1, "number", "X.X", decimals=1),
    Format("A.23", 3, "number", "XX.XXXX", decimals=4, unit="kW"),
    Format("A.24", 2, "time", "hh DD", fields="hD"),
    Format("A.25", 3, "signed", "±XXX.XXX", decimals=3, unit="A"),
    Format("A.26", 2, "number", "X.XXX", decimals=3),
    Format("A.27", 4, "number", "XXXXXXXX"),
    # A.28 is a percentage in the 2013 edition (voltage compliance rates); its layout here
    # (three BCD bytes, two decimals) is taken from terminal sources, not the standard's text.
    Format("A.28", 3, "number", "XXXX.XX", decimals=2, unit="%"),
)

FORMATS: Mapping[str, Format] = MappingProxyType({f.name: f for f in _TABLE})


def fmt(name: str) -> Format:
    """The format called ``name`` (``"A.14"``)."""
    return FORMATS[name]


def decode(name: str, raw: bytes, offset: int = 0) -> Any:
    return FORMATS[name].decode(raw, offset)


def encode(name: str, value: Any) -> bytes:
    return FORMATS[name].encode(value)


__all__ = ["FORMATS", "Clock", "NO_DATA", "Format", "TimeFields", "decode", "encode", "fmt"]
