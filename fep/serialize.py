"""The one wire form of records: Reading, IntervalBlock and MeterEvent to JSON-compatible
values and back, exactly (decimals as text, aware times with microseconds). The spool writes
it; the northbound bus and the API will reuse it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from fep.model import (
    EventKind,
    IntervalBlock,
    MeterEvent,
    ObisCode,
    Quality,
    Reading,
    Record,
    Severity,
    Unit,
    Value,
)


class RecordDecodeError(ValueError):
    """Bytes or values that are not a record in the wire form."""


def _value_out(value: Value) -> Any:
    # Tag each value with its type so a replay rebuilds exactly what was read.
    if value is None:
        return None
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", value]
    if isinstance(value, Decimal):
        return ["d", str(value)]
    return ["s", value]


def _value_in(raw: Any) -> Value:
    if raw is None:
        return None
    tag, v = raw
    if tag == "d":
        return Decimal(v)
    if tag == "i":
        return int(v)
    if tag == "b":
        return bool(v)
    if tag == "s":
        return str(v)
    raise RecordDecodeError(f"unknown value tag {tag!r}")


def _time_out(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _time_in(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text).astimezone(UTC)


@lru_cache(maxsize=4096)
def _obis_in(text: str) -> ObisCode:
    return ObisCode.parse(text)


def _unit_in(code: int | None) -> Unit | None:
    return None if code is None else Unit.by_code(code)


def record_to_list(record: Record) -> list[Any]:
    """A compact positional form (what the spool stores)."""
    if isinstance(record, Reading):
        return ["R", record.meter, str(record.obis), _value_out(record.value),
                record.unit.code if record.unit else None, record.scaler,
                _time_out(record.meter_time), _time_out(record.received_time),
                int(record.quality), record.source, record.native_id]
    if isinstance(record, IntervalBlock):
        return ["I", record.meter, str(record.obis), _time_out(record.start),
                record.period.total_seconds(), [_value_out(v) for v in record.values],
                [int(s) for s in record.statuses], record.unit.code if record.unit else None,
                record.scaler, _time_out(record.received_time), record.source]
    if isinstance(record, MeterEvent):
        return ["E", record.meter, record.code, record.kind.value, record.severity.value,
                _time_out(record.time), record.text, _time_out(record.received_time),
                record.source]
    raise TypeError(f"not a record: {record!r}")


def record_from_list(raw: list[Any]) -> Record:
    """A record from its positional form; RecordDecodeError for anything else."""
    try:
        kind = raw[0]
        if kind == "R":
            (_, meter, obis, value, unit, scaler, meter_time, received, quality, source,
             native_id) = raw
            received_time = _time_in(received)
            assert received_time is not None
            return Reading(meter, _obis_in(obis), _value_in(value), _unit_in(unit), scaler,
                           _time_in(meter_time), received_time, Quality(quality), source,
                           native_id)
        if kind == "I":
            (_, meter, obis, start, period, values, statuses, unit, scaler, received,
             source) = raw
            start_time, received_time = _time_in(start), _time_in(received)
            assert start_time is not None and received_time is not None
            return IntervalBlock(meter, _obis_in(obis), start_time, timedelta(seconds=period),
                                 tuple(_value_in(v) for v in values),
                                 tuple(Quality(s) for s in statuses), _unit_in(unit), scaler,
                                 received_time, source)
        if kind == "E":
            _, meter, code, event_kind, severity, time, text, received, source = raw
            event_time, received_time = _time_in(time), _time_in(received)
            assert event_time is not None and received_time is not None
            return MeterEvent(meter, code, EventKind(event_kind), Severity(severity),
                              event_time, text, received_time, source)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError,
            AssertionError) as e:
        # ArithmeticError: decimal.InvalidOperation for a value that is no number,
        # OverflowError for a period or time out of range; AttributeError: a number where
        # a text is due (an OBIS code, a time).
        raise RecordDecodeError(f"not a record: {e}") from None
    raise RecordDecodeError(f"unknown record kind {raw[0]!r}")


def record_to_dict(record: Record) -> dict[str, Any]:
    """A self-describing JSON object (for people and other systems)."""
    names = {
        "R": ("kind", "meter", "obis", "value", "unit_code", "scaler", "meter_time",
              "received_time", "quality", "source", "native_id"),
        "I": ("kind", "meter", "obis", "start", "period_s", "values", "statuses", "unit_code",
              "scaler", "received_time", "source"),
        "E": ("kind", "meter", "code", "event_kind", "severity", "time", "text",
              "received_time", "source"),
    }
    raw = record_to_list(record)
    return dict(zip(names[raw[0]], raw, strict=True))


def record_from_dict(data: dict[str, Any]) -> Record:
    return record_from_list(list(data.values()))


def _readings_fast(records: list[Record] | tuple[Record, ...]) -> list[Any]:
    # The hot path (every reading passes here before it is acknowledged): OBIS texts and
    # times repeat within a batch, so each is formatted once.
    obis_text: dict[ObisCode, str] = {}
    times: dict[datetime, str] = {}
    out: list[Any] = []
    for r in records:
        if type(r) is not Reading:
            out.append(record_to_list(r))
            continue
        o = obis_text.get(r.obis)
        if o is None:
            o = obis_text[r.obis] = str(r.obis)
        mt = r.meter_time
        if mt is not None:
            mts = times.get(mt)
            if mts is None:
                mts = times[mt] = mt.isoformat()
        else:
            mts = None
        rt = times.get(r.received_time)
        if rt is None:
            rt = times[r.received_time] = r.received_time.isoformat()
        unit = r.unit
        out.append(["R", r.meter, o, _value_out(r.value), unit.code if unit else None,
                    r.scaler, mts, rt, int(r.quality), r.source, r.native_id])
    return out


def encode_records(records: list[Record] | tuple[Record, ...]) -> bytes:
    return json.dumps(_readings_fast(records), separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def decode_records(data: bytes) -> list[Record]:
    """The records of ``encode_records``; RecordDecodeError (and nothing else) for bytes
    that are not a record list in the wire form."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        # RecursionError: arrays nested deeper than the interpreter's stack.
        raise RecordDecodeError(f"not a record list: {e}") from None
    if not isinstance(raw, list):
        raise RecordDecodeError("not a record list")
    return [record_from_list(r) for r in raw]
