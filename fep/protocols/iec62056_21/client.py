"""The IEC 62056-21 mode C readout client as a sans-IO state machine.

``start()`` gives the sign-on bytes; ``receive_data(bytes)`` gives actions for the adapter
(Send, SwitchBaud) and results (IdentificationReceived, ReadoutReceived, PushReceived);
faults raise FrameError (bad frame, bad BCC, unparsable data line) or ProtocolError (wrong
message for the state). Mode A/B meters (identification baud character not a digit) send the
readout without an option select; they are read the same way.

On a line that also carries the meter's pushes (``pushes=True``: a GPRS modem session lent
to the pull), a push (identification and readout block) may come before the answer or in
the middle of it. The client tells them apart by the order of the exchange, never by time:
- a mode C meter sends its readout only after our option select, and nothing
  ``receive_data`` returns has been sent yet: a block given in the same call as the
  identification it follows came before that option select could reach the meter, so the
  two were a push, and the answer's identification is still to come;
- once the meter has answered with its identification it sends no other: a later
  identification begins a push, and the block after it is that push's.
Pushes are reported (PushReceived) for the session to hand to the channel.
"""

from __future__ import annotations

import enum

import attrs

from fep.errors import FrameError, ProtocolError
from fep.protocols.iec62056_21.frames import (
    MODE_B_BAUD,
    MODE_C_BAUD,
    DataBlock,
    FrameDecoder,
    Identification,
    OptionSelect,
    SignOn,
)
from fep.protocols.iec62056_21.readout import Readout, parse_readout

PROTOCOL = "iec62056-21"


@attrs.frozen
class Send:
    """Write these bytes to the line."""

    data: bytes


@attrs.frozen
class SwitchBaud:
    """Change the line speed once the bytes sent before this action have left the line."""

    baudrate: int


@attrs.frozen
class IdentificationReceived:
    identification: Identification


@attrs.frozen
class ReadoutReceived:
    identification: Identification
    readout: Readout
    block: DataBlock


@attrs.frozen
class PushReceived:
    """A readout the meter pushed on its own during the session (``pushes=True``), not the
    answer: ``readout`` is None when its block was bad (``problem`` says why)."""

    identification: Identification
    block: DataBlock
    readout: Readout | None
    problem: str | None = None


Action = Send | SwitchBaud | IdentificationReceived | ReadoutReceived | PushReceived


class State(enum.Enum):
    IDLE = "idle"
    AWAIT_IDENTIFICATION = "awaiting identification"
    AWAIT_READOUT = "awaiting readout"
    DONE = "done"


class ModeCClient:
    """One readout session.

    ``switch_baud``: the line is a serial line whose speed we control (emit SwitchBaud).
    ``baud_char``: the baud character to ask for in the option select; None echoes the
    meter's proposal, ``"0"`` keeps 300 Bd. ``max_baudrate`` caps the echoed proposal.
    ``pushes``: the line also carries the meter's pushes (tell them from the answer).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        switch_baud: bool = False,
        baud_char: str | None = None,
        max_baudrate: int | None = None,
        pushes: bool = False,
    ) -> None:
        self.address = address or ""
        self.switch_baud = switch_baud
        self.baud_char = baud_char
        self.max_baudrate = max_baudrate
        self.pushes = pushes
        self.state = State.IDLE
        self.identification: Identification | None = None
        # The identification of a push under way (``pushes``), its block still to come.
        self._push: Identification | None = None
        self._decoder = FrameDecoder()

    def start(self) -> bytes:
        if self.state is not State.IDLE:
            raise ProtocolError(f"session already started ({self.state.value})", protocol=PROTOCOL)
        self.state = State.AWAIT_IDENTIFICATION
        return SignOn(self.address).encode()

    def _chosen_baud_char(self, ident: Identification) -> str:
        if self.baud_char is not None:
            return self.baud_char
        char = ident.baud_char
        if self.max_baudrate is not None and MODE_C_BAUD[char] > self.max_baudrate:
            fitting = [c for c, rate in MODE_C_BAUD.items() if rate <= self.max_baudrate]
            char = max(fitting, key=lambda c: MODE_C_BAUD[c]) if fitting else "0"
        return char

    def receive_data(self, data: bytes) -> list[Action]:
        if self.state is State.IDLE:
            raise ProtocolError("data received before sign-on", protocol=PROTOCOL)
        actions: list[Action] = []
        # Where in ``actions`` the answer to an identification of this same call begins
        # (its option select, not sent yet): a readout block right after that
        # identification in this call came before the meter could have had the option
        # select, so the two were a push.
        unsent: int | None = None
        for message in self._decoder.receive(data):
            if (
                unsent is not None
                and self.state is State.AWAIT_READOUT
                and self._push is None
                and isinstance(message, DataBlock)
            ):
                identification = self.identification
                assert identification is not None
                self.identification = None
                self.state = State.AWAIT_IDENTIFICATION
                actions[unsent:] = [self._pushed(identification, message)]
                unsent = None
                continue
            start = len(actions)
            handled = self._handle(message)
            if self.pushes and any(isinstance(a, Send) for a in handled):
                unsent = start
            actions.extend(handled)
        return actions

    def _pushed(self, identification: Identification, block: DataBlock) -> PushReceived:
        try:
            readout = parse_readout(block.check().data)
        except FrameError as e:
            return PushReceived(identification, block, None, e.message)
        return PushReceived(identification, block, readout)

    def _handle(self, message: object) -> list[Action]:
        if self.pushes and self.state in (State.AWAIT_READOUT, State.DONE):
            # Once the meter has answered with its identification it sends no other: one
            # now begins a push, and the readout block after it is that push's.
            if isinstance(message, Identification):
                self._push = message
                return []
            if self._push is not None and isinstance(message, DataBlock):
                identification, self._push = self._push, None
                return [self._pushed(identification, message)]
        if self.state is State.AWAIT_IDENTIFICATION:
            if isinstance(message, SignOn):
                # Our own request echoed by a half-duplex optical head or an RS-485 line.
                return []
            if not isinstance(message, Identification):
                raise ProtocolError(
                    f"expected an identification message, got {type(message).__name__}",
                    protocol=PROTOCOL,
                )
            self.identification = message
            self.state = State.AWAIT_READOUT
            actions: list[Action] = [IdentificationReceived(message)]
            if message.baud_char in MODE_C_BAUD:
                char = self._chosen_baud_char(message)
                actions.append(Send(OptionSelect(baud_char=char, mode="0").encode()))
                if self.switch_baud and char != "0":
                    actions.append(SwitchBaud(MODE_C_BAUD[char]))
            elif message.baud_char in MODE_B_BAUD and self.switch_baud:
                # Mode B: the meter switches right after its identification.
                actions.append(SwitchBaud(MODE_B_BAUD[message.baud_char]))
            return actions
        if self.state is State.AWAIT_READOUT:
            if isinstance(message, OptionSelect):
                return []  # our own option select echoed back
            if not isinstance(message, DataBlock):
                raise ProtocolError(
                    f"expected the readout block, got {type(message).__name__}", protocol=PROTOCOL
                )
            message.check()
            try:
                readout = parse_readout(message.data)
            except FrameError as e:
                # Offsets inside the block -> offsets in the stream (past the STX).
                raise FrameError(
                    e.message,
                    offset=None if e.offset is None else message.offset + 1 + e.offset,
                    field=e.field,
                ) from None
            assert self.identification is not None
            self.state = State.DONE
            return [ReadoutReceived(self.identification, readout, message)]
        raise ProtocolError(
            f"unexpected {type(message).__name__} after the readout", protocol=PROTOCOL
        )
