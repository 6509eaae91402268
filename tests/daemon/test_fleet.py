"""The daemon reads meters of every protocol on their schedule: DLMS (wrapper, HLS-GMAC with
suite-0 ciphering), DL/T 645-2007 on a two-meter bus and ANSI C12.18 with a password, from
simulators on the test's reactor; their readings reach the store with units."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.dlms.security import SecurityKeys
from fep.protocols.dlms.server import ServerSettings
from fep.sim import dlms_meter
from fep.sim.ansi_c12 import C12MeterServerFactory, SimulatedC12Meter
from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK, DlmsMeterServerFactory
from fep.sim.dlt645 import Dlt645BusFactory, make_meters
from tests.daemon.harness import Daemon, add_meters, sqlite_rows, wait_for, write_config


class FleetTests(unittest.TestCase):
    timeout = 120

    def listen(self, factory: object) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def test_every_protocol_is_polled_into_the_store(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        dlms_port = self.listen(DlmsMeterServerFactory(
            dlms_meter.SimulatedDlmsMeter(),
            ServerSettings(keys=SecurityKeys(EXAMPLE_EK, EXAMPLE_AK), allow_lowest=False)))
        bus = make_meters(2)
        dlt_port = self.listen(Dlt645BusFactory(bus, reactor))
        c12_port = self.listen(C12MeterServerFactory(SimulatedC12Meter(password=b"s3cret"),
                                                     reactor))
        meters = [
            Meter("dlms-1", "dlms", f"tcp:host=127.0.0.1:port={dlms_port}", metadata={
                "dlms_auth": "high-gmac", "dlms_ek": EXAMPLE_EK.hex(),
                "dlms_ak": EXAMPLE_AK.hex()}),
            *[Meter(f"dlt-{n}", "dlt645", f"tcp:host=127.0.0.1:port={dlt_port}",
                    address=m.address) for n, m in enumerate(bus, 1)],
            Meter("c12-1", "ansi-c12.18", f"tcp:host=127.0.0.1:port={c12_port}",
                  metadata={"c12_password": "s3cret"}),
        ]
        await add_meters(f"sqlite:{db}", meters)
        daemon = Daemon(write_config(workdir, f"sqlite:{db}", push_port=0,
                                     period=1.0), workdir)
        daemon.start()
        self.addCleanup(daemon.kill)

        rows = partial(sqlite_rows, db)

        async def all_read() -> bool:
            found = {m for (m,) in rows("SELECT DISTINCT meter FROM readings")}
            return {m.id for m in meters} <= found

        await wait_for(all_read, 60, "readings from every meter")
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
        units = dict(rows(
            "SELECT meter, unit_code FROM readings WHERE obis = '1-0:1.8.0*255' "
            "GROUP BY meter"))
        # Active energy import: Wh (DLMS, scaler applied) and kWh-scaled Wh (DL/T 645).
        self.assertEqual(units.get("dlms-1"), 30)
        self.assertEqual(units.get("dlt-1"), 30)
        self.assertEqual(units.get("dlt-2"), 30)
        self.assertNotIn("s3cret", daemon.log_text())
        self.assertNotIn(EXAMPLE_AK.hex(), daemon.log_text())
