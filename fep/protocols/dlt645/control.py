"""DL/T 645 commands as a sans-IO exchange: the requests of one command (relay control,
demand reset, clock writes, broadcast time, event reset, the reads around them) sent in
order, each waiting for its answer, and the meter's refusals turned into errors naming the
meter, the command and the meter's own code.

``CommandClient(settings, command, steps)``: ``start()``, ``receive(bytes)`` and
``timeout()`` give ``Send``/``Resent``/``Noise`` actions (those of ``client``) and at the end
``Done(answers)`` (the answer frame of each step, None for a broadcast) or ``Failed(error)``.
A step's frame is built when it is sent (``Step.build``), so a clock write carries the time
of its sending and a step can depend on the answers before it. Silence and damaged answers
are asked again ``settings.retries`` times; an abnormal answer ends the command with
``CommandRefused`` (a ``MeterErrorResponse``: its ``status`` the meter's code, ``final``:
running it again will not help).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from fep.errors import FrameError, ProtocolError, SessionTimeout
from fep.protocols.dlt645.client import (
    WAKEUP_PREAMBLE,
    ClientSettings,
    Failed,
    Noise,
    Resent,
    Send,
    _Decoder,
)
from fep.protocols.dlt645.frames import Frame
from fep.protocols.dlt645.services import (
    PROTOCOL,
    MeterErrorResponse,
    NoRequestedData,
    Unauthorized,
    check_response,
)

# Status word 3 (DI 04000503, DL/T 645-2007 A.4 "电表运行状态字3"): the relay bits.
STATUS_WORD_3: Final = 0x04000503
RELAY_OPEN_BIT: Final = 0x0010  # bit 4: the relay is open (0: closed)
RELAY_COMMAND_OPEN_BIT: Final = 0x0040  # bit 6: the relay is commanded open
PRE_TRIP_ALARM_BIT: Final = 0x0080  # bit 7: pre-trip alarm


@attrs.frozen
class Step:
    """One request of a command: ``build(answers)`` gives its frame when it is sent, from the
    answers to the steps before (ValueError: it must not be sent, the command fails saying
    why); ``what`` names it in errors ("relay control (trip)"); ``answered`` False for a
    broadcast (no answer)."""

    what: str
    build: Callable[[Sequence[Frame | None]], Frame]
    answered: bool = True


@attrs.frozen
class Done:
    """Every step went through: the answer frame of each (None for a broadcast)."""

    answers: tuple[Frame | None, ...]


Action = Send | Resent | Noise | Done | Failed


class CommandRefused(MeterErrorResponse):
    """The meter refused a step of a command (its abnormal answer)."""

    final = True


class CommandUnauthorized(CommandRefused, Unauthorized):
    """The meter refused a command: wrong password or not authorised."""


class CommandNoData(CommandRefused, NoRequestedData):
    """The meter has no data for a command's read (or write) of a data identifier."""


class _State(enum.Enum):
    WAITING = "waiting"
    DONE = "done"


class CommandClient:
    """The requests of one command, one after the other (see the module docstring)."""

    def __init__(self, settings: ClientSettings, command: str, steps: Sequence[Step]) -> None:
        if not steps:
            raise ValueError("a command has at least one step")
        self.settings = settings
        self.command = command
        self.steps = tuple(steps)
        self.state = _State.WAITING
        self.decoder = _Decoder()
        self.answers: list[Frame | None] = []
        self.noise = 0
        self.resent = 0
        self._request: Frame | None = None
        self._attempt = 0
        self._damaged = False

    @property
    def waiting_for(self) -> str | None:
        if self.state is not _State.WAITING or len(self.answers) >= len(self.steps):
            return None
        return f"the answer to {self.steps[len(self.answers)].what}"

    def _who(self) -> str:
        return f"meter {self.settings.meter or self.settings.address}"

    def _encode(self, frame: Frame) -> bytes:
        return frame.encode(preamble=WAKEUP_PREAMBLE if self.settings.wakeup else 0)

    def waiting(self) -> bool:
        return self.state is _State.WAITING

    # -- driving --------------------------------------------------------------------------

    def start(self) -> list[Action]:
        return self._next()

    def _next(self) -> list[Action]:
        actions: list[Action] = []
        while len(self.answers) < len(self.steps):
            step = self.steps[len(self.answers)]
            try:
                frame = step.build(tuple(self.answers))
            except ValueError as e:
                return [*actions, *self._fail(ProtocolError(
                    f"{self._who()}: {self.command}: {step.what} cannot be sent: {e}",
                    meter=self.settings.meter, route=self.settings.route, protocol=PROTOCOL))]
            if not step.answered:
                actions.append(Send(self._encode(frame)))
                self.answers.append(None)
                continue
            self._request = frame
            self._attempt = 0
            self._damaged = False
            actions.append(Send(self._encode(frame)))
            return actions
        self.state = _State.DONE
        self._request = None
        return [*actions, Done(tuple(self.answers))]

    def receive(self, data: bytes) -> list[Action]:
        if not self.waiting() or self._request is None:
            return []
        actions: list[Action] = []
        for item in self.decoder.decode_all(data):
            if isinstance(item, FrameError):
                self.noise += 1
                self._damaged = True
                actions.append(Noise(item.message))
            else:
                actions += self._on_frame(item)
            if not self.waiting() or self._request is None:
                break
        if (self.waiting() and self._request is not None and self._damaged
                and self.decoder.buffered == 0 and self._attempt < self.settings.retries):
            actions += self._resend("damaged answer")
        return actions

    def timeout(self) -> list[Action]:
        if not self.waiting() or self._request is None:
            return []
        if self._attempt < self.settings.retries:
            return self._resend("no answer")
        what = self.steps[len(self.answers)].what
        why = "only damaged answers" if self._damaged else "no valid answer"
        return self._fail(SessionTimeout(
            f"{self._who()}: {self.command}: {why} to {what}",
            meter=self.settings.meter, route=self.settings.route, protocol=PROTOCOL))

    def _resend(self, why: str) -> list[Action]:
        assert self._request is not None
        self._attempt += 1
        self.resent += 1
        self._damaged = False
        return [Resent(self._attempt, why), Send(self._encode(self._request))]

    def _on_frame(self, frame: Frame) -> list[Action]:
        request = self._request
        assert request is not None
        if not frame.is_response:
            return []  # our own request heard back on a half-duplex line
        what = self.steps[len(self.answers)].what
        try:
            check_response(frame, request, meter=self.settings.meter, route=self.settings.route)
        except MeterErrorResponse as e:
            return self._fail(self._refused(e, what))
        except ProtocolError as e:
            return self._fail(ProtocolError(
                f"{self._who()}: {self.command}: {e.message}", meter=self.settings.meter,
                route=self.settings.route, protocol=PROTOCOL))
        self.answers.append(frame)
        return self._next()

    def _refused(self, error: MeterErrorResponse, what: str) -> CommandRefused:
        cls: type[CommandRefused] = CommandRefused
        if isinstance(error, Unauthorized):
            cls = CommandUnauthorized
        elif isinstance(error, NoRequestedData):
            cls = CommandNoData
        s = self.settings
        return cls(
            f"{self._who()}: {self.command} refused by the meter ({what}): "
            f"{', '.join(error.reasons)} (error status {error.code})",
            status=error.status, function=error.function, edition=error.edition,
            meter=s.meter or s.address, route=s.route, control_word=error.control_word,
        )

    def _fail(self, error: ProtocolError) -> list[Action]:
        self.state = _State.DONE
        self._request = None
        return [Failed(error)]


def relay_state(word: int) -> dict[str, str]:
    """The relay's state from status word 3 (DI 04000503)."""
    return {
        "relay": "open" if word & RELAY_OPEN_BIT else "closed",
        "relay_command": "open" if word & RELAY_COMMAND_OPEN_BIT else "closed",
        "pre_trip_alarm": "on" if word & PRE_TRIP_ALARM_BIT else "off",
    }


__all__ = [
    "STATUS_WORD_3",
    "CommandClient",
    "CommandNoData",
    "CommandRefused",
    "CommandUnauthorized",
    "Done",
    "Step",
    "relay_state",
]
