"""The push handler over a sans-IO link that keeps before it confirms (fep.protocols.push):
its link's actions done in order, a bug in one logged and the rest still done, records
confirmed only once the sink has them, a failed store not confirmed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial import unittest

from fep.model import ObisCode, Reading, Record
from fep.protocols.session import LinkPushHandler

READING = Reading("m1", ObisCode(1, 0, 1, 8, 0), 1.0, meter_time=datetime(2026, 1, 1, tzinfo=UTC))


@attrs.define
class Stats:
    frames: int = 0


@attrs.frozen
class Store:
    records: tuple[Record, ...]
    confirm: bytes


@attrs.frozen
class Broken:
    """An action the handler has a bug for."""


class Link:
    """Hands out the actions it was given, one frame each."""

    def __init__(self, actions: list[object]) -> None:
        self.actions = actions
        self.stats = Stats()

    def receive(self, data: bytes) -> list[object]:
        self.stats.frames += len(self.actions)
        out, self.actions = self.actions, []
        return out

    def pending(self) -> int:
        return 3

    def take_buffered(self) -> bytes:
        return b"abc"


class Sink:
    def __init__(self) -> None:
        self.submitted: list[Deferred[None]] = []
        self.records: list[Record] = []

    def submit(self, records: list[Record]) -> Deferred[None]:
        self.records += records
        d: Deferred[None] = Deferred()
        self.submitted.append(d)
        return d


class Handler(LinkPushHandler):
    logger = Logger(namespace="tests.protocols.test_push")

    def __init__(self, link: Link, sink: Sink) -> None:
        self.written: list[bytes] = []
        super().__init__(link, sink, reply=self.written.append, source="gprs:imei=1")
        self.failed: list[bytes] = []

    def _fields(self) -> dict[str, Any]:
        return {"meter": "m1", "address": "A1", "route": self.source}

    def _do(self, action: object) -> None:
        if isinstance(action, Broken):
            raise RuntimeError("a bug")
        assert isinstance(action, Store)
        confirm = action.confirm
        self._store(action.records, what="a report", fields=self._fields(),
                    then=lambda: self.written.append(confirm),
                    otherwise=lambda: self.failed.append(confirm),
                    stored="{meter}: {what}: {count} stored",
                    not_stored="{meter}: {what} not stored")  # fmt: skip


class LinkPushHandlerTests(unittest.TestCase):
    def test_confirmed_only_once_stored(self) -> None:
        sink = Sink()
        handler = Handler(Link([Store((READING,), b"ok")]), sink)
        handler.data_received(b"x")
        self.assertEqual((sink.records, handler.written), ([READING], []))
        sink.submitted[0].callback(None)
        self.assertEqual(handler.written, [b"ok"])
        self.assertEqual(handler.frames, 1)

    def test_not_stored_is_not_confirmed(self) -> None:
        sink = Sink()
        handler = Handler(Link([Store((READING,), b"ok")]), sink)
        handler.data_received(b"x")
        sink.submitted[0].errback(Failure(OSError("disk full")))
        self.assertEqual((handler.written, handler.failed), ([], [b"ok"]))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_nothing_to_store_is_confirmed_at_once(self) -> None:
        sink = Sink()
        handler = Handler(Link([Store((), b"ok")]), sink)
        handler.data_received(b"x")
        self.assertEqual((sink.submitted, handler.written), ([], [b"ok"]))

    def test_a_bug_in_one_action_is_logged_and_the_next_still_done(self) -> None:
        sink = Sink()
        handler = Handler(Link([Broken(), Store((), b"ok")]), sink)
        handler.data_received(b"x")
        self.assertEqual(handler.written, [b"ok"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_the_links_buffer_is_the_handlers(self) -> None:
        handler = Handler(Link([]), Sink())
        self.assertEqual((handler.pending(), handler.take_buffered()), (3, b"abc"))
