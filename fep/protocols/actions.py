"""The one sans-IO shape of a one-shot meter session: what a protocol's steps ask the
session driver (fep/protocols/session.py) to do.

A session's steps answer ``start()``, ``receive(bytes)`` and ``timeout()`` with a list of
actions, in order: ``Send`` bytes, ``SetTimer``/``StopTimer`` for the step timer,
``SwitchBaud`` on serial lines, and at the end ``Finish(result)`` or ``Fail(error)``. Any
other object in the list is a protocol note (a resend, skipped line noise) that the
protocol's own adapter logs or counts; the driver passes it on in order. No Twisted here:
protocol modules import this freely.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs


@attrs.frozen
class Send:
    """Write these bytes to the line."""

    data: bytes


@attrs.frozen
class SetTimer:
    """(Re)start the step timer: ``timeout()`` is asked once it runs out. ``seconds`` None
    is the session's step timeout."""

    seconds: float | None = None


@attrs.frozen
class StopTimer:
    """Stop the step timer (an answer came; nothing is awaited until the next Send)."""


@attrs.frozen
class SwitchBaud:
    """Change the line speed once the bytes sent before have left the line (serial lines
    only; elsewhere nothing happens). The step timer stops and the actions after this one
    wait until the line runs at the new speed."""

    baudrate: int


@attrs.frozen
class Finish:
    """The session is done: hang up and hand back ``result``."""

    result: Any


@attrs.frozen
class Fail:
    """The session failed: drop the line and hand back ``error``."""

    error: Exception


Action = Send | SetTimer | StopTimer | SwitchBaud | Finish | Fail


@attrs.frozen
class Line:
    """What the driver knows of the connected line when the session starts: whether its
    speed can be switched (a serial line), and its speed and bits per character where it
    says."""

    serial: bool = False
    baudrate: int | None = None
    char_bits: float | None = None


class SessionSteps(Protocol):
    """The sans-IO side of a one-shot meter session, as the driver runs it. Errors may be
    raised (FrameError, ProtocolError) or handed back as ``Fail``; both end the session."""

    @property
    def waiting_for(self) -> str | None:
        """What the session waits for now (named when the connection is lost)."""
        ...

    def start(self) -> Sequence[object]: ...

    def receive(self, data: bytes) -> Sequence[object]: ...

    def timeout(self) -> Sequence[object]: ...


def _records(finished: Any) -> object:
    return list(finished.records)


class ClientSteps:
    """A protocol client that speaks in actions of its own (its request bytes, its end with
    a result or an error), in the session driver's shape: each of the client's ``send``
    actions becomes ``Send(action.data)``, each ``finished`` one ``Finish(getattr(action,
    result))`` (a list when it is a sequence), each ``failed`` one ``Fail(action.error)``;
    any other object passes on as a protocol note. The step timer restarts after a request
    unless the same answer ended the session."""

    def __init__(self, client: Any, *, send: type, finished: type, failed: type,
                 result: Callable[[Any], object] = _records) -> None:
        self.client = client
        self._send, self._finished, self._failed = send, finished, failed
        self._result = result

    @property
    def waiting_for(self) -> str | None:
        waiting: str | None = self.client.waiting_for
        return waiting

    def start(self) -> list[object]:
        return self._steps(self.client.start())

    def receive(self, data: bytes) -> list[object]:
        return self._steps(self.client.receive(data))

    def timeout(self) -> list[object]:
        return self._steps(self.client.timeout())

    def _translate(self, action: object) -> object:
        if isinstance(action, self._send):
            return Send(action.data)  # type: ignore[attr-defined]
        if isinstance(action, self._finished):
            return Finish(self._result(action))
        if isinstance(action, self._failed):
            return Fail(action.error)  # type: ignore[attr-defined]
        return action

    def _steps(self, actions: Sequence[object]) -> list[object]:
        steps = [self._translate(a) for a in actions]
        if any(isinstance(s, Send) for s in steps) and not any(
                isinstance(s, Finish | Fail) for s in steps):  # fmt: skip
            steps.append(SetTimer())
        return steps


__all__ = [
    "Action",
    "ClientSteps",
    "Fail",
    "Finish",
    "Line",
    "Send",
    "SessionSteps",
    "SetTimer",
    "StopTimer",
    "SwitchBaud",
]
