"""A cuttable TCP proxy for outage tests: it sits between a client under test and a real
server on 127.0.0.1, and the test can stop it accepting, drop every connection through it,
and open it again on the same port, without touching the server itself.

    proxy = TcpProxy(reactor, "127.0.0.1", 5432)
    port = await proxy.start()          # listening on 127.0.0.1:port
    await proxy.cut()                   # refuse new connections, drop open ones
    await proxy.restore()               # accept again on the same port
    await proxy.stop()                  # in cleanup
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory
from twisted.python.failure import Failure


class _ServerSide(Protocol):
    """The client's connection into the proxy; it owns the matching upstream connection."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.upstream: _UpstreamSide | None = None
        self.pending: list[bytes] = []

    def connectionMade(self) -> None:
        self.proxy.connections.add(self)
        self.proxy.accepted += 1
        factory = _UpstreamFactory(self)
        self.proxy.reactor.connectTCP(self.proxy.target_host, self.proxy.target_port, factory)

    def upstream_ready(self, upstream: _UpstreamSide) -> None:
        self.upstream = upstream
        if upstream.transport is not None:
            for data in self.pending:
                upstream.transport.write(data)
        self.pending.clear()

    def dataReceived(self, data: bytes) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write(data)
        else:
            self.pending.append(data)

    def drop(self) -> None:
        """Abort both sides at once, as a network failure would."""
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.proxy.connections.discard(self)
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.loseConnection()


class _UpstreamSide(Protocol):
    def __init__(self, client: _ServerSide) -> None:
        self.client = client

    def connectionMade(self) -> None:
        self.client.upstream_ready(self)

    def dataReceived(self, data: bytes) -> None:
        if self.client.transport is not None:
            self.client.transport.write(data)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        if self.client.transport is not None:
            self.client.transport.loseConnection()


class _UpstreamFactory(ClientFactory):
    def __init__(self, client: _ServerSide) -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> _UpstreamSide:
        return _UpstreamSide(self.client)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        # The server is unreachable: the client sees its connection drop, as it would.
        self.client.drop()


class _ListeningFactory(ServerFactory):
    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy

    def buildProtocol(self, addr: Any) -> _ServerSide:
        return _ServerSide(self.proxy)


class TcpProxy:
    """Forwards 127.0.0.1:port to (target_host, target_port) until told otherwise."""

    def __init__(self, reactor: Any, target_host: str, target_port: int) -> None:
        self.reactor = reactor
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.connections: set[_ServerSide] = set()
        self.accepted = 0
        self._listening: IListeningPort | None = None

    @property
    def accepting(self) -> bool:
        return self._listening is not None

    def start(self) -> Deferred[int]:
        """Listen (on a free port the first time, on the same port after); fires with it."""
        if self._listening is None:
            factory = _ListeningFactory(self)
            self._listening = self.reactor.listenTCP(self.port, factory, interface="127.0.0.1")
            host = self._listening.getHost()
            assert isinstance(host, IPv4Address)
            self.port = host.port
        return succeed(self.port)

    def stop_accepting(self) -> Deferred[None]:
        """Close the listening port: new connections are refused at once."""
        listening, self._listening = self._listening, None
        if listening is None:
            return succeed(None)
        d: Deferred[None] = Deferred.fromCoroutine(_stopped(listening))
        return d

    def drop_connections(self) -> None:
        """Abort every connection through the proxy, both ways."""
        for side in list(self.connections):
            side.drop()

    async def cut(self) -> None:
        """The server goes away: refuse new connections and drop the open ones."""
        await self.stop_accepting()
        self.drop_connections()

    async def restore(self) -> None:
        """The server is back, on the same address."""
        await self.start()

    async def stop(self) -> None:
        await self.cut()


async def _stopped(listening: IListeningPort) -> None:
    await maybeDeferred(listening.stopListening)
