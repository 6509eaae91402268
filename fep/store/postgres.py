"""The PostgreSQL store: a txpostgres connection pool for queries and every other module's
tables, record batches by COPY on worker threads (``fep.store.copy``), and reconnection after
the server goes away.

txpostgres cannot COPY (psycopg2 async mode), so record batches do not go through it: each
batch is one transaction of COPY into staging tables and ``INSERT ... SELECT ... ON CONFLICT
DO NOTHING`` on a synchronous connection of a worker thread (see ``fep.store.copy``).

txpostgres does not reconnect by itself. Here every use of a pooled connection checks it
first: a connection found closed (the server went away, a query failed on a dead socket, a
deadline expired) is connected again before use. Connecting and every transaction run under
a deadline: when it passes the connection is closed, which fails the operation at once with
StoreError instead of waiting on a silent network, and the next use reconnects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import psycopg2
from twisted.internet import error
from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import txpostgres
from zope.interface import implementer

from fep.errors import RecordRejected, StoreError
from fep.interfaces import IStore
from fep.model import (
    EventKind,
    IntervalBlock,
    Meter,
    MeterEvent,
    Quality,
    Reading,
    Record,
    Severity,
)
from fep.reactors import IStoreReactor
from fep.store import migrations, redact_url
from fep.store.copy import CopyWriter
from fep.store.partitions import rows_table
from fep.store.rows import (
    TABLES,
    IntervalRow,
    decode_value,
    interval_blocks,
    obis_filter,
    obis_of,
    unit_of,
    utc,
)

log = Logger()

T = TypeVar("T")

# Any number will do as long as every fep node uses the same one: it serialises concurrent
# `fep db upgrade` / open() runs on one database.
MIGRATION_LOCK = 0x6665_7001
# Seconds one migration may take (its transaction's deadline): a day, for a migration that
# copies every record of a large database.
MIGRATION_TIMEOUT = 86400.0

UPSERT_METERS = (
    "INSERT INTO meters (id, protocol, route, serial, address, credentials, metadata)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::text[], %s::text[])"
    " ON CONFLICT (id) DO UPDATE SET protocol = excluded.protocol, route = excluded.route,"
    " serial = excluded.serial, address = excluded.address,"
    " credentials = excluded.credentials, metadata = excluded.metadata, updated_at = now()"
)
METER_COLUMNS = "id, protocol, route, serial, address, credentials, metadata"
READING_COLUMNS = (
    "meter, obis, value, value_text, value_type, unit_code, scaler, meter_time,"
    " received_time, quality, source, native_id"
)

# Errors that mean the database or the way to it failed (as opposed to a bug of ours).
_DATABASE_ERRORS = (
    psycopg2.Error,
    error.ConnectionClosed,
    error.ConnectError,
    txpostgres.RollbackFailed,
    txpostgres.AlreadyPolling,
    txpostgres.UnexpectedPollResult,
    OSError,
)

Interaction = Callable[..., Coroutine[Any, Any, T]]


class _Connection(txpostgres.Connection):
    """A txpostgres connection that notices the server going away while it is idle, and
    runs transactions without txpostgres's rollback-failure logging (a rollback on a dead
    connection is expected here: the connection is rebuilt on next use)."""

    def is_open(self) -> bool:
        conn = self._connection
        return conn is not None and not conn.closed

    def doRead(self) -> Any:
        # Between queries txpostgres watches the socket for NOTIFY. When the server closes
        # it, poll() raises there with nobody to report to and the reactor would log a
        # traceback: close the connection instead and tell the reactor it was lost.
        try:
            return super().doRead()
        except (psycopg2.Error, txpostgres.UnexpectedPollResult) as e:
            log.info("PostgreSQL connection lost while idle: {error}", error=str(e).strip())
            try:
                self._connection.close()
            except psycopg2.Error:
                pass
            return error.ConnectionLost(str(e).strip())

    def close(self) -> None:
        if self._connection is None:
            return
        super().close()

    async def transact(self, interaction: Interaction[T], *args: Any) -> T:
        cursor = self.cursor()
        await cursor.execute("BEGIN")
        try:
            result = await interaction(cursor, *args)
        except BaseException:
            if self.is_open():
                try:
                    await cursor.execute("ROLLBACK")
                except _DATABASE_ERRORS:
                    # The connection is in no state to reuse; the next use reconnects.
                    self.close()
            raise
        await cursor.execute("COMMIT")
        return result


def _server_side_deadline(dsn: str, query_timeout: float) -> dict[str, str]:
    """The server's half of the transaction deadline: a session left idle inside a
    transaction for as long as our own deadline (its process frozen, its VM paused) is
    ended by PostgreSQL, so the locks it holds (a line's lease lock among them) do not stall
    every other node. Not when the URL sets its own server options."""
    if "options" in dsn:
        return {}
    ms = max(1000, int(query_timeout * 1000))
    return {"options": f"-c idle_in_transaction_session_timeout={ms}"}


class _Pool(txpostgres.ConnectionPool):
    """txpostgres's pool with a health check at checkout and deadlines on every use."""

    connectionFactory = _Connection

    def __init__(
        self,
        reactor: IStoreReactor,
        dsn: str,
        size: int,
        connect_timeout: float,
        query_timeout: float,
    ) -> None:
        self.reactor: IStoreReactor = reactor
        super().__init__(
            None,
            dsn,
            min=size,
            # libpq ignores connect_timeout in async mode; our deadline covers that, these
            # still bound the TCP side and keep idle connections checked.
            connect_timeout=max(1, int(connect_timeout)),
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
            application_name="fep",
            **_server_side_deadline(dsn, query_timeout),
        )
        self.connect_timeout = connect_timeout
        self.query_timeout = query_timeout
        # The pool's own set holds only idle connections; close() must reach busy ones too.
        self._all: list[_Connection] = list(self.connections)
        self.closed = False

    async def _within(self, c: _Connection, seconds: float, what: str, d: Deferred[T]) -> T:
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            c.close()

        call = self.reactor.callLater(seconds, expire)
        try:
            return await d
        except Exception as e:
            if expired:
                raise StoreError(f"{what} took longer than {seconds:g} s") from e
            raise
        finally:
            if call.active():
                call.cancel()

    async def _connect(self, c: _Connection) -> None:
        if self.closed:
            # Work queued or retried after close() must not open connections again.
            raise StoreError("the store is closed")
        try:
            await self._within(
                c, self.connect_timeout, "connecting", c.connect(*self.connargs, **self.connkw)
            )
            await self._within(
                c,
                self.query_timeout,
                "setting the session",
                c.runOperation("SET TIME ZONE 'UTC'"),
            )
        except BaseException:
            # psycopg2 leaves a failed asynchronous connection looking open (closed == 0):
            # close it so the next use connects afresh instead of using it.
            c.close()
            raise

    def start(self) -> Deferred[None]:
        """Connect every pooled connection; fails if any cannot connect."""

        async def connect_all() -> None:
            try:
                await gatherResults(
                    [Deferred.fromCoroutine(self._connect(c)) for c in self.connections],
                    consumeErrors=True,
                )
            except FirstError as e:
                e.subFailure.raiseException()

        return Deferred.fromCoroutine(connect_all())

    def close(self) -> None:
        self.closed = True
        for c in self._all:
            c.close()

    def run(
        self, interaction: Interaction[T], *args: Any, timeout: float | None = None
    ) -> Deferred[T]:
        """Run ``interaction(cursor, *args)`` in a transaction on a healthy connection,
        within ``timeout`` seconds (default: the pool's query deadline)."""
        result: Deferred[T] = self._semaphore.run(
            self._checkout, interaction, args, timeout or self.query_timeout
        )
        return result

    def _checkout(self, interaction: Interaction[T], args: Any, timeout: float) -> Deferred[T]:
        c = self.connections.pop()
        d = Deferred.fromCoroutine(self._use(c, interaction, args, timeout))
        return d.addBoth(self._putBackAndPassthrough, c)

    async def _use(
        self, c: _Connection, interaction: Interaction[T], args: Any, timeout: float
    ) -> T:
        fresh = not c.is_open()
        if fresh:
            c.close()
            await self._connect(c)
        try:
            return await self._transact(c, interaction, args, timeout)
        except _DATABASE_ERRORS as e:
            if fresh or c.is_open():
                raise
            # A pooled connection that died while idle, before the reactor noticed (the
            # server restarted, a proxy dropped it). One retry on a new connection is safe:
            # at worst the first attempt did commit, and the retry finds its rows present
            # (writes are idempotent; the count of new rows is then low, never doubled).
            log.info(
                "PostgreSQL connection was stale ({error}); reconnecting", error=str(e).strip()
            )
            c.close()
            await self._connect(c)
            return await self._transact(c, interaction, args, timeout)

    def _transact(
        self, c: _Connection, interaction: Interaction[T], args: Any, timeout: float
    ) -> Coroutine[Any, Any, T]:
        return self._within(
            c,
            timeout,
            "the transaction",
            Deferred.fromCoroutine(c.transact(interaction, *args)),
        )


@implementer(IStore)
class PostgresStore:
    """IStore on PostgreSQL through a txpostgres pool of ``pool_size`` connections."""

    def __init__(
        self,
        dsn: str,
        reactor: IStoreReactor | None = None,
        *,
        pool_size: int = 2,
        connect_timeout: float = 5.0,
        query_timeout: float = 60.0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = cast(IStoreReactor, default_reactor)
        self._dsn = dsn
        self.url = redact_url(dsn)
        self._reactor: IStoreReactor = reactor
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.query_timeout = query_timeout
        self._pool: _Pool | None = None
        self._copy: CopyWriter | None = None
        self._starting: Deferred[None] | None = None

    # -- plumbing ------------------------------------------------------------------------

    def _failed(self, f: Failure) -> Failure:
        """Database failures become StoreError naming the store (never its password)."""
        if f.check(StoreError) and not str(f.value).startswith(self.url):
            # Keep the kind: a RecordRejected stays one (the router sets those aside).
            kind = RecordRejected if f.check(RecordRejected) else StoreError
            return Failure(kind(f"{self.url}: {f.value}"))
        if f.check(*_DATABASE_ERRORS):
            message = str(f.value).strip() or type(f.value).__name__
            return Failure(StoreError(f"{self.url}: {message}"))
        return f

    def _run(
        self, interaction: Interaction[T], *args: Any, timeout: float | None = None
    ) -> Deferred[T]:
        if self._pool is None:
            return fail(StoreError(f"{self.url}: store is not open"))
        return self._pool.run(interaction, *args, timeout=timeout).addErrback(self._failed)

    def interact(self, interaction: Interaction[T], *args: Any) -> Deferred[T]:
        """Run ``interaction(cursor, *args)`` in one transaction on a pooled connection: how
        the tables of other modules (the collection engine's jobs, fep.collect.jobstore) share this
        store's pool, deadlines and reconnection. Failures are StoreError."""
        return self._run(interaction, *args)

    async def _start_pool(self) -> None:
        if self._pool is not None:
            return
        pool = _Pool(
            self._reactor, self._dsn, self.pool_size, self.connect_timeout, self.query_timeout
        )
        try:
            await pool.start()
        except Exception:
            pool.close()
            raise
        self._pool = pool
        # Record batches: COPY on worker threads with connections of their own (made on
        # first use, so a store only queried never opens them).
        self._copy = CopyWriter(
            self._reactor,
            self._dsn,
            size=self.pool_size,
            connect_timeout=self.connect_timeout,
            query_timeout=self.query_timeout,
        )

    async def _migrate(self) -> list[str]:
        assert self._pool is not None
        names: list[str] = []
        # One transaction per migration, each re-reading what is applied under the lock, so
        # two nodes starting together apply each file once.
        while True:
            # A migration rewrites tables (0015 copies every record): it has its own,
            # much longer deadline than a query.
            name = await self._run(_apply_next_migration, timeout=MIGRATION_TIMEOUT)
            if name is None:
                return names
            log.info("store {url}: applied migration {name}", url=self.url, name=name)
            names.append(name)

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> Deferred[None]:
        """Connect the pool and apply pending migrations."""

        async def opening() -> None:
            await self._upgrade()

        return Deferred.fromCoroutine(opening()).addErrback(self._failed)

    def upgrade(self) -> Deferred[list[str]]:
        """Apply pending migrations (connecting first if need be)."""
        return Deferred.fromCoroutine(self._upgrade()).addErrback(self._failed)

    async def _upgrade(self) -> list[str]:
        await self._start_pool()
        try:
            return await self._migrate()
        except BaseException:
            # A store that failed to open holds no connections, so a caller that gives up
            # without close() leaks nothing.
            await self.close()
            raise

    def close(self) -> Deferred[None]:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        copy, self._copy = self._copy, None
        if copy is not None:
            return copy.close()
        return succeed(None)

    # -- writes --------------------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> Deferred[int]:
        """Commit a batch in one transaction (COPY on a worker thread, see
        ``fep.store.copy``); fires with how many rows were new."""
        if self._copy is None or self._pool is None:
            return fail(StoreError(f"{self.url}: store is not open"))
        return self._copy.write(records).addErrback(self._failed)

    def add_meters(self, meters: Sequence[Meter]) -> Deferred[int]:
        rows = [
            (
                m.id,
                m.protocol,
                m.route,
                m.serial,
                m.address,
                m.credentials,
                json.dumps(dict(m.metadata), sort_keys=True),
            )
            for m in meters
        ]

        async def upsert(cursor: Any) -> int:
            if rows:
                await cursor.execute(UPSERT_METERS, _columns(rows, _METER_TEXT))
            return len(rows)

        return self._run(upsert)

    # -- queries -------------------------------------------------------------------------

    def meters(self) -> Deferred[list[Meter]]:
        async def query(cursor: Any) -> list[Meter]:
            await cursor.execute(f"SELECT {METER_COLUMNS} FROM meters ORDER BY id")
            return [_meter(row) for row in cursor.fetchall()]

        return self._run(query)

    def meter(self, meter_id: str) -> Deferred[Meter | None]:
        async def query(cursor: Any) -> Meter | None:
            await cursor.execute(f"SELECT {METER_COLUMNS} FROM meters WHERE id = %s", (meter_id,))
            row = cursor.fetchone()
            return None if row is None else _meter(row)

        return self._run(query)

    def readings(
        self,
        meter_id: str,
        since: datetime | None = None,
        obis: str | None = None,
        limit: int | None = None,
    ) -> Deferred[list[Reading]]:
        """A meter's readings ordered by time then OBIS; ``since`` is inclusive."""
        try:
            bound = None if since is None else utc(since)
            code = obis_filter(obis)
        except (StoreError, ValueError) as e:
            return fail(e)
        sql = f"SELECT {READING_COLUMNS} FROM readings WHERE meter = %s"
        params: list[Any] = [meter_id]
        if bound is not None:
            sql += " AND read_at >= %s"
            params.append(bound)
        if code is not None:
            sql += " AND obis = %s"
            params.append(code)
        sql += " ORDER BY read_at, obis"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)

        async def query(cursor: Any) -> list[Reading]:
            await cursor.execute(sql, params)
            return [
                Reading(
                    meter=row[0],
                    obis=obis_of(row[1]),
                    value=decode_value(row[2], row[3], row[4]),
                    unit=unit_of(row[5]),
                    scaler=row[6],
                    meter_time=row[7],
                    received_time=row[8],
                    quality=Quality(row[9]),
                    source=row[10],
                    native_id=row[11],
                )
                for row in cursor.fetchall()
            ]

        return self._run(query)

    def intervals(
        self, meter_id: str, obis: str | None = None, since: datetime | None = None
    ) -> Deferred[list[IntervalBlock]]:
        """A meter's stored intervals, joined into blocks of consecutive intervals, ordered
        by OBIS then start; ``since`` (inclusive) filters on interval start."""
        sql = (
            "SELECT meter, obis, start_time, period_s, value, value_text, value_type, status,"
            " unit_code, scaler, received_time, source FROM intervals WHERE meter = %s"
        )
        try:
            bound = None if since is None else utc(since)
            code = obis_filter(obis)
        except (StoreError, ValueError) as e:
            return fail(e)
        params: list[Any] = [meter_id]
        if code is not None:
            sql += " AND obis = %s"
            params.append(code)
        if bound is not None:
            # The day bound lets compacted days (interval_days) before it go unread.
            sql += " AND start_time >= %s AND start_day >= date_trunc('day', %s, 'UTC')"
            params.extend((bound, bound))
        sql += " ORDER BY obis, start_time"

        async def query(cursor: Any) -> list[IntervalBlock]:
            await cursor.execute(sql, params)
            rows: list[IntervalRow] = [
                (
                    row[0],
                    row[1],
                    row[2].astimezone(UTC),
                    row[3],
                    decode_value(row[4], row[5], row[6]),
                    row[7],
                    row[8],
                    row[9],
                    row[10].astimezone(UTC),
                    row[11],
                )
                for row in cursor.fetchall()
            ]
            return interval_blocks(rows)

        return self._run(query)

    def events(self, meter_id: str, since: datetime | None = None) -> Deferred[list[MeterEvent]]:
        """A meter's events ordered by time then code; ``since`` is inclusive."""
        sql = (
            "SELECT meter, code, kind, severity, time, text, received_time, source"
            " FROM events WHERE meter = %s"
        )
        try:
            bound = None if since is None else utc(since)
        except StoreError as e:
            return fail(e)
        params: list[Any] = [meter_id]
        if bound is not None:
            sql += " AND time >= %s"
            params.append(bound)
        sql += " ORDER BY time, code"

        async def query(cursor: Any) -> list[MeterEvent]:
            await cursor.execute(sql, params)
            return [
                MeterEvent(
                    meter=row[0],
                    code=row[1],
                    kind=EventKind(row[2]),
                    severity=Severity(row[3]),
                    time=row[4],
                    text=row[5],
                    received_time=row[6],
                    source=row[7],
                )
                for row in cursor.fetchall()
            ]

        return self._run(query)

    def count(self, table: str) -> Deferred[int]:
        if table not in TABLES:
            return fail(StoreError(f"{self.url}: no table {table!r} (one of {', '.join(TABLES)})"))

        async def query(cursor: Any) -> int:
            # The compact table itself: every row of it is a row of the view (no join); and
            # for intervals, those the compacted days hold (fep.store.compaction).
            sql = f"SELECT count(*) FROM {rows_table(table)}"
            if table == "intervals":
                sql = (f"SELECT ({sql}) + (SELECT coalesce(sum(cardinality(vals)), 0)"
                       " FROM interval_days)")
            await cursor.execute(sql)
            (n,) = cursor.fetchone()
            return int(n)

        return self._run(query)


def _columns(rows: Sequence[tuple[Any, ...]], text: Sequence[bool]) -> list[str]:
    """Rows to one PostgreSQL array literal per column, each the parameter of an unnest
    INSERT. psycopg2 would adapt a list element by element (the largest per-row cost of a
    batch); one string per column is quoted once. ``text[i]`` says column i holds free
    text, which is quoted and escaped; the other columns hold numbers, times as ISO text
    and codes, which need neither."""
    literals: list[str] = []
    if not rows:
        return literals
    for index, (column, is_text) in enumerate(zip(zip(*rows, strict=True), text, strict=True)):
        if is_text:
            items = [
                "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                for v in column
            ]
        elif None in column:
            items = ["NULL" if v is None else str(v) for v in column]
        else:
            items = list(map(str, column))
        literal = "{" + ",".join(items) + "}"
        if is_text and "\x00" in literal:
            # PostgreSQL text cannot hold NUL; SQLite can. Say which record, clearly,
            # rather than let psycopg2 fail on the whole batch with a bare ValueError.
            bad = next(row for row in rows if "\x00" in (row[index] or ""))
            raise RecordRejected(
                f"meter {bad[0]}: text with a NUL character in column {index + 1} "
                f"({bad[index]!r}); PostgreSQL text cannot hold NUL"
            )
        literals.append(literal)
    return literals


# Which columns of a meter row hold free text (quoted in array literals): all.
_METER_TEXT = (True,) * 7


def _meter(row: Sequence[Any]) -> Meter:
    return Meter(
        id=row[0],
        protocol=row[1],
        route=row[2],
        serial=row[3],
        address=row[4],
        credentials=row[5],
        metadata=json.loads(row[6]) if row[6] else {},
    )


async def _apply_next_migration(cursor: Any) -> str | None:
    await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    await cursor.execute(migrations.CREATE_TABLE["postgresql"])
    await cursor.execute("SELECT version FROM schema_migrations")
    applied = [v for (v,) in cursor.fetchall()]
    todo = migrations.pending(migrations.load("postgresql"), applied)
    if not todo:
        return None
    migration = todo[0]
    await cursor.execute(migration.sql)
    await cursor.execute(
        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
        (migration.version, migration.name),
    )
    return migration.name
