"""The operator tier inside the daemon: builds the context from the daemon's parts and runs
the web server (API, status page, metrics), the SSH console, the alarm engine and the
northbound publisher as the config asks, started after the store and stopped before it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from fep.interfaces import IStore
from fep.operator.context import OperatorContext
from fep.operator.metrics import FepMetrics, TimedStore
from fep.operator.settings import OperatorConfig

log = Logger(namespace="fep.operator")


class OperatorTier:
    """Owned by FepService: ``attach`` once the daemon's parts exist, ``start`` once the
    store is open, ``stop`` first at shutdown."""

    def __init__(self, config: OperatorConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.metrics = FepMetrics.create()
        self.ctx: OperatorContext | None = None
        self._ports: list[Any] = []
        self.alarms: Any = None
        self.northbound: Any = None
        self.manhole: Any = None
        self.limits: Any = None

    def timed(self, store: IStore) -> IStore:
        return TimedStore(store, self.metrics.store_latency)

    def attach(self, daemon: Any) -> OperatorContext:
        config = self.config
        # The daemon's listener limits: the web server and the console are listeners too.
        self.limits = getattr(daemon, "limits", None)
        # Store latency is measured on the router's writes and the operator tier's queries;
        # the daemon's store itself stays as it is (other parts look at its type).
        daemon.router.store = self.timed(daemon.router.store)
        ctx = OperatorContext(
            store=self.timed(daemon.store),
            router=daemon.router,
            directory=daemon.directory,
            reactor=self.reactor,
            node=config.fep.node,
            reader=daemon.collection,
            read_timeout=config.collect.timeout,
            sessions=getattr(daemon, "gprs", None),
            sms=getattr(daemon, "sms", None),
        )
        # Every job's meter session is reported to the activity (sessions, success rate).
        daemon.collection.observers.append(ctx.activity)
        from fep.collect.operator import EngineScheduler

        ctx.scheduler = EngineScheduler(daemon.collection, ctx.store)
        if daemon.dlms_push is not None:
            ctx.push_stats = daemon.dlms_push.stats
        self.metrics.attach(ctx)
        self.ctx = ctx
        if config.alarms.enabled:
            from fep.operator.alarms import AlarmEngine

            self.alarms = AlarmEngine.from_config(ctx, config)
            ctx.alarms = self.alarms
            daemon.router.committed_hooks.append(self.alarms.committed)
        if config.northbound.amqp_url:
            from fep.operator.northbound import AmqpPublisher

            self.northbound = AmqpPublisher.from_config(config, self.reactor)
            ctx.northbound = self.northbound
            daemon.router.committed_hooks.append(self.northbound.committed)
        return ctx

    async def start(self) -> None:
        assert self.ctx is not None
        config = self.config
        if self.alarms is not None:
            await self.alarms.start()
        if self.northbound is not None:
            await self.northbound.start()
        if config.http.port:
            from fep.operator.http import site
            from fep.operator.tokens import TokenFile

            tokens = (TokenFile.load(config.http.tokens_file) if config.http.tokens_file
                      else TokenFile(()))
            if not tokens.entries:
                log.warn("the API has no tokens ([http] tokens_file): every call is refused")
            from fep.operator.webguard import AuthFailures, WebLimits

            http = config.http
            limits = WebLimits(body_open=http.body_limit_unauthenticated,
                               body_authenticated=max(http.body_limit,
                                                      http.body_limit_unauthenticated))
            failures = AuthFailures(self.reactor.seconds, limit=http.auth_failures,
                                    window=http.auth_failure_window, block=http.auth_block)
            factory = site(self.ctx, tokens, self.metrics,
                           metrics_auth=config.http.metrics_auth, limits=limits,
                           failures=failures)
            if self.limits is not None:
                # Identified once a request is answered (authenticated or refused).
                factory = self.limits.wrap(factory, "http", identify_on_write=True)
            port = self.reactor.listenTCP(config.http.port, factory,
                                          interface=config.http.interface)
            self._ports.append(port)
            log.info("operator web server on http://{interface}:{port}/status",
                     interface=config.http.interface, port=port.getHost().port)
        if config.manhole.port:
            from fep.operator.manhole import manhole_factory

            host_key = Path(config.manhole.host_key or
                            Path(config.fep.data_dir) / "manhole_host_key")
            console = manhole_factory(self.ctx, Path(config.manhole.authorized_keys),
                                      host_key)
            if self.limits is not None:
                from fep.channels.listeners import ssh_authenticated

                # Identified once the user has authenticated with a key.
                console = self.limits.wrap(console, "ssh", identified_when=ssh_authenticated)
            port = self.reactor.listenTCP(config.manhole.port, console,
                                          interface=config.manhole.interface)
            self._ports.append(port)
            log.info("operator console on ssh://{interface}:{port}",
                     interface=config.manhole.interface, port=port.getHost().port)

    async def stop(self) -> None:
        ports, self._ports = self._ports, []
        for port in ports:
            await port.stopListening()
        if self.northbound is not None:
            await self.northbound.stop()
        if self.alarms is not None:
            await self.alarms.stop()

    def start_d(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.start())
