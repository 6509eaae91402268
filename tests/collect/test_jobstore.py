"""The job store on SQLite (the store's own thread, a file in WAL mode) and on a real
PostgreSQL, including two nodes leasing from one database at once."""

from __future__ import annotations

import psycopg2
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.trial import unittest

from fep.collect.jobstore import LEASE_LOCK, JobStore
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

    async def test_nodes_leasing_at_once_never_share_a_line(self) -> None:
        # Twenty lines of six meters each; two nodes lease at once, many times over, with
        # no global lock: a line is never leased to both.
        a = await self.jobs_store()
        b = await self.jobs_store()
        await a.add_jobs([
            job(f"m{line}-{k}", due=NOW - k, route=f"tcp:host=10.0.1.{line}:port=1@{k}",
                resource=f"tcp:host=10.0.1.{line}:port=1")
            for line in range(20) for k in range(6)
        ], NOW)
        rounds = [
            store.lease(node, NOW, NOW + 60, 5, {}, {})
            for _ in range(12)
            for node, store in (("a", a), ("b", b))
        ]
        leased = [j for batch in await gatherResults(rounds) for j in batch]
        self.assertEqual(len({j.id for j in leased}), len(leased))
        nodes: dict[str, set[str]] = {}
        for j in await a.jobs(limit=None):
            if j.node is not None:
                nodes.setdefault(j.resource, set()).add(j.node)
        self.assertTrue(nodes)
        self.assertEqual([r for r, held in nodes.items() if len(held) > 1], [])

    async def test_a_line_another_node_is_leasing_on_is_passed_over(self) -> None:
        # Node a, in the middle of its leasing transaction (as _lease does it): the line's
        # lock taken, its first job locked and marked leased, not committed yet.
        b = await self.jobs_store()
        line = "tcp:host=10.0.2.1:port=1"
        await b.add_jobs([job(f"L{k}", due=NOW - 10 + k, route=f"{line}@{k}", resource=line)
                          for k in range(3)] + [job("other", due=NOW)], NOW)
        first = min((j for j in await b.jobs(limit=None) if j.resource == line),
                    key=lambda j: j.due)
        conn = psycopg2.connect(self.url)
        self.addCleanup(conn.close)
        cursor = conn.cursor()
        cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LEASE_LOCK, line))
        cursor.execute("UPDATE jobs SET status = 'leased', node = 'a', lease_until = %s"
                       " WHERE id = %s", (NOW + 60, first.id))
        leased = await b.lease("b", NOW, NOW + 60, 5, {}, {})
        self.assertEqual([j.meter for j in leased], ["other"])
        conn.commit()
        self.assertEqual(await b.lease("b", NOW, NOW + 60, 5, {}, {}), [])
        held = {j.meter: j.node for j in await b.jobs(limit=None) if j.node is not None}
        self.assertEqual(held, {"L0": "a", "other": "b"})
