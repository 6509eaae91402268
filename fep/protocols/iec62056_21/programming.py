"""IEC 62056-21 programming mode as a sans-IO state machine: sign-on, option select with the
programming acknowledgement (``ACK 0 Z 1``), the meter's password prompt (P0), our
password (P1), R/W commands with their data sets, and the break (B0) at the end.

``start()`` gives the sign-on bytes; ``receive_data(bytes)`` gives actions (Send,
SwitchBaud, and at the end Finished with every answer). One exchange per operation:

| we send | the meter answers |
|---|---|
| ``SOH R5 STX address(argument) ETX BCC`` | ``STX address(value)... ETX BCC`` |
| ``SOH W5 STX address(value) ETX BCC`` | ``ACK`` |
| ``SOH P1 STX (password) ETX BCC`` | ``ACK`` |

Faults, each a ProtocolError naming the meter and the command:
- the meter's ``NAK`` (our command arrived damaged): the command is sent again, at most
  ``retries`` times; our ``NAK`` asks the same of the meter for a damaged answer;
- an error message (``STX (text) ETX BCC``: a data set without address, or a value such as
  ``ERROR``/``ER07``) or the meter's break (``SOH B0 ETX``) is a ``MeterRefusal`` carrying
  the command and the meter's own text (a wrong password is typically a break);
- anything else out of order raises ProtocolError; a bad frame FrameError.

The plain password (P1) is spoken as is. P2, the operand of a manufacturer's algorithm over
the P0 seed, is sent only with that algorithm given (``p2``: seed and password -> operand);
fep ships none, so asking for P2 without one is refused with NotSupported.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence

import attrs

from fep.errors import FrameError, NotSupported, ProtocolError
from fep.protocols.iec62056_21.frames import (
    BREAK,
    MODE_C_BAUD,
    Ack,
    Command,
    DataBlock,
    FrameDecoder,
    Identification,
    Nak,
    OptionSelect,
    SignOn,
)
from fep.protocols.iec62056_21.readout import Readout, parse_data_sets

PROTOCOL = "iec62056-21"
DEFAULT_RETRIES = 3
# An error message's text: the standard's ``(text)`` without address, or a value meters use
# for one (``ERROR``, ``ER07``, ``ERR04``).
_ERROR_VALUE_RE = re.compile(r"^(?:ERROR.*|ERR?\d+)$", re.IGNORECASE)


class MeterRefusal(ProtocolError):
    """The meter refused a command: ``command`` is what we sent (``W5 0.9.1(...)``,
    ``P1``), ``meter_text`` its own error text (``ERROR``, ``break``)."""

    def __init__(self, command: str, meter_text: str, *, meter: str | None = None) -> None:
        self.command = command
        self.meter_text = meter_text
        who = f"meter {meter}: " if meter else ""
        super().__init__(f"{who}{command} refused by the meter: {meter_text}", meter=meter,
                         protocol=PROTOCOL)


@attrs.frozen
class Read:
    """``R<kind> address(argument)``: a register (argument empty) or a profile range."""

    address: str
    argument: str = ""
    kind: str = "5"

    def command(self) -> Command:
        return Command("R", self.kind, f"{self.address}({self.argument})".encode("ascii"))


@attrs.frozen
class Write:
    """``W<kind> address(value)``; ``value`` may be a function giving the text at the
    moment the command is sent (a clock)."""

    address: str
    value: str | Callable[[], str] = attrs.field(eq=False)
    kind: str = "5"

    def command(self) -> Command:
        text = self.value() if callable(self.value) else self.value
        return Command("W", self.kind, f"{self.address}({text})".encode("ascii"))


Operation = Read | Write


def describe(command: Command) -> str:
    """A command as logs and errors name it: ``R5 0.9.1()``; a password never shown."""
    head = f"{command.command}{command.command_type}"
    if command.command == "P" or command.data is None:
        return head
    return f"{head} {command.data.decode('ascii', 'replace')}"


@attrs.frozen
class Answer:
    """What the meter gave for one operation: the data sets of a read (None for a write)."""

    operation: Operation
    readout: Readout | None = None
    data: bytes = b""


@attrs.frozen
class Send:
    data: bytes


@attrs.frozen
class SwitchBaud:
    baudrate: int


@attrs.frozen
class Resent:
    """A command sent again after the meter's NAK, or our NAK for a damaged answer."""

    what: str
    attempt: int


@attrs.frozen
class Finished:
    identification: Identification
    answers: tuple[Answer, ...]


Action = Send | SwitchBaud | Resent | Finished


class State(enum.Enum):
    IDLE = "idle"
    AWAIT_IDENTIFICATION = "awaiting identification"
    AWAIT_PROMPT = "awaiting the password prompt (P0)"
    AWAIT_LOGIN = "awaiting the password's acknowledgement"
    AWAIT_ANSWER = "awaiting an answer"
    DONE = "done"


def error_text(data: bytes) -> str | None:
    """The meter's error text when ``data`` (a block's content) is an error message."""
    text = data.strip(b"\r\n").decode("ascii", "replace")
    match = re.fullmatch(r"\(([^()]*)\)", text)
    if match is not None:
        return match[1] or "error message without text"
    first = text.split("\r\n", 1)[0]
    if "(" in first:
        value = first.split("(", 1)[1].split(")", 1)[0]
        if _ERROR_VALUE_RE.match(value.strip()):
            return value.strip()
    return None


class ProgrammingClient:
    """One programming-mode session running ``operations`` in order.

    ``password``: sent as P1 after the meter's P0 (None: no login, for meters that allow
    reads without one). ``password_mode``: ``P1`` (plain) or ``P2`` with ``p2``, the
    manufacturer's algorithm (P0 seed, password -> the P2 operand).
    ``switch_baud``/``baud_char``/``max_baudrate`` as for the readout client. ``meter``
    names the meter in errors.
    """

    def __init__(
        self,
        operations: Sequence[Operation],
        *,
        address: str | None = None,
        password: str | None = None,
        password_mode: str = "P1",
        p2: Callable[[str, str], str] | None = None,
        switch_baud: bool = False,
        baud_char: str | None = None,
        retries: int = DEFAULT_RETRIES,
        meter: str | None = None,
    ) -> None:
        mode = password_mode.upper()
        if mode not in ("P1", "P2") or (mode == "P2" and p2 is None):
            raise NotSupported(
                f"{'meter ' + meter + ': ' if meter else ''}password mode "
                f"{password_mode!r} is not supported (P1, the plain password, is; P2 needs "
                "the manufacturer's algorithm over the P0 seed, which fep does not have)",
                meter=meter, protocol=PROTOCOL)
        self.password_mode = mode
        self.p2 = p2
        self.operations = list(operations)
        self.address = address or ""
        self.password = password
        self.switch_baud = switch_baud
        self.baud_char = baud_char
        self.retries = retries
        self.meter = meter
        self.state = State.IDLE
        self.identification: Identification | None = None
        self.seed: str | None = None
        self.answers: list[Answer] = []
        self._decoder = FrameDecoder()
        self._index = 0
        self._last: Command | None = None
        self._repeats = 0

    # -- what is going on -------------------------------------------------------------

    def finished(self) -> bool:
        return self.state is State.DONE

    @property
    def current(self) -> str:
        """The command being answered, as errors name it."""
        if self.state is State.AWAIT_LOGIN:
            return f"{self.password_mode} (password)"
        return describe(self._last) if self._last is not None else self.state.value

    def _refused(self, text: str) -> MeterRefusal:
        return MeterRefusal(self.current, text, meter=self.meter)

    def _error(self, message: str) -> ProtocolError:
        who = f"meter {self.meter}: " if self.meter else ""
        return ProtocolError(f"{who}{message}", meter=self.meter, protocol=PROTOCOL)

    # -- driving ----------------------------------------------------------------------

    def start(self) -> bytes:
        if self.state is not State.IDLE:
            raise ProtocolError(f"session already started ({self.state.value})",
                                protocol=PROTOCOL)
        self.state = State.AWAIT_IDENTIFICATION
        return SignOn(self.address).encode()

    def receive_data(self, data: bytes) -> list[Action]:
        if self.state is State.IDLE:
            raise ProtocolError("data received before sign-on", protocol=PROTOCOL)
        actions: list[Action] = []
        # Every message and error of the bytes, one at a time (a prompt switches the decoder
        # to lone ACKs for what follows it): none before a damaged command is lost, none
        # behind it waits for the meter's next bytes.
        for item in self._decoder.decode_all(data):
            if self.finished():
                break  # what follows the break is not ours to read
            if not isinstance(item, FrameError):
                actions += self._handle(item)
            elif item.field == "BCC" and self.state is not State.AWAIT_IDENTIFICATION:
                actions += self._nak(item.message)  # a damaged command from the meter
            else:
                raise item
        return actions

    def _send(self, command: Command) -> list[Action]:
        self._last = command
        self._repeats = 0
        return [Send(command.encode())]

    def _nak(self, why: str) -> list[Action]:
        """Ask the meter to send its damaged answer again."""
        self._repeats += 1
        if self._repeats > self.retries:
            raise self._error(f"{self.current}: answer still damaged after {self.retries} "
                              f"repeats ({why})")
        return [Resent("NAK", self._repeats), Send(Nak().encode())]

    def _resend(self) -> list[Action]:
        """The meter's NAK: our last command again."""
        if self._last is None:
            raise self._error(f"NAK while {self.state.value}")
        self._repeats += 1
        if self._repeats > self.retries:
            raise self._error(f"{self.current}: not accepted after {self.retries} repeats "
                              "(the meter answers NAK)")
        operation = (self.operations[self._index]
                     if self.state is State.AWAIT_ANSWER else None)
        command = operation.command() if operation is not None else self._last
        return [Resent(describe(command), self._repeats), Send(command.encode())]

    def _next(self) -> list[Action]:
        """The next operation, or the break when all are done."""
        if self._index >= len(self.operations):
            self.state = State.DONE
            assert self.identification is not None
            return [Send(BREAK.encode()),
                    Finished(self.identification, tuple(self.answers))]
        self.state = State.AWAIT_ANSWER
        return self._send(self.operations[self._index].command())

    def _handle(self, message: object) -> list[Action]:
        if self.state is State.AWAIT_IDENTIFICATION:
            if isinstance(message, SignOn):
                return []  # our request echoed
            if not isinstance(message, Identification):
                raise self._error(
                    f"expected an identification message, got {type(message).__name__}")
            return self._identified(message)
        if isinstance(message, OptionSelect | SignOn):
            return []  # our own echoed
        if isinstance(message, Command) and message == self._last:
            return []  # our own command echoed (half-duplex line)
        if isinstance(message, Nak):
            return self._resend()
        if isinstance(message, Command) and message.command == "B":
            raise self._refused("break (B0)")
        if self.state is State.AWAIT_PROMPT:
            if isinstance(message, Command) and message.command == "P" \
                    and message.command_type == "0":
                seed = (message.data or b"").decode("ascii", "replace")
                self.seed = seed.strip("()")
                # From here on the meter sends lone ACKs, never an option select.
                self._decoder.lone_ack = True
                if self.password is None:
                    return self._next()
                self.state = State.AWAIT_LOGIN
                operand = self.password
                if self.password_mode == "P2":
                    assert self.p2 is not None
                    operand = self.p2(self.seed, self.password)
                return self._send(Command("P", self.password_mode[1],
                                          f"({operand})".encode("ascii")))
            if isinstance(message, DataBlock):
                raise self._error("the meter sent data instead of the programming mode's "
                                  "password prompt (P0): it does not take programming mode")
            raise self._error(f"expected the password prompt P0, got {type(message).__name__}")
        if self.state is State.AWAIT_LOGIN:
            if isinstance(message, Ack):
                self._index = 0
                return self._next()
            if isinstance(message, DataBlock):
                return self._block_for_login(message)
            raise self._error(f"P1 (password): expected ACK, got {type(message).__name__}")
        if self.state is State.AWAIT_ANSWER:
            operation = self.operations[self._index]
            if isinstance(message, DataBlock):
                if not message.bcc_ok:
                    return self._nak(f"bad BCC: computed 0x{message.computed_bcc:02X}, "
                                     f"received 0x{message.received_bcc:02X}")
                text = error_text(message.data)
                if text is not None:
                    raise self._refused(text)
                if isinstance(operation, Write):
                    raise self._error(f"{self.current}: expected ACK, got data")
                self.answers.append(Answer(operation, parse_data_sets(message.data),
                                           message.data))
                self._index += 1
                return self._next()
            if isinstance(message, Ack):
                if isinstance(operation, Read):
                    raise self._error(f"{self.current}: expected data, got ACK")
                self.answers.append(Answer(operation))
                self._index += 1
                return self._next()
            raise self._error(f"{self.current}: unexpected {type(message).__name__}")
        raise self._error(f"unexpected {type(message).__name__} after the break")

    def _block_for_login(self, block: DataBlock) -> list[Action]:
        if not block.bcc_ok:
            return self._nak("bad BCC")
        raise self._refused(error_text(block.data) or
                            block.data.decode("ascii", "replace").strip())

    def _identified(self, message: Identification) -> list[Action]:
        self.identification = message
        self.state = State.AWAIT_PROMPT
        # The meter's proposal is echoed (some meters propose a character outside mode C's
        # digits, e.g. ``:``, and take it back); the speed changes only for a mode C digit.
        char = self.baud_char if self.baud_char is not None else message.baud_char
        actions: list[Action] = [Send(OptionSelect(baud_char=char, mode="1").encode())]
        if self.switch_baud and char in MODE_C_BAUD and char != "0":
            actions.append(SwitchBaud(MODE_C_BAUD[char]))
        return actions


__all__ = [
    "DEFAULT_RETRIES",
    "Action",
    "Answer",
    "Finished",
    "MeterRefusal",
    "Operation",
    "ProgrammingClient",
    "Read",
    "Resent",
    "Send",
    "State",
    "SwitchBaud",
    "Write",
    "describe",
    "error_text",
]
