"""Routes: how a meter is reached, parsed and validated, and the channel set that turns a
route into a byte pipe under the medium's limits (one session at a time per line, bus,
modem or serial-server port).

Route syntax (docs/routes.md)::

    SCHEME:ARGS[@ADDRESS]

``tcp:host=10.1.2.3:port=4059``, ``serial:/dev/ttyS1:baudrate=9600:parity=E``,
``rfc2217:host=10.0.0.5:port=4001``, ``gprs:imei=356938035643809``, ``dialup:+541143210000``;
``@ADDRESS`` names one device on a shared line (HDLC physical address, IEC 62056-21 device
address, DL/T 645 address) and is the meter's address when the meter list gives none.
Schemes without a registered channel are Twisted endpoint strings (``tcp``, ``unix``,
``serial``, and any endpoint plugin).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

from fep.channels.endpoints import client_endpoint
from fep.errors import ChannelError, RouteError
from fep.reactors import IConnectingReactor

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
# A device address: decimal, hex, a DL/T 645/meter number or a DLMS ``logical/physical``
# pair; no ':' or '=' (those belong to the endpoint arguments, so an '@' inside them is not
# taken as an address).
_ADDRESS = re.compile(r"^[0-9A-Za-z_.-]{1,32}(/[0-9A-Za-z_.-]{1,32})?$")
# Schemes whose line is a network port: the resource is the host and port, however spelt.
_HOST_PORT_SCHEMES = ("tcp", "tcp4", "tcp6", "rfc2217")
# Lines whose parsed endpoint a Channels keeps (a fleet of one TCP line per meter: one each).
MAX_PARSED_ENDPOINTS = 200_000


@attrs.frozen
class Route:
    """A parsed route: its scheme, the line it names (``line``: the route without the device
    address, the key of the resource one session at a time may use) and the device address."""

    text: str
    scheme: str
    line: str
    address: str | None = None

    @property
    def args(self) -> str:
        """What follows ``SCHEME:`` on the line."""
        return self.line[len(self.scheme) + 1 :]

    @property
    def resource(self) -> str:
        """The key of the resource one session at a time may use: a serial device (whatever
        line settings each meter's route asks for: meters of mixed protocols on one bus
        share it), a host and port, or else the whole line."""
        if self.scheme == "serial":
            positional = self.positional()
            device = self.params().get("device") or (positional[0] if positional else "")
            if device:
                return f"serial:{device}"
        elif self.scheme in _HOST_PORT_SCHEMES:
            params = self.params()
            positional = self.positional()
            host = params.get("host") or (positional[0] if positional else "")
            port = params.get("port") or (positional[1] if len(positional) > 1 else "")
            if host and port:
                return f"{self.scheme}:{host.lower()}:{port}"
        elif self.scheme == "gw3761":
            # Forwarding through a concentrator: all of its ports (fep.channels.forwarding
            # resolves this to the concentrator's own line where it knows the concentrator).
            positional = self.positional()
            if positional:
                return f"gw3761:{positional[0]}"
        return self.line

    def positional(self) -> list[str]:
        """The arguments without ``key=`` (``serial:/dev/ttyS1:9600:8N1``), in order."""
        return [part for part in self.args.split(":") if "=" not in part]

    def params(self) -> dict[str, str]:
        """The ``key=value`` arguments (``gprs:imei=...``); positional ones are left out."""
        out: dict[str, str] = {}
        for part in self.args.split(":"):
            key, sep, value = part.partition("=")
            if sep:
                out[key.strip()] = value.strip()
        return out


def parse_route(text: str) -> Route:
    """``text`` as a Route; RouteError says what is wrong with it."""
    stripped = text.strip()
    scheme, sep, rest = stripped.partition(":")
    if not sep or not rest:
        raise RouteError(
            f"route {text!r}: expected SCHEME:ARGS, e.g. tcp:host=10.1.2.3:port=4059, "
            "serial:/dev/ttyS1:baudrate=9600, gprs:imei=356938035643809",
            route=text,
        )
    scheme = scheme.lower()
    if not _SCHEME.match(scheme):
        raise RouteError(f"route {text!r}: bad scheme {scheme!r}", route=text)
    line, address = stripped, None
    head, at, tail = stripped.rpartition("@")
    if at and _ADDRESS.match(tail) and ":" in head:
        line, address = head, tail
    elif at and not tail:
        raise RouteError(f"route {text!r}: empty device address after '@'", route=text)
    return Route(text=stripped, scheme=scheme, line=line, address=address)


def resource_of(route: str) -> str:
    """The resource a session on ``route`` occupies: its line (all devices of one bus or
    modem share it; for a serial route the device, for a network one the host and port)."""
    return parse_route(route).resource


class _LeaseReleasingFactory(WrappingFactory):
    """Wraps the session's factory so the lease is released when its connection ends. The
    wrapper provides what the transport provides (ISerialLine for a baud switch)."""

    protocol = ProtocolWrapper
    noisy = False

    def __init__(self, wrapped: IProtocolFactory, release: Callable[[], None]) -> None:
        super().__init__(wrapped)
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        self.release()


@attrs.define
class _Failures:
    count: int = 0
    retry_at: float = 0.0


class ConnectBackoff:
    """Backoff after failed connects, per line: after the n-th failure in a row the line is
    not tried again for ``initial * 2**(n-1)`` seconds (at most ``maximum``); a connect in
    that window fails at once with a ChannelError saying when the line may be tried again.
    A successful connect clears the line's record."""

    def __init__(
        self, reactor: IReactorTime, initial: float = 10.0, maximum: float = 600.0
    ) -> None:
        self.reactor = reactor
        self.initial = initial
        self.maximum = maximum
        self._lines: dict[str, _Failures] = {}

    def check(self, line: str, route: str) -> None:
        state = self._lines.get(line)
        if state is None:
            return
        wait = state.retry_at - self.reactor.seconds()
        if wait > 0:
            when = datetime.fromtimestamp(state.retry_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise ChannelError(
                f"{state.count} failed connect(s) in a row to {line}: not tried again before "
                f"{when} (in {wait:.0f} s)",
                route=route,
            )

    def failed(self, line: str) -> float:
        """Record a failure; returns the seconds until the line may be tried again."""
        state = self._lines.setdefault(line, _Failures())
        state.count += 1
        delay = min(self.initial * 2 ** (state.count - 1), self.maximum)
        state.retry_at = self.reactor.seconds() + delay
        return delay

    def succeeded(self, line: str) -> None:
        self._lines.pop(line, None)

    def waiting(self) -> dict[str, tuple[int, float]]:
        """Lines in backoff: failures in a row and when they may be tried (reactor time)."""
        now = self.reactor.seconds()
        return {
            line: (s.count, s.retry_at) for line, s in self._lines.items() if s.retry_at > now
        }


@implementer(IStreamClientEndpoint)
class LeasedEndpoint:
    """An endpoint used by one connection at a time: connect waits for the line's lease
    (first come, first served) and the lease is held until that connection is lost. With a
    ``backoff``, a line that failed recently fails fast instead of being dialled again."""

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        lock: DeferredLock,
        backoff: ConnectBackoff | None = None,
        line: str = "",
        route: str = "",
    ) -> None:
        self._endpoint = endpoint
        self._lock = lock
        # A channel that bounds its own connect (dial-up) says how long it may take.
        self.connect_timeout: float | None = getattr(endpoint, "connect_timeout", None)
        self._backoff = backoff
        self._line = line
        self._route = route

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        async def run() -> IProtocol:
            await self._lock.acquire()
            factory = _LeaseReleasingFactory(protocolFactory, self._lock.release)
            try:
                if self._backoff is not None:
                    self._backoff.check(self._line, self._route)
            except ChannelError:
                factory.release()
                raise
            try:
                wrapper = await self._endpoint.connect(factory)
            except BaseException:
                factory.release()
                if self._backoff is not None:
                    self._backoff.failed(self._line)
                raise
            if self._backoff is not None:
                self._backoff.succeeded(self._line)
            inner: IProtocol = wrapper.wrappedProtocol  # type: ignore[attr-defined]
            return inner

        return Deferred.fromCoroutine(run())


EndpointFactory = Callable[[Route], IStreamClientEndpoint]


class Channels:
    """The channel layer's one entry: routes to byte pipes. Channels that are more than an
    endpoint string (GPRS sessions, the dial-up modem pool) register their scheme here."""

    def __init__(
        self, reactor: IConnectingReactor, *, backoff: ConnectBackoff | None = None
    ) -> None:
        self.reactor = reactor
        self.backoff = backoff
        self._schemes: dict[str, EndpointFactory] = {}
        self._locks: dict[str, DeferredLock] = {}
        self._no_backoff: set[str] = set()
        self._unleased: set[str] = set()
        self._resources: dict[str, Callable[[Route], str]] = {}
        # Endpoints of endpoint-string lines, parsed once (parsing is ~5% of a register
        # read's CPU); endpoints hold no connection state, so one serves every session.
        self._endpoints: dict[str, IStreamClientEndpoint] = {}

    def register_scheme(
        self,
        scheme: str,
        factory: EndpointFactory,
        *,
        backoff: bool = True,
        leased: bool = True,
        resource: Callable[[Route], str] | None = None,
    ) -> None:
        """``factory`` gives the endpoints of ``scheme`` routes. ``backoff=False`` for
        channels whose connect failures say nothing about the next attempt (a GPRS session
        that is not there yet may dial in any moment). ``leased=False`` for endpoints that
        hold a line themselves (forwarding through a concentrator holds the concentrator's);
        ``resource`` gives the resource of a route when it is not the route's own."""
        self._schemes[scheme] = factory
        if not backoff:
            self._no_backoff.add(scheme)
        if not leased:
            self._unleased.add(scheme)
        if resource is not None:
            self._resources[scheme] = resource

    def resource_of(self, route: str) -> str:
        """The resource a session on ``route`` occupies, as this node's channels see it (a
        forwarding route: its concentrator's line); RouteError for a route not valid."""
        parsed = parse_route(route)
        hook = self._resources.get(parsed.scheme)
        return hook(parsed) if hook is not None else parsed.resource

    def schemes(self) -> list[str]:
        return sorted(self._schemes)

    def lock_for(self, line: str) -> DeferredLock:
        lock = self._locks.get(line)
        if lock is None:
            lock = self._locks[line] = DeferredLock()
        return lock

    def busy(self) -> dict[str, int]:
        """Lines in use and how many sessions wait for each (for the operator)."""
        return {
            line: len(lock.waiting) + 1 for line, lock in self._locks.items() if lock.locked
        }

    def endpoint_for(self, route: str) -> IStreamClientEndpoint:
        """The endpoint a session on ``route`` connects through; RouteError when the route
        is not valid or names a channel this node does not have."""
        parsed = parse_route(route)
        factory = self._schemes.get(parsed.scheme)
        if factory is not None:
            endpoint = factory(parsed)
            if parsed.scheme in self._unleased:
                return endpoint
        elif parsed.scheme in ("gprs", "dialup", "gw3761"):
            raise RouteError(
                f"route {route!r}: no {parsed.scheme} channel is configured on this node",
                route=route,
            )
        else:
            endpoint = self._line_endpoint(parsed.line)
        backoff = None if parsed.scheme in self._no_backoff else self.backoff
        return LeasedEndpoint(
            endpoint, self.lock_for(parsed.resource), backoff, parsed.resource, parsed.text
        )

    def _line_endpoint(self, line: str) -> IStreamClientEndpoint:
        endpoint = self._endpoints.get(line)
        if endpoint is None:
            endpoint = client_endpoint(self.reactor, line)
            if len(self._endpoints) >= MAX_PARSED_ENDPOINTS:
                del self._endpoints[next(iter(self._endpoints))]  # the oldest parsed
            self._endpoints[line] = endpoint
        return endpoint

    def __call__(self, reactor: IConnectingReactor, route: str) -> IStreamClientEndpoint:
        """The ``endpoint_for(reactor, route)`` signature the collection side takes."""
        return self.endpoint_for(route)


def device_address(route: str) -> str | None:
    """The ``@ADDRESS`` of a route, or None."""
    return parse_route(route).address
