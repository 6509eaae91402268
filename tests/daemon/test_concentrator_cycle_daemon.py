"""Acceptance (issue 18, concentrator jobs over dial-in): five simulated Q/GDW 1376.1
concentrators with ``METERS`` meters each dial in to the running daemon's GPRS listener
(identification rule ``gw3761``); one cycle of a load-profile task stores every meter's
daily frozen energy and 96-point curve of the day exactly once over the five sessions (no
connection per meter); a concentrator that drops its session mid-cycle logs in again and its
job is finished on the retry, without storing anything twice.

The full figure, 5 concentrators x 200 meters (``CONCENTRATORS`` x ``METERS``), runs in 6 to
8 s on two busy cores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.gw3761.records import DEFAULT_TERMINAL_TZ
from fep.sim.concentrator import ConcentratorFactory, make_concentrator
from tests.daemon.harness import Daemon, add_meters, free_port, sqlite_rows, wait_for, write_config
from tests.inprocess import fep_main

CONCENTRATORS = 5
METERS = 200
TARIFFS = 5
INTERVALS = 96
# This one hangs up after its second answer (the first 64 points' daily values and curves).
DROPS = 3


def the_day() -> tuple[datetime, datetime]:
    """Yesterday in the concentrators' zone (UTC+8), as UTC [since, until)."""
    today = datetime.now(DEFAULT_TERMINAL_TZ).date()
    start = datetime.combine(today - timedelta(days=1), datetime.min.time(),
                             DEFAULT_TERMINAL_TZ)  # fmt: skip
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


class ConcentratorCycleOverGprsTests(unittest.TestCase):
    timeout = 300

    async def test_five_concentrators_dial_in_and_one_cycle_stores_every_day_once(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        url = f"sqlite:{db}"
        sims, meters = [], []
        for i in range(1, CONCENTRATORS + 1):
            address = f"4403:{i:04X}"
            sim = make_concentrator(METERS, address, first_meter=f"{i * 1000:012d}")
            sims.append(sim)
            dcu = f"DCU{i}"
            meters.append(Meter(dcu, "gw3761", f"gprs:dcu=4403-{i:04X}", address=address))
            meters += [Meter(f"{dcu}-M{p}", "dlt645", f"gw3761:{dcu}", address=m.address,
                             metadata={"concentrator": dcu, "point": str(p)})
                       for p, m in enumerate(sim.meters, 1)]  # fmt: skip
        await add_meters(url, meters)
        since, until = the_day()
        added = fep_main("--db", url, "tasks", "add", "daily", "--kind", "load-profile",
                         "--schedule", "every 1d", "--start", "2200-01-01T00:00Z",
                         "--retries", "3", "--retry-delay", "2", "--deadline", "1h",
                         "-o", f"since={since.isoformat()}", "-o", f"until={until.isoformat()}")
        self.assertEqual(added.returncode, 0, added.stderr)
        gprs_port = free_port()
        config = write_config(
            workdir, url, push_port=0, period=3600, default_task=False,
            collect_extra="poll = 0.2\n",
            extra=(f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"
                   "identify = ascii gw3761\nunknown = reject\nidle_timeout = 300\n"
                   "[control]\nenabled = no\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.ready(timeout=120)

        factories = []
        for i, sim in enumerate(sims, 1):
            factory = ConcentratorFactory(sim, reactor, dials=True, heartbeat=60,
                                          hang_up_after=2 if i == DROPS else 0)
            # It dials again when its connection is lost, as concentrators do.
            dialer = ClientService(TCP4ClientEndpoint(reactor, "127.0.0.1", gprs_port),
                                   factory, retryPolicy=backoffPolicy(0.2, 1.0, 1.5))
            dialer.startService()
            self.addCleanup(dialer.stopService)
            factories.append(factory)
        await daemon.logged("attached to DCU", 60, count=CONCENTRATORS)

        run = fep_main("--db", url, "tasks", "run-now", "daily")
        self.assertIn(f"{CONCENTRATORS} jobs to run now", run.stdout, run.stderr)
        total = CONCENTRATORS * (METERS + 1)

        async def ended() -> bool:
            (n,), = sqlite_rows(db, "SELECT count(*) FROM jobs WHERE task = 'daily' AND "
                                    "status IN ('done', 'failed', 'missed')")
            return n >= total

        await wait_for(ended, 240, f"{total} jobs to end", every=0.5)
        states = sqlite_rows(db, "SELECT status, count(*) FROM jobs GROUP BY status")
        self.assertEqual(states, [("done", total)],
                         sqlite_rows(db, "SELECT meter, error FROM jobs WHERE status <> 'done'"
                                         " LIMIT 5"))  # fmt: skip
        children = CONCENTRATORS * METERS

        def stored() -> tuple[int, int]:
            (intervals,), = sqlite_rows(db, "SELECT count(*) FROM intervals")
            (readings,), = sqlite_rows(
                db, "SELECT count(*) FROM readings WHERE meter LIKE 'DCU%-M%'")
            return intervals, readings

        async def committed() -> bool:
            intervals, readings = stored()
            return intervals >= children * INTERVALS and readings >= children * TARIFFS

        # A job is done once its records are in the spool; the store commits them in its
        # next batches (on a loaded machine a little later).
        await wait_for(committed, 60, "every meter's day in the store", every=0.5)
        self.assertEqual(stored(), (children * INTERVALS, children * TARIFFS))
        # One session per concentrator; the one that hung up logged in again, once.
        self.assertEqual([f.connections for f in factories],
                         [2 if i == DROPS else 1 for i in range(1, CONCENTRATORS + 1)])
        # The one that hung up: its job failed its first attempt, the concentrator logged in
        # again, and the retry asked only what was left (as many requests as a clean cycle).
        attempts = dict(sqlite_rows(db, "SELECT meter, attempts FROM jobs WHERE meter LIKE "
                                        "'DCU_'"))  # fmt: skip
        retried = attempts.pop(f"DCU{DROPS}")  # 2, or more if it had not logged in yet
        self.assertGreaterEqual(retried, 2)
        self.assertEqual(set(attempts.values()), {1})
        await daemon.logged(f"attached to DCU{DROPS} (gw3761)", 30, count=2)
        # At most one request more than a clean cycle: the one in flight when it hung up
        # (received and counted by the concentrator, its answer lost). Fewer is possible on
        # a loaded machine, where a clean cycle's request can time out and go again.
        clean = max(s.requests for n, s in enumerate(sims, 1) if n != DROPS)
        self.assertLessEqual(sims[DROPS - 1].requests, clean + 1)
        # Each meter behind it has its job: read at the first attempt or at the retry.
        behind = dict(sqlite_rows(db, "SELECT meter, attempts FROM jobs WHERE meter IN "
                                      f"('DCU{DROPS}-M64', 'DCU{DROPS}-M65')"))  # fmt: skip
        self.assertEqual(behind, {f"DCU{DROPS}-M64": 1, f"DCU{DROPS}-M65": retried})
