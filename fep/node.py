"""This node's own settings: ``[fep]`` (its name and data directory) and ``[log]`` (what it
writes to its JSON log), declared with their options (fep.options)."""

from __future__ import annotations

import attrs

from fep.options import Option, Section, choice, text


@attrs.frozen
class FepSection:
    node: str
    data_dir: str


@attrs.frozen
class LogSection:
    level: str
    json_file: str


FEP = Section("fep", {
    "node": Option(text, "fep-1", "name of this fep node (logs, job leases)"),
    "data_dir": Option(text, "var", "directory for the spool and local state"),
}, FepSection, required=True)

LOG = Section("log", {
    "level": Option(choice("debug", "info", "warn", "error", "critical"), "info",
                    "least severe log level written"),
    "json_file": Option(text, "", "also write JSON log events to this file; empty: no"),
}, LogSection)
