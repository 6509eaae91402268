"""The Twisted side of IEC 62056-21: a pull readout session over any client endpoint
(IecReadoutProtocol) and a receiver for meters that push their readout over TCP.

The state machine lives in ``client.py``; this module only moves bytes, runs the per-step
timers on the reactor, times the baud switch on serial lines and turns results into Readings.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, tzinfo
from typing import Any
from typing import Protocol as Protocol_
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.channels.endpoints import run_session
from fep.errors import ChannelError, ConfigError, FrameError, ProtocolError, SessionTimeout
from fep.interfaces import (
    IMeterProtocol,
    IPushChannel,
    IPushHandler,
    IPushProtocol,
    IRecordSink,
    ISerialLine,
    peer_identified,
)
from fep.model import Meter, Record, utcnow
from fep.protocols.iec62056_21.client import (
    PROTOCOL,
    IdentificationReceived,
    ModeCClient,
    PushReceived,
    ReadoutReceived,
    Send,
    State,
    SwitchBaud,
)
from fep.protocols.iec62056_21.frames import DataBlock, FrameDecoder, Identification
from fep.protocols.iec62056_21.readout import parse_readout, to_readings
from fep.protocols.session import abort
from fep.ratelog import RateLimitedLog

log = Logger(namespace="fep.protocols.iec62056_21")

# How often to look again whether the transport's write buffer has drained before a baud
# switch (the FileDescriptor has no "drained" callback for a non-producer writer).
_DRAIN_POLL = 0.005


def _pending_write_bytes(transport: Any) -> int:
    """Bytes a FileDescriptor transport still holds in user space (0 for others)."""
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return max(buffered, 0) + int(getattr(transport, "_tempDataLen", 0))


class _ReadoutSession(Protocol):
    """Drives one ModeCClient over one connection; ``done`` fires with the records."""

    def __init__(self, reactor: Any, meter: Meter, timeout: float, tz: tzinfo) -> None:
        self.reactor = reactor
        self.meter = meter
        self.timeout = timeout
        self.tz = tz
        self.done: Deferred[list[Record]] = Deferred()
        self._timer: IDelayedCall | None = None
        self._switch_call: IDelayedCall | None = None
        self._finished = False
        self._client: ModeCClient | None = None
        # Line speed we believe the serial line runs at (for the wire time of the ACK).
        self._baudrate = 300
        self._last_sent = b""

    # -- helpers -----------------------------------------------------------------------

    def _error(self, message: str, cls: type[ProtocolError] = ProtocolError) -> ProtocolError:
        return cls(message, meter=self.meter.id, route=self.meter.route, protocol=PROTOCOL)

    def _arm(self, what: str) -> None:
        self._disarm()
        self._timer = self.reactor.callLater(self.timeout, self._timed_out, what)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self, what: str) -> None:
        self._timer = None
        self._fail(self._error(f"no {what} within {self.timeout:.1f} s", SessionTimeout))

    def _finish(self, result: list[Record]) -> None:
        if self._finished:
            return
        self._finished = True
        self._disarm()
        self.transport.loseConnection()  # type: ignore[union-attr]
        self.done.callback(result)

    def _fail(self, error: Exception) -> None:
        if self._finished:
            return
        self._finished = True
        self._disarm()
        if self._switch_call is not None and self._switch_call.active():
            self._switch_call.cancel()
        abort(self.transport)
        self.done.errback(Failure(error))

    # -- Protocol ------------------------------------------------------------------------

    def connectionMade(self) -> None:
        serial = ISerialLine.providedBy(self.transport)
        if serial:
            self._baudrate = int(getattr(self.transport, "baudrate", 300))
        baud_char = self.meter.metadata.get("iec_baud_char") or None
        # A GPRS modem session lent to this pull also carries the meter's pushes.
        pushes = IPushChannel.providedBy(self.transport)
        self._client = ModeCClient(
            self.meter.address, switch_baud=serial, baud_char=baud_char, pushes=pushes
        )
        request = self._client.start()
        self._write(request)
        self._arm("identification")

    def _write(self, data: bytes) -> None:
        self._last_sent = data
        self.transport.write(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._finished or self._client is None:
            return
        try:
            actions = self._client.receive_data(data)
        except FrameError as e:
            error = self._error(e.message)
            error.__cause__ = e
            self._fail(error)
            return
        except ProtocolError as e:
            self._fail(self._error(e.message))
            return
        if self._client.state is State.AWAIT_READOUT and not actions:
            # A readout at 300 Bd takes a while: the step timer counts silence, not the total.
            self._arm("complete readout")
        for action in actions:
            if isinstance(action, Send):
                self._write(action.data)
            elif isinstance(action, SwitchBaud):
                self._switch_after_drain(action.baudrate, self._last_sent)
            elif isinstance(action, IdentificationReceived):
                log.debug(
                    "identification {ident}",
                    ident=action.identification.text,
                    meter=self.meter.id,
                    route=self.meter.route,
                    protocol=PROTOCOL,
                )
                self._arm("readout")
            elif isinstance(action, PushReceived):
                self._hand_over_push(action)
                if not self._finished:
                    waiting = self._client.state is State.AWAIT_IDENTIFICATION
                    self._arm("identification" if waiting else "readout")
            elif isinstance(action, ReadoutReceived):
                readings = to_readings(
                    action.readout,
                    self.meter.id,
                    tz=self.tz,
                    received_time=utcnow(),
                    source=self.meter.route,
                )
                self._finish(list(readings))

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

    def _switch_after_drain(self, baudrate: int, sent: bytes) -> None:
        """set_baudrate once ``sent`` has left: first the FileDescriptor's buffer, then the
        bytes' own time on the wire at the old speed."""
        if self._finished:
            return
        if _pending_write_bytes(self.transport) > 0:
            self._switch_call = self.reactor.callLater(
                _DRAIN_POLL, self._switch_after_drain, baudrate, sent
            )
            return
        bits = int(getattr(self.transport, "char_bits", 10))
        queued = int(getattr(self.transport, "out_waiting", lambda: 0)())
        wire_time = (len(sent) + queued) * bits / self._baudrate
        self._switch_call = self.reactor.callLater(wire_time, self._set_baud, baudrate)

    def _set_baud(self, baudrate: int) -> None:
        self._switch_call = None
        if self._finished:
            return
        try:
            ISerialLine(self.transport).set_baudrate(baudrate)
        except (OSError, ValueError) as e:
            self._fail(ChannelError(f"cannot set {baudrate} Bd: {e}", route=self.meter.route))
            return
        self._baudrate = baudrate

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self._switch_call is not None and self._switch_call.active():
            self._switch_call.cancel()
        if not self._finished:
            state = self._client.state.value if self._client else "connecting"
            self._finished = True
            self._disarm()
            self.done.errback(
                Failure(
                    ChannelError(
                        f"connection lost while {state}: {reason.getErrorMessage()}",
                        route=self.meter.route,
                    )
                )
            )



@implementer(IMeterProtocol, IPushProtocol)
class IecReadoutProtocol:
    """IEC 62056-21 mode C data readout: sign-on, identification, option select, readout."""

    name = PROTOCOL

    def __init__(self, tz: tzinfo = UTC) -> None:
        # The zone meter-local times (0.9.1/0.9.2, value timestamps) are read in, unless the
        # meter's metadata names its own (``tz``).
        self.tz = tz

    def read(
        self, reactor: Any, endpoint: Any, meter: Meter, timeout: float
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
