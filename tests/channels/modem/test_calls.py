"""Modem call records (fep.channels.modem.calls): kept in the store's modem_calls table through
its ``interact``, summed per line or per site; the same behaviours on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from fep.channels.modem.calls import ModemCallLog
from fep.channels.modem.stats import CallOutcome, ModemCall, call_stats
from fep.errors import StoreError
from fep.interfaces import IModemCallLog
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.postgres import fresh_database


class ModemCallLogBehaviours:
    """A test case provides ``new_store()``: a new, unopened store on its database."""

    def new_store(self) -> Any:
        raise NotImplementedError

    async def opened(self) -> ModemCallLog:
        store = self.new_store()
        await store.open()
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        return ModemCallLog(store)

    async def assert_store_error(self, d: Any) -> StoreError:
        try:
            await d
        except StoreError as e:
            return e
        self.fail("no StoreError")  # type: ignore[attr-defined]
        raise AssertionError

    def test_provides_imodemcalllog(self) -> None:
        self.assertTrue(  # type: ignore[attr-defined]
            verifyObject(IModemCallLog, ModemCallLog(self.new_store())))

    async def test_modem_calls_sum_up_per_line_and_per_site(self) -> None:
        store = await self.opened()
        t0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

        def call(line: str, site: str, minute: int, outcome: CallOutcome, seconds: float,
                 connected: float = 0.0) -> ModemCall:
            return ModemCall(line, "+5411" + site, site, t0 + timedelta(minutes=minute),
                             seconds, connected, outcome.value.upper(), outcome)

        calls = [
            call("m1", "s1", 0, CallOutcome.BUSY, 4.0),
            call("m2", "s2", 1, CallOutcome.COMPLETED, 40.5, 30.25),
            call("m1", "s1", 2, CallOutcome.COMPLETED, 35.0, 25.0),
            call("m1", "s3", 3, CallOutcome.CARRIER_LOST, 12.0, 8.0),
            call("m2", "s3", 9, CallOutcome.NO_ANSWER, 60.0),
        ]
        self.assertEqual(await store.add_modem_calls(calls[:2]), 2)  # type: ignore[attr-defined]
        self.assertEqual(await store.add_modem_calls(calls[2:]), 3)  # type: ignore[attr-defined]
        for by in ("line", "site"):
            stored = {s.key: s for s in await store.modem_call_stats(by)}
            self.assertEqual(stored, call_stats(calls, by))  # type: ignore[attr-defined]
        per_line = {s.key: s for s in await store.modem_call_stats("line")}
        self.assertEqual(  # type: ignore[attr-defined]
            (per_line["m1"].attempts, per_line["m1"].connects, per_line["m1"].seconds),
            (3, 2, 51.0),
        )
        recent = await store.modem_call_stats("site", t0 + timedelta(minutes=3))
        self.assertEqual(  # type: ignore[attr-defined]
            [(s.key, dict(s.outcomes)) for s in recent],
            [("s3", {"carrier lost": 1, "no answer": 1})],
        )
        await self.assert_store_error(store.modem_call_stats("number"))


class SqliteModemCallLogTests(ModemCallLogBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp(), "fep.sqlite")

    def new_store(self) -> SqliteStore:
        return SqliteStore(self.path, reactor)


class PostgresModemCallLogTests(ModemCallLogBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)
