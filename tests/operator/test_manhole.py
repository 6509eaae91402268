"""The SSH operator console. Acceptance: Debian's OpenSSH client logs into the running daemon
with an authorized key, runs sessions() and read(...) and sees the results; a key not in the
file and a password attempt are refused. Units: the command namespace's output, the host key
file, the logged fingerprint."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from fep.errors import ConfigError
from fep.model import Meter
from fep.operator.manhole import Table, host_key, namespace_for
from fep.sim.iec62056_21 import IecMeterServerFactory, make_meters
from fep.store import open_store
from tests.daemon.harness import Daemon, free_port, wait_for, write_config
from tests.operator.helpers import FakeScheduler, make_context, sample_records
from tests.system import require_program


def ssh_binary() -> str:
    return require_program("ssh", package="openssh-client")


def keygen(path: Path) -> str:
    """A new Ed25519 key pair at ``path``; returns its SHA256 fingerprint as OpenSSH
    prints it."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f",
                    str(path)], check=True)
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{path}.pub"],
                         check=True, capture_output=True, text=True).stdout
    return out.split()[1]


class SshSession(ProcessProtocol):
    """An interactive `ssh -tt` whose output the test reads as it comes."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)

    def send(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(text.encode())

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


class ConsoleOverOpenSshTests(unittest.TestCase):
    timeout = 120

    def ssh_args(self, port: int, key: Path, *extra: str) -> list[str]:
        return [
            ssh_binary(), "-F", "/dev/null", "-p", str(port), "-i", str(key),
            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={self.workdir / 'known_hosts'}",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *extra, "alice@127.0.0.1",
        ]

    async def test_openssh_client_runs_commands_and_wrong_credentials_are_refused(self) -> None:
        self.workdir = workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        good_fp = keygen(workdir / "operator")
        keygen(workdir / "stranger")
        (workdir / "authorized_keys").write_text((workdir / "operator.pub").read_text())
        sims = make_meters(1)
        sim_port = reactor.listenTCP(0, IecMeterServerFactory(sims, reactor),
                                     interface="127.0.0.1")
        self.addCleanup(sim_port.stopListening)
        store = open_store(f"sqlite:{db}", reactor)
        await store.open()
        await store.add_meters([Meter("iec-1", "iec62056-21",
                                      f"tcp:host=127.0.0.1:port={sim_port.getHost().port}",
                                      address=sims[0].address)])
        await store.close()
        port = free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=free_port(), period=3600, collect=False,
            extra=f"[manhole]\nport = {port}\nauthorized_keys = {workdir / 'authorized_keys'}\n")
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)

        host_key_file = workdir / "manhole_host_key"

        async def listening() -> bool:
            return host_key_file.exists() and "operator console on" in daemon.log_text()

        await wait_for(listening, 30, "the console to listen")
        self.assertEqual(stat.S_IMODE(host_key_file.stat().st_mode), 0o600)

        # The authorized key: an interactive session with named commands.
        session = SshSession()
        reactor.spawnProcess(session, ssh_binary(),
                             self.ssh_args(port, workdir / "operator", "-tt"),
                             env={"HOME": str(workdir)})

        async def shows(text: str) -> bool:
            return text in session.text()

        await wait_for(lambda: shows("help() lists the commands"), 20, "the console banner")
        session.send("sessions()\r")
        await wait_for(lambda: shows("0 sessions"), 20, "sessions() output")
        session.send("read('iec-1')\r")
        await wait_for(lambda: shows("called back"), 20, "read() output")
        out = session.text()
        self.assertIn("meter iec-1:", out)
        self.assertIn("1-0:1.8.0*255", out)
        self.assertIn("1000.5", out)  # the simulated meter's register value
        session.send("stats()\r")
        await wait_for(lambda: shows("reads_ok"), 20, "stats() output")
        session.send("\x04")  # Ctrl-D at an empty prompt ends the session
        self.assertEqual(await session.ended, 0)

        # A key not in authorized_keys.
        out, err, code = await getProcessOutputAndValue(
            ssh_binary(), [*self.ssh_args(port, workdir / "stranger")[1:], "help()"],
            env={"HOME": str(workdir)}, reactor=reactor)
        self.assertEqual(code, 255)
        self.assertIn(b"Permission denied (publickey)", err)

        # A password attempt: the console offers public-key login only, so the client never
        # gets to ask for the password (the askpass program is never run).
        askpass = workdir / "askpass.sh"
        asked = workdir / "asked"
        askpass.write_text(f"#!/bin/sh\ntouch {asked}\necho hunter2\n")
        askpass.chmod(0o700)
        out, err, code = await getProcessOutputAndValue(
            ssh_binary(),
            [*self.ssh_args(port, workdir / "operator")[1:],
             "-o", "BatchMode=no", "-o", "PubkeyAuthentication=no",
             "-o", "PreferredAuthentications=password,keyboard-interactive", "help()"],
            env={"HOME": str(workdir), "SSH_ASKPASS": str(askpass),
                 "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"},
            reactor=reactor)
        self.assertEqual(code, 255)
        self.assertIn(b"Permission denied (publickey)", err)
        self.assertFalse(asked.exists())

        # Every command line was logged with the key's fingerprint.
        self.assertEqual(await daemon.interrupt(), 0)
        events = [json.loads(line.strip("\x1e")) for line in
                  (workdir / "fep.log.json").read_text().splitlines() if line.strip("\x1e")]
        lines = [e for e in events if e.get("log_format", "").startswith("console {operator}")]
        self.assertEqual([e["line"] for e in lines], ["sessions()", "read('iec-1')", "stats()"])
        for e in lines:
            self.assertEqual(e["operator"], "alice")
            self.assertEqual(e["fingerprint"], good_fp)
        refused = [e for e in events if e.get("log_format", "").startswith("console login "
                                                                            "refused")]
        self.assertTrue(refused)


class CommandNamespaceTests(unittest.TestCase):
    async def test_commands_give_readable_tables_and_log_who_ran_them(self) -> None:
        ctx = await make_context(self, [Meter("m1", "iec62056-21", "tcp:host=127.0.0.1:port=1",
                                              metadata={"group": "north"})])
        ctx.scheduler = FakeScheduler()
        await ctx.store.write(sample_records("m1"))
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        space = namespace_for(ctx, "bob", "SHA256:abc")
        self.assertEqual(set(space) - {"ctx", "console"},
                         {"help", "sessions", "meters", "read", "events", "tasks", "run",
                          "commands", "command", "approve", "reject", "stats", "spool",
                          "alarms"})
        asked = await space["command"]("m1", "disconnect")
        self.assertEqual((asked["status"], asked["requested_by"]),
                         ("requested", "console:bob"))
        other = namespace_for(ctx, "carol", "SHA256:def")
        self.assertEqual((await other["approve"](asked["id"]))["approved_by"], "console:carol")
        self.assertIn("disconnect", repr(await space["commands"]()))
        meters = space["meters"]()
        self.assertIsInstance(meters, Table)
        self.assertIn("m1", repr(meters))
        self.assertIn("north", repr(meters))
        self.assertIn("(none)", repr(space["sessions"]()))
        events = await space["events"]("m1")
        self.assertEqual([row["kind"] for row in events], ["power-outage", "power-restored"])
        tasks = await space["tasks"]()
        self.assertEqual(tasks[0]["name"], "daily-profile")
        self.assertEqual(await space["run"]("daily-profile"),
                         {"task": "daily-profile", "queued": 1})
        self.assertIn("depth", repr(space["spool"]()))
        self.assertIn("meters", repr(space["stats"]()))
        self.assertIn("alarms are off", space["alarms"]())
        self.assertIn("read()", repr(space["help"]()))
        runs = [e for e in logged if e.get("log_format", "").startswith("operator {operator}")]
        self.assertIn("run()", [e["command"] for e in runs])
        self.assertEqual({(e["operator"], e["fingerprint"]) for e in runs},
                         {("bob", "SHA256:abc"), ("carol", "SHA256:def")})
        self.assertIn(("carol", "approve()"), [(e["operator"], e["command"]) for e in runs])

    async def test_a_failed_read_names_the_meter(self) -> None:
        ctx = await make_context(self, [])
        space = namespace_for(ctx, "bob", "SHA256:abc")
        from fep.operator.commands import CommandRefused

        with self.assertRaises(CommandRefused) as caught:
            await space["read"]("ghost")
        self.assertIn("ghost", str(caught.exception))


class HostKeyTests(unittest.TestCase):
    def test_made_once_with_owner_only_permissions(self) -> None:
        path = Path(self.mktemp()) / "host_key"
        first = host_key(path)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(host_key(path), first)

    def test_a_key_readable_by_others_is_refused(self) -> None:
        path = Path(self.mktemp()) / "host_key"
        host_key(path)
        os.chmod(path, 0o644)
        with self.assertRaises(ConfigError) as caught:
            host_key(path)
        self.assertIn("chmod 600", str(caught.exception))
