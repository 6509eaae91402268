"""The balance of feeders and substations: an area with child areas counts what each child
takes (its summary meters' input; a child without summary meters, its members' and its own
children's sum) as one member beside its own members, against its own summary meters.

The network, every value constant over the day's 96 intervals (Wh per 15 minutes)::

    S1 substation   summary SUB 350
      F1 feeder     summary FEED 340, member M9 30
        T1          summary T1S 200, members A 90, B 100
        T2          no summary meter, members C 50, D 45

T1: input 200, consumption 190, loss 10 = 5.000 %; the day 19200, 18240, 960.
F1: input 340, consumption T1's 200 + T2's 95 + M9's 30 = 325, loss 15 = 4.412 %; the day
32640, 31200, 1440; 3 members (M9, T1, T2).
S1: input 350, consumption F1's 340, loss 10 = 2.857 %; the day 33600, 32640, 960.

Where the feeder measures a child itself (F1 lists T1S as its own summary meter `out`), the
child is not counted again: F1's input 340 - 200 = 140, consumption T2's 95 + M9's 30 = 125,
loss 15 = 10.714 %.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import areas, jobs
from fep.analysis.settings import VeeSettings
from fep.analysis.store import AnalysisStore
from fep.model import IntervalBlock, ObisCode
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.inprocess import fep_main
from tests.postgres import fresh_database

CHANNEL = ObisCode(1, 0, 1, 29, 0)
Q15 = timedelta(minutes=15)
DAY = datetime(2026, 12, 1, tzinfo=UTC)
VALUES = {"SUB": 350, "FEED": 340, "M9": 30, "T1S": 200, "A": 90, "B": 100, "C": 50, "D": 45}
AREAS = """area,name,kind,parent,meter,role,direction,phase
S1,Substation,substation,,,,,
F1,Feeder 1,feeder,S1,,,,
T1,Transformer 1,transformer,F1,,,,
T2,Transformer 2,transformer,F1,,,,
S1,,,,SUB,summary,in,
F1,,,,FEED,summary,in,
F1,,,,M9,member,,
T1,,,,T1S,summary,in,
T1,,,,A,member,,
T1,,,,B,member,,
T2,,,,C,member,,
T2,,,,D,member,,
"""


def blocks() -> list[IntervalBlock]:
    return [IntervalBlock(m, CHANNEL, DAY, Q15, (D(v),) * 96) for m, v in VALUES.items()]


class ChildrenTests(unittest.TestCase):
    def test_a_child_the_parent_measures_itself_is_not_counted(self) -> None:
        network = areas.read_csv(AREAS)
        self.assertEqual(jobs.children_counted(network, "F1"), ["T1", "T2"])
        measured = areas.read_csv(AREAS + "F1,,,,T1S,summary,out,\n")
        self.assertEqual(jobs.children_counted(measured, "F1"), ["T2"])


class FeederBalanceBehaviours:
    def new_store(self) -> Any:
        raise NotImplementedError

    async def balances(self, csv: str, area: str) -> dict[str, tuple[Any, ...]]:
        store = self.new_store()
        await store.open()
        try:
            await store.write(blocks())
            await AnalysisStore(store).save_network(areas.read_csv(csv))
            results = await jobs.balance_report(store, VeeSettings(), date(2026, 12, 1),
                                                area=area)
        finally:
            await store.close()
        return {r.day.area: (r.day.input, r.day.consumption, r.day.loss, r.day.loss_rate,
                             r.day.members) for r in results}

    async def test_the_tree_sums_its_children(self) -> None:
        found = await self.balances(AREAS, "S1")
        self.assertEqual(list(found), ["S1", "F1", "T1"])
        self.assertEqual(found["T1"], (D(19200), D(18240), D(960), D("5.000"), 2))
        self.assertEqual(found["F1"], (D(32640), D(31200), D(1440), D("4.412"), 3))
        self.assertEqual(found["S1"], (D(33600), D(32640), D(960), D("2.857"), 1))

    async def test_a_child_measured_by_the_feeder(self) -> None:
        found = await self.balances(AREAS + "F1,,,,T1S,summary,out,\n", "F1")
        self.assertEqual(found["F1"], (D(140 * 96), D(125 * 96), D(15 * 96), D("10.714"), 2))


class SqliteFeederBalanceTests(FeederBalanceBehaviours, unittest.TestCase):
    def new_store(self) -> SqliteStore:
        return SqliteStore(self.mktemp() + ".sqlite", reactor)


class PostgresFeederBalanceTests(FeederBalanceBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)


class FeederBalanceCliTests(unittest.TestCase):
    async def test_fep_balance_area_shows_the_tree(self) -> None:
        db = "sqlite:" + self.mktemp() + ".sqlite"
        store = SqliteStore(db[len("sqlite:"):], reactor)
        await store.open()
        await store.write(blocks())
        await store.close()
        csv = Path(self.mktemp() + ".csv")
        csv.write_text(AREAS, encoding="utf-8")
        self.assertEqual(fep_main("--db", db, "areas", "import", str(csv)).returncode, 0)
        table = fep_main("--db", db, "balance", "--day", "2026-12-01", "--area", "S1")
        self.assertEqual(table.returncode, 0, table.stderr)
        lines = table.stdout.splitlines()
        self.assertEqual([line.split()[0] for line in lines[2:]], ["S1", "F1", "T1"])
        self.assertTrue(lines[3].startswith("  F1 ") and lines[4].startswith("    T1 "), lines)
        rows = fep_main("--db", db, "balance", "--day", "2026-12-01", "--area", "F1",
                        "--format", "csv").stdout.splitlines()
        self.assertEqual([r.split(",")[0] for r in rows[1:]], ["F1", "T1"])
        self.assertEqual(rows[1].split(",")[3:7], ["32640", "31200", "1440", "4.412"])
