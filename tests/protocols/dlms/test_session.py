"""The Twisted DLMS session against the simulated meter over loopback TCP, with the wrapper
and with HDLC: registers with units, the clock, a profile by range, the object list, events;
errors name the meter; `fep read --protocol dlms` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from fep.errors import SessionTimeout
from fep.model import IntervalBlock, Meter, MeterEvent, Reading
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms.errors import AssociationRefused, DataAccessError
from fep.protocols.dlms.security import SecurityKeys
from fep.protocols.dlms.server import ServerSettings
from fep.protocols.dlms.session import DlmsProtocol
from fep.protocols.dlms.settings import parse_object
from fep.protocols.registry import meter_protocol
from fep.sim import dlms_meter as sim
from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK, DlmsMeterServerFactory

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2024, 5, 2, 10, 7, 12, tzinfo=UTC)
TITLE = bytes.fromhex("4D4D4D0000BC614E")


class SessionTests(unittest.TestCase):
    timeout = 30

    def serve(self, *, hdlc: bool = False, allow_lowest: bool = True) -> sim.SimulatedDlmsMeter:
        meter = sim.SimulatedDlmsMeter(now=lambda: NOW, history=timedelta(days=3))
        meter.events.append((NOW - timedelta(hours=2), 1))
        settings = ServerSettings(
            system_title=TITLE,
            password=b"12345678",
            keys=SecurityKeys(EXAMPLE_EK, EXAMPLE_AK),
            allow_lowest=allow_lowest,
            max_pdu_size=512,
        )
        factory = DlmsMeterServerFactory(meter, settings, hdlc=hdlc)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.factory = factory
        return meter

    def meter(self, **metadata: str) -> Meter:
        return Meter("m1", "dlms", f"tcp:host=127.0.0.1:port={self.port}", metadata=metadata)

    async def read(self, meter: Meter, timeout: float = 5.0) -> list:
        from fep.protocols.dlms.context import DlmsContext
        from fep.store.counters import InvocationCounterFile

        counters = getattr(self, "counters", None)
        if counters is None:
            counters = self.counters = InvocationCounterFile(
                reactor, Path(self.mktemp()) / "counters.json")
            await counters.open()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        return await DlmsProtocol(DlmsContext(counters)).read(reactor, endpoint, meter, timeout)

    def by_obis(self, records: list) -> dict:
        return {str(r.obis): r for r in records if isinstance(r, Reading)}

    async def test_wrapper_registers_and_clock(self) -> None:
        self.serve()
        records = await self.read(self.meter())
        readings = self.by_obis(records)
        energy = readings["1-0:1.8.0*255"]
        self.assertEqual((energy.value, energy.unit_text), (Decimal(sim.energy_wh(NOW)), "Wh"))
        voltage = readings["1-0:32.7.0*255"]
        self.assertEqual(voltage.unit_text, "V")
        self.assertEqual(voltage.value, Decimal(2301 + NOW.minute % 7) / 10)
        clock = readings["0-0:1.0.0*255"]
        self.assertEqual(clock.meter_time, NOW.replace(microsecond=0))

    async def test_hdlc_with_lls_and_a_profile_by_range(self) -> None:
        self.serve(hdlc=True)
        start, end = NOW - timedelta(hours=3), NOW - timedelta(hours=1)
        records = await self.read(
            self.meter(
                dlms_link="hdlc",
                dlms_auth="low",
                dlms_password="12345678",
                dlms_profile="1.0.99.1.0.255",
                dlms_from=start.isoformat(),
                dlms_to=end.isoformat(),
                dlms_objects="3/1.0.1.8.0.255/2",
            )
        )
        blocks = [r for r in records if isinstance(r, IntervalBlock)]
        imports = next(b for b in blocks if str(b.obis) == "1-0:1.8.0*255")
        self.assertEqual(imports.period, timedelta(minutes=15))
        self.assertEqual(len(imports.values), 8)  # 07:15 .. 09:00 capture times inclusive
        first_capture = imports.start + imports.period
        self.assertEqual(imports.values[0], Decimal(sim.energy_wh(first_capture)))
        self.assertEqual(str(imports.unit.symbol), "Wh")

    async def test_hls_gmac_ciphered_over_hdlc_reads_the_event_log(self) -> None:
        self.serve(hdlc=True, allow_lowest=False)
        records = await self.read(
            self.meter(
                dlms_link="hdlc",
                dlms_auth="high-gmac",
                dlms_ek=EXAMPLE_EK.hex(),
                dlms_ak=EXAMPLE_AK.hex(),
                dlms_profile="0.0.99.98.0.255",
                dlms_objects="8/0.0.1.0.0.255/2",
            )
        )
        events = [r for r in records if isinstance(r, MeterEvent)]
        self.assertEqual([e.kind.value for e in events], ["power-outage"])
        self.assertEqual(events[0].time, NOW - timedelta(hours=2))

    async def test_refusal_names_the_meter_and_reason(self) -> None:
        self.serve(allow_lowest=False)
        with self.assertRaises(AssociationRefused) as caught:
            await self.read(self.meter())
        self.assertEqual(caught.exception.meter, "m1")
        self.assertIn("authentication-required", str(caught.exception))

    async def test_unknown_object_is_skipped_not_fatal(self) -> None:
        self.serve()
        records = await self.read(self.meter(dlms_objects="3/1.0.99.99.0.255/2,3/1.0.1.8.0.255/2"))
        self.assertEqual(list(self.by_obis(records)), ["1-0:1.8.0*255"])

    async def test_get_of_unknown_object_raises_data_access_error(self) -> None:
        from fep.protocols.dlms.session import open_session
        from fep.protocols.dlms.settings import settings_for

        self.serve()
        client, link = settings_for(self.meter())
        session = await open_session(
            reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client, link, timeout=5
        )
        await session.associate()
        with self.assertRaises(DataAccessError) as caught:
            await session.get(parse_object("3/1.0.99.99.0.255/2"))
        self.assertEqual(caught.exception.result_name, "object-undefined")
        self.assertIn("1-0:99.99.0*255", str(caught.exception))
        self.assertEqual(caught.exception.meter, "m1")
        objects = await session.object_list()
        self.assertIn(sim.LOAD_PROFILE, [o.logical_name for o in objects])
        await session.release()

    async def test_silent_meter_times_out_naming_the_step(self) -> None:
        silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        self.port = silent.getHost().port
        with self.assertRaises(SessionTimeout) as caught:
            await self.read(self.meter(dlms_link="hdlc"), timeout=0.3)
        self.assertIn("SNRM", str(caught.exception))
        self.assertEqual(caught.exception.meter, "m1")

    async def test_refused_connection_is_a_channel_error_naming_the_route(self) -> None:
        from fep.errors import ChannelError

        closed = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.port = closed.getHost().port
        await closed.stopListening()
        with self.assertRaises(ChannelError) as caught:
            await self.read(self.meter())
        self.assertEqual(caught.exception.route, f"tcp:host=127.0.0.1:port={self.port}")

    def test_registry_knows_dlms(self) -> None:
        self.assertEqual(meter_protocol("dlms").name, "dlms")

    def test_object_syntax(self) -> None:
        self.assertEqual(
            parse_object("3/1-0:1.8.0.255/2"), A.AttributeDescriptor(3, sim.ACTIVE_IMPORT, 2)
        )

    async def test_fep_read_command(self) -> None:
        self.serve()
        cmd = [
            sys.executable,
            "-m",
            "fep.cli",
            "read",
            f"tcp:host=127.0.0.1:port={self.port}",
            "--protocol",
            "dlms",
            "--meter",
            "cli-meter",
            "3/1-0:1.8.0.255/2",
            "3/1.0.32.7.0.255/2",
        ]
        done = await deferToThread(
            subprocess.run, cmd, capture_output=True, text=True, cwd=ROOT, timeout=120
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        self.assertEqual(
            [(r["obis"], r["unit"]) for r in rows],
            [("1-0:1.8.0*255", "Wh"), ("1-0:32.7.0*255", "V")],
        )
        self.assertEqual(rows[0]["meter"], "cli-meter")


class KeyedReadCommandTests(unittest.TestCase):
    """`fep read` of a meter with keys takes its invocation counters from the daemon's store
    (--config), or refuses: counters of its own could repeat ones the daemon sent."""

    timeout = 60

    async def fep_read(self, port: int, *options: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "fep.cli", *options, "read",
               f"tcp:host=127.0.0.1:port={port}", "--protocol", "dlms", "--meter", "m1",
               "--ek", EXAMPLE_EK.hex(), "--ak", EXAMPLE_AK.hex(), "3/1.0.1.8.0.255/2"]
        done: subprocess.CompletedProcess[str] = await deferToThread(
            subprocess.run, cmd, capture_output=True, text=True, cwd=ROOT, timeout=30)
        return done

    async def test_keyed_read_without_a_store_is_refused(self) -> None:
        done = await self.fep_read(1)
        self.assertEqual(done.returncode, 2, done.stderr)
        self.assertIn("has DLMS keys", done.stderr)
        self.assertIn("--config", done.stderr)

    async def test_keyed_reads_use_the_daemons_counters(self) -> None:
        from fep.protocols.dlms.identity import node_system_title

        meter = sim.SimulatedDlmsMeter(now=lambda: NOW)
        factory = DlmsMeterServerFactory(
            meter, ServerSettings(system_title=TITLE, keys=SecurityKeys(EXAMPLE_EK, EXAMPLE_AK)))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        config = workdir / "fep.ini"
        config.write_text(f"[fep]\nnode = cli-node\ndata_dir = {workdir}\n"
                          f"[store]\nurl = sqlite:{workdir}/fep.sqlite\n")
        for _ in range(2):
            done = await self.fep_read(port.getHost().port, "--config", str(config))
            self.assertEqual(done.returncode, 0, done.stderr)
            self.assertEqual(json.loads(done.stdout)["obis"], "1-0:1.8.0*255")
        self.assertEqual(factory.errors, [])
        titles = {title for title, _ in factory.seen_counters}
        self.assertEqual(titles, {node_system_title("cli-node")})
        counters = [c for _, c in factory.seen_counters]
        self.assertEqual(len(counters), len(set(counters)))
        saved = json.loads((workdir / "dlms-invocation-counters.json").read_text())
        # Per key, and the meter's floor across its keys (TITLE:METER_ID).
        self.assertEqual(len(saved["send"]), 2)
        for key in saved["send"]:
            self.assertTrue(key.startswith(node_system_title("cli-node").hex() + ":"))


class InvocationCounterTests(unittest.TestCase):
    """Counters fep sends with are reserved on disk: consecutive ciphered sessions never
    reuse one, and the meter (which remembers the last it accepted) keeps answering."""

    timeout = 30

    async def test_consecutive_ciphered_reads_never_reuse_a_counter(self) -> None:
        from fep.protocols.dlms import session as dlms_session
        from fep.protocols.dlms.context import DlmsContext
        from fep.store.counters import InvocationCounterFile

        store = InvocationCounterFile(reactor, Path(self.mktemp()) / "counters.json")
        await store.open()
        context = DlmsContext(store)
        meter = sim.SimulatedDlmsMeter(now=lambda: NOW)
        factory = DlmsMeterServerFactory(
            meter, ServerSettings(system_title=TITLE, keys=SecurityKeys(EXAMPLE_EK, EXAMPLE_AK))
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        record = Meter(
            "m1",
            "dlms",
            "tcp:",
            metadata={
                "dlms_ek": EXAMPLE_EK.hex(),
                "dlms_ak": EXAMPLE_AK.hex(),
                "dlms_objects": "3/1.0.1.8.0.255/2",
            },
        )
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        for _ in range(3):
            records = await DlmsProtocol(context).read(reactor, endpoint, record, 5)
            self.assertEqual(len(records), 1)
        ((_title, last),) = factory.received_counters.items()
        self.assertGreater(last, 2 * dlms_session.COUNTERS_PER_SESSION)
        self.assertEqual(factory.errors, [])
        # A client that starts again from 1 (counters not kept) is refused as a replay.
        forgetful = InvocationCounterFile(reactor, Path(self.mktemp()) / "fresh.json")
        await forgetful.open()
        with self.assertRaises(AssociationRefused):
            await DlmsProtocol(DlmsContext(forgetful)).read(
                reactor, endpoint, record, 5)
        self.assertTrue(any("replayed" in e for e in factory.errors), factory.errors)


class CommandTests(unittest.TestCase):
    """Clock setting, remote disconnect/reconnect and image transfer over a real session."""

    timeout = 30

    async def test_commands(self) -> None:
        from fep.protocols.dlms.session import open_session
        from fep.protocols.dlms.settings import settings_for

        meter = sim.SimulatedDlmsMeter(now=lambda: NOW)
        factory = DlmsMeterServerFactory(
            meter,
            ServerSettings(system_title=TITLE, password=b"12345678", max_pdu_size=256),
            hdlc=True,
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        record = Meter(
            "m1",
            "dlms",
            "tcp:",
            metadata={"dlms_link": "hdlc", "dlms_auth": "low", "dlms_password": "12345678"},
        )
        client, link = settings_for(record)
        session = await open_session(
            reactor,
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
            client,
            link,
            timeout=5,
        )
        await session.associate()
        await session.set_clock(NOW + timedelta(seconds=90))
        self.assertEqual(meter.clock_offset, timedelta(seconds=90))
        self.assertEqual(await session.disconnect(), 0)
        self.assertEqual(await session.reconnect(), 1)
        image = bytes(range(256)) * 10
        seen: list[tuple[int, int]] = []
        await session.transfer_image(b"FW-2.1", image, progress=lambda n, t: seen.append((n, t)))
        self.assertEqual(seen[-1], (13, 13))  # 2560 bytes in blocks of 200
        self.assertEqual(b"".join(meter.image["blocks"][k] for k in range(13)), image)
        self.assertEqual(meter.image["status"], 6)  # activation successful
        self.assertEqual([code for _, code in meter.events], [4, 5, 61, 62, 18])
        await session.release()


class SerialLineTests(unittest.TestCase):
    """HDLC over a serial line: the simulated meter on one end of a socat pty pair, fep's
    `serial:` route on the other."""

    timeout = 30

    async def test_hdlc_over_a_pty_pair(self) -> None:
        from fep.channels.endpoints import client_endpoint
        from fep.channels.serialport import FepSerialPort, SerialSettings
        from tests.channels.test_serialport import socat_pty_pair

        a, b = await socat_pty_pair(self)
        meter = sim.SimulatedDlmsMeter(now=lambda: NOW)
        factory = DlmsMeterServerFactory(meter, ServerSettings(system_title=TITLE), hdlc=True)
        protocol = factory.buildProtocol(None)
        port = FepSerialPort(protocol, SerialSettings(str(b), baudrate=9600, bytesize=8,
                                                      parity="N"), reactor)
        self.addCleanup(port.loseConnection)
        route = f"serial:{a}:9600:8N1"
        record = Meter("m1", "dlms", route, metadata={
            "dlms_link": "hdlc", "dlms_objects": "3/1.0.1.8.0.255/2,8/0.0.1.0.0.255/2"})
        records = await DlmsProtocol().read(reactor, client_endpoint(reactor, route), record, 5)
        readings = {str(r.obis): r for r in records}
        self.assertEqual(readings["1-0:1.8.0*255"].value, Decimal(sim.energy_wh(NOW)))
        self.assertEqual(readings["0-0:1.0.0*255"].meter_time, NOW.replace(microsecond=0))


class WrapperLinkTests(unittest.TestCase):
    """The session's wrapper link decodes past junk in the same call (issue 14 audit)."""

    def test_answer_after_junk_in_one_read_is_delivered_at_once(self) -> None:
        from fep.errors import FrameError
        from fep.protocols.dlms import link as dlms_link
        from fep.protocols.dlms import wrapper

        link = dlms_link.WrapperLink(dlms_link.LinkSettings(client_address=16))
        answer = wrapper.encode_wrapper(wrapper.WrapperFrame(1, 16, b"\xc4\x01\xc1\x00\x11\x05"))
        apdus, _ = link.receive(b"\x12\x34\x56\x78\x9a" + answer)
        self.assertEqual(apdus, [b"\xc4\x01\xc1\x00\x11\x05"])
        with self.assertRaises(FrameError):
            link.receive(b"\x12\x34\x56\x78\x9a")
        self.assertEqual(link.decoder.buffered, 0)
