"""Fuzz targets of IEC 62056-21: the message stream decoder (sign-on, identification,
option select, data blocks) and the readout parser with its conversion to readings."""

from __future__ import annotations

from fep.errors import FrameError
from fep.protocols.iec62056_21.frames import DataBlock, FrameDecoder
from fep.protocols.iec62056_21.readout import parse_readout, to_readings
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


TARGETS = {"iec_frames": iec_frames, "iec_readout": iec_readout}
