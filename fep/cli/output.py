"""What a `fep` command prints and how it ends: the exit statuses, the usage error, and rows
of readings, intervals and events written as JSON lines, CSV or a table.

Exit status: 0 done, 1 store failure, 2 usage or configuration error, 3 the meter or the
channel failed (one line on stderr names the route and the failure).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from fep.model import IntervalBlock, MeterEvent, Reading, unit_text

EXIT_OK = 0
EXIT_STORE = 1
EXIT_USAGE = 2
EXIT_METER = 3


class UsageError(Exception):
    """The command line itself is wrong."""


def _json_value(value: object) -> str:
    # Decimals are printed as JSON numbers with their digits as read (no float rounding).
    if isinstance(value, Decimal):
        if value.is_finite():
            text = format(value, "f")
            return text
        return json.dumps(str(value))
    if isinstance(value, datetime):
        return json.dumps(_iso(value))
    return json.dumps(value)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def reading_row(reading: Reading) -> dict[str, object]:
    return {
        "meter": reading.meter,
        "obis": str(reading.obis),
        "value": reading.value,
        "unit": reading.unit_text,
        "meter_time": reading.meter_time,
    }


def interval_rows(block: IntervalBlock) -> list[dict[str, object]]:
    """One row per interval of a load-profile block."""
    unit = unit_text(block.unit, block.scaler)
    return [
        {
            "meter": block.meter,
            "obis": str(block.obis),
            "interval_start": start,
            "interval_end": start + block.period,
            "value": value,
            "unit": unit,
            "status": status.name if status else "OK",
        }
        for start, value, status in block.intervals()
    ]


def event_row(event: MeterEvent) -> dict[str, object]:
    return {
        "meter": event.meter,
        "time": event.time,
        "code": event.code,
        "kind": str(event.kind),
        "severity": str(event.severity),
        "text": event.text,
    }


def json_line(row: dict[str, object]) -> str:
    return "{" + ", ".join(f"{json.dumps(k)}: {_json_value(v)}" for k, v in row.items()) + "}"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _iso(value) or ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def table(rows: Sequence[dict[str, object]], columns: Sequence[str]) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def write_rows(rows: Sequence[dict[str, object]], columns: Sequence[str], fmt: str) -> None:
    out = sys.stdout
    if fmt == "json":
        for row in rows:
            out.write(json_line(row) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
    else:
        out.write(table(rows, columns) + "\n")
    out.flush()


READING_COLUMNS = ("meter", "obis", "value", "unit", "meter_time")
INTERVAL_COLUMNS = ("meter", "obis", "interval_start", "interval_end", "value", "unit", "status")
EVENT_COLUMNS = ("meter", "time", "code", "kind", "severity", "text")
