"""Acceptance (issue 14, modem identity): through the running daemon (`twistd -n fep`), an
impostor that dials in with the IMEI of a live modem does not take its session: the
incumbent keeps the name and goes on being read, the impostor is held, then closed, and never
receives a byte (no AARQ, so never the meter's LLS password)."""

from __future__ import annotations

import json
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial import unittest

from fep.model import Meter
from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK
from fep.sim.gprs_modem import ModemSpec, SimulatedGprsModem
from tests.daemon import harness
from tests.daemon.harness import Daemon, free_port, sleep, wait_for, write_config

IMEI = "356938035643809"
TITLE = b"FEPGPRS1"
PASSWORD = b"Lls-Pw-0042"


class Impostor(Protocol):
    """A connection that claims the modem's IMEI and keeps every byte fep sends it."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(f"ID:{IMEI}\r\n".encode())  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if not self.lost.called:
            self.lost.callback(None)


class ImpostorDaemonTests(unittest.TestCase):
    timeout = 120

    async def test_an_impostor_with_a_live_modems_imei_gets_nothing(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        await harness.add_meters(f"sqlite:{db}", [
            Meter("dlms-1", "dlms", f"gprs:imei={IMEI}", metadata={
                "dlms_server_system_title": TITLE.hex(),
                "dlms_ek": EXAMPLE_EK.hex(),
                "dlms_ak": EXAMPLE_AK.hex(),
                "dlms_auth": "low",
                "dlms_password": PASSWORD.decode(),
            })])
        gprs_port = free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=1.0,
            extra=(f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"
                   "conflict_quarantine = 3\n[control]\nenabled = no\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)

        def done_jobs() -> int:
            rows = harness.sqlite_rows(
                db, "SELECT count(*) FROM jobs WHERE meter = 'dlms-1' AND status = 'done' "
                    "AND records > 0")
            return int(rows[0][0]) if rows else 0  # none: tables not made yet

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", gprs_port)
        modem = SimulatedGprsModem(reactor, endpoint, ModemSpec(
            IMEI, registration="ascii", meter="dlms", system_title=TITLE, password=PASSWORD))
        self.addCleanup(modem.close)

        async def dialled_in() -> bool:
            try:
                await modem.connect()
            except ConnectError:
                return False
            return True

        await wait_for(dialled_in, 60, "the daemon's GPRS listener", every=0.3)

        async def read(n: int) -> bool:
            return done_jobs() >= n

        # The real modem is read over its session (the LLS password goes to it).
        await wait_for(lambda: read(1), 60, "a pull over the modem's session", every=0.3)
        pulls_before = modem.pulls

        impostor = Impostor()
        await connectProtocol(endpoint, impostor)
        jobs_at_impostor = done_jobs()

        async def settled() -> bool:
            # Closed after its quarantine (3 s), or (before issue 14) handed the next pull.
            return impostor.lost.called or bool(impostor.received)

        await wait_for(settled, 30, "the impostor closed")
        self.assertNotIn(PASSWORD, impostor.received)
        self.assertEqual(impostor.received, b"")
        # The pulls meanwhile went to the incumbent.
        await wait_for(lambda: read(jobs_at_impostor + 2), 30,
                       "pulls over the incumbent after the impostor dialled in", every=0.3)
        self.assertGreater(modem.pulls, pulls_before)
        # The incumbent is still connected and read.
        after = done_jobs()
        await wait_for(lambda: read(after + 1), 30, "a pull after the impostor left")
        assert modem.connection is not None
        self.assertFalse(modem.connection.lost.called)

        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
        events = [json.loads(line) for line in
                  (workdir / "fep.log.json").read_text().splitlines() if line.strip()]
        conflicts = [e for e in events if e.get("event") == "gprs_identity_conflict"]
        self.assertEqual(len(conflicts), 1, conflicts)
        self.assertNotEqual(conflicts[0]["peer"], conflicts[0]["incumbent_peer"])
        self.assertEqual(conflicts[0]["meter"], "dlms-1")
        closed = [e for e in events if e.get("event") == "gprs_identity_conflict_closed"]
        self.assertEqual(len(closed), 1)
        await sleep(0)
