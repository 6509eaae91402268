"""The router: the record sink every meter session uses. Records are batched, journaled in
the spool (durable before ``submit`` fires), committed to the store in order, and released
from the spool after the commit. A failing store is retried with backoff while the spool
keeps taking records; the state changes are logged once each, not per record."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from fep.errors import FepError, RecordRejected, StoreError
from fep.interfaces import IRecordSink, IStore
from fep.model import Record
from fep.store.spool import Spool

log = Logger()


class RouterStopped(StoreError):
    """Records submitted after the router stopped: refused at once, never taken to be lost."""


@implementer(IRecordSink)
class Router(service.Service):
    """Spool first, then the store; nothing accepted is lost."""

    name = "router"
    initial_backoff = 0.5
    backoff_factor = 2.0
    max_backoff = 30.0

    def __init__(
        self,
        spool: Spool,
        store: IStore,
        reactor: IReactorTime,
        *,
        batch_size: int = 5000,
        write_batch: int | None = None,
        max_delay: float = 0.05,
        flush_timeout: float = 30.0,
        write_concurrency: int = 2,
    ) -> None:
        self.spool = spool
        self.write_concurrency = write_concurrency
        self.store = store
        self._reactor = reactor
        self.batch_size = batch_size
        # Most records in one store write: batches that wait for the store (a backlog) are
        # merged up to this; never less than a spool batch.
        self.write_batch = max(batch_size, write_batch or batch_size)
        self.max_delay = max_delay
        self.flush_timeout = flush_timeout
        self._incoming: list[Record] = []
        self._incoming_waiters: list[Deferred[None]] = []
        self._timer: Any = None
        self._spooling = 0
        self._queue: deque[tuple[int, Sequence[Record]]] = deque()
        self._writing = 0  # store writes in flight
        self._retry: Any = None
        self._backoff = self.initial_backoff
        self._down_since: float | None = None
        self._ready: Deferred[None] | None = None
        self._idle_waiters: list[Deferred[bool]] = []
        # Pieces a batch was split into while looking for a rejected record (batch id ->
        # pieces not yet committed); the batch is released when its last piece is.
        self._pieces: dict[int, int] = {}
        self._isolate = 0
        # Called with every batch the store committed, before its spool entry is released
        # (so a crash in between replays it: at-least-once for what they feed, e.g. the
        # alarm engine and the northbound outbox). A hook returns a Deferred or None.
        self.committed_hooks: list[Callable[[Sequence[Record]], Deferred[None] | None]] = []
        self.rejected = 0
        self.submitted = 0
        self.spooled = 0
        self.committed = 0
        self.store_failures = 0
        # Set once stopping has drained what was accepted: the spool closes, nothing more
        # can be written, so ``submit`` refuses (RouterStopped) until the next start.
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopped = False

        async def start() -> None:
            replay = await self.spool.open()
            for batch_id, records in replay:
                self._queue.append((batch_id, records))
            self._pump()

        self._ready = Deferred.fromCoroutine(start())
        self._ready.addErrback(lambda f: log.failure("the spool could not be opened", f))

    def stopService(self) -> Deferred[None]:
        super().stopService()

        async def stop() -> None:
            if self._ready is not None:
                await self._ready
            drained = await self.flush(self.flush_timeout)
            self._stopped = True
            if not drained:
                log.warn(
                    "store did not take everything within {timeout} s; {depth} records "
                    "stay in the spool for the next start",
                    timeout=self.flush_timeout,
                    depth=self.spool.depth(),
                )
            if self._retry is not None and self._retry.active():
                self._retry.cancel()
            await self.spool.close()

        return Deferred.fromCoroutine(stop())

    # -- IRecordSink ---------------------------------------------------------

    def submit(self, records: Sequence[Record]) -> Deferred[None]:
        """Records accepted into the spool (see IRecordSink); RouterStopped when the router
        has stopped (its spool closed): they would never be written."""
        if not records:
            return succeed(None)
        if self._stopped:
            return fail(RouterStopped(
                f"the router is stopped (its spool is closed): {len(records)} records "
                "refused, neither spooled nor stored"))
        self.submitted += len(records)
        d: Deferred[None] = Deferred()
        self._incoming.extend(records)
        self._incoming_waiters.append(d)
        if len(self._incoming) >= self.batch_size:
            self._to_spool()
        elif self._timer is None:
            self._timer = self._reactor.callLater(self.max_delay, self._to_spool)
        return d

    def depth(self) -> int:
        """Records accepted (or being accepted) and not yet committed."""
        return len(self._incoming) + self.spool.depth()

    # -- spool ---------------------------------------------------------------

    def _to_spool(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self._incoming:
            return
        records, self._incoming = self._incoming, []
        waiters, self._incoming_waiters = self._incoming_waiters, []
        self._spooling += 1

        def spooled(batch_id: int) -> None:
            self._spooling -= 1
            self.spooled += len(records)
            self._queue.append((batch_id, records))
            for w in waiters:
                w.callback(None)
            self._pump()

        def failed(failure: Any) -> None:
            self._spooling -= 1
            for w in waiters:
                w.errback(failure)
            self._check_idle()

        self.spool.append(records).addCallbacks(spooled, failed)

    # -- store ---------------------------------------------------------------

    def _pump(self) -> None:
        if (
            self._writing >= self.write_concurrency
            or not self._queue
            or (self._retry is not None and self._retry.active())
        ):
            self._check_idle()
            return
        taken: list[tuple[int, Sequence[Record]]] = []
        records: list[Record] = []
        while self._queue and (
            not records or len(records) + len(self._queue[0][1]) <= self.write_batch
        ):
            batch = self._queue.popleft()
            taken.append(batch)
            records.extend(batch[1])
            if self._isolate:
                # Looking for a rejected record: one piece per write, no merging.
                self._isolate -= 1
                break
        self._writing += 1

        def committed(_: object) -> None:
            if self._down_since is not None:
                log.info(
                    "store {url} back after {seconds:.1f} s; draining {depth} records",
                    url=self.store.url,
                    seconds=self._reactor.seconds() - self._down_since,
                    depth=self.spool.depth(),
                )
                self._down_since = None
            self.committed += len(records)
            self._backoff = self.initial_backoff
            # The batch is done (and released) once its hooks are.
            if self.committed_hooks:
                self._after_commit(records).addBoth(lambda _: hooked())
            else:
                hooked()

        def hooked() -> None:
            self._writing -= 1
            for batch_id, _batch in taken:
                self._piece_done(batch_id)
            self._pump()

        def failed(failure: Any) -> None:
            self._writing -= 1
            if isinstance(failure.value, RecordRejected):
                self._rejected(taken, failure.value)
                return
            self.store_failures += 1
            self._queue.extendleft(reversed(taken))  # back in front, in order, for the retry
            if self._down_since is None:
                self._down_since = self._reactor.seconds()
                error = failure.value if isinstance(failure.value, FepError) else failure
                log.warn(
                    "store {url} unavailable ({error}); spooling, retrying with backoff",
                    url=self.store.url,
                    error=error,
                )
            if self._retry is None or not self._retry.active():
                delay = self._backoff
                self._backoff = min(self._backoff * self.backoff_factor, self.max_backoff)
                self._retry = self._reactor.callLater(delay, self._retry_now)
            self._check_idle()

        self.store.write(records).addCallbacks(committed, failed)
        # Two transactions in flight keep the database busy while this process prepares
        # the next batch (the unique keys make their order irrelevant).
        self._pump()

    def _after_commit(self, records: Sequence[Record]) -> Deferred[None]:
        """Run the committed hooks; a failing hook is logged, never blocks the spool."""

        async def run() -> None:
            for hook in list(self.committed_hooks):
                try:
                    result = hook(records)
                    if result is not None:
                        await result
                except Exception:
                    log.failure("a committed-records hook failed ({hook})", hook=repr(hook))

        return Deferred.fromCoroutine(run())

    def _piece_done(self, batch_id: int) -> None:
        left = self._pieces.pop(batch_id, 1) - 1
        if left > 0:
            self._pieces[batch_id] = left
        else:
            self.spool.release(batch_id)

    def _rejected(self, taken: list[tuple[int, Sequence[Record]]], error: RecordRejected) -> None:
        """Halve what was rejected until the refused records stand alone; set those aside
        (journaled in the rejected file, never silently dropped) and carry on."""
        if len(taken) == 1 and len(taken[0][1]) == 1:
            batch_id, records = taken[0]
            self.rejected += 1
            log.error(
                "store {url} refused a record of meter {meter} ({error}); it is kept in "
                "{file}",
                url=self.store.url,
                meter=getattr(records[0], "meter", "?"),
                error=error,
                file=str(self.spool.rejected_path),
            )

            def set_aside(_: object) -> None:
                self._piece_done(batch_id)
                self._pump()

            self.spool.reject(records).addCallback(set_aside)
            return
        if len(taken) > 1:
            pieces = taken
        else:
            batch_id, records = taken[0]
            half = len(records) // 2
            pieces = [(batch_id, records[:half]), (batch_id, records[half:])]
            self._pieces[batch_id] = self._pieces.get(batch_id, 1) + 1
        self._queue.extendleft(reversed(pieces))
        self._isolate = len(pieces)
        self._pump()

    def _retry_now(self) -> None:
        self._retry = None
        self._pump()

    # -- flush ---------------------------------------------------------------

    def _idle(self) -> bool:
        return not self._incoming and not self._spooling and not self._queue and not self._writing

    def _check_idle(self) -> None:
        if self._idle():
            waiters, self._idle_waiters = self._idle_waiters, []
            for w in waiters:
                if not w.called:
                    w.callback(True)

    def flush(self, timeout: float) -> Deferred[bool]:
        """Fires True once everything accepted so far is committed, or False after
        ``timeout`` seconds."""
        if self._ready is not None and not self._ready.called:
            # The spool's replay is not queued yet: wait for it, then flush.
            async def after_ready() -> bool:
                assert self._ready is not None
                await self._ready
                return await self.flush(timeout)

            return Deferred.fromCoroutine(after_ready())
        self._to_spool()
        d: Deferred[bool] = Deferred()
        if self._idle():
            d.callback(True)
            return d
        self._idle_waiters.append(d)
        if self._retry is not None and self._retry.active():
            # Shutting down: try the store once more now rather than after the backoff.
            self._retry.cancel()
            self._retry_now()

        def expired() -> None:
            if not d.called:
                d.callback(False)

        timer = self._reactor.callLater(timeout, expired)

        def settled(result: bool) -> bool:
            if timer.active():
                timer.cancel()
            return result

        return d.addCallback(settled)
