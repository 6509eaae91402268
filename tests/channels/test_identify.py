"""Identification of inbound modem connections by their first bytes (sans-IO): each rule with
published or documented bytes, garbage before the registration, split arrival, arbitrary
bytes."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.channels.identify import (
    MAX_IDENTIFYING_READOUT,
    PIECE_COST,
    AsciiRule,
    Cursor,
    DlmsRule,
    IdentificationError,
    Identifier,
    Identity,
    IecRule,
    bcd_digits,
    crc16_x25,
    decode_binary_body,
    encode_binary_registration,
    make_rules,
)
from fep.protocols.dlms import wrapper
from fep.protocols.dlms.security import SecurityKeys
from fep.protocols.dlms.server import DlmsServer, ServerSettings
from fep.sim.dlms_meter import SimulatedDlmsMeter

IEC_FIXTURES = Path(__file__).parent.parent / "fixtures" / "iec62056_21"
DLMS_FIXTURES = Path(__file__).parent.parent / "fixtures" / "dlms"

# DLMS UA Green Book (DLMS UA 1000-2) security suite 0 example keys and system title.
GREEN_BOOK_KEYS = SecurityKeys(
    bytes.fromhex("000102030405060708090A0B0C0D0E0F"),
    bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"),
)
GREEN_BOOK_TITLE = bytes.fromhex("4D4D4D0000BC614E")
IMEI = "356938035643809"
ICCID = "89860318760240069827"


def iec_fixture(name: str) -> bytes:
    """A published IEC 62056-21 readout as sent on the wire (first line names the source)."""
    raw = (IEC_FIXTURES / name).read_bytes()
    header, _, body = raw.partition(b"\n")
    assert header.startswith(b"# ")
    return body


def kamstrup_apdu() -> bytes:
    """The Data-Notification inside the published Kamstrup HAN list 1 HDLC frame (source in
    the fixture's comment): after the 8-byte HDLC header and the LLC bytes E6 E7 00, up to
    the FCS and closing flag."""
    text = (DLMS_FIXTURES / "kamstrup_han_list1.hex").read_text()
    raw = bytes.fromhex(" ".join(x for x in text.splitlines() if not x.lstrip().startswith("#")))
    start = raw.index(b"\xe6\xe7\x00") + 3
    return raw[start:-3]


def ciphered_push(title: bytes = GREEN_BOOK_TITLE, wport: int = 1) -> bytes:
    meter = SimulatedDlmsMeter(serial="KFM1234", system_title=title)
    server = DlmsServer(meter, ServerSettings(system_title=title, keys=GREEN_BOOK_KEYS))
    return wrapper.encode_wrapper(
        wrapper.WrapperFrame(wport, 102, server.push(meter.push_body()))
    )


def plain_push(serial: str = "KFM1234") -> bytes:
    meter = SimulatedDlmsMeter(serial=serial)
    server = DlmsServer(meter, ServerSettings())
    return wrapper.encode_wrapper(wrapper.WrapperFrame(1, 102, server.push(meter.push_body())))


def identify(data: bytes, *rules: str, chunks: int = 1) -> object:
    identifier = Identifier(make_rules(rules or ("ascii", "binary", "dlms", "iec62056-21")))
    size = max(1, -(-len(data) // chunks))
    result = None
    for i in range(0, len(data), size):
        result = identifier.receive(data[i : i + size])
        if result is not None:
            return result
    return result


class ChecksumTests(unittest.TestCase):
    def test_crc16_x25_check_value(self) -> None:
        # The CRC catalogue (reveng, CRC-16/IBM-SDLC alias X-25): check = 0x906E.
        self.assertEqual(crc16_x25(b"123456789"), 0x906E)

    def test_bcd_stops_at_the_filler_nibble(self) -> None:
        self.assertEqual(bcd_digits(bytes.fromhex("356938035643809F")), IMEI)
        with self.assertRaises(ValueError):
            bcd_digits(b"\x3a")


class AsciiRuleTests(unittest.TestCase):
    def test_id_line_gives_the_imei_and_is_consumed(self) -> None:
        result = identify(f"ID:{IMEI}\r\n".encode() + b"\x00\x01rest", "ascii")
        self.assertEqual(result.identity, Identity("ascii", (("imei", IMEI),)))
        self.assertEqual((result.garbage, result.data), (0, b"\x00\x01rest"))

    def test_optional_iccid_and_serial(self) -> None:
        line = f"ID:{IMEI};ICCID={ICCID};SN=KFM1234\n".encode()
        result = identify(line, "ascii")
        self.assertEqual(
            result.identity.as_dict(), {"imei": IMEI, "iccid": ICCID, "serial": "KFM1234"}
        )
        self.assertEqual(result.identity.name, f"imei={IMEI}")
        self.assertEqual(result.identity.route(), f"gprs:imei={IMEI}")

    def test_configured_pattern(self) -> None:
        # USR-IOT DTUs send a configured register packet, e.g. "LOGIN:1001" (their manual).
        rule = AsciiRule(r"LOGIN:(?P<serial>\d+)")
        identifier = Identifier([rule])
        result = identifier.receive(b"LOGIN:1001\r\n")
        assert result is not None
        self.assertEqual(result.identity.as_dict(), {"serial": "1001"})

    def test_pattern_must_name_its_groups(self) -> None:
        for bad in (r"ID:\d+", r"ID:(?P<phone>\d+)", r"ID:(?P<imei>\d+"):
            with self.assertRaises(ValueError):
                AsciiRule(bad)

    def test_a_line_split_over_chunks_waits_for_its_end(self) -> None:
        identifier = Identifier([AsciiRule()])
        self.assertIsNone(identifier.receive(f"ID:{IMEI[:7]}".encode()))
        result = identifier.receive(f"{IMEI[7:]}\r\n".encode())
        assert result is not None
        self.assertEqual(result.identity.get("imei"), IMEI)


class BinaryRuleTests(unittest.TestCase):
    def test_documented_example(self) -> None:
        # The example of docs/channels/gprs.md, byte for byte.
        packet = bytes.fromhex(
            "A5 01 001F 0108 356938035643809F 020A 89860318760240069827 0407 4B464D31323334"
            .replace(" ", "")
        )
        packet += crc16_x25(packet[1:]).to_bytes(2, "little") + b"\x5a"
        self.assertEqual(
            packet, encode_binary_registration(imei=IMEI, iccid=ICCID, serial="KFM1234")
        )
        result = identify(packet + b"after", "binary")
        self.assertEqual(
            result.identity.as_dict(), {"imei": IMEI, "iccid": ICCID, "serial": "KFM1234"}
        )
        self.assertEqual(result.data, b"after")

    def test_a_damaged_packet_is_not_a_registration(self) -> None:
        packet = bytearray(encode_binary_registration(imei=IMEI))
        packet[6] ^= 0x10
        self.assertIsNone(identify(bytes(packet), "binary"))

    def test_unknown_fields_are_skipped(self) -> None:
        self.assertEqual(
            decode_binary_body(b"\x7f\x02ab\x04\x03S01"), {"serial": "S01"}
        )
        for bad in (b"", b"\x01", b"\x01\x08\x35", b"\x7f\x00"):
            with self.assertRaises(ValueError):
                decode_binary_body(bad)


class DlmsRuleTests(unittest.TestCase):
    def test_general_glo_push_gives_the_system_title_and_is_kept(self) -> None:
        frame = ciphered_push(wport=17)
        result = identify(frame, "dlms")
        self.assertEqual(
            result.identity,
            Identity("dlms", (("system_title", GREEN_BOOK_TITLE.hex()), ("wport", "17")), "dlms"),
        )
        self.assertEqual(result.data, frame)

    def test_plain_push_gives_the_logical_device_name(self) -> None:
        result = identify(plain_push("KFM1234"), "dlms")
        self.assertEqual(result.identity.get("ldn"), "FEPKFM1234")

    def test_published_push_without_a_device_name_does_not_identify(self) -> None:
        # Kamstrup's list 1 names no logical device: nothing to identify the meter by.
        frame = wrapper.encode_wrapper(wrapper.WrapperFrame(1, 102, kamstrup_apdu()))
        self.assertIsNone(identify(frame, "dlms"))
        self.assertIsNone(DlmsRule.identify_apdu(kamstrup_apdu()))

    def test_frame_split_anywhere(self) -> None:
        frame = ciphered_push()
        for chunks in (2, 5, len(frame)):
            self.assertEqual(identify(frame, "dlms", chunks=chunks).identity.rule, "dlms")


class IecRuleTests(unittest.TestCase):
    def test_published_readout_with_serial(self) -> None:
        data = iec_fixture("landis_gyr_e350_m26.txt")
        result = identify(data, "iec62056-21")
        # The E350's identification line and its 0.0 (meter identification) value, as
        # published; fep takes 0.0 before C.1.0 for the serial number.
        self.assertEqual(
            result.identity.as_dict(), {"serial": "120858", "ident": "LGZ4ZMF100AC.M26"}
        )
        self.assertEqual(result.data, data)

    def test_published_readout_without_serial(self) -> None:
        result = identify(iec_fixture("iskra_mt174.txt"), "iec62056-21")
        self.assertEqual(result.identity.as_dict(), {"ident": "ISk5MT174-0002"})
        self.assertEqual(result.identity.unique(), [])

    def test_waits_for_the_readout_block(self) -> None:
        data = iec_fixture("landis_gyr_e350_m26.txt")
        identifier = Identifier([IecRule()])
        self.assertIsNone(identifier.receive(data[:40]))
        self.assertIsNotNone(identifier.receive(data[40:]))


class IdentifierTests(unittest.TestCase):
    def test_garbage_before_the_registration_is_counted_and_dropped(self) -> None:
        garbage = b"AT+CSQ\r\n+CSQ: 17,99\r\nOK\r\n\xff\x00\x13"
        result = identify(garbage + f"ID:{IMEI}\r\n".encode() + b"data")
        self.assertEqual((result.garbage, result.data), (len(garbage), b"data"))

    def test_the_earliest_message_wins(self) -> None:
        push = ciphered_push()
        result = identify(push + f"ID:{IMEI}\r\n".encode())
        self.assertEqual(result.identity.rule, "dlms")

    def test_too_much_garbage_is_an_identification_error(self) -> None:
        identifier = Identifier(make_rules(["ascii"]), max_garbage=100)
        with self.assertRaises(IdentificationError) as caught:
            for _ in range(20):
                identifier.receive(b"no registration here\r\n")
        self.assertEqual(caught.exception.field, "registration")

    def test_small_pieces_behind_a_waiting_candidate_are_refused_in_bounded_work(self) -> None:
        # Issue 14: an IEC identification waiting for its readout block kept the buffer, and
        # every piece rescanned it, CRC-checking a binary candidate every 6 bytes in Python:
        # 18 kB in 512-byte pieces cost 9 s of CPU before login.
        import time

        identifier = Identifier(make_rules(["ascii", "binary", "iec"]))
        data = b"/ABC5METER\r\n\x02" + bytes.fromhex("A5 01 01 00 5A 00") * 11_000
        started = time.process_time()
        with self.assertRaises(IdentificationError) as caught:
            for at in range(0, len(data), 512):
                identifier.receive(data[at : at + 512])
        self.assertIn("after scanning", caught.exception.message)
        self.assertLess(time.process_time() - started, 2.0)

    def test_a_readout_in_ordinary_pieces_is_within_the_scan_budget(self) -> None:
        identifier = Identifier(make_rules(["iec"]))
        block = b"\x02" + b"1.8.0(000123.456*kWh)\r\n" * 1300 + b"!\r\n\x03"
        data = b"/ABC5METER\r\n" + block + b"\x00"
        result = None
        for at in range(0, len(data), 1400):
            result = identifier.receive(data[at : at + 1400]) or result
        self.assertIsNotNone(result)

    def test_bytes_in_one_byte_pieces_cost_work_linear_in_their_number(self) -> None:
        # Issue 14: every piece rescanned the whole buffer with every rule, and the IEC rule
        # searched for a CRLF from every '/': a connection sending 64 kB one byte at a time
        # cost work quadratic in them before login. Each rule now goes on where it stopped:
        # the bytes the rules examine in all stay a small multiple of the bytes received
        # (four rules, each looking at a new byte and the one before it, and at a waiting
        # candidate's few header bytes).
        size = 1 << 16
        cases = {
            "slashes": b"/" * size,
            "lines that are too long": (b"/" + b"x" * 90) * (size // 91),
            "a readout block that does not end": b"/ABC5METER\r\n\x02"
            + b"1.8.0(000123.456*kWh)\r\n" * (size // 23),
            "a push that does not come": b"\x00\x01\x00\x01\x00\x66\x0f\xff\x0f"
            + b"\n" * size,
        }
        for name, data in cases.items():
            identifier = Identifier(
                make_rules(["ascii", "binary", "dlms", "iec62056-21"]),
                max_garbage=1 << 20, max_scan=1 << 40,
            )
            for at in range(len(data)):
                self.assertIsNone(identifier.receive(data[at : at + 1]), name)
            self.assertLessEqual(identifier.examined, 12 * len(data), name)
            # Garbage still goes: only a candidate that can still complete is kept.
            if name != "a readout block that does not end":
                self.assertLess(len(identifier._buffer), MAX_IDENTIFYING_READOUT // 8, name)

    def test_a_checksummed_candidate_every_few_bytes_costs_a_bounded_multiple(self) -> None:
        # A binary candidate whose end byte fits every 6 bytes: each is CRC-checked (at most
        # MAX_BINARY_BODY bytes), once, not once per piece.
        data = bytes.fromhex("A5 01 01 00 5A 00") * 4000
        identifier = Identifier(make_rules(["binary"]), max_garbage=1 << 20, max_scan=1 << 40)
        for at in range(len(data)):
            identifier.receive(data[at : at + 1])
        self.assertLessEqual(identifier.examined, (2 + 263 // 6) * len(data))

    def test_one_byte_pieces_behind_a_waiting_candidate_are_refused_after_a_few_thousand(
        self,
    ) -> None:
        # What remains is a cost per piece (a rule call each, whatever the piece's size):
        # the scan budget charges PIECE_COST bytes for each, so a peer sending one byte per
        # segment behind an IEC identification waiting for its block is refused after
        # max_scan / PIECE_COST pieces at most, not after the 68 kB the buffer may hold.
        identifier = Identifier(make_rules(["ascii", "binary", "dlms", "iec62056-21"]))
        data = b"/ABC5METER\r\n\x02" + b"1.8.0(000123.456*kWh)\r\n" * 3000
        with self.assertRaises(IdentificationError) as caught:
            for at in range(len(data)):
                identifier.receive(data[at : at + 1])
        self.assertIn("after scanning", caught.exception.message)
        self.assertLess(identifier.received, identifier.max_scan // PIECE_COST)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.sampled_from([
                b"/", b"\r\n", b"\r", b"\n", b"\x02", b"\x03", b"\xa5\x01", b"\x00\x01",
                b"\x00\x01\x00\x01\x00\x66\x00\x10\xdb", b"/ABC5METER\r\n\x02",
                b"1.8.0(1)\r\n", b"!\r\n\x03", f"ID:{IMEI}".encode(),
                encode_binary_registration(imei=IMEI), b"/" * 130, b"z" * 300,
            ]) | st.binary(max_size=8),
            max_size=40,
        ),
        st.lists(st.integers(min_value=1, max_value=80), min_size=1, max_size=4),
        st.sampled_from([16, 256, 4096]),
    )
    def test_going_on_where_the_last_scan_stopped_changes_no_outcome(
        self, parts: list[bytes], sizes: list[int], max_garbage: int
    ) -> None:
        # The same bytes in the same pieces to an identifier whose rules rescan everything
        # on every piece (fresh cursors, as before issue 14) and to one whose rules go on.
        data = b"".join(parts)

        def outcome(rescan: bool) -> list[object]:
            rules = make_rules(["ascii", "binary", "dlms", "iec62056-21"])
            identifier = Identifier(rules, max_garbage=max_garbage, max_scan=1 << 40)
            seen: list[object] = []
            at = n = 0
            while at < len(data):
                piece = data[at : at + sizes[n % len(sizes)]]
                at, n = at + len(piece), n + 1
                if rescan:
                    identifier._cursors = [Cursor() for _ in rules]
                try:
                    result = identifier.receive(piece)
                except IdentificationError as e:
                    return [*seen, e.message]
                seen.append(identifier.received)
                if result is not None:
                    return [*seen, result]
            return seen

        self.assertEqual(outcome(rescan=False), outcome(rescan=True))

    def test_unknown_rule_name(self) -> None:
        with self.assertRaises(ValueError):
            make_rules(["ascii", "smoke-signals"])

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
    def test_arbitrary_bytes_identify_or_need_more_or_fail_typed(
        self, data: bytes, chunk: int
    ) -> None:
        identifier = Identifier(make_rules(["ascii", "binary", "dlms", "iec62056-21"]),
                                max_garbage=256)
        try:
            for i in range(0, len(data), chunk):
                result = identifier.receive(data[i : i + chunk])
                if result is not None:
                    self.assertLessEqual(result.garbage, len(data))
                    break
        except IdentificationError:
            pass

    @settings(max_examples=100, deadline=None)
    @given(st.binary(max_size=200).filter(lambda b: b"\n" not in b and b"\r" not in b))
    def test_garbage_then_registration_always_identifies(self, garbage: bytes) -> None:
        # Garbage that ends with a line break cannot hide the registration line after it.
        data = garbage + b"\r\n" + encode_binary_registration(imei=IMEI) + f"ID:{IMEI}\r\n".encode()
        result = identify(data, "ascii", "binary")
        self.assertEqual(result.identity.get("imei"), IMEI)
