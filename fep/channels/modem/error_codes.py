"""The meanings of +CME ERROR (3GPP TS 27.007 clause 9.2) and +CMS ERROR (3GPP TS 27.005
clause 3.2.5) codes, and the reverse look-up for modems that report them as text (AT+CMEE=2)."""

from __future__ import annotations

from typing import Final

# 3GPP TS 27.007 9.2.1 (general errors) and 9.2.2 (GPRS/packet domain errors).
CME_ERRORS: Final[dict[int, str]] = {
    0: "phone failure",
    1: "no connection to phone",
    2: "phone-adaptor link reserved",
    3: "operation not allowed",
    4: "operation not supported",
    5: "PH-SIM PIN required",
    6: "PH-FSIM PIN required",
    7: "PH-FSIM PUK required",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    15: "SIM wrong",
    16: "incorrect password",
    17: "SIM PIN2 required",
    18: "SIM PUK2 required",
    20: "memory full",
    21: "invalid index",
    22: "not found",
    23: "memory failure",
    24: "text string too long",
    25: "invalid characters in text string",
    26: "dial string too long",
    27: "invalid characters in dial string",
    30: "no network service",
    31: "network timeout",
    32: "network not allowed - emergency calls only",
    40: "network personalization PIN required",
    41: "network personalization PUK required",
    42: "network subset personalization PIN required",
    43: "network subset personalization PUK required",
    44: "service provider personalization PIN required",
    45: "service provider personalization PUK required",
    46: "corporate personalization PIN required",
    47: "corporate personalization PUK required",
    48: "hidden key required",
    49: "EAP method not supported",
    50: "incorrect parameters",
    51: "command implemented but currently disabled",
    52: "command aborted by user",
    53: "not attached to network due to MT functionality restrictions",
    54: "modem not allowed - MT restricted to emergency calls only",
    55: "operation not allowed because of MT functionality restrictions",
    56: "fixed dial number only allowed - called number is not a fixed dial number",
    57: "temporarily out of service due to other MT usage",
    58: "language/alphabet not supported",
    59: "unexpected data value",
    60: "system failure",
    61: "data missing",
    62: "call barred",
    63: "message waiting indication subscription failure",
    100: "unknown",
    103: "illegal MS",
    106: "illegal ME",
    107: "GPRS services not allowed",
    111: "PLMN not allowed",
    112: "location area not allowed",
    113: "roaming not allowed in this location area",
    132: "service option not supported",
    133: "requested service option not subscribed",
    134: "service option temporarily out of order",
    148: "unspecified GPRS error",
    149: "PDP authentication failure",
    150: "invalid mobile class",
}

# 3GPP TS 27.005 3.2.5: 0..127 are RP causes (TS 24.011 annex E-2), 128..255 TP-FCS values
# (TS 23.040 9.2.3.22), 300.. the ME/TA's own.
CMS_ERRORS: Final[dict[int, str]] = {
    1: "unassigned (unallocated) number",
    8: "operator determined barring",
    10: "call barred",
    21: "short message transfer rejected",
    22: "memory capacity exceeded",
    27: "destination out of order",
    28: "unidentified subscriber",
    29: "facility rejected",
    30: "unknown subscriber",
    38: "network out of order",
    41: "temporary failure",
    42: "congestion",
    47: "resources unavailable, unspecified",
    50: "requested facility not subscribed",
    69: "requested facility not implemented",
    81: "invalid short message transfer reference value",
    95: "invalid message, unspecified",
    96: "invalid mandatory information",
    97: "message type non-existent or not implemented",
    98: "message not compatible with short message protocol state",
    99: "information element non-existent or not implemented",
    111: "protocol error, unspecified",
    127: "interworking, unspecified",
    0x80: "telematic interworking not supported",
    0x81: "short message type 0 not supported",
    0x82: "cannot replace short message",
    0x8F: "unspecified TP-PID error",
    0x90: "data coding scheme (alphabet) not supported",
    0x91: "message class not supported",
    0x9F: "unspecified TP-DCS error",
    0xA0: "command cannot be actioned",
    0xA1: "command unsupported",
    0xAF: "unspecified TP-Command error",
    0xB0: "TPDU not supported",
    0xC0: "SC busy",
    0xC1: "no SC subscription",
    0xC2: "SC system failure",
    0xC3: "invalid SME address",
    0xC4: "destination SME barred",
    0xC5: "SM rejected - duplicate SM",
    0xC6: "TP-VPF not supported",
    0xC7: "TP-VP not supported",
    0xD0: "(U)SIM SMS storage full",
    0xD1: "no SMS storage capability in (U)SIM",
    0xD2: "error in MS",
    0xD3: "memory capacity exceeded",
    0xD4: "(U)SIM application toolkit busy",
    0xD5: "(U)SIM data download error",
    0xFF: "unspecified error cause",
    300: "ME failure",
    301: "SMS service of ME reserved",
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    305: "invalid text mode parameter",
    310: "SIM not inserted",
    311: "SIM PIN required",
    312: "PH-SIM PIN required",
    313: "SIM failure",
    314: "SIM busy",
    315: "SIM wrong",
    316: "SIM PUK required",
    317: "SIM PIN2 required",
    318: "SIM PUK2 required",
    320: "memory failure",
    321: "invalid memory index",
    322: "memory full",
    330: "SMSC address unknown",
    331: "no network service",
    332: "network timeout",
    340: "no +CNMA acknowledgement expected",
    500: "unknown error",
}

_CME_BY_TEXT: Final = {text.lower(): code for code, text in CME_ERRORS.items()}
_CMS_BY_TEXT: Final = {text.lower(): code for code, text in CMS_ERRORS.items()}


def cme_meaning(code: int) -> str:
    """What a +CME ERROR code means (27.007 9.2)."""
    return CME_ERRORS.get(code, f"manufacturer-specific or unknown error {code}")


def cms_meaning(code: int) -> str:
    """What a +CMS ERROR code means (27.005 3.2.5)."""
    if code in CMS_ERRORS:
        return CMS_ERRORS[code]
    if 0 <= code <= 127:
        return f"network cause {code} (TS 24.011 annex E-2)"
    if 0xE0 <= code <= 0xFE:
        return f"SC application-specific cause {code:#04x}"
    if 128 <= code <= 255:
        return f"TP failure cause {code:#04x} (TS 23.040 9.2.3.22)"
    if code >= 512:
        return f"manufacturer-specific error {code}"
    return f"unknown error {code}"


def cme_code(text: str) -> int | None:
    """The code of a +CME ERROR given as text (AT+CMEE=2), None for an unknown text."""
    return _CME_BY_TEXT.get(text.strip().lower())


def cms_code(text: str) -> int | None:
    """The code of a +CMS ERROR given as text, None for an unknown text."""
    return _CMS_BY_TEXT.get(text.strip().lower())
