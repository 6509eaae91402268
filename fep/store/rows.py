"""Records to table rows and back: the value, time and interval encodings both stores share.

A value is kept as three columns so every type round-trips: ``value`` (the number, exact:
PostgreSQL numeric, SQLite decimal text), ``value_text`` (a text value) and ``value_type``,
one letter naming the Python type to rebuild (D decimal, I int, B bool, S str, N None).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fep.errors import RecordRejected, StoreError
from fep.model import IntervalBlock, MeterEvent, ObisCode, Quality, Reading, Record, Unit, Value

TABLES = ("meters", "readings", "intervals", "events")

EncodedValue = tuple[str | None, str | None, str]

_NONE: EncodedValue = (None, None, "N")
_TRUE: EncodedValue = ("1", None, "B")
_FALSE: EncodedValue = ("0", None, "B")


def encode_value(value: object) -> EncodedValue:
    """(value, value_text, value_type) columns for one record value."""
    # Exact type checks first: they are the common cases (and bool is a subclass of int).
    kind = type(value)
    if kind is Decimal:
        return (str(value), None, "D")
    if kind is int:
        return (str(value), None, "I")
    if isinstance(value, str):
        return (None, str(value), "S")
    if value is None:
        return _NONE
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, int):
        return (str(int(value)), None, "I")
    if isinstance(value, Decimal):
        return (str(value), None, "D")
    if isinstance(value, float):
        # Not a record value type, but a float from a careless decoder is kept as the
        # decimal its repr shows rather than refused.
        return (repr(value), None, "D")
    raise RecordRejected(f"cannot store a value of type {kind.__name__}: {value!r}")


def decode_value(value: Any, text: str | None, kind: str) -> Value:
    """The record value from its three columns (``value`` is str from SQLite, Decimal from
    PostgreSQL)."""
    if kind == "D":
        return value if type(value) is Decimal else Decimal(value)
    if kind == "I":
        return int(value)
    if kind == "S":
        return text
    if kind == "B":
        return Decimal(value) != 0
    if kind == "N":
        return None
    raise StoreError(f"unknown value_type {kind!r} in the store")


def unit_code(unit: Unit | None) -> int | None:
    return None if unit is None else unit.code


def unit_of(code: int | None) -> Unit | None:
    return None if code is None else Unit.by_code(code)


def obis_of(text: str) -> ObisCode:
    """An OBIS code from its stored ``A-B:C.D.E*F`` form."""
    ab, _, cdef = text.partition(":")
    a, _, b = ab.partition("-")
    cde, _, f = cdef.partition("*")
    c, d, e = cde.split(".")
    return ObisCode(int(a), int(b), int(c), int(d), int(e), int(f))


def obis_filter(obis: str | None) -> str | None:
    """The stored form of an OBIS code given by a user in any accepted spelling."""
    return None if obis is None else str(ObisCode.parse(obis))


def period_seconds(period: timedelta, block: IntervalBlock) -> int:
    seconds = period.total_seconds()
    if seconds != int(seconds):
        raise StoreError(
            f"meter {block.meter} {block.obis}: interval period {period} is not whole seconds"
        )
    return int(seconds)


# SQLite keeps times as ISO-8601 UTC text with microseconds: fixed width, so sortable.


def utc(value: datetime) -> datetime:
    """A query bound in UTC; naive times are refused rather than guessed."""
    if value.tzinfo is None:
        raise StoreError(f"naive datetime {value!r}: fep keeps times in UTC")
    return value.astimezone(UTC)


def text_time(value: datetime) -> str:
    """``2024-03-01T12:00:00.000000Z`` for an aware UTC datetime (records hold only those)."""
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def text_time_or_none(value: datetime | None) -> str | None:
    return None if value is None else text_time(value)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def parse_time_or_none(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


IntervalRow = tuple[str, str, datetime, int, Value, int, int | None, int, datetime, str]


def interval_blocks(rows: Iterable[IntervalRow]) -> list[IntervalBlock]:
    """Stored intervals, ordered by OBIS then start, joined back into blocks: a block runs
    while intervals follow each other with the same quantity, period, unit and source.

    Each row is (meter, obis, start, period_s, value, status, unit_code, scaler,
    received_time, source)."""
    blocks: list[IntervalBlock] = []
    run: list[IntervalRow] = []

    def flush() -> None:
        if not run:
            return
        first = run[0]
        statuses = tuple(Quality(r[5]) for r in run)
        blocks.append(
            IntervalBlock(
                meter=first[0],
                obis=obis_of(first[1]),
                start=first[2],
                period=timedelta(seconds=first[3]),
                values=tuple(r[4] for r in run),
                statuses=() if not any(statuses) else statuses,
                unit=unit_of(first[6]),
                scaler=first[7],
                received_time=first[8],
                source=first[9],
            )
        )
        run.clear()

    for row in rows:
        if run:
            last = run[-1]
            follows = (
                row[1] == last[1]
                and row[3] == last[3]
                and row[6] == last[6]
                and row[7] == last[7]
                and row[9] == last[9]
                and row[2] == last[2] + timedelta(seconds=last[3])
            )
            if not follows:
                flush()
        run.append(row)
    flush()
    return blocks


def record_rows(
    records: Sequence[Record],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows of readings, intervals and events a batch of records makes, times as UTC
    text and numbers as decimal text (SQLite keeps them so; PostgreSQL casts them)."""
    readings: list[tuple[Any, ...]] = []
    intervals: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    # A batch repeats a few times (one capture time for many meters, one received time per
    # session) and few OBIS codes: format each once.
    times: dict[datetime, str] = {}
    codes: dict[ObisCode, str] = {}

    def when(value: datetime) -> str:
        text = times.get(value)
        if text is None:
            text = times[value] = text_time(value)
        return text

    for r in records:
        if isinstance(r, Reading):
            value, value_text, value_type = encode_value(r.value)
            meter_time = None if r.meter_time is None else when(r.meter_time)
            received = when(r.received_time)
            obis = codes.get(r.obis)
            if obis is None:
                obis = codes[r.obis] = str(r.obis)
            readings.append(
                (
                    r.meter,
                    obis,
                    value,
                    value_text,
                    value_type,
                    None if r.unit is None else r.unit.code,
                    r.scaler,
                    meter_time,
                    received if meter_time is None else meter_time,
                    received,
                    int(r.quality),
                    r.source,
                    r.native_id,
                )
            )
        elif isinstance(r, IntervalBlock):
            obis = str(r.obis)
            period = period_seconds(r.period, r)
            unit = None if r.unit is None else r.unit.code
            received = when(r.received_time)
            for start, v, status in r.intervals():
                value, value_text, value_type = encode_value(v)
                intervals.append(
                    (
                        r.meter,
                        obis,
                        when(start),
                        period,
                        value,
                        value_text,
                        value_type,
                        int(status),
                        unit,
                        r.scaler,
                        received,
                        r.source,
                    )
                )
        elif isinstance(r, MeterEvent):
            events.append(
                (
                    r.meter,
                    r.code,
                    str(r.kind),
                    str(r.severity),
                    when(r.time),
                    r.text,
                    when(r.received_time),
                    r.source,
                )
            )
        else:
            raise StoreError(f"cannot store a {type(r).__name__}")
    return readings, intervals, events
