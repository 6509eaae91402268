"""Secrets on the command line: ``fep keys init|import|list|rotate|token``, and meter
secrets moved out of the meter list (``fep meters add/import``).

A meter secret (fep.vault.METER_SECRETS: dlms_ek, dlms_ak, dlms_kek, dlms_password,
c12_password, c12_auth_key, dlt645_password, gprs_secret, modem_secret, sim_pin) given to
``fep meters`` goes to the secret store, sealed under the master key; the meter list keeps
no clear value. Nothing here prints or logs a value: listings show fingerprints.

A configuration value ``secret:NAME`` (``[sms] pin``, ``[northbound] amqp_url``) is the
configuration secret NAME (``fep keys import - NAME``), opened when the daemon is built
(fep.config_secrets).
"""

from __future__ import annotations

import argparse
import csv
import io
import secrets as random_tokens
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from fep.cli.arguments import with_store
from fep.cli.output import EXIT_OK, UsageError, write_rows
from fep.config_secrets import CONFIG_METER, master_key_for
from fep.errors import ConfigError
from fep.model import Meter

if TYPE_CHECKING:
    from fep.reactors import IFepReactor
from fep.vault import (
    CONFIG_SECRETS,
    METER_SECRETS,
    create_master_key,
    is_meter_secret,
    load_master_key,
    spec_file,
    split_secrets,
)

_HEX_KEYS = {"dlms_ek": 16, "dlms_ak": 16, "dlms_kek": 16, "c12_auth_key": 8}


def _config(args: argparse.Namespace) -> Any:
    from fep.config import default_config, load_config

    return load_config(args.config) if getattr(args, "config", None) else default_config()


def check_secret(meter: str, name: str, value: str) -> None:
    """Refuse a secret fep would not use (names the meter and secret, never the value)."""
    where = f"meter {meter}" if meter != CONFIG_SECRETS else "the configuration"
    if meter != CONFIG_SECRETS and not is_meter_secret(name):
        raise ConfigError(f"{where}: {name!r} is not a meter secret (one of "
                          f"{', '.join(METER_SECRETS)})", key="name")
    if not value:
        raise ConfigError(f"{where}: {name} is empty", key=name)
    size = _HEX_KEYS.get(name)
    if size is not None:
        text = value[4:] if value.lower().startswith("hex:") else value
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != size:
            raise ConfigError(f"{where}: {name} must be {size} bytes in hex", key=name)


async def keep_meter_secrets(
    args: argparse.Namespace, store: Any, meters: Sequence[Meter]
) -> tuple[list[Meter], int]:
    """The meters without their secrets, the secrets kept in the secret store first; and
    how many secrets were kept."""
    from fep.store.secrets import SecretStore

    plain: list[Meter] = []
    found: list[tuple[str, str, str]] = []
    for meter in meters:
        metadata, secret = split_secrets(meter.metadata)
        for name, value in secret.items():
            check_secret(meter.id, name, value)
            found.append((meter.id, name, value))
        plain.append(attrs.evolve(meter, metadata=metadata))
    if found:
        vault = SecretStore(store, master_key_for(_config(args), create=True))
        for meter_id, name, value in found:
            await vault.put(meter_id, name, value)
    return plain, len(found)


def _read_value(value: str | None) -> str:
    if value is None or value == "-":
        return sys.stdin.readline().strip()
    return value.strip()


def _read_csv(path: Path) -> list[tuple[str, str, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(path)) from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("meter", "name", "value") if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(f"missing column(s) {', '.join(missing)}", file=str(path))
    rows = []
    for row in reader:
        meter = (row["meter"] or "").strip()
        rows.append((CONFIG_SECRETS if meter in ("", CONFIG_METER) else meter,
                     (row["name"] or "").strip().lower(), (row["value"] or "").strip()))
    return rows


LIST_COLUMNS = ("id", "meter", "name", "key_id", "fingerprint", "created")


async def cmd_keys(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.store.secrets import SecretStore

    action = args.keys_command
    config = _config(args)
    if action == "init":
        key = create_master_key(config.master_key_spec)
        print(f"master key {key.key_id} written to {spec_file(key.source)} (mode 600); "
              "back it up")
        return EXIT_OK
    if action == "token":
        from fep.operator.commands import ROLES
        from fep.operator.tokens import token_line

        if args.role not in ROLES:
            raise UsageError(f"role {args.role!r} is not one of {', '.join(ROLES)}")
        token = random_tokens.token_urlsafe(32)
        print(f"token for {args.name} (give it to them; it is not kept): {token}")
        print(f"token file line: {token_line(args.name, args.role, token)}")
        return EXIT_OK

    async def work(store: Any) -> int:
        if action == "list":
            vault = SecretStore(store, master_key_for(config))
            rows = [{"id": i.id, "meter": i.meter or "(config)", "name": i.name,
                     "key_id": i.key_id, "fingerprint": i.fingerprint, "created": i.created}
                    for i in await vault.infos(args.meter)]
            write_rows(rows, LIST_COLUMNS, args.format)
            return EXIT_OK
        if action == "import":
            return await _import(args, store)
        if action == "rotate":
            return await _rotate(args, store)
        raise UsageError(f"unknown keys command {action!r}")

    return await with_store(args, work)


async def _import(args: argparse.Namespace, store: Any) -> int:
    from fep.store.secrets import SecretStore

    if args.from_metadata:
        meters = await store.meters()
        keyed = [m for m in meters if split_secrets(m.metadata)[1]]
        plain, count = await keep_meter_secrets(args, store, keyed)
        if plain:
            await store.add_meters(plain)
        await _scrub(store)
        print(f"{count} secrets of {len(plain)} meters moved from the meter list to the "
              "secret store")
        return EXIT_OK
    if args.file:
        rows = _read_csv(Path(args.file))
    elif args.meter and args.name:
        meter = CONFIG_SECRETS if args.meter == CONFIG_METER else args.meter
        rows = [(meter, args.name.strip().lower(), _read_value(args.value))]
    else:
        raise UsageError("fep keys import METER NAME [VALUE] | --file CSV | --from-metadata")
    known = {m.id for m in await store.meters()}
    for meter, name, value in rows:
        if meter != CONFIG_SECRETS and meter not in known:
            raise ConfigError(f"no meter {meter!r} in the store (fep meters add it first)",
                              key="meter")
        check_secret(meter, name, value)
    vault = SecretStore(store, master_key_for(_config(args), create=True))
    for meter, name, value in rows:
        info = await vault.put(meter, name, value)
        print(f"{info.meter or '(config)'} {info.name}: kept (fingerprint {info.fingerprint})")
    return EXIT_OK


async def _rotate(args: argparse.Namespace, store: Any) -> int:
    from fep.store.secrets import SecretStore

    config = _config(args)
    if args.master_key:
        old = master_key_for(config)
        spec = args.master_key
        path = spec_file(spec)
        new = (create_master_key(spec) if path is not None and not path.exists()
               else load_master_key(spec))
        if new.key_id == old.key_id:
            raise UsageError("the new master key is the one in use")
        count = await SecretStore(store, old).rotate_master(new)
        print(f"{count} secrets re-wrapped from master key {old.key_id} to {new.key_id}; "
              f"now set [secrets] master_key = {spec} on every node and restart them")
        return EXIT_OK
    if args.meter:
        from fep.collect import commands as cmd
        from fep.collect.engine import approval_of, resource_policy
        from fep.collect.jobstore import job_store
        from fep.collect.key_transfer import key_names

        meter = await store.meter(args.meter)
        if meter is None:
            raise ConfigError(f"no meter {args.meter!r}", key="meter")
        from fep.cli.collect import cli_operator

        params = {"keys": ",".join(key_names({"keys": args.keys}))}
        c = await cmd.request(
            job_store(store), meter, "key-transfer", params, cli_operator(args, "command"),
            time.time(),
            approval=approval_of(config.collect), policy=resource_policy(config.collect),
        )
        print(f"command {c.id}: key-transfer of {params['keys']} for {c.meter} awaits "
              f"approval (fep command approve {c.id}, by someone else)")
        return EXIT_OK
    raise UsageError("fep keys rotate --master-key SPEC | --meter METER")


async def _scrub(store: Any) -> None:
    """Leave no old page of the SQLite file holding a value just moved (the WAL copied back
    and truncated; secure_delete zeroes freed cells)."""
    from fep.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        def checkpoint(conn: Any) -> None:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")

        await store.interact(checkpoint)


def add_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Register ``fep keys`` with the `fep` parser."""
    keys = sub.add_parser("keys", help="secrets at rest: the master key, meter keys, tokens")
    ksub = keys.add_subparsers(dest="keys_command", required=True, parser_class=parser_class)
    ksub.add_parser("init", help="make the master key file ([secrets] master_key)")
    imp = ksub.add_parser("import", help="keep secrets in the secret store")
    imp.add_argument("meter", nargs="?", help=f"meter id ({CONFIG_METER}: a secret:NAME of "
                     "the configuration)")
    imp.add_argument("name", nargs="?", help=f"secret name ({', '.join(METER_SECRETS)})")
    imp.add_argument("value", nargs="?", help="the value (default or -: read from stdin)")
    imp.add_argument("--file", help="CSV of meter,name,value rows")
    imp.add_argument("--from-metadata", action="store_true",
                     help="move every meter secret found in clear in the meter list")
    lst = ksub.add_parser("list", help="secrets kept: ids, names, fingerprints (no values)")
    lst.add_argument("--meter")
    lst.add_argument("--format", choices=("json", "csv", "table"), default="table")
    rot = ksub.add_parser("rotate", help="re-wrap under a new master key, or ask for a "
                          "meter key rotation (key-transfer command, needs approval)")
    rot.add_argument("--master-key", metavar="SPEC",
                     help="the new master key: file:PATH (made if absent), env:NAME, "
                     "credential:NAME")
    rot.add_argument("--meter", help="rotate this DLMS meter's keys on the meter")
    rot.add_argument("--keys", default="ek,ak", help="which keys: ek, ak, kek (default ek,ak)")
    tok = ksub.add_parser("token", help="a new API token and its hashed token file line")
    tok.add_argument("name")
    tok.add_argument("role")
    keys.set_defaults(run=cmd_keys)


def meter_secret_names(metadata: Mapping[str, str]) -> list[str]:
    return sorted(k for k in metadata if is_meter_secret(k))
