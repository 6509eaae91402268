"""The northbound bus on the machine's RabbitMQ (5672). Acceptance: a subscriber receives every
reading and event of the simulated fleet exactly as stored, including those produced while
the broker was unreachable for 30 s (cut by a TCP proxy the test owns; the broker itself is
never stopped). The outage is 30 s under ``make test-full`` and 12 s in ``make test``
(`tests.scale`): long enough for several polls into the store and for the publisher's
reconnect backoff to reach its 5 s cap. Units: routing keys and message ids."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from fep.model import Meter, MeterEvent, Reading
from fep.operator.northbound import message_id, routing_key
from fep.protocols.dlms import wrapper
from fep.protocols.dlms.security import SecurityKeys
from fep.serialize import record_from_dict
from fep.sim.iec62056_21 import IecMeterServerFactory, make_meters
from fep.store import open_store
from tests.daemon import harness
from tests.daemon.harness import Daemon, sleep, wait_for, write_config
from tests.daemon.test_dlms_push import AK, EK, GOOD, PushingMeter
from tests.operator.helpers import sample_records
from tests.scale import scaled
from tests.system import require_service
from tests.tcpproxy import TcpProxy

BROKER = ("127.0.0.1", 5672)
OUTAGE = float(scaled(30, 12))  # seconds the broker is unreachable


class Subscriber:
    """An AMQP consumer (pika's Twisted adapter) on its own exclusive queue bound to every
    routing key of one exchange, connected to the broker directly."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, Any, dict[str, Any]]] = []
        self.connection: Any = None
        self.channel: Any = None

    async def start(self, exchange: str) -> None:
        import pika
        from pika.adapters.twisted_connection import TwistedProtocolConnection

        protocol = TwistedProtocolConnection(pika.ConnectionParameters())
        self.connection = await connectProtocol(
            TCP4ClientEndpoint(reactor, *BROKER), protocol)
        await self.connection.ready
        self.channel = await self.connection.channel()
        await self.channel.exchange_declare(exchange=exchange, exchange_type="topic",
                                            durable=True)
        declared = await self.channel.queue_declare(queue="", exclusive=True)
        queue_name = declared.method.queue
        await self.channel.queue_bind(queue=queue_name, exchange=exchange, routing_key="#")
        queue, _ = await self.channel.basic_consume(queue=queue_name, auto_ack=True)
        self._consume(queue)

    def _consume(self, queue: Any) -> None:
        def got(item: Any) -> None:
            _channel, method, properties, body = item
            self.messages.append((method.routing_key, properties, json.loads(body)))
            self._consume(queue)

        queue.get().addCallbacks(got, lambda f: None)

    async def stop(self, exchange: str) -> None:
        if self.channel is not None:
            await self.channel.exchange_delete(exchange=exchange)
        if self.connection is not None:
            closed = self.connection.close()
            if closed is not None:
                await closed


class NorthboundOverRabbitMqTests(unittest.TestCase):
    timeout = 180

    async def test_subscriber_gets_every_record_as_stored_across_a_broker_outage(self) -> None:
        require_service(*BROKER, what="RabbitMQ", package="rabbitmq-server")
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        db = workdir / "fep.sqlite"
        exchange = f"fep-test-{secrets.token_hex(4)}"
        subscriber = Subscriber()
        await subscriber.start(exchange)
        self.addCleanup(subscriber.stop, exchange)
        proxy = TcpProxy(reactor, *BROKER)
        proxy_port = await proxy.start()
        self.addCleanup(proxy.stop)

        sims = make_meters(2)
        sim_port = reactor.listenTCP(0, IecMeterServerFactory(sims, reactor),
                                     interface="127.0.0.1")
        self.addCleanup(sim_port.stopListening)
        route = f"tcp:host=127.0.0.1:port={sim_port.getHost().port}"
        await harness.add_meters(f"sqlite:{db}", [
            *[Meter(f"iec-{n}", "iec62056-21", route, address=s.address)
              for n, s in enumerate(sims, 1)],
            Meter("dlms-1", "dlms", "tcp:host=127.0.0.1:port=1", metadata={
                "dlms_server_system_title": GOOD.hex(), "dlms_ek": EK.hex(),
                "dlms_ak": AK.hex()}),
        ])
        config = write_config(
            workdir, f"sqlite:{db}", push_port=0, period=2.0, dlms_push_port=0,
            extra=(f"[northbound]\namqp_url = amqp://guest:guest@127.0.0.1:{proxy_port}/%2F\n"
                   f"exchange = {exchange}\n"))
        daemon = Daemon(config, workdir)
        daemon.start()
        self.addCleanup(daemon.kill)
        push_port = await daemon.bound_port("DlmsPushFactory")

        pusher = PushingMeter(GOOD, SecurityKeys(EK, AK), "GOOD0001")
        start = datetime.now(UTC).replace(microsecond=0)
        clock = [0.0]
        pusher.meter.now = lambda: start + timedelta(seconds=clock[0])

        def push_alarm(code: int) -> None:
            body = pusher.meter.alarm_push_body(code)
            pusher.send(wrapper.encode_wrapper(
                wrapper.WrapperFrame(1, 1, pusher.server.push(body))))

        async def connected() -> bool:
            try:
                await pusher.connect(push_port)
            except Exception:
                return False
            return True

        await wait_for(connected, 30, "the daemon's push listener")
        self.addCleanup(pusher.close)

        def stored(sql: str) -> int:
            return int(harness.sqlite_rows(db, sql, strict=True)[0][0])

        async def flowing() -> bool:
            return len(subscriber.messages) >= 4

        push_alarm(44)  # meter cover removed: an event before the outage
        await wait_for(flowing, 30, "the first records on the bus")

        # The broker becomes unreachable (OUTAGE): polls and a pushed last gasp go on.
        await proxy.cut()
        before = stored("SELECT count(*) FROM readings")
        received_before = len(subscriber.messages)
        clock[0] = 5.0
        push_alarm(1)
        # The outage's length is the thing under test: a wait on the wall clock.
        await sleep(OUTAGE)
        during = stored("SELECT count(*) FROM readings") - before
        self.assertGreaterEqual(during, 8)  # meters kept being read into the store
        self.assertLessEqual(len(subscriber.messages), received_before + 4)
        await proxy.restore()

        async def everything_delivered() -> bool:
            distinct = {properties.message_id for _, properties, _ in subscriber.messages}
            return len(distinct) >= stored("SELECT count(*) FROM readings") + stored(
                "SELECT count(*) FROM events")

        await wait_for(everything_delivered, 60, "the outbox to drain after the outage")
        self.assertEqual(await daemon.interrupt(), 0, daemon.log_text()[-3000:])

        # Every stored record was received, exactly as stored, and nothing else.
        store = open_store(f"sqlite:{db}", reactor)
        await store.open()
        self.addCleanup(store.close)
        expected: set[Any] = set()
        for meter in ("iec-1", "iec-2", "dlms-1"):
            expected.update(await store.readings(meter))
            expected.update(await store.events(meter))
        expected_ids = {message_id(r) for r in expected}

        async def all_received() -> bool:  # what the last batch still carried has come
            return expected_ids <= {p.message_id for _, p, _ in subscriber.messages}

        await wait_for(all_received, 10, "every stored record on the bus", every=0.05)
        # At least once: a message may come twice, under one message id; the first is the
        # record that was stored.
        first: dict[str, Any] = {}
        for _, properties, body in subscriber.messages:
            record = record_from_dict({k: v for k, v in body.items() if k != "node"})
            first.setdefault(properties.message_id, record)
            self.assertEqual(first[properties.message_id], record)
        received = set(first.values())
        self.assertEqual(len(received), len(first))
        self.assertEqual(received, expected)
        events = [r for r in received if isinstance(r, MeterEvent)]
        self.assertEqual(sorted(e.code for e in events), ["dlms:99.98.0:1", "dlms:99.98.0:44"])
        self.assertGreater(len([r for r in received if isinstance(r, Reading)]), during)
        for key, properties, body in subscriber.messages:
            record = record_from_dict({k: v for k, v in body.items() if k != "node"})
            self.assertEqual(key, routing_key(record))
            self.assertEqual(properties.message_id, message_id(record))
            self.assertEqual(properties.delivery_mode, 2)
            self.assertEqual(body["node"], "test")
        log = daemon.log_text()
        self.assertIn("unreachable", log)
        self.assertIn("records wait in the outbox", log)


class RoutingTests(unittest.TestCase):
    def test_routing_keys_and_ids(self) -> None:
        records = sample_records("site.7")
        keys = [routing_key(r) for r in records]
        self.assertEqual(keys[0], "reading.site_7")
        self.assertIn("interval.site_7", keys)
        self.assertEqual(keys[-1], "event.site_7.power-restored")
        ids = [message_id(r) for r in records]
        self.assertEqual(len(set(ids)), len(ids))
        self.assertEqual(message_id(records[0]), message_id(records[0]))

