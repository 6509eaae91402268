"""``fep read --meter M2`` for a meter behind a concentrator (route ``gw3761:DCU1:port=31``)
when no daemon answers: the command reads it directly through the simulated concentrator
(a real process), over the concentrator's own route from the meter list."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.inprocess import fep_main
from tests.processes import start_module


class ForwardedReadTests(unittest.TestCase):
    timeout = 120

    def fep(self, *args: str) -> Any:
        return fep_main("--config", str(self.config), *args)

    @inlineCallbacks
    def test_fep_read_meter_through_the_concentrator(self) -> Any:
        line = yield start_module(self, "fep.sim.concentrator", "--port", "0", "--meters", "3",
                                  "--silent", "000000000003")
        port = line.rsplit(":", 1)[1]
        folder = Path(self.mktemp()).resolve()
        folder.mkdir()
        self.config = folder / "fep.ini"
        # No daemon listens on the control socket (a short path: UNIX sockets take 108 bytes).
        short = Path(tempfile.mkdtemp(prefix="fepfwd", dir="/tmp"))
        self.addCleanup(shutil.rmtree, short, True)
        self.config.write_text(f"[fep]\ndata_dir = {folder}\n[store]\n"
                               f"url = sqlite:{folder / 'fep.sqlite'}\n"
                               f"[control]\nsocket = {short / 'fep.sock'}\n")
        for args in (
            ("DCU1", "--protocol", "gw3761", "--route", f"tcp:host=127.0.0.1:port={port}",
             "--address", "4403:0004"),
            ("M2", "--protocol", "dlt645", "--route", "gw3761:DCU1:port=31", "--address",
             "000000000002", "-o", "concentrator=DCU1", "-o", "point=2"),
            ("M3", "--protocol", "dlt645", "--route", "gw3761:DCU1:port=31@000000000003",
             "-o", "concentrator=DCU1", "-o", "point=3"),
        ):
            done = self.fep("meters", "add", *args)
            self.assertEqual(done.returncode, 0, done.stderr)
        done = self.fep("read", "--meter", "M2")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("no daemon answers", done.stderr)
        rows = [json.loads(row) for row in done.stdout.splitlines() if row.strip()]
        self.assertEqual({r["meter"] for r in rows}, {"M2"})
        self.assertIn("1-0:1.8.0*255", {r["obis"] for r in rows})
        # A meter that does not answer: exit 3, the concentrator, port and meter named.
        done = self.fep("read", "--meter", "M3")
        self.assertEqual(done.returncode, 3, done.stderr)
        self.assertIn("forwarding through concentrator DCU1 (4403:0004) port 31 to meter "
                      "000000000003: the meter did not answer", done.stderr)
