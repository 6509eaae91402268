"""The layer rule, checked from the source: no module of fep imports from a layer above its
own, and no import cycle joins two packages.

DESIGN.md's order, lowest first: model/errors/serialize < store < protocols < channels <
directory/collect < analysis < operator < config/service/cli; the simulators may use anything
below the service. The import graph is built with ``ast`` from every file under fep/; an
import inside a function (a lazy import) or under ``if TYPE_CHECKING`` counts like one at the
top of the module: it is a dependency all the same.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path

from twisted.trial import unittest

ROOT = Path(__file__).resolve().parent.parent
FEP = ROOT / "fep"

BASE, STORE, PROTOCOLS, CHANNELS, COLLECT, ANALYSIS, OPERATOR, SIM, TOP = range(9)
LAYER_NAMES = ("model/errors/serialize", "store", "protocols", "channels",
               "directory/collect", "analysis", "operator", "sim", "config/service/cli")

# Each module's layer, by the longest package prefix that matches it.
LAYERS: Mapping[str, int] = {
    # The package itself holds only the version.
    "fep": BASE,
    # The records and the errors every layer speaks, and their one wire form.
    "fep.model": BASE,
    "fep.errors": BASE,
    "fep.serialize": BASE,
    # Plug points (zope interfaces) name what a layer offers and what it is given; every
    # layer implements or uses some, so they sit at the bottom and import only records.
    "fep.interfaces": BASE,
    # What fep asks of a reactor (intersections of Twisted's reactor interfaces, for the type
    # checker): imports only Twisted.
    "fep.reactors": BASE,
    # The master key and the AES-GCM envelope: pure functions on bytes, no Twisted, used by
    # the store (sealing), the directory (secrets into metadata) and the command line.
    "fep.vault": BASE,
    # A rate limit on repeated log events: a helper of twisted.logger, used by channels and
    # protocols alike.
    "fep.ratelog": BASE,
    # Pulse counts -> energy and demand records: arithmetic on model records, outside any
    # protocol (the Modbus recorder's session and its simulator both use it).
    "fep.pulse": BASE,
    # The service tree's parts (ordered start and stop, listeners): a helper of
    # twisted.application, used by the operator tier and the composition root.
    "fep.servicetree": BASE,
    # Configuration declarations: the Option/Section shape and the shared value parsers every
    # subsystem declares its ini section with (fep.config applies them).
    "fep.options": BASE,
    # This node's own sections ([fep], [log]), read by every layer above.
    "fep.node": BASE,
    "fep.store": STORE,
    "fep.protocols": PROTOCOLS,
    "fep.channels": CHANNELS,
    # The in-memory meter list: routes from the channels, meters from the store; the
    # collection engine, the GPRS sessions' observers and the operator tier look meters up.
    "fep.directory": COLLECT,
    "fep.collect": COLLECT,
    "fep.analysis": ANALYSIS,
    "fep.operator": OPERATOR,
    # Meter and modem simulators: tests, the demo and the benchmarks drive them.
    "fep.sim": SIM,
    "fep.config": TOP,
    # The configuration's secret:NAME values, opened for the daemon and the command line.
    "fep.config_secrets": TOP,
    "fep.service": TOP,
    "fep.cli": TOP,
    # Benchmarks: programs that drive simulators, protocols and the store.
    "fep.bench": TOP,
    "fep.bench_collect": TOP,
    "fep.bench_dlms": TOP,
    "fep.bench_dlt698": TOP,
    "fep.bench_gprs": TOP,
    "fep.bench_gw3761": TOP,
    "fep.bench_listeners": TOP,
    "fep.bench_analysis": TOP,
    "fep.bench_growth": TOP,
    "fep.bench_ingest": TOP,
}

# importer -> imported edges that go upward and cannot move yet, each with the reason. The
# check below fails once one is gone, so that it is removed from here too.
KNOWN: Mapping[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(FEP.rglob("*.py"))}


def imports(name: str, path: Path, known: Mapping[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported fep module, line) for every import in the file, wherever it stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                # ``from fep.store import jobs`` imports the module fep.store.jobs.
                child = f"{source}.{alias.name}"
                yield (child if child in known else source), node.lineno


@functools.cache
def graph() -> dict[str, dict[str, int]]:
    """importer -> {imported: first line}, fep modules only."""
    known = modules()
    edges: dict[str, dict[str, int]] = defaultdict(dict)
    for name, path in known.items():
        for target, line in imports(name, path, known):
            if (target == "fep" or target.startswith("fep.")) and target != name:
                edges[name].setdefault(target, line)
    return edges


def unit_of(module: str) -> str:
    """The entry of LAYERS a module belongs to (its longest matching prefix)."""
    best = ""
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return best


def package_of(module: str, known: Mapping[str, Path]) -> str:
    """The package a module is part of: itself for a package or a top-level module of fep
    (fep.model, fep.config...: each is a part of its own), else its parent."""
    path = known.get(module)
    parent = module.rpartition(".")[0]
    if (path is not None and path.name == "__init__.py") or parent in ("", "fep"):
        return module
    return parent


def cycles(edges: Mapping[str, Mapping[str, object]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    nodes = sorted(set(edges) | {t for ts in edges.values() for t in ts})

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return found


class LayerTests(unittest.TestCase):
    def test_every_module_has_a_layer(self) -> None:
        missing = [name for name in modules() if not unit_of(name)]
        self.assertEqual(missing, [], "modules with no entry in LAYERS")

    def test_no_module_imports_from_a_layer_above_it(self) -> None:
        known = modules()
        upward = []
        for importer, targets in sorted(graph().items()):
            for imported, line in sorted(targets.items()):
                low, high = LAYERS[unit_of(importer)], LAYERS[unit_of(imported)]
                if high > low and (importer, imported) not in KNOWN:
                    where = known[importer].relative_to(ROOT)
                    upward.append(f"{importer} -> {imported} ({where}:{line}: "
                                  f"{LAYER_NAMES[low]} imports {LAYER_NAMES[high]})")
        self.assertEqual(upward, [], "imports from a higher layer:\n" + "\n".join(upward))

    def test_known_exceptions_still_exist(self) -> None:
        edges = graph()
        gone = [f"{a} -> {b}" for a, b in KNOWN if b not in edges.get(a, {})]
        self.assertEqual(gone, [], "KNOWN lists imports that are gone: remove them")

    def test_no_import_cycle_between_packages(self) -> None:
        known = modules()
        packages: dict[str, dict[str, None]] = defaultdict(dict)
        for importer, targets in graph().items():
            for imported in targets:
                if (importer, imported) in KNOWN:
                    continue
                a, b = package_of(importer, known), package_of(imported, known)
                if a != b:
                    packages[a][b] = None
        found = cycles(packages)
        self.assertEqual(found, [], "import cycles between packages: " + "; ".join(
            " <-> ".join(c) for c in found))

    def test_the_checker_sees_lazy_and_relative_imports(self) -> None:
        source = FEP / "cli" / "__init__.py"
        targets = dict(imports("fep.cli", source, modules()))
        # Imported inside build_parser, not at the top of the module.
        self.assertIn("fep.cli.collect", targets)
        self.assertEqual(cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}),
                         [["a", "b", "c"]])
