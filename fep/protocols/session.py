"""The one thin Twisted driver of every one-shot meter session: connect through an endpoint
within a deadline, run a protocol's sans-IO steps (fep/protocols/actions.py) over the
connection, keep the step timer, switch baud once written bytes have drained, and end with
the result or with an error naming meter, route and protocol.

A protocol's ``session.py`` subclasses ``MeterSession`` with what is its own: the steps it
runs (``make_steps``), its notes (``note``: logs of resends, skipped noise), the result
turned into records (``result``) and what it logs at the end (``ended``). A protocol whose
peer also sends by itself (reports, heartbeats, pushes) gives back what is not its own
(``gives_back``, ``unconsumed``, ``give_back``) to a channel that carries pushes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from fep.errors import ChannelError, FepError, FrameError, ProtocolError, SessionTimeout
from fep.interfaces import IPushChannel, IRecordSink, ISerialLine
from fep.model import Record
from fep.protocols.actions import (
    Fail,
    Finish,
    Line,
    Send,
    SessionSteps,
    SetTimer,
    StopTimer,
    SwitchBaud,
)
from fep.ratelog import RateLimitedLog

log = Logger(namespace="fep.protocols.session")

E = TypeVar("E", bound=Exception)
P = TypeVar("P", bound=Protocol)

# How often to look again whether the transport's write buffer has drained before a baud
# switch (a FileDescriptor has no "drained" callback for a writer that is not a producer).
DRAIN_POLL = 0.005


# ---------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------


class _OneShotFactory(Factory):
    """``connectProtocol``'s factory, quiet: a meter session is one connection, and a
    "Starting factory" line per read would drown the log."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: object) -> Protocol:
        return self.protocol_instance


def connect_within(
    reactor: IReactorTime, endpoint: Any, protocol: P, route: str | None, timeout: float
) -> Deferred[P]:
    """Connect ``protocol`` through ``endpoint``; fires with it once connected. Gives up after
    ``timeout`` seconds, or after the endpoint's own ``connect_timeout`` when that is longer
    (a dial-up call waits for a line, dials and redials by its retry policy); every failure
    is a ChannelError naming the route."""
    own = getattr(endpoint, "connect_timeout", None)
    if own is not None:
        timeout = max(timeout, own)
    connecting: Deferred[Any] = IStreamClientEndpoint(endpoint).connect(
        _OneShotFactory(protocol)
    )
    connecting.addTimeout(timeout, reactor)

    def not_connected(failure: Failure) -> Failure:
        if failure.check(TimeoutError, CancelledError):
            error = ChannelError(f"no connection within {timeout:.1f} s", route=route)
        elif isinstance(failure.value, ChannelError):
            error = failure.value
            if error.route is None:
                error.route = route
        else:
            error = ChannelError(f"cannot connect: {failure.getErrorMessage()}", route=route)
        return Failure(error)

    result: Deferred[P] = connecting.addCallbacks(lambda _: protocol, not_connected)
    return result


def run_session(
    reactor: IReactorTime, endpoint: Any, session: Any, route: str | None, timeout: float
) -> Deferred[Any]:
    """Connect a one-shot meter session (a protocol with a ``done`` Deferred) and fire with
    what ``done`` fires with."""
    d = connect_within(reactor, endpoint, session, route, timeout)
    d.addCallback(lambda _: session.done)
    return d


def run_session_within(
    reactor: IReactorTime, endpoint: Any, session: Any, route: str | None, timeout: float
) -> Deferred[Any]:
    """``run_session`` with ``done`` bounded too: TimeoutError when it has not fired
    ``timeout`` seconds after the connection (for a session that keeps no step timer of its
    own, e.g. one request handed to a concentrator's pipe)."""

    def bounded(_: object) -> Deferred[Any]:
        done: Deferred[Any] = session.done
        done.addTimeout(timeout, reactor)
        return done

    return connect_within(reactor, endpoint, session, route, timeout).addCallback(bounded)


# ---------------------------------------------------------------------------
# Ending
# ---------------------------------------------------------------------------


def abort(transport: Any) -> None:
    """Close the connection without flushing: a failed session's unsent bytes are worthless
    and a half-answering meter must not hold the line (loseConnection where there is no
    abort)."""
    if transport is not None:
        (getattr(transport, "abortConnection", None) or transport.loseConnection)()


def within(error: E, timeout: float) -> E:
    """A SessionTimeout with the step's time limit added to its message; other errors as
    they are."""
    if not isinstance(error, SessionTimeout):
        return error
    limited: E = SessionTimeout(  # type: ignore[assignment]  # E is a SessionTimeout here
        f"{error.message} within {timeout:.1f} s",
        meter=error.meter,
        route=error.route,
        protocol=error.protocol,
    )
    return limited


def pending_write_bytes(transport: Any) -> int:
    """Bytes a FileDescriptor transport still holds in user space (0 for others)."""
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return max(buffered, 0) + int(getattr(transport, "_tempDataLen", 0))


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------


# The actions the driver carries out itself (the rest are a protocol's notes).
_DRIVING = (Send, SetTimer, StopTimer, SwitchBaud, Finish, Fail)


class MeterSession(Protocol):
    """Runs one protocol's steps over one connection; ``done`` fires with the result.

    ``steps`` are given, or built by ``make_steps`` once the line is known (a protocol that
    switches baud only on a serial line). Errors: a FrameError becomes a ProtocolError, and
    every ProtocolError names the meter, route and protocol (a SessionTimeout also its step
    timeout); a lost connection is a ChannelError naming the route and what was awaited
    (the channel's own ChannelError, when it ended the connection with one).
    """

    # Line speed assumed on a serial line that does not say (for the wire time before a
    # baud switch).
    default_baudrate = 9600
    # Whether bytes that come after the session's end are given back (``give_back``) rather
    # than dropped: a protocol whose peer sends by itself (a report, a heartbeat, a push)
    # over a GPRS session lent to the read.
    gives_back = False

    def __init__(
        self,
        reactor: IReactorTime,
        timeout: float,
        *,
        meter: str | None = None,
        route: str | None = None,
        protocol: str | None = None,
        steps: SessionSteps | None = None,
    ) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.meter_id = meter
        self.route = route
        self.protocol_name = protocol
        self.steps = steps
        self.done: Deferred[Any] = Deferred()
        self.line = Line()
        self.baudrate = self.default_baudrate
        self._timer: IDelayedCall | None = None
        self._switch_call: IDelayedCall | None = None
        # Actions waiting for a baud switch to end.
        self._held: list[object] | None = None
        self._ended = False
        self._last_sent = b""

    # -- what a protocol adapter overrides -----------------------------------------------------

    def make_steps(self, line: Line) -> SessionSteps:
        """The steps to run on ``line``; by default the ones given."""
        if self.steps is None:
            raise NotImplementedError("a MeterSession needs steps or make_steps")
        return self.steps

    def note(self, action: object) -> None:
        """A protocol's own action (a resend, skipped noise): log or count it."""

    def result(self, value: Any) -> Any:
        """What ``done`` fires with for ``Finish(value)``."""
        return value

    def ended(self, lost: bool) -> None:
        """The session is over (``lost``: the connection went first); stop own timers,
        log a summary."""

    def lost_while(self) -> str:
        """What the session was doing, for the lost-connection error."""
        waiting = self.steps.waiting_for if self.steps is not None else None
        return f"waiting for {waiting or 'the session'}"

    def write(self, data: bytes) -> None:
        """Put ``data`` on the line (an adapter may hold it back: an RTU frame gap)."""
        self._last_sent = data
        self.transport.write(data)  # type: ignore[union-attr]

    def unconsumed(self) -> bytes:
        """The bytes the steps hold undecoded when the session ends (the start of a report
        or push after the last answer): given back. None by default."""
        return b""

    def not_given_back(self, data: bytes) -> None:
        """Bytes to give back on a channel that carries no pushes: log or count them (by
        default they are dropped quietly)."""

    # -- bytes that are not the session's ----------------------------------------------------

    def give_back(self, data: bytes) -> None:
        """Bytes that are not this session's (a frame its peer sent by itself, what came
        after its end, what its steps held undecoded at the end) go to a channel that
        carries pushes (``IPushChannel.unconsumed``: its push handler takes them, before
        whatever comes next); elsewhere to ``not_given_back``."""
        if not data:
            return
        channel: Any = IPushChannel(self.transport, None)
        if channel is not None:
            channel.unconsumed(data)
            return
        self.not_given_back(data)

    # -- the driver ------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._ended

    def run(self, actions: Sequence[object]) -> None:
        """Carry out ``actions`` in order (after any held by a baud switch under way)."""
        if self._held is not None and self._switch_call is not None:
            self._held += actions  # the switch's end runs them
            return
        queue = (self._held or []) + list(actions)
        self._held = None
        while queue:
            action = queue.pop(0)
            if self._ended:
                # Over (a Finish, a Fail, or the answer the last step waited for): nothing
                # more is sent or timed, but what the step noted after it is still told (a
                # push that came in the same read as the meter's last answer).
                if not isinstance(action, _DRIVING):
                    self.note(action)
                continue
            if isinstance(action, Send):
                self.write(action.data)
            elif isinstance(action, SetTimer):
                self.set_timer(action.seconds)
            elif isinstance(action, StopTimer):
                self._disarm()
            elif isinstance(action, SwitchBaud):
                if self.line.serial and action.baudrate != self.baudrate:
                    self._held = queue
                    self._disarm()
                    self._switch_after_drain(action.baudrate)
                    return
            elif isinstance(action, Finish):
                self.finish(action.result)
            elif isinstance(action, Fail):
                self.fail(action.error)
            else:
                self.note(action)

    def _call(self, step: Callable[..., Sequence[object]], *args: Any) -> Sequence[object]:
        """A step's actions; an error it raises ends the session."""
        try:
            return step(*args)
        except FepError as e:
            return [Fail(e)]
        except Exception as e:  # a bug in a protocol's steps must not escape into the reactor
            log.failure("{meter}: session step failed", meter=self.meter_id, route=self.route,
                        protocol=self.protocol_name)
            return [Fail(ProtocolError(f"internal error: {e!r}"))]

    def set_timer(self, seconds: float | None = None) -> None:
        """(Re)start the step timer: ``seconds`` or the step timeout."""
        self._disarm()
        if not self._ended:
            delay = self.timeout if seconds is None else seconds
            self._timer = self.reactor.callLater(delay, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.steps is not None and not self._ended:
            self.run(self._call(self.steps.timeout))

    def _named(self, error: Exception) -> Exception:
        """``error`` naming meter, route and protocol."""
        if isinstance(error, FrameError):
            named = ProtocolError(error.message)
            named.__cause__ = error
            error = named
        error = within(error, self.timeout)
        if isinstance(error, ProtocolError):
            error.meter = error.meter or self.meter_id
            error.route = error.route or self.route
            error.protocol = error.protocol or self.protocol_name
        return error

    def _stop(self) -> None:
        self._ended = True
        self._disarm()
        if self._switch_call is not None and self._switch_call.active():
            self._switch_call.cancel()
        self._switch_call = None
        self._held = None

    def finish(self, value: Any) -> None:
        if self._ended:
            return
        self._stop()
        self.give_back(self.unconsumed())
        self.ended(lost=False)
        self.transport.loseConnection()  # type: ignore[union-attr]
        self.done.callback(self.result(value))

    def fail(self, error: Exception) -> None:
        if self._ended:
            return
        error = self._named(error)
        self._stop()
        self.give_back(self.unconsumed())
        self.ended(lost=False)
        abort(self.transport)
        self.done.errback(Failure(error))

    # -- baud switch (serial lines) ----------------------------------------------------------------

    def _switch_after_drain(self, baudrate: int) -> None:
        """Switch once our last bytes have left: first the transport's buffer, then their
        time on the wire at the old speed."""
        self._switch_call = None
        if self._ended:
            return
        if pending_write_bytes(self.transport) > 0:
            self._switch_call = self.reactor.callLater(
                DRAIN_POLL, self._switch_after_drain, baudrate
            )
            return
        bits = int(getattr(self.transport, "char_bits", 10))
        queued = int(getattr(self.transport, "out_waiting", lambda: 0)())
        wire_time = (len(self._last_sent) + queued) * bits / self.baudrate
        self._switch_call = self.reactor.callLater(wire_time, self._set_baud, baudrate)

    def _set_baud(self, baudrate: int) -> None:
        self._switch_call = None
        if self._ended:
            return
        try:
            ISerialLine(self.transport).set_baudrate(baudrate)
        except (OSError, ValueError) as e:
            self.fail(ChannelError(f"cannot set {baudrate} Bd: {e}", route=self.route))
            return
        self.baudrate = baudrate
        self.run([])

    # -- Protocol ----------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        serial = bool(ISerialLine.providedBy(self.transport))
        speed = getattr(self.transport, "baudrate", None)
        bits = getattr(self.transport, "char_bits", None)
        self.line = Line(
            serial=serial,
            baudrate=int(speed) if speed else None,
            char_bits=float(bits) if bits else None,
        )
        if serial:
            self.baudrate = int(speed or self.default_baudrate)
        try:
            self.steps = self.make_steps(self.line)
        except FepError as e:
            self.fail(e)
            return
        self.run(self._call(self.steps.start))

    def dataReceived(self, data: bytes) -> None:
        if self._ended:
            if self.gives_back:
                self.give_back(data)  # not this session's (a report, a heartbeat, a push)
            return
        if self.steps is None:
            return
        self.run(self._call(self.steps.receive, data))

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self._ended:
            return
        self._stop()
        self.ended(lost=True)
        if isinstance(reason.value, ChannelError):
            # The channel ended the pipe and says why (a concentrator that forwarded to a
            # meter which did not answer).
            message = f"{reason.value.message} ({self.lost_while()})"
        else:
            message = f"connection lost {self.lost_while()}: {reason.getErrorMessage()}"
        self.done.errback(Failure(ChannelError(message, route=self.route)))



# ---------------------------------------------------------------------------
# The push handler of a protocol whose sans-IO link keeps what a device reports before it
# confirms it (Q/GDW 1376.1 concentrators, DTUs with DL/T 645 meters behind them): the
# link's actions done in turn, a bug in one logged and never raised into the reactor;
# records handed to the sink, and the link or the line told only once the sink has them (or
# has failed). A protocol's session.py subclasses it with what is its own (``_do``: what
# each of its link's actions means; its log texts). No timers here: a link that waits for
# an answer keeps its own deadlines.
# ---------------------------------------------------------------------------


class LinkPushHandler:
    """Feeds a connection's bytes to ``link`` (``receive(bytes)`` -> actions, ``stats``,
    ``pending()``, ``take_buffered()``) and does its actions; ``reply(bytes)`` writes to
    the device (None: the connection cannot answer); ``source`` names the connection."""

    # The protocol's own logger (its namespace in the log).
    logger: ClassVar[Logger]

    def __init__(self, link: Any, sink: IRecordSink, *, reply: Callable[[bytes], None] | None,
                 source: str, events: RateLimitedLog | None = None) -> None:  # fmt: skip
        self.link = link
        self.sink = sink
        self.reply = reply
        self.source = source
        self.events = events if events is not None else RateLimitedLog(self.logger)
        self.frames = 0
        # Frames the link took before this handler had it (a predecessor's).
        self._frames_before = 0

    @property
    def stats(self) -> Any:
        return self.link.stats

    def _fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        self._perform(self.link.receive(data))
        self.frames = self.link.stats.frames - self._frames_before

    def pending(self) -> int:
        pending: int = self.link.pending()
        return pending

    def take_buffered(self) -> bytes:
        buffered: bytes = self.link.take_buffered()
        return buffered

    def _perform(self, actions: Sequence[object]) -> None:
        for action in actions:
            try:
                self._do(action)
            except Exception:  # a bug must not escape into the reactor
                self.logger.failure("{route} ({meter}, {address}): handling {action} failed",
                                    action=type(action).__name__, **self._fields())  # fmt: skip

    def _do(self, action: object) -> None:
        raise NotImplementedError

    def _store(self, records: Sequence[Record], *, then: Callable[[], None] | None,
               stored: str, not_stored: str, fields: dict[str, Any], what: str,
               otherwise: Callable[[], None] | None = None) -> None:  # fmt: skip
        """``records`` to the sink; ``then()`` once it has them (at once when there are
        none), logged with the text ``stored`` ({what}, {count} and ``fields``);
        ``otherwise()`` when it failed, logged with ``not_stored`` and the failure."""
        if not records:
            if then is not None:
                then()
            return

        def kept(_: object) -> None:
            self.logger.info(stored, what=what, count=len(records), **fields)
            if then is not None:
                then()

        def lost(failure: Failure) -> None:
            self.logger.failure(not_stored, failure, what=what, **fields)
            if otherwise is not None:
                otherwise()

        self.sink.submit(list(records)).addCallbacks(kept, lost)


__all__ = ["LinkPushHandler"]


__all__ = [
    "DRAIN_POLL",
    "LinkPushHandler",
    "MeterSession",
    "abort",
    "connect_within",
    "pending_write_bytes",
    "run_session",
    "within",
]
