"""The sans-IO mode C client: what it sends, when it switches baud, what it reports."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError, ProtocolError
from fep.protocols.iec62056_21.client import (
    IdentificationReceived,
    ModeCClient,
    PushReceived,
    ReadoutReceived,
    Send,
    State,
    SwitchBaud,
)
from fep.protocols.iec62056_21.frames import DataBlock, Identification
from fep.protocols.iec62056_21.readout import DataSet, encode_readout
from tests.protocols.test_iec62056_21_readout import data_sets, fixture_bytes

IDENT = b"/LGZ4ZMF100AC.M26\r\n"


def block(text: bytes) -> bytes:
    return DataBlock.build(text).encode()


class SignOnTests(unittest.TestCase):
    def test_start_sends_sign_on_with_address(self) -> None:
        self.assertEqual(ModeCClient("0042").start(), b"/?0042!\r\n")

    def test_no_address_sends_generic_sign_on(self) -> None:
        self.assertEqual(ModeCClient(None).start(), b"/?!\r\n")

    def test_starting_twice_is_a_protocol_error(self) -> None:
        client = ModeCClient()
        client.start()
        self.assertRaises(ProtocolError, client.start)

    def test_data_before_start_is_a_protocol_error(self) -> None:
        self.assertRaises(ProtocolError, ModeCClient().receive_data, IDENT)


class OptionSelectTests(unittest.TestCase):
    def test_identification_answers_with_option_select_echoing_baud_char(self) -> None:
        client = ModeCClient()
        client.start()
        actions = client.receive_data(IDENT)
        self.assertEqual(
            actions,
            [
                IdentificationReceived(Identification("LGZ", "4", "ZMF100AC.M26")),
                Send(b"\x06040\r\n"),
            ],
        )

    def test_serial_line_switches_to_the_proposed_baud_after_the_ack(self) -> None:
        client = ModeCClient(switch_baud=True)
        client.start()
        actions = client.receive_data(IDENT)
        self.assertEqual(actions[1:], [Send(b"\x06040\r\n"), SwitchBaud(4800)])

    def test_max_baudrate_caps_the_proposal(self) -> None:
        client = ModeCClient(switch_baud=True, max_baudrate=2400)
        client.start()
        self.assertEqual(client.receive_data(IDENT)[1:], [Send(b"\x06030\r\n"), SwitchBaud(2400)])

    def test_baud_char_zero_keeps_300_and_does_not_switch(self) -> None:
        client = ModeCClient(switch_baud=True, baud_char="0")
        client.start()
        self.assertEqual(client.receive_data(IDENT)[1:], [Send(b"\x06000\r\n")])

    def test_echoed_sign_on_is_ignored(self) -> None:
        client = ModeCClient()
        client.start()
        actions = client.receive_data(b"/?!\r\n" + IDENT)
        self.assertIsInstance(actions[0], IdentificationReceived)

    def test_mode_a_meter_gets_no_option_select(self) -> None:
        client = ModeCClient()
        client.start()
        actions = client.receive_data(b"/ABC:ident\r\n")
        self.assertEqual(len(actions), 1)
        self.assertEqual(client.state, State.AWAIT_READOUT)


class ReadoutTests(unittest.TestCase):
    def test_published_e350_exchange_gives_the_readout(self) -> None:
        client = ModeCClient()
        client.start()
        actions = client.receive_data(fixture_bytes("landis_gyr_e350_m26.txt"))
        result = actions[-1]
        assert isinstance(result, ReadoutReceived)
        self.assertEqual(result.identification.text, "LGZ4ZMF100AC.M26")
        self.assertEqual(len(result.readout.datasets), 22)
        self.assertEqual(client.state, State.DONE)

    def test_bad_bcc_is_a_frame_error_naming_the_bcc(self) -> None:
        client = ModeCClient()
        client.start()
        raw = bytearray(fixture_bytes("landis_gyr_e350_m26.txt"))
        raw[-1] ^= 0x40
        with self.assertRaises(FrameError) as cm:
            client.receive_data(bytes(raw))
        self.assertEqual(cm.exception.message, "bad BCC in readout: computed 0x01, received 0x41")

    def test_parse_error_offset_counts_from_stream_start(self) -> None:
        client = ModeCClient()
        client.start()
        with self.assertRaises(FrameError) as cm:
            client.receive_data(IDENT + block(b"1.8.0(1*kWh)\r\nx#(1)\r\n!\r\n"))
        self.assertEqual(cm.exception.field, "data line 2")
        # IDENT is 19 bytes, STX 1, the bad '#' is byte 15 of the block.
        self.assertEqual(cm.exception.offset, 19 + 1 + 15)

    def test_readout_before_identification_is_a_protocol_error(self) -> None:
        client = ModeCClient()
        client.start()
        self.assertRaises(ProtocolError, client.receive_data, block(b"!\r\n"))

    def test_data_after_the_readout_is_a_protocol_error(self) -> None:
        client = ModeCClient()
        client.start()
        client.receive_data(IDENT + block(b"!\r\n"))
        self.assertRaises(ProtocolError, client.receive_data, IDENT)

    @given(st.lists(data_sets, max_size=10), st.integers(1, 200))
    def test_generated_readout_in_two_pieces(self, sets: list[DataSet], cut: int) -> None:
        wire = IDENT + block(encode_readout(sets))
        client = ModeCClient()
        client.start()
        actions = client.receive_data(wire[:cut]) + client.receive_data(wire[cut:])
        result = actions[-1]
        assert isinstance(result, ReadoutReceived)
        self.assertEqual([d.values for d in result.readout.datasets], [d.values for d in sets])

    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_give_actions_or_typed_errors(self, data: bytes) -> None:
        client = ModeCClient()
        client.start()
        try:
            client.receive_data(data)
        except (FrameError, ProtocolError):
            pass


# A push on a line that carries pushes (a GPRS modem session lent to the pull): the meter's
# identification and readout block written together, on its own schedule.
PUSH_IDENT = b"/FEP5SIM100\r\n"
ANSWER = b"0.0.0(SIM1)\r\n1.8.0(2.000*kWh)\r\n!\r\n"
PUSHED = b"0.0.0(SIM1)\r\n1.8.0(1.000*kWh)\r\n!\r\n"
SELECT = Send(b"\x06050\r\n")


def pushes_client() -> ModeCClient:
    client = ModeCClient("1", pushes=True)
    client.start()
    return client


class PushOnTheLineTests(unittest.TestCase):
    """``pushes=True``: pushes are told from the answer by the order of the exchange."""

    def assertPush(self, action: object, value: str) -> None:
        assert isinstance(action, PushReceived), action
        assert action.readout is not None
        self.assertEqual(action.readout.datasets[1].values[0].value, value)

    def test_a_push_before_the_answer_is_reported_and_gets_no_option_select(self) -> None:
        client = pushes_client()
        (push,) = client.receive_data(PUSH_IDENT + block(PUSHED))
        self.assertPush(push, "1.000")
        self.assertEqual(client.state, State.AWAIT_IDENTIFICATION)
        self.assertEqual(client.receive_data(PUSH_IDENT)[1:], [SELECT])
        (result,) = client.receive_data(block(ANSWER))
        assert isinstance(result, ReadoutReceived)
        self.assertEqual(result.readout.datasets[1].values[0].value, "2.000")

    def test_a_push_and_the_answers_identification_in_one_piece(self) -> None:
        # "unexpected Identification after the readout" before: the push was taken for
        # the answer and the answer's identification came after it.
        client = pushes_client()
        push, ident, select = client.receive_data(PUSH_IDENT + block(PUSHED) + PUSH_IDENT)
        self.assertPush(push, "1.000")
        self.assertIsInstance(ident, IdentificationReceived)
        self.assertEqual(select, SELECT)
        (result,) = client.receive_data(block(ANSWER))
        self.assertIsInstance(result, ReadoutReceived)

    def test_a_push_between_the_identification_and_the_readout(self) -> None:
        # "expected the readout block, got Identification" before.
        client = pushes_client()
        client.receive_data(PUSH_IDENT)
        push, result = client.receive_data(PUSH_IDENT + block(PUSHED) + block(ANSWER))
        self.assertPush(push, "1.000")
        assert isinstance(result, ReadoutReceived)
        self.assertEqual(result.readout.datasets[1].values[0].value, "2.000")

    def test_a_push_after_the_readout_in_the_same_piece(self) -> None:
        client = pushes_client()
        client.receive_data(PUSH_IDENT)
        result, push = client.receive_data(block(ANSWER) + PUSH_IDENT + block(PUSHED))
        self.assertIsInstance(result, ReadoutReceived)
        self.assertPush(push, "1.000")

    def test_a_push_split_before_its_block_is_still_a_push(self) -> None:
        client = pushes_client()
        client.receive_data(PUSH_IDENT)
        self.assertEqual(client.receive_data(PUSH_IDENT), [])
        push, result = client.receive_data(block(PUSHED) + block(ANSWER))
        self.assertPush(push, "1.000")
        self.assertIsInstance(result, ReadoutReceived)

    def test_a_bad_pushed_block_is_reported_not_raised(self) -> None:
        client = pushes_client()
        raw = bytearray(block(PUSHED))
        raw[-1] ^= 0x40
        (push,) = client.receive_data(PUSH_IDENT + bytes(raw))
        assert isinstance(push, PushReceived)
        self.assertIsNone(push.readout)
        self.assertIn("bad BCC", push.problem or "")
        self.assertEqual(client.state, State.AWAIT_IDENTIFICATION)

    def test_without_pushes_an_identification_and_block_together_are_the_answer(self) -> None:
        client = ModeCClient("1")
        client.start()
        actions = client.receive_data(PUSH_IDENT + block(ANSWER))
        self.assertIsInstance(actions[-1], ReadoutReceived)

    def test_a_mode_a_meter_answers_without_option_select_even_with_pushes(self) -> None:
        client = pushes_client()
        actions = client.receive_data(b"/ABC:ident\r\n" + block(ANSWER))
        self.assertIsInstance(actions[-1], ReadoutReceived)

    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_give_actions_or_typed_errors(self, data: bytes) -> None:
        client = pushes_client()
        try:
            client.receive_data(data)
        except (FrameError, ProtocolError):
            pass
