"""ACSE APDUs of a DLMS association (AARQ, AARE, RLRQ, RLRE: ISO 8650 as profiled by IEC
62056-5-3) in BER, and the xDLMS InitiateRequest/InitiateResponse they carry in
user-information (A-XDR).

A direct BER codec reads and writes the layouts meters and fep use (every association passes
through it); pyasn1 decodes whatever else arrives (constructed strings, other OIDs, malformed
input) and is the reference the direct codec agrees with, byte for byte, in the tests.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

import attrs
from pyasn1.codec.ber import decoder as ber_decoder
from pyasn1.codec.ber import encoder as ber_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import namedtype, tag, univ

from fep.errors import FrameError
from fep.protocols.dlms.apdu import CONFIRMED_SERVICES, SERVICE_ERROR_KINDS, Tag
from fep.protocols.dlms.errors import AssociationRefused, ConfirmedServiceError

# -- names ------------------------------------------------------------------------------------

_CONTEXT_OID = (2, 16, 756, 5, 8, 1)
_MECHANISM_OID = (2, 16, 756, 5, 8, 2)


class ApplicationContext(enum.IntEnum):
    LN = 1
    SN = 2
    LN_CIPHERING = 3
    SN_CIPHERING = 4


class Mechanism(enum.IntEnum):
    LOWEST = 0
    LLS = 1
    HLS = 2
    HLS_MD5 = 3
    HLS_SHA1 = 4
    HLS_GMAC = 5
    HLS_SHA256 = 6
    HLS_ECDSA = 7


class AssociationResult(enum.IntEnum):
    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


USER_DIAGNOSTICS = {
    0: "null",
    1: "no-reason-given",
    2: "application-context-name-not-supported",
    3: "calling-AP-title-not-recognized",
    4: "calling-AP-invocation-identifier-not-recognized",
    5: "calling-AE-qualifier-not-recognized",
    6: "calling-AE-invocation-identifier-not-recognized",
    7: "called-AP-title-not-recognized",
    8: "called-AP-invocation-identifier-not-recognized",
    9: "called-AE-qualifier-not-recognized",
    10: "called-AE-invocation-identifier-not-recognized",
    11: "authentication-mechanism-name-not-recognised",
    12: "authentication-mechanism-name-required",
    13: "authentication-failure",
    14: "authentication-required",
}
PROVIDER_DIAGNOSTICS = {0: "null", 1: "no-reason-given", 2: "no-common-acse-version"}


class Conformance(enum.IntFlag):
    """The xDLMS conformance block (24 bits; bit 0 of the standard is the top bit)."""

    GENERAL_PROTECTION = 1 << (23 - 1)
    GENERAL_BLOCK_TRANSFER = 1 << (23 - 2)
    READ = 1 << (23 - 3)
    WRITE = 1 << (23 - 4)
    UNCONFIRMED_WRITE = 1 << (23 - 5)
    ATTRIBUTE0_SUPPORTED_WITH_SET = 1 << (23 - 8)
    PRIORITY_MGMT_SUPPORTED = 1 << (23 - 9)
    ATTRIBUTE0_SUPPORTED_WITH_GET = 1 << (23 - 10)
    BLOCK_TRANSFER_WITH_GET_OR_READ = 1 << (23 - 11)
    BLOCK_TRANSFER_WITH_SET_OR_WRITE = 1 << (23 - 12)
    BLOCK_TRANSFER_WITH_ACTION = 1 << (23 - 13)
    MULTIPLE_REFERENCES = 1 << (23 - 14)
    INFORMATION_REPORT = 1 << (23 - 15)
    DATA_NOTIFICATION = 1 << (23 - 16)
    ACCESS = 1 << (23 - 17)
    PARAMETERIZED_ACCESS = 1 << (23 - 18)
    GET = 1 << (23 - 19)
    SET = 1 << (23 - 20)
    SELECTIVE_ACCESS = 1 << (23 - 21)
    EVENT_NOTIFICATION = 1 << (23 - 22)
    ACTION = 1 << (23 - 23)


# -- ASN.1 (pyasn1) ---------------------------------------------------------------------------


def _explicit(n: int) -> Any:
    return tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, n)


def _implicit(n: int) -> Any:
    return tag.Tag(tag.tagClassContext, tag.tagFormatSimple, n)


def _application(n: int) -> Any:
    return tag.Tag(tag.tagClassApplication, tag.tagFormatConstructed, n)


class _AuthenticationValue(univ.Choice):
    # charstring is a GraphicString on paper; passwords and HLS challenges are bytes, and
    # an OCTET STRING with the same implicit tag has the same encoding.
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("charstring", univ.OctetString().subtype(implicitTag=_implicit(0))),
        namedtype.NamedType("bitstring", univ.BitString().subtype(implicitTag=_implicit(1))),
    )


class _SourceDiagnostic(univ.Choice):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("acse-service-user", univ.Integer().subtype(explicitTag=_explicit(1))),
        namedtype.NamedType(
            "acse-service-provider", univ.Integer().subtype(explicitTag=_explicit(2))
        ),
    )


def _user_information(n: int = 30) -> Any:
    return univ.OctetString().subtype(explicitTag=_explicit(n))


class _AARQ(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(_application(0))
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType(
            "protocol-version", univ.BitString().subtype(implicitTag=_implicit(0))
        ),
        namedtype.NamedType(
            "application-context-name", univ.ObjectIdentifier().subtype(explicitTag=_explicit(1))
        ),
        namedtype.OptionalNamedType(
            "called-AP-title", univ.OctetString().subtype(explicitTag=_explicit(2))
        ),
        namedtype.OptionalNamedType(
            "calling-AP-title", univ.OctetString().subtype(explicitTag=_explicit(6))
        ),
        namedtype.OptionalNamedType(
            "calling-AE-invocation-id", univ.Integer().subtype(explicitTag=_explicit(9))
        ),
        namedtype.OptionalNamedType(
            "sender-acse-requirements", univ.BitString().subtype(implicitTag=_implicit(10))
        ),
        namedtype.OptionalNamedType(
            "mechanism-name", univ.ObjectIdentifier().subtype(implicitTag=_implicit(11))
        ),
        namedtype.OptionalNamedType(
            "calling-authentication-value",
            _AuthenticationValue().subtype(explicitTag=_explicit(12)),
        ),
        namedtype.OptionalNamedType(
            "implementation-information", univ.OctetString().subtype(implicitTag=_implicit(29))
        ),
        namedtype.OptionalNamedType("user-information", _user_information()),
    )


class _AARE(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(_application(1))
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType(
            "protocol-version", univ.BitString().subtype(implicitTag=_implicit(0))
        ),
        namedtype.NamedType(
            "application-context-name", univ.ObjectIdentifier().subtype(explicitTag=_explicit(1))
        ),
        namedtype.NamedType("result", univ.Integer().subtype(explicitTag=_explicit(2))),
        namedtype.NamedType(
            "result-source-diagnostic", _SourceDiagnostic().subtype(explicitTag=_explicit(3))
        ),
        namedtype.OptionalNamedType(
            "responding-AP-title", univ.OctetString().subtype(explicitTag=_explicit(4))
        ),
        namedtype.OptionalNamedType(
            "responding-AE-invocation-id", univ.Integer().subtype(explicitTag=_explicit(7))
        ),
        namedtype.OptionalNamedType(
            "responder-acse-requirements", univ.BitString().subtype(implicitTag=_implicit(8))
        ),
        namedtype.OptionalNamedType(
            "mechanism-name", univ.ObjectIdentifier().subtype(implicitTag=_implicit(9))
        ),
        namedtype.OptionalNamedType(
            "responding-authentication-value",
            _AuthenticationValue().subtype(explicitTag=_explicit(10)),
        ),
        namedtype.OptionalNamedType(
            "implementation-information", univ.OctetString().subtype(implicitTag=_implicit(29))
        ),
        namedtype.OptionalNamedType("user-information", _user_information()),
    )


class _RLRQ(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(_application(2))
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("reason", univ.Integer().subtype(implicitTag=_implicit(0))),
        namedtype.OptionalNamedType("user-information", _user_information()),
    )


class _RLRE(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(_application(3))
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("reason", univ.Integer().subtype(implicitTag=_implicit(0))),
        namedtype.OptionalNamedType("user-information", _user_information()),
    )


# -- records ----------------------------------------------------------------------------------


@attrs.frozen
class Aarq:
    application_context: ApplicationContext
    mechanism: Mechanism | None = None
    calling_ap_title: bytes | None = None
    authentication_value: bytes | None = attrs.field(default=None, repr=False)
    user_information: bytes | None = None


@attrs.frozen
class Aare:
    application_context: ApplicationContext
    result: int
    diagnostic_source: str = "user"  # "user" or "provider"
    diagnostic: int = 0
    responding_ap_title: bytes | None = None
    mechanism: Mechanism | None = None
    authentication_value: bytes | None = attrs.field(default=None, repr=False)
    user_information: bytes | None = None

    @property
    def reason(self) -> str:
        names = USER_DIAGNOSTICS if self.diagnostic_source == "user" else PROVIDER_DIAGNOSTICS
        return names.get(self.diagnostic, f"diagnostic {self.diagnostic}")


@attrs.frozen
class Rlrq:
    reason: int | None = 0
    user_information: bytes | None = None


@attrs.frozen
class Rlre:
    reason: int | None = 0
    user_information: bytes | None = None


AcseApdu = Aarq | Aare | Rlrq | Rlre
_T = TypeVar("_T", Aarq, Aare, Rlrq, Rlre)


# Plain values: pyasn1 clones them into the tagged schema types of each component.
def _context_oid(context: ApplicationContext) -> tuple[int, ...]:
    return (*_CONTEXT_OID, int(context))


def _mechanism_oid(mechanism: Mechanism) -> tuple[int, ...]:
    return (*_MECHANISM_OID, int(mechanism))


def _context_from(oid: Any) -> ApplicationContext:
    numbers = tuple(oid)
    if numbers[:-1] != _CONTEXT_OID:
        raise FrameError(f"application context {oid} is not DLMS", field="application-context")
    try:
        return ApplicationContext(numbers[-1])
    except ValueError:
        raise FrameError(
            f"unknown application context {oid}", field="application-context"
        ) from None


def _mechanism_from(oid: Any) -> Mechanism:
    numbers = tuple(oid)
    if numbers[:-1] != _MECHANISM_OID:
        raise FrameError(f"mechanism {oid} is not DLMS", field="mechanism-name")
    try:
        return Mechanism(numbers[-1])
    except ValueError:
        raise FrameError(f"unknown mechanism {oid}", field="mechanism-name") from None


# sender/responder-acse-requirements: the authentication bit (bit 0) set.
_AUTHENTICATION_REQUIRED = "'1'B"


def _encode_aarq_pyasn1(aarq: Aarq) -> bytes:
    seq = _AARQ()
    seq["application-context-name"] = _context_oid(aarq.application_context)
    if aarq.calling_ap_title is not None:
        seq["calling-AP-title"] = aarq.calling_ap_title
    if aarq.mechanism is not None and aarq.mechanism != Mechanism.LOWEST:
        seq["sender-acse-requirements"] = _AUTHENTICATION_REQUIRED
        seq["mechanism-name"] = _mechanism_oid(aarq.mechanism)
    if aarq.authentication_value is not None:
        value = seq["calling-authentication-value"]
        value["charstring"] = aarq.authentication_value
    if aarq.user_information is not None:
        seq["user-information"] = aarq.user_information
    return bytes(ber_encoder.encode(seq))


def _encode_aare_pyasn1(aare: Aare) -> bytes:
    seq = _AARE()
    seq["application-context-name"] = _context_oid(aare.application_context)
    seq["result"] = aare.result
    diagnostic = seq["result-source-diagnostic"]
    key = "acse-service-user" if aare.diagnostic_source == "user" else "acse-service-provider"
    diagnostic[key] = aare.diagnostic
    if aare.responding_ap_title is not None:
        seq["responding-AP-title"] = aare.responding_ap_title
    if aare.mechanism is not None and aare.mechanism != Mechanism.LOWEST:
        seq["responder-acse-requirements"] = _AUTHENTICATION_REQUIRED
        seq["mechanism-name"] = _mechanism_oid(aare.mechanism)
    if aare.authentication_value is not None:
        seq["responding-authentication-value"]["charstring"] = aare.authentication_value
    if aare.user_information is not None:
        seq["user-information"] = aare.user_information
    return bytes(ber_encoder.encode(seq))


def _encode_rlrq_pyasn1(rlrq: Rlrq) -> bytes:
    seq = _RLRQ()
    if rlrq.reason is not None:
        seq["reason"] = rlrq.reason
    if rlrq.user_information is not None:
        seq["user-information"] = rlrq.user_information
    return bytes(ber_encoder.encode(seq))


def _encode_rlre_pyasn1(rlre: Rlre) -> bytes:
    seq = _RLRE()
    if rlre.reason is not None:
        seq["reason"] = rlre.reason
    if rlre.user_information is not None:
        seq["user-information"] = rlre.user_information
    return bytes(ber_encoder.encode(seq))


def _optional(seq: Any, name: str) -> Any:
    component = seq.getComponentByName(name)
    return component if component.isValue else None


def _optional_bytes(seq: Any, name: str) -> bytes | None:
    value = _optional(seq, name)
    return bytes(value) if value is not None else None


def _auth_bytes(seq: Any, name: str) -> bytes | None:
    value = _optional(seq, name)
    if value is None:
        return None
    chosen = value.getComponent()
    if isinstance(chosen, univ.BitString):
        return chosen.asOctets()
    return bytes(chosen)


_SPECS: dict[int, tuple[str, Any]] = {
    0x60: ("AARQ", _AARQ),
    0x61: ("AARE", _AARE),
    0x62: ("RLRQ", _RLRQ),
    0x63: ("RLRE", _RLRE),
}


# BER as DLMS uses it: definite lengths of at most 4 bytes, tags of at most 4 bytes, a few
# levels of nesting (an AARQ nests 3 deep). Checked before pyasn1 sees the bytes, so that a
# hostile length or nesting never reaches it.
MAX_BER_DEPTH = 8
_MAX_BER_LENGTH_BYTES = 4
_MAX_BER_TAG_BYTES = 4


def check_ber(data: bytes, name: str = "BER") -> None:
    """FrameError unless ``data`` is one BER TLV (with its nested TLVs) whose every length
    fits the bytes that follow it, in definite form of at most 4 length bytes, nested at
    most ``MAX_BER_DEPTH`` deep. Work is linear in ``len(data)``."""
    end = _check_tlvs(data, 0, len(data), 0, name, single=True)
    if end != len(data):
        raise FrameError(f"{name}: {len(data) - end} bytes after it", offset=end, field=name)


def _check_tlvs(data: bytes, pos: int, end: int, depth: int, name: str, *, single: bool) -> int:
    if depth > MAX_BER_DEPTH:
        raise FrameError(f"{name}: nested deeper than {MAX_BER_DEPTH}", offset=pos, field=name)
    while pos < end:
        start = pos
        first = data[pos]
        pos += 1
        if first & 0x1F == 0x1F:  # high tag number: base-128 bytes, the last below 0x80
            for count in range(_MAX_BER_TAG_BYTES + 1):
                if pos >= end:
                    raise FrameError(f"{name}: tag truncated", offset=start, field=name)
                if count == _MAX_BER_TAG_BYTES:
                    raise FrameError(f"{name}: tag too long", offset=start, field=name)
                more = data[pos] & 0x80
                pos += 1
                if not more:
                    break
        if pos >= end:
            raise FrameError(f"{name}: length truncated", offset=pos, field=name)
        length = data[pos]
        pos += 1
        if length == 0x80:
            raise FrameError(f"{name}: indefinite length", offset=pos - 1, field=name)
        if length > 0x80:
            size = length & 0x7F
            if size > _MAX_BER_LENGTH_BYTES or pos + size > end:
                raise FrameError(f"{name}: length of {size} bytes", offset=pos - 1, field=name)
            length = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        if length > end - pos:
            raise FrameError(
                f"{name}: length {length} overruns the {end - pos} bytes left",
                offset=pos,
                field=name,
            )
        if first & 0x20:  # constructed: its contents are TLVs too
            _check_tlvs(data, pos, pos + length, depth + 1, name, single=False)
        pos += length
        if single:
            return pos
    return pos


# -- direct BER decoder ------------------------------------------------------------------------
# The AARQ/AARE/RLRQ/RLRE layouts of IEC 62056-5-3 as meters and fep encode them: one-byte
# tags, definite lengths of at most 2 bytes, primitive strings, components in schema order,
# DLMS's own OIDs. It never raises: what it does not recognise returns None and pyasn1
# decodes it (or names what is wrong). Work is linear in the bytes, nesting 3 deep at most.


class _Unusual(Exception):
    """Not a layout the direct decoder reads: pyasn1 decides."""


_UNUSUAL = _Unusual()

# Component kinds: how the contents of a component's TLV are read.
_BITS = 0  # implicit BIT STRING (protocol-version, acse-requirements): checked, not kept
_CONTEXT = 1  # [1] EXPLICIT OBJECT IDENTIFIER, DLMS's application context
_MECHANISM = 2  # IMPLICIT OBJECT IDENTIFIER, DLMS's mechanism name
_INT_EXPLICIT = 3  # [n] EXPLICIT INTEGER
_INT = 4  # IMPLICIT INTEGER
_OCTETS_EXPLICIT = 5  # [n] EXPLICIT OCTET STRING (AP titles, user-information)
_OCTETS = 6  # IMPLICIT OCTET STRING (implementation-information)
_AUTH = 7  # [n] EXPLICIT Authentication-value, its charstring [0] choice
_DIAGNOSTIC = 8  # [3] EXPLICIT CHOICE of [1]/[2] EXPLICIT INTEGER

_CONTEXT_PREFIX = bytes((0x60, 0x85, 0x74, 0x05, 0x08, 0x01))  # 2.16.756.5.8.1
_MECHANISM_PREFIX = bytes((0x60, 0x85, 0x74, 0x05, 0x08, 0x02))  # 2.16.756.5.8.2
_CONTEXTS = {int(c): c for c in ApplicationContext}
_MECHANISMS = {int(m): m for m in Mechanism}

# Per APDU tag: its record and its components in order, as (tag, kind, record field or None
# for a component checked but not kept, required).
_Component = tuple[int, int, str | None, bool]
_RELEASE: tuple[_Component, ...] = (
    (0x80, _INT, "reason", False),
    (0xBE, _OCTETS_EXPLICIT, "user_information", False),
)
_DIRECT: dict[int, tuple[type[Aarq] | type[Aare] | type[Rlrq] | type[Rlre], tuple[_Component, ...]]]
_DIRECT = {
    0x60: (
        Aarq,
        (
            (0x80, _BITS, None, False),
            (0xA1, _CONTEXT, "application_context", True),
            (0xA2, _OCTETS_EXPLICIT, None, False),
            (0xA6, _OCTETS_EXPLICIT, "calling_ap_title", False),
            (0xA9, _INT_EXPLICIT, None, False),
            (0x8A, _BITS, None, False),
            (0x8B, _MECHANISM, "mechanism", False),
            (0xAC, _AUTH, "authentication_value", False),
            (0x9D, _OCTETS, None, False),
            (0xBE, _OCTETS_EXPLICIT, "user_information", False),
        ),
    ),
    0x61: (
        Aare,
        (
            (0x80, _BITS, None, False),
            (0xA1, _CONTEXT, "application_context", True),
            (0xA2, _INT_EXPLICIT, "result", True),
            (0xA3, _DIAGNOSTIC, "diagnostic", True),
            (0xA4, _OCTETS_EXPLICIT, "responding_ap_title", False),
            (0xA7, _INT_EXPLICIT, None, False),
            (0x88, _BITS, None, False),
            (0x89, _MECHANISM, "mechanism", False),
            (0xAA, _AUTH, "authentication_value", False),
            (0x9D, _OCTETS, None, False),
            (0xBE, _OCTETS_EXPLICIT, "user_information", False),
        ),
    ),
    0x62: (Rlrq, _RELEASE),
    0x63: (Rlre, _RELEASE),
}


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """The tag, contents start and contents end of the TLV at ``pos`` (ending by ``end``)."""
    if pos + 2 > end:
        raise _UNUSUAL
    first = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        if length == 0x81 and pos < end:
            length = data[pos]
            pos += 1
        elif length == 0x82 and pos + 2 <= end:
            length = data[pos] << 8 | data[pos + 1]
            pos += 2
        else:
            raise _UNUSUAL
    stop = pos + length
    if stop > end:
        raise _UNUSUAL
    return first, pos, stop


def _only(data: bytes, start: int, stop: int, expected: int) -> tuple[int, int]:
    """The contents of the one TLV, tagged ``expected``, that fills ``start:stop``."""
    inner, s, e = _tlv(data, start, stop)
    if inner != expected or e != stop:
        raise _UNUSUAL
    return s, e


def _component(data: bytes, kind: int, start: int, stop: int) -> Any:
    if kind == _OCTETS_EXPLICIT:
        s, e = _only(data, start, stop, 0x04)
        return data[s:e]
    if kind == _CONTEXT:
        s, e = _only(data, start, stop, 0x06)
        if e - s != 7 or data[s : e - 1] != _CONTEXT_PREFIX or data[e - 1] not in _CONTEXTS:
            raise _UNUSUAL
        return _CONTEXTS[data[e - 1]]
    if kind == _MECHANISM:
        if stop - start != 7 or data[start : stop - 1] != _MECHANISM_PREFIX:
            raise _UNUSUAL
        mechanism = _MECHANISMS.get(data[stop - 1])
        if mechanism is None:
            raise _UNUSUAL
        return mechanism
    if kind == _BITS:
        # pyasn1: at least the unused-bits byte, at most 7 unused, none without bits.
        if stop == start or data[start] > 7 or (stop - start == 1 and data[start]):
            raise _UNUSUAL
        return None
    if kind == _INT_EXPLICIT:
        s, e = _only(data, start, stop, 0x02)
        return int.from_bytes(data[s:e], "big", signed=True)
    if kind == _INT:
        return int.from_bytes(data[start:stop], "big", signed=True)
    if kind == _AUTH:
        s, e = _only(data, start, stop, 0x80)
        return data[s:e]
    if kind == _OCTETS:
        return data[start:stop]
    # _DIAGNOSTIC
    which, s, e = _tlv(data, start, stop)
    if e != stop or which not in (0xA1, 0xA2):
        raise _UNUSUAL
    s, e = _only(data, s, e, 0x02)
    return ("user" if which == 0xA1 else "provider", int.from_bytes(data[s:e], "big", signed=True))


def _decode_direct(data: bytes) -> AcseApdu | None:
    """``data`` decoded if it is one of the usual layouts, else None (never raises)."""
    if type(data) is not bytes:
        data = bytes(data)
    entry = _DIRECT.get(data[0]) if data else None
    if entry is None:
        return None
    cls, components = entry
    fields: dict[str, Any] = {"reason": None} if data[0] >= 0x62 else {}
    try:
        _, pos, end = _tlv(data, 0, len(data))
        if end != len(data):
            return None
        index = 0
        count = len(components)
        while pos < end:
            tag_, start, stop = _tlv(data, pos, end)
            while index < count and components[index][0] != tag_:
                if components[index][3]:
                    return None
                index += 1
            if index == count:
                return None
            _, kind, name, _ = components[index]
            value = _component(data, kind, start, stop)
            if name == "diagnostic":
                fields["diagnostic_source"], fields["diagnostic"] = value
            elif name is not None:
                fields[name] = value
            index += 1
            pos = stop
        while index < count:
            if components[index][3]:
                return None
            index += 1
    except _Unusual:
        return None
    return cls(**fields)


def decode_acse(data: bytes) -> AcseApdu:
    """One ACSE APDU (AARQ, AARE, RLRQ or RLRE).

    Raises FrameError for anything that is not a well-formed one: an unknown tag, a BER
    length that overruns the bytes or is longer than 4 bytes, nesting deeper than
    ``MAX_BER_DEPTH``, a component pyasn1 cannot decode, an application context or mechanism
    that is not DLMS's, trailing bytes. Nothing else escapes.

    The layouts DLMS meters and fep send are read by a direct BER decoder (``_decode_direct``);
    anything it does not recognise, well-formed or not, goes to pyasn1, which has the last
    word (``decode_acse_pyasn1``: the same results, checked by the tests)."""
    decoded = _decode_direct(data)
    if decoded is not None:
        return decoded
    return decode_acse_pyasn1(data)


def decode_acse_pyasn1(data: bytes) -> AcseApdu:
    """``decode_acse`` through pyasn1 only: the reference the direct decoder agrees with,
    and the decoder of unusual layouts (constructed strings, other OIDs, errors)."""
    if not data:
        raise FrameError("empty ACSE APDU", offset=0, field="tag")
    entry = _SPECS.get(data[0])
    if entry is None:
        raise FrameError(f"tag {data[0]:#04x} is not an ACSE APDU", offset=0, field="tag")
    name, spec = entry
    check_ber(bytes(data), name)
    try:
        seq, rest = ber_decoder.decode(bytes(data), asn1Spec=spec())
    except (
        PyAsn1Error, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError
    ) as e:
        raise FrameError(f"{name}: {e}", offset=0, field=name) from None
    if rest:
        raise FrameError(
            f"{name}: {len(rest)} bytes after it", offset=len(data) - len(rest), field=name
        )
    try:
        if name == "AARQ":
            mechanism = _optional(seq, "mechanism-name")
            return Aarq(
                application_context=_context_from(seq["application-context-name"]),
                mechanism=_mechanism_from(mechanism) if mechanism is not None else None,
                calling_ap_title=_optional_bytes(seq, "calling-AP-title"),
                authentication_value=_auth_bytes(seq, "calling-authentication-value"),
                user_information=_optional_bytes(seq, "user-information"),
            )
        if name == "AARE":
            diagnostic = seq["result-source-diagnostic"]
            source = diagnostic.getName()
            mechanism = _optional(seq, "mechanism-name")
            return Aare(
                application_context=_context_from(seq["application-context-name"]),
                result=int(seq["result"]),
                diagnostic_source="user" if source == "acse-service-user" else "provider",
                diagnostic=int(diagnostic.getComponent()),
                responding_ap_title=_optional_bytes(seq, "responding-AP-title"),
                mechanism=_mechanism_from(mechanism) if mechanism is not None else None,
                authentication_value=_auth_bytes(seq, "responding-authentication-value"),
                user_information=_optional_bytes(seq, "user-information"),
            )
        reason = _optional(seq, "reason")
        cls = Rlrq if name == "RLRQ" else Rlre
        return cls(
            reason=int(reason) if reason is not None else None,
            user_information=_optional_bytes(seq, "user-information"),
        )
    except (PyAsn1Error, ValueError, TypeError, OverflowError) as e:
        raise FrameError(f"{name}: {e}", offset=0, field=name) from None


def encode_acse_pyasn1(apdu: AcseApdu) -> bytes:
    """``encode_acse`` through pyasn1: the reference the direct encoder agrees with."""
    if isinstance(apdu, Aarq):
        return _encode_aarq_pyasn1(apdu)
    if isinstance(apdu, Aare):
        return _encode_aare_pyasn1(apdu)
    if isinstance(apdu, Rlrq):
        return _encode_rlrq_pyasn1(apdu)
    return _encode_rlre_pyasn1(apdu)


# -- direct BER encoder ------------------------------------------------------------------------
# The same bytes as pyasn1's DER-like output for these layouts (definite minimal lengths,
# minimal integers, components in schema order), checked by the tests.


def _ber(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + body


def _ber_integer(tag: int, value: int) -> bytes:
    # pyasn1's width: the magnitude's bits, one more when they fill whole bytes (so -128 is
    # FF80, not the shorter 80); both are valid BER, and the bytes stay what fep always sent.
    bits = value.bit_length()
    bits += bits % 8 == 0
    return _ber(tag, value.to_bytes((bits + 7) // 8, "big", signed=True))


def _oid(prefix: bytes, last: int) -> bytes:
    return prefix + bytes((last,))  # DLMS's last arcs are all below 128


_AUTHENTICATION_REQUIREMENTS = b"\x02\x07\x80"  # BIT STRING '1'B: length, unused bits, bits


def _mechanism_components(requirements_tag: int, name_tag: int, mechanism: Mechanism) -> bytes:
    return (
        bytes((requirements_tag,))
        + _AUTHENTICATION_REQUIREMENTS
        + _ber(name_tag, _oid(_MECHANISM_PREFIX, int(mechanism)))
    )


def encode_aarq(aarq: Aarq) -> bytes:
    parts = [_ber(0xA1, _ber(0x06, _oid(_CONTEXT_PREFIX, int(aarq.application_context))))]
    if aarq.calling_ap_title is not None:
        parts.append(_ber(0xA6, _ber(0x04, aarq.calling_ap_title)))
    if aarq.mechanism is not None and aarq.mechanism != Mechanism.LOWEST:
        parts.append(_mechanism_components(0x8A, 0x8B, aarq.mechanism))
    if aarq.authentication_value is not None:
        parts.append(_ber(0xAC, _ber(0x80, aarq.authentication_value)))
    if aarq.user_information is not None:
        parts.append(_ber(0xBE, _ber(0x04, aarq.user_information)))
    return _ber(0x60, b"".join(parts))


def encode_aare(aare: Aare) -> bytes:
    source = 0xA1 if aare.diagnostic_source == "user" else 0xA2
    parts = [
        _ber(0xA1, _ber(0x06, _oid(_CONTEXT_PREFIX, int(aare.application_context)))),
        _ber(0xA2, _ber_integer(0x02, aare.result)),
        _ber(0xA3, _ber(source, _ber_integer(0x02, aare.diagnostic))),
    ]
    if aare.responding_ap_title is not None:
        parts.append(_ber(0xA4, _ber(0x04, aare.responding_ap_title)))
    if aare.mechanism is not None and aare.mechanism != Mechanism.LOWEST:
        parts.append(_mechanism_components(0x88, 0x89, aare.mechanism))
    if aare.authentication_value is not None:
        parts.append(_ber(0xAA, _ber(0x80, aare.authentication_value)))
    if aare.user_information is not None:
        parts.append(_ber(0xBE, _ber(0x04, aare.user_information)))
    return _ber(0x61, b"".join(parts))


def _encode_release(tag: int, reason: int | None, user_information: bytes | None) -> bytes:
    parts = []
    if reason is not None:
        parts.append(_ber_integer(0x80, reason))
    if user_information is not None:
        parts.append(_ber(0xBE, _ber(0x04, user_information)))
    return _ber(tag, b"".join(parts))


def encode_rlrq(rlrq: Rlrq) -> bytes:
    return _encode_release(0x62, rlrq.reason, rlrq.user_information)


def encode_rlre(rlre: Rlre) -> bytes:
    return _encode_release(0x63, rlre.reason, rlre.user_information)


def encode_acse(apdu: AcseApdu) -> bytes:
    if isinstance(apdu, Aarq):
        return encode_aarq(apdu)
    if isinstance(apdu, Aare):
        return encode_aare(apdu)
    if isinstance(apdu, Rlrq):
        return encode_rlrq(apdu)
    return encode_rlre(apdu)


def _expect(data: bytes, kind: type[_T]) -> _T:
    decoded = decode_acse(data)
    if not isinstance(decoded, kind):
        raise FrameError(
            f"expected {kind.__name__.upper()}, got {type(decoded).__name__.upper()}",
            offset=0,
            field="tag",
        )
    return decoded


def decode_aarq(data: bytes) -> Aarq:
    """An AARQ; FrameError as ``decode_acse`` raises it, or for another ACSE APDU."""
    return _expect(data, Aarq)


def decode_aare(data: bytes) -> Aare:
    """An AARE; FrameError as ``decode_acse`` raises it, or for another ACSE APDU."""
    return _expect(data, Aare)


def decode_rlrq(data: bytes) -> Rlrq:
    """An RLRQ; FrameError as ``decode_acse`` raises it, or for another ACSE APDU."""
    return _expect(data, Rlrq)


def decode_rlre(data: bytes) -> Rlre:
    """An RLRE; FrameError as ``decode_acse`` raises it, or for another ACSE APDU."""
    return _expect(data, Rlre)


def check_aare(aare: Aare, meter: str | None = None) -> None:
    """AssociationRefused naming the ACSE diagnostic (and the xDLMS initiate error when the
    meter put a Confirmed-Service-Error in user-information) unless the AARE accepts."""
    if aare.result == AssociationResult.ACCEPTED:
        return
    try:
        result = AssociationResult(aare.result).name.lower().replace("_", "-")
    except ValueError:
        result = f"result {aare.result}"
    reason = f"{result}, {aare.reason}"
    user = aare.user_information
    if user and user[0] == CONFIRMED_SERVICE_ERROR_TAG:
        try:
            reason += f" ({ServiceError.decode(user).describe()})"
        except FrameError:
            pass  # the ACSE diagnostic alone still says why
    raise AssociationRefused(reason, result=aare.result, diagnostic=aare.diagnostic, meter=meter)


# -- xDLMS Initiate ---------------------------------------------------------------------------

_CONFORMANCE_TAG = b"\x5f\x1f\x04\x00"


def _encode_conformance(conformance: int) -> bytes:
    return _CONFORMANCE_TAG + (int(conformance) & 0xFFFFFF).to_bytes(3, "big")


def _decode_conformance(data: bytes, pos: int, what: str) -> tuple[Conformance, int]:
    if data[pos : pos + 4] != _CONFORMANCE_TAG or pos + 7 > len(data):
        raise FrameError(f"{what}: no conformance block", offset=pos, field="conformance")
    return Conformance(int.from_bytes(data[pos + 4 : pos + 7], "big")), pos + 7


def _need(data: bytes, pos: int, n: int, what: str, field: str) -> None:
    if pos + n > len(data):
        raise FrameError(f"{what}: {field} truncated", offset=pos, field=field)


@attrs.frozen
class InitiateRequest:
    conformance: Conformance
    max_receive_pdu_size: int = 0xFFFF
    dlms_version: int = 6
    dedicated_key: bytes | None = attrs.field(default=None, repr=False)
    response_allowed: bool = True
    quality_of_service: int | None = None

    def encode(self) -> bytes:
        out = bytearray(b"\x01")
        if self.dedicated_key is None:
            out.append(0)
        else:
            out += bytes((1, len(self.dedicated_key))) + self.dedicated_key
        out += b"\x00" if self.response_allowed else b"\x01\x00"
        out += b"\x00" if self.quality_of_service is None else bytes((1, self.quality_of_service))
        out.append(self.dlms_version)
        out += _encode_conformance(self.conformance)
        out += self.max_receive_pdu_size.to_bytes(2, "big")
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> InitiateRequest:
        """Raises FrameError for a wrong tag, truncated fields, a missing conformance block
        or trailing bytes."""
        what = "InitiateRequest"
        if not data or data[0] != 0x01:
            raise FrameError(f"{what}: tag {data[:1].hex() or 'missing'}", offset=0, field="tag")
        pos = 1
        _need(data, pos, 1, what, "dedicated-key")
        key = None
        if data[pos]:
            _need(data, pos, 2, what, "dedicated-key")
            n = data[pos + 1]
            _need(data, pos + 2, n, what, "dedicated-key")
            key = bytes(data[pos + 2 : pos + 2 + n])
            pos += 2 + n
        else:
            pos += 1
        _need(data, pos, 1, what, "response-allowed")
        allowed = True
        if data[pos]:
            _need(data, pos, 2, what, "response-allowed")
            allowed = bool(data[pos + 1])
            pos += 2
        else:
            pos += 1
        _need(data, pos, 1, what, "quality-of-service")
        qos = None
        if data[pos]:
            _need(data, pos, 2, what, "quality-of-service")
            qos = data[pos + 1]
            pos += 2
        else:
            pos += 1
        _need(data, pos, 1, what, "dlms-version")
        version = data[pos]
        conformance, pos = _decode_conformance(data, pos + 1, what)
        _need(data, pos, 2, what, "max-receive-pdu-size")
        size = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 != len(data):
            raise FrameError(f"{what}: trailing bytes", offset=pos + 2, field="trailing bytes")
        return cls(conformance, size, version, key, allowed, qos)


# Confirmed-Service-Error (Green Book, xDLMS): which service failed, then ServiceError; the
# names are apdu.py's tables.
CONFIRMED_SERVICE_ERROR_TAG = Tag.CONFIRMED_SERVICE_ERROR


@attrs.frozen
class ServiceError:
    """A Confirmed-Service-Error: ``0E service error-class error`` (e.g. ``0E 01 06 01``,
    initiate refused with dlms-version-too-low)."""

    service: int
    error_class: int
    error: int

    @property
    def service_name(self) -> str:
        return CONFIRMED_SERVICES.get(self.service, f"service {self.service}")

    @property
    def error_name(self) -> str:
        class_name, values = SERVICE_ERROR_KINDS.get(self.error_class, (None, ()))
        if class_name is None:
            return f"error class {self.error_class}, value {self.error}"
        value = values[self.error] if self.error < len(values) else f"value {self.error}"
        return f"{class_name}: {value}"

    def describe(self) -> str:
        return f"{self.service_name} refused, {self.error_name}"

    def encode(self) -> bytes:
        return bytes((CONFIRMED_SERVICE_ERROR_TAG, self.service, self.error_class, self.error))

    @classmethod
    def decode(cls, data: bytes) -> ServiceError:
        """Raises FrameError unless ``data`` is exactly ``0E service class error``."""
        what = "Confirmed-Service-Error"
        if not data or data[0] != CONFIRMED_SERVICE_ERROR_TAG:
            raise FrameError(f"{what}: tag {data[:1].hex() or 'missing'}", offset=0, field="tag")
        _need(data, 1, 3, what, "service-error")
        if len(data) != 4:
            raise FrameError(f"{what}: trailing bytes", offset=4, field="trailing bytes")
        return cls(data[1], data[2], data[3])


class InitiateRefused(ConfirmedServiceError):
    """The meter answered the xDLMS InitiateRequest with a Confirmed-Service-Error;
    ``service_error`` holds it."""

    def __init__(self, service_error: ServiceError, *, meter: str | None = None) -> None:
        self.service_error = service_error
        super().__init__(service_error.describe(), meter=meter)


def decode_initiate_response(data: bytes, *, meter: str | None = None) -> InitiateResponse:
    """The InitiateResponse in an AARE's user-information; ConfirmedServiceError naming the
    failure when the meter sent a Confirmed-Service-Error instead, FrameError if malformed."""
    if data[:1] == bytes((CONFIRMED_SERVICE_ERROR_TAG,)):
        error = ServiceError.decode(data)
        raise InitiateRefused(error, meter=meter)
    return InitiateResponse.decode(data)


@attrs.frozen
class InitiateResponse:
    conformance: Conformance
    max_receive_pdu_size: int
    dlms_version: int = 6
    quality_of_service: int | None = None
    vaa_name: int = 0x0007

    def encode(self) -> bytes:
        out = bytearray(b"\x08")
        out += b"\x00" if self.quality_of_service is None else bytes((1, self.quality_of_service))
        out.append(self.dlms_version)
        out += _encode_conformance(self.conformance)
        out += self.max_receive_pdu_size.to_bytes(2, "big")
        out += self.vaa_name.to_bytes(2, "big")
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> InitiateResponse:
        """Raises FrameError for a wrong tag, truncated fields, a missing conformance block
        or trailing bytes."""
        what = "InitiateResponse"
        if not data or data[0] != 0x08:
            raise FrameError(f"{what}: tag {data[:1].hex() or 'missing'}", offset=0, field="tag")
        pos = 1
        _need(data, pos, 1, what, "quality-of-service")
        qos = None
        if data[pos]:
            _need(data, pos, 2, what, "quality-of-service")
            qos = data[pos + 1]
            pos += 2
        else:
            pos += 1
        _need(data, pos, 1, what, "dlms-version")
        version = data[pos]
        conformance, pos = _decode_conformance(data, pos + 1, what)
        _need(data, pos, 4, what, "max-receive-pdu-size")
        size = int.from_bytes(data[pos : pos + 2], "big")
        vaa = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if pos + 4 != len(data):
            raise FrameError(f"{what}: trailing bytes", offset=pos + 4, field="trailing bytes")
        return cls(conformance, size, version, qos, vaa)
