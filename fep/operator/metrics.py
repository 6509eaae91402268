"""Prometheus metrics of one fep daemon, exposed by prometheus_client's Twisted resource on
the HTTP server (``/metrics``).

Counts kept elsewhere (router, activity, push receiver, alarms, northbound, scheduler) are
read at scrape time by a custom collector, so nothing is counted twice; store latency is
measured by wrapping the store (:class:`TimedStore`) in a real Histogram.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred
from zope.interface import implementer

from fep.interfaces import IStore
from fep.model import IntervalBlock, Meter, MeterEvent, Reading, Record
from fep.operator.context import OperatorContext
from fep.operator.stats import router_stats

STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class FepCollector(Collector):
    """Reads the daemon's counters at scrape time."""

    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        # prometheus_client's Twisted resource renders in a worker thread; the counters
        # belong to the reactor thread, so they are read there, all at once.
        from twisted.internet.threads import blockingCallFromThread
        from twisted.python.threadable import isInIOThread

        if isInIOThread() or not getattr(self.ctx.reactor, "running", False):
            yield from self.families()
        else:
            yield from blockingCallFromThread(self.ctx.reactor, self.families)

    def describe(self) -> list[Metric]:
        # Names are known only at scrape time; nothing to check at registration.
        return []

    def families(self) -> list[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        ctx = self.ctx
        sessions = GaugeMetricFamily(
            "fep_sessions", "Meter sessions open now, by channel and direction",
            labels=["channel", "direction"])
        counts: dict[tuple[str, str], int] = {}
        for s in ctx.live_sessions():
            key = (s.channel, s.direction)
            counts[key] = counts.get(key, 0) + 1
        for (channel, direction), n in sorted(counts.items()):
            sessions.add_metric([channel, direction], n)
        yield sessions

        reads = CounterMetricFamily(
            "fep_meter_reads", "Meter sessions finished, by protocol and outcome",
            labels=["protocol", "outcome"])
        for (protocol, outcome), n in sorted(ctx.activity.reads.items()):
            reads.add_metric([protocol, outcome], n)
        yield reads

        errors = CounterMetricFamily(
            "fep_protocol_errors", "Failed meter sessions by protocol and error type",
            labels=["protocol", "error"])
        for (protocol, error), n in sorted(ctx.activity.errors.items()):
            errors.add_metric([protocol, error], n)
        yield errors

        frames = CounterMetricFamily(
            "fep_push_frames", "Pushed frames received, by protocol and outcome",
            labels=["protocol", "outcome"])
        if ctx.push_stats is not None:
            for outcome, n in attrs.asdict(ctx.push_stats).items():
                frames.add_metric(["dlms", outcome], n)
        yield frames

        jobs = CounterMetricFamily("fep_jobs", "Jobs finished, by outcome", labels=["outcome"])
        if ctx.scheduler is not None:
            for outcome, n in sorted(ctx.scheduler.job_outcomes().items()):
                jobs.add_metric([outcome], n)
        else:
            # Until the task engine is wired, each periodic read is one job.
            for outcome in ("ok", "failed"):
                n = sum(v for (_, o), v in ctx.activity.reads.items() if o == outcome)
                jobs.add_metric([outcome], n)
        yield jobs

        gprs = getattr(ctx.sessions, "stats", None)
        if gprs is not None:
            identity = CounterMetricFamily(
                "fep_gprs_identity_events", "GPRS modem identity security events, by kind",
                labels=["kind"])
            for kind in ("conflicts", "conflicts_closed", "replaced", "proof_failed",
                         "source_refused", "changed_sessions"):
                identity.add_metric([kind], getattr(gprs, kind))
            yield identity

        stats = router_stats(ctx.router)
        records = CounterMetricFamily(
            "fep_records", "Records through the router, by stage", labels=["stage"])
        for stage in ("submitted", "spooled", "committed", "rejected"):
            records.add_metric([stage], stats[stage])
        yield records
        yield CounterMetricFamily(
            "fep_store_failures", "Store writes that failed and were retried",
            value=stats["store_failures"])
        yield GaugeMetricFamily(
            "fep_spool_depth", "Records spooled and not yet committed to the store",
            value=stats["spool_depth"])
        yield GaugeMetricFamily("fep_meters", "Meters in the meter list",
                                value=len(ctx.directory))

        if ctx.alarms is not None:
            alarm_stats = ctx.alarms.stats()
            alarms = CounterMetricFamily(
                "fep_alarms", "Alarms raised, by severity", labels=["severity"])
            for severity, n in sorted(alarm_stats["raised"].items()):
                alarms.add_metric([severity], n)
            yield alarms
            yield CounterMetricFamily(
                "fep_alarms_debounced", "Events that repeated an open alarm",
                value=alarm_stats["debounced"])
            notes = CounterMetricFamily(
                "fep_notifications", "Alarm notifications, by channel and outcome",
                labels=["channel", "outcome"])
            for key, n in sorted(alarm_stats["notifications"].items()):
                channel, _, outcome = key.partition(":")
                notes.add_metric([channel, outcome], n)
            yield notes

        if ctx.northbound is not None:
            nb = ctx.northbound.stats()
            yield CounterMetricFamily(
                "fep_northbound_published", "Records confirmed by the message broker",
                value=nb["published"])
            yield GaugeMetricFamily(
                "fep_northbound_backlog", "Records waiting for the message broker",
                value=nb["backlog"])
            yield GaugeMetricFamily(
                "fep_northbound_connected", "1 while connected to the message broker",
                value=1 if nb["connected"] else 0)


@attrs.define(eq=False)
class FepMetrics:
    """One daemon's registry: the collector and the store latency histogram."""

    registry: CollectorRegistry
    store_latency: Histogram

    @classmethod
    def create(cls, ctx: OperatorContext | None = None) -> FepMetrics:
        registry = CollectorRegistry(auto_describe=True)
        latency = Histogram(
            "fep_store_latency_seconds", "Time the store took per call, by operation",
            ["operation"], registry=registry, buckets=STORE_BUCKETS)
        metrics = cls(registry, latency)
        if ctx is not None:
            metrics.attach(ctx)
        return metrics

    def attach(self, ctx: OperatorContext) -> None:
        self.registry.register(FepCollector(ctx))


@implementer(IStore)
class TimedStore:
    """An IStore that times every call of the store it wraps."""

    def __init__(self, store: IStore, histogram: Histogram,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.wrapped = store
        self.url = store.url
        self._histogram = histogram
        self._clock = clock

    def _timed(self, operation: str, d: Deferred[Any]) -> Deferred[Any]:
        start = self._clock()

        def observe(result: object) -> object:
            self._histogram.labels(operation).observe(self._clock() - start)
            return result

        return d.addBoth(observe)

    def open(self) -> Deferred[None]:
        return self.wrapped.open()

    def close(self) -> Deferred[None]:
        return self.wrapped.close()

    def upgrade(self) -> Deferred[list[str]]:
        return self.wrapped.upgrade()

    def write(self, records: Sequence[Record]) -> Deferred[int]:
        return self._timed("write", self.wrapped.write(records))

    def add_meters(self, meters: Sequence[Meter]) -> Deferred[int]:
        return self._timed("add_meters", self.wrapped.add_meters(meters))

    def meters(self) -> Deferred[list[Meter]]:
        return self._timed("meters", self.wrapped.meters())

    def meter(self, meter_id: str) -> Deferred[Meter | None]:
        return self._timed("meter", self.wrapped.meter(meter_id))

    def readings(self, meter_id: str, since: datetime | None = None, obis: str | None = None,
                 limit: int | None = None) -> Deferred[list[Reading]]:
        return self._timed("readings", self.wrapped.readings(meter_id, since, obis, limit))

    def intervals(self, meter_id: str, obis: str | None = None,
                  since: datetime | None = None) -> Deferred[list[IntervalBlock]]:
        return self._timed("intervals", self.wrapped.intervals(meter_id, obis, since))

    def events(self, meter_id: str, since: datetime | None = None) -> Deferred[list[MeterEvent]]:
        return self._timed("events", self.wrapped.events(meter_id, since))

    def count(self, table: str) -> Deferred[int]:
        return self._timed("count", self.wrapped.count(table))

    def __getattr__(self, name: str) -> Any:
        # Store-specific extras (e.g. ``interact``, how the alarm tables share the store).
        return getattr(self.wrapped, name)
