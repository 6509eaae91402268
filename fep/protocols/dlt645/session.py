"""The Twisted side of DL/T 645: ``Dlt645Protocol`` reads a meter over any client endpoint
(TCP to a serial server or a GPRS modem in transparent mode, an RS-485 serial line) for
``fep read`` and scheduled jobs.

The session's state lives in ``client.py``; this module puts it in the session driver's
shape (fep/protocols/session.py moves the bytes and runs the answer timer), logs what was
skipped and hands the records back. Settings come from the
meter's ``address`` (12 BCD digits; default ``AAAAAAAAAAAA``, the wildcard, for a
point-to-point line) and its metadata (``fep read -o KEY=VALUE``):

``dlt645_items``     comma list of data identifiers in hex (default: a head-end set)
``dlt645_edition``   ``2007`` (default) or ``1997``
``dlt645_wakeup``    ``yes`` (default): FE FE FE FE before each request; ``no``
``dlt645_retries``   requests sent again after silence or a damaged answer (default 1)
``dlt645_profile_blocks``  load records per read of DI 06000000-06000002 (default 4)
``dlt645_profile_since``   start of a DI 06000001 read, ISO time (default: the last blocks)
``dlt645_profile_period``  minutes between load records (default 15)
``tz``               the meter's zone for its local clock (default UTC+8)
``dlt645_password``  (a secret) the password for commands and clock writes: its level and six
                     digits, ``02123456`` or ``02:123456`` (level 02, password 123456)
``dlt645_operator``  the operator code (8 digits) commands carry (default ``00000000``)
``dlt645_clock_set`` ``write`` (04000101/04000102 with the password; the default when the
                     meter has a password) or ``broadcast`` (broadcast time, 08)

Commands (``run_command``; fep.collect.tasks.COMMANDS): ``disconnect`` (relay control
trip), ``reconnect`` (close allowed; ``mode=direct`` for direct close), ``relay-state``
(status word 3), ``demand-reset``, ``event-log-clear`` (``di=`` one event family, default
all), ``parameter-set`` (``alarm=on|off``, ``guarantee=on|off``); relay control takes
``valid=MINUTES`` (how long the meter may act on it, default 15). DL/T 645-1997 meters
(``dlt645_edition = 1997``) have only ``demand-reset`` and the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from twisted.internet.defer import Deferred, TimeoutError, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from fep.errors import ConfigError, FrameError, NotSupported, ProtocolError
from fep.interfaces import (
    IClock,
    ICommands,
    IConcentratorPipe,
    IMeterProtocol,
    IProfileReader,
    IPushChannel,
    IPushHandler,
    IPushProtocol,
    IRecordSink,
)
from fep.model import Meter, Reading, Record, utcnow
from fep.protocols import actions as actions_
from fep.protocols.dlt645 import dataid
from fep.protocols.dlt645.client import (
    CLOCK_OBIS,
    DATE_DI,
    PROFILE_SINCE,
    TIME_DI,
    ClientSettings,
    Dlt645Client,
    Failed,
    Finished,
    Noise,
    Reported,
    Resent,
    Send,
    Skipped,
    di_text,
)
from fep.protocols.dlt645.control import (
    STATUS_WORD_3,
    CommandClient,
    Done,
    Step,
    relay_state,
)
from fep.protocols.dlt645.dataid import DEFAULT_METER_TZ, parse_di
from fep.protocols.dlt645.frames import WILDCARD_ADDRESS, Frame
from fep.protocols.dlt645.reports import (
    RESET_PASSWORD,
    Bad,
    Reply,
    ReportLink,
    ReportMeter,
    Store,
)
from fep.protocols.dlt645.reports import Done as ReportDone
from fep.protocols.dlt645.services import (
    ALL_EVENTS,
    PROTOCOL,
    Password,
    RelayAction,
    broadcast_time_sync,
    decode_read,
    event_reset,
    max_demand_reset,
    max_demand_reset_1997,
    read_data,
    read_data_1997,
    relay_control,
    write_data,
    write_data_1997,
)
from fep.protocols.session import (
    Line,
    LinkPushHandler,
    MeterSession,
    abort,
    run_session,
    run_session_within,
)
from fep.ratelog import RateLimitedLog

log = Logger(namespace="fep.protocols.dlt645")

_YES = ("yes", "y", "true", "1", "on")
_NO = ("no", "n", "false", "0", "off")


def settings_for(meter: Meter, tz: tzinfo = DEFAULT_METER_TZ) -> ClientSettings:
    """ClientSettings from a meter's address and metadata; ConfigError names the key."""
    md = meter.metadata

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"meter {meter.id}: {key} {why}", key=key)

    def number(key: str, default: int) -> int:
        text = md.get(key, "").strip()
        if not text:
            return default
        try:
            return int(text)
        except ValueError:
            raise bad(key, "must be a whole number") from None

    edition = number("dlt645_edition", 2007)
    if edition not in (2007, 1997):
        raise bad("dlt645_edition", f"is 2007 or 1997, not {edition}")
    items: list[int] = []
    for text in md.get("dlt645_items", "").replace(";", ",").split(","):
        if not text.strip():
            continue
        try:
            di = parse_di(text)
        except ValueError:
            raise bad("dlt645_items", f"has {text.strip()!r}, not a DI in hex") from None
        if len(text.strip().replace(" ", "")) != (8 if edition == 2007 else 4):
            raise bad("dlt645_items", f"has {text.strip()!r}: DL/T 645-{edition} DIs are "
                      f"{8 if edition == 2007 else 4} hex digits")  # fmt: skip
        items.append(di)
    wakeup_text = md.get("dlt645_wakeup", "yes").strip().lower()
    if wakeup_text not in _YES + _NO:
        raise bad("dlt645_wakeup", "is yes or no")
    zone = tz
    if md.get("tz"):
        try:
            zone = ZoneInfo(md["tz"])
        except (ZoneInfoNotFoundError, ValueError):
            raise bad("tz", f"names no known time zone ({md['tz']!r})") from None
    since: datetime | None = None
    if md.get("dlt645_profile_since"):
        try:
            since = datetime.fromisoformat(md["dlt645_profile_since"].strip())
        except ValueError:
            raise bad("dlt645_profile_since", "is no ISO date and time") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=zone)  # a bare time is the meter's wall clock
    address = (meter.address or "").strip() or WILDCARD_ADDRESS
    try:
        return ClientSettings(
            address=address,
            edition=edition,
            items=tuple(items),
            wakeup=wakeup_text in _YES,
            retries=number("dlt645_retries", 1),
            meter=meter.id,
            route=meter.route,
            tz=zone,
            profile_blocks=number("dlt645_profile_blocks", 4),
            profile_since=since,
            profile_period=timedelta(minutes=number("dlt645_profile_period", 15)),
        )
    except ValueError as e:
        text = str(e)
        key = "address" if "address" in text else "dlt645_items" if " DI " in text else None
        raise ConfigError(f"meter {meter.id}: {e}", key=key) from None



class Dlt645Session(MeterSession):
    """One Dlt645Client over one connection; ``done`` fires with the records."""

    gives_back = True  # after the last answer: a report, not ours

    def __init__(
        self, reactor: IReactorTime, meter: Meter, client: Dlt645Client, timeout: float
    ) -> None:
        super().__init__(reactor, timeout, meter=meter.id, route=meter.route, protocol=PROTOCOL,
                         steps=actions_.ClientSteps(client, send=Send, finished=Finished,
                                                   failed=Failed))
        self.meter = meter
        self.client = client

    def _log_fields(self) -> dict[str, Any]:
        return {"meter": self.meter.id, "route": self.meter.route, "protocol": PROTOCOL}

    def make_steps(self, line: Line) -> Any:
        # A GPRS session lent to this read also carries what the DTU's meters report by
        # themselves: those frames go to the session's report handler after the read.
        self.client.hand_over = bool(IPushChannel.providedBy(self.transport))
        return super().make_steps(line)

    def unconsumed(self) -> bytes:
        return self.client.decoder.drain()

    def note(self, action: object) -> None:
        if isinstance(action, Reported):
            log.info("{meter}: a frame meter {address} sent by itself during the read ({why}) "
                     "handed to the session's report handler", address=action.address,
                     why=action.why, **self._log_fields())  # fmt: skip
            self.give_back(action.frame)
        elif isinstance(action, Resent):
            log.info(
                "{meter}: DL/T 645 request sent again ({why}, attempt {n})",
                why=action.why,
                n=action.attempt,
                **self._log_fields(),
            )
        elif isinstance(action, Noise):
            log.info("{meter}: line noise skipped: {why}", why=action.why, **self._log_fields())
        elif isinstance(action, Skipped):
            log.info(
                "{meter}: DI {di} not read: {why}",
                di=action.di,
                why=action.why,
                **self._log_fields(),
            )

    def ended(self, lost: bool) -> None:
        if lost:
            return
        c = self.client
        log.info(
            "{meter}: DL/T 645 read done: {records} records, {skipped} items skipped, "
            "{noise} damaged frames, {garbage} garbage bytes, {resent} requests resent",
            records=len(c.records),
            skipped=len(c.skipped),
            noise=c.noise,
            garbage=c.line_garbage,
            resent=c.resent,
            stale=c.stale,
            **self._log_fields(),
        )


# -- commands ---------------------------------------------------------------------------

COMMANDS_2007: Final = (
    "disconnect", "reconnect", "relay-state", "demand-reset", "event-log-clear",
    "parameter-set",
)
COMMANDS_1997: Final = ("demand-reset",)
DEFAULT_OPERATOR: Final = "00000000"
# Command params the engine and the doors add besides the command's own (not parameters).
_ENGINE_PARAMS: Final = frozenset({"progress", "attempts", "retry_delay", "valid", "reason",
                                   "plan", "deadline"})
DEFAULT_VALIDITY: Final = timedelta(minutes=15)
# A meter takes a broadcast time only within 5 minutes of its own clock, never within
# 5 minutes of its midnight, and once a day (DL/T 645-2007 section 6 "broadcast time").
BROADCAST_LIMIT: Final = 300.0
# How near the set time a clock must be read back to count as set.
SET_TOLERANCE: Final = 2.0


def password_for(meter: Meter) -> Password | None:
    """The meter's ``dlt645_password`` (level and six digits), None when it has none."""
    text = (meter.metadata.get("dlt645_password") or "").strip().replace(":", "")
    if not text:
        return None
    if len(text) != 8 or not text.isdigit():
        # Never the value in the message: it is a secret.
        raise ConfigError(f"meter {meter.id}: dlt645_password is its level and six digits "
                          "(e.g. 02 and 123456: 02123456)", key="dlt645_password")
    return Password(int(text[:2]), text[2:])


def operator_for(meter: Meter) -> str:
    text = (meter.metadata.get("dlt645_operator") or DEFAULT_OPERATOR).strip()
    if len(text) > 8 or not text.isdigit():
        raise ConfigError(f"meter {meter.id}: dlt645_operator is up to 8 digits, not {text!r}",
                          key="dlt645_operator")
    return text.rjust(8, "0")


def _needs_password(meter: Meter, what: str) -> Password:
    password = password_for(meter)
    if password is None:
        raise ConfigError(f"meter {meter.id}: {what} needs the meter's password "
                          "(dlt645_password in the secret store)", key="dlt645_password")
    return password


def _on_off(meter: Meter, name: str, text: Any) -> bool:
    value = str(text).strip().lower()
    if value in _YES:
        return True
    if value in _NO:
        return False
    raise ConfigError(f"meter {meter.id}: parameter-set {name}= is on or off, not {text!r}",
                      key=name)



class Dlt645CommandSession(MeterSession):
    """One CommandClient over one connection; ``done`` fires with the answer frames."""

    def __init__(self, reactor: IReactorTime, meter: Meter, client: CommandClient,
                 timeout: float) -> None:
        super().__init__(reactor, timeout, meter=meter.id, route=meter.route, protocol=PROTOCOL,
                         steps=actions_.ClientSteps(client, send=Send, finished=Done,
                                                   failed=Failed, result=lambda done: done.answers))
        self.meter = meter
        self.client = client

    def note(self, action: object) -> None:
        fields = {"meter": self.meter.id, "route": self.meter.route, "protocol": PROTOCOL}
        if isinstance(action, Resent):
            log.info("{meter}: DL/T 645 {command} request sent again ({why}, attempt {n})",
                     command=self.client.command, why=action.why, n=action.attempt, **fields)
        elif isinstance(action, Noise):
            log.info("{meter}: line noise skipped: {why}", why=action.why, **fields)


def _local_now(reactor: IReactorTime, tz: tzinfo, ahead: float = 0.0) -> datetime:
    """The meter's wall clock time now (naive), to the nearest second."""
    when = datetime.fromtimestamp(round(reactor.seconds() + ahead), UTC)
    return when.astimezone(tz).replace(tzinfo=None)


def _clock_of(answers: Sequence[Frame | None], at: int, settings: ClientSettings) -> datetime:
    """The meter's clock (UTC) from the answers to a date read and a time read at ``at``."""
    edition = settings.edition
    parts: list[Any] = []
    for frame, di in ((answers[at], DATE_DI[edition]), (answers[at + 1], TIME_DI[edition])):
        if frame is None:
            raise ValueError("no clock answer")
        data = decode_read(frame, di).data
        (reading,) = dataid.decode(di, data, meter=settings.meter or settings.address,
                                   edition=edition, tz=settings.tz)
        parts.append(reading.value)
    local = datetime.fromisoformat(f"{parts[0]}T{parts[1]}")
    return local.replace(tzinfo=settings.tz).astimezone(UTC)


CONTROL_MODES = ("forward", "afn05")


def control_mode(meter: Meter) -> str:
    """How a meter behind a Q/GDW 1376.1 concentrator is disconnected and reconnected
    (metadata ``gw3761_control``): ``forward`` (the default: a DL/T 645 relay command
    forwarded to it) or ``afn05`` (the concentrator's own remote control of its point)."""
    mode = str(meter.metadata.get("gw3761_control", "") or "forward").strip().lower()
    if mode not in CONTROL_MODES:
        raise ConfigError(f"meter {meter.id}: gw3761_control={mode!r}: forward or afn05",
                          key="gw3761_control")  # fmt: skip
    return mode


def meter_point(meter: Meter) -> int:
    """The meter's measuring point on its concentrator (metadata ``point``: ``5`` or
    ``P5``, 1..2040)."""
    text = str(meter.metadata.get("point", "") or "").strip().upper().removeprefix("P")
    if not text.isdigit() or not 1 <= int(text) <= 2040:
        raise ConfigError(f"meter {meter.id}: gw3761_control = afn05 needs its point on the "
                          f"concentrator (metadata point = 1..2040, not {text!r})",
                          key="point")  # fmt: skip
    return int(text)


class _ConcentratorControl(Protocol):
    """Asks the concentrator pipe (fep.interfaces.IConcentratorPipe) for one remote
    control; ``done`` fires with what the concentrator confirmed."""

    def __init__(self, point: int, trip: bool) -> None:
        self.point = point
        self.trip = trip
        self.done: Deferred[Mapping[str, Any]] = Deferred()

    def connectionMade(self) -> None:
        pipe: Any = IConcentratorPipe(self.transport, None)
        if pipe is None:
            self.done.errback(ConfigError(
                "gw3761_control = afn05 needs a route through the concentrator "
                "(gw3761:CONCENTRATOR:port=N)", key="gw3761_control"))
            return
        pipe.concentrator_control(self.point, self.trip).chainDeferred(self.done)

    def close(self) -> None:
        abort(self.transport)


@implementer(IPushHandler)
class Dlt645PushHandler(LinkPushHandler):
    """What the meters behind a dialled-in DTU send by themselves (``reports.ReportLink``):
    reports stored under the meter the frame's address names, the status word's events read,
    stored and only then reset; bad input counted and logged (rate-limited) with the meter
    and the DTU, the frame dropped, the session kept."""

    logger = log
    link: ReportLink

    def __init__(self, link: ReportLink, sink: IRecordSink, *,
                 reply: Callable[[bytes], None] | None, source: str,
                 events: RateLimitedLog | None = None) -> None:  # fmt: skip
        super().__init__(link, sink, reply=reply, source=source, events=events)
        self._gone = False

    def _fields(self, meter: str = "", address: str = "") -> dict[str, Any]:
        return {"meter": meter or "?", "address": address or "?", "route": self.source,
                "protocol": PROTOCOL}  # fmt: skip

    def inherit(self, older: object) -> None:
        """Take over from the handler this one replaces on the same session (after a pull):
        the exchange under way and the meters waiting for one, repeats and bits seen, the
        counts, the rate-limited log."""
        if not isinstance(older, Dlt645PushHandler):
            return
        self.link.adopt(older.link)
        self._frames_before = self.link.stats.frames
        self.events = older.events

    def connection_lost(self) -> None:
        self._gone = True

    def _do(self, action: object) -> None:
        if isinstance(action, Reply):
            if self.reply is not None and not self._gone:
                self.reply(action.data)
        elif isinstance(action, ReportDone):
            log.info("meter {meter} ({address}) behind {route}: {what}", what=action.what,
                     **self._fields(action.meter, action.address))  # fmt: skip
        elif isinstance(action, Store):
            self._stored(action)
        elif isinstance(action, Bad):
            found = self.link.meters.get(action.address)
            self.events.warn(
                "DL/T 645 meter {meter} ({address}) behind {route}: bad input dropped "
                "({bad_kind}): {why}; {bad} bad frames on this session, the session goes on",
                kind=f"dlt645:{action.kind}", bad_kind=action.kind, why=action.why,
                bad=action.total, event="dlt645_bad_input",
                **self._fields(found.id if found is not None else "", action.address))

    def _stored(self, action: Store) -> None:
        ticket = action.ticket

        def then() -> None:  # the link goes on (resets what was stored) while it is there
            if ticket is not None and not self._gone:
                self._perform(self.link.stored(ticket))

        def otherwise() -> None:
            if ticket is not None and not self._gone:
                self._perform(self.link.not_stored(ticket))

        self._store(
            action.records, what=action.what, fields=self._fields(action.meter),
            then=then, otherwise=otherwise,
            stored="meter {meter} behind {route}: {what}: {count} records stored",
            not_stored="meter {meter} behind {route}: {what} not stored (nothing reset: the "
                       "meter reports it again)")  # fmt: skip


def dtu_meters(meter: Meter, meters: Sequence[Meter], tz: tzinfo) -> dict[str, ReportMeter]:
    """The DL/T 645 meters behind ``meter``'s DTU by address: those of the meter list on the
    same route (the DTU's), with their reset password and operator code. A meter whose
    address or password is not understood is left out (logged)."""
    found: dict[str, ReportMeter] = {}
    for m in [meter, *meters]:
        if m.protocol != PROTOCOL or m.route != meter.route or not (m.address or "").strip():
            continue
        try:
            settings = settings_for(m, tz)
            password = password_for(m) or RESET_PASSWORD
            entry = ReportMeter(m.id, password, operator_for(m), settings.tz)
        except ConfigError as e:
            log.warn("{meter}: {error}; its reports are not taken", meter=m.id, error=str(e),
                     protocol=PROTOCOL)  # fmt: skip
            continue
        if settings.address != WILDCARD_ADDRESS:
            found.setdefault(settings.address, entry)
    return found


@implementer(IMeterProtocol, IProfileReader, IClock, ICommands, IPushProtocol)
class Dlt645Protocol:
    """DL/T 645-2007 (and 1997) reads: energy, instantaneous values, the clock, event
    records and load profile, one data identifier at a time. For the collection engine
    also: load records over a time range (DI 06000001, 2007 edition) and the clock (read
    from its date and time DIs, set by broadcast time sync, which meters apply only when
    within 5 minutes of their own clock)."""

    name = PROTOCOL
    commands = COMMANDS_2007

    def __init__(self, tz: tzinfo = DEFAULT_METER_TZ) -> None:
        self.tz = tz

    def read(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[list[Record]]:
        try:
            settings = settings_for(meter, self.tz)
        except ConfigError as e:
            return fail(e)

        def now() -> datetime:
            return datetime.fromtimestamp(reactor.seconds(), UTC)

        session = Dlt645Session(reactor, meter, Dlt645Client(settings, now=now), timeout)
        result: Deferred[list[Record]] = run_session(
            reactor, endpoint, session, meter.route, timeout
        )
        return result

    def _with(self, meter: Meter, **metadata: str) -> Meter:
        return attrs.evolve(meter, metadata={**meter.metadata, **metadata})

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
    ) -> Dlt645PushHandler:
        """The handler of a DTU that dialled in with ``meter`` behind it: the DL/T 645 meters
        on its route (``directory``) by address; a frame with the wildcard address is
        ``meter``'s."""
        meters: Sequence[Meter] = directory.all() if directory is not None else ()
        known = dtu_meters(meter, meters, self.tz)
        fallback = next(iter(known.values())) if len(known) == 1 else None
        link = ReportLink(known, now=utcnow, clock=time.monotonic, fallback=fallback)
        return Dlt645PushHandler(link, sink, reply=reply, source=source)

    def read_profile(
        self,
        reactor: IReactorTime,
        endpoint: Any,
        meter: Meter,
        since: datetime,
        until: datetime,
        timeout: float,
    ) -> Deferred[list[Record]]:
        """Load records stored from ``since`` + one period on (a record closes the interval
        before its time), up to 255 records per session, as many sessions as the range
        needs."""

        async def run() -> list[Record]:
            settings = settings_for(meter, self.tz)
            if settings.edition != 2007:
                raise NotSupported(
                    f"meter {meter.id}: DL/T 645-1997 has no load records by time",
                    meter=meter.id, protocol=PROTOCOL)
            period = settings.profile_period
            records: list[Record] = []
            start = since
            while start < until:
                count = min(255, max(1, -(-(until - start) // period)))
                asked = self._with(
                    meter,
                    dlt645_items=f"{PROFILE_SINCE:08X}",
                    dlt645_profile_since=(start + period).astimezone(UTC).isoformat(),
                    dlt645_profile_blocks=str(count),
                )
                records += await self.read(reactor, endpoint, asked, timeout)
                start += count * period
            return records

        return Deferred.fromCoroutine(run())

    def read_clock(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[datetime]:
        async def run() -> datetime:
            settings = settings_for(meter, self.tz)
            items = f"{DATE_DI[settings.edition]:0{8 if settings.edition == 2007 else 4}X}," \
                f"{TIME_DI[settings.edition]:0{8 if settings.edition == 2007 else 4}X}"
            records = await self.read(reactor, endpoint, self._with(meter, dlt645_items=items),
                                      timeout)
            for r in records:
                if isinstance(r, Reading) and r.obis == CLOCK_OBIS and r.meter_time:
                    return r.meter_time
            raise ProtocolError(f"meter {meter.id}: no clock in the answer", meter=meter.id,
                                route=meter.route, protocol=PROTOCOL)

        return Deferred.fromCoroutine(run())

    def set_clock(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[None]:
        """Set the meter's clock to the reactor's time: by writing its date and time
        (04000101 then 04000102; 1997: C010, C011) with the meter's password, or by
        broadcast time (``dlt645_clock_set = broadcast``, or no password), which every meter
        on the line hears. A broadcast is sent only within its limits (the meter's clock
        within 5 minutes, not within 5 minutes of its midnight); the clock is read back
        after it, and a meter that did not take it (one broadcast a day) is an error."""

        async def run() -> None:
            settings = settings_for(meter, self.tz)
            mode = (meter.metadata.get("dlt645_clock_set") or "").strip().lower()
            if mode not in ("", "write", "broadcast"):
                raise ConfigError(f"meter {meter.id}: dlt645_clock_set is write or broadcast, "
                                  f"not {mode!r}", key="dlt645_clock_set")
            password = password_for(meter)
            if mode == "write" and password is None:
                _needs_password(meter, "a clock write")
            if mode == "broadcast" or (not mode and password is None):
                await self._exchange(reactor, endpoint, meter, settings, "time-set",
                                     self._broadcast_steps(reactor, settings), timeout)
                return
            assert password is not None
            await self._exchange(reactor, endpoint, meter, settings, "time-set",
                                 self._clock_write_steps(reactor, meter, settings, password),
                                 timeout)

        return Deferred.fromCoroutine(run())

    def _clock_write_steps(self, reactor: IReactorTime, meter: Meter,
                           settings: ClientSettings, password: Password) -> list[Step]:
        edition = settings.edition
        catalogue = dataid.catalogue(edition)
        operator = operator_for(meter)

        def write(di: int, value: Callable[[datetime], str]) -> Callable[..., Frame]:
            def build(_: Sequence[Frame | None]) -> Frame:
                data = catalogue[di].encode(value(_local_now(reactor, settings.tz)))
                if edition == 1997:
                    return write_data_1997(settings.address, di, data, password)
                return write_data(settings.address, di, data, password, operator)
            return build

        return [
            Step(f"write of the date (DI {di_text(DATE_DI[edition], edition)})",
                 write(DATE_DI[edition], lambda t: t.date().isoformat())),
            Step(f"write of the time (DI {di_text(TIME_DI[edition], edition)})",
                 write(TIME_DI[edition], lambda t: t.time().isoformat())),
        ]

    def _broadcast_steps(self, reactor: IReactorTime, settings: ClientSettings) -> list[Step]:
        edition = settings.edition
        address = settings.address

        def read(di: int) -> Callable[..., Frame]:
            def build(_: Sequence[Frame | None]) -> Frame:
                if edition == 1997:
                    return read_data_1997(address, di)
                return read_data(address, di)
            return build

        def broadcast(answers: Sequence[Frame | None]) -> Frame:
            try:
                meter_time = _clock_of(answers, 0, settings)
            except (FrameError, ProtocolError) as e:
                raise ValueError(f"its clock was not understood ({e})") from None
            now = datetime.fromtimestamp(reactor.seconds(), UTC)
            deviation = (meter_time - now).total_seconds()
            if abs(deviation) > BROADCAST_LIMIT:
                raise ValueError(
                    f"its clock is {deviation:+.0f} s off, and a meter takes a broadcast time "
                    f"only within {BROADCAST_LIMIT:g} s: write the clock with the meter's "
                    "password (dlt645_clock_set = write)")
            local = meter_time.astimezone(settings.tz)
            minutes = local.hour * 60 + local.minute
            if minutes < 5 or minutes >= 23 * 60 + 55:
                raise ValueError(f"its clock reads {local:%H:%M}, and meters take no broadcast "
                                 "time within 5 minutes of midnight")
            return broadcast_time_sync(_local_now(reactor, settings.tz))

        return [
            Step("read of the date", read(DATE_DI[edition])),
            Step("read of the time", read(TIME_DI[edition])),
            Step("broadcast time", broadcast, answered=False),
            Step("read of the date after the broadcast", read(DATE_DI[edition])),
            Step("read of the time after the broadcast", read(TIME_DI[edition])),
        ]

    async def _exchange(self, reactor: IReactorTime, endpoint: Any, meter: Meter,
                        settings: ClientSettings, command: str, steps: Sequence[Step],
                        timeout: float) -> tuple[Frame | None, ...]:
        client = CommandClient(settings, command, steps)
        session = Dlt645CommandSession(reactor, meter, client, timeout)
        answers: tuple[Frame | None, ...] = await run_session(
            reactor, endpoint, session, meter.route, timeout)
        if command == "time-set" and any(s.what == "broadcast time" for s in steps):
            self._broadcast_taken(reactor, meter, settings, answers)
        return answers

    def _broadcast_taken(self, reactor: IReactorTime, meter: Meter, settings: ClientSettings,
                         answers: Sequence[Frame | None]) -> None:
        try:
            meter_time = _clock_of(answers, 3, settings)
        except (FrameError, ProtocolError) as e:
            raise ProtocolError(f"meter {meter.id}: time-set: the clock read back after the "
                                f"broadcast was not understood ({e})", meter=meter.id,
                                route=meter.route, protocol=PROTOCOL) from None
        deviation = (meter_time - datetime.fromtimestamp(reactor.seconds(), UTC)).total_seconds()
        if abs(deviation) > SET_TOLERANCE:
            raise ProtocolError(
                f"meter {meter.id}: time-set: the meter did not take the broadcast time (its "
                f"clock is still {deviation:+.0f} s off; a meter takes one broadcast time a "
                "day): write the clock with the meter's password (dlt645_clock_set = write)",
                meter=meter.id, route=meter.route, protocol=PROTOCOL)
        log.info("{meter}: broadcast time taken (clock now {deviation:+.1f} s off)",
                 deviation=deviation, meter=meter.id, route=meter.route, protocol=PROTOCOL)

    # -- commands -----------------------------------------------------------------------------

    @staticmethod
    def check_command(meter: Meter, command: str, params: Mapping[str, Any]) -> None:
        """When a disconnect or reconnect is asked: ConfigError for a ``gw3761_control`` that
        is neither ``forward`` nor ``afn05``, or ``afn05`` without the meter's point."""
        if command in ("disconnect", "reconnect") and control_mode(meter) == "afn05":
            meter_point(meter)

    @staticmethod
    def variant(meter: Meter) -> tuple[str, frozenset[str]] | None:
        """The meter's protocol variant when it has fewer commands than the protocol: a
        DL/T 645-1997 meter (``dlt645_edition = 1997``) has no relay control and no event
        reset (the 1997 edition has neither service)."""
        if (meter.metadata.get("dlt645_edition") or "").strip() == "1997":
            return "DL/T 645-1997", frozenset({*COMMANDS_1997, "time-set", "time-sync"})
        return None

    def run_command(
        self,
        reactor: IReactorTime,
        endpoint: Any,
        meter: Meter,
        command: str,
        params: Mapping[str, Any],
        timeout: float,
        progress: Callable[[Mapping[str, Any]], None],
    ) -> Deferred[Mapping[str, Any]]:
        async def run() -> Mapping[str, Any]:
            settings = settings_for(meter, self.tz)
            variant = self.variant(meter)
            if command not in self.commands or (
                    variant is not None and command not in variant[1]):
                where = variant[0] if variant is not None else "DL/T 645"
                raise NotSupported(f"meter {meter.id}: {where} has no {command}",
                                   meter=meter.id, protocol=PROTOCOL)
            if command in ("disconnect", "reconnect") and control_mode(meter) == "afn05":
                return await self._concentrator_control(reactor, endpoint, meter,
                                                        command == "disconnect", timeout)
            steps, outcome = self._command_steps(reactor, meter, settings, command, params)
            answers = await self._exchange(reactor, endpoint, meter, settings, command, steps,
                                           timeout)
            return outcome(answers)

        return Deferred.fromCoroutine(run())

    async def _concentrator_control(self, reactor: IReactorTime, endpoint: Any, meter: Meter,
                                    trip: bool, timeout: float) -> Mapping[str, Any]:
        """``gw3761_control = afn05``: the concentrator the meter's route goes through trips
        (AFN 05 F1) or allows closing (F2) at the meter's ``point``, instead of a DL/T 645
        relay command forwarded to the meter."""
        point = meter_point(meter)
        session = _ConcentratorControl(point, trip)
        try:
            result: Mapping[str, Any] = await run_session_within(
                reactor, endpoint, session, meter.route, timeout)
        except TimeoutError:
            raise ProtocolError(f"meter {meter.id}: the concentrator did not confirm the remote "
                                f"control of point {point} within {timeout:.1f} s",
                                meter=meter.id, route=meter.route, protocol=PROTOCOL) from None
        finally:
            session.close()
        return result

    def _command_steps(
        self, reactor: IReactorTime, meter: Meter, settings: ClientSettings, command: str,
        params: Mapping[str, Any],
    ) -> tuple[list[Step], Callable[[Sequence[Frame | None]], Mapping[str, Any]]]:
        address = settings.address

        def status_read(_: Sequence[Frame | None]) -> Frame:
            return read_data(address, STATUS_WORD_3)

        def state(answers: Sequence[Frame | None]) -> dict[str, Any]:
            frame = answers[-1]
            assert frame is not None
            try:
                data = decode_read(frame, STATUS_WORD_3).data
            except FrameError as e:
                raise ProtocolError(f"meter {meter.id}: {command}: {e.message}", meter=meter.id,
                                    route=meter.route, protocol=PROTOCOL) from None
            if len(data) < 2:
                raise ProtocolError(f"meter {meter.id}: {command}: status word 3 is "
                                    f"{len(data)} bytes, not 2", meter=meter.id,
                                    route=meter.route, protocol=PROTOCOL)
            word = int.from_bytes(data[:2], "little")
            return {**relay_state(word), "status_word_3": f"{word:04X}"}

        read_state = Step("read of status word 3 (DI 04000503)", status_read)
        if command == "relay-state":
            return [read_state], state
        if command == "demand-reset":
            password = _needs_password(meter, command)
            if settings.edition == 1997:
                frame = max_demand_reset_1997(address, password)
            else:
                frame = max_demand_reset(address, password, operator_for(meter))
            return [Step("maximum demand reset", lambda _: frame)], lambda _: {"reset": "yes"}
        if command == "event-log-clear":
            password = _needs_password(meter, command)
            di = ALL_EVENTS
            if params.get("di"):
                try:
                    di = parse_di(str(params["di"]))
                except ValueError:
                    raise ConfigError(f"meter {meter.id}: event-log-clear di= is a data "
                                      f"identifier in hex, not {params['di']!r}",
                                      key="di") from None
            frame = event_reset(address, password, operator_for(meter), di)
            return ([Step(f"event reset (DI {di:08X})", lambda _: frame)],
                    lambda _: {"cleared": f"{di:08X}"})
        actions: list[RelayAction] = []
        if command == "disconnect":
            actions = [RelayAction.TRIP]
        elif command == "reconnect":
            mode = str(params.get("mode", "close-allowed")).strip().lower()
            if mode not in ("close-allowed", "direct"):
                raise ConfigError(f"meter {meter.id}: reconnect mode= is close-allowed or "
                                  f"direct, not {mode!r}", key="mode")
            actions = [RelayAction.DIRECT_CLOSE if mode == "direct"
                       else RelayAction.CLOSE_ALLOWED]
        elif command == "parameter-set":
            names = {"alarm": (RelayAction.ALARM, RelayAction.ALARM_RELEASE),
                     "guarantee": (RelayAction.GUARANTEE, RelayAction.GUARANTEE_RELEASE)}
            unknown = sorted(set(params) - set(names) - _ENGINE_PARAMS)
            if unknown or not set(params) & set(names):
                raise ConfigError(f"meter {meter.id}: DL/T 645 parameter-set takes alarm=on|off "
                                  f"and guarantee=on|off (got {', '.join(unknown) or 'none'})",
                                  key="parameter-set")
            for name, (on, off) in names.items():
                if name in params:
                    actions.append(on if _on_off(meter, name, params[name]) else off)
        password = _needs_password(meter, command)
        operator = operator_for(meter)
        try:
            validity = timedelta(minutes=float(params.get("valid", 0) or 0)) or DEFAULT_VALIDITY
        except (TypeError, ValueError):
            raise ConfigError(f"meter {meter.id}: valid= is minutes, not {params['valid']!r}",
                              key="valid") from None

        def control(action: RelayAction) -> Step:
            def build(_: Sequence[Frame | None]) -> Frame:
                until = _local_now(reactor, settings.tz, validity.total_seconds())
                return relay_control(address, action, password, operator, until)
            name = action.name.lower().replace("_", " ")
            return Step(f"relay control ({name})", build)

        def outcome(answers: Sequence[Frame | None]) -> Mapping[str, Any]:
            done = ", ".join(a.name.lower().replace("_", "-") for a in actions)
            return {"relay_control": done, **state(answers)}

        return [*(control(a) for a in actions), read_state], outcome


__all__ = ["Dlt645CommandSession", "Dlt645Protocol", "Dlt645Session", "operator_for",
           "password_for", "settings_for"]
