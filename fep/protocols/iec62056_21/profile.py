"""IEC 62056-21 load profile (P.01) and logbook (P.98) in programming mode: the time range of
an R5 request, and the answers turned into IntervalBlocks and MeterEvents.

The layout is the VDEW one (Landis+Gyr, EMH, Metcom, LEM meters; VDEW specification 2.1):

- request ``R5 P.01(<from>;<to>)``, either end may be empty (``P.01(;)``: everything);
- answer: a header ``P.01(<stamp>)(<status>)(<period>)(<n>)(<code 1>)(<unit 1>)...
  (<code n>)(<unit n>)`` then one line ``(<value 1>)...(<value n>)`` per interval, the
  header's stamp being the capture time (the end) of the first line's interval and each
  next line one period later; the meter writes a new header whenever the status or the
  period changes (a power failure, a clock set), so an answer holds several runs;
- a logbook answer has one line per entry, ``P.98(<stamp>)(<status>)()(<n>)...`` (the
  values that follow, if any, are kept in the event's text).

Stamps are ``sYYMMDDhhmmss`` (``s``: season, 0 winter, 1 summer, 2 UTC) or the same without
the season digit or without the seconds, in the meter's local time. The status is the VDEW
status word in hex: its bits become interval qualities and logbook events.

Sans-IO. ``profile_blocks`` and ``logbook_events`` raise FrameError (naming the line) and
nothing else; the work is bounded by the answer's length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation

from fep.errors import FrameError
from fep.model import EventKind, IntervalBlock, MeterEvent, ObisCode, Quality, Severity, Unit
from fep.protocols.iec62056_21.readout import DataSet, parse_unit

PROFILE = "P.01"
LOGBOOK = "P.98"

_STAMP_RE = re.compile(r"^\d{10,13}$")
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")
# A period longer than a day is not a load profile's (and would step out of the calendar).
_MAX_PERIOD_MINUTES = 24 * 60

# The VDEW status word (also used by the logbook): bit -> (event kind, severity, text,
# interval quality).
STATUS_BITS: dict[int, tuple[EventKind, Severity, str, Quality]] = {
    0x00000001: (EventKind.METER_ERROR, Severity.CRITICAL, "fatal device error",
                 Quality.DATA_NOT_VALID),
    0x00000002: (EventKind.LOW_BATTERY, Severity.MINOR, "clock power reserve depleted",
                 Quality.CLOCK_INVALID),
    0x00000004: (EventKind.OTHER, Severity.INFO, "measurement period incomplete",
                 Quality.DATA_NOT_VALID),
    0x00000008: (EventKind.CLOCK_SET, Severity.INFO, "season change (summer/winter time)",
                 Quality.DST),
    0x00000020: (EventKind.CLOCK_SET, Severity.INFO, "device clock set",
                 Quality.CLOCK_ADJUSTED),
    0x00000040: (EventKind.POWER_RESTORED, Severity.MAJOR, "supply voltage restored",
                 Quality.POWER_DOWN),
    0x00000080: (EventKind.POWER_OUTAGE, Severity.CRITICAL, "supply voltage failure",
                 Quality.POWER_DOWN),
    0x00000100: (EventKind.OTHER, Severity.MINOR, "configuration changed by setting",
                 Quality.OK),
    0x00002000: (EventKind.OTHER, Severity.MINOR, "logbook deleted", Quality.OK),
    0x00004000: (EventKind.OTHER, Severity.MINOR, "load profile deleted", Quality.OK),
    0x00008000: (EventKind.CLOCK_SET, Severity.INFO, "recorded before the last clock "
                 "synchronisation", Quality.OK),
}


# ---------------------------------------------------------------------------
# Stamps and the request's range
# ---------------------------------------------------------------------------


def format_stamp(t: datetime, tz: tzinfo, *, season: bool = True) -> str:
    """``t`` as the meter's local ``sYYMMDDhhmm`` (``season``) or ``YYMMDDhhmm``."""
    local = t.astimezone(tz)
    text = f"{local:%y%m%d%H%M}"
    if not season:
        return text
    return ("1" if local.dst() else "0") + text


def range_argument(
    since: datetime | None, until: datetime | None, tz: tzinfo, *, season: bool = True
) -> str:
    """The text inside a profile request's parentheses: ``<from>;<to>``, an end left empty
    when not given."""
    start = format_stamp(since, tz, season=season) if since is not None else ""
    end = format_stamp(until, tz, season=season) if until is not None else ""
    return f"{start};{end}"


def parse_stamp(text: str, tz: tzinfo) -> datetime | None:
    """A profile stamp in the meter's local time -> aware UTC; None when ``text`` is not
    one."""
    text = text.strip()
    if not _STAMP_RE.match(text):
        return None
    season: str | None = None
    if len(text) in (11, 13):
        season, text = text[0], text[1:]
    seconds = text[10:12] if len(text) == 12 else "00"
    try:
        naive = datetime(2000 + int(text[0:2]), int(text[2:4]), int(text[4:6]),
                         int(text[6:8]), int(text[8:10]), int(seconds))
    except ValueError:
        return None
    if season == "2":
        return naive.replace(tzinfo=UTC)
    # The season digit settles the hour that occurs twice when summer time ends.
    local = naive.replace(tzinfo=tz, fold=1 if season == "0" else 0)
    return local.astimezone(UTC)


# ---------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------


def _status(text: str, line: int) -> int:
    text = text.strip()
    if not text:
        return 0
    try:
        return int(text, 16)
    except ValueError:
        raise FrameError(f"data line {line}: status {text!r} is not hexadecimal",
                         field=f"data line {line}") from None


def status_quality(status: int) -> Quality:
    quality = Quality.OK
    for bit, (_, _, _, flag) in STATUS_BITS.items():
        if status & bit:
            quality |= flag
    return quality


def _header(ds: DataSet, tz: tzinfo) -> tuple[datetime, int, timedelta, list[tuple[str, str]]]:
    values = [v.value if v.unit is None else f"{v.value}*{v.unit}" for v in ds.values]
    where = f"data line {ds.line}"
    if len(values) < 4:
        raise FrameError(f"{where}: {ds.address} header has {len(values)} fields, not 4 or "
                         "more", field=where)
    stamp = parse_stamp(values[0], tz)
    if stamp is None:
        raise FrameError(f"{where}: {values[0]!r} is not a profile time stamp", field=where)
    status = _status(values[1], ds.line)
    try:
        minutes = int(values[2])
        count = int(values[3])
    except ValueError:
        raise FrameError(f"{where}: period {values[2]!r} and count {values[3]!r} must be "
                         "whole numbers", field=where) from None
    if not 0 < minutes <= _MAX_PERIOD_MINUTES:
        raise FrameError(f"{where}: period {minutes} min is not a load profile's",
                         field=where)
    if count < 0 or len(values) < 4 + 2 * count:
        raise FrameError(f"{where}: header announces {count} channels but names "
                         f"{max(0, (len(values) - 4) // 2)}", field=where)
    columns = [(values[4 + 2 * i], values[5 + 2 * i]) for i in range(count)]
    return stamp, status, timedelta(minutes=minutes), columns


def _number(text: str) -> Decimal | None:
    text = text.strip()
    if not _NUMBER_RE.match(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        return None


def profile_blocks(
    datasets: Sequence[DataSet],
    meter: str,
    *,
    tz: tzinfo = UTC,
    received_time: datetime | None = None,
    source: str = "",
    name: str = PROFILE,
) -> list[IntervalBlock]:
    """The intervals of a load profile answer, one IntervalBlock per channel and run.

    Each header's stamp is the end of the first interval after it; a value line is one
    period later than the one before. A channel whose values are not numbers (an
    identifier, a status column) gives no block; an empty value is None and MISSING. The
    header's status word gives the qualities of its run's intervals."""
    received = received_time or datetime.now(UTC)
    header: tuple[datetime, int, timedelta, list[tuple[str, str]]] | None = None
    # Per channel (code, unit, period): (interval start, value, quality), in order.
    series: dict[tuple[str, str, timedelta], list[tuple[datetime, Decimal | None, Quality]]] = {}
    # Channels with a value that is not a number (an identifier, a status column).
    text_channels: set[tuple[str, str, timedelta]] = set()
    row = 0
    for ds in datasets:
        if ds.address == name:
            header = _header(ds, tz)
            row = 0
            continue
        if ds.address:
            continue  # another register in the same answer
        if header is None:
            raise FrameError(f"data line {ds.line}: values before a {name} header",
                             field=f"data line {ds.line}")
        first_end, status, period, columns = header
        if len(ds.values) != len(columns):
            raise FrameError(f"data line {ds.line}: {len(ds.values)} values for "
                             f"{len(columns)} channels", field=f"data line {ds.line}")
        end = first_end + row * period
        row += 1
        quality = status_quality(status)
        for (code, unit), dv in zip(columns, ds.values, strict=True):
            text = dv.value.strip()
            number = _number(text)
            key = (code, dv.unit or unit, period)
            if number is None and text:
                text_channels.add(key)
                continue
            series.setdefault(key, []).append(
                (end - period, number, quality | (Quality.MISSING if number is None
                                                  else Quality.OK)))
    blocks: list[IntervalBlock] = []
    for (code, unit, period), points in series.items():
        if (code, unit, period) in text_channels or not points:
            continue
        try:
            obis = ObisCode.parse(code, a=1, b=0)
        except ValueError:
            continue
        unit_value: Unit | None = None
        scaler = 0
        if unit:
            try:
                unit_value, scaler = parse_unit(unit)
            except ValueError:
                unit_value, scaler = None, 0
        points.sort(key=lambda p: p[0])
        run = [points[0]]
        for point in [*points[1:], None]:
            if point is not None and point[0] - run[-1][0] == period:
                run.append(point)
                continue
            if point is not None and point[0] == run[-1][0]:
                continue  # the same interval twice (a header repeated): keep the first
            blocks.append(IntervalBlock(
                meter=meter, obis=obis, start=run[0][0], period=period,
                values=tuple(p[1] for p in run), statuses=tuple(p[2] for p in run),
                unit=unit_value, scaler=scaler, received_time=received, source=source,
            ))
            if point is not None:
                run = [point]
    return blocks


def logbook_events(
    datasets: Sequence[DataSet],
    meter: str,
    *,
    tz: tzinfo = UTC,
    received_time: datetime | None = None,
    source: str = "",
    name: str = LOGBOOK,
) -> list[MeterEvent]:
    """One MeterEvent per status bit of each logbook entry (an entry without a known bit:
    one OTHER event), code ``P.98:<bit in hex>``."""
    received = received_time or datetime.now(UTC)
    events: list[MeterEvent] = []
    for ds in datasets:
        if ds.address != name or not ds.values:
            continue
        where = f"data line {ds.line}"
        time = parse_stamp(ds.values[0].value, tz)
        if time is None:
            raise FrameError(f"{where}: {ds.values[0].value!r} is not a logbook time stamp",
                             field=where)
        status = _status(ds.values[1].value, ds.line) if len(ds.values) > 1 else 0
        extra = " ".join(v.encode() for v in ds.values[4:])
        bits = [bit for bit in STATUS_BITS if status & bit]
        unknown = status & ~sum(STATUS_BITS)
        for bit in bits:
            kind, severity, text, _ = STATUS_BITS[bit]
            events.append(MeterEvent(
                meter=meter, code=f"{name}:{bit:08X}", kind=kind, severity=severity,
                time=time, text=f"{text} {extra}".strip(), received_time=received,
                source=source,
            ))
        if unknown or not bits:
            events.append(MeterEvent(
                meter=meter, code=f"{name}:{unknown:08X}", kind=EventKind.OTHER,
                severity=Severity.INFO, time=time,
                text=f"logbook entry, status {status:08X} {extra}".strip(),
                received_time=received, source=source,
            ))
    return events


__all__ = [
    "LOGBOOK",
    "PROFILE",
    "STATUS_BITS",
    "format_stamp",
    "logbook_events",
    "parse_stamp",
    "profile_blocks",
    "range_argument",
    "status_quality",
]
