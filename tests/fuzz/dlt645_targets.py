"""Fuzz targets of DL/T 645: the frame stream decoder with the service answer decoders (a
read's and relay control's abnormal answers among them), and
the data identifiers (readings, blocks, event records)."""

from __future__ import annotations

from datetime import UTC, datetime

from fep.errors import FrameError, ProtocolError
from fep.protocols.dlt645 import dataid, services
from fep.protocols.dlt645.frames import FrameDecoder, decode_frame
from fep.protocols.dlt645.reports import ReportLink, ReportMeter, Store
from tests.fuzz.stream import drive

_REQUEST = services.read_data("000000000001", 0x00010000)
_RELAY = services.relay_control("000000000001", services.RelayAction.TRIP,
                                services.Password(2, "123456"), "00000000",
                                datetime(2024, 3, 1, 16, 15))


def dlt645_frame(data: bytes) -> None:
    """Frames from a stream in pieces, each handed to every answer decoder; a frame alone
    through ``decode_frame``. FrameError for bad bytes; ProtocolError (MeterErrorResponse)
    for answers that are not the normal one."""
    for frame in drive(FrameDecoder(), data):
        for decode in (
            services.decode_read,
            services.decode_read_address,
            services.decode_change_baud,
            services.decode_change_password,
            lambda f: services.check_response(f, _REQUEST),
            lambda f: services.check_response(f, _RELAY),
        ):
            try:
                decode(frame)
            except (FrameError, ProtocolError):
                pass
    try:
        decode_frame(data)
    except FrameError:
        pass


# Known identifiers, so that most inputs reach a decoder: 2007 items, 1997 items, event
# record families (n = 1) and block identifiers.
_DI_2007 = sorted(dataid.catalogue(2007))
_DI_1997 = sorted(dataid.catalogue(1997))
_EVENTS = sorted(record.base | 1 for record in dataid.EVENT_RECORDS)
_BLOCKS = sorted({di | 0xFF for di in _DI_2007} | {di | 0xFF00 for di in _DI_2007})


def dlt645_dataid(data: bytes) -> None:
    """``mode, index (2 bytes), data``: mode picks the list (2007 items, 1997 items, event
    records, block DIs, or a raw 4-byte DI). FrameError for data that do not fit the DI's
    format, ProtocolError for a DI fep has no format for."""
    if len(data) < 3:
        return
    mode, index, payload = data[0] % 5, int.from_bytes(data[1:3], "big"), data[3:]
    edition = 2007
    if mode == 0:
        di = _DI_2007[index % len(_DI_2007)]
    elif mode == 1:
        di, edition = _DI_1997[index % len(_DI_1997)], 1997
    elif mode == 2:
        di = _EVENTS[index % len(_EVENTS)]
    elif mode == 3:
        di = _BLOCKS[index % len(_BLOCKS)]
    else:
        di, payload = int.from_bytes(data[1:5], "big"), data[5:]
    try:
        dataid.decode(di, payload, meter="fuzz", edition=edition)
    except (FrameError, ProtocolError):
        pass
    if dataid.event_record(di) is not None:
        try:
            dataid.decode_events(di, payload, meter="fuzz")
        except FrameError:
            pass


_NOW = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def dlt645_reports(data: bytes) -> None:
    """A DTU session's bytes in pieces (the first byte sets the piece size) to the active
    reporting link of two meters (000000000101, 000000000102), every Store confirmed and
    the timer run out after each piece: nothing raises (bad input is counted)."""
    if not data:
        return
    size, stream = data[0] % 32 + 1, data[1:]
    link = ReportLink({"000000000101": ReportMeter("m1"), "000000000102": ReportMeter("m2")},
                      now=lambda: _NOW, clock=lambda: 0.0)
    for at in range(0, len(stream), size):
        actions = link.receive(stream[at : at + size])
        if at // size % 3 == 2:
            actions += link.timeout()
        for action in actions:
            if isinstance(action, Store) and action.ticket is not None:
                link.stored(action.ticket)
    link.pending()
    link.take_buffered()


TARGETS = {"dlt645_frame": dlt645_frame, "dlt645_dataid": dlt645_dataid,
           "dlt645_reports": dlt645_reports}
