"""The northbound bus: every reading, load-profile block and event the store committed is
published to an AMQP 0-9-1 broker (RabbitMQ), at least once, for an MDMS or another site.

Durability: the router hands each committed batch to :meth:`AmqpPublisher.committed`, which
journals it in the publisher's own outbox (a :class:`fep.store.spool.Spool` under
``DATA_DIR/northbound``) before the router releases the batch from its spool. A batch leaves
the outbox only when the broker has confirmed every message of it (publisher confirms), so
records produced while the broker is unreachable wait on disk, across restarts, and are sent
when it is back. A batch cut off half-way is sent again whole: subscribers may see a message
twice and can drop repeats by its ``message_id`` (the record's identity: the first message
of an id is the record the store kept; later records of the same identity, which the store
ignored, are not published while this process remembers the id).

Client: pika's Twisted adapter (``TwistedProtocolConnection``) runs on the reactor itself, no
thread; pika is the RabbitMQ team's recommended Python client, maintained, and its Twisted
adapter supports publisher confirms. Reconnection is Twisted's ``ClientService``.

Messages go to a durable topic exchange (``[northbound] exchange``) with routing keys
``reading.METER``, ``interval.METER`` and ``event.METER.KIND`` (dots in a meter id become
``_``), persistent, ``content_type`` application/json, the body being the record in fep's
wire form (:func:`fep.serialize.record_to_dict`: exact decimals, UTC times).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import Logger

from fep.model import IntervalBlock, MeterEvent, Reading, Record
from fep.operator.settings import OperatorConfig
from fep.reactors import IFepReactor
from fep.serialize import record_to_dict
from fep.store import redact_url
from fep.store.spool import Spool

log = Logger(namespace="fep.operator.northbound")

# Message ids of records already confirmed, remembered to skip repeats of the same identity.
REMEMBER = 200_000


def routing_key(record: Record) -> str:
    meter = record.meter.replace(".", "_")
    if isinstance(record, Reading):
        return f"reading.{meter}"
    if isinstance(record, IntervalBlock):
        return f"interval.{meter}"
    return f"event.{meter}.{record.kind.value}"


def message_id(record: Record) -> str:
    """The record's identity (what the store keeps unique), hashed."""
    if isinstance(record, Reading):
        key = f"R|{record.meter}|{record.obis}|{record.time.isoformat()}"
    elif isinstance(record, IntervalBlock):
        key = f"I|{record.meter}|{record.obis}|{record.start.isoformat()}|{len(record.values)}"
    else:
        assert isinstance(record, MeterEvent)
        key = f"E|{record.meter}|{record.code}|{record.time.isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def message_body(record: Record, node: str) -> bytes:
    body = record_to_dict(record)
    body["node"] = node
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class _AmqpFactory(Factory):
    noisy = False

    def __init__(self, parameters: Any) -> None:
        self.parameters = parameters

    def buildProtocol(self, addr: Any) -> Any:
        from pika.adapters.twisted_connection import TwistedProtocolConnection

        return TwistedProtocolConnection(self.parameters)


class AmqpPublisher:
    """Publishes committed records from a durable outbox to an AMQP topic exchange."""

    def __init__(self, url: str, exchange: str, outbox: Path, reactor: IFepReactor, *,
                 node: str = "fep", batch: int = 500) -> None:
        import pika

        self.url = url
        self.exchange = exchange
        self.reactor = reactor
        self.node = node
        self.batch = batch
        self.parameters = pika.URLParameters(url)
        self.outbox = Spool(outbox, reactor)
        self._queue: deque[tuple[int, Sequence[Record]]] = deque()
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._wake: Deferred[None] | None = None
        self._service: ClientService | None = None
        self._loop: Deferred[None] | None = None
        self._running = False
        self._connection: Any = None
        self.connected = False
        self.published = 0
        self.reconnects = 0

    @classmethod
    def from_config(cls, config: OperatorConfig, reactor: IFepReactor) -> AmqpPublisher:
        section = config.northbound
        return cls(section.amqp_url, section.exchange,
                   Path(config.fep.data_dir) / "northbound", reactor,
                   node=config.fep.node, batch=section.batch)

    def stats(self) -> dict[str, Any]:
        return {"published": self.published, "backlog": self.backlog(),
                "connected": self.connected, "broker": redact_url(self.url),
                "exchange": self.exchange}

    def backlog(self) -> int:
        return self.outbox.depth()

    # -- the router hook -------------------------------------------------------------------

    def committed(self, records: Sequence[Record]) -> Deferred[None]:
        """Journal a committed batch; fires once it is on disk."""
        taken = list(records)

        def queued(batch_id: int) -> None:
            self._queue.append((batch_id, taken))
            self._kick()

        return self.outbox.append(taken).addCallback(queued)

    def _kick(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.callback(None)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for batch_id, records in await self.outbox.open():
            self._queue.append((batch_id, records))
        if self._queue:
            log.info("northbound outbox: {count} records from before to publish",
                     count=self.outbox.depth())
        parts = urlsplit(self.url)
        endpoint = TCP4ClientEndpoint(self.reactor, parts.hostname or "127.0.0.1",
                                      parts.port or 5672, timeout=10)
        self._service = ClientService(
            endpoint, _AmqpFactory(self.parameters), clock=self.reactor,
            retryPolicy=backoffPolicy(initialDelay=0.5, factor=2.0, maxDelay=5.0))
        self._service.startService()
        self._running = True
        self._loop = Deferred.fromCoroutine(self._run())
        self._loop.addErrback(lambda f: log.failure("northbound publisher stopped", f))

    async def stop(self) -> None:
        self._running = False
        self._kick()
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:
                pass
        if self._service is not None:
            await self._service.stopService()
        if self._loop is not None:
            await self._loop
        await self.outbox.close()

    # -- publishing --------------------------------------------------------------------------

    def _stopped(self) -> bool:
        return not self._running

    async def _run(self) -> None:
        assert self._service is not None
        broker = redact_url(self.url)
        down_logged = False
        while self._running:  # stop() turns it off
            try:
                connection: Any = await self._service.whenConnected()
                if self._stopped():
                    return
                self._connection = connection
                await connection.ready
                channel = await connection.channel()
                await channel.exchange_declare(exchange=self.exchange, exchange_type="topic",
                                               durable=True)
                await channel.confirm_delivery()
                self.connected = True
                down_logged = False
                log.info("northbound: publishing to {exchange} on {broker}",
                         exchange=self.exchange, broker=broker)
                await self._publish_all(channel)
            except Exception as e:
                if self._stopped():
                    return
                self.connected = False
                self.reconnects += 1
                if not down_logged:
                    log.warn("northbound: broker {broker} unreachable ({error}); {backlog} "
                             "records wait in the outbox", broker=broker, error=e,
                             backlog=self.backlog())
                    down_logged = True
                if self._connection is not None and self._connection.transport is not None:
                    self._connection.transport.loseConnection()
                self._connection = None
                # ClientService reconnects with backoff; whenConnected waits for that.
                await deferLater(self.reactor, 0.2)
        self.connected = False

    async def _publish_all(self, channel: Any) -> None:
        import pika

        while self._running:
            if not self._queue:
                self._wake = Deferred()
                await self._wake
                continue
            batch_id, records = self._queue[0]
            confirms = []
            fresh = []
            for record in records:
                # The store keeps the first record of an identity (meter, quantity, time) and
                # ignores repeats (a register re-read with the same meter time): so does
                # the bus, as far as this process remembers.
                ident = message_id(record)
                if ident in self._sent:
                    continue
                fresh.append(ident)
                properties = pika.BasicProperties(
                    content_type="application/json", delivery_mode=2,
                    message_id=ident, app_id=f"fep/{self.node}",
                    type=type(record).__name__)
                confirms.append(channel.basic_publish(
                    exchange=self.exchange, routing_key=routing_key(record),
                    body=message_body(record, self.node), properties=properties))
            await gatherResults(confirms, consumeErrors=True)
            for ident in fresh:
                self._sent[ident] = None
            while len(self._sent) > REMEMBER:
                self._sent.popitem(last=False)
            # Confirmed by the broker: the batch may leave the outbox.
            if self._queue and self._queue[0][0] == batch_id:
                self._queue.popleft()
            self.outbox.release(batch_id)
            self.published += len(fresh)
