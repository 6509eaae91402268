"""A simulated IEC 62056-21 mode C meter (or a multidrop line of them) for tests and demos:
serves readouts over TCP, over a serial pty, or pushes them to a listener; in programming
mode (``ACK 0 Z 1``) it prompts for its password (P0), takes it (P1: ACK, or a break for a
wrong one), answers R1/R5 reads of its clock (0.9.1, 0.9.2), registers, settings, load
profile (P.01) and logbook (P.98), and takes W1/W5 writes of its clock and settings.

``python -m fep.sim.iec62056_21 --tcp 4059 --meters 3``
``python -m fep.sim.iec62056_21 --pty /dev/pts/5``
``python -m fep.sim.iec62056_21 --push tcp:host=127.0.0.1:port=4060 --every 5``
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from fep.errors import FrameError
from fep.interfaces import ISerialLine
from fep.protocols.iec62056_21.frames import (
    ACK,
    MODE_C_BAUD,
    NAK,
    Command,
    DataBlock,
    FrameDecoder,
    Identification,
    Nak,
    OptionSelect,
    SignOn,
)
from fep.protocols.iec62056_21.profile import parse_stamp
from fep.reactors import IConnectingReactor
from fep.sim import serve

log = Logger(namespace="fep.sim.iec62056_21")


@attrs.define
class Register:
    """An energy register that advances with wall time (``per_hour`` units an hour)."""

    address: str
    start: Decimal
    per_hour: Decimal
    unit: str = "kWh"
    decimals: int = 3

    def text(self, elapsed_s: float) -> str:
        value = self.start + self.per_hour * Decimal(str(elapsed_s)) / Decimal(3600)
        q = Decimal(1).scaleb(-self.decimals)
        return f"{self.address}({value.quantize(q):0{8 + self.decimals}f}*{self.unit})"


@attrs.define
class SimulatedIecMeter:
    """One meter: how it identifies itself and what it reads out.

    ``readout_text`` (the bytes between STX and ETX) replaces the generated readout, for
    published fixtures. ``clock`` gives wall time (seconds); tests pass a fake one.
    """

    address: str = "12345678"
    manufacturer: str = "FEP"
    identification: str = "SIM100"
    baud_char: str = "5"
    serial: str | None = None
    registers: list[Register] = attrs.Factory(
        lambda: [
            Register("1.8.0", Decimal("1234.5"), Decimal("0.9")),
            Register("2.8.0", Decimal("56.125"), Decimal("0.1")),
        ]
    )
    extra_lines: list[str] = attrs.Factory(
        lambda: ["32.7.0(230.1*V)", "1.6.0(0.123*kW)(2311221015)"]
    )
    readout_text: bytes | None = None
    corrupt_bcc: bool = False
    with_clock: bool = True
    clock: Callable[[], float] = time.time
    started: float | None = None
    # Programming mode (False: a readout-only meter, which NAKs ``ACK 0 Z 1``): the
    # password (None: none asked), the P0 operand, what a wrong password gets ("break":
    # SOH B0 ETX, "error": (ERROR)).
    programming: bool = True
    password: str | None = "00000000"
    seed: str = "00000000"
    password_refusal: str = "break"
    # The meter's clock runs this many seconds ahead of ``clock``; 0.9.1/0.9.2 as
    # hhmmss/YYMMDD ("plain") or hh:mm:ss/YY-MM-DD ("separated").
    clock_offset: float = 0.0
    clock_format: str = "plain"
    # Load profile: its name, period (minutes) and how far back it reaches (seconds).
    profile_name: str = "P.01"
    profile_period: int = 15
    history: float = 7 * 86400.0
    # Logbook entries (meter time in epoch seconds, VDEW status word); by default a power
    # failure three hours before the start and its restoration ten minutes later.
    logbook: list[tuple[float, int]] = attrs.Factory(list)
    parameters: dict[str, str] = attrs.Factory(lambda: {"0.8.0": "15", "0.8.4": "15"})
    # Faults: NAK the next N commands; send the next N programming answers with a bad BCC.
    nak_commands: int = 0
    corrupt_answers: int = 0
    # What happened: clock sets, wrong passwords, commands taken (for tests).
    clock_sets: int = 0
    refusals: int = 0
    commands_seen: list[str] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock()
        if not self.logbook:
            start = self.started if self.started is not None else self.clock()
            self.logbook += [(start - 3 * 3600.0, 0x00000080),
                             (start - 3 * 3600.0 + 600.0, 0x00000040)]

    def identification_message(self) -> Identification:
        return Identification(self.manufacturer, self.baud_char, self.identification)

    def readout(self) -> bytes:
        """The data between STX and ETX, values as of now."""
        if self.readout_text is not None:
            return self.readout_text
        now = self.clock()
        lines = [f"0.0.0({self.serial or self.address})"]
        if self.with_clock:
            t = datetime.fromtimestamp(now + self.clock_offset, UTC)
            lines += [f"0.9.1({t:%H:%M:%S})", f"0.9.2({t:%y-%m-%d})"]
        elapsed = now - (self.started if self.started is not None else now)
        lines += [r.text(elapsed) for r in self.registers]
        lines += self.extra_lines
        return ("".join(f"{line}\r\n" for line in lines) + "!\r\n").encode("ascii")

    def readout_block(self) -> bytes:
        block = DataBlock.build(self.readout())
        if self.corrupt_bcc:
            block = DataBlock(block.data, block.received_bcc ^ 0x01)
        return block.encode()

    # -- programming mode -------------------------------------------------------------

    def meter_time(self) -> datetime:
        """The meter's own clock (UTC; the simulated meter keeps UTC as its local time)."""
        return datetime.fromtimestamp(self.clock() + self.clock_offset, UTC)

    def set_meter_time(self, when: datetime) -> None:
        """Set the meter's clock; the logbook notes it (status 0x20, device clock set)."""
        self.clock_offset = when.timestamp() - self.clock()
        self.logbook.append((when.timestamp(), 0x00000020))
        self.clock_sets += 1

    def _clock_text(self, address: str) -> str:
        t = self.meter_time()
        if self.clock_format == "separated":
            return f"{t:%H:%M:%S}" if address == "0.9.1" else f"{t:%y-%m-%d}"
        return f"{t:%H%M%S}" if address == "0.9.1" else f"{t:%y%m%d}"

    def profile_channels(self) -> list[tuple[str, str, Decimal]]:
        """(code, unit, mean demand) per energy register: ``1.8.0`` gives ``1.5.0`` in kW."""
        out = []
        for r in self.registers:
            parts = r.address.split(".")
            if len(parts) == 3 and parts[1] == "8":
                out.append((f"{parts[0]}.5.0", "kW", r.per_hour))
        return out

    def profile_value(self, end: datetime, mean: Decimal) -> Decimal:
        """A channel's demand for the interval ending at ``end``: its mean, varied by the
        quarter of the hour (deterministic, so a value read twice is the same)."""
        step = int(end.timestamp() // (self.profile_period * 60)) % 4
        return (mean * (Decimal(1) + Decimal(step) / Decimal(10))).quantize(Decimal("0.001"))

    def _status_between(self, start: float, end: float) -> int:
        status = 0
        for when, bits in self.logbook:
            if start < when <= end:
                status |= bits
        return status

    def profile_answer(self, argument: str) -> str:
        """``P.01(...)`` lines for the captures in ``from;to`` (either end open)."""
        period = self.profile_period * 60
        now = self.meter_time().timestamp()
        first_end = (now - self.history) // period * period + period
        last_end = now // period * period
        since, until = _range(argument)
        if since is not None:
            first_end = max(first_end, -(-since.timestamp() // period) * period)
        if until is not None:
            last_end = min(last_end, until.timestamp() // period * period)
        channels = self.profile_channels()
        lines: list[str] = []
        previous: int | None = None
        end = first_end
        while end <= last_end:
            status = self._status_between(end - period, end)
            if status != previous:
                stamp = "0" + datetime.fromtimestamp(end, UTC).strftime("%y%m%d%H%M%S")
                head = f"{self.profile_name}({stamp})({status:08X})({self.profile_period})"
                head += f"({len(channels)})" + "".join(f"({c})({u})" for c, u, _ in channels)
                lines.append(head)
                previous = status
            stamp_time = datetime.fromtimestamp(end, UTC)
            lines.append("".join(f"({self.profile_value(stamp_time, mean)})"
                                 for _, _, mean in channels))
            end += period
        if not lines:
            return "(NO DATA)"
        return "\r\n".join(lines)

    def logbook_answer(self, argument: str) -> str:
        since, until = _range(argument)
        lines = []
        for when, bits in sorted(self.logbook):
            if since is not None and when < since.timestamp():
                continue
            if until is not None and when > until.timestamp():
                continue
            stamp = "0" + datetime.fromtimestamp(when, UTC).strftime("%y%m%d%H%M%S")
            lines.append(f"P.98({stamp})({bits:08X})()(0)")
        if not lines:
            return "(NO DATA)"
        return "\r\n".join(lines)

    def read_register(self, address: str, argument: str) -> str:
        """The answer's data to ``R5 address(argument)``: ``(ERROR)`` for an address it
        does not have."""
        if address in ("0.9.1", "0.9.2"):
            return f"{address}({self._clock_text(address)})"
        if address == self.profile_name:
            return self.profile_answer(argument)
        if address == "P.98":
            return self.logbook_answer(argument)
        if address in self.parameters:
            return f"{address}({self.parameters[address]})"
        elapsed = self.clock() - (self.started if self.started is not None else self.clock())
        for r in self.registers:
            if r.address == address:
                return r.text(elapsed)
        return "(ERROR)"

    def write_register(self, address: str, value: str) -> str | None:
        """Apply ``W5 address(value)``: None when done, the error text otherwise."""
        digits = re.sub(r"[^0-9]", "", value)
        now = self.meter_time()
        try:
            if address == "0.9.1" and len(digits) == 6:
                t = time_of_day(int(digits[0:2]), int(digits[2:4]), int(digits[4:6]))
                self.set_meter_time(datetime.combine(now.date(), t, UTC))
                return None
            if address == "0.9.2" and len(digits) in (6, 7):
                digits = digits[-6:]
                d = date(2000 + int(digits[0:2]), int(digits[2:4]), int(digits[4:6]))
                self.set_meter_time(datetime.combine(d, now.time(), UTC))
                return None
        except ValueError:
            return "ERROR"
        if address in self.parameters and value.strip():
            self.parameters[address] = value.strip()
            self.logbook.append((now.timestamp(), 0x00000100))
            return None
        return "ERROR"


def _range(argument: str) -> tuple[datetime | None, datetime | None]:
    start, _, end = argument.partition(";")
    return parse_stamp(start, UTC), parse_stamp(end, UTC)


class IecMeterServerProtocol(Protocol):
    """The meter side of one line or connection: answers sign-ons by device address."""

    factory: IecMeterServerFactory

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._selected: SimulatedIecMeter | None = None
        # Programming mode: the meter in it, whether its password was given, and the last
        # answer (sent again on our NAK).
        self._programming: SimulatedIecMeter | None = None
        self._logged_in = False
        self._last_answer = b""
        self._pending: list[IDelayedCall] = []
        # Bytes heard while idle: an idle meter listens for a sign-on and nothing else, so
        # other traffic on a shared line (other protocols' frames) never wedges it.
        self._idle = bytearray()

    def _later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self._pending = [c for c in self._pending if c.active()]
        self._pending.append(self.factory.reactor.callLater(delay, fn, *args))

    def _sign_ons(self, data: bytes) -> bytes:
        """While idle: the complete sign-on messages (``/?...!CRLF``) in what was heard;
        anything else is dropped, as a meter waiting to be addressed ignores it."""
        self._idle += data
        out = bytearray()
        while True:
            start = self._idle.find(b"/?")
            if start < 0:
                keep = 1 if self._idle.endswith(b"/") else 0
                del self._idle[: len(self._idle) - keep]
                break
            del self._idle[:start]
            end = self._idle.find(b"!\r\n")
            again = self._idle.find(b"/?", 2)
            if end < 0:
                if len(self._idle) > 64:  # no sign-on is that long
                    del self._idle[:2]
                    continue
                break
            if 0 <= again < end:  # a fresh sign-on began before this one ended
                del self._idle[:again]
                continue
            out += self._idle[: end + 3]
            del self._idle[: end + 3]
        return bytes(out)

    def dataReceived(self, data: bytes) -> None:
        if self._selected is None and self._programming is None and not self._decoder.buffered:
            data = self._sign_ons(data)
            if not data:
                return
        # Every message and error of the bytes, in order: none before a damaged command is
        # lost, none behind it waits for the master's next bytes.
        for item in self._decoder.decode_all(data):
            if not isinstance(item, FrameError):
                self._handle(item)
            elif self._programming is not None and item.field == "BCC":
                self._answer(bytes([NAK]))  # a damaged command: ask for it again
            else:
                # A real meter ignores what it cannot read and waits for the next sign-on.
                log.debug("simulator ignored: {why}", why=item.message)
                self._decoder.skip_to_frame_start()
                self._selected = None
                self._programming = None

    def _handle(self, message: object) -> None:
        if self._programming is not None and not isinstance(message, SignOn):
            self._program(self._programming, message)
            return
        if isinstance(message, SignOn):
            self._programming = None
            meter = self.factory.meter_for(message.address)
            self._selected = meter
            if meter is not None:
                self._later(
                    self.factory.answer_delay, self._send, meter.identification_message().encode()
                )
        elif isinstance(message, OptionSelect) and self._selected is not None:
            meter = self._selected
            self._selected = None
            if message.mode not in ("0", "1") or (message.mode == "1" and not meter.programming):
                self._later(self.factory.answer_delay, self._send, b"\x15")
                return
            baud = MODE_C_BAUD.get(message.baud_char)
            serial = ISerialLine(self.transport, None)
            delay = self.factory.answer_delay
            if serial is not None and baud is not None and message.baud_char != "0":
                # Mode C: switch after the ACK, answer at the new speed ~200 ms later.
                self._later(delay, serial.set_baudrate, baud)
                delay += 0.2
            if message.mode == "1":
                # Programming mode: the password prompt with the operand.
                self._programming = meter
                self._logged_in = meter.password is None
                prompt = Command("P", "0", f"({meter.seed})".encode("ascii")).encode()
                self._last_answer = prompt
                self._later(delay, self._send, prompt)
                return
            self._later(delay, self._send, meter.readout_block())
        elif isinstance(message, Command) and message.command == "B":
            self._selected = None

    # -- programming mode -------------------------------------------------------------

    def _answer(self, data: bytes) -> None:
        self._last_answer = data
        self._later(self.factory.answer_delay, self._send, data)

    def _data(self, meter: SimulatedIecMeter, text: str) -> None:
        block = DataBlock.build(text.encode("ascii"))
        self._answer(block.encode())
        if meter.corrupt_answers > 0:
            # Damaged on the line: our NAK gets the good one (kept as the last answer).
            meter.corrupt_answers -= 1
            self._pending[-1].cancel()
            damaged = DataBlock(block.data, block.received_bcc ^ 0x01).encode()
            self._later(self.factory.answer_delay, self._send, damaged)

    def _program(self, meter: SimulatedIecMeter, message: object) -> None:
        if isinstance(message, Nak):
            self._later(self.factory.answer_delay, self._send, self._last_answer)
            return
        if not isinstance(message, Command):
            return  # a meter in programming mode ignores anything else
        if meter.nak_commands > 0:
            meter.nak_commands -= 1
            self._answer(bytes([NAK]))
            return
        name = f"{message.command}{message.command_type}"
        data = (message.data or b"").decode("ascii", "replace")
        meter.commands_seen.append(name if message.command == "P" else f"{name} {data}")
        if message.command == "B":
            self._programming = None
            return
        if message.command == "P" and message.command_type == "1":
            if data == f"({meter.password})" or meter.password is None:
                self._logged_in = True
                self._answer(bytes([ACK]))
                return
            meter.refusals += 1
            if meter.password_refusal == "error":
                self._data(meter, "(ERROR)")
                return
            self._programming = None
            self._answer(Command("B", "0").encode())
            return
        if not self._logged_in:
            self._data(meter, "(NO ACCESS)")
            return
        address, _, rest = data.partition("(")
        argument = rest[:-1] if rest.endswith(")") else rest
        if message.command == "R" and message.command_type in ("1", "5"):
            self._data(meter, meter.read_register(address.strip(), argument))
        elif message.command == "W" and message.command_type in ("1", "5"):
            refused = meter.write_register(address.strip(), argument)
            if refused is None:
                self._answer(bytes([ACK]))
            else:
                self._data(meter, f"({refused})")
        else:
            self._data(meter, "(ERROR)")

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        for call in self._pending:
            if call.active():
                call.cancel()
        self._pending = []


class IecMeterServerFactory(ServerFactory[IecMeterServerProtocol]):
    """Serves meters on one line: ``/?!`` is answered only when there is one meter;
    otherwise only the addressed meter answers (multidrop)."""

    protocol = IecMeterServerProtocol

    def __init__(
        self,
        meters: Sequence[SimulatedIecMeter],
        reactor: IReactorTime | None = None,
        answer_delay: float = 0.0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.meters = list(meters)
        self.reactor = reactor
        self.answer_delay = answer_delay

    def meter_for(self, address: str) -> SimulatedIecMeter | None:
        if not address:
            return self.meters[0] if len(self.meters) == 1 else None
        for meter in self.meters:
            if meter.address == address or meter.address.lstrip("0") == address.lstrip("0"):
                return meter
        return None


def serve_pty(reactor: IConnectingReactor, device: str, factory: IecMeterServerFactory) -> Any:
    """Serve ``factory``'s meters on a serial device or pty (300 Bd 7E1 to start)."""
    return serve.serve_pty(reactor, device, factory, baudrate=300, frame="7E1")


class PushingMeterProtocol(Protocol):
    """Connects out and sends identification + readout every ``every`` seconds."""

    def __init__(self, meter: SimulatedIecMeter, every: float, reactor: IReactorTime) -> None:
        self.meter = meter
        self.every = every
        self.reactor = reactor
        self._loop: LoopingCall | None = None

    def push(self) -> None:
        assert self.transport is not None
        self.transport.write(
            self.meter.identification_message().encode() + self.meter.readout_block()
        )

    def connectionMade(self) -> None:
        self._loop = LoopingCall(self.push)
        self._loop.clock = self.reactor
        self._loop.start(self.every, now=True)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self._loop is not None and self._loop.running:
            self._loop.stop()


class PushingMeterFactory(ClientFactory[PushingMeterProtocol]):
    def __init__(self, meter: SimulatedIecMeter, every: float, reactor: IReactorTime) -> None:
        self.meter = meter
        self.every = every
        self.reactor = reactor

    def buildProtocol(self, addr: object) -> PushingMeterProtocol:
        return PushingMeterProtocol(self.meter, self.every, self.reactor)


def make_meters(
    count: int, corrupt_bcc: bool = False, first_address: int = 10000001
) -> list[SimulatedIecMeter]:
    """``count`` meters with addresses ``first_address``, the next, ... and distinct
    registers."""
    return [
        SimulatedIecMeter(
            address=f"{first_address + i}",
            identification=f"SIM{i + 1:03d}",
            registers=[
                Register("1.8.0", Decimal(1000 * (i + 1)) + Decimal("0.5"), Decimal("0.9")),
                Register("2.8.0", Decimal(10 * (i + 1)), Decimal("0.1")),
            ],
            corrupt_bcc=corrupt_bcc,
        )
        for i in range(count)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fep.sim.iec62056_21", description="Simulated IEC 62056-21 meters"
    )
    parser.add_argument("--tcp", type=int, metavar="PORT", help="listen on this TCP port")
    parser.add_argument("--interface", default="127.0.0.1", help="TCP listen address")
    parser.add_argument("--pty", metavar="DEVICE", help="serve on this serial device or pty")
    parser.add_argument("--push", metavar="ENDPOINT", help="push readouts to this endpoint")
    parser.add_argument("--every", type=float, default=5.0, help="push period in seconds")
    parser.add_argument("--meters", type=int, default=1, help="how many meters on the line")
    parser.add_argument("--delay", type=float, default=0.0, help="answer delay in seconds")
    parser.add_argument("--first-address", type=int, default=10000001,
                        help="device address of the first meter; the others follow")
    parser.add_argument("--corrupt-bcc", action="store_true", help="send a wrong BCC")
    parser.add_argument("--readout-file", help="fixed readout text (bytes between STX and ETX)")
    parser.add_argument("--password", default="00000000",
                        help="programming-mode password (P1); empty: none asked")
    parser.add_argument("--clock-offset", type=float, default=0.0,
                        help="seconds the meters' clocks run ahead of the wall clock")
    args = parser.parse_args(argv)
    if not (args.tcp is not None or args.pty or args.push):
        parser.error("give --tcp, --pty or --push")

    from twisted.internet.endpoints import clientFromString

    reactor = serve.command_reactor()
    meters = make_meters(max(args.meters, 1), args.corrupt_bcc, args.first_address)
    if args.readout_file:
        with open(args.readout_file, "rb") as f:
            text = f.read()
        for m in meters:
            m.readout_text = text
    for m in meters:
        m.password = args.password or None
        m.clock_offset = args.clock_offset
    factory = IecMeterServerFactory(meters, reactor, args.delay)
    addresses = ", ".join(m.address for m in meters)
    if args.tcp is not None:
        serve.serve_tcp(reactor, args.tcp, factory, args.interface, addresses)
    if args.pty:
        serve_pty(reactor, args.pty, factory)
        print(f"serving {addresses} on {args.pty}", flush=True)
    if args.push:
        from twisted.application.internet import ClientService

        service = ClientService(
            clientFromString(reactor, args.push),
            PushingMeterFactory(meters[0], args.every, reactor),
        )
        service.startService()
        print(f"pushing {meters[0].address} to {args.push} every {args.every} s", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
