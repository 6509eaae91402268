"""A Hayes (V.250) modem emulator for tests and demos: the modem end of a serial line (a pty)
that answers AT commands and, on ``ATD<number>``, connects the line to a simulated meter.

The ``Exchange`` is the telephone network: numbers lead to meter simulators (any Twisted
ServerFactory from fep.sim: IEC 62056-21, DL/T 645, DLMS over HDLC, ANSI C12.18), and a script
per number gives the next calls' outcomes (``BUSY``, ``NO ANSWER``, ``NO CARRIER``,
``NO DIALTONE``, or a connect that loses its carrier after some seconds). Each
``HayesModem`` follows echo (E), verbose/numeric results (V), quiet (Q), S-registers, the
``+++`` escape with its guard time (S12), ``ATH``, ``ATO``, ``ATZ``/``AT&F``, DTR drop with
``&D2`` (through ``EmulatedModemControl``, since a pty has no DTR) and ``drop_carrier()`` on
demand. A modem whose ``dialtone`` is off answers every dial with NO DIALTONE (a line fault).

Calls in: ``Exchange.call_in(caller, modem, protocol)`` rings an emulated modem (``RING``
every ``ring_time``, with ``+CLIP: "<caller>",145`` after ``AT+CLIP=1``); ``ATA`` (or
S0 rings with ``ATS0=n``) answers and connects the caller's protocol (a simulated meter that
dials the master station); a modem busy in a call or a dial is ``BUSY`` for the caller, and
a call nobody answers within ``rings`` rings is given up.

``python -m fep.sim.hayes --pty /dev/pts/7 --number 5551001=iec:10000001`` serves one modem.
"""

from __future__ import annotations

import argparse
import enum
import re
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import attrs
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.channels.modem.at import NUMERIC_OF, ResultCode
from fep.channels.modem.line import IModemControl
from fep.reactors import IConnectingReactor
from fep.sim import serve

log = Logger(namespace="fep.sim.hayes")

_DIAL_CHARS = re.compile(r"[0-9*#+A-Da-d]")


class Outcome(enum.Enum):
    CONNECT = "connect"
    BUSY = "busy"
    NO_ANSWER = "no answer"
    NO_CARRIER = "no carrier"
    NO_DIALTONE = "no dialtone"


@attrs.frozen
class Scripted:
    """One call's outcome; a CONNECT may lose its carrier ``drop_after`` seconds later."""

    outcome: Outcome
    drop_after: float | None = None


@implementer(IAddress)
@attrs.frozen
class PhoneAddress:
    number: str


@attrs.define
class CallLog:
    modem: str
    number: str
    outcome: Outcome
    dialled: str


class Exchange:
    """The simulated telephone network shared by emulated modems."""

    def __init__(
        self, reactor: IReactorTime, *, ring_time: float = 0.05, connect_text: str = "9600"
    ) -> None:
        self.reactor = reactor
        self.ring_time = ring_time
        self.connect_text = connect_text
        self.subscribers: dict[str, IProtocolFactory] = {}
        self.scripts: dict[str, deque[Scripted]] = {}
        self.calls: list[CallLog] = []
        # Calls in: (caller, modem name, outcome), outcome "connect", "busy" or "no answer".
        self.incoming: list[tuple[str, str, str]] = []

    def call_in(
        self, caller: str, modem: HayesModem, protocol: IProtocol, *, rings: int = 10
    ) -> bool:
        """``caller`` dials the line of ``modem``; ``protocol`` (the caller's side) is
        connected once the modem answers. False (BUSY) when the modem is in a call or a dial.
        """
        if not modem.ring(caller, protocol, rings):
            self.incoming.append((caller, modem.name, "busy"))
            return False
        return True

    def add(self, number: str, factory: IProtocolFactory) -> None:
        self.subscribers[_digits(number)] = factory

    def script(self, number: str, *outcomes: Outcome | Scripted) -> None:
        """Outcomes of the next calls to ``number``, in order; afterwards calls connect."""
        queue = self.scripts.setdefault(_digits(number), deque())
        for outcome in outcomes:
            queue.append(outcome if isinstance(outcome, Scripted) else Scripted(outcome))

    def resolve(self, dialled: str) -> str | None:
        """The subscriber a dial string reaches: exact, else the longest number it ends with
        (the dial string may carry an outside-line prefix)."""
        digits = _digits(dialled)
        if digits in self.subscribers:
            return digits
        ends = [n for n in self.subscribers if digits.endswith(n.lstrip("+"))]
        return max(ends, key=len) if ends else None

    def next_outcome(self, number: str) -> Scripted:
        """The next scripted outcome of a call to ``number``; without one, CONNECT for a
        subscriber and NO CARRIER (nobody's modem answers) for any other number."""
        queue = self.scripts.get(number)
        if queue:
            return queue.popleft()
        if number in self.subscribers:
            return Scripted(Outcome.CONNECT)
        return Scripted(Outcome.NO_CARRIER)


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit() or ch in "+*#")


class _State(enum.Enum):
    COMMAND = "command"
    DIALING = "dialing"
    ONLINE = "online"
    ONLINE_COMMAND = "online command"  # escaped with +++, call still up


class _MeterSide:
    """The transport a simulated meter writes to: its bytes go down the line to the DTE."""

    disconnecting = False

    def __init__(self, modem: HayesModem, number: str) -> None:
        self._modem = modem
        self._number = number

    def write(self, data: bytes) -> None:
        self._modem.meter_wrote(data)

    def writeSequence(self, data: Sequence[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self._modem.drop_carrier()

    def abortConnection(self) -> None:
        self._modem.drop_carrier()

    def getPeer(self) -> PhoneAddress:
        return PhoneAddress(self._number)

    def getHost(self) -> PhoneAddress:
        return PhoneAddress(self._modem.name)


DEFAULT_S = {0: 0, 2: 43, 3: 13, 4: 10, 5: 8, 6: 2, 7: 50, 8: 2, 10: 14, 12: 50}


class HayesModem(Protocol):
    """One emulated modem; its transport is the DTE side of the line (a pty end).

    ``guard`` is the escape guard time in seconds (S12 counts fiftieths of a second: a
    real modem's default is 1 s; tests shorten it). ``strict`` answers ERROR to unknown
    extended (+) commands, otherwise they get OK.
    """

    def __init__(
        self,
        exchange: Exchange,
        name: str = "modem",
        *,
        guard: float = 1.0,
        strict: bool = False,
    ) -> None:
        self.exchange = exchange
        self.reactor = exchange.reactor
        self.name = name
        self.strict = strict
        self.dialtone = True
        self.dtr = True
        self.commands: list[str] = []
        self.hangups = 0
        self.escapes = 0
        self._default_guard = guard
        self._reset()
        self._state = _State.COMMAND
        self._line = bytearray()
        self._meter: IProtocol | None = None
        self._number: str | None = None
        self._pending: list[IDelayedCall] = []
        self._last_rx = 0.0
        self._plus = 0
        self._escape_check: IDelayedCall | None = None
        self.clip = False
        self._caller: tuple[str, IProtocol] | None = None
        self._rings = 0
        self._rings_left = 0

    # -- settings

    def _reset(self) -> None:
        self.echo = True
        self.verbose = True
        self.quiet = False
        self.dcd_mode = 1
        self.dtr_mode = 2
        self.s = dict(DEFAULT_S)
        self.s[12] = max(1, round(self._default_guard * 50))

    @property
    def guard(self) -> float:
        return self.s[12] / 50.0

    @property
    def online(self) -> bool:
        return self._state in (_State.ONLINE, _State.ONLINE_COMMAND)

    # -- output

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _result(self, code: ResultCode, detail: str | None = None) -> None:
        if self.quiet:
            return
        if self.verbose:
            text = code.value if not detail else f"{code.value} {detail}"
            self._send(f"\r\n{text}\r\n".encode("ascii"))
        else:
            self._send(f"{NUMERIC_OF[code]}\r".encode("ascii"))

    def _info(self, text: str) -> None:
        head = "\r\n" if self.verbose else ""
        self._send(f"{head}{text}\r\n".encode("latin-1"))

    def _later(self, delay: float, fn: Any, *args: Any) -> None:
        self._pending = [c for c in self._pending if c.active()]
        self._pending.append(self.reactor.callLater(delay, fn, *args))

    def _cancel_pending(self) -> None:
        for call in self._pending:
            if call.active():
                call.cancel()
        self._pending = []

    # -- input

    def dataReceived(self, data: bytes) -> None:
        if self._state is _State.ONLINE:
            self._online_data(data)
            return
        if self._state is _State.DIALING:
            # V.250 6.3.1: any character aborts the call attempt.
            self._cancel_pending()
            self._state = _State.COMMAND
            self._result(ResultCode.NO_CARRIER)
            return
        for byte in data:
            if byte == self.s[3]:
                line = self._line.decode("latin-1")
                self._line.clear()
                if self.echo:
                    self._send(line.encode("latin-1") + bytes([self.s[3]]))
                self._command_line(line)
            elif byte == self.s[5]:
                if self._line:
                    del self._line[-1]
            elif byte != self.s[4] and len(self._line) < 256:
                self._line.append(byte)

    def _online_data(self, data: bytes) -> None:
        now = self.reactor.seconds()
        idle = now - self._last_rx
        self._last_rx = now
        forward = bytearray()
        for i, byte in enumerate(data):
            if byte == self.s[2] and self._plus < 3 and (self._plus > 0 or (i == 0 and
                                                                            idle >= self.guard)):
                self._plus += 1
                continue
            if self._plus:
                forward += bytes([self.s[2]]) * self._plus
                self._plus = 0
            forward.append(byte)
        if self._escape_check is not None and self._escape_check.active() and data:
            # Data within the guard time after "+++": no escape (the loop above has passed
            # the held "+++" on to the remote end).
            self._escape_check.cancel()
            self._escape_check = None
        if self._plus == 3:
            self._escape_check = self.reactor.callLater(self.guard, self._escaped)
        if forward and self._meter is not None:
            self._meter.dataReceived(bytes(forward))

    def _escaped(self) -> None:
        self._escape_check = None
        self._plus = 0
        if self._state is _State.ONLINE:
            self.escapes += 1
            self._state = _State.ONLINE_COMMAND
            self._result(ResultCode.OK)

    # -- commands

    def _command_line(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        if text[:2].upper() != "AT":
            return  # not a command line: a modem ignores it
        self.commands.append(text)
        body = text[2:]
        upper = body.upper()
        i = 0
        while i < len(body):
            ch = upper[i]
            if ch in " ;":
                i += 1
                continue
            if ch == "D":
                self._dial(body[i + 1:])
                return
            if ch in "+^%$":
                end = body.find(";", i)
                end = len(body) if end < 0 else end
                if not self._extended(body[i:end]):
                    self._result(ResultCode.ERROR)
                    return
                i = end
                continue
            m = re.compile(r"(&?[A-Z])(\d*)(?:(=)(\d*)|(\?))?").match(upper, i)
            if m is None:
                self._result(ResultCode.ERROR)
                return
            i = m.end()
            name, number = m.group(1), m.group(2)
            value = int(number) if number else 0
            outcome = self._basic(name, value, m.group(3) is not None, m.group(4), m.group(5))
            if outcome is False:
                self._result(ResultCode.ERROR)
                return
            if outcome is None:
                return  # the command answered itself (O, H while online, A)
        self._result(ResultCode.OK)

    def _basic(
        self, name: str, value: int, assign: bool, assigned: str | None, query: str | None
    ) -> bool | None:
        if name == "S":
            if value not in self.s and not assign:
                return False
            if query:
                self._info(f"{self.s.get(value, 0):03d}")
            elif assign:
                self.s[value] = int(assigned or 0) & 0xFF
            return True
        if name == "E":
            self.echo = value == 1
        elif name == "V":
            self.verbose = value == 1
        elif name == "Q":
            self.quiet = value == 1
        elif name in ("X", "L", "M", "&K", "&W", "&S", "B", "N", "W"):
            pass
        elif name == "&C":
            self.dcd_mode = value
        elif name == "&D":
            self.dtr_mode = value
        elif name in ("Z", "&F"):
            if self.online:
                self._hang_up(report=False)
            self._reset()
        elif name == "I":
            self._info("FEP Hayes emulator" if value == 0 else self.name)
        elif name == "H":
            if self.online:
                self._hang_up(report=False)
        elif name == "O":
            if self._state is not _State.ONLINE_COMMAND:
                return False
            self._state = _State.ONLINE
            self._result(ResultCode.CONNECT, self.exchange.connect_text)
            return None
        elif name == "A":
            if self._caller is None:
                self._result(ResultCode.NO_CARRIER)  # nobody is calling in
            else:
                self._answer()
            return None
        else:
            return False
        return True

    def _extended(self, command: str) -> bool:
        """Extended commands: a few identification ones answered, the rest accepted
        (``strict`` refuses them)."""
        upper = command.upper()
        if upper in ("+GMI", "+CGMI"):
            self._info("FEP")
        elif upper in ("+GMM", "+CGMM"):
            self._info("Hayes emulator")
        elif upper in ("+GCAP",):
            self._info("+GCAP: +MS")
        elif upper.startswith("+CLIP="):
            self.clip = upper[6:].strip() == "1"
        elif self.strict:
            return False
        return True

    # -- calls

    def _dial(self, rest: str) -> None:
        voice = rest.rstrip().endswith(";")
        dialled = "".join(_DIAL_CHARS.findall(rest.split(";")[0].lstrip("TtPp")))
        if self.online or self._caller is not None:
            self._result(ResultCode.ERROR if self.online else ResultCode.BUSY)
            return
        if not dialled:
            self._result(ResultCode.ERROR)
            return
        if voice:
            self._result(ResultCode.OK)
            return
        number = self.exchange.resolve(dialled) or _digits(dialled)
        script = self.exchange.next_outcome(number)
        outcome = script.outcome if self.dialtone else Outcome.NO_DIALTONE
        self.exchange.calls.append(CallLog(self.name, number, outcome, dialled))
        self._state = _State.DIALING
        delay = self.exchange.ring_time
        if outcome is Outcome.NO_DIALTONE:
            delay = delay / 5
        elif outcome is Outcome.NO_ANSWER:
            delay = delay * 3
        self._later(delay, self._dial_result, number, script, outcome)

    def _dial_result(self, number: str, script: Scripted, outcome: Outcome) -> None:
        if self._state is not _State.DIALING:
            return
        self._state = _State.COMMAND
        if outcome is not Outcome.CONNECT:
            self._result({
                Outcome.BUSY: ResultCode.BUSY,
                Outcome.NO_ANSWER: ResultCode.NO_ANSWER,
                Outcome.NO_CARRIER: ResultCode.NO_CARRIER,
                Outcome.NO_DIALTONE: ResultCode.NO_DIALTONE,
            }[outcome])
            return
        factory = self.exchange.subscribers.get(number)
        if factory is None:
            self._result(ResultCode.NO_CARRIER)
            return
        meter = factory.buildProtocol(PhoneAddress(number))
        if meter is None:
            self._result(ResultCode.NO_CARRIER)
            return
        self._state = _State.ONLINE
        self._number = number
        self._last_rx = self.reactor.seconds()
        self._plus = 0
        self._result(ResultCode.CONNECT, self.exchange.connect_text)
        self._meter = meter
        meter.makeConnection(_MeterSide(self, number))  # type: ignore[arg-type]
        if script.drop_after is not None:
            self._later(script.drop_after, self.drop_carrier)

    # -- calls in

    def ring(self, caller: str, protocol: IProtocol, rings: int = 10) -> bool:
        """A call from ``caller`` arrives: ring (False when busy in a call or a dial)."""
        if self._state is not _State.COMMAND or self._caller is not None:
            return False
        self._caller = (caller, protocol)
        self._rings = 0
        self._rings_left = rings
        self._ring()
        return True

    def _ring(self) -> None:
        if self._caller is None or self._state is not _State.COMMAND:
            return
        if self._rings_left <= 0:
            caller, protocol = self._caller
            self._caller = None
            self.exchange.incoming.append((caller, self.name, "no answer"))
            protocol.connectionLost(Failure(ConnectionError("no answer")))
            return
        self._rings_left -= 1
        self._rings += 1
        self._result(ResultCode.RING)
        if self.clip:
            self._info(f'+CLIP: "{self._caller[0]}",145')
        if self.s[0] and self._rings >= self.s[0]:
            self._answer()
            return
        self._later(self.exchange.ring_time * 4, self._ring)

    def _answer(self) -> None:
        assert self._caller is not None
        caller, protocol = self._caller
        self._caller = None
        self._cancel_pending()
        self.exchange.incoming.append((caller, self.name, "connect"))
        self._state = _State.ONLINE
        self._number = caller
        self._last_rx = self.reactor.seconds()
        self._plus = 0
        self._result(ResultCode.CONNECT, self.exchange.connect_text)
        self._meter = protocol
        protocol.makeConnection(_MeterSide(self, caller))  # type: ignore[arg-type]

    def meter_wrote(self, data: bytes) -> None:
        if self._state is _State.ONLINE:
            self._send(data)

    def drop_carrier(self) -> None:
        """The remote end or the line goes: NO CARRIER, back to command mode."""
        if self.online:
            self._hang_up(report=True)

    def set_dtr(self, on: bool) -> None:
        """The DTE raised or dropped DTR: with &D2 a drop hangs up (and with &D3 resets)."""
        was, self.dtr = self.dtr, on
        if was and not on and self.dtr_mode in (2, 3):
            if self.online:
                self._hang_up(report=True)
            if self.dtr_mode == 3:
                self._reset()

    def _hang_up(self, *, report: bool) -> None:
        self.hangups += 1
        meter, self._meter = self._meter, None
        self._state = _State.COMMAND
        self._number = None
        self._plus = 0
        if self._escape_check is not None and self._escape_check.active():
            self._escape_check.cancel()
        self._escape_check = None
        self._cancel_pending()
        if meter is not None:
            meter.connectionLost(Failure(ConnectionError("carrier lost")))
        if report:
            self._result(ResultCode.NO_CARRIER)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self.online:
            self._hang_up(report=False)
        self._cancel_pending()


@implementer(IModemControl)
class EmulatedModemControl:
    """DTR and DCD between fep's modem line and an emulated modem (a pty has neither)."""

    def __init__(self, modem: HayesModem) -> None:
        self.modem = modem

    def set_dtr(self, on: bool) -> None:
        self.modem.set_dtr(on)

    def carrier(self) -> bool | None:
        return self.modem.online


def serve_pty(
    reactor: IConnectingReactor, device: str, modem: HayesModem, baudrate: int = 9600
) -> Any:
    """Run ``modem`` on a serial device or pty end (8N1)."""
    return serve.serve_pty(reactor, device, modem, baudrate=baudrate, frame="8N1")


def _meter_factory(spec: str, reactor: IReactorTime) -> IProtocolFactory:
    """``iec:ADDRESS`` or ``dlt645:ADDRESS`` -> a simulator factory."""
    kind, _, address = spec.partition(":")
    if kind == "iec":
        from fep.sim.iec62056_21 import IecMeterServerFactory, SimulatedIecMeter

        return IecMeterServerFactory([SimulatedIecMeter(address=address or "12345678")], reactor)
    if kind == "dlt645":
        from fep.sim.dlt645 import Dlt645BusFactory, SimulatedDlt645Meter

        return Dlt645BusFactory([SimulatedDlt645Meter(address=address or "000000123456")],
                                reactor)
    raise ValueError(f"unknown meter kind {kind!r} (iec, dlt645)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fep.sim.hayes", description="An emulated Hayes modem on a pty"
    )
    parser.add_argument("--pty", required=True, help="the pty (or serial device) to serve")
    parser.add_argument("--number", action="append", default=[],
                        help="NUMBER=iec:ADDRESS or NUMBER=dlt645:ADDRESS (repeatable)")
    parser.add_argument("--busy", action="append", default=[], help="a number that is busy")
    parser.add_argument("--guard", type=float, default=1.0, help="escape guard time (s)")
    parser.add_argument("--ring", type=float, default=2.0, help="ring time before answer (s)")
    args = parser.parse_args(argv)
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    exchange = Exchange(reactor, ring_time=args.ring)
    for item in args.number:
        number, _, spec = item.partition("=")
        exchange.add(number, _meter_factory(spec, reactor))
    for number in args.busy:
        exchange.script(number, *[Outcome.BUSY] * 1000)
    serve_pty(cast(IConnectingReactor, reactor), args.pty, HayesModem(exchange, guard=args.guard))
    reactor.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
