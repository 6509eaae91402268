"""Q/GDW 1376.1 application services: the data units of each AFN and Fn fep speaks, as a table
of layouts (bytes <-> typed values, per direction), the request builders of a master station
and the typed events its answers decode into.

A frame's data units are ``DA DT`` then, for each point Pn of DA and each class Fn of DT
(points first: all classes of P1, then of P2), that pair's data. Its length is known only
from the layout of (AFN, Fn, direction), so an Fn fep has no layout for stops the decoding
of the frame (``UnknownFn``, a ProtocolError: counted and logged by the session, which goes
on).

Covered (clause numbers of Q/GDW 1376.1-2013, the same Fn in Q/GDW 376.1-2009):

- AFN 00 confirmation/denial: F1 all confirmed, F2 all denied, F3 item by item (AFN, then
  DA DT ERR per item).
- AFN 01 reset F1..F4; AFN 02 link test F1 login, F2 logout, F3 heartbeat.
- AFN 04 F10 / AFN 0A F10: the meter archive (measuring point parameters, 27 bytes each);
  AFN 04 / 0A F1 upstream communication parameters, F3 master station IP addresses, ports
  and APN.
- AFN 05 F31 clock set (A.1), F1 remote trip (alarm delay and limit time), F2 allow close.
- AFN 0C class 1: F2 terminal clock, F25 instantaneous power/voltage/current, F33 forward
  energy indications (active, reactive, quadrants I and IV), F129 forward active and F130
  forward reactive indications.
- AFN 0D class 2: F161/F162 daily frozen forward active/reactive indications, F177/F178
  monthly frozen, F185 daily frozen forward active maximum demand, curves F81-F84 active
  power, F89-F91 voltage, F92-F94 current, F101 forward active energy, F105 power factor.
- AFN 0E class 3: F1 important and F2 general events with their ERC records (ERC1, 3, 10,
  12, 13, 14, 21, 31 decoded; others kept as bytes).
- AFN 10 F1 transparent forwarding to a port.

Decoding raises FrameError for data that do not fit a layout and UnknownFn for an Fn without
one, nothing else (fuzzed by tests/fuzz).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

import attrs

from fep.errors import FrameError, ProtocolError
from fep.protocols.gw3761 import formats
from fep.protocols.gw3761.formats import TimeFields
from fep.protocols.gw3761.frames import (
    Address,
    Afn,
    Control,
    EventCounter,
    Frame,
    Function,
    Seq,
    TimeLabel,
    carries_pw,
    encode_da,
    encode_dt,
    fn_groups,
    fns_of,
    point_groups,
    points_of,
)

PROTOCOL: Final = "gw3761"
DEFAULT_PW: Final = bytes(16)


class UnknownFn(ProtocolError):
    """An AFN/Fn pair fep has no layout for: the rest of its frame cannot be split."""

    def __init__(self, afn: int, fn: int, uplink: bool) -> None:
        self.afn, self.fn, self.uplink = afn, fn, uplink
        super().__init__(
            f"no layout for AFN {afn:02X} F{fn} ({'uplink' if uplink else 'downlink'})",
            protocol=PROTOCOL,
        )


class Reader:
    """Bytes read from the front, every read bounded by what is left."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.pos = 0
        self.offset = offset

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FrameError(f"{field}: {n} bytes wanted, {self.left} left",
                             offset=self.offset + self.pos, field=field)  # fmt: skip
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def fmt(self, name: str, field: str) -> Any:
        f = formats.FORMATS[name]
        at = self.offset + self.pos
        return f.decode(self.take(f.size, field), at)


# ---------------------------------------------------------------------------
# Typed values
# ---------------------------------------------------------------------------


@attrs.frozen
class Indications:
    """Energy indications of one quantity: when the terminal read the meter (A.15), the
    number of tariffs M, and total then tariffs 1..M (kWh or kvarh; None: no data)."""

    read_time: datetime | None
    values: tuple[Decimal | None, ...]

    @property
    def rates(self) -> int:
        return len(self.values) - 1

    @property
    def total(self) -> Decimal | None:
        return self.values[0]


@attrs.frozen
class ForwardIndications:
    """C1 F33: forward active (A.14), forward reactive, quadrant I and IV reactive (A.11)."""

    read_time: datetime | None
    active: tuple[Decimal | None, ...]
    reactive: tuple[Decimal | None, ...]
    q1: tuple[Decimal | None, ...]
    q4: tuple[Decimal | None, ...]


# C1 F25 field order and formats after the read time.
INSTANT_FIELDS: Final = (
    *((f"p{s}", "A.9") for s in ("", "a", "b", "c")),
    *((f"q{s}", "A.9") for s in ("", "a", "b", "c")),
    *((f"pf{s}", "A.5") for s in ("", "a", "b", "c")),
    *((f"u{s}", "A.7") for s in ("a", "b", "c")),
    *((f"i{s}", "A.25") for s in ("a", "b", "c")),
    ("i0", "A.25"),
    *((f"s{s}", "A.9") for s in ("", "a", "b", "c")),
)


@attrs.frozen
class Instantaneous:
    """C1 F25: active (kW), reactive (kvar), power factor (%), voltage (V), current (A),
    neutral current, apparent power (kVA), total then phases A, B, C."""

    read_time: datetime | None
    values: Mapping[str, Decimal | None]


@attrs.frozen
class Frozen:
    """A class 2 frozen value set: the day (Td_d) or month (Td_m, day 1) it belongs to."""

    day: date
    data: Indications | Demand


@attrs.frozen
class Demand:
    """Maximum demand (kW, A.23) and when it occurred (A.17), total then tariffs."""

    read_time: datetime | None
    values: tuple[tuple[Decimal | None, TimeFields | None], ...]


@attrs.frozen
class CurveRequest:
    """Td_c: the first point's time (A.15), the density code and the number of points."""

    start: datetime
    density: int = 1
    count: int = 96


@attrs.frozen
class Curve:
    """A class 2 curve: Td_c and the points' values."""

    start: datetime
    density: int
    values: tuple[Decimal | None, ...]


# Curve density codes (appendix: 1 = 15 min, 2 = 30, 3 = 60, 254 = 5, 255 = 1; 0 none).
DENSITY_MINUTES: Final = MappingProxyType({1: 15, 2: 30, 3: 60, 254: 5, 255: 1})


@attrs.frozen
class EventsRequest:
    """AFN 0E F1/F2: records from pointer Pm up to (not including) Pn."""

    start: int
    end: int


def _frozen_fields(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(fields))


@attrs.frozen
class EventRecord:
    """One ERC record: its code, when it happened, the point it concerns (if any), whether
    it starts (True) or ends (False) a condition (None: no such flag), its decoded fields
    and its bytes."""

    erc: int
    time: datetime | None
    point: int | None = None
    start: bool | None = None
    fields: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_fields)
    raw: bytes = b""


@attrs.frozen
class Events:
    """AFN 0E F1/F2 answer: the event counters EC1/EC2, the pointers and the records."""

    important: int
    general: int
    start: int
    end: int
    records: tuple[EventRecord, ...]


@attrs.frozen
class ArchiveEntry:
    """AFN 04/0A F10: one meter of the terminal's archive."""

    number: int
    point: int
    port: int
    address: str
    protocol: int = 30  # 1: DL/T 645-1997, 2: AC sampling, 30: DL/T 645-2007, 31: PLC
    baud: int = 2400  # 0: the port's default
    password: bytes = bytes(6)
    rates: int = 4
    integer_digits: int = 6
    decimal_digits: int = 2
    collector: str = "000000000000"
    user_class: int = 0


@attrs.frozen
class ForwardRequest:
    """AFN 10 F1 down: port, line settings, how long to wait for the answer and between its
    bytes, and the bytes to send."""

    port: int
    payload: bytes
    baud: int = 2400
    parity: str = "E"  # N, E, O
    data_bits: int = 8
    stop_bits: int = 1
    frame_timeout: float = 20.0  # seconds
    byte_timeout: float = 0.1  # seconds


@attrs.frozen
class ForwardAnswer:
    """AFN 10 F1 up: the port and the bytes that came back (empty: nothing came)."""

    port: int
    payload: bytes


@attrs.frozen
class ConfirmItem:
    """AFN 00 F3: one data unit confirmed (error 0) or denied (error code)."""

    point: int
    fn: int
    error: int = 0


@attrs.frozen
class ItemConfirmation:
    afn: int
    items: tuple[ConfirmItem, ...]


@attrs.frozen
class Trip:
    """AFN 05 F1: alarm delay (minutes, 0..15) and limit time (half hours, 0: until
    allowed to close again)."""

    alarm_delay: int = 0
    limit_half_hours: int = 0


@attrs.frozen
class UplinkParameters:
    """AFN 04 / 0A F1, the terminal's upstream communication port parameters: the data
    set's RTS delay (20 ms units, 0..255), the delay it may take to send as initiator
    (minutes, 0..255), its answer timeout (seconds, 0..4095) and resends (0..3) as
    initiator, the services it wants confirmed (flags: D0 class 1 data, D1 class 2, D2
    class 3 events) and its heartbeat period (minutes, 0..255)."""

    rts: int = 0
    delay: int = 0
    timeout: int = 30
    retries: int = 3
    confirm: int = 0
    heartbeat: int = 15


@attrs.frozen
class MasterStations:
    """AFN 04 / 0A F3: the main and backup master stations (IPv4 address and port) and
    the APN (16 ASCII bytes, NUL padded)."""

    host: str = "0.0.0.0"
    port: int = 0
    host2: str = "0.0.0.0"
    port2: int = 0
    apn: str = ""


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------

Decode = Callable[[Reader], Any]
Encode = Callable[[Any], bytes]


@attrs.frozen
class Layout:
    name: str
    decode: Decode
    encode: Encode


def _none_decode(r: Reader) -> None:
    return None


def _none_encode(v: Any) -> bytes:
    return b""


EMPTY = Layout("no data", _none_decode, _none_encode)


def _format(name: str, label: str) -> Layout:
    f = formats.FORMATS[name]
    return Layout(label, lambda r: r.fmt(name, label), f.encode)


def _rates(r: Reader) -> int:
    m = r.byte("M")
    if m > 63:  # M is at most 14 in practice; D6-D7 are never set
        raise FrameError(f"tariff count {m}", offset=r.offset + r.pos - 1, field="M")
    return m


def _values(r: Reader, name: str, count: int, label: str) -> tuple[Any, ...]:
    return tuple(r.fmt(name, label) for _ in range(count))


def _indications(name: str) -> Layout:
    def decode(r: Reader) -> Indications:
        read_time = r.fmt("A.15", "read time")
        m = _rates(r)
        return Indications(read_time, _values(r, name, m + 1, "indication"))

    def encode(v: Indications) -> bytes:
        return (formats.encode("A.15", v.read_time) + bytes([v.rates])
                + b"".join(formats.encode(name, x) for x in v.values))  # fmt: skip

    return Layout(f"indications {name}", decode, encode)


def _f33_decode(r: Reader) -> ForwardIndications:
    read_time = r.fmt("A.15", "read time")
    m = _rates(r)
    return ForwardIndications(
        read_time, _values(r, "A.14", m + 1, "active"), _values(r, "A.11", m + 1, "reactive"),
        _values(r, "A.11", m + 1, "q1"), _values(r, "A.11", m + 1, "q4"),
    )  # fmt: skip


def _f33_encode(v: ForwardIndications) -> bytes:
    out = formats.encode("A.15", v.read_time) + bytes([len(v.active) - 1])
    out += b"".join(formats.encode("A.14", x) for x in v.active)
    for group in (v.reactive, v.q1, v.q4):
        out += b"".join(formats.encode("A.11", x) for x in group)
    return out


def _f25_decode(r: Reader) -> Instantaneous:
    read_time = r.fmt("A.15", "read time")
    return Instantaneous(read_time, {k: r.fmt(f, k) for k, f in INSTANT_FIELDS})


def _f25_encode(v: Instantaneous) -> bytes:
    return formats.encode("A.15", v.read_time) + b"".join(
        formats.encode(f, v.values.get(k)) for k, f in INSTANT_FIELDS
    )


def _frozen(td: str, inner: Layout) -> Layout:
    def decode(r: Reader) -> Frozen:
        day = r.fmt(td, "Td")
        if day is None:
            raise FrameError("frozen data without its day", offset=r.offset + r.pos, field="Td")
        return Frozen(day, inner.decode(r))

    def encode(v: Frozen) -> bytes:
        return formats.encode(td, v.day) + inner.encode(v.data)

    return Layout(f"frozen {td} {inner.name}", decode, encode)


def _demand_decode(r: Reader) -> Demand:
    read_time = r.fmt("A.15", "read time")
    m = _rates(r)
    values = tuple((r.fmt("A.23", "demand"), r.fmt("A.17", "demand time")) for _ in range(m + 1))
    return Demand(read_time, values)


def _demand_encode(v: Demand) -> bytes:
    out = formats.encode("A.15", v.read_time) + bytes([len(v.values) - 1])
    return out + b"".join(formats.encode("A.23", d) + formats.encode("A.17", t)
                          for d, t in v.values)  # fmt: skip


def _td_c(r: Reader) -> tuple[datetime, int, int]:
    start = r.fmt("A.15", "Td_c start")
    if start is None:
        raise FrameError("curve without its start", offset=r.offset + r.pos, field="Td_c")
    return start, r.byte("density"), r.byte("points")


def _curve(name: str) -> Layout:
    def decode(r: Reader) -> Curve:
        start, density, count = _td_c(r)
        return Curve(start, density, _values(r, name, count, "curve point"))

    def encode(v: Curve) -> bytes:
        return (formats.encode("A.15", v.start) + bytes([v.density, len(v.values)])
                + b"".join(formats.encode(name, x) for x in v.values))  # fmt: skip

    return Layout(f"curve {name}", decode, encode)


def _curve_request_decode(r: Reader) -> CurveRequest:
    return CurveRequest(*_td_c(r))


def _curve_request_encode(v: CurveRequest) -> bytes:
    return formats.encode("A.15", v.start) + bytes([v.density, v.count])


CURVE_REQUEST = Layout("Td_c", _curve_request_decode, _curve_request_encode)


def _pn_flag(r: Reader) -> tuple[int, bool]:
    v = r.u16("point")
    return v & 0x0FFF, bool(v & 0x8000)


def _erc_fields(erc: int, r: Reader) -> tuple[datetime | None, int | None, bool | None,
                                              dict[str, Any]]:  # fmt: skip
    """The fields of the known ERC records (the record's own bytes in ``r``)."""
    when = r.fmt("A.15", "ERC time")
    if erc == 1:
        flags = r.byte("flags")
        old, new = r.take(4, "old version"), r.take(4, "new version")
        return when, None, None, {"flags": flags, "old_version": old.decode("latin-1"),
                                  "new_version": new.decode("latin-1")}  # fmt: skip
    if erc == 3:
        station = r.byte("station")
        units = []
        while r.left >= 4:
            da1, da2, dt1, dt2 = r.take(4, "DADT")
            units.append((da1, da2, dt1, dt2))
        return when, None, None, {"station": station, "units": tuple(units)}
    if erc == 10:
        point, start = _pn_flag(r)
        flags = r.byte("flags")
        values = {k: r.fmt(f, k) for k, f in (("ua", "A.7"), ("ub", "A.7"), ("uc", "A.7"),
                  ("ia", "A.25"), ("ib", "A.25"), ("ic", "A.25"), ("energy", "A.14"))}  # fmt: skip
        return when, point, start, {"flags": flags, **values}
    if erc in (12, 13):
        point, start = _pn_flag(r)
        fields = {"flags": r.byte("flags")} if erc == 13 else {}
        return when, point, start, fields
    if erc == 14:
        return when, None, None, {"restored": r.fmt("A.15", "restored")}
    if erc == 21:
        return when, None, None, {"fault": r.byte("fault")}
    if erc == 31:
        point, start = _pn_flag(r)
        return when, point, start, {
            "last_read": r.fmt("A.15", "last read"),
            "active": r.fmt("A.14", "active"),
            "reactive": r.fmt("A.11", "reactive"),
        }
    return when, None, None, {}


ERC_DECODED: Final = frozenset({1, 3, 10, 12, 13, 14, 21, 31})


def decode_event_record(erc: int, raw: bytes, offset: int = 0) -> EventRecord:
    r = Reader(raw, offset)
    if erc not in ERC_DECODED:
        # Most records start with their time (A.15); keep it if it reads as one.
        when = None
        if len(raw) >= 5:
            try:
                when = formats.decode("A.15", raw[:5], offset)
            except FrameError:
                when = None
        return EventRecord(erc, when, raw=raw)
    when, point, start, fields = _erc_fields(erc, r)
    return EventRecord(erc, when, point, start, fields, raw)


def encode_event_record(record: EventRecord) -> bytes:
    """ERC, Le and the record's bytes (built from its fields when it has no bytes)."""
    body = record.raw or _erc_body(record)
    return bytes([record.erc, len(body)]) + body


def _erc_body(rec: EventRecord) -> bytes:
    f = rec.fields
    out = formats.encode("A.15", rec.time)
    flagged = ((rec.point or 0) & 0x0FFF | (0x8000 if rec.start else 0)).to_bytes(2, "little")
    if rec.erc == 14:
        return out + formats.encode("A.15", f.get("restored"))
    if rec.erc == 13:
        return out + flagged + bytes([f.get("flags", 0)])
    if rec.erc == 12:
        return out + flagged
    if rec.erc == 10:
        out += flagged + bytes([f.get("flags", 0)])
        for k, fmt_name in (("ua", "A.7"), ("ub", "A.7"), ("uc", "A.7"), ("ia", "A.25"),
                            ("ib", "A.25"), ("ic", "A.25"), ("energy", "A.14")):  # fmt: skip
            out += formats.encode(fmt_name, f.get(k))
        return out
    if rec.erc == 21:
        return out + bytes([f.get("fault", 0)])
    if rec.erc == 31:
        return (out + flagged + formats.encode("A.15", f.get("last_read"))
                + formats.encode("A.14", f.get("active"))
                + formats.encode("A.11", f.get("reactive")))  # fmt: skip
    raise ValueError(f"ERC{rec.erc} without its bytes")


def _events_decode(r: Reader) -> Events:
    ec1, ec2, pm, pn = r.take(4, "event pointers")
    records = []
    # Each record is at least its ERC and Le bytes: bounded by the data left.
    while r.left:
        erc = r.byte("ERC")
        le = r.byte("Le")
        at = r.offset + r.pos
        records.append(decode_event_record(erc, r.take(le, f"ERC{erc}"), at))
    return Events(ec1, ec2, pm, pn, tuple(records))


def _events_encode(v: Events) -> bytes:
    return bytes([v.important, v.general, v.start, v.end]) + b"".join(
        encode_event_record(rec) for rec in v.records
    )


def _events_request_decode(r: Reader) -> EventsRequest:
    pm, pn = r.take(2, "event pointers")
    return EventsRequest(pm, pn)


def _heartbeat_decode(r: Reader) -> formats.Clock | None:
    # Q/GDW 376.1-2009 heartbeats carry nothing; many 1376.1-2013 terminals add their clock
    # (A.1). The heartbeat is the frame's only unit, so six bytes left are that clock.
    if r.left == 6:
        clock = r.fmt("A.1", "heartbeat clock")
        return clock if isinstance(clock, formats.Clock) else None
    return None


def _heartbeat_encode(v: formats.Clock | None) -> bytes:
    return b"" if v is None else formats.encode("A.1", v)


BAUDS: Final = (300, 600, 1200, 2400, 4800, 7200, 9600, 19200)


def _archive_entry_decode(r: Reader) -> ArchiveEntry:
    number, point = r.u16("number"), r.u16("point")
    baud_port = r.byte("port")
    protocol = r.byte("protocol")
    address = r.fmt("A.12", "address") or "000000000000"
    password = r.take(6, "password")
    rates = r.byte("rates") & 0x3F
    digits = r.byte("digits")
    collector = r.fmt("A.12", "collector") or "000000000000"
    user_class = r.byte("user class")
    code = baud_port >> 5
    return ArchiveEntry(number, point, baud_port & 0x1F, address, protocol,
                        BAUDS[code] if code else 0, password, rates, (digits >> 2 & 3) + 4,
                        (digits & 3) + 1, collector, user_class)  # fmt: skip


def encode_archive_entry(e: ArchiveEntry) -> bytes:
    # F10's baud codes 1..7 are 600..19200 (as in forwarding); 0 is "the port's default".
    if (e.baud != 0 and e.baud not in BAUDS[1:]) or not 1 <= e.port <= 31:
        raise ValueError(f"baud {e.baud} / port {e.port} not in the standard's codes")
    code = BAUDS.index(e.baud) if e.baud else 0
    return (
        e.number.to_bytes(2, "little") + e.point.to_bytes(2, "little")
        + bytes([code << 5 | e.port, e.protocol])
        + formats.encode("A.12", e.address) + e.password
        + bytes([e.rates & 0x3F, (e.integer_digits - 4) << 2 | (e.decimal_digits - 1)])
        + formats.encode("A.12", e.collector) + bytes([e.user_class])
    )  # fmt: skip


def _archive_decode(r: Reader) -> tuple[ArchiveEntry, ...]:
    n = r.u16("count")
    if n * 27 > r.left:
        raise FrameError(f"{n} archive entries do not fit {r.left} bytes",
                         offset=r.offset + r.pos, field="count")  # fmt: skip
    return tuple(_archive_entry_decode(r) for _ in range(n))


def _archive_encode(entries: Sequence[ArchiveEntry]) -> bytes:
    return len(entries).to_bytes(2, "little") + b"".join(map(encode_archive_entry, entries))


def _archive_query_decode(r: Reader) -> tuple[int, ...]:
    n = r.u16("count")
    if 2 * n > r.left:
        raise FrameError(f"{n} numbers do not fit {r.left} bytes",
                         offset=r.offset + r.pos, field="count")  # fmt: skip
    return tuple(r.u16("number") for _ in range(n))


def _archive_query_encode(numbers: Sequence[int]) -> bytes:
    return len(numbers).to_bytes(2, "little") + b"".join(
        n.to_bytes(2, "little") for n in numbers)


_PARITY = {"N": 0, "E": 0x08, "O": 0x0C}


def _timeout_byte(seconds: float) -> int:
    if seconds >= 1.28 or (seconds == int(seconds) and seconds >= 1):
        return 0x80 | min(int(seconds), 127)
    return min(round(seconds * 100), 127)


def _timeout_seconds(byte: int) -> float:
    return float(byte & 0x7F) if byte & 0x80 else (byte & 0x7F) / 100


def _forward_request_decode(r: Reader) -> ForwardRequest:
    port, control, frame_to, byte_to = r.take(4, "forward settings")
    length = r.u16("length")
    payload = r.take(length, "forwarded bytes")
    parity = "N" if not control & 0x08 else ("O" if control & 0x04 else "E")
    return ForwardRequest(port, payload, BAUDS[control >> 5], parity, (control & 3) + 5,
                          2 if control & 0x10 else 1, _timeout_seconds(frame_to),
                          byte_to / 100)  # fmt: skip


def _forward_request_encode(v: ForwardRequest) -> bytes:
    control = (BAUDS.index(v.baud) << 5 | (0x10 if v.stop_bits == 2 else 0)
               | _PARITY[v.parity] | (v.data_bits - 5))  # fmt: skip
    return (bytes([v.port, control, _timeout_byte(v.frame_timeout),
                   min(round(v.byte_timeout * 100), 255)])
            + len(v.payload).to_bytes(2, "little") + v.payload)  # fmt: skip


def _forward_answer_decode(r: Reader) -> ForwardAnswer:
    port = r.byte("port")
    return ForwardAnswer(port, r.take(r.u16("length"), "forwarded bytes"))


def _forward_answer_encode(v: ForwardAnswer) -> bytes:
    return bytes([v.port]) + len(v.payload).to_bytes(2, "little") + v.payload


def _confirm_items_decode(r: Reader) -> ItemConfirmation:
    afn = r.byte("AFN")
    items = []
    while r.left:
        at = r.offset + r.pos
        da1, da2, dt1, dt2, err = r.take(5, "confirmed item")
        for p in points_of(da1, da2, at):
            for f in fns_of(dt1, dt2, at + 2):
                items.append(ConfirmItem(p, f, err))
    return ItemConfirmation(afn, tuple(items))


def _confirm_items_encode(v: ItemConfirmation) -> bytes:
    return bytes([v.afn]) + b"".join(
        encode_da([i.point]) + encode_dt([i.fn]) + bytes([i.error]) for i in v.items
    )


def _uplink_decode(r: Reader) -> UplinkParameters:
    rts, delay = r.byte("RTS delay"), r.byte("initiator delay")
    word = r.u16("timeout and resends")
    confirm, heartbeat = r.byte("confirmed services"), r.byte("heartbeat")
    return UplinkParameters(rts, delay, word & 0x0FFF, (word >> 12) & 0x03, confirm, heartbeat)


def _uplink_encode(v: UplinkParameters) -> bytes:
    word = (v.timeout & 0x0FFF) | (v.retries & 0x03) << 12
    return bytes([v.rts & 0xFF, v.delay & 0xFF]) + word.to_bytes(2, "little") + bytes(
        [v.confirm & 0xFF, v.heartbeat & 0xFF])


def _ip_decode(r: Reader, field: str) -> tuple[str, int]:
    ip = ".".join(str(b) for b in r.take(4, field))
    return ip, r.u16(f"{field} port")


def _ip_encode(host: str, port: int) -> bytes:
    parts = [int(p) for p in host.split(".")]
    if len(parts) != 4 or any(not 0 <= p <= 255 for p in parts):
        raise ValueError(f"{host!r} is not an IPv4 address")
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} is not 0..65535")
    return bytes(parts) + port.to_bytes(2, "little")


def _stations_decode(r: Reader) -> MasterStations:
    host, port = _ip_decode(r, "main master station")
    host2, port2 = _ip_decode(r, "backup master station")
    apn = r.take(16, "APN").rstrip(b"\x00").decode("ascii", errors="replace")
    return MasterStations(host, port, host2, port2, apn)


def _stations_encode(v: MasterStations) -> bytes:
    apn = v.apn.encode("ascii", errors="replace")  # what was read is written back as it can
    if len(apn) > 16:
        raise ValueError(f"APN {v.apn!r} is longer than 16 characters")
    return (_ip_encode(v.host, v.port) + _ip_encode(v.host2, v.port2)
            + apn.ljust(16, b"\x00"))  # fmt: skip


def _trip_decode(r: Reader) -> Trip:
    b = r.byte("trip")
    return Trip(b >> 4, b & 0x0F)


def _trip_encode(v: Trip) -> bytes:
    return bytes([(v.alarm_delay & 0x0F) << 4 | (v.limit_half_hours & 0x0F)])


# (AFN, Fn) -> (downlink layout, uplink layout). Requests of class 1 carry no data.
_C1 = {
    2: (EMPTY, _format("A.1", "terminal clock")),
    25: (EMPTY, Layout("instantaneous", _f25_decode, _f25_encode)),
    33: (EMPTY, Layout("forward indications", _f33_decode, _f33_encode)),
    129: (EMPTY, _indications("A.14")),
    130: (EMPTY, _indications("A.11")),
}
_TD_D = _format("A.20", "Td_d")
_TD_M = _format("A.21", "Td_m")
_C2: dict[int, tuple[Layout, Layout]] = {
    161: (_TD_D, _frozen("A.20", _indications("A.14"))),
    162: (_TD_D, _frozen("A.20", _indications("A.11"))),
    177: (_TD_M, _frozen("A.21", _indications("A.14"))),
    178: (_TD_M, _frozen("A.21", _indications("A.11"))),
    185: (_TD_D, _frozen("A.20", Layout("demand", _demand_decode, _demand_encode))),
}
for _fn, _name in ((81, "A.9"), (82, "A.9"), (83, "A.9"), (84, "A.9"), (89, "A.7"), (90, "A.7"),
                   (91, "A.7"), (92, "A.25"), (93, "A.25"), (94, "A.25"), (101, "A.13"),
                   (105, "A.5")):  # fmt: skip
    _C2[_fn] = (CURVE_REQUEST, _curve(_name))

LAYOUTS: Mapping[tuple[int, int], tuple[Layout, Layout]] = MappingProxyType({
    (Afn.CONFIRM, 1): (EMPTY, EMPTY),
    (Afn.CONFIRM, 2): (EMPTY, EMPTY),
    (Afn.CONFIRM, 3): (Layout("items", _confirm_items_decode, _confirm_items_encode),) * 2,
    **{(Afn.RESET, fn): (EMPTY, EMPTY) for fn in (1, 2, 3, 4)},
    (Afn.LINK, 1): (EMPTY, EMPTY),
    (Afn.LINK, 2): (EMPTY, EMPTY),
    (Afn.LINK, 3): (EMPTY, Layout("heartbeat", _heartbeat_decode, _heartbeat_encode)),
    (Afn.SET_PARAMETERS, 1): (Layout("uplink parameters", _uplink_decode, _uplink_encode),
                              EMPTY),
    (Afn.SET_PARAMETERS, 3): (Layout("master stations", _stations_decode, _stations_encode),
                              EMPTY),
    (Afn.QUERY_PARAMETERS, 1): (EMPTY, Layout("uplink parameters", _uplink_decode,
                                              _uplink_encode)),
    (Afn.QUERY_PARAMETERS, 3): (EMPTY, Layout("master stations", _stations_decode,
                                              _stations_encode)),
    (Afn.SET_PARAMETERS, 10): (Layout("archive", _archive_decode, _archive_encode), EMPTY),
    (Afn.QUERY_PARAMETERS, 10): (
        Layout("archive numbers", _archive_query_decode, _archive_query_encode),
        Layout("archive", _archive_decode, _archive_encode),
    ),
    (Afn.CONTROL, 1): (Layout("trip", _trip_decode, _trip_encode), EMPTY),
    (Afn.CONTROL, 2): (EMPTY, EMPTY),
    (Afn.CONTROL, 31): (_format("A.1", "clock"), EMPTY),
    **{(Afn.CLASS1, fn): pair for fn, pair in _C1.items()},
    **{(Afn.CLASS2, fn): pair for fn, pair in _C2.items()},
    **{(Afn.CLASS3, fn): (
        Layout("event pointers", _events_request_decode,
               lambda v: bytes([v.start, v.end])),
        Layout("events", _events_decode, _events_encode),
    ) for fn in (1, 2)},
    (Afn.FORWARD, 1): (
        Layout("forward", _forward_request_decode, _forward_request_encode),
        Layout("forwarded", _forward_answer_decode, _forward_answer_encode),
    ),
})  # fmt: skip

CURVE_FNS: Final = frozenset(fn for fn, (req, _) in _C2.items() if req is CURVE_REQUEST)
DAILY_FNS: Final = frozenset(fn for fn, (req, _) in _C2.items() if req is _TD_D)
MONTHLY_FNS: Final = frozenset(fn for fn, (req, _) in _C2.items() if req is _TD_M)


def layout(afn: int, fn: int, uplink: bool) -> Layout:
    pair = LAYOUTS.get((afn, fn))
    if pair is None:
        raise UnknownFn(afn, fn, uplink)
    return pair[1 if uplink else 0]


# ---------------------------------------------------------------------------
# Data units
# ---------------------------------------------------------------------------


@attrs.frozen
class Item:
    """The data of one point Pn and class Fn (None: the pair carries no data)."""

    point: int
    fn: int
    value: Any = None


def decode_units(afn: int, data: bytes, uplink: bool, offset: int = 0) -> list[Item]:
    """Every (Pn, Fn) item of a frame's data units, in order.

    AFN 00 F3 takes the rest of the frame. The work is bounded by ``len(data)``: a DA/DT
    pair names at most 64 items and costs 4 bytes."""
    r = Reader(data, offset)
    items: list[Item] = []
    while r.left:
        at = r.offset + r.pos
        da1, da2, dt1, dt2 = r.take(4, "DA DT")
        points = points_of(da1, da2, at)
        fns = fns_of(dt1, dt2, at + 2)
        for p in points:
            for f in fns:
                value = layout(afn, f, uplink).decode(r)
                items.append(Item(p, f, value))
    return items


def encode_unit(afn: int, points: Sequence[int], fns: Sequence[int], uplink: bool,
                values: Mapping[tuple[int, int], Any] | None = None) -> bytes:  # fmt: skip
    """One data unit: DA DT and each (point, class) pair's value from ``values``."""
    out = bytearray(encode_da(points) + encode_dt(fns))
    for p in sorted(points):
        for f in sorted(fns):
            out += layout(afn, f, uplink).encode((values or {}).get((p, f)))
    return bytes(out)


def encode_items(afn: int, items: Iterable[Item], uplink: bool) -> list[bytes]:
    """Items as data units, one per (point, class) pair (what terminals send back)."""
    return [encode_unit(afn, [i.point], [i.fn], uplink, {(i.point, i.fn): i.value})
            for i in items]  # fmt: skip


def request_units(afn: int, points: Iterable[int], fns: Iterable[int],
                  value: Any = None) -> list[bytes]:  # fmt: skip
    """Data units asking every point for every class, grouped by eight as DA/DT allow,
    each pair with the same request ``value`` (a Td, pointers; None for class 1)."""
    units = []
    for pg in point_groups(points):
        for fg in fn_groups(fns):
            values = {(p, f): value for p in pg for f in fg}
            units.append(encode_unit(afn, pg, fg, False, values))
    return units


# ---------------------------------------------------------------------------
# Requests (master station side) and answers
# ---------------------------------------------------------------------------

_REQUEST_FUNCTION: Final = MappingProxyType({
    Afn.RESET: Function.RESET,
    Afn.SET_PARAMETERS: Function.REQUEST_CLASS1,
    Afn.CONTROL: Function.REQUEST_CLASS1,
})  # fmt: skip


@attrs.define
class Master:
    """A master station's side of one terminal: builds requests (counting PFC, from which
    PSEQ comes) and the confirmations of what the terminal initiates."""

    address: Address
    pfc: int = 0
    pw: bytes = DEFAULT_PW
    # Minutes a request stays valid (Tp's allowed delay); None: requests carry no Tp.
    delay: int | None = None

    def request(self, afn: int, data: bytes, now: TimeFields | None = None,
                con: bool = False) -> Frame:  # fmt: skip
        function = _REQUEST_FUNCTION.get(Afn(afn), Function.REQUEST_CLASS2)
        pfc, self.pfc = self.pfc, (self.pfc + 1) & 0xFF
        tp = None
        if self.delay is not None and now is not None:
            tp = TimeLabel(pfc, now, self.delay)
        return Frame(
            Control(function, uplink=False, initiator=True),
            attrs.evolve(self.address, group=False),
            afn,
            Seq(pfc & 0x0F, tpv=tp is not None, con=con or afn in (Afn.RESET,
                Afn.SET_PARAMETERS, Afn.CONTROL)),
            data,
            self.pw if carries_pw(False, afn) else None,
            None,
            tp,
        )  # fmt: skip

    def confirm(self, frame: Frame) -> Frame:
        """AFN 00 F1 for what the terminal sent with CON set (login, heartbeat, reported
        events), with its sequence number."""
        return Frame(
            Control(Function.LINK_STATUS if frame.afn == Afn.LINK else Function.ACK,
                    uplink=False, initiator=False),
            frame.address, Afn.CONFIRM, Seq(frame.seq.seq), encode_unit(0, [0], [1], False),
        )  # fmt: skip


def answer_frame(request: Frame, data: bytes, *, acd: int | None = None,
                 tp: TimeLabel | None = None, function: int = Function.RESPONSE,
                 afn: int | None = None) -> Frame:  # fmt: skip
    """A terminal's answer to ``request`` (RSEQ = its PSEQ)."""
    ec = None if acd is None else EventCounter(acd & 0xFF, 0)
    return Frame(
        Control(function, uplink=True, initiator=False, fcb_acd=ec is not None),
        request.address, request.afn if afn is None else afn,
        Seq(request.seq.seq, tpv=tp is not None), data, None, ec, tp,
    )  # fmt: skip


@attrs.frozen
class Login:
    address: Address


@attrs.frozen
class Logout:
    address: Address


@attrs.frozen
class Heartbeat:
    address: Address
    clock: formats.Clock | None = None


@attrs.frozen
class Confirmed:
    """AFN 00 F1 (all), or F3 with every item confirmed."""

    address: Address
    items: tuple[ConfirmItem, ...] = ()


@attrs.frozen
class Denied:
    """AFN 00 F2 (all), or F3 with at least one item denied (``items``)."""

    address: Address
    items: tuple[ConfirmItem, ...] = ()


@attrs.frozen
class Data:
    """A frame's data items (answers, or data the terminal reports by itself)."""

    address: Address
    afn: int
    items: tuple[Item, ...]
    reported: bool = False  # sent by the terminal as initiator (PRM = 1)


Event = Login | Logout | Heartbeat | Confirmed | Denied | Data


def decode_event(frame: Frame) -> Event:
    """The meaning of a (reassembled) frame; FrameError or UnknownFn for data that do not
    decode."""
    items = decode_units(frame.afn, frame.data, frame.uplink)
    if frame.afn == Afn.LINK:
        fns = {i.fn for i in items}
        if fns == {1}:
            return Login(frame.address)
        if fns == {2}:
            return Logout(frame.address)
        if fns == {3}:
            return Heartbeat(frame.address, items[0].value)
        raise FrameError(f"link test frame with classes {sorted(fns)}", field="DT")
    if frame.afn == Afn.CONFIRM:
        fns = {i.fn for i in items}
        if fns == {1}:
            return Confirmed(frame.address)
        if fns == {2}:
            return Denied(frame.address)
        detail = tuple(c for i in items if isinstance(i.value, ItemConfirmation)
                       for c in i.value.items)  # fmt: skip
        if any(c.error for c in detail):
            return Denied(frame.address, detail)
        return Confirmed(frame.address, detail)
    return Data(frame.address, frame.afn, tuple(items), reported=frame.control.initiator)


def confirm_data(afn: int, items: Sequence[ConfirmItem]) -> bytes:
    """AFN 00 F3 data unit confirming/denying ``items`` of an ``afn`` request."""
    return encode_unit(Afn.CONFIRM, [0], [3], True, {(0, 3): ItemConfirmation(afn, tuple(items))})


__all__ = [
    "ArchiveEntry",
    "Confirmed",
    "Curve",
    "CurveRequest",
    "Data",
    "Demand",
    "Denied",
    "EventRecord",
    "Events",
    "EventsRequest",
    "ForwardAnswer",
    "ForwardIndications",
    "ForwardRequest",
    "Frozen",
    "Heartbeat",
    "Indications",
    "Instantaneous",
    "Item",
    "Login",
    "Logout",
    "Master",
    "MasterStations",
    "Trip",
    "UnknownFn",
    "UplinkParameters",
    "answer_frame",
    "decode_event",
    "decode_units",
    "encode_items",
    "encode_unit",
    "layout",
    "request_units",
]
