"""`fep outages` on a store (SQLite file): the issue 21 acceptance through the store and the
command line.

Area T1 has a summary meter S and 50 members M00-M49. M00-M29 send a power-down event at
10:00 and a power-up at 10:40 on 2026-12-01; M40 flags its 15-minute intervals 12:00 and
12:15 power down (no events): 30 minutes from the flags. M45 was down since 23:00 the day
before and comes up at 00:02: 2 minutes in the day, cut at the start, so sustained.

Per meter: 30 outages of 40 min, M40's 30 min, M45's 2 min. The area: 30 of 50 out at
once from 10:00 to 10:40: one area outage of 40 min. Indices over the 50 customers (S is a
summary meter, no customer): sustained 32, customer minutes 30·40 + 30 + 2 = 1232;
SAIFI 32/50 = 0.64, SAIDI 1232/50 = 24.64 min, CAIDI 1232/32 = 38.5 min, MAIFI 0. With
--momentary 3m nothing changes (M45's 2 minutes are cut, so sustained); with --area T9: an
error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from fep.model import EventKind, IntervalBlock, MeterEvent, ObisCode, Quality, Severity
from fep.store.sqlite import SqliteStore
from tests.inprocess import fep_main

CHANNEL = ObisCode(1, 0, 1, 29, 0)
Q15 = timedelta(minutes=15)
DAY = datetime(2026, 12, 1, tzinfo=UTC)
MEMBERS = [f"M{i:02}" for i in range(50)]


def event(meter: str, kind: EventKind, at: datetime) -> MeterEvent:
    return MeterEvent(meter, str(kind), kind, Severity.MAJOR, at)


class OutagesCliTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.db = "sqlite:" + self.mktemp() + ".sqlite"
        store = SqliteStore(self.db[len("sqlite:"):], reactor)
        await store.open()
        records: list = []
        for m in MEMBERS[:30]:
            records += [event(m, EventKind.POWER_OUTAGE, DAY + timedelta(hours=10)),
                        event(m, EventKind.POWER_RESTORED, DAY + timedelta(hours=10, minutes=40))]
        status = [Quality.POWER_DOWN if i in (48, 49) else Quality.OK for i in range(96)]
        records.append(IntervalBlock("M40", CHANNEL, DAY, Q15, (D(10),) * 96,
                                     statuses=tuple(status)))
        records += [event("M45", EventKind.POWER_OUTAGE, DAY - timedelta(hours=1)),
                    event("M45", EventKind.POWER_RESTORED, DAY + timedelta(minutes=2)),
                    # the day after: not in the day
                    event("M46", EventKind.POWER_OUTAGE, DAY + timedelta(days=1, hours=1))]
        await store.write(records)
        await store.close()
        csv = Path(self.mktemp() + ".csv")
        csv.write_text("area,meter,role,direction\nT1,,,\nT1,S,summary,in\n"
                       + "".join(f"T1,{m},member,\n" for m in MEMBERS), encoding="utf-8")
        result = fep_main("--db", self.db, "areas", "import", str(csv))
        self.assertEqual(result.returncode, 0, result.stderr)

    def outages(self, *more: str) -> list[dict]:
        result = fep_main("--db", self.db, "outages", "--day", "2026-12-01", "--format",
                          "json", *more)
        self.assertEqual(result.returncode, 0, result.stderr)
        return [json.loads(line) for line in result.stdout.splitlines()]

    def test_outages_per_meter_per_area_and_the_indices(self) -> None:
        rows = self.outages()
        meters = [r for r in rows if r["record"] == "outage"]
        self.assertEqual(len(meters), 32)
        self.assertEqual({(r["since"], r["until"], r["source"]) for r in meters
                          if r["meter"] < "M30"},
                         {("2026-12-01T10:00:00Z", "2026-12-01T10:40:00Z", "events")})
        by_meter = {r["meter"]: r for r in meters}
        self.assertEqual((by_meter["M40"]["since"], by_meter["M40"]["until"],
                          by_meter["M40"]["source"]),
                         ("2026-12-01T12:00:00Z", "2026-12-01T12:30:00Z", "flags"))
        self.assertEqual((by_meter["M45"]["since"], by_meter["M45"]["until"],
                          by_meter["M45"]["cut"]),
                         ("2026-12-01T00:00:00Z", "2026-12-01T00:02:00Z", "start"))
        [area] = [r for r in rows if r["record"] == "area-outage"]
        self.assertEqual((area["area"], area["since"], area["until"], area["out"],
                          area["members"]),
                         ("T1", "2026-12-01T10:00:00Z", "2026-12-01T10:40:00Z", 30, 50))
        self.assertEqual(D(str(area["minutes"])), D(40))
        [index] = [r for r in rows if r["record"] == "indices"]
        self.assertEqual((index["customers"], index["sustained"], index["momentary"]),
                         (50, 32, 0))
        self.assertEqual([D(str(index[k])) for k in ("customer_minutes", "saifi", "saidi",
                                                      "caidi", "maifi")],
                         [D(1232), D("0.64"), D("24.64"), D("38.5"), D(0)])

    def test_a_table_with_the_three_sections(self) -> None:
        result = fep_main("--db", self.db, "outages", "--day", "2026-12-01", "--area", "T1",
                          "--momentary", "3m")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("outages per meter:", result.stdout)
        self.assertIn("area outages:", result.stdout)
        self.assertIn("indices (momentary: 3m or less):", result.stdout)
        self.assertIn("24.640", result.stdout)

    def test_an_unknown_area_is_an_error(self) -> None:
        result = fep_main("--db", self.db, "outages", "--day", "2026-12-01", "--area", "T9")
        self.assertEqual(result.returncode, 2)
        self.assertIn("no area 'T9'", result.stderr)

    def test_csv_the_three_tables_and_a_higher_share(self) -> None:
        """With --share 70% the 30 of 50 (60 %) out at once are no area outage; csv prints
        the three tables one after the other, each with its header."""
        result = fep_main("--db", self.db, "outages", "--day", "2026-12-01", "--share", "70%",
                          "--format", "csv")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0], "meter,since,until,minutes,source,cut")
        self.assertEqual(lines[33], "area,since,until,minutes,out,peak,members,meters")
        self.assertEqual(lines[34], "customers,sustained,momentary,customer_minutes,saifi,"
                         "saidi,caidi,maifi")
        self.assertEqual(lines[35], "50,32,0,1232.000,0.640,24.640,38.500,0.000")
