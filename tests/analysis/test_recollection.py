"""Re-analysis after re-collection through the real collection engine: a simulated DLMS
meter A (its load profile a table, register 1.0.1.29.0.255) withholds one interval of the
day 2026-12-01, the engine's load-profile job stores the rest, the analysis service (a fake
clock, the engine's listener as fep/service.py wires it) analyses the day at 02:00 with that
interval estimated. At 10:00 the meter gives it (40 Wh), the engine re-collects the gap, and
five minutes later the day is analysed again: the estimate is gone and the balance of T1
changed, without waiting for the next ``at``.

T1: summary S 100 Wh every interval (stored directly), member A 85 Wh (40 Wh at 12:30).
Estimated at 85: loss 9600 - 8160 = 1440 = 15.000 %; real: 9600 - 8115 = 1485 = 15.469 %."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from fep.analysis import areas
from fep.analysis.daemon import AnalysisService
from fep.analysis.store import AnalysisStore
from fep.cli.collect import recollect_job
from fep.collect.engine import resource_policy
from fep.model import IntervalBlock, Meter, ObisCode
from fep.protocols.dlms.server import ServerSettings
from fep.sim.dlms import DlmsMeterServerFactory
from fep.sim.dlms_meter import IntervalTable, SimulatedDlmsMeter
from tests.analysis.test_daemon import VEE, Sink, settings, wait_for
from tests.collect.harness import engine_for, jobs_ended, listen
from tests.postgres import fresh_database

Q15 = timedelta(minutes=15)
DAY = datetime(2026, 12, 1, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)
CHANNEL = ObisCode(1, 0, 1, 29, 0)
WITHHELD = DAY + 50 * Q15


class RecollectionBehaviours:
    url: str | None = None

    async def test_a_re_collected_gap_is_analysed_again_soon_after(self) -> None:
        withheld = True

        def energy(start: datetime) -> int | None:
            if start == WITHHELD:
                return None if withheld else 40
            return 85

        sim = SimulatedDlmsMeter(serial="A", now=lambda: NEXT,
                                 intervals=IntervalTable(energy))
        port = listen(self, DlmsMeterServerFactory(sim, ServerSettings()))
        meter = Meter("A", "dlms", f"tcp:host=127.0.0.1:port={port}")
        engine, store = await engine_for(self, [meter], url=self.url)
        await store.write([IntervalBlock("S", CHANNEL, DAY, Q15, (D(100),) * 96)])
        analysis = AnalysisStore(store)
        await analysis.save_network(areas.read_csv(
            "area,meter,role\nT1,,\nT1,S,summary\nT1,A,member\n"))
        clock = Clock()
        clock.advance((NEXT + timedelta(minutes=30)).timestamp())
        service = AnalysisService(clock, store, settings(analyses="vee, balance"), VEE,
                                  Sink(), jobs=engine.jobs)
        engine.listeners.append(service)
        await service.startService()
        self.addCleanup(service.stopService)  # type: ignore[attr-defined]

        async def recollect(count: int) -> Any:
            job = recollect_job(meter, DAY, NEXT, reactor.seconds(),
                                resource_policy(engine.settings), interval=900)
            await engine.jobs.add_jobs([job], reactor.seconds())
            engine.scheduler.kick()
            ended = await jobs_ended(engine, count)
            return max(ended, key=lambda j: j.id)

        # 00:30: the day's collection, the meter withholding 12:30. The day is not analysed
        # yet: what the job stored is left to the 02:00 run.
        first = await recollect(1)
        self.assertIn("95 of 96 missing intervals read; 1 the meter did not give",
                      first.result)
        clock.advance(90 * 60)  # 02:00
        await wait_for(lambda: service.runs == 1 and service._running is None)
        looked = service.reanalyses  # 00:35: the day was not analysed yet, nothing done
        self.assertEqual(await analysis.pending(), {})
        estimated = await analysis.estimates(["A"], str(CHANNEL), DAY, NEXT)
        self.assertEqual([e.start for e in estimated["A"]], [WITHHELD])
        (balance,) = await analysis.balances(DAY, NEXT)
        self.assertEqual(balance.loss_rate, D("15.000"))

        # 10:00: the meter gives the interval; the engine re-collects the gap.
        clock.advance(8 * 3600)
        withheld = False
        second = await recollect(2)
        self.assertIn("1 of 1 missing intervals read", second.result)
        await wait_for(lambda: bool(service.pending))
        clock.advance(299)
        self.assertEqual(service.reanalyses, looked)
        clock.advance(1)
        await wait_for(lambda: service.reanalyses == looked + 1 and service._running is None)
        self.assertEqual(await analysis.estimates(["A"], str(CHANNEL), DAY, NEXT), {})
        (balance,) = await analysis.balances(DAY, NEXT)
        self.assertEqual(balance.loss_rate, D("15.469"))
        runs = await analysis.runs(DAY.date(), NEXT.date())
        self.assertEqual({(r.analysis, r.reason) for r in runs},
                         {("vee", "re-collection"), ("balance", "re-collection")})


class SqliteRecollectionTests(RecollectionBehaviours, unittest.TestCase):
    timeout = 60


class PostgresRecollectionTests(RecollectionBehaviours, unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.url = fresh_database(self)
