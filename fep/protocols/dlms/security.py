"""DLMS/COSEM security suite 0 (IEC 62056-5-3, Green Book 9.2.7): AES-128-GCM ciphering and
authentication of xDLMS APDUs, glo-, ded- and general-glo-ciphering, HLS-GMAC, and the rule
that a received invocation counter must be above the last one accepted.

Keys never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import hmac

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fep.errors import FrameError
from fep.protocols.dlms.axdr import decode_length, encode_length
from fep.protocols.dlms.errors import CipheringError, ReplayError

TAG_LENGTH = 12
SYSTEM_TITLE_LENGTH = 8

# Unciphered tag -> glo-ciphered tag (ded- is glo + 8 for the services, +0x20 for initiate).
_GLO = {
    0x01: 0x21,  # initiate-request
    0x08: 0x28,  # initiate-response
    0x0E: 0x2E,  # confirmed-service-error
    0xC0: 0xC8,  # get-request
    0xC1: 0xC9,  # set-request
    0xC2: 0xCA,  # event-notification-request
    0xC3: 0xCB,  # action-request
    0xC4: 0xCC,  # get-response
    0xC5: 0xCD,  # set-response
    0xC7: 0xCF,  # action-response
}
_DED = {
    0x01: 0x41,
    0x08: 0x48,
    0x0E: 0x4E,
    0xC0: 0xD0,
    0xC1: 0xD1,
    0xC2: 0xD2,
    0xC3: 0xD3,
    0xC4: 0xD4,
    0xC5: 0xD5,
    0xC7: 0xD7,
}
_PLAIN = {v: k for k, v in _GLO.items()} | {v: k for k, v in _DED.items()}
GENERAL_GLO_CIPHERING = 0xDB
GENERAL_DED_CIPHERING = 0xDC


@attrs.frozen
class SecurityControl:
    """The security control byte: suite id (bits 0-3), authentication (4), encryption (5),
    broadcast key (6), compression (7)."""

    suite: int = 0
    authenticated: bool = True
    encrypted: bool = True
    broadcast: bool = False
    compressed: bool = False

    def to_byte(self) -> int:
        return (
            (self.suite & 0x0F)
            | (0x10 if self.authenticated else 0)
            | (0x20 if self.encrypted else 0)
            | (0x40 if self.broadcast else 0)
            | (0x80 if self.compressed else 0)
        )

    @classmethod
    def from_byte(cls, byte: int) -> SecurityControl:
        return cls(
            byte & 0x0F, bool(byte & 0x10), bool(byte & 0x20), bool(byte & 0x40), bool(byte & 0x80)
        )


@attrs.frozen
class SecurityKeys:
    """A meter's global unicast encryption key (EK) and authentication key (AK)."""

    block_cipher_key: bytes = attrs.field(repr=False)
    authentication_key: bytes = attrs.field(repr=False)

    def __attrs_post_init__(self) -> None:
        if len(self.block_cipher_key) != 16 or len(self.authentication_key) != 16:
            raise ValueError("suite 0 keys are 16 bytes each")


def _check_title(system_title: bytes) -> None:
    if len(system_title) != SYSTEM_TITLE_LENGTH:
        raise CipheringError(f"system title of {len(system_title)} bytes, not 8")


def encrypt(
    control: SecurityControl,
    system_title: bytes,
    invocation_counter: int,
    keys: SecurityKeys,
    plaintext: bytes,
) -> bytes:
    """SC || IC || ciphertext (or plaintext when only authenticated) || tag."""
    _check_title(system_title)
    if not 0 <= invocation_counter <= 0xFFFFFFFF:
        raise CipheringError(f"invocation counter {invocation_counter} out of range")
    if control.suite != 0:
        raise CipheringError(f"security suite {control.suite} is not supported (suite 0 only)")
    sc = bytes((control.to_byte(),))
    ic = invocation_counter.to_bytes(4, "big")
    iv = system_title + ic
    encryptor = Cipher(
        algorithms.AES(keys.block_cipher_key), modes.GCM(iv, min_tag_length=TAG_LENGTH)
    ).encryptor()
    if control.authenticated and control.encrypted:
        encryptor.authenticate_additional_data(sc + keys.authentication_key)
        body = encryptor.update(plaintext) + encryptor.finalize()
        return sc + ic + body + encryptor.tag[:TAG_LENGTH]
    if control.authenticated:
        encryptor.authenticate_additional_data(sc + keys.authentication_key + plaintext)
        encryptor.finalize()
        return sc + ic + plaintext + encryptor.tag[:TAG_LENGTH]
    if control.encrypted:
        body = encryptor.update(plaintext) + encryptor.finalize()
        return sc + ic + body
    return sc + ic + plaintext


def decrypt(
    system_title: bytes, keys: SecurityKeys, data: bytes, *, suites: tuple[int, ...] = (0,)
) -> tuple[SecurityControl, int, bytes]:
    """(security control, invocation counter, plaintext) of SC || IC || body [|| tag].
    Raises CipheringError when the tag does not verify, the suite is not one of ``suites``
    (suite 1 ciphers APDUs with the same AES-GCM-128 as suite 0: the push receiver takes it
    from meters configured so), the system title is not 8 bytes or the data is too short."""
    _check_title(system_title)
    if len(data) < 5:
        raise CipheringError(
            f"ciphered content of {len(data)} bytes is too short "
            f"(system title {system_title.hex()})"
        )
    control = SecurityControl.from_byte(data[0])
    if control.suite not in suites:
        raise CipheringError(
            f"security suite {control.suite} from {system_title.hex()} is not supported"
        )
    sc = data[:1]
    ic_bytes = data[1:5]
    invocation_counter = int.from_bytes(ic_bytes, "big")
    iv = system_title + ic_bytes
    body = data[5:]
    failed = CipheringError(
        f"authentication tag does not verify (system title {system_title.hex()}, "
        f"invocation counter {invocation_counter}): wrong key or altered APDU"
    )
    if control.authenticated:
        if len(body) < TAG_LENGTH:
            raise CipheringError(f"ciphered content from {system_title.hex()} has no tag")
        payload, tag = body[:-TAG_LENGTH], body[-TAG_LENGTH:]
        try:
            decryptor = Cipher(
                algorithms.AES(keys.block_cipher_key), modes.GCM(iv, tag, min_tag_length=TAG_LENGTH)
            ).decryptor()
            if control.encrypted:
                decryptor.authenticate_additional_data(sc + keys.authentication_key)
                plaintext = decryptor.update(payload) + decryptor.finalize()
            else:
                decryptor.authenticate_additional_data(sc + keys.authentication_key + payload)
                decryptor.finalize()
                plaintext = payload
        except InvalidTag:
            raise failed from None
        return control, invocation_counter, plaintext
    if control.encrypted:
        # Encryption without authentication: GCM's counter mode alone (no tag to check).
        counter_mode = Cipher(
            algorithms.AES(keys.block_cipher_key), modes.CTR(iv + b"\x00\x00\x00\x02")
        ).decryptor()
        return control, invocation_counter, counter_mode.update(body) + counter_mode.finalize()
    return control, invocation_counter, body


# -- APDU wrapping ----------------------------------------------------------------------------


def glo_tag_for(plain_tag: int, dedicated: bool = False) -> int:
    table = _DED if dedicated else _GLO
    try:
        return table[plain_tag]
    except KeyError:
        raise CipheringError(f"APDU tag {plain_tag:#04x} has no ciphered form") from None


def plain_tag_for(ciphered_tag: int) -> int:
    try:
        return _PLAIN[ciphered_tag]
    except KeyError:
        raise CipheringError(f"{ciphered_tag:#04x} is not a ciphered APDU tag") from None


def is_ciphered(tag: int) -> bool:
    return tag in _PLAIN or tag in (GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING)


@attrs.frozen
class DecipheredApdu:
    plain_apdu: bytes
    system_title: bytes
    invocation_counter: int
    control: SecurityControl


def cipher_apdu(
    apdu: bytes,
    *,
    system_title: bytes,
    invocation_counter: int,
    keys: SecurityKeys,
    control: SecurityControl | None = None,
    dedicated: bool = False,
    general: bool = False,
) -> bytes:
    """The ciphered form of an xDLMS APDU: service-specific glo-/ded- (tag, length,
    content) or general-glo/ded-ciphering (tag, system title, length, content)."""
    control = control or SecurityControl()
    content = encrypt(control, system_title, invocation_counter, keys, apdu)
    if general:
        tag = GENERAL_DED_CIPHERING if dedicated else GENERAL_GLO_CIPHERING
        return (
            bytes((tag,))
            + encode_length(len(system_title))
            + system_title
            + encode_length(len(content))
            + content
        )
    if not apdu:
        raise CipheringError("empty APDU")
    return bytes((glo_tag_for(apdu[0], dedicated),)) + encode_length(len(content)) + content


def general_system_title(data: bytes) -> bytes:
    """The system title of a general-glo/ded-ciphering APDU (FrameError otherwise)."""
    if not data or data[0] not in (GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING):
        raise FrameError("not a general-ciphering APDU", offset=0, field="tag")
    n, pos = decode_length(data, 1, "system-title")
    title = bytes(data[pos : pos + n])
    if len(title) != n or n != SYSTEM_TITLE_LENGTH:
        raise FrameError(f"system title of {len(title)} bytes", offset=pos, field="system-title")
    return title


def decipher_apdu(
    data: bytes,
    *,
    keys: SecurityKeys,
    system_title: bytes | None = None,
    require_authentication: bool = True,
    suites: tuple[int, ...] = (0,),
) -> DecipheredApdu:
    """The plain APDU inside a ciphered one. The system title is the one in a
    general-ciphering header, else ``system_title`` (the peer's, from the association).

    Unless told otherwise, an APDU whose security control says "not authenticated" is
    refused: flipping that bit must not turn off the tag check.

    Raises CipheringError for everything wrong with it (malformed header or length, unknown
    tag, unknown peer title, tag check failed, outer tag not matching the APDU inside);
    never FrameError."""
    if not data:
        raise CipheringError("empty APDU")
    tag = data[0]
    try:
        if tag in (GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING):
            title = general_system_title(data)
            n, pos = decode_length(data, 2 + SYSTEM_TITLE_LENGTH, "ciphered content")
        elif tag in _PLAIN:
            if system_title is None:
                raise CipheringError("ciphered APDU but the peer's system title is unknown")
            title = system_title
            n, pos = decode_length(data, 1, "ciphered content")
        else:
            raise CipheringError(f"{tag:#04x} is not a ciphered APDU tag")
    except FrameError as e:
        raise CipheringError(f"malformed ciphered APDU: {e}") from None
    content = data[pos : pos + n]
    if len(content) != n or pos + n != len(data):
        raise CipheringError(f"ciphered APDU length {n} does not match its {len(data) - pos} bytes")
    if require_authentication and content and not content[0] & 0x10:
        raise CipheringError(f"unauthenticated APDU from system title {title.hex()} refused")
    control, counter, plain = decrypt(title, keys, content, suites=suites)
    # The outer tag is not covered by the GCM tag: a service-specific one must name the
    # APDU inside, so that relabelling it (get-request as get-response, say) is refused.
    if tag in _PLAIN and (not plain or plain[0] != _PLAIN[tag]):
        raise CipheringError(
            f"ciphered tag {tag:#04x} from {title.hex()} does not match the APDU inside"
        )
    return DecipheredApdu(plain, title, counter, control)


# -- HLS-GMAC ---------------------------------------------------------------------------------


def gmac_tag(
    control: int, system_title: bytes, invocation_counter: int, keys: SecurityKeys, challenge: bytes
) -> bytes:
    """f(challenge) of HLS mechanism 5: SC || IC || GMAC(SC || AK || challenge)."""
    sc = SecurityControl.from_byte(control)
    sealed = encrypt(
        SecurityControl(sc.suite, True, False), system_title, invocation_counter, keys, challenge
    )
    # encrypt() in authentication-only mode gives SC || IC || challenge || tag.
    return sealed[:5] + sealed[-TAG_LENGTH:]


def verify_gmac(system_title: bytes, keys: SecurityKeys, challenge: bytes, reply: bytes) -> bool:
    """Whether ``reply`` (SC || IC || tag) is the peer's f(challenge)."""
    if len(reply) != 5 + TAG_LENGTH or reply[0] & 0x30 != 0x10:
        return False
    try:
        expected = gmac_tag(
            reply[0], system_title, int.from_bytes(reply[1:5], "big"), keys, challenge
        )
    except CipheringError:
        return False
    return hmac.compare_digest(expected, reply)


# -- replay protection ------------------------------------------------------------------------


class InvocationCounterGuard:
    """The last invocation counter accepted from each system title (and key fingerprint,
    when given: a new key starts a new sequence), in memory."""

    def __init__(self) -> None:
        self._last: dict[tuple[bytes, str | None], int] = {}

    def last_received(self, system_title: bytes, key_fingerprint: str | None = None
                      ) -> int | None:
        return self._last.get((system_title, key_fingerprint))

    def check(self, system_title: bytes, counter: int, key_fingerprint: str | None = None
              ) -> None:
        last = self._last.get((system_title, key_fingerprint))
        if last is not None and counter <= last:
            raise ReplayError(
                f"invocation counter {counter} from {system_title.hex()} not above {last}"
            )

    def accept(self, system_title: bytes, counter: int, key_fingerprint: str | None = None
               ) -> None:
        self.check(system_title, counter, key_fingerprint)
        self._last[(system_title, key_fingerprint)] = counter

    def accept_received(self, system_title: bytes, counter: int,
                        key_fingerprint: str | None = None) -> tuple[bool, int | None]:
        """(accepted, the last accepted before), as the persistent keepers answer (theirs
        in a Deferred)."""
        last = self._last.get((system_title, key_fingerprint))
        if last is not None and counter <= last:
            return False, last
        self._last[(system_title, key_fingerprint)] = counter
        return True, last
