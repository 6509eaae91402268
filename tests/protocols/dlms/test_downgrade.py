"""No cipher downgrade: a meter with keys never has an unciphered APDU accepted from it, on a
push (by the session's meter or the logical device name it claims), nor in a pull session's
answers; each refusal is counted and raised as a security event. And fep's own identity:
the node-derived client system title and the names its counters are kept under."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface import implementer

from fep.config import parse_config
from fep.errors import ConfigError
from fep.interfaces import IPushChannel
from fep.model import EventKind, Meter, MeterEvent, Reading, Record
from fep.protocols.dlms import acse, security, wrapper
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms.client import Associated, ClientSettings, DlmsClient, Pushed
from fep.protocols.dlms.context import DlmsContext, SecurityEvents
from fep.protocols.dlms.errors import DowngradeError
from fep.protocols.dlms.identity import (
    DOWNGRADE_CODE,
    counter_key,
    key_fingerprint,
    node_system_title,
)
from fep.protocols.dlms.link import LinkSettings, WrapperLink
from fep.protocols.dlms.security import InvocationCounterGuard
from fep.protocols.dlms.server import DlmsServer, ServerSettings
from fep.protocols.dlms.session import DlmsConnection, DlmsProtocol, DlmsPushDecoder
from fep.protocols.dlms.settings import settings_for
from fep.sim import dlms_meter as sim
from fep.sim.dlms import DlmsMeterServerFactory, DlmsMeterServerProtocol
from fep.store.counters import InvocationCounterFile
from tests.protocols.dlms.test_association import (
    ENERGY,
    KEYS,
    METER_TITLE,
    associated,
    pair,
)

NOW = datetime(2024, 5, 2, 10, 7, 12, tzinfo=UTC)


class Sink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def submit(self, records: list[Record]) -> Deferred[None]:
        self.records.extend(records)
        return succeed(None)

    def events(self) -> list[MeterEvent]:
        return [r for r in self.records if isinstance(r, MeterEvent)]

    def readings(self) -> list[Reading]:
        return [r for r in self.records if isinstance(r, Reading)]


def keyed(meter_id: str = "m1", serial: str = "GOOD0001") -> Meter:
    return Meter(meter_id, "dlms", "gprs:imei=1", serial=serial, metadata={
        "dlms_server_system_title": METER_TITLE.hex(),
        "dlms_ek": KEYS.block_cipher_key.hex(), "dlms_ak": KEYS.authentication_key.hex()})


def plain_push(serial: str = "GOOD0001") -> bytes:
    meter = sim.SimulatedDlmsMeter(serial=serial, now=lambda: NOW)
    return A.encode_apdu(A.DataNotification(meter.push_body()))


class ClientDowngradeTests(unittest.TestCase):
    """The sans-IO client: plain where ciphered is due is a DowngradeError or a refused
    push marked as a downgrade."""

    def test_a_plain_get_response_on_a_ciphered_association_is_refused(self) -> None:
        client, server, _ = associated(ClientSettings(keys=KEYS, ciphered=True))
        answer = server.receive(client.get(ENERGY))
        assert answer is not None
        plain = security.decipher_apdu(answer, keys=KEYS, system_title=METER_TITLE).plain_apdu
        self.assertIsInstance(A.decode_apdu(plain), A.GetResponse)
        with self.assertRaises(DowngradeError):
            client.receive(plain)

    def test_a_plain_initiate_response_to_a_ciphered_aarq_is_refused(self) -> None:
        client, server, _ = pair(ClientSettings(keys=KEYS, ciphered=True))
        answer = server.receive(client.associate())
        assert answer is not None
        aare = acse.decode_acse(answer)
        assert isinstance(aare, acse.Aare) and aare.user_information is not None
        inner = security.decipher_apdu(
            aare.user_information, keys=KEYS, system_title=METER_TITLE).plain_apdu
        stripped = acse.encode_aare(attrs.evolve(aare, user_information=inner))
        with self.assertRaises(DowngradeError):
            client.receive(stripped)
        # The ciphered answer itself is taken.
        client2, server2, _ = pair(ClientSettings(keys=KEYS, ciphered=True))
        answer2 = server2.receive(client2.associate())
        assert answer2 is not None
        self.assertIsInstance(client2.receive(answer2), Associated)

    def test_a_plain_push_from_a_meter_with_keys_is_refused_as_a_downgrade(self) -> None:
        client, _, _ = associated(ClientSettings(keys=KEYS, ciphered=True))
        pushed = client.receive(plain_push())
        assert isinstance(pushed, Pushed)
        self.assertTrue(pushed.downgrade)
        self.assertIsNone(pushed.notification)

    def test_a_plain_push_from_a_meter_without_keys_is_still_a_push(self) -> None:
        client, _, _ = associated(ClientSettings())
        pushed = client.receive(plain_push())
        assert isinstance(pushed, Pushed)
        self.assertFalse(pushed.downgrade)
        self.assertIsInstance(pushed.notification, A.DataNotification)

    def test_keys_with_ciphering_turned_off_are_refused(self) -> None:
        meter = attrs.evolve(keyed(), metadata={**keyed().metadata, "dlms_ciphered": "no"})
        with self.assertRaises(ConfigError) as caught:
            settings_for(meter)
        self.assertIn("dlms_ciphered", str(caught.exception))


class PushDowngradeTests(unittest.TestCase):
    """The push decoder (push listener and GPRS sessions)."""

    def test_a_gprs_sessions_keyed_meter_pushing_plain_is_refused_and_raised(self) -> None:
        sink = Sink()
        decoder = DlmsPushDecoder(sink, lambda title, wport: keyed())
        self.assertFalse(decoder.notification(plain_push()))
        self.assertEqual(decoder.stats.rejected_plain, 1)
        self.assertEqual(decoder.stats.accepted, 0)
        self.assertEqual(sink.readings(), [])
        (event,) = sink.events()
        self.assertEqual((event.meter, event.code, event.kind), ("m1", DOWNGRADE_CODE,
                                                                 EventKind.TAMPER))
        self.assertIn("unciphered", event.text)

    def test_a_push_claiming_a_keyed_meters_name_is_refused_and_raised(self) -> None:
        sink = Sink()
        names: list[bytes] = []

        def identify(name: bytes) -> Meter | None:
            names.append(name)
            return keyed() if name == b"FEPGOOD0001" else None

        decoder = DlmsPushDecoder(sink, lambda title, wport: None, identify=identify)
        self.assertFalse(decoder.notification(plain_push("GOOD0001")))
        self.assertEqual(names, [b"FEPGOOD0001"])
        self.assertEqual(decoder.stats.rejected_plain, 1)
        self.assertEqual([e.code for e in sink.events()], [DOWNGRADE_CODE])
        # A stranger's plain push is refused as before, with no security event.
        self.assertFalse(decoder.notification(plain_push("STRANGER")))
        self.assertEqual(decoder.stats.rejected_unknown, 1)
        self.assertEqual(len(sink.events()), 1)

    def test_a_meter_without_keys_may_push_plain_on_its_session(self) -> None:
        sink = Sink()
        unkeyed = Meter("m2", "dlms", "gprs:imei=2")
        decoder = DlmsPushDecoder(sink, lambda title, wport: unkeyed)
        self.assertTrue(decoder.notification(plain_push()))
        self.assertEqual(len(sink.readings()), 5)
        self.assertEqual(sink.events(), [])

    def test_a_flood_is_counted_whole_but_raised_once_a_minute(self) -> None:
        sink = Sink()
        now = [1000.0]
        events = SecurityEvents(sink, clock=lambda: now[0])
        decoder = DlmsPushDecoder(sink, lambda title, wport: keyed(), security=events)
        for _ in range(50):
            decoder.notification(plain_push())
        self.assertEqual((decoder.stats.rejected_plain, events.downgrades), (50, 50))
        self.assertEqual(len(sink.events()), 1)
        now[0] += 61
        decoder.notification(plain_push())
        self.assertEqual(len(sink.events()), 2)

    def test_ciphered_pushes_still_pass_with_an_asynchronous_counter_keeper(self) -> None:
        sink = Sink()
        server = DlmsServer(sim.SimulatedDlmsMeter(now=lambda: NOW),
                            ServerSettings(system_title=METER_TITLE, keys=KEYS),
                            invocation_counter=5)
        push = server.push(sim.SimulatedDlmsMeter(now=lambda: NOW).push_body())
        file = InvocationCounterFile(reactor, Path(self.mktemp()) / "c.json")
        self.addCleanup(file.close)
        decoder = DlmsPushDecoder(sink, lambda title, wport: keyed(), file)
        self.assertTrue(decoder.notification(push))
        self.assertEqual(len(sink.readings()), 5)
        self.assertFalse(decoder.notification(push))  # the same counter again
        self.assertEqual(decoder.stats.rejected_replay, 1)


class DowngradingMeterProtocol(DlmsMeterServerProtocol):
    """A meter (or a man in the middle) that associates ciphered, then answers plain."""

    def __init__(self, factory: DlmsMeterServerFactory) -> None:
        super().__init__(factory)
        server = self.server
        ciphered_wrap = server._wrap

        def wrap(plain: bytes) -> bytes:
            return plain if server.associated else ciphered_wrap(plain)

        server._wrap = wrap  # type: ignore[method-assign]


class DowngradingFactory(DlmsMeterServerFactory):
    def buildProtocol(self, addr: Any) -> DlmsMeterServerProtocol:
        return DowngradingMeterProtocol(self)


class PullDowngradeTests(unittest.TestCase):
    timeout = 30

    async def test_a_plain_answer_in_a_ciphered_pull_fails_the_read_and_is_raised(self) -> None:
        factory = DowngradingFactory(sim.SimulatedDlmsMeter(now=lambda: NOW),
                                     ServerSettings(system_title=METER_TITLE, keys=KEYS))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        counters = InvocationCounterFile(reactor, Path(self.mktemp()) / "c.json")
        await counters.open()
        sink = Sink()
        protocol = DlmsProtocol(DlmsContext(counters, security=SecurityEvents(sink)))
        meter = attrs.evolve(keyed(), route="tcp:", metadata={
            **keyed().metadata, "dlms_objects": "3/1.0.1.8.0.255/2"})
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        with self.assertRaises(DowngradeError):
            await protocol.read(reactor, endpoint, meter, 5)
        self.assertEqual([(e.meter, e.code) for e in sink.events()], [("m1", DOWNGRADE_CODE)])
        self.assertEqual(sink.readings(), [])

    async def test_a_keyed_meter_is_refused_without_a_counter_store(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            await DlmsProtocol(DlmsContext(None)).read(
                reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", 1), keyed(), 5)
        self.assertIn("invocation counter", str(caught.exception))


class IdentityTests(unittest.TestCase):
    def test_a_nodes_system_title_is_derived_from_its_name(self) -> None:
        a, b = node_system_title("fep-a"), node_system_title("fep-b")
        self.assertEqual((len(a), a[:3]), (8, b"FEP"))
        self.assertEqual(a, node_system_title("fep-a"))  # deterministic
        self.assertNotEqual(a, b)
        self.assertEqual(a.hex(), "464550" + hashlib.sha256(b"fep-a").hexdigest()[:10])

    def test_config_derives_it_unless_dlms_system_title_is_set(self) -> None:
        config = parse_config("[fep]\nnode = fep-a\n[store]\n")
        self.assertEqual(config.dlms.client_system_title(config.fep.node),
                         node_system_title("fep-a"))
        config = parse_config("[fep]\nnode = fep-a\n[store]\n[dlms]\n"
                              "system_title = 4D4D4D0000000001\n")
        self.assertEqual(config.dlms.client_system_title("fep-a"),
                         bytes.fromhex("4D4D4D0000000001"))
        with self.assertRaises(ConfigError):
            parse_config("[fep]\n[store]\n[dlms]\nsystem_title = 4D4D\n")

    def test_sessions_use_the_contexts_title_unless_the_meter_names_one(self) -> None:
        title = node_system_title("fep-a")
        client, _ = settings_for(keyed(), title)
        self.assertEqual(client.system_title, title)
        own = attrs.evolve(keyed(), metadata={**keyed().metadata,
                                              "dlms_system_title": "4645500000000002"})
        self.assertEqual(settings_for(own, title)[0].system_title,
                         bytes.fromhex("4645500000000002"))

    def test_counters_are_kept_per_title_and_key_never_naming_the_key(self) -> None:
        ek = bytes(range(16))
        key = counter_key(b"FEP\x00\x00\x00\x00\x01", ek)
        self.assertTrue(key.startswith("4645500000000001:"))
        self.assertNotIn(ek.hex(), key)
        self.assertEqual(key.split(":")[1], key_fingerprint(ek))
        self.assertNotEqual(key_fingerprint(ek), key_fingerprint(bytes(16)))


@implementer(IPushChannel)
class PushTransport(StringTransport):
    """A GPRS session lent to a pull: it stores the pushes the session tells apart."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Record]] = []

    def pushed(self, records: list[Record]) -> Deferred[None]:
        self.batches.append(list(records))
        return succeed(None)


class PushDuringPullTests(unittest.TestCase):
    def test_a_ciphered_push_replayed_into_a_later_session_is_refused(self) -> None:
        """The session's own memory of counters ends with it; the daemon's keeper does not."""
        keeper = InvocationCounterGuard()
        server = DlmsServer(sim.SimulatedDlmsMeter(now=lambda: NOW),
                            ServerSettings(system_title=METER_TITLE, keys=KEYS),
                            invocation_counter=50)
        push = server.push(sim.SimulatedDlmsMeter(now=lambda: NOW).push_body())
        frame = wrapper.encode_wrapper(wrapper.WrapperFrame(1, 16, push))
        transports = []
        for _ in range(2):
            client = DlmsClient(ClientSettings(keys=KEYS, ciphered=True, meter="m1"))
            connection = DlmsConnection(Clock(), client, WrapperLink(LinkSettings()),
                                        timeout=5, accept_counter=keeper.accept_received)
            transport = PushTransport()
            connection.makeConnection(transport)
            connection.dataReceived(frame)
            transports.append(transport)
        self.assertEqual([len(t.batches) for t in transports], [1, 0])
        self.assertEqual(keeper.last_received(METER_TITLE), 50)

    def test_a_plain_push_during_a_keyed_pull_is_refused_and_raised(self) -> None:
        told: list[str] = []
        client = DlmsClient(ClientSettings(keys=KEYS, ciphered=True, meter="m1"))
        connection = DlmsConnection(Clock(), client, WrapperLink(LinkSettings()), timeout=5,
                                    on_downgrade=told.append)
        transport = PushTransport()
        connection.makeConnection(transport)
        connection.dataReceived(wrapper.encode_wrapper(wrapper.WrapperFrame(1, 16,
                                                                            plain_push())))
        self.assertEqual(transport.batches, [])
        self.assertEqual(len(told), 1)
        self.assertIn("unciphered", told[0])
