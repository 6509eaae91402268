"""DLMS invocation counters: the ones fep sends with (reserved in blocks before use, so no
counter is ever used twice) and the last one accepted from each meter's system title and key
(so a replayed APDU is refused after a restart too).

Names: a send counter is kept per ``CLIENT_TITLE_HEX:KEY_FINGERPRINT`` and, across the keys
of one meter, per ``CLIENT_TITLE_HEX:METER_ID`` (a floor that every reservation for the meter
raises, so that a new key's counters continue above the old key's: meters that do not start
their counter sequence again at a key change keep accepting us). A received counter is kept
per ``METER_TITLE_HEX:KEY_FINGERPRINT`` (a new key starts a new sequence, as the standard
has it); an entry of the title alone (from before) counts for the first key seen with that
title and is ignored once the title has an entry per key.

Two keepers behind one interface (``IInvocationCounters``), picked by the store's kind
(``invocation_counters``):

- PostgreSQL (``StoreInvocationCounters``): the counters are rows of the store (table
  ``dlms_counters``, migration 0005) shared by every node. A block is reserved with one
  ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` and a received counter is accepted with
  one conditional upsert, so two nodes never hand out the same counter nor both accept the
  same push.
- SQLite, one node (``InvocationCounterFile``): a small JSON file in the data directory,
  replaced atomically (write, fsync, rename) in a worker thread under an advisory lock (the
  daemon and ``fep read`` share it). Every value written is also raised as a high-water mark
  in the store; a file that is missing or below the marks refuses to open
  (``CounterStateLost``) instead of starting again at 1.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from fep.errors import FepError
from fep.reactors import ITimeAndThreads

log = Logger(namespace="fep.store.counters")

# Counters reserved per write: a session rarely needs more, and the 32-bit space lasts.
RESERVE_BLOCK = 1000
FILE_NAME = "dlms-invocation-counters.json"

Data = dict[str, dict[str, int]]


class CounterStateLost(FepError):
    """The counter file is missing or older than the store's high-water marks: starting
    would send invocation counters again that meters have already seen."""


class IInvocationCounters(Interface):
    """Where DLMS invocation counters are kept. ``send`` counters are ours, by key
    (``CLIENT_SYSTEM_TITLE_HEX:KEY_FINGERPRINT``, and per meter across its keys); ``received``
    ones a meter's, by its system title and key fingerprint (``METER_TITLE_HEX:FINGERPRINT``;
    the title alone when no fingerprint is given, as before)."""

    where = Attribute("where the counters are kept, for messages (a path or a store URL)")

    def open() -> Deferred[None]:
        """Load or connect; CounterStateLost when the counters cannot be trusted."""

    def reserve(key: str, count: int = RESERVE_BLOCK, legacy_key: str | None = None,
                meter_key: str | None = None) -> Deferred[int]:
        """The first of ``count`` counters that are ours to use for ``key`` (above any
        counter of ``legacy_key``, an older name of the same key, and of ``meter_key``, the
        name of one meter's counters across all its keys, which the block raises), recorded
        as used before this fires."""

    def accept_received(system_title: bytes, counter: int, key_fingerprint: str | None = None
                        ) -> Deferred[tuple[bool, int | None]]:
        """(accepted, the last accepted before): ``counter`` is accepted and remembered only
        when above the last one accepted from ``system_title`` under the key of
        ``key_fingerprint`` (a title-only entry from before counting for the first key seen)."""

    def last_received(system_title: bytes, key_fingerprint: str | None = None) -> int | None:
        """The last counter this process saw accepted from ``system_title`` (under the key
        of ``key_fingerprint``)."""

    def close() -> Deferred[None]:
        """Write what is pending."""


# -- the file (SQLite store, or no store) ------------------------------------------------------


def received_name(system_title: bytes, key_fingerprint: str | None) -> str:
    """The name a meter's received counter is kept under."""
    title = system_title.hex()
    return title if key_fingerprint is None else f"{title}:{key_fingerprint}"


def _last_received(received: dict[str, int], system_title: bytes, key_fingerprint: str | None
                   ) -> int | None:
    """The last counter accepted from ``system_title`` under the key: its own entry, else the
    title-only entry from before while the title has no entry of any key yet."""
    name = received_name(system_title, key_fingerprint)
    if name in received or key_fingerprint is None:
        return received.get(name)
    legacy = received.get(system_title.hex())
    if legacy is None:
        return None
    prefix = system_title.hex() + ":"
    if any(k.startswith(prefix) for k in received):
        return None  # the old entry was taken by the key in use when it was first seen
    return legacy


def _empty() -> Data:
    return {"send": {}, "received": {}}


def _load(path: Path) -> Data:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return _empty()
    try:
        data = json.loads(text)
        return {"send": {k: int(v) for k, v in dict(data.get("send", {})).items()},
                "received": {k: int(v) for k, v in dict(data.get("received", {})).items()}}
    except (ValueError, TypeError, AttributeError) as e:
        raise CounterStateLost(
            f"DLMS invocation counter file {path} cannot be read ({e}): restore it from a "
            "backup; fep does not start again at 1"
        ) from None


def _save(path: Path, data: Data) -> None:
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
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An advisory lock next to the file: the daemon and ``fep read`` take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _reserve_in_file(path: Path, key: str, count: int, floor: int, legacy_key: str | None,
                     meter_key: str | None = None) -> tuple[int, Data]:
    with _locked(path):
        data = _load(path)
        start = max(data["send"].get(key, 1), floor, 1)
        for other in (legacy_key, meter_key):
            if other is not None:
                start = max(start, data["send"].get(other, 1))
        data["send"][key] = start + count
        if meter_key is not None:
            data["send"][meter_key] = start + count
        _save(path, data)
        return start, data


def _merge_into_file(path: Path, received: dict[str, int]) -> Data:
    with _locked(path):
        data = _load(path)
        for title, counter in received.items():
            data["received"][title] = max(data["received"].get(title, counter), counter)
        _save(path, data)
        return data


def _open_file(path: Path) -> tuple[bool, Data]:
    with _locked(path):
        return path.exists(), _load(path)


# High-water marks in the SQLite store (run on the store's thread).


def _sqlite_marks(conn: Any) -> list[tuple[str, str, int]]:
    return [(k, key, int(v)) for k, key, v in
            conn.execute("SELECT kind, key, value FROM dlms_counters").fetchall()]


def _sqlite_raise_marks(conn: Any, rows: list[tuple[str, str, int]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT INTO dlms_counters (kind, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, key) DO UPDATE SET value = max(value, excluded.value)",
            rows,
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _merge_max(into: Data, other: Data) -> None:
    for kind in ("send", "received"):
        for key, value in other[kind].items():
            into[kind][key] = max(into[kind].get(key, value), value)


@implementer(IInvocationCounters)
class InvocationCounterFile:
    """Invocation counters in a JSON file: ``send`` keys are ours, ``received`` keys a
    meter's system title in hex. With ``marks`` (an open SqliteStore), every value written
    is raised as a high-water mark in the store, and ``open`` refuses a file that is missing
    or below them."""

    def __init__(self, reactor: ITimeAndThreads, path: str | Path, marks: Any = None) -> None:
        self.reactor = reactor
        self.path = Path(path)
        self.where = str(self.path)
        self.marks = marks
        self._data: Data = _empty()
        self._lock = DeferredLock()
        self._dirty: set[str] = set()
        self._save_call: Any = None
        # Nothing is written back unless open() succeeded (a refused file stays as it is).
        self._opened = False

    def _in_thread(self, f: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    def open(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._open())

    async def _open(self) -> None:
        exists, self._data = await self._in_thread(_open_file, self.path)
        if self.marks is None:
            self._opened = True
            return
        marks = await self.marks.interact(_sqlite_marks)
        self.check_marks(exists, marks)
        rows = [(kind, key, value) for kind in ("send", "received")
                for key, value in self._data[kind].items()]
        if rows:
            await self.marks.interact(_sqlite_raise_marks, rows)
        self._opened = True

    def check_marks(self, exists: bool, marks: list[tuple[str, str, int]]) -> None:
        """CounterStateLost naming the file when it is missing while the store says counters
        were used, or when any of its values is below the store's mark."""
        store = getattr(self.marks, "url", "the store")
        if marks and not exists:
            raise CounterStateLost(
                f"DLMS invocation counter file {self.path} is missing, but {store} records "
                f"{len(marks)} counters in use: restore the file (or the whole data directory) "
                "from a backup, or give the meters new keys; fep will not start again at 1 "
                "and reuse counters the meters have seen"
            )
        for kind, key, value in marks:
            have = self._data[kind].get(key)
            if have is None or have < value:
                raise CounterStateLost(
                    f"DLMS invocation counter file {self.path} is older than {store}: its "
                    f"{kind} counter {key} is {have if have is not None else 'absent'}, the "
                    f"store's mark is {value}; restore the newest copy of the file, or give "
                    "the meters new keys; fep will not start with counters that may repeat"
                )

    async def _raise_marks(self, rows: list[tuple[str, str, int]]) -> None:
        if self.marks is not None and rows:
            await self.marks.interact(_sqlite_raise_marks, rows)

    def reserve(self, key: str, count: int = RESERVE_BLOCK, legacy_key: str | None = None,
                meter_key: str | None = None) -> Deferred[int]:
        async def reserving() -> int:
            floor = max(self._data["send"].get(key, 1),
                        self._data["send"].get(meter_key, 1) if meter_key is not None else 1)
            start, data = await self._lock.run(
                self._in_thread, _reserve_in_file, self.path, key, count, floor, legacy_key,
                meter_key)
            _merge_max(self._data, data)
            marks = [("send", key, start + count)]
            if meter_key is not None:
                marks.append(("send", meter_key, start + count))
            await self._raise_marks(marks)
            return int(start)

        return Deferred.fromCoroutine(reserving())

    def last_received(self, system_title: bytes, key_fingerprint: str | None = None
                      ) -> int | None:
        return _last_received(self._data["received"], system_title, key_fingerprint)

    def accept_received(self, system_title: bytes, counter: int,
                        key_fingerprint: str | None = None) -> Deferred[tuple[bool, int | None]]:
        """Checked and remembered at once in memory; written within a second (a replay
        inside that second after a crash stores nothing twice anyway: readings are
        idempotent)."""
        last = self.last_received(system_title, key_fingerprint)
        if last is not None and counter <= last:
            return succeed((False, last))
        self.accept(system_title, counter, key_fingerprint)
        return succeed((True, last))

    def accept(self, system_title: bytes, counter: int, key_fingerprint: str | None = None
               ) -> None:
        """Remember ``counter`` as the last accepted from ``system_title`` (under the key of
        ``key_fingerprint``)."""
        name = received_name(system_title, key_fingerprint)
        self._data["received"][name] = counter
        self._dirty.add(name)
        if self._save_call is None or not self._save_call.active():
            self._save_call = self.reactor.callLater(1.0, self._flush)

    async def _write(self) -> None:
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        received = {k: self._data["received"][k] for k in dirty}
        data = await self._lock.run(self._in_thread, _merge_into_file, self.path, received)
        _merge_max(self._data, data)
        await self._raise_marks([("received", k, v) for k, v in received.items()])

    def _flush(self) -> Deferred[None]:
        self._save_call = None
        d: Deferred[None] = Deferred.fromCoroutine(self._write())
        d.addErrback(lambda f: log.failure("cannot save invocation counters", f))
        return d

    def close(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
            self._save_call = None
        if self._opened:
            await self._write()


# -- PostgreSQL: the counters are rows of the store ---------------------------------------------


async def _pg_reserve(cursor: Any, key: str, count: int, legacy_key: str | None,
                      meter_key: str | None = None) -> int:
    await cursor.execute(
        "WITH floor AS (SELECT GREATEST(1, COALESCE(max(value), 1)) AS value FROM dlms_counters"
        "  WHERE kind = 'send' AND key IN (%(legacy)s, %(meter)s))"
        " INSERT INTO dlms_counters (kind, key, value) VALUES ('send', %(key)s,"
        " (SELECT value FROM floor) + %(count)s)"
        " ON CONFLICT (kind, key) DO UPDATE SET"
        " value = GREATEST(dlms_counters.value, (SELECT value FROM floor)) + %(count)s"
        " RETURNING value",
        {"key": key, "legacy": legacy_key, "meter": meter_key, "count": count},
    )
    (value,) = cursor.fetchone()
    if meter_key is not None:
        # The meter's floor across its keys: a next key's counters continue above this block.
        await cursor.execute(
            "INSERT INTO dlms_counters (kind, key, value) VALUES ('send', %s, %s)"
            " ON CONFLICT (kind, key) DO UPDATE"
            " SET value = GREATEST(dlms_counters.value, EXCLUDED.value)",
            (meter_key, int(value)),
        )
    return int(value) - count


async def _pg_accept(cursor: Any, title: str, counter: int, key_fingerprint: str | None = None
                     ) -> tuple[bool, int | None]:
    if key_fingerprint is not None:
        return await _pg_accept_keyed(cursor, title, counter, key_fingerprint)
    # The sub-select sees the row as it was before the upsert (one snapshot per statement).
    await cursor.execute(
        "WITH up AS (INSERT INTO dlms_counters (kind, key, value) VALUES ('received', %s, %s)"
        " ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value"
        " WHERE dlms_counters.value < EXCLUDED.value RETURNING value)"
        " SELECT (SELECT count(*) FROM up),"
        " (SELECT value FROM dlms_counters WHERE kind = 'received' AND key = %s)",
        (title, counter, title),
    )
    accepted, previous = cursor.fetchone()
    return bool(accepted), None if previous is None else int(previous)


async def _pg_accept_keyed(cursor: Any, title: str, counter: int, key_fingerprint: str
                           ) -> tuple[bool, int | None]:
    """The per-key check and upsert in one statement. The title-only row from before is the
    floor while the title has no row of any key (then the first accepted creates one)."""
    await cursor.execute(
        "WITH legacy AS (SELECT value FROM dlms_counters WHERE kind = 'received'"
        "  AND key = %(title)s AND NOT EXISTS (SELECT 1 FROM dlms_counters"
        "  WHERE kind = 'received' AND key LIKE %(prefix)s)),"
        " up AS (INSERT INTO dlms_counters (kind, key, value)"
        "  SELECT 'received', %(key)s, %(counter)s"
        "  WHERE %(counter)s > COALESCE((SELECT value FROM legacy), -1)"
        "  ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value"
        "  WHERE dlms_counters.value < EXCLUDED.value RETURNING value)"
        " SELECT (SELECT count(*) FROM up),"
        " COALESCE((SELECT value FROM dlms_counters WHERE kind = 'received' AND key = %(key)s),"
        " (SELECT value FROM legacy))",
        {"title": title, "prefix": f"{title}:%", "key": f"{title}:{key_fingerprint}",
         "counter": counter},
    )
    accepted, previous = cursor.fetchone()
    return bool(accepted), None if previous is None else int(previous)


async def _pg_import(cursor: Any, rows: list[tuple[str, str, int]]) -> None:
    for kind, key, value in rows:
        await cursor.execute(
            "INSERT INTO dlms_counters (kind, key, value) VALUES (%s, %s, %s)"
            " ON CONFLICT (kind, key) DO UPDATE"
            " SET value = GREATEST(dlms_counters.value, EXCLUDED.value)",
            (kind, key, value),
        )


@implementer(IInvocationCounters)
class StoreInvocationCounters:
    """Invocation counters as rows of an open PostgresStore, through its ``interact``: any
    node can run any job, and a push replayed to another node is refused there too.
    ``legacy_file``, a counter file from before the counters lived in the store, is taken
    in at ``open`` (each value raised to at least the file's)."""

    def __init__(self, store: Any, legacy_file: str | Path | None = None) -> None:
        self.store = store
        self.where = str(getattr(store, "url", "the store"))
        self.legacy_file = Path(legacy_file) if legacy_file is not None else None
        self._last: dict[tuple[bytes, str | None], int] = {}
        # Accepts of one system title run in order (a pool of connections could swap them).
        self._locks: dict[bytes, DeferredLock] = {}

    def open(self) -> Deferred[None]:
        async def opening() -> None:
            if self.legacy_file is None or not self.legacy_file.exists():
                return
            data = _load(self.legacy_file)
            rows = [(kind, key, value) for kind in ("send", "received")
                    for key, value in data[kind].items()]
            if rows:
                await self.store.interact(_pg_import, rows)
                log.info("DLMS invocation counters of {file} taken into the store",
                         file=str(self.legacy_file))

        return Deferred.fromCoroutine(opening())

    def reserve(self, key: str, count: int = RESERVE_BLOCK, legacy_key: str | None = None,
                meter_key: str | None = None) -> Deferred[int]:
        d: Deferred[int] = self.store.interact(_pg_reserve, key, count, legacy_key, meter_key)
        return d

    def accept_received(self, system_title: bytes, counter: int,
                        key_fingerprint: str | None = None) -> Deferred[tuple[bool, int | None]]:
        lock = self._locks.setdefault(system_title, DeferredLock())

        def remember(result: tuple[bool, int | None]) -> tuple[bool, int | None]:
            if result[0]:
                self._last[(system_title, key_fingerprint)] = counter
            return result

        d: Deferred[tuple[bool, int | None]] = lock.run(
            self.store.interact, _pg_accept, system_title.hex(), counter, key_fingerprint)
        return d.addCallback(remember)

    def last_received(self, system_title: bytes, key_fingerprint: str | None = None
                      ) -> int | None:
        return self._last.get((system_title, key_fingerprint))

    def close(self) -> Deferred[None]:
        return succeed(None)


def invocation_counters(
    reactor: ITimeAndThreads, store: Any, data_dir: str | Path
) -> IInvocationCounters:
    """The counter keeper for ``store``: its own rows on PostgreSQL (a counter file left in
    ``data_dir`` is taken in), else the file in ``data_dir`` with high-water marks in the
    SQLite store. Not yet open."""
    from fep.store.postgres import PostgresStore
    from fep.store.sqlite import SqliteStore

    path = Path(data_dir) / FILE_NAME
    if isinstance(store, PostgresStore):
        return StoreInvocationCounters(store, legacy_file=path)
    return InvocationCounterFile(reactor, path,
                                 marks=store if isinstance(store, SqliteStore) else None)
