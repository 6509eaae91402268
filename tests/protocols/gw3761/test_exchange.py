"""The master station's request/answer exchange with one concentrator, sans IO
(fep.protocols.gw3761.exchange), bytes in, frames and actions out: an answer's frames joined,
what the terminal starts confirmed meanwhile, another terminal's frames and answers to an
older request dropped as noise, a good frame after a bad one taken at once, silence resent
and then given up."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.trial import unittest

from fep.errors import SessionTimeout
from fep.protocols.gw3761.exchange import Failed, MasterExchange, Noise, Send, Step
from fep.protocols.gw3761.frames import (
    Address,
    Afn,
    Frame,
    decode_frame,
    split_into_frames,
)
from fep.protocols.gw3761.services import answer_frame
from fep.sim.concentrator import make_concentrator

START = 1_709_280_000.0
ADDRESS = Address.parse("4403:0004")
UNITS = [bytes([0, 0, 0x01, 0x00]) + bytes(range(i, i + 40)) for i in range(6)]


@attrs.frozen
class Answered:
    frame: Frame


class Recorder(MasterExchange):
    """An exchange that hands each whole answer out as it is."""

    def _answered(self, whole: Frame) -> list[Any]:
        return [Answered(whole)]


def asked(exchange: MasterExchange, what: str = "0A:F1", afn: int = Afn.QUERY_PARAMETERS
          ) -> Frame:  # fmt: skip
    (send,) = exchange._ask(Step(what, int(afn), b"\x00\x00\x01\x00"))
    assert isinstance(send, Send)
    return decode_frame(send.data)


def answer(request: Frame, units: list[bytes] = UNITS, max_user: int = 120) -> list[bytes]:
    """The terminal's answer to ``request`` in frames of at most ``max_user`` bytes."""
    template = answer_frame(request, b"")
    return [f.encode() for f in split_into_frames(template, units, max_user, request.seq.seq)]


def heartbeat() -> bytes:
    return make_concentrator(0, clock=lambda: START).heartbeat()


def feed(exchange: MasterExchange, data: bytes, piece: int = 7) -> list[Any]:
    """``data`` in pieces of ``piece`` bytes, as a line delivers it."""
    actions: list[Any] = []
    for at in range(0, len(data), piece):
        actions += exchange.receive(data[at : at + piece])
    return actions


class AnswerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.exchange = Recorder(ADDRESS)

    def test_a_multi_frame_answer_is_joined_in_order(self) -> None:
        request = asked(self.exchange)
        frames = answer(request)
        self.assertGreater(len(frames), 2)
        for raw in frames[:-1]:
            self.assertEqual(feed(self.exchange, raw), [])
        (whole,) = feed(self.exchange, frames[-1])
        assert isinstance(whole, Answered)
        self.assertEqual(whole.frame.data, b"".join(UNITS))
        self.assertEqual(whole.frame.seq.seq, request.seq.seq)
        self.assertEqual(self.exchange.noise, 0)

    def test_frames_the_terminal_starts_meanwhile_are_confirmed(self) -> None:
        request = asked(self.exchange)
        first, *rest = answer(request)
        beat = heartbeat()
        actions = feed(self.exchange, first + beat + b"".join(rest))
        self.assertEqual([type(a) for a in actions], [Send, Answered])
        confirm = decode_frame(actions[0].data)
        sent = decode_frame(beat)
        self.assertEqual((confirm.afn, confirm.seq.seq, confirm.uplink, confirm.address.key),
                         (Afn.CONFIRM, sent.seq.seq, False, ADDRESS.key))  # fmt: skip
        self.assertEqual(self.exchange.confirmed, 1)
        self.assertEqual(actions[1].frame.data, b"".join(UNITS))

    def test_a_frame_the_terminal_starts_without_con_is_not_confirmed(self) -> None:
        asked(self.exchange)
        sent = decode_frame(heartbeat())
        quiet = attrs.evolve(sent, seq=attrs.evolve(sent.seq, con=False))
        self.assertEqual(self.exchange.receive(quiet.encode()), [])
        self.assertEqual(self.exchange.confirmed, 0)

    def test_another_terminals_frames_are_ignored(self) -> None:
        request = asked(self.exchange)
        other = attrs.evolve(request, address=Address.parse("4403:0005"))
        (stray,) = answer(other, UNITS[:1])
        (single,) = answer(request, UNITS[:1])
        actions = self.exchange.receive(stray + single)
        self.assertEqual(actions[0], Noise("frame of 4403:0005 ignored"))
        self.assertIsInstance(actions[1], Answered)
        self.assertEqual(self.exchange.noise, 1)

    def test_its_own_request_echoed_is_ignored(self) -> None:
        request = asked(self.exchange)
        (noise,) = self.exchange.receive(request.encode())
        self.assertIsInstance(noise, Noise)
        self.assertTrue(self.exchange.waiting_for)

    def test_an_answer_to_an_older_request_is_ignored(self) -> None:
        older = asked(self.exchange, "first")
        newer = asked(self.exchange, "second")
        self.assertNotEqual(older.seq.seq, newer.seq.seq)
        (late,) = answer(older, UNITS[:1])
        (noise,) = self.exchange.receive(late)
        self.assertEqual(noise, Noise(f"answer with RSEQ {older.seq.seq} to no open request"))
        (single,) = answer(newer, UNITS[1:2])
        (whole,) = self.exchange.receive(single)
        self.assertEqual(whole.frame.data, UNITS[1])
        self.assertEqual(self.exchange.waiting_for, "the answer to second")

    def test_the_rest_of_an_older_multi_frame_answer_is_ignored(self) -> None:
        older = asked(self.exchange, "first")
        first, *rest = answer(older)
        self.assertEqual(self.exchange.receive(first), [])
        newer = asked(self.exchange, "second")  # e.g. after the first was given up
        for raw in rest:
            (noise,) = self.exchange.receive(raw)
            self.assertIsInstance(noise, Noise)
        (single,) = answer(newer, UNITS[:1])
        (whole,) = self.exchange.receive(single)
        self.assertEqual(whole.frame.data, UNITS[0])

    def test_an_answer_with_no_request_open_is_ignored(self) -> None:
        request = asked(self.exchange)
        fresh = Recorder(ADDRESS)
        (single,) = answer(request, UNITS[:1])
        self.assertEqual(fresh.receive(single),
                         [Noise(f"answer with RSEQ {request.seq.seq} to no open request")])

    def test_a_good_frame_after_a_bad_one_is_taken_at_once(self) -> None:
        request = asked(self.exchange)
        (single,) = answer(request, UNITS[:1])
        bad = bytearray(heartbeat())
        bad[-2] ^= 0xFF  # its checksum
        actions = self.exchange.receive(heartbeat() + bytes(bad) + single)
        self.assertEqual([type(a) for a in actions], [Send, Noise, Answered])
        self.assertEqual(self.exchange.noise, 1)

    def test_an_answer_of_another_afn_is_dropped_where_it_is_checked(self) -> None:
        class Checking(Recorder):
            checks_afn = True

        exchange = Checking(ADDRESS)
        request = asked(exchange)
        (wrong,) = answer(attrs.evolve(request, afn=Afn.CLASS1), UNITS[:1])
        (noise,) = exchange.receive(wrong)
        self.assertEqual(noise, Noise("answer of AFN 0C to a request of AFN 0A ignored"))
        confirm = answer_frame(request, b"\x00\x00\x01\x00", afn=Afn.CONFIRM).encode()
        (whole,) = exchange.receive(confirm)
        self.assertEqual(whole.frame.afn, Afn.CONFIRM)

    def test_silence_is_resent_then_given_up(self) -> None:
        request = asked(self.exchange)
        self.assertEqual(self.exchange.timeout(), [Send(request.encode())])
        self.assertEqual(self.exchange.resent, 1)
        (failed,) = self.exchange.timeout()
        assert isinstance(failed, Failed)
        self.assertIsInstance(failed.error, SessionTimeout)
        self.assertIn("did not answer 0A:F1", str(failed.error))
        self.assertTrue(self.exchange.done)
        (single,) = answer(request, UNITS[:1])
        self.assertEqual(self.exchange.receive(single), [])

    def test_a_resend_starts_the_answer_afresh(self) -> None:
        request = asked(self.exchange)
        first, *rest = answer(request)
        self.exchange.receive(first)
        self.exchange.timeout()
        (noise, *_) = self.exchange.receive(b"".join(rest))
        self.assertIsInstance(noise, Noise)
        frames = answer(request)
        actions = [a for raw in frames for a in self.exchange.receive(raw)]
        self.assertEqual([type(a) for a in actions], [Answered])
