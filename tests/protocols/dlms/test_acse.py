"""ACSE (pyasn1 BER): the Green Book AARQ/AARE examples byte-exact, LLS and HLS-GMAC AARQs,
refusals named, InitiateRequest/Response, round-trips and arbitrary bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.dlms import acse
from fep.protocols.dlms.acse import (
    Aare,
    Aarq,
    ApplicationContext,
    Conformance,
    InitiateRequest,
    InitiateResponse,
    Mechanism,
)
from fep.protocols.dlms.errors import AssociationRefused

# DLMS UA Green Book, "Encoding of the xDLMS InitiateRequest / AARQ" example (LN referencing,
# no security, conformance 007E1F, max PDU FFFF) and the AARE that accepts it (max PDU 01F4).
GREEN_BOOK_AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1FFFFF")
GREEN_BOOK_AARE = bytes.fromhex(
    "6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F040000501F01F40007"
)
# The widely published LLS AARQ (password "12345678", as in Gurux's and dlms-cosem's docs).
LLS_AARQ = bytes.fromhex(
    "6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738"
    "BE10040E01000000065F1F0400007E1FFFFF"
)


class PublishedTests(unittest.TestCase):
    def test_green_book_aarq(self) -> None:
        aarq = acse.decode_acse(GREEN_BOOK_AARQ)
        assert isinstance(aarq, Aarq)
        self.assertEqual(aarq.application_context, ApplicationContext.LN)
        self.assertIsNone(aarq.mechanism)
        initiate = InitiateRequest.decode(aarq.user_information or b"")
        self.assertEqual(initiate.max_receive_pdu_size, 0xFFFF)
        self.assertIn(Conformance.GET, initiate.conformance)
        self.assertIn(Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ, initiate.conformance)
        self.assertEqual(acse.encode_aarq(aarq), GREEN_BOOK_AARQ)
        self.assertEqual(initiate.encode(), aarq.user_information)

    def test_green_book_aare(self) -> None:
        aare = acse.decode_acse(GREEN_BOOK_AARE)
        assert isinstance(aare, Aare)
        self.assertEqual((aare.result, aare.diagnostic), (0, 0))
        response = InitiateResponse.decode(aare.user_information or b"")
        self.assertEqual((response.max_receive_pdu_size, response.vaa_name), (500, 7))
        self.assertEqual(acse.encode_aare(aare), GREEN_BOOK_AARE)
        acse.check_aare(aare)

    def test_lls_aarq(self) -> None:
        aarq = acse.decode_acse(LLS_AARQ)
        assert isinstance(aarq, Aarq)
        self.assertEqual((aarq.mechanism, aarq.authentication_value), (Mechanism.LLS, b"12345678"))
        self.assertEqual(acse.encode_aarq(aarq), LLS_AARQ)
        self.assertNotIn("12345678", repr(aarq))

    def test_hls_gmac_aarq_and_aare_with_titles(self) -> None:
        aarq = Aarq(
            ApplicationContext.LN_CIPHERING,
            Mechanism.HLS_GMAC,
            bytes.fromhex("4D4D4D0000000001"),
            b"P6wRJ21F",
            b"\x21\x1f" + bytes(31),
        )
        raw = acse.encode_aarq(aarq)
        # calling-AP-title [6] and the mechanism OID ...02 05
        self.assertIn(bytes.fromhex("A60A04084D4D4D0000000001"), raw)
        self.assertIn(bytes.fromhex("8B0760857405080205"), raw)
        self.assertEqual(acse.decode_acse(raw), aarq)
        aare = Aare(
            ApplicationContext.LN_CIPHERING,
            0,
            "user",
            14,
            bytes.fromhex("4D4D4D0000BC614E"),
            Mechanism.HLS_GMAC,
            b"12345678abcdefgh",
            b"\x28\x00",
        )
        self.assertEqual(acse.decode_acse(acse.encode_aare(aare)), aare)

    def test_refusal_names_the_diagnostic(self) -> None:
        aare = Aare(ApplicationContext.LN, 1, "user", 13)
        with self.assertRaises(AssociationRefused) as caught:
            acse.check_aare(aare, meter="m9")
        self.assertIn("rejected-permanent, authentication-failure", str(caught.exception))
        self.assertEqual((caught.exception.meter, caught.exception.diagnostic), ("m9", 13))

    def test_release(self) -> None:
        self.assertEqual(acse.encode_rlrq(acse.Rlrq(0)).hex(), "6203800100")
        self.assertEqual(acse.decode_acse(bytes.fromhex("6303800100")), acse.Rlre(0))


class PropertyTests(unittest.TestCase):
    @given(
        st.sampled_from(list(ApplicationContext)),
        st.one_of(st.none(), st.sampled_from([m for m in Mechanism if m != Mechanism.LOWEST])),
        st.one_of(st.none(), st.binary(min_size=8, max_size=8)),
        st.one_of(st.none(), st.binary(min_size=1, max_size=64)),
        st.one_of(st.none(), st.binary(max_size=200)),
    )
    def test_aarq_round_trips(self, context, mechanism, title, value, user) -> None:
        aarq = Aarq(context, mechanism, title, value, user)
        self.assertEqual(acse.decode_acse(acse.encode_aarq(aarq)), aarq)

    @given(st.integers(0, 0xFFFFFF), st.integers(0, 0xFFFF), st.integers(0, 255))
    def test_initiate_round_trips(self, conformance: int, size: int, version: int) -> None:
        request = InitiateRequest(Conformance(conformance), size, version)
        self.assertEqual(InitiateRequest.decode(request.encode()), request)
        response = InitiateResponse(Conformance(conformance), size, version)
        self.assertEqual(InitiateResponse.decode(response.encode()), response)

    @settings(max_examples=800)
    @given(st.sampled_from([0x60, 0x61, 0x62, 0x63]), st.binary(max_size=80))
    def test_arbitrary_bytes_give_frame_error(self, tag: int, body: bytes) -> None:
        for decode in (acse.decode_acse, InitiateRequest.decode, InitiateResponse.decode):
            try:
                decode(bytes((tag,)) + body)
            except FrameError:
                pass
