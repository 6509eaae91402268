"""The Twisted side of IEC 62056-21: a pull readout session over any client endpoint
(IecReadoutProtocol) and a receiver for meters that push their readout over TCP.

The state machine lives in ``client.py``; this module puts it in the session driver's
shape (``ReadoutSteps``: what the step timer waits for) and turns results into Readings;
fep/protocols/session.py moves the bytes, runs the timer and times the baud switch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from typing import Protocol as Protocol_
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.errors import (
    ConfigError,
    FepError,
    FrameError,
    NotSupported,
    ProtocolError,
    SessionTimeout,
)
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
    peer_identified,
)
from fep.model import Meter, Record, utcnow
from fep.protocols.actions import Fail, Finish, Line, Send, SetTimer, SwitchBaud
from fep.protocols.iec62056_21 import profile as profile_
from fep.protocols.iec62056_21 import programming as programming_
from fep.protocols.iec62056_21.client import (
    PROTOCOL,
    IdentificationReceived,
    ModeCClient,
    PushReceived,
    ReadoutReceived,
    State,
)
from fep.protocols.iec62056_21.client import Send as IecSend
from fep.protocols.iec62056_21.client import SwitchBaud as IecSwitchBaud
from fep.protocols.iec62056_21.frames import DataBlock, FrameDecoder, Identification
from fep.protocols.iec62056_21.programming import (
    Answer,
    Finished,
    Operation,
    ProgrammingClient,
    Read,
    Resent,
    Write,
)
from fep.protocols.iec62056_21.readout import (
    DataSet,
    Readout,
    meter_clock,
    parse_readout,
    to_readings,
)
from fep.protocols.session import MeterSession, run_session
from fep.ratelog import RateLimitedLog

log = Logger(namespace="fep.protocols.iec62056_21")


class ReadoutSteps:
    """A ModeCClient in the session driver's shape: the step timer counts silence while
    waiting for the identification, for the readout, and between the readout's bytes."""

    def __init__(self, client: ModeCClient) -> None:
        self.client = client
        self._awaited = "identification"

    @property
    def waiting_for(self) -> str | None:
        return self._awaited

    def start(self) -> list[object]:
        return [Send(self.client.start()), SetTimer()]

    def receive(self, data: bytes) -> list[object]:
        actions = self.client.receive_data(data)
        steps: list[object] = []
        if self.client.state is State.AWAIT_READOUT and not actions:
            # A readout at 300 Bd takes a while: the step timer counts silence, not the total.
            self._awaited = "complete readout"
            steps.append(SetTimer())
        identified = False
        for action in actions:
            if isinstance(action, IecSend):
                steps.append(Send(action.data))
            elif isinstance(action, IecSwitchBaud):
                steps.append(SwitchBaud(action.baudrate))
            elif isinstance(action, IdentificationReceived):
                self._awaited = "readout"
                identified = True
                steps.append(action)
            elif isinstance(action, PushReceived):
                steps += [action, SetTimer()]  # handed to the channel; the wait goes on
            elif isinstance(action, ReadoutReceived):
                steps.append(Finish(action.readout))
        if identified:
            steps.append(SetTimer())  # the readout, once the option select is out
        return steps

    def timeout(self) -> list[object]:
        return [Fail(SessionTimeout(f"no {self._awaited}"))]


class _ReadoutSession(MeterSession):
    """One ModeCClient over one connection; ``done`` fires with the readings."""

    default_baudrate = 300

    def __init__(self, reactor: IReactorTime, meter: Meter, timeout: float, tz: tzinfo) -> None:
        super().__init__(reactor, timeout, meter=meter.id, route=meter.route, protocol=PROTOCOL)
        self.meter = meter
        self.tz = tz
        self._client: ModeCClient | None = None

    def make_steps(self, line: Line) -> ReadoutSteps:
        baud_char = self.meter.metadata.get("iec_baud_char") or None
        # A GPRS modem session lent to this pull also carries the meter's pushes.
        pushes = IPushChannel.providedBy(self.transport)
        self._client = ModeCClient(self.meter.address, switch_baud=line.serial,
                                   baud_char=baud_char, pushes=pushes)
        return ReadoutSteps(self._client)

    def note(self, action: object) -> None:
        if isinstance(action, PushReceived):
            self._hand_over_push(action)
        elif isinstance(action, IdentificationReceived):
            log.debug(
                "identification {ident}",
                ident=action.identification.text,
                meter=self.meter.id,
                route=self.meter.route,
                protocol=PROTOCOL,
            )

    def _hand_over_push(self, push: PushReceived) -> None:
        """A readout the meter pushed while this session waited for its answer: its
        readings go to the channel, to be stored like any other push (the meter's, unless
        it names another serial number: then it is logged and dropped)."""
        fields: dict[str, Any] = {
            "meter": self.meter.id, "route": self.meter.route, "protocol": PROTOCOL}
        if push.readout is None:
            log.warn("{meter}: readout pushed during the pull dropped: {why}",
                     why=push.problem, **fields)
            return
        serial = push.readout.serial()
        if serial and self.meter.serial and serial != self.meter.serial:
            log.warn(
                "{meter}: readout of serial number {serial} pushed during the pull dropped "
                "(not this meter's)",
                serial=serial,
                **fields,
            )
            return
        readings = to_readings(
            push.readout, self.meter.id, tz=self.tz, received_time=utcnow(),
            source=self.meter.route,
        )
        d = IPushChannel(self.transport).pushed(list(readings))

        def not_stored(failure: Failure) -> None:
            log.failure("{meter}: pushed readout not stored", failure, **fields)

        d.addErrback(not_stored)

    def result(self, value: Any) -> list[Record]:
        return list(to_readings(
            value, self.meter.id, tz=self.tz, received_time=utcnow(), source=self.meter.route
        ))

    def lost_while(self) -> str:
        return f"while {self._client.state.value if self._client else 'connecting'}"


# ---------------------------------------------------------------------------
# Programming mode: profile, logbook, clock and parameters
# ---------------------------------------------------------------------------

_CLOCK_FORMATS = {
    # name: (time format, date format) of 0.9.1 and 0.9.2 as the meter reads and writes them
    "plain": ("%H%M%S", "%y%m%d"),
    "separated": ("%H:%M:%S", "%y-%m-%d"),
}

# Parameters ``parameter-set NAME=VALUE`` writes (W5 ADDRESS(VALUE)), by name: the OBIS
# settings a VDEW meter takes in programming mode. A meter's ``iec_parameters`` metadata
# (``name=address;...``) adds its own.
PARAMETERS: Mapping[str, str] = {
    "demand-period": "0.8.0",  # measurement period for demand (minutes)
    "profile-period": "0.8.4",  # load profile recording interval (minutes)
}


@attrs.frozen
class ProgrammingSettings:
    """What a programming session of one meter needs, from its metadata."""

    password: str | None
    password_mode: str
    tz: tzinfo
    clock_format: tuple[str, str]
    read_kind: str
    write_kind: str
    season: bool
    retries: int
    profile: str
    logbook: str
    parameters: Mapping[str, str]


def _command_kind(meter: Meter, key: str, letter: str, default: str) -> str:
    text = meter.metadata.get(key, "").strip().upper() or f"{letter}{default}"
    if len(text) != 2 or text[0] != letter or not text[1].isdigit():
        raise ConfigError(f"meter {meter.id}: {key} is {letter}1..{letter}9, not {text!r}",
                          key=key)
    return text[1]


def programming_settings(meter: Meter, tz: tzinfo) -> ProgrammingSettings:
    """The meter's programming-mode settings; ConfigError names the key at fault."""
    md = meter.metadata
    zone = tz
    if md.get("tz"):
        try:
            zone = ZoneInfo(md["tz"])
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"meter {meter.id}: unknown time zone {md['tz']!r}",
                              key="tz") from None
    clock = md.get("iec_clock_format", "plain").strip().lower()
    if clock not in _CLOCK_FORMATS:
        raise ConfigError(f"meter {meter.id}: iec_clock_format is plain or separated, not "
                          f"{clock!r}", key="iec_clock_format")
    stamp = md.get("iec_profile_stamp", "season").strip().lower()
    if stamp not in ("season", "plain"):
        raise ConfigError(f"meter {meter.id}: iec_profile_stamp is season or plain, not "
                          f"{stamp!r}", key="iec_profile_stamp")
    try:
        retries = int(md.get("iec_retries", programming_.DEFAULT_RETRIES))
    except ValueError:
        raise ConfigError(f"meter {meter.id}: iec_retries must be a whole number",
                          key="iec_retries") from None
    parameters = dict(PARAMETERS)
    for item in md.get("iec_parameters", "").replace(",", ";").split(";"):
        if not item.strip():
            continue
        name, eq, address = item.partition("=")
        if not eq or not name.strip() or not address.strip():
            raise ConfigError(f"meter {meter.id}: iec_parameters entry {item.strip()!r} is "
                              "not name=address", key="iec_parameters")
        parameters[name.strip()] = address.strip()
    for key in ("iec_profile", "iec_logbook"):
        if not _data_text(md.get(key, "")):
            raise ConfigError(f"meter {meter.id}: {key} must be printable ASCII without "
                              "parentheses", key=key)
    if not all(_data_text(address) for address in parameters.values()):
        raise ConfigError(f"meter {meter.id}: iec_parameters addresses must be printable "
                          "ASCII without parentheses", key="iec_parameters")
    password = md.get("iec_password")
    if password and not _data_text(password):
        raise ConfigError(f"meter {meter.id}: iec_password must be printable ASCII without "
                          "parentheses", key="iec_password")
    return ProgrammingSettings(
        password=password if password else None,
        password_mode=md.get("iec_password_mode", "P1").strip().upper() or "P1",
        tz=zone,
        clock_format=_CLOCK_FORMATS[clock],
        read_kind=_command_kind(meter, "iec_read_command", "R", "5"),
        write_kind=_command_kind(meter, "iec_write_command", "W", "5"),
        season=stamp == "season",
        retries=retries,
        profile=md.get("iec_profile", profile_.PROFILE).strip() or profile_.PROFILE,
        logbook=md.get("iec_logbook", profile_.LOGBOOK).strip() or profile_.LOGBOOK,
        parameters=parameters,
    )


def _data_text(text: str) -> bool:
    """Whether ``text`` may stand between a data set's parentheses."""
    return all(0x20 <= ord(c) <= 0x7E and c not in "()" for c in text)


class ProgrammingSteps:
    """A ProgrammingClient in the session driver's shape: the step timer runs from each
    message sent until the meter's answer has come (it counts silence, as a long profile
    answer at 300 Bd trickles in)."""

    def __init__(self, client: ProgrammingClient) -> None:
        self.client = client

    @property
    def waiting_for(self) -> str | None:
        return self.client.state.value

    def start(self) -> list[object]:
        return [Send(self.client.start()), SetTimer()]

    def receive(self, data: bytes) -> list[object]:
        steps: list[object] = []
        for action in self.client.receive_data(data):
            if isinstance(action, programming_.Send):
                steps.append(Send(action.data))
            elif isinstance(action, programming_.SwitchBaud):
                steps.append(SwitchBaud(action.baudrate))
            elif isinstance(action, Finished):
                steps.append(Finish(action))
            else:
                steps.append(action)
        if not any(isinstance(s, Finish) for s in steps):
            steps.append(SetTimer())
        return steps

    def timeout(self) -> list[object]:
        return [Fail(SessionTimeout(f"no answer while {self.client.state.value} "
                                    f"({self.client.current})"))]


class _ProgrammingSession(MeterSession):
    """One programming-mode session; ``done`` fires with the client's Finished."""

    default_baudrate = 300

    def __init__(self, reactor: IReactorTime, meter: Meter, timeout: float,
                 settings: ProgrammingSettings, operations: Sequence[Operation]) -> None:
        super().__init__(reactor, timeout, meter=meter.id, route=meter.route, protocol=PROTOCOL)
        self.meter = meter
        self.settings = settings
        self.operations = list(operations)

    def make_steps(self, line: Line) -> ProgrammingSteps:
        client = ProgrammingClient(
            self.operations,
            address=self.meter.address,
            password=self.settings.password,
            password_mode=self.settings.password_mode,
            switch_baud=line.serial,
            baud_char=self.meter.metadata.get("iec_baud_char") or None,
            retries=self.settings.retries,
            meter=self.meter.id,
        )
        return ProgrammingSteps(client)

    def note(self, action: object) -> None:
        if isinstance(action, Resent):
            log.info("{meter}: {what} sent again (attempt {attempt})", what=action.what,
                     attempt=action.attempt, meter=self.meter.id, route=self.meter.route,
                     protocol=PROTOCOL)


# What the engine puts among a command's parameters besides the operator's (not parameters
# to write).
_ENGINE_PARAMS = frozenset({"progress", "reason", "image_bytes", "attempts", "retry_delay"})


def _answer_sets(answer: Answer) -> tuple[DataSet, ...]:
    return answer.readout.datasets if answer.readout is not None else ()


@implementer(IMeterProtocol, IPushProtocol, IProfileReader, IEventReader, IClock, ICommands)
class IecReadoutProtocol:
    """IEC 62056-21 mode C: the data readout (sign-on, identification, option select,
    readout) for register reads, and programming mode (``ACK 0 Z 1``, P1 password, R5/W5,
    B0) for the load profile (P.01), the logbook (P.98), the clock (0.9.1/0.9.2) and
    ``parameter-set``."""

    name = PROTOCOL
    # Besides time-set and time-sync (IClock).
    commands = ("parameter-set",)

    def __init__(self, tz: tzinfo = UTC) -> None:
        # The zone meter-local times (0.9.1/0.9.2, value timestamps) are read in, unless the
        # meter's metadata names its own (``tz``).
        self.tz = tz

    def read(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[list[Record]]:
        tz = self.tz
        zone_name = meter.metadata.get("tz")
        if zone_name:
            # A meter's own zone (metadata tz = Europe/Berlin) wins over the protocol default.
            try:
                tz = ZoneInfo(zone_name)
            except (ZoneInfoNotFoundError, ValueError):
                return fail(
                    ConfigError(f"meter {meter.id}: unknown time zone {zone_name!r}", key="tz")
                )
        session = _ReadoutSession(reactor, meter, timeout, tz)
        result: Deferred[list[Record]] = run_session(
            reactor, endpoint, session, meter.route, timeout
        )
        return result

    # -- programming mode ---------------------------------------------------------------

    def program(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter,
        operations: Callable[[ProgrammingSettings], Sequence[Operation]], timeout: float,
    ) -> Deferred[tuple[ProgrammingSettings, Finished]]:
        """One programming-mode session running the operations made from the meter's
        settings; fires with (settings, the client's Finished)."""
        try:
            settings = programming_settings(meter, self.tz)
            session = _ProgrammingSession(reactor, meter, timeout, settings,
                                          operations(settings))
        except FepError as e:
            return fail(e)
        d: Deferred[Finished] = run_session(reactor, endpoint, session, meter.route, timeout)
        return d.addCallback(lambda finished: (settings, finished))

    def read_profile(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, since: datetime,
        until: datetime, timeout: float,
    ) -> Deferred[list[Record]]:
        """``R5 P.01(<since>;<until>)``: the captures from ``since`` to ``until``, which
        hold every interval starting in ``[since, until)`` (and the one before)."""

        def operations(settings: ProgrammingSettings) -> list[Operation]:
            argument = profile_.range_argument(since, until, settings.tz,
                                               season=settings.season)
            return [Read(settings.profile, argument, settings.read_kind)]

        def blocks(result: tuple[ProgrammingSettings, Finished]) -> list[Record]:
            settings, finished = result
            records: list[Record] = []
            for answer in finished.answers:
                records += profile_.profile_blocks(
                    _answer_sets(answer), meter.id, tz=settings.tz, source=meter.route,
                    received_time=utcnow(), name=settings.profile)
            return records

        return self.program(reactor, endpoint, meter, operations, timeout).addCallback(
            blocks)

    def read_events(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, since: datetime | None,
        timeout: float,
    ) -> Deferred[list[Record]]:
        """``R5 P.98(<since>;)``: the logbook's entries from ``since`` on, one event per
        status bit."""

        def operations(settings: ProgrammingSettings) -> list[Operation]:
            argument = profile_.range_argument(since, None, settings.tz,
                                               season=settings.season)
            return [Read(settings.logbook, argument, settings.read_kind)]

        def events(result: tuple[ProgrammingSettings, Finished]) -> list[Record]:
            settings, finished = result
            records: list[Record] = []
            for answer in finished.answers:
                records += [
                    e for e in profile_.logbook_events(
                        _answer_sets(answer), meter.id, tz=settings.tz, source=meter.route,
                        received_time=utcnow(), name=settings.logbook)
                    if since is None or e.time >= since
                ]
            return records

        return self.program(reactor, endpoint, meter, operations, timeout).addCallback(
            events)

    def read_clock(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[datetime]:
        """``R5 0.9.2()``, ``R5 0.9.1()``, ``R5 0.9.2()``: the date read on both sides of
        the time, so that a midnight between them does not shift the clock by a day."""

        def operations(settings: ProgrammingSettings) -> list[Operation]:
            kind = settings.read_kind
            return [Read("0.9.2", "", kind), Read("0.9.1", "", kind), Read("0.9.2", "", kind)]

        def clock(result: tuple[ProgrammingSettings, Finished]) -> datetime:
            settings, finished = result
            found: datetime | None = None
            if len(finished.answers) == 3:
                date_before, time_sets, date_after = (_answer_sets(a) for a in finished.answers)
                date_sets = date_before
                # Midnight passed between the reads: a time before noon is the new day's.
                if (date_before != date_after and time_sets and time_sets[0].values
                        and time_sets[0].values[0].value.strip()[:2] < "12"):
                    date_sets = date_after
                found = meter_clock(Readout((*time_sets, *date_sets)), settings.tz)
            if found is None:
                raise ProtocolError(
                    f"meter {meter.id}: no clock in the answers to R{settings.read_kind} "
                    "0.9.1/0.9.2", meter=meter.id, route=meter.route, protocol=PROTOCOL)
            return found

        return self.program(reactor, endpoint, meter, operations, timeout).addCallback(clock)

    def set_clock(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, timeout: float
    ) -> Deferred[Any]:
        """``W5 0.9.1(time)`` then ``W5 0.9.2(date)``, each the server's time (rounded to
        the second, in the meter's zone) at the moment it is sent: the time first, so that
        a midnight between the two writes leaves the meter's own date change to be
        overwritten by the right date."""

        def now(settings: ProgrammingSettings) -> datetime:
            t = datetime.fromtimestamp(round(reactor.seconds()), UTC)
            return t.astimezone(settings.tz)

        def operations(settings: ProgrammingSettings) -> list[Operation]:
            time_format, date_format = settings.clock_format
            kind = settings.write_kind
            return [
                Write("0.9.1", lambda: now(settings).strftime(time_format), kind),
                Write("0.9.2", lambda: now(settings).strftime(date_format), kind),
            ]

        def done(result: tuple[ProgrammingSettings, Finished]) -> dict[str, Any]:
            settings, _ = result
            return {"clock": now(settings).astimezone(UTC).isoformat()}

        return self.program(reactor, endpoint, meter, operations, timeout).addCallback(done)

    def run_command(
        self, reactor: IReactorTime, endpoint: Any, meter: Meter, command: str,
        params: Mapping[str, Any], timeout: float,
        progress: Callable[[Mapping[str, Any]], None],
    ) -> Deferred[Mapping[str, Any]]:
        """``parameter-set NAME=VALUE``: ``W5 ADDRESS(VALUE)`` for each named parameter
        (``PARAMETERS`` and the meter's ``iec_parameters``)."""
        if command != "parameter-set":
            return fail(NotSupported(
                f"meter {meter.id}: protocol {PROTOCOL} cannot run {command}",
                meter=meter.id, protocol=PROTOCOL))
        wanted = {k: str(v) for k, v in params.items() if k not in _ENGINE_PARAMS}

        def operations(settings: ProgrammingSettings) -> list[Operation]:
            unknown = sorted(set(wanted) - set(settings.parameters))
            if unknown or not wanted:
                raise ConfigError(
                    f"meter {meter.id}: parameter-set names "
                    f"{', '.join(unknown) if unknown else 'no parameter'} (known: "
                    f"{', '.join(sorted(settings.parameters))})", key="parameter")
            bad = sorted(name for name, value in wanted.items() if not _data_text(value))
            if bad:
                raise ConfigError(
                    f"meter {meter.id}: parameter-set value of {', '.join(bad)} must be "
                    "printable ASCII without parentheses", key="parameter")
            return [Write(settings.parameters[name], value, settings.write_kind)
                    for name, value in sorted(wanted.items())]

        def done(_: object) -> Mapping[str, Any]:
            return dict(sorted(wanted.items()))

        return self.program(reactor, endpoint, meter, operations, timeout).addCallback(done)

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
    ) -> IecPushHandler:
        """Readouts pushed on ``meter``'s connection: a readout naming another known meter
        (by serial number or identification) goes to that meter, any other to ``meter``."""

        def resolve(ident: str, serial: str | None) -> str:
            found = directory.identify(serial, ident) if directory is not None else None
            return str(found.id) if found is not None else meter.id

        tz = self.tz
        zone_name = meter.metadata.get("tz")
        if zone_name:
            try:
                tz = ZoneInfo(zone_name)
            except (ZoneInfoNotFoundError, ValueError):
                log.warn("meter {meter}: unknown time zone {tz}; pushes read as UTC",
                         meter=meter.id, tz=zone_name)
        return IecPushHandler(
            sink, resolve, stats=IecPushStats(), source=source, close=close, tz=tz
        )


# ---------------------------------------------------------------------------
# Meters that push: identification + readout over an inbound TCP connection
# ---------------------------------------------------------------------------


class PushCounters(Protocol_):
    """Where a push handler counts what it took and what it dropped."""

    readouts: int
    rejected: int
    garbage: int
    bad_blocks: int


@attrs.define
class IecPushStats:
    readouts: int = 0
    rejected: int = 0
    garbage: int = 0
    bad_blocks: int = 0


@implementer(IPushHandler)
class IecPushHandler:
    """Pushed readouts on one connection: identification line(s) and readout block(s).

    Garbage before an identification is skipped (logged, counted in ``garbage``); a readout
    whose meter cannot be resolved closes the connection and is counted in ``rejected``; a
    bad BCC or data line drops that readout (``bad_blocks``).
    """

    def __init__(
        self,
        sink: IRecordSink,
        resolve_meter: Callable[[str, str | None], str | None],
        *,
        stats: PushCounters,
        source: str,
        close: Callable[[], None],
        tz: tzinfo = UTC,
        events: RateLimitedLog | None = None,
    ) -> None:
        self.sink = sink
        self.resolve_meter = resolve_meter
        # Shared by a listener's connections, so that strangers' junk is rate-limited.
        self.events = events if events is not None else RateLimitedLog(log)
        self.stats = stats
        self.source = source
        self.close = close
        self.tz = tz
        self._decoder = FrameDecoder()
        self.identification: Identification | None = None
        # The identification of a push whose readout block has not come yet (a push under
        # way: a pull waits for it, or is handed it, see pending and take_buffered).
        self._unfinished = b""
        self.closed = False
        self.frames = 0

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        # Every message and error of the bytes: what comes before noise is kept, and a
        # readout behind it is taken now, not when the meter sends again.
        for item in self._decoder.decode_all(data):
            if isinstance(item, FrameError):
                skipped = self._decoder.skip_to_frame_start()
                self._garbage(f"{item.message} ({skipped + 1} bytes skipped)")
            elif not self._handle(item):
                return

    def pending(self) -> int:
        return len(self._unfinished) + self._decoder.buffered

    def take_buffered(self) -> bytes:
        unfinished, self._unfinished = self._unfinished, b""
        return unfinished + self._decoder.drain()

    def _garbage(self, why: str) -> None:
        if self.identification is None:
            self.stats.garbage += 1
        else:
            self.stats.bad_blocks += 1
        self.events.info("push from {source}: {why}", source=self.source, why=why,
                         protocol=PROTOCOL)

    def _handle(self, message: object) -> bool:
        """Act on one message; False once the connection is being closed."""
        if self.closed:
            return False
        if isinstance(message, Identification):
            self.identification = message
            self._unfinished = message.encode()
            return True
        if not isinstance(message, DataBlock) or self.identification is None:
            self._garbage(f"unexpected {type(message).__name__} before an identification")
            return True
        self._unfinished = b""
        try:
            readout = parse_readout(message.check().data)
        except FrameError as e:
            self.stats.bad_blocks += 1
            self.events.warn(
                "push from {source}: readout dropped: {why}",
                source=self.source,
                why=e.message,
                protocol=PROTOCOL,
            )
            return True
        ident = self.identification.text
        meter_id = self.resolve_meter(ident, readout.serial())
        if meter_id is None:
            self.stats.rejected += 1
            self.events.warn(
                "push from {source}: unknown meter {ident} (serial {serial}), closing",
                source=self.source,
                ident=ident,
                serial=readout.serial(),
                protocol=PROTOCOL,
            )
            self.closed = True
            self.close()
            return False
        readings = to_readings(
            readout, meter_id, tz=self.tz, received_time=utcnow(), source=self.source
        )
        self.stats.readouts += 1
        self.frames += 1
        d = self.sink.submit(list(readings))
        d.addErrback(
            lambda f: log.failure(
                "push from {source}: sink refused readout", f, source=self.source, meter=meter_id
            )
        )
        return True


class PushedReadoutReceiver(Protocol):
    """One inbound connection of a meter that pushes readouts (no requests), decoded by an
    IecPushHandler counting in the factory."""

    factory: PushedReadoutFactory

    def __init__(self) -> None:
        self.handler: IecPushHandler | None = None
        self.source = "tcp-push"

    @property
    def identification(self) -> Identification | None:
        return self.handler.identification if self.handler is not None else None

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        host = getattr(peer, "host", "?")
        port = getattr(peer, "port", "?")
        self.source = f"tcp-push:{host}:{port}"
        self.handler = IecPushHandler(
            self.factory.sink,
            self.factory.resolve_meter,
            stats=self.factory,
            source=self.source,
            close=self.transport.loseConnection,  # type: ignore[union-attr]
            tz=self.factory.tz,
            events=self.factory.events,
        )

    def dataReceived(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)
            if self.handler.identification is not None:  # the meter said who it is
                peer_identified(self.transport)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self.handler is not None:
            self.handler.closed = True


class PushedReadoutFactory(ServerFactory[PushedReadoutReceiver]):
    """Server factory for pushing meters; counters are shared by all its connections."""

    protocol = PushedReadoutReceiver
    noisy = False

    def __init__(
        self,
        sink: IRecordSink,
        resolve_meter: Callable[[str, str | None], str | None],
        tz: tzinfo = UTC,
    ) -> None:
        self.sink = sink
        self.resolve_meter = resolve_meter
        self.tz = tz
        self.readouts = 0
        self.rejected = 0
        self.garbage = 0
        self.bad_blocks = 0
        self.events = RateLimitedLog(log)
