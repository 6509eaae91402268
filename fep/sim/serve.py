"""Simulators on serial lines: one meter, bus or modem served on a serial device or pty end.

Every simulator that can sit at the far end of a serial route (socat pty pairs in the tests,
a real port in the demo) is put on the line here, with the line settings it starts at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IProtocol, IProtocolFactory

if TYPE_CHECKING:
    from fep.channels.serialport import FepSerialPort


def serve_pty(
    reactor: Any, device: str, server: IProtocol | IProtocolFactory, *, baudrate: int,
    frame: str,
) -> FepSerialPort:
    """Serve ``server`` (a protocol, or a factory whose one protocol answers the line) on
    ``device`` at ``baudrate`` with ``frame`` (such as ``8N1`` or ``7E1``)."""
    from fep.channels.serialport import (
        FepSerialPort,
        SerialAddress,
        SerialSettings,
        parse_frame,
        whole_stopbits,
    )

    if IProtocolFactory.providedBy(server):
        protocol = server.buildProtocol(SerialAddress(device))
        if protocol is None:
            raise ValueError(f"{server!r} built no protocol for {device}")
    else:
        protocol = server
    line = parse_frame(frame)
    whole_stopbits(line)
    return FepSerialPort(protocol, SerialSettings(device, baudrate=baudrate, **line), reactor)
