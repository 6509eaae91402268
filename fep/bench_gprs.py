"""The idle-GPRS-sessions row of `make bench`: memory per idle session and the CPU idle
sessions take.

``sessions`` modems connect (in-memory transports: the bench measures what fep holds per
session, not the kernel's socket buffers or Twisted's transport object), each sends a binary
registration naming the IMEI of a DLMS meter of the list and is attached (identity, meters,
push decoder, idle timeout), DLMS built with a context shared by the sessions as the daemon
builds it. tracemalloc counts the bytes allocated from before the first
connection to after the last (less what is freed), divided by the sessions. Then the reactor
runs ``idle_seconds`` with every session idle: the CPU time this process takes meanwhile, and
the reactor's delayed calls (how many the sessions hold).
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from fep.interfaces import IRecordSink

if TYPE_CHECKING:
    from fep.model import Record
    from fep.reactors import IFepReactor


@implementer(IRecordSink)
class _Sink:
    def submit(self, records: Sequence[Record]) -> Deferred[None]:
        return succeed(None)


class _Transport:
    """What a session needs of its transport, and nothing more."""

    __slots__ = ("disconnecting", "peer")

    def __init__(self, peer: IPv4Address) -> None:
        self.peer = peer
        self.disconnecting = False

    def getPeer(self) -> IPv4Address:
        return self.peer

    def getHost(self) -> IPv4Address:
        return self.peer

    def write(self, data: bytes) -> None:
        pass

    def loseConnection(self) -> None:
        self.disconnecting = True

    abortConnection = loseConnection


@attrs.frozen
class IdleSessions:
    sessions: int
    bytes_per_session: float
    delayed_calls: int  # the reactor's, added by the sessions
    idle_seconds: float
    idle_cpu: float  # CPU seconds per second while they are idle (0.0 to 1.0)
    state: str


async def idle_sessions(
    reactor: IFepReactor, sessions: int = 15_000, idle_seconds: float = 2.0
) -> IdleSessions:
    from twisted.internet.task import deferLater

    from fep.channels.gprs import GprsChannel, GprsSettings, ModemSession
    from fep.channels.identify import encode_binary_registration
    from fep.directory import MeterDirectory
    from fep.model import Meter
    from fep.protocols.dlms.context import DlmsContext, SecurityEvents
    from fep.protocols.dlms.security import InvocationCounterGuard
    from fep.protocols.registry import ProtocolRegistry

    keys = {"dlms_ek": "000102030405060708090A0B0C0D0E0F",
            "dlms_ak": "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"}
    count = sessions + 1  # the first one warms up (imports, caches) before measuring
    imeis = [f"35693803{n:07d}" for n in range(count)]
    meters = [Meter(f"m{n}", "dlms", f"gprs:imei={imei}", metadata=keys)
              for n, imei in enumerate(imeis)]
    directory = MeterDirectory(None)  # type: ignore[arg-type]
    directory.replace(meters)
    sink = _Sink()
    counters = InvocationCounterGuard()
    # As the daemon builds it (fep/service.py): DLMS with a context shared by every session.
    protocols = ProtocolRegistry({"dlms": DlmsContext(counters, security=SecurityEvents(sink))})
    channel = GprsChannel(reactor, GprsSettings(), sink=sink, directory=directory,
                          counters=counters, protocol_for=protocols.protocol_for)
    factory = channel.factory("tcp:4059")
    registrations = [encode_binary_registration(imei=imei) for imei in imeis]
    transports = [_Transport(IPv4Address("TCP", "10.0.0.1", 1024 + n % 60_000))
                  for n in range(count)]
    held: list[Any] = []

    def connect(n: int) -> None:
        session = factory.buildProtocol(transports[n].peer)
        assert isinstance(session, ModemSession)
        session.makeConnection(transports[n])
        session.dataReceived(registrations[n])
        held.append(session)

    connect(0)
    calls_before = len(reactor.getDelayedCalls())
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(1, count):
            connect(n)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    states = sorted({s.state.value for s in held})
    calls = len(reactor.getDelayedCalls()) - calls_before
    cpu = time.process_time()
    wall = time.perf_counter()
    await deferLater(reactor, idle_seconds, lambda: None)
    idle_cpu = (time.process_time() - cpu) / (time.perf_counter() - wall)
    for session in held:
        session.drop("bench over")
        session.connectionLost()
    return IdleSessions(sessions, (after - before) / sessions, calls, idle_seconds, idle_cpu,
                        ",".join(states))
