"""Acceptance (issue 18, concentrators that dial in): a simulated Q/GDW 1376.1 concentrator
dials in to the running daemon's GPRS listener, is identified by its login (rule ``gw3761``,
its address A1:A2) and confirmed, beats its heart (confirmed), is read now through the HTTP
API over its own session (records stored) while it goes on beating and reporting, reports an
event with ACD and CON that is stored once, confirmed and raises an alarm (and the events it
had not reported are fetched), and junk frames (checksum, length, unknown Fn, a stale time
label, a broken multi-frame report) are counted and logged with its address while the session
stays up."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.gw3761 import services
from fep.protocols.gw3761.formats import TimeFields
from fep.protocols.gw3761.frames import Afn, Control, Frame, Function, Seq, TimeLabel
from fep.protocols.gw3761.services import EventRecord
from fep.sim.concentrator import ConcentratorFactory, ConcentratorProtocol, make_concentrator
from tests.daemon.harness import Daemon, add_meters, free_port, sqlite_rows, wait_for, write_config
from tests.operator.helpers import OPERATOR_TOKEN, http, write_tokens

ADDRESS = "4403:0004"
ROUTE = "gprs:dcu=4403-0004"


def junk(sim: object) -> list[bytes]:
    """Bad frames from the concentrator's address: a bad checksum, a length field that puts
    the end byte elsewhere, a report of an unknown Fn, a heartbeat past its time label's
    delay, a middle frame of a multi-frame report without its first."""
    beat = bytearray(sim.heartbeat())  # type: ignore[attr-defined]
    beat[-2] ^= 0x01
    login = bytearray(sim.login())  # type: ignore[attr-defined]
    longer = ((len(login) - 8 + 1) << 2 | 2).to_bytes(2, "little")
    login[1:3] = longer
    login[3:5] = longer
    address = sim.address  # type: ignore[attr-defined]
    unknown = Frame(Control(Function.USER_DATA, uplink=True, initiator=True), address,
                    Afn.CLASS1, Seq(3, con=True), bytes.fromhex("0000011E"))
    sent = sim.now() - timedelta(hours=3)  # type: ignore[attr-defined]
    stale = Frame(Control(Function.LINK_TEST, uplink=True, initiator=True), address,
                  Afn.LINK, Seq(4, tpv=True, con=True),
                  services.encode_unit(Afn.LINK, [0], [3], True), None, None,
                  TimeLabel(1, TimeFields(second=sent.second, minute=sent.minute,
                                          hour=sent.hour, day=sent.day), 5))
    middle = Frame(Control(Function.USER_DATA, uplink=True, initiator=True), address,
                   Afn.CLASS3, Seq(7, fir=False, fin=False))
    return [bytes(beat), bytes(login) + b"\x00", unknown.encode(), stale.encode(),
            middle.encode()]


class ConcentratorDialInTests(unittest.TestCase):
    timeout = 180

    async def test_login_heartbeat_read_now_report_and_junk(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        rows = partial(sqlite_rows, db)
        await add_meters(f"sqlite:{db}", [
            Meter("DCU1", "gw3761", ROUTE, address=ADDRESS,
                  metadata={"gw3761_items": "0C:F2,0C:F129", "gw3761_points": "1,2"}),
            Meter("m1", "dlt645", "tcp:host=127.0.0.1:port=1", address="000000000001",
                  metadata={"concentrator": "DCU1", "point": "P1"}),
            Meter("m2", "dlt645", "tcp:host=127.0.0.1:port=1", address="000000000002",
                  metadata={"concentrator": "DCU1", "point": "P2"}),
        ])
        write_tokens(workdir / "tokens")
        http_port, gprs_port = free_port(), free_port()
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=3600, default_task=False,
            extra=(f"[http]\nport = {http_port}\ntokens_file = {workdir / 'tokens'}\n"
                   f"[gprs]\nlisten = tcp:{gprs_port}:interface=127.0.0.1\n"
                   "identify = ascii gw3761\nunknown = reject\nidle_timeout = 300\n"
                   "[control]\nenabled = no\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        await daemon.ready(timeout=120)

        sim = make_concentrator(2, ADDRESS)
        factory = ConcentratorFactory(sim, reactor, dials=True, heartbeat=0.5,
                                      answer_delay=0.05)
        protocol = await TCP4ClientEndpoint(reactor, "127.0.0.1", gprs_port).connect(factory)
        assert isinstance(protocol, ConcentratorProtocol)
        self.addCleanup(lambda: protocol.transport and protocol.transport.loseConnection())

        # Login (PSEQ 0) confirmed; heartbeats confirmed.
        async def confirmed(n: int) -> bool:
            return len(sim.confirmations) >= n

        await wait_for(partial(confirmed, 3), 30, "login and two heartbeats confirmed",
                       every=0.05)
        self.assertEqual(sim.confirmations[0], 0)
        await daemon.logged(f"modem gw3761={ADDRESS} from 127.0.0.1", 30)
        await daemon.logged("attached to DCU1 (gw3761)", 30)
        await daemon.logged("login confirmed", 30)
        await daemon.logged("heartbeat confirmed", 30)

        # Read now through the API, over the concentrator's own session; a report sent in
        # the middle of it is stored and confirmed all the same (handed over by the read to
        # the session's report handler, or taken by it if it came before the pipe opened).
        base = f"http://127.0.0.1:{http_port}/api/v1"
        mid = EventRecord(13, sim.now() - timedelta(minutes=7), 1, True, {"flags": 0x08})

        def report_mid_read() -> None:
            protocol.send(sim.report_event(mid))

        reactor.callLater(0.08, report_mid_read)
        r = await http(f"{base}/meters/DCU1/read", method=b"POST", token=OPERATOR_TOKEN)
        self.assertEqual(r.status, 200, r.body)
        readings = r.json()["readings"]
        self.assertTrue(readings)
        self.assertEqual({x["meter"] for x in readings} - {"DCU1"}, {"DCU1/P1", "DCU1/P2"})
        self.assertEqual(rows("SELECT status, records > 0 FROM jobs WHERE meter = 'DCU1'"),
                         [("done", 1)])

        # An event reported with ACD and CON: stored once, confirmed, an alarm; the events
        # the concentrator had not reported before (ACD) are fetched and stored too.
        event = EventRecord(13, sim.now() - timedelta(minutes=1), 2, True, {"flags": 0x08})
        before = len(sim.confirmations)
        raw = sim.report_event(event)
        protocol.send(raw)

        async def alarm_raised() -> bool:
            return bool(rows("SELECT 1 FROM alarms WHERE meter = 'm2' AND code = 'ERC13'"))

        await wait_for(alarm_raised, 30, "the reported event's alarm", every=0.1)
        self.assertIn(raw[13] & 0x0F, sim.confirmations[before:])

        async def fetched() -> bool:
            return bool(rows("SELECT 1 FROM events WHERE meter = 'DCU1' AND code = 'ERC14'"))

        await wait_for(fetched, 30, "the events fetched on ACD", every=0.1)
        # Sent again (as if the confirmation were lost): still stored once.
        again = len(sim.confirmations)
        protocol.send(raw)
        await wait_for(partial(confirmed, again + 1), 30, "the repeat confirmed", every=0.05)
        self.assertEqual(rows("SELECT count(*) FROM events WHERE meter = 'm2'"), [(1,)])
        self.assertEqual(rows("SELECT count(*) FROM events WHERE meter = 'm1' AND code = "
                              "'ERC13'"), [(2,)])  # the startup one and the mid-read one
        self.assertEqual(rows("SELECT kind, severity FROM alarms WHERE meter = 'm2'"),
                         [("meter-error", "major")])

        # Junk on the session: each counted and logged with the address; the session stays.
        for frame in junk(sim):
            protocol.send(frame)
        beats = len(sim.confirmations)
        await wait_for(partial(confirmed, beats + 2), 30, "heartbeats confirmed after junk",
                       every=0.05)
        for kind in ("checksum", "length", "unknown", "stale", "multi-frame"):
            await daemon.logged(f"bad input dropped ({kind})", 30)
        log = daemon.log_text()
        bad = [line for line in log.splitlines() if "bad input dropped" in line]
        self.assertTrue(all(f"concentrator DCU1 ({ADDRESS})" in line for line in bad), bad)
        self.assertIn("5 bad frames on this session", bad[-1])
        self.assertEqual(factory.connections, 1)
        self.assertEqual(len(factory.protocols), 1)
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])
