"""The job store on SQLite (the store's own thread, a file in WAL mode) and on a real
PostgreSQL, including two nodes leasing from one database at once."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.trial import unittest

from fep.collect.jobstore import JobStore
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.collect.jobstore_behaviours import NOW, JobStoreBehaviours, job
from tests.postgres import fresh_database


class SqliteJobStoreTests(JobStoreBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.path = self.mktemp() + ".sqlite"

    def new_store(self) -> SqliteStore:
        return SqliteStore(self.path, reactor)


class PostgresJobStoreTests(JobStoreBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor, pool_size=3)

    async def test_nodes_leasing_at_once_never_share_a_job(self) -> None:
        a = await self.jobs_store()
        b = await self.jobs_store()
        await a.add_jobs([job(f"m{n}", due=NOW - n) for n in range(300)], NOW)
        rounds = [
            store.lease(node, NOW, NOW + 60, 7, {}, {})
            for _ in range(30)
            for node, store in (("a", a), ("b", b))
        ]
        leased = [j for batch in await gatherResults(rounds) for j in batch]
        ids = [j.id for j in leased]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertEqual(len(ids), 300)
        by_node = {j.node for j in leased}
        self.assertEqual(by_node, {"a", "b"})
        stored = {j.id: j.node for j in await a.jobs(limit=None)}
        self.assertEqual(stored, {j.id: j.node for j in leased})
        self.assertIsInstance(a, JobStore)
