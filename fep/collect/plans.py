"""Control plans: one command of the vocabulary over a group of meters, established, approved
by a second operator, executed at a rate and counted (the seed's "solution establishment,
approval, execution").

A plan names a command (``disconnect``, ``demand-reset``, ...) with its parameters, a target
group (resolved to a list of meters when the plan is created, so the approver approves exactly
those), a start time (or now), a rate (meters per minute overall, and per line: the route's
resource, fep.collect.limits), a retry policy (attempts, delay) and a deadline.

Lifecycle (:data:`TRANSITIONS`)::

    draft --submit--> submitted --approve--> approved --start--> running --(all ended)--> done
                                 \\--reject--> rejected          running <--pause/start--> paused
    cancel: from draft, submitted, approved, running or paused

The approver (or rejecter) is another operator than the submitter and the creator, compared
by operator identity (fep.collect.commands.operator_of) whatever door each came through.

Execution: a running plan releases its meters one by one at its rate (:class:`RateLimiter`);
each released meter's command becomes a command of fep.collect.commands already approved by
the plan's approval (audited as approved via plan N) and an on-demand job of the engine, with
the plan's attempts, retry delay and deadline. Pausing or cancelling happens in one
transaction with the withdrawal of the jobs not yet started (their commands end as withheld or
cancelled), so no command starts after it; the releases stop with it. Each meter ends as
``done``, ``failed`` (with the reason), ``not-supported`` (its protocol or device lacks the
command, known when the plan is made) or ``skipped`` (cancelled, or the deadline passed).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from fep.channels.terminals import parse_change
from fep.collect.commands import (
    CommandError,
    CommandNotSupported,
    SameOperator,
    WrongState,
    check_supported,
    operator_of,
)
from fep.collect.concentrators import concentrator_of
from fep.collect.limits import ResourcePolicy
from fep.collect.tasks import COMMANDS, KEY_TRANSFER, TERMINAL_CONFIG, TERMINAL_RESET, Target
from fep.errors import ConfigError, FepError
from fep.interfaces import IPlans
from fep.model import Meter

log = Logger()

# Seconds by which a release may come early (the rate limiter's tolerance): how finely the
# releases are timed, never a burst of more than this much of the rate.
SLACK = 0.1
# The overall key of the rate limiter; lines are ``line:RESOURCE``.
OVERALL = "*"
DEFAULT_ATTEMPTS = 3
DEFAULT_RETRY_DELAY = 30.0
# Commands whose requests check more than the meter (an image, keys): per meter only.
NOT_IN_PLANS = ("firmware-upgrade", KEY_TRANSFER)
# Most meters one plan may name.
MAX_METERS = 1_000_000


class PlanError(CommandError):
    """A plan refused: a bad definition, a step its status does not allow, the same operator
    approving what they submitted."""


class PlanSameOperator(PlanError, SameOperator):
    """Four eyes: the plan's creator or submitter approving or rejecting it."""


class PlanWrongState(PlanError, WrongState):
    """A step the plan's status does not allow (approve a draft, start a submitted plan)."""


class PlanNotFound(PlanError):
    """No plan of that id."""


class PlanStatus(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"


class MeterState(enum.StrEnum):
    """Where one meter of a plan is: waiting (``pending``), its command under way
    (``released``), or its outcome."""

    PENDING = "pending"
    RELEASED = "released"
    DONE = "done"
    FAILED = "failed"
    NOT_SUPPORTED = "not-supported"
    SKIPPED = "skipped"

    @property
    def final(self) -> bool:
        return self not in (MeterState.PENDING, MeterState.RELEASED)


# step -> (statuses it is allowed from, the status it leads to)
TRANSITIONS: dict[str, tuple[tuple[PlanStatus, ...], PlanStatus]] = {
    "submit": ((PlanStatus.DRAFT,), PlanStatus.SUBMITTED),
    "approve": ((PlanStatus.SUBMITTED,), PlanStatus.APPROVED),
    "reject": ((PlanStatus.SUBMITTED,), PlanStatus.REJECTED),
    "start": ((PlanStatus.APPROVED, PlanStatus.PAUSED), PlanStatus.RUNNING),
    "pause": ((PlanStatus.RUNNING,), PlanStatus.PAUSED),
    "cancel": ((PlanStatus.DRAFT, PlanStatus.SUBMITTED, PlanStatus.APPROVED,
                PlanStatus.RUNNING, PlanStatus.PAUSED), PlanStatus.CANCELLED),
}
# Steps that need another operator than the plan's submitter and creator.
FOUR_EYES = ("approve", "reject")
STEPS = tuple(TRANSITIONS)


def check_step(plan: Plan, step: str, who: str) -> PlanStatus:
    """The status ``step`` by ``who`` leads ``plan`` to; PlanError naming the plan when its
    status does not allow the step or when ``who`` may not take it (four eyes)."""
    if step not in TRANSITIONS:
        raise PlanError(f"unknown plan step {step!r} (known: {', '.join(STEPS)})")
    allowed, to = TRANSITIONS[step]
    if plan.status not in allowed:
        raise PlanWrongState(f"plan {plan.id} is {plan.status}: it cannot {step} "
                             f"(only when {' or '.join(str(s) for s in allowed)})")
    operator = operator_of(who)
    if not operator:
        raise PlanError(f"plan {plan.id}: {step} needs the name of who does it")
    if step in FOUR_EYES:
        for role, by in (("submitted", plan.submitted_by), ("created", plan.created_by)):
            if by and operator_of(by) == operator:
                raise PlanSameOperator(
                    f"plan {plan.id} was {role} by {by}, the same operator ({operator}) as "
                    f"{who}: someone else must {step} it")
    return to


# -- targets ------------------------------------------------------------------------------


_TARGET_HELP = ("all, meters:ID,..., group:NAME (or tag:NAME), protocol:NAME, route:PREFIX, "
                "concentrator:ID, file:PATH (one meter id a line)")


def resolve_target(
    text: str,
    meters: Sequence[Meter],
    *,
    read_file: Callable[[str], str] | None = None,
) -> list[Meter]:
    """The meters a plan's target names, in release order: the order given for ``meters:``
    and ``file:`` (one id a line, ``#`` comments), else the meter list's. ``file:`` needs
    ``read_file`` (only the command line reads files; the API and the console name meters).
    Unknown ids and empty groups are refused (PlanError)."""
    stripped = text.strip()
    kind, sep, rest = stripped.partition(":")
    kind = kind.strip().lower()
    if sep and kind == "file":
        if read_file is None:
            raise PlanError("target file: only on the command line (give meters:ID,... "
                            "here)")
        ids = [line.split("#", 1)[0].strip() for line in read_file(rest.strip()).splitlines()]
        return _named([i for i in ids if i], meters, text)
    if sep and kind == "concentrator":
        owners = {v.strip() for v in rest.split(",") if v.strip()}
        if not owners:
            raise PlanError(f"target {text!r} names nothing after concentrator:")
        chosen = [m for m in meters if concentrator_of(m) in owners]
    elif sep and kind == "meters":
        return _named([v.strip() for v in rest.split(",") if v.strip()], meters, text)
    else:
        if sep and kind == "tag":
            stripped = "group:" + rest
        try:
            target = Target.parse(stripped)
        except ConfigError as e:
            raise PlanError(f"target {text!r}: {_TARGET_HELP}") from e
        chosen = [m for m in meters if target.matches(m)]
    if not chosen:
        raise PlanError(f"target {text!r} names no meter")
    return chosen


def _named(ids: Sequence[str], meters: Sequence[Meter], text: str) -> list[Meter]:
    known = {m.id: m for m in meters}
    unknown = [i for i in ids if i not in known]
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more"
                                           if len(unknown) > 10 else "")
        raise PlanError(f"target {text[:80]!r}: unknown meter(s) {shown}")
    seen: set[str] = set()
    out = []
    for i in ids:
        if i not in seen:
            seen.add(i)
            out.append(known[i])
    if not out:
        raise PlanError(f"target {text[:80]!r} names no meter")
    return out


# -- the plan -----------------------------------------------------------------------------


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


@attrs.frozen
class Plan:
    """A control plan as stored. ``rate`` is meters per minute overall, ``line_rate`` per
    line (None: only the overall rate); ``deadline_at`` the latest time a command may start
    (``deadline_in``: seconds after the plan starts, fixed when it starts); ``counts`` the
    number of meters in each MeterState."""

    id: int
    name: str
    action: str
    target: str
    rate: float
    status: PlanStatus = attrs.field(default=PlanStatus.DRAFT, converter=PlanStatus)
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, eq=False)
    line_rate: float | None = None
    attempts: int = DEFAULT_ATTEMPTS
    retry_delay: float = DEFAULT_RETRY_DELAY
    starts_at: float | None = None
    deadline_at: float | None = None
    deadline_in: float | None = None
    created_by: str = ""
    created_at: float = 0.0
    submitted_by: str | None = None
    submitted_at: float | None = None
    decided_by: str | None = None
    decided_at: float | None = None
    reason: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    limiter: Mapping[str, float] = attrs.field(factory=dict, converter=_frozen, eq=False)
    counts: Mapping[str, int] = attrs.field(factory=dict, converter=_frozen, eq=False)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ended(self) -> int:
        return sum(n for s, n in self.counts.items() if MeterState(s).final)

    @property
    def approved_by(self) -> str | None:
        """Who approved it (None until approved, and for a rejected plan)."""
        if self.status in (PlanStatus.DRAFT, PlanStatus.SUBMITTED, PlanStatus.REJECTED):
            return None
        return self.decided_by


def new_plan(
    name: str,
    action: str,
    target: str,
    *,
    who: str,
    now: float,
    rate: float,
    params: Mapping[str, Any] | None = None,
    line_rate: float | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    starts_at: float | None = None,
    deadline_at: float | None = None,
    deadline_in: float | None = None,
) -> Plan:
    """A draft plan, its definition checked (PlanError naming what is wrong)."""
    if action not in COMMANDS:
        raise PlanError(f"unknown command {action!r} (known: {', '.join(COMMANDS)})")
    if action in NOT_IN_PLANS:
        raise PlanError(f"{action} is not offered in plans (its image or keys are checked "
                        "per command): request it per meter")
    if not operator_of(who):
        raise PlanError("a plan needs the name of who makes it")
    if action == TERMINAL_CONFIG:  # the same change for every terminal: checked now
        try:
            parse_change(params or {})
        except ConfigError as e:
            raise PlanError(f"{action}: {e}") from None
    if action in (TERMINAL_RESET, "parameter-read"):  # concentrators' own: checked now
        from fep.protocols.gw3761 import control

        try:
            control.check(action, params or {})
        except ConfigError as e:
            raise PlanError(f"{action}: {e.message}") from None
    name = (name or "").strip() or f"{action} {target}".strip()
    if len(name) > 200:
        raise PlanError("plan name: 200 characters at most")
    if not rate or rate <= 0:
        raise PlanError("rate: meters per minute, more than 0")
    if line_rate is not None and line_rate <= 0:
        raise PlanError("line rate: meters per minute per line, more than 0")
    if attempts < 1 or attempts > 100:
        raise PlanError("attempts: 1 to 100")
    if retry_delay < 0:
        raise PlanError("retry delay: 0 or more seconds")
    if deadline_at is not None and deadline_in is not None:
        raise PlanError("give the deadline as a time or as a duration, not both")
    if deadline_in is not None and deadline_in <= 0:
        raise PlanError("deadline: a duration of more than 0")
    if deadline_at is not None and deadline_at <= max(now, starts_at or now):
        raise PlanError("deadline: after the start")
    return Plan(id=0, name=name, action=action, target=target.strip(), rate=float(rate),
                params=dict(params or {}), line_rate=line_rate, attempts=attempts,
                retry_delay=retry_delay, starts_at=starts_at, deadline_at=deadline_at,
                deadline_in=deadline_in, created_by=who, created_at=now)


@attrs.frozen
class PlanMeter:
    """One meter of a plan: its place in the release order, its line, where it is and why."""

    plan: int
    meter: str
    seq: int
    route: str
    line: str
    state: MeterState = attrs.field(default=MeterState.PENDING, converter=MeterState)
    command: int | None = None
    attempts: int = 0
    reason: str | None = None
    released_at: float | None = None
    finished_at: float | None = None


def plan_meters(meters: Iterable[Meter], action: str, policy: ResourcePolicy
                ) -> list[PlanMeter]:
    """The rows of a new plan's meters: each with its line (the route's resource), and
    ``not-supported`` with the reason when its protocol or device lacks the command."""
    rows = []
    for seq, meter in enumerate(meters):
        state, reason = MeterState.PENDING, None
        try:
            check_supported(meter, action)
        except CommandNotSupported as e:
            state, reason = MeterState.NOT_SUPPORTED, e.message
        rows.append(PlanMeter(0, meter.id, seq, meter.route, policy.key(meter.route), state,
                              reason=reason))
    if len(rows) > MAX_METERS:
        raise PlanError(f"a plan names {MAX_METERS} meters at most ({len(rows)} given)")
    return rows


# -- the rate -----------------------------------------------------------------------------


@attrs.define
class RateLimiter:
    """How fast a plan releases meters: at most ``rate`` a minute overall and ``line_rate``
    a minute on each line, evenly spaced (a generic cell rate algorithm per key: a meter may
    go when each of its keys' theoretical time is at most ``slack`` seconds ahead; it then
    moves on by 60/rate seconds). In any span of W seconds at most (W + slack) * rate / 60
    + 1 meters go; credit never piles up while the plan waits or runs slower than its rate.
    ``tat`` (the keys' theoretical times) is the state kept with the plan."""

    rate: float
    line_rate: float | None = None
    slack: float = SLACK
    tat: dict[str, float] = attrs.field(factory=dict)

    def _keys(self, line: str) -> list[tuple[str, float]]:
        keys = [(OVERALL, 60.0 / self.rate)]
        if self.line_rate:
            keys.append((f"line:{line}", 60.0 / self.line_rate))
        return keys

    def allows(self, line: str, now: float) -> bool:
        return all(self.tat.get(k, now) - now <= self.slack + 1e-9 for k, _ in self._keys(line))

    def take(self, line: str, now: float) -> None:
        for key, spacing in self._keys(line):
            self.tat[key] = max(self.tat.get(key, now), now) + spacing

    def line_allows(self, line: str, now: float) -> bool:
        """Whether the line itself (whatever the overall rate says) would let one go."""
        if not self.line_rate:
            return True
        return self.tat.get(f"line:{line}", now) - now <= self.slack + 1e-9

    def next_at(self, now: float) -> float:
        """When the overall rate lets the next meter go."""
        return max(now, self.tat.get(OVERALL, now) - self.slack)

    def state(self, now: float) -> dict[str, float]:
        """The keys still ahead of ``now`` (the others would conform anyway)."""
        return {k: t for k, t in self.tat.items() if t > now}


# -- the executor -------------------------------------------------------------------------


class PlanRunner(service.Service):
    """Executes running plans on this node: each pass settles the meters whose commands
    ended, releases the next meters the rate allows (the plan store does it in one
    transaction per plan, so several nodes sharing a PostgreSQL store keep one rate), starts
    approved plans whose start time came, and ends plans that are through. ``kick`` runs a
    pass soon; a plan changed elsewhere (the command line on the store) is seen within
    ``poll`` seconds, and a plan with meters under way is looked at every ``busy`` seconds.
    ``released`` is called after meters were released (the scheduler's kick)."""

    name = "plans"

    def __init__(self, reactor: IReactorTime, store: Any, *, node: str,
                 released: Callable[[], None] | None = None, poll: float = 1.0,
                 busy: float = 0.1, capacities: Mapping[str, int] | None = None) -> None:
        self.reactor = reactor
        self.store = store
        self.node = node
        # How many commands a line takes at once (shared pools: ResourcePolicy.capacities).
        self.capacities = dict(capacities or {})
        self.released = released
        self.poll = poll
        self.busy = busy
        self._timer: IDelayedCall | None = None
        self._pass: Deferred[float] | None = None
        self._again = False
        self.passes = 0

    def now(self) -> float:
        return float(self.reactor.seconds())

    def startService(self) -> None:
        super().startService()
        self.kick()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        running = self._pass

        async def stop() -> None:
            if running is not None:
                await running

        return Deferred.fromCoroutine(stop())

    def kick(self, delay: float = 0.0) -> None:
        if not self.running:
            return
        if self._pass is not None:
            self._again = True
            return
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= self.now() + delay:
                return
            self._timer.cancel()
        self._timer = self.reactor.callLater(max(0.0, delay), self._start)

    def _start(self) -> None:
        self._timer = None
        if self._pass is not None or not self.running:
            return
        d = Deferred.fromCoroutine(self.one_pass())
        self._pass = d
        d.addErrback(lambda f: log.failure("plan pass failed", f))
        d.addBoth(self._done)

    def _done(self, delay: object) -> None:
        self._pass = None
        if not self.running:
            return
        if self._again:
            self._again = False
            self.kick()
        else:
            self.kick(delay if isinstance(delay, float) else self.poll)

    async def one_pass(self) -> float:
        """One pass over the active plans; fires with the delay until the next."""
        self.passes += 1
        now = self.now()
        delay = self.poll
        try:
            for plan_id in await self.store.active(now):
                tick = await self.store.tick(plan_id, self.now(), self.node, self.capacities)
                if tick.released and self.released is not None:
                    self.released()
                for line in tick.log:
                    log.info("plan {plan}: {line}", plan=plan_id, line=line)
                if tick.next_at is not None:
                    delay = min(delay, max(0.01, tick.next_at - self.now()))
                if tick.under_way:
                    delay = min(delay, self.busy)
        except FepError as e:
            log.warn("plans: {error}", error=e)
        return delay


# -- the doors (API, console, command line through the daemon) ------------------------------


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


def plan_dict(plan: Plan) -> dict[str, Any]:
    """A plan as the API, the console and the status page show it."""
    counts = {str(s): int(plan.counts.get(str(s), 0)) for s in MeterState}
    total = sum(counts.values())
    ended = sum(n for s, n in counts.items() if MeterState(s).final)
    return {
        "id": plan.id,
        "name": plan.name,
        "action": plan.action,
        "params": dict(plan.params),
        "target": plan.target,
        "status": str(plan.status),
        "rate": plan.rate,
        "line_rate": plan.line_rate,
        "attempts": plan.attempts,
        "retry_delay": plan.retry_delay,
        "starts_at": _iso(plan.starts_at),
        "deadline_at": _iso(plan.deadline_at),
        "deadline_in": plan.deadline_in,
        "created_by": plan.created_by,
        "created_at": _iso(plan.created_at),
        "submitted_by": plan.submitted_by,
        "submitted_at": _iso(plan.submitted_at),
        "decided_by": plan.decided_by,
        "decided_at": _iso(plan.decided_at),
        "approved_by": plan.approved_by,
        "reason": plan.reason,
        "started_at": _iso(plan.started_at),
        "finished_at": _iso(plan.finished_at),
        "meters": total,
        "counts": counts,
        "progress": round(ended / total, 4) if total else 0.0,
    }


def meter_dict(row: PlanMeter) -> dict[str, Any]:
    return {
        "meter": row.meter,
        "seq": row.seq,
        "line": row.line,
        "state": str(row.state),
        "command": row.command,
        "attempts": row.attempts,
        "reason": row.reason,
        "released_at": _iso(row.released_at),
        "finished_at": _iso(row.finished_at),
    }


def _number(spec: Mapping[str, Any], key: str, default: float | None) -> float | None:
    value = spec.get(key, default)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise PlanError(f"{key}: a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PlanError(f"{key}: a number, not {value!r}") from None


def _when(spec: Mapping[str, Any], key: str) -> float | None:
    value = spec.get(key)
    if value is None or value == "" or value == "now":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise PlanError(f"{key}: an ISO-8601 time, not {value!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _deadline(spec: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(deadline_at, deadline_in) from ``deadline`` (an ISO time or a duration such as
    ``2h``) or ``deadline_s`` (seconds after the start)."""
    from fep.collect.schedule import parse_duration

    if spec.get("deadline_s") not in (None, ""):
        return None, _number(spec, "deadline_s", None)
    value = spec.get("deadline")
    if value in (None, ""):
        return None, None
    text = str(value).strip()
    if text and (text[0].isdigit() and ("-" in text[1:] or "T" in text)):
        return _when(spec, "deadline"), None
    try:
        return None, parse_duration(text, "deadline")
    except ConfigError as e:
        raise PlanError(f"deadline: an ISO-8601 time or a duration (2h, 30m): {e}") from None


def plan_from_spec(spec: Mapping[str, Any], who: str, now: float) -> Plan:
    """A draft plan from what a door was given: ``action`` (required), ``target`` (or
    ``meters``: a list of ids), ``params``, ``name``, ``rate`` (meters a minute, default
    60), ``line_rate``, ``attempts``, ``retry_delay`` (seconds), ``start`` (ISO time),
    ``deadline`` (ISO time or duration) or ``deadline_s``."""
    action = spec.get("action")
    if not isinstance(action, str) or not action:
        raise PlanError('action: required, e.g. "disconnect"')
    target = spec.get("target")
    ids = spec.get("meters")
    if ids is not None:
        if target is not None:
            raise PlanError("give target or meters, not both")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise PlanError("meters: a list of meter ids")
        target = "meters:" + ",".join(ids)
    if not isinstance(target, str) or not target.strip():
        raise PlanError("target: required (" + _TARGET_HELP + ")")
    params = spec.get("params", {})
    if not isinstance(params, Mapping):
        raise PlanError("params: an object")
    attempts = _number(spec, "attempts", DEFAULT_ATTEMPTS)
    deadline_at, deadline_in = _deadline(spec)
    return new_plan(
        str(spec.get("name") or ""), action, target, who=who, now=now,
        rate=_number(spec, "rate", 60.0) or 0.0,
        params={str(k): v for k, v in params.items()},
        line_rate=_number(spec, "line_rate", None),
        attempts=int(attempts if attempts is not None else DEFAULT_ATTEMPTS),
        retry_delay=_number(spec, "retry_delay", DEFAULT_RETRY_DELAY) or 0.0,
        starts_at=_when(spec, "start"),
        deadline_at=deadline_at, deadline_in=deadline_in,
    )


async def create(store: Any, spec: Mapping[str, Any], who: str, now: float,
                 meters: Sequence[Meter], policy: ResourcePolicy,
                 read_file: Callable[[str], str] | None = None) -> Plan:
    """Make a draft plan from ``spec`` over the meters its target names among ``meters``."""
    plan = plan_from_spec(spec, who, now)
    chosen = resolve_target(plan.target, meters, read_file=read_file)
    rows = plan_meters(chosen, plan.action, policy)
    made: Plan = await store.create(plan, rows)
    return made


@implementer(IPlans)
class EnginePlans:
    """IPlans on a node: plans in the store, meters from the node's directory, lines from
    the engine's resource policy, the node's PlanRunner told of each change."""

    def __init__(self, store: Any, directory: Any, policy: ResourcePolicy,
                 runner: PlanRunner | None, reactor: IReactorTime) -> None:
        self.store = store
        self.directory = directory
        self.policy = policy
        self.runner = runner
        self.reactor = reactor

    def _now(self) -> float:
        return float(self.reactor.seconds())

    def _kick(self) -> None:
        if self.runner is not None:
            self.runner.kick()

    def plans(self, limit: int, status: str | None = None) -> Deferred[list[dict[str, Any]]]:
        async def run() -> list[dict[str, Any]]:
            return [plan_dict(p) for p in await self.store.plans(status=status, limit=limit)]

        return Deferred.fromCoroutine(run())

    def plan(self, plan_id: int) -> Deferred[dict[str, Any]]:
        async def run() -> dict[str, Any]:
            plan = await self.store.plan(plan_id)
            if plan is None:
                raise KeyError(plan_id)
            out = plan_dict(plan)
            out["outcomes"] = [meter_dict(r) for r in await self.store.meters(plan_id)]
            out["audit"] = [{"at": _iso(a.at), "who": a.who, "action": a.action,
                             "detail": a.detail} for a in await self.store.plan_audit(plan_id)]
            return out

        return Deferred.fromCoroutine(run())

    def create(self, spec: dict[str, Any], who: str) -> Deferred[dict[str, Any]]:
        async def run() -> dict[str, Any]:
            await self.directory.refresh()
            plan = await create(self.store, spec, who, self._now(), self.directory.all(),
                                self.policy)
            return plan_dict(plan)

        return Deferred.fromCoroutine(run())

    def step(self, plan_id: int, step: str, who: str, reason: str = ""
             ) -> Deferred[dict[str, Any]]:
        async def run() -> dict[str, Any]:
            try:
                plan = await self.store.step(plan_id, step, who, self._now(), reason)
            except PlanNotFound:
                raise KeyError(plan_id) from None
            self._kick()
            return plan_dict(plan)

        return Deferred.fromCoroutine(run())

    def active(self) -> Deferred[list[dict[str, Any]]]:
        async def run() -> list[dict[str, Any]]:
            found = await self.store.plans(limit=20, recent=True)
            return [plan_dict(p) for p in found]

        return Deferred.fromCoroutine(run())
