"""Routes to Twisted client endpoints: the one place a route string becomes a byte pipe.

A route is a Twisted endpoint string (``tcp:host=10.1.2.3:port=4059``, ``tcp:10.1.2.3:4059``,
``serial:/dev/ttyUSB0:baudrate=300``, ``unix:path=/run/meter.sock``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint

from fep.errors import RouteError


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
