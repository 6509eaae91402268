"""The daemon's statistics in one place: the console's ``stats()``, the API's /stats, the
status page and the metrics all read them from here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs

from fep.operator.context import OperatorContext


def router_stats(router: Any) -> dict[str, int]:
    names = ("submitted", "spooled", "committed", "rejected", "store_failures")
    out = {name: int(getattr(router, name, 0)) for name in names}
    depth = getattr(router, "depth", None)
    out["spool_depth"] = int(depth()) if callable(depth) else 0
    return out


def gather(ctx: OperatorContext) -> dict[str, Any]:
    """Everything countable now, as plain JSON values."""
    now = datetime.now(UTC)
    activity = ctx.activity
    reads_ok = sum(n for (_, outcome), n in activity.reads.items() if outcome == "ok")
    reads_failed = sum(n for (_, outcome), n in activity.reads.items() if outcome == "failed")
    last = list(activity.last.values())
    stats: dict[str, Any] = {
        "node": ctx.node,
        "time": now.isoformat(),
        "uptime_s": round((now - ctx.started).total_seconds(), 1),
        "meters": len(ctx.directory),
        "meters_ok": sum(1 for s in last if s.ok),
        "meters_failing": sum(1 for s in last if not s.ok),
        "meters_never_read": max(len(ctx.directory) - len(last), 0),
        "sessions": len(ctx.live_sessions()),
        "reads_ok": reads_ok,
        "reads_failed": reads_failed,
        "reads_by_protocol": [
            {"protocol": p, "outcome": o, "count": n}
            for (p, o), n in sorted(activity.reads.items())
        ],
        "errors_by_protocol": [
            {"protocol": p, "error": e, "count": n}
            for (p, e), n in sorted(activity.errors.items())
        ],
        "router": router_stats(ctx.router),
    }
    if ctx.push_stats is not None:
        stats["dlms_push"] = attrs.asdict(ctx.push_stats)
    if ctx.alarms is not None:
        stats["alarms"] = ctx.alarms.stats()
    if ctx.northbound is not None:
        stats["northbound"] = ctx.northbound.stats()
    if ctx.scheduler is not None:
        stats["jobs"] = dict(ctx.scheduler.job_outcomes())
    return stats
