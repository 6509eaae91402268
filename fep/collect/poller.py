"""Fixed-period reading of the stored meters: each meter is read once per period through its
route and protocol, and its records go to the record sink. Meters sharing a line (a bus, a
modem, a serial-server port) are read one after the other, in list order, so waiting for the
line never counts against a meter's timeout, and a meter that does not answer costs the line
its own timeout only. A concentrator is read before the meters it owns; when it fails, they
are skipped that cycle (fep.collect.concentrators).

This is the daemon's simple collection loop until the task-based engine replaces it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from fep.channels.endpoints import client_endpoint
from fep.channels.routes import resource_of
from fep.collect.concentrators import line_order
from fep.collect.directory import MeterDirectory, addressed
from fep.errors import FepError
from fep.interfaces import IMeterProtocol, IRecordSink
from fep.model import Meter
from fep.protocols.registry import meter_protocol

log = Logger()


class PeriodicReader(service.Service):
    """Reads every meter of the directory once per ``period`` seconds, at most
    ``concurrency`` sessions at once; a meter still being read is not started again."""

    name = "reader"

    def __init__(
        self,
        reactor: Any,
        directory: MeterDirectory,
        sink: IRecordSink,
        *,
        period: float,
        timeout: float,
        concurrency: int,
        protocol_for: Callable[[str], IMeterProtocol] = meter_protocol,
        endpoint_for: Callable[[Any, str], Any] = client_endpoint,
    ) -> None:
        self._reactor = reactor
        self._directory = directory
        self._sink = sink
        self.period = period
        self.timeout = timeout
        self._semaphore = DeferredSemaphore(concurrency)
        self._protocol_for = protocol_for
        self._endpoint_for = endpoint_for
        self._loop: LoopingCall | None = None
        self._in_flight: dict[str, Deferred[None]] = {}
        # Told of every read as it starts and ends (the operator tier's Activity):
        # ``read_started(meter)`` and ``read_finished(meter, error, records)``.
        self.observers: list[Any] = []
        self.reads_ok = 0
        self.reads_failed = 0
        self.reads_skipped = 0
        self.records_read = 0

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.cycle)
        self._loop.clock = self._reactor
        self._loop.start(self.period, now=True).addErrback(
            lambda f: log.failure("reading loop stopped", f)
        )

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        # Let sessions under way finish: their records are worth keeping.
        return DeferredList(list(self._in_flight.values()))

    def cycle(self) -> Deferred[Any]:
        """Refresh the meter list, then start a read of every meter not being read."""

        async def run() -> None:
            try:
                meters = await self._directory.refresh()
            except FepError as e:
                log.warn("cannot refresh the meter list: {error}", error=e)
                meters = self._directory.all()
            lines: dict[str, list[Meter]] = {}
            for meter in meters:
                if meter.id in self._in_flight or not self.running:
                    continue
                try:
                    line = resource_of(meter.route)
                except FepError as e:
                    self.reads_failed += 1
                    log.warn("meter {meter}: {error}", meter=meter.id, error=e)
                    continue
                lines.setdefault(line, []).append(meter)
            for on_line in lines.values():
                d = self._semaphore.run(self._read_line, on_line)
                for meter in on_line:
                    self._in_flight[meter.id] = d
                d.addBoth(self._done, [meter.id for meter in on_line])

        return Deferred.fromCoroutine(run())

    def _done(self, result: object, meter_ids: list[str]) -> None:
        for meter_id in meter_ids:
            self._in_flight.pop(meter_id, None)

    async def _read_line(self, meters: list[Meter]) -> None:
        steps, bad = line_order(meters, self._directory.all())
        for meter, error in bad:
            self.reads_failed += 1
            log.warn("meter {meter}: {error}", meter=meter.id, route=meter.route, error=error)
        for step in steps:
            if not self.running:
                return
            ok = await self._read(step.meter)
            if not step.owned:
                continue
            if not ok:
                self.reads_skipped += len(step.owned)
                log.warn(
                    "concentrator {meter} failed: {count} meters behind it not read this cycle",
                    meter=step.meter.id,
                    route=step.meter.route,
                    count=len(step.owned),
                )
                continue
            for meter in step.owned:
                if not self.running:
                    return
                await self._read(meter)

    def read_meter(self, meter: Meter) -> Deferred[None]:
        """One read of one meter; failures are logged and counted, never raised."""

        async def run() -> None:
            await self._read(meter)

        return Deferred.fromCoroutine(run())

    async def _read(self, meter: Meter) -> bool:
        """One read of one meter; True when it succeeded, failures logged and counted, and
        the observers (the operator tier's activity) told of its start and outcome."""
        meter = addressed(meter)
        for observer in self.observers:
            observer.read_started(meter)
        failure, count = await self._attempt(meter)
        for observer in self.observers:
            observer.read_finished(meter, failure, count)
        return failure is None

    async def _attempt(self, meter: Meter) -> tuple[Exception | None, int]:
        try:
            protocol = self._protocol_for(meter.protocol)
            endpoint = self._endpoint_for(self._reactor, meter.route)
            records = await protocol.read(self._reactor, endpoint, meter, self.timeout)
            await self._sink.submit(records)
        except FepError as e:
            self.reads_failed += 1
            log.warn(
                "read of {meter} over {route} failed: {error}",
                meter=meter.id,
                route=meter.route,
                protocol=meter.protocol,
                error=e,
            )
            return e, 0
        except Exception as e:
            self.reads_failed += 1
            log.failure(
                "read of {meter} over {route} failed unexpectedly",
                meter=meter.id,
                route=meter.route,
                protocol=meter.protocol,
            )
            return e, 0
        self.reads_ok += 1
        self.records_read += len(records)
        log.info(
            "read {meter} over {route}: {count} records",
            meter=meter.id,
            route=meter.route,
            protocol=meter.protocol,
            count=len(records),
        )
        return None, len(records)
