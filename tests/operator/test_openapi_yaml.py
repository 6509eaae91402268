"""docs/openapi.yaml is valid YAML: parsed with yaml.safe_load (PyYAML, a test dependency), and
always held to a small check of the mistake that broke it before (a plain, unquoted scalar
holding ": ", which YAML reads as a nested mapping)."""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial import unittest

from tests.system import require_module

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
# "key: value" with a plain value: not quoted, not a flow collection, not a block scalar.
_PLAIN = re.compile(r"^(\s*)(?:-\s+)?[\w$./-]+:\s+([^\s\"'{\[|>&*!].*)$")
_BLOCK = re.compile(r"^(\s*)(?:-\s+)?[\w$./-]+:\s+[|>][-+]?\s*$")


def plain_colons(text: str) -> list[int]:
    """The lines whose plain scalar value holds ': ' or ' #' (1-based line numbers); the
    text of block scalars (``key: >``) is left alone."""
    found = []
    block: int | None = None  # the indent of the key opening a block scalar
    for n, line in enumerate(text.splitlines(), start=1):
        indent = len(line) - len(line.lstrip())
        if block is not None and (not line.strip() or indent > block):
            continue
        block = None
        if (b := _BLOCK.match(line)) is not None:
            block = len(b.group(1))
            continue
        m = _PLAIN.match(line)
        if m and (": " in m.group(2) or " #" in m.group(2) or m.group(2).endswith(":")):
            found.append(n)
    return found


class OpenApiYamlTests(unittest.TestCase):
    def test_no_plain_scalar_holds_a_colon(self) -> None:
        self.assertEqual(plain_colons(OPENAPI.read_text(encoding="utf-8")), [])

    def test_the_check_finds_the_old_mistake(self) -> None:
        self.assertEqual(plain_colons("paths:\n  /a:\n    get:\n      summary: pause: now\n"
                                      "      description: \"quoted: fine\"\n"), [4])

    def test_it_parses_as_yaml(self) -> None:
        yaml = require_module("yaml", pip="PyYAML")
        document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
        for path in ("/vee/exceptions", "/balance", "/outages", "/load", "/comms",
                     "/balance/history", "/outages/map", "/vee/quality"):
            self.assertIn("get", document["paths"][path])
