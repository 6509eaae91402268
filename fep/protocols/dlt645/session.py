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
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.errors import ConfigError, NotSupported, ProtocolError
from fep.interfaces import IClock, IMeterProtocol, IProfileReader
from fep.model import Meter, Reading, Record
from fep.protocols import actions as actions_
from fep.protocols.dlt645.client import (
    CLOCK_OBIS,
    DATE_DI,
    PROFILE_SINCE,
    TIME_DI,
    WAKEUP_PREAMBLE,
    Action,
    ClientSettings,
    Dlt645Client,
    Failed,
    Finished,
    Noise,
    Resent,
    Send,
    Skipped,
)
from fep.protocols.dlt645.dataid import DEFAULT_METER_TZ, parse_di
from fep.protocols.dlt645.frames import WILDCARD_ADDRESS
from fep.protocols.dlt645.services import PROTOCOL, broadcast_time_sync
from fep.protocols.session import MeterSession, run_session

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


class Dlt645Steps:
    """A Dlt645Client in the session driver's shape: the step timer counts silence after
    each request."""

    def __init__(self, client: Dlt645Client) -> None:
        self.client = client

    @property
    def waiting_for(self) -> str | None:
        return self.client.waiting_for

    def start(self) -> list[object]:
        return self._steps(self.client.start())

    def receive(self, data: bytes) -> list[object]:
        return self._steps(self.client.receive(data))

    def timeout(self) -> list[object]:
        return self._steps(self.client.timeout())

    def _steps(self, actions: list[Action]) -> list[object]:
        steps: list[object] = []
        for action in actions:
            if isinstance(action, Send):
                steps.append(actions_.Send(action.data))
            elif isinstance(action, Finished):
                steps.append(actions_.Finish(list(action.records)))
            elif isinstance(action, Failed):
                steps.append(actions_.Fail(action.error))
            else:
                steps.append(action)  # Resent, Noise, Skipped: logged by the session
        if any(isinstance(a, Send) for a in actions):
            steps.append(actions_.SetTimer())
        return steps


class Dlt645Session(MeterSession):
    """One Dlt645Client over one connection; ``done`` fires with the records."""

    def __init__(
        self, reactor: IReactorTime, meter: Meter, client: Dlt645Client, timeout: float
    ) -> None:
        super().__init__(reactor, timeout, meter=meter.id, route=meter.route, protocol=PROTOCOL,
                         steps=Dlt645Steps(client))
        self.meter = meter
        self.client = client

    def _log_fields(self) -> dict[str, Any]:
        return {"meter": self.meter.id, "route": self.meter.route, "protocol": PROTOCOL}

    def note(self, action: object) -> None:
        if isinstance(action, Resent):
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


class _BroadcastSession(Protocol):
    """Sends one broadcast frame (meters never answer one) and hangs up."""

    def __init__(self, reactor: IReactorTime, meter: Meter, tz: tzinfo, wakeup: bool) -> None:
        self.reactor = reactor
        self.meter = meter
        self.tz = tz
        self.wakeup = wakeup
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        now = datetime.fromtimestamp(self.reactor.seconds(), UTC).astimezone(self.tz)
        frame = broadcast_time_sync(now.replace(tzinfo=None))
        assert self.transport is not None
        self.transport.write(frame.encode(preamble=WAKEUP_PREAMBLE if self.wakeup else 0))
        log.info("{meter}: broadcast time {at} sent", at=now.isoformat(),
                 meter=self.meter.id, route=self.meter.route, protocol=PROTOCOL)
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if not self.done.called:
            self.done.callback(None)


@implementer(IMeterProtocol, IProfileReader, IClock)
class Dlt645Protocol:
    """DL/T 645-2007 (and 1997) reads: energy, instantaneous values, the clock, event
    records and load profile, one data identifier at a time. For the collection engine
    also: load records over a time range (DI 06000001, 2007 edition) and the clock (read
    from its date and time DIs, set by broadcast time sync, which meters apply only when
    within 5 minutes of their own clock)."""

    name = PROTOCOL

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
        """Broadcast time sync (function 08) on the meter's line: every meter on the bus
        hears it; none answers."""
        try:
            settings = settings_for(meter, self.tz)
        except ConfigError as e:
            return fail(e)
        session = _BroadcastSession(reactor, meter, settings.tz, settings.wakeup)
        result: Deferred[None] = run_session(reactor, endpoint, session, meter.route, timeout)
        return result


__all__ = ["Dlt645Protocol", "Dlt645Session", "settings_for"]
