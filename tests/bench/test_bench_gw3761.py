"""`make bench`'s Q/GDW 1376.1 row on a small scale: one session with a simulated
concentrator stores every point's daily frozen energy and 96-point curve, and `python -m
fep.bench --only gw3761 --quick` prints the row (50 meters; its SQLite row here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from fep.bench_gw3761 import concentrator_rate

ROOT = Path(__file__).resolve().parent.parent.parent

reactor: Any = global_reactor


class ConcentratorBenchTests(unittest.TestCase):
    timeout = 120

    async def test_one_session_stores_every_meters_day(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        run = await concentrator_rate(reactor, f"sqlite:{workdir / 'b.sqlite'}", workdir, 20)
        self.assertEqual((run.meters, run.readings, run.intervals), (20, 100, 20 * 96))
        self.assertGreater(run.meters_per_second, 0)
        self.assertGreater(run.bytes_in, 20 * 96 * 4)

    async def test_the_quick_row(self) -> None:
        # No PostgreSQL for the row here (it would drop and make the bench's own database).
        env = dict(os.environ, PYTHONPATH=str(ROOT),
                   FEP_BENCH_POSTGRES="postgresql://postgres@127.0.0.1:1/none")
        result = await deferToThread(
            subprocess.run, [sys.executable, "-m", "fep.bench", "--only", "gw3761", "--quick"],
            capture_output=True, text=True, timeout=110, env=env, cwd=str(ROOT))
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertRegex(result.stdout, r"\| Q/GDW 1376.1 concentrator: meters' daily data "
                                        r"stored per second, one session \| 50 meters, daily "
                                        r"frozen F161 \+ 96-point curve F101, SQLite \| [\d,]+ "
                                        r"meters/s")
