"""The SMS channel: a GSM modem on a serial route sends and receives short messages.

The Twisted side of the AT engine (``at``), the PDU codec (``pdu``) and the SMS command
helpers (``sms_at``): it opens the route, sets the modem up (PIN, PDU or text mode, message
memory, new-message indications), sends texts (text mode where the text allows, PDU mode for
the rest and for concatenated parts), takes delivery reports, reads what arrives
(+CMTI -> AT+CMGR -> hand over -> AT+CMGD, and a sweep of the memory at start and every
``sweep_interval``), joins concatenated parts, and sweeps at once when the modem reports its
memory full. A message leaves the SIM only after every handler took it (at least once).

Consumers register with ``add_message_handler`` and ``add_report_handler``; ``send`` gives an
``OutgoingSms`` whose ``delivered`` fires with the delivery reports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredLock, maybeDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from fep.channels.endpoints import client_endpoint
from fep.channels.modem.at import (
    Command,
    FinalResult,
    ModemTimeout,
    Response,
    ResultCode,
    Unsolicited,
    split_params,
)
from fep.channels.modem.dialects import (
    BUSY_CME,
    BUSY_CMS,
    GENERIC,
    PIN_CME,
    PIN_CMS,
    ModemDialect,
    choose_indications,
    choose_memories,
    dialect_for,
    identification,
    offered_indications,
    offered_memories,
    radio_off,
)
from fep.channels.modem.line import ModemLine
from fep.channels.modem.pdu import (
    Address,
    Deliver,
    DeliveryStatus,
    Message,
    Reassembler,
    StatusReport,
    delivery_status,
    encode_pdu,
    relative_validity_octet,
    status_text,
    submit_parts,
    tpdu_length,
)
from fep.channels.modem.sms_at import (
    Stored,
    indicator_index,
    listed_indexes,
    memory_usage,
    new_message_slot,
    quoted_number,
    read_message,
    routed_message,
    routed_report,
    sent_reference,
    text_body,
)
from fep.errors import ChannelError, FepError, FrameError
from fep.protocols.session import connect_within
from fep.reactors import IConnectingReactor

log = Logger(namespace="fep.channels.sms")

CMS_INVALID_INDEX = 321
MODES = ("pdu", "text")


class SmsCommandError(ChannelError):
    """The modem answered an SMS command with an error; ``result`` is its final result."""

    def __init__(self, message: str, *, route: str | None, result: FinalResult) -> None:
        super().__init__(message, route=route)
        self.result = result


@attrs.frozen
class SmsSettings:
    """How to run one SMS modem (the ``[sms]`` section of the config)."""

    route: str
    mode: str = "pdu"
    pin: str | None = attrs.field(default=None, repr=False)
    smsc: str | None = None
    memory: str = "SM"
    delivery_reports: bool = True
    validity: timedelta | None = timedelta(days=1)
    sweep_interval: float = 300.0
    command_timeout: float = 10.0
    send_timeout: float = 60.0
    reassembly_timeout: float = 3600.0
    reconnect_delay: float = 30.0
    init: tuple[str, ...] = ("ATZ", "ATE0V1", "AT+CMEE=1")
    # Seconds a busy SIM or modem (after a SIM change, a PIN, the radio switched on) is
    # waited for: commands answered "SIM busy"/"busy" are asked again within it.
    sim_wait: float = 60.0

    def __attrs_post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"SMS mode is pdu or text, got {self.mode!r}")


@attrs.frozen
class IncomingSms:
    """A whole received message. ``timestamp`` is the service centre's (sender side),
    ``received`` when fep read it; ``complete`` is false for concatenated messages whose
    missing parts never came (given up after the reassembly timeout)."""

    sender: str
    text: str
    timestamp: datetime
    received: datetime
    parts: int = 1
    complete: bool = True
    body: str | bytes = ""


@attrs.frozen
class DeliveryReport:
    """What the network says became of one sent part (TP-MR ``reference``)."""

    recipient: str
    reference: int
    status: int
    submitted: datetime
    discharged: datetime

    @property
    def outcome(self) -> DeliveryStatus:
        return delivery_status(self.status)

    @property
    def text(self) -> str:
        return status_text(self.status)


class OutgoingSms:
    """A sent message: the TP-MR of each part, and (when reports were asked for)
    ``delivered``, which fires with the final report of every part."""

    def __init__(self, destination: str, text: str, references: list[int], report: bool):
        self.destination = destination
        self.text = text
        self.references = references
        self.reports: dict[int, DeliveryReport] = {}
        self.delivered: Deferred[list[DeliveryReport]] = Deferred()
        self.report_requested = report

    @property
    def outcome(self) -> DeliveryStatus:
        """Delivered when every part was, failed when one failed, pending otherwise."""
        outcomes = [r.outcome for r in self.reports.values()]
        if DeliveryStatus.FAILED in outcomes:
            return DeliveryStatus.FAILED
        if len(outcomes) == len(self.references) and all(
            o is DeliveryStatus.DELIVERED for o in outcomes
        ):
            return DeliveryStatus.DELIVERED
        return DeliveryStatus.PENDING

    def _report(self, report: DeliveryReport) -> bool:
        """Take a report; True once every part has a final one."""
        if report.outcome is DeliveryStatus.PENDING and report.reference in self.reports:
            return False
        self.reports[report.reference] = report
        done = len(self.reports) == len(self.references) and all(
            r.outcome is not DeliveryStatus.PENDING for r in self.reports.values()
        )
        if done and not self.delivered.called:
            self.delivered.callback([self.reports[ref] for ref in self.references])
        return done


def _busy(result: FinalResult) -> bool:
    if result.error is None:
        return False
    if result.code is ResultCode.CME_ERROR:
        return result.error in BUSY_CME
    return result.code is ResultCode.CMS_ERROR and result.error in BUSY_CMS


def _pin_needed(result: FinalResult) -> bool:
    if result.error is None:
        return False
    if result.code is ResultCode.CME_ERROR:
        return result.error in PIN_CME
    return result.code is ResultCode.CMS_ERROR and result.error in PIN_CMS


def _sim_status(lines: tuple[str, ...]) -> str:
    """``+CPIN: READY`` -> ``READY`` (``SIM PIN``, ``SIM PUK``, ``NOT READY``...)."""
    for line in lines:
        head, colon, rest = line.strip().partition(":")
        if colon and head.strip().upper() == "+CPIN":
            return rest.strip().strip('"').upper()
    return ""


def _shown(command: Command) -> str:
    text = command.text
    if text.upper().startswith("AT+CPIN="):
        return "AT+CPIN=<pin>"
    return text


def _close(line: ModemLine) -> None:
    if line.is_open and line.transport is not None:
        line.transport.loseConnection()


def _key(number: str) -> str:
    return number.replace(" ", "").lstrip("+")


MessageHandler = Callable[[IncomingSms], Awaitable[object] | object]
ReportHandler = Callable[[DeliveryReport], Awaitable[object] | object]


class SmsChannel(service.Service):
    """One GSM modem for SMS (see the module docstring)."""

    def __init__(
        self, reactor: IConnectingReactor, settings: SmsSettings, name: str = "sms"
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.setName(name)
        self.route = settings.route
        self._line: ModemLine | None = None
        self._lock = DeferredLock()
        self._message_handlers: list[MessageHandler] = []
        self._report_handlers: list[ReportHandler] = []
        self._joiner = Reassembler(settings.reassembly_timeout)
        # Slots holding parts of messages not yet complete, by reassembly group.
        self._held: dict[tuple[str, int, int, bool], set[tuple[str, int]]] = {}
        self._outgoing: dict[tuple[str, int], OutgoingSms] = {}
        self._mem1 = settings.memory
        # The memory read and swept (what AT+CPMS=? offers), None when the modem offers none.
        self._memory: str | None = settings.memory
        # What the modem said it is (AT+CGMI, AT+CGMM) and its dialect.
        self.manufacturer = ""
        self.model = ""
        self.dialect: ModemDialect = GENERIC
        self._smsc_on_sim: str | None = None
        # Slots being read and handed over (a +CMTI and a sweep may name the same one).
        self._reading: set[tuple[str, int]] = set()
        self._smsfull: int | None = None
        self._concat_reference = 0
        self._sweep_lock = DeferredLock()
        self._sweeper: LoopingCall | None = None
        self._retry: IDelayedCall | None = None
        self._ready: list[Deferred[None]] = []
        self.is_ready = False
        self.stats: dict[str, int] = {
            "sent": 0,
            "send_failures": 0,
            "received": 0,
            "parts_received": 0,
            "reports": 0,
            "undecodable": 0,
            "incomplete": 0,
            "sweeps": 0,
            "storage_full": 0,
            "handler_failures": 0,
            "busy_retries": 0,
            "timeouts": 0,
            "send_retries": 0,
        }

    @property
    def text_mode(self) -> bool:
        return self.settings.mode == "text"

    @property
    def modem(self) -> str:
        """The modem and its port, for errors and logs: ``huawei E1752 on serial:...``."""
        name = " ".join(part for part in (self.manufacturer, self.model) if part)
        return f"{name} on {self.route}" if name else self.route

    def add_message_handler(self, handler: MessageHandler) -> None:
        """Call ``handler`` with every whole received message; a Deferred/awaitable it
        returns is waited for before the message is deleted from the modem."""
        self._message_handlers.append(handler)

    def add_report_handler(self, handler: ReportHandler) -> None:
        self._report_handlers.append(handler)

    def ready(self) -> Deferred[None]:
        """Fires once the modem is set up (at once when it is)."""
        d: Deferred[None] = Deferred()
        if self.is_ready:
            d.callback(None)
        else:
            self._ready.append(d)
        return d

    # -- service

    def startService(self) -> None:
        super().startService()
        self._connect()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None
        self.is_ready = False
        line, self._line = self._line, None
        if line is not None:
            _close(line)
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d

    def _connect(self) -> None:
        self._retry = None
        d = Deferred.fromCoroutine(self._open())
        d.addErrback(self._open_failed)

    async def _open(self) -> None:
        endpoint = client_endpoint(self.reactor, self.route)
        line = ModemLine(self.reactor, self.name or "sms", on_unsolicited=self._unsolicited)
        line.route = self.route
        await connect_within(
            self.reactor, endpoint, line, self.route, self.settings.command_timeout
        )
        line.closed.addCallback(lambda _: self._lost(line))
        if not self.running:
            _close(line)
            return
        self._line = line
        await self._initialise()
        self.is_ready = True
        log.info(
            "SMS modem {modem} ready ({mode} mode, memory {memory})",
            modem=self.modem,
            route=self.route,
            mode=self.settings.mode,
            memory=self._memory or "none",
        )
        waiters, self._ready = self._ready, []
        for d in waiters:
            if not d.called:  # a waiter may have given up (cancelled)
                d.callback(None)
        if self._memory is None:
            pass  # nothing to sweep
        elif self.settings.sweep_interval > 0 and self.running:
            self._sweeper = LoopingCall(self._periodic_sweep)
            self._sweeper.clock = self.reactor
            self._sweeper.start(self.settings.sweep_interval, now=True)
        else:
            self._spawn(self.sweep(), "sweep")

    def _open_failed(self, failure: Failure) -> None:
        log.error(
            "SMS modem on {route} could not be set up: {error}",
            route=self.route,
            error=failure.getErrorMessage(),
        )
        line, self._line = self._line, None
        self.is_ready = False
        if line is not None:
            _close(line)
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self.running and self._retry is None:
            self._retry = self.reactor.callLater(self.settings.reconnect_delay, self._connect)

    def _lost(self, line: ModemLine) -> None:
        if self._line is not line:
            return  # a line already given up (set-up failed, or the service stopped)
        self._line = None
        self.is_ready = False
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None
        if self.running:
            log.warn(
                "SMS modem line {route} lost; reopening in {delay} s",
                route=self.route,
                delay=self.settings.reconnect_delay,
            )
            self._schedule_reconnect()

    # -- commands

    async def _command(
        self,
        text: str,
        timeout: float | None = None,
        body: bytes | None = None,
        *,
        final_optional: float | None = None,
    ) -> Response:
        """One command; asked again while the modem answers "busy" (within ``sim_wait``)."""
        delay = 0.5
        deadline = self.reactor.seconds() + self.settings.sim_wait
        while True:
            try:
                return await self._command_once(text, timeout, body, final_optional)
            except SmsCommandError as error:
                if not _busy(error.result) or self.reactor.seconds() + delay > deadline:
                    raise
                self.stats["busy_retries"] += 1
                log.info(
                    "SMS modem {modem} busy ({error}); asking again in {delay} s",
                    modem=self.modem, error=error.result.describe(), delay=delay,
                    route=self.route,
                )
                await deferLater(self.reactor, delay, lambda: None)
                delay = min(delay * 2, 5.0)

    async def _command_once(
        self, text: str, timeout: float | None, body: bytes | None,
        final_optional: float | None,
    ) -> Response:
        line = self._line
        if line is None:
            raise ChannelError(f"SMS modem {self.modem} is not connected", route=self.route)
        command = Command(text, timeout or self.settings.command_timeout, body)
        if final_optional is None and self.dialect.answers_without_final(text):
            final_optional = 0.0
        try:
            response = await self._next_turn(
                line.command(
                    command.text, command.timeout, body, expect_ok=False,
                    final_optional=final_optional,
                )
            )
        except ChannelError as error:
            message = str(error)
            pin = self.settings.pin
            if pin:
                # The line's errors quote the command: never the PIN.
                message = message.replace(pin, "<pin>")
            if isinstance(error, ModemTimeout):
                self.stats["timeouts"] += 1
                log.warn(
                    "SMS modem {modem} did not answer {command} within {timeout} s; "
                    "reopening the line",
                    modem=self.modem, command=_shown(command), timeout=command.timeout,
                    route=self.route,
                )
                # A late answer would be taken for the next command's: start afresh.
                self._lost(line)
                _close(line)
                silent = ModemTimeout(
                    f"SMS modem {self.modem}: no answer to {_shown(command)} within "
                    f"{command.timeout:g} s", line=line.name, command=_shown(command),
                    route=self.route,
                )
                silent.body_sent = error.body_sent
                raise silent from None
            raise ChannelError(f"SMS modem {self.modem}: {message}", route=self.route) from None
        if not response.ok:
            raise SmsCommandError(
                f"SMS modem {self.modem}: {_shown(command)} -> {response.result.describe()}",
                route=self.route,
                result=response.result,
            )
        return response

    def _next_turn(self, d: Deferred[Response]) -> Deferred[Response]:
        """``d``'s result on a later reactor turn. The line fires a command's Deferred from
        inside its loop over the engine's outputs; a command sent from that callback would
        have its deadline disarmed by a Deadline(None) still in that loop."""
        later: Deferred[Response] = Deferred()

        def relay(result: Response | Failure) -> None:
            if isinstance(result, Failure):
                self.reactor.callLater(0, later.errback, result)
            else:
                self.reactor.callLater(0, later.callback, result)

        d.addBoth(relay)
        return later

    async def _optional(self, text: str) -> Response | None:
        try:
            return await self._command(text)
        except SmsCommandError:
            return None

    async def _initialise(self) -> None:
        self.manufacturer = self.model = ""
        self.dialect = GENERIC
        for text in self.settings.init:
            await self._unlocked(text)
        await self._identify()
        await self._unlock()
        cfun = await self._optional("AT+CFUN?")
        if cfun is not None and radio_off(cfun.lines):
            log.info("SMS modem {modem}: radio off; switching it on", modem=self.modem,
                     route=self.route)
            await self._command("AT+CFUN=1", max(self.settings.command_timeout, 30.0))
        await self._command(f"AT+CMGF={1 if self.text_mode else 0}")
        if self.text_mode:
            await self._command('AT+CSCS="GSM"')
            await self._command("AT+CSDH=1")
        if self.settings.smsc:
            smsc = Address.parse(self.settings.smsc)
            await self._command(f'AT+CSCA="{smsc}",{smsc.type_octet}')
        elif self.dialect.csmp_clears_smsc:
            self._smsc_on_sim = await self._sim_smsc()
        await self._choose_memories()
        if self._memory is None:
            return
        ds = 2 if self.settings.delivery_reports else 0
        candidates = [f"AT+CNMI=2,1,0,{ds},0", f"AT+CNMI=2,1,0,{min(ds, 1)},0", "AT+CNMI=1,1"]
        offered = await self._optional("AT+CNMI=?")
        ranges = offered_indications(offered.lines) if offered is not None else None
        if ranges is not None:
            chosen = choose_indications(ranges, self.settings.delivery_reports)
            if chosen is not None:
                candidates.insert(0, chosen)
        for cnmi in candidates:
            if await self._optional(cnmi) is not None:
                break
        else:
            log.warn(
                "SMS modem {modem} refuses new-message indications; relying on sweeps",
                modem=self.modem,
                route=self.route,
            )
        indicators = await self._optional("AT+CIND=?")
        if indicators is not None:
            self._smsfull = indicator_index(indicators.lines, "smsfull")
            if self._smsfull is not None:
                await self._optional("AT+CMER=3,0,0,1")

    async def _unlocked(self, text: str) -> Response:
        """A command some modems refuse until the SIM is unlocked (``+CME ERROR: 11``)."""
        try:
            return await self._command(text)
        except SmsCommandError as error:
            if not _pin_needed(error.result):
                raise
        await self._unlock()
        return await self._command(text)

    async def _identify(self) -> None:
        """AT+CGMI and AT+CGMM: the modem's name in logs and errors, and its dialect."""
        for text, name in (("AT+CGMI", "+CGMI"), ("AT+CGMM", "+CGMM")):
            try:
                answer = await self._unlocked(text)
            except SmsCommandError:
                continue
            value = identification(answer.lines, name)
            if name == "+CGMI":
                self.manufacturer = value
            else:
                self.model = value
        self.dialect = dialect_for(self.manufacturer, self.model)
        log.info(
            "SMS modem {modem}: dialect {dialect}", modem=self.modem, dialect=self.dialect.name,
            route=self.route,
        )
        if self.dialect.urcs and self._line is not None:
            engine = self._line.engine
            engine.urc_names = engine.urc_names | {u.upper() for u in self.dialect.urcs}
        for text in self.dialect.init:
            await self._optional(text)

    async def _unlock(self) -> None:
        """Wait for the SIM (``+CPIN: NOT READY``, "SIM busy" after a SIM change) and give the
        PIN when it asks for one."""
        deadline = self.reactor.seconds() + self.settings.sim_wait
        entered = False
        while True:
            # Wavecom ends this answer without OK: a short grace when the dialect is unknown.
            answer = await self._command(
                "AT+CPIN?", final_optional=0.0 if "AT+CPIN?" in self.dialect.no_final else 1.0
            )
            status = _sim_status(answer.lines)
            if status == "READY" or not status:
                return
            if status == "SIM PIN" and not entered:
                if not self.settings.pin:
                    raise ChannelError(
                        f"SMS modem {self.modem}: the SIM asks for a PIN; set [sms] pin",
                        route=self.route,
                    )
                await self._command(f'AT+CPIN="{self.settings.pin}"')
                entered = True
                continue
            if status in ("SIM PUK", "SIM PIN2", "SIM PUK2", "PH-SIM PIN") or (
                status == "SIM PIN" and entered
            ):
                raise ChannelError(
                    f"SMS modem {self.modem}: the SIM is locked ({status}); unlock it by hand",
                    route=self.route,
                )
            if self.reactor.seconds() + 1.0 > deadline:
                raise ChannelError(
                    f"SMS modem {self.modem}: the SIM is not ready after "
                    f"{self.settings.sim_wait:g} s ({status})",
                    route=self.route,
                )
            await deferLater(self.reactor, 1.0, lambda: None)

    async def _sim_smsc(self) -> str | None:
        answer = await self._optional("AT+CSCA?")
        if answer is None:
            return None
        for line in answer.lines:
            head, colon, rest = line.strip().partition(":")
            if colon and head.strip().upper() == "+CSCA":
                params = split_params(rest)
                if params and params[0]:
                    return params[0]
        return None

    async def _choose_memories(self) -> None:
        """Set the message memories from what ``AT+CPMS=?`` offers."""
        wanted = self.settings.memory
        answer = await self._optional("AT+CPMS=?")
        offered = offered_memories(answer.lines) if answer is not None else None
        if offered is None:
            # No list: the configured memory for all three, or for <mem1> alone.
            for text in (f'AT+CPMS="{wanted}","{wanted}","{wanted}"', f'AT+CPMS="{wanted}"'):
                if await self._optional(text) is not None:
                    self._memory = self._mem1 = wanted
                    return
            raise ChannelError(
                f"SMS modem {self.modem}: refuses message memory {wanted}", route=self.route
            )
        chosen = choose_memories(offered, wanted)
        if chosen is None:
            self._memory = None
            log.warn(
                "SMS modem {modem} offers no message memory (AT+CPMS=? {offered}): it can "
                "send, but fep cannot read what it receives",
                modem=self.modem,
                offered=answer.lines if answer is not None else (),
                route=self.route,
            )
            return
        if chosen[0] != wanted.upper():
            log.warn(
                "SMS modem {modem} does not offer memory {wanted}; using {chosen}",
                modem=self.modem, wanted=wanted, chosen=chosen[0], route=self.route,
            )
        await self._command("AT+CPMS=" + ",".join(f'"{m}"' for m in chosen))
        self._memory = self._mem1 = chosen[0]

    # -- sending

    def send(
        self, number: str, text: str, *, flash: bool = False, report: bool | None = None
    ) -> Deferred[OutgoingSms]:
        """Send ``text`` to ``number``: one message or concatenated parts. ``flash`` sends
        class 0 (shown, not stored); ``report`` asks for delivery reports (default from the
        settings). Fails with ChannelError (SmsCommandError for the modem's refusal)."""
        return Deferred.fromCoroutine(self._send(number, text, flash, report))

    async def _send(self, number: str, text: str, flash: bool, report: bool | None) -> OutgoingSms:
        destination = Address.parse(number)
        wanted = self.settings.delivery_reports if report is None else report
        references: list[int] = []
        attempt = 1
        while True:
            try:
                await self._send_once(destination, text, flash, wanted, references)
                break
            except (FepError, ValueError) as error:
                maybe = isinstance(error, ModemTimeout) and error.body_sent
                untouched = not references and not maybe and isinstance(error, ChannelError) \
                    and not isinstance(error, SmsCommandError)
                if untouched and attempt < 2 and self.running:
                    # Nothing reached the modem (it stopped answering before the text, or
                    # the line was down): once more when the line is back.
                    attempt += 1
                    self.stats["send_retries"] += 1
                    log.warn(
                        "SMS to {number} via {modem} not sent ({error}); sending again "
                        "once the modem is back", number=number, modem=self.modem,
                        error=error, route=self.route,
                    )
                    if await self._back(self.settings.send_timeout):
                        continue
                self.stats["send_failures"] += 1
                log.warn(
                    "SMS to {number} via {modem} failed after {sent} part(s){maybe}: {error}",
                    number=number,
                    modem=self.modem,
                    route=self.route,
                    sent=len(references),
                    maybe=" (the last part may have gone: its answer was lost)" if maybe else "",
                    error=error,
                )
                if isinstance(error, FepError):
                    raise
                raise ChannelError(str(error), route=self.route)
        self.stats["sent"] += 1
        outgoing = OutgoingSms(str(destination), text, references, wanted)
        if wanted:
            for reference in references:
                self._outgoing[(_key(str(destination)), reference)] = outgoing
            while len(self._outgoing) > 4096:
                self._outgoing.pop(next(iter(self._outgoing)))
        log.info(
            "SMS to {number} via {route}: {parts} part(s), references {references}",
            number=str(destination),
            route=self.route,
            parts=len(references),
            references=references,
        )
        return outgoing

    async def _send_once(
        self, destination: Address, text: str, flash: bool, wanted: bool, references: list[int]
    ) -> None:
        await self._lock.acquire()
        try:
            body = text_body(text) if self.text_mode and not flash else None
            if body is not None:
                references.append(await self._send_text(destination, body, wanted))
            else:
                await self._send_pdus(destination, text, flash, wanted, references)
        finally:
            self._lock.release()

    async def _back(self, within: float) -> bool:
        """Wait until the modem is set up again; False when it is not within ``within``."""
        if self.is_ready and self._line is not None:
            return True
        ready = self.ready()
        timer = self.reactor.callLater(within, ready.cancel)
        try:
            await ready
        except Exception:
            return False
        if timer.active():
            timer.cancel()
        return True

    async def _send_text(self, destination: Address, body: bytes, report: bool) -> int:
        first = 0x01 | (0x20 if report else 0)
        vp = 0
        if self.settings.validity is not None:
            first |= 0x10
            vp = relative_validity_octet(self.settings.validity)
        await self._command(f"AT+CSMP={first},{vp},0,0")
        if self.dialect.csmp_clears_smsc and (self.settings.smsc or self._smsc_on_sim):
            smsc = Address.parse(self.settings.smsc or self._smsc_on_sim or "")
            await self._command(f'AT+CSCA="{smsc}",{smsc.type_octet}')
        response = await self._command(
            f"AT+CMGS={quoted_number(destination)}", self.settings.send_timeout, body
        )
        return sent_reference(response.lines)

    async def _send_pdus(
        self, destination: Address, text: str, flash: bool, report: bool,
        references: list[int],
    ) -> None:
        self._concat_reference = (self._concat_reference + 1) & 0xFF
        parts = submit_parts(
            destination,
            text,
            reference=self._concat_reference,
            message_class=0 if flash else None,
            validity=self.settings.validity,
            status_report=report,
        )
        if self.text_mode:
            await self._command("AT+CMGF=0")
        try:
            for part in parts:
                pdu = encode_pdu(part)
                response = await self._command(
                    f"AT+CMGS={tpdu_length(pdu)}",
                    self.settings.send_timeout,
                    pdu.hex().upper().encode("ascii"),
                )
                references.append(sent_reference(response.lines))
        finally:
            if self.text_mode and self._line is not None:
                await self._command("AT+CMGF=1")

    # -- receiving

    def _unsolicited(self, urc: Unsolicited) -> None:
        name = urc.name.upper()
        try:
            if name in ("+CMTI", "+CDSI"):
                memory, index = new_message_slot(urc.value)
                self._spawn(self._read_slot(memory, index), "read")
            elif name == "+CMT":
                deliver = routed_message(urc.value, urc.body, self.text_mode)
                self._spawn(self._take_deliver(deliver, None), "routed message")
            elif name == "+CDS":
                report = routed_report(urc.value, urc.body, self.text_mode)
                self._spawn(self._take_report(report), "report")
            elif name == "+CIEV":
                self._indicator(urc.params)
        except FrameError as error:
            self.stats["undecodable"] += 1
            log.warn(
                "undecodable {name} from the SMS modem on {route}: {error} ({line!r})",
                name=urc.name,
                route=self.route,
                error=error,
                line=urc.line if urc.body is None else f"{urc.line} / {urc.body}",
            )

    def _indicator(self, params: tuple[str, ...]) -> None:
        if self._smsfull is None or len(params) < 2 or not params[0].isascii():
            return
        if not params[0].isdecimal():
            return
        if int(params[0]) == self._smsfull and params[1].strip() == "1":
            self.stats["storage_full"] += 1
            log.warn("SMS memory of the modem on {route} is full; sweeping", route=self.route)
            self._spawn(self.sweep(), "sweep")

    def _spawn(self, work: Coroutine[Any, Any, Any] | Deferred[Any], what: str) -> None:
        d = work if isinstance(work, Deferred) else Deferred.fromCoroutine(work)

        def failed(failure: Failure) -> None:
            log.warn(
                "SMS {what} on {route} failed: {error}",
                what=what,
                route=self.route,
                error=failure.getErrorMessage(),
            )

        d.addErrback(failed)

    async def _select(self, memory: str) -> None:
        if memory.upper() != self._mem1.upper():
            await self._command(f'AT+CPMS="{memory}"')
            self._mem1 = memory

    async def _read_slot(self, memory: str, index: int) -> None:
        slot = (memory.upper(), index)
        if slot in self._reading:
            return
        self._reading.add(slot)
        try:
            await self._read_slot_now(memory, index)
        finally:
            self._reading.discard(slot)

    async def _read_slot_now(self, memory: str, index: int) -> None:
        await self._lock.acquire()
        try:
            await self._select(memory)
            try:
                response = await self._command(f"AT+CMGR={index}")
            except SmsCommandError as error:
                if error.result.error == CMS_INVALID_INDEX:
                    return
                raise
            try:
                stored = read_message(response.lines, self.text_mode)
            except FrameError as error:
                self.stats["undecodable"] += 1
                log.warn(
                    "undecodable message in {memory} {index} on {route}: {error} "
                    "({lines!r}); deleted",
                    memory=memory,
                    index=index,
                    route=self.route,
                    error=error,
                    lines=response.lines,
                )
                await self._command(f"AT+CMGD={index}")
                return
        finally:
            self._lock.release()
        if stored is not None:
            await self._take(stored, (memory, index))

    async def _take(self, stored: Stored, slot: tuple[str, int]) -> None:
        tpdu = stored.tpdu
        if isinstance(tpdu, StatusReport):
            await self._take_report(tpdu)
            await self._delete([slot])
        elif isinstance(tpdu, Deliver):
            await self._take_deliver(tpdu, slot)
        # A stored SMS-SUBMIT (STO SENT/UNSENT) is someone's draft: left alone.

    async def _take_deliver(self, deliver: Deliver, slot: tuple[str, int] | None) -> None:
        self.stats["parts_received"] += 1
        concat = deliver.user_data.concat
        key = None
        if concat is not None:
            key = (str(deliver.originator), concat.reference, concat.total, concat.wide)
            if slot is not None:
                self._held.setdefault(key, set()).add(slot)
        message = self._joiner.add(deliver, self.reactor.seconds())
        if message is None:
            return
        slots = self._held.pop(key, set()) if key is not None else set()
        if slot is not None:
            slots.add(slot)
        try:
            await self._hand_over(message, complete=True)
        except Exception:
            # Kept on the modem: the next sweep hands it over again.
            if key is not None and slots:
                self._held.setdefault(key, set()).update(slots)
            raise
        await self._delete(sorted(slots))

    async def _hand_over(self, message: Message, complete: bool) -> None:
        incoming = IncomingSms(
            str(message.sender),
            message.text,
            message.timestamp,
            datetime.now(UTC),
            len(message.parts),
            complete,
            message.body,
        )
        self.stats["received"] += 1
        log.info(
            "SMS from {sender} via {route}: {text!r}",
            sender=incoming.sender,
            route=self.route,
            text=incoming.text[:160],
        )
        for handler in self._message_handlers:
            try:
                await maybeDeferred(handler, incoming)
            except Exception:
                self.stats["handler_failures"] += 1
                raise

    async def _take_report(self, report: StatusReport) -> None:
        self.stats["reports"] += 1
        delivery = DeliveryReport(
            str(report.recipient),
            report.reference,
            report.status,
            report.timestamp,
            report.discharge,
        )
        log.info(
            "delivery report from {route}: {recipient} reference {reference}: {text}",
            route=self.route,
            recipient=delivery.recipient,
            reference=delivery.reference,
            text=delivery.text,
        )
        outgoing = self._outgoing.get((_key(delivery.recipient), delivery.reference))
        if outgoing is not None and outgoing._report(delivery):
            for reference in outgoing.references:
                self._outgoing.pop((_key(outgoing.destination), reference), None)
        for handler in self._report_handlers:
            await maybeDeferred(handler, delivery)

    async def _delete(self, slots: list[tuple[str, int]]) -> None:
        if not slots:
            return
        await self._lock.acquire()
        try:
            for memory, index in slots:
                await self._select(memory)
                await self._command(f"AT+CMGD={index}")
        finally:
            self._lock.release()

    # -- sweeping

    def sweep(self) -> Deferred[int]:
        """Read every message in the modem's memory, hand over what is whole and delete it,
        give up parts older than the reassembly timeout; fires with how many slots were
        read. Sweeps run one after the other."""
        return self._sweep_lock.run(lambda: Deferred.fromCoroutine(self._sweep()))

    def _periodic_sweep(self) -> Deferred[None]:
        d = self.sweep()
        d.addErrback(
            lambda f: log.warn(
                "SMS sweep on {route} failed: {error}", route=self.route, error=f.getErrorMessage()
            )
        )
        return d.addCallback(lambda _: None)

    async def _sweep(self) -> int:
        memory = self._memory
        if memory is None:
            return 0  # the modem keeps no messages fep can read
        self.stats["sweeps"] += 1
        await self._lock.acquire()
        try:
            await self._select(memory)
            listing = 'AT+CMGL="ALL"' if self.text_mode else "AT+CMGL=4"
            response = await self._command(listing)
            indexes = listed_indexes(response.lines)
        finally:
            self._lock.release()
        for index in indexes:
            try:
                await self._read_slot(memory, index)
            except ChannelError as error:
                log.warn(
                    "SMS in {memory} {index} on {route} not handled: {error}",
                    memory=memory,
                    index=index,
                    route=self.route,
                    error=error,
                )
        await self._give_up_old_parts()
        await self._check_memory()
        return len(indexes)

    async def _give_up_old_parts(self) -> None:
        for parts in self._joiner.expire(self.reactor.seconds()):
            self.stats["incomplete"] += 1
            first = parts[0]
            concat = first.user_data.concat
            assert concat is not None
            key = (str(first.originator), concat.reference, concat.total, concat.wide)
            slots = self._held.pop(key, set())
            body: list[str] = []
            for part in parts:
                text = part.user_data.body
                body.append(text if isinstance(text, str) else text.decode("latin-1"))
            log.warn(
                "SMS from {sender} via {route}: {have} of {total} parts came; handing over "
                "what there is",
                sender=str(first.originator),
                route=self.route,
                have=len(parts),
                total=concat.total,
            )
            message = Message(first.originator, "".join(body), first.timestamp, parts)
            await self._hand_over(message, complete=False)
            await self._delete(sorted(slots))

    async def _check_memory(self) -> None:
        usage = await self._optional("AT+CPMS?")
        if usage is None:
            return
        try:
            memories = memory_usage(usage.lines)
        except FrameError:
            return
        if any(m.full for m in memories):
            self.stats["storage_full"] += 1
            log.warn(
                "SMS memory of the modem on {route} is still full after a sweep: {usage}",
                route=self.route,
                usage=", ".join(f"{m.memory} {m.used}/{m.total}" for m in memories),
            )


__all__ = [
    "DeliveryReport",
    "IncomingSms",
    "OutgoingSms",
    "ResultCode",
    "SmsChannel",
    "SmsCommandError",
    "SmsSettings",
]
