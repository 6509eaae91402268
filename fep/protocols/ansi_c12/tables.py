"""C12.19 tables by number, for ``fep read --table``: their names, the tables each is
decoded with, and their contents as plain JSON values (hex for tables fep does not decode).

Sans-IO: table bytes in, dictionaries out.
``decode_table`` and ``table_size`` raise FrameError (nothing else) for bytes that do not
fit; ``table_row`` turns that error into the row's ``decode_error``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any, Final

import attrs

from fep.errors import FrameError
from fep.protocols.ansi_c12.c1219 import (
    ActualLoadProfile,
    ActualLog,
    ActualRegisters,
    ActualSources,
    ActualTimeTou,
    Clock,
    DataSelection,
    DemandControl,
    DeviceId,
    GeneralConfig,
    ManufacturerId,
    ModeStatus,
    TimeOffset,
    decode_constants,
    decode_current_registers,
    decode_data_control,
    decode_log,
    decode_lp_data,
    decode_lp_selection,
    decode_lp_status,
    decode_source_links,
    decode_uom_entries,
    describe_uom,
    log_data_length,
    lp_data_length,
)
from fep.protocols.ansi_c12.procedures import ProcedureRequest, ProcedureResponse
from fep.protocols.ansi_c12.snapshots import decode_self_reads, decode_snapshot

# Manufacturer table N is table number 2048 + N (bit 11 of the C12.18 table id).
MFG_TABLE_BASE: Final = 2048

TABLE_NAMES: Final[dict[int, str]] = {
    0: "GEN_CONFIG_TBL",
    1: "GENERAL_MFG_ID_TBL",
    3: "ED_MODE_STATUS_TBL",
    5: "DEVICE_IDENT_TBL",
    7: "PROC_INITIATE_TBL",
    8: "PROC_RESPONSE_TBL",
    11: "ACT_SOURCES_LIM_TBL",
    12: "UOM_ENTRY_TBL",
    13: "DEMAND_CONTROL_TBL",
    14: "DATA_CONTROL_TBL",
    15: "CONSTANTS_TBL",
    16: "SOURCES_TBL",
    21: "ACT_REGS_TBL",
    22: "DATA_SELECTION_TBL",
    23: "CURRENT_REG_DATA_TBL",
    24: "PREVIOUS_SEASON_DATA_TBL",
    25: "PREVIOUS_DEMAND_RESET_DATA_TBL",
    26: "SELF_READ_DATA_TBL",
    51: "ACTUAL_TIME_TOU_TBL",
    52: "CLOCK_TBL",
    53: "TIME_OFFSET_TBL",
    61: "ACT_LP_TBL",
    62: "LP_SELECT_TBL",
    63: "LP_STATUS_TBL",
    64: "LP_DATA_SET1_TBL",
    71: "ACT_LOG_TBL",
    74: "HISTORY_LOG_DATA_TBL",
    76: "EVENT_LOG_DATA_TBL",
}

# The tables (besides ST0) a table is decoded with.
_NEEDS: Final[dict[int, tuple[int, ...]]] = {
    13: (11,),
    14: (11,),
    15: (11,),
    16: (11,),
    22: (21,),
    23: (21,),
    24: (21,),
    25: (21,),
    26: (21,),
    53: (51,),
    62: (61,),
    63: (61,),
    64: (61, 62),
    74: (71,),
    76: (71,),
}


def parse_table(text: str) -> int:
    """A table number from the command line: ``23`` or ``ST23`` (standard), ``MT0`` or
    ``2048`` (manufacturer table 0); ValueError otherwise."""
    raw = text.strip().upper()
    prefix = raw[:2] if raw[:2] in ("ST", "MT") else ""
    digits = raw[len(prefix) :]
    limit = MFG_TABLE_BASE if prefix else 2 * MFG_TABLE_BASE
    if not digits.isdigit() or int(digits) >= limit:
        raise ValueError(
            f"not a C12.19 table: {text!r} (give 0..4095, ST0..ST2047 or MT0..MT2047)"
        )
    return int(digits) + (MFG_TABLE_BASE if prefix == "MT" else 0)


def table_label(table: int) -> str:
    return f"MT{table - MFG_TABLE_BASE}" if table >= MFG_TABLE_BASE else f"ST{table}"


def table_needs(table: int) -> tuple[int, ...]:
    """The tables to read before ``table`` to decode it (ST0 is always read first)."""
    return _NEEDS.get(table, ())


def table_size(table: int, tables: Mapping[int, bytes]) -> int:
    """The size of a table fep can work out from those it has (the load-profile data and
    the logs, which are often bigger than one answer), else 0 (read it whole)."""
    if 0 not in tables:
        return 0
    config = GeneralConfig.decode(tables[0])
    if table == 64 and 61 in tables and 62 in tables:
        actual = ActualLoadProfile.decode(tables[61], config)
        selection = decode_lp_selection(tables[62], config, actual)[0]
        return lp_data_length(config, actual, selection) if selection is not None else 0
    if table in (74, 76) and 71 in tables:
        return log_data_length(config, ActualLog.decode(tables[71], config), table)
    return 0


def decode_table(table: int, tables: Mapping[int, bytes], tz: tzinfo = UTC) -> object | None:
    """The record(s) of a table fep knows, decoded with the tables it needs (all in
    ``tables``); None for a table fep does not decode; FrameError for bytes that do not
    fit the layout."""
    data = tables[table]
    if table == 0:
        return GeneralConfig.decode(data)
    config = GeneralConfig.decode(tables[0])
    simple: dict[int, Callable[[], object]] = {
        1: lambda: ManufacturerId.decode(data, config),
        3: lambda: ModeStatus.decode(data, config),
        5: lambda: DeviceId.decode(data, config),
        7: lambda: ProcedureRequest.decode(data, config),
        8: lambda: ProcedureResponse.decode(data, config),
        11: lambda: ActualSources.decode(data),
        12: lambda: [
            {**_fields(u), "text": describe_uom(u)} for u in decode_uom_entries(data, config)
        ],
        21: lambda: ActualRegisters.decode(data),
        51: lambda: ActualTimeTou.decode(data, config),
        52: lambda: Clock.decode(data, config, tz),
        61: lambda: ActualLoadProfile.decode(data, config),
        71: lambda: ActualLog.decode(data, config),
    }
    if table in simple:
        return simple[table]()
    if table not in TABLE_NAMES:
        return None
    needed = [n for n in table_needs(table) if n not in tables]
    if needed:
        raise FrameError(f"{table_label(table)} is decoded with {table_label(needed[0])}")
    if table in (13, 14, 15, 16):
        sources = ActualSources.decode(tables[11])
        by_table: dict[int, Callable[[], object]] = {
            13: lambda: DemandControl.decode(data, config, sources),
            14: lambda: decode_data_control(data, sources),
            15: lambda: decode_constants(data, config, sources),
            16: lambda: decode_source_links(data, sources),
        }
        return by_table[table]()
    if table in (22, 23, 24, 25, 26):
        registers = ActualRegisters.decode(tables[21])
        if table == 22:
            return DataSelection.decode(data, registers)
        if table in (24, 25):
            return decode_snapshot(data, config, registers, table, tz)
        if table == 26:
            return decode_self_reads(data, config, registers, tz)
        return decode_current_registers(data, config, registers, tz)
    if table == 53:
        return TimeOffset.decode(data, config, ActualTimeTou.decode(tables[51], config))
    if table in (62, 63, 64):
        lp = ActualLoadProfile.decode(tables[61], config)
        if table == 62:
            return decode_lp_selection(data, config, lp)
        if table == 63:
            return decode_lp_status(data, config, lp)
        selection = decode_lp_selection(tables[62], config, lp)[0]
        if selection is None:
            raise FrameError("ST61 has no data set 1", field="ST61")
        return decode_lp_data(data, config, lp, selection, tz)
    log = ActualLog.decode(tables[71], config)
    return decode_log(data, config, log, table, tz)


def _number(value: Decimal) -> int | float | str:
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    return as_float if Decimal(repr(as_float)) == value else str(value)


def _fields(record: Any) -> dict[str, object]:
    """An attrs record's fields as JSON values."""
    return {f.name: _plain(getattr(record, f.name)) for f in attrs.fields(type(record))}


def _plain(value: object) -> object:
    """A decoded record as JSON values: attrs records as objects, flags as lists of
    names, enums by name, numbers as numbers, times in ISO 8601 UTC, bytes in hex."""
    if attrs.has(type(value)):
        return _fields(value)
    if isinstance(value, enum.IntFlag):
        return [member.name for member in type(value) if member in value]
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, float):
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, frozenset | set):
        return sorted(_plain(v) for v in value)  # type: ignore[type-var]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def table_row(
    meter: str, table: int, tables: Mapping[int, bytes], tz: tzinfo = UTC
) -> dict[str, object]:
    """One ``--table`` output row: the table's number, label, name and size with its
    decoded ``fields``, or its ``hex`` where fep does not decode it (and ``decode_error``
    where the bytes do not fit the layout)."""
    row: dict[str, object] = {
        "meter": meter,
        "table": table,
        "label": table_label(table),
        "name": TABLE_NAMES.get(table),
    }
    data = tables[table]
    row["size"] = len(data)
    try:
        record = decode_table(table, tables, tz)
    except FrameError as e:
        row["hex"] = data.hex()
        row["decode_error"] = e.message
        return row
    if record is None:
        row["hex"] = data.hex()
    else:
        row["fields"] = _plain(record)
    return row


__all__ = [
    "MFG_TABLE_BASE",
    "TABLE_NAMES",
    "decode_table",
    "parse_table",
    "table_label",
    "table_needs",
    "table_row",
    "table_size",
]
