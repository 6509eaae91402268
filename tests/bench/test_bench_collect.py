"""`make bench`'s collection rows on a handful of meters: every simulated meter read once,
its job's end committed, on SQLite and on PostgreSQL (a database of its own), DLMS and
DL/T 645."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.trial import unittest

from fep.bench import fresh_postgres
from fep.bench_collect import collection_rate
from tests.postgres import drop_later, postgres_server

reactor: Any = global_reactor


class CollectionRateTests(unittest.TestCase):
    timeout = 120

    def workdir(self) -> Path:
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        return path

    async def test_sqlite(self) -> None:
        workdir = self.workdir()
        cpu: list[float] = []
        rate = await collection_rate(reactor, f"sqlite:{workdir / 'c.sqlite'}", workdir,
                                     meters=6, cpu_per_meter=cpu)
        self.assertGreater(rate, 0)
        self.assertEqual(len(cpu), 1)
        self.assertGreater(cpu[0], 0)

    async def test_the_fleet_serves_in_a_process_of_its_own_until_stopped(self) -> None:
        from fep.bench_collect import start_fleet

        fleet = await start_fleet(reactor, "dlt645", 3)
        self.assertEqual([m["address"] for m in fleet.meters],
                         ["000000000001", "000000000002", "000000000003"])
        self.assertEqual(len({m["port"] for m in fleet.meters}), 3)
        pid = fleet.transport.pid
        await fleet.stop()
        self.assertTrue(fleet.ended.called)
        self.assertIsNone(fleet.transport.pid)  # reaped
        self.assertNotEqual(pid, None)

    async def test_postgres(self) -> None:
        server = postgres_server()
        name = f"fep_test_bench_{secrets.token_hex(4)}"
        self.addCleanup(drop_later, server, name)
        rate = await collection_rate(reactor, fresh_postgres(server, name), self.workdir(),
                                     meters=6)
        self.assertGreater(rate, 0)

    async def test_dlt645_sqlite(self) -> None:
        workdir = self.workdir()
        rate = await collection_rate(reactor, f"sqlite:{workdir / 'c.sqlite'}", workdir,
                                     meters=6, protocol="dlt645")
        self.assertGreater(rate, 0)
