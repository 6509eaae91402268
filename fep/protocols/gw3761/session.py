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

import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.errors import ConfigError, FepError, ProtocolError
from fep.interfaces import (
    IClock,
    ICommands,
    IConcentratorReader,
    IEventReader,
    IMeterProtocol,
    IPushChannel,
    IPushHandler,
    IPushProtocol,
    IRecordSink,
)
from fep.model import (
    Meter,
    MeterEvent,
    ObisCode,
    PointRead,
    PointsRead,
    Reading,
    Record,
    utcnow,
)
from fep.protocols import actions as actions_
from fep.protocols.gw3761 import control
from fep.protocols.gw3761 import points as points_
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
    Reported,
    Resent,
    Send,
    Skipped,
    parse_item,
)
from fep.protocols.gw3761.frames import Address
from fep.protocols.gw3761.records import DEFAULT_TERMINAL_TZ
from fep.protocols.gw3761.reports import Bad, ConcentratorLink, Linked, Reply, Store, point_meters
from fep.protocols.gw3761.services import PROTOCOL, ArchiveEntry
from fep.protocols.session import Line, LinkPushHandler, MeterSession, run_session
from fep.ratelog import RateLimitedLog

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

    gives_back = True  # after the last answer: a heartbeat or report, not ours

    def __init__(self, reactor: IReactorTime, meter: Meter, client: Gw3761Client,
                 timeout: float) -> None:  # fmt: skip
        super().__init__(reactor, timeout, meter=meter.id, route=meter.route, protocol=PROTOCOL,
                         steps=actions_.ClientSteps(client, send=Send, finished=Finished,
                                                   failed=Failed))  # fmt: skip
        self.meter = meter
        self.client = client
        # Bad frames during the read: logged rate-limited (a concentrator sending junk in a
        # long read does not fill the log), with its address; counted in client.noise.
        self.noise_log = RateLimitedLog(log)
        self.noise_seen = 0

    def _fields(self) -> dict[str, Any]:
        return {"meter": self.meter.id, "route": self.meter.route, "protocol": PROTOCOL}

    def make_steps(self, line: Line) -> Any:
        # A GPRS session lent to this read also carries the terminal's reports: they go
        # to the channel's report handler (stored and confirmed after the read).
        self.client.hand_over = bool(IPushChannel.providedBy(self.transport))
        return super().make_steps(line)

    def unconsumed(self) -> bytes:
        return self.client.decoder.drain()

    def note(self, action: object) -> None:
        if isinstance(action, Reported):
            self._hand_over(action)
        elif isinstance(action, Noise):
            self.noise_seen += 1
            self.noise_log.info("{meter} ({address}): {why} ({noise} bad frames in this read)",
                                kind="gw3761-read:noise", why=action.why,
                                address=str(self.client.settings.address),
                                noise=self.noise_seen,
                                **self._fields())  # fmt: skip
        elif isinstance(action, Skipped):
            log.info("{meter}: {what} not read: {why}", what=action.what, why=action.why,
                     **self._fields())  # fmt: skip
        elif isinstance(action, Resent):
            log.info("{meter}: {what} sent again (attempt {n})", what=action.what,
                     n=action.attempt, **self._fields())  # fmt: skip

    def _hand_over(self, report: Reported) -> None:
        """A report the terminal sent during the read (or what came after the last answer,
        or the last answer's EC): its bytes go to the channel, whose report handler takes
        them once this read is done (stored under the meters behind the concentrator, then
        confirmed; events ACD says are there fetched)."""
        log.debug("{meter}: {count} bytes the concentrator sent by itself during the read "
                  "handed to the session's report handler", count=len(report.frame),
                  **self._fields())  # fmt: skip
        self.give_back(report.frame)

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


@implementer(IPushHandler)
class Gw3761PushHandler(LinkPushHandler):
    """A dialled-in concentrator's frames outside pulls (``reports.ConcentratorLink``):
    login, heartbeat and logout confirmed, reports stored and then confirmed, events
    pending fetched; bad input counted and logged (rate-limited) with the concentrator's
    meter id and address, the frame dropped, the session kept."""

    logger = log
    link: ConcentratorLink

    def _fields(self) -> dict[str, Any]:
        return {"meter": self.link.concentrator, "address": str(self.link.address or "?"),
                "route": self.source, "protocol": PROTOCOL}  # fmt: skip

    def inherit(self, older: object) -> None:
        """Take over from the handler this one replaces on the same session (after a pull):
        the event counter read, the address, the rate-limited log."""
        if not isinstance(older, Gw3761PushHandler):
            return
        if self.link.known_events is None:
            self.link.known_events = older.link.known_events
        if self.link.address is None:
            self.link.address = older.link.address
        self.events = older.events

    def connection_lost(self) -> None:
        if self.link.joiner.pending():
            self.link.stats.bad["multi-frame"] += 1
            self.events.warn("concentrator {meter} ({address}): a multi-frame report cut "
                             "short by the end of the connection", kind="gw3761:cut",
                             **self._fields())  # fmt: skip

    def _write(self, data: bytes) -> None:
        if self.reply is not None:
            self.reply(data)

    def _do(self, action: object) -> None:
        fields = self._fields()
        if isinstance(action, Reply):
            self._write(action.data)
        elif isinstance(action, Linked):
            log.info("concentrator {meter} ({address}): {what} confirmed", what=action.what,
                     **fields)  # fmt: skip
        elif isinstance(action, Store):
            self._stored(action)
        elif isinstance(action, Bad):
            self.events.warn(
                "concentrator {meter} ({address}): bad input dropped ({bad_kind}): {why}; "
                "{bad} bad frames on this session, the session goes on",
                kind=f"gw3761:{action.kind}", bad_kind=action.kind, why=action.why,
                bad=action.total, event="gw3761_bad_input", **fields)

    def _stored(self, action: Store) -> None:
        confirm = action.confirm
        self._store(
            action.records, what=action.what, fields=self._fields(),
            then=None if confirm is None else lambda: self._write(confirm),
            stored="concentrator {meter} ({address}): {what}: {count} records stored"
                   + (", confirmed" if confirm is not None else ""),
            not_stored="concentrator {meter} ({address}): {what} not stored (not confirmed: "
                       "the concentrator sends it again)")  # fmt: skip


@implementer(IMeterProtocol, IClock, IEventReader, IPushProtocol, IConcentratorReader,
             ICommands)
class Gw3761Protocol:
    """Q/GDW 1376.1 reads of a concentrator: class 1 (clock, current energy, instantaneous
    values), class 2 (daily and monthly frozen energy and demand, curves) and class 3
    (events) of its points, in batches of points per request. The clock: read from class 1
    F2, set by AFN 05 F31 (the terminal's own clock, not its meters'). Events: AFN 0E.
    Commands to the concentrator itself (fep.protocols.gw3761.control): ``terminal-reset``
    (AFN 01), ``parameter-read`` (AFN 0A F1, F3) and ``parameter-set`` (AFN 04 F1, F3)."""

    name = PROTOCOL
    commands: frozenset[str] = control.COMMANDS

    @staticmethod
    def check_command(meter: Meter, command: str, params: Any) -> None:
        """ConfigError naming the meter for a command's wrong parameters (when asked)."""
        try:
            control.check(command, params)
        except ConfigError as e:
            raise ConfigError(f"meter {meter.id}: {command}: {e.message}", key=e.key) from None

    def run_command(self, reactor: IReactorTime, endpoint: Any, meter: Meter, command: str,
                    params: Any, timeout: float, progress: Callable[[Any], None]
                    ) -> Deferred[Any]:  # fmt: skip
        """One command to the concentrator in one session; fires with what it did."""
        try:
            settings = settings_for(meter, self.tz)
            then = None
            if command == control.RESET:
                steps = control.reset_steps(params)
            elif command == control.READ:
                steps = control.read_steps(control.parse_fns(params))
            elif command == control.WRITE:
                changes = control.parse_changes(params)
                steps = control.read_steps(sorted(changes))
                then = control.write_steps(changes)
            else:
                raise ConfigError(f"meter {meter.id}: gw3761 has no command {command}",
                                  key="action")  # fmt: skip
        except ConfigError as e:
            return fail(e)
        client = control.Exchange(settings.address, steps, then=then, retries=settings.retries,
                                  meter=meter.id, route=meter.route)  # fmt: skip
        steps_ = actions_.ClientSteps(client, send=control.Send, finished=control.Finished,
                                      failed=control.Failed,
                                      result=lambda a: a.values)  # fmt: skip
        session = _ArchiveSession(reactor, timeout, meter=meter.id, route=meter.route,
                                  protocol=PROTOCOL, steps=steps_)  # fmt: skip

        def done(values: Any) -> dict[str, Any]:
            if command == control.RESET:
                kind = str(params.get("kind")).strip().lower()
                return {"reset": kind, "request": f"01:F{control.RESET_KINDS[kind]}"}
            read = control.flat(values)
            if command == control.WRITE:
                changes = control.parse_changes(params)
                wrong = [f"F{fn}.{k}" for fn, change in changes.items()
                         for k, v in change.items() if read.get(f"F{fn}.{k}") != v]
                if wrong:
                    raise ProtocolError(
                        f"concentrator {meter.id}: {', '.join(wrong)} read back as "
                        f"{', '.join(str(read.get(w)) for w in wrong)} after the write",
                        meter=meter.id, route=meter.route, protocol=PROTOCOL)
                return {f"F{fn}.{k}": v for fn, change in sorted(changes.items())
                        for k, v in change.items()}
            return read

        d: Deferred[Any] = run_session(reactor, endpoint, session, meter.route, timeout)
        return d.addCallback(done)

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

    def push_handler(
        self,
        meter: Meter,
        sink: IRecordSink,
        *,
        directory: Any,
        counters: Any,
        source: str,
        close: Callable[[], None],
        reply: Callable[[bytes], None] | None = None,
    ) -> Gw3761PushHandler:
        """The handler of a concentrator that dialled in (``meter``, protocol gw3761): its
        address from the meter list (else the login's), the meters behind it by point
        (``concentrator = <meter id>``, ``point = Pn``) from ``directory``."""
        try:
            settings = settings_for(meter, self.tz)
            address, tz, master = settings.address, settings.tz, settings.address.master
        except ConfigError as e:
            log.warn("{meter}: {error}; the concentrator's own address is taken",
                     meter=meter.id, error=str(e), protocol=PROTOCOL)  # fmt: skip
            address, tz, master = None, self.tz, 0
        meters: Sequence[Meter] = directory.all() if directory is not None else ()
        points = point_meters(meter.id, {m.id: m.metadata for m in meters})
        link = ConcentratorLink(meter.id, address, now=utcnow, clock=time.monotonic,
                                points=points, tz=tz, master=master)  # fmt: skip
        return Gw3761PushHandler(link, sink, reply=reply, source=source)

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

    # -- the meters behind it (IConcentratorReader) -----------------------------------------

    def curve_channels(self, concentrator: Meter) -> tuple[str, ...]:
        return (points_.curve_channel(),)

    def daily_times(self, concentrator: Meter, since: datetime, until: datetime
                    ) -> list[datetime]:  # fmt: skip
        return points_.daily_times(settings_for(concentrator, self.tz).tz, since, until)

    def read_points(self, reactor: IReactorTime, endpoint: Any, concentrator: Meter,
                    reads: Sequence[PointRead], timeout: float
                    ) -> Deferred[PointsRead]:  # fmt: skip
        """The points of ``reads`` in one session (fep.protocols.gw3761.points); a session
        that fails midway still fires with what it read, and the error."""
        try:
            settings = settings_for(concentrator, self.tz)
            for read in reads:
                minutes = read.period.total_seconds() / 60
                if read.ranges and minutes not in points_.DENSITIES:
                    raise ConfigError(
                        f"meter {concentrator.id}: no curve density of {minutes:g} min "
                        f"(one of {sorted(points_.DENSITIES)})", key="interval")
        except ConfigError as e:
            return fail(e)

        def now() -> datetime:
            return datetime.fromtimestamp(reactor.seconds(), UTC)

        client = points_.PointsClient(settings, reads, now)
        session = Gw3761Session(reactor, concentrator, client, timeout)

        def ended(outcome: object) -> Any:
            if isinstance(outcome, Failure):
                if not isinstance(outcome.value, FepError):
                    return outcome
                return client.result(outcome.value)
            return client.result()

        d: Deferred[Any] = run_session(reactor, endpoint, session, concentrator.route, timeout)
        return d.addBoth(ended)

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
        if isinstance(action, ArchiveNoise | control.Noise):
            log.info("{meter}: {why}", why=action.why, meter=self.meter_id, route=self.route,
                     protocol=PROTOCOL)  # fmt: skip


__all__ = ["Gw3761Protocol", "Gw3761PushHandler", "Gw3761Session", "settings_for"]
