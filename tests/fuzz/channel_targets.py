"""Fuzz targets of the channels: the RFC 2217 telnet client (what a serial server sends) and
the identification of an inbound GPRS connection (arbitrary bytes before login)."""

from __future__ import annotations

from fep.channels.identify import IdentificationError, Identifier, make_rules
from fep.channels.lines import LineSettings
from fep.channels.rfc2217 import Rfc2217Client
from tests.fuzz.parts import chunks

# The DLMS rule decodes APDUs: its inputs are fuzzed with the DLMS targets (dlms_targets.py).
_RULES = ("ascii", "binary", "iec")


def rfc2217_stream(data: bytes) -> None:
    """The client after its opening, fed a server's bytes in pieces, a speed change in the
    middle. A broken subnegotiation is a BadTelnet action, never an exception."""
    client = Rfc2217Client(LineSettings(baudrate=9600, bytesize=8, parity="N"))
    client.start()
    for n, piece in enumerate(chunks(data)):
        client.receive_data(piece)
        if n == 3:
            client.set_baudrate(300)


def gprs_identify(data: bytes) -> None:
    """Every identification rule over a connection's first bytes in pieces, until it is
    identified or refused (IdentificationError, a FrameError)."""
    identifier = Identifier(make_rules(_RULES), max_garbage=1024)
    for piece in chunks(data):
        try:
            if identifier.receive(piece) is not None:
                return
        except IdentificationError:
            return


TARGETS = {"rfc2217_stream": rfc2217_stream, "gprs_identify": gprs_identify}
