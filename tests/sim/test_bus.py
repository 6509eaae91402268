"""The simulated multidrop bus: meters of mixed protocols on one line, each answering only
what is addressed to it and deaf to the others' traffic; fep reads them one after the other
over a socat pty pair, and a meter that is not there costs its own timeout only."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor as global_reactor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from fep.channels.routes import Channels
from fep.directory import addressed
from fep.errors import SessionTimeout
from fep.model import Meter, Reading
from fep.protocols.dlms import hdlc
from fep.protocols.dlt645.frames import Frame
from fep.protocols.iec62056_21.frames import SignOn
from fep.protocols.registry import meter_protocol
from fep.sim.bus import SimulatedBus, mixed_bus, serve_pty
from tests.channels.test_serialport import socat_pty_pair
from tests.processes import fep_command, start_module

reactor: Any = global_reactor

IEC, DLT, DLMS = "iec62056-21@10000001", "dlt645@000000123456", "dlms@1/17"


def _bus(**kwargs: Any) -> tuple[SimulatedBus, StringTransport, Clock]:
    clock = Clock()
    factory = mixed_bus(clock, iec=["10000001"], dlt645=["000000123456"], dlms=[17], **kwargs)
    bus = factory.buildProtocol(None)
    line = StringTransport()
    bus.makeConnection(line)
    return bus, line, clock


def _dlt645_read(address: str) -> bytes:
    # Read DI 00010000 (forward active energy, total), DL/T 645-2007 control code 0x11.
    return Frame(address, 0x11, bytes.fromhex("00000100")).encode(preamble=4)


def _snrm(physical: int) -> bytes:
    return hdlc.encode_frame(hdlc.HdlcFrame(
        hdlc.FrameKind.SNRM, hdlc.HdlcAddress(1, physical), hdlc.HdlcAddress(16)))


class AddressingTests(unittest.TestCase):
    def test_each_meter_answers_only_its_own_address(self) -> None:
        for request, member in (
            (SignOn("10000001").encode(), IEC),
            (_dlt645_read("000000123456"), DLT),
            (_snrm(17), DLMS),
        ):
            bus, line, clock = _bus()
            bus.dataReceived(request)
            clock.advance(0.5)
            answered = {name for name, size in bus.answered().items() if size}
            self.assertEqual(answered, {member}, request)
            self.assertTrue(line.value())

    def test_nobody_answers_an_address_not_on_the_bus(self) -> None:
        bus, line, clock = _bus()
        for request in (SignOn("10000009").encode(), _dlt645_read("000000999999"), _snrm(18)):
            bus.dataReceived(request)
        clock.advance(1)
        self.assertEqual(line.value(), b"")

    def test_idle_iec_meter_is_deaf_to_other_protocols_then_answers_its_sign_on(self) -> None:
        # DL/T 645 and HDLC frames carry STX/SOH/'/' bytes an IEC decoder would take for
        # the start of a block or message.
        bus, line, clock = _bus()
        junk = _dlt645_read("000000999999") + _snrm(99) + b"\x02\x01/\x7e" + b"/?1000"
        bus.dataReceived(junk)
        bus.dataReceived(SignOn("10000001").encode())
        clock.advance(0.5)
        self.assertTrue(line.value().startswith(b"/FEP5BUS001\r\n"), line.value())

    @given(st.binary(max_size=200))
    def test_any_traffic_before_a_sign_on_does_not_wedge_the_iec_meter(self, junk: bytes) -> None:
        bus, line, clock = _bus()
        bus.dataReceived(junk)
        line.clear()
        bus.dataReceived(SignOn("10000001").encode())
        clock.advance(0.5)
        self.assertIn(b"/FEP5BUS001\r\n", line.value())

    def test_echoing_line_sends_the_master_its_own_bytes(self) -> None:
        bus, line, _clock = _bus(echo=True)
        bus.dataReceived(b"/?10000009!\r\n")
        self.assertEqual(line.value(), b"/?10000009!\r\n")


class BusOnAPtyTests(unittest.TestCase):
    timeout = 60

    async def test_three_meters_of_mixed_protocols_read_one_after_the_other(self) -> None:
        a, b = await socat_pty_pair(self)
        factory = mixed_bus(reactor, iec=["10000001"], dlt645=["000000123456"], dlms=[17])
        port = serve_pty(reactor, b, factory)
        self.addCleanup(port.loseConnection)
        channels = Channels(reactor)
        meters = [
            Meter("iec", "iec62056-21", f"serial:{a}:300:7E1:gap=0.02@10000001"),
            Meter("dlt", "dlt645", f"serial:{a}:2400:8E1:gap=0.02@000000123456"),
            Meter("dlms", "dlms", f"serial:{a}:9600:8N1:gap=0.02@1/17",
                  metadata={"dlms_link": "hdlc"}),
        ]
        got: dict[str, list[Any]] = {}
        for meter in map(addressed, meters):
            got[meter.id] = await meter_protocol(meter.protocol).read(
                reactor, channels.endpoint_for(meter.route), meter, 5)
        self.assertEqual({r.meter for records in got.values() for r in records},
                         {"iec", "dlt", "dlms"})
        iec = {r.native_id: r.value for r in got["iec"] if isinstance(r, Reading)}
        self.assertEqual(iec["0.0.0"], "10000001")
        self.assertTrue(all(factory.buses[0].answered().values()))

    async def test_echoing_line_read_with_the_echo_option(self) -> None:
        a, b = await socat_pty_pair(self)
        factory = mixed_bus(reactor, iec=["10000001"], dlt645=["000000123456"], echo=True)
        port = serve_pty(reactor, b, factory)
        self.addCleanup(port.loseConnection)
        channels = Channels(reactor)
        for meter in map(addressed, (
            Meter("iec", "iec62056-21", f"serial:{a}:echo=yes:gap=0.02@10000001"),
            Meter("dlt", "dlt645", f"serial:{a}:2400:8E1:echo=yes:gap=0.02@000000123456"),
        )):
            records = await meter_protocol(meter.protocol).read(
                reactor, channels.endpoint_for(meter.route), meter, 5)
            self.assertEqual({r.meter for r in records}, {meter.id})

    async def test_meter_that_never_answers_fails_alone(self) -> None:
        a, b = await socat_pty_pair(self)
        port = serve_pty(reactor, b, mixed_bus(reactor, dlt645=["000000123456"]))
        self.addCleanup(port.loseConnection)
        channels = Channels(reactor)
        gone = addressed(Meter("gone", "dlt645", f"serial:{a}:2400:8E1@000000999999",
                               metadata={"retries": "0"}))
        with self.assertRaises(SessionTimeout) as caught:
            await meter_protocol(gone.protocol).read(
                reactor, channels.endpoint_for(gone.route), gone, 0.3)
        self.assertEqual(caught.exception.meter, "gone")
        here = addressed(Meter("here", "dlt645", f"serial:{a}:2400:8E1@000000123456"))
        self.assertTrue(await meter_protocol(here.protocol).read(
            reactor, channels.endpoint_for(here.route), here, 5))


class CommandLineTests(unittest.TestCase):
    """``python -m fep.sim.bus`` on a pty, read by ``fep read`` with the route's address."""

    timeout = 60

    async def test_fep_read_of_each_meter_on_a_simulated_bus(self) -> None:
        a, b = await socat_pty_pair(self)
        line = await start_module(self, "fep.sim.bus", "--pty", b, "--iec", "10000001",
                                  "--dlt645", "000000123456")
        self.assertIn("iec62056-21@10000001, dlt645@000000123456", line)

        def fep_read(*args: str) -> Any:
            return fep_command("read", *args)

        result = await fep_read(f"serial:{a}:2400:8E1@000000123456", "--protocol", "dlt645",
                                "--meter", "dlt-1", "--format", "json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('{"meter": "dlt-1", "obis": "1-0:1.8.0*255", "value": 1234.5',
                      result.stdout)
        result = await fep_read(f"serial:{a}:gap=0.05@10000001", "--protocol", "iec62056-21",
                                "--format", "json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('"10000001"', result.stdout)
