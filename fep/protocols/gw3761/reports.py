"""What a concentrator sends by itself on the connection it dialled in on, sans-IO: its login,
heartbeats and logout (each confirmed, AFN 00 F1), data it reports (PRM = 1: events of AFN 0E,
class 1 and 2 data), confirmed when it asks (CON) once the records are stored, and the event
counter EC of frames with ACD set: events not read yet are fetched (AFN 0E F1 from the last
counter seen). Bad input is counted by kind and the frame dropped; nothing here raises.

``ConcentratorLink.receive(bytes)`` gives a list of actions: ``Reply(bytes)`` (write now),
``Store(records, confirm)`` (store the records, then write ``confirm`` when there is one),
``Linked`` (a login, heartbeat or logout, for the log) and ``Bad`` (bad input, for the
rate-limited log). No Twisted here; ``fep.protocols.gw3761.session`` performs them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, tzinfo
from typing import Final

import attrs

from fep.errors import FrameError, ProtocolError
from fep.model import MeterEvent, Record
from fep.protocols.gw3761 import services
from fep.protocols.gw3761.frames import Address, Afn, EventCounter, Frame, FrameDecoder, Reassembler
from fep.protocols.gw3761.records import DEFAULT_TERMINAL_TZ, RecordMapper
from fep.protocols.gw3761.services import (
    Confirmed,
    Data,
    Denied,
    Events,
    EventsRequest,
    Heartbeat,
    Login,
    Logout,
    Master,
)

# Seconds an event fetch (AFN 0E F1) waits for its answer before another may go out.
FETCH_WAIT: Final = 30.0
# The first PFC of the handler's own requests (PSEQ 8 on).
FETCH_PFC: Final = 8
# The kinds of bad input counted (``LinkStats.bad``).
BAD_KINDS: Final = ("checksum", "length", "frame", "multi-frame", "unknown", "stale",
                    "address", "unexpected")


@attrs.frozen
class Reply:
    """Write ``data`` to the concentrator now (a confirmation, an event fetch)."""

    data: bytes


@attrs.frozen
class Store:
    """Store ``records`` (``what`` says where they came from); once they are durable,
    write ``confirm`` (None: the concentrator asked for no confirmation)."""

    records: tuple[Record, ...]
    what: str
    confirm: bytes | None = None


@attrs.frozen
class Linked:
    """A login, heartbeat or logout (``what``), confirmed."""

    what: str
    address: Address


@attrs.frozen
class Bad:
    """Bad input of ``kind`` (one of BAD_KINDS), dropped: ``why``; ``total``: bad input on
    this connection so far, this one included."""

    kind: str
    why: str
    total: int = 0


Action = Reply | Store | Linked | Bad


@attrs.define
class LinkStats:
    """What one connection's handler took and dropped."""

    frames: int = 0
    logins: int = 0
    heartbeats: int = 0
    logouts: int = 0
    confirmed: int = 0
    reports: int = 0
    records: int = 0
    fetches: int = 0
    # Answers to a read that came with ACD: their EC taken, their data not.
    answers_for_ec: int = 0
    bad: Counter[str] = attrs.field(factory=Counter)

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())


def point_meters(concentrator: str, meters: Mapping[str, Mapping[str, str]]) -> dict[int, str]:
    """The meters behind ``concentrator`` by point: ``meters`` maps meter ids to their
    metadata; a meter with ``concentrator = <id>`` and ``point = Pn`` (or ``n``) sits at
    point n. A point two meters claim names neither."""
    found: dict[int, str] = {}
    doubled: set[int] = set()
    for meter_id, metadata in meters.items():
        if metadata.get("concentrator") != concentrator:
            continue
        text = metadata.get("point", "").strip().upper().removeprefix("P")
        if not text.isdigit() or not 1 <= int(text) <= 2040:
            continue
        point = int(text)
        if point in found:
            doubled.add(point)
        found[point] = meter_id
    for point in doubled:
        del found[point]
    return found


class ConcentratorLink:
    """One dialled-in concentrator's frames outside pulls.

    ``concentrator`` is its meter id; ``address`` its address (None: the first frame's);
    ``points`` the meters behind it by point (reported events and data of other points go
    to the concentrator); ``now`` the time (UTC); ``clock`` seconds for the fetch's wait;
    ``known_events``: the important event counter already read (None: unknown, the first
    fetch reads from pointer 0)."""

    def __init__(
        self,
        concentrator: str,
        address: Address | None,
        *,
        now: Callable[[], datetime],
        clock: Callable[[], float],
        points: Mapping[int, str] | None = None,
        tz: tzinfo = DEFAULT_TERMINAL_TZ,
        master: int = 0,
        known_events: int | None = None,
        fetch_events: bool = True,
        fetch_wait: float = FETCH_WAIT,
    ) -> None:
        self.concentrator = concentrator
        self.address = address
        self.now = now
        self.clock = clock
        self.tz = tz
        self.mapper = RecordMapper(concentrator, dict(points or {}), tz, name_points=True)
        self.decoder = FrameDecoder()
        self.joiner = Reassembler()
        self.stats = LinkStats()
        self.master_address = master
        self.known_events = known_events
        self.fetch_events = fetch_events
        self.fetch_wait = fetch_wait
        self._master: Master | None = None
        # The event fetch under way: its request and when it went out.
        self._fetch: Frame | None = None
        self._fetch_sent = 0.0

    # -- the inputs ------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Action]:
        """Bytes from the concentrator."""
        out: list[Action] = []
        # Every frame and error of the bytes: a frame behind a bad one is not left waiting
        # for the concentrator's next bytes.
        for item in self.decoder.decode_all(data):
            if isinstance(item, FrameError):
                out.append(self._bad(_kind(item), item.message))
            else:
                out += self._frame(item)
        return out

    def pending(self) -> int:
        """Bytes of a frame not complete yet, plus one while a multi-frame report or an
        event fetch is under way (a pull waits for it, at most its channel's limit)."""
        under_way = self.joiner.pending() + (1 if self._fetching() else 0)
        return self.decoder.buffered + under_way

    def take_buffered(self) -> bytes:
        """The bytes of a frame not complete yet, handed over to a pull."""
        return self.decoder.drain()

    @property
    def fetching(self) -> bool:
        return self._fetching()

    # -- frames ----------------------------------------------------------------------------

    def _local_now(self) -> datetime:
        return self.now().astimezone(self.tz).replace(tzinfo=None)

    def _bad(self, kind: str, why: str) -> Bad:
        self.stats.bad[kind] += 1
        return Bad(kind, why, self.stats.bad_total)

    def _frame(self, frame: Frame) -> list[Action]:
        if not frame.uplink:
            return [self._bad("unexpected", "a downlink frame (DIR = 0) from the concentrator")]
        if self.address is None:
            self.address = attrs.evolve(frame.address, master=self.master_address,
                                        group=False)  # fmt: skip
        elif frame.address.key != self.address.key:
            return [self._bad("address", f"a frame of terminal {frame.address}")]
        if frame.tp is not None and frame.tp.stale(self._local_now()):
            return [self._bad("stale", f"a frame past its time label's delay of "
                                       f"{frame.tp.delay} min")]  # fmt: skip
        self.stats.frames += 1
        out = self._initiated(frame) if frame.control.initiator else self._answer(frame)
        if frame.ec is not None:
            out += self._events_pending(frame.ec)
        return out

    def _master_of(self) -> Master:
        if self._master is None:
            assert self.address is not None
            # PFC from 8: an event fetch's PSEQ differs from a pull's first requests (each
            # read counts from 0), should its answer come late, during a pull.
            self._master = Master(attrs.evolve(self.address, master=self.master_address,
                                               group=False), pfc=FETCH_PFC)  # fmt: skip
        return self._master

    def _confirm(self, frame: Frame) -> bytes:
        self.stats.confirmed += 1
        return self._master_of().confirm(frame).encode()

    def _deny(self, frame: Frame) -> bytes:
        confirm = self._master_of().confirm(frame)
        denial = attrs.evolve(confirm, data=services.encode_unit(Afn.CONFIRM, [0], [2], False))
        return denial.encode()

    def _initiated(self, frame: Frame) -> list[Action]:
        """A frame the concentrator starts: link test, or data it reports."""
        out: list[Action] = []
        try:
            whole = self.joiner.add(frame)
        except FrameError as e:
            return [self._bad("multi-frame", e.message)]
        if whole is None:
            # A middle frame of a report: confirmed on its own when it asks.
            if frame.seq.con:
                out.append(Reply(self._confirm(frame)))
            return out
        try:
            event = services.decode_event(whole)
        except services.UnknownFn as e:
            # The report's length cannot be known past the unknown class: denied, so the
            # concentrator does not take it as delivered.
            if frame.seq.con:
                out.append(Reply(self._deny(frame)))
            return [*out, self._bad("unknown", str(e))]
        except (FrameError, ProtocolError) as e:
            if frame.seq.con:
                out.append(Reply(self._deny(frame)))
            return [*out, self._bad("frame", str(e))]
        if isinstance(event, Login | Heartbeat | Logout):
            what = {Login: "login", Heartbeat: "heartbeat", Logout: "logout"}[type(event)]
            if isinstance(event, Login):
                self.stats.logins += 1
            elif isinstance(event, Heartbeat):
                self.stats.heartbeats += 1
            else:
                self.stats.logouts += 1
            # Link tests are confirmed whether or not CON is set (the terminal waits).
            return [Reply(self._confirm(frame)), Linked(what, event.address)]
        if isinstance(event, Data):
            if event.afn not in (Afn.CLASS1, Afn.CLASS2, Afn.CLASS3):
                if frame.seq.con:
                    out.append(Reply(self._deny(frame)))
                return [*out, self._bad("unknown", f"a report of AFN {event.afn:02X}")]
            self.stats.reports += 1
            self._events_read(event, answer=False)
            records = self._records(event)
            self.stats.records += len(records)
            confirm = self._confirm(frame) if frame.seq.con else None
            what = f"report of AFN {event.afn:02X}"
            return [Store(tuple(records), what, confirm)]
        # A confirmation or denial the concentrator starts: nothing asked it.
        return [self._bad("unexpected", f"{type(event).__name__.lower()} frame with PRM = 1")]

    def _answer(self, frame: Frame) -> list[Action]:
        """A frame answering (PRM = 0): only the event fetch's answer is expected here."""
        fetch = self._fetch
        if fetch is None or (frame.seq.fir and frame.seq.seq != fetch.seq.seq):
            if frame.ec is not None:
                # An answer to a read (handed over when the read ended, or late): only its
                # event counter is taken.
                self.stats.answers_for_ec += 1
                return []
            return [self._bad("unexpected", f"an answer (RSEQ {frame.seq.seq}, AFN "
                                            f"{frame.afn:02X}) to no open request")]  # fmt: skip
        try:
            whole = self.joiner.add(frame)
        except FrameError as e:
            self._fetch = None
            return [self._bad("multi-frame", e.message)]
        if whole is None:
            return []
        self._fetch = None
        try:
            event = services.decode_event(whole)
        except services.UnknownFn as e:
            return [self._bad("unknown", str(e))]
        except (FrameError, ProtocolError) as e:
            return [self._bad("frame", str(e))]
        if isinstance(event, Denied | Confirmed):
            return []
        if not isinstance(event, Data):
            return [self._bad("unexpected", f"{type(event).__name__.lower()} answering the "
                                            "event fetch")]  # fmt: skip
        self._events_read(event, answer=True)
        records = self._records(event)
        self.stats.records += len(records)
        return [Store(tuple(records), "events fetched (AFN 0E F1)")]

    def _records(self, event: Data) -> list[Record]:
        records = self.mapper.records(event, self.now())
        # Events of a point no meter of the list sits at are the concentrator's own.
        unnamed = f"{self.concentrator}/P"
        return [attrs.evolve(r, meter=self.concentrator)
                if isinstance(r, MeterEvent) and r.meter.startswith(unnamed) else r
                for r in records]  # fmt: skip

    # -- events pending (ACD, EC) ----------------------------------------------------------

    def _fetching(self) -> bool:
        return (self._fetch is not None
                and self.clock() - self._fetch_sent < self.fetch_wait)  # fmt: skip

    def _events_read(self, event: Data, answer: bool) -> None:
        """How far the important events are read: the end pointer of the fetch's answer;
        of a report, only when it follows on from what was read (a report of the newest
        event does not say the ones before it were read)."""
        if event.afn != Afn.CLASS3:
            return
        for item in event.items:
            if (item.fn == 1 and isinstance(item.value, Events)
                    and (answer or self.known_events == item.value.start)):
                self.known_events = item.value.end & 0xFF

    def _events_pending(self, ec: EventCounter) -> list[Action]:
        counter = ec.important & 0xFF
        if counter == self.known_events or not self.fetch_events or self._fetching():
            return []
        start = self.known_events if self.known_events is not None else 0
        if start == counter:
            return []
        # From the last record read up to the counter (Pm > Pn: the pointers wrap past 255).
        units = services.encode_unit(Afn.CLASS3, [0], [1], False,
                                     {(0, 1): EventsRequest(start, counter)})
        self._fetch = self._master_of().request(Afn.CLASS3, units)
        self._fetch_sent = self.clock()
        self.stats.fetches += 1
        return [Reply(self._fetch.encode())]


def _kind(error: FrameError) -> str:
    """The kind of a stream decoder's error: a bad checksum, or a length field that put
    the end byte where none is."""
    if error.field == "CS":
        return "checksum"
    if error.field == "end":
        return "length"
    return "frame"


__all__ = [
    "BAD_KINDS",
    "FETCH_WAIT",
    "Bad",
    "ConcentratorLink",
    "LinkStats",
    "Linked",
    "Reply",
    "Store",
    "point_meters",
]
