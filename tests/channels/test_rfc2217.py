"""The telnet / RFC 2217 client codec, with bytes alone: a real server's opening, the line
settings and their acknowledgements, refusals, IAC escaping both ways, reads split anywhere
and arbitrary bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.channels import rfc2217
from fep.channels.lines import LineSettings
from fep.channels.rfc2217 import (
    BINARY,
    COM_PORT_OPTION,
    DO,
    DONT,
    ECHO,
    IAC,
    SB,
    SE,
    SGA,
    WILL,
    WONT,
    Acknowledged,
    BadTelnet,
    BrokenSubnegotiation,
    Data,
    Negotiation,
    Notified,
    Ready,
    Received,
    Refused,
    Rfc2217Client,
    Send,
    SettingRefused,
    Subnegotiation,
    TelnetDecoder,
)

# What Debian's ser2net 4.3.11 sends first on its `telnet(rfc2217)` accepter, captured on
# this machine: WILL SGA, DO SGA, WILL ECHO, DONT ECHO, DO BINARY, WILL BINARY,
# DO COM-PORT-OPTION.
SER2NET_OPENING = bytes.fromhex("fffb03fffd03fffb01fffe01fffd00fffb00fffd2c")
# Its NOTIFY-MODEMSTATE (107) with no lines up, sent once COM-PORT-OPTION is agreed.
SER2NET_MODEMSTATE = bytes.fromhex("fffa2c6b00fff0")
# Its acknowledgement of SET-BAUDRATE 9600 (101, 4 bytes network order).
SER2NET_BAUD_9600_ACK = bytes.fromhex("fffa2c6500002580fff0")


def ack(command: int, value: bytes) -> bytes:
    """A server's acknowledgement (code + 100), as RFC 2217 section 2 has it."""
    return rfc2217.com_port(command + rfc2217.SERVER_OFFSET, value)


def sent(actions: list[rfc2217.Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


IEC_300_7E1_ACKS = b"".join((
    ack(1, (300).to_bytes(4, "big")),
    ack(2, b"\x07"),
    ack(3, b"\x03"),
    ack(4, b"\x01"),
    ack(5, b"\x01"),
))


def ready_client(settings: LineSettings | None = None) -> Rfc2217Client:
    client = Rfc2217Client(settings or LineSettings())
    client.start()
    client.receive_data(SER2NET_OPENING)
    actions = client.receive_data(IEC_300_7E1_ACKS)
    assert actions[-1] == Ready(), actions
    return client


class TelnetDecoderTests(unittest.TestCase):
    def test_the_ser2net_opening_is_seven_negotiations(self) -> None:
        events = TelnetDecoder().receive(SER2NET_OPENING)
        self.assertEqual(events, [
            Negotiation(WILL, SGA), Negotiation(DO, SGA), Negotiation(WILL, ECHO),
            Negotiation(DONT, ECHO), Negotiation(DO, BINARY), Negotiation(WILL, BINARY),
            Negotiation(DO, COM_PORT_OPTION),
        ])

    def test_doubled_iac_is_one_data_byte(self) -> None:
        events = TelnetDecoder().receive(b"a\xff\xffb")
        self.assertEqual(events, [Data(b"a\xffb")])

    def test_data_around_a_command_keeps_its_order(self) -> None:
        events = TelnetDecoder().receive(b"ab" + SER2NET_MODEMSTATE + b"cd")
        self.assertEqual(events, [Data(b"ab"), Subnegotiation(COM_PORT_OPTION, b"\x6b\x00"),
                                  Data(b"cd")])

    def test_escaped_iac_inside_a_subnegotiation(self) -> None:
        # A speed of 65535 has two 0xFF bytes: doubled inside SB ... SE.
        wire = ack(1, (65535).to_bytes(4, "big"))
        self.assertIn(b"\xff\xff\xff\xff", wire)
        self.assertEqual(TelnetDecoder().receive(wire),
                         [Subnegotiation(COM_PORT_OPTION, b"\x65\x00\x00\xff\xff")])

    def test_reads_split_at_every_byte_give_the_same_events(self) -> None:
        stream = SER2NET_OPENING + b"x\xff\xffy" + SER2NET_BAUD_9600_ACK + b"\r\n"
        whole = TelnetDecoder()
        whole.binary = True
        expected = whole.receive(stream)
        bytewise = TelnetDecoder()
        bytewise.binary = True
        got: list[rfc2217.TelnetEvent] = []
        for i in range(len(stream)):
            got += bytewise.receive(stream[i : i + 1])
        self.assertEqual(_joined(got), _joined(expected))

    def test_cr_nul_is_cr_until_the_server_sends_binary(self) -> None:
        decoder = TelnetDecoder()
        self.assertEqual(decoder.receive(b"a\r\x00b\r\n"), [Data(b"a\rb\r\n")])
        decoder.binary = True
        self.assertEqual(decoder.receive(b"a\r\x00b"), [Data(b"a\r\x00b")])

    def test_commands_without_option(self) -> None:
        self.assertEqual(TelnetDecoder().receive(bytes((IAC, rfc2217.NOP, IAC, rfc2217.GA))),
                         [rfc2217.Command(rfc2217.NOP), rfc2217.Command(rfc2217.GA)])

    def test_a_subnegotiation_without_iac_se_gives_back_the_data_after_it(self) -> None:
        # NOTIFY-MODEMSTATE (107) has one value byte: what comes after it without IAC SE
        # is the meter's data, not more of the subnegotiation.
        wire = b"ab" + bytes((IAC, SB, COM_PORT_OPTION, 107, 0x30)) + b"/ISk5MT174\r\n"
        decoder = TelnetDecoder()
        decoder.binary = True
        self.assertEqual(decoder.receive(wire), [
            Data(b"ab"),
            BrokenSubnegotiation(COM_PORT_OPTION, b"\x6b\x30", "no IAC SE after 2 bytes"),
            Data(b"/ISk5MT174\r\n"),
        ])
        self.assertEqual(decoder.broken, 1)
        self.assertEqual(decoder.receive(SER2NET_MODEMSTATE + b"ok"),
                         [Subnegotiation(COM_PORT_OPTION, b"\x6b\x00"), Data(b"ok")])
        # The same, however the reads are split.
        bytewise = TelnetDecoder()
        bytewise.binary = True
        got: list[rfc2217.TelnetEvent] = []
        for i in range(len(wire)):
            got += bytewise.receive(wire[i : i + 1])
        self.assertEqual(b"".join(e.data for e in got if isinstance(e, Data)),
                         b"ab/ISk5MT174\r\n")

    def test_each_rfc2217_answer_is_bounded_by_its_commands_length(self) -> None:
        for code, length in ((101, 4), (102, 1), (108, 0), (112, 1), (5, 1)):
            wire = bytes((IAC, SB, COM_PORT_OPTION, code)) + bytes(length) + b"data"
            events = TelnetDecoder().receive(wire)
            self.assertEqual(events[-1], Data(b"data"), code)
            self.assertIsInstance(events[0], BrokenSubnegotiation)
        # A signature has no fixed length: ser2net's is one subnegotiation.
        signature = ack(0, b"ser2net 4.3.11")
        self.assertEqual(TelnetDecoder().receive(signature),
                         [Subnegotiation(COM_PORT_OPTION, b"\x64ser2net 4.3.11")])

    def test_a_subnegotiation_broken_by_a_command_gives_back_the_command_and_the_data(
        self,
    ) -> None:
        decoder = TelnetDecoder()
        events = decoder.receive(bytes((IAC, SB, COM_PORT_OPTION, 101, 0, 0, IAC, WILL, ECHO))
                                 + b"ok")
        self.assertEqual(events, [
            BrokenSubnegotiation(COM_PORT_OPTION, b"\x65\x00\x00", "broken by IAC 251"),
            Negotiation(WILL, ECHO),
            Data(b"ok"),
        ])
        # A doubled IAC past the command's length is a data byte 0xFF.
        events = decoder.receive(bytes((IAC, SB, COM_PORT_OPTION, 107, 0, IAC, IAC)) + b"x")
        self.assertEqual(events[1:], [Data(b"\xffx")])
        self.assertEqual(decoder.broken, 2)

    def test_overlong_subnegotiation_is_given_up_and_what_follows_is_data(self) -> None:
        decoder = TelnetDecoder()
        events = decoder.receive(bytes((IAC, SB, 99)) + b"x" * 600)
        self.assertEqual(events, [
            BrokenSubnegotiation(99, b"x" * rfc2217.MAX_SUBNEGOTIATION,
                                 f"no IAC SE after {rfc2217.MAX_SUBNEGOTIATION} bytes"),
            Data(b"x" * (600 - rfc2217.MAX_SUBNEGOTIATION)),
        ])

    @given(st.binary(max_size=300))
    @settings(max_examples=300)
    def test_arbitrary_bytes_give_events(self, data: bytes) -> None:
        decoder = TelnetDecoder()
        events = decoder.receive(data)
        for event in events:
            self.assertIsInstance(event, Data | Negotiation | Subnegotiation | rfc2217.Command
                                  | BrokenSubnegotiation)
        self.assertEqual(decoder.broken,
                         sum(isinstance(e, BrokenSubnegotiation) for e in events))

    @given(st.binary(max_size=200), st.lists(st.integers(1, 50), max_size=10))
    def test_escaped_data_decodes_to_itself_however_split(
        self, data: bytes, cuts: list[int]
    ) -> None:
        wire = rfc2217.escape(data)
        decoder = TelnetDecoder()
        decoder.binary = True
        got = b""
        at = 0
        for cut in [*cuts, len(wire)]:
            for event in decoder.receive(wire[at : at + cut]):
                assert isinstance(event, Data)
                got += event.data
            at += cut
        got += b"".join(e.data for e in decoder.receive(wire[at:]) if isinstance(e, Data))
        self.assertEqual(got, data)


def _joined(events: list[rfc2217.TelnetEvent]) -> list[rfc2217.TelnetEvent]:
    """Adjacent Data events merged (a split read may cut data in two)."""
    out: list[rfc2217.TelnetEvent] = []
    for event in events:
        if isinstance(event, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(out[-1].data + event.data)
        else:
            out.append(event)
    return out


class NegotiationTests(unittest.TestCase):
    def test_opening_offers_com_port_and_binary(self) -> None:
        opening = Rfc2217Client(LineSettings()).start()
        self.assertEqual(opening, bytes((IAC, WILL, COM_PORT_OPTION, IAC, WILL, BINARY,
                                         IAC, DO, BINARY, IAC, DO, SGA)))

    def test_answers_to_the_ser2net_opening_then_the_line_settings(self) -> None:
        client = Rfc2217Client(LineSettings())
        client.start()
        actions = client.receive_data(SER2NET_OPENING)
        # WILL SGA and DO BINARY/WILL BINARY/DO COM-PORT answer our own requests: no
        # reply. DO SGA is new: we agree. WILL ECHO we refuse. DONT ECHO: already so.
        expected = (
            bytes((IAC, WILL, SGA, IAC, DONT, ECHO))
            # 300 Bd, 7 data bits, even parity, 1 stop bit, no flow control.
            + bytes((IAC, SB, 44, 1, 0, 0, 0x01, 0x2C, IAC, SE))
            + bytes((IAC, SB, 44, 2, 7, IAC, SE))
            + bytes((IAC, SB, 44, 3, 3, IAC, SE))
            + bytes((IAC, SB, 44, 4, 1, IAC, SE))
            + bytes((IAC, SB, 44, 5, 1, IAC, SE))
        )
        self.assertEqual(sent(actions), expected)
        self.assertTrue(client.us(COM_PORT_OPTION))
        self.assertTrue(client.him(BINARY) and client.us(BINARY))
        self.assertFalse(client.him(ECHO))
        self.assertFalse(client.ready)

    def test_ready_once_every_setting_is_acknowledged(self) -> None:
        client = Rfc2217Client(LineSettings())
        client.start()
        client.receive_data(SER2NET_OPENING)
        actions = client.receive_data(IEC_300_7E1_ACKS[:-7])
        self.assertNotIn(Ready(), actions)
        actions = client.receive_data(IEC_300_7E1_ACKS[-7:])
        self.assertEqual(actions, [Acknowledged("flow control", 1), Ready()])
        self.assertEqual(client.acknowledged, {"baudrate": 300, "bytesize": 7, "parity": "E",
                                               "stopbits": 1, "flow control": 1})

    def test_8n1_2400_with_two_stop_bits_and_hardware_flow(self) -> None:
        client = Rfc2217Client(
            LineSettings(baudrate=2400, bytesize=8, parity="N", stopbits=2, rtscts=True)
        )
        client.start()
        wire = sent(client.receive_data(bytes((IAC, DO, COM_PORT_OPTION))))
        self.assertEqual(wire, b"".join((
            bytes((IAC, SB, 44, 1, 0, 0, 0x09, 0x60, IAC, SE)),
            bytes((IAC, SB, 44, 2, 8, IAC, SE)),
            bytes((IAC, SB, 44, 3, 1, IAC, SE)),
            bytes((IAC, SB, 44, 4, 2, IAC, SE)),
            bytes((IAC, SB, 44, 5, 3, IAC, SE)),
        )))

    def test_a_setting_the_server_changes_is_refused(self) -> None:
        client = Rfc2217Client(LineSettings(baudrate=250000))
        client.start()
        client.receive_data(bytes((IAC, DO, COM_PORT_OPTION)))
        actions = client.receive_data(ack(1, (230400).to_bytes(4, "big")))
        self.assertEqual(actions, [SettingRefused("baudrate", 250000, 230400)])
        self.assertFalse(client.ready)

    def test_server_refusing_com_port_is_refused(self) -> None:
        client = Rfc2217Client(LineSettings())
        client.start()
        actions = client.receive_data(bytes((IAC, DONT, COM_PORT_OPTION)))
        self.assertEqual(len([a for a in actions if isinstance(a, Refused)]), 1)
        self.assertFalse(client.us(COM_PORT_OPTION))
        # Saying so again changes nothing.
        self.assertEqual(client.receive_data(bytes((IAC, DONT, COM_PORT_OPTION))), [])

    def test_unknown_options_are_refused(self) -> None:
        client = Rfc2217Client(LineSettings())
        client.start()
        actions = client.receive_data(bytes((IAC, WILL, 24, IAC, DO, 31)))
        self.assertEqual(sent(actions), bytes((IAC, DONT, 24, IAC, WONT, 31)))

    def test_server_stopping_binary_is_acknowledged(self) -> None:
        client = ready_client()
        actions = client.receive_data(bytes((IAC, WONT, BINARY)))
        self.assertEqual(sent(actions), bytes((IAC, DONT, BINARY)))
        self.assertFalse(client.him(BINARY))

    def test_signature_request_is_answered(self) -> None:
        client = ready_client()
        actions = client.receive_data(ack(0, b""))
        self.assertEqual(sent(actions), rfc2217.com_port(0, b"fep"))

    def test_notifications_are_passed_on_not_taken_as_acknowledgements(self) -> None:
        client = ready_client()
        actions = client.receive_data(SER2NET_MODEMSTATE)
        self.assertEqual(actions, [Notified(7, b"\x00")])


class DataAndSpeedTests(unittest.TestCase):
    def test_serial_data_in_and_out_is_escaped(self) -> None:
        client = ready_client()
        self.assertEqual(client.encode(b"\x7e\xff\x01"), b"\x7e\xff\xff\x01")
        self.assertEqual(client.receive_data(b"\x02\xff\xff\x03"), [Received(b"\x02\xff\x03")])

    def test_cr_goes_as_cr_nul_without_binary(self) -> None:
        client = Rfc2217Client(LineSettings())
        self.assertEqual(client.encode(b"/?!\r\n"), b"/?!\r\x00\n")
        client.start()
        client.receive_data(bytes((IAC, DO, BINARY)))
        self.assertEqual(client.encode(b"/?!\r\n"), b"/?!\r\n")

    def test_speed_change_is_acknowledged(self) -> None:
        client = ready_client()
        self.assertEqual(client.set_baudrate(9600), bytes.fromhex("fffa2c0100002580fff0"))
        self.assertEqual(client.receive_data(SER2NET_BAUD_9600_ACK),
                         [Acknowledged("baudrate", 9600)])

    def test_speed_change_refused_after_ready(self) -> None:
        client = ready_client()
        client.set_baudrate(19200)
        self.assertEqual(client.receive_data(SER2NET_BAUD_9600_ACK),
                         [SettingRefused("baudrate", 19200, 9600)])

    def test_data_between_negotiations_is_kept(self) -> None:
        client = Rfc2217Client(LineSettings())
        client.start()
        actions = client.receive_data(b"\xff\xfb\x00abc")
        self.assertEqual(actions, [Received(b"abc")])

    def test_a_broken_notification_is_reported_and_the_meters_data_kept(self) -> None:
        client = ready_client()
        actions = client.receive_data(b"/ISk" + bytes((IAC, SB, COM_PORT_OPTION, 107, 0x30))
                                      + b"5MT174\r\n")
        self.assertEqual(actions, [
            Received(b"/ISk"),
            BadTelnet(f"telnet subnegotiation of option {COM_PORT_OPTION} given up: no IAC "
                      "SE after 2 bytes"),
            Received(b"5MT174\r\n"),
        ])

    @given(st.binary(max_size=300))
    @settings(max_examples=300)
    def test_arbitrary_server_bytes_give_actions(self, data: bytes) -> None:
        client = Rfc2217Client(LineSettings())
        client.start()
        for action in client.receive_data(data):
            self.assertIsInstance(action, Send | Received | Ready | Acknowledged
                                  | SettingRefused | Refused | Notified | BadTelnet)
