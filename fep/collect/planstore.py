"""The plan store: control plans' tables (sql/*/0010_plans.sql) on the store's own connection,
written like the job store (fep.collect.jobstore): each operation a generator of queries run
in one transaction, SQLite or PostgreSQL.

Every step that matters happens in one transaction with the plan's row held (PostgreSQL:
``SELECT ... FOR UPDATE``; SQLite: ``BEGIN IMMEDIATE``): a step and its checks (status, four
eyes); a pause or a cancel together with the withdrawal of the plan's jobs not yet started; a
release of meters together with their commands, jobs and the rate limiter's state. So a
release never follows a pause, and two nodes sharing the store keep one rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from fep.collect import jobstore as js
from fep.collect.commands import job_params
from fep.collect.jobstore import Op, Q
from fep.collect.plans import (
    MeterState,
    Plan,
    PlanError,
    PlanMeter,
    PlanNotFound,
    PlanStatus,
    PlanWrongState,
    RateLimiter,
    check_step,
)
from fep.collect.tasks import AuditEntry, CommandStatus, Job, JobKind, Priority, dumps, loads

PLAN_COLUMNS = (
    "id, name, action, params, target, status, rate, line_rate, attempts, retry_delay,"
    " starts_at, deadline_at, deadline_in, created_by, created_at, submitted_by,"
    " submitted_at, decided_by, decided_at, reason, started_at, finished_at, limiter"
)
METER_COLUMNS = (
    "plan, meter, seq, route, line, state, command, attempts, reason, released_at, finished_at"
)


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def plan_of(row: Sequence[Any], counts: dict[str, int] | None = None) -> Plan:
    return Plan(
        id=int(row[0]), name=row[1], action=row[2], params=loads(row[3]), target=row[4],
        status=row[5], rate=float(row[6]), line_rate=_f(row[7]), attempts=int(row[8]),
        retry_delay=float(row[9]), starts_at=_f(row[10]), deadline_at=_f(row[11]),
        deadline_in=_f(row[12]), created_by=row[13], created_at=float(row[14]),
        submitted_by=row[15], submitted_at=_f(row[16]), decided_by=row[17],
        decided_at=_f(row[18]), reason=row[19], started_at=_f(row[20]),
        finished_at=_f(row[21]), limiter=loads(row[22]), counts=counts or {},
    )


def meter_of(row: Sequence[Any]) -> PlanMeter:
    return PlanMeter(
        plan=int(row[0]), meter=row[1], seq=int(row[2]), route=row[3], line=row[4],
        state=row[5], command=None if row[6] is None else int(row[6]), attempts=int(row[7]),
        reason=row[8], released_at=_f(row[9]), finished_at=_f(row[10]),
    )


@attrs.frozen
class Tick:
    """What one pass did to a plan: meters released, when the rate lets the next go (None:
    nothing left to release), whether meters are under way, lines for the log."""

    status: str
    released: int = 0
    next_at: float | None = None
    under_way: bool = False
    log: tuple[str, ...] = ()


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _audit_line(plan_id: int, now: float, who: str, action: str, detail: str) -> Q:
    return Q("INSERT INTO plan_audit (plan, at, who, action, detail) VALUES (?, ?, ?, ?, ?)",
             (plan_id, now, who, action, detail))


def _counts(plan_ids: Sequence[int]) -> Op[dict[int, dict[str, int]]]:
    out: dict[int, dict[str, int]] = {i: {} for i in plan_ids}
    if not plan_ids:
        return out
    rows = yield Q(
        f"SELECT plan, state, COUNT(*) FROM plan_meters WHERE plan IN ({_marks(len(plan_ids))})"
        " GROUP BY plan, state", tuple(plan_ids), fetch=True)
    for plan, state, n in rows:
        out[int(plan)][state] = int(n)
    return out


def _load(dialect: str, plan_id: int, *, lock: bool = False) -> Op[Plan]:
    lock_sql = " FOR UPDATE" if lock and dialect == "postgresql" else ""
    rows = yield Q(f"SELECT {PLAN_COLUMNS} FROM plans WHERE id = ?{lock_sql}", (plan_id,),
                   fetch=True)
    if not rows:
        raise PlanNotFound(f"no plan {plan_id}")
    counts = yield from _counts([plan_id])
    return plan_of(rows[0], counts[plan_id])


def _create(dialect: str, plan: Plan, rows: Sequence[PlanMeter]) -> Op[Plan]:
    found = yield Q(
        "INSERT INTO plans (name, action, params, target, status, rate, line_rate, attempts,"
        " retry_delay, starts_at, deadline_at, deadline_in, created_by, created_at, updated_at)"
        f" VALUES ({_marks(15)}) RETURNING id",
        (plan.name, plan.action, dumps(plan.params), plan.target, str(PlanStatus.DRAFT),
         plan.rate, plan.line_rate, plan.attempts, plan.retry_delay, plan.starts_at,
         plan.deadline_at, plan.deadline_in, plan.created_by, plan.created_at,
         plan.created_at),
        fetch=True,
    )
    plan_id = int(found[0][0])
    yield Q(
        "INSERT INTO plan_meters (plan, meter, seq, route, line, state, reason, finished_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        many=[(plan_id, r.meter, r.seq, r.route, r.line, str(r.state), r.reason,
               plan.created_at if r.state.final else None) for r in rows],
    )
    unsupported = sum(1 for r in rows if r.state == MeterState.NOT_SUPPORTED)
    detail = (f"{plan.action} {dumps(plan.params)} on {len(rows)} meters ({plan.target}),"
              f" {plan.rate:g}/min" + (f", {plan.line_rate:g}/min per line"
                                       if plan.line_rate else "")
              + (f"; {unsupported} not supported" if unsupported else ""))
    yield _audit_line(plan_id, plan.created_at, plan.created_by, "created", detail)
    made = yield from _load(dialect, plan_id)
    return made


def _plans(dialect: str, status: str | None, limit: int, recent: bool) -> Op[list[Plan]]:
    where, params = "", []
    if status is not None:
        where, params = " WHERE status = ?", [status]
    order = "id DESC"
    if recent:  # the status page: what is going on first
        order = ("CASE status WHEN 'running' THEN 0 WHEN 'paused' THEN 1 WHEN 'approved' THEN 2"
                 " WHEN 'submitted' THEN 3 ELSE 4 END, id DESC")
    rows = yield Q(f"SELECT {PLAN_COLUMNS} FROM plans{where} ORDER BY {order} LIMIT ?",
                   (*params, limit), fetch=True)
    counts = yield from _counts([int(r[0]) for r in rows])
    return [plan_of(r, counts[int(r[0])]) for r in rows]


def _one(dialect: str, plan_id: int) -> Op[Plan | None]:
    try:
        found = yield from _load(dialect, plan_id)
    except PlanError:
        return None
    return found


def _meters(dialect: str, plan_id: int, state: str | None) -> Op[list[PlanMeter]]:
    where = "plan = ?"
    params: list[Any] = [plan_id]
    if state is not None:
        where += " AND state = ?"
        params.append(state)
    rows = yield Q(f"SELECT {METER_COLUMNS} FROM plan_meters WHERE {where} ORDER BY seq",
                   params, fetch=True)
    return [meter_of(r) for r in rows]


def _audit(dialect: str, plan_id: int) -> Op[list[AuditEntry]]:
    rows = yield Q("SELECT plan, at, who, action, detail FROM plan_audit WHERE plan = ?"
                   " ORDER BY id", (plan_id,), fetch=True)
    return [AuditEntry(int(r[0]), float(r[1]), r[2], r[3], r[4]) for r in rows]


# -- steps --------------------------------------------------------------------------------


def _withdraw(plan: Plan, now: float, who: str, cancel: bool) -> Op[int]:
    """Take back the plan's released meters whose jobs have not started (or wait for a
    retry): the job ends missed, its command failed as withheld (or cancelled), audited; the
    meter goes back to pending (pause) or is skipped (cancel). Fires with how many."""
    rows = yield Q(
        "SELECT pm.meter, pm.command, c.job FROM plan_meters pm"
        " JOIN commands c ON c.id = pm.command WHERE pm.plan = ? AND pm.state = 'released'",
        (plan.id,), fetch=True)
    by_job = {int(job): (meter, int(command)) for meter, command, job in rows
              if job is not None}
    if not by_job:
        return 0
    word = "cancelled" if cancel else "withheld"
    text = f"{word}: plan {plan.id} {'cancelled' if cancel else 'paused'} by {who}"
    withdrawn: list[tuple[str, int, int]] = []
    ids = sorted(by_job)
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        done = yield Q(
            "UPDATE jobs SET status = 'missed', finished_at = ?, error = ?, node = NULL,"
            f" lease_until = NULL WHERE id IN ({_marks(len(chunk))})"
            " AND status IN ('pending', 'leased') RETURNING id, attempts",
            (now, text, *chunk), fetch=True)
        withdrawn += [(*by_job[int(j)], int(n)) for j, n in done]
    for meter, command, attempts in withdrawn:
        yield Q("UPDATE commands SET status = ?, outcome = ?, finished_at = ? WHERE id = ?"
                " AND status IN ('queued', 'running')",
                (str(CommandStatus.FAILED), text, now, command))
        yield js._audit_line(command, now, who, word, text)
        if cancel:
            reason = f"cancelled by {who}" + (f" after {attempts} attempt(s)" if attempts
                                              else "")
            yield Q("UPDATE plan_meters SET state = 'skipped', reason = ?, finished_at = ?,"
                    " attempts = ? WHERE plan = ? AND meter = ?",
                    (reason, now, attempts, plan.id, meter))
        else:
            yield Q("UPDATE plan_meters SET state = 'pending', command = NULL,"
                    " released_at = NULL WHERE plan = ? AND meter = ?", (plan.id, meter))
    return len(withdrawn)


def _step(dialect: str, plan_id: int, step: str, who: str, now: float, reason: str
          ) -> Op[Plan]:
    plan = yield from _load(dialect, plan_id, lock=True)
    to = check_step(plan, step, who)
    sets: dict[str, Any] = {"status": str(to), "updated_at": now}
    detail = reason
    if step == "submit":
        sets.update(submitted_by=who, submitted_at=now)
        detail = f"{plan.total} meters"
    elif step in ("approve", "reject"):
        sets.update(decided_by=who, decided_at=now, reason=reason or None)
        detail = reason or f"{plan.total} meters"
    elif step == "start":
        if plan.started_at is None:
            sets["started_at"] = now
            if plan.deadline_in is not None and plan.deadline_at is None:
                sets["deadline_at"] = max(now, plan.starts_at or now) + plan.deadline_in
        if plan.deadline_at is not None and now > plan.deadline_at:
            raise PlanWrongState(f"plan {plan.id}: its deadline has passed; cancel it")
        if plan.starts_at is not None and plan.starts_at > now:
            detail = f"releases from its start time, {plan.starts_at:.0f}"
    elif step == "pause":
        withdrawn = yield from _withdraw(plan, now, who, cancel=False)
        detail = f"{withdrawn} commands not yet started withheld"
    elif step == "cancel":
        withdrawn = yield from _withdraw(plan, now, who, cancel=True)
        skipped = yield Q(
            "UPDATE plan_meters SET state = 'skipped', reason = ?, finished_at = ?"
            " WHERE plan = ? AND state = 'pending'",
            (f"cancelled by {who}" + (f": {reason}" if reason else ""), now, plan.id))
        sets["reason"] = reason or None
        detail = (f"{int(skipped) + withdrawn} meters skipped ({withdrawn} commands not yet "
                  "started cancelled)" + (f": {reason}" if reason else ""))
        left = yield Q("SELECT COUNT(*) FROM plan_meters WHERE plan = ? AND state = 'released'",
                       (plan.id,), fetch=True)
        if not int(left[0][0]):
            sets["finished_at"] = now
    assignments = ", ".join(f"{k} = ?" for k in sets)
    yield Q(f"UPDATE plans SET {assignments} WHERE id = ?", (*sets.values(), plan.id))
    word = {"submit": "submitted", "approve": "approved", "reject": "rejected",
            "start": "started" if plan.status != PlanStatus.PAUSED else "resumed",
            "pause": "paused", "cancel": "cancelled"}[step]
    yield _audit_line(plan.id, now, who, word, detail)
    changed = yield from _load(dialect, plan.id)
    return changed


# -- execution ----------------------------------------------------------------------------


def _active(dialect: str, now: float) -> Op[list[int]]:
    rows = yield Q(
        "SELECT id FROM plans WHERE status = 'running'"
        " OR (status = 'approved' AND starts_at IS NOT NULL AND starts_at <= ?)"
        " UNION SELECT DISTINCT plan FROM plan_meters WHERE state = 'released'",
        (now,), fetch=True)
    return sorted(int(r[0]) for r in rows)


def _settle(plan: Plan, now: float) -> Op[int]:
    """Record the outcome of each released meter whose command ended."""
    rows = yield Q(
        "SELECT pm.meter, c.status, c.outcome, j.attempts FROM plan_meters pm"
        " JOIN commands c ON c.id = pm.command LEFT JOIN jobs j ON j.id = c.job"
        " WHERE pm.plan = ? AND pm.state = 'released'"
        " AND c.status IN ('done', 'failed', 'rejected')", (plan.id,), fetch=True)
    updates = []
    for meter, status, outcome, attempts in rows:
        text = outcome or str(status)
        if status == CommandStatus.DONE:
            state = MeterState.DONE
        elif text.startswith("missed:"):
            state = MeterState.SKIPPED
            text = f"deadline passed ({text})"
        else:
            state = MeterState.FAILED
        updates.append((str(state), text, now, int(attempts or 0), plan.id, meter))
    for update in updates:
        yield Q("UPDATE plan_meters SET state = ?, reason = ?, finished_at = ?, attempts = ?"
                " WHERE plan = ? AND meter = ?", update)
    return len(updates)


def _release_one(plan: Plan, row: Sequence[Any], now: float, node: str) -> Op[None]:
    meter, route, line = row[0], row[1], row[2]
    params = {**plan.params, "plan": plan.id, "attempts": plan.attempts,
              "retry_delay": plan.retry_delay}
    requested_by = plan.submitted_by or plan.created_by
    found = yield Q(
        "INSERT INTO commands (meter, action, params, requested_by, requested_at, status,"
        f" approval_required, approved_by, approved_at) VALUES ({_marks(9)}) RETURNING id",
        (meter, plan.action, dumps(params), requested_by, now, str(CommandStatus.QUEUED), 1,
         plan.decided_by, plan.decided_at),
        fetch=True)
    command_id = int(found[0][0])
    yield js._audit_line(command_id, now, requested_by, "requested",
                         f"{plan.action} {dumps(params)} (plan {plan.id})")
    yield js._audit_line(command_id, now, plan.decided_by or "", "approved",
                         f"approved via plan {plan.id}")
    job = Job(id=0, task=None, meter=meter, kind=JobKind.COMMAND, route=route, resource=line,
              command=command_id, params=job_params(plan.action, plan.params),
              priority=Priority.ON_DEMAND, due=now, run_at=now,
              deadline=plan.deadline_at, max_attempts=plan.attempts,
              retry_delay=plan.retry_delay, backoff=1.0)
    job_id = yield from js._insert_job(job)
    yield Q("UPDATE commands SET job = ? WHERE id = ?", (job_id, command_id))
    yield js._audit_line(command_id, now, node, "queued",
                         f"job {job_id}, released by plan {plan.id}")
    yield Q("UPDATE plan_meters SET state = 'released', command = ?, released_at = ?"
            " WHERE plan = ? AND meter = ?", (command_id, now, plan.id, meter))


def _busy_lines(plan_id: int) -> Op[dict[str, int]]:
    """The plan's commands waiting for their line or on it now, per line (a meter waiting
    for a retry does not hold its line)."""
    rows = yield Q(
        "SELECT pm.line, COUNT(*) FROM plan_meters pm JOIN commands c ON c.id = pm.command"
        " JOIN jobs j ON j.id = c.job WHERE pm.plan = ? AND pm.state = 'released'"
        " AND (j.status IN ('leased', 'running') OR (j.status = 'pending' AND j.attempts = 0))"
        " GROUP BY pm.line", (plan_id,), fetch=True)
    return {str(line): int(n) for line, n in rows}


def _release(plan: Plan, now: float, node: str, capacities: Mapping[str, int]
             ) -> Op[tuple[int, float | None]]:
    """Release the meters the rate allows now: the first pending meter of each line that is
    free (no command of the plan waiting for it or on it, beyond its capacity) and whose
    rate allows, in release order, while the overall rate allows. So a line's commands
    start when they are released, not in a heap after a slow one. Fires with (how many,
    when the next may go: None when every line with meters left is busy)."""
    limiter = RateLimiter(plan.rate, plan.line_rate, tat=dict(plan.limiter))
    heads = yield Q("SELECT line, MIN(seq) FROM plan_meters WHERE plan = ? AND"
                    " state = 'pending' GROUP BY line ORDER BY MIN(seq)", (plan.id,),
                    fetch=True)
    if not heads:
        return 0, None
    busy = yield from _busy_lines(plan.id)
    free = [(str(line), int(seq)) for line, seq in heads
            if busy.get(str(line), 0) < capacities.get(str(line), 1)]
    ready = [(line, seq) for line, seq in free if limiter.line_allows(line, now)][:500]
    rows: list[Any] = []
    if ready:
        rows = yield Q(
            "SELECT meter, route, line FROM plan_meters WHERE plan = ? AND state = 'pending'"
            f" AND seq IN ({_marks(len(ready))}) ORDER BY seq",
            (plan.id, *(seq for _, seq in ready)), fetch=True)
    released = 0
    for row in rows:
        if not limiter.allows(row[2], now):
            if limiter.next_at(now) > now:
                break  # the overall rate: no more now
            continue
        limiter.take(row[2], now)
        yield from _release_one(plan, row, now, node)
        released += 1
    if released:
        yield Q("UPDATE plans SET limiter = ?, updated_at = ? WHERE id = ?",
                (dumps(limiter.state(now)), now, plan.id))
    waiting = [line for line, _ in free if not (released and line in {r[2] for r in rows})]
    if not waiting and not released:
        return 0, None
    next_at = limiter.next_at(now)
    if plan.line_rate and waiting:
        slack = limiter.slack
        line_next = min(max(now, limiter.tat.get(f"line:{ln}", now) - slack)
                        for ln in waiting)
        next_at = max(next_at, line_next)
    return released, next_at


def _tick(dialect: str, plan_id: int, now: float, node: str,
          capacities: Mapping[str, int]) -> Op[Tick]:
    plan = yield from _load(dialect, plan_id, lock=True)
    lines: list[str] = []
    if plan.status == PlanStatus.APPROVED and plan.starts_at is not None \
            and plan.starts_at <= now:
        sets: dict[str, Any] = {"status": "running", "started_at": now, "updated_at": now}
        if plan.deadline_in is not None and plan.deadline_at is None:
            sets["deadline_at"] = plan.starts_at + plan.deadline_in
        yield Q(f"UPDATE plans SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                (*sets.values(), plan.id))
        yield _audit_line(plan.id, now, node, "started", "at its start time")
        lines.append("started at its start time")
        plan = yield from _load(dialect, plan_id)
    settled = yield from _settle(plan, now)
    released, next_at = 0, None
    if plan.status == PlanStatus.RUNNING:
        if plan.deadline_at is not None and now > plan.deadline_at:
            n = yield Q("UPDATE plan_meters SET state = 'skipped', reason = ?, finished_at = ?"
                        " WHERE plan = ? AND state = 'pending'",
                        ("deadline passed before it was released", now, plan.id))
            if n:
                yield _audit_line(plan.id, now, node, "deadline",
                                  f"{int(n)} meters not released skipped")
                lines.append(f"deadline passed: {int(n)} meters skipped")
        elif plan.starts_at is None or plan.starts_at <= now:
            released, next_at = yield from _release(plan, now, node, capacities)
        else:
            next_at = plan.starts_at
    counts = yield from _counts([plan.id])
    left = counts[plan.id]
    under_way = left.get("released", 0) > 0
    status = str(plan.status)
    if plan.status == PlanStatus.RUNNING and not under_way and not left.get("pending", 0):
        status = str(PlanStatus.DONE)
        yield Q("UPDATE plans SET status = ?, finished_at = ?, updated_at = ? WHERE id = ?",
                (status, now, now, plan.id))
        summary = ", ".join(f"{n} {s}" for s, n in sorted(left.items()))
        yield _audit_line(plan.id, now, node, "done", summary)
        lines.append(f"done: {summary}")
    elif plan.status == PlanStatus.CANCELLED and not under_way and plan.finished_at is None:
        yield Q("UPDATE plans SET finished_at = ?, updated_at = ? WHERE id = ?",
                (now, now, plan.id))
        summary = ", ".join(f"{n} {s}" for s, n in sorted(left.items()))
        yield _audit_line(plan.id, now, node, "ended", summary)
    if settled or released:
        lines.append(f"{released} released, {settled} ended")
    return Tick(status=status, released=released, next_at=next_at, under_way=under_way,
                log=tuple(lines))


class PlanStore(js.JobStore):
    """Plans on an open SqliteStore or PostgresStore (sharing its connection, like the job
    store, whose tables the releases write to)."""

    def create(self, plan: Plan, rows: Sequence[PlanMeter]) -> Deferred[Plan]:
        return self._do(_create, plan, list(rows))

    def plans(self, status: str | None = None, limit: int = 100, recent: bool = False
              ) -> Deferred[list[Plan]]:
        return self._do(_plans, status, limit, recent)

    def plan(self, plan_id: int) -> Deferred[Plan | None]:
        return self._do(_one, plan_id)

    def meters(self, plan_id: int, state: str | None = None) -> Deferred[list[PlanMeter]]:
        return self._do(_meters, plan_id, state)

    def plan_audit(self, plan_id: int) -> Deferred[list[AuditEntry]]:
        return self._do(_audit, plan_id)

    def step(self, plan_id: int, step: str, who: str, now: float, reason: str = ""
             ) -> Deferred[Plan]:
        return self._do(_step, plan_id, step, who, now, reason)

    def active(self, now: float) -> Deferred[list[int]]:
        return self._do(_active, now)

    def tick(self, plan_id: int, now: float, node: str,
             capacities: Mapping[str, int] | None = None) -> Deferred[Tick]:
        """One pass over a running plan: settle, release (``capacities``: how many
        commands a line takes at once, 1 when not given), end it when through."""
        return self._do(_tick, plan_id, now, node, dict(capacities or {}))


def plan_store(store: Any) -> PlanStore:
    """The plan store sharing ``store`` (an open SqliteStore or PostgresStore)."""
    return PlanStore(store)
