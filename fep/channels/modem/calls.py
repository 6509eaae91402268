"""Modem call records in the store (table ``modem_calls``, migration 0004): one row per dial
attempt, and statistics per line or per site summed from them. ``ModemCallLog`` keeps them
on an open SQLite or PostgreSQL store, through its ``interact`` (the store's thread or
pool); the SQL of both dialects is below."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from fep.channels.modem.stats import CallOutcome, CallStats, ModemCall
from fep.errors import StoreError
from fep.interfaces import IModemCallLog
from fep.store.rows import text_time, utc

COLUMNS = "line, number, site, started, seconds, connected_seconds, result, outcome, error"
GROUPS = {"line": "line", "site": "site"}


def _row(call: ModemCall, started: Any) -> tuple[Any, ...]:
    return (call.line, call.number, call.site, started, call.seconds, call.connected_seconds,
            call.result, call.outcome.value, call.error)


def _stats_sql(by: str, since: datetime | None, placeholder: str) -> str:
    if by not in GROUPS:
        raise StoreError(f"modem call statistics by {by!r}: line or site")
    where = f" WHERE started >= {placeholder}" if since is not None else ""
    key = GROUPS[by]
    return (f"SELECT {key}, outcome, count(*), sum(seconds), sum(connected_seconds)"
            f" FROM modem_calls{where} GROUP BY {key}, outcome ORDER BY {key}, outcome")


def _totals(rows: Sequence[Sequence[Any]]) -> list[CallStats]:
    totals: dict[str, CallStats] = {}
    for key, outcome, count, seconds, connected in rows:
        stats = totals.setdefault(key, CallStats(key))
        stats.attempts += int(count)
        if CallOutcome(outcome).connected:
            stats.connects += int(count)
        stats.seconds += float(seconds)
        stats.connected_seconds += float(connected)
        stats.outcomes[outcome] += int(count)
    return list(totals.values())


# -- SQLite (runs on the store thread)


def sqlite_add(conn: sqlite3.Connection, calls: Sequence[ModemCall]) -> int:
    rows = [_row(call, text_time(utc(call.started))) for call in calls]
    conn.execute("BEGIN")
    try:
        conn.executemany(
            f"INSERT INTO modem_calls ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(rows)


def sqlite_stats(
    conn: sqlite3.Connection, by: str, since: datetime | None
) -> list[CallStats]:
    args = () if since is None else (text_time(utc(since)),)
    return _totals(conn.execute(_stats_sql(by, since, "?"), args).fetchall())


# -- PostgreSQL (txpostgres interactions)


async def postgres_add(cursor: Any, calls: Sequence[ModemCall]) -> int:
    if not calls:
        return 0
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(calls))
    args = [value for call in calls for value in _row(call, utc(call.started))]
    await cursor.execute(f"INSERT INTO modem_calls ({COLUMNS}) VALUES {values}", args)
    return len(calls)


async def postgres_stats(cursor: Any, by: str, since: datetime | None) -> list[CallStats]:
    args = () if since is None else (utc(since),)
    await cursor.execute(_stats_sql(by, since, "%s"), args)
    return _totals(cursor.fetchall())


@implementer(IModemCallLog)
class ModemCallLog:
    """IModemCallLog on an open SqliteStore or PostgresStore (it shares their connection)."""

    def __init__(self, store: Any) -> None:
        from fep.store.postgres import PostgresStore

        self.store = store
        self.dialect = "postgresql" if isinstance(store, PostgresStore) else "sqlite"

    def _do(self, sqlite: Any, postgres: Any, *args: Any) -> Deferred[Any]:
        done: Deferred[Any] = self.store.interact(
            postgres if self.dialect == "postgresql" else sqlite, *args)
        return done

    def add_modem_calls(self, calls: Sequence[Any]) -> Deferred[int]:
        return self._do(sqlite_add, postgres_add, calls)

    def modem_call_stats(self, by: str, since: datetime | None = None) -> Deferred[list[Any]]:
        return self._do(sqlite_stats, postgres_stats, by, since)
