"""The ``dlt698`` identification rule (sans-IO): a DL/T 698.45 terminal's LINK login or
heartbeat names the connection by the terminal's server address; the frame is kept (the
push handler answers it). Split arrival, garbage, damaged frames, bounded work."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.channels.identify import (
    Cursor,
    Dlt698Rule,
    IdentificationError,
    Identified,
    Identifier,
    make_rules,
)
from fep.protocols.dlt698.apdu import LinkRequest, LinkType, encode_apdu
from fep.protocols.dlt698.frames import Frame, Function, ServerAddress, control
from fep.sim.dlt698 import SimulatedDlt698Meter

ADDRESS = "000000009999"


def link(kind: LinkType = LinkType.LOGIN, address: str = ADDRESS,
         server: ServerAddress | None = None) -> bytes:  # fmt: skip
    apdu = LinkRequest(0, kind, 300, (2026, 12, 7, 1, 12, 0, 0, 0))
    frame = Frame(control(Function.LINK, from_server=True, client_started=False),
                  server or ServerAddress(address), 0, encode_apdu(apdu))
    return frame.encode()


def identify(data: bytes, *rules: str, chunk: int | None = None) -> Identified | None:
    identifier = Identifier(make_rules(rules or ("ascii", "binary", "dlms", "dlt698")))
    size = chunk or len(data) or 1
    for at in range(0, len(data), size):
        result = identifier.receive(data[at : at + size])
        if result is not None:
            return result
    return None


class Dlt698RuleTests(unittest.TestCase):
    def test_the_simulators_login_names_the_terminal_and_is_kept(self) -> None:
        login = SimulatedDlt698Meter(ADDRESS).login()
        result = identify(login)
        assert result is not None
        self.assertEqual(result.identity.rule, "dlt698")
        self.assertEqual(result.identity.protocol, "dlt698")
        self.assertEqual(result.identity.keys, (("dlt698", ADDRESS),))
        self.assertEqual(result.identity.name, f"dlt698={ADDRESS}")
        self.assertEqual(result.identity.route(), f"gprs:dlt698={ADDRESS}")
        self.assertEqual(result.identity.unique(), [f"dlt698={ADDRESS}"])
        self.assertEqual(result.data, login)
        self.assertEqual(result.garbage, 0)

    def test_the_daemons_default_rules_take_a_terminals_login(self) -> None:
        # A terminal logs in to a daemon whose [gprs] identify is left at its default.
        from fep.config import parse_config

        rules = parse_config("[fep]\n[store]\n").gprs.identify
        result = identify(SimulatedDlt698Meter(ADDRESS).login(), *rules)
        assert result is not None
        self.assertEqual((result.identity.rule, result.identity.get("dlt698")),
                         ("dlt698", ADDRESS))

    def test_a_heartbeat_identifies_too_a_logout_does_not(self) -> None:
        result = identify(link(LinkType.HEARTBEAT))
        assert result is not None
        self.assertEqual(result.identity.get("dlt698"), ADDRESS)
        self.assertIsNone(identify(link(LinkType.LOGOUT)))

    def test_split_anywhere_with_garbage_and_wake_up_bytes_first(self) -> None:
        data = b"AT+CIPSTART\r\n" + b"\xfe" * 4 + link() + b"\x68\x01"
        for chunk in (1, 2, 3, 7, 13, len(data)):
            result = identify(data, chunk=chunk)
            assert result is not None, chunk
            self.assertEqual(result.identity.get("dlt698"), ADDRESS, chunk)
            # The wake-up bytes are the frame's, not garbage.
            self.assertEqual(result.garbage, 13, chunk)
            self.assertTrue(result.data.startswith(b"\xfe" * 4 + link()), chunk)
        # With the ascii rule on (the default rules): a terminal's first bytes, wake-up
        # bytes and its login, are not held back by a registration line waiting for its end.
        data = b"\xfe" * 4 + link()
        result = identify(data, "ascii", "binary", "dlms", "iec62056-21", "dlt698")
        assert result is not None
        self.assertEqual((result.identity.rule, result.garbage), ("dlt698", 0))

    def test_damaged_frames_and_other_frames_do_not_identify(self) -> None:
        good = link()
        bad_fcs = good[:-3] + bytes([good[-3] ^ 1]) + good[-2:]
        bad_hcs = good[:12] + bytes([good[12] ^ 1]) + good[13:]
        self.assertIsNone(identify(bad_fcs, "dlt698"))
        self.assertIsNone(identify(bad_hcs, "dlt698"))
        # A client's request (a read), a wildcard address: no login.
        request = Frame(control(Function.USER_DATA), ServerAddress(ADDRESS), 0, b"\x05\x01\x01"
                        b"\x40\x00\x02\x00\x00").encode()
        self.assertIsNone(identify(request, "dlt698"))
        self.assertIsNone(identify(link(server=ServerAddress.wildcard()), "dlt698"))
        # After the damaged one, a good login still identifies.
        result = identify(bad_fcs + good, "dlt698", chunk=5)
        assert result is not None
        self.assertEqual(result.garbage, len(bad_fcs))

    def test_the_earliest_registration_wins(self) -> None:
        result = identify(f"ID:{'3' * 15}\r\n".encode() + link())
        assert result is not None
        self.assertEqual(result.identity.rule, "ascii")
        result = identify(link() + f"ID:{'3' * 15}\r\n".encode())
        assert result is not None
        self.assertEqual(result.identity.rule, "dlt698")

    def test_one_byte_pieces_of_start_bytes_cost_linear_work(self) -> None:
        size = 1 << 15
        cases = {
            "start bytes": b"\x68" * size,
            "headers that hold up to a long length": (b"\x68\xf0\x01\x81\x05" * (size // 5)),
        }
        for name, data in cases.items():
            identifier = Identifier([Dlt698Rule()], max_garbage=1 << 20, max_scan=1 << 40)
            for at in range(len(data)):
                self.assertIsNone(identifier.receive(data[at : at + 1]), name)
            self.assertLessEqual(identifier.examined, 40 * len(data), name)
            self.assertLess(len(identifier._buffer), 1024, name)

    def test_a_login_that_never_completes_is_refused_by_the_garbage_cap(self) -> None:
        identifier = Identifier(make_rules(["dlt698"]), max_garbage=256)
        with self.assertRaises(IdentificationError):
            for _ in range(200):
                identifier.receive(b"\x68\x00\x00" + b"z" * 20)

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.sampled_from([link(), link(LinkType.HEARTBEAT), link()[:9], b"\x68",
                                  b"\xfe\xfe", b"\x16", b"\x68\x1e\x00\x81"])
                 | st.binary(max_size=8), max_size=20),
        st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=4),
    )
    def test_going_on_where_the_last_scan_stopped_changes_no_outcome(
        self, parts: list[bytes], sizes: list[int]
    ) -> None:
        data = b"".join(parts)

        def outcome(rescan: bool) -> list[object]:
            rules = make_rules(["ascii", "dlt698"])
            identifier = Identifier(rules, max_garbage=4096, max_scan=1 << 40)
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
