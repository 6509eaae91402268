"""The daemon's service tree: named children started one after the other, each once the one
before it is ready, and stopped in the reverse order, each once the one after it has stopped.

Twisted's ``MultiService`` starts its children in order but does not wait for a child's
asynchronous start (the store opening before the router and the scheduler), and stops them
all at once. ``OrderedMultiService`` does both in sequence: a child is ready when the Deferred
its ``startService`` returns fires (a ``Step``, a ``Listener``, a nested
``OrderedMultiService``), or when the ``ready`` callable given with it to ``add`` fires (a
service of another shape, e.g. the modem pool's ``opened``); a plain service is ready once
``startService`` returns. A child whose start fails fails the whole start; a stop while
starting cancels the start under way and stops what had started.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger(namespace="fep.service")


class OrderedMultiService(service.MultiService):
    """Children started in order, each awaited; stopped in reverse, each awaited."""

    def __init__(self) -> None:
        super().__init__()
        self._ready: dict[int, Callable[[], Awaitable[object] | None]] = {}
        self._starting: Deferred[None] | None = None

    def add(self, child: service.IService, name: str,
            ready: Callable[[], Awaitable[object] | None] | None = None) -> Any:
        """Make ``child`` the next child, called ``name``; ``ready`` (optional) fires once
        the started child may be used by the ones after it."""
        child.setName(name)
        if ready is not None:
            self._ready[id(child)] = ready
        child.setServiceParent(self)
        return child

    def privilegedStartService(self) -> None:
        # Not passed on: a child starts (listens, opens) only after the ones before it.
        service.Service.privilegedStartService(self)

    def startService(self) -> Deferred[None]:
        service.Service.startService(self)
        self._starting = Deferred.fromCoroutine(self._start_children())
        return self._starting

    async def _start_children(self) -> None:
        for child in list(self):
            if not self.running:
                return
            # A child whose startService returns a Deferred is ready when it fires.
            await maybeDeferred(child.startService)
            ready = self._ready.get(id(child))
            if ready is not None:
                waiting = ready()
                if waiting is not None:
                    await waiting

    def stopService(self) -> Deferred[None]:
        service.Service.stopService(self)
        starting, self._starting = self._starting, None
        if starting is not None and not starting.called:
            starting.addErrback(lambda f: f.trap(CancelledError))
            starting.cancel()
        return Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            if child.running:
                try:
                    await maybeDeferred(child.stopService)
                except Exception:
                    # The ones before it still stop (the store closes last).
                    log.failure("{service} did not stop cleanly", service=child.name)


class Step(service.Service):
    """A part that is not itself a service (the store, the invocation counters, the meter
    directory...): ``start`` and ``stop`` are awaited by the tree. A stop while ``start`` is
    still under way (the store's retry loop) cancels it first."""

    def __init__(self, name: str, start: Callable[[], Awaitable[Any]] | None = None,
                 stop: Callable[[], Awaitable[Any] | None] | None = None) -> None:
        self.setName(name)
        self._start = start
        self._stop = stop
        self._started: Deferred[Any] | None = None

    def startService(self) -> Deferred[Any]:
        super().startService()
        start = self._start

        async def run() -> Any:
            return await start() if start is not None else None

        self._started = Deferred.fromCoroutine(run())
        return self._started

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._started is not None and not self._started.called:
            self._started.addErrback(lambda f: f.trap(CancelledError))
            self._started.cancel()
        stop = self._stop

        async def run() -> None:
            if stop is not None:
                result = stop()
                if result is not None:
                    await result

        return Deferred.fromCoroutine(run())


@implementer(IStreamServerEndpoint)
class _Announcing:
    """An endpoint that tells ``listening`` of the port it listens on, or ``failed`` why
    it cannot."""

    def __init__(self, endpoint: IStreamServerEndpoint,
                 listening: Callable[[IListeningPort], None],
                 failed: Callable[[Failure], None]) -> None:
        self.endpoint = endpoint
        self.listening = listening
        self.failed = failed

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        d: Deferred[IListeningPort] = self.endpoint.listen(factory)

        def told(port: IListeningPort) -> IListeningPort:
            self.listening(port)
            return port

        def refused(failure: Failure) -> Failure:
            self.failed(failure)
            return failure

        return d.addCallbacks(told, refused)


class Listener(StreamServerEndpointService):
    """A listening socket of the tree: a StreamServerEndpointService whose start fails when
    it cannot listen (as strports.service's does), whose start fires once it listens, and
    whose factory may be built at start (``factory`` a callable: files it reads, such as a
    token file or a host key, are read when the daemon starts, as before the tree)."""

    _raiseSynchronously = True

    def __init__(self, endpoint: IStreamServerEndpoint,
                 factory: IProtocolFactory | Callable[[], IProtocolFactory],
                 announce: Callable[[IListeningPort], None] | None = None) -> None:
        self.port: IListeningPort | None = None
        self._announce = announce
        self._build = None if IProtocolFactory.providedBy(factory) else factory
        self._listened: Deferred[IListeningPort] | None = None
        super().__init__(_Announcing(endpoint, self._listening, self._failed),
                         factory if self._build is None else None)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        if self._announce is not None:
            self._announce(port)
        if self._listened is not None and not self._listened.called:
            self._listened.callback(port)

    def _failed(self, failure: Failure) -> None:
        if self._listened is not None and not self._listened.called:
            self._listened.errback(failure)

    def privilegedStartService(self) -> None:
        if self._build is not None:
            self.factory = self._build()
        super().privilegedStartService()

    def startService(self) -> Deferred[IListeningPort]:
        """Fires with the listening port (fails when it cannot listen)."""
        listened: Deferred[IListeningPort] = Deferred()
        self._listened = listened
        try:
            super().startService()
        except BaseException:
            # Raised here (strports' behaviour): the Deferred is nobody's to report.
            listened.addErrback(lambda f: None)
            raise
        return listened

    def stopService(self) -> Deferred[None] | None:
        if self._waitingForPort is None:
            # Its start failed before it listened (its factory could not be built).
            service.Service.stopService(self)
            return None
        d: Deferred[None] = super().stopService()
        return d
