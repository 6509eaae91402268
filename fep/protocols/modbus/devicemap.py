"""Register maps of pulse recorder models: where a model keeps its clock, pulse counters,
voltages, status bits, history buffer and event log, loaded from ``etc/devices/NAME.ini``
and validated with errors naming the file, section and key.

A map names registers by table (``coils``, ``discrete``, ``holding``, ``input``) and
address (0-based, as on the wire), values by type (``u16``, ``s16``, ``u32``, ``s32``;
32-bit values take two registers, high word first unless ``word_order = little``), scale
and unit. See docs/protocols/modbus.md for every key; etc/devices/ holds two examples.
Sans-IO: no Twisted.
"""

from __future__ import annotations

import configparser
import enum
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from fep.errors import ConfigError
from fep.model import EventKind, ObisCode, Severity, Unit

# Where ``modbus_device_map = NAME`` is looked for, after a path given as such.
PROJECT_DEVICES: Final = Path(__file__).resolve().parents[3] / "etc" / "devices"


class Table(enum.StrEnum):
    COILS = "coils"
    DISCRETE = "discrete"
    HOLDING = "holding"
    INPUT = "input"

    @property
    def bits(self) -> bool:
        return self in (Table.COILS, Table.DISCRETE)


TYPE_WIDTH: Final = {"u16": 1, "s16": 1, "u32": 2, "s32": 2, "time32": 2}
STATUS_NAMES: Final = ("door", "key", "tamper", "power_fail", "low_battery")

# What each event name of an event log means, and how bad it is unless the map says.
EVENT_NAMES: Final[dict[str, tuple[EventKind, Severity]]] = {
    "power-loss": (EventKind.POWER_OUTAGE, Severity.MAJOR),
    "power-restore": (EventKind.POWER_RESTORED, Severity.INFO),
    "door-open": (EventKind.COVER_OPEN, Severity.MAJOR),
    "door-close": (EventKind.OTHER, Severity.INFO),
    "key-on": (EventKind.OTHER, Severity.MINOR),
    "key-off": (EventKind.OTHER, Severity.INFO),
    "tamper": (EventKind.TAMPER, Severity.CRITICAL),
    "low-battery": (EventKind.LOW_BATTERY, Severity.MINOR),
    "battery-ok": (EventKind.OTHER, Severity.INFO),
    "clock-set": (EventKind.CLOCK_SET, Severity.INFO),
    "counter-reset": (EventKind.METER_ERROR, Severity.MAJOR),
}


@attrs.frozen
class Register:
    """A value in one table: ``count`` registers (or bits) from ``address``."""

    table: Table
    address: int
    type: str = "u16"

    @property
    def count(self) -> int:
        return TYPE_WIDTH[self.type] if not self.table.bits else 1


@attrs.frozen
class ScaledValue:
    """A measured value (supply or battery voltage): raw * ``scale`` in ``unit``."""

    name: str
    register: Register
    scale: Decimal
    unit: Unit | None
    scaler: int
    obis: ObisCode


@attrs.frozen
class StatusBits:
    """Status flags: in one register (bit numbers) or in a bit table (the flag's address is
    ``register.address`` + its number)."""

    register: Register
    bits: Mapping[str, int]
    obis: ObisCode

    @property
    def span(self) -> int:
        return max(self.bits.values()) + 1 if self.bits else 1


@attrs.frozen
class Field:
    name: str
    type: str

    @property
    def width(self) -> int:
        return TYPE_WIDTH[self.type]


@attrs.frozen
class RecordBuffer:
    """A ring of numbered records read through a window: write the first record number
    wanted to ``select`` (u32, function 16), read ``per_window`` records from ``window``.
    ``index`` holds the newest record's number (0: none yet); numbers start at 1."""

    index: Register
    capacity: int
    select: int
    window: Register
    per_window: int
    fields: tuple[Field, ...]

    @property
    def record_size(self) -> int:
        return sum(f.width for f in self.fields)

    def offset(self, name: str) -> int:
        at = 0
        for f in self.fields:
            if f.name == name:
                return at
            at += f.width
        raise KeyError(name)

    def has(self, name: str) -> bool:
        return any(f.name == name for f in self.fields)


@attrs.frozen
class EventCode:
    name: str
    kind: EventKind
    severity: Severity


@attrs.frozen
class Parameter:
    """A value ``parameter-set NAME=VALUE`` writes (a counter preset, a counter reset coil):
    holding registers of ``register.type`` (function 16) or one coil (function 5, VALUE
    on/off), VALUE within ``lo``..``hi``."""

    name: str
    register: Register
    lo: int
    hi: int


TYPE_RANGE: Final = {"u16": (0, 0xFFFF), "s16": (-0x8000, 0x7FFF), "u32": (0, 0xFFFFFFFF),
                     "s32": (-0x80000000, 0x7FFFFFFF)}


@attrs.frozen
class DeviceMap:
    name: str
    model: str
    word_order: str
    max_registers: int
    tz: str
    clock: Register | None
    clock_format: str
    clock_writable: bool
    period: Register | None
    period_seconds: int | None
    counters: Mapping[str, Register]
    values: tuple[ScaledValue, ...]
    status: StatusBits | None
    history: RecordBuffer | None
    restart_bit: int | None
    power_fail_bit: int | None
    events: RecordBuffer | None
    event_codes: Mapping[int, EventCode]
    source: str = ""
    parameters: Mapping[str, Parameter] = attrs.field(factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


class _Section:
    """One section with errors naming file, section and key."""

    def __init__(self, parser: configparser.ConfigParser, name: str, file: str) -> None:
        self.parser = parser
        self.name = name
        self.file = file
        self.used: set[str] = set()

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, section=self.name, key=key)

    def has(self, key: str) -> bool:
        return self.parser.has_option(self.name, key)

    def text(self, key: str, default: str | None = None) -> str:
        self.used.add(key)
        if not self.has(key):
            if default is None:
                raise self.error(key, "is required")
            return default
        return self.parser.get(self.name, key).strip()

    def integer(self, key: str, default: int | None = None, lo: int = 0,
                hi: int = 0xFFFF) -> int:
        text = self.text(key, None if default is None else str(default))
        try:
            value = int(text, 0)
        except ValueError:
            raise self.error(key, f"{text!r} is no whole number") from None
        if not lo <= value <= hi:
            raise self.error(key, f"{value} out of {lo}..{hi}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        text = self.text(key, default).lower()
        if text not in choices:
            raise self.error(key, f"{text!r} is not one of {', '.join(choices)}")
        return text

    def flag(self, key: str, default: bool) -> bool:
        return self.choice(key, ("yes", "no", "true", "false", "1", "0"),
                           "yes" if default else "no") in ("yes", "true", "1")

    def table(self, key: str = "table", default: str | None = None) -> Table:
        return Table(self.choice(key, tuple(t.value for t in Table), default))

    def register(self, prefix: str = "", type_default: str = "u16",
                 types: tuple[str, ...] = ("u16", "s16", "u32", "s32")) -> Register:
        table = self.table(f"{prefix}table")
        address = self.integer(f"{prefix}address")
        kind = type_default
        if not table.bits:
            kind = self.choice(f"{prefix}type", types, type_default)
        reg = Register(table, address, kind)
        if address + reg.count > 0x10000:
            raise self.error(f"{prefix}address", f"{address} + {reg.count} passes 65535")
        return reg

    def obis(self, key: str, default: ObisCode) -> ObisCode:
        if not self.has(key):
            return default
        text = self.text(key)
        try:
            return ObisCode.parse(text)
        except ValueError as e:
            raise self.error(key, str(e)) from None

    def check_unused(self) -> None:
        for key in self.parser.options(self.name):
            if key not in self.used:
                raise self.error(key, "is not a known key of this section")


def _fields(section: _Section, key: str, required: tuple[str, ...]) -> tuple[Field, ...]:
    text = section.text(key)
    fields: list[Field] = []
    for part in text.split(","):
        name, sep, kind = part.strip().partition(":")
        name, kind = name.strip(), kind.strip().lower()
        if not sep or not name or kind not in TYPE_WIDTH:
            raise section.error(key, f"field {part.strip()!r} is not NAME:TYPE with TYPE one "
                                f"of {', '.join(TYPE_WIDTH)}")
        if any(f.name == name for f in fields):
            raise section.error(key, f"field {name!r} given twice")
        fields.append(Field(name, kind))
    for name in required:
        if not any(f.name == name for f in fields):
            raise section.error(key, f"has no {name!r} field")
    return tuple(fields)


def _buffer(section: _Section, max_registers: int, required: tuple[str, ...]) -> RecordBuffer:
    index = section.register("index_", "u32", ("u16", "u32"))
    window = Register(section.table("window_table"), section.integer("window_address"))
    if window.table.bits:
        raise section.error("window_table", "a record window is holding or input registers")
    fields = _fields(section, "record", required)
    per_window = section.integer("records_per_window", 1, 1, 125)
    buffer = RecordBuffer(
        index=index,
        capacity=section.integer("capacity", None, 1, 0xFFFFFFFF),
        select=section.integer("select_address"),
        window=window,
        per_window=per_window,
        fields=fields,
    )
    if buffer.record_size * per_window > max_registers:
        raise section.error("records_per_window", f"{per_window} records of "
                            f"{buffer.record_size} registers pass max_registers "
                            f"{max_registers}")
    return buffer


def _unit(section: _Section) -> tuple[Unit | None, int]:
    if not section.has("unit"):
        return None, 0
    text = section.text("unit")
    try:
        return Unit.parse_symbol(text)
    except ValueError as e:
        raise section.error("unit", str(e)) from None


DEFAULT_VALUE_OBIS: Final = {
    "supply": ObisCode(0, 0, 96, 50, 0),
    "battery": ObisCode(0, 0, 96, 6, 3),
}


def parse_device_map(text: str, *, name: str = "", file: str = "<text>") -> DeviceMap:
    """A device map from ini text; ConfigError names file, section and key."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        parser.read_string(text, source=file)
    except configparser.Error as e:
        raise ConfigError(f"not an ini file: {e.message}", file=file) from None
    sections = set(parser.sections())

    def section(name: str) -> _Section:
        return _Section(parser, name, file)

    if "device" not in sections:
        raise ConfigError("has no [device] section", file=file)
    known = {"device", "clock", "period", "status", "history", "events", "event.codes"}
    for s in sections:
        if s not in known and not s.startswith(("counter.", "value.", "parameter.")):
            raise ConfigError("is not a known section", file=file, section=s)
    dev = section("device")
    model = dev.text("model")
    word_order = dev.choice("word_order", ("big", "little"), "big")
    max_registers = dev.integer("max_registers", 125, 1, 125)
    tz = dev.text("tz", "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise dev.error("tz", f"names no known time zone ({tz!r})") from None
    dev.check_unused()

    clock = None
    clock_format = "epoch32"
    clock_writable = False
    if "clock" in sections:
        c = section("clock")
        clock_format = c.choice("format", ("epoch32", "ymdhms"), "epoch32")
        table = c.table()
        if table.bits:
            raise c.error("table", "a clock is holding or input registers")
        clock = Register(table, c.integer("address"), "time32" if clock_format == "epoch32"
                         else "u16")
        clock_writable = c.flag("writable", False)
        if clock_writable and table is not Table.HOLDING:
            raise c.error("writable", "only holding registers can be written")
        c.check_unused()

    period = None
    period_seconds = None
    if "period" in sections:
        p = section("period")
        if p.has("seconds"):
            period_seconds = p.integer("seconds", None, 1, 86400)
            if 86400 % period_seconds:
                raise p.error("seconds", f"{period_seconds} s does not divide a day")
        else:
            period = p.register()
        p.check_unused()

    counters: dict[str, Register] = {}
    values: list[ScaledValue] = []
    for s in sorted(sections):
        if s.startswith("counter."):
            c = section(s)
            channel = s.partition(".")[2]
            if channel not in ("1", "2", "3", "4"):
                raise c.error(None, "pulse channels are counter.1 .. counter.4")
            width = c.choice("width", ("16", "32"), "32")
            reg = Register(c.table(), c.integer("address"), "u16" if width == "16" else "u32")
            if reg.table.bits:
                raise c.error("table", "a counter is holding or input registers")
            counters[channel] = reg
            c.check_unused()
        elif s.startswith("value."):
            v = section(s)
            vname = s.partition(".")[2]
            reg = v.register()
            if reg.table.bits:
                raise v.error("table", "a value is holding or input registers")
            scale_text = v.text("scale", "1")
            try:
                scale = Decimal(scale_text)
            except InvalidOperation:
                raise v.error("scale", f"{scale_text!r} is no number") from None
            unit, scaler = _unit(v)
            default = DEFAULT_VALUE_OBIS.get(vname)
            if default is None and not v.has("obis"):
                raise v.error("obis", "is required for values other than supply and battery")
            obis = v.obis("obis", default or ObisCode(0, 0, 96, 50, 0))
            values.append(ScaledValue(vname, reg, scale, unit, scaler, obis))
            v.check_unused()
    if not counters:
        raise ConfigError("has no [counter.N] section", file=file)

    parameters: dict[str, Parameter] = {}
    for s in sorted(sections):
        if s.startswith("parameter."):
            pm = section(s)
            pname = s.partition(".")[2].lower()
            if not pname or not all(ch.isalnum() or ch in "_.-" for ch in pname):
                raise pm.error(None, "a parameter name is letters, digits, '_', '.' or '-'")
            table = pm.table()
            if table not in (Table.HOLDING, Table.COILS):
                raise pm.error("table", "a parameter is written to holding registers or coils")
            if table is Table.COILS:
                reg = Register(table, pm.integer("address"))
                lo, hi = 0, 1
            else:
                reg = pm.register()
                lo, hi = TYPE_RANGE[reg.type]
                lo = pm.integer("min", lo, lo, hi)
                hi = pm.integer("max", hi, lo, hi)
            pm.check_unused()
            parameters[pname] = Parameter(pname, reg, lo, hi)

    status = None
    if "status" in sections:
        st = section("status")
        table = st.table()
        bits: dict[str, int] = {}
        reg = Register(table, st.integer("address"), "u16")
        for bit_name in STATUS_NAMES:
            if st.has(bit_name):
                bits[bit_name] = st.integer(bit_name, None, 0, 1999 if table.bits else 15)
        obis = st.obis("obis", ObisCode(0, 0, 96, 5, 0))
        st.check_unused()
        if not bits:
            raise st.error(None, f"names no status bit ({', '.join(STATUS_NAMES)})")
        status = StatusBits(reg, bits, obis)

    history = None
    restart_bit = power_fail_bit = None
    if "history" in sections:
        h = section("history")
        history = _buffer(h, max_registers, ("number", "end"))
        for channel in counters:
            if not history.has(f"counter.{channel}"):
                raise h.error("record", f"has no 'counter.{channel}' field")
        if (h.has("restart_bit") or h.has("power_fail_bit")) and not history.has("flags"):
            raise h.error("record", "has no 'flags' field for restart_bit/power_fail_bit")
        if h.has("restart_bit"):
            restart_bit = h.integer("restart_bit", None, 0, 15)
        if h.has("power_fail_bit"):
            power_fail_bit = h.integer("power_fail_bit", None, 0, 15)
        h.check_unused()
        if period is None and period_seconds is None:
            raise ConfigError("a history buffer needs a [period] section", file=file,
                              section="history")

    events = None
    codes: dict[int, EventCode] = {}
    if "events" in sections:
        ev = section("events")
        events = _buffer(ev, max_registers, ("number", "time", "code"))
        ev.check_unused()
        if "event.codes" not in sections:
            raise ConfigError("an event log needs an [event.codes] section", file=file,
                              section="events")
    if "event.codes" in sections:
        ec = section("event.codes")
        for key in parser.options("event.codes"):
            ec.used.add(key)
            try:
                number = int(key, 0)
            except ValueError:
                raise ec.error(key, "an event code is a whole number") from None
            spec = parser.get("event.codes", key).strip()
            ev_name, _, sev_text = (part.strip() for part in spec.partition(","))
            if ev_name not in EVENT_NAMES:
                raise ec.error(key, f"{ev_name!r} is not one of {', '.join(EVENT_NAMES)}")
            kind, severity = EVENT_NAMES[ev_name]
            if sev_text:
                try:
                    severity = Severity(sev_text.lower())
                except ValueError:
                    raise ec.error(key, f"severity {sev_text!r} is not one of "
                                   f"{', '.join(s.value for s in Severity)}") from None
            codes[number] = EventCode(ev_name, kind, severity)

    return DeviceMap(
        name=name,
        model=model,
        word_order=word_order,
        max_registers=max_registers,
        tz=tz,
        clock=clock,
        clock_format=clock_format,
        clock_writable=clock_writable,
        period=period,
        period_seconds=period_seconds,
        counters=counters,
        values=tuple(values),
        status=status,
        history=history,
        restart_bit=restart_bit,
        power_fail_bit=power_fail_bit,
        events=events,
        event_codes=codes,
        source=file,
        parameters=parameters,
    )


def find_device_map(name: str, directories: tuple[Path, ...] = ()) -> Path:
    """The file of a device map: ``name`` itself when it is a path to an ini file, else
    ``NAME.ini`` in ``directories``, ``etc/devices`` under the working directory, then the
    project's ``etc/devices``."""
    name = name.strip()
    if not name:
        raise ConfigError("no device map named", key="modbus_device_map")
    path = Path(name)
    if path.suffix == ".ini" or "/" in name:
        if path.is_file():
            return path
        raise ConfigError(f"device map file {name!r} not found", key="modbus_device_map")
    searched = [*directories, Path("etc/devices"), PROJECT_DEVICES]
    for directory in searched:
        candidate = directory / f"{name}.ini"
        if candidate.is_file():
            return candidate
    where = ", ".join(str(d) for d in searched)
    raise ConfigError(f"no device map {name!r} (looked in {where})", key="modbus_device_map")


def load_device_map(name: str, directories: tuple[Path, ...] = ()) -> DeviceMap:
    path = find_device_map(name, directories)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(path)) from None
    return parse_device_map(text, name=path.stem, file=str(path))


__all__ = [
    "DeviceMap",
    "EVENT_NAMES",
    "EventCode",
    "Field",
    "RecordBuffer",
    "Register",
    "ScaledValue",
    "StatusBits",
    "Table",
    "Parameter",
    "find_device_map",
    "load_device_map",
    "parse_device_map",
]
