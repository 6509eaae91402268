"""A simulated two-channel pulse recorder (the "fep PR-2" of etc/devices/sim-pr2.ini) for
tests and demos: pulse inputs fed by a daily pulse-rate profile (KYZ or KY wiring, counters
of 16 or 32 bits that roll over), an integration period, a history buffer of period records
in a ring, an event log (door, key contact, tamper, power loss and restore, low battery,
clock set), supply and battery voltages, a settable clock; served over Modbus RTU (a serial
device or pty) and Modbus TCP.

Time is lazy: the recorder works out everything up to "now" (its ``clock`` callable, a fake
one in tests) when it is asked, so a simulated day passes in one call. While the power is
off (``outages``) the recorder counts nothing, writes no records and answers nothing; it
restarts with its counters at 0 and flags the first record after.

``python -m fep.sim.pulse_recorder --port 1502``
``python -m fep.sim.pulse_recorder --pty /dev/pts/5 --baud 9600``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Final

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from fep.errors import FrameError
from fep.protocols.modbus import rtu, tcp
from fep.protocols.modbus.pdu import (
    COIL_ON,
    BitsResponse,
    ExceptionResponse,
    Function,
    ReadRequest,
    RegistersResponse,
    Request,
    Response,
    WriteCoilsRequest,
    WriteRegistersRequest,
    WriteResponse,
    WriteSingleRequest,
    decode_request,
)
from fep.pulse import Wiring
from fep.reactors import IConnectingReactor
from fep.sim import serve

log = Logger(namespace="fep.sim.pulse_recorder")

# Register layout (etc/devices/sim-pr2.ini).
IR_COUNTERS: Final = 0
IR_SUPPLY: Final = 4
IR_BATTERY: Final = 5
IR_STATUS: Final = 6
IR_HISTORY_INDEX: Final = 8
IR_EVENT_INDEX: Final = 10
IR_HISTORY_WINDOW: Final = 100
IR_EVENT_WINDOW: Final = 300
HR_CLOCK: Final = 0
HR_PERIOD: Final = 2
HR_HISTORY_SELECT: Final = 16
HR_EVENT_SELECT: Final = 18
HR_COUNTER_PRESET: Final = 20  # 20-21 input 1, 22-23 input 2: the counter, u32, writable
COIL_COUNTER_RESET: Final = 0  # coil 0 resets input 1's counter, coil 1 input 2's
HISTORY_PER_WINDOW: Final = 12
HISTORY_RECORD: Final = 9
EVENTS_PER_WINDOW: Final = 20
EVENT_RECORD: Final = 5

EVENT_CODES: Final = {
    "power-loss": 1, "power-restore": 2, "door-open": 3, "door-close": 4, "key-on": 5,
    "key-off": 6, "tamper": 7, "low-battery": 8, "battery-ok": 9, "clock-set": 10,
    "counter-reset": 11,
}
STATUS_BITS: Final = {"door": 0, "key": 1, "tamper": 2, "power_fail": 3, "low_battery": 4}
# What a scheduled event does to the status bits: (bit, set).
STATUS_EFFECT: Final = {
    "door-open": ("door", True), "door-close": ("door", False), "key-on": ("key", True),
    "key-off": ("key", False), "tamper": ("tamper", True), "low-battery": ("low_battery", True),
    "battery-ok": ("low_battery", False),
}
FLAG_RESTART: Final = 1
FLAG_POWER_FAIL: Final = 2


class IllegalAddress(Exception):
    """A request names registers the recorder does not have (exception 2)."""


class IllegalValue(Exception):
    """A write the recorder refuses (exception 3)."""


@attrs.frozen
class RateProfile:
    """Pulses per hour by time of day (UTC): ``steps`` are (hour the rate starts, rate),
    the first starting at hour 0; the day repeats."""

    steps: tuple[tuple[float, Fraction], ...] = ((0.0, Fraction(1200)),)

    def __attrs_post_init__(self) -> None:
        if not self.steps or self.steps[0][0] != 0:
            raise ValueError("a rate profile starts at hour 0")
        hours = [h for h, _ in self.steps]
        if hours != sorted(hours) or hours[-1] >= 24:
            raise ValueError("rate profile hours must rise within 0..24")

    @classmethod
    def parse(cls, text: str) -> RateProfile:
        """``"0=1200,8=3600,18=2400"``: hour=pulses per hour."""
        steps = []
        for part in text.split(","):
            hour, _, rate = part.partition("=")
            steps.append((float(hour), Fraction(rate.strip())))
        return cls(tuple(steps))

    def pulses(self, start: float, end: float) -> Fraction:
        """Pulses (exact) between two instants (epoch seconds)."""
        total = Fraction(0)
        t = Fraction(start)
        stop = Fraction(end)
        while t < stop:
            day = (t // 86400) * 86400
            into = (t - day) / 3600
            rate = self.steps[0][1]
            next_hour = Fraction(24)
            for i, (hour, r) in enumerate(self.steps):
                if into >= Fraction(hour):
                    rate = r
                    next_hour = (Fraction(self.steps[i + 1][0]) if i + 1 < len(self.steps)
                                 else Fraction(24))
            seg_end = min(stop, day + next_hour * 3600)
            total += rate * (seg_end - t) / 3600
            t = seg_end
        return total


@attrs.define
class Input:
    """One pulse input: its meter's pulse profile, wiring and counter width."""

    profile: RateProfile = attrs.field(factory=RateProfile)
    wiring: Wiring = Wiring.KYZ
    width: int = 32
    start: int = 0
    # Exact pulses so far (for the whole recorder run) and the counter.
    pulses: Fraction = Fraction(0)
    counter: int = 0

    def __attrs_post_init__(self) -> None:
        self.counter = self.start % (1 << self.width)

    def transitions(self) -> int:
        return int(self.pulses * self.wiring.counts_per_pulse)


@attrs.define
class HistoryEntry:
    number: int
    end: int
    counters: tuple[int, int]
    flags: int


@attrs.define
class LoggedEvent:
    number: int
    time: int
    code: int


@attrs.define
class PulseRecorder:
    """The recorder: what it counts, records, logs and answers.

    ``clock`` gives true time (epoch seconds); the recorder's own clock runs
    ``clock_offset`` seconds ahead. ``started`` is when it began counting (default: a day
    before the first ``clock()``). ``outages`` are (power off, power on) instants;
    ``schedule`` holds (instant, event name) for door, key, tamper and battery events."""

    clock: Callable[[], float] = time.time
    inputs: tuple[Input, Input] = attrs.field(factory=lambda: (Input(), Input(
        profile=RateProfile(((0.0, Fraction(600)),)), wiring=Wiring.KY)))
    period: int = 900
    started: float | None = None
    clock_offset: float = 0.0
    outages: list[tuple[float, float]] = attrs.field(factory=list)
    schedule: list[tuple[float, str]] = attrs.field(factory=list)
    history_capacity: int = 2976
    event_capacity: int = 500
    supply_centivolts: int = 23012
    battery_millivolts: int = 3601
    history: list[HistoryEntry] = attrs.field(factory=list)
    events: list[LoggedEvent] = attrs.field(factory=list)
    status: int = 0
    history_select: int = 0
    event_select: int = 0
    powered: bool = True
    _t: float = 0.0
    _restarted: bool = False
    _power_failed: bool = False
    _newest_record: int = 0
    _newest_event: int = 0

    def __attrs_post_init__(self) -> None:
        if 86400 % self.period:
            raise ValueError(f"period {self.period} s does not divide a day")
        if self.started is None:
            self.started = self.clock() - 86400
        self._t = float(self.started)
        self.outages = sorted(self.outages)
        self.schedule = sorted(self.schedule)

    # -- time -------------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock() + self.clock_offset

    def advance(self) -> None:
        """Count, record and log everything up to now."""
        target = self.clock()
        while self._t < target:
            nxt = self._next_stop(target)
            if self.powered:
                for inp in self.inputs:
                    before = inp.transitions()
                    inp.pulses += inp.profile.pulses(self._t, nxt)
                    inp.counter = (inp.counter + inp.transitions() - before) % (1 << inp.width)
            else:
                for inp in self.inputs:
                    # The meter keeps pulsing; the recorder does not see it.
                    inp.pulses += inp.profile.pulses(self._t, nxt)
            self._t = nxt
            self._at(nxt)

    def _next_stop(self, target: float) -> float:
        local = self._t + self.clock_offset
        boundary = (local // self.period + 1) * self.period - self.clock_offset
        stops = [target, boundary]
        stops += [t for off, on in self.outages for t in (off, on) if t > self._t]
        stops += [t for t, _ in self.schedule if t > self._t]
        return min(stops)

    def _at(self, t: float) -> None:
        for off, on in self.outages:
            if off == t and self.powered:
                self._log("power-loss", t)
                self.powered = False
                self._power_failed = True
            if on == t and not self.powered:
                self.powered = True
                self._restarted = True
                for inp in self.inputs:
                    inp.counter = 0
                self._log("power-restore", t)
        for when, name in self.schedule:
            if when == t and self.powered:
                self._log(name, t)
                effect = STATUS_EFFECT.get(name)
                if effect is not None:
                    bit = 1 << STATUS_BITS[effect[0]]
                    self.status = self.status | bit if effect[1] else self.status & ~bit
        local = t + self.clock_offset
        if self.powered and local % self.period == 0:
            flags = (FLAG_RESTART if self._restarted else 0) | (
                FLAG_POWER_FAIL if self._power_failed else 0)
            self._restarted = self._power_failed = False
            self._newest_record += 1
            self.history.append(HistoryEntry(self._newest_record, int(local),
                                             (self.inputs[0].counter, self.inputs[1].counter),
                                             flags))
            del self.history[: -self.history_capacity]

    def _log(self, name: str, t: float) -> None:
        self._newest_event += 1
        self.events.append(LoggedEvent(self._newest_event, int(t + self.clock_offset),
                                       EVENT_CODES[name]))
        del self.events[: -self.event_capacity]

    def set_clock(self, seconds: int) -> None:
        self.advance()
        self.clock_offset = seconds - self.clock()
        self._log("clock-set", self.clock())

    # -- registers --------------------------------------------------------------------------

    def input_registers(self) -> dict[int, int]:
        c1, c2 = self.inputs[0].counter, self.inputs[1].counter
        regs = {
            IR_COUNTERS: c1 >> 16 & 0xFFFF, IR_COUNTERS + 1: c1 & 0xFFFF,
            IR_COUNTERS + 2: c2 >> 16 & 0xFFFF, IR_COUNTERS + 3: c2 & 0xFFFF,
            IR_SUPPLY: self.supply_centivolts, IR_BATTERY: self.battery_millivolts,
            IR_STATUS: self.status,
            IR_HISTORY_INDEX: self._newest_record >> 16, IR_HISTORY_INDEX + 1:
                self._newest_record & 0xFFFF,
            IR_EVENT_INDEX: self._newest_event >> 16, IR_EVENT_INDEX + 1:
                self._newest_event & 0xFFFF,
        }
        by_number = {h.number: h for h in self.history}
        for i in range(HISTORY_PER_WINDOW):
            h = by_number.get(self.history_select + i)
            words = [0] * HISTORY_RECORD
            if h is not None:
                words = [*_u32(h.number), *_u32(h.end), *_u32(h.counters[0]),
                         *_u32(h.counters[1]), h.flags]
            for k, w in enumerate(words):
                regs[IR_HISTORY_WINDOW + i * HISTORY_RECORD + k] = w
        events = {e.number: e for e in self.events}
        for i in range(EVENTS_PER_WINDOW):
            e = events.get(self.event_select + i)
            words = [0] * EVENT_RECORD
            if e is not None:
                words = [*_u32(e.number), *_u32(e.time), e.code]
            for k, w in enumerate(words):
                regs[IR_EVENT_WINDOW + i * EVENT_RECORD + k] = w
        return regs

    def holding_registers(self) -> dict[int, int]:
        now = int(self.now())
        return {
            HR_CLOCK: now >> 16 & 0xFFFF, HR_CLOCK + 1: now & 0xFFFF, HR_PERIOD: self.period,
            HR_HISTORY_SELECT: self.history_select >> 16,
            HR_HISTORY_SELECT + 1: self.history_select & 0xFFFF,
            HR_EVENT_SELECT: self.event_select >> 16,
            HR_EVENT_SELECT + 1: self.event_select & 0xFFFF,
            **{HR_COUNTER_PRESET + 2 * i + k: w for i, inp in enumerate(self.inputs)
               for k, w in enumerate(_u32(inp.counter))},
        }

    def write(self, address: int, values: Sequence[int]) -> None:
        span = set(range(address, address + len(values)))
        presets = set(range(HR_COUNTER_PRESET, HR_COUNTER_PRESET + 2 * len(self.inputs)))
        writable = {HR_CLOCK, HR_CLOCK + 1, HR_HISTORY_SELECT, HR_HISTORY_SELECT + 1,
                    HR_EVENT_SELECT, HR_EVENT_SELECT + 1} | presets
        if not span <= writable:
            raise IllegalAddress(f"holding {sorted(span - writable)} not writable")
        regs = self.holding_registers()
        for i, v in enumerate(values):
            regs[address + i] = v
        if span & {HR_CLOCK, HR_CLOCK + 1}:
            if span != {HR_CLOCK, HR_CLOCK + 1}:
                raise IllegalValue("the clock is written as both registers")
            self.set_clock(regs[HR_CLOCK] << 16 | regs[HR_CLOCK + 1])
        if span & {HR_HISTORY_SELECT, HR_HISTORY_SELECT + 1}:
            self.history_select = regs[HR_HISTORY_SELECT] << 16 | regs[HR_HISTORY_SELECT + 1]
        if span & {HR_EVENT_SELECT, HR_EVENT_SELECT + 1}:
            self.event_select = regs[HR_EVENT_SELECT] << 16 | regs[HR_EVENT_SELECT + 1]
        for i in range(len(self.inputs)):
            pair = {HR_COUNTER_PRESET + 2 * i, HR_COUNTER_PRESET + 2 * i + 1}
            if span & pair:
                if not pair <= span:
                    raise IllegalValue("a counter is preset as both registers")
                at = HR_COUNTER_PRESET + 2 * i
                self.preset_counter(i, regs[at] << 16 | regs[at + 1])

    def preset_counter(self, index: int, value: int) -> None:
        """Set input ``index``'s counter (0: a reset); the recorder logs a counter reset,
        and a reset to 0 flags the next period record as a restart (the counts before it
        in that period are lost)."""
        self.advance()
        inp = self.inputs[index]
        if value >= 1 << inp.width:
            raise IllegalValue(f"{value} does not fit a {inp.width}-bit counter")
        inp.counter = value
        if value == 0:
            self._restarted = True
        self._log("counter-reset", self.clock())

    def coils(self) -> dict[int, int]:
        """The counter reset coils: they read off (a reset is done when written)."""
        return {COIL_COUNTER_RESET + i: 0 for i in range(len(self.inputs))}

    def answer(self, request: Request) -> Response:
        """The recorder's answer to one request (an exception response when refused)."""
        self.advance()
        try:
            if isinstance(request, ReadRequest):
                if request.function == Function.READ_INPUT_REGISTERS:
                    bank = self.input_registers()
                elif request.function == Function.READ_HOLDING_REGISTERS:
                    bank = self.holding_registers()
                elif request.function == Function.READ_COILS:
                    coils = self.coils()
                    span = range(request.address, request.address + request.count)
                    if any(a not in coils for a in span):
                        raise IllegalAddress(f"no coil in {span}")
                    return BitsResponse(request.function, tuple(bool(coils[a]) for a in span))
                else:
                    return ExceptionResponse(request.function, 1)
                span = range(request.address, request.address + request.count)
                if any(a not in bank for a in span):
                    raise IllegalAddress(f"no register in {span}")
                return RegistersResponse(request.function, tuple(bank[a] for a in span))
            if isinstance(request, WriteRegistersRequest):
                self.write(request.address, request.values)
                return WriteResponse(request.function, request.address, len(request.values))
            if isinstance(request, WriteSingleRequest) and (
                    request.function == Function.WRITE_SINGLE_REGISTER):
                self.write(request.address, [request.value])
                return WriteResponse(request.function, request.address, request.value)
            if isinstance(request, WriteSingleRequest) and (
                    request.function == Function.WRITE_SINGLE_COIL):
                if request.address not in self.coils():
                    raise IllegalAddress(f"no coil {request.address}")
                if request.value == COIL_ON:
                    self.preset_counter(request.address - COIL_COUNTER_RESET, 0)
                return WriteResponse(request.function, request.address, request.value)
            return ExceptionResponse(request.function, 1)
        except IllegalAddress:
            return ExceptionResponse(request.function, 2)
        except IllegalValue:
            return ExceptionResponse(request.function, 3)

    def __repr__(self) -> str:
        return f"<PulseRecorder records={self._newest_record} events={self._newest_event}>"


def _u32(value: int) -> tuple[int, int]:
    return value >> 16 & 0xFFFF, value & 0xFFFF


def at(text: str) -> float:
    """Epoch seconds of an ISO time (UTC unless a zone is given): for schedules."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


# ---------------------------------------------------------------------------
# Serving it
# ---------------------------------------------------------------------------


class RecorderServerProtocol(Protocol):
    """The recorder side of one connection or serial line, RTU or TCP framing."""

    factory: RecorderServerFactory

    def __init__(self, framing: str) -> None:
        self.framing = framing
        self._decoder: rtu.RtuDecoder | tcp.MbapDecoder = (
            rtu.RtuDecoder(requests=True) if framing == "rtu" else tcp.MbapDecoder())
        self._pending: list[IDelayedCall] = []

    def connectionMade(self) -> None:
        self.factory.connections += 1

    def dataReceived(self, data: bytes) -> None:
        for item in self._decoder.decode_all(data):
            if isinstance(item, FrameError):
                self.factory.bad_requests += 1
                log.debug("recorder ignored: {why}", why=item.message)
            else:
                self._handle(item)

    def _handle(self, frame: rtu.RtuFrame | tcp.TcpFrame) -> None:
        f = self.factory
        f.requests += 1
        recorder = f.recorder
        recorder.advance()
        if f.silent or not recorder.powered:
            return
        if frame.unit != f.unit:
            if isinstance(frame, tcp.TcpFrame) and frame.unit not in (0, 255):
                # A gateway with no such unit behind it.
                self._reply(frame, ExceptionResponse(frame.pdu[0] & 0x7F, 0x0B).encode())
            return
        try:
            request = decode_request(frame.pdu)
        except FrameError:
            self._reply(frame, ExceptionResponse(frame.pdu[0] & 0x7F, 1).encode())
            return
        except ValueError:
            self._reply(frame, ExceptionResponse(frame.pdu[0] & 0x7F, 3).encode())
            return
        if isinstance(request, WriteCoilsRequest):
            self._reply(frame, ExceptionResponse(request.function, 1).encode())
            return
        self._reply(frame, recorder.answer(request).encode())

    def _reply(self, frame: rtu.RtuFrame | tcp.TcpFrame, pdu: bytes) -> None:
        f = self.factory
        if f.drop_answers > 0:
            f.drop_answers -= 1
            return
        if isinstance(frame, tcp.TcpFrame):
            out = tcp.encode(frame.transaction, frame.unit, pdu)
        else:
            out = rtu.encode(frame.unit, pdu)
        if f.damage_answers > 0:
            f.damage_answers -= 1
            out = out[:-1] + bytes([out[-1] ^ 0x55])
        out = f.noise + out
        self._pending = [c for c in self._pending if c.active()]
        self._pending.append(f.reactor.callLater(f.answer_delay, self._send, out))

    def _send(self, data: bytes) -> None:
        if self.transport is None:
            return
        if self.factory.split_answers:
            for b in data:
                self.transport.write(bytes([b]))
        else:
            self.transport.write(data)
        self.factory.answers += 1

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        for call in self._pending:
            if call.active():
                call.cancel()
        self._pending = []


class RecorderServerFactory(ServerFactory[RecorderServerProtocol]):
    """Serves one recorder as Modbus ``unit``. Line faults: ``silent`` never answers,
    ``drop_answers``/``damage_answers`` lose or spoil (CRC) the next N answers, ``noise``
    goes before every answer, ``split_answers`` writes byte by byte."""

    noisy = False

    def __init__(self, recorder: PulseRecorder, reactor: IReactorTime | None = None, *,
                 framing: str = "tcp", unit: int = 1, answer_delay: float = 0.0) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        if framing not in ("rtu", "tcp"):
            raise ValueError(f"framing is rtu or tcp, not {framing!r}")
        self.recorder = recorder
        self.reactor = reactor
        self.framing = framing
        self.unit = unit
        self.answer_delay = answer_delay
        self.silent = False
        self.drop_answers = 0
        self.damage_answers = 0
        self.noise = b""
        self.split_answers = False
        self.connections = 0
        self.requests = 0
        self.answers = 0
        self.bad_requests = 0

    def buildProtocol(self, addr: Any) -> RecorderServerProtocol:
        p = RecorderServerProtocol(self.framing)
        p.factory = self
        return p


def serve_pty(reactor: IConnectingReactor, device: str, factory: RecorderServerFactory,
              baud: int = 9600, parity: str = "E") -> Any:
    """Serve the recorder on a serial device or pty (RTU, 8 data bits, even parity as the
    Modbus serial line guide's default)."""
    return serve.serve_pty(reactor, device, factory, baudrate=baud, frame=f"8{parity}1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fep.sim.pulse_recorder",
        description="A simulated two-channel pulse recorder (Modbus RTU/TCP, map sim-pr2)")
    parser.add_argument("--port", type=int, help="serve Modbus TCP on this port")
    parser.add_argument("--interface", default="127.0.0.1", help="TCP listen address")
    parser.add_argument("--pty", metavar="DEVICE", help="serve Modbus RTU on this device")
    parser.add_argument("--baud", type=int, default=9600, help="serial speed (8E1)")
    parser.add_argument("--unit", type=int, default=1, help="Modbus unit id")
    parser.add_argument("--period", type=int, default=900, help="integration period, s")
    parser.add_argument("--rate1", default="0=1200,8=3600,18=2400",
                        help="input 1 pulses per hour by UTC hour (HOUR=RATE,...)")
    parser.add_argument("--rate2", default="0=600", help="input 2 pulses per hour")
    parser.add_argument("--wiring1", choices=("kyz", "ky"), default="kyz")
    parser.add_argument("--wiring2", choices=("kyz", "ky"), default="ky")
    parser.add_argument("--history-days", type=float, default=1.0,
                        help="days of history at start")
    args = parser.parse_args(argv)
    if args.port is None and not args.pty:
        parser.error("give --port or --pty")

    reactor = serve.command_reactor()
    now = time.time()
    recorder = PulseRecorder(
        inputs=(Input(RateProfile.parse(args.rate1), Wiring(args.wiring1)),
                Input(RateProfile.parse(args.rate2), Wiring(args.wiring2))),
        period=args.period,
        started=(now - args.history_days * 86400) // args.period * args.period,
    )
    if args.port is not None:
        factory = RecorderServerFactory(recorder, reactor, framing="tcp", unit=args.unit)
        serve.serve_tcp(reactor, args.port, factory, args.interface,
                        f"unit {args.unit} (Modbus TCP)")
    if args.pty:
        serve_pty(reactor, args.pty,
                  RecorderServerFactory(recorder, reactor, framing="rtu", unit=args.unit),
                  args.baud)
        print(f"serving unit {args.unit} (Modbus RTU) on {args.pty}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "EVENT_CODES",
    "Input",
    "PulseRecorder",
    "RateProfile",
    "RecorderServerFactory",
    "RecorderServerProtocol",
    "at",
    "serve_pty",
]
