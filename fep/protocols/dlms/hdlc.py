"""The HDLC link of DLMS/COSEM (IEC 62056-46): frame format type 3, addresses, control field,
HCS/FCS, the SNRM/UA parameter negotiation, a resynchronising frame decoder and the client
(primary station) and server (secondary station, for the simulator) link state machines.

Sans-IO: no Twisted here. Bytes in, frames and events out; APDUs are opaque bytes. The links
follow h11: methods return the bytes to send and/or a list of events, never touch a transport.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Any, Final

import attrs

from fep.errors import FrameError, ProtocolError
from fep.protocols.stream import StreamDecoder

PROTOCOL: Final = "dlms"

FLAG: Final = 0x7E
FLAG_BYTE: Final = b"\x7e"

# Frame format field: type 3 in the top nibble, then the segmentation bit and 11 length bits.
FORMAT_TYPE_3: Final = 0xA000
SEGMENTATION_BIT: Final = 0x0800
LENGTH_MASK: Final = 0x07FF
# Flags excluded: format (2) + 1-byte addresses (2) + control (1) + FCS (2).
MIN_FRAME_LENGTH: Final = 7
# The largest information field 62056-46 lets the parameters announce.
MAX_INFO_LENGTH: Final = 2030
MAX_WINDOW: Final = 7
# Reassembled APDUs are bounded by the xDLMS PDU size (an unsigned16).
MAX_APDU: Final = 0xFFFF

# LLC header (IEC 62056-46 / ISO 8802-2): destination LSAP, source LSAP, quality.
LLC_REQUEST: Final = b"\xe6\xe6\x00"
LLC_RESPONSE: Final = b"\xe6\xe7\x00"

PF_BIT: Final = 0x10


def _frame_start() -> re.Pattern[bytes]:
    """A flag that may open a frame: the format field (type 3: A0..AF, then any byte), then
    two addresses of 1, 2 or 4 bytes, each ending at its first byte with the low bit set."""
    odd = b"[" + b"".join(re.escape(bytes((b,))) for b in range(1, 256, 2)) + b"]"
    even = b"[" + b"".join(re.escape(bytes((b,))) for b in range(0, 256, 2)) + b"]"
    address = b"(?:" + odd + b"|" + even + odd + b"|" + even * 3 + odd + b")"
    return re.compile(b"\x7e[\xa0-\xaf][\x00-\xff]" + address + address)


_FRAME_START: Final = _frame_start()
# The longest header the search needs: flag, format (2), two 4-byte addresses.
_LONGEST_HEADER: Final = 11


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def hdlc_fcs(data: bytes | bytearray) -> int:
    """CRC-16/X.25 of ``data`` (reflected polynomial 0x8408, initial value FFFF, result
    complemented): the HCS and FCS of a frame, sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


# ---------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------


@attrs.frozen
class HdlcAddress:
    """An HDLC address. A client address is one byte (``logical`` only, 0..127). A server
    address is the upper HDLC address (``logical``, the logical device) and the optional
    lower one (``physical``, the device on the bus): 1 byte (upper only), 2 bytes (7 bits
    each) or 4 bytes (14 bits each). Each byte carries 7 address bits; its low bit marks the
    last byte.

    ``size`` forces the encoded size; the decoder records the size seen on the wire so a
    decoded frame encodes back to the same bytes. It takes no part in equality.
    """

    logical: int
    physical: int | None = None
    size: int | None = attrs.field(default=None, eq=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.size not in (None, 1, 2, 4):
            raise ValueError(f"HDLC address size is 1, 2 or 4 bytes, not {self.size}")
        if self.physical is None:
            if not 0 <= self.logical <= 0x7F:
                raise ValueError(f"1-byte HDLC address {self.logical} is not 0..127")
            if self.size not in (None, 1):
                raise ValueError("an address without a physical part is one byte")
            return
        limit = 0x7F if self.size == 2 else 0x3FFF
        if not (0 <= self.logical <= limit and 0 <= self.physical <= limit):
            raise ValueError(
                f"HDLC address {self.logical}/{self.physical} does not fit {self.size or 4} bytes"
            )
        if self.size == 1:
            raise ValueError("a 1-byte HDLC address has no physical part")

    @property
    def wire_size(self) -> int:
        """The encoded size: ``size`` if given, else the smallest that fits."""
        if self.size is not None:
            return self.size
        if self.physical is None:
            return 1
        return 2 if self.logical <= 0x7F and self.physical <= 0x7F else 4

    def encode(self) -> bytes:
        size = self.wire_size
        if size == 1:
            return bytes([(self.logical << 1) | 1])
        assert self.physical is not None
        if size == 2:
            return bytes([self.logical << 1, (self.physical << 1) | 1])
        return bytes(
            [
                (self.logical >> 7) << 1,
                (self.logical & 0x7F) << 1,
                (self.physical >> 7) << 1,
                ((self.physical & 0x7F) << 1) | 1,
            ]
        )

    @classmethod
    def decode(cls, data: bytes | bytearray) -> HdlcAddress:
        """The address in ``data`` (exactly 1, 2 or 4 bytes, only the last one ending in a
        1 bit); FrameError otherwise."""
        size = len(data)
        ends = [byte & 1 for byte in data]
        if size not in (1, 2, 4) or ends != [0] * (size - 1) + [1]:
            raise FrameError(f"bad HDLC address {bytes(data).hex()}", field="address")
        parts = [byte >> 1 for byte in data]
        if size == 1:
            return cls(parts[0], size=1)
        if size == 2:
            return cls(parts[0], parts[1], size=2)
        return cls((parts[0] << 7) | parts[1], (parts[2] << 7) | parts[3], size=4)

    def __str__(self) -> str:
        return str(self.logical) if self.physical is None else f"{self.logical}/{self.physical}"


# ---------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------


class FrameKind(enum.Enum):
    """The frame types IEC 62056-46 uses (REJ and SREJ are not among them)."""

    I = "I"  # noqa: E741 - the standard's name for the information frame
    RR = "RR"
    RNR = "RNR"
    SNRM = "SNRM"
    DISC = "DISC"
    UA = "UA"
    DM = "DM"
    FRMR = "FRMR"
    UI = "UI"


# Control field values with the P/F bit clear; S-frames carry N(R) in the top 3 bits.
_SUPERVISORY: Final = {FrameKind.RR: 0x01, FrameKind.RNR: 0x05}
_UNNUMBERED: Final = {
    FrameKind.SNRM: 0x83,
    FrameKind.DISC: 0x43,
    FrameKind.UA: 0x63,
    FrameKind.DM: 0x0F,
    FrameKind.FRMR: 0x87,
    FrameKind.UI: 0x03,
}
_BY_CONTROL: Final = {value: kind for kind, value in (_SUPERVISORY | _UNNUMBERED).items()}


def _seq(name: str) -> Callable[[Any, attrs.Attribute[int], int], None]:
    def check(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
        if not 0 <= value <= 7:
            raise ValueError(f"{name} {value} is not 0..7")

    return check


@attrs.frozen
class HdlcFrame:
    """One HDLC frame. ``send_seq`` (N(S)) is for I-frames only, ``recv_seq`` (N(R)) for
    I-, RR- and RNR-frames; ``poll_final`` is the P/F bit; ``segmented`` the segmentation bit
    of the format field (more segments of the same APDU follow)."""

    kind: FrameKind
    destination: HdlcAddress
    source: HdlcAddress
    send_seq: int = attrs.field(default=0, validator=_seq("N(S)"))
    recv_seq: int = attrs.field(default=0, validator=_seq("N(R)"))
    poll_final: bool = True
    segmented: bool = False
    information: bytes = b""

    def __attrs_post_init__(self) -> None:
        if self.kind is not FrameKind.I and self.send_seq:
            raise ValueError(f"{self.kind.value} frames have no N(S)")
        if self.kind not in (FrameKind.I, *_SUPERVISORY) and self.recv_seq:
            raise ValueError(f"{self.kind.value} frames have no N(R)")

    @property
    def control(self) -> int:
        pf = PF_BIT if self.poll_final else 0
        if self.kind is FrameKind.I:
            return (self.recv_seq << 5) | pf | (self.send_seq << 1)
        if self.kind in _SUPERVISORY:
            return (self.recv_seq << 5) | pf | _SUPERVISORY[self.kind]
        return _UNNUMBERED[self.kind] | pf


def encode_frame(frame: HdlcFrame) -> bytes:
    """The frame on the wire, opening and closing flags included. ValueError when it does
    not fit the 11-bit length."""
    header_tail = frame.destination.encode() + frame.source.encode() + bytes([frame.control])
    info = frame.information
    length = 2 + len(header_tail) + (2 + len(info) if info else 0) + 2
    if length > LENGTH_MASK:
        raise ValueError(f"HDLC frame of {length} bytes is over {LENGTH_MASK}")
    fmt = FORMAT_TYPE_3 | (SEGMENTATION_BIT if frame.segmented else 0) | length
    body = fmt.to_bytes(2, "big") + header_tail
    if info:
        body += hdlc_fcs(body).to_bytes(2, "little") + info
    return bytes([FLAG]) + body + hdlc_fcs(body).to_bytes(2, "little") + bytes([FLAG])


def _parse_control(control: int) -> tuple[FrameKind, int, int, bool] | None:
    """(kind, N(S), N(R), P/F) of a control byte; None for a kind 62056-46 does not use."""
    pf = bool(control & PF_BIT)
    if not control & 1:
        return FrameKind.I, (control >> 1) & 7, control >> 5, pf
    if control & 3 == 1:
        kind = _BY_CONTROL.get(control & 0x0F)
        return None if kind is None else (kind, 0, control >> 5, pf)
    kind = _BY_CONTROL.get(control & ~PF_BIT & 0xFF)
    return None if kind is None else (kind, 0, 0, pf)


class _NotAFrame(Exception):
    """The flag at the head of the buffer does not open a plausible frame."""


def _address_end(buf: bytearray, pos: int) -> int | None:
    """Index after the address starting at ``pos``; None if more bytes are needed."""
    for i in range(pos, min(pos + 4, len(buf))):
        if buf[i] & 1:
            if i - pos + 1 == 3:
                raise _NotAFrame
            return i + 1
    if len(buf) >= pos + 4:
        raise _NotAFrame
    return None


class HdlcFrameDecoder(StreamDecoder[HdlcFrame]):
    """Turns a byte stream into HdlcFrames.

    Bytes outside frames are dropped and counted in ``skipped`` (idle flags are not
    counted); a flag that does not open a plausible frame (format type 3, a sane length and
    addresses) is passed over. The closing flag of a frame may open the next one. A bad HCS
    raises FrameError(field="HCS") after dropping the opening flag (the length cannot be
    trusted); a bad FCS raises FrameError(field="FCS") after dropping the whole frame; a
    frame not ending in a flag where its length says raises FrameError(field="flag"); an
    unknown control byte FrameError(field="control"). Frames completed before an error are
    returned first and the error comes on the next call; ``offset`` counts from the start
    of the stream.
    """

    def _next(self) -> HdlcFrame | None:
        buf = self._buffer
        while True:
            # The next flag followed by a type 3 format field and two addresses, found at C
            # speed: junk, runs of idle flags and flags that open nothing cost no Python step
            # per byte.
            found = _FRAME_START.search(buf)
            if found is None:
                # A flag near the end may open a frame whose header is still to come.
                tail = buf.find(FLAG_BYTE, max(0, len(buf) - (_LONGEST_HEADER - 1)))
                self._skip(len(buf) if tail < 0 else tail)
                return None
            self._skip(found.start())
            try:
                return self._frame_at_head()
            except _NotAFrame:
                self._consume(1)

    def _skip(self, n: int) -> None:
        """Drop ``n`` bytes of line garbage; flags among them are not counted as garbage."""
        if n:
            self.skipped += n - self._buffer.count(FLAG_BYTE, 0, n)
            self._consume(n)

    def _frame_at_head(self) -> HdlcFrame | None:
        buf = self._buffer
        base = self._base
        if len(buf) < 3:
            return None
        fmt = int.from_bytes(buf[1:3], "big")
        length = fmt & LENGTH_MASK
        if fmt & 0xF000 != FORMAT_TYPE_3 or length < MIN_FRAME_LENGTH:
            raise _NotAFrame
        end = 1 + length  # index of the closing flag
        dest_end = _address_end(buf, 3)
        if dest_end is None:
            return None
        src_end = _address_end(buf, dest_end)
        if src_end is None:
            return None
        control_end = src_end + 1
        has_info = end != control_end + 2
        if end < control_end + 2 or (has_info and end < control_end + 4):
            raise _NotAFrame
        if has_info:
            if len(buf) < control_end + 2:
                return None
            hcs = int.from_bytes(buf[control_end : control_end + 2], "little")
            computed = hdlc_fcs(buf[1:control_end])
            if hcs != computed:
                self._consume(1)
                raise FrameError(
                    f"bad HCS: computed 0x{computed:04X}, received 0x{hcs:04X}",
                    offset=base + control_end,
                    field="HCS",
                )
        if len(buf) < end + 1:
            return None
        if buf[end] != FLAG:
            self._consume(1)
            raise FrameError(
                f"no closing flag after the {length} bytes the format field announces",
                offset=base + end,
                field="flag",
            )
        fcs = int.from_bytes(buf[end - 2 : end], "little")
        computed = hdlc_fcs(buf[1 : end - 2])
        if fcs != computed:
            # The closing flag stays: it may open the next frame.
            self._consume(end)
            raise FrameError(
                f"bad FCS: computed 0x{computed:04X}, received 0x{fcs:04X}",
                offset=base + end - 2,
                field="FCS",
            )
        control = buf[src_end]
        parsed = _parse_control(control)
        destination = HdlcAddress.decode(buf[3:dest_end])
        source = HdlcAddress.decode(buf[dest_end:src_end])
        information = bytes(buf[control_end + 2 : end - 2]) if has_info else b""
        self._consume(end)
        if parsed is None:
            raise FrameError(
                f"control byte 0x{control:02X} is no frame type of IEC 62056-46",
                offset=base + src_end,
                field="control",
            )
        kind, send_seq, recv_seq, pf = parsed
        return HdlcFrame(
            kind,
            destination,
            source,
            send_seq,
            recv_seq,
            pf,
            bool(fmt & SEGMENTATION_BIT),
            information,
        )


def decode_frame(data: bytes) -> HdlcFrame:
    """The one complete frame in ``data`` (flags included). Raises FrameError when there
    is not exactly one (bad HCS/FCS, no closing flag, unknown control byte, garbage)."""
    decoder = HdlcFrameDecoder()
    frames = decoder.receive(data)
    if len(frames) != 1 or decoder.skipped or decoder.buffered > 1:
        raise FrameError(f"expected one HDLC frame, found {len(frames)}", offset=0)
    return frames[0]


# ---------------------------------------------------------------------------
# Parameter negotiation (SNRM / UA information field)
# ---------------------------------------------------------------------------

PARAMETERS_FORMAT_ID: Final = 0x81
PARAMETERS_GROUP_ID: Final = 0x80
PARAM_MAX_INFO_TX: Final = 0x05
PARAM_MAX_INFO_RX: Final = 0x06
PARAM_WINDOW_TX: Final = 0x07
PARAM_WINDOW_RX: Final = 0x08


def _in_range(low: int, high: int) -> Callable[[Any, attrs.Attribute[int], int], None]:
    def check(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
        if not low <= value <= high:
            raise ValueError(f"{attribute.name} {value} is not {low}..{high}")

    return check


_INFO_RANGE: Final = _in_range(1, MAX_INFO_LENGTH)
_WINDOW_RANGE: Final = _in_range(1, MAX_WINDOW)


@attrs.frozen
class HdlcParameters:
    """The link parameters of one side: the longest information field it sends
    (``max_info_tx``) and accepts (``max_info_rx``), and how many frames it sends
    (``window_tx``) and accepts (``window_rx``) before an acknowledgement. In an SNRM they
    are the client's, in a UA the server's."""

    max_info_tx: int = attrs.field(default=128, validator=_INFO_RANGE)
    max_info_rx: int = attrs.field(default=128, validator=_INFO_RANGE)
    window_tx: int = attrs.field(default=1, validator=_WINDOW_RANGE)
    window_rx: int = attrs.field(default=1, validator=_WINDOW_RANGE)

    def negotiate(self, peer: HdlcParameters) -> HdlcParameters:
        """Our values once the peer's are known: we send no more than it accepts and
        accept no more than it sends."""
        return HdlcParameters(
            min(self.max_info_tx, peer.max_info_rx),
            min(self.max_info_rx, peer.max_info_tx),
            min(self.window_tx, peer.window_rx),
            min(self.window_rx, peer.window_tx),
        )

    @property
    def mirrored(self) -> HdlcParameters:
        """The same link seen from the other side (transmit and receive swapped)."""
        return HdlcParameters(self.max_info_rx, self.max_info_tx, self.window_rx, self.window_tx)


DEFAULT_PARAMETERS: Final = HdlcParameters()


def _parameter(ident: int, value: int, size: int) -> bytes:
    return bytes([ident, size]) + value.to_bytes(size, "big")


def encode_parameters(parameters: HdlcParameters) -> bytes:
    """The SNRM/UA information field: format 81, group 80, then the four parameters
    (lengths in 1 or 2 bytes, windows in 4 bytes, as in the Green Book examples)."""

    def info_size(value: int) -> int:
        return 1 if value <= 0xFF else 2

    body = (
        _parameter(PARAM_MAX_INFO_TX, parameters.max_info_tx, info_size(parameters.max_info_tx))
        + _parameter(PARAM_MAX_INFO_RX, parameters.max_info_rx, info_size(parameters.max_info_rx))
        + _parameter(PARAM_WINDOW_TX, parameters.window_tx, 4)
        + _parameter(PARAM_WINDOW_RX, parameters.window_rx, 4)
    )
    return bytes([PARAMETERS_FORMAT_ID, PARAMETERS_GROUP_ID, len(body)]) + body


def decode_parameters(information: bytes) -> HdlcParameters:
    """The parameters in an SNRM/UA information field; an empty field means the defaults
    (128/128/1/1), as does any parameter left out. Values over the 62056-46 limits are
    clamped to them (the negotiation only ever lowers them); a zero value, a value of more
    than 4 bytes or a malformed field raises FrameError(field="parameters")."""
    if not information:
        return DEFAULT_PARAMETERS
    if len(information) < 3 or information[0] != PARAMETERS_FORMAT_ID:
        raise FrameError(
            f"parameter field does not start with format 0x{PARAMETERS_FORMAT_ID:02X}",
            offset=0,
            field="parameters",
        )
    values = {
        PARAM_MAX_INFO_TX: DEFAULT_PARAMETERS.max_info_tx,
        PARAM_MAX_INFO_RX: DEFAULT_PARAMETERS.max_info_rx,
        PARAM_WINDOW_TX: DEFAULT_PARAMETERS.window_tx,
        PARAM_WINDOW_RX: DEFAULT_PARAMETERS.window_rx,
    }
    limits = {
        PARAM_MAX_INFO_TX: MAX_INFO_LENGTH,
        PARAM_MAX_INFO_RX: MAX_INFO_LENGTH,
        PARAM_WINDOW_TX: MAX_WINDOW,
        PARAM_WINDOW_RX: MAX_WINDOW,
    }
    pos = 1
    while pos < len(information):
        if pos + 2 > len(information):
            raise FrameError("truncated parameter group", offset=pos, field="parameters")
        group, group_len = information[pos], information[pos + 1]
        group_end = pos + 2 + group_len
        if group_end > len(information):
            raise FrameError(
                f"parameter group of {group_len} bytes overruns the field",
                offset=pos + 1,
                field="parameters",
            )
        pos += 2
        # Other groups (e.g. user data) are skipped whole.
        while group == PARAMETERS_GROUP_ID and pos < group_end:
            if pos + 2 > group_end:
                raise FrameError("truncated parameter", offset=pos, field="parameters")
            ident, size = information[pos], information[pos + 1]
            if not 1 <= size <= 4 or pos + 2 + size > group_end:
                raise FrameError(
                    f"parameter 0x{ident:02X} has a bad length {size}",
                    offset=pos + 1,
                    field="parameters",
                )
            value = int.from_bytes(information[pos + 2 : pos + 2 + size], "big")
            pos += 2 + size
            if ident not in values:
                continue
            if value == 0:
                raise FrameError(
                    f"parameter 0x{ident:02X} is zero", offset=pos - size, field="parameters"
                )
            values[ident] = min(value, limits[ident])
        pos = group_end
    return HdlcParameters(
        values[PARAM_MAX_INFO_TX],
        values[PARAM_MAX_INFO_RX],
        values[PARAM_WINDOW_TX],
        values[PARAM_WINDOW_RX],
    )


# ---------------------------------------------------------------------------
# Link events
# ---------------------------------------------------------------------------


@attrs.frozen
class LinkConnected:
    """The link is up; ``parameters`` are the negotiated ones from this side's view
    (``max_info_tx`` is what this side may send)."""

    parameters: HdlcParameters


@attrs.frozen
class ApduReceived:
    """A whole APDU, reassembled from its segments, LLC header removed."""

    apdu: bytes


@attrs.frozen
class SendFrame:
    """Bytes this side must send now (an RR asking for the next segment, the next
    segment after the peer's RR, a retransmission, a UA or DM answer)."""

    data: bytes


@attrs.frozen
class LinkDisconnected:
    reason: str


@attrs.frozen
class LinkRefused:
    """The peer refused the link: DM to an SNRM, or a frame reject (FRMR)."""

    reason: str


LinkEvent = LinkConnected | ApduReceived | SendFrame | LinkDisconnected | LinkRefused


class LinkState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTING = "disconnecting"


def _segments(payload: bytes, size: int) -> list[tuple[bytes, bool]]:
    """``payload`` cut into (information, more-segments-follow) pieces."""
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    return [(chunk, i < len(chunks) - 1) for i, chunk in enumerate(chunks)]


class _Link:
    """What both ends share: N(S)/N(R) counters mod 8, the window of unacknowledged
    I-frames (go-back-N on loss), segmentation and reassembly, and the byte decoder.

    Sequence rule (both ends): an I-frame whose N(S) is not the expected V(R) is never
    delivered; it is answered with a re-request (an RR carrying V(R), or for the server a
    repeat of its own unacknowledged frames when the client repeated its last frame), so a
    lost or duplicated frame costs a retransmission, never a wrong APDU. An N(R) that
    acknowledges frames never sent is a FrameError(field="N(R)") and the frame is dropped.
    """

    _llc_out: bytes
    _llc_in: bytes

    def __init__(self, local: HdlcAddress, parameters: HdlcParameters, max_apdu: int) -> None:
        self.local = local
        self.parameters = parameters
        self.max_apdu = max_apdu
        self.negotiated = DEFAULT_PARAMETERS
        self.state = LinkState.DISCONNECTED
        self._decoder = HdlcFrameDecoder()
        # Bad frames seen (dropped) and the last of them; frames for other stations.
        self.frame_errors = 0
        self.last_error: FrameError | None = None
        self.ignored = 0
        self._reset()

    @property
    def skipped(self) -> int:
        """Line garbage dropped by the decoder."""
        return self._decoder.skipped

    def _reset(self) -> None:
        self._vs = 0
        self._vr = 0
        self._unacked: list[tuple[bytes, bool]] = []
        self._queue: list[tuple[bytes, bool]] = []
        self._rx_parts: list[bytes] = []
        self._rx_size = 0
        self._ui_parts: list[bytes] = []
        self._ui_size = 0
        self._peer_busy = False

    def _peer(self) -> HdlcAddress:
        raise NotImplementedError

    def _on_frame(self, frame: HdlcFrame) -> list[LinkEvent]:
        raise NotImplementedError

    def receive_data(self, data: bytes) -> list[LinkEvent]:
        """Feed received bytes; the events they complete.

        Bad frames are dropped (counted in ``frame_errors``, kept in ``last_error``) and
        decoding goes on with the bytes after them, all in this call. When they produced no
        event at all, the first FrameError is raised instead of returning ``[]`` so the
        caller can log the noise; nothing is left pending either way.
        """
        events: list[LinkEvent] = []
        first_error: FrameError | None = None
        for item in self._decoder.decode_all(data):
            if isinstance(item, FrameError):
                error = item
            else:
                try:
                    events.extend(self._on_frame(item))
                    continue
                except FrameError as bad:
                    error = bad
            first_error = first_error or error
            self._note(error)
        if first_error is not None and not events:
            raise first_error
        return events

    def _note(self, error: FrameError) -> None:
        self.frame_errors += 1
        self.last_error = error

    def _frame(self, kind: FrameKind, *, pf: bool = True, info: bytes = b"") -> bytes:
        recv_seq = self._vr if kind in (FrameKind.RR, FrameKind.RNR) else 0
        return encode_frame(
            HdlcFrame(kind, self._peer(), self.local, 0, recv_seq, pf, information=info)
        )

    def _i_frame(self, send_seq: int, info: bytes, segmented: bool, pf: bool) -> bytes:
        return encode_frame(
            HdlcFrame(
                FrameKind.I, self._peer(), self.local, send_seq, self._vr, pf, segmented, info
            )
        )

    def _queue_apdu(self, apdu: bytes) -> None:
        payload = self._llc_out + apdu
        self._queue.extend(_segments(payload, self.negotiated.max_info_tx))

    def _pump(self) -> list[bytes]:
        """Queued segments the window lets go now; P/F on the last of the burst."""
        out = []
        window = self.negotiated.window_tx
        while self._queue and len(self._unacked) < window and not self._peer_busy:
            info, segmented = self._queue.pop(0)
            send_seq = self._vs
            self._vs = (send_seq + 1) % 8
            self._unacked.append((info, segmented))
            last = not self._queue or len(self._unacked) == window
            out.append(self._i_frame(send_seq, info, segmented, last))
        return out

    def _resend(self) -> list[bytes]:
        """The unacknowledged I-frames again, oldest first (go-back-N)."""
        first = (self._vs - len(self._unacked)) % 8
        count = len(self._unacked)
        return [
            self._i_frame((first + i) % 8, info, segmented, i == count - 1)
            for i, (info, segmented) in enumerate(self._unacked)
        ]

    def _acknowledge(self, recv_seq: int) -> None:
        """Drop the I-frames the peer's N(R) acknowledges."""
        first = (self._vs - len(self._unacked)) % 8
        count = (recv_seq - first) % 8
        if count > len(self._unacked):
            raise FrameError(
                f"N(R) {recv_seq} acknowledges frames never sent (V(S) {self._vs})",
                field="N(R)",
            )
        del self._unacked[:count]

    def _on_information(self, frame: HdlcFrame) -> list[LinkEvent]:
        if frame.send_seq != self._vr:
            return self._out_of_sequence(frame)
        self._acknowledge(frame.recv_seq)
        self._vr = (self._vr + 1) % 8
        self._rx_size += len(frame.information)
        if self._rx_size > self.max_apdu + len(self._llc_in):
            self._rx_parts, self._rx_size = [], 0
            raise FrameError(
                f"segmented APDU grows over {self.max_apdu} bytes", field="information"
            )
        self._rx_parts.append(frame.information)
        if frame.segmented:
            # P/F closes the peer's window: it waits for our RR before the next segments.
            return [SendFrame(self._frame(FrameKind.RR))] if frame.poll_final else []
        payload = b"".join(self._rx_parts)
        self._rx_parts, self._rx_size = [], 0
        return [ApduReceived(self._strip_llc(payload))]

    def _out_of_sequence(self, frame: HdlcFrame) -> list[LinkEvent]:
        return [SendFrame(self._frame(FrameKind.RR))]

    def _on_ui(self, frame: HdlcFrame) -> list[LinkEvent]:
        self._ui_size += len(frame.information)
        if self._ui_size > self.max_apdu + len(self._llc_in):
            self._ui_parts, self._ui_size = [], 0
            raise FrameError(f"UI APDU grows over {self.max_apdu} bytes", field="information")
        self._ui_parts.append(frame.information)
        if frame.segmented:
            return []
        payload = b"".join(self._ui_parts)
        self._ui_parts, self._ui_size = [], 0
        return [ApduReceived(self._strip_llc(payload))]

    def _strip_llc(self, payload: bytes) -> bytes:
        if not payload.startswith(self._llc_in):
            raise FrameError(
                f"APDU does not start with the LLC header {self._llc_in.hex(' ')}",
                offset=0,
                field="LLC",
            )
        return payload[len(self._llc_in) :]

    def _acknowledged_send(self, frame: HdlcFrame) -> list[bytes]:
        """RR/RNR from the peer: acknowledge, go back over what it lost, send more."""
        self._acknowledge(frame.recv_seq)
        self._peer_busy = frame.kind is FrameKind.RNR
        if self._peer_busy:
            return []
        return self._resend() + self._pump()

    def _misuse(self, message: str) -> ProtocolError:
        return ProtocolError(message, protocol=PROTOCOL)


class HdlcClientLink(_Link):
    """The client (primary station) end of an HDLC link to one server.

    ``connect()`` gives the SNRM, ``disconnect()`` the DISC, ``send(apdu)`` the I-frames the
    window lets go now (one with the default window of 1); the next segments come out as
    SendFrame events when the server's RR asks for them. ``receive_data`` turns the
    server's bytes into events; frames not from our server to us are ignored (counted in
    ``ignored``). ``timeout()`` gives what to send again when the server stays silent.
    """

    _llc_out = LLC_REQUEST
    _llc_in = LLC_RESPONSE

    def __init__(
        self,
        client: HdlcAddress,
        server: HdlcAddress,
        parameters: HdlcParameters = DEFAULT_PARAMETERS,
        *,
        max_apdu: int = MAX_APDU,
    ) -> None:
        if client.wire_size != 1:
            raise ValueError("an HDLC client address is one byte")
        super().__init__(client, parameters, max_apdu)
        self.server = server

    def _peer(self) -> HdlcAddress:
        return self.server

    def connect(self) -> bytes:
        """The SNRM; its information field carries our parameters unless all defaults."""
        if self.state is not LinkState.DISCONNECTED:
            raise self._misuse(f"connect() while {self.state.value}")
        self._reset()
        self.negotiated = DEFAULT_PARAMETERS
        self.state = LinkState.CONNECTING
        return self._snrm()

    def _snrm(self) -> bytes:
        info = b"" if self.parameters == DEFAULT_PARAMETERS else encode_parameters(self.parameters)
        return self._frame(FrameKind.SNRM, info=info)

    def send(self, apdu: bytes) -> list[bytes]:
        """The first I-frames of ``apdu`` (LLC header E6 E6 00 prepended, cut to the
        negotiated max_info_tx); the rest follow as SendFrame events."""
        if self.state is not LinkState.CONNECTED:
            raise self._misuse(f"send() while {self.state.value}")
        if self._queue:
            raise self._misuse("send() before the previous APDU went out")
        self._queue_apdu(apdu)
        return self._pump()

    def disconnect(self) -> bytes:
        """The DISC (sent whatever the state: it also clears a server in an unknown one)."""
        self._reset()
        self.state = LinkState.DISCONNECTING
        return self._frame(FrameKind.DISC)

    def timeout(self) -> list[bytes]:
        """What to send when the server has not answered in time: the SNRM or DISC again,
        the unacknowledged I-frames again, or an RR poll asking the server to repeat from
        V(R)."""
        if self.state is LinkState.CONNECTING:
            return [self._snrm()]
        if self.state is LinkState.DISCONNECTING:
            return [self._frame(FrameKind.DISC)]
        if self.state is LinkState.CONNECTED:
            return self._resend() or [self._frame(FrameKind.RR)]
        return []

    def _on_frame(self, frame: HdlcFrame) -> list[LinkEvent]:
        if frame.destination != self.local or frame.source != self.server:
            self.ignored += 1
            return []
        kind = frame.kind
        if kind is FrameKind.UI:
            return self._on_ui(frame)
        state = self.state
        if state is LinkState.CONNECTING:
            if kind is FrameKind.UA:
                answer = decode_parameters(frame.information)
                self._reset()
                self.negotiated = self.parameters.negotiate(answer)
                self.state = LinkState.CONNECTED
                return [LinkConnected(self.negotiated)]
            if kind is FrameKind.DM:
                self.state = LinkState.DISCONNECTED
                return [LinkRefused("the server answered SNRM with DM (disconnected mode)")]
            if kind is FrameKind.FRMR:
                return self._rejected(frame)
        elif state is LinkState.CONNECTED:
            if kind is FrameKind.I:
                return self._on_information(frame)
            if kind in (FrameKind.RR, FrameKind.RNR):
                return [SendFrame(data) for data in self._acknowledged_send(frame)]
            if kind is FrameKind.DM:
                self._reset()
                self.state = LinkState.DISCONNECTED
                return [LinkDisconnected("the server is in disconnected mode (DM)")]
            if kind is FrameKind.FRMR:
                return self._rejected(frame)
        elif state is LinkState.DISCONNECTING:
            if kind is FrameKind.UA:
                self.state = LinkState.DISCONNECTED
                return [LinkDisconnected("disconnected")]
            if kind is FrameKind.DM:
                self.state = LinkState.DISCONNECTED
                return [LinkDisconnected("the server was already disconnected (DM)")]
        self.ignored += 1
        return []

    def _rejected(self, frame: HdlcFrame) -> list[LinkEvent]:
        self._reset()
        self.state = LinkState.DISCONNECTED
        detail = f" ({frame.information.hex(' ')})" if frame.information else ""
        return [LinkRefused(f"the server rejected a frame (FRMR){detail}")]


class HdlcServerLink(_Link):
    """The server (secondary station) end, for the meter simulator.

    Answers SNRM with UA (negotiated parameters) and DISC with UA (DM when not connected);
    delivers the client's I-frames as ApduReceived, answering each segment that closes the
    client's window with RR. ``send(apdu)`` segments a response (LLC header E6 E7 00) and
    gives the frames the window lets go now; the next go out as SendFrame events after the
    client's RR. Frames for other addresses are ignored, as are other clients' frames while
    connected (a new SNRM from any client resets the link to it).
    """

    _llc_out = LLC_RESPONSE
    _llc_in = LLC_REQUEST

    def __init__(
        self,
        server: HdlcAddress,
        parameters: HdlcParameters = DEFAULT_PARAMETERS,
        *,
        max_apdu: int = MAX_APDU,
    ) -> None:
        super().__init__(server, parameters, max_apdu)
        self.client: HdlcAddress | None = None

    def _peer(self) -> HdlcAddress:
        assert self.client is not None
        return self.client

    def send(self, apdu: bytes) -> list[bytes]:
        if self.state is not LinkState.CONNECTED:
            raise self._misuse(f"send() while {self.state.value}")
        if self._queue:
            raise self._misuse("send() before the previous APDU went out")
        self._queue_apdu(apdu)
        return self._pump()

    def _answer(self, frame: HdlcFrame, kind: FrameKind, info: bytes = b"") -> SendFrame:
        """A U-frame answer to whoever sent ``frame``."""
        return SendFrame(encode_frame(HdlcFrame(kind, frame.source, self.local, information=info)))

    def _on_frame(self, frame: HdlcFrame) -> list[LinkEvent]:
        if frame.destination != self.local:
            self.ignored += 1
            return []
        kind = frame.kind
        connected = self.state is LinkState.CONNECTED
        if kind is FrameKind.SNRM:
            return self._on_snrm(frame)
        if connected and frame.source != self.client:
            self.ignored += 1
            return []
        if kind is FrameKind.DISC:
            if not connected:
                return [self._answer(frame, FrameKind.DM)]
            self._reset()
            self.state = LinkState.DISCONNECTED
            return [
                self._answer(frame, FrameKind.UA),
                LinkDisconnected("disconnected by the client"),
            ]
        if kind is FrameKind.UI:
            return self._on_ui(frame)
        if kind in (FrameKind.I, FrameKind.RR, FrameKind.RNR):
            if not connected:
                return [self._answer(frame, FrameKind.DM)] if frame.poll_final else []
            if kind is FrameKind.I:
                return self._on_information(frame)
            out = self._acknowledged_send(frame)
            if not out and frame.poll_final:
                # Polled with nothing to send: say so with an RR.
                out = [self._frame(FrameKind.RR)]
            return [SendFrame(data) for data in out]
        self.ignored += 1
        return []

    def _on_snrm(self, frame: HdlcFrame) -> list[LinkEvent]:
        try:
            proposal = decode_parameters(frame.information)
        except FrameError as error:
            self._note(error)
            return [self._answer(frame, FrameKind.FRMR, bytes([frame.control]))]
        events: list[LinkEvent] = []
        if self.state is LinkState.CONNECTED:
            events.append(LinkDisconnected("link reset by a new SNRM"))
        self._reset()
        self.client = frame.source
        self.negotiated = self.parameters.negotiate(proposal)
        self.state = LinkState.CONNECTED
        events.insert(0, self._answer(frame, FrameKind.UA, encode_parameters(self.negotiated)))
        events.append(LinkConnected(self.negotiated))
        return events

    def _out_of_sequence(self, frame: HdlcFrame) -> list[LinkEvent]:
        if frame.send_seq == (self._vr - 1) % 8 and self._unacked:
            # The client repeated its last frame: our answer to it was lost.
            return [SendFrame(data) for data in self._resend()]
        return [SendFrame(self._frame(FrameKind.RR))]
