"""The ``[collect]`` settings, typed: the collection engine's own, declared with their options
(fep.options; etc/fep.ini documents each)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from fep.collect.commands import parse_approval
from fep.collect.limits import parse_pools
from fep.options import (
    Option,
    Section,
    expects,
    non_negative_int,
    positive_float,
    positive_int,
    text,
    yes_no,
)


@attrs.frozen
class CollectSection:
    period: float
    timeout: float
    concurrency: int
    enabled: bool
    default_task: bool
    poll: float
    lease: float
    # route scheme -> lines its routes share (``dialup=4``)
    shared_lines: Mapping[str, int]
    cell_permits: int
    apn_permits: int
    wakeup_timeout: float
    # commands that need approval by a second person
    approval: frozenset[str]
    firmware_dir: str


COLLECT = Section("collect", {
    "period": Option(positive_float, 900.0, "seconds between two reads of a meter"),
    "timeout": Option(positive_float, 10.0, "seconds a meter has to answer each step"),
    "concurrency": Option(positive_int, 50, "meter sessions open at once, at most"),
    "enabled": Option(yes_no, True, "run the collection engine (tasks, jobs, commands)"),
    "default_task": Option(
        yes_no, True, "keep a task 'default' reading every meter's registers each period"
    ),
    "poll": Option(positive_float, 1.0, "seconds between looks for jobs made elsewhere"),
    "lease": Option(
        positive_float, 60.0, "seconds a node's lease on a job lasts (renewed meanwhile)"
    ),
    "shared_lines": Option(expects("SCHEME=LINES, ...")(parse_pools), "",
                           "route schemes whose routes share a pool of lines: dialup=4"),
    "cell_permits": Option(non_negative_int, 0, "sessions one radio cell serves at once (0: any)"),
    "apn_permits": Option(non_negative_int, 0, "sessions one APN serves at once (0: any)"),
    "wakeup_timeout": Option(
        positive_float, 120.0, "seconds to wait for a woken GPRS modem to dial in"
    ),
    "approval": Option(
        expects("a list of command names")(parse_approval),
        "disconnect, reconnect, firmware-upgrade",
        "commands that need approval by a second person before they run",
    ),
    "firmware_dir": Option(
        text, "", "firmware images, named by firmware-upgrade; empty means DATA_DIR/firmware"
    ),
}, CollectSection)
