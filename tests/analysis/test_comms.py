"""Communication analysis (fep.analysis.comms, jobs.run_comms): success rates per scope
against the target, the meters below it with their last error, and suspected outages from
communication loss, with hand-worked figures.

The fleet: feeder F1 with transformer areas T1 (members M1, M2) and T2 (member M3); M2 is
behind the concentrator C1; routes: M1 and C1 ``tcp:``, M2 ``serial:``, M3 ``gprs:``.
Job outcomes of the period:

- M1: 50 jobs, 49 ok, 1 failed (``timeout``): 49/50 = 98.00 %, at the target: not below;
- M2: 10 jobs, 9 ok, 1 failed (``concentrator C1 did not answer``): 90.00 %;
- M3: 4 jobs, 2 ok, failed at 01:00 (``connection refused``) and 03:00 (``no answer``):
  50.00 %, its last error ``no answer``;
- C1: 1 job, ok.

All: 65 jobs, 61 ok: 61/65 = 93.846 -> 93.85 %. Areas: T1 = M1 + M2 = 58/60 = 96.67 %;
T2 = 2/4 = 50.00 %; F1 = 60/64 = 93.75 %. Channels: tcp (M1, C1) 50/51 = 98.04 %, not below;
serial 9/10 = 90.00 %; gprs 50.00 %. Concentrator C1 (M2's jobs): 90.00 %. Below the target,
worst first: M3, then M2."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis import areas, jobs
from fep.analysis.comms import JobOutcome, analyse, silent_areas
from fep.analysis.store import AnalysisStore
from fep.collect.jobstore import JobStore
from fep.collect.tasks import Job
from fep.model import Meter
from fep.store.postgres import PostgresStore
from fep.store.sqlite import SqliteStore
from tests.postgres import fresh_database

T0 = datetime(2026, 12, 1, tzinfo=UTC)
H = timedelta(hours=1)
NETWORK = areas.read_csv(
    "area,kind,parent,meter\nF1,feeder,,\nT1,transformer,F1,\nT2,transformer,F1,\n"
    "T1,,,M1\nT1,,,M2\nT2,,,M3\n")
ROUTES = {"M1": "tcp:10.0.0.1:4059", "C1": "tcp:10.0.0.9:4059", "M2": "serial:/dev/ttyS0",
          "M3": "gprs:imei=1"}


def outcome(meter: str, n: int, ok: bool, error: str | None = None) -> JobOutcome:
    return JobOutcome(meter, ROUTES[meter], "daily", T0 + n * H, T0 + n * H + timedelta(
        minutes=1), ok, "done" if ok else "failed", error)


def fleet() -> list[JobOutcome]:
    out = [outcome("M1", 0, False, "timeout")] + [outcome("M1", 0, True)] * 49
    out += [outcome("M2", 0, False, "concentrator C1 did not answer")]
    out += [outcome("M2", 0, True)] * 9
    out += [outcome("M3", 1, False, "connection refused"), outcome("M3", 2, True),
            outcome("M3", 3, False, "no answer"), outcome("M3", 4, True)]
    return [*out, outcome("C1", 0, True)]


class AnalyseTests(unittest.TestCase):
    def test_rates_per_scope_and_the_meters_below_the_target(self) -> None:
        report = analyse(fleet(), network=NETWORK, concentrators={"M2": "C1"})
        self.assertEqual(
            [(r.scope, r.key, r.jobs, r.ok, r.as_dict()["rate"], r.below) for r in report.rows],
            [("all", "all", 65, 61, D("93.85"), True),
             ("area", "F1", 64, 60, D("93.75"), True),
             ("area", "T1", 60, 58, D("96.67"), True),
             ("area", "T2", 4, 2, D("50.00"), True),
             ("channel", "gprs", 4, 2, D("50.00"), True),
             ("channel", "serial", 10, 9, D("90.00"), True),
             ("channel", "tcp", 51, 50, D("98.04"), False),
             ("concentrator", "C1", 10, 9, D("90.00"), True),
             ("meter", "C1", 1, 1, D("100.00"), False),
             ("meter", "M1", 50, 49, D("98.00"), False),
             ("meter", "M2", 10, 9, D("90.00"), True),
             ("meter", "M3", 4, 2, D("50.00"), True)])
        self.assertEqual([(m.meter, m.as_dict()["rate"], m.last_error, m.last_failed)
                          for m in report.below],
                         [("M3", D("50.00"), "no answer", T0 + 3 * H + timedelta(minutes=1)),
                          ("M2", D("90.00"), "concentrator C1 did not answer",
                           T0 + timedelta(minutes=1))])

    def test_a_route_several_meters_share_is_a_scope(self) -> None:
        """A bus: B1 and B2 on one serial line (``serial:/dev/ttyS1``), B1 4 of 4 ok and B2
        1 of 4: the line 5 of 8 = 62.50 %, below the target; M1's own route is no row of
        its own (it would repeat M1's)."""
        line = "serial:/dev/ttyS1:2400:8E1"
        out = [JobOutcome("B1", line, "daily", T0, T0 + H, True, "done", None)] * 4
        out += [JobOutcome("B2", line, "daily", T0, T0 + H, n == 0, "done" if n == 0
                           else "failed", None if n == 0 else "no answer") for n in range(4)]
        out += [outcome("M1", 0, True)]
        report = analyse(out)
        routes = [(r.key, r.jobs, r.ok, r.as_dict()["rate"], r.below) for r in report.rows
                  if r.scope == "route"]
        self.assertEqual(routes, [(line, 8, 5, D("62.50"), True)])
        self.assertEqual([r.scope for r in report.rows],
                         ["all", "channel", "channel", "route", "meter", "meter", "meter"])

    def test_the_target_is_configurable(self) -> None:
        """At 90 %, M2 (90.00 %) is no longer below (below means under the target)."""
        report = analyse(fleet(), network=NETWORK, concentrators={"M2": "C1"},
                         target=D("0.9"))
        self.assertEqual([m.meter for m in report.below], ["M3"])
        self.assertEqual(report.as_dict()["target"], D("90.00"))


def cycle(meter: str, hour: int, ok: bool) -> JobOutcome:
    return JobOutcome(meter, "tcp:x:1", "daily", T0 + hour * H,
                      T0 + hour * H + timedelta(minutes=5), ok, "done" if ok else "failed")


SILENT_NETWORK = areas.read_csv(
    "area,kind,parent,meter,role\nF1,feeder,,,\nT1,transformer,F1,,\nF1,,,FS,summary\n"
    "T1,,,S1,summary\nT1,,,A,member\nT1,,,B,member\n")


class SilentAreaTests(unittest.TestCase):
    """T1 (summary S1, members A, B) read every hour. Cycle 01:00: all ok. 02:00 and 03:00:
    all three fail. 04:00: A and S1 fail, B answers at 04:05. A suspected outage from 02:00
    (the first silent cycle) to 04:05 (the first answer), over 2 cycles."""

    def outcomes(self) -> list[JobOutcome]:
        out = [cycle(m, 1, True) for m in ("S1", "A", "B")]
        out += [cycle(m, h, False) for h in (2, 3) for m in ("S1", "A", "B")]
        return [*out, cycle("S1", 4, False), cycle("A", 4, False), cycle("B", 4, True)]

    def test_silent_cycles_open_and_an_answer_closes(self) -> None:
        (found,) = silent_areas(self.outcomes(), SILENT_NETWORK)
        self.assertEqual((found.area, found.since, found.until, found.cycles, found.meters),
                         ("T1", T0 + 2 * H, T0 + 4 * H + timedelta(minutes=5), 2,
                          ("A", "B", "S1")))

    def test_an_area_whose_summary_meter_answers_is_not_silent(self) -> None:
        """The members fail at 02:00 but the summary meter answers: no suspected outage."""
        out = [cycle("S1", 2, True), cycle("A", 2, False), cycle("B", 2, False)]
        self.assertEqual(silent_areas(out, SILENT_NETWORK), [])

    def test_a_cycle_that_missed_a_meter_does_not_open_one(self) -> None:
        """Only A and B were read at 02:00 (no job of S1), both failed: not every meter of the
        area was tried, so no suspected outage."""
        out = [cycle("A", 2, False), cycle("B", 2, False)]
        self.assertEqual(silent_areas(out, SILENT_NETWORK), [])

    def test_still_silent_is_open_and_feeders_are_not_reported(self) -> None:
        """Everything fails at 02:00, FS too: T1 is open (until None); F1, a feeder whose
        only meter failed, is not a transformer area."""
        out = [cycle(m, 2, False) for m in ("FS", "S1", "A", "B")]
        (found,) = silent_areas(out, SILENT_NETWORK)
        self.assertEqual((found.area, found.since, found.until), ("T1", T0 + 2 * H, None))


def job(meter: str, due: datetime, status: str, error: str | None = None,
        task: str | None = "daily", command: int | None = None) -> Job:
    end = (due + timedelta(minutes=5)).timestamp()
    return Job(id=0, meter=meter, kind="registers", route=ROUTES.get(meter, "tcp:x:1"),
               resource=meter, due=due.timestamp(), run_at=due.timestamp(), task=task,
               status=status, finished_at=end, error=error, command=command)


class CommsStoreBehaviours:
    def new_store(self) -> Any:
        raise NotImplementedError

    async def open(self) -> Any:
        store = self.new_store()
        await store.open()
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        return store

    async def test_run_comms_from_the_job_store(self) -> None:
        """The day's ended jobs: M1 done at 01:00 and failed at 02:00 (``timeout``), M2
        (behind C1) missed at 01:00, M3 done; a command's job and one still pending, and a
        job that ended the day after, do not count. All: 2 of 4 ok, 50.00 %; T1 (M1, M2)
        1 of 3, 33.33 %; C1 0 of 1."""
        store = await self.open()
        await store.add_meters([Meter("M1", "dlms", ROUTES["M1"]),
                                   Meter("C1", "gw3761", ROUTES["C1"]),
                                   Meter("M2", "dlt645", ROUTES["M2"],
                                         metadata={"concentrator": "C1"}),
                                   Meter("M3", "dlms", ROUTES["M3"])])
        await AnalysisStore(store).save_network(NETWORK)
        await JobStore(store).add_jobs([
            job("M1", T0 + H, "done"), job("M1", T0 + 2 * H, "failed", "timeout"),
            job("M2", T0 + H, "missed", "concentrator C1 failed"),
            job("M3", T0 + H, "done"),
            job("M3", T0 + 3 * H, "failed", "refused", task=None, command=7),
            job("M3", T0 + 4 * H, "pending"),
            job("M1", T0 + 24 * H, "failed", "late"),
        ], T0.timestamp())
        report = await jobs.run_comms(store, T0, T0 + 24 * H)
        rows = {(r.scope, r.key): (r.jobs, r.ok, r.as_dict()["rate"]) for r in report.rows}
        self.assertEqual(rows[("all", "all")], (4, 2, D("50.00")))
        self.assertEqual(rows[("area", "T1")], (3, 1, D("33.33")))
        self.assertEqual(rows[("concentrator", "C1")], (1, 0, D("0.00")))
        self.assertEqual([(m.meter, m.last_error) for m in report.below],
                         [("M2", "concentrator C1 failed"), ("M1", "timeout")])
        only_t2 = await jobs.run_comms(store, T0, T0 + 24 * H, area="T2")
        self.assertEqual([(r.scope, r.key) for r in only_t2.rows],
                         [("all", "all"), ("area", "F1"), ("area", "T2"), ("channel", "gprs"),
                          ("meter", "M3")])

    async def test_suspected_outages_are_stored_and_closed(self) -> None:
        """T2's only meter M3 fails at 01:00 and 02:00: a suspected outage from 01:00, open
        after the first run; M3 answers at 05:00 (done 05:05): the second run closes the
        same stored outage."""
        store = await self.open()
        await AnalysisStore(store).save_network(NETWORK)
        jobstore = JobStore(store)
        await jobstore.add_jobs([job("M3", T0 + H, "failed", "x"),
                                 job("M3", T0 + 2 * H, "failed", "x")], T0.timestamp())
        found = await jobs.run_silent_areas(store, T0, T0 + 3 * H)
        self.assertEqual([(s.area, s.since, s.until) for s in found], [("T2", T0 + H, None)])
        await jobstore.add_jobs([job("M3", T0 + 5 * H, "done")], T0.timestamp())
        await jobs.run_silent_areas(store, T0 + 3 * H, T0 + 6 * H)
        stored = await AnalysisStore(store).outages(T0, T0 + 24 * H, "comms")
        self.assertEqual([(o.subject, o.since, o.until, o.details) for o in stored],
                         [("T2", T0 + H, T0 + 5 * H + timedelta(minutes=5), {"cycles": 2})])

    async def test_an_outage_longer_than_the_lookback_keeps_its_start(self) -> None:
        """M3 fails each 6 hours from 01:00 on (01:00 ... 61:00); each run looks back 1 day.
        The run of the third day ([48:00, 72:00), looking back to 24:00) finds the silence
        from 25:00, its lookback's first cycle, but keeps the stored start (01:00): one
        outage, not two."""
        store = await self.open()
        await AnalysisStore(store).save_network(NETWORK)
        await JobStore(store).add_jobs([job("M3", T0 + (1 + 6 * n) * H, "failed", "x")
                                        for n in range(11)], T0.timestamp())
        await jobs.run_silent_areas(store, T0, T0 + 24 * H)
        await jobs.run_silent_areas(store, T0 + 48 * H, T0 + 72 * H)
        stored = await AnalysisStore(store).outages(T0, T0 + 72 * H, "comms")
        self.assertEqual([(o.subject, o.since, o.until) for o in stored],
                         [("T2", T0 + H, None)])


class SqliteCommsStoreTests(CommsStoreBehaviours, unittest.TestCase):
    def new_store(self) -> SqliteStore:
        return SqliteStore(self.mktemp() + ".sqlite", reactor)


class PostgresCommsStoreTests(CommsStoreBehaviours, unittest.TestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)

    def new_store(self) -> PostgresStore:
        return PostgresStore(self.url, reactor)
