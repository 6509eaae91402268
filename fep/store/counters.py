"""DLMS invocation counters kept on disk: the ones fep sends with (reserved in blocks before
use, so a crash never lets a counter be used twice) and the last one accepted from each
meter's system title (so a replayed push is refused after a restart too).

The file is small JSON, replaced atomically (write, fsync, rename) in a worker thread, never
on the reactor thread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

log = Logger(namespace="fep.store.counters")

# Counters reserved per write: a session rarely needs more, and the 32-bit space lasts.
RESERVE_BLOCK = 1000


def _load(path: Path) -> dict[str, dict[str, int]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {"send": {}, "received": {}}
    data = json.loads(text)
    return {"send": dict(data.get("send", {})), "received": dict(data.get("received", {}))}


def _save(path: Path, data: dict[str, dict[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # 0600 like every file of the store: the counters say how far a key has been used.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class InvocationCounterFile:
    """Invocation counters by key: ``send`` keys are ours (client system title + meter),
    ``received`` keys a meter's system title in hex."""

    def __init__(self, reactor: Any, path: str | Path) -> None:
        self.reactor = reactor
        self.path = Path(path)
        self._data: dict[str, dict[str, int]] = {"send": {}, "received": {}}
        self._lock = DeferredLock()
        self._dirty = False
        self._save_call: Any = None

    def _in_thread(self, f: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    async def open(self) -> None:
        self._data = await self._in_thread(_load, self.path)

    async def _write(self) -> None:
        snapshot = {k: dict(v) for k, v in self._data.items()}
        await self._lock.run(self._in_thread, _save, self.path, snapshot)

    async def reserve(self, key: str, count: int = RESERVE_BLOCK) -> int:
        """The first of ``count`` counters that are ours to use for ``key``; persisted as
        used before this returns."""
        start = max(self._data["send"].get(key, 1), 1)
        self._data["send"][key] = start + count
        await self._write()
        return start

    def last_received(self, system_title: bytes) -> int | None:
        return self._data["received"].get(system_title.hex())

    def accept(self, system_title: bytes, counter: int) -> None:
        """Remember ``counter`` as the last accepted from ``system_title``; written within
        a second (a replay inside that second after a crash stores nothing twice anyway:
        readings are idempotent)."""
        self._data["received"][system_title.hex()] = counter
        if self._save_call is None or not self._save_call.active():
            self._save_call = self.reactor.callLater(1.0, self._flush)

    def _flush(self) -> Deferred[None]:
        self._save_call = None
        d: Deferred[None] = Deferred.fromCoroutine(self._write())
        d.addErrback(lambda f: log.failure("cannot save invocation counters", f))
        return d

    async def close(self) -> None:
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
            self._save_call = None
        await self._write()
