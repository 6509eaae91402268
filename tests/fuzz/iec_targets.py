"""Fuzz targets of IEC 62056-21: the message stream decoder (sign-on, identification,
option select, data blocks), the readout parser with its conversion to readings, the
programming-mode client fed a meter's side, and the load profile and logbook decoders."""

from __future__ import annotations

from fep.errors import FepError, FrameError
from fep.protocols.iec62056_21.frames import DataBlock, FrameDecoder
from fep.protocols.iec62056_21.profile import logbook_events, profile_blocks
from fep.protocols.iec62056_21.programming import ProgrammingClient, Read, Write
from fep.protocols.iec62056_21.readout import parse_data_sets, parse_readout, to_readings
from tests.fuzz.parts import chunks
from tests.fuzz.stream import drive


def iec_frames(data: bytes) -> None:
    """Messages from a stream in pieces; data blocks checked. FrameError for bad frames."""
    for message in drive(FrameDecoder(), data):
        if isinstance(message, DataBlock):
            try:
                message.check()
            except FrameError:
                pass


def iec_readout(data: bytes) -> None:
    """A readout's data (between STX and ETX) to data sets and readings; FrameError for a
    readout that does not parse."""
    try:
        readout = parse_readout(data)
    except FrameError:
        return
    readout.serial()
    to_readings(readout, "fuzz")


def iec_programming(data: bytes) -> None:
    """The programming-mode client (sign-on sent, a read and a write to run) fed the
    meter's side in pieces: FrameError or ProtocolError (a refusal among them) end it."""
    client = ProgrammingClient([Read("P.01", ";"), Write("0.9.1", "120000")],
                               password="00000000", meter="fuzz")
    client.start()
    try:
        for piece in chunks(data):
            client.receive_data(piece)
    except FepError:
        pass


def iec_profile(data: bytes) -> None:
    """A programming-mode answer's data sets to load profile blocks and logbook events;
    FrameError for an answer that does not parse."""
    try:
        datasets = parse_data_sets(data).datasets
    except FrameError:
        return
    for decode in (profile_blocks, logbook_events):
        try:
            decode(datasets, "fuzz")
        except FrameError:
            pass


TARGETS = {
    "iec_frames": iec_frames,
    "iec_readout": iec_readout,
    "iec_programming": iec_programming,
    "iec_profile": iec_profile,
}
