"""Acceptance: the real daemon (`twistd -n fep`, SQLite) with ``[analysis] enabled`` analyses
the days before on its own schedule, and the balance's and VEE's alarms reach the alarm
engine through the router: stored as alarms like any meter event.

``at = 00:00``: a daemon started at any time of the day finds yesterday not analysed yet and
runs at once (days = 2, so a start just before midnight still covers the day written). The
day of area T1, as in tests.analysis.test_daemon: loss 10.104 % above the band's 8 % (a
line-loss alarm on S) and one reverse interval of B (an alarm analysis:vee:reverse-energy)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import areas
from fep.analysis.store import AnalysisStore
from fep.model import IntervalBlock, Meter, ObisCode
from fep.store.sqlite import SqliteStore
from tests.daemon.harness import Daemon, sqlite_rows, wait_for, write_config

Q15 = timedelta(minutes=15)
CHANNEL = ObisCode(1, 0, 1, 29, 0)


class AnalysisDaemonTests(unittest.TestCase):
    timeout = 120

    async def test_the_daemon_runs_the_analyses_and_raises_their_alarms(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0,
                                        microsecond=0) - timedelta(days=1)
        store = SqliteStore(str(db), reactor)
        await store.open()
        b = [D(5)] * 96
        b[40] = D(-5)
        await store.add_meters([Meter(m, "dlms", "tcp:host=127.0.0.1:port=1") for m in "SAB"])
        await store.write([IntervalBlock("S", CHANNEL, day, Q15, (D(100),) * 96),
                           IntervalBlock("A", CHANNEL, day, Q15, (D(85),) * 96),
                           IntervalBlock("B", CHANNEL, day, Q15, tuple(b))])
        await AnalysisStore(store).save_network(areas.read_csv(
            "area,meter,role\nT1,,\nT1,S,summary\nT1,A,member\nT1,B,member\n"))
        await store.close()
        vee = workdir / "vee.ini"
        vee.write_text("[balance]\nlow = 0 %\nhigh = 8 %\n")
        config = write_config(workdir, f"sqlite:{db}", push_port=0, collect=False, extra=(
            f"[analysis]\nenabled = yes\nat = 00:00\ndays = 2\nvee = {vee}\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.ready()

        def alarms() -> list[tuple[str, str, str]]:
            return sorted((r[0], r[1], r[2]) for r in sqlite_rows(
                db, "SELECT meter, code, severity FROM alarms"))

        async def raised() -> bool:
            return len(alarms()) >= 2

        await wait_for(raised, 60, "the analysis alarms")
        self.assertEqual(alarms(), [("B", "analysis:vee:reverse-energy", "minor"),
                                    ("S", "analysis:line-loss", "major")])

        async def recorded() -> bool:
            return len(sqlite_rows(db, "SELECT 1 FROM analysis_runs WHERE day = '"
                                   f"{day.date().isoformat()}'")) == 4

        await wait_for(recorded, 60, "the day's four analyses recorded")
        self.assertEqual(sqlite_rows(db, "SELECT analysis, ok FROM analysis_runs WHERE day = "
                                     f"'{day.date().isoformat()}' ORDER BY analysis"),
                         [("balance", 1), ("comms", 1), ("outages", 1), ("vee", 1)])
        self.assertEqual(await daemon.interrupt(), 0)
