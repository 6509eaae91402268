"""The serial channel: endpoint strings, opening ports (on socat pty pairs), baud changes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from fep.channels.endpoints import client_endpoint
from fep.channels.serialport import (
    FepSerialPort,
    SerialEndpoint,
    SerialSettings,
    parse_serial_args,
)
from fep.errors import ChannelError, RouteError
from fep.interfaces import ISerialLine
from tests.system import require_program

reactor: Any = global_reactor


@inlineCallbacks
def socat_pty_pair(case: unittest.TestCase) -> Any:
    """Start ``socat`` linking two ptys A and B in a temp dir; fires with (A, B) paths once
    both links exist. The process is ended (by its pid) when the test is done."""
    require_program("socat", package="socat")
    tmp = Path(case.mktemp()).resolve()
    tmp.mkdir(parents=True)
    a, b = tmp / "A", tmp / "B"
    proc = subprocess.Popen(
        ["socat", "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        proc.terminate()
        proc.wait(10)

    case.addCleanup(stop)
    for _ in range(200):
        if a.exists() and b.exists():
            return (str(a), str(b))
        yield deferLater(reactor, 0.025, lambda: None)
    raise AssertionError("socat did not create its pty links within 5 s")


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.got: Deferred[bytes] = Deferred()
        self.want = 0

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.want and not self.got.called:
            self.got.callback(self.data)


class EndpointStringTests(unittest.TestCase):
    def test_plugin_makes_serial_endpoint_from_string(self) -> None:
        endpoint = clientFromString(
            reactor, "serial:/dev/ttyUSB0:baudrate=300:bytesize=7:parity=E:stopbits=1"
        )
        assert isinstance(endpoint, SerialEndpoint)
        self.assertTrue(verifyObject(IStreamClientEndpoint, endpoint))
        self.assertEqual(
            endpoint.settings,
            SerialSettings("/dev/ttyUSB0", baudrate=300, bytesize=7, parity="E", stopbits=1),
        )

    def test_defaults_are_iec_300_7e1(self) -> None:
        endpoint = clientFromString(reactor, "serial:/dev/ttyS0")
        assert isinstance(endpoint, SerialEndpoint)
        self.assertEqual(endpoint.settings, SerialSettings("/dev/ttyS0"))
        self.assertEqual(endpoint.settings.char_bits, 10)

    def test_positional_baud_and_frame(self) -> None:
        settings = parse_serial_args("/dev/ttyS1", "9600", "8N1")
        self.assertEqual(
            (settings.baudrate, settings.bytesize, settings.parity, settings.stopbits),
            (9600, 8, "N", 1),
        )

    def test_flow_control_flags(self) -> None:
        settings = parse_serial_args("/dev/ttyS1", xonxoff="yes", rtscts="0")
        self.assertEqual((settings.xonxoff, settings.rtscts), (True, False))

    def test_bad_parity_is_a_route_error(self) -> None:
        with self.assertRaises(RouteError) as cm:
            client_endpoint(reactor, "serial:/dev/ttyS0:parity=Q")
        self.assertIn("parity", str(cm.exception))

    def test_unknown_option_is_a_route_error(self) -> None:
        self.assertRaises(RouteError, client_endpoint, reactor, "serial:/dev/ttyS0:speed=fast")


class OpenPortTests(unittest.TestCase):
    @inlineCallbacks
    def test_missing_device_fails_with_channel_error_naming_it(self) -> Any:
        endpoint = SerialEndpoint(reactor, SerialSettings("/nonexistent/ttyX"))
        with self.assertRaises(ChannelError) as cm:
            yield endpoint.connect(Factory.forProtocol(Protocol))
        self.assertIn("/nonexistent/ttyX", str(cm.exception))
        self.assertEqual(cm.exception.route, "serial:/nonexistent/ttyX:300:7E1")

    @inlineCallbacks
    def test_bytes_cross_a_pty_pair_both_ways(self) -> Any:
        a, b = yield socat_pty_pair(self)
        left = Collect()
        right = Collect()
        port_a = FepSerialPort(left, SerialSettings(a), reactor)
        self.addCleanup(port_a.loseConnection)
        proto = yield clientFromString(reactor, f"serial:{b}").connect(
            Factory.forProtocol(lambda: right)
        )
        self.addCleanup(proto.transport.loseConnection)
        right.want = 5
        left.want = 5
        port_a.write(b"hello")
        proto.transport.write(b"world")
        got_right = yield right.got
        got_left = yield left.got
        self.assertEqual((got_right, got_left), (b"hello", b"world"))

    @inlineCallbacks
    def test_set_baudrate_changes_the_line_speed_on_a_pty(self) -> Any:
        a, _b = yield socat_pty_pair(self)
        port = FepSerialPort(Protocol(), SerialSettings(a), reactor)
        self.addCleanup(port.loseConnection)
        self.assertTrue(verifyObject(ISerialLine, port))
        port.set_baudrate(9600)
        self.assertEqual(port.baudrate, 9600)
        # The kernel took it: a fresh look at the termios speed of the fd agrees.
        import termios

        self.assertEqual(termios.tcgetattr(port.fileno())[5], termios.B9600)

    @inlineCallbacks
    def test_peer_address_is_the_device(self) -> Any:
        a, _b = yield socat_pty_pair(self)
        port = FepSerialPort(Protocol(), SerialSettings(a), reactor)
        self.addCleanup(port.loseConnection)
        self.assertEqual(port.getPeer().device, a)
        self.assertEqual(port.out_waiting(), 0)


class LineOptionTests(unittest.TestCase):
    def test_echo_and_gap_options(self) -> None:
        settings = parse_serial_args("/dev/ttyS1", "9600", "8N1", echo="yes", gap="0.05")
        self.assertEqual((settings.echo, settings.gap), (True, 0.05))
        self.assertEqual(parse_serial_args("/dev/ttyS1").gap, 0)

    def test_bad_line_options_are_route_errors_naming_route_and_option(self) -> None:
        for route, option in (
            ("serial:/dev/ttyS1:echo=maybe", "echo"),
            ("serial:/dev/ttyS1:gap=fast", "gap"),
            ("serial:/dev/ttyS1:gap=-0.1", "gap"),
            ("serial:/dev/ttyS1:gap=60", "gap"),
            ("serial:/dev/ttyS1:baudrate=fast", "baudrate"),
            ("serial:/dev/ttyS1:bytesize=9", "bytesize"),
            ("serial:/dev/ttyS1:stopbits=3", "stopbits"),
            ("serial:/dev/ttyS1:9600:8X1", "parity"),
        ):
            with self.assertRaises(RouteError) as caught:
                client_endpoint(reactor, route)
            self.assertEqual(caught.exception.route, route)
            self.assertIn(option, str(caught.exception))


class _EchoingFarSide(Protocol):
    """The far end of a line whose adapter echoes: every byte comes back, then an answer."""

    def __init__(self) -> None:
        self.heard: list[tuple[float, bytes]] = []

    def dataReceived(self, data: bytes) -> None:
        self.heard.append((reactor.seconds(), data))
        assert self.transport is not None
        self.transport.write(data)
        if data.endswith(b"\n"):
            self.transport.write(b"answer\n")


class LineDisciplineOnAPtyTests(unittest.TestCase):
    async def _far_side(self) -> tuple[str, _EchoingFarSide]:
        a, b = await socat_pty_pair(self)
        far = _EchoingFarSide()
        port = FepSerialPort(far, SerialSettings(b, baudrate=9600, bytesize=8, parity="N"), reactor)
        self.addCleanup(port.loseConnection)
        return a, far

    async def _exchange(self, route: str, expect: int) -> bytes:
        session = Collect()
        session.want = expect
        proto = await clientFromString(reactor, route).connect(
            Factory.forProtocol(lambda: session))
        self.addCleanup(proto.transport.loseConnection)
        proto.transport.write(b"request\n")
        return await session.got

    async def test_without_echo_option_the_session_hears_itself(self) -> None:
        a, _far = await self._far_side()
        got = await self._exchange(f"serial:{a}:9600:8N1", len(b"request\nanswer\n"))
        self.assertEqual(got, b"request\nanswer\n")

    async def test_echo_option_drops_the_echo(self) -> None:
        a, _far = await self._far_side()
        got = await self._exchange(f"serial:{a}:9600:8N1:echo=yes", len(b"answer\n"))
        self.assertEqual(got, b"answer\n")

    async def test_gap_leaves_silence_after_the_last_byte_heard(self) -> None:
        a, far = await self._far_side()
        session = Collect()
        session.want = len(b"request\nanswer\n")
        proto = await clientFromString(reactor, f"serial:{a}:9600:8N1:gap=0.2").connect(
            Factory.forProtocol(lambda: session))
        self.addCleanup(proto.transport.loseConnection)
        proto.transport.write(b"request\n")
        await session.got
        answered = reactor.seconds()
        session.got, session.want = Deferred(), len(session.data) + 1
        proto.transport.write(b"next\n")
        await session.got
        self.assertEqual([data for _, data in far.heard][-1], b"next\n")
        self.assertGreaterEqual(far.heard[-1][0] - answered, 0.2)
