"""``fep read --meter M2`` for a meter behind a concentrator (route ``gw3761:DCU1:port=31``)
when no daemon answers: the command reads it directly through the simulated concentrator
(a real process), over the concentrator's own route from the meter list; and ``fep
concentrators sync DCU1`` puts the concentrator's archive in step with the list."""

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

    def configure(self) -> None:
        folder = Path(self.mktemp()).resolve()
        folder.mkdir()
        self.config = folder / "fep.ini"
        # No daemon listens on the control socket (a short path: UNIX sockets take 108 bytes).
        short = Path(tempfile.mkdtemp(prefix="fepfwd", dir="/tmp"))
        self.addCleanup(shutil.rmtree, short, True)
        self.config.write_text(f"[fep]\ndata_dir = {folder}\n[store]\n"
                               f"url = sqlite:{folder / 'fep.sqlite'}\n"
                               f"[control]\nsocket = {short / 'fep.sock'}\n")

    @inlineCallbacks
    def test_fep_read_meter_through_the_concentrator(self) -> Any:
        line = yield start_module(self, "fep.sim.concentrator", "--port", "0", "--meters", "3",
                                  "--silent", "000000000003")
        port = line.rsplit(":", 1)[1]
        self.configure()
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
        # The route itself, as for other routes (the concentrator from the meter list).
        done = self.fep("read", "gw3761:DCU1:port=31@000000000001", "--protocol", "dlt645",
                        "--meter", "try-1")
        self.assertEqual(done.returncode, 0, done.stderr)
        rows = [json.loads(row) for row in done.stdout.splitlines() if row.strip()]
        self.assertIn("1-0:1.8.0*255", {r["obis"] for r in rows})
        done = self.fep("read", "gw3761:DCU9:port=31@000000000001", "--protocol", "dlt645")
        self.assertEqual(done.returncode, 2, done.stderr)
        self.assertIn("concentrator 'DCU9' is not a meter of the meter list", done.stderr)
        done = self.fep("meters", "add", "DCU2", "--protocol", "gw3761", "--route",
                        "gprs:imei=356938035643809", "--address", "4403:0005")
        self.assertEqual(done.returncode, 0, done.stderr)
        done = self.fep("read", "gw3761:DCU2:port=31@000000000001", "--protocol", "dlt645")
        self.assertEqual(done.returncode, 2, done.stderr)
        self.assertIn("concentrator DCU2: its route gprs:imei=356938035643809 is reached "
                      "through the daemon's channels", done.stderr)
        # A meter that does not answer: exit 3, the concentrator, port and meter named.
        done = self.fep("read", "--meter", "M3")
        self.assertEqual(done.returncode, 3, done.stderr)
        self.assertIn("forwarding through concentrator DCU1 (4403:0004) port 31 to meter "
                      "000000000003: the meter did not answer", done.stderr)

    @inlineCallbacks
    def test_fep_concentrators_sync(self) -> Any:
        # The concentrator holds meters 1..5 at points 1..5 on port 31; the meter list moves
        # meter 2 to point 12 and meter 3 to port 2, leaves meter 5 out and adds meter 6.
        line = yield start_module(self, "fep.sim.concentrator", "--port", "0", "--meters", "5")
        port = line.rsplit(":", 1)[1]
        self.configure()
        done = self.fep("meters", "add", "DCU1", "--protocol", "gw3761", "--route",
                        f"tcp:host=127.0.0.1:port={port}", "--address", "4403:0004",
                        "-o", "gw3761_archive_size=30")
        self.assertEqual(done.returncode, 0, done.stderr)
        for n, point, port_n in ((1, 1, 31), (2, 12, 31), (3, 3, 2), (4, 4, 31), (6, 6, 2)):
            done = self.fep("meters", "add", f"M{n}", "--protocol", "dlt645", "--route",
                            f"gw3761:DCU1:port={port_n}", "--address", f"{n:012d}",
                            "-o", "concentrator=DCU1", "-o", f"point={point}")
            self.assertEqual(done.returncode, 0, done.stderr)
        done = self.fep("concentrators", "sync", "DCU1", "--check")
        self.assertEqual(done.returncode, 3, done.stderr)
        report = json.loads(done.stdout)
        self.assertEqual({k: [e["number"] for e in v] for k, v in report["before"].items()},
                         {"added": [6, 12], "changed": [3], "removed": [2, 5]})
        done = self.fep("concentrators", "sync", "DCU1")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("no daemon answers", done.stderr)
        report = json.loads(done.stdout)
        self.assertEqual((report["in_step"], report["written"], report["problems"]),
                         (True, 5, []))
        # Read back again: the concentrator's archive is fep's list.
        done = self.fep("concentrators", "sync", "DCU1", "--check")
        self.assertEqual(done.returncode, 0, done.stderr)
        report = json.loads(done.stdout)
        self.assertEqual((report["in_step"], report["held"], report["wanted"]), (True, 5, 5))
