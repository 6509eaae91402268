"""The collection vocabulary: tasks (what to collect from which meters, when), the jobs they
expand into (one meter, one run), job outcomes, and commands with their audit trail.

Times are POSIX seconds (the reactor's clock). Every record is an attrs frozen class; the
job store keeps them (fep.collect.jobstore).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from fep.collect.schedule import Every, Schedule, parse_schedule
from fep.errors import ConfigError
from fep.model import Meter


class TaskKind(enum.StrEnum):
    """What a task collects."""

    REGISTERS = "registers"  # billing registers (the protocol's read, or the items given)
    INSTANTANEOUS = "instantaneous"  # voltages, currents, power (items or the protocol's set)
    OBJECTS = "objects"  # a custom object list (items: OBIS/DI/table names)
    LOAD_PROFILE = "load-profile"  # intervals since the last stored one, gaps re-collected
    EVENTS = "events"  # the meter's event logs
    CLOCK = "clock"  # clock check with the deviation policy


class JobKind(enum.StrEnum):
    REGISTERS = "registers"
    INSTANTANEOUS = "instantaneous"
    OBJECTS = "objects"
    LOAD_PROFILE = "load-profile"
    EVENTS = "events"
    CLOCK = "clock"
    COMMAND = "command"


# The built-in task that reads every meter each [collect] period (fep.collect.engine).
DEFAULT_TASK = "default"


class Priority(enum.IntEnum):
    """Lower runs first: on-demand > alarms > scheduled > backfill."""

    ON_DEMAND = 0
    ALARM = 1
    SCHEDULED = 2
    BACKFILL = 3

    @classmethod
    def parse(cls, text: str | int) -> Priority:
        if isinstance(text, int) or str(text).strip().isdigit():
            try:
                return cls(int(text))
            except ValueError:
                pass
        else:
            name = str(text).strip().upper().replace("-", "_")
            if name in cls.__members__:
                return cls[name]
        raise ConfigError(
            f"priority {text!r}: one of on-demand, alarm, scheduled, backfill (or 0..3)",
            key="priority",
        )

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class JobStatus(enum.StrEnum):
    PENDING = "pending"  # waits for run_at (first run or a retry)
    LEASED = "leased"  # held by a node, not started
    RUNNING = "running"  # an attempt is under way on the node holding the lease
    DONE = "done"
    FAILED = "failed"  # every attempt failed, or the job cannot succeed (not supported)
    MISSED = "missed"  # its deadline passed before it could run (or a later run replaced it)

    @property
    def final(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.MISSED)


_TARGET_KINDS = ("all", "meters", "group", "protocol", "route")


@attrs.frozen
class Target:
    """Which meters a task is for: ``all``, ``meters:ID,ID``, ``group:NAME`` (the meter's
    ``group`` metadata, comma-separated groups allowed), ``protocol:NAME`` or
    ``route:PREFIX`` (routes starting with it)."""

    kind: str = "all"
    values: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Target:
        stripped = text.strip()
        if stripped in ("", "all"):
            return cls()
        kind, sep, rest = stripped.partition(":")
        kind = kind.strip().lower()
        if not sep or kind not in _TARGET_KINDS[1:]:
            raise ConfigError(
                f"target {text!r}: all, meters:ID,..., group:NAME, protocol:NAME or "
                "route:PREFIX",
                key="target",
            )
        if kind == "route":
            values: tuple[str, ...] = (rest.strip(),)
        else:
            values = tuple(v.strip() for v in rest.split(",") if v.strip())
        if not values or not values[0]:
            raise ConfigError(f"target {text!r} names nothing after {kind}:", key="target")
        return cls(kind, values)

    def matches(self, meter: Meter) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "meters":
            return meter.id in self.values
        if self.kind == "group":
            groups = {g.strip() for g in meter.metadata.get("group", "").split(",")}
            return any(v in groups for v in self.values)
        if self.kind == "protocol":
            return meter.protocol in self.values
        return meter.route.startswith(self.values[0])

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        return f"{self.kind}:{','.join(self.values)}"


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _items(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    return tuple(v.strip() for v in value if v and v.strip())


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ConfigError(
            f"task name {value!r}: letters, digits, '_', '.', ':' and '-' (64 at most)",
            key="name",
        )
    return value


def _priority(value: str | int) -> Priority:
    return Priority.parse(value)


@attrs.frozen
class Task:
    """A collection task. ``deadline`` is how long after its due time a job may still start
    (None: until the task's next run is due, for ``every`` schedules; no limit for cron).
    ``retries`` more attempts follow a failed one, ``retry_delay`` seconds apart, doubling
    each time (``backoff``). ``options`` are kind-specific (docs/collection.md)."""

    name: str = attrs.field(converter=_name)
    kind: TaskKind = attrs.field(converter=TaskKind)
    schedule: str
    target: Target = Target()
    items: tuple[str, ...] = attrs.field(default=(), converter=_items)
    priority: Priority = attrs.field(default=Priority.SCHEDULED, converter=_priority)
    retries: int = 2
    retry_delay: float = 60.0
    backoff: float = 2.0
    deadline: float | None = None
    starts_at: float | None = None
    ends_at: float | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, eq=False)
    enabled: bool = True
    # The next run not yet turned into jobs (kept by the store).
    next_due: float | None = None

    def __attrs_post_init__(self) -> None:
        self.parsed_schedule()  # refuse a bad schedule when the task is made
        if self.retries < 0:
            raise ConfigError(f"task {self.name}: retries must be 0 or more", key="retries")
        if self.retry_delay < 0:
            raise ConfigError(f"task {self.name}: retry delay must be 0 or more",
                              key="retry_delay")
        via = str(self.options.get("via", "points")).strip().lower()
        if via not in ("points", "forward"):
            # fep.collect.concentrators.through_points: how meters behind a concentrator
            # are read; a typo must not silently read them the other way.
            raise ConfigError(f"task {self.name}: via must be points or forward, not {via!r}",
                              key="via")

    def parsed_schedule(self) -> Schedule:
        return parse_schedule(self.schedule)

    def first_due(self, now: float) -> float:
        """The first run at or after ``max(now, starts_at)``."""
        start = max(now, self.starts_at) if self.starts_at is not None else now
        return self.parsed_schedule().next_after(start - 1e-6)

    def deadline_after(self, due: float) -> float | None:
        if self.deadline is not None:
            return due + self.deadline
        schedule = self.parsed_schedule()
        if isinstance(schedule, Every):
            return schedule.next_after(due)
        return None

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


@attrs.frozen
class Job:
    """One run of one kind of collection (or one command) for one meter.

    ``resource`` is the channel resource it occupies (fep.collect.limits); ``pinned`` the
    node that must run it (the node an inbound session is connected to), if any.
    """

    id: int
    meter: str
    kind: JobKind = attrs.field(converter=JobKind)
    route: str
    resource: str
    due: float
    run_at: float
    priority: int = Priority.SCHEDULED
    deadline: float | None = None
    max_attempts: int = 1
    retry_delay: float = 60.0
    backoff: float = 2.0
    task: str | None = None
    items: tuple[str, ...] = attrs.field(default=(), converter=_items)
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, eq=False)
    command: int | None = None
    pinned: str | None = None
    status: JobStatus = attrs.field(default=JobStatus.PENDING, converter=JobStatus)
    attempts: int = 0
    node: str | None = None
    lease_until: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: str | None = None
    error: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    records: int = 0
    first_ok: bool | None = None

    def retry_at(self, now: float) -> float:
        """When the next attempt may run after ``self.attempts`` failed ones."""
        return now + self.retry_delay * self.backoff ** max(0, self.attempts - 1)


@attrs.frozen
class Outcome:
    """What one attempt of a job came to. ``retry`` False: another attempt cannot help
    (the protocol does not support the job, the meter's settings are wrong)."""

    ok: bool
    result: str = ""
    error: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    records: int = 0
    retry: bool = True
    # Kind-specific facts kept with the job (e.g. the clock deviation, the image blocks).
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, eq=False)


class CommandStatus(enum.StrEnum):
    REQUESTED = "requested"  # waits for approval
    QUEUED = "queued"  # approved (or needing none): a job will run it
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    REJECTED = "rejected"


# The one command vocabulary of every protocol (docs/control.md). Each protocol declares the
# ones it runs (its ``commands``; ``time-set``/``time-sync`` for every protocol with a clock);
# a meter's ``commands`` metadata narrows that to what its device has.
COMMANDS = (
    "demand-reset",
    "disconnect",
    "reconnect",
    "relay-state",
    "time-set",
    "time-sync",
    "event-log-clear",
    "parameter-set",
    "firmware-upgrade",
    "push-setup",
    "key-transfer",
    "terminal-config",
    "terminal-reset",
    "parameter-read",
)
# Commands the engine runs through the protocol's clock (fep.interfaces.IClock).
CLOCK_COMMANDS = ("time-set", "time-sync")
# DLMS key rotation on the meter (security setup key_transfer): always needs approval.
KEY_TRANSFER = "key-transfer"
# A GPRS terminal's (DTU's) APN, master stations, heartbeat, mode (fep.collect.terminals):
# commands of the meter's terminal profile, not of its protocol; always needs approval.
TERMINAL_CONFIG = "terminal-config"
# A concentrator's reset (Q/GDW 1376.1 AFN 01: hardware, data, parameters): always needs
# approval.
TERMINAL_RESET = "terminal-reset"


@attrs.frozen
class Command:
    """A command for one meter, with who asked and who approved."""

    id: int
    meter: str
    action: str
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, eq=False)
    requested_by: str = ""
    requested_at: float = 0.0
    status: CommandStatus = attrs.field(default=CommandStatus.REQUESTED,
                                        converter=CommandStatus)
    approval_required: bool = False
    approved_by: str | None = None
    approved_at: float | None = None
    job: int | None = None
    outcome: str | None = None
    progress: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, eq=False)
    finished_at: float | None = None


@attrs.frozen
class AuditEntry:
    """One line of a command's audit trail: who did what when, and what came of it."""

    command: int
    at: float
    who: str
    action: str
    detail: str = ""


def dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), sort_keys=True, default=str)


def loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    loaded = json.loads(text)
    return loaded if isinstance(loaded, dict) else {}
