"""The IEC 62056-21 meter simulator: readouts, multidrop answers, delays, push mode, and its
command line driven end to end with ``fep read`` (TCP and a socat pty pair)."""

from __future__ import annotations

import subprocess
from decimal import Decimal
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest
from zope.interface import implementer

from fep.interfaces import IRecordSink
from fep.model import Reading
from fep.protocols.iec62056_21.client import ModeCClient, ReadoutReceived
from fep.protocols.iec62056_21.frames import Command, FrameDecoder
from fep.protocols.iec62056_21.readout import parse_readout, to_readings
from fep.protocols.iec62056_21.session import PushedReadoutFactory
from fep.sim.iec62056_21 import (
    IecMeterServerFactory,
    PushingMeterProtocol,
    Register,
    SimulatedIecMeter,
    make_meters,
)
from tests.channels.test_serialport import socat_pty_pair
from tests.processes import fep_command, start_module, tcp_simulator

reactor: Any = global_reactor


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def values(meter: SimulatedIecMeter) -> dict[str, Reading]:
    readout = parse_readout(meter.readout())
    return {str(r.obis): r for r in to_readings(readout, "sim")}


class ReadoutTests(unittest.TestCase):
    def test_energy_register_advances_with_wall_time(self) -> None:
        clock = FakeClock()
        meter = SimulatedIecMeter(
            clock=clock, registers=[Register("1.8.0", Decimal("100"), Decimal("2"))]
        )
        before = values(meter)["1-0:1.8.0*255"].value
        clock.now += 1800
        after = values(meter)["1-0:1.8.0*255"].value
        self.assertEqual((before, after), (Decimal("100.000"), Decimal("101.000")))

    def test_readout_holds_the_meter_clock_in_utc(self) -> None:
        meter = SimulatedIecMeter(clock=FakeClock(1_700_000_000.0))
        reading = values(meter)["1-0:1.8.0*255"]
        assert reading.meter_time is not None
        self.assertEqual(reading.meter_time.timestamp(), 1_700_000_000.0)

    def test_readout_block_has_a_good_bcc(self) -> None:
        (block,) = FrameDecoder().receive(SimulatedIecMeter().readout_block())
        self.assertTrue(block.bcc_ok)  # type: ignore[union-attr]

    def test_corrupt_bcc_switch_breaks_only_the_bcc(self) -> None:
        (block,) = FrameDecoder().receive(SimulatedIecMeter(corrupt_bcc=True).readout_block())
        self.assertFalse(block.bcc_ok)  # type: ignore[union-attr]

    def test_fixed_readout_text_is_served_as_given(self) -> None:
        meter = SimulatedIecMeter(readout_text=b"1.8.0(7*kWh)\r\n!\r\n")
        self.assertEqual(meter.readout(), b"1.8.0(7*kWh)\r\n!\r\n")

    def test_made_meters_have_distinct_addresses(self) -> None:
        self.assertEqual([m.address for m in make_meters(3)], ["10000001", "10000002", "10000003"])


class LineTests(unittest.TestCase):
    def connect(
        self, meters: list[SimulatedIecMeter], delay: float = 0.0
    ) -> tuple[MemoryReactorClock, StringTransport, Any]:
        clock = MemoryReactorClock()
        factory = IecMeterServerFactory(meters, clock, answer_delay=delay)
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        assert proto is not None
        transport = StringTransport()
        proto.makeConnection(transport)
        return clock, transport, proto

    def test_single_meter_answers_a_generic_sign_on(self) -> None:
        clock, transport, proto = self.connect([SimulatedIecMeter()])
        proto.dataReceived(b"/?!\r\n")
        clock.advance(0)
        self.assertEqual(transport.value(), b"/FEP5SIM100\r\n")

    def test_multidrop_line_ignores_a_generic_sign_on(self) -> None:
        clock, transport, proto = self.connect(make_meters(2))
        proto.dataReceived(b"/?!\r\n")
        clock.advance(1)
        self.assertEqual(transport.value(), b"")

    def test_multidrop_line_answers_the_addressed_meter(self) -> None:
        clock, transport, proto = self.connect(make_meters(3))
        proto.dataReceived(b"/?10000002!\r\n")
        clock.advance(0)
        self.assertEqual(transport.value(), b"/FEP5SIM002\r\n")

    def test_answer_delay_holds_the_identification_back(self) -> None:
        clock, transport, proto = self.connect([SimulatedIecMeter()], delay=1.5)
        proto.dataReceived(b"/?!\r\n")
        clock.advance(1.4)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.2)
        self.assertEqual(transport.value(), b"/FEP5SIM100\r\n")

    def test_programming_mode_request_is_refused_by_a_readout_only_meter(self) -> None:
        clock, transport, proto = self.connect([SimulatedIecMeter(programming=False)])
        proto.dataReceived(b"/?!\r\n")
        clock.advance(0)
        transport.clear()
        proto.dataReceived(b"\x06051\r\n")
        clock.advance(0)
        self.assertEqual(transport.value(), b"\x15")

    def test_programming_mode_request_gets_the_password_prompt(self) -> None:
        clock, transport, proto = self.connect([SimulatedIecMeter(seed="4711")])
        proto.dataReceived(b"/?!\r\n")
        clock.advance(0)
        transport.clear()
        proto.dataReceived(b"\x06051\r\n")
        clock.advance(0)
        self.assertEqual(transport.value(), Command("P", "0", b"(4711)").encode())

    def test_commands_around_a_damaged_one_in_the_same_bytes_are_all_taken(self) -> None:
        # The password, a damaged read and the read again in one chunk: the password before
        # the damage is not lost with it, the damaged read gets a NAK and the read behind it
        # is answered now, not when the master sends again.
        meter = SimulatedIecMeter()
        clock, transport, proto = self.connect([meter])
        proto.dataReceived(b"/?!\r\n")
        clock.advance(0)
        proto.dataReceived(b"\x06051\r\n")
        clock.advance(0)
        transport.clear()
        read = Command("R", "5", b"0.9.1()").encode()
        damaged = read[:-1] + bytes([read[-1] ^ 1])
        proto.dataReceived(Command("P", "1", b"(00000000)").encode() + damaged + read)
        clock.advance(0)
        self.assertEqual(meter.commands_seen, ["P1", "R5 0.9.1()"])
        self.assertTrue(transport.value().startswith(b"\x06\x15\x02"))

    def test_client_and_simulator_complete_a_readout(self) -> None:
        clock, transport, proto = self.connect([SimulatedIecMeter()])
        client = ModeCClient()
        proto.dataReceived(client.start())
        clock.advance(0)
        actions = client.receive_data(transport.value())
        transport.clear()
        proto.dataReceived(actions[1].data)  # type: ignore[union-attr]
        clock.advance(1)
        result = client.receive_data(transport.value())[-1]
        assert isinstance(result, ReadoutReceived)
        self.assertEqual(result.readout.serial(), "12345678")


@implementer(IRecordSink)
class Sink:
    def __init__(self) -> None:
        self.arrived: Deferred[list[Any]] = Deferred()

    def submit(self, records: Any) -> Deferred[None]:
        if not self.arrived.called:
            self.arrived.callback(list(records))
        return succeed(None)


class PushModeTests(unittest.TestCase):
    @inlineCallbacks
    def test_pushing_meter_reaches_a_push_receiver(self) -> Any:
        sink = Sink()
        factory = PushedReadoutFactory(sink, lambda ident, serial: f"meter-{serial}")
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pusher = PushingMeterProtocol(SimulatedIecMeter(address="555"), 60.0, reactor)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        yield connectProtocol(endpoint, pusher)
        self.addCleanup(pusher.transport.loseConnection)  # type: ignore[union-attr]
        records = yield sink.arrived
        self.assertEqual({r.meter for r in records}, {"meter-555"})
        self.assertTrue(records[0].source.startswith("tcp-push:127.0.0.1:"))



def start_simulator(case: unittest.TestCase, *args: str) -> Deferred[str]:
    """Run ``python -m fep.sim.iec62056_21 ARGS``; fires with its first line."""
    return start_module(case, "fep.sim.iec62056_21", *args)


def fep_read(*args: str) -> Deferred[subprocess.CompletedProcess[str]]:
    return fep_command("read", "--protocol", "iec62056-21", *args)


class CommandLineTests(unittest.TestCase):
    """The acceptance path: the simulator process, read by the ``fep read`` command."""

    def tcp_route(self, *args: str) -> Deferred[str]:
        route: Deferred[str] = tcp_simulator(self, "iec62056_21", "--tcp", "0", *args)
        return route

    @inlineCallbacks
    def test_fep_read_over_tcp_returns_the_simulated_values(self) -> Any:
        route = yield self.tcp_route("--meters", "3")
        result = yield fep_read(route, "--address", "10000003", "--format", "json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('"1-0:0.0.0*255"', result.stdout)
        self.assertIn('"10000003"', result.stdout)
        self.assertIn('"kWh"', result.stdout)

    @inlineCallbacks
    def test_password_and_clock_offset_options(self) -> Any:
        from datetime import UTC, datetime

        from twisted.internet.endpoints import clientFromString

        from fep.model import Meter
        from fep.protocols.iec62056_21.session import IecReadoutProtocol

        route = yield self.tcp_route("--password", "4711", "--clock-offset", "120")
        meter = Meter("m1", "iec62056-21", route, metadata={"iec_password": "4711"})
        clock = yield IecReadoutProtocol().read_clock(
            reactor, clientFromString(reactor, route), meter, 5)
        self.assertLess(abs((clock - datetime.now(UTC)).total_seconds() - 120), 3)

    @inlineCallbacks
    def test_fep_read_with_corrupted_bcc_exits_3_naming_bcc_and_route(self) -> Any:
        route = yield self.tcp_route("--corrupt-bcc")
        result = yield fep_read(route)
        self.assertEqual(result.returncode, 3)
        self.assertIn("bad BCC in readout: computed 0x", result.stderr)
        self.assertIn(route, result.stderr)

    @inlineCallbacks
    def test_fep_read_over_a_pty_pair_returns_the_simulated_values(self) -> Any:
        a, b = yield socat_pty_pair(self)
        line = yield start_simulator(self, "--pty", a)
        self.assertIn(a, line)
        result = yield fep_read(f"serial:{b}:baudrate=300:bytesize=7:parity=E", "--format", "json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('"10000001"', result.stdout)
        self.assertIn('"1-0:1.8.0*255"', result.stdout)

    @inlineCallbacks
    def test_push_mode_sends_readouts_to_a_listener(self) -> Any:
        sink = Sink()
        factory = PushedReadoutFactory(sink, lambda ident, serial: f"meter-{serial}")
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        target = f"tcp:host=127.0.0.1:port={port.getHost().port}"
        line = yield start_simulator(self, "--push", target, "--every", "0.2")
        self.assertIn(target, line)
        records = yield sink.arrived
        self.assertEqual({r.meter for r in records}, {"meter-10000001"})
