"""Acceptance (issue 21), through the real daemon: an outage of 30 of an area's 50 meters for
40 minutes, simulated at the meters (power down, power up), collected by the daemon
(`twistd -n fep`, SQLite) with its normal event and load-profile jobs, gives one area outage
of 40 minutes, 30 meter outages of 40 minutes and the day's indices.

Area T1: a summary meter S and 50 members M00-M49, simulated DLMS meters served by the
test's reactor, their clocks on the test's own time on 2025-03-04 (UTC), imported with
`fep areas import`. At 10:00 M00-M29 lose power: each logs the standard event 1 (power
down) and answers nothing, so a read at 10:20 reaches the other 21 and the 30 fail. At 10:40
the power is back: each logs event 2 (power up), captures no load profile entry while it
was down (10:00, 10:15, 10:30) and flags its 10:45 entry (the interval from 10:30) with the
power-down status. At 11:00 an events task and a load-profile task for the day collect all
51 meters (the events twice: the second run stores nothing again).

`fep outages --day 2025-03-04` (analysed channel: the profile's 1-0:1.8.0*255, so its flags
count too) and `GET /api/v1/outages` of the daemon then give, worked by hand:

- per meter: M00-M29 each 10:00-10:40 = 40 min from the events (the flagged interval
  10:30-10:45 overlaps the event outage, so the exact events win); no other outage;
- the area: 30 of 50 members out at once = 60 % >= the 50 % share, from 10:00 (all go down
  together) to 10:40 (all come back together): one area outage of 40 min, 30 meters, peak 30;
- the indices over the 50 customers (S is a summary meter, no customer; IEEE 1366 as in
  fep.analysis.outages.indices): 30 interruptions of 40 min, each longer than the 5-minute
  momentary threshold, so sustained: SAIFI = Σ Nᵢ / N_T = 30/50 = 0.6; SAIDI = Σ rᵢ·Nᵢ / N_T
  = 30·40/50 = 1200/50 = 24 min; CAIDI = SAIDI / SAIFI = 1200/30 = 40 min; MAIFI = 0/50 = 0.

No date depends on today's: the meters' clocks are the test's, the tasks collect the fixed
day (options ``since``/``until``) and never run on their own (first run in 2200)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.dlms.server import ServerSettings
from fep.sim.dlms import DlmsMeterServerFactory
from fep.sim.dlms_meter import ACTIVE_IMPORT, SimulatedDlmsMeter
from tests.daemon.harness import (
    Daemon,
    add_meters,
    committed,
    free_port,
    sqlite_rows,
    wait_for,
    write_config,
)
from tests.inprocess import fep_main
from tests.operator.helpers import VIEWER_TOKEN, http, write_tokens

DAY = datetime(2025, 3, 4, tzinfo=UTC)
MEMBERS = [f"M{i:02}" for i in range(50)]
OUT = MEMBERS[:30]
DOWN, UP = DAY + timedelta(hours=10), DAY + timedelta(hours=10, minutes=40)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class SimulatedTime:
    """The meters' clock: the test moves it."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


class OutageThroughTheDaemonTests(unittest.TestCase):
    timeout = 180

    def serve(self, meter: SimulatedDlmsMeter) -> str:
        port = reactor.listenTCP(0, DlmsMeterServerFactory(meter, ServerSettings()),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"tcp:host=127.0.0.1:port={port.getHost().port}"

    def fep(self, *argv: str) -> str:
        result = fep_main("--db", self.url, *argv)
        self.assertEqual(result.returncode, 0, result.stderr)
        return str(result.stdout)

    async def cycle(self, task: str, meters: int) -> dict[str, list[str]]:
        """Run ``task`` now and wait for the run's jobs to end: its meters by final status."""
        (before,), = sqlite_rows(self.db, f"SELECT max(id) FROM jobs WHERE task = '{task}'",
                                 strict=True)
        before = before or 0
        self.assertIn(f"{meters} jobs to run now", self.fep("tasks", "run-now", task))
        mine = f"FROM jobs WHERE task = '{task}' AND id > {before}"

        async def ended() -> bool:
            (n,), = sqlite_rows(self.db, f"SELECT count(*) {mine} AND status IN "
                                "('done', 'failed', 'missed')")
            return bool(n >= meters)

        await wait_for(ended, 90, f"the {meters} jobs of {task} to end")
        by: dict[str, list[str]] = {}
        for meter, status in sqlite_rows(self.db, f"SELECT meter, status {mine} ORDER BY meter",
                                         strict=True):
            by.setdefault(status, []).append(meter)
        return by

    async def test_thirty_of_fifty_meters_out_for_forty_minutes(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        self.db = workdir / "fep.sqlite"
        self.url = f"sqlite:{self.db}"
        clock = SimulatedTime(DAY + timedelta(hours=9))
        sims = {m: SimulatedDlmsMeter(serial=f"FEP{n:07}", now=clock, daily_power_flag=False)
                for n, m in enumerate(["S", *MEMBERS])}
        await add_meters(self.url, [Meter(m, "dlms", self.serve(sim)) for m, sim in sims.items()])
        network = workdir / "areas.csv"
        network.write_text("area,meter,role\nT1,,\nT1,S,summary\n"
                           + "".join(f"T1,{m},member\n" for m in MEMBERS), encoding="utf-8")
        self.assertIn("1 areas and 51 meters imported", self.fep("areas", "import", str(network)))
        never = ("--schedule", "every 1d", "--start", "2200-01-01T00:00Z", "--retries", "0",
                 "-o", "timeout=20")
        the_day = ("-o", f"since={iso(DAY)}", "-o", f"until={iso(DAY + timedelta(days=1))}")
        self.fep("tasks", "add", "read", "--kind", "registers", *never)
        self.fep("tasks", "add", "events", "--kind", "events", *never, *the_day)
        self.fep("tasks", "add", "profile", "--kind", "load-profile", *never, *the_day)
        write_tokens(workdir / "tokens")
        http_port = free_port()
        config = write_config(
            workdir, self.url, push_port=0, period=3600, default_task=False,
            collect_extra="poll = 0.2\n",
            extra=f"[http]\nport = {http_port}\ntokens_file = {workdir / 'tokens'}\n")
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.ready()

        # 10:00: the supply of M00-M29 fails; at 10:20 they answer nothing.
        clock.t = DOWN
        for m in OUT:
            sims[m].power_down()
        clock.t = DOWN + timedelta(minutes=20)
        during = await self.cycle("read", 51)
        self.assertEqual((during.get("failed"), len(during.get("done", []))), (OUT, 21))

        # 10:40: the power is back; at 11:00 the day's events and load profile are collected.
        clock.t = UP
        for m in OUT:
            sims[m].power_up()
        clock.t = DAY + timedelta(hours=11)
        self.assertEqual(await self.cycle("events", 51), {"done": [*MEMBERS, "S"]})
        self.assertEqual(await self.cycle("profile", 51), {"done": [*MEMBERS, "S"]})
        # A later run reads the logs again: nothing is stored twice.
        self.assertEqual(await self.cycle("events", 51), {"done": [*MEMBERS, "S"]})
        await committed(self.url, "SELECT count(*) FROM events WHERE kind LIKE 'power-%'", 60)
        await committed(self.url, "SELECT count(*) FROM intervals WHERE obis = "
                        f"'{ACTIVE_IMPORT}' AND status & 32 <> 0", 30)

        self.assertEqual(sqlite_rows(self.db, "SELECT kind, time, count(*) FROM events WHERE "
                                     "kind LIKE 'power-%' GROUP BY kind, time ORDER BY time",
                                     strict=True),
                         [("power-outage", "2025-03-04T10:00:00.000000Z", 30),
                          ("power-restored", "2025-03-04T10:40:00.000000Z", 30)])
        flagged = sqlite_rows(self.db, "SELECT meter, start_time FROM intervals WHERE "
                              f"obis = '{ACTIVE_IMPORT}' AND status & 32 ORDER BY meter",
                              strict=True)
        self.assertEqual({m for m, _ in flagged}, set(OUT))
        self.assertEqual({t for _, t in flagged}, {"2025-03-04T10:30:00.000000Z"})

        # The analysis of the day, from the command line.
        vee = workdir / "vee.ini"
        vee.write_text(f"[vee]\nchannel = {ACTIVE_IMPORT}\n")
        rows = [json.loads(line) for line in self.fep(
            "outages", "--day", "2025-03-04", "--vee", str(vee), "--format", "json"
        ).splitlines()]
        outages = [r for r in rows if r["record"] == "outage"]
        self.assertEqual(sorted(r["meter"] for r in outages), OUT)
        self.assertEqual({(r["since"], r["until"], D(str(r["minutes"])), r["source"], r["cut"])
                          for r in outages}, {(iso(DOWN), iso(UP), D(40), "events", "")})
        [area] = [r for r in rows if r["record"] == "area-outage"]
        self.assertEqual((area["area"], area["since"], area["until"], D(str(area["minutes"])),
                          area["out"], area["peak"], area["members"], area["meters"]),
                         ("T1", iso(DOWN), iso(UP), D(40), 30, 30, 50, " ".join(OUT)))
        [index] = [r for r in rows if r["record"] == "indices"]
        self.assert_indices(index)
        self.assertEqual([r for r in rows if r["record"] == "suspected-outage"], [])

        # The same through the daemon's API.
        response = await http(f"http://127.0.0.1:{http_port}/api/v1/outages?day=2025-03-04"
                              "&area=T1", token=VIEWER_TOKEN)
        self.assertEqual(response.status, 200, response.body)
        body = json.loads(response.body)
        at = datetime.fromisoformat
        self.assertEqual(sorted((o["meter"], at(o["since"]), at(o["until"]), D(o["minutes"]))
                                for o in body["outages"]),
                         [(m, DOWN, UP, D(40)) for m in OUT])
        [api_area] = body["areas"]
        self.assertEqual((at(api_area["since"]), at(api_area["until"]), api_area["out"],
                          api_area["members"]), (DOWN, UP, 30, 50))
        self.assert_indices(body["indices"])
        self.assertEqual(await daemon.interrupt(), 0)

    def assert_indices(self, index: dict[str, Any]) -> None:
        self.assertEqual((index["customers"], index["sustained"], index["momentary"]),
                         (50, 30, 0))
        self.assertEqual([D(str(index[k])) for k in ("customer_minutes", "saifi", "saidi",
                                                      "caidi", "maifi")],
                         [D(1200), D("0.6"), D(24), D(40), D(0)])
