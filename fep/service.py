"""Builds the fep daemon from a Config: store, spool and router, meter directory, the
collection engine and push listeners, started and stopped in order."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from twisted.application import service, strports
from twisted.internet.defer import Deferred
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    jsonFileLogObserver,
)

from fep.channels.routes import Channels
from fep.collect.directory import MeterDirectory
from fep.collect.engine import CollectionEngine
from fep.config import Config
from fep.errors import FepError
from fep.interfaces import IStore
from fep.store import open_store
from fep.store.router import Router
from fep.store.spool import Spool

log = Logger()


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class FepService(service.MultiService):
    """The whole daemon. Children start in dependency order (store, router, scheduler,
    listeners) and stop in the reverse order, each waiting for the one before: listeners
    stop accepting, sessions under way finish, the router flushes the spool to the store,
    and the store closes last."""

    def __init__(self, config: Config, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.store: IStore = open_store(config.store.url, reactor, pool_size=config.store.pool_size)
        self.spool = Spool(config.spool_directory, reactor)
        self.router = Router(
            self.spool,
            self.store,
            reactor,
            batch_size=config.spool.batch_size,
            max_delay=config.spool.max_delay,
            flush_timeout=config.spool.flush_timeout,
        )
        self.directory = MeterDirectory(self.store)
        self.channels = Channels(reactor)
        from fep.channels.modem.pool import pool_from_config

        self.modems = pool_from_config(
            reactor, config.modems, store=self.store, on_alarm=self._modem_alarm
        )
        if self.modems is not None:
            pool = self.modems
            self.channels.register_scheme("dialup", lambda route: pool.endpoint(route.args))
        self.collection = CollectionEngine(
            reactor,
            self.store,
            self.router,
            self.directory,
            config.collect,
            node=config.fep.node,
            endpoint_for=self.channels,
            # Every dialup: route shares the modem pool's lines.
            pools={"dialup": len(config.modems.line_list())} if self.modems else None,
        )
        self.scheduler = self.collection.scheduler
        self.listeners: list[service.Service] = []
        if config.push.iec62056_21:
            from fep.protocols.iec62056_21.session import PushedReadoutFactory

            factory = PushedReadoutFactory(self.router, self._resolve_pushing_meter)
            listener = strports.service(config.push.iec62056_21, factory)
            listener.setName("push-iec62056-21")
            self.listeners.append(listener)
        self.dlms_push: Any = None
        from fep.store.counters import InvocationCounterFile

        # DLMS invocation counters: ours (reserved before use) and the last from each meter.
        self.counters = InvocationCounterFile(
            reactor, Path(config.fep.data_dir) / "dlms-invocation-counters.json"
        )
        if config.push.dlms:
            from fep.protocols.dlms.session import DlmsPushFactory

            self.dlms_push = DlmsPushFactory(self.router, self._resolve_dlms_sender, self.counters)
            listener = strports.service(config.push.dlms, self.dlms_push)
            listener.setName("push-dlms")
            self.listeners.append(listener)
        self._json_log: io.TextIOWrapper | None = None
        self._observer: ILogObserver | None = None
        self.started: Deferred[None] | None = None

    def _modem_alarm(self, alarm: Any) -> None:
        log.critical("modem line {line} out of the pool: {reason}", line=alarm.line,
                     reason=alarm.reason, number=alarm.number)

    def _resolve_pushing_meter(self, identification: str, serial: str | None) -> str | None:
        meter = self.directory.identify(serial, identification)
        if meter is not None:
            return meter.id
        if self.config.push.accept_unknown:
            return serial or identification
        return None

    def _resolve_dlms_sender(self, system_title: bytes | None, wport: int) -> Any:
        """The meter a DLMS push comes from: by the system title of its ciphered APDU."""
        if system_title is None:
            return None
        return self.directory.by_system_title(system_title)

    def startService(self) -> None:
        service.Service.startService(self)
        self._start_json_log()
        self.started = Deferred.fromCoroutine(self._start())
        self.started.addErrback(self._start_failed)

    def _start_failed(self, failure: Any) -> None:
        log.failure("fep could not start", failure)
        if self.reactor.running:
            self.reactor.stop()

    async def _start(self) -> None:
        delay = 1.0
        while self.running:
            try:
                await self.store.open()
                break
            except FepError as e:
                log.warn("store {url} not ready ({error}); retrying in {delay} s",
                         url=self.store.url, error=e, delay=delay)
                await _sleep(self.reactor, delay)
                delay = min(delay * 2, 30.0)
        if not self.running:
            return
        log.info("store {url} open", url=self.store.url)
        self.router.startService()
        meters = await self.directory.refresh()
        log.info("{count} meters known", count=len(meters))
        if self.config.collect.enabled:
            await self.collection.prepare()
        if self.modems is not None:
            self.modems.startService()
            assert self.modems.opened is not None
            await self.modems.opened
        if self.config.collect.enabled:
            self.scheduler.startService()
        await self.counters.open()
        from fep.protocols.dlms.session import set_counter_store

        set_counter_store(self.counters)
        for listener in self.listeners:
            listener.startService()
        log.info("fep node {node} running", node=self.config.fep.node)

    def stopService(self) -> Deferred[None]:
        service.Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.started is not None and not self.started.called:
            # Still starting: let the start sequence notice running is false.
            pass
        for listener in self.listeners:
            if listener.running:
                await listener.stopService()
        if self.scheduler.running:
            await self.scheduler.stopService()
        if self.modems is not None and self.modems.running:
            await self.modems.stopService()
        await self.counters.close()
        if self.router.running:
            await self.router.stopService()
        await self.store.close()
        log.info("fep stopped; spool depth {depth}", depth=self.spool.depth())
        self._stop_json_log()

    def _start_json_log(self) -> None:
        path = self.config.log.json_file
        if not path:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._json_log = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(
            self.config.log.level))
        self._observer = FilteringLogObserver(jsonFileLogObserver(self._json_log), [predicate])
        globalLogPublisher.addObserver(self._observer)

    def _stop_json_log(self) -> None:
        if self._observer is not None:
            globalLogPublisher.removeObserver(self._observer)
            self._observer = None
        if self._json_log is not None:
            self._json_log.close()
            self._json_log = None


def make_service(config: Config, reactor: Any = None) -> FepService:
    """The daemon's root service for ``config``."""
    return FepService(config, reactor)
