"""GET /api/v1/vee/exceptions, /balance, /outages and /load over real HTTP on a real SQLite
store, with the figures of tests.analysis.test_load's area T1 (capacity 1.5 kVA).

Balance of T1 on 2026-12-01: input S 24400 Wh; consumption A 100 x 96 = 9600, B 60 x 96 +
180 = 5940, C 90 x 96 = 8640, together 24180; loss 220 Wh, 220 / 24400 = 0.902 %, inside the
default band (no alarm). Outages: A down 10:00, up 10:40; customers A, B, C: one sustained
outage, SAIFI 1/3 = 0.333, SAIDI 40/3 = 13.333 min, CAIDI 40 min; 1 of 3 out is no area
outage. VEE: X lacks its intervals 01:00-02:00, one `missing` exception of 4 intervals.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import areas, jobs
from fep.analysis.settings import VeeSettings
from fep.analysis.store import AnalysisStore
from fep.model import EventKind, IntervalBlock, Meter, MeterEvent, Severity
from fep.operator.http import site
from fep.operator.metrics import FepMetrics
from fep.operator.tokens import TokenFile
from tests.analysis.test_load import AREAS, CHANNEL, DAY, Q15, blocks
from tests.operator.helpers import TOKENS, VIEWER_TOKEN, http, make_context


class AnalysisApiTests(unittest.TestCase):
    async def setUp(self) -> None:
        ctx = await make_context(self, [Meter(m, "dlms", "tcp:10.0.0.1:4059")
                                        for m in ("S", "A", "B", "C", "M", "X")])
        self.ctx = ctx
        x = [IntervalBlock("X", CHANNEL, DAY, Q15, (D(10),) * 4),
             IntervalBlock("X", CHANNEL, DAY + 8 * Q15, Q15, (D(10),) * 88)]
        h = timedelta(hours=1)
        await ctx.store.write([*blocks(), *x,
                               MeterEvent("A", "down", EventKind.POWER_OUTAGE, Severity.MAJOR,
                                          DAY + 10 * h),
                               MeterEvent("A", "up", EventKind.POWER_RESTORED, Severity.MAJOR,
                                          DAY + 10 * h + timedelta(minutes=40))])
        await AnalysisStore(ctx.store).save_network(areas.read_csv(AREAS))
        await jobs.run_vee(ctx.store, VeeSettings(), DAY.date())
        port = reactor.listenTCP(0, site(ctx, TokenFile.parse(TOKENS), FepMetrics.create()),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}/api/v1/"

    async def get(self, path: str, status: int = 200) -> dict:  # type: ignore[type-arg]
        r = await http(self.base + path, token=VIEWER_TOKEN)
        self.assertEqual(r.status, status, (path, r.body))
        body: dict = r.json()  # type: ignore[type-arg]
        return body

    async def test_vee_exceptions(self) -> None:
        body = await self.get("vee/exceptions?day=2026-12-01&meter=X")
        self.assertEqual(body["day"], "2026-12-01")
        self.assertEqual([(e["rule"], e["since"], e["until"], e["flag"], e["details"])
                          for e in body["exceptions"]],
                         [("missing", "2026-12-01T01:00:00+00:00", "2026-12-01T02:00:00+00:00",
                           "MISSING", {"intervals": 4})])

    async def test_balance(self) -> None:
        body = await self.get("balance?day=2026-12-01&area=T1")
        [t1] = body["areas"]
        self.assertEqual((t1["input"], t1["consumption"], t1["loss"], t1["loss_rate"],
                          t1["complete"], t1["alarm"]),
                         ("24400", "24180", "220", "0.902", "100.000", None))
        self.assertEqual((t1["intervals"], t1["members"]), (96, 3))
        self.assertNotIn("rows", t1)
        rows = (await self.get("balance?day=2026-12-01&area=T1&intervals=yes")
                )["areas"][0]["rows"]
        self.assertEqual(len(rows), 96)
        month = await self.get("balance?month=2026-12")
        self.assertEqual((month["end"], month["areas"][0]["input"]), ("2027-01-01", "24400"))
        # Nothing was stored by looking.
        self.assertEqual(await AnalysisStore(self.ctx.store).balances(
            DAY - timedelta(days=1), DAY + timedelta(days=40)), [])

    async def test_outages(self) -> None:
        body = await self.get("outages?day=2026-12-01&area=T1")
        self.assertEqual([(o["meter"], o["minutes"]) for o in body["outages"]],
                         [("A", "40.000")])
        self.assertEqual(body["areas"], [])
        self.assertEqual({k: body["indices"][k] for k in ("customers", "saifi", "saidi",
                                                           "caidi")},
                         {"customers": 3, "saifi": "0.333", "saidi": "13.333",
                          "caidi": "40.000"})
        self.assertEqual(body["suspected"], [])

    async def test_load(self) -> None:
        body = await self.get("load?from=2026-12-01&area=T1")
        [t1] = body["days"]
        self.assertEqual((t1["subject"], t1["peak"], t1["loading"], t1["overload_minutes"],
                          t1["imbalance"]), ("T1", "1800.000", "120.00", 30, "64.27"))
        meter = await self.get("load?from=2026-12-01&to=2026-12-02&meter=M&profile=yes")
        self.assertEqual(meter["days"][0]["load_factor"], "20.67")
        self.assertEqual(len(meter["profile"]), 96)

    async def test_errors(self) -> None:
        self.assertEqual((await http(self.base + "load")).status, 401)
        for path, status in (("load?area=T9", 404), ("load?area=T1&meter=M", 400),
                             ("load?from=2026-12-02&to=2026-12-01", 400),
                             ("balance?area=T9", 404), ("balance?month=12", 400),
                             ("outages?day=soon", 400), ("outages?share=150%25", 400),
                             ("outages?momentary=x", 400), ("vee/exceptions?day=1.12", 400)):
            body = await self.get(path, status)
            self.assertIn("error", body)

    async def test_through_the_console(self) -> None:
        """The same analyses as console tables, for a viewer; an unknown area is refused."""
        from fep.operator.commands import CommandRefused
        from fep.operator.manhole import NAMES, OperatorCommands

        viewer = OperatorCommands(self.ctx, "watch", "SHA256:w", "viewer")
        for name in ("vee_exceptions", "balance", "outages", "load"):
            self.assertIn(name, NAMES)
            self.assertTrue(viewer.may(name))
        found = await viewer.vee_exceptions("2026-12-01", meter="X")
        self.assertEqual([(r["rule"], r["details"]) for r in found.rows],
                         [("missing", "intervals=4")])
        balance = await viewer.balance("2026-12-01", area="T1")
        self.assertEqual((balance.rows[0]["loss"], balance.rows[0]["loss_rate"]),
                         (D(220), D("0.902")))
        outages = await viewer.outages("2026-12-01", area="T1")
        self.assertEqual([(r["meter"], r["minutes"]) for r in outages.rows],
                         [("A", D("40.000"))])
        self.assertIn("SAIFI 0.333, SAIDI 13.333, CAIDI 40.000", outages.title)
        load = await viewer.load("2026-12-01", area="T1")
        self.assertEqual((load.rows[0]["loading"], load.rows[0]["imbalance"]),
                         (D("120.00"), D("64.27")))
        with self.assertRaises(CommandRefused):
            await viewer.load("2026-12-01", area="T9")
        with self.assertRaises(CommandRefused):
            await viewer.balance("yesterday")

    def test_the_settings_are_the_editors(self) -> None:
        """The doors use the vee.ini the daemon's editor has ([analysis] vee), else the
        defaults."""
        from fep.analysis.edits import Editor
        from fep.operator.console_analysis import settings_of

        self.assertEqual(settings_of(self.ctx), VeeSettings())
        mine = VeeSettings(power_factor=D("0.9"))
        self.ctx.edits = Editor(self.ctx.store, mine)
        self.assertIs(settings_of(self.ctx), mine)

    async def test_stored_balances(self) -> None:
        """stored=yes reads what fep balance or the service stored (none yet), with the
        alarm text of the area's band."""
        self.assertEqual((await self.get("balance?stored=yes&day=2026-12-01"))["areas"], [])
        from fep.analysis.balance import Band

        await jobs.run_balance(self.ctx.store, VeeSettings(), DAY.date())
        body = await self.get("balance?stored=yes&day=2026-12-01")
        self.assertEqual([(a["area"], a["loss_rate"], a["alarm"]) for a in body["areas"]],
                         [("T1", "0.902", None)])
        self.ctx.edits = type("Editor", (), {"vee": VeeSettings(band=Band(D(2), D(8)))})()
        body = await self.get("balance?stored=yes&day=2026-12-01&area=T1")
        self.assertEqual(body["areas"][0]["alarm"], "area T1: loss 0.902 % below 2 %")
