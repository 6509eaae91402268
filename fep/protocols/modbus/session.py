"""The Twisted side of Modbus: ``ModbusSession`` runs a sans-IO procedure (``recorder.py``)
through a ``ModbusClient`` on the session driver (fep/protocols/session.py: a timer per
request) and keeps, on RTU lines, the inter-frame silence of 3.5 characters at the line's
speed; ``PulseRecorderProtocol`` (``modbus-pulse``, alias ``modbus``) reads pulse
recorders for ``fep read`` and scheduled jobs, and reads or sets their clocks.

RTU silence: before a request goes out the line must have been quiet for the frame gap
since the last byte heard or sent (``rtu.frame_gap``: 3.5 character times, 1.75 ms above
19200 Bd); a pause of that length after bytes that made no whole frame drops them. The speed
comes from the serial transport (``serial:`` routes) or ``modbus_baud`` (an RTU line behind
a TCP serial server); with neither, no gap is kept (the serial server keeps it).

History catch-up: ``read(..., since=T)`` reads the recorder's period records from the end
of the last stored period ``T`` onward, in order (see ``recorder.py``); the collection
engine's read jobs pass ``T``, the end of the last interval stored for ``history_channel``
(fep.interfaces.IHistoryReader). Without it the newest ``pulse_history`` periods are read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from fep.errors import ConfigError, FepError, NotSupported
from fep.interfaces import IClock, ICommands, IHistoryReader, IMeterProtocol, IProfileReader
from fep.model import IntervalBlock, Meter, Reading, Record
from fep.protocols.actions import Fail, Finish, Line, Send, SetTimer, StopTimer
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
)
from fep.protocols.modbus.client import Send as ModbusSend
from fep.protocols.modbus.pdu import ModbusException
from fep.protocols.modbus.recorder import (
    PARAMETER_SET,
    PROTOCOL,
    Procedure,
    RecorderSettings,
    parameter_values,
    read_clock,
    read_recorder,
    recorder_records,
    set_clock,
    settings_for,
    write_parameters,
)
from fep.protocols.session import MeterSession, run_session

log = Logger(namespace="fep.protocols.modbus")

T = TypeVar("T")
# Value group D of maximum demand readings (fep/pulse.py): period, block, rolling demand's.
MAXIMUM = (6, 16, 26)


class ProcedureSteps(Generic[T]):
    """A procedure run through a ModbusClient, in the session driver's shape: each request's
    answer (or the unit's refusal) is sent into the procedure, whose return value is the
    result; the step timer counts silence after each request."""

    def __init__(self, client: ModbusClient, procedure: Procedure[T]) -> None:
        self.client = client
        self.procedure = procedure
        self._over = False

    @property
    def waiting_for(self) -> str | None:
        return self.client.waiting_for

    def start(self) -> list[object]:
        return self._step(None)

    def receive(self, data: bytes) -> list[object]:
        return self._steps(self.client.receive(data))

    def timeout(self) -> list[object]:
        return self._steps(self.client.timeout())

    def silence(self) -> list[object]:
        """The RTU line has been quiet for the frame gap."""
        return self._steps(self.client.silence())

    def _step(self, value: Any = None, error: BaseException | None = None) -> list[object]:
        try:
            if error is not None:
                request = self.procedure.throw(error)
            else:
                request = self.procedure.send(value)
        except StopIteration as stop:
            self._over = True
            return [Finish(stop.value)]
        except FepError as e:
            self._over = True
            return [Fail(e)]
        return self._steps(self.client.send(request))

    def _steps(self, actions: list[Action]) -> list[object]:
        steps: list[object] = []
        for action in actions:
            if self._over:
                break
            if isinstance(action, ModbusSend):
                steps += [Send(action.data), SetTimer()]
            elif isinstance(action, Answered):
                steps += [StopTimer(), *self._step(action.response)]
            elif isinstance(action, Refused):
                steps += [StopTimer(), *self._step(error=action.error)]
            elif isinstance(action, Failed):
                self._over = True
                steps.append(Fail(action.error))
            else:
                steps.append(action)  # Noise, Resent: logged by the session
        return steps


class ModbusSession(MeterSession, Generic[T]):
    """Runs one procedure over one connection; ``done`` fires with its result. On an RTU
    line, keeps the frame gap before each request and drops a partial frame after a
    pause."""

    def __init__(
        self,
        reactor: IReactorTime,
        client: ModbusClient,
        procedure: Procedure[T],
        timeout: float,
        *,
        meter: str | None = None,
        route: str | None = None,
        baudrate: int | None = None,
    ) -> None:
        self.modbus: ProcedureSteps[T] = ProcedureSteps(client, procedure)
        super().__init__(reactor, timeout, meter=meter, route=route, protocol=PROTOCOL,
                         steps=self.modbus)
        self.client = client
        self.procedure = procedure
        self.meter = meter
        self.rtu_baudrate = baudrate
        self.gap = 0.0
        self._gap_timer: IDelayedCall | None = None
        self._send_timer: IDelayedCall | None = None
        self._quiet_from = 0.0

    def _log_fields(self) -> dict[str, Any]:
        return {"meter": self.meter, "route": self.route, "protocol": PROTOCOL}

    def _cancel(self, call: IDelayedCall | None) -> None:
        if call is not None and call.active():
            call.cancel()

    # -- the RTU frame gap ------------------------------------------------------------------------

    def make_steps(self, line: Line) -> ProcedureSteps[T]:
        if self.client.framing is Framing.RTU:
            baud = line.baudrate or self.rtu_baudrate
            if baud:
                self.rtu_baudrate = int(baud)
                self.gap = rtu.frame_gap(self.rtu_baudrate, line.char_bits or 11)
        # Nothing heard yet: the first request goes at once.
        self._quiet_from = self.reactor.seconds() - self.gap
        return self.modbus

    def write(self, data: bytes) -> None:
        if self.finished or self.transport is None:
            return
        wait = self._quiet_from + self.gap - self.reactor.seconds()
        if self.gap and wait > 0:
            # RTU: the line must be quiet for the frame gap before the next frame.
            self._cancel(self._send_timer)
            self._send_timer = self.reactor.callLater(wait, self._write_now, data)
            return
        self._write_now(data)

    def _write_now(self, data: bytes) -> None:
        if self.finished or self.transport is None:
            return
        super().write(data)
        if self.gap:
            bits = float(getattr(self.transport, "char_bits", 11))
            self._quiet_from = (self.reactor.seconds()
                                + len(data) * bits / (self.rtu_baudrate or 1))
        self.set_timer()  # the answer's wait counts from the request on the line

    def dataReceived(self, data: bytes) -> None:
        if self.finished:
            return
        if self.gap:
            self._quiet_from = self.reactor.seconds()
            self._cancel(self._gap_timer)
            self._gap_timer = self.reactor.callLater(self.gap, self._line_quiet)
        super().dataReceived(data)

    def _line_quiet(self) -> None:
        self._gap_timer = None
        self.run(self.modbus.silence())

    # -- notes and the end ----------------------------------------------------------------------

    def note(self, action: object) -> None:
        if isinstance(action, Noise):
            log.info("{meter}: line noise skipped: {why}", why=action.why,
                     **self._log_fields())
        elif isinstance(action, Resent):
            log.info("{meter}: Modbus request sent again ({why}, attempt {n})",
                     why=action.why, n=action.attempt, **self._log_fields())

    def ended(self, lost: bool) -> None:
        self._cancel(self._gap_timer)
        self._cancel(self._send_timer)
        self.procedure.close()
        if lost:
            return
        c = self.client
        log.info(
            "{meter}: Modbus session done: {requests} requests, {answers} answers, {noise} "
            "damaged frames, {garbage} garbage bytes, {stale} stale answers, {resent} resent",
            requests=c.requests, answers=c.answers, noise=c.noise, garbage=c.line_garbage,
            stale=c.stale, resent=c.resent, **self._log_fields(),
        )


def run_procedure(
    reactor: IReactorTime,
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


@implementer(IMeterProtocol, IHistoryReader, IProfileReader, IClock, ICommands)
class PulseRecorderProtocol:
    """Pulse recorders over Modbus RTU or TCP: counters, voltages and status as readings,
    the history buffer as energy and demand intervals, the event log as events; the clock
    read and set; ``parameter-set NAME=VALUE`` writes the device map's parameters (counter
    preset and reset)."""

    name = PROTOCOL
    commands = (PARAMETER_SET,)

    def _settings(self, meter: Meter, since: datetime | None = None) -> RecorderSettings:
        return settings_for(meter, since)

    def history_channel(self, meter: Meter) -> str | None:
        """The energy series of the first configured input (``1-N:C.29.0``): the collection
        engine catches the recorder up from its last stored period. None without a history
        buffer in the map or an input with a constant."""
        settings = self._settings(meter)
        if settings.device.history is None or not settings.channels:
            return None
        first = min(settings.channels, key=int)
        return str(settings.channels[first].energy_obis)

    def read(
        self,
        reactor: IReactorTime,
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

    def read_profile(self, reactor: IReactorTime, endpoint: Any, meter: Meter,
                     since: datetime, until: datetime,
                     timeout: float) -> Deferred[list[Record]]:
        """Load-profile jobs (gap re-collection, ``fep recollect``): the history from
        ``since`` to the newest record, as energy and demand intervals and maximum demand
        (the recorder reads onward from ``since``, so ``until`` only bounds what is
        wanted)."""
        d = self.read(reactor, endpoint, meter, timeout, since=since)

        def profile(records: list[Record]) -> list[Record]:
            return [r for r in records if isinstance(r, IntervalBlock)
                    or (isinstance(r, Reading) and r.obis.a == 1 and r.obis.d in MAXIMUM)]

        return d.addCallback(profile)

    def read_clock(self, reactor: IReactorTime, endpoint: Any, meter: Meter,
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

    def set_clock(self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float,
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


    @staticmethod
    def check_command(meter: Meter, command: str, params: Mapping[str, Any]) -> None:
        """When the command is requested: a ``parameter-set`` of a parameter the meter's
        device map lacks, or a value out of its range, is a ConfigError naming meter,
        command and parameter."""
        if command == PARAMETER_SET:
            parameter_values(meter.id, settings_for(meter).device, params)

    def run_command(
        self,
        reactor: IReactorTime,
        endpoint: Any,
        meter: Meter,
        command: str,
        params: Mapping[str, Any],
        timeout: float,
        progress: Callable[[Mapping[str, Any]], None],
    ) -> Deferred[Mapping[str, Any]]:
        """``parameter-set NAME=VALUE ...``: every parameter checked against the device map
        before connecting, then written in one session; fires with what was written."""
        if command != PARAMETER_SET:
            return fail(NotSupported(f"meter {meter.id}: {command}: protocol "
                                     f"{PROTOCOL} runs only {PARAMETER_SET}",
                                     meter=meter.id, protocol=PROTOCOL))
        try:
            settings = self._settings(meter)
            pairs = parameter_values(meter.id, settings.device, params)
        except ConfigError as e:
            return fail(e)
        done: Deferred[dict[str, int]] = run_procedure(
            reactor, endpoint, meter, settings, write_parameters(settings.device, pairs),
            timeout)

        def written(values: dict[str, int]) -> Mapping[str, Any]:
            log.info("{meter}: parameters set: {values}", values=values,
                     **{"meter": meter.id, "route": meter.route, "protocol": PROTOCOL})
            return values

        return done.addCallback(written)


__all__ = ["ModbusException", "ModbusSession", "PulseRecorderProtocol", "run_procedure"]
