"""The ``dlt698:TERMINAL`` route: a meter behind a DL/T 698.45 terminal (concentrator),
read through it with PROXY requests (docs/routes.md).

The meter is an entry of the meter list with protocol ``dlt698``, its own ``address``,
``concentrator = TERMINAL`` and the route ``dlt698:TERMINAL``, where ``TERMINAL`` is the
meter id of the terminal (itself a ``dlt698`` meter with its own route: ``gprs:dlt698=...``
when it logs in to fep, ``tcp:...``, ``serial:...``). A job for the meter connects over the
terminal's route (over GPRS: borrowing the terminal's session) and the protocol sends the
meter's reads as PROXY-Requests to the terminal (metadata ``dlt698_terminal``: the
terminal's server address; the association settings are the terminal's).

``dlt698:TERMINAL:port=F2010201[:baud=2400]`` names a meter of another protocol (a DL/T
645 meter) on the terminal's port: its session's frames go through the port by PROXY
transparent forwarding (``forwarding``: fep.channels.dlt698_forwarding.ForwardingEndpoint)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from fep.errors import ConfigError
from fep.model import Meter
from fep.protocols.dlt698.client import DEFAULT_METER_TZ
from fep.protocols.dlt698.data import OAD
from fep.protocols.dlt698.forward import ForwardSettings

_NO = ("no", "n", "false", "0", "off")

SCHEME = "dlt698"
PROTOCOL = "dlt698"
# Settings of the association with the terminal: the terminal's, not the meter's.
ASSOCIATION_KEYS = ("dlt698_connect", "dlt698_password", "dlt698_client", "dlt698_wakeup",
                    "dlt698_retries")


def terminal_id(route: str) -> str | None:
    """The terminal a ``dlt698:TERMINAL[:OPTIONS]`` route names; None for any other route."""
    scheme, sep, rest = route.strip().partition(":")
    if not sep or scheme.strip().lower() != SCHEME:
        return None
    return rest.partition(":")[0].strip() or None


def route_options(route: str) -> dict[str, str]:
    """The ``KEY=VALUE`` options after the terminal of a ``dlt698:`` route."""
    parts = route.strip().split(":")[2:]
    out = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"route {route!r}: {part!r} is not KEY=VALUE", key="route")
        out[key.strip().lower()] = value.strip()
    return out


def through_terminal(meter: Meter, meter_of: Callable[[str], Meter | None]
                     ) -> tuple[str, Meter] | None:  # fmt: skip
    """For a meter on a ``dlt698:TERMINAL`` route: the route its job connects over (the
    terminal's) and the meter as the protocol reads it (through the terminal's PROXY);
    None for other routes. ConfigError names the meter and what is wrong."""
    if terminal_id(meter.route) is None and meter.route.strip().lower().startswith(
            f"{SCHEME}:"):  # fmt: skip
        raise ConfigError(f"meter {meter.id}: route {meter.route!r} names no terminal "
                          "(dlt698:TERMINAL_ID)", key="route")
    tid = terminal_id(meter.route)
    if tid is None:
        return None
    options = route_options(meter.route)
    unknown = set(options) - {"port", "baud"}
    if unknown or ("baud" in options and "port" not in options):
        raise ConfigError(f"meter {meter.id}: route {meter.route!r}: options are port= and "
                          "baud= (port=F2010201: forwarded through that port)", key="route")
    forwarded = "port" in options
    if not forwarded and meter.protocol != PROTOCOL:
        raise ConfigError(f"meter {meter.id}: route {meter.route!r} is read through a DL/T "
                          f"698.45 terminal's PROXY: its protocol must be {PROTOCOL}, not "
                          f"{meter.protocol} (or name the terminal's port: port=F2010201)",
                          key="protocol")
    if forwarded and meter.protocol == PROTOCOL:
        raise ConfigError(f"meter {meter.id}: route {meter.route!r}: a DL/T 698.45 meter "
                          "behind a terminal is read through its PROXY, not its port",
                          key="route")
    terminal = meter_of(tid)
    if terminal is None:
        raise ConfigError(f"meter {meter.id}: route {meter.route!r}: terminal {tid!r} is not "
                          "a meter of the meter list", key="route")
    if terminal.protocol != PROTOCOL or terminal_id(terminal.route) is not None:
        raise ConfigError(f"meter {meter.id}: route {meter.route!r}: {tid} is no DL/T "
                          "698.45 terminal on a route of its own", key="route")
    if not forwarded and not (meter.address or "").strip():
        raise ConfigError(f"meter {meter.id}: a meter read through terminal {tid} needs "
                          "its own address", key="address")
    metadata = {k: v for k, v in meter.metadata.items() if k not in ASSOCIATION_KEYS}
    metadata.update({k: v for k, v in terminal.metadata.items() if k in ASSOCIATION_KEYS})
    address = (terminal.address or "").strip() or "AAAAAAAAAAAA"
    if forwarded:
        metadata[FORWARD_PORT] = options["port"]
        metadata[FORWARD_BAUD] = options.get("baud", "2400")
        metadata[FORWARD_TERMINAL] = address
        if terminal.metadata.get("tz"):
            metadata[FORWARD_TZ] = terminal.metadata["tz"]
        forward_settings(attrs.evolve(meter, metadata=metadata))  # ConfigError when wrong
        return terminal.route, attrs.evolve(meter, metadata=metadata)
    metadata["dlt698_terminal"] = address
    if terminal.metadata.get("tz") and not metadata.get("tz"):
        metadata["tz"] = terminal.metadata["tz"]  # the terminal's clock zone, read through it
    return terminal.route, attrs.evolve(meter, metadata=metadata)


FORWARD_PORT = "dlt698_forward_port"
FORWARD_BAUD = "dlt698_forward_baud"
FORWARD_TERMINAL = "dlt698_forward_terminal"
FORWARD_TZ = "dlt698_forward_tz"


def forward_settings(meter: Meter) -> ForwardSettings | None:
    """The forwarding of a meter on a terminal's port (set by ``through_terminal``), or
    None; ConfigError names what is wrong."""
    md = meter.metadata
    if not md.get(FORWARD_PORT):
        return None
    try:
        port = OAD.parse(md[FORWARD_PORT])
        baud = int(md.get(FORWARD_BAUD, "2400"))
        tz: tzinfo = ZoneInfo(md[FORWARD_TZ]) if md.get(FORWARD_TZ) else DEFAULT_METER_TZ
        return ForwardSettings(
            md[FORWARD_TERMINAL], port, baud, client=int(md.get("dlt698_client", "0") or 0),
            connect=md.get("dlt698_connect", "yes").strip().lower() not in _NO,
            password=md.get("dlt698_password") or None,
            wakeup=md.get("dlt698_wakeup", "yes").strip().lower() not in _NO, tz=tz)
    except (ValueError, KeyError, ZoneInfoNotFoundError) as e:
        raise ConfigError(f"meter {meter.id}: route {meter.route!r}: {e}", key="route") from None


def forwarding(endpoint: Any, meter: Meter, now: Callable[[], datetime] | None = None) -> Any:
    """``endpoint`` (the terminal's route) as the meter's session uses it: through the
    terminal's port when the meter is on one, else as it is."""
    settings = forward_settings(meter)
    if settings is None:
        return endpoint
    from fep.channels.dlt698_forwarding import ForwardingEndpoint

    return ForwardingEndpoint(endpoint, settings, meter=meter.id,
                              **({"now": now} if now is not None else {}))


def line_through_terminal(meter_of: Callable[[str], Meter | None],
                          key: Callable[[str], str]) -> Callable[[str], str]:  # fmt: skip
    """A resource key (``key``: a ResourcePolicy's) that puts a ``dlt698:TERMINAL`` route on
    its terminal's resource: a meter behind the terminal is read one job at a time with the
    terminal's own jobs, after them in a task's run (fep.collect.concentrators), and on the
    node that holds the terminal's GPRS session (session homes)."""

    def line(route: str) -> str:
        tid = terminal_id(route)
        if tid is not None:
            terminal = meter_of(tid)
            if terminal is not None and terminal_id(terminal.route) is None:
                return key(terminal.route)
        return key(route)

    return line
