"""Routes to Twisted client endpoints: the one place a route string becomes a byte pipe, and
a meter session is connected through one (with a deadline, failures naming the route).

A route is a Twisted endpoint string (``tcp:host=10.1.2.3:port=4059``, ``tcp:10.1.2.3:4059``,
``serial:/dev/ttyUSB0:baudrate=300``, ``unix:path=/run/meter.sock``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

from fep.errors import ChannelError, RouteError

P = TypeVar("P", bound=Protocol)


def client_endpoint(reactor: Any, route: str) -> IStreamClientEndpoint:
    """The endpoint that connects to ``route``; RouteError names the route when it is not
    valid."""
    route = route.strip()
    if not route or ":" not in route:
        raise RouteError(f"route {route!r}: expected an endpoint string such as "
                         "tcp:host=HOST:port=PORT or serial:/dev/ttyS0", route=route)
    try:
        endpoint: IStreamClientEndpoint = clientFromString(reactor, route)
    except (ValueError, TypeError, KeyError) as e:
        raise RouteError(f"route {route!r}: {e}", route=route) from None
    return endpoint


class _OneShotFactory(ClientFactory):
    """Hands out one already-built protocol: a meter session is one connection."""

    noisy = False  # one per read: "Starting factory" lines would drown the log

    def __init__(self, protocol: Protocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: object) -> Protocol:
        return self.protocol_instance


def connect_within(
    reactor: Any, endpoint: Any, protocol: P, route: str | None, timeout: float
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
    guard = reactor.callLater(timeout, connecting.cancel)
    result: Deferred[P] = Deferred()

    def connected(_: object) -> None:
        if guard.active():
            guard.cancel()
        result.callback(protocol)

    def not_connected(failure: Failure) -> None:
        if guard.active():
            guard.cancel()
        if failure.check(CancelledError):
            error = ChannelError(f"no connection within {timeout:.1f} s", route=route)
        elif isinstance(failure.value, ChannelError):
            error = failure.value
            if error.route is None:
                error.route = route
        else:
            error = ChannelError(f"cannot connect: {failure.getErrorMessage()}", route=route)
        result.errback(Failure(error))

    connecting.addCallbacks(connected, not_connected)
    return result


def run_session(
    reactor: Any, endpoint: Any, session: Any, route: str | None, timeout: float
) -> Deferred[Any]:
    """Connect a one-shot meter session (a protocol with a ``done`` Deferred) and fire with
    what ``done`` fires with."""
    d = connect_within(reactor, endpoint, session, route, timeout)
    d.addCallback(lambda _: session.done)
    return d
