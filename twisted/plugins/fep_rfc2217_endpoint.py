"""The ``rfc2217:`` endpoint string prefix: a serial port on an Ethernet serial server,
driven over telnet with the Com Port Control option (RFC 2217).

``clientFromString(reactor, "rfc2217:host=10.0.0.5:port=4001:baudrate=300:parity=E")``;
line defaults are IEC 62056-21's 300 Bd 7E1, as for ``serial:``. The work is in
fep.channels.serialserver, imported only when such a route is parsed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class Rfc2217EndpointParser:
    prefix = "rfc2217"

    def parseStreamClient(self, reactor: Any, *args: Any, **kwargs: Any) -> Any:
        from fep.channels.serialserver import rfc2217_endpoint

        return rfc2217_endpoint(reactor, *args, **kwargs)


rfc2217EndpointParser = Rfc2217EndpointParser()
