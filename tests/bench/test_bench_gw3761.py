"""`make bench`'s concentrator row: a load-profile cycle of the meters behind one simulated
concentrator, through one session and the router with the spool on, stores each meter's day
(checked by the bench itself: it fails unless every row is there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.trial import unittest

from fep.bench import concentrator_rate

reactor: Any = global_reactor


class ConcentratorRowTests(unittest.TestCase):
    timeout = 60

    async def test_twenty_meters_on_sqlite(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        rate = await concentrator_rate(reactor, f"sqlite:{workdir / 'b.sqlite'}", workdir, 20)
        self.assertGreater(rate, 0)
