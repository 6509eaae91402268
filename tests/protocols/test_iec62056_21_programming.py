"""IEC 62056-21 programming mode, sans-IO, on bytes: option select with the programming
acknowledgement, P0/P1, R/W commands, the break, NAK in both directions, the meter's error
messages and break as refusals naming meter, command and the meter's text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError, NotSupported, ProtocolError
from fep.protocols.iec62056_21.frames import DataBlock, bcc
from fep.protocols.iec62056_21.programming import (
    Finished,
    MeterRefusal,
    ProgrammingClient,
    Read,
    Resent,
    Send,
    State,
    SwitchBaud,
    Write,
    error_text,
)

SOH, STX, ETX, ACK, NAK = b"\x01", b"\x02", b"\x03", b"\x06", b"\x15"

# A published capture between an application and a B+G e-tech DRS110M meter over RS-485
# (gist.github.com/hdo/4231981, "Communication capture between application and energy meter
# via RS-485 (IEC62056-21)"): sign-on, identification, option select "0:1", the meter's P0
# with BCC 0x60, the password P1 with BCC 0x61, ACK, R1 of register 00000034 with BCC 0x64,
# its answer, and the break B0 with BCC 0x71.
DRS_IDENT = b"/YTL:001511420144\r\n"
DRS_OPTION = ACK + b"0:1\r\n"
DRS_P0 = SOH + b"P0" + STX + b"(00000000)" + ETX + bytes([0x60])
DRS_P1 = SOH + b"P1" + STX + b"(00000000)" + ETX + bytes([0x61])
DRS_R1 = SOH + b"R1" + STX + b"00000034()" + ETX + bytes([0x64])
DRS_B0 = SOH + b"B0" + ETX + bytes([0x71])
DRS_ANSWER = DataBlock.build(b"00000034(001511420144)").encode()

IDENT = b"/LGZ5ZMD4104407.B32\r\n"


def sends(actions: list[object]) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, Send)]


def logged_in(client: ProgrammingClient) -> list[object]:
    """Run ``client`` up to its first operation's command; the actions of the last step."""
    client.start()
    client.receive_data(IDENT)
    client.receive_data(SOH + b"P0" + STX + b"(12345678)" + ETX
                        + bytes([bcc(b"P0" + STX + b"(12345678)" + ETX)]))
    return client.receive_data(ACK)


class PublishedCaptureTests(unittest.TestCase):
    def test_the_capture_bytes_check_out(self) -> None:
        for frame in (DRS_P0, DRS_P1, DRS_R1, DRS_B0):
            self.assertEqual(bcc(frame[1:-1]), frame[-1], frame)

    def test_the_drs110m_exchange_byte_for_byte(self) -> None:
        client = ProgrammingClient([Read("00000034", kind="1")], password="00000000")
        self.assertEqual(client.start(), b"/?!\r\n")
        self.assertEqual(sends(client.receive_data(DRS_IDENT)), [DRS_OPTION])
        self.assertEqual(client.seed, None)
        self.assertEqual(sends(client.receive_data(DRS_P0)), [DRS_P1])
        self.assertEqual(client.seed, "00000000")
        self.assertEqual(sends(client.receive_data(ACK)), [DRS_R1])
        actions = client.receive_data(DRS_ANSWER)
        self.assertEqual(sends(actions), [DRS_B0])
        (finished,) = [a for a in actions if isinstance(a, Finished)]
        (answer,) = finished.answers
        assert answer.readout is not None
        self.assertEqual([(d.address, d.values[0].value) for d in answer.readout.datasets],
                         [("00000034", "001511420144")])
        self.assertEqual(finished.identification.text, "YTL:001511420144")

    def test_the_option_select_asks_for_programming_mode(self) -> None:
        client = ProgrammingClient([], password="x")
        client.start()
        self.assertEqual(sends(client.receive_data(IDENT)), [ACK + b"051\r\n"])

    def test_the_speed_switches_after_the_option_select_on_a_serial_line(self) -> None:
        client = ProgrammingClient([], password="x", switch_baud=True)
        client.start()
        self.assertEqual([a for a in client.receive_data(IDENT) if isinstance(a, SwitchBaud)],
                         [SwitchBaud(9600)])


class CommandTests(unittest.TestCase):
    def test_write_is_acknowledged_and_the_value_taken_when_sent(self) -> None:
        values = iter(["101500", "101501"])
        client = ProgrammingClient([Write("0.9.1", lambda: next(values))], password="pw")
        self.assertEqual(sends(logged_in(client)),
                         [command_bytes(b"W5", b"0.9.1(101500)")])
        actions = client.receive_data(ACK)
        self.assertEqual(sends(actions), [DRS_B0])
        self.assertTrue(client.finished())

    def test_no_password_skips_the_login(self) -> None:
        client = ProgrammingClient([Read("0.9.1")])
        client.start()
        client.receive_data(IDENT)
        actions = client.receive_data(DRS_P0)
        self.assertEqual(sends(actions), [command_bytes(b"R5", b"0.9.1()")])

    def test_a_profile_range_read(self) -> None:
        client = ProgrammingClient([Read("P.01", "02312010000;02312011000")], password="pw")
        self.assertEqual(sends(logged_in(client)),
                         [command_bytes(b"R5", b"P.01(02312010000;02312011000)")])

    def test_the_password_is_never_named(self) -> None:
        client = ProgrammingClient([], password="secret")
        client.start()
        client.receive_data(IDENT)
        client.receive_data(DRS_P0)
        self.assertNotIn("secret", client.current)

    def test_p2_sends_the_operand_of_the_algorithm_given(self) -> None:
        def algorithm(seed: str, password: str) -> str:
            return f"{int(seed) ^ int(password):08d}"

        client = ProgrammingClient([], password="00001111", password_mode="P2",
                                   p2=algorithm, meter="m1")
        client.start()
        client.receive_data(IDENT)
        self.assertEqual(sends(client.receive_data(DRS_P0)),
                         [command_bytes(b"P2", b"(00001111)")])
        with self.assertRaises(MeterRefusal) as caught:
            client.receive_data(DRS_B0)
        self.assertEqual(caught.exception.command, "P2 (password)")

    def test_p2_is_not_supported(self) -> None:
        with self.assertRaises(NotSupported) as caught:
            ProgrammingClient([], password="x", password_mode="P2", meter="m1")
        self.assertIn("P2", caught.exception.message)
        self.assertIn("meter m1", caught.exception.message)


def command_bytes(head: bytes, data: bytes) -> bytes:
    body = head + STX + data + ETX
    return SOH + body + bytes([bcc(body)])


class RefusalTests(unittest.TestCase):
    def test_an_error_message_names_meter_command_and_the_meters_text(self) -> None:
        client = ProgrammingClient([Write("0.9.2", "231301")], password="pw", meter="m7")
        logged_in(client)
        with self.assertRaises(MeterRefusal) as caught:
            client.receive_data(DataBlock.build(b"(ERROR)").encode())
        e = caught.exception
        self.assertEqual((e.command, e.meter_text, e.meter), ("W5 0.9.2(231301)", "ERROR", "m7"))
        self.assertEqual(e.message, "meter m7: W5 0.9.2(231301) refused by the meter: ERROR")

    def test_an_error_value_after_the_address_is_a_refusal(self) -> None:
        client = ProgrammingClient([Read("9.9.9")], password="pw", meter="m7")
        logged_in(client)
        with self.assertRaises(MeterRefusal) as caught:
            client.receive_data(DataBlock.build(b"9.9.9(ER07)").encode())
        self.assertEqual(caught.exception.meter_text, "ER07")

    def test_a_wrong_password_break_is_a_refusal_of_p1(self) -> None:
        client = ProgrammingClient([Read("0.9.1")], password="wrong", meter="m7")
        client.start()
        client.receive_data(IDENT)
        client.receive_data(DRS_P0)
        with self.assertRaises(MeterRefusal) as caught:
            client.receive_data(DRS_B0)
        self.assertEqual(caught.exception.command, "P1 (password)")
        self.assertIn("break", caught.exception.meter_text)

    def test_a_wrong_password_error_message_is_a_refusal_of_p1(self) -> None:
        client = ProgrammingClient([Read("0.9.1")], password="wrong", meter="m7")
        client.start()
        client.receive_data(IDENT)
        client.receive_data(DRS_P0)
        with self.assertRaises(MeterRefusal) as caught:
            client.receive_data(DataBlock.build(b"(PASSWORD)").encode())
        self.assertEqual((caught.exception.command, caught.exception.meter_text),
                         ("P1 (password)", "PASSWORD"))

    def test_data_instead_of_the_prompt_means_no_programming_mode(self) -> None:
        client = ProgrammingClient([Read("0.9.1")], meter="m7")
        client.start()
        client.receive_data(IDENT)
        with self.assertRaises(ProtocolError) as caught:
            client.receive_data(DataBlock.build(b"1.8.0(1*kWh)\r\n!\r\n").encode())
        self.assertIn("P0", caught.exception.message)

    def test_a_push_in_the_middle_fails_the_session(self) -> None:
        client = ProgrammingClient([Read("0.9.1")], password="pw", meter="m7")
        logged_in(client)
        with self.assertRaises(ProtocolError) as caught:
            client.receive_data(IDENT)
        self.assertIn("unexpected Identification", caught.exception.message)

    def test_error_text_leaves_ordinary_values_alone(self) -> None:
        self.assertIsNone(error_text(b"0.9.1(101500)"))
        self.assertIsNone(error_text(b"C.1.0(ERNST)"))
        self.assertEqual(error_text(b"()"), "error message without text")


class NakTests(unittest.TestCase):
    def test_the_meters_nak_gets_the_command_again(self) -> None:
        client = ProgrammingClient([Read("0.9.1")], password="pw")
        (command,) = sends(logged_in(client))
        actions = client.receive_data(NAK)
        self.assertEqual(sends(actions), [command])
        self.assertEqual([a for a in actions if isinstance(a, Resent)],
                         [Resent("R5 0.9.1()", 1)])

    def test_a_clock_write_is_sent_again_with_the_time_of_the_repeat(self) -> None:
        values = iter(["101500", "101502"])
        client = ProgrammingClient([Write("0.9.1", lambda: next(values))], password="pw")
        logged_in(client)
        self.assertEqual(sends(client.receive_data(NAK)),
                         [command_bytes(b"W5", b"0.9.1(101502)")])

    def test_naks_beyond_the_limit_fail_naming_the_command(self) -> None:
        client = ProgrammingClient([Read("0.9.1")], password="pw", retries=2, meter="m7")
        logged_in(client)
        client.receive_data(NAK)
        client.receive_data(NAK)
        with self.assertRaises(ProtocolError) as caught:
            client.receive_data(NAK)
        self.assertIn("R5 0.9.1()", caught.exception.message)
        self.assertIn("not accepted after 2 repeats", caught.exception.message)

    def test_a_damaged_answer_gets_our_nak_then_the_good_one_is_taken(self) -> None:
        client = ProgrammingClient([Read("0.9.1")], password="pw")
        logged_in(client)
        good = DataBlock.build(b"0.9.1(101500)")
        damaged = DataBlock(good.data, good.received_bcc ^ 1).encode()
        self.assertEqual(sends(client.receive_data(damaged)), [NAK])
        actions = client.receive_data(good.encode())
        self.assertEqual(sends(actions), [DRS_B0])

    def test_a_damaged_prompt_gets_our_nak(self) -> None:
        client = ProgrammingClient([Read("0.9.1")], password="pw")
        client.start()
        client.receive_data(IDENT)
        damaged = DRS_P0[:-1] + bytes([DRS_P0[-1] ^ 1])
        self.assertEqual(sends(client.receive_data(damaged)), [NAK])
        self.assertEqual(client.state, State.AWAIT_PROMPT)
        self.assertEqual(sends(client.receive_data(DRS_P0)), [
            command_bytes(b"P1", b"(pw)")])

    def test_messages_around_a_damaged_command_in_the_same_bytes_are_all_taken(self) -> None:
        # The identification, a damaged prompt and the prompt again in one chunk: the
        # identification before the damage is not lost with it, the damaged prompt gets our
        # NAK and the good one behind it is answered now.
        client = ProgrammingClient([Read("0.9.1")], password="pw")
        client.start()
        damaged = DRS_P0[:-1] + bytes([DRS_P0[-1] ^ 1])
        actions = client.receive_data(IDENT + damaged + DRS_P0)
        self.assertEqual(sends(actions)[1:], [NAK, command_bytes(b"P1", b"(pw)")])
        self.assertEqual(client.state, State.AWAIT_LOGIN)

    def test_answers_damaged_beyond_the_limit_fail(self) -> None:
        client = ProgrammingClient([Read("0.9.1")], password="pw", retries=1)
        logged_in(client)
        damaged = DataBlock(b"0.9.1(1)", 0).encode()
        client.receive_data(damaged)
        with self.assertRaises(ProtocolError) as caught:
            client.receive_data(damaged)
        self.assertIn("still damaged", caught.exception.message)

    def test_a_bad_identification_is_a_frame_error(self) -> None:
        client = ProgrammingClient([])
        client.start()
        with self.assertRaises(FrameError):
            client.receive_data(b"/\x01\x02\r\n")


_PIECES = st.one_of(
    st.sampled_from([ACK, NAK, DRS_P0, DRS_B0, DRS_ANSWER, IDENT,
                     DataBlock.build(b"(ERROR)").encode(),
                     DataBlock(b"0.9.1(1)", 0).encode()]),
    st.binary(max_size=40),
)


class AnyStreamTests(unittest.TestCase):
    @given(st.lists(_PIECES, max_size=12))
    def test_the_client_raises_only_its_typed_errors(self, pieces: list[bytes]) -> None:
        client = ProgrammingClient([Read("0.9.1"), Write("0.9.1", "120000")],
                                   password="pw", meter="m1")
        client.start()
        try:
            for piece in pieces:
                client.receive_data(piece)
        except (FrameError, ProtocolError):
            pass
