"""Reading a pulse recorder over Modbus, sans-IO: the read, history catch-up and clock-set
procedures a session drives, the settings they take from a meter's metadata, and the
records (readings, energy and demand intervals, events) made from what was read.

A procedure is a generator: it yields Modbus requests and is sent each answer back
(``gen.send(response)``); an exception response is thrown into it as its named
``ModbusException``; its return value is the result. The session (``session.py``) moves
the bytes and runs the timers, tests drive procedures with a dict of registers.

History catch-up: the recorder numbers its period records 1, 2, ... and keeps the newest
``capacity`` of them in a ring; a record is read by writing its number to the select
register and reading the window. A read ``since`` a time (the end of the last stored
period) or ``since_index`` (the number of the last stored record) reads from that record
(the baseline the next period's counts are worked out from, plus the periods demand windows
reach back to) up to the newest, in order; records the ring no longer holds are reported
missing, never guessed.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from fep.errors import ConfigError, ProtocolError
from fep.model import (
    EventKind,
    Meter,
    MeterEvent,
    ObisCode,
    Reading,
    Record,
    Severity,
    utcnow,
)
from fep.protocols.modbus.client import Framing
from fep.protocols.modbus.devicemap import (
    STATUS_NAMES,
    DeviceMap,
    Parameter,
    RecordBuffer,
    Register,
    Table,
    load_device_map,
)
from fep.protocols.modbus.pdu import (
    MAX_READ_BITS,
    BitsResponse,
    Function,
    ReadRequest,
    RegistersResponse,
    Request,
    Response,
    WriteRegistersRequest,
    write_coil,
)
from fep.pulse import CounterSample, DemandSettings, PulseChannel, Quantity, Wiring, channel_records

PROTOCOL: Final = "modbus-pulse"
CLOCK_OBIS: Final = ObisCode(0, 0, 1, 0, 0)

T = TypeVar("T")
Procedure = Generator[Request, Response, T]

READ_FUNCTION: Final = {
    Table.COILS: Function.READ_COILS,
    Table.DISCRETE: Function.READ_DISCRETE_INPUTS,
    Table.HOLDING: Function.READ_HOLDING_REGISTERS,
    Table.INPUT: Function.READ_INPUT_REGISTERS,
}


def counter_obis(channel: str) -> ObisCode:
    """The raw pulse counter of input N: ``0-N:96.128.0`` (manufacturer-specific D)."""
    return ObisCode(0, int(channel), 96, 128, 0)


def status_obis(name: str) -> ObisCode:
    """One decoded status flag: ``0-0:96.51.K`` with K its place in STATUS_NAMES."""
    return ObisCode(0, 0, 96, 51, STATUS_NAMES.index(name))


# ---------------------------------------------------------------------------
# Register images
# ---------------------------------------------------------------------------


class Image:
    """Registers and bits as read, by table and address."""

    def __init__(self, word_order: str = "big") -> None:
        self.word_order = word_order
        self.cells: dict[tuple[Table, int], int] = {}

    def put(self, table: Table, address: int, values: Sequence[int]) -> None:
        for i, v in enumerate(values):
            self.cells[(table, address + i)] = int(v)

    def raw(self, table: Table, address: int) -> int:
        try:
            return self.cells[(table, address)]
        except KeyError:
            raise ProtocolError(f"{table.value} {address} was not read",
                                protocol=PROTOCOL) from None

    def words(self, reg: Register) -> list[int]:
        return [self.raw(reg.table, reg.address + i) for i in range(reg.count)]

    def value(self, reg: Register) -> int:
        words = self.words(reg)
        return combine(words, reg.type, self.word_order)


def combine(words: Sequence[int], kind: str, word_order: str = "big") -> int:
    """A typed value from its registers (two for 32-bit types, high word first for
    ``big``)."""
    if len(words) == 1:
        raw = words[0]
        bits = 16
    else:
        hi, lo = (words[0], words[1]) if word_order == "big" else (words[1], words[0])
        raw = hi << 16 | lo
        bits = 32
    if kind.startswith("s") and raw >> (bits - 1):
        raw -= 1 << bits
    return raw


def split32(value: int, word_order: str = "big") -> tuple[int, int]:
    """Two registers of an unsigned 32-bit value."""
    hi, lo = value >> 16 & 0xFFFF, value & 0xFFFF
    return (hi, lo) if word_order == "big" else (lo, hi)


def plan_reads(registers: Sequence[Register], max_registers: int) -> list[ReadRequest]:
    """The fewest requests reading every register: contiguous spans of one table merged up
    to ``max_registers`` (2000 bits); nothing unmapped is read (devices refuse it)."""
    spans: dict[Table, list[tuple[int, int]]] = {}
    for reg in registers:
        spans.setdefault(reg.table, []).append((reg.address, reg.address + reg.count))
    requests = []
    for table, items in spans.items():
        limit = MAX_READ_BITS if table.bits else max_registers
        items.sort()
        start, end = items[0]
        for a, b in items[1:]:
            if a <= end and max(end, b) - start <= limit:
                end = max(end, b)
            else:
                requests.append(ReadRequest(READ_FUNCTION[table], start, end - start))
                start, end = a, b
        requests.append(ReadRequest(READ_FUNCTION[table], start, end - start))
    return requests


def _read_into(image: Image, requests: Sequence[ReadRequest]) -> Procedure[Image]:
    for request in requests:
        response = yield request
        table = next(t for t, f in READ_FUNCTION.items() if f == request.function)
        if isinstance(response, BitsResponse):
            image.put(table, request.address, [int(b) for b in response.bits[: request.count]])
        elif isinstance(response, RegistersResponse):
            image.put(table, request.address, response.registers)
    return image


def decode_time(words: Sequence[int], fmt: str, zone: ZoneInfo,
                word_order: str = "big") -> datetime | None:
    """A recorder time: ``epoch32`` (seconds since 1970 UTC, 0 for unset) or ``ymdhms``
    (six registers in the recorder's zone). None when the fields are no time."""
    if fmt == "epoch32":
        seconds = combine(words, "u32", word_order)
        return datetime.fromtimestamp(seconds, UTC) if seconds else None
    try:
        year, month, day, hour, minute, second = words[:6]
        return datetime(year, month, day, hour, minute, second, tzinfo=zone).astimezone(UTC)
    except (ValueError, TypeError):
        return None


def encode_time(when: datetime, fmt: str, zone: ZoneInfo, word_order: str = "big") -> tuple[
        int, ...]:
    if fmt == "epoch32":
        return split32(int(when.timestamp()), word_order)
    local = when.astimezone(zone)
    return (local.year, local.month, local.day, local.hour, local.minute, local.second)


# ---------------------------------------------------------------------------
# What a read gives
# ---------------------------------------------------------------------------


@attrs.frozen
class HistoryRecord:
    number: int
    end: datetime
    counters: Mapping[str, int]
    flags: int = 0


@attrs.frozen
class EventRecord:
    number: int
    time: datetime
    code: int


@attrs.frozen
class RecorderData:
    """Everything one read found, before it is made into records."""

    clock: datetime | None = None
    period: timedelta | None = None
    counters: Mapping[str, int] = attrs.field(factory=dict)
    values: Mapping[str, Decimal] = attrs.field(factory=dict)
    status_word: int | None = None
    status: Mapping[str, bool] = attrs.field(factory=dict)
    newest_record: int = 0
    history: tuple[HistoryRecord, ...] = ()
    history_missing: int = 0
    events: tuple[EventRecord, ...] = ()


@attrs.frozen
class ReadSettings:
    """What a read asks for. ``since`` (the end of the last stored period) or
    ``since_index`` (the last stored record's number) start a catch-up; otherwise the
    newest ``periods`` periods are read. ``lookback`` extra periods feed demand windows.
    ``max_events`` bounds the events read when no ``since`` is given."""

    since: datetime | None = None
    since_index: int | None = None
    periods: int = 96
    lookback: int = 0
    history: bool = True
    events: bool = True
    max_events: int = 20


# ---------------------------------------------------------------------------
# Procedures
# ---------------------------------------------------------------------------


def _live_registers(dmap: DeviceMap) -> list[Register]:
    regs: list[Register] = []
    if dmap.clock is not None:
        regs.append(dmap.clock if dmap.clock_format == "epoch32"
                    else Register(dmap.clock.table, dmap.clock.address, "u16"))
        if dmap.clock_format == "ymdhms":
            regs.extend(Register(dmap.clock.table, dmap.clock.address + i) for i in range(1, 6))
    if dmap.period is not None:
        regs.append(dmap.period)
    regs.extend(dmap.counters.values())
    regs.extend(v.register for v in dmap.values)
    if dmap.status is not None:
        st = dmap.status.register
        if st.table.bits:
            regs.extend(Register(st.table, st.address + b) for b in dmap.status.bits.values())
        else:
            regs.append(st)
    for buf in (dmap.history, dmap.events):
        if buf is not None:
            regs.append(buf.index)
    return regs


def _clock(dmap: DeviceMap, image: Image) -> datetime | None:
    if dmap.clock is None:
        return None
    n = 2 if dmap.clock_format == "epoch32" else 6
    words = [image.raw(dmap.clock.table, dmap.clock.address + i) for i in range(n)]
    return decode_time(words, dmap.clock_format, dmap.zone, dmap.word_order)


def read_live(dmap: DeviceMap) -> Procedure[tuple[Image, RecorderData]]:
    """Clock, period, counters, values and status in as few requests as the map allows."""
    image = Image(dmap.word_order)
    yield from _read_into(image, plan_reads(_live_registers(dmap), dmap.max_registers))
    period = None
    if dmap.period is not None:
        seconds = image.value(dmap.period)
        if seconds <= 0 or 86400 % seconds:
            raise ProtocolError(f"integration period register holds {seconds} s, which does "
                                "not divide a day", protocol=PROTOCOL)
        period = timedelta(seconds=seconds)
    elif dmap.period_seconds is not None:
        period = timedelta(seconds=dmap.period_seconds)
    status_word = None
    status: dict[str, bool] = {}
    if dmap.status is not None:
        st = dmap.status.register
        if st.table.bits:
            for name, bit in dmap.status.bits.items():
                status[name] = bool(image.raw(st.table, st.address + bit))
            status_word = sum(int(v) << STATUS_NAMES.index(k) for k, v in status.items())
        else:
            status_word = image.value(st)
            status = {name: bool(status_word >> bit & 1)
                      for name, bit in dmap.status.bits.items()}
    values = {v.name: Decimal(image.value(v.register)) * v.scale for v in dmap.values}
    data = RecorderData(
        clock=_clock(dmap, image),
        period=period,
        counters={ch: image.value(reg) for ch, reg in dmap.counters.items()},
        values=values,
        status_word=status_word,
        status=status,
        newest_record=image.value(dmap.history.index) if dmap.history else 0,
    )
    return image, data


def read_buffer(dmap: DeviceMap, buf: RecordBuffer, first: int,
                last: int, absent: list[int] | None = None) -> Procedure[list[dict[str, int]]]:
    """Records ``first``..``last`` of a ring, in order, as field -> raw value. A record the
    window shows as number 0 (no longer held) is left out and its number put in ``absent``;
    another number than the one selected is a ProtocolError."""
    out: list[dict[str, int]] = []
    n = first
    size = buf.record_size
    while n <= last:
        k = min(buf.per_window, last - n + 1)
        yield WriteRegistersRequest(buf.select, split32(n, dmap.word_order))
        response = yield ReadRequest(READ_FUNCTION[buf.window.table], buf.window.address, k * size)
        assert isinstance(response, RegistersResponse)
        regs = response.registers
        for i in range(k):
            fields: dict[str, int] = {}
            at = i * size
            for f in buf.fields:
                fields[f.name] = combine(regs[at: at + f.width], f.type, dmap.word_order)
                at += f.width
            if fields["number"] == 0:
                if absent is not None:
                    absent.append(n + i)
                continue
            if fields["number"] != n + i:
                raise ProtocolError(f"record window shows record {fields['number']}, "
                                    f"selected {n + i}", protocol=PROTOCOL)
            out.append(fields)
        n += k
    return out


def _epoch(seconds: int) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds > 0 else None


def _history_records(dmap: DeviceMap, raw: list[dict[str, int]]) -> list[HistoryRecord]:
    out = []
    for fields in raw:
        end = _epoch(fields["end"])
        if end is None:
            continue
        out.append(HistoryRecord(
            number=fields["number"], end=end,
            counters={ch: fields[f"counter.{ch}"] for ch in dmap.counters},
            flags=fields.get("flags", 0)))
    return out


def read_history(dmap: DeviceMap, data: RecorderData,
                 settings: ReadSettings) -> Procedure[tuple[list[HistoryRecord], int]]:
    """The period records a read wants, oldest first, and how many it wanted that the ring
    no longer holds."""
    buf = dmap.history
    newest = data.newest_record
    if buf is None or newest == 0:
        return [], 0
    oldest = max(1, newest - buf.capacity + 1)
    back = settings.lookback
    period = data.period
    if settings.since_index is not None:
        wanted = settings.since_index - back
    elif settings.since is not None and period is not None and data.clock is not None:
        # Fewer records than periods (the recorder was off) only put the record for
        # ``since`` later in the ring: starting here reads a few too many, never too few.
        grid = datetime.fromtimestamp(
            data.clock.timestamp() // period.total_seconds() * period.total_seconds(), UTC)
        wanted = newest - max(0, (grid - settings.since) // period) - back
    else:
        wanted = newest - settings.periods - back
    first = min(max(wanted, oldest), newest)
    absent: list[int] = []
    records = _history_records(dmap, (yield from read_buffer(dmap, buf, first, newest, absent)))
    if settings.since is not None and period is not None:
        horizon = settings.since - back * period
        # The recorder's clock was set back, or its clock is behind: step back further.
        while records and records[0].end > horizon and first > oldest:
            start = max(oldest, first - buf.per_window)
            earlier = yield from read_buffer(dmap, buf, start, first - 1, absent)
            records = _history_records(dmap, earlier) + records
            first = start
        records = [r for r in records if r.end >= horizon] or records[-1:]
    return records, max(0, oldest - wanted) + len(absent)


def read_events(dmap: DeviceMap, since: datetime | None,
                max_events: int) -> Procedure[list[EventRecord]]:
    """Events newer than ``since`` (else the newest ``max_events``), oldest first."""
    buf = dmap.events
    if buf is None:
        return []
    image = Image(dmap.word_order)
    yield from _read_into(image, plan_reads([buf.index], dmap.max_registers))
    newest = image.value(buf.index)
    if newest == 0:
        return []
    oldest = max(1, newest - buf.capacity + 1)
    found: list[EventRecord] = []
    last = newest
    while last >= oldest:
        first = max(oldest, last - buf.per_window + 1)
        raw = yield from read_buffer(dmap, buf, first, last)
        batch = []
        for fields in raw:
            when = _epoch(fields["time"])
            if when is not None:
                batch.append(EventRecord(fields["number"], when, fields["code"]))
        found = batch + found
        if since is not None and any(e.time < since for e in batch):
            break
        if since is None and len(found) >= max_events:
            break
        last = first - 1
    found = [e for e in found if e.time >= since] if since is not None else found[-max_events:]
    return found


def read_recorder(dmap: DeviceMap, settings: ReadSettings) -> Procedure[RecorderData]:
    """One read: live registers, then the history and the event log as asked."""
    _, data = yield from read_live(dmap)
    history: list[HistoryRecord] = []
    missing = 0
    if settings.history and dmap.history is not None:
        history, missing = yield from read_history(dmap, data, settings)
    events: list[EventRecord] = []
    if settings.events and dmap.events is not None:
        since = settings.since
        if since is None and history and data.period is not None:
            since = history[0].end - data.period
        events = yield from read_events(dmap, since, settings.max_events)
    return attrs.evolve(data, history=tuple(history), history_missing=missing,
                        events=tuple(events))


def read_clock(dmap: DeviceMap) -> Procedure[datetime | None]:
    if dmap.clock is None:
        raise ConfigError(f"device map {dmap.name} has no [clock]", file=dmap.source,
                          section="clock")
    image = Image(dmap.word_order)
    n = 2 if dmap.clock_format == "epoch32" else 6
    regs = [Register(dmap.clock.table, dmap.clock.address + i) for i in range(n)]
    yield from _read_into(image, plan_reads(regs, dmap.max_registers))
    return _clock(dmap, image)


def set_clock(dmap: DeviceMap, when: datetime) -> Procedure[datetime]:
    """Write the recorder's clock (function 16); returns the time written (whole
    seconds)."""
    if dmap.clock is None or not dmap.clock_writable:
        raise ConfigError(f"device map {dmap.name} has no writable [clock]", file=dmap.source,
                          section="clock", key="writable")
    when = when.astimezone(UTC).replace(microsecond=0)
    yield WriteRegistersRequest(dmap.clock.address,
                                encode_time(when, dmap.clock_format, dmap.zone, dmap.word_order))
    return when


# ---------------------------------------------------------------------------
# Parameters (counter preset and reset)
# ---------------------------------------------------------------------------

PARAMETER_SET: Final = "parameter-set"
# What the collection engine puts into every command's parameters: not device parameters.
ENGINE_PARAMS: Final = frozenset({"attempts", "retry_delay", "progress"})
_ON: Final = {"1": 1, "on": 1, "yes": 1, "true": 1, "0": 0, "off": 0, "no": 0, "false": 0}


def parameter_values(meter: str, dmap: DeviceMap,
                     params: Mapping[str, Any]) -> list[tuple[Parameter, int]]:
    """The ``NAME=VALUE`` pairs of a ``parameter-set`` command, checked against the device
    map before anything is sent: a name the map has no ``[parameter.NAME]`` for, or a value
    out of its range, is a ConfigError naming meter, command and parameter."""
    pairs: list[tuple[Parameter, int]] = []
    for key, raw in params.items():
        if key in ENGINE_PARAMS or key.startswith("_"):
            continue
        name = key.strip().lower()
        parameter = dmap.parameters.get(name)
        if parameter is None:
            known = ", ".join(sorted(dmap.parameters)) or "none"
            raise ConfigError(
                f"meter {meter}: {PARAMETER_SET} {key}: device map {dmap.name or dmap.source} "
                f"has no parameter {key!r} (its parameters: {known})")
        text = str(raw).strip().lower()
        try:
            value = _ON[text] if parameter.register.table is Table.COILS else int(text, 0)
        except (KeyError, ValueError):
            want = "on or off" if parameter.register.table is Table.COILS else "a whole number"
            raise ConfigError(
                f"meter {meter}: {PARAMETER_SET} {key}: {raw!r} is not {want}") from None
        if not parameter.lo <= value <= parameter.hi:
            raise ConfigError(f"meter {meter}: {PARAMETER_SET} {key}: {value} is out of "
                              f"{parameter.lo}..{parameter.hi}")
        pairs.append((parameter, value))
    if not pairs:
        known = ", ".join(sorted(dmap.parameters)) or "none"
        raise ConfigError(f"meter {meter}: {PARAMETER_SET} names no parameter: give "
                          f"NAME=VALUE (device map {dmap.name or dmap.source}: {known})")
    return pairs


def write_parameters(dmap: DeviceMap,
                     pairs: Sequence[tuple[Parameter, int]]) -> Procedure[dict[str, int]]:
    """Write each parameter in order: holding registers by function 16, a coil by function
    5. Returns what was written, by name."""
    done: dict[str, int] = {}
    for parameter, value in pairs:
        reg = parameter.register
        if reg.table is Table.COILS:
            yield write_coil(reg.address, bool(value))
        else:
            raw = value & (0xFFFF if reg.count == 1 else 0xFFFFFFFF)
            words = (raw,) if reg.count == 1 else split32(raw, dmap.word_order)
            yield WriteRegistersRequest(reg.address, words)
        done[parameter.name] = value
    return done


# ---------------------------------------------------------------------------
# Settings from a meter
# ---------------------------------------------------------------------------


@attrs.frozen
class RecorderSettings:
    """How to read one recorder, from its meter entry (see docs/protocols/modbus.md)."""

    device: DeviceMap
    unit: int
    framing: Framing
    retries: int
    channels: Mapping[str, PulseChannel]
    demand: DemandSettings
    read: ReadSettings
    period_override: timedelta | None
    baudrate: int | None = None


_WIRINGS = tuple(w.value for w in Wiring)
_QUANTITIES = tuple(q.value for q in Quantity)


def settings_for(meter: Meter, since: datetime | None = None) -> RecorderSettings:
    """RecorderSettings from a meter's address and metadata; ConfigError names the key."""
    md = meter.metadata

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"meter {meter.id}: {key} {why}", key=key)

    def number(key: str, default: int, lo: int = 0, hi: int = 1 << 32) -> int:
        text = md.get(key, "").strip()
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            raise bad(key, f"must be a whole number, not {text!r}") from None
        if not lo <= value <= hi:
            raise bad(key, f"must be {lo}..{hi}, not {value}")
        return value

    def decimal(key: str) -> Fraction | None:
        text = md.get(key, "").strip()
        if not text:
            return None
        try:
            value = Fraction(Decimal(text))
        except (ArithmeticError, ValueError):
            raise bad(key, f"must be a number, not {text!r}") from None
        if value <= 0:
            raise bad(key, "must be positive")
        return value

    def choice(key: str, choices: tuple[str, ...], default: str) -> str:
        text = md.get(key, default).strip().lower() or default
        if text not in choices:
            raise bad(key, f"is one of {', '.join(choices)}, not {text!r}")
        return text

    def when(key: str) -> datetime | None:
        text = md.get(key, "").strip()
        if not text:
            return None
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise bad(key, f"is no ISO date and time ({text!r})") from None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    name = md.get("modbus_device_map", "").strip()
    if not name:
        raise bad("modbus_device_map", "is required (the recorder's register map, e.g. "
                  "sim-pr2)")
    device = load_device_map(name)
    unit_default = 1
    if meter.address and meter.address.strip():
        try:
            unit_default = int(meter.address.strip())
        except ValueError:
            raise ConfigError(f"meter {meter.id}: address {meter.address!r} is no Modbus unit "
                              "id", key="address") from None
    framing_default = "rtu" if meter.route.strip().startswith("serial:") else "tcp"
    framing = Framing(choice("modbus_framing", ("rtu", "tcp"), framing_default))
    unit = number("modbus_unit", unit_default, 1 if framing is Framing.RTU else 0,
                  247 if framing is Framing.RTU else 255)
    tz_name = md.get("pulse_tz", "").strip() or device.tz
    try:
        zone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad("pulse_tz", f"names no known time zone ({tz_name!r})") from None
    period_minutes = number("pulse_period", 0, 0, 1440)
    period_override = timedelta(minutes=period_minutes) if period_minutes else None
    block_minutes = number("pulse_block", 0, 0, 1440)
    try:
        demand = DemandSettings(
            period=period_override or timedelta(seconds=device.period_seconds or 900),
            block=timedelta(minutes=block_minutes) if block_minutes else None,
            rolling=number("pulse_rolling", 0, 0, 96),
            billing_day=number("pulse_billing_day", 1, 1, 28),
            tz=zone,
        )
    except ValueError as e:
        raise ConfigError(f"meter {meter.id}: {e}", key="pulse_block") from None
    channels: dict[str, PulseChannel] = {}
    for ch, reg in device.counters.items():
        constant = decimal(f"pulse{ch}_constant")
        per_pulse = decimal(f"pulse{ch}_energy_per_pulse")
        if constant is None and per_pulse is None:
            continue
        if constant is not None and per_pulse is not None:
            raise bad(f"pulse{ch}_constant", f"and pulse{ch}_energy_per_pulse are both given")
        obis_c = None
        if md.get(f"pulse{ch}_obis", "").strip():
            try:
                obis_c = ObisCode.parse(md[f"pulse{ch}_obis"]).c
            except ValueError as e:
                raise bad(f"pulse{ch}_obis", str(e)) from None
        max_counts = number(f"pulse{ch}_max_counts", 0, 0, 1 << 32) or None
        channels[ch] = PulseChannel(
            name=ch,
            quantity=Quantity(choice(f"pulse{ch}_quantity", _QUANTITIES, "active-import")),
            energy_per_pulse=per_pulse if per_pulse is not None
            else Fraction(1000) / constant,  # type: ignore[operator]
            wiring=Wiring(choice(f"pulse{ch}_wiring", _WIRINGS, "ky")),
            counter_width=16 if reg.type == "u16" else 32,
            max_counts=max_counts,
            obis_c=obis_c,
            obis_b=int(ch),
        )
    since_index = number("pulse_since_index", 0, 0, 0xFFFFFFFF) or None
    read = ReadSettings(
        since=since if since is not None else when("pulse_since"),
        since_index=since_index,
        periods=number("pulse_history", 96, 0, 100000),
        lookback=demand.lookback,
        max_events=number("pulse_events", 20, 0, 10000),
    )
    baud = number("modbus_baud", 0, 0, 4_000_000) or None
    return RecorderSettings(
        device=device,
        unit=unit,
        framing=framing,
        retries=number("modbus_retries", 1, 0, 10),
        channels=channels,
        demand=demand,
        read=read,
        period_override=period_override,
        baudrate=baud,
    )


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


def event_record(meter: str, dmap: DeviceMap, event: EventRecord,
                 received: datetime) -> MeterEvent:
    code = dmap.event_codes.get(event.code)
    if code is None:
        return MeterEvent(meter=meter, code=f"event-{event.code}", kind=EventKind.OTHER,
                          severity=Severity.MINOR, time=event.time,
                          text=f"{dmap.model}: event code {event.code} (not in the map)",
                          received_time=received, source=PROTOCOL)
    return MeterEvent(meter=meter, code=code.name, kind=code.kind, severity=code.severity,
                      time=event.time, text=f"{dmap.model}: {code.name} (record {event.number})",
                      received_time=received, source=PROTOCOL)


def recorder_records(
    meter: str, settings: RecorderSettings, data: RecorderData, *,
    received: datetime | None = None,
) -> list[Record]:
    """Readings (clock, counters, values, status), energy and demand intervals per
    configured channel, and events, from one read."""
    received = received or utcnow()
    dmap = settings.device
    at = data.clock
    records: list[Record] = []

    def reading(obis: ObisCode, value: Any, **kw: Any) -> Reading:
        return Reading(meter=meter, obis=obis, value=value, meter_time=kw.pop("meter_time", at),
                       received_time=received, source=PROTOCOL, **kw)

    if data.clock is not None:
        records.append(reading(CLOCK_OBIS, data.clock.isoformat(), meter_time=data.clock,
                               native_id="clock"))
    for ch, count in sorted(data.counters.items()):
        records.append(reading(counter_obis(ch), count, native_id=f"counter.{ch}"))
    for v in dmap.values:
        value = data.values.get(v.name)
        if value is not None:
            records.append(reading(v.obis, value, unit=v.unit, scaler=v.scaler,
                                   native_id=v.name))
    if dmap.status is not None and data.status_word is not None:
        records.append(reading(dmap.status.obis, data.status_word, native_id="status"))
        for name, on in data.status.items():
            records.append(reading(status_obis(name), on, native_id=name))
    period = settings.period_override or data.period or settings.demand.period
    demand = attrs.evolve(settings.demand, period=period)
    since = settings.read.since
    if since is None and settings.read.since_index is not None:
        since = next((r.end for r in data.history if r.number == settings.read.since_index),
                     None)
    elif since is None and data.history:
        # No catch-up asked: the newest ``periods`` periods (older ones only feed windows).
        since = data.history[-1].end - settings.read.periods * period
    if data.history:
        for ch, channel in sorted(settings.channels.items()):
            samples = [
                CounterSample(r.end, r.counters[ch],
                              restarted=dmap.restart_bit is not None
                              and bool(r.flags >> dmap.restart_bit & 1))
                for r in data.history
            ]
            for rec in channel_records(meter, channel, samples, demand,
                                       since=since, source=PROTOCOL):
                records.append(attrs.evolve(rec, received_time=received))
    for event in data.events:
        records.append(event_record(meter, dmap, event, received))
    return records


__all__ = [
    "EventRecord",
    "HistoryRecord",
    "Image",
    "ENGINE_PARAMS",
    "PARAMETER_SET",
    "ReadSettings",
    "RecorderData",
    "RecorderSettings",
    "counter_obis",
    "parameter_values",
    "plan_reads",
    "read_clock",
    "read_events",
    "read_history",
    "read_live",
    "read_recorder",
    "recorder_records",
    "set_clock",
    "settings_for",
    "status_obis",
    "write_parameters",
]
