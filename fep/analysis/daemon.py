"""The analysis service: the daemon runs the day's analyses on a schedule (``[analysis]`` of
etc/fep.ini), after the collection window.

Each day at ``at`` (UTC), the ``days`` days before are analysed, the oldest first (two days:
yesterday, and the day before again so values re-collected since replace its estimates):
``vee`` (validation and estimation, ``fep vee run``), ``balance`` (``fep balance``),
``outages`` (``fep outages``, the day's outages stored), ``comms`` (the day's collection
success rate; suspected outages from communication loss stored). Each analysis of a day is
recorded in ``analysis_runs`` (its summary, or its error: one failing analysis does not
stop the others). Alarms (the balance's loss band; the VEE rules of ``vee_alarms``; each
area outage) are meter events submitted to the router, so the alarm engine classifies and
notifies them like any event. A daemon started after ``at`` whose last day was not
analysed yet runs at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from fep.analysis import jobs, rules
from fep.analysis.comms import DEFAULT_TARGET, percent
from fep.analysis.series import day_bounds
from fep.analysis.settings import RULE_NAMES, VeeSettings, _decimal
from fep.analysis.store import AnalysisStore, RunRecord, StoredOutage
from fep.interfaces import IRecordSink
from fep.model import EventKind, MeterEvent, Severity
from fep.options import Option, Section, expects, positive_int, text, words, yes_no

log = Logger(namespace="fep.analysis.daemon")

ANALYSES = ("vee", "balance", "outages", "comms")
VEE_ALARM = "analysis:vee:"
# The findings each rule of a rule set makes (etc/vee.ini names rules, findings name
# what they found).
FINDINGS_OF = {
    "missing": (rules.MISSING,), "limits": (rules.HIGH, rules.LOW), "spike": (rules.SPIKE,),
    "history": (rules.HISTORY_HIGH, rules.HISTORY_LOW), "zero": (rules.ZERO,),
    "reverse": (rules.REVERSE,), "register": (rules.REGISTER,),
    "duplicates": (rules.DUPLICATE, rules.SHIFTED), "rollover": (rules.ROLLOVER,),
    "status": (rules.POWER_DOWN, rules.CLOCK_INVALID),
    "clock": (rules.CLOCK_DEVIATION, rules.TIME_CHANGE), "meter-change": (rules.METER_CHANGE,),
}


@expects("a time of day HH:MM (UTC)")
def time_of_day(value: str) -> time:
    hours, sep, minutes = value.strip().partition(":")
    if not sep:
        raise ValueError(f"expected HH:MM, got {value!r}")
    return time(int(hours), int(minutes))


@expects("analyses among vee, balance, outages, comms")
def analyses(value: str) -> tuple[str, ...]:
    names = words(value)
    unknown = [n for n in names if n not in ANALYSES]
    if unknown:
        raise ValueError(f"unknown analysis {', '.join(unknown)}")
    return tuple(n for n in ANALYSES if n in names)


@expects("rule names (etc/vee.ini)")
def rule_names(value: str) -> tuple[str, ...]:
    names = words(value)
    unknown = [n for n in names if n not in RULE_NAMES]
    if unknown:
        raise ValueError(f"unknown rule {', '.join(unknown)}")
    return names


@expects("a share, e.g. 98 % or 0.98")
def share(value: str) -> Decimal:
    found = _decimal(value)
    if not 0 < found <= 1:
        raise ValueError(f"expected above 0 and at most 100 %, got {value!r}")
    return found


@attrs.frozen
class AnalysisSection:
    enabled: bool
    at: time
    days: int
    analyses: tuple[str, ...]
    areas: tuple[str, ...]
    groups: tuple[str, ...]
    vee: str
    vee_alarms: tuple[str, ...]
    target: Decimal
    edit_approval: bool


ANALYSIS = Section("analysis", {
    "enabled": Option(yes_no, False, "run the day's analyses on a schedule"),
    "at": Option(time_of_day, "02:00", "UTC time of day the days before are analysed "
                 "(after the collection window)"),
    "days": Option(positive_int, 2, "days analysed at each run: 1 yesterday; 2 the day "
                   "before too (re-collected values replace its estimates)"),
    "analyses": Option(analyses, "vee, balance, outages, comms", "which analyses run"),
    "areas": Option(words, "", "areas analysed (each with the areas below it); empty: all"),
    "groups": Option(words, "", "meter groups validated (meter list `group`); empty: all"),
    "vee": Option(text, "", "the vee.ini; empty: etc/vee.ini when present, else the "
                  "built-in defaults"),
    "vee_alarms": Option(rule_names, "reverse, register", "VEE rules whose findings "
                         "raise an alarm (analysis:vee:FINDING)"),
    "target": Option(share, "98 %", "the collection success-rate target"),
    "edit_approval": Option(yes_no, False, "operators' edits of values wait for another "
                            "operator's approval (four eyes)"),
}, AnalysisSection)


def vee_alarm(finding: Any) -> MeterEvent:
    """The alarm event of a VEE finding: code ``analysis:vee:FINDING``, minor."""
    details = " ".join(f"{k}={v}" for k, v in sorted(finding.details.items()))
    return MeterEvent(meter=finding.meter, code=VEE_ALARM + finding.rule,
                      kind=EventKind.OTHER, severity=Severity.MINOR, time=finding.since,
                      text=f"{finding.rule} {finding.obis} {finding.since:%Y-%m-%d %H:%M}-"
                           f"{finding.until:%H:%M} {details}".strip(), source="analysis")


class AnalysisService(service.Service):
    """Runs the analyses each day at ``settings.at`` on ``clock``; stops once the analysis
    under way ended (the others of the run are left for the next)."""

    def __init__(self, clock: IReactorTime, store: Any, settings: AnalysisSection,
                 vee: VeeSettings, sink: IRecordSink) -> None:
        self.clock = clock
        self.store = store
        self.settings = settings
        self.vee = vee
        self.sink = sink
        self.analysis = AnalysisStore(store, now=self._now)
        self._call: IDelayedCall | None = None
        self._running: Deferred[None] | None = None
        self.runs = 0

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), UTC)

    def next_run(self, now: datetime) -> datetime:
        """The first ``at`` after ``now``."""
        today = datetime.combine(now.date(), self.settings.at, tzinfo=UTC)
        return today if today > now else today + timedelta(days=1)

    def startService(self) -> Deferred[None]:
        super().startService()
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        now = self._now()
        last = now.date() - timedelta(days=1)
        today_at = datetime.combine(now.date(), self.settings.at, tzinfo=UTC)
        if now >= today_at:
            try:
                done = {r.analysis for r in await self.analysis.runs(last, now.date())}
            except Exception:  # the daemon starts all the same; the next run is on time
                log.failure("analysis: cannot tell whether {day} was analysed", day=last)
                done = set(self.settings.analyses)
            if not set(self.settings.analyses) <= done:
                log.info("analysis of {day} not run yet: running it now", day=last)
                self._call = self.clock.callLater(0, self._fire)
                return
        self._schedule()

    def _schedule(self) -> None:
        if not self.running:
            return
        now = self._now()
        delay = (self.next_run(now) - now).total_seconds()
        self._call = self.clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._call = None
        self._running = Deferred.fromCoroutine(self.run(self._now().date()))
        self._running.addErrback(lambda f: log.failure("analysis run failed", f))

        def done(_: object) -> None:
            self._running = None
            self._schedule()

        self._running.addBoth(done)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._running is not None:
            waiting: Deferred[None] = Deferred()
            self._running.addBoth(lambda _: waiting.callback(None))
            return waiting
        return succeed(None)

    async def run(self, today: date) -> None:
        """Analyse the ``days`` days before ``today``, the oldest first. Stopped meanwhile,
        the analysis under way ends and the rest wait for the next run."""
        self.runs += 1
        for back in range(self.settings.days, 0, -1):
            day = today - timedelta(days=back)
            for name in self.settings.analyses:
                if not self.running:
                    log.info("analysis stopped before {analysis} of {day}", analysis=name,
                             day=day)
                    return
                await self._one(day, name, getattr(self, f"_{name}"))

    async def _one(self, day: date, name: str,
                   work: Callable[[date], Awaitable[dict[str, Any]]]) -> None:
        started = self._now()
        try:
            summary = await work(day)
        except Exception as e:  # recorded and logged; the others still run
            log.failure("analysis {analysis} of {day} failed", analysis=name, day=day)
            run = RunRecord(day, name, started, self._now(), False, {},
                            f"{type(e).__name__}: {e}")
        else:
            log.info("analysis {analysis} of {day}: {summary}", analysis=name, day=day,
                     summary=summary)
            run = RunRecord(day, name, started, self._now(), True, summary, None)
        try:
            await self.analysis.save_run(run)
        except Exception:  # the store is down: logged, the next run retries
            log.failure("analysis {analysis} of {day}: its run could not be recorded",
                        analysis=name, day=day)

    def _areas(self) -> Sequence[str | None]:
        return list(self.settings.areas) or [None]

    async def _vee(self, day: date) -> dict[str, Any]:
        meters = 0
        findings: dict[str, int] = {}
        estimates: dict[str, int] = {}
        for area in self._areas():
            result = await jobs.run_vee(self.store, self.vee, day, area=area,
                                        groups=self.settings.groups or None,
                                        analysis=self.analysis)
            meters += result.meters
            for k, v in result.findings.items():
                findings[k] = findings.get(k, 0) + v
            for k, v in result.estimates.items():
                estimates[k] = estimates.get(k, 0) + v
        alarms = 0
        if self.settings.vee_alarms:
            since, until = day_bounds(day)
            wanted = {f for rule in self.settings.vee_alarms for f in FINDINGS_OF[rule]}
            events = [vee_alarm(f) for f in await self.analysis.findings(since, until)
                      if f.rule in wanted and since <= f.since < until]
            if events:
                await self.sink.submit(events)
            alarms = len(events)
        return {"meters": meters, "findings": findings, "estimates": estimates,
                "alarms": alarms}

    async def _balance(self, day: date) -> dict[str, Any]:
        areas = alarms = 0
        for area in self._areas():
            results = await jobs.run_balance(self.store, self.vee, day, area=area,
                                             sink=self.sink, analysis=self.analysis)
            areas += len(results)
            alarms += sum(1 for r in results if r.alarm is not None)
        return {"areas": areas, "alarms": alarms}

    async def _outages(self, day: date) -> dict[str, Any]:
        since, until = day_bounds(day)
        found: list[StoredOutage] = []
        sustained = momentary = 0
        network = await self.analysis.network()
        alarms: dict[tuple[str, datetime], MeterEvent] = {}
        for area in self._areas():
            report = await jobs.run_outages(self.store, self.vee, day, area=area,
                                            analysis=self.analysis)
            alarms.update(((e.text, e.time), e)
                          for e in jobs.area_outage_alarms(report, network, since))
            found += [StoredOutage("meter", o.meter, o.since, o.until, o.source, (o.meter,),
                                   {"cut": o.as_dict()["cut"]}) for o in report.outages]
            found += [StoredOutage("area", a.area, a.since, a.until, "meters", a.meters,
                                   {"peak": a.peak, "members": a.members})
                      for a in report.areas]
            sustained += report.indices.sustained
            momentary += report.indices.momentary
        unique = list({(o.kind, o.subject, o.since): o for o in found}.values())
        await self.analysis.save_outages(("meter", "area"), since, until, unique)
        if alarms:
            await self.sink.submit(list(alarms.values()))
        # "areas": what the stored day covers (empty: every area), for the periods'
        # indices (jobs.stored_outage_days).
        return {"outages": sum(1 for o in unique if o.kind == "meter"),
                "area_outages": sum(1 for o in unique if o.kind == "area"),
                "sustained": sustained, "momentary": momentary,
                "areas": list(self.settings.areas), "alarms": len(alarms)}

    async def _comms(self, day: date) -> dict[str, Any]:
        since, until = day_bounds(day)
        target = self.settings.target
        reports = [await jobs.run_comms(self.store, since, until, area=area, target=target,
                                        analysis=self.analysis)
                   for area in self._areas()]
        silent = await jobs.run_silent_areas(self.store, since, until, analysis=self.analysis)
        # An alarm per area below the target (once, however many configured areas hold it).
        network = await self.analysis.network()
        alarms = {e.text: e for rep in reports
                  for e in jobs.comms_alarms(rep, network, since)}
        if alarms:
            await self.sink.submit(list(alarms.values()))
        overall = [r for rep in reports for r in rep.rows if r.scope == "all"]
        jobs_count = sum(r.jobs for r in overall)
        ok = sum(r.ok for r in overall)
        rate = None if not jobs_count else Decimal(ok) / jobs_count
        return {"jobs": jobs_count, "ok": ok, "rate": str(percent(rate)),
                "target": str(percent(target or DEFAULT_TARGET)),
                "below": sum(len(rep.below) for rep in reports),
                "silent_areas": len(silent), "alarms": len(alarms)}
