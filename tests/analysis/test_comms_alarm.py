"""The daily alarm of an area whose collection success rate is below its target
(``analysis:comms-rate``, jobs.comms_alarms, raised by the analysis service's ``comms``).

Pure: T1 (summary S) 9 of 10 jobs ok, 90.00 % below 98.00 %: an alarm on S; T2 (summary S2)
at 100 % none; F1 below but without a summary meter to carry it: none; a meter's row: none.
Through the service (SQLite and PostgreSQL, a fake clock): T1's S, A and B each ok at 01:00
and failing at 02:00 on 2026-12-01: 3 of 6, 50.00 %: one alarm on S at the day's start."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from fep.analysis import areas, jobs
from fep.analysis.comms import CommsReport, CommsRow
from fep.analysis.daemon import AnalysisService
from fep.analysis.settings import VeeSettings
from fep.analysis.store import AnalysisStore
from fep.collect.jobstore import JobStore
from fep.model import Meter, MeterEvent, Severity
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.analysis.test_comms_cli import job
from tests.analysis.test_daemon import Sink, settings, wait_for
from tests.postgres import fresh_database

T0 = datetime(2026, 12, 1, tzinfo=UTC)
NETWORK = areas.read_csv("area,name,kind,parent,meter,role\nF1,,feeder,,,\nT1,,,F1,,\n"
                         "T2,,,F1,,\nT1,,,,S,summary\nT1,,,,A,member\nT1,,,,B,member\n"
                         "T2,,,,S2,summary\n")


class CommsAlarmTests(unittest.TestCase):
    def test_areas_below_the_target(self) -> None:
        report = CommsReport(D("0.98"), [
            CommsRow("area", "F1", 20, 18, 2, D("0.9"), True),
            CommsRow("area", "T1", 10, 9, 1, D("0.9"), True),
            CommsRow("area", "T2", 10, 10, 0, D(1), False),
            CommsRow("meter", "A", 5, 4, 1, D("0.8"), True)], [])
        (alarm,) = jobs.comms_alarms(report, NETWORK, T0)
        self.assertEqual((alarm.meter, alarm.code, alarm.severity, alarm.time, alarm.text),
                         ("S", "analysis:comms-rate", Severity.MINOR, T0,
                          "area T1: collection success 90.00 % below the target 98.00 % "
                          "(9 of 10 jobs ok)"))


class ServiceAlarmBehaviours:
    def new_store(self) -> Any:
        raise NotImplementedError

    async def test_the_service_raises_it(self) -> None:
        store = self.new_store()
        await store.open()
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        await store.add_meters([Meter(m, "dlms", "tcp:10.0.0.1:4059") for m in "SAB"])
        await JobStore(store).add_jobs([job(m, h, h == 1) for h in (1, 2) for m in "SAB"],
                                       T0.timestamp())
        await AnalysisStore(store).save_network(NETWORK)
        clock = Clock()
        clock.advance(datetime(2026, 12, 2, 1, 0, tzinfo=UTC).timestamp())
        sink = Sink()
        service = AnalysisService(clock, store, settings(analyses="comms"), VeeSettings(),
                                  sink)
        await service.startService()
        clock.advance(3600)
        await wait_for(lambda: service.runs == 1 and service._running is None)
        self.addCleanup(service.stopService)  # type: ignore[attr-defined]
        alarms = [(e.meter, e.code, e.time, e.text) for e in sink.records
                  if isinstance(e, MeterEvent)]
        self.assertEqual(alarms, [("S", "analysis:comms-rate", T0,
                                   "area T1: collection success 50.00 % below the target "
                                   "98.00 % (3 of 6 jobs ok)")])
        (run,) = await AnalysisStore(store).runs(date(2026, 12, 1), date(2026, 12, 2))
        self.assertEqual((run.analysis, run.summary["alarms"]), ("comms", 1))


class SqliteServiceAlarmTests(ServiceAlarmBehaviours, unittest.TestCase):
    def new_store(self) -> SqliteStore:
        return SqliteStore(self.mktemp() + ".sqlite", reactor)


class PostgresServiceAlarmTests(ServiceAlarmBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)
