"""The collection rows of `make bench`: register collection in meters per second, SQLite and
PostgreSQL in the same run. Simulated DLMS or DL/T 645-2007 meters each listen on a loopback
TCP port of their own (one line each); one collection engine as the daemon builds it (job
store on the store's database, records through the spool and router) reads every meter's
registers once; the rate is meters over the seconds from the run falling due to the last
job's end committed in the job store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fep.reactors import IFepReactor


async def collection_rate(
    reactor: IFepReactor, url: str, workdir: Path, meters: int = 1000, concurrency: int = 50,
    protocol: str = "dlms",
) -> float:
    """Meters per second: ``meters`` simulated meters (``protocol`` dlms or dlt645) read
    once (registers) by one engine on the store ``url`` (an empty database)."""
    from twisted.internet.task import deferLater

    from fep.channels.routes import Channels
    from fep.collect.engine import CollectionEngine
    from fep.collect.tasks import JobStatus, Task
    from fep.config import parse_config
    from fep.directory import MeterDirectory
    from fep.model import Meter
    from fep.protocols.dlms.server import ServerSettings
    from fep.sim import dlms_meter
    from fep.sim.dlms import DlmsMeterServerFactory
    from fep.sim.dlt645 import Dlt645BusFactory, make_meters
    from fep.store import open_store
    from fep.store.router import Router
    from fep.store.settings import write_batch
    from fep.store.spool import Spool

    ports: list[Any] = []
    fleet: list[Meter] = []
    for n in range(meters):
        factory: Any
        if protocol == "dlt645":
            (sim645,) = make_meters(1, first_address=f"{n + 1:012d}")
            factory = Dlt645BusFactory([sim645], reactor)
            address, metadata = f"@{sim645.address}", {"dlt645_retries": "0"}
        else:
            sim = dlms_meter.SimulatedDlmsMeter(serial=f"FEP{n:07d}")
            factory = DlmsMeterServerFactory(sim, ServerSettings())
            address, metadata = "", {}
        port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        fleet.append(Meter(f"bench-{n:05d}", protocol,
                           f"tcp:host=127.0.0.1:port={port.getHost().port}{address}",
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
        done = [j for j in await engine.jobs.jobs(task="bench", limit=None)
                if j.status == JobStatus.DONE]
        if len(done) != meters:
            raise RuntimeError(f"{url}: {len(done)} of {meters} meters read")
        return meters / elapsed
    finally:
        if engine is not None and engine.scheduler.running:
            await engine.scheduler.stopService()
        await router.stopService()
        await store.close()
        for port in ports:
            await port.stopListening()
