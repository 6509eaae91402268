"""Routes: parsing with clear errors, and one session at a time per line."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import directlyProvides, implementer

from fep.channels.routes import Channels, parse_route, resource_of
from fep.errors import ChannelError, RouteError
from fep.interfaces import ISerialLine
from fep.protocols.session import connect_within


class ParseRouteTests(unittest.TestCase):
    def test_device_address_is_split_from_the_line(self) -> None:
        route = parse_route("serial:/dev/ttyS1:baudrate=9600:parity=E@17")
        self.assertEqual(route.scheme, "serial")
        self.assertEqual(route.line, "serial:/dev/ttyS1:baudrate=9600:parity=E")
        self.assertEqual(route.address, "17")

    def test_route_without_address(self) -> None:
        route = parse_route("tcp:host=10.1.2.3:port=4059")
        self.assertIsNone(route.address)
        self.assertEqual(route.params(), {"host": "10.1.2.3", "port": "4059"})

    def test_gprs_route_params(self) -> None:
        self.assertEqual(parse_route("gprs:imei=356938035643809").params(),
                         {"imei": "356938035643809"})

    def test_devices_of_one_bus_share_a_resource(self) -> None:
        self.assertEqual(resource_of("serial:/dev/ttyS1:9600@1"),
                         resource_of("serial:/dev/ttyS1:9600@000000000002"))

    def test_bad_routes_name_the_route(self) -> None:
        for text in ("", "nocolon", "tcp:", "9x:1", "serial:/dev/ttyS1@"):
            with self.assertRaises(RouteError) as caught:
                parse_route(text)
            self.assertEqual(caught.exception.route, text)

    def test_unconfigured_channel_is_a_route_error(self) -> None:
        with self.assertRaises(RouteError) as caught:
            Channels(reactor).endpoint_for("gprs:imei=356938035643809")
        self.assertIn("no gprs channel", str(caught.exception))


class ParsedEndpointTests(unittest.TestCase):
    def test_a_line_is_parsed_once_for_all_its_sessions(self) -> None:
        from unittest import mock

        from fep.channels import routes

        channels = Channels(reactor)
        with mock.patch.object(routes, "client_endpoint", wraps=routes.client_endpoint) as parse:
            for address in ("@1", "@2", "@1"):
                channels.endpoint_for("serial:/dev/ttyS1:baudrate=9600" + address)
            channels.endpoint_for("tcp:host=10.1.2.3:port=4059")
        self.assertEqual([c.args[1] for c in parse.call_args_list],
                         ["serial:/dev/ttyS1:baudrate=9600", "tcp:host=10.1.2.3:port=4059"])

    def test_parsed_endpoints_kept_are_bounded(self) -> None:
        from unittest import mock

        from fep.channels import routes

        channels = Channels(reactor)
        with mock.patch.object(routes, "MAX_PARSED_ENDPOINTS", 3):
            for port in range(10):
                channels.endpoint_for(f"tcp:host=10.1.2.3:port={4000 + port}")
        self.assertEqual(len(channels._endpoints), 3)


class _Held(Protocol):
    def __init__(self) -> None:
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: object = None) -> None:
        self.lost.callback(None)


class OneSessionPerLineTests(unittest.TestCase):
    def setUp(self) -> None:
        self.accepted: list[Protocol] = []
        outer = self

        class Server(Protocol):
            def connectionMade(self) -> None:
                outer.accepted.append(self)

        d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Server))

        def listening(port: object) -> None:
            self.port = port
            self.addCleanup(port.stopListening)  # type: ignore[attr-defined]

        return d.addCallback(listening)

    async def test_second_session_waits_until_the_first_connection_ends(self) -> None:
        channels = Channels(reactor)
        route = f"tcp:127.0.0.1:{self.port.getHost().port}"  # type: ignore[attr-defined]
        first, second = _Held(), _Held()
        await connect_within(reactor, channels.endpoint_for(route + "@1"), first, route, 5)
        waiting = connect_within(reactor, channels.endpoint_for(route + "@2"), second, route, 5)
        self.assertFalse(waiting.called)
        self.assertEqual(channels.busy(), {route: 2})
        first.transport.loseConnection()  # type: ignore[union-attr]
        await waiting
        self.assertIs(second.transport.wrappedProtocol, second)  # type: ignore[union-attr]
        second.transport.loseConnection()  # type: ignore[union-attr]
        await second.lost
        self.assertEqual(channels.busy(), {})

    async def test_failed_connect_releases_the_line(self) -> None:
        channels = Channels(reactor)
        self.port.stopListening()  # type: ignore[attr-defined]
        route = f"tcp:127.0.0.1:{self.port.getHost().port}"  # type: ignore[attr-defined]
        with self.assertRaises(ChannelError):
            await connect_within(reactor, channels.endpoint_for(route), _Held(), route, 5)
        self.assertEqual(channels.busy(), {})

    async def test_refused_modem_port_is_not_dialled_again_within_the_backoff(self) -> None:
        from fep.channels.routes import ConnectBackoff

        channels = Channels(reactor, backoff=ConnectBackoff(reactor, 30.0, 600.0))
        self.port.stopListening()  # type: ignore[attr-defined]
        route = f"tcp:host=127.0.0.1:port={self.port.getHost().port}"  # type: ignore[attr-defined]
        with self.assertRaises(ChannelError) as first:
            await connect_within(reactor, channels.endpoint_for(route), _Held(), route, 5)
        self.assertIn("cannot connect", str(first.exception))
        with self.assertRaises(ChannelError) as second:
            await connect_within(reactor, channels.endpoint_for(route), _Held(), route, 5)
        self.assertIn("1 failed connect(s) in a row", str(second.exception))
        self.assertEqual(second.exception.route, route)


@implementer(IStreamClientEndpoint)
class _SerialLikeEndpoint:
    def connect(self, factory):  # type: ignore[no-untyped-def]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        transport.set_baudrate = lambda baud: setattr(transport, "baud", baud)  # type: ignore[attr-defined]
        directlyProvides(transport, ISerialLine)
        protocol.makeConnection(transport)
        from twisted.internet.defer import succeed

        return succeed(protocol)


class LineControlTests(unittest.TestCase):
    async def test_session_still_sees_a_serial_line(self) -> None:
        channels = Channels(reactor)
        channels.register_scheme("fake", lambda route: _SerialLikeEndpoint())
        session = _Held()
        await connect_within(reactor, channels.endpoint_for("fake:x@3"), session, "fake:x", 5)
        line = session.transport
        self.assertTrue(ISerialLine.providedBy(line))
        ISerialLine(line).set_baudrate(9600)
        self.assertEqual(line.wrappedProtocol, session)  # type: ignore[union-attr]
        self.assertEqual(line.transport.baud, 9600)  # type: ignore[union-attr]


@implementer(IStreamClientEndpoint)
class _SlowEndpoint:
    """Connects when the test says so, and bounds its own connect (as a dial-up call does)."""

    connect_timeout = 60.0

    def __init__(self) -> None:
        self.pending: list[tuple[Deferred[object], object]] = []

    def connect(self, factory):  # type: ignore[no-untyped-def]
        d: Deferred[object] = Deferred()
        self.pending.append((d, factory))
        return d


class OwnConnectBoundTests(unittest.TestCase):
    def test_channel_bound_outlasts_the_meter_timeout(self) -> None:
        from twisted.internet.task import Clock

        clock = Clock()
        channels = Channels(clock)
        slow = _SlowEndpoint()
        channels.register_scheme("slow", lambda route: slow)
        session = _Held()
        d = connect_within(clock, channels.endpoint_for("slow:1"), session, "slow:1", 3)
        clock.advance(30)  # well past the meter's 3 s, within the channel's 60 s
        [(pending, factory)] = slow.pending
        protocol = factory.buildProtocol(None)  # type: ignore[attr-defined]
        protocol.makeConnection(StringTransport())
        pending.callback(protocol)
        self.assertIs(self.successResultOf(d), session)

    def test_channel_bound_still_ends_a_connect(self) -> None:
        from twisted.internet.task import Clock

        clock = Clock()
        channels = Channels(clock)
        channels.register_scheme("slow", lambda route: _SlowEndpoint())
        d = connect_within(clock, channels.endpoint_for("slow:1"), _Held(), "slow:1", 3)
        clock.advance(61)
        self.assertIn("within 60.0 s", str(self.failureResultOf(d, ChannelError).value))
        self.assertEqual(channels.busy(), {})


class LineResourceTests(unittest.TestCase):
    def test_meters_on_one_serial_device_share_the_line_whatever_their_settings(self) -> None:
        # An IEC 62056-21 meter at 300 7E1 and a DL/T 645 meter at 2400 8E1 on one bus.
        self.assertEqual(resource_of("serial:/dev/ttyS1:300:7E1@10000001"),
                         resource_of("serial:/dev/ttyS1:baudrate=2400:parity=E@000000123456"))
        self.assertEqual(resource_of("serial:device=/dev/ttyS1:gap=0.05"), "serial:/dev/ttyS1")
        self.assertNotEqual(resource_of("serial:/dev/ttyS1"), resource_of("serial:/dev/ttyS2"))

    def test_a_serial_server_port_is_one_line_however_spelt(self) -> None:
        self.assertEqual(resource_of("rfc2217:host=10.0.0.5:port=4001:baudrate=9600@1"),
                         resource_of("rfc2217:10.0.0.5:4001:300:7E1@2"))
        self.assertEqual(resource_of("tcp:host=10.0.0.5:port=4001"),
                         resource_of("tcp:10.0.0.5:4001:timeout=5"))
        self.assertNotEqual(resource_of("rfc2217:10.0.0.5:4001"),
                            resource_of("rfc2217:10.0.0.5:4002"))

    def test_dlms_logical_and_physical_address(self) -> None:
        route = parse_route("serial:/dev/ttyUSB1:9600:8N1@1/17")
        self.assertEqual((route.line, route.address), ("serial:/dev/ttyUSB1:9600:8N1", "1/17"))

    async def test_sessions_on_one_device_with_different_settings_take_turns(self) -> None:
        from tests.channels.test_serialport import socat_pty_pair

        a, _b = await socat_pty_pair(self)
        channels = Channels(reactor)
        iec, dlt = f"serial:{a}:300:7E1", f"serial:{a}:2400:8E1"
        first, second = _Held(), _Held()
        await connect_within(reactor, channels.endpoint_for(iec + "@10000001"), first, iec, 5)
        waiting = connect_within(reactor, channels.endpoint_for(dlt + "@000000123456"),
                                 second, dlt, 5)
        self.assertFalse(waiting.called)
        self.assertEqual(channels.busy(), {f"serial:{a}": 2})
        first.transport.loseConnection()  # type: ignore[union-attr]
        await waiting
        self.assertEqual(second.transport.baudrate, 2400)  # type: ignore[union-attr]
        second.transport.loseConnection()  # type: ignore[union-attr]
        await second.lost
class _CountingEndpoint:
    """Refuses (or accepts) connects and counts the attempts that reached it."""

    def __init__(self) -> None:
        self.attempts = 0
        self.refuse = True

    def connect(self, factory):  # type: ignore[no-untyped-def]
        from twisted.internet.defer import fail, succeed
        from twisted.internet.error import ConnectionRefusedError

        self.attempts += 1
        if self.refuse:
            return fail(ConnectionRefusedError("modem not answering"))
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        return succeed(protocol)


class ConnectBackoffTests(unittest.TestCase):
    def setUp(self) -> None:
        from twisted.internet.task import Clock

        from fep.channels.routes import ConnectBackoff

        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.endpoint = _CountingEndpoint()
        self.channels = Channels(self.clock, backoff=ConnectBackoff(self.clock, 10.0, 60.0))
        self.channels.register_scheme("modem", lambda route: self.endpoint)
        self.gprs_like = _CountingEndpoint()
        self.channels.register_scheme("gprs", lambda route: self.gprs_like, backoff=False)

    def attempt(self, route: str = "modem:10.1.2.3@7") -> Failure | None:
        d = connect_within(self.clock, self.channels.endpoint_for(route), _Held(), route, 5)
        results: list[object] = []
        d.addBoth(results.append)
        result = results[0] if results else None
        return result if isinstance(result, Failure) else None

    def test_next_connect_in_the_window_fails_fast_naming_the_route_and_when(self) -> None:
        first = self.attempt()
        assert first is not None
        self.assertIn("modem not answering", first.getErrorMessage())
        second = self.attempt("modem:10.1.2.3@8")
        assert second is not None
        second.trap(ChannelError)
        self.assertEqual(second.value.route, "modem:10.1.2.3@8")
        self.assertIn("not tried again before 2023-11-14T22:13:30Z (in 10 s)", str(second.value))
        self.assertEqual(self.endpoint.attempts, 1)
        self.assertEqual(self.channels.busy(), {})

    def test_backoff_doubles_up_to_the_maximum_and_clears_on_success(self) -> None:
        waits = []
        for _ in range(5):
            self.assertIsNotNone(self.attempt())
            (failures, retry_at), = self.channels.backoff.waiting().values()  # type: ignore[union-attr]
            self.assertEqual(failures, len(waits) + 1)
            waits.append(retry_at - self.clock.seconds())
            self.clock.advance(waits[-1])
        self.assertEqual(waits, [10.0, 20.0, 40.0, 60.0, 60.0])
        self.assertEqual(self.endpoint.attempts, 5)
        self.endpoint.refuse = False
        self.assertIsNone(self.attempt())
        self.assertEqual(self.channels.backoff.waiting(), {})  # type: ignore[union-attr]

    def test_channels_without_backoff_are_tried_every_time(self) -> None:
        for _ in range(3):
            self.assertIsNotNone(self.attempt("gprs:imei=356938035643809"))
        self.assertEqual(self.gprs_like.attempts, 3)

    def test_backoff_is_per_line(self) -> None:
        self.assertIsNotNone(self.attempt("modem:10.1.2.3"))
        self.endpoint.refuse = False
        self.assertIsNone(self.attempt("modem:10.9.9.9"))
