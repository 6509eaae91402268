"""DESIGN.md's rule for protocol packages: fep/protocols/<name>/ modules other than
session.py (the package's Twisted adapter) import no Twisted."""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial import unittest

import fep.protocols

PROTOCOLS = Path(fep.protocols.__file__).parent


def twisted_imports(path: Path) -> list[str]:
    """The Twisted modules ``path`` imports, anywhere in it (functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [n for n in names if n == "twisted" or n.startswith("twisted.")]
    return found


class SansIoTests(unittest.TestCase):
    def test_protocol_packages_import_twisted_only_in_session_py(self) -> None:
        packages = [p for p in PROTOCOLS.iterdir() if (p / "__init__.py").exists()]
        self.assertIn("dlms", [p.name for p in packages])
        offenders = {
            str(module.relative_to(PROTOCOLS)): imports
            for package in packages
            for module in sorted(package.rglob("*.py"))
            if module.name != "session.py" and (imports := twisted_imports(module))
        }
        self.assertEqual(offenders, {})
