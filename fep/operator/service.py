"""The operator tier inside the daemon: the web server (API, status page, metrics), the SSH
console, the alarm engine and the northbound publisher, as the config asks. The web server
and the console are its children (``http``, ``console``): the tier is the daemon's last
child, so they stop accepting first. The alarm engine and the northbound publisher consume
what the router commits: they are in ``consumers`` (``alarms``, ``northbound``), which
fep.service places before the router, so that they take every batch the router commits while
it flushes its spool at stop.

It is given what it works with: the ``OperatorContext`` (store, router, directory, scheduler,
sessions, SMS sender, protocols) and the metrics, both built by fep.service, and the listener
limits; it reaches into no other part. The records committed by the store reach its alarm
engine and northbound publisher through ``committed_hooks``, which fep.service gives the
router.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger

from fep.channels.listeners import ListenerSet
from fep.errors import ConfigError
from fep.model import Record
from fep.operator.context import OperatorContext
from fep.operator.metrics import FepMetrics
from fep.operator.settings import OperatorConfig
from fep.reactors import IFepReactor
from fep.servicetree import Listener, OrderedMultiService, Step

log = Logger(namespace="fep.operator")


class OperatorTier(OrderedMultiService):
    """The operator tier's services, built from ``config`` around ``ctx``."""

    def __init__(
        self,
        config: OperatorConfig,
        reactor: IFepReactor,
        ctx: OperatorContext,
        metrics: FepMetrics,
        limits: ListenerSet | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.ctx = ctx
        self.metrics = metrics
        self.limits = limits
        self.alarms: Any = None
        self.northbound: Any = None
        # Not children of the tier: fep.service places them before the router.
        self.consumers: list[Step] = []
        metrics.attach(ctx)
        if config.alarms.enabled:
            from fep.operator.alarms import AlarmEngine

            self.alarms = AlarmEngine.from_config(ctx, config)
            ctx.alarms = self.alarms
            self.consumers.append(Step("alarms", self.alarms.start, self.alarms.stop))
        if config.northbound.amqp_url:
            from fep.operator.northbound import AmqpPublisher

            self.northbound = AmqpPublisher.from_config(config, reactor)
            ctx.northbound = self.northbound
            self.consumers.append(
                Step("northbound", self.northbound.start, self.northbound.stop))
        http = config.http.endpoint()
        if http:
            self.add(Listener(self._endpoint(http, "http"), self._web_factory,
                              self._announce("operator web server on http://{interface}:"
                                             "{port}/status")), "http")
        console = config.manhole.endpoint()
        if console:
            self.add(Listener(self._endpoint(console, "manhole"), self._console_factory,
                              self._announce("operator console on ssh://{interface}:{port}")),
                     "console")

    @property
    def committed_hooks(self) -> list[Callable[[Sequence[Record]], Deferred[None] | None]]:
        """What the router calls with every batch the store committed."""
        return [part.committed for part in (self.alarms, self.northbound) if part is not None]

    def _endpoint(self, description: str, section: str) -> Any:
        try:
            return serverFromString(self.reactor, description)
        except (ValueError, KeyError) as e:
            raise ConfigError(f"not a listener endpoint {description!r}: {e}",
                              section=section, key="listen") from None

    def _announce(self, text: str) -> Callable[[IListeningPort], None]:
        def announce(port: IListeningPort) -> None:
            address = port.getHost()
            log.info(text, interface=getattr(address, "host", address),
                     port=getattr(address, "port", ""))

        return announce

    def _web_factory(self) -> IProtocolFactory:
        """The API, status page and metrics (the token file read at start)."""
        from fep.operator.http import site
        from fep.operator.tokens import TokenFile
        from fep.operator.webguard import AuthFailures, WebLimits

        http = self.config.http
        tokens = TokenFile.load(http.tokens_file) if http.tokens_file else TokenFile(())
        if not tokens.entries:
            log.warn("the API has no tokens ([http] tokens_file): every call is refused")
        limits = WebLimits(body_open=http.body_limit_unauthenticated,
                           body_authenticated=max(http.body_limit,
                                                  http.body_limit_unauthenticated))
        failures = AuthFailures(self.reactor.seconds, limit=http.auth_failures,
                                window=http.auth_failure_window, block=http.auth_block)
        factory: IProtocolFactory = site(self.ctx, tokens, self.metrics,
                                         metrics_auth=http.metrics_auth, limits=limits,
                                         failures=failures)
        if self.limits is not None:
            # Identified once a request is answered (authenticated or refused).
            factory = self.limits.wrap(factory, "http", identify_on_write=True)
        return factory

    def _console_factory(self) -> IProtocolFactory:
        """The SSH console (its keys read, its host key made, at start)."""
        from fep.operator.manhole import manhole_factory

        config = self.config
        host_key = Path(config.manhole.host_key or
                        Path(config.fep.data_dir) / "manhole_host_key")
        console: IProtocolFactory = manhole_factory(
            self.ctx, Path(config.manhole.authorized_keys), host_key)
        if self.limits is not None:
            from fep.channels.listeners import ssh_authenticated

            # Identified once the user has authenticated with a key.
            console = self.limits.wrap(console, "ssh", identified_when=ssh_authenticated)
        return console
