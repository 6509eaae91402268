"""Every fuzz target, collected from the ``*_targets.py`` modules of this package.

A target is a function of one ``bytes`` argument: it feeds the bytes to a decoder and catches
exactly the exceptions that decoder documents (its typed errors). Any other exception escapes
the target and is a bug. A module adds its targets by defining ``TARGETS`` (name ->
function); this module finds the modules by their file name, so a new ``*_targets.py`` joins
without an edit here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

Target = Callable[[bytes], None]

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
CRASHES = HERE / "crashes"


def target_modules() -> list[str]:
    """The dotted names of the target modules, sorted."""
    return sorted(f"{__package__}.{path.stem}" for path in HERE.glob("*_targets.py"))


def collect() -> dict[str, Target]:
    """Every target of every target module; a name defined twice is an error."""
    found: dict[str, Target] = {}
    for name in target_modules():
        module = importlib.import_module(name)
        for target, function in getattr(module, "TARGETS", {}).items():
            if target in found:
                raise ValueError(f"fuzz target {target!r} defined twice (again in {name})")
            found[target] = function
    return found


TARGETS: dict[str, Target] = collect()


def corpus_files(target: str) -> list[Path]:
    """The seed and regression inputs of ``target`` (SOURCES and dot files are notes)."""
    directory = CORPUS / target
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.name != "SOURCES"
        and not p.name.startswith(".")
    )
