"""The read's client on a session that carries the concentrator's reports (``hand_over``):
heartbeats confirmed by the read, reports handed over whole, frames after the last answer
handed over in order; an answer of another AFN with the request's RSEQ ignored."""

from __future__ import annotations

from datetime import UTC, datetime

from twisted.trial import unittest

from fep.protocols.gw3761 import services
from fep.protocols.gw3761.client import (
    ClientSettings,
    Finished,
    Gw3761Client,
    Noise,
    Reported,
    Send,
)
from fep.protocols.gw3761.frames import Address, Afn, FrameDecoder, decode_frame
from fep.protocols.gw3761.services import EventRecord, EventsRequest
from fep.sim.concentrator import make_concentrator

START = 1_709_280_000.0


def now() -> datetime:
    return datetime.fromtimestamp(START, UTC)


class HandOverTests(unittest.TestCase):
    def setUp(self) -> None:
        self.sim = make_concentrator(2, "4403:0004", clock=lambda: START)
        self.sim.events_read = len(self.sim.events)  # no ACD unless a test says so
        self.client = Gw3761Client(ClientSettings(Address("4403", 4), points=(1,),
                                                  items=((Afn.CLASS1, 129),)), now)
        self.client.hand_over = True
        (send,) = self.client.start()
        assert isinstance(send, Send)
        self.request = send.data
        self.decoder = FrameDecoder()

    def test_heartbeat_confirmed_report_handed_over(self) -> None:
        beat = self.sim.heartbeat()
        report = self.sim.report_event(EventRecord(13, self.sim.now(), 1, True))
        actions = self.client.receive(beat + report)
        (confirm,) = [a for a in actions if isinstance(a, Send)]
        self.assertEqual(decode_frame(confirm.data).seq.seq, beat[13] & 0x0F)
        self.assertIn(Reported(report), actions)
        self.assertEqual(self.client.records, [])
        answers = b"".join(self.sim.receive(self.request, self.decoder))
        # (The reported event is not read yet: the answer has ACD, handed over after it.)
        done, acd = self.client.receive(answers)
        assert isinstance(done, Finished)
        self.assertTrue(done.records)
        self.assertIsInstance(acd, Reported)

    def test_bytes_after_the_last_answer_are_handed_over_in_order(self) -> None:
        answers = b"".join(self.sim.receive(self.request, self.decoder))
        beat = self.sim.heartbeat()
        actions = self.client.receive(answers + beat + b"\x68\x32\x00")
        self.assertIsInstance(actions[0], Finished)
        self.assertEqual(actions[1:], [Reported(beat), Reported(b"\x68\x32\x00")])
        self.assertEqual(self.client.decoder.buffered, 0)

    def test_an_answer_of_another_afn_with_the_requests_rseq_is_ignored(self) -> None:
        request = decode_frame(self.request)
        master = services.Master(Address("4403", 4), pfc=request.seq.seq)
        fetch = master.request(Afn.CLASS3, services.encode_unit(
            Afn.CLASS3, [0], [1], False, {(0, 1): EventsRequest(0, 2)}))
        late = b"".join(self.sim.receive(fetch.encode(), FrameDecoder()))
        self.assertEqual(decode_frame(late).seq.seq, request.seq.seq)
        actions = self.client.receive(late)
        self.assertEqual(len(actions), 1)
        self.assertIsInstance(actions[0], Noise)
        self.assertIn("AFN 0E", actions[0].why)  # type: ignore[attr-defined]
        answers = b"".join(self.sim.receive(self.request, self.decoder))
        (done,) = self.client.receive(answers)
        self.assertIsInstance(done, Finished)

    def test_the_last_answer_with_acd_is_handed_over_without_its_data(self) -> None:
        self.sim.events_read = 0  # two events not read: every answer has ACD and EC
        answers = b"".join(self.sim.receive(self.request, self.decoder))
        done, acd = self.client.receive(answers)
        assert isinstance(done, Finished) and isinstance(acd, Reported)
        self.assertTrue(done.records)
        frame = decode_frame(acd.frame)
        self.assertEqual((frame.afn, frame.data, frame.control.initiator), (Afn.CLASS1, b"",
                                                                            False))
        assert frame.ec is not None
        self.assertEqual(frame.ec.important, 2)
