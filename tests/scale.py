"""How big the acceptance-scale tests run.

``make test`` (and CI) runs them at a size that keeps the whole suite within a few minutes on
two cores and still exercises every path they prove (several lines, faults, retries, pauses);
``FEP_TEST_SCALE=full`` (``make test-full``) runs them at the figures the issues name (a
thousand meters, a 500-meter plan). Each test says both figures where it uses them.
"""

from __future__ import annotations

import os

FULL = os.environ.get("FEP_TEST_SCALE", "").strip().lower() == "full"


def scaled(full: int, quick: int) -> int:
    """``full`` under ``FEP_TEST_SCALE=full``, else ``quick``."""
    return full if FULL else quick


def examples(full: int) -> int:
    """Hypothesis examples for a property test whose many examples cost seconds:
    ``full`` under ``FEP_TEST_SCALE=full``, a quarter of it (at least 100) otherwise.
    The property and its strategies are the same at both sizes; only how many inputs are
    tried differs, and the fuzzing run (``make fuzz``) goes much further than either."""
    return scaled(full, max(100, full // 4))
