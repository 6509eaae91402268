"""Acceptance (issue 17, remote configuration of GPRS terminals): the running daemon
(`twistd -n fep`, two GPRS listeners, an SMS modem on a pty) changes a simulated terminal's
master-station port by SMS and then over its own TCP session (AT pass-through), each time a
`terminal-config` command asked and approved by two operators (command line, API); each time
the terminal reconnects to the new listener and its registration is seen there (`fep
sessions`). With a wrong password the terminal refuses, by SMS and by TCP, and the command is
recorded as failed with the terminal's answer. The password is a meter secret (`fep keys
import`): it is in neither the store's file nor the daemon's logs."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from fep.channels.terminals import shipped_profiles
from fep.model import Meter
from fep.sim.gprs_modem import ModemSpec, SimulatedGprsModem
from fep.sim.gsm_modem import GsmModemEmulator, GsmNetwork, serve_pty
from fep.sim.terminal import SimulatedTerminal
from tests.channels.test_serialport import socat_pty_pair
from tests.daemon import harness
from tests.daemon.harness import Daemon, free_port, wait_for, write_config
from tests.inprocess import fep_main
from tests.operator.helpers import OPERATOR_TOKEN, SECOND_OPERATOR_TOKEN, http, write_tokens

IMEI = "356938035649001"
MODEM = "+491700000001"
TERMINAL = "+491510000077"
PASSWORD = "Pw7319x"


class TerminalConfigDaemonTests(unittest.TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.workdir = Path(self.mktemp()).resolve()
        self.workdir.mkdir(parents=True)
        self.db = self.workdir / "fep.sqlite"
        short = Path(tempfile.mkdtemp(prefix="fep-"))
        self.addCleanup(shutil.rmtree, short, True)
        self.socket = short / "ctl" / "fep.sock"

    def fep(self, *args: str, token: str | None = None) -> tuple[int, str, str]:
        env = {"FEP_TOKEN": token} if token else None
        done = fep_main("--config", str(self.config), *args, env_extra=env)
        return done.returncode, done.stdout, done.stderr

    def command(self, **params: str) -> int:
        """A terminal-config asked by alice and approved by bob; its id."""
        pairs = [arg for k, v in params.items() for arg in ("-p", f"{k}={v}")]
        code, out, err = self.fep("command", "request", "dtu-1", "terminal-config", *pairs,
                                  "--attempts", "1", token=OPERATOR_TOKEN)
        self.assertEqual(code, 0, out + err)
        self.assertIn("awaits approval", out)
        command_id = int(out.split()[1].rstrip(":"))
        code, out, err = self.fep("command", "approve", str(command_id),
                                  token=SECOND_OPERATOR_TOKEN)
        self.assertEqual(code, 0, out + err)
        return command_id

    async def api_command(self, **params: str) -> int:
        """The same through the API: asked by alice, approved by bob."""

        async def post(path: str, token: str, body: object) -> dict[str, object]:
            r = await http(f"{self.base}/{path}", token=token, method=b"POST",
                           body=json.dumps(body).encode())
            self.assertEqual(r.status, 200, r.body)
            answer: dict[str, object] = r.json()
            return answer

        asked = await post("meters/dtu-1/commands", OPERATOR_TOKEN,
                           {"action": "terminal-config", "params": params})
        self.assertEqual(asked["status"], "requested")
        command_id = int(str(asked["id"]))
        await post(f"commands/{command_id}/approve", SECOND_OPERATOR_TOKEN, {})
        return command_id

    async def ended(self, command_id: int) -> tuple[str, str]:
        """The command's final status and outcome."""
        row: list[tuple[object, ...]] = []

        async def final() -> bool:
            row[:] = harness.sqlite_rows(
                self.db, f"SELECT status, outcome FROM commands WHERE id = {command_id} AND "
                "status IN ('done', 'failed')")
            return bool(row)

        await wait_for(final, 60, f"command {command_id} to end")
        status, outcome = row[0]
        return str(status), str(outcome)

    async def on_listener(self, port: int | None) -> None:
        """Wait until the terminal's session is attached on the listener at ``port`` (None:
        until it has no session)."""

        async def there() -> bool:
            code, out, _ = self.fep("sessions", "--format", "json")
            if code != 0:
                return False
            sessions = [json.loads(line) for line in out.splitlines()]
            if port is None:
                return not any(s["modem"] == f"imei={IMEI}" for s in sessions)
            return any(s["modem"] == f"imei={IMEI}" and s["meters"] == ["dtu-1"]
                       and s["listener"] == f"tcp:{port}" for s in sessions)

        await wait_for(there, 30, f"the terminal registered on tcp:{port}", every=0.3)

    async def test_port_change_by_sms_then_by_tcp_and_a_wrong_password(self) -> None:
        await harness.add_meters(f"sqlite:{self.db}", [
            Meter("dtu-1", "dlms", f"gprs:imei={IMEI}", metadata={
                "terminal": "generic-at-sms", "sms_number": TERMINAL}),
        ])
        first, second = free_port(), free_port()
        while second == first:
            second = free_port()
        a, b = await socat_pty_pair(self)
        network = GsmNetwork(reactor)
        gsm = GsmModemEmulator(MODEM, capacity=10)
        network.attach(gsm)
        serial = serve_pty(reactor, a, gsm)
        self.addCleanup(serial.loseConnection)

        tokens = write_tokens(self.workdir / "tokens")
        http_port = free_port()
        self.base = f"http://127.0.0.1:{http_port}/api/v1"
        self.config = write_config(
            self.workdir, f"sqlite:{self.db}", push_port=0, period=3600.0,
            default_task=False, collect_extra="poll = 0.2\n",
            extra=(f"[gprs]\nlisten = tcp:{first}:interface=127.0.0.1 "
                   f"tcp:{second}:interface=127.0.0.1\nunknown = quarantine\n"
                   f"[sms]\nport = serial:{b}:115200:8N1\nsweep_interval = 600\n"
                   f"[http]\nport = {http_port}\ntokens_file = {tokens}\n"
                   f"[control]\nsocket = {self.socket}\n"
                   f"[secrets]\nmaster_key = file:{self.workdir}/master.key\n"))
        # The terminal's password is a meter secret, sealed in the store.
        for args in (("keys", "init"), ("keys", "import", "dtu-1", "terminal_password",
                                        PASSWORD)):
            code, out, err = self.fep(*args)
            self.assertEqual(code, 0, out + err)
        daemon = Daemon(self.config, self.workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.ready(timeout=90)
        await daemon.logged(" ready (", timeout=90)

        modem = SimulatedGprsModem(
            reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", first),
            ModemSpec(IMEI, registration="ascii"))
        terminal = SimulatedTerminal(
            reactor, modem, shipped_profiles()["generic-at-sms"], PASSWORD, port=first,
            network=network, number=TERMINAL)
        self.addCleanup(modem.close)
        await modem.connect()
        await self.on_listener(first)

        # By SMS: the terminal answers OK, restarts and registers on the second listener.
        sms_command = self.command(host="127.0.0.1", port=str(second), via="sms")
        status, outcome = await self.ended(sms_command)
        self.assertEqual(status, "done", outcome)
        self.assertIn(f"port={second} by SMS", outcome)
        self.assertIn("answered 'OK'", outcome)
        await self.on_listener(second)
        self.assertEqual(terminal.applied[0], ("sms", {"host": "127.0.0.1", "port": second}))
        self.assertEqual(terminal.registered[-1], ("127.0.0.1", second))
        [text] = [m for m in network.messages if m.destination == TERMINAL]
        self.assertEqual(text.text, f"{PASSWORD},AT+SERVER=127.0.0.1,{second};AT+RESET")

        # By TCP (AT pass-through on its session), asked through the API: back to the
        # first listener.
        tcp_command = await self.api_command(host="127.0.0.1", port=str(first), via="tcp")
        status, outcome = await self.ended(tcp_command)
        self.assertEqual(status, "done", outcome)
        self.assertIn(f"port={first} by tcp", outcome)
        await self.on_listener(first)
        self.assertEqual(terminal.applied[1], ("tcp", {"host": "127.0.0.1", "port": first}))
        self.assertEqual(terminal.registered[-1], ("127.0.0.1", first))
        self.assertEqual(terminal.restarts, 2)

        # A wrong password: refused by the terminal both ways, recorded with its answer.
        terminal.password = "changed-on-site"
        refused = self.command(host="127.0.0.1", port=str(second), via="sms")
        status, outcome = await self.ended(refused)
        self.assertEqual(status, "failed")
        self.assertIn("refused the configuration: 'PASSWORD ERROR'", outcome)
        refused = await self.api_command(host="127.0.0.1", port=str(second), via="tcp")
        status, outcome = await self.ended(refused)
        self.assertEqual(status, "failed")
        self.assertIn(f"refused host=127.0.0.1, port={second} by tcp (login): ERROR", outcome)
        self.assertEqual(terminal.restarts, 2)
        self.assertEqual([why for _, why in terminal.refused],
                         ["wrong password", "wrong password"])
        await self.on_listener(first)
        trail = harness.sqlite_rows(
            self.db, f"SELECT who, action FROM command_audit WHERE command = {refused} "
            "ORDER BY at, rowid")
        self.assertEqual([a for _, a in trail],
                         ["requested", "approved", "started", "failed"])

        # A terminal that is not connected (gone from its master station) is set by SMS at
        # once: no wake-up text first, no wait for a session it cannot open.
        terminal.password = PASSWORD
        modem.close()
        await self.on_listener(None)  # its session gone
        offline = self.command(host="127.0.0.1", port=str(second), via="sms")
        status, outcome = await self.ended(offline)
        self.assertEqual(status, "done", outcome)
        await self.on_listener(second)
        self.assertEqual(terminal.restarts, 3)
        self.assertNotIn("waking it up", daemon.log_text())

        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
        self.assertNotIn(PASSWORD, daemon.log_text())
        self.assertNotIn(PASSWORD, (self.workdir / "fep.log.json").read_text())
        for path in self.workdir.glob("fep.sqlite*"):
            self.assertNotIn(PASSWORD.encode(), path.read_bytes(), path)
