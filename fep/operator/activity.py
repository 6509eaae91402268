"""Communication activity as the operator sees it: reads under way, each meter's last
outcome, success rate per minute, errors by protocol and outcomes by channel.

The collection engine reports every job's meter session to it (``read_started``/
``read_finished``), and so do on-demand reads. Everything is in memory and bounded (a day
of per-minute buckets).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from zope.interface import implementer

from fep.model import Meter
from fep.operator.interfaces import ISessionRegistry, SessionInfo

BUCKET = timedelta(minutes=1)
KEEP_BUCKETS = 24 * 60


@attrs.define
class MeterStatus:
    """The last communication with one meter."""

    meter: str
    route: str
    protocol: str
    ok: bool
    time: datetime
    error: str | None = None
    records: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "meter": self.meter,
            "route": self.route,
            "protocol": self.protocol,
            "ok": self.ok,
            "time": self.time.isoformat(),
            "error": self.error,
            "records": self.records,
        }


@attrs.define
class Bucket:
    start: datetime
    ok: int = 0
    failed: int = 0


def channel_of(route: str) -> str:
    """A route's channel: the route without its per-meter parts (``tcp:host=H:port=P`` ->
    ``tcp:H:P``), so meters sharing a line or a concentrator group together."""
    scheme, _, rest = route.partition(":")
    if not rest:
        return route
    parts = rest.split(":")
    named = dict(p.split("=", 1) for p in parts if "=" in p)
    plain = [p for p in parts if "=" not in p]
    if scheme in ("tcp", "tls") and "host" in named:
        return f"{scheme}:{named['host']}:{named.get('port', '')}"
    if scheme in ("tcp", "tls") and len(plain) >= 2:
        return f"{scheme}:{plain[0]}:{plain[1]}"
    return f"{scheme}:{plain[0]}" if plain else route


@implementer(ISessionRegistry)
class Activity:
    """What the meter sessions did; also the registry of polls under way."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._open: dict[str, SessionInfo] = {}
        self.last: dict[str, MeterStatus] = {}
        self.buckets: deque[Bucket] = deque(maxlen=KEEP_BUCKETS)
        self.reads: Counter[tuple[str, str]] = Counter()  # (protocol, ok|failed)
        self.errors: Counter[tuple[str, str]] = Counter()  # (protocol, error type)
        self.by_channel: dict[str, Counter[str]] = {}

    # -- reports -------------------------------------------------------------------------

    def read_started(self, meter: Meter) -> None:
        self._open[meter.id] = SessionInfo(
            meter=meter.id, route=meter.route, protocol=meter.protocol, started=self._clock()
        )

    def read_finished(
        self, meter: Meter, error: BaseException | None = None, records: int = 0
    ) -> None:
        self._open.pop(meter.id, None)
        now = self._clock()
        ok = error is None
        self.last[meter.id] = MeterStatus(
            meter.id, meter.route, meter.protocol, ok, now,
            None if error is None else f"{type(error).__name__}: {error}", records,
        )
        self.reads[(meter.protocol, "ok" if ok else "failed")] += 1
        if error is not None:
            self.errors[(meter.protocol, type(error).__name__)] += 1
        channel = self.by_channel.setdefault(channel_of(meter.route), Counter())
        channel["ok" if ok else "failed"] += 1
        bucket = self._bucket(now)
        if ok:
            bucket.ok += 1
        else:
            bucket.failed += 1

    def _bucket(self, now: datetime) -> Bucket:
        start = now.replace(second=0, microsecond=0)
        if not self.buckets or self.buckets[-1].start < start:
            self.buckets.append(Bucket(start))
        return self.buckets[-1]

    # -- views ---------------------------------------------------------------------------

    def sessions(self) -> list[SessionInfo]:
        return sorted(self._open.values(), key=lambda s: (s.started, s.meter or ""))

    def success_rate(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Per-minute buckets: start, ok, failed, rate (None without reads)."""
        out = []
        for b in self.buckets:
            if since is not None and b.start < since:
                continue
            total = b.ok + b.failed
            out.append({
                "start": b.start.isoformat(),
                "ok": b.ok,
                "failed": b.failed,
                "rate": None if total == 0 else b.ok / total,
            })
        return out

    def channels(self) -> list[dict[str, Any]]:
        """Outcomes per channel, with the meters on it now and their last outcomes."""
        meters: dict[str, list[MeterStatus]] = {}
        for status in self.last.values():
            meters.setdefault(channel_of(status.route), []).append(status)
        open_by_channel = Counter(channel_of(s.route) for s in self._open.values())
        out = []
        for name in sorted(set(self.by_channel) | set(meters) | set(open_by_channel)):
            counts = self.by_channel.get(name, Counter())
            statuses = meters.get(name, [])
            last = max((s.time for s in statuses), default=None)
            out.append({
                "channel": name,
                "reads_ok": counts["ok"],
                "reads_failed": counts["failed"],
                "meters": len(statuses),
                "meters_failing": sum(1 for s in statuses if not s.ok),
                "sessions": open_by_channel[name],
                "last": last.isoformat() if last is not None else None,
            })
        return out
