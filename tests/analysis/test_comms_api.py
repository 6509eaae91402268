"""GET /api/v1/comms over real HTTP on a real SQLite store (behind the timed store, as in the
daemon): the figures of tests.analysis.test_comms_cli (T1: S, A, B read each hour; 12 jobs, 4
ok on 2026-12-01), a token needed, bad arguments refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import areas
from fep.analysis.store import AnalysisStore
from fep.collect.jobstore import JobStore
from fep.model import Meter
from fep.operator.http import site
from fep.operator.metrics import FepMetrics, TimedStore
from fep.operator.tokens import TokenFile
from tests.analysis.test_comms_cli import job
from tests.operator.helpers import TOKENS, VIEWER_TOKEN, http, make_context

T0 = datetime(2026, 12, 1, tzinfo=UTC)


class CommsApiTests(unittest.TestCase):
    async def setUp(self) -> None:
        ctx = await make_context(self, [Meter(m, "dlms", "tcp:10.0.0.1:4059") for m in "SAB"])
        jobs = [job(m, 1, True) for m in "SAB"]
        jobs += [job(m, h, False) for h in (2, 3) for m in "SAB"]
        jobs += [job("S", 4, False), job("A", 4, False), job("B", 4, True)]
        await JobStore(ctx.store).add_jobs(jobs, T0.timestamp())
        await AnalysisStore(ctx.store).save_network(areas.read_csv(
            "area,meter,role\nT1,,\nT1,S,summary\nT1,A,member\nT1,B,member\n"))
        metrics = FepMetrics.create()
        ctx.store = TimedStore(ctx.store, metrics.store_latency)
        self.ctx = ctx
        port = reactor.listenTCP(0, site(ctx, TokenFile.parse(TOKENS), metrics),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}/api/v1/"

    async def test_rates_and_the_meters_below(self) -> None:
        r = await http(self.base + "comms?from=2026-12-01", token=VIEWER_TOKEN)
        self.assertEqual(r.status, 200, r.body)
        body = r.json()
        self.assertEqual((body["from"], body["to"], body["target"]),
                         ("2026-12-01T00:00:00+00:00", "2026-12-02T00:00:00+00:00", "98.00"))
        rows = {(x["scope"], x["key"]): (x["jobs"], x["ok"], x["rate"]) for x in body["rows"]}
        self.assertEqual(rows[("all", "all")], (12, 4, "33.33"))
        self.assertEqual(rows[("area", "T1")], (12, 4, "33.33"))
        self.assertEqual([(m["meter"], m["rate"], m["last_error"]) for m in body["below"]],
                         [("A", "25.00", "timeout"), ("S", "25.00", "timeout"),
                          ("B", "50.00", "timeout")])
        only = (await http(self.base + "comms?from=2026-12-01&below=yes&target=30%25",
                           token=VIEWER_TOKEN)).json()
        self.assertNotIn("rows", only)
        self.assertEqual([m["meter"] for m in only["below"]], ["A", "S"])
        later = (await http(self.base + "comms?from=2026-12-01T04:00:00Z&area=T1",
                            token=VIEWER_TOKEN)).json()
        self.assertEqual(later["to"], (T0 + timedelta(days=1, hours=4)).isoformat())
        self.assertEqual(later["rows"][0]["jobs"], 3)

    async def test_errors(self) -> None:
        self.assertEqual((await http(self.base + "comms")).status, 401)
        for query, status in (("area=T9", 404), ("target=150%25", 400),
                              ("from=2026-12-02&to=2026-12-01", 400), ("from=soon", 400)):
            r = await http(self.base + "comms?" + query, token=VIEWER_TOKEN)
            self.assertEqual(r.status, status, query)
            self.assertIn("error", r.json())


class StatusPanelTests(unittest.TestCase):
    """The status page's communication panel: fepcomms.js (run by node, it has no DOM)
    shapes the API's real answer into the panel's rows; the page has the panel's tables
    and its script asks the API for the last 24 hours."""

    async def test_the_panel_rows_from_the_api_answer(self) -> None:
        import json
        import shutil
        from importlib import resources

        from twisted.internet.utils import getProcessOutputAndValue

        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            raise unittest.SkipTest("node (Debian nodejs) is not installed")
        await CommsApiTests.setUp(self)  # type: ignore[arg-type]
        body = (await http(self.base + "comms?from=2026-12-01", token=VIEWER_TOKEN)).body
        static = resources.files("fep.operator").joinpath("static")
        script = (static.joinpath("fepcomms.js").read_text() + "\nvar body = "
                  + body.decode() + ";\nprocess.stdout.write(JSON.stringify("
                  "[FepComms.summary(body), FepComms.below(body, 2)]));\n")
        out, err, code = await getProcessOutputAndValue(node, ["-e", script], reactor=reactor)
        self.assertEqual(code, 0, err)
        summary, below = json.loads(out)
        self.assertEqual(summary, [["all", "all", 12, 4, "33.33", "below"],
                                   ["area", "T1", 12, 4, "33.33", "below"],
                                   ["channel", "tcp", 12, 4, "33.33", "below"],
                                   ["route", "tcp:10.0.0.1:4059", 12, 4, "33.33", "below"]])
        self.assertEqual(below, [["A", 4, 1, "25.00", "2026-12-01 04:05:00Z", "timeout"],
                                 ["S", 4, 1, "25.00", "2026-12-01 04:05:00Z", "timeout"]])
        page = static.joinpath("status.html").read_text()
        self.assertIn('<script src="/static/fepcomms.js"></script>', page)
        self.assertIn('<table id="comms">', page)
        self.assertIn('<table id="comms-below">', page)
        code_js = static.joinpath("status.js").read_text()
        self.assertIn('api("comms?from=" + encodeURIComponent(since))', code_js)
        self.assertIn("Date.now() - 86400000", code_js)
        self.assertIn("FepComms.below(r, 20)", code_js)


class StatusPageScriptTests(unittest.TestCase):
    async def test_status_js_fills_the_panel_from_the_api(self) -> None:
        """status.js itself (with fepcomms.js) run by node on a minimal DOM
        (tests/analysis/status_dom.js) and the real API's answers: the page loads, the
        comms tables hold the summary rows and the meters below the target."""
        import json
        import shutil
        from importlib import resources
        from pathlib import Path

        from twisted.internet.utils import getProcessOutputAndValue

        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            raise unittest.SkipTest("node (Debian nodejs) is not installed")
        await CommsApiTests.setUp(self)  # type: ignore[arg-type]
        answers = {}
        for path in ("stats", "success-rate", "channels", "sessions", "alarms", "meters"):
            r = await http(self.base + path, token=VIEWER_TOKEN)
            self.assertEqual(r.status, 200, path)
            answers[path] = r.json()
        answers["comms"] = (await http(self.base + "comms?from=2026-12-01",
                                       token=VIEWER_TOKEN)).json()
        # The area balance panel: a day's balance as stored (T1 of the load tests' figures:
        # input 24400, consumption 24180, loss 220 = 0.902 %).
        from decimal import Decimal as D

        from fep.analysis.balance import BalanceRow

        await AnalysisStore(self.ctx.store).save_balances([BalanceRow(
            "T1", T0, T0 + timedelta(days=1), D(24400), D(24180), D(220), D("0.902"), 2,
            D(100), D(0), 96)])
        answers["balance"] = (await http(self.base + "balance?stored=yes&day=2026-12-01",
                                         token=VIEWER_TOKEN)).json()
        answers["profile"] = {"blocks": []}
        # The analysis charts: the answers of tests.analysis.test_status_charts's store
        # (loss of T1 and T2, the outage map of S1 > F1 > T1, T2, the quality of 1 Dec).
        from tests.analysis.test_status_charts import serve

        _, charts = await serve(self)
        for path in ("balance/history", "outages/map", "vee/quality"):
            r = await http(charts + path + "?from=2026-11-29&to=2026-12-02",
                           token=VIEWER_TOKEN)
            self.assertEqual(r.status, 200, path)
            answers[path] = r.json()
        given = Path(self.mktemp() + ".json")
        given.write_text(json.dumps(answers))
        static = str(resources.files("fep.operator").joinpath("static"))
        script = str(Path(__file__).with_name("status_dom.js"))
        out, err, code = await getProcessOutputAndValue(node, [script, str(given), static],
                                                        reactor=reactor)
        self.assertEqual(code, 0, err)
        page = json.loads(out)
        self.assertEqual((page["loaded"], page["error"], page["target"]),
                         ("yes", "", "target 98.00 %"))
        self.assertEqual(page["comms"], [["all", "all", "12", "4", "33.33", "below"],
                                         ["area", "T1", "12", "4", "33.33", "below"],
                                         ["channel", "tcp", "12", "4", "33.33", "below"],
                                         ["route", "tcp:10.0.0.1:4059", "12", "4", "33.33",
                                          "below"]])
        self.assertEqual([row[:4] for row in page["below"]],
                         [["A", "4", "1", "25.00"], ["S", "4", "1", "25.00"],
                          ["B", "4", "2", "50.00"]])
        self.assertEqual(page["balance"], [["T1", "24400", "24180", "220", "0.902", "100",
                                            ""]])
        self.assertEqual(len(page["asked"]), 3)
        for url in page["asked"]:
            self.assertRegex(url, r"\?from=\d{4}-\d\d-\d\d&to=\d{4}-\d\d-\d\d$")
        # Area loss over time: T1 first (its last day has no rate, T2's -1 % is out of
        # band), each chart with its band and its days.
        self.assertEqual(page["lossCharts"], [
            {"area": "T2", "className": "small-chart out-of-band",
             "title": "T2: -1 % (band 0\u201310 %)"},
            {"area": "T1", "className": "small-chart", "title": "T1 (band 0\u201310 %)"}])
        self.assertEqual(page["bands"], [
            {"band": {"low": 0, "high": 10}, "points": [["2026-12-01", -1]]},
            {"band": {"low": 0, "high": 10},
             "points": [["2026-11-29", 4], ["2026-11-30", 12.5], ["2026-12-01", None]]}])
        # The outage map: the tree indented, the areas with an area or suspected outage
        # highlighted.
        self.assertEqual(page["outageMap"], [
            {"className": "", "cells": ["S1 North", "substation", "5", "2", "4", "3", "0",
                                        "0"]},
            {"className": "", "cells": ["[depth-1] F1 Feeder 1", "feeder", "5", "2", "4",
                                        "3", "0", "0"]},
            {"className": "alert", "cells": ["[depth-2] T1 Transformer 1", "transformer",
                                             "2", "0", "1", "1", "0", "1 (open)"]},
            {"className": "alert", "cells": ["[depth-2] T2 Transformer 2", "transformer",
                                             "2", "2", "3", "2", "1", "0"]}])
        # Interval quality: the shares of 288 intervals and the stacked bar (200 px).
        self.assertEqual(page["quality"], [{"className": "", "cells": [
            "2026-12-01", "3", "288", "50.7", "0.3", "1.4", "0.3", "47.2",
            "valid 101.4, suspect 0.7, estimated 2.8, edited 0.7, missing 94.4"]}])
        self.assertIn("1-0:1.29.0*255", page["qualityChannel"])
        # Read again every 5 minutes, not at each refresh; at most 12 loss charts.
        code_js = resources.files("fep.operator").joinpath("static", "status.js").read_text()
        self.assertIn("var ANALYSIS_MS = 300000;", code_js)
        self.assertIn("if (analysisRead && Date.now() - analysisRead < ANALYSIS_MS)", code_js)
        self.assertIn("var LOSS_CHARTS = 12;", code_js)
        page_html = resources.files("fep.operator").joinpath("static", "status.html")
        self.assertIn('<table id="balance">', page_html.read_text())
        self.assertIn('api("balance?stored=yes&day=" + day)',
                      resources.files("fep.operator").joinpath("static", "status.js")
                      .read_text())
