"""The Q/GDW 1376.1 row of `make bench`: meters' daily data stored per second through one
concentrator session. A simulated concentrator (fep.sim.concentrator) with N DL/T 645
meters behind it listens on TCP; fep reads, over one connection, every point's class 2
daily frozen forward active energy (AFN 0D F161) and its 96-point forward active energy
curve of the day (F101), 64 points to a request, and hands the records to the router (spool
on), until every row is committed to the store. The rate is N meters over the time from
the connection to the last commit."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from zope.interface import implementer

if TYPE_CHECKING:
    from fep.reactors import IFepReactor

ADDRESS = "4403:0004"


@attrs.frozen
class ConcentratorRun:
    meters: int
    seconds: float
    readings: int
    intervals: int
    bytes_in: int

    @property
    def meters_per_second(self) -> float:
        return self.meters / self.seconds


async def concentrator_rate(reactor: IFepReactor, url: str, workdir: Path,
                            meters: int = 1000) -> ConcentratorRun:  # fmt: skip
    """One session reading ``meters`` points' daily frozen energy and 96-point curve, stored
    through the router into ``url``."""
    from twisted.internet.endpoints import TCP4ClientEndpoint

    from fep.model import Meter
    from fep.protocols.gw3761.session import Gw3761Protocol
    from fep.sim.concentrator import ConcentratorFactory, make_concentrator
    from fep.store import open_store
    from fep.store.router import Router
    from fep.store.spool import Spool

    sim = make_concentrator(meters, ADDRESS, clock=time.time, days=2)
    factory = ConcentratorFactory(sim, reactor)
    port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[arg-type]
    # The terminal's yesterday (UTC+8), as the read's defaults take it.
    local = datetime.now(UTC) + timedelta(hours=8)
    day = (local - timedelta(days=1)).date()
    dcu = Meter("DCU1", "gw3761", "tcp:", address=ADDRESS, metadata={
        "gw3761_points": ",".join(str(n) for n in range(1, meters + 1)),
        "gw3761_items": "0D:F161,0D:F101",
        "gw3761_day": day.isoformat(),
        "gw3761_from": f"{day.isoformat()}T00:15",
        "gw3761_to": f"{(day + timedelta(days=1)).isoformat()}T00:15",
    })
    store = open_store(url, reactor)
    await store.open()
    spool = Spool(Path(tempfile.mkdtemp(prefix="spool-gw3761-", dir=workdir)), reactor)
    router = Router(spool, store, reactor, batch_size=5000, max_delay=0.01)
    router.startService()
    endpoint = _Counting(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))
    try:
        started = time.perf_counter()
        records = await Gw3761Protocol().read(reactor, endpoint, dcu, 120.0)
        await router.submit(records)
        await router.flush(600)
        elapsed = time.perf_counter() - started
        readings, intervals = await store.count("readings"), await store.count("intervals")
    finally:
        await port.stopListening()
        await router.stopService()
        await store.close()
    if readings < meters or intervals < meters * 96:
        raise RuntimeError(f"{url}: {readings} readings and {intervals} intervals stored for "
                           f"{meters} meters")
    return ConcentratorRun(meters, elapsed, readings, intervals, endpoint.bytes_in)


@implementer(IStreamClientEndpoint)
class _Counting:
    """A client endpoint counting the bytes the concentrator sent."""

    def __init__(self, inner: IStreamClientEndpoint) -> None:
        self.inner = inner
        self.bytes_in = 0

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        counter = self

        def wrap(protocol: IProtocol) -> IProtocol:
            received = protocol.dataReceived

            def counted(data: bytes) -> None:
                counter.bytes_in += len(data)
                received(data)

            protocol.dataReceived = counted  # type: ignore[method-assign]
            return protocol

        return self.inner.connect(protocolFactory).addCallback(wrap)
