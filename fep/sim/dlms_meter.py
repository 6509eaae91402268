"""The COSEM object model of a simulated DLMS meter: clock, registers that advance with time,
a load profile with history, an event log, the association's object list, disconnect
control, image transfer, push and security setup, and its power supply (`power_down`,
`power_up`). Sans-IO: the server in
``fep.protocols.dlms.server`` calls ``get``/``set``/``action``; ``fep.sim.dlms`` serves it.

Every value is a function of the clock, so tests can compute what a read must return:
``energy_wh(t)`` is the import register at time ``t``. A meter given an ``IntervalTable``
serves that table as its load profile instead (a given load, intervals it did not record).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import attrs

from fep.errors import FrameError
from fep.model import ObisCode, Unit
from fep.protocols.dlms import axdr
from fep.protocols.dlms.apdu import (
    AccessSelection,
    AttributeDescriptor,
    DataAccessResult,
    MethodDescriptor,
)
from fep.protocols.dlms.axdr import CosemDateTime, Data, DataType
from fep.protocols.dlms.cosem import (
    CaptureObject,
    ControlState,
    CosemClass,
    ObjectListEntry,
    ScalerUnit,
    unwrap_key_transfer,
)

# The simulated energy counters start at this instant (values grow from there).
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
IMPORT_W = 1500.0  # mean import power of the simulated load, W
EXPORT_W = 200.0

O = ObisCode.parse  # noqa: E741 - short for the table below

CLOCK = O("0.0.1.0.0.255")
LOGICAL_DEVICE_NAME = O("0.0.42.0.0.255")
SERIAL_NUMBER = O("0.0.96.1.0.255")
ACTIVE_IMPORT = O("1.0.1.8.0.255")
ACTIVE_IMPORT_T1 = O("1.0.1.8.1.255")
ACTIVE_IMPORT_T2 = O("1.0.1.8.2.255")
ACTIVE_EXPORT = O("1.0.2.8.0.255")
VOLTAGE_L1 = O("1.0.32.7.0.255")
CURRENT_L1 = O("1.0.31.7.0.255")
ACTIVE_POWER = O("1.0.1.7.0.255")
FREQUENCY = O("1.0.14.7.0.255")
MAX_DEMAND = O("1.0.1.6.0.255")
DEMAND = O("1.0.1.4.0.255")
AMR_STATUS = O("0.0.96.10.1.255")
LOAD_PROFILE = O("1.0.99.1.0.255")
# Active energy imported in the last interval (OBIS D = 29): an IntervalTable's column.
INTERVAL_IMPORT = O("1.0.1.29.0.255")
EVENT_CODE = O("0.0.96.11.0.255")
EVENT_LOG = O("0.0.99.98.0.255")
ASSOCIATION = O("0.0.40.0.0.255")
IMAGE_TRANSFER = O("0.0.44.0.0.255")
PUSH_SETUP = O("0.0.25.9.0.255")
SECURITY_SETUP = O("0.0.43.0.0.255")
DISCONNECT = O("0.0.96.3.10.255")

WH = Unit.by_code(30)
W = Unit.by_code(27)
V = Unit.by_code(35)
A = Unit.by_code(33)
HZ = Unit.by_code(44)

# Registers: logical name -> (class, scaler, unit, value(meter, t) in base units).
_Value = Callable[["SimulatedDlmsMeter", datetime], float]


def energy_wh(t: datetime, power_w: float = IMPORT_W) -> int:
    """The simulated energy register at ``t``, in Wh."""
    return int((t - EPOCH).total_seconds() * power_w / 3600)


@attrs.define
class _RegisterDef:
    class_id: int
    scaler: int
    unit: Unit
    value: _Value
    type: DataType = DataType.DOUBLE_LONG_UNSIGNED


REGISTERS: dict[ObisCode, _RegisterDef] = {
    ACTIVE_IMPORT: _RegisterDef(3, 0, WH, lambda m, t: energy_wh(t)),
    ACTIVE_IMPORT_T1: _RegisterDef(3, 0, WH, lambda m, t: energy_wh(t) * 2 // 3),
    ACTIVE_IMPORT_T2: _RegisterDef(3, 0, WH, lambda m, t: energy_wh(t) - energy_wh(t) * 2 // 3),
    ACTIVE_EXPORT: _RegisterDef(3, 0, WH, lambda m, t: energy_wh(t, EXPORT_W)),
    VOLTAGE_L1: _RegisterDef(3, -1, V, lambda m, t: 2301 + t.minute % 7, DataType.LONG_UNSIGNED),
    CURRENT_L1: _RegisterDef(3, -2, A, lambda m, t: 652 + t.second % 5, DataType.LONG_UNSIGNED),
    ACTIVE_POWER: _RegisterDef(3, 0, W, lambda m, t: IMPORT_W),
    FREQUENCY: _RegisterDef(3, -2, HZ, lambda m, t: 5000, DataType.LONG_UNSIGNED),
    MAX_DEMAND: _RegisterDef(4, 0, W, lambda m, t: 4200),
    DEMAND: _RegisterDef(5, 0, W, lambda m, t: IMPORT_W),
}

LOAD_PROFILE_COLUMNS = (
    CaptureObject(8, CLOCK, 2),
    CaptureObject(1, AMR_STATUS, 2),
    CaptureObject(3, ACTIVE_IMPORT, 2),
    CaptureObject(3, ACTIVE_EXPORT, 2),
)
EVENT_LOG_COLUMNS = (CaptureObject(8, CLOCK, 2), CaptureObject(1, EVENT_CODE, 2))


@attrs.frozen
class IntervalTable:
    """A load profile given as a table instead of the simulated registers: ``energy(start)``
    is the active energy (Wh) of the interval that starts at ``start``, captured in register
    ``obis`` (class 3, scaler 0), or None where the meter recorded nothing (no row in the
    buffer for it). The function may change its answers between reads (a meter that gives
    intervals it withheld before)."""

    energy: Callable[[datetime], int | None]
    obis: ObisCode = INTERVAL_IMPORT

    def columns(self) -> tuple[CaptureObject, ...]:
        return (CaptureObject(8, CLOCK, 2), CaptureObject(1, AMR_STATUS, 2),
                CaptureObject(3, self.obis, 2))


@attrs.define
class SimulatedDlmsMeter:
    """One simulated meter's COSEM objects.

    ``now`` gives the meter's time (UTC); ``capture_period`` the load profile's period in
    seconds and ``history`` how far back it keeps entries.
    """

    serial: str = "FEP0000001"
    now: Callable[[], datetime] = attrs.field(factory=lambda: lambda: datetime.now(UTC))
    capture_period: int = 900
    history: timedelta = timedelta(days=10)
    deviation: int = 0  # minutes local to UTC, Blue Book sign (CET: -60)
    system_title: bytes = b"FEPSIM\x00\x01"
    events: list[tuple[datetime, int]] = attrs.field(factory=list)
    control_state: ControlState = ControlState.CONNECTED
    clock_offset: timedelta = timedelta(0)
    image: dict[str, object] = attrs.field(factory=dict)
    # Set by a SET of the clock: what the meter's clock reads minus real time.
    client_system_title: bytes | None = None
    # Demand register resets (register, when) and the push destination last set.
    resets: list[tuple[ObisCode, datetime]] = attrs.field(factory=list)
    push_destination: str | None = None
    # The master key (KEK) new keys arrive wrapped with (security setup key_transfer), and
    # the keys so received, by key_id: the meter uses them from its next association.
    kek: bytes | None = attrs.field(default=None, repr=False)
    transferred_keys: dict[int, bytes] = attrs.field(factory=dict, repr=False)
    # The load profile served from a table instead of the registers (None: the registers).
    intervals: IntervalTable | None = None
    # The supply: while not ``powered`` the meter neither answers nor captures; the spans
    # it was without power, (down, up), up None while still down.
    powered: bool = True
    power_cuts: list[tuple[datetime, datetime | None]] = attrs.field(factory=list)
    # The interval ending at 03:00 each day flagged power down with no event logged (a fixed
    # status for tests of interval flags); False: flags only from `power_cuts`.
    daily_power_flag: bool = True

    # -- time -----------------------------------------------------------------------------

    def meter_time(self) -> datetime:
        return self.now() + self.clock_offset

    def _stamp(self, t: datetime) -> Data:
        return axdr.date_time(CosemDateTime.from_datetime(t, deviation=self.deviation))

    # -- power supply ---------------------------------------------------------------------

    def power_down(self) -> None:
        """The supply fails at the meter's time: it logs the standard event 1 (power down),
        stops answering and capturing until `power_up`."""
        if self.powered:
            when = self.meter_time()
            self.powered = False
            self.events.append((when, 1))
            self.power_cuts.append((when, None))

    def power_up(self) -> None:
        """The supply is back: the meter logs the standard event 2 (power up), answers again,
        and its first load profile entry after the cut has the power-down status bit."""
        if not self.powered:
            when = self.meter_time()
            self.powered = True
            self.events.append((when, 2))
            down, _ = self.power_cuts[-1]
            self.power_cuts[-1] = (down, when)

    def _unpowered(self, t: datetime) -> bool:
        return any(down <= t and (up is None or t < up) for down, up in self.power_cuts)

    def _power_failed_before(self, t: datetime) -> bool:
        """Whether the capture period ending at ``t`` saw the supply come back (IDIS status
        bit 7, PDN: a power down in the capture period)."""
        period = timedelta(seconds=self.capture_period)
        return any(up is not None and t - period < up <= t for _, up in self.power_cuts)

    # -- object list ----------------------------------------------------------------------

    def object_list(self) -> list[ObjectListEntry]:
        entries = [
            ObjectListEntry(
                8, 0, CLOCK, tuple((i, 3 if i == 2 else 1) for i in range(1, 10)), ((1, 1), (6, 1))
            ),
            ObjectListEntry(1, 0, LOGICAL_DEVICE_NAME, ((1, 1), (2, 1))),
            ObjectListEntry(1, 0, SERIAL_NUMBER, ((1, 1), (2, 1))),
            ObjectListEntry(1, 0, AMR_STATUS, ((1, 1), (2, 1))),
            ObjectListEntry(1, 0, EVENT_CODE, ((1, 1), (2, 1))),
        ]
        for obis, reg in REGISTERS.items():
            count = {3: 3, 4: 5, 5: 9}[reg.class_id]
            entries.append(
                ObjectListEntry(reg.class_id, 0, obis, tuple((i, 1) for i in range(1, count + 1)))
            )
        if self.intervals is not None and self.intervals.obis not in REGISTERS:
            entries.append(ObjectListEntry(3, 0, self.intervals.obis, ((1, 1), (2, 1), (3, 1))))
        entries += [
            ObjectListEntry(7, 1, LOAD_PROFILE, tuple((i, 1) for i in range(1, 9))),
            ObjectListEntry(7, 1, EVENT_LOG, tuple((i, 1) for i in range(1, 9))),
            ObjectListEntry(15, 1, ASSOCIATION, tuple((i, 1) for i in range(1, 9)), ((1, 1),)),
            ObjectListEntry(
                18,
                0,
                IMAGE_TRANSFER,
                tuple((i, 1) for i in range(1, 8)),
                tuple((i, 1) for i in range(1, 5)),
            ),
            ObjectListEntry(40, 0, PUSH_SETUP, tuple((i, 1) for i in range(1, 8)), ((1, 1),)),
            ObjectListEntry(
                64, 0, SECURITY_SETUP, tuple((i, 1) for i in range(1, 6)), ((1, 1), (2, 1))
            ),
            ObjectListEntry(
                70, 0, DISCONNECT, tuple((i, 1) for i in range(1, 5)), ((1, 1), (2, 1))
            ),
        ]
        return entries

    # -- profile buffers --------------------------------------------------------------------

    def profile_times(self, start: datetime | None, end: datetime | None) -> list[datetime]:
        """Capture times of the load profile within [start, end] (inclusive), oldest first."""
        period = timedelta(seconds=self.capture_period)
        now = self.meter_time()
        last = EPOCH + ((now - EPOCH) // period) * period
        first = last - self.history + period
        lo = max(first, start) if start else first
        hi = min(last, end) if end else last
        if lo > hi:
            return []
        k = -((EPOCH - lo) // period)  # ceil((lo - EPOCH) / period)
        t = EPOCH + k * period
        times = []
        while t <= hi:
            # Nothing is captured while the meter is without power.
            if not self._unpowered(t):
                times.append(t)
            t += period
        if self.intervals is not None:
            # A table's meter has a row only for the intervals it recorded.
            energy = self.intervals.energy
            times = [t for t in times if energy(t - period) is not None]
        return times

    def profile_columns(self) -> tuple[CaptureObject, ...]:
        """The load profile's capture objects: the table's when one is given."""
        return LOAD_PROFILE_COLUMNS if self.intervals is None else self.intervals.columns()

    def load_profile_row(self, t: datetime) -> Data:
        if self.intervals is not None:
            value = self.intervals.energy(t - timedelta(seconds=self.capture_period))
            return axdr.structure(self._stamp(t), axdr.unsigned(0),
                                  axdr.double_long_unsigned(value or 0))
        # A power cut flagged on the interval ending at 03:00 every day (to test statuses),
        # and on the first interval after a power cut of the simulated supply.
        daily = self.daily_power_flag and t.hour == 3 and t.minute == 0
        status = 0x80 if daily or self._power_failed_before(t) else 0
        return axdr.structure(
            self._stamp(t),
            axdr.unsigned(status),
            axdr.double_long_unsigned(energy_wh(t)),
            axdr.double_long_unsigned(energy_wh(t, EXPORT_W)),
        )

    def _buffer(self, access: AccessSelection | None) -> Data | int:
        start = end = None
        times_all: list[datetime] | None = None
        if access is not None:
            if access.selector == 1:
                try:
                    start = axdr.as_datetime(access.parameters[1]).to_datetime()
                    end = axdr.as_datetime(access.parameters[2]).to_datetime()
                except (TypeError, IndexError, ValueError, Exception):
                    return DataAccessResult.OTHER_REASON
            elif access.selector == 2:
                try:
                    first = axdr.as_int(access.parameters[0])
                    last = axdr.as_int(access.parameters[1])
                except Exception:
                    return DataAccessResult.OTHER_REASON
                times_all = self.profile_times(None, None)
                times_all = times_all[first - 1 : (last or len(times_all))]
            else:
                return DataAccessResult.OTHER_REASON
        times = times_all if times_all is not None else self.profile_times(start, end)
        return axdr.array(self.load_profile_row(t) for t in times)

    def _event_buffer(self) -> Data:
        return axdr.array(
            axdr.structure(self._stamp(t), axdr.unsigned(code)) for t, code in self.events
        )

    # -- services -------------------------------------------------------------------------

    def get(self, attribute: AttributeDescriptor, access: AccessSelection | None) -> Data | int:
        """The attribute's value, or a Data-Access-Result code."""
        name, index = attribute.instance, attribute.attribute
        if index == 1:
            return axdr.octet_string(name.to_bytes())
        now = self.meter_time()
        if self.intervals is not None and name == self.intervals.obis:
            return self._interval_register(attribute, now)
        reg = REGISTERS.get(name)
        if reg is not None:
            if attribute.class_id != reg.class_id:
                return DataAccessResult.OBJECT_CLASS_INCONSISTENT
            raw = int(reg.value(self, now))
            value = Data(reg.type, raw)
            su = ScalerUnit(reg.scaler, reg.unit).to_data()
            if reg.class_id == CosemClass.DEMAND_REGISTER:
                table = {
                    2: value,
                    3: value,
                    4: su,
                    5: axdr.NULL,
                    6: self._stamp(now),
                    7: self._stamp(now),
                    8: axdr.double_long_unsigned(900),
                    9: axdr.long_unsigned(1),
                }
            else:
                table = {2: value, 3: su, 4: axdr.NULL, 5: self._stamp(now)}
            return table.get(index, DataAccessResult.OBJECT_UNDEFINED)
        if name == CLOCK:
            clock = {
                2: self._stamp(now),
                3: axdr.long(self.deviation),
                4: axdr.unsigned(0),
                5: axdr.octet_string(bytes.fromhex("FFFF03FE0702000000FFC400")),
                6: axdr.octet_string(bytes.fromhex("FFFF0AFE0703000000FF8880")),
                7: axdr.integer(60),
                8: axdr.boolean(False),
                9: axdr.enum_value(1),
            }
            return clock.get(index, DataAccessResult.OBJECT_UNDEFINED)
        if name == LOGICAL_DEVICE_NAME and index == 2:
            return axdr.octet_string(("FEP" + self.serial).encode())
        if name == SERIAL_NUMBER and index == 2:
            return axdr.visible_string(self.serial)
        if name == AMR_STATUS and index == 2:
            return axdr.unsigned(0)
        if name == EVENT_CODE and index == 2:
            return axdr.unsigned(self.events[-1][1] if self.events else 0)
        if name == LOAD_PROFILE:
            profile = {
                2: lambda: self._buffer(access),
                3: lambda: axdr.array(c.to_data() for c in self.profile_columns()),
                4: lambda: axdr.double_long_unsigned(self.capture_period),
                5: lambda: axdr.enum_value(1),
                6: lambda: axdr.structure(
                    axdr.long_unsigned(0),
                    axdr.octet_string(bytes(6)),
                    axdr.integer(0),
                    axdr.long_unsigned(0),
                ),
                7: lambda: axdr.double_long_unsigned(len(self.profile_times(None, None))),
                8: lambda: axdr.double_long_unsigned(
                    int(self.history.total_seconds() // self.capture_period)
                ),
            }
            maker = profile.get(index)
            return maker() if maker else DataAccessResult.OBJECT_UNDEFINED
        if name == EVENT_LOG:
            log = {
                2: self._event_buffer,
                3: lambda: axdr.array(c.to_data() for c in EVENT_LOG_COLUMNS),
                4: lambda: axdr.double_long_unsigned(0),
                7: lambda: axdr.double_long_unsigned(len(self.events)),
                8: lambda: axdr.double_long_unsigned(100),
            }
            maker = log.get(index)
            return maker() if maker else DataAccessResult.OBJECT_UNDEFINED
        if name == ASSOCIATION and index == 2:
            return axdr.array(e.to_data() for e in self.object_list())
        if name == DISCONNECT:
            state = {
                2: axdr.boolean(self.control_state == ControlState.CONNECTED),
                3: axdr.enum_value(self.control_state),
                4: axdr.enum_value(1),
            }
            return state.get(index, DataAccessResult.OBJECT_UNDEFINED)
        if name == IMAGE_TRANSFER:
            image = {
                2: axdr.double_long_unsigned(self._block_size()),
                4: axdr.double_long_unsigned(self.first_missing_block()),
                5: axdr.boolean(True),
                6: axdr.enum_value(int(str(self.image.get("status", 0)))),
                7: self._image_to_activate(),
            }
            return image.get(index, DataAccessResult.OBJECT_UNDEFINED)
        if name == SECURITY_SETUP:
            setup = {
                2: axdr.enum_value(0),
                3: axdr.enum_value(0),
                4: axdr.octet_string(self.client_system_title or b""),
                5: axdr.octet_string(self.system_title),
            }
            return setup.get(index, DataAccessResult.OBJECT_UNDEFINED)
        if name == PUSH_SETUP:
            push = {
                2: axdr.array(
                    CaptureObject(c, o, a).to_data()
                    for c, o, a in [
                        (1, LOGICAL_DEVICE_NAME, 2),
                        (8, CLOCK, 2),
                        (3, ACTIVE_IMPORT, 2),
                        (3, ACTIVE_EXPORT, 2),
                        (3, VOLTAGE_L1, 2),
                    ]
                ),
                3: axdr.structure(
                    axdr.enum_value(0),
                    axdr.octet_string((self.push_destination or "127.0.0.1:4059").encode()),
                    axdr.enum_value(0),
                ),
                4: axdr.array([]),
            }
            return push.get(index, DataAccessResult.OBJECT_UNDEFINED)
        return DataAccessResult.OBJECT_UNDEFINED

    def _interval_register(self, attribute: AttributeDescriptor, now: datetime) -> Data | int:
        """The table's register: the energy of the last interval ended (0 if unrecorded)."""
        if attribute.class_id != CosemClass.REGISTER:
            return DataAccessResult.OBJECT_CLASS_INCONSISTENT
        assert self.intervals is not None
        period = timedelta(seconds=self.capture_period)
        last = EPOCH + ((now - EPOCH) // period) * period - period
        if attribute.attribute == 2:
            return axdr.double_long_unsigned(self.intervals.energy(last) or 0)
        if attribute.attribute == 3:
            return ScalerUnit(0, WH).to_data()
        return DataAccessResult.OBJECT_UNDEFINED

    def set(self, attribute: AttributeDescriptor, value: Data) -> int:
        if attribute.instance == CLOCK and attribute.attribute == 2:
            try:
                when = axdr.as_datetime(value).to_datetime()
            except Exception:
                return DataAccessResult.TYPE_UNMATCHED
            if when is None:
                return DataAccessResult.OTHER_REASON
            old = self.meter_time()
            self.clock_offset = when - self.now()
            self.events.append((old, 4))
            self.events.append((when, 5))
            return DataAccessResult.SUCCESS
        if attribute.instance == IMAGE_TRANSFER and attribute.attribute == 5:
            return DataAccessResult.SUCCESS
        if attribute.instance == PUSH_SETUP and attribute.attribute == 3:
            try:
                self.push_destination = axdr.as_bytes(value[1]).decode()
            except Exception:
                return DataAccessResult.TYPE_UNMATCHED
            return DataAccessResult.SUCCESS
        if self.get(attribute, None) is not None and attribute.attribute != 1:
            return DataAccessResult.READ_WRITE_DENIED
        return DataAccessResult.OBJECT_UNDEFINED

    def _image_blocks(self) -> dict[int, bytes]:
        blocks = self.image.setdefault("blocks", {})
        assert isinstance(blocks, dict)
        return blocks

    def _block_size(self) -> int:
        return int(str(self.image.get("block_size", 200)))

    def first_missing_block(self) -> int:
        """image_first_not_transferred_block_number: the lowest block not received."""
        blocks = self._image_blocks()
        n = 0
        while n in blocks:
            n += 1
        return n

    def _image_to_activate(self) -> Data:
        if "identifier" not in self.image:
            return axdr.array([])
        identifier = self.image["identifier"]
        assert isinstance(identifier, bytes)
        return axdr.array([
            axdr.structure(
                axdr.double_long_unsigned(int(str(self.image.get("size", 0)))),
                axdr.octet_string(identifier),
                axdr.octet_string(b""),
            )
        ])

    def action(self, method: MethodDescriptor, parameters: Data | None) -> tuple[int, Data | None]:
        """(Action-Result, return parameters)."""
        name, index = method.instance, method.method
        if name == DISCONNECT and index in (1, 2):
            self.control_state = ControlState.DISCONNECTED if index == 1 else ControlState.CONNECTED
            self.events.append((self.meter_time(), 61 if index == 1 else 62))
            return DataAccessResult.SUCCESS, None
        if name == IMAGE_TRANSFER:
            try:
                if index == 1:
                    assert parameters is not None
                    kept = {k: v for k, v in self.image.items() if k == "block_size"}
                    self.image.clear()
                    self.image.update(kept)
                    self.image["identifier"] = axdr.as_bytes(parameters[0])
                    self.image["size"] = axdr.as_int(parameters[1])
                    self.image["status"] = 1
                    return DataAccessResult.SUCCESS, None
                if index == 2:
                    assert parameters is not None
                    self._image_blocks()[axdr.as_int(parameters[0])] = axdr.as_bytes(parameters[1])
                    return DataAccessResult.SUCCESS, None
                if index == 3:
                    size = sum(len(b) for b in self._image_blocks().values())
                    ok = size == self.image.get("size")
                    self.image["status"] = 3 if ok else 4
                    return (DataAccessResult.SUCCESS if ok else DataAccessResult.OTHER_REASON, None)
                if index == 4:
                    if self.image.get("status") != 3:
                        return DataAccessResult.OTHER_REASON, None
                    self.image["status"] = 6
                    self.events.append((self.meter_time(), 18))
                    return DataAccessResult.SUCCESS, None
            except Exception:
                return DataAccessResult.TYPE_UNMATCHED, None
        if name == PUSH_SETUP and index == 1:
            return DataAccessResult.SUCCESS, None
        if name == SECURITY_SETUP and index == 2:
            if self.kek is None or parameters is None:
                return DataAccessResult.READ_WRITE_DENIED, None
            try:
                keys = unwrap_key_transfer(parameters, self.kek)
            except FrameError:
                return DataAccessResult.OTHER_REASON, None
            self.transferred_keys.update({int(k): v for k, v in keys})
            return DataAccessResult.SUCCESS, None
        reg = REGISTERS.get(name)
        if reg is not None and index == 1 and method.class_id == reg.class_id in (4, 5):
            # Reset of a (demand) register: the meter notes when.
            self.resets.append((name, self.meter_time()))
            return DataAccessResult.SUCCESS, None
        return DataAccessResult.OBJECT_UNDEFINED, None

    # -- pushes ---------------------------------------------------------------------------

    def alarm_push_body(self, code: int) -> Data:
        """An alarm push (as IDIS meters send on a power failure, "last gasp", or a tamper):
        the logical device name, the clock and the event object 0.0.96.11.0.255 holding the
        standard event code just logged (1: power down)."""
        self.events.append((self.meter_time(), code))
        return axdr.array([
            axdr.structure(
                axdr.octet_string(LOGICAL_DEVICE_NAME.to_bytes()),
                axdr.octet_string(("FEP" + self.serial).encode()),
            ),
            axdr.structure(axdr.octet_string(CLOCK.to_bytes()), self._stamp(self.meter_time())),
            axdr.structure(axdr.octet_string(EVENT_CODE.to_bytes()), axdr.unsigned(code)),
        ])

    def push_body(self) -> Data:
        """What a Data-Notification from this meter carries, in the layout Aidon meters use on
        their HAN port: an array of structures {logical name, value[, scaler_unit]}."""
        now = self.meter_time()
        items = [
            axdr.structure(
                axdr.octet_string(LOGICAL_DEVICE_NAME.to_bytes()),
                axdr.octet_string(("FEP" + self.serial).encode()),
            ),
            axdr.structure(axdr.octet_string(CLOCK.to_bytes()), self._stamp(now)),
        ]
        for obis in (ACTIVE_IMPORT, ACTIVE_EXPORT, VOLTAGE_L1, CURRENT_L1, ACTIVE_POWER):
            reg = REGISTERS[obis]
            items.append(
                axdr.structure(
                    axdr.octet_string(obis.to_bytes()),
                    Data(reg.type, int(reg.value(self, now))),
                    ScalerUnit(reg.scaler, reg.unit).to_data(),
                )
            )
        return axdr.array(items)
