"""Archive comparison and repair against the simulated concentrator: after adding, moving
and removing meters, the concentrator's archive equals the one fep wants."""

from __future__ import annotations

import attrs
from twisted.trial import unittest

from fep.protocols.gw3761 import services
from fep.protocols.gw3761.archive import ArchiveDiff, compare, read_unit, write_units
from fep.protocols.gw3761.frames import Address, Afn, FrameDecoder, Reassembler
from fep.protocols.gw3761.services import ArchiveEntry, Data, Master
from fep.sim.concentrator import SimulatedConcentrator, make_concentrator

START = 1_709_280_000.0


def held(sim: SimulatedConcentrator, master: Master) -> list[ArchiveEntry]:
    wire = sim.receive(master.request(Afn.QUERY_PARAMETERS, read_unit()).encode(),
                       FrameDecoder())  # fmt: skip
    joiner, out = Reassembler(), []
    for frame in FrameDecoder().receive(b"".join(wire)):
        whole = joiner.add(frame)
        if whole is not None:
            event = services.decode_event(whole)
            assert isinstance(event, Data)
            out += [e for item in event.items for e in item.value]
    return out


class CompareTests(unittest.TestCase):
    def test_added_changed_removed(self) -> None:
        a, b, c = (ArchiveEntry(n, n, 31, f"{n:012d}") for n in (1, 2, 3))
        diff = compare([a, attrs.evolve(b, port=2)], [b, c])
        self.assertEqual(diff, ArchiveDiff((a,), (attrs.evolve(b, port=2),), (c,)))
        self.assertEqual([(e.number, e.point) for e in diff.writes()], [(1, 1), (2, 2), (3, 0)])
        self.assertTrue(compare([a], [a]).in_step)
        self.assertRaises(ValueError, compare, [a, a], [])


class SimulatorSyncTests(unittest.TestCase):
    def test_add_move_remove_then_the_archive_equals_fep_s(self) -> None:
        sim = make_concentrator(40, clock=lambda: START)
        master = Master(Address("4403", 4))
        wanted = [e for e in held(sim, master) if e.number != 7]  # meter 7 removed
        wanted[0] = attrs.evolve(wanted[0], port=2)  # meter 1 moved to port 2
        wanted[1] = attrs.evolve(wanted[1], point=100)  # meter 2 moved to point 100
        wanted.append(ArchiveEntry(41, 41, 31, "000000009999"))  # a meter added
        diff = compare(wanted, held(sim, master))
        self.assertEqual((len(diff.added), len(diff.changed), len(diff.removed)), (1, 2, 1))
        for unit in write_units(diff.writes()):
            (answer,) = sim.answer(master.request(Afn.SET_PARAMETERS, unit))
            self.assertIsInstance(services.decode_event(answer), services.Confirmed)
        after = held(sim, master)
        self.assertTrue(compare(wanted, after).in_step)
        self.assertEqual(sorted(e.number for e in after), sorted(e.number for e in wanted))
