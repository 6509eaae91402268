"""The PostgreSQL store: the shared store behaviours on a real server, plus outages.

The server comes from tests.postgres (FEP_TEST_POSTGRES, 127.0.0.1:5432, or a throwaway
cluster); each test gets its own database. Outages are made with a TcpProxy between the store
and the server: the shared server itself is never stopped.
"""

from __future__ import annotations

import io
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from fep.errors import RecordRejected, StoreError
from fep.model import EventKind, IntervalBlock, MeterEvent, ObisCode, Severity
from fep.store import migrations, open_store
from fep.store.postgres import PostgresStore
from fep.store.router import Router
from fep.store.spool import Spool
from tests.postgres import fresh_database, with_database
from tests.store.behaviours import ENERGY, T0, StoreBehaviours, reading
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

    async def test_compact_rows_read_back_through_the_views_with_their_names(self) -> None:
        """Migration 0019: a meter's OBIS code is one series for its readings and intervals,
        an event code one of its own, a source one number; the views give the text back."""
        store = await self.opened()
        block = IntervalBlock("m1", ENERGY, T0, timedelta(minutes=15),
                              (Decimal(1), Decimal(2)), received_time=T0, source="gprs:imei=1")
        event = MeterEvent("m1", "dlms:1", EventKind.POWER_OUTAGE, Severity.MAJOR, T0, "t", T0,
                           source="gprs:imei=1")
        self.assertEqual(await store.write([reading(source="gprs:imei=1"), block, event]), 4)
        self.assertEqual(self.sql("SELECT meter, quantity FROM record_series ORDER BY quantity"),
                         [("m1", str(ENERGY)), ("m1", "dlms:1")])
        self.assertEqual(self.sql("SELECT name FROM record_sources ORDER BY name"),
                         [("",), ("gprs:imei=1",)])  # '' made by the migration
        self.assertEqual(self.sql("SELECT meter, obis, source, value_type, unit_code FROM"
                                  " readings"),
                         [("m1", str(ENERGY), "gprs:imei=1", "D", 30)])
        self.assertEqual(self.sql("SELECT meter, obis, value::text, source FROM intervals"
                                  " ORDER BY start_time"),
                         [("m1", str(ENERGY), "1", "gprs:imei=1"),
                          ("m1", str(ENERGY), "2", "gprs:imei=1")])
        self.assertEqual(self.sql("SELECT meter, code, source FROM events"),
                         [("m1", "dlms:1", "gprs:imei=1")])
        # The row itself holds numbers, not the names.
        (row,) = self.sql("SELECT series, source FROM reading_rows")
        self.assertEqual(row, tuple(self.sql(
            "SELECT s.id, o.id FROM record_series s, record_sources o"
            f" WHERE s.quantity = '{ENERGY}' AND o.name = 'gprs:imei=1'")[0]))
        # The store reads them back as written; a replay is still refused row by row.
        (back,) = await store.readings("m1")
        self.assertEqual((back.obis, back.source), (ENERGY, "gprs:imei=1"))
        self.assertEqual(await store.write([reading(source="gprs:imei=1"), block, event]), 0)

    async def test_the_views_refuse_writes(self) -> None:
        await self.opened()
        conn = psycopg2.connect(self.url)
        self.addCleanup(conn.close)
        with conn.cursor() as cursor:
            self.assertRaises(psycopg2.Error, cursor.execute,
                              "INSERT INTO readings (meter, obis, value_type, read_at,"
                              " received_time) VALUES ('m', 'o', 'D', now(), now())")

    async def test_new_series_from_two_stores_at_once_are_numbered_once(self) -> None:
        """Two nodes writing the same new meters at once (sorted numbering: no deadlock)."""
        from twisted.internet.defer import gatherResults

        a, b = self.new_store(), self.new_store()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        await gatherResults([a.open(), b.open()])
        batches = [[reading(meter=f"m{m}", meter_time=T0 + timedelta(seconds=k))
                    for m in range(300)] for k in range(6)]
        new = await gatherResults([(a if k % 2 else b).write(batch)
                                   for k, batch in enumerate(batches)])
        self.assertEqual(sum(new), 1800)
        self.assertEqual(self.sql("SELECT count(*), count(DISTINCT (meter, quantity))"
                                  " FROM record_series"), [(300, 300)])
        self.assertEqual(self.sql("SELECT count(*) FROM readings"), [(1800,)])

    async def test_the_numbers_kept_in_memory_are_bounded(self) -> None:
        from fep.store import copy as copy_module

        self.patch(copy_module, "MAX_NUMBERS", 10)
        store = await self.opened()
        for k in range(3):
            await store.write([reading(meter=f"m{m}", meter_time=T0 + timedelta(seconds=k))
                               for m in range(8)] + [reading(meter=f"k{k}")])
            numbers = store._copy.numbers  # type: ignore[attr-defined]
            self.assertLessEqual(len(numbers.series), 10)
        self.assertEqual(self.sql("SELECT count(*) FROM record_series"), [(11,)])
        self.assertEqual(self.sql("SELECT count(*) FROM readings"), [(27,)])

    async def test_a_nul_in_a_meter_id_is_refused_naming_the_record(self) -> None:
        store = await self.opened()
        failure = await self.assertFailure(store.write([reading(meter="m\x00")]),
                                           RecordRejected)
        self.assertIn("NUL", str(failure))
        self.assertEqual(self.sql("SELECT count(*) FROM record_series"), [(0,)])

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

    async def test_new_rows_are_copied_straight_in_and_stored_ones_go_through_staging(
        self,
    ) -> None:
        store = await self.opened()
        writer = store._copy
        assert writer is not None
        batch = copy_heavy_batch(500)
        self.assertEqual(await store.write(batch[:300]), 300)
        self.assertEqual((writer.direct_batches, writer.staged_batches), (1, 0))
        # Half stored already, half new: the direct COPY is undone, staging keeps the new.
        self.assertEqual(await store.write(batch[150:]), 200 + 50 * 96 + 50)
        self.assertEqual(writer.staged_batches, 1)
        self.assertEqual(writer.direct_batches, 3)  # the intervals and events were all new
        # A batch repeating a row within itself is stored once too.
        twice = [reading(meter="dup"), reading(meter="dup"), reading(meter="dup2")]
        self.assertEqual(await store.write(twice), 2)
        self.assertEqual(await store.count("readings"), 502)
        self.assertEqual(await store.count("intervals"), 50 * 96)
        self.assertEqual(await store.count("events"), 50)
        # The COPY connections carry the store's deadlines.
        (conn,) = writer._idle
        with conn.cursor() as cur:
            cur.execute("SHOW statement_timeout")
            self.assertEqual(cur.fetchone(), ("1min",))
            cur.execute("SHOW idle_in_transaction_session_timeout")
            self.assertEqual(cur.fetchone(), ("1min",))
        conn.rollback()
        self.assertEqual(conn.get_dsn_parameters()["tcp_user_timeout"], "60000")

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


class ProxiedStore(unittest.TestCase):
    """The store between a TcpProxy and the server: the test cuts and restores the proxy."""

    async def setUp(self) -> None:  # type: ignore[override]
        url = self.url = fresh_database(self)  # the server itself, not through the proxy
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


class PostgresOutageTests(ProxiedStore):
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


def copy_heavy_batch(n: int) -> list[Any]:
    """``n`` readings of 50 meters, a load profile of each and an event of each: every kind
    of row, with text that COPY has to escape; all of today (UTC), so no interval is old
    enough to meet a compacted day (fep.store.compaction)."""
    base = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    records: list[Any] = [
        reading(Decimal(i) / 10, meter=f"m{i % 50}\t\\x",
                meter_time=base + timedelta(minutes=15 * (i // 50)), source="copy\ntest")
        for i in range(n)
    ]
    for m in range(50):
        records.append(IntervalBlock(f"m{m}", ObisCode.parse("1.8.0"), base,
                                     timedelta(minutes=15), tuple(Decimal(v) for v in range(96)),
                                     received_time=base))
        records.append(MeterEvent(f"m{m}", "7", EventKind.POWER_OUTAGE, Severity.MAJOR, base,
                                  "power\\down\r", base, "dlms"))
    return records


class CopyOutageTests(ProxiedStore):
    """Record batches go by COPY on worker threads: a connection lost in the middle of a
    COPY, or just after a COMMIT whose answer never came, costs a retry, never a row or a
    double."""

    N = 3000

    async def route(self, records: list[Any]) -> Router:
        router = Router(Spool(Path(self.mktemp()), reactor), self.store, reactor,
                        batch_size=10_000, max_delay=0.01)
        router.initial_backoff = 0.05
        router.startService()
        self.addCleanup(router.stopService)
        await router.submit(records)
        self.assertTrue(await router.flush(30))
        writer = self.store._copy
        assert writer is not None
        # At most pool_size COPY connections, whatever the retries.
        self.assertLessEqual(len(writer._all), self.store.pool_size)
        return router

    async def assert_exactly_once(self) -> None:
        self.assertEqual(await self.store.count("readings"), self.N)
        self.assertEqual(await self.store.count("intervals"), 50 * 96)
        self.assertEqual(await self.store.count("events"), 50)
        got = await self.store.readings("m7\t\\x")
        self.assertEqual(len(got), self.N // 50)
        self.assertEqual(got[0].source, "copy\ntest")
        (event,) = await self.store.events("m7")
        self.assertEqual(event.text, "power\\down\r")

    async def test_a_connection_cut_mid_copy_is_retried_without_loss_or_doubles(self) -> None:
        writer = self.store._copy
        assert writer is not None
        original = writer._copy
        cuts: list[str] = []
        on_reactor = threading.get_ident()

        threads: set[tuple[int, bool]] = set()

        def copy(cur: Any, sql: str, text: str) -> None:
            current = threading.current_thread()
            threads.add((current.ident or 0, current.daemon))
            if cuts:
                return original(cur, sql, text)

            class CutAfterFirstChunk(io.StringIO):
                def read(self, size: int = -1) -> str:
                    chunk = super().read(size)
                    if chunk and not cuts:
                        # The proxy drops the connection while the COPY streams its rows.
                        cut = threading.Event()
                        reactor.callFromThread(lambda: (self_.proxy.drop_connections(),
                                                        cut.set()))
                        cut.wait(10)
                        cuts.append(sql)
                    return chunk

            self_ = self
            cur.copy_expert(sql, CutAfterFirstChunk(text), size=8192)

        writer._copy = copy  # type: ignore[method-assign]
        router = await self.route(copy_heavy_batch(self.N))
        self.assertEqual(len(cuts), 1)
        # Never on the reactor's thread; daemon threads (never holding a process open).
        self.assertNotIn(on_reactor, {ident for ident, _ in threads})
        self.assertTrue(all(daemon for _, daemon in threads))
        self.assertIn("COPY reading_rows", cuts[0])
        self.assertGreaterEqual(router.store_failures, 1)
        await self.assert_exactly_once()
        self.flushLoggedErrors()

    async def test_a_commit_whose_answer_is_lost_is_retried_without_doubles(self) -> None:
        writer = self.store._copy
        assert writer is not None
        original = writer._transaction
        lost: list[int] = []

        def transaction(conn: Any, texts: Any, old: bool) -> int:
            new = original(conn, texts, old)
            if not lost:
                # Committed, and then the connection went before the answer came back.
                lost.append(new)
                conn.close()
                raise psycopg2.OperationalError("server closed the connection unexpectedly")
            return new

        writer._transaction = transaction  # type: ignore[method-assign]
        records = copy_heavy_batch(self.N)
        router = await self.route(records)
        self.assertEqual(lost, [self.N + 50 * 96 + 50])
        self.assertGreaterEqual(router.store_failures, 1)
        await self.assert_exactly_once()
        # And the same batch once more (a replay after a crash): nothing new.
        self.assertEqual(await self.store.write(records), 0)
        await self.assert_exactly_once()
        self.flushLoggedErrors()

    async def test_a_copy_connection_dropped_while_idle_is_replaced_at_once(self) -> None:
        writer = self.store._copy
        assert writer is not None
        self.assertEqual(await self.store.write([reading()]), 1)
        self.proxy.drop_connections()
        # The pooled COPY connection is dead; the write notices, reconnects and succeeds.
        self.assertEqual(await self.store.write([reading(meter="m2")]), 1)
        self.assertEqual(writer.connects, 2)


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
from fep.store.router import Router
from fep.store.spool import Spool

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
