"""Run a simulator (``python -m fep.sim.<name>``) and the ``fep`` command line as real
processes, for tests of the command line against a meter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@inlineCallbacks
def start_simulator(case: unittest.TestCase, module: str, *args: str) -> Any:
    """Run ``python -m fep.sim.MODULE ARGS`` until the test ends (stopped by its pid);
    fires with the first line it prints (what it serves), read in a thread."""
    proc = subprocess.Popen(
        [sys.executable, "-m", f"fep.sim.{module}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=str(ROOT),
        env=_env(),
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


@inlineCallbacks
def tcp_simulator(case: unittest.TestCase, module: str, *args: str) -> Any:
    """A simulator on a free loopback port; fires with its ``tcp:`` route. The simulators
    end their first line with ``tcp:127.0.0.1:PORT``."""
    line = yield start_simulator(case, module, *args)
    case.assertIn("tcp:127.0.0.1:", line)
    return "tcp:host=127.0.0.1:port=" + line.rsplit(":", 1)[1]


def fep(*args: str) -> Deferred[subprocess.CompletedProcess[str]]:
    """``fep ARGS`` (``python -m fep.cli``) in a thread, so the reactor runs meanwhile."""
    return deferToThread(
        subprocess.run,
        [sys.executable, "-m", "fep.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
        env=_env(),
    )
