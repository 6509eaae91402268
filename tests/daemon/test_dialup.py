"""The daemon polls legacy sites by dial-up: meters with ``dialup:NUMBER`` routes are called
through the ``[modems]`` pool (Hayes emulators on socat ptys, a simulated telephone network
with an IEC 62056-21 and a DL/T 645 meter), read on their schedule into the store, and every
call is counted in the modem_calls table."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from twisted.trial import unittest

from fep.model import Meter
from fep.sim.dlt645 import Dlt645BusFactory, SimulatedDlt645Meter
from fep.sim.hayes import HayesModem, serve_pty
from fep.sim.iec62056_21 import IecMeterServerFactory, SimulatedIecMeter
from tests.channels.modem.emulated import MODEM_GUARD, new_exchange, reactor
from tests.channels.test_serialport import socat_pty_pair
from tests.daemon.harness import Daemon, add_meters, sqlite_rows, wait_for, write_config


class DialupDaemonTests(unittest.TestCase):
    timeout = 120

    async def test_dialup_meters_are_read_on_their_schedule(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        exchange = new_exchange()
        exchange.add("5551001", IecMeterServerFactory(
            [SimulatedIecMeter(address="30000001")], reactor))
        exchange.add("5551002", Dlt645BusFactory(
            [SimulatedDlt645Meter(address="000000005002")], reactor))
        lines = []
        for i in (1, 2):
            a, b = await socat_pty_pair(self)
            port = serve_pty(reactor, a, HayesModem(exchange, f"m{i}", guard=MODEM_GUARD))
            self.addCleanup(port.loseConnection)
            lines.append(f"    m{i} serial:{b}:9600:8N1")
        meters = [
            Meter("site-iec", "iec62056-21", "dialup:5551001", address="30000001"),
            Meter("site-dlt", "dlt645", "dialup:5551002@000000005002"),
        ]
        await add_meters(f"sqlite:{db}", meters)
        modems = ("[modems]\nlines =\n" + "\n".join(lines) + "\nguard = 0.1\n"
                  "hangup_timeout = 1.0\ndial_timeout = 10\n")
        daemon = Daemon(write_config(workdir, f"sqlite:{db}", push_port=0,
                                     period=2.0, extra=modems), workdir)
        daemon.start()
        self.addCleanup(daemon.kill)

        rows = partial(sqlite_rows, db)

        async def all_read() -> bool:
            found = {m for (m,) in rows("SELECT DISTINCT meter FROM readings")}
            return {"site-iec", "site-dlt"} <= found

        await wait_for(all_read, 60, "readings from both dial-up sites")
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
        calls = rows("SELECT DISTINCT number FROM modem_calls WHERE outcome = 'completed'")
        self.assertEqual(sorted(n for (n,) in calls), ["5551001", "5551002"])
