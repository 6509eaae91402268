"""The records fep moves: OBIS codes, units, readings, interval blocks, events, meters.

Every record is an attrs frozen, slotted class. Times are aware ``datetime`` in UTC;
values are already scaled at decode (``value`` is in ``10**scaler`` units of ``unit``, so
1234.5 kWh is ``value=Decimal("1234.5"), unit=Wh, scaler=3``).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import attrs

# ---------------------------------------------------------------------------
# OBIS codes (IEC 62056-6-1)
# ---------------------------------------------------------------------------

# Letters allowed for value groups C and D in readouts (IEC 62056-6-1, 7.3.2 / 7.4).
_OBIS_LETTERS = {"C": 96, "F": 97, "L": 98, "P": 99}
_OBIS_FULL = re.compile(
    r"^(?:(?P<a>\d{1,3})-(?P<b>\d{1,3}):)?"
    r"(?P<c>\d{1,3}|[CFLP])\.(?P<d>\d{1,3}|[CFLP])(?:\.(?P<e>\d{1,3}))?"
    r"(?:[*&.](?P<f>\d{1,3}))?$"
)


def _obis_group(value: int) -> int:
    if not 0 <= value <= 255:
        raise ValueError(f"OBIS value group out of range 0..255: {value}")
    return value


@attrs.frozen(order=True, cache_hash=True)
class ObisCode:
    """A six-group OBIS code ``A-B:C.D.E*F`` (each group 0..255)."""

    a: int = attrs.field(converter=_obis_group)
    b: int = attrs.field(converter=_obis_group)
    c: int = attrs.field(converter=_obis_group)
    d: int = attrs.field(converter=_obis_group)
    e: int = attrs.field(converter=_obis_group)
    f: int = attrs.field(default=255, converter=_obis_group)

    @classmethod
    def parse(cls, text: str, *, a: int = 1, b: int = 0, f: int = 255) -> ObisCode:
        """Parse ``A-B:C.D.E*F``, ``A-B:C.D.E``, the readout short form ``C.D.E`` (``a``,
        ``b``, ``f`` fill the missing groups), ``C.D.E*F``/``C.D.E&F``, ``C.D``
        (E = 0, as in the ``F.F`` error register) and the dotted six groups ``A.B.C.D.E.F``;
        letters C, F, L, P stand for 96..99. Codes are immutable: the parse of a short text is
        kept (a readout names the same codes again and again)."""
        if cls is ObisCode and len(text) <= _OBIS_CACHED_TEXT:
            return _parse_obis_cached(text, a, b, f)
        return cls._parse(text, a, b, f)

    @classmethod
    def _parse(cls, text: str, a: int, b: int, f: int) -> ObisCode:
        dotted = text.strip().split(".")
        if len(dotted) == 6 and all(group.isdigit() for group in dotted):
            # The six-group dotted form of DLMS tools: 1.0.1.8.0.255
            return cls(*(int(group) for group in dotted))
        m = _OBIS_FULL.match(text.strip())
        if m is None:
            raise ValueError(f"not an OBIS code: {text!r}")

        def num(group: str) -> int:
            return _OBIS_LETTERS[group] if group in _OBIS_LETTERS else int(group)

        if m["a"] is not None:
            a, b = int(m["a"]), int(m["b"])
        return cls(
            a,
            b,
            num(m["c"]),
            num(m["d"]),
            int(m["e"]) if m["e"] is not None else 0,
            int(m["f"]) if m["f"] is not None else f,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ObisCode:
        """The 6-byte form used in COSEM logical names."""
        if len(data) != 6:
            raise ValueError(f"an OBIS code is 6 bytes, got {len(data)}")
        if cls is ObisCode and type(data) is bytes:
            return _obis_from_bytes_cached(data)
        return cls(*data)

    def to_bytes(self) -> bytes:
        return bytes((self.a, self.b, self.c, self.d, self.e, self.f))

    def __str__(self) -> str:
        return f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}*{self.f}"


# Parsed codes, kept: bounded caches of pure functions (texts longer than any OBIS code's
# are parsed each time, so a hostile line cannot fill the cache with large keys).
_OBIS_CACHED_TEXT = 32


@functools.lru_cache(maxsize=4096)
def _parse_obis_cached(text: str, a: int, b: int, f: int) -> ObisCode:
    return ObisCode._parse(text, a, b, f)


@functools.lru_cache(maxsize=4096)
def _obis_from_bytes_cached(data: bytes) -> ObisCode:
    return ObisCode(*data)


# ---------------------------------------------------------------------------
# Units (DLMS Blue Book, class 3 scaler_unit enumeration)
# ---------------------------------------------------------------------------


@attrs.frozen
class Unit:
    """One entry of the DLMS unit table: its enumeration code, quantity name and symbol."""

    code: int
    name: str
    symbol: str

    @classmethod
    def by_code(cls, code: int) -> Unit:
        try:
            return UNITS[code]
        except KeyError:
            raise ValueError(f"unknown DLMS unit code {code}") from None

    @classmethod
    def parse_symbol(cls, text: str) -> tuple[Unit, int]:
        """Map a readout unit such as ``kWh``, ``kvarh``, ``V`` or ``MWh`` to a DLMS unit and
        the decimal scaler of its SI prefix: ``kWh`` -> (Wh, 3)."""
        key = text.strip()
        if not key:
            raise ValueError("empty unit")
        # Case matters first (A is ampere, a is year; S is siemens, s is second); readouts'
        # own spellings (KWH, kVArh) are tried case-insensitively after that.
        for table in (_UNITS_BY_EXACT, _UNITS_BY_SYMBOL):
            fold = table is _UNITS_BY_SYMBOL
            direct = table.get(key.lower() if fold else key)
            if direct is not None:
                return direct, 0
            scaler = _SI_PREFIXES.get(key[0])
            if scaler is not None and len(key) > 1:
                unit = table.get(key[1:].lower() if fold else key[1:])
                if unit is not None:
                    return unit, scaler
        raise ValueError(f"unknown unit {text!r}")


_UNIT_TABLE: tuple[tuple[int, str, str], ...] = (
    (1, "time (year)", "a"),
    (2, "time (month)", "mo"),
    (3, "time (week)", "wk"),
    (4, "time (day)", "d"),
    (5, "time (hour)", "h"),
    (6, "time (minute)", "min"),
    (7, "time (second)", "s"),
    (8, "phase angle", "°"),
    (9, "temperature", "°C"),
    (10, "local currency", "currency"),
    (11, "length", "m"),
    (12, "speed", "m/s"),
    (13, "volume", "m³"),
    (14, "corrected volume", "m³(corr)"),
    (15, "volume flux", "m³/h"),
    (16, "corrected volume flux", "m³/h(corr)"),
    (17, "volume flux per day", "m³/d"),
    (18, "corrected volume flux per day", "m³/d(corr)"),
    (19, "volume (litre)", "l"),
    (20, "mass", "kg"),
    (21, "force", "N"),
    (22, "energy (newton metre)", "Nm"),
    (23, "pressure", "Pa"),
    (24, "pressure (bar)", "bar"),
    (25, "energy (joule)", "J"),
    (26, "thermal power", "J/h"),
    (27, "active power", "W"),
    (28, "apparent power", "VA"),
    (29, "reactive power", "var"),
    (30, "active energy", "Wh"),
    (31, "apparent energy", "VAh"),
    (32, "reactive energy", "varh"),
    (33, "current", "A"),
    (34, "electrical charge", "C"),
    (35, "voltage", "V"),
    (36, "electric field strength", "V/m"),
    (37, "capacitance", "F"),
    (38, "resistance", "Ω"),
    (39, "resistivity", "Ωm²/m"),
    (40, "magnetic flux", "Wb"),
    (41, "magnetic flux density", "T"),
    (42, "magnetic field strength", "A/m"),
    (43, "inductance", "H"),
    (44, "frequency", "Hz"),
    (45, "active energy meter constant", "1/(Wh)"),
    (46, "reactive energy meter constant", "1/(varh)"),
    (47, "apparent energy meter constant", "1/(VAh)"),
    (48, "volt-squared hours", "V²h"),
    (49, "ampere-squared hours", "A²h"),
    (50, "mass flux", "kg/s"),
    (51, "conductance", "S"),
    (52, "temperature (kelvin)", "K"),
    (53, "volt-squared hour meter constant", "1/(V²h)"),
    (54, "ampere-squared hour meter constant", "1/(A²h)"),
    (55, "volume meter constant", "1/m³"),
    (56, "percentage", "%"),
    (57, "ampere-hours", "Ah"),
    (60, "energy per volume", "Wh/m³"),
    (61, "calorific value", "J/m³"),
    (62, "molar fraction", "Mol %"),
    (63, "mass density", "g/m³"),
    (64, "dynamic viscosity", "Pa s"),
    (65, "specific energy", "J/kg"),
    (66, "pressure (gram per square centimetre)", "g/cm²"),
    (67, "pressure (atmosphere)", "atm"),
    (70, "signal strength (dBm)", "dBm"),
    (71, "signal strength (dBµV)", "dBµV"),
    (72, "logarithmic ratio", "dB"),
    (253, "reserved", "reserved"),
    (254, "other unit", "other"),
    (255, "count (no unit)", ""),
)

UNITS: Mapping[int, Unit] = MappingProxyType(
    {code: Unit(code, name, symbol) for code, name, symbol in _UNIT_TABLE}
)
_UNITS_BY_EXACT: dict[str, Unit] = {}
for _u in UNITS.values():
    if _u.symbol:
        _UNITS_BY_EXACT.setdefault(_u.symbol, _u)
_UNITS_BY_SYMBOL: dict[str, Unit] = {}
for _u in UNITS.values():
    if _u.symbol and _u.symbol.lower() not in _UNITS_BY_SYMBOL:
        _UNITS_BY_SYMBOL[_u.symbol.lower()] = _u
# Spellings seen in readouts.
_UNITS_BY_SYMBOL.update(
    {
        "var": UNITS[29],
        "varh": UNITS[32],
        "vah": UNITS[31],
        "va": UNITS[28],
        "deg": UNITS[8],
        "degc": UNITS[9],
        "m3": UNITS[13],
        "m3/h": UNITS[15],
        "ohm": UNITS[38],
        "hz": UNITS[44],
    }
)
_SI_PREFIXES = {"k": 3, "K": 3, "M": 6, "G": 9, "m": -3}
_PREFIX_BY_SCALER = {3: "k", 6: "M", 9: "G", -3: "m", 0: ""}


def unit_text(unit: Unit | None, scaler: int = 0) -> str | None:
    """The display form of a unit with its prefix scaler: (Wh, 3) -> ``kWh``."""
    if unit is None:
        return None
    prefix = _PREFIX_BY_SCALER.get(scaler)
    if prefix is None:
        return f"10^{scaler} {unit.symbol}".strip()
    return prefix + unit.symbol


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


class Quality(enum.IntFlag):
    """Quality flags kept with a value (a subset shared by every protocol)."""

    OK = 0
    ESTIMATED = 1
    OVERFLOW = 2
    CLOCK_INVALID = 4
    CLOCK_ADJUSTED = 8
    DST = 16
    POWER_DOWN = 32
    MISSING = 64
    DATA_NOT_VALID = 128
    COUNTER_RESET = 256
    # Set by validation (fep.analysis), never by a meter: the value failed a rule.
    SUSPECT = 512


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is UTC:  # already UTC (astimezone would return it unchanged)
        return value
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: fep keeps times in UTC")
    return value.astimezone(UTC)


def _utc_required(value: datetime) -> datetime:
    result = _utc(value)
    assert result is not None
    return result


def utcnow() -> datetime:
    return datetime.now(UTC)


Value = Decimal | int | str | bool | None


@attrs.frozen
class Reading:
    """One value of one quantity of one meter, as the meter reported it."""

    meter: str
    obis: ObisCode
    value: Value
    unit: Unit | None = None
    scaler: int = 0
    meter_time: datetime | None = attrs.field(default=None, converter=_utc)
    received_time: datetime = attrs.field(factory=utcnow, converter=_utc_required)
    quality: Quality = Quality.OK
    source: str = ""
    # The protocol's own name for the quantity where it differs from OBIS (a DL/T 645 DI,
    # a C12.19 table item), kept so nothing is lost in the mapping.
    native_id: str | None = None

    @property
    def time(self) -> datetime:
        """The time this reading is filed under: the meter's, else when it was received."""
        return self.meter_time if self.meter_time is not None else self.received_time

    @property
    def unit_text(self) -> str | None:
        return unit_text(self.unit, self.scaler)


def _trusted_constructor(cls: type) -> Any:
    """A function building ``cls`` (an attrs slotted class) from every field's value,
    positionally in field order, with no converter, validator or default: each slot set
    through its descriptor. For decoders only, with values of the types the class's
    converters would give unchanged (times UTC-aware, ``tzinfo is UTC``, or None)."""
    names = [f.name for f in attrs.fields(cls)]
    scope: dict[str, object] = {"_new": object.__new__, "_cls": cls}
    for name in names:
        scope[f"_set_{name}"] = cls.__dict__[name].__set__
    body = "".join(f"    _set_{n}(self, {n})\n" for n in names)
    code = f"def trusted({', '.join(names)}):\n    self = _new(_cls)\n{body}    return self\n"
    exec(code, scope)  # fixed text made from the class's own field names
    return scope["trusted"]


# Reading(...) without its converters (about 40 % cheaper), for decoders that already hold
# UTC times (``tzinfo is UTC``) or None and a Quality: every field, positionally, in order
# (meter, obis, value, unit, scaler, meter_time, received_time, quality, source, native_id).
# The result equals the Reading(...) of the same values. tests/test_model.py checks both.
trusted_reading: Callable[
    [str, ObisCode, Value, Unit | None, int, datetime | None, datetime, Quality, str,
     str | None],
    Reading,
] = _trusted_constructor(Reading)


@attrs.frozen
class IntervalBlock:
    """A run of load-profile intervals of one quantity: ``values[i]`` covers
    ``[start + i*period, start + (i+1)*period)``."""

    meter: str
    obis: ObisCode
    start: datetime = attrs.field(converter=_utc_required)
    period: timedelta
    values: tuple[Value, ...]
    statuses: tuple[Quality, ...] = ()
    unit: Unit | None = None
    scaler: int = 0
    received_time: datetime = attrs.field(factory=utcnow, converter=_utc_required)
    source: str = ""

    def __attrs_post_init__(self) -> None:
        if self.period <= timedelta(0):
            raise ValueError("interval period must be positive")
        if self.statuses and len(self.statuses) != len(self.values):
            raise ValueError("statuses and values differ in length")

    def intervals(self) -> list[tuple[datetime, Value, Quality]]:
        """(interval start, value, status) for every interval of the block."""
        return [
            (
                self.start + i * self.period,
                v,
                self.statuses[i] if self.statuses else Quality.OK,
            )
            for i, v in enumerate(self.values)
        ]


class EventKind(enum.StrEnum):
    """The common kinds protocol-specific event codes are mapped to."""

    POWER_OUTAGE = "power-outage"
    POWER_RESTORED = "power-restored"
    COVER_OPEN = "cover-open"
    TERMINAL_COVER_OPEN = "terminal-cover-open"
    MAGNETIC_TAMPER = "magnetic-tamper"
    TILT = "tilt"
    CLOCK_DEVIATION = "clock-deviation"
    CLOCK_SET = "clock-set"
    REVERSE_ENERGY = "reverse-energy"
    PHASE_LOSS = "phase-loss"
    OVER_VOLTAGE = "over-voltage"
    UNDER_VOLTAGE = "under-voltage"
    OVER_CURRENT = "over-current"
    PHASE_IMBALANCE = "phase-imbalance"
    COMMUNICATION_FAILURE = "communication-failure"
    METER_ERROR = "meter-error"
    TAMPER = "tamper"
    LOW_BATTERY = "low-battery"
    OTHER = "other"


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    INFO = "info"


@attrs.frozen
class MeterEvent:
    """Something a meter reported as having happened at a time."""

    meter: str
    code: str
    kind: EventKind
    severity: Severity
    time: datetime = attrs.field(converter=_utc_required)
    text: str = ""
    received_time: datetime = attrs.field(factory=utcnow, converter=_utc_required)
    source: str = ""


Record = Reading | IntervalBlock | MeterEvent


# Metadata keys whose values are secrets: kept out of reprs, so out of logs and errors.
SECRET_KEYS = ("password", "_ek", "_ak", "key", "secret", "_kek", "pin")


def is_secret(key: str) -> bool:
    return any(part in key.lower() for part in SECRET_KEYS)


def _redacted(value: Mapping[str, str]) -> str:
    shown = {k: ("***" if is_secret(k) else v) for k, v in value.items()}
    return repr(shown)


def _frozen_mapping(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen
class Meter:
    """A meter the head end knows: how to reach it and how to speak to it."""

    id: str
    protocol: str
    route: str
    serial: str | None = None
    # Device address on the route (IEC 62056-21 device address, HDLC/DL/T 645 address).
    address: str | None = None
    # A reference to credentials kept elsewhere (key store entry), never the secret itself.
    credentials: str | None = None
    metadata: Mapping[str, str] = attrs.field(
        factory=dict, converter=_frozen_mapping, eq=False, hash=False, repr=_redacted
    )
