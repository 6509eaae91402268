"""The network model: areas (substations, feeders, transformer areas) as a tree, each with its
summary (boundary) meters and its member meters.

A summary meter measures the energy crossing the area's boundary: ``in`` (energy delivered
into the area, the transformer's low-voltage side) or ``out`` (energy leaving it, e.g. a
feeder passing on to a neighbouring area, or a member's export measured at the boundary).
A member meter measures a consumer inside the area, on a phase (``A``, ``B``, ``C`` or
``ABC`` for a three-phase connection; empty when not known).

The CSV form (``fep areas import|list``) is one file, one row per area or per meter of an
area, with the header ``area,name,kind,parent,meter,role,direction,phase``: a row with no
meter declares the area (name, kind, parent); a row with a meter links the meter to the
area (role, direction for summary meters, phase for members). An optional column
``capacity`` on an area's row gives its transformer's rated capacity in kVA (load analysis).
"""

from __future__ import annotations

import csv
import enum
import io
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation

import attrs

from fep.errors import ConfigError


class AreaKind(enum.StrEnum):
    SUBSTATION = "substation"
    FEEDER = "feeder"
    TRANSFORMER = "transformer"


class Role(enum.StrEnum):
    SUMMARY = "summary"
    MEMBER = "member"


class Direction(enum.StrEnum):
    IN = "in"
    OUT = "out"


PHASES = ("", "A", "B", "C", "ABC")


@attrs.frozen
class Area:
    """One node of the network tree."""

    id: str
    name: str = ""
    kind: AreaKind = AreaKind.TRANSFORMER
    parent: str | None = None
    # The rated capacity of the area's transformer in kVA (load analysis), when given.
    capacity: Decimal | None = None


@attrs.frozen
class AreaMeter:
    """A meter's place in an area: its role, the direction it measures (summary meters) and
    its phase (members)."""

    area: str
    meter: str
    role: Role = Role.MEMBER
    direction: Direction = Direction.IN
    phase: str = ""


@attrs.frozen
class Network:
    """Areas and their meters, checked to form a tree (``check``)."""

    areas: tuple[Area, ...] = ()
    meters: tuple[AreaMeter, ...] = ()

    def area(self, area_id: str) -> Area | None:
        return next((a for a in self.areas if a.id == area_id), None)

    def children(self, area_id: str | None) -> list[Area]:
        return [a for a in self.areas if a.parent == area_id]

    def subtree(self, area_id: str) -> list[Area]:
        """The area and every area below it, depth first."""
        found = self.area(area_id)
        if found is None:
            return []
        out = [found]
        for child in self.children(area_id):
            out += self.subtree(child.id)
        return out

    def path(self, area_id: str) -> list[Area]:
        """The area's ancestors from the root down to the area itself."""
        out: list[Area] = []
        current = self.area(area_id)
        while current is not None and current not in out:
            out.insert(0, current)
            current = self.area(current.parent) if current.parent else None
        return out

    def summary(self, area_id: str) -> list[AreaMeter]:
        return [m for m in self.meters if m.area == area_id and m.role == Role.SUMMARY]

    def members(self, area_id: str) -> list[AreaMeter]:
        return [m for m in self.meters if m.area == area_id and m.role == Role.MEMBER]

    def areas_of(self, meter: str) -> list[str]:
        return sorted({m.area for m in self.meters if m.meter == meter})


def check(network: Network) -> None:
    """Refuse what is not a tree of areas with well-placed meters (ConfigError)."""
    ids = [a.id for a in network.areas]
    seen: set[str] = set()
    for area_id in ids:
        if area_id in seen:
            raise ConfigError(f"area {area_id!r} is declared twice", key="area")
        seen.add(area_id)
    for area in network.areas:
        if area.parent is not None and area.parent not in seen:
            raise ConfigError(f"area {area.id!r}: no parent area {area.parent!r}", key="parent")
        if len(network.path(area.id)) and network.path(area.id)[0].parent is not None:
            raise ConfigError(f"area {area.id!r} is part of a cycle of parents", key="parent")
    links: set[tuple[str, str]] = set()
    for link in network.meters:
        if link.area not in seen:
            raise ConfigError(f"meter {link.meter!r}: no area {link.area!r}", key="area")
        if (link.area, link.meter) in links:
            raise ConfigError(f"meter {link.meter!r} is listed twice in area {link.area!r}",
                              key="meter")
        links.add((link.area, link.meter))
        if link.phase not in PHASES:
            raise ConfigError(f"meter {link.meter!r}: phase {link.phase!r} is not one of "
                              f"{', '.join(p or '(empty)' for p in PHASES)}", key="phase")


COLUMNS = ("area", "name", "kind", "parent", "meter", "role", "direction", "phase")
# Written only when an area has a capacity (the import takes it either way).
CAPACITY = "capacity"


def _capacity(text: str, line: int) -> Decimal | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal(-1)
    if not value.is_finite() or value <= 0:
        raise ConfigError(f"line {line}: capacity {text!r} is not a positive number of kVA",
                          key=CAPACITY)
    return value


def _enum(kind: type[enum.StrEnum], text: str, default: enum.StrEnum, line: int,
          key: str) -> enum.StrEnum:
    if not text:
        return default
    try:
        return kind(text.strip().lower())
    except ValueError:
        choices = ", ".join(str(v) for v in kind)
        raise ConfigError(f"line {line}: {key} {text!r} is not one of {choices}",
                          key=key) from None


def read_csv(text: str, file: str = "<areas>") -> Network:
    """The network a CSV text describes (see the module's docstring), checked."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if "area" not in (reader.fieldnames or []):
        raise ConfigError("missing column area", file=file)
    areas: list[Area] = []
    meters: list[AreaMeter] = []
    for line, row in enumerate(reader, start=2):
        area_id = (row.get("area") or "").strip()
        if not area_id:
            raise ConfigError(f"line {line}: area must not be empty", file=file, key="area")
        meter = (row.get("meter") or "").strip()
        try:
            if not meter:
                kind = _enum(AreaKind, row.get("kind") or "", AreaKind.TRANSFORMER, line, "kind")
                areas.append(Area(area_id, (row.get("name") or "").strip(), AreaKind(kind),
                                  (row.get("parent") or "").strip() or None,
                                  _capacity(row.get(CAPACITY) or "", line)))
                continue
            role = _enum(Role, row.get("role") or "", Role.MEMBER, line, "role")
            direction = _enum(Direction, row.get("direction") or "", Direction.IN, line,
                              "direction")
            meters.append(AreaMeter(area_id, meter, Role(role), Direction(direction),
                                    (row.get("phase") or "").strip().upper()))
        except ConfigError as e:
            raise ConfigError(e.message, file=file, key=e.key) from None
    network = Network(tuple(areas), tuple(meters))
    try:
        check(network)
    except ConfigError as e:
        raise ConfigError(e.message, file=file, key=e.key) from None
    return network


def write_csv(network: Network) -> str:
    """The CSV form ``read_csv`` reads back: each area's row, then its meters' rows (with
    the column ``capacity`` when an area has one)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    capacities = any(a.capacity is not None for a in network.areas)
    writer.writerow(COLUMNS + ((CAPACITY,) if capacities else ()))
    for area in network.areas:
        extra: tuple[str, ...] = ()
        if capacities:
            extra = ("" if area.capacity is None else format(area.capacity, "f"),)
        writer.writerow((area.id, area.name, str(area.kind), area.parent or "", "", "", "", "",
                         *extra))
        for link in network.meters:
            if link.area == area.id:
                writer.writerow((link.area, "", "", "", link.meter, str(link.role),
                                 str(link.direction) if link.role == Role.SUMMARY else "",
                                 link.phase) + (("",) if capacities else ()))
    return out.getvalue()


def merge(old: Network, new: Network) -> Network:
    """``new`` imported over ``old``: areas in ``new`` replace those of the same id, and the
    meter lists of every area ``new`` names are replaced by ``new``'s."""
    named = {a.id for a in new.areas} | {m.area for m in new.meters}
    areas = [a for a in old.areas if a.id not in {b.id for b in new.areas}] + list(new.areas)
    meters = [m for m in old.meters if m.area not in named] + list(new.meters)
    merged = Network(tuple(areas), tuple(meters))
    check(merged)
    return merged


def tree_lines(network: Network, roots: Iterable[Area] | None = None, depth: int = 0) -> list[str]:
    """The tree as indented lines: ``id (kind) name: S summary, M members``."""
    lines: list[str] = []
    for area in (roots if roots is not None else network.children(None)):
        summary, members = network.summary(area.id), network.members(area.id)
        lines.append(f"{'  ' * depth}{area.id} ({area.kind}) {area.name}".rstrip()
                     + f": {len(summary)} summary, {len(members)} members")
        lines += tree_lines(network, network.children(area.id), depth + 1)
    return lines


def members_of(network: Network, area_ids: Sequence[str]) -> list[str]:
    return sorted({m.meter for a in area_ids for m in network.members(a)})
