"""Control plans through every door: the API (/api/v1/plans), the console's named commands
and `fep plans` (a real process on the same store). Whatever door, the operator who
submitted a plan cannot approve or reject it; a viewer can look but not act."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.collect.limits import ResourcePolicy
from fep.collect.plans import EnginePlans, PlanError
from fep.collect.planstore import PlanStore
from fep.model import Meter
from fep.operator.commands import CommandRefused
from fep.operator.http import site
from fep.operator.manhole import OperatorCommands
from fep.operator.tokens import TokenFile
from fep.operator.webguard import AuthFailures
from tests.inprocess import fep_main as run_fep
from tests.operator.helpers import (
    OPERATOR_TOKEN,
    SECOND_OPERATOR_TOKEN,
    TOKENS,
    VIEWER_TOKEN,
    http,
    make_context,
    write_tokens,
)

METERS = [Meter(f"d{n}", "dlms", f"tcp:host=127.0.0.1:port=1@1/{17 + n}",
                metadata={"group": "unpaid"}) for n in range(4)] + [
    Meter("iec-1", "iec62056-21", "tcp:host=127.0.0.1:port=2", metadata={"group": "unpaid"})]


class PlanDoorTests(unittest.TestCase):
    timeout = 120

    async def setUp(self) -> None:
        self.ctx = await make_context(self, METERS)
        self.ctx.plans = EnginePlans(PlanStore(self.ctx.store), self.ctx.directory,
                                     ResourcePolicy(), None, reactor)
        port = reactor.listenTCP(0, site(self.ctx, TokenFile.parse(TOKENS),
                                         failures=AuthFailures(reactor.seconds, limit=0)),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}/api/v1"

    async def api(self, path: str, token: str = OPERATOR_TOKEN, body: Any = None,
                  status: int = 200) -> Any:
        r = await http(f"{self.base}/{path}", token=token,
                       method=b"GET" if body is None else b"POST",
                       body=None if body is None else json.dumps(body).encode())
        self.assertEqual(r.status, status, r.body)
        return r.json()

    def console(self, operator: str, role: str = "operator") -> OperatorCommands:
        return OperatorCommands(self.ctx, operator, "SHA256:x", role)

    async def test_api(self) -> None:
        spec = {"name": "unpaid", "action": "disconnect", "target": "group:unpaid",
                "rate": 120, "line_rate": 30, "attempts": 2, "retry_delay": 5,
                "deadline": "2h"}
        refused = await self.api("plans", VIEWER_TOKEN, spec, status=403)
        self.assertIn("operator role", refused["error"])
        made = await self.api("plans", body=spec)
        self.assertEqual((made["status"], made["meters"], made["created_by"]),
                         ("draft", 5, "api:alice"))
        self.assertEqual(made["counts"]["not-supported"], 1)  # the IEC meter has no relay
        self.assertEqual(made["deadline_in"], 7200)
        pid = made["id"]
        await self.api(f"plans/{pid}/approve", OPERATOR_TOKEN, {}, status=409)  # a draft
        await self.api(f"plans/{pid}/submit", body={})
        own = await self.api(f"plans/{pid}/approve", OPERATOR_TOKEN, {}, status=403)
        self.assertIn("someone else must approve it", own["error"])
        own = await self.api(f"plans/{pid}/reject", OPERATOR_TOKEN, {}, status=403)
        self.assertIn("someone else must reject it", own["error"])
        await self.api(f"plans/{pid}/approve", VIEWER_TOKEN, {}, status=403)
        approved = await self.api(f"plans/{pid}/approve", SECOND_OPERATOR_TOKEN, {})
        self.assertEqual((approved["status"], approved["approved_by"]), ("approved", "api:bob"))
        started = await self.api(f"plans/{pid}/start", body={})
        self.assertEqual(started["status"], "running")
        paused = await self.api(f"plans/{pid}/pause", SECOND_OPERATOR_TOKEN, {})
        self.assertEqual(paused["status"], "paused")
        cancelled = await self.api(f"plans/{pid}/cancel", body={"reason": "wrong day"})
        self.assertEqual((cancelled["status"], cancelled["reason"]), ("cancelled", "wrong day"))
        shown = await self.api(f"plans/{pid}", VIEWER_TOKEN)
        self.assertEqual(shown["counts"], {"pending": 0, "released": 0, "done": 0, "failed": 0,
                                           "not-supported": 1, "skipped": 4})
        self.assertEqual(shown["progress"], 1.0)
        self.assertEqual([(a["who"], a["action"]) for a in shown["audit"]],
                         [("api:alice", "created"), ("api:alice", "submitted"),
                          ("api:bob", "approved"), ("api:alice", "started"),
                          ("api:bob", "paused"), ("api:alice", "cancelled")])
        self.assertEqual({o["meter"]: o["state"] for o in shown["outcomes"]}["iec-1"],
                         "not-supported")
        listed = await self.api("plans?status=cancelled", VIEWER_TOKEN)
        self.assertEqual([p["id"] for p in listed["plans"]], [pid])
        stats = await self.api("stats", VIEWER_TOKEN)
        self.assertEqual(stats["plans"][0]["id"], pid)
        # Refusals name what is wrong.
        for body, why in (({"action": "explode", "target": "all"}, "unknown command"),
                          ({"action": "disconnect"}, "target"),
                          ({"action": "disconnect", "target": "file:/etc/passwd"}, "file"),
                          ({"action": "disconnect", "meters": ["d0", "zz"]}, "zz"),
                          ({"action": "disconnect", "target": "all", "rate": 0}, "rate"),
                          ({"action": "firmware-upgrade", "target": "all"}, "per meter")):
            err = await self.api("plans", body=body, status=400)
            self.assertIn(why, err["error"])
        await self.api("plans/99", status=404)
        await self.api("plans/99/start", body={}, status=404)
        await self.api(f"plans/{pid}/explode", body={}, status=404)

    async def test_console(self) -> None:
        alice, bob = self.console("alice"), self.console("bob")
        vic = self.console("vic", "viewer")
        self.assertFalse(vic.may("plan_create"))
        self.assertTrue(vic.may("plans"))
        with self.assertRaises(CommandRefused):
            await vic.plan_create("disconnect", "group:unpaid")
        made = await alice.plan_create("disconnect", "meters:d0,d1", rate=30,
                                       params={"reason": "unpaid"})
        self.assertIn("draft", repr(made))
        pid = made[0]["id"]
        await alice.plan_submit(pid)
        with self.assertRaises(PlanError) as caught:
            await alice.plan_approve(pid)
        self.assertIn("someone else must approve it", str(caught.exception))
        with self.assertRaises(CommandRefused):
            await vic.plan_approve(pid)
        approved = await bob.plan_approve(pid)
        self.assertEqual(approved[0]["approved_by"], "console:bob")
        shown = repr(await vic.plan(pid))
        self.assertIn("[....................] 0/2", shown)
        self.assertRegex(shown, r"console:bob\s+approved 2 meters")
        listed = await vic.plans()
        self.assertEqual([row["id"] for row in listed], [pid])

    async def test_the_same_operator_through_another_door(self) -> None:
        """alice submits through the API; her console key and her token on the command
        line cannot approve; bob's token on the command line can."""
        made = await self.api("plans", body={"action": "disconnect", "target": "meters:d0"})
        pid = made["id"]
        await self.api(f"plans/{pid}/submit", body={})
        with self.assertRaises(PlanError):
            await self.console("alice").plan_approve(pid)
        tokens = Path(self.mktemp()).resolve()
        write_tokens(tokens)
        config = tokens.with_name("fep.ini")
        db = self.ctx.store.path  # type: ignore[attr-defined]
        config.write_text(f"[fep]\nnode = t\ndata_dir = {tokens.parent}\n[store]\n"
                          f"url = sqlite:{db}\n[http]\ntokens_file = {tokens}\n")

        def fep(token: str | None, *args: str, code: int = 0) -> str:
            env = {"FEP_TOKEN": token} if token else {}
            result = run_fep("--config", str(config), *args, env_extra=env)
            self.assertEqual(result.returncode, code, result.stderr)
            return result.stdout if code == 0 else result.stderr

        self.assertIn("someone else must approve it",
                      fep(OPERATOR_TOKEN, "plans", "approve", str(pid), code=2))
        self.assertIn("needs the operator role",
                      fep(VIEWER_TOKEN, "plans", "approve", str(pid), code=2))
        self.assertIn(f"plan {pid} approved (approve by cli:bob)",
                      fep(SECOND_OPERATOR_TOKEN, "plans", "approve", str(pid)))

    async def test_cli(self) -> None:
        me = pwd.getpwuid(os.getuid()).pw_name
        db = self.ctx.store.path  # type: ignore[attr-defined]
        ids = Path(self.mktemp())
        ids.write_text("d2\n# the next one\nd0\n")

        def fep(*args: str, code: int = 0, env: dict[str, str] | None = None) -> str:
            result = run_fep("--db", f"sqlite:{db}", *args, env_extra=env or {})
            self.assertEqual(result.returncode, code, result.stderr)
            return result.stdout if code == 0 else result.stderr

        out = fep("plans", "create", "--action", "disconnect", "--target", f"file:{ids}",
                  "--rate", "600", "--line-rate", "60", "--attempts", "2",
                  "--retry-delay", "10s", "--deadline", "1h", "--name", "arrears")
        self.assertIn("plan 1: disconnect on 2 meters, draft", out)
        self.assertIn("plan 1 submitted", fep("plans", "submit", "1"))
        err = fep("plans", "approve", "1", code=2)
        self.assertIn("someone else must approve it", err)
        err = fep("plans", "approve", "1", "--by", "bob", code=2)
        self.assertIn(f"you are {me}", err)
        moved = fep("plans", "approve", "1", code=2, env={"USER": "bob", "LOGNAME": "bob"})
        self.assertIn("someone else must approve it", moved)
        self.assertIn("is submitted: it cannot start", fep("plans", "start", "1", code=2))
        # Another operator (the API's bob) approves; then the CLI user starts it.
        await self.api("plans/1/approve", SECOND_OPERATOR_TOKEN, {})
        self.assertIn("plan 1 running", fep("plans", "start", "1"))
        self.assertIn("plan 1 paused", fep("plans", "pause", "1"))
        self.assertIn("plan 1 cancelled", fep("plans", "cancel", "1", "--reason", "later"))
        (row,) = [json.loads(line) for line in
                  fep("plans", "list", "--format", "json").splitlines()]
        self.assertEqual((row["id"], row["status"], row["meters"], row["skipped"],
                          row["approved_by"]), (1, "cancelled", 2, 2, "api:bob"))
        shown = fep("plans", "show", "1", "--meters")
        self.assertRegex(shown, rf"cli:{me}\s+created")
        self.assertRegex(shown, r"api:bob\s+approved")
        self.assertIn("cancelled by cli:" + me, shown)
        self.assertIn("no plan 7", fep("plans", "show", "7", code=2))
        self.assertIn("unknown meter(s) zz",
                      fep("plans", "create", "--action", "disconnect", "--target", "meters:zz",
                          code=2))
