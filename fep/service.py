"""The composition root: builds every part of the fep daemon from a Config, passes each the
parts it depends on, and makes each a named child of one service tree (fep.servicetree),
started in dependency order (each once the one before is ready) and stopped in reverse.

The tree, in start order (a part the config leaves out has no child): ``store`` (open and
migrate, retried while it is down), ``partitions`` (PostgreSQL: monthly partitions made
ahead and retention, at start and daily), ``sms`` (the channel), ``alarms``, ``northbound`` (what
consumes the router's commits), ``router`` (spool replay), ``directory`` (the meter list),
``collection`` (the engine's tasks), ``dlms-counters``, ``modem-pool``, ``scheduler``, ``plans``,
``gprs`` (the channel: its sessions close at stop), the listeners (``push-iec62056-21``,
``push-dlms``, ``gprs LISTENER``...), ``control``, ``sms-events`` (texts from meters into the
router), ``analysis`` (the day's analyses; its alarms through the router), ``operator``
(``http``, ``console``). Stop, in reverse: the operator tier and the
listeners stop accepting, GPRS sessions close, the scheduler lets the jobs under way finish,
the router flushes the spool to the store and hands what it commits to the alarm engine and
the northbound outbox, those two stop, the SMS channel (alarm texts) closes, and the store
closes last."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from twisted.application import service, strports
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.task import deferLater
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    jsonFileLogObserver,
)

from fep.channels.routes import Channels, ConnectBackoff
from fep.collect.engine import CollectionEngine
from fep.config import Config
from fep.directory import MeterDirectory
from fep.errors import ChannelError, FepError
from fep.interfaces import IStore
from fep.reactors import IFepReactor
from fep.servicetree import OrderedMultiService, Step
from fep.store import open_store
from fep.store.router import Router
from fep.store.spool import Spool

log = Logger()


class FepService(OrderedMultiService):
    """The whole daemon: the root of the service tree. Children start in dependency order
    (store, SMS channel, alarm engine, northbound publisher, router, directory, collection
    engine, counters, modem pool, scheduler, GPRS channel, listeners, control socket, SMS
    events, operator tier), each once the one before it is ready, and stop in the reverse
    order, each waiting for the one after it: listeners stop accepting, sessions under way
    finish, the router flushes the spool to the store (its commits still reach the alarms
    and the northbound outbox), and the store closes last. A start that fails stops the
    reactor (the daemon exits)."""

    def __init__(self, config: Config, reactor: IFepReactor | None = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = cast(IFepReactor, default_reactor)
        from fep.config_secrets import resolve_config_secrets

        # secret:NAME values of the configuration, opened from the secret store.
        config = resolve_config_secrets(config)
        self.config = config
        self.reactor = reactor
        self.store: IStore = open_store(config.store.url, reactor, pool_size=config.store.pool_size)
        self.secrets = self._secret_store(config)
        from fep.operator.metrics import FepMetrics, TimedStore

        # Store latency is measured on the router's writes and the operator tier's queries;
        # the other parts get the store itself (some look at its type).
        self.metrics = FepMetrics.create()
        timed_store = TimedStore(self.store, self.metrics.store_latency)
        self.spool = Spool(config.spool_directory, reactor)
        self.router = Router(
            self.spool,
            timed_store,
            reactor,
            batch_size=config.spool.batch_size,
            write_batch=config.spool.write_batch(config.store.url),
            max_delay=config.spool.max_delay,
            flush_timeout=config.spool.flush_timeout,
        )
        self.directory = MeterDirectory(self.store, self.secrets)
        self.channels = Channels(
            reactor,
            backoff=ConnectBackoff(
                reactor, config.gprs.connect_backoff, config.gprs.connect_backoff_max
            ),
        )
        from fep.channels.modem.pool import pool_from_config

        self.modems = pool_from_config(
            reactor, config.modems, store=self.store, on_alarm=self._modem_alarm
        )
        if self.modems is not None:
            pool = self.modems
            # The pool redials by its own retry policy: no line backoff on top.
            self.channels.register_scheme(
                "dialup", lambda route: pool.endpoint(route.args), backoff=False
            )
        self.listeners: list[service.Service] = []
        from fep.channels.listeners import ListenerSet, with_backlog

        # Every listener's connection caps, idle timeout and pre-identification byte cap; the
        # push and GPRS listeners a long listen queue (meters push at the same quarter hour).
        self.limits = ListenerSet(config.listeners, reactor)
        if config.push.iec62056_21:
            from fep.protocols.iec62056_21.session import PushedReadoutFactory

            factory = PushedReadoutFactory(self.router, self._resolve_pushing_meter)
            listener = strports.service(with_backlog(config.push.iec62056_21),
                                        self.limits.wrap(factory, "push_iec62056_21"))
            listener.setName("push-iec62056-21")
            self.listeners.append(listener)
        self.dlms_push: Any = None
        from fep.protocols.dlms.context import DlmsContext, SecurityEvents
        from fep.store.counters import invocation_counters

        # DLMS invocation counters: ours (reserved before use) and the last from each meter,
        # in the store on PostgreSQL, else in the data directory's file; refused downgrades
        # become security events through the router.
        self.counters = invocation_counters(reactor, self.store, config.fep.data_dir)
        self.dlms_security = SecurityEvents(self.router)
        from fep.protocols.dlms.layouts import load_layouts

        # Push list layouts: the shipped etc/push-layouts, then the user's directories.
        self.dlms = DlmsContext(
            self.counters, config.dlms.client_system_title(config.fep.node), self.dlms_security,
            layouts=load_layouts(config.dlms.push_layouts),
        )
        from fep.protocols.registry import ProtocolRegistry

        # Every door (collection engine, GPRS channel, console and API reads) builds its
        # protocols here: DLMS with this daemon's context.
        self.protocols = ProtocolRegistry({"dlms": self.dlms})
        if config.push.dlms:
            from fep.protocols.dlms.session import DlmsPushFactory

            self.dlms_push = DlmsPushFactory(
                self.router, self._resolve_dlms_sender, self.counters,
                identify=self._identify_dlms_sender, security=self.dlms_security,
                sender=self._dlms_plain_sender, plain=config.push.dlms_plain,
                layouts=self.dlms.layouts,
            )
            listener = strports.service(with_backlog(config.push.dlms),
                                        self.limits.wrap(self.dlms_push, "push_dlms"))
            listener.setName("push-dlms")
            self.listeners.append(listener)
        if self.modems is not None and config.modems.answer == "yes":
            # Meters that call in: identified by caller id (or their own identification),
            # their bytes taken like a push.
            self.modems.on_incoming = self._incoming_call
            self.modems.push_sink = self.router
        self.gprs: Any = None
        if config.gprs.listen:
            self._add_gprs(config)
        from fep.collect.archive_sync import ArchiveSyncDoor
        from fep.collect.forwarding import add_forwarding

        # gw3761:DCU1:port=N routes: through the concentrator DCU1 of the meter list; its
        # archive kept in step with the list (`fep concentrators sync`, the API).
        add_forwarding(self.channels, self.directory.get)
        self.concentrator_sync = ArchiveSyncDoor(reactor, self.channels.endpoint_for,
                                                 self.protocols.protocol_for, self.directory,
                                                 config.collect.timeout)
        self.control: Any = None
        self._control_problem: str | None = None
        if config.control.enabled:
            from fep.errors import ConfigError
            from fep.operator.control import ControlServer

            try:
                self.control = ControlServer(reactor, config.control_socket,
                                             limits=self.limits)
            except ConfigError as e:
                if config.control.socket:
                    raise
                # The default under a deep data directory: run without it, and say so.
                self._control_problem = f"{e}; set [control] socket to a shorter path"
            else:
                self.control.add("sessions", self._sessions_command)
                self.control.add("listeners", lambda request: {"listeners": self.limits.stats()})
                self.control.add("concentrator-sync", self._concentrator_sync_command)
        self.sms: Any = None
        self.sms_wakeup: Any = None
        self.sms_events: OpenWhileRunning | None = None
        if config.sms.port:
            self._build_sms(config)
        self._build_collection(config)
        self.operator = self._build_operator(config, timed_store)
        self.analysis = self._build_analysis(config)
        self._json_log: io.TextIOWrapper | None = None
        self._observer: ILogObserver | None = None
        self.started: Deferred[None] | None = None
        self._build_tree(config)

    def _build_operator(self, config: Config, timed_store: IStore) -> Any:
        """The operator tier (API, status page, metrics, console, alarms, northbound) and
        what it is given: its context of the daemon's parts, the metrics, the listener
        limits (the web server and the console are listeners too)."""
        from fep.collect.operator import EngineScheduler
        from fep.collect.plans import EnginePlans
        from fep.operator.context import OperatorContext
        from fep.operator.service import OperatorTier

        ctx = OperatorContext(
            store=timed_store,
            router=self.router,
            directory=self.directory,
            reactor=self.reactor,
            node=config.fep.node,
            read_timeout=config.collect.timeout,
            sessions=self.gprs,
            sms=self.sms,
            scheduler=EngineScheduler(self.collection, timed_store),
            plans=EnginePlans(self.plans, self.directory, self.scheduler.resources,
                              self.plan_runner if config.collect.enabled else None,
                              self.reactor),
            push_stats=self.dlms_push.stats if self.dlms_push is not None else None,
            protocol_for=self.protocols.protocol_for,
            # Every door's read-now is a job of the collection engine (its channels).
            reader=self.collection.reader,
            concentrator_sync=self.concentrator_sync,
            edits=self._editor(config, timed_store),
        )
        # Every job's meter session is reported to the activity (sessions, success rate).
        self.collection.observers.append(ctx.activity)
        if self.control is not None:
            from fep.operator.commands import control_read

            # `fep read --meter ID` while the daemon runs: the same read-now.
            self.control.add(
                "read", lambda request: Deferred.fromCoroutine(control_read(ctx, request)))
        tier = OperatorTier(config, self.reactor, ctx, self.metrics, self.limits)
        # The alarm engine and the northbound outbox see the records the store committed.
        self.router.committed_hooks.extend(tier.committed_hooks)
        return tier

    def _build_tree(self, config: Config) -> None:
        """Every part a named child, in start order (see the module's docstring)."""
        self.add(Step("store", self._open_store, self.store.close), "store")
        keeper = self._partition_keeper(config)
        if keeper is not None:
            # Partitions ahead and retention (PostgreSQL): at start, without holding it up,
            # and daily; stopped before the store closes.
            self.add(keeper, "partitions")
        # What consumes the router's commits starts before the router takes records and
        # stops only after it has flushed its spool, whose last batches the committed hooks
        # still take: the SMS channel (the alarms send texts through it; it feeds the router
        # only through the sms-events gate below), then the alarm engine (its NOTIFY through
        # the store) and the northbound publisher (its durable outbox open).
        if self.sms is not None:
            self.add(self.sms, "sms")
        for consumer in self.operator.consumers:
            assert consumer.name is not None
            self.add(consumer, consumer.name)
        self.add(self.router, "router")
        self.add(Step("directory", self._load_directory), "directory")
        if config.collect.enabled:
            self.add(Step("collection", self.collection.prepare), "collection")
        # What sessions need (invocation counters, modem lines) is ready before the first
        # job starts.
        self.add(Step("dlms-counters", self.counters.open, self.counters.close),
                 "dlms-counters")
        if self.modems is not None:
            modems = self.modems
            self.add(modems, "modem-pool", ready=lambda: modems.opened)
        if config.collect.enabled:
            self.add(self.scheduler, "scheduler")
            self.add(self.plan_runner, "plans")
        if self.gprs is not None:
            # Stopped after its listeners: the sessions they accepted close.
            self.add(Step("gprs", stop=self.gprs.close_all), "gprs")
        for listener in self.listeners:
            assert listener.name is not None  # each named where it is made
            self.add(listener, listener.name)
        if self.control is not None:
            self.add(self.control, "control")
        if self.sms_events is not None:
            # Texts from meters reach the router only while it and the meter list are up.
            self.add(self.sms_events.step("sms-events"), "sms-events")
        if self.analysis is not None:
            # Its alarms go through the router: stopped before it.
            self.add(self.analysis, "analysis")
        self.add(self.operator, "operator")

    def _partition_keeper(self, config: Config) -> Any:
        """The PostgreSQL record tables' monthly partitions kept ahead, retention and the
        compaction of closed days of intervals ([store] partitions_ahead, retention,
        retention_action, compact_after); none on SQLite."""
        from fep.store.postgres import PostgresStore

        if not isinstance(self.store, PostgresStore):
            return None
        from fep.store.partitions import PartitionKeeper

        return PartitionKeeper(self.reactor, self.store,
                               months_ahead=config.store.partitions_ahead,
                               retention_months=config.store.retention,
                               retention_action=config.store.retention_action,
                               compact_after=config.store.compact_after)

    @staticmethod
    def _vee_settings(config: Config) -> Any:
        from fep.analysis.settings import load

        return load(config.analysis.vee or (
            "etc/vee.ini" if Path("etc/vee.ini").exists() else None))

    def _editor(self, config: Config, store: IStore) -> Any:
        """Operators' edits of values for the API and the console ([analysis]
        edit_approval: four eyes)."""
        from fep.analysis.edits import Editor

        return Editor(store, self._vee_settings(config),
                      approval=config.analysis.edit_approval)

    def _build_analysis(self, config: Config) -> Any:
        """The analysis service ([analysis]): the day's VEE, balance, outages and
        communication analysis on a schedule, its alarms through the router."""
        if not config.analysis.enabled:
            return None
        from fep.analysis.daemon import AnalysisService

        analysis = AnalysisService(self.reactor, self.store, config.analysis,
                                   self._vee_settings(config), self.router,
                                   jobs=self.collection.jobs)
        # The engine tells it what its jobs re-collected and when the day's runs end.
        if config.analysis.reanalyse or config.analysis.after == "collection":
            self.collection.listeners.append(analysis)
        return analysis

    def _secret_store(self, config: Config) -> Any:
        """The secret store under the configured master key; none when the default master
        key file does not exist (no secrets kept yet). A configured key that cannot be read,
        or a key file others may read, stops the daemon (ConfigError)."""
        from fep.store.secrets import SecretStore
        from fep.vault import load_master_key, spec_file

        spec = config.master_key_spec
        path = spec_file(spec)
        if not config.secrets.master_key and path is not None and not path.exists():
            return None
        return SecretStore(self.store, load_master_key(spec))

    async def _warn_clear_secrets(self) -> None:
        from fep.config_secrets import clear_config_secrets
        from fep.vault import split_secrets

        for where in clear_config_secrets(self.config):
            log.warn("{where} is a secret in clear in the configuration; keep it in the "
                     "secret store (secret:NAME)", where=where)
        clear = [m.id for m in await self.store.meters() if split_secrets(m.metadata)[1]]
        if clear:
            log.warn("{count} meters have keys or passwords in clear in the meter list; "
                     "move them with `fep keys import --from-metadata`", count=len(clear))

    def _modem_alarm(self, alarm: Any) -> None:
        log.critical("modem line {line} out of the pool: {reason}", line=alarm.line,
                     reason=alarm.reason, number=alarm.number)

    def _add_gprs(self, config: Config) -> None:
        """GPRS modems that dial in: the channel, its listeners, and ``gprs:`` routes."""
        from fep.channels.gprs import GprsChannel, gprs_settings
        from fep.channels.listeners import with_backlog

        self.gprs = GprsChannel(
            self.reactor,
            gprs_settings(config.gprs),
            sink=self.router,
            directory=self.directory,
            store=self.store,
            counters=self.counters,
            protocol_for=self.protocols.protocol_for,
        )
        self.channels.register_scheme("gprs", self.gprs.endpoint_for, backoff=False)
        for description in config.gprs.listen:
            label = ":".join(description.split(":")[:2])
            factory = self.limits.wrap(self.gprs.factory(label), "gprs", f"gprs {label}")
            if config.gprs.tls_client_ca and description.startswith("ssl:"):
                listener = self._client_certificate_listener(
                    config, with_backlog(description), factory)
            else:
                listener = strports.service(with_backlog(description), factory)
            listener.setName(f"gprs {label}")
            self.listeners.append(listener)

    def _client_certificate_listener(self, config: Config, description: str,
                                     factory: Any) -> Any:
        """A GPRS TLS listener that requires client certificates ([gprs] tls_client_ca)."""
        from twisted.application.internet import StreamServerEndpointService

        from fep.channels.modem_identity import client_certificate_endpoint
        from fep.errors import ConfigError

        try:
            endpoint = client_certificate_endpoint(
                self.reactor, description, config.gprs.tls_client_ca)
        except (OSError, ValueError) as e:
            raise ConfigError(str(e), section="gprs", key="tls_client_ca") from None
        return StreamServerEndpointService(endpoint, factory)

    def sessions(self) -> list[Any]:
        """The live modem sessions (fep.channels.gprs.SessionInfo snapshots, oldest first)
        for the operator tier; empty without a [gprs] listener."""
        return self.gprs.sessions() if self.gprs is not None else []

    def _concentrator_sync_command(self, request: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """``fep concentrators sync ID`` while the daemon runs."""
        d = self.concentrator_sync(str(request.get("concentrator", "")),
                                   bool(request.get("repair", True)),
                                   f"cli:{request.get('who') or 'unknown'}")
        return d.addCallback(lambda report: {"report": report})

    def _sessions_command(self, request: dict[str, Any]) -> dict[str, Any]:
        sessions = self.sessions()
        return {
            "node": self.config.fep.node,
            "gprs": self.gprs is not None,
            "sessions": [s.as_dict() for s in sessions],
        }
    def _build_sms(self, config: Config) -> None:
        """The SMS channel, its alarm rules into the router, wake-up and notifications."""
        from fep.channels.modem.sms import SmsChannel
        from fep.collect.sms import SmsEventRouter, SmsWakeUp

        sms = config.sms
        self.sms = SmsChannel(self.reactor, sms.channel_settings())
        self.sms_events = OpenWhileRunning(
            SmsEventRouter(sms.event_rules, self.directory, self.router))
        self.sms.add_message_handler(self.sms_events)
        self.sms_wakeup = SmsWakeUp(self.sms, sms.wakeup_text)

    def _build_collection(self, config: Config) -> None:
        """The collection engine; with a GPRS channel it learns where modems are connected
        and which meters registered, and with an SMS channel too it wakes modems up."""
        from fep.collect.inbound import ModemWakeUp, SessionHomes

        wakeup: ModemWakeUp | None = None
        if self.gprs is not None and self.sms_wakeup is not None:
            wakeup = ModemWakeUp(self.reactor, self.sms_wakeup.wake_up, self.gprs.is_connected)
            self.gprs.observers.append(wakeup)
        self.collection = CollectionEngine(
            self.reactor,
            self.store,
            self.router,
            self.directory,
            config.collect,
            node=config.fep.node,
            endpoint_for=self.channels,
            wakeup=wakeup,
            protocol_for=self.protocols.protocol_for,
            # Every dialup: route shares the modem pool's lines.
            pools={"dialup": len(config.modems.line_list())} if self.modems else None,
            firmware_dir=config.firmware_directory,
            terminals=self._terminals(config),
        )
        self.scheduler = self.collection.scheduler
        from fep.collect.plans import PlanRunner
        from fep.collect.planstore import plan_store

        # Control plans release their meters' commands into the engine at their rate.
        self.plans = plan_store(self.store)
        self.plan_runner = PlanRunner(self.reactor, self.plans, node=config.fep.node,
                                      released=self.scheduler.kick, poll=config.collect.poll,
                                      capacities=self.scheduler.resources.capacities())
        if self.gprs is not None:
            self.gprs.observers.append(
                SessionHomes(self.reactor, self.collection.jobs, self.scheduler,
                             node=config.fep.node, connected=self.gprs.is_connected)
            )

    def _terminals(self, config: Config) -> Any:
        """terminal-config: the terminal profiles (etc/terminals and [gprs]
        terminal_profiles), texts through the SMS channel, replies taken from it."""
        from fep.channels.terminals import load_profiles
        from fep.collect.terminals import TerminalConfigurator

        terminals = TerminalConfigurator(
            self.reactor, load_profiles(config.gprs.terminal_profiles), self.sms)
        if self.sms is not None:
            self.sms.add_message_handler(terminals.sms_received)
        return terminals

    def _caller_meter(self, caller: str | None) -> Any:
        """The meter a caller id belongs to: its ``dialup:`` route or ``caller_id`` metadata
        (digits compared, leading zeros and ``+`` ignored)."""
        import re

        def key(number: str) -> str:
            return re.sub(r"\D", "", number).lstrip("0")

        if not caller or not key(caller):
            return None
        wanted = key(caller)
        for meter in self.directory.all():
            numbers = [str(meter.metadata.get("caller_id", ""))]
            if meter.route.startswith("dialup:"):
                numbers.append(meter.route[7:])
            if any(n and key(n) == wanted for n in numbers):
                return meter
        return None

    def _incoming_call(self, incoming: Any) -> Any:
        """A meter called in on a modem line: connect the push receiver of its protocol
        (DLMS: Data-Notifications; otherwise IEC 62056-21 identification and readout).
        Reads of the meter's ``dialup:`` route go over the call while it is up."""
        meter = self._caller_meter(incoming.caller)
        protocol = meter.protocol if meter is not None else "iec62056_21"
        log.info("call in from {caller} on modem {line}: {who}", caller=incoming.caller or
                 "unknown", line=incoming.line, who=f"meter {meter.id}" if meter is not None
                 else "caller not known, waiting for its identification",
                 meter=meter.id if meter is not None else None, route=incoming.route)
        if meter is not None and meter.route.startswith("dialup:"):
            # A read of the meter while it is on the line goes over its call.
            incoming.reachable_as(meter.route[7:])
        factory: Any
        if protocol == "dlms":
            if self.dlms_push is None:
                from fep.protocols.dlms.session import DlmsPushFactory

                self.dlms_push = DlmsPushFactory(
                    self.router, self._resolve_dlms_sender, self.counters,
                    identify=self._identify_dlms_sender, security=self.dlms_security,
                )
            factory = self.dlms_push
        else:
            from fep.protocols.iec62056_21.session import PushedReadoutFactory

            factory = PushedReadoutFactory(self.router, self._resolve_pushing_meter)
        return incoming.endpoint.connect(factory)

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

    def _identify_dlms_sender(self, logical_device_name: bytes) -> Any:
        """The meter an unciphered push names (logical device name: often three letters of
        the manufacturer and the serial number); only to refuse it when it has keys."""
        name = logical_device_name.decode("ascii", "replace")
        return self.directory.identify(name, name[3:])

    def _dlms_plain_sender(self, way: str, value: str) -> Any:
        """The meter an unciphered push claims to be by ``way`` (receiver.PLAIN_WAYS): its
        link address (the meter list's ``dlms_push_address``), its logical device name (as
        meter id or serial, or its serial after three letters of the manufacturer) or the
        serial number in its list."""
        if way == "address":
            return self.directory.by_metadata("dlms_push_address", value)
        if way == "ldn":
            return self.directory.identify(value, value[3:])
        return self.directory.identify(value)

    def startService(self) -> Deferred[None]:
        self._start_json_log()
        started = super().startService()
        started.addCallback(self._running)
        started.addErrback(self._start_failed)
        self.started = started
        return started

    def _running(self, _: object) -> None:
        if not self.running:
            return
        if self.control is None and self._control_problem:
            log.warn("no control socket (fep sessions cannot ask this daemon): {problem}",
                     problem=self._control_problem)
        log.info("fep node {node} running", node=self.config.fep.node)

    def _start_failed(self, failure: Any) -> None:
        if failure.check(CancelledError) and not self.running:
            return  # stopped while starting: not a failure
        log.failure("fep could not start", failure)
        if self.reactor.running:
            self.reactor.stop()

    async def _open_store(self) -> None:
        """Open (and migrate) the store, retried with backoff while it is down."""
        delay = 1.0
        while True:
            try:
                await self.store.open()
                break
            except FepError as e:
                log.warn("store {url} not ready ({error}); retrying in {delay} s",
                         url=self.store.url, error=e, delay=delay)
                await deferLater(self.reactor, delay, lambda: None)
                delay = min(delay * 2, 30.0)
        log.info("store {url} open", url=self.store.url)

    async def _load_directory(self) -> None:
        meters = await self.directory.refresh()
        log.info("{count} meters known", count=len(meters))
        await self._warn_clear_secrets()

    def stopService(self) -> Deferred[None]:
        d = super().stopService()

        def stopped(result: object) -> object:
            log.info("fep stopped; spool depth {depth}", depth=self.spool.depth())
            self._stop_json_log()
            return result

        return d.addBoth(stopped)

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


class OpenWhileRunning:
    """A message handler passed on only while its ``step`` runs. The SMS channel starts
    before the router (the alarm engine sends texts through it until it stops); the texts it
    receives go to the router only between the router's start and its stop. Refused, a text
    stays on the SIM and is read again later (the channel deletes only what was taken)."""

    def __init__(self, handler: Callable[[Any], Any]) -> None:
        self.handler = handler
        self.open = False

    def __call__(self, message: Any) -> Any:
        if not self.open:
            return fail(ChannelError("not taking texts while starting or stopping; the "
                                     "message stays on the SIM"))
        return self.handler(message)

    def step(self, name: str) -> Step:
        async def start() -> None:
            self.open = True

        def stop() -> None:
            self.open = False

        return Step(name, start, stop)


# The cyclic garbage collector's first threshold in the daemon (Python's default is 700
# allocations). The daemon keeps a large heap alive (the meter directory, sessions, caches)
# and each meter session makes many short-lived objects: at 700 the collector's passes took
# about a tenth of a register read's CPU (docs/benchmarks.md, collection). At 10,000 cyclic
# garbage waits a little longer (a few MB at most) before it is freed.
GC_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """The daemon's garbage collector setting (the twistd plugin calls this once)."""
    import gc

    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)


def make_service(config: Config, reactor: IFepReactor | None = None) -> FepService:
    """The daemon's root service for ``config``."""
    return FepService(config, reactor)
