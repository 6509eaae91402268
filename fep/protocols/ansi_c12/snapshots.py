"""ANSI C12.19 register snapshots: ST24 PREV_SEASON_DATA_TBL (the registers at the last
season change), ST25 PREV_DEMAND_RESET_DATA_TBL (the registers the last demand reset
froze) and ST26 SELF_READ_DATA_TBL (the list of self-reads), each laid out by ST0 and ST21
like ST23, and turned into Readings.

Each snapshot is ``[END_DATE_TIME (ST21 DATE_TIME_FIELD_FLAG)] [SEASON (ST21
SEASON_INFO_FIELD_FLAG)] REGISTER_DATA_RCD``; ST26 puts a list header before
``NBR_SELF_READS`` of them (C12.19-1997: LIST_STATUS flags, NBR_VALID_ENTRIES,
LAST_ENTRY_ELEMENT UINT8, LAST_ENTRY_SEQ_NUMBER UINT16, NBR_UNREAD_ENTRIES UINT8).

Readings of a snapshot are filed under its END_DATE_TIME with the OBIS billing-period
field F telling which snapshot they are: 101 (the last billing period) for the demand
reset snapshot, 126 for the previous season, and the self-read's sequence number modulo
100 for a self-read; ``native_id`` names the table. Sans-IO.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Final

import attrs

from fep.errors import FrameError
from fep.model import Reading
from fep.protocols.ansi_c12.c1219 import (
    ActualRegisters,
    CurrentRegisters,
    DataSelection,
    GeneralConfig,
    SourceSet,
    TableReader,
    encode_current_registers,
    encode_stime,
    read_register_data,
    register_readings,
)

ST24_PREV_SEASON: Final = 24
ST25_PREV_DEMAND_RESET: Final = 25
ST26_SELF_READ: Final = 26

F_DEMAND_RESET: Final = 101
F_SEASON: Final = 126
_HEADER: Final = 6


@attrs.frozen
class Snapshot:
    """One frozen copy of the registers: when it was taken (None when ST21 says the
    meter keeps no time), the season, the registers, and a self-read's sequence number."""

    end_time: datetime | None
    registers: CurrentRegisters
    season: int | None = None
    seq: int | None = None


@attrs.frozen
class SelfReads:
    """ST26: the list header and the valid self-reads, oldest first."""

    nbr_valid: int
    last_element: int
    last_seq: int
    nbr_unread: int
    reads: tuple[Snapshot, ...]
    descending: bool = False


def _snapshot(reader: TableReader, registers: ActualRegisters, seq: int | None = None
              ) -> Snapshot:
    when = reader.stime() if registers.date_time_field else None
    season = reader.take(1)[0] if registers.season_info else None
    return Snapshot(when, read_register_data(reader, registers), season, seq)


def _done(reader: TableReader, table: int) -> None:
    if reader.at != len(reader.data):
        raise FrameError(
            f"ST{table} has {len(reader.data) - reader.at} bytes more than ST21 describes",
            offset=reader.at,
            field=f"ST{table}",
        )


def decode_snapshot(
    data: bytes, config: GeneralConfig, registers: ActualRegisters, table: int,
    tz: tzinfo = UTC,
) -> Snapshot:
    """ST24 or ST25; FrameError for bytes that do not fit ST0 and ST21 (or a layout past
    the table's bound on records, ``c1219.RECORDS_PER_TABLE``)."""
    reader = TableReader(data, table, config, tz)
    snap = _snapshot(reader, registers)
    _done(reader, table)
    return snap


def encode_snapshot(
    snap: Snapshot, config: GeneralConfig, registers: ActualRegisters, tz: tzinfo = UTC
) -> bytes:
    out = b""
    if registers.date_time_field:
        out += encode_stime(snap.end_time, config, tz)
    if registers.season_info:
        out += bytes([snap.season or 0])
    return out + encode_current_registers(snap.registers, config, registers, tz)


def decode_self_reads(
    data: bytes, config: GeneralConfig, registers: ActualRegisters, tz: tzinfo = UTC
) -> SelfReads:
    """ST26: its header and the valid self-reads, oldest first, each with its sequence
    number (the newest is LAST_ENTRY_SEQ_NUMBER). FrameError for bytes that do not fit ST0
    and ST21, or for a layout that would make more records than the table's bound
    (``c1219.RECORDS_PER_TABLE`` beyond its bytes: self-reads of no bytes at all)."""
    reader = TableReader(data, ST26_SELF_READ, config, tz)
    head = reader.take(_HEADER)
    order = config.byte_order
    descending = bool(head[0] & 1)
    nbr_valid, last, unread = head[1], head[2], head[5]
    last_seq = int.from_bytes(head[3:5], order)
    slots = [_snapshot(reader, registers) for _ in range(registers.nbr_self_reads)]
    _done(reader, ST26_SELF_READ)
    size = len(slots)
    count = min(nbr_valid, size)
    reads: list[Snapshot] = []
    for k in range(count):  # oldest first
        age = count - 1 - k
        index = (last + age) % size if descending else (last - age) % size
        reads.append(attrs.evolve(slots[index], seq=(last_seq - age) % 0x10000))
    return SelfReads(nbr_valid, last, last_seq, unread, tuple(reads), descending)


def encode_self_reads(
    slots: tuple[Snapshot | None, ...], nbr_valid: int, last_element: int, last_seq: int,
    config: GeneralConfig, registers: ActualRegisters, tz: tzinfo = UTC,
) -> bytes:
    """ST26 (ascending, circular) with ``slots`` as stored (None: an empty slot)."""
    if len(slots) != registers.nbr_self_reads:
        raise ValueError("self-read count differs from ST21")
    order = config.byte_order
    head = bytes([0x04, nbr_valid, last_element]) + last_seq.to_bytes(2, order) + bytes(
        [nbr_valid]
    )
    empty = empty_snapshot(registers)
    return head + b"".join(
        encode_snapshot(s if s is not None else empty, config, registers, tz) for s in slots
    )


def empty_snapshot(registers: ActualRegisters) -> Snapshot:
    """A snapshot of zeros (an empty ST26 slot, an ST25 before any demand reset)."""
    from decimal import Decimal

    from fep.protocols.ansi_c12.c1219 import DataBlock, DemandRecord

    def block() -> DataBlock:
        zero = Decimal(0)
        demands = tuple(
            DemandRecord((zero,) * registers.nbr_occur) for _ in range(registers.nbr_demands)
        )
        coins = tuple((zero,) * registers.nbr_occur for _ in range(registers.nbr_coin_values))
        return DataBlock((zero,) * registers.nbr_summations, demands, coins)

    return Snapshot(
        None,
        CurrentRegisters(block(), tuple(block() for _ in range(registers.nbr_tiers)),
                         0 if registers.demand_reset_counter else None),
    )


def snapshot_readings(
    meter: str,
    snap: Snapshot,
    table: int,
    registers: ActualRegisters,
    selection: DataSelection | None = None,
    *,
    sources: SourceSet | None = None,
    received_time: datetime | None = None,
) -> list[Reading]:
    """A snapshot's values as Readings (see the module's first docstring for F)."""
    if table == ST25_PREV_DEMAND_RESET:
        f = F_DEMAND_RESET
    elif table == ST24_PREV_SEASON:
        f = F_SEASON
    else:
        f = (snap.seq or 0) % 100
    out = register_readings(
        meter, snap.registers, registers, selection, sources=sources,
        meter_time=snap.end_time, received_time=received_time,
    )
    label = f"ST{table}" + (f" self-read {snap.seq}" if table == ST26_SELF_READ else "")
    return [
        attrs.evolve(
            r,
            obis=attrs.evolve(r.obis, f=f) if r.obis.f == 255 else r.obis,
            meter_time=snap.end_time if snap.end_time is not None else r.meter_time,
            native_id=(r.native_id or "").replace("ST23", label, 1),
        )
        for r in out
    ]


__all__ = [
    "SelfReads",
    "Snapshot",
    "decode_self_reads",
    "decode_snapshot",
    "encode_self_reads",
    "empty_snapshot",
    "encode_snapshot",
    "snapshot_readings",
]
