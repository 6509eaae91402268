"""A concentrator's meter archive from the meter list, and its synchronisation: the meters
that name it (``concentrator = DCU1``) at their point (``point = n``) on their port (their
route ``gw3761:DCU1:port=N``, else metadata ``gw3761_port``), written to the concentrator
(AFN 04 F10) where its archive differs and read back (AFN 0A F10).

Entry numbers are the point numbers. The protocol code is 30 for DL/T 645-2007 and 1 for
DL/T 645-1997 (``dlt645_edition = 1997``); the baud is the route's ``baud`` (2400 when it
gives none)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from fep.channels.forwarding import concentrator_id, forwarding_target
from fep.channels.routes import parse_route
from fep.collect.concentrators import concentrator_of
from fep.directory import addressed
from fep.errors import ConfigError, FepError
from fep.model import Meter
from fep.protocols.gw3761.archive import SyncReport
from fep.protocols.gw3761.services import ArchiveEntry, encode_archive_entry
from fep.reactors import IConnectingReactor

PROTOCOL = "gw3761"

log = Logger(namespace="fep.collect.archive_sync")


@attrs.frozen
class Problem:
    """A meter behind the concentrator that cannot be put in its archive, and why."""

    meter: str
    why: str


def _entry(concentrator: Meter, meter: Meter) -> ArchiveEntry:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"meter {meter.id}: {why}", key="point")

    text = meter.metadata.get("point", "").strip().upper().removeprefix("P")
    if not text.isdigit() or not 1 <= int(text) <= 2040:
        raise bad(f"point {meter.metadata.get('point', '')!r} is not a point number 1..2040")
    point = int(text)
    baud = 2400
    if concentrator_id(meter.route) == concentrator.id:
        try:
            _, settings = forwarding_target(parse_route(meter.route))
        except FepError as e:
            raise bad(str(e)) from None
        port, baud = settings.port, settings.baud
    elif meter.metadata.get("gw3761_port", "").strip().isdigit():
        port = int(meter.metadata["gw3761_port"])
    else:
        raise bad(f"no port on {concentrator.id}: give the route gw3761:{concentrator.id}:"
                  "port=N or metadata gw3761_port")  # fmt: skip
    if meter.protocol != "dlt645":
        raise bad(f"protocol {meter.protocol}: fep writes DL/T 645 meters to an archive")
    edition = (meter.metadata.get("dlt645_edition") or "").strip()
    address = (addressed(meter).address or "").rjust(12, "0")
    if not address.isdigit() or len(address) != 12:
        raise bad(f"address {address!r} is not a 12-digit DL/T 645 address")
    try:
        entry = ArchiveEntry(point, point, port, address, 1 if edition == "1997" else 30, baud)
        encode_archive_entry(entry)  # the standard's port and baud codes
    except ValueError as e:
        raise bad(str(e)) from None
    return entry


def wanted_archive(concentrator: Meter, meters: Iterable[Meter]
                   ) -> tuple[list[ArchiveEntry], list[Problem]]:  # fmt: skip
    """The archive fep wants ``concentrator`` to hold, from the meters that name it, and
    the meters that cannot be in it (a bad point, port, protocol or address, a point taken
    by an earlier meter of the list)."""
    entries: dict[int, tuple[str, ArchiveEntry]] = {}
    problems: list[Problem] = []
    for meter in meters:
        if concentrator_of(meter) != concentrator.id or meter.id == concentrator.id:
            continue
        try:
            entry = _entry(concentrator, meter)
        except ConfigError as e:
            problems.append(Problem(meter.id, e.message))
            continue
        if entry.point in entries:
            problems.append(Problem(meter.id, f"meter {meter.id}: point {entry.point} is "
                                    f"meter {entries[entry.point][0]}'s"))  # fmt: skip
            continue
        entries[entry.point] = (meter.id, entry)
    return [entries[p][1] for p in sorted(entries)], problems


def report_dict(concentrator: Meter, report: SyncReport, problems: Iterable[Problem]
                ) -> dict[str, Any]:  # fmt: skip
    """A synchronisation's report as JSON: the concentrator's id and the report's fields,
    and the meters left out."""
    return {"id": concentrator.id, **report.as_dict(),
            "problems": [{"meter": p.meter, "why": p.why} for p in problems]}  # fmt: skip


def sync(reactor: IConnectingReactor, endpoint_for: Callable[[str], IStreamClientEndpoint],
         protocol: Any, concentrator: Meter, meters: Iterable[Meter], timeout: float,
         repair: bool = True) -> Deferred[dict[str, Any]]:  # fmt: skip
    """Synchronise ``concentrator``'s archive with ``meters`` over its route; fires with
    ``report_dict``. ``protocol`` is the gw3761 protocol (its ``sync_archive``)."""

    async def run() -> dict[str, Any]:
        if concentrator.protocol != PROTOCOL:
            raise ConfigError(f"meter {concentrator.id} is a {concentrator.protocol} meter, "
                              "not a gw3761 concentrator")  # fmt: skip
        wanted, problems = wanted_archive(concentrator, meters)
        endpoint = endpoint_for(concentrator.route)
        report: SyncReport = await protocol.sync_archive(reactor, endpoint, concentrator,
                                                         wanted, timeout, repair=repair)
        return report_dict(concentrator, report, problems)

    return Deferred.fromCoroutine(run())




class ArchiveSyncDoor:
    """Synchronisation by concentrator id for the daemon's doors (control socket, API):
    the meter list from ``directory``, the concentrator's route through ``endpoint_for``
    (the daemon's channels: its line lock, a GPRS session)."""

    def __init__(self, reactor: IConnectingReactor,
                 endpoint_for: Callable[[str], IStreamClientEndpoint],
                 protocol_for: Callable[[str], Any], directory: Any,
                 timeout: float) -> None:  # fmt: skip
        self.reactor = reactor
        self.endpoint_for = endpoint_for
        self.protocol_for = protocol_for
        self.directory = directory
        self.timeout = timeout

    def __call__(self, concentrator_id: str, repair: bool, who: str) -> Deferred[dict[str, Any]]:
        concentrator = self.directory.get(concentrator_id)
        if concentrator is None:
            from twisted.internet.defer import fail

            return fail(ConfigError(f"no meter {concentrator_id!r} in the meter list"))
        log.info("{who} synchronises the archive of concentrator {meter}{check}", who=who,
                 meter=concentrator_id, route=concentrator.route, protocol=PROTOCOL,
                 check="" if repair else " (check only)")  # fmt: skip

        def done(report: dict[str, Any]) -> dict[str, Any]:
            before = report.get("before") or {}
            log.info("concentrator {meter} archive: {added} missing, {changed} different, "
                     "{removed} not wanted; {written} written; in step: {in_step}",
                     meter=concentrator_id, route=concentrator.route, protocol=PROTOCOL,
                     added=len(before.get("added", ())), changed=len(before.get("changed", ())),
                     removed=len(before.get("removed", ())), written=report.get("written"),
                     in_step=report.get("in_step"))  # fmt: skip
            return report

        return sync(self.reactor, self.endpoint_for, self.protocol_for(concentrator.protocol),
                    concentrator, self.directory.all(), self.timeout,
                    repair=repair).addCallback(done)  # fmt: skip


__all__ = ["ArchiveSyncDoor", "Problem", "report_dict", "sync", "wanted_archive"]
