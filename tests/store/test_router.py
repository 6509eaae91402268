"""The router: spool first, the store after, in order, with backoff while the store is down
and a log line per state change."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from fep.errors import RecordRejected, StoreError
from fep.interfaces import IRecordSink, IStore
from fep.model import Record
from fep.serialize import decode_records
from fep.store import open_store
from fep.store.router import Router, RouterStopped
from fep.store.spool import Spool
from tests.fakes import SyncPool, SyncReactor, advance_until, advance_while
from tests.store.test_spool import readings


@implementer(IStore)
class FakeStore:
    """Keeps committed records in a list; ``down`` makes every write fail."""

    url = "fake:"

    def __init__(self) -> None:
        self.rows: list[Record] = []
        self.writes: list[int] = []
        self.down = False

    def write(self, records: Sequence[Record]) -> Deferred[int]:
        if self.down:
            return fail(StoreError("connection refused"))
        if any(getattr(r, "source", "") == "poison" for r in records):
            return fail(RecordRejected("text the store cannot hold"))
        self.writes.append(len(records))
        new = [r for r in records if r not in self.rows]
        self.rows.extend(new)
        return succeed(len(new))

    def __getattr__(self, name: str) -> object:
        raise AttributeError(name)


def stop_worker(spool: Spool) -> None:
    """After a failed test the spool may never be closed: its worker thread must not keep
    the test process alive."""
    if spool._pool.started:
        spool._pool.stop()


class RouterTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.store = FakeStore()
        self.logged: list[str] = []
        # The fake clock, the spool's disk work done at once: timers and backoff run as fast
        # as the test advances them, not on the wall clock.
        self.clock = SyncReactor()

        def observe(event: dict[str, object]) -> None:
            fmt = event.get("log_format")
            if isinstance(fmt, str) and fmt.startswith("store "):
                self.logged.append(fmt)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def router(self, **kwargs: object) -> Router:
        router = Router(
            Spool(self.directory, self.clock, threadpool=SyncPool()),  # type: ignore[arg-type]
            self.store,
            self.clock,
            **kwargs,
        )
        router.initial_backoff = 0.05
        router.max_backoff = 0.2
        router.startService()
        self.addCleanup(stop_worker, router.spool)
        return router

    def wait(self, d: Deferred[Any]) -> Any:
        """Advance the fake clock until ``d`` fires; its result."""
        return advance_until(self.clock, d)

    def test_router_is_a_record_sink(self) -> None:
        self.assertTrue(
            verifyObject(IRecordSink, Router(Spool(self.directory, reactor), self.store, reactor))
        )

    def test_submit_fires_once_spooled_then_the_store_gets_the_records(self) -> None:
        router = self.router()
        self.wait(router.submit(readings(10)))
        self.assertEqual(router.spooled, 10)
        self.assertTrue(self.wait(router.flush(5)))
        self.assertEqual(self.store.rows, readings(10))
        self.assertEqual(router.spool.depth(), 0)
        self.wait(router.stopService())

    def test_submit_after_stop_fails_at_once_naming_the_records(self) -> None:
        router = self.router()
        self.wait(router.submit(readings(3)))
        self.wait(router.stopService())
        failure = self.failureResultOf(router.submit(readings(4, start=3)), RouterStopped)
        self.assertIsInstance(failure.value, StoreError)
        self.assertIn("the router is stopped", str(failure.value))
        self.assertIn("4 records refused", str(failure.value))
        self.assertEqual((router.submitted, router.spooled), (3, 3))
        self.assertEqual(self.store.rows, readings(3))
        self.clock.advance(10)  # nothing was left to be written later
        self.assertEqual(self.store.rows, readings(3))
        self.successResultOf(router.submit([]))

    def test_submit_while_stopping_is_still_written(self) -> None:
        self.store.down = True
        router = self.router(flush_timeout=5)
        self.wait(router.submit(readings(2)))
        stopped = router.stopService()  # draining: waits for the store
        accepted = router.submit(readings(5, start=2))
        self.store.down = False
        self.wait(stopped)
        self.successResultOf(accepted)
        self.assertEqual(sorted(self.store.rows, key=repr), sorted(readings(7), key=repr))

    def test_small_submits_are_merged_into_store_batches(self) -> None:
        router = self.router(batch_size=100, max_delay=0.05)
        self.wait(gatherResults([router.submit(readings(1, start=i)) for i in range(60)]))
        self.wait(router.flush(5))
        self.assertEqual(len(self.store.rows), 60)
        self.assertLess(len(self.store.writes), 60)
        self.assertTrue(all(n <= 100 for n in self.store.writes))
        self.wait(router.stopService())

    def test_a_backlog_is_written_in_merged_batches_up_to_write_batch(self) -> None:
        """Spool batches waiting for the store (here: the store back after an outage) are
        merged up to ``write_batch`` per transaction; a spool batch stays ``batch_size``."""
        self.store.down = True
        router = self.router(batch_size=10, write_batch=35, max_delay=0.05)
        for i in range(10):
            self.wait(router.submit(readings(10, start=10 * i)))
        self.store.down = False
        self.assertTrue(self.wait(router.flush(5)))
        self.assertEqual(self.store.rows, readings(100))  # all, once, in order
        self.assertEqual(self.store.writes, [30, 30, 30, 10])

    def test_write_batch_defaults_by_store(self) -> None:
        from fep.store.settings import SQLITE_BACKLOG_BATCH, write_batch

        self.assertEqual(write_batch("sqlite:var/fep.sqlite", 5000), SQLITE_BACKLOG_BATCH)
        self.assertEqual(write_batch("postgresql://fep@db/fep", 5000), 5000)
        self.assertEqual(write_batch("sqlite:x", 5000, 8000), 8000)
        self.assertEqual(write_batch("sqlite:x", 5000, 100), 5000)  # never below a batch
        self.assertEqual(self.router(batch_size=10).write_batch, 10)

    def test_store_outage_spools_retries_and_logs_each_change_once(self) -> None:
        self.store.down = True
        router = self.router()
        for i in range(5):
            self.wait(router.submit(readings(10, start=10 * i)))
        # Several retries fail meanwhile.
        advance_while(self.clock, lambda: router.store_failures <= 2, limit=0.5)
        self.assertGreater(router.store_failures, 2)
        self.assertEqual(self.store.rows, [])
        self.assertEqual(router.spool.depth(), 50)
        self.store.down = False
        self.assertTrue(self.wait(router.flush(5)))
        self.assertEqual(self.store.rows, readings(50))  # all, once, in order
        self.assertEqual(
            [f.split(" (")[0].split(";")[0] for f in self.logged],
            ["store {url} unavailable", "store {url} back after {seconds:.1f} s"],
        )
        self.wait(router.stopService())

    def test_what_the_store_did_not_take_is_replayed_at_the_next_start(self) -> None:
        self.store.down = True
        router = self.router(flush_timeout=0.2)
        self.wait(router.submit(readings(7)))
        self.wait(router.stopService())  # the store never came back
        self.assertEqual(self.store.rows, [])
        self.store.down = False
        again = self.router()
        self.assertTrue(self.wait(again.flush(5)))
        self.assertEqual(self.store.rows, readings(7))
        self.wait(again.stopService())
        self.assertEqual([p for p in self.directory.iterdir() if p.stat().st_size], [])


    def test_a_record_the_store_refuses_is_set_aside_and_the_rest_is_stored(self) -> None:
        import attrs

        router = self.router(batch_size=1000)
        batch = readings(40)
        poison = attrs.evolve(batch[17], source="poison")
        batch[17] = poison
        self.wait(router.submit(batch[:25]))
        self.wait(router.submit(batch[25:]))
        self.assertTrue(self.wait(router.flush(5)))
        self.assertEqual(len(self.store.rows), 39)
        self.assertNotIn(poison, self.store.rows)
        self.assertEqual(router.rejected, 1)
        self.assertEqual(router.spool.depth(), 0)
        (line,) = router.spool.rejected_path.read_bytes().splitlines()
        self.assertEqual(decode_records(line), [poison])
        self.wait(router.stopService())


class RouterSqliteTests(unittest.TestCase):
    async def test_readings_reach_a_real_sqlite_store_exactly_once(self) -> None:
        store = open_store(f"sqlite:{self.mktemp()}.sqlite", reactor)
        await store.open()
        self.addCleanup(store.close)
        router = Router(Spool(Path(self.mktemp()), reactor), store, reactor, batch_size=500)
        router.startService()
        batch = readings(1200)
        await gatherResults([router.submit(batch[i : i + 100]) for i in range(0, 1200, 100)])
        await router.submit(batch[:300])  # a replay of what was stored: no doubles
        self.assertTrue(await router.flush(10))
        await router.stopService()
        self.assertEqual(await store.count("readings"), 1200)
