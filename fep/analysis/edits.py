"""Editing: an operator replaces an interval's value, or accepts it as it is, with a reason;
audited and, when configured, approved by another operator (four eyes).

An edit is a row of ``interval_edits`` (migration 0012), never a change of ``intervals`` or
``estimates``: what the meter sent and what estimation made stay as they were. The row is
the audit trail: who asked and when (the operator identity of the door, ``cli:NAME``,
``api:NAME``, ``console:NAME``, never a typed name), the value before (as the analysis saw it:
the real value, else the estimate) and after, the reason, and who approved or rejected it and
when. Four eyes go by operator identity as for meter commands (fep.collect.commands): the
requester cannot approve or reject her own edit through any door.

An applied edit wins over the real value and the estimate in the analysed series
(``jobs.validated_series``: method ``edited`` or ``accepted``) and in the balance; the latest
applied edit of an interval counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from fep.analysis.settings import VeeSettings
from fep.collect.commands import CommandError, SameOperator, WrongState, operator_of
from fep.model import utcnow

ACTIONS = ("replace", "accept")
STATUSES = ("pending", "applied", "rejected")


class EditRefused(CommandError):
    """An edit that cannot be made: no reason, not an interval of the channel, nothing to
    accept, no such edit."""


class NoSuchEdit(EditRefused):
    """No edit has this id (the API answers 404)."""


@attrs.frozen
class Edit:
    id: int
    meter: str
    obis: str
    start: datetime
    action: str
    before: Decimal | None
    after: Decimal | None
    reason: str
    requested_by: str
    requested_at: datetime
    status: str
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def latest_applied(edits: Sequence[Edit]) -> dict[tuple[str, datetime], Edit]:
    """The edit that counts for each (meter, interval start): the latest applied one."""
    out: dict[tuple[str, datetime], Edit] = {}
    for e in sorted(edits, key=lambda e: e.id):
        if e.status == "applied":
            out[(e.meter, e.start)] = e
    return out


class Editor:
    """Edits of the channel of ``vee`` on a store; ``approval``: edits wait for another
    operator's approval."""

    def __init__(self, store: Any, vee: VeeSettings, *, approval: bool = False,
                 now: Callable[[], datetime] = utcnow) -> None:
        from fep.analysis.store import AnalysisStore

        self.store = store
        self.vee = vee
        self.approval = approval
        self._now = now
        self.analysis = AnalysisStore(store, now=now)

    async def request(self, meter: str, start: datetime, *, reason: str, who: str,
                      value: Decimal | None = None, accept: bool = False) -> Edit:
        """Replace the value of ``meter``'s interval at ``start`` by ``value``, or accept
        it (``accept``); applied at once, or pending approval when configured."""
        from fep.analysis.jobs import validated_series

        if not reason.strip():
            raise EditRefused("a reason is required")
        if accept == (value is not None):
            raise EditRefused("give a value to replace, or accept the value as it is")
        rows = {r.start: r for r in await validated_series(
            self.store, self.vee, meter, start.date(), analysis=self.analysis)}
        row = rows.get(start)
        if row is None:
            raise EditRefused(f"{start.isoformat()} is not the start of an interval of "
                              f"{self.vee.channel} ({int(self.vee.period.total_seconds())} s "
                              "grid)")
        if accept and row.value is None:
            raise EditRefused(f"meter {meter} has no value at {start.isoformat()} to accept")
        now = self._now()
        edit = Edit(0, meter, str(self.vee.channel), start, "accept" if accept else "replace",
                    row.value, row.value if accept else value, reason.strip(), who, now,
                    "pending" if self.approval else "applied",
                    None if self.approval else who, None if self.approval else now)
        return await self.analysis.add_edit(edit)

    async def decide(self, edit_id: int, *, approve: bool, who: str, note: str = "") -> Edit:
        """Approve (applied) or reject a pending edit: by another operator than its
        requester."""
        found = await self.analysis.edit(edit_id)
        if found is None:
            raise NoSuchEdit(f"no edit {edit_id}")
        if found.status != "pending":
            raise WrongState(f"edit {edit_id} is {found.status}, not pending")
        if operator_of(who) == operator_of(found.requested_by):
            raise SameOperator(f"edit {edit_id} was asked for by {found.requested_by}; "
                               "another operator must approve or reject it")
        if not approve and not note.strip():
            raise EditRefused("a reason is required to reject an edit")
        decided = await self.analysis.decide_edit(edit_id, "applied" if approve else
                                                  "rejected", who, self._now(), note.strip())
        if decided is None:
            raise WrongState(f"edit {edit_id} was decided meanwhile")
        return decided

    def edits(self, *, meter: str | None = None, since: datetime | None = None,
              until: datetime | None = None, status: str | None = None) -> Any:
        """Edits, newest first (``since``/``until`` bound the interval start)."""
        return self.analysis.edits(meter=meter, since=since, until=until, status=status)


def apply(series: Mapping[datetime, Any], edits: Mapping[tuple[str, datetime], Edit],
          meter: str, period: timedelta) -> dict[datetime, Any]:
    """A meter's points (``fep.analysis.series.Point``) with its applied replacements."""
    from fep.analysis.series import Point
    from fep.model import Quality

    out = dict(series)
    for (m, start), e in edits.items():
        if m == meter and e.action == "replace" and e.after is not None:
            out[start] = Point(start, e.after, Quality.OK)
    return dict(sorted(out.items()))
