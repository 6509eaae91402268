"""The clock synchronisation policy: what to do about a meter clock's deviation from the
server's clock.

Below the lower bound nothing is done; between the bounds the meter's clock is set (or the
protocol's broadcast time sync is used); above the upper bound the deviation is too large
to trust either clock blindly: a clock-deviation alarm is raised and the clock is left
alone. Bounds come from the clock task's options (``lower``, ``upper``, as durations: ``10s``,
``5m``), so each group of meters gets its own task and bounds; a meter's metadata
``clock_lower``/``clock_upper`` overrides them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

import attrs

from fep.collect.schedule import parse_duration
from fep.errors import ConfigError
from fep.model import Meter

DEFAULT_LOWER = 10.0
DEFAULT_UPPER = 300.0


class ClockAction(enum.StrEnum):
    NONE = "none"  # within the lower bound
    SET = "set"  # corrected
    ALARM = "alarm"  # beyond the upper bound: alarm, no correction


def _seconds(value: Any, key: str) -> float:
    if isinstance(value, int | float):
        return float(value)
    return parse_duration(str(value), key)


@attrs.frozen
class ClockPolicy:
    lower: float = DEFAULT_LOWER
    upper: float = DEFAULT_UPPER

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.lower <= self.upper:
            raise ConfigError(
                f"clock bounds: need 0 <= lower ({self.lower:g} s) <= upper "
                f"({self.upper:g} s)",
                key="lower",
            )

    @classmethod
    def for_meter(cls, options: Mapping[str, Any], meter: Meter) -> ClockPolicy:
        lower = meter.metadata.get("clock_lower", options.get("lower", DEFAULT_LOWER))
        upper = meter.metadata.get("clock_upper", options.get("upper", DEFAULT_UPPER))
        return cls(_seconds(lower, "lower"), _seconds(upper, "upper"))

    def decide(self, deviation: float) -> ClockAction:
        """What to do about a deviation (meter minus server, seconds)."""
        size = abs(deviation)
        if size < self.lower:
            return ClockAction.NONE
        if size <= self.upper:
            return ClockAction.SET
        return ClockAction.ALARM


# What a clock check's job keeps as its result (the jobs table's ``result``): the deviation
# and what was done about it. fep.analysis reads it back (``read_outcome``) to validate the
# intervals a deviating clock stamped, so the text is made and read here only.
OUTCOMES = {ClockAction.SET: "clock set", ClockAction.ALARM: "alarm, not corrected",
            ClockAction.NONE: "within bounds"}
_OUTCOME = re.compile(r"clock deviation ([+-]?\d+(?:\.\d+)?) s \(bounds [^)]*\)"
                      r"(?:: (clock set|alarm, not corrected|within bounds))?")


# The result of a ``time-set`` command's job: the clock set, its deviation not read.
TIME_SET_RESULT = "clock set to the server's time"


def deviation_text(deviation: float, policy: ClockPolicy) -> str:
    """``clock deviation +12.0 s (bounds 10 s, 300 s)``: a check's deviation and bounds."""
    return (f"clock deviation {deviation:+.1f} s (bounds {policy.lower:g} s, "
            f"{policy.upper:g} s)")


def outcome_text(deviation: float, policy: ClockPolicy, action: ClockAction) -> str:
    """The result a clock check's job keeps: its deviation, bounds and action."""
    return f"{deviation_text(deviation, policy)}: {OUTCOMES[action]}"


def read_outcome(text: str | None) -> tuple[float, ClockAction | None] | None:
    """The deviation (meter minus server, seconds) and action of a clock check's result
    (None for the text of the alarm event, which says no action); None for any other
    text."""
    found = _OUTCOME.search(text or "")
    if found is None:
        return None
    actions = {v: k for k, v in OUTCOMES.items()}
    return float(found.group(1)), actions.get(found.group(2) or "")
