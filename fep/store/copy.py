"""PostgreSQL batch writes by COPY, on worker threads of their own.

txpostgres drives psycopg2 in asynchronous mode, which cannot COPY. So the PostgreSQL store
writes record batches here: a small thread pool (one thread per connection, as many as the
store's pool) whose threads each use a synchronous psycopg2 connection of their own; the
reactor only hands a batch over and gets the count of new rows back (``deferToThreadPool``),
it never waits on the database.

One batch is one transaction, COMMIT at its end. Each kind of row goes first by ``COPY
<table> FROM STDIN`` (text format) straight into its table under a savepoint: when every row
is new, that is all. When the table's unique key refuses a row (a replayed batch, a retry
after a commit whose answer was lost, a re-read load profile), the savepoint undoes the whole
COPY and the batch takes the staging path: COPY into a temporary staging table of the
connection, then ``INSERT INTO <table> SELECT ... FROM <staging> ORDER BY <unique key> ON
CONFLICT DO NOTHING`` moves the rows that are new; the staging tables empty themselves at
commit (``ON COMMIT DELETE ROWS``). After such a conflict the next few batches of that table
go through staging directly. Either way a row is stored once: the direct COPY stores all of
a batch's rows or none, the staging path only the new ones.

Since migration 0019 the rows go to the compact tables (``reading_rows``, ``interval_rows``,
``event_rows``) that the views ``readings``, ``intervals`` and ``events`` read back: a row
names its meter's quantity by a series number and its source by a source number
(``SeriesNumbers``, kept in memory; new ones numbered before the batch's transaction).

The COPY text is built once from the records, in the worker thread, one line per row. A
connection that fails is closed and the error goes back as StoreError (the router retries
the batch with backoff); a pooled connection found dead at its next use (the server went
away while it was idle) is replaced and the batch tried once more at once.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.errors
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from fep.errors import RecordRejected, StoreError
from fep.model import IntervalBlock, MeterEvent, Reading, Record
from fep.reactors import ITimeAndThreads
from fep.store.compaction import FRESH, day_rows_before
from fep.store.rows import encode_value, period_seconds, text_time

log = Logger()

READING_COLUMNS = (
    "read_at, received_time, meter_time, series, source, unit_code, scaler, quality,"
    " value_type, value, value_text, native_id"
)
INTERVAL_COLUMNS = (
    "start_time, received_time, series, source, period_s, status, unit_code, scaler,"
    " value_type, value, value_text"
)
EVENT_COLUMNS = "time, received_time, series, source, kind, severity, text"

# (table, staging table, columns, unique key): the compact tables of migration 0019 (the
# views readings, intervals and events read them back with meter ids and codes as text).
TABLES = (
    ("reading_rows", "fep_copy_readings", READING_COLUMNS, "series, read_at"),
    ("interval_rows", "fep_copy_intervals", INTERVAL_COLUMNS, "series, start_time"),
    ("event_rows", "fep_copy_events", EVENT_COLUMNS, "series, time"),
)

# After a batch met rows already stored, this many more batches of that table go through
# staging before a direct COPY is tried again.
STAGED_AFTER_CONFLICT = 8

# Series and source numbers kept in memory, at most (beyond, the memory starts again from
# empty and refills from the database a batch at a time): a bound on a large fleet's cost.
MAX_NUMBERS = 500_000

_SPECIAL = re.compile(r"[\\\t\n\r\x00]")
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"

Series = tuple[str, str]  # (meter, quantity): an OBIS code's text, or an event code


def _text(value: str | None, meter: str, column: str) -> str:
    """A free-text field of COPY's text format: escaped, NUL refused naming the record."""
    if value is None:
        return NULL
    if _SPECIAL.search(value) is None:
        return value
    _no_nul(value, meter, column)
    return value.translate(_ESCAPES)


def _no_nul(value: str, meter: str, column: str) -> None:
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL (SQLite can): say which record, clearly, rather
        # than fail the whole batch with a bare error.
        raise RecordRejected(
            f"meter {meter}: text with a NUL character in column {column} ({value!r});"
            " PostgreSQL text cannot hold NUL"
        )


def batch_names(records: Sequence[Record]) -> tuple[set[Series], set[str]]:
    """The series (meter, OBIS or event code) and the sources a batch's rows name, their
    text checked first (a NUL is refused, naming the record, before the database is used)."""
    series: set[Series] = set()
    sources: dict[str, str] = {}  # source -> a meter that names it (for an error)
    # OBIS code texts by the code object's id: equal codes are often distinct objects, and
    # comparing two of them runs Python; the records, so their codes, live while this runs.
    codes: dict[int, str] = {}
    for r in records:
        kind = type(r)
        if kind is Reading or kind is IntervalBlock:
            obis = r.obis  # type: ignore[union-attr]
            quantity = codes.get(id(obis))
            if quantity is None:
                quantity = codes[id(obis)] = str(obis)
        elif kind is MeterEvent:
            quantity = r.code  # type: ignore[union-attr]
        else:
            raise StoreError(f"cannot store a {kind.__name__}")
        series.add((r.meter, quantity))
        sources.setdefault(r.source, r.meter)
    for meter, quantity in series:
        _no_nul(meter, meter, "meter")
        _no_nul(quantity, meter, "obis/code")
    for source, meter in sources.items():
        _no_nul(source, meter, "source")
    return series, set(sources)


def copy_texts(
    records: Sequence[Record], series: Mapping[Series, str], sources: Mapping[str, str]
) -> tuple[str, str, str]:
    """The COPY text of the readings, intervals and events of a batch, built in one pass
    (times and OBIS codes repeat within a batch and are formatted once each); ``series``
    and ``sources`` give the number, as text, of every series and source the batch names
    (``batch_names``)."""
    readings: list[str] = []
    intervals: list[str] = []
    events: list[str] = []
    times: dict[datetime, str] = {}
    # OBIS code texts by the code object's id, as in batch_names.
    codes: dict[int, str] = {}

    def when(value: datetime) -> str:
        text = times.get(value)
        if text is None:
            text = times[value] = text_time(value)
        return text

    for r in records:
        kind = type(r)
        if kind is Reading:
            assert isinstance(r, Reading)
            value = r.value
            if type(value) is Decimal:
                number, text, value_type = str(value), NULL, "D"
            else:
                encoded = encode_value(value)
                number = NULL if encoded[0] is None else encoded[0]
                text = _text(encoded[1], r.meter, "value_text")
                value_type = encoded[2]
            obis = codes.get(id(r.obis))
            if obis is None:
                obis = codes[id(r.obis)] = str(r.obis)
            received = when(r.received_time)
            meter_time = NULL if r.meter_time is None else when(r.meter_time)
            unit = r.unit
            readings.append(
                f"{received if r.meter_time is None else meter_time}\t{received}\t"
                f"{meter_time}\t{series[(r.meter, obis)]}\t{sources[r.source]}\t"
                f"{NULL if unit is None else unit.code}\t{r.scaler}\t{int(r.quality)}\t"
                f"{value_type}\t{number}\t{text}\t{_text(r.native_id, r.meter, 'native_id')}\n"
            )
        elif kind is IntervalBlock:
            assert isinstance(r, IntervalBlock)
            period = period_seconds(r.period, r)
            unit_text = NULL if r.unit is None else str(r.unit.code)
            received = when(r.received_time)
            middle = (f"\t{received}\t{series[(r.meter, str(r.obis))]}\t{sources[r.source]}\t"
                      f"{period}\t")
            scaled = f"\t{unit_text}\t{r.scaler}\t"
            for start, v, status in r.intervals():
                if type(v) is Decimal:
                    number, text, value_type = str(v), NULL, "D"
                else:
                    encoded = encode_value(v)
                    number = NULL if encoded[0] is None else encoded[0]
                    text = _text(encoded[1], r.meter, "value_text")
                    value_type = encoded[2]
                intervals.append(
                    f"{when(start)}{middle}{int(status)}{scaled}{value_type}\t{number}\t"
                    f"{text}\n"
                )
        elif kind is MeterEvent:
            assert isinstance(r, MeterEvent)
            events.append(
                f"{when(r.time)}\t{when(r.received_time)}\t{series[(r.meter, r.code)]}\t"
                f"{sources[r.source]}\t{_text(str(r.kind), r.meter, 'kind')}\t"
                f"{_text(str(r.severity), r.meter, 'severity')}\t"
                f"{_text(r.text, r.meter, 'text')}\n"
            )
        else:
            raise StoreError(f"cannot store a {kind.__name__}")
    return "".join(readings), "".join(intervals), "".join(events)


# Leaves out the staged intervals a day row holds (the same series, day and slot): the
# condition of the INSERT from staging when a batch holds old intervals.
_NOT_IN_DAY_ROWS = """ s WHERE NOT EXISTS (
    SELECT 1 FROM interval_days d
    WHERE d.series = s.series AND d.day_start = date_trunc('day', s.start_time, 'UTC')
      AND extract(epoch FROM s.start_time - d.day_start) % d.period_s = 0
      AND CASE WHEN d.slots IS NULL
               THEN extract(epoch FROM s.start_time - d.day_start) / d.period_s
                    < cardinality(d.vals)
               ELSE (extract(epoch FROM s.start_time - d.day_start) / d.period_s)::smallint
                    = ANY (d.slots) END)"""


def oldest_interval(records: Sequence[Record]) -> datetime | None:
    """The earliest interval start of a batch (None: it has no intervals)."""
    starts = [r.start for r in records if isinstance(r, IntervalBlock)]
    return min(starts) if starts else None


def _roll_back(conn: Any) -> None:
    """Undo a failed transaction on a connection still open (its error is the one told)."""
    if not conn.closed:
        try:
            conn.rollback()
        except psycopg2.Error:
            pass


class SeriesNumbers:
    """The numbers ``record_series`` and ``record_sources`` give series and sources, kept
    in memory by the writer's threads (at most ``MAX_NUMBERS`` of each). A name not known
    yet is numbered in a short transaction of its own before the batch's: a number, once
    committed, is never taken back, so a batch that fails later leaves no row pointing at
    a number that does not exist. Names are inserted in sorted order, so two writers (or
    two nodes) numbering the same new names wait for each other, never deadlock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Numbers as text (as they go into the COPY text).
        self.series: dict[Series, str] = {}
        self.sources: dict[str, str] = {}
        self.lookups = 0  # round trips to number new names (tests look at it)

    def numbers(
        self, conn: Any, series: set[Series], sources: set[str]
    ) -> tuple[dict[Series, str], dict[str, str]]:
        """The numbers of ``series`` and ``sources``, from memory or from the database."""
        with self._lock:
            known_series = {s: self.series[s] for s in series if s in self.series}
            known_sources = {s: self.sources[s] for s in sources if s in self.sources}
        new_series = sorted(series.difference(known_series))
        new_sources = sorted(sources.difference(known_sources))
        if not new_series and not new_sources:
            return known_series, known_sources
        self.lookups += 1
        try:
            with conn.cursor() as cur:
                if new_series:
                    meters = [m for m, _ in new_series]
                    quantities = [q for _, q in new_series]
                    cur.execute(
                        "INSERT INTO record_series (meter, quantity) SELECT * FROM"
                        " unnest(%s::text[], %s::text[]) ON CONFLICT DO NOTHING",
                        (meters, quantities))
                    cur.execute(
                        "SELECT s.meter, s.quantity, s.id FROM record_series s"
                        " JOIN unnest(%s::text[], %s::text[]) AS w (meter, quantity)"
                        " ON s.meter = w.meter AND s.quantity = w.quantity",
                        (meters, quantities))
                    for meter, quantity, number in cur.fetchall():
                        known_series[(meter, quantity)] = str(number)
                if new_sources:
                    cur.execute(
                        "INSERT INTO record_sources (name) SELECT * FROM unnest(%s::text[])"
                        " ON CONFLICT DO NOTHING", (new_sources,))
                    cur.execute(
                        "SELECT name, id FROM record_sources WHERE name = ANY(%s::text[])",
                        (new_sources,))
                    for name, number in cur.fetchall():
                        known_sources[name] = str(number)
            conn.commit()
        except BaseException:
            _roll_back(conn)
            raise
        with self._lock:
            if len(self.series) + len(new_series) > MAX_NUMBERS:
                self.series.clear()
            if len(self.sources) + len(new_sources) > MAX_NUMBERS:
                self.sources.clear()
            self.series.update((s, known_series[s]) for s in new_series)
            self.sources.update((s, known_sources[s]) for s in new_sources)
        return known_series, known_sources


def _options(dsn: str, query_timeout: float) -> dict[str, Any]:
    """Server-side deadlines for the COPY connections (unless the URL sets its own options):
    a statement, or a transaction left idle, ends after ``query_timeout``."""
    if "options" in dsn:
        return {}
    ms = max(1000, int(query_timeout * 1000))
    return {"options": f"-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}"}


def _daemon_thread(**kwargs: Any) -> threading.Thread:
    return threading.Thread(daemon=True, **kwargs)


class _Threads(ThreadPool):
    """Worker threads that never hold a process open at exit (a store left unclosed by a
    command that ends anyway): a COPY cut short there was never committed, and the spool
    still holds its batch."""

    threadFactory = staticmethod(_daemon_thread)  # type: ignore[assignment]


class CopyWriter:
    """Batches to PostgreSQL by COPY, on ``size`` worker threads each with a synchronous
    psycopg2 connection of its own (made on first use, kept while it works)."""

    def __init__(
        self,
        reactor: ITimeAndThreads,
        dsn: str,
        *,
        size: int,
        connect_timeout: float,
        query_timeout: float,
    ) -> None:
        self._reactor = reactor
        self._dsn = dsn
        self.connect_timeout = connect_timeout
        self.query_timeout = query_timeout
        self._threads = _Threads(0, max(1, size), name="fep-pg-copy")
        self._lock = threading.Lock()
        self._idle: list[Any] = []  # connections not in use (guarded by _lock)
        self._all: set[Any] = set()
        self._busy: set[Deferred[None]] = set()  # fire as writes under way end
        self._closed = False
        self._threads.start()
        # Tables whose next batches go through staging, and how many more (a dict the
        # threads share: a lost update only changes which path a batch takes).
        self._staged_next: dict[str, int] = {}
        self.numbers = SeriesNumbers()
        self.connects = 0  # connections made (tests look at it)
        self.direct_batches = 0  # table batches copied straight in / through staging
        self.staged_batches = 0

    # -- reactor side --------------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> Deferred[int]:
        """Commit a batch in one transaction on a worker thread; fires with how many rows
        were new."""
        d: Deferred[int] = deferToThreadPool(self._reactor, self._threads, self._write, records)
        finished: Deferred[None] = Deferred()
        self._busy.add(finished)

        def done(result: Any) -> Any:
            self._busy.discard(finished)
            # Not from inside this chain: close() resuming here would see the caller's
            # Deferred half run.
            self._reactor.callLater(0, finished.callback, None)
            return result

        return d.addBoth(done)

    def close(self) -> Deferred[None]:
        """Let writes under way finish (they are bounded by the deadlines), then close every
        connection and stop the threads."""
        self._closed = True

        async def run() -> None:
            if self._busy:
                await DeferredList(list(self._busy))
            self._threads.stop()  # idle now: returns at once
            with self._lock:
                connections, self._idle = list(self._all), []
                self._all.clear()
            for conn in connections:
                try:
                    conn.close()
                except psycopg2.Error:
                    pass

        return Deferred.fromCoroutine(run())

    # -- thread side ---------------------------------------------------------------------

    def closing(self) -> bool:
        return self._closed

    def _connect(self) -> Any:
        if self._closed:
            raise StoreError("the store is closed")
        try:
            conn = psycopg2.connect(
                self._dsn,
                # libpq counts whole seconds, at least 2.
                connect_timeout=max(2, int(self.connect_timeout + 0.999)),
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
                # A peer gone silent mid-COPY fails the send after the deadline.
                tcp_user_timeout=max(1000, int(self.query_timeout * 1000)),
                application_name="fep",
                **_options(self._dsn, self.query_timeout),
            )
        except psycopg2.OperationalError as e:
            if "timeout expired" in str(e):
                raise StoreError(
                    f"connecting took longer than {self.connect_timeout:g} s"
                ) from None
            raise
        try:
            with conn.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
                for table, staging, _, _ in TABLES:
                    cur.execute(
                        f"CREATE TEMPORARY TABLE {staging} (LIKE {table} INCLUDING DEFAULTS)"
                        " ON COMMIT DELETE ROWS"
                    )
            conn.commit()
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._all.add(conn)
            self.connects += 1
            if self.closing():  # close() may have run meanwhile
                self._all.discard(conn)
                conn.close()
                raise StoreError("the store is closed")
        return conn

    def _put_back(self, conn: Any) -> None:
        with self._lock:
            if self._closed or conn.closed:
                self._all.discard(conn)
                conn.close()
            else:
                self._idle.append(conn)

    def _discard(self, conn: Any) -> None:
        with self._lock:
            self._all.discard(conn)
        try:
            conn.close()
        except psycopg2.Error:
            pass

    def _write(self, records: Sequence[Record]) -> int:
        if not records:
            return 0
        # The usual case: every series and source of the batch is numbered in memory, and
        # the text is built at once. Otherwise (KeyError) the batch's names are checked
        # (RecordRejected before any connection is used) and the new ones numbered.
        names: tuple[set[Series], set[str]] | None = None
        try:
            texts: tuple[str, str, str] | None = copy_texts(
                records, self.numbers.series, self.numbers.sources)
        except KeyError:
            texts = None
            names = batch_names(records)
        if texts is not None and not any(texts):
            return 0
        old = oldest_interval(records)
        if old is not None and old.timestamp() >= time.time() - FRESH.total_seconds():
            old = None  # the days being collected: no day row can hold them
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        fresh = conn is None
        if conn is None:
            conn = self._connect()
        try:
            new = self._transaction(conn, texts or self._texts(conn, records, names), old)
        except RecordRejected:
            self._put_back(conn)  # the connection is fine: a record of the batch is not
            raise
        except psycopg2.Error as e:
            dead = bool(conn.closed)
            self._discard(conn)
            if fresh or not dead:
                raise
            # A pooled connection that died while idle (the server restarted, a proxy
            # dropped it): one retry on a new connection. At worst the first attempt did
            # commit, and the retry finds its rows present (never doubled).
            log.info("PostgreSQL COPY connection was stale ({error}); reconnecting",
                     error=str(e).strip())
            conn = self._connect()
            try:
                new = self._transaction(conn, texts or self._texts(conn, records, names), old)
            except BaseException:
                self._discard(conn)
                raise
        except BaseException:
            self._discard(conn)
            raise
        self._put_back(conn)
        return new

    def _texts(
        self, conn: Any, records: Sequence[Record], names: tuple[set[Series], set[str]] | None
    ) -> tuple[str, str, str]:
        """The batch's COPY text once its new series and sources are numbered."""
        if names is None:
            names = batch_names(records)
        series, sources = self.numbers.numbers(conn, *names)
        return copy_texts(records, series, sources)

    def _copy(self, cur: Any, sql: str, text: str) -> None:
        cur.copy_expert(sql, io.StringIO(text), size=65536)

    def _transaction(self, conn: Any, texts: tuple[str, str, str],
                     old: datetime | None) -> int:
        """One batch's transaction; ``old``: its earliest interval start when that is old
        enough that a day row (fep.store.compaction) may hold it. Then the batch takes the
        compaction lock shared, and its intervals go through staging, leaving out what day
        rows hold, if any is older than where day rows may begin."""
        new = 0
        try:
            with conn.cursor() as cur:
                for (table, staging, columns, key), text in zip(TABLES, texts, strict=True):
                    if not text:
                        continue
                    checked = False
                    if table == "interval_rows" and old is not None:
                        held_before = day_rows_before(cur)
                        checked = held_before is not None and old < held_before
                    if checked:
                        pass  # through staging, leaving out what day rows hold
                    elif self._staged_next.get(table, 0) <= 0:
                        copied = self._direct(cur, table, columns, text)
                        if copied is not None:
                            new += copied
                            continue
                        # A row of the batch is stored already: the next few batches of
                        # this table go straight to staging (a re-read profile tends to
                        # come with more).
                        self._staged_next[table] = STAGED_AFTER_CONFLICT
                    else:
                        self._staged_next[table] -= 1
                    self._copy(cur, f"COPY {staging} ({columns}) FROM STDIN", text)
                    cur.execute(
                        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging}"
                        f"{_NOT_IN_DAY_ROWS if checked else ''}"
                        f" ORDER BY {key} ON CONFLICT DO NOTHING"
                    )
                    new += cur.rowcount
                    self.staged_batches += 1
            conn.commit()
        except BaseException:
            _roll_back(conn)
            raise
        return new

    def _direct(self, cur: Any, table: str, columns: str, text: str) -> int | None:
        """COPY straight into the table under a savepoint: every row is new (the usual
        case), or the table's unique key refuses one and the savepoint undoes the lot
        (None: the caller goes through staging)."""
        cur.execute("SAVEPOINT fep_copy")
        try:
            self._copy(cur, f"COPY {table} ({columns}) FROM STDIN", text)
        except (psycopg2.errors.UniqueViolation, psycopg2.errors.DeadlockDetected):
            cur.execute("ROLLBACK TO SAVEPOINT fep_copy")
            return None
        copied = int(cur.rowcount) if cur.rowcount >= 0 else text.count("\n")
        cur.execute("RELEASE SAVEPOINT fep_copy")
        self.direct_batches += 1
        return copied
