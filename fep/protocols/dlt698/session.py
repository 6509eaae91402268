"""The Twisted side of DL/T 698.45: ``Dlt698Protocol`` reads a meter (or a terminal read as
a meter) over any client endpoint (TCP, a serial server, an RS-485 line) for ``fep read``
and scheduled jobs: attributes, frozen records by time range (the profile the engine
re-collects gaps of), event records, the clock read and set, the control commands
(fep.protocols.dlt698.control), and the same for a meter behind a terminal through the
terminal's PROXY (``dlt698_terminal``). ``Dlt698PushHandler`` (the protocol's
``push_handler``) takes what a terminal sends on its own connection (a GPRS session):
its logins, heartbeats and reports.

The session's state lives in ``client.py``; this module puts it in the session driver's
shape (fep/protocols/session.py) and logs what was skipped. Settings come from the meter's
``address`` (the server address, e.g. ``000000123456``; default the wildcard
``AAAAAAAAAAAA``) and its metadata (``fep read -o KEY=VALUE``):

``dlt698_items``     comma list of OADs in hex (default: energy, voltages, currents, power,
                     power factor, frequency, clock; ``none``: no attributes)
``dlt698_frozen``    comma list of frozen record OADs read for their last rows
                     (e.g. ``50040200``), ``dlt698_frozen_last`` rows each (default 1),
                     ``dlt698_frozen_columns`` their columns (default ``20210200,00100200,
                     00200200``: frozen time, forward and reverse active energy);
                     with ``dlt698_from`` and ``dlt698_to`` (ISO-8601, UTC when naive)
                     the rows frozen in that range instead
``dlt698_events``    comma list of event record OADs (e.g. ``30110200``),
                     ``dlt698_events_last`` records each (default 1)
``dlt698_profile``   the frozen object of the load profile (default ``50020200``) and
``dlt698_profile_columns`` its columns (default ``00100201,00200201``),
                     ``dlt698_profile_period`` minutes (default 15)
``dlt698_proxy``     comma list of addresses of meters behind this one (a concentrator),
                     read through it with PROXY-Request GetRequestList (the same items);
                     their records carry their address as the meter
``dlt698_terminal``  the server address of the terminal this meter is read through (set
                     for a job by fep.collect.dlt698_route from the route ``dlt698:ID``):
                     the session is the terminal's, the meter's reads go in PROXY-Requests
``dlt698_connect``   ``yes`` (default): CONNECT first; ``no`` for meters read without one
``dlt698_password``  the general password of CONNECT (none by default)
``dlt698_client``    the client address CA (default 0)
``dlt698_wakeup``    ``yes`` (default): FE FE FE FE before each frame
``dlt698_retries``   requests sent again after silence or a damaged answer (default 1)
``dlt698_security``  ``plain`` (default), ``plaintext-rn`` or ``refuse-unverified``: GETs in
                     SECURITY-Requests with a random number, the answers' MACs handed to
                     the protocol's ESAM service (fep.protocols.dlt698.security)
``tz``               the meter's zone (default UTC+8)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from fep.errors import ConfigError, NotSupported, ProtocolError
from fep.interfaces import (
    IClock,
    ICommands,
    IEventReader,
    IMeterProtocol,
    IProfileReader,
    IPushChannel,
    IPushHandler,
    IPushProtocol,
    IRecordSink,
)
from fep.model import Meter, MeterEvent, Reading, Record
from fep.protocols import actions as actions_
from fep.protocols.dlt698.client import (
    DEFAULT_ITEMS,
    DEFAULT_METER_TZ,
    ClientSettings,
    Dlt698Client,
    Failed,
    Finished,
    Linked,
    Noise,
    ProxyRead,
    RecordRead,
    ReportReceived,
    Resent,
    Send,
    Skipped,
)
from fep.protocols.dlt698.control import (
    COMMANDS,
    RELAY_COMMANDS,
    command_methods,
    parameter_values,
    relay_oads,
    relay_state,
)
from fep.protocols.dlt698.data import OAD, Data
from fep.protocols.dlt698.objects import (
    CLOCK,
    CLOCK_OBIS,
    DAY_SERIES,
    FROZEN_TIME,
    MONTH_SERIES,
    PROTOCOL,
    add_months,
    frozen_boundaries,
    frozen_series,
)
from fep.protocols.dlt698.security import PLAIN, SECURITY_MODES, IDlt698Esam, NoEsam
from fep.protocols.dlt698.terminal import (
    Heartbeat,
    LoggedIn,
    LoggedOut,
    TerminalLink,
    Unexpected,
)
from fep.protocols.dlt698.terminal import Noise as LinkNoise
from fep.protocols.dlt698.terminal import Send as LinkSend
from fep.protocols.session import MeterSession, run_session
from fep.ratelog import RateLimitedLog

log = Logger(namespace="fep.protocols.dlt698")

_YES = ("yes", "y", "true", "1", "on")
_NO = ("no", "n", "false", "0", "off")
DEFAULT_PROFILE = OAD(0x5002, 2)
DEFAULT_PROFILE_COLUMNS = (OAD(0x0010, 2, 1), OAD(0x0020, 2, 1))


def _oads(meter: Meter, key: str) -> tuple[OAD, ...]:
    out = []
    for text in meter.metadata.get(key, "").replace(";", ",").split(","):
        if not text.strip():
            continue
        try:
            out.append(OAD.parse(text))
        except ValueError:
            raise ConfigError(f"meter {meter.id}: {key} has {text.strip()!r}, not an OAD "
                              "of 8 hex digits", key=key) from None
    return tuple(out)


def settings_for(meter: Meter, tz: tzinfo = DEFAULT_METER_TZ, **overrides: Any) -> ClientSettings:
    """ClientSettings from a meter's address and metadata; ConfigError names the key."""
    md = meter.metadata

    def number(key: str, default: int) -> int:
        text = md.get(key, "").strip()
        if not text:
            return default
        try:
            return int(text, 0)
        except ValueError:
            raise ConfigError(f"meter {meter.id}: {key} must be a whole number",
                              key=key) from None

    def flag(key: str, default: bool) -> bool:
        text = md.get(key, "").strip().lower()
        if not text:
            return default
        if text not in _YES + _NO:
            raise ConfigError(f"meter {meter.id}: {key} is yes or no", key=key)
        return text in _YES

    zone = tz
    if md.get("tz"):
        try:
            zone = ZoneInfo(md["tz"])
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"meter {meter.id}: tz names no known time zone ({md['tz']!r})",
                              key="tz") from None
    def when(key: str) -> datetime | None:
        text = md.get(key, "").strip()
        if not text:
            return None
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"meter {meter.id}: {key} {text!r} is not an ISO-8601 time",
                              key=key) from None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    security = (md.get("dlt698_security", "") or PLAIN).strip().lower()
    if security not in SECURITY_MODES:
        raise ConfigError(f"meter {meter.id}: dlt698_security is one of "
                          f"{', '.join(SECURITY_MODES)}, not {security!r}",
                          key="dlt698_security")
    frozen_columns = _oads(meter, "dlt698_frozen_columns")
    since, until = when("dlt698_from"), when("dlt698_to")
    if (since is None) != (until is None):
        raise ConfigError(f"meter {meter.id}: dlt698_from and dlt698_to go together",
                          key="dlt698_from" if since is None else "dlt698_to")
    if since is not None and until is not None:
        records = [RecordRead(o, frozen_columns, since=since, until=until)
                   for o in _oads(meter, "dlt698_frozen")]
    else:
        records = [RecordRead(o, frozen_columns, last=number("dlt698_frozen_last", 1))
                   for o in _oads(meter, "dlt698_frozen")]
    records += [RecordRead(o, last=number("dlt698_events_last", 1))
                for o in _oads(meter, "dlt698_events")]
    no_items = md.get("dlt698_items", "").strip().lower() == "none"
    items = () if no_items else _oads(meter, "dlt698_items")
    proxies = []
    for text in md.get("dlt698_proxy", "").replace(";", ",").split(","):
        if text.strip():
            try:
                proxies.append(ProxyRead(text.strip(), items or DEFAULT_ITEMS))
            except ValueError:
                raise ConfigError(f"meter {meter.id}: dlt698_proxy has {text.strip()!r}, not "
                                  "a meter address", key="dlt698_proxy") from None
    values: dict[str, Any] = {
        "address": (meter.address or "").strip() or "AAAAAAAAAAAA",
        "client": number("dlt698_client", 0),
        "records": tuple(records),
        "proxies": tuple(proxies),
        "connect": flag("dlt698_connect", True),
        "password": md.get("dlt698_password") or None,
        "wakeup": flag("dlt698_wakeup", True),
        "retries": number("dlt698_retries", 1),
        "security": security,
        "tz": zone,
        "meter": meter.id,
        "route": meter.route,
    }
    if items or no_items:
        values["items"] = items
    values.update(overrides)
    terminal = md.get("dlt698_terminal", "").strip()
    if terminal:
        values = _through_terminal(meter, terminal, values)
    try:
        return ClientSettings(**values)
    except ValueError as e:
        key = "address" if "address" in str(e) else None
        raise ConfigError(f"meter {meter.id}: {e}", key=key) from None



def _through_terminal(meter: Meter, terminal: str, values: dict[str, Any]) -> dict[str, Any]:
    """The settings of a read of ``meter`` through the terminal at ``terminal`` (its server
    address; route ``dlt698:TERMINAL``, fep.collect.dlt698_route): the session is with the
    terminal, and what would be read of the meter goes in PROXY-Requests to it (attributes
    in one GetRequestList, each record in a GetRequestRecord)."""
    if values.get("proxies"):
        raise ConfigError(f"meter {meter.id}: a meter read through a terminal has no meters "
                          "behind it (dlt698_proxy)", key="dlt698_proxy")
    address = values["address"]
    try:
        actions = tuple(values.get("actions", ()))
        # A relay read back after a command: the terminal reads it after each method
        # (PROXY ActionThenGetRequestList).
        back = tuple(values.get("read_back", ()))
        sets = tuple(values.get("sets", ()))
        if back and actions:
            read_after = tuple((back[0], 0) for _ in actions)
        elif back and sets:
            # Each attribute set is read back by the terminal (PROXY SetThenGet).
            read_after = tuple((oad, 0) for oad in back)
        else:
            read_after = ()
        proxy = ProxyRead(address, tuple(values.get("items", DEFAULT_ITEMS)),
                          tuple(values.get("records", ())), meter=meter.id,
                          actions=actions, set_clock=bool(values.get("set_clock")),
                          sets=sets, read_after=read_after)
    except ValueError:
        raise ConfigError(f"meter {meter.id}: address {address!r} is not a meter address "
                          "a terminal's PROXY can name", key="address") from None
    return {**values, "address": terminal, "items": (), "records": (), "actions": (),
            "set_clock": False, "read_back": (), "sets": (), "proxies": (proxy,)}


class Dlt698Session(MeterSession):
    """One Dlt698Client over one connection; ``done`` fires with the records."""

    gives_back = True  # after the end: not ours (a heartbeat, a report)

    def __init__(self, reactor: IReactorTime, meter: Meter, client: Dlt698Client,
                 timeout: float) -> None:  # fmt: skip
        super().__init__(reactor, timeout, meter=meter.id, route=meter.route, protocol=PROTOCOL,
                         steps=actions_.ClientSteps(client, send=Send, finished=Finished,
                                                   failed=Failed))
        self.meter = meter
        self.client = client

    def _fields(self) -> dict[str, Any]:
        return {"meter": self.meter.id, "route": self.meter.route, "protocol": PROTOCOL}

    def note(self, action: object) -> None:
        if isinstance(action, Resent):
            log.info("{meter}: DL/T 698.45 request sent again ({why}, attempt {n})",
                     why=action.why, n=action.attempt, **self._fields())
        elif isinstance(action, Noise):
            log.info("{meter}: bad bytes skipped: {why}", why=action.why, **self._fields())
        elif isinstance(action, Skipped):
            log.info("{meter}: {item} not read: {why}", item=action.item, why=action.why,
                     **self._fields())
        elif isinstance(action, Linked):
            log.info("{meter}: LINK {kind} from {address} answered", kind=action.kind,
                     address=action.address, **self._fields())
        elif isinstance(action, ReportReceived):
            self._report(action)

    def _report(self, report: ReportReceived) -> None:
        """A REPORT-Notification during the read: on a channel that carries pushes (a GPRS
        session lent to this job) its records are stored as a push's and the terminal is
        acknowledged once they are; elsewhere it is left unacknowledged, and the terminal
        sends it again to the path that keeps it (nothing acknowledged is lost)."""
        channel: Any = IPushChannel(self.transport, None)
        if channel is None:
            log.info("{meter}: report of {count} records left unacknowledged (this channel "
                     "carries no pushes)", count=len(report.records), **self._fields())
            return
        transport = self.transport

        def kept(_: object) -> None:
            if transport is not None and getattr(transport, "connected", True):
                transport.write(report.ack)
            log.info("{meter}: report of {count} records during the read kept and "
                     "acknowledged", count=len(report.records), **self._fields())

        d = channel.pushed(list(report.records))
        d.addCallbacks(kept, lambda f: log.failure(
            "{meter}: report during the read not kept (not acknowledged)", f,
            **self._fields()))

    def unconsumed(self) -> bytes:
        return self.client.unconsumed()

    def not_given_back(self, data: bytes) -> None:
        log.info("{meter}: {count} bytes after the session's last answer dropped",
                 count=len(data), **self._fields())

    def ended(self, lost: bool) -> None:
        if lost:
            return
        c = self.client
        log.info("{meter}: DL/T 698.45 read done: {records} records, {skipped} items skipped, "
                 "{noise} damaged frames, {garbage} garbage bytes, {resent} requests resent",
                 records=len(c.records), skipped=len(c.skipped), noise=c.noise,
                 garbage=c.line_garbage, resent=c.resent, **self._fields())
        if c.unverified:
            log.info("{meter}: {count} secured answers taken with their MAC not verified "
                     "({esam})", count=c.unverified, esam=c.settings.esam.name,
                     **self._fields())


# A report sent again (its acknowledgement lost) is acknowledged, not stored again: the
# last reports taken on a connection are remembered by their content.
REMEMBERED_REPORTS = 32


def _report_key(frame_data: bytes) -> bytes:
    """A report's content without its PIID (a terminal may number a repeat anew)."""
    return frame_data[:2] + frame_data[3:] if len(frame_data) > 2 else frame_data


@implementer(IPushHandler)
class Dlt698PushHandler:
    """What a DL/T 698.45 terminal sends on its own connection (a GPRS session): LINK
    login, heartbeat and logout answered at once with fep's time (``reply``);
    REPORT-Notifications stored (the terminal's records, or the meter's whose address the
    frame names) and acknowledged once the sink has them, a repeat acknowledged again and
    not stored twice; bad input counted (``bad``) and logged, rate-limited, with the
    terminal's address; the connection stays up."""

    def __init__(
        self,
        meter: Meter,
        sink: IRecordSink,
        *,
        tz: tzinfo,
        source: str,
        reply: Callable[[bytes], None] | None,
        meter_for: Callable[[str], str | None],
        now: Callable[[], datetime] | None = None,
        events: RateLimitedLog | None = None,
    ) -> None:
        self.meter = meter
        self.sink = sink
        self.source = source
        self.reply = reply
        kwargs: dict[str, Any] = {"now": now} if now is not None else {}
        self.link = TerminalLink(tz=tz, meters=meter_for, **kwargs)
        self.events = events if events is not None else RateLimitedLog(log)
        self.frames = 0
        self.bad = 0
        self.garbage = 0  # bytes that were no frame (FE wake-up bytes are not counted)
        self.stored = 0
        self.repeats = 0
        # Reports taken (True) or being kept (their Deferred), by content.
        self._reports: OrderedDict[bytes, Deferred[None] | bool] = OrderedDict()

    @property
    def address(self) -> str:
        if self.link.address is not None:
            return self.link.address.address
        return self.meter.address or "?"

    def _fields(self) -> dict[str, Any]:
        return {"meter": self.meter.id, "route": self.meter.route, "protocol": PROTOCOL,
                "address": self.address, "source": self.source}

    def data_received(self, data: bytes) -> None:
        try:
            actions = self.link.receive(data)
        except Exception as e:  # a decoder's bug must not reach the reactor
            self.bad += 1
            self.link.decoder.drain()
            self.events.warn("{meter}: terminal {address}: input dropped: {why}",
                             why=repr(e), kind="dlt698-push-bug", **self._fields())
            return
        for action in actions:
            self._act(action)
        garbage = self.link.decoder.garbage
        if garbage > self.garbage:
            skipped, self.garbage = garbage - self.garbage, garbage
            self.bad += 1
            self.events.info("{meter}: terminal {address}: bad input: {count} bytes that are "
                             "no frame skipped", count=skipped, kind="dlt698-push-garbage",
                             **self._fields())

    def pending(self) -> int:
        return self.link.decoder.buffered

    def take_buffered(self) -> bytes:
        return self.link.decoder.drain()

    def _send(self, data: bytes) -> None:
        if self.reply is not None:
            self.reply(data)
        else:
            self.events.info("{meter}: terminal {address}: no way to answer on this "
                             "connection", kind="dlt698-no-reply", **self._fields())

    def _act(self, action: object) -> None:
        if isinstance(action, LinkSend):
            self._send(action.data)
        elif isinstance(action, LoggedIn):
            log.info("{meter}: terminal {address} logged in (heartbeat every {heartbeat} s)",
                     heartbeat=action.heartbeat, **self._fields())
        elif isinstance(action, Heartbeat):
            log.debug("{meter}: terminal {address} heartbeat answered", **self._fields())
        elif isinstance(action, LoggedOut):
            log.info("{meter}: terminal {address} logged out", **self._fields())
        elif isinstance(action, ReportReceived):
            self._report(action)
        elif isinstance(action, LinkNoise):
            self.bad += 1
            self.events.warn("{meter}: terminal {address}: bad input: {why}", why=action.why,
                             kind="dlt698-push-noise", **self._fields())
        elif isinstance(action, Unexpected):
            self.bad += 1
            self.events.info("{meter}: terminal {address}: unexpected frame (control "
                             "0x{control:02X}) dropped", control=action.frame.control,
                             kind="dlt698-push-unexpected", **self._fields())

    def _report(self, report: ReportReceived) -> None:
        self.frames += 1
        key = (report.meter.encode() + b"\x00" + _report_key(report.apdu)) if report.apdu \
            else b""
        known = self._reports.get(key) if key else None
        if known is True:
            self.repeats += 1
            log.info("{meter}: terminal {address} sent a report again: acknowledged, not "
                     "stored twice", **self._fields())
            self._send(report.ack)
            return
        if isinstance(known, Deferred):
            # Acknowledged with the first once that is kept (not when it is refused).
            self.repeats += 1

            def then(_: object) -> None:
                if self._reports.get(key) is True:
                    self._send(report.ack)

            known.addCallback(then)
            return
        for item, why in report.skipped:
            self.events.info("{meter}: terminal {address}: report item {item} not kept: "
                             "{why}", item=item, why=why, kind="dlt698-report-item",
                             **self._fields())
        d: Deferred[None] = (self.sink.submit(list(report.records)) if report.records
                             else succeed(None))
        if key:
            self._reports[key] = d
            while len(self._reports) > REMEMBERED_REPORTS:
                self._reports.popitem(last=False)

        def kept(_: object) -> None:
            if key and key in self._reports:
                self._reports[key] = True
            self.stored += len(report.records)
            log.info("{meter}: report from terminal {address}: {count} records of {of} "
                     "kept and acknowledged", count=len(report.records), of=report.meter,
                     **self._fields())
            self._send(report.ack)

        def lost(failure: Any) -> None:
            self._reports.pop(key, None)
            log.failure("{meter}: report from terminal {address} not kept (not "
                        "acknowledged: the terminal sends it again)", failure,
                        **self._fields())

        d.addCallbacks(kept, lost)


@implementer(IMeterProtocol, IProfileReader, IEventReader, IClock, IPushProtocol, ICommands)
class Dlt698Protocol:
    """DL/T 698.45 reads: attributes (GET NormalList), frozen and event records (GET
    Record), the load profile by time range (the minute-frozen object), the clock read
    (40000200) and set (SET-Request of 40000200)."""

    name = PROTOCOL
    commands = COMMANDS

    def __init__(self, tz: tzinfo = DEFAULT_METER_TZ, esam: IDlt698Esam | None = None) -> None:
        self.tz = tz
        # The ESAM service of secured reads (dlt698_security): none shipped verifies.
        self.esam: IDlt698Esam = esam if esam is not None else NoEsam()

    def _run(self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float,
             **overrides: Any) -> Deferred[Any]:  # fmt: skip
        return self._client_run(reactor, endpoint, meter, timeout, **overrides)[0]

    def _client_run(self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float,
                    **overrides: Any) -> tuple[Deferred[Any], Dlt698Client | None]:  # fmt: skip
        try:
            settings = settings_for(meter, self.tz, **overrides)
        except ConfigError as e:
            return fail(e), None
        settings = attrs.evolve(settings, esam=self.esam)

        def now() -> datetime:
            return datetime.fromtimestamp(reactor.seconds(), UTC)

        client = Dlt698Client(settings, now=now)
        session = Dlt698Session(reactor, meter, client, timeout)
        result: Deferred[Any] = run_session(reactor, endpoint, session, meter.route, timeout)
        return result, client

    # -- commands (fep.protocols.dlt698.control) ----------------------------------------------

    @staticmethod
    def check_command(meter: Meter, command: str, params: Mapping[str, Any]) -> None:
        """ConfigError, when a command is asked, for parameters the meter cannot take."""
        if command not in COMMANDS:
            return
        try:
            command_methods(command, params, meter.metadata.get("dlt698_relay"))
            if command == "parameter-set":
                parameter_values(params)
        except ConfigError as e:
            raise ConfigError(f"meter {meter.id}: {command}: {e.message}", key=e.key) from None

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
        """One command in one session: CONNECT, its ACTION method(s), RELEASE; the meter's
        refusal (its DAR) fails it at once (``ActionRefused``, not retried)."""
        if command not in self.commands:
            return fail(NotSupported(f"meter {meter.id}: DL/T 698.45 has no {command} here",
                                     meter=meter.id, protocol=PROTOCOL))
        try:
            methods = command_methods(command, params, meter.metadata.get("dlt698_relay"))
            sets = parameter_values(params) if command == "parameter-set" else ()
            relay = relay_oads(meter.metadata.get("dlt698_relay"))[0]
        except ConfigError as e:
            return fail(ConfigError(f"meter {meter.id}: {command}: {e.message}", key=e.key))
        if sets:
            return self._parameter_set(reactor, endpoint, meter, sets, timeout)
        back = (relay,) if command in RELAY_COMMANDS else ()
        d, client = self._client_run(reactor, endpoint, meter, timeout, items=(), records=(),
                                     actions=methods, read_back=back)

        def done(_: object) -> Mapping[str, Any]:
            assert client is not None
            outcome = {"methods": ",".join(client.actions_done)}
            if back:
                # The relay's state read after the method (its OAD's current state).
                results = [r for _, r in client.read_back if r.oad == relay]
                outcome["relay"] = relay_state(results[0]) if results else "unknown (not read)"
            return outcome

        return d.addCallback(done)

    def _parameter_set(self, reactor: IReactorTime, endpoint: Any, meter: Meter,
                       sets: tuple[tuple[OAD, Data], ...], timeout: float
                       ) -> Deferred[Mapping[str, Any]]:  # fmt: skip
        """``parameter-set``: SET-Request of the attributes (through a terminal: PROXY
        SetThenGet), each read back; the outcome names them and whether the meter holds
        what was written (``verified``)."""
        oads = tuple(oad for oad, _ in sets)
        d, client = self._client_run(reactor, endpoint, meter, timeout, items=(), records=(),
                                     sets=sets, read_back=oads)

        def done(_: object) -> Mapping[str, Any]:
            assert client is not None
            held = {r.oad: r.data for _, r in client.read_back}
            differ = [str(oad) for oad, value in sets if held.get(oad) != value]
            return {"set": ",".join(client.sets_done),
                    "verified": "yes" if not differ else f"no ({', '.join(differ)})"}

        return d.addCallback(done)

    def read(self, reactor: IReactorTime, endpoint: Any, meter: Meter,
             timeout: float) -> Deferred[list[Record]]:  # fmt: skip
        return self._run(reactor, endpoint, meter, timeout)

    def _profile_of(self, meter: Meter) -> tuple[OAD, tuple[OAD, ...], str | None]:
        """The meter's profile object, its columns, and "day"/"month" for the day- (5004) and
        month-frozen (5006) objects (None: a profile of ``dlt698_profile_period``)."""
        profile = _oads(meter, "dlt698_profile") or (DEFAULT_PROFILE,)
        columns = _oads(meter, "dlt698_profile_columns") or DEFAULT_PROFILE_COLUMNS
        kind = {0x5004: "day", 0x5006: "month"}.get(profile[0].oi)
        return profile[0], columns, kind

    def read_profile(self, reactor: IReactorTime, endpoint: Any, meter: Meter, since: datetime,
                     until: datetime, timeout: float) -> Deferred[list[Record]]:  # fmt: skip
        """The load profile's rows frozen in (since, until] (a row closes the interval
        before it), as IntervalBlocks; of the day- and month-frozen objects, the days and
        months starting in [since, until) (``profile_plan``)."""
        md = meter.metadata
        try:
            profile, columns, kind = self._profile_of(meter)
            minutes = int(md.get("dlt698_profile_period", "15") or 15)
            tz = settings_for(meter, self.tz).tz
        except (ConfigError, ValueError) as e:
            return fail(e if isinstance(e, ConfigError) else ConfigError(
                f"meter {meter.id}: dlt698_profile_period must be a whole number",
                key="dlt698_profile_period"))  # fmt: skip
        if kind is not None:
            # Rows frozen at the ends of the days (months) that start in [since, until).
            starts = frozen_boundaries(kind, since, until + (timedelta(days=1) if kind == "day"
                                                             else timedelta(days=31)), tz)
            starts = [t for t in starts if t < until]
            if not starts:
                return succeed([])
            first = starts[0].astimezone(tz)
            last = starts[-1].astimezone(tz)
            if kind == "day":
                lo, hi = first + timedelta(days=1), last + timedelta(days=2)
            else:
                lo, hi = add_months(first, 1), add_months(last, 2)
            read = RecordRead(profile, (FROZEN_TIME, *columns), since=lo, until=hi)
            d = self._run(reactor, endpoint, meter, timeout, items=(), records=(read,))
            series: str = kind

            def blocks(records: list[Record]) -> list[Record]:
                return list(frozen_series(records, series, tz))

            return d.addCallback(blocks)
        period = timedelta(minutes=minutes)
        # No interval in the selector (every row in the range): the dlt698 package refuses
        # one ("read/write refused"), and a profile has one row per interval anyway.
        read = RecordRead(profile, (FROZEN_TIME, *columns), since=since + period,
                          until=until + period, interval=period)  # fmt: skip
        return self._run(reactor, endpoint, meter, timeout, items=(), records=(read,))

    def profile_plan(self, meter: Meter, since: datetime, until: datetime
                     ) -> tuple[list[datetime], timedelta, int] | None:  # fmt: skip
        """For the collection engine's load-profile job (fep.collect.runner): the interval
        starts a day- or month-frozen profile has in [since, until) (local midnights, the
        firsts of the months), the longest period (to join gaps into ranges) and the OBIS F
        group of its series; None for the others (their epoch grid of one period)."""
        try:
            _, _, kind = self._profile_of(meter)
            tz = settings_for(meter, self.tz).tz
        except ConfigError:
            return None
        if kind is None:
            return None
        longest = timedelta(days=1) if kind == "day" else timedelta(days=31)
        return (frozen_boundaries(kind, since, until, tz), longest,
                DAY_SERIES if kind == "day" else MONTH_SERIES)

    def read_events(self, reactor: IReactorTime, endpoint: Any, meter: Meter,
                    since: datetime | None, timeout: float) -> Deferred[list[Record]]:  # fmt: skip
        try:
            events = _oads(meter, "dlt698_events") or (OAD(0x3011, 2),)
            last = int(meter.metadata.get("dlt698_events_last", "10") or 10)
        except (ConfigError, ValueError) as e:
            return fail(e)
        reads = tuple(RecordRead(o, last=last) for o in events)
        d = self._run(reactor, endpoint, meter, timeout, items=(), records=reads)

        def keep(records: list[Record]) -> list[Record]:
            return [r for r in records if isinstance(r, MeterEvent)
                    and (since is None or r.time >= since)]  # fmt: skip

        return d.addCallback(keep)

    def read_clock(self, reactor: IReactorTime, endpoint: Any, meter: Meter,
                   timeout: float) -> Deferred[datetime]:  # fmt: skip
        d = self._run(reactor, endpoint, meter, timeout, items=(CLOCK,), records=())

        def clock(records: list[Record]) -> datetime:
            for r in records:
                if isinstance(r, Reading) and r.obis == CLOCK_OBIS and r.meter_time:
                    return r.meter_time
            raise ProtocolError(f"meter {meter.id}: no clock in the answer", meter=meter.id,
                                route=meter.route, protocol=PROTOCOL)

        return d.addCallback(clock)

    def set_clock(self, reactor: IReactorTime, endpoint: Any, meter: Meter,
                  timeout: float) -> Deferred[None]:  # fmt: skip
        d = self._run(reactor, endpoint, meter, timeout, items=(), records=(), set_clock=True)
        return d.addCallback(lambda _: None)

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
    ) -> Dlt698PushHandler:
        """The traffic of ``meter``'s terminal on its own connection (a GPRS session): a
        report is filed under the meter of the meter list whose address its frame names
        (the terminal or a meter behind it: ``concentrator = ID``), else the terminal."""
        try:
            tz = settings_for(meter, self.tz).tz
        except ConfigError as e:
            log.warn("meter {meter}: {error}; reports read in UTC+8", meter=meter.id,
                     error=str(e))
            tz = self.tz
        known: dict[str, str] | None = None

        def meter_for(address: str) -> str | None:
            nonlocal known
            if known is None:
                known = {}
                mine = [m for m in (directory.all() if directory is not None else [])
                        if m.protocol == PROTOCOL and (
                            m.id == meter.id
                            or m.metadata.get("concentrator", "").strip() == meter.id)]
                for m in mine:
                    if m.address:
                        known.setdefault(m.address.strip(), m.id)
            if address == (meter.address or "").strip():
                return meter.id
            return known.get(address, meter.id)

        return Dlt698PushHandler(meter, sink, tz=tz, source=source, reply=reply,
                                 meter_for=meter_for)

    def with_metadata(self, meter: Meter, **metadata: str) -> Meter:
        return attrs.evolve(meter, metadata={**meter.metadata, **metadata})


__all__ = ["Dlt698Protocol", "Dlt698PushHandler", "Dlt698Session", "settings_for"]
