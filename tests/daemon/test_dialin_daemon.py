"""Acceptance: a simulated DLMS meter calls the master station over the PSTN (the Hayes
modem emulator on a socat pty is the daemon's [modems] line, answering enabled): the daemon
answers on its caller id, and the meter's alarm (a power-down event push) and readout (its
register push) are stored. While that call is up, `fep read` of another dial-up meter on the
same, only line waits: nothing is dialled until the caller hangs up, then the read is done."""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.dlms import wrapper
from fep.protocols.dlms.security import SecurityKeys
from fep.protocols.dlms.server import ServerSettings
from fep.sim.dlms import DlmsMeterServerFactory
from fep.sim.hayes import HayesModem
from fep.sim.hayes import serve_pty as serve_modem_pty
from fep.sim.iec62056_21 import IecMeterServerFactory, SimulatedIecMeter
from tests.channels.modem.emulated import MODEM_GUARD, new_exchange
from tests.channels.test_serialport import socat_pty_pair
from tests.daemon import harness
from tests.daemon.harness import Daemon, add_meters, wait_for, write_config
from tests.daemon.test_dlms_push import AK, EK, GOOD, PushingMeter
from tests.processes import fep_command

CALLER = "+493012345678"
SITE = "5551001"


class CallingDlmsMeter(Protocol):
    """The meter's side of its call to the master station: on connect it sends its alarm
    push (standard event 1, power down) and its register push, then stays on the line until
    ``hang_up``."""

    def __init__(self) -> None:
        self.pushing = PushingMeter(GOOD, SecurityKeys(EK, AK), "GOOD0001")
        self.lost = False

    def connectionMade(self) -> None:
        meter, server = self.pushing.meter, self.pushing.server
        assert self.transport is not None
        for body in (meter.alarm_push_body(1), meter.push_body()):
            self.transport.write(
                wrapper.encode_wrapper(wrapper.WrapperFrame(1, 1, server.push(body))))

    def hang_up(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.lost = True


class DialInDaemonTests(unittest.TestCase):
    timeout = 240

    async def test_meter_calls_in_its_alarm_and_readout_are_stored_and_dial_out_waits(
        self,
    ) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        short = Path(tempfile.mkdtemp(prefix="fep-"))
        self.addCleanup(shutil.rmtree, short, True)
        socket = short / "ctl" / "fep.sock"
        db = workdir / "fep.sqlite"
        await add_meters(f"sqlite:{db}", [
            Meter("dlms-1", "dlms", f"dialup:{CALLER}", metadata={
                "dlms_server_system_title": GOOD.hex(), "dlms_ek": EK.hex(),
                "dlms_ak": AK.hex()}),
            Meter("dialup-1", "iec62056-21", f"dialup:{SITE}", address="40000001"),
        ])
        exchange = new_exchange()
        exchange.add(SITE, IecMeterServerFactory([SimulatedIecMeter(address="40000001")],
                                                 reactor))
        modem_end, line = await socat_pty_pair(self)
        modem = HayesModem(exchange, "m1", guard=MODEM_GUARD)
        served = serve_modem_pty(reactor, modem_end, modem)
        self.addCleanup(served.loseConnection)
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=3600, default_task=False,
            extra=(f"[control]\nsocket = {socket}\n"
                   f"[modems]\nlines =\n    m1 serial:{line}:9600:8N1\nanswer = yes\n"
                   "guard = 0.1\nhangup_timeout = 1.0\ndial_timeout = 10\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        rows = partial(harness.sqlite_rows, db)
        await daemon.logged("modem m1 on", timeout=90)
        self.assertTrue(modem.clip)

        meter = CallingDlmsMeter()
        self.assertTrue(exchange.call_in(CALLER, modem, meter))

        async def stored() -> bool:
            return bool(rows("SELECT 1 FROM events WHERE meter = 'dlms-1'")) and bool(
                rows("SELECT 1 FROM readings WHERE meter = 'dlms-1'"))

        await wait_for(stored, 60, "the caller's alarm and readout in the store")
        await daemon.logged(f"call in from {CALLER} on modem m1: meter dlms-1")

        # The only line is busy with the call in: a read of another dial-up meter waits.
        reading = fep_command("--config", str(config), "read", "--meter", "dialup-1",
                              timeout=180)

        async def running() -> bool:
            return bool(rows("SELECT 1 FROM jobs WHERE meter = 'dialup-1' AND status = "
                             "'running'"))

        await wait_for(running, 60, "the read of dialup-1 started (waiting for the line)")
        self.assertEqual(exchange.calls, [])  # nothing dialled during the call in
        meter.hang_up()
        done = await reading
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn('"dialup-1"', done.stdout)
        self.assertEqual([c.number for c in exchange.calls], [SITE])
        self.assertEqual(exchange.incoming, [(CALLER, "m1", "connect")])
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])

        [(kind, code)] = rows("SELECT kind, code FROM events WHERE meter = 'dlms-1'")
        self.assertEqual((kind, code), ("power-outage", "dlms:99.98.0:1"))
        self.assertTrue(rows("SELECT 1 FROM readings WHERE meter = 'dialup-1'"))
        calls = rows("SELECT line, number, outcome FROM modem_calls ORDER BY started")
        self.assertEqual(calls, [("m1", CALLER, "completed"), ("m1", SITE, "completed")])


class CallingAndAnsweringDlmsMeter(CallingDlmsMeter):
    """A calling meter that is also read during its call: after its pushes, the requests
    fep sends over the call are answered by the simulated meter's DLMS server (wrapper,
    HLS-GMAC), its invocation counters above the pushes'; at the read's first request it
    sends a register push first."""

    def __init__(self) -> None:
        super().__init__()
        factory = DlmsMeterServerFactory(
            self.pushing.meter, ServerSettings(system_title=GOOD, keys=SecurityKeys(EK, AK),
                                               allow_lowest=False))
        factory.invocation_counter = 1000
        self.server = factory.buildProtocol(None)
        self.pushed_during_read = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.server.makeConnection(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if not self.pushed_during_read:
            # The read's first request: a register push first (the meter's schedule came).
            self.pushed_during_read = True
            self.push_again()
        self.server.dataReceived(data)

    def push_again(self) -> None:
        assert self.transport is not None
        self.transport.write(wrapper.encode_wrapper(wrapper.WrapperFrame(
            1, 1, self.pushing.server.push(self.pushing.meter.push_body()))))


class ReadDuringCallInDaemonTests(unittest.TestCase):
    """A meter that called in is read during its call: `fep read --meter` of its dialup:
    route goes over the call (nothing dialled), the register read is stored, a push the
    meter sends during the read is told from the answers and stored, and the push receiver
    gets the call back (a push after the read is stored too)."""

    timeout = 240

    async def test_a_meter_that_called_in_is_read_over_its_call(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        short = Path(tempfile.mkdtemp(prefix="fep-"))
        self.addCleanup(shutil.rmtree, short, True)
        socket = short / "ctl" / "fep.sock"
        db = workdir / "fep.sqlite"
        await add_meters(f"sqlite:{db}", [
            Meter("dlms-1", "dlms", f"dialup:{CALLER}", metadata={
                "dlms_server_system_title": GOOD.hex(), "dlms_ek": EK.hex(),
                "dlms_ak": AK.hex(), "dlms_auth": "high-gmac", "dlms_client": "1",
                "dlms_objects": "3/1.0.1.8.0.255/2"}),
        ])
        exchange = new_exchange()
        modem_end, line = await socat_pty_pair(self)
        modem = HayesModem(exchange, "m1", guard=MODEM_GUARD)
        served = serve_modem_pty(reactor, modem_end, modem)
        self.addCleanup(served.loseConnection)
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=3600, default_task=False,
            extra=(f"[control]\nsocket = {socket}\n"
                   f"[modems]\nlines =\n    m1 serial:{line}:9600:8N1\nanswer = yes\n"
                   "guard = 0.1\nhangup_timeout = 1.0\ndial_timeout = 10\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        rows = partial(harness.sqlite_rows, db)
        await daemon.logged("modem m1 on", timeout=90)

        meter = CallingAndAnsweringDlmsMeter()
        self.addCleanup(lambda: None if meter.lost else meter.hang_up())
        self.assertTrue(exchange.call_in(CALLER, modem, meter))

        def pushed() -> int:
            found = rows("SELECT count(*) FROM readings WHERE meter = 'dlms-1' "
                         "AND obis <> '1-0:1.8.0*255'")
            return int(found[0][0]) if found else 0

        async def first_push() -> bool:
            return pushed() > 0 and bool(rows("SELECT 1 FROM events WHERE meter = 'dlms-1'"))

        await wait_for(first_push, 60, "the caller's alarm and readout in the store")

        def energies() -> int:
            found = rows("SELECT count(*) FROM readings WHERE meter = 'dlms-1' "
                         "AND obis = '1-0:1.8.0*255'")
            return int(found[0][0]) if found else 0

        async def energy_rows(n: int) -> None:
            async def enough() -> bool:
                return energies() >= n

            await wait_for(enough, 60, f"{n} energy readings of dlms-1")

        # Read while the meter is on the line: over its call, nothing dialled.
        done = await fep_command("--config", str(config), "read", "--meter", "dlms-1",
                                 timeout=120)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("1-0:1.8.0", done.stdout)
        self.assertEqual(exchange.calls, [])
        await daemon.logged(f"a read over the call from {CALLER}", 30)
        await daemon.logged(f"the read over the call from {CALLER} is done", 30)
        self.assertFalse(meter.lost)  # the read does not hang up
        await energy_rows(3)  # the first push, the push during the read, the read

        # The push receiver has the call back: the next push is stored as well.
        meter.push_again()

        await energy_rows(4)
        meter.hang_up()
        await daemon.logged(f"{CALLER} hung up", 60)
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
        self.assertEqual(exchange.calls, [])
        self.assertEqual(exchange.incoming, [(CALLER, "m1", "connect")])
        # The read is a job of the meter's route, done; its register between the pushes'.
        self.assertEqual(rows("SELECT route, status FROM jobs WHERE meter = 'dlms-1'"),
                         [(f"dialup:{CALLER}", "done")])
        energy = [int(v) for (v,) in rows(
            "SELECT value FROM readings WHERE meter = 'dlms-1' AND obis = '1-0:1.8.0*255' "
            "ORDER BY read_at")]
        self.assertEqual(len(energy), 4)  # push, push during the read, read, push
        self.assertEqual(energy, sorted(energy))  # the meter's register, never back
        calls = rows("SELECT line, number, outcome FROM modem_calls ORDER BY started")
        self.assertEqual(calls, [("m1", CALLER, "completed")])
