"""Fuzz targets of ANSI C12.18 (packets, the link, PSEM requests and answers), C12.21 and the
C12.19 tables (every table fep decodes, ST64 on its own)."""

from __future__ import annotations

from datetime import UTC

from fep.errors import FrameError
from fep.protocols.ansi_c12 import c1218, c1221, tables
from fep.protocols.ansi_c12.c1218 import C12ResponseError, Link, PacketDecoder
from tests.fuzz.parts import chunks, split
from tests.fuzz.stream import drive


def c1218_packet(data: bytes) -> None:
    """The packet decoder over a stream in pieces (FrameError per bad packet)."""
    drive(PacketDecoder(), data)


def c1218_link(data: bytes) -> None:
    """The client link with a message waiting for its ACK: never raises on received bytes
    (damaged packets are NAKed)."""
    link = Link(retries=1_000_000)
    link.send(b"\x30\x00\x00")
    for piece in chunks(data):
        link.receive(piece)


def c1218_psem(data: bytes) -> None:
    """The PSEM request decoder (C12.21's too) and every answer decoder on one message."""
    for decode in (c1218.decode_request, c1221.decode_request):
        try:
            decode(data)
        except FrameError:
            pass
    answers = (
        c1218.IdentifyResponse.decode,
        c1218.NegotiateResponse.decode,
        c1218.decode_read_response,
        lambda d: c1218.decode_ok(d, "logon"),
        c1221.TimingSetupResponse.decode,
        c1221.AuthenticateResponse.decode,
    )
    for answer in answers:
        try:
            answer(data)
        except (FrameError, C12ResponseError):
            pass
    try:
        identification = c1218.IdentifyResponse.decode(data)
    except (FrameError, C12ResponseError):
        return
    c1221.auth_service(identification)


# The tables the first byte of a c1219_table input picks (the corpus's seeds name them by
# this order, so it stays as it was); the tables of procedures, snapshots and the time
# offset have their own target, c1219_control.
TABLES = [0, 1, 3, 5, 11, 12, 13, 14, 15, 16, 21, 22, 23, 52, 61, 62, 63, 64, 71, 74, 76]
CONTROL_TABLES = sorted(set(tables.TABLE_NAMES) - set(TABLES))


def c1219_table(data: bytes, choices: list[int] = TABLES) -> None:
    """One table picked by the first byte, with ST0 and the tables it is decoded with:
    ``table-byte, ST0, needed..., table`` (parts as ``tests.fuzz.parts.split`` cuts them).
    ``table_row`` catches FrameError itself; ``table_size`` may raise it."""
    if not data:
        return
    table = choices[data[0] % len(choices)]
    needs = [n for n in tables.table_needs(table)]
    parts = split(data[1:], 2 + len(needs))
    given = {0: parts[0], **dict(zip(needs, parts[1:-1], strict=True)), table: parts[-1]}
    tables.table_row("fuzz", table, given, UTC)
    try:
        tables.table_size(table, given)
    except FrameError:
        pass


def c1219_control(data: bytes) -> None:
    """As c1219_table, over ST7/ST8 (procedures), ST24-26 (snapshots), ST51/ST53."""
    c1219_table(data, CONTROL_TABLES)


def c1219_st64(data: bytes) -> None:
    """ST64 with the ST0, ST61 and ST62 it is laid out by: ``ST0, ST61, ST62, ST64``."""
    st0, st61, st62, st64 = split(data, 4)
    given = {0: st0, 61: st61, 62: st62, 64: st64}
    try:
        tables.table_size(64, given)
        tables.decode_table(64, given, UTC)
    except FrameError:
        pass


TARGETS = {
    "c1218_packet": c1218_packet,
    "c1218_link": c1218_link,
    "c1218_psem": c1218_psem,
    "c1219_table": c1219_table,
    "c1219_control": c1219_control,
    "c1219_st64": c1219_st64,
}
