"""Concentrators: a device at the head of a line (typically RS-232) that is itself polled
and relays to the meters behind it, which it owns.

The model (docs/channels/serial.md): a concentrator is an ordinary meter record, read with
its own protocol at its own address. A meter it owns names it in its metadata
(``concentrator = ID``) and has the concentrator's line as its route, with its own address
(``serial:/dev/ttyS3:9600:8E1@000000000002``). All of them share the line, so they are read
one at a time; the concentrator is read first in each cycle and, when it does not answer,
the meters behind it are not tried that cycle (each would only wait out its own timeout).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from fep.channels.forwarding import concentrator_id
from fep.channels.routes import resource_of
from fep.collect.dlt698_route import terminal_id
from fep.errors import ConfigError, FepError
from fep.model import Meter

CONCENTRATOR_KEY = "concentrator"


def concentrator_of(meter: Meter) -> str | None:
    """The id of the concentrator that owns ``meter``, or None."""
    owner = meter.metadata.get(CONCENTRATOR_KEY, "").strip()
    return owner or None


def check_owner(meter: Meter, known: Mapping[str, Meter]) -> None:
    """ConfigError naming the meter and key when ``meter``'s concentrator is unknown, is the
    meter itself, is owned in turn, or is on another line."""
    owner_id = concentrator_of(meter)
    if owner_id is None:
        return
    owner = known.get(owner_id)
    if owner is None:
        raise ConfigError(f"meter {meter.id}: concentrator {owner_id!r} is not a known meter",
                          key=CONCENTRATOR_KEY)
    if owner.id == meter.id or concentrator_of(owner) is not None:
        raise ConfigError(
            f"meter {meter.id}: concentrator {owner_id!r} cannot itself be behind a "
            "concentrator", key=CONCENTRATOR_KEY)
    if concentrator_id(meter.route) == owner.id:
        return  # forwarded through it (gw3761:OWNER:port=N)
    via = terminal_id(meter.route)
    if via is not None:
        # Read through its concentrator's own route (a DL/T 698.45 terminal's PROXY).
        if via != owner.id:
            raise ConfigError(f"meter {meter.id}: route {meter.route!r} reads through {via}, "
                              f"not through its concentrator {owner_id!r}",
                              key=CONCENTRATOR_KEY)
        return
    try:
        same_line = resource_of(meter.route) == resource_of(owner.route)
    except FepError as e:
        raise ConfigError(f"meter {meter.id}: {e}", key=CONCENTRATOR_KEY) from None
    if not same_line:
        raise ConfigError(
            f"meter {meter.id}: route {meter.route!r} is not on the line of its concentrator "
            f"{owner_id} ({owner.route!r}); give the concentrator's route with this meter's "
            "@address",
            key=CONCENTRATOR_KEY,
        )


@attrs.frozen
class LineStep:
    """One meter to read on a line and, for a concentrator, the meters behind it that are
    read after it (and skipped when it fails)."""

    meter: Meter
    owned: tuple[Meter, ...] = ()


def line_order(meters: Sequence[Meter], known: Iterable[Meter] = ()) -> tuple[
    list[LineStep], list[tuple[Meter, ConfigError]]
]:
    """The read order of the meters of one line: in list order, each concentrator with
    the meters it owns right after it (a meter forwarded through it, route
    ``gw3761:OWNER:...``, is on its line but read on its own: the concentrator's job may
    be one its protocol does not do). Also the meters that cannot be read (a bad
    ``concentrator``) and why. ``known`` adds meters not on this line (for the error)."""
    by_id = {m.id: m for m in known}
    by_id.update({m.id: m for m in meters})
    bad: list[tuple[Meter, ConfigError]] = []
    owned: dict[str, list[Meter]] = {}
    for meter in meters:
        try:
            check_owner(meter, by_id)
        except ConfigError as e:
            bad.append((meter, e))
            continue
        owner_id = concentrator_of(meter)
        if owner_id is not None and concentrator_id(meter.route) != owner_id:
            owned.setdefault(owner_id, []).append(meter)
    refused = {m.id for m, _ in bad}
    steps: list[LineStep] = []
    on_line = {m.id for m in meters}
    for meter in meters:
        if meter.id in refused:
            continue
        owner_id = concentrator_of(meter)
        if owner_id is not None and owner_id in on_line and (
                concentrator_id(meter.route) != owner_id):
            continue  # read after its concentrator
        steps.append(LineStep(meter, tuple(owned.get(meter.id, ()))))
    return steps, bad
