"""What fep does with SMS: field-device alarm and status texts become MeterEvents by
configurable rules, and a wake-up text asks a meter's GPRS modem to dial in.

Rules are lines ``<regular expression> => <event kind> [<severity>] [<code>]`` (the ``rules``
key of ``[sms]``), tried in order against the text of a message from a meter's
``sms_number``; the first that matches makes the event. A named group ``text`` in the
expression gives the event's text (else the whole message), a group ``code`` its code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, timedelta
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from fep.channels.modem.sms import SmsSettings
from fep.errors import ChannelError, ConfigError
from fep.interfaces import IRecordSink
from fep.model import EventKind, Meter, MeterEvent, Severity
from fep.options import Option, Section, choice, expects, positive_float, text, yes_no

log = Logger(namespace="fep.collect.sms")

SMS_NUMBER_KEY = "sms_number"
WAKEUP_TEXT_KEY = "sms_wakeup_text"


@attrs.frozen
class SmsRule:
    """One rule: a pattern and the event it makes."""

    pattern: re.Pattern[str]
    kind: EventKind
    severity: Severity = Severity.MAJOR
    code: str | None = None

    def event(self, meter: str, message: Any) -> MeterEvent | None:
        """The event ``message`` (an IncomingSms) makes for ``meter``, or None."""
        m = self.pattern.search(message.text)
        if m is None:
            return None
        groups = m.groupdict()
        text = (groups.get("text") or message.text).strip()
        code = groups.get("code") or self.code or self.kind.value
        return MeterEvent(
            meter,
            code,
            self.kind,
            self.severity,
            message.timestamp.astimezone(UTC),
            text,
            source=f"sms:{message.sender}",
        )


def parse_rule(line: str) -> SmsRule:
    """``ALARM (?P<text>.*) => other major ALARM`` -> SmsRule; ValueError says what is
    wrong."""
    pattern, arrow, target = line.rpartition("=>")
    if not arrow or not pattern.strip():
        raise ValueError(f"rule {line.strip()!r}: expected '<pattern> => <kind> [severity] [code]'")
    words = target.split()
    if not words or len(words) > 3:
        raise ValueError(f"rule {line.strip()!r}: expected '=> <kind> [severity] [code]'")
    try:
        kind = EventKind(words[0].lower())
    except ValueError:
        known = ", ".join(k.value for k in EventKind)
        raise ValueError(f"rule {line.strip()!r}: unknown event kind {words[0]!r} ({known})")
    severity = Severity.MAJOR
    code = None
    rest = words[1:]
    if rest and rest[0].lower() in {s.value for s in Severity}:
        severity = Severity(rest.pop(0).lower())
    if rest:
        code = rest.pop(0)
    if rest:
        raise ValueError(f"rule {line.strip()!r}: unknown severity {words[1]!r}")
    try:
        compiled = re.compile(pattern.strip(), re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"rule {line.strip()!r}: bad pattern: {error}")
    return SmsRule(compiled, kind, severity, code)


def parse_rules(text: str | Iterable[str]) -> list[SmsRule]:
    """Every non-empty, non-comment line of ``text`` as a rule."""
    lines = text.splitlines() if isinstance(text, str) else list(text)
    return [parse_rule(line) for line in lines if line.strip() and not line.strip().startswith("#")]


def number_key(number: str) -> str:
    """Phone numbers compared without spaces, dashes or the leading ``+``/``00``."""
    digits = re.sub(r"[\s\-()/]", "", number)
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    return digits


class MeterSource(Protocol):
    def all(self) -> list[Meter]: ...


class SmsEventRouter:
    """A message handler for the SMS channel: finds the meter by its ``sms_number``, applies
    the rules and submits the events to the record sink. The channel deletes the message
    from the modem only once the sink has them durably (the Deferred this returns)."""

    def __init__(self, rules: Sequence[SmsRule], meters: MeterSource, sink: IRecordSink) -> None:
        self.rules = list(rules)
        self.meters = meters
        self.sink = sink
        self.stats = {"events": 0, "unknown_sender": 0, "unmatched": 0}

    def meter_for(self, sender: str) -> Meter | None:
        key = number_key(sender)
        for meter in self.meters.all():
            number = meter.metadata.get(SMS_NUMBER_KEY)
            if number and number_key(number) == key:
                return meter
        return None

    def __call__(self, message: Any) -> Deferred[None] | None:
        meter = self.meter_for(message.sender)
        if meter is None:
            self.stats["unknown_sender"] += 1
            log.info(
                "SMS from {sender}, no meter has this sms_number: {text!r}",
                sender=message.sender,
                text=message.text[:160],
            )
            return None
        for rule in self.rules:
            event = rule.event(meter.id, message)
            if event is not None:
                self.stats["events"] += 1
                log.info(
                    "SMS from meter {meter} ({sender}) -> {kind} {severity} {code}",
                    meter=meter.id,
                    sender=message.sender,
                    kind=event.kind.value,
                    severity=event.severity.value,
                    code=event.code,
                )
                return self.sink.submit([event])
        self.stats["unmatched"] += 1
        log.info(
            "SMS from meter {meter} ({sender}) matches no rule: {text!r}",
            meter=meter.id,
            sender=message.sender,
            text=message.text[:160],
        )
        return None


class SmsSender(Protocol):
    route: str

    def send(
        self, number: str, text: str, *, flash: bool = False, report: bool | None = None
    ) -> Deferred[Any]: ...


class SmsWakeUp:
    """The wake-up primitive for the collection engine: ``wake_up(meter)`` sends the wake-up
    text (the meter's ``sms_wakeup_text``, else the configured one) to its ``sms_number``;
    the meter's GPRS modem then dials in and the push session takes over."""

    def __init__(self, channel: SmsSender, text: str = "WAKEUP", flash: bool = False) -> None:
        self.channel = channel
        self.text = text
        self.flash = flash

    def wake_up(self, meter: Meter) -> Deferred[Any]:
        """Fires with the OutgoingSms once the modem took the message; fails with
        ChannelError naming the meter when it has no number or the modem refuses."""
        number = meter.metadata.get(SMS_NUMBER_KEY)
        if not number:
            d: Deferred[Any] = Deferred()
            d.errback(
                ChannelError(
                    f"meter {meter.id} has no {SMS_NUMBER_KEY} to send a wake-up SMS to",
                    route=self.channel.route,
                )
            )
            return d
        text = meter.metadata.get(WAKEUP_TEXT_KEY) or self.text
        log.info("wake-up SMS to meter {meter} at {number}", meter=meter.id, number=number)
        return self.channel.send(number, text, flash=self.flash)


WakeUp = Callable[[Meter], Deferred[Any]]


@expects("rule lines '<pattern> => <kind> [severity] [code]'")
def rule_lines(text: str) -> tuple[str, ...]:
    """``[sms] rules``: the rule lines (``_sms`` parses them into rules)."""
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@attrs.frozen
class SmsSection:
    """``[sms]``: the SMS modem (``channel_settings``), its rules and the wake-up text."""

    port: str
    mode: str
    pin: str = attrs.field(repr=False)
    smsc: str
    memory: str
    delivery_reports: bool
    validity: float
    sweep_interval: float
    command_timeout: float
    send_timeout: float
    wakeup_text: str
    # the rule lines as configured, and the rules they make
    rules: tuple[str, ...]
    sim_wait: float = 60.0
    event_rules: tuple[SmsRule, ...] = ()

    def channel_settings(self) -> SmsSettings:
        """How the SMS channel runs the modem at ``port``."""
        return SmsSettings(
            self.port,
            mode=self.mode,
            pin=self.pin or None,
            smsc=self.smsc or None,
            memory=self.memory,
            delivery_reports=self.delivery_reports,
            validity=timedelta(seconds=self.validity),
            sweep_interval=self.sweep_interval,
            command_timeout=self.command_timeout,
            send_timeout=self.send_timeout,
            sim_wait=self.sim_wait,
        )


def _sms(rules: tuple[str, ...], **values: Any) -> SmsSection:
    try:
        parsed = tuple(parse_rules(rules))
    except ValueError as e:
        raise ConfigError(f"expected rule lines '<pattern> => <kind> [severity] [code]' "
                          f"({e})", key="rules") from None
    return SmsSection(rules=rules, event_rules=parsed, **values)


SMS = Section("sms", {
    "port": Option(
        text,
        "",
        "route of the GSM modem for SMS, e.g. serial:/dev/ttyUSB2:115200:8N1; empty: no SMS",
    ),
    "mode": Option(choice("pdu", "text"), "pdu", "pdu (exact, any text) or text (AT+CMGF=1)"),
    "pin": Option(text, "", "SIM PIN when the SIM asks for one (kept out of logs)"),
    "smsc": Option(text, "", "service centre number; empty: the one stored on the SIM"),
    "memory": Option(text, "SM", "message memory to read and store in (SM, ME, MT)"),
    "delivery_reports": Option(yes_no, True, "ask for delivery reports of sent messages"),
    "validity": Option(positive_float, 86400.0, "seconds the network tries to deliver"),
    "sweep_interval": Option(positive_float, 300.0, "seconds between reads of the memory"),
    "command_timeout": Option(positive_float, 10.0, "seconds the modem has per command"),
    "send_timeout": Option(positive_float, 60.0, "seconds the modem has to send one part"),
    "sim_wait": Option(positive_float, 60.0,
                       "seconds a busy or not-ready SIM is waited for (after a SIM change)"),
    "wakeup_text": Option(text, "WAKEUP", "text of the wake-up SMS (meter: sms_wakeup_text)"),
    "rules": Option(
        rule_lines,
        "",
        "one rule a line: <regular expression> => <event kind> [severity] [code]; the first "
        "that matches a message from a meter's sms_number makes a MeterEvent",
    ),
}, _sms)
