"""Security suite 0: the Green Book AES-GCM example byte-exact, ciphering round-trips in every
mode, any altered byte refused, HLS-GMAC, replay guard; keys never in reprs or errors."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from fep.errors import FrameError
from fep.protocols.dlms import security as S
from fep.protocols.dlms.errors import CipheringError, ReplayError

# DLMS UA Green Book (DLMS UA 1000-2), security suite 0 worked example.
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
KEYS = S.SecurityKeys(EK, AK)
TITLE = bytes.fromhex("4D4D4D0000BC614E")
IC = 0x01234567
PLAIN = bytes.fromhex("C0010000080000010000FF0200")
CIPHERED = bytes.fromhex("411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B")


class GreenBookTests(unittest.TestCase):
    def test_authenticated_encryption_example(self) -> None:
        out = S.encrypt(S.SecurityControl(0, True, True), TITLE, IC, KEYS, PLAIN)
        self.assertEqual(out, bytes.fromhex("3001234567") + CIPHERED)
        control, counter, plain = S.decrypt(TITLE, KEYS, out)
        self.assertEqual((control.to_byte(), counter, plain), (0x30, IC, PLAIN))

    def test_glo_get_request(self) -> None:
        apdu = S.cipher_apdu(PLAIN, system_title=TITLE, invocation_counter=IC, keys=KEYS)
        # glo-get-request, length 0x1E, SC, IC, ciphertext, tag
        self.assertEqual(apdu, bytes.fromhex("C81E3001234567") + CIPHERED)
        deciphered = S.decipher_apdu(apdu, keys=KEYS, system_title=TITLE)
        self.assertEqual((deciphered.plain_apdu, deciphered.invocation_counter), (PLAIN, IC))

    def test_general_glo_ciphering_carries_the_title(self) -> None:
        apdu = S.cipher_apdu(
            PLAIN, system_title=TITLE, invocation_counter=IC, keys=KEYS, general=True
        )
        self.assertEqual(apdu[:10], bytes.fromhex("DB08") + TITLE)
        self.assertEqual(S.general_system_title(apdu), TITLE)
        self.assertEqual(S.decipher_apdu(apdu, keys=KEYS).system_title, TITLE)

    def test_wrong_key_names_title_never_key(self) -> None:
        apdu = S.cipher_apdu(PLAIN, system_title=TITLE, invocation_counter=IC, keys=KEYS)
        wrong = S.SecurityKeys(EK, bytes(16))
        with self.assertRaises(CipheringError) as caught:
            S.decipher_apdu(apdu, keys=wrong, system_title=TITLE)
        self.assertIn(TITLE.hex(), str(caught.exception))
        for secret in (EK, AK):
            self.assertNotIn(secret.hex(), str(caught.exception).lower())
        self.assertNotIn(EK.hex(), repr(KEYS).lower())
        self.assertNotIn(AK.hex(), repr(KEYS).lower())

    def test_gmac_reply_verifies_only_with_the_right_key_and_challenge(self) -> None:
        challenge = bytes.fromhex("C4E4A2A3B1D0B8E2")
        reply = S.gmac_tag(0x10, TITLE, 1, KEYS, challenge)
        self.assertEqual(reply[:5], bytes.fromhex("1000000001"))
        self.assertEqual(len(reply), 17)
        self.assertTrue(S.verify_gmac(TITLE, KEYS, challenge, reply))
        self.assertFalse(S.verify_gmac(TITLE, KEYS, challenge[::-1], reply))
        self.assertFalse(S.verify_gmac(TITLE, S.SecurityKeys(EK, bytes(16)), challenge, reply))

    def test_replay_guard(self) -> None:
        guard = S.InvocationCounterGuard()
        guard.accept(TITLE, 5)
        with self.assertRaises(ReplayError):
            guard.accept(TITLE, 5)
        guard.accept(TITLE, 6)
        self.assertEqual(guard.last_received(TITLE), 6)


controls = st.builds(S.SecurityControl, st.just(0), st.booleans(), st.booleans())


class PropertyTests(unittest.TestCase):
    @given(controls, st.integers(0, 2**32 - 1), st.binary(max_size=300))
    def test_round_trip_in_every_mode(
        self, control: S.SecurityControl, ic: int, plain: bytes
    ) -> None:
        out = S.encrypt(control, TITLE, ic, KEYS, plain)
        self.assertEqual(S.decrypt(TITLE, KEYS, out), (control, ic, plain))

    @settings(max_examples=300)
    @given(st.integers(0, 29), st.integers(1, 255))
    def test_any_altered_byte_is_refused(self, index: int, flip: int) -> None:
        apdu = bytearray(S.cipher_apdu(PLAIN, system_title=TITLE, invocation_counter=IC, keys=KEYS))
        apdu[2 + index] ^= flip
        with self.assertRaises(CipheringError):
            S.decipher_apdu(bytes(apdu), keys=KEYS, system_title=TITLE)

    @settings(max_examples=500)
    @given(st.binary(max_size=80))
    def test_arbitrary_bytes_give_a_ciphering_error(self, raw: bytes) -> None:
        try:
            S.decipher_apdu(raw, keys=KEYS, system_title=TITLE)
        except (CipheringError, FrameError):
            pass
