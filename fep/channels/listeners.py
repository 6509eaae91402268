"""Listeners with limits: one wrapping factory gives every listening socket of the daemon
(GPRS, DLMS push, IEC 62056-21 push, HTTP, SSH console, control socket) a connection cap, a
per-source-address cap, an idle timeout and a cap on the bytes a peer may send before it is
identified.

In the spirit of ``twisted.protocols.policies`` (WrappingFactory, LimitConnectionsByPeer,
TimeoutMixin), in one place: ``LimitedFactory(factory, limits, name)`` wraps the factory a
listener serves. The wrapped protocol's transport is then a ``LimitedProtocol``; it says that
it has recognised its peer (a modem's registration, a valid push, an authenticated request)
with ``peer_identified(self.transport)``, which is a no-op on any other transport. Until
then, more than ``max_unidentified_bytes`` closes the connection.

A refused connection (cap or per-source cap reached) is closed at once (aborted, never read);
an idle one (nothing received for ``idle_timeout`` seconds) and one past its byte cap are
aborted too. Every refusal and closure is counted in ``ListenerStats`` and logged through a
rate-limited log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.interfaces import IIdentifiedTransport
from fep.ratelog import RateLimitedLog

log = Logger(namespace="fep.channels.listeners")

# The daemon's listeners by name, as [listeners] overrides name them.
LISTENERS = ("gprs", "push_dlms", "push_iec62056_21", "http", "ssh", "control")
LIMIT_KEYS = ("max_connections", "max_per_source", "idle_timeout", "max_unidentified_bytes")

# Bytes handed to a protocol at once before it has identified its peer (one read may bring
# 64 KiB): it sees no more junk than it needs before giving up.
UNIDENTIFIED_SLICE = 4096

# A GPRS listener without backlog= gets this listen queue (listenTCP's default is 50: a
# reconnect storm of thousands of modems would queue in the kernel and time out there). The
# kernel caps it at net.core.somaxconn.
GPRS_BACKLOG = 4096


@attrs.frozen
class ListenerLimits:
    """The limits of one listener; 0 turns a limit off."""

    # Connections open at once.
    max_connections: int = 1000
    # Connections open at once from one source address (UNIX sockets: all peers are one).
    max_per_source: int = 32
    # Seconds without a byte from the peer before the connection is closed.
    idle_timeout: float = 300.0
    # Bytes the peer may send before the protocol has identified it.
    max_unidentified_bytes: int = 65536


# Where a listener's defaults differ from [listeners]' own (documented in etc/fep.ini).
BUILTIN_OVERRIDES: Mapping[str, Mapping[str, float | int]] = {
    # A push's first APDU is well under this (a Data-Notification of registers is < 1 KiB);
    # junk past it is not decoded at all.
    "push_dlms": {"max_unidentified_bytes": 16384},
    # Thousands of modems; several behind one carrier NAT address.
    "gprs": {"max_connections": 20000, "max_per_source": 256, "idle_timeout": 600.0},
    # Operators keep a console open while they read.
    "ssh": {"max_connections": 64, "max_per_source": 8, "idle_timeout": 1800.0},
    # idle_timeout: the [listeners] 300 s, above the longest API read (a woken GPRS modem).
    "http": {"max_connections": 256, "max_per_source": 64,
             "max_unidentified_bytes": 1048576},
    # `fep sessions` asks one question and goes; `fep read --meter` waits for the daemon's
    # read (its line, a woken GPRS modem).
    "control": {"max_connections": 64, "max_per_source": 64, "idle_timeout": 600.0},
}


def source_of(addr: object) -> str:
    """The source address a per-source cap counts by: the IP (or host) of ``addr``; all
    peers of a UNIX socket are one source."""
    host = getattr(addr, "host", None)
    if isinstance(host, str):
        return host
    return "unix" if type(addr).__name__ == "UNIXAddress" else str(addr)


@attrs.define
class ListenerStats:
    """What one listener accepted, refused and closed since the start."""

    accepted: int = 0
    open: int = 0
    identified: int = 0
    refused_connections: int = 0
    refused_source: int = 0
    idle_closed: int = 0
    overflow_closed: int = 0

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


class _Refused(Protocol):
    """What a refused connection gets: closed as soon as it is made, nothing read."""

    def connectionMade(self) -> None:
        transport: Any = self.transport
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()


@implementer(IIdentifiedTransport)
class LimitedProtocol(ProtocolWrapper):
    """One connection of a limited listener: counts bytes until identified, times out when
    idle, and is the wrapped protocol's transport."""

    factory: LimitedFactory

    def __init__(self, factory: LimitedFactory, wrappedProtocol: IProtocol, source: str) -> None:
        super().__init__(factory, wrappedProtocol)
        self.source = source
        self.identified = False
        self.unidentified_bytes = 0
        # Why the limits closed the connection; whether the protocol itself closed it.
        self.closed_because: str | None = None
        self.protocol_closed = False
        self._idle: IDelayedCall | None = None

    # -- IIdentifiedTransport ---------------------------------------------------------------

    def peer_identified(self) -> None:
        if not self.identified:
            self.identified = True
            self.factory.stats.identified += 1

    # -- protocol side ---------------------------------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        timeout = self.factory.limits.idle_timeout
        if timeout > 0:
            self._idle = self.factory.clock.callLater(timeout, self._idle_expired)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if self.closed_because is not None:
            return
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.factory.limits.idle_timeout)
        # Before identification a read goes to the protocol in slices, each counted against
        # the cap, and stops as soon as the protocol gives up on the peer: junk costs what
        # the protocol needed to see. Once identified, the rest of the read goes at once.
        offset = 0
        while offset < len(data):
            if self.identified:
                piece = data[offset:]
            else:
                piece = data[offset:offset + UNIDENTIFIED_SLICE]
                if self._past_cap(len(piece)):
                    return
            offset += len(piece)
            super().dataReceived(piece)
            self._probe()
            if (self.closed_because is not None or self.protocol_closed
                    or self.wrappedProtocol is None):
                return

    def _past_cap(self, more: int) -> bool:
        """Count ``more`` unidentified bytes; past the cap, close and say so."""
        self.unidentified_bytes += more
        cap = self.factory.limits.max_unidentified_bytes
        if not cap or self.unidentified_bytes <= cap:
            return False
        self.factory.stats.overflow_closed += 1
        self.factory.events.warn(
            "{listener}: {peer} sent {received} bytes without identifying itself "
            "(at most {cap}); closing",
            kind=f"{self.factory.name} overflow",
            listener=self.factory.name, peer=self.source,
            received=self.unidentified_bytes, cap=cap,
        )
        self._abort("too many bytes before identification")
        return True

    def loseConnection(self) -> None:
        self.protocol_closed = True
        super().loseConnection()

    def abortConnection(self) -> None:
        self.protocol_closed = True
        transport: Any = self.transport
        transport.abortConnection()

    def write(self, data: bytes) -> None:
        super().write(data)
        if not self.identified:
            if self.factory.identify_on_write:
                self.peer_identified()
            else:
                self._probe()

    def writeSequence(self, data: Any) -> None:
        super().writeSequence(data)
        if not self.identified and self.factory.identify_on_write:
            self.peer_identified()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        self.factory.release(self.source)
        super().connectionLost(reason)

    # -- limits ----------------------------------------------------------------------------

    def _probe(self) -> None:
        probe = self.factory.identified_when
        wrapped = self.wrappedProtocol
        if not self.identified and probe is not None and wrapped is not None and probe(wrapped):
            self.peer_identified()

    def _idle_expired(self) -> None:
        self._idle = None
        if self.closed_because is not None:
            return
        self.factory.stats.idle_closed += 1
        self.factory.events.info(
            "{listener}: {peer} sent nothing for {timeout:.0f} s; closing",
            kind=f"{self.factory.name} idle",
            listener=self.factory.name, peer=self.source,
            timeout=self.factory.limits.idle_timeout,
        )
        self._abort("idle timeout")

    def _abort(self, why: str) -> None:
        self.closed_because = why
        transport: Any = self.transport
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()


class LimitedFactory(WrappingFactory[LimitedProtocol]):
    """Wraps the factory of one listener with its ``ListenerLimits``.

    ``identify_on_write``: the peer counts as identified once the wrapped protocol first
    answers it (HTTP: a request answered). ``identified_when(protocol)``: asked after every
    read and write until it is true (SSH: the transport has an authenticated avatar)."""

    protocol = LimitedProtocol
    noisy = False

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        limits: ListenerLimits,
        name: str,
        *,
        clock: IReactorTime | None = None,
        identify_on_write: bool = False,
        identified_when: Callable[[IProtocol], bool] | None = None,
        events: RateLimitedLog | None = None,
    ) -> None:
        super().__init__(wrappedFactory)
        if clock is None:
            from twisted.internet import reactor as default_reactor

            clock = default_reactor
        self.limits = limits
        self.name = name
        self.clock = clock
        self.identify_on_write = identify_on_write
        self.identified_when = identified_when
        self.events = events if events is not None else RateLimitedLog(log, clock)
        self.stats = ListenerStats()
        self.per_source: dict[str, int] = {}

    def logPrefix(self) -> str:
        prefix: Any = getattr(self.wrappedFactory, "logPrefix", None)
        return prefix() if callable(prefix) else type(self.wrappedFactory).__name__

    def buildProtocol(self, addr: IAddress | None) -> Any:
        source = source_of(addr)
        limits = self.limits
        if limits.max_connections and self.stats.open >= limits.max_connections:
            self.stats.refused_connections += 1
            self.events.warn(
                "{listener}: {open} connections open (max_connections); refusing {peer}",
                kind=f"{self.name} cap", listener=self.name, open=self.stats.open, peer=source,
            )
            return _Refused()
        held = self.per_source.get(source, 0)
        if limits.max_per_source and held >= limits.max_per_source:
            self.stats.refused_source += 1
            self.events.warn(
                "{listener}: {peer} already has {held} connections (max_per_source); refusing",
                kind=f"{self.name} source cap", listener=self.name, peer=source, held=held,
            )
            return _Refused()
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        self.per_source[source] = held + 1
        self.stats.open += 1
        self.stats.accepted += 1
        return self.protocol(self, wrapped, source)

    def release(self, source: str) -> None:
        """One connection from ``source`` ended."""
        self.stats.open -= 1
        held = self.per_source.get(source, 0) - 1
        if held > 0:
            self.per_source[source] = held
        else:
            self.per_source.pop(source, None)


def ssh_authenticated(protocol: IProtocol) -> bool:
    """A conch SSH server transport whose user has authenticated (it holds an avatar)."""
    return getattr(protocol, "avatar", None) is not None


def with_backlog(description: str, backlog: int = GPRS_BACKLOG) -> str:
    """A tcp:/ssl: server endpoint string with ``backlog=`` added unless it has one."""
    kind = description.split(":", 1)[0].lower()
    if kind not in ("tcp", "ssl", "tcp6") or re.search(r"(^|:)backlog=", description):
        return description
    return f"{description}:backlog={backlog}"


class ListenerSet:
    """The daemon's limited listeners by name, for wrapping and for the counts."""

    def __init__(self, section: Any, clock: IReactorTime) -> None:
        self.section = section
        self.clock = clock
        self.factories: dict[str, LimitedFactory] = {}

    def wrap(self, factory: IProtocolFactory, kind: str, name: str | None = None,
             **options: Any) -> LimitedFactory:
        """``factory`` with the limits of listener ``kind`` (one of LISTENERS); ``name``
        tells several of a kind apart in logs and counts."""
        limited = LimitedFactory(factory, limits_for(kind, self.section), name or kind,
                                 clock=self.clock, **options)
        self.factories[limited.name] = limited
        return limited

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: factory.stats.as_dict() for name, factory in self.factories.items()}


def limits_for(name: str, section: Any) -> ListenerLimits:
    """The limits of listener ``name`` from the config's [listeners] section: its own
    ``NAME.KEY`` values where set (etc/fep.ini shows the built-in ones), else the section's
    ``KEY``."""
    own: Mapping[str, Any] = section.overrides.get(name, {})
    return ListenerLimits(**{key: own.get(key, getattr(section, key)) for key in LIMIT_KEYS})
