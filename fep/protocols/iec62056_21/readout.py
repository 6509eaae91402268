"""IEC 62056-21 readout data: data lines -> data sets -> fep Readings (OBIS code, value, unit,
meter time), and back to readout text for the simulator and round-trip tests.

A data set is ``address(value*unit)`` with one or more ``(...)`` value groups; a data line
holds one or more data sets and ends with CRLF; the readout ends with ``!`` CRLF. Sans-IO.
``parse_readout`` raises FrameError (naming the line and offset) and nothing else;
``to_readings`` raises nothing (fuzzed by tests/fuzz).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation

import attrs

from fep.errors import FrameError
from fep.model import ObisCode, Quality, Reading, Unit, utcnow

# Characters the standard allows in an address (OBIS short forms, ``*F``/``&F`` billing
# period suffixes, manufacturer codes such as ``C.1.0`` or ``P.01``).
_ADDRESS_CHARS = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.:-*&_ ")
_ADDRESS_BYTES = bytes(sorted(_ADDRESS_CHARS))
# The bytes a value group may hold: printable ASCII but '('.
_VALUE_BYTES = bytes(b for b in range(0x20, 0x7F) if b != 0x28)
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")
# YYMMDDhhmm or YYMMDDhhmmss, with the DSMR season letter (S summer, W winter) optional.
_STAMP_RE = re.compile(r"^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?([SW])?$")
_TIME_RE = re.compile(r"^(\d{2}):?(\d{2}):?(\d{2})?$")
_DATE_RE = re.compile(r"^(?:\d)?(\d{2})-?(\d{2})-?(\d{2})$")

CLOCK_TIME = ObisCode(1, 0, 0, 9, 1)
CLOCK_DATE = ObisCode(1, 0, 0, 9, 2)
# Where meters put their serial number (device address / equipment id).
SERIAL_CODES = (ObisCode(1, 0, 0, 0, 0), ObisCode(1, 0, 96, 1, 0), ObisCode(1, 0, 96, 1, 1))


@attrs.frozen
class DataValue:
    """One ``(value*unit)`` group; ``unit`` is None when the group has no ``*``."""

    value: str
    unit: str | None = None

    def encode(self) -> str:
        return f"({self.value}*{self.unit})" if self.unit is not None else f"({self.value})"


@attrs.frozen
class DataSet:
    """One address and its value groups, with the data line it came from (1-based)."""

    address: str
    values: tuple[DataValue, ...]
    line: int = 0

    def encode(self) -> str:
        return self.address + "".join(v.encode() for v in self.values)

    @property
    def obis(self) -> ObisCode | None:
        """The address as an OBIS code (A=1, B=0 filled in), None if it is not one."""
        try:
            return ObisCode.parse(self.address, a=1, b=0)
        except ValueError:
            return None


@attrs.frozen
class Readout:
    """A parsed readout block: its data sets in order."""

    datasets: tuple[DataSet, ...]

    def find(self, *codes: ObisCode) -> DataSet | None:
        """The first data set whose address is one of ``codes`` (F ignored)."""
        wanted = {(c.a, c.b, c.c, c.d, c.e) for c in codes}
        for ds in self.datasets:
            obis = ds.obis
            if obis is not None and (obis.a, obis.b, obis.c, obis.d, obis.e) in wanted:
                return ds
        return None

    def serial(self) -> str | None:
        """The meter's serial number from 0.0.0 / C.1.0 / 96.1.0, if the readout has one."""
        for code in SERIAL_CODES:
            ds = self.find(code)
            if ds is not None and ds.values and ds.values[0].value.strip():
                return ds.values[0].value.strip()
        return None


def _line_error(message: str, line_no: int, offset: int) -> FrameError:
    return FrameError(
        f"data line {line_no}, byte {offset}: {message}",
        offset=offset,
        field=f"data line {line_no}",
    )


def parse_readout(data: bytes) -> Readout:
    """Parse the bytes between STX and ETX. Lines end with CRLF (a bare LF is tolerated);
    the ``!`` end line is required. Offsets in errors count from the first byte after STX."""
    return _parse_lines(data, require_end=True)


def parse_data_sets(data: bytes) -> Readout:
    """Parse a programming-mode answer (the bytes between STX and ETX): data lines as in a
    readout, without the ``!`` end line (tolerated when present); the last line may lack
    its CRLF."""
    if data and not data.endswith(b"\n"):
        data += b"\r\n"
    return _parse_lines(data, require_end=False)


def _parse_lines(data: bytes, *, require_end: bool) -> Readout:
    datasets: list[DataSet] = []
    pos = 0
    line_no = 0
    ended = False
    n = len(data)
    while pos < n:
        end = data.find(b"\n", pos)
        if end < 0:
            raise _line_error("data line without CRLF", line_no + 1, n)
        line_no += 1
        stop = end - 1 if end > pos and data[end - 1] == 0x0D else end
        line = data[pos:stop]
        if ended:
            if line.strip():
                raise _line_error("data after the end line '!'", line_no, pos)
        elif line == b"!":
            ended = True
        elif line:
            datasets.extend(_parse_line(line, line_no, pos))
        pos = end + 1
    if require_end and not ended:
        raise _line_error("readout has no end line '!'", max(line_no, 1), n)
    return Readout(tuple(datasets))


def _parse_line(line: bytes, line_no: int, base: int) -> list[DataSet]:
    sets: list[DataSet] = []
    i = 0
    n = len(line)
    while i < n:
        start = i
        paren = line.find(b"(", i)
        i = n if paren < 0 else paren
        if line[start:i].translate(None, _ADDRESS_BYTES):  # a byte no address has
            bad = next(k for k in range(start, i) if line[k] not in _ADDRESS_CHARS)
            raise _line_error(f"unexpected byte 0x{line[bad]:02X} in address", line_no, base + bad)
        address = line[start:i].decode("ascii").strip()
        if i >= n:
            raise _line_error(f"expected '(' after address {address!r}", line_no, base + i)
        values: list[DataValue] = []
        while i < n and line[i] == 0x28:
            close = line.find(b")", i + 1)
            if close < 0:
                raise _line_error("value without closing ')'", line_no, base + i)
            raw = line[i + 1 : close]
            if raw.translate(None, _VALUE_BYTES):  # a control byte, '(' or above 0x7E
                bad = next(k for k, b in enumerate(raw) if b < 0x20 or b > 0x7E or b == 0x28)
                raise _line_error(
                    f"unexpected byte 0x{raw[bad]:02X} in value", line_no, base + i + 1 + bad
                )
            text = raw.decode("ascii")
            value, star, unit = text.partition("*")
            values.append(DataValue(value, unit if star else None))
            i = close + 1
        # A line of bare value groups (profile readouts print long value lists this way)
        # gives a data set with an empty address: kept, but no OBIS reading.
        sets.append(DataSet(address, tuple(values), line_no))
    return sets


def encode_readout(datasets: Iterable[DataSet]) -> bytes:
    """Readout text (without STX/ETX): one data set per line, then ``!`` CRLF."""
    lines = [ds.encode() for ds in datasets]
    return ("".join(f"{line}\r\n" for line in lines) + "!\r\n").encode("ascii")


# ---------------------------------------------------------------------------
# Data sets -> Readings
# ---------------------------------------------------------------------------


def _local(naive: datetime, tz: tzinfo) -> datetime:
    return naive.replace(tzinfo=tz).astimezone(UTC)


def parse_timestamp(text: str, tz: tzinfo = UTC) -> datetime | None:
    """``YYMMDDhhmm[ss][S|W]`` meter-local -> aware UTC; None if ``text`` is not one."""
    m = _STAMP_RE.match(text.strip())
    if m is None:
        return None
    yy, mo, dd, hh, mi, ss, _season = m.groups()
    try:
        naive = datetime(2000 + int(yy), int(mo), int(dd), int(hh), int(mi), int(ss or 0))
    except ValueError:
        return None
    return _local(naive, tz)


def meter_clock(readout: Readout, tz: tzinfo) -> datetime | None:
    """The meter clock from 0.9.1 (time) and 0.9.2 (date) in ``tz`` as UTC; None when the
    readout lacks either or they cannot be read."""
    t = readout.find(CLOCK_TIME)
    d = readout.find(CLOCK_DATE)
    if t is None or d is None or not t.values or not d.values:
        return None
    tm = _TIME_RE.match(t.values[0].value.strip())
    dm = _DATE_RE.match(d.values[0].value.strip())
    if tm is None or dm is None:
        return None
    try:
        naive = datetime.combine(
            date(2000 + int(dm[1]), int(dm[2]), int(dm[3])),
            time(int(tm[1]), int(tm[2]), int(tm[3] or 0)),
        )
    except ValueError:
        return None
    return _local(naive, tz)


def parse_unit(symbol: str) -> tuple[Unit, int]:
    """A readout unit such as ``kWh``, ``A``, ``kA``, ``kvarh`` -> (DLMS unit, scaler)."""
    return Unit.parse_symbol(symbol)


def _to_value(dv: DataValue) -> tuple[Decimal | str | None, Unit | None, int]:
    text = dv.value.strip()
    if dv.unit is not None and _NUMBER_RE.match(text):
        try:
            unit, scaler = parse_unit(dv.unit)
        except ValueError:
            return Decimal(text), None, 0
        return Decimal(text), unit, scaler
    if dv.unit is not None and not text:
        return None, None, 0
    # Without a unit the readout says nothing about type: serial numbers, status words and
    # codes keep their leading zeros as text.
    return (text if text else None), None, 0


def to_readings(
    readout: Readout,
    meter: str,
    *,
    tz: tzinfo = UTC,
    received_time: datetime | None = None,
    source: str = "",
) -> list[Reading]:
    """One Reading per data set whose address is an OBIS code.

    The first value group is the value (or the first group with a unit, when a timestamp
    comes first as in DSMR); a ``YYMMDDhhmm`` group gives that reading's meter_time; other
    readings get the meter clock (0.9.1 + 0.9.2) when the readout holds it. Meter-local times
    are read in ``tz`` and kept in UTC.
    """
    received = received_time or utcnow()
    clock = meter_clock(readout, tz)
    readings: list[Reading] = []
    for ds in readout.datasets:
        obis = ds.obis
        if obis is None or not ds.values:
            continue
        main: DataValue = ds.values[0]
        stamp: datetime | None = None
        with_unit = [v for v in ds.values if v.unit is not None]
        if with_unit:
            main = with_unit[0]
        for v in ds.values:
            if v is main:
                continue
            found = parse_timestamp(v.value, tz)
            if found is not None:
                stamp = found
                break
        if len(ds.values) > 1 and main is ds.values[0] and not with_unit and stamp is not None:
            # (timestamp)(value) without units: the value is the group that is not the stamp.
            others = [v for v in ds.values if parse_timestamp(v.value, tz) is None]
            if others:
                main = others[0]
        try:
            value, unit, scaler = _to_value(main)
        except InvalidOperation:
            value, unit, scaler = main.value.strip(), None, 0
        readings.append(
            Reading(
                meter=meter,
                obis=obis,
                value=value,
                unit=unit,
                scaler=scaler,
                meter_time=stamp or clock,
                received_time=received,
                quality=Quality.MISSING if value is None else Quality.OK,
                source=source,
                native_id=ds.address,
            )
        )
    return readings


def datasets_from_pairs(pairs: Sequence[tuple[str, str]]) -> tuple[DataSet, ...]:
    """Build data sets from ``(address, "value*unit")`` pairs (simulator convenience)."""
    out = []
    for address, text in pairs:
        value, star, unit = text.partition("*")
        out.append(DataSet(address, (DataValue(value, unit if star else None),)))
    return tuple(out)
