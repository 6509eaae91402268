"""Fuzz targets of Q/GDW 1376.1: the frame stream decoder with multi-frame reassembly, the
service decoders and the record mapping; the data units of every AFN/Fn layout and the
appendix A data formats; a concentrator dialling in (the ``gw3761`` identification rule, then
the report handler of its session)."""

from __future__ import annotations

from datetime import UTC, datetime

from fep.channels.identify import Gw3761Rule, IdentificationError, Identifier
from fep.errors import FrameError, ProtocolError
from fep.protocols.gw3761 import formats, services
from fep.protocols.gw3761.frames import FrameDecoder, Reassembler, decode_frame
from fep.protocols.gw3761.records import RecordMapper
from fep.protocols.gw3761.reports import ConcentratorLink
from tests.fuzz.stream import drive

_MAPPER = RecordMapper("fuzz", {1: "m1", 2: "m2"})


def gw3761_frame(data: bytes) -> None:
    """Frames from a stream in pieces, joined by the reassembler, decoded into events and
    mapped to records. FrameError for bad bytes, ProtocolError (UnknownFn) for an AFN/Fn
    without a layout; the mapping raises nothing."""
    joiner = Reassembler(max_frames=16)
    for frame in drive(FrameDecoder(), data):
        try:
            whole = joiner.add(frame)
        except FrameError:
            continue
        if whole is None:
            continue
        try:
            event = services.decode_event(whole)
        except (FrameError, ProtocolError):
            continue
        if isinstance(event, services.Data):
            _MAPPER.records(event)
    try:
        decode_frame(data)
    except FrameError:
        pass


_LAYOUTS = sorted(services.LAYOUTS)
_FORMATS = sorted(formats.FORMATS)


def gw3761_units(data: bytes) -> None:
    """``mode, data``: mode 0..127 picks an (AFN, Fn) layout and a direction and decodes
    ``data`` as that AFN's data units; 128..255 decodes the head of ``data`` as an appendix
    A format and encodes the value back. FrameError for bytes that do not fit, UnknownFn
    for classes without a layout."""
    if not data:
        return
    mode, payload = data[0], data[1:]
    if mode < 128:
        afn, _ = _LAYOUTS[mode // 2 % len(_LAYOUTS)]
        try:
            items = services.decode_units(afn, payload, bool(mode & 1))
        except (FrameError, ProtocolError):
            return
        _MAPPER.records(services.Data(services.Address("0000", 1), afn, tuple(items)))
        return
    f = formats.FORMATS[_FORMATS[mode % len(_FORMATS)]]
    try:
        value = f.decode(payload[: f.size])
    except FrameError:
        return
    f.encode(value)


_NOW = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def gw3761_dialin(data: bytes) -> None:
    """A connection's bytes in pieces (the first byte sets the piece size): identified by a
    login (IdentificationError, a FrameError, when none comes), then the rest to the
    session's report handler, which raises nothing (bad input is counted)."""
    if not data:
        return
    size, stream = data[0] % 32 + 1, data[1:]
    identifier = Identifier([Gw3761Rule()], max_garbage=512)
    link: ConcentratorLink | None = None
    for at in range(0, len(stream), size):
        piece = stream[at : at + size]
        if link is not None:
            link.receive(piece)
            continue
        try:
            found = identifier.receive(piece)
        except IdentificationError:
            return
        if found is not None:
            link = ConcentratorLink("fuzz", None, now=lambda: _NOW, clock=lambda: 0.0,
                                    points={1: "m1"})  # fmt: skip
            link.receive(found.data)
    if link is not None:
        link.pending()
        link.take_buffered()


TARGETS = {"gw3761_frame": gw3761_frame, "gw3761_units": gw3761_units,
           "gw3761_dialin": gw3761_dialin}
