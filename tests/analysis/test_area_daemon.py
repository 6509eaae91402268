"""Acceptance (issue 21): the simulated area of tests.analysis.test_area_balance collected by
the real daemon (`twistd -n fep`) from simulated DLMS meters, then analysed and read back
through the command line, on SQLite and PostgreSQL.

51 simulated meters (a summary meter SUM and 50 members, each on its own loopback port of
the test's reactor) serve the store-level test's load as their load profile
(`fep.sim.dlms_meter.IntervalTable`, register 1.0.1.29.0.255): members random 40..160 Wh per
15 minutes (fixed seed), SUM ``round(consumption / 0.96)``, M17 recording nothing on the
last day. M05 withholds 3 intervals and M06 32 on the third day. The meters come from a
meter-list file (`fep meters import`), the area from `fep areas import`; a load-profile
task over the four fixed days (its ``since``/``until`` options: nothing depends on today's
date) is run by the daemon's collection engine; `fep vee run` and `fep balance` analyse the
days. Then the meters give what they withheld, the task runs again, and its jobs read only
the gaps (the engine's gap re-collection): the balance uses the real values at once."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.protocols.dlms.server import ServerSettings
from fep.sim.dlms import DlmsMeterServerFactory
from fep.sim.dlms_meter import IntervalTable, SimulatedDlmsMeter
from fep.store import open_store
from tests.analysis.test_area_balance import (
    BYPASS_DAY,
    DAYS,
    GAP_DAY,
    LONG_GAP,
    MEMBERS,
    Q15,
    SHORT_GAP,
    areas_csv,
    midnight,
    recorded,
    true_load,
)
from tests.collect.harness import listen
from tests.daemon.harness import Daemon, committed, wait_for, write_config
from tests.inprocess import fep_main
from tests.operator.helpers import VIEWER_TOKEN, http, write_tokens
from tests.postgres import fresh_database

METERS = ["SUM", *MEMBERS]
SINCE, UNTIL = midnight(DAYS[0]), midnight(DAYS[-1]) + timedelta(days=1)
# The store-level test's settings (test_area_balance.SETTINGS) as the vee.ini file the
# command line reads: members at most 1 kWh per interval, the summary meter unlimited.
VEE_INI = ("[vee]\nsimilar_days = 2\nmax_interpolate = 4\n"
           "[rules:default]\nhigh = 1000\nspike_factor = 10\nspike_floor = 1000\n"
           "[rules:summary]\nhigh = none\n"
           "[balance]\nlow = 2 %\nhigh = 5 %\n")


class Area:
    """What the simulated meters record: the load of test_area_balance, less the intervals
    M05 and M06 withhold until `give_all`."""

    def __init__(self) -> None:
        self.load = true_load()
        self.withheld = {(meter, midnight(GAP_DAY) + i * Q15)
                         for meter, gap in (SHORT_GAP, LONG_GAP) for i in gap}

    def energy(self, meter: str) -> Any:
        def of(start: datetime) -> int | None:
            day = start.date()
            if start < SINCE or start >= UNTIL or (meter, start) in self.withheld:
                return None
            return recorded(self.load, meter, day)[(start - midnight(day)) // Q15]

        return of

    def give_all(self) -> None:
        self.withheld.clear()

    def day_sums(self, day: date) -> tuple[D, D]:
        """The day's input and consumption as the meters record them."""
        use = sum(sum(recorded(self.load, m, day)) for m in MEMBERS)
        return D(sum(recorded(self.load, "SUM", day))), D(use)


def meter_list(ports: dict[str, int]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "protocol", "route", "group"])
    for meter in METERS:
        writer.writerow([meter, "dlms", f"tcp:host=127.0.0.1:port={ports[meter]}",
                         "summary" if meter == "SUM" else ""])
    return out.getvalue()


class AreaThroughTheDaemonBehaviours:
    """The scenario, on whichever store ``store_url`` gives."""

    timeout = 300

    def store_url(self, workdir: Path) -> str:
        raise NotImplementedError

    def fep(self, *args: str) -> Any:
        done = fep_main("--db", self.url, *args)
        self.assertEqual(done.returncode, 0, done.stderr)
        return done

    def rows(self, *args: str) -> list[dict[str, Any]]:
        return [json.loads(line, parse_float=D) for line in self.fep(*args, "--format", "json")
                .stdout.splitlines() if line.strip()]

    def balance(self, day: date) -> tuple[dict[str, Any], str]:
        done = self.fep("balance", "--day", day.isoformat(), "--area", "T1",
                        "--vee", str(self.vee), "--format", "json")
        (row,) = [json.loads(line, parse_float=D) for line in done.stdout.splitlines()
                  if line.strip()]
        return row, done.stderr

    async def api_balance(self, day: date, *, stored: bool = False) -> Any:
        query = f"day={day.isoformat()}&area=T1" + ("&stored=yes" if stored else "")
        answer = await http(f"{self.api}/balance?{query}", token=VIEWER_TOKEN)
        self.assertEqual(answer.status, 200, answer.body)
        return json.loads(answer.body)

    async def profile_jobs_done(self, count: int) -> list[dict[str, Any]]:
        """Wait until ``count`` jobs of the task "profile" have ended; all of them."""
        ended: list[dict[str, Any]] = []

        async def all_ended() -> bool:
            ended[:] = [j for j in self.rows("jobs", "--task", "profile", "--limit", "500")
                        if j["status"] in ("done", "failed", "missed")]
            return len(ended) >= count

        await wait_for(all_ended, 180, f"{count} profile jobs to end", every=0.5)
        return ended

    async def test_loss_bypass_and_estimates_replaced_by_re_collected_values(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        self.url = self.store_url(workdir)
        area = Area()
        # The meters' clocks stand at the end of the last day: their profiles hold the
        # four days and nothing after.
        ports = {}
        for meter in METERS:
            sim = SimulatedDlmsMeter(serial=meter, now=lambda: UNTIL,
                                     intervals=IntervalTable(area.energy(meter)))
            ports[meter] = listen(self, DlmsMeterServerFactory(sim, ServerSettings()))
        (workdir / "meters.csv").write_text(meter_list(ports))
        (workdir / "areas.csv").write_text(areas_csv())
        self.vee = workdir / "vee.ini"
        self.vee.write_text(VEE_INI)
        self.fep("meters", "import", str(workdir / "meters.csv"))
        self.fep("areas", "import", str(workdir / "areas.csv"))
        # Run on demand only (its first run is far off); its window is the four days. The
        # meters answer from this process's reactor, which stands still while a `fep`
        # command of the test runs: a step timeout well above such a pause.
        self.fep("tasks", "add", "profile", "--kind", "load-profile", "--schedule", "every 1d",
                 "--start", "2200-01-01T00:00Z", "--retries", "2", "--retry-delay", "1",
                 "--deadline", "1h", "-o", f"since={SINCE.isoformat()}",
                 "-o", f"until={UNTIL.isoformat()}", "-o", "timeout=20")
        write_tokens(workdir / "tokens")
        config = write_config(
            workdir, self.url, push_port=0, period=3600, default_task=False,
            collect_extra="poll = 0.2\n",
            extra=(f"[http]\nlisten = tcp:0:interface=127.0.0.1\n"
                   f"tokens_file = {workdir / 'tokens'}\n"
                   f"[analysis]\nvee = {self.vee}\n[control]\nenabled = no\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.ready(timeout=120)
        self.api = f"http://127.0.0.1:{await daemon.bound_port('GuardedSite')}/api/v1"

        # The collection: every meter's four days, M05 and M06 less what they withhold.
        run = self.fep("tasks", "run-now", "profile")
        self.assertIn(f"{len(METERS)} jobs to run now", run.stdout)
        jobs = await self.profile_jobs_done(len(METERS))
        self.assertEqual({j["status"] for j in jobs}, {"done"},
                         [j for j in jobs if j["status"] != "done"][:3])
        # Every interval the meters gave (all but the 35 M05 and M06 withhold) committed.
        everything = len(METERS) * len(DAYS) * 96
        withheld = len(SHORT_GAP[1]) + len(LONG_GAP[1])
        await committed(self.url, "SELECT count(*) FROM intervals", everything - withheld)
        results = {j["meter"]: j["result"] for j in jobs}
        first = {j["id"] for j in jobs}
        self.assertIn("3 the meter did not give", results["M05"])
        self.assertIn("32 the meter did not give", results["M06"])

        # The analysis: VEE of each day (the gaps estimated on the third), then the balance.
        for day in DAYS:
            vee = self.fep("vee", "run", "--day", day.isoformat(), "--vee", str(self.vee))
            if day == GAP_DAY:
                self.assertIn("findings: missing 2;", vee.stdout)
                self.assertIn("interpolate 3", vee.stdout)
                self.assertIn("profile 32", vee.stdout)
        for day in DAYS[:2]:
            row, stderr = self.balance(day)
            # Complete days: the daemon stored exactly what the meters recorded.
            self.assertEqual((row["input"], row["consumption"]), area.day_sums(day))
            self.assertEqual((row["complete"], row["intervals"]), (100, 96))
            self.assertLess(abs(row["loss_rate"] - 4), D("0.2"))
            self.assertNotIn("alarm", stderr)
        bypassed, stderr = self.balance(BYPASS_DAY)
        self.assertGreater(bypassed["loss_rate"], 5)
        self.assertIn("alarm: area T1: loss", stderr)
        # The daemon's API shows the stored balance of the day with the area's alarm.
        (stored,) = (await self.api_balance(BYPASS_DAY, stored=True))["areas"]
        self.assertEqual((stored["area"], D(stored["loss_rate"])), ("T1", bypassed["loss_rate"]))
        self.assertIn("area T1: loss", stored["alarm"])
        estimated, _ = self.balance(GAP_DAY)
        self.assertEqual(estimated["complete"], 96)
        self.assertGreater(estimated["estimated"], 0)
        self.assertLess(abs(estimated["loss_rate"] - 4), D("0.2"))
        series = self.rows("vee", "series", "--meter", "M06", "--day", GAP_DAY.isoformat(),
                           "--vee", str(self.vee))
        self.assertEqual(sum(1 for r in series if r["method"] == "profile"), len(LONG_GAP[1]))

        # The re-collection: the meters now give what they withheld; the task's next run
        # reads only the gaps, and at once the balance uses the real values.
        area.give_all()
        self.fep("tasks", "run-now", "profile")
        jobs = await self.profile_jobs_done(2 * len(METERS))
        self.assertEqual({j["status"] for j in jobs}, {"done"})
        await committed(self.url, "SELECT count(*) FROM intervals", everything)
        second = {j["meter"]: j["result"] for j in jobs if j["id"] not in first}
        self.assertEqual(second["M05"], "3 of 3 missing intervals read")
        self.assertEqual(second["M06"], "32 of 32 missing intervals read")
        self.assertEqual(second["M01"], "no interval missing")
        real, _ = self.balance(GAP_DAY)
        self.assertEqual((real["complete"], real["estimated"]), (100, 0))
        self.assertEqual((real["input"], real["consumption"]), area.day_sums(GAP_DAY))
        self.assertLess(abs(real["loss_rate"] - 4), D("0.2"))
        # And through the daemon's API, the balance computed from what it holds now.
        (answer,) = (await self.api_balance(GAP_DAY))["areas"]
        keys = ("input", "consumption", "complete", "estimated", "loss_rate")
        self.assertEqual({k: D(str(answer[k])) for k in keys}, {k: D(str(real[k])) for k in keys})
        self.assertIsNone(answer["alarm"])
        again = self.fep("vee", "run", "--day", GAP_DAY.isoformat(), "--vee", str(self.vee))
        self.assertIn("estimates: none", again.stdout)
        self.assertNotIn("missing", again.stdout)
        series = self.rows("vee", "series", "--meter", "M06", "--day", GAP_DAY.isoformat(),
                           "--vee", str(self.vee))
        self.assertEqual([(D(r["value"]), r["method"]) for r in series],
                         [(D(v), "") for v in recorded(area.load, "M06", GAP_DAY)])
        self.assertEqual(await daemon.interrupt(), 0)

        # The bypass day's alarm is stored as an event on the area's summary meter.
        store = open_store(self.url, reactor)
        await store.open()
        try:
            events = await store.events("SUM")
        finally:
            await store.close()
        self.assertEqual([(e.code, e.time) for e in events],
                         [("analysis:line-loss", midnight(BYPASS_DAY))])


class SqliteAreaThroughTheDaemonTests(AreaThroughTheDaemonBehaviours, unittest.TestCase):
    def store_url(self, workdir: Path) -> str:
        return f"sqlite:{workdir / 'fep.sqlite'}"


class PostgresAreaThroughTheDaemonTests(AreaThroughTheDaemonBehaviours, unittest.TestCase):
    def store_url(self, workdir: Path) -> str:
        return fresh_database(self)
