"""Forwarding routes resolved from the meter list: ``gw3761:DCU1:port=2`` names the meter
``DCU1`` (protocol ``gw3761``, its own route and address ``A1:A2``), and the channel layer
(fep.channels.forwarding) connects through that meter's route. This module is where a
concentrator's meter record becomes what the channel needs of it."""

from __future__ import annotations

from collections.abc import Callable

from fep.channels.forwarding import Concentrator, ForwardingChannel
from fep.channels.routes import Channels
from fep.errors import RouteError
from fep.model import Meter
from fep.protocols.gw3761.frames import Address

PROTOCOL = "gw3761"


def concentrator_link(meter: Meter) -> Concentrator:
    """What the forwarding channel needs of concentrator ``meter``; RouteError when the
    meter is no Q/GDW 1376.1 concentrator with an address A1:A2."""
    if meter.protocol != PROTOCOL:
        raise RouteError(f"meter {meter.id} is a {meter.protocol} meter, not a gw3761 "
                         "concentrator: nothing can be forwarded through it",
                         route=meter.route)  # fmt: skip
    try:
        master = int(meter.metadata.get("gw3761_master", "0") or 0)
        address = Address.parse(meter.address or "", master)
    except ValueError as e:
        raise RouteError(f"concentrator {meter.id}: {e}", route=meter.route) from None
    return Concentrator(meter.id, meter.route, address)


def lookup_in(get: Callable[[str], Meter | None]) -> Callable[[str], Concentrator]:
    """The channel's lookup over a meter list's ``get(id)``."""

    def lookup(name: str) -> Concentrator:
        meter = get(name)
        if meter is None:
            raise RouteError(f"concentrator {name!r} is not a meter of the meter list")
        return concentrator_link(meter)

    return lookup


def add_forwarding(channels: Channels, get: Callable[[str], Meter | None]) -> ForwardingChannel:
    """``gw3761:`` routes on ``channels``, their concentrators looked up with ``get``."""
    channel = ForwardingChannel(channels, lookup_in(get))
    channel.register()
    return channel


__all__ = ["add_forwarding", "concentrator_link", "lookup_in"]
