"""`python -m fep.bench --write FILE` replaces only the block it owns (between its markers):
the hand-written sections of docs/benchmarks.md stay as they are."""

from __future__ import annotations

from pathlib import Path

from twisted.trial import unittest

from fep.bench import write_owned

PAGE = """# Benchmarks

<!-- fep.bench all -->
old table
<!-- /fep.bench all -->

Notes by hand.

## Ingest at size (by hand)

figures by hand
"""


class WriteOwnedTests(unittest.TestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def test_only_the_owned_block_is_replaced(self) -> None:
        self.path.write_text(PAGE)
        write_owned(self.path, "all", "new table\n")
        self.assertEqual(self.path.read_text(), PAGE.replace("old table", "new table"))
        write_owned(self.path, "all", "newer table")  # again: still one block
        self.assertEqual(self.path.read_text(), PAGE.replace("old table", "newer table"))

    def test_a_group_without_its_markers_is_added_at_the_end(self) -> None:
        self.path.write_text(PAGE)
        write_owned(self.path, "growth", "### growth\n\nrows\n")
        text = self.path.read_text()
        self.assertTrue(text.startswith(PAGE))
        self.assertTrue(text.endswith(
            "\n\n<!-- fep.bench growth -->\n### growth\n\nrows\n<!-- /fep.bench growth -->\n"))
        write_owned(self.path, "growth", "### growth\n\nother rows\n")
        self.assertEqual(self.path.read_text(), text.replace("\nrows\n", "\nother rows\n"))

    def test_a_missing_file_is_made(self) -> None:
        write_owned(self.path, "all", "table")
        self.assertEqual(self.path.read_text(),
                         "# Benchmarks\n\n<!-- fep.bench all -->\ntable\n<!-- /fep.bench all -->\n")

    def test_the_docs_page_has_the_markers_of_the_full_run(self) -> None:
        page = (Path(__file__).parent.parent.parent / "docs" / "benchmarks.md").read_text()
        self.assertEqual(page.count("<!-- fep.bench all -->"), 1)
        self.assertEqual(page.count("<!-- /fep.bench all -->"), 1)
        self.assertLess(page.index("<!-- fep.bench all -->"), page.index("\n## "))
