"""The outages of a period through every door: `fep outages --month` and `--since/--until`
(in-process, on a SQLite file), ``GET /api/v1/outages?month=`` and ``?since=&until=`` (real
HTTP on a real SQLite store) and the console's ``outages(month=..., since=..., until=...)``.

The figures are tests.analysis.test_outage_period's three days (2026-12-01..2026-12-04,
the 4th excluded): 4 sustained interruptions of 160 customer minutes and one momentary over
4 customers, SAIFI 1, SAIDI 40 min, CAIDI 40 min, MAIFI 0.25, one area outage of T1
23:30-00:10. Over the month of December D's last outage (23:50-00:30) is whole, 40 minutes,
and not cut: 190 customer minutes, SAIDI = CAIDI = 47.5 min."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import areas
from fep.analysis.store import AnalysisStore
from fep.model import Meter
from fep.operator.http import site
from fep.operator.metrics import FepMetrics
from fep.operator.tokens import TokenFile
from fep.store.sqlite import SqliteStore
from tests.analysis.test_outage_period import NETWORK, THREE_DAYS, store_history
from tests.inprocess import fep_main
from tests.operator.helpers import TOKENS, VIEWER_TOKEN, http, make_context

THE_PERIOD = {"customers": 4, "sustained": 4, "momentary": 1, "customer_minutes": "160.000",
              "saifi": "1.000", "saidi": "40.000", "caidi": "40.000", "maifi": "0.250"}
THE_MONTH = {**THE_PERIOD, "customer_minutes": "190.000", "saidi": "47.500",
             "caidi": "47.500"}
OUTAGES = [("A", "2026-12-01T23:00:00Z", "2026-12-02T00:20:00Z", "80.000", ""),
           ("B", "2026-12-01T23:30:00Z", "2026-12-02T00:10:00Z", "40.000", ""),
           ("C", "2026-12-02T23:58:00Z", "2026-12-03T00:02:00Z", "4.000", ""),
           ("D", "2026-12-03T12:00:00Z", "2026-12-03T12:30:00Z", "30.000", ""),
           ("D", "2026-12-03T23:50:00Z", "2026-12-04T00:00:00Z", "10.000", "end")]


def text(row: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, ...]:
    """The fields as text, times as ISO with Z, numbers with three decimals (as each door
    writes them: JSON numbers, ISO times with +00:00 or Z)."""
    def one(value: Any) -> str:
        if isinstance(value, float):
            return str(D(str(value)).quantize(D("0.001")))
        if isinstance(value, str) and len(value) >= 20 and value[10] == "T":
            return datetime.fromisoformat(value).strftime("%Y-%m-%dT%H:%M:%SZ")
        return str(value)

    return tuple(one(row[k]) for k in keys)


class OutagePeriodCliTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.db = "sqlite:" + self.mktemp() + ".sqlite"
        store = SqliteStore(self.db[len("sqlite:"):], reactor)
        await store.open()
        await store.write(THREE_DAYS)
        await store.close()
        csv = Path(self.mktemp() + ".csv")
        csv.write_text(NETWORK, encoding="utf-8")
        result = fep_main("--db", self.db, "areas", "import", str(csv))
        self.assertEqual(result.returncode, 0, result.stderr)

    def rows(self, *args: str) -> list[dict[str, Any]]:
        result = fep_main("--db", self.db, "outages", "--area", "T1", "--format", "json",
                          *args)
        self.assertEqual(result.returncode, 0, result.stderr)
        return [json.loads(line) for line in result.stdout.splitlines()]

    def test_since_until_gives_the_periods_outages_and_indices(self) -> None:
        rows = self.rows("--since", "2026-12-01", "--until", "2026-12-04")
        [period] = [r for r in rows if r["record"] == "period"]
        self.assertEqual([period[k] for k in ("since", "until", "days", "stored_days",
                                              "computed_days")],
                         ["2026-12-01", "2026-12-04", 3, 0, 3])
        self.assertEqual([text(r, ("meter", "since", "until", "minutes", "cut"))
                          for r in rows if r["record"] == "outage"], OUTAGES)
        [area] = [r for r in rows if r["record"] == "area-outage"]
        self.assertEqual(text(area, ("area", "since", "until", "minutes", "meters")),
                         ("T1", "2026-12-01T23:30:00Z", "2026-12-02T00:10:00Z", "40.000",
                          "A B"))
        [index] = [r for r in rows if r["record"] == "indices"]
        self.assertEqual({k: text(index, (k,))[0] for k in THE_PERIOD},
                         {k: str(v) for k, v in THE_PERIOD.items()})

    def test_a_month_as_a_table(self) -> None:
        result = fep_main("--db", self.db, "outages", "--month", "2026-12", "--area", "T1")
        self.assertEqual(result.returncode, 0, result.stderr)
        for title in ("period (until excluded):", "outages per meter:", "area outages:",
                      "indices of the period (momentary: 5m or less):"):
            self.assertIn(title, result.stdout)
        self.assertIn("2026-12-01 2027-01-01 31", " ".join(result.stdout.split()))
        [index] = [r for r in self.rows("--month", "2026-12") if r["record"] == "indices"]
        self.assertEqual({k: text(index, (k,))[0] for k in THE_MONTH},
                         {k: str(v) for k, v in THE_MONTH.items()})

    async def test_major_event_days(self) -> None:
        """--exclude-med with the stored history of test_outage_period.store_history:
        T_MED 15.064, 12-01 a major event day, and the indices without it; without a
        history the threshold is missing and said so."""
        result = fep_main("--db", self.db, "outages", "--since", "2026-12-01", "--until",
                          "2026-12-04", "--area", "T1", "--exclude-med")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("no major event day threshold", result.stderr)
        store = SqliteStore(self.db[len("sqlite:"):], reactor)
        await store.open()
        try:
            await store_history(store)
        finally:
            await store.close()
        rows = self.rows("--since", "2026-12-01", "--until", "2026-12-04", "--exclude-med")
        [period] = [r for r in rows if r["record"] == "period"]
        self.assertEqual((text(period, ("t_med",)), period["history_days"],
                          period["major_event_days"]), (("15.064",), 6, "2026-12-01"))
        [without] = [r for r in rows if r["record"] == "indices-excluding-med"]
        self.assertEqual(text(without, ("sustained", "momentary", "customer_minutes",
                                        "saifi", "saidi", "caidi", "maifi")),
                         ("2", "1", "40.000", "0.500", "10.000", "20.000", "0.250"))
        result = fep_main("--db", self.db, "outages", "--day", "2026-12-01", "--exclude-med")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--exclude-med is for a period", result.stderr)

    def test_period_errors(self) -> None:
        for args, message in (
                (("--since", "2026-01-01", "--until", "2027-01-03"), "at most 366"),
                (("--since", "2026-12-04", "--until", "2026-12-01"), "empty"),
                (("--since", "2026-12-01"), "--since and --until go together"),
                (("--day", "2026-12-01", "--month", "2026-12"), "give one of"),
                ((), "give one of"),
                (("--month", "12"), "not a month")):
            result = fep_main("--db", self.db, "outages", *args)
            self.assertEqual(result.returncode, 2, (args, result.stderr))
            self.assertIn(message, result.stderr)


class OutagePeriodApiTests(unittest.TestCase):
    async def setUp(self) -> None:
        ctx = await make_context(self, [Meter(m, "dlms", "tcp:10.0.0.1:4059")
                                        for m in "SABCD"])
        self.ctx = ctx
        await ctx.store.write(THREE_DAYS)
        await AnalysisStore(ctx.store).save_network(areas.read_csv(NETWORK))
        port = reactor.listenTCP(0, site(ctx, TokenFile.parse(TOKENS), FepMetrics.create()),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}/api/v1/"

    async def get(self, path: str, status: int = 200) -> dict[str, Any]:
        r = await http(self.base + path, token=VIEWER_TOKEN)
        self.assertEqual(r.status, status, (path, r.body))
        body: dict[str, Any] = r.json()
        return body

    async def test_since_until(self) -> None:
        """Every customer of the network (no area): the members A-D, S being a summary."""
        body = await self.get("outages?since=2026-12-01&until=2026-12-04")
        self.assertEqual((body["since"], body["until"], body["days"], body["stored"],
                          body["computed_days"]), ("2026-12-01", "2026-12-04", 3, [], 3))
        self.assertEqual([text(o, ("meter", "since", "until", "minutes", "cut"))
                          for o in body["outages"]], OUTAGES)
        self.assertEqual([text(a, ("area", "since", "minutes")) for a in body["areas"]],
                         [("T1", "2026-12-01T23:30:00Z", "40.000")])
        self.assertEqual({k: body["indices"][k] for k in THE_PERIOD}, THE_PERIOD)

    async def test_month(self) -> None:
        body = await self.get("outages?month=2026-12&area=T1")
        self.assertEqual((body["since"], body["until"], body["days"]),
                         ("2026-12-01", "2027-01-01", 31))
        self.assertEqual({k: body["indices"][k] for k in THE_MONTH}, THE_MONTH)

    async def test_major_event_days(self) -> None:
        """The three days: 12-01 a major event day. Over December, D's last outage is
        whole (40 minutes), so 12-03's SAIDI is (30 + 40)/4 = 17.5, above T_MED too: only
        C's momentary interruption is left."""
        await store_history(self.ctx.store)
        body = await self.get("outages?since=2026-12-01&until=2026-12-04&area=T1"
                              "&exclude_med=yes")
        self.assertEqual((body["t_med"], body["history_days"], body["major_event_days"]),
                         ("15.064", 6, ["2026-12-01"]))
        self.assertEqual({k: body["indices_excluding_med"][k] for k in ("sustained", "saidi")},
                         {"sustained": 2, "saidi": "10.000"})
        self.assertNotIn("indices_excluding_med",
                         await self.get("outages?month=2026-12&area=T1"))
        found = await self.viewer().outages(month="2026-12", area="T1", exclude_med=True)
        self.assertIn("T_MED 15.064, major event days 2026-12-01 2026-12-03, without them "
                      "SAIFI 0.000, SAIDI 0.000, CAIDI None, MAIFI 0.250", found.title)

    def viewer(self) -> Any:
        from fep.operator.manhole import OperatorCommands

        return OperatorCommands(self.ctx, "watch", "SHA256:w", "viewer")

    async def test_errors(self) -> None:
        for path, status in (("outages?since=2026-01-01&until=2027-01-03", 400),
                             ("outages?since=2026-12-04&until=2026-12-01", 400),
                             ("outages?since=2026-12-01", 400),
                             ("outages?day=2026-12-01&month=2026-12", 400),
                             ("outages?month=12", 400),
                             ("outages?month=2026-12&area=T9", 404)):
            body = await self.get(path, status)
            self.assertIn("error", body)
        body = await self.get("outages?since=2026-01-01&until=2027-01-03", 400)
        self.assertIn("at most 366 days", str(body["error"]))

    async def test_through_the_console(self) -> None:
        from fep.operator.commands import CommandRefused
        from fep.operator.manhole import OperatorCommands

        viewer = OperatorCommands(self.ctx, "watch", "SHA256:w", "viewer")
        found = await viewer.outages(since="2026-12-01", until="2026-12-04", area="T1")
        self.assertEqual([(r["record"], r["meter"], str(r["minutes"])) for r in found.rows],
                         [("outage", o[0], o[3]) for o in OUTAGES]
                         + [("area-outage", "T1", "40.000")])
        self.assertIn("2026-12-01..2026-12-04 (excluded), 3 days (0 stored): 5 outages, "
                      "1 area outages; customers 4, SAIFI 1.000, SAIDI 40.000, CAIDI 40.000, "
                      "MAIFI 0.250", found.title)
        month = await viewer.outages(month="2026-12", area="T1")
        self.assertIn("SAIDI 47.500", month.title)
        for kwargs in ({"since": "2026-12-01"}, {"day": "2026-12-01", "month": "2026-12"},
                       {"since": "2026-01-01", "until": "2027-01-03"},
                       {"month": "2026-12", "area": "T9"}):
            with self.assertRaises(CommandRefused):
                await viewer.outages(**kwargs)
