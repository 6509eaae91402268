"""Operators' edits of interval values through the API and the console (fep.analysis.edits):
one set of rules for both doors. Looking at edits needs a ``viewer``; asking for one,
approving and rejecting need an ``operator``; four eyes (when ``[analysis] edit_approval``)
are the editor's, by operator identity (``api:NAME``, ``console:NAME``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from fep.operator import commands
from fep.operator.context import OperatorContext

# The door step -> the least role (fep.operator.commands.APPROVAL names these too).
STEPS = {"edit": "operator", "edit_approve": "operator", "edit_reject": "operator"}


def _editor(ctx: OperatorContext) -> Any:
    if ctx.edits is None:
        raise commands.CommandRefused("editing is not wired in (no analysis editor)",
                                      status=503)
    return ctx.edits


def _when(text: Any, name: str) -> datetime:
    if isinstance(text, datetime):
        value = text
    else:
        try:
            value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            raise commands.CommandRefused(f"{name}: not an ISO-8601 time: {text!r}",
                                          status=400) from None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def _value(text: Any) -> Decimal:
    if isinstance(text, bool) or not isinstance(text, (int, float, str, Decimal)):
        raise commands.CommandRefused(f"value: expected a number, got {text!r}", status=400)
    try:
        return Decimal(str(text))
    except InvalidOperation:
        raise commands.CommandRefused(f"value: not a number: {text!r}", status=400) from None


async def request_edit(ctx: OperatorContext, meter: str, start: Any, *, who: str, role: str,
                       reason: str, value: Any = None, accept: bool = False
                       ) -> dict[str, Any]:
    """Replace (``value``) or accept the value of ``meter``'s interval at ``start``."""
    commands.check("edit", role, who)
    editor = _editor(ctx)
    edit = await editor.request(meter, _when(start, "start"), reason=str(reason), who=who,
                                value=None if value is None else _value(value),
                                accept=bool(accept))
    return dict(edit.as_dict())


async def list_edits(ctx: OperatorContext, *, who: str, role: str, meter: str | None = None,
                     status: str | None = None, since: Any = None, until: Any = None
                     ) -> list[dict[str, Any]]:
    """Edits, newest first."""
    editor = _editor(ctx)
    found = await editor.edits(
        meter=meter, status=status, since=None if since is None else _when(since, "from"),
        until=None if until is None else _when(until, "to"))
    return [e.as_dict() for e in found]


async def decide_edit(ctx: OperatorContext, edit_id: int, *, approve: bool, who: str,
                      role: str, reason: str = "") -> dict[str, Any]:
    """Approve or reject a pending edit (another operator than its requester)."""
    from fep.analysis.edits import NoSuchEdit

    commands.check("edit_approve" if approve else "edit_reject", role, who)
    try:
        edit = await _editor(ctx).decide(int(edit_id), approve=approve, who=who, note=reason)
    except NoSuchEdit as e:
        raise commands.CommandRefused(str(e), status=404) from None
    return dict(edit.as_dict())
