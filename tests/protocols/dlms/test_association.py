"""Our client against our server in memory: associations with no security, LLS and
HLS-GMAC over suite 0, long GETs in blocks, SET and ACTION, refusals as named errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms import axdr
from fep.protocols.dlms.client import (
    ActionDone,
    Associated,
    Authentication,
    ClientSettings,
    DlmsClient,
    Event,
    GetDone,
    Pushed,
    Released,
    Send,
    SetDone,
)
from fep.protocols.dlms.errors import (
    AssociationRefused,
    CipheringError,
    DlmsError,
    ExceptionResponse,
)
from fep.protocols.dlms.push import decode_push
from fep.protocols.dlms.security import SecurityKeys
from fep.protocols.dlms.server import DlmsServer, ServerSettings
from fep.sim import dlms_meter as sim
from tests.protocols.dlms.strategies import data_values
from tests.scale import examples

NOW = datetime(2024, 5, 2, 10, 7, 12, tzinfo=UTC)
KEYS = SecurityKeys(bytes(range(16)), bytes(range(0xD0, 0xE0)))
METER_TITLE = bytes.fromhex("4D4D4D0000BC614E")


def pair(
    client_settings: ClientSettings,
    server_settings: ServerSettings | None = None,
    max_pdu: int = 1024,
) -> tuple[DlmsClient, DlmsServer, sim.SimulatedDlmsMeter]:
    meter = sim.SimulatedDlmsMeter(now=lambda: NOW, history=timedelta(days=3))
    settings = server_settings or ServerSettings(
        system_title=METER_TITLE, password=b"12345678", keys=KEYS, max_pdu_size=max_pdu
    )
    return DlmsClient(client_settings), DlmsServer(meter, settings), meter


def exchange(client: DlmsClient, server: DlmsServer, request: bytes) -> Event:
    """Run one exchange to its end, following Send continuations."""
    for _ in range(1000):
        answer = server.receive(request)
        assert answer is not None
        event = client.receive(answer)
        if not isinstance(event, Send):
            return event
        request = event.apdu
    raise AssertionError("exchange did not end")


def associated(
    settings: ClientSettings, **kw: object
) -> tuple[DlmsClient, DlmsServer, sim.SimulatedDlmsMeter]:
    client, server, meter = pair(settings, **kw)  # type: ignore[arg-type]
    event = exchange(client, server, client.associate())
    assert isinstance(event, Associated), event
    return client, server, meter


ENERGY = A.AttributeDescriptor(3, sim.ACTIVE_IMPORT, 2)


class AssociationTests(unittest.TestCase):
    def test_no_security(self) -> None:
        client, server, _ = associated(ClientSettings())
        event = exchange(client, server, client.get(ENERGY))
        assert isinstance(event, GetDone)
        self.assertEqual(event.results[0].data, axdr.double_long_unsigned(sim.energy_wh(NOW)))
        self.assertIsInstance(exchange(client, server, client.release()), Released)

    def test_low_level_security(self) -> None:
        _, server, _ = associated(
            ClientSettings(authentication=Authentication.LOW, password=b"12345678")
        )
        self.assertTrue(server.associated)

    def test_wrong_password_is_refused_with_its_reason(self) -> None:
        client, server, _ = pair(
            ClientSettings(authentication=Authentication.LOW, password=b"nope", meter="m7")
        )
        with self.assertRaises(AssociationRefused) as caught:
            exchange(client, server, client.associate())
        self.assertIn("authentication-failure", str(caught.exception))
        self.assertEqual(caught.exception.meter, "m7")

    def test_hls_gmac_with_ciphering(self) -> None:
        client, server, _ = associated(
            ClientSettings(authentication=Authentication.HIGH_GMAC, keys=KEYS, ciphered=True)
        )
        self.assertEqual(client.server_system_title, METER_TITLE)
        event = exchange(client, server, client.get(ENERGY))
        assert isinstance(event, GetDone)
        self.assertEqual(event.results[0].data, axdr.double_long_unsigned(sim.energy_wh(NOW)))

    def test_hls_gmac_with_wrong_key_fails(self) -> None:
        wrong = SecurityKeys(bytes(range(16)), bytes(16))
        client, server, _ = pair(
            ClientSettings(authentication=Authentication.HIGH_GMAC, keys=wrong, ciphered=False)
        )
        with self.assertRaises(Exception) as caught:
            exchange(client, server, client.associate())
        self.assertNotIn(wrong.authentication_key.hex(), str(caught.exception))

    def test_ciphered_requests_are_not_replayable(self) -> None:
        client, server, _ = associated(ClientSettings(keys=KEYS, ciphered=True))
        request = client.get(ENERGY)
        exchange(client, server, request)
        answer = server.receive(request)  # the same ciphered bytes again
        assert answer is not None
        with self.assertRaises(ExceptionResponse):
            client.receive(answer)

    def test_server_answer_with_wrong_key_is_a_ciphering_error(self) -> None:
        client, server, _ = associated(ClientSettings(keys=KEYS, ciphered=True))
        other = DlmsClient(ClientSettings(keys=SecurityKeys(bytes(16), bytes(16)), ciphered=True))
        other.state = client.state
        other.server_system_title = client.server_system_title
        answer = server.receive(client.get(ENERGY))
        assert answer is not None
        other._pending = "get"
        with self.assertRaises(CipheringError):
            other.receive(answer)


class ServiceTests(unittest.TestCase):
    def test_long_profile_read_comes_in_blocks(self) -> None:
        client, server, meter = associated(ClientSettings(), max_pdu=256)
        event = exchange(client, server, client.get(A.AttributeDescriptor(7, sim.LOAD_PROFILE, 2)))
        assert isinstance(event, GetDone)
        rows = event.results[0].data
        assert rows is not None
        self.assertEqual(len(rows), len(meter.profile_times(None, None)))
        self.assertGreater(len(rows), 200)

    def test_get_with_list_reports_each_result(self) -> None:
        client, server, _ = associated(ClientSettings())
        missing = A.AttributeDescriptor(3, sim.O("1.0.99.99.0.255"), 2)
        event = exchange(client, server, client.get_with_list([(ENERGY, None), (missing, None)]))
        assert isinstance(event, GetDone)
        self.assertTrue(event.results[0].ok)
        self.assertEqual(event.results[1].error, A.DataAccessResult.OBJECT_UNDEFINED)

    def test_set_clock_and_disconnect_action(self) -> None:
        client, server, meter = associated(
            ClientSettings(authentication=Authentication.LOW, password=b"12345678")
        )
        new_time = axdr.CosemDateTime.from_datetime(NOW + timedelta(minutes=5))
        event = exchange(
            client,
            server,
            client.set(A.AttributeDescriptor(8, sim.CLOCK, 2), axdr.date_time(new_time)),
        )
        self.assertEqual(event, SetDone((0,)))
        self.assertEqual(meter.clock_offset, timedelta(minutes=5))
        event = exchange(
            client,
            server,
            client.action(A.MethodDescriptor(70, sim.DISCONNECT, 1), axdr.integer(0)),
        )
        self.assertEqual(event, ActionDone(0, None))
        self.assertEqual(meter.control_state, 0)

    def test_long_set_goes_in_blocks(self) -> None:
        client, server, _ = associated(ClientSettings(), max_pdu=128)
        client.max_pdu_size = 128
        value = axdr.octet_string(bytes(600))
        event = exchange(
            client, server, client.set(A.AttributeDescriptor(1, sim.SERIAL_NUMBER, 2), value)
        )
        assert isinstance(event, SetDone)
        self.assertEqual(event.results, (A.DataAccessResult.READ_WRITE_DENIED,))

    def test_request_before_association_is_refused(self) -> None:
        _, server, _ = pair(ClientSettings())
        answer = server.receive(A.encode_apdu(A.GetRequest(ENERGY)))
        assert answer is not None
        self.assertIsInstance(A.decode_apdu(answer), A.ExceptionResponseApdu)


class ReassemblyCeilingTests(unittest.TestCase):
    """Issue 14: a long answer in blocks has a ceiling (``max_reassembled``)."""

    def test_get_blocks_past_the_ceiling_are_a_frame_error(self) -> None:
        client, _, _ = associated(ClientSettings(max_reassembled=1000))
        client.get(ENERGY)
        block = bytes(400)
        for number in (1, 2):
            event = client.receive(A.encode_apdu(A.GetResponseBlock(False, number, raw=block)))
            self.assertIsInstance(event, Send)
        with self.assertRaises(FrameError) as caught:
            client.receive(A.encode_apdu(A.GetResponseBlock(False, 3, raw=block)))
        self.assertEqual(caught.exception.field, "block-transfer")

    def test_general_block_transfer_past_the_ceiling_is_a_frame_error(self) -> None:
        client, _, _ = associated(ClientSettings(max_reassembled=1000))
        client.get(ENERGY)
        for number in (1, 2):
            client.receive(A.encode_apdu(A.GeneralBlockTransfer(False, number, 0, bytes(400))))
        with self.assertRaises(FrameError):
            client.receive(A.encode_apdu(A.GeneralBlockTransfer(False, 3, 0, bytes(400))))

    def test_the_default_ceiling_takes_a_long_profile(self) -> None:
        self.assertGreaterEqual(ClientSettings().max_reassembled, 8 * 1024 * 1024)


class PushDuringSessionTests(unittest.TestCase):
    """A meter that pushes while a pull session runs over the same socket (a GPRS modem in
    transparent mode): the client tells the push from the answer in every state."""

    def push(self, server: DlmsServer, meter: sim.SimulatedDlmsMeter) -> bytes:
        return server.push(meter.push_body())

    def test_push_between_aarq_and_aare_then_the_aare(self) -> None:
        client, server, meter = pair(ClientSettings(keys=KEYS, ciphered=True, meter="m1"))
        aarq = client.associate()
        pushed = client.receive(self.push(server, meter))
        assert isinstance(pushed, Pushed)
        self.assertIsNone(pushed.problem)
        self.assertEqual(pushed.system_title, METER_TITLE)
        assert isinstance(pushed.notification, A.DataNotification)
        readings = decode_push("m1", pushed.notification).readings
        self.assertEqual(len(readings), 5)
        answer = server.receive(aarq)
        assert answer is not None
        self.assertIsInstance(client.receive(answer), Associated)

    def test_push_while_a_get_is_outstanding_on_a_ciphered_association(self) -> None:
        client, server, meter = associated(ClientSettings(keys=KEYS, ciphered=True))
        request = client.get(ENERGY)
        self.assertIsInstance(client.receive(self.push(server, meter)), Pushed)
        answer = server.receive(request)
        assert answer is not None
        event = client.receive(answer)
        assert isinstance(event, GetDone)
        self.assertEqual(event.results[0].data, axdr.double_long_unsigned(sim.energy_wh(NOW)))

    def test_ciphered_push_on_an_unciphered_association_uses_the_meters_keys(self) -> None:
        client, server, meter = associated(ClientSettings(keys=KEYS, ciphered=False))
        pushed = client.receive(self.push(server, meter))
        assert isinstance(pushed, Pushed)
        self.assertIsInstance(pushed.notification, A.DataNotification)

    def test_ciphered_push_without_keys_is_not_taken_but_not_fatal(self) -> None:
        client, server, meter = associated(ClientSettings())
        pushed = client.receive(self.push(server, meter))
        assert isinstance(pushed, Pushed)
        self.assertIsNone(pushed.notification)
        self.assertIn("no keys", pushed.problem or "")

    def test_replayed_push_is_not_taken(self) -> None:
        client, server, meter = associated(ClientSettings(keys=KEYS, ciphered=False))
        push = self.push(server, meter)
        client.receive(push)
        again = client.receive(push)
        assert isinstance(again, Pushed)
        self.assertIsNone(again.notification)
        self.assertIn("not above", again.problem or "")

    def test_plain_push_is_a_push(self) -> None:
        client, _, meter = associated(ClientSettings())
        plain = A.encode_apdu(A.DataNotification(meter.push_body()))
        pushed = client.receive(plain)
        assert isinstance(pushed, Pushed)
        self.assertIsInstance(pushed.notification, A.DataNotification)


class ArbitraryBytesTests(unittest.TestCase):
    """Bad input from a meter or a client is a typed error, never another exception."""

    @settings(max_examples=400)
    @given(st.binary(max_size=120))
    def test_client_receive(self, raw: bytes) -> None:
        client, _, _ = associated(ClientSettings(keys=KEYS, ciphered=True))
        client.get(ENERGY)
        try:
            client.receive(raw)
        except (DlmsError, FrameError):
            pass

    @settings(max_examples=400)
    @given(st.binary(max_size=120))
    def test_server_receive(self, raw: bytes) -> None:
        _, server, _ = associated(ClientSettings(keys=KEYS, ciphered=True))
        answer = server.receive(raw)
        if answer is not None:
            self.assertIsInstance(answer, bytes)

    @settings(max_examples=examples(400))
    @given(data_values)
    def test_push_bodies(self, body: axdr.Data) -> None:
        try:
            decode_push("m", A.DataNotification(body))
        except FrameError:
            pass
