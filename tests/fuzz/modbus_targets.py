"""Fuzz targets of Modbus: PDUs both ways, the RTU and the TCP (MBAP) stream decoders."""

from __future__ import annotations

from fep.errors import FrameError
from fep.protocols.modbus import pdu
from fep.protocols.modbus.rtu import RtuDecoder
from fep.protocols.modbus.tcp import MbapDecoder
from tests.fuzz.stream import drive


def _pdu(data: bytes) -> None:
    try:
        response = pdu.decode_response(data)
    except FrameError:
        pass
    else:
        pdu.check_response(pdu.read_holding_registers(0, 2), response)
    try:
        pdu.decode_request(data)
    except (FrameError, ValueError):
        # ValueError: a known layout with a value out of range (documented).
        pass
    for request in (True, False):
        try:
            pdu.pdu_length(data, request=request)
        except FrameError:
            pass


def modbus_pdu(data: bytes) -> None:
    """A PDU as response and as request, and its length from its head. FrameError for bad
    layouts; decode_request also ValueError for values out of range."""
    _pdu(data)


def modbus_rtu_stream(data: bytes) -> None:
    """RTU frames from a stream in pieces (both directions; the second byte-of-input bit
    sets an expected answer length), each PDU decoded."""
    if not data:
        return
    for requests in (False, True):
        decoder = RtuDecoder(requests=requests)
        if data[0] & 1:
            decoder.expected = frozenset({5, 2 + 2 * (data[0] >> 1)})
        for frame in drive(decoder, data[1:]):
            _pdu(frame.pdu)
        decoder.silence()


def modbus_tcp_stream(data: bytes) -> None:
    """MBAP frames from a stream in pieces, each PDU decoded."""
    for frame in drive(MbapDecoder(), data):
        _pdu(frame.pdu)


TARGETS = {
    "modbus_pdu": modbus_pdu,
    "modbus_rtu_stream": modbus_rtu_stream,
    "modbus_tcp_stream": modbus_tcp_stream,
}
