"""The IEC 62056-21 mode C readout client as a sans-IO state machine.

``start()`` gives the sign-on bytes; ``receive_data(bytes)`` gives actions for the adapter
(Send, SwitchBaud) and results (IdentificationReceived, ReadoutReceived); faults raise
FrameError (bad frame, bad BCC, unparsable data line) or ProtocolError (wrong message for the
state). Mode A/B meters (identification baud character not a digit) send the readout without
an option select; they are read the same way.
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


Action = Send | SwitchBaud | IdentificationReceived | ReadoutReceived


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
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        switch_baud: bool = False,
        baud_char: str | None = None,
        max_baudrate: int | None = None,
    ) -> None:
        self.address = address or ""
        self.switch_baud = switch_baud
        self.baud_char = baud_char
        self.max_baudrate = max_baudrate
        self.state = State.IDLE
        self.identification: Identification | None = None
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
        for message in self._decoder.receive(data):
            actions.extend(self._handle(message))
        return actions

    def _handle(self, message: object) -> list[Action]:
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
