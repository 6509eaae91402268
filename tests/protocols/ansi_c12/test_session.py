"""The Twisted C12.18 session against the simulated meter: loopback TCP with the real
reactor (full read, wrong password, timeouts, NAKs and retransmissions both ways, a lost
connection), settings from metadata, and a socat pty pair with a negotiated baud switch."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from fep.errors import ChannelError, ConfigError, NotSupported, SessionTimeout
from fep.interfaces import IClock, ICommands, IMeterProtocol
from fep.model import IntervalBlock, Meter, MeterEvent, Reading
from fep.protocols.ansi_c12.c1218 import InsufficientSecurityClearance, NegotiateResponse
from fep.protocols.ansi_c12.session import (
    C1218Protocol,
    command_job,
    relay_procedure,
    settings_for,
)
from fep.protocols.registry import meter_protocol
from fep.sim.ansi_c12 import C12MeterServerFactory, SimulatedC12Meter, serve_pty
from tests.channels.test_serialport import socat_pty_pair

reactor: Any = global_reactor


def meter_for(port: int, **metadata: str) -> Meter:
    md = {"c12_password": "secret", **metadata}
    return Meter(id="c12-1", protocol="ansi-c12.18", route=f"tcp:127.0.0.1:{port}", metadata=md)


class LoopbackTests(unittest.TestCase):
    def setUp(self) -> None:
        self.factory = C12MeterServerFactory(SimulatedC12Meter(), reactor)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.number = self.port.getHost().port

    def read(self, timeout: float = 5.0, **metadata: str) -> Any:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.number)
        return C1218Protocol().read(reactor, endpoint, meter_for(self.number, **metadata), timeout)

    @inlineCallbacks
    def test_full_read(self) -> Any:
        records = yield self.read()
        by = {str(r.obis): r for r in records if isinstance(r, Reading)}
        energy = by["1-0:1.8.0*255"]
        assert isinstance(energy.value, Decimal)
        self.assertGreaterEqual(energy.value, Decimal("1234.5"))
        self.assertEqual((energy.unit_text, energy.meter), ("kWh", "c12-1"))
        self.assertEqual(by["1-0:1.6.0*255"].unit_text, "kW")
        self.assertEqual(by["0-0:96.1.0*255"].value, "SIM0000001")
        clock = by["0-0:1.0.0*255"]
        assert clock.meter_time is not None
        self.assertLess(abs((clock.meter_time - clock.received_time).total_seconds()), 2)
        self.assertEqual(self.factory.meter.log[-2:], ["logoff", "terminate"])
        self.assertEqual(self.factory.naks_sent, 0)
        intervals = [r for r in records if isinstance(r, IntervalBlock)]
        self.assertEqual({str(b.obis) for b in intervals}, {"1-0:1.29.0*255", "1-0:3.29.0*255"})
        events = {r.code for r in records if isinstance(r, MeterEvent)}
        self.assertEqual(events, {"std-1", "std-2", "std-4", "std-20", "std-7", "std-44",
                                  "std-47", "std-48"})  # fmt: skip

    @inlineCallbacks
    def test_commands_and_the_clock_over_tcp(self) -> Any:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.number)
        meter = meter_for(self.number, c12_relay_procedure="MP2")
        sim = self.factory.meter
        sim.clock_offset = 30
        protocol = C1218Protocol()
        when = yield protocol.read_clock(reactor, endpoint, meter, 5.0)
        self.assertLess(abs((when - sim.now()).total_seconds()), 1.5)
        done = yield protocol.set_clock(reactor, endpoint, meter, 5.0)
        self.assertLess(abs(sim.clock_offset), 1)
        self.assertGreater(done["deviation_before"], 28)
        done = yield protocol.run_command(reactor, endpoint, meter, "disconnect", {}, 5.0,
                                          lambda _: None)
        self.assertEqual((done["relay"], sim.relay_closed), ("open", False))
        done = yield protocol.run_command(reactor, endpoint, meter, "demand-reset", {}, 5.0,
                                          lambda _: None)
        self.assertEqual((done["demand_resets"], sim.demand_resets), (4, 4))
        self.assertEqual(sim.log[-2:], ["logoff", "terminate"])

    @inlineCallbacks
    def test_clock_deviation_reaches_the_reading(self) -> Any:
        self.factory.meter.clock_offset = -300
        records = yield self.read()
        (clock,) = [r for r in records if isinstance(r, Reading) and r.native_id == "ST52"]
        assert clock.meter_time is not None
        deviation = (clock.meter_time - clock.received_time).total_seconds()
        # The meter's clock has whole seconds: up to one more behind.
        self.assertTrue(-302 < deviation <= -300, deviation)

    @inlineCallbacks
    def test_registers_grow_between_reads(self) -> Any:
        self.factory.meter.registers[0] = type(self.factory.meter.registers[0])(
            self.factory.meter.registers[0].uom, Decimal("10"), Decimal("36000")
        )
        first = yield self.read()
        second = yield self.read()

        def energy(records: list[Any]) -> Decimal:
            (r,) = [r for r in records if isinstance(r, Reading) and str(r.obis) == "1-0:1.8.0*255"]
            return Decimal(str(r.value))

        self.assertGreater(energy(second), energy(first))
        self.assertEqual(self.factory.connections, 2)

    @inlineCallbacks
    def test_wrong_password_is_a_named_error_with_meter_and_route(self) -> Any:
        with self.assertRaises(InsufficientSecurityClearance) as cm:
            yield self.read(c12_password="wrong")
        error = cm.exception
        self.assertEqual((error.meter, error.route), ("c12-1", f"tcp:127.0.0.1:{self.number}"))
        self.assertIn("refused security", error.message)
        self.assertNotIn("wrong", str(error))
        self.assertEqual(self.factory.meter.log[-2:], ["security", "terminate"])

    @inlineCallbacks
    def test_hex_password(self) -> Any:
        records = yield self.read(c12_password="hex:" + b"secret".hex())
        self.assertTrue(
            any(str(r.obis) == "1-0:1.8.0*255" for r in records if isinstance(r, Reading))
        )

    @inlineCallbacks
    def test_silent_meter_times_out_after_the_retries(self) -> Any:
        self.factory.silent = True
        with self.assertRaises(SessionTimeout) as cm:
            yield self.read(timeout=1.0, c12_ack_timeout="0.1", c12_retries="2")
        self.assertEqual(cm.exception.meter, "c12-1")
        self.assertEqual(cm.exception.route, f"tcp:127.0.0.1:{self.number}")
        # The identify packet (9 bytes) went out three times: first try and two retries.
        self.assertEqual(self.factory.bytes_received, 27)

    @inlineCallbacks
    def test_meter_that_stops_answering_times_out_naming_the_request(self) -> Any:
        self.factory.answer_delay = 10.0  # ACKs come, answers do not
        with self.assertRaises(SessionTimeout) as cm:
            yield self.read(timeout=0.5)
        self.assertIn("no answer to identify within 0.5 s", cm.exception.message)

    @inlineCallbacks
    def test_damaged_request_is_nakked_and_resent(self) -> Any:
        self.factory.damage_requests = 2
        records = yield self.read()
        self.assertEqual(self.factory.naks_sent, 2)
        self.assertEqual(self.factory.meter.log.count("identify"), 1)
        self.assertTrue(
            any(str(r.obis) == "1-0:1.8.0*255" for r in records if isinstance(r, Reading))
        )

    @inlineCallbacks
    def test_damaged_answers_are_nakked_and_the_meter_retransmits(self) -> Any:
        self.factory.damage_answers = 2
        records = yield self.read()
        self.assertEqual(self.factory.retransmissions, 2)
        self.assertEqual(self.factory.meter.log.count("identify"), 1)
        self.assertTrue(
            any(str(r.obis) == "1-0:1.8.0*255" for r in records if isinstance(r, Reading))
        )

    @inlineCallbacks
    def test_small_packets_carry_long_answers(self) -> Any:
        records = yield self.read(c12_packet_size="24", c12_max_packets="32")
        self.assertTrue(
            any(str(r.obis) == "1-0:1.8.2*255" for r in records if isinstance(r, Reading))
        )
        self.assertEqual(self.factory.meter.negotiated, NegotiateResponse(24, 8, None))


class ConnectionTests(unittest.TestCase):
    @inlineCallbacks
    def test_refused_connection_is_a_channel_error(self) -> Any:
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        number = port.getHost().port
        yield port.stopListening()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", number)
        with self.assertRaises(ChannelError) as cm:
            yield C1218Protocol().read(reactor, endpoint, meter_for(number), 2.0)
        self.assertEqual(cm.exception.route, f"tcp:127.0.0.1:{number}")

    @inlineCallbacks
    def test_connection_closed_by_the_peer_is_a_channel_error(self) -> Any:
        class Hangup(Protocol):
            def dataReceived(self, data: bytes) -> None:
                assert self.transport is not None
                self.transport.loseConnection()

        port = reactor.listenTCP(0, Factory.forProtocol(Hangup), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", number)
        with self.assertRaises(ChannelError) as cm:
            yield C1218Protocol().read(reactor, endpoint, meter_for(number), 2.0)
        self.assertIn("waiting for identify", cm.exception.message)


class SettingsTests(unittest.TestCase):
    def meter(self, address: str | None = None, **metadata: str) -> Meter:
        return Meter(id="m", protocol="ansi-c12.18", route="tcp:h:1", address=address,
                     metadata=metadata)  # fmt: skip

    def test_registry_and_interface(self) -> None:
        protocol = meter_protocol("ansi-c12.18")
        self.assertIsInstance(protocol, C1218Protocol)
        self.assertTrue(verifyObject(IMeterProtocol, protocol))
        self.assertTrue(verifyObject(IClock, protocol))
        self.assertTrue(verifyObject(ICommands, protocol))
        self.assertEqual(protocol.name, "ansi-c12.18")
        c1221 = meter_protocol("ansi-c12.21")
        self.assertTrue(verifyObject(IClock, c1221) and verifyObject(ICommands, c1221))

    def test_command_parameters_and_the_relay_procedure(self) -> None:
        meter = self.meter(c12_relay_procedure="MP2")
        job = command_job(meter, "demand-reset", {"self-read": "yes", "season": "2"})
        self.assertEqual((job.self_read, job.season, job.relay_procedure), (True, 2, 2))
        self.assertEqual(command_job(self.meter(c12_relay_procedure="7"), "disconnect", {})
                         .relay_procedure, 7)
        self.assertIsNone(relay_procedure(self.meter()))
        for bad, key in (({"season": "16"}, "season"), ({"self-read": "maybe"}, "self-read"),
                         ({"log": "all-of-them"}, "log")):
            action = "event-log-clear" if "log" in bad else "demand-reset"
            with self.assertRaises(ConfigError) as cm:
                command_job(meter, action, bad)
            self.assertEqual(cm.exception.key, key)
        with self.assertRaises(ConfigError) as cm:
            relay_procedure(self.meter(c12_relay_procedure="SP9"))
        self.assertEqual(cm.exception.key, "c12_relay_procedure")
        with self.assertRaises(NotSupported):
            command_job(meter, "firmware-upgrade", {})

    def test_metadata_becomes_settings(self) -> None:
        s = settings_for(
            self.meter(
                "0x05",
                c12_password="hex:0102",
                c12_password_pad="space",
                c12_user="reader",
                c12_user_id="3",
                c12_packet_size="512",
                c12_max_packets="2",
                c12_baud="9600",
                c12_retries="5",
                c12_profile="no",
                c12_snapshots="no",
                tz="America/Chicago",
            )
        )
        self.assertEqual(
            (s.identity, s.password, s.password_pad, s.user, s.user_id),
            (5, b"\x01\x02", 0x20, b"reader", 3),
        )
        self.assertEqual((s.packet_size, s.max_packets, s.baud, s.retries), (512, 2, 9600, 5))
        self.assertEqual(str(s.tz), "America/Chicago")
        self.assertEqual((s.profile, s.events, s.snapshots, s.tz_given), (False, True, False, True))
        self.assertNotIn("0102", repr(s))

    def test_bad_settings_name_their_key(self) -> None:
        cases = {
            "c12_password_pad": self.meter(c12_password_pad="zero"),
            "c12_packet_size": self.meter(c12_packet_size="big"),
            "address": self.meter("300"),
            "tz": self.meter(tz="Mars/Olympus"),
            "c12_password": self.meter(c12_password="hex:xyz"),
            "c12_events": self.meter(c12_events="maybe"),
        }
        for key, meter in cases.items():
            with self.assertRaises(ConfigError) as cm:
                settings_for(meter)
            self.assertEqual(cm.exception.key, key)
        self.assertRaises(ConfigError, settings_for, self.meter(c12_packet_size="4"))

    @inlineCallbacks
    def test_bad_ack_timeout_fails_the_read(self) -> Any:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", 1)
        with self.assertRaises(ConfigError) as cm:
            yield C1218Protocol().read(reactor, endpoint, self.meter(c12_ack_timeout="-1"), 1.0)
        self.assertEqual(cm.exception.key, "c12_ack_timeout")


class PtyPairTests(unittest.TestCase):
    @inlineCallbacks
    def test_reads_the_simulator_over_a_pty_pair_with_baud_switch(self) -> Any:
        a, b = yield socat_pty_pair(self)
        factory = C12MeterServerFactory(SimulatedC12Meter(), reactor)
        sim_port = serve_pty(reactor, a, factory)
        self.addCleanup(sim_port.loseConnection)
        route = f"serial:{b}:baudrate=9600:bytesize=8:parity=N:stopbits=1"
        meter = Meter(id="pty", protocol="ansi-c12.18", route=route,
                      metadata={"c12_password": "secret", "c12_baud": "19200"})  # fmt: skip
        records = yield C1218Protocol().read(reactor, clientFromString(reactor, route), meter, 5.0)
        by = {str(r.obis): r for r in records if isinstance(r, Reading)}
        self.assertEqual(by["0-0:96.1.0*255"].value, "SIM0000001")
        self.assertEqual(by["1-0:3.8.0*255"].unit_text, "kvarh")
        # Both ends followed the negotiate to 19200 Bd.
        self.assertEqual(sim_port.baudrate, 19200)
        self.assertIn("negotiate", factory.meter.log)
