"""The collection engine's commands of the `fep` command line: tasks, manual re-collection,
statistics, jobs and commands with approval. They work on the store (the daemons see what
they write at their next look, ``[collect] poll``); `fep --config` gives the store URL and
the ``[collect]`` settings (shared lines, commands needing approval)."""

from __future__ import annotations

import argparse
import os
import pwd
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fep.cli.arguments import parse_time, read_options, with_store
from fep.cli.output import EXIT_OK, write_rows
from fep.collect import commands as cmd
from fep.collect.dlt698_route import terminal_id
from fep.collect.engine import through_terminals
from fep.collect.limits import ResourcePolicy
from fep.collect.schedule import format_duration, parse_duration
from fep.collect.scheduler import expand
from fep.collect.stats import SCOPES, percent, total
from fep.collect.tasks import (
    COMMANDS,
    Job,
    JobKind,
    Priority,
    Target,
    Task,
    TaskKind,
)
from fep.errors import ConfigError
from fep.model import Meter

if TYPE_CHECKING:
    from fep.reactors import IFepReactor


class NotFound(ConfigError):
    """The task, meter or command named on the command line does not exist (exit 2)."""


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _settings(args: argparse.Namespace) -> Any:
    from fep.config import default_config, load_config

    return (load_config(args.config) if args.config else default_config()).collect


def _firmware_dir(args: argparse.Namespace) -> Path:
    from fep.config import default_config, load_config

    return (load_config(args.config) if args.config else default_config()).firmware_directory


def _policy(args: argparse.Namespace) -> ResourcePolicy:
    from fep.collect.engine import resource_policy

    return resource_policy(_settings(args))


def _options(pairs: Sequence[str]) -> dict[str, str]:

    return read_options(pairs)


def _epoch(text: str | None) -> float | None:
    if not text:
        return None

    return parse_time(text).timestamp()


def recollect_job(
    meter: Meter,
    since: datetime,
    until: datetime,
    now: float,
    policy: ResourcePolicy,
    *,
    interval: float | None = None,
) -> Job:
    """The on-demand load-profile job that reads ``[since, until)`` of a meter again (only
    the intervals the store lacks)."""
    if until <= since:
        raise ConfigError("--to must be after --from", key="--to")
    params: dict[str, Any] = {"since": since.isoformat(), "until": until.isoformat()}
    if interval is not None:
        params["interval"] = interval
    return Job(
        id=0,
        task=None,
        meter=meter.id,
        kind=JobKind.LOAD_PROFILE,
        route=meter.route,
        resource=policy.key(meter.route),
        params=params,
        priority=Priority.ON_DEMAND,
        due=now,
        run_at=now,
        max_attempts=3,
        retry_delay=30.0,
    )


# ---------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------

TASK_COLUMNS = ("name", "kind", "schedule", "target", "priority", "retries", "enabled",
                "next_due")


def task_row(task: Task) -> dict[str, object]:
    return {
        "name": task.name,
        "kind": str(task.kind),
        "schedule": task.schedule,
        "target": str(task.target),
        "items": ",".join(task.items),
        "priority": task.priority.label,
        "retries": task.retries,
        "retry_delay": format_duration(task.retry_delay),
        "deadline": "" if task.deadline is None else format_duration(task.deadline),
        "starts": _iso(task.starts_at),
        "ends": _iso(task.ends_at),
        "options": ", ".join(f"{k}={v}" for k, v in sorted(task.options.items())),
        "enabled": "yes" if task.enabled else "no",
        "next_due": _iso(task.next_due),
    }


async def cmd_tasks(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.collect.jobstore import job_store

    now = time.time()

    async def work(store: Any) -> int:
        jobs = job_store(store)
        action = args.tasks_command
        if action == "add":
            task = Task(
                name=args.name,
                kind=args.kind,
                schedule=args.schedule,
                target=Target.parse(args.target),
                items=args.items or "",
                priority=args.priority,
                retries=args.retries,
                retry_delay=parse_duration(args.retry_delay, "--retry-delay"),
                backoff=args.backoff,
                deadline=parse_duration(args.deadline, "--deadline") if args.deadline else None,
                starts_at=_epoch(args.start),
                ends_at=_epoch(args.end),
                options=_options(args.option),
                enabled=not args.disabled,
            )
            import attrs

            task = attrs.evolve(task, next_due=task.first_due(now))
            await jobs.save_task(task, now)
            print(f"task {task.name} saved; next run {_iso(task.next_due)}")
        elif action == "list":
            rows = [task_row(t) for t in await jobs.tasks()]
            write_rows(rows, TASK_COLUMNS, args.format)
        elif action == "show":
            shown = await jobs.task(args.name)
            if shown is None:
                raise NotFound(f"no task {args.name!r}")
            for key, value in task_row(shown).items():
                print(f"{key:12} {value}")
            runs = await jobs.run_stats(shown.name, args.runs)
            if runs:
                print()
                write_rows([_run_row(r) for r in runs], RUN_COLUMNS, "table")
        elif action == "run-now":
            found = await jobs.task(args.name)
            if found is None:
                raise NotFound(f"no task {args.name!r}")
            meters = await store.meters()
            if args.meter:
                wanted = set(args.meter)
                meters = [m for m in meters if m.id in wanted]
            known = {m.id: m for m in await store.meters()}
            new = expand(found, meters, now, through_terminals(_policy(args), known.get),
                         priority=Priority.ON_DEMAND)
            added = await jobs.add_jobs(new, now)
            print(f"task {found.name}: {added} jobs to run now")
        elif action in ("enable", "disable"):
            if not await jobs.set_task_enabled(args.name, action == "enable", now):
                raise NotFound(f"no task {args.name!r}")
            print(f"task {args.name} {action}d")
        elif action == "delete":
            if not await jobs.delete_task(args.name):
                raise NotFound(f"no task {args.name!r}")
            print(f"task {args.name} deleted")
        return EXIT_OK

    return await with_store(args, work)


# ---------------------------------------------------------------------------
# recollect, jobs, stats
# ---------------------------------------------------------------------------


async def cmd_recollect(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.collect.jobstore import job_store

    since, until = parse_time(args.from_time), parse_time(args.to_time)
    interval = parse_duration(args.interval, "--interval") if args.interval else None

    async def work(store: Any) -> int:
        meter = await store.meter(args.meter)
        if meter is None:
            raise NotFound(f"no meter {args.meter!r}")
        now = time.time()
        known = {m.id: m for m in await store.meters()} if terminal_id(meter.route) else {}
        job = recollect_job(meter, since, until, now, through_terminals(_policy(args),
                                                                         known.get),
                            interval=interval)
        await job_store(store).add_jobs([job], now)
        print(f"meter {meter.id}: intervals missing between {_iso(since.timestamp())} and "
              f"{_iso(until.timestamp())} will be read again")
        return EXIT_OK

    return await with_store(args, work)


JOB_COLUMNS = ("id", "task", "meter", "kind", "status", "attempts", "due", "finished",
               "node", "bytes", "result")


def _job_row(job: Job) -> dict[str, object]:
    return {
        "id": job.id,
        "task": job.task or "",
        "meter": job.meter,
        "kind": str(job.kind),
        "status": str(job.status),
        "attempts": job.attempts,
        "due": _iso(job.due),
        "finished": _iso(job.finished_at),
        "node": job.node or "",
        "bytes": job.bytes_in + job.bytes_out,
        "result": job.result if job.error is None or job.status == "done" else job.error,
    }


async def cmd_jobs(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.collect.jobstore import job_store

    async def work(store: Any) -> int:
        found = await job_store(store).jobs(meter=args.meter, task=args.task,
                                            status=args.status, limit=args.limit)
        write_rows([_job_row(j) for j in found], JOB_COLUMNS, args.format)
        return EXIT_OK

    return await with_store(args, work)


STATS_COLUMNS = ("day", "scope", "key", "jobs", "first_pass", "success", "failed", "missed",
                 "attempts")
RUN_COLUMNS = ("task", "due", "jobs", "first_pass", "success", "failed", "missed", "open")


def _stats_row(row: Any) -> dict[str, object]:
    return {
        "day": row.day,
        "scope": row.scope,
        "key": row.key,
        "jobs": row.jobs,
        "first_pass": percent(row.first_pass_rate),
        "success": percent(row.success_rate),
        "failed": row.failed,
        "missed": row.missed,
        "attempts": row.attempts,
    }


def _run_row(run: Any) -> dict[str, object]:
    return {
        "task": run.task,
        "due": _iso(run.due),
        "jobs": run.jobs,
        "first_pass": percent(run.first_pass_rate),
        "success": percent(run.success_rate),
        "failed": run.failed,
        "missed": run.missed,
        "open": run.open,
    }


async def cmd_stats(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.collect.jobstore import job_store

    async def work(store: Any) -> int:
        jobs = job_store(store)
        if args.runs:
            runs = await jobs.run_stats(args.task, args.limit)
            write_rows([_run_row(r) for r in runs], RUN_COLUMNS, args.format)
            return EXIT_OK
        since = (datetime.now(UTC) - timedelta(days=args.days - 1)).strftime("%Y-%m-%d")
        rows = await jobs.stats(since, args.by)
        out = [_stats_row(r) for r in rows]
        if args.format == "table" and rows:
            for scope in sorted({r.scope for r in rows}):
                out.append(_stats_row(total(rows, scope)))
        write_rows(out, STATS_COLUMNS, args.format)
        return EXIT_OK

    return await with_store(args, work)


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------

COMMAND_COLUMNS = ("id", "meter", "action", "status", "requested_by", "requested_at",
                   "approved_by", "job", "outcome")


def _command_row(c: Any) -> dict[str, object]:
    return {
        "id": c.id,
        "meter": c.meter,
        "action": c.action,
        "params": ", ".join(f"{k}={v}" for k, v in sorted(c.params.items())),
        "status": str(c.status),
        "requested_by": c.requested_by,
        "requested_at": _iso(c.requested_at),
        "approved_by": c.approved_by or "",
        "job": c.job or "",
        "outcome": c.outcome or "",
        "progress": ", ".join(f"{k}={v}" for k, v in sorted(c.progress.items())),
    }


def cli_operator(args: argparse.Namespace, action: str) -> str:
    """Who runs a ``fep command`` step, as ``cli:NAME``: the name of an API token given in
    ``FEP_TOKEN`` (checked against the ``[http] tokens_file`` of ``--config``, and its role
    must allow ``action``), else the invoking OS user (its uid, not $USER or $LOGNAME).
    ``--by`` only repeats that identity: any other name is refused, so four eyes cannot be
    bypassed by typing someone else's name."""
    token = os.environ.get("FEP_TOKEN", "")
    if token:
        from fep.config import load_config
        from fep.operator.commands import allowed
        from fep.operator.tokens import TokenFile

        if not args.config:
            raise cmd.CommandError("FEP_TOKEN needs --config (whose [http] tokens_file "
                                   "holds the token)")
        path = load_config(args.config).http.tokens_file
        if not path:
            raise cmd.CommandError("FEP_TOKEN given but the config names no [http] "
                                   "tokens_file", key="tokens_file")
        user = TokenFile.load(path).user(token.encode())
        if user is None:
            raise cmd.CommandError("FEP_TOKEN is not a valid API token")
        if not allowed(action, user.role):
            raise cmd.CommandError(f"{action} needs the operator role; the token of "
                                   f"{user.name} is a {user.role}")
        name = user.name
    else:
        name = pwd.getpwuid(os.getuid()).pw_name
    by = getattr(args, "by", None)
    if by is not None and by != name:
        raise cmd.CommandError(f"--by {by}: you are {name}; the identity comes from your OS "
                               "user or FEP_TOKEN, --by cannot name someone else")
    return f"cli:{name}"


async def cmd_command(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.collect.engine import approval_of
    from fep.collect.jobstore import job_store

    action = args.command_action
    who = cli_operator(args, "approve" if action != "request" else "command") if action in (
        "request", "approve", "reject") else ""

    async def meter_of(store: Any, meter_id: str) -> Meter:
        meter: Meter | None = await store.meter(meter_id)
        if meter is None:
            raise NotFound(f"no meter {meter_id!r}")
        return meter

    async def work(store: Any) -> int:
        jobs = job_store(store)
        now = time.time()
        if action == "request":
            meter = await meter_of(store, args.meter)
            c = await cmd.request(
                jobs, meter, args.action, _options(args.param), who, now,
                approval=approval_of(_settings(args)), policy=_policy(args),
                attempts=args.attempts, firmware_dir=_firmware_dir(args),
            )
            state = "awaits approval" if c.status == "requested" else "queued"
            print(f"command {c.id}: {c.action} for {c.meter} {state}")
        elif action == "approve":
            asked = await jobs.command(args.id)
            if asked is None:
                raise NotFound(f"no command {args.id}")
            c = await cmd.approve(jobs, args.id, who, now, await meter_of(store, asked.meter),
                                  _policy(args))
            print(f"command {c.id} approved by {who}; queued as job {c.job}")
        elif action == "reject":
            c = await cmd.reject(jobs, args.id, who, args.reason, now)
            print(f"command {c.id} rejected by {who}")
        elif action == "list":
            found = await jobs.commands(meter=args.meter, status=args.status, limit=args.limit)
            write_rows([_command_row(c) for c in found], COMMAND_COLUMNS, args.format)
        elif action == "show":
            one = await jobs.command(args.id)
            if one is None:
                raise NotFound(f"no command {args.id}")
            for key, value in _command_row(one).items():
                print(f"{key:13} {value}")
            print()
            trail: list[dict[str, object]] = [
                {"at": _iso(a.at), "who": a.who, "action": a.action, "detail": a.detail}
                for a in await jobs.audit(one.id)
            ]
            write_rows(trail, ("at", "who", "action", "detail"), "table")
        return EXIT_OK

    return await with_store(args, work)


# ---------------------------------------------------------------------------
# control plans
# ---------------------------------------------------------------------------

PLAN_COLUMNS = ("id", "name", "action", "status", "meters", "done", "failed",
                "not-supported", "skipped", "pending", "released", "created_by",
                "approved_by")


def _plan_row(p: Any) -> dict[str, object]:
    counts = {str(k): int(v) for k, v in p.counts.items()}
    return {
        "id": p.id, "name": p.name, "action": p.action, "status": str(p.status),
        "meters": p.total, "done": counts.get("done", 0), "failed": counts.get("failed", 0),
        "not-supported": counts.get("not-supported", 0), "skipped": counts.get("skipped", 0),
        "pending": counts.get("pending", 0), "released": counts.get("released", 0),
        "created_by": p.created_by, "approved_by": p.approved_by or "",
    }


def _read_ids(path: str) -> str:
    return Path(path).expanduser().read_text(encoding="utf-8")


async def cmd_plans(reactor: IFepReactor, args: argparse.Namespace) -> int:
    from fep.collect import plans as pl
    from fep.collect.planstore import plan_store

    action = args.plans_command
    who = ""
    if action in ("create", *pl.STEPS):
        who = cli_operator(args, "plan_create" if action == "create" else f"plan_{action}")

    async def work(store: Any) -> int:
        plans = plan_store(store)
        now = time.time()
        if action == "create":
            spec: dict[str, Any] = {
                "name": args.name or "", "action": args.action, "target": args.target,
                "params": _options(args.param), "rate": args.rate,
                "line_rate": args.line_rate, "attempts": args.attempts,
                "retry_delay": parse_duration(args.retry_delay, "--retry-delay"),
                "start": args.start, "deadline": args.deadline,
            }
            made = await pl.create(plans, spec, who, now, await store.meters(),
                                   _policy(args), read_file=_read_ids)
            print(f"plan {made.id}: {made.action} on {made.total} meters, draft "
                  f"({made.counts.get('not-supported', 0)} not supported); "
                  f"fep plans submit {made.id}")
        elif action in pl.STEPS:
            try:
                p = await plans.step(args.id, action, who, now, getattr(args, "reason", ""))
            except pl.PlanNotFound:
                raise NotFound(f"no plan {args.id}") from None
            print(f"plan {p.id} {p.status} ({action} by {who})")
        elif action == "list":
            found = await plans.plans(status=args.status, limit=args.limit)
            write_rows([_plan_row(p) for p in found], PLAN_COLUMNS, args.format)
        elif action == "show":
            one = await plans.plan(args.id)
            if one is None:
                raise NotFound(f"no plan {args.id}")
            for key, value in pl.plan_dict(one).items():
                if key != "counts":
                    print(f"{key:13} {'' if value is None else value}")
            print(f"{'counts':13} " + ", ".join(f"{n} {s}" for s, n in sorted(
                one.counts.items())))
            rows = await plans.meters(one.id)
            if args.meters:
                print()
                write_rows([pl.meter_dict(r) for r in rows],
                           ("meter", "state", "attempts", "command", "reason"), "table")
            else:
                problems = [pl.meter_dict(r) for r in rows
                            if r.state in ("failed", "not-supported")]
                if problems:
                    print()
                    write_rows(problems, ("meter", "state", "attempts", "reason"), "table")
            print()
            trail: list[dict[str, object]] = [
                {"at": _iso(a.at), "who": a.who, "action": a.action, "detail": a.detail}
                for a in await plans.plan_audit(one.id)
            ]
            write_rows(trail, ("at", "who", "action", "detail"), "table")
        return EXIT_OK

    return await with_store(args, work)


# ---------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------


def add_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Register tasks, recollect, jobs, stats and command with the `fep` parser."""
    fmt = {"choices": ("json", "csv", "table"), "default": "table"}

    tasks = sub.add_parser("tasks", help="collection tasks")
    tsub = tasks.add_subparsers(dest="tasks_command", required=True, parser_class=parser_class)
    add = tsub.add_parser("add", help="add or replace a task")
    add.add_argument("name")
    add.add_argument("--kind", required=True, choices=[str(k) for k in TaskKind])
    add.add_argument("--schedule", required=True,
                     help="'every 15m', 'every 1d +2h' or a cron line '*/15 * * * *' (UTC)")
    add.add_argument("--target", default="all",
                     help="all, meters:ID,..., group:NAME, protocol:NAME, route:PREFIX")
    add.add_argument("--items", help="comma list: OBIS codes, DLMS CLASS/OBIS/ATTR, DL/T 645 DIs")
    add.add_argument("--priority", default="scheduled",
                     help="on-demand, alarm, scheduled (default) or backfill")
    add.add_argument("--retries", type=int, default=2)
    add.add_argument("--retry-delay", default="60s", help="first retry delay (doubles)")
    add.add_argument("--backoff", type=float, default=2.0)
    add.add_argument("--deadline", help="how long after its due time a job may start "
                     "(default: until the next run)")
    add.add_argument("--start", help="first run not before this ISO-8601 time")
    add.add_argument("--end", help="no runs after this ISO-8601 time")
    add.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                     help="kind options: horizon=7d, interval=15m, lower=10s, upper=5m, "
                     "on_register=yes, timeout=20")
    add.add_argument("--disabled", action="store_true")
    lst = tsub.add_parser("list", help="list the tasks")
    lst.add_argument("--format", **fmt)
    show = tsub.add_parser("show", help="a task and its last runs")
    show.add_argument("name")
    show.add_argument("--runs", type=int, default=10)
    now = tsub.add_parser("run-now", help="run a task now (on-demand priority)")
    now.add_argument("name")
    now.add_argument("--meter", action="append", help="only this meter (repeatable)")
    for name, text in (("enable", "enable a task"), ("disable", "disable a task"),
                       ("delete", "delete a task (its jobs stay)")):
        tsub.add_parser(name, help=text).add_argument("name")
    tasks.set_defaults(run=cmd_tasks)

    rec = sub.add_parser("recollect", help="read a meter's missing load-profile intervals again")
    rec.add_argument("meter")
    rec.add_argument("--from", dest="from_time", required=True, help="ISO-8601")
    rec.add_argument("--to", dest="to_time", required=True, help="ISO-8601")
    rec.add_argument("--interval", help="profile period (default the meter's or 15m)")
    rec.set_defaults(run=cmd_recollect)

    jobs = sub.add_parser("jobs", help="collection jobs and their outcomes")
    jobs.add_argument("--meter")
    jobs.add_argument("--task")
    jobs.add_argument("--status", choices=("pending", "leased", "running", "done", "failed",
                                           "missed"))
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--format", **fmt)
    jobs.set_defaults(run=cmd_jobs)

    stats = sub.add_parser("stats", help="communication statistics")
    stats.add_argument("--days", type=int, default=1, help="days back, today included")
    stats.add_argument("--by", choices=SCOPES, help="only this scope")
    stats.add_argument("--runs", action="store_true", help="per task run instead of per day")
    stats.add_argument("--task", help="with --runs: only this task")
    stats.add_argument("--limit", type=int, default=20)
    stats.add_argument("--format", **fmt)
    stats.set_defaults(run=cmd_stats)

    command = sub.add_parser("command", help="meter commands with approval and audit trail")
    csub = command.add_subparsers(dest="command_action", required=True,
                                  parser_class=parser_class)
    req = csub.add_parser("request", help="ask for a command")
    req.add_argument("meter")
    req.add_argument("action", choices=COMMANDS)
    req.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="image=NAME identifier=NAME (firmware-upgrade; NAME "
                     "of an image in [collect] firmware_dir, not a path), "
                     "destination=HOST:PORT (push-setup), register=OBIS (demand-reset)")
    req.add_argument("--attempts", type=int, default=cmd.DEFAULT_ATTEMPTS)
    req.add_argument("--by", help="who asks: only your own identity (your OS user, or "
                     "the name of the API token in FEP_TOKEN) is accepted")
    for name in ("approve", "reject"):
        p = csub.add_parser(name, help=f"{name} a requested command")
        p.add_argument("id", type=int)
        p.add_argument("--by", help=f"who {name}s: only your own identity (OS user or "
                       "FEP_TOKEN's token name)")
        if name == "reject":
            p.add_argument("--reason", default="rejected")
    lst = csub.add_parser("list", help="list commands")
    lst.add_argument("--meter")
    lst.add_argument("--status")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--format", **fmt)
    csub.add_parser("show", help="a command and its audit trail").add_argument("id", type=int)
    command.set_defaults(run=cmd_command)

    plans = sub.add_parser("plans", help="control plans: a command over a group of meters, "
                           "approved by someone else, run at a rate")
    psub = plans.add_subparsers(dest="plans_command", required=True, parser_class=parser_class)
    make = psub.add_parser("create", help="make a draft plan")
    make.add_argument("--name", help="what the plan is for (default: action and target)")
    make.add_argument("--action", required=True, choices=COMMANDS)
    make.add_argument("--target", required=True,
                      help="all, meters:ID,..., group:NAME (tag:NAME), protocol:NAME, "
                      "route:PREFIX, concentrator:ID, file:PATH (one meter id a line)")
    make.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                      help="the command's parameters")
    make.add_argument("--rate", type=float, default=60.0, help="meters a minute (default 60)")
    make.add_argument("--line-rate", type=float,
                      help="meters a minute on each line (bus, modem, port)")
    make.add_argument("--attempts", type=int, default=3, help="attempts per meter")
    make.add_argument("--retry-delay", default="30s", help="between attempts (default 30s)")
    make.add_argument("--start", help="ISO-8601 time it starts by itself once approved")
    make.add_argument("--deadline", help="no command starts after it: ISO-8601 time, or a "
                      "duration after the start (2h)")
    make.add_argument("--by", help="only your own identity (OS user or FEP_TOKEN's name)")
    for name, text in (("submit", "submit a draft plan for approval"),
                       ("approve", "approve a plan someone else submitted"),
                       ("reject", "reject a plan someone else submitted"),
                       ("start", "start an approved plan (or resume a paused one)"),
                       ("pause", "pause a running plan: commands not yet started are "
                        "withheld"),
                       ("cancel", "cancel a plan: the meters not yet done are skipped")):
        step = psub.add_parser(name, help=text)
        step.add_argument("id", type=int)
        step.add_argument("--by", help="only your own identity (OS user or FEP_TOKEN's name)")
        if name in ("reject", "cancel"):
            step.add_argument("--reason", default="")
    plst = psub.add_parser("list", help="list plans with their outcome counts")
    plst.add_argument("--status")
    plst.add_argument("--limit", type=int, default=50)
    plst.add_argument("--format", **fmt)
    pshow = psub.add_parser("show", help="a plan, its failed meters and its audit trail")
    pshow.add_argument("id", type=int)
    pshow.add_argument("--meters", action="store_true", help="every meter's outcome")
    plans.set_defaults(run=cmd_plans)
