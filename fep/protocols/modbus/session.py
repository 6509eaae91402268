"""The Twisted side of Modbus: ``ModbusSession`` drives a sans-IO procedure (``recorder.py``)
through a ``ModbusClient`` over one connection, with a timer per request and, on RTU lines,
the inter-frame silence of 3.5 characters at the line's speed; ``PulseRecorderProtocol``
(``modbus-pulse``, alias ``modbus``) reads pulse recorders for ``fep read`` and scheduled
jobs, and reads or sets their clocks.

RTU silence: before a request goes out the line must have been quiet for the frame gap
since the last byte heard or sent (``rtu.frame_gap``: 3.5 character times, 1.75 ms above
19200 Bd); a pause of that length after bytes that made no whole frame drops them. The speed
comes from the serial transport (``serial:`` routes) or ``modbus_baud`` (an RTU line behind
a TCP serial server); with neither, no gap is kept (the serial server keeps it).

History catch-up: ``read(..., since=T)`` reads the recorder's period records from the end
of the last stored period ``T`` onward, in order (see ``recorder.py``); a job keeps ``T``
from the store. Without it the newest ``pulse_history`` periods are read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.channels.endpoints import run_session
from fep.errors import (
    ChannelError,
    ConfigError,
    FepError,
    NotSupported,
    ProtocolError,
)
from fep.interfaces import IClock, IMeterProtocol
from fep.model import Meter, Record
from fep.protocols.modbus import rtu
from fep.protocols.modbus.client import (
    Action,
    Answered,
    Failed,
    Framing,
    ModbusClient,
    Noise,
    Refused,
    Resent,
    Send,
)
from fep.protocols.modbus.pdu import ModbusException, Request
from fep.protocols.modbus.recorder import (
    PROTOCOL,
    Procedure,
    RecorderSettings,
    read_clock,
    read_recorder,
    recorder_records,
    set_clock,
    settings_for,
)
from fep.protocols.session import abort, within

log = Logger(namespace="fep.protocols.modbus")

T = TypeVar("T")


class ModbusSession(Protocol, Generic[T]):
    """Runs one procedure over one connection; ``done`` fires with its result."""

    def __init__(
        self,
        reactor: Any,
        client: ModbusClient,
        procedure: Procedure[T],
        timeout: float,
        *,
        meter: str | None = None,
        route: str | None = None,
        baudrate: int | None = None,
    ) -> None:
        self.reactor = reactor
        self.client = client
        self.procedure = procedure
        self.timeout = timeout
        self.meter = meter
        self.route = route
        self.baudrate = baudrate
        self.gap = 0.0
        self.done: Deferred[T] = Deferred()
        self._timer: IDelayedCall | None = None
        self._gap_timer: IDelayedCall | None = None
        self._send_timer: IDelayedCall | None = None
        self._quiet_from = 0.0
        self._finished = False

    def _log_fields(self) -> dict[str, Any]:
        return {"meter": self.meter, "route": self.route, "protocol": PROTOCOL}

    # -- timers -------------------------------------------------------------------------------

    def _cancel(self, call: IDelayedCall | None) -> None:
        if call is not None and call.active():
            call.cancel()

    def _arm(self) -> None:
        self._cancel(self._timer)
        self._timer = self.reactor.callLater(self.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self._run(self.client.timeout())

    def _line_quiet(self) -> None:
        self._gap_timer = None
        self._run(self.client.silence())

    # -- the procedure ------------------------------------------------------------------------

    def _step(self, value: Any = None, error: BaseException | None = None) -> None:
        try:
            if error is not None:
                request = self.procedure.throw(error)
            else:
                request = self.procedure.send(value)
        except StopIteration as stop:
            self._finish(stop.value)
            return
        except FepError as e:
            self._fail(e)
            return
        self._send(request)

    def _send(self, request: Request) -> None:
        self._run(self.client.send(request))

    def _write(self, data: bytes) -> None:
        if self._finished or self.transport is None:
            return
        wait = self._quiet_from + self.gap - self.reactor.seconds()
        if self.gap and wait > 0:
            # RTU: the line must be quiet for the frame gap before the next frame.
            self._cancel(self._send_timer)
            self._send_timer = self.reactor.callLater(wait, self._write, data)
            return
        self.transport.write(data)
        if self.gap:
            bits = float(getattr(self.transport, "char_bits", 11))
            self._quiet_from = self.reactor.seconds() + len(data) * bits / (self.baudrate or 1)
        self._arm()

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if self._finished:
                return
            if isinstance(action, Send):
                self._write(action.data)
            elif isinstance(action, Answered):
                self._cancel(self._timer)
                self._step(action.response)
            elif isinstance(action, Refused):
                self._cancel(self._timer)
                self._step(error=action.error)
            elif isinstance(action, Noise):
                log.info("{meter}: line noise skipped: {why}", why=action.why,
                         **self._log_fields())
            elif isinstance(action, Resent):
                log.info("{meter}: Modbus request sent again ({why}, attempt {n})",
                         why=action.why, n=action.attempt, **self._log_fields())
            elif isinstance(action, Failed):
                self._fail(action.error)

    # -- the end ------------------------------------------------------------------------------

    def _stop_timers(self) -> None:
        for call in (self._timer, self._gap_timer, self._send_timer):
            self._cancel(call)

    def _summary(self) -> None:
        c = self.client
        log.info(
            "{meter}: Modbus session done: {requests} requests, {answers} answers, {noise} "
            "damaged frames, {garbage} garbage bytes, {stale} stale answers, {resent} resent",
            requests=c.requests, answers=c.answers, noise=c.noise, garbage=c.line_garbage,
            stale=c.stale, resent=c.resent, **self._log_fields(),
        )

    def _finish(self, result: T) -> None:
        self._finished = True
        self._stop_timers()
        self._summary()
        if self.transport is not None:
            self.transport.loseConnection()
        self.done.callback(result)

    def _fail(self, error: FepError) -> None:
        if self._finished:
            return
        error = within(error, self.timeout)
        if isinstance(error, ProtocolError):
            error.meter = error.meter or self.meter
            error.route = error.route or self.route
        self._finished = True
        self._stop_timers()
        self._summary()
        self.procedure.close()
        abort(self.transport)
        self.done.errback(Failure(error))

    # -- Protocol -----------------------------------------------------------------------------

    def connectionMade(self) -> None:
        if self.client.framing is Framing.RTU:
            baud = getattr(self.transport, "baudrate", None) or self.baudrate
            if baud:
                self.baudrate = int(baud)
                bits = float(getattr(self.transport, "char_bits", 11))
                self.gap = rtu.frame_gap(self.baudrate, bits)
        # Nothing heard yet: the first request goes at once.
        self._quiet_from = self.reactor.seconds() - self.gap
        self._step(None)

    def dataReceived(self, data: bytes) -> None:
        if self._finished:
            return
        if self.gap:
            self._quiet_from = self.reactor.seconds()
            self._cancel(self._gap_timer)
            self._gap_timer = self.reactor.callLater(self.gap, self._line_quiet)
        self._run(self.client.receive(data))

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if not self._finished:
            self._finished = True
            self._stop_timers()
            waiting = self.client.waiting_for or "the session"
            self.done.errback(Failure(ChannelError(
                f"connection lost waiting for {waiting}: {reason.getErrorMessage()}",
                route=self.route)))


def run_procedure(
    reactor: Any,
    endpoint: Any,
    meter: Meter,
    settings: RecorderSettings,
    procedure: Procedure[T],
    timeout: float,
) -> Deferred[T]:
    """Connect through ``endpoint`` and run one procedure against the recorder."""
    client = ModbusClient(settings.framing, settings.unit, retries=settings.retries,
                          meter=meter.id, route=meter.route)
    session: ModbusSession[T] = ModbusSession(
        reactor, client, procedure, timeout, meter=meter.id, route=meter.route,
        baudrate=settings.baudrate)
    result: Deferred[T] = run_session(reactor, endpoint, session, meter.route, timeout)
    return result


@implementer(IMeterProtocol, IClock)
class PulseRecorderProtocol:
    """Pulse recorders over Modbus RTU or TCP: counters, voltages and status as readings,
    the history buffer as energy and demand intervals, the event log as events; the clock
    read and set."""

    name = PROTOCOL

    def _settings(self, meter: Meter, since: datetime | None = None) -> RecorderSettings:
        return settings_for(meter, since)

    def read(
        self,
        reactor: Any,
        endpoint: Any,
        meter: Meter,
        timeout: float,
        since: datetime | None = None,
    ) -> Deferred[list[Record]]:
        """One read; ``since`` (the end of the last stored period) makes it a history
        catch-up from there."""
        try:
            settings = self._settings(meter, since)
        except ConfigError as e:
            return fail(e)
        d = run_procedure(reactor, endpoint, meter, settings,
                          read_recorder(settings.device, settings.read), timeout)

        def records(data: Any) -> list[Record]:
            received = datetime.fromtimestamp(reactor.seconds(), UTC)
            return recorder_records(meter.id, settings, data, received=received)

        return d.addCallback(records)

    def read_clock(self, reactor: Any, endpoint: Any, meter: Meter,
                   timeout: float) -> Deferred[datetime]:
        """The recorder's clock as UTC; NotSupported when its map has no clock."""
        try:
            settings = self._settings(meter)
            procedure = read_clock(settings.device)
        except ConfigError as e:
            return fail(e)
        d: Deferred[datetime | None] = run_procedure(reactor, endpoint, meter, settings,
                                                     procedure, timeout)

        def clock(value: datetime | None) -> datetime:
            if value is None:
                raise NotSupported(f"meter {meter.id}: its device map has no clock to read",
                                   meter=meter.id, protocol=meter.protocol)
            return value

        return d.addCallback(clock)

    def set_clock(self, reactor: Any, endpoint: Any, meter: Meter, timeout: float,
                  when: datetime | None = None) -> Deferred[datetime]:
        """Set the recorder's clock to ``when`` (default: the reactor's now)."""
        try:
            settings = self._settings(meter)
            at = when or datetime.fromtimestamp(reactor.seconds(), UTC)
            procedure = set_clock(settings.device, at)
            # Validate before connecting: the generator checks only once started.
            if settings.device.clock is None or not settings.device.clock_writable:
                next(procedure)
        except ConfigError as e:
            return fail(e)
        return run_procedure(reactor, endpoint, meter, settings, procedure, timeout)


__all__ = ["ModbusException", "ModbusSession", "PulseRecorderProtocol", "run_procedure"]
