"""The console of viewers and operators: a line-command interpreter over the named commands,
never Python. A line is either words (``read m1``, ``command m1 disconnect``, ``approve 7``,
``events m1 since=2024-05-01``; each word is passed as text, never converted) or one call
with literal arguments (``read("m1")``, ``command("m1", "disconnect", reason="unpaid")``)
parsed with :mod:`ast` and ``ast.literal_eval``: nothing is evaluated, only a named command
the role allows is called.
"""

from __future__ import annotations

import ast
import pprint
import shlex
from collections.abc import Callable, Sequence
from typing import Any

from twisted.conch import recvline
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from fep.errors import FepError

log = Logger(namespace="fep.operator.manhole")

MAX_LINE = 2000
CTRL_C = b"\x03"
CTRL_D = b"\x04"


class LineError(ValueError):
    """A console line that is not a command line."""


def parse_command_line(line: str) -> tuple[str, list[Any], dict[str, Any]] | None:
    """(name, args, keyword args) of a console line; None for a blank line."""
    text = line.strip()
    if not text:
        return None
    if len(text) > MAX_LINE:
        raise LineError(f"line longer than {MAX_LINE} characters")
    if "(" not in text:
        try:
            words = shlex.split(text)
        except ValueError as e:
            raise LineError(str(e)) from None
        if not words or not words[0].isidentifier():
            raise LineError("not a command line (e.g. read m1, or read(\"m1\")); the Python "
                            "prompt is for admins")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for word in words[1:]:
            key, eq, value = word.partition("=")
            if eq and key.isidentifier():
                kwargs[key] = value
            else:
                args.append(word)
        return words[0], args, kwargs
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise LineError("not a command line (e.g. read m1, or read(\"m1\"))") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise LineError("only a command call such as read(\"m1\") is understood here "
                        "(the Python prompt is for admins)")
    try:
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {}
        for keyword in call.keywords:
            if keyword.arg is None:
                raise ValueError("**")
            kwargs[keyword.arg] = ast.literal_eval(keyword.value)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise LineError("arguments must be literals (strings, numbers)") from None
    return call.func.id, args, kwargs


class LineConsole(recvline.HistoricRecvLine):
    """The terminal side of a viewer's or operator's login.

    ``commands`` is the login's command object (its methods are the named commands);
    ``allowed(name)`` says whether this login may run ``name``."""

    ps = (b"fep> ", b"fep> ")

    def __init__(self, commands: Any, names: Sequence[str], allowed: Callable[[str], bool],
                 operator: str, role: str, fingerprint: str) -> None:
        super().__init__()
        self.commands = commands
        self.names = tuple(names)
        self.allowed = allowed
        self.operator = operator
        self.role = role
        self.fingerprint = fingerprint

    def connectionMade(self) -> None:
        super().connectionMade()
        self.keyHandlers[CTRL_C] = self.handle_INT
        self.keyHandlers[CTRL_D] = self.handle_EOF
        log.info("operator {operator} ({role}) logged in to the console with key "
                 "{fingerprint}", operator=self.operator, role=self.role,
                 fingerprint=self.fingerprint)
        self.say(f"fep operator console ({self.operator}, {self.role}): help lists the "
                 "commands")
        self.terminal.write(self.ps[self.pn])

    def connectionLost(self, reason: Any) -> None:
        log.info("operator {operator} left the console", operator=self.operator,
                 fingerprint=self.fingerprint)
        super().connectionLost(reason)

    def handle_INT(self) -> None:
        self.terminal.nextLine()
        self.lineBuffer = []
        self.lineBufferIndex = 0
        self.terminal.write(self.ps[self.pn])

    def handle_EOF(self) -> None:
        if self.lineBuffer:
            self.terminal.write(b"\a")
        else:
            self.terminal.loseConnection()

    def say(self, text: str) -> None:
        # The terminal turns each \n into \r\n.
        self.terminal.write(text.replace("\r\n", "\n").encode("utf-8", "replace") + b"\n")

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        log.info("console {operator} ({fingerprint}): {line}", operator=self.operator,
                 fingerprint=self.fingerprint, line=text)
        try:
            self.run_line(text)
        finally:
            self.terminal.write(self.ps[self.pn])

    def run_line(self, text: str) -> None:
        try:
            parsed = parse_command_line(text)
        except LineError as e:
            self.say(f"refused: {e}")
            return
        if parsed is None:
            return
        name, args, kwargs = parsed
        if name in ("exit", "quit", "logout"):
            self.terminal.loseConnection()
            return
        if name not in self.names:
            self.say(f"refused: no command {name!r} (help lists them; the Python prompt is "
                     "for admins)")
            return
        if not self.allowed(name):
            log.warn("console {operator} ({role}) refused command {command}",
                     operator=self.operator, role=self.role, command=name)
            self.say(f"refused: {name} needs a higher role than {self.role}")
            return
        try:
            result = getattr(self.commands, name)(*args, **kwargs)
        except (FepError, TypeError, ValueError, KeyError) as e:
            self.say(f"error: {e}")
            return
        except Exception as e:
            log.failure("console {operator}: command {command} failed",
                        operator=self.operator, command=name)
            self.say(f"error: {type(e).__name__}: {e}")
            return
        if isinstance(result, Deferred):
            self.say(f"{name}: under way")

            def prompt(_: object) -> None:
                self.terminal.write(self.ps[self.pn])

            result.addCallbacks(self.show, self.failed).addCallback(prompt)
            result.addErrback(lambda f: log.failure("console output", f))
        else:
            self.show(result)

    def show(self, value: Any) -> None:
        if value is None:
            return
        text = value if isinstance(value, str) else (
            value.text() if hasattr(value, "text") else pprint.pformat(value, width=96))
        self.say(text)

    def failed(self, failure: Failure) -> None:
        if not failure.check(FepError, TypeError, ValueError, KeyError):
            log.failure("console {operator}: command failed", failure,
                        operator=self.operator)
        self.say(f"error: {failure.getErrorMessage()}")
