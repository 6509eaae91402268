"""The framings pushed Data-Notifications arrive in, sans-IO: wrapper frames (IEC 62056-47),
HDLC frames (IEC 62056-46: I or UI frames, with or without the LLC header, an APDU
segmented over several frames by the segmentation bit) or M-Bus long frames (EN 13757-2
framing as the Austrian customer interfaces send DLMS: ``68 L L 68 C A CI STSAP DTSAP``,
the APDU segmented by the CI field), told apart per connection by its first bytes (``7E``
opens an HDLC frame, ``00 01`` a wrapper frame, ``68 L L 68`` an M-Bus frame).

``PushStream.receive(bytes)`` gives the pushed APDUs (``PushedApdu``: the APDU and the
address that sent it, ``hdlc:SOURCE``, ``wport:N`` or ``mbus:A``) and the problems met on the way
(``FramingProblem``: a bad frame, a truncated segment sequence, an APDU over the bound),
in the order they came. Nothing is raised; every APDU completed before a problem is kept.
Work and memory are bounded by the input: the HDLC and wrapper decoders are, and a segmented
APDU is given up (a FramingProblem) once it grows over ``MAX_PUSH_APDU`` bytes.
"""

from __future__ import annotations

from typing import Final

import attrs

from fep.errors import FrameError
from fep.protocols.dlms import hdlc, wrapper

# The largest pushed APDU reassembled from HDLC segments (the xDLMS PDU size is 16 bits).
MAX_PUSH_APDU: Final = 0xFFFF
# LLC headers a pushing meter puts before its APDU (the response one as the meter is the
# server; some send the request one); none at all is taken too.
LLC_HEADERS: Final = (hdlc.LLC_RESPONSE, hdlc.LLC_REQUEST)
# Bytes looked at before the framing is decided (a wake-up run of idle flags or zeros).
_DETECT_LIMIT: Final = 4096


@attrs.frozen
class PushedApdu:
    """One APDU as pushed: ``address`` is the sender's link address (``hdlc:16`` for HDLC
    source address 16, ``hdlc:1/17`` with a physical address, ``wport:1`` for a wrapper
    source wPort); ``wport`` the wrapper source wPort (0 on HDLC)."""

    apdu: bytes
    address: str
    wport: int = 0
    framing: str = "wrapper"


@attrs.frozen
class FramingProblem:
    """Bytes that did not make a pushed APDU: ``detail`` says why, ``address`` who sent
    them when known."""

    detail: str
    address: str | None = None


PushItem = PushedApdu | FramingProblem


# The first byte of a pushed APDU sent without an LLC header: Data-Notification,
# Event-Notification, glo-Event-Notification, general-glo/ded ciphering, general-ciphering,
# general-signing.
_PUSH_TAGS: Final = frozenset({0x0F, 0xC2, 0xCA, 0xDB, 0xDC, 0xDD, 0xDF})


def _begins_apdu(information: bytes) -> bool:
    return bool(information) and (
        any(information.startswith(h) for h in LLC_HEADERS) or information[0] in _PUSH_TAGS
    )


def strip_llc(information: bytes) -> bytes:
    """The APDU of an HDLC information field: after the LLC header when there is one."""
    for header in LLC_HEADERS:
        if information.startswith(header):
            return information[len(header) :]
    return information


class HdlcPushDecoder:
    """Pushed APDUs from a stream of HDLC frames: I and UI frames' information fields,
    joined while the segmentation bit says more follow. A segment sequence broken off (a
    new APDU begins, another sender's frame comes, a frame is bad, the connection ends) is a
    FramingProblem; the APDUs completed before it are kept."""

    def __init__(self) -> None:
        self.frames = hdlc.HdlcFrameDecoder()
        self._parts: list[bytes] = []
        self._size = 0
        self._source: str | None = None

    @property
    def buffered(self) -> int:
        return self.frames.buffered + self._size

    def drain(self) -> bytes:
        self._reset()
        return self.frames.drain()

    def _reset(self) -> None:
        self._parts, self._size, self._source = [], 0, None

    def _broken(self, why: str) -> FramingProblem:
        problem = FramingProblem(
            f"HDLC segments of an APDU broken off after {self._size} bytes: {why}",
            self._source,
        )
        self._reset()
        return problem

    def receive(self, data: bytes) -> list[PushItem]:
        items: list[PushItem] = []
        for frame in self.frames.decode_all(data):
            if not isinstance(frame, FrameError):
                items.extend(self._frame(frame))
            elif self._parts:
                items.append(self._broken(f"bad frame ({frame})"))
            else:
                items.append(FramingProblem(f"bad HDLC frame: {frame}"))
        return items

    def _frame(self, frame: hdlc.HdlcFrame) -> list[PushItem]:
        source = f"hdlc:{frame.source}"
        if frame.kind not in (hdlc.FrameKind.I, hdlc.FrameKind.UI):
            return [FramingProblem(f"HDLC {frame.kind.value} frame carries no push", source)]
        items: list[PushItem] = []
        info = frame.information
        if self._parts and (
            source != self._source or any(info.startswith(h) for h in LLC_HEADERS)
        ):
            items.append(self._broken("a new APDU began"))
        if not self._parts and not _begins_apdu(info):
            # The rest of an APDU whose start was lost (a bad frame, a truncated sequence).
            return [FramingProblem(
                f"HDLC frame of {len(info)} bytes that begins no APDU (its start was lost)",
                source)]
        self._source = source
        self._size += len(info)
        if self._size > MAX_PUSH_APDU + len(hdlc.LLC_RESPONSE):
            items.append(self._broken(f"over {MAX_PUSH_APDU} bytes"))
            return items
        self._parts.append(info)
        if frame.segmented:
            return items
        apdu = strip_llc(b"".join(self._parts))
        self._reset()
        if not apdu:
            items.append(FramingProblem("HDLC frame with only an LLC header", source))
        else:
            items.append(PushedApdu(apdu, source, 0, "hdlc"))
        return items

    def close(self) -> list[PushItem]:
        """The connection ended: a frame cut short and a segment sequence still open are
        problems; complete frames held behind a frame cut short (its length field made the
        decoder wait for them) are read once more and kept."""
        rest = self.frames.drain()
        items: list[PushItem] = []
        if rest:
            items.append(FramingProblem(f"HDLC frame cut short: {len(rest)} bytes left",
                                        self._source))
            self.frames = hdlc.HdlcFrameDecoder()
            items += self.receive(rest[1:])
            self.frames.drain()
        if self._parts:
            items.append(self._broken("the connection ended"))
        return items


class WrapperPushDecoder:
    """Pushed APDUs from a stream of wrapper frames."""

    def __init__(self) -> None:
        self.frames = wrapper.WrapperDecoder()

    @property
    def buffered(self) -> int:
        return self.frames.buffered

    def drain(self) -> bytes:
        return self.frames.drain()

    def receive(self, data: bytes) -> list[PushItem]:
        items: list[PushItem] = []
        for f in self.frames.decode_all(data):
            if isinstance(f, FrameError):
                items.append(FramingProblem(f"bad wrapper frame: {f}"))
            else:
                items.append(
                    PushedApdu(f.apdu, f"wport:{f.source_wport}", f.source_wport, "wrapper"))
        return items

    def close(self) -> list[PushItem]:
        return []


# M-Bus long frames carrying DLMS (the Austrian customer interfaces): start 68, L twice, 68,
# then L bytes (C, A, CI, STSAP, DTSAP, the APDU's segment), the checksum of those L bytes
# and the stop byte 16. CI 0x00-0x0F: a segment (its number in the low nibble) with more to
# follow; 0x10-0x1F: the last segment.
MBUS_START: Final = 0x68
MBUS_STOP: Final = 0x16
_MBUS_HEADER: Final = 5  # C, A, CI, STSAP, DTSAP


def mbus_frame_at(data: bytes | bytearray, i: int) -> bool:
    """Whether an M-Bus long frame's start (68 L L 68) is at ``i``."""
    return (len(data) >= i + 4 and data[i] == MBUS_START and data[i + 3] == MBUS_START
            and data[i + 1] == data[i + 2] and data[i + 1] >= _MBUS_HEADER)


def encode_mbus(address: int, apdu: bytes, size: int = 245, *, control: int = 0x53,
                stsap: int = 0x01, dtsap: int = 0x67) -> bytes:
    """``apdu`` in M-Bus long frames of at most ``size`` APDU bytes each, as a customer
    interface sends it (for tests and simulators)."""
    parts = [apdu[i : i + size] for i in range(0, len(apdu), size)] or [b""]
    out = bytearray()
    for n, part in enumerate(parts):
        ci = (n & 0x0F) | (0x10 if n == len(parts) - 1 else 0)
        body = bytes((control, address, ci, stsap, dtsap)) + part
        out += bytes((MBUS_START, len(body), len(body), MBUS_START)) + body
        out += bytes((sum(body) & 0xFF, MBUS_STOP))
    return bytes(out)


class MbusPushDecoder:
    """Pushed APDUs from a stream of M-Bus long frames: segments joined in the order of
    their CI numbers until the last. A bad frame (checksum, stop byte) is a problem and the
    decoder looks for the next frame start; a segment sequence broken off (a segment out of
    order, a new first segment, another sender, the connection ends) is a problem; the
    APDUs completed before it are kept."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._size = 0
        self._next = 0
        self._source: str | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer) + self._size

    def drain(self) -> bytes:
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._reset()
        return rest

    def _reset(self) -> None:
        self._parts, self._size, self._next, self._source = [], 0, 0, None

    def _broken(self, why: str) -> FramingProblem:
        problem = FramingProblem(
            f"M-Bus segments of an APDU broken off after {self._size} bytes: {why}",
            self._source,
        )
        self._reset()
        return problem

    def receive(self, data: bytes) -> list[PushItem]:
        self._buffer += data
        buffer = self._buffer
        items: list[PushItem] = []
        while buffer:
            if buffer[0] != MBUS_START or (len(buffer) >= 4 and not mbus_frame_at(buffer, 0)):
                skip = buffer.find(MBUS_START, 1)
                skip = len(buffer) if skip < 0 else skip
                del buffer[:skip]
                items.append(FramingProblem(f"{skip} bytes outside M-Bus frames dropped",
                                            self._source))
                continue
            if len(buffer) < 4:
                break
            length = buffer[1]
            total = length + 6
            if len(buffer) < total:
                break
            frame = bytes(buffer[:total])
            body = frame[4 : 4 + length]
            if frame[-1] != MBUS_STOP or sum(body) & 0xFF != frame[-2]:
                del buffer[:1]
                why = "no stop byte" if frame[-1] != MBUS_STOP else "checksum"
                if self._parts:
                    items.append(self._broken(f"bad M-Bus frame ({why})"))
                else:
                    items.append(FramingProblem(f"bad M-Bus frame ({why})", self._source))
                continue
            del buffer[:total]
            items.extend(self._frame(body))
        return items

    def _frame(self, body: bytes) -> list[PushItem]:
        address, ci = body[1], body[2]
        source = f"mbus:{address}"
        if ci > 0x1F:
            return [FramingProblem(f"M-Bus frame with CI {ci:#04x} carries no DLMS push",
                                   source)]
        number, last = ci & 0x0F, bool(ci & 0x10)
        items: list[PushItem] = []
        if self._parts and (source != self._source or number != self._next):
            items.append(self._broken("a new APDU began" if number == 0 else
                                      f"segment {number} came after {self._next - 1}"))
        if not self._parts and number != 0:
            items.append(FramingProblem(
                f"M-Bus segment {number} that begins no APDU (its start was lost)", source))
            return items
        self._source = source
        segment = body[_MBUS_HEADER:]
        self._size += len(segment)
        if self._size > MAX_PUSH_APDU:
            items.append(self._broken(f"over {MAX_PUSH_APDU} bytes"))
            return items
        self._parts.append(segment)
        self._next = (number + 1) & 0x0F
        if not last:
            return items
        apdu = b"".join(self._parts)
        self._reset()
        if not apdu:
            items.append(FramingProblem("M-Bus frame without an APDU", source))
        else:
            items.append(PushedApdu(apdu, source, 0, "mbus"))
        return items

    def close(self) -> list[PushItem]:
        items: list[PushItem] = []
        if self._buffer:
            items.append(FramingProblem(f"M-Bus frame cut short: {len(self._buffer)} bytes "
                                        "left", self._source))
            self._buffer.clear()
        if self._parts:
            items.append(self._broken("the connection ended"))
        return items


class PushStream:
    """The pushes of one connection in whichever framing it uses, decided by its first
    bytes: ``7E`` HDLC, ``00 01`` the wrapper, ``68 L L 68`` M-Bus (bytes before any are
    dropped, counted in ``skipped``). ``framing`` is None until decided."""

    # One per pushing connection (thousands of idle GPRS sessions): no instance dict.
    __slots__ = ("_head", "decoder", "skipped")

    def __init__(self) -> None:
        self._head = bytearray()
        self.decoder: HdlcPushDecoder | WrapperPushDecoder | MbusPushDecoder | None = None
        self.skipped = 0

    @property
    def framing(self) -> str | None:
        if self.decoder is None:
            return None
        if isinstance(self.decoder, MbusPushDecoder):
            return "mbus"
        return "hdlc" if isinstance(self.decoder, HdlcPushDecoder) else "wrapper"

    @property
    def buffered(self) -> int:
        return len(self._head) if self.decoder is None else self.decoder.buffered

    def drain(self) -> bytes:
        if self.decoder is None:
            head = bytes(self._head)
            self._head.clear()
            return head
        return self.decoder.drain()

    def receive(self, data: bytes) -> list[PushItem]:
        if self.decoder is not None:
            return self.decoder.receive(data)
        self._head += data
        head = self._head
        flag = head.find(hdlc.FLAG_BYTE)
        version = head.find(b"\x00\x01")
        mbus = next((i for i in range(len(head) - 3) if mbus_frame_at(head, i)), -1)
        starts = [i for i in (flag, version, mbus) if i >= 0]
        if not starts:
            # Keep a last 00 (it may be the start of 00 01) or the last three bytes when an
            # M-Bus start (68) is among them; drop the rest, bounded.
            tail = head[-3:]
            keep = len(tail) - tail.find(MBUS_START) if MBUS_START in tail else 0
            keep = max(keep, 1 if head.endswith(b"\x00") else 0)
            dropped = len(head) - keep
            if dropped > 0:
                self.skipped += dropped
                del head[:dropped]
            if self.skipped > _DETECT_LIMIT:
                self.skipped = 0
                return [FramingProblem(f"no HDLC or wrapper frame in the first "
                                       f"{_DETECT_LIMIT} bytes")]
            return []
        start = min(starts)
        self.skipped += start
        if start == flag:
            self.decoder = HdlcPushDecoder()
        elif start == mbus:
            self.decoder = MbusPushDecoder()
        else:
            self.decoder = WrapperPushDecoder()
        rest = bytes(head[start:])
        self._head.clear()
        return self.decoder.receive(rest)

    def close(self) -> list[PushItem]:
        return self.decoder.close() if self.decoder is not None else []
