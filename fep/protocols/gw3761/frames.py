"""Q/GDW 1376.1 link frames: ``68 L L 68 C A AFN SEQ units AUX CS 16``, their fields (control,
address, sequence, data unit identifiers DA/DT, the auxiliary EC, PW and Tp), a stream
decoder that resynchronises on line noise, and the reassembly of multi-frame answers.

Layout (Q/GDW 1376.1-2013 clause 4.3; the same in Q/GDW 376.1-2009):

- L, twice, little endian: D0-D1 the protocol identifier (``10``: Q/GDW 376.1-2009 and
  1376.1-2013; ``01``: Q/GDW 130-2005, the predecessor), D2-D15 the length of the user data
  (C to the end of AUX).
- C: DIR (D7, 1 = from the terminal), PRM (D6, 1 = from the initiating station), FCB
  (downlink) or ACD (uplink: events wait, EC follows) in D5, FCV (D4, downlink), function
  code D3-D0.
- A: A1 area code (2 bytes BCD, low byte first), A2 terminal address (2 bytes binary; FFFF
  with the group flag is broadcast), A3 master station address (D7-D1) and group flag (D0).
- AFN, then SEQ: TpV (D7: Tp follows), FIR (D6), FIN (D5), CON (D4: confirm wanted),
  PSEQ/RSEQ (D3-D0).
- Data units: DA (DA1 point bit map, DA2 point group: Pn = 8 (DA2 - 1) + bit + 1, P0 = 00
  00) and DT (DT1 class bit map, DT2 class group: Fn = 8 DT2 + bit + 1), then each point's
  data for each class, points first (fep.protocols.gw3761.services decodes them).
- AUX: PW (16 bytes, in downlink frames of the AFNs that carry it), EC (2 bytes: important
  and general event counters, uplink when ACD is set), Tp (6 bytes: PFC, send time A.16,
  allowed delay in minutes, when TpV is set).
- CS: the sum modulo 256 of the user data.

The AUX is taken from the end of the user data by these flags alone, so a frame splits
into its fields without knowing its data units. Sans-IO: no Twisted here. Decoding raises
FrameError and nothing else (fuzzed by tests/fuzz); its work is bounded by the input's length.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

import attrs

from fep.errors import FrameError
from fep.protocols.gw3761 import formats
from fep.protocols.gw3761.formats import TimeFields
from fep.protocols.stream import StreamDecoder

START: Final = 0x68
END: Final = 0x16
HEADER_LEN: Final = 6
TRAILER_LEN: Final = 2
# C + A (5) + AFN + SEQ: the shortest user data.
MIN_USER: Final = 8
# L has 14 bits of length.
MAX_USER: Final = 0x3FFF

PROTOCOL_1376: Final = 0b10
PROTOCOL_130: Final = 0b01
PROTOCOL_IDS: Final = (PROTOCOL_1376, PROTOCOL_130)

PW_LEN: Final = 16
EC_LEN: Final = 2
TP_LEN: Final = 6

# Downlink AFNs whose frames end with the message authentication PW (clause 4.3.4.6.1).
PW_AFNS: Final = frozenset({0x01, 0x04, 0x05, 0x06, 0x0F, 0x10})

ALL_POINTS: Final = 0xFFFF  # DA1 = FF, DA2 = 00: every valid measuring point
MAX_POINT: Final = 2040
MAX_FN: Final = 248
BROADCAST_TERMINAL: Final = 0xFFFF


class Afn(enum.IntEnum):
    """Application function codes (clause 5.1)."""

    CONFIRM = 0x00
    RESET = 0x01
    LINK = 0x02
    RELAY = 0x03
    SET_PARAMETERS = 0x04
    CONTROL = 0x05
    AUTHENTICATE = 0x06
    CASCADE = 0x08
    CONFIGURATION = 0x09
    QUERY_PARAMETERS = 0x0A
    TASK_DATA = 0x0B
    CLASS1 = 0x0C
    CLASS2 = 0x0D
    CLASS3 = 0x0E
    FILE = 0x0F
    FORWARD = 0x10


class Function(enum.IntEnum):
    """Link function codes of C (PRM = 1: requests; PRM = 0: answers)."""

    RESET = 1
    USER_DATA = 4
    LINK_TEST = 9
    REQUEST_CLASS1 = 10
    REQUEST_CLASS2 = 11
    # PRM = 0
    ACK = 0
    RESPONSE = 8
    NO_DATA = 9
    LINK_STATUS = 11


@attrs.frozen
class Control:
    """The control field C."""

    function: int
    uplink: bool = False  # DIR
    initiator: bool = True  # PRM
    fcb_acd: bool = False  # FCB downlink, ACD uplink
    fcv: bool = False

    @property
    def acd(self) -> bool:
        return self.uplink and self.fcb_acd

    def to_byte(self) -> int:
        if not 0 <= self.function <= 15:
            raise ValueError(f"function code out of range 0..15: {self.function}")
        return (
            (0x80 if self.uplink else 0)
            | (0x40 if self.initiator else 0)
            | (0x20 if self.fcb_acd else 0)
            | (0x10 if self.fcv else 0)
            | self.function
        )

    @classmethod
    def from_byte(cls, byte: int) -> Control:
        return cls(byte & 0x0F, bool(byte & 0x80), bool(byte & 0x40), bool(byte & 0x20),
                   bool(byte & 0x10))  # fmt: skip


@attrs.frozen
class Address:
    """A terminal's address: area code A1 (4 BCD digits), terminal address A2 (0..65535),
    master station address (0..127) and group flag of A3. Its text form is ``A1:A2`` with
    A2 in four hex digits, as terminals print it (``4403:0004``)."""

    area: str
    terminal: int
    master: int = 0
    group: bool = False

    def __attrs_post_init__(self) -> None:
        if len(self.area) != 4 or not self.area.isdigit():
            raise ValueError(f"area code A1 is 4 decimal digits: {self.area!r}")
        if not 0 <= self.terminal <= 0xFFFF:
            raise ValueError(f"terminal address A2 is 0..65535: {self.terminal}")
        if not 0 <= self.master <= 127:
            raise ValueError(f"master station address is 0..127: {self.master}")

    @classmethod
    def parse(cls, text: str, master: int = 0) -> Address:
        """``A1:A2`` (``4403:0004``), A2 in hex; ``A1:#N`` gives A2 in decimal."""
        area, sep, terminal = text.strip().partition(":")
        if not sep:
            raise ValueError(f"a gw3761 address is A1:A2 (e.g. 4403:0004): {text!r}")
        try:
            number = int(terminal[1:]) if terminal.startswith("#") else int(terminal, 16)
        except ValueError:
            raise ValueError(f"terminal address A2 is hex (or #decimal): {text!r}") from None
        return cls(area, number, master)

    def __str__(self) -> str:
        return f"{self.area}:{self.terminal:04X}"

    @property
    def key(self) -> str:
        """The terminal's identity (A1 and A2), whatever master or group flag a frame has."""
        return f"{self.area}:{self.terminal:04X}"

    def encode(self) -> bytes:
        area = bytes.fromhex(self.area)[::-1]
        a3 = self.master << 1 | (1 if self.group else 0)
        return area + self.terminal.to_bytes(2, "little") + bytes([a3])

    @classmethod
    def decode(cls, raw: bytes, offset: int = 0) -> Address:
        for i in (0, 1):
            b = raw[i]
            if b >> 4 > 9 or b & 0x0F > 9:
                raise FrameError(f"area code byte 0x{b:02X} is not BCD", offset=offset + i,
                                 field="A1")  # fmt: skip
        area = bytes(raw[1::-1]).hex()
        return cls(area, int.from_bytes(raw[2:4], "little"), raw[4] >> 1, bool(raw[4] & 1))


@attrs.frozen
class Seq:
    """The frame sequence field SEQ."""

    seq: int = 0  # PSEQ (requests) or RSEQ (answers), 0..15
    tpv: bool = False
    fir: bool = True
    fin: bool = True
    con: bool = False

    def to_byte(self) -> int:
        return ((0x80 if self.tpv else 0) | (0x40 if self.fir else 0) | (0x20 if self.fin else 0)
                | (0x10 if self.con else 0) | (self.seq & 0x0F))  # fmt: skip

    @classmethod
    def from_byte(cls, byte: int) -> Seq:
        return cls(byte & 0x0F, bool(byte & 0x80), bool(byte & 0x40), bool(byte & 0x20),
                   bool(byte & 0x10))  # fmt: skip

    @property
    def single(self) -> bool:
        return self.fir and self.fin


@attrs.frozen
class TimeLabel:
    """Tp: the initiating frame counter PFC, the time the frame was sent (A.16: second,
    minute, hour, day) and the delay (minutes, 0: no limit) after which it is stale."""

    pfc: int
    sent: TimeFields
    delay: int = 0

    def encode(self) -> bytes:
        return bytes([self.pfc & 0xFF]) + formats.encode("A.16", self.sent) + bytes([self.delay])

    def age(self, now: datetime) -> float:
        """Seconds from the send time to ``now`` (the receiver's local wall clock, naive),
        the send time's month taken as the one that puts it nearest (the label has no
        month); infinite when the day fits no month near ``now``."""
        best = float("inf")
        for months in (-1, 0, 1):
            year, month = divmod(now.year * 12 + now.month - 1 + months, 12)
            try:
                sent = datetime(year, month + 1, self.sent.day or 1, self.sent.hour or 0,
                                self.sent.minute or 0, self.sent.second or 0)  # fmt: skip
            except ValueError:
                continue
            gap = (now - sent).total_seconds()
            if abs(gap) < abs(best):
                best = gap
        return best

    def stale(self, now: datetime) -> bool:
        """Whether a frame with this label is past its allowed delay at ``now`` (a delay of
        0 never is)."""
        return self.delay > 0 and abs(self.age(now)) > self.delay * 60

    @classmethod
    def decode(cls, raw: bytes, offset: int = 0) -> TimeLabel:
        sent = formats.decode("A.16", raw[1:5], offset + 1)
        if not isinstance(sent, TimeFields):  # EE fill
            raise FrameError("Tp send time is missing", offset=offset + 1, field="Tp")
        return cls(raw[0], sent, raw[5])


@attrs.frozen
class EventCounter:
    """EC: the terminal's important (EC1) and general (EC2) event counters."""

    important: int
    general: int


@attrs.frozen
class Frame:
    """One frame: its fields, the data units as bytes (``data``, without AUX) and the AUX."""

    control: Control
    address: Address
    afn: int
    seq: Seq
    data: bytes = b""
    pw: bytes | None = None
    ec: EventCounter | None = None
    tp: TimeLabel | None = None
    protocol: int = PROTOCOL_1376

    @property
    def uplink(self) -> bool:
        return self.control.uplink

    def user_data(self) -> bytes:
        if self.seq.tpv != (self.tp is not None):
            raise ValueError("SEQ.TpV and the time label disagree")
        if self.control.acd != (self.ec is not None):
            raise ValueError("ACD and the event counter disagree")
        out = bytearray([self.control.to_byte()])
        out += self.address.encode()
        out += bytes([self.afn, self.seq.to_byte()])
        out += self.data
        if self.pw is not None:
            if self.uplink or len(self.pw) != PW_LEN:
                raise ValueError("PW is 16 bytes of a downlink frame")
            out += self.pw
        if self.ec is not None:
            out += bytes([self.ec.important & 0xFF, self.ec.general & 0xFF])
        if self.tp is not None:
            out += self.tp.encode()
        return bytes(out)

    def encode(self) -> bytes:
        user = self.user_data()
        if len(user) > MAX_USER:
            raise ValueError(f"user data of {len(user)} bytes is more than L can say")
        length = (len(user) << 2 | self.protocol).to_bytes(2, "little")
        return bytes([START]) + length + length + bytes([START]) + user + bytes(
            [sum(user) & 0xFF, END]
        )


def carries_pw(uplink: bool, afn: int) -> bool:
    return not uplink and afn in PW_AFNS


def decode_user_data(user: bytes, protocol: int = PROTOCOL_1376, offset: int = 0) -> Frame:
    """The Frame of the user data (C to the end of AUX)."""
    if len(user) < MIN_USER:
        raise FrameError("user data shorter than C, A, AFN and SEQ", offset=offset, field="L")
    control = Control.from_byte(user[0])
    address = Address.decode(user[1:6], offset + 1)
    afn, seq = user[6], Seq.from_byte(user[7])
    end = len(user)
    tp = ec = pw = None
    if seq.tpv:
        end -= TP_LEN
        if end < MIN_USER:
            raise FrameError("no room for Tp", offset=offset + len(user), field="Tp")
        tp = TimeLabel.decode(user[end : end + TP_LEN], offset + end)
    if control.acd:
        end -= EC_LEN
        if end < MIN_USER:
            raise FrameError("no room for EC", offset=offset + len(user), field="EC")
        ec = EventCounter(user[end], user[end + 1])
    if carries_pw(control.uplink, afn):
        end -= PW_LEN
        if end < MIN_USER:
            raise FrameError("no room for PW", offset=offset + len(user), field="PW")
        pw = bytes(user[end : end + PW_LEN])
    return Frame(control, address, afn, seq, bytes(user[MIN_USER:end]), pw, ec, tp, protocol)


def decode_frame(raw: bytes) -> Frame:
    """Exactly one whole frame into a Frame; FrameError otherwise."""
    decoder = FrameDecoder()
    frames = decoder.receive(raw)
    if len(frames) != 1 or decoder.buffered or decoder.skipped:
        raise FrameError(
            f"expected one whole frame, got {len(frames)}, {decoder.skipped} bytes before and "
            f"{decoder.buffered} after",
            offset=len(raw),
            field="length",
        )
    return frames[0]


class FrameDecoder(StreamDecoder[Frame]):
    """Turns a byte stream (either direction) into Frames.

    Bytes before a ``68 L L 68`` header (equal L fields with a known protocol identifier and
    a length from 8 to ``max_user``) are line noise: skipped and counted in ``skipped``.
    A frame whose end byte or checksum is wrong raises FrameError after its first byte is
    dropped (decoding goes on from the next byte); one whose bytes are whole but whose
    fields do not fit raises FrameError after the whole frame is dropped. ``max_user``
    bounds the memory a length field can make the decoder wait for.
    """

    def __init__(self, max_user: int = MAX_USER) -> None:
        super().__init__()
        self.max_user = max_user

    def _header_ok(self, buf: bytearray) -> bool:
        if buf[1] != buf[3] or buf[2] != buf[4] or buf[5] != START:
            return False
        l_field = buf[1] | buf[2] << 8
        return (l_field & 0x03) in PROTOCOL_IDS and MIN_USER <= l_field >> 2 <= self.max_user

    def _next(self) -> Frame | None:
        while True:
            at = self._buffer.find(START)
            n = len(self._buffer) if at < 0 else at
            self.skipped += n
            self._consume(n)
            buf = self._buffer
            if len(buf) < HEADER_LEN:
                # What is there may already show this 68 starts no header.
                if len(buf) > 1 and not _header_prefix_ok(buf):
                    self.skipped += 1
                    self._consume(1)
                    continue
                return None
            if not self._header_ok(buf):
                self.skipped += 1
                self._consume(1)
                continue
            break
        base = self._base
        l_field = buf[1] | buf[2] << 8
        length = l_field >> 2
        total = HEADER_LEN + length + TRAILER_LEN
        if len(buf) < total:
            return None
        end = buf[total - 1]
        if end != END:
            self._consume(1)
            raise FrameError(
                f"frame end byte is 0x{end:02X}, not 16",
                offset=base + total - 1,
                field="end",
            )
        user = bytes(buf[HEADER_LEN : HEADER_LEN + length])
        computed, received = sum(user) & 0xFF, buf[total - 2]
        if computed != received:
            self._consume(1)
            raise FrameError(
                f"bad checksum: computed 0x{computed:02X}, received 0x{received:02X}",
                offset=base + total - 2,
                field="CS",
            )
        self._consume(total)
        return decode_user_data(user, l_field & 0x03, base + HEADER_LEN)


def _header_prefix_ok(buf: bytearray) -> bool:
    # buf[0] is 68 and len(buf) < 6: whether more bytes could still make a header.
    if len(buf) >= 4 and buf[3] != buf[1]:
        return False
    if len(buf) >= 5 and buf[4] != buf[2]:
        return False
    return (buf[1] & 0x03) in PROTOCOL_IDS


# ---------------------------------------------------------------------------
# Data unit identifiers
# ---------------------------------------------------------------------------


def points_of(da1: int, da2: int, offset: int = 0) -> tuple[int, ...]:
    """The points Pn a DA names: (0,) for P0, (ALL_POINTS,) for DA1 = FF, DA2 = 00."""
    if da2 == 0:
        if da1 == 0:
            return (0,)
        if da1 == 0xFF:
            return (ALL_POINTS,)
        raise FrameError(f"DA1 0x{da1:02X} with DA2 00", offset=offset, field="DA")
    if da1 == 0:
        raise FrameError("DA1 names no point", offset=offset, field="DA")
    base = (da2 - 1) * 8
    return tuple(base + bit + 1 for bit in range(8) if da1 >> bit & 1)


def fns_of(dt1: int, dt2: int, offset: int = 0) -> tuple[int, ...]:
    """The classes Fn a DT names."""
    if dt2 > 30 or dt1 == 0:
        raise FrameError(f"DT {dt1:02X} {dt2:02X} names no class", offset=offset, field="DT")
    return tuple(dt2 * 8 + bit + 1 for bit in range(8) if dt1 >> bit & 1)


def encode_da(points: Iterable[int]) -> bytes:
    """The DA of points of one group (of eight) or P0 or ALL_POINTS alone."""
    pts = sorted(set(points))
    if pts == [0]:
        return b"\x00\x00"
    if pts == [ALL_POINTS]:
        return b"\xff\x00"
    if not pts or not all(1 <= p <= MAX_POINT for p in pts):
        raise ValueError(f"points are 1..{MAX_POINT}, P0 or all alone: {pts}")
    group = {(p - 1) // 8 for p in pts}
    if len(group) != 1:
        raise ValueError(f"one DA holds points of one group of eight: {pts}")
    da1 = 0
    for p in pts:
        da1 |= 1 << ((p - 1) % 8)
    return bytes([da1, group.pop() + 1])


def encode_dt(fns: Iterable[int]) -> bytes:
    """The DT of classes of one group of eight."""
    fs = sorted(set(fns))
    if not fs or not all(1 <= f <= MAX_FN for f in fs):
        raise ValueError(f"classes are F1..F{MAX_FN}: {fs}")
    group = {(f - 1) // 8 for f in fs}
    if len(group) != 1:
        raise ValueError(f"one DT holds classes of one group of eight: {fs}")
    dt1 = 0
    for f in fs:
        dt1 |= 1 << ((f - 1) % 8)
    return bytes([dt1, group.pop()])


def point_groups(points: Iterable[int]) -> list[tuple[int, ...]]:
    """Points split into the groups one DA each can name, in order."""
    groups: dict[int, list[int]] = {}
    for p in sorted(set(points)):
        groups.setdefault(-1 if p in (0, ALL_POINTS) else (p - 1) // 8, []).append(p)
    out: list[tuple[int, ...]] = []
    for key, members in groups.items():
        out += [(m,) for m in members] if key == -1 else [tuple(members)]
    return out


def fn_groups(fns: Iterable[int]) -> list[tuple[int, ...]]:
    groups: dict[int, list[int]] = {}
    for f in sorted(set(fns)):
        groups.setdefault((f - 1) // 8, []).append(f)
    return [tuple(g) for g in groups.values()]


# ---------------------------------------------------------------------------
# Multi-frame answers
# ---------------------------------------------------------------------------


class Reassembler:
    """Joins the frames of a multi-frame answer (FIR, middle frames, FIN) into one frame
    whose data units are theirs in order; a single frame (FIR and FIN) passes through.

    ``add(frame)`` returns the whole answer once its last frame came, else None. The
    frames of one answer share the terminal, AFN and direction and count RSEQ up by one
    (modulo 16); a frame that breaks the run raises FrameError and what was gathered is
    dropped (a new FIR starts afresh). At most ``max_frames`` frames and ``max_bytes``
    bytes of data are held per answer.
    """

    def __init__(self, max_frames: int = 255, max_bytes: int = 1 << 20) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._parts: dict[tuple[str, int, bool], list[Frame]] = {}

    def pending(self) -> int:
        return len(self._parts)

    def reset(self) -> None:
        self._parts.clear()

    def add(self, frame: Frame) -> Frame | None:
        key = (frame.address.key, frame.afn, frame.uplink)
        if frame.seq.fir:
            self._parts.pop(key, None)
            if frame.seq.fin:
                return frame
            self._parts[key] = [frame]
            return None
        parts = self._parts.get(key)
        if parts is None:
            raise FrameError(
                f"frame {frame.seq.seq} of a multi-frame answer without its first frame",
                field="SEQ",
            )
        expected = (parts[-1].seq.seq + 1) & 0x0F
        if frame.seq.seq != expected:
            del self._parts[key]
            raise FrameError(
                f"multi-frame answer broken: RSEQ {frame.seq.seq}, expected {expected}",
                field="SEQ",
            )
        parts.append(frame)
        if len(parts) > self.max_frames or sum(len(p.data) for p in parts) > self.max_bytes:
            del self._parts[key]
            raise FrameError(f"multi-frame answer longer than {self.max_frames} frames",
                             field="SEQ")  # fmt: skip
        if not frame.seq.fin:
            return None
        del self._parts[key]
        first, last = parts[0], parts[-1]
        return attrs.evolve(
            last,
            seq=attrs.evolve(last.seq, fir=True, fin=True, seq=first.seq.seq),
            data=b"".join(p.data for p in parts),
        )


def split_into_frames(
    template: Frame, units: Sequence[bytes], max_user: int, first_seq: int
) -> list[Frame]:
    """``units`` (whole data units) spread over as few frames as ``max_user`` bytes of user
    data allow, as a multi-frame answer with RSEQ counting up from ``first_seq``."""
    overhead = len(attrs.evolve(template, data=b"").user_data())
    room = max_user - overhead
    chunks: list[bytes] = []
    current = b""
    for unit in units:
        if len(unit) > room:
            raise ValueError(f"a data unit of {len(unit)} bytes does not fit one frame")
        if current and len(current) + len(unit) > room:
            chunks.append(current)
            current = b""
        current += unit
    chunks.append(current)
    frames = []
    for i, chunk in enumerate(chunks):
        seq = attrs.evolve(template.seq, seq=(first_seq + i) & 0x0F, fir=i == 0,
                           fin=i == len(chunks) - 1)  # fmt: skip
        frames.append(attrs.evolve(template, seq=seq, data=chunk))
    return frames


__all__ = [
    "ALL_POINTS",
    "Address",
    "Afn",
    "Control",
    "EventCounter",
    "Frame",
    "FrameDecoder",
    "Function",
    "Reassembler",
    "Seq",
    "TimeLabel",
    "decode_frame",
    "decode_user_data",
    "encode_da",
    "encode_dt",
    "fn_groups",
    "fns_of",
    "point_groups",
    "points_of",
    "split_into_frames",
]
