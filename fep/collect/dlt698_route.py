"""The ``dlt698:TERMINAL`` route: a meter behind a DL/T 698.45 terminal (concentrator),
read through it with PROXY requests (docs/routes.md).

The meter is an entry of the meter list with protocol ``dlt698``, its own ``address``,
``concentrator = TERMINAL`` and the route ``dlt698:TERMINAL``, where ``TERMINAL`` is the
meter id of the terminal (itself a ``dlt698`` meter with its own route: ``gprs:dlt698=...``
when it logs in to fep, ``tcp:...``, ``serial:...``). A job for the meter connects over the
terminal's route (over GPRS: borrowing the terminal's session) and the protocol sends the
meter's reads as PROXY-Requests to the terminal (metadata ``dlt698_terminal``: the
terminal's server address; the association settings are the terminal's)."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from fep.errors import ConfigError
from fep.model import Meter

SCHEME = "dlt698"
PROTOCOL = "dlt698"
# Settings of the association with the terminal: the terminal's, not the meter's.
ASSOCIATION_KEYS = ("dlt698_connect", "dlt698_password", "dlt698_client", "dlt698_wakeup",
                    "dlt698_retries")


def terminal_id(route: str) -> str | None:
    """The terminal a ``dlt698:TERMINAL`` route names; None for any other route."""
    scheme, sep, rest = route.strip().partition(":")
    if not sep or scheme.strip().lower() != SCHEME:
        return None
    return rest.strip() or None


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
    if meter.protocol != PROTOCOL:
        raise ConfigError(f"meter {meter.id}: route {meter.route!r} is read through a DL/T "
                          f"698.45 terminal's PROXY: its protocol must be {PROTOCOL}, not "
                          f"{meter.protocol}", key="protocol")
    terminal = meter_of(tid)
    if terminal is None:
        raise ConfigError(f"meter {meter.id}: route {meter.route!r}: terminal {tid!r} is not "
                          "a meter of the meter list", key="route")
    if terminal.protocol != PROTOCOL or terminal_id(terminal.route) is not None:
        raise ConfigError(f"meter {meter.id}: route {meter.route!r}: {tid} is no DL/T "
                          "698.45 terminal on a route of its own", key="route")
    if not (meter.address or "").strip():
        raise ConfigError(f"meter {meter.id}: a meter read through terminal {tid} needs "
                          "its own address", key="address")
    metadata = {k: v for k, v in meter.metadata.items() if k not in ASSOCIATION_KEYS}
    metadata.update({k: v for k, v in terminal.metadata.items() if k in ASSOCIATION_KEYS})
    metadata["dlt698_terminal"] = (terminal.address or "").strip() or "AAAAAAAAAAAA"
    if terminal.metadata.get("tz") and not metadata.get("tz"):
        metadata["tz"] = terminal.metadata["tz"]  # the terminal's clock zone, read through it
    return terminal.route, attrs.evolve(meter, metadata=metadata)


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
