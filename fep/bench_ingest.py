"""What the benchmarks share (fep.bench and the groups of their own modules): the bench's
readings, fep's ingest rate from the router to committed rows, and the PostgreSQL databases
a run makes and drops."""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from fep.model import ObisCode, Reading, Unit

if TYPE_CHECKING:
    from fep.reactors import IStoreReactor

OBIS = [ObisCode.parse(c) for c in ("1.8.0", "2.8.0", "1.8.1", "1.8.2", "32.7.0")]
WH = Unit.by_code(30)


def make_readings(count: int, meters: int = 1000, start: datetime | None = None) -> list[Reading]:
    """``count`` distinct readings spread over ``meters`` meters, 15-minute clock steps from
    ``start`` (default the first of this UTC month: on PostgreSQL a month whose partition the
    schema has made, as a live node's readings are)."""
    received = datetime.now(UTC)
    base = start or datetime(received.year, received.month, 1, tzinfo=UTC)
    out = []
    for i in range(count):
        meter, rest = i % meters, i // meters
        obis = OBIS[rest % len(OBIS)]
        step = rest // len(OBIS)
        out.append(Reading(
            meter=f"bench-{meter:05d}", obis=obis, value=Decimal(i) / 10, unit=WH, scaler=3,
            meter_time=base + timedelta(minutes=15 * step), received_time=received,
            source="bench",
        ))
    return out


async def ingest_rate(reactor: IStoreReactor, url: str, readings: list[Reading], batch_size: int,
                      workdir: Path, already: int = 0) -> float:
    """Readings per second from Router.submit to committed rows, spool on (into a readings
    table that holds ``already`` rows before)."""
    from twisted.internet.defer import gatherResults

    from fep.store import open_store
    from fep.store.router import Router
    from fep.store.settings import write_batch
    from fep.store.spool import Spool

    store = open_store(url, reactor)
    await store.open()
    # A spool of its own: a run never replays what another run left.
    spool_dir = Path(tempfile.mkdtemp(prefix=f"spool-{batch_size}-", dir=workdir))
    spool = Spool(spool_dir, reactor)
    router = Router(spool, store, reactor, batch_size=batch_size,
                    write_batch=write_batch(url, batch_size), max_delay=0.01)
    router.startService()
    chunk = 500  # what one busy meter session or push burst hands over at once
    started = time.perf_counter()
    await gatherResults([router.submit(readings[i:i + chunk])
                         for i in range(0, len(readings), chunk)])
    await router.flush(600)
    elapsed = time.perf_counter() - started
    stored = await store.count("readings")
    await router.stopService()
    await store.close()
    if stored != already + len(readings):
        raise RuntimeError(f"{url}: {stored} rows stored, {already} before and "
                           f"{len(readings)} submitted")
    return len(readings) / elapsed


# This run's databases are named from here (the process and a random part), so two benches
# at once on one server never drop each other's; drop_run_databases removes them at the end.
BENCH_DATABASE = f"fep_bench_{os.getpid()}_{secrets.token_hex(2)}"


def postgres_server() -> str | None:
    """The PostgreSQL server the benchmark may create its database on (``FEP_BENCH_POSTGRES``,
    default the local one), or None when none answers."""
    url = os.environ.get("FEP_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        import psycopg2

        psycopg2.connect(url, connect_timeout=3).close()
    except Exception as e:  # any failure means: no PostgreSQL rows in the benchmark
        print(f"bench: no PostgreSQL ({e}); skipping its rows", file=sys.stderr)
        return None
    return url


def fresh_postgres(server: str, name: str = BENCH_DATABASE) -> str:
    """A database ``name`` on ``server``, dropped and created again, so a run starts from an
    empty schema whatever the migrations put there (readings, the job store's tasks and
    jobs, ...); its URL."""
    import psycopg2

    conn = psycopg2.connect(server, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            cur.execute(f"CREATE DATABASE {name}")
    finally:
        conn.close()
    return server.rsplit("/", 1)[0] + "/" + name


def drop_postgres(server: str, name: str) -> None:
    """Drop the database ``name`` on ``server`` if it is there."""
    import psycopg2

    conn = psycopg2.connect(server, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        conn.close()




def drop_run_databases(server: str, prefix: str = BENCH_DATABASE) -> list[str]:
    """Drop this run's databases on ``server`` (``prefix`` and every ``prefix_...``); their
    names."""
    import psycopg2

    conn = psycopg2.connect(server, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname = %s"
                        " OR starts_with(datname, %s) ORDER BY 1", (prefix, prefix + "_"))
            names = [name for (name,) in cur.fetchall()]
    finally:
        conn.close()
    for name in names:
        drop_postgres(server, name)
    return names
