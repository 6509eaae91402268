"""profile_blocks' row loop (clock octets decoded without records, the fixed step added
instead of decoded, statuses from a table, integer columns scaled inline) gives exactly what
the plain per-row decoding gives: the reference below is that loop as it was."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.model import IntervalBlock, ObisCode, Quality
from fep.protocols.dlms import axdr, cosem
from fep.protocols.dlms.axdr import CosemDateTime, Data, DataType
from fep.protocols.dlms.cosem import ScalerUnit, amr_status_quality, scaled_value
from fep.sim import dlms_meter as sim
from tests.scale import examples

COLUMNS = list(sim.LOAD_PROFILE_COLUMNS)
UNITS = {sim.ACTIVE_IMPORT: ScalerUnit(-1, sim.WH), sim.ACTIVE_EXPORT: ScalerUnit(0, sim.WH)}
RECEIVED = datetime(2024, 1, 1, tzinfo=UTC)


def reference_blocks(
    meter: str, items: list[Data], columns: list[Any], period: timedelta,
    scaler_units: dict[ObisCode, ScalerUnit], default_deviation: int | None,
) -> list[IntervalBlock]:
    """cosem._profile_blocks before its row loop was made fast, one record per clock."""
    clock_index = next(i for i, c in enumerate(columns) if cosem._is_clock(c))
    status_index = next((i for i, c in enumerate(columns) if cosem._is_status(c)), None)
    value_columns = [i for i, c in enumerate(columns) if i != clock_index and i != status_index]
    stamps: list[datetime] = []
    statuses: list[Quality] = []
    previous: datetime | None = None
    table = []
    for n, row in enumerate(items):
        if row.type != DataType.STRUCTURE or len(row) != len(columns):
            raise FrameError(f"buffer row {n}: expected a structure of {len(columns)}",
                             field="buffer")
        cell = row[clock_index]
        if cell.type == DataType.NULL_DATA:
            if previous is None:
                raise FrameError(f"buffer row {n}: no time and none before", field="buffer")
            stamp = previous + period
        else:
            decoded = axdr.as_datetime(cell, f"buffer row {n} clock").to_datetime(default_deviation)
            if decoded is None:
                raise FrameError(f"buffer row {n}: clock not specified", field="buffer")
            stamp = decoded
        previous = stamp
        stamps.append(stamp)
        status = Quality.OK
        if status_index is not None:
            status_cell = row[status_index]
            if axdr.is_number(status_cell):
                status = amr_status_quality(int(status_cell.value))
        statuses.append(status)
        table.append(tuple(row.value))
    blocks = []
    for i in value_columns:
        column = columns[i]
        unit_scaler = scaler_units.get(column.logical_name)
        run_start = 0
        for n in range(1, len(stamps) + 1):
            if n == len(stamps) or stamps[n] - stamps[n - 1] != period:
                values = tuple(scaled_value(table[k][i], unit_scaler) for k in range(run_start, n))
                blocks.append(IntervalBlock(
                    meter=meter, obis=column.logical_name, start=stamps[run_start] - period,
                    period=period, values=values, statuses=tuple(statuses[run_start:n]),
                    unit=unit_scaler.unit if unit_scaler else None, scaler=0, source="dlms"))
                run_start = n
    return blocks


def _outcome(decode: Any, *args: Any) -> object:
    try:
        blocks = decode(*args)
    except (FrameError, OverflowError) as e:
        return type(e).__name__, str(e)
    return [attrs.evolve(b, received_time=RECEIVED) for b in blocks]


@st.composite
def buffers(draw: st.DrawFn) -> tuple[list[Data], int, int | None]:
    """Profile rows: clocks mostly one period apart (octet-strings, sometimes null-data or
    the date-time type, sometimes a jump, a bad or unspecified byte), statuses and values of
    several types."""
    period = draw(st.sampled_from([60, 900, 3600, 86400, 7]))
    deviation = draw(st.sampled_from([0, -60, 120, -0x8000]))
    default = draw(st.one_of(st.none(), st.integers(-720, 720)))
    when = draw(st.datetimes(datetime(2000, 1, 1), datetime(2030, 1, 1)))
    rows = []
    for _ in range(draw(st.integers(0, 30))):
        raw = bytearray(CosemDateTime.from_datetime(when.replace(tzinfo=UTC)).encode())
        raw[9:11] = (deviation & 0xFFFF).to_bytes(2, "big")
        kind = draw(st.integers(0, 19))
        if kind == 0:
            raw[draw(st.integers(0, 11))] = draw(st.sampled_from([0xFF, 0x3C, 0x80, 0x00, 0x18]))
        clock = axdr.octet_string(bytes(raw))
        if kind == 1:
            clock = axdr.NULL
        elif kind == 2:
            clock = Data(DataType.DATE_TIME, CosemDateTime.decode(bytes(raw)))
        elif kind == 3:
            clock = axdr.octet_string(bytes(raw[:11]))
        status = draw(st.sampled_from([
            axdr.unsigned(draw(st.integers(0, 255))), axdr.long_unsigned(300), axdr.NULL,
            axdr.integer(-3), Data(DataType.FLOAT32, 8.0),
        ]))
        value = draw(st.sampled_from([
            axdr.double_long_unsigned(draw(st.integers(0, 2**32 - 1))),
            Data(DataType.LONG64, -5),
            Data(DataType.FLOAT64, 1.5), axdr.octet_string(b"ab"), axdr.NULL,
        ]))
        row = axdr.structure(clock, status, value, axdr.long_unsigned(draw(st.integers(0, 9))))
        if draw(st.integers(0, 40)) == 0:
            row = axdr.structure(clock, status)
        rows.append(row)
        step = draw(st.sampled_from([1, 1, 1, 1, 1, 2, 0, -1]))
        when += timedelta(seconds=period * step)
    return rows, period, default


class RowLoopTests(unittest.TestCase):
    @settings(max_examples=examples(600), deadline=None)
    @given(buffers(), st.booleans())
    def test_same_blocks_as_the_per_row_decoding(self, buffer: Any, scaled: bool) -> None:
        rows, period, default = buffer
        units = UNITS if scaled else {}
        ours = _outcome(cosem._profile_blocks, "m", rows, COLUMNS, timedelta(seconds=period),
                        units, default)
        theirs = _outcome(reference_blocks, "m", rows, COLUMNS, timedelta(seconds=period),
                          units, default)
        self.assertEqual(ours, theirs)

    def test_a_huge_scaler_is_still_a_frame_error(self) -> None:
        row = axdr.structure(
            axdr.octet_string(CosemDateTime.from_datetime(RECEIVED).encode()),
            axdr.unsigned(0), axdr.double_long_unsigned(5), axdr.long_unsigned(1),
        )
        with self.assertRaises(FrameError):
            cosem.profile_blocks("m", axdr.array([row]), COLUMNS, 900,
                                 {sim.ACTIVE_IMPORT: ScalerUnit(10**9, sim.WH)})
