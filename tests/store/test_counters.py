"""Invocation counters on disk: reserved before use, never handed out twice across restarts;
the last accepted counter per system title survives a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.trial import unittest

from fep.store import open_store
from fep.store.counters import (
    FILE_NAME,
    CounterStateLost,
    InvocationCounterFile,
    StoreInvocationCounters,
    invocation_counters,
)
from fep.store.postgres import PostgresStore
from tests.postgres import fresh_database


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


class CounterFileHighWaterTests(unittest.TestCase):
    """With a SQLite store, each value the file takes is raised as a mark in the store: a
    file that goes missing or is put back older than the marks refuses to open (naming the
    file) instead of starting the counters again at 1."""

    async def open_store(self, workdir: Path) -> Any:
        store = open_store(f"sqlite:{workdir / 'fep.sqlite'}", reactor)
        await store.open()
        self.addCleanup(store.close)
        return store

    async def test_a_missing_file_refuses_to_open_when_the_store_has_marks(self) -> None:
        workdir = Path(self.mktemp())
        store = await self.open_store(workdir)
        counters = invocation_counters(reactor, store, workdir)
        await counters.open()
        await counters.reserve("fep:key", 100)
        await counters.close()
        path = workdir / FILE_NAME
        path.unlink()
        again = invocation_counters(reactor, store, workdir)
        with self.assertRaises(CounterStateLost) as caught:
            await again.open()
        self.assertIn(str(path), str(caught.exception))
        self.assertIn("missing", str(caught.exception))

    async def test_an_older_file_refuses_to_open(self) -> None:
        workdir = Path(self.mktemp())
        store = await self.open_store(workdir)
        counters = invocation_counters(reactor, store, workdir)
        await counters.open()
        await counters.reserve("fep:key", 100)
        path = workdir / FILE_NAME
        backup = path.read_bytes()  # as a backup taken now
        await counters.reserve("fep:key", 100)
        title = bytes.fromhex("4D4D4D0000BC614E")
        await counters.accept_received(title, 7)
        await counters.close()
        path.write_bytes(backup)  # restored: counters 101..200 would go out again
        again = invocation_counters(reactor, store, workdir)
        with self.assertRaises(CounterStateLost) as caught:
            await again.open()
        self.assertIn(str(path), str(caught.exception))
        self.assertIn("older", str(caught.exception))

    async def test_a_current_file_opens_and_goes_on(self) -> None:
        workdir = Path(self.mktemp())
        store = await self.open_store(workdir)
        first = invocation_counters(reactor, store, workdir)
        await first.open()
        self.assertEqual(await first.reserve("fep:key", 100), 1)
        await first.close()
        again = invocation_counters(reactor, store, workdir)
        await again.open()
        self.assertEqual(await again.reserve("fep:key", 100), 101)
        await again.close()

    async def test_a_first_start_with_no_marks_needs_no_file(self) -> None:
        workdir = Path(self.mktemp())
        store = await self.open_store(workdir)
        counters = invocation_counters(reactor, store, workdir)
        await counters.open()
        self.assertEqual(await counters.reserve("fep:key", 10), 1)
        await counters.close()

    async def test_two_keepers_of_one_file_never_overlap(self) -> None:
        """The daemon and `fep read` keep the same file: each reservation re-reads it under
        a lock, so neither hands out what the other reserved."""
        path = Path(self.mktemp()) / FILE_NAME
        daemon, command = InvocationCounterFile(reactor, path), InvocationCounterFile(reactor, path)
        await daemon.open()
        await command.open()
        starts = []
        for keeper in (daemon, command, daemon, command):
            starts.append(await keeper.reserve("fep:key", 100))
        self.assertEqual(starts, [1, 101, 201, 301])

    async def test_the_old_name_of_a_key_is_a_floor(self) -> None:
        path = Path(self.mktemp()) / FILE_NAME
        old = InvocationCounterFile(reactor, path)
        await old.open()
        await old.reserve("4645500000000001:m1", 500)  # counters were kept per meter id
        self.assertEqual(
            await old.reserve("4645500000000001:abcd", 10, legacy_key="4645500000000001:m1"),
            501)


class PostgresCountersTests(unittest.TestCase):
    """Counters in PostgreSQL: blocks reserved with one atomic upsert each, so two nodes'
    keepers never hand out the same counter; a received counter is accepted once."""

    timeout = 60

    async def store(self) -> Any:
        store = PostgresStore(self.url, reactor, pool_size=3)
        await store.open()
        self.addCleanup(store.close)
        return store

    async def test_concurrent_reservations_from_two_nodes_never_overlap(self) -> None:
        self.url = fresh_database(self)
        a = StoreInvocationCounters(await self.store())
        b = StoreInvocationCounters(await self.store())
        await a.open()
        await b.open()
        blocks = await gatherResults(
            [keeper.reserve("fep:key", 100) for _ in range(20) for keeper in (a, b)]
        )
        used = [n for start in blocks for n in range(start, start + 100)]
        self.assertEqual(len(used), len(set(used)))
        self.assertEqual(sorted(blocks), list(range(1, 4001, 100)))
        # Another key has its own counters.
        self.assertEqual(await a.reserve("fep:other", 5), 1)

    async def test_a_received_counter_is_accepted_once_across_nodes(self) -> None:
        self.url = fresh_database(self)
        a = StoreInvocationCounters(await self.store())
        b = StoreInvocationCounters(await self.store())
        title = bytes.fromhex("4D4D4D0000BC614E")
        self.assertEqual(await a.accept_received(title, 41), (True, None))
        self.assertEqual(await b.accept_received(title, 41), (False, 41))  # replayed to b
        self.assertEqual(await b.accept_received(title, 40), (False, 41))
        results = await gatherResults([a.accept_received(title, 42),
                                       b.accept_received(title, 42)])
        self.assertEqual(sorted(ok for ok, _ in results), [False, True])
        self.assertEqual(max(a.last_received(title) or 0, b.last_received(title) or 0), 42)

    async def test_accepts_of_one_title_keep_their_order(self) -> None:
        self.url = fresh_database(self)
        a = StoreInvocationCounters(await self.store())
        title = bytes.fromhex("4D4D4D0000BC614E")
        results = await gatherResults([a.accept_received(title, n) for n in range(1, 30)])
        self.assertTrue(all(ok for ok, _ in results))

    async def test_a_counter_file_from_before_is_taken_in(self) -> None:
        self.url = fresh_database(self)
        path = Path(self.mktemp()) / FILE_NAME
        old = InvocationCounterFile(reactor, path)
        await old.open()
        await old.reserve("fep:key", 300)
        await old.close()
        counters = invocation_counters(reactor, await self.store(), path.parent)
        self.assertIsInstance(counters, StoreInvocationCounters)
        await counters.open()
        self.assertEqual(await counters.reserve("fep:key", 10), 301)


class KeyChangeCases:
    """After a meter's keys change: our counters go on above the old key's (meters that do
    not start again at a new key still take them); the meter's own counters start a new
    sequence per key, a title-only entry from before counting for the first key seen."""

    title = bytes.fromhex("4D4D4D0000BC614E")

    async def keeper(self) -> Any:
        """A keeper of the same counters, opened (after closing the last: a restart)."""
        raise NotImplementedError

    async def test_a_new_keys_counters_continue_above_the_old_keys(self) -> None:
        counters = await self.keeper()
        t: Any = self
        t.assertEqual(await counters.reserve("fep:old", 100, meter_key="fep:m1"), 1)
        t.assertEqual(await counters.reserve("fep:old", 100, meter_key="fep:m1"), 101)
        # The key transfer: the first block under the new key is above the old key's last.
        t.assertEqual(await counters.reserve("fep:new", 100, meter_key="fep:m1"), 201)
        counters = await self.keeper()
        t.assertEqual(await counters.reserve("fep:new", 100, meter_key="fep:m1"), 301)
        # Another meter given the same key: the key's own counter is the floor for it.
        t.assertEqual(await counters.reserve("fep:new", 100, meter_key="fep:m2"), 401)
        # m1 back on a key of its own: above everything it was sent.
        t.assertEqual(await counters.reserve("fep:third", 100, meter_key="fep:m1"), 401)

    async def test_the_meters_counter_from_before_keys_is_its_floor(self) -> None:
        counters = await self.keeper()
        await counters.reserve("fep:m1", 500)  # counters kept per meter, before per key
        t: Any = self
        t.assertEqual(await counters.reserve("fep:key", 10, meter_key="fep:m1"), 501)

    async def test_the_meters_counters_start_again_with_a_new_key(self) -> None:
        counters = await self.keeper()
        t: Any = self
        t.assertEqual(await counters.accept_received(self.title, 5000, "old"), (True, None))
        # The meter counts from 1 again under its new key: accepted; a replay is not.
        t.assertEqual(await counters.accept_received(self.title, 1, "new"), (True, None))
        t.assertEqual(await counters.accept_received(self.title, 1, "new"), (False, 1))
        t.assertEqual(await counters.accept_received(self.title, 5000, "old"), (False, 5000))
        t.assertEqual(counters.last_received(self.title, "new"), 1)
        counters = await self.keeper()
        t.assertEqual(await counters.accept_received(self.title, 1, "new"), (False, 1))
        t.assertEqual(await counters.accept_received(self.title, 2, "new"), (True, 1))

    async def test_a_title_only_entry_counts_for_the_first_key_seen(self) -> None:
        counters = await self.keeper()
        t: Any = self
        t.assertEqual(await counters.accept_received(self.title, 40), (True, None))  # before
        counters = await self.keeper()
        t.assertEqual(await counters.accept_received(self.title, 40, "k1"), (False, 40))
        t.assertEqual(await counters.accept_received(self.title, 41, "k1"), (True, 40))
        counters = await self.keeper()
        # The old entry now belongs to k1: a next key starts its own sequence.
        t.assertEqual(await counters.accept_received(self.title, 1, "k2"), (True, None))
        t.assertEqual(await counters.accept_received(self.title, 41, "k1"), (False, 41))


class FileKeyChangeTests(KeyChangeCases, unittest.TestCase):
    async def keeper(self) -> Any:
        if not hasattr(self, "workdir"):
            self.workdir = Path(self.mktemp())
            self.store = open_store(f"sqlite:{self.workdir / 'fep.sqlite'}", reactor)
            await self.store.open()
            self.addCleanup(self.store.close)
            self.last: Any = None
        if self.last is not None:
            await self.last.close()
        # With the store's high-water marks: every entry written must check against them.
        self.last = invocation_counters(reactor, self.store, self.workdir)
        await self.last.open()
        self.addCleanup(self.last.close)
        return self.last


class PostgresKeyChangeTests(KeyChangeCases, unittest.TestCase):
    timeout = 60

    async def keeper(self) -> Any:
        if not hasattr(self, "store"):
            self.store = PostgresStore(fresh_database(self), reactor, pool_size=2)
            await self.store.open()
            self.addCleanup(self.store.close)
        counters = StoreInvocationCounters(self.store)
        await counters.open()
        return counters
