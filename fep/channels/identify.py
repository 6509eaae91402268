"""Who dialled in: the identity of an inbound modem connection, read from its first bytes by
configurable rules. Sans-IO (no Twisted): bytes in, an Identified result (or need-more) out.

Rules (docs/channels/gprs.md):

``ascii``
    A registration line the modem sends first, matched by a regular expression with named
    groups (``imei``, ``iccid``, ``imsi``, ``serial``), e.g. ``ID:356938035643809\\r\\n``.
    The line ends with CR or LF; it is consumed (the meter never sees it).
``binary``
    The binary registration packet documented in docs/channels/gprs.md: ``A5 01 LL LL``,
    tag-length-value fields (IMEI, ICCID, IMSI in packed BCD, the meter's serial in ASCII), a
    CRC-16/X.25 and ``5A``. Consumed.
``dlms``
    A DLMS/COSEM wrapper frame carrying a Data- or Event-Notification: the system title of a
    general-glo/ded-ciphered one, or the logical device name (0.0.42.0.0.255) of a plain
    one, and the wrapper's source wPort. Kept: the frame is also the first push.
``dlms-hdlc``
    An HDLC frame carrying a push (HAN ports): the system title of a ciphered one, the
    logical device name of a plain one, else the serial number its list carries (by the
    shipped push list layouts). Kept: the frame is also the first push.
``iec62056-21``
    An IEC 62056-21 identification line ``/XXXZident`` and the readout block after it (the
    meter's serial number from 0.0.0 / C.1.0 / 96.1.0). Kept: it is also the first push.
``gw3761``
    A Q/GDW 1376.1 concentrator's login frame (AFN 02 F1, uplink, good checksum): its address
    A1:A2 (key ``gw3761``, e.g. ``gw3761=4403:0004``). Kept: the push handler confirms it.
``dlt698``
    A DL/T 698.45 terminal's LINK-Request (login or heartbeat) frame: its server address
    (key ``dlt698``, e.g. ``dlt698=000000009999``). Kept: the push handler answers it.

Bytes before the identifying message are line garbage (modem chatter, AT echoes, noise):
they are dropped and counted. Bytes after it are the session's data.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

import attrs

from fep.errors import FrameError, ProtocolError
from fep.protocols.dlms import apdu as A
from fep.protocols.dlms import hdlc
from fep.protocols.dlms.push import decode_push, logical_device_name
from fep.protocols.dlms.pushframing import strip_llc
from fep.protocols.dlms.security import general_system_title
from fep.protocols.dlt698.apdu import LinkRequest, LinkType, decode_apdu
from fep.protocols.dlt698.frames import AddressType, crc16, decode_frame
from fep.protocols.gw3761 import frames as gw_frames
from fep.protocols.gw3761 import services as gw_services
from fep.protocols.iec62056_21.frames import (
    ETX,
    MAX_LINE,
    STX,
    DataBlock,
    Identification,
    parse_identification,
)
from fep.protocols.iec62056_21.readout import parse_readout

# Identity keys in the order that makes the modem's name (the session registry's key and the
# route of a meter registered from it): the modem's own identities before the meter's.
KEY_ORDER: Final = ("imei", "iccid", "imsi", "serial", "system_title", "ldn", "ident", "wport",
                    "dlt698")
# Keys that name one device: a session holding one of these replaces another holding it.
# (An IEC identification text names a meter model, a wPort a logical device number.)
UNIQUE_KEYS: Final = frozenset({"imei", "iccid", "imsi", "serial", "system_title", "ldn",
                                "dlt698"})
RULE_NAMES: Final = ("ascii", "binary", "dlms", "dlms-hdlc", "iec62056-21", "gw3761", "dlt698")

DEFAULT_REGISTRATION: Final = (
    r"ID:(?P<imei>[0-9]{15})(?:[;,]ICCID[:=](?P<iccid>[0-9]{18,20}F?))?"
    r"(?:[;,]SN[:=](?P<serial>[0-9A-Za-z_.-]{1,32}))?"
    r"(?:[;,]SECRET[:=](?P<secret>[^;,\s]{1,128}))?"
)
_GROUPS: Final = frozenset({"imei", "iccid", "imsi", "serial", "secret"})
# The registration's proof of identity (a per-modem secret): kept apart from the identity
# keys, which are logged, listed and stored; it never is.
PROOF_GROUP: Final = "secret"
# A value may become a route argument (gprs:imei=...): no separators of the route syntax.
_ROUTE_SAFE = re.compile(r"^[0-9A-Za-z_.+-]{1,64}$")


class IdentificationError(FrameError):
    """The connection's first bytes hold no registration any rule knows."""


@attrs.frozen
class Identity:
    """What a modem said about itself: ``rule`` that matched, ``keys`` (``imei``, ``iccid``,
    ``imsi``, ``serial``, ``system_title`` in hex, ``ldn``, ``ident``, ``wport``) in
    KEY_ORDER, and ``protocol`` when the identifying bytes were a meter protocol's own."""

    rule: str
    keys: tuple[tuple[str, str], ...]
    protocol: str | None = None
    # The secret the registration carried (SECRET=..., binary tag 05): compared, never shown.
    proof: str | None = attrs.field(default=None, repr=False, eq=False)

    @classmethod
    def of(
        cls,
        rule: str,
        keys: Mapping[str, str | None],
        protocol: str | None = None,
        proof: str | None = None,
    ) -> Identity:
        ordered = tuple(
            (k, str(keys[k])) for k in KEY_ORDER if keys.get(k) not in (None, "")
        )
        return cls(rule, ordered, protocol, proof)

    def get(self, key: str) -> str | None:
        for k, v in self.keys:
            if k == key:
                return v
        return None

    def as_dict(self) -> dict[str, str]:
        return dict(self.keys)

    def unique(self) -> list[str]:
        """``key=value`` names that belong to this device alone (registry keys)."""
        return [f"{k}={v}" for k, v in self.keys if k in UNIQUE_KEYS]

    @property
    def name(self) -> str:
        """The modem's name: its first key as ``key=value`` (``imei=356938035643809``)."""
        key, value = self.keys[0] if self.keys else ("unknown", "?")
        return f"{key}={value}"

    def route(self) -> str | None:
        """A route naming this modem (``gprs:imei=...``), None when no key fits a route."""
        for key, value in self.keys:
            if key in UNIQUE_KEYS and _ROUTE_SAFE.match(value):
                return f"gprs:{key}={value}"
        return None


@attrs.frozen
class Identified:
    """The outcome: who it is, how many garbage bytes came first, and the bytes the session
    goes on with (after a registration message, or from the identifying push on)."""

    identity: Identity
    garbage: int
    data: bytes


@attrs.frozen
class _Match:
    start: int
    end: int
    identity: Identity
    keep: bool


@attrs.frozen
class _Partial:
    start: int


_Result = _Match | _Partial | None
# What the rules read: the identifier's buffer (a bytearray that grows at its end and loses
# garbage at its front), or bytes.
Buffer = bytes | bytearray


@attrs.define
class Cursor:
    """Where a rule goes on in a buffer that grows, so that each byte received is examined a
    bounded number of times however small the pieces (issue 14: before login, anyone on the
    APN sends these bytes). Kept by the identifier for each rule (rules are shared by all
    connections), offsets relative to its buffer:

    ``start``
        no candidate of the rule starts before it any more: every earlier one was refused
        for good (bytes that arrive later cannot change the verdict);
    ``seen``
        the bytes before it were already searched for what the candidate at ``start`` waits
        for (a line end, the end of a readout block), and it is not there;
    ``memo``
        what the rule worked out about the candidate at ``start`` (None when nothing);
    ``work``
        how many bytes the rule examined in all (searched, checksummed, parsed): the
        identifier's scan budget and the tests' measure of work."""

    start: int = 0
    seen: int = 0
    memo: object = None
    work: int = 0

    def at(self, start: int) -> None:
        """The rule's earliest live candidate is now at ``start``."""
        if start != self.start:
            self.start = start
            self.memo = None
        self.seen = max(self.seen, start)

    def drop(self, count: int) -> None:
        """The buffer lost ``count`` bytes from its front (garbage)."""
        if count <= 0:
            return
        if self.start < count:
            self.memo = None
        self.start = max(self.start - count, 0)
        self.seen = max(self.seen - count, 0)


class Rule:
    """One way of recognising a registration at some position of the buffer."""

    name = "rule"

    def scan(self, buffer: Buffer, cursor: Cursor | None = None) -> _Result:
        """The earliest complete match, else the start of the earliest candidate that needs
        more bytes, else None. With a ``cursor`` from an earlier scan of the same buffer (it
        has grown since, or lost garbage from its front as ``Cursor.drop`` says), the scan
        goes on where that one stopped: same result, in work linear in the new bytes."""
        raise NotImplementedError


def scan_candidates(buffer: Buffer, c: Cursor, find: Callable[[Buffer, int], int],
                    at: Callable[[Buffer, int, Cursor], _Result],
                    waiting: Callable[[Buffer, int], int | None]) -> _Result:
    """The candidate scan the binary rules share: each candidate from ``c.start`` on
    (``find(buffer, frm)``: the next one at or after ``frm``, -1 when none) is judged by
    ``at``; the first that is not refused decides, and when it waits for more bytes its
    frame's length (``waiting``: None while its header is not all there) is kept in
    ``c.memo`` so that later scans wait for the frame without judging it again. None when
    every candidate was refused: the caller then says where its next candidate may begin
    (``c.at``). Each byte is examined a bounded number of times (``c.work`` counts them)."""
    if isinstance(c.memo, int) and len(buffer) < c.start + c.memo:
        # The waiting candidate's frame is not all there yet (memo: its length).
        c.work += 1
        return _Partial(c.start)
    frm = c.start
    i = find(buffer, frm)
    while i >= 0:
        c.work += i + 1 - frm
        result = at(buffer, i, c)
        if result is not None:
            c.at(i)
            if isinstance(result, _Partial):
                length = waiting(buffer, i)
                if length:
                    c.memo = length
            return result
        frm = i + 1
        i = find(buffer, frm)
    c.work += max(len(buffer) - frm, 0)
    return None


def _finder(marker: bytes) -> Callable[[Buffer, int], int]:
    return lambda buffer, frm: buffer.find(marker, frm)


# -- ascii ------------------------------------------------------------------------------------

MAX_REGISTRATION_LINE: Final = 256


class AsciiRule(Rule):
    """A registration line matched by a regular expression (searched within the line)."""

    name = "ascii"

    def __init__(self, pattern: str = DEFAULT_REGISTRATION) -> None:
        try:
            self.pattern = re.compile(pattern.encode("latin-1"))
        except (re.error, UnicodeEncodeError) as e:
            raise ValueError(f"registration pattern {pattern!r}: {e}") from None
        unknown = set(self.pattern.groupindex) - _GROUPS
        if unknown or not set(self.pattern.groupindex) - {PROOF_GROUP}:
            raise ValueError(
                f"registration pattern {pattern!r}: name its parts with the groups "
                f"(?P<imei>...), (?P<iccid>...), (?P<imsi>...), (?P<serial>...) "
                f"(and (?P<secret>...) for the modem's secret)"
                + (f"; unknown group(s) {', '.join(sorted(unknown))}" if unknown else "")
            )

    def scan(self, buffer: Buffer, cursor: Cursor | None = None) -> _Result:
        # cursor.start: the start of the line that has no end yet; cursor.seen: how far it
        # was searched for its end. (The buffer's first byte starts a line: garbage dropped
        # in front of an open line ends it, as it always did.)
        c = cursor if cursor is not None else Cursor()
        start = c.start
        while start < len(buffer):
            frm = max(start, c.seen)
            found = _LINE_END.search(buffer, frm)
            if found is None:
                c.work += len(buffer) - frm
                c.at(start)
                c.seen = len(buffer)
                tail = len(buffer) - start
                return _Partial(start) if tail <= MAX_REGISTRATION_LINE else None
            nl = found.start()
            c.work += nl + 1 - frm + (nl - start)
            line = bytes(buffer[start:nl])
            m = self.pattern.search(line)
            if m is not None:
                keys = {
                    k: v.decode("latin-1") for k, v in m.groupdict().items() if v is not None
                }
                proof = keys.pop(PROOF_GROUP, None)
                if keys:
                    end = nl + 1
                    if buffer[nl : nl + 2] == b"\r\n":
                        end = nl + 2
                    identity = Identity.of(self.name, keys, proof=proof)
                    return _Match(start + m.start(), end, identity, False)
            start = nl + 1
        c.at(start)
        return None


# The end of a line: one search (a search for CR then one for LF would each run to the end
# of a buffer that has only the other).
_LINE_END: Final = re.compile(rb"[\r\n]")


# -- binary -----------------------------------------------------------------------------------

BINARY_START: Final = 0xA5
BINARY_END: Final = 0x5A
BINARY_REGISTRATION: Final = 0x01
MAX_BINARY_BODY: Final = 512
TAG_IMEI: Final = 0x01
TAG_ICCID: Final = 0x02
TAG_IMSI: Final = 0x03
TAG_SERIAL: Final = 0x04
TAG_SECRET: Final = 0x05
MAX_SECRET: Final = 128


# Each byte with its bits in reverse order.
_REVERSED: Final = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def crc16_x25(data: bytes) -> int:
    """CRC-16/X.25 (the HDLC FCS: reflected 0x1021, init and xorout 0xFFFF), computed in C:
    the unreflected CRC-16/CCITT of ``binascii`` over the bit-reversed bytes, reversed back
    (a byte-by-byte loop made each candidate packet before login cost 0.3 ms)."""
    crc = binascii.crc_hqx(bytes(data).translate(_REVERSED), 0xFFFF)
    return (_REVERSED[crc & 0xFF] << 8 | _REVERSED[crc >> 8]) ^ 0xFFFF


def bcd_digits(raw: bytes) -> str:
    """Packed BCD, high nibble first, ending at the first F nibble; ValueError otherwise."""
    digits: list[str] = []
    for byte in raw:
        for nibble in (byte >> 4, byte & 0x0F):
            if nibble == 0x0F:
                return "".join(digits)
            if nibble > 9:
                raise ValueError(f"nibble {nibble:X} is not a BCD digit")
            digits.append(str(nibble))
    return "".join(digits)


def bcd_bytes(digits: str, size: int) -> bytes:
    """``digits`` packed BCD in ``size`` bytes, F-padded."""
    text = digits + "F" * (2 * size - len(digits))
    if len(text) != 2 * size or not digits.isdigit():
        raise ValueError(f"{digits!r} does not fit {size} BCD bytes")
    return bytes.fromhex(text)


def encode_binary_registration(
    *,
    imei: str | None = None,
    iccid: str | None = None,
    imsi: str | None = None,
    serial: str | None = None,
    secret: str | None = None,
) -> bytes:
    """The binary registration packet (docs/channels/gprs.md) for these identities (and the
    modem's secret, when it has one)."""
    body = b""
    for tag, value, size in ((TAG_IMEI, imei, 8), (TAG_ICCID, iccid, 10), (TAG_IMSI, imsi, 8)):
        if value:
            body += bytes([tag, size]) + bcd_bytes(value, size)
    if serial:
        raw = serial.encode("ascii")
        body += bytes([TAG_SERIAL, len(raw)]) + raw
    if secret:
        raw = secret.encode("utf-8")
        body += bytes([TAG_SECRET, len(raw)]) + raw
    head = bytes([BINARY_REGISTRATION]) + len(body).to_bytes(2, "big") + body
    crc = crc16_x25(head).to_bytes(2, "little")
    return bytes([BINARY_START]) + head + crc + bytes([BINARY_END])


def decode_binary_body(body: bytes) -> dict[str, str]:
    """The identities in a registration's TLV body; ValueError when it is malformed."""
    keys: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        if pos + 2 > len(body):
            raise ValueError("truncated field header")
        tag, size = body[pos], body[pos + 1]
        value = body[pos + 2 : pos + 2 + size]
        if len(value) != size:
            raise ValueError(f"field {tag:#04x} runs past the body")
        pos += 2 + size
        if tag in (TAG_IMEI, TAG_ICCID, TAG_IMSI):
            digits = bcd_digits(value)
            if not digits:
                raise ValueError(f"field {tag:#04x} has no digits")
            keys[{TAG_IMEI: "imei", TAG_ICCID: "iccid", TAG_IMSI: "imsi"}[tag]] = digits
        elif tag == TAG_SERIAL:
            text = value.decode("ascii", "replace")
            if not _ROUTE_SAFE.match(text):
                raise ValueError(f"serial {text!r} is not printable ASCII without separators")
            keys["serial"] = text
        elif tag == TAG_SECRET:
            if not 1 <= size <= MAX_SECRET:
                raise ValueError("secret field of a bad length")
            keys[PROOF_GROUP] = value.decode("utf-8", "replace")
        # Other tags: fields of a later layout version, skipped.
    if not set(keys) - {PROOF_GROUP}:
        raise ValueError("no IMEI, ICCID, IMSI or serial in the registration")
    return keys


_BINARY_CANDIDATE: Final = re.compile(
    re.escape(bytes([BINARY_START])) + b"(?:" + re.escape(bytes([BINARY_REGISTRATION])) + rb"|\Z)"
)


def _binary_candidate(buffer: Buffer, frm: int) -> int:
    found = _BINARY_CANDIDATE.search(buffer, frm)
    return -1 if found is None else found.start()


def _binary_length(buffer: Buffer, i: int) -> int | None:
    return 4 + int.from_bytes(buffer[i + 2 : i + 4], "big") + 3 if i + 4 <= len(buffer) else None


class BinaryRule(Rule):
    """The binary registration packet, found anywhere in the buffer."""

    name = "binary"

    def scan(self, buffer: Buffer, cursor: Cursor | None = None) -> _Result:
        # Candidates: the start byte followed by the registration type, or at the very end.
        # A refused one stays refused (its bytes are all there); cursor.start: the first
        # candidate not refused yet.
        c = cursor if cursor is not None else Cursor()
        result = scan_candidates(buffer, c, _binary_candidate, self._at, _binary_length)
        if result is None:
            c.at(len(buffer))
        return result

    def _at(self, buffer: Buffer, i: int, c: Cursor) -> _Result:
        if i + 4 > len(buffer):
            # Not enough to judge: a candidate unless what is there already says otherwise.
            if i + 1 < len(buffer) and buffer[i + 1] != BINARY_REGISTRATION:
                return None
            return _Partial(i)
        if buffer[i + 1] != BINARY_REGISTRATION:
            return None
        length = int.from_bytes(buffer[i + 2 : i + 4], "big")
        if length > MAX_BINARY_BODY:
            return None
        end = i + 4 + length + 3
        if end > len(buffer):
            return _Partial(i)
        if buffer[end - 1] != BINARY_END:
            return None
        head = bytes(buffer[i + 1 : i + 4 + length])
        c.work += len(head)
        if crc16_x25(head) != int.from_bytes(buffer[end - 3 : end - 1], "little"):
            return None
        try:
            keys = decode_binary_body(head[3:])
        except ValueError:
            return None
        proof = keys.pop(PROOF_GROUP, None)
        return _Match(i, end, Identity.of(self.name, keys, proof=proof), False)


# -- dlms -------------------------------------------------------------------------------------

# Plain Data-Notification, Event-Notification, general-glo and general-ded ciphering.
_DLMS_PUSH_TAGS: Final = frozenset({0x0F, 0xC2, 0xDB, 0xDC})
MAX_IDENTIFYING_APDU: Final = 4096


class DlmsRule(Rule):
    """A wrapper frame carrying a push: identified by its system title (ciphered) or its
    logical device name (plain), with the source wPort."""

    name = "dlms"

    def scan(self, buffer: Buffer, cursor: Cursor | None = None) -> _Result:
        # The earliest candidate that is not refused decides (a match after a waiting one
        # does not count): cursor.start is that candidate, the refused ones stay refused.
        c = cursor if cursor is not None else Cursor()
        result = scan_candidates(buffer, c, _finder(b"\x00\x01"), self._at, self._length)
        if result is not None:
            return result
        if buffer.endswith(b"\x00") and len(buffer) - 1 >= c.start:
            c.at(len(buffer) - 1)
            return _Partial(len(buffer) - 1)
        c.at(max(len(buffer) - 1, c.start))
        return None

    @staticmethod
    def _length(buffer: Buffer, i: int) -> int | None:
        return 8 + int.from_bytes(buffer[i + 6 : i + 8], "big") if i + 9 <= len(buffer) else None

    def _at(self, buffer: Buffer, i: int, c: Cursor) -> _Result:
        header = buffer[i : i + 8]
        if len(header) < 8:
            return _Partial(i)
        length = int.from_bytes(header[6:8], "big")
        if not 1 <= length <= MAX_IDENTIFYING_APDU:
            return None
        if len(buffer) >= i + 9 and buffer[i + 8] not in _DLMS_PUSH_TAGS:
            return None
        if len(buffer) < i + 8 + length:
            return _Partial(i)
        apdu = bytes(buffer[i + 8 : i + 8 + length])
        c.work += length
        keys = self.identify_apdu(apdu)
        if keys is None:
            return None
        keys["wport"] = str(int.from_bytes(header[2:4], "big"))
        return _Match(i, i + 8 + length, Identity.of(self.name, keys, "dlms"), True)

    @staticmethod
    def identify_apdu(apdu: bytes) -> dict[str, str] | None:
        try:
            if apdu[0] in (0xDB, 0xDC):
                return {"system_title": general_system_title(apdu).hex()}
            message = A.decode_apdu(apdu)
        except (FrameError, ValueError, IndexError):
            return None
        if not isinstance(message, A.DataNotification):
            return None
        try:
            name = logical_device_name(message)
        except FrameError:
            return None
        if name is None:
            return None
        text = name.decode("latin-1")
        if not _ROUTE_SAFE.match(text):
            return None
        return {"ldn": text}


# -- dlms-hdlc ---------------------------------------------------------------------------------


class DlmsHdlcRule(Rule):
    """An HDLC frame (I or UI, LLC header or none, not segmented) carrying a push, as HAN
    ports and the modems on them send: identified by the system title of a ciphered one, the
    logical device name of a plain one, else the serial number its list carries
    (push.SERIAL_NUMBERS, through the shipped list layouts)."""

    name = "dlms-hdlc"

    def scan(self, buffer: Buffer, cursor: Cursor | None = None) -> _Result:
        c = cursor if cursor is not None else Cursor()
        result = scan_candidates(buffer, c, _finder(b"\x7e"), self._at, self._length)
        if result is None:
            c.at(max(len(buffer), c.start))
        return result

    @staticmethod
    def _length(buffer: Buffer, i: int) -> int | None:
        if i + 3 > len(buffer):
            return None
        return 2 + (int.from_bytes(buffer[i + 1 : i + 3], "big") & 0x07FF)

    def _at(self, buffer: Buffer, i: int, c: Cursor) -> _Result:
        if len(buffer) < i + 3:
            return _Partial(i)
        fmt = int.from_bytes(buffer[i + 1 : i + 3], "big")
        length = fmt & hdlc.LENGTH_MASK
        if fmt & 0xF000 != hdlc.FORMAT_TYPE_3 or fmt & hdlc.SEGMENTATION_BIT or length < 9:
            return None
        if len(buffer) < i + length + 2:
            return _Partial(i)
        c.work += length
        try:
            frame = hdlc.decode_frame(bytes(buffer[i : i + length + 2]))
        except FrameError:
            return None
        if frame.kind not in (hdlc.FrameKind.I, hdlc.FrameKind.UI):
            return None
        keys = self.identify_apdu(strip_llc(frame.information))
        if keys is None:
            return None
        return _Match(i, i + length + 2, Identity.of(self.name, keys, "dlms"), True)

    @staticmethod
    def identify_apdu(apdu: bytes) -> dict[str, str] | None:
        keys = DlmsRule.identify_apdu(apdu)
        if keys is not None:
            return keys
        try:
            message = A.decode_apdu(apdu)
            if not isinstance(message, A.DataNotification):
                return None
            serial = decode_push("?", message).serial
        except (FrameError, ValueError, IndexError):
            return None
        if serial is None or not _ROUTE_SAFE.match(serial):
            return None
        return {"serial": serial}


# -- iec62056-21 ------------------------------------------------------------------------------

MAX_IDENTIFYING_READOUT: Final = 1 << 16


@attrs.frozen
class _IecWait:
    """An identification line that parsed, waiting for its readout block: the line's
    length, and how far after the candidate's start the block was searched for its end."""

    ident: Identification
    line: int
    seen: int


class IecRule(Rule):
    """``/XXXZident CRLF`` and the readout block after it."""

    name = "iec62056-21"

    def scan(self, buffer: Buffer, cursor: Cursor | None = None) -> _Result:
        # cursor.start: the first '/' not refused yet; cursor.seen: no CRLF before it (from
        # cursor.start on); cursor.memo: an _IecWait for the candidate at cursor.start.
        c = cursor if cursor is not None else Cursor()
        n = len(buffer)
        frm = c.start
        i = buffer.find(b"/", frm)
        crlf = -1  # the first CRLF at or after i, once searched for
        while i >= 0:
            c.work += i + 1 - frm
            if crlf < i:
                if i == c.start and isinstance(c.memo, _IecWait):
                    crlf = i + c.memo.line
                else:
                    at = max(i, c.seen - 1)
                    crlf = buffer.find(b"\r\n", at)
                    c.work += (crlf + 2 if crlf >= 0 else n) - at
                if crlf < 0:
                    if n - i > MAX_LINE:
                        # No line end after i: only a '/' within MAX_LINE of the end can
                        # still begin a line.
                        frm = n - MAX_LINE
                        i = buffer.find(b"/", frm)
                        continue
                    c.at(i)
                    c.seen = n
                    return _Partial(i)
            if crlf - i > MAX_LINE:
                # The line that would begin here is too long, and so is every one that
                # begins before crlf - MAX_LINE.
                frm = crlf - MAX_LINE
                i = buffer.find(b"/", frm)
                continue
            result = self._at(buffer, i, crlf, c)
            if result is not None:
                return result
            frm = i + 1
            i = buffer.find(b"/", frm)
        c.work += max(n - frm, 0)
        c.at(n)
        return None

    def _at(self, buffer: Buffer, i: int, crlf: int, c: Cursor) -> _Result:
        memo = c.memo if i == c.start and isinstance(c.memo, _IecWait) else None
        n = len(buffer)
        stx = crlf + 2
        if memo is not None:
            ident, etx_from = memo.ident, i + memo.seen
        else:
            c.work += crlf - i
            try:
                ident = parse_identification(bytes(buffer[i:crlf]))
            except FrameError:
                return None
            etx_from = stx + 1
        if stx >= n:
            c.at(i)
            c.memo = _IecWait(ident, crlf - i, etx_from - i)
            return _Partial(i)
        if buffer[stx] != STX:
            return None
        frm = max(etx_from, stx + 1)
        etx = buffer.find(bytes([ETX]), frm)
        c.work += (etx + 1 if etx >= 0 else n) - frm
        if etx < 0 or etx + 1 >= n:
            if n - stx > MAX_IDENTIFYING_READOUT:
                return None
            c.at(i)
            c.memo = _IecWait(ident, crlf - i, (etx if etx >= 0 else n) - i)
            return _Partial(i)
        keys = {"ident": ident.text}
        block = DataBlock(bytes(buffer[stx + 1 : etx]), buffer[etx + 1])
        c.work += etx - stx
        if block.bcc_ok:
            try:
                serial = parse_readout(block.data).serial()
            except FrameError:
                serial = None
            if serial and _ROUTE_SAFE.match(serial):
                keys["serial"] = serial
        return _Match(i, etx + 2, Identity.of(self.name, keys, "iec62056-21"), True)


# -- gw3761 -----------------------------------------------------------------------------------

# The identity key of a concentrator's login: its address A1:A2 as the meter list writes it
# (``4403:0004``, A2 in hex). Not a route argument (it holds a colon): the GPRS channel finds
# the concentrator's meter by its address (protocol gw3761) and the session then holds the
# names of that meter's ``gprs:`` route.
GW3761_KEY: Final = "gw3761"
# User data bytes a login frame may have for the rule to wait for it (a login is 12 bytes,
# with a time label 18, with a 2013 edition's extras a few more).
MAX_IDENTIFYING_LOGIN: Final = 255


class Gw3761Rule(Rule):
    """A Q/GDW 1376.1 login frame (``68 L L 68``, uplink, PRM = 1, AFN 02 F1, a good
    checksum): identified by the terminal's address A1:A2. Kept: the session's handler
    sees the login and confirms it."""

    name = "gw3761"

    def scan(self, buffer: Buffer, cursor: Cursor | None = None) -> _Result:
        # cursor.start: the first 68 not refused yet; cursor.memo: the frame length of the
        # candidate there once its header is known good.
        c = cursor if cursor is not None else Cursor()
        result = scan_candidates(buffer, c, _finder(b"\x68"), self._at, self._length)
        if result is None:
            c.at(max(len(buffer), c.start))
        return result

    @staticmethod
    def _length(buffer: Buffer, i: int) -> int | None:
        if i + 6 > len(buffer):
            return None
        return 8 + (int.from_bytes(buffer[i + 1 : i + 3], "little") >> 2)

    @staticmethod
    def _header(head: Buffer) -> bool:
        """Whether ``head`` (up to six bytes from a 68) can begin a login frame."""
        if len(head) >= 2 and (head[1] & 0x03) not in gw_frames.PROTOCOL_IDS:
            return False
        if len(head) >= 3:
            length = (head[1] | head[2] << 8) >> 2
            if not gw_frames.MIN_USER <= length <= MAX_IDENTIFYING_LOGIN:
                return False
        if len(head) >= 4 and head[3] != head[1]:
            return False
        if len(head) >= 5 and head[4] != head[2]:
            return False
        return len(head) < 6 or head[5] == gw_frames.START

    def _at(self, buffer: Buffer, i: int, c: Cursor) -> _Result:
        head = buffer[i : i + 6]
        if not self._header(head):
            return None
        if len(head) < 6:
            return _Partial(i)
        total = 8 + ((head[1] | head[2] << 8) >> 2)
        if len(buffer) < i + total:
            return _Partial(i)
        c.work += total
        try:
            frame = gw_frames.decode_frame(bytes(buffer[i : i + total]))
            if not (frame.uplink and frame.control.initiator
                    and frame.afn == gw_frames.Afn.LINK):
                return None
            event = gw_services.decode_event(frame)
        except (FrameError, ProtocolError, ValueError):
            return None
        if not isinstance(event, gw_services.Login):
            return None
        identity = Identity(self.name, ((GW3761_KEY, frame.address.key),), "gw3761")
        return _Match(i, i + total, identity, True)


# -- dlt698 -----------------------------------------------------------------------------------

# A LINK-Request frame is some 30 bytes; a longer candidate is no login.
MAX_IDENTIFYING_LINK: Final = 512
# Control field of a LINK-Request: sent by the server (DIR 1), started by it (PRM 0), not
# split, not scrambled, function 1 (link management).
_LINK_REQUEST_CONTROL: Final = 0x81
# At most this many FE wake-up bytes are taken as the login's own.
MAX_WAKEUP: Final = 16


class Dlt698Rule(Rule):
    """A DL/T 698.45 LINK-Request (login or heartbeat) from a terminal: identified by its
    server address (single, not a wildcard)."""

    name = "dlt698"

    def scan(self, buffer: Buffer, cursor: Cursor | None = None) -> _Result:
        # cursor.start: the earliest 68 not refused; cursor.memo: that candidate's length
        # once its header held (it waits for the rest of its frame).
        c = cursor if cursor is not None else Cursor()
        total = 0

        def at(buffer: Buffer, i: int, c: Cursor) -> _Result:
            nonlocal total
            result, total = self._at(buffer, i, c)
            return result

        result = scan_candidates(buffer, c, _finder(b"\x68"), at, lambda _b, _i: total)
        if result is None:
            c.at(max(len(buffer), c.start))
        return result

    def _at(self, buffer: Buffer, i: int, c: Cursor) -> tuple[_Result, int]:
        n = len(buffer)
        if n < i + 5:
            if n > i + 3 and buffer[i + 3] != _LINK_REQUEST_CONTROL:
                return None, 0
            return _Partial(i), 0
        length = int.from_bytes(buffer[i + 1 : i + 3], "little")
        total = length + 2
        if length & 0xC000 or total > MAX_IDENTIFYING_LINK:
            return None, 0
        if buffer[i + 3] != _LINK_REQUEST_CONTROL:
            return None, 0
        header = 6 + (buffer[i + 4] & 0x0F) + 1  # 68, L L, C, SA, address, CA
        if total < header + 2 + 2 + 1:
            return None, 0
        if n < i + header + 2:
            return _Partial(i), 0
        c.work += header
        if crc16(buffer[i + 1 : i + header]) != int.from_bytes(
                buffer[i + header : i + header + 2], "little"):
            return None, 0
        if n < i + total:
            return _Partial(i), total
        c.work += total
        try:
            frame = decode_frame(bytes(buffer[i : i + total]))
            apdu = decode_apdu(frame.data)
        except FrameError:
            return None, 0
        if not isinstance(apdu, LinkRequest) or apdu.type is LinkType.LOGOUT:
            return None, 0
        address = frame.server.address
        if frame.server.type is not AddressType.SINGLE or not _ROUTE_SAFE.match(address):
            return None, 0
        identity = Identity.of(self.name, {"dlt698": address}, "dlt698")
        # The FE wake-up bytes in front belong to the frame (not garbage): the match starts
        # with them, where a registration line that has no end yet starts too, so that
        # the ascii rule's waiting candidate does not hold the login back.
        start = i
        while start > max(i - MAX_WAKEUP, 0) and buffer[start - 1] == 0xFE:
            start -= 1
        c.work += i - start
        return _Match(start, i + total, identity, True), total


# -- the identifier ---------------------------------------------------------------------------


def make_rules(names: Iterable[str], registration: str = DEFAULT_REGISTRATION) -> list[Rule]:
    """The rules called ``names``; ValueError names an unknown one."""
    rules: list[Rule] = []
    for name in names:
        if name == "ascii":
            rules.append(AsciiRule(registration))
        elif name == "binary":
            rules.append(BinaryRule())
        elif name == "dlms":
            rules.append(DlmsRule())
        elif name == "dlms-hdlc":
            rules.append(DlmsHdlcRule())
        elif name in ("iec62056-21", "iec"):
            rules.append(IecRule())
        elif name == "gw3761":
            rules.append(Gw3761Rule())
        elif name == "dlt698":
            rules.append(Dlt698Rule())
        else:
            known = ", ".join(RULE_NAMES)
            raise ValueError(f"unknown identification rule {name!r} (known: {known})")
    if not rules:
        raise ValueError("no identification rule given")
    return rules


# How many times over its byte caps an identifier may scan before it gives up.
SCAN_FACTOR: Final = 8
# What one piece received costs against the scan budget, in bytes examined: the rules' work
# per call whatever the piece's size (a peer sending one byte per TCP segment makes the
# pieces, not the bytes, the cost).
PIECE_COST: Final = 64


class Identifier:
    """Feeds a connection's first bytes to every rule; the earliest complete match wins,
    unless an earlier candidate still waits for bytes. More than ``max_garbage`` bytes with
    no candidate raises IdentificationError (the connection is then closed), and so does
    examining more than ``max_scan`` bytes in all, each piece received counting PIECE_COST
    bytes more (each rule goes on where its last scan stopped, through a Cursor, so a byte is
    examined a bounded number of times however small the pieces; what remains is a cost per
    piece). ``receive`` raises IdentificationError and nothing else."""

    def __init__(
        self, rules: Sequence[Rule], *, max_garbage: int = 4096, max_scan: int | None = None
    ) -> None:
        self.rules = list(rules)
        self.max_garbage = max_garbage
        # Past ``max_scan`` bytes examined by the rules in all (searched, checksummed,
        # parsed) and PIECE_COST per piece, IdentificationError.
        self.max_scan = (
            max_scan if max_scan is not None
            else SCAN_FACTOR * (MAX_IDENTIFYING_READOUT + max_garbage)
        )
        self._buffer = bytearray()
        self._cursors = [Cursor() for _ in self.rules]
        # Bytes dropped from the front as garbage before the buffer kept now.
        self._dropped = 0
        self._pieces = 0

    @property
    def received(self) -> int:
        return self._dropped + len(self._buffer)

    @property
    def examined(self) -> int:
        """How many bytes the rules examined in all (the work identification cost)."""
        return sum(c.work for c in self._cursors)

    def receive(self, data: bytes) -> Identified | None:
        buf = self._buffer
        buf += data
        self._pieces += 1
        best: _Match | None = None
        waiting: int | None = None
        for rule, cursor in zip(self.rules, self._cursors, strict=True):
            result = rule.scan(buf, cursor)
            if isinstance(result, _Match):
                if best is None or result.start < best.start:
                    best = result
            elif result is not None and (waiting is None or result.start < waiting):
                waiting = result.start
        if best is not None and (waiting is None or best.start <= waiting):
            garbage = self._dropped + best.start
            rest = buf[best.start :] if best.keep else buf[best.end :]
            self._buffer = bytearray()
            for cursor in self._cursors:
                cursor.drop(len(buf))
            return Identified(best.identity, garbage, bytes(rest))
        if self.examined + PIECE_COST * self._pieces > self.max_scan:
            raise IdentificationError(
                f"no registration after scanning {self.examined} bytes "
                f"({self.received} received in {self._pieces} pieces)",
                offset=self._dropped,
                field="registration",
            )
        # Nothing yet: what lies before the earliest candidate is garbage for sure.
        keep_from = waiting if waiting is not None else len(buf)
        self._dropped += keep_from
        del buf[:keep_from]
        for cursor in self._cursors:
            cursor.drop(keep_from)
        if self._dropped > self.max_garbage:
            raise IdentificationError(
                f"no registration in the first {self._dropped} bytes",
                offset=self._dropped,
                field="registration",
            )
        if len(buf) > MAX_IDENTIFYING_READOUT + self.max_garbage:
            raise IdentificationError(
                f"registration candidate longer than {len(buf)} bytes",
                offset=self._dropped,
                field="registration",
            )
        return None
