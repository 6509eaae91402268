"""The ``dlms-hdlc`` identification rule (issue 17): a GPRS modem on a meter's HAN port that
sends no registration is identified by the first HDLC push it relays (published Kaifa and
Aidon captures, tests/fixtures/dlms)."""

from __future__ import annotations

import time

from twisted.trial import unittest

from fep.channels.identify import IdentificationError, Identifier, make_rules
from fep.protocols.dlms import hdlc
from tests.protocols.dlms.fixtures import hex_fixture
from tests.protocols.dlms.test_push_framing import (
    AIDON_LIST2,
    AIDON_SE,
    KAIFA_LIST1,
    KAIFA_LIST3,
    published_apdu,
    segments,
)


class DlmsHdlcRuleTests(unittest.TestCase):
    def identify(self, data: bytes, piece: int | None = None) -> object:
        identifier = Identifier(make_rules(["ascii", "dlms-hdlc"]))
        piece = piece or len(data)
        result = None
        for at in range(0, len(data), piece):
            result = identifier.receive(data[at : at + piece]) or result
        return result

    def test_a_kaifa_list_is_identified_by_the_serial_it_carries(self) -> None:
        frame = hex_fixture(KAIFA_LIST3)
        found = self.identify(b"AT+CIPSEND\r\n" + frame)
        assert found is not None
        self.assertEqual(found.identity.keys, (("serial", "7340157011253544"),))  # type: ignore[attr-defined]
        self.assertEqual(found.identity.route(), "gprs:serial=7340157011253544")  # type: ignore[attr-defined]
        self.assertEqual(found.data, frame)  # type: ignore[attr-defined]  # kept: the first push
        self.assertEqual(found.garbage, 12)  # type: ignore[attr-defined]

    def test_an_aidon_list_in_one_byte_pieces(self) -> None:
        found = self.identify(hex_fixture(AIDON_LIST2), piece=1)
        assert found is not None
        self.assertEqual(found.identity.get("serial"), "7359992890941742")  # type: ignore[attr-defined]

    def test_a_list_without_serial_waits_for_one_that_has_it(self) -> None:
        identifier = Identifier(make_rules(["dlms-hdlc"]))
        self.assertIsNone(identifier.receive(hex_fixture(KAIFA_LIST1)))
        found = identifier.receive(hex_fixture(KAIFA_LIST3))
        assert found is not None
        self.assertEqual(found.identity.get("serial"), "7340157011253544")

    def test_segments_alone_do_not_identify(self) -> None:
        identifier = Identifier(make_rules(["dlms-hdlc"]))
        self.assertIsNone(identifier.receive(segments(published_apdu(AIDON_SE), 200)))

    def test_hostile_flags_are_refused_in_bounded_work(self) -> None:
        # Flags that each open a plausible long frame (a valid-looking format field).
        fake = hdlc.encode_frame(hdlc.HdlcFrame(
            hdlc.FrameKind.UI, hdlc.HdlcAddress(16), hdlc.HdlcAddress(1),
            information=b"\x0f" + b"\x7e\xa7\xff" * 600))
        identifier = Identifier(make_rules(["ascii", "binary", "dlms", "dlms-hdlc"]))
        started = time.process_time()
        with self.assertRaises(IdentificationError):
            for _ in range(40):
                for at in range(0, len(fake), 512):
                    identifier.receive(fake[at : at + 512])
        self.assertLess(time.process_time() - started, 2.0)
