"""What the DLMS sessions of a process share: the invocation counters, fep's system title,
the security events of refused downgrades (``DlmsContext``, ``SecurityEvents``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fep.interfaces import IRecordSink
from fep.model import MeterEvent
from fep.protocols.dlms.identity import DEFAULT_SYSTEM_TITLE, downgrade_event


class SecurityEvents:
    """Refused downgrades, sans-IO: every one counted in ``downgrades``; a MeterEvent
    (fep.protocols.dlms.identity.downgrade_event) for ``sink`` at most once per meter per
    ``interval`` seconds (an attacker's flood stays one alarm, not a table of rows). The
    caller logs each refusal and submits the event (session.py's ``report_downgrade``)."""

    def __init__(
        self,
        sink: IRecordSink | None = None,
        *,
        clock: Callable[[], float] = time.time,
        interval: float = 60.0,
    ) -> None:
        self.sink = sink
        self.clock = clock
        self.interval = interval
        self.downgrades = 0
        self._last: dict[str, float] = {}

    def count_downgrade(self, meter: str, where: str, detail: str) -> MeterEvent | None:
        """Count one refused downgrade; the event to submit to ``sink``, or None (no sink,
        or one was raised for ``meter`` within ``interval``)."""
        self.downgrades += 1
        now = self.clock()
        last = self._last.get(meter)
        if self.sink is None or (last is not None and now - last < self.interval):
            return None
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[meter] = now
        return downgrade_event(meter, where, detail, datetime.fromtimestamp(now, UTC))


class DlmsContext:
    """What the DLMS sessions of a process share: the invocation counters (an
    IInvocationCounters; None refuses meters with keys), the client system title used unless
    a meter's ``dlms_system_title`` says otherwise, and the security events of pulls."""

    def __init__(
        self,
        counters: Any,
        system_title: bytes = DEFAULT_SYSTEM_TITLE,
        security: SecurityEvents | None = None,
        layouts: Any = None,
    ) -> None:
        if len(system_title) != 8:
            raise ValueError("a DLMS system title is 8 bytes")
        self.counters = counters
        self.system_title = system_title
        self.security = security if security is not None else SecurityEvents()
        # The push list layouts (layouts.LayoutTable; None: the shipped ones).
        self.layouts = layouts
