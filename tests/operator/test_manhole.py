"""The SSH operator console. Acceptance: Debian's OpenSSH client logs into the running daemon
with an authorized key, runs sessions() and read(...) and sees the results; a key not in the
file and a password attempt are refused; Ed25519, ECDSA and RSA (SHA-2) keys log in, DSA and
ssh-rsa (SHA-1) are refused; a viewer's key runs no command that acts and reaches no Python;
four eyes by key identity (alice's key cannot approve alice's disconnect under another SSH
user name, nor can alice's API token or CLI token; bob's key can). Units: the command
namespace's output, the host key file, the logged fingerprint."""

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
from tests.daemon.harness import Daemon, add_meters, free_port, wait_for, write_config
from tests.inprocess import fep_main as run_fep
from tests.operator.helpers import (
    OPERATOR_TOKEN,
    FakeScheduler,
    http,
    make_context,
    sample_records,
    write_tokens,
)
from tests.system import require_program


def ssh_binary() -> str:
    return require_program("ssh", package="openssh-client")


def keygen(path: Path, kind: str = "ed25519") -> str:
    """A new key pair at ``path`` (``ssh-keygen -t kind``); returns its SHA256 fingerprint
    as OpenSSH prints it."""
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "test", "-f",
                    str(path)], check=True)
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{path}.pub"],
                         check=True, capture_output=True, text=True).stdout
    return out.split()[1]


def authorize(file: Path, *entries: tuple[Path, str]) -> None:
    """An authorized_keys file: each public key with fep's comment (operator, role)."""
    lines = []
    for key, comment in entries:
        kind, blob = Path(f"{key}.pub").read_text().split()[:2]
        lines.append(f"{kind} {blob} {comment}\n")
    file.write_text("".join(lines))


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


class OpenSshClient(unittest.TestCase):
    """Runs Debian's OpenSSH client against a console."""

    timeout = 120
    workdir: Path

    def ssh_args(self, port: int, key: Path, *extra: str, user: str = "alice") -> list[str]:
        return [
            ssh_binary(), "-F", "/dev/null", "-p", str(port), "-i", str(key),
            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={self.workdir / 'known_hosts'}",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", *extra, f"{user}@127.0.0.1",
        ]

    async def console(self, port: int, key: Path, *extra: str,
                      user: str = "alice") -> SshSession:
        """An interactive console session, once its banner is shown."""
        session = SshSession()
        reactor.spawnProcess(session, ssh_binary(),
                             self.ssh_args(port, key, "-tt", *extra, user=user),
                             env={"HOME": str(self.workdir)})

        async def banner() -> bool:
            return "lists the commands" in session.text()

        await wait_for(banner, 20, "the console banner")
        return session

    async def refused(self, port: int, key: Path, *extra: str) -> bytes:
        """The stderr of an ssh login that must fail."""
        _, err, code = await getProcessOutputAndValue(
            ssh_binary(), [*self.ssh_args(port, key, *extra)[1:], "help"],
            env={"HOME": str(self.workdir)}, reactor=reactor)
        self.assertEqual(code, 255, err)
        return err


class ConsoleOverOpenSshTests(OpenSshClient):

    async def test_openssh_client_runs_commands_and_wrong_credentials_are_refused(self) -> None:
        self.workdir = workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        good_fp = keygen(workdir / "operator")
        keygen(workdir / "stranger")
        authorize(workdir / "authorized_keys", (workdir / "operator", "alice role=admin"))
        sims = make_meters(1)
        sim_port = reactor.listenTCP(0, IecMeterServerFactory(sims, reactor),
                                     interface="127.0.0.1")
        self.addCleanup(sim_port.stopListening)
        await add_meters(f"sqlite:{db}", [Meter("iec-1", "iec62056-21",
                                                f"tcp:host=127.0.0.1:port={sim_port.getHost().port}",
                                                address=sims[0].address)])
        port = free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=3600, collect=False,
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


class ConsoleRolesOverOpenSshTests(OpenSshClient):
    """Key types, roles and four eyes against the running daemon."""

    async def start(self, keys: list[tuple[str, str, str]], *, collect: bool = False,
                    extra: str = "", more: tuple[Meter, ...] = ()) -> tuple[Daemon, int]:
        """A daemon whose console accepts ``keys`` (file name, ssh-keygen type, comment),
        with meter iec-1 (a simulated IEC meter) and ``more`` in its store."""
        self.workdir = workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        for name, kind, _ in keys:
            keygen(workdir / name, kind)
        authorize(workdir / "authorized_keys",
                  *[(workdir / name, comment) for name, _, comment in keys if comment])
        sims = make_meters(1)
        sim_port = reactor.listenTCP(0, IecMeterServerFactory(sims, reactor),
                                     interface="127.0.0.1")
        self.addCleanup(sim_port.stopListening)
        db = workdir / "fep.sqlite"
        await add_meters(f"sqlite:{db}", [Meter("iec-1", "iec62056-21",
                                                f"tcp:host=127.0.0.1:port={sim_port.getHost().port}",
                                                address=sims[0].address), *more])
        port = free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=3600, collect=collect,
            extra=f"[manhole]\nport = {port}\nauthorized_keys = {workdir / 'authorized_keys'}\n"
            + extra)
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)

        async def listening() -> bool:
            return "operator console on" in daemon.log_text()

        await wait_for(listening, 60, "the console to listen")
        return daemon, port

    async def end(self, session: SshSession) -> None:
        session.send("\x04")
        self.assertEqual(await session.ended, 0)

    async def test_ed25519_ecdsa_and_rsa_keys_log_in_dsa_and_sha1_rsa_are_refused(self) -> None:
        daemon, port = await self.start([
            ("ed", "ed25519", "alice"), ("ec", "ecdsa", "bob"), ("rsa", "rsa", "carol"),
            ("dsa", "dsa", "dave role=admin"),
        ])
        for key, name, host_type in (("ed", "alice", "ssh-ed25519"),
                                     ("ec", "bob", "ecdsa-sha2-nistp256"),
                                     ("rsa", "carol", "rsa-sha2-512")):
            # Each host key type too: the client insists on one.
            session = await self.console(
                port, self.workdir / key, "-o", f"HostKeyAlgorithms={host_type}",
                "-o", f"UserKnownHostsFile={self.workdir / host_type}")
            self.assertIn(f"fep operator console ({name}, viewer)", session.text())
            await self.end(session)
        # DSA (even when the client is told to offer it) and RSA signed with SHA-1.
        err = await self.refused(port, self.workdir / "dsa",
                                 "-o", "PubkeyAcceptedAlgorithms=+ssh-dss")
        self.assertIn(b"Permission denied (publickey)", err)
        err = await self.refused(port, self.workdir / "rsa",
                                 "-o", "PubkeyAcceptedAlgorithms=ssh-rsa")
        self.assertIn(b"Permission denied (publickey)", err)
        # The server does not offer SHA-1 RSA nor DSA, for host keys or user keys.
        err = await self.refused(port, self.workdir / "rsa", "-o", "HostKeyAlgorithms=ssh-rsa")
        self.assertIn(b"no matching host key type", err)
        self.assertIn("DSA keys are refused", daemon.log_text())

    async def test_viewer_cannot_act_and_four_eyes_go_by_key_identity(self) -> None:
        tokens = Path(self.mktemp()).resolve()
        write_tokens(tokens)  # alice and bob are operators; "watch" a viewer
        tokens.chmod(0o600)
        http_port = free_port()
        daemon, port = await self.start(
            [("alice", "ed25519", "alice role=operator"), ("bob", "ecdsa", "bob role=operator"),
             ("vic", "ed25519", "vic")],
            collect=True,
            extra=f"[http]\nport = {http_port}\ntokens_file = {tokens}\n",
            # A meter with a disconnect relay (IEC 62056-21 meters have none).
            more=(Meter("dlms-1", "dlms", "tcp:host=127.0.0.1:port=1"),))
        work = self.workdir

        async def shows(session: SshSession, text: str) -> None:
            async def seen() -> bool:
                return text in session.text()

            await wait_for(seen, 20, repr(text))

        # A viewer: looks, but no command that acts, and no Python.
        vic = await self.console(port, work / "vic", user="admin")
        self.assertIn("(vic, viewer)", vic.text())
        vic.send("meters\r")
        await shows(vic, "2 meters")
        for line in ('command("iec-1", "disconnect")', "command iec-1 disconnect",
                     "read iec-1"):
            vic.send(line + "\r")
        await shows(vic, "read needs a higher role than viewer")
        self.assertEqual(vic.text().count("needs a higher role than viewer"), 3)
        marker = work / "evaluated"
        vic.send(f"__import__('os').system('touch {marker}')\r")
        vic.send("6*7\r")
        vic.send("ctx\r")
        await shows(vic, "no command 'ctx'")
        self.assertNotRegex(vic.text(), r"\n42\r")
        self.assertFalse(marker.exists())
        await self.end(vic)

        # alice asks for a disconnect with her key.
        alice = await self.console(port, work / "alice")
        alice.send("command iec-1 disconnect\r")
        await shows(alice, "command disconnect refused: protocol iec62056-21 does not support")
        alice.send("command dlms-1 disconnect reason=unpaid\r")
        await shows(alice, "'status': 'requested'")
        self.assertIn("'requested_by': 'console:alice'", alice.text())
        await self.end(alice)
        # alice's key under another SSH user name is still alice.
        again = await self.console(port, work / "alice", user="bob")
        self.assertIn("(alice, operator)", again.text())
        again.send("approve 1\r")
        await shows(again, "someone else must approve it")
        await self.end(again)
        # Nor can alice's API token, nor the CLI with alice's token.
        r = await http(f"http://127.0.0.1:{http_port}/api/v1/commands/1/approve",
                       method=b"POST", token=OPERATOR_TOKEN)
        self.assertEqual(r.status, 403)
        self.assertIn("someone else must approve it", r.json()["error"])
        cli = run_fep("--config", str(work / "fep.ini"), "command", "approve", "1",
                      env_extra={"FEP_TOKEN": OPERATOR_TOKEN})
        self.assertEqual(cli.returncode, 2, cli.stderr)
        self.assertIn("someone else must approve it", cli.stderr)
        # bob's key can, whatever SSH user name it comes with.
        bob = await self.console(port, work / "bob", user="alice")
        bob.send("approve 1\r")
        await shows(bob, "'approved_by': 'console:bob'")
        self.assertIn("'status': 'queued'", bob.text())
        await self.end(bob)

        self.assertEqual(await daemon.interrupt(), 0)
        events = [json.loads(line.strip("\x1e")) for line in
                  (work / "fep.log.json").read_text().splitlines() if line.strip("\x1e")]
        logins = [(e["operator"], e["role"]) for e in events
                  if e.get("log_format", "").startswith("operator {operator} ({role}) logged")]
        self.assertEqual(logins, [("vic", "viewer"), ("alice", "operator"),
                                  ("alice", "operator"), ("bob", "operator")])
        lines = {(e["operator"], e["line"]) for e in events
                 if e.get("log_format", "").startswith("console {operator} ({fingerprint})")}
        self.assertIn(("alice", "approve 1"), lines)
        self.assertIn(("bob", "approve 1"), lines)
        self.assertNotIn("admin", {operator for operator, _ in lines})


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
                          "alarms", "plans", "plan", "plan_create", "plan_submit",
                          "plan_approve", "plan_reject", "plan_start", "plan_pause",
                          "plan_cancel", "edits", "edit", "edit_approve", "edit_reject",
                          "vee_exceptions", "balance", "outages", "load"})
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
