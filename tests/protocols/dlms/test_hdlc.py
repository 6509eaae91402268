"""The DLMS HDLC link (IEC 62056-46): published frames byte-exact, addresses, the frame
decoder's resynchronisation, parameter negotiation and the client/server link machines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError, ProtocolError
from fep.protocols.dlms.hdlc import (
    DEFAULT_PARAMETERS,
    LLC_REQUEST,
    LLC_RESPONSE,
    ApduReceived,
    FrameKind,
    HdlcAddress,
    HdlcClientLink,
    HdlcFrame,
    HdlcFrameDecoder,
    HdlcParameters,
    HdlcServerLink,
    LinkConnected,
    LinkDisconnected,
    LinkEvent,
    LinkRefused,
    LinkState,
    SendFrame,
    decode_frame,
    decode_parameters,
    encode_frame,
    encode_parameters,
    hdlc_fcs,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dlms"


def fixture(name: str) -> bytes:
    """Hex bytes of a fixture file, ``#`` lines (which name the source) left out."""
    lines = (FIXTURES / name).read_text().splitlines()
    return bytes.fromhex(" ".join(line for line in lines if not line.startswith("#")))


CLIENT = HdlcAddress(16)  # public client
SERVER = HdlcAddress(1, 17)  # management logical device 1, physical address 17

# From u9n/dlms-cosem tests/test_hdlc/test_hdlc.py (commit c52e9d44): SNRM public client 16 ->
# server 1/17, its UA (max info 154 both ways, windows 1), the AARQ I-frame and its AARE.
SNRM = bytes.fromhex("7EA00802232193BD647E")
UA = bytes.fromhex("7EA01F21022373E6C781801205019A06019A070400000001080400000001CCA27E")
AARQ_FRAME = bytes.fromhex(
    "7EA02C02232110AF9FE6E600601DA109060760857405080101BE10040E01000000065F1F0400001E1DFFFFC5E47E"
)
AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400001E1DFFFF")
AARE_FRAME = bytes.fromhex(
    "7EA0382102233034E7E6E7006129A109060760857405080101A203020100A305A103020100BE10040E0800"
    "065F1F0400001E1D04C80007B86A7E"
)
AARE = bytes.fromhex(
    "6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F0400001E1D04C80007"
)
# Same file: a UA from server 1 to client 16 without information field (test_fcs), and a
# UA whose source is the 4-byte form of 1/17 with 2-byte parameter values (frame2).
UA_NO_INFO = bytes.fromhex("7EA00721037301407E")
UA_4_BYTE_SOURCE = bytes.fromhex(
    "7EA023210002002373F6C58180140502008006020080070400000001080400000001CE6A7E"
)
# The "classic" SNRM client 16 -> server 1 (1-byte address) as logged by the Gurux DLMS
# DataExchange tool and quoted in many open projects.
SNRM_CLASSIC = bytes.fromhex("7EA0070321930F017E")
# DISC client 16 -> server 1, from UtilitechAS amsreader-firmware KamstrupPullCommunicator.cpp
# (comment above sendDisconnectMessage).
DISC_CLASSIC = bytes.fromhex("7EA00703215303C77E")


# ---------------------------------------------------------------------------
# Checksums, addresses, frames
# ---------------------------------------------------------------------------


class FcsTests(unittest.TestCase):
    def test_crc16_x25_check_value(self) -> None:
        # The catalogued check value of CRC-16/X.25 (a.k.a. CRC-16/IBM-SDLC) for "123456789".
        self.assertEqual(hdlc_fcs(b"123456789"), 0x906E)

    def test_dlms_cosem_vector(self) -> None:
        # u9n/dlms-cosem TestCrc: 03 3F -> 5B EC on the wire (low byte first).
        self.assertEqual(hdlc_fcs(bytes.fromhex("033f")).to_bytes(2, "little"), b"\x5b\xec")


class AddressTests(unittest.TestCase):
    def test_published_encodings(self) -> None:
        # The address table of u9n/dlms-cosem TestHdlcAddress.
        cases = [
            (HdlcAddress(1), "03"),
            (HdlcAddress(16), "21"),
            (HdlcAddress(0b1001010), "95"),
            (HdlcAddress(0b0100101), "4b"),
            (HdlcAddress(1, 17), "0223"),
            (HdlcAddress(1, 17, size=4), "00020023"),
        ]
        for address, wire in cases:
            self.assertEqual(address.encode().hex(), wire)
            self.assertEqual(HdlcAddress.decode(bytes.fromhex(wire)), address)

    def test_smallest_size_that_fits(self) -> None:
        self.assertEqual(HdlcAddress(1, 0x7F).wire_size, 2)
        self.assertEqual(HdlcAddress(1, 0x80).wire_size, 4)
        self.assertEqual(HdlcAddress(0x80, 1).encode().hex(), "02000003")
        self.assertEqual(HdlcAddress(0x3FFF, 0x3FFF).encode().hex(), "fefefeff")

    def test_size_is_kept_but_not_compared(self) -> None:
        decoded = HdlcAddress.decode(bytes.fromhex("00020023"))
        self.assertEqual(decoded.size, 4)
        self.assertEqual(decoded, SERVER)
        self.assertEqual(decoded.encode().hex(), "00020023")

    def test_bad_addresses(self) -> None:
        self.assertRaises(ValueError, HdlcAddress, 0x80)
        self.assertRaises(ValueError, HdlcAddress, 1, 0x4000)
        self.assertRaises(ValueError, HdlcAddress, 1, 0x80, size=2)
        self.assertRaises(ValueError, HdlcAddress, 1, 1, size=1)
        self.assertRaises(ValueError, HdlcAddress, 1, size=3)
        for wire in ("", "02", "030203", "000003", "0000000003", "0101"):
            with self.assertRaises(FrameError) as cm:
                HdlcAddress.decode(bytes.fromhex(wire))
            self.assertEqual(cm.exception.field, "address")

    @given(st.integers(0, 0x3FFF), st.integers(0, 0x3FFF), st.sampled_from([None, 4]))
    def test_server_address_round_trip(self, logical: int, physical: int, size: int | None) -> None:
        address = HdlcAddress(logical, physical, size=size)
        wire = address.encode()
        self.assertIn(len(wire), (2, 4))
        self.assertEqual(HdlcAddress.decode(wire), address)
        self.assertEqual(HdlcAddress.decode(wire).encode(), wire)


class PublishedFrameTests(unittest.TestCase):
    def assertRoundTrip(self, wire: bytes) -> HdlcFrame:
        frame = decode_frame(wire)
        self.assertEqual(encode_frame(frame), wire)
        return frame

    def test_snrm(self) -> None:
        frame = self.assertRoundTrip(SNRM)
        self.assertEqual(frame, HdlcFrame(FrameKind.SNRM, SERVER, CLIENT))
        self.assertEqual(frame.control, 0x93)
        self.assertEqual(frame.destination.size, 2)

    def test_classic_snrm_and_disc(self) -> None:
        self.assertEqual(
            decode_frame(SNRM_CLASSIC), HdlcFrame(FrameKind.SNRM, HdlcAddress(1), CLIENT)
        )
        self.assertEqual(
            decode_frame(DISC_CLASSIC), HdlcFrame(FrameKind.DISC, HdlcAddress(1), CLIENT)
        )
        self.assertEqual(
            encode_frame(HdlcFrame(FrameKind.DISC, HdlcAddress(1), CLIENT)), DISC_CLASSIC
        )

    def test_ua_with_parameters(self) -> None:
        frame = self.assertRoundTrip(UA)
        self.assertEqual(frame.kind, FrameKind.UA)
        self.assertEqual((frame.destination, frame.source), (CLIENT, SERVER))
        self.assertEqual(decode_parameters(frame.information), HdlcParameters(154, 154, 1, 1))
        self.assertEqual(encode_parameters(HdlcParameters(154, 154, 1, 1)), frame.information)

    def test_ua_without_information_means_defaults(self) -> None:
        frame = self.assertRoundTrip(UA_NO_INFO)
        self.assertEqual(frame, HdlcFrame(FrameKind.UA, CLIENT, HdlcAddress(1)))
        self.assertEqual(decode_parameters(frame.information), DEFAULT_PARAMETERS)

    def test_ua_with_4_byte_source_and_2_byte_values(self) -> None:
        frame = self.assertRoundTrip(UA_4_BYTE_SOURCE)
        self.assertEqual(frame.source, SERVER)
        self.assertEqual(frame.source.size, 4)
        self.assertEqual(decode_parameters(frame.information), DEFAULT_PARAMETERS)

    def test_aarq_i_frame(self) -> None:
        frame = self.assertRoundTrip(AARQ_FRAME)
        self.assertEqual(
            frame,
            HdlcFrame(FrameKind.I, SERVER, CLIENT, 0, 0, True, False, LLC_REQUEST + AARQ),
        )

    def test_aare_i_frame(self) -> None:
        frame = self.assertRoundTrip(AARE_FRAME)
        self.assertEqual(
            frame,
            HdlcFrame(FrameKind.I, CLIENT, SERVER, 0, 1, True, False, LLC_RESPONSE + AARE),
        )
        self.assertEqual(frame.control, 0x30)

    def test_segmented_i_frame(self) -> None:
        wire = fixture("hdlc_segmented_i_frame.txt")
        frame = self.assertRoundTrip(wire)
        self.assertEqual(frame.kind, FrameKind.I)
        self.assertTrue(frame.segmented)
        self.assertEqual((frame.send_seq, frame.recv_seq, frame.poll_final), (3, 4, True))
        self.assertEqual((frame.destination, frame.source), (CLIENT, HdlcAddress(1)))
        # The length byte is 7E: it must not be taken for a flag.
        self.assertEqual(wire[2], 0x7E)
        self.assertEqual(len(frame.information), 0x7E - 9)

    def test_ui_push_with_2_byte_source(self) -> None:
        frame = self.assertRoundTrip(fixture("hdlc_ui_push.txt"))
        self.assertEqual(frame.kind, FrameKind.UI)
        self.assertEqual((frame.destination, frame.source), (HdlcAddress(32), HdlcAddress(4, 65)))
        self.assertEqual(frame.information[:4], LLC_RESPONSE + b"\x0f")  # data-notification
        self.assertEqual(len(frame.information), 0x243 - 10)

    def test_kaifa_push_frames(self) -> None:
        for name in ("hdlc_kaifa_push_1.txt", "hdlc_kaifa_push_2.txt"):
            frame = self.assertRoundTrip(fixture(name))
            self.assertEqual(frame.kind, FrameKind.I)
            self.assertEqual((frame.destination, frame.source), (HdlcAddress(0), HdlcAddress(0, 0)))
            self.assertEqual(frame.information[:4], LLC_RESPONSE + b"\x0f")

    def test_control_bytes(self) -> None:
        cases = {
            (FrameKind.I, 3, 5, False): 0xA6,
            (FrameKind.RR, 0, 2, True): 0x51,
            (FrameKind.RNR, 0, 7, True): 0xF5,
            (FrameKind.SNRM, 0, 0, True): 0x93,
            (FrameKind.DISC, 0, 0, True): 0x53,
            (FrameKind.UA, 0, 0, True): 0x73,
            (FrameKind.DM, 0, 0, True): 0x1F,
            (FrameKind.FRMR, 0, 0, True): 0x97,
            (FrameKind.UI, 0, 0, False): 0x03,
        }
        for (kind, ns, nr, pf), control in cases.items():
            frame = HdlcFrame(kind, SERVER, CLIENT, ns, nr, pf)
            self.assertEqual(frame.control, control, kind)
            self.assertEqual(decode_frame(encode_frame(frame)), frame)

    def test_bad_frames_refused_at_encode(self) -> None:
        self.assertRaises(ValueError, HdlcFrame, FrameKind.RR, SERVER, CLIENT, 1)
        self.assertRaises(ValueError, HdlcFrame, FrameKind.UA, SERVER, CLIENT, 0, 1)
        self.assertRaises(ValueError, HdlcFrame, FrameKind.I, SERVER, CLIENT, 8)
        too_long = HdlcFrame(FrameKind.I, SERVER, CLIENT, information=bytes(2040))
        self.assertRaises(ValueError, encode_frame, too_long)


# ---------------------------------------------------------------------------
# The frame decoder
# ---------------------------------------------------------------------------


def drain(decoder: HdlcFrameDecoder, data: bytes) -> tuple[list[HdlcFrame], list[FrameError]]:
    frames: list[HdlcFrame] = []
    errors: list[FrameError] = []
    while True:
        try:
            got = decoder.receive(data)
        except FrameError as error:
            errors.append(error)
            data = b""
            continue
        data = b""
        if not got:
            return frames, errors
        frames.extend(got)


class DecoderTests(unittest.TestCase):
    def test_byte_by_byte(self) -> None:
        decoder = HdlcFrameDecoder()
        out = []
        for byte in AARE_FRAME:
            out.extend(decoder.receive(bytes([byte])))
        self.assertEqual(out, [decode_frame(AARE_FRAME)])

    def test_shared_flag_between_frames(self) -> None:
        decoder = HdlcFrameDecoder()
        data = SNRM[:-1] + UA[:-1] + AARQ_FRAME
        frames = decoder.receive(data)
        self.assertEqual([f.kind for f in frames], [FrameKind.SNRM, FrameKind.UA, FrameKind.I])
        self.assertEqual(decoder.skipped, 0)

    def test_idle_flags_are_not_garbage(self) -> None:
        decoder = HdlcFrameDecoder()
        frames = decoder.receive(b"\x7e\x7e\x7e" + SNRM + b"\x7e\x7e" + UA)
        self.assertEqual(len(frames), 2)
        self.assertEqual(decoder.skipped, 0)

    def test_garbage_before_and_between_frames_is_counted(self) -> None:
        decoder = HdlcFrameDecoder()
        garbage = b"\x00\x11\xa0\x22"
        frames = decoder.receive(garbage + SNRM + b"\x7e\x13\x37" + UA)
        self.assertEqual([f.kind for f in frames], [FrameKind.SNRM, FrameKind.UA])
        self.assertEqual(decoder.skipped, len(garbage) + 2)

    def test_flag_followed_by_implausible_header_is_passed_over(self) -> None:
        # 7E A0 03: a length under the minimum frame; 7E 50: not format type 3.
        decoder = HdlcFrameDecoder()
        frames, errors = drain(decoder, b"\x7e\xa0\x03\x7e\x50" + SNRM)
        self.assertEqual((len(frames), errors), (1, []))

    def test_bad_fcs(self) -> None:
        broken = bytearray(AARQ_FRAME)
        broken[-3] ^= 0x01
        decoder = HdlcFrameDecoder()
        frames, errors = drain(decoder, bytes(broken) + SNRM)
        self.assertEqual([e.field for e in errors], ["FCS"])
        self.assertEqual(errors[0].offset, len(AARQ_FRAME) - 3)
        self.assertEqual(frames, [decode_frame(SNRM)])

    def test_bad_fcs_of_a_frame_without_information(self) -> None:
        broken = bytearray(SNRM)
        broken[6] ^= 0xFF
        frames, errors = drain(HdlcFrameDecoder(), bytes(broken) + UA)
        self.assertEqual([e.field for e in errors], ["FCS"])
        self.assertEqual(frames, [decode_frame(UA)])

    def test_bad_hcs(self) -> None:
        broken = bytearray(AARE_FRAME)
        broken[7] ^= 0x40  # HCS low byte
        frames, errors = drain(HdlcFrameDecoder(), bytes(broken) + UA)
        self.assertEqual([e.field for e in errors], ["HCS"])
        self.assertEqual(frames, [decode_frame(UA)])

    def test_corrupt_length_found_by_hcs(self) -> None:
        broken = bytearray(AARE_FRAME)
        broken[2] = 0x30  # length shortened
        frames, errors = drain(HdlcFrameDecoder(), bytes(broken) + UA)
        self.assertEqual([e.field for e in errors], ["HCS"])
        self.assertEqual(frames, [decode_frame(UA)])

    def test_truncated_frame_waits_for_more(self) -> None:
        decoder = HdlcFrameDecoder()
        self.assertEqual(decoder.receive(AARE_FRAME[:-4]), [])
        self.assertEqual(decoder.receive(AARE_FRAME[-4:]), [decode_frame(AARE_FRAME)])

    def test_frame_cut_short_by_the_next_frames(self) -> None:
        # A frame that lost its tail: once its announced length is in, the missing closing
        # flag gives an error and the frames inside it are found again.
        decoder = HdlcFrameDecoder()
        frames, errors = drain(decoder, AARE_FRAME[:20] + SNRM * 5)
        self.assertEqual(errors[0].field, "flag")
        self.assertEqual(frames, [decode_frame(SNRM)] * 5)

    def test_unknown_control_byte(self) -> None:
        body = bytes.fromhex("a007") + b"\x03\x21" + b"\x19"  # REJ, not used by 62056-46
        wire = b"\x7e" + body + hdlc_fcs(body).to_bytes(2, "little") + b"\x7e"
        frames, errors = drain(HdlcFrameDecoder(), wire + SNRM)
        self.assertEqual([e.field for e in errors], ["control"])
        self.assertEqual(frames, [decode_frame(SNRM)])

    def test_frames_before_an_error_come_first(self) -> None:
        decoder = HdlcFrameDecoder()
        broken = bytearray(UA)
        broken[-2] ^= 1
        self.assertEqual(decoder.receive(SNRM + bytes(broken)), [decode_frame(SNRM)])
        with self.assertRaises(FrameError):
            decoder.receive(b"")

    def test_decode_frame_wants_exactly_one(self) -> None:
        self.assertRaises(FrameError, decode_frame, SNRM + UA)
        self.assertRaises(FrameError, decode_frame, SNRM[:-1])
        self.assertRaises(FrameError, decode_frame, b"\x01" + SNRM)


# ---------------------------------------------------------------------------
# Hypothesis: codecs
# ---------------------------------------------------------------------------

client_addresses = st.builds(HdlcAddress, st.integers(0, 0x7F))
server_addresses = st.one_of(
    st.builds(HdlcAddress, st.integers(0, 0x7F)),
    st.builds(HdlcAddress, st.integers(0, 0x3FFF), st.integers(0, 0x3FFF)),
    st.builds(
        lambda logical, physical: HdlcAddress(logical, physical, size=4),
        st.integers(0, 0x7F),
        st.integers(0, 0x7F),
    ),
)


@st.composite
def frames(
    draw: st.DrawFn,
    destinations: st.SearchStrategy[HdlcAddress] = server_addresses,
    sources: st.SearchStrategy[HdlcAddress] = server_addresses,
) -> HdlcFrame:
    kind = draw(st.sampled_from(FrameKind))
    numbered = kind in (FrameKind.I, FrameKind.RR, FrameKind.RNR)
    return HdlcFrame(
        kind,
        draw(destinations),
        draw(sources),
        draw(st.integers(0, 7)) if kind is FrameKind.I else 0,
        draw(st.integers(0, 7)) if numbered else 0,
        draw(st.booleans()),
        draw(st.booleans()),
        draw(st.binary(max_size=300)),
    )


parameters = st.builds(
    HdlcParameters,
    st.integers(1, 2030),
    st.integers(1, 2030),
    st.integers(1, 7),
    st.integers(1, 7),
)


class CodecPropertyTests(unittest.TestCase):
    @given(frames())
    def test_frame_round_trip(self, frame: HdlcFrame) -> None:
        wire = encode_frame(frame)
        decoded = decode_frame(wire)
        self.assertEqual(decoded, frame)
        self.assertEqual(encode_frame(decoded), wire)

    @given(st.lists(frames(), max_size=5), st.lists(st.binary(max_size=20), max_size=6))
    def test_frames_survive_garbage_between_them(
        self, sent: list[HdlcFrame], garbage: list[bytes]
    ) -> None:
        # Garbage without flags never hides a frame. Right after a closing flag it may pose
        # as a frame header; that costs an error, never a frame.
        pieces = [g.replace(b"\x7e", b"") for g in garbage] + [b""] * len(sent)
        stream = b"".join(pieces[i] + encode_frame(f) for i, f in enumerate(sent))
        decoder = HdlcFrameDecoder()
        got, errors = drain(decoder, stream)
        self.assertEqual(got, sent)
        self.assertLessEqual({e.field for e in errors}, {"HCS", "FCS", "flag", "control"})
        if not any(garbage):
            self.assertEqual(errors, [])

    @given(st.binary(max_size=600))
    def test_random_bytes_give_frames_or_frame_errors(self, data: bytes) -> None:
        decoder = HdlcFrameDecoder()
        got, _ = drain(decoder, data)
        for frame in got:
            self.assertIsInstance(frame, HdlcFrame)

    @given(frames(), st.integers(0, 10_000), st.integers(1, 255))
    def test_any_corruption_is_an_error_or_a_frame(
        self, frame: HdlcFrame, at: int, xor: int
    ) -> None:
        wire = bytearray(encode_frame(frame))
        wire[at % len(wire)] ^= xor
        got, _ = drain(HdlcFrameDecoder(), bytes(wire) + SNRM)
        # The damaged frame never passes as good (the CRC catches every 1-byte error) and
        # the frame after it is still found.
        self.assertEqual(got[-1:], [decode_frame(SNRM)])
        self.assertNotIn(frame, got[:-1])

    @given(parameters)
    def test_parameters_round_trip(self, params: HdlcParameters) -> None:
        self.assertEqual(decode_parameters(encode_parameters(params)), params)

    @given(st.binary(max_size=40))
    def test_random_parameter_fields(self, data: bytes) -> None:
        try:
            params = decode_parameters(data)
        except FrameError as error:
            self.assertEqual(error.field, "parameters")
        else:
            self.assertIsInstance(params, HdlcParameters)


class ParameterTests(unittest.TestCase):
    def test_missing_parameters_are_defaults_and_large_ones_clamped(self) -> None:
        info = bytes.fromhex("81800a05020800080400000009")
        self.assertEqual(decode_parameters(info), HdlcParameters(2030, 128, 1, 7))

    def test_unknown_parameters_and_groups_are_skipped(self) -> None:
        info = bytes.fromhex("8180060901ff060140f0020102")
        self.assertEqual(decode_parameters(info), HdlcParameters(128, 64, 1, 1))

    def test_malformed_fields(self) -> None:
        for hex_ in ("82800305 0180", "8180", "818005050180", "818003050500", "818003050100"):
            with self.assertRaises(FrameError):
                decode_parameters(bytes.fromhex(hex_.replace(" ", "")))

    def test_negotiation_takes_the_smaller_of_each(self) -> None:
        client = HdlcParameters(max_info_tx=64, max_info_rx=512, window_tx=1, window_rx=7)
        server = HdlcParameters(max_info_tx=256, max_info_rx=128, window_tx=3, window_rx=1)
        self.assertEqual(client.negotiate(server), HdlcParameters(64, 256, 1, 3))
        self.assertEqual(server.negotiate(client), HdlcParameters(256, 64, 3, 1))
        self.assertEqual(client.negotiate(server).mirrored, server.negotiate(client))


# ---------------------------------------------------------------------------
# Links
# ---------------------------------------------------------------------------


class Wire:
    """Carries bytes between a client and a server link until both are quiet, keeping the
    frames that crossed and the other events of each side."""

    def __init__(self, client: HdlcClientLink, server: HdlcServerLink) -> None:
        self.client = client
        self.server = server
        self.crossed: list[tuple[str, HdlcFrame]] = []
        self.client_events: list[LinkEvent] = []
        self.server_events: list[LinkEvent] = []

    def run(self, to_server: Sequence[bytes] = (), to_client: Sequence[bytes] = ()) -> None:
        queue = [("server", data) for data in to_server] + [("client", d) for d in to_client]
        while queue:
            side, data = queue.pop(0)
            self.crossed.append((side, decode_frame(data)))
            link = self.server if side == "server" else self.client
            other = "client" if side == "server" else "server"
            events = self.server_events if side == "server" else self.client_events
            for event in link.receive_data(data):
                if isinstance(event, SendFrame):
                    queue.append((other, event.data))
                else:
                    events.append(event)

    def kinds(self, side: str) -> list[FrameKind]:
        return [frame.kind for to, frame in self.crossed if to == side]


def connected(
    client_params: HdlcParameters = DEFAULT_PARAMETERS,
    server_params: HdlcParameters = DEFAULT_PARAMETERS,
) -> Wire:
    wire = Wire(
        HdlcClientLink(CLIENT, SERVER, client_params), HdlcServerLink(SERVER, server_params)
    )
    wire.run([wire.client.connect()])
    assert wire.client.state is LinkState.CONNECTED, wire.client_events
    wire.crossed.clear()
    wire.client_events.clear()
    wire.server_events.clear()
    return wire


class PublishedExchangeTests(unittest.TestCase):
    """The client and server links produce the published frames byte for byte."""

    def test_client_snrm_ua_aarq_aare(self) -> None:
        link = HdlcClientLink(CLIENT, SERVER)
        self.assertEqual(link.connect(), SNRM)
        self.assertEqual(link.receive_data(UA), [LinkConnected(DEFAULT_PARAMETERS)])
        self.assertEqual(link.send(AARQ), [AARQ_FRAME])
        self.assertEqual(link.receive_data(AARE_FRAME), [ApduReceived(AARE)])

    def test_server_answers_like_the_published_meter(self) -> None:
        # The published meter states its own 154 bytes in the UA; ours answers with the
        # negotiated values (not more than the client's defaults), then the same I-frames.
        link = HdlcServerLink(SERVER, HdlcParameters(154, 154, 1, 1))
        ua, connected_event = link.receive_data(SNRM)
        assert isinstance(ua, SendFrame)
        self.assertEqual(decode_frame(ua.data).information, encode_parameters(DEFAULT_PARAMETERS))
        self.assertEqual(connected_event, LinkConnected(DEFAULT_PARAMETERS))
        self.assertEqual(link.receive_data(AARQ_FRAME), [ApduReceived(AARQ)])
        self.assertEqual(link.send(AARE), [AARE_FRAME])

    def test_classic_addresses(self) -> None:
        link = HdlcClientLink(CLIENT, HdlcAddress(1))
        self.assertEqual(link.connect(), SNRM_CLASSIC)
        self.assertEqual(link.receive_data(UA_NO_INFO), [LinkConnected(DEFAULT_PARAMETERS)])
        self.assertEqual(link.disconnect(), DISC_CLASSIC)

    def test_ui_push_is_delivered(self) -> None:
        link = HdlcClientLink(HdlcAddress(32), HdlcAddress(4, 65))
        (event,) = link.receive_data(fixture("hdlc_ui_push.txt"))
        assert isinstance(event, ApduReceived)
        self.assertEqual(event.apdu[:1], b"\x0f")


class LinkTests(unittest.TestCase):
    def test_negotiated_parameters_seen_from_each_side(self) -> None:
        wire = Wire(
            HdlcClientLink(CLIENT, SERVER, HdlcParameters(64, 32, 1, 1)),
            HdlcServerLink(SERVER, HdlcParameters(128, 128, 1, 1)),
        )
        snrm = wire.client.connect()
        self.assertEqual(decode_parameters(decode_frame(snrm).information), HdlcParameters(64, 32))
        wire.run([snrm])
        self.assertEqual(wire.client_events, [LinkConnected(HdlcParameters(64, 32, 1, 1))])
        self.assertEqual(wire.server_events, [LinkConnected(HdlcParameters(32, 64, 1, 1))])
        (ua,) = [f for to, f in wire.crossed if to == "client"]
        self.assertEqual(decode_parameters(ua.information), HdlcParameters(32, 64, 1, 1))

    def test_segmented_request_and_response_with_rr(self) -> None:
        small = HdlcParameters(32, 32, 1, 1)
        wire = connected(small, small)
        request = bytes(range(250)) * 2
        response = bytes(reversed(request))
        wire.run(wire.client.send(request))
        # 503 bytes with the LLC header: 16 I-frames of at most 32 bytes, an RR after each
        # segmented one.
        self.assertEqual(wire.kinds("server"), [FrameKind.I] * 16)
        self.assertEqual(wire.kinds("client"), [FrameKind.RR] * 15)
        self.assertTrue(all(len(f.information) <= 32 for _, f in wire.crossed))
        self.assertEqual(wire.server_events, [ApduReceived(request)])
        wire.crossed.clear()
        first = wire.server.send(response)
        self.assertEqual(len(first), 1)  # window 1: the rest after the client's RRs
        wire.run(to_client=first)
        self.assertEqual(wire.kinds("client"), [FrameKind.I] * 16)
        self.assertEqual(wire.kinds("server"), [FrameKind.RR] * 15)
        self.assertEqual(wire.client_events, [ApduReceived(response)])
        sent = [f for to, f in wire.crossed if to == "client"]
        self.assertEqual([f.send_seq for f in sent], [i % 8 for i in range(16)])
        self.assertEqual([f.segmented for f in sent], [True] * 15 + [False])

    def test_several_exchanges_keep_sequence_numbers(self) -> None:
        wire = connected()
        for n in range(20):
            wire.run(wire.client.send(b"req%d" % n))
            wire.run(to_client=wire.server.send(b"resp%d" % n))
        self.assertEqual(
            [e.apdu for e in wire.client_events if isinstance(e, ApduReceived)],
            [b"resp%d" % n for n in range(20)],
        )
        self.assertEqual(wire.client.frame_errors + wire.server.frame_errors, 0)

    def test_window_of_three(self) -> None:
        params = HdlcParameters(16, 16, 3, 3)
        wire = connected(params, params)
        burst = wire.client.send(bytes(100))
        self.assertEqual([decode_frame(f).poll_final for f in burst], [False, False, True])
        wire.run(burst)
        self.assertEqual(wire.server_events, [ApduReceived(bytes(100))])
        # 103 bytes in 7 segments: RRs only at the ends of windows (after 3 and 6).
        self.assertEqual(wire.kinds("client"), [FrameKind.RR] * 2)
        wire.run(to_client=wire.server.send(bytes(range(100))))
        self.assertEqual(wire.client_events, [ApduReceived(bytes(range(100)))])

    def test_disconnect(self) -> None:
        wire = connected()
        wire.run([wire.client.disconnect()])
        self.assertEqual(wire.kinds("client"), [FrameKind.UA])
        self.assertEqual(wire.client_events, [LinkDisconnected("disconnected")])
        self.assertEqual(wire.server_events, [LinkDisconnected("disconnected by the client")])
        self.assertIs(wire.server.state, LinkState.DISCONNECTED)
        # A second DISC finds the server disconnected: DM.
        wire.client_events.clear()
        wire.run([wire.client.disconnect()])
        self.assertEqual(wire.kinds("client")[-1], FrameKind.DM)
        self.assertIsInstance(wire.client_events[0], LinkDisconnected)
        self.assertIn("DM", wire.client_events[0].reason)  # type: ignore[union-attr]

    def test_dm_to_snrm_is_refused(self) -> None:
        link = HdlcClientLink(CLIENT, SERVER)
        link.connect()
        dm = encode_frame(HdlcFrame(FrameKind.DM, CLIENT, SERVER))
        (event,) = link.receive_data(dm)
        self.assertIsInstance(event, LinkRefused)
        self.assertIs(link.state, LinkState.DISCONNECTED)

    def test_frmr_is_refused(self) -> None:
        wire = connected()
        frmr = encode_frame(HdlcFrame(FrameKind.FRMR, CLIENT, SERVER, information=b"\x10"))
        (event,) = wire.client.receive_data(frmr)
        assert isinstance(event, LinkRefused)
        self.assertIn("FRMR", event.reason)

    def test_dm_while_connected_disconnects(self) -> None:
        wire = connected()
        (event,) = wire.client.receive_data(encode_frame(HdlcFrame(FrameKind.DM, CLIENT, SERVER)))
        self.assertIsInstance(event, LinkDisconnected)

    def test_i_frame_to_a_disconnected_server_gets_dm(self) -> None:
        server = HdlcServerLink(SERVER)
        (event,) = server.receive_data(AARQ_FRAME)
        assert isinstance(event, SendFrame)
        self.assertEqual(decode_frame(event.data), HdlcFrame(FrameKind.DM, CLIENT, SERVER))

    def test_frames_for_others_are_ignored(self) -> None:
        client = HdlcClientLink(CLIENT, SERVER)
        client.connect()
        other_server = encode_frame(HdlcFrame(FrameKind.UA, CLIENT, HdlcAddress(1, 18)))
        other_client = encode_frame(HdlcFrame(FrameKind.UA, HdlcAddress(17), SERVER))
        self.assertEqual(client.receive_data(other_server + other_client), [])
        self.assertEqual(client.ignored, 2)
        server = HdlcServerLink(HdlcAddress(1, 18))
        self.assertEqual(server.receive_data(SNRM), [])
        self.assertEqual(server.ignored, 1)
        # Our own echo on a half-duplex bus is not for us either.
        self.assertEqual(client.receive_data(client.timeout()[0]), [])

    def test_bad_snrm_parameters_get_frmr(self) -> None:
        snrm = encode_frame(HdlcFrame(FrameKind.SNRM, SERVER, CLIENT, information=b"\x81\x80"))
        server = HdlcServerLink(SERVER)
        (event,) = server.receive_data(snrm)
        assert isinstance(event, SendFrame)
        self.assertEqual(decode_frame(event.data).kind, FrameKind.FRMR)
        self.assertIs(server.state, LinkState.DISCONNECTED)
        self.assertEqual(server.frame_errors, 1)

    def test_missing_llc_header(self) -> None:
        link = HdlcClientLink(CLIENT, SERVER)
        link.connect()
        link.receive_data(UA)
        link.send(AARQ)
        bare = encode_frame(HdlcFrame(FrameKind.I, CLIENT, SERVER, 0, 1, information=AARE))
        with self.assertRaises(FrameError) as cm:
            link.receive_data(bare)
        self.assertEqual(cm.exception.field, "LLC")

    def test_misuse_is_a_protocol_error(self) -> None:
        link = HdlcClientLink(CLIENT, SERVER)
        self.assertRaises(ProtocolError, link.send, b"x")
        link.connect()
        self.assertRaises(ProtocolError, link.connect)
        self.assertRaises(ProtocolError, HdlcServerLink(SERVER).send, b"x")
        self.assertRaises(ValueError, HdlcClientLink, SERVER, SERVER)


class RecoveryTests(unittest.TestCase):
    """Lost, repeated and garbled frames cost a retransmission, never a wrong APDU."""

    def test_lost_ua_snrm_sent_again(self) -> None:
        wire = Wire(HdlcClientLink(CLIENT, SERVER), HdlcServerLink(SERVER))
        wire.server.receive_data(wire.client.connect())  # the UA is lost
        (again,) = wire.client.timeout()
        self.assertEqual(decode_frame(again).kind, FrameKind.SNRM)
        wire.run([again])
        self.assertIs(wire.client.state, LinkState.CONNECTED)

    def test_lost_response_repeated_on_timeout(self) -> None:
        wire = connected()
        wire.run(wire.client.send(b"\xc0\x01"))
        lost = wire.server.send(b"\xc4\x01")
        self.assertEqual(len(lost), 1)
        # The client times out and repeats its request; the server repeats its answer.
        wire.run(wire.client.timeout())
        self.assertEqual(wire.server_events, [ApduReceived(b"\xc0\x01")])
        self.assertEqual(wire.client_events, [ApduReceived(b"\xc4\x01")])
        self.assertEqual(wire.kinds("client"), [FrameKind.I])

    def test_duplicated_response_delivered_once(self) -> None:
        wire = connected()
        wire.run(wire.client.send(b"\xc0\x01"))
        wire.crossed.clear()
        (answer,) = wire.server.send(b"\xc4\x01")
        wire.run(to_client=[answer, answer])
        self.assertEqual(wire.client_events, [ApduReceived(b"\xc4\x01")])
        # The repeat was answered with an RR re-request, which the server answers with RR.
        self.assertEqual(wire.kinds("server"), [FrameKind.RR])

    def test_lost_segment_and_lost_rr(self) -> None:
        small = HdlcParameters(32, 32, 1, 1)
        wire = connected(small, small)
        wire.run(wire.client.send(b"\xc0\x01"))
        first = wire.server.send(bytes(80))  # 83 bytes: 3 segments
        (rr,) = wire.client.receive_data(first[0])
        assert isinstance(rr, SendFrame)
        # The RR is lost: the client polls again on timeout and gets segment 2.
        (poll,) = wire.client.timeout()
        self.assertEqual(decode_frame(poll), decode_frame(rr.data))
        (segment2,) = wire.server.receive_data(poll)
        assert isinstance(segment2, SendFrame)
        # Segment 2 is lost: the next poll asks for it again (go-back-N).
        (poll2,) = wire.client.timeout()
        wire.run([poll2])
        self.assertEqual(wire.client_events, [ApduReceived(bytes(80))])

    def test_lost_request_segment_sent_again(self) -> None:
        small = HdlcParameters(32, 32, 1, 1)
        wire = connected(small, small)
        (first,) = wire.client.send(bytes(40))  # 2 segments; the first is lost
        again = wire.client.timeout()
        self.assertEqual(again, [first])
        wire.run(again)
        self.assertEqual(wire.server_events, [ApduReceived(bytes(40))])

    def test_garbled_frame_raises_and_link_goes_on(self) -> None:
        wire = connected()
        wire.run(wire.client.send(b"\xc0\x01"))
        (answer,) = wire.server.send(b"\xc4\x01")
        broken = bytearray(answer)
        broken[-3] ^= 0x20
        with self.assertRaises(FrameError) as cm:
            wire.client.receive_data(bytes(broken))
        self.assertEqual(cm.exception.field, "FCS")
        self.assertEqual(wire.client.frame_errors, 1)
        self.assertEqual(wire.client.receive_data(answer), [ApduReceived(b"\xc4\x01")])

    def test_garbage_and_error_next_to_a_good_frame_in_one_call(self) -> None:
        wire = connected()
        wire.run(wire.client.send(b"\xc0\x01"))
        (answer,) = wire.server.send(b"\xc4\x01")
        broken = bytearray(answer)
        broken[-2] ^= 0x01
        events = wire.client.receive_data(b"\x01\x02" + bytes(broken) + answer)
        self.assertEqual(events, [ApduReceived(b"\xc4\x01")])
        self.assertEqual(wire.client.frame_errors, 1)
        self.assertEqual(wire.client.skipped, 2)

    def test_impossible_n_r_is_dropped(self) -> None:
        wire = connected()
        rr = encode_frame(HdlcFrame(FrameKind.RR, CLIENT, SERVER, 0, 5))
        with self.assertRaises(FrameError) as cm:
            wire.client.receive_data(rr)
        self.assertEqual(cm.exception.field, "N(R)")

    def test_new_snrm_resets_a_connected_server(self) -> None:
        wire = connected()
        events = wire.server.receive_data(SNRM)
        self.assertIsInstance(events[0], SendFrame)
        self.assertEqual(events[1], LinkDisconnected("link reset by a new SNRM"))
        self.assertIsInstance(events[2], LinkConnected)


class LinkPropertyTests(unittest.TestCase):
    @given(st.binary(max_size=400))
    def test_random_bytes_into_links(self, data: bytes) -> None:
        for link in (connected().client, connected().server, HdlcClientLink(CLIENT, SERVER)):
            try:
                events = link.receive_data(data)
            except FrameError:
                continue
            self.assertIsInstance(events, list)

    @settings(max_examples=60)
    @given(
        st.lists(frames(st.just(CLIENT), st.just(SERVER)), max_size=12),
        st.lists(frames(st.just(SERVER), st.just(CLIENT)), max_size=12),
    )
    def test_arbitrary_frames_into_connected_links(
        self, to_client: list[HdlcFrame], to_server: list[HdlcFrame]
    ) -> None:
        # Any sequence of well-formed frames from the right peer: events or FrameError only,
        # and the link never delivers an APDU without its LLC header.
        wire = connected()
        wire.client.send(b"\xc0\x01\x00")
        for link, sent in ((wire.client, to_client), (wire.server, to_server)):
            for frame in sent:
                try:
                    events = link.receive_data(encode_frame(frame))
                except FrameError:
                    continue
                for event in events:
                    self.assertIsInstance(
                        event,
                        ApduReceived | SendFrame | LinkConnected | LinkDisconnected | LinkRefused,
                    )
                    if isinstance(event, SendFrame):
                        decode_frame(event.data)


class _CountingFrameDecoder(HdlcFrameDecoder):
    """Counts the frame openings looked at in Python."""

    looked_at = 0

    def _frame_at_head(self) -> HdlcFrame | None:
        self.looked_at += 1
        return super()._frame_at_head()


class JunkTests(unittest.TestCase):
    """Issue 14: junk and idle flags are skipped at C speed (a search for a flag followed by
    a type 3 format byte), not one Python step per byte or per flag."""

    def test_twenty_megabytes_of_junk_cost_few_python_steps(self) -> None:
        import random

        size = 20 * 1024 * 1024
        # Random bytes, then 4 KiB without flags to close whatever junk frame stays open.
        junk = random.Random(14).randbytes(size - 4096) + b"\x00" * 4096
        decoder = _CountingFrameDecoder()
        errors = 0
        for start in range(0, len(junk), 65536):
            _, errs = drain(decoder, junk[start : start + 65536])
            errors += len(errs)
        frames, _ = drain(decoder, SNRM)
        self.assertEqual([f.kind for f in frames][-1:], [FrameKind.SNRM])
        # A flag comes once in 256 random bytes, "7E Ax" once in 4096.
        self.assertLess(decoder.looked_at, size // 2000)
        self.assertLess(errors, size // 2000)

    def test_flags_and_format_bytes_without_addresses_cost_no_python_step(self) -> None:
        # "7E A0" again and again: flag and format byte, but never two addresses.
        decoder = _CountingFrameDecoder()
        frames, _ = drain(decoder, b"\x7e\xa0" * (1 << 19) + SNRM)
        self.assertEqual([f.kind for f in frames], [FrameKind.SNRM])
        self.assertLessEqual(decoder.looked_at, 2)

    def test_a_megabyte_of_idle_flags_is_one_search(self) -> None:
        decoder = _CountingFrameDecoder()
        frames, errors = drain(decoder, b"\x7e" * (1 << 20) + SNRM)
        self.assertEqual([f.kind for f in frames], [FrameKind.SNRM])
        self.assertEqual(errors, [])
        self.assertEqual(decoder.skipped, 0)
        self.assertLessEqual(decoder.looked_at, 2)


class ReassemblyCeilingTests(unittest.TestCase):
    """Issue 14: a segmented APDU cannot grow past ``max_apdu``; the parts are dropped."""

    def segments(self, kind: FrameKind, count: int, send_seq: int = 0) -> list[bytes]:
        frames = []
        for n in range(count):
            frames.append(encode_frame(HdlcFrame(
                kind, CLIENT, SERVER,
                send_seq=(send_seq + n) % 8 if kind is FrameKind.I else 0,
                poll_final=False, segmented=True, information=bytes(100),
            )))
        return frames

    def test_segmented_ui_frames_past_max_apdu_are_a_frame_error(self) -> None:
        link = HdlcClientLink(CLIENT, SERVER, max_apdu=250)
        link.connect()
        link.receive_data(UA_4_BYTE_SOURCE)
        frames = self.segments(FrameKind.UI, 3)
        self.assertEqual(link.receive_data(frames[0] + frames[1]), [])
        with self.assertRaises(FrameError) as caught:
            link.receive_data(frames[2])
        self.assertEqual(caught.exception.field, "information")
        self.assertEqual(link.frame_errors, 1)

    def test_segmented_i_frames_past_max_apdu_are_a_frame_error(self) -> None:
        link = HdlcClientLink(CLIENT, SERVER, max_apdu=250)
        link.connect()
        link.receive_data(UA_4_BYTE_SOURCE)
        frames = self.segments(FrameKind.I, 3)
        self.assertEqual(link.receive_data(frames[0] + frames[1]), [])
        with self.assertRaises(FrameError):
            link.receive_data(frames[2])
