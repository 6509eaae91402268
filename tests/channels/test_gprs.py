"""The GPRS channel with a Clock and in-memory transports: identification and attaching,
unknown modems under each policy, garbage before registration, heartbeats, the identify and
idle timeouts (a half-open connection reaped), a reconnecting modem replacing its stale
session, pushes decoded by the meter's protocol, and the transparent pipe."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from fep.channels.gprs import (
    GprsChannel,
    GprsSettings,
    ModemSession,
    SessionInfo,
    gprs_settings,
    parse_heartbeats,
)
from fep.channels.identify import encode_binary_registration
from fep.channels.routes import Channels, parse_route
from fep.config import parse_config
from fep.directory import MeterDirectory
from fep.errors import ChannelError, ConfigError, RouteError
from fep.interfaces import IModemSessionObserver, IPushChannel, IRecordSink
from fep.model import Meter, Reading, Record
from fep.protocols.dlms import wrapper
from fep.protocols.dlms.security import InvocationCounterGuard
from fep.protocols.dlms.server import DlmsServer, ServerSettings
from fep.sim.dlms import EXAMPLE_AK, EXAMPLE_EK
from fep.sim.dlms_meter import SimulatedDlmsMeter
from fep.sim.iec62056_21 import SimulatedIecMeter

IMEI = "356938035643809"
OTHER_IMEI = "356938035643817"
TITLE = bytes.fromhex("4D4D4D0000BC614E")


@implementer(IRecordSink)
class Sink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def submit(self, records: Sequence[Record]) -> Deferred[None]:
        self.records.extend(records)
        return succeed(None)


class Store:
    """Takes add_meters like the real stores (the loopback tests use SQLite)."""

    def __init__(self) -> None:
        self.meters: list[Meter] = []

    def add_meters(self, meters: Sequence[Meter]) -> Deferred[int]:
        self.meters.extend(meters)
        return succeed(len(meters))


class ModemTransport(StringTransport):
    def __init__(self, port: int = 40001) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "10.1.2.3", port))
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


def dlms_meter(meter_id: str = "dlms-1", route: str = f"gprs:imei={IMEI}") -> Meter:
    return Meter(
        meter_id,
        "dlms",
        route,
        metadata={
            "dlms_server_system_title": TITLE.hex(),
            "dlms_ek": EXAMPLE_EK.hex(),
            "dlms_ak": EXAMPLE_AK.hex(),
        },
    )


class PushingDlmsMeter:
    def __init__(self, title: bytes = TITLE) -> None:
        from fep.protocols.dlms.security import SecurityKeys

        self.ticks = 0
        self.meter = SimulatedDlmsMeter(
            serial="KFM1",
            system_title=title,
            now=lambda: datetime(2024, 1, 1, tzinfo=UTC) + self.ticks * timedelta(minutes=15),
        )
        self.server = DlmsServer(
            self.meter, ServerSettings(system_title=title, keys=SecurityKeys(EXAMPLE_EK,
                                                                             EXAMPLE_AK))
        )

    def push(self) -> bytes:
        self.ticks += 1
        apdu = self.server.push(self.meter.push_body())
        return wrapper.encode_wrapper(wrapper.WrapperFrame(1, 102, apdu))


class ChannelTestCase(unittest.TestCase):
    settings = GprsSettings(identify_timeout=30.0, idle_timeout=120.0)
    meters: Sequence[Meter] = (dlms_meter(),)

    def setUp(self) -> None:
        self.clock = Clock()
        self.sink = Sink()
        self.store = Store()
        self.directory = MeterDirectory(self.store)  # type: ignore[arg-type]
        self.directory.replace(list(self.meters))
        self.channel = GprsChannel(
            self.clock,
            self.settings,
            sink=self.sink,
            directory=self.directory,
            store=self.store,
            counters=InvocationCounterGuard(),
        )
        self.factory = self.channel.factory("tcp:4070")

    def connect(self, port: int = 40001) -> tuple[ModemSession, ModemTransport]:
        session = self.factory.buildProtocol(IPv4Address("TCP", "10.1.2.3", port))
        assert isinstance(session, ModemSession)
        transport = ModemTransport(port)
        session.makeConnection(transport)
        return session, transport

    def lose(self, session: ModemSession, transport: ModemTransport) -> None:
        if transport.disconnecting:
            session.connectionLost(Failure(ConnectionError("gone")))


class IdentifyTests(ChannelTestCase):
    def test_known_modem_attaches_and_is_listed(self) -> None:
        session, transport = self.connect()
        session.dataReceived(f"ID:{IMEI}\r\n".encode())
        self.assertEqual(session.state, "attached")
        (info,) = self.channel.sessions()
        self.assertIsInstance(info, SessionInfo)
        self.assertEqual(
            (info.modem, info.meters, info.state, info.peer, info.listener, info.bytes_in),
            (f"imei={IMEI}", ("dlms-1",), "attached", "10.1.2.3:40001", "tcp:4070", 20),
        )
        self.assertFalse(transport.disconnecting)

    def test_binary_registration_attaches(self) -> None:
        session, _ = self.connect()
        session.dataReceived(encode_binary_registration(imei=IMEI, iccid="8986031876024006982"))
        self.assertEqual((session.state, [m.id for m in session.meters]),
                         ("attached", ["dlms-1"]))

    def test_garbage_before_the_registration_is_survived(self) -> None:
        session, transport = self.connect()
        session.dataReceived(b"AT+CGATT=1\r\nOK\r\n\x00\xff\xfe")
        session.dataReceived(b"+++ATH\r\n" + f"ID:{IMEI}\r\n".encode())
        self.assertEqual(session.state, "attached")
        self.assertEqual(session.info().garbage, 27)
        self.assertEqual(self.channel.stats.garbage_bytes, 27)
        self.assertFalse(transport.disconnecting)

    def test_endless_garbage_closes_the_connection(self) -> None:
        session, transport = self.connect()
        for _ in range(1000):
            session.dataReceived(b"NO CARRIER\r\n")
            if transport.disconnecting:
                break
        self.assertTrue(transport.aborted)
        self.assertEqual(self.channel.stats.unidentified, 1)

    def test_a_modem_that_never_registers_is_closed_after_the_identify_timeout(self) -> None:
        session, transport = self.connect()
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(transport.aborted)
        self.lose(session, transport)
        self.assertEqual(self.channel.sessions(), [])

    def test_first_push_identifies_by_system_title_and_is_stored(self) -> None:
        session, _ = self.connect()
        session.dataReceived(PushingDlmsMeter().push())
        self.assertEqual(session.state, "attached")
        self.assertEqual(session.identity.get("system_title"), TITLE.hex())  # type: ignore[union-attr]
        self.assertEqual({r.meter for r in self.sink.records}, {"dlms-1"})
        self.assertEqual(len(self.sink.records), 5)
        self.assertEqual(session.info().frames, 1)
        self.assertIsNotNone(session.info().last_frame)


class PolicyTests(ChannelTestCase):
    def policy(self, unknown: str) -> None:
        self.channel.settings = GprsSettings(unknown=unknown)

    def test_reject_closes_the_connection(self) -> None:
        self.policy("reject")
        session, transport = self.connect()
        session.dataReceived(f"ID:{OTHER_IMEI}\r\n".encode())
        self.assertTrue(transport.aborted)
        self.assertEqual(self.channel.stats.rejected, 1)
        self.assertEqual(self.store.meters, [])

    def test_quarantine_keeps_it_listed_and_drops_its_data(self) -> None:
        self.policy("quarantine")
        session, transport = self.connect()
        session.dataReceived(f"ID:{OTHER_IMEI}\r\n".encode())
        session.dataReceived(PushingDlmsMeter().push())
        self.assertFalse(transport.disconnecting)
        (info,) = self.channel.sessions()
        self.assertEqual((info.state, info.modem), ("quarantined", f"imei={OTHER_IMEI}"))
        self.assertEqual(self.sink.records, [])
        # A meter added for it lets it in: its next push is stored.
        self.directory.add(dlms_meter("dlms-2", f"gprs:imei={OTHER_IMEI}"))
        session.dataReceived(b"")
        session.dataReceived(PushingDlmsMeter().push())
        self.assertEqual(session.state, "attached")
        self.assertEqual({r.meter for r in self.sink.records}, {"dlms-2"})

    def test_register_creates_the_meter_from_the_registration(self) -> None:
        self.policy("register")
        session, _ = self.connect()
        session.dataReceived(f"ID:{OTHER_IMEI};SN=KFM77\r\n".encode())
        (meter,) = self.store.meters
        self.assertEqual(
            (meter.id, meter.protocol, meter.route, meter.serial),
            ("KFM77", "dlms", f"gprs:imei={OTHER_IMEI}", "KFM77"),
        )
        self.assertEqual(meter.metadata["gprs_imei"], OTHER_IMEI)
        self.assertIs(self.directory.get("KFM77"), meter)
        self.assertEqual(session.state, "attached")
        self.assertEqual(self.channel.stats.registered, 1)

    def test_register_from_an_iec_identification_takes_its_protocol(self) -> None:
        self.policy("register")
        session, _ = self.connect()
        meter = SimulatedIecMeter(address="4711", serial="LGZ4711")
        session.dataReceived(meter.identification_message().encode() + meter.readout_block())
        (registered,) = self.store.meters
        self.assertEqual((registered.id, registered.protocol, registered.route),
                         ("LGZ4711", "iec62056-21", "gprs:serial=LGZ4711"))
        self.assertTrue(self.sink.records)
        self.assertEqual({r.meter for r in self.sink.records}, {"LGZ4711"})


    def test_register_without_a_key_for_a_route_quarantines(self) -> None:
        self.policy("register")
        session, _ = self.connect()
        # A readout without 0.0.0 / C.1.0 / 96.1.0: only the identification line names it.
        meter = SimulatedIecMeter(readout_text=b"1.8.0(0001234.5*kWh)\r\n!\r\n")
        session.dataReceived(meter.identification_message().encode() + meter.readout_block())
        self.assertEqual(session.state, "quarantined")
        self.assertEqual(self.store.meters, [])


@implementer(IModemSessionObserver)
class Observer:
    """What the collection engine is told of the channel's sessions."""

    def __init__(self, channel: GprsChannel) -> None:
        self.channel = channel
        self.told: list[tuple[str, list[str], bool]] = []

    def _note(self, event: str, meters: Sequence[Meter]) -> None:
        # Whether the route counts as connected at the moment the observer hears it.
        connected = all(self.channel.is_connected(m.route) for m in meters)
        self.told.append((event, [m.id for m in meters], connected))

    def modem_attached(self, meters: Sequence[Meter]) -> None:
        self._note("attached", meters)

    def modem_gone(self, meters: Sequence[Meter]) -> None:
        self._note("gone", meters)

    def meter_registered(self, meter: Meter) -> None:
        self._note("registered", [meter])


class ObserverTests(ChannelTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.observer = Observer(self.channel)
        verifyObject(IModemSessionObserver, self.observer)
        self.channel.observers.append(self.observer)

    def test_attach_and_end_of_a_session_are_told_and_connected_follows(self) -> None:
        route = f"gprs:imei={IMEI}"
        self.assertFalse(self.channel.is_connected(route))
        session, transport = self.connect()
        self.assertEqual(self.observer.told, [])  # not identified yet
        session.dataReceived(f"ID:{IMEI}\r\n".encode())
        self.assertEqual(self.observer.told, [("attached", ["dlms-1"], True)])
        self.assertTrue(self.channel.is_connected(route))
        self.assertFalse(self.channel.is_connected(f"gprs:imei={OTHER_IMEI}"))
        self.assertFalse(self.channel.is_connected("tcp:host=10.0.0.1:port=1"))
        session.drop()
        self.lose(session, transport)
        self.assertEqual(self.observer.told[-1], ("gone", ["dlms-1"], False))
        self.assertFalse(self.channel.is_connected(route))

    def test_a_stale_session_ends_with_its_modem_still_connected(self) -> None:
        self.channel.settings = GprsSettings(conflict="replace-when-silent",
                                             heartbeat_window=60.0)
        old, old_transport = self.connect(40001)
        old.dataReceived(f"ID:{IMEI}\r\n".encode())
        self.clock.advance(61)  # the old session went silent past its heartbeat window
        new, _ = self.connect(40002)
        new.dataReceived(f"ID:{IMEI}\r\n".encode())
        self.lose(old, old_transport)
        self.assertEqual([e for e, _, _ in self.observer.told], ["attached", "attached",
                                                                  "gone"])
        self.assertTrue(self.observer.told[-1][2])

    def test_a_registered_meter_is_told_before_its_session_attaches(self) -> None:
        self.channel.settings = GprsSettings(unknown="register")
        session, _ = self.connect()
        session.dataReceived(f"ID:{OTHER_IMEI};SN=KFM77\r\n".encode())
        self.assertEqual(self.observer.told, [("registered", ["KFM77"], False),
                                              ("attached", ["KFM77"], True)])

    def test_an_observer_that_fails_does_not_stop_the_session(self) -> None:
        class Broken(Observer):
            def modem_attached(self, meters: Sequence[Meter]) -> None:
                raise RuntimeError("broken observer")

        self.channel.observers.insert(0, Broken(self.channel))
        session, _ = self.connect()
        session.dataReceived(f"ID:{IMEI}\r\n".encode())
        self.assertEqual(session.state, "attached")
        self.assertEqual(self.observer.told, [("attached", ["dlms-1"], True)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class TimeoutAndReconnectTests(ChannelTestCase):
    settings = GprsSettings(idle_timeout=120.0, heartbeats=parse_heartbeats(r"hex:FE PING\r\n"),
                            conflict="replace-when-silent", heartbeat_window=60.0)

    def test_half_open_connection_is_reaped_by_the_idle_timeout(self) -> None:
        session, transport = self.connect()
        session.dataReceived(f"ID:{IMEI}\r\n".encode())
        self.clock.advance(100)
        session.dataReceived(PushingDlmsMeter().push())
        self.clock.advance(100)
        self.assertFalse(transport.disconnecting)
        # The modem is gone without a FIN: nothing more arrives.
        self.clock.advance(21)
        self.assertTrue(transport.aborted)
        self.assertEqual(self.channel.stats.idle_closed, 1)
        self.lose(session, transport)
        self.assertEqual(self.channel.sessions(), [])

    def test_heartbeats_keep_the_session_alive_and_are_not_data(self) -> None:
        session, transport = self.connect()
        session.dataReceived(f"ID:{IMEI}\r\n".encode())
        for _ in range(5):
            self.clock.advance(100)
            session.dataReceived(b"\xfe")
        session.dataReceived(b"PING\r\n" + PushingDlmsMeter().push())
        self.assertFalse(transport.disconnecting)
        self.assertEqual((session.heartbeats, self.channel.stats.heartbeats), (6, 6))
        self.assertEqual(len(self.sink.records), 5)

    def test_a_reconnecting_modem_replaces_its_stale_session(self) -> None:
        old, old_transport = self.connect(40001)
        old.dataReceived(f"ID:{IMEI}\r\n".encode())
        self.clock.advance(61)  # silent past its heartbeat window: stale
        new, new_transport = self.connect(40002)
        new.dataReceived(f"ID:{IMEI}\r\n".encode())
        self.assertTrue(old_transport.aborted)
        self.assertFalse(new_transport.disconnecting)
        self.lose(old, old_transport)
        (info,) = self.channel.sessions()
        self.assertEqual((info.peer, info.state), ("10.1.2.3:40002", "attached"))
        self.assertEqual(self.channel.stats.replaced, 1)

    def test_reconnect_mid_push_loses_nothing(self) -> None:
        meter = PushingDlmsMeter()
        first, second = meter.push(), meter.push()
        old, old_transport = self.connect(40001)
        old.dataReceived(f"ID:{IMEI}\r\n".encode() + first + second[:20])
        new, _ = self.connect(40002)
        # The modem sends the interrupted push again, whole, on its new connection.
        new.dataReceived(f"ID:{IMEI}\r\n".encode() + second)
        # The old session was heard a moment ago: the new one waits out its heartbeat
        # window (its bytes kept), then replaces it.
        self.assertEqual(new.state, "contested")
        self.clock.advance(60)
        self.assertEqual(new.state, "attached")
        self.lose(old, old_transport)
        times = sorted({r.meter_time for r in self.sink.records if isinstance(r, Reading)})
        self.assertEqual(len(self.sink.records), 10)
        self.assertEqual(times, [datetime(2024, 1, 1, 0, 15, tzinfo=UTC),
                                 datetime(2024, 1, 1, 0, 30, tzinfo=UTC)])


class Answering(Protocol):
    """A pull session's protocol stand-in: keeps what it receives, writes what it is told."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[Failure] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.lost.callback(None)
        self.reason = reason


class PipeTests(ChannelTestCase):
    def channels(self) -> Channels:
        channels = Channels(self.clock)
        channels.register_scheme("gprs", self.channel.endpoint_for, backoff=False)
        return channels

    def test_job_for_a_modem_that_is_not_connected_fails_at_once(self) -> None:
        endpoint = self.channels().endpoint_for(f"gprs:imei={IMEI}")
        failure = self.failureResultOf(endpoint.connect(Factory.forProtocol(Answering)))
        failure.trap(ChannelError)
        self.assertIn("not connected", str(failure.value))
        self.assertEqual(failure.value.route, f"gprs:imei={IMEI}")

    def test_gprs_route_must_name_the_modem(self) -> None:
        with self.assertRaises(RouteError):
            self.channel.endpoint_for(parse_route("gprs:nothing"))

    def test_pull_over_the_pushed_session_then_pushes_again(self) -> None:
        session, transport = self.connect()
        session.dataReceived(f"ID:{IMEI}\r\n".encode())
        endpoint = self.channels().endpoint_for(f"gprs:imei={IMEI}")
        job = self.successResultOf(endpoint.connect(Factory.forProtocol(Answering)))
        assert isinstance(job, Answering)
        verifyObject(IPushChannel, IPushChannel(job.transport))
        job.transport.write(b"request")  # type: ignore[union-attr]
        self.assertEqual(transport.value(), b"request")
        session.dataReceived(b"answer")
        self.assertEqual(job.received, b"answer")
        self.assertEqual(self.channel.sessions()[0].state, "pipe")
        # One job at a time on a modem.
        busy = self.channel.endpoint_for(parse_route(f"gprs:imei={IMEI}"))
        self.failureResultOf(busy.connect(Factory.forProtocol(Answering))).trap(ChannelError)
        job.transport.loseConnection()  # type: ignore[union-attr]
        self.clock.advance(0)
        self.assertTrue(job.lost.called)
        self.assertFalse(transport.disconnecting)
        session.dataReceived(PushingDlmsMeter().push())
        self.assertEqual(len(self.sink.records), 5)
        self.assertEqual(self.channel.sessions()[0].bytes_out, len(b"request"))

    def test_a_push_under_way_finishes_before_the_job_takes_the_socket(self) -> None:
        session, _ = self.connect()
        push = PushingDlmsMeter().push()
        session.dataReceived(f"ID:{IMEI}\r\n".encode() + push[:15])
        connecting = self.channel.endpoint_for(parse_route(f"gprs:imei={IMEI}")).connect(
            Factory.forProtocol(Answering)
        )
        self.assertNoResult(connecting)
        session.dataReceived(push[15:])
        job = self.successResultOf(connecting)
        self.assertEqual(len(self.sink.records), 5)
        self.assertEqual(job.received, b"")  # type: ignore[attr-defined]
        session.dataReceived(b"answer")
        self.assertEqual(job.received, b"answer")  # type: ignore[attr-defined]

    def test_a_push_that_never_ends_is_handed_to_the_job(self) -> None:
        session, _ = self.connect()
        push = PushingDlmsMeter().push()
        session.dataReceived(f"ID:{IMEI}\r\n".encode() + push[:15])
        connecting = self.channel.endpoint_for(parse_route(f"gprs:imei={IMEI}")).connect(
            Factory.forProtocol(Answering)
        )
        self.clock.advance(5)
        job = self.successResultOf(connecting)
        session.dataReceived(push[15:])
        self.assertEqual(job.received, push)  # type: ignore[attr-defined]
        self.assertEqual(self.sink.records, [])

    def test_modem_lost_during_a_job_fails_the_job(self) -> None:
        session, _ = self.connect()
        session.dataReceived(f"ID:{IMEI}\r\n".encode())
        job = self.successResultOf(
            self.channel.endpoint_for(parse_route(f"gprs:imei={IMEI}")).connect(
                Factory.forProtocol(Answering)
            )
        )
        session.connectionLost(Failure(ConnectionError("reset by peer")))
        self.clock.advance(0)
        self.successResultOf(job.lost)  # type: ignore[attr-defined]
        self.assertIn("modem connection lost", job.reason.getErrorMessage())  # type: ignore[attr-defined]

    def test_quarantined_modem_serves_no_job(self) -> None:
        session, _ = self.connect()
        session.dataReceived(b"ID:356938035643817\r\n")
        self.assertEqual(session.state, "quarantined")
        endpoint = self.channel.endpoint_for(parse_route("gprs:imei=356938035643817"))
        failure = self.failureResultOf(endpoint.connect(Factory.forProtocol(Answering)))
        self.assertIn("quarantined", str(failure.value))


class IecPipeTests(ChannelTestCase):
    """An IEC 62056-21 pull over a modem session that pushes readouts: a push already on its
    way when the pull signs on (or sent between the meter's identification and its readout)
    is told from the answer, stored once as a push, and the pull gets its own readout."""

    meters = (Meter("iec-1", "iec62056-21", f"gprs:imei={IMEI}", serial="LGZ4711",
                    address="4711"),)

    def setUp(self) -> None:
        super().setUp()
        self.ticks = 0
        # Every reading of a readout carries the meter's clock (no value stamped itself).
        self.iec = SimulatedIecMeter(address="4711", serial="LGZ4711",
                                     clock=lambda: 1_704_067_200.0 + 900 * self.ticks,
                                     extra_lines=["32.7.0(230.1*V)"])
        self.session, self.transport = self.connect()
        self.session.dataReceived(f"ID:{IMEI}\r\n".encode())
        self.assertEqual(self.session.state, "attached")

    def push(self) -> bytes:
        self.ticks += 1
        return self.iec.identification_message().encode() + self.iec.readout_block()

    def pull(self) -> Deferred[list[Record]]:
        from fep.protocols.registry import meter_protocol

        endpoint = self.channel.endpoint_for(parse_route(f"gprs:imei={IMEI}"))
        d: Deferred[list[Record]] = meter_protocol("iec62056-21").read(
            self.clock, endpoint, self.meters[0], 10.0)
        self.assertEqual(self.transport.value(), b"/?4711!\r\n")
        self.transport.clear()
        return d

    def pushed_times(self) -> list[datetime]:
        return sorted({r.meter_time for r in self.sink.records
                       if isinstance(r, Reading) and r.meter_time is not None})

    def answer_times(self, d: Deferred[list[Record]]) -> set[datetime | None]:
        records = self.successResultOf(d)
        self.assertEqual({r.meter for r in records}, {"iec-1"})
        return {r.meter_time for r in records if isinstance(r, Reading)}

    def test_a_push_coming_with_the_answers_identification(self) -> None:
        d = self.pull()
        ident = self.iec.identification_message().encode()
        self.session.dataReceived(self.push() + ident)
        self.assertEqual(self.transport.value(), b"\x06050\r\n")
        self.session.dataReceived(self.iec.readout_block())
        self.assertEqual(self.pushed_times(), [datetime(2024, 1, 1, 0, 15, tzinfo=UTC)])
        self.assertEqual(self.answer_times(d), {datetime(2024, 1, 1, 0, 15, tzinfo=UTC)})
        self.assertEqual(self.channel.stats.pipe_pushes, 1)
        self.clock.advance(0)
        self.assertEqual(self.session.state, "attached")
        self.assertFalse(self.transport.disconnecting)

    def test_a_push_before_the_answer_gets_no_option_select(self) -> None:
        d = self.pull()
        self.session.dataReceived(self.push())
        self.assertEqual(self.transport.value(), b"")
        self.session.dataReceived(self.iec.identification_message().encode())
        self.session.dataReceived(self.iec.readout_block())
        self.assertEqual(len(self.pushed_times()), 1)
        self.assertTrue(self.answer_times(d))

    def test_a_push_split_after_its_identification_finishes_before_the_pull(self) -> None:
        push = self.push()
        ident = self.iec.identification_message().encode()
        self.session.dataReceived(push[: len(ident)])
        endpoint = self.channel.endpoint_for(parse_route(f"gprs:imei={IMEI}"))
        from fep.protocols.registry import meter_protocol

        d = meter_protocol("iec62056-21").read(self.clock, endpoint, self.meters[0], 10.0)
        self.assertEqual(self.transport.value(), b"")  # the push under way goes first
        self.session.dataReceived(push[len(ident):])
        self.assertEqual(self.pushed_times(), [datetime(2024, 1, 1, 0, 15, tzinfo=UTC)])
        self.assertEqual(self.transport.value(), b"/?4711!\r\n")
        self.session.dataReceived(ident)
        self.session.dataReceived(self.iec.readout_block())
        self.assertTrue(self.answer_times(d))
        self.assertEqual(self.channel.stats.pipe_pushes, 0)

    def test_a_push_between_the_identification_and_the_readout(self) -> None:
        d = self.pull()
        self.session.dataReceived(self.iec.identification_message().encode())
        self.session.dataReceived(self.push() + self.iec.readout_block())
        self.assertEqual(self.pushed_times(), [datetime(2024, 1, 1, 0, 15, tzinfo=UTC)])
        self.assertTrue(self.answer_times(d))
        self.assertEqual(self.channel.stats.pipe_pushes, 1)


class SettingsTests(unittest.TestCase):
    def test_config_section_becomes_settings(self) -> None:
        config = parse_config(
            "[fep]\n[store]\n[gprs]\nlisten = tcp:4070\nunknown = Register\n"
            "identify = ascii, dlms\nheartbeat = hex:A5FE PING\\r\\n\n"
        )
        settings = gprs_settings(config.gprs)
        self.assertEqual(
            (settings.unknown, settings.rules, settings.heartbeats),
            ("register", ("ascii", "dlms"), (b"\xa5\xfe", b"PING\r\n")),
        )

    def test_bad_values_name_the_key(self) -> None:
        for text, key in (
            ("unknown = maybe", "unknown"),
            ("identify = ascii smoke", "identify"),
            ("registration = ID:(\\d+)", "registration"),
            ("heartbeat = hex:XYZ", "heartbeat"),
            ("register_protocol = morse", "register_protocol"),
        ):
            with self.assertRaises(ConfigError) as caught:
                parse_config(f"[fep]\n[store]\n[gprs]\n{text}\n", "site.ini")
            self.assertEqual((caught.exception.section, caught.exception.key), ("gprs", key))
            self.assertIn("site.ini [gprs]", str(caught.exception))

    def test_as_dict_is_json_ready(self) -> None:
        import json

        channel = GprsChannel(Clock(), GprsSettings(), sink=Sink(), directory=None)
        session = channel.factory("tcp:1").buildProtocol(None)
        assert isinstance(session, ModemSession)
        session.makeConnection(ModemTransport())
        row: dict[str, Any] = json.loads(json.dumps(channel.sessions()[0].as_dict()))
        self.assertEqual((row["state"], row["modem"], row["meters"]), ("identifying", None, []))



class _Counters(InvocationCounterGuard):
    """The counters a pull session reserves its own from (in memory)."""

    def reserve(self, key: str, count: int, meter_key: str | None = None) -> Deferred[int]:
        return succeed(1)


AARQ, AARE, RLRQ, RLRE = 0x60, 0x61, 0x62, 0x63


class DlmsPipeTests(ChannelTestCase):
    """A DLMS pull over a modem session whose meter pushes during the pull: each push is
    stored once, whichever answer it shares a read with (the AARE, the RLRE) and however
    it is split around the pull's end."""

    def setUp(self) -> None:
        super().setUp()
        from fep.sim.dlms import DlmsMeterServerFactory

        self.dlms = PushingDlmsMeter()
        factory = DlmsMeterServerFactory(self.dlms.meter, self.dlms.server.settings)
        self.meter_side = factory.buildProtocol(None)
        self.meter_out = StringTransport()
        self.meter_side.makeConnection(self.meter_out)
        self.session, self.transport = self.connect()
        self.session.dataReceived(f"ID:{IMEI}\r\n".encode())

    def push(self) -> bytes:
        """The next push, ciphered by the meter's server (one counter sequence)."""
        self.dlms.ticks += 1
        apdu = self.meter_side.server.push(self.dlms.meter.push_body())  # type: ignore[attr-defined]
        return wrapper.encode_wrapper(wrapper.WrapperFrame(1, 102, apdu))

    def pull(self, before: Any = (), after: Any = (), split: int = 0) -> list[Record]:
        """A pull job; the meter pushes before answering the requests tagged in ``before``
        and after answering those in ``after``, each push in the same read as the answer
        (``split``: the last ``split`` bytes of the RLRE's read come in a read of their own
        after the pull)."""
        from fep.protocols.dlms.context import DlmsContext
        from fep.protocols.dlms.session import DlmsProtocol

        endpoint = self.channel.endpoint_for(parse_route(f"gprs:imei={IMEI}"))
        d = DlmsProtocol(DlmsContext(_Counters())).read(self.clock, endpoint, self.meters[0],
                                                        10.0)
        rest = b""
        for _ in range(50):
            self.clock.advance(0)
            request = self.transport.value()
            if not request:
                break
            self.transport.clear()
            tag = request[8]
            chunk = self.push() if tag in before else b""
            self.meter_side.dataReceived(request)
            chunk += self.meter_out.value()
            self.meter_out.clear()
            if tag in after:
                chunk += self.push()
            if split and tag == RLRQ:
                chunk, rest = chunk[:-split], chunk[-split:]
            self.session.dataReceived(chunk)
        records: list[Record] = self.successResultOf(d)
        self.clock.advance(0)
        self.session.dataReceived(rest)
        self.assertEqual(self.session.state, "attached")
        self.assertTrue(records)
        self.assertEqual({r.meter for r in records}, {"dlms-1"})
        return records

    def assertPushesStored(self, pushes: int) -> None:
        stored = sorted({r.meter_time for r in self.sink.records
                         if isinstance(r, Reading) and r.meter_time is not None})
        self.assertEqual(stored, [datetime(2024, 1, 1, tzinfo=UTC) + n * timedelta(minutes=15)
                                  for n in range(1, pushes + 1)])
        self.assertEqual(len(self.sink.records), 5 * pushes)

    def test_a_push_at_the_aarq_in_the_same_read_as_the_aare(self) -> None:
        self.pull(before={AARQ})
        self.assertPushesStored(1)

    def test_a_push_in_the_same_read_after_the_aare(self) -> None:
        self.pull(after={AARQ})
        self.assertPushesStored(1)

    def test_a_push_in_the_same_read_after_the_rlre(self) -> None:
        self.pull(after={RLRQ})
        self.assertPushesStored(1)

    def test_a_push_begun_in_the_read_of_the_rlre(self) -> None:
        self.pull(after={RLRQ}, split=20)
        self.assertPushesStored(1)

    def test_pushes_around_every_answer(self) -> None:
        self.pull(before={AARQ, RLRQ, 0xC0, 0xDB, 0xD0, 0xC8}, after={AARQ, RLRQ, 0xC0, 0xD0, 0xC8})
        self.assertPushesStored(self.dlms.ticks)
