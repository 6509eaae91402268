"""A simulated Q/GDW 1376.1 concentrator with simulated DL/T 645 meters behind it: a sans-IO
terminal (its address, meter archive, the meters on its ports, frozen data and curves of past
days, event records, clock) answering a master station's requests, and a Twisted adapter
that dials a master station (logs in, beats its heart) or listens for one, with faults on
demand.

``python -m fep.sim.concentrator --port 9761 --meters 20``                       (listens)
``python -m fep.sim.concentrator --connect 127.0.0.1:9760 --address 4403:0004`` (dials)

The concentrator knows its meters only through its archive (AFN 04 F10): class 1 and 2 data
of a point are read from the meter whose address the archive gives for that point, on that
port; a point whose archive entry is missing or wrong has no data. Forwarding (AFN 10 F1)
hands the DL/T 645 bytes to the meters on the port and returns what they answer.

Faults: ``silent`` addresses (those meters answer nothing: their points have no data and
forwarding gets an empty answer), ``archive_mismatch`` (the initial archive gives one
point a wrong address and lacks the last meter), ``drop_answers`` (the next N answers are
not sent), ``damage_answers`` (the next N go out with a bad checksum), ``refuse`` (requests
of these AFN/Fn are denied); the connection's ``hang_up_after`` (``--hang-up-after``: closed
once, after answering that many requests: a session lost midway).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from fep.errors import FrameError, ProtocolError
from fep.protocols.dlt645 import frames as dlt645_frames
from fep.protocols.gw3761 import services
from fep.protocols.gw3761.formats import Clock, TimeFields
from fep.protocols.gw3761.frames import (
    Address,
    Afn,
    Control,
    EventCounter,
    Frame,
    FrameDecoder,
    Function,
    Seq,
    split_into_frames,
)
from fep.protocols.gw3761.records import DEFAULT_TERMINAL_TZ
from fep.protocols.gw3761.services import (
    ArchiveEntry,
    ConfirmItem,
    Curve,
    CurveRequest,
    Demand,
    EventRecord,
    Events,
    EventsRequest,
    ForwardAnswer,
    ForwardIndications,
    ForwardRequest,
    Frozen,
    Indications,
    Instantaneous,
    Item,
    MasterStations,
    UplinkParameters,
)
from fep.sim import serve
from fep.sim.dlt645 import SimulatedDlt645Meter, make_meters

log = Logger(namespace="fep.sim.concentrator")

PLC_PORT = 31
_FOUR = Decimal("0.0001")


def _day_start(day: date, tz: tzinfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


@attrs.define
class SimulatedConcentrator:
    """The terminal: answers frames, makes its own (login, heartbeat, logout).

    ``clock`` gives wall time (seconds); the terminal's own clock runs ``clock_offset``
    ahead. ``meters`` are on ``ports`` (address -> port, default PLC port 31). ``max_user``
    bounds a frame's user data: longer answers go out as multi-frame answers.
    """

    address: Address = attrs.field(factory=lambda: Address("4403", 4))
    meters: list[SimulatedDlt645Meter] = attrs.field(factory=list)
    clock: Callable[[], float] = time.time
    clock_offset: float = 0.0
    tz: tzinfo = DEFAULT_TERMINAL_TZ
    ports: dict[str, int] = attrs.field(factory=dict)
    archive: dict[int, ArchiveEntry] = attrs.field(factory=dict)
    events: list[EventRecord] = attrs.field(factory=list)
    general_events: list[EventRecord] = attrs.field(factory=list)
    # Important events the master has read (EC1 up to here is known to it).
    events_read: int = 0
    max_user: int = 1024
    silent: set[str] = attrs.field(factory=set)
    drop_answers: int = 0
    damage_answers: int = 0
    # (AFN, Fn) requests it denies (AFN 00 F2), e.g. {(5, 31)}: a terminal refusing clock sets.
    refuse: set[tuple[int, int]] = attrs.field(factory=set)
    trips: dict[int, bool] = attrs.field(factory=dict)
    # Its parameters (AFN 04 / 0A): F1 upstream communication, F3 master stations.
    uplink: UplinkParameters = attrs.field(factory=UplinkParameters)
    stations: MasterStations = attrs.field(
        factory=lambda: MasterStations("10.0.0.1", 9760, "10.0.0.2", 9760, "cmnet"))
    pfc: int = 0
    resets: list[int] = attrs.field(factory=list)
    # Counters a test or the demo reads.
    requests: int = 0
    bad_frames: int = 0
    stale: int = 0
    denied: int = 0
    forwarded: int = 0
    # Set ACD and EC on its login, heartbeat and logout too while events are unread (the
    # standard allows ACD on any uplink frame; many terminals set it only on answers).
    acd_on_link: bool = False
    # The master's confirmations of frames it started, by their sequence number (PSEQ),
    # and denials (AFN 00 F2) of them.
    confirmations: list[int] = attrs.field(factory=list)
    denials: list[int] = attrs.field(factory=list)
    # Reports sent and not confirmed yet: PSEQ -> the important event count they bring the
    # master up to.
    _reports: dict[int, int] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if not self.archive:
            self.archive = {n: self.entry_for(n, m) for n, m in enumerate(self.meters, 1)}

    def entry_for(self, number: int, meter: SimulatedDlt645Meter, point: int | None = None
                  ) -> ArchiveEntry:  # fmt: skip
        return ArchiveEntry(number, point or number, self.ports.get(meter.address, PLC_PORT),
                            meter.address, 30 if meter.edition == 2007 else 1)  # fmt: skip

    def mismatch_archive(self) -> None:
        """The fault of a stale archive: point 1 names a wrong address, the last meter is
        missing."""
        if self.archive:
            first = min(self.archive)
            self.archive[first] = attrs.evolve(self.archive[first], address="999999999999")
            del self.archive[max(self.archive)]

    # -- time -------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The terminal's clock, local wall time (naive)."""
        return datetime.fromtimestamp(self.clock() + self.clock_offset, self.tz).replace(
            tzinfo=None, microsecond=0)

    def _utc(self, local: datetime) -> datetime:
        return local.replace(tzinfo=self.tz).astimezone(UTC)

    # -- frames it starts ---------------------------------------------------------------------

    def _link(self, fn: int) -> bytes:
        pfc, self.pfc = self.pfc, (self.pfc + 1) & 0xFF
        ec = self._ec() if self.acd_on_link else None
        frame = Frame(Control(Function.LINK_TEST, uplink=True, initiator=True,
                              fcb_acd=ec is not None), self.address,
                      Afn.LINK, Seq(pfc & 0x0F, con=True),
                      services.encode_unit(Afn.LINK, [0], [fn], True), None, ec)  # fmt: skip
        return frame.encode()

    def report_event(self, record: EventRecord, *, con: bool = True) -> bytes:
        """The frame reporting a new important event by itself (PRM = 1, AFN 0E F1 with
        the record at its pointer, CON set, ACD and EC); the event counts as read once the
        master confirms it."""
        self.events.append(record)
        count = len(self.events)
        pointer = (count - 1) & 0xFF
        pfc, self.pfc = self.pfc, (self.pfc + 1) & 0xFF
        ec = self._ec()
        data = Events(count & 0xFF, len(self.general_events) & 0xFF, pointer,
                      (pointer + 1) & 0xFF, (record,))
        frame = Frame(Control(Function.USER_DATA, uplink=True, initiator=True,
                              fcb_acd=ec is not None), self.address,
                      Afn.CLASS3, Seq(pfc & 0x0F, con=con),
                      services.encode_unit(Afn.CLASS3, [0], [1], True, {(0, 1): data}),
                      None, ec)  # fmt: skip
        if con and self.events_read == count - 1:
            self._reports[pfc & 0x0F] = count
        return frame.encode()

    def _confirmed(self, frame: Frame) -> None:
        """The master's confirmation (or denial) of a frame this terminal started."""
        try:
            items = services.decode_units(frame.afn, frame.data, False)
        except (FrameError, ProtocolError):
            return
        fns = {item.fn for item in items}
        if fns == {1}:
            self.confirmations.append(frame.seq.seq)
            count = self._reports.pop(frame.seq.seq, None)
            if count is not None:
                self.events_read = max(self.events_read, count)
        elif fns == {2}:
            self.denials.append(frame.seq.seq)
            self._reports.pop(frame.seq.seq, None)

    def login(self) -> bytes:
        return self._link(1)

    def logout(self) -> bytes:
        return self._link(2)

    def heartbeat(self) -> bytes:
        return self._link(3)

    def add_event(self, record: EventRecord, important: bool = True) -> None:
        (self.events if important else self.general_events).append(record)

    # -- answers ------------------------------------------------------------------------------

    def receive(self, data: bytes, decoder: FrameDecoder) -> list[bytes]:
        """The bytes to send back for ``data`` arriving on a line decoded by ``decoder``."""
        out: list[bytes] = []
        # Every frame of the bytes: a request behind a bad frame is answered now.
        for item in decoder.decode_all(data):
            if isinstance(item, FrameError):
                self.bad_frames += 1
            else:
                out += self.answer_bytes(item)
        return out

    def answer_bytes(self, request: Frame) -> list[bytes]:
        answers = self.answer(request)
        wire = []
        for frame in answers:
            raw = frame.encode()
            if self.drop_answers > 0:
                self.drop_answers -= 1
                continue
            if self.damage_answers > 0:
                self.damage_answers -= 1
                raw = raw[:-2] + bytes([raw[-2] ^ 0x5A, raw[-1]])
            wire.append(raw)
        return wire

    def answer(self, request: Frame) -> list[Frame]:
        """The frames answering one request (none for what a terminal ignores)."""
        if request.uplink:
            return []  # another terminal
        if not request.control.initiator:
            # Confirmations of its own login, heartbeat, reports.
            if request.afn == Afn.CONFIRM and self._addressed(request.address):
                self._confirmed(request)
            return []
        if not self._addressed(request.address):
            return []
        self.requests += 1
        if request.tp is not None and request.tp.stale(self.now()):
            self.stale += 1
            return []
        try:
            items = services.decode_units(request.afn, request.data, False)
        except (FrameError, ProtocolError):
            return [self._deny(request)]
        if any((request.afn, item.fn) in self.refuse for item in items):
            return [self._deny(request)]
        handlers: dict[int, Callable[[Frame, list[Item]], list[Frame]]] = {
            Afn.RESET: self._reset,
            Afn.SET_PARAMETERS: self._set_parameters,
            Afn.CONTROL: self._control,
            Afn.QUERY_PARAMETERS: self._query_parameters,
            Afn.CLASS1: self._class1,
            Afn.CLASS2: self._class2,
            Afn.CLASS3: self._class3,
            Afn.FORWARD: self._forward,
        }
        handler = handlers.get(request.afn)
        if handler is None:
            return [self._deny(request)]
        return handler(request, items)

    def _addressed(self, address: Address) -> bool:
        if address.area != self.address.area:
            return False
        return address.terminal == self.address.terminal or (
            address.group and address.terminal == 0xFFFF)

    def _ec(self) -> EventCounter | None:
        if len(self.events) > self.events_read:
            return EventCounter(len(self.events) & 0xFF, len(self.general_events) & 0xFF)
        return None

    def _frames(self, request: Frame, items: Sequence[Item], afn: int | None = None
                ) -> list[Frame]:  # fmt: skip
        if not items:
            return [self._deny(request)]
        ec = self._ec()
        template = Frame(Control(Function.RESPONSE, uplink=True, initiator=False,
                                 fcb_acd=ec is not None),
                         self.address, request.afn if afn is None else afn,
                         Seq(request.seq.seq), b"", None, ec)  # fmt: skip
        units = services.encode_items(template.afn, items, True)
        return split_into_frames(template, units, self.max_user, request.seq.seq)

    def _confirm(self, request: Frame) -> Frame:
        ec = self._ec()
        return Frame(Control(Function.ACK, uplink=True, initiator=False, fcb_acd=ec is not None),
                     self.address, Afn.CONFIRM, Seq(request.seq.seq),
                     services.encode_unit(Afn.CONFIRM, [0], [1], True), None, ec)  # fmt: skip

    def _deny(self, request: Frame) -> Frame:
        self.denied += 1
        ec = self._ec()
        return Frame(Control(Function.NO_DATA, uplink=True, initiator=False,
                             fcb_acd=ec is not None),
                     self.address, Afn.CONFIRM, Seq(request.seq.seq),
                     services.encode_unit(Afn.CONFIRM, [0], [2], True), None, ec)  # fmt: skip

    # -- services ---------------------------------------------------------------------------

    def _reset(self, request: Frame, items: list[Item]) -> list[Frame]:
        for item in items:
            self.resets.append(item.fn)
            if item.fn in (3, 4):  # parameters (and data) back to factory settings
                self.archive.clear()
            if item.fn in (2, 3):
                self.events.clear()
                self.general_events.clear()
                self.events_read = 0
        return [self._confirm(request)]

    def _set_parameters(self, request: Frame, items: list[Item]) -> list[Frame]:
        results = []
        for item in items:
            if item.fn == 1 and item.point == 0 and isinstance(item.value, UplinkParameters):
                self.uplink = item.value
                results.append(ConfirmItem(0, 1, 0))
            elif item.fn == 3 and item.point == 0 and isinstance(item.value, MasterStations):
                self.stations = item.value
                results.append(ConfirmItem(0, 3, 0))
            elif item.fn == 10 and item.point == 0:
                for entry in item.value:
                    if entry.point == 0:
                        self.archive.pop(entry.number, None)  # point 0 deletes the entry
                    else:
                        self.archive[entry.number] = entry
                results.append(ConfirmItem(0, 10, 0))
            else:
                results.append(ConfirmItem(item.point, item.fn, 1))
        if all(r.error == 0 for r in results):
            return [self._confirm(request)]
        return [self._items(request, results)]

    def _items(self, request: Frame, results: list[ConfirmItem]) -> Frame:
        ec = self._ec()
        return Frame(Control(Function.ACK, uplink=True, initiator=False, fcb_acd=ec is not None),
                     self.address, Afn.CONFIRM, Seq(request.seq.seq),
                     services.confirm_data(request.afn, results), None, ec)  # fmt: skip

    def _control(self, request: Frame, items: list[Item]) -> list[Frame]:
        for item in items:
            if item.fn == 31:
                clock = item.value
                target = clock.time if isinstance(clock, Clock) else None
                if target is None:
                    return [self._deny(request)]
                self.clock_offset = self._utc(target).timestamp() - self.clock()
            elif item.fn in (1, 2):
                # Remote trip / allow closing: the control of the meter at that point (its
                # relay opens; allowed to close, the customer closes it).
                self.trips[item.point] = item.fn == 1
                meter = self.meter_at(item.point)
                if meter is not None:
                    meter.relay_command_open = item.fn == 1
                    if item.fn == 1:
                        meter.relay_closed = False
        return [self._confirm(request)]

    def _query_parameters(self, request: Frame, items: list[Item]) -> list[Frame]:
        out = []
        for item in items:
            if item.fn == 1:
                out.append(Item(0, 1, self.uplink))
                continue
            if item.fn == 3:
                out.append(Item(0, 3, self.stations))
                continue
            if item.fn != 10:
                continue
            numbers = item.value or sorted(self.archive)
            entries = tuple(self.archive[n] for n in numbers if n in self.archive)
            # One unit per 30 entries, so a big archive goes in several frames.
            for at in range(0, max(len(entries), 1), 30):
                out.append(Item(0, 10, entries[at : at + 30]))
        return self._frames(request, out)

    def meter_at(self, point: int) -> SimulatedDlt645Meter | None:
        """The meter the archive puts at ``point`` (None: none, or it does not answer)."""
        entry = next((e for e in self.archive.values() if e.point == point), None)
        if entry is None or entry.address in self.silent:
            return None
        return next((m for m in self.meters if m.address == entry.address), None)

    def _points(self, point: int) -> list[int]:
        if point == 0xFFFF:
            return sorted(e.point for e in self.archive.values())
        return [point]

    def _class1(self, request: Frame, items: list[Item]) -> list[Frame]:
        out = []
        for item in items:
            if item.fn == 2:
                out.append(Item(0, 2, Clock.of(self.now())))
                continue
            for point in self._points(item.point):
                meter = self.meter_at(point)
                if meter is not None:
                    value = self._class1_value(meter, item.fn)
                    if value is not None:
                        out.append(Item(point, item.fn, value))
        return self._frames(request, out)

    def _indications(self, meter: SimulatedDlt645Meter, di2: int, at: datetime | None,
                     places: int) -> tuple[Decimal | None, ...]:  # fmt: skip
        quant = Decimal(1).scaleb(-places)
        return tuple(
            None if (v := meter.energy(di2, t, at)) is None else v.quantize(quant)
            for t in range(5)
        )

    def _class1_value(self, meter: SimulatedDlt645Meter, fn: int) -> Any:
        now = self.now()
        read_time = now.replace(second=0)
        if fn == 129:
            return Indications(read_time, self._indications(meter, 1, None, 4))
        if fn == 130:
            return Indications(read_time, self._indications(meter, 3, None, 2))
        if fn == 33:
            active = self._indications(meter, 1, None, 4)
            reactive = self._indications(meter, 3, None, 2)
            none = (None,) * 5
            return ForwardIndications(read_time, active, reactive, none, none)
        if fn == 25:
            return Instantaneous(read_time, self._instant(meter))
        return None

    def _instant(self, meter: SimulatedDlt645Meter) -> dict[str, Decimal | None]:
        v: dict[str, Decimal | None] = {}
        for i, s in enumerate(("", "a", "b", "c")):
            v["p" + s] = meter.active_power(i)
            v["q" + s] = meter.reactive_power(i)
            v["pf" + s] = (meter.power_factors[i] * 100).quantize(Decimal("0.1"))
            v["s" + s] = (abs(meter.active_power(i)) * Decimal("1.03")).quantize(_FOUR)
        for i, s in enumerate(("a", "b", "c")):
            v["u" + s] = meter.voltages[i]
            v["i" + s] = meter.currents[i]
        v["i0"] = Decimal("0.000")
        return v

    def _class2(self, request: Frame, items: list[Item]) -> list[Frame]:
        today = self.now().date()
        out = []
        for item in items:
            for point in self._points(item.point):
                meter = self.meter_at(point)
                if meter is None:
                    continue
                value = self._class2_value(meter, item.fn, item.value, today)
                if value is not None:
                    out.append(Item(point, item.fn, value))
        return self._frames(request, out)

    def _class2_value(self, meter: SimulatedDlt645Meter, fn: int, ask: Any, today: date
                      ) -> Any:  # fmt: skip
        if fn in services.DAILY_FNS or fn in services.MONTHLY_FNS:
            if not isinstance(ask, date):
                return None
            day = ask if fn in services.DAILY_FNS else ask.replace(day=1)
            if day > today:
                return None
            at = _day_start(day, self.tz)
            if at.timestamp() > self.clock() + self.clock_offset:
                return None
            read_time = datetime(day.year, day.month, day.day, 0, 1)
            if fn in (161, 177):
                return Frozen(day, Indications(read_time, self._indications(meter, 1, at, 4)))
            if fn in (162, 178):
                return Frozen(day, Indications(read_time, self._indications(meter, 3, at, 2)))
            if fn == 185:
                demand = meter.demand.quantize(_FOUR)
                when = TimeFields(day.month, day.day, 0, 15)
                return Frozen(day, Demand(read_time, ((demand, when),) * 5))
            return None
        if isinstance(ask, CurveRequest):
            return self._curve(meter, fn, ask)
        return None

    def _curve(self, meter: SimulatedDlt645Meter, fn: int, ask: CurveRequest) -> Curve | None:
        minutes = services.DENSITY_MINUTES.get(ask.density)
        if minutes is None:
            return None
        step = timedelta(minutes=minutes)
        now = self.now()
        values: list[Decimal | None] = []
        for k in range(ask.count):
            local = ask.start + k * step
            if local > now:
                values.append(None)
                continue
            at = local.replace(tzinfo=self.tz)
            values.append(self._curve_point(meter, fn, at, step))
        return Curve(ask.start, ask.density, tuple(values))

    def _curve_point(self, meter: SimulatedDlt645Meter, fn: int, at: datetime,
                     step: timedelta) -> Decimal | None:  # fmt: skip
        if fn == 101:
            end = meter.energy(1, 0, at)
            begin = meter.energy(1, 0, at - step)
            if end is None or begin is None:
                return None
            return (end - begin).quantize(_FOUR)
        if fn in (81, 82, 83, 84):
            return meter.active_power(fn - 81)
        if fn in (89, 90, 91):
            return meter.voltages[fn - 89]
        if fn in (92, 93, 94):
            return meter.currents[fn - 92]
        if fn == 105:
            return (meter.power_factors[0] * 100).quantize(Decimal("0.1"))
        return None

    def _class3(self, request: Frame, items: list[Item]) -> list[Frame]:
        out = []
        for item in items:
            ask = item.value
            if not isinstance(ask, EventsRequest):
                continue
            store = self.events if item.fn == 1 else self.general_events
            count = len(store)
            start, end = ask.start, ask.end
            # Pointers count records modulo 256; the newest 255 are kept.
            # Pm > Pn: the pointers wrap past 255.
            wanted = [i for i in range(max(0, count - 255), count)
                      if (start <= (i & 0xFF) < end if start <= end
                          else (i & 0xFF) >= start or (i & 0xFF) < end)]  # fmt: skip
            records = tuple(store[i] for i in wanted)
            if item.fn == 1:
                self.events_read = max(self.events_read, count)
            out.append(Item(0, item.fn, Events(len(self.events) & 0xFF,
                                               len(self.general_events) & 0xFF,
                                               start, end, records)))  # fmt: skip
        return self._frames(request, out)

    def _forward(self, request: Frame, items: list[Item]) -> list[Frame]:
        out = []
        for item in items:
            ask = item.value
            if not isinstance(ask, ForwardRequest):
                continue
            self.forwarded += 1
            out.append(Item(0, 1, ForwardAnswer(ask.port, self.forward(ask.port, ask.payload))))
        return self._frames(request, out)

    def forward(self, port: int, payload: bytes) -> bytes:
        """What the meters on ``port`` answer to ``payload`` (DL/T 645 bytes)."""
        try:
            frames = dlt645_frames.FrameDecoder().receive(payload)
        except FrameError:
            return b""
        answers = b""
        for frame in frames:
            for meter in self.meters:
                if self.ports.get(meter.address, PLC_PORT) != port:
                    continue
                if meter.address in self.silent:
                    continue
                answer = meter.answer(frame)
                if answer is not None:
                    answers += answer.encode()
        return answers


def make_concentrator(
    meters: int = 20,
    address: str = "4403:0004",
    first_meter: str = "000000000001",
    clock: Callable[[], float] = time.time,
    days: int = 3,
    summary_loss: Decimal | None = None,
    **kwargs: Any,
) -> SimulatedConcentrator:
    """A concentrator with ``meters`` DL/T 645-2007 meters (consecutive addresses from
    ``first_meter``) that have run for ``days`` days, points 1..N in its archive. With a
    ``summary_loss`` (0.03: 3 %), a transformer area's summary meter follows at point N+1
    (the next address): its forward active energy grows as the others' together times
    1 + ``summary_loss``, so an energy balance of the area finds that share of its input lost
    (loss rate summary_loss / (1 + summary_loss): 2.91 % for 0.03)."""
    started = clock() - days * 86400
    sims = make_meters(meters, first_meter, clock=clock, started=started)
    if summary_loss is not None and sims:
        sims.append(summary_meter(sims, summary_loss, clock=clock, started=started))
    concentrator = SimulatedConcentrator(Address.parse(address), sims, clock, **kwargs)
    now = concentrator.now()
    concentrator.add_event(EventRecord(14, now - timedelta(hours=5),
                                       fields={"restored": now - timedelta(hours=4, minutes=50)}))
    if sims:
        concentrator.add_event(EventRecord(13, now - timedelta(hours=2), 1, True,
                                           {"flags": 0x08}))  # fmt: skip
    return concentrator


def summary_meter(members: Sequence[SimulatedDlt645Meter], loss: Decimal,
                  **kwargs: Any) -> SimulatedDlt645Meter:
    """The transformer's meter of an area whose consumers are ``members``: at the address
    after the last of them, forward active energy per hour the members' together times
    1 + ``loss`` (the line loss between the transformer and the consumers)."""
    last = max(int(m.address) for m in members)
    (meter,) = make_meters(1, f"{last + 1:012d}", **kwargs)
    together = sum((m.registers[0x01].per_hour for m in members), Decimal(0))
    meter.registers[0x01].per_hour = together * (1 + loss)
    return meter


# ---------------------------------------------------------------------------
# Twisted
# ---------------------------------------------------------------------------


class ConcentratorProtocol(Protocol):
    """One connection to a master station: answers requests; when it dialled out, logs in
    and beats its heart every ``factory.heartbeat`` seconds."""

    factory: ConcentratorFactory

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._beat: IDelayedCall | None = None

    def connectionMade(self) -> None:
        f = self.factory
        f.connections += 1
        f.protocols.append(self)
        if f.dials:
            self.send(f.concentrator.login())
            self._schedule()

    def _schedule(self) -> None:
        f = self.factory
        if f.heartbeat > 0:
            self._beat = f.reactor.callLater(f.heartbeat, self._heartbeat)

    def _heartbeat(self) -> None:
        self.send(self.factory.concentrator.heartbeat())
        self.factory.heartbeats += 1
        self._schedule()

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        f = self.factory
        before = f.concentrator.requests
        for answer in f.concentrator.receive(data, self._decoder):
            if f.answer_delay:
                f.reactor.callLater(f.answer_delay, self.send, answer)
            else:
                self.send(answer)
        if f.hang_up_after > 0:
            f.hang_up_after -= f.concentrator.requests - before
            if f.hang_up_after <= 0:
                # The fault of a session lost midway: once, after that many answers.
                f.hang_up_after = 0
                f.hang_ups += 1
                if self.transport is not None:
                    self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self._beat is not None and self._beat.active():
            self._beat.cancel()
        self._beat = None
        if self in self.factory.protocols:
            self.factory.protocols.remove(self)


class ConcentratorFactory(Factory[ConcentratorProtocol]):
    """Serves (or dials out with) one simulated concentrator."""

    protocol = ConcentratorProtocol
    noisy = False

    def __init__(self, concentrator: SimulatedConcentrator, reactor: IReactorTime | None = None,
                 *, dials: bool = False, heartbeat: float = 60.0,
                 answer_delay: float = 0.0, hang_up_after: int = 0) -> None:  # fmt: skip
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.concentrator = concentrator
        self.reactor = reactor
        self.dials = dials
        self.heartbeat = heartbeat
        self.answer_delay = answer_delay
        # Fault: the connection is closed once, after answering this many more requests.
        self.hang_up_after = hang_up_after
        self.hang_ups = 0
        self.connections = 0
        self.heartbeats = 0
        self.protocols: list[ConcentratorProtocol] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fep.sim.concentrator",
        description="A simulated Q/GDW 1376.1 concentrator with DL/T 645 meters behind it",
    )
    parser.add_argument("--port", type=int, help="listen for a master station on this TCP port")
    parser.add_argument("--interface", default="127.0.0.1", help="TCP listen address")
    parser.add_argument("--connect", metavar="HOST:PORT", help="dial this master station")
    parser.add_argument("--address", default="4403:0004", help="terminal address A1:A2 (hex)")
    parser.add_argument("--meters", type=int, default=20, help="meters behind it")
    parser.add_argument("--first-meter", default="000000000001", help="first meter address")
    parser.add_argument("--days", type=int, default=3, help="days of frozen data and curves")
    parser.add_argument("--summary-loss", type=Decimal, metavar="SHARE",
                        help="add a transformer area's summary meter after the others, its "
                        "input SHARE (0.03: 3 %%) more than theirs")  # fmt: skip
    parser.add_argument("--heartbeat", type=float, default=60.0, help="seconds between beats")
    parser.add_argument("--silent", action="append", default=[], metavar="ADDRESS",
                        help="this meter answers nothing")  # fmt: skip
    parser.add_argument("--archive-mismatch", action="store_true",
                        help="start with an archive that differs from the meters")  # fmt: skip
    parser.add_argument("--clock-offset", type=float, default=0.0,
                        help="seconds the terminal's clock runs ahead")  # fmt: skip
    parser.add_argument("--drop", type=int, default=0, help="drop the first N answers")
    parser.add_argument("--damage", type=int, default=0, help="spoil the first N answers")
    parser.add_argument("--hang-up-after", type=int, default=0, metavar="N",
                        help="close the connection once, after answering N requests")
    args = parser.parse_args(argv)
    if args.port is None and not args.connect:
        parser.error("give --port or --connect")
    try:
        concentrator = make_concentrator(args.meters, args.address, args.first_meter,
                                         days=args.days, summary_loss=args.summary_loss)
    except ValueError as e:
        parser.error(str(e))
    concentrator.silent.update(a.rjust(12, "0") for a in args.silent)
    if args.archive_mismatch:
        concentrator.mismatch_archive()
    concentrator.clock_offset = args.clock_offset
    concentrator.drop_answers = args.drop
    concentrator.damage_answers = args.damage
    reactor = serve.command_reactor()
    what = f"concentrator {concentrator.address} with {len(concentrator.meters)} meters"
    if args.port is not None:
        factory = ConcentratorFactory(concentrator, reactor, heartbeat=args.heartbeat,
                                      hang_up_after=args.hang_up_after)
        serve.serve_tcp(reactor, args.port, factory, args.interface, what)
    if args.connect:
        from twisted.application.internet import ClientService
        from twisted.internet.endpoints import clientFromString

        host, _, port = args.connect.rpartition(":")
        dialer = ConcentratorFactory(concentrator, reactor, dials=True,
                                     heartbeat=args.heartbeat,
                                     hang_up_after=args.hang_up_after)  # fmt: skip
        endpoint = clientFromString(reactor, f"tcp:{host}:{port}")
        ClientService(endpoint, dialer).startService()
        print(f"dialling {args.connect} as {what}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "ConcentratorFactory",
    "ConcentratorProtocol",
    "SimulatedConcentrator",
    "make_concentrator",
]
