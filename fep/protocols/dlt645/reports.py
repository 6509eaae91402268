"""DL/T 645-2007 active reporting (主动上报), sans-IO: what meters behind a dialled-in DTU send
by themselves on its transparent GPRS session, and the exchange the master runs for it.

What a meter sends by itself (told from answers by the link, not by a request of ours):

- its active-reporting status word: a normal read answer (control 91) for DI ``04001501``
  whose data is the 12-byte status word, ``AA``, one count of new events per set bit (in
  bit order) and ``AA``; a bare 12-byte status word is taken too;
- any other normal read answer with the follow-up bit D5 set where no follow-up was asked:
  the "follow-up report" (跟随上报) signal that its status word has bits set; the answer's
  own data are taken like a data report;
- data it reports (frozen or load data, event records): a normal read answer for a DI the
  catalogue knows (readings), for a load-record DI (interval blocks) or for an event record
  (events).

A status word with bits set starts the exchange, one meter at a time (the meters share the
DTU's line): read ``04001501`` (a meter takes a reset only of bits it has had read), read the
event records its bits name (the n newest of each family, n its new-event count, at most
10), hand the records over to be stored (``Store``), and only once they are durable
(``stored(ticket)``) write the reset ``04001503`` (write data 14: a 12-byte word, 0 at each
bit to reset). Bits with no record family become one event each, timed when the link first
saw the bit. A store that fails resets nothing: the meter reports again (or resets itself
after its own delay).

``ReportLink.receive(bytes)`` gives actions: ``Reply(bytes)`` (write now; ``wait`` seconds
for its answer), ``Store(records, what, ticket)`` (store,
then call ``stored(ticket)`` or ``not_stored(ticket)``), ``Done(what)`` (for the log) and
``Bad`` (bad input, for the rate-limited log). Nothing here raises on input. There is no
timer: a request unanswered past its wait is sent again (or the exchange given up) with the
next bytes from the DTU, and no longer holds a pull back (``pending``); ``timeout()`` does
it at once.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, tzinfo
from typing import Final

import attrs

from fep.errors import FrameError, ProtocolError
from fep.model import EventKind, MeterEvent, Record, Severity
from fep.protocols.dlt645 import dataid
from fep.protocols.dlt645.client import PROFILE_DIS, decode_load_records
from fep.protocols.dlt645.dataid import DEFAULT_METER_TZ
from fep.protocols.dlt645.frames import (
    BROADCAST_ADDRESS,
    WILDCARD_ADDRESS,
    Frame,
    FrameDecoder,
    encode_address,
)
from fep.protocols.dlt645.services import (
    PROTOCOL,
    Function,
    Password,
    decode_read,
    encode_di,
    read_data,
    write_data,
)

REPORT_STATUS: Final = 0x04001501  # 主动上报状态字 (read)
REPORT_RESET: Final = 0x04001503  # 复位主动上报状态字 (write)
STATUS_BYTES: Final = 12
STATUS_BITS: Final = STATUS_BYTES * 8
SEPARATOR: Final = 0xAA
# Seconds the exchange waits for a meter's answer, and the requests sent again after silence.
ANSWER_WAIT: Final = 10.0
RETRIES: Final = 1
# Seconds within which the same report frame again is a repeat (dropped, counted).
REPEAT_WINDOW: Final = 300.0
REPEAT_MEMORY: Final = 256
# The password a reset is written with when the meter has none configured (meters do not
# check it for 04001503, see docs/protocols/dlt645.md "Active reporting").
RESET_PASSWORD: Final = Password(2, "000000")
BAD_KINDS: Final = ("checksum", "frame", "address", "unexpected", "report", "unknown",
                    "refused", "silent")


@attrs.frozen
class ReportBit:
    """One bit of the status word: what it means, and the event record family (a base DI of
    ``dataid.EVENT_RECORDS``) that holds its events, when fep decodes one."""

    name: str
    kind: EventKind
    severity: Severity
    record: int | None = None


def _phase_bits(first: int, phase: str) -> dict[int, ReportBit]:
    major, minor = Severity.MAJOR, Severity.MINOR
    names = (
        ("loss of voltage", EventKind.PHASE_LOSS, major),
        ("under-voltage", EventKind.UNDER_VOLTAGE, minor),
        ("over-voltage", EventKind.OVER_VOLTAGE, minor),
        ("loss of current", EventKind.PHASE_LOSS, major),
        ("over-current", EventKind.OVER_CURRENT, minor),
        ("overload", EventKind.OVER_CURRENT, minor),
        ("reverse power", EventKind.REVERSE_ENERGY, major),
        ("phase break", EventKind.PHASE_LOSS, major),
        ("current break", EventKind.PHASE_LOSS, major),
    )
    return {first + i: ReportBit(f"phase {phase} {name}", kind, severity)
            for i, (name, kind, severity) in enumerate(names)}  # fmt: skip


# The status word's bits (bit 0 = bit 0 of the first byte), as the 2013 filing of DL/T 645-2007
# lays them out; bits not listed are reserved.
REPORT_BITS: Final[Mapping[int, ReportBit]] = {
    0: ReportBit("relay malfunction", EventKind.METER_ERROR, Severity.MAJOR),
    1: ReportBit("ESAM error", EventKind.METER_ERROR, Severity.MAJOR),
    2: ReportBit("memory initialisation error", EventKind.METER_ERROR, Severity.MAJOR),
    3: ReportBit("clock battery low", EventKind.LOW_BATTERY, Severity.MINOR),
    4: ReportBit("internal program error", EventKind.METER_ERROR, Severity.MAJOR),
    5: ReportBit("memory fault", EventKind.METER_ERROR, Severity.MAJOR),
    7: ReportBit("clock fault", EventKind.METER_ERROR, Severity.MAJOR),
    8: ReportBit("reading battery low", EventKind.LOW_BATTERY, Severity.MINOR),
    9: ReportBit("credit overdrawn", EventKind.OTHER, Severity.INFO),
    10: ReportBit("meter cover opened", EventKind.COVER_OPEN, Severity.CRITICAL, 0x03300D00),
    11: ReportBit("terminal cover opened", EventKind.TERMINAL_COVER_OPEN, Severity.CRITICAL,
                  0x03300E00),
    12: ReportBit("constant magnetic field", EventKind.MAGNETIC_TAMPER, Severity.CRITICAL),
    13: ReportBit("power supply fault", EventKind.METER_ERROR, Severity.MAJOR),
    14: ReportBit("relay tripped", EventKind.OTHER, Severity.INFO),
    15: ReportBit("relay closed", EventKind.OTHER, Severity.INFO),
    **_phase_bits(16, "A"),
    **_phase_bits(32, "B"),
    **_phase_bits(48, "C"),
    64: ReportBit("voltage phase sequence reversed", EventKind.PHASE_IMBALANCE, Severity.MINOR),
    65: ReportBit("current phase sequence reversed", EventKind.PHASE_IMBALANCE, Severity.MINOR),
    66: ReportBit("voltage imbalance", EventKind.PHASE_IMBALANCE, Severity.MINOR),
    67: ReportBit("current imbalance", EventKind.PHASE_IMBALANCE, Severity.MINOR),
    68: ReportBit("auxiliary supply lost", EventKind.POWER_OUTAGE, Severity.MINOR),
    69: ReportBit("power down", EventKind.POWER_OUTAGE, Severity.MAJOR, 0x03110000),
    70: ReportBit("demand over limit", EventKind.OTHER, Severity.MINOR),
    71: ReportBit("power factor below limit", EventKind.OTHER, Severity.MINOR),
    72: ReportBit("severe current imbalance", EventKind.PHASE_IMBALANCE, Severity.MAJOR),
    73: ReportBit("reverse power flow", EventKind.REVERSE_ENERGY, Severity.MAJOR),
    74: ReportBit("all voltages lost", EventKind.POWER_OUTAGE, Severity.MAJOR),
    80: ReportBit("programmed", EventKind.OTHER, Severity.INFO),
    81: ReportBit("meter cleared", EventKind.OTHER, Severity.MAJOR, 0x03300100),
    82: ReportBit("demand cleared", EventKind.OTHER, Severity.MINOR),
    83: ReportBit("events cleared", EventKind.OTHER, Severity.MINOR, 0x03300300),
    84: ReportBit("time changed", EventKind.CLOCK_SET, Severity.INFO, 0x03300400),
    85: ReportBit("daily time table programmed", EventKind.OTHER, Severity.INFO),
    86: ReportBit("season table programmed", EventKind.OTHER, Severity.INFO),
    87: ReportBit("weekend programmed", EventKind.OTHER, Severity.INFO),
    88: ReportBit("holidays programmed", EventKind.OTHER, Severity.INFO),
    89: ReportBit("active combination programmed", EventKind.OTHER, Severity.INFO),
    90: ReportBit("reactive combination 1 programmed", EventKind.OTHER, Severity.INFO),
    91: ReportBit("reactive combination 2 programmed", EventKind.OTHER, Severity.INFO),
    92: ReportBit("settlement day programmed", EventKind.OTHER, Severity.INFO),
    93: ReportBit("tariff prices programmed", EventKind.OTHER, Severity.INFO),
    94: ReportBit("step tariff programmed", EventKind.OTHER, Severity.INFO),
    95: ReportBit("key updated", EventKind.OTHER, Severity.INFO),
}
_BIT_OF_RECORD: Final = {b.record: n for n, b in REPORT_BITS.items() if b.record is not None}


def bit_of_record(base: int) -> int | None:
    """The status bit of an event record family (``03300D00`` -> 10), None for none."""
    return _BIT_OF_RECORD.get(base)


# ---------------------------------------------------------------------------
# The status word
# ---------------------------------------------------------------------------


@attrs.frozen
class ReportStatus:
    """A status word: the bits set, with the meter's count of new events for each (1 when
    the meter sent no counts)."""

    counts: Mapping[int, int] = attrs.field(factory=dict)

    @property
    def bits(self) -> tuple[int, ...]:
        return tuple(sorted(self.counts))


def decode_status(data: bytes) -> ReportStatus:
    """The status word of a 04001501 answer: 12 bytes, then (optionally) ``AA``, one count
    per set bit and ``AA``. FrameError for anything else."""
    if len(data) < STATUS_BYTES:
        raise FrameError(f"status word is {STATUS_BYTES} bytes, got {len(data)}",
                         offset=len(data), field="status word")  # fmt: skip
    word = int.from_bytes(data[:STATUS_BYTES], "little")
    bits = [n for n in range(STATUS_BITS) if word >> n & 1]
    rest = data[STATUS_BYTES:]
    if not rest:
        return ReportStatus({n: 1 for n in bits})
    if rest[0] != SEPARATOR or rest[-1] != SEPARATOR or len(rest) != len(bits) + 2:
        raise FrameError(f"after the status word: AA, {len(bits)} counts and AA expected, got "
                         f"{rest.hex(' ')}", offset=STATUS_BYTES,
                         field="new-event counts")  # fmt: skip
    # A count of 0 or FF (a bit with no count, such as a fault state) is taken as one.
    counts = rest[1:-1]
    return ReportStatus({n: c if 0 < c < 0xFF else 1 for n, c in zip(bits, counts, strict=True)})


def encode_status(counts: Mapping[int, int], with_counts: bool = True) -> bytes:
    """The data of a 04001501 answer (the meter side)."""
    word = 0
    for n in counts:
        if not 0 <= n < STATUS_BITS:
            raise ValueError(f"status bit {n} is not 0..{STATUS_BITS - 1}")
        word |= 1 << n
    raw = word.to_bytes(STATUS_BYTES, "little")
    if not with_counts:
        return raw
    return raw + bytes([SEPARATOR, *(min(max(counts[n], 1), 0xFE) for n in sorted(counts)),
                        SEPARATOR])  # fmt: skip


def reset_word(bits: Iterable[int]) -> bytes:
    """The 12-byte word of a 04001503 write: 0 at each bit to reset, 1 elsewhere."""
    word = (1 << STATUS_BITS) - 1
    for n in bits:
        word &= ~(1 << n)
    return word.to_bytes(STATUS_BYTES, "little")


def reset_bits(word: bytes) -> set[int]:
    """The bits a 04001503 word resets (its 0 bits)."""
    value = int.from_bytes(word[:STATUS_BYTES], "little")
    return {n for n in range(STATUS_BITS) if not value >> n & 1}


def report_frame(address: str, counts: Mapping[int, int]) -> Frame:
    """The frame a meter sends by itself to report its status word (the meter side)."""
    return Frame(address, 0x91, encode_di(REPORT_STATUS) + encode_status(counts))


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------


@attrs.frozen
class Reply:
    """Write ``data`` to the DTU now; ``wait``: seconds to wait for the meter's answer (arm
    the timer, then call ``timeout()``)."""

    data: bytes
    wait: float = ANSWER_WAIT


@attrs.frozen
class Store:
    """Store ``records`` of ``meter`` (``what`` says where they came from); then call
    ``stored(ticket)`` (or ``not_stored(ticket)``) when ``ticket`` is not None."""

    meter: str
    records: tuple[Record, ...]
    what: str
    ticket: int | None = None


@attrs.frozen
class Done:
    """A step of the exchange for ``meter`` done (``what``), for the log."""

    meter: str
    address: str
    what: str


@attrs.frozen
class Bad:
    """Bad input of ``kind`` (one of BAD_KINDS), dropped: ``why``; ``address`` the meter's
    when known; ``total``: bad input on this session so far, this one included."""

    kind: str
    why: str
    address: str = ""
    total: int = 0


Action = Reply | Store | Done | Bad


@attrs.define
class ReportStats:
    frames: int = 0
    reports: int = 0  # status words a meter sent by itself
    follow_ups: int = 0  # answers with D5 set that nobody asked for
    data_reports: int = 0
    repeats: int = 0
    records: int = 0
    exchanges: int = 0
    resets: int = 0
    bad: Counter[str] = attrs.field(factory=Counter)

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())


@attrs.frozen
class ReportMeter:
    """A meter behind the DTU: its id, the password and operator code a reset is written
    with, its zone."""

    id: str
    password: Password = RESET_PASSWORD
    operator: str = "00000000"
    tz: tzinfo = DEFAULT_METER_TZ


@attrs.define
class _Exchange:
    meter: ReportMeter
    address: str
    step: str = "status"  # status, records, storing, reset
    request: Frame | None = None
    sent_at: float = 0.0
    attempt: int = 0
    reads: list[int] = attrs.Factory(list)
    bits: tuple[int, ...] = ()
    records: list[Record] = attrs.Factory(list)
    ticket: int | None = None


class ReportLink:
    """The frames a DTU's meters send outside pulls, and the exchange each report starts.

    ``meters`` maps the meters' addresses (12 digits) to who they are; ``fallback`` is the
    meter of a frame whose address is the wildcard (a DTU with one meter that answers with
    AA bytes); ``now`` the time (UTC); ``clock`` seconds (repeats)."""

    def __init__(
        self,
        meters: Mapping[str, ReportMeter],
        *,
        now: Callable[[], datetime],
        clock: Callable[[], float],
        fallback: ReportMeter | None = None,
        answer_wait: float = ANSWER_WAIT,
        retries: int = RETRIES,
    ) -> None:
        self.meters = {_norm(a): m for a, m in meters.items()}
        self.fallback = fallback
        self.now = now
        self.clock = clock
        self.answer_wait = answer_wait
        self.retries = retries
        self.decoder = FrameDecoder()
        self.stats = ReportStats()
        self._queue: OrderedDict[str, None] = OrderedDict()  # addresses waiting for an exchange
        self._exchange: _Exchange | None = None
        self._tickets = 0
        self._recent: OrderedDict[bytes, float] = OrderedDict()
        # (address, bit) -> when the link first saw it set (events of bits with no record).
        self._first_seen: dict[tuple[str, int], datetime] = {}

    # -- inputs -----------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Action]:
        """Bytes from the DTU."""
        out: list[Action] = []
        # Every frame and error of the bytes: a frame behind a bad one is not left waiting
        # for the DTU's next bytes.
        for item in self.decoder.decode_all(data):
            if isinstance(item, FrameError):
                kind = "checksum" if item.field == "CS" else "frame"
                out.append(self._bad(kind, item.message))
            else:
                out += self._frame(item)
        out += self._next()
        if self._overdue():
            out += self.timeout()
        return out

    def _overdue(self) -> bool:
        ex = self._exchange
        return (ex is not None and ex.request is not None and ex.step != "storing"
                and self.clock() - ex.sent_at >= self.answer_wait)  # fmt: skip

    def timeout(self) -> list[Action]:
        """The answer timer ran out: the request again while retries last, else the exchange
        with that meter is given up (nothing reset)."""
        ex = self._exchange
        if ex is None or ex.request is None or ex.step == "storing":
            return []
        if ex.attempt < self.retries:
            ex.attempt += 1
            ex.sent_at = self.clock()
            return [Reply(ex.request.encode(preamble=4), self.answer_wait)]
        self._exchange = None
        out: list[Action] = [self._bad("silent", f"no answer to the {_step_text(ex)}; nothing "
                                                 "reset", ex.address)]  # fmt: skip
        return out + self._next()

    def stored(self, ticket: int) -> list[Action]:
        """The records of ``ticket`` are durable: reset the bits they came from."""
        ex = self._exchange
        if ex is None or ex.ticket != ticket or ex.step != "storing":
            return []
        if not ex.bits:
            self._exchange = None
            return self._next()
        ex.step = "reset"
        return self._send(ex, write_data(ex.address, REPORT_RESET, reset_word(ex.bits),
                                         ex.meter.password, ex.meter.operator))

    def not_stored(self, ticket: int) -> list[Action]:
        """The records of ``ticket`` could not be stored: nothing is reset (the meter reports
        them again)."""
        ex = self._exchange
        if ex is None or ex.ticket != ticket:
            return []
        self._exchange = None
        return self._next()

    def pending(self) -> int:
        """Bytes of a frame not complete yet, plus one while an exchange waits for an answer
        within its time, or for its store (a pull waits for it, at most its channel's
        limit)."""
        waiting = self._exchange is not None and not self._overdue()
        return self.decoder.buffered + (1 if waiting else 0)

    def take_buffered(self) -> bytes:
        return self.decoder.drain()

    def adopt(self, older: ReportLink) -> None:
        """Carry on from ``older`` (the same session's link before a pull): its exchange
        under way, the meters waiting for one, the repeats and bits seen, the counts."""
        self._exchange = older._exchange
        self._queue = older._queue
        self._tickets = older._tickets
        self._recent = older._recent
        self._first_seen = older._first_seen
        self.stats = older.stats

    @property
    def busy(self) -> bool:
        return self._exchange is not None or bool(self._queue)

    # -- frames -------------------------------------------------------------------------------

    def _bad(self, kind: str, why: str, address: str = "") -> Bad:
        self.stats.bad[kind] += 1
        return Bad(kind, why, address, self.stats.bad_total)

    def _meter(self, address: str) -> ReportMeter | None:
        found = self.meters.get(address)
        if found is None and address == WILDCARD_ADDRESS:
            return self.fallback
        return found

    def _frame(self, frame: Frame) -> list[Action]:
        if not frame.is_response:
            return [self._bad("unexpected", f"a master's frame (control {frame.control:02X}) "
                                            "from the DTU", frame.address)]  # fmt: skip
        if frame.address == BROADCAST_ADDRESS or self._meter(frame.address) is None:
            return [self._bad("address", f"a frame of address {frame.address}, no meter of "
                                         "this DTU", frame.address)]  # fmt: skip
        self.stats.frames += 1
        ex = self._exchange
        if ex is not None and ex.address == frame.address and self._answers(ex, frame):
            return self._answer(ex, frame)
        return self._initiated(frame)

    def _answers(self, ex: _Exchange, frame: Frame) -> bool:
        request = ex.request
        if request is None or frame.function != request.function:
            return False
        if frame.function != Function.READ_DATA or frame.is_error:
            return True
        try:
            return decode_read(frame).di == int.from_bytes(request.data[:4], "little")
        except FrameError:
            return False

    def _repeat(self, frame: Frame) -> bool:
        key = bytes(encode_address(frame.address)) + bytes([frame.control]) + frame.data
        now = self.clock()
        seen = self._recent.get(key)
        self._recent[key] = now
        self._recent.move_to_end(key)
        while len(self._recent) > REPEAT_MEMORY:
            self._recent.popitem(last=False)
        return seen is not None and now - seen < REPEAT_WINDOW

    def _initiated(self, frame: Frame) -> list[Action]:
        """A frame the meter sends by itself."""
        address = frame.address
        meter = self._meter(address)
        assert meter is not None
        if frame.function != Function.READ_DATA or frame.is_error:
            return [self._bad("unexpected", f"an answer of function {frame.function:02X} to "
                                            "no request", address)]  # fmt: skip
        try:
            result = decode_read(frame)
        except FrameError as e:
            return [self._bad("report", e.message, address)]
        if result.di == REPORT_STATUS:
            try:
                status = decode_status(result.data)
            except FrameError as e:
                return [self._bad("report", e.message, address)]
            self.stats.reports += 1
            if status.counts:
                self._want(address)
            return [Done(meter.id, address, f"status word reported (bits "
                                            f"{_bits_text(status.bits)})")]  # fmt: skip
        out: list[Action] = []
        if frame.has_follow_up:
            # The follow-up report signal: its status word has bits set.
            self.stats.follow_ups += 1
            self._want(address)
        if self._repeat(frame):
            self.stats.repeats += 1
            return out
        try:
            records = self._decode(meter, result.di, result.data)
        except ProtocolError as e:
            return [*out, self._bad("unknown", e.message, address)]
        except FrameError as e:
            return [*out, self._bad("report", e.message, address)]
        self.stats.data_reports += 1
        self.stats.records += len(records)
        what = f"report of DI {result.di:08X}"
        return [*out, Store(meter.id, tuple(records), what)]

    def _decode(self, meter: ReportMeter, di: int, data: bytes) -> list[Record]:
        received = self.now()
        if di in PROFILE_DIS:
            # Load records: at the meter's default 15-minute period.
            return list(decode_load_records(data, meter=meter.id, period=timedelta(minutes=15),
                                            tz=meter.tz, received_time=received))
        if dataid.event_record(di) is not None:
            return list(dataid.decode_events(di, data, meter=meter.id, tz=meter.tz,
                                             received_time=received))
        return list(dataid.decode(di, data, meter=meter.id, tz=meter.tz, received_time=received))

    # -- the exchange ---------------------------------------------------------------------------

    def _want(self, address: str) -> None:
        ex = self._exchange
        if ex is not None and ex.address == address and ex.step in ("status", "records"):
            return  # already being read
        self._queue[address] = None

    def _next(self) -> list[Action]:
        if self._exchange is not None or not self._queue:
            return []
        address, _ = self._queue.popitem(last=False)
        meter = self._meter(address)
        if meter is None:
            return []
        self.stats.exchanges += 1
        ex = _Exchange(meter, address)
        self._exchange = ex
        return self._send(ex, read_data(address, REPORT_STATUS))

    def _send(self, ex: _Exchange, request: Frame) -> list[Action]:
        ex.request = request
        ex.attempt = 0
        ex.sent_at = self.clock()
        return [Reply(request.encode(preamble=4), self.answer_wait)]

    def _answer(self, ex: _Exchange, frame: Frame) -> list[Action]:
        if ex.step == "status":
            return self._status_answer(ex, frame)
        if ex.step == "records":
            return self._record_answer(ex, frame)
        if ex.step == "reset":
            self._exchange = None
            if frame.is_error:
                code = frame.data[:1].hex().upper() or "?"
                return [self._bad("refused", f"the reset of bits {_bits_text(ex.bits)} "
                                             f"refused (error status {code})", ex.address),
                        *self._next()]  # fmt: skip
            self.stats.resets += 1
            for n in ex.bits:
                self._first_seen.pop((ex.address, n), None)
            return [Done(ex.meter.id, ex.address, f"status bits {_bits_text(ex.bits)} reset "
                                                  "(04001503)"), *self._next()]  # fmt: skip
        return []

    def _status_answer(self, ex: _Exchange, frame: Frame) -> list[Action]:
        try:
            if frame.is_error:
                raise FrameError("the meter refused the read of 04001501", field="status word")
            status = decode_status(decode_read(frame, REPORT_STATUS).data)
        except FrameError as e:
            self._exchange = None
            return [self._bad("report", e.message, ex.address), *self._next()]
        ex.bits = status.bits
        if not status.counts:
            self._exchange = None
            return [Done(ex.meter.id, ex.address, "status word read: nothing to report"),
                    *self._next()]  # fmt: skip
        now = self.now()
        for n in status.bits:
            info = REPORT_BITS.get(n)
            if info is not None and info.record is not None:
                depth = min(status.counts[n], dataid.EVENT_RECORD_DEPTH)
                ex.reads += [info.record | k for k in range(1, depth + 1)]
                continue
            when = self._first_seen.setdefault((ex.address, n), now)
            name = info.name if info is not None else f"status bit {n}"
            kind = info.kind if info is not None else EventKind.OTHER
            severity = info.severity if info is not None else Severity.MINOR
            ex.records.append(MeterEvent(ex.meter.id, f"{REPORT_STATUS:08X}-{n:02d}", kind,
                                         severity, when, f"{name} (reported)", now, PROTOCOL))
        ex.step = "records"
        return self._next_read(ex)

    def _next_read(self, ex: _Exchange) -> list[Action]:
        if ex.reads:
            return self._send(ex, read_data(ex.address, ex.reads.pop(0)))
        ex.step = "storing"
        ex.request = None
        self._tickets += 1
        ex.ticket = self._tickets
        self.stats.records += len(ex.records)
        what = f"events reported (status bits {_bits_text(ex.bits)})"
        return [Store(ex.meter.id, tuple(ex.records), what, ex.ticket)]

    def _record_answer(self, ex: _Exchange, frame: Frame) -> list[Action]:
        assert ex.request is not None
        di = int.from_bytes(ex.request.data[:4], "little")
        out: list[Action] = []
        if not frame.is_error:
            try:
                data = decode_read(frame, di).data
                ex.records += dataid.decode_events(di, data, meter=ex.meter.id, tz=ex.meter.tz,
                                                   received_time=self.now())
            except (FrameError, ProtocolError) as e:
                out.append(self._bad("report", f"DI {di:08X}: {e}", ex.address))
        # A refused read (no such record): the others are still read.
        return out + self._next_read(ex)


def _norm(address: str) -> str:
    return address.strip().upper().rjust(12, "0")


def _bits_text(bits: Iterable[int]) -> str:
    return ", ".join(str(n) for n in bits) or "none"


def _step_text(ex: _Exchange) -> str:
    if ex.request is None:
        return "request"
    di = int.from_bytes(ex.request.data[:4], "little") if len(ex.request.data) >= 4 else 0
    verb = "write" if ex.request.function == Function.WRITE_DATA else "read"
    return f"{verb} of {di:08X} (meter {ex.meter.id})"


__all__ = ["REPORT_BITS", "REPORT_RESET", "REPORT_STATUS", "Bad", "Done", "ReportLink",
           "ReportMeter", "ReportStatus", "Reply", "Store", "decode_status", "encode_status",
           "report_frame", "reset_bits", "reset_word"]
