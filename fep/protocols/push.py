"""The push handler of a protocol whose sans-IO link keeps what a device reports before it
confirms it (Q/GDW 1376.1 concentrators, DTUs with DL/T 645 meters behind them): the link's
actions done in turn, a bug in one logged and never raised into the reactor; records handed
to the sink, and the link or the line told only once the sink has them (or has failed).

A protocol's session.py subclasses ``LinkPushHandler`` with what is its own (``_do``: what
each of its link's actions means; its log texts). No timers here: a link that waits for an
answer keeps its own deadlines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from twisted.logger import Logger
from twisted.python.failure import Failure

from fep.interfaces import IRecordSink
from fep.model import Record
from fep.ratelog import RateLimitedLog


class LinkPushHandler:
    """Feeds a connection's bytes to ``link`` (``receive(bytes)`` -> actions, ``stats``,
    ``pending()``, ``take_buffered()``) and does its actions; ``reply(bytes)`` writes to
    the device (None: the connection cannot answer); ``source`` names the connection."""

    # The protocol's own logger (its namespace in the log).
    logger: ClassVar[Logger]

    def __init__(self, link: Any, sink: IRecordSink, *, reply: Callable[[bytes], None] | None,
                 source: str, events: RateLimitedLog | None = None) -> None:  # fmt: skip
        self.link = link
        self.sink = sink
        self.reply = reply
        self.source = source
        self.events = events if events is not None else RateLimitedLog(self.logger)
        self.frames = 0
        # Frames the link took before this handler had it (a predecessor's).
        self._frames_before = 0

    @property
    def stats(self) -> Any:
        return self.link.stats

    def _fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        self._perform(self.link.receive(data))
        self.frames = self.link.stats.frames - self._frames_before

    def pending(self) -> int:
        pending: int = self.link.pending()
        return pending

    def take_buffered(self) -> bytes:
        buffered: bytes = self.link.take_buffered()
        return buffered

    def _perform(self, actions: Sequence[object]) -> None:
        for action in actions:
            try:
                self._do(action)
            except Exception:  # a bug must not escape into the reactor
                self.logger.failure("{route} ({meter}, {address}): handling {action} failed",
                                    action=type(action).__name__, **self._fields())  # fmt: skip

    def _do(self, action: object) -> None:
        raise NotImplementedError

    def _store(self, records: Sequence[Record], *, then: Callable[[], None] | None,
               stored: str, not_stored: str, fields: dict[str, Any], what: str,
               otherwise: Callable[[], None] | None = None) -> None:  # fmt: skip
        """``records`` to the sink; ``then()`` once it has them (at once when there are
        none), logged with the text ``stored`` ({what}, {count} and ``fields``);
        ``otherwise()`` when it failed, logged with ``not_stored`` and the failure."""
        if not records:
            if then is not None:
                then()
            return

        def kept(_: object) -> None:
            self.logger.info(stored, what=what, count=len(records), **fields)
            if then is not None:
                then()

        def lost(failure: Failure) -> None:
            self.logger.failure(not_stored, failure, what=what, **fields)
            if otherwise is not None:
                otherwise()

        self.sink.submit(list(records)).addCallbacks(kept, lost)


__all__ = ["LinkPushHandler"]
