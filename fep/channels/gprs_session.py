"""The GPRS modem session as a sans-IO state machine: bytes, timeouts and pipe events in,
actions out.

One ``SessionMachine`` per inbound modem connection decides everything the session does:
identification (fep.channels.identify), garbage and heartbeats, the unknown-modem policy,
registration, proofs of identity and identity conflicts (fep.channels.modem_identity), pushes
versus a pull job's pipe, idle timeouts, closing. It imports no Twisted and touches no socket,
clock or log: each input is a method returning a list of actions (``Send``, ``Close``,
``StartTimer``, ``Register``, ``Claim``, ``OpenPipe``, ``ToHandler``, ``Log`` ...) that
``fep.channels.gprs.ModemSession``, the thin Twisted adapter, performs in order. What the
machine must look up to decide (the meters of an identity, the live sessions holding a name,
the TLS client certificate's names) it asks of a ``SessionWorld`` the adapter provides;
"now" comes from the clock callable it is given.

States and what moves between them (``INPUTS`` says which input each state takes; any other
is refused: counted in ``GprsStats.refused_inputs``, logged rate-limited, never raised)::

    new --connected--> identifying            (source network refused: closing)
    identifying --registration--> attached | registering | quarantined | contested | closing
    registering --registered--> attached | contested;  --registration_failed--> closing
    quarantined --bytes, a meter names it now--> attached | contested
    contested --timeout(contest)--> attached | registering | quarantined (incumbent silent,
              replace-when-silent) | closing (policy keep, or the incumbent answered)
    attached --pipe_requested--> pipe | waiting (a push under way: let it finish)
    waiting --push_finished | timeout(pipe_wait)--> pipe
    pipe --pipe_released--> attached
    any live state --timeout(idle) | replaced | close--> closing
    any state --lost--> closed
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from fep.channels.identify import IdentificationError, Identifier, Identity
from fep.channels.modem_identity import certificate_names_modem, proof_matches
from fep.model import Meter

if TYPE_CHECKING:
    from fep.channels.gprs import GprsSettings

# Seconds a pull job waits for a push under way to finish before it takes the socket.
PIPE_WAIT = 5.0
# Bytes a contested newcomer's (or a registering modem's) data is kept for while its claim is
# decided or its meter record stored (the rest is dropped, counted).
MAX_HELD_BYTES = 1 << 16


@attrs.define
class GprsStats:
    """Counters of the GPRS channel (for metrics and the operator)."""

    connections: int = 0
    identified: int = 0
    unidentified: int = 0
    garbage_bytes: int = 0
    registered: int = 0
    quarantined: int = 0
    rejected: int = 0
    replaced: int = 0
    idle_closed: int = 0
    heartbeats: int = 0
    pipes: int = 0
    # Pushes a pull job's meter session told from its answers and handed over.
    pipe_pushes: int = 0
    unhandled_bytes: int = 0
    # Modem identity (security events): connections claiming a name a live session holds,
    # contested newcomers closed, registrations whose secret (or client certificate) did
    # not prove the modem, connections from a network the listener does not take, and
    # job connects refused because the session at the name changed since the job planned.
    conflicts: int = 0
    conflicts_closed: int = 0
    proof_failed: int = 0
    source_refused: int = 0
    changed_sessions: int = 0
    # Inputs a session's state does not take (a late timer, a registration finished after
    # the modem left, a pull asked of a busy modem, a write after close): refused.
    refused_inputs: int = 0


class SessionState(enum.StrEnum):
    """Where a modem session is. The values are what ``fep sessions`` shows (``waiting``
    shows as ``attached``: a job waits for a push under way to finish)."""

    NEW = "new"
    IDENTIFYING = "identifying"
    REGISTERING = "registering"
    ATTACHED = "attached"
    QUARANTINED = "quarantined"
    CONTESTED = "contested"
    WAITING = "waiting"
    PIPE = "pipe"
    CLOSING = "closing"
    CLOSED = "closed"


class Timer(enum.StrEnum):
    """The timers a session runs (``StartTimer``/``CancelTimer``, ``timeout(timer)``)."""

    IDENTIFY = "identify"
    IDLE = "idle"
    CONTEST = "contest"
    PIPE_WAIT = "pipe_wait"


class Input(enum.StrEnum):
    """The inputs a session machine takes (one method each)."""

    CONNECTED = "connected"
    DATA = "data"
    TIMEOUT_IDENTIFY = "timeout(identify)"
    TIMEOUT_IDLE = "timeout(idle)"
    TIMEOUT_CONTEST = "timeout(contest)"
    TIMEOUT_PIPE_WAIT = "timeout(pipe_wait)"
    REGISTERED = "registered"
    REGISTRATION_FAILED = "registration_failed"
    PIPE_REQUESTED = "pipe_requested"
    PUSH_FINISHED = "push_finished"
    PIPE_RELEASED = "pipe_released"
    REPLACED = "replaced"
    SEND = "send"
    CLOSE = "close"
    LOST = "lost"


S = SessionState
_LIVE = frozenset({S.IDENTIFYING, S.REGISTERING, S.ATTACHED, S.QUARANTINED, S.CONTESTED,
                   S.WAITING, S.PIPE})

# Which states take which input: the transition table's domain. Anything else is refused.
INPUTS: dict[Input, frozenset[SessionState]] = {
    Input.CONNECTED: frozenset({S.NEW}),
    Input.DATA: _LIVE | {S.CLOSING},  # closing: counted, dropped
    Input.TIMEOUT_IDENTIFY: frozenset({S.IDENTIFYING}),
    Input.TIMEOUT_IDLE: _LIVE,
    Input.TIMEOUT_CONTEST: frozenset({S.CONTESTED}),
    Input.TIMEOUT_PIPE_WAIT: frozenset({S.WAITING}),
    Input.REGISTERED: frozenset({S.REGISTERING}),
    Input.REGISTRATION_FAILED: frozenset({S.REGISTERING}),
    Input.PIPE_REQUESTED: frozenset({S.ATTACHED}),
    Input.PUSH_FINISHED: frozenset({S.WAITING}),
    Input.PIPE_RELEASED: frozenset({S.PIPE, S.CLOSING}),  # closing: the job lets go
    Input.REPLACED: _LIVE | {S.CLOSING},
    Input.SEND: _LIVE,
    Input.CLOSE: frozenset(SessionState),  # closing, closed: nothing to do
    Input.LOST: frozenset(SessionState) - {S.CLOSED},
}

# Shared empty defaults of every session (never mutated: replaced when something is added).
_NONE_REPLACED: frozenset[int] = frozenset()
_NO_ACTIONS: list[Action] = []

_TIMEOUTS = {
    Timer.IDENTIFY: Input.TIMEOUT_IDENTIFY,
    Timer.IDLE: Input.TIMEOUT_IDLE,
    Timer.CONTEST: Input.TIMEOUT_CONTEST,
    Timer.PIPE_WAIT: Input.TIMEOUT_PIPE_WAIT,
}


# -- actions: what the adapter does, in order --------------------------------------------------


@attrs.frozen
class Send:
    """Write ``data`` to the modem."""

    data: bytes


@attrs.frozen
class Close:
    """Abort the connection (a half-open peer would never let a graceful close finish)."""


@attrs.frozen
class StartTimer:
    """(Re)start ``timer`` to fire ``delay`` seconds from now (``timeout(timer)``); a
    running one is pushed back."""

    timer: Timer
    delay: float


@attrs.frozen
class CancelTimer:
    timer: Timer


@attrs.frozen
class Identified:
    """The modem said who it is (``machine.identity``): note the time, tell the listener
    limits (``peer_identified``)."""


@attrs.frozen
class Register:
    """Store a meter record for this unknown modem; answer ``registered(meter)`` or
    ``registration_failed(error)``."""


@attrs.frozen
class Claim:
    """Take ``names`` in the session registry; sessions that held them give way."""

    names: tuple[str, ...]


@attrs.frozen
class Release:
    """Give up every name held in the registry (stay listed)."""


@attrs.frozen
class Unregister:
    """Leave the registry (names and listing)."""


@attrs.frozen
class Replace:
    """The live session ``session`` (an incumbent) gives way to this one (its
    ``replaced``)."""

    session: int


@attrs.frozen
class Attach:
    """The session is its meters' now: make the push decoder, tell the observers."""

    meters: tuple[Meter, ...]


@attrs.frozen
class ToHandler:
    """Bytes for the push decoder (none: counted as unhandled). Answer ``push_finished``
    in state waiting once no push is under way."""

    data: bytes


@attrs.frozen
class ToPipe:
    """Bytes for the pull job's meter session."""

    data: bytes


@attrs.frozen
class OpenPipe:
    """Lend the socket to the job waiting for it (with the decoder's leftover bytes); if
    the job's protocol cannot be made, answer ``pipe_released``."""

    route: str


@attrs.frozen
class ReleasePipe:
    """The job is done with the socket: end its transport, a fresh push decoder."""


@attrs.frozen
class LosePipe:
    """The job's transport is lost (``why``): the modem is gone or going."""

    why: str


@attrs.frozen
class FailPipeWait:
    """The job waiting for the socket fails (``why``)."""

    why: str


@attrs.frozen
class RefusePipe:
    """The pull asked for cannot have the socket (``why``): the job fails at once."""

    why: str


@attrs.frozen
class Gone:
    """Tell the observers the session of ``meters`` ended."""

    meters: tuple[Meter, ...]


@attrs.frozen
class Log:
    """One structured log event; ``limited``: through the rate-limited log of strangers'
    junk; level ``failure``: with ``failure`` (a Failure) attached."""

    level: str
    format: str
    fields: dict[str, Any] = attrs.field(factory=dict)
    limited: bool = False
    failure: Any = None


Action = (Send | Close | StartTimer | CancelTimer | Identified | Register | Claim | Release
          | Unregister | Replace | Attach | ToHandler | ToPipe | OpenPipe | ReleasePipe
          | LosePipe | FailPipeWait | RefusePipe | Gone | Log)


@attrs.frozen
class Holder:
    """A live session holding a name another claims (as the claimant sees it)."""

    id: int
    peer: str
    heard: float  # clock time of the last byte it received
    meter: str | None = None
    route: str | None = None
    protocol: str | None = None


class SessionWorld(Protocol):
    """What a session machine looks up to decide (its adapter answers)."""

    def resolve(self, identity: Identity) -> list[Meter]:
        """The meters of the modem with this identity (none: unknown)."""

    def secrets(self, meters: Sequence[Meter]) -> list[str]:
        """The modem secrets these meters name (empty ones left out)."""

    def certificate_names(self) -> set[str] | None:
        """The names of the TLS client certificate, None without one."""

    def holders(self, names: Sequence[str]) -> list[Holder]:
        """The other live sessions holding any of ``names``, each once."""

    def route_names(self, route: str) -> list[str]:
        """The ``key=value`` names of a ``gprs:`` route; none for other routes."""

    def frames(self) -> int:
        """Pushes decoded on this session so far."""


class SessionMachine:
    """One inbound modem connection's decisions (see the module docstring for the states).

    Inputs: ``connected``, ``data``, ``timeout``, ``registered``, ``registration_failed``,
    ``pipe_requested``, ``push_finished``, ``pipe_released``, ``replaced``, ``send``,
    ``close``, ``lost``. Each returns the actions to perform, in order; none raises."""

    # Thousands of idle sessions each hold one: no instance dict.
    __slots__ = (
        "_held",
        "_identifier",
        "_out",
        "_pending",
        "_replacing",
        "bytes_in",
        "bytes_out",
        "clock",
        "contest_began",
        "contest_names",
        "ended",
        "garbage",
        "heard",
        "heartbeats",
        "id",
        "identity",
        "listener",
        "meters",
        "peer",
        "pipe_route",
        "settings",
        "state",
        "stats",
        "waiting_route",
        "world",
    )

    def __init__(
        self,
        settings: GprsSettings,
        rules: Any,
        stats: GprsStats,
        world: SessionWorld,
        *,
        clock: Callable[[], float],
        listener: str = "",
        session_id: int = 0,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.world = world
        self.clock = clock
        self.listener = listener
        self.id = session_id
        self.state = SessionState.NEW
        self.identity: Identity | None = None
        self.meters: list[Meter] = []
        self.peer = "?"
        self.ended = ""
        self.bytes_in = 0
        self.bytes_out = 0
        self.garbage = 0
        self.heartbeats = 0
        # Clock time of the last byte received (how long it has been silent).
        self.heard: float = clock()
        # The job holding (pipe) or waiting for (waiting) the socket.
        self.pipe_route: str | None = None
        self.waiting_route: str | None = None
        # The identifier (and its rule cursors) lives while the session identifies: dropped
        # once the modem said who it is (an idle session keeps no identification state).
        self._identifier: Identifier | None = Identifier(
            rules, max_garbage=settings.max_garbage)
        # Bytes kept while the meter registers / while contested: made when first needed.
        self._pending: bytearray | None = None
        # While contested: the names claimed, when, the bytes kept.
        self.contest_names: Sequence[str] = ()
        self.contest_began = 0.0
        self._held: bytearray | None = None
        # Incumbents this input replaces (still in the registry until the actions run);
        # the shared empty set until an input replaces one.
        self._replacing: frozenset[int] | set[int] = _NONE_REPLACED
        self._out: list[Action] = _NO_ACTIONS

    # -- what the operator sees ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.identity.name if self.identity is not None else f"session {self.id}"

    @property
    def shown_state(self) -> str:
        """The state ``fep sessions`` shows."""
        return S.ATTACHED.value if self.state is S.WAITING else self.state.value

    @property
    def closing(self) -> bool:
        return self.state in (S.CLOSING, S.CLOSED)

    @property
    def serving(self) -> bool:
        """Attached to its meters (pulls possible, or one under way)."""
        return self.state in (S.ATTACHED, S.WAITING, S.PIPE)

    def silent_for(self) -> float:
        """Seconds since this session last received a byte (heartbeats included)."""
        return float(self.clock() - self.heard)

    def log_fields(self) -> dict[str, Any]:
        return {
            "modem": self.name,
            "peer": self.peer,
            "meter": self.meters[0].id if self.meters else None,
            "route": self.meters[0].route if self.meters else None,
            "protocol": self.meters[0].protocol if self.meters else None,
        }

    # -- the inputs ----------------------------------------------------------------------------

    def connected(self, peer: str, host: str) -> list[Action]:
        """The modem connected from ``peer`` (``host``: its address)."""
        if not self._takes(Input.CONNECTED):
            return self._done()
        self.peer = peer
        self.state = S.IDENTIFYING
        self.stats.connections += 1
        if not self.settings.allow.allows(self.listener, host):
            self.stats.source_refused += 1
            self._log(
                "warn",
                "security: connection from {peer} on {listener} refused: not from a network "
                "this listener takes ([gprs] allow)",
                peer=self.peer,
                listener=self.listener,
                event="gprs_source_refused",
            )
            self._close("source network not allowed")
            return self._done()
        self._emit(StartTimer(Timer.IDENTIFY, self.settings.identify_timeout))
        self._emit(StartTimer(Timer.IDLE, self.settings.idle_timeout))
        self._log("debug", "modem connected from {peer} on {listener}", peer=self.peer,
                  listener=self.listener)
        return self._done()

    def data(self, data: bytes) -> list[Action]:
        """Bytes from the modem."""
        if not self._takes(Input.DATA):
            return self._done()
        self.bytes_in += len(data)
        self.heard = self.clock()
        if self.state is S.CLOSING:
            return self._done()
        self._emit(StartTimer(Timer.IDLE, self.settings.idle_timeout))
        if self.settings.heartbeats and self.state is not S.IDENTIFYING:
            data = self._strip_heartbeats(data)
            if not data:
                return self._done()
        match self.state:
            case S.IDENTIFYING:
                self._identify(data)
            case S.REGISTERING:
                self._keep_pending(data)
            case S.QUARANTINED:
                self._quarantined()
            case S.CONTESTED:
                self._hold(data)
            case S.PIPE:
                self._emit(ToPipe(data))
            case _:  # attached, waiting
                self._emit(ToHandler(data))
        return self._done()

    def timeout(self, timer: Timer) -> list[Action]:
        """``timer`` fired."""
        if not self._takes(_TIMEOUTS[timer]):
            return self._done()
        match timer:
            case Timer.IDENTIFY:
                self._not_identified()
            case Timer.IDLE:
                self._idle_expired()
            case Timer.CONTEST:
                self._contest_decide()
            case Timer.PIPE_WAIT:
                self._open_waiting_pipe()
        return self._done()

    def registered(self, meter: Meter) -> list[Action]:
        """The unknown modem's meter record is stored."""
        if self._takes(Input.REGISTERED):
            pending, self._pending = bytes(self._pending or b""), None
            self._attach([meter], pending)
        return self._done()

    def registration_failed(self, failure: Any) -> list[Action]:
        """The unknown modem's meter record could not be stored (``failure``)."""
        if self._takes(Input.REGISTRATION_FAILED):
            self._emit(Log("failure", "modem {modem} from {peer}: cannot register its meter; "
                           "closing", self.log_fields(), failure=failure))
            self._close("registration failed")
        return self._done()

    def pipe_requested(self, route: str, push_pending: bool) -> list[Action]:
        """A pull job for ``route`` asks for the socket; ``push_pending``: a push is under
        way on it (the job waits for it, at most PIPE_WAIT seconds)."""
        if not self._takes(Input.PIPE_REQUESTED):
            if self.state in (S.PIPE, S.WAITING):
                busy = self.pipe_route or "another job"
                self._emit(RefusePipe(f"modem {self.name} is busy with {busy}"))
            else:
                self._emit(RefusePipe(f"modem {self.name} is {self.shown_state}: no pull "
                                      "over it"))
            return self._done()
        if push_pending:
            self.state = S.WAITING
            self.waiting_route = route
            self._emit(StartTimer(Timer.PIPE_WAIT, PIPE_WAIT))
        else:
            self._open_pipe(route)
        return self._done()

    def push_finished(self) -> list[Action]:
        """No push is under way any more (state waiting): the job may have the socket."""
        if self._takes(Input.PUSH_FINISHED):
            self._emit(CancelTimer(Timer.PIPE_WAIT))
            self._open_waiting_pipe()
        return self._done()

    def pipe_released(self) -> list[Action]:
        """The job is done with the socket (or could not take it)."""
        if self._takes(Input.PIPE_RELEASED) and self.pipe_route is not None:
            self.pipe_route = None
            if self.state is S.PIPE:
                self.state = S.ATTACHED
            self._emit(ReleasePipe())
        return self._done()

    def replaced(self, new_peer: str) -> list[Action]:
        """The modem reconnected from ``new_peer``: this (stale, silent) session gives way."""
        if not self._takes(Input.REPLACED):
            return self._done()
        self.stats.replaced += 1
        self._log(
            "warn",
            "modem {modem} reconnected from {new_peer}: stale session from {peer}, silent "
            "{silent:.0f} s, closed",
            new_peer=new_peer,
            silent=self.silent_for(),
            event="gprs_session_replaced",
            **self.log_fields(),
        )
        self._lose_job(f"the modem reconnected from {new_peer}",
                       f"the modem reconnected from {new_peer}")
        self._emit(Unregister())
        self._close(f"replaced by a new session from {new_peer}")
        return self._done()

    def send(self, data: bytes) -> list[Action]:
        """Bytes for the modem (a pull job's requests)."""
        if self._takes(Input.SEND):
            self.bytes_out += len(data)
            self._emit(Send(data))
        return self._done()

    def close(self, why: str = "closed by fep") -> list[Action]:
        """Close now (fep's decision: policy, a decoder, stopping)."""
        if self._takes(Input.CLOSE):
            self._close(why)
        return self._done()

    def lost(self, reason: str) -> list[Action]:
        """The connection is gone (``reason``)."""
        if not self._takes(Input.LOST):
            return self._done()
        was = self.ended or f"{reason} ({self.shown_state})"
        if self.state is not S.CLOSING:
            self._cancel_timers()
        self.state = S.CLOSED
        self._lose_job(f"modem connection lost ({reason})", f"connection lost ({reason})")
        self._emit(Unregister())
        if self.meters:
            self._emit(Gone(tuple(self.meters)))
        if self.identity is not None or self.bytes_in:
            self._log(
                "info",
                "modem {modem} from {peer} gone, {why}: {bytes_in} bytes in, "
                "{bytes_out} out, {frames} pushes",
                limited=self.identity is None,
                why=was,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                frames=self.world.frames(),
                **self.log_fields(),
            )
        return self._done()

    # -- the table -----------------------------------------------------------------------------

    def _takes(self, what: Input) -> bool:
        """Whether the state takes ``what``; if not, the refusal is counted and logged."""
        self._out = []
        if self._replacing:
            self._replacing = _NONE_REPLACED
        if self.state in INPUTS[what]:
            return True
        self.stats.refused_inputs += 1
        self._log(
            "info",
            "modem {modem} from {peer}: {input} refused in state {state}",
            limited=True,
            kind=f"gprs_refused:{what.value}:{self.state.value}",
            input=what.value,
            state=self.state.value,
            event="gprs_input_refused",
            **self.log_fields(),
        )
        return False

    def _done(self) -> list[Action]:
        out, self._out = self._out, _NO_ACTIONS
        return out

    def _emit(self, action: Action) -> None:
        if self._out is _NO_ACTIONS:
            self._out = []
        self._out.append(action)

    def _log(self, level: str, format: str, *, limited: bool = False, **fields: Any) -> None:
        self._emit(Log(level, format, fields, limited=limited))

    def _close(self, why: str) -> None:
        if self.closing:
            return
        self.ended = f"{why} ({self.shown_state})"
        self.state = S.CLOSING
        self._cancel_timers()
        self._emit(Close())

    def _cancel_timers(self) -> None:
        for timer in Timer:
            self._emit(CancelTimer(timer))

    def _lose_job(self, pipe_why: str, wait_why: str) -> None:
        """The job holding or waiting for the socket loses it."""
        if self.pipe_route is not None:
            self.pipe_route = None
            self._emit(LosePipe(pipe_why))
        if self.waiting_route is not None:
            self.waiting_route = None
            self._emit(FailPipeWait(wait_why))

    # -- identification ------------------------------------------------------------------------

    def _strip_heartbeats(self, data: bytes) -> bytes:
        """Heartbeat packets at the start of a chunk (a modem sends each as a packet of its
        own) are counted and dropped."""
        stripped = True
        while stripped and data:
            stripped = False
            for beat in self.settings.heartbeats:
                if data.startswith(beat):
                    data = data[len(beat):]
                    self.heartbeats += 1
                    self.stats.heartbeats += 1
                    stripped = True
        return data

    def _identify(self, data: bytes) -> None:
        identifier = self._identifier
        if identifier is None:  # identified already (a state that identifies only once)
            return
        try:
            result = identifier.receive(data)
        except IdentificationError as e:
            self._identifier = None
            self.stats.unidentified += 1
            self.stats.garbage_bytes += identifier.received
            self._log("warn", "modem from {peer}: {error}; closing", limited=True,
                      peer=self.peer, error=str(e))
            self._close("no registration")
            return
        if result is None:
            return
        self._identifier = None
        self._emit(CancelTimer(Timer.IDENTIFY))
        self.garbage = result.garbage
        self.stats.garbage_bytes += result.garbage
        self.stats.identified += 1
        self.identity = result.identity
        self._emit(Identified())
        if result.garbage:
            self._log("info",
                      "modem {modem} from {peer}: {garbage} garbage bytes before its "
                      "registration", garbage=result.garbage, **self.log_fields())
        self._settle(result.data)

    def _not_identified(self) -> None:
        self.stats.unidentified += 1
        self._log(
            "warn",
            "modem from {peer} sent no registration within {timeout:.0f} s "
            "({received} bytes); closing",
            limited=True,
            peer=self.peer,
            timeout=self.settings.identify_timeout,
            received=self._identifier.received if self._identifier is not None else 0,
        )
        self._close("identify timeout")

    def _idle_expired(self) -> None:
        self.stats.idle_closed += 1
        self._log(
            "warn",
            "modem {modem} from {peer} silent for {timeout:.0f} s (half-open?); closing",
            timeout=self.settings.idle_timeout,
            **self.log_fields(),
        )
        if self.pipe_route is not None:
            self.pipe_route = None
            self._emit(LosePipe("the modem went silent (idle timeout)"))
        self._close("idle timeout")

    def _settle(self, data: bytes) -> None:
        """The identified modem: its meters, its proof, then the policy for its claim."""
        identity = self.identity
        assert identity is not None
        meters = self.world.resolve(identity)
        if not self._proven(meters):
            return
        if meters:
            self._attach(meters, data)
            return
        policy = self.settings.unknown
        if policy == "register" and identity.route() is not None:
            if self._contested(identity.unique(), data):
                return
            self.state = S.REGISTERING
            self._keep_pending(data)
            self._emit(Register())
        elif policy == "reject":
            self.stats.rejected += 1
            self._log("warn", "unknown modem {modem} from {peer} ({rule}) rejected",
                      rule=identity.rule, **self.log_fields())
            self._close("rejected: unknown")
        else:
            self._quarantine()

    # -- modem identity: proofs and conflicts --------------------------------------------------

    def _proven(self, meters: list[Meter]) -> bool:
        """Whether the modem proved what it claims: the secret its meters name (if any) in
        its registration, and a TLS client certificate (if it gave one) naming it. Not
        proven: counted, logged as a security event (never with the secret) and closed."""
        identity = self.identity
        assert identity is not None
        why = None
        if not proof_matches(identity.proof, self.world.secrets(meters)):
            why = "no secret" if identity.proof is None else "a wrong secret"
            why = f"its registration carries {why}"
        else:
            names = self.world.certificate_names()
            if names is not None and not certificate_names_modem(names, identity.keys):
                why = "its TLS client certificate names another modem"
        if why is None:
            return True
        self.stats.proof_failed += 1
        self._log(
            "warn",
            "security: modem {modem} from {peer} on {listener} did not prove its identity "
            "({why}); closing",
            why=why,
            listener=self.listener,
            event="gprs_proof_failed",
            **self.log_fields(),
        )
        self._close("identity not proven")
        return False

    def _holders(self, names: Sequence[str]) -> list[Holder]:
        return [h for h in self.world.holders(names) if h.id not in self._replacing]

    def _replace(self, incumbents: list[Holder]) -> None:
        if incumbents and not self._replacing:
            self._replacing = set()
        for incumbent in incumbents:
            assert isinstance(self._replacing, set)
            self._replacing.add(incumbent.id)
            self._emit(Replace(incumbent.id))

    def _contested(self, names: list[str], data: bytes) -> bool:
        """Whether a live session holds any of ``names``; if so the conflict policy takes
        over this session (it claims nothing now)."""
        incumbents = self._holders(names)
        if not incumbents:
            return False
        self._contest(incumbents, names, data)
        return True

    def _contest(self, incumbents: list[Holder], names: list[str], data: bytes) -> None:
        settings = self.settings
        self.stats.conflicts += 1
        now = self.clock()
        silent = min(now - i.heard for i in incumbents)
        for incumbent in incumbents:
            # The meter is the incumbent's: the newcomer has none of its own yet.
            self._log(
                "warn",
                "security: identity conflict: modem {modem} from {peer} on {listener} claims "
                "a name session {incumbent} from {incumbent_peer} holds (silent {silent:.0f} s,"
                " heartbeat window {window:g} s); policy {policy}",
                listener=self.listener,
                incumbent=incumbent.id,
                incumbent_peer=incumbent.peer,
                silent=float(now - incumbent.heard),
                window=settings.heartbeat_window,
                policy=settings.conflict,
                event="gprs_identity_conflict",
                **{**self.log_fields(), "meter": incumbent.meter, "route": incumbent.route,
                   "protocol": incumbent.protocol},
            )
        replace = settings.conflict == "replace-when-silent"
        if replace and silent >= settings.heartbeat_window:
            self._replace(incumbents)
            self._settle(data)
            return
        self._emit(Release())
        self.state = S.CONTESTED
        self.contest_names = list(names)
        self.contest_began = now
        self._held = bytearray(data[:MAX_HELD_BYTES] if replace else b"")
        if replace:
            # The probe: the incumbent's heartbeat window runs out, or it answers.
            delay = max(settings.heartbeat_window - silent, 0.0)
            self._emit(StartTimer(Timer.CONTEST, delay))
        else:
            self._emit(StartTimer(Timer.CONTEST, settings.conflict_quarantine))

    def _keep_pending(self, data: bytes) -> None:
        """Bytes of a modem whose meter record is being stored: kept for the meter's handler,
        bounded (storing takes milliseconds; a stranger streaming meanwhile is not buffered
        without end): what does not fit is dropped, counted and logged."""
        if self._pending is None:
            self._pending = bytearray()
        room = MAX_HELD_BYTES - len(self._pending)
        if room > 0:
            self._pending += data[:room]
        dropped = len(data) - max(room, 0)
        if dropped > 0:
            self.stats.unhandled_bytes += dropped
            self._log("warn", "modem {modem} from {peer}: {dropped} bytes dropped while its "
                      "meter registers (more than {limit} held)", limited=True,
                      dropped=dropped, limit=MAX_HELD_BYTES, **self.log_fields())

    def _hold(self, data: bytes) -> None:
        """A contested session's bytes: kept (bounded) while it may still be let in."""
        if self.settings.conflict == "replace-when-silent":
            if self._held is None:
                self._held = bytearray()
            room = MAX_HELD_BYTES - len(self._held)
            if room > 0:
                self._held += data[:room]

    def _contest_decide(self) -> None:
        """The contest timer: under keep the newcomer is closed; under replace-when-silent
        the incumbents' heartbeat window is over: those that answered keep the name (this
        session is closed), silent ones are replaced."""
        if self.settings.conflict != "replace-when-silent":
            self._contest_lost()
            return
        incumbents = self._holders(self.contest_names)
        # Answered: heard since the conflict began. (Not "silent_for() < window" now: in
        # float clock time this call can come a hair before the window's end.)
        if any(i.heard > self.contest_began for i in incumbents):
            self._contest_lost()
            return
        self._replace(incumbents)
        held, self._held = bytes(self._held or b""), None
        self._settle(held)

    def _contest_lost(self) -> None:
        self.stats.conflicts_closed += 1
        self._log(
            "warn",
            "security: modem {modem} from {peer} closed: its name is held by a live "
            "session (policy {policy})",
            policy=self.settings.conflict,
            event="gprs_identity_conflict_closed",
            **self.log_fields(),
        )
        self._close("identity conflict: the name is held by a live session")

    # -- claims: quarantine, attach ------------------------------------------------------------

    def _quarantine(self) -> None:
        assert self.identity is not None
        if self._contested(self.identity.unique(), b""):
            return
        self.state = S.QUARANTINED
        self.stats.quarantined += 1
        self._emit(Claim(tuple(self.identity.unique())))
        self._log(
            "warn",
            "unknown modem {modem} from {peer} ({identity}) quarantined: kept connected, "
            "its data dropped until a meter names it",
            identity=self.identity.as_dict(),
            **self.log_fields(),
        )

    def _quarantined(self) -> None:
        """Data from a quarantined modem is dropped; a meter added for it since lets it in."""
        assert self.identity is not None
        meters = self.world.resolve(self.identity)
        if meters:
            self._log("info", "quarantined modem {modem} now known", **self.log_fields())
            self._attach(meters, b"")

    def _attach(self, meters: list[Meter], data: bytes) -> None:
        assert self.identity is not None
        names = list(self.identity.unique())
        for meter in meters:
            names += self.world.route_names(meter.route)
        if self._contested(names, data):
            return
        self.meters = list(meters)
        self.state = S.ATTACHED
        self._emit(Claim(tuple(names)))
        self._log(
            "info",
            "modem {modem} from {peer} attached to {meters} ({rule})",
            meters=", ".join(m.id for m in meters),
            rule=self.identity.rule,
            **self.log_fields(),
        )
        self._emit(Attach(tuple(meters)))
        if data:
            self._emit(ToHandler(data))

    # -- pipe ----------------------------------------------------------------------------------

    def _open_pipe(self, route: str) -> None:
        self.state = S.PIPE
        self.pipe_route = route
        self._emit(OpenPipe(route))

    def _open_waiting_pipe(self) -> None:
        route, self.waiting_route = self.waiting_route, None
        assert route is not None
        self._open_pipe(route)
