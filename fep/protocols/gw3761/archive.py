"""A concentrator's meter archive (AFN 04 F10 written, AFN 0A F10 read back) compared with
the archive fep wants it to have, and the requests that repair it. Sans-IO.

Entries are keyed by their number (the archive's index, 1..2040). An entry fep wants that
the terminal lacks or holds differently is written; an entry the terminal holds that fep
does not want is deleted by writing it with point 0 (Q/GDW 1376.1 AFN 04 F10: a measuring
point number of 0 removes the entry).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from fep.protocols.gw3761.exchange import Failed, MasterExchange, Noise, Send, Step
from fep.protocols.gw3761.frames import Address, Afn, Frame
from fep.protocols.gw3761.services import (
    ArchiveEntry,
    Confirmed,
    Data,
    Denied,
    encode_unit,
)

# Entries per AFN 04 F10 data unit: 27 bytes each keeps a frame under 1 KiB.
ENTRIES_PER_UNIT = 30


@attrs.frozen
class ArchiveDiff:
    """What differs: entries to add, to change (fep's version) and to delete (the
    terminal's version)."""

    added: tuple[ArchiveEntry, ...] = ()
    changed: tuple[ArchiveEntry, ...] = ()
    removed: tuple[ArchiveEntry, ...] = ()

    @property
    def in_step(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def writes(self) -> list[ArchiveEntry]:
        """The entries to write, deletions as point 0, in number order."""
        deletions = [attrs.evolve(e, point=0) for e in self.removed]
        return sorted([*self.added, *self.changed, *deletions], key=lambda e: e.number)


def compare(wanted: Iterable[ArchiveEntry], held: Iterable[ArchiveEntry]) -> ArchiveDiff:
    """How the terminal's archive ``held`` differs from ``wanted``; ValueError when
    ``wanted`` names an entry number twice."""
    want: dict[int, ArchiveEntry] = {}
    for entry in wanted:
        if entry.number in want:
            raise ValueError(f"archive entry {entry.number} wanted twice")
        want[entry.number] = entry
    have = {e.number: e for e in held if e.point != 0}
    added = tuple(want[n] for n in sorted(want) if n not in have)
    changed = tuple(want[n] for n in sorted(want) if n in have and have[n] != want[n])
    removed = tuple(have[n] for n in sorted(have) if n not in want)
    return ArchiveDiff(added, changed, removed)


def write_units(entries: Sequence[ArchiveEntry]) -> list[bytes]:
    """AFN 04 F10 data units writing ``entries``, ``ENTRIES_PER_UNIT`` to a unit."""
    return [
        encode_unit(Afn.SET_PARAMETERS, [0], [10], False,
                    {(0, 10): tuple(entries[at : at + ENTRIES_PER_UNIT])})
        for at in range(0, len(entries), ENTRIES_PER_UNIT)
    ]  # fmt: skip


def read_unit(numbers: Sequence[int] = ()) -> bytes:
    """The AFN 0A F10 data unit reading entries ``numbers``. None asks for the whole archive:
    fep's simulator answers that, but the standard has the master list the numbers, so ask a
    real terminal for its numbers in ranges."""
    return encode_unit(Afn.QUERY_PARAMETERS, [0], [10], False, {(0, 10): tuple(numbers)})




# ---------------------------------------------------------------------------
# Synchronisation: read, compare, repair, read back (sans-IO)
# ---------------------------------------------------------------------------

# The standard's highest archive entry number; entries are read 30 numbers to a request.
MAX_NUMBER = 2040


@attrs.frozen
class SyncReport:
    """A synchronisation's outcome: how the terminal's archive differed from fep's
    (``before``), the entries written (``written``, deletions included) and how it differs
    after the repair, read back (``after``; None when nothing was repaired)."""

    address: str
    wanted: int
    held: int
    before: ArchiveDiff
    written: int = 0
    after: ArchiveDiff | None = None

    @property
    def in_step(self) -> bool:
        return (self.after or self.before).in_step

    def as_dict(self) -> dict[str, Any]:
        def entries(diff: ArchiveDiff | None) -> dict[str, Any] | None:
            if diff is None:
                return None
            return {name: [entry_dict(e) for e in getattr(diff, name)]
                    for name in ("added", "changed", "removed")}  # fmt: skip

        return {"concentrator": self.address, "wanted": self.wanted, "held": self.held,
                "written": self.written, "in_step": self.in_step,
                "before": entries(self.before), "after": entries(self.after)}  # fmt: skip


def entry_dict(e: ArchiveEntry) -> dict[str, Any]:
    return {"number": e.number, "point": e.point, "port": e.port, "address": e.address,
            "protocol": e.protocol, "baud": e.baud}  # fmt: skip


@attrs.frozen
class Finished:
    report: SyncReport


Action = Send | Finished | Failed | Noise


class ArchiveSync(MasterExchange):
    """Reads a terminal's archive (AFN 0A F10, numbers 1..``size``, 30 to a request),
    compares it with ``wanted``, writes what differs (AFN 04 F10) unless ``repair`` is
    off, and reads it back to report what differs after. One request at a time; silence
    is resent ``retries`` times; a denial of a write fails the synchronisation."""

    def __init__(self, address: Address, wanted: Sequence[ArchiveEntry], *,
                 size: int = MAX_NUMBER, repair: bool = True, retries: int = 1,
                 meter: str | None = None, route: str | None = None) -> None:  # fmt: skip
        super().__init__(address, retries=retries, meter=meter, route=route)
        self.wanted = list(wanted)
        compare(self.wanted, [])  # ValueError now for a number wanted twice
        self.size = max(min(size, MAX_NUMBER), max((e.number for e in self.wanted), default=0))
        self.repair = repair
        self._queue: list[Step] = []
        self._phase = "read"
        self._held: list[ArchiveEntry] = []
        self._before: ArchiveDiff | None = None
        self._held_before = 0
        self._written = 0

    def _reads(self) -> list[Step]:
        return [Step(f"0A:F10 entries {at}..{min(at + 29, self.size)}",
                     int(Afn.QUERY_PARAMETERS), read_unit(range(at, min(at + 30, self.size + 1))))
                for at in range(1, self.size + 1, 30)]  # fmt: skip

    def start(self) -> list[Action]:
        self._queue = self._reads()
        return self._next()

    def _next(self) -> list[Action]:
        if not self._queue:
            return self._phase_done()
        return self._ask(self._queue.pop(0))

    def _phase_done(self) -> list[Action]:
        diff = compare(self.wanted, self._held)
        if self._phase == "read":
            self._before = diff
            self._held_before = len([e for e in self._held if e.point])
            if diff.in_step or not self.repair:
                return self._finish(None)
            writes = diff.writes()
            self._written = len(writes)
            self._phase = "write"
            self._queue = [Step(f"04:F10 writing {len(writes)} entries", int(Afn.SET_PARAMETERS),
                                unit) for unit in write_units(writes)]  # fmt: skip
            return self._next()
        if self._phase == "write":
            self._phase = "verify"
            self._held = []
            self._queue = self._reads()
            return self._next()
        return self._finish(diff)

    def _finish(self, after: ArchiveDiff | None) -> list[Action]:
        assert self._before is not None
        self._done = True
        self._current = None
        return [Finished(SyncReport(str(self.address), len(self.wanted), self._held_before,
                                    self._before,
                                    self._written, after))]  # fmt: skip

    def _answered(self, whole: Frame) -> list[Action]:
        assert self._current is not None
        what = self._current.what
        event = self._event(whole)
        if isinstance(event, Failed):
            return [event]
        if isinstance(event, Denied):
            if self._phase == "write":
                return [self._failed(f"denied {what}")]
            return self._next()  # no such entries
        if isinstance(event, Data) and event.afn == Afn.QUERY_PARAMETERS:
            self._held += [e for item in event.items if item.fn == 10
                           for e in (item.value or ())]  # fmt: skip
        elif not isinstance(event, Confirmed):
            return self._dropped(f"AFN {whole.afn:02X} answer to {what} dropped")
        return self._next()


__all__ = [
    "ENTRIES_PER_UNIT",
    "MAX_NUMBER",
    "ArchiveDiff",
    "ArchiveSync",
    "Failed",
    "Finished",
    "Noise",
    "Send",
    "SyncReport",
    "compare",
    "entry_dict",
    "read_unit",
    "write_units",
]
