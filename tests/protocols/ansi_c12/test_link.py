"""The C12.18 link state machine: ACK/NAK, retransmission, toggle bit, multi-packet."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import ProtocolError
from fep.protocols.ansi_c12.c1218 import (
    ACK,
    NAK,
    Identify,
    Link,
    Packet,
    Read,
    Received,
    Retransmit,
    Sent,
    encode_read_response,
    packetize,
)
from tests.protocols.ansi_c12.published import PACKETS


class LinkTests(unittest.TestCase):
    def test_first_request_is_the_published_identify(self) -> None:
        self.assertEqual(Link().send(Identify().encode()), PACKETS["identify_request"])

    def test_ack_completes_the_send(self) -> None:
        link = Link()
        link.send(Identify().encode())
        self.assertEqual(link.receive(bytes([ACK])), (b"", [Sent()]))
        self.assertFalse(link.awaiting_ack)

    def test_second_request_carries_the_toggle_bit(self) -> None:
        link = Link()
        link.send(Identify().encode())
        link.receive(bytes([ACK]))
        self.assertEqual(link.send(Read(0).encode()), PACKETS["read_table_0_request"])

    def test_nak_resends_the_same_packet(self) -> None:
        link = Link()
        first = link.send(Identify().encode())
        self.assertEqual(link.receive(bytes([NAK])), (first, [Retransmit(1)]))

    def test_timeout_resends_then_gives_up_after_the_retries(self) -> None:
        link = Link(retries=2, meter="m7")
        first = link.send(Identify().encode())
        self.assertEqual([link.timeout(), link.timeout()], [first, first])
        with self.assertRaises(ProtocolError) as cm:
            link.timeout()
        self.assertEqual(cm.exception.meter, "m7")
        self.assertIn("after 2 retries", str(cm.exception))

    def test_answer_packet_is_acked_and_delivered(self) -> None:
        link = Link()
        answer = Packet(encode_read_response(b"\x01\x02")).encode()
        out, events = link.receive(answer)
        self.assertEqual(
            (out, events), (bytes([ACK]), [Received(encode_read_response(b"\x01\x02"))])
        )

    def test_damaged_answer_is_nakked_and_its_repeat_delivered(self) -> None:
        link = Link()
        answer = Packet(b"\x00").encode()
        damaged = answer[:-1] + bytes([answer[-1] ^ 0xFF])
        self.assertEqual(link.receive(damaged), (bytes([NAK]), []))
        self.assertEqual(link.receive(answer), (bytes([ACK]), [Received(b"\x00")]))

    def test_naks_sent_are_counted_not_read_from_the_bytes(self) -> None:
        """A NAK byte (15) can stand in a packet's data (a clock at 21 h): the link counts
        the NAKs it sends for damaged packets (the simulated meter's count came from the
        bytes written and went up by one between 21:00 and 22:00)."""
        link = Link(packet_size=16)
        message = bytes([NAK]) * 20
        link.send(message)
        out, _ = link.receive(bytes([ACK]))
        self.assertIn(NAK, out)
        self.assertEqual(link.naks_sent, 0)
        answer = Packet(b"\x00").encode()
        link.receive(answer[:-1] + bytes([answer[-1] ^ 0xFF]))
        self.assertEqual(link.naks_sent, 1)

    def test_repeated_answer_is_acked_but_not_delivered_twice(self) -> None:
        link = Link()
        answer = Packet(b"\x00", toggle=True).encode()
        link.receive(answer)
        self.assertEqual(link.receive(answer), (bytes([ACK]), []))

    def test_long_request_goes_out_packet_by_packet_on_each_ack(self) -> None:
        link = Link(packet_size=16)
        message = bytes(range(20))
        packets = packetize(message, packet_size=16)
        self.assertEqual(link.send(message), packets[0].encode())
        self.assertEqual(link.receive(bytes([ACK])), (packets[1].encode(), []))
        self.assertEqual(link.receive(bytes([ACK])), (packets[2].encode(), []))
        self.assertEqual(link.receive(bytes([ACK])), (b"", [Sent()]))

    def test_sending_before_the_ack_is_a_protocol_error(self) -> None:
        link = Link()
        link.send(Identify().encode())
        self.assertRaises(ProtocolError, link.send, Identify().encode())

    def test_multi_packet_answer_is_delivered_once_whole(self) -> None:
        link = Link()
        wire = b"".join(p.encode() for p in packetize(bytes(30), packet_size=16))
        out, events = link.receive(wire)
        self.assertEqual((out, events), (bytes([ACK]) * 4, [Received(bytes(30))]))

    @given(st.lists(st.binary(max_size=30), max_size=6))
    def test_arbitrary_bytes_give_acks_naks_and_events_only(self, chunks: list[bytes]) -> None:
        link = Link()
        for chunk in chunks:
            out, events = link.receive(chunk)
            self.assertTrue(set(out) <= {ACK, NAK})
            self.assertTrue(all(isinstance(e, Received) for e in events))

    @given(st.lists(st.binary(max_size=200), min_size=1, max_size=4), st.integers(12, 100))
    def test_two_links_exchange_messages(self, messages: list[bytes], size: int) -> None:
        client, meter = Link(packet_size=size), Link(packet_size=size)
        for message in messages:
            wire = client.send(message)
            delivered: list[bytes] = []
            sent = False
            while wire:
                back, meter_events = meter.receive(wire)
                delivered += [e.data for e in meter_events if isinstance(e, Received)]
                wire, client_events = client.receive(back)
                sent = sent or Sent() in client_events
            self.assertEqual((delivered, sent), ([message], True))
