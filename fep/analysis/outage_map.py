"""The outage map: the area tree (substation > feeder > transformer area) with, per area, its
members out at the end of a period and the outages of the period, from the outages the
analysis stored (``outages``: kinds ``meter``, ``area`` and ``comms``). A pure function of
the network and the stored rows; the status page draws it as a tree."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import attrs

from fep.analysis.areas import Network, Role


@attrs.frozen
class MapRow:
    """One area of the tree, its figures counted over its members and those of every area
    below it (a meter counted once): ``out`` the members out at the period's end,
    ``outages`` the meter outages of the period and ``meters`` the members they concern;
    ``area_outages`` and ``suspected`` the area's own (a suspected outage from
    communication loss, ``suspected_open`` while it lasts). ``alert``: the area had an area
    outage or a suspected outage in the period."""

    area: str
    name: str
    kind: str
    parent: str | None
    depth: int
    members: int
    out: int
    outages: int
    meters: int
    area_outages: int
    suspected: int
    suspected_open: bool

    @property
    def alert(self) -> bool:
        return self.area_outages > 0 or self.suspected > 0

    def as_dict(self) -> dict[str, object]:
        return {**attrs.asdict(self), "alert": self.alert}


def outage_map(network: Network, outages: Iterable[Any], until: datetime) -> list[MapRow]:
    """The tree, depth first from the roots (areas in their stored order), of ``network``
    with the stored ``outages`` (fep.analysis.store.StoredOutage) of a period ending at
    ``until``: a meter is out at the end when its outage has no end yet or ends at or after
    ``until`` (the day's outage cut at the day's end)."""
    ids = {a.id for a in network.areas}
    children: dict[str | None, list[Any]] = defaultdict(list)
    for a in network.areas:
        children[a.parent if a.parent in ids else None].append(a)
    own: dict[str, set[str]] = defaultdict(set)
    for m in network.meters:
        if m.role == Role.MEMBER:
            own[m.area].add(m.meter)
    out: set[str] = set()
    meter_outages: dict[str, int] = defaultdict(int)
    area_outages: dict[str, int] = defaultdict(int)
    suspected: dict[str, int] = defaultdict(int)
    still_open: set[str] = set()
    for o in outages:
        if o.kind == "meter":
            meter_outages[o.subject] += 1
            if o.until is None or o.until >= until:
                out.add(o.subject)
        elif o.kind == "area":
            area_outages[o.subject] += 1
        elif o.kind == "comms":
            suspected[o.subject] += 1
            if o.until is None:
                still_open.add(o.subject)
    below: dict[str, set[str]] = {}

    def members_of(area: Any) -> set[str]:
        found = set(own[area.id])
        for child in children[area.id]:
            found |= members_of(child)
        below[area.id] = found
        return found

    rows: list[MapRow] = []

    def walk(area: Any, depth: int) -> None:
        members = below[area.id]
        hit = [m for m in members if meter_outages[m]]
        rows.append(MapRow(area.id, area.name, str(area.kind), area.parent, depth,
                           len(members), len(members & out),
                           sum(meter_outages[m] for m in hit), len(hit),
                           area_outages[area.id], suspected[area.id], area.id in still_open))
        for child in children[area.id]:
            walk(child, depth + 1)

    for root in children[None]:
        members_of(root)
        walk(root, 0)
    return rows
