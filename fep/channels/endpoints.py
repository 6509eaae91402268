"""Routes to Twisted client endpoints: the one place a route string becomes a byte pipe
(connecting a meter session through one is fep.protocols.session's ``connect_within``).

A route is a Twisted endpoint string (``tcp:host=10.1.2.3:port=4059``, ``tcp:10.1.2.3:4059``,
``serial:/dev/ttyUSB0:baudrate=300``, ``unix:path=/run/meter.sock``).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint

from fep.errors import RouteError
from fep.reactors import IConnectingReactor


def _serial(reactor: IConnectingReactor, *args: str, **kwargs: str) -> IStreamClientEndpoint:
    from fep.channels.serialport import serial_endpoint

    return serial_endpoint(reactor, *args, **kwargs)


def _rfc2217(reactor: IConnectingReactor, *args: str, **kwargs: str) -> IStreamClientEndpoint:
    from fep.channels.serialserver import rfc2217_endpoint

    return rfc2217_endpoint(reactor, *args, **kwargs)


# fep's own endpoint prefixes, parsed here without Twisted's plugin discovery (which does
# not see twisted/plugins/ of a PEP 660 editable install); the plugins in twisted/plugins/
# stay for other users of clientFromString. Their modules are imported only when used.
_OWN_PREFIXES: dict[str, Callable[..., IStreamClientEndpoint]] = {
    "serial": _serial,
    "rfc2217": _rfc2217,
}


def endpoint_arguments(text: str) -> tuple[list[str], dict[str, str]]:
    """An endpoint string's arguments as ``clientFromString`` reads them: split at ``:``;
    a part with ``=`` is a keyword (at its first ``=``); a backslash escapes the next
    character. ``serial:/dev/ttyS0:baudrate=300`` -> (["serial", "/dev/ttyS0"],
    {"baudrate": "300"})."""
    parts: list[list[str]] = [[""]]
    chars = iter(text)
    for char in chars:
        if char == "\\":
            parts[-1][-1] += next(chars, "")
        elif char == ":":
            parts.append([""])
        elif char == "=" and len(parts[-1]) == 1:
            parts[-1].append("")
        else:
            parts[-1][-1] += char
    args = [part[0] for part in parts if len(part) == 1]
    kwargs = {part[0]: part[1] for part in parts if len(part) == 2}
    return args, kwargs


def client_endpoint(reactor: IConnectingReactor, route: str) -> IStreamClientEndpoint:
    """The endpoint that connects to ``route``; RouteError names the route when it is not
    valid. fep's own prefixes (``serial:``, ``rfc2217:``) first, then Twisted's."""
    route = route.strip()
    if not route or ":" not in route:
        raise RouteError(f"route {route!r}: expected an endpoint string such as "
                         "tcp:host=HOST:port=PORT or serial:/dev/ttyS0", route=route)
    try:
        args, kwargs = endpoint_arguments(route)
        own = _OWN_PREFIXES.get(args[0].lower())
        if own is not None:
            return own(reactor, *args[1:], **kwargs)
        endpoint: IStreamClientEndpoint = clientFromString(reactor, route)
    except (ValueError, TypeError, KeyError) as e:
        raise RouteError(f"route {route!r}: {e}", route=route) from None
    return endpoint

