"""The store side of outage analysis (AnalysisStore.power_events and jobs.run_outages) on
SQLite and PostgreSQL.

M1 went down the day before at 22:00 (after a down and up at 20:00-20:05) and comes up at
00:30; M2 goes down at 10:00 and up at 10:40, and has a tamper event that is no power event;
M3 goes down at 23:50 and up the day after. The day's power events of each meter, with its last
one before the day: M1 its 22:00 down and 00:30 up; M2 its two; M3 its down (the up is after
the day). Outages in the day: M1 00:00-00:30 (cut start), M2 10:00-10:40, M3 23:50-24:00 (cut
end): 3 sustained over 3 customers, 30 + 40 + 10 = 80 minutes, SAIFI 1, SAIDI 26.667."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import jobs
from fep.analysis.areas import Area, AreaMeter, Network
from fep.analysis.settings import load
from fep.analysis.store import AnalysisStore
from fep.model import EventKind, MeterEvent, Severity
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.postgres import fresh_database

DAY = datetime(2026, 12, 1, tzinfo=UTC)
H = timedelta(hours=1)


def event(meter: str, kind: EventKind, at: datetime) -> MeterEvent:
    return MeterEvent(meter, str(kind), kind, Severity.MAJOR, at)


DOWN, UP = EventKind.POWER_OUTAGE, EventKind.POWER_RESTORED
EVENTS = [
    event("M1", DOWN, DAY - 4 * H), event("M1", UP, DAY - 4 * H + timedelta(minutes=5)),
    event("M1", DOWN, DAY - 2 * H), event("M1", UP, DAY + timedelta(minutes=30)),
    event("M2", DOWN, DAY + 10 * H), event("M2", UP, DAY + 10 * H + timedelta(minutes=40)),
    event("M2", EventKind.COVER_OPEN, DAY + 11 * H),
    event("M3", DOWN, DAY + 23 * H + timedelta(minutes=50)), event("M3", UP, DAY + 25 * H),
]


class OutageStoreBehaviours:
    def new_store(self) -> Any:
        raise NotImplementedError

    async def test_power_events_of_the_day_and_the_last_before(self) -> None:
        store = self.new_store()
        await store.open()
        try:
            await store.write(EVENTS)
            found = await AnalysisStore(store).power_events(["M1", "M2", "M3", "M4"], DAY,
                                                            DAY + 24 * H)
        finally:
            await store.close()
        self.assertEqual({m: [(e.kind, e.time) for e in es] for m, es in found.items()}, {
            "M1": [(DOWN, DAY - 2 * H), (UP, DAY + timedelta(minutes=30))],
            "M2": [(DOWN, DAY + 10 * H), (UP, DAY + 10 * H + timedelta(minutes=40))],
            "M3": [(DOWN, DAY + 23 * H + timedelta(minutes=50))],
            "M4": []})

    async def test_run_outages_of_an_area(self) -> None:
        store = self.new_store()
        await store.open()
        try:
            await store.write(EVENTS)
            analysis = AnalysisStore(store)
            await analysis.save_network(Network(
                (Area("T1"),),
                tuple(AreaMeter("T1", m) for m in ("M1", "M2", "M3"))))
            report = await jobs.run_outages(store, load(None), date(2026, 12, 1), area="T1")
        finally:
            await store.close()
        self.assertEqual([(o.meter, o.since, o.until, o.cut_start, o.cut_end)
                          for o in report.outages], [
            ("M1", DAY, DAY + timedelta(minutes=30), True, False),
            ("M2", DAY + 10 * H, DAY + 10 * H + timedelta(minutes=40), False, False),
            ("M3", DAY + 23 * H + timedelta(minutes=50), DAY + 24 * H, False, True)])
        self.assertEqual(report.areas, [])
        self.assertEqual((report.indices.sustained, report.indices.customer_minutes,
                          report.indices.saifi, report.indices.saidi),
                         (3, D(80), D(1), D("26.667")))


class SqliteOutageStoreTests(OutageStoreBehaviours, unittest.TestCase):
    def new_store(self) -> SqliteStore:
        return SqliteStore(self.mktemp() + ".sqlite", reactor)


class PostgresOutageStoreTests(OutageStoreBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)
