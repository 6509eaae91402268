"""Monthly partitions of the PostgreSQL record tables: made ahead, and the old ones detached or
dropped by the retention setting.

Since migration 0015, ``readings``, ``intervals`` and ``events`` are partitioned by range of
their time column, one partition per UTC month (``readings_p2027_01``) and a DEFAULT
partition (``readings_default``) for any row no monthly partition covers, so no row is ever
refused for its time. Since migration 0019 the rows live in ``reading_rows``,
``interval_rows`` and ``event_rows`` (compact, keyed by series numbers) behind views with the
old names; the partitions kept their names, and this module speaks of the record tables by
those names (``readings``) while it changes the tables that hold the rows.

fep makes each month's partition ahead (``ensure_partitions``: this
month and ``months_ahead`` more), each in a transaction of its own under an advisory lock,
so several nodes sharing one database make it once. PostgreSQL refuses a partition whose
range already has rows in DEFAULT: a partition is made as a plain table, the rows of its
month moved out of DEFAULT into it, and then attached, with DEFAULT locked meanwhile so no
row of that month slips in.

Retention (``apply_retention``) removes the partitions that lie wholly before the cutoff
(the first of this month less ``keep`` months): detached (kept as plain tables, to archive
or drop by hand) or dropped. Never DEFAULT, never a partition that reaches past the cutoff.
``PartitionKeeper`` does both at start and daily in the daemon.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from fep.errors import StoreError

log = Logger()

# (record table, the partitioned table that holds its rows, the time column it is
# partitioned by). Partitions and messages are named for the record table.
PARTITIONED = (("readings", "reading_rows", "read_at"),
               ("intervals", "interval_rows", "start_time"),
               ("events", "event_rows", "time"),
               # Compacted days of intervals (migration 0020, fep.store.compaction).
               ("interval_days", "interval_days", "day_start"))
ROWS_TABLE = {table: rows for table, rows, _ in PARTITIONED}


def rows_table(table: str) -> str:
    """The partitioned table holding ``table``'s rows (``readings`` -> ``reading_rows``)."""
    return ROWS_TABLE.get(table, table)

# Serialises partition changes of every fep node on one database (any number will do as
# long as every node uses the same one).
PARTITION_LOCK = 0x6665_7015

# How long a partition change waits for the locks it needs (queries or COPY under way on
# the table) before it gives up until its next run, rather than hold up ingest behind it.
LOCK_TIMEOUT = "10s"

ACTIONS = ("detach", "drop")

DAY = 86400.0
# After a failed run (the database down), the next try.
RETRY = 3600.0


def month_start(t: datetime) -> datetime:
    """The first instant of ``t``'s UTC month."""
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, 1, tzinfo=UTC)


def add_months(month: datetime, n: int) -> datetime:
    """``month`` (a month's first instant) moved by ``n`` months."""
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(table: str, month: datetime) -> str:
    return f"{table}_p{month.year:04d}_{month.month:02d}"


def retention_cutoff(now: datetime, keep_months: int) -> datetime:
    """Rows before this instant may go: the current month and the ``keep_months`` before it
    are kept whole."""
    if keep_months < 1:
        raise StoreError(f"retention must keep at least one month, not {keep_months}")
    return add_months(month_start(now), -keep_months)


@attrs.frozen
class Partition:
    """One partition of a record table; ``lower``/``upper`` are None for MINVALUE/MAXVALUE
    (and for DEFAULT, which has no range)."""

    table: str
    name: str
    lower: datetime | None
    upper: datetime | None
    default: bool = False


_RANGE = re.compile(r"^FOR VALUES FROM \((?P<lower>[^)]*)\) TO \((?P<upper>[^)]*)\)$")


def _bound(text: str) -> datetime | None:
    text = text.strip()
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    return datetime.fromisoformat(text.strip("'")).astimezone(UTC)


def parse_partition(table: str, name: str, bound: str) -> Partition:
    """A partition from its bound expression as ``pg_get_expr(relpartbound)`` gives it."""
    if bound.strip() == "DEFAULT":
        return Partition(table, name, None, None, default=True)
    m = _RANGE.match(bound.strip())
    if m is None:
        raise StoreError(f"partition {name} of {table}: unexpected bound {bound!r}")
    return Partition(table, name, _bound(m["lower"]), _bound(m["upper"]))


def expired(partitions: Sequence[Partition], cutoff: datetime) -> list[Partition]:
    """The partitions wholly before ``cutoff``, oldest first: never DEFAULT, never one whose
    range reaches past the cutoff (or is open-ended)."""
    old = [p for p in partitions
           if not p.default and p.upper is not None and p.upper <= cutoff]
    return sorted(old, key=lambda p: p.upper or cutoff)


# ---------------------------------------------------------------------------
# Interactions (each run with the store's ``interact``: one transaction)
# ---------------------------------------------------------------------------


async def partitions_of(cursor: Any, table: str) -> list[Partition]:
    """Every partition of ``table``, as the catalogue has them."""
    await cursor.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass ORDER BY c.relname",
        (rows_table(table),),
    )
    return [parse_partition(table, name, bound) for name, bound in cursor.fetchall()]


async def default_rows(cursor: Any, table: str) -> int:
    """How many rows of ``table`` wait in its DEFAULT partition (times no monthly partition
    covers: wrong clocks, months not made); retention never removes them."""
    await cursor.execute(
        "SELECT partdefid::regclass::text FROM pg_partitioned_table"
        " WHERE partrelid = %s::regclass AND partdefid <> 0",
        (rows_table(table),),
    )
    row = cursor.fetchone()
    if row is None:
        return 0
    await cursor.execute(f"SELECT count(*) FROM {row[0]}")
    (n,) = cursor.fetchone()
    return int(n)


async def _lock(cursor: Any) -> None:
    await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
    await cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")


async def create_partition(cursor: Any, table: str, column: str, month: datetime) -> int | None:
    """Make ``table``'s partition of ``month`` unless it is there (None); moves the rows of
    that month out of DEFAULT into it and returns how many."""
    await _lock(cursor)
    name = partition_name(table, month)
    rows = rows_table(table)
    await cursor.execute(
        "SELECT to_regclass(%(name)s) IS NOT NULL, EXISTS (SELECT 1 FROM pg_inherits"
        " WHERE inhrelid = to_regclass(%(name)s) AND inhparent = %(table)s::regclass)",
        {"name": name, "table": rows},
    )
    exists, attached = cursor.fetchone()
    if exists:
        # Made already (by another node, or earlier). A table of that name that is not a
        # partition (one detached by hand) is left alone: the month's rows stay in DEFAULT.
        if not attached:
            log.warn("partitions: {name} exists but is not a partition of {table}; rows of "
                     "that month stay in {table}'s DEFAULT partition", name=name, table=table)
        return None
    await cursor.execute(
        "SELECT partdefid::regclass::text FROM pg_partitioned_table"
        " WHERE partrelid = %s::regclass AND partdefid <> 0",
        (rows,),
    )
    row = cursor.fetchone()
    lower, upper = month, add_months(month, 1)
    within = f"{column} >= %(lower)s AND {column} < %(upper)s"
    bounds = {"lower": lower, "upper": upper}
    await cursor.execute(f"CREATE TABLE {name} (LIKE {rows} INCLUDING DEFAULTS)")
    # The range as a constraint lets ATTACH skip checking the rows one by one.
    await cursor.execute(f"ALTER TABLE {name} ADD CONSTRAINT {name}_range CHECK ({within})",
                         bounds)
    moved = 0
    if row is not None:
        (default,) = row
        # No row of this month may reach DEFAULT between the move and the ATTACH (which
        # locks DEFAULT the same way anyway).
        await cursor.execute(f"LOCK TABLE {default} IN ACCESS EXCLUSIVE MODE")
        await cursor.execute(
            f"WITH moved AS (DELETE FROM {default} WHERE {within} RETURNING *)"
            f" INSERT INTO {name} SELECT * FROM moved",
            bounds,
        )
        moved = max(0, int(cursor.rowcount))
    await cursor.execute(
        f"ALTER TABLE {rows} ATTACH PARTITION {name} FOR VALUES FROM (%(lower)s) TO (%(upper)s)",
        bounds,
    )
    await cursor.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_range")
    return moved


async def _remove(cursor: Any, partition: Partition, action: str) -> bool:
    """Detach or drop one partition, unless another node did already (False)."""
    await _lock(cursor)
    current = {p.name for p in await partitions_of(cursor, partition.table)}
    if partition.name not in current:
        return False
    if action == "drop":
        await cursor.execute(f"DROP TABLE {partition.name}")
    else:
        await cursor.execute(
            f"ALTER TABLE {rows_table(partition.table)} DETACH PARTITION {partition.name}")
    return True


@attrs.frozen
class Change:
    """What was done (or, in a dry run, would be) to one partition."""

    table: str
    partition: str
    action: str  # "created", "detached", "dropped" (dry run: "would detach", ...)
    rows_moved: int = 0
    lower: datetime | None = None
    upper: datetime | None = None

    def describe(self) -> str:
        span = ""
        if self.lower is not None and self.upper is not None:
            span = f" ({self.lower:%Y-%m-%d} .. {self.upper:%Y-%m-%d})"
        moved = f", {self.rows_moved} rows moved from DEFAULT" if self.rows_moved else ""
        return f"{self.table}: {self.action} {self.partition}{span}{moved}"


async def ensure_partitions(store: Any, now: datetime, months_ahead: int) -> list[Change]:
    """Make the partitions of this month and ``months_ahead`` months after it, for every
    record table, where missing; one transaction each."""
    changes: list[Change] = []
    first = month_start(now)
    for table, _, column in PARTITIONED:
        for n in range(months_ahead + 1):
            month = add_months(first, n)
            moved = await store.interact(create_partition, table, column, month)
            if moved is not None:
                changes.append(Change(table, partition_name(table, month), "created", moved,
                                      month, add_months(month, 1)))
    return changes


async def apply_retention(
    store: Any, cutoff: datetime, action: str, *, dry_run: bool = False
) -> dict[str, list[Change]]:
    """Detach or drop (``action``) every record table's partitions wholly before ``cutoff``;
    one transaction each. Returns each table's changes (an empty list: nothing to do)."""
    if action not in ACTIONS:
        raise StoreError(f"retention action must be one of {', '.join(ACTIONS)}, not {action!r}")
    done = "dropped" if action == "drop" else "detached"
    out: dict[str, list[Change]] = {}
    for table, _, _ in PARTITIONED:
        out[table] = []
        for p in expired(await store.interact(partitions_of, table), cutoff):
            if dry_run:
                out[table].append(Change(table, p.name, f"would {action}", 0, p.lower, p.upper))
            elif await store.interact(_remove, p, action):
                out[table].append(Change(table, p.name, done, 0, p.lower, p.upper))
    return out


# ---------------------------------------------------------------------------
# The daemon's part
# ---------------------------------------------------------------------------


class PartitionKeeper(Service):
    """Makes partitions ahead, applies retention (when set) and compacts closed days of
    intervals (when set: fep.store.compaction) at start and every day after;
    a failed run (database down, a lock not had in time) is tried again within the hour. The
    clock is ``reactor`` (a fake one in tests); the work goes through ``store.interact``."""

    def __init__(
        self,
        reactor: IReactorTime,
        store: Any,
        *,
        months_ahead: int,
        retention_months: int | None = None,
        retention_action: str = "detach",
        compact_after: int | None = None,
    ) -> None:
        self.reactor = reactor
        self.store = store
        self.months_ahead = months_ahead
        self.retention_months = retention_months
        self.retention_action = retention_action
        self.compact_after = compact_after
        self.runs = 0  # finished runs, failed or not (tests look at it)
        self.changes: list[Change] = []  # the last run's
        self.last_run: Deferred[None] | None = None  # fires when the latest run ends
        self._call: IDelayedCall | None = None
        self._running: Deferred[None] | None = None

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.reactor.seconds(), UTC)

    def startService(self) -> None:
        super().startService()
        self._schedule(0)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        # The store closes after this service: let a run under way end first.
        return self._running

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._call = self.reactor.callLater(delay, self.run)

    def run(self) -> Deferred[None]:
        """One run now; the next is scheduled when it ends."""
        self._call = None
        started = self.runs
        d = Deferred.fromCoroutine(self._run())
        if self.runs == started:  # still under way
            self._running = d
        self.last_run = d
        return d

    async def _run(self) -> None:
        delay = DAY
        try:
            self.changes = await self.maintain(self.now())
        except Exception as e:  # the store down, a lock timeout: try again later
            log.warn("partition maintenance failed ({error}); trying again in {delay} s",
                     error=str(e), delay=RETRY)
            delay = RETRY
        finally:
            self._running = None
            self.runs += 1
        self._schedule(delay)

    async def maintain(self, now: datetime) -> list[Change]:
        changes = await ensure_partitions(self.store, now, self.months_ahead)
        if self.retention_months is not None:
            cutoff = retention_cutoff(now, self.retention_months)
            removed = await apply_retention(self.store, cutoff, self.retention_action)
            for table_changes in removed.values():
                changes.extend(table_changes)
        for change in changes:
            log.info("partitions: {change}", change=change.describe())
        if self.compact_after is not None:
            from fep.store.compaction import compact_intervals

            # A first run over months of intervals takes long: stopping the daemon ends it
            # after its current block.
            compacted = await compact_intervals(self.store, now, self.compact_after,
                                                keep_going=lambda: bool(self.running))
            if compacted.days:
                log.info("intervals compacted: {result}", result=compacted.describe())
        return changes
