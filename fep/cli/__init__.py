"""The `fep` command line: on-demand reads, the meter list, stored readings, the schema.

Exit status: 0 done, 1 store failure, 2 usage or configuration error, 3 the meter or the
channel failed (one line on stderr names the route and the failure).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from fep.cli.arguments import DEFAULT_DB, db_url, parse_time, read_options, with_store
from fep.cli.output import (
    EVENT_COLUMNS,
    EXIT_METER,
    EXIT_OK,
    EXIT_STORE,
    EXIT_USAGE,
    INTERVAL_COLUMNS,
    READING_COLUMNS,
    UsageError,
    event_row,
    interval_rows,
    reading_row,
    write_rows,
)
from fep.errors import (
    ChannelError,
    ConfigError,
    FepError,
    FrameError,
    ProtocolError,
    RouteError,
    StoreError,
)
from fep.model import IntervalBlock, Meter, MeterEvent, Reading

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from fep.reactors import IFepReactor, IStoreReactor

# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


async def cmd_read(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.directory import addressed
    from fep.protocols.registry import meter_protocol

    if args.route is None:
        if not args.meter:
            raise UsageError("give a ROUTE and --protocol, or --meter ID of the meter list")
        return await _read_registered(reactor, args)
    if not args.protocol:
        raise UsageError("--protocol is needed with a ROUTE (or give only --meter ID to read "
                         "a meter of the meter list)")
    protocol = meter_protocol(args.protocol)
    endpoint = (await _channels_for(reactor, args, args.route)).endpoint_for(args.route)
    meter = addressed(Meter(
        id=args.meter or args.address or args.route,
        protocol=args.protocol,
        route=args.route,
        address=args.address,
        metadata={**_protocol_options(args), **read_options(args.option)},
    ))
    if getattr(args, "table", None):
        return await _read_tables(reactor, args, protocol, endpoint, meter)
    if args.protocol == "dlms":
        records = await _read_dlms(reactor, args, endpoint, meter)
    else:
        records = await protocol.read(reactor, endpoint, meter, args.timeout)
    _write_records(records, args.format)
    return EXIT_OK


async def _channels_for(reactor: IFepReactor, args: argparse.Namespace, route: str) -> Any:
    """The channels a read from this process uses: with a route through a concentrator
    (``gw3761:DCU1:port=N``), the concentrator's record from the meter list (--db or
    --config's store)."""
    from fep.channels.forwarding import concentrator_id
    from fep.channels.routes import Channels
    from fep.collect.forwarding import add_forwarding

    channels = Channels(reactor)
    owner = concentrator_id(route)
    if owner is None:
        return channels
    known: dict[str, Meter] = {}

    async def work(store: Any) -> int:
        found = await store.meter(owner)
        if found is not None:
            known[owner] = found
        return EXIT_OK

    await with_store(args, work)
    for meter in known.values():
        if meter.route.partition(":")[0].lower() in ("gprs", "dialup"):
            raise UsageError(f"concentrator {meter.id}: its route {meter.route} is reached "
                             "through the daemon's channels; read this meter with --meter "
                             "while the daemon runs")  # fmt: skip
    add_forwarding(channels, known.get)
    return channels


def _write_records(records: Sequence[Any], fmt: str) -> None:
    readings = [r for r in records if isinstance(r, Reading)]
    write_rows([reading_row(r) for r in readings], READING_COLUMNS, fmt)
    intervals = [row for r in records if isinstance(r, IntervalBlock) for row in interval_rows(r)]
    if intervals:
        write_rows(intervals, INTERVAL_COLUMNS, fmt)
    events = [event_row(r) for r in records if isinstance(r, MeterEvent)]
    if events:
        write_rows(events, EVENT_COLUMNS, fmt)


def _control_socket(args: argparse.Namespace) -> str:
    """The daemon's control socket: --socket, else the [control] socket of --config (or of
    the default configuration)."""
    if getattr(args, "socket", None):
        return str(args.socket)
    from fep.config import default_config, load_config

    config = load_config(args.config) if args.config else default_config()
    return str(config.control_socket)


async def _read_registered(reactor: IFepReactor, args: argparse.Namespace) -> int:
    """``fep read --meter ID``: the meter of the meter list, read by the running daemon
    (asked on its control socket: the collection engine's read-now through its channels,
    line locks, modem pool and GPRS sessions; the records stored as a poll's). When no
    daemon answers, read here directly over the meter's route (nothing stored)."""
    import getpass

    from fep.operator.control import DaemonUnreachable, ask
    from fep.serialize import record_from_list

    if args.table:
        raise UsageError("--table needs a ROUTE and --protocol")
    options = read_options(args.option)
    path = _control_socket(args)
    try:
        answer = await ask(reactor, path, "read", timeout=None, meter=args.meter,
                           options=options, who=getpass.getuser())
    except DaemonUnreachable:
        print(f"fep: no daemon answers on {path}: reading meter {args.meter} directly over "
              "its route (nothing is stored)", file=sys.stderr)
        records = await _read_directly(reactor, args, options)
    else:
        records = [record_from_list(r) for r in answer.get("records") or []]
    _write_records(records, args.format)
    return EXIT_OK


async def _read_directly(reactor: IFepReactor, args: argparse.Namespace,
                         options: dict[str, str]) -> list[Any]:
    """A meter of the meter list (the store of --db or --config, its secrets from the
    secret store when there is a master key) read over its route from this process."""
    import attrs

    from fep.channels.routes import parse_route
    from fep.collect.dlt698_route import forwarding, terminal_id, through_terminal
    from fep.directory import MeterDirectory, addressed
    from fep.protocols.registry import meter_protocol

    async def work(store: Any) -> int:
        found = await store.meter(args.meter)
        if found is None:
            raise UsageError(f"no meter {args.meter!r} in the meter list ({db_url(args)})")
        vault = _secret_store(args, store)
        if vault is not None:
            found = await MeterDirectory(store, vault).resolve(found)
        meters.append(found)
        # A meter behind a DL/T 698.45 terminal (dlt698:ID) is read through the terminal.
        via = terminal_id(found.route)
        terminal = await store.meter(via) if via is not None else None
        if terminal is not None:
            if vault is not None:
                terminal = await MeterDirectory(store, vault).resolve(terminal)
            meters.append(terminal)
        return EXIT_OK

    meters: list[Meter] = []
    await with_store(args, work)
    meter = addressed(attrs.evolve(meters[0], metadata={**meters[0].metadata, **options}))
    route = meter.route
    through = through_terminal(meter, {m.id: m for m in meters[1:]}.get)
    if through is not None:
        route, meter = through
    args.route, args.protocol = route, meter.protocol  # for errors and DLMS counters
    scheme = parse_route(route).scheme
    if scheme in ("gprs", "dialup"):
        raise UsageError(f"meter {meter.id}: its route {route} is reached through the "
                         f"daemon's {scheme} channel, and no daemon answers")
    endpoint = forwarding((await _channels_for(reactor, args, route)).endpoint_for(route),
                          meter)
    if meter.protocol == "dlms":
        return await _read_dlms(reactor, args, endpoint, meter)
    return list(await meter_protocol(meter.protocol).read(reactor, endpoint, meter,
                                                          args.timeout))


def _secret_store(args: argparse.Namespace, store: Any) -> Any:
    """The secret store under the configured master key; None when there is none (no master
    key file yet: no secrets kept)."""
    from fep.config import default_config, load_config
    from fep.config_secrets import master_key_for
    from fep.store.secrets import SecretStore
    from fep.vault import spec_file

    config = load_config(args.config) if args.config else default_config()
    path = spec_file(config.master_key_spec)
    if not config.secrets.master_key and path is not None and not path.exists():
        return None
    return SecretStore(store, master_key_for(config))


async def _read_dlms(reactor: IStoreReactor, args: argparse.Namespace, endpoint: Any, meter: Meter
                     ) -> list[Any]:
    """A DLMS read. A meter with keys is read with the daemon's invocation counters and
    client system title (the store and data directory of --config, or the store of --db),
    never with counters of our own that could repeat one already sent."""
    from fep.protocols.dlms.context import DlmsContext
    from fep.protocols.dlms.session import DlmsProtocol
    from fep.protocols.dlms.settings import settings_for

    client, _ = settings_for(meter)
    if client.keys is None:
        return list(await DlmsProtocol(DlmsContext(None)).read(
            reactor, endpoint, meter, args.timeout))
    if not args.config and not args.db:
        raise UsageError(
            f"meter {meter.id} has DLMS keys: fep read takes its invocation counters from the "
            "store the daemon uses, so that none is sent twice; give --config FEP.INI "
            "(or --db URL)"
        )
    from fep.config import SCHEMA, load_config
    from fep.protocols.dlms.identity import node_system_title
    from fep.store import open_store
    from fep.store.counters import invocation_counters

    url = db_url(args)
    if args.config:
        config = load_config(args.config)
        data_dir = Path(config.fep.data_dir)
        title = config.dlms.client_system_title(config.fep.node)
    else:
        # --db alone: the default node; a SQLite store's counter file lies next to it.
        data_dir = (Path(url[len("sqlite:"):]).parent if url.startswith("sqlite:")
                    else Path(SCHEMA["fep"]["data_dir"].default))
        title = node_system_title(SCHEMA["fep"]["node"].default)
    store = open_store(url, reactor)
    await store.open()
    try:
        counters = invocation_counters(reactor, store, data_dir)
        await counters.open()
        try:
            return list(await DlmsProtocol(DlmsContext(counters, title)).read(
                reactor, endpoint, meter, args.timeout))
        finally:
            await counters.close()
    finally:
        await store.close()


TABLE_COLUMNS = ("meter", "label", "name", "size", "fields", "hex", "decode_error", "error")


async def _read_tables(
    reactor: IReactorTime, args: argparse.Namespace, protocol: Any, endpoint: Any, meter: Meter
) -> int:
    """``read --table N ...`` (ANSI C12): one row per table, decoded or in hex; exit 3
    when the meter refused any of them."""
    read_tables = getattr(protocol, "read_tables", None)
    if read_tables is None:
        raise UsageError(f"--table is for --protocol ansi-c12, not {args.protocol}")
    from fep.protocols.ansi_c12.tables import parse_table

    try:
        numbers = [parse_table(text) for text in args.table]
    except ValueError as e:
        raise UsageError(str(e)) from None
    rows = await read_tables(reactor, endpoint, meter, numbers, args.timeout)
    write_rows(rows, TABLE_COLUMNS, args.format)
    refused = [f"{row['label']}: {row['error']}" for row in rows if row.get("error")]
    if refused:
        where = f"route {meter.route}: meter {meter.id}" if meter.id != meter.route else (
            f"route {meter.route}"
        )
        return _fail(EXIT_METER, f"{where}: not read: {'; '.join(refused)}")
    return EXIT_OK


_DLMS_OPTIONS = {
    "link": "dlms_link",
    "client_address": "dlms_client",
    "server_address": "dlms_server",
    "auth": "dlms_auth",
    "password": "dlms_password",
    "system_title": "dlms_system_title",
    "ek": "dlms_ek",
    "ak": "dlms_ak",
    "profile": "dlms_profile",
    "from_time": "dlms_from",
    "to_time": "dlms_to",
}


def _protocol_options(args: argparse.Namespace) -> dict[str, str]:
    """The protocol options given on the command line, as meter metadata."""
    if args.protocol == "dlt645":
        return {"dlt645_items": ",".join(args.di)} if args.di else {}
    if args.protocol == "gw3761":
        gw = {"gw3761_points": ",".join(args.point), "gw3761_items": ",".join(args.fn),
              "gw3761_from": args.from_time or "", "gw3761_to": args.to_time or ""}
        return {k: v for k, v in gw.items() if v}
    if args.protocol == "dlt698":
        return _dlt698_options(args)
    if args.protocol in ("modbus", "modbus-pulse"):
        modbus = {"modbus_device_map": args.device_map,
                  "modbus_unit": None if args.unit_id is None else str(args.unit_id)}
        return {k: v for k, v in modbus.items() if v is not None}
    if args.protocol.startswith("ansi-c12"):
        c12 = {"c12_password": args.password, "c12_user": args.user}
        return {k: v for k, v in c12.items() if v is not None}
    metadata = {
        key: str(getattr(args, name))
        for name, key in _DLMS_OPTIONS.items()
        if getattr(args, name, None) is not None
    }
    if getattr(args, "objects", None):
        metadata["dlms_objects"] = ",".join(args.objects)
    return metadata


def _dlt698_options(args: argparse.Namespace) -> dict[str, str]:
    """``--oad``, ``--frozen`` and ``--from``/``--to`` as a DL/T 698.45 meter's metadata
    (fep.protocols.dlt698.session); only the frozen records are read when no --oad is
    given with --frozen."""
    if (args.from_time or args.to_time) and not args.frozen:
        raise UsageError("--from/--to give the range of --frozen records (dlt698)")
    options = {"dlt698_items": ",".join(args.oad), "dlt698_frozen": ",".join(args.frozen)}
    if args.frozen and not args.oad:
        options["dlt698_items"] = "none"
    if args.from_time or args.to_time:
        if not (args.from_time and args.to_time):
            raise UsageError("--frozen with a range needs both --from and --to")
        options["dlt698_from"] = parse_time(args.from_time).isoformat()
        options["dlt698_to"] = parse_time(args.to_time).isoformat()
    return {k: v for k, v in options.items() if v}


async def cmd_readings(reactor: IFepReactor, args: argparse.Namespace) -> int:
    since = parse_time(args.since) if args.since else None

    async def work(store: Any) -> int:
        readings = await store.readings(args.meter, since=since, obis=args.obis, limit=args.limit)
        write_rows([reading_row(r) for r in readings], READING_COLUMNS, args.format)
        return EXIT_OK

    return await with_store(args, work)


METER_COLUMNS = ("id", "protocol", "route", "address", "serial", "credentials")


def _meter_row(meter: Meter) -> dict[str, object]:
    row: dict[str, object] = {c: getattr(meter, c) for c in METER_COLUMNS}
    return row


async def cmd_meters(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.protocols.registry import meter_protocol

    async def work(store: Any) -> int:
        from fep.cli.keys import keep_meter_secrets

        if args.meters_command == "add":
            meter_protocol(args.protocol)
            meter = Meter(
                id=args.id,
                protocol=args.protocol,
                route=args.route,
                address=args.address,
                serial=args.serial,
                credentials=args.credentials,
                metadata=read_options(args.option),
            )
            # Keys and passwords go to the secret store, never into the meter list.
            (meter,), kept = await keep_meter_secrets(args, store, [meter])
            await store.add_meters([meter])
            print(f"meter {meter.id} saved" + (f"; {kept} secrets in the secret store"
                                               if kept else ""))
        elif args.meters_command == "import":
            meters, kept = await keep_meter_secrets(args, store, read_meter_csv(Path(args.file)))
            count = await store.add_meters(meters)
            print(f"{count} meters imported from {args.file}" + (
                f"; {kept} secrets in the secret store" if kept else ""))
        else:
            meters = await store.meters()
            write_rows([_meter_row(m) for m in meters], METER_COLUMNS, args.format)
        return EXIT_OK

    return await with_store(args, work)


async def cmd_db(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.store import open_store

    if args.db_command == "retention":
        return await _db_retention(reactor, args)
    if args.db_command == "compact":
        return await _db_compact(reactor, args)
    store = open_store(db_url(args), reactor)
    applied = await store.upgrade()
    await store.close()
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("schema is up to date")
    return EXIT_OK


async def _db_retention(reactor: IFepReactor, args: argparse.Namespace) -> int:
    """`fep db retention`: detach or drop the record tables' partitions wholly older than
    the cutoff (PostgreSQL only)."""
    from datetime import UTC, datetime

    from fep.store import open_store
    from fep.store.partitions import apply_retention, default_rows, retention_cutoff
    from fep.store.postgres import PostgresStore

    settings = None
    if args.config:
        from fep.config import load_config

        settings = load_config(args.config).store
    store = open_store(db_url(args), reactor)
    if not isinstance(store, PostgresStore):
        raise UsageError("retention is not supported on SQLite: its records are not "
                         "partitioned (retention drops PostgreSQL's monthly partitions)")
    if args.keep is not None and args.keep < 1:
        raise UsageError("--keep must be at least 1 (month)")
    keep = args.keep if args.keep is not None else (settings and settings.retention)
    if not keep:
        raise UsageError("give --keep N (months) or set [store] retention")
    action = args.action or (settings.retention_action if settings else "detach")
    cutoff = retention_cutoff(datetime.fromtimestamp(reactor.seconds(), UTC), keep)
    await store.open()
    try:
        changes = await apply_retention(store, cutoff, action, dry_run=args.dry_run)
        waiting = {table: await store.interact(default_rows, table) for table in changes}
    finally:
        await store.close()
    print(f"keeping {keep} months and this one: partitions wholly before "
          f"{cutoff:%Y-%m-%d} go ({'dry run, ' if args.dry_run else ''}{action})")
    for table, done in changes.items():
        for change in done:
            print(change.describe())
        if not done:
            print(f"{table}: nothing wholly before {cutoff:%Y-%m-%d}")
        if waiting[table]:
            print(f"{table}: {waiting[table]} rows in {table}_default (times outside the "
                  "monthly partitions; retention leaves them)")
    return EXIT_OK


async def _db_compact(reactor: IFepReactor, args: argparse.Namespace) -> int:
    """`fep db compact`: the closed days of intervals into day rows now, as the daemon does
    daily (PostgreSQL only), with progress by month."""
    from datetime import UTC, datetime

    from fep.store import open_store
    from fep.store.compaction import DEFAULT_COMPACT_AFTER, compact_intervals
    from fep.store.postgres import PostgresStore

    after = DEFAULT_COMPACT_AFTER
    if args.after is not None:
        after = args.after
    elif args.config:
        from fep.config import load_config

        configured = load_config(args.config).store.compact_after
        if configured is not None:
            after = configured
    store = open_store(db_url(args), reactor)
    if not isinstance(store, PostgresStore):
        raise UsageError("compaction is for PostgreSQL: SQLite keeps intervals as rows")
    since = None if args.since is None else parse_time(args.since)

    def progress(month: datetime, days: int, intervals: int) -> None:
        print(f"{month:%Y-%m}: {intervals:,} intervals into {days:,} day rows", flush=True)

    await store.open()
    try:
        result = await compact_intervals(
            store, datetime.fromtimestamp(reactor.seconds(), UTC), after, since=since,
            progress=progress)
    except StoreError as e:
        raise UsageError(str(e)) from None
    finally:
        await store.close()
    print(result.describe())
    return EXIT_OK


SESSION_COLUMNS = (
    "id", "modem", "meters", "state", "peer", "listener", "since", "last_frame", "bytes_in",
    "bytes_out", "frames", "job",
)


async def cmd_sessions(reactor: IFepReactor, args: argparse.Namespace) -> int:
    """The running daemon's live modem sessions, asked over its control socket."""
    from fep.operator.control import ask

    path = args.socket
    if not path:
        from fep.config import default_config, load_config

        config = load_config(args.config) if args.config else default_config()
        path = str(config.control_socket)
    answer = await ask(reactor, path, "sessions")
    sessions: list[dict[str, object]] = list(answer.get("sessions") or [])
    if args.format == "json":
        for row in sessions:
            sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()
        return EXIT_OK
    rows = [
        {**row, "meters": ",".join(str(m) for m in row.get("meters") or [])}  # type: ignore[attr-defined]
        for row in sessions
    ]
    write_rows(rows, SESSION_COLUMNS, "table")
    if not answer.get("gprs"):
        print("(no [gprs] listener is configured on this node)", file=sys.stderr)
    return EXIT_OK


async def cmd_export(reactor: IFepReactor, args: argparse.Namespace) -> int:
    """``fep export cim METER``: IEC 61968-9 MeterReadings or EndDeviceEvents XML."""
    from fep.operator import cim

    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None

    async def work(store: Any) -> int:
        meter = await store.meter(args.meter)
        if meter is None:
            raise UsageError(f"no meter {args.meter!r} in the store")
        if args.kind == "events":
            xml = await cim.export_events(store, meter, since, until)
        else:
            xml = await cim.export_readings(store, meter, since, until)
        if args.output and args.output != "-":
            Path(args.output).write_bytes(xml)
            print(f"wrote {args.output}")
        else:
            sys.stdout.buffer.write(xml)
            sys.stdout.flush()
        return EXIT_OK

    return await with_store(args, work)


def read_meter_csv(path: Path) -> list[Meter]:
    """Meters from a CSV file with a header: id, protocol, route are required; address,
    serial, credentials optional; any other column goes into the meter's metadata."""
    from fep.protocols.registry import meter_protocol

    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(path)) from None
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    missing = [c for c in ("id", "protocol", "route") if c not in fields]
    if missing:
        raise ConfigError(f"missing column(s) {', '.join(missing)}", file=str(path))
    meters = []
    for line, row in enumerate(reader, start=2):
        try:
            meter_protocol(row["protocol"])
        except ConfigError as e:
            raise ConfigError(f"line {line}: {e}", file=str(path), key="protocol") from None
        if not row["id"] or not row["route"]:
            raise ConfigError(f"line {line}: id and route must not be empty", file=str(path))
        known = {"id", "protocol", "route", "address", "serial", "credentials"}
        meters.append(
            Meter(
                id=row["id"],
                protocol=row["protocol"],
                route=row["route"],
                address=row.get("address") or None,
                serial=row.get("serial") or None,
                credentials=row.get("credentials") or None,
                metadata={k: v for k, v in row.items() if k not in known and v},
            )
        )
    return meters


# ---------------------------------------------------------------------------
# Parsing and running
# ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fep", description="fep: front-end processor for smart meters")
    parser.add_argument("--db", help=f"store URL (default {DEFAULT_DB}, or the config's)")
    parser.add_argument("--config", help="take the store URL from this fep.ini")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    read = sub.add_parser(
        "read", help="read a meter now and print its readings",
        description="Read a meter now and print its readings. With ROUTE and --protocol: "
        "that meter, read from this process (nothing stored). With --meter ID alone: the "
        "meter of the meter list, read by the running daemon through its control socket "
        "(its channels: line locks, modem pool, GPRS sessions; the records are stored like "
        "a poll's); when no daemon runs, read directly over its route from this process "
        "(nothing stored; gprs: and dialup: routes need the daemon).")
    read.add_argument("route", nargs="?",
                      help="endpoint string, e.g. tcp:host=127.0.0.1:port=4059 (leave out "
                      "with --meter ID to read a meter of the meter list)")
    read.add_argument("--protocol", help="meter protocol, e.g. iec62056-21 (with ROUTE)")
    read.add_argument("--address", help="device address on the route")
    read.add_argument("--meter", help="with ROUTE: the meter id to print (default: address "
                      "or route); alone: the meter of the meter list to read, through the "
                      "daemon when it runs")
    read.add_argument("--socket", help="the daemon's control socket for --meter (default: "
                      "from --config, else var/control.sock)")
    read.add_argument("--timeout", type=float, default=10.0, help="seconds per step")
    read.add_argument("--format", choices=("json", "table"), default="json")
    read.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a protocol setting kept in the meter's metadata (repeatable), e.g. "
        "-o dlt645_items=00010000,02010100",
    )
    dlt645 = read.add_argument_group("DL/T 645 (--protocol dlt645)")
    dlt645.add_argument(
        "--di",
        action="append",
        default=[],
        metavar="DI",
        help="data identifier to read, hex (repeatable), e.g. --di 00010000",
    )
    gw3761 = read.add_argument_group("Q/GDW 1376.1 concentrators (--protocol gw3761, "
                                     "--address A1:A2)")
    gw3761.add_argument("--point", action="append", default=[], metavar="N",
                        help="measuring point to read (repeatable; default 1)")
    gw3761.add_argument("--fn", action="append", default=[], metavar="AFN:Fn",
                        help="class to read (repeatable), e.g. 0C:F129, 0D:F161, 0D:F101; "
                        "--from/--to (below) give the curves' range, terminal time when naive")
    dlt698 = read.add_argument_group("DL/T 698.45 (--protocol dlt698, --address ADDR)")
    dlt698.add_argument("--oad", action="append", default=[], metavar="OAD",
                        help="attribute to read, 8 hex digits (repeatable), e.g. 00100200")
    dlt698.add_argument("--frozen", action="append", default=[], metavar="OAD",
                        help="frozen record to read (repeatable), e.g. 50040200: its rows "
                        "frozen in --from/--to (below), else its latest row")
    modbus = read.add_argument_group("Modbus pulse recorders (--protocol modbus)")
    modbus.add_argument("--device-map", metavar="NAME",
                        help="register map: etc/devices/NAME.ini or a path, e.g. sim-pr2")
    modbus.add_argument("--unit-id", type=int, metavar="N", help="Modbus unit id (default 1)")
    c12 = read.add_argument_group("ANSI C12.18 (--protocol ansi-c12.18); --password is shared")
    c12.add_argument("--user", help="C12.18 logon user name")
    c12.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="N",
        help="read this C12.19 table instead (repeatable: 23, ST23, MT0) and print it "
        "decoded, or in hex where fep does not know it",
    )
    dlms = read.add_argument_group("DLMS/COSEM (--protocol dlms)")
    dlms.add_argument(
        "objects",
        nargs="*",
        metavar="CLASS/OBIS/ATTRIBUTE",
        help="objects to read, e.g. 3/1-0:1.8.0.255/2 (default: clock and the main registers)",
    )
    dlms.add_argument("--link", choices=("wrapper", "hdlc"), help="DLMS link (default wrapper)")
    dlms.add_argument(
        "--client-address", help="client SAP / wrapper port (16 public, 1 management)"
    )
    dlms.add_argument("--server-address", help="server logical[/physical] address")
    dlms.add_argument("--auth", choices=("none", "low", "high-gmac"), help="authentication")
    dlms.add_argument("--password", help="DLMS LLS password, or the C12.18 security password")
    dlms.add_argument("--system-title", help="our system title (hex, 8 bytes)")
    dlms.add_argument("--ek", help="block cipher key (hex, 16 bytes)")
    dlms.add_argument("--ak", help="authentication key (hex, 16 bytes)")
    dlms.add_argument("--profile", help="profile generic to read, e.g. 1.0.99.1.0.255")
    dlms.add_argument("--from", dest="from_time", help="profile range start (ISO-8601)")
    dlms.add_argument("--to", dest="to_time", help="profile range end (ISO-8601)")
    read.set_defaults(run=cmd_read)

    meters = sub.add_parser("meters", help="the meter list")
    msub = meters.add_subparsers(dest="meters_command", required=True, parser_class=_Parser)
    add = msub.add_parser("add", help="add or update a meter")
    add.add_argument("id")
    add.add_argument("--protocol", required=True)
    add.add_argument("--route", required=True)
    add.add_argument("--address")
    add.add_argument("--serial")
    add.add_argument("--credentials", help="reference to the meter's keys or password")
    add.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                     help="meter metadata (repeatable); keys and passwords (dlms_ek, "
                     "c12_password, ...) go to the secret store")
    lst = msub.add_parser("list", help="list the meters")
    lst.add_argument("--format", choices=("json", "csv", "table"), default="table")
    imp = msub.add_parser("import", help="add or update meters from a CSV file")
    imp.add_argument("file")
    meters.set_defaults(run=cmd_meters)

    readings = sub.add_parser("readings", help="print a meter's stored readings")
    readings.add_argument("meter")
    readings.add_argument("--since", help="ISO-8601 time (UTC unless a zone is given)")
    readings.add_argument("--obis", help="only this OBIS code, e.g. 1-0:1.8.0*255 or 1.8.0")
    readings.add_argument("--limit", type=int)
    readings.add_argument("--format", choices=("json", "csv", "table"), default="table")
    readings.set_defaults(run=cmd_readings)

    sessions = sub.add_parser(
        "sessions", help="live modem sessions of the running daemon (its control socket)"
    )
    sessions.add_argument(
        "--socket", help="the daemon's control socket (default: from --config, else "
        "var/control.sock)"
    )
    sessions.add_argument("--format", choices=("json", "table"), default="table")
    sessions.set_defaults(run=cmd_sessions)
    export = sub.add_parser("export", help="export stored data for other systems")
    esub = export.add_subparsers(dest="export_command", required=True, parser_class=_Parser)
    cim = esub.add_parser("cim", help="IEC 61968-9 MeterReadings / EndDeviceEvents XML")
    cim.add_argument("meter")
    cim.add_argument("--from", dest="since", help="start, ISO-8601 (UTC unless a zone)")
    cim.add_argument("--to", dest="until", help="end (exclusive), ISO-8601")
    cim.add_argument("--kind", choices=("readings", "events"), default="readings",
                     help="MeterReadings (readings and load profile) or EndDeviceEvents")
    cim.add_argument("-o", "--output", help="file to write (default: standard output)")
    export.set_defaults(run=cmd_export)

    db = sub.add_parser("db", help="the store's schema")
    dsub = db.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    dsub.add_parser("upgrade", help="apply pending schema migrations")
    retention = dsub.add_parser(
        "retention", help="detach or drop the record partitions older than the retention "
        "(PostgreSQL)")
    retention.add_argument("--keep", type=int, metavar="N",
                           help="months kept before this one (default: [store] retention)")
    what = retention.add_mutually_exclusive_group()
    what.add_argument("--detach", dest="action", action="store_const", const="detach",
                      help="detach old partitions, keeping them as plain tables")
    what.add_argument("--drop", dest="action", action="store_const", const="drop",
                      help="drop old partitions")
    retention.add_argument("--dry-run", action="store_true",
                           help="only list what would be detached or dropped")
    compact = dsub.add_parser(
        "compact", help="keep each closed, regular day of a meter's intervals as one row "
        "(PostgreSQL; the daemon does it daily)")
    compact.add_argument("--after", type=int, metavar="DAYS",
                         help="days that end this many days before today (at least 3; "
                         "default: [store] compact_after, else 7)")
    compact.add_argument("--since", metavar="YYYY-MM-DD",
                         help="look again from this day (a run goes on where the last ended)")
    db.set_defaults(run=cmd_db)

    from fep.cli.collect import add_commands

    add_commands(sub, _Parser)
    from fep.cli import keys

    keys.add_commands(sub, _Parser)
    from fep.cli import concentrators

    concentrators.add_commands(sub, _Parser)
    from fep.cli import analysis

    analysis.add_commands(sub, _Parser)
    return parser


def _fail(code: int, message: str) -> int:
    print(f"fep: {message}", file=sys.stderr)
    return code


def _describe(error: FepError, args: argparse.Namespace) -> str:
    route = getattr(error, "route", None) or getattr(args, "route", None)
    prefix = f"route {route}: " if route else ""
    meter = getattr(error, "meter", None)
    if meter and meter != route and not str(error).startswith(f"meter {meter} "):
        prefix += f"meter {meter}: "
    return prefix + str(error)


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    parser = build_parser()
    # Objects to read may follow options (read ROUTE --protocol dlms 3/1.0.1.8.0.255/2 ...),
    # which argparse's positionals do not allow: pick them up from what is left over.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "read" and not any(e.startswith("-") for e in extra):
            args.objects = [*args.objects, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "obis", None):
        from fep.model import ObisCode

        try:
            args.obis = str(ObisCode.parse(args.obis))
        except ValueError as e:
            return _fail(EXIT_USAGE, str(e))

    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    outcome: list[int] = []

    def finished(result: object) -> None:
        if isinstance(result, Failure):
            assert result.value is not None
            outcome.append(_exit_for(result.value, args))
        else:
            outcome.append(int(result))  # type: ignore[call-overload]
        reactor.stop()

    def go() -> None:
        d = Deferred.fromCoroutine(args.run(cast("IFepReactor", reactor), args))
        d.addBoth(finished)

    reactor.callWhenRunning(go)
    reactor.run()
    return outcome[0] if outcome else EXIT_STORE


def _exit_for(error: BaseException, args: argparse.Namespace) -> int:
    from fep.operator.control import RequestRefused

    if isinstance(error, UsageError | ConfigError | RouteError | RequestRefused):
        return _fail(EXIT_USAGE, str(error))
    if isinstance(error, ChannelError | ProtocolError | FrameError):
        return _fail(EXIT_METER, _describe(error, args))
    if isinstance(error, StoreError):
        return _fail(EXIT_STORE, f"store: {error}")
    if isinstance(error, FepError):
        return _fail(EXIT_METER, _describe(error, args))
    import traceback

    traceback.print_exception(error)
    return _fail(EXIT_STORE, f"internal error: {error!r}")


def main(argv: Iterable[str] | None = None) -> NoReturn:
    sys.exit(run(list(argv) if argv is not None else None))

