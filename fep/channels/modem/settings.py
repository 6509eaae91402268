"""The ``[modems]`` settings, typed: the dial-up modem pool's lines, model, dialling and retry
policy, declared with their options (fep.options); ``pool_from_config`` in pool.py builds the
pool from them."""

from __future__ import annotations

import attrs

from fep.channels.modem.at import PROFILES
from fep.options import (
    Option,
    Section,
    choice,
    expects,
    non_negative_float,
    non_negative_int,
    positive_float,
    text,
)

# (name, serial route, model or "") of one configured modem line
ModemLine = tuple[str, str, str]


@expects("a modem model")
def modem_model(text: str) -> str:
    value = text.strip()
    if value not in PROFILES:
        raise ValueError(f"known models: {', '.join(sorted(PROFILES))}")
    return value


@expects("modem lines")
def modem_lines(text: str) -> tuple[ModemLine, ...]:
    """``[modems] lines``: one modem per line (or comma-separated), ``NAME ROUTE [MODEL]``
    -> (name, route, model or "")."""
    found: list[ModemLine] = []
    for item in text.replace(",", "\n").splitlines():
        words = item.split()
        if not words:
            continue
        if len(words) not in (2, 3) or not words[1].startswith("serial:"):
            raise ValueError(f"expected NAME serial:DEVICE[:BAUD:FRAME] [MODEL], got {item!r}")
        if any(name == words[0] for name, _, _ in found):
            raise ValueError(f"modem {words[0]!r} named twice")
        found.append((words[0], words[1], modem_model(words[2]) if len(words) == 3 else ""))
    return tuple(found)


@expects("init commands separated by |")
def init_commands(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split("|") if c.strip())


@attrs.frozen
class ModemsSection:
    lines: tuple[ModemLine, ...]
    model: str
    init: tuple[str, ...]
    prefix: str
    dialing: str
    dial_timeout: float
    guard: float
    hangup: str
    hangup_timeout: float
    busy_delay: float
    busy_retries: int
    backoff: float
    backoff_factor: float
    backoff_max: float
    retries: int
    open_timeout: float
    answer: str = "no"
    call_time: float = 300.0

    @property
    def init_commands(self) -> tuple[str, ...] | None:
        """The configured init commands, None for the model's own."""
        return self.init or None

    def line_list(self) -> list[ModemLine]:
        """(name, serial route, model) of every modem line."""
        return [(name, route, model or self.model) for name, route, model in self.lines]


MODEMS = Section("modems", {
    "lines": Option(
        modem_lines, "", "dial-up modems, one per line: NAME serial:DEVICE[:BAUD:FRAME]"
        " [MODEL]; empty: no modem pool"
    ),
    "model": Option(modem_model, "generic", "modem model of lines that name none"),
    "init": Option(init_commands, "", "init commands separated by |, instead of the model's"),
    "prefix": Option(text, "", "dialled before every number (e.g. 0, for an outside line)"),
    "dialing": Option(choice("tone", "pulse"), "tone", "tone (ATDT) or pulse (ATDP)"),
    "dial_timeout": Option(positive_float, 60.0, "seconds for the result of a dial"),
    "guard": Option(positive_float, 1.0, "escape guard time in seconds (the modems' S12)"),
    "hangup": Option(choice("escape", "dtr"), "escape", "escape (+++ then ATH) or dtr (drop DTR)"),
    "hangup_timeout": Option(positive_float, 10.0, "seconds for each hang-up step"),
    "busy_delay": Option(non_negative_float, 30.0, "seconds before calling a BUSY site again"),
    "busy_retries": Option(non_negative_int, 3, "times a BUSY site is called again"),
    "backoff": Option(non_negative_float, 120.0, "first back-off after NO ANSWER/NO CARRIER"),
    "backoff_factor": Option(positive_float, 2.0, "back-off growth per failed attempt"),
    "backoff_max": Option(non_negative_float, 1800.0, "longest back-off in seconds"),
    "retries": Option(non_negative_int, 2, "times a site is called again after back-off"),
    "open_timeout": Option(positive_float, 10.0, "seconds to open a modem's port"),
    "answer": Option(choice("no", "yes"), "no",
                     "yes: answer meters that call in (RING, caller id, ATA)"),
    "call_time": Option(positive_float, 300.0, "longest a call in may last, seconds"),
}, ModemsSection)
