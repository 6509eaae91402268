"""The Twisted side of IEC 62056-21: a pull readout session over any client endpoint
(IecReadoutProtocol) and a receiver for meters that push their readout over TCP.

The state machine lives in ``client.py``; this module puts it in the session driver's
shape (``ReadoutSteps``: what the step timer waits for) and turns results into Readings;
fep/protocols/session.py moves the bytes, runs the timer and times the baud switch.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, tzinfo
from typing import Any
from typing import Protocol as Protocol_
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.errors import ConfigError, FrameError, SessionTimeout
from fep.interfaces import (
    IMeterProtocol,
    IPushChannel,
    IPushHandler,
    IPushProtocol,
    IRecordSink,
    peer_identified,
)
from fep.model import Meter, Record, utcnow
from fep.protocols.actions import Fail, Finish, Line, Send, SetTimer, SwitchBaud
from fep.protocols.iec62056_21.client import (
    PROTOCOL,
    IdentificationReceived,
    ModeCClient,
    PushReceived,
    ReadoutReceived,
    State,
)
from fep.protocols.iec62056_21.client import Send as IecSend
from fep.protocols.iec62056_21.client import SwitchBaud as IecSwitchBaud
from fep.protocols.iec62056_21.frames import DataBlock, FrameDecoder, Identification
from fep.protocols.iec62056_21.readout import parse_readout, to_readings
from fep.protocols.session import MeterSession, run_session
from fep.ratelog import RateLimitedLog

log = Logger(namespace="fep.protocols.iec62056_21")


class ReadoutSteps:
    """A ModeCClient in the session driver's shape: the step timer counts silence while
    waiting for the identification, for the readout, and between the readout's bytes."""

    def __init__(self, client: ModeCClient) -> None:
        self.client = client
        self._awaited = "identification"

    @property
    def waiting_for(self) -> str | None:
        return self._awaited

    def start(self) -> list[object]:
        return [Send(self.client.start()), SetTimer()]

    def receive(self, data: bytes) -> list[object]:
        actions = self.client.receive_data(data)
        steps: list[object] = []
        if self.client.state is State.AWAIT_READOUT and not actions:
            # A readout at 300 Bd takes a while: the step timer counts silence, not the total.
            self._awaited = "complete readout"
            steps.append(SetTimer())
        identified = False
        for action in actions:
            if isinstance(action, IecSend):
                steps.append(Send(action.data))
            elif isinstance(action, IecSwitchBaud):
                steps.append(SwitchBaud(action.baudrate))
            elif isinstance(action, IdentificationReceived):
                self._awaited = "readout"
                identified = True
                steps.append(action)
            elif isinstance(action, PushReceived):
                steps += [action, SetTimer()]  # handed to the channel; the wait goes on
            elif isinstance(action, ReadoutReceived):
                steps.append(Finish(action.readout))
        if identified:
            steps.append(SetTimer())  # the readout, once the option select is out
        return steps

    def timeout(self) -> list[object]:
        return [Fail(SessionTimeout(f"no {self._awaited}"))]


class _ReadoutSession(MeterSession):
    """One ModeCClient over one connection; ``done`` fires with the readings."""

    default_baudrate = 300

    def __init__(self, reactor: IReactorTime, meter: Meter, timeout: float, tz: tzinfo) -> None:
        super().__init__(reactor, timeout, meter=meter.id, route=meter.route, protocol=PROTOCOL)
        self.meter = meter
        self.tz = tz
        self._client: ModeCClient | None = None

    def make_steps(self, line: Line) -> ReadoutSteps:
        baud_char = self.meter.metadata.get("iec_baud_char") or None
        # A GPRS modem session lent to this pull also carries the meter's pushes.
        pushes = IPushChannel.providedBy(self.transport)
        self._client = ModeCClient(self.meter.address, switch_baud=line.serial,
                                   baud_char=baud_char, pushes=pushes)
        return ReadoutSteps(self._client)

    def note(self, action: object) -> None:
        if isinstance(action, PushReceived):
            self._hand_over_push(action)
        elif isinstance(action, IdentificationReceived):
            log.debug(
                "identification {ident}",
                ident=action.identification.text,
                meter=self.meter.id,
                route=self.meter.route,
                protocol=PROTOCOL,
            )

    def _hand_over_push(self, push: PushReceived) -> None:
        """A readout the meter pushed while this session waited for its answer: its
        readings go to the channel, to be stored like any other push (the meter's, unless
        it names another serial number: then it is logged and dropped)."""
        fields: dict[str, Any] = {
            "meter": self.meter.id, "route": self.meter.route, "protocol": PROTOCOL}
        if push.readout is None:
            log.warn("{meter}: readout pushed during the pull dropped: {why}",
                     why=push.problem, **fields)
            return
        serial = push.readout.serial()
        if serial and self.meter.serial and serial != self.meter.serial:
            log.warn(
                "{meter}: readout of serial number {serial} pushed during the pull dropped "
                "(not this meter's)",
                serial=serial,
                **fields,
            )
            return
        readings = to_readings(
            push.readout, self.meter.id, tz=self.tz, received_time=utcnow(),
            source=self.meter.route,
        )
        d = IPushChannel(self.transport).pushed(list(readings))

        def not_stored(failure: Failure) -> None:
            log.failure("{meter}: pushed readout not stored", failure, **fields)

        d.addErrback(not_stored)

    def result(self, value: Any) -> list[Record]:
        return list(to_readings(
            value, self.meter.id, tz=self.tz, received_time=utcnow(), source=self.meter.route
        ))

    def lost_while(self) -> str:
        return f"while {self._client.state.value if self._client else 'connecting'}"


@implementer(IMeterProtocol, IPushProtocol)
class IecReadoutProtocol:
    """IEC 62056-21 mode C data readout: sign-on, identification, option select, readout."""

    name = PROTOCOL

    def __init__(self, tz: tzinfo = UTC) -> None:
        # The zone meter-local times (0.9.1/0.9.2, value timestamps) are read in, unless the
        # meter's metadata names its own (``tz``).
        self.tz = tz

    def read(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[list[Record]]:
        tz = self.tz
        zone_name = meter.metadata.get("tz")
        if zone_name:
            # A meter's own zone (metadata tz = Europe/Berlin) wins over the protocol default.
            try:
                tz = ZoneInfo(zone_name)
            except (ZoneInfoNotFoundError, ValueError):
                return fail(
                    ConfigError(f"meter {meter.id}: unknown time zone {zone_name!r}", key="tz")
                )
        session = _ReadoutSession(reactor, meter, timeout, tz)
        result: Deferred[list[Record]] = run_session(
            reactor, endpoint, session, meter.route, timeout
        )
        return result

    def push_handler(
        self,
        meter: Meter,
        sink: IRecordSink,
        *,
        directory: Any,
        counters: Any,
        source: str,
        close: Callable[[], None],
    ) -> IecPushHandler:
        """Readouts pushed on ``meter``'s connection: a readout naming another known meter
        (by serial number or identification) goes to that meter, any other to ``meter``."""

        def resolve(ident: str, serial: str | None) -> str:
            found = directory.identify(serial, ident) if directory is not None else None
            return str(found.id) if found is not None else meter.id

        tz = self.tz
        zone_name = meter.metadata.get("tz")
        if zone_name:
            try:
                tz = ZoneInfo(zone_name)
            except (ZoneInfoNotFoundError, ValueError):
                log.warn("meter {meter}: unknown time zone {tz}; pushes read as UTC",
                         meter=meter.id, tz=zone_name)
        return IecPushHandler(
            sink, resolve, stats=IecPushStats(), source=source, close=close, tz=tz
        )


# ---------------------------------------------------------------------------
# Meters that push: identification + readout over an inbound TCP connection
# ---------------------------------------------------------------------------


class PushCounters(Protocol_):
    """Where a push handler counts what it took and what it dropped."""

    readouts: int
    rejected: int
    garbage: int
    bad_blocks: int


@attrs.define
class IecPushStats:
    readouts: int = 0
    rejected: int = 0
    garbage: int = 0
    bad_blocks: int = 0


@implementer(IPushHandler)
class IecPushHandler:
    """Pushed readouts on one connection: identification line(s) and readout block(s).

    Garbage before an identification is skipped (logged, counted in ``garbage``); a readout
    whose meter cannot be resolved closes the connection and is counted in ``rejected``; a
    bad BCC or data line drops that readout (``bad_blocks``).
    """

    def __init__(
        self,
        sink: IRecordSink,
        resolve_meter: Callable[[str, str | None], str | None],
        *,
        stats: PushCounters,
        source: str,
        close: Callable[[], None],
        tz: tzinfo = UTC,
        events: RateLimitedLog | None = None,
    ) -> None:
        self.sink = sink
        self.resolve_meter = resolve_meter
        # Shared by a listener's connections, so that strangers' junk is rate-limited.
        self.events = events if events is not None else RateLimitedLog(log)
        self.stats = stats
        self.source = source
        self.close = close
        self.tz = tz
        self._decoder = FrameDecoder()
        self.identification: Identification | None = None
        # The identification of a push whose readout block has not come yet (a push under
        # way: a pull waits for it, or is handed it, see pending and take_buffered).
        self._unfinished = b""
        self.closed = False
        self.frames = 0

    def data_received(self, data: bytes) -> None:
        feed = data
        while not self.closed:
            try:
                messages = self._decoder.receive(feed)
            except FrameError as e:
                feed = b""
                skipped = self._decoder.skip_to_frame_start()
                self._garbage(f"{e.message} ({skipped + 1} bytes skipped)")
                continue
            for message in messages:
                if not self._handle(message):
                    return
            return

    def pending(self) -> int:
        return len(self._unfinished) + self._decoder.buffered

    def take_buffered(self) -> bytes:
        unfinished, self._unfinished = self._unfinished, b""
        return unfinished + self._decoder.drain()

    def _garbage(self, why: str) -> None:
        if self.identification is None:
            self.stats.garbage += 1
        else:
            self.stats.bad_blocks += 1
        self.events.info("push from {source}: {why}", source=self.source, why=why,
                         protocol=PROTOCOL)

    def _handle(self, message: object) -> bool:
        """Act on one message; False once the connection is being closed."""
        if self.closed:
            return False
        if isinstance(message, Identification):
            self.identification = message
            self._unfinished = message.encode()
            return True
        if not isinstance(message, DataBlock) or self.identification is None:
            self._garbage(f"unexpected {type(message).__name__} before an identification")
            return True
        self._unfinished = b""
        try:
            readout = parse_readout(message.check().data)
        except FrameError as e:
            self.stats.bad_blocks += 1
            self.events.warn(
                "push from {source}: readout dropped: {why}",
                source=self.source,
                why=e.message,
                protocol=PROTOCOL,
            )
            return True
        ident = self.identification.text
        meter_id = self.resolve_meter(ident, readout.serial())
        if meter_id is None:
            self.stats.rejected += 1
            self.events.warn(
                "push from {source}: unknown meter {ident} (serial {serial}), closing",
                source=self.source,
                ident=ident,
                serial=readout.serial(),
                protocol=PROTOCOL,
            )
            self.closed = True
            self.close()
            return False
        readings = to_readings(
            readout, meter_id, tz=self.tz, received_time=utcnow(), source=self.source
        )
        self.stats.readouts += 1
        self.frames += 1
        d = self.sink.submit(list(readings))
        d.addErrback(
            lambda f: log.failure(
                "push from {source}: sink refused readout", f, source=self.source, meter=meter_id
            )
        )
        return True


class PushedReadoutReceiver(Protocol):
    """One inbound connection of a meter that pushes readouts (no requests), decoded by an
    IecPushHandler counting in the factory."""

    factory: PushedReadoutFactory

    def __init__(self) -> None:
        self.handler: IecPushHandler | None = None
        self.source = "tcp-push"

    @property
    def identification(self) -> Identification | None:
        return self.handler.identification if self.handler is not None else None

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        host = getattr(peer, "host", "?")
        port = getattr(peer, "port", "?")
        self.source = f"tcp-push:{host}:{port}"
        self.handler = IecPushHandler(
            self.factory.sink,
            self.factory.resolve_meter,
            stats=self.factory,
            source=self.source,
            close=self.transport.loseConnection,  # type: ignore[union-attr]
            tz=self.factory.tz,
            events=self.factory.events,
        )

    def dataReceived(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)
            if self.handler.identification is not None:  # the meter said who it is
                peer_identified(self.transport)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self.handler is not None:
            self.handler.closed = True


class PushedReadoutFactory(ServerFactory[PushedReadoutReceiver]):
    """Server factory for pushing meters; counters are shared by all its connections."""

    protocol = PushedReadoutReceiver
    noisy = False

    def __init__(
        self,
        sink: IRecordSink,
        resolve_meter: Callable[[str, str | None], str | None],
        tz: tzinfo = UTC,
    ) -> None:
        self.sink = sink
        self.resolve_meter = resolve_meter
        self.tz = tz
        self.readouts = 0
        self.rejected = 0
        self.garbage = 0
        self.bad_blocks = 0
        self.events = RateLimitedLog(log)
