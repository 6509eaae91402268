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

The service listens to the collection engine (ICollectionListener, wired by fep.service):

- after re-collection: intervals or events of a past day that has been analysed, collected
  since its analysis started (gap re-collection), make the day analysed again (the day as a
  whole: its summaries and outages are kept per day), ``reanalyse_delay`` seconds after the
  last such collection, at most ``reanalyse_days`` days a run, the oldest first; what waits
  is kept in ``analysis_pending`` so a restart loses none;
- after the day's collection (``after = collection``): the day's run starts when the
  engine's load-profile runs after midnight have ended (fep.collect.daycollection), ``at``
  being the latest start.

One run at a time: the day's, or a re-analysis; each analysis of a day recorded with its
reason (``scheduled``, ``collection``, ``missed``, ``re-collection``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from fep.analysis import jobs, rules
from fep.analysis.comms import DEFAULT_TARGET, percent
from fep.analysis.series import day_bounds
from fep.analysis.settings import RULE_NAMES, VeeSettings, _decimal
from fep.analysis.store import AnalysisStore, Pending, RunRecord, StoredOutage
from fep.collect.daycollection import day_collected
from fep.interfaces import ICollectionListener, IJobStore, IRecordSink
from fep.model import EventKind, MeterEvent, Severity
from fep.options import (
    Option,
    Section,
    choice,
    expects,
    non_negative_float,
    positive_int,
    text,
    words,
    yes_no,
)

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
    after: str
    reanalyse: bool
    reanalyse_delay: float
    reanalyse_days: int


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
    "after": Option(choice("time", "collection"), "time", "when the day's run starts: time "
                    "(at `at`), or collection (when the collection engine's load-profile "
                    "runs after midnight have ended; `at` the latest start)"),
    "reanalyse": Option(yes_no, True, "analyse a day again when intervals or events of it "
                        "are collected again after its analysis"),
    "reanalyse_delay": Option(non_negative_float, "300", "seconds after the last such "
                              "re-collection the re-analysis starts"),
    "reanalyse_days": Option(positive_int, 7, "days re-analysed at most in one run (the "
                             "oldest first; the rest in the next)"),
}, AnalysisSection)

# Reasons of a run (analysis_runs.reason).
SCHEDULED, COLLECTION, MISSED, RECOLLECTION = ("scheduled", "collection", "missed",
                                               "re-collection")
# Seconds a burst of job ends is gathered before the day's collection is looked at.
COLLECTION_CHECK = 5.0


def vee_alarm(finding: Any) -> MeterEvent:
    """The alarm event of a VEE finding: code ``analysis:vee:FINDING``, minor."""
    details = " ".join(f"{k}={v}" for k, v in sorted(finding.details.items()))
    return MeterEvent(meter=finding.meter, code=VEE_ALARM + finding.rule,
                      kind=EventKind.OTHER, severity=Severity.MINOR, time=finding.since,
                      text=f"{finding.rule} {finding.obis} {finding.since:%Y-%m-%d %H:%M}-"
                           f"{finding.until:%H:%M} {details}".strip(), source="analysis")


def _ended(d: Deferred[None]) -> Deferred[None]:
    """Fires once ``d`` has, leaving its result to its own callbacks."""
    waiting: Deferred[None] = Deferred()

    def passed(result: object) -> object:
        waiting.callback(None)
        return result

    d.addBoth(passed)
    return waiting


@implementer(ICollectionListener)
class AnalysisService(service.Service):
    """Runs the analyses each day at ``settings.at`` on ``clock`` (or after the day's
    collection, told by the collection engine whose job store is ``jobs``), and again for
    the days re-collected since; stops once the analysis under way ended (the others of
    the run are left for the next)."""

    def __init__(self, clock: IReactorTime, store: Any, settings: AnalysisSection,
                 vee: VeeSettings, sink: IRecordSink, jobs: IJobStore | None = None) -> None:
        self.clock = clock
        self.store = store
        self.settings = settings
        self.vee = vee
        self.sink = sink
        self.jobs = jobs
        self.analysis = AnalysisStore(store, now=self._now)
        self._call: IDelayedCall | None = None
        self._running: Deferred[None] | None = None
        self.runs = 0
        # The day's run is due (and why); the date of the last day's run started.
        self._daily_due: str | None = None
        self._daily_on: date | None = None
        # after = collection: the next look at the day's collection.
        self._check: IDelayedCall | None = None
        self._looking: Deferred[None] | None = None
        # Re-collected days waiting for their analysis: day -> meter -> last noted; those
        # not kept in the store yet; the debounced start of their run.
        self.pending: Pending = {}
        self._unsaved: list[tuple[date, str, datetime]] = []
        self._saving: Deferred[None] | None = None
        self._reanalyse: IDelayedCall | None = None
        self._reanalyse_due = False
        self.reanalyses = 0

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
        after_collection = self.settings.after == "collection"
        if self.settings.reanalyse:
            try:
                for day, meters in (await self.analysis.pending()).items():
                    self.pending.setdefault(day, {}).update(meters)
            except Exception:  # started all the same; the next `at` covers `days` days
                log.failure("analysis: cannot read the days waiting for re-analysis")
            if self.pending:
                log.info("analysis: {n} re-collected days wait for their analysis",
                         n=len(self.pending))
                self._debounce()
        if now >= today_at or after_collection:
            try:
                done = {r.analysis for r in await self.analysis.runs(last, now.date())}
            except Exception:  # the daemon starts all the same; the next run is on time
                log.failure("analysis: cannot tell whether {day} was analysed", day=last)
                done = set(self.settings.analyses)
            if set(self.settings.analyses) <= done:
                self._daily_on = now.date()
            elif now >= today_at:
                log.info("analysis of {day} not run yet: running it now", day=last)
                self._daily_due = MISSED
                self._call = self.clock.callLater(0, self._next)
                return
            else:
                self._look_soon(0)
        self._schedule()

    def _schedule(self) -> None:
        """The day's run at the next ``at`` (the latest start, after = collection)."""
        if not self.running or (self._call is not None and self._call.active()):
            return
        now = self._now()
        delay = (self.next_run(now) - now).total_seconds()
        self._call = self.clock.callLater(delay, self._at)

    def _at(self) -> None:
        self._call = None
        if self._daily_on == self._now().date():
            self._schedule()  # started already today, after the day's collection
            return
        self._daily_due = SCHEDULED
        self._next()

    def _next(self) -> None:
        """Start what is due, one run at a time: the day's first, then a re-analysis."""
        if not self.running or self._running is not None:
            return
        if self._call is not None and not self._call.active():
            self._call = None
        today = self._now().date()
        if self._daily_due is not None:
            reason, self._daily_due = self._daily_due, None
            self._daily_on = today
            work = self.run(today, reason)
        elif self._reanalyse_due:
            self._reanalyse_due = False
            work = self.reanalyse(today)
        else:
            self._schedule()
            return
        self._running = Deferred.fromCoroutine(work)
        self._running.addErrback(lambda f: log.failure("analysis run failed", f))

        def done(_: object) -> None:
            self._running = None
            self._next()

        self._running.addBoth(done)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for call in (self._call, self._check, self._reanalyse):
            if call is not None and call.active():
                call.cancel()
        self._call = self._check = self._reanalyse = None
        return Deferred.fromCoroutine(self._stopped())

    async def _stopped(self) -> None:
        """Once the analysis under way and the write of what was noted ended."""
        for d in (self._running, self._looking, self._saving):
            if d is not None:
                await _ended(d)

    # -- the collection engine's news (ICollectionListener) ------------------------------

    def collected(self, kind: str, days: Mapping[str, Sequence[date]]) -> None:
        """Past days collected again are noted for their re-analysis (those not analysed
        yet, or whose analysis started after, are dropped when it is due)."""
        if not self.settings.reanalyse:
            return
        now = self._now()
        noted = 0
        for meter, found in days.items():
            for day in found:
                if day >= now.date():
                    continue
                self.pending.setdefault(day, {})[meter] = now
                self._unsaved.append((day, meter, now))
                noted += 1
        if noted:
            self._save()
            self._debounce()

    def job_ended(self, task: str | None, kind: str, due: float, status: str) -> None:
        """A load-profile job's end: the day's collection may be over (after =
        collection), looked at once the burst of ends is over."""
        if kind == "load-profile" and self.settings.after == "collection":
            self._look_soon(COLLECTION_CHECK)

    def _debounce(self) -> None:
        """The re-analysis ``reanalyse_delay`` seconds after the last re-collection."""
        if not self.running:
            return
        if self._reanalyse is not None and self._reanalyse.active():
            self._reanalyse.reset(self.settings.reanalyse_delay)
        else:
            self._reanalyse = self.clock.callLater(self.settings.reanalyse_delay,
                                                   self._reanalyse_now)

    def _reanalyse_now(self) -> None:
        self._reanalyse = None
        self._reanalyse_due = True
        self._next()

    def _save(self) -> None:
        """Keep what was noted in the store, one write at a time."""
        if self._saving is not None or not self._unsaved:
            return
        notes, self._unsaved = self._unsaved, []
        self._saving = self.analysis.note_pending(notes)
        self._saving.addErrback(lambda f: log.failure(
            "analysis: {n} re-collected days not kept (a restart before their analysis "
            "loses them)", f, n=len(notes)))

        def saved(_: object) -> None:
            self._saving = None
            self._save()

        self._saving.addBoth(saved)

    def _look_soon(self, delay: float) -> None:
        if (not self.running or self.jobs is None
                or self._daily_on == self._now().date()
                or (self._check is not None and self._check.active())):
            return
        self._check = self.clock.callLater(delay, self._look)

    def _look(self) -> None:
        self._check = None
        self._looking = Deferred.fromCoroutine(self._collection_over())
        self._looking.addErrback(lambda f: log.failure(
            "analysis: the day's collection not looked at", f))

        def looked(_: object) -> None:
            self._looking = None

        self._looking.addBoth(looked)

    async def _collection_over(self) -> None:
        """Whether the day's collection is over (fep.collect.daycollection): then the day's
        run starts, unless it ran already."""
        assert self.jobs is not None
        now = self._now()
        midnight = datetime.combine(now.date(), time(0), tzinfo=UTC)
        latest = datetime.combine(now.date(), self.settings.at, tzinfo=UTC)
        await self.jobs.flush()  # this node's latest job ends
        over = await day_collected(self.jobs, midnight.timestamp(), latest.timestamp())
        if over and self._daily_on != now.date() and self._daily_due is None:
            log.info("the day's collection ended: analysing the days before {day}",
                     day=now.date())
            self._daily_due = COLLECTION
            self._next()

    # -- runs ----------------------------------------------------------------------------

    async def run(self, today: date, reason: str = SCHEDULED) -> None:
        """Analyse the ``days`` days before ``today``, the oldest first. Stopped meanwhile,
        the analysis under way ends and the rest wait for the next run."""
        self.runs += 1
        started = self._now()
        days = [today - timedelta(days=back) for back in range(self.settings.days, 0, -1)]
        if await self._days(days, reason):
            # Days re-collected before this run started need no re-analysis of their own.
            covered = [d for d in days if d in self.pending
                       and max(self.pending[d].values()) < started]
            for d in covered:
                del self.pending[d]
            if covered:
                await self._clear(covered, started)

    async def _days(self, days: Sequence[date], reason: str) -> bool:
        """Each analysis of each day; False when stopped before the end."""
        for day in days:
            for name in self.settings.analyses:
                if not self.running:
                    log.info("analysis stopped before {analysis} of {day}", analysis=name,
                             day=day)
                    return False
                await self._one(day, name, getattr(self, f"_{name}"), reason)
        return True

    async def reanalyse(self, today: date) -> None:
        """Analyse again the days re-collected since their analysis started, at most
        ``reanalyse_days``, the oldest first (the rest in the next run). A day not analysed
        yet is left to its own run."""
        started = self._now()
        days = sorted(d for d in self.pending if d < today)[:self.settings.reanalyse_days]
        if not days:
            return
        self.reanalyses += 1
        try:
            runs = await self.analysis.runs(days[0], days[-1] + timedelta(days=1))
        except Exception:  # tried again after another delay
            log.failure("analysis: cannot tell which re-collected days were analysed")
            self._debounce()
            return
        analysed: dict[date, datetime] = {}
        for r in runs:
            analysed[r.day] = min(r.started_at, analysed.get(r.day, r.started_at))
        batch = {d: self.pending.pop(d) for d in days}
        wanted = [d for d in days if d in analysed
                  and max(batch[d].values()) > analysed[d]]
        if wanted:
            log.info("analysing again {days}: {meters} meters re-collected",
                     days=", ".join(map(str, wanted)),
                     meters=len({m for d in wanted for m in batch[d]}))
        finished = await self._days(wanted, RECOLLECTION)
        if not finished:  # stopped: what was not analysed waits (it is kept)
            for d in days:
                meters = self.pending.setdefault(d, {})
                for meter, at in batch[d].items():
                    meters[meter] = max(at, meters.get(meter, at))
            return
        await self._clear(days, started)
        if any(d < today for d in self.pending):
            self._debounce()

    async def _clear(self, days: Sequence[date], started: datetime) -> None:
        """Forget in the store what was noted of ``days`` before ``started``."""
        try:
            if self._saving is not None:  # what was noted is kept before it is cleared
                await _ended(self._saving)
            await self.analysis.clear_pending(days, started)
        except Exception:  # analysed once more after a restart: harmless
            log.failure("analysis: re-analysed days not cleared")

    async def _one(self, day: date, name: str,
                   work: Callable[[date], Awaitable[dict[str, Any]]],
                   reason: str = SCHEDULED) -> None:
        started = self._now()
        try:
            summary = await work(day)
        except Exception as e:  # recorded and logged; the others still run
            log.failure("analysis {analysis} of {day} failed", analysis=name, day=day)
            run = RunRecord(day, name, started, self._now(), False, {},
                            f"{type(e).__name__}: {e}", reason)
        else:
            log.info("analysis {analysis} of {day} ({reason}): {summary}", analysis=name,
                     day=day, summary=summary, reason=reason)
            run = RunRecord(day, name, started, self._now(), True, summary, None, reason)
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
