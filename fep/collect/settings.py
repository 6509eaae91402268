"""The ``[collect]`` settings, typed: the collection engine's own (fep.config reads them from
the ini file; etc/fep.ini documents each)."""

from __future__ import annotations

import attrs


@attrs.frozen
class CollectSection:
    period: float
    timeout: float
    concurrency: int
    enabled: bool
    default_task: bool
    poll: float
    lease: float
    shared_lines: str
    cell_permits: int
    apn_permits: int
    wakeup_timeout: float
    approval: str
    firmware_dir: str
