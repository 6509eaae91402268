"""Per-resource limits of the collection engine: which channel resource a job occupies and
how many jobs a resource takes at once, and connection permits per radio cell and APN.

A route's resource is its line (``fep.channels.routes.resource_of``: the route without any
``@address``), so the meters of one bus, one modem or one serial-server port are read one at
a time. Schemes configured as shared pools (``shared_lines = dialup=4``) put every route of
the scheme on one resource with that many lines. Permits cap how many sessions one radio
cell (meter metadata ``cell``) or APN (``apn``) is asked to serve at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

import attrs

from fep.channels.routes import resource_of as line_of
from fep.errors import ConfigError, FepError
from fep.model import Meter


def resource_of(route: str) -> str:
    """The resource a session on ``route`` occupies: the route without its ``@address``
    (the channel layer's line), or the route itself when it cannot be parsed."""
    try:
        return line_of(route)
    except FepError:
        return route.strip()


def parse_pools(text: str, key: str = "shared_lines") -> dict[str, int]:
    """``dialup=4, csd=2`` -> {"dialup": 4, "csd": 2}."""
    pools: dict[str, int] = {}
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        name, sep, count = part.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit() or int(count) <= 0:
            raise ConfigError(f"{part.strip()!r}: expected NAME=COUNT (COUNT > 0)", key=key)
        pools[name.strip().lower()] = int(count)
    return pools


@attrs.frozen
class ResourcePolicy:
    """Resource keys and capacities. ``pools`` maps a route scheme to the number of lines
    all its routes share (a modem pool); other resources take one job at a time."""

    pools: Mapping[str, int] = attrs.field(factory=dict)
    line_of: Callable[[str], str] = resource_of

    def key(self, route: str) -> str:
        scheme = route.partition(":")[0].strip().lower()
        if scheme in self.pools:
            return f"{scheme}:*"
        return self.line_of(route)

    def capacities(self) -> dict[str, int]:
        return {f"{scheme}:*": lines for scheme, lines in self.pools.items()}


class Permits:
    """Connection permits: at most ``limits[key]`` sessions at once per value of a meter's
    metadata ``key`` (``cell``: the radio cell or base station; ``apn``). A limit of 0 or a
    meter without the key is not limited."""

    def __init__(self, limits: Mapping[str, int]) -> None:
        self.limits = {k: n for k, n in limits.items() if n > 0}
        self.held: Counter[str] = Counter()

    def keys(self, meter: Meter) -> list[str]:
        return [
            f"{key}={meter.metadata[key]}"
            for key in self.limits
            if meter.metadata.get(key)
        ]

    def available(self, meter: Meter) -> bool:
        return all(
            self.held[k] < self.limits[k.partition("=")[0]] for k in self.keys(meter)
        )

    def take(self, meter: Meter) -> list[str]:
        keys = self.keys(meter)
        for k in keys:
            self.held[k] += 1
        return keys

    def give(self, keys: list[str]) -> None:
        for k in keys:
            self.held[k] -= 1
            if self.held[k] <= 0:
                del self.held[k]
