"""DL/T 698.45 SECURITY-Request/Response: the codec (every verification choice, byte for
byte with the dlt698 package's ``encode_security``), reads in plaintext + RN mode against
the simulated meter (answers in plaintext + MAC, the MAC handed to the ESAM plug point),
the ``dlt698_security`` setting, and the ciphered modes still refused.

Layout (DL/T 698.45-2017 7.3, SECURITY-Request ::= SEQUENCE { CHOICE { plaintext [0]
octet-string, ciphertext [1] octet-string }, CHOICE { SID_MAC [0], RN [1], RN_MAC [2],
SID [3] } }; SECURITY-Response ::= SEQUENCE { CHOICE { plaintext [0], ciphertext [1], DAR
[2] }, OPTIONAL CHOICE { MAC [0], SID_MAC [1] } }), checked against the PyPI package
``dlt698`` 1.0.1's ``dlt698.codec.encode_security`` (the fixtures below are its bytes)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from fep.errors import ConfigError, FrameError, ProtocolError
from fep.model import Meter, Reading
from fep.protocols.dlt698.apdu import (
    GetKind,
    GetResponse,
    ResultNormal,
    SecurityRequest,
    SecurityResponse,
    Verification,
    decode_apdu,
    encode_apdu,
)
from fep.protocols.dlt698.client import Dlt698Client, Failed, Finished, RecordRead, Skipped
from fep.protocols.dlt698.data import OAD, Data, DataType
from fep.protocols.dlt698.frames import Frame, ServerAddress, control
from fep.protocols.dlt698.security import IDlt698Esam, NoEsam
from fep.protocols.dlt698.session import settings_for
from fep.sim.dlt698 import SIM_MAC
from tests.protocols.dlt698.test_client import NOW_DT, meter, run, settings
from tests.system import require_module

GET = bytes.fromhex("0501014000020000")
# dlt698 1.0.1: encode_security(SecurityRequest(application=GET, encrypted=False,
# verification=Rn(value=bytes(range(16)))))
PLAIN_RN = bytes.fromhex("10000805010140000200000110000102030405060708090a0b0c0d0e0f")
# SecurityResponse(application=85 01 01 40 00 02 00 01 01, verification=Mac(01020304))
PLAIN_MAC = bytes.fromhex("90000985010140000200010101000401020304")
# SecurityResponse(application=DAR 22)
DAR_ONLY = bytes.fromhex("90021600")
# SecurityRequest(ciphertext 0102, RnMac(random=AA*4, mac=BB*4))
CIPHER_RN_MAC = bytes.fromhex("10010201020204aaaaaaaa04bbbbbbbb")
# SecurityRequest(ciphertext 0102, SidMac(Sid(0x81000001, 0102), Mac(BB*4)))
CIPHER_SID_MAC = bytes.fromhex("1001020102008100000102010204bbbbbbbb")
# SecurityRequest(plaintext 01, Sid(1, 05))
PLAIN_SID = bytes.fromhex("1000010103000000010105")
# SecurityResponse(ciphertext 01, SidMac(Sid(1, ''), Mac(BB*4)))
CIPHER_SID_MAC_RESPONSE = bytes.fromhex("900101010101000000010004bbbbbbbb")


class CodecTests(unittest.TestCase):
    def test_every_verification_choice_round_trips(self) -> None:
        expected = {
            PLAIN_RN: SecurityRequest(GET, Verification.RN, rn=bytes(range(16))),
            PLAIN_MAC: SecurityResponse(bytes.fromhex("850101400002000101"),
                                        mac=bytes.fromhex("01020304")),
            DAR_ONLY: SecurityResponse(dar=22),
            CIPHER_RN_MAC: SecurityRequest(b"\x01\x02", Verification.RN_MAC, True,
                                           rn=b"\xaa" * 4, mac=b"\xbb" * 4),
            CIPHER_SID_MAC: SecurityRequest(b"\x01\x02", Verification.SID_MAC, True,
                                            mac=b"\xbb" * 4, sid=0x81000001,
                                            sid_data=b"\x01\x02"),
            PLAIN_SID: SecurityRequest(b"\x01", Verification.SID, sid=1, sid_data=b"\x05"),
            CIPHER_SID_MAC_RESPONSE: SecurityResponse(b"\x01", True, mac=b"\xbb" * 4,
                                                      sid=(1, b"")),
        }
        for raw, apdu in expected.items():
            self.assertEqual(decode_apdu(raw), apdu, raw.hex())
            self.assertEqual(encode_apdu(apdu), raw)

    def test_bad_choices_and_truncation_are_frame_errors(self) -> None:
        for raw in (b"\x10\x02\x00\x01\x00", b"\x10\x00\x00\x04", b"\x90\x03",
                    b"\x90\x00\x00\x01\x02\x00"):
            with self.assertRaises(FrameError):
                decode_apdu(raw)
        for raw in (PLAIN_RN, PLAIN_MAC, CIPHER_SID_MAC):
            for n in range(len(raw)):
                with self.assertRaises(FrameError):
                    decode_apdu(raw[:n])

    def test_the_peer_encodes_and_decodes_the_same_bytes(self) -> None:
        require_module("dlt698", pip="dlt698")
        from dlt698 import _native as n
        from dlt698 import codec

        request = n.SecurityRequest(application=GET, encrypted=False,
                                    verification=n.Rn(value=bytes(range(16))))
        self.assertEqual(codec.encode_security(request), PLAIN_RN)
        self.assertEqual(encode_apdu(SecurityRequest(GET, rn=bytes(range(16)))), PLAIN_RN)
        for raw in (PLAIN_MAC, DAR_ONLY, CIPHER_RN_MAC, CIPHER_SID_MAC, PLAIN_SID,
                    CIPHER_SID_MAC_RESPONSE):
            self.assertEqual(codec.encode_security(codec.decode_security(raw)), raw)


@implementer(IDlt698Esam)
class FakeEsam:
    """An ESAM service that knows the simulator's fixed MAC (or none)."""

    name = "test ESAM"

    def __init__(self, good: bytes | None) -> None:
        self.good = good
        self.asked: list[tuple[str, bytes, bytes, bytes]] = []

    def random(self, meter: str) -> bytes:
        return bytes([len(self.asked)]) * 16

    def verify(self, meter: str, rn: bytes, apdu: bytes, mac: bytes) -> bool | None:
        self.asked.append((meter, rn, apdu, mac))
        if self.good is None:
            return None
        return mac == self.good


ITEMS = (OAD(0x0010, 2), OAD(0x2000, 2))


class SecuredReadTests(unittest.TestCase):
    def test_a_plaintext_rn_read_of_a_meter_that_requires_it(self) -> None:
        sim = meter(require_security=True)
        esam = NoEsam(random=lambda n: b"\x5a" * n)
        verifyObject(IDlt698Esam, esam)
        client = Dlt698Client(settings(items=ITEMS, security="plaintext-rn", esam=esam))
        actions = run(client, sim)
        self.assertIsInstance(actions[-1], Finished)
        self.assertEqual(len([r for r in client.records if isinstance(r, Reading)]), 8)
        self.assertEqual(sim.rns, [b"\x5a" * 16])
        self.assertIn("secured", sim.log)
        # The shipped service verifies nothing: the answer is taken, counted unverified.
        self.assertEqual((client.unverified, client.macs_verified), (1, 0))

    def test_a_plain_read_of_such_a_meter_is_refused_item_by_item(self) -> None:
        sim = meter(require_security=True)
        client = Dlt698Client(settings(items=ITEMS))
        actions = run(client, sim)
        self.assertIsInstance(actions[-1], Finished)
        self.assertEqual(client.records, [])
        self.assertIn(("00100200", "DAR 20 (security authentication mismatch)"),
                      client.skipped)

    def test_refuse_unverified_fails_when_no_esam_service_verifies(self) -> None:
        client = Dlt698Client(settings(items=ITEMS, security="refuse-unverified"))
        actions = run(client, meter(require_security=True))
        failed = actions[-1]
        assert isinstance(failed, Failed)
        self.assertIn("MAC not verified", str(failed.error))
        self.assertIn("no ESAM service", str(failed.error))
        self.assertEqual(client.records, [])

    def test_an_esam_service_verifies_the_mac_with_the_rn(self) -> None:
        esam = FakeEsam(SIM_MAC)
        client = Dlt698Client(settings(items=ITEMS, security="refuse-unverified", esam=esam,
                                       meter="m1"))  # fmt: skip
        actions = run(client, meter(require_security=True))
        self.assertIsInstance(actions[-1], Finished)
        ((who, rn, apdu, mac),) = esam.asked
        self.assertEqual((who, rn, mac), ("m1", bytes(16), SIM_MAC))
        self.assertIsInstance(decode_apdu(apdu), GetResponse)
        self.assertEqual((client.macs_verified, client.unverified), (1, 0))

    def test_a_wrong_mac_fails_the_read_in_either_mode(self) -> None:
        for mode in ("plaintext-rn", "refuse-unverified"):
            client = Dlt698Client(settings(items=ITEMS, security=mode,
                                           esam=FakeEsam(b"\x00" * 4)))  # fmt: skip
            failed = run(client, meter(require_security=True))[-1]
            assert isinstance(failed, Failed)
            self.assertIn("MAC does not verify", str(failed.error))
            self.assertEqual(client.records, [])

    def test_an_answer_without_a_mac_is_unverified(self) -> None:
        client = Dlt698Client(settings(items=ITEMS, security="plaintext-rn",
                                       esam=FakeEsam(SIM_MAC)))  # fmt: skip
        self.assertIsInstance(run(client, meter(require_security=True, mac=None))[-1],
                              Finished)
        self.assertEqual(client.unverified, 1)
        client = Dlt698Client(settings(items=ITEMS, security="refuse-unverified"))
        failed = run(client, meter(mac=None))[-1]
        assert isinstance(failed, Failed)
        self.assertIn("without a MAC", str(failed.error))

    def test_a_plain_answer_to_a_secured_request_is_unverified(self) -> None:
        client = Dlt698Client(settings(items=(OAD(0x2000, 2),), security="refuse-unverified",
                                       connect=False))  # fmt: skip
        client.start()
        sent = client._request_piid
        answer = GetResponse(GetKind.NORMAL, sent, (ResultNormal(
            OAD(0x2000, 2), data=Data(DataType.ARRAY, ())),))
        frame = Frame(control(from_server=True), ServerAddress("000000123456"), 0,
                      encode_apdu(answer))
        (failed,) = client.receive(frame.encode())
        assert isinstance(failed, Failed)
        self.assertIn("answered in plain", str(failed.error))

    def test_records_and_get_next_blocks_are_secured_too(self) -> None:
        sim = meter(require_security=True, rows_per_block=2)
        record = RecordRead(OAD(0x5004, 2), last=1)
        ranged = RecordRead(OAD(0x5002, 2), since=NOW_DT - timedelta(hours=2), until=NOW_DT)
        client = Dlt698Client(settings(items=(), records=(record, ranged),
                                       security="plaintext-rn"))  # fmt: skip
        self.assertIsInstance(run(client, sim)[-1], Finished)
        # CONNECT and RELEASE are not wrapped; each GET and GET-Next is, with its own RN.
        nexts = [e for e in sim.log if e.startswith("next")]
        self.assertTrue(nexts)
        self.assertEqual(len(sim.rns), 2 + len(nexts))
        self.assertTrue(client.records)

    def test_ciphered_answers_stay_refused(self) -> None:
        client = Dlt698Client(settings(items=ITEMS, security="plaintext-rn", connect=False))
        client.start()
        inner = encode_apdu(GetResponse(GetKind.NORMAL_LIST, client._request_piid, ()))
        frame = Frame(control(from_server=True), ServerAddress("000000123456"), 0,
                      encode_apdu(SecurityResponse(inner, ciphered=True, mac=b"1234")))
        (failed,) = client.receive(frame.encode())
        assert isinstance(failed, Failed)
        self.assertIn("ciphertext", str(failed.error))
        # and the simulated meter refuses a ciphered request (DAR 22)
        answer = meter(require_connect=False).respond(
            SecurityRequest(GET, Verification.RN_MAC, True, rn=b"1", mac=b"2"))
        self.assertEqual(answer, SecurityResponse(dar=22))

    def test_a_secured_refusal_of_an_item_is_skipped_with_its_dar(self) -> None:
        client = Dlt698Client(settings(items=ITEMS, security="plaintext-rn", connect=False))
        client.start()
        frame = Frame(control(from_server=True), ServerAddress("000000123456"), 0, DAR_ONLY)
        actions = client.receive(frame.encode())
        skipped = [a for a in actions if isinstance(a, Skipped)]
        self.assertEqual(skipped[0].why, "secured request refused: DAR 22 (ESAM verification "
                                         "failed)")


class SettingTests(unittest.TestCase):
    def _meter(self, **md: str) -> Meter:
        return Meter(id="m1", protocol="dlt698", route="tcp:host=h:port=1",
                     address="000000123456", metadata=md)

    def test_the_setting(self) -> None:
        self.assertEqual(settings_for(self._meter()).security, "plain")
        self.assertEqual(settings_for(self._meter(dlt698_security="Plaintext-RN")).security,
                         "plaintext-rn")
        with self.assertRaises(ConfigError) as e:
            settings_for(self._meter(dlt698_security="ciphertext"))
        self.assertEqual(e.exception.key, "dlt698_security")



class LoopbackTests(unittest.TestCase):
    """The setting through the protocol, over TCP, against the simulated meter that
    requires plaintext + MAC."""

    def endpoint(self, sim: Any) -> Any:
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint

        from fep.sim.dlt698 import Dlt698MeterFactory

        port = reactor.listenTCP(0, Dlt698MeterFactory([sim], reactor), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)

    def meter(self, sim: Any, **md: str) -> Meter:
        return Meter(id="m1", protocol="dlt698", route="tcp:host=127.0.0.1:port=1",
                     address=sim.address, metadata={"dlt698_items": "00100200", **md})

    async def test_a_secured_read_over_tcp_with_the_protocols_esam_service(self) -> None:
        from twisted.internet import reactor
        from twisted.logger import formatEvent, globalLogPublisher

        from fep.protocols.dlt698.session import Dlt698Protocol
        from fep.sim.dlt698 import SimulatedDlt698Meter

        sim = SimulatedDlt698Meter(require_security=True)
        endpoint = self.endpoint(sim)
        seen: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            seen.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        records = await Dlt698Protocol().read(reactor, endpoint, self.meter(
            sim, dlt698_security="plaintext-rn"), 5.0)
        self.assertEqual(len(records), 5)
        self.assertEqual(len(sim.rns), 1)
        # The read's log says the MAC was not verified, naming the service.
        self.assertIn("m1: 1 secured answers taken with their MAC not verified (no ESAM "
                      "service (MACs not verified))", seen)
        esam = FakeEsam(SIM_MAC)
        records = await Dlt698Protocol(esam=esam).read(reactor, endpoint, self.meter(
            sim, dlt698_security="refuse-unverified"), 5.0)
        self.assertEqual((len(records), len(esam.asked)), (5, 1))
        with self.assertRaises(ProtocolError) as caught:
            await Dlt698Protocol().read(reactor, endpoint, self.meter(
                sim, dlt698_security="refuse-unverified"), 5.0)
        self.assertIn("no ESAM service (MACs not verified)", str(caught.exception))
