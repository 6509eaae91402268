"""The DL/T 645 read session as a sans-IO state machine: one request per data identifier,
follow-up frames for long answers, retries, line noise, and the answers turned into records
(Readings, MeterEvents, load-profile IntervalBlocks).

``start()`` gives the first actions; ``receive(bytes)`` and ``timeout()`` give more:
``Send(bytes)`` to write (then arm the timer), ``Resent`` when a request went out again,
``Noise`` for damaged bytes skipped on the line, ``Skipped`` for an item the meter has no
data for (or whose answer fep cannot decode), and at the end ``Finished(records)`` or
``Failed(error)``. Bad bytes from the meter never raise: they are counted and skipped, and
what cannot be recovered ends in ``Failed`` with a ProtocolError (``MeterErrorResponse``
subclasses for the meter's error answers, ``SessionTimeout`` for silence) naming the meter,
route and data identifier.

The load-profile records of DL/T 645-2007 (DI ``06000000``/``06000001``/``06000002``, the
record format with A0 A0 start, six data classes between AA separators and E5 end) are
decoded here too (``decode_load_records``; ``encode_load_record`` for the meter side).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

import attrs

from fep.errors import FrameError, ProtocolError, SessionTimeout
from fep.model import (
    IntervalBlock,
    ObisCode,
    Quality,
    Reading,
    Record,
    Value,
    utcnow,
)
from fep.protocols.dlt645 import dataid
from fep.protocols.dlt645.dataid import (
    DEFAULT_METER_TZ,
    VAR,
    DataFormat,
    DataItem,
    Kind,
    W,
)
from fep.protocols.dlt645.frames import (
    BROADCAST_ADDRESS,
    PREAMBLE,
    START,
    WILDCARD_ADDRESS,
    Frame,
    FrameDecoder,
    encode_address,
)
from fep.protocols.dlt645.services import (
    PROTOCOL,
    Function,
    Function1997,
    MeterErrorResponse,
    NoRequestedData,
    check_response,
    decode_bcd,
    decode_read,
    encode_bcd,
    read_data,
    read_data_1997,
    read_follow_up,
    read_follow_up_1997,
)

# Masters send FE FE FE FE before a frame to wake a meter's UART (DL/T 645-2007 7.1).
WAKEUP_PREAMBLE: Final = 4

# What a head end reads by default: combined active energy (total + tariffs), forward and
# reverse active total, the phase voltages and currents, total active power, date and time.
DEFAULT_ITEMS_2007: Final[tuple[int, ...]] = (
    0x0000FF00,
    0x00010000,
    0x00020000,
    0x0201FF00,
    0x0202FF00,
    0x02030000,
    0x04000101,
    0x04000102,
)
# DL/T 645-1997 has no combined energy: forward active total + tariffs, reverse total.
DEFAULT_ITEMS_1997: Final[tuple[int, ...]] = (
    0x901F,
    0x9020,
    0xB61F,
    0xB62F,
    0xB630,
    0xC010,
    0xC011,
)
DATE_DI: Final = {2007: 0x04000101, 1997: 0xC010}
TIME_DI: Final = {2007: 0x04000102, 1997: 0xC011}
CLOCK_OBIS: Final = ObisCode(0, 0, 1, 0, 0)
# The active-reporting status word (fep.protocols.dlt645.reports): a meter sends it by itself.
REPORT_STATUS_DI: Final = 0x04001501

# Load profile (DL/T 645-2007 A.7): the earliest / given-time / latest record block(s).
PROFILE_EARLIEST: Final = 0x06000000
PROFILE_SINCE: Final = 0x06000001
PROFILE_LATEST: Final = 0x06000002
PROFILE_DIS: Final = frozenset({PROFILE_EARLIEST, PROFILE_SINCE, PROFILE_LATEST})


def default_items(edition: int) -> tuple[int, ...]:
    return DEFAULT_ITEMS_2007 if edition == 2007 else DEFAULT_ITEMS_1997


def item_supported(di: int, edition: int = 2007) -> bool:
    """Whether fep can decode the answer for ``di``: a catalogued DI, a block of catalogued
    DIs, an event record or (2007) a load-profile record block."""
    table = dataid.catalogue(edition)
    if di in table or dataid.block_members(di, edition):
        return True
    if edition == 2007:
        return dataid.event_record(di) is not None or di in PROFILE_DIS
    return False


def di_text(di: int, edition: int = 2007) -> str:
    return f"{di:0{8 if edition == 2007 else 4}X}"


# ---------------------------------------------------------------------------
# Actions for the adapter
# ---------------------------------------------------------------------------


@attrs.frozen
class Send:
    """Write these bytes to the line (then arm the timer)."""

    data: bytes


@attrs.frozen
class Resent:
    """A request went out again (no answer in time, or a damaged one); ``attempt`` counts."""

    attempt: int
    why: str


@attrs.frozen
class Noise:
    """Bytes on the line that were no good frame (``why``), skipped; the session resyncs."""

    why: str


@attrs.frozen
class Reported:
    """A frame a meter sent by itself during the read (an active report: its status word
    04001501, or any answer from another meter of the DTU), told from the answer by its
    address and data identifier and set aside: ``frame`` its bytes, for the session's report
    handler."""

    frame: bytes
    address: str
    why: str


@attrs.frozen
class Skipped:
    """An item not read: the meter has no such data, or its answer could not be decoded."""

    di: str
    why: str


@attrs.frozen
class Finished:
    records: tuple[Record, ...]


@attrs.frozen
class Failed:
    error: ProtocolError


Action = Send | Resent | Noise | Reported | Skipped | Finished | Failed


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------


def _check_address(address: str) -> str:
    encode_address(address)  # ValueError when not 12 BCD digits / AA
    return address.strip().upper().rjust(12, "0")


def _unique(items: Sequence[int]) -> tuple[int, ...]:
    # The same DI twice would make its second answer look like a repeat of the first.
    return tuple(dict.fromkeys(items))


@attrs.frozen
class ClientSettings:
    """How to read one meter. ``items`` are data identifiers in reading order; the profile
    settings apply to the load-profile DIs (``06000000``-``06000002``) among them."""

    address: str = attrs.field(default=WILDCARD_ADDRESS, converter=_check_address)
    edition: int = 2007
    items: tuple[int, ...] = attrs.field(default=(), converter=_unique)
    wakeup: bool = True
    retries: int = 1
    meter: str | None = None
    route: str | None = None
    tz: tzinfo = DEFAULT_METER_TZ
    profile_blocks: int = 4
    profile_since: datetime | None = None
    profile_period: timedelta = timedelta(minutes=15)
    max_follow_ups: int = 255

    def __attrs_post_init__(self) -> None:
        if self.edition not in (2007, 1997):
            raise ValueError(f"DL/T 645 editions are 2007 and 1997, not {self.edition}")
        for di in self.items:
            if not item_supported(di, self.edition):
                raise ValueError(
                    f"no DL/T 645-{self.edition} format known for DI {di_text(di, self.edition)}"
                )
        if not 0 <= self.retries <= 10:
            raise ValueError(f"retries {self.retries} is not 0..10")
        if not 1 <= self.profile_blocks <= 255:
            raise ValueError(f"load-profile block count {self.profile_blocks} is not 1..255")
        if self.profile_period <= timedelta(0):
            raise ValueError("load-profile period must be positive")
        if self.profile_since is not None and self.profile_since.tzinfo is None:
            raise ValueError("load-profile start must carry its time zone")

    @property
    def reading_items(self) -> tuple[int, ...]:
        return self.items or default_items(self.edition)


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------


class _Decoder(FrameDecoder):
    """A FrameDecoder that tells FE wake-up bytes apart from other bytes it skips."""

    def __init__(self) -> None:
        super().__init__()
        self.wakeup_bytes = 0

    def _skip_garbage(self) -> None:
        at = self._buffer.find(START)
        self.wakeup_bytes += self._buffer[: len(self._buffer) if at < 0 else at].count(PREAMBLE)
        super()._skip_garbage()


class State(enum.Enum):
    IDLE = "idle"
    WAITING = "waiting for an answer"
    DONE = "done"


class Dlt645Client:
    """One read session with one meter: every item of the settings in turn.

    ``now`` gives our clock (UTC): the received time of each answer and the default start
    of a load-profile read.
    """

    def __init__(self, settings: ClientSettings, *, now: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.now = now
        self.state = State.IDLE
        self.decoder = _Decoder()
        # Counters for the session's log line and tests.
        self.noise = 0  # damaged frames dropped
        self.stale = 0  # answers to requests already answered (after a resend)
        self.echoes = 0  # our own requests heard back (half-duplex lines)
        self.resent = 0
        self.skipped: list[tuple[str, str]] = []
        self.records: list[Record] = []
        self._items = list(settings.reading_items)
        self._index = -1
        self._request: Frame | None = None
        self._what = ""
        self._attempt = 0
        self._damaged = False
        self._data = bytearray()
        self._seq = 0
        self._answered: set[tuple[int, int, int | None]] = set()
        self._clock_parts: dict[int, Reading] = {}
        # Set by the session when its pipe also carries reports (a GPRS session): answers
        # from other addresses are reports then, not errors. Reports seen, in order.
        self.hand_over = False
        self.reports: list[Reported] = []

    # -- properties ---------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    def waiting(self) -> bool:
        # A call, not ``self.state is ...`` inline: type checkers narrow attributes and
        # miss that handling a frame changes the state.
        return self.state is State.WAITING

    @property
    def waiting_for(self) -> str | None:
        return self._what if self.state is State.WAITING else None

    @property
    def current_di(self) -> int | None:
        if 0 <= self._index < len(self._items):
            return self._items[self._index]
        return None

    @property
    def line_garbage(self) -> int:
        """Bytes skipped between frames: not FE wake-up bytes, nor the first bytes of the
        damaged frames themselves (``noise`` counts those)."""
        return self.decoder.skipped - self.decoder.wakeup_bytes

    def _who(self) -> str:
        return f"meter {self.settings.meter or self.settings.address}"

    def _di(self, di: int) -> str:
        return di_text(di, self.settings.edition)

    def _error(self, message: str, cls: type[ProtocolError] = ProtocolError) -> ProtocolError:
        s = self.settings
        return cls(message, meter=s.meter, route=s.route, protocol=PROTOCOL)

    # -- driving ------------------------------------------------------------------------------

    def start(self) -> list[Action]:
        if self.state is not State.IDLE:
            raise ProtocolError(f"DL/T 645 session already {self.state.value}", protocol=PROTOCOL)
        self.state = State.WAITING
        return self._next_item()

    def receive(self, data: bytes) -> list[Action]:
        """Bytes from the line: answers, the next request, the records at the end."""
        if not self.waiting():
            return []
        actions: list[Action] = []
        # Frame by frame until the read is over: what follows its last answer stays in the
        # decoder, for the session to give back (a report another meter sent).
        for item in self.decoder.decode_all(data):
            if isinstance(item, FrameError):
                # A damaged frame: most likely our answer, spoilt on the line.
                self.noise += 1
                self._damaged = True
                actions.append(Noise(item.message))
            else:
                actions += self._on_frame(item)
            if not self.waiting():
                break
        if (
            self.waiting()
            and self._damaged
            and self.decoder.buffered == 0
            and self._attempt < self.settings.retries
        ):
            # Nothing more of that frame is coming: ask again at once, not after the timeout.
            actions += self._resend("damaged answer")
        return actions

    def timeout(self) -> list[Action]:
        """The timer ran out: send the request again while retries last, else give up."""
        if self.state is not State.WAITING:
            return []
        if self._attempt < self.settings.retries:
            return self._resend("no answer")
        why = f"no valid answer to {self._what}"
        if self._damaged:
            why = f"only damaged answers to {self._what}"
        return self._fail(self._error(f"{self._who()}: {why}", SessionTimeout))

    # -- requests -----------------------------------------------------------------------------

    def _send(self, request: Frame, what: str) -> list[Action]:
        self._request = request
        self._what = what
        self._attempt = 0
        self._damaged = False
        return [Send(self._encode(request))]

    def _encode(self, request: Frame) -> bytes:
        return request.encode(preamble=WAKEUP_PREAMBLE if self.settings.wakeup else 0)

    def _resend(self, why: str) -> list[Action]:
        assert self._request is not None
        self._attempt += 1
        self.resent += 1
        self._damaged = False
        return [Resent(self._attempt, why), Send(self._encode(self._request))]

    def _next_item(self) -> list[Action]:
        self._index += 1
        self._data = bytearray()
        self._seq = 0
        if self._index >= len(self._items):
            return self._finish()
        di = self._items[self._index]
        s = self.settings
        if s.edition == 1997:
            request = read_data_1997(s.address, di)
        elif di in PROFILE_DIS:
            since = None
            if di == PROFILE_SINCE:
                since = self._profile_since().astimezone(s.tz).replace(tzinfo=None)
            request = read_data(s.address, di, blocks=s.profile_blocks, since=since)
        else:
            request = read_data(s.address, di)
        return self._send(request, f"read of DI {self._di(di)}")

    def _profile_since(self) -> datetime:
        s = self.settings
        if s.profile_since is not None:
            return s.profile_since
        # The last ``profile_blocks`` whole periods before now.
        period = s.profile_period.total_seconds()
        now = self.now().timestamp()
        end = now - now % period
        return datetime.fromtimestamp(end - period * (s.profile_blocks - 1), UTC)

    # -- answers ------------------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> list[Action]:
        request = self._request
        assert request is not None
        if not frame.is_response:
            # Our own request heard back on a half-duplex line (or another master's).
            self.echoes += 1
            return []
        di = self.current_di
        assert di is not None
        report = self._report_why(frame, request, di)
        if report is not None:
            reported = Reported(frame.encode(), frame.address, report)
            self.reports.append(reported)
            return [reported]
        key = self._answer_key(frame)
        if key is not None and key in self._answered:
            self.stale += 1  # a second answer to a request we sent twice
            return []
        try:
            check_response(frame, request, meter=self.settings.meter, route=self.settings.route)
        except NoRequestedData as e:
            if request.function in (Function.READ_DATA, Function1997.READ_DATA):
                self.skipped.append((self._di(di), e.message))
                return [Skipped(self._di(di), e.message), *self._next_item()]
            return self._fail(self._name_di(e, di))
        except MeterErrorResponse as e:
            return self._fail(self._name_di(e, di))
        except ProtocolError as e:
            return self._fail(self._named(e))
        try:
            result = decode_read(frame, di)
        except FrameError as e:
            return self._fail(self._error(f"{self._who()}: {e.message}"))
        if result.seq is not None and result.seq != self._seq:
            return self._fail(
                self._error(
                    f"{self._who()}: follow-up frame {result.seq} of DI {self._di(di)} "
                    f"where {self._seq} was asked"
                )
            )
        if key is not None:
            self._answered.add(key)
        self._data += result.data
        if result.follow_up:
            if self._seq >= self.settings.max_follow_ups:
                return self._fail(
                    self._error(
                        f"{self._who()}: DI {self._di(di)} still has follow-up frames after "
                        f"{self._seq}"
                    )
                )
            self._seq += 1
            s = self.settings
            if s.edition == 1997:
                follow = read_follow_up_1997(s.address, di)
            else:
                follow = read_follow_up(s.address, di, self._seq)
            return self._send(follow, f"follow-up frame {self._seq} of DI {self._di(di)}")
        skipped = self._decode_item(di, bytes(self._data))
        return [*skipped, *self._next_item()]

    def _report_why(self, frame: Frame, request: Frame, di: int) -> str | None:
        """Why ``frame`` is a report the meter sent by itself rather than the answer to
        ``request`` (None: it is taken as the answer)."""
        if self.settings.edition != 2007:
            return None
        if (self.hand_over and request.address not in (WILDCARD_ADDRESS, BROADCAST_ADDRESS)
                and frame.address != request.address):
            return f"a frame of address {frame.address}"
        if frame.function != Function.READ_DATA or frame.is_error or len(frame.data) < 4:
            return None
        echoed = int.from_bytes(frame.data[:4], "little")
        if echoed == REPORT_STATUS_DI and (di != REPORT_STATUS_DI
                                           or request.function != Function.READ_DATA):
            return "its active-reporting status word (04001501)"
        return None

    def _answer_key(self, frame: Frame) -> tuple[int, int, int | None] | None:
        """(function, DI, follow-up number) of a normal read answer, to know it again."""
        if frame.is_error or frame.function not in (
            Function.READ_DATA,
            Function.READ_FOLLOW_UP,
            Function1997.READ_DATA,
            Function1997.READ_FOLLOW_UP,
        ):
            return None
        try:
            result = decode_read(frame)
        except FrameError:
            return None
        if frame.function == Function1997.READ_FOLLOW_UP:
            # 1997 follow-ups carry no number: they cannot be told apart, never stale.
            return None
        return (frame.function, result.di, result.seq)

    def _named(self, error: ProtocolError) -> ProtocolError:
        if error.meter is None:
            error.meter = self.settings.meter
        if error.route is None:
            error.route = self.settings.route
        if error.protocol is None:
            error.protocol = PROTOCOL
        return error

    def _name_di(self, error: MeterErrorResponse, di: int) -> MeterErrorResponse:
        """The same error with the data identifier it concerns in its message."""
        s = self.settings
        return type(error)(
            f"{error.message}, DI {self._di(di)}",
            status=error.status,
            function=error.function,
            edition=error.edition,
            meter=error.meter or s.meter,
            route=error.route or s.route,
        )

    def _decode_item(self, di: int, data: bytes) -> list[Action]:
        s = self.settings
        meter = s.meter or s.address
        received = self.now()
        try:
            if s.edition == 2007 and di in PROFILE_DIS:
                self.records.extend(
                    decode_load_records(
                        data,
                        meter=meter,
                        period=s.profile_period,
                        tz=s.tz,
                        received_time=received,
                    )
                )
            elif s.edition == 2007 and dataid.event_record(di) is not None:
                self.records.extend(
                    dataid.decode_events(di, data, meter=meter, tz=s.tz, received_time=received)
                )
            else:
                readings = dataid.decode(
                    di, data, meter=meter, edition=s.edition, tz=s.tz, received_time=received
                )
                self.records.extend(readings)
                self._note_clock(di, readings)
        except (FrameError, ProtocolError) as e:
            # The meter's layout differs from the standard's for this item: the others are
            # still good, so the item is left out and said so.
            why = f"answer not understood: {e.message}"
            self.skipped.append((self._di(di), why))
            return [Skipped(self._di(di), why)]
        return []

    def _note_clock(self, di: int, readings: Sequence[Reading]) -> None:
        """Date and time come from two DIs: once both are in, add the meter clock as one
        Reading (0-0:1.0.0) whose meter_time is the meter's and received_time ours."""
        edition = self.settings.edition
        if di in (DATE_DI[edition], TIME_DI[edition]) and len(readings) == 1:
            self._clock_parts[di] = readings[0]
        date_part = self._clock_parts.get(DATE_DI[edition])
        time_part = self._clock_parts.get(TIME_DI[edition])
        if date_part is None or time_part is None:
            return
        self._clock_parts.clear()
        local = datetime.fromisoformat(f"{date_part.value}T{time_part.value}")
        when = local.replace(tzinfo=self.settings.tz).astimezone(UTC)
        self.records.append(
            Reading(
                meter=time_part.meter,
                obis=CLOCK_OBIS,
                value=when.isoformat(),
                meter_time=when,
                received_time=time_part.received_time,
                source=PROTOCOL,
                native_id=f"{date_part.native_id}+{time_part.native_id}",
            )
        )

    # -- the end ------------------------------------------------------------------------------

    def _finish(self) -> list[Action]:
        self.state = State.DONE
        self._request = None
        return [Finished(tuple(self.records))]

    def _fail(self, error: ProtocolError) -> list[Action]:
        self.state = State.DONE
        return [Failed(error)]


# ---------------------------------------------------------------------------
# Load-profile records (DL/T 645-2007 A.7 and its record format)
# ---------------------------------------------------------------------------

RECORD_START: Final = b"\xa0\xa0"
RECORD_START_BAD: Final = b"\xe0\xe0"  # the meter marks the record as not correct
RECORD_SEPARATOR: Final = 0xAA
RECORD_END: Final = 0xE5

_ACTIVE_DEMAND = DataItem(
    0x02800004, 4, "current active demand", DataFormat(Kind.NUMBER, 3, 4, True),
    ObisCode(1, 0, 1, 4, 0), W, 3,
)  # fmt: skip
_REACTIVE_DEMAND = DataItem(
    0x02800005, 4, "current reactive demand", DataFormat(Kind.NUMBER, 3, 4, True),
    ObisCode(1, 0, 3, 4, 0), VAR, 3,
)  # fmt: skip


def _items(*dis: int) -> tuple[DataItem, ...]:
    return tuple(dataid.CATALOGUE_2007[di] for di in dis)


# The six data classes of a load record, in order, as the DIs whose formats they use.
LOAD_CLASSES: Final[tuple[tuple[DataItem, ...], ...]] = (
    # 1: voltages, currents, frequency (17 bytes)
    _items(0x02010100, 0x02010200, 0x02010300, 0x02020100, 0x02020200, 0x02020300, 0x02800002),
    # 2: active power total/A/B/C, reactive power total/A/B/C (24 bytes)
    _items(0x02030000, 0x02030100, 0x02030200, 0x02030300,
           0x02040000, 0x02040100, 0x02040200, 0x02040300),
    # 3: power factor total/A/B/C (8 bytes)
    _items(0x02060000, 0x02060100, 0x02060200, 0x02060300),
    # 4: forward and reverse active, combined reactive 1 and 2 energy, totals (16 bytes)
    _items(0x00010000, 0x00020000, 0x00030000, 0x00040000),
    # 5: quadrant I-IV reactive energy, totals (16 bytes)
    _items(0x00050000, 0x00060000, 0x00070000, 0x00080000),
    # 6: current active and reactive demand (6 bytes)
    (_ACTIVE_DEMAND, _REACTIVE_DEMAND),
)  # fmt: skip
LOAD_CLASS_LENGTHS: Final = tuple(sum(i.fmt.length for i in c) for c in LOAD_CLASSES)
assert LOAD_CLASS_LENGTHS == (17, 24, 8, 16, 16, 6)


@attrs.frozen
class LoadRecord:
    """One load record: its storage time (the end of the interval it closes, UTC), the raw
    bytes of each of the six classes (empty when the meter does not record that class) and
    whether the meter marked it correct (A0 A0) or not (E0 E0)."""

    time: datetime
    classes: tuple[bytes, ...]
    valid: bool = True


def encode_load_record(record: LoadRecord, tz: tzinfo = DEFAULT_METER_TZ) -> bytes:
    """A load record's bytes (the meter side): start, length, mmhhDDMMYY, the classes each
    followed by AA, the checksum from the first start byte, E5."""
    if len(record.classes) != len(LOAD_CLASSES):
        raise ValueError(f"a load record has {len(LOAD_CLASSES)} classes")
    local = record.time.astimezone(tz)
    body = bytearray(encode_bcd(local.strftime("%y%m%d%H%M"), 5))
    for raw, length in zip(record.classes, LOAD_CLASS_LENGTHS, strict=True):
        if raw and len(raw) != length:
            raise ValueError(f"load class of {length} bytes given {len(raw)}")
        body += raw + bytes([RECORD_SEPARATOR])
    head = (RECORD_START if record.valid else RECORD_START_BAD) + bytes([len(body)])
    whole = head + bytes(body)
    return whole + bytes([sum(whole) & 0xFF, RECORD_END])


def encode_load_class(n: int, values: Sequence[Value]) -> bytes:
    """The bytes of class ``n`` (1..6) from its values in order (the meter side)."""
    items = LOAD_CLASSES[n - 1]
    if len(values) != len(items):
        raise ValueError(f"load class {n} has {len(items)} values")
    return b"".join(item.encode(v) for item, v in zip(items, values, strict=True))


def parse_load_records(data: bytes, tz: tzinfo = DEFAULT_METER_TZ) -> list[LoadRecord]:
    """The load records of a read answer's data (after the DI); FrameError at the first
    record that is not well formed (offset counted in ``data``)."""
    records: list[LoadRecord] = []
    at = 0
    while at < len(data):
        start = data[at : at + 2]
        if start not in (RECORD_START, RECORD_START_BAD):
            raise FrameError(
                f"load record starts with {start.hex(' ')}, not A0 A0", offset=at, field="record"
            )
        if at + 3 > len(data):
            raise FrameError("load record without its length", offset=at, field="record length")
        length = data[at + 2]
        end = at + 3 + length + 2
        if end > len(data) or length < 5:
            raise FrameError(
                f"load record of {length} bytes does not fit the answer",
                offset=at + 2,
                field="record length",
            )
        whole = data[at:end]
        if whole[-1] != RECORD_END:
            raise FrameError(
                f"load record ends with 0x{whole[-1]:02X}, not E5",
                offset=end - 1,
                field="record end",
            )
        if sum(whole[:-2]) & 0xFF != whole[-2]:
            raise FrameError("load record checksum is wrong", offset=end - 2, field="record CS")
        body = whole[3:-2]
        stamp = _record_time(body[:5], tz, at + 3)
        classes: list[bytes] = []
        pos = 5
        for n, length_n in enumerate(LOAD_CLASS_LENGTHS, 1):
            if pos >= len(body):
                raise FrameError(
                    f"load record has no class {n}", offset=at + 3 + pos, field="record"
                )
            chunk = b""
            if body[pos] != RECORD_SEPARATOR:
                chunk = body[pos : pos + length_n]
                pos += length_n
            if pos >= len(body) or body[pos] != RECORD_SEPARATOR:
                raise FrameError(
                    f"load record class {n} is not followed by AA",
                    offset=at + 3 + pos,
                    field="record",
                )
            pos += 1
            classes.append(chunk)
        if pos != len(body):
            raise FrameError(
                f"load record has {len(body) - pos} bytes after class 6",
                offset=at + 3 + pos,
                field="record",
            )
        records.append(LoadRecord(stamp, tuple(classes), start == RECORD_START))
        at = end
    return records


def _record_time(raw: bytes, tz: tzinfo, offset: int) -> datetime:
    digits = decode_bcd(raw, offset, "record time")
    yy, mo, dd, hh, mi = (int(digits[i : i + 2]) for i in range(0, 10, 2))
    try:
        return datetime(2000 + yy, mo, dd, hh, mi, tzinfo=tz).astimezone(UTC)
    except ValueError as e:
        raise FrameError(
            f"load record time {digits} is no time", offset=offset, field="record time"
        ) from e


def decode_load_records(
    data: bytes,
    *,
    meter: str,
    period: timedelta,
    tz: tzinfo = DEFAULT_METER_TZ,
    received_time: datetime | None = None,
) -> list[IntervalBlock]:
    """IntervalBlocks from the load records of a read answer: one run per quantity of
    records ``period`` apart (a gap starts a new block); each record's time is the end of
    the interval it closes. Energy values are the registers at that time (as DLMS load
    profiles hold them). A record the meter marked incorrect keeps its values with status
    DATA_NOT_VALID."""
    received = received_time if received_time is not None else utcnow()
    records = parse_load_records(data, tz)
    # quantity -> [(time, value, status)]
    series: dict[int, list[tuple[datetime, Value, Quality]]] = {}
    items: dict[int, DataItem] = {}
    for record in records:
        status = Quality.OK if record.valid else Quality.DATA_NOT_VALID
        for raw, fields in zip(record.classes, LOAD_CLASSES, strict=True):
            if not raw:
                continue
            at = 0
            for item in fields:
                chunk = raw[at : at + item.fmt.length]
                at += item.fmt.length
                value = item.decode(chunk, meter=meter, tz=tz, received_time=received).value
                series.setdefault(item.di, []).append((record.time, value, status))
                items[item.di] = item
    blocks: list[IntervalBlock] = []
    for di, points in series.items():
        item = items[di]
        points.sort(key=lambda p: p[0])
        run = [points[0]]
        for point in [*points[1:], None]:
            if point is not None and point[0] - run[-1][0] == period:
                run.append(point)
                continue
            blocks.append(
                IntervalBlock(
                    meter=meter,
                    obis=item.obis,
                    start=run[0][0] - period,
                    period=period,
                    values=tuple(p[1] for p in run),
                    statuses=tuple(p[2] for p in run),
                    unit=item.unit,
                    scaler=item.scaler,
                    received_time=received,
                    source=PROTOCOL,
                )
            )
            if point is not None:
                run = [point]
    return blocks


__all__ = [
    "DEFAULT_ITEMS_1997",
    "DEFAULT_ITEMS_2007",
    "Action",
    "ClientSettings",
    "Dlt645Client",
    "Failed",
    "Finished",
    "LoadRecord",
    "Noise",
    "Resent",
    "Send",
    "Skipped",
    "decode_load_records",
    "encode_load_class",
    "encode_load_record",
    "parse_load_records",
]
