"""Line discipline: echo suppression and the inter-frame gap, as pure logic and as the paced
line the serial and RFC 2217 transports use (on a Clock)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest

from fep.channels.lines import EchoSuppressor, LinePacer, wire_time
from fep.channels.serialport import PacedLine
from tests.protocols.dlt645.published import FRAMES

# A DL/T 645-2007 read of forward active energy and its answer (published exchange, source
# in tests/fixtures/dlt645/published_frames.txt): the answer starts like the request.
REQUEST = FRAMES["read_total_forward_active_request"]
ANSWER = FRAMES["read_total_forward_active_response"]


class EchoSuppressorTests(unittest.TestCase):
    def test_echo_then_answer_leaves_the_answer(self) -> None:
        echo = EchoSuppressor()
        echo.sent(REQUEST, 0.0, 0.1)
        self.assertEqual(echo.received(REQUEST + ANSWER, 0.05), ANSWER)
        self.assertEqual((echo.echoed, echo.lost, echo.expected), (len(REQUEST), 0, 0))

    def test_echo_split_across_reads(self) -> None:
        echo = EchoSuppressor()
        echo.sent(REQUEST, 0.0, 0.1)
        self.assertEqual(echo.received(REQUEST[:3], 0.01), b"")
        self.assertEqual(echo.received(REQUEST[3:] + ANSWER[:5], 0.02), ANSWER[:5])
        self.assertEqual(echo.received(ANSWER[5:], 0.03), ANSWER[5:])

    def test_damaged_echo_ends_the_expectation(self) -> None:
        echo = EchoSuppressor()
        echo.sent(b"abcdef", 0.0, 0.01)
        self.assertEqual(echo.received(b"abXdef" + b"answer", 0.005), b"Xdef" + b"answer")
        self.assertEqual((echo.echoed, echo.lost), (2, 4))

    def test_echo_that_never_comes_expires(self) -> None:
        # An adapter that does not echo after all: the answer is not eaten, even when it
        # starts like the request (DL/T 645 answers do).
        echo = EchoSuppressor(window=0.2)
        echo.sent(REQUEST, 0.0, 0.1)
        self.assertEqual(echo.received(ANSWER, 0.5), ANSWER)
        self.assertEqual(echo.lost, len(REQUEST))

    @given(
        st.binary(min_size=1, max_size=64),
        st.binary(max_size=64),
        st.lists(st.integers(1, 20), max_size=8),
    )
    def test_answer_comes_through_whole_however_the_echo_is_split(
        self, request: bytes, answer: bytes, cuts: list[int]
    ) -> None:
        echo = EchoSuppressor()
        echo.sent(request, 0.0, 0.05)
        stream = request + answer
        got = b""
        at = 0
        for cut in cuts:
            got += echo.received(stream[at : at + cut], 0.01)
            at += cut
        got += echo.received(stream[at:], 0.01)
        self.assertEqual(got, answer)


class LinePacerTests(unittest.TestCase):
    def test_no_gap_never_waits(self) -> None:
        pacer = LinePacer(0)
        pacer.heard(10.0)
        self.assertEqual(pacer.delay(10.0), 0)

    def test_gap_counts_from_the_last_byte_heard(self) -> None:
        pacer = LinePacer(0.05)
        pacer.heard(10.0)
        self.assertAlmostEqual(pacer.delay(10.01), 0.04)
        self.assertEqual(pacer.delay(10.06), 0)

    def test_own_writes_need_no_gap_between_them(self) -> None:
        pacer = LinePacer(0.05)
        pacer.transmitted(1.0, 0.2)
        self.assertEqual(pacer.delay(1.0), 0)
        self.assertAlmostEqual(pacer.drained_in(1.05), 0.15)

    def test_a_new_session_waits_the_gap_after_the_previous_one(self) -> None:
        pacer = LinePacer(0.1, quiet_since=5.0)
        self.assertAlmostEqual(pacer.delay(5.02), 0.08)

    def test_negative_gap_is_refused(self) -> None:
        self.assertRaises(ValueError, LinePacer, -1)

    def test_wire_time_of_the_iec_ack_at_300_bd(self) -> None:
        # ACK 0 5 0 CR LF: 6 characters of 10 bits (7E1) at 300 Bd.
        self.assertAlmostEqual(wire_time(6, 300, 10), 0.2)


class _Line:
    def __init__(self, *, echo: bool = False, gap: float = 0.0, drop_stale: bool = False,
                 line: str = "test:line") -> None:
        self.clock = Clock()
        self.written: list[tuple[float, bytes]] = []
        self.speeds: list[tuple[float, int]] = []
        self.baud = 300
        self.paced = PacedLine(
            self.clock,
            line=line,
            echo=echo,
            gap=gap,
            send=lambda data: self.written.append((self.clock.seconds(), data)),
            apply_baudrate=self._speed,
            baudrate=lambda: self.baud,
            char_bits=10,
            drop_stale=drop_stale,
        )

    def _speed(self, baud: int) -> None:
        self.baud = baud
        self.speeds.append((self.clock.seconds(), baud))


class PacedLineTests(unittest.TestCase):
    def test_without_options_writes_go_at_once(self) -> None:
        line = _Line()
        line.paced.write(b"/?!\r\n")
        self.assertEqual(line.written, [(0, b"/?!\r\n")])

    def test_write_after_an_answer_waits_the_gap(self) -> None:
        line = _Line(gap=0.05)
        line.clock.advance(1)
        line.paced.received(b"answer")
        line.paced.write(b"next")
        line.paced.write(b" request")
        self.assertEqual(line.written, [])
        self.assertEqual(line.paced.held_bytes(), 12)
        line.clock.advance(0.05)
        self.assertEqual([data for _, data in line.written], [b"next", b" request"])
        self.assertAlmostEqual(line.written[0][0], 1.05)

    def test_bytes_heard_during_the_gap_start_it_again(self) -> None:
        line = _Line(gap=0.05)
        line.paced.received(b"x")
        line.paced.write(b"req")
        line.clock.advance(0.04)
        line.paced.received(b"late byte")
        line.clock.advance(0.02)
        self.assertEqual(line.written, [])
        line.clock.advance(0.03)
        self.assertEqual([data for _, data in line.written], [b"req"])

    def test_speed_change_waits_for_written_bytes_to_leave(self) -> None:
        line = _Line()
        line.paced.write(b"\x06050\r\n")  # 0.2 s at 300 Bd
        line.clock.advance(0.1)
        line.paced.set_baudrate(9600)
        self.assertEqual(line.speeds, [])
        line.clock.advance(0.1)
        self.assertEqual([baud for _, baud in line.speeds], [9600])
        self.assertAlmostEqual(line.speeds[0][0], 0.2)

    def test_speed_change_after_held_bytes_and_writes_after_it_at_the_new_speed(self) -> None:
        line = _Line(gap=0.1)
        line.paced.received(b"ident")
        line.paced.write(b"\x06050\r\n")
        line.paced.set_baudrate(9600)
        line.paced.write(b"later")
        line.clock.advance(0.1)
        self.assertEqual(line.written, [(0.1, b"\x06050\r\n")])
        line.clock.advance(0.2)
        self.assertEqual([baud for _, baud in line.speeds], [9600])
        self.assertAlmostEqual(line.speeds[0][0], 0.3)
        self.assertEqual(line.written[-1][1], b"later")
        self.assertAlmostEqual(line.written[-1][0], 0.3)

    def test_echo_is_dropped(self) -> None:
        line = _Line(echo=True)
        line.paced.write(b"request")
        self.assertEqual(line.paced.received(b"request" + b"answer"), b"answer")

    def test_stale_bytes_before_the_first_write_are_dropped(self) -> None:
        line = _Line(drop_stale=True)
        self.assertEqual(line.paced.received(b"\x7e\xa0late UA\x7e"), b"")
        line.paced.write(b"/?1!\r\n")
        self.assertEqual(line.paced.received(b"/ABC5\r\n"), b"/ABC5\r\n")
        self.assertEqual(line.paced.stale, 10)

    def test_next_session_on_the_line_waits_the_gap_after_the_last(self) -> None:
        first = _Line(gap=0.1, line="test:shared")
        first.clock.advance(2)
        first.paced.received(b"last answer")
        first.paced.close()
        second = _Line(gap=0.1, line="test:shared")
        second.clock.advance(2.05)
        second.paced.write(b"req")
        self.assertEqual(second.written, [])
        second.clock.advance(0.04)
        self.assertEqual(second.written, [])
        second.clock.advance(0.02)
        self.assertEqual([data for _, data in second.written], [b"req"])

    def test_closed_line_drops_held_writes(self) -> None:
        line = _Line(gap=0.1)
        line.paced.received(b"x")
        line.paced.write(b"req")
        line.paced.close()
        line.clock.advance(1)
        self.assertEqual(line.written, [])
        self.assertEqual(line.clock.getDelayedCalls(), [])
