"""AT pass-through on a GPRS terminal's own session: the Twisted side of a terminal
profile's ``[tcp]`` (fep.channels.terminals). Given the pipe of the terminal's session (the
``gprs:`` route's endpoint, as a pull job borrows it), it waits out the guard time, sends the
escape sequence, gives the password, sends each command line and waits for each answer, and
ends with the restart, after which the terminal closes its session and dials the master
station it is now set to. A refusal sends ``leave`` (back to transparent mode) and fails
with the terminal's own answer.

What the terminal sends is read as lines (CR or LF); an echo of the line sent and lines that
are neither OK nor ERROR are kept as its answer (bounded); a buffer without a line end is cut
at 4 KiB. Nothing here logs the password: the lines sent are never logged.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from fep.channels.terminals import MAX_ANSWER, TcpSession
from fep.errors import ChannelError

MAX_BUFFER = 4096


class TerminalRefused(ChannelError):
    """The terminal answered a configuration step with an error (a wrong password, a
    command it does not take): another attempt gets the same answer."""

    final = True

    def __init__(self, message: str, answer: str, *, route: str | None = None,
                 step: str = "") -> None:
        super().__init__(message, route=route)
        self.answer = answer
        self.step = step


class PassThrough(Protocol):
    """One configuration dialogue; ``done`` fires with the answers (one per step) or fails
    with TerminalRefused (an ERROR) or ChannelError (no answer, session lost early)."""

    def __init__(self, reactor: IReactorTime, session: TcpSession, password: str,
                 lines: list[str], route: str, *, restarts: bool = True) -> None:
        self.reactor = reactor
        self.session = session
        self.password = password
        self.route = route
        # (what is sent, what it is called in errors); the restart is the last line.
        self.steps: list[tuple[str, str]] = []
        if session.login is not None:
            self.steps.append((session.login.render({"password": password}), "login"))
        self.steps += [(line, f"command {n + 1}") for n, line in enumerate(lines)]
        # The last line restarts the terminal: its session may end instead of an answer.
        self.restart_step = len(self.steps) - 1 if restarts else -2
        self.done: Deferred[list[str]] = Deferred()
        self.answers: list[str] = []
        self._buffer = b""
        self._step = -1  # -1: waiting to enter; 0..: the step whose answer is awaited
        self._entering = False
        self._other: list[str] = []
        self._timer: IDelayedCall | None = None
        self._sent = ""

    # -- the dialogue ---------------------------------------------------------------------

    def connectionMade(self) -> None:
        if self.session.enter:
            self._timer = self.reactor.callLater(self.session.guard, self._enter)
        else:
            self._next()

    def _enter(self) -> None:
        self._timer = None
        self._entering = True
        self._send_raw(self.session.enter, "escape sequence")
        self._arm("the escape sequence")

    def _next(self) -> None:
        self._step += 1
        self._other = []
        line, _ = self.steps[self._step]
        self._send_raw(line + self.session.line_end, line)
        self._arm(self._what())

    def _what(self) -> str:
        return self.steps[self._step][1] if self._step >= 0 else "the escape sequence"

    def _send_raw(self, data: str, sent: str) -> None:
        self._sent = sent
        assert self.transport is not None
        self.transport.write(data.encode("latin-1", "replace"))

    def _arm(self, what: str) -> None:
        self._cancel()
        self._timer = self.reactor.callLater(self.session.answer_timeout, self._timed_out,
                                             what)

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self, what: str) -> None:
        self._timer = None
        heard = f" (it said {' / '.join(self._other)!r})" if self._other else ""
        self._fail(ChannelError(f"terminal did not answer {what} within "
                                f"{self.session.answer_timeout:g} s{heard}", route=self.route))

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._buffer += data
        while True:
            cut = min((i for i in (self._buffer.find(b"\r"), self._buffer.find(b"\n"))
                       if i >= 0), default=-1)
            if cut < 0:
                break
            raw, self._buffer = self._buffer[:cut], self._buffer[cut + 1:]
            line = raw.decode("latin-1").strip()
            if line and not self._line(line):
                return
        if len(self._buffer) > MAX_BUFFER:
            self._buffer = self._buffer[-MAX_BUFFER:]

    def _line(self, line: str) -> bool:
        """Take one line; False once the dialogue has ended."""
        self._take(line[:MAX_ANSWER])
        return not self.done.called

    def _take(self, line: str) -> None:
        if self._entering:
            if self.session.entered.search(line):
                self._entering = False
                self._cancel()
                self._next()
            return
        if self._step < 0 or line == self._sent.strip():
            return  # before we asked anything, or our own echo
        if self.session.error.search(line):
            self._cancel()
            answer = " / ".join([*self._other, line])
            self._leave()
            self._fail(TerminalRefused(f"terminal refused {self._what()}: {answer}", answer,
                                       route=self.route, step=self._what()))
            return
        if self.session.ok.search(line):
            self._cancel()
            self.answers.append(" / ".join([*self._other, line]))
            if self._step >= len(self.steps) - 1:
                self._finish()
            else:
                self._next()
            return
        if len(self._other) < 4:
            self._other.append(line)

    def _leave(self) -> None:
        if self.session.leave and self.transport is not None:
            self.transport.write((self.session.leave + self.session.line_end).encode(
                "latin-1", "replace"))

    def _finish(self) -> None:
        self._cancel()
        if not self.done.called:
            self.done.callback(self.answers)
        if self.transport is not None:
            self.transport.loseConnection()

    def _fail(self, error: Exception) -> None:
        self._cancel()
        if not self.done.called:
            self.done.errback(Failure(error))
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self._cancel()
        if self.done.called:
            return
        if self._step == self.restart_step:
            # The terminal restarted before (or instead of) answering the restart.
            self.answers.append("(session closed: restarting)")
            self.done.callback(self.answers)
            return
        self.done.errback(Failure(ChannelError(
            f"the terminal's session ended while waiting for {self._what()}: "
            f"{reason.getErrorMessage()}", route=self.route)))


class _Once(Factory):
    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_instance


async def pass_through(reactor: IReactorTime, endpoint: IStreamClientEndpoint,
                       session: TcpSession, password: str, lines: list[str], route: str,
                       *, restarts: bool = True) -> list[str]:
    """Run the configuration ``lines`` (the restart last, when ``restarts``) over
    ``endpoint`` (the terminal's session); the terminal's answers, one per step."""
    protocol = PassThrough(reactor, session, password, lines, route, restarts=restarts)
    await endpoint.connect(_Once(protocol))
    answers: list[str] = await protocol.done
    return answers
