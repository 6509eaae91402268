"""The job store: the collection engine's tables (sql/*/0002_collect.sql) on the store's own
connection, SQLite or PostgreSQL.

Each operation is written once, as a generator that yields queries (``Q``) and receives
their results; a small driver per dialect runs it in one transaction: on the SQLite store's
thread (``BEGIN IMMEDIATE``: one writer, so a single node needs no more) or in a txpostgres
interaction. SQL is written with ``?`` placeholders and turned into ``%s`` for psycopg2.

Leasing on PostgreSQL, where several fep nodes share the tables, takes no global lock: the
leasing transaction picks candidates by priority and time (each line's capacity at most),
locks their rows ``FOR UPDATE SKIP LOCKED`` with a LIMIT (rows another node's leasing
transaction holds are passed over, and another round looks past them), takes a lock of each
line it leases on without waiting (``pg_try_advisory_xact_lock``: a line another node is
leasing on at that moment is passed over), and marks the jobs leased in an UPDATE that
checks each again, in a snapshot taken after those locks, against the leases committed
meanwhile: nodes lease at the same time on different lines, never two on one line. A node
renews the leases of jobs it holds; a node that dies stops renewing, its leases expire, and
the jobs are leased again by the others. A finish from a node whose lease was taken over is
refused.

Job starts and finishes are recorded in batches (``Bookkeeping``: one transaction per short
interval, a multi-row UPDATE per kind); the engine's job store answers them at once from its
leases (``write_behind``) and never waits for them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, TypeVar, cast

import attrs
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.collect.readnow import READ_NOW
from fep.collect.stats import RunStats, StatsRow, day_of, scope_keys
from fep.collect.tasks import (
    AuditEntry,
    Command,
    Job,
    JobStatus,
    Outcome,
    Target,
    Task,
    dumps,
    loads,
)
from fep.errors import StoreError
from fep.interfaces import IJobStore

T = TypeVar("T")
log = Logger()

# The class of the per-line advisory locks leasing takes on PostgreSQL (the line's hash is
# the other half of the key); any number that fits 32 bits, the same on every node.
LEASE_LOCK = 0x6665_7002
_PG_INSERT_CHUNK = 200


@attrs.frozen
class Q:
    """One statement: ``fetch`` returns its rows, else its row count; ``many`` runs it once
    per parameter row (an INSERT ... VALUES (?, ...))."""

    sql: str
    params: Sequence[Any] = ()
    fetch: bool = False
    many: Sequence[Sequence[Any]] | None = None


Op = Generator[Q, Any, T]

JOB_COLUMNS = (
    "id, task, meter, kind, route, resource, items, params, command, pinned, priority, due,"
    " run_at, deadline, max_attempts, retry_delay, backoff, status, attempts, node,"
    " lease_until, started_at, finished_at, result, error, bytes_in, bytes_out, records,"
    " first_ok"
)
TASK_COLUMNS = (
    "name, kind, schedule, target, items, priority, retries, retry_delay, backoff, deadline,"
    " starts_at, ends_at, options, enabled, next_due"
)
COMMAND_COLUMNS = (
    "id, meter, action, params, requested_by, requested_at, status, approval_required,"
    " approved_by, approved_at, job, outcome, progress, finished_at"
)


def job_of(row: Sequence[Any]) -> Job:
    return Job(
        id=int(row[0]),
        task=row[1],
        meter=row[2],
        kind=row[3],
        route=row[4],
        resource=row[5],
        items=row[6] or (),
        params=loads(row[7]),
        command=None if row[8] is None else int(row[8]),
        pinned=row[9],
        priority=int(row[10]),
        due=float(row[11]),
        run_at=float(row[12]),
        deadline=None if row[13] is None else float(row[13]),
        max_attempts=int(row[14]),
        retry_delay=float(row[15]),
        backoff=float(row[16]),
        status=row[17],
        attempts=int(row[18]),
        node=row[19],
        lease_until=None if row[20] is None else float(row[20]),
        started_at=None if row[21] is None else float(row[21]),
        finished_at=None if row[22] is None else float(row[22]),
        result=row[23],
        error=row[24],
        bytes_in=int(row[25]),
        bytes_out=int(row[26]),
        records=int(row[27]),
        first_ok=None if row[28] is None else bool(row[28]),
    )


def task_of(row: Sequence[Any]) -> Task:
    return Task(
        name=row[0],
        kind=row[1],
        schedule=row[2],
        target=Target.parse(row[3]),
        items=row[4] or (),
        priority=int(row[5]),
        retries=int(row[6]),
        retry_delay=float(row[7]),
        backoff=float(row[8]),
        deadline=None if row[9] is None else float(row[9]),
        starts_at=None if row[10] is None else float(row[10]),
        ends_at=None if row[11] is None else float(row[11]),
        options=loads(row[12]),
        enabled=bool(row[13]),
        next_due=None if row[14] is None else float(row[14]),
    )


def command_of(row: Sequence[Any]) -> Command:
    return Command(
        id=int(row[0]),
        meter=row[1],
        action=row[2],
        params=loads(row[3]),
        requested_by=row[4],
        requested_at=float(row[5]),
        status=row[6],
        approval_required=bool(row[7]),
        approved_by=row[8],
        approved_at=None if row[9] is None else float(row[9]),
        job=None if row[10] is None else int(row[10]),
        outcome=row[11],
        progress=loads(row[12]),
        finished_at=None if row[13] is None else float(row[13]),
    )


def _marks(n: int) -> str:
    return ", ".join("?" * n)


# ---------------------------------------------------------------------------
# Operations (dialect-neutral generators)
# ---------------------------------------------------------------------------


def _save_task(dialect: str, task: Task, now: float) -> Op[None]:
    yield Q(
        f"INSERT INTO tasks ({TASK_COLUMNS}, updated_at) VALUES ({_marks(16)})"
        " ON CONFLICT (name) DO UPDATE SET kind = excluded.kind,"
        " schedule = excluded.schedule, target = excluded.target, items = excluded.items,"
        " priority = excluded.priority, retries = excluded.retries,"
        " retry_delay = excluded.retry_delay, backoff = excluded.backoff,"
        " deadline = excluded.deadline, starts_at = excluded.starts_at,"
        " ends_at = excluded.ends_at, options = excluded.options,"
        " enabled = excluded.enabled, next_due = excluded.next_due,"
        " updated_at = excluded.updated_at",
        (
            task.name,
            str(task.kind),
            task.schedule,
            str(task.target),
            ",".join(task.items),
            int(task.priority),
            task.retries,
            task.retry_delay,
            task.backoff,
            task.deadline,
            task.starts_at,
            task.ends_at,
            dumps(task.options),
            1 if task.enabled else 0,
            task.next_due,
            now,
        ),
    )


def _tasks(dialect: str, name: str | None) -> Op[list[Task]]:
    if name is None:
        rows = yield Q(f"SELECT {TASK_COLUMNS} FROM tasks ORDER BY name", fetch=True)
    else:
        rows = yield Q(f"SELECT {TASK_COLUMNS} FROM tasks WHERE name = ?", (name,), fetch=True)
    return [task_of(r) for r in rows]


def _set_enabled(dialect: str, name: str, enabled: bool, now: float) -> Op[bool]:
    n = yield Q(
        "UPDATE tasks SET enabled = ?, updated_at = ? WHERE name = ?",
        (1 if enabled else 0, now, name),
    )
    return bool(n)


def _delete_task(dialect: str, name: str) -> Op[bool]:
    n = yield Q("DELETE FROM tasks WHERE name = ?", (name,))
    return bool(n)


def _claim_run(dialect: str, name: str, due: float, next_due: float | None, now: float) -> Op[
    bool
]:
    n = yield Q(
        "UPDATE tasks SET next_due = ?, updated_at = ? WHERE name = ? AND next_due = ?",
        (next_due, now, name, due),
    )
    return bool(n)


def _stats_rows(jobs: Sequence[Job], now: float) -> list[tuple[Any, ...]]:
    """collect_stats increments for jobs that just ended, summed per (day, scope, key)."""
    sums: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0] * 6)
    day = day_of(now)
    for job in jobs:
        for scope, key in scope_keys(job.task, str(job.kind), job.route, job.resource, job.meter):
            s = sums[(day, scope, key)]
            s[0] += 1
            s[1] += 1 if job.first_ok else 0
            s[2] += 1 if job.status == JobStatus.DONE else 0
            s[3] += 1 if job.status == JobStatus.FAILED else 0
            s[4] += 1 if job.status == JobStatus.MISSED else 0
            s[5] += job.attempts
    return [(*k, *v) for k, v in sorted(sums.items())]


def _count_ended(jobs: Sequence[Job], now: float) -> Op[None]:
    yield from _count_rows(_stats_rows(jobs, now))


def _count_rows(rows: Sequence[tuple[Any, ...]]) -> Op[None]:
    if rows:
        yield Q(
            "INSERT INTO collect_stats (day, scope, key, jobs, first_ok, ok, failed, missed,"
            " attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (day, scope, key) DO UPDATE SET"
            " jobs = collect_stats.jobs + excluded.jobs,"
            " first_ok = collect_stats.first_ok + excluded.first_ok,"
            " ok = collect_stats.ok + excluded.ok,"
            " failed = collect_stats.failed + excluded.failed,"
            " missed = collect_stats.missed + excluded.missed,"
            " attempts = collect_stats.attempts + excluded.attempts",
            many=rows,
        )


def _job_row(job: Job) -> tuple[Any, ...]:
    return (
        job.task,
        job.meter,
        str(job.kind),
        job.route,
        job.resource,
        ",".join(job.items),
        dumps(job.params),
        job.command,
        job.pinned,
        int(job.priority),
        job.due,
        job.run_at,
        job.deadline,
        job.max_attempts,
        job.retry_delay,
        job.backoff,
    )


_INSERT_JOB = (
    "INSERT INTO jobs (task, meter, kind, route, resource, items, params, command, pinned,"
    " priority, due, run_at, deadline, max_attempts, retry_delay, backoff)"
    f" VALUES ({_marks(16)}) ON CONFLICT DO NOTHING"
)


_INSERT_ENDED = (
    "INSERT INTO jobs (task, meter, kind, route, resource, items, params, command, pinned,"
    " priority, due, run_at, deadline, max_attempts, retry_delay, backoff, status, error,"
    " finished_at, result, records, attempts, first_ok, started_at)"
    f" VALUES ({_marks(24)}) ON CONFLICT DO NOTHING"
)


def _add_jobs(dialect: str, jobs: Sequence[Job], now: float) -> Op[int]:
    if not jobs:
        return 0
    # A newer run of a task replaces the same meter's older runs still waiting to start.
    superseded: list[Job] = []
    by_run: dict[tuple[str, float], list[str]] = defaultdict(list)
    for job in jobs:
        if job.task is not None:
            by_run[(job.task, job.due)].append(job.meter)
    for (task, due), meters in by_run.items():
        for i in range(0, len(meters), 500):
            chunk = meters[i : i + 500]
            rows = yield Q(
                f"UPDATE jobs SET status = 'missed', finished_at = ?, error = ?,"
                f" node = NULL, lease_until = NULL"
                f" WHERE task = ? AND due < ? AND status IN ('pending', 'leased')"
                f" AND meter IN ({_marks(len(chunk))}) RETURNING {JOB_COLUMNS}",
                (now, f"superseded by the run due at {due:.3f}", task, due, *chunk),
                fetch=True,
            )
            superseded += [job_of(r) for r in rows]
    yield from _count_ended(superseded, now)
    waiting = [j for j in jobs if not j.status.final]
    new = 0
    if waiting:
        new = yield Q(_INSERT_JOB, many=[_job_row(j) for j in waiting])
    # Jobs born ended (a meter whose concentrator failed, a meter record in error, the
    # meters a concentrator read by point, with their outcome): one by one, so that only
    # those really inserted are counted.
    ended: list[Job] = []
    for job in jobs:
        if job.status.final:
            first_ok = None if job.first_ok is None else int(job.first_ok)
            rows = yield Q(
                _INSERT_ENDED + f" RETURNING {JOB_COLUMNS}",
                (*_job_row(job), str(job.status), job.error, job.finished_at, job.result,
                 job.records, job.attempts, first_ok, job.started_at),
                fetch=True,
            )
            ended += [job_of(r) for r in rows]
    yield from _count_ended(ended, now)
    return int(new) + len(ended)


def _runnable(alias: str) -> str:
    a = alias
    return (
        f"(({a}.status = 'pending' AND {a}.run_at <= ?)"
        f" OR ({a}.status IN ('leased', 'running') AND {a}.lease_until < ?))"
        f" AND ({a}.deadline IS NULL OR {a}.deadline >= ?)"
        f" AND ({a}.pinned IS NULL OR {a}.pinned = ?)"
        f" AND NOT EXISTS (SELECT 1 FROM session_homes h"
        f"  WHERE h.resource = {a}.resource AND h.node <> ?)"
        f" AND NOT EXISTS (SELECT 1 FROM jobs b WHERE b.resource = {a}.resource"
        f"  AND b.status IN ('leased', 'running') AND b.lease_until >= ? AND b.node <> ?)"
    )


# Candidate rounds of one lease on PostgreSQL (a round whose candidates other nodes' leasing
# transactions hold at that moment is followed by one past them), and how many candidates
# a round looks at per job it still wants.
_LEASE_ROUNDS = 4
_LEASE_OVERFETCH = 3


def _lease(
    dialect: str,
    node: str,
    now: float,
    until: float,
    limit: int,
    in_use: Mapping[str, int],
    capacities: Mapping[str, int],
) -> Op[list[Job]]:
    """Lease up to ``limit`` jobs (see IJobStore.lease). On PostgreSQL each round takes its
    candidates' rows ``FOR UPDATE SKIP LOCKED`` with a LIMIT (rows another node's leasing
    transaction holds are passed over, the next round looks past them), then a lock of
    each line it leases on, without waiting (a line another node is leasing on at this
    moment is passed over). The closing UPDATE checks every row again, in a snapshot taken
    after all those locks, against the leases committed meanwhile: two nodes never hold
    leases on one line."""
    if limit <= 0:
        return []
    room = {r: capacities.get(r, 1) - n for r, n in in_use.items()}
    cap = max([1, *capacities.values()])
    runnable_params = (now, now, now, node, node, now, node)
    pg = dialect == "postgresql"
    chosen: list[int] = []
    taken: dict[str, int] = defaultdict(int)
    # Rows and lines other nodes' leasing transactions hold (PostgreSQL), passed over.
    held_rows: set[int] = set()
    held_lines: set[str] = set()
    locked_lines: set[str] = set()

    def left(resource: str) -> int:
        return room.get(resource, capacities.get(resource, 1)) - taken[resource]

    for _ in range(_LEASE_ROUNDS if pg else 1):
        want = limit - len(chosen)
        if want <= 0:
            break
        no_lines = sorted({r for r in (*room, *taken) if left(r) <= 0} | held_lines)
        no_ids = sorted({*chosen, *held_rows})
        exclude = f" AND j.resource NOT IN ({_marks(len(no_lines))})" if no_lines else ""
        if no_ids:
            exclude += f" AND j.id NOT IN ({_marks(len(no_ids))})"
        rows = yield Q(
            "SELECT id, resource FROM (SELECT j.id, j.resource, j.priority, j.run_at,"
            " ROW_NUMBER() OVER (PARTITION BY j.resource ORDER BY j.priority, j.run_at, j.id)"
            f" AS rn FROM jobs j WHERE {_runnable('j')}{exclude}) c"
            " WHERE rn <= ? ORDER BY priority, run_at, id LIMIT ?",
            (*runnable_params, *no_lines, *no_ids, cap, want * _LEASE_OVERFETCH if pg else want),
            fetch=True,
        )
        picks: dict[int, str] = {}
        picked: dict[str, int] = defaultdict(int)
        for job_id, resource in rows:
            if left(resource) - picked[resource] > 0:
                picked[resource] += 1
                picks[int(job_id)] = resource
        if not picks:
            break
        collided = False
        if pg:
            locked = yield Q(
                f"SELECT j.id FROM jobs j WHERE j.id IN ({_marks(len(picks))})"
                f" AND {_runnable('j')} ORDER BY j.priority, j.run_at, j.id LIMIT ?"
                " FOR UPDATE SKIP LOCKED",
                (*picks, *runnable_params, want),
                fetch=True,
            )
            got = [int(r[0]) for r in locked]
            if len(got) < want:
                held_rows |= set(picks) - set(got)
                collided = len(got) < len(picks)
            lines = sorted({picks[i] for i in got} - locked_lines)
            busy: list[Any] = []
            if lines:
                busy = yield Q(
                    "SELECT r FROM unnest(CAST(? AS text[])) AS r"
                    " WHERE NOT pg_try_advisory_xact_lock(?, hashtext(r))",
                    (lines, LEASE_LOCK),
                    fetch=True,
                )
            if busy:
                held_lines |= {r[0] for r in busy}
                collided = True
            locked_lines |= set(lines) - held_lines
            picks = {i: picks[i] for i in got if picks[i] not in held_lines}
        else:
            picks = dict(list(picks.items())[:want])
        for job_id, resource in picks.items():
            taken[resource] += 1
            chosen.append(job_id)
        if not collided:
            break
    if not chosen:
        return []
    leased = yield Q(
        f"UPDATE jobs SET status = 'leased', node = ?, lease_until = ?"
        f" WHERE id IN ({_marks(len(chosen))}) AND {_runnable('jobs')}"
        f" RETURNING {JOB_COLUMNS}",
        (node, until, *chosen, *runnable_params),
        fetch=True,
    )
    jobs = [job_of(r) for r in leased]
    jobs.sort(key=lambda j: (j.priority, j.run_at, j.id))
    return jobs


def _renew(dialect: str, node: str, ids: Sequence[int], until: float) -> Op[int]:
    if not ids:
        return 0
    n = yield Q(
        f"UPDATE jobs SET lease_until = ? WHERE node = ? AND status IN ('leased', 'running')"
        f" AND id IN ({_marks(len(ids))})",
        (until, node, *ids),
    )
    return int(n)


# -- bookkeeping: job starts and finishes, many to a transaction --------------------------

START = "start"
FINISH = "finish"
# Rows per multi-row UPDATE statement.
_BOOK_CHUNK = 200
# Cast names per dialect, for the first row of a VALUES list (the other rows follow it).
_CASTS = {
    "sqlite": {"int": "INTEGER", "text": "TEXT", "real": "REAL"},
    "postgresql": {"int": "bigint", "text": "text", "real": "double precision"},
}
_START_TYPES = ("int", "text", "real", "real")
_FINISH_TYPES = ("int", "text", "text", "real", "text", "text", "int", "int", "int", "int",
                 "real", "text")


class Change:
    """One job state change waiting for its batch: a start (params: job id, node, now,
    lease until) or a finish (job id, node, status, finished_at, result, error, bytes in,
    bytes out, records, first_ok, run_at, node kept). ``now`` is the caller's time (the
    statistics day of a final finish); ``done`` fires with the committed answer."""

    __slots__ = ("done", "final", "job_id", "kind", "now", "params", "retry", "seq", "tries")

    def __init__(self, kind: str, job_id: int, params: tuple[Any, ...], now: float,
                 final: bool = False) -> None:
        self.kind = kind
        self.job_id = job_id
        self.params = params
        self.now = now
        self.final = final
        self.done: Deferred[Any] = Deferred()
        # The caller was answered already (write-behind): tried again until it commits.
        self.retry = False
        self.seq = 0
        # Batches it was in: after a failed one its refusal may be its own earlier commit
        # whose answer was lost.
        self.tries = 0


def start_change(job_id: int, node: str, now: float, until: float) -> Change:
    return Change(START, job_id, (job_id, node, now, until), now)


def finish_change(job: Job, node: str, status: str, outcome: Outcome, now: float,
                  run_at: float | None) -> Change:
    first_ok = (1 if outcome.ok else 0) if job.attempts <= 1 else None
    final = JobStatus(status).final
    return Change(FINISH, job.id, (
        job.id,
        node,
        status,
        now if final else None,
        outcome.result or None,
        outcome.error,
        outcome.bytes_in,
        outcome.bytes_out,
        outcome.records,
        first_ok,
        run_at,
        node if final else None,
    ), now, final)


def _groups(changes: Sequence[Change]) -> list[tuple[str, list[Change]]]:
    """Changes in statements: each change joins the earliest group of its kind that comes
    after every group holding a change of the same job (a job's changes keep their order;
    a job appears at most once per group); otherwise it opens a new group."""
    groups: list[tuple[str, list[Change]]] = []
    last: dict[int, int] = {}
    for change in changes:
        after = last.get(change.job_id, -1)
        for i in range(after + 1, len(groups)):
            if groups[i][0] == change.kind:
                break
        else:
            groups.append((change.kind, []))
            i = len(groups) - 1
        groups[i][1].append(change)
        last[change.job_id] = i
    return groups


def _values(dialect: str, types: Sequence[str], rows: int) -> str:
    casts = _CASTS[dialect]
    first = "(" + ", ".join(f"CAST(? AS {casts[t]})" for t in types) + ")"
    return ", ".join([first] + ["(" + _marks(len(types)) + ")"] * (rows - 1))


def _start_sql(dialect: str, rows: int) -> str:
    return (
        "UPDATE jobs SET status = 'running', attempts = attempts + 1,"
        " started_at = v.column3, lease_until = v.column4"
        f" FROM (VALUES {_values(dialect, _START_TYPES, rows)}) AS v"
        " WHERE jobs.id = v.column1 AND jobs.node = v.column2 AND jobs.status = 'leased'"
        f" RETURNING {JOB_COLUMNS}"
    )


def _finish_sql(dialect: str, rows: int) -> str:
    return (
        "UPDATE jobs SET status = v.column3, finished_at = v.column4, result = v.column5,"
        " error = v.column6, bytes_in = bytes_in + v.column7,"
        " bytes_out = bytes_out + v.column8, records = records + v.column9,"
        " first_ok = COALESCE(first_ok, v.column10), run_at = COALESCE(v.column11, run_at),"
        " node = v.column12, lease_until = NULL"
        f" FROM (VALUES {_values(dialect, _FINISH_TYPES, rows)}) AS v"
        " WHERE jobs.id = v.column1 AND jobs.node = v.column2 AND jobs.status = 'running'"
        f" RETURNING {JOB_COLUMNS}"
    )


def _bookkeep(dialect: str, changes: Sequence[Change]) -> Op[list[Any]]:
    """Apply starts and finishes in one transaction, each job's in the order given: a
    multi-row UPDATE per group of the same kind. Fires with each change's answer: a start's
    Job (None: not leased to that node any more), a finish's True (False: refused, the
    job is not running on that node). Jobs that ended are counted in the statistics by the
    day of their finish. Replaying a batch that did commit changes nothing: a start needs
    the job leased, a finish needs it running."""
    answers: dict[int, Any] = {}
    ended: list[tuple[Job, float]] = []
    for kind, members in _groups(changes):
        for i in range(0, len(members), _BOOK_CHUNK):
            chunk = members[i : i + _BOOK_CHUNK]
            make = _start_sql if kind == START else _finish_sql
            rows = yield Q(make(dialect, len(chunk)), [p for c in chunk for p in c.params],
                           fetch=True)
            updated = {j.id: j for j in (job_of(r) for r in rows)}
            for change in chunk:
                job = updated.get(change.job_id)
                if kind == START:
                    answers[id(change)] = job
                else:
                    answers[id(change)] = job is not None
                    if job is not None and change.final:
                        ended.append((job, change.now))
    rows_by_day: list[tuple[Any, ...]] = []
    days: dict[str, list[tuple[Job, float]]] = defaultdict(list)
    for job, now in ended:
        days[day_of(now)].append((job, now))
    for pairs in days.values():
        rows_by_day += _stats_rows([j for j, _ in pairs], pairs[0][1])
    if rows_by_day:
        yield from _count_rows(sorted(rows_by_day))
    return [answers[id(c)] for c in changes]


def _release(dialect: str, node: str, ids: Sequence[int]) -> Op[int]:
    if not ids:
        return 0
    n = yield Q(
        "UPDATE jobs SET status = 'pending', node = NULL, lease_until = NULL"
        f" WHERE node = ? AND status = 'leased' AND id IN ({_marks(len(ids))})",
        (node, *ids),
    )
    return int(n)


def _expire(dialect: str, now: float) -> Op[list[Job]]:
    rows = yield Q(
        "UPDATE jobs SET status = 'missed', finished_at = ?, node = NULL, lease_until = NULL,"
        " error = COALESCE(error, 'deadline passed before it could run')"
        " WHERE deadline < ? AND (status = 'pending'"
        "  OR (status IN ('leased', 'running') AND lease_until < ?))"
        f" RETURNING {JOB_COLUMNS}",
        (now, now, now),
        fetch=True,
    )
    jobs = [job_of(r) for r in rows]
    yield from _count_ended(jobs, now)
    return jobs


def _jobs(
    dialect: str,
    meter: str | None,
    task: str | None,
    status: str | None,
    limit: int | None,
    job_id: int | None = None,
) -> Op[list[Job]]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("meter", meter), ("task", task), ("status", status), ("id", job_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    sql = f"SELECT {JOB_COLUMNS} FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY due DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    rows = yield Q(sql, params, fetch=True)
    return [job_of(r) for r in rows]


def _set_home(dialect: str, resource: str, node: str | None, now: float) -> Op[None]:
    if node is None:
        yield Q("DELETE FROM session_homes WHERE resource = ?", (resource,))
    else:
        yield Q(
            "INSERT INTO session_homes (resource, node, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (resource) DO UPDATE SET node = excluded.node,"
            " updated_at = excluded.updated_at",
            (resource, node, now),
        )


def _home(dialect: str, resource: str) -> Op[str | None]:
    rows = yield Q("SELECT node FROM session_homes WHERE resource = ?", (resource,), fetch=True)
    return str(rows[0][0]) if rows else None


def _stats(dialect: str, since_day: str, scope: str | None) -> Op[list[StatsRow]]:
    sql = (
        "SELECT day, scope, key, jobs, first_ok, ok, failed, missed, attempts"
        " FROM collect_stats WHERE day >= ?"
    )
    params: list[Any] = [since_day]
    if scope is not None:
        sql += " AND scope = ?"
        params.append(scope)
    rows = yield Q(sql + " ORDER BY day, scope, key", params, fetch=True)
    return [StatsRow(r[0], r[1], r[2], *(int(v) for v in r[3:])) for r in rows]


def _run_stats(dialect: str, task: str | None, limit: int) -> Op[list[RunStats]]:
    where = "WHERE task IS NOT NULL" + (" AND task = ?" if task else "")
    rows = yield Q(
        "SELECT task, due,"
        " SUM(CASE WHEN status IN ('done', 'failed', 'missed') THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN first_ok = 1 THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN status = 'done' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN status = 'missed' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN status IN ('pending', 'leased', 'running') THEN 1 ELSE 0 END)"
        f" FROM jobs {where} GROUP BY task, due ORDER BY due DESC, task LIMIT ?",
        ([task] if task else []) + [limit],
        fetch=True,
    )
    return [RunStats(r[0], float(r[1]), *(int(v or 0) for v in r[2:])) for r in rows]


def _open_jobs(dialect: str, task: str, since: float, until: float) -> Op[int]:
    rows = yield Q(
        "SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'leased', 'running')"
        " AND task = ? AND due >= ? AND due < ?",
        (task, since, until),
        fetch=True,
    )
    return int(rows[0][0] or 0)


def _insert_job(job: Job) -> Op[int]:
    rows = yield Q(
        _INSERT_JOB.replace(" ON CONFLICT DO NOTHING", "") + " RETURNING id",
        _job_row(job),
        fetch=True,
    )
    return int(rows[0][0])


def _add_job(dialect: str, job: Job) -> Op[int]:
    job_id = yield from _insert_job(job)
    return job_id


def _audit_line(command_id: int, now: float, who: str, action: str, detail: str) -> Q:
    return Q(
        "INSERT INTO command_audit (command, at, who, action, detail) VALUES (?, ?, ?, ?, ?)",
        (command_id, now, who, action, detail),
    )


def _add_command(dialect: str, command: Command, job: Job | None) -> Op[Command]:
    rows = yield Q(
        "INSERT INTO commands (meter, action, params, requested_by, requested_at, status,"
        f" approval_required) VALUES ({_marks(7)}) RETURNING id",
        (
            command.meter,
            command.action,
            dumps(command.params),
            command.requested_by,
            command.requested_at,
            str(command.status),
            1 if command.approval_required else 0,
        ),
        fetch=True,
    )
    command_id = int(rows[0][0])
    detail = f"{command.action} {dumps(command.params)}"
    yield _audit_line(command_id, command.requested_at, command.requested_by, "requested", detail)
    if job is not None:
        job_id = yield from _insert_job(attrs.evolve(job, command=command_id))
        yield Q("UPDATE commands SET job = ? WHERE id = ?", (job_id, command_id))
        yield _audit_line(
            command_id, command.requested_at, command.requested_by, "queued",
            f"job {job_id} (no approval needed)",
        )
    found = yield from _commands(dialect, None, None, 1, command_id)
    return found[0]


def _commands(
    dialect: str, meter: str | None, status: str | None, limit: int, command_id: int | None = None
) -> Op[list[Command]]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("meter", meter), ("status", status), ("id", command_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    sql = f"SELECT {COMMAND_COLUMNS} FROM commands"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = yield Q(sql + " ORDER BY id DESC LIMIT ?", [*params, limit], fetch=True)
    return [command_of(r) for r in rows]


_COMMAND_FIELDS = ("approved_by", "approved_at", "outcome", "progress", "finished_at",
                   "approval_required")


def _transition(
    dialect: str,
    command_id: int,
    expected: Sequence[str],
    status: str,
    who: str,
    action: str,
    detail: str,
    now: float,
    job: Job | None,
    fields: Mapping[str, Any] | None,
    of_job: int | None = None,
) -> Op[Command | None]:
    sets = ["status = ?"]
    params: list[Any] = [status]
    for key, value in (fields or {}).items():
        if key not in _COMMAND_FIELDS:
            raise StoreError(f"commands has no settable field {key!r}")
        sets.append(f"{key} = ?")
        params.append(dumps(value) if key == "progress" else value)
    carried = "" if of_job is None else " AND (job IS NULL OR job = ?)"
    n = yield Q(
        f"UPDATE commands SET {', '.join(sets)} WHERE id = ?"
        f" AND status IN ({_marks(len(expected))}){carried}",
        (*params, command_id, *expected, *(() if of_job is None else (of_job,))),
    )
    if not n:
        return None
    yield _audit_line(command_id, now, who, action, detail)
    if job is not None:
        job_id = yield from _insert_job(attrs.evolve(job, command=command_id))
        yield Q("UPDATE commands SET job = ? WHERE id = ?", (job_id, command_id))
    found = yield from _commands(dialect, None, None, 1, command_id)
    return found[0]


def _command_progress(dialect: str, command_id: int, progress: Mapping[str, Any]) -> Op[None]:
    yield Q("UPDATE commands SET progress = ? WHERE id = ?", (dumps(progress), command_id))


def _audit(dialect: str, command_id: int) -> Op[list[AuditEntry]]:
    rows = yield Q(
        "SELECT command, at, who, action, detail FROM command_audit WHERE command = ?"
        " ORDER BY id",
        (command_id,),
        fetch=True,
    )
    return [AuditEntry(int(r[0]), float(r[1]), r[2], r[3], r[4]) for r in rows]


# ---------------------------------------------------------------------------
# Drivers
# ---------------------------------------------------------------------------


def _run_sqlite(conn: Any, op: Op[T]) -> T:
    """Run an operation in one SQLite transaction (on the store thread)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result: Any = None
        while True:
            try:
                q = op.send(result)
            except StopIteration as stop:
                value: T = stop.value
                break
            if q.many is not None:
                cursor = conn.executemany(q.sql, q.many) if q.many else None
                result = cursor.rowcount if cursor is not None else 0
            else:
                cursor = conn.execute(q.sql, tuple(q.params))
                result = cursor.fetchall() if q.fetch else cursor.rowcount
        conn.execute("COMMIT")
        return value
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


_VALUES = re.compile(r"VALUES\s*\((\?(?:,\s*\?)*)\)")


def _pg_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


async def _run_postgres(cursor: Any, op: Op[T]) -> T:
    """Run an operation inside the txpostgres transaction the store opened."""
    result: Any = None
    while True:
        try:
            q = op.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value
        if q.many is not None:
            result = 0
            m = _VALUES.search(q.sql)
            assert m is not None, "a many-row statement needs VALUES (?, ...)"
            group = "(" + m[1] + ")"
            rows = list(q.many)
            for i in range(0, len(rows), _PG_INSERT_CHUNK):
                chunk = rows[i : i + _PG_INSERT_CHUNK]
                sql = q.sql[: m.start(1) - 1] + ", ".join([group] * len(chunk)) + q.sql[
                    m.end(1) + 1 :
                ]
                await cursor.execute(_pg_sql(sql), [v for row in chunk for v in row])
                result += cursor.rowcount
        else:
            await cursor.execute(_pg_sql(q.sql), tuple(q.params))
            result = cursor.fetchall() if q.fetch else cursor.rowcount


class Bookkeeping:
    """Group commit of job starts and finishes: changes queue here and go to the database
    together, one transaction per batch (``_bookkeep``), one batch at a time so a job's
    changes keep their order. A batch leaves ``interval`` seconds after the first change
    of it was queued (at once when 0, or when ``max_batch`` changes wait); changes queued
    while a batch commits go in the next one.

    A batch whose transaction fails: a change whose caller is waiting for the answer fails
    with the error (as a transaction of its own would have); a change whose caller was
    answered already (``retry``) goes back to the head of the queue and is tried again
    after a growing delay (up to ``max_retry`` seconds). Nothing is lost and nothing is
    applied twice: nothing of a failed transaction stays, a start needs the job leased
    and a finish needs it running."""

    def __init__(
        self,
        run: Callable[[Sequence[Change]], Deferred[list[Any]]],
        reactor: IReactorTime | None,
        interval: float = 0.0,
        *,
        max_batch: int = 1000,
        max_retry: float = 30.0,
    ) -> None:
        self.run = run
        self.reactor = reactor
        self.interval = interval
        self.max_batch = max_batch
        self.max_retry = max_retry
        self.queue: list[Change] = []
        self.in_flight: list[Change] | None = None
        self.failures = 0
        self.batches = 0
        self.dropped = 0
        self._timer: IDelayedCall | None = None
        self._giving_up = False
        # Every change gets the next number; flush() waits for the numbers below its own.
        self._added = 0
        self._waiters: list[tuple[int, Deferred[None]]] = []

    def _clock(self) -> IReactorTime:
        if self.reactor is None:
            from twisted.internet import reactor

            self.reactor = cast(IReactorTime, reactor)
        return self.reactor

    def add(self, change: Change) -> Deferred[Any]:
        change.seq = self._added
        self._added += 1
        self.queue.append(change)
        self._schedule()
        return change.done

    @property
    def pending(self) -> int:
        """Changes not committed yet (queued or in the batch under way)."""
        return len(self.queue) + len(self.in_flight or ())

    def _schedule(self) -> None:
        if self.in_flight is not None or not self.queue:
            return
        if self._timer is not None and self._timer.active():
            if len(self.queue) < self.max_batch or self.failures:
                return
            self._timer.cancel()
        elif self.interval > 0 and len(self.queue) < self.max_batch and not self._waiters:
            self._timer = self._clock().callLater(self.interval, self._commit)
            return
        self._timer = None
        self._commit()

    def flush(self) -> Deferred[None]:
        """Commit what is queued now (without waiting for the interval); fires once every
        change queued before the call is committed (or has failed to its caller)."""
        if not self.pending:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append((self._added, waiter))
        if self.in_flight is None and not self.failures:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._commit()
        return waiter

    def settle(self) -> Deferred[None]:
        """Flush with one try: what cannot be committed now is forgotten (logged)."""
        if self.failures:
            self._drop(self.queue)
            self.queue = []
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            self._release()
            return succeed(None)
        self._giving_up = True

        def done(result: object) -> object:
            self._giving_up = False
            return result

        return self.flush().addBoth(done)

    def _commit(self) -> None:
        self._timer = None
        if self.in_flight is not None or not self.queue:
            return
        batch, self.queue = self.queue[: self.max_batch], self.queue[self.max_batch :]
        self.in_flight = batch
        maybeDeferred(self.run, batch).addCallbacks(
            lambda answers: self._committed(batch, answers),
            lambda failure: self._failed(batch, failure),
        )

    def _committed(self, batch: list[Change], answers: list[Any]) -> None:
        self.in_flight = None
        self.batches += 1
        if self.failures:
            log.info("job bookkeeping recorded again after {failures} failed tries",
                     failures=self.failures)
        self.failures = 0
        for change, answer in zip(batch, answers, strict=True):
            change.done.callback(answer)
        self._release()
        self._schedule()

    def _failed(self, batch: list[Change], failure: Failure) -> None:
        self.in_flight = None
        kept = [c for c in batch if c.retry]
        for change in batch:
            if not change.retry:
                change.done.errback(failure)
        if self._giving_up:
            self._drop(kept + self.queue)
            self.queue = []
            self._release()
            return
        for change in batch:
            change.tries += 1
        self.queue[:0] = kept
        self._release()
        if not self.queue:
            return
        self.failures += 1
        delay = min(self.max_retry, max(self.interval, 0.1) * 2 ** (self.failures - 1))
        if self.failures & (self.failures - 1) == 0:  # 1st, 2nd, 4th, 8th... failure
            log.warn("job bookkeeping: {count} job starts and ends not recorded yet "
                     "({error}); trying again in {delay:.1f} s", count=len(self.queue),
                     error=failure.getErrorMessage(), delay=delay, failures=self.failures)
        self._timer = self._clock().callLater(delay, self._commit)

    def _drop(self, changes: Sequence[Change]) -> None:
        if changes:
            self.dropped += len(changes)
            log.warn("job bookkeeping: {count} job starts and ends not recorded; their jobs "
                     "run again once their leases expire", count=len(changes))

    def _release(self) -> None:
        """Fire the flush() waiters whose changes are all settled."""
        waiting = [c.seq for c in (*(self.in_flight or ()), *self.queue)]
        oldest = min(waiting) if waiting else self._added
        ready = [d for upto, d in self._waiters if upto <= oldest]
        self._waiters = [(upto, d) for upto, d in self._waiters if upto > oldest]
        for d in ready:
            d.callback(None)


# Seconds between two batches of job starts and finishes in the collection engine.
BOOKKEEPING_INTERVAL = 0.05


@implementer(IJobStore)
class JobStore:
    """IJobStore on an open SqliteStore or PostgresStore (it shares their connection).

    Job starts and finishes go to the database in batches (``Bookkeeping``), every
    ``interval`` seconds. With ``write_behind`` (the collection engine's), a start or
    finish of a job this store leased answers at once from what the lease said, before
    its batch commits: the engine never waits for its bookkeeping. A process that dies
    before a batch commits leaves those jobs leased in the database; the leases expire
    and the jobs run again (their records are idempotent). Without ``write_behind`` each
    answer comes from the committed batch.
    """

    def __init__(
        self,
        store: Any,
        *,
        reactor: IReactorTime | None = None,
        interval: float = 0.0,
        write_behind: bool = False,
    ) -> None:
        from fep.store.postgres import PostgresStore

        self.store = store
        self.dialect = "postgresql" if isinstance(store, PostgresStore) else "sqlite"
        self.write_behind = write_behind
        self.bookkeeping = Bookkeeping(self._book, reactor, interval)
        # write_behind: jobs leased here, not started yet; jobs whose start was refused.
        self._leased: dict[int, Job] = {}
        self._refused: set[int] = set()

    def _book(self, changes: Sequence[Change]) -> Deferred[list[Any]]:
        return self._do(_bookkeep, list(changes))

    def _do(self, make: Callable[..., Op[T]], *args: Any) -> Deferred[T]:
        if self.dialect == "postgresql":

            async def interaction(cursor: Any) -> T:
                return await _run_postgres(cursor, make(self.dialect, *args))

            result: Deferred[T] = self.store.interact(interaction)
            return result

        def work(conn: Any) -> T:
            return _run_sqlite(conn, make(self.dialect, *args))

        done: Deferred[T] = self.store.interact(work)
        return done

    # tasks
    def save_task(self, task: Task, now: float) -> Deferred[None]:
        return self._do(_save_task, task, now)

    def tasks(self) -> Deferred[list[Task]]:
        return self._do(_tasks, None)

    def task(self, name: str) -> Deferred[Task | None]:
        d = self._do(_tasks, name)
        return d.addCallback(lambda found: found[0] if found else None)

    def set_task_enabled(self, name: str, enabled: bool, now: float) -> Deferred[bool]:
        return self._do(_set_enabled, name, enabled, now)

    def delete_task(self, name: str) -> Deferred[bool]:
        return self._do(_delete_task, name)

    def claim_run(self, name: str, due: float, next_due: float | None, now: float) -> Deferred[
        bool
    ]:
        return self._do(_claim_run, name, due, next_due, now)

    # jobs
    def add_jobs(self, jobs: Sequence[Job], now: float) -> Deferred[int]:
        return self._do(_add_jobs, list(jobs), now)

    def add_job(self, job: Job) -> Deferred[int]:
        return self._do(_add_job, job)

    def lease(
        self,
        node: str,
        now: float,
        until: float,
        limit: int,
        in_use: Mapping[str, int],
        capacities: Mapping[str, int],
    ) -> Deferred[list[Job]]:
        d = self._do(_lease, node, now, until, limit, dict(in_use), dict(capacities))
        if self.write_behind:
            d.addCallback(self._remember, node)
        return d

    def _remember(self, jobs: list[Job], node: str) -> list[Job]:
        for job in jobs:
            self._leased[job.id] = job
        return jobs

    def renew(self, node: str, ids: Sequence[int], until: float) -> Deferred[int]:
        return self._do(_renew, node, list(ids), until)

    def start(self, job_id: int, node: str, now: float, until: float) -> Deferred[Job | None]:
        leased = self._leased.pop(job_id, None)
        change = start_change(job_id, node, now, until)
        # A command's job starts only once its start is committed: a plan's pause or cancel
        # withdraws the command jobs the database has as not started.
        change.retry = leased is not None and leased.node == node and leased.command is None
        done = self.bookkeeping.add(change)
        if not change.retry or leased is None:
            return done
        done.addCallback(self._start_recorded, change)
        return succeed(attrs.evolve(leased, status=JobStatus.RUNNING,
                                    attempts=leased.attempts + 1, started_at=now,
                                    lease_until=until))

    def _start_recorded(self, job: Job | None, change: Change) -> None:
        if job is None and change.tries:
            log.info("job {job}: its start, tried again after a failed batch, changed "
                     "nothing (recorded by the try whose answer was lost, or the lease was "
                     "lost)", job=change.job_id)
        elif job is None:
            self._refused.add(change.job_id)
            log.warn("job {job}: its start was refused (the lease was lost); its outcome "
                     "will not be recorded by this node", job=change.job_id)

    def finish(
        self,
        job: Job,
        node: str,
        status: str,
        outcome: Outcome,
        now: float,
        run_at: float | None,
    ) -> Deferred[bool]:
        change = finish_change(job, node, status, outcome, now, run_at)
        # A command's or a read-now's end is answered once committed: what the door then
        # says (done, the readings) the database says too.
        change.retry = (self.write_behind and job.command is None
                        and READ_NOW not in job.params
                        and job.id not in self._refused and job.node == node)
        self._refused.discard(job.id)
        done = self.bookkeeping.add(change)
        if not change.retry:
            return done
        done.addCallback(self._finish_recorded, job, change)
        return succeed(True)

    def _finish_recorded(self, recorded: bool, job: Job, change: Change) -> None:
        if not recorded and change.tries:
            log.info("job {job} for {meter}: its outcome, tried again after a failed batch, "
                     "changed nothing (recorded by the try whose answer was lost, or the "
                     "lease was lost)", job=job.id, meter=job.meter)
        elif not recorded:
            log.warn("job {job} for {meter}: its outcome was refused (the lease was lost "
                     "while it ran; another node has it)", job=job.id, meter=job.meter)

    def flush(self) -> Deferred[None]:
        """Commit the job starts and finishes queued so far; fires once they are."""
        return self.bookkeeping.flush()

    def settle(self) -> Deferred[None]:
        """Commit what is queued, with one try (none while the database is failing), and
        forget what could not be committed (the engine is stopping; those jobs run again
        once their leases expire). The job store stays usable."""
        return self.bookkeeping.settle()

    def release(self, node: str, ids: Sequence[int]) -> Deferred[int]:
        for job_id in ids:
            self._leased.pop(job_id, None)
        return self._do(_release, node, list(ids))

    def expire(self, now: float) -> Deferred[list[Job]]:
        return self._do(_expire, now)

    def jobs(
        self,
        meter: str | None = None,
        task: str | None = None,
        status: str | None = None,
        limit: int | None = 100,
    ) -> Deferred[list[Job]]:
        return self._do(_jobs, meter, task, status, limit)

    def job(self, job_id: int) -> Deferred[Job | None]:
        d = self._do(_jobs, None, None, None, 1, job_id)
        return d.addCallback(lambda found: found[0] if found else None)

    def set_home(self, resource: str, node: str | None, now: float) -> Deferred[None]:
        return self._do(_set_home, resource, node, now)

    def home(self, resource: str) -> Deferred[str | None]:
        return self._do(_home, resource)

    # statistics
    def stats(self, since_day: str, scope: str | None = None) -> Deferred[list[StatsRow]]:
        return self._do(_stats, since_day, scope)

    def run_stats(self, task: str | None = None, limit: int = 20) -> Deferred[list[RunStats]]:
        return self._do(_run_stats, task, limit)

    def open_jobs(self, task: str, since: float, until: float) -> Deferred[int]:
        return self._do(_open_jobs, task, since, until)

    # commands
    def add_command(self, command: Command, job: Job | None) -> Deferred[Command]:
        return self._do(_add_command, command, job)

    def command(self, command_id: int) -> Deferred[Command | None]:
        d = self._do(_commands, None, None, 1, command_id)
        return d.addCallback(lambda found: found[0] if found else None)

    def commands(
        self, meter: str | None = None, status: str | None = None, limit: int = 100
    ) -> Deferred[list[Command]]:
        return self._do(_commands, meter, status, limit)

    def transition(
        self,
        command_id: int,
        expected: Sequence[str],
        status: str,
        who: str,
        action: str,
        detail: str,
        now: float,
        job: Job | None = None,
        fields: Mapping[str, Any] | None = None,
        of_job: int | None = None,
    ) -> Deferred[Command | None]:
        return self._do(
            _transition, command_id, list(expected), status, who, action, detail, now, job,
            dict(fields or {}), of_job,
        )

    def command_progress(self, command_id: int, progress: Mapping[str, Any]) -> Deferred[None]:
        return self._do(_command_progress, command_id, dict(progress))

    def audit(self, command_id: int) -> Deferred[list[AuditEntry]]:
        return self._do(_audit, command_id)


def job_store(store: Any, **options: Any) -> JobStore:
    """The job store sharing ``store`` (an open SqliteStore or PostgresStore); ``options``
    as JobStore takes them (reactor, interval, write_behind)."""
    return JobStore(store, **options)
