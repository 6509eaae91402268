"""Operator notifications by SMS: an INotifier that texts alarms to a list of numbers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from fep.collect.sms import SmsSender
from fep.errors import ChannelError
from fep.interfaces import INotifier
from fep.model import MeterEvent

log = Logger(namespace="fep.operator.sms_notify")


def alarm_text(event: object, max_length: int = 300) -> str:
    """The text of one alarm: ``MAJOR meter-17 cover-open: Terminal cover opened
    2024-05-17 10:30Z`` for a MeterEvent, ``str(event)`` for anything else; cut to
    ``max_length`` characters."""
    if isinstance(event, MeterEvent):
        text = (
            f"{event.severity.value.upper()} {event.meter} {event.kind.value}"
            f"{': ' + event.text if event.text else ''} {event.time:%Y-%m-%d %H:%M}Z"
        )
    else:
        text = str(event)
    if len(text) > max_length:
        text = text[: max_length - 1] + "…"
    return text


@implementer(INotifier)
class SmsNotifier:
    """Sends each alarm to every number; one number failing does not stop the others, and
    the Deferred fails (ChannelError naming them) when any failed."""

    def __init__(self, channel: SmsSender, numbers: Sequence[str], max_length: int = 300):
        self.channel = channel
        self.numbers = [n.strip() for n in numbers if n.strip()]
        self.max_length = max_length
        self.sent = 0
        self.failed = 0

    def notify(self, event: object) -> Deferred[None]:
        text = alarm_text(event, self.max_length)
        sends = [self.channel.send(number, text) for number in self.numbers]
        result: Deferred[None] = Deferred()

        def done(outcomes: list[tuple[bool, Any]]) -> None:
            failed = [
                (number, value)
                for number, (ok, value) in zip(self.numbers, outcomes, strict=True)
                if not ok
            ]
            self.sent += len(outcomes) - len(failed)
            self.failed += len(failed)
            if not failed:
                result.callback(None)
                return
            reasons = "; ".join(
                f"{number}: {value.getErrorMessage() if isinstance(value, Failure) else value}"
                for number, value in failed
            )
            log.warn("alarm SMS not sent to {reasons}", reasons=reasons)
            result.errback(
                ChannelError(f"alarm SMS not sent to {reasons}", route=self.channel.route)
            )

        DeferredList(sends, consumeErrors=True).addCallback(done)
        return result
