"""Running one attempt of one job: the meter's protocol and the route's endpoint (from the
channel layer, never built here), the kind-specific work (register reads, load profile with
gap re-collection, events, clock policy, commands) and the bytes it took.

A protocol lacking what a job needs (IProfileReader, IEventReader, IClock, ICommands) makes
the job fail with a "not supported" outcome and no retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

from fep.collect import firmware, gaps
from fep.collect.clock import (
    TIME_SET_RESULT,
    ClockAction,
    ClockPolicy,
    deviation_text,
    outcome_text,
)
from fep.collect.commands import clock_hold, hold
from fep.collect.concentrators import CHILDREN
from fep.collect.dlt698_route import forwarding, through_terminal
from fep.collect.readnow import ReadsNow, is_read_now, with_options
from fep.collect.schedule import parse_duration
from fep.collect.tasks import (
    DEFAULT_TASK,
    KEY_TRANSFER,
    TERMINAL_CONFIG,
    Command,
    CommandStatus,
    Job,
    JobKind,
    JobStatus,
    Outcome,
)
from fep.errors import ConfigError, FepError, NotSupported
from fep.interfaces import (
    IClock,
    ICollectionListener,
    ICommands,
    IConcentratorReader,
    IEventReader,
    IHistoryReader,
    IJobStore,
    IMeterProtocol,
    IProfileReader,
    IRecordSink,
    ISecretStore,
    IStore,
)
from fep.model import (
    EventKind,
    IntervalBlock,
    Meter,
    MeterEvent,
    ObisCode,
    PointRead,
    PointsRead,
    PointStatus,
    Reading,
    Record,
    Severity,
)
from fep.protocols.registry import meter_protocol
from fep.reactors import IConnectingReactor

log = Logger()

DEFAULT_INTERVAL = 900.0
DEFAULT_HORIZON = 7 * 86400.0

# Where each protocol takes a job's item list from (meter metadata); for the others the
# items are OBIS codes and the readings are filtered to them.
ITEM_KEYS = {"dlms": "dlms_objects", "dlt645": "dlt645_items"}
# A load-profile task's items name the profile object read (DL/T 698.45: 50040200 the
# day-frozen, 50060200 the month-frozen object).
PROFILE_KEYS = {"dlt698": "dlt698_profile"}


class _CountingProtocol(ProtocolWrapper):
    factory: _CountingFactory

    def write(self, data: bytes) -> None:
        self.factory.counter.bytes_out += len(data)
        super().write(data)

    def writeSequence(self, data: Any) -> None:
        self.factory.counter.bytes_out += sum(len(d) for d in data)
        super().writeSequence(data)

    def dataReceived(self, data: bytes) -> None:
        self.factory.counter.bytes_in += len(data)
        super().dataReceived(data)


class _CountingFactory(WrappingFactory):
    protocol = _CountingProtocol
    noisy = False

    def __init__(self, wrapped: IProtocolFactory, counter: CountingEndpoint) -> None:
        super().__init__(wrapped)
        self.counter = counter


@implementer(IStreamClientEndpoint)
class CountingEndpoint:
    """An endpoint that counts the bytes of every connection made through it (a job's
    ``bytes_in``/``bytes_out``). The wrapper provides what the transport provides."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self.endpoint = endpoint
        self.bytes_in = 0
        self.bytes_out = 0

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        def inner(wrapper: Any) -> IProtocol:
            wrapped: IProtocol = wrapper.wrappedProtocol
            return wrapped

        d = self.endpoint.connect(_CountingFactory(protocolFactory, self))
        return d.addCallback(inner)


def _seconds(value: Any, key: str, default: float) -> float:
    if value is None or value == "":
        return default
    if isinstance(value, int | float):
        return float(value)
    return parse_duration(str(value), key)


def _time(value: Any, key: str) -> datetime:
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{key} {value!r} is not an ISO-8601 time", key=key) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# Point statuses another attempt of a concentrator job asks again (``stored`` is the
# engine's own: nothing was missing).
_TRY_AGAIN = (str(PointStatus.UNANSWERED), str(PointStatus.NO_ANSWER))


def _not_supported(meter: Meter, what: str) -> NotSupported:
    """The error for a job the meter's protocol cannot do (``what``: "read event logs")."""
    return NotSupported(
        f"meter {meter.id}: protocol {meter.protocol} cannot {what} (not supported)",
        meter=meter.id, protocol=meter.protocol)


def _capability(interface: Any, protocol: IMeterProtocol, meter: Meter, what: str) -> Any:
    """``protocol`` adapted to ``interface`` (IClock, IEventReader, ...); NotSupported when
    the protocol does not provide it."""
    provider = interface(protocol, None)
    if provider is None:
        raise _not_supported(meter, what)
    return provider


def _with_items(meter: Meter, items: tuple[str, ...], *, poll: bool = False) -> Meter:
    """The meter as a read job's protocol sees it: the job's items as the protocol's item
    list; the meter's own profile (``dlms_profile``) only on the ``default`` task's poll,
    as every poll read it before tasks (load profiles are otherwise load-profile jobs)."""
    metadata = {k: v for k, v in meter.metadata.items() if poll or k != "dlms_profile"}
    key = ITEM_KEYS.get(meter.protocol)
    if items and key is not None:
        metadata[key] = ",".join(items)
    return attrs.evolve(meter, metadata=metadata)


def _with_profile(meter: Meter, items: tuple[str, ...]) -> Meter:
    """The meter as a load-profile job's protocol sees it: the job's items, where the
    protocol names its profile object by them (PROFILE_KEYS), as that object."""
    key = PROFILE_KEYS.get(meter.protocol)
    if not items or key is None:
        return meter
    return attrs.evolve(meter, metadata={**meter.metadata, key: ",".join(items)})


def days_of(records: Iterable[Record]) -> dict[str, set[date]]:
    """Per meter, the UTC days its intervals (by their start) and events fall on."""
    out: dict[str, set[date]] = {}
    for r in records:
        if isinstance(r, IntervalBlock) and r.values:
            days = out.setdefault(r.meter, set())
            day, last = r.start.astimezone(UTC).date(), r.start + (len(r.values) - 1) * r.period
            while day <= last.astimezone(UTC).date():
                days.add(day)
                day += timedelta(days=1)
        elif isinstance(r, MeterEvent):
            out.setdefault(r.meter, set()).add(r.time.astimezone(UTC).date())
    return out


def _wanted(items: tuple[str, ...], meter: Meter) -> set[ObisCode] | None:
    if not items or meter.protocol in ITEM_KEYS:
        return None
    try:
        return {ObisCode.parse(i) for i in items}
    except ValueError as e:
        raise ConfigError(f"meter {meter.id}: items must be OBIS codes for "
                          f"{meter.protocol}: {e}", key="items") from None


class JobRunner:
    """Runs job attempts for the scheduler (``run``) and settles commands when their job
    ends (``job_ended``)."""

    def __init__(
        self,
        reactor: IConnectingReactor,
        sink: IRecordSink,
        store: IStore,
        jobs: IJobStore,
        *,
        endpoint_for: Callable[[IConnectingReactor, str], IStreamClientEndpoint],
        timeout: float = 10.0,
        node: str = "fep",
        protocol_for: Callable[[str], IMeterProtocol] = meter_protocol,
        firmware_dir: Path | None = None,
        resolve: Callable[[Meter], Awaitable[Meter]] | None = None,
        secrets: ISecretStore | None = None,
        terminals: Any = None,
        meter_of: Callable[[str], Meter | None] | None = None,
    ) -> None:
        self.reactor = reactor
        # terminal-config commands (fep.collect.terminals.TerminalConfigurator), or None.
        self.terminals = terminals
        # The meter list by id (the directory's ``get``): the terminal a ``dlt698:ID``
        # route reads through (fep.collect.dlt698_route).
        self.meter_of = meter_of
        self.firmware_dir = firmware_dir  # firmware-upgrade images, by name
        # The meter with its secrets, from the secret store at the start of each attempt
        # (MeterDirectory.resolve); the secret store itself for key transfers.
        self.resolve = resolve
        self.secrets = secrets
        self.sink = sink
        self.store = store
        self.jobs = jobs
        self.endpoint_for = endpoint_for
        self.timeout = timeout
        self.node = node
        self.protocol_for = protocol_for
        # Told of every job's meter session as it starts and ends (the operator tier's
        # Activity): ``read_started(meter)``, ``read_finished(meter, error, records)``.
        self.observers: list[Any] = []
        # Told what load-profile and events jobs collected and of every job's end (the
        # analysis service).
        self.listeners: list[ICollectionListener] = []
        # The read-now jobs a door of this node waits for: their records or error.
        self.reads_now = ReadsNow()
        # Concentrator jobs under way: the meters behind it settled by earlier attempts
        # (meter id -> its details), until the job ends.
        self._settled: dict[int, dict[str, dict[str, Any]]] = {}

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.reactor.seconds(), UTC)

    def run(self, job: Job, meter: Meter) -> Deferred[Outcome]:
        return Deferred.fromCoroutine(self._run(job, meter))

    def _tell(self, event: str, *args: Any) -> None:
        for observer in list(self.observers):
            try:
                getattr(observer, event)(*args)
            except Exception:
                log.failure("job observer {observer} failed on {event}", observer=observer,
                            event=event)

    async def _run(self, job: Job, meter: Meter) -> Outcome:
        self._tell("read_started", meter)
        try:
            if self.resolve is not None:
                meter = await self.resolve(meter)
            outcome, error = await self._attempt(job, meter)
        except BaseException as e:
            self.reads_now.failed(job.id, e)
            self._tell("read_finished", meter, e, 0)
            raise
        if not outcome.ok and error is None:
            error = FepError(outcome.error or "failed")
        if error is not None:
            self.reads_now.failed(job.id, error)
        self._tell("read_finished", meter, error, outcome.records)
        return outcome

    async def _attempt(self, job: Job, meter: Meter) -> tuple[Outcome, FepError | None]:
        """One attempt's outcome, and the error that failed it."""
        endpoint: CountingEndpoint | None = None
        error: FepError | None = None
        try:
            protocol = self.protocol_for(meter.protocol)
            route, meter = self._connected_route(meter)
            endpoint = CountingEndpoint(forwarding(self.endpoint_for(self.reactor, route),
                                                   meter))
            timeout = _seconds(job.params.get("timeout"), "timeout", self.timeout)
            work = {
                JobKind.REGISTERS: self._read,
                JobKind.INSTANTANEOUS: self._read,
                JobKind.OBJECTS: self._read,
                JobKind.LOAD_PROFILE: self._profile,
                JobKind.EVENTS: self._events,
                JobKind.CLOCK: self._clock,
                JobKind.COMMAND: self._command,
            }[job.kind]
            if job.params.get(CHILDREN):
                work = self._points
            outcome = await work(job, meter, protocol, endpoint, timeout)
        except (NotSupported, ConfigError) as e:
            error, outcome = e, Outcome(False, error=str(e), retry=False)
        except FepError as e:
            # A meter's refusal marked ``final`` (a wrong password, say) is not asked again:
            # another attempt gets the same answer, and meters lock after wrong passwords.
            error, outcome = e, Outcome(False, error=str(e), retry=not getattr(e, "final", False))
        if endpoint is not None:
            outcome = attrs.evolve(outcome, bytes_in=endpoint.bytes_in,
                                   bytes_out=endpoint.bytes_out)
        return outcome, error

    def _connected_route(self, meter: Meter) -> tuple[str, Meter]:
        """The route a job's session connects over and the meter as its protocol reads it:
        the meter's own, except for a meter read through another (a DL/T 698.45 terminal's
        PROXY: fep.collect.dlt698_route)."""
        via = through_terminal(meter, self.meter_of or (lambda _: None))
        return via if via is not None else (meter.route, meter)

    async def _submit(self, records: list[Record]) -> None:
        if records:
            await self.sink.submit(records)

    def _collected(self, job: Job, days: Mapping[str, set[date]]) -> None:
        """Tell the listeners the days of what ``job`` collected that was not stored."""
        told = {meter: sorted(found) for meter, found in days.items() if found}
        if not told:
            return
        for listener in list(self.listeners):
            try:
                listener.collected(str(job.kind), told)
            except Exception:
                log.failure("collection listener {listener} failed", listener=listener)

    # -- reads --------------------------------------------------------------------------

    async def _read(
        self, job: Job, meter: Meter, protocol: IMeterProtocol, endpoint: Any, timeout: float
    ) -> Outcome:
        wanted = _wanted(job.items, meter)
        # A read-now reads the meter as it is in the meter list (its own profile too), with
        # the read's options.
        read_now = is_read_now(job)
        as_read = with_options(_with_items(meter, job.items, poll=read_now or (
            job.task == DEFAULT_TASK and not job.items)), job)
        history = cast("IHistoryReader | None", IHistoryReader(protocol, None))
        if history is not None:
            since = await self._history_end(job, meter, history)
            records: list[Record] = await history.read(self.reactor, endpoint, as_read,
                                                       timeout, since=since)
        else:
            records = await protocol.read(self.reactor, endpoint, as_read, timeout)
        if wanted is not None:
            records = [r for r in records if not isinstance(r, Reading) or r.obis in wanted]
        await self._submit(records)
        if read_now:
            self.reads_now.kept(job.id, records)
        return Outcome(True, result=f"{len(records)} records", records=len(records))

    async def _history_end(self, job: Job, meter: Meter,
                           history: IHistoryReader) -> datetime | None:
        """Where a meter with a history buffer is caught up from: the end of the last
        interval stored for its history channel within the job's ``horizon`` (default 7
        days); None (the protocol reads its newest periods) when there is none."""
        channel = history.history_channel(meter)
        if channel is None:
            return None
        horizon = _seconds(job.params.get("horizon"), "horizon", DEFAULT_HORIZON)
        blocks = await self.store.intervals(meter.id, obis=channel,
                                            since=self.now() - timedelta(seconds=horizon))
        ends = [b.start + len(b.values) * b.period for b in blocks]
        return max(ends) if ends else None

    async def _profile(
        self, job: Job, meter: Meter, protocol: IMeterProtocol, endpoint: Any, timeout: float
    ) -> Outcome:
        reader = _capability(IProfileReader, protocol, meter, "read load profiles")
        period, since, until = self._window(job, meter)
        meter = _with_profile(meter, job.items)
        # A profile of local days or calendar months (DL/T 698.45 day- and month-frozen
        # objects): the protocol gives its interval starts, the period that joins gaps into
        # ranges and the OBIS F group of its series.
        plan_of = getattr(reader, "profile_plan", None)
        plan = plan_of(meter, since, until) if plan_of is not None else None
        expected: list[datetime] | None = None
        if plan is not None:
            expected, period, series = plan
            stored = await self.store.intervals(meter.id, since=since - period)
            stored = [b for b in stored if b.obis.f == series]
        else:
            stored = await self.store.intervals(meter.id, since=gaps.floor_to(since, period))
            stored = [b for b in stored if b.period == period]
        missing = gaps.missing(stored, since, until, period, expected)
        if not missing:
            return Outcome(True, result="no interval missing")
        records: list[Record] = []
        for lo, hi in gaps.ranges(missing, period):
            got = await reader.read_profile(self.reactor, endpoint, meter, lo, hi, timeout)
            records += got
        await self._submit(records)
        fresh = [b for b in records if isinstance(b, IntervalBlock)]
        if plan is not None:
            fresh = [b for b in fresh if b.obis.f == plan[2]]
        still = gaps.missing([*stored, *fresh], since, until, period, expected)
        filled = set(missing) - set(still)
        self._collected(job, {meter.id: {t.astimezone(UTC).date() for t in filled}})
        result = f"{len(missing) - len(still)} of {len(missing)} missing intervals read"
        if still:
            result += f"; {len(still)} the meter did not give"
        return Outcome(True, result=result, records=len(records),
                       details={"missing": len(missing), "still_missing": len(still)})

    def _window(self, job: Job, meter: Meter) -> tuple[timedelta, datetime, datetime]:
        """A load-profile job's interval period and ``[since, until)``: the job's ``since``
        and ``until``, or its ``horizon`` (default 7 days) up to now."""
        interval = _seconds(
            job.params.get("interval", meter.metadata.get("profile_period")),
            "interval", DEFAULT_INTERVAL,
        )
        return timedelta(seconds=interval), *self._span(job)

    def _span(self, job: Job) -> tuple[datetime, datetime]:
        """A job's ``[since, until)``: its ``since`` and ``until`` (a fixed period, read
        again), or its ``horizon`` (default 7 days) up to now."""
        if "since" in job.params or "until" in job.params:
            since = _time(job.params.get("since", 0), "since")
            until = _time(job.params["until"], "until") if "until" in job.params else self.now()
        else:
            until = self.now()
            since = until - timedelta(
                seconds=_seconds(job.params.get("horizon"), "horizon", DEFAULT_HORIZON)
            )
        return since, until

    # -- the meters behind a concentrator ---------------------------------------------------

    async def _points(
        self, job: Job, meter: Meter, protocol: IMeterProtocol, endpoint: Any, timeout: float
    ) -> Outcome:
        """A concentrator's job for the meters behind it (``CHILDREN``: id -> point): what
        each still lacks is read by point over one session (IConcentratorReader), its records
        filed under its own id, and each gets an outcome in ``details["children"]`` (the
        scheduler records their jobs when this one ends). Meters settled by an earlier
        attempt of the job are not asked again; for load profiles, what the store already
        holds (daily values, intervals: the gap logic) is not asked either, so a retry after
        a lost session reads only what is left and nothing is stored twice."""
        reader = _capability(IConcentratorReader, protocol, meter, "read the meters behind it")
        children = {str(k): int(v) for k, v in dict(job.params[CHILDREN]).items()}
        settled = self._settled.setdefault(job.id, {})
        details: dict[str, dict[str, Any]] = {}
        reads: list[PointRead] = []
        for child, point in children.items():
            if child in settled:
                details[child] = settled[child]
                continue
            read = await self._point_read(job, meter, reader, child, point)
            if read is None:
                details[child] = settled[child] = {
                    "status": "stored", "text": "nothing missing (already stored)",
                    "records": 0, "attempt": job.attempts}
            else:
                reads.append(read)
        result = PointsRead()
        if reads:
            result = await reader.read_points(self.reactor, endpoint, meter, reads, timeout)
            await self._submit(list(result.records))
            # What each meter behind it lacked (the gap logic above) is what was read.
            self._collected(job, days_of(result.records))
        for o in result.outcomes:
            text = o.error or f"read through concentrator {meter.id}: {o.records} records"
            detail = {"status": str(o.status), "text": text, "records": o.records,
                      "attempt": job.attempts}
            details[o.meter] = detail
            if o.status not in _TRY_AGAIN:
                settled[o.meter] = detail
        ok = sum(1 for d in details.values() if d["status"] in ("read", "stored"))
        left = sum(1 for d in details.values() if d["status"] in _TRY_AGAIN)
        failed = len(details) - ok - left
        summary = f"{ok} of {len(children)} meters behind it read"
        if failed:
            summary += f", {failed} failed"
        kept = {"children": details, "read": ok, "failed": failed, "left": left}
        if left:
            # The session ended early, or requests went unanswered: another attempt asks
            # those meters again (the last one fails them with the reason).
            why = ("requests for them went unanswered" if result.error is None
                   else str(result.error).rstrip("."))  # fmt: skip
            fields = {"meter": meter.id, "route": meter.route, "protocol": meter.protocol}
            log.info("{meter}: {left} meters behind it not read: {error}", left=left,
                     error=why, **fields)  # fmt: skip
            return Outcome(False, result=summary, records=len(result.records),
                           error=f"{why}; {left} of {len(children)} meters behind it not "
                                 "read yet", details=kept)  # fmt: skip
        return Outcome(True, result=summary, records=len(result.records), details=kept)

    async def _point_read(self, job: Job, meter: Meter, reader: IConcentratorReader,
                          child: str, point: int) -> PointRead | None:  # fmt: skip
        """What to ask of one meter behind ``meter``; None when it has it all already."""
        if job.kind != JobKind.LOAD_PROFILE:
            return PointRead(child, point, current=True, items=job.items)
        period, since, until = self._window(job, meter)
        stored: list[IntervalBlock] = []
        for channel in reader.curve_channels(meter):
            stored += await self.store.intervals(child, obis=channel,
                                                 since=gaps.floor_to(since, period))
        missing = gaps.missing([b for b in stored if b.period == period], since, until, period)
        daily: tuple[datetime, ...] = ()
        times = reader.daily_times(meter, since, until)
        if times:
            have = {r.meter_time for r in await self.store.readings(child, since=min(times))
                    if r.source == meter.id}  # fmt: skip
            daily = tuple(t for t in times if t not in have)
        if not missing and not daily:
            return None
        return PointRead(child, point, daily=daily, ranges=tuple(gaps.ranges(missing, period)),
                         period=period)  # fmt: skip

    async def _events(
        self, job: Job, meter: Meter, protocol: IMeterProtocol, endpoint: Any, timeout: float
    ) -> Outcome:
        """The meter's events of the job's window (`_span`); without ``until``, every event
        since ``since`` (a meter's clock may be ahead of the server's)."""
        reader = _capability(IEventReader, protocol, meter, "read event logs")
        since, until = self._span(job)
        records = await reader.read_events(self.reactor, endpoint, meter, since, timeout)
        if "until" in job.params:
            records = [r for r in records if not isinstance(r, MeterEvent) or r.time < until]
        new = await self._new_events(meter, records) if self.listeners else []
        await self._submit(records)
        self._collected(job, days_of(new))
        return Outcome(True, result=f"{len(records)} events", records=len(records))

    async def _new_events(self, meter: Meter, records: list[Record]) -> list[MeterEvent]:
        """The events of ``records`` the store does not hold yet (an events job reads its
        whole window again each run)."""
        events = [r for r in records if isinstance(r, MeterEvent)]
        if not events:
            return []
        held = {(e.code, e.time) for e in await self.store.events(
            meter.id, since=min(e.time for e in events))}
        return [e for e in events if (e.code, e.time) not in held]

    # -- clock --------------------------------------------------------------------------

    def _clock_capability(self, meter: Meter, protocol: IMeterProtocol) -> Any:
        return _capability(IClock, protocol, meter, "read or set the clock")

    async def _clock(
        self, job: Job, meter: Meter, protocol: IMeterProtocol, endpoint: Any, timeout: float
    ) -> Outcome:
        return await self._clock_within_policy(job.params, meter, protocol, endpoint, timeout)

    async def _clock_within_policy(
        self, options: Mapping[str, Any], meter: Meter, protocol: IMeterProtocol,
        endpoint: Any, timeout: float,
    ) -> Outcome:
        """Read the clock and apply the clock policy (the clock task and ``time-sync``):
        below the lower bound nothing, between the bounds set, above the upper an alarm."""
        clock = self._clock_capability(meter, protocol)
        policy = ClockPolicy.for_meter(options, meter)
        meter_time: datetime = await clock.read_clock(self.reactor, endpoint, meter, timeout)
        server_time = self.now()
        deviation = (meter_time - server_time).total_seconds()
        action = policy.decide(deviation)
        text = deviation_text(deviation, policy)
        fields = {"meter": meter.id, "route": meter.route, "protocol": meter.protocol,
                  "deviation": deviation}
        if action == ClockAction.SET:
            await clock.set_clock(self.reactor, endpoint, meter, timeout)
            log.info("{meter}: {text}: clock set", text=text, **fields)
        elif action == ClockAction.ALARM:
            log.warn("{meter}: {text}: alarm, clock not corrected", text=text, **fields)
            await self._submit([
                MeterEvent(
                    meter=meter.id,
                    code="fep:clock-deviation",
                    kind=EventKind.CLOCK_DEVIATION,
                    severity=Severity.MAJOR,
                    time=server_time,
                    text=f"{text}: above the upper bound, not corrected",
                    source="fep",
                )
            ])
        return Outcome(True, result=outcome_text(deviation, policy, action),
                       records=1 if action == ClockAction.ALARM else 0,
                       details={"deviation": deviation, "action": str(action)})

    # -- commands -----------------------------------------------------------------------

    async def _command(
        self, job: Job, meter: Meter, protocol: IMeterProtocol, endpoint: Any, timeout: float
    ) -> Outcome:
        if job.command is None:
            raise ConfigError(f"job {job.id} names no command", key="command")
        command: Command | None = await self.jobs.command(job.command)
        if command is None:
            raise ConfigError(f"job {job.id}: command {job.command} does not exist",
                              key="command")
        if command.status == CommandStatus.QUEUED:
            await self.jobs.transition(
                command.id, [CommandStatus.QUEUED], CommandStatus.RUNNING, self.node,
                "started", f"job {job.id} attempt {job.attempts}", self.reactor.seconds(),
            )
        elif job.attempts > 1:
            await self.jobs.transition(
                command.id, [CommandStatus.RUNNING], CommandStatus.RUNNING, self.node,
                "retried", f"job {job.id} attempt {job.attempts}", self.reactor.seconds(),
            )
        if command.action == "time-set":
            clock = self._clock_capability(meter, protocol)
            if not command.approved_by:
                held = await self._clock_hold(command, meter, clock, endpoint, timeout)
                if held is not None:
                    return held
            await clock.set_clock(self.reactor, endpoint, meter, timeout)
            return Outcome(True, result=TIME_SET_RESULT)
        if command.action == "time-sync":
            return await self._clock_within_policy(command.params, meter, protocol, endpoint,
                                                   timeout)
        if command.action == TERMINAL_CONFIG:
            if self.terminals is None:
                raise _not_supported(meter, "configure its GPRS terminal here")
            terminal_outcome: Outcome = await self.terminals.run(meter, command.params,
                                                                 lambda: endpoint)
            return terminal_outcome
        commands = ICommands(protocol, None)
        if commands is None or command.action not in commands.commands:
            raise _not_supported(meter, f"run {command.action}")
        params: dict[str, Any] = dict(command.params)
        if command.action == firmware.ACTION:  # the image it was requested with, or none
            params["image_bytes"] = await firmware.image_for(meter.id, command.id, params,
                                                             self.firmware_dir)
        params["progress"] = dict(command.progress)
        progress = _ProgressWriter(self.jobs, command.id)
        if command.action == KEY_TRANSFER:
            from fep.collect.key_transfer import transfer_keys

            try:
                done_keys = await transfer_keys(
                    self.secrets, commands, self.reactor, endpoint, meter, params, timeout,
                    progress,
                )
            finally:
                await progress.flush()
            if self.resolve is not None:
                await self.resolve(meter)  # the directory uses the new keys from now on
            summary = ", ".join(f"{k}={v}" for k, v in sorted(done_keys.items()))
            return Outcome(True, result=f"{command.action} done: {summary}")
        try:
            done: Mapping[str, Any] = await commands.run_command(
                self.reactor, endpoint, meter, command.action, params, timeout, progress
            )
        finally:
            await progress.flush()
        summary = ", ".join(f"{k}={v}" for k, v in sorted(done.items()))
        return Outcome(True, result=f"{command.action} done" + (f": {summary}" if summary
                                                                  else ""))

    async def _clock_hold(self, command: Command, meter: Meter, clock: IClock, endpoint: Any,
                          timeout: float) -> Outcome | None:
        """An unapproved time-set beyond the meter's clock policy bounds goes back to await
        approval (fep.collect.commands.clock_hold) instead of setting the clock."""
        policy = ClockPolicy.for_meter({}, meter)
        meter_time: datetime = await clock.read_clock(self.reactor, endpoint, meter, timeout)
        deviation = (meter_time - self.now()).total_seconds()
        reason = clock_hold(command, deviation, policy.upper)
        if reason is None:
            return None
        await hold(self.jobs, command, self.node, reason, self.reactor.seconds())
        log.warn("command {command}: {reason}", command=command.id, reason=reason,
                 meter=meter.id)
        return Outcome(True, result=f"held for approval: {reason}",
                       details={"deviation": deviation})

    def job_ended(self, job: Job, status: JobStatus, outcome: Outcome) -> Deferred[None]:
        """Settle a command whose job reached a final status: done or failed, audited."""
        return Deferred.fromCoroutine(self._job_ended(job, status, outcome))

    async def _job_ended(self, job: Job, status: JobStatus, outcome: Outcome) -> None:
        self.reads_now.ended(job.id, status, outcome)
        self._settled.pop(job.id, None)
        for listener in list(self.listeners):
            try:
                listener.job_ended(job.task, str(job.kind), job.due, str(status))
            except Exception:
                log.failure("collection listener {listener} failed", listener=listener)
        if job.kind != JobKind.COMMAND or job.command is None:
            return
        ok = status == JobStatus.DONE
        text = outcome.result if ok else (outcome.error or str(status))
        if status == JobStatus.MISSED:
            text = f"missed: {text}"
        await self.jobs.transition(
            job.command,
            [CommandStatus.QUEUED, CommandStatus.RUNNING],
            CommandStatus.DONE if ok else CommandStatus.FAILED,
            self.node,
            "done" if ok else "failed",
            text or "",
            self.reactor.seconds(),
            fields={"outcome": text, "finished_at": self.reactor.seconds()},
            # Only by the job that carries it now: a time-set held for approval and approved
            # since has a new job, and the held job's end says nothing about it.
            of_job=job.id,
        )


class _ProgressWriter:
    """Keeps a command's progress in the store as it goes: one write at a time, the latest
    progress wins (a resumed attempt starts from what was last kept)."""

    def __init__(self, jobs: IJobStore, command_id: int) -> None:
        self.jobs = jobs
        self.command_id = command_id
        self.latest: dict[str, Any] | None = None
        self.writing: Deferred[None] | None = None

    def __call__(self, progress: Mapping[str, Any]) -> None:
        self.latest = dict(progress)
        if self.writing is None:
            self._write()

    def _write(self) -> None:
        latest, self.latest = self.latest, None
        if latest is None:
            return
        self.writing = self.jobs.command_progress(self.command_id, latest)
        self.writing.addErrback(lambda f: log.warn("command progress not kept: {error}",
                                                   error=f.value))
        self.writing.addBoth(self._written)

    def _written(self, _: object) -> None:
        self.writing = None
        self._write()

    async def flush(self) -> None:
        if self.writing is None:
            self._write()
        while self.writing is not None:
            await self.writing
