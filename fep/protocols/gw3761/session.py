"""The Twisted side of Q/GDW 1376.1: ``Gw3761Protocol`` reads a concentrator over any client
endpoint (TCP to a concentrator that listens, a serial line) for ``fep read`` and jobs.

The read's state lives in ``client.py``; this module puts it in the session driver's shape
(fep/protocols/session.py) and logs what was skipped. Settings come from the meter's
``address`` (``A1:A2``, A2 in hex: ``4403:0004``) and its metadata (``fep read -o``):

``gw3761_points``   comma list of measuring points (default 1; ``fep read --point``)
``gw3761_items``    comma list of AFN:Fn (default ``0C:F2,0C:F129,0C:F25``; ``--fn``)
``gw3761_day``      day of class 2 daily/monthly data, ``YYYY-MM-DD`` (default yesterday)
``gw3761_from``, ``gw3761_to``  class 2 curve range, ISO times (terminal-local when naive;
                    ``--from``/``--to``; default yesterday 00:15 to today 00:15)
``gw3761_density``  curve density code (1: 15 min, 2: 30, 3: 60, 254: 5, 255: 1; default 1)
``gw3761_master``   master station address in A3 (0..127, default 0)
``gw3761_delay``    minutes a request stays valid (Tp; default none)
``gw3761_retries``  requests sent again after silence (default 1)
``tz``              the terminal's zone (default UTC+8)

Each point's records are filed under ``<meter id>/P<n>``, the terminal's own (P0, its clock
and events) under the meter id; ``source`` is the meter id.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from fep.errors import ConfigError, ProtocolError
from fep.interfaces import IClock, IEventReader, IMeterProtocol
from fep.model import Meter, MeterEvent, ObisCode, Reading, Record
from fep.protocols import actions as actions_
from fep.protocols.gw3761.archive import MAX_NUMBER, ArchiveSync, SyncReport
from fep.protocols.gw3761.archive import Failed as ArchiveFailed
from fep.protocols.gw3761.archive import Finished as ArchiveFinished
from fep.protocols.gw3761.archive import Noise as ArchiveNoise
from fep.protocols.gw3761.archive import Send as ArchiveSend
from fep.protocols.gw3761.client import (
    DEFAULT_ITEMS,
    ClientSettings,
    Failed,
    Finished,
    Gw3761Client,
    Noise,
    Resent,
    Send,
    Skipped,
    parse_item,
)
from fep.protocols.gw3761.frames import Address
from fep.protocols.gw3761.records import DEFAULT_TERMINAL_TZ
from fep.protocols.gw3761.services import PROTOCOL, ArchiveEntry
from fep.protocols.session import MeterSession, run_session

log = Logger(namespace="fep.protocols.gw3761")

CLOCK_OBIS = ObisCode(0, 0, 1, 0, 0)


def settings_for(meter: Meter, tz: tzinfo = DEFAULT_TERMINAL_TZ) -> ClientSettings:
    """ClientSettings from a concentrator's address and metadata; ConfigError names the key."""
    md = meter.metadata

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"meter {meter.id}: {key} {why}", key=key)

    def number(key: str, default: int | None) -> int | None:
        text = md.get(key, "").strip()
        if not text:
            return default
        try:
            return int(text)
        except ValueError:
            raise bad(key, "must be a whole number") from None

    zone = tz
    if md.get("tz"):
        try:
            zone = ZoneInfo(md["tz"])
        except (ZoneInfoNotFoundError, ValueError):
            raise bad("tz", f"names no known time zone ({md['tz']!r})") from None
    master = number("gw3761_master", 0) or 0
    try:
        address = Address.parse(meter.address or "", master)
    except ValueError as e:
        raise ConfigError(f"meter {meter.id}: {e}", key="address") from None
    points: list[int] = []
    for text in md.get("gw3761_points", "").split(","):
        if text.strip():
            try:
                point = int(text.strip().upper().removeprefix("P"))
            except ValueError:
                raise bad("gw3761_points", f"has {text.strip()!r}, not a point number") from None
            if not 0 <= point <= 2040:
                raise bad("gw3761_points", f"has {point}: points are 0..2040")
            points.append(point)
    items: list[tuple[int, int]] = []
    for text in md.get("gw3761_items", "").split(","):
        if text.strip():
            try:
                items.append(parse_item(text))
            except ValueError as e:
                raise bad("gw3761_items", str(e)) from None

    def when(key: str) -> datetime | None:
        text = md.get(key, "").strip()
        if not text:
            return None
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise bad(key, "is no ISO date and time") from None
        if value.tzinfo is not None:
            value = value.astimezone(zone).replace(tzinfo=None)
        return value

    day = None
    if md.get("gw3761_day", "").strip():
        try:
            day = date.fromisoformat(md["gw3761_day"].strip())
        except ValueError:
            raise bad("gw3761_day", "is no date (YYYY-MM-DD)") from None
    name = meter.id
    chosen = tuple(points) or (1,)
    return ClientSettings(
        address=address,
        points=chosen,
        items=tuple(items) or DEFAULT_ITEMS,
        day=day,
        since=when("gw3761_from"),
        until=when("gw3761_to"),
        density=number("gw3761_density", 1) or 1,
        retries=number("gw3761_retries", 1) or 0,
        meter=name,
        route=meter.route,
        tz=zone,
        delay=number("gw3761_delay", None),
        name_points=True,
    )



class Gw3761Session(MeterSession):
    """One Gw3761Client over one connection; ``done`` fires with the records."""

    def __init__(self, reactor: IReactorTime, meter: Meter, client: Gw3761Client,
                 timeout: float) -> None:  # fmt: skip
        super().__init__(reactor, timeout, meter=meter.id, route=meter.route, protocol=PROTOCOL,
                         steps=actions_.ClientSteps(client, send=Send, finished=Finished,
                                                   failed=Failed))  # fmt: skip
        self.meter = meter
        self.client = client

    def _fields(self) -> dict[str, Any]:
        return {"meter": self.meter.id, "route": self.meter.route, "protocol": PROTOCOL}

    def note(self, action: object) -> None:
        if isinstance(action, Noise):
            log.info("{meter}: {why}", why=action.why, **self._fields())
        elif isinstance(action, Skipped):
            log.info("{meter}: {what} not read: {why}", what=action.what, why=action.why,
                     **self._fields())  # fmt: skip
        elif isinstance(action, Resent):
            log.info("{meter}: {what} sent again (attempt {n})", what=action.what,
                     n=action.attempt, **self._fields())  # fmt: skip

    def ended(self, lost: bool) -> None:
        if lost:
            return
        c = self.client
        log.info(
            "{meter}: Q/GDW 1376.1 read done: {records} records, {skipped} items skipped, "
            "{noise} bad frames, {resent} requests resent, {confirmed} terminal frames "
            "confirmed",
            records=len(c.records), skipped=len(c.skipped), noise=c.noise, resent=c.resent,
            confirmed=c.confirmed, **self._fields(),
        )  # fmt: skip


@implementer(IMeterProtocol, IClock, IEventReader)
class Gw3761Protocol:
    """Q/GDW 1376.1 reads of a concentrator: class 1 (clock, current energy, instantaneous
    values), class 2 (daily and monthly frozen energy and demand, curves) and class 3
    (events) of its points, in batches of points per request. The clock: read from class 1
    F2, set by AFN 05 F31 (the terminal's own clock, not its meters'). Events: AFN 0E."""

    name = PROTOCOL
    commands: frozenset[str] = frozenset()

    def __init__(self, tz: tzinfo = DEFAULT_TERMINAL_TZ) -> None:
        self.tz = tz

    def read(self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
             ) -> Deferred[list[Record]]:  # fmt: skip
        try:
            settings = settings_for(meter, self.tz)
        except ConfigError as e:
            return fail(e)

        def now() -> datetime:
            return datetime.fromtimestamp(reactor.seconds(), UTC)

        session = Gw3761Session(reactor, meter, Gw3761Client(settings, now), timeout)
        result: Deferred[list[Record]] = run_session(reactor, endpoint, session, meter.route,
                                                     timeout)  # fmt: skip
        return result

    def _only(self, meter: Meter, **metadata: str) -> Meter:
        return attrs.evolve(meter, metadata={**meter.metadata, **metadata})

    def read_events(self, reactor: IReactorTime, endpoint: Any, meter: Meter,
                    since: datetime | None, timeout: float) -> Deferred[list[Record]]:  # fmt: skip
        """The terminal's important and general event records (AFN 0E F1, F2, pointers 0 to
        255) as MeterEvents, those at or after ``since`` when given."""

        def keep(records: list[Record]) -> list[Record]:
            return [r for r in records if isinstance(r, MeterEvent)
                    and (since is None or r.time >= since)]  # fmt: skip

        d = self.read(reactor, endpoint, self._only(meter, gw3761_items="0E:F1,0E:F2"), timeout)
        return d.addCallback(keep)

    def read_clock(self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
                   ) -> Deferred[datetime]:  # fmt: skip
        async def run() -> datetime:
            records = await self.read(reactor, endpoint,
                                      self._only(meter, gw3761_items="0C:F2"), timeout)
            for r in records:
                if isinstance(r, Reading) and r.obis == CLOCK_OBIS and r.meter_time:
                    return r.meter_time
            raise ProtocolError(f"meter {meter.id}: no terminal clock in the answer",
                                meter=meter.id, route=meter.route, protocol=PROTOCOL)

        return Deferred.fromCoroutine(run())

    def set_clock(self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
                  ) -> Deferred[Any]:  # fmt: skip
        """AFN 05 F31 with the server's time (the reactor's clock) as the request leaves,
        in the terminal's zone; fires with the clock sent (UTC)."""
        try:
            settings = attrs.evolve(settings_for(meter, self.tz), set_clock=True, items=())
        except ConfigError as e:
            return fail(e)

        def now() -> datetime:
            return datetime.fromtimestamp(reactor.seconds(), UTC)

        client = Gw3761Client(settings, now)
        session = Gw3761Session(reactor, meter, client, timeout)

        def sent(_: object) -> datetime | None:
            clock = client.clock_set
            return None if clock is None else clock.time.replace(tzinfo=settings.tz).astimezone(UTC)

        d: Deferred[Any] = run_session(reactor, endpoint, session, meter.route, timeout)
        return d.addCallback(sent)

    def sync_archive(self, reactor: IReactorTime, endpoint: Any, meter: Meter,
                     wanted: Sequence[ArchiveEntry], timeout: float, *,
                     repair: bool = True) -> Deferred[SyncReport]:  # fmt: skip
        """Read the concentrator's meter archive (AFN 0A F10, entry numbers 1 to its
        ``gw3761_archive_size``, default 2040), compare it with ``wanted``, write what
        differs (AFN 04 F10; ``repair=False`` only reports) and read it back."""
        try:
            settings = settings_for(meter, self.tz)
            size = int(meter.metadata.get("gw3761_archive_size") or MAX_NUMBER)
            client = ArchiveSync(settings.address, wanted, size=size, repair=repair,
                                 retries=settings.retries, meter=meter.id,
                                 route=meter.route)  # fmt: skip
        except ConfigError as e:
            return fail(e)
        except ValueError as e:
            return fail(ConfigError(f"meter {meter.id}: {e}", key="gw3761_archive_size"))
        steps = actions_.ClientSteps(client, send=ArchiveSend, finished=ArchiveFinished,
                                     failed=ArchiveFailed, result=lambda a: a.report)  # fmt: skip
        session = _ArchiveSession(reactor, timeout, meter=meter.id, route=meter.route,
                                  protocol=PROTOCOL, steps=steps)  # fmt: skip
        result: Deferred[SyncReport] = run_session(reactor, endpoint, session, meter.route,
                                                   timeout)  # fmt: skip
        return result


class _ArchiveSession(MeterSession):
    def note(self, action: object) -> None:
        if isinstance(action, ArchiveNoise):
            log.info("{meter}: {why}", why=action.why, meter=self.meter_id, route=self.route,
                     protocol=PROTOCOL)  # fmt: skip


__all__ = ["Gw3761Protocol", "Gw3761Session", "settings_for"]
