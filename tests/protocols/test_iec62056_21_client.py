"""The sans-IO mode C client: what it sends, when it switches baud, what it reports."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError, ProtocolError
from fep.protocols.iec62056_21.client import (
    IdentificationReceived,
    ModeCClient,
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
