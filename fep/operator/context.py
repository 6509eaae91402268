"""What the operator tier works with: the daemon's store, router, meter directory and
activity, and the plug points other parts of fep fill in when they are wired.

``OperatorContext(store, router, directory, sessions=None, scheduler=None, sms=None)``: the
console, the API, the status page, metrics and alarms all take one of these, so a test builds
one from fakes and the daemon builds one from its services.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import attrs

from fep.directory import MeterDirectory
from fep.interfaces import IMeterProtocol, IMeterReader, IRecordSink, IStore
from fep.operator.activity import Activity
from fep.operator.interfaces import IScheduler, ISessionRegistry, ISmsSender, SessionInfo
from fep.protocols.registry import meter_protocol
from fep.reactors import IFepReactor


def _or_global_reactor(reactor: IFepReactor | None) -> IFepReactor:
    """The reactor given, else the global one (imported when first needed)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        return cast(IFepReactor, default_reactor)
    return reactor


@attrs.define(eq=False)
class OperatorContext:
    """The daemon as the operator tier sees it.

    Plug points waiting for other parts of fep (None until wired):
    - ``sessions``: an ISessionRegistry of live inbound sessions (the GPRS SessionRegistry);
      polls under way are always listed from ``activity``.
    - ``scheduler``: an IScheduler (tasks, jobs, run now) from the collection engine.
    - ``sms``: an ISmsSender (the SMS channel) for alarm notifications.
    """

    store: IStore
    router: IRecordSink
    directory: MeterDirectory
    reactor: IFepReactor = attrs.field(default=None, converter=_or_global_reactor)
    node: str = "fep"
    activity: Activity = attrs.field(factory=Activity)
    sessions: ISessionRegistry | None = None
    scheduler: IScheduler | None = None
    sms: ISmsSender | None = None
    # Control plans (fep.interfaces.IPlans: fep.collect.plans.EnginePlans), when collecting.
    plans: Any = None
    # Filled by the daemon when those parts run: the DLMS push receiver's PushStats, the
    # collection engine's read-now (an IMeterReader: every door's read of a meter goes
    # through it), the alarm engine and the northbound publisher.
    push_stats: Any = None
    reader: IMeterReader | None = None
    # A concentrator's archive synchronisation by id (fep.collect.archive_sync
    # .ArchiveSyncDoor: ``(id, repair, who) -> Deferred[report]``), when the daemon has one.
    concentrator_sync: Any = None
    alarms: Any = None
    northbound: Any = None
    # Operators' edits of interval values (fep.analysis.edits.Editor) for the API and the
    # console, with the daemon's [analysis] edit_approval.
    edits: Any = None
    # Seconds a meter has to answer each step of an on-demand read.
    read_timeout: float = 10.0
    # The protocols on-demand reads are built with: the daemon's ProtocolRegistry (DLMS with
    # its invocation counters, client system title and security events); by default a
    # protocol without context (a DLMS meter with keys is refused).
    protocol_for: Callable[[str], IMeterProtocol] = meter_protocol
    started: datetime = attrs.field(factory=lambda: datetime.now(UTC))

    def live_sessions(self) -> list[SessionInfo]:
        """Polls under way and live inbound sessions, oldest first."""
        found = list(self.activity.sessions())
        if self.sessions is not None:
            found.extend(SessionInfo.of(s) for s in self.sessions.sessions())
        return sorted(found, key=lambda s: s.started)
