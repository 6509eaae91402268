"""`fep tasks`, `fep recollect`, `fep jobs`, `fep stats` and `fep command` run as real
processes against a SQLite store."""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect.jobstore import job_store
from fep.collect.tasks import Job, Outcome
from fep.model import Meter
from fep.store import open_store
from tests.inprocess import fep_main as run_fep
from tests.operator.helpers import (
    OPERATOR_TOKEN,
    SECOND_OPERATOR_TOKEN,
    VIEWER_TOKEN,
    write_tokens,
)

NOW = 1_700_000_000.0


class CollectCommandLineTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.path = Path(self.mktemp()).resolve().with_suffix(".sqlite")
        self.db = f"sqlite:{self.path}"
        store = open_store(self.db, reactor)
        await store.open()
        await store.add_meters([
            Meter("m1", "dlms", "tcp:host=10.0.0.1:port=4059", metadata={"group": "north"}),
            Meter("m2", "dlms", "tcp:host=10.0.0.2:port=4059"),
        ])
        await store.close()

    def fep(self, *args: str, code: int = 0) -> str:
        result = run_fep("--db", self.db, *args)
        self.assertEqual(result.returncode, code, result.stderr)
        return result.stdout if code == 0 else result.stderr

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def test_tasks_add_list_show_run_now_disable(self) -> None:
        out = self.fep("tasks", "add", "lp-north", "--kind", "load-profile", "--schedule",
                       "every 15m", "--target", "group:north", "--priority", "backfill",
                       "-o", "horizon=2d", "--retries", "3")
        self.assertIn("task lp-north saved; next run", out)
        (listed,) = [json.loads(line) for line in
                     self.fep("tasks", "list", "--format", "json").splitlines()]
        self.assertEqual((listed["name"], listed["kind"], listed["target"], listed["priority"],
                          listed["retries"], listed["enabled"]),
                         ("lp-north", "load-profile", "group:north", "backfill", 3, "yes"))
        self.assertIn("horizon=2d", self.fep("tasks", "show", "lp-north"))
        self.assertIn("1 jobs to run now", self.fep("tasks", "run-now", "lp-north"))
        self.assertEqual(self.rows("SELECT meter, kind, priority, status FROM jobs"),
                         [("m1", "load-profile", 0, "pending")])
        jobs = self.fep("jobs", "--format", "json").splitlines()
        self.assertEqual(json.loads(jobs[0])["meter"], "m1")
        self.fep("tasks", "disable", "lp-north")
        self.assertEqual(self.rows("SELECT enabled FROM tasks"), [(0,)])
        self.assertIn("no task 'nope'", self.fep("tasks", "run-now", "nope", code=2))

    def test_a_bad_schedule_is_a_usage_error(self) -> None:
        err = self.fep("tasks", "add", "x", "--kind", "registers", "--schedule", "sometimes",
                       code=2)
        self.assertIn("schedule 'sometimes'", err)

    def test_recollect_queues_an_on_demand_profile_job(self) -> None:
        self.fep("recollect", "m2", "--from", "2024-03-01T00:00Z", "--to", "2024-03-02T00:00Z")
        ((kind, priority, params),) = self.rows("SELECT kind, priority, params FROM jobs")
        self.assertEqual((kind, priority), ("load-profile", 0))
        self.assertEqual(json.loads(params), {"since": "2024-03-01T00:00:00+00:00",
                                              "until": "2024-03-02T00:00:00+00:00"})
        self.assertIn("no meter 'm9'", self.fep("recollect", "m9", "--from", "2024-03-01",
                                                 "--to", "2024-03-02", code=2))

    def test_a_command_needs_someone_else_to_approve_it(self) -> None:
        me = pwd.getpwuid(os.getuid()).pw_name
        tokens = self.path.with_name("tokens")
        write_tokens(tokens)
        tokens.chmod(0o600)
        config = self.path.with_name("fep.ini")
        config.write_text(f"[fep]\nnode = test\ndata_dir = {self.path.parent}\n"
                          f"[store]\nurl = {self.db}\n[http]\ntokens_file = {tokens}\n")

        def as_token(token: str, *args: str, code: int = 0) -> str:
            result = run_fep("--config", str(config), *args, env_extra={"FEP_TOKEN": token})
            self.assertEqual(result.returncode, code, result.stderr)
            return result.stdout if code == 0 else result.stderr

        # The requester is the invoking OS user.
        out = self.fep("command", "request", "m1", "disconnect", "-p", "reason=unpaid")
        self.assertIn("command 1: disconnect for m1 awaits approval", out)
        self.assertEqual(self.rows("SELECT count(*) FROM jobs"), [(0,)])
        err = self.fep("command", "approve", "1", code=2)
        self.assertIn("someone else must approve it", err)
        # --by cannot name someone else, and $USER/$LOGNAME do not change who you are.
        err = self.fep("command", "approve", "1", "--by", "bob", code=2)
        self.assertIn(f"you are {me}", err)
        moved = run_fep("--db", self.db, "command", "approve", "1",
                        env_extra={"USER": "bob", "LOGNAME": "bob"})
        self.assertEqual(moved.returncode, 2)
        self.assertIn("someone else must approve it", moved.stderr)
        self.assertEqual(self.rows("SELECT status FROM commands"), [("requested",)])
        # An API token is an identity too: a viewer's may not approve, a wrong one is refused,
        # an operator's approves under the token's name.
        self.assertIn("needs the operator role",
                      as_token(VIEWER_TOKEN, "command", "approve", "1", code=2))
        self.assertIn("not a valid API token",
                      as_token("x" * 24, "command", "approve", "1", code=2))
        self.assertIn("approved by cli:bob; queued as job 1",
                      as_token(SECOND_OPERATOR_TOKEN, "command", "approve", "1", "--by", "bob"))
        self.assertEqual(self.rows("SELECT kind, command, priority FROM jobs"),
                         [("command", 1, 0)])
        shown = self.fep("command", "show", "1")
        self.assertRegex(shown, rf"cli:{me}\s+requested")
        self.assertRegex(shown, r"cli:bob\s+approved")
        # Not every command needs approval ([collect] approval).
        self.assertIn("queued", self.fep("command", "request", "m2", "demand-reset", "--by",
                                         me))
        as_token(OPERATOR_TOKEN, "command", "request", "m2", "reconnect")
        # alice's own token cannot approve what alice asked for through the CLI.
        self.assertIn("someone else must approve it",
                      as_token(OPERATOR_TOKEN, "command", "approve", "3", code=2))
        self.assertIn(f"rejected by cli:{me}",
                      self.fep("command", "reject", "3", "--reason", "no"))
        listed = [json.loads(line) for line in
                  self.fep("command", "list", "--format", "json").splitlines()]
        self.assertEqual([(c["id"], c["status"]) for c in listed],
                         [(3, "rejected"), (2, "queued"), (1, "queued")])

    async def test_stats_per_day_and_per_run(self) -> None:
        store = open_store(self.db, reactor)
        await store.open()
        jobs = job_store(store)
        import time

        now = time.time()
        await jobs.add_jobs([
            Job(id=0, task="regs", meter=m, kind="registers", route=f"tcp:host={m}:port=1",
                resource=f"tcp:host={m}:port=1", due=now, run_at=now)
            for m in ("m1", "m2")
        ], now)
        for job in await jobs.lease("n", now, now + 60, 5, {}, {}):
            started = await jobs.start(job.id, "n", now, now + 60)
            ok = job.meter == "m1"
            await jobs.finish(started, "n", "done" if ok else "failed",
                              Outcome(ok, error=None if ok else "silence"), now, None)
        await store.close()
        rows = [json.loads(line) for line in
                self.fep("stats", "--by", "channel", "--format", "json").splitlines()]
        self.assertEqual([(r["key"], r["jobs"], r["first_pass"], r["failed"]) for r in rows],
                         [("tcp", 2, "50.0%", 1)])
        table = self.fep("stats")
        self.assertIn("m2", table)
        runs = [json.loads(line) for line in
                self.fep("stats", "--runs", "--format", "json").splitlines()]
        self.assertEqual([(r["task"], r["jobs"], r["success"]) for r in runs],
                         [("regs", 2, "50.0%")])
