"""Acceptance (issue 16, every door reads the same way): one running daemon (`twistd -n fep`)
with a meter on each kind of route -- ``tcp:``, ``serial:`` (a socat pty pair), ``rfc2217:``
(Debian's ser2net on a pty pair), ``gprs:`` (a simulated modem dialled in to the daemon's
GPRS listener), ``dialup:`` (the simulated Hayes modem of the modem pool on a pty) and
``@ADDRESS`` on a shared serial bus (an IEC 62056-21 and a DL/T 645 meter) -- is read now
through the HTTP API, the SSH console and `fep read --meter ID` (the daemon's control
socket). Every read is an on-demand job of the collection engine, run through the daemon's
channels. Once the daemon is stopped, `fep read --meter` reads a ``tcp:`` meter directly
and says so, and refuses a ``gprs:`` one, which needs the daemon."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from fep.model import Meter
from fep.sim import bus as bus_sim
from fep.sim.gprs_modem import ModemSpec, SimulatedGprsModem
from fep.sim.hayes import HayesModem
from fep.sim.hayes import serve_pty as serve_modem_pty
from fep.sim.iec62056_21 import IecMeterServerFactory, SimulatedIecMeter, make_meters
from fep.sim.iec62056_21 import serve_pty as serve_iec_pty
from tests.channels.modem.emulated import MODEM_GUARD, new_exchange
from tests.channels.ser2net import start_ser2net
from tests.channels.test_serialport import socat_pty_pair
from tests.daemon.harness import Daemon, add_meters, free_port, sqlite_rows, wait_for, write_config
from tests.operator.helpers import OPERATOR_TOKEN, http, write_tokens
from tests.operator.test_manhole import SshSession, authorize, keygen, ssh_binary
from tests.processes import fep_command

IMEI = "356938035643809"
BUS_IEC = "10000001"
BUS_DLT = "000000123456"


class ReadNowOnEveryRouteTests(unittest.TestCase):
    timeout = 600

    async def serve_meters(self) -> list[Meter]:
        """The simulated meters on this test's reactor, and the meter list that reaches
        them (the GPRS modem dials in once the daemon listens)."""
        tcp_meter = make_meters(1)[0]
        port = reactor.listenTCP(0, IecMeterServerFactory([tcp_meter], reactor),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        tcp_route = f"tcp:host=127.0.0.1:port={port.getHost().port}"

        serial_fep, serial_meter = await socat_pty_pair(self)
        serial_sim = SimulatedIecMeter(address="20000001")
        served = serve_iec_pty(reactor, serial_meter, IecMeterServerFactory([serial_sim],
                                                                            reactor))
        self.addCleanup(served.loseConnection)

        bus_fep, bus_end = await socat_pty_pair(self)
        served = bus_sim.serve_pty(reactor, bus_end, bus_sim.mixed_bus(
            reactor, iec=[BUS_IEC], dlt645=[BUS_DLT]))
        self.addCleanup(served.loseConnection)

        server_side, rfc_meter = await socat_pty_pair(self)
        _raw, telnet = await start_ser2net(self, server_side)
        rfc_sim = SimulatedIecMeter(address="30000001")
        served = serve_iec_pty(reactor, rfc_meter, IecMeterServerFactory([rfc_sim], reactor))
        self.addCleanup(served.loseConnection)

        exchange = new_exchange()
        exchange.add("5551001", IecMeterServerFactory(
            [SimulatedIecMeter(address="40000001")], reactor))
        modem_end, self.modem_line = await socat_pty_pair(self)
        served = serve_modem_pty(reactor, modem_end, HayesModem(exchange, "m1",
                                                                guard=MODEM_GUARD))
        self.addCleanup(served.loseConnection)

        return [
            Meter("tcp-1", "iec62056-21", tcp_route, address=tcp_meter.address),
            Meter("serial-1", "iec62056-21", f"serial:{serial_fep}:300:7E1",
                  address=serial_sim.address),
            Meter("rfc2217-1", "iec62056-21", f"rfc2217:host=127.0.0.1:port={telnet}",
                  address=rfc_sim.address),
            Meter("gprs-1", "iec62056-21", f"gprs:imei={IMEI}"),
            Meter("dialup-1", "iec62056-21", "dialup:5551001", address="40000001"),
            Meter("bus-iec", "iec62056-21", f"serial:{bus_fep}:300:7E1:gap=0.02@{BUS_IEC}"),
            Meter("bus-dlt", "dlt645", f"serial:{bus_fep}:2400:8E1:gap=0.02@{BUS_DLT}"),
        ]

    async def test_api_console_and_cli_read_a_meter_on_each_route_kind(self) -> None:
        ssh = ssh_binary()
        workdir = self.workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        # A UNIX socket path must stay short (108 bytes): not under the test's deep temp.
        short = Path(tempfile.mkdtemp(prefix="fep-"))
        self.addCleanup(shutil.rmtree, short, True)
        socket = short / "ctl" / "fep.sock"
        db = workdir / "fep.sqlite"
        meters = await self.serve_meters()
        ids = [m.id for m in meters]
        await add_meters(f"sqlite:{db}", meters)
        write_tokens(workdir / "tokens")
        keygen(workdir / "operator")
        authorize(workdir / "authorized_keys", (workdir / "operator", "alice role=operator"))
        http_port, ssh_port, gprs_port = free_port(), free_port(), free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=3600, default_task=False,
            extra=(
                f"[http]\nport = {http_port}\ntokens_file = {workdir / 'tokens'}\n"
                f"[manhole]\nport = {ssh_port}\n"
                f"authorized_keys = {workdir / 'authorized_keys'}\n"
                f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"
                f"[control]\nsocket = {socket}\n"
                f"[modems]\nlines =\n    m1 serial:{self.modem_line}:9600:8N1\n"
                "guard = 0.1\nhangup_timeout = 1.0\ndial_timeout = 10\n"
            ),
        )
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.ready(timeout=120)
        await daemon.logged("operator console on", timeout=60)

        modem = SimulatedGprsModem(
            reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", gprs_port),
            ModemSpec(IMEI, registration="ascii", meter="iec62056-21"))
        await modem.connect()
        self.addCleanup(modem.close)
        rows = partial(sqlite_rows, db)

        async def modem_here() -> bool:
            return (f"gprs:imei={IMEI}", "test") in set(
                rows("SELECT resource, node FROM session_homes"))

        await wait_for(modem_here, 60, "the GPRS modem's session on the daemon")

        # The API. First both meters of the bus at once: the second waits for the line
        # instead of colliding with the first.
        base = f"http://127.0.0.1:{http_port}/api/v1"
        both = await gatherResults([
            ensureDeferred(http(f"{base}/meters/{meter}/read", method=b"POST",
                                token=OPERATOR_TOKEN))
            for meter in ("bus-iec", "bus-dlt")])
        for meter, r in zip(("bus-iec", "bus-dlt"), both, strict=True):
            self.assertEqual(r.status, 200, (meter, r.body))
            self.assertEqual({x["meter"] for x in r.json()["readings"]}, {meter})
        for meter in ids:
            r = await http(f"{base}/meters/{meter}/read", method=b"POST", token=OPERATOR_TOKEN)
            self.assertEqual(r.status, 200, (meter, r.body))
            readings = r.json()["readings"]
            self.assertTrue(readings, meter)
            self.assertEqual({x["meter"] for x in readings}, {meter})

        # The console.
        session = SshSession()
        reactor.spawnProcess(
            session, ssh,
            [ssh, "-F", "/dev/null", "-p", str(ssh_port), "-i", str(workdir / "operator"),
             "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
             "-o", f"UserKnownHostsFile={workdir / 'known_hosts'}", "-o", "BatchMode=yes",
             "-o", "ConnectTimeout=30", "-tt", "alice@127.0.0.1"],
            env={"HOME": str(workdir)})

        async def shows(pattern: str) -> bool:
            return re.search(pattern, session.text()) is not None

        await wait_for(lambda: shows("lists the commands"), 60, "the console banner")
        for meter in ids:
            session.send(f"read({meter!r})\r")
            title = rf"meter {re.escape(meter)}: (\d+) records"
            try:
                await wait_for(lambda title=title: shows(title), 120,  # type: ignore[misc]
                               f"the console's read of {meter}")
            except AssertionError:
                raise AssertionError(session.text()[-3000:]) from None
            found = re.search(title, session.text())
            assert found is not None
            self.assertGreater(int(found.group(1)), 0, meter)
        session.send("\x04")
        self.assertEqual(await session.ended, 0)

        # `fep read --meter ID`: through the daemon's control socket, JSON lines.
        for meter in ids:
            done = await fep_command("--config", str(config), "read", "--meter", meter,
                                     timeout=180)
            self.assertEqual(done.returncode, 0, (meter, done.stderr))
            lines = [json.loads(line) for line in done.stdout.splitlines()]
            self.assertTrue(lines, meter)
            self.assertEqual({line["meter"] for line in lines}, {meter})
            self.assertNotIn("directly", done.stderr)

        # Every read was an on-demand job of the engine, done, pinned to this node, with
        # the door that asked.
        jobs = rows("SELECT meter, status, priority, pinned, params, records FROM jobs "
                    "ORDER BY id")
        by_meter: dict[str, list[Any]] = {}
        for meter, status, priority, pinned, params, records in jobs:
            self.assertEqual((status, priority, pinned), ("done", 0, "test"), meter)
            self.assertGreater(records, 0)
            by_meter.setdefault(meter, []).append(json.loads(params)["read_now"].split(":")[0])
        bus_twice = {"bus-iec", "bus-dlt"}
        self.assertEqual(by_meter, {m: ["api"] * (m in bus_twice) + ["api", "console", "cli"]
                                    for m in ids})
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
        stored = {m for (m,) in rows("SELECT DISTINCT meter FROM readings")}
        self.assertEqual(stored, set(ids))
        # The dial-up meter's three reads were calls of the modem pool.
        calls = rows("SELECT number, outcome FROM modem_calls")
        self.assertEqual(calls, [("5551001", "completed")] * 3)
        # The two bus reads asked at once ran one after the other.
        first, second = rows("SELECT started_at, finished_at FROM jobs WHERE meter IN "
                             "('bus-iec', 'bus-dlt') ORDER BY started_at LIMIT 2")
        self.assertGreaterEqual(second[0], first[1])

        # No daemon: `fep read --meter` reads a tcp: meter directly and says so; a gprs:
        # meter needs the daemon.
        done = await fep_command("--config", str(config), "read", "--meter", "tcp-1")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("no daemon answers", done.stderr)
        self.assertIn("directly", done.stderr)
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        self.assertIn("1-0:1.8.0*255", {line["obis"] for line in lines})
        done = await fep_command("--config", str(config), "read", "--meter", "gprs-1")
        self.assertEqual(done.returncode, 2, done.stderr)
        self.assertIn("gprs", done.stderr)
        self.assertIn("no daemon answers", done.stderr)
