"""Fuzz targets of the text fep reads back or is sent: the spool's record wire form, its
binary frame payload and the control socket's request line."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport

from fep.operator.control import ControlServer
from fep.serialize import RecordDecodeError, decode_records
from fep.store.spool import decode_batch


def spool_records(data: bytes) -> None:
    """A spool record list (JSON) back to records; RecordDecodeError for anything else."""
    try:
        decode_records(data)
    except RecordDecodeError:
        pass


def spool_batch(data: bytes) -> None:
    """A spool frame's payload (the binary form, or the JSON of earlier versions) back to
    records; RecordDecodeError for anything else."""
    try:
        decode_batch(data)
    except RecordDecodeError:
        pass


def _sessions(request: dict[str, Any]) -> dict[str, Any]:
    return {"sessions": []}


def control_request(data: bytes) -> None:
    """Request lines to the control socket's protocol: each is answered with a JSON line
    (an error answer for a bad request); nothing may escape ``dataReceived``."""
    server = ControlServer(None, "unused.sock")
    server.add("sessions", _sessions)
    protocol = server.protocol_factory().buildProtocol(None)
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(data + b"\n")
    if not transport.value().endswith(b"\n"):
        raise AssertionError("a request line got no answer")


TARGETS = {
    "spool_records": spool_records,
    "spool_batch": spool_batch,
    "control_request": control_request,
}
