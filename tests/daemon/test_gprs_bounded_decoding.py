"""Acceptance (issue 14, bounded decoding): the 27-byte packet that froze the daemon, sent to
its GPRS listener before any identification (a DLMS wrapper frame carrying a Data-Notification
whose compact-array decodes to billions of values), is refused at once: the bad connection is
closed and counted in the log, and the daemon goes on serving: its control socket answers and
a good modem's pushes are stored."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.dlms.wrapper import WrapperFrame, encode_wrapper
from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK
from fep.sim.gprs_modem import ModemSpec, SimulatedGprsModem
from fep.store import open_store
from tests.daemon.harness import ROOT, Daemon, free_port, wait_for, write_config

DLMS_IMEI = "356938035643809"
TITLE = b"FEPGPRS1"
# Issue 14: a Data-Notification whose body is a compact-array of one element {array 65535
# of array 65535 of null-data, unsigned}, in a DLMS wrapper header as an attacker sends it.
HOSTILE_APDU = bytes.fromhex("0F000000010013020201FFFF01FFFF00110100")
HOSTILE_PACKET = encode_wrapper(WrapperFrame(1, 1, HOSTILE_APDU))


class _Attacker(Protocol):
    """Sends the packet on connect; ``closed`` fires when the daemon closes the connection."""

    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(HOSTILE_PACKET)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.closed.callback(None)


class HostilePacketBeforeLoginTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.workdir = Path(self.mktemp()).resolve()
        self.workdir.mkdir(parents=True)
        self.db = self.workdir / "fep.sqlite"
        short = Path(tempfile.mkdtemp(prefix="fep-"))
        self.addCleanup(shutil.rmtree, short, True)
        self.socket = short / "ctl" / "fep.sock"

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    async def fep(self, *args: str) -> tuple[int, str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "fep.cli", *args], env=env, path=str(ROOT)
        )
        return code, out.decode(), err.decode()

    async def test_hostile_packet_is_refused_and_the_daemon_goes_on(self) -> None:
        self.assertEqual(len(HOSTILE_PACKET), 27)
        store = open_store(f"sqlite:{self.db}", reactor)
        await store.open()
        await store.add_meters([
            Meter("dlms-1", "dlms", f"gprs:imei={DLMS_IMEI}", metadata={
                "dlms_server_system_title": TITLE.hex(),
                "dlms_ek": EXAMPLE_EK.hex(),
                "dlms_ak": EXAMPLE_AK.hex(),
            }),
        ])
        await store.close()
        gprs_port = free_port()
        config = write_config(
            self.workdir,
            f"sqlite:{self.db}",
            push_port=free_port(),
            collect=False,
            extra=(
                f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"
                "unknown = quarantine\nidentify_timeout = 2\n"
                f"[control]\nsocket = {self.socket}\n"
            ),
        )
        daemon = Daemon(config, self.workdir)
        daemon.start()
        self.addCleanup(daemon.kill)

        async def answering() -> bool:
            code, _, _ = await self.fep("--config", str(config), "sessions")
            return code == 0

        await wait_for(answering, 60, "the daemon's control socket", every=0.5)

        # The attacker connects and sends the packet before any registration. The daemon
        # decodes it (the DLMS identification rule) and refuses it; the bytes could still
        # begin a registration line, so the connection is closed at the identify timeout
        # (2 s). Before issue 14 the decoding never ended and nothing more was served.
        attacker = _Attacker()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", gprs_port), attacker)

        async def attacker_closed() -> bool:
            return attacker.closed.called

        await wait_for(attacker_closed, 20, "the daemon to close the hostile connection",
                       every=0.1)
        self.assertEqual(attacker.received, b"")

        # Still serving: the control socket answers and a good modem's pushes are stored.
        code, _, _ = await self.fep("--config", str(config), "sessions")
        self.assertEqual(code, 0)
        modem = SimulatedGprsModem(
            reactor,
            TCP4ClientEndpoint(reactor, "127.0.0.1", gprs_port),
            ModemSpec(DLMS_IMEI, registration="ascii", meter="dlms", system_title=TITLE),
        )
        await modem.connect()
        self.addCleanup(modem.close)
        modem.start(every=0.3, count=3)

        async def stored() -> bool:
            return bool(self.rows("SELECT 1 FROM readings WHERE meter = 'dlms-1' LIMIT 1"))

        await wait_for(stored, 30, "the good modem's pushes stored", every=0.3)

        async def listed() -> bool:
            code, out, _ = await self.fep("--config", str(config), "sessions",
                                          "--format", "json")
            sessions = [json.loads(line) for line in out.splitlines()]
            return code == 0 and [s["modem"] for s in sessions] == [f"imei={DLMS_IMEI}"]

        await wait_for(listed, 20, "only the good modem listed by fep sessions")
        modem.close()
        self.assertEqual(await daemon.interrupt(), 0)

        # Counted: the daemon logged the closed connection (channel stat "unidentified").
        events = [json.loads(line) for line in
                  (self.workdir / "fep.log.json").read_text().splitlines() if line.strip()]
        refused = [e for e in events
                   if "sent no registration" in str(e.get("log_format", ""))
                   and e.get("received") == len(HOSTILE_PACKET)]
        self.assertEqual(len(refused), 1, [e.get("log_format") for e in events][-20:])
