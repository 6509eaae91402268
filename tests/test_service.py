"""The composition root (fep.service): every part of the daemon a named child of one service
tree, in dependency order; stopped in reverse; a failing start stops the reactor; the
operator tier's listeners on endpoint strings; the DLMS context through the registry."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from fep.config import parse_config
from fep.service import FepService
from fep.store.spool import Spool
from tests.operator.helpers import sample_records


class StopRecorder:
    """The real reactor, except that ``stop`` is only recorded (a failing start must not
    stop the test's reactor)."""

    running = True

    def __init__(self) -> None:
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


class ServiceTreeTests(unittest.TestCase):
    def config(self, extra: str = "", push: str = "tcp:0:interface=127.0.0.1") -> Any:
        # A UNIX socket path must stay short: the data directory is not the deep temp.
        data = Path(tempfile.mkdtemp(prefix="fep-"))
        self.addCleanup(shutil.rmtree, data, True)
        return parse_config(
            f"[fep]\nnode = tree\ndata_dir = {data}\n[store]\nurl = sqlite:{data}/fep.sqlite\n"
            f"[collect]\nperiod = 3600\n[push]\niec62056_21 = {push}\n"
            f"[http]\nlisten = tcp:0:interface=127.0.0.1\n{extra}")

    def test_every_part_is_a_named_child_in_dependency_order(self) -> None:
        daemon = FepService(self.config(), reactor)
        self.assertEqual(
            [child.name for child in daemon],
            ["store", "alarms", "router", "directory", "collection", "dlms-counters",
             "scheduler", "plans", "push-iec62056-21", "control", "operator"],
        )
        self.assertIs(daemon.getServiceNamed("router"), daemon.router)
        self.assertIs(daemon.getServiceNamed("operator"), daemon.operator)
        self.assertEqual([child.name for child in daemon.operator], ["http"])
        for child in daemon:
            self.assertIs(child.parent, daemon)

    def test_on_postgresql_the_partition_keeper_follows_the_store(self) -> None:
        from fep.store.partitions import PartitionKeeper

        url = "postgresql://fep@127.0.0.1:1/fep"  # never connected: the tree is only built
        daemon = FepService(parse_config(
            f"[fep]\nnode = tree\ndata_dir = {self.mktemp()}\n[store]\nurl = {url}\n"
            "partitions_ahead = 5\nretention = 2 years\nretention_action = drop\n"
            "[collect]\nenabled = no\n"), reactor)
        names = [child.name for child in daemon]
        self.assertEqual(names[:2], ["store", "partitions"])
        keeper = daemon.getServiceNamed("partitions")
        self.assertIsInstance(keeper, PartitionKeeper)
        self.assertEqual((keeper.months_ahead, keeper.retention_months,
                          keeper.retention_action), (5, 24, "drop"))
        self.assertIs(keeper.store, daemon.store)
        self.assertNotIn("partitions", [c.name for c in FepService(self.config(), reactor)])
        # A backlog is written in transactions of batch_size on PostgreSQL, 50,000 on SQLite.
        self.assertEqual(daemon.router.write_batch, 5000)
        self.assertEqual(FepService(self.config(), reactor).router.write_batch, 50_000)
        self.assertEqual(FepService(self.config("[spool]\nbacklog_batch = 7000\n"),
                                    reactor).router.write_batch, 7000)

    async def test_starts_in_order_and_stops_in_reverse(self) -> None:
        daemon = FepService(self.config(), reactor)
        events: list[str] = []
        for child in daemon:
            self.record(child, events)
        await daemon.startService()
        self.assertEqual(events, [f"start {child.name}" for child in daemon])
        # The web server listens on the endpoint string, on a port of the system's choice.
        http = daemon.operator.getServiceNamed("http")
        self.assertNotEqual(http.port.getHost().port, 0)
        del events[:]
        await daemon.stopService()
        self.assertEqual(events, [f"stop {child.name}" for child in reversed(list(daemon))])
        self.assertFalse(any(child.running for child in daemon))

    def record(self, child: Any, events: list[str]) -> None:
        start, stop = child.startService, child.stopService

        def started() -> Any:
            events.append(f"start {child.name}")
            return start()

        def stopped() -> Any:
            events.append(f"stop {child.name}")
            return stop()

        child.startService = started
        child.stopService = stopped

    async def test_a_failing_start_stops_the_reactor(self) -> None:
        taken = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        config = self.config(push=f"tcp:{taken.getHost().port}:interface=127.0.0.1")
        fake = StopRecorder()
        daemon = FepService(config, fake)
        await daemon.startService()
        self.assertEqual(fake.stopped, 1)
        self.assertEqual(len(self.flushLoggedErrors()), 1)
        # What had started stops as usual (what had not, is left alone).
        self.assertFalse(daemon.getServiceNamed("control").running)
        await maybeDeferred(daemon.stopService)
        self.assertFalse(any(child.running for child in daemon))

    async def test_records_committed_while_the_router_flushes_reach_alarms_and_northbound(
            self) -> None:
        # Records still waiting in the router at stop (a long max_delay keeps them there) are
        # committed by its flush: the alarm engine and the northbound outbox still take them.
        nobody = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        port = nobody.getHost().port
        await nobody.stopListening()
        config = self.config(f"[spool]\nmax_delay = 3600\n[northbound]\n"
                             f"amqp_url = amqp://guest:guest@127.0.0.1:{port}/%2F\n")
        daemon = FepService(config, reactor)
        names = [child.name for child in daemon]
        self.assertLess(names.index("alarms"), names.index("router"))
        self.assertLess(names.index("northbound"), names.index("router"))
        await daemon.startService()
        records = sample_records("m1")
        submitted = daemon.router.submit(records)
        await daemon.stopService()
        await submitted
        self.assertEqual(daemon.router.committed, len(records))
        self.assertEqual(sum(daemon.operator.alarms.raised.values()), 2)
        # The broker was never reached: every record waits in the outbox for the next start.
        outbox = Spool(Path(config.fep.data_dir) / "northbound", reactor)
        waiting = [record for _, batch in await outbox.open() for record in batch]
        await outbox.close()
        self.assertEqual(waiting, records)

    def test_the_sms_channel_stops_after_the_alarms_that_send_texts(self) -> None:
        daemon = FepService(self.config("[sms]\nport = serial:/dev/null:115200:8N1\n"),
                            reactor)
        names = [child.name for child in daemon]
        self.assertLess(names.index("sms"), names.index("alarms"))
        # Texts from meters reach the router only while it and the meter list are up.
        self.assertGreater(names.index("sms-events"), names.index("directory"))
        self.assertFalse(daemon.sms_events.open)

    def test_the_doors_share_one_protocol_registry_with_the_dlms_context(self) -> None:
        daemon = FepService(self.config(), reactor)
        protocol = daemon.operator.ctx.protocol_for("dlms")
        self.assertIs(protocol.context, daemon.dlms)
        self.assertIs(daemon.protocols.context("dlms"), daemon.dlms)
        self.assertIs(daemon.collection.runner.protocol_for("dlms").context, daemon.dlms)


class GarbageCollectorTests(unittest.TestCase):
    def test_the_daemon_collects_cyclic_garbage_less_often(self) -> None:
        import gc

        from fep.service import GC_THRESHOLD, tune_garbage_collector

        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        gc.set_threshold(700, 10, 10)
        tune_garbage_collector()
        self.assertEqual(gc.get_threshold(), (GC_THRESHOLD, 10, 10))

    def test_the_twistd_plugin_tunes_it_before_building_the_service(self) -> None:
        import gc
        from unittest import mock

        from fep import service

        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        gc.set_threshold(700, 10, 10)
        path = Path(self.mktemp())
        path.write_text("[fep]\n[store]\nurl = sqlite::memory:\n")
        plugin = __import__("twisted.plugins.fep_plugin", fromlist=["serviceMaker"])
        options = plugin.Options()
        options.parseOptions(["--config", str(path)])
        with mock.patch.object(service, "make_service", return_value="built") as make:
            self.assertEqual(plugin.serviceMaker.makeService(options), "built")
        make.assert_called_once()
        self.assertEqual(gc.get_threshold()[0], service.GC_THRESHOLD)
