"""A simulated ANSI C12.18 or C12.21 meter for tests and demos: a sans-IO meter model
(PSEM services, session states, a password; as a C12.21 meter also timing setup and DES
key authentication; C12.19 tables ST0/1/3/5, ST11-16 with a transformer multiplier,
ST21-23 whose registers grow with wall time, ST24 the registers at the last season change,
ST25 the last demand reset's snapshot, ST26 self-reads, ST51/ST53 (zone offset 0), ST52,
the load profile ST61-64, the logs ST71/74/76 and a manufacturer table MT0; procedures
through ST7/ST8: SP 4 reset list pointers, SP 9 remote reset (demand reset counter +1,
maximum demand zeroed, a snapshot in ST25; a self-read in ST26; a season change), SP 10
set date/time and MP2 (manufacturer procedure 2, a supply relay: parameter 0 open, 1
close, 2 report; response data the state, 0 open or 1 closed) and a Twisted server over
TCP or a serial device/pty, with knobs for line faults (damaged packets both ways,
silence) and procedure refusals.

Procedures need the password (``password``); a session secured with ``read_password``
may read but every procedure is answered ``no authorization`` (5). A second demand reset
within the demand reset exclusion (ST13 RESET_EXCLUSION, 5 minutes) is answered ``timing
constraint`` (4); bad parameters ``invalid parameter`` (2); a procedure ST0 does not list
``unrecognized procedure`` (6); ``refusals`` (procedure number, 2048 + N for MPN -> result
code) makes the meter answer a procedure with that code.

``python -m fep.sim.ansi_c12 --tcp 1153 --password secret``
``python -m fep.sim.ansi_c12 --pty /dev/pts/5``
``python -m fep.sim.ansi_c12 --tcp 1153 --c1221 --auth-key 0123456789ABCDEF``
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from fep.errors import FrameError, ProtocolError
from fep.interfaces import ISerialLine
from fep.protocols.ansi_c12 import c1221
from fep.protocols.ansi_c12.c1218 import (
    BAUD_CODES,
    EXTERNAL_BAUD,
    HEADER_LEN,
    STP,
    IdentifyResponse,
    Link,
    Logoff,
    Logon,
    Negotiate,
    NegotiateResponse,
    Read,
    Received,
    ResponseCode,
    Retransmit,
    Security,
    Sent,
    Standard,
    Terminate,
    Wait,
    Write,
    encode_error,
    encode_ok,
    encode_read_response,
)
from fep.protocols.ansi_c12.c1219 import (
    LP_COMMON_POWER_FAIL,
    ST74_HISTORY_LOG,
    ST76_EVENT_LOG,
    ActualLoadProfile,
    ActualLog,
    ActualRegisters,
    ActualSources,
    ActualTimeTou,
    Clock,
    CurrentRegisters,
    DataBlock,
    DataSelection,
    DemandControl,
    DemandInterval,
    DemandRecord,
    DeviceId,
    EdMode,
    ElectricConstants,
    GeneralConfig,
    ListStatus,
    LogData,
    LogEntry,
    LpBlock,
    LpChannel,
    LpChannelStatus,
    LpInterval,
    LpSelection,
    LpSetDims,
    ManufacturerId,
    ModeStatus,
    NiFormat,
    SetConstants,
    SourceLink,
    StdStatus,
    TimeBase,
    TimeFormat,
    TimeOffset,
    UomEntry,
    encode_constants,
    encode_current_registers,
    encode_data_control,
    encode_log,
    encode_lp_data,
    encode_lp_selection,
    encode_source_links,
    encode_uom_entries,
)
from fep.protocols.ansi_c12.c1221 import (
    DEFAULT_TIMING,
    Authenticate,
    Timing,
    TimingSetup,
    TimingSetupResponse,
    answer_authenticate,
    ticket_feature,
)
from fep.protocols.ansi_c12.procedures import (
    LIST_EVENT_LOG,
    LIST_HISTORY_LOG,
    LIST_SELF_READS,
    SP_REMOTE_RESET,
    SP_RESET_LIST_POINTERS,
    SP_SET_DATE_TIME,
    ST7_PROC_INITIATE,
    ST8_PROC_RESPONSE,
    ProcedureRequest,
    ProcedureResponse,
    RelayAction,
    RemoteReset,
    ResultCode,
    SetDateTime,
)
from fep.protocols.ansi_c12.snapshots import (
    ST24_PREV_SEASON,
    ST25_PREV_DEMAND_RESET,
    ST26_SELF_READ,
    Snapshot,
    empty_snapshot,
    encode_self_reads,
    encode_snapshot,
)
from fep.reactors import IConnectingReactor
from fep.sim import serve

log = Logger(namespace="fep.sim.ansi_c12")

# Before a negotiate, C12.18 links run with 64-byte packets, one packet per message.
DEFAULT_PACKET_SIZE = 64
_FOUR_PLACES = Decimal("0.0001")
_INT32_1_MAX = Decimal("214748.3647")  # the largest INT32 with four implied decimals


class MeterState(enum.Enum):
    """C12.18 service sequence states (what the meter accepts next)."""

    BASE = "base"  # identify only
    ID = "identified"  # negotiate, logon, wait, terminate
    SESSION = "session"  # security, read, write, logoff, wait, terminate


@attrs.frozen
class SimRegister:
    """One summation source of the simulated meter: ``start`` plus ``per_hour`` an hour,
    in the unit its ST12 entry gives (kWh for the defaults)."""

    uom: UomEntry
    start: Decimal
    per_hour: Decimal


# ST12 of the simulator: +A, -A, +R energy (kWh, kvarh), +A demand (kW), phase A volts.
_KILO = 2  # MULTIPLIER code for 10^3
DEFAULT_UOMS: tuple[UomEntry, ...] = (
    UomEntry(0, TimeBase.BULK, _KILO, q1=True, q4=True),
    UomEntry(0, TimeBase.BULK, _KILO, q2=True, q3=True),
    UomEntry(1, TimeBase.BULK, _KILO, q1=True, q2=True),
    UomEntry(0, TimeBase.BLOCK_DEMAND, _KILO, q1=True, q4=True),
    UomEntry(8, TimeBase.INSTANTANEOUS, 0, segmentation=5),
)
# ST14 identifiers of those five sources (DATA_CTRL_LENGTH 4, manufacturer-defined).
DATA_CONTROL_IDS: tuple[bytes, ...] = (b"+A  ", b"-A  ", b"+R  ", b"+P  ", b"U1  ")
DEMAND_MINUTES = 15
_STD_TABLES = frozenset(
    {0, 1, 3, 5, 7, 8, 11, 12, 13, 14, 15, 16, 21, 22, 23, 24, 25, 26, 51, 52, 53, 61, 62, 63,
     64, 71, 74, 76}
)
# Procedures: SP 4 reset list pointers, SP 9 remote reset, SP 10 set date/time; MP2 the
# supply relay.
STD_PROCEDURES = frozenset({SP_RESET_LIST_POINTERS, SP_REMOTE_RESET, SP_SET_DATE_TIME})
RELAY_PROCEDURE = 2
MFG_PROCEDURES = frozenset({RELAY_PROCEDURE})
# ST51: the meter keeps a time zone offset in ST53 (0: its clock runs in UTC).
TIME_TOU = ActualTimeTou(time_zone_offset=True)
# Self-reads kept in ST26 (a circular list), and the demand reset exclusion (minutes).
SELF_READS = 4
RESET_EXCLUSION_MINUTES = 5
# Load profile: 15-minute intervals, 24 to a block, 4 blocks kept (a day), two channels
# (+A and +R energy per interval, UINT16 in watt-hours: scalar 1, divisor 1000 of kWh).
LP_MINUTES = 15
LP_BLOCK_INTERVALS = 24
LP_BLOCKS = 4
LP_SOURCES = (0, 2)
# Manufacturer table 0 (table id 0x0800): bytes only its maker can read.
MT0 = 2048
MT0_DATA = b"FEPSIM\x01\x02\x03\x04"
# The most a C12.21 timing setup gets from the simulated meter.
SIM_TIMING_LIMITS = Timing(traffic=60, inter_character=5, response=10, retries=5)
# Log entries the meter keeps (history log ST74 and event log ST76 each).
LOG_ENTRIES = 8


def _default_registers() -> list[SimRegister]:
    return [
        SimRegister(DEFAULT_UOMS[0], Decimal("1234.5"), Decimal("0.9")),
        SimRegister(DEFAULT_UOMS[1], Decimal("56.125"), Decimal("0.1")),
        SimRegister(DEFAULT_UOMS[2], Decimal("310.25"), Decimal("0.3")),
    ]


@attrs.define
class SimulatedC12Meter:
    """The meter side of C12.18 with no I/O: ``answer(message) -> message``.

    Tables 0 and 1 can be read once logged on; the others need the password (security
    service) when ``password`` is set. ``clock`` gives wall time in seconds (tests pass a
    fake one); ``clock_offset`` puts the meter's own clock that many seconds ahead.
    ``max_packet_size``/``max_packets`` cap what a negotiate may agree to.
    """

    serial: str = "SIM0000001"
    identification: str = "FEP C12 SIMULATOR"
    password: bytes | None = attrs.field(default=b"secret", repr=False)
    # A second password that opens the tables for reading only: procedures are refused.
    read_password: bytes | None = attrs.field(default=None, repr=False)
    clock: Callable[[], float] = time.time
    clock_offset: float = 0.0
    started: float | None = None
    registers: list[SimRegister] = attrs.Factory(_default_registers)
    demand_kw: Decimal = Decimal("4.2")
    volts: Decimal = Decimal("230.1")
    tiers: int = 2
    status: int = 0  # ED_STD_STATUS1 flags (StdStatus)
    max_packet_size: int = 1024
    max_packets: int = 8
    bauds: frozenset[int] = frozenset(BAUD_CODES)
    # The instrument-transformer multiplier (ST15) the reader applies to energy and
    # demand (ST16 CONSTANT_TO_BE_APPLIED): the registers count secondary values.
    multiplier: Decimal = Decimal(1)
    state: MeterState = MeterState.BASE
    secured: bool = False
    user: bytes = b""
    packet_size: int = DEFAULT_PACKET_SIZE
    packets: int = 1
    # C12.21 (``standard`` 2): a DES key makes the identify answer carry a ticket and the
    # authenticate service open the tables (as the password does); a timing setup is
    # granted within ``timing_limits``.
    standard: int = Standard.C12_18
    auth_key: bytes | None = attrs.field(default=None, repr=False)
    auth_key_id: int = 0
    ticket_source: Callable[[], bytes] = attrs.field(default=lambda: os.urandom(8), repr=False)
    timing_limits: Timing = SIM_TIMING_LIMITS
    timing: Timing = DEFAULT_TIMING
    ticket: bytes | None = None
    # Services answered, in order (e.g. "identify", "read 0"), and the last negotiate
    # agreed to, for tests.
    log: list[str] = attrs.Factory(list)
    negotiated: NegotiateResponse | None = None
    # What the procedures act on: the demand reset counter (ST23), the snapshot of the
    # last demand reset (ST25) and when it was, the self-reads (ST26, newest last, with
    # the last one's sequence number), the season, the supply relay, the logs cleared.
    demand_resets: int = 3
    last_reset: Snapshot | None = None
    last_reset_at: float | None = None
    self_reads: list[Snapshot] = attrs.Factory(list)
    self_read_seq: int = 0
    season: int = 0
    relay_closed: bool = True
    cleared_logs: set[int] = attrs.Factory(set)
    refusals: dict[int, int] = attrs.Factory(dict)
    # The last procedure's response (ST8), and each procedure run (number, result).
    response: ProcedureResponse | None = None
    procedures: list[tuple[int, int]] = attrs.Factory(list)
    read_only: bool = False
    # The last ST7 written (read back as written).
    initiated: bytes = b"\0\0\0"
    # The registers at the last season change (ST24), None before any.
    season_snapshot: Snapshot | None = None

    def __attrs_post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock()

    # -- tables -----------------------------------------------------------------------------

    @property
    def config(self) -> GeneralConfig:
        return GeneralConfig(
            big_endian=False,
            char_format=1,
            time_format=TimeFormat.UINT8,
            id_form_bcd=False,
            ni_format1=NiFormat.INT32_1,
            ni_format2=NiFormat.INT32_1,
            device_class=b"FEP\x01",
            nameplate_type=2,  # electric
            std_version=1,
            dim_std_tables=10,
            dim_mfg_tables=1,
            dim_std_procs=2,
            dim_mfg_procs=1,
            dim_mfg_status=1,  # termineter wants ST3 of at least 5 bytes
            std_tables_used=_STD_TABLES,
            mfg_tables_used=frozenset({0}),
            std_procs_used=STD_PROCEDURES,
            mfg_procs_used=MFG_PROCEDURES,
            std_tables_write=frozenset({ST7_PROC_INITIATE}),
            max_proc_parm_length=8,
            max_resp_data_len=1,
        )

    @property
    def actual_registers(self) -> ActualRegisters:
        return ActualRegisters(
            date_time_field=True,
            demand_reset_counter=True,
            nbr_self_reads=SELF_READS,
            nbr_summations=len(self.registers),
            nbr_demands=1,
            nbr_coin_values=1,
            nbr_occur=1,
            nbr_tiers=self.tiers,
        )

    @property
    def uoms(self) -> tuple[UomEntry, ...]:
        return tuple(r.uom for r in self.registers) + DEFAULT_UOMS[3:]

    @property
    def actual_sources(self) -> ActualSources:
        n = len(self.uoms)
        return ActualSources(
            reset_exclude=True,
            block_demand=True,
            set1_present=True,
            nbr_uom_entries=n,
            nbr_demand_ctrl_entries=n,
            data_ctrl_length=4,
            nbr_data_ctrl_entries=n,
            nbr_constants_entries=n,
            nbr_sources=n,
        )

    @property
    def demand_control(self) -> DemandControl:
        interval = DemandInterval(length=DEMAND_MINUTES)
        return DemandControl(reset_exclusion=RESET_EXCLUSION_MINUTES,
                             intervals=(interval,) * len(self.uoms))

    @property
    def constants(self) -> tuple[ElectricConstants, ...]:
        """Energy and demand sources carry the transformer multiplier (set 1 not applied
        by the meter); the voltage source 1."""
        n = len(self.uoms)
        ratio = SetConstants(False, self.multiplier, Decimal(1))
        scaled = ElectricConstants(self.multiplier, Decimal(0), ratio)
        plain = ElectricConstants(Decimal(1), Decimal(0), SetConstants(True, Decimal(1),
                                                                       Decimal(1)))  # fmt: skip
        return tuple(scaled if i < n - 1 else plain for i in range(n))

    @property
    def source_links(self) -> tuple[SourceLink, ...]:
        n = len(self.uoms)
        energy = SourceLink(uom_entry=True, data_ctrl=True, constants=True,
                            constant_to_be_applied=True)  # fmt: skip
        demand = attrs.evolve(energy, demand_ctrl=True)
        volts = SourceLink(uom_entry=True, data_ctrl=True)
        return tuple(volts if i == n - 1 else demand if i == n - 2 else energy for i in range(n))

    @property
    def data_control_ids(self) -> tuple[bytes, ...]:
        ids = DATA_CONTROL_IDS
        n = len(self.uoms)
        return tuple(ids[i] if i < len(ids) else f"S{i:<3d}".encode() for i in range(n))

    @property
    def selection(self) -> DataSelection:
        n = len(self.registers)
        return DataSelection(
            summations=tuple(range(n)),
            demands=(n,),
            demand_is_max=(True,),
            coincidents=(n + 1,),
            coincident_demand=(0,),
        )

    def now(self) -> datetime:
        """The meter's own clock (UTC), offset included."""
        return datetime.fromtimestamp(self.clock() + self.clock_offset, UTC)

    def register_values(self) -> list[Decimal]:
        """Summations as of now (four decimals, as INT32_1 carries them)."""
        elapsed = Decimal(str(self.clock() - (self.started or 0.0)))
        return [
            (r.start + r.per_hour * elapsed / 3600).quantize(_FOUR_PLACES) for r in self.registers
        ]

    def current_registers(self) -> CurrentRegisters:
        sums = self.register_values()
        peak_time = self.now().replace(minute=0, second=0, microsecond=0)

        def block(share: Decimal) -> DataBlock:
            return DataBlock(
                tuple((v * share).quantize(_FOUR_PLACES) for v in sums),
                (DemandRecord((self.demand_kw * share,), (peak_time,)),),
                ((self.volts,),),
            )

        # TOU tiers: the first takes 60 % of everything, the rest share the other 40 %.
        shares = [Decimal("0.6")] + [Decimal("0.4") / (self.tiers - 1)] * (self.tiers - 1)
        tiers = tuple(block(share) for share in shares[: self.tiers]) if self.tiers else ()
        return CurrentRegisters(block(Decimal(1)), tiers, demand_resets=self.demand_resets)

    def table(self, number: int) -> bytes | None:
        config = self.config
        if number == 0:
            return config.encode()
        if number == 1:
            return ManufacturerId("FEP", "C12SIM", 1, 0, 2, 3, self.serial).encode(config)
        if number == 3:
            return ModeStatus(EdMode.METERING, StdStatus(self.status), 0, b"\0").encode(config)
        if number == 5:
            return DeviceId(self.identification).encode(config)
        if number == 11:
            return self.actual_sources.encode()
        if number == 12:
            return encode_uom_entries(self.uoms, config)
        if number == 13:
            return self.demand_control.encode(config, self.actual_sources)
        if number == 14:
            return encode_data_control(self.data_control_ids, self.actual_sources)
        if number == 15:
            return encode_constants(self.constants, config, self.actual_sources)
        if number == 16:
            return encode_source_links(self.source_links)
        if number == 21:
            return self.actual_registers.encode()
        if number == 22:
            return self.selection.encode(self.actual_registers)
        if number == 23:
            return encode_current_registers(self.current_registers(), config, self.actual_registers)
        if number == ST7_PROC_INITIATE:
            return self.initiated
        if number == ST8_PROC_RESPONSE:
            response = self.response or ProcedureResponse(0, 0, 0)
            return response.encode(config)
        if number == ST24_PREV_SEASON:
            registers = self.actual_registers
            return encode_snapshot(self.season_snapshot or empty_snapshot(registers), config,
                                   registers)
        if number == 51:
            return TIME_TOU.encode(config)
        if number == 53:
            return TimeOffset(zone_minutes=0).encode(config, TIME_TOU)
        if number == ST25_PREV_DEMAND_RESET:
            registers = self.actual_registers
            snap = self.last_reset or empty_snapshot(registers)
            return encode_snapshot(snap, config, registers)
        if number == ST26_SELF_READ:
            registers = self.actual_registers
            reads = self.self_reads[-SELF_READS:]
            slots: list[Snapshot | None] = [None] * SELF_READS
            first = self.self_read_seq - len(reads) + 1
            for k, snap in enumerate(reads):
                slots[(first + k) % SELF_READS] = snap
            last = self.self_read_seq % SELF_READS
            return encode_self_reads(tuple(slots), len(reads), last, self.self_read_seq,
                                     config, registers)
        if number == 52:
            return Clock(self.now(), day_of_week=(self.now().isoweekday() % 7), gmt=True).encode(
                config
            )
        if number == 61:
            return self.lp_actual.encode(config)
        if number == 62:
            return encode_lp_selection((self.lp_selection,), config)
        if number == 63:
            return self.lp_state()[0].encode(config.byte_order, lp=True)
        if number == 64:
            _, blocks = self.lp_state()
            return encode_lp_data(blocks, config, self.lp_actual, self.lp_selection)
        if number == 71:
            return self.log_actual.encode(config)
        if number in (ST74_HISTORY_LOG, ST76_EVENT_LOG):
            return encode_log(self.log_data(number), config, self.log_actual, number)
        if number == MT0:
            return MT0_DATA
        return None

    # -- load profile and logs ------------------------------------------------------------------

    @property
    def lp_actual(self) -> ActualLoadProfile:
        # BLK_END_READ, SCALAR_DIVISOR set 1, EXTENDED and SIMPLE interval status.
        flags = 0x10 | 0x40 | 0x400 | 0x800
        dims = LpSetDims(LP_BLOCKS, LP_BLOCK_INTERVALS, len(LP_SOURCES), LP_MINUTES)
        return ActualLoadProfile(4096, flags, 0, (dims, None, None, None))

    @property
    def lp_selection(self) -> LpSelection:
        n = len(LP_SOURCES)
        channels = tuple(LpChannel(src, src) for src in LP_SOURCES)
        return LpSelection(channels, 2, (1,) * n, (1000,) * n)

    def lp_origin(self) -> float:
        """Meter time of the first interval: two blocks before the meter was started,
        on a block boundary, so a fresh meter already has history."""
        block = LP_MINUTES * 60 * LP_BLOCK_INTERVALS
        started = (self.started or 0.0) + self.clock_offset
        return (started // block - 2) * block

    def lp_interval_wh(self, channel: int, index: int) -> int:
        """Watt-hours of interval ``index`` (from the origin) on ``channel``: the register's
        hourly rate over 15 minutes, varying over the hour."""
        source = LP_SOURCES[channel]
        register = self.registers[source if source < len(self.registers) else 0]
        base = register.per_hour * 1000 * LP_MINUTES / 60
        return int(base * (1 + Decimal(index % 4) / 10))

    def lp_state(self) -> tuple[ListStatus, tuple[LpBlock, ...]]:
        """ST63's status and ST64's blocks as of the meter's clock now."""
        period = LP_MINUTES * 60
        origin = self.lp_origin()
        done = max(int((self.clock() + self.clock_offset - origin) // period), 0)
        used = -(-done // LP_BLOCK_INTERVALS)  # blocks begun
        n_ch = len(LP_SOURCES)
        blank = LpInterval((Decimal(0),) * n_ch, 0, (0,) * n_ch)
        empty = LpBlock(
            None, (blank,) * LP_BLOCK_INTERVALS, (Decimal(0),) * n_ch, valid=frozenset()
        )
        slots = [empty] * LP_BLOCKS
        for seq in range(max(used - LP_BLOCKS, 0), used):
            count = min(done - seq * LP_BLOCK_INTERVALS, LP_BLOCK_INTERVALS)
            intervals = []
            for i in range(LP_BLOCK_INTERVALS):
                index = seq * LP_BLOCK_INTERVALS + i
                wh = [self.lp_interval_wh(ch, index) if i < count else 0 for ch in range(n_ch)]
                # A UINT16 interval that cannot hold the energy is capped and flagged.
                values = tuple(Decimal(min(v, 0xFFFF)) for v in wh)
                statuses = tuple(int(LpChannelStatus.OVERFLOW) if v > 0xFFFF else 0 for v in wh)
                # One power failure a day, to show interval status.
                common = LP_COMMON_POWER_FAIL if index % 96 == 10 and i < count else 0
                intervals.append(LpInterval(values, common, statuses))
            end = datetime.fromtimestamp(origin + (seq * LP_BLOCK_INTERVALS + count) * period, UTC)
            slots[seq % LP_BLOCKS] = LpBlock(
                end,
                tuple(intervals),
                # Dial readings at the block's end (before the meter started: its start value).
                tuple(
                    min(max(v, Decimal(0)), _INT32_1_MAX).quantize(_FOUR_PLACES)
                    for v in self._registers_at(end)
                ),
                (),
                (),
                frozenset(range(count)),
            )
        valid = min(used, LP_BLOCKS)
        newest = done - (used - 1) * LP_BLOCK_INTERVALS if used else 0
        status = ListStatus(
            circular=True,
            nbr_valid=valid,
            last_element=(used - 1) % LP_BLOCKS if used else 0,
            last_seq=max(used - 1, 0),
            nbr_unread=valid,
            valid_in_newest=newest,
            flags_rest=0x20,  # ACTIVE_MODE
        )
        return status, tuple(slots)

    def _registers_at(self, when: datetime) -> list[Decimal]:
        elapsed = Decimal(str(when.timestamp() - self.clock_offset - (self.started or 0.0)))
        return [
            self.registers[src].start + self.registers[src].per_hour * elapsed / 3600
            for src in LP_SOURCES
            if src < len(self.registers)
        ]

    @property
    def log_actual(self) -> ActualLog:
        return ActualLog(
            event_number=False,
            history_date_time=True,
            history_seq_nbr=True,
            nbr_std_events=6,
            history_data_length=2,
            event_data_length=2,
            nbr_history_entries=LOG_ENTRIES,
            nbr_event_entries=LOG_ENTRIES,
        )

    def log_data(self, table: int) -> LogData:
        """The history log (power down/up, time set, demand reset) or the event log (low
        battery, tamper, reverse rotation) as of the meter's start, in a circular list."""
        start = datetime.fromtimestamp((self.started or 0.0) + self.clock_offset, UTC)
        start = start.replace(microsecond=0)
        if table in self.cleared_logs:
            empty = ListStatus(circular=True)
            return LogData(empty, (LogEntry(None, 0),) * LOG_ENTRIES)
        if table == ST74_HISTORY_LOG:
            happened = [(-180, 1), (-175, 2), (-120, 4), (-60, 20), (-30, 7)]
        else:
            happened = [(-200, 44), (-90, 47), (-45, 48)]
        entries = [
            LogEntry(
                start + timedelta(minutes=minutes),
                code,
                user_id=2 if code == 7 else 0,
                seq=n + 1,
                argument=bytes([n, 0]),
            )
            for n, (minutes, code) in enumerate(happened)
        ]
        padding = [LogEntry(None, 0)] * (LOG_ENTRIES - len(entries))
        status = ListStatus(
            circular=True,
            nbr_valid=len(entries),
            last_element=len(entries) - 1,
            last_seq=len(entries),
            nbr_unread=len(entries),
        )
        return LogData(status, tuple(entries + padding))

    # -- services ---------------------------------------------------------------------------

    def answer(self, message: bytes) -> bytes:
        """The answer to one request message (bad requests get ``err``)."""
        try:
            request = c1221.decode_request(message)
        except FrameError as e:
            self.log.append(f"bad request: {e.message}")
            return encode_error(ResponseCode.ERR)
        self.log.append(_describe(request))
        return self._serve(request)

    @property
    def is_c1221(self) -> bool:
        return self.standard == Standard.C12_21

    def _identify(self) -> bytes:
        if not self.is_c1221:
            return IdentifyResponse(features=((0x07, b"\x01"),)).encode()
        features: tuple[tuple[int, bytes], ...] = ()
        if self.auth_key is not None:
            # A fresh challenge for every session.
            self.ticket = self.ticket_source()
            features = (ticket_feature(self.ticket),)
        return IdentifyResponse(Standard.C12_21, 1, 0, features).encode()

    def _timing_setup(self, request: TimingSetup) -> bytes:
        """Take what the client asks for, within the meter's own limits."""
        asked, most = request.timing, self.timing_limits
        self.timing = Timing(
            min(asked.traffic, most.traffic),
            min(asked.inter_character, most.inter_character),
            min(asked.response, most.response),
            min(asked.retries, most.retries),
        )
        return TimingSetupResponse(self.timing).encode()

    def _authenticate(self, request: Authenticate) -> bytes:
        if self.auth_key is None or self.ticket is None:
            return encode_error(ResponseCode.SNS)
        answer = answer_authenticate(request, self.auth_key, self.auth_key_id, self.ticket)
        self.secured = answer is not None
        return answer.encode() if answer is not None else encode_error(ResponseCode.ISC)

    def _serve(self, request: c1221.Request) -> bytes:
        if isinstance(request, Terminate):
            self._reset()
            return encode_ok()
        if isinstance(request, TimingSetup | Authenticate) and not self.is_c1221:
            return encode_error(ResponseCode.SNS)  # a C12.18 meter
        if self.state is MeterState.BASE:
            if request.name != "identify":
                return encode_error(ResponseCode.ISSS)
            self.state = MeterState.ID
            return self._identify()
        if isinstance(request, Wait):
            return encode_ok()
        if self.state is MeterState.ID:
            if isinstance(request, TimingSetup):
                return self._timing_setup(request)
            if isinstance(request, Negotiate):
                return self._negotiate(request)
            if isinstance(request, Logon):
                self.state = MeterState.SESSION
                self.user = request.user
                return encode_ok()
            return encode_error(ResponseCode.ISSS)
        if isinstance(request, Authenticate):
            return self._authenticate(request)
        if isinstance(request, Security):
            if (self.password is None and self.auth_key is None) or (
                self.password is not None and request.matches(self.password)
            ):
                self.secured, self.read_only = True, False
                return encode_ok()
            if self.read_password is not None and request.matches(self.read_password):
                self.secured, self.read_only = True, True
                return encode_ok()
            self.secured = False
            return encode_error(ResponseCode.ISC)
        if isinstance(request, Logoff):
            self.state = MeterState.ID
            self.secured = False
            return encode_ok()
        if isinstance(request, Read):
            return self._read(request)
        if isinstance(request, Write):
            return self._write(request)
        return encode_error(ResponseCode.SNS)  # identify/negotiate in session

    # -- procedures (ST7 written, ST8 read back) ------------------------------------------

    def _write(self, request: Write) -> bytes:
        guarded = self.password is not None or self.auth_key is not None
        if guarded and not self.secured:
            return encode_error(ResponseCode.ISC)
        if request.table != ST7_PROC_INITIATE or request.offset not in (None, 0):
            return encode_error(ResponseCode.IAR)  # no other table is writable
        self.initiated = request.data
        config = self.config
        try:
            proc = ProcedureRequest.decode(request.data, config)
        except FrameError:
            return encode_error(ResponseCode.IAR)
        result, data = self._procedure(proc)
        self.procedures.append((proc.number + (2048 if proc.mfg else 0), result))
        self.log.append(f"procedure {proc.label}: result {result}")
        self.response = ProcedureResponse(proc.number, proc.seq, result, data, proc.mfg,
                                          proc.selector)
        return encode_ok()

    def _procedure(self, proc: ProcedureRequest) -> tuple[int, bytes]:
        """Run one procedure: (RESULT_CODE, RESP_DATA)."""
        declared = MFG_PROCEDURES if proc.mfg else STD_PROCEDURES
        if proc.number not in declared:
            return ResultCode.UNRECOGNIZED, b""
        refused = self.refusals.get(proc.number + (2048 if proc.mfg else 0))
        if refused is not None:
            return refused, b""
        if self.read_only:
            return ResultCode.NO_AUTHORIZATION, b""
        if proc.mfg:
            return self._relay(proc.params)
        if proc.number == SP_REMOTE_RESET:
            return self._remote_reset(proc.params), b""
        if proc.number == SP_SET_DATE_TIME:
            return self._set_date_time(proc.params), b""
        return self._reset_list(proc.params), b""

    def _remote_reset(self, params: bytes) -> int:
        try:
            action = RemoteReset.decode(params)
        except ValueError:
            return ResultCode.INVALID_PARAMETER
        if not (action.demand_reset or action.self_read or action.new_season is not None):
            return ResultCode.INVALID_PARAMETER
        wall = self.clock()
        if (action.demand_reset and self.last_reset_at is not None
                and wall - self.last_reset_at < RESET_EXCLUSION_MINUTES * 60):
            return ResultCode.TIMING_CONSTRAINT
        now = self.now().replace(second=0, microsecond=0)
        before = self.current_registers()
        if action.self_read:
            self.self_read_seq = (self.self_read_seq + 1) % 0x10000
            self.self_reads = [*self.self_reads[-(SELF_READS - 1):], Snapshot(now, before)]
        if action.demand_reset:
            self.last_reset = Snapshot(now, before)
            self.last_reset_at = wall
            self.demand_resets = (self.demand_resets + 1) % 256
            self.demand_kw = Decimal(0)
        if action.new_season is not None:
            self.season_snapshot = Snapshot(now, before)
            self.season = action.new_season
        return ResultCode.COMPLETED

    def _set_date_time(self, params: bytes) -> int:
        try:
            asked = SetDateTime.decode(params, self.config)
        except ValueError:
            return ResultCode.INVALID_PARAMETER
        # The simulated meter keeps UTC (its ST52 says GMT): a local time is taken as UTC.
        current = self.now()
        when = asked.when
        if not asked.mask & 0x02:  # time only: keep the date
            when = when.replace(year=current.year, month=current.month, day=current.day)
        if not asked.mask & 0x01:  # date only: keep the time of day
            when = when.replace(hour=current.hour, minute=current.minute,
                                second=current.second)
        self.clock_offset = when.timestamp() - self.clock()
        return ResultCode.COMPLETED

    def _reset_list(self, params: bytes) -> int:
        if len(params) != 1 or params[0] not in (LIST_EVENT_LOG, LIST_SELF_READS,
                                                 LIST_HISTORY_LOG):
            return ResultCode.INVALID_PARAMETER
        if params[0] == LIST_SELF_READS:
            self.self_reads = []
        else:
            self.cleared_logs.add(ST76_EVENT_LOG if params[0] == LIST_EVENT_LOG
                                  else ST74_HISTORY_LOG)
        return ResultCode.COMPLETED

    def _relay(self, params: bytes) -> tuple[int, bytes]:
        if len(params) != 1 or params[0] not in tuple(RelayAction):
            return ResultCode.INVALID_PARAMETER, b""
        if params[0] == RelayAction.OPEN:
            self.relay_closed = False
        elif params[0] == RelayAction.CLOSE:
            self.relay_closed = True
        return ResultCode.COMPLETED, bytes([int(self.relay_closed)])

    def _negotiate(self, request: Negotiate) -> bytes:
        size = min(request.packet_size, self.max_packet_size)
        count = min(request.max_packets, self.max_packets)
        if size < HEADER_LEN + 3 or count < 1:
            return encode_error(ResponseCode.ONP)
        baud = request.baud if request.baud in self.bauds else None
        if baud is None and self.is_c1221:
            baud = EXTERNAL_BAUD  # the modems set the line speed
        self.packet_size, self.packets = size, count
        self.negotiated = NegotiateResponse(size, count, baud)
        return self.negotiated.encode()

    def _read(self, request: Read) -> bytes:
        guarded = self.password is not None or self.auth_key is not None
        if request.table not in (0, 1) and guarded and not self.secured:
            return encode_error(ResponseCode.ISC)
        data = self.table(request.table)
        if data is None:
            return encode_error(ResponseCode.IAR)
        if request.offset is not None and request.count is not None:
            if request.offset + request.count > len(data):
                return encode_error(ResponseCode.IAR)
            data = data[request.offset : request.offset + request.count]
        answer = encode_read_response(data)
        # The answer must fit the negotiated packets (8 bytes of each are header and CRC).
        if len(answer) > self.packets * (self.packet_size - HEADER_LEN - 2):
            return encode_error(ResponseCode.ONP)
        return answer

    def _reset(self) -> None:
        self.state = MeterState.BASE
        self.secured = False
        self.read_only = False
        self.packet_size, self.packets = DEFAULT_PACKET_SIZE, 1
        self.timing = DEFAULT_TIMING
        self.ticket = None


def _describe(request: c1221.Request) -> str:
    if isinstance(request, Write):
        return f"write {request.table}"
    if isinstance(request, Read):
        if request.offset is None:
            return f"read {request.table}"
        return f"read {request.table} at {request.offset}+{request.count}"
    return request.name


# ---------------------------------------------------------------------------
# Twisted: the meter on a TCP connection or a serial line
# ---------------------------------------------------------------------------


class C12MeterServerProtocol(Protocol):
    """The meter side of one line: packets in, ACKs and answers out, line faults on demand."""

    factory: C12MeterServerFactory

    def __init__(self) -> None:
        self.link = Link(packet_size=DEFAULT_PACKET_SIZE)
        self._pending: list[IDelayedCall] = []
        self._switch_to: int | None = None
        self._terminated = False

    @property
    def meter(self) -> SimulatedC12Meter:
        return self.factory.meter

    def _later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self._pending = [c for c in self._pending if c.active()]
        self._pending.append(self.factory.reactor.callLater(delay, fn, *args))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and data:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        f = self.factory
        f.bytes_received += len(data)
        if f.silent:
            return
        if f.damage_requests > 0 and STP in data:
            # Line noise on the request: its CRC no longer matches, the link NAKs it.
            f.damage_requests -= 1
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        before = self.link.naks_sent
        out, events = self.link.receive(data)
        f.naks_sent += self.link.naks_sent - before
        self._write(out)
        for event in events:
            if isinstance(event, Received):
                self._later(f.answer_delay, self._answer, event.data)
            elif isinstance(event, Sent):
                self._sent()
            elif isinstance(event, Retransmit):
                f.retransmissions += 1

    def _answer(self, message: bytes) -> None:
        meter = self.meter
        response = meter.answer(message)
        request_code = message[0] if message else 0
        if request_code == 0x21:
            self._terminated = True
        if 0x61 <= request_code <= 0x6B and len(response) == 5:
            # Baud 0 (externally defined) leaves the line as it is.
            self._switch_to = NegotiateResponse.decode(response).baud or None
        if request_code == TimingSetup.code and response[:1] == b"\x00":
            self.link.retries = meter.timing.retries
        try:
            packet = self.link.send(response)
        except (ProtocolError, ValueError) as e:  # a confused client: drop the answer
            log.info("simulator could not answer: {e}", e=e)
            return
        f = self.factory
        if f.damage_answers > 0:
            f.damage_answers -= 1
            packet = packet[:-1] + bytes([packet[-1] ^ 0xFF])
        self._write(packet)
        if request_code in range(0x60, 0x6C) and meter.packet_size:
            # Later answers use the negotiated packet size (this one went out at 64).
            self.link.packet_size = meter.packet_size

    def _sent(self) -> None:
        """Our answer was ACKed: switch baud after a negotiate, forget after terminate."""
        if self._switch_to is not None:
            baud, self._switch_to = self._switch_to, None
            serial = ISerialLine(self.transport, None)
            if serial is not None:
                serial.set_baudrate(baud)
        if self._terminated:
            self._terminated = False
            self.link.reset()
            self.link.packet_size = DEFAULT_PACKET_SIZE

    def connectionMade(self) -> None:
        self.factory.connections += 1
        self.meter._reset()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        for call in self._pending:
            if call.active():
                call.cancel()
        self._pending = []


class C12MeterServerFactory(ServerFactory[C12MeterServerProtocol]):
    """Serves one simulated meter. Line faults: ``damage_requests`` spoils the CRC of the
    next N requests (the meter NAKs, the client resends), ``damage_answers`` of the next N
    answers (the client NAKs, the meter resends), ``silent`` never answers at all."""

    protocol = C12MeterServerProtocol
    noisy = False

    def __init__(
        self,
        meter: SimulatedC12Meter | None = None,
        reactor: IReactorTime | None = None,
        answer_delay: float = 0.0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.meter = meter if meter is not None else SimulatedC12Meter()
        self.reactor = reactor
        self.answer_delay = answer_delay
        self.silent = False
        self.damage_requests = 0
        self.damage_answers = 0
        self.naks_sent = 0
        self.retransmissions = 0
        self.bytes_received = 0
        self.connections = 0


def serve_pty(
    reactor: IConnectingReactor, device: str, factory: C12MeterServerFactory, baud: int = 9600
) -> Any:
    """Serve the factory's meter on a serial device or pty (8N1, as C12.18 lines run)."""
    return serve.serve_pty(reactor, device, factory, baudrate=baud, frame="8N1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fep.sim.ansi_c12", description="A simulated ANSI C12.18/C12.21 meter"
    )
    parser.add_argument("--tcp", type=int, metavar="PORT", help="listen on this TCP port")
    parser.add_argument("--interface", default="127.0.0.1", help="TCP listen address")
    parser.add_argument("--pty", metavar="DEVICE", help="serve on this serial device or pty")
    parser.add_argument(
        "--password", default="secret", help="security password (text; empty for none)"
    )
    parser.add_argument(
        "--read-password", default="", help="a second password that may read, not run procedures"
    )
    parser.add_argument("--serial", default="SIM0000001", help="manufacturer serial (ST1)")
    parser.add_argument(
        "--clock-offset", type=float, default=0.0, help="seconds the meter's clock runs ahead"
    )
    parser.add_argument("--delay", type=float, default=0.0, help="answer delay in seconds")
    parser.add_argument(
        "--multiplier",
        type=Decimal,
        default=Decimal(1),
        help="instrument-transformer multiplier in ST15, applied by the reader (default 1)",
    )
    parser.add_argument(
        "--c1221", action="store_true", help="act as a C12.21 (telephone modem) meter"
    )
    parser.add_argument(
        "--auth-key", metavar="HEX", help="C12.21: DES key (8 bytes in hex) to authenticate"
    )
    parser.add_argument("--auth-key-id", type=int, default=0, help="C12.21: the key's id")
    args = parser.parse_args(argv)
    if args.tcp is None and not args.pty:
        parser.error("give --tcp or --pty")
    key = None
    if args.auth_key:
        try:
            key = bytes.fromhex(args.auth_key)
        except ValueError:
            key = b""
        if len(key) != 8 or not args.c1221:
            parser.error("--auth-key is 8 bytes in hex, with --c1221")

    reactor = serve.command_reactor()
    meter = SimulatedC12Meter(
        serial=args.serial,
        password=args.password.encode("latin-1") or None,
        read_password=args.read_password.encode("latin-1") or None,
        clock_offset=args.clock_offset,
        multiplier=args.multiplier,
        standard=Standard.C12_21 if args.c1221 else Standard.C12_18,
        auth_key=key,
        auth_key_id=args.auth_key_id,
    )
    factory = C12MeterServerFactory(meter, reactor, args.delay)
    kind = "C12.21" if args.c1221 else "C12.18"
    if args.tcp is not None:
        serve.serve_tcp(reactor, args.tcp, factory, args.interface, f"{kind} meter {meter.serial}")
    if args.pty:
        serve_pty(reactor, args.pty, factory)
        print(f"serving {kind} meter {meter.serial} on {args.pty}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
