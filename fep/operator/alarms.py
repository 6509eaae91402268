"""Alarms: meter events classified into common kinds and severities by a configurable table,
debounced, stored (migration 0003; PostgreSQL NOTIFYs ``fep_alarm`` for each new one) and
notified by rules to e-mail (twisted.mail's SMTP client) and SMS (the SMS channel).

The engine sees every batch the store committed (a router hook), so an alarm always refers
to a stored event, and a batch replayed after a crash raises nothing twice: an alarm is
unique by the event that raised it (meter, code, time). Within ``debounce`` seconds of an
open alarm, another event of the same meter and kind is counted on it instead of raising
and notifying again.

The alarm table file (``[alarms] table``)::

    [classify]
    ; event code pattern (shell wildcards, first match wins) = kind severity;
    ; text:PATTERN matches the event's text instead (any case), e.g. a field device's SMS
    dlms:99.98.0:1 = power-outage critical
    text:*last gasp* = power-outage critical

    [raise]
    ; events below this severity are stored but raise no alarm
    min_severity = minor

    [notify:control-room]
    severity = critical, major        ; which alarms (default: all)
    kind = *                          ; kind patterns (default: all)
    group = north*                    ; meter group patterns, metadata "group" (default: all)
    email = ops@example.com, duty@example.com
    sms = +491701234567
"""

from __future__ import annotations

import configparser
import fnmatch
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from fep.errors import ConfigError, FepError
from fep.interfaces import INotifier
from fep.model import EventKind, MeterEvent, Record, Severity
from fep.operator.context import OperatorContext
from fep.operator.settings import OperatorConfig

log = Logger(namespace="fep.operator.alarms")

SEVERITY_ORDER = (Severity.INFO, Severity.MINOR, Severity.MAJOR, Severity.CRITICAL)
NOTIFY_CHANNEL = "fep_alarm"
SEEN_EVENTS = 50_000


def _rank(severity: Severity) -> int:
    return SEVERITY_ORDER.index(severity)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]


# -- the table ----------------------------------------------------------------------------------


@attrs.frozen
class Classification:
    pattern: str
    kind: EventKind
    severity: Severity


@attrs.frozen
class NotifyRule:
    name: str
    severities: frozenset[Severity] = frozenset(SEVERITY_ORDER)
    kinds: tuple[str, ...] = ("*",)
    groups: tuple[str, ...] = ("*",)
    emails: tuple[str, ...] = ()
    sms: tuple[str, ...] = ()

    def matches(self, alarm: Alarm) -> bool:
        return (
            alarm.severity in self.severities
            and any(fnmatch.fnmatchcase(alarm.kind.value, k) for k in self.kinds)
            and any(fnmatch.fnmatchcase(alarm.group or "", g) for g in self.groups)
        )


@attrs.frozen
class AlarmTable:
    """Event-code classification, the least severity that raises an alarm, and the
    notification rules."""

    classify: tuple[Classification, ...] = ()
    min_severity: Severity = Severity.MINOR
    rules: tuple[NotifyRule, ...] = ()

    def classification(self, event: MeterEvent) -> tuple[EventKind, Severity]:
        """The event's kind and severity: the first matching table entry, else what the
        protocol said."""
        for entry in self.classify:
            if entry.pattern.startswith("text:"):
                matched = fnmatch.fnmatch(event.text.lower(), entry.pattern[5:].lower())
            else:
                matched = fnmatch.fnmatchcase(event.code, entry.pattern)
            if matched:
                return entry.kind, entry.severity
        return event.kind, event.severity

    @classmethod
    def parse(cls, text: str, file: str = "<alarm table>") -> AlarmTable:
        parser = configparser.ConfigParser(interpolation=None, delimiters=("=",),
                                           inline_comment_prefixes=(";", "#"))
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(text, source=file)
        except configparser.Error as e:
            raise ConfigError(f"not a valid alarm table: {e}", file=file) from None
        classify = []
        if parser.has_section("classify"):
            for pattern, value in parser.items("classify"):
                parts = value.split()
                if len(parts) != 2:
                    raise ConfigError("expected KIND SEVERITY", file=file, section="classify",
                                      key=pattern)
                try:
                    classify.append(Classification(pattern, EventKind(parts[0]),
                                                   Severity(parts[1])))
                except ValueError:
                    kinds = ", ".join(k.value for k in EventKind)
                    raise ConfigError(
                        f"unknown kind or severity {value!r} (kinds: {kinds}; severities: "
                        "critical, major, minor, info)", file=file, section="classify",
                        key=pattern) from None
        min_severity = Severity.MINOR
        if parser.has_section("raise"):
            for key, value in parser.items("raise"):
                if key != "min_severity":
                    raise ConfigError("unknown key (known: min_severity)", file=file,
                                      section="raise", key=key)
                try:
                    min_severity = Severity(value.strip())
                except ValueError:
                    raise ConfigError(f"not a severity: {value!r}", file=file, section="raise",
                                      key=key) from None
        rules = []
        for section in parser.sections():
            if section in ("classify", "raise"):
                continue
            if not section.startswith("notify:"):
                raise ConfigError("unknown section (classify, raise or notify:NAME)",
                                  file=file, section=section)
            items = dict(parser.items(section))
            unknown = set(items) - {"severity", "kind", "group", "email", "sms"}
            if unknown:
                raise ConfigError("unknown key (known: severity, kind, group, email, sms)",
                                  file=file, section=section, key=sorted(unknown)[0])
            try:
                severities = frozenset(Severity(s) for s in _split(items["severity"])) \
                    if "severity" in items else frozenset(SEVERITY_ORDER)
            except ValueError:
                raise ConfigError(f"not severities: {items['severity']!r}", file=file,
                                  section=section, key="severity") from None
            rule = NotifyRule(
                name=section.split(":", 1)[1],
                severities=severities,
                kinds=tuple(_split(items.get("kind", "*"))) or ("*",),
                groups=tuple(_split(items.get("group", "*"))) or ("*",),
                emails=tuple(_split(items.get("email", ""))),
                sms=tuple(_split(items.get("sms", ""))),
            )
            if not rule.emails and not rule.sms:
                raise ConfigError("a notify rule needs email or sms targets", file=file,
                                  section=section)
            rules.append(rule)
        return cls(tuple(classify), min_severity, tuple(rules))

    @classmethod
    def load(cls, path: str | Path) -> AlarmTable:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read the alarm table: {e.strerror}",
                              file=str(path)) from None
        return cls.parse(text, str(path))


# -- alarms -------------------------------------------------------------------------------------


@attrs.frozen
class Alarm:
    meter: str
    kind: EventKind
    severity: Severity
    code: str
    time: datetime
    text: str = ""
    group: str | None = None
    raised_at: datetime = attrs.field(factory=lambda: datetime.now(UTC))
    last_time: datetime | None = None
    count: int = 1
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "meter": self.meter,
            "kind": self.kind.value,
            "severity": self.severity.value,
            "code": self.code,
            "time": self.time.isoformat(),
            "text": self.text,
            "group": self.group,
            "raised_at": self.raised_at.isoformat(),
            "last_time": (self.last_time or self.time).isoformat(),
            "count": self.count,
        }

    def subject(self) -> str:
        return f"[fep {self.severity.value}] {self.kind.value} at meter {self.meter}"

    def sms_text(self) -> str:
        when = self.time.strftime("%Y-%m-%d %H:%M:%SZ")
        return f"fep {self.severity.value.upper()}: {self.kind.value} meter {self.meter} {when}"


# -- storage ------------------------------------------------------------------------------------


def _text_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


class AlarmStore:
    """The alarm tables in the daemon's store (SQLite or PostgreSQL)."""

    def __init__(self, store: Any, node: str) -> None:
        self.store = store
        self.node = node
        self.postgres = not str(store.url).startswith("sqlite")

    def insert(self, alarm: Alarm) -> Deferred[int | None]:
        """Store a new alarm; fires with its id, or None when its event already raised one."""
        row = (alarm.meter, alarm.kind.value, alarm.severity.value, alarm.code)
        if self.postgres:
            async def pg(cursor: Any) -> int | None:
                await cursor.execute(
                    "INSERT INTO alarms (meter, kind, severity, code, event_time, text,"
                    " meter_group, raised_at, last_time, count, node)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 1, %s)"
                    " ON CONFLICT DO NOTHING RETURNING id",
                    (*row, alarm.time, alarm.text, alarm.group, alarm.raised_at, alarm.time,
                     self.node))
                found = cursor.fetchone()
                return None if found is None else int(found[0])

            result: Deferred[int | None] = self.store.interact(pg)
            return result

        def lite(conn: Any) -> int | None:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO alarms (meter, kind, severity, code, event_time, text,"
                " meter_group, raised_at, last_time, count, node)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
                (*row, _text_time(alarm.time), alarm.text, alarm.group,
                 _text_time(alarm.raised_at), _text_time(alarm.time), self.node))
            return int(cursor.lastrowid) if cursor.rowcount == 1 else None

        lite_result: Deferred[int | None] = self.store.interact(lite)
        return lite_result

    def repeat(self, alarm_id: int, when: datetime) -> Deferred[None]:
        """Count another event on an open alarm."""
        if self.postgres:
            async def pg(cursor: Any) -> None:
                await cursor.execute(
                    "UPDATE alarms SET count = count + 1,"
                    " last_time = greatest(last_time, %s) WHERE id = %s", (when, alarm_id))

            result: Deferred[None] = self.store.interact(pg)
            return result

        def lite(conn: Any) -> None:
            conn.execute("UPDATE alarms SET count = count + 1, last_time = max(last_time, ?)"
                         " WHERE id = ?", (_text_time(when), alarm_id))

        lite_result: Deferred[None] = self.store.interact(lite)
        return lite_result

    def notified(self, alarm_id: int, channel: str, target: str, outcome: str,
                 detail: str = "") -> Deferred[None]:
        now = datetime.now(UTC)
        values = (alarm_id, channel, target, outcome, detail[:500])
        if self.postgres:
            async def pg(cursor: Any) -> None:
                await cursor.execute(
                    "INSERT INTO alarm_notifications (alarm_id, channel, target, outcome,"
                    " detail, sent_at) VALUES (%s, %s, %s, %s, %s, %s)", (*values, now))

            result: Deferred[None] = self.store.interact(pg)
            return result

        def lite(conn: Any) -> None:
            conn.execute("INSERT INTO alarm_notifications (alarm_id, channel, target, outcome,"
                         " detail, sent_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (*values, _text_time(now)))

        lite_result: Deferred[None] = self.store.interact(lite)
        return lite_result

    def recent(self, limit: int = 100, severity: str | None = None,
               since: datetime | None = None) -> Deferred[list[Alarm]]:
        """The newest alarms first."""
        columns = ("id, meter, kind, severity, code, event_time, text, meter_group, raised_at,"
                   " last_time, count")
        where: list[str] = []
        params: list[Any] = []
        mark = "%s" if self.postgres else "?"
        if severity is not None:
            where.append(f"severity = {mark}")
            params.append(severity)
        if since is not None:
            where.append(f"last_time >= {mark}")
            params.append(since if self.postgres else _text_time(since))
        sql = f"SELECT {columns} FROM alarms"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY raised_at DESC, id DESC LIMIT {int(limit)}"

        def alarm(row: Sequence[Any]) -> Alarm:
            def t(v: Any) -> datetime:
                return (v if isinstance(v, datetime) else datetime.fromisoformat(v)).astimezone(UTC)

            return Alarm(meter=row[1], kind=EventKind(row[2]), severity=Severity(row[3]),
                         code=row[4], time=t(row[5]), text=row[6], group=row[7],
                         raised_at=t(row[8]), last_time=t(row[9]), count=int(row[10]),
                         id=int(row[0]))

        if self.postgres:
            async def pg(cursor: Any) -> list[Alarm]:
                await cursor.execute(sql, params)
                return [alarm(r) for r in cursor.fetchall()]

            result: Deferred[list[Alarm]] = self.store.interact(pg)
            return result

        def lite(conn: Any) -> list[Alarm]:
            return [alarm(r) for r in conn.execute(sql, params).fetchall()]

        lite_result: Deferred[list[Alarm]] = self.store.interact(lite)
        return lite_result


# -- notifiers ----------------------------------------------------------------------------------


@implementer(INotifier)
class EmailNotifier:
    """Alarm e-mail through an SMTP relay (twisted.mail's client), retried with backoff."""

    channel = "email"

    def __init__(self, reactor: IReactorTime, host: str, port: int, sender: str, *,
                 attempts: int = 3, first_delay: float = 5.0) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.sender = sender
        self.attempts = attempts
        self.first_delay = first_delay

    def message(self, alarm: Alarm, to: Sequence[str]) -> bytes:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = ", ".join(to)
        msg["Subject"] = alarm.subject()
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid(domain="fep")
        msg["X-Fep-Alarm"] = str(alarm.id)
        lines = [f"{k}: {v}" for k, v in alarm.as_dict().items() if v not in (None, "")]
        msg.set_content("\n".join(lines) + "\n")
        return msg.as_bytes()

    def notify(self, event: object, to: Sequence[str] = ()) -> Deferred[None]:
        assert isinstance(event, Alarm)
        return Deferred.fromCoroutine(self._send(event, list(to)))

    async def _send(self, alarm: Alarm, to: list[str]) -> None:
        from twisted.mail.smtp import sendmail

        data = self.message(alarm, to)

        async def once() -> None:
            await sendmail(self.host, self.sender, to, data, port=self.port,
                           requireAuthentication=False, requireTransportSecurity=False)

        await _with_retries(self.reactor, once, attempts=self.attempts,
                            first_delay=self.first_delay, meter=alarm.meter,
                            what=f"alarm e-mail to {', '.join(to)} via {self.host}:{self.port}")


@implementer(INotifier)
class SmsNotifier:
    """Alarm text messages through the SMS channel (an ISmsSender)."""

    channel = "sms"

    def __init__(self, sender: Any, reactor: IReactorTime | None = None, *,
                 attempts: int = 3, first_delay: float = 30.0) -> None:
        # Without a reactor to wait on, one attempt (the caller retries, if anyone).
        self.sender = sender
        self.reactor = reactor
        self.attempts = attempts if reactor is not None else 1
        self.first_delay = first_delay

    def notify(self, event: object, to: Sequence[str] = ()) -> Deferred[None]:
        assert isinstance(event, Alarm)

        async def send() -> None:
            # Each number on its own: one that keeps failing does not stop the others; the
            # first failure is raised once every number had its attempts.
            failures: list[BaseException] = []
            for number in to:
                async def once(number: str = number) -> None:
                    await self.sender.send(number, event.sms_text())

                try:
                    await _with_retries(self.reactor, once, attempts=self.attempts,
                                        first_delay=self.first_delay, meter=event.meter,
                                        what=f"alarm text message to {number}")
                except Exception as e:
                    failures.append(e)
            if failures:
                raise failures[0]

        return Deferred.fromCoroutine(send())


async def _with_retries(reactor: IReactorTime | None, once: Callable[[], Awaitable[None]], *,
                        attempts: int, first_delay: float, meter: str | None,
                        what: str) -> None:
    """``once()`` until it succeeds, at most ``attempts`` times, waiting ``first_delay``
    seconds (four times longer each time) between; the last failure is raised. A relay or a
    modem that is busy for a minute must not cost an operator a critical alarm."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            await once()
            return
        except Exception as e:
            if attempt == attempts or reactor is None:
                raise
            log.warn("{what} failed ({error}); retrying in {delay} s (attempt {attempt} of "
                     "{attempts})", what=what, error=e, delay=delay, attempt=attempt,
                     attempts=attempts, meter=meter)
            await deferLater(reactor, delay)
            delay *= 4


# -- the engine ---------------------------------------------------------------------------------


@attrs.define
class _Open:
    alarm_id: int
    time: datetime


class AlarmEngine:
    """Classifies committed events, raises, debounces, stores and notifies alarms."""

    def __init__(self, ctx: OperatorContext, table: AlarmTable, *, debounce: float,
                 email: EmailNotifier | None = None) -> None:
        self.ctx = ctx
        self.table = table
        self.debounce = timedelta(seconds=debounce)
        self.email = email
        self.alarms = AlarmStore(ctx.store, ctx.node)
        self._open: dict[tuple[str, EventKind], _Open] = {}
        self._seen: OrderedDict[tuple[str, str, datetime], None] = OrderedDict()
        self._sending: set[Deferred[None]] = set()
        self.raised: Counter[str] = Counter()
        self.debounced = 0
        self.notifications: Counter[str] = Counter()

    @classmethod
    def from_config(cls, ctx: OperatorContext, config: OperatorConfig) -> AlarmEngine:
        section = config.alarms
        table = AlarmTable.load(section.table) if section.table else AlarmTable()
        email = EmailNotifier(ctx.reactor, section.smtp_host, section.smtp_port,
                              section.mail_from)
        return cls(ctx, table, debounce=section.debounce, email=email)

    async def start(self) -> None:
        """Pick up the alarms still open (within the debounce time) from the store. (After
        a crash, a replayed event that had only repeated an open alarm is counted on it
        again: the count may run high, an alarm is never raised or notified twice.)"""
        since = datetime.now(UTC) - self.debounce
        for alarm in reversed(await self.alarms.recent(limit=10_000, since=since)):
            assert alarm.id is not None
            self._open[(alarm.meter, alarm.kind)] = _Open(alarm.id, alarm.last_time or alarm.time)
            # A replay of the event that raised it is not a repeat.
            self._seen[(alarm.meter, alarm.code, alarm.time)] = None

    async def stop(self) -> None:
        """Wait for notifications under way."""
        for d in list(self._sending):
            try:
                await d
            except Exception:
                pass

    def stats(self) -> dict[str, Any]:
        return {"raised": dict(self.raised), "debounced": self.debounced,
                "notifications": dict(self.notifications)}

    def recent(self, limit: int = 100, severity: str | None = None) -> Deferred[list[Alarm]]:
        return self.alarms.recent(limit=limit, severity=severity)

    # -- the router hook -----------------------------------------------------------------

    def committed(self, records: Sequence[Record]) -> Deferred[None] | None:
        events = [r for r in records if isinstance(r, MeterEvent)]
        if not events:
            return None
        return Deferred.fromCoroutine(self.take(events))

    async def take(self, events: Sequence[MeterEvent]) -> None:
        for event in sorted(events, key=lambda e: e.time):
            identity = (event.meter, event.code, event.time)
            if identity in self._seen:
                continue
            self._seen[identity] = None
            if len(self._seen) > SEEN_EVENTS:
                self._seen.popitem(last=False)
            try:
                await self._take(event)
            except FepError as e:
                log.error("alarm for meter {meter} event {code} not stored: {error}",
                          meter=event.meter, code=event.code, error=e)

    async def _take(self, event: MeterEvent) -> None:
        kind, severity = self.table.classification(event)
        if _rank(severity) < _rank(self.table.min_severity):
            return
        key = (event.meter, kind)
        open_alarm = self._open.get(key)
        if open_alarm is not None and abs(event.time - open_alarm.time) < self.debounce:
            self.debounced += 1
            open_alarm.time = max(open_alarm.time, event.time)
            await self.alarms.repeat(open_alarm.alarm_id, event.time)
            log.info("{kind} at meter {meter} repeats alarm {id}; not notified again",
                     kind=kind.value, meter=event.meter, id=open_alarm.alarm_id)
            return
        meter = self.ctx.directory.get(event.meter)
        alarm = Alarm(meter=event.meter, kind=kind, severity=severity, code=event.code,
                      time=event.time, text=event.text,
                      group=meter.metadata.get("group") if meter is not None else None)
        alarm_id = await self.alarms.insert(alarm)
        if alarm_id is None:
            return  # this event raised its alarm before (a replay, a re-read log)
        alarm = attrs.evolve(alarm, id=alarm_id)
        self._open[key] = _Open(alarm_id, event.time)
        self.raised[severity.value] += 1
        log.warn("alarm {id}: {severity} {kind} at meter {meter} ({text})", id=alarm_id,
                 severity=severity.value, kind=kind.value, meter=event.meter, text=event.text,
                 code=event.code)
        self._notify(alarm)

    def _notify(self, alarm: Alarm) -> None:
        emails: list[str] = []
        numbers: list[str] = []
        for rule in self.table.rules:
            if rule.matches(alarm):
                emails.extend(e for e in rule.emails if e not in emails)
                numbers.extend(n for n in rule.sms if n not in numbers)
        if emails:
            if self.email is None:
                self._record(alarm, "email", ", ".join(emails), "unavailable", "no SMTP relay")
            else:
                self._send(alarm, self.email, "email", emails, ", ".join(emails))
        if numbers:
            if self.ctx.sms is None:
                log.warn("alarm {id}: no SMS channel is wired into this daemon; {count} "
                         "text messages not sent", id=alarm.id, count=len(numbers),
                         meter=alarm.meter)
                for number in numbers:
                    self._record(alarm, "sms", number, "unavailable", "no SMS channel")
            else:
                notifier = SmsNotifier(self.ctx.sms, self.ctx.reactor)
                for number in numbers:
                    self._send(alarm, notifier, "sms", [number], number)

    def _send(self, alarm: Alarm, notifier: Any, channel: str, to: list[str],
              target: str) -> None:
        d: Deferred[None] = notifier.notify(alarm, to)
        self._sending.add(d)

        def sent(_: object) -> None:
            log.info("alarm {id} sent by {channel} to {target}", id=alarm.id, channel=channel,
                     target=target, meter=alarm.meter)
            self._record(alarm, channel, target, "sent")

        def failed(failure: Any) -> None:
            log.error("alarm {id} could not be sent by {channel} to {target}: {error}",
                      id=alarm.id, channel=channel, target=target,
                      error=failure.getErrorMessage(), meter=alarm.meter)
            self._record(alarm, channel, target, "failed", failure.getErrorMessage())

        d.addCallbacks(sent, failed)
        d.addBoth(lambda _: self._sending.discard(d))

    def _record(self, alarm: Alarm, channel: str, target: str, outcome: str,
                detail: str = "") -> None:
        self.notifications[f"{channel}:{outcome}"] += 1
        assert alarm.id is not None
        d = self.alarms.notified(alarm.id, channel, target, outcome, detail)
        d.addErrback(lambda f: log.failure("notification of alarm {id} not recorded", f,
                                           id=alarm.id))
