"""ANSI C12.21 (C12 over a telephone modem) on top of C12.18's packets and services: the
timing setup service (71: channel traffic, inter-character and response timeouts, link
retries), the authenticate service (53: the meter's ticket from identify, DES-encrypted
with a shared key, and the meter's proof that it holds the key too), the authentication
features of the identify answer, and the C12.21 defaults.

Sans-IO: no Twisted here. DES comes from ``cryptography``.

Layouts as Elster's MeteringSDK (MCOM/ProtocolC1221.cpp) exchanges them with C12.21 meters:
identify features ``01 <auth-type> <alg-id>`` and ``02 <auth-type> <alg-id> <ticket-length>
<ticket>`` (auth type bit 0: the meter can authenticate; algorithm 0: DES); timing setup
``71 <traffic> <inter-char> <resp-to> <retries>`` (seconds, seconds, seconds, count),
answered ``ok`` and the four values the meter takes; authenticate ``53 09 <key-id>
<DES(key, ticket)>``, answered ``ok 09 <key-id> <DES(key, DES(key, ticket))>``.

The decoders raise FrameError for bytes that do not fit and C12ResponseError for the meter's
error codes, nothing else (fuzzed by tests/fuzz).
"""

from __future__ import annotations

import enum
from typing import ClassVar, Final, TypeAlias

import attrs
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from fep.errors import FrameError, ProtocolError
from fep.protocols.ansi_c12 import c1218
from fep.protocols.ansi_c12.c1218 import (
    FEATURE_AUTH_SERVICE,
    FEATURE_AUTH_TICKET,
    IdentifyResponse,
    ResponseCode,
    check_response,
)

PROTOCOL: Final = "ansi-c12.21"
DES_BLOCK: Final = 8


@attrs.frozen
class Timing:
    """The C12.21 link timing: ``traffic`` (seconds of silence before a side drops the
    session), ``inter_character`` (seconds between the bytes of one packet), ``response``
    (seconds to wait for an ACK or answer) and ``retries`` (resends of a packet); one
    byte each on the wire."""

    traffic: int = 30
    inter_character: int = 1
    response: int = 4
    retries: int = 3

    def __attrs_post_init__(self) -> None:
        for name in ("traffic", "inter_character", "response", "retries"):
            if not 0 <= getattr(self, name) <= 255:
                raise ValueError(f"C12.21 timing {name} is 0..255, not {getattr(self, name)}")

    def encode(self) -> bytes:
        return bytes([self.traffic, self.inter_character, self.response, self.retries])


# C12.21's defaults (30 s traffic, 1 s inter-character, 4 s response, 3 retries), in
# force until a timing setup changes them.
DEFAULT_TIMING: Final = Timing()


@attrs.frozen
class TimingSetup:
    """Timing setup (71): the timing we would like."""

    timing: Timing = DEFAULT_TIMING
    code: ClassVar[int] = 0x71
    name: ClassVar[str] = "timing setup"

    def encode(self) -> bytes:
        return bytes([self.code]) + self.timing.encode()


@attrs.frozen
class TimingSetupResponse:
    """The timing the meter takes: ``ok traffic inter-char response retries``."""

    timing: Timing

    def encode(self) -> bytes:
        return bytes([ResponseCode.OK]) + self.timing.encode()

    @classmethod
    def decode(cls, data: bytes, *, meter: str | None = None) -> TimingSetupResponse:
        body = check_response(data, "timing setup", meter=meter)
        if len(body) != 4:
            raise FrameError(
                f"timing setup answer has {len(body)} bytes after ok, not 4",
                offset=1,
                field="timing setup",
            )
        return cls(Timing(*body))


@attrs.frozen
class Authenticate:
    """Authenticate (53): ``auth-len key-id value``; for DES the value is the meter's
    ticket encrypted with key ``key_id``."""

    key_id: int
    value: bytes = attrs.field(repr=False)
    code: ClassVar[int] = 0x53
    name: ClassVar[str] = "authenticate"

    def encode(self) -> bytes:
        if not 0 <= self.key_id <= 255 or len(self.value) > 254:
            raise ValueError("an authenticate request has a key id 0..255 and 254 bytes")
        return bytes([self.code, 1 + len(self.value), self.key_id]) + self.value


@attrs.frozen
class AuthenticateResponse:
    """The meter's answer: ``ok auth-len key-id value``; for DES the value is our value
    encrypted once more with the same key."""

    key_id: int
    value: bytes = attrs.field(repr=False)

    def encode(self) -> bytes:
        return bytes([ResponseCode.OK, 1 + len(self.value), self.key_id]) + self.value

    @classmethod
    def decode(cls, data: bytes, *, meter: str | None = None) -> AuthenticateResponse:
        body = check_response(data, "authenticate", meter=meter)
        if len(body) < 2 or body[0] != len(body) - 1:
            raise FrameError(
                "authenticate answer length does not match its auth-len",
                offset=1,
                field="auth-len",
            )
        return cls(body[1], body[2:])


Request: TypeAlias = c1218.Request | TimingSetup | Authenticate


def decode_request(data: bytes) -> Request:
    """A C12.18 request, or one of the two C12.21 adds (the meter side)."""
    if data[:1] == bytes([TimingSetup.code]):
        if len(data) != 5:
            raise FrameError(
                f"timing setup request has {len(data) - 1} bytes after its code, not 4",
                offset=1,
                field="request",
            )
        return TimingSetup(Timing(*data[1:]))
    if data[:1] == bytes([Authenticate.code]):
        if len(data) < 3 or data[1] != len(data) - 2:
            raise FrameError(
                "authenticate request length does not match its auth-len",
                offset=1,
                field="auth-len",
            )
        return Authenticate(data[2], data[3:])
    return c1218.decode_request(data)


# ---------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------


class AuthAlgorithm(enum.IntEnum):
    DES = 0x00
    AES_EAX = 0xFF  # Elster's extension, not in the standard; fep does not do it


@attrs.frozen
class AuthService:
    """What the identify answer says about authentication: whether the meter can do it,
    with which algorithm, and its ticket (the challenge) when it sent one."""

    can_authenticate: bool
    algorithm: int = AuthAlgorithm.DES
    ticket: bytes | None = None


def auth_service(identification: IdentifyResponse) -> AuthService | None:
    """The authentication feature of an identify answer (the last one wins); None when
    the meter names none."""
    found: AuthService | None = None
    for code, payload in identification.features:
        if code == FEATURE_AUTH_SERVICE and len(payload) == 2:
            found = AuthService(bool(payload[0] & 1), payload[1])
        elif code == FEATURE_AUTH_TICKET and len(payload) >= 3:
            found = AuthService(bool(payload[0] & 1), payload[1], payload[3:])
    return found


def ticket_feature(ticket: bytes, algorithm: int = AuthAlgorithm.DES) -> tuple[int, bytes]:
    """The ``02`` identify feature of a meter that asks to be authenticated."""
    return FEATURE_AUTH_TICKET, bytes([0x01, algorithm, len(ticket)]) + ticket


def _des(key: bytes) -> Cipher[modes.ECB]:
    if len(key) != DES_BLOCK:
        raise ValueError(f"a DES key is {DES_BLOCK} bytes, not {len(key)}")
    # Three equal keys make triple DES single DES (encrypt, decrypt, encrypt with one key).
    return Cipher(TripleDES(key * 3), modes.ECB())


def des_encrypt(key: bytes, block: bytes) -> bytes:
    """One DES block (8 bytes) encrypted with an 8-byte key (parity bits ignored)."""
    if len(block) != DES_BLOCK:
        raise ValueError(f"a DES block is {DES_BLOCK} bytes, not {len(block)}")
    encryptor = _des(key).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def des_decrypt(key: bytes, block: bytes) -> bytes:
    if len(block) != DES_BLOCK:
        raise ValueError(f"a DES block is {DES_BLOCK} bytes, not {len(block)}")
    decryptor = _des(key).decryptor()
    return decryptor.update(block) + decryptor.finalize()


class AuthenticationFailed(ProtocolError):
    """The meter's answer to authenticate does not prove it holds our key."""


def authenticate_request(
    service: AuthService, key: bytes, key_id: int, *, meter: str | None = None
) -> Authenticate:
    """Our answer to the meter's ticket; ProtocolError naming the meter when it asks for
    an algorithm fep does not do or sent no usable ticket."""
    who = f"meter {meter}" if meter else "meter"
    if service.algorithm != AuthAlgorithm.DES:
        name = "AES, Elster's extension" if service.algorithm == AuthAlgorithm.AES_EAX else "?"
        raise ProtocolError(
            f"{who} asks for authentication algorithm 0x{service.algorithm:02X} ({name}); "
            "fep does DES (0x00) only",
            meter=meter,
            protocol=PROTOCOL,
        )
    if service.ticket is None or len(service.ticket) != DES_BLOCK:
        size = "no" if service.ticket is None else f"a {len(service.ticket)}-byte"
        raise ProtocolError(
            f"{who} sent {size} authentication ticket, DES needs {DES_BLOCK} bytes",
            meter=meter,
            protocol=PROTOCOL,
        )
    return Authenticate(key_id, des_encrypt(key, service.ticket))


def check_authentication(
    request: Authenticate, answer: AuthenticateResponse, key: bytes, *, meter: str | None = None
) -> None:
    """The meter proves it holds the key: it sends our value encrypted once more.
    AuthenticationFailed otherwise (a fake or misconfigured device)."""
    who = f"meter {meter}" if meter else "meter"
    if answer.key_id != request.key_id:
        raise AuthenticationFailed(
            f"{who} answered authenticate with key id {answer.key_id}, not {request.key_id}",
            meter=meter,
            protocol=PROTOCOL,
        )
    if len(answer.value) != DES_BLOCK or des_decrypt(key, answer.value) != request.value:
        raise AuthenticationFailed(
            f"{who} failed authentication: its answer does not match our key (a tampered or "
            "fake device?)",
            meter=meter,
            protocol=PROTOCOL,
        )


def answer_authenticate(
    request: Authenticate, key: bytes, key_id: int, ticket: bytes
) -> AuthenticateResponse | None:
    """The meter side: the answer proving the meter's key, or None when the request's
    key id or value is wrong."""
    if request.key_id != key_id or request.value != des_encrypt(key, ticket):
        return None
    return AuthenticateResponse(key_id, des_encrypt(key, request.value))


__all__ = [
    "DEFAULT_TIMING",
    "PROTOCOL",
    "AuthAlgorithm",
    "AuthService",
    "Authenticate",
    "AuthenticateResponse",
    "AuthenticationFailed",
    "Timing",
    "TimingSetup",
    "TimingSetupResponse",
    "answer_authenticate",
    "auth_service",
    "authenticate_request",
    "check_authentication",
    "decode_request",
    "des_decrypt",
    "des_encrypt",
    "ticket_feature",
]
