"""The Twisted IEC 62056-21 session: timers, errors, baud switch timing (MemoryReactorClock),
loopback TCP and a socat pty pair against the simulator, and pushed readouts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from fep.errors import ChannelError, ConfigError, ProtocolError, SessionTimeout
from fep.interfaces import IMeterProtocol, IRecordSink, ISerialLine
from fep.model import Meter, Reading, Record
from fep.protocols.iec62056_21.frames import DataBlock
from fep.protocols.iec62056_21.session import IecReadoutProtocol, PushedReadoutFactory
from fep.sim.iec62056_21 import IecMeterServerFactory, SimulatedIecMeter, serve_pty
from tests.channels.test_serialport import socat_pty_pair
from tests.protocols.test_iec62056_21_readout import fixture_bytes

reactor: Any = global_reactor

IDENT = b"/LGZ4ZMF100AC.M26\r\n"
METER = Meter(id="m1", protocol="iec62056-21", route="tcp:host=10.0.0.9:port=4059")


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """Connects the factory's protocol to a given transport at once."""

    def __init__(self, transport: StringTransport) -> None:
        self.transport = transport
        self.protocol: Protocol | None = None

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        proto: Any = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 0))
        assert proto is not None
        self.protocol = proto
        proto.makeConnection(self.transport)
        return succeed(proto)


@implementer(IStreamClientEndpoint)
class FailingEndpoint:
    def __init__(self, result: Deferred[Any]) -> None:
        self.result = result

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        return self.result


@implementer(ISerialLine)
class SerialStringTransport(StringTransport):
    """A StringTransport that is a serial line: records baud changes; ``dataBuffer`` stands
    for bytes still held by a FileDescriptor."""

    def __init__(self) -> None:
        super().__init__()
        self.baudrate = 300
        self.changes: list[int] = []
        self.dataBuffer = b""
        self.offset = 0

    def set_baudrate(self, baudrate: int) -> None:
        self.changes.append(baudrate)
        self.baudrate = baudrate


def start(
    transport: StringTransport | None = None, meter: Meter = METER, timeout: float = 5.0
) -> tuple[MemoryReactorClock, FakeEndpoint, Deferred[list[Record]]]:
    clock = MemoryReactorClock()
    endpoint = FakeEndpoint(transport or StringTransport())
    d = IecReadoutProtocol().read(clock, endpoint, meter, timeout)
    return clock, endpoint, d


def failure_of(d: Deferred[Any]) -> Failure:
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures, "the session did not fail"
    return failures[0]


class ProtocolObjectTests(unittest.TestCase):
    def test_provides_imeterprotocol_named_iec62056_21(self) -> None:
        proto = IecReadoutProtocol()
        self.assertTrue(verifyObject(IMeterProtocol, proto))
        self.assertEqual(proto.name, "iec62056-21")


class SessionStepTests(unittest.TestCase):
    def test_sign_on_uses_the_meter_address(self) -> None:
        meter = Meter(id="m1", protocol="iec62056-21", route="r", address="4711")
        _, endpoint, _ = start(meter=meter)
        assert endpoint.protocol is not None
        self.assertEqual(endpoint.transport.value(), b"/?4711!\r\n")

    def test_empty_address_signs_on_generically(self) -> None:
        meter = Meter(id="m1", protocol="iec62056-21", route="r", address="")
        _, endpoint, _ = start(meter=meter)
        self.assertEqual(endpoint.transport.value(), b"/?!\r\n")

    def test_full_exchange_gives_readings_and_closes(self) -> None:
        _, endpoint, d = start()
        assert endpoint.protocol is not None
        endpoint.protocol.dataReceived(fixture_bytes("landis_gyr_e350_m26.txt"))
        records = self.successResultOf(d)
        by_obis = {str(r.obis): r for r in records if isinstance(r, Reading)}
        self.assertEqual(by_obis["1-0:1.8.0*255"].value, Decimal("61561.289"))
        self.assertEqual(by_obis["1-0:1.8.0*255"].meter, "m1")
        self.assertEqual(by_obis["1-0:1.8.0*255"].source, METER.route)
        self.assertTrue(endpoint.transport.disconnecting)

    def test_option_select_is_sent_after_identification(self) -> None:
        _, endpoint, _ = start()
        assert endpoint.protocol is not None
        endpoint.transport.clear()
        endpoint.protocol.dataReceived(IDENT)
        self.assertEqual(endpoint.transport.value(), b"\x06040\r\n")

    def test_metadata_baud_char_overrides_the_proposal(self) -> None:
        meter = Meter(id="m1", protocol="iec62056-21", route="r", metadata={"iec_baud_char": "0"})
        _, endpoint, _ = start(meter=meter)
        assert endpoint.protocol is not None
        endpoint.transport.clear()
        endpoint.protocol.dataReceived(IDENT)
        self.assertEqual(endpoint.transport.value(), b"\x06000\r\n")


class TimeZoneTests(unittest.TestCase):
    CLOCKED = b"0.9.1(12:00:00)\r\n0.9.2(24-07-01)\r\n1.8.0(1*kWh)\r\n!\r\n"

    def test_meter_metadata_zone_converts_meter_time_to_utc(self) -> None:
        meter = Meter(id="m1", protocol="iec62056-21", route="r", metadata={"tz": "Europe/Berlin"})
        _, endpoint, d = start(meter=meter)
        assert endpoint.protocol is not None
        endpoint.protocol.dataReceived(IDENT + DataBlock.build(self.CLOCKED).encode())
        times = {r.meter_time for r in self.successResultOf(d) if isinstance(r, Reading)}
        self.assertEqual(times, {datetime(2024, 7, 1, 10, 0, tzinfo=UTC)})

    def test_unknown_zone_is_a_config_error(self) -> None:
        meter = Meter(id="m1", protocol="iec62056-21", route="r", metadata={"tz": "Mars/Base"})
        _, _, d = start(meter=meter)
        self.assertIsInstance(failure_of(d).value, ConfigError)


class SessionErrorTests(unittest.TestCase):
    def test_no_identification_is_a_session_timeout(self) -> None:
        clock, _, d = start(timeout=5.0)
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.2)
        error = failure_of(d).value
        assert isinstance(error, SessionTimeout)
        self.assertEqual(error.message, "no identification within 5.0 s")
        self.assertEqual(
            (error.meter, error.route, error.protocol), ("m1", METER.route, "iec62056-21")
        )

    def test_no_readout_after_option_select_is_a_session_timeout(self) -> None:
        clock, endpoint, d = start(timeout=3.0)
        assert endpoint.protocol is not None
        clock.advance(2.0)
        endpoint.protocol.dataReceived(IDENT)
        clock.advance(2.9)
        self.assertNoResult(d)
        clock.advance(0.2)
        self.assertEqual(failure_of(d).value.message, "no readout within 3.0 s")  # type: ignore[union-attr]

    def test_a_trickling_readout_does_not_time_out(self) -> None:
        clock, endpoint, d = start(timeout=1.0)
        assert endpoint.protocol is not None
        wire = fixture_bytes("landis_gyr_e350_m26.txt")
        endpoint.protocol.dataReceived(IDENT)
        # The block takes 200 x 0.5 s in total, far over the 1 s step timeout: the timer
        # counts silence during the readout.
        block = wire[len(IDENT) :]
        for i in range(len(block)):
            endpoint.protocol.dataReceived(block[i : i + 1])
            clock.advance(0.5)
        self.assertEqual(len(self.successResultOf(d)), 22)

    def test_bad_bcc_is_a_protocol_error_naming_bcc_meter_and_route(self) -> None:
        _, endpoint, d = start()
        assert endpoint.protocol is not None
        block = DataBlock(b"1.8.0(1*kWh)\r\n!\r\n", 0x42)
        endpoint.protocol.dataReceived(IDENT + block.encode())
        error = failure_of(d).value
        assert isinstance(error, ProtocolError)
        self.assertEqual(
            error.message,
            f"bad BCC in readout: computed 0x{block.computed_bcc:02X}, received 0x42",
        )
        self.assertEqual((error.meter, error.route), ("m1", METER.route))

    def test_parse_error_names_line_and_byte(self) -> None:
        _, endpoint, d = start()
        assert endpoint.protocol is not None
        endpoint.protocol.dataReceived(
            IDENT + DataBlock.build(b"1.8.0(1*kWh)\r\n2.8.0(2\r\n!\r\n").encode()
        )
        message = failure_of(d).value.message  # type: ignore[union-attr]
        self.assertIn("data line 2, byte 19", message)

    def test_lost_connection_is_a_channel_error_with_route(self) -> None:
        _, endpoint, d = start()
        assert endpoint.protocol is not None
        endpoint.protocol.connectionLost(Failure(ConnectionError("gone")))
        error = failure_of(d).value
        assert isinstance(error, ChannelError)
        self.assertEqual(error.route, METER.route)
        self.assertIn("awaiting identification", error.message)

    def test_refused_connection_is_a_channel_error_with_route(self) -> None:
        endpoint = FailingEndpoint(fail(ConnectionRefusedError()))
        d = IecReadoutProtocol().read(MemoryReactorClock(), endpoint, METER, 5.0)
        error = failure_of(d).value
        assert isinstance(error, ChannelError)
        self.assertEqual(error.route, METER.route)

    def test_connect_that_never_completes_times_out_as_channel_error(self) -> None:
        clock = MemoryReactorClock()
        pending: Deferred[Any] = Deferred()
        d = IecReadoutProtocol().read(clock, FailingEndpoint(pending), METER, 2.0)
        clock.advance(2.1)
        error = failure_of(d).value
        assert isinstance(error, ChannelError)
        self.assertEqual(error.message, "no connection within 2.0 s")


class BaudSwitchTests(unittest.TestCase):
    def test_no_baud_switch_on_a_non_serial_transport(self) -> None:
        clock, endpoint, _ = start()
        assert endpoint.protocol is not None
        endpoint.protocol.dataReceived(IDENT)
        self.assertEqual(clock.getDelayedCalls()[0].getTime(), 5.0)  # only the step timer

    def test_switch_waits_for_the_ack_time_on_the_wire(self) -> None:
        transport = SerialStringTransport()
        clock, endpoint, _ = start(transport)
        assert endpoint.protocol is not None
        endpoint.protocol.dataReceived(IDENT)
        # ACK 0 4 0 CR LF: 6 characters of 10 bits at 300 Bd = 0.2 s.
        clock.advance(0.19)
        self.assertEqual(transport.changes, [])
        clock.advance(0.02)
        self.assertEqual(transport.changes, [4800])

    def test_switch_waits_until_the_write_buffer_has_drained(self) -> None:
        transport = SerialStringTransport()
        transport.dataBuffer = b"\x06040\r\n"
        clock, endpoint, _ = start(transport)
        assert endpoint.protocol is not None
        endpoint.protocol.dataReceived(IDENT)
        clock.advance(1.0)
        self.assertEqual(transport.changes, [])
        transport.dataBuffer = b""
        clock.advance(0.01)
        clock.advance(0.2)
        self.assertEqual(transport.changes, [4800])


def sim_meter(**kwargs: Any) -> SimulatedIecMeter:
    return SimulatedIecMeter(**kwargs)


class LoopbackTcpTests(unittest.TestCase):
    def serve(self, *meters: SimulatedIecMeter) -> int:
        port = reactor.listenTCP(
            0, IecMeterServerFactory(list(meters), reactor), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def read(self, port: int, address: str | None = None, timeout: float = 5.0) -> Deferred[Any]:
        route = f"tcp:host=127.0.0.1:port={port}"
        meter = Meter(id="sim", protocol="iec62056-21", route=route, address=address)
        return IecReadoutProtocol().read(reactor, clientFromString(reactor, route), meter, timeout)

    @inlineCallbacks
    def test_reads_the_simulator_over_tcp(self) -> Any:
        port = self.serve(sim_meter(address="1001"))
        records = yield self.read(port)
        by_obis = {str(r.obis): r for r in records}
        self.assertGreaterEqual(by_obis["1-0:1.8.0*255"].value, Decimal("1234.5"))
        self.assertEqual(by_obis["1-0:1.8.0*255"].unit_text, "kWh")
        self.assertEqual(by_obis["1-0:0.0.0*255"].value, "1001")

    @inlineCallbacks
    def test_reads_a_published_readout_served_by_the_simulator(self) -> Any:
        raw = fixture_bytes("landis_gyr_e350_m26.txt")
        text = raw[raw.index(b"\x02") + 1 : raw.index(b"\x03")]
        port = self.serve(
            sim_meter(
                readout_text=text, manufacturer="LGZ", baud_char="4", identification="ZMF100AC.M26"
            )
        )
        records = yield self.read(port)
        by_obis = {str(r.obis): r for r in records}
        self.assertEqual(by_obis["1-0:2.8.0*255"].value, Decimal("10.490"))

    @inlineCallbacks
    def test_multidrop_answers_only_the_addressed_meter(self) -> Any:
        port = self.serve(sim_meter(address="1001"), sim_meter(address="1002"))
        records = yield self.read(port, "1002")
        by_obis = {str(r.obis): r for r in records}
        self.assertEqual(by_obis["1-0:0.0.0*255"].value, "1002")

    @inlineCallbacks
    def test_multidrop_generic_sign_on_gets_no_answer(self) -> Any:
        port = self.serve(sim_meter(address="1001"), sim_meter(address="1002"))
        with self.assertRaises(SessionTimeout):
            yield self.read(port, None, timeout=0.3)

    @inlineCallbacks
    def test_corrupted_bcc_over_tcp_names_bcc_and_route(self) -> Any:
        port = self.serve(sim_meter(corrupt_bcc=True))
        with self.assertRaises(ProtocolError) as cm:
            yield self.read(port)
        self.assertIn("bad BCC in readout: computed 0x", cm.exception.message)
        self.assertEqual(cm.exception.route, f"tcp:host=127.0.0.1:port={port}")

    @inlineCallbacks
    def test_refused_tcp_connection_is_a_channel_error(self) -> Any:
        port = self.serve(sim_meter())
        # A port nobody listens on: open one and close it again.
        closed = reactor.listenTCP(
            0, IecMeterServerFactory([sim_meter()], reactor), interface="127.0.0.1"
        )
        free = closed.getHost().port
        yield closed.stopListening()
        self.assertNotEqual(free, port)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", free)
        meter = Meter(id="x", protocol="iec62056-21", route=f"tcp:127.0.0.1:{free}")
        with self.assertRaises(ChannelError) as cm:
            yield IecReadoutProtocol().read(reactor, endpoint, meter, 5.0)
        self.assertEqual(cm.exception.route, meter.route)


class PtyPairTests(unittest.TestCase):
    @inlineCallbacks
    def serve_and_read(self, meter: SimulatedIecMeter) -> Any:
        a, b = yield socat_pty_pair(self)
        sim_port = serve_pty(reactor, a, IecMeterServerFactory([meter], reactor))
        self.addCleanup(sim_port.loseConnection)
        route = f"serial:{b}:baudrate=300:bytesize=7:parity=E:stopbits=1"
        m = Meter(id="pty", protocol="iec62056-21", route=route, address=meter.address)
        records = yield IecReadoutProtocol().read(reactor, clientFromString(reactor, route), m, 5.0)
        return sim_port, records

    @inlineCallbacks
    def test_reads_the_simulator_over_a_pty_pair_with_baud_switch(self) -> Any:
        sim_port, records = yield self.serve_and_read(sim_meter(address="2001", baud_char="5"))
        by_obis = {str(r.obis): r for r in records}
        self.assertEqual(by_obis["1-0:0.0.0*255"].value, "2001")
        self.assertGreaterEqual(by_obis["1-0:2.8.0*255"].value, Decimal("56.125"))
        # The meter side followed the option select to 9600 Bd.
        self.assertEqual(sim_port.baudrate, 9600)

    @inlineCallbacks
    def test_corrupted_bcc_over_a_pty_pair_names_bcc(self) -> Any:
        with self.assertRaises(ProtocolError) as cm:
            yield self.serve_and_read(sim_meter(address="2002", corrupt_bcc=True))
        self.assertIn("bad BCC in readout", cm.exception.message)
        self.assertTrue(str(cm.exception.route).startswith("serial:"))


@implementer(IRecordSink)
class Sink:
    def __init__(self) -> None:
        self.batches: list[list[Record]] = []
        self.arrived: Deferred[None] = Deferred()

    def submit(self, records: Any) -> Deferred[None]:
        self.batches.append(list(records))
        if not self.arrived.called:
            self.arrived.callback(None)
        return succeed(None)


class PushTests(unittest.TestCase):
    def setUp(self) -> None:
        self.sink = Sink()
        self.asked: list[tuple[str, str | None]] = []

    def resolve(self, ident: str, serial: str | None) -> str | None:
        self.asked.append((ident, serial))
        return "pushed-meter" if ident.startswith("FEP") else None

    def factory(self) -> PushedReadoutFactory:
        return PushedReadoutFactory(self.sink, self.resolve)

    def connect(self, factory: PushedReadoutFactory) -> tuple[StringTransport, Protocol]:
        proto = factory.buildProtocol(IPv4Address("TCP", "10.1.2.3", 40001))
        assert proto is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.1.2.3", 40001))
        proto.makeConnection(transport)
        return transport, proto

    def test_identification_then_readout_goes_to_the_sink(self) -> None:
        factory = self.factory()
        _, proto = self.connect(factory)
        meter = SimulatedIecMeter(address="777")
        proto.dataReceived(meter.identification_message().encode() + meter.readout_block())
        (batch,) = self.sink.batches
        self.assertTrue(all(r.meter == "pushed-meter" for r in batch))
        self.assertEqual(batch[0].source, "tcp-push:10.1.2.3:40001")
        self.assertEqual(self.asked, [("FEP5SIM100", "777")])

    def test_garbage_before_identification_is_skipped_and_counted(self) -> None:
        factory = self.factory()
        _, proto = self.connect(factory)
        meter = SimulatedIecMeter()
        proto.dataReceived(b"AT+CSQ\r\nOK\r\n" + meter.identification_message().encode())
        proto.dataReceived(meter.readout_block())
        self.assertEqual(len(self.sink.batches), 1)
        self.assertGreaterEqual(factory.garbage, 1)

    def test_a_readout_behind_line_noise_in_the_same_bytes_is_taken_at_once(self) -> None:
        # An identification, noise that is no frame, then the readout, all in one chunk: the
        # identification before the noise is kept and the readout behind it is stored now,
        # not when the meter sends again.
        factory = self.factory()
        _, proto = self.connect(factory)
        meter = SimulatedIecMeter(address="777")
        proto.dataReceived(meter.identification_message().encode() + b"NO CARRIER\r\n"
                           + meter.readout_block())
        self.assertEqual((len(self.sink.batches), factory.readouts), (1, 1))
        self.assertEqual(factory.bad_blocks, 1)

    def test_several_readouts_on_one_connection(self) -> None:
        factory = self.factory()
        _, proto = self.connect(factory)
        meter = SimulatedIecMeter()
        proto.dataReceived(meter.identification_message().encode() + meter.readout_block())
        proto.dataReceived(meter.readout_block())
        self.assertEqual((len(self.sink.batches), factory.readouts), (2, 2))

    def test_unknown_meter_is_rejected_counted_and_closed(self) -> None:
        factory = self.factory()
        transport, proto = self.connect(factory)
        meter = SimulatedIecMeter(manufacturer="XYZ")
        proto.dataReceived(meter.identification_message().encode() + meter.readout_block())
        self.assertEqual((self.sink.batches, factory.rejected), ([], 1))
        self.assertTrue(transport.disconnecting)

    def test_bad_bcc_drops_that_readout_only(self) -> None:
        factory = self.factory()
        _, proto = self.connect(factory)
        good = SimulatedIecMeter()
        bad = SimulatedIecMeter(corrupt_bcc=True)
        proto.dataReceived(good.identification_message().encode() + bad.readout_block())
        proto.dataReceived(good.readout_block())
        self.assertEqual((len(self.sink.batches), factory.bad_blocks), (1, 1))

    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_never_break_the_receiver(self, data: bytes) -> None:
        factory = PushedReadoutFactory(Sink(), self.resolve)
        _, proto = self.connect(factory)
        meter = SimulatedIecMeter()
        proto.dataReceived(data)
        proto.dataReceived(meter.identification_message().encode() + meter.readout_block())
        self.assertLessEqual(factory.readouts, 2)
