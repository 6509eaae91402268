"""The store's settings: ``[store]`` (where records are committed) and ``[spool]`` (the
journal in front of it), declared with their options (fep.options)."""

from __future__ import annotations

import re

import attrs

from fep.errors import ConfigError
from fep.options import (
    Option,
    Section,
    choice,
    expects,
    optional,
    positive_float,
    positive_int,
    text,
)

_RETENTION = re.compile(r"^(?P<n>\d+)\s*(?P<unit>months?|years?)$")


@expects("N months or N years, or empty (keep everything)")
def retention(value: str) -> int | None:
    """``24 months`` / ``2 years`` as a number of months; empty: keep everything (None)."""
    value = value.strip().lower()
    if not value:
        return None
    m = _RETENTION.match(value)
    if m is None:
        raise ValueError("expected N months or N years")
    months = int(m["n"]) * (12 if m["unit"].startswith("year") else 1)
    if months < 1:
        raise ValueError("retention must keep at least one month")
    return months


_DAYS = re.compile(r"^(?P<n>\d+)\s*(?:days?)?$")


@expects("N days (at least 3), or empty (never compact)")
def compact_after(value: str) -> int | None:
    """``7 days`` as a number of days; empty: never (None)."""
    from fep.store.compaction import MIN_AGE_DAYS

    value = value.strip().lower()
    if not value:
        return None
    m = _DAYS.match(value)
    if m is None:
        raise ValueError("expected N days")
    days = int(m["n"])
    if days < MIN_AGE_DAYS:
        raise ValueError(f"intervals are compacted {MIN_AGE_DAYS} days after at the earliest")
    return days


@attrs.frozen
class StoreSection:
    url: str
    pool_size: int
    partitions_ahead: int = 3
    retention: int | None = None  # months kept, None: everything
    retention_action: str = "detach"
    compact_after: int | None = 7  # days; None: never


def _store(url: str, pool_size: int, partitions_ahead: int, retention: int | None,
           retention_action: str, compact_after: int | None = 7) -> StoreSection:
    if retention is not None and url.startswith("sqlite:"):
        raise ConfigError("retention works by PostgreSQL partitions; it is not supported on "
                          "SQLite (leave it empty)", key="retention")
    return StoreSection(url, pool_size, partitions_ahead, retention, retention_action,
                        compact_after)


@attrs.frozen
class SpoolSection:
    directory: str
    batch_size: int
    max_delay: float
    flush_timeout: float
    backlog_batch: int | None = None

    def write_batch(self, store_url: str) -> int:
        return write_batch(store_url, self.batch_size, self.backlog_batch)


SQLITE_BACKLOG_BATCH = 50_000


def write_batch(store_url: str, batch_size: int, backlog_batch: int | None = None) -> int:
    """Most records in one store transaction when batches wait for the store: the setting
    ``backlog_batch``, else 50,000 on SQLite (each commit writes every page it touched to
    the WAL, so larger commits write fewer bytes per record) and the spool's batch size on
    PostgreSQL; never less than ``batch_size``."""
    if backlog_batch is not None:
        return max(backlog_batch, batch_size)
    if store_url.startswith("sqlite:"):
        return max(SQLITE_BACKLOG_BATCH, batch_size)
    return batch_size


STORE = Section("store", {
    "url": Option(text, "sqlite:var/fep.sqlite",
                  "sqlite:PATH (embedded default) or postgresql://user@host:port/db"),
    "pool_size": Option(positive_int, 2, "PostgreSQL connections kept open (and as many for COPY)"),
    "partitions_ahead": Option(positive_int, 3,
                               "PostgreSQL: months of record partitions made ahead"),
    "retention": Option(retention, "",
                        "PostgreSQL: months of records kept (e.g. 24 months); empty: all"),
    "retention_action": Option(choice("detach", "drop"), "detach",
                               "PostgreSQL: what retention does to an old partition"),
    "compact_after": Option(compact_after, "7 days",
                            "PostgreSQL: days after which a closed day of intervals is kept "
                            "as one row (at least 3); empty: never"),
}, _store, required=True)

SPOOL = Section("spool", {
    "directory": Option(text, "", "journal directory; empty means DATA_DIR/spool"),
    "batch_size": Option(positive_int, 5000, "most records per store transaction"),
    "max_delay": Option(positive_float, 0.05, "seconds a record may wait to be batched"),
    "flush_timeout": Option(positive_float, 30.0,
                            "seconds shutdown waits for the store to commit the spool"),
    "backlog_batch": Option(optional(positive_int), "",
                            "most records per store transaction when batches wait for the "
                            "store; empty: 50000 on SQLite, batch_size on PostgreSQL"),
}, SpoolSection)
