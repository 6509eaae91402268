"""What the status page charts: the loss of each area over time (GET /api/v1/balance/history),
the outage map (GET /api/v1/outages/map) and the quality share of each day's intervals (GET
/api/v1/vee/quality), over real HTTP on a real SQLite store, from stored rows only; the
quality counts run_vee leaves also on PostgreSQL.

The network: substation S1 > feeder F1 (member E) > T1 (summary SUM1, members A, B) and T2
(members C, D).

Quality of 2026-12-01 (run_vee of T1: SUM1, A, B): A sends 96 intervals of 10 Wh, one of them
(03:00) -5 Wh (reverse energy: suspect), and an operator replaced 05:00 (edited): 94 valid.
B lacks 01:00-02:00 (4 intervals, interpolated: estimated) and 10:00-20:00 (40 intervals, no
history to estimate them from: missing): 52 valid. SUM1 sent nothing: 96 missing. The day:
3 meters, 288 intervals, 146 valid, 1 suspect, 4 estimated, 1 edited, 136 missing. A run of
T2 then adds C and D (192 missing): 5 meters; B's intervals re-collected and T1 run again:
B 96 valid, not counted twice.

Outages stored of 2026-11-29 to 2026-12-01 (the map's `from=2026-11-29&to=2026-12-02`): A
10:00-10:40 on 1 Dec; C 08:00-09:00 on 30 Nov and 23:00 to the day's end (cut end: still out);
D 23:30 to the day's end; area T2 23:30 to the end (C, D); T1 suspected from communication
loss since 02:00, still open; B's of 25 Nov is before the period. S1 and F1: 5 members, 2 out
(C, D), 4 outages of 3 meters; T1: 2 members, 1 outage, a suspected outage open (alert); T2:
2 members, 2 out, 3 outages of 2 meters, 1 area outage (alert).

Loss over time: T1 4.000 % on 29 Nov, 12.500 % on 30 Nov (above the default band 0-10 %),
no rate on 1 Dec (no input); its month row is left out; T2 -1.000 % on 1 Dec.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import areas, jobs, quality
from fep.analysis.balance import BalanceRow
from fep.analysis.edits import Edit
from fep.analysis.outage_map import outage_map
from fep.analysis.settings import VeeSettings
from fep.analysis.store import AnalysisStore, StoredOutage
from fep.model import IntervalBlock, Meter, ObisCode, Quality
from fep.operator.http import site
from fep.operator.metrics import FepMetrics
from fep.operator.tokens import TokenFile
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.operator.helpers import TOKENS, VIEWER_TOKEN, http, make_context
from tests.postgres import fresh_database

CHANNEL = ObisCode(1, 0, 1, 29, 0)
Q15 = timedelta(minutes=15)
H = timedelta(hours=1)
DAY = datetime(2026, 12, 1, tzinfo=UTC)
NETWORK = """area,name,kind,parent,meter,role,direction,phase
S1,North,substation,,,,,
F1,Feeder 1,feeder,S1,,,,
T1,Transformer 1,transformer,F1,,,,
T2,Transformer 2,transformer,F1,,,,
T1,,,,SUM1,summary,in,
T1,,,,A,member,,
T1,,,,B,member,,
T2,,,,C,member,,
T2,,,,D,member,,
F1,,,,E,member,,
"""


def a_blocks(day: datetime = DAY) -> list[IntervalBlock]:
    values = [D(10)] * 96
    values[12] = D(-5)  # 03:00
    return [IntervalBlock("A", CHANNEL, day, Q15, tuple(values))]


def b_blocks(gaps: bool = True, day: datetime = DAY) -> list[IntervalBlock]:
    if not gaps:
        return [IntervalBlock("B", CHANNEL, day, Q15, (D(20),) * 96)]
    return [IntervalBlock("B", CHANNEL, day, Q15, (D(20),) * 4),  # 00:00-01:00
            IntervalBlock("B", CHANNEL, day + 2 * H, Q15, (D(20),) * 32),  # 02:00-10:00
            IntervalBlock("B", CHANNEL, day + 20 * H, Q15, (D(20),) * 16)]  # 20:00-24:00


def replaced_at_five(day: datetime = DAY) -> Edit:
    return Edit(0, "A", str(CHANNEL), day + 5 * H, "replace", D(10), D(12), "meter swap",
                "api:alice", day + 30 * H, "applied", "api:alice", day + 30 * H)


def stored_outages(day: datetime = DAY) -> list[StoredOutage]:
    end = day + 24 * H
    return [StoredOutage("meter", "A", day + 10 * H, day + 10 * H + timedelta(minutes=40)),
            StoredOutage("meter", "C", day - 16 * H, day - 15 * H),
            StoredOutage("meter", "C", day + 23 * H, end, details={"cut": "end"}),
            StoredOutage("meter", "D", day + 23.5 * H, end, details={"cut": "end"}),
            StoredOutage("area", "T2", day + 23.5 * H, end, "meters", ("C", "D")),
            StoredOutage("comms", "T1", day + 2 * H, None, "communication", ("SUM1", "A", "B")),
            StoredOutage("meter", "B", day - 6 * 24 * H, day - 6 * 24 * H + H)]


def day_balance(area: str, day: datetime, rate: str | None, days: int = 1) -> BalanceRow:
    loss = D(rate or 0) * 10
    return BalanceRow(area, day, day + timedelta(days=days), D(1000) if rate else D(0),
                      D(1000) - loss, loss, D(rate) if rate else None, 2, D(100), D(0), 96)


class ClassifyTests(unittest.TestCase):
    def test_each_interval_in_the_first_class_that_applies(self) -> None:
        t = [DAY + n * Q15 for n in range(6)]
        counts = quality.classify(
            t, real={t[0], t[1], t[2]}, flags={t[1]: Quality.SUSPECT, t[0]: Quality.MISSING},
            estimated={t[3]}, edited={t[2], t[4]})
        # t0 real (MISSING is no suspicion), t1 suspect, t2 edited (over real), t3
        # estimated, t4 edited (a replaced missing value), t5 missing.
        self.assertEqual(counts, {"valid": 1, "suspect": 1, "estimated": 1, "edited": 2,
                                  "missing": 1})

    def test_the_day_is_the_sum_of_its_meters(self) -> None:
        day = DAY.date()
        found = quality.total(day, [quality.DayQuality(day, 1, 96, valid=90, missing=6),
                                    quality.DayQuality(day, 1, 96, estimated=96)])
        self.assertEqual(found, quality.DayQuality(day, 2, 192, 90, 0, 96, 0, 6))


class OutageMapTests(unittest.TestCase):
    def test_the_tree_with_its_counts(self) -> None:
        network = areas.read_csv(NETWORK)
        rows = outage_map(network, [o for o in stored_outages() if o.subject != "B"],
                          DAY + 24 * H)
        self.assertEqual([(r.area, r.depth, r.members, r.out, r.outages, r.meters,
                           r.area_outages, r.suspected, r.suspected_open, r.alert)
                          for r in rows],
                         [("S1", 0, 5, 2, 4, 3, 0, 0, False, False),
                          ("F1", 1, 5, 2, 4, 3, 0, 0, False, False),
                          ("T1", 2, 2, 0, 1, 1, 0, 1, True, True),
                          ("T2", 2, 2, 2, 3, 2, 1, 0, False, True)])

    def test_an_outage_that_ended_before_the_period_end_is_not_out(self) -> None:
        network = areas.read_csv(NETWORK)
        [_, _, _, t2] = outage_map(network, stored_outages()[1:4], DAY + 25 * H)
        self.assertEqual((t2.out, t2.outages), (0, 3))


class QualityStoreBehaviours:
    """run_vee's counts, on both stores."""

    def new_store(self) -> Any:
        raise NotImplementedError

    async def test_the_days_counts_as_runs_leave_them(self) -> None:
        store = self.new_store()
        await store.open()
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        analysis = AnalysisStore(store)
        await analysis.save_network(areas.read_csv(NETWORK))
        await store.write([*a_blocks(), *b_blocks()])
        await analysis.add_edit(replaced_at_five())
        settings, day = VeeSettings(), DAY.date()
        obis, nxt = str(CHANNEL), day + timedelta(days=1)

        await jobs.run_vee(store, settings, day, area="T1")
        self.assertEqual(await analysis.quality_days(obis, day, nxt),
                         [quality.DayQuality(day, 3, 288, 146, 1, 4, 1, 136)])
        await jobs.run_vee(store, settings, day, area="T2")
        [both] = await analysis.quality_days(obis, day, nxt)
        self.assertEqual((both.meters, both.intervals, both.valid, both.missing),
                         (5, 480, 146, 136 + 192))
        await store.write(b_blocks(gaps=False))  # re-collected: the store keeps the first
        await jobs.run_vee(store, settings, day, area="T1")
        [again] = await analysis.quality_days(obis, day, nxt)
        self.assertEqual((again.meters, again.valid, again.estimated, again.missing),
                         (5, 94 + 96, 0, 96 + 192))
        self.assertEqual(await analysis.quality_days(obis, nxt, nxt + timedelta(days=1)), [])


class SqliteQualityStoreTests(QualityStoreBehaviours, unittest.TestCase):
    def new_store(self) -> SqliteStore:
        return SqliteStore(self.mktemp() + ".sqlite", reactor)

    async def test_the_loss_over_time_reads_its_days_by_the_index(self) -> None:
        """Migration 0015's index on balances (since): a range of days, no table scan."""
        store = self.new_store()
        await store.open()
        self.addCleanup(store.close)

        def plan(conn: Any) -> str:
            rows = conn.execute("EXPLAIN QUERY PLAN SELECT area FROM balances"
                                " WHERE since >= ? AND since < ?", ("a", "b")).fetchall()
            return " ".join(str(r[-1]) for r in rows)

        self.assertIn("USING INDEX balances_since", await store.interact(plan))


class PostgresQualityStoreTests(QualityStoreBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)


async def serve(case: unittest.TestCase, day: datetime = DAY) -> tuple[Any, str]:
    """A context on a real SQLite store holding the network, the intervals of A and B, the
    stored outages and balances and T1's VEE run (of ``day``, by default 1 Dec 2026); the
    API on a loopback port."""
    ctx = await make_context(case, [Meter(m, "dlms", "tcp:10.0.0.1:4059")
                                    for m in ("SUM1", "A", "B", "C", "D", "E")])
    analysis = AnalysisStore(ctx.store)
    await analysis.save_network(areas.read_csv(NETWORK))
    await ctx.store.write([*a_blocks(day), *b_blocks(day=day)])
    await analysis.add_edit(replaced_at_five(day))
    await jobs.run_vee(ctx.store, VeeSettings(), day.date(), area="T1")
    await analysis.save_outages((), None, None, stored_outages(day))
    await analysis.save_balances([
        day_balance("T1", day - 3 * 24 * H, "9.000"),  # 28 Nov: before the range asked
        day_balance("T1", day - 2 * 24 * H, "4.000"),
        day_balance("T1", day - 24 * H, "12.500"),
        day_balance("T1", day, None),
        day_balance("T1", day, "3.000", days=31),  # the month: no day of the chart
        day_balance("T2", day, "-1.000")])
    port = reactor.listenTCP(0, site(ctx, TokenFile.parse(TOKENS), FepMetrics.create()),
                             interface="127.0.0.1")
    case.addCleanup(port.stopListening)
    return ctx, f"http://127.0.0.1:{port.getHost().port}/api/v1/"


class StatusChartsApiTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.ctx, self.base = await serve(self)

    async def get(self, path: str, status: int = 200) -> Any:
        r = await http(self.base + path, token=VIEWER_TOKEN)
        self.assertEqual(r.status, status, (path, r.body))
        return r.json()

    async def test_loss_over_time_with_the_band(self) -> None:
        body = await self.get("balance/history?from=2026-11-29&to=2026-12-02")
        self.assertEqual((body["from"], body["to"]), ("2026-11-29", "2026-12-02"))
        self.assertEqual([(a["area"], a["low"], a["high"],
                           [(d["day"], d["loss_rate"]) for d in a["days"]])
                          for a in body["areas"]],
                         [("T1", "0", "10", [("2026-11-29", "4.000"),
                                             ("2026-11-30", "12.500"),
                                             ("2026-12-01", None)]),
                          ("T2", "0", "10", [("2026-12-01", "-1.000")])])
        only = await self.get("balance/history?from=2026-11-29&to=2026-12-02&area=T2")
        self.assertEqual([a["area"] for a in only["areas"]], ["T2"])
        # The band is the area's own ([balance:T2]) where it has one.
        from fep.analysis.balance import Band

        self.ctx.edits = type("Editor", (), {"vee": VeeSettings(
            area_bands={"T2": Band(D(2), D(8))})})()
        body = await self.get("balance/history?from=2026-11-29&to=2026-12-02")
        self.assertEqual([(a["area"], a["low"], a["high"]) for a in body["areas"]],
                         [("T1", "0", "10"), ("T2", "2", "8")])

    async def test_the_default_range_is_the_30_days_before_today(self) -> None:
        before = datetime.now(UTC).date()
        answers = [await self.get(p) for p in ("balance/history", "vee/quality",
                                                "outages/map")]
        # (today as the server saw it: the test may run across midnight)
        today = date.fromisoformat(answers[0]["to"])
        self.assertIn(today, (before, datetime.now(UTC).date()))
        self.assertEqual([(a["from"], a["to"]) for a in answers],
                         [((today - timedelta(days=n)).isoformat(), today.isoformat())
                          for n in (30, 30, 7)])

    async def test_the_outage_map(self) -> None:
        body = await self.get("outages/map?from=2026-11-29&to=2026-12-02")
        self.assertEqual(body["until"], "2026-12-02T00:00:00+00:00")
        self.assertEqual([(a["area"], a["parent"], a["depth"], a["members"], a["out"],
                           a["outages"], a["area_outages"], a["suspected_open"], a["alert"])
                          for a in body["areas"]],
                         [("S1", None, 0, 5, 2, 4, 0, False, False),
                          ("F1", "S1", 1, 5, 2, 4, 0, False, False),
                          ("T1", "F1", 2, 2, 0, 1, 0, True, True),
                          ("T2", "F1", 2, 2, 2, 3, 1, False, True)])
        # A period after the outages: only the suspected outage still open is found.
        later = await self.get("outages/map?from=2026-12-05&to=2026-12-06")
        self.assertEqual([(a["area"], a["outages"], a["suspected"]) for a in later["areas"]],
                         [("S1", 0, 0), ("F1", 0, 0), ("T1", 0, 1), ("T2", 0, 0)])
        # One that began more than 7 days before the period is not read.
        too_late = await self.get("outages/map?from=2026-12-09&to=2026-12-10")
        self.assertEqual([a["suspected"] for a in too_late["areas"]], [0, 0, 0, 0])

    async def test_the_quality_share(self) -> None:
        body = await self.get("vee/quality?from=2026-11-29&to=2026-12-02")
        self.assertEqual((body["channel"], body["classes"]),
                         ("1-0:1.29.0*255", ["valid", "suspect", "estimated", "edited",
                                              "missing"]))
        self.assertEqual(body["days"], [{"day": "2026-12-01", "meters": 3, "intervals": 288,
                                         "valid": 146, "suspect": 1, "estimated": 4,
                                         "edited": 1, "missing": 136}])

    async def test_errors(self) -> None:
        self.assertEqual((await http(self.base + "vee/quality")).status, 401)
        for path, status in (("balance/history?area=T9", 404),
                             ("balance/history?from=2026-12-02&to=2026-12-01", 400),
                             ("outages/map?from=2025-01-01&to=2026-12-01", 400),
                             ("vee/quality?to=soon", 400)):
            body = await self.get(path, status)
            self.assertIn("error", body)



class StatusChartsInChromiumTests(unittest.TestCase):
    """A real browser (Debian's headless Chromium) loads the status page from the API above,
    its figures two days before today (the page asks for the days before today): the three
    panels are drawn, under the page's Content-Security-Policy."""

    timeout = 120

    async def test_the_charts_are_drawn_in_a_browser(self) -> None:
        import re

        from fep.operator.http import status_url
        from tests.operator.test_status_page import run_chromium

        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        _, base = await serve(self, today - 2 * 24 * H)
        url = status_url(base.removesuffix("/api/v1/"), VIEWER_TOKEN)
        dom, err, code = await run_chromium("--virtual-time-budget=10000", "--dump-dom",
                                            "--enable-logging=stderr", "--v=0", url)
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
        html = dom.decode()
        self.assertEqual([line for line in err.decode(errors="replace").splitlines()
                          if "Content Security Policy" in line], [])
        self.assertIn('data-loaded="yes"', html, html[-3000:])
        loss = html[html.index('<div id="loss-charts"'):html.index('<table id="outage-map"')]
        self.assertEqual(re.findall(r'<div class="small-chart[^"]*" data-area="(\w+)"', loss),
                         ["T2", "T1"])
        self.assertEqual(loss.count('<g class="fep-chart-band" data-low="0" data-high="10">'),
                         2)
        self.assertIn("<polyline", loss)  # T1's days with a rate
        outage_map = html[html.index('<table id="outage-map"'):html.index('<table id="quality"')]
        self.assertEqual(re.findall(r'<tr class="alert"><td class="depth-2">(\w+)', outage_map),
                         ["T1", "T2"])
        quality_table = html[html.index('<table id="quality"'):]
        self.assertRegex(quality_table, r'<svg class="fep-bar" width="200"')
        self.assertEqual(re.findall(r'data-class="(\w+)"', quality_table),
                         ["valid", "suspect", "estimated", "edited", "missing"])


class OutageMapRowsTests(unittest.TestCase):
    async def test_quiet_areas_are_folded_in_a_large_tree(self) -> None:
        """fepanalysis.js (run by node): with more areas than the page shows (200), the
        transformer areas with nothing out and no outage are left out, and counted."""
        import json
        import shutil
        from importlib import resources

        from twisted.internet.utils import getProcessOutputAndValue

        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            raise unittest.SkipTest("node (Debian nodejs) is not installed")
        network = areas.read_csv(NETWORK)
        body = {"areas": [r.as_dict() for r in outage_map(
            network, [o for o in stored_outages() if o.subject not in ("T1", "A", "B")],
            DAY + 24 * H)]}
        # Without the outages of A and B and the suspected one T1 is quiet, T2 is not; S1
        # and F1 (above the transformer areas) are always shown.
        static = resources.files("fep.operator").joinpath("static")
        script = (static.joinpath("fepanalysis.js").read_text() + "\nvar body = "
                  + json.dumps(body, default=str) + ";\nprocess.stdout.write(JSON.stringify("
                  "[FepAnalysis.mapRows(body, 3), FepAnalysis.mapRows(body, 4)]));\n")
        out, err, code = await getProcessOutputAndValue(node, ["-e", script], reactor=reactor)
        self.assertEqual(code, 0, err)
        folded, whole = json.loads(out)
        self.assertEqual([r["cells"][0] for r in folded],
                         ["S1 North", "F1 Feeder 1", "T2 Transformer 2",
                          "1 quiet areas not shown"])
        self.assertEqual(len(whole), 4)
