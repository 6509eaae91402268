"""A concentrator's meter archive (AFN 04 F10 written, AFN 0A F10 read back) compared with
the archive fep wants it to have, and the requests that repair it. Sans-IO.

Entries are keyed by their number (the archive's index, 1..2040). An entry fep wants that
the terminal lacks or holds differently is written; an entry the terminal holds that fep
does not want is deleted by writing it with point 0 (Q/GDW 1376.1 AFN 04 F10: a measuring
point number of 0 removes the entry).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from fep.protocols.gw3761.frames import Afn
from fep.protocols.gw3761.services import ArchiveEntry, encode_unit

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


__all__ = ["ENTRIES_PER_UNIT", "ArchiveDiff", "compare", "read_unit", "write_units"]
