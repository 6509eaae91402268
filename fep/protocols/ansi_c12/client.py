"""The ANSI C12.18 client session as a sans-IO state machine: identify, negotiate, logon,
security, the C12.19 table reads (identification, status, clock, registers, load profile,
history and event logs; tables bigger than one answer in partial reads), logoff and
terminate over a ``c1218.Link``, and the tables read turned into records.

``start()`` gives the first actions; ``receive(bytes)`` and ``timeout()`` give more:
``Send(bytes)`` to write, ``SwitchBaud(rate)`` where the negotiated speed changes (serial
lines), ``Retransmitted`` when a packet went out again, and at the end ``Finished(data)``
or ``Failed(error)``. Bad bytes or refusals from the meter never raise: they end in
``Failed`` with a FrameError or ProtocolError (``C12ResponseError`` subclasses for the
meter's response codes) naming the meter and route. A meter that refuses a service is told
``terminate`` before the session fails, so it does not hold the line until its own timeout.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

import attrs

from fep.errors import FrameError, NotSupported, ProtocolError, SessionTimeout
from fep.model import ObisCode, Reading, Record, utcnow
from fep.protocols.ansi_c12.c1218 import (
    HEADER_LEN,
    MAX_TABLE_SIZE,
    PROTOCOL,
    C12ResponseError,
    Identify,
    IdentifyResponse,
    Link,
    Logoff,
    Logon,
    Negotiate,
    NegotiateResponse,
    Read,
    Received,
    Request,
    Retransmit,
    Security,
    ServiceNotSupported,
    Standard,
    Terminate,
    Write,
    decode_ok,
    decode_read_response,
)
from fep.protocols.ansi_c12.c1219 import (
    SOURCE,
    ST0_GENERAL_CONFIG,
    ST1_MANUFACTURER_ID,
    ST3_MODE_STATUS,
    ST5_DEVICE_ID,
    ST11_ACTUAL_SOURCES,
    ST12_UOM_ENTRY,
    ST13_DEMAND_CONTROL,
    ST14_DATA_CONTROL,
    ST15_CONSTANTS,
    ST16_SOURCE_DEFINITION,
    ST21_ACTUAL_REGISTERS,
    ST22_DATA_SELECTION,
    ST23_CURRENT_REGISTERS,
    ST51_ACTUAL_TIME_TOU,
    ST52_CLOCK,
    ST53_TIME_OFFSET,
    ST61_ACTUAL_LOAD_PROFILE,
    ST62_LP_SELECTION,
    ST63_LP_STATUS,
    ST64_LP_DATA_SET1,
    ST71_ACTUAL_LOG,
    ST74_HISTORY_LOG,
    ST76_EVENT_LOG,
    ActualLoadProfile,
    ActualLog,
    ActualRegisters,
    ActualSources,
    ActualTimeTou,
    Clock,
    ConstantsSelector,
    CurrentRegisters,
    DataSelection,
    DemandControl,
    DeviceId,
    ElectricConstants,
    GeneralConfig,
    ListStatus,
    LogData,
    LpBlock,
    LpSelection,
    ManufacturerId,
    ModeStatus,
    SourceLink,
    SourceSet,
    TimeOffset,
    UomEntry,
    decode_constants,
    decode_current_registers,
    decode_data_control,
    decode_log,
    decode_lp_data,
    decode_lp_selection,
    decode_lp_status,
    decode_source_links,
    decode_uom_entries,
    log_data_length,
    log_events,
    lp_data_length,
    profile_blocks,
    register_readings,
)
from fep.protocols.ansi_c12.c1221 import (
    DEFAULT_TIMING,
    DES_BLOCK,
    Authenticate,
    AuthenticateResponse,
    Timing,
    TimingSetup,
    TimingSetupResponse,
    auth_service,
    authenticate_request,
    check_authentication,
)
from fep.protocols.ansi_c12.procedures import (
    LIST_EVENT_LOG,
    LIST_HISTORY_LOG,
    SP_REMOTE_RESET,
    SP_RESET_LIST_POINTERS,
    SP_SET_DATE_TIME,
    ST7_PROC_INITIATE,
    ST8_PROC_RESPONSE,
    ProcedureRequest,
    ProcedureResponse,
    RelayAction,
    RemoteReset,
    SetDateTime,
    procedure_label,
    relay_state,
    reset_list,
)
from fep.protocols.ansi_c12.snapshots import (
    ST24_PREV_SEASON,
    ST25_PREV_DEMAND_RESET,
    ST26_SELF_READ,
    SelfReads,
    Snapshot,
    decode_self_reads,
    decode_snapshot,
    snapshot_readings,
)
from fep.protocols.ansi_c12.tables import table_label, table_needs, table_size

# The smallest packet that still carries one byte of data.
MIN_PACKET_SIZE: Final = HEADER_LEN + 2 + 1


# ---------------------------------------------------------------------------
# Actions for the adapter
# ---------------------------------------------------------------------------


@attrs.frozen
class Send:
    """Write these bytes to the line (then arm the timer)."""

    data: bytes


@attrs.frozen
class SwitchBaud:
    """The meter agreed to a new line speed: change ours once the bytes sent before this
    action have left the line, before the next ``Send``."""

    baudrate: int


@attrs.frozen
class SetTiming:
    """C12.21: the meter agreed to this timing; wait ``timing.response`` seconds for an
    ACK from now on."""

    timing: Timing


@attrs.frozen
class Retransmitted:
    """A packet went out again (a NAK or no ACK in time); ``attempt`` counts resends."""

    attempt: int
    why: str


@attrs.frozen
class Finished:
    data: MeterData | TableDump | ClockResult | CommandResult


@attrs.frozen
class Failed:
    error: ProtocolError | FrameError | NotSupported


Action = Send | SwitchBaud | SetTiming | Retransmitted | Finished | Failed


# ---------------------------------------------------------------------------
# Settings and results
# ---------------------------------------------------------------------------


@attrs.frozen
class ClockJob:
    """Read the clock (ST52, with ST53's zone for a local clock); with ``set_clock`` also
    set it to our time by SP 10 (built when it is sent)."""

    set_clock: bool = False


# The commands of fep's vocabulary a C12 session runs (fep.collect.tasks.COMMANDS).
C12_COMMANDS: Final = ("demand-reset", "event-log-clear", "disconnect", "reconnect",
                       "relay-state")
RELAY_COMMANDS: Final = {"disconnect": RelayAction.OPEN, "reconnect": RelayAction.CLOSE,
                         "relay-state": RelayAction.STATE}


@attrs.frozen
class CommandJob:
    """One command of the vocabulary by procedures (ST7/ST8): ``demand-reset`` (SP 9,
    ``self_read`` also asks for a self-read, ``season`` a season change), ``event-log-clear``
    (SP 4 on the event and history logs, or ``log`` = ``event``/``history``),
    ``disconnect``/``reconnect``/``relay-state`` (the manufacturer relay procedure
    ``relay_procedure``, when the meter has one)."""

    command: str
    self_read: bool = False
    season: int | None = None
    log: str = "all"
    relay_procedure: int | None = None


@attrs.frozen
class ClientSettings:
    """How to talk to one meter. ``password`` is kept out of the repr (logs, errors)."""

    meter: str | None = None
    route: str | None = None
    identity: int = 0
    user_id: int = 0
    user: bytes = b"fep"
    password: bytes | None = attrs.field(default=None, repr=False)
    password_pad: int = 0x00
    packet_size: int = 256
    max_packets: int = 4
    baud: int | None = None
    retries: int = 3
    tz: tzinfo = UTC
    # Load profile (ST61-64) and history/event logs (ST71/74/76), when ST0 lists them.
    profile: bool = True
    events: bool = True
    # ``fep read --table``: read these tables (and what they are decoded with) instead.
    tables: tuple[int, ...] = ()
    # C12.21: the timing to ask for in a timing setup (None: send none, keep the
    # defaults), and the DES key (8 bytes, kept out of the repr) and key id for the
    # authenticate service when the meter asks for it.
    timing: Timing | None = None
    auth_key: bytes | None = attrs.field(default=None, repr=False)
    auth_key_id: int = 0
    # Instead of a read: the clock (read or set) or a command by procedures.
    job: ClockJob | CommandJob | None = None
    # Whether ``tz`` was given (metadata ``tz``): if not, a meter whose clock is local
    # gives its own zone offset in ST53.
    tz_given: bool = False
    # Read the snapshots (ST24-26) when ST0 lists them.
    snapshots: bool = True

    def __attrs_post_init__(self) -> None:
        if not MIN_PACKET_SIZE <= self.packet_size <= 8192:
            raise ValueError(f"packet size {self.packet_size} is not {MIN_PACKET_SIZE}..8192")
        if not 1 <= self.max_packets <= 255:
            raise ValueError(f"number of packets {self.max_packets} is not 1..255")
        if self.auth_key is not None and len(self.auth_key) != DES_BLOCK:
            raise ValueError(f"a C12.21 authentication key is {DES_BLOCK} bytes (DES)")
        if not 0 <= self.auth_key_id <= 255:
            raise ValueError(f"authentication key id {self.auth_key_id} is not 0..255")


@attrs.frozen
class MeterData:
    """Everything one session read, decoded; ``skipped`` gives (table or service, why) for
    each table the meter refused or does not list in ST0, and a refused logoff/terminate."""

    identification: IdentifyResponse
    negotiated: NegotiateResponse
    config: GeneralConfig
    manufacturer: ManufacturerId
    device: DeviceId | None = None
    mode_status: ModeStatus | None = None
    clock: Clock | None = None
    # When the ST52 answer arrived by our clock: the meter's clock deviation is
    # ``clock.time - clock_received``.
    clock_received: datetime | None = None
    registers: ActualRegisters | None = None
    uoms: tuple[UomEntry, ...] = ()
    # ST11-16 with ST12: units, demand control, identifiers, constants, source links.
    sources: SourceSet | None = None
    selection: DataSelection | None = None
    current: CurrentRegisters | None = None
    lp_actual: ActualLoadProfile | None = None
    lp_selection: LpSelection | None = None
    lp_status: ListStatus | None = None
    lp_blocks: tuple[LpBlock, ...] = ()
    log_actual: ActualLog | None = None
    history_log: LogData | None = None
    event_log: LogData | None = None
    # ST24 previous season, ST25 previous demand reset, ST26 self-reads.
    season_snapshot: Snapshot | None = None
    demand_reset_snapshot: Snapshot | None = None
    self_reads: SelfReads | None = None
    tables: Mapping[int, bytes] = attrs.field(factory=dict, eq=False, repr=False)
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def clock_deviation(self) -> float | None:
        """Seconds the meter's clock is ahead of ours (negative: behind)."""
        if self.clock is None or self.clock_received is None:
            return None
        return (self.clock.time - self.clock_received).total_seconds()

    def to_records(self, meter: str, received_time: datetime | None = None) -> list[Record]:
        """Readings: identification texts, status, the clock (meter_time the meter's time,
        received_time ours: the deviation stays in the record) and the registers."""
        received = received_time if received_time is not None else utcnow()
        when = self.clock.time if self.clock is not None else None

        def text(obis: ObisCode, value: str | int, native: str) -> Reading:
            return Reading(
                meter=meter,
                obis=obis,
                value=value,
                meter_time=when,
                received_time=received,
                source=SOURCE,
                native_id=native,
            )

        mfg = self.manufacturer
        records: list[Record] = [
            text(ObisCode(0, 0, 96, 1, 0), mfg.serial_number, "ST1 MFG_SERIAL_NUMBER"),
            text(
                ObisCode(0, 0, 96, 1, 1),
                f"{mfg.manufacturer} {mfg.model}".strip(),
                "ST1 MANUFACTURER ED_MODEL",
            ),
            text(
                ObisCode(1, 0, 0, 2, 0),
                f"{mfg.fw_version}.{mfg.fw_revision}",
                "ST1 FW_VERSION_NUMBER FW_REVISION_NUMBER",
            ),
        ]
        if self.device is not None:
            records.append(
                text(ObisCode(0, 0, 0, 0, 0), self.device.identification, "ST5 IDENTIFICATION")
            )
        if self.mode_status is not None:
            records.append(
                text(
                    ObisCode(0, 0, 97, 97, 0),
                    int(self.mode_status.std_status),
                    "ST3 ED_STD_STATUS1",
                )
            )
        if self.clock is not None:
            clock_time = self.clock_received if self.clock_received is not None else received
            records.append(self.clock.reading(meter, clock_time))
        if self.current is not None and self.registers is not None:
            records.extend(
                register_readings(
                    meter,
                    self.current,
                    self.registers,
                    self.selection,
                    self.uoms,
                    sources=self.sources,
                    meter_time=when,
                    received_time=received,
                )
            )
        if self.lp_actual and self.lp_selection and self.lp_status and self.lp_blocks:
            records.extend(
                profile_blocks(
                    meter,
                    self.lp_actual,
                    self.lp_selection,
                    self.lp_status,
                    self.lp_blocks,
                    self.uoms,
                    sources=self.sources,
                    received_time=received,
                )
            )
        for table, log in ((ST74_HISTORY_LOG, self.history_log), (ST76_EVENT_LOG, self.event_log)):
            if log is not None:
                records.extend(log_events(meter, log, table, received_time=received))
        if self.registers is not None:
            snaps: list[tuple[int, Snapshot]] = []
            if self.season_snapshot is not None:
                snaps.append((ST24_PREV_SEASON, self.season_snapshot))
            if self.demand_reset_snapshot is not None:
                snaps.append((ST25_PREV_DEMAND_RESET, self.demand_reset_snapshot))
            if self.self_reads is not None:
                snaps.extend((ST26_SELF_READ, s) for s in self.self_reads.reads)
            for table, snap in snaps:
                records.extend(
                    snapshot_readings(meter, snap, table, self.registers, self.selection,
                                      sources=self.sources if self.sources is not None
                                      else SourceSet(uoms=self.uoms),
                                      received_time=received)
                )
        return records


@attrs.frozen
class ClockResult:
    """A clock session: the meter's clock as read (``received`` by our clock) and, when
    it was set, the time it was set to (UTC)."""

    clock: Clock
    received: datetime
    set_to: datetime | None = None
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def deviation(self) -> float:
        """Seconds the meter's clock was ahead of ours when read (negative: behind)."""
        return (self.clock.time - self.received).total_seconds()


@attrs.frozen
class CommandResult:
    """What a command did, as JSON-able values (the meter's procedure answers)."""

    command: str
    done: Mapping[str, object]
    skipped: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class TableDump:
    """The tables a ``--table`` session read: ``tables`` has each table asked for that
    the meter gave, and the tables read to decode it (ST0 always); ``errors`` gives
    (table, why) for each the meter refused."""

    identification: IdentifyResponse
    negotiated: NegotiateResponse
    config: GeneralConfig
    requested: tuple[int, ...]
    tables: Mapping[int, bytes] = attrs.field(factory=dict)
    errors: tuple[tuple[int, str], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()


def parse_password(text: str) -> bytes:
    """A password from meter metadata: ``hex:0011..`` (or ``0x0011..``) is binary, anything
    else is text (latin-1); ValueError for bad hex or more than 20 bytes."""
    lowered = text.lower()
    if lowered.startswith(("hex:", "0x")):
        raw = bytes.fromhex(text[4 if lowered.startswith("hex:") else 2 :])
    else:
        raw = text.encode("latin-1")
    if len(raw) > 20:
        raise ValueError("a C12.18 password is at most 20 bytes")
    return raw


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------


class State(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    CLOSING = "terminating after an error"
    DONE = "done"


@attrs.frozen
class _BaudChange:
    baudrate: int


@attrs.frozen
class _TimingChange:
    timing: Timing


_Step = Request | TimingSetup | Authenticate | _BaudChange | _TimingChange
_OPTIONAL_ERRORS = (C12ResponseError,)


class C1218Client:
    """One C12.18 session with one meter, from identify to terminate.

    ``now`` gives our clock (UTC) when the ST52 answer arrives, for the deviation.
    """

    def __init__(self, settings: ClientSettings, *, now: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.now = now
        self.state = State.IDLE
        self.link = Link(
            identity=settings.identity,
            packet_size=settings.packet_size,
            retries=settings.retries,
            meter=settings.meter,
        )
        self.waiting_for: str | None = None
        self._conversation: Generator[
            _Step, bytes, MeterData | TableDump | ClockResult | CommandResult] | None = None
        self._error: ProtocolError | FrameError | NotSupported | None = None
        # Procedure sequence numbers (ST7 SEQ_NBR): from our clock, then counting.
        self._seq = int(now().timestamp()) % 254 + 1
        self._negotiated: NegotiateResponse | None = None
        self._config: GeneralConfig | None = None
        self._tables: dict[int, bytes] = {}
        self._skipped: list[tuple[str, str]] = []

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    # -- errors -----------------------------------------------------------------------------

    def _named(
        self, error: ProtocolError | FrameError | NotSupported
    ) -> ProtocolError | FrameError | NotSupported:
        if isinstance(error, ProtocolError):
            if error.meter is None:
                error.meter = self.settings.meter
            if error.route is None:
                error.route = self.settings.route
            if error.protocol is None:
                error.protocol = PROTOCOL
        return error

    def _who(self) -> str:
        return f"meter {self.settings.meter}" if self.settings.meter else "meter"

    # -- driving ----------------------------------------------------------------------------

    def start(self) -> list[Action]:
        if self.state is not State.IDLE:
            raise ProtocolError(f"C12.18 session already {self.state.value}", protocol=PROTOCOL)
        self.state = State.RUNNING
        self._conversation = self._talk()
        return self._advance(None)

    def receive(self, data: bytes) -> list[Action]:
        """Bytes from the meter: ACK/NAK handling, answers, the next request."""
        if self.state not in (State.RUNNING, State.CLOSING):
            return []
        try:
            out, events = self.link.receive(data)
        except ProtocolError as e:
            return self._fail(e)
        actions: list[Action] = [Send(out)] if out else []
        for event in events:
            if isinstance(event, Retransmit):
                actions.append(Retransmitted(event.attempt, "NAK"))
            elif isinstance(event, Received) and self.waiting_for is not None:
                self.waiting_for = None
                if self.state is State.CLOSING:
                    assert self._error is not None
                    actions += self._fail(self._error)
                else:
                    actions += self._advance(event.data)
                if self.done:
                    break
        return actions

    def timeout(self) -> list[Action]:
        """The timer ran out: resend a packet still waiting for its ACK, else give up."""
        if self.state not in (State.RUNNING, State.CLOSING):
            return []
        what = self.waiting_for or "the last request"
        if self.link.awaiting_ack:
            try:
                data = self.link.timeout()
            except ProtocolError as e:
                return self._fail(self._error or SessionTimeout(e.message))
            return [Send(data), Retransmitted(self.link.attempt, "no ACK")]
        return self._fail(self._error or SessionTimeout(f"{self._who()}: no answer to {what}"))

    def _fail(self, error: ProtocolError | FrameError | NotSupported) -> list[Action]:
        self.state = State.DONE
        self.waiting_for = None
        return [Failed(self._named(error))]

    def _advance(self, answer: bytes | None) -> list[Action]:
        assert self._conversation is not None
        actions: list[Action] = []
        try:
            step = next(self._conversation) if answer is None else self._conversation.send(answer)
            while isinstance(step, _BaudChange | _TimingChange):
                if isinstance(step, _BaudChange):
                    actions.append(SwitchBaud(step.baudrate))
                else:
                    actions.append(SetTiming(step.timing))
                step = self._conversation.send(b"")
        except StopIteration as stop:
            self.state = State.DONE
            actions.append(Finished(stop.value))
            return actions
        except (ProtocolError, FrameError, NotSupported) as e:
            return actions + self._close_with(e)
        return actions + self._request(step)

    def _request(self, request: Request | TimingSetup | Authenticate) -> list[Action]:
        self.waiting_for = (
            f"read of table {request.table}" if isinstance(request, Read)
            else f"write of table {request.table}" if isinstance(request, Write)
            else request.name
        )
        try:
            return [Send(self.link.send(request.encode()))]
        except (ProtocolError, ValueError) as e:
            return self._fail(ProtocolError(f"C12.18: cannot send {self.waiting_for}: {e}"))

    def _close_with(self, error: ProtocolError | FrameError | NotSupported) -> list[Action]:
        """Tell the meter ``terminate``, then fail with ``error`` whatever it answers."""
        self._error = self._named(error)
        self.state = State.CLOSING
        return self._request(Terminate())

    # -- the conversation -------------------------------------------------------------------

    def _read(self, table: int, size: int = 0) -> Generator[_Step, bytes, bytes]:
        """One table, whole; in partial reads (3F) when ``size`` says it is bigger than
        one answer."""
        meter = self.settings.meter
        assert self._negotiated is not None
        if size > MAX_TABLE_SIZE:
            # The size comes from the meter's own tables (ST61/62, ST71): a table declared
            # bigger than partial reads can address is refused before any read.
            raise FrameError(
                f"ST{table} would be {size} bytes, more than the {MAX_TABLE_SIZE} a C12.18 "
                "partial read can address",
                field=f"ST{table}",
            )
        room = self._negotiated.max_packets * (self.link.packet_size - HEADER_LEN - 2) - 4
        if size <= room or room < 1:
            data = decode_read_response((yield Read(table)), meter=meter, table=table)
        else:
            parts = []
            for offset in range(0, size, room):
                count = min(room, size - offset)
                part = decode_read_response(
                    (yield Read(table, offset, count)), meter=meter, table=table
                )
                if len(part) != count:
                    raise FrameError(
                        f"ST{table}: asked for {count} bytes at {offset}, got {len(part)}",
                        field=f"ST{table}",
                    )
                parts.append(part)
            data = b"".join(parts)
        self._tables[table] = data
        return data

    def _optional(self, table: int, size: int = 0) -> Generator[_Step, bytes, bytes | None]:
        """A table ST0 lists, or None (noted in ``skipped``) when it does not or the meter
        refuses it."""
        config = self._config
        if config is not None and config.std_tables_used and table not in config.std_tables_used:
            self._skipped.append((f"ST{table}", "not listed as used in ST0"))
            return None
        try:
            return (yield from self._read(table, size))
        except _OPTIONAL_ERRORS as e:
            self._skipped.append((f"ST{table}", e.message))
            return None

    def _sources(self, config: GeneralConfig) -> Generator[_Step, bytes, SourceSet]:
        """Decade 1: ST11 first (it sizes ST13-16), then ST12 and the tables ST11 says
        have entries."""
        optional = self._optional
        raw = yield from optional(ST11_ACTUAL_SOURCES)
        actual = ActualSources.decode(raw) if raw is not None else None
        raw = yield from optional(ST12_UOM_ENTRY)
        uoms = decode_uom_entries(raw, config) if raw is not None else ()
        if actual is None:
            return SourceSet(uoms=uoms)
        demand: DemandControl | None = None
        data_control: tuple[bytes, ...] = ()
        constants: tuple[ElectricConstants, ...] = ()
        links: tuple[SourceLink, ...] = ()
        if actual.nbr_demand_ctrl_entries or actual.reset_exclude or actual.pf_exclude:
            raw = yield from optional(ST13_DEMAND_CONTROL)
            demand = DemandControl.decode(raw, config, actual) if raw is not None else None
        if actual.nbr_data_ctrl_entries and actual.data_ctrl_length:
            raw = yield from optional(ST14_DATA_CONTROL)
            data_control = decode_data_control(raw, actual) if raw is not None else ()
        if actual.nbr_constants_entries and actual.constants_selector != ConstantsSelector.ELECTRIC:
            self._skipped.append(
                ("ST15", f"gas constants (selector {actual.constants_selector})")
            )
        elif actual.nbr_constants_entries:
            raw = yield from optional(ST15_CONSTANTS)
            constants = decode_constants(raw, config, actual) if raw is not None else ()
        if actual.nbr_sources:
            raw = yield from optional(ST16_SOURCE_DEFINITION)
            links = decode_source_links(raw, actual) if raw is not None else ()
        return SourceSet(actual, uoms, demand, data_control, constants, links)

    def _negotiate(self) -> Generator[_Step, bytes, NegotiateResponse]:
        s = self.settings
        negotiated = NegotiateResponse.decode(
            (yield Negotiate(s.packet_size, s.max_packets, s.baud)), meter=s.meter
        )
        if negotiated.packet_size < MIN_PACKET_SIZE:
            raise ProtocolError(
                f"{self._who()} negotiated packets of {negotiated.packet_size} bytes"
            )
        self.link.packet_size = min(s.packet_size, negotiated.packet_size)
        self._negotiated = negotiated
        if negotiated.baud:  # 0: the baud is set outside the protocol (a modem line)
            yield _BaudChange(negotiated.baud)
        return negotiated

    def _open(self) -> Generator[_Step, bytes, tuple[IdentifyResponse, NegotiateResponse]]:
        """Identify, negotiate, logon and security: the C12.18 way into a session."""
        s = self.settings
        identification = IdentifyResponse.decode((yield Identify()), meter=s.meter)
        negotiated = yield from self._negotiate()
        decode_ok((yield Logon(s.user_id, s.user[:10])), "logon", meter=s.meter)
        if s.password is not None:
            decode_ok((yield Security(s.password, s.password_pad)), "security", meter=s.meter)
        return identification, negotiated

    def _talk(
        self,
    ) -> Generator[_Step, bytes, MeterData | TableDump | ClockResult | CommandResult]:
        identification, negotiated = yield from self._open()
        result: MeterData | TableDump | ClockResult | CommandResult
        job = self.settings.job
        if isinstance(job, ClockJob):
            result = yield from self._clock_job(job)
        elif isinstance(job, CommandJob):
            result = yield from self._command_job(job)
        elif self.settings.tables:
            result = yield from self._read_tables(identification, negotiated)
        else:
            result = yield from self._read_meter(identification, negotiated)
        # The data is in: a meter that refuses to log off or terminate does not lose it.
        for request in (Logoff(), Terminate()):
            try:
                decode_ok((yield request), request.name, meter=self.settings.meter)
            except _OPTIONAL_ERRORS as e:
                self._skipped.append((request.name, e.message))
        return attrs.evolve(result, skipped=tuple(self._skipped))

    # -- clock and commands -------------------------------------------------------------

    def _config_read(self) -> Generator[_Step, bytes, GeneralConfig]:
        config = GeneralConfig.decode((yield from self._read(ST0_GENERAL_CONFIG)))
        self._config = config
        return config

    def _meter_zone(self, config: GeneralConfig, clock_dst: bool) -> Generator[
            _Step, bytes, tzinfo]:
        """The zone of a meter whose clock is local: ``tz`` when given, else ST53's offset
        (ST51 lays it out) when the meter has them, else ``tz`` (UTC)."""
        s = self.settings
        if s.tz_given or not {ST51_ACTUAL_TIME_TOU, ST53_TIME_OFFSET} <= config.std_tables_used:
            return s.tz
        raw = yield from self._optional(ST51_ACTUAL_TIME_TOU)
        if raw is None:
            return s.tz
        actual = ActualTimeTou.decode(raw, config)
        raw = yield from self._optional(ST53_TIME_OFFSET)
        if raw is None:
            return s.tz
        zone = TimeOffset.decode(raw, config, actual).zone(clock_dst)
        return zone if zone is not None else s.tz

    def _clock_job(self, job: ClockJob) -> Generator[_Step, bytes, ClockResult]:
        """ST0, ST52 (and ST51/53 for a local clock's zone); with ``set_clock`` then SP 10
        with our clock's time at the moment the procedure is built."""
        config = yield from self._config_read()
        raw = yield from self._read(ST52_CLOCK)
        received = self.now()
        clock = Clock.decode(raw, config, self.settings.tz)
        zone: tzinfo = UTC
        if not clock.gmt:
            zone = yield from self._meter_zone(config, clock.dst)
            if zone is not self.settings.tz:
                clock = Clock.decode(raw, config, zone)
        if not job.set_clock:
            return ClockResult(clock, received)
        # Whole seconds (LTIME_DATE has no fraction), rounded to the nearest.
        when = (self.now() + timedelta(microseconds=500_000)).replace(microsecond=0)
        local = when.astimezone(zone)

        def request(seq: int) -> ProcedureRequest:
            params = SetDateTime(local, day_of_week=local.isoweekday() % 7,
                                 gmt=clock.gmt, dst=clock.dst)
            return ProcedureRequest(SP_SET_DATE_TIME, seq, params.encode(config))

        yield from self._procedure(request, "time-set", config)
        return ClockResult(clock, received, when)

    def _procedure(
        self,
        build: Callable[[int], ProcedureRequest],
        command: str,
        config: GeneralConfig,
    ) -> Generator[_Step, bytes, bytes]:
        """Run one procedure: ST0 must list it as used; write ST7, read ST8, check that
        ST8 answers it and that it completed. Fires with its response data."""
        s = self.settings
        request = build(self._seq)
        self._seq = self._seq % 254 + 1
        used = config.mfg_procs_used if request.mfg else config.std_procs_used
        if request.number not in used:
            raise NotSupported(
                f"{self._who()}: {command} needs {request.label}, which the meter's ST0 does "
                "not list as used",
                meter=s.meter,
                protocol=PROTOCOL,
            )
        decode_ok(
            (yield Write(ST7_PROC_INITIATE, request.encode(config))),
            f"write of ST7 ({command}: {request.label})",
            meter=s.meter,
        )
        answer = ProcedureResponse.decode((yield from self._read(ST8_PROC_RESPONSE)), config)
        return answer.check(request, command=command, meter=s.meter, route=s.route)

    def _command_job(self, job: CommandJob) -> Generator[_Step, bytes, CommandResult]:
        config = yield from self._config_read()
        command = job.command
        done: dict[str, object] = {}
        if command == "demand-reset":
            action = RemoteReset(True, job.self_read, job.season)
            data = yield from self._procedure(
                lambda seq: ProcedureRequest(SP_REMOTE_RESET, seq, action.encode()),
                command, config)
            done["procedure"] = procedure_label(SP_REMOTE_RESET, False)
            if data:
                done["response"] = data.hex()
            # The meter's demand reset counter after it (ST23), when it keeps one.
            if {ST21_ACTUAL_REGISTERS, ST23_CURRENT_REGISTERS} <= config.std_tables_used:
                raw = yield from self._optional(ST21_ACTUAL_REGISTERS)
                registers = ActualRegisters.decode(raw) if raw is not None else None
                if registers is not None and registers.demand_reset_counter:
                    raw = yield from self._optional(ST23_CURRENT_REGISTERS)
                    if raw is not None:
                        current = decode_current_registers(raw, config, registers,
                                                           self.settings.tz)
                        done["demand_resets"] = current.demand_resets
        elif command == "event-log-clear":
            lists = {"event": (LIST_EVENT_LOG,), "history": (LIST_HISTORY_LOG,),
                     "all": (LIST_EVENT_LOG, LIST_HISTORY_LOG)}[job.log]
            for which in lists:
                yield from self._procedure(_reset_list_request(which), command, config)
            done["procedure"] = procedure_label(SP_RESET_LIST_POINTERS, False)
            done["lists"] = ",".join("event" if w == LIST_EVENT_LOG else "history"
                                     for w in lists)
        elif command in RELAY_COMMANDS:
            number = job.relay_procedure
            if number is None:
                raise NotSupported(
                    f"{self._who()}: {command} needs the meter's relay procedure "
                    "(c12_relay_procedure); none is configured",
                    meter=self.settings.meter, protocol=PROTOCOL)
            relay = bytes([RELAY_COMMANDS[command]])
            data = yield from self._procedure(
                lambda seq: ProcedureRequest(number, seq, relay, mfg=True), command, config)
            done["procedure"] = procedure_label(number, True)
            done["relay"] = relay_state(data, meter=self.settings.meter).name.lower()
        else:
            raise NotSupported(f"{self._who()}: ANSI C12 cannot run {command}",
                               meter=self.settings.meter, protocol=PROTOCOL)
        return CommandResult(command, done)

    def _read_tables(
        self, identification: IdentifyResponse, negotiated: NegotiateResponse
    ) -> Generator[_Step, bytes, TableDump]:
        """``fep read --table``: ST0, then each table asked for after the tables it is
        decoded with; a table the meter refuses is noted in ``errors``."""
        config = GeneralConfig.decode((yield from self._read(ST0_GENERAL_CONFIG)))
        self._config = config
        errors: dict[int, str] = {}
        wanted = list(dict.fromkeys(self.settings.tables))
        order = list(dict.fromkeys(n for t in wanted for n in (*table_needs(t), t)))
        for table in order:
            if table in self._tables or table in errors:
                continue
            missing = [n for n in table_needs(table) if n in errors]
            if missing:
                errors[table] = f"needs {table_label(missing[0])}, which was not read"
                continue
            try:
                size = table_size(table, self._tables)
            except FrameError as e:
                errors[table] = f"cannot size it: {e.message}"
                continue
            try:
                yield from self._read(table, size)
            except _OPTIONAL_ERRORS as e:
                errors[table] = e.message
        return TableDump(
            identification=identification,
            negotiated=negotiated,
            config=config,
            requested=tuple(wanted),
            tables=dict(self._tables),
            errors=tuple(sorted(errors.items())),
        )

    def _read_meter(
        self, identification: IdentifyResponse, negotiated: NegotiateResponse
    ) -> Generator[_Step, bytes, MeterData]:
        s = self.settings
        optional = self._optional
        read = self._read

        config = GeneralConfig.decode((yield from read(ST0_GENERAL_CONFIG)))
        self._config = config
        manufacturer = ManufacturerId.decode((yield from read(ST1_MANUFACTURER_ID)), config)
        raw = yield from optional(ST5_DEVICE_ID)
        device = DeviceId.decode(raw, config) if raw is not None else None
        raw = yield from optional(ST3_MODE_STATUS)
        mode_status = ModeStatus.decode(raw, config) if raw is not None else None
        raw = yield from optional(ST52_CLOCK)
        clock_received = self.now() if raw is not None else None
        clock = Clock.decode(raw, config, s.tz) if raw is not None else None

        registers: ActualRegisters | None = None
        selection: DataSelection | None = None
        current: CurrentRegisters | None = None
        uoms: tuple[UomEntry, ...] = ()
        sources: SourceSet | None = None
        raw = yield from optional(ST21_ACTUAL_REGISTERS)
        if raw is not None:
            registers = ActualRegisters.decode(raw)
            sources = yield from self._sources(config)
            uoms = sources.uoms
            raw = yield from optional(ST22_DATA_SELECTION)
            selection = DataSelection.decode(raw, registers) if raw is not None else None
            raw = yield from optional(ST23_CURRENT_REGISTERS)
            if raw is not None:
                current = decode_current_registers(raw, config, registers, s.tz)

        lp_actual: ActualLoadProfile | None = None
        lp_selection: LpSelection | None = None
        lp_status: ListStatus | None = None
        lp_blocks: tuple[LpBlock, ...] = ()
        if s.profile and ST64_LP_DATA_SET1 in config.std_tables_used:
            raw = yield from optional(ST61_ACTUAL_LOAD_PROFILE)
            lp_actual = ActualLoadProfile.decode(raw, config) if raw is not None else None
            if lp_actual is not None and lp_actual.sets[0] is not None:
                raw = yield from optional(ST62_LP_SELECTION)
                if raw is not None:
                    lp_selection = decode_lp_selection(raw, config, lp_actual)[0]
                raw = yield from optional(ST63_LP_STATUS)
                if raw is not None:
                    lp_status = decode_lp_status(raw, config, lp_actual)[0]
            if lp_actual and lp_selection and lp_status and lp_status.nbr_valid:
                size = lp_data_length(config, lp_actual, lp_selection)
                raw = yield from optional(ST64_LP_DATA_SET1, size)
                if raw is not None:
                    lp_blocks = decode_lp_data(raw, config, lp_actual, lp_selection, s.tz)

        season: Snapshot | None = None
        demand_reset: Snapshot | None = None
        self_reads: SelfReads | None = None
        if registers is not None and s.snapshots:
            used = config.std_tables_used
            # A meter that keeps the snapshot's time and gives none has not taken it yet.
            def taken(snap: Snapshot) -> Snapshot | None:
                return None if registers.date_time_field and snap.end_time is None else snap

            if ST24_PREV_SEASON in used:
                raw = yield from optional(ST24_PREV_SEASON)
                if raw is not None:
                    season = taken(decode_snapshot(raw, config, registers, ST24_PREV_SEASON,
                                                   s.tz))
            if ST25_PREV_DEMAND_RESET in used:
                raw = yield from optional(ST25_PREV_DEMAND_RESET)
                if raw is not None:
                    demand_reset = taken(decode_snapshot(raw, config, registers,
                                                         ST25_PREV_DEMAND_RESET, s.tz))
            if ST26_SELF_READ in used and registers.nbr_self_reads:
                raw = yield from optional(ST26_SELF_READ)
                if raw is not None:
                    self_reads = decode_self_reads(raw, config, registers, s.tz)

        log_actual: ActualLog | None = None
        logs: dict[int, LogData] = {}
        if s.events and ST71_ACTUAL_LOG in config.std_tables_used:
            raw = yield from optional(ST71_ACTUAL_LOG)
            log_actual = ActualLog.decode(raw, config) if raw is not None else None
            if log_actual is not None:
                for table, entries in (
                    (ST74_HISTORY_LOG, log_actual.nbr_history_entries),
                    (ST76_EVENT_LOG, log_actual.nbr_event_entries),
                ):
                    if not entries or table not in config.std_tables_used:
                        continue
                    size = log_data_length(config, log_actual, table)
                    raw = yield from optional(table, size)
                    if raw is not None:
                        logs[table] = decode_log(raw, config, log_actual, table, s.tz)

        return MeterData(
            identification=identification,
            negotiated=negotiated,
            config=config,
            manufacturer=manufacturer,
            device=device,
            mode_status=mode_status,
            clock=clock,
            clock_received=clock_received,
            registers=registers,
            uoms=uoms,
            sources=sources if sources is not None and sources.actual is not None else None,
            selection=selection,
            current=current,
            lp_actual=lp_actual,
            lp_selection=lp_selection,
            lp_status=lp_status,
            lp_blocks=lp_blocks,
            log_actual=log_actual,
            history_log=logs.get(ST74_HISTORY_LOG),
            event_log=logs.get(ST76_EVENT_LOG),
            season_snapshot=season,
            demand_reset_snapshot=demand_reset,
            self_reads=self_reads,
            tables=self._tables,
        )


def _reset_list_request(which: int) -> Callable[[int], ProcedureRequest]:
    def build(seq: int) -> ProcedureRequest:
        return ProcedureRequest(SP_RESET_LIST_POINTERS, seq, reset_list(which))

    return build


class C1221Client(C1218Client):
    """One C12.21 session (a meter on a telephone line): identify, timing setup (when
    ``settings.timing`` is given; a meter that does not support it keeps C12.21's
    defaults), negotiate (no baud: the modems set the line speed), logon, authenticate
    with the DES key when the meter's identify answer asks for it (else security with the
    password), then the same reads, logoff and terminate as C12.18."""

    def __init__(self, settings: ClientSettings, *, now: Callable[[], datetime] = utcnow) -> None:
        super().__init__(settings, now=now)
        self.timing: Timing = DEFAULT_TIMING
        self.identification: IdentifyResponse | None = None

    def _open(self) -> Generator[_Step, bytes, tuple[IdentifyResponse, NegotiateResponse]]:
        s = self.settings
        meter = s.meter
        identification = IdentifyResponse.decode((yield Identify()), meter=meter)
        self.identification = identification
        if identification.standard != Standard.C12_21:
            self._skipped.append(
                ("identify", f"the meter names reference standard {identification.standard}")
            )
        if s.timing is not None:
            try:
                answer = TimingSetupResponse.decode((yield TimingSetup(s.timing)), meter=meter)
            except ServiceNotSupported as e:
                self._skipped.append(("timing setup", e.message))
            else:
                self.timing = answer.timing
                self.link.retries = answer.timing.retries
                yield _TimingChange(answer.timing)
        negotiated = yield from self._negotiate()
        decode_ok((yield Logon(s.user_id, s.user[:10])), "logon", meter=meter)
        service = auth_service(identification)
        if s.auth_key is not None and service is not None and service.can_authenticate:
            request = authenticate_request(service, s.auth_key, s.auth_key_id, meter=meter)
            answer_ = AuthenticateResponse.decode((yield request), meter=meter)
            check_authentication(request, answer_, s.auth_key, meter=meter)
        else:
            if s.auth_key is not None:
                self._skipped.append(("authenticate", "the meter does not ask for it"))
            if s.password is not None:
                decode_ok((yield Security(s.password, s.password_pad)), "security", meter=meter)
        return identification, negotiated
