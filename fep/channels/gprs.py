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
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.channels.identify import (
    DEFAULT_REGISTRATION,
    RULE_NAMES,
    IdentificationError,
    Identifier,
    Identity,
    make_rules,
)
from fep.channels.modem_identity import (
    CONFLICT_POLICIES,
    SourceNetworks,
    certificate_names,
    certificate_names_modem,
    modem_secret,
    proof_matches,
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
from fep.protocols.registry import meter_protocol
from fep.ratelog import RateLimitedLog

log = Logger(namespace="fep.channels.gprs")

POLICIES = ("register", "quarantine", "reject")
# Seconds a pull job waits for a push under way to finish before it takes the socket.
PIPE_WAIT = 5.0
# Bytes a contested newcomer's data is kept for while its claim is decided (then dropped).
MAX_HELD_BYTES = 1 << 16


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


class ModemSession(Protocol):
    """One inbound modem connection, from accept to close.

    States: ``identifying`` (waiting for a registration), ``registering`` (an unknown
    modem's meter record being stored), ``attached`` (pushes decoded, pulls possible),
    ``quarantined`` (unknown, kept but not trusted), ``contested`` (it claimed a name a
    live session holds: no name, no job, no data used, until the conflict policy decides),
    ``closing``.

    After identification (``_settle``): proof of identity (``_proven``), then the claim of
    names (``_attach``, ``_quarantine``, registration) goes through ``_contested``, the one
    place a claim meets a live holder.
    """

    transport: Any

    def __init__(self, channel: GprsChannel, listener: str) -> None:
        self.channel = channel
        self.listener = listener
        self.id = channel.registry.new_id()
        self.state = "identifying"
        self.identity: Identity | None = None
        # The names (imei=..., serial=...) this session holds in the registry.
        self.names: list[str] = []
        self.meters: list[Meter] = []
        self.handler: IPushHandler | None = None
        self.pipe: _Pipe | None = None
        self.pushes = _Pushes(self, channel.sink)
        self._identifier = Identifier(channel.rules, max_garbage=channel.settings.max_garbage)
        self._pending = bytearray()
        self.since = utcnow()
        self.identified: datetime | None = None
        self.last_seen = self.since
        self.last_frame: datetime | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames = 0
        self.garbage = 0
        self.heartbeats = 0
        self.peer = "?"
        self.ended = ""
        self._pipe_wait: tuple[Deferred[IProtocol], IProtocolFactory, str, IDelayedCall] | None
        self._pipe_wait = None
        self._idle: IDelayedCall | None = None
        self._identify_timer: IDelayedCall | None = None
        # Reactor time of the last byte received (how long it has been silent).
        self._heard: float = channel.reactor.seconds()
        # While contested: the names claimed, the bytes kept, the policy's timer.
        self._contest_names: list[str] = []
        self._contest_began = 0.0
        self._held = bytearray()
        self._contest_timer: IDelayedCall | None = None

    # -- what the operator sees ---------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.identity.name if self.identity is not None else f"session {self.id}"

    def info(self) -> SessionInfo:
        return SessionInfo(
            id=self.id,
            modem=self.identity.name if self.identity is not None else None,
            identity=self.identity.keys if self.identity is not None else (),
            meters=tuple(m.id for m in self.meters),
            state="pipe" if self.pipe is not None else self.state,
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

    def _log_fields(self) -> dict[str, Any]:
        return {
            "modem": self.name,
            "peer": self.peer,
            "meter": self.meters[0].id if self.meters else None,
            "route": self.meters[0].route if self.meters else None,
            "protocol": self.meters[0].protocol if self.meters else None,
        }

    # -- Protocol -----------------------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        keepalive = getattr(self.transport, "setTcpKeepAlive", None)
        if keepalive is not None:
            try:
                keepalive(True)
            except OSError:
                pass
        self.channel.stats.connections += 1
        self.channel.registry.add(self)
        host = str(getattr(peer, "host", "?"))
        if not self.channel.settings.allow.allows(self.listener, host):
            self.channel.stats.source_refused += 1
            log.warn(
                "security: connection from {peer} on {listener} refused: not from a network "
                "this listener takes ([gprs] allow)",
                peer=self.peer,
                listener=self.listener,
                event="gprs_source_refused",
            )
            self.drop("source network not allowed")
            return
        reactor = self.channel.reactor
        self._identify_timer = reactor.callLater(
            self.channel.settings.identify_timeout, self._not_identified
        )
        self._idle = reactor.callLater(self.channel.settings.idle_timeout, self._idle_expired)
        log.debug("modem connected from {peer} on {listener}", peer=self.peer,
                  listener=self.listener)

    def dataReceived(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.last_seen = utcnow()
        self._heard = self.channel.reactor.seconds()
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.channel.settings.idle_timeout)
        if self.state == "closing":
            return
        if self.channel.settings.heartbeats and self.state != "identifying":
            data = self._strip_heartbeats(data)
            if not data:
                return
        if self.state == "identifying":
            self._identify(data)
        elif self.state == "registering":
            self._pending += data
        elif self.state == "quarantined":
            self._quarantined()
        elif self.state == "contested":
            self._hold(data)
        else:
            self._deliver(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        was = self.ended or f"{reason.getErrorMessage()} ({self.state})"
        self.state = "closing"
        for timer in (self._idle, self._identify_timer, self._contest_timer):
            if timer is not None and timer.active():
                timer.cancel()
        if self.pipe is not None:
            self._lose_pipe(f"modem connection lost ({reason.getErrorMessage()})")
        self._fail_waiting_pipe(f"connection lost ({reason.getErrorMessage()})")
        self.channel.registry.remove(self)
        if self.meters:
            self.channel.tell("modem_gone", self.meters)
        if self.identity is not None or self.bytes_in:
            (log if self.identity is not None else self.channel.bad_input).info(
                "modem {modem} from {peer} gone, {why}: {bytes_in} bytes in, "
                "{bytes_out} out, {frames} pushes",
                why=was,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                frames=self.info().frames,
                **self._log_fields(),
            )

    # -- bytes in ---------------------------------------------------------------------------

    def _strip_heartbeats(self, data: bytes) -> bytes:
        """Heartbeat packets at the start of a chunk (a modem sends each as a packet of its
        own) are counted and dropped."""
        stripped = True
        while stripped and data:
            stripped = False
            for beat in self.channel.settings.heartbeats:
                if data.startswith(beat):
                    data = data[len(beat) :]
                    self.heartbeats += 1
                    self.channel.stats.heartbeats += 1
                    stripped = True
        return data

    def _identify(self, data: bytes) -> None:
        try:
            result = self._identifier.receive(data)
        except IdentificationError as e:
            self.channel.stats.unidentified += 1
            self.channel.stats.garbage_bytes += self._identifier.received
            self.channel.bad_input.warn("modem from {peer}: {error}; closing", peer=self.peer,
                                        error=str(e))
            self.drop("no registration")
            return
        if result is None:
            return
        if self._identify_timer is not None and self._identify_timer.active():
            self._identify_timer.cancel()
        self.garbage = result.garbage
        self.channel.stats.garbage_bytes += result.garbage
        self.channel.stats.identified += 1
        self.identity = result.identity
        self.identified = utcnow()
        peer_identified(self.transport)
        if result.garbage:
            log.info(
                "modem {modem} from {peer}: {garbage} garbage bytes before its registration",
                garbage=result.garbage,
                **self._log_fields(),
            )
        self._settle(result.data)

    def _settle(self, data: bytes) -> None:
        """The identified modem: its meters, its proof, then the policy for its claim."""
        identity = self.identity
        assert identity is not None
        meters = self.channel.resolve(identity)
        if not self._proven(meters):
            return
        if meters:
            self._attach(meters, data)
            return
        policy = self.channel.settings.unknown
        if policy == "register" and identity.route() is not None:
            if self._contested(identity.unique(), data):
                return
            self.state = "registering"
            self._pending += data
            d = self.channel.register(self)
            d.addCallbacks(self._registered, self._not_registered)
        elif policy == "reject":
            self.channel.stats.rejected += 1
            log.warn("unknown modem {modem} from {peer} ({rule}) rejected",
                     rule=identity.rule, **self._log_fields())
            self.drop("rejected: unknown")
        else:
            self._quarantine()

    # -- modem identity: proofs and conflicts -------------------------------------------------

    def _proven(self, meters: list[Meter]) -> bool:
        """Whether the modem proved what it claims: the secret its meters name (if any) in
        its registration, and a TLS client certificate (if it gave one) naming it. Not
        proven: counted, logged as a security event (never with the secret) and closed."""
        identity = self.identity
        assert identity is not None
        secrets = [s for s in (self.channel.secret_for(m) for m in meters) if s]
        why = None
        if not proof_matches(identity.proof, secrets):
            why = "no secret" if identity.proof is None else "a wrong secret"
            why = f"its registration carries {why}"
        else:
            names = certificate_names(self.transport)
            if names is not None and not certificate_names_modem(names, identity.keys):
                why = "its TLS client certificate names another modem"
        if why is None:
            return True
        self.channel.stats.proof_failed += 1
        log.warn(
            "security: modem {modem} from {peer} on {listener} did not prove its identity "
            "({why}); closing",
            why=why,
            listener=self.listener,
            event="gprs_proof_failed",
            **self._log_fields(),
        )
        self.drop("identity not proven")
        return False

    def silent_for(self) -> float:
        """Seconds since this session last received a byte (heartbeats included)."""
        return float(self.channel.reactor.seconds() - self._heard)

    def _contested(self, names: list[str], data: bytes) -> bool:
        """Whether a live session holds any of ``names``; if so the conflict policy takes
        over this session (it claims nothing now)."""
        incumbents = self.channel.registry.holders(names, self)
        if not incumbents:
            return False
        self._contest(incumbents, names, data)
        return True

    def _contest(self, incumbents: list[ModemSession], names: list[str], data: bytes) -> None:
        settings = self.channel.settings
        self.channel.stats.conflicts += 1
        silent = min(i.silent_for() for i in incumbents)
        for incumbent in incumbents:
            # The meter is the incumbent's: the newcomer has none of its own yet.
            fields = {**self._log_fields(), **{
                k: v for k, v in incumbent._log_fields().items()
                if k in ("meter", "route", "protocol")}}
            log.warn(
                "security: identity conflict: modem {modem} from {peer} on {listener} claims "
                "a name session {incumbent} from {incumbent_peer} holds (silent {silent:.0f} s,"
                " heartbeat window {window:g} s); policy {policy}",
                listener=self.listener,
                incumbent=incumbent.id,
                incumbent_peer=incumbent.peer,
                silent=incumbent.silent_for(),
                window=settings.heartbeat_window,
                policy=settings.conflict,
                event="gprs_identity_conflict",
                **fields,
            )
        replace = settings.conflict == "replace-when-silent"
        if replace and silent >= settings.heartbeat_window:
            for incumbent in incumbents:
                incumbent.replaced_by(self)
            self._settle(data)
            return
        self.channel.registry.release(self)
        self.state = "contested"
        self._contest_names = list(names)
        self._contest_began = self.channel.reactor.seconds()
        self._held = bytearray(data[:MAX_HELD_BYTES] if replace else b"")
        if replace:
            # The probe: the incumbent's heartbeat window runs out, or it answers.
            delay = max(settings.heartbeat_window - silent, 0.0)
            self._contest_timer = self.channel.reactor.callLater(delay, self._contest_decide)
        else:
            self._contest_timer = self.channel.reactor.callLater(
                settings.conflict_quarantine, self._contest_lost)

    def _hold(self, data: bytes) -> None:
        """A contested session's bytes: kept (bounded) while it may still be let in."""
        if self.channel.settings.conflict == "replace-when-silent":
            room = MAX_HELD_BYTES - len(self._held)
            if room > 0:
                self._held += data[:room]

    def _contest_decide(self) -> None:
        """replace-when-silent: the incumbents' heartbeat window is over. Those that
        answered keep the name (this session is closed); silent ones are replaced."""
        self._contest_timer = None
        if self.state != "contested":
            return
        incumbents = self.channel.registry.holders(self._contest_names, self)
        # Answered: heard since the conflict began. (Not "silent_for() < window" now: in
        # float reactor time this call can come a hair before the window's end.)
        if any(i._heard > self._contest_began for i in incumbents):
            self._contest_lost()
            return
        for incumbent in incumbents:
            incumbent.replaced_by(self)
        held, self._held = bytes(self._held), bytearray()
        self._settle(held)

    def _contest_lost(self) -> None:
        self._contest_timer = None
        if self.state != "contested":
            return
        self.channel.stats.conflicts_closed += 1
        log.warn(
            "security: modem {modem} from {peer} closed: its name is held by a live "
            "session (policy {policy})",
            policy=self.channel.settings.conflict,
            event="gprs_identity_conflict_closed",
            **self._log_fields(),
        )
        self.drop("identity conflict: the name is held by a live session")

    def _quarantine(self) -> None:
        assert self.identity is not None
        if self._contested(self.identity.unique(), b""):
            return
        self.state = "quarantined"
        self.channel.stats.quarantined += 1
        for stale in self.channel.registry.claim(self, self.identity.unique()):
            stale.replaced_by(self)
        log.warn(
            "unknown modem {modem} from {peer} ({identity}) quarantined: kept connected, "
            "its data dropped until a meter names it",
            identity=self.identity.as_dict(),
            **self._log_fields(),
        )

    def _quarantined(self) -> None:
        """Data from a quarantined modem is dropped; a meter added for it since lets it in."""
        assert self.identity is not None
        meters = self.channel.resolve(self.identity)
        if meters:
            log.info("quarantined modem {modem} now known", **self._log_fields())
            self._attach(meters, b"")

    def _registered(self, meter: Meter) -> None:
        if self.state != "registering":
            return
        pending, self._pending = bytes(self._pending), bytearray()
        self._attach([meter], pending)

    def _not_registered(self, failure: Failure) -> None:
        if self.state == "closing":
            return
        log.failure("modem {modem} from {peer}: cannot register its meter; closing", failure,
                    **self._log_fields())
        self.drop("registration failed")

    def _attach(self, meters: list[Meter], data: bytes) -> None:
        assert self.identity is not None
        names = list(self.identity.unique())
        for meter in meters:
            try:
                params = parse_route(meter.route).params()
            except RouteError:
                continue
            if meter.route.startswith("gprs:"):
                names += [f"{k}={v}" for k, v in params.items()]
        if self._contested(names, data):
            return
        self.meters = meters
        self.state = "attached"
        for stale in self.channel.registry.claim(self, names):
            stale.replaced_by(self)
        self.handler = self.channel.push_handler(meters[0], self)
        log.info(
            "modem {modem} from {peer} attached to {meters} ({rule})",
            meters=", ".join(m.id for m in meters),
            rule=self.identity.rule,
            **self._log_fields(),
        )
        self.channel.tell("modem_attached", meters)
        if data:
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self.pipe is not None:
            self.pipe.protocol.dataReceived(data)
        elif self.handler is not None:
            before = self.handler.frames
            self.handler.data_received(data)
            if self.handler.frames != before:
                self.last_frame = utcnow()
            if self._pipe_wait is not None and not self.handler.pending():
                self._start_waiting_pipe()
        else:
            self.channel.stats.unhandled_bytes += len(data)

    # -- bytes out and ending ------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and self.state != "closing":
            self.bytes_out += len(data)
            self.transport.write(data)

    def drop(self, why: str = "closed by fep") -> None:
        """Close now: abort (a half-open peer would never let a graceful close finish)."""
        if self.state == "closing":
            return
        self.ended = f"{why} ({self.state})"
        self.state = "closing"
        if self.transport is None:
            return
        abort = getattr(self.transport, "abortConnection", None)
        (abort or self.transport.loseConnection)()

    def replaced_by(self, newer: ModemSession) -> None:
        """The modem reconnected: this (stale, silent) session gives way to ``newer``."""
        self.channel.stats.replaced += 1
        log.warn(
            "modem {modem} reconnected from {new_peer}: stale session from {peer}, silent "
            "{silent:.0f} s, closed",
            new_peer=newer.peer,
            silent=self.silent_for(),
            event="gprs_session_replaced",
            **self._log_fields(),
        )
        if self.pipe is not None:
            self._lose_pipe(f"the modem reconnected from {newer.peer}")
        self._fail_waiting_pipe(f"the modem reconnected from {newer.peer}")
        self.channel.registry.remove(self)
        self.drop(f"replaced by a new session from {newer.peer}")

    def _not_identified(self) -> None:
        self._identify_timer = None
        if self.state != "identifying":
            return
        self.channel.stats.unidentified += 1
        self.channel.bad_input.warn(
            "modem from {peer} sent no registration within {timeout:.0f} s "
            "({received} bytes); closing",
            peer=self.peer,
            timeout=self.channel.settings.identify_timeout,
            received=self._identifier.received,
        )
        self.drop("identify timeout")

    def _idle_expired(self) -> None:
        self._idle = None
        if self.state == "closing":
            return
        self.channel.stats.idle_closed += 1
        log.warn(
            "modem {modem} from {peer} silent for {timeout:.0f} s (half-open?); closing",
            timeout=self.channel.settings.idle_timeout,
            **self._log_fields(),
        )
        if self.pipe is not None:
            self._lose_pipe("the modem went silent (idle timeout)")
        self.drop("idle timeout")

    # -- pipe mode ------------------------------------------------------------------------------

    def open_pipe(self, factory: IProtocolFactory, route: str) -> Deferred[IProtocol]:
        """Lend the socket to one pull job: the protocol ``factory`` builds gets the modem's
        bytes until it closes its transport. A push under way is let finish first (at most
        PIPE_WAIT seconds, then its bytes go to the job's decoder). ChannelError when the
        modem cannot serve."""
        if self.state != "attached":
            return fail(ChannelError(
                f"modem {self.name} is {self.state}: no pull over it", route=route))
        if self.pipe is not None or self._pipe_wait is not None:
            busy = self.pipe.route if self.pipe is not None else "another job"
            return fail(ChannelError(f"modem {self.name} is busy with {busy}", route=route))
        if self.handler is not None and self.handler.pending():
            d: Deferred[IProtocol] = Deferred()
            timer = self.channel.reactor.callLater(PIPE_WAIT, self._start_waiting_pipe)
            self._pipe_wait = (d, factory, route, timer)
            return d
        try:
            return succeed(self._start_pipe(factory, route))
        except ChannelError as e:
            return fail(e)

    def _start_waiting_pipe(self) -> None:
        waiting, self._pipe_wait = self._pipe_wait, None
        if waiting is None:
            return
        d, factory, route, timer = waiting
        if timer.active():
            timer.cancel()
        try:
            d.callback(self._start_pipe(factory, route))
        except ChannelError as e:
            d.errback(Failure(e))

    def _fail_waiting_pipe(self, why: str) -> None:
        waiting, self._pipe_wait = self._pipe_wait, None
        if waiting is None:
            return
        d, _, route, timer = waiting
        if timer.active():
            timer.cancel()
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
                  **self._log_fields())
        protocol.makeConnection(pipe)
        if leftover and self.pipe is pipe:
            protocol.dataReceived(leftover)
        return protocol

    def end_pipe(self, pipe: _Pipe, reason: str | None) -> None:
        """The job is done with the socket: pushes go to the push handler again."""
        if self.pipe is not pipe:
            return
        self.pipe = None
        pipe.disconnecting = True
        pipe.connected = False
        if self.meters and self.handler is not None:
            # A fresh decoder: the job's decoder had the stream meanwhile.
            self.handler = self.channel.push_handler(self.meters[0], self, keep=self.handler)
        failure = Failure(ConnectionDone("the pull job released the modem"))
        self.channel.reactor.callLater(0, pipe.protocol.connectionLost, failure)

    def _lose_pipe(self, why: str) -> None:
        pipe, self.pipe = self.pipe, None
        if pipe is None:
            return
        pipe.disconnecting = True
        pipe.connected = False
        self.channel.reactor.callLater(
            0, pipe.protocol.connectionLost, Failure(ConnectionLost(why))
        )


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
        if session is None or session.state == "closing":
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
        reactor: Any,
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
        return session is not None and session.state == "attached"

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
        any of its keys, else the meter whose system title, serial number or id it gave."""
        names = [f"{k}={v}" for k, v in identity.keys]
        meters: list[Meter] = list(self.directory.by_modem(*names))
        if meters:
            return meters
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
        )
        if keep is not None:
            # Carry the count over: the operator sees one number per session.
            session.frames += keep.frames
        return handler


def listener_names(text: str) -> list[str]:
    """The listener endpoint strings of ``[gprs] listen``: separated by spaces or commas."""
    return [item for item in re.split(r"[\s,]+", text.strip()) if item]
