"""DL/T 698.45 transparent forwarding as a byte pipe: the endpoint for another protocol's
session (a DL/T 645 meter on a DL/T 698.45 terminal's RS-485 port, route
``dlt698:T1:port=F2010201``). It connects over the terminal's own route, makes the
association with the terminal, then each frame the inner session writes goes through the
port as one PROXY TransCommandRequest and the port's answers come back to it. The exchange
itself is sans-IO (fep.protocols.dlt698.forward.ForwardLink); this module only moves bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.errors import ProtocolError
from fep.model import utcnow
from fep.protocols.dlt698.forward import Answer as ForwardAnswer
from fep.protocols.dlt698.forward import ForwardLink, ForwardSettings
from fep.protocols.dlt698.forward import Ready as ForwardReady
from fep.protocols.dlt698.forward import Refused as ForwardRefused
from fep.protocols.dlt698.forward import Reply as ForwardReply
from fep.protocols.dlt698.objects import PROTOCOL

log = Logger(namespace="fep.channels.dlt698_forwarding")


class _ForwardedTransport:
    """The transport the other protocol's session writes to: each write goes through the
    terminal's port as one PROXY TransCommandRequest."""

    def __init__(self, outer: _ForwardingProtocol) -> None:
        self.outer = outer
        self.connected = True

    def write(self, data: bytes) -> None:
        transport = self.outer.transport
        if transport is not None and data:
            transport.write(self.outer.link.wrap(data))

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.connected = False
        self.outer.release()

    abortConnection = loseConnection

    def getPeer(self) -> Any:
        return self.outer.transport.getPeer() if self.outer.transport is not None else None

    def getHost(self) -> Any:
        return self.outer.transport.getHost() if self.outer.transport is not None else None


class _ForwardingProtocol(Protocol):
    """The connection to the terminal: its association first, then the other protocol's
    session (``inner``) over the terminal's port (fep.protocols.dlt698.forward)."""

    def __init__(self, link: ForwardLink, inner: Any, ready: Deferred[Any],
                 fields: dict[str, Any]) -> None:  # fmt: skip
        self.link = link
        self.inner = inner
        self.ready = ready
        self.fields = fields
        self.started = False

    def connectionMade(self) -> None:
        first = self.link.start()
        if first is None:
            self._start()
        else:
            assert self.transport is not None
            self.transport.write(first)

    def _start(self) -> None:
        self.started = True
        self.inner.makeConnection(_ForwardedTransport(self))
        if not self.ready.called:
            self.ready.callback(self.inner)

    def dataReceived(self, data: bytes) -> None:
        for event in self.link.receive(data):
            if isinstance(event, ForwardReady):
                self._start()
            elif isinstance(event, ForwardAnswer):
                if self.started:
                    self.inner.dataReceived(event.data)
            elif isinstance(event, ForwardReply):
                if self.transport is not None:
                    self.transport.write(event.data)
            elif isinstance(event, ForwardRefused):
                log.info("{meter}: forwarding through the terminal: {why}", why=event.why,
                         **self.fields)
                if not self.started and not self.ready.called:
                    self.ready.errback(ProtocolError(event.why, protocol=PROTOCOL,
                                                     meter=self.fields.get("meter")))
                    if self.transport is not None:
                        self.transport.loseConnection()

    def release(self) -> None:
        if self.transport is None:
            return
        if self.link.settings.connect:
            self.transport.write(self.link.release())
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.started:
            self.inner.connectionLost(reason)
        elif not self.ready.called:
            self.ready.errback(reason)


@implementer(IStreamClientEndpoint)
class ForwardingEndpoint:
    """An endpoint for another protocol's session (a DL/T 645 meter on a DL/T 698.45
    terminal's RS-485 port): connects through ``endpoint`` (the terminal's route), makes
    the association with the terminal, then the session's frames go through the port by
    PROXY TransCommandRequest and the port's answers come back to it."""

    def __init__(self, endpoint: Any, settings: ForwardSettings, *, meter: str | None = None,
                 now: Callable[[], datetime] = utcnow) -> None:  # fmt: skip
        self.endpoint = endpoint
        self.settings = settings
        self.meter = meter
        self.now = now
        connect_timeout = getattr(endpoint, "connect_timeout", None)
        if connect_timeout is not None:
            self.connect_timeout = connect_timeout

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        inner = protocolFactory.buildProtocol(None)
        ready: Deferred[Any] = Deferred()
        fields = {"meter": self.meter, "protocol": PROTOCOL}
        outer = _ForwardingProtocol(ForwardLink(self.settings, now=self.now), inner, ready,
                                    fields)
        connecting = self.endpoint.connect(_OneFactory(outer))
        connecting.addErrback(lambda f: ready.errback(f) if not ready.called else None)
        return ready


class _OneFactory(Factory):
    def __init__(self, protocol: Protocol) -> None:
        self.protocol_ = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_


__all__ = ["ForwardingEndpoint"]
