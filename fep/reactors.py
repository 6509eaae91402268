"""What fep asks of a reactor, as types: the intersections of Twisted's reactor interfaces
that pieces of fep need together.

A piece that only needs timers takes an ``IReactorTime``; one that only connects TCP takes an
``IReactorTCP``, and so on (the interfaces of ``twisted.internet.interfaces``). A piece that
needs several at once takes one of the interfaces below. They are make-believe interfaces for
the type checker, the way Twisted types its global reactor (``_IReactorCommon``): no reactor
declares them, nothing checks ``providedBy`` against them, and the reactor a program runs on
is cast to one of them where it enters fep (the composition root, a command's ``main``, a
``reactor=None`` default that imports the global reactor). Tests pass a
``MemoryReactorClock`` or a real reactor where these are asked for.

They nest so that the widest one can be passed wherever a narrower one is asked for:
``IFepReactor`` (the daemon's reactor) extends ``IRunningReactor`` (a command's reactor),
which extends ``IConnectingReactor``; ``IFepReactor`` extends ``IStoreReactor`` too, which
extends ``ITimeAndThreads``.
"""

from __future__ import annotations

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorSSL,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IReactorUNIX,
)


class ITimeAndThreads(IReactorTime, IReactorThreads):
    """Timers, the reactor's thread pool and calls from threads: the stores, the spool and
    the invocation counters, which run blocking I/O in the reactor's pool."""


class IStoreReactor(ITimeAndThreads, IReactorFDSet):
    """What opens a store: SQLite works in the reactor's thread pool, PostgreSQL's connections
    are file descriptors the reactor watches, and both time their work out."""


class IConnectingReactor(IReactorTime, IReactorTCP, IReactorFDSet):
    """Timers, TCP, and file descriptors (serial ports): what opens a route to a meter
    (``tcp:``, ``serial:``, ``rfc2217:``, modems) and times the session on it."""


class IRunningReactor(IReactorCore, IConnectingReactor):
    """A reactor that a command runs and stops (simulators, benchmarks), which also connects,
    listens and times."""


class IFepReactor(IRunningReactor, IStoreReactor, IReactorUNIX, IReactorSSL):
    """The daemon's reactor and the command line's: everything above, UNIX sockets (the
    control socket) and TLS listeners."""


__all__ = [
    "IConnectingReactor", "IFepReactor", "IRunningReactor", "IStoreReactor", "ITimeAndThreads"
]
