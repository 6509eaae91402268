"""The ``gw3761`` identification rule (sans-IO): a Q/GDW 1376.1 concentrator's login frame
identifies the connection by the terminal's address A1:A2 and is kept for the session's
handler; other frames, damaged logins and junk do not identify; the scan stays bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.channels.identify import (
    GW3761_KEY,
    Cursor,
    Gw3761Rule,
    IdentificationError,
    Identified,
    Identifier,
    make_rules,
)
from fep.protocols.gw3761.frames import Address
from fep.sim.concentrator import SimulatedConcentrator
from tests.protocols.gw3761.published import FRAMES

ALL = ("ascii", "binary", "dlms", "iec62056-21", "gw3761")


def identify(data: bytes, *rules: str, chunk: int | None = None) -> Identified | None:
    identifier = Identifier(make_rules(rules or ALL))
    size = chunk or max(len(data), 1)
    for i in range(0, len(data), size):
        result = identifier.receive(data[i : i + size])
        if result is not None:
            return result
    return None


class Gw3761RuleTests(unittest.TestCase):
    def test_a_published_login_gives_the_address_and_is_kept(self) -> None:
        login = FRAMES["iteye_login"]
        result = identify(login)
        assert result is not None
        self.assertEqual(result.identity.rule, "gw3761")
        self.assertEqual(result.identity.protocol, "gw3761")
        self.assertEqual(result.identity.get(GW3761_KEY), "4403:0004")
        self.assertEqual(result.identity.name, "gw3761=4403:0004")
        # Kept: the handler sees the login (and confirms it).
        self.assertEqual(result.data, login)
        self.assertEqual(result.garbage, 0)
        # Not a registry name of its own: the session holds its meter's route names.
        self.assertEqual(result.identity.unique(), [])
        self.assertIsNone(result.identity.route())

    def test_the_daemons_default_rules_take_a_concentrators_login(self) -> None:
        # A concentrator dials in to a daemon whose [gprs] identify is left at its default.
        from fep.config import parse_config

        rules = parse_config("[fep]\n[store]\n").gprs.identify
        self.assertIn("gw3761", rules)
        self.assertIn("dlt698", rules)
        result = identify(FRAMES["iteye_login"], *rules)
        assert result is not None
        self.assertEqual(result.identity.rule, "gw3761")

    def test_the_address_is_the_meter_lists_text_form(self) -> None:
        result = identify(FRAMES["node_login"])
        assert result is not None
        self.assertEqual(result.identity.get(GW3761_KEY), "0200:1234")
        self.assertEqual(Address.parse(result.identity.get(GW3761_KEY) or "").terminal, 0x1234)

    def test_garbage_before_and_bytes_after(self) -> None:
        sim = SimulatedConcentrator(Address("3401", 1))
        login, beat = sim.login(), sim.heartbeat()
        # (Garbage ending in a line break: an open line before the login would be a
        # registration line candidate of the ascii rule, waited for.)
        result = identify(b"\x68\x00AT+CIPSEND\r\n" + login + beat, chunk=3)
        assert result is not None
        self.assertEqual(result.identity.get(GW3761_KEY), "3401:0001")
        self.assertEqual(result.garbage, 14)
        # Identified once the login is whole: what follows it in that piece comes along.
        self.assertTrue(result.data.startswith(login))

    def test_one_byte_pieces(self) -> None:
        login = FRAMES["iteye_login"]
        result = identify(login, "gw3761", chunk=1)
        assert result is not None
        self.assertEqual(result.identity.get(GW3761_KEY), "4403:0004")

    def test_a_heartbeat_or_damaged_login_does_not_identify(self) -> None:
        sim = SimulatedConcentrator(Address("3401", 1))
        self.assertIsNone(identify(sim.heartbeat(), "gw3761"))
        self.assertIsNone(identify(sim.logout(), "gw3761"))
        login = bytearray(FRAMES["iteye_login"])
        login[-2] ^= 0xFF  # checksum
        self.assertIsNone(identify(bytes(login), "gw3761"))
        # The master's confirmation (downlink) is no login either.
        self.assertIsNone(identify(FRAMES["node_login_confirm"], "gw3761"))

    def test_a_login_after_a_damaged_one(self) -> None:
        good = FRAMES["iteye_login"]
        bad = bytearray(good)
        bad[-1] = 0x00
        result = identify(bytes(bad) + good, "gw3761")
        assert result is not None
        self.assertEqual(result.garbage, len(bad))

    def test_a_long_length_field_is_not_waited_for(self) -> None:
        # 68 L L 68 with 4000 bytes of user data announced: no login is that long.
        header = b"\x68" + (4000 << 2 | 2).to_bytes(2, "little") * 2 + b"\x68"
        cursor = Cursor()
        self.assertIsNone(Gw3761Rule().scan(header + b"\x00" * 10, cursor))

    def test_pieces_cost_work_linear_in_the_bytes(self) -> None:
        # A header announcing 255 bytes, then one byte at a time: the waiting candidate is
        # not rescanned for each piece.
        header = b"\x68" + (255 << 2 | 2).to_bytes(2, "little") * 2 + b"\x68"
        identifier = Identifier([Gw3761Rule()], max_garbage=4096)
        identifier.receive(header)
        for _ in range(200):
            identifier.receive(b"\x00")
        self.assertLess(identifier.examined, 2000)

    def test_junk_fails_typed_within_the_garbage_cap(self) -> None:
        identifier = Identifier(make_rules(["gw3761"]), max_garbage=64)
        with self.assertRaises(IdentificationError):
            for _ in range(20):
                identifier.receive(b"\x68\x32\x00\x33\x00\x68" + b"\x16" * 10)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
    def test_arbitrary_bytes_then_a_login_identify_or_fail_typed(
        self, data: bytes, chunk: int
    ) -> None:
        identifier = Identifier(make_rules(ALL), max_garbage=4096)
        stream = data + FRAMES["iteye_login"]
        try:
            for i in range(0, len(stream), chunk):
                result = identifier.receive(stream[i : i + chunk])
                if result is not None:
                    self.assertLessEqual(result.garbage, len(stream))
                    break
        except IdentificationError:
            pass

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.sampled_from([b"\x68", b"\x32\x00", b"\x16", b"\xc9", b"junk"]),
                    max_size=30),
           st.integers(min_value=1, max_value=9))
    def test_going_on_where_the_last_scan_stopped_changes_no_outcome(
        self, parts: list[bytes], size: int
    ) -> None:
        data = b"".join(parts) + FRAMES["iteye_login"]

        def outcome(rescan: bool) -> object:
            identifier = Identifier([Gw3761Rule()], max_garbage=4096, max_scan=1 << 40)
            for i in range(0, len(data), size):
                if rescan:
                    identifier._cursors = [Cursor()]
                result = identifier.receive(data[i : i + size])
                if result is not None:
                    return result
            return None

        self.assertEqual(outcome(rescan=False), outcome(rescan=True))
