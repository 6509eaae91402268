"""The modem pool: N modems on N serial ports, one call per line, a lease per job, the retry
policy applied per site, alarms for line faults, and call statistics per line and per site.

Jobs queue for lines in arrival order and a site waiting to be called again (BUSY, back-off)
holds no line, so with all of a cycle's jobs submitted at once the lines stay busy and the
cycle takes about the total call time divided by the lines in service.

Two ways in:

- ``call(number, session)``: lease a line, dial (retrying per policy), run
  ``session(endpoint)`` on the connected call, hang up, release; a carrier lost
  mid-session is retried like NO CARRIER. This is what the collection engine uses.
- ``endpoint(number)``: an IStreamClientEndpoint for ``dialup:`` routes; ``connect`` leases,
  dials (retrying per policy) and connects the protocol; the transport's
  ``loseConnection`` hangs up and frees the line. The connect time-out of the caller covers
  the wait for a line, the dial and the retries.

A line whose dial gets NO DIALTONE (or that cannot be hung up, or whose port closes) leaves
the pool with a ``ModemAlarm``; the site is called again at once on another line.

Calls in (``on_incoming`` set): the lines ask for caller ids (``AT+CLIP=1``); a free line
that rings is answered (``ATA``) at its ``+CLIP`` (or its second RING when the line gives no
caller id), held busy (a dial-out job waiting for a line waits for the call to end) and
handed to ``on_incoming`` as an ``IncomingCall``; the call lasts until the caller hangs up,
or ``call_time`` seconds. A line that rings while busy is not answered.

Reads over a call in: while a call in is up, the endpoint of a ``dialup:`` route whose
number is the caller's (digits compared, leading zeros and ``+`` ignored; or a number
``IncomingCall.reachable_as`` named) connects the read to that call instead of dialling
(``DialupCall.open_pipe``): the caller's bytes go to the read until it is done, then back to
the protocol that took the call; the call goes on.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.channels.endpoints import client_endpoint
from fep.channels.modem.at import ModemProfile, ResultCode, Unsolicited, modem_profile
from fep.channels.modem.calls import ModemCallLog
from fep.channels.modem.dialup import (
    DialFailed,
    DialSettings,
    DialupCall,
    RetryPolicy,
    _chained,
    normalise_number,
)
from fep.channels.modem.line import IModemControl, ModemLine
from fep.channels.modem.stats import CallOutcome, CallStats, ModemCall
from fep.errors import ChannelError, FepError
from fep.interfaces import IRecordSink
from fep.protocols.session import connect_within
from fep.reactors import IConnectingReactor

log = Logger()

T = TypeVar("T")


def _number_key(number: str) -> str:
    """A telephone number as calls in are matched to routes: its digits, leading zeros
    dropped (``+49 30 1234`` and ``004930 1234`` are one)."""
    return re.sub(r"\D", "", number).lstrip("0")


@attrs.frozen
class LineSpec:
    """One modem of the pool: its name, the serial route of its port
    (``serial:/dev/ttyS0:9600:8N1``), its model (init strings) and optional own init."""

    name: str
    route: str
    model: str = "generic"
    init: tuple[str, ...] | None = None

    def profile(self) -> ModemProfile:
        return modem_profile(self.model, self.init)


@attrs.frozen
class ModemAlarm:
    """A line left the pool: which, why, when, and the number being called if any."""

    line: str
    reason: str
    time: datetime
    number: str | None = None


@attrs.frozen
class IncomingCall:
    """A call in, answered: the caller id (None when the line gave none), the modem line,
    the call's route (``dialup:<caller>``), the endpoint that connects a protocol to it,
    ``ended`` (fires with the call record when the call is over) and ``hang_up``."""

    caller: str | None
    line: str
    route: str
    endpoint: IStreamClientEndpoint
    ended: Deferred[ModemCall]
    hang_up: Callable[[], Deferred[ModemCall]]
    # Reads of ``dialup:NUMBER`` routes go over this call while it is up (the caller id's
    # number is one already); for a meter whose route number differs from its caller id.
    reachable_as: Callable[[str], None] = lambda number: None


class PoolLine:
    """A line's place in the pool."""

    def __init__(self, spec: LineSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.modem: ModemLine | None = None
        self.in_service = False
        self.busy = False
        self.fault: str | None = None
        self.stats = CallStats(spec.name)
        # Calls in: rings counted in the current burst, its caller id, an answer under way.
        self.rings = 0
        self.last_ring = float("-inf")
        self.caller: str | None = None
        self.answering = False


@attrs.define
class _Tries:
    busy: int = 0
    other: int = 0
    attempts: int = 0
    last_line: str | None = None
    last_outcome: CallOutcome = CallOutcome.NO_CARRIER
    last_result: str = ""


class ModemPool(service.Service):
    """The pool of dial-up modem lines (see the module docstring)."""

    name = "modems"

    def __init__(
        self,
        reactor: IConnectingReactor,
        lines: Sequence[LineSpec],
        *,
        dial: DialSettings | None = None,
        policy: RetryPolicy | None = None,
        store: Any = None,
        control_for: Callable[[str], IModemControl | None] | None = None,
        on_alarm: Callable[[ModemAlarm], None] | None = None,
        open_timeout: float = 10.0,
        keep_calls: int = 1000,
        on_incoming: Callable[[IncomingCall], Deferred[Any] | None] | None = None,
        call_time: float = 300.0,
    ) -> None:
        names = [spec.name for spec in lines]
        if len(set(names)) != len(names):
            raise ChannelError(f"modem line names repeat: {names}")
        self.reactor = reactor
        self.lines = [PoolLine(spec) for spec in lines]
        self.dial = dial if dial is not None else DialSettings()
        self.policy = policy if policy is not None else RetryPolicy()
        self.store = store
        # The call records go to the store's modem_calls table (fep.channels.modem.calls).
        self.call_log = ModemCallLog(store) if store is not None else None
        self.control_for = control_for
        self.on_alarm = on_alarm
        self.open_timeout = open_timeout
        self.keep_calls = keep_calls
        self.on_incoming = on_incoming
        # Where pushes a read over a call in tells from its answers are stored.
        self.push_sink: IRecordSink | None = None
        self.call_time = call_time
        self.incoming_calls = 0
        self.alarms: list[ModemAlarm] = []
        self.calls: deque[ModemCall] = deque(maxlen=keep_calls)
        self.sites: dict[str, CallStats] = {}
        self.opened: Deferred[None] | None = None
        self.active = 0
        self.most_active = 0
        self._waiters: deque[Deferred[PoolLine]] = deque()
        self._unsaved: list[ModemCall] = []
        # Calls started and not yet recorded (hung up): a stop waits for them.
        self._ending: dict[int, Deferred[None]] = {}
        # Calls in that are up, by their number's digits: reads of their routes go over them.
        self._inbound: dict[str, DialupCall] = {}
        self._saving: Deferred[None] = succeed(None)
        self._opening = False

    # -- service

    def startService(self) -> None:
        super().startService()
        self.opened = self.open()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._fail_waiters(ChannelError("modem pool stopped"))
        # Calls under way hang up first (a line left off-hook is a fault at the exchange,
        # and their records belong in the statistics); the ports close after that, or after
        # the longest a hang-up may take.
        ending = [d for d in self._ending.values() if not d.called]
        if not ending:
            return self._close_lines()
        waited: Deferred[Any] = DeferredList(ending)
        bound = self.reactor.callLater(
            self.dial.guard + 3 * self.dial.hangup_timeout, waited.cancel
        )

        def closed(_: object) -> Deferred[None]:
            if bound.active():
                bound.cancel()
            return self._close_lines()

        waited.addBoth(closed)
        return waited

    def _close_lines(self) -> Deferred[None]:
        closing = []
        for line in self.lines:
            line.in_service = False
            modem = line.modem
            if modem is not None and modem.transport is not None and modem.is_open:
                closing.append(modem.closed)
                modem.transport.loseConnection()
        d: Deferred[Any] = DeferredList(closing)
        d.addCallback(lambda _: self.flush())
        return d

    def open(self) -> Deferred[None]:
        """Open every line's port and initialise its modem; fires when all were tried
        (lines that fail are out of service, with an alarm)."""
        self._opening = True

        def done(_: object) -> None:
            self._opening = False
            if not self.in_service():
                self._fail_waiters(ChannelError("no modem line could be opened"))

        d: Deferred[Any] = DeferredList(
            [Deferred.fromCoroutine(self._open_line(line)) for line in self.lines]
        )
        return d.addCallback(done)

    async def _open_line(self, line: PoolLine) -> None:
        spec = line.spec
        control = self.control_for(spec.name) if self.control_for is not None else None
        modem = ModemLine(self.reactor, spec.name, spec.profile(), control=control)
        modem.route = spec.route
        try:
            endpoint = client_endpoint(self.reactor, spec.route)
            await connect_within(self.reactor, endpoint, modem, spec.route, self.open_timeout)
            await modem.initialise()
            if self.on_incoming is not None:
                clip = await modem.command("AT+CLIP=1", expect_ok=False)
                if not clip.ok:
                    log.info("modem {line}: no caller ids ({result})", line=spec.name,
                             result=clip.result.describe(), route=spec.route)
                modem.on_unsolicited = lambda urc: self._unsolicited(line, urc)
        except FepError as e:
            if modem.transport is not None:
                modem.transport.loseConnection()
            self._take_out(line, f"cannot open and initialise: {e}")
            return
        line.modem = modem
        line.in_service = True
        line.fault = None
        modem.closed.addCallback(lambda _: self._port_closed(line))
        log.info("modem {line} on {port}: ready", line=spec.name, port=spec.route)
        self._release(line)

    # -- calls in

    def _unsolicited(self, line: PoolLine, urc: Unsolicited) -> None:
        name = urc.name.upper()
        if name not in ("RING", "+CRING", "+CLIP") or self.on_incoming is None:
            return
        now = self.reactor.seconds()
        if now - line.last_ring > 15.0:  # a new burst of rings
            line.rings, line.caller = 0, None
        line.last_ring = now
        if name == "+CLIP":
            params = urc.params
            line.caller = params[0] if params and params[0] else None
            ready = True
        else:
            line.rings += 1
            ready = line.rings >= 2
        if not ready or line.answering or not line.in_service or not self.running:
            return
        if line.busy:
            if line.rings <= 1:
                log.info("modem {line}: a call from {caller} while the line is busy; not "
                         "answered", line=line.name, caller=line.caller or "unknown",
                         route=line.spec.route)
            return
        line.busy = True
        line.answering = True
        self._active(+1)
        caller, line.caller, line.rings = line.caller, None, 0
        d = Deferred.fromCoroutine(self._answer(line, caller))
        d.addErrback(lambda f: log.failure("modem {line}: call in failed", f, line=line.name))

    async def _answer(self, line: PoolLine, caller: str | None) -> None:
        assert line.modem is not None and self.on_incoming is not None
        call = DialupCall(self.reactor, line.modem, caller or "", self.dial, incoming=True)
        call.push_sink = self.push_sink
        call.route = f"dialup:{call.number}"
        ending: Deferred[None] = Deferred()
        self._ending[id(call)] = ending
        call.finished.addCallback(self._ended, line, call)
        try:
            result = await call.answer()
        except ChannelError as e:
            line.answering = False
            log.warn("modem {line}: answering {caller} failed: {error}", line=line.name,
                     caller=call.number, error=e, route=line.spec.route)
            return
        finally:
            line.answering = False
        if result.code is not ResultCode.CONNECT:
            log.info("modem {line}: the call from {caller} went before it was answered ({result})",
                     line=line.name, caller=call.number, result=result.line,
                     route=line.spec.route)
            return
        self.incoming_calls += 1
        keys: list[str] = []

        def reachable_as(number: str) -> None:
            key = _number_key(number)
            if key and call.state == "connected":
                self._inbound[key] = call
                keys.append(key)

        if call.number != "unknown":
            reachable_as(call.number)
        call.finished.addBoth(self._forget_inbound, keys, call)
        incoming = IncomingCall(
            caller=None if call.number == "unknown" else call.number, line=line.name,
            route=call.route, endpoint=call.endpoint(), ended=_chained(call.finished),
            hang_up=call.hang_up, reachable_as=reachable_as,
        )
        limit = self.reactor.callLater(self.call_time, call.hang_up)
        try:
            handled = self.on_incoming(incoming)
            if handled is not None:
                await handled
        except Exception as e:
            log.warn("modem {line}: the call from {caller} was not taken: {error}",
                     line=line.name, caller=call.number, error=e, route=call.route)
            call.hang_up()
        await _chained(call.finished)
        if limit.active():
            limit.cancel()

    def _forget_inbound(self, result: Any, keys: list[str], call: DialupCall) -> Any:
        for key in keys:
            if self._inbound.get(key) is call:
                del self._inbound[key]
        return result

    def inbound_call(self, number: str) -> DialupCall | None:
        """The call in that is up from ``number`` (a ``dialup:`` route's number), if any."""
        call = self._inbound.get(_number_key(number))
        return call if call is not None and call.state == "connected" else None

    def _port_closed(self, line: PoolLine) -> None:
        if line.in_service and self.running:
            self._take_out(line, "serial port closed")

    # -- lines

    def in_service(self) -> list[str]:
        return [line.name for line in self.lines if line.in_service]

    def lease(self) -> Deferred[PoolLine]:
        """A free line in service, now or when one is released (first come, first
        served). Cancelling the Deferred leaves the queue."""
        for line in self.lines:
            if line.in_service and not line.busy:
                line.busy = True
                self._active(+1)
                return succeed(line)
        if not self.in_service() and not self._opening:
            return fail(ChannelError("no modem line in service"))

        def cancel(d: Deferred[PoolLine]) -> None:
            if d in self._waiters:
                self._waiters.remove(d)

        waiter: Deferred[PoolLine] = Deferred(cancel)
        self._waiters.append(waiter)
        return waiter

    def _release(self, line: PoolLine) -> None:
        if line.busy:
            line.busy = False
            self._active(-1)
        if not line.in_service:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.called:
                line.busy = True
                self._active(+1)
                waiter.callback(line)
                return

    def _active(self, step: int) -> None:
        self.active += step
        self.most_active = max(self.most_active, self.active)

    def _take_out(self, line: PoolLine, reason: str, number: str | None = None) -> None:
        line.in_service = False
        line.fault = reason
        alarm = ModemAlarm(line.name, reason, datetime.now(UTC), number)
        self.alarms.append(alarm)
        log.error("modem {line} out of service: {reason}", line=line.name, reason=reason,
                  route=line.spec.route, number=number, alarm=True)
        if self.on_alarm is not None:
            self.on_alarm(alarm)
        if not self.in_service() and not self._opening:
            self._fail_waiters(ChannelError(f"no modem line in service (last: {reason})"))

    def put_back(self, name: str) -> Deferred[None]:
        """Return a line taken out of service (after the fault is cleared): reopen it."""
        for line in self.lines:
            if line.name == name and not line.in_service:
                modem = line.modem
                if modem is not None and modem.is_open and modem.transport is not None:
                    modem.transport.loseConnection()
                line.modem = None
                return Deferred.fromCoroutine(self._open_line(line))
        return fail(ChannelError(f"no modem line {name!r} out of service"))

    def _fail_waiters(self, error: ChannelError) -> None:
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.called:
                waiter.errback(Failure(error))

    # -- calls

    def call(
        self,
        number: str,
        session: Callable[[IStreamClientEndpoint], Deferred[T]],
        *,
        site: str | None = None,
        route: str | None = None,
    ) -> Deferred[T]:
        """Call ``number`` and run ``session`` over the connected call; retries per policy
        (a carrier lost mid-session included); fires with what the session fires with."""

        async def run() -> T:
            tries = _Tries()
            while True:
                call = await self._connect(number, site, route, tries)
                try:
                    value = await session(call.endpoint())
                except Exception as e:
                    if call.carrier_lost is None:
                        call.session_failed = True
                    await call.hang_up()
                    if call.carrier_lost is None:
                        raise
                    tries.other += 1
                    tries.last_outcome = CallOutcome.CARRIER_LOST
                    delay = self.policy.delay(CallOutcome.CARRIER_LOST, tries.busy, tries.other)
                    if delay is None:
                        raise self._gave_up(call.number, call.route, tries) from e
                    await deferLater(self.reactor, delay, lambda: None)
                    continue
                await call.hang_up()
                return value

        return Deferred.fromCoroutine(run())

    def endpoint(self, number: str) -> IStreamClientEndpoint:
        """The endpoint of a ``dialup:NUMBER`` route."""
        return DialupEndpoint(self, number)

    async def _connect(
        self, number: str, site: str | None, route: str | None, tries: _Tries
    ) -> DialupCall:
        number = normalise_number(number)
        route = route or f"dialup:{number}"
        while True:
            line = await self.lease()
            assert line.modem is not None
            call = DialupCall(self.reactor, line.modem, number, self.dial, site=site,
                              route=route)
            ending: Deferred[None] = Deferred()
            self._ending[id(call)] = ending
            call.finished.addCallback(self._ended, line, call)
            tries.attempts += 1
            tries.last_line = line.name
            try:
                result = await call.dial()
            except ChannelError as e:
                outcome = call.outcome or CallOutcome.ERROR
                tries.last_result = str(e)
            else:
                if result.code is ResultCode.CONNECT:
                    return call
                outcome = call.outcome or CallOutcome.ERROR
                tries.last_result = result.line
            tries.last_outcome = outcome
            if outcome is CallOutcome.BUSY:
                tries.busy += 1
            elif outcome is not CallOutcome.NO_DIALTONE:
                tries.other += 1
            delay = self.policy.delay(outcome, tries.busy, tries.other)
            if delay is None:
                raise self._gave_up(number, route, tries)
            log.info("{number}: {outcome} on modem {line}, again in {delay:g} s",
                     number=number, outcome=outcome.value, line=line.name, delay=delay,
                     route=route)
            if delay:
                await deferLater(self.reactor, delay, lambda: None)

    def _gave_up(self, number: str, route: str, tries: _Tries) -> DialFailed:
        return DialFailed(
            f"{number}: gave up after {tries.attempts} attempts, last "
            f"{tries.last_outcome.value} ({tries.last_result or 'no result'}) on modem "
            f"{tries.last_line}",
            route=route, number=number, line=tries.last_line, outcome=tries.last_outcome,
            attempts=tries.attempts,
        )

    def _ended(self, record: ModemCall, line: PoolLine, call: DialupCall) -> ModemCall:
        if call.session_failed and record.outcome is CallOutcome.COMPLETED:
            record = attrs.evolve(record, outcome=CallOutcome.SESSION_FAILED)
        self.calls.append(record)
        line.stats.add(record)
        self.sites.setdefault(record.site, CallStats(record.site)).add(record)
        if self.store is not None:
            self._unsaved.append(record)
            self.flush()
        if not self.running and self.opened is not None:
            pass  # shutting down: a call cut short by closing ports is no line fault
        elif record.outcome is CallOutcome.NO_DIALTONE:
            self._take_out(line, f"NO DIALTONE (line fault) calling {record.number}",
                           record.number)
        elif call.line_fault is not None:
            self._take_out(line, call.line_fault, record.number)
        self._release(line)
        ending = self._ending.pop(id(call), None)
        if ending is not None:
            ending.callback(None)
        return record

    # -- statistics

    def line_stats(self) -> Mapping[str, CallStats]:
        return {line.name: line.stats for line in self.lines}

    def flush(self) -> Deferred[None]:
        """Save the call records not yet in the store, one batch at a time; fires when
        they are (store errors are logged and the records kept for the next flush)."""
        if self.store is None:
            return succeed(None)
        done: Deferred[None] = Deferred()

        def save(_: object) -> Deferred[None] | None:
            batch, self._unsaved = self._unsaved, []
            if not batch:
                return None

            def failed(failure: Failure) -> None:
                self._unsaved[:0] = batch
                log.warn("cannot store {count} modem call records: {error}",
                         count=len(batch), error=failure.getErrorMessage())

            assert self.call_log is not None
            saving: Deferred[Any] = self.call_log.add_modem_calls(batch)
            return saving.addCallbacks(lambda _: None, failed)

        def report(_: object) -> None:
            done.callback(None)

        self._saving.addCallback(save).addCallback(report)
        return done


@implementer(IStreamClientEndpoint)
class DialupEndpoint:
    """``dialup:NUMBER``: connect = lease a line, dial (with retries), connected; the
    transport's loseConnection hangs up and releases the line."""

    def __init__(self, pool: ModemPool, number: str) -> None:
        self.pool = pool
        self.number = normalise_number(number)
        self.route = f"dialup:{self.number}"
        # The longest a connect may take: every attempt the retry policy allows, each
        # dialled to its result, with the delays between them.
        dial, policy = pool.dial, pool.policy
        attempts = 1 + policy.busy_retries + policy.retries
        self.connect_timeout: float | None = (
            attempts * (dial.dial_timeout + dial.guard)
            + policy.busy_retries * policy.busy_delay
            + policy.retries * policy.backoff_max
        )

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        inbound = self.pool.inbound_call(self.number)
        if inbound is not None:
            # The meter is on the line now (it called in): read it over its call.
            return inbound.open_pipe(protocolFactory)

        async def run() -> IProtocol:
            call = await self.pool._connect(self.number, None, self.route, _Tries())
            try:
                return await call.endpoint().connect(protocolFactory)
            except FepError:
                call.hang_up()
                raise

        return Deferred.fromCoroutine(run())


def pool_from_config(
    reactor: IConnectingReactor,
    section: Any,
    *,
    store: Any = None,
    on_alarm: Callable[[ModemAlarm], None] | None = None,
) -> ModemPool | None:
    """The pool a ``[modems]`` section (fep.channels.modem.settings.ModemsSection) describes,
    None when it names no lines. Errors are ConfigErrors naming the section and key."""
    from fep.errors import ConfigError

    lines = section.line_list()
    if not lines:
        return None
    try:
        specs = [LineSpec(name, route, model, section.init_commands)
                 for name, route, model in lines]
        for spec in specs:
            spec.profile()
        dial = DialSettings(
            prefix=section.prefix,
            tone=section.dialing == "tone",
            dial_timeout=section.dial_timeout,
            guard=section.guard,
            hangup=section.hangup,
            hangup_timeout=section.hangup_timeout,
        )
        policy = RetryPolicy(
            busy_delay=section.busy_delay,
            busy_retries=section.busy_retries,
            backoff=section.backoff,
            backoff_factor=section.backoff_factor,
            backoff_max=section.backoff_max,
            retries=section.retries,
        )
    except ConfigError as e:
        raise ConfigError(e.message, file=e.file, section="modems", key=e.key) from None
    return ModemPool(reactor, specs, dial=dial, policy=policy, store=store,
                     on_alarm=on_alarm, open_timeout=section.open_timeout,
                     call_time=section.call_time)
