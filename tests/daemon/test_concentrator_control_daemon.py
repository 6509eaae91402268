"""Issue 18's control through the running daemon (`twistd -n fep`) and its HTTP API: a
DL/T 645 meter behind a simulated concentrator with ``gw3761_control = afn05`` is
disconnected by the concentrator's AFN 05 remote control of its point (asked by one
operator, approved by another), and the concentrator's data area is reset (AFN 01 F2,
always approved) — the daemon's channel stack carries the remote control on the forwarding
route's connection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from fep.model import Meter
from fep.sim.concentrator import ConcentratorFactory, make_concentrator
from tests.collect.harness import listen
from tests.daemon.harness import (
    Daemon,
    add_meters,
    free_port,
    sqlite_rows,
    wait_for,
    write_config,
)
from tests.operator.helpers import OPERATOR_TOKEN, SECOND_OPERATOR_TOKEN, http, write_tokens


class ConcentratorControlDaemonTests(unittest.TestCase):
    timeout = 240

    async def test_remote_control_and_reset_through_the_api(self) -> None:
        sim = make_concentrator(3)
        meter = sim.meters[1]
        port = listen(self, ConcentratorFactory(sim, reactor))
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        await add_meters(f"sqlite:{db}", [
            Meter("DCU1", "gw3761", f"tcp:host=127.0.0.1:port={port}", address="4403:0004"),
            Meter("M2", "dlt645", "gw3761:DCU1:port=31", address=meter.address,
                  metadata={"concentrator": "DCU1", "point": "2", "gw3761_control": "afn05"}),
        ])
        write_tokens(workdir / "tokens")
        http_port = free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=3600, default_task=False,
            extra=f"[http]\nport = {http_port}\ntokens_file = {workdir / 'tokens'}\n")
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.ready(timeout=120)
        base = f"http://127.0.0.1:{http_port}/api/v1"

        async def post(path: str, token: str, body: object) -> dict[str, Any]:
            r = await http(f"{base}/{path}", token=token, method=b"POST",
                           body=json.dumps(body).encode())
            self.assertEqual(r.status, 200, r.body)
            answer: dict[str, Any] = r.json()
            return answer

        async def ended(command_id: int) -> tuple[str, str]:
            row: list[tuple[Any, ...]] = []

            async def final() -> bool:
                row[:] = sqlite_rows(db, f"SELECT status, outcome FROM commands WHERE id = "
                                         f"{command_id} AND status IN ('done', 'failed')")
                return bool(row)

            await wait_for(final, 90, f"command {command_id} to end")
            return str(row[0][0]), str(row[0][1])

        asked = await post("meters/M2/commands", OPERATOR_TOKEN,
                           {"action": "disconnect", "params": {}})
        if asked["status"] == "requested":
            await post(f"commands/{asked['id']}/approve", SECOND_OPERATOR_TOKEN, {})
        status, outcome = await ended(int(asked["id"]))
        self.assertEqual(status, "done", outcome)
        self.assertIn("request=05:F1 remote trip", outcome)
        self.assertEqual(sim.trips, {2: True})
        self.assertFalse(meter.relay_closed)
        self.assertEqual(sim.forwarded, 0)

        asked = await post("meters/DCU1/commands", OPERATOR_TOKEN,
                           {"action": "terminal-reset", "params": {"kind": "data"}})
        self.assertEqual(asked["status"], "requested")  # always approved
        r = await http(f"{base}/meters/DCU1/commands", token=OPERATOR_TOKEN, method=b"POST",
                       body=b'{"action": "terminal-reset", "params": {"kind": "all"}}')
        self.assertEqual(r.status, 400, r.body)
        self.assertEqual(sim.resets, [])
        await post(f"commands/{asked['id']}/approve", SECOND_OPERATOR_TOKEN, {})
        status, outcome = await ended(int(asked["id"]))
        self.assertEqual((status, sim.resets), ("done", [2]), outcome)
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
