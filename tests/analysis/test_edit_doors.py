"""Edits through every door: `fep vee edit|edits|approve|reject` (the invoking OS user or the
API token in FEP_TOKEN), the API (the token's name) and the console (the key's operator),
each with four eyes by operator identity when ``[analysis] edit_approval``.

Meter A: 96 intervals of 90 Wh on 2026-12-01 except 01:15, which is 150."""

from __future__ import annotations

import json
import os
import pwd
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.analysis.edits import Editor
from fep.analysis.settings import VeeSettings
from fep.model import IntervalBlock, Meter, ObisCode
from fep.operator.http import site
from fep.operator.manhole import NAMES, OperatorCommands
from fep.operator.tokens import TokenFile
from fep.store.sqlite import SqliteStore
from tests.inprocess import fep_main
from tests.operator.helpers import (
    OPERATOR_TOKEN,
    SECOND_OPERATOR_TOKEN,
    TOKENS,
    VIEWER_TOKEN,
    http,
    make_context,
    write_tokens,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)
Q15 = timedelta(minutes=15)
CHANNEL = ObisCode(1, 0, 1, 29, 0)


def day_of_a() -> IntervalBlock:
    values = [D(90)] * 96
    values[5] = D(150)
    return IntervalBlock("A", CHANNEL, T0, Q15, tuple(values))


class CliEditTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.path = Path(self.mktemp() + ".sqlite").resolve()
        self.db = f"sqlite:{self.path}"
        store = SqliteStore(str(self.path), reactor)
        await store.open()
        await store.write([day_of_a()])
        await store.close()
        tokens = write_tokens(self.path.with_name("tokens"))
        self.config = self.path.with_name("fep.ini")
        self.config.write_text(
            f"[fep]\nnode = t\ndata_dir = {self.path.parent}\n[store]\nurl = {self.db}\n"
            f"[http]\ntokens_file = {tokens}\n[analysis]\nedit_approval = yes\n")

    def fep(self, *args: str, code: int = 0, token: str | None = None) -> str:
        env = {"FEP_TOKEN": token} if token else None
        result = fep_main(*args, env_extra=env)
        self.assertEqual(result.returncode, code, result.stderr)
        return result.stdout if code == 0 else result.stderr

    def test_replace_without_approval(self) -> None:
        """Without --config no approval: applied at once, by the invoking OS user."""
        me = pwd.getpwuid(os.getuid()).pw_name
        (row,) = [json.loads(line) for line in self.fep(
            "--db", self.db, "vee", "edit", "--meter", "A", "--start", "2026-12-01T01:15Z",
            "--value", "90", "--reason", "spike", "--format", "json").splitlines()]
        self.assertEqual((row["status"], row["requested_by"], row["decided_by"],
                          str(row["before"]), str(row["after"])),
                         ("applied", f"cli:{me}", f"cli:{me}", "150", "90"))
        series = [json.loads(line) for line in self.fep(
            "--db", self.db, "vee", "series", "--meter", "A", "--day", "2026-12-01",
            "--format", "json").splitlines()]
        self.assertEqual((str(series[5]["value"]), series[5]["method"]), ("90", "edited"))
        self.assertIn("give --value V to replace, or --accept", self.fep(
            "--db", self.db, "vee", "edit", "--meter", "A", "--start", "2026-12-01T01:15Z",
            "--reason", "x", code=2))

    def test_four_eyes_by_os_user_and_token(self) -> None:
        """With the config's edit_approval: the OS user's edit waits; the same OS user
        cannot approve it; bob (FEP_TOKEN) can; --by cannot name someone else."""
        me = pwd.getpwuid(os.getuid()).pw_name
        out = self.fep("--config", str(self.config), "vee", "edit", "--meter", "A",
                       "--start", "2026-12-01T01:15Z", "--accept", "--reason", "a heater",
                       "--format", "json")
        self.assertEqual(json.loads(out)["status"], "pending")
        err = self.fep("--config", str(self.config), "vee", "approve", "1", code=2)
        self.assertIn("another operator must approve or reject it", err)
        err = self.fep("--config", str(self.config), "vee", "approve", "1", "--by", "bob",
                       code=2)
        self.assertIn(f"you are {me}", err)
        out = self.fep("--config", str(self.config), "vee", "approve", "1", "--format",
                       "json", token=SECOND_OPERATOR_TOKEN)
        self.assertEqual((json.loads(out)["status"], json.loads(out)["decided_by"]),
                         ("applied", "cli:bob"))
        err = self.fep("--config", str(self.config), "vee", "reject", "1", "--reason", "x",
                       code=2, token=OPERATOR_TOKEN)
        self.assertIn("edit 1 is applied, not pending", err)
        err = self.fep("--config", str(self.config), "vee", "edit", "--meter", "A",
                       "--start", "2026-12-01T01:30Z", "--accept", "--reason", "x", code=2,
                       token=VIEWER_TOKEN)
        self.assertIn("the token of watch is a viewer", err)
        listed = self.fep("--config", str(self.config), "vee", "edits", "--status", "applied")
        self.assertIn("a heater", listed)


class ApiAndConsoleEditTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.ctx = await make_context(self, [Meter("A", "dlms", "tcp:127.0.0.1:1")])
        await self.ctx.store.write([day_of_a()])
        self.ctx.edits = Editor(self.ctx.store, VeeSettings(), approval=True)
        port = reactor.listenTCP(0, site(self.ctx, TokenFile.parse(TOKENS)),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}/api/v1/"

    async def post(self, path: str, token: str, body: dict[str, Any]) -> Any:
        return await http(self.base + path, method=b"POST", token=token,
                          body=json.dumps(body).encode())

    async def test_through_the_api(self) -> None:
        """alice asks (pending), alice cannot approve (403), a viewer may not (403), bob
        approves; approving again is 409; the list shows it applied."""
        r = await self.post("meters/A/edits", OPERATOR_TOKEN,
                            {"start": "2026-12-01T01:15:00Z", "value": "90",
                             "reason": "spike"})
        self.assertEqual(r.status, 200, r.body)
        made = r.json()
        self.assertEqual((made["status"], made["requested_by"], made["before"], made["after"]),
                         ("pending", "api:alice", "150", "90"))
        self.assertEqual((await self.post(f"edits/{made['id']}/approve", OPERATOR_TOKEN,
                                          {})).status, 403)
        self.assertEqual((await self.post("meters/A/edits", VIEWER_TOKEN,
                                          {"start": "2026-12-01T01:15:00Z", "accept": True,
                                           "reason": "x"})).status, 403)
        ok = await self.post(f"edits/{made['id']}/approve", SECOND_OPERATOR_TOKEN, {})
        self.assertEqual((ok.status, ok.json()["decided_by"]), (200, "api:bob"))
        self.assertEqual((await self.post(f"edits/{made['id']}/reject", SECOND_OPERATOR_TOKEN,
                                          {"reason": "x"})).status, 409)
        self.assertEqual((await self.post("edits/99/approve", SECOND_OPERATOR_TOKEN,
                                          {})).status, 404)
        self.assertEqual((await self.post("edits/x/approve", SECOND_OPERATOR_TOKEN,
                                          {})).status, 404)
        listed = (await http(self.base + "edits?meter=A&status=applied",
                             token=VIEWER_TOKEN)).json()
        self.assertEqual([e["id"] for e in listed["edits"]], [made["id"]])
        for body in ({"value": "1", "reason": "x"},
                     {"start": "2026-12-01T01:16:00Z", "value": "1", "reason": "x"},
                     {"start": "2026-12-01T01:15:00Z", "value": "lots", "reason": "x"}):
            self.assertEqual((await self.post("meters/A/edits", OPERATOR_TOKEN, body)).status,
                             400, body)

    async def test_through_the_console(self) -> None:
        """The console's identity is the key's operator: alice's edit, alice (through any
        door) cannot approve it, bob's console can; a viewer's console lacks edit()."""
        alice = OperatorCommands(self.ctx, "alice", "SHA256:a", "operator")
        bob = OperatorCommands(self.ctx, "bob", "SHA256:b", "operator")
        viewer = OperatorCommands(self.ctx, "watch", "SHA256:w", "viewer")
        self.assertTrue({"edits", "edit", "edit_approve", "edit_reject"} <= set(NAMES))
        self.assertFalse(viewer.may("edit"))
        self.assertTrue(viewer.may("edits"))
        made = await alice.edit("A", "2026-12-01T01:15Z", accept=True, reason="heater")
        edit_id = made.rows[0]["id"]
        self.assertEqual((made.rows[0]["status"], made.rows[0]["requested_by"]),
                         ("pending", "console:alice"))
        from fep.collect.commands import SameOperator

        with self.assertRaises(SameOperator):
            await alice.edit_approve(edit_id)
        done = await bob.edit_reject(edit_id, "no evidence")
        self.assertEqual((done.rows[0]["status"], done.rows[0]["decided_by"],
                          done.rows[0]["note"]), ("rejected", "console:bob", "no evidence"))
        listed = await viewer.edits(meter="A")
        self.assertEqual(len(listed), 1)
        self.assertIn("edit_approve()", [r["command"] for r in bob.help()])
