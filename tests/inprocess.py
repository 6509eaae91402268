"""The ``fep`` command line run in the test process: ``fep.cli.main(argv)`` with its output
captured and its exit status caught, without the start-up cost of a child Python.

``main`` runs the global reactor until its command is done, and the tests' own reactor is
already running (trial runs every test inside it). So for the length of the call
``twisted.internet.reactor`` is a fresh reactor that the command runs and stops; the tests'
reactor stands still meanwhile and is put back afterwards. Signal handlers stay the tests'
(the fresh reactor runs without installing its own). Tests of the installed entry point
(the ``fep`` console script, ``python -m fep.cli``) use `tests.test_cli.run_fep` instead."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from typing import Any

import twisted.internet
from twisted.internet.defer import Deferred, succeed


@contextlib.contextmanager
def fresh_reactor() -> Iterator[Any]:
    """``twisted.internet.reactor`` is a new, unstarted reactor inside the block."""
    from twisted.internet.selectreactor import SelectReactor

    # Outside trial no reactor is installed yet: install the default one, put back after.
    importlib.import_module("twisted.internet.reactor")
    saved = sys.modules["twisted.internet.reactor"]
    fresh = SelectReactor()
    fresh.run = partial(fresh.run, installSignalHandlers=False)  # type: ignore[method-assign]
    sys.modules["twisted.internet.reactor"] = fresh
    twisted.internet.reactor = fresh
    try:
        yield fresh
    finally:
        sys.modules["twisted.internet.reactor"] = saved
        twisted.internet.reactor = saved  # type: ignore[assignment]
        fresh.removeAll()
        waker = getattr(fresh, "waker", None)
        if waker is not None:
            waker.connectionLost(None)


@contextlib.contextmanager
def _environment(cwd: str | None, env_extra: dict[str, str] | None) -> Iterator[None]:
    before_cwd = os.getcwd()
    saved = {k: os.environ.get(k) for k in env_extra or {}}
    os.environ.update(env_extra or {})
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before_cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fep_main(
    *args: str, cwd: str | None = None, env_extra: dict[str, str] | None = None,
    stdin: str = "", timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``fep ARGS`` through ``fep.cli.main`` in this process: its exit status, stdout and
    stderr, like `subprocess.run(..., capture_output=True, text=True)`. A command still
    running after ``timeout`` seconds is stopped and fails the test (the tests' reactor,
    and so trial's own timeout, stand still meanwhile)."""
    from fep.cli import main

    expired: list[bool] = []

    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(err_bytes, encoding="utf-8", write_through=True)
    code: Any = 0
    with (_environment(cwd, env_extra), fresh_reactor() as fresh,
          contextlib.redirect_stdout(out), contextlib.redirect_stderr(err),
          _stdin(stdin)):
        def expire() -> None:
            expired.append(True)
            fresh.stop()

        timer = fresh.callLater(timeout, expire)
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code
        finally:
            if timer.active():
                timer.cancel()
    if expired:
        raise AssertionError(f"fep {' '.join(args)} did not finish within {timeout} s")
    out.flush()
    err.flush()
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, status 1
        err_bytes.write(f"{code}\n".encode())
        code = 1
    return subprocess.CompletedProcess(
        ["fep", *args], code, out_bytes.getvalue().decode("utf-8", "replace"),
        err_bytes.getvalue().decode("utf-8", "replace"))


@contextlib.contextmanager
def _stdin(text: str) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(text.encode()), encoding="utf-8")
    try:
        yield
    finally:
        sys.stdin = saved


def fep_deferred(*args: str) -> Deferred[subprocess.CompletedProcess[str]]:
    """`fep_main` with the result in a fired Deferred: a drop-in for
    `tests.processes.fep_command` where the meter is served by a child process (the tests'
    reactor stands still while the command runs, so it must not serve the meter itself)."""
    return succeed(fep_main(*args))
