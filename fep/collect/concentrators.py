"""Concentrators: a device at the head of a line (typically RS-232) that is itself polled
and relays to the meters behind it, which it owns.

The model (docs/channels/serial.md): a concentrator is an ordinary meter record, read with
its own protocol at its own address. A meter it owns names it in its metadata
(``concentrator = ID``) and has the concentrator's line as its route, with its own address
(``serial:/dev/ttyS3:9600:8E1@000000000002``). All of them share the line, so they are read
one at a time; the concentrator is read first in each cycle and, when it does not answer,
the meters behind it are not tried that cycle (each would only wait out its own timeout).

A concentrator whose protocol reads the meters behind it by measuring point (a Q/GDW 1376.1
data concentrator: fep.interfaces.IConcentratorReader) is different: its meters name it and
their ``point``, their route is the concentrator's (``gw3761:DCU1``, reached by forwarding),
not its line, and a task reading registers or load profiles reads them all in ONE job of the
concentrator (``point_groups``), whose outcome gives each meter its own (docs/collection.md,
"Concentrator jobs").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from fep.channels.forwarding import concentrator_id
from fep.channels.routes import resource_of
from fep.collect.dlt698_route import terminal_id
from fep.errors import ConfigError, FepError
from fep.interfaces import IConcentratorReader
from fep.model import Meter
from fep.protocols.registry import protocol_provides

CONCENTRATOR_KEY = "concentrator"
POINT_KEY = "point"
# Job parameter of a concentrator's job that reads the meters behind it by point:
# {meter id: point}.
CHILDREN = "children"
# Task kinds the meters behind a point-reading concentrator are read through it for; the
# others (events, clock, commands) are their own jobs on their own (forwarding) route.
THROUGH_KINDS = frozenset({"registers", "instantaneous", "objects", "load-profile"})
# Task option: ``via = points`` (the default) reads the meters behind a point-reading
# concentrator through its job; ``via = forward`` gives each its own job on its own route
# (AFN 10 forwarding to the meter with its own protocol).
VIA_KEY = "via"


def through_points(kind: str, options: Mapping[str, object]) -> bool:
    """Whether a task of ``kind`` with ``options`` reads the meters behind point-reading
    concentrators through them: yes unless ``via`` is ``forward``."""
    via = str(options.get(VIA_KEY) or "points").strip().lower()
    return kind in THROUGH_KINDS and via != "forward"


def concentrator_of(meter: Meter) -> str | None:
    """The id of the concentrator that owns ``meter``, or None."""
    owner = meter.metadata.get(CONCENTRATOR_KEY, "").strip()
    return owner or None


def reads_points(meter: Meter | None) -> bool:
    """Whether ``meter`` is a concentrator whose protocol reads the meters behind it by
    measuring point (IConcentratorReader)."""
    return meter is not None and protocol_provides(meter.protocol, IConcentratorReader)


def point_of(meter: Meter) -> int:
    """The measuring point (``point`` metadata, ``3`` or ``P3``) of a meter behind a
    concentrator; ConfigError naming the meter and key."""
    text = meter.metadata.get(POINT_KEY, "").strip()
    try:
        point = int(text.upper().removeprefix("P"))
    except ValueError:
        raise ConfigError(
            f"meter {meter.id}: behind concentrator {concentrator_of(meter)} it needs its "
            f"measuring point (point = 1..2040), not {text!r}", key=POINT_KEY) from None
    if not 1 <= point <= 2040:
        raise ConfigError(f"meter {meter.id}: point {point} is not 1..2040", key=POINT_KEY)
    return point


@attrs.frozen
class PointGroup:
    """A point-reading concentrator and the meters behind it that one job reads."""

    concentrator: Meter
    children: tuple[tuple[Meter, int], ...]


def point_groups(meters: Sequence[Meter], known: Iterable[Meter] = ()) -> tuple[
    list[PointGroup], list[Meter], list[tuple[Meter, ConfigError]]
]:
    """The meters of a run (``meters``) split into: the groups of the meters behind each
    point-reading concentrator (in list order; the concentrator need not be in ``meters``,
    ``known`` gives the others), the remaining meters (a concentrator with a group is its
    group's job), and the meters behind such a concentrator that cannot be read through it
    (no point, a point taken twice, a concentrator itself behind one) with why."""
    by_id = {m.id: m for m in known}
    by_id.update({m.id: m for m in meters})
    groups: dict[str, list[tuple[Meter, int]]] = {}
    taken: dict[tuple[str, int], str] = {}
    bad: list[tuple[Meter, ConfigError]] = []
    rest: list[Meter] = []
    for meter in meters:
        owner_id = concentrator_of(meter)
        owner = by_id.get(owner_id) if owner_id is not None else None
        if owner is None or not reads_points(owner):
            rest.append(meter)
            continue
        try:
            if owner.id == meter.id or concentrator_of(owner) is not None:
                raise ConfigError(f"meter {meter.id}: concentrator {owner.id!r} cannot itself "
                                  "be behind a concentrator", key=CONCENTRATOR_KEY)
            point = point_of(meter)
            other = taken.setdefault((owner.id, point), meter.id)
            if other != meter.id:
                raise ConfigError(f"meter {meter.id}: point {point} of concentrator {owner.id} "
                                  f"is meter {other}'s", key=POINT_KEY)
        except ConfigError as e:
            bad.append((meter, e))
            continue
        groups.setdefault(owner.id, []).append((meter, point))
    found = [PointGroup(by_id[owner_id], tuple(children))
             for owner_id, children in groups.items()]  # fmt: skip
    rest = [m for m in rest if m.id not in groups]
    return found, rest, bad


def check_owner(meter: Meter, known: Mapping[str, Meter]) -> None:
    """ConfigError naming the meter and key when ``meter``'s concentrator is unknown, is the
    meter itself, is owned in turn, or is on another line (meters behind a point-reading
    concentrator are reached through it, not on its line)."""
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
    if reads_points(owner) or concentrator_id(meter.route) == owner.id:
        return  # read by point through it, or forwarded through it (gw3761:OWNER:port=N)
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


def line_order(meters: Sequence[Meter],
               known: Mapping[str, Meter] | Iterable[Meter] = ()) -> tuple[
    list[LineStep], list[tuple[Meter, ConfigError]]
]:
    """The read order of the meters of one line: in list order, each concentrator with
    the meters it owns right after it (a meter forwarded through it, route
    ``gw3761:OWNER:...``, is on its line but read on its own: the concentrator's job may
    be one its protocol does not do). Also the meters that cannot be read (a bad
    ``concentrator``) and why. ``known`` adds meters not on this line (for the error): a
    mapping by id is taken as it is (it must hold these too), so a run's lines share one
    index of the fleet instead of making one each (a fleet of one meter per line would
    otherwise be indexed once per meter)."""
    if isinstance(known, Mapping):
        by_id = known
    else:
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
        if (owner_id is not None and concentrator_id(meter.route) != owner_id
                and not reads_points(by_id.get(owner_id))):
            owned.setdefault(owner_id, []).append(meter)
    refused = {m.id for m, _ in bad}
    steps: list[LineStep] = []
    on_line = {m.id for m in meters}
    for meter in meters:
        if meter.id in refused:
            continue
        owner_id = concentrator_of(meter)
        if owner_id is not None and owner_id in on_line and (
                concentrator_id(meter.route) != owner_id) and not reads_points(by_id[owner_id]):
            continue  # read after its concentrator
        steps.append(LineStep(meter, tuple(owned.get(meter.id, ()))))
    return steps, bad
