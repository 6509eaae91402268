"""Schema migrations: the versioned SQL files of each dialect and their bookkeeping table.

Files live in ``fep/store/sql/<dialect>/NNNN_name.sql`` (package data) and are applied in
version order, each in its own transaction together with its row in
``schema_migrations(version, name, applied_at)``. The stores run them at ``open()`` and for
``fep db upgrade``; this module only finds them and says which are pending.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from importlib import resources

import attrs

from fep.errors import StoreError

DIALECTS = ("sqlite", "postgresql")

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<slug>[a-z0-9_]+)\.sql$")

CREATE_TABLE = {
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL)"
    ),
    "postgresql": (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY,"
        " name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    ),
}


@attrs.frozen
class Migration:
    """One schema step: ``0001_initial.sql`` is version 1 named ``0001_initial``."""

    version: int
    name: str
    sql: str


def load(dialect: str) -> list[Migration]:
    """Every migration of a dialect, in version order."""
    if dialect not in DIALECTS:
        raise StoreError(f"no migrations for dialect {dialect!r}")
    folder = resources.files("fep.store").joinpath("sql", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        m = _FILE_NAME.match(entry.name)
        if m is None:
            continue
        found.append(
            Migration(int(m["version"]), entry.name[:-4], entry.read_text(encoding="utf-8"))
        )
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise StoreError(f"two {dialect} migrations share a version: {versions}")
    return found


def pending(migrations: Collection[Migration], applied: Collection[int]) -> list[Migration]:
    """The migrations not yet applied, in order."""
    done = set(applied)
    return [m for m in sorted(migrations, key=lambda m: m.version) if m.version not in done]
