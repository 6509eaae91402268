"""The collection rows of `make bench`: register collection in meters per second, SQLite and
PostgreSQL in the same run. Simulated DLMS or DL/T 645-2007 meters each listen on a loopback
TCP port of their own (one line each), served by a process of their own (fep.sim.fleet: the
meters' work is not the collector's); one collection engine as the daemon builds it (job
store on the store's database, records through the spool and router) reads every meter's
registers once; the rate is meters over the seconds from the run falling due to the last
job's end committed in the job store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

if TYPE_CHECKING:
    from fep.reactors import IFepReactor


class Fleet(ProcessProtocol):
    """The simulated meters' process (``fep.sim.fleet``): where each meter listens."""

    def __init__(self) -> None:
        self.meters: list[dict[str, Any]] = []
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self._out = b""
        self._err = b""

    def outReceived(self, data: bytes) -> None:
        self._out += data
        if b"\n" in self._out and not self.ready.called:
            self.meters = json.loads(self._out.split(b"\n", 1)[0])
            self.ready.callback(None)

    def errReceived(self, data: bytes) -> None:
        self._err = (self._err + data)[-4000:]

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(
                f"the simulated fleet ended before serving: {self._err.decode(errors='replace')}"))
        self.ended.callback(None)

    async def stop(self) -> None:
        if not self.ended.called:
            self.transport.closeStdin()  # type: ignore[union-attr]
        await self.ended


async def start_fleet(reactor: Any, protocol: str, meters: int) -> Fleet:
    """``meters`` simulated meters of ``protocol`` in a process of their own, serving."""
    import os
    import sys

    fleet = Fleet()
    reactor.spawnProcess(fleet, sys.executable,
                         [sys.executable, "-m", "fep.sim.fleet", "--protocol", protocol,
                          "--meters", str(meters)], env=os.environ.copy())
    await fleet.ready
    return fleet


async def collection_rate(
    reactor: IFepReactor, url: str, workdir: Path, meters: int = 1000, concurrency: int = 50,
    protocol: str = "dlms", cpu_per_meter: list[float] | None = None,
) -> float:
    """Meters per second: ``meters`` simulated meters (``protocol`` dlms or dlt645, served
    by a process of their own, ``fep.sim.fleet``) read once (registers) by one engine on
    the store ``url`` (an empty database). ``cpu_per_meter``, when given, gets this
    process's CPU seconds per meter over the timed part appended."""
    from twisted.internet.task import deferLater

    from fep.channels.routes import Channels
    from fep.collect.engine import CollectionEngine
    from fep.collect.tasks import JobStatus, Task
    from fep.config import parse_config
    from fep.directory import MeterDirectory
    from fep.model import Meter
    from fep.service import tune_garbage_collector
    from fep.store import open_store
    from fep.store.router import Router
    from fep.store.settings import write_batch
    from fep.store.spool import Spool

    tune_garbage_collector()  # as the daemon runs
    sims = await start_fleet(reactor, protocol, meters)
    fleet: list[Meter] = []
    for n, where in enumerate(sims.meters):
        address, metadata = "", {}
        if protocol == "dlt645":
            address, metadata = f"@{where['address']}", {"dlt645_retries": "0"}
        fleet.append(Meter(f"bench-{n:05d}", protocol,
                           f"tcp:host=127.0.0.1:port={where['port']}{address}",
                           metadata=metadata))
    store = open_store(url, reactor)
    await store.open()
    spool = Spool(workdir / f"spool-collect-{time.monotonic_ns()}", reactor)
    router = Router(spool, store, reactor, batch_size=5000,
                    write_batch=write_batch(url, 5000), max_delay=0.05)
    router.startService()
    engine: CollectionEngine | None = None
    try:
        await store.add_meters(fleet)
        directory = MeterDirectory(store)
        await directory.refresh()
        config = parse_config(
            "[fep]\n[store]\n[collect]\ntimeout = 10\ndefault_task = no\n"
            f"concurrency = {concurrency}\n")
        engine = CollectionEngine(reactor, store, router, directory, config.collect,
                                  node="bench", endpoint_for=Channels(reactor))
        await engine.prepare()
        now = float(reactor.seconds())
        await engine.jobs.save_task(
            Task(name="bench", kind="registers", schedule="every 3650d", retries=0,
                 next_due=now), now)
        started = time.perf_counter()
        cpu = time.process_time()
        engine.scheduler.startService()
        scheduler = engine.scheduler
        while sum(scheduler.finished.values()) < meters:
            await deferLater(reactor, 0.01, lambda: None)
        # ... and committed: what the job store says, not the engine's memory.
        while True:
            (run,) = await engine.jobs.run_stats("bench", 1)
            if run.jobs >= meters:
                break
            await deferLater(reactor, 0.01, lambda: None)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        done = [j for j in await engine.jobs.jobs(task="bench", limit=None)
                if j.status == JobStatus.DONE]
        if len(done) != meters:
            raise RuntimeError(f"{url}: {len(done)} of {meters} meters read")
        if cpu_per_meter is not None:
            cpu_per_meter.append(cpu / meters)
        return meters / elapsed
    finally:
        if engine is not None and engine.scheduler.running:
            await engine.scheduler.stopService()
        await router.stopService()
        await store.close()
        await sims.stop()
