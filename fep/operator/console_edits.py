"""The console's commands for operators' edits of interval values (fep.analysis.edits),
through the same rules as the API (fep.operator.edit_commands): ``edits()``, ``edit()``,
``edit_approve()``, ``edit_reject()``. Mixed into the console's OperatorCommands, whose
``ctx``, ``who`` (``console:OPERATOR``, the key's operator), ``role`` and ``_log`` they use."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from fep.operator import edit_commands

NAMES = ("edits", "edit", "edit_approve", "edit_reject")
COLUMNS = ["id", "meter", "start", "action", "before", "after", "status", "requested_by",
           "decided_by", "reason", "note"]


def _table(rows: list[dict[str, Any]], title: str) -> Any:
    from fep.operator.manhole import Table

    return Table(rows, COLUMNS, title)


class EditCommands:
    ctx: Any
    who: str
    role: str

    def _log(self, command: str, **fields: Any) -> None:
        raise NotImplementedError

    def edits(self, meter: str | None = None, status: str | None = None) -> Deferred[Any]:
        """Edits of interval values, newest first (status: pending, applied, rejected)."""
        self._log("edits()", meter=meter, status=status)

        async def run() -> Any:
            found = await edit_commands.list_edits(self.ctx, who=self.who, role=self.role,
                                                   meter=meter, status=status)
            return _table(found, f"{len(found)} edits")

        return Deferred.fromCoroutine(run())

    def edit(self, meter: str, start: str, value: Any = None, accept: bool = False,
             reason: str = "") -> Deferred[Any]:
        """Replace (value=...) or accept (accept=True) an interval's value, with a reason,
        e.g. edit("m1", "2026-12-01T01:15Z", value="90", reason="meter swap")."""
        self._log("edit()", meter=meter, start=start)

        async def run() -> Any:
            made = await edit_commands.request_edit(
                self.ctx, meter, start, who=self.who, role=self.role, reason=reason,
                value=value, accept=accept)
            return _table([made], f"edit {made['id']} {made['status']}")

        return Deferred.fromCoroutine(run())

    def _decide(self, edit_id: int, approve: bool, reason: str = "") -> Deferred[Any]:
        async def run() -> Any:
            done = await edit_commands.decide_edit(self.ctx, int(edit_id), approve=approve,
                                                   who=self.who, role=self.role,
                                                   reason=reason)
            return _table([done], f"edit {done['id']} {done['status']}")

        return Deferred.fromCoroutine(run())

    def edit_approve(self, edit_id: int) -> Deferred[Any]:
        """Approve an edit someone else asked for."""
        self._log("edit_approve()", edit_id=edit_id)
        return self._decide(edit_id, True)

    def edit_reject(self, edit_id: int, reason: str = "") -> Deferred[Any]:
        """Reject an edit someone else asked for, with a reason."""
        self._log("edit_reject()", edit_id=edit_id)
        return self._decide(edit_id, False, reason)
