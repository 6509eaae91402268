"""Issue 18, through the running daemon (`twistd -n fep`): a meter behind a simulated
concentrator (route ``gw3761:DCU1:port=2``) is read through the HTTP API and `fep read
--meter` (the daemon's control socket), and the concentrator's archive is put in step with
the meter list through `fep concentrators sync` and the API; the daemon's channels carry
all of it (the concentrator's line, the forwarding route). A concentrator behind a GPRS
modem that dialled in is forwarded through over the modem's session, twice."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.trial import unittest

from fep.model import Meter
from fep.sim.concentrator import (
    ConcentratorFactory,
    SimulatedConcentrator,
    make_concentrator,
)
from fep.sim.gprs_modem import ModemSpec, SimulatedGprsModem
from tests.collect.harness import listen
from tests.daemon.harness import (
    Daemon,
    add_meters,
    free_port,
    sqlite_rows,
    wait_for,
    write_config,
)
from tests.operator.helpers import OPERATOR_TOKEN, http, write_tokens
from tests.processes import fep_command

IMEI = "356938035643810"


class ConcentratorBehindModem(SimulatedGprsModem):
    """A GPRS modem (a DTU registering with its IMEI) with a concentrator on its serial
    side: what the head end sends through the modem's session reaches the concentrator."""

    def __init__(self, endpoint: Any, concentrator: SimulatedConcentrator) -> None:
        super().__init__(reactor, endpoint, ModemSpec(IMEI, meter="iec62056-21"))
        self.concentrator_factory = ConcentratorFactory(concentrator, reactor)

    def meter_protocol(self) -> Protocol:
        protocol: Protocol = self.concentrator_factory.buildProtocol(None)
        return protocol


class ForwardingDaemonTests(unittest.TestCase):
    timeout = 240

    async def test_reads_and_archive_sync_through_the_daemon(self) -> None:
        sim = make_concentrator(3)
        meter = sim.meters[1]
        sim.ports[meter.address] = 2
        port = listen(self, ConcentratorFactory(sim, reactor))
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        short = Path(tempfile.mkdtemp(prefix="fep-"))
        self.addCleanup(shutil.rmtree, short, True)
        db = workdir / "fep.sqlite"
        await add_meters(f"sqlite:{db}", [
            Meter("DCU1", "gw3761", f"tcp:host=127.0.0.1:port={port}", address="4403:0004",
                  metadata={"gw3761_archive_size": "30"}),
            Meter("M2", "dlt645", "gw3761:DCU1:port=2", address=meter.address,
                  metadata={"concentrator": "DCU1", "point": "2"}),
            Meter("M1", "dlt645", "gw3761:DCU1:port=31", address=sim.meters[0].address,
                  metadata={"concentrator": "DCU1", "point": "1"}),
        ])
        write_tokens(workdir / "tokens")
        http_port = free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=3600, default_task=False,
            extra=(f"[http]\nport = {http_port}\ntokens_file = {workdir / 'tokens'}\n"
                   f"[control]\nsocket = {short / 'fep.sock'}\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.ready(timeout=120)
        base = f"http://127.0.0.1:{http_port}/api/v1"

        r = await http(f"{base}/meters/M2/read", method=b"POST", token=OPERATOR_TOKEN)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual({x["meter"] for x in r.json()["readings"]}, {"M2"})
        done = await fep_command("--config", str(config), "read", "--meter", "M2", timeout=120)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertNotIn("directly", done.stderr)
        self.assertEqual({json.loads(line)["meter"] for line in done.stdout.splitlines()},
                         {"M2"})
        forwarded = sim.forwarded
        self.assertGreater(forwarded, 0)

        # The archive: meter 2 is on port 2 in fep, on 31 in the concentrator; meter 3 is
        # not in fep's list.
        r = await http(f"{base}/meters/DCU1/archive-sync", method=b"POST",
                       token=OPERATOR_TOKEN, body=b'{"check": true}')
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual({k: [e["number"] for e in v] for k, v in r.json()["before"].items()},
                         {"added": [], "changed": [2], "removed": [3]})
        done = await fep_command("--config", str(config), "concentrators", "sync", "DCU1",
                                 timeout=120)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertNotIn("no daemon answers", done.stderr)
        self.assertEqual(json.loads(done.stdout)["written"], 2)
        self.assertEqual({(e.point, e.port, e.address) for e in sim.archive.values()},
                         {(1, 31, sim.meters[0].address), (2, 2, meter.address)})
        r = await http(f"{base}/meters/DCU1/archive-sync", method=b"POST",
                       token=OPERATOR_TOKEN)
        self.assertEqual((r.status, r.json()["in_step"], r.json()["written"]), (200, True, 0))
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])

    async def test_forwarding_over_the_concentrators_gprs_session(self) -> None:
        sim = make_concentrator(2)
        meter = sim.meters[1]
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        await add_meters(f"sqlite:{db}", [
            Meter("DCU1", "gw3761", f"gprs:imei={IMEI}", address="4403:0004"),
            Meter("M2", "dlt645", "gw3761:DCU1:port=31", address=meter.address,
                  metadata={"concentrator": "DCU1", "point": "2"}),
        ])
        write_tokens(workdir / "tokens")
        http_port, gprs_port = free_port(), free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=3600, default_task=False,
            extra=(f"[http]\nport = {http_port}\ntokens_file = {workdir / 'tokens'}\n"
                   f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.ready(timeout=120)
        modem = ConcentratorBehindModem(TCP4ClientEndpoint(reactor, "127.0.0.1", gprs_port), sim)
        await modem.connect()
        self.addCleanup(modem.close)

        async def modem_here() -> bool:
            return (f"gprs:imei={IMEI}", "test") in set(
                sqlite_rows(db, "SELECT resource, node FROM session_homes"))

        await wait_for(modem_here, 60, "the modem's session on the daemon")
        base = f"http://127.0.0.1:{http_port}/api/v1"
        r = await http(f"{base}/meters/M2/read", method=b"POST", token=OPERATOR_TOKEN)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual({x["meter"] for x in r.json()["readings"]}, {"M2"})
        self.assertGreater(sim.forwarded, 0)
        self.assertEqual(modem.connection is not None and modem.connection.lost.called, False)
        # Twice: the session was borrowed and given back, not used up.
        r = await http(f"{base}/meters/M2/read", method=b"POST", token=OPERATOR_TOKEN)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
