"""Editing (fep.analysis.edits) on SQLite and PostgreSQL: replace or accept a value with a
reason, audited, four eyes when configured; the original values never overwritten.

Area T1: summary S 100 Wh and member A 90 Wh every 15 minutes of 2026-12-01, except A's
interval 05 (01:15), which is 150: above the rule set's high limit 120, so SUSPECT."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import areas, jobs
from fep.analysis.edits import Editor, EditRefused
from fep.analysis.settings import RuleSet, VeeSettings
from fep.analysis.store import AnalysisStore
from fep.collect.commands import SameOperator, WrongState
from fep.model import IntervalBlock, ObisCode, Quality
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.postgres import fresh_database

Q15 = timedelta(minutes=15)
DAY = date(2026, 12, 1)
T0 = datetime(2026, 12, 1, tzinfo=UTC)
CHANNEL = ObisCode(1, 0, 1, 29, 0)
VEE = VeeSettings(rule_sets={"default": RuleSet(high=D(120))})
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def t(n: int) -> datetime:
    return T0 + n * Q15


class EditBehaviours:
    def new_store(self) -> Any:
        raise NotImplementedError

    async def open(self) -> Any:
        store = self.new_store()
        await store.open()
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        a = [D(90)] * 96
        a[5] = D(150)
        await store.write([IntervalBlock("S", CHANNEL, T0, Q15, (D(100),) * 96),
                           IntervalBlock("A", CHANNEL, T0, Q15, tuple(a))])
        await AnalysisStore(store).save_network(areas.read_csv(
            "area,meter,role\nT1,,\nT1,S,summary\nT1,A,member\n"))
        await jobs.run_vee(store, VEE, DAY)
        return store

    async def row(self, store: Any, n: int) -> Any:
        rows = await jobs.validated_series(store, VEE, "A", DAY)
        return rows[n]

    async def test_replace_without_approval_is_applied_and_audited(self) -> None:
        """Replace A's 01:15 (150, SUSPECT) by 90: applied at once, before 150 and after 90
        kept with who and why; the series shows 90 (method edited); the stored interval is
        still 150; the day's balance counts 90: consumption 96 x 90 = 8640."""
        store = await self.open()
        before = await self.row(store, 5)
        self.assertEqual((before.value, bool(before.quality & Quality.SUSPECT)), (D(150), True))
        editor = Editor(store, VEE, now=lambda: NOW)
        edit = await editor.request("A", t(5), value=D(90), reason="spike after meter swap",
                                    who="cli:alice")
        self.assertEqual((edit.action, edit.before, edit.after, edit.status, edit.requested_by,
                          edit.requested_at, edit.decided_by, edit.decided_at),
                         ("replace", D(150), D(90), "applied", "cli:alice", NOW, "cli:alice",
                          NOW))
        row = await self.row(store, 5)
        self.assertEqual((row.value, row.quality, row.method),
                         (D(90), Quality.OK, "edited"))
        self.assertIn("alice", row.source)
        self.assertIn("spike after meter swap", row.source)
        stored = {start: value for b in await store.intervals("A")
                  for start, value, _status in b.intervals()}
        self.assertEqual(D(str(stored[t(5)])), D(150))
        (balance,) = await jobs.run_balance(store, VEE, DAY)
        self.assertEqual(balance.day.consumption, D(8640))
        (listed,) = await editor.edits(meter="A")
        self.assertEqual(listed, edit)
        # A later applied edit of the same interval is the one that counts.
        await editor.request("A", t(5), value=D(95), reason="better figure", who="cli:bob")
        self.assertEqual((await self.row(store, 5)).value, D(95))

    async def test_accept_keeps_the_value_and_clears_suspect(self) -> None:
        store = await self.open()
        editor = Editor(store, VEE, now=lambda: NOW)
        edit = await editor.request("A", t(5), accept=True, reason="a real peak: a heater",
                                    who="api:bob")
        self.assertEqual((edit.action, edit.before, edit.after), ("accept", D(150), D(150)))
        row = await self.row(store, 5)
        self.assertEqual((row.value, bool(row.quality & Quality.SUSPECT), row.method),
                         (D(150), False, "accepted"))

    async def test_four_eyes_when_configured(self) -> None:
        """With approval, an edit waits (the series unchanged); its requester cannot approve
        it through another door (cli:alice, api:alice); bob can; a decided edit cannot be
        decided again; a rejection needs a reason and changes nothing."""
        store = await self.open()
        editor = Editor(store, VEE, approval=True, now=lambda: NOW)
        edit = await editor.request("A", t(5), value=D(90), reason="swap", who="cli:alice")
        self.assertEqual((edit.status, edit.decided_by), ("pending", None))
        self.assertEqual((await self.row(store, 5)).value, D(150))
        with self.assertRaises(SameOperator):
            await editor.decide(edit.id, approve=True, who="api:alice")
        approved = await editor.decide(edit.id, approve=True, who="console:bob")
        self.assertEqual((approved.status, approved.decided_by, approved.decided_at),
                         ("applied", "console:bob", NOW))
        self.assertEqual((await self.row(store, 5)).value, D(90))
        with self.assertRaises(WrongState):
            await editor.decide(edit.id, approve=False, who="console:carol", note="late")
        other = await editor.request("A", t(6), value=D(0), reason="?", who="cli:alice")
        with self.assertRaises(EditRefused):
            await editor.decide(other.id, approve=False, who="api:bob")
        rejected = await editor.decide(other.id, approve=False, who="api:bob",
                                       note="no evidence")
        self.assertEqual((rejected.status, rejected.note), ("rejected", "no evidence"))
        self.assertEqual((await self.row(store, 6)).value, D(90))
        self.assertEqual([e.status for e in await editor.edits(status="pending")], [])
        self.assertEqual([e.id for e in await editor.edits()], [other.id, edit.id])

    async def test_refusals(self) -> None:
        store = await self.open()
        editor = Editor(store, VEE)
        for kwargs in ({"start": t(5), "value": D(1), "reason": " "},
                       {"start": t(5) + timedelta(minutes=1), "value": D(1), "reason": "x"},
                       {"start": t(5), "reason": "x"},
                       {"start": t(5), "value": D(1), "accept": True, "reason": "x"}):
            with self.assertRaises(EditRefused):
                await editor.request("A", who="cli:alice", **kwargs)
        with self.assertRaises(EditRefused):
            await editor.request("NOPE", t(5), accept=True, reason="x", who="cli:alice")
        with self.assertRaises(EditRefused):
            await editor.decide(99, approve=True, who="cli:bob")


class SqliteEditTests(EditBehaviours, unittest.TestCase):
    def new_store(self) -> SqliteStore:
        return SqliteStore(self.mktemp() + ".sqlite", reactor)


class PostgresEditTests(EditBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)
