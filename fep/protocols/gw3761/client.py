"""A master station's read of one concentrator, sans-IO: the requests of the data asked for
(class 1 and class 2 of its points, its clock, its events), one at a time, their answers
reassembled and turned into records; frames the terminal starts meanwhile (login, heartbeat,
reported events) are confirmed and go on.

``start()``, ``receive(bytes)`` and ``timeout()`` give a list of actions: ``Send``,
``Finished(records)``, ``Failed(error)``, and notes (``Noise``, ``Skipped``, ``Resent``)
the session logs. No Twisted here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

import attrs

from fep.errors import FrameError, ProtocolError
from fep.model import Record
from fep.protocols.gw3761 import services
from fep.protocols.gw3761.exchange import Failed, MasterExchange, Noise, Send, Step
from fep.protocols.gw3761.formats import Clock, TimeFields
from fep.protocols.gw3761.frames import Address, Afn, Frame
from fep.protocols.gw3761.records import DEFAULT_TERMINAL_TZ, RecordMapper
from fep.protocols.gw3761.services import (
    PROTOCOL,
    CurveRequest,
    Data,
    Denied,
    EventsRequest,
)

# The classes read when none are named: the terminal's clock, current forward active
# energy and instantaneous values of each point.
DEFAULT_ITEMS: tuple[tuple[int, int], ...] = ((Afn.CLASS1, 2), (Afn.CLASS1, 129),
                                              (Afn.CLASS1, 25))  # fmt: skip
# Points asked per request (several DA groups in one frame).
POINTS_PER_REQUEST = 64
CLOCK_SET = "05:F31 clock set"


@attrs.frozen
class Finished:
    records: tuple[Record, ...]


@attrs.frozen
class Skipped:
    what: str
    why: str


@attrs.frozen
class Resent:
    what: str
    attempt: int


@attrs.frozen
class Reported:
    """A frame the terminal started during the read (PRM = 1, not a link test), bytes that
    came after the read's last answer, or the last answer with ACD set (its EC, without its
    data), handed over whole (the client's ``hand_over``: the channel carries the terminal's
    reports; its report handler stores and confirms them, and fetches the events ACD says are
    there, once this read has the line no more)."""

    frame: bytes


Action = Send | Finished | Failed | Noise | Skipped | Resent | Reported


def parse_item(text: str) -> tuple[int, int]:
    """``0C:F129`` (or ``0C:129``, ``0x0c:f129``) -> (AFN, Fn); ValueError otherwise."""
    afn_text, sep, fn_text = text.strip().upper().partition(":")
    if not sep:
        raise ValueError(f"an item is AFN:Fn in hex:decimal, e.g. 0C:F129: {text!r}")
    afn = int(afn_text.removeprefix("0X"), 16)
    fn = int(fn_text.removeprefix("F"))
    if (afn, fn) not in services.LAYOUTS or afn not in (Afn.CLASS1, Afn.CLASS2, Afn.CLASS3):
        raise ValueError(f"fep reads no AFN {afn:02X} F{fn}")
    return afn, fn


@attrs.frozen
class ClientSettings:
    """What to read of one concentrator: its address, the points (P0 is the terminal), the
    (AFN, Fn) items, the day of frozen data and the range of curves (terminal-local dates
    and times), how often to resend after silence."""

    address: Address
    points: tuple[int, ...] = (1,)
    items: tuple[tuple[int, int], ...] = DEFAULT_ITEMS
    day: date | None = None  # class 2 daily/monthly data: default yesterday
    since: datetime | None = None  # class 2 curves: default yesterday 00:15 ..
    until: datetime | None = None  # .. today 00:00
    density: int = 1  # 15 minutes
    retries: int = 1
    meter: str | None = None
    route: str | None = None
    tz: tzinfo = DEFAULT_TERMINAL_TZ
    # Tp's allowed delay in minutes (None: requests carry no time label).
    delay: int | None = None
    point_meters: tuple[tuple[int, str], ...] = ()
    # Set the terminal's clock (AFN 05 F31) to ``now`` when the request goes out, before
    # the reads; a denial fails the session.
    set_clock: bool = False
    # Points without an entry in point_meters are filed as ``<meter>/P<n>``.
    name_points: bool = False


class Gw3761Client(MasterExchange):
    """Reads what ``settings`` name, one request at a time."""

    # A read's noise counts the bytes that are no frame; frames it drops are noted only.
    counts_dropped = False
    checks_afn = True

    def __init__(self, settings: ClientSettings, now: Callable[[], datetime] | None = None
                 ) -> None:  # fmt: skip
        super().__init__(settings.address, retries=settings.retries, meter=settings.meter,
                         route=settings.route, delay=settings.delay)  # fmt: skip
        self.settings = settings
        self.now = now or (lambda: datetime.now(UTC))
        name = settings.meter or str(settings.address)
        self.mapper = RecordMapper(name, dict(settings.point_meters), settings.tz,
                                   name_points=settings.name_points)
        self.records: list[Record] = []
        self.skipped: list[tuple[str, str]] = []
        self._queue: list[Step] = []
        self.clock_set: Clock | None = None
        # Frames the terminal starts by itself (reports) go out as Reported, not into this
        # read's records: set when the channel has a report handler (a GPRS session). The
        # last answer with ACD set (events not read yet, its EC) is handed over when the
        # read ends, so that the report handler fetches them.
        self.hand_over = False

    # -- the requests -----------------------------------------------------------------------

    def _local_now(self) -> datetime:
        return self.now().astimezone(self.settings.tz).replace(tzinfo=None)

    def _value(self, afn: int, fn: int) -> Any:
        s = self.settings
        today = self._local_now().date()
        if afn == Afn.CLASS2 and fn in services.DAILY_FNS:
            return s.day or today - timedelta(days=1)
        if afn == Afn.CLASS2 and fn in services.MONTHLY_FNS:
            day = s.day or (today.replace(day=1) - timedelta(days=1))
            return day.replace(day=1)
        if afn == Afn.CLASS3:
            return EventsRequest(0, 0xFF)
        return None

    def _curves(self, fn: int, points: Sequence[int]) -> list[Step]:
        s = self.settings
        today = self._local_now().date()
        minutes = services.DENSITY_MINUTES.get(s.density, 15)
        step = timedelta(minutes=minutes)
        since = s.since or datetime.combine(today - timedelta(days=1), datetime.min.time()) + step
        until = s.until or datetime.combine(today, datetime.min.time()) + step
        out = []
        start = since
        while start < until:
            count = min(int((until - start) / step), 96)
            if count <= 0:
                break
            units = services.request_units(Afn.CLASS2, points, [fn],
                                           CurveRequest(start, s.density, count))  # fmt: skip
            out.append(Step(f"0D:F{fn} from {start.isoformat()}", int(Afn.CLASS2),
                            b"".join(units)))
            start += count * step
        return out

    def _plan(self) -> list[Step]:
        s = self.settings
        plan: list[Step] = []
        if s.set_clock:
            plan.append(Step(CLOCK_SET, int(Afn.CONTROL), b""))  # its data is the time it is sent
        for afn, fn in s.items:
            if afn == Afn.CLASS3 or (afn == Afn.CLASS1 and fn == 2):
                points: Sequence[int] = (0,)
            else:
                points = [p for p in s.points if p != 0] or [0]
            for at in range(0, len(points), POINTS_PER_REQUEST):
                chunk = points[at : at + POINTS_PER_REQUEST]
                if afn == Afn.CLASS2 and fn in services.CURVE_FNS:
                    plan += self._curves(fn, chunk)
                    continue
                units = services.request_units(afn, chunk, [fn], self._value(afn, fn))
                plan.append(Step(f"{afn:02X}:F{fn}", afn, b"".join(units)))
        return plan

    def start(self) -> list[Action]:
        self._queue = self._plan()
        return self._next()

    def _next(self) -> list[Action]:
        if not self._queue:
            self._done = True
            self._current = None
            return [Finished(tuple(self.records))]
        step = self._queue.pop(0)
        local = self._local_now()
        now = TimeFields(day=local.day, hour=local.hour, minute=local.minute, second=local.second)
        if step.what == CLOCK_SET:
            clock = Clock.of(local)
            step = attrs.evolve(step, data=services.encode_unit(Afn.CONTROL, [0], [31], False,
                                                                {(0, 31): clock}))  # fmt: skip
            self.clock_set = clock
        return self._ask(step, now=now)

    # -- the answers ------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Action]:
        if self._done:
            return []
        actions: list[Action] = super().receive(data)
        if self.hand_over and self.done:
            # The read ended within these bytes: what came after its last answer (whole
            # frames above, then the start of the next) is the channel's, in order.
            rest = self.decoder.drain()
            if rest:
                actions.append(Reported(rest))
            acd, self._acd = self._acd, None
            if acd is not None:
                # Events not read: the answer's EC (without its data) for the handler.
                actions.append(Reported(attrs.evolve(
                    acd, data=b"", seq=attrs.evolve(acd.seq, fir=True, fin=True,
                                                    con=False)).encode()))
        return actions

    def _after_end(self, frame: Frame) -> list[Action]:
        return [Reported(frame.encode())] if self.hand_over else []

    def _initiated(self, frame: Frame) -> list[Action]:
        # Login, heartbeat or data the terminal reports by itself: confirm what asks for
        # it, keep reported data, go on waiting; with a report handler, a report is its
        # (it files the data under the meters behind the concentrator, stores them and
        # confirms them, when asked, after this read).
        if self.hand_over and frame.afn != Afn.LINK:
            return [Reported(frame.encode())]
        out: list[Action] = super()._initiated(frame)
        try:
            event = services.decode_event(frame)
        except (FrameError, ProtocolError) as e:
            return [*out, Noise(f"reported frame not decoded: {e}")]
        if isinstance(event, Data):
            self.records += self.mapper.records(event, self.now())
        return out

    def _answered(self, whole: Frame) -> list[Action]:
        s = self.settings
        assert self._current is not None
        what = self._current.what
        try:
            event = services.decode_event(whole)
        except (FrameError, ProtocolError) as e:
            self.skipped.append((what, str(e)))
            return [Skipped(what, str(e)), *self._next()]
        if isinstance(event, Denied) and what == CLOCK_SET:
            self._done = True
            return [Failed(ProtocolError(
                f"concentrator {s.address} refused the clock set",
                meter=s.meter, route=s.route, protocol=PROTOCOL))]
        if isinstance(event, Denied):
            self.skipped.append((what, "denied: no data"))
            return [Skipped(what, "the terminal has no such data"), *self._next()]
        if isinstance(event, Data):
            self.records += self.mapper.records(event, self.now())
        return self._next()

    def _resending(self, step: Step, attempt: int) -> list[Action]:
        return [Resent(step.what, attempt)]

    def _unanswered(self, step: Step) -> list[Action]:
        if not self.records and not self._queue:
            return super()._unanswered(step)
        self.skipped.append((step.what, "no answer"))
        return [Skipped(step.what, "no answer"), *self._next()]


__all__ = [
    "ClientSettings",
    "Failed",
    "Finished",
    "Gw3761Client",
    "Noise",
    "Reported",
    "Resent",
    "Send",
    "Skipped",
    "parse_item",
]
