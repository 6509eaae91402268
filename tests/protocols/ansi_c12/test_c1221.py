"""ANSI C12.21: the timing setup and authenticate services and the identify features they
come with (bytes), DES against published test vectors, the C12.21 client against the
simulated C12.21 meter in memory, and ``C1221Protocol`` over loopback TCP and a socat pty
pair.

No published C12.21 packet captures were found: the service bytes are assembled from the
layouts Elster's MeteringSDK (MCOM/ProtocolC1221.cpp) exchanges with C12.21 meters.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, clientFromString
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from fep.errors import ConfigError, FepError, FrameError, ProtocolError
from fep.interfaces import IMeterProtocol
from fep.model import Meter, Reading
from fep.protocols.ansi_c12.c1218 import (
    C12ResponseError,
    IdentifyResponse,
    InsufficientSecurityClearance,
    Negotiate,
    NegotiateResponse,
    Standard,
)
from fep.protocols.ansi_c12.c1221 import (
    DEFAULT_TIMING,
    AuthAlgorithm,
    Authenticate,
    AuthenticateResponse,
    AuthenticationFailed,
    AuthService,
    Timing,
    TimingSetup,
    TimingSetupResponse,
    answer_authenticate,
    auth_service,
    authenticate_request,
    check_authentication,
    decode_request,
    des_decrypt,
    des_encrypt,
    ticket_feature,
)
from fep.protocols.ansi_c12.client import (
    C1221Client,
    Failed,
    Finished,
    MeterData,
    SetTiming,
)
from fep.protocols.ansi_c12.session import C1218Session, C1221Protocol, settings_for_c1221
from fep.protocols.registry import meter_protocol
from fep.protocols.session import run_session
from fep.sim.ansi_c12 import C12MeterServerFactory, SimulatedC12Meter, serve_pty
from tests.channels.test_serialport import socat_pty_pair
from tests.protocols.ansi_c12.test_client import NOW, FakeClock, Wire, settings_

reactor: Any = global_reactor
OPENING = ["identify", "timing setup", "negotiate", "logon", "authenticate"]

KEY = bytes.fromhex("0123456789ABCDEF")
OTHER_KEY = bytes.fromhex("FEDCBA9876543210")
TICKET = bytes.fromhex("A1B2C3D4E5F60718")


def c1221_meter(**kw: Any) -> SimulatedC12Meter:
    base: dict[str, Any] = {
        "clock": FakeClock(),
        "password": None,
        "standard": Standard.C12_21,
        "auth_key": KEY,
        "auth_key_id": 2,
        "ticket_source": lambda: TICKET,
    }
    base.update(kw)
    return SimulatedC12Meter(**base)


def c1221_settings(**kw: Any) -> Any:
    base: dict[str, Any] = {"timing": DEFAULT_TIMING, "auth_key": KEY, "auth_key_id": 2}
    base.update(kw)
    return settings_(**base)


class DesTests(unittest.TestCase):
    def test_fips_81_ecb_example(self) -> None:
        # FIPS PUB 81 (DES modes of operation), appendix B, ECB: key 0123456789ABCDEF,
        # plaintext "Now is t" -> 3FA40E8A984D4815.
        self.assertEqual(des_encrypt(KEY, b"Now is t"), bytes.fromhex("3FA40E8A984D4815"))

    def test_des_algorithm_illustrated_example(self) -> None:
        # J. Orlin Grabbe, "The DES Algorithm Illustrated": key 133457799BBCDFF1,
        # M = 0123456789ABCDEF -> C = 85E813540F0AB405.
        key = bytes.fromhex("133457799BBCDFF1")
        self.assertEqual(des_encrypt(key, KEY), bytes.fromhex("85E813540F0AB405"))
        self.assertEqual(des_decrypt(key, bytes.fromhex("85E813540F0AB405")), KEY)

    def test_wrong_sizes_are_value_errors(self) -> None:
        self.assertRaises(ValueError, des_encrypt, KEY[:7], TICKET)
        self.assertRaises(ValueError, des_encrypt, KEY, TICKET + b"\0")


class ServiceBytesTests(unittest.TestCase):
    def test_timing_setup_request(self) -> None:
        request = TimingSetup(Timing(30, 1, 4, 3))
        self.assertEqual(request.encode(), bytes.fromhex("71 1E 01 04 03"))
        self.assertEqual(decode_request(request.encode()), request)

    def test_timing_setup_answer(self) -> None:
        answer = TimingSetupResponse.decode(bytes.fromhex("00 14 02 06 01"))
        self.assertEqual(answer.timing, Timing(20, 2, 6, 1))
        self.assertEqual(answer.encode(), bytes.fromhex("00 14 02 06 01"))

    def test_timing_setup_refusal_and_short_answer(self) -> None:
        self.assertRaises(C12ResponseError, TimingSetupResponse.decode, b"\x02")
        with self.assertRaises(FrameError) as cm:
            TimingSetupResponse.decode(bytes.fromhex("00 14 02 06"))
        self.assertEqual(cm.exception.field, "timing setup")

    def test_timing_values_are_bytes(self) -> None:
        self.assertRaises(ValueError, Timing, 256)
        self.assertRaises(ValueError, Timing, retries=-1)

    def test_authenticate_request_and_answer(self) -> None:
        request = Authenticate(2, bytes(range(8)))
        self.assertEqual(request.encode(), bytes.fromhex("53 09 02 0001020304050607"))
        self.assertEqual(decode_request(request.encode()), request)
        answer = AuthenticateResponse.decode(bytes.fromhex("00 09 02 1011121314151617"))
        self.assertEqual(answer, AuthenticateResponse(2, bytes(range(16, 24))))

    def test_authenticate_length_mismatch_is_a_frame_error(self) -> None:
        with self.assertRaises(FrameError) as cm:
            AuthenticateResponse.decode(bytes.fromhex("00 09 02 1011"))
        self.assertEqual(cm.exception.field, "auth-len")
        self.assertRaises(FrameError, decode_request, bytes.fromhex("53 05 02 00"))

    def test_key_stays_out_of_reprs(self) -> None:
        self.assertNotIn("0001", repr(Authenticate(2, bytes(range(8)))))
        self.assertNotIn("0123", repr(c1221_settings()))

    def test_identify_with_a_ticket(self) -> None:
        raw = bytes.fromhex("00 02 01 00 02 01 00 08") + TICKET + b"\0"
        identification = IdentifyResponse.decode(raw)
        self.assertEqual(identification.standard, Standard.C12_21)
        self.assertEqual(
            auth_service(identification), AuthService(True, AuthAlgorithm.DES, TICKET)
        )
        self.assertEqual(
            IdentifyResponse(2, 1, 0, (ticket_feature(TICKET),)).encode(), raw
        )

    def test_identify_with_the_auth_service_feature(self) -> None:
        identification = IdentifyResponse.decode(bytes.fromhex("00 02 01 00 01 01 FF 00"))
        self.assertEqual(auth_service(identification), AuthService(True, 0xFF))
        plain = IdentifyResponse.decode(bytes.fromhex("00 02 01 00 00"))
        self.assertIsNone(auth_service(plain))

    def test_identify_07_as_session_control_or_as_device_identity(self) -> None:
        # C12.18-2006/C12.22 read 07 as one session-control byte ...
        control = IdentifyResponse.decode(bytes.fromhex("00 02 01 00 07 01 00"))
        self.assertEqual(control.features, ((0x07, b"\x01"),))
        # ... MeteringSDK's C12.21 as device identity: length 3, "ABC".
        identity = IdentifyResponse.decode(bytes.fromhex("00 02 01 00 07 03 41 42 43 00"))
        self.assertEqual(identity.features, ((0x07, b"\x03ABC"),))

    def test_negotiate_answer_with_baud_00_externally_defined(self) -> None:
        answer = NegotiateResponse.decode(bytes.fromhex("00 0100 01 00"))
        self.assertEqual(answer, NegotiateResponse(256, 1, 0))
        self.assertEqual(answer.encode(), bytes.fromhex("00 0100 01 00"))

    @given(st.binary(max_size=40))
    def test_arbitrary_bytes_give_a_value_or_a_typed_error(self, raw: bytes) -> None:
        for decode in (
            decode_request,
            TimingSetupResponse.decode,
            AuthenticateResponse.decode,
            IdentifyResponse.decode,
        ):
            try:
                decode(raw)
            except (FrameError, C12ResponseError):
                pass

    @given(st.tuples(*(st.integers(0, 255),) * 4), st.integers(0, 255), st.binary(max_size=20))
    def test_round_trips(
        self, timing: tuple[int, int, int, int], key_id: int, value: bytes
    ) -> None:
        request = TimingSetup(Timing(*timing))
        self.assertEqual(decode_request(request.encode()), request)
        self.assertEqual(TimingSetupResponse.decode(TimingSetupResponse(Timing(*timing)).encode()),
                         TimingSetupResponse(Timing(*timing)))  # fmt: skip
        auth = Authenticate(key_id, value)
        self.assertEqual(decode_request(auth.encode()), auth)


class AuthenticationTests(unittest.TestCase):
    SERVICE = AuthService(True, AuthAlgorithm.DES, TICKET)

    def test_exchange_with_the_same_key(self) -> None:
        request = authenticate_request(self.SERVICE, KEY, 2)
        self.assertEqual(request, Authenticate(2, des_encrypt(KEY, TICKET)))
        answer = answer_authenticate(request, KEY, 2, TICKET)
        assert answer is not None
        check_authentication(request, answer, KEY)  # no error

    def test_meter_refuses_another_key_or_key_id(self) -> None:
        self.assertIsNone(answer_authenticate(authenticate_request(self.SERVICE, OTHER_KEY, 2),
                                              KEY, 2, TICKET))  # fmt: skip
        self.assertIsNone(
            answer_authenticate(authenticate_request(self.SERVICE, KEY, 3), KEY, 2, TICKET)
        )

    def test_a_device_without_the_key_fails_authentication(self) -> None:
        request = authenticate_request(self.SERVICE, KEY, 2)
        fake = AuthenticateResponse(2, des_encrypt(OTHER_KEY, request.value))
        with self.assertRaises(AuthenticationFailed) as cm:
            check_authentication(request, fake, KEY, meter="m9")
        self.assertIn("meter m9 failed authentication", cm.exception.message)
        with self.assertRaises(AuthenticationFailed):
            check_authentication(request, AuthenticateResponse(3, fake.value), KEY)

    def test_aes_or_a_missing_ticket_is_a_protocol_error_naming_the_meter(self) -> None:
        with self.assertRaises(ProtocolError) as cm:
            authenticate_request(AuthService(True, 0xFF, bytes(16)), KEY, 2, meter="m9")
        self.assertIn("meter m9 asks for authentication algorithm 0xFF (AES", cm.exception.message)
        with self.assertRaises(ProtocolError) as cm:
            authenticate_request(AuthService(True, 0), KEY, 2, meter="m9")
        self.assertIn("sent no authentication ticket", cm.exception.message)


def run(client: C1221Client, meter: SimulatedC12Meter, **kw: Any) -> tuple[Any, Wire]:
    wire = Wire(client, meter, **kw)
    return wire.run(), wire


class ClientTests(unittest.TestCase):
    def test_session_order_and_requests(self) -> None:
        meter = c1221_meter()
        end, wire = run(C1221Client(c1221_settings(), now=lambda: NOW), meter)
        assert isinstance(end, Finished) and isinstance(end.data, MeterData)
        self.assertEqual(meter.log[:6], ["identify", "timing setup", "negotiate", "logon",
                                         "authenticate", "read 0"])  # fmt: skip
        self.assertEqual(meter.log[-2:], ["logoff", "terminate"])
        self.assertEqual(wire.requests[1], bytes.fromhex("71 1E 01 04 03"))
        self.assertEqual(wire.requests[2], Negotiate(256, 4).encode())  # no baud: 60
        self.assertEqual(wire.requests[4], b"\x53\x09\x02" + des_encrypt(KEY, TICKET))
        self.assertEqual(end.data.negotiated.baud, 0)  # externally defined
        self.assertEqual(end.data.identification.standard, Standard.C12_21)
        by = {str(r.obis): r for r in end.data.to_records("m1") if isinstance(r, Reading)}
        self.assertEqual(by["1-0:1.8.0*255"].unit_text, "kWh")

    def test_the_meter_s_timing_is_taken(self) -> None:
        meter = c1221_meter(timing_limits=Timing(20, 1, 2, 1))
        client = C1221Client(c1221_settings(timing=Timing(60, 2, 6, 4)), now=lambda: NOW)
        end, wire = run(client, meter)
        assert isinstance(end, Finished)
        self.assertEqual(wire.requests[1], bytes.fromhex("71 3C 02 06 04"))
        agreed = Timing(20, 1, 2, 1)
        self.assertIn(SetTiming(agreed), wire.actions)
        self.assertEqual((client.timing, client.link.retries), (agreed, 1))

    def test_no_timing_setup_keeps_the_defaults(self) -> None:
        meter = c1221_meter()
        client = C1221Client(c1221_settings(timing=None), now=lambda: NOW)
        end, _ = run(client, meter)
        assert isinstance(end, Finished)
        self.assertNotIn("timing setup", meter.log)
        self.assertEqual(client.timing, DEFAULT_TIMING)

    def test_wrong_key_is_isc_after_terminate(self) -> None:
        meter = c1221_meter()
        end, _ = run(C1221Client(c1221_settings(auth_key=OTHER_KEY)), meter)
        assert isinstance(end, Failed)
        error = end.error
        assert isinstance(error, InsufficientSecurityClearance)
        self.assertEqual((error.meter, error.service), ("m1", "authenticate"))
        self.assertEqual(meter.log[-2:], ["authenticate", "terminate"])
        self.assertNotIn("fedc", str(error).lower())

    def test_a_fake_meter_fails_authentication(self) -> None:
        def fake(request: bytes, answer: bytes) -> bytes:
            if request[:1] == b"\x53":
                return AuthenticateResponse(2, bytes(8)).encode()
            return answer

        end, wire = run(C1221Client(c1221_settings()), c1221_meter(), answers=fake)
        assert isinstance(end, Failed)
        self.assertIsInstance(end.error, AuthenticationFailed)
        self.assertEqual(wire.meter.log[-1], "terminate")

    def test_meter_that_does_not_ask_uses_the_password(self) -> None:
        meter = c1221_meter(auth_key=None, password=b"pw")
        end, _ = run(C1221Client(c1221_settings(password=b"pw")), meter)
        assert isinstance(end, Finished)
        self.assertIn("security", meter.log)
        self.assertNotIn("authenticate", meter.log)
        self.assertIn(("authenticate", "the meter does not ask for it"), end.data.skipped)

    def test_a_c1218_meter_refuses_timing_setup_and_is_read_anyway(self) -> None:
        meter = SimulatedC12Meter(clock=FakeClock())
        end, _ = run(C1221Client(c1221_settings(password=b"secret")), meter)
        assert isinstance(end, Finished)
        notes = dict(end.data.skipped)
        self.assertIn("sns (service not supported)", notes["timing setup"])
        self.assertEqual(notes["identify"], "the meter names reference standard 0")
        self.assertIn("read 23", meter.log)

    def test_a_meter_asking_for_aes_ends_the_session(self) -> None:
        def aes(request: bytes, answer: bytes) -> bytes:
            if request == b"\x20":
                return IdentifyResponse(2, 1, 0, ((0x02, b"\x01\xff\x08" + TICKET),)).encode()
            return answer

        end, wire = run(C1221Client(c1221_settings()), c1221_meter(), answers=aes)
        assert isinstance(end, Failed)
        self.assertIn("fep does DES (0x00) only", str(end.error))
        self.assertEqual(wire.meter.log[-1], "terminate")

    @settings(max_examples=150)
    @given(st.integers(0, 8), st.binary(min_size=1, max_size=40))
    def test_arbitrary_answer_at_any_step_ends_typed(self, step: int, answer: bytes) -> None:
        """The n-th answer (identify, timing setup, negotiate, logon, authenticate, reads)
        replaced by arbitrary bytes: the session goes on or fails with a fep error."""
        count = [0]

        def replace(request: bytes, real: bytes) -> bytes:
            count[0] += 1
            return answer if count[0] == step + 1 else real

        end, _ = run(C1221Client(c1221_settings(profile=False, events=False)), c1221_meter(),
                     answers=replace)  # fmt: skip
        if isinstance(end, Failed):
            self.assertIsInstance(end.error, FepError)
        else:
            self.assertIsInstance(end, Finished)

    def test_tables_mode_works_over_c1221(self) -> None:
        meter = c1221_meter()
        end, _ = run(C1221Client(c1221_settings(tables=(15,)), now=lambda: NOW), meter)
        assert isinstance(end, Finished)
        self.assertIn(15, end.data.tables)


def c1221_meter_record(route: str, **metadata: str) -> Meter:
    md = {"c12_auth_key": KEY.hex(), "c12_auth_key_id": "2", **metadata}
    return Meter(id="c1221-1", protocol="ansi-c12.21", route=route, metadata=md)


class SessionTests(unittest.TestCase):
    def setUp(self) -> None:
        meter = SimulatedC12Meter(password=None, standard=Standard.C12_21, auth_key=KEY,
                                  auth_key_id=2, multiplier=Decimal(2))  # fmt: skip
        self.factory = C12MeterServerFactory(meter, reactor)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.route = f"tcp:127.0.0.1:{self.port.getHost().port}"

    def read(self, **metadata: str) -> Any:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        meter = c1221_meter_record(self.route, **metadata)
        return C1221Protocol().read(reactor, endpoint, meter, 5.0)

    def test_registry_and_interface(self) -> None:
        protocol = meter_protocol("ansi-c12.21")
        self.assertIsInstance(protocol, C1221Protocol)
        verifyObject(IMeterProtocol, protocol)

    @inlineCallbacks
    def test_reads_over_loopback_tcp(self) -> Any:
        records = yield self.read(c12_events="no")
        by = {str(r.obis): r for r in records if isinstance(r, Reading)}
        energy = by["1-0:1.8.0*255"]
        assert isinstance(energy.value, Decimal)
        self.assertGreaterEqual(energy.value, 2 * Decimal("1234.5"))  # ST15 x2 applied
        self.assertEqual(energy.meter, "c1221-1")
        self.assertEqual(self.factory.meter.log[:5], OPENING)

    @inlineCallbacks
    def test_the_session_waits_for_acks_as_long_as_the_meter_agreed(self) -> Any:
        self.factory.meter.timing_limits = Timing(20, 1, 2, 1)
        meter = c1221_meter_record(self.route, c12_profile="no", c12_events="no")
        client = C1221Client(settings_for_c1221(meter))
        session = C1218Session(reactor, meter, client, 5.0, 4.0, "ansi-c12.21")
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        self.assertEqual(session.ack_timeout, 4.0)
        yield run_session(reactor, endpoint, session, self.route, 5.0)
        self.assertEqual((session.ack_timeout, client.link.retries), (2.0, 1))

    @inlineCallbacks
    def test_wrong_key_is_isc_naming_meter_and_route(self) -> Any:
        with self.assertRaises(InsufficientSecurityClearance) as cm:
            yield self.read(c12_auth_key=OTHER_KEY.hex())
        self.assertEqual((cm.exception.meter, cm.exception.route), ("c1221-1", self.route))
        self.assertIn("refused authenticate", cm.exception.message)

    @inlineCallbacks
    def test_tables_over_c1221(self) -> Any:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        rows = yield C1221Protocol().read_tables(
            reactor, endpoint, c1221_meter_record(self.route), [15, 2048], 5.0
        )
        self.assertEqual([row["label"] for row in rows], ["ST15", "MT0"])
        fields = rows[0]["fields"]
        assert isinstance(fields, list)
        self.assertEqual(fields[0]["multiplier"], 2)


class SettingsTests(unittest.TestCase):
    def meter(self, **metadata: str) -> Meter:
        return Meter(id="m", protocol="ansi-c12.21", route="tcp:h:1", metadata=metadata)

    def test_metadata_becomes_c1221_settings(self) -> None:
        s = settings_for_c1221(self.meter(
            c12_auth_key="hex:" + KEY.hex(), c12_auth_key_id="7", c12_traffic_timeout="45",
            c12_intercharacter_timeout="2", c12_response_timeout="6", c12_retries="4",
        ))  # fmt: skip
        self.assertEqual((s.auth_key, s.auth_key_id), (KEY, 7))
        self.assertEqual(s.timing, Timing(45, 2, 6, 4))
        self.assertEqual(settings_for_c1221(self.meter()).timing, DEFAULT_TIMING)
        self.assertIsNone(settings_for_c1221(self.meter(c12_timing_setup="no")).timing)

    def test_bad_settings_name_their_key_and_never_echo_the_key(self) -> None:
        cases = {
            "c12_auth_key": self.meter(c12_auth_key="0123"),
            "c12_auth_key_id": self.meter(c12_auth_key_id="300"),
            "c12_traffic_timeout": self.meter(c12_traffic_timeout="soon"),
            "c12_timing_setup": self.meter(c12_timing_setup="perhaps"),
        }
        for key, meter in cases.items():
            with self.assertRaises(ConfigError) as cm:
                settings_for_c1221(meter)
            self.assertEqual(cm.exception.key, key, cm.exception)
        with self.assertRaises(ConfigError) as cm:
            settings_for_c1221(self.meter(c12_auth_key="0123456789ABCDZZ"))
        self.assertNotIn("0123456789", str(cm.exception))
        with self.assertRaises(ConfigError):
            settings_for_c1221(self.meter(c12_response_timeout="300"))


class PtyPairTests(unittest.TestCase):
    @inlineCallbacks
    def test_reads_the_c1221_simulator_over_a_pty_pair(self) -> Any:
        a, b = yield socat_pty_pair(self)
        sim = SimulatedC12Meter(password=None, standard=Standard.C12_21, auth_key=KEY,
                                auth_key_id=2)  # fmt: skip
        factory = C12MeterServerFactory(sim, reactor)
        sim_port = serve_pty(reactor, a, factory)
        self.addCleanup(sim_port.loseConnection)
        route = f"serial:{b}:baudrate=9600:bytesize=8:parity=N:stopbits=1"
        meter = c1221_meter_record(route, c12_profile="no", c12_events="no")
        records = yield C1221Protocol().read(reactor, clientFromString(reactor, route), meter, 5.0)
        by = {str(r.obis): r for r in records if isinstance(r, Reading)}
        self.assertEqual(by["0-0:96.1.0*255"].value, "SIM0000001")
        self.assertEqual(by["1-0:1.8.0*255"].unit_text, "kWh")
        self.assertEqual(sim.log[:5], OPENING)
        # The modems set the speed: negotiate asked for none, the line stayed at 9600 Bd.
        self.assertEqual(sim_port.baudrate, 9600)
        self.assertEqual(sim.negotiated, NegotiateResponse(256, 4, 0))
