"""Where a simulator is served: on a serial device or pty end, or on a TCP port, and the
command line's reactor.

Every simulator that can sit at the far end of a serial route (socat pty pairs in the tests,
a real port in the demo) is put on the line here, with the line settings it starts at. A
simulator run as a command says on stdout, in one line each, where it serves (scripts and
tests read those lines); its logs go to stderr.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, cast

from twisted.internet.interfaces import IListeningPort, IProtocol, IProtocolFactory, IReactorTCP

from fep.reactors import IConnectingReactor, IRunningReactor

if TYPE_CHECKING:
    from fep.channels.serialport import FepSerialPort


def serve_pty(
    reactor: IConnectingReactor, device: str, server: IProtocol | IProtocolFactory, *,
    baudrate: int, frame: str,
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


def serve_tcp(
    reactor: IReactorTCP, port: int, factory: IProtocolFactory, interface: str, what: str
) -> IListeningPort:
    """Listen for ``factory`` on ``interface`` and ``port`` (0: a free one) and say
    ``serving <what> on tcp:<interface>:<port bound>`` on stdout."""
    # listenTCP is declared with a ServerFactory; any protocol factory serves.
    listening: IListeningPort = reactor.listenTCP(
        port, factory, interface=interface  # type: ignore[arg-type]
    )
    bound = getattr(listening.getHost(), "port", port)
    print(f"serving {what} on tcp:{interface}:{bound}", flush=True)
    return listening


def command_reactor() -> IRunningReactor:
    """The global reactor for a simulator run as a command, with logs going to stderr:
    stdout keeps the lines saying what is served."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    return cast(IRunningReactor, reactor)
