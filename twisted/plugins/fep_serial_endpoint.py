"""The ``serial:`` endpoint string prefix, so serial ports are routes like TCP ones.

``clientFromString(reactor, "serial:/dev/ttyUSB0:baudrate=300:bytesize=7:parity=E")``;
defaults are IEC 62056-21's 300 Bd 7E1. The work is in fep.channels.serialport, imported
only when a serial route is parsed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class SerialEndpointParser:
    prefix = "serial"

    def parseStreamClient(self, reactor: Any, *args: Any, **kwargs: Any) -> Any:
        from fep.channels.serialport import serial_endpoint

        return serial_endpoint(reactor, *args, **kwargs)


serialEndpointParser = SerialEndpointParser()
