"""What the DLMS sessions of a process share: the invocation counters, fep's system title,
the security events of refused downgrades (``DlmsContext``, ``SecurityEvents``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from twisted.logger import Logger

from fep.interfaces import IRecordSink
from fep.protocols.dlms.identity import DEFAULT_SYSTEM_TITLE, DOWNGRADE_CODE, downgrade_event

log = Logger(namespace="fep.protocols.dlms")


class SecurityEvents:
    """Refused downgrades: every one counted in ``downgrades`` and logged; a MeterEvent
    (fep.protocols.dlms.identity.downgrade_event) submitted to ``sink`` at most once per
    meter per ``interval`` seconds (an attacker's flood stays one alarm, not a table of
    rows)."""

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

    def downgrade(self, meter: str, where: str, detail: str) -> None:
        self.downgrades += 1
        log.error(
            "DLMS security: unciphered APDU from meter {meter} refused ({where}): {detail}",
            meter=meter,
            where=where,
            detail=detail,
            security_event=DOWNGRADE_CODE,
        )
        now = self.clock()
        last = self._last.get(meter)
        if self.sink is None or (last is not None and now - last < self.interval):
            return
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[meter] = now
        event = downgrade_event(meter, where, detail, datetime.fromtimestamp(now, UTC))
        d = self.sink.submit([event])
        d.addErrback(lambda f: log.failure("security event of {meter} not spooled", f, meter=meter))


class DlmsContext:
    """What the DLMS sessions of a process share: the invocation counters (an
    IInvocationCounters; None refuses meters with keys), the client system title used unless
    a meter's ``dlms_system_title`` says otherwise, and the security events of pulls."""

    def __init__(
        self,
        counters: Any,
        system_title: bytes = DEFAULT_SYSTEM_TITLE,
        security: SecurityEvents | None = None,
    ) -> None:
        if len(system_title) != 8:
            raise ValueError("a DLMS system title is 8 bytes")
        self.counters = counters
        self.system_title = system_title
        self.security = security if security is not None else SecurityEvents()
