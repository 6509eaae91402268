"""The push handler of one connection (session.py's DlmsPushHandler) on published HDLC
captures: what it takes is submitted, what it refuses is counted in PushStats (issue 17)."""

from __future__ import annotations

from twisted.trial import unittest

from fep.model import Meter
from fep.protocols.dlms import hdlc
from fep.protocols.dlms.session import DlmsPushDecoder, DlmsPushHandler
from tests.protocols.dlms.fixtures import hex_fixture
from tests.protocols.dlms.test_downgrade import Sink
from tests.protocols.dlms.test_push_framing import (
    AIDON_SE,
    KAIFA_LIST1,
    KAIFA_LIST3,
    published_apdu,
    segments,
)

KAIFA = Meter("kaifa", "dlms", "gprs:imei=1", serial="7340157011253544",
              metadata={"dlms_push_address": "hdlc:1/0"})


def handler(plain: tuple[str, ...] = ("address", "serial")) -> tuple[DlmsPushHandler, Sink]:
    sink = Sink()

    def sender(way: str, value: str) -> Meter | None:
        if way == "serial" and value == KAIFA.serial:
            return KAIFA
        if way == "address" and value == KAIFA.metadata["dlms_push_address"]:
            return KAIFA
        return None

    decoder = DlmsPushDecoder(sink, lambda title, wport: None, sender=sender, plain=plain)
    return DlmsPushHandler(decoder, device="127.0.0.1:4000"), sink


class PushHandlerTests(unittest.TestCase):
    def test_published_pushes_are_submitted_and_bad_input_counted(self) -> None:
        push, sink = handler()
        cut = segments(published_apdu(AIDON_SE), 200)
        push.data_received(hex_fixture(KAIFA_LIST3))
        first = len(hdlc.encode_frame(hdlc.HdlcFrameDecoder().receive(cut)[0]))
        push.data_received(cut[:first])  # the first segment only
        push.data_received(hex_fixture(KAIFA_LIST1))
        stats = push.decoder.stats
        self.assertEqual((stats.accepted, stats.rejected_frame), (2, 1))
        self.assertEqual(len(sink.readings()), 18)
        self.assertEqual({r.meter for r in sink.readings()}, {"kaifa"})

    def test_a_push_behind_a_frame_cut_short_is_kept(self) -> None:
        push, sink = handler()
        cut = segments(published_apdu(AIDON_SE), 200)
        push.data_received(cut[:230])  # a frame and a piece of the next: it waits for more
        push.data_received(hex_fixture(KAIFA_LIST1))
        push.data_received(hex_fixture(KAIFA_LIST3))  # the next push ends the wait
        push.connection_lost()
        self.assertEqual(push.decoder.stats.accepted, 2)
        self.assertEqual(len(sink.readings()), 18)
        self.assertGreaterEqual(push.decoder.stats.rejected_frame, 1)

    def test_segments_open_when_the_connection_ends_are_counted(self) -> None:
        push, _ = handler()
        push.data_received(segments(published_apdu(AIDON_SE), 200)[:300])
        push.connection_lost()
        # The last frame cut short, and the APDU its segments began.
        self.assertEqual(push.decoder.stats.rejected_frame, 2)

    def test_unknown_senders_are_refused_and_counted_by_default(self) -> None:
        push, sink = handler(plain=())
        push.data_received(hex_fixture(KAIFA_LIST3))
        self.assertEqual(push.decoder.stats.rejected_unknown, 1)
        self.assertEqual(sink.records, [])


class BadInputWithTheDeviceTests(unittest.TestCase):
    """Bad input is counted and logged with the device (its connection and link address),
    and the complete pushes around it are kept: a list its identifier's layouts do not fit,
    M-Bus segments cut short, a replayed ciphered push."""

    def setUp(self) -> None:
        from twisted.logger import globalLogPublisher

        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def logged(self, text: str) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if text in formatEvent(e)]

    def test_a_list_no_layout_fits_is_counted_and_logged_with_the_device(self) -> None:
        from tests.daemon.test_dlms_push_framings import kfm001_of_the_wrong_length

        push, sink = handler()
        push.data_received(hex_fixture(KAIFA_LIST3))
        push.data_received(kfm001_of_the_wrong_length())
        push.data_received(hex_fixture(KAIFA_LIST1))
        stats = push.decoder.stats
        self.assertEqual((stats.accepted, stats.rejected_frame), (2, 1))
        self.assertEqual(len(sink.readings()), 18)
        [line] = self.logged("matches none of its layouts")
        self.assertIn("'KFM_001' of 6 values", line)
        self.assertIn("(device 127.0.0.1:4000 hdlc:1/0)", line)

    def test_mbus_segments_cut_short_are_counted_and_logged_with_the_device(self) -> None:
        from tests.protocols.dlms.test_push_austria import TINETZ_MBUS, tinetz_meter

        ma309 = tinetz_meter()
        decoder = DlmsPushDecoder(Sink(), lambda title, wport: ma309)
        push = DlmsPushHandler(decoder, device="127.0.0.1:4001")
        data = hex_fixture(TINETZ_MBUS)
        push.data_received(data[: 0xFA + 6])  # the first segment, then the whole push
        push.data_received(data)
        push.data_received(data)  # again: a replay of its invocation counter
        push.data_received(data[: 0xFA + 6])
        push.connection_lost()
        stats = decoder.stats
        self.assertEqual((stats.accepted, stats.rejected_frame, stats.rejected_replay),
                         (1, 2, 1))
        broken = self.logged("M-Bus segments of an APDU broken off after 245 bytes")
        self.assertEqual(len(broken), 2)
        self.assertIn("a new APDU began (device 127.0.0.1:4001 mbus:255)", broken[0])
        self.assertIn("the connection ended (device 127.0.0.1:4001 mbus:255)", broken[1])
        [replay] = self.logged("DLMS push rejected (replay)")
        self.assertIn("(device 127.0.0.1:4001 mbus:255)", replay)
