"""PSTN dial-up over an AT modem line: ``ATD<number>``, the connected line handed to a meter
session as an ordinary connection, a clean hang-up, and the retry policy by result code.

A ``DialupCall`` is one attempt on one ``ModemLine``: ``dial()`` fires with the ATD's final
result; after CONNECT, ``endpoint()`` connects a meter protocol to the call (an
IStreamClientEndpoint, so any IMeterProtocol.read works over it) and the transport's
``loseConnection`` hangs up: guard time, ``+++``, ``ATH`` (``hangup = dtr`` drops DTR
instead; DTR is also the fallback when the escape gets no answer). A carrier lost
mid-session reaches the meter protocol as ``connectionLost`` with a ChannelError naming the
number and the line. ``finished`` fires with the ``ModemCall`` record once the line is back
in command mode and free for the next call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.channels.modem.at import FinalResult, ModemError, ModemTimeout, Response, ResultCode
from fep.channels.modem.line import ModemLine
from fep.channels.modem.stats import CallOutcome, ModemCall
from fep.errors import ChannelError, ConfigError, RouteError
from fep.interfaces import IPushChannel, IRecordSink
from fep.model import Record

log = Logger()

# Bytes a read over a call in may give back unread (the start of a push).
MAX_RETURNED = 1 << 16

_NUMBER = re.compile(r"\+?[0-9*#]+")
_PREFIX = re.compile(r"[0-9*#,W!@]*", re.IGNORECASE)

OUTCOME_OF: dict[ResultCode, CallOutcome] = {
    ResultCode.BUSY: CallOutcome.BUSY,
    ResultCode.NO_ANSWER: CallOutcome.NO_ANSWER,
    ResultCode.NO_CARRIER: CallOutcome.NO_CARRIER,
    ResultCode.NO_DIALTONE: CallOutcome.NO_DIALTONE,
}


def normalise_number(number: str) -> str:
    """``"+54 11 4321-0000"`` -> ``"+541143210000"``; RouteError for anything else than
    digits, ``+`` (first), ``*``, ``#`` and separators (space, ``-``, ``.``, ``/``, ``()``)."""
    cleaned = re.sub(r"[\s\-./()]", "", number)
    if not _NUMBER.fullmatch(cleaned):
        raise RouteError(f"bad telephone number {number!r}", route=f"dialup:{number}")
    return cleaned


@attrs.frozen
class DialSettings:
    """How numbers are dialled and calls ended.

    ``prefix``: dialled before every number (e.g. ``0,`` for an outside line, ``,`` waits);
    ``tone``: DTMF (ATDT) or pulse (ATDP); ``dial_timeout``: seconds for the ATD's result;
    ``guard``: the escape guard time (the modems' S12, 1 s by default); ``hangup``:
    ``escape`` (+++ then ATH) or ``dtr`` (drop DTR, where the port has one);
    ``hangup_timeout``: seconds for each step of a hang-up (the OK after +++ on top of
    twice the guard time, the OK of ATH, the NO CARRIER after a DTR drop)."""

    prefix: str = ""
    tone: bool = True
    dial_timeout: float = 60.0
    guard: float = 1.0
    hangup: str = "escape"
    hangup_timeout: float = 10.0

    def __attrs_post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise ConfigError(f"bad dial prefix {self.prefix!r}", key="prefix")
        if self.hangup not in ("escape", "dtr"):
            raise ConfigError(f"hangup must be escape or dtr, not {self.hangup!r}",
                              key="hangup")
        for key in ("dial_timeout", "guard", "hangup_timeout"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive", key=key)

    def command(self, number: str) -> str:
        number = normalise_number(number)
        return f"ATD{'T' if self.tone else 'P'}{self.prefix}{number}"


@attrs.frozen
class RetryPolicy:
    """When to call a site again, by how the last attempt ended.

    BUSY: again after ``busy_delay`` seconds, up to ``busy_retries`` times. NO ANSWER, NO
    CARRIER, a carrier lost mid-session, ERROR or no result: back off, ``backoff`` seconds
    times ``backoff_factor`` per earlier such failure (at most ``backoff_max``), up to
    ``retries`` times. NO DIALTONE is the line's fault, not the site's: the line leaves the
    pool and the site is called again at once on another line (not counted)."""

    busy_delay: float = 30.0
    busy_retries: int = 3
    backoff: float = 120.0
    backoff_factor: float = 2.0
    backoff_max: float = 1800.0
    retries: int = 2

    def __attrs_post_init__(self) -> None:
        for key in ("busy_delay", "backoff", "backoff_max"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must not be negative", key=key)
        if self.backoff_factor < 1:
            raise ConfigError("backoff_factor must be at least 1", key="backoff_factor")
        for key in ("busy_retries", "retries"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must not be negative", key=key)

    def delay(self, outcome: CallOutcome, busy: int, other: int) -> float | None:
        """Seconds before the next attempt, None to give up. ``busy`` and ``other`` count the
        site's failed attempts so far, this one included."""
        if outcome is CallOutcome.NO_DIALTONE:
            return 0.0
        if outcome is CallOutcome.BUSY:
            return self.busy_delay if busy <= self.busy_retries else None
        if outcome in (CallOutcome.COMPLETED, CallOutcome.SESSION_FAILED,
                       CallOutcome.CANCELLED):
            return None
        if other > self.retries:
            return None
        return min(self.backoff * self.backoff_factor ** (other - 1), self.backoff_max)


class DialFailed(ChannelError):
    """A site could not be reached: names the number, the last line and result, and the
    attempts made."""

    def __init__(
        self, message: str, *, route: str | None, number: str, line: str | None,
        outcome: CallOutcome, attempts: int,
    ) -> None:
        super().__init__(message, route=route)
        self.number = number
        self.line = line
        self.outcome = outcome
        self.attempts = attempts


@implementer(IAddress)
@attrs.frozen
class DialupAddress:
    """A call's address: the number dialled and the modem line."""

    number: str
    line: str


@implementer(ITransport)
class CallTransport:
    """The transport a meter protocol gets for a connected call."""

    def __init__(self, call: DialupCall) -> None:
        self._call = call
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        self._call.write(data)

    def writeSequence(self, data: Any) -> None:
        self._call.write(b"".join(data))

    def loseConnection(self) -> None:
        self.disconnecting = True
        self._call.hang_up()

    def abortConnection(self) -> None:
        self.loseConnection()

    def getPeer(self) -> DialupAddress:
        return DialupAddress(self._call.number, self._call.line.name)

    def getHost(self) -> DialupAddress:
        return DialupAddress(self._call.number, self._call.line.name)


@implementer(ITransport, IPushChannel)
class PipeTransport:
    """The transport of a read over a call in (``DialupCall.open_pipe``): ``loseConnection``
    gives the call back to the protocol that took the call (it does not hang up). Pushes the
    read's session tells from its answers are stored through ``pushed`` (the call's
    ``push_sink``); bytes it leaves unread go back to the protocol that took the call."""

    def __init__(self, call: DialupCall) -> None:
        self._call = call
        self.disconnecting = False

    def pushed(self, records: Sequence[Record]) -> Deferred[None]:
        sink = self._call.push_sink
        if sink is None:
            log.info("modem {line}: a push during the read over the call from {number} "
                     "dropped: no sink", line=self._call.line.name, number=self._call.number,
                     route=self._call.route)
            return succeed(None)
        return sink.submit(records)

    def unconsumed(self, data: bytes) -> None:
        self._call.take_back(data)

    def write(self, data: bytes) -> None:
        if not self.disconnecting:
            self._call.write(data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self._call.release_pipe(self)

    def abortConnection(self) -> None:
        self.loseConnection()

    def getPeer(self) -> DialupAddress:
        return DialupAddress(self._call.number, self._call.line.name)

    def getHost(self) -> DialupAddress:
        return DialupAddress(self._call.number, self._call.line.name)


@implementer(IStreamClientEndpoint)
class CallEndpoint:
    """Connects a protocol to an already connected call (once)."""

    def __init__(self, call: DialupCall) -> None:
        self.call = call

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        call = self.call
        if call.state != "connected" or call.protocol is not None:
            return fail(ChannelError(
                f"call to {call.number} on modem {call.line.name} is {call.state}",
                route=call.route,
            ))
        protocol = protocolFactory.buildProtocol(DialupAddress(call.number, call.line.name))
        if protocol is None:
            return fail(ChannelError("factory refused the connection", route=call.route))
        call.attach(protocol)
        return succeed(protocol)


class DialupCall:
    """One dial attempt on one modem line (see the module docstring)."""

    def __init__(
        self,
        reactor: IReactorTime,
        line: ModemLine,
        number: str,
        settings: DialSettings,
        *,
        site: str | None = None,
        route: str | None = None,
        incoming: bool = False,
    ) -> None:
        self.reactor = reactor
        self.line = line
        # A call in: ``number`` is the caller id (``unknown`` when the line gave none).
        self.incoming = incoming
        if incoming:
            try:
                number = normalise_number(number)
            except RouteError:
                number = "unknown"
            self.number = number
        else:
            self.number = normalise_number(number)
        self.settings = settings
        self.site = site or self.number
        self.route = route or f"dialup:{self.number}"
        self.state = "new"  # dialing, connected, hanging up, ended
        self.result: FinalResult | None = None
        self.outcome: CallOutcome | None = None
        self.carrier_lost: str | None = None
        self.error: str | None = None
        self.protocol: IProtocol | None = None
        # A read over a call in: its protocol gets the caller's bytes while it runs; pushes
        # it tells from its answers go to ``push_sink``; bytes it leaves unread wait in
        # ``_returned`` for the protocol that took the call.
        self.pipe: IProtocol | None = None
        self._pipe_transport: PipeTransport | None = None
        self.push_sink: IRecordSink | None = None
        self._returned = bytearray()
        self.finished: Deferred[ModemCall] = Deferred()
        self._early = bytearray()
        self._started = datetime.now(UTC)
        self._t0 = reactor.seconds()
        self._connected_at: float | None = None
        self._cancelled = False
        self._protocol_told = False
        # Set by the pool when the meter session failed on a good line.
        self.session_failed = False
        # Set when the call leaves the line unusable (the pool takes it out of service).
        self.line_fault: str | None = None

    # -- dialling

    def dial(self) -> Deferred[FinalResult]:
        """Send ATD; fires with the final result (CONNECT: the call is up). Cancelling it
        aborts the dial; the line is released when the modem has answered."""
        if self.state != "new":
            return fail(ChannelError(f"call to {self.number} already {self.state}",
                                     route=self.route))
        self.state = "dialing"
        self.line.route = self.route
        try:
            text = self.settings.command(self.number)
        except RouteError as e:
            self._end(CallOutcome.ERROR, "", str(e))
            return fail(e)
        log.info("modem {line}: dialling {number}", line=self.line.name, number=self.number,
                 route=self.route)
        return self._start(text)

    def answer(self) -> Deferred[FinalResult]:
        """A call in (RING): send ATA; fires with its final result (CONNECT: the call is up,
        the caller's bytes go to the protocol attached with ``endpoint()``)."""
        if self.state != "new":
            return fail(ChannelError(f"call from {self.number} already {self.state}",
                                     route=self.route))
        self.state = "dialing"
        self.line.route = self.route
        log.info("modem {line}: answering a call from {number}", line=self.line.name,
                 number=self.number, route=self.route)
        return self._start("ATA")

    def _start(self, text: str) -> Deferred[FinalResult]:
        atd = self.line.command(text, self.settings.dial_timeout, expect_ok=False)

        def cancel(_: Deferred[FinalResult]) -> None:
            self._cancelled = True
            self.line.abort_dial()

        result: Deferred[FinalResult] = Deferred(cancel)

        def answered(response: Response) -> None:
            self.result = response.result
            if response.code is ResultCode.CONNECT:
                self.state = "connected"
                self._connected_at = self.reactor.seconds()
                self.line.data_receiver = self
                self.line.on_carrier_lost = self._lost
                log.info("modem {line}: {result} to {number}", line=self.line.name,
                         result=response.result.line, number=self.number, route=self.route)
                if self._cancelled:
                    self.hang_up()
                    return
                result.callback(response.result)
                return
            outcome = OUTCOME_OF.get(response.code, CallOutcome.ERROR)
            if self._cancelled:
                outcome = CallOutcome.CANCELLED
            self._end(outcome, response.result.line)
            if not result.called:
                result.callback(response.result)

        def failed(failure: Failure) -> None:
            outcome = CallOutcome.TIMEOUT if failure.check(ModemTimeout) else CallOutcome.ERROR
            if failure.check(ModemTimeout):
                self.line.abort_dial()
            self._end(outcome, "", failure.getErrorMessage())
            if not result.called:
                result.errback(failure)

        atd.addCallbacks(answered, failed)
        return result

    def endpoint(self) -> CallEndpoint:
        return CallEndpoint(self)

    # -- connected

    def attach(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        protocol.makeConnection(CallTransport(self))
        if self._early and self.state == "connected":
            early, self._early = bytes(self._early), bytearray()
            protocol.dataReceived(early)

    def dataReceived(self, data: bytes) -> None:
        if self.pipe is not None:
            if self.state == "connected":
                self.pipe.dataReceived(data)
        elif self.protocol is None:
            self._early += data
        elif self.state == "connected":
            self.protocol.dataReceived(data)

    # -- reads over a call in

    def open_pipe(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect a meter session (a pull read) to this call in while it is up: the
        caller's bytes go to it instead of the protocol that took the call until its
        transport's ``loseConnection``, which gives the call back (no hang-up). One read at
        a time; ChannelError when the call is not up or a read is under way."""
        if self.state != "connected":
            return fail(ChannelError(
                f"call from {self.number} on modem {self.line.name} is {self.state}",
                route=self.route))
        if self.pipe is not None:
            return fail(ChannelError(
                f"call from {self.number} on modem {self.line.name}: a read is under way",
                route=self.route))
        protocol = protocolFactory.buildProtocol(DialupAddress(self.number, self.line.name))
        if protocol is None:
            return fail(ChannelError("factory refused the connection", route=self.route))
        transport = PipeTransport(self)
        self.pipe, self._pipe_transport = protocol, transport
        log.info("modem {line}: a read over the call from {number}", line=self.line.name,
                 number=self.number, route=self.route)
        protocol.makeConnection(transport)
        return succeed(protocol)

    def take_back(self, data: bytes) -> None:
        """Bytes the read over the call did not use (the start of a push after the meter's
        last answer): the protocol that took the call gets them first when the read ends."""
        if self.pipe is not None and len(self._returned) + len(data) <= MAX_RETURNED:
            self._returned += data

    def release_pipe(self, transport: PipeTransport) -> None:
        """The read over the call is done: the call goes back to the protocol that took it
        (with the bytes the read left unread first)."""
        if self._pipe_transport is not transport or self.pipe is None:
            return
        pipe, self.pipe, self._pipe_transport = self.pipe, None, None
        log.info("modem {line}: the read over the call from {number} is done",
                 line=self.line.name, number=self.number, route=self.route)
        pipe.connectionLost(Failure(ConnectionDone("the read over the call in is done")))
        returned, self._returned = bytes(self._returned), bytearray()
        if returned and self.state == "connected":
            if self.protocol is None:
                self._early[:0] = returned
            else:
                self.protocol.dataReceived(returned)

    def write(self, data: bytes) -> None:
        if self.state == "connected":
            self.line.write_data(data)

    def _lost(self, why: str) -> None:
        if self.state == "hanging up":
            return  # the hang-up's own NO CARRIER
        if self.state != "connected":
            return
        if self.incoming:
            # The caller hung up: the normal end of a call in.
            log.info("modem {line}: {number} hung up ({why})", line=self.line.name,
                     number=self.number, why=why, route=self.route)
            self._end(CallOutcome.COMPLETED, self.result.line if self.result else "")
            self._tell_protocol(Failure(ConnectionDone("the caller hung up")))
            return
        self.carrier_lost = why
        error = ChannelError(
            f"carrier lost on modem {self.line.name} calling {self.number} ({why})",
            route=self.route,
        )
        log.warn("{error}", error=error, line=self.line.name, number=self.number,
                 route=self.route)
        self._end(CallOutcome.CARRIER_LOST, self.result.line if self.result else "", str(error))
        self._tell_protocol(Failure(error))

    def hang_up(self) -> Deferred[ModemCall]:
        """End the call (idempotent); fires with the call record once the line is free."""
        if self.state == "dialing":
            self._cancelled = True
            self.line.abort_dial()
        elif self.state == "connected":
            self.state = "hanging up"
            Deferred.fromCoroutine(self._hang_up())
        elif self.state == "new":
            self._end(CallOutcome.CANCELLED, "")
        return _chained(self.finished)

    async def _hang_up(self) -> None:
        settings = self.settings
        try:
            escaped = False
            if settings.hangup == "escape":
                try:
                    response = await self.line.escape(
                        settings.guard, settings.guard * 2 + settings.hangup_timeout
                    )
                    escaped = response.code in (ResultCode.OK, ResultCode.NO_CARRIER)
                except ModemError as e:
                    log.info("modem {line}: no answer to +++ ({error}), dropping DTR",
                             line=self.line.name, error=e, route=self.route)
            if not escaped and self.line.engine.online:
                await self._drop_dtr()
            if self.line.is_open:
                await self.line.command("ATH", settings.hangup_timeout, expect_ok=False)
            outcome = CallOutcome.CANCELLED if self._cancelled else CallOutcome.COMPLETED
            self._end(outcome, self.result.line if self.result else "")
        except ChannelError as e:
            self.error = str(e)
            self._end(CallOutcome.COMPLETED, self.result.line if self.result else "", str(e),
                      line_fault=f"hang-up failed: {e}")
        self._tell_protocol(Failure(ConnectionDone("hung up")))

    async def _drop_dtr(self) -> None:
        control = self.line.control
        if control is None:
            raise ChannelError(f"modem {self.line.name}: cannot hang up (no DTR)",
                               route=self.route)
        control.set_dtr(False)
        try:
            waited = 0.0
            step = min(0.05, self.settings.guard)
            while self.line.engine.online and waited < self.settings.hangup_timeout:
                await deferLater(self.reactor, step, lambda: None)
                waited += step
        finally:
            control.set_dtr(True)
        if self.line.engine.online:
            # No NO CARRIER came: this port has no DTR the modem listens to.
            self.line.engine.carrier_lost("DTR dropped")
            raise ChannelError(
                f"modem {self.line.name}: still online after +++ and DTR drop",
                route=self.route,
            )

    # -- end

    def _tell_protocol(self, reason: Failure) -> None:
        if self.pipe is not None:
            pipe, self.pipe, self._pipe_transport = self.pipe, None, None
            pipe.connectionLost(reason)
        if self.protocol is not None and not self._protocol_told:
            self._protocol_told = True
            self.protocol.connectionLost(reason)

    def _end(
        self, outcome: CallOutcome, result: str, error: str | None = None,
        *, line_fault: str | None = None,
    ) -> None:
        if self.state == "ended":
            return
        self.state = "ended"
        self.outcome = outcome
        if error is not None:
            self.error = error
        self.line_fault = line_fault
        if self.line.data_receiver is self:
            self.line.data_receiver = None
            self.line.on_carrier_lost = None
        now = self.reactor.seconds()
        connected = 0.0 if self._connected_at is None else now - self._connected_at
        record = ModemCall(
            line=self.line.name,
            number=self.number,
            site=self.site,
            started=self._started,
            seconds=now - self._t0,
            connected_seconds=connected,
            result=result or (self.result.line if self.result else ""),
            outcome=outcome,
            error=self.error,
        )
        self.finished.callback(record)


def _chained(d: Deferred[ModemCall]) -> Deferred[ModemCall]:
    """A new Deferred that fires with ``d``'s result, leaving ``d`` for others."""
    out: Deferred[ModemCall] = Deferred()

    def relay(result: Any) -> Any:
        if isinstance(result, Failure):
            out.errback(result)
        else:
            out.callback(result)
        return result

    d.addBoth(relay)
    return out
