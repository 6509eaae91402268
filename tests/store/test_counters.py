"""Invocation counters on disk: reserved before use, never handed out twice across restarts;
the last accepted counter per system title survives a restart."""

from __future__ import annotations

import json
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from fep.store.counters import InvocationCounterFile


class InvocationCounterFileTests(unittest.TestCase):
    async def test_reservations_never_overlap_across_restarts(self) -> None:
        path = Path(self.mktemp()) / "counters.json"
        first = InvocationCounterFile(reactor, path)
        await first.open()
        a = await first.reserve("fep:m1", 100)
        b = await first.reserve("fep:m1", 100)
        await first.close()
        again = InvocationCounterFile(reactor, path)  # as after a crash and restart
        await again.open()
        c = await again.reserve("fep:m1", 100)
        self.assertEqual((a, b, c), (1, 101, 201))
        self.assertEqual(json.loads(path.read_text())["send"]["fep:m1"], 301)

    async def test_last_received_counter_survives_restart(self) -> None:
        path = Path(self.mktemp()) / "counters.json"
        title = bytes.fromhex("4D4D4D0000BC614E")
        first = InvocationCounterFile(reactor, path)
        await first.open()
        self.assertIsNone(first.last_received(title))
        first.accept(title, 41)
        await first.close()
        again = InvocationCounterFile(reactor, path)
        await again.open()
        self.assertEqual(again.last_received(title), 41)
