"""Rate-limited logging of repeated bad input: the first few events of a kind are logged as
they come, the rest of a time window are counted and summed up in one event ("N more like
this in the last T s"), so that a stranger sending junk cannot fill the disk with log lines.

One home for it: the listeners' refusals, GPRS identification failures and push decode errors
all log through a ``RateLimitedLog``.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

# Kinds of event remembered at once; past that, windows without suppressed events are dropped
# first (a key made from a stranger's input must not grow this without end).
MAX_KINDS = 1024


@attrs.define
class _Window:
    started: float
    emitted: int = 0
    suppressed: int = 0
    last_format: str = ""
    last_fields: dict[str, Any] = attrs.field(factory=dict)
    level: LogLevel = LogLevel.warn
    timer: Any = None


class RateLimitedLog:
    """Logs through ``logger``: per kind of event (``kind``, else the format string), at most
    ``burst`` events every ``interval`` seconds; the ones past that are counted, and when the
    window ends one event says how many there were, with the last one's fields and
    ``log_suppressed``/``log_window`` set. ``suppressed`` counts every event not logged.

    With a ``clock`` (an IReactorTime) the summary is logged when the window ends; without
    one (sans-reactor code) it is logged with the next event of its kind after the window,
    or by ``flush``."""

    def __init__(
        self,
        logger: Logger,
        clock: IReactorTime | None = None,
        *,
        interval: float = 60.0,
        burst: int = 5,
    ) -> None:
        self.logger = logger
        self.clock = clock
        self.interval = interval
        self.burst = burst
        self.suppressed = 0
        self._windows: dict[str, _Window] = {}

    def debug(self, format: str, *, kind: str | None = None, **fields: Any) -> None:
        self.emit(LogLevel.debug, format, kind=kind, **fields)

    def info(self, format: str, *, kind: str | None = None, **fields: Any) -> None:
        self.emit(LogLevel.info, format, kind=kind, **fields)

    def warn(self, format: str, *, kind: str | None = None, **fields: Any) -> None:
        self.emit(LogLevel.warn, format, kind=kind, **fields)

    def error(self, format: str, *, kind: str | None = None, **fields: Any) -> None:
        self.emit(LogLevel.error, format, kind=kind, **fields)

    def emit(self, level: LogLevel, format: str, *, kind: str | None = None,
             **fields: Any) -> None:
        key = kind if kind is not None else format
        now = self._now()
        window = self._windows.get(key)
        if window is not None and now - window.started >= self.interval:
            if window.timer is not None and window.timer.active():
                window.timer.cancel()
            self._close_window(key)
            window = None
        if window is None:
            self._forget_some()
            window = self._windows[key] = _Window(started=now)
        if window.emitted < self.burst:
            window.emitted += 1
            self.logger.emit(level, format, **fields)
            return
        window.suppressed += 1
        self.suppressed += 1
        window.last_format, window.last_fields, window.level = format, fields, level
        if window.timer is None and self.clock is not None:
            delay = max(0.0, window.started + self.interval - now)
            window.timer = self.clock.callLater(delay, self._close_window, key)

    def _close_window(self, key: str) -> None:
        window = self._windows.pop(key, None)
        if window is None:
            return
        window.timer = None
        if window.suppressed:
            fields = dict(window.last_fields)
            fields.update(log_suppressed=window.suppressed, log_window=self.interval)
            self.logger.emit(
                window.level,
                window.last_format
                + " ({log_suppressed} more like this in the last {log_window:.0f} s)",
                **fields,
            )

    def _forget_some(self) -> None:
        if len(self._windows) < MAX_KINDS:
            return
        now = self._now()
        for key, window in list(self._windows.items()):
            if now - window.started >= self.interval:
                if window.timer is not None and window.timer.active():
                    window.timer.cancel()
                self._close_window(key)
        if len(self._windows) >= MAX_KINDS:
            # Still full of live windows: summarise them now rather than grow.
            for key in list(self._windows):
                window = self._windows[key]
                if window.timer is not None and window.timer.active():
                    window.timer.cancel()
                self._close_window(key)

    def _now(self) -> float:
        return float(self.clock.seconds()) if self.clock is not None else time.monotonic()

    def flush(self) -> None:
        """Log every pending summary now (at shutdown) and start afresh."""
        for key in list(self._windows):
            window = self._windows[key]
            if window.timer is not None and window.timer.active():
                window.timer.cancel()
            self._close_window(key)
