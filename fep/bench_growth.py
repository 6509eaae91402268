"""The ingest-at-size rows of `make bench` (``--only growth``): fep's ingest rate into a
table that already holds ``rows`` rows, as a ratio to its rate into an empty table, and the
bytes a stored reading and a stored interval take at that size (issue 20).

Two databases per store, each new and named for this run alone (two benches at once do not
meet): an *empty* one, made again before each empty-table ingest, and a *full* one, filled
once, fast and outside fep (server-side ``INSERT ... SELECT generate_series`` on
PostgreSQL, ``executemany`` on SQLite), with ``rows`` readings and as many intervals: the
15-minute values (96 a day) of ``meters`` meters, ``quantities`` quantities each (by default
the ingest bench's five, so every series today's readings add to has its past), day after
day back from yesterday, each day's rows in the order a daily collection brings them (meter
by meter, quantity by quantity). On PostgreSQL the months they cover get their monthly
partitions first, as the partition keeper makes them on a live node, so every row sits in its
month's partition (none in DEFAULT). Then, ``repeat`` times in turn, the same readings of
today (the ingest bench's shape: ``meters`` meters, five quantities, 15-minute steps from
today's midnight UTC) go through the router and the store (spool on, one batch size) into
the empty database, and the next slice of today's readings
into the full one (at most ``rows`` / 10 readings a run, so the table stays near its size);
the best rate of each counts, so a moment of load from elsewhere weighs on neither.

Sizes: PostgreSQL, ``pg_total_relation_size`` (table, TOAST and the unique key's index) of
every partition over the table's rows; SQLite, the table's pages (``dbstat``) after a
``wal_checkpoint(TRUNCATE)`` over its rows, and the whole file (``page_count * page_size``)
over every stored reading and interval. SQLite's disk writes per ingested reading are the
process's ``write_bytes`` (/proc/self/io) over each ingest, the spool's fsynced journal
included (its payload is given apart).
"""

from __future__ import annotations

import secrets
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from fep.bench_ingest import BENCH_DATABASE, OBIS
from fep.model import ObisCode, Reading

if TYPE_CHECKING:
    from fep.reactors import IStoreReactor

# The quantities of each meter's series: the ingest bench's registers (bench_ingest.OBIS) and
# as many interval channels (the energy of each 15 minutes).
READING_OBIS = tuple(str(code) for code in OBIS)
INTERVAL_OBIS = tuple(str(ObisCode(1, 0, c, 29, 0)) for c in (1, 2, 3, 4, 9))
QUANTITIES = len(READING_OBIS)
STEPS = 96  # 15-minute values a day
PERIOD = 900
# Rows per INSERT (PostgreSQL) or per transaction (SQLite) while filling.
FILL_CHUNK = 500_000
TARGET = 0.8
# Bytes per stored interval on PostgreSQL (table and index), and the compaction age the
# bench uses: the youngest fep allows, so the days a daily collection still adds to stay rows.
INTERVAL_TARGET = 64
COMPACT_AFTER = 3


def today(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def fill_days(rows: int, meters: int, quantities: int = QUANTITIES) -> int:
    """Days of ``meters`` meters' 96 values a day of ``quantities`` quantities each that
    ``rows`` rows take (the last one partly)."""
    if not 1 <= quantities <= QUANTITIES:
        raise ValueError(f"quantities per meter: 1 to {QUANTITIES}, not {quantities}")
    return max(1, -(-rows // (meters * quantities * STEPS)))


def per_run(readings: int, rows: int) -> int:
    """Readings per ingest run: at most a tenth of the rows filled, so the at-size runs
    leave the table near the size they are measured at."""
    return max(1, min(readings, rows // 10))


def io_write_bytes() -> int | None:
    """This process's ``write_bytes`` so far (/proc/self/io), None where there is none."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def unique_database() -> str:
    """A database name no other run uses: this run's prefix (the process and a random part)
    and a random part of its own."""
    return f"{BENCH_DATABASE}_growth_{secrets.token_hex(3)}"


def today_readings(count: int, meters: int, slices: int) -> list[list[Reading]]:
    """``slices`` lists of ``count`` distinct readings of today: the ingest bench's shape
    (``meters`` meters, five quantities, 15-minute steps from today's midnight UTC), each
    slice later in the day (or the next) than the one before."""
    from fep.bench_ingest import make_readings

    every = make_readings(count * slices, meters, start=today())
    return [every[i * count:(i + 1) * count] for i in range(slices)]


# ---------------------------------------------------------------------------
# Filling fast (outside fep)
# ---------------------------------------------------------------------------

# The row's place i -> day, meter and step, in the order a daily collection brings them.
_PG_PLACE = (
    "(%(start)s::timestamptz + (i / %(per_day)s) * interval '1 day'"
    " + (i %% 96) * interval '15 minutes')"
)
_PG_METER = "'bench-' || lpad(((i / (96 * %(q)s)) %% %(meters)s)::text, 5, '0')"
_PG_OBIS = "(%(obis)s::text[])[(i / 96) %% %(q)s + 1]"
_PG_RECEIVED = (
    "%(start)s::timestamptz + (i / %(per_day)s + 1) * interval '1 day' + interval '1 hour'"
)

# Since migration 0019 the rows go to the compact tables, naming the series of their meter
# and quantity (made first, PG_FILL_SERIES) and their source by number.
PG_FILL_SERIES = (
    "INSERT INTO record_series (meter, quantity)"
    " SELECT 'bench-' || lpad(m::text, 5, '0'), q"
    " FROM generate_series(0, %(meters)s - 1) AS m, unnest(%(obis)s::text[]) AS q"
    " ORDER BY 1, 2 ON CONFLICT DO NOTHING;"
    " INSERT INTO record_sources (name) VALUES ('bench') ON CONFLICT DO NOTHING"
)
_PG_SERIES = (
    " FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS i"
    f" JOIN record_series s ON s.meter = {_PG_METER} AND s.quantity = {_PG_OBIS}"
    " CROSS JOIN (SELECT id FROM record_sources WHERE name = 'bench') AS o"
)
PG_FILL_READINGS = (
    "INSERT INTO reading_rows (read_at, received_time, meter_time, series, source, unit_code,"
    " scaler, quality, value_type, value, value_text, native_id)"
    f" SELECT {_PG_PLACE}, {_PG_RECEIVED}, {_PG_PLACE}, s.id, o.id, 30, 3, 0, 'D',"
    f" (i %% 10000000)::numeric / 10, NULL, NULL{_PG_SERIES}"
)
PG_FILL_INTERVALS = (
    "INSERT INTO interval_rows (start_time, received_time, series, source, period_s, status,"
    " unit_code, scaler, value_type, value, value_text)"
    f" SELECT {_PG_PLACE}, {_PG_RECEIVED}, s.id, o.id, 900, 0, 30, 3, 'D',"
    f" (i %% 997)::numeric / 10, NULL{_PG_SERIES}"
)


def fill_start(rows: int, meters: int, now: datetime | None = None,
               quantities: int = QUANTITIES) -> datetime:
    """The first day's midnight: the fill ends with yesterday."""
    return today(now) - timedelta(days=fill_days(rows, meters, quantities))


async def make_past_partitions(reactor: IStoreReactor, url: str, since: datetime) -> int:
    """The monthly partitions of readings and intervals from ``since``'s month to this one
    (the partition keeper's own function); how many were made."""
    from fep.store import open_store
    from fep.store.partitions import add_months, create_partition, month_start

    store: Any = open_store(url, reactor)
    await store.open()
    made = 0
    try:
        month, last = month_start(since), month_start(datetime.now(UTC))
        while month <= last:
            for table, column in (("readings", "read_at"), ("intervals", "start_time")):
                if await store.interact(create_partition, table, column, month) is not None:
                    made += 1
            month = add_months(month, 1)
    finally:
        await store.close()
    return made


def fill_postgres(url: str, rows: int, meters: int, start: datetime,
                  quantities: int = QUANTITIES) -> None:
    """``rows`` readings and ``rows`` intervals into the database at ``url`` from ``start``
    on, server-side, one autocommitted INSERT per ``FILL_CHUNK`` rows."""
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = 0")
            for statement, obis in ((PG_FILL_READINGS, READING_OBIS),
                                    (PG_FILL_INTERVALS, INTERVAL_OBIS)):
                cur.execute(PG_FILL_SERIES, {"meters": meters, "obis": list(obis[:quantities])})
                for lo in range(0, rows, FILL_CHUNK):
                    cur.execute(statement, {"start": start,
                                            "per_day": meters * quantities * STEPS,
                                            "meters": meters, "q": quantities,
                                            "obis": list(obis[:quantities]), "lo": lo,
                                            "hi": min(rows, lo + FILL_CHUNK)})
            # As a database that has lived with its rows: vacuumed (no autovacuum of the
            # fill during the measurement) and checkpointed (no checkpoint of the fill's WAL
            # either).
            cur.execute("VACUUM (ANALYZE) reading_rows")
            cur.execute("VACUUM (ANALYZE) interval_rows")
            cur.execute("VACUUM (ANALYZE) record_series")
            try:
                cur.execute("CHECKPOINT")
            except psycopg2.Error:  # not allowed to this user: the server's own will do
                pass
    finally:
        conn.close()


def _sqlite_rows(
    rows: int, meters: int, start: datetime, interval: bool, quantities: int = QUANTITIES
) -> Iterator[tuple[Any, ...]]:
    from fep.store.rows import text_time

    per_day = meters * quantities * STEPS
    codes = (INTERVAL_OBIS if interval else READING_OBIS)[:quantities]
    for first in range(0, rows, per_day):
        day = start + timedelta(days=first // per_day)
        times = [text_time(day + timedelta(minutes=15 * s)) for s in range(STEPS)]
        received = text_time(day + timedelta(days=1, hours=1))
        for i in range(first, min(rows, first + per_day)):
            meter, t = f"bench-{(i // (STEPS * quantities)) % meters:05d}", times[i % STEPS]
            obis = codes[(i // STEPS) % quantities]
            if interval:
                yield (meter, obis, t, PERIOD, str((i % 997) / 10), None, "D", 0, 30,
                       3, received, "bench")
            else:
                yield (meter, obis, str((i % 10_000_000) / 10), None, "D", 30, 3, t, t,
                       received, 0, "bench", None)


def fill_sqlite(path: Path, rows: int, meters: int, start: datetime,
                quantities: int = QUANTITIES) -> None:
    """``rows`` readings and ``rows`` intervals into the SQLite file (fep's schema already
    there) by ``executemany`` of the store's own statements, one transaction per
    ``FILL_CHUNK`` rows; then checkpointed."""
    from itertools import islice

    from fep.store.sqlite import INSERT_INTERVAL, INSERT_READING

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        for statement, interval in ((INSERT_READING, False), (INSERT_INTERVAL, True)):
            source = _sqlite_rows(rows, meters, start, interval, quantities)
            while chunk := list(islice(source, FILL_CHUNK)):
                conn.execute("BEGIN")
                conn.executemany(statement, chunk)
                conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------


@attrs.frozen
class TableSize:
    table: str
    rows: int
    bytes: int
    partitions: int = 0  # PostgreSQL: monthly partitions holding rows

    @property
    def per_row(self) -> float:
        return self.bytes / self.rows if self.rows else 0.0


def postgres_sizes(url: str) -> list[TableSize]:
    """Readings' and intervals' rows and bytes (every partition: table, TOAST, index)."""
    import psycopg2

    from fep.store.partitions import rows_table

    conn = psycopg2.connect(url, connect_timeout=10)
    out = []
    try:
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = 0")
            for table in ("readings", "intervals"):
                cur.execute("SELECT count(*) FROM " + rows_table(table))
                (rows,) = cur.fetchone()
                cur.execute(
                    "SELECT coalesce(sum(pg_total_relation_size(relid)), 0),"
                    " count(*) FILTER (WHERE pg_relation_size(relid) > 0)"
                    " FROM pg_partition_tree(%s::regclass) WHERE isleaf", (rows_table(table),))
                size, used = cur.fetchone()
                out.append(TableSize(table, int(rows), int(size), int(used)))
    finally:
        conn.close()
    return out


def postgres_day_rows(url: str) -> TableSize:
    """The compacted days' intervals (fep.store.compaction) and their bytes (every
    partition of interval_days: table, TOAST, index)."""
    import psycopg2

    conn = psycopg2.connect(url, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = 0")
            # The compaction moved 18 days at once; a daemon compacting daily frees one day
            # at a time, and the next day's rows reuse that space (autovacuum), so its
            # partition holds the rows of the days not compacted yet, and one day's more at
            # most. Rewriting the tables measures the former (docs/benchmarks.md).
            cur.execute("VACUUM (FULL, ANALYZE) interval_rows")
            cur.execute("VACUUM (ANALYZE) interval_days")
            cur.execute("SELECT coalesce(sum(cardinality(vals)), 0) FROM interval_days")
            (rows,) = cur.fetchone()
            cur.execute(
                "SELECT coalesce(sum(pg_total_relation_size(relid)), 0),"
                " count(*) FILTER (WHERE pg_relation_size(relid) > 0)"
                " FROM pg_partition_tree('interval_days'::regclass) WHERE isleaf")
            size, used = cur.fetchone()
    finally:
        conn.close()
    return TableSize("compacted intervals", int(rows), int(size), int(used))


async def compact_full(reactor: IStoreReactor, url: str, after: int) -> float:
    """fep's compaction of the filled database's closed days (as `fep db compact --after`);
    its seconds."""
    from fep.store import open_store
    from fep.store.compaction import compact_intervals

    store: Any = open_store(url, reactor)
    await store.open()
    began = time.perf_counter()
    try:
        await compact_intervals(store, datetime.now(UTC), after)
    finally:
        await store.close()
    return time.perf_counter() - began


def sqlite_sizes(path: Path) -> tuple[list[TableSize], int]:
    """Readings' and intervals' rows and pages (dbstat), and the whole file's bytes
    (page_count * page_size), after a full checkpoint."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        out = []
        for table in ("readings", "intervals"):
            (rows,) = conn.execute("SELECT count(*) FROM " + table).fetchone()
            (size,) = conn.execute(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = ?", (table,)
            ).fetchone()
            out.append(TableSize(table, int(rows), int(size)))
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (page,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    return out, int(pages) * int(page)


# ---------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------


@attrs.frozen
class GrowthResult:
    store: str  # "PostgreSQL" or "SQLite"
    rows: int  # rows filled (readings; as many intervals)
    meters: int
    days: int
    empty_rate: float  # best of ``repeat``
    full_rate: float
    repeat: int
    batch: int
    sizes: list[TableSize]
    file_bytes: int = 0  # SQLite: the whole file
    empty_written: float | None = None  # SQLite: bytes written per ingested reading
    full_written: float | None = None
    spool_payload: float = 0.0  # the spool journal's bytes per reading (before fsync pages)
    fill_seconds: float = 0.0
    readings: int = 0  # per ingest run
    quantities: int = QUANTITIES
    empty_rates: tuple[float, ...] = ()  # every run's, in turn
    full_rates: tuple[float, ...] = ()
    # PostgreSQL, after fep's compaction of the days that ended COMPACT_AFTER days ago: the
    # intervals left as rows, those in day rows, and the compaction's seconds.
    compacted_rows: TableSize | None = None
    compacted_days: TableSize | None = None
    compact_seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.full_rate / self.empty_rate

    @property
    def met(self) -> bool:
        return self.ratio >= TARGET

    def runs(self) -> str:
        if len(self.empty_rates) < 2:
            return ""
        return ("; every run, empty / at size: "
                + ", ".join(f"{e:,.0f} / {f:,.0f}"
                            for e, f in zip(self.empty_rates, self.full_rates, strict=True)))

    def table(self) -> list[tuple[str, str, str]]:
        best = f" (best of {self.repeat})" if self.repeat > 1 else ""
        case = (f"{self.rows:,} readings and {self.rows:,} intervals stored: {self.meters:,} "
                f"meters x {self.quantities} quantities x 96 a day over {self.days:,} "
                f"day{'s' if self.days != 1 else ''} "
                f"(filled in {self.fill_seconds:,.0f} s); {self.readings:,} readings of "
                "today per run")
        verdict = "met" if self.met else "not met"
        from fep.store.settings import write_batch

        merged = write_batch("sqlite:" if self.store == "SQLite" else "postgresql:", self.batch)
        backlog = f", a backlog in transactions of {merged:,}" if merged != self.batch else ""
        out = [(f"ingest at size {self.store} (spool on, batch {self.batch:,}{backlog})", case,
                f"empty table {self.empty_rate:,.0f} readings/s; at size "
                f"{self.full_rate:,.0f} readings/s; ratio {self.ratio:.2f}{best}; target "
                f">= {TARGET}: {verdict}{self.runs()}")]
        for s in self.sizes:
            where = (f" in {s.partitions} monthly partition{'s' if s.partitions != 1 else ''}"
                     if self.store == "PostgreSQL"
                     else "")
            out.append((f"storage {self.store} at size", f"{s.table}: {s.rows:,} rows{where}",
                        f"{s.per_row:,.0f} bytes per stored {s.table[:-1]}"))
        if self.compacted_rows is not None and self.compacted_days is not None:
            left, days = self.compacted_rows, self.compacted_days
            both = TableSize("intervals", left.rows + days.rows, left.bytes + days.bytes)
            verdict = "met" if both.per_row <= INTERVAL_TARGET else "not met"
            out.append((
                f"storage {self.store} at size, closed days compacted",
                f"intervals: {days.rows:,} in day rows (days that ended {COMPACT_AFTER} days "
                f"ago and before), {left.rows:,} rows of the days since; fep db compact took "
                f"{self.compact_seconds:,.0f} s ({days.rows / max(self.compact_seconds, 1e-9):,.0f}"
                " intervals/s)",
                f"{both.per_row:,.1f} bytes per stored interval (day rows "
                f"{days.per_row:,.1f}, rows {left.per_row:,.0f}); target <= "
                f"{INTERVAL_TARGET}: {verdict}"))
        if self.file_bytes:
            stored = sum(s.rows for s in self.sizes)
            out.append((f"storage {self.store} at size", "the whole file after checkpoint",
                        f"{self.file_bytes / stored:,.0f} bytes per stored row"))
        if self.empty_written is not None and self.full_written is not None:
            out.append((f"disk writes {self.store} per ingested reading",
                        "write_bytes of /proc/self/io, spool journal included",
                        f"empty table {self.empty_written:,.0f} bytes; at size "
                        f"{self.full_written:,.0f} bytes (the spool's payload "
                        f"{self.spool_payload:,.0f})"))
        return out


def spool_payload(readings: list[Reading], chunk: int = 500) -> float:
    """Bytes per reading of the spool's frames for ``readings`` submitted ``chunk`` at a
    time (what it appends before the page rounding of each fsync)."""
    from fep.store.spool import encode_batch

    size = sum(len(encode_batch(readings[i:i + chunk])) for i in range(0, len(readings), chunk))
    return size / len(readings) if readings else 0.0


async def _timed_ingest(reactor: IStoreReactor, url: str, readings: list[Reading], batch: int,
                        workdir: Path, already: int) -> tuple[float, float | None]:
    """fep's ingest rate, and the bytes this process wrote per reading meanwhile."""
    from fep.bench_ingest import ingest_rate

    before = io_write_bytes()
    rate = await ingest_rate(reactor, url, readings, batch, workdir, already=already)
    after = io_write_bytes()
    written = None if before is None or after is None else (after - before) / len(readings)
    return rate, written


async def postgres_growth(reactor: IStoreReactor, server: str, rows: int, workdir: Path, *,
                          readings: int = 200_000, meters: int = 1000, batch: int = 5000,
                          repeat: int = 3, quantities: int = QUANTITIES) -> GrowthResult:
    """The PostgreSQL rows: two databases of this run's own (dropped at the end)."""
    from fep.bench_ingest import drop_postgres, fresh_postgres
    from fep.store import open_store

    readings = per_run(readings, rows)
    slices = today_readings(readings, meters, repeat + 1)
    empty_name, full_name = unique_database() + "_empty", unique_database() + "_full"
    try:
        full = fresh_postgres(server, full_name)
        start = fill_start(rows, meters, quantities=quantities)
        store = open_store(full, reactor)
        await store.open()  # fep's schema
        await store.close()
        await make_past_partitions(reactor, full, start)
        began = time.perf_counter()
        fill_postgres(full, rows, meters, start, quantities)
        fill_seconds = time.perf_counter() - began
        empty_rates: list[float] = []
        full_rates: list[float] = []
        for n in range(repeat):
            empty = fresh_postgres(server, empty_name)
            rate, _ = await _timed_ingest(reactor, empty, slices[0], batch, workdir, 0)
            empty_rates.append(rate)
            rate, _ = await _timed_ingest(reactor, full, slices[n + 1], batch, workdir,
                                          rows + n * readings)
            full_rates.append(rate)
        sizes = postgres_sizes(full)
        compact_seconds = await compact_full(reactor, full, COMPACT_AFTER)
        compacted_days = postgres_day_rows(full)
        compacted_rows = next(s for s in postgres_sizes(full) if s.table == "intervals")
    finally:
        drop_postgres(server, empty_name)
        drop_postgres(server, full_name)
    return GrowthResult("PostgreSQL", rows, meters, fill_days(rows, meters, quantities),
                        max(empty_rates), max(full_rates), repeat, batch, sizes,
                        fill_seconds=fill_seconds, readings=readings, quantities=quantities,
                        empty_rates=tuple(empty_rates), full_rates=tuple(full_rates),
                        compacted_rows=compacted_rows, compacted_days=compacted_days,
                        compact_seconds=compact_seconds)


async def sqlite_growth(reactor: IStoreReactor, rows: int, workdir: Path, *,
                        readings: int = 200_000, meters: int = 1000, batch: int = 5000,
                        repeat: int = 3, quantities: int = QUANTITIES) -> GrowthResult:
    """The SQLite rows: two new files under ``workdir``."""
    from fep.store import open_store

    readings = per_run(readings, rows)
    slices = today_readings(readings, meters, repeat + 1)
    full = Path(tempfile.mkdtemp(prefix="growth-full-", dir=workdir)) / "full.sqlite"
    store = open_store(f"sqlite:{full}", reactor)
    await store.open()  # fep's schema
    await store.close()
    start = fill_start(rows, meters, quantities=quantities)
    began = time.perf_counter()
    fill_sqlite(full, rows, meters, start, quantities)
    fill_seconds = time.perf_counter() - began
    empty_rates: list[float] = []
    full_rates: list[float] = []
    empty_written: list[float] = []
    full_written: list[float] = []
    for n in range(repeat):
        empty = Path(tempfile.mkdtemp(prefix="growth-empty-", dir=workdir)) / "empty.sqlite"
        rate, written = await _timed_ingest(reactor, f"sqlite:{empty}", slices[0], batch,
                                            workdir, 0)
        empty_rates.append(rate)
        if written is not None:
            empty_written.append(written)
        rate, written = await _timed_ingest(reactor, f"sqlite:{full}", slices[n + 1], batch,
                                            workdir, rows + n * readings)
        full_rates.append(rate)
        if written is not None:
            full_written.append(written)
    sizes, file_bytes = sqlite_sizes(full)
    return GrowthResult(
        "SQLite", rows, meters, fill_days(rows, meters, quantities), max(empty_rates),
        max(full_rates), repeat, batch, sizes, file_bytes=file_bytes, quantities=quantities,
        empty_rates=tuple(empty_rates), full_rates=tuple(full_rates),
        # The median run's writes: they do not depend on the load from elsewhere.
        empty_written=sorted(empty_written)[len(empty_written) // 2] if empty_written else None,
        full_written=sorted(full_written)[len(full_written) // 2] if full_written else None,
        spool_payload=spool_payload(slices[0]), fill_seconds=fill_seconds, readings=readings,
    )
