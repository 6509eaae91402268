"""The PostgreSQL store: the shared store behaviours on a real server, plus outages.

The server comes from tests.postgres (FEP_TEST_POSTGRES, 127.0.0.1:5432, or a throwaway
cluster); each test gets its own database. Outages are made with a TcpProxy between the store
and the server: the shared server itself is never stopped.
"""

from __future__ import annotations

import os
import time

import psycopg2
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from fep.errors import StoreError
from fep.store import migrations, open_store
from fep.store.postgres import PostgresStore
from tests.postgres import fresh_database, with_database
from tests.store.behaviours import StoreBehaviours, reading
from tests.tcpproxy import TcpProxy


class PostgresStoreTests(StoreBehaviours, unittest.TestCase):
    dialect = "postgresql"

    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall()
        finally:
            conn.close()

    async def test_migrations_are_recorded_once(self) -> None:
        store = await self.opened()
        await store.upgrade()
        known = [(m.version, m.name) for m in migrations.load("postgresql")]
        rows = self.sql("SELECT version, name FROM schema_migrations ORDER BY version")
        self.assertEqual(rows[0], (1, "0001_initial"))
        self.assertEqual(rows, known)

    async def test_two_stores_opening_together_apply_each_migration_once(self) -> None:
        from twisted.internet.defer import gatherResults

        a, b = self.new_store(), self.new_store()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        await gatherResults([a.open(), b.open()])
        known = len(migrations.load("postgresql"))
        self.assertEqual(self.sql("SELECT count(*) FROM schema_migrations"), [(known,)])

    async def test_decimals_are_stored_as_numeric_and_times_as_timestamptz(self) -> None:
        store = await self.opened()
        await store.write([reading()])
        (row,) = self.sql(
            "SELECT pg_typeof(value)::text, pg_typeof(read_at)::text, value::text FROM readings"
        )
        self.assertEqual(row, ("numeric", "timestamp with time zone", "1234.567"))

    async def test_postgres_scheme_alias_opens_a_postgres_store(self) -> None:
        store = open_store(self.url.replace("postgresql://", "postgres://", 1), reactor)
        self.assertIsInstance(store, PostgresStore)
        await store.open()
        self.addCleanup(store.close)
        self.assertEqual(await store.count("readings"), 0)

    async def test_pool_size_is_the_number_of_connections(self) -> None:
        store = PostgresStore(self.url, reactor, pool_size=3)
        await store.open()
        self.addCleanup(store.close)
        (name,) = self.url.rsplit("/", 1)[1:]
        rows = self.sql(
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"
            " AND application_name = 'fep'"
        )
        self.assertEqual(rows, [(3,)])

    async def test_text_with_a_nul_is_refused_naming_the_meter(self) -> None:
        store = await self.opened()
        error = await self.assert_store_error(store.write([reading("A\x00B", meter="m7")]))
        self.assertIn("meter m7", str(error))
        self.assertEqual(await store.count("readings"), 0)

    async def test_close_during_a_write_leaves_no_connection_open(self) -> None:
        store = PostgresStore(self.url, reactor, pool_size=1)
        await store.open()
        writing = store.write([reading()])
        await store.close()
        try:
            await writing
        except StoreError:
            pass
        # A closed backend leaves pg_stat_activity a moment after the client hangs up:
        # look again for up to two seconds (a leaked connection never leaves).
        deadline = time.monotonic() + 2.0
        while self.fep_connections() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.fep_connections(), 0)

    def fep_connections(self) -> int:
        name = self.url.rsplit("/", 1)[1]
        ((n,),) = self.sql(
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"
            " AND application_name = 'fep'"
        )
        return int(n)  # type: ignore[call-overload]


class PostgresUrlTests(unittest.TestCase):
    def test_url_attribute_hides_the_password(self) -> None:
        store = PostgresStore("postgresql://fep:s3cret@db.example:5432/fep", reactor)
        self.assertEqual(store.url, "postgresql://fep:***@db.example:5432/fep")

    async def test_open_failure_is_a_store_error_without_the_password(self) -> None:
        # Nothing listens on port 1 of loopback: refused at once.
        store = PostgresStore("postgresql://fep:s3cret@127.0.0.1:1/fep", reactor, connect_timeout=5)
        try:
            await store.open()
        except StoreError as e:
            self.assertNotIn("s3cret", str(e))
            self.assertIn("127.0.0.1:1", str(e))
        else:
            self.fail("open() succeeded with no server")
        finally:
            await store.close()


class PostgresOutageTests(unittest.TestCase):
    """The store between a TcpProxy and the server: the test cuts and restores the proxy."""

    async def setUp(self) -> None:  # type: ignore[override]
        url = fresh_database(self)
        from urllib.parse import urlsplit

        target = urlsplit(url)
        self.proxy = TcpProxy(reactor, target.hostname or "127.0.0.1", target.port or 5432)
        port = await self.proxy.start()
        self.addCleanup(self.proxy.stop)
        proxied = with_database(
            url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{port}", 1),
            target.path.lstrip("/"),
        )
        self.store = PostgresStore(proxied, reactor, connect_timeout=2, query_timeout=5)
        await self.store.open()
        self.addCleanup(self.store.close)

    async def assert_write_fails(self) -> StoreError:
        started = reactor.seconds()
        try:
            await self.store.write([reading()])
        except StoreError as e:
            self.assertLess(reactor.seconds() - started, 3.0, "the failure was not prompt")
            return e
        self.fail("write() succeeded during the outage")
        raise AssertionError

    async def test_write_during_an_outage_fails_with_store_error(self) -> None:
        await self.proxy.cut()
        await self.assert_write_fails()

    async def test_write_succeeds_after_the_server_comes_back(self) -> None:
        await self.proxy.cut()
        await self.assert_write_fails()
        await self.proxy.restore()
        self.assertEqual(await self.store.write([reading()]), 1)
        self.assertEqual(await self.store.count("readings"), 1)

    async def test_connections_dropped_while_idle_are_rebuilt_on_next_use(self) -> None:
        await self.store.write([reading()])
        self.proxy.drop_connections()
        self.assertEqual(await self.store.count("readings"), 1)

    async def test_a_server_that_accepts_but_never_answers_fails_by_the_deadline(self) -> None:
        # Point the proxy at a port that accepts and says nothing.
        from twisted.internet.address import IPv4Address
        from twisted.internet.protocol import Protocol, ServerFactory

        class Silent(ServerFactory):
            protocol = Protocol

        silent = reactor.listenTCP(0, Silent(), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        host = silent.getHost()
        assert isinstance(host, IPv4Address)
        self.proxy.target_port = host.port
        self.proxy.drop_connections()
        self.store.connect_timeout = 0.5
        assert self.store._pool is not None
        self.store._pool.connect_timeout = 0.5
        error = await self.assert_write_fails()
        self.assertIn("longer than", str(error))


class HarnessTests(unittest.TestCase):
    """tests.postgres when no server can be had: skip on a user's machine, fail under CI."""

    def setUp(self) -> None:
        import tests.postgres as harness

        self.harness = harness
        self.patch(harness, "_found", None)
        self.patch(harness, "_failure", None)
        # Nothing listens on loopback port 1, and there is no initdb.
        self.patch(harness, "LOCAL_SERVER", "postgresql://postgres@127.0.0.1:1/postgres")
        self.patch(harness, "_initdb", lambda: None)
        self.environ = {k: os.environ.get(k) for k in ("CI", "FEP_TEST_POSTGRES")}
        os.environ.pop("FEP_TEST_POSTGRES", None)
        self.addCleanup(self.restore_environ)

    def restore_environ(self) -> None:
        for key, value in self.environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def test_without_a_server_tests_skip_with_the_reason(self) -> None:
        os.environ.pop("CI", None)
        with self.assertRaises(unittest.SkipTest) as caught:
            self.harness.postgres_server()
        self.assertIn("initdb is not on PATH", str(caught.exception))

    def test_without_a_server_under_ci_tests_fail(self) -> None:
        os.environ["CI"] = "true"
        self.assertRaises(self.harness.NoPostgres, self.harness.postgres_server)

    def test_the_environment_variable_wins(self) -> None:
        os.environ["FEP_TEST_POSTGRES"] = "postgresql://someone@db.example/x"
        self.assertEqual(self.harness.postgres_server(), "postgresql://someone@db.example/x")


FROZEN_NODE = """
import os, signal, sys
from twisted.internet import task
from fep.collect.jobstore import LEASE_LOCK
from fep.store.postgres import PostgresStore

async def main(reactor):
    store = PostgresStore(sys.argv[1], reactor, query_timeout=2)
    await store.open()

    async def lease(cursor):
        # a line's lock, as a leasing transaction takes it (fep.collect.jobstore._lease)
        await cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext('tcp:line'))",
                             (LEASE_LOCK,))
        print("locked", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)  # frozen inside the lease transaction

    await store.interact(lease)

task.react(lambda reactor: __import__("twisted.internet.defer").internet.defer
           .Deferred.fromCoroutine(main(reactor)))
"""


class FrozenNodeTests(unittest.TestCase):
    """A node frozen inside a transaction (SIGSTOP, a paused VM) does not keep its locks
    for ever: PostgreSQL ends its session after the store's own transaction deadline, so
    the lock of a line it was leasing on goes to the other nodes."""

    timeout = 120

    async def test_a_frozen_node_loses_the_lease_lock_after_its_deadline(self) -> None:
        import signal
        import subprocess
        import sys

        from fep.collect.jobstore import LEASE_LOCK

        url = fresh_database(self)
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + os.environ.get("PYTHONPATH", "")
        node = subprocess.Popen([sys.executable, "-c", FROZEN_NODE, url], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(node.wait)
        self.addCleanup(node.kill)
        assert node.stdout is not None
        line = await deferToThread(node.stdout.readline)
        if line.strip() != b"locked":
            node.kill()
            self.fail(f"the frozen node did not start: {node.communicate()[1]!r}")

        def take() -> float:
            conn = psycopg2.connect(url)
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SET lock_timeout = '60s'")
                    started = time.monotonic()
                    cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext('tcp:line'))",
                                   (LEASE_LOCK,))
                    return time.monotonic() - started
            finally:
                conn.close()

        waited = await deferToThread(take)
        # The frozen node's session ends about 2 s (its deadline) after it went idle.
        self.assertLess(waited, 50)
        os.kill(node.pid, signal.SIGCONT)
