"""A simulated DL/T 645 meter, or an RS-485 bus of them, for tests and demos: a sans-IO meter
model (address, energy registers that grow with wall time, voltages, currents, a clock, event
records, an optional load profile) answering DL/T 645-2007 services (and the 1997 reads),
and a Twisted server over TCP or a serial device/pty, with knobs for line faults.

``python -m fep.sim.dlt645 --port 8645 --address 000000123456 --count 3``
``python -m fep.sim.dlt645 --pty /dev/pts/5``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from fep.errors import FrameError
from fep.interfaces import ISerialLine
from fep.protocols.dlt645 import dataid
from fep.protocols.dlt645.client import (
    PROFILE_EARLIEST,
    PROFILE_LATEST,
    PROFILE_SINCE,
    LoadRecord,
    encode_load_class,
    encode_load_record,
)
from fep.protocols.dlt645.control import (
    PRE_TRIP_ALARM_BIT,
    RELAY_COMMAND_OPEN_BIT,
    RELAY_OPEN_BIT,
    STATUS_WORD_3,
)
from fep.protocols.dlt645.dataid import DEFAULT_METER_TZ, encode_event_time
from fep.protocols.dlt645.frames import (
    BROADCAST_ADDRESS,
    Frame,
    FrameDecoder,
    control_code,
    decode_address,
    encode_address,
)
from fep.protocols.dlt645.reports import (
    REPORT_RESET,
    REPORT_STATUS,
    bit_of_record,
    encode_status,
    report_frame,
    reset_bits,
)
from fep.protocols.dlt645.services import (
    BAUD_BITS,
    ControlErrorStatus,
    ErrorStatus,
    ErrorStatus1997,
    Function,
    Function1997,
    Password,
    RelayAction,
    decode_bcd,
)
from fep.reactors import IConnectingReactor
from fep.sim import serve

log = Logger(namespace="fep.sim.dlt645")

_BAUD_BY_BIT = {bit: baud for baud, bit in BAUD_BITS.items()}
_TWO = Decimal("0.01")
# Authority each service needs (DL/T 645-2007: level 0 highest; 02 clears, 04 writes).
WRITE_LEVEL = 4
CLEAR_LEVEL = 2
RELAY_LEVEL = 2  # relay control (1C): the level 02 password, as cost-control meters ask
# A broadcast time sync may move a meter's clock by at most 5 minutes, is not taken within
# 5 minutes of midnight, and only once a day (DL/T 645-2007 6).
MAX_BROADCAST_CORRECTION = 300.0


@attrs.define
class Register:
    """An energy register: ``start`` plus ``per_hour`` (kWh or kvarh) an hour of wall time."""

    start: Decimal
    per_hour: Decimal

    def at(self, elapsed_s: float) -> Decimal:
        value = self.start + self.per_hour * Decimal(str(max(elapsed_s, 0.0))) / 3600
        return value.quantize(_TWO, rounding="ROUND_DOWN")


@attrs.define
class SimEvent:
    """An event the meter recorded: which family (an ``EVENT_RECORDS`` base DI), when it
    started and, for events with an end, when it ended (None: still going)."""

    base: int
    start: datetime
    end: datetime | None = None


def _default_registers() -> dict[int, Register]:
    # DI2 of the energy DIs: forward active, reverse active, combined reactive 1 and 2.
    return {
        0x01: Register(Decimal("1234.56"), Decimal("1.5")),
        0x02: Register(Decimal("12.34"), Decimal("0.05")),
        0x03: Register(Decimal("321.00"), Decimal("0.3")),
        0x04: Register(Decimal("45.67"), Decimal("0.02")),
    }


def _default_events() -> list[SimEvent]:
    return [
        SimEvent(0x03110000, datetime(2024, 3, 1, 2, 0, tzinfo=UTC),
                 datetime(2024, 3, 1, 2, 47, 30, tzinfo=UTC)),
        SimEvent(0x03300D00, datetime(2024, 2, 20, 9, 15, tzinfo=UTC),
                 datetime(2024, 2, 20, 9, 16, tzinfo=UTC)),
        SimEvent(0x03110000, datetime(2024, 1, 15, 22, 10, tzinfo=UTC),
                 datetime(2024, 1, 16, 0, 5, tzinfo=UTC)),
    ]  # fmt: skip


@attrs.define
class SimulatedDlt645Meter:
    """One meter: what it answers and the state services change.

    ``clock`` gives wall time (seconds); tests pass a fake one. ``clock_offset`` is how far
    the meter's own clock runs ahead (broadcast time and clock writes change it). Tariff
    registers split the totals by ``tariff_shares``; ``missing`` DIs are answered "no
    requested data", ``refusals`` with the error status given. ``max_data`` bounds a
    frame's data field: longer answers go out in follow-up frames. ``profile_period``
    (minutes, None for none) gives a load profile of one record per period since
    ``started``.

    The state commands change: the supply relay (``relay_closed``; ``relay_command_open`` is
    what it was last told: a trip opens it at once, close allowed leaves it open until the
    customer presses the button, ``press_button()``, a direct close closes it; a guaranteed
    supply refuses trips), ``alarm``, ``guarantee``, ``demand_resets`` (each zeroes the
    maximum demand), the clock, the event records; ``operators`` lists (service, operator
    code) of each accepted command. Relay control needs the level 2 password, writes level 4,
    resets level 2 (4 for demand). Refused relay control answers with the two-byte error
    word (``control_error_word``) or, like a meter in plain mode, the ERR byte 04.
    """

    address: str = "000000123456"
    edition: int = 2007
    clock: Callable[[], float] = time.time
    clock_offset: float = 0.0
    tz: tzinfo = DEFAULT_METER_TZ
    started: float | None = None
    registers: dict[int, Register] = attrs.Factory(_default_registers)
    tariff_shares: tuple[Decimal, ...] = (
        Decimal("0.1"), Decimal("0.4"), Decimal("0.3"), Decimal("0.2"),
    )  # fmt: skip
    voltages: tuple[Decimal, ...] = (Decimal("220.1"), Decimal("221.3"), Decimal("219.8"))
    currents: tuple[Decimal, ...] = (Decimal("5.123"), Decimal("4.870"), Decimal("-0.250"))
    power_factors: tuple[Decimal, ...] = (
        Decimal("0.985"), Decimal("0.990"), Decimal("0.978"), Decimal("-0.512"),
    )  # fmt: skip
    frequency: Decimal = Decimal("50.02")
    demand: Decimal = Decimal("3.4567")
    demand_time: datetime = datetime(2024, 2, 28, 18, 30, tzinfo=UTC)
    meter_number: str = "202400000001"
    events: list[SimEvent] = attrs.Factory(_default_events)
    missing: set[int] = attrs.Factory(set)
    # DI -> error status the meter answers a read of it with (e.g. 0x04: not authorised).
    refusals: dict[int, int] = attrs.Factory(dict)
    passwords: dict[int, str] = attrs.Factory(lambda: {2: "123456", 4: "000000"})
    max_data: int = 200
    profile_period: int | None = 15
    baudrate: int = 2400
    relay_closed: bool = True
    relay_command_open: bool = False
    alarm: bool = False
    guarantee: bool = False
    demand_resets: int = 0
    control_error_word: bool = True
    operators: list[tuple[str, str]] = attrs.Factory(list)
    broadcast_day: date | None = None
    log: list[str] = attrs.Factory(list)
    # Active reporting: status bit -> new events since the last reset; the bits as the
    # last read of 04001501 gave them (a reset takes only bits that were read); resets done.
    report_counts: dict[int, int] = attrs.Factory(dict)
    report_read: frozenset[int] | None = None
    report_resets: int = 0
    # The answer being sent in follow-up frames: DI, the frames' data, how many went.
    _pending: tuple[int, list[bytes], int] | None = None

    def __attrs_post_init__(self) -> None:
        encode_address(self.address)
        self.address = self.address.rjust(12, "0")
        if self.started is None:
            self.started = self.clock()
        if not 16 <= self.max_data <= 255:
            raise ValueError("max_data is 16..255")

    # -- time and values ------------------------------------------------------------------------

    def now(self) -> datetime:
        """The meter's own clock (UTC)."""
        return datetime.fromtimestamp(self.clock() + self.clock_offset, UTC)

    def elapsed(self, at: datetime | None = None) -> float:
        assert self.started is not None
        when = self.clock() if at is None else at.timestamp() - self.clock_offset
        return when - self.started

    def energy(self, di2: int, tariff: int = 0, at: datetime | None = None) -> Decimal | None:
        """Energy register DI2 (00 combined active = forward + reverse) of tariff 0..4."""
        if di2 == 0x00:
            forward = self.energy(0x01, tariff, at)
            reverse = self.energy(0x02, tariff, at)
            if forward is None or reverse is None:
                return None
            return forward + reverse
        register = self.registers.get(di2)
        if register is None:
            return None
        total = register.at(self.elapsed(at))
        if tariff == 0:
            return total
        shares = self.tariff_shares
        if tariff > len(shares):
            return None
        if tariff < len(shares):
            return (total * shares[tariff - 1]).quantize(_TWO, rounding="ROUND_DOWN")
        # The last tariff takes what the others leave, so the tariffs add up to the total.
        rest = sum(
            ((total * s).quantize(_TWO, rounding="ROUND_DOWN") for s in shares[:-1]), Decimal(0)
        )
        return total - rest

    def active_power(self, phase: int) -> Decimal:
        """kW of phase 1..3 (0: total) from U, I and the power factor."""
        if phase == 0:
            return sum((self.active_power(p) for p in (1, 2, 3)), Decimal(0))
        u, i = self.voltages[phase - 1], self.currents[phase - 1]
        return (u * i * abs(self.power_factors[phase]) / 1000).quantize(Decimal("0.0001"))

    def reactive_power(self, phase: int) -> Decimal:
        return (self.active_power(phase) / 4).quantize(Decimal("0.0001"))

    def _item_value(self, di: int) -> tuple[object, datetime | None] | None:
        """The value (and time, for demand) of a catalogued 2007 DI, None if the meter has
        none."""
        di3, di2, di1, di0 = di >> 24, (di >> 16) & 0xFF, (di >> 8) & 0xFF, di & 0xFF
        if di3 == 0x00:
            value = self.energy(di2, di1)
            if value is None or di0 > 0:
                # Settlement periods back: the register as it was n months (30 days) ago.
                if value is None:
                    return None
                then = self.now() - timedelta(days=30 * di0)
                value = self.energy(di2, di1, then) or Decimal(0)
            return value, None
        if di3 == 0x01:
            if di2 not in (0x01, 0x02) or di0 > 0:
                return None
            value = self.demand if di1 == 0 else (self.demand / 2).quantize(Decimal("0.0001"))
            return value, self.demand_time
        if di3 == 0x02:
            phase = di1
            if di2 == 0x01 and 1 <= phase <= 3:
                return self.voltages[phase - 1], None
            if di2 == 0x02 and 1 <= phase <= 3:
                return self.currents[phase - 1], None
            if di2 == 0x03:
                return self.active_power(phase), None
            if di2 == 0x04:
                return self.reactive_power(phase), None
            if di2 == 0x05:
                apparent = self.active_power(phase) * Decimal("1.03")
                return apparent.quantize(Decimal("0.0001")), None
            if di2 == 0x06:
                return self.power_factors[phase], None
            if di == 0x02800002:
                return self.frequency, None
            return None
        now = self.now().astimezone(self.tz)
        if di == 0x04000101:
            return now.date().isoformat(), None
        if di == 0x04000102:
            return now.time().replace(microsecond=0).isoformat(), None
        if di == 0x0400010C:
            return now.replace(microsecond=0).isoformat(), None
        if di == 0x04000401:
            return self.address, None
        if di == 0x04000402:
            return self.meter_number, None
        return None

    def _item_value_1997(self, di: int) -> object | None:
        group, kind, n = di >> 8, (di >> 4) & 0x0F, di & 0x0F
        if group in (0x90, 0x94):
            then = self.now() - timedelta(days=30) if group == 0x94 else None
            return self.energy(kind, n, then)
        if group in (0x91, 0x95):
            then = self.now() - timedelta(days=30) if group == 0x95 else None
            return self.energy(kind + 2, n, then)
        if di >> 4 == 0xB61:
            return self.voltages[n - 1].quantize(Decimal(1))
        if di >> 4 == 0xB62:
            return abs(self.currents[n - 1]).quantize(_TWO)  # unsigned in 1997
        if di >> 4 == 0xB63:
            return abs(self.active_power(n))
        if di >> 4 == 0xB64:
            return abs(self.reactive_power(n)).quantize(_TWO)
        if di >> 4 == 0xB65:
            return abs(self.power_factors[n])
        now = self.now().astimezone(self.tz)
        if di == 0xC010:
            return now.date().isoformat()
        if di == 0xC011:
            return now.time().replace(microsecond=0).isoformat()
        if di == 0xC032:
            return self.meter_number
        return None

    def data_for(self, di: int) -> bytes | None:
        """The data bytes the meter answers for ``di`` (a block gives its members present),
        None for "no requested data"."""
        if di in self.missing:
            return None
        table = dataid.catalogue(self.edition)
        if di in table:
            return self._encode(table[di])
        if self.edition == 2007:
            record = dataid.event_record(di)
            if record is not None:
                return self._event_data(di)
        members = dataid.block_members(di, self.edition)
        if members:
            parts = [None if m.di in self.missing else self._encode(m) for m in members]
            present = [p for p in parts if p is not None]
            # Members run in order: a meter with fewer (tariffs, phases) stops early.
            data = b""
            for part in parts:
                if part is None:
                    break
                data += part
            return data if present else None
        return None

    def _encode(self, item: dataid.DataItem) -> bytes | None:
        if self.edition == 1997:
            value = self._item_value_1997(item.di)
            if value is None:
                return None
            return item.encode(value)  # type: ignore[arg-type]
        found = self._item_value(item.di)
        if found is None:
            return None
        value, when = found
        try:
            return item.encode(value, meter_time=when, tz=self.tz)  # type: ignore[arg-type]
        except ValueError:
            return None

    def _event_data(self, di: int) -> bytes:
        record = dataid.event_record(di)
        assert record is not None
        matching = [e for e in self.events if e.base == record.base]
        matching.sort(key=lambda e: e.start, reverse=True)
        n = di & 0xFF
        data = bytearray(record.min_length)
        if n <= len(matching):
            event = matching[n - 1]
            data[record.start_at : record.start_at + 6] = encode_event_time(event.start, self.tz)
            if record.end_at is not None:
                data[record.end_at : record.end_at + 6] = encode_event_time(event.end, self.tz)
        # Energy snapshots meters append after the times (fep does not decode them).
        return bytes(data) + bytes(8)

    # -- active reporting -------------------------------------------------------------------

    def raise_event(self, base: int, start: datetime, end: datetime | None = None) -> int:
        """Record an event of family ``base`` (an EVENT_RECORDS base DI) and set its bit of
        the active-reporting status word; returns the bit."""
        bit = bit_of_record(base)
        if bit is None:
            raise ValueError(f"no status bit reports event family {base:08X}")
        self.events.append(SimEvent(base, start, end))
        self.report_counts[bit] = self.report_counts.get(bit, 0) + 1
        return bit

    def report(self) -> Frame:
        """The frame the meter sends by itself: its status word (04001501) with the new
        event counts."""
        return report_frame(self.address, self.report_counts)

    def _reset_report(self, request: Frame, word: bytes) -> Frame:
        """04001503: reset the bits that are 0 in ``word``; refused (ERR 01) when a bit to
        reset is set but was not read first, or nothing was read. No password check, as
        meters do."""
        wanted = reset_bits(word)
        read = self.report_read
        if read is None or any(b in self.report_counts and b not in read for b in wanted):
            return self._refuse(request, ErrorStatus.OTHER)
        for bit in wanted & read:
            self.report_counts.pop(bit, None)
        self.report_read = None
        self.report_resets += 1
        return self._reply(request)

    # -- load profile ------------------------------------------------------------------------

    def profile_times(self) -> list[datetime]:
        """The storage times of every load record so far (meter clock)."""
        if self.profile_period is None:
            return []
        assert self.started is not None
        period = self.profile_period * 60
        first = self.started + self.clock_offset
        first = first - first % period + period
        last = self.clock() + self.clock_offset
        count = int((last - first) // period) + 1 if last >= first else 0
        return [datetime.fromtimestamp(first + k * period, UTC) for k in range(count)]

    def load_record(self, at: datetime) -> LoadRecord:
        phases = (1, 2, 3)
        class1 = encode_load_class(1, [*self.voltages, *self.currents, self.frequency])
        class2 = encode_load_class(
            2,
            [*(self.active_power(p) for p in (0, *phases)),
             *(self.reactive_power(p) for p in (0, *phases))],
        )  # fmt: skip
        class3 = encode_load_class(3, list(self.power_factors))
        energies = [self.energy(di2, 0, at) or Decimal(0) for di2 in (1, 2, 3, 4)]
        class4 = encode_load_class(4, energies)
        class6 = encode_load_class(6, [self.active_power(0), self.reactive_power(0)])
        # Class 5 (quadrant reactive energy) is not recorded by this meter: an empty block.
        return LoadRecord(at, (class1, class2, class3, class4, b"", class6))

    def profile_data(self, di: int, blocks: int, since: datetime | None) -> bytes | None:
        times = self.profile_times()
        if di == PROFILE_SINCE:
            if since is None:
                return None
            times = [t for t in times if t >= since][:blocks]
        elif di == PROFILE_EARLIEST:
            times = times[:blocks]
        else:
            times = times[-blocks:]
        if not times:
            return None
        return b"".join(encode_load_record(self.load_record(t), self.tz) for t in times)

    # -- services ------------------------------------------------------------------------------

    def addressed(self, frame: Frame) -> bool:
        """Whether a request is for this meter: its address, the wildcard (AA bytes match any
        digits) or the broadcast address."""
        if frame.is_response:
            return False
        if frame.address == BROADCAST_ADDRESS:
            return True
        return all(a in ("A", m) for a, m in zip(frame.address, self.address, strict=True))

    def answer(self, request: Frame) -> Frame | None:
        """The meter's answer to a request for it (None: no answer)."""
        if not self.addressed(request):
            return None
        if self.edition == 1997:
            return self._answer_1997(request)
        function = request.function
        if request.address == BROADCAST_ADDRESS:
            if function == Function.BROADCAST_TIME:
                self._broadcast_time(request.data)
            return None  # meters never answer a broadcast
        handlers: dict[int, Callable[[Frame], Frame]] = {
            Function.READ_DATA: self._read,
            Function.READ_FOLLOW_UP: self._read_follow_up,
            Function.READ_ADDRESS: self._read_address,
            Function.WRITE_DATA: self._write,
            Function.WRITE_ADDRESS: self._write_address,
            Function.FREEZE: self._freeze,
            Function.CHANGE_BAUD: self._change_baud,
            Function.CHANGE_PASSWORD: self._change_password,
            Function.MAX_DEMAND_RESET: self._demand_reset,
            Function.METER_RESET: self._meter_reset,
            Function.EVENT_RESET: self._event_reset,
            Function.RELAY_CONTROL: self._relay_control,
        }
        handler = handlers.get(function)
        if handler is None:
            return self._refuse(request, ErrorStatus.OTHER)
        return handler(request)

    def _reply(self, request: Frame, data: bytes = b"", *, follow_up: bool = False) -> Frame:
        # A meter answers with its own address, also to a wildcard request.
        control = control_code(request.function, response=True, follow_up=follow_up)
        return Frame(self.address, control, data)

    def _refuse(self, request: Frame, status: int) -> Frame:
        self.log.append(f"refused {request.function:02X}: {status:02X}")
        control = control_code(request.function, response=True, error=True)
        return Frame(self.address, control, bytes([status]))

    def _authorised(self, password: Password, level: int) -> bool:
        return password.level <= level and self.passwords.get(password.level) == password.code

    def _read(self, request: Frame) -> Frame:
        data = request.data
        if len(data) < 4:
            return self._refuse(request, ErrorStatus.OTHER)
        di = int.from_bytes(data[:4], "little")
        self.log.append(f"read {di:08X}")
        self._pending = None
        if di in self.refusals:
            return self._refuse(request, self.refusals[di])
        answer: bytes | None
        if di in (PROFILE_EARLIEST, PROFILE_SINCE, PROFILE_LATEST):
            answer = self._profile_request(di, data[4:])
        elif di == STATUS_WORD_3:
            answer = self.status_word_3().to_bytes(2, "little")
        elif di == REPORT_STATUS and self.edition == 2007:
            answer = encode_status(self.report_counts)
            self.report_read = frozenset(self.report_counts)
        else:
            answer = self.data_for(di)
        if answer is None:
            return self._refuse(request, ErrorStatus.NO_REQUESTED_DATA)
        room = self.max_data - 4
        if len(answer) <= room:
            return self._reply(request, data[:4] + answer)
        # Long answer: the first part now, the rest in follow-up frames 1, 2, ...
        rest = answer[room:]
        chunk = self.max_data - 5
        parts = [rest[i : i + chunk] for i in range(0, len(rest), chunk)]
        self._pending = (di, parts, 0)
        return self._reply(request, data[:4] + answer[:room], follow_up=True)

    def _profile_request(self, di: int, extra: bytes) -> bytes | None:
        if not extra or not 1 <= extra[0] <= 255:
            return None
        since: datetime | None = None
        if di == PROFILE_SINCE:
            if len(extra) != 6:
                return None
            try:
                digits = decode_bcd(extra[1:])
                since = datetime.strptime("20" + digits, "%Y%m%d%H%M").replace(tzinfo=self.tz)
            except (FrameError, ValueError):
                return None
        return self.profile_data(di, extra[0], since)

    def _read_follow_up(self, request: Frame) -> Frame:
        data = request.data
        if len(data) != 5:
            return self._refuse(request, ErrorStatus.OTHER)
        di, seq = int.from_bytes(data[:4], "little"), data[4]
        self.log.append(f"follow-up {di:08X} {seq}")
        pending = self._pending
        if pending is None or pending[0] != di:
            return self._refuse(request, ErrorStatus.NO_REQUESTED_DATA)
        _, parts, sent = pending
        if seq == sent:
            sent -= 1  # the same frame asked again (its answer was lost): send it again
        elif seq != sent + 1 or sent >= len(parts):
            return self._refuse(request, ErrorStatus.NO_REQUESTED_DATA)
        part = parts[sent]
        self._pending = (di, parts, sent + 1)
        more = sent + 1 < len(parts)
        return self._reply(request, data[:4] + part + bytes([seq]), follow_up=more)

    def _read_address(self, request: Frame) -> Frame:
        self.log.append("read address")
        return self._reply(request, encode_address(self.address))

    def _write(self, request: Frame) -> Frame:
        data = request.data
        if len(data) < 12:
            return self._refuse(request, ErrorStatus.OTHER)
        di = int.from_bytes(data[:4], "little")
        self.log.append(f"write {di:08X}")
        if di == REPORT_RESET:
            if len(data) != 24:
                return self._refuse(request, ErrorStatus.OTHER)
            return self._reset_report(request, data[12:])
        try:
            password = Password.decode(data[4:8])
        except FrameError:
            return self._refuse(request, ErrorStatus.UNAUTHORIZED)
        if not self._authorised(password, WRITE_LEVEL):
            return self._refuse(request, ErrorStatus.UNAUTHORIZED)
        value = data[12:]
        now = self.now().astimezone(self.tz)
        try:
            if di == 0x04000101 and len(value) == 4:
                digits = decode_bcd(value[1:])
                day = datetime.strptime("20" + digits, "%Y%m%d").date()
                target = datetime.combine(day, now.timetz())
            elif di == 0x04000102 and len(value) == 3:
                t = datetime.strptime(decode_bcd(value), "%H%M%S").time()
                target = now.replace(hour=t.hour, minute=t.minute, second=t.second, microsecond=0)
            else:
                return self._refuse(request, ErrorStatus.OTHER)
        except (FrameError, ValueError):
            return self._refuse(request, ErrorStatus.OTHER)
        self._set_clock(target)
        return self._reply(request)

    def _set_clock(self, meter_time: datetime) -> None:
        self.clock_offset = meter_time.timestamp() - self.clock()

    def _broadcast_time(self, data: bytes) -> None:
        self.log.append("broadcast time")
        if len(data) != 6:
            return
        try:
            digits = decode_bcd(data)
            target = datetime.strptime("20" + digits, "%Y%m%d%H%M%S").replace(tzinfo=self.tz)
        except (FrameError, ValueError):
            return
        local = self.now().astimezone(self.tz)
        minutes = local.hour * 60 + local.minute
        if abs(target.timestamp() - self.now().timestamp()) > MAX_BROADCAST_CORRECTION:
            self.log.append("broadcast time ignored: more than 5 min off")
        elif minutes < 5 or minutes >= 23 * 60 + 55:
            self.log.append("broadcast time ignored: within 5 min of midnight")
        elif self.broadcast_day == local.date():
            self.log.append("broadcast time ignored: one a day")
        else:
            self._set_clock(target)
            self.broadcast_day = target.date()

    def _write_address(self, request: Frame) -> Frame:
        if len(request.data) != 6:
            return self._refuse(request, ErrorStatus.OTHER)
        try:
            new = decode_address(request.data)
        except FrameError:
            return self._refuse(request, ErrorStatus.OTHER)
        if "A" in new:
            return self._refuse(request, ErrorStatus.OTHER)
        self.log.append(f"write address {new}")
        self.address = new
        return self._reply(request)

    def _freeze(self, request: Frame) -> Frame:
        self.log.append(f"freeze {request.data.hex()}")
        return self._reply(request)

    def _change_baud(self, request: Frame) -> Frame:
        if len(request.data) != 1 or request.data[0] not in _BAUD_BY_BIT:
            return self._refuse(request, ErrorStatus.BAUD_NOT_CHANGEABLE)
        self.baudrate = _BAUD_BY_BIT[request.data[0]]
        self.log.append(f"baud {self.baudrate}")
        return self._reply(request, request.data)

    def _change_password(self, request: Frame) -> Frame:
        data = request.data
        if len(data) != 12:
            return self._refuse(request, ErrorStatus.OTHER)
        try:
            old, new = Password.decode(data[4:8]), Password.decode(data[8:12])
        except FrameError:
            return self._refuse(request, ErrorStatus.UNAUTHORIZED)
        di = int.from_bytes(data[:4], "little")
        if di != 0x04000C01 + new.level or not self._authorised(old, new.level):
            return self._refuse(request, ErrorStatus.UNAUTHORIZED)
        self.passwords[new.level] = new.code
        self.log.append(f"password {new.level}")
        return self._reply(request, data[8:12])

    def _checked(self, request: Frame, level: int) -> bool:
        if len(request.data) < 8:
            return False
        try:
            return self._authorised(Password.decode(request.data[:4]), level)
        except FrameError:
            return False

    def _demand_reset(self, request: Frame) -> Frame:
        if not self._checked(request, WRITE_LEVEL):
            return self._refuse(request, ErrorStatus.UNAUTHORIZED)
        self.demand = Decimal(0)
        self.demand_resets += 1
        self._operator("demand reset", request.data[4:8])
        self.log.append("demand reset")
        return self._reply(request)

    def _meter_reset(self, request: Frame) -> Frame:
        if not self._checked(request, CLEAR_LEVEL):
            return self._refuse(request, ErrorStatus.UNAUTHORIZED)
        for register in self.registers.values():
            register.start = Decimal(0)
        self.started = self.clock()
        self.events.clear()
        self.log.append("meter reset")
        return self._reply(request)

    def _event_reset(self, request: Frame) -> Frame:
        if len(request.data) != 12 or not self._checked(request, CLEAR_LEVEL):
            return self._refuse(request, ErrorStatus.UNAUTHORIZED)
        di = int.from_bytes(request.data[8:12], "little")
        if di == 0xFFFFFFFF:
            self.events.clear()
        else:
            self.events = [e for e in self.events if e.base != di & 0xFFFFFF00]
        self._operator("event reset", request.data[4:8])
        self.log.append(f"event reset {di:08X}")
        return self._reply(request)

    def _operator(self, what: str, raw: bytes) -> None:
        try:
            self.operators.append((what, decode_bcd(raw)))
        except FrameError:
            self.operators.append((what, raw.hex()))

    def status_word_3(self) -> int:
        """Status word 3 (04000503): relay open (bit 4), commanded open (bit 6), pre-trip
        alarm (bit 7)."""
        return ((RELAY_OPEN_BIT if not self.relay_closed else 0)
                | (RELAY_COMMAND_OPEN_BIT if self.relay_command_open else 0)
                | (PRE_TRIP_ALARM_BIT if self.alarm else 0))

    def press_button(self) -> bool:
        """The customer presses the meter's button: after close allowed, the relay closes.
        Whether it closed."""
        if not self.relay_command_open and not self.relay_closed:
            self.relay_closed = True
            self.log.append("relay closed by the button")
            return True
        return False

    def _control_refusal(self, request: Frame, word: int) -> Frame:
        self.log.append(f"refused 1C: {word:04X}")
        control = control_code(request.function, response=True, error=True)
        if self.control_error_word:
            return Frame(self.address, control, word.to_bytes(2, "little"))
        return Frame(self.address, control, bytes([ErrorStatus.UNAUTHORIZED]))

    def _relay_control(self, request: Frame) -> Frame:
        data = request.data
        if len(data) != 16 or not self._checked(request, RELAY_LEVEL):
            return self._control_refusal(request, ControlErrorStatus.UNAUTHORIZED)
        try:
            action = RelayAction(data[8])
            until = datetime.strptime("20" + decode_bcd(data[10:16]), "%Y%m%d%H%M%S")
        except (FrameError, ValueError):
            return self._control_refusal(request, ControlErrorStatus.UNAUTHORIZED)
        if self.now() > until.replace(tzinfo=self.tz):
            return self._control_refusal(request, ControlErrorStatus.EXPIRED)
        if action == RelayAction.TRIP:
            if self.guarantee:
                return self._control_refusal(request, ControlErrorStatus.GUARANTEED)
            self.relay_command_open, self.relay_closed = True, False
        elif action == RelayAction.CLOSE_ALLOWED:
            self.relay_command_open = False  # closes when the customer presses the button
        elif action == RelayAction.DIRECT_CLOSE:
            self.relay_command_open, self.relay_closed = False, True
        elif action in (RelayAction.ALARM, RelayAction.ALARM_RELEASE):
            self.alarm = action == RelayAction.ALARM
        else:
            self.guarantee = action == RelayAction.GUARANTEE
        self._operator(f"relay control {action.name.lower()}", data[4:8])
        self.log.append(f"relay control {action.name.lower()}")
        return self._reply(request)

    def _answer_1997(self, request: Frame) -> Frame | None:
        function = request.function
        if request.address == BROADCAST_ADDRESS:
            if function == Function1997.BROADCAST_TIME:
                self._broadcast_time(request.data)
            return None
        if function == Function1997.READ_DATA and len(request.data) == 2:
            di = int.from_bytes(request.data, "little")
            self.log.append(f"read {di:04X}")
            self._pending = None
            answer = self.data_for(di)
            if answer is None:
                return self._refuse(request, ErrorStatus1997.WRONG_DATA_IDENTIFIER)
            room = self.max_data - 2
            if len(answer) <= room:
                return self._reply(request, request.data + answer)
            rest = answer[room:]
            parts = [rest[i : i + room] for i in range(0, len(rest), room)]
            self._pending = (di, parts, 0)
            return self._reply(request, request.data + answer[:room], follow_up=True)
        if function == Function1997.READ_FOLLOW_UP and len(request.data) == 2:
            di = int.from_bytes(request.data, "little")
            pending = self._pending
            if pending is None or pending[0] != di or pending[2] >= len(pending[1]):
                return self._refuse(request, ErrorStatus1997.WRONG_DATA_IDENTIFIER)
            _, parts, sent = pending
            self._pending = (di, parts, sent + 1)
            more = sent + 1 < len(parts)
            return self._reply(request, request.data + parts[sent], follow_up=more)
        if function == Function1997.WRITE_DATA and len(request.data) >= 6:
            return self._write_1997(request)
        if function == Function1997.MAX_DEMAND_RESET:
            try:
                password = Password.decode(request.data)
            except FrameError:
                return self._refuse(request, ErrorStatus1997.WRONG_PASSWORD)
            if not self._authorised(password, WRITE_LEVEL):
                return self._refuse(request, ErrorStatus1997.WRONG_PASSWORD)
            self.demand = Decimal(0)
            self.demand_resets += 1
            self.log.append("demand reset")
            return self._reply(request)
        return self._refuse(request, ErrorStatus1997.ILLEGAL_DATA)

    def _write_1997(self, request: Frame) -> Frame:
        data = request.data
        di = int.from_bytes(data[:2], "little")
        self.log.append(f"write {di:04X}")
        try:
            password = Password.decode(data[2:6])
        except FrameError:
            return self._refuse(request, ErrorStatus1997.WRONG_PASSWORD)
        if not self._authorised(password, WRITE_LEVEL):
            return self._refuse(request, ErrorStatus1997.WRONG_PASSWORD)
        value = data[6:]
        now = self.now().astimezone(self.tz)
        try:
            if di == 0xC010 and len(value) == 4:
                day = datetime.strptime("20" + decode_bcd(value[1:]), "%Y%m%d").date()
                target = datetime.combine(day, now.timetz())
            elif di == 0xC011 and len(value) == 3:
                t = datetime.strptime(decode_bcd(value), "%H%M%S").time()
                target = now.replace(hour=t.hour, minute=t.minute, second=t.second, microsecond=0)
            else:
                return self._refuse(request, ErrorStatus1997.WRONG_DATA_IDENTIFIER)
        except (FrameError, ValueError):
            return self._refuse(request, ErrorStatus1997.ILLEGAL_DATA)
        self._set_clock(target)
        return self._reply(request)


def make_meters(
    count: int, first_address: str = "000000123456", **kwargs: Any
) -> list[SimulatedDlt645Meter]:
    """``count`` meters with consecutive addresses from ``first_address`` and registers that
    differ from meter to meter."""
    first = int(first_address)
    meters = []
    for i in range(count):
        registers = _default_registers()
        for register in registers.values():
            register.start += Decimal(1000 * i)
        meters.append(
            SimulatedDlt645Meter(address=f"{first + i:012d}", registers=registers, **kwargs)
        )
    return meters


# ---------------------------------------------------------------------------
# Twisted: the bus
# ---------------------------------------------------------------------------


def _collide(frames: Sequence[bytes]) -> bytes:
    """What a line carries when several meters answer at once: the drivers fight, and the
    receiver sees bits of each (modelled as their bitwise AND, which wrecks the checksum)."""
    size = max(len(f) for f in frames)
    out = bytearray(b"\xff" * size)
    for f in frames:
        for i, b in enumerate(f):
            out[i] &= b
    return bytes(out)


class Dlt645BusProtocol(Protocol):
    """The meter side of one line or connection: every meter hears every request."""

    factory: Dlt645BusFactory

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._pending: list[IDelayedCall] = []

    def _later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self._pending = [c for c in self._pending if c.active()]
        self._pending.append(self.factory.reactor.callLater(delay, fn, *args))

    def connectionMade(self) -> None:
        self.factory.connections += 1
        register = getattr(self.factory, "registration", None)
        if register is not None and self.transport is not None:
            self.transport.write(register())

    def dataReceived(self, data: bytes) -> None:
        f = self.factory
        f.bytes_received += len(data)
        if f.echo and self.transport is not None:
            # A half-duplex line: the master hears its own request.
            self.transport.write(data)
        for item in self._decoder.decode_all(data):
            if isinstance(item, FrameError):
                # A meter ignores what it cannot read.
                f.bad_requests += 1
                log.debug("simulator ignored: {why}", why=item.message)
            else:
                self._handle(item)

    def _handle(self, request: Frame) -> None:
        f = self.factory
        f.requests += 1
        if f.silent:
            return
        answers = [a for m in f.meters if (a := m.answer(request)) is not None]
        if not answers:
            return
        if f.drop_answers > 0:
            f.drop_answers -= 1
            return
        wire = [a.encode(preamble=f.preamble) for a in answers]
        if len(wire) > 1:
            f.collisions += 1
            out = _collide(wire)
        else:
            out = wire[0]
            if f.damage_answers > 0:
                f.damage_answers -= 1
                out = out[:-2] + bytes([out[-2] ^ 0x5A, out[-1]])
        out = f.noise + out
        self._later(f.answer_delay, self._send, out, answers[0], request)

    def _send(self, data: bytes, answer: Frame, request: Frame) -> None:
        if self.transport is None:
            return
        f = self.factory
        if f.split_answers and len(data) > 1:
            # Bytes trickle in as on a slow line: one write per byte.
            for b in data:
                self.transport.write(bytes([b]))
        else:
            self.transport.write(data)
        f.answers += 1
        if answer.function == Function.CHANGE_BAUD and not answer.is_error:
            serial = ISerialLine(self.transport, None)
            meter = next((m for m in f.meters if m.address == answer.address), None)
            if serial is not None and meter is not None:
                # The meter switches once its answer is out (DL/T 645-2007 7.2.2).
                serial.set_baudrate(meter.baudrate)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        for call in self._pending:
            if call.active():
                call.cancel()
        self._pending = []


class Dlt645BusFactory(ServerFactory[Dlt645BusProtocol]):
    """Serves meters on one bus. Line faults: ``silent`` never answers, ``drop_answers`` and
    ``damage_answers`` lose or spoil (checksum) the next N answers, ``noise`` is sent before
    every answer, ``echo`` sends each request back, ``split_answers`` writes byte by byte."""

    protocol = Dlt645BusProtocol
    noisy = False

    def __init__(
        self,
        meters: Sequence[SimulatedDlt645Meter] | None = None,
        reactor: IReactorTime | None = None,
        answer_delay: float = 0.0,
        preamble: int = 4,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.meters = list(meters) if meters is not None else [SimulatedDlt645Meter()]
        self.reactor = reactor
        self.answer_delay = answer_delay
        self.preamble = preamble
        self.silent = False
        self.drop_answers = 0
        self.damage_answers = 0
        self.noise = b""
        self.echo = False
        self.split_answers = False
        self.connections = 0
        self.requests = 0
        self.answers = 0
        self.bad_requests = 0
        self.collisions = 0
        self.bytes_received = 0

    def meter(self, address: str) -> SimulatedDlt645Meter | None:
        return next((m for m in self.meters if m.address == address), None)


class Dlt645DtuFactory(Dlt645BusFactory):
    """A DTU (GPRS terminal in transparent mode) with meters on its RS-485 port that dials
    in: it sends its registration line (``ID:<imei>``) once connected, then passes the
    master's requests to its meters and their answers back; ``report(address)`` sends what a
    meter reports by itself (its status word), ``send(bytes)`` anything."""

    def __init__(self, imei: str, meters: Sequence[SimulatedDlt645Meter] | None = None,
                 reactor: IReactorTime | None = None, answer_delay: float = 0.0,
                 preamble: int = 4) -> None:
        super().__init__(meters, reactor, answer_delay, preamble)
        self.imei = imei
        self.protocols: list[Dlt645BusProtocol] = []

    def buildProtocol(self, addr: Any) -> Dlt645BusProtocol | None:
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            self.protocols.append(protocol)
        return protocol

    def registration(self) -> bytes:
        return f"ID:{self.imei}\r\n".encode("ascii")

    def send(self, data: bytes) -> None:
        live = [p for p in self.protocols if p.transport is not None]
        if live:
            live[-1].transport.write(data)  # type: ignore[union-attr]

    def report(self, address: str) -> bytes:
        """Send meter ``address``'s report of its status word; returns the bytes sent."""
        meter = self.meter(address)
        if meter is None:
            raise KeyError(address)
        data = meter.report().encode(preamble=self.preamble)
        self.send(data)
        return data


def serve_pty(
    reactor: IConnectingReactor, device: str, factory: Dlt645BusFactory, baud: int = 2400
) -> Any:
    """Serve the factory's meters on a serial device or pty (8E1, as DL/T 645 lines run)."""
    return serve.serve_pty(reactor, device, factory, baudrate=baud, frame="8E1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fep.sim.dlt645", description="Simulated DL/T 645 meters on one bus"
    )
    parser.add_argument("--port", type=int, metavar="PORT", help="listen on this TCP port")
    parser.add_argument("--interface", default="127.0.0.1", help="TCP listen address")
    parser.add_argument("--pty", metavar="DEVICE", help="serve on this serial device or pty")
    parser.add_argument("--baud", type=int, default=2400, help="serial speed (8E1)")
    parser.add_argument("--address", default="000000123456", help="the first meter's address")
    parser.add_argument("--count", type=int, default=1, help="meters on the bus")
    parser.add_argument("--edition", type=int, choices=(2007, 1997), default=2007)
    parser.add_argument("--delay", type=float, default=0.0, help="answer delay in seconds")
    parser.add_argument(
        "--max-data", type=int, default=200, help="data bytes per frame before follow-ups"
    )
    parser.add_argument(
        "--profile-period", type=int, default=15, help="load-profile minutes (0: none)"
    )
    parser.add_argument(
        "--clock-offset", type=float, default=0.0, help="seconds the meters' clocks run ahead"
    )
    parser.add_argument("--damage", type=int, default=0, help="spoil the first N answers")
    parser.add_argument(
        "--refuse",
        action="append",
        default=[],
        metavar="DI=STATUS",
        help="answer reads of this DI (hex) with this error status (hex), e.g. 00010000=04",
    )
    args = parser.parse_args(argv)
    refusals: dict[int, int] = {}
    for text in args.refuse:
        di, sep, status = text.partition("=")
        try:
            if not sep:
                raise ValueError
            refusals[int(di, 16)] = int(status, 16)
        except ValueError:
            parser.error(f"--refuse {text!r} is not DI=STATUS in hex")
    if args.port is None and not args.pty:
        parser.error("give --port or --pty")
    try:
        encode_address(args.address)
        if not args.address.isdigit():
            raise ValueError
    except ValueError:
        parser.error(f"--address {args.address!r} is not 1..12 decimal digits")

    reactor = serve.command_reactor()
    meters = make_meters(
        max(args.count, 1),
        args.address,
        edition=args.edition,
        max_data=args.max_data,
        profile_period=args.profile_period or None,
        clock_offset=args.clock_offset,
    )
    for meter in meters:
        meter.refusals.update(refusals)
    factory = Dlt645BusFactory(meters, reactor, args.delay)
    factory.damage_answers = args.damage
    addresses = ", ".join(m.address for m in meters)
    if args.port is not None:
        serve.serve_tcp(reactor, args.port, factory, args.interface, addresses)
    if args.pty:
        serve_pty(reactor, args.pty, factory, args.baud)
        print(f"serving {addresses} on {args.pty}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "Dlt645BusFactory",
    "Dlt645BusProtocol",
    "Register",
    "SimEvent",
    "SimulatedDlt645Meter",
    "make_meters",
    "serve_pty",
]
