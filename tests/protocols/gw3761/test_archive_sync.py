"""ArchiveSync, sans IO, against the simulated concentrator: read in requests of 30 entry
numbers, compare, write what differs, read back; check-only writes nothing; a denied write
fails naming the concentrator; silence is resent, then a timeout."""

from __future__ import annotations

import attrs
from twisted.trial import unittest

from fep.errors import ProtocolError, SessionTimeout
from fep.protocols.gw3761.archive import ArchiveSync, Failed, Finished, Send, SyncReport
from fep.protocols.gw3761.frames import Afn, FrameDecoder
from fep.protocols.gw3761.services import ArchiveEntry
from fep.sim.concentrator import SimulatedConcentrator, make_concentrator

START = 1_709_280_000.0


def run(client: ArchiveSync, sim: SimulatedConcentrator, limit: int = 500) -> object:
    decoder = FrameDecoder()
    actions: list[object] = list(client.start())
    for _ in range(limit):
        ends = [a for a in actions if isinstance(a, Finished | Failed)]
        if ends:
            return ends[0]
        sends = [a for a in actions if isinstance(a, Send)]
        if not sends:
            actions = list(client.timeout())
            continue
        actions = []
        for send in sends:
            for answer in sim.receive(send.data, decoder):
                actions += client.receive(answer)
    raise AssertionError("the synchronisation did not end")


class ArchiveSyncTests(unittest.TestCase):
    def setUp(self) -> None:
        self.sim = make_concentrator(40, clock=lambda: START)
        self.wanted = [e for n, e in sorted(self.sim.archive.items()) if n != 7]  # 7 removed
        self.wanted[0] = attrs.evolve(self.wanted[0], port=2)  # moved to port 2
        self.wanted.append(ArchiveEntry(41, 41, 31, "000000009999"))  # added

    def test_repairs_and_reads_back(self) -> None:
        client = ArchiveSync(self.sim.address, self.wanted, size=64)
        end = run(client, self.sim)
        assert isinstance(end, Finished)
        report = end.report
        self.assertIsInstance(report, SyncReport)
        self.assertEqual((len(report.before.added), len(report.before.changed),
                          len(report.before.removed)), (1, 1, 1))
        self.assertEqual((report.held, report.wanted, report.written), (40, 40, 3))
        self.assertIsNotNone(report.after)
        self.assertTrue(report.in_step)
        self.assertEqual(sorted(self.sim.archive.values(), key=lambda e: e.number),
                         self.wanted)
        # 64 numbers: 3 requests to read, one to write, 3 to read back.
        self.assertEqual(self.sim.requests, 7)
        self.assertEqual(report.as_dict()["before"]["removed"][0]["number"], 7)

    def test_check_only_writes_nothing(self) -> None:
        before = dict(self.sim.archive)
        end = run(ArchiveSync(self.sim.address, self.wanted, size=64, repair=False), self.sim)
        assert isinstance(end, Finished)
        self.assertFalse(end.report.in_step)
        self.assertIsNone(end.report.after)
        self.assertEqual(self.sim.archive, before)

    def test_in_step_writes_nothing(self) -> None:
        wanted = sorted(self.sim.archive.values(), key=lambda e: e.number)
        end = run(ArchiveSync(self.sim.address, wanted, size=40), self.sim)
        assert isinstance(end, Finished)
        self.assertTrue(end.report.in_step)
        self.assertEqual((end.report.written, self.sim.requests), (0, 2))

    def test_a_denied_write_fails(self) -> None:
        self.sim.refuse.add((Afn.SET_PARAMETERS, 10))
        end = run(ArchiveSync(self.sim.address, self.wanted, size=64, meter="DCU1"), self.sim)
        assert isinstance(end, Failed)
        self.assertIsInstance(end.error, ProtocolError)
        self.assertIn("concentrator 4403:0004: denied 04:F10 writing 3 entries",
                      str(end.error))

    def test_silence_is_resent_then_times_out(self) -> None:
        self.sim.drop_answers = 1
        end = run(ArchiveSync(self.sim.address, self.wanted, size=64), self.sim)
        self.assertIsInstance(end, Finished)
        self.sim.drop_answers = 10
        end = run(ArchiveSync(self.sim.address, self.wanted, size=64), self.sim)
        assert isinstance(end, Failed)
        self.assertIsInstance(end.error, SessionTimeout)
        self.assertIn("did not answer 0A:F10 entries 1..30", str(end.error))

    def test_a_number_wanted_twice_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            ArchiveSync(self.sim.address, [self.wanted[0], self.wanted[0]])
