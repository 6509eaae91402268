"""The daemon's control socket: a UNIX socket under the data directory where the command line
(and scripts) ask the running daemon questions, one JSON object per line each way.

Request: ``{"command": "sessions"}``. Answer: ``{"ok": true, "sessions": [...]}`` or
``{"ok": false, "error": "..."}``. Commands are registered by name (``ControlServer.add``), so
other parts of the daemon add theirs. The socket is created mode 0600: who may use it is who
may read the data directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import UNIXClientEndpoint, UNIXServerEndpoint
from twisted.internet.interfaces import IProtocolFactory, IReactorUNIX
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from fep.channels.listeners import ListenerSet
from fep.errors import ChannelError, ConfigError, FepError
from fep.interfaces import peer_identified
from fep.reactors import IFepReactor
from fep.servicetree import Listener

log = Logger(namespace="fep.operator.control")

Command = Callable[[dict[str, Any]], Any]
MAX_LINE = 64 * 1024
# sockaddr_un holds 108 bytes with the terminating NUL on Linux.
MAX_SOCKET_PATH = 107


class _ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(self, commands: dict[str, Command]) -> None:
        self.commands = commands

    def lineReceived(self, line: bytes) -> None:
        try:
            try:
                request = json.loads(line)
            except RecursionError:
                # Arrays or objects nested deeper than the interpreter's stack.
                raise ValueError("request nested too deep") from None
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            name = request.get("command")
            command = self.commands.get(name) if isinstance(name, str) else None
            if command is None:
                known = ", ".join(sorted(self.commands))
                raise ValueError(f"unknown command {name!r} (known: {known})")
        except ValueError as e:
            self._answer({"ok": False, "error": str(e)})
            # One answer per bad request and the connection ends: a peer that streams junk
            # lines and never reads the answers cannot grow our write buffer without end.
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        peer_identified(self.transport)
        d = maybeDeferred(command, request)
        d.addCallbacks(self._answered, self._failed, errbackArgs=(name,))

    def _answered(self, result: Any) -> None:
        answer = {"ok": True}
        if isinstance(result, dict):
            answer.update(result)
        self._answer(answer)

    def _failed(self, failure: Failure, name: str) -> None:
        if not failure.check(FepError):
            log.failure("control command {command} failed", failure, command=name)
        answer: dict[str, Any] = {"ok": False, "error": failure.getErrorMessage()}
        if failure.value is not None and _is_bad_request(failure.value):
            # What the caller asked for is wrong (no such meter, a bad option): the command
            # line exits with its usage status, not as if a meter had failed.
            answer["bad_request"] = True
        self._answer(answer)

    def _answer(self, answer: dict[str, Any]) -> None:
        if self.transport is not None:
            self.transport.write(json.dumps(answer, default=str).encode() + b"\n")

    def lineLengthExceeded(self, line: bytes) -> None:
        self._answer({"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
        self.transport.loseConnection()  # type: ignore[union-attr]


class ControlServer(Listener):
    """Listens on the control socket while running: a listener of the service tree (a UNIX
    server endpoint, mode 0600, with a lock file naming the daemon's PID, so that a stale
    socket of a dead daemon is replaced)."""

    name = "control"

    def __init__(self, reactor: IReactorUNIX, path: str | Path,
                 limits: ListenerSet | None = None) -> None:
        self.reactor = reactor
        # The connection caps and timeouts of the socket ([listeners] control.*).
        self.limits = limits
        self.path = Path(path)
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise ConfigError(
                f"{self.path}: longer than the {MAX_SOCKET_PATH} bytes a UNIX socket path may "
                "have; give a shorter one",
                section="control",
                key="socket",
            )
        self.commands: dict[str, Command] = {"ping": lambda request: {"pong": True}}
        super().__init__(
            UNIXServerEndpoint(reactor, str(self.path), mode=0o600, wantPID=True),
            self.protocol_factory,
            lambda port: log.info("control socket {path}", path=str(self.path)),
        )

    def add(self, name: str, command: Command) -> None:
        """Answer ``{"command": name, ...}`` with what ``command(request)`` returns (a dict,
        or a Deferred of one); a FepError it raises is the answer's ``error``."""
        self.commands[name] = command

    def protocol_factory(self) -> IProtocolFactory:
        commands = self.commands
        factory = Factory.forProtocol(lambda: _ControlProtocol(commands))
        if self.limits is None:
            return factory
        return self.limits.wrap(factory, "control")

    def privilegedStartService(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        super().privilegedStartService()


class _ClientProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024 * 1024

    def __init__(self) -> None:
        self.answer: Deferred[dict[str, Any]] = Deferred()

    def lineReceived(self, line: bytes) -> None:
        if not self.answer.called:
            try:
                self.answer.callback(json.loads(line))
            except ValueError as e:
                self.answer.errback(Failure(ChannelError(f"bad answer from the daemon: {e}")))
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if not self.answer.called:
            self.answer.errback(Failure(ChannelError("the daemon closed the control socket")))


class DaemonUnreachable(ChannelError):
    """No daemon answers on the control socket (none runs, or another socket is its)."""


class RequestRefused(FepError):
    """The daemon refused a request as wrong in itself (an unknown meter, a bad option)."""


def _is_bad_request(error: BaseException) -> bool:
    from fep.operator.commands import CommandRefused

    if isinstance(error, ConfigError):
        return True
    return isinstance(error, CommandRefused) and error.status in (400, 404)


async def ask(
    reactor: IFepReactor, path: str | Path, command: str, *, timeout: float | None = 30,
    **arguments: Any
) -> dict[str, Any]:
    """Send one command to the daemon at ``path`` and return its answer (waiting at most
    ``timeout`` seconds for it; None: as long as the daemon takes, e.g. a read that waits for
    its line); DaemonUnreachable when no daemon answers there, ChannelError when it refuses
    the command."""
    endpoint = UNIXClientEndpoint(reactor, str(path), timeout=10)
    protocol = _ClientProtocol()
    try:
        await endpoint.connect(Factory.forProtocol(lambda: protocol))
    except Exception as e:
        raise DaemonUnreachable(
            f"cannot reach the daemon's control socket {path}: {e} (is fep running, and is "
            "[control] socket the same?)"
        ) from None
    request = {"command": command, **arguments}
    protocol.sendLine(json.dumps(request).encode())
    timer = None if timeout is None else reactor.callLater(timeout, protocol.answer.cancel)
    try:
        answer = await protocol.answer
    finally:
        if timer is not None and timer.active():
            timer.cancel()
    if not answer.get("ok"):
        if answer.get("bad_request"):
            raise RequestRefused(f"the daemon refused {command!r}: {answer.get('error')}")
        raise ChannelError(f"the daemon refused {command!r}: {answer.get('error')}")
    return answer
