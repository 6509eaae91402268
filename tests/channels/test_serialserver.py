"""Ethernet serial servers: the ``rfc2217:`` endpoint over an in-memory server (negotiation,
timeouts, refusals, escaping, speed changes on a Clock), and Debian's ser2net serving a
socat pty pair with our simulated meters on the far side, read through its raw TCP and its
RFC 2217 accepters (an IEC 62056-21 baud change seen on the termios of ser2net's pty)."""

from __future__ import annotations

import os
import termios
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint, ITransport
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, LoopingCall
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from fep.channels.endpoints import client_endpoint
from fep.channels.routes import Channels
from fep.channels.serialserver import (
    Rfc2217Endpoint,
    SerialServerSettings,
    SerialServerTransport,
    parse_rfc2217_args,
)
from fep.directory import addressed
from fep.errors import ChannelError, RouteError, SessionTimeout
from fep.interfaces import ISerialLine
from fep.model import Meter, Reading
from fep.protocols.registry import meter_protocol
from fep.sim import bus as bus_sim
from fep.sim.dlt645 import Dlt645BusFactory, SimulatedDlt645Meter
from fep.sim.dlt645 import serve_pty as serve_dlt645_pty
from fep.sim.iec62056_21 import IecMeterServerFactory, make_meters
from fep.sim.iec62056_21 import serve_pty as serve_iec_pty
from tests.channels.ser2net import start_ser2net
from tests.channels.test_rfc2217 import IEC_300_7E1_ACKS, SER2NET_OPENING, ack
from tests.channels.test_serialport import Collect, socat_pty_pair

reactor: Any = global_reactor


# -- in memory --------------------------------------------------------------------------------


@implementer(IStreamClientEndpoint)
class _MemoryServer:
    """An endpoint whose connection is a StringTransport: the test plays the server."""

    def __init__(self) -> None:
        self.protocol: Any = None
        self.transport = StringTransport()
        self.connecting: Deferred[Any] | None = None

    def connect(self, factory: Any) -> Deferred[Any]:
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)

    def take(self) -> bytes:
        data: bytes = self.transport.value()
        self.transport.clear()
        return data


def _endpoint(**options: Any) -> tuple[Rfc2217Endpoint, _MemoryServer, Clock]:
    clock = Clock()
    server = _MemoryServer()
    settings = SerialServerSettings("10.0.0.5", 4001, **options)
    return Rfc2217Endpoint(clock, settings, server), server, clock


class _Session(Collect):
    def __init__(self) -> None:
        super().__init__()
        self.lost: Failure | None = None

    def connectionLost(self, reason: Failure | None = None) -> None:  # type: ignore[override]
        self.lost = reason


class EndpointTests(unittest.TestCase):
    def test_session_connects_once_every_setting_is_acknowledged(self) -> None:
        endpoint, server, _clock = _endpoint()
        session = _Session()
        d = endpoint.connect(_factory(session))
        self.assertIn(b"\xff\xfb\x2c", server.take())  # WILL COM-PORT-OPTION
        server.protocol.dataReceived(SER2NET_OPENING)
        self.assertIn(b"\xff\xfa\x2c\x01\x00\x00\x01\x2c\xff\xf0", server.take())
        self.assertNoResult(d)
        server.protocol.dataReceived(IEC_300_7E1_ACKS)
        self.assertIs(self.successResultOf(d), session)
        line = session.transport
        assert isinstance(line, SerialServerTransport)
        self.assertTrue(verifyObject(ISerialLine, line))
        self.assertTrue(verifyObject(ITransport, line))
        self.assertEqual((line.baudrate, line.char_bits), (300, 10))

    def test_serial_data_is_escaped_both_ways(self) -> None:
        session, server, _clock = _connected()
        session.transport.write(b"\x7e\xff\x7e")
        self.assertEqual(server.take(), b"\x7e\xff\xff\x7e")
        server.protocol.dataReceived(b"\x02\xff\xff\x03")
        self.assertEqual(session.data, b"\x02\xff\x03")

    def test_a_broken_subnegotiation_keeps_the_session_and_the_data_after_it(self) -> None:
        session, server, _clock = _connected()
        with capturedLogs() as logged:
            server.protocol.dataReceived(b"\x02" + bytes.fromhex("fffa2c6b30") + b"\x03end")
        self.assertEqual(session.data, b"\x02\x03end")
        self.assertEqual(server.protocol.bad_telnet, 1)
        self.assertIn("serial server sent bad telnet: telnet subnegotiation of option 44 "
                      "given up", "\n".join(str(formatEvent(e)) for e in logged))
        self.assertFalse(server.transport.disconnecting)
        self.assertIsNone(session.lost)

    def test_bytes_before_the_line_is_set_up_are_dropped(self) -> None:
        endpoint, server, _clock = _endpoint()
        session = _Session()
        endpoint.connect(_factory(session))
        server.protocol.dataReceived(SER2NET_OPENING + b"stale")
        server.protocol.dataReceived(IEC_300_7E1_ACKS + b"fresh")
        self.assertEqual(session.data, b"fresh")
        self.assertEqual(server.protocol.dropped, 5)

    def test_speed_change_goes_after_the_written_bytes_and_is_acknowledged(self) -> None:
        session, server, clock = _connected()
        session.transport.write(b"\x06050\r\n")  # 0.2 s on the wire at 300 Bd 7E1
        server.take()
        ISerialLine(session.transport).set_baudrate(9600)
        self.assertEqual(server.take(), b"")
        clock.advance(0.2)
        self.assertEqual(server.take(), bytes.fromhex("fffa2c0100002580fff0"))
        server.protocol.dataReceived(ack(1, (9600).to_bytes(4, "big")))
        self.assertEqual(session.transport.baudrate, 9600)
        self.assertIsNone(session.lost)

    def test_speed_the_server_does_not_set_ends_the_session_naming_the_setting(self) -> None:
        session, server, _clock = _connected()
        ISerialLine(session.transport).set_baudrate(19200)
        server.protocol.dataReceived(ack(1, (9600).to_bytes(4, "big")))
        self.assertTrue(server.transport.disconnecting)
        server.protocol.connectionLost(Failure(ConnectionError("aborted")))
        assert session.lost is not None
        error = session.lost.value
        assert isinstance(error, ChannelError)
        self.assertIn("baudrate", error.message)
        self.assertEqual(error.route, "rfc2217:host=10.0.0.5:port=4001:300:7E1")

    def test_server_that_never_agrees_times_out_naming_the_route(self) -> None:
        endpoint, server, clock = _endpoint(timeout=2)
        d = endpoint.connect(_factory(_Session()))
        clock.advance(2)
        error = self.failureResultOf(d, ChannelError).value
        self.assertIn("did not agree to RFC 2217 within 2 s", error.message)
        self.assertEqual(error.route, "rfc2217:host=10.0.0.5:port=4001:300:7E1")
        self.assertTrue(server.transport.disconnecting)

    def test_settings_never_acknowledged_time_out(self) -> None:
        endpoint, server, clock = _endpoint(timeout=2)
        d = endpoint.connect(_factory(_Session()))
        server.protocol.dataReceived(SER2NET_OPENING)
        clock.advance(2)
        self.assertIn("did not acknowledge the line settings",
                      self.failureResultOf(d, ChannelError).value.message)

    def test_server_refusing_com_port_control_fails_the_connect(self) -> None:
        endpoint, server, _clock = _endpoint()
        d = endpoint.connect(_factory(_Session()))
        server.protocol.dataReceived(b"\xff\xfe\x2c")  # DONT COM-PORT-OPTION
        self.assertIn("refuses the Com Port Control option",
                      self.failureResultOf(d, ChannelError).value.message)

    def test_connection_closed_while_negotiating(self) -> None:
        endpoint, server, _clock = _endpoint()
        d = endpoint.connect(_factory(_Session()))
        server.protocol.connectionLost(Failure(ConnectionError("reset by peer")))
        error = self.failureResultOf(d, ChannelError).value
        self.assertIn("closed the connection while negotiating", error.message)

    def test_cancel_while_negotiating_aborts_the_connection(self) -> None:
        endpoint, server, clock = _endpoint()
        d = endpoint.connect(_factory(_Session()))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(server.transport.disconnecting)
        server.protocol.connectionLost(Failure(ConnectionError("aborted")))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_echo_option_applies_through_the_server(self) -> None:
        session, server, _clock = _connected(echo=True)
        session.transport.write(b"request")
        server.protocol.dataReceived(b"requestanswer")
        self.assertEqual(session.data, b"answer")


def _factory(session: Protocol) -> Any:
    from twisted.internet.protocol import Factory

    return Factory.forProtocol(lambda: session)


def _connected(**options: Any) -> tuple[Any, _MemoryServer, Clock]:
    endpoint, server, clock = _endpoint(**options)
    session = _Session()
    endpoint.connect(_factory(session))
    server.protocol.dataReceived(SER2NET_OPENING + IEC_300_7E1_ACKS)
    server.take()
    return session, server, clock


class RouteTests(unittest.TestCase):
    def test_plugin_makes_the_endpoint_from_a_route(self) -> None:
        endpoint = clientFromString(
            reactor, "rfc2217:host=10.0.0.5:port=4001:baudrate=9600:bytesize=8:parity=N"
        )
        assert isinstance(endpoint, Rfc2217Endpoint)
        self.assertEqual(
            endpoint.settings,
            SerialServerSettings("10.0.0.5", 4001, baudrate=9600, bytesize=8, parity="N"),
        )

    def test_positional_host_port_speed_and_frame(self) -> None:
        settings = parse_rfc2217_args("10.0.0.5", "4001", "2400", "8E1", echo="yes", gap="0.02")
        self.assertEqual(
            (settings.host, settings.port, settings.baudrate, settings.bytesize,
             settings.parity, settings.stopbits, settings.echo, settings.gap),
            ("10.0.0.5", 4001, 2400, 8, "E", 1, True, 0.02),
        )

    def test_defaults_are_iec_300_7e1(self) -> None:
        settings = parse_rfc2217_args(host="h", port="1")
        self.assertEqual((settings.baudrate, settings.bytesize, settings.parity), (300, 7, "E"))

    def test_errors_name_the_route_and_the_option(self) -> None:
        for route, option in (
            ("rfc2217:host=10.0.0.5:port=4001:parity=X", "parity"),
            ("rfc2217:host=10.0.0.5:port=99999", "port"),
            ("rfc2217:host=10.0.0.5:port=4001:echo=maybe", "echo"),
            ("rfc2217:host=10.0.0.5:port=4001:gap=fast", "gap"),
            ("rfc2217:host=10.0.0.5:port=4001:baudrate=-1", "baudrate"),
            ("rfc2217:host=10.0.0.5:port=4001:speed=9600", "speed"),
            ("rfc2217:host=10.0.0.5", "port"),
        ):
            with self.assertRaises(RouteError) as caught:
                client_endpoint(reactor, route)
            self.assertEqual(caught.exception.route, route)
            self.assertIn(option, str(caught.exception))


# -- ser2net, the real peer -----------------------------------------------------------------


class _Termios:
    """Samples the line settings of a tty (the pty ser2net holds) every few milliseconds."""

    def __init__(self, case: unittest.TestCase, device: str) -> None:
        self.fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        case.addCleanup(os.close, self.fd)
        self.seen: list[tuple[int, int]] = []
        self.loop = LoopingCall(self.sample)
        self.loop.start(0.005)
        case.addCleanup(lambda: self.loop.running and self.loop.stop())

    def sample(self) -> None:
        attrs = termios.tcgetattr(self.fd)
        entry = (attrs[5], attrs[2] & (termios.CSIZE | termios.PARENB | termios.PARODD
                                      | termios.CSTOPB))
        if not self.seen or self.seen[-1] != entry:
            self.seen.append(entry)

    def speeds(self) -> list[int]:
        return [speed for speed, _ in self.seen]


async def _read(meter: Meter, timeout: float = 5) -> list[Any]:
    meter = addressed(meter)
    endpoint = Channels(reactor).endpoint_for(meter.route)
    records: list[Any] = await meter_protocol(meter.protocol).read(reactor, endpoint, meter,
                                                                   timeout)
    return records


def _values(records: list[Any]) -> dict[str, Any]:
    return {r.native_id: r.value for r in records if isinstance(r, Reading)}


class Ser2netTests(unittest.TestCase):
    timeout = 60

    async def _serial_server(self, line: str = "300e71") -> tuple[str, str, int, int]:
        a, b = await socat_pty_pair(self)
        raw, telnet = await start_ser2net(self, a, line)
        return a, b, raw, telnet

    async def test_iec_meter_through_the_raw_accepter(self) -> None:
        _a, b, raw, _telnet = await self._serial_server()
        meters = make_meters(1)
        port = serve_iec_pty(reactor, b, IecMeterServerFactory(meters, reactor))
        self.addCleanup(port.loseConnection)
        records = await _read(Meter("m", "iec62056-21", f"tcp:host=127.0.0.1:port={raw}"))
        self.assertEqual(_values(records)["0.0.0"], meters[0].address)
        self.assertEqual(str(_values(records)["1.8.0"])[:6], "1000.5")

    async def test_mixed_bus_through_the_raw_accepter(self) -> None:
        _a, b, raw, _telnet = await self._serial_server()
        bus = bus_sim.mixed_bus(reactor, iec=["10000001"], dlt645=["000000123456"], dlms=[17])
        port = bus_sim.serve_pty(reactor, b, bus)
        self.addCleanup(port.loseConnection)
        route = f"tcp:host=127.0.0.1:port={raw}"
        iec = await _read(Meter("i", "iec62056-21", f"{route}@10000001"))
        dlt = await _read(Meter("d", "dlt645", f"{route}@000000123456"))
        dlms = await _read(Meter("x", "dlms", f"{route}@1/17", metadata={"dlms_link": "hdlc"}))
        self.assertEqual(_values(iec)["0.0.0"], "10000001")
        self.assertTrue(dlt and dlms)
        self.assertEqual({r.meter for r in dlt}, {"d"})
        answered = bus.buses[0].answered()
        self.assertTrue(all(answered.values()), answered)

    async def test_iec_baud_change_through_rfc2217_reaches_the_serial_port(self) -> None:
        a, b, _raw, telnet = await self._serial_server()
        meters = make_meters(1)  # offers 9600 Bd (baud character 5)
        # A meter's reaction time of 0.3 s (IEC 62056-21 allows 0.2 to 1.5 s): the session is
        # still on when ser2net has set the new speed, so the pty can be seen at it.
        port = serve_iec_pty(reactor, b, IecMeterServerFactory(meters, reactor, 0.3))
        self.addCleanup(port.loseConnection)
        line = _Termios(self, a)
        records = await _read(Meter("m", "iec62056-21",
                                    f"rfc2217:host=127.0.0.1:port={telnet}"))
        line.sample()
        self.assertEqual(_values(records)["0.0.0"], meters[0].address)
        # ser2net opened the pty at 300 Bd, and set 9600 Bd when the session asked. (A
        # Linux pty keeps CS8 without parity whatever is asked: 7E1 shows in the server's
        # acknowledgements, which the connect waits for, not in the pty's termios.)
        speeds = line.speeds()
        self.assertIn(termios.B300, speeds)
        self.assertIn(termios.B9600, speeds)
        self.assertLess(speeds.index(termios.B300), speeds.index(termios.B9600))

    async def test_dlt645_8e1_2400_set_through_rfc2217(self) -> None:
        a, b, _raw, telnet = await self._serial_server(line="9600n81")
        factory = Dlt645BusFactory([SimulatedDlt645Meter(address="000000123456")], reactor)
        port = serve_dlt645_pty(reactor, b, factory)
        self.addCleanup(port.loseConnection)
        line = _Termios(self, a)
        route = (f"rfc2217:host=127.0.0.1:port={telnet}:baudrate=2400:bytesize=8:parity=E"
                 "@000000123456")
        records = await _read(Meter("d", "dlt645", route))
        self.assertTrue(records)
        # ser2net is set up for 9600 Bd; the route's 2400 Bd reached the pty (8E1 is
        # acknowledged by ser2net, which the connect waits for; a pty shows no parity).
        speeds = line.speeds()
        self.assertNotEqual(speeds[0], termios.B2400)
        self.assertIn(termios.B2400, speeds)

    async def test_rfc2217_route_to_a_raw_port_fails_naming_it(self) -> None:
        _a, _b, raw, _telnet = await self._serial_server()
        route = f"rfc2217:host=127.0.0.1:port={raw}:timeout=0.5"
        with self.assertRaises(ChannelError) as caught:
            await _read(Meter("m", "iec62056-21", route))
        self.assertIn("did not agree to RFC 2217", str(caught.exception))
        self.assertIn(f"port={raw}", caught.exception.route or "")

    async def test_bus_meter_that_never_answers_through_rfc2217(self) -> None:
        _a, b, _raw, telnet = await self._serial_server()
        bus = bus_sim.mixed_bus(reactor, iec=["10000001"])
        port = bus_sim.serve_pty(reactor, b, bus)
        self.addCleanup(port.loseConnection)
        route = f"rfc2217:host=127.0.0.1:port={telnet}"
        with self.assertRaises(SessionTimeout):
            await _read(Meter("gone", "iec62056-21", f"{route}@10000009"), timeout=0.5)
        records = await _read(Meter("here", "iec62056-21", f"{route}@10000001"))
        self.assertEqual(_values(records)["0.0.0"], "10000001")
