"""A collection engine on the real reactor for integration tests: a SQLite (or PostgreSQL)
store, records written straight to it, the channel layer's endpoints, and simulated meters
listening on loopback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from zope.interface import implementer

from fep.channels.routes import Channels
from fep.collect.engine import CollectionEngine
from fep.collect.forwarding import add_forwarding
from fep.collect.tasks import Job, JobStatus
from fep.config import parse_config
from fep.directory import MeterDirectory
from fep.interfaces import IRecordSink, IStore
from fep.model import Meter, Record
from fep.store import open_store
from tests.daemon.harness import wait_for


@implementer(IRecordSink)
class StoreSink:
    """Records straight into the store (the daemon puts the spool and router between)."""

    def __init__(self, store: IStore) -> None:
        self.store = store
        self.submitted = 0

    def submit(self, records: Sequence[Record]) -> Deferred[None]:
        self.submitted += len(records)
        return self.store.write(list(records)).addCallback(lambda _: None)


def listen(testcase: Any, factory: Any) -> int:
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return int(port.getHost().port)


async def engine_for(
    testcase: Any,
    meters: Sequence[Meter],
    *,
    url: str | None = None,
    node: str = "test",
    collect: dict[str, str] | None = None,
    start: bool = True,
    clock: Any = None,
) -> tuple[CollectionEngine, IStore]:
    """An engine over ``meters`` (stored first); ``collect`` sets [collect] keys; ``clock``
    is the reactor the engine reads the time from (a `tests.fakes.ShiftedClock`), the real
    one by default."""
    clock = clock or reactor
    url = url or f"sqlite:{testcase.mktemp()}.sqlite"
    settings = {"timeout": "3", "poll": "0.1", "default_task": "no", **(collect or {})}
    config = parse_config(
        "[fep]\n[store]\n[collect]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
    )
    store = open_store(url, reactor)
    await store.open()
    testcase.addCleanup(store.close)
    await store.add_meters(list(meters))
    directory = MeterDirectory(store)
    await directory.refresh()
    channels = Channels(clock)
    add_forwarding(channels, directory.get)  # gw3761:DCU:port=N routes
    engine = CollectionEngine(
        clock, store, StoreSink(store), directory, config.collect, node=node,
        endpoint_for=channels,
    )
    await engine.prepare()
    if start:
        engine.scheduler.startService()
        testcase.addCleanup(lambda: engine.scheduler.stopService()
                            if engine.scheduler.running else None)
    return engine, store


async def jobs_ended(engine: CollectionEngine, count: int, timeout: float = 30,
                     **filters: Any) -> list[Job]:
    """Wait until ``count`` jobs (matching ``filters``) reached a final status."""
    ended: list[Job] = []

    async def done() -> bool:
        nonlocal ended
        ended = [j for j in await engine.jobs.jobs(limit=None, **filters)
                 if JobStatus(j.status).final]
        return len(ended) >= count

    await wait_for(done, timeout, f"{count} jobs to end", every=0.05)
    return ended
