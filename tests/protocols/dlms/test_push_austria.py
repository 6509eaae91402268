"""Austrian customer-interface pushes (issue 17): M-Bus long frames carrying a ciphered
Data-Notification (general-glo-ciphering, security suite 1, encryption only) with the one
customer key the grid operator gives, and a list that mixes a bare clock pair with
{OBIS, value, {scaler, unit}} structures. The published TINETZ example (Kaifa MA309,
tests/fixtures/dlms/tinetz_kaifa_ma309_*.hex, source named in each file) through
pushframing.py, receiver.py and push.py."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms.push import decode_push
from fep.protocols.dlms.pushframing import (
    MAX_PUSH_APDU,
    FramingProblem,
    PushedApdu,
    PushStream,
    encode_mbus,
)
from fep.protocols.dlms.receiver import PushCounterCheck, PushRefused, decide_push
from tests.protocols.dlms.fixtures import hex_fixture

TINETZ_MBUS = "tinetz_kaifa_ma309_mbus.hex"
TINETZ_PLAIN = "tinetz_kaifa_ma309_plain.hex"
TINETZ_KEY = "101112131415161718191a1b1c1d1e1f"
TINETZ_TITLE = "4b464d1010000023"


def tinetz_meter(**more: str) -> Meter:
    return Meter("ma309", "dlms", "tcp:host=x:port=1", metadata={
        "dlms_server_system_title": TINETZ_TITLE, "dlms_ek": TINETZ_KEY,
        "dlms_push_security": "encryption-only", **more})


def apdus(items: list[object]) -> list[PushedApdu]:
    return [i for i in items if isinstance(i, PushedApdu)]


def problems(items: list[object]) -> list[FramingProblem]:
    return [i for i in items if isinstance(i, FramingProblem)]


def published_ciphered_apdu() -> bytes:
    (pushed,) = apdus(PushStream().receive(hex_fixture(TINETZ_MBUS)))
    return pushed.apdu


class MbusFramingTests(unittest.TestCase):
    def test_the_published_mbus_segments_give_the_ciphered_apdu(self) -> None:
        stream = PushStream()
        items = stream.receive(hex_fixture(TINETZ_MBUS))
        self.assertEqual(stream.framing, "mbus")
        self.assertEqual(problems(items), [])
        (pushed,) = apdus(items)
        self.assertEqual(pushed.address, "mbus:255")
        self.assertEqual(pushed.framing, "mbus")
        self.assertEqual(pushed.apdu[:10].hex(), "db08" + TINETZ_TITLE)
        self.assertEqual(len(pushed.apdu), 278)  # 245 + 33 bytes of the two segments

    def test_byte_by_byte_after_a_wake_up_run(self) -> None:
        stream = PushStream()
        items: list[object] = []
        for byte in b"\x00\x00" + hex_fixture(TINETZ_MBUS):
            items += stream.receive(bytes((byte,)))
        self.assertEqual(stream.framing, "mbus")
        self.assertEqual(stream.skipped, 2)
        self.assertEqual([p.apdu for p in apdus(items)], [published_ciphered_apdu()])

    def test_encode_mbus_segments_as_the_meter_does(self) -> None:
        self.assertEqual(encode_mbus(0xFF, published_ciphered_apdu()),
                         hex_fixture(TINETZ_MBUS))

    def test_a_truncated_segment_sequence_is_a_problem_and_the_next_push_is_kept(
        self,
    ) -> None:
        data = hex_fixture(TINETZ_MBUS)
        first = data[: 0xFA + 6]
        items = PushStream().receive(first + data)
        (problem,) = problems(items)
        self.assertIn("M-Bus segments of an APDU broken off after 245 bytes: a new APDU "
                      "began", problem.detail)
        self.assertEqual(problem.address, "mbus:255")
        self.assertEqual([p.apdu for p in apdus(items)], [published_ciphered_apdu()])

    def test_a_bad_checksum_breaks_the_apdu_off_and_the_stream_recovers(self) -> None:
        data = bytearray(hex_fixture(TINETZ_MBUS))
        data[0xFA + 6 + 20] ^= 0x01  # a byte of the second frame
        items = PushStream().receive(bytes(data) + hex_fixture(TINETZ_MBUS))
        details = [p.detail for p in problems(items)]
        self.assertTrue(any("bad M-Bus frame (checksum)" in d for d in details), details)
        self.assertTrue(any("bytes outside M-Bus frames dropped" in d for d in details),
                        details)
        self.assertEqual([p.apdu for p in apdus(items)], [published_ciphered_apdu()])

    def test_a_segment_out_of_order_or_from_another_sender_breaks_the_apdu_off(
        self,
    ) -> None:
        apdu = published_ciphered_apdu()
        three = encode_mbus(0xFF, apdu, 100)  # segments 0, 1, 2 (the last)
        first = three[: 100 + 11]
        rest = three[100 + 11 :]
        second = rest[: 100 + 11]
        last = rest[100 + 11 :]
        # Segment 2 after segment 0; then segment 0 from another address.
        items = PushStream().receive(first + last + first + encode_mbus(1, apdu, 100)[:111]
                                     + three)
        details = [p.detail for p in problems(items)]
        self.assertIn("M-Bus segments of an APDU broken off after 100 bytes: segment 2 came "
                      "after 0", details)
        self.assertIn("M-Bus segments of an APDU broken off after 100 bytes: a new APDU began",
                      details)
        self.assertEqual([p.apdu for p in apdus(items)], [apdu])
        self.assertEqual(len(second), 111)

    def test_segments_left_open_at_the_end_are_a_problem(self) -> None:
        stream = PushStream()
        self.assertEqual(apdus(stream.receive(hex_fixture(TINETZ_MBUS)[: 0xFA + 6])), [])
        (problem,) = problems(stream.close())
        self.assertIn("broken off after 245 bytes: the connection ended", problem.detail)

    def test_reassembly_is_bounded(self) -> None:
        # Segments 0, 1, ... 15, 0, 1 ... of 250 bytes, none the last: given up once the
        # APDU grows over MAX_PUSH_APDU, and the bytes kept stay bounded.
        stream = PushStream()
        items: list[object] = []
        for n in range(300):
            body = bytes((0x53, 1, n & 0x0F, 1, 0x67)) + bytes((0x0F,)) * 250
            items += stream.receive(bytes((0x68, 255, 255, 0x68)) + body
                                    + bytes((sum(body) & 0xFF, 0x16)))
            self.assertLessEqual(stream.buffered, MAX_PUSH_APDU + 300)
        self.assertEqual(apdus(items), [])
        self.assertIn(f"over {MAX_PUSH_APDU} bytes", problems(items)[0].detail)


class AustrianListTests(unittest.TestCase):
    def test_the_published_apdu_deciphers_with_the_customer_key_alone(self) -> None:
        decision = decide_push(
            published_ciphered_apdu(), resolve=lambda title, wport: tinetz_meter(),
            last_received=lambda title, key: None, source="mbus:255")
        assert isinstance(decision, PushCounterCheck), decision
        self.assertEqual(decision.counter, 0x00295B9A)
        self.assertEqual(decision.system_title.hex(), TINETZ_TITLE)
        values = {str(r.obis): (r.value, r.unit_text, r.meter_time) for r in decision.records}
        when = datetime(2021, 7, 19, 13, 46, 35, tzinfo=UTC)
        self.assertEqual(values["1-0:1.8.0*255"], (Decimal(9108), "Wh", when))
        self.assertEqual(values["1-0:32.7.0*255"], (Decimal("230.8"), "V", when))
        self.assertEqual(values["1-0:31.7.0*255"][:2], (Decimal("0.00"), "A"))
        self.assertEqual(values["1-0:3.8.0*255"][:2], (Decimal(96), "varh"))
        self.assertEqual(values["0-0:96.1.0*255"][0], "1KFM0100000035")

    def test_the_plain_list_mixes_a_clock_pair_and_structures(self) -> None:
        message = A.decode_apdu(hex_fixture(TINETZ_PLAIN))
        assert isinstance(message, A.DataNotification)
        content = decode_push("ma309", message)
        self.assertEqual(content.logical_device_name, b"KFM1100100000035")
        self.assertEqual(content.meter_time, datetime(2021, 7, 19, 13, 46, 35, tzinfo=UTC))
        self.assertEqual(len(content.readings), 9)

    def test_without_the_setting_an_encryption_only_push_is_refused(self) -> None:
        for meter in (
            tinetz_meter(dlms_push_security=""),  # EK alone, no setting: no keys
            tinetz_meter(dlms_push_security="", dlms_ak=TINETZ_KEY),  # suite 0 keys
        ):
            decision = decide_push(
                published_ciphered_apdu(), resolve=lambda title, wport, m=meter: m,
                last_received=lambda title, key: None)
            assert isinstance(decision, PushRefused)
            self.assertEqual(decision.why, "cipher")

    def test_a_wrong_key_gives_no_readings(self) -> None:
        meter = tinetz_meter(dlms_ek="00" * 16)
        decision = decide_push(
            published_ciphered_apdu(), resolve=lambda title, wport: meter,
            last_received=lambda title, key: None)
        assert isinstance(decision, PushRefused)
        self.assertIn(decision.why, ("frame", "cipher"))

    def test_a_replayed_counter_is_refused(self) -> None:
        decision = decide_push(
            published_ciphered_apdu(), resolve=lambda title, wport: tinetz_meter(),
            last_received=lambda title, key: 0x00295B9A)
        assert isinstance(decision, PushRefused)
        self.assertEqual(decision.why, "replay")

    def test_an_encryption_only_meter_never_has_a_plain_push_taken(self) -> None:
        decision = decide_push(
            hex_fixture(TINETZ_PLAIN), resolve=lambda title, wport: tinetz_meter(),
            last_received=lambda title, key: None)
        assert isinstance(decision, PushRefused)
        self.assertEqual(decision.why, "plain")

    def test_a_mistyped_setting_is_refused_naming_it(self) -> None:
        meter = tinetz_meter(dlms_push_security="encryption_only")
        decision = decide_push(
            published_ciphered_apdu(), resolve=lambda title, wport: meter,
            last_received=lambda title, key: None)
        assert isinstance(decision, PushRefused)
        self.assertIn("dlms_push_security = encryption_only", decision.detail)
        # Still keyed: its unciphered pushes are not taken either.
        plain = decide_push(
            hex_fixture(TINETZ_PLAIN), resolve=lambda title, wport: meter,
            last_received=lambda title, key: None)
        assert isinstance(plain, PushRefused)
        self.assertEqual(plain.why, "plain")


POLISH_MBUS = "kaifa_ma309_pl_mbus.hex"
POLISH_KEY = "39436f513777354c4d466f4c5333674a"
VORARLBERG_PLAIN = "vorarlberg_kaifa_ma309_plain.hex"


class MoreMa309CapturesTests(unittest.TestCase):
    """Two more published Kaifa MA309 customer-interface captures: a Polish one, M-Bus framed
    and ciphered like the Austrian, with its key; a Vorarlberger Energienetze list as the
    reader logged it deciphered."""

    def test_the_polish_mbus_capture_deciphers_with_its_key(self) -> None:
        stream = PushStream()
        (pushed,) = apdus(stream.receive(hex_fixture(POLISH_MBUS)))
        self.assertEqual((stream.framing, pushed.address), ("mbus", "mbus:255"))
        meter = Meter("pl", "dlms", "tcp:host=x:port=1", metadata={
            "dlms_server_system_title": "4b464d1020029802", "dlms_ek": POLISH_KEY,
            "dlms_push_security": "encryption-only"})
        decision = decide_push(pushed.apdu, resolve=lambda title, wport: meter,
                               last_received=lambda title, key: None)
        assert isinstance(decision, PushCounterCheck), decision
        self.assertEqual(decision.counter, 0x00000A28)
        values = {str(r.obis): (r.value, r.unit_text) for r in decision.records}
        self.assertEqual(len(values), 13)
        self.assertEqual(values["0-0:96.1.0*255"][0], "1KFM0200169986")
        self.assertEqual(values["1-0:32.7.0*255"], (Decimal("227.1"), "V"))
        self.assertEqual(values["1-0:31.7.0*255"], (Decimal("12.41"), "A"))
        self.assertEqual(values["1-0:1.7.0*255"], (Decimal(2867), "W"))
        self.assertEqual(values["1-0:1.8.0*255"], (Decimal(278041), "Wh"))
        self.assertEqual(values["1-0:4.8.0*255"], (Decimal(38584), "varh"))
        times = {r.meter_time for r in decision.records}
        self.assertEqual(times, {datetime(2021, 9, 27, 18, 56, tzinfo=UTC)})

    def test_the_vorarlberg_list(self) -> None:
        message = A.decode_apdu(hex_fixture(VORARLBERG_PLAIN))
        assert isinstance(message, A.DataNotification)
        content = decode_push("vkw", message)
        values = {str(r.obis): (r.value, r.unit_text) for r in content.readings}
        self.assertEqual(content.meter_time, datetime(2023, 4, 25, 8, 59, 30, tzinfo=UTC))
        self.assertEqual(content.logical_device_name, b"KFM1200200182517")
        self.assertEqual(values["1-0:52.7.0*255"], (Decimal("232.5"), "V"))
        self.assertEqual(values["1-0:71.7.0*255"], (Decimal("0.81"), "A"))
        self.assertEqual(values["1-0:2.8.0*255"], (Decimal(1103174), "Wh"))
        self.assertEqual(len(values), 13)
