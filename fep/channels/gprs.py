"""GPRS/3G/4G modems that dial in: listeners, identification, the live session registry,
push decoding by the meter's protocol and pull jobs over the same socket (transparent pipe).

A modem connects to a listener (plain TCP or TLS, any Twisted server endpoint) and says who
it is (fep.channels.identify). A known modem attaches to its meters (routes ``gprs:KEY=VALUE``
or the meter list's serial numbers and system titles); an unknown one is registered,
quarantined or rejected by policy. While attached, what the modem sends is decoded by its
meter's push handler; a pull job for a ``gprs:`` route borrows the socket (one job at a
time), and pushes arriving meanwhile are told from answers by the meter protocol and stored
all the same. Silence longer than the idle timeout closes the session (a half-open
connection never sends a FIN); a modem that reconnects replaces its stale session.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from heapq import heapify, heappop, heappush
from itertools import count
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.channels.gprs_session import (
    MAX_HELD_BYTES,
    PIPE_WAIT,
    Action,
    Attach,
    CancelTimer,
    Claim,
    Close,
    FailPipeWait,
    Gone,
    GprsStats,
    Holder,
    Identified,
    Log,
    LosePipe,
    OpenPipe,
    RefusePipe,
    Register,
    Release,
    ReleasePipe,
    Replace,
    Send,
    SessionMachine,
    SessionState,
    StartTimer,
    Timer,
    ToHandler,
    ToPipe,
    Unregister,
)
from fep.channels.identify import (
    DEFAULT_REGISTRATION,
    GW3761_KEY,
    RULE_NAMES,
    Identity,
    make_rules,
)
from fep.channels.modem_identity import (
    CONFLICT_POLICIES,
    SourceNetworks,
    certificate_names,
    modem_secret,
)
from fep.channels.routes import Route, parse_route
from fep.errors import ChannelError, ConfigError, FepError, RouteError
from fep.interfaces import (
    IModemSessionObserver,
    IPushChannel,
    IPushHandler,
    IPushProtocol,
    IRecordSink,
    peer_identified,
)
from fep.model import Meter, Record, utcnow
from fep.protocols.gw3761.frames import Address
from fep.protocols.registry import meter_protocol
from fep.ratelog import RateLimitedLog

log = Logger(namespace="fep.channels.gprs")

__all__ = [
    "MAX_HELD_BYTES",
    "PIPE_WAIT",
    "GprsChannel",
    "GprsEndpoint",
    "GprsSettings",
    "GprsStats",
    "ModemSession",
    "SessionInfo",
    "SessionRegistry",
    "gprs_settings",
    "listener_names",
    "parse_heartbeats",
]

POLICIES = ("register", "quarantine", "reject")


def parse_heartbeats(text: str) -> tuple[bytes, ...]:
    """Heartbeat packets from config: items separated by spaces, ``hex:A5FE`` for bytes,
    anything else ASCII with ``\\r``, ``\\n``, ``\\xNN`` escapes. ValueError when bad."""
    out: list[bytes] = []
    for item in text.split():
        if item.lower().startswith("hex:"):
            raw = bytes.fromhex(item[4:])
        else:
            raw = item.encode("ascii").decode("unicode_escape").encode("latin-1")
        if not raw:
            raise ValueError(f"empty heartbeat {item!r}")
        out.append(raw)
    return tuple(out)


@attrs.frozen
class GprsSettings:
    """How inbound modem sessions are identified, kept and timed out."""

    rules: tuple[str, ...] = RULE_NAMES
    registration: str = DEFAULT_REGISTRATION
    unknown: str = "quarantine"
    register_protocol: str = "dlms"
    identify_timeout: float = 60.0
    idle_timeout: float = 300.0
    heartbeats: tuple[bytes, ...] = ()
    max_garbage: int = 4096
    # Modem identity (fep.channels.modem_identity): what happens when a connection claims a
    # name a live session holds, how long a session may be silent and still count as
    # answering, how long a contested newcomer is held before it is closed, and the source
    # networks each listener takes.
    conflict: str = "keep"
    heartbeat_window: float = 120.0
    conflict_quarantine: float = 30.0
    allow: SourceNetworks = attrs.field(factory=SourceNetworks)

    def __attrs_post_init__(self) -> None:
        if self.conflict not in CONFLICT_POLICIES:
            raise ConfigError(
                f"identity-conflict policy must be one of {', '.join(CONFLICT_POLICIES)}, "
                f"not {self.conflict!r}",
                section="gprs",
                key="conflict",
            )
        if self.unknown not in POLICIES:
            raise ConfigError(
                f"unknown-modem policy must be one of {', '.join(POLICIES)}, not "
                f"{self.unknown!r}",
                section="gprs",
                key="unknown",
            )
        try:
            make_rules(self.rules)
        except ValueError as e:
            raise ConfigError(str(e), section="gprs", key="identify") from None
        try:
            make_rules(["ascii"], self.registration)
        except ValueError as e:
            raise ConfigError(str(e), section="gprs", key="registration") from None


def gprs_settings(section: Any) -> GprsSettings:
    """GprsSettings from the config's [gprs] section (fep.channels.settings.GprsSection, its
    values typed at load); ConfigError names the key."""
    if section.register_protocol:
        try:
            meter_protocol(section.register_protocol)
        except ConfigError as e:
            raise ConfigError(e.message, section="gprs", key="register_protocol") from None
    return GprsSettings(
        rules=section.identify,
        registration=section.registration,
        unknown=section.unknown,
        register_protocol=section.register_protocol,
        identify_timeout=section.identify_timeout,
        idle_timeout=section.idle_timeout,
        heartbeats=section.heartbeat,
        max_garbage=section.max_garbage,
        conflict=section.conflict,
        heartbeat_window=section.heartbeat_window,
        conflict_quarantine=section.conflict_quarantine,
        allow=section.allow,
    )


@attrs.frozen
class SessionInfo:
    """One live modem session as the operator sees it (a snapshot)."""

    id: int
    modem: str | None
    identity: tuple[tuple[str, str], ...]
    meters: tuple[str, ...]
    state: str
    peer: str
    listener: str
    since: datetime
    identified: datetime | None
    last_seen: datetime
    last_frame: datetime | None
    bytes_in: int
    bytes_out: int
    frames: int
    garbage: int
    heartbeats: int
    job: str | None

    @property
    def meter(self) -> str | None:
        return self.meters[0] if self.meters else None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: times in ISO 8601."""
        out: dict[str, object] = {}
        for field in attrs.fields(SessionInfo):
            value = getattr(self, field.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif field.name == "identity":
                value = dict(value)
            elif field.name == "meters":
                value = list(value)
            out[field.name] = value
        return out


class SessionRegistry:
    """The live modem sessions: every connection from accept to close, and the names
    (``imei=...``, ``serial=...``) each identified one answers to."""

    def __init__(self) -> None:
        self._sessions: dict[int, ModemSession] = {}
        self._by_name: dict[str, ModemSession] = {}
        self._next_id = 1

    def new_id(self) -> int:
        n = self._next_id
        self._next_id += 1
        return n

    def get(self, session_id: int) -> ModemSession | None:
        return self._sessions.get(session_id)

    def add(self, session: ModemSession) -> None:
        self._sessions[session.id] = session

    def remove(self, session: ModemSession) -> None:
        self._sessions.pop(session.id, None)
        for name in session.names:
            if self._by_name.get(name) is session:
                del self._by_name[name]
        session.names = []

    def claim(self, session: ModemSession, names: Iterable[str]) -> list[ModemSession]:
        """Give ``names`` to ``session``; the other sessions that held any of them (stale
        sessions of a modem that reconnected) are returned, each once."""
        stale: list[ModemSession] = []
        for name in names:
            held = self._by_name.get(name)
            if held is not None and held is not session and held not in stale:
                stale.append(held)
            self._by_name[name] = session
            if name not in session.names:
                session.names.append(name)
        return stale

    def holders(self, names: Iterable[str], claimant: ModemSession) -> list[ModemSession]:
        """The live sessions other than ``claimant`` that hold any of ``names``, each once."""
        found: list[ModemSession] = []
        for name in names:
            held = self._by_name.get(name)
            if held is not None and held is not claimant and held not in found:
                found.append(held)
        return found

    def release(self, session: ModemSession) -> None:
        """``session`` gives up its names and stays listed."""
        for name in session.names:
            if self._by_name.get(name) is session:
                del self._by_name[name]
        session.names = []

    def find(self, names: Iterable[str]) -> ModemSession | None:
        for name in names:
            session = self._by_name.get(name)
            if session is not None:
                return session
        return None

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Any:
        return iter(list(self._sessions.values()))

    def sessions(self) -> list[SessionInfo]:
        """Every live session, oldest first."""
        return [s.info() for s in sorted(self._sessions.values(), key=lambda s: s.id)]


@implementer(IRecordSink, IPushChannel)
class _Pushes:
    """What a session's push handler and a pipe's meter session submit through: the sink,
    with the session's frame count and last-frame time kept up to date."""

    __slots__ = ("session", "sink")

    def __init__(self, session: ModemSession, sink: IRecordSink) -> None:
        self.session = session
        self.sink = sink

    def submit(self, records: Sequence[Record]) -> Deferred[None]:
        return self.sink.submit(records)

    def pushed(self, records: Sequence[Record]) -> Deferred[None]:
        self.session.frames += 1
        self.session.last_frame = utcnow()
        self.session.channel.stats.pipe_pushes += 1
        return self.sink.submit(records)

    def unconsumed(self, data: bytes) -> None:
        self.session.take_back(None, data)


@implementer(ITransport, IPushChannel)
class _Pipe:
    """The transport a pull job's meter session gets: writes go to the modem, closing
    ends the job's use of the socket (the modem stays connected), and pushes the session
    tells from its answers are stored through ``pushed``."""

    def __init__(self, session: ModemSession, protocol: IProtocol, route: str) -> None:
        self.session = session
        self.protocol = protocol
        self.route = route
        self.disconnecting = False
        self.connected = True
        # What the job's session gave back undecoded: the push decoder's once it ends.
        self.returned = bytearray()

    def write(self, data: bytes) -> None:
        if not self.disconnecting:
            self.session.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.session.end_pipe(self, None)

    def abortConnection(self) -> None:
        self.session.end_pipe(self, None)

    def getPeer(self) -> Any:
        return self.session.transport.getPeer()

    def getHost(self) -> Any:
        return self.session.transport.getHost()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def pushed(self, records: Sequence[Record]) -> Deferred[None]:
        return self.session.pushes.pushed(records)

    def unconsumed(self, data: bytes) -> None:
        self.session.take_back(self, data)


class _World:
    """What a session's machine looks up (SessionWorld), answered from the channel."""

    __slots__ = ("session",)

    def __init__(self, session: ModemSession) -> None:
        self.session = session

    def resolve(self, identity: Identity) -> list[Meter]:
        return self.session.channel.resolve(identity)

    def secrets(self, meters: Sequence[Meter]) -> list[str]:
        secret_for = self.session.channel.secret_for
        return [s for s in (secret_for(m) for m in meters) if s]

    def certificate_names(self) -> set[str] | None:
        return certificate_names(self.session.transport)

    def holders(self, names: Sequence[str]) -> list[Holder]:
        out = []
        for held in self.session.channel.registry.holders(names, self.session):
            fields = held.machine.log_fields()
            out.append(Holder(held.id, held.peer, held.machine.heard, fields["meter"],
                              fields["route"], fields["protocol"]))
        return out

    def route_names(self, route: str) -> list[str]:
        try:
            params = parse_route(route).params()
        except RouteError:
            return []
        if not route.startswith("gprs:"):
            return []
        return [f"{k}={v}" for k, v in params.items()]

    def frames(self) -> int:
        return self.session.info().frames


class ModemSession(Protocol):
    """One inbound modem connection, from accept to close: the Twisted adapter of its
    ``SessionMachine`` (fep.channels.gprs_session), which decides; this protocol feeds it
    bytes, timeouts and the pipe's events and performs the actions it returns (writes,
    timers, the registry, the push decoder, the pull job's pipe, logs).

    States (``state``, a ``SessionState``): ``identifying``, ``registering``, ``attached``,
    ``quarantined``, ``contested``, ``waiting`` (a job waits for a push under way),
    ``pipe``, ``closing``, ``closed``.
    """

    transport: Any

    def __init__(self, channel: GprsChannel, listener: str) -> None:
        self.channel = channel
        self.listener = listener
        self.id = channel.registry.new_id()
        # The names (imei=..., serial=...) this session holds in the registry.
        self.names: list[str] = []
        self.handler: IPushHandler | None = None
        self.pipe: _Pipe | None = None
        self.pushes = _Pushes(self, channel.sink)
        self.machine = SessionMachine(
            channel.settings,
            channel.rules,
            channel.stats,
            _World(self),
            clock=channel.clock,
            listener=listener,
            session_id=self.id,
        )
        self.since = utcnow()
        self.identified: datetime | None = None
        self.last_seen = self.since
        self.last_frame: datetime | None = None
        self.frames = 0
        # The identify, contest and pipe-wait timers (short-lived; made when one starts).
        # The idle timer is no DelayedCall of its own: a deadline in the channel's
        # IdleDeadlines (one reactor call for all the sessions), pushed back by bytes
        # without any reactor work.
        self._timers: dict[Timer, IDelayedCall] | None = None
        self._idle_at: float | None = None
        self._idle_entry: tuple[float, int, ModemSession] | None = None
        # The pull job asking for the socket (until its pipe opens or it fails).
        self._job: tuple[Deferred[IProtocol], IProtocolFactory, str] | None = None

    # -- the machine's view --------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self.machine.state

    @property
    def identity(self) -> Identity | None:
        return self.machine.identity

    @property
    def meters(self) -> list[Meter]:
        return self.machine.meters

    @property
    def peer(self) -> str:
        return self.machine.peer

    @property
    def name(self) -> str:
        return self.machine.name

    @property
    def bytes_in(self) -> int:
        return self.machine.bytes_in

    @property
    def bytes_out(self) -> int:
        return self.machine.bytes_out

    @property
    def garbage(self) -> int:
        return self.machine.garbage

    @property
    def heartbeats(self) -> int:
        return self.machine.heartbeats

    @property
    def _contest_timer(self) -> IDelayedCall | None:
        return self._timers.get(Timer.CONTEST) if self._timers else None

    def silent_for(self) -> float:
        """Seconds since this session last received a byte (heartbeats included)."""
        return self.machine.silent_for()

    # -- what the operator sees ---------------------------------------------------------------

    def info(self) -> SessionInfo:
        return SessionInfo(
            id=self.id,
            modem=self.identity.name if self.identity is not None else None,
            identity=self.identity.keys if self.identity is not None else (),
            meters=tuple(m.id for m in self.meters),
            state="pipe" if self.pipe is not None else self.machine.shown_state,
            peer=self.peer,
            listener=self.listener,
            since=self.since,
            identified=self.identified,
            last_seen=self.last_seen,
            last_frame=self.last_frame,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            frames=self.frames + (self.handler.frames if self.handler is not None else 0),
            garbage=self.garbage,
            heartbeats=self.heartbeats,
            job=self.pipe.route if self.pipe is not None else None,
        )

    # -- Protocol: the inputs ------------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        keepalive = getattr(self.transport, "setTcpKeepAlive", None)
        if keepalive is not None:
            try:
                keepalive(True)
            except OSError:
                pass
        self.channel.registry.add(self)
        self._run(self.machine.connected(
            f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}",
            str(getattr(peer, "host", "?")),
        ))

    def dataReceived(self, data: bytes) -> None:
        self.last_seen = utcnow()
        self._run(self.machine.data(data))

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        # A push decoder that counts what the end cut short (DLMS: HDLC segments left open).
        ended = getattr(self.handler, "connection_lost", None)
        if callable(ended):
            ended()
        self._run(self.machine.lost(reason.getErrorMessage()))

    def write(self, data: bytes) -> None:
        self._run(self.machine.send(data))

    def drop(self, why: str = "closed by fep") -> None:
        """Close now: abort (a half-open peer would never let a graceful close finish)."""
        self._run(self.machine.close(why))

    def replaced_by(self, newer: ModemSession) -> None:
        """The modem reconnected: this (stale, silent) session gives way to ``newer``."""
        self._run(self.machine.replaced(newer.peer))

    def _timeout(self, timer: Timer) -> None:
        if self._timers:
            self._timers.pop(timer, None)
            if not self._timers:
                self._timers = None
        self._run(self.machine.timeout(timer))

    def _idle_timeout(self) -> None:
        """The idle deadline passed with no byte since (IdleDeadlines calls this)."""
        self._run(self.machine.timeout(Timer.IDLE))

    def _registered(self, meter: Meter) -> None:
        self._run(self.machine.registered(meter))

    def _not_registered(self, failure: Failure) -> None:
        self._run(self.machine.registration_failed(failure))

    # -- the actions ---------------------------------------------------------------------------

    def _run(self, actions: list[Action]) -> None:
        """Perform the machine's actions in order."""
        for action in actions:
            match action:
                case Log():
                    self._log(action)
                case ToHandler(data=data):
                    self._to_handler(data)
                case ToPipe(data=data):
                    if self.pipe is not None:
                        self.pipe.protocol.dataReceived(data)
                case StartTimer(timer=timer, delay=delay):
                    if timer is Timer.IDLE:
                        self.channel.idle.arm(self, delay)
                        continue
                    if self._timers is None:
                        self._timers = {}
                    running = self._timers.get(timer)
                    if running is not None and running.active():
                        running.reset(delay)
                    else:
                        self._timers[timer] = self.channel.reactor.callLater(
                            delay, self._timeout, timer)
                case CancelTimer(timer=timer):
                    if timer is Timer.IDLE:
                        self.channel.idle.disarm(self)
                        continue
                    running = self._timers.pop(timer, None) if self._timers else None
                    if running is not None and running.active():
                        running.cancel()
                    if not self._timers:
                        self._timers = None  # an idle session keeps no empty dict
                case Send(data=data):
                    if self.transport is not None:
                        self.transport.write(data)
                case Close():
                    if self.transport is not None:
                        abort = getattr(self.transport, "abortConnection", None)
                        (abort or self.transport.loseConnection)()
                case Identified():
                    self.identified = utcnow()
                    peer_identified(self.transport)
                case Register():
                    d = self.channel.register(self)
                    d.addCallbacks(self._registered, self._not_registered)
                case Claim(names=names):
                    for stale in self.channel.registry.claim(self, names):
                        stale.replaced_by(self)
                case Release():
                    self.channel.registry.release(self)
                case Unregister():
                    self.channel.registry.remove(self)
                case Replace(session=session_id):
                    incumbent = self.channel.registry.get(session_id)
                    if incumbent is not None:
                        incumbent.replaced_by(self)
                case Attach(meters=meters):
                    self.handler = self.channel.push_handler(meters[0], self)
                    self.channel.tell("modem_attached", self.meters)
                case OpenPipe():
                    self._open_pipe()
                case ReleasePipe():
                    self._release_pipe()
                case LosePipe(why=why):
                    self._lose_pipe(why)
                case FailPipeWait(why=why):
                    self._fail_job(why)
                case RefusePipe():
                    pass  # open_pipe answers the job
                case Gone(meters=meters):
                    self.channel.tell("modem_gone", list(meters))

    def _log(self, action: Log) -> None:
        if action.level == "failure":
            log.failure(action.format, action.failure, **action.fields)
        elif action.limited:
            getattr(self.channel.bad_input, action.level)(action.format, **action.fields)
        else:
            getattr(log, action.level)(action.format, **action.fields)

    def _to_handler(self, data: bytes) -> None:
        if self.handler is None:
            self.channel.stats.unhandled_bytes += len(data)
            return
        before = self.handler.frames
        self.handler.data_received(data)
        if self.handler.frames != before:
            self.last_frame = utcnow()
        if (self.machine.state is SessionState.WAITING and self.handler is not None
                and not self.handler.pending()):
            self._run(self.machine.push_finished())

    # -- pipe mode ------------------------------------------------------------------------------

    def open_pipe(self, factory: IProtocolFactory, route: str) -> Deferred[IProtocol]:
        """Lend the socket to one pull job: the protocol ``factory`` builds gets the modem's
        bytes until it closes its transport. A push under way is let finish first (at most
        PIPE_WAIT seconds, then its bytes go to the job's decoder). ChannelError when the
        modem cannot serve."""
        pending = self.handler is not None and bool(self.handler.pending())
        actions = self.machine.pipe_requested(route, pending)
        refused = [a for a in actions if isinstance(a, RefusePipe)]
        if refused:
            self._run(actions)
            return fail(ChannelError(refused[0].why, route=route))
        d: Deferred[IProtocol] = Deferred()
        self._job = (d, factory, route)
        self._run(actions)
        return d

    def _open_pipe(self) -> None:
        job, self._job = self._job, None
        if job is None:
            return
        d, factory, route = job
        try:
            protocol = self._start_pipe(factory, route)
        except ChannelError as e:
            self._run(self.machine.pipe_released())
            d.errback(Failure(e))
            return
        d.callback(protocol)

    def _fail_job(self, why: str) -> None:
        job, self._job = self._job, None
        if job is not None:
            d, _, route = job
            d.errback(Failure(ChannelError(f"modem {self.name}: {why}", route=route)))

    def _start_pipe(self, factory: IProtocolFactory, route: str) -> IProtocol:
        protocol = factory.buildProtocol(self.transport.getPeer())
        if protocol is None:
            raise ChannelError("the session refused the connection", route=route)
        pipe = _Pipe(self, protocol, route)
        self.pipe = pipe
        self.channel.stats.pipes += 1
        leftover = self.handler.take_buffered() if self.handler is not None else b""
        log.debug("modem {modem}: pull job {job} takes the socket", job=route,
                  **self.machine.log_fields())
        protocol.makeConnection(pipe)
        if leftover and self.pipe is pipe:
            protocol.dataReceived(leftover)
        return protocol

    def take_back(self, pipe: _Pipe | None, data: bytes) -> None:
        """Bytes a job's meter session did not use (``pipe``: its pipe): while the pipe is
        lent they wait for the fresh push decoder it gets back, else the decoder has them
        now; with the modem gone (or another job on it) they are counted as unhandled."""
        if not data:
            return
        if pipe is not None and self.pipe is pipe:
            pipe.returned += data
        elif self.pipe is None and self.machine.state is SessionState.ATTACHED:
            self._to_handler(data)
        else:
            self.channel.stats.unhandled_bytes += len(data)
            log.info("modem {modem}: {count} bytes a pull job left dropped ({state})",
                     count=len(data), state=self.machine.shown_state,
                     **self.machine.log_fields())

    def end_pipe(self, pipe: _Pipe, reason: str | None) -> None:
        """The job is done with the socket: pushes go to the push handler again."""
        if self.pipe is not pipe:
            return
        self._run(self.machine.pipe_released())

    def _release_pipe(self) -> None:
        pipe, self.pipe = self.pipe, None
        if pipe is None:
            return
        pipe.disconnecting = True
        pipe.connected = False
        if self.meters and self.handler is not None:
            # A fresh decoder: the job's decoder had the stream meanwhile.
            self.handler = self.channel.push_handler(self.meters[0], self, keep=self.handler)
        failure = Failure(ConnectionDone("the pull job released the modem"))
        self.channel.reactor.callLater(0, pipe.protocol.connectionLost, failure)
        # What the job read but did not use (a push begun after its last answer) first.
        returned, pipe.returned = bytes(pipe.returned), bytearray()
        if returned:
            self._to_handler(returned)

    def _lose_pipe(self, why: str) -> None:
        pipe, self.pipe = self.pipe, None
        if pipe is None:
            return
        pipe.disconnecting = True
        pipe.connected = False
        self.channel.reactor.callLater(
            0, pipe.protocol.connectionLost, Failure(ConnectionLost(why))
        )


class IdleDeadlines:
    """The idle timeouts of every session of a channel, on one reactor call.

    A session's deadline (``ModemSession._idle_at``) moves later with each byte it receives
    at the cost of a float: the heap keeps an entry per armed session at the deadline it had
    when the entry was made, and the one reactor call runs at the earliest entry. An entry
    that comes due is checked against the session's deadline now: later (bytes came since),
    it goes back in at that deadline; passed, the session's idle timeout fires; disarmed or
    superseded, it is dropped. An idle session costs one heap entry and no CPU until its
    deadline; entries of sessions disarmed meanwhile are swept when they outnumber the live
    ones."""

    def __init__(self, reactor: IReactorTime) -> None:
        self.reactor = reactor
        self._heap: list[tuple[float, int, ModemSession]] = []
        self._armed = 0
        # Ties in time are broken by the order entries were made (never by session).
        self._order = count()
        self._call: IDelayedCall | None = None

    def __len__(self) -> int:
        """Sessions armed now."""
        return self._armed

    def arm(self, session: ModemSession, delay: float) -> None:
        """(Re)start ``session``'s idle timeout: ``delay`` seconds from now."""
        at = self.reactor.seconds() + delay
        if session._idle_at is None:
            self._armed += 1
        session._idle_at = at
        entry = session._idle_entry
        if entry is not None and entry[0] <= at:
            return  # the entry comes due first and finds the later deadline
        entry = (at, next(self._order), session)
        session._idle_entry = entry
        heappush(self._heap, entry)
        self._schedule()

    def disarm(self, session: ModemSession) -> None:
        if session._idle_at is None:
            return
        self._armed -= 1
        session._idle_at = None
        session._idle_entry = None
        heap = self._heap
        if not self._armed:
            # No session left to time out: no entry, no reactor call.
            heap.clear()
            self._schedule()
        elif len(heap) > 2 * self._armed + 64:
            # Mostly entries of sessions gone: keep the live ones only.
            self._heap = [e for e in heap if e[2]._idle_entry is e]
            heapify(self._heap)
            self._schedule()

    def _schedule(self) -> None:
        heap = self._heap
        call = self._call
        if not heap:
            if call is not None and call.active():
                call.cancel()
            self._call = None
            return
        first = heap[0][0]
        if call is not None and call.active():
            if call.getTime() <= first:
                return  # runs first and reschedules for the rest
            call.cancel()
        self._call = self.reactor.callLater(
            max(first - self.reactor.seconds(), 0.0), self._due)

    def _due(self) -> None:
        self._call = None
        heap = self._heap
        now = self.reactor.seconds()
        due: list[ModemSession] = []
        while heap and heap[0][0] <= now:
            entry = heappop(heap)
            session = entry[2]
            if session._idle_entry is not entry:
                continue  # disarmed, or superseded by an earlier entry
            at = session._idle_at
            assert at is not None
            if at > now:
                entry = (at, next(self._order), session)
                session._idle_entry = entry
                heappush(heap, entry)
                continue
            session._idle_at = None
            session._idle_entry = None
            self._armed -= 1
            due.append(session)
        self._schedule()
        for session in due:
            session._idle_timeout()


class _ListenerFactory(ServerFactory):
    noisy = False

    def __init__(self, channel: GprsChannel, listener: str) -> None:
        self.channel = channel
        self.listener = listener

    def buildProtocol(self, addr: Any) -> ModemSession:
        session = ModemSession(self.channel, self.listener)
        session.factory = self
        return session


@implementer(IStreamClientEndpoint)
class GprsEndpoint:
    """The endpoint of a ``gprs:KEY=VALUE`` route: the connected modem's socket, lent to one
    job (transparent pipe); fails at once when the modem is not connected."""

    def __init__(self, channel: GprsChannel, route: Route) -> None:
        self.channel = channel
        self.route = route
        self.names = [f"{k}={v}" for k, v in route.params().items()]
        # The session the job was planned with (made when its attempt starts): every
        # connect of this endpoint must find that same session at the name, so a meter's
        # password never goes to a session that took the name since. No session then: the
        # first connect pins the one it finds.
        planned = channel.registry.find(self.names)
        self.planned: int | None = planned.id if planned is not None else None
        self._planned_peer = planned.peer if planned is not None else None

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        session = self.channel.registry.find(self.names)
        if session is None or session.machine.closing:
            return fail(
                ChannelError(
                    f"modem {' '.join(self.names)} is not connected (no GPRS session)",
                    route=self.route.text,
                )
            )
        if self.planned is None:
            self.planned, self._planned_peer = session.id, session.peer
        elif session.id != self.planned:
            meters = ", ".join(m.id for m in self.channel.directory.by_modem(*self.names))
            self.channel.stats.changed_sessions += 1
            log.warn(
                "security: job for {meter} refused: the session at {modem} changed since the "
                "job was planned (session {planned} from {planned_peer}, now {now} from "
                "{peer}); nothing sent",
                meter=meters or None,
                route=self.route.text,
                modem=" ".join(self.names),
                planned=self.planned,
                planned_peer=self._planned_peer,
                now=session.id,
                peer=session.peer,
                event="gprs_session_changed",
            )
            return fail(
                ChannelError(
                    f"meter {meters or '?'}: the GPRS session of modem {' '.join(self.names)} "
                    f"changed since the job was planned (session {self.planned} from "
                    f"{self._planned_peer}, now {session.id} from {session.peer}): no meter "
                    "session over it",
                    route=self.route.text,
                )
            )
        return session.open_pipe(protocolFactory, self.route.text)


class GprsChannel:
    """The GPRS channel of one fep node: its listeners' sessions, the registry, the policy
    for unknown modems and the ``gprs:`` routes' endpoints."""

    def __init__(
        self,
        reactor: IReactorTime,
        settings: GprsSettings,
        *,
        sink: IRecordSink,
        directory: Any,
        store: Any = None,
        counters: Any = None,
        protocol_for: Callable[[str], Any] = meter_protocol,
        secret_for: Callable[[Meter], str | None] = modem_secret,
    ) -> None:
        self.reactor = reactor
        # The sessions' clock: one bound method for all of them.
        self.clock = reactor.seconds
        # The secret a meter's modem proves itself with (modem_identity.modem_secret).
        self.secret_for = secret_for
        self.settings = settings
        self.rules = make_rules(settings.rules, settings.registration)
        self.sink = sink
        self.directory = directory
        self.store = store
        self.counters = counters
        self.protocol_for = protocol_for
        self.registry = SessionRegistry()
        self.stats = GprsStats()
        # The sessions' idle timeouts: one reactor call for all of them.
        self.idle = IdleDeadlines(reactor)
        self.bad_input = RateLimitedLog(log, reactor)  # strangers' junk: rate-limited logs
        # Told of sessions attaching and ending and of meters registered (the collection
        # engine's session homes and wake-up).
        self.observers: list[IModemSessionObserver] = []

    def factory(self, listener: str) -> ServerFactory:
        """The server factory for one listener (``listener`` names it for the operator)."""
        return _ListenerFactory(self, listener)

    def endpoint_for(self, route: Route) -> IStreamClientEndpoint:
        if not route.params():
            raise RouteError(
                f"route {route.text!r}: a gprs route names its modem, e.g. "
                "gprs:imei=356938035643809 or gprs:serial=KFM1234",
                route=route.text,
            )
        return GprsEndpoint(self, route)

    def sessions(self) -> list[SessionInfo]:
        return self.registry.sessions()

    def is_connected(self, route: str) -> bool:
        """Whether the modem a ``gprs:`` route names has an attached session here now."""
        try:
            params = parse_route(route).params()
        except RouteError:
            return False
        session = self.registry.find(f"{k}={v}" for k, v in params.items())
        return session is not None and session.machine.serving

    def tell(self, event: str, *args: Any) -> None:
        """Call ``event`` on every observer; an observer's failure is logged, not raised."""
        for observer in list(self.observers):
            try:
                getattr(observer, event)(*args)
            except Exception:
                log.failure("GPRS session observer {observer} failed on {event}",
                            observer=observer, event=event)

    def close_all(self) -> None:
        for session in self.registry:
            session.drop("fep stopping")

    # -- who is it ----------------------------------------------------------------------------

    def resolve(self, identity: Identity) -> list[Meter]:
        """The meters of the modem with this identity: those whose ``gprs:`` route names
        any of its keys, else the concentrator (protocol gw3761) at the address its login
        gave, else the meter whose system title, serial number or id it gave."""
        names = [f"{k}={v}" for k, v in identity.keys]
        meters: list[Meter] = list(self.directory.by_modem(*names))
        if meters:
            return meters
        address = identity.get(GW3761_KEY)
        if address:
            return concentrators_at(self.directory.all(), address)
        title = identity.get("system_title")
        if title:
            found = self.directory.by_system_title(bytes.fromhex(title))
            if found is not None:
                return [found]
        found = self.directory.identify(
            identity.get("serial"), identity.get("ldn"), identity.get("ident")
        )
        return [found] if found is not None else []

    def register(self, session: ModemSession) -> Deferred[Meter]:
        """Automated meter registration: a meter record made from what the modem said,
        stored and added to the directory."""
        identity = session.identity
        assert identity is not None
        route = identity.route()
        assert route is not None
        serial = identity.get("serial") or identity.get("ldn")
        meter_id = serial if serial and self.directory.get(serial) is None else (
            "gprs-" + route.partition("=")[2]
        )
        metadata = {f"gprs_{k}": v for k, v in identity.keys}
        metadata["registered_by"] = f"gprs {identity.rule} from {session.peer}"
        metadata["registered_at"] = utcnow().isoformat()
        title = identity.get("system_title")
        if title:
            metadata["dlms_server_system_title"] = title
        meter = Meter(
            id=meter_id,
            protocol=identity.protocol or self.settings.register_protocol,
            route=route,
            serial=serial,
            metadata=metadata,
        )

        async def run() -> Meter:
            if self.store is None:
                raise ChannelError("no store to register meters in", route=route)
            await self.store.add_meters([meter])
            self.directory.add(meter)
            self.stats.registered += 1
            self.tell("meter_registered", meter)
            log.info(
                "unknown modem {modem} registered as meter {meter} ({protocol}, {route})",
                modem=identity.name,
                meter=meter.id,
                protocol=meter.protocol,
                route=route,
            )
            return meter

        return Deferred.fromCoroutine(run())

    # -- pushes ---------------------------------------------------------------------------------

    def push_handler(
        self, meter: Meter, session: ModemSession, keep: IPushHandler | None = None
    ) -> IPushHandler | None:
        """The decoder for what ``meter``'s modem pushes, from the meter's protocol; None
        when the protocol has no push decoding (its bytes outside pulls are dropped)."""
        try:
            protocol = self.protocol_for(meter.protocol)
        except FepError as e:
            log.warn("meter {meter}: {error}; pushes are not decoded", meter=meter.id,
                     error=str(e))
            return None
        if not IPushProtocol.providedBy(protocol):
            if keep is None:
                log.info(
                    "meter {meter}: protocol {protocol} does not push; bytes outside pull "
                    "jobs are dropped",
                    meter=meter.id,
                    protocol=meter.protocol,
                )
            return None
        handler: IPushHandler = protocol.push_handler(
            meter,
            session.pushes,
            directory=self.directory,
            counters=self.counters,
            source=f"gprs:{session.name}",
            close=session.drop,
            reply=session.write,
        )
        if keep is not None:
            # Carry the count over: the operator sees one number per session.
            session.frames += keep.frames
            # A handler that keeps state for the session (a concentrator's event counter)
            # takes it from the one it replaces.
            inherit = getattr(handler, "inherit", None)
            if callable(inherit):
                inherit(keep)
        return handler


def concentrators_at(meters: Iterable[Meter], address: str) -> list[Meter]:
    """The Q/GDW 1376.1 concentrators (protocol gw3761) of ``meters`` whose address is
    ``address`` (``A1:A2``, A2 in hex; ``4403:4`` and ``4403:#4`` name ``4403:0004`` too)."""
    found = []
    for meter in meters:
        if meter.protocol != "gw3761" or not meter.address:
            continue
        try:
            key = Address.parse(meter.address).key
        except ValueError:
            continue
        if key == address:
            found.append(meter)
    return found


def listener_names(text: str) -> list[str]:
    """The listener endpoint strings of ``[gprs] listen``: separated by spaces or commas."""
    return [item for item in re.split(r"[\s,]+", text.strip()) if item]
