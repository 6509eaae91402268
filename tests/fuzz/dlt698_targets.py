"""Fuzz targets of DL/T 698.45: the link-frame stream decoder with split-frame reassembly
and the APDU decoder behind it, the APDU decoder alone with the answers turned into records,
the typed-data decoder, and the read client taking a meter's side of a session."""

from __future__ import annotations

from datetime import UTC, datetime

from fep.errors import FrameError
from fep.protocols.dlt698.apdu import GetResponse, ReportNotification, decode_apdu
from fep.protocols.dlt698.client import ClientSettings, Dlt698Client, ProxyRead, RecordRead
from fep.protocols.dlt698.data import OAD, decode_data
from fep.protocols.dlt698.frames import (
    FrameDecoder,
    Reassembler,
    decode_fragment,
    decode_frame,
)
from fep.protocols.dlt698.objects import NoMapping, readings, record_records
from fep.protocols.dlt698.terminal import TerminalLink
from tests.fuzz.parts import chunks
from tests.fuzz.stream import drive

_AT = datetime(2024, 1, 1, tzinfo=UTC)


def _records(apdu: object) -> None:
    """What the client does with an answer: readings and records (NoMapping for what fep
    cannot file)."""
    if not isinstance(apdu, GetResponse | ReportNotification):
        return
    for result in apdu.results:
        try:
            readings(result, meter="fuzz", tz=UTC, received=_AT)
        except NoMapping:
            pass
    for record in apdu.records:
        try:
            record_records(record, meter="fuzz", tz=UTC, received=_AT)
        except NoMapping:
            pass


def dlt698_frame(data: bytes) -> None:
    """Frames from a stream in pieces; split frames reassembled; every APDU decoded. A
    frame alone through ``decode_frame``. FrameError for bad bytes."""
    reassembler = Reassembler(limit=4096)
    for frame in drive(FrameDecoder(), data):
        apdu = frame.data
        if frame.split:
            try:
                whole = reassembler.accept(decode_fragment(frame.data))
            except FrameError:
                continue
            if whole is None:
                continue
            apdu = whole
        try:
            _records(decode_apdu(apdu))
        except FrameError:
            pass
    try:
        decode_frame(data)
    except FrameError:
        pass


def dlt698_apdu(data: bytes) -> None:
    """One APDU (either direction) and the records of an answer. FrameError for bad bytes."""
    try:
        _records(decode_apdu(data))
    except FrameError:
        pass


def dlt698_data(data: bytes) -> None:
    """Typed data values one after the other. FrameError for bad bytes."""
    at = 0
    while at < len(data):
        try:
            _, at = decode_data(data, at)
        except FrameError:
            return


def dlt698_client(data: bytes) -> None:
    """The read client (sans-IO) fed a meter's side of a session in pieces, with a timeout
    after each: nothing may raise out of it (it counts, skips or fails)."""
    client = Dlt698Client(ClientSettings(
        address="000000123456", items=(OAD(0x0010, 2), OAD(0x2000, 2)),
        records=(RecordRead(OAD(0x5004, 2), last=1),),
        proxies=(ProxyRead("000000000001", (OAD(0x0010, 2),)),)), now=lambda: _AT)
    client.start()
    for piece in chunks(data):
        if client.done:
            break
        client.receive(piece)
    client.timeout()


def dlt698_terminal(data: bytes) -> None:
    """A terminal's own traffic (logins, heartbeats, reports) in pieces: nothing may raise
    out of TerminalLink (bad bytes are Noise)."""
    link = TerminalLink(tz=UTC, now=lambda: _AT)
    for piece in chunks(data):
        link.receive(piece)


def dlt698_push(data: bytes) -> None:
    """A terminal's traffic on a GPRS session (the protocol's push handler) in pieces: the
    answers written, reports kept and acknowledged; nothing may raise out of it (bad bytes
    are counted)."""
    from twisted.internet.defer import succeed

    from fep.model import Meter
    from fep.protocols.dlt698.session import Dlt698Protocol

    class Sink:
        def submit(self, records: object) -> object:
            return succeed(None)

    class Directory:
        def all(self) -> list[Meter]:
            return [Meter("M1", "dlt698", "dlt698:T1", address="000000000001",
                          metadata={"concentrator": "T1"})]

    written: list[bytes] = []
    handler = Dlt698Protocol().push_handler(
        Meter("T1", "dlt698", "gprs:dlt698=000000123456", address="000000123456"), Sink(),
        directory=Directory(), counters=None, source="fuzz", close=lambda: None,
        reply=written.append)
    for piece in chunks(data):
        handler.data_received(piece)
        if len(written) > 64:
            written.clear()
    handler.take_buffered()


def dlt698_identify(data: bytes) -> None:
    """The dlt698 identification rule (beside the ascii one, as the defaults run it) over
    a connection's first bytes in pieces, until identified or refused."""
    from fep.channels.identify import IdentificationError, Identifier, make_rules

    identifier = Identifier(make_rules(("ascii", "dlt698")), max_garbage=1024)
    for piece in chunks(data):
        try:
            if identifier.receive(piece) is not None:
                return
        except IdentificationError:
            return


TARGETS = {"dlt698_frame": dlt698_frame, "dlt698_apdu": dlt698_apdu, "dlt698_data": dlt698_data,
           "dlt698_client": dlt698_client, "dlt698_terminal": dlt698_terminal,
           "dlt698_push": dlt698_push, "dlt698_identify": dlt698_identify}
