"""Line faults for any simulated meter or bus: wrap its server factory and a share of the
connections (each a meter session) go wrong the way field links do.

    factory = FaultyFactory(DlmsMeterServerFactory(...), rate=0.02, seed=7)

Per connection, with probability ``rate``, one fault is drawn from ``kinds``:

``silence``  the meter never answers (the session times out)
``drop``     the connection is cut when the meter starts its first answer
``corrupt``  one byte of the meter's first answer is spoilt (a frame with a bad checksum)

``cut`` is a one-shot trigger for tests: a callable asked after each request the meter
receives; when it says yes the connection is cut there (e.g. halfway through a firmware
transfer). The draws are seeded (or come from a shared ``random.Random``), so a run can be
repeated.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.interfaces import IProtocolFactory
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

KINDS = ("silence", "drop", "corrupt")


class _FaultyProtocol(ProtocolWrapper):
    factory: FaultyFactory

    def makeConnection(self, transport: Any) -> None:
        self.fault = self.factory.draw()
        self.answered = False
        super().makeConnection(transport)

    def _abort(self) -> None:
        transport = self.transport
        if transport is not None:
            abort = getattr(transport, "abortConnection", None)
            (abort or transport.loseConnection)()

    def write(self, data: bytes) -> None:
        first, self.answered = not self.answered, True
        if self.fault == "silence":
            return
        if self.fault == "drop" and first:
            self._abort()
            return
        if self.fault == "corrupt" and first and data:
            spoilt = bytearray(data)
            spoilt[len(spoilt) // 2] ^= 0x5A
            data = bytes(spoilt)
        super().write(data)

    def writeSequence(self, data: Sequence[bytes]) -> None:
        self.write(b"".join(data))

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        cut = self.factory.cut
        if cut is not None and cut():
            self.factory.cut = None
            self.factory.counts["cut"] += 1
            self._abort()


class FaultyFactory(WrappingFactory):
    """Wraps a server factory so that a share of its connections suffer a fault."""

    protocol = _FaultyProtocol
    noisy = False

    def __init__(
        self,
        wrapped: IProtocolFactory,
        *,
        rate: float = 0.0,
        seed: int | random.Random | None = None,
        kinds: Sequence[str] = KINDS,
        cut: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(wrapped)
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)} (known: {KINDS})")
        self.rate = rate
        self.kinds = tuple(kinds)
        self.random = seed if isinstance(seed, random.Random) else random.Random(seed)
        self.cut = cut
        self.connections = 0
        self.counts: Counter[str] = Counter()

    def draw(self) -> str | None:
        self.connections += 1
        if self.rate <= 0 or self.random.random() >= self.rate:
            return None
        kind = self.random.choice(self.kinds)
        self.counts[kind] += 1
        return kind
