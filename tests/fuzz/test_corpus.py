"""Replays every fuzz target over its committed corpus (seeds and crash regressions): what
``make fuzz`` found once stays fixed, in seconds, without atheris."""

from __future__ import annotations

import ast
import time

from twisted.trial import unittest

from tests.fuzz.targets import CORPUS, TARGETS, corpus_files, target_modules

# One input of the corpus may take this long: past it, decoding is not bounded by the input.
SLOW = 2.0


class CorpusTests(unittest.TestCase):
    def test_every_target_has_a_corpus(self) -> None:
        empty = [name for name in TARGETS if not corpus_files(name)]
        self.assertEqual(empty, [], "targets without a corpus in tests/fuzz/corpus/")

    def test_every_corpus_belongs_to_a_target(self) -> None:
        orphans = sorted(p.name for p in CORPUS.iterdir() if p.is_dir() and p.name not in TARGETS)
        self.assertEqual(orphans, [])

    def test_targets_are_found_in_every_targets_module(self) -> None:
        # A module's TARGETS are read from its source too: a target defined there must have a
        # corpus directory, whichever module defines it.
        for module in target_modules():
            path = CORPUS.parent / f"{module.rsplit('.', 1)[1]}.py"
            names = _target_names(path.read_text("utf-8"))
            for name in names:
                self.assertIn(name, TARGETS, f"{path.name}: {name}")
                self.assertTrue((CORPUS / name).is_dir(), f"{path.name}: {name} has no corpus")


def _target_names(source: str) -> list[str]:
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "TARGETS" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            return [
                k.value for k in node.value.keys
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            ]
    return []


def _replay(self: unittest.TestCase, name: str) -> None:
    target = TARGETS[name]
    for path in corpus_files(name):
        started = time.process_time()
        try:
            target(path.read_bytes())
        except Exception as e:
            self.fail(f"{name} <- {path.relative_to(CORPUS)}: {type(e).__name__}: {e}")
        spent = time.process_time() - started
        self.assertLess(spent, SLOW, f"{name} <- {path.relative_to(CORPUS)}: {spent:.1f} s")


class ReplayTests(unittest.TestCase):
    """One test per target (added below), named for it."""


for _name in TARGETS:
    setattr(
        ReplayTests,
        f"test_{_name}",
        lambda self, _n=_name: _replay(self, _n),
    )
