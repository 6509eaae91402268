"""Forwarding through a concentrator, sans IO (fep.protocols.gw3761.forward): a meter's
bytes wrapped in AFN 10 F1 as the published frame has them, the published answer unwrapped,
and against the simulated concentrator: the meter's own answer back, a silent meter and a
denial refused, the concentrator's heartbeat confirmed meanwhile, a late answer dropped."""

from __future__ import annotations

from twisted.trial import unittest

from fep.protocols.dlt645 import services as dlt645
from fep.protocols.dlt645.frames import decode_frame as decode_dlt645
from fep.protocols.gw3761.forward import (
    Answer,
    Forwarder,
    ForwardSettings,
    Noise,
    Refused,
    Send,
    dlt645_address,
)
from fep.protocols.gw3761.frames import Afn, FrameDecoder, decode_frame
from fep.protocols.gw3761.services import decode_units
from fep.sim.concentrator import SimulatedConcentrator, make_concentrator
from tests.protocols.gw3761.published import FRAMES

START = 1_709_280_000.0


def exchange(forwarder: Forwarder, sim: SimulatedConcentrator, payload: bytes) -> list[object]:
    wrapped = forwarder.wrap(payload)
    actions: list[object] = []
    for answer in sim.receive(wrapped, FrameDecoder()):
        actions += forwarder.receive(answer)
    return actions


class PublishedTests(unittest.TestCase):
    def test_the_published_read_is_wrapped_and_its_answer_unwrapped(self) -> None:
        published = decode_frame(FRAMES["node_forward_read"])
        (item,) = decode_units(Afn.FORWARD, published.data, False)
        meter_request = item.value.payload
        forwarder = Forwarder(published.address, ForwardSettings(port=31, timeout=60))
        ours = decode_frame(forwarder.wrap(meter_request))
        # The same data unit (port 31, 2400 8E1, 60 s, 100 ms, length, the frame); PSEQ 0.
        self.assertEqual(ours.data, published.data)
        self.assertEqual((ours.afn, ours.seq.seq, ours.control.to_byte()),
                         (Afn.FORWARD, 0, published.control.to_byte()))
        self.assertEqual(forwarder.target, "151230011061")
        self.assertEqual(ours.pw, bytes(16))
        (answer,) = forwarder.receive(FRAMES["node_forward_read_answer"])
        assert isinstance(answer, Answer)
        self.assertEqual(decode_dlt645(answer.payload).address, "151230011061")
        self.assertFalse(forwarder.waiting)
        self.assertEqual(decode_frame(forwarder.wrap(meter_request)).seq.seq, 1)  # PSEQ counts


class SimulatorTests(unittest.TestCase):
    def setUp(self) -> None:
        self.sim = make_concentrator(3, clock=lambda: START)
        self.meter = self.sim.meters[1]
        self.sim.ports[self.meter.address] = 2
        self.forwarder = Forwarder(self.sim.address, ForwardSettings(port=2))
        self.request = dlt645.read_data(self.meter.address, 0x00010000).encode()

    def test_the_meters_own_answer_comes_back(self) -> None:
        (answer,) = exchange(self.forwarder, self.sim, self.request)
        direct = self.meter.answer(decode_dlt645(self.request))
        assert direct is not None and isinstance(answer, Answer)
        self.assertEqual(answer.payload, direct.encode())
        self.assertEqual(self.sim.forwarded, 1)

    def test_a_meter_on_another_port_or_silent_is_refused(self) -> None:
        wrong = Forwarder(self.sim.address, ForwardSettings(port=3))
        self.assertEqual(exchange(wrong, self.sim, self.request),
                         [Refused("the meter did not answer")])
        self.sim.silent.add(self.meter.address)
        self.assertEqual(exchange(self.forwarder, self.sim, self.request),
                         [Refused("the meter did not answer")])

    def test_a_denial_is_refused(self) -> None:
        self.sim.refuse.add((Afn.FORWARD, 1))
        self.assertEqual(exchange(self.forwarder, self.sim, self.request),
                         [Refused("the concentrator denied the forwarding (AFN 00 F2)")])

    def test_a_broadcast_expects_no_answer(self) -> None:
        from datetime import datetime

        broadcast = dlt645.broadcast_time_sync(datetime(2024, 3, 1, 16)).encode()
        self.assertEqual(dlt645_address(broadcast), "999999999999")
        self.assertEqual(exchange(self.forwarder, self.sim, broadcast), [])

    def test_heartbeats_are_confirmed_and_late_answers_dropped(self) -> None:
        first = self.forwarder.wrap(self.request)
        late = self.sim.receive(first, FrameDecoder())
        second = self.forwarder.wrap(self.request)  # the session resent: a new PSEQ
        actions = self.forwarder.receive(self.sim.heartbeat() + b"".join(late))
        assert isinstance(actions[0], Send)
        confirm = decode_frame(actions[0].data)
        self.assertEqual((confirm.afn, confirm.address.key), (Afn.CONFIRM, "4403:0004"))
        self.assertIsInstance(actions[1], Noise)
        self.assertTrue(self.forwarder.waiting)
        (answer,) = [a for b in self.sim.receive(second, FrameDecoder())
                     for a in self.forwarder.receive(b)]
        self.assertIsInstance(answer, Answer)

    def test_another_terminals_frames_and_junk_are_noise(self) -> None:
        other = make_concentrator(0, address="4403:0005", clock=lambda: START)
        self.forwarder.wrap(self.request)
        (noise,) = self.forwarder.receive(other.heartbeat())
        self.assertEqual(noise, Noise("frame of 4403:0005 ignored"))
        self.assertEqual(self.forwarder.noise, 1)


class SettingsTests(unittest.TestCase):
    def test_bounds(self) -> None:
        for kwargs, why in (({"port": 0}, "port 0 is not 1..31"),
                            ({"port": 2, "baud": 1000}, "baud 1000 is not one of 300, 600"),
                            ({"port": 2, "parity": "X"}, "parity 'X' is not N, E or O"),
                            ({"port": 2, "timeout": 200}, "timeout 200 s is not 1..127")):
            with self.assertRaises(ValueError) as caught:
                ForwardSettings(**kwargs)  # type: ignore[arg-type]
            self.assertIn(why, str(caught.exception))
