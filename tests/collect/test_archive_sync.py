"""A concentrator's archive from the meter list and its synchronisation (issue 18): after
meters are added, moved (another point or port) and removed in fep, the simulated
concentrator's archive equals fep's list, through the daemon's door (ArchiveSyncDoor over
the channels) and the API (POST /api/v1/meters/DCU1/archive-sync)."""

from __future__ import annotations

import json

import attrs
from twisted.internet import reactor
from twisted.trial import unittest

from fep.channels.routes import Channels
from fep.collect.archive_sync import ArchiveSyncDoor, Problem, wanted_archive
from fep.collect.forwarding import add_forwarding
from fep.directory import MeterDirectory
from fep.model import Meter
from fep.operator.http import site
from fep.operator.metrics import FepMetrics
from fep.operator.tokens import TokenFile
from fep.operator.webguard import AuthFailures
from fep.protocols.gw3761.services import ArchiveEntry
from fep.protocols.registry import meter_protocol
from fep.sim.concentrator import ConcentratorFactory, make_concentrator
from tests.collect.harness import listen
from tests.operator.helpers import OPERATOR_TOKEN, TOKENS, VIEWER_TOKEN, http, make_context

START = 1_709_280_000.0


def child(n: int, point: int, port: int = 31, **metadata: str) -> Meter:
    return Meter(f"M{n}", "dlt645", f"gw3761:DCU1:port={port}", address=f"{n:012d}",
                 metadata={"concentrator": "DCU1", "point": str(point), **metadata})


class WantedArchiveTests(unittest.TestCase):
    def test_entries_and_problems(self) -> None:
        dcu = Meter("DCU1", "gw3761", "tcp:host=10.0.0.9:port=9761", address="4403:0004")
        meters = [
            dcu,
            child(1, 1),
            child(2, 12, port=2),
            attrs.evolve(child(3, 3), route="gw3761:DCU1:port=3:baud=9600"),
            attrs.evolve(child(4, 4, dlt645_edition="1997"),
                         metadata={"concentrator": "DCU1", "point": "P4",
                                   "dlt645_edition": "1997"}),
            attrs.evolve(child(10, 10), address="12345"),  # padded to 12 digits
            attrs.evolve(child(11, 11), address="ABC"),
            Meter("M5", "dlt645", "serial:/dev/ttyS1@000000000005",
                  metadata={"concentrator": "DCU1", "point": "5", "gw3761_port": "4"}),
            child(6, 1),  # point 1 taken
            attrs.evolve(child(7, 7), metadata={"concentrator": "DCU1"}),  # no point
            attrs.evolve(child(8, 8), protocol="dlms"),
            Meter("M9", "dlt645", "tcp:host=x:port=1", metadata={"concentrator": "DCU1",
                                                                  "point": "9"}),
            Meter("X1", "dlt645", "tcp:host=x:port=1", address="000000000099"),  # not its
        ]
        entries, problems = wanted_archive(dcu, meters)
        self.assertEqual(entries, [
            ArchiveEntry(1, 1, 31, "000000000001"),
            ArchiveEntry(3, 3, 3, "000000000003", baud=9600),
            ArchiveEntry(4, 4, 31, "000000000004", protocol=1),
            ArchiveEntry(5, 5, 4, "000000000005"),
            ArchiveEntry(10, 10, 31, "000000012345"),
            ArchiveEntry(12, 12, 2, "000000000002"),
        ])
        self.assertEqual(problems, [
            Problem("M11", "meter M11: address '000000000ABC' is not a 12-digit DL/T 645 "
                           "address"),
            Problem("M6", "meter M6: point 1 is meter M1's"),
            Problem("M7", "meter M7: point '' is not a point number 1..2040"),
            Problem("M8", "meter M8: protocol dlms: fep writes DL/T 645 meters to an archive"),
            Problem("M9", "meter M9: no port on DCU1: give the route gw3761:DCU1:port=N or "
                          "metadata gw3761_port"),
        ])


class SyncTests(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.sim = make_concentrator(5, clock=lambda: START)
        port = listen(self, ConcentratorFactory(self.sim, reactor))
        self.dcu = Meter("DCU1", "gw3761", f"tcp:host=127.0.0.1:port={port}",
                         address="4403:0004", metadata={"gw3761_archive_size": "60"})
        # The concentrator holds M1..M5 at points 1..5 on port 31. In fep: M2 moved to
        # point 12, M3 to port 2, M5 removed, M6 added.
        self.fleet = [self.dcu, child(1, 1), child(2, 12), child(3, 3, port=2), child(4, 4),
                      child(6, 6, port=2)]

    def held(self) -> set[tuple[int, int, str]]:
        return {(e.point, e.port, e.address) for e in self.sim.archive.values() if e.point}

    def wanted(self) -> set[tuple[int, int, str]]:
        entries, problems = wanted_archive(self.dcu, self.fleet)
        self.assertEqual(problems, [])
        return {(e.point, e.port, e.address) for e in entries}

    def door(self, directory: MeterDirectory) -> ArchiveSyncDoor:
        channels = Channels(reactor)
        add_forwarding(channels, directory.get)
        return ArchiveSyncDoor(reactor, channels.endpoint_for, meter_protocol, directory, 5)

    async def test_added_moved_removed_meters_reach_the_concentrator(self) -> None:
        directory = MeterDirectory(None)  # type: ignore[arg-type]
        directory.replace(self.fleet)
        self.assertNotEqual(self.held(), self.wanted())
        report = await self.door(directory)("DCU1", False, "alice")  # check only
        self.assertEqual((report["in_step"], report["written"]), (False, 0))
        self.assertEqual({k: [e["number"] for e in v] for k, v in report["before"].items()},
                         {"added": [6, 12], "changed": [3], "removed": [2, 5]})
        self.assertNotEqual(self.held(), self.wanted())
        report = await self.door(directory)("DCU1", True, "alice")
        self.assertTrue(report["in_step"], report)
        self.assertEqual(report["written"], 5)
        self.assertEqual(report["after"], {"added": [], "changed": [], "removed": []})
        self.assertEqual(self.held(), self.wanted())
        # Then a meter removed in fep is removed from the concentrator at the next one.
        directory.replace([m for m in self.fleet if m.id != "M6"])
        self.fleet = directory.all()
        report = await self.door(directory)("DCU1", True, "alice")
        self.assertEqual((report["in_step"], report["written"]), (True, 1))
        self.assertEqual(self.held(), self.wanted())

    async def test_through_the_api(self) -> None:
        ctx = await make_context(self, self.fleet)
        ctx.concentrator_sync = self.door(ctx.directory)
        port = reactor.listenTCP(0, site(ctx, TokenFile.parse(TOKENS), FepMetrics.create(),
                                         failures=AuthFailures(reactor.seconds, limit=0)),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}/api/v1/meters"
        refused = await http(f"{base}/DCU1/archive-sync", method=b"POST", token=VIEWER_TOKEN)
        self.assertEqual(refused.status, 403, refused.body)
        missing = await http(f"{base}/M1/archive-sync", method=b"POST", token=OPERATOR_TOKEN)
        self.assertEqual(missing.status, 404, missing.body)
        checked = await http(f"{base}/DCU1/archive-sync", method=b"POST",
                             token=OPERATOR_TOKEN, body=json.dumps({"check": True}).encode())
        self.assertEqual(checked.status, 200, checked.body)
        self.assertFalse(checked.json()["in_step"])
        done = await http(f"{base}/DCU1/archive-sync", method=b"POST", token=OPERATOR_TOKEN)
        self.assertEqual(done.status, 200, done.body)
        self.assertTrue(done.json()["in_step"])
        self.assertEqual(self.held(), self.wanted())
        self.sim.refuse.add((0x04, 10))
        self.sim.archive.clear()
        failed = await http(f"{base}/DCU1/archive-sync", method=b"POST", token=OPERATOR_TOKEN)
        self.assertEqual(failed.status, 502, failed.body)
        self.assertIn("concentrator DCU1: concentrator 4403:0004: denied 04:F10",
                      failed.json()["error"])
