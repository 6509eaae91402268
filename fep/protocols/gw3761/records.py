"""What a concentrator's answers mean as fep records: each point's data becomes Readings,
IntervalBlocks and MeterEvents of the meter at that point (``source`` = the concentrator).

``points`` maps a measuring point Pn to fep's meter id; P0 (the terminal itself) and points
without a meter are filed under the concentrator's own id (or, with ``name_points``, under
``<concentrator>/P<n>``). Terminal times are local wall
clock in ``tz`` (China Standard Time unless the concentrator says otherwise) and become UTC
here. ``native_id`` keeps the protocol's name of each value (``0C:F129``, ``0D:F161``).

OBIS codes (fep's choices where Q/GDW 1376.1 has none):

- energy indications: forward active 1.8.T, forward reactive 3.8.T, quadrant I reactive
  5.8.T, quadrant IV 8.8.T (T = 0 total, 1..M tariffs); values in Wh/varh with scaler 3.
  Daily frozen values (class 2 Td_d) are filed at 00:00 of their day, monthly ones at 00:00
  of the month's first day: the register as it stood then.
- maximum demand 1.6.T (W, scaler 3) at the time it occurred.
- instantaneous (C1 F25): active power 1/21/41/61.7.0, reactive 3/23/43/63.7.0, power
  factor 13/33/53/73.7.0 (a ratio, the standard's percent divided by 100), voltage
  32/52/72.7.0, current 31/51/71.7.0, neutral current 91.7.0, apparent 9/29/49/69.7.0.
- curves: F81-F84 active power as 1/21/41/61.7.0, F89-F91 voltage, F92-F94 current, F101
  forward active energy per interval 1.29.0, F105 power factor 13.7.0; a point stored at
  time t closes the interval [t - period, t) (as fep's DL/T 645 load records), so the
  block starts one period before Td_c's first point (missing points: None, MISSING).
- terminal clock (C1 F2): 0-0:1.0.0 with the clock's UTC time as text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Final

from fep.model import (
    UNITS,
    EventKind,
    IntervalBlock,
    MeterEvent,
    ObisCode,
    Quality,
    Reading,
    Record,
    Severity,
    Unit,
    utcnow,
)
from fep.protocols.gw3761.formats import Clock, TimeFields
from fep.protocols.gw3761.frames import Afn
from fep.protocols.gw3761.services import (
    DENSITY_MINUTES,
    Curve,
    Data,
    Demand,
    EventRecord,
    Events,
    ForwardIndications,
    Frozen,
    Indications,
    Instantaneous,
    Item,
)

DEFAULT_TERMINAL_TZ: Final[tzinfo] = timezone(timedelta(hours=8), "UTC+08:00")

WH, VARH, W, VAR, VA = UNITS[30], UNITS[32], UNITS[27], UNITS[29], UNITS[28]
VOLT, AMPERE = UNITS[35], UNITS[33]

# (AFN, Fn) of indications -> OBIS C of the quantity and its unit.
_INDICATION_C: Final[dict[tuple[int, int], tuple[int, Unit]]] = {
    (Afn.CLASS1, 129): (1, WH), (Afn.CLASS1, 130): (3, VARH),
    (Afn.CLASS2, 161): (1, WH), (Afn.CLASS2, 162): (3, VARH),
    (Afn.CLASS2, 177): (1, WH), (Afn.CLASS2, 178): (3, VARH),
}  # fmt: skip

# C1 F25 field -> (OBIS C, unit, scaler, divide by).
_INSTANT: Final[dict[str, tuple[int, Unit | None, int, int]]] = {
    "p": (1, W, 3, 1), "pa": (21, W, 3, 1), "pb": (41, W, 3, 1), "pc": (61, W, 3, 1),
    "q": (3, VAR, 3, 1), "qa": (23, VAR, 3, 1), "qb": (43, VAR, 3, 1), "qc": (63, VAR, 3, 1),
    "pf": (13, None, 0, 100), "pfa": (33, None, 0, 100), "pfb": (53, None, 0, 100),
    "pfc": (73, None, 0, 100),
    "ua": (32, VOLT, 0, 1), "ub": (52, VOLT, 0, 1), "uc": (72, VOLT, 0, 1),
    "ia": (31, AMPERE, 0, 1), "ib": (51, AMPERE, 0, 1), "ic": (71, AMPERE, 0, 1),
    "i0": (91, AMPERE, 0, 1),
    "s": (9, VA, 3, 1), "sa": (29, VA, 3, 1), "sb": (49, VA, 3, 1), "sc": (69, VA, 3, 1),
}  # fmt: skip

# Class 2 curves: Fn -> (OBIS C, D, unit, scaler, divide by).
CURVES: Final[dict[int, tuple[int, int, Unit | None, int, int]]] = {
    81: (1, 7, W, 3, 1), 82: (21, 7, W, 3, 1), 83: (41, 7, W, 3, 1), 84: (61, 7, W, 3, 1),
    89: (32, 7, VOLT, 0, 1), 90: (52, 7, VOLT, 0, 1), 91: (72, 7, VOLT, 0, 1),
    92: (31, 7, AMPERE, 0, 1), 93: (51, 7, AMPERE, 0, 1), 94: (71, 7, AMPERE, 0, 1),
    101: (1, 29, WH, 3, 1), 105: (13, 7, None, 0, 100),
}  # fmt: skip

# ERC -> (kind, severity) of the record when it starts a condition (ended: INFO).
ERC_KINDS: Final[dict[int, tuple[EventKind, Severity, str]]] = {
    1: (EventKind.OTHER, Severity.INFO, "data initialised or software version changed"),
    3: (EventKind.OTHER, Severity.INFO, "parameters changed"),
    12: (EventKind.CLOCK_DEVIATION, Severity.MINOR, "meter clock out of tolerance"),
    13: (EventKind.METER_ERROR, Severity.MAJOR, "meter fault"),
    21: (EventKind.METER_ERROR, Severity.CRITICAL, "terminal fault"),
    31: (EventKind.COMMUNICATION_FAILURE, Severity.MINOR, "RS-485 meter reading failed"),
}


class RecordMapper:
    """Turns decoded answers of one concentrator into records."""

    def __init__(
        self,
        concentrator: str,
        points: Mapping[int, str] | None = None,
        tz: tzinfo = DEFAULT_TERMINAL_TZ,
        *,
        name_points: bool = False,
    ) -> None:
        self.concentrator = concentrator
        self.points = dict(points or {})
        self.tz = tz
        # Points without a meter in ``points``: filed as ``<concentrator>/P<n>`` when set,
        # else under the concentrator.
        self.name_points = name_points

    def meter(self, point: int | None) -> str:
        if not point:
            return self.concentrator
        if point in self.points:
            return self.points[point]
        return f"{self.concentrator}/P{point}" if self.name_points else self.concentrator

    def utc(self, local: datetime | None) -> datetime | None:
        if local is None:
            return None
        return local.replace(tzinfo=self.tz).astimezone(UTC)

    def records(self, data: Data, received: datetime | None = None) -> list[Record]:
        received = received or utcnow()
        out: list[Record] = []
        for item in data.items:
            out += self.item_records(data.afn, item, received)
        return out

    def item_records(self, afn: int, item: Item, received: datetime) -> list[Record]:
        v = item.value
        meter = self.meter(item.point)
        native = f"{afn:02X}:F{item.fn}"
        if isinstance(v, Indications) and (afn, item.fn) in _INDICATION_C:
            c, unit = _INDICATION_C[(afn, item.fn)]
            return self._indications(meter, c, unit, v, self.utc(v.read_time), received, native)
        if isinstance(v, Frozen):
            at = self.utc(datetime.combine(v.day, time()))
            if isinstance(v.data, Indications) and (afn, item.fn) in _INDICATION_C:
                c, unit = _INDICATION_C[(afn, item.fn)]
                return self._indications(meter, c, unit, v.data, at, received, native)
            if isinstance(v.data, Demand):
                return self._demand(meter, v.day, v.data, received, native)
            return []
        if isinstance(v, ForwardIndications):
            at = self.utc(v.read_time)
            out: list[Record] = []
            for c, unit, values in ((1, WH, v.active), (3, VARH, v.reactive), (5, VARH, v.q1),
                                    (8, VARH, v.q4)):  # fmt: skip
                out += self._indications(meter, c, unit, Indications(v.read_time, values), at,
                                         received, native)  # fmt: skip
            return out
        if isinstance(v, Instantaneous):
            return self._instantaneous(meter, v, received, native)
        if isinstance(v, Curve) and item.fn in CURVES:
            return [self._curve(meter, item.fn, v, received, native)]
        if isinstance(v, Clock) and afn == Afn.CLASS1:
            at = self.utc(v.time)
            assert at is not None
            return [Reading(self.concentrator, ObisCode(0, 0, 1, 0, 0), at.isoformat(),
                            meter_time=at, received_time=received, source=self.concentrator,
                            native_id=native)]  # fmt: skip
        if isinstance(v, Events):
            return list(self.events(v.records, received))
        return []

    def _indications(
        self, meter: str, c: int, unit: Unit, v: Indications, at: datetime | None,
        received: datetime, native: str,
    ) -> list[Record]:
        out: list[Record] = []
        for tariff, value in enumerate(v.values):
            if value is None:
                continue
            out.append(Reading(meter, ObisCode(1, 0, c, 8, tariff), value, unit, 3, at,
                               received, source=self.concentrator, native_id=native))  # fmt: skip
        return out

    def _demand(self, meter: str, day: date, v: Demand, received: datetime,
                native: str) -> list[Record]:  # fmt: skip
        out: list[Record] = []
        for tariff, (value, when) in enumerate(v.values):
            if value is None:
                continue
            at = self.utc(_with_year(when, day)) if when is not None else None
            out.append(Reading(meter, ObisCode(1, 0, 1, 6, tariff), value, W, 3, at, received,
                               source=self.concentrator, native_id=native))  # fmt: skip
        return out

    def _instantaneous(self, meter: str, v: Instantaneous, received: datetime,
                       native: str) -> list[Record]:  # fmt: skip
        at = self.utc(v.read_time)
        out: list[Record] = []
        for key, value in v.values.items():
            if value is None:
                continue
            c, unit, scaler, divide = _INSTANT[key]
            out.append(Reading(meter, ObisCode(1, 0, c, 7, 0), value / divide, unit, scaler, at,
                               received, source=self.concentrator, native_id=native))  # fmt: skip
        return out

    def _curve(self, meter: str, fn: int, v: Curve, received: datetime,
               native: str) -> IntervalBlock:  # fmt: skip
        c, d, unit, scaler, divide = CURVES[fn]
        period = timedelta(minutes=DENSITY_MINUTES.get(v.density, 15))
        first = self.utc(v.start)
        assert first is not None
        # A point closes the interval before its time (as DL/T 645 load records do).
        start = first - period
        values = tuple(None if x is None else x / divide for x in v.values)
        statuses = tuple(Quality.MISSING if x is None else Quality.OK for x in v.values)
        return IntervalBlock(meter, ObisCode(1, 0, c, d, 0), start, period,
                             values, statuses, unit, scaler, received,
                             source=self.concentrator)  # fmt: skip

    def events(self, records: Iterable[EventRecord], received: datetime) -> Iterable[MeterEvent]:
        for rec in records:
            when = self.utc(rec.time) or received
            if rec.erc == 14:
                yield MeterEvent(self.concentrator, "ERC14", EventKind.POWER_OUTAGE,
                                 Severity.MAJOR, when, "terminal power off", received,
                                 self.concentrator)  # fmt: skip
                restored = self.utc(rec.fields.get("restored"))
                if restored is not None:
                    yield MeterEvent(self.concentrator, "ERC14.on", EventKind.POWER_RESTORED,
                                     Severity.INFO, restored, "terminal power on", received,
                                     self.concentrator)  # fmt: skip
                continue
            if rec.erc == 10:
                kind = EventKind.PHASE_LOSS if (rec.fields.get("flags", 0) >> 6) == 1 \
                    else EventKind.UNDER_VOLTAGE  # fmt: skip
                severity, text = Severity.MAJOR, "voltage circuit fault"
            else:
                kind, severity, text = ERC_KINDS.get(
                    rec.erc, (EventKind.OTHER, Severity.INFO, f"ERC{rec.erc}"))
            meter = self.meter(rec.point)
            code = f"ERC{rec.erc}"
            if rec.start is False:
                severity, text, code = Severity.INFO, text + " ended", code + ".end"
            yield MeterEvent(meter, code, kind, severity, when, text, received,
                             self.concentrator)  # fmt: skip


def _with_year(when: TimeFields, day: date) -> datetime:
    """A.17 (month, day, hour, minute) in the year that puts it on or before ``day``."""
    assert when.month is not None and when.day is not None
    year = day.year if (when.month, when.day) <= (day.month, day.day) else day.year - 1
    try:
        return datetime(year, when.month, when.day, when.hour or 0, when.minute or 0)
    except ValueError:
        return datetime(day.year, day.month, day.day)


__all__ = ["CURVES", "DEFAULT_TERMINAL_TZ", "ERC_KINDS", "RecordMapper"]
