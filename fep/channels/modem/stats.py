"""Modem call records and their statistics per line and per site (attempts, connects,
durations, result codes): one ``ModemCall`` per dial attempt, kept by the store."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

import attrs


class CallOutcome(enum.Enum):
    """How a dial attempt ended, as the retry policy sees it."""

    COMPLETED = "completed"  # connected, session done, hung up
    SESSION_FAILED = "session failed"  # connected, the meter session failed (not the line)
    CARRIER_LOST = "carrier lost"  # connected, then NO CARRIER mid-session
    BUSY = "busy"
    NO_ANSWER = "no answer"
    NO_CARRIER = "no carrier"  # the call never connected (no modem answered, handshake failed)
    NO_DIALTONE = "no dialtone"  # line fault
    ERROR = "error"  # the modem refused the dial command
    TIMEOUT = "timeout"  # no result code in time
    CANCELLED = "cancelled"

    @property
    def connected(self) -> bool:
        return self in (
            CallOutcome.COMPLETED, CallOutcome.SESSION_FAILED, CallOutcome.CARRIER_LOST
        )


@attrs.frozen
class ModemCall:
    """One dial attempt: the line, the number and the site it serves, when it started, how
    long it held the line and how long it was connected, the modem's result line and the
    outcome."""

    line: str
    number: str
    site: str
    started: datetime
    seconds: float
    connected_seconds: float
    result: str
    outcome: CallOutcome
    error: str | None = None


@attrs.define
class CallStats:
    """Totals over calls of one line or one site."""

    key: str
    attempts: int = 0
    connects: int = 0
    seconds: float = 0.0
    connected_seconds: float = 0.0
    outcomes: Counter[str] = attrs.Factory(Counter)

    def add(self, call: ModemCall) -> None:
        self.attempts += 1
        self.connects += int(call.outcome.connected)
        self.seconds += call.seconds
        self.connected_seconds += call.connected_seconds
        self.outcomes[call.outcome.value] += 1


def call_stats(calls: Iterable[ModemCall], by: str) -> dict[str, CallStats]:
    """Totals per ``line`` or per ``site``."""
    if by not in ("line", "site"):
        raise ValueError(f"statistics by {by!r}: line or site")
    totals: dict[str, CallStats] = {}
    for call in calls:
        key = call.line if by == "line" else call.site
        totals.setdefault(key, CallStats(key)).add(call)
    return totals
