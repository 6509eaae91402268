"""Routes through a Q/GDW 1376.1 concentrator: ``gw3761:DCU1:port=2[:baud=2400]...``.

Reaching such a route connects to the concentrator over its own route (any route kind; over
``gprs:`` this borrows its session) and gives the meter session a byte pipe in which each
write goes out wrapped in AFN 10 F1 (transparent forwarding to the port) and each AFN 10
answer comes back unwrapped (fep.protocols.gw3761.forward). A forwarding failure (the meter
did not answer, the concentrator denied) ends the pipe with a ChannelError naming the
concentrator, its port and the meter.

The channel knows bytes, not meters: who the concentrator is (its route and A1:A2) comes
from ``lookup``, which the composition root builds from the meter list. One forwarding at
a time per concentrator: the pipe holds the concentrator's own line (the lease of its
route) while the meter session runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.channels.routes import Channels, Route, parse_route
from fep.errors import ChannelError, RouteError
from fep.interfaces import IConcentratorPipe
from fep.protocols.gw3761 import forward
from fep.protocols.gw3761.forward import Forwarder, ForwardSettings
from fep.protocols.gw3761.frames import Address
from fep.ratelog import RateLimitedLog

log = Logger(namespace="fep.channels.forwarding")

SCHEME = "gw3761"
_KEYS = ("port", "baud", "parity", "timeout")


@attrs.frozen
class Concentrator:
    """What the channel needs of a concentrator: its id, its own route and its address."""

    id: str
    route: str
    address: Address


Lookup = Callable[[str], Concentrator]


def forwarding_target(route: Route) -> tuple[str, ForwardSettings]:
    """The concentrator id and the forwarding settings of a ``gw3761:`` route; RouteError
    says what is wrong."""
    positional = route.positional()
    params = route.params()

    def bad(why: str) -> RouteError:
        return RouteError(f"route {route.text!r}: {why}", route=route.text)

    if len(positional) != 1 or not positional[0]:
        raise bad("expected gw3761:CONCENTRATOR:port=N (the concentrator's meter id and "
                  "its port for this meter)")  # fmt: skip
    unknown = sorted(set(params) - set(_KEYS))
    if unknown:
        raise bad(f"unknown gw3761 option {unknown[0]!r} (known: {', '.join(_KEYS)})")
    if "port" not in params:
        raise bad("needs port=N, the concentrator's communication port for the meter")
    try:
        settings = ForwardSettings(
            port=int(params["port"]),
            baud=int(params.get("baud", "2400")),
            parity=params.get("parity", "E").upper(),
            timeout=float(params.get("timeout", "5")),
        )
    except ValueError as e:
        raise bad(str(e)) from None
    return positional[0], settings


def concentrator_id(route: str) -> str | None:
    """The concentrator a ``gw3761:`` route goes through (None for other routes or a route
    that does not parse)."""
    try:
        parsed = parse_route(route)
    except RouteError:
        return None
    if parsed.scheme != SCHEME:
        return None
    positional = parsed.positional()
    return positional[0] if positional else None


@implementer(IAddress)
@attrs.frozen
class ForwardedAddress:
    """The far end of a forwarding pipe: a concentrator's port."""

    concentrator: str
    port: int


@implementer(ITransport, IConcentratorPipe)
class _Pipe:
    """The meter session's transport: writes become forwardings; ``concentrator_control``
    asks the concentrator for a remote control of a point (AFN 05)."""

    def __init__(self, relay: _Relay) -> None:
        self._relay = relay
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        self._relay.forward(data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def concentrator_control(self, point: int, trip: bool) -> Deferred[Mapping[str, Any]]:
        return self._relay.control(point, trip)

    def loseConnection(self) -> None:
        self.disconnecting = True
        self._relay.close()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._relay.close(abort=True)

    def getPeer(self) -> ForwardedAddress:
        return ForwardedAddress(self._relay.concentrator.id, self._relay.settings.port)

    def getHost(self) -> Any:
        transport = self._relay.transport
        return transport.getHost() if transport is not None else None


class _Relay(Protocol):
    """The concentrator's side: AFN 10 frames in and out, the meter session's bytes to it."""

    def __init__(self, concentrator: Concentrator, settings: ForwardSettings, route: str,
                 noise: RateLimitedLog) -> None:  # fmt: skip
        self.concentrator = concentrator
        self.settings = settings
        self.route = route
        self.forwarder = Forwarder(concentrator.address, settings)
        self.outer: IProtocol | None = None
        self.error: ChannelError | None = None
        self._noise = noise
        self._told = False
        self._closed = False
        self._control: Deferred[Mapping[str, Any]] | None = None

    def attach(self, outer: IProtocol) -> None:
        self.outer = outer
        outer.makeConnection(_Pipe(self))

    def forward(self, data: bytes) -> None:
        if self._closed or self.transport is None:
            return
        self.transport.write(self.forwarder.wrap(data))

    def control(self, point: int, trip: bool) -> Deferred[Mapping[str, Any]]:
        """AFN 05 F1 (trip) or F2 (allow closing) of ``point``, sent on the concentrator's
        line; fires once it confirms, fails with a ChannelError naming it when it denies or
        the line ends first."""
        if self._closed or self.transport is None or self._control is not None:
            return fail(ChannelError(f"concentrator {self.concentrator.id}: no line for a "
                                     "remote control", route=self.route))  # fmt: skip
        self._control = Deferred()
        self.transport.write(self.forwarder.control(point, trip))
        return self._control

    def close(self, abort: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        if self.transport is not None:
            if abort:
                (getattr(self.transport, "abortConnection", None)
                 or self.transport.loseConnection)()  # fmt: skip
            else:
                self.transport.loseConnection()

    def _where(self) -> str:
        c = self.concentrator
        meter = self.forwarder.target or parse_route(self.route).address
        to = f" to meter {meter}" if meter else ""
        return f"forwarding through concentrator {c.id} ({c.address}) port {self.settings.port}{to}"

    def dataReceived(self, data: bytes) -> None:
        for action in self.forwarder.receive(data):
            if isinstance(action, forward.Send):
                if self.transport is not None and not self._closed:
                    self.transport.write(action.data)
            elif isinstance(action, forward.Answer):
                if self.outer is not None:
                    self.outer.dataReceived(action.payload)
            elif isinstance(action, forward.Refused):
                self.error = ChannelError(f"{self._where()}: {action.why}", route=self.route)
                log.info("{route}: {why}", route=self.route, why=self.error.message)
                self.close(abort=True)
                return
            elif isinstance(action, forward.Controlled):
                waiting, self._control = self._control, None
                if waiting is None:
                    continue
                c = self.concentrator
                if action.denied is not None:
                    waiting.errback(ChannelError(
                        f"concentrator {c.id} ({c.address}) point {action.point}: "
                        f"{action.denied}", route=self.route))
                else:
                    waiting.callback({
                        "request": "05:F1 remote trip" if action.trip else
                        "05:F2 allow closing",
                        "concentrator": c.id, "point": action.point})
            elif isinstance(action, forward.Noise):
                self._noise.info("{route}: concentrator {concentrator}: {why}",
                                 kind=f"forward-noise {self.concentrator.id}",
                                 route=self.route, concentrator=self.concentrator.id,
                                 why=action.why)  # fmt: skip

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self._closed = True
        waiting, self._control = self._control, None
        if waiting is not None:
            waiting.errback(ChannelError(f"concentrator {self.concentrator.id}: the line "
                                         "ended before the remote control was confirmed",
                                         route=self.route))  # fmt: skip
        if self.outer is not None and not self._told:
            self._told = True
            self.outer.connectionLost(Failure(self.error) if self.error is not None else reason)


class _Once(Factory):
    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._protocol


@implementer(IStreamClientEndpoint)
class ForwardingEndpoint:
    """Connects a meter session to a port of a concentrator, through the concentrator's own
    endpoint (which holds the concentrator's line while the session runs)."""

    def __init__(self, inner: IStreamClientEndpoint, concentrator: Concentrator,
                 settings: ForwardSettings, route: str, noise: RateLimitedLog) -> None:  # fmt: skip
        self.inner = inner
        self.concentrator = concentrator
        self.settings = settings
        self.route = route
        self.noise = noise
        self.connect_timeout: float | None = getattr(inner, "connect_timeout", None)

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        async def run() -> IProtocol:
            relay = _Relay(self.concentrator, self.settings, self.route, self.noise)
            try:
                await self.inner.connect(_Once(relay))
            except ChannelError as e:
                raise self._named(e.message) from None
            except Exception as e:
                raise self._named(f"cannot connect: {e}") from None
            outer = protocolFactory.buildProtocol(
                ForwardedAddress(self.concentrator.id, self.settings.port))
            if outer is None:
                relay.close()
                raise ChannelError("the session refused the connection", route=self.route)
            relay.attach(outer)
            return outer

        return Deferred.fromCoroutine(run())

    def _named(self, why: str) -> ChannelError:
        c = self.concentrator
        return ChannelError(f"concentrator {c.id} ({c.route}): {why}", route=self.route)


class ForwardingChannel:
    """The ``gw3761:`` routes of one node: endpoints through the concentrators ``lookup``
    names (RouteError for one it does not know), over ``channels``."""

    def __init__(self, channels: Channels, lookup: Lookup) -> None:
        self.channels = channels
        self.lookup = lookup
        self.noise = RateLimitedLog(log, clock=channels.reactor)

    def concentrator(self, route: Route) -> tuple[Concentrator, ForwardSettings]:
        name, settings = forwarding_target(route)
        concentrator = self.lookup(name)
        if concentrator_id(concentrator.route) is not None:
            raise RouteError(f"route {route.text!r}: concentrator {name}'s own route "
                             f"{concentrator.route!r} is a forwarding route",
                             route=route.text)  # fmt: skip
        return concentrator, settings

    def endpoint_for(self, route: Route) -> IStreamClientEndpoint:
        concentrator, settings = self.concentrator(route)
        inner = self.channels.endpoint_for(concentrator.route)
        return ForwardingEndpoint(inner, concentrator, settings, route.text, self.noise)

    def resource(self, route: Route) -> str:
        """The concentrator's resource (its own route's line), so that one forwarding at a
        time runs per concentrator and none beside the concentrator's own session."""
        try:
            concentrator, _ = self.concentrator(route)
            return self.channels.resource_of(concentrator.route)
        except RouteError:
            return route.resource

    def register(self) -> None:
        self.channels.register_scheme(SCHEME, self.endpoint_for, backoff=False, leased=False,
                                      resource=self.resource)  # fmt: skip


__all__ = [
    "SCHEME",
    "Concentrator",
    "ForwardedAddress",
    "ForwardingChannel",
    "ForwardingEndpoint",
    "concentrator_id",
    "forwarding_target",
]
