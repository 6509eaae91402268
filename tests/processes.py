"""Child processes of the tests: simulators run as ``python -m fep.sim.X`` and the ``fep``
command line, both with this checkout first on the path and without blocking the reactor."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

ROOT = Path(__file__).resolve().parent.parent


BYTECODE_CACHE = Path(tempfile.gettempdir()) / f"fep-tests-bytecode-{os.getuid()}"


def share_child_bytecode(environ: MutableMapping[str, str] = os.environ) -> None:
    """Let the tests' child Pythons (the daemon under twistd, ``python -m fep.cli``, the
    simulators) keep their compiled bytecode, when ``PYTHONDONTWRITEBYTECODE`` is set.

    Without it every child compiles each module it imports from source again: about a
    third of a daemon's start-up (fep imports most of itself), and the suite starts a few
    hundred children. The bytecode goes to a cache of the tests' own in the temp directory
    (``PYTHONPYCACHEPREFIX``), not next to the sources, so the checkout stays as the setting
    asked; without the setting, Python's own ``__pycache__`` already does this."""
    if environ.get("PYTHONDONTWRITEBYTECODE") and not environ.get("PYTHONPYCACHEPREFIX"):
        del environ["PYTHONDONTWRITEBYTECODE"]
        environ["PYTHONPYCACHEPREFIX"] = str(BYTECODE_CACHE)


def child_env() -> dict[str, str]:
    """The environment of a child: this checkout's fep before any installed one."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@inlineCallbacks
def start_module(case: unittest.TestCase, module: str, *args: str) -> Any:
    """Run ``python -m MODULE ARGS`` for the test's duration; fires with its first stdout
    line (a simulator prints what it serves), read in a thread so the reactor runs meanwhile."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=str(ROOT),
        env=child_env(),
    )

    def stop() -> None:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()

    case.addCleanup(stop)
    assert proc.stdout is not None
    line = yield deferToThread(proc.stdout.readline)
    return line.strip()


def fep_command(*args: str, timeout: float = 60) -> Deferred[subprocess.CompletedProcess[str]]:
    """Run ``fep ARGS`` in a thread; fires with the completed process (output captured).
    For a meter served by this test's own reactor (which must keep running meanwhile);
    otherwise `tests.inprocess.fep_deferred` runs the command in-process, much faster."""
    return deferToThread(
        subprocess.run,
        [sys.executable, "-m", "fep.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
        env=child_env(),
    )


@inlineCallbacks
def tcp_simulator(case: unittest.TestCase, name: str, *args: str) -> Any:
    """``python -m fep.sim.NAME ARGS`` on a free loopback port; fires with its ``tcp:``
    route (the simulators end their first line with ``tcp:127.0.0.1:PORT``)."""
    line = yield start_module(case, f"fep.sim.{name}", *args)
    case.assertIn("tcp:127.0.0.1:", line)
    return "tcp:host=127.0.0.1:port=" + line.rsplit(":", 1)[1]
