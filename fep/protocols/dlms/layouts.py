"""Push list layouts: what the values of a pushed list are when the list does not say it
itself. Many HAN/P1 meters push a list of bare values in a fixed order (Kaifa ``KFM_001``),
or name/value pairs without scaler and unit (Kamstrup ``Kamstrup_V0001``); a layout gives
each position its OBIS code, unit and scaler, and marks date-time values.

Layouts are ini files (``etc/push-layouts/*.ini``, and the directories ``[dlms]
push_layouts`` names), one section per list variant::

    [kaifa-kfm001-list2-three-phase]
    source = NEK, Kaifa KFM_001 HAN list description (2018-11-09)
    identifier = KFM_001
    items =
        1-1:0.2.129.255
        0-0:96.1.0.255
        1-0:1.7.0.255   W
        1-0:31.7.0.255  A  -3
        0-0:1.0.0.255   date-time

``select = meter`` makes a layout one that only the meters naming it (their
``dlms_push_layout`` metadata) use, first, for their lists of its identifier (meters of one
identifier configured with other scalers); without it a layout serves every list of its
identifier.
``identifier`` is the text (visible or octet string) or OBIS code the list carries at its
head, or at 0.2.129 (any A and B) as a name/value pair or structure; empty for a list that
carries none (then the list's length alone selects the layout). Each item is an OBIS code,
optionally a unit symbol (``W``, ``kWh``, ``var``...; a prefix becomes part of the scaler)
and a decimal scaler, or ``date-time`` (a 12-byte COSEM date-time). A bare list is read
with the layout of its identifier whose item count equals the list's length; a list of
pairs or structures takes units and scalers from its identifier's layouts by OBIS code,
where it sends none itself. Sans-IO: ``parse_layouts`` reads text, ``load_layouts`` the
files of directories.
"""

from __future__ import annotations

import configparser
import functools
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from fep.errors import ConfigError
from fep.model import ObisCode, Unit

# Layout files are small; a bound keeps a mistaken directory from being read whole.
MAX_LAYOUT_FILE = 256 * 1024
MAX_ITEMS = 512


@attrs.frozen
class LayoutItem:
    obis: ObisCode
    unit: Unit | None = None
    scaler: int = 0
    date_time: bool = False


@attrs.frozen
class PushLayout:
    """One list variant: its ``name`` (the section), ``identifier`` (None: the list carries
    none), ``items`` in list order, and where the layout is published (``source``)."""

    name: str
    identifier: str | None
    items: tuple[LayoutItem, ...]
    source: str = ""
    origin: str = ""
    # ``select = meter``: used only for the meters whose ``dlms_push_layout`` names it, never
    # for a list by its identifier alone (meters of one identifier configured differently).
    meter_only: bool = False

    def item_for(self, obis: ObisCode) -> LayoutItem | None:
        for item in self.items:
            if item.obis == obis:
                return item
        return None


@attrs.frozen
class LayoutTable:
    """Every layout known, found by identifier and length."""

    layouts: tuple[PushLayout, ...] = ()
    # units_of's answers by identifier (only identifiers this table has layouts for).
    _units: dict[str, dict[ObisCode, LayoutItem]] = attrs.field(
        factory=dict, init=False, eq=False, repr=False)
    # preferring()'s tables by layout name.
    _preferred: dict[str, LayoutTable] = attrs.field(
        factory=dict, init=False, eq=False, repr=False)

    def named(self, identifier: str | None) -> list[PushLayout]:
        return [layout for layout in self.layouts
                if layout.identifier == identifier and not layout.meter_only]

    def preferring(self, name: str) -> LayoutTable | None:
        """This table with the layout of section ``name`` first, for one meter's lists (its
        ``dlms_push_layout``): tried first for a bare list of its identifier, and its items
        give units and scalers before the identifier's other layouts. None when no layout
        has that name. Kept per name."""
        known = self._preferred.get(name)
        if known is not None:
            return known
        chosen = next((layout for layout in self.layouts if layout.name == name), None)
        if chosen is None:
            return None
        rest = tuple(layout for layout in self.layouts if layout is not chosen)
        table = LayoutTable((attrs.evolve(chosen, meter_only=False), *rest))
        if len(self._preferred) < 256:
            self._preferred[name] = table
        return table

    def for_bare_list(self, identifier: str | None, length: int) -> PushLayout | None:
        for layout in self.named(identifier):
            if len(layout.items) == length:
                return layout
        return None

    def item_for(self, identifier: str | None, obis: ObisCode) -> LayoutItem | None:
        """The unit and scaler of ``obis`` in the layouts of ``identifier``."""
        if identifier is None:
            return None
        for layout in self.named(identifier):
            item = layout.item_for(obis)
            if item is not None:
                return item
        return None

    def units_of(self, identifier: str | None) -> dict[ObisCode, LayoutItem]:
        """``item_for`` of every OBIS code at once: the item each code finds in the layouts
        of ``identifier`` (kept per identifier; empty for one without layouts)."""
        if identifier is None:
            return _NO_UNITS
        known = self._units.get(identifier)
        if known is None:
            known = {}
            for layout in self.named(identifier):
                for item in layout.items:
                    known.setdefault(item.obis, item)
            if not known:
                return _NO_UNITS
            self._units[identifier] = known
        return known

    def __len__(self) -> int:
        return len(self.layouts)


_NO_UNITS: dict[ObisCode, LayoutItem] = {}


EMPTY = LayoutTable()


def _item(text: str, where: str) -> LayoutItem:
    words = text.split()
    try:
        obis = ObisCode.parse(words[0])
    except ValueError as e:
        raise ConfigError(f"{where}: {words[0]!r} is no OBIS code ({e})", key="items") from None
    rest = words[1:]
    if rest and rest[0].lower() in ("date-time", "datetime"):
        if len(rest) > 1:
            raise ConfigError(f"{where}: nothing may follow date-time", key="items")
        return LayoutItem(obis, date_time=True)
    unit: Unit | None = None
    scaler = 0
    if rest and not _is_int(rest[0]):
        try:
            unit, scaler = Unit.parse_symbol(rest.pop(0))
        except ValueError as e:
            raise ConfigError(f"{where}: {e}", key="items") from None
    if rest:
        if not _is_int(rest[0]) or len(rest) > 1:
            raise ConfigError(f"{where}: expected OBIS [UNIT] [SCALER] or OBIS date-time, "
                              f"got {text!r}", key="items")
        scaler += int(rest[0])
    return LayoutItem(obis, unit, scaler)


def _is_int(word: str) -> bool:
    try:
        int(word)
    except ValueError:
        return False
    return True


def parse_layouts(text: str, origin: str = "<layouts>") -> list[PushLayout]:
    """The layouts of one ini text; ConfigError naming ``origin``, the section and the item
    for anything that is not a layout."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    try:
        parser.read_string(text, source=origin)
    except configparser.Error as e:
        raise ConfigError(f"{origin}: {e}", section=None) from None
    layouts = []
    for name in parser.sections():
        section = parser[name]
        where = f"{origin} [{name}]"
        unknown = set(section) - {"identifier", "items", "source", "select"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}",
                              section=name)
        lines = [line.strip() for line in section.get("items", "").splitlines()]
        lines = [line for line in lines if line and not line.startswith(("#", ";"))]
        if not lines or len(lines) > MAX_ITEMS:
            raise ConfigError(f"{where}: items must list 1..{MAX_ITEMS} OBIS codes",
                              section=name, key="items")
        items = tuple(_item(line, f"{where} item {n + 1}") for n, line in enumerate(lines))
        identifier = section.get("identifier", "").strip() or None
        select = section.get("select", "identifier").strip().lower()
        if select not in ("identifier", "meter"):
            raise ConfigError(f"{where}: select must be identifier or meter, not {select!r}",
                              section=name, key="select")
        layouts.append(PushLayout(name, identifier, items, section.get("source", "").strip(),
                                  origin, meter_only=select == "meter"))
    return layouts


def shipped_directory() -> Path:
    """``etc/push-layouts`` of this source tree (the layouts fep ships)."""
    return Path(__file__).resolve().parents[3] / "etc" / "push-layouts"


def load_layouts(directories: Iterable[Path | str], *, shipped: bool = True) -> LayoutTable:
    """The layouts of every ``*.ini`` in the shipped directory (when ``shipped``) and in
    ``directories`` after it; a later layout of the same section name replaces an earlier
    one (a user's own version of a shipped layout). ConfigError for a file that is no
    layout file or a directory that is missing."""
    found: dict[str, PushLayout] = {}
    dirs: list[Path] = [shipped_directory()] if shipped else []
    dirs += [Path(d) for d in directories]
    for directory in dirs:
        if not directory.is_dir():
            if directory == shipped_directory():
                continue
            raise ConfigError(f"push layout directory {directory} does not exist",
                              key="push_layouts")
        for path in sorted(directory.glob("*.ini")):
            if path.stat().st_size > MAX_LAYOUT_FILE:
                raise ConfigError(f"{path}: over {MAX_LAYOUT_FILE} bytes", key="push_layouts")
            for layout in parse_layouts(path.read_text(encoding="utf-8"), str(path)):
                found[layout.name] = layout
    return LayoutTable(tuple(found.values()))


def table_of(layouts: Sequence[PushLayout]) -> LayoutTable:
    return LayoutTable(tuple(layouts))


@functools.cache
def shipped_layouts() -> LayoutTable:
    """The layouts fep ships (read once): what decoding uses when it is given none."""
    return load_layouts(())
