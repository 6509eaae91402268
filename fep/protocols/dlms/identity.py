"""fep's own side of DLMS security, sans-IO: the client system title of a node, the names
its invocation counters are kept under, and the security event of a refused downgrade.

A meter configured with keys never has a plain (unciphered, unauthenticated) APDU accepted
from it: the push listener, pushes over GPRS sessions and the answers of a pull session
refuse it, and each refusal is counted, logged and told to the alarm engine as a
``MeterEvent`` (code ``dlms:security:unciphered-apdu``, kind tamper, severity major) through
the record sink, at most one event per meter per minute (``SecurityEvents`` in context.py
counts, session.py's ``report_downgrade`` logs and submits).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import attrs

from fep.model import EventKind, MeterEvent, Severity
from fep.options import Option, Section, expects, words

# fep's client system title when nothing configures one (ClientSettings' default).
DEFAULT_SYSTEM_TITLE = b"FEP\x00\x00\x00\x00\x01"
# The manufacturer-style prefix of a node's derived system title.
SYSTEM_TITLE_PREFIX = b"FEP"
DOWNGRADE_CODE = "dlms:security:unciphered-apdu"


def node_system_title(node: str) -> bytes:
    """The client system title of fep node ``node``: ``FEP`` and the first 5 bytes of the
    SHA-256 of the node name (8 bytes), so that every node ciphers under its own title."""
    return SYSTEM_TITLE_PREFIX + hashlib.sha256(node.encode("utf-8")).digest()[:5]


def key_fingerprint(block_cipher_key: bytes) -> str:
    """A name for a meter's block cipher key in counter keys (never the key itself)."""
    return hashlib.sha256(b"fep invocation counters\x00" + block_cipher_key).hexdigest()[:16]


def counter_key(client_system_title: bytes, block_cipher_key: bytes) -> str:
    """Our send counters are kept per client system title and key: the pair that, with the
    counter, makes the AES-GCM nonce."""
    return f"{client_system_title.hex()}:{key_fingerprint(block_cipher_key)}"


def downgrade_event(meter: str, where: str, detail: str, when: datetime) -> MeterEvent:
    """The security event of an unciphered APDU refused from a meter with keys."""
    return MeterEvent(
        meter=meter,
        code=DOWNGRADE_CODE,
        kind=EventKind.TAMPER,
        severity=Severity.MAJOR,
        time=when,
        text=f"unciphered APDU refused from a meter with keys ({where}): {detail}",
        source="dlms-security",
    )


@expects("a DLMS system title (16 hex digits) or empty")
def system_title(text: str) -> bytes:
    """``[dlms] system_title``: 8 bytes in hex, or empty (b"")."""
    value = text.strip()
    if value and (len(value) != 16 or any(c not in "0123456789abcdefABCDEF" for c in value)):
        raise ValueError("expected 8 bytes in hex (16 digits), or empty")
    return bytes.fromhex(value)


@attrs.frozen
class DlmsSection:
    """``[dlms]``: fep's client system title (empty: derived from the node name)."""

    system_title: bytes
    # Directories of the user's own push list layouts (*.ini), read after the shipped ones.
    push_layouts: tuple[str, ...] = ()

    def client_system_title(self, node: str) -> bytes:
        """The configured title, else the one derived from the node name."""
        return self.system_title or node_system_title(node)


DLMS = Section("dlms", {
    "system_title": Option(
        system_title, "", "fep's DLMS client system title (16 hex digits); empty: "
        "FEP and 5 bytes of the SHA-256 of [fep] node, one per node"
    ),
    "push_layouts": Option(
        words, "", "directories of push list layouts (*.ini, docs/protocols/dlms-push.md), "
        "read after the shipped etc/push-layouts; a section of the same name replaces a "
        "shipped one"
    ),
}, DlmsSection)
