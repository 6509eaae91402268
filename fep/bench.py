"""The benchmarks behind `make bench`: ingest throughput from the router to committed rows
(SQLite and PostgreSQL, several batch sizes, spool on), meters' daily data stored per second
through one Q/GDW 1376.1 concentrator session (``--only gw3761``, ``--quick``: 50 meters
instead of 500) and the IEC 62056-21 readout decode rate. Prints a table; `--write
docs/benchmarks.md` keeps it with the machine it ran on, between markers of its own (the rest
of the file, hand-written sections included, is left as it is)."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fep.bench_ingest import (
    BENCH_DATABASE,
    drop_run_databases,
    fresh_postgres,
    ingest_rate,
    make_readings,
    postgres_server,
)
from fep.model import Reading

if TYPE_CHECKING:
    from fep.reactors import IFepReactor, IStoreReactor

# Rows one meter's day gives through a concentrator: the daily frozen forward active energy
# (total and four tariffs) and its 96-point curve.
CONCENTRATOR_ROWS = 5 + 96


async def concentrator_rate(reactor: IFepReactor, url: str, workdir: Path,
                            meters: int = 200) -> float:  # fmt: skip
    """Meters' daily data stored per second through one concentrator session: a collection
    engine's load-profile job for the ``meters`` behind a simulated Q/GDW 1376.1 concentrator
    on loopback TCP (each meter's daily frozen energy and 96-point curve of yesterday), the
    records through the router with the spool on, timed from the run to the last row
    committed."""
    import attrs
    from twisted.internet.task import deferLater

    from fep.channels.routes import Channels
    from fep.collect.engine import CollectionEngine
    from fep.collect.tasks import JobStatus, Task
    from fep.config import parse_config
    from fep.directory import MeterDirectory
    from fep.model import Meter
    from fep.protocols.gw3761.records import DEFAULT_TERMINAL_TZ
    from fep.sim.concentrator import ConcentratorFactory, make_concentrator
    from fep.store import open_store
    from fep.store.router import Router
    from fep.store.settings import write_batch
    from fep.store.spool import Spool

    store = open_store(url, reactor)
    await store.open()
    sim = make_concentrator(meters)
    factory: Any = ConcentratorFactory(sim, reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    route = f"tcp:host=127.0.0.1:port={port.getHost().port}"  # type: ignore[attr-defined]
    await store.add_meters([Meter("DCU1", "gw3761", route, address="4403:0004"), *(
        Meter(f"DCU1-M{p}", "dlt645", "gw3761:DCU1", address=m.address,
              metadata={"concentrator": "DCU1", "point": str(p)})
        for p, m in enumerate(sim.meters, 1))])  # fmt: skip
    spool = Spool(Path(tempfile.mkdtemp(prefix="spool-gw3761-", dir=workdir)), reactor)
    router = Router(spool, store, reactor, batch_size=5000,
                    write_batch=write_batch(url, 5000), max_delay=0.01)
    router.startService()
    directory = MeterDirectory(store)
    await directory.refresh()
    settings = parse_config("[fep]\n[store]\n[collect]\ndefault_task = no\npoll = 0.05\n"
                            "timeout = 10\n").collect  # fmt: skip
    engine = CollectionEngine(reactor, store, router, directory, settings, node="bench",
                              endpoint_for=Channels(reactor))  # fmt: skip
    await engine.prepare()
    today = datetime.now(DEFAULT_TERMINAL_TZ).date()
    since = datetime.combine(today - timedelta(days=1), datetime.min.time(),
                             DEFAULT_TERMINAL_TZ).astimezone(UTC)  # fmt: skip
    now = reactor.seconds()
    task = Task(name="daily", kind="load-profile", schedule="every 1d", retries=0,
                options={"since": since.isoformat(),
                         "until": (since + timedelta(days=1)).isoformat()})  # fmt: skip
    await engine.jobs.save_task(attrs.evolve(task, next_due=now + 86400), now)
    engine.scheduler.startService()
    try:
        started = time.perf_counter()
        await engine.scheduler.run_now("daily")
        while True:
            (job,) = await engine.jobs.jobs(meter="DCU1", limit=1)
            if JobStatus(job.status).final:
                break
            await deferLater(reactor, 0.02, lambda: None)
        await router.flush(600)
        elapsed = time.perf_counter() - started
        stored = await store.count("intervals") + await store.count("readings")
    finally:
        await engine.scheduler.stopService()
        await router.stopService()
        stopping = port.stopListening()
        if stopping is not None:
            await stopping
        await store.close()
    if job.status != JobStatus.DONE or stored != meters * CONCENTRATOR_ROWS:
        raise RuntimeError(f"{url}: concentrator job {job.status} ({job.error}), {stored} rows "
                           f"stored, {meters * CONCENTRATOR_ROWS} expected")
    return meters / elapsed


def copy_text(conn: Any, readings: Sequence[Reading]) -> str:
    """The readings as the text of a plain ``COPY reading_rows (...) FROM STDIN``: what a
    bulk loader that owns the rows would send (the bench's reference for the database's
    limit): the compact rows of migration 0019, their series and source numbered first on
    ``conn`` (committed)."""
    from fep.store.copy import SeriesNumbers, batch_names, copy_texts

    series, sources = SeriesNumbers().numbers(conn, *batch_names(readings))
    return copy_texts(readings, series, sources)[0]


COPY_READINGS = (  # fep.store.copy.READING_COLUMNS (that module is imported on use only)
    "COPY reading_rows (read_at, received_time, meter_time, series, source, unit_code, scaler,"
    " quality, value_type, value, value_text, native_id) FROM STDIN"
)


def plain_copy_rate(url: str, readings: Sequence[Reading], connections: int = 2) -> float:
    """Readings per second a plain COPY reaches on ``url`` (fep's schema, empty tables):
    the rows are formatted before the clock starts, then ``connections`` psycopg2
    connections, one thread each, COPY a share each and commit. The reference fep's ingest
    is measured against, in the same run."""
    import io
    import threading

    import psycopg2

    share = -(-len(readings) // connections)
    conns = [psycopg2.connect(url, connect_timeout=10)
             for _ in range(0, len(readings), share)]
    texts = [copy_text(conn, readings[i:i + share])
             for conn, i in zip(conns, range(0, len(readings), share), strict=True)]
    errors: list[BaseException] = []

    def load(conn: object, text: str) -> None:
        try:
            with conn.cursor() as cur:  # type: ignore[attr-defined]
                cur.copy_expert(COPY_READINGS, io.StringIO(text))
            conn.commit()  # type: ignore[attr-defined]
        except BaseException as e:  # reported below, on the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=load, args=(c, t)) for c, t in zip(conns, texts,
                                                                          strict=True)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    try:
        if errors:
            raise RuntimeError(f"plain COPY failed: {errors[0]}")
        with conns[0].cursor() as cur:
            cur.execute("SELECT count(*) FROM reading_rows")
            (stored,) = cur.fetchone()
        if stored != len(readings):
            raise RuntimeError(f"plain COPY: {stored} rows stored, {len(readings)} sent")
    finally:
        for c in conns:
            c.close()
    return len(readings) / elapsed


def iec_decode_rate(seconds: float = 2.0) -> tuple[float, int]:
    """Readouts/s parsed from the published E350 fixture (block framing, BCC, data lines,
    records), and the number of data lines per readout."""
    from fep.protocols.iec62056_21.frames import DataBlock, FrameDecoder
    from fep.protocols.iec62056_21.readout import parse_readout, to_readings
    from fep.sim.iec62056_21 import make_meters

    fixture = Path(__file__).parent.parent / "tests" / "fixtures" / "iec62056_21" / \
        "landis_gyr_e350_m26.txt"
    if fixture.exists():
        # The fixture's first line names its source; the exact bytes follow.
        block = fixture.read_bytes().split(b"\n", 1)[1]
    else:
        meter = make_meters(1)[0]
        block = meter.identification_message().encode() + meter.readout_block()
    count = 0
    lines_per = 0
    started = time.process_time()  # CPU time: the machine is shared
    while time.process_time() - started < seconds:
        decoder = FrameDecoder()
        for message in decoder.receive(block):
            if isinstance(message, DataBlock):
                readings = to_readings(parse_readout(message.data), "bench")
                lines_per = len(readings)
        count += 1
    return count / (time.process_time() - started), lines_per


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores, {cpu}; Python {platform.python_version()}; "
            f"{platform.system()} {platform.release()}")


async def ingest_rows(
    reactor: IStoreReactor,
    readings: list[Reading],
    batch_sizes: Sequence[int],
    workdir: Path,
    *,
    sqlite: bool = True,
    postgres: str | None = None,
    database: str = BENCH_DATABASE,
    repeat: int = 1,
) -> list[tuple[str, str, str]]:
    """The ingest rows: per batch size, SQLite (a new file) and PostgreSQL (on the server
    ``postgres``, a new database ``database`` for each batch size)."""
    rows: list[tuple[str, str, str]] = []
    for batch in batch_sizes:
        if sqlite:
            db = workdir / f"bench-{batch}.sqlite"
            rate = await ingest_rate(reactor, f"sqlite:{db}", readings, batch, workdir)
            # Closed, so its WAL is checkpointed into the file: what a reading costs on disk.
            size = db.stat().st_size / len(readings)
            from fep.store.settings import write_batch

            rows.append(("ingest SQLite (spool on)",
                         f"batch {batch}, a backlog in transactions of "
                         f"{write_batch('sqlite:', batch):,}",
                         f"{rate:,.0f} readings/s; {size:,.0f} bytes per stored reading"))
            print(rows[-1], flush=True)
        if postgres:
            # fep, then the reference (same rows, same run: a fresh database with fep's
            # schema, then a plain two-connection COPY into it), ``repeat`` times in turn;
            # the best of each, so a moment of load from elsewhere weighs on neither.
            from fep.store import open_store

            rate = copy = 0.0
            for _ in range(repeat):
                url = fresh_postgres(postgres, database)
                rate = max(rate, await ingest_rate(reactor, url, readings, batch, workdir))
                url = fresh_postgres(postgres, database)
                store = open_store(url, reactor)
                await store.open()
                await store.close()
                copy = max(copy, plain_copy_rate(url, readings))
            best = f" (best of {repeat})" if repeat > 1 else ""
            rows.append(("ingest PostgreSQL (spool on)", f"batch {batch}",
                         f"{rate:,.0f} readings/s; plain COPY {copy:,.0f}/s; "
                         f"ratio {rate / copy:.2f}{best}"))
            print(rows[-1], flush=True)
    return rows


async def analysis_bench_rows(
    reactor: IStoreReactor,
    meters: int,
    workdir: Path,
    *,
    sqlite: bool = True,
    postgres: str | None = None,
    database: str = BENCH_DATABASE + "_analysis",
    area_size: int = 100,
) -> list[tuple[str, str, str]]:
    """The analysis rows (fep.bench_analysis): a day of 96 intervals of ``meters`` meters
    validated and estimated, then balanced, on SQLite (a new file) and PostgreSQL (a new
    database ``database`` on the server ``postgres``, not the ingest rows' own: a bench of
    those running meanwhile does not drop it), in interval rows per second."""
    from fep.bench_analysis import analysis_rate

    rows: list[tuple[str, str, str]] = []
    targets = ([("SQLite", f"sqlite:{workdir / 'analysis.sqlite'}")] if sqlite else [])
    if postgres:
        targets.append(("PostgreSQL", ""))
    for name, url in targets:
        url = url or fresh_postgres(postgres or "", database)
        r = await analysis_rate(reactor, url, meters, area_size=area_size)
        case = (f"{meters:,} meters x 96 intervals, {r.areas:,} areas, {r.estimates:,} "
                "estimates")
        rows.append((f"analysis {name}: validate + estimate a day (fep vee run)", case,
                     f"{r.vee_rate:,.0f} rows/s ({r.vee_seconds:,.1f} s)"))
        rows.append((f"analysis {name}: balance a day (fep balance)", case,
                     f"{r.balance_rate:,.0f} rows/s ({r.balance_seconds:,.1f} s)"))
        rows.append((f"analysis {name}: both", case, f"{r.both_rate:,.0f} rows/s"))
        for row in rows[-3:]:
            print(row, flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fep.bench", description=__doc__)
    parser.add_argument("--readings", type=int, default=200_000,
                        help="readings per ingest run (growth: at most a tenth of the rows "
                        "stored)")
    parser.add_argument("--batch-sizes", default="1000,5000,20000")
    parser.add_argument("--write", help="also write the results as markdown to this file, "
                        "between markers of their own (the group's, or 'all'): the rest of "
                        "the file is kept")
    parser.add_argument("--repeat", type=int, default=3,
                        help="PostgreSQL ingest: fep and the plain COPY this many times in "
                        "turn, the best of each; growth: the empty-table and the at-size "
                        "ingest likewise")
    parser.add_argument("--listeners", default="gprs,push_dlms,push_iec62056_21,http,ssh,control",
                        help="with --only listeners: which listeners get the junk")
    parser.add_argument("--concentrator-meters", type=int, default=200,
                        help="meters behind the simulated concentrator (gw3761 row)")
    parser.add_argument("--sessions", type=int, default=15_000,
                        help="idle GPRS sessions held for the memory row")
    parser.add_argument("--only", choices=("ingest", "dlms", "dlt698", "decode", "listeners",
                                           "collect", "gprs", "gw3761", "analysis",
                                           "growth"),
                        help="run one group of benchmarks (default: all but listeners); "
                        "decode: the decoders alone (DLMS, AARE, IEC), no store; "
                        "collect: register collection, meters/s, SQLite and PostgreSQL; "
                        "gw3761: a concentrator's cycle through one session; "
                        "analysis: validating and balancing a day of 96 intervals; "
                        "growth: ingest into a table of --growth-rows rows against an empty "
                        "one, and bytes per stored reading and interval at that size")
    parser.add_argument("--meters", type=int, default=1000,
                        help="simulated DLMS meters of the collection row")
    parser.add_argument("--analysis-meters", type=int, default=100_000,
                        help="the analysis rows' fleet (default 100,000 meters)")
    parser.add_argument("--growth-rows", type=int, default=10_000_000,
                        help="readings (and as many intervals) stored before the PostgreSQL "
                        "ingest-at-size row (default 10,000,000; --quick 1,000,000)")
    parser.add_argument("--growth-sqlite-rows", type=int, default=1_000_000,
                        help="likewise for SQLite (default 1,000,000; --quick 100,000)")
    parser.add_argument("--growth-meters", type=int, default=1000,
                        help="the fleet of the ingest-at-size rows: the fill is its meters' "
                        "96 values a day back from yesterday (default 1,000 meters)")
    parser.add_argument("--growth-quantities", type=int, default=5,
                        help="quantities per meter in the fill, 1 to 5 (default 5: the "
                        "ingest's own, so every series it adds to has its past)")
    parser.add_argument("--growth-batch", type=int, default=5000,
                        help="the ingest-at-size rows' batch size (default 5,000)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller runs (the collection row: 300 meters; the analysis "
                        "rows: 2,000 meters; the ingest-at-size rows: 1,000,000 and 100,000 "
                        "rows stored)")
    args = parser.parse_args(argv)
    if args.only == "listeners":
        # The junk-load bench of every listener against the real daemon (its own process).
        from fep.bench_listeners import main as listeners_bench

        text, met = listeners_bench(listeners=tuple(args.listeners.split(",")))
        print(text)
        if args.write:
            write_owned(Path(args.write), "listeners",
                        f"## Listener limits under junk load\n\nRun on "
                        f"{datetime.now(UTC).strftime('%Y-%m-%d')}: {machine()}.\n\n"
                        + text + "\n")
        return 0 if met else 1
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    from twisted.internet import reactor as global_reactor
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    results: list[tuple[str, str, str]] = []

    async def run(reactor: IFepReactor) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="fep-bench-"))
        pg: str | None = None
        try:
            if args.only == "decode":
                decode_rows()
                return
            if args.only in (None, "gprs"):
                await gprs_row(reactor)
            if args.only == "gprs":
                return
            pg = postgres_server()
            if args.only == "analysis":
                await analysis_rows(reactor, pg, workdir)
                return
            if args.only == "growth":
                await growth_rows(reactor, pg, workdir)
                return
            if args.only in (None, "collect"):
                await collect_rows(reactor, pg, workdir)
            if args.only == "collect":
                return
            if args.only in (None, "gw3761"):
                await gw3761_rows(reactor, pg, workdir)
            if args.only == "gw3761":
                return
            if args.only in (None, "dlt698"):
                dlt698_rows()
            if args.only == "dlt698":
                return
            if args.only != "ingest":
                await dlms_rows(reactor, pg, workdir)
            if args.only == "dlms":
                return
            readings = make_readings(args.readings)
            results.extend(await ingest_rows(reactor, readings, batch_sizes, workdir,
                                             postgres=pg, repeat=args.repeat))
            if args.only is None:
                await analysis_rows(reactor, pg, workdir)
                await growth_rows(reactor, pg, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            if pg:
                drop_run_databases(pg)
        if args.only in ("dlms", "dlt698", "decode", "collect", "gw3761", "analysis", "growth"):
            return
        iec_row()

    async def analysis_rows(reactor: IFepReactor, pg: str | None, workdir: Path) -> None:
        meters = 2_000 if args.quick else args.analysis_meters
        results.extend(await analysis_bench_rows(reactor, meters, workdir, postgres=pg))

    async def growth_rows(reactor: IFepReactor, pg: str | None, workdir: Path) -> None:
        from fep.bench_growth import postgres_growth, sqlite_growth

        grown = [await sqlite_growth(
            reactor, 100_000 if args.quick else args.growth_sqlite_rows, workdir,
            readings=args.readings, meters=args.growth_meters, batch=args.growth_batch,
            repeat=args.repeat, quantities=args.growth_quantities)]
        if pg:
            grown.append(await postgres_growth(
                reactor, pg, 1_000_000 if args.quick else args.growth_rows, workdir,
                readings=args.readings, meters=args.growth_meters, batch=args.growth_batch,
                repeat=args.repeat, quantities=args.growth_quantities))
        for g in grown:
            for row in g.table():
                results.append(row)
                print(row, flush=True)

    async def collect_rows(reactor: IFepReactor, pg: str | None, workdir: Path) -> None:
        from fep.bench_collect import collection_rate

        meters = min(args.meters, 300) if args.quick else args.meters
        stores = ["SQLite", "PostgreSQL"] if pg else ["SQLite"]
        for protocol, label in (("dlms", "DLMS"), ("dlt645", "DL/T 645")):
            rates: dict[str, float] = {}
            for name in stores:
                url = (fresh_postgres(pg) if pg and name == "PostgreSQL"
                       else f"sqlite:{workdir / f'collect-{protocol}.sqlite'}")
                cpu: list[float] = []
                rates[name] = await collection_rate(reactor, url, workdir, meters,
                                                    protocol=protocol, cpu_per_meter=cpu)
                results.append((f"{label} register collection (one engine, concurrency 50)",
                                f"{name}, {meters} meters (served by another process)",
                                f"{rates[name]:,.0f} meters/s; fep's CPU {cpu[0] * 1000:.2f} ms"
                                " a meter"))
                print(results[-1], flush=True)
            if len(rates) == 2:
                ratio = rates["PostgreSQL"] / rates["SQLite"]
                results.append((f"{label} register collection", "PostgreSQL / SQLite, same run",
                                f"{ratio:.2f}"))
                print(results[-1], flush=True)

    async def gprs_row(reactor: IFepReactor) -> None:
        from fep.bench_gprs import idle_sessions

        idle = await idle_sessions(reactor, args.sessions)
        results.append((
            "idle GPRS sessions (attached DLMS modems, in-memory transports)",
            f"{idle.sessions:,} sessions",
            f"{idle.bytes_per_session:,.0f} bytes/session (tracemalloc); "
            f"{idle.delayed_calls:,} reactor calls held; {idle.idle_cpu:.1%} CPU over "
            f"{idle.idle_seconds:g} s idle",
        ))
        print(results[-1], flush=True)

    def iec_row() -> None:
        rate, lines = iec_decode_rate()
        results.append(("IEC 62056-21 readout decode", f"E350 readout, {lines} values",
                        f"{rate:,.0f} readouts/s ({rate * lines:,.0f} values/s)"))
        print(results[-1], flush=True)

    def dlt698_rows() -> None:
        from fep.bench_dlt698 import fep_rates, peer_rates

        ours, theirs = fep_rates(), peer_rates()
        for key, case in (("normal", "GET-Response-NormalList, the 8 default items"),
                          ("record", "GET-Response-Record, 96 rows of 15-minute frozen")):
            versus = (f"; dlt698 package (C++) {theirs[key]:,.0f}/s, fep "
                      f"{ours[key] / theirs[key]:.2f}x" if theirs else
                      "; dlt698 package not installed")
            results.append(("DL/T 698.45 decode (frame to values)", case,
                            f"{ours[key]:,.0f}/s{versus}"))
            print(results[-1], flush=True)
            results.append(("DL/T 698.45 decode to records", case,
                            f"{ours[key + '_records']:,.0f}/s"))
            print(results[-1], flush=True)

    async def gw3761_rows(reactor: IFepReactor, pg: str | None, workdir: Path) -> None:
        targets = [("SQLite", f"sqlite:{workdir / 'gw3761.sqlite'}")]
        if pg:
            targets.append(("PostgreSQL", fresh_postgres(pg, BENCH_DATABASE + "_gw3761")))
        meters = 50 if args.quick else args.concentrator_meters
        for name, url in targets:
            rate = await concentrator_rate(reactor, url, workdir, meters)
            results.append(("Q/GDW 1376.1 concentrator cycle (one session, spool on)",
                            f"{meters} meters' daily frozen energy and 96-point curve, {name}",
                            f"{rate:,.1f} meters/s ({rate * CONCENTRATOR_ROWS:,.0f} rows/s)"))
            print(results[-1], flush=True)

    def decode_rows() -> None:
        from fep.bench_dlms import side_by_side

        ours, theirs = side_by_side()
        versus = (f"; gurux-dlms {theirs['aare']:,.0f}/s, fep {ours['aare'] / theirs['aare']:.1f}x"
                  if theirs else "; gurux-dlms not installed")
        results.append(("DLMS AARE decode (ACSE, result, InitiateResponse)",
                        "Green Book AARE, LN", f"{ours['aare']:,.0f}/s{versus}"))
        print(results[-1], flush=True)
        for key, case in (("notification", "Data-Notification, 13 registers"),
                          ("profile", "GET response, 96-row load profile")):
            versus = (f"; gurux-dlms {theirs[key]:,.0f}/s, fep {ours[key] / theirs[key]:.1f}x"
                      if theirs else "; gurux-dlms not installed")
            results.append(("DLMS decode (frame to values)", case,
                            f"{ours[key]:,.0f}/s{versus}"))
            print(results[-1], flush=True)
            records = ours[key + "_records"]
            versus = (f"; {records / theirs[key]:.1f}x gurux-dlms to values" if theirs else "")
            results.append(("DLMS decode to records", case, f"{records:,.0f}/s{versus}"))
            print(results[-1], flush=True)
        if args.only == "decode":
            iec_row()

    async def dlms_rows(reactor: IFepReactor, pg: str | None, workdir: Path) -> None:
        from fep.bench_dlms import push_ingest_rate

        decode_rows()
        target = fresh_postgres(pg) if pg else f"sqlite:{workdir / 'dlms-push.sqlite'}"
        rate = await push_ingest_rate(reactor, target, workdir)
        results.append(("DLMS pushes end to end (ciphered, TCP, spool on)",
                        "PostgreSQL" if pg else "SQLite", f"{rate:,.0f} readings/s committed"))
        print(results[-1], flush=True)

    def go(reactor: IFepReactor) -> Deferred[None]:
        return Deferred.fromCoroutine(run(reactor))

    del global_reactor
    try:
        react(go, [])
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    table = ["| benchmark | case | result |", "|---|---|---|"]
    table += [f"| {a} | {b} | {c} |" for a, b, c in results]
    text = "\n".join(table)
    print(text)
    if args.write:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        if args.only is None:
            block = (
                "`make bench` (`python -m fep.bench`) measures ingest throughput "
                "from the router to committed rows, with the spool on (every batch fsynced "
                "before it is acknowledged), and protocol decode rates.\n\n"
                f"Run on {stamp}: {machine()}. {args.readings:,} readings per ingest run, over "
                "1,000 meters.\n\n" + text + "\n\nTargets on this 2-core machine: at least "
                "50,000 readings/s into PostgreSQL and 20,000/s into SQLite.\n")
        else:
            block = (f"### `python -m fep.bench --only {args.only}`\n\nRun on {stamp}: "
                     f"{machine()}.\n\n{text}\n")
        write_owned(Path(args.write), args.only or "all", block)
    return 0


def write_owned(path: Path, key: str, block: str) -> None:
    """Put ``block`` into ``path`` between the markers of ``key`` (``<!-- fep.bench KEY -->``
    and ``<!-- /fep.bench KEY -->``), replacing what was between them and nothing else; a
    file without them gets them at its end, a missing file is made (``# Benchmarks``)."""
    start, end = f"<!-- fep.bench {key} -->", f"<!-- /fep.bench {key} -->"
    owned = f"{start}\n{block.rstrip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    first = text.find(start)
    last = text.find(end, first) if first >= 0 else -1
    if first >= 0 and last >= 0:
        text = text[:first] + owned + text[last + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + owned + "\n"
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
