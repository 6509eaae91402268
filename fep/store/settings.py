"""The store's settings: ``[store]`` (where records are committed) and ``[spool]`` (the
journal in front of it), declared with their options (fep.options)."""

from __future__ import annotations

import attrs

from fep.options import Option, Section, positive_float, positive_int, text


@attrs.frozen
class StoreSection:
    url: str
    pool_size: int


@attrs.frozen
class SpoolSection:
    directory: str
    batch_size: int
    max_delay: float
    flush_timeout: float


STORE = Section("store", {
    "url": Option(text, "sqlite:var/fep.sqlite",
                  "sqlite:PATH (embedded default) or postgresql://user@host:port/db"),
    "pool_size": Option(positive_int, 2, "PostgreSQL connections kept open (and as many for COPY)"),
}, StoreSection, required=True)

SPOOL = Section("spool", {
    "directory": Option(text, "", "journal directory; empty means DATA_DIR/spool"),
    "batch_size": Option(positive_int, 5000, "most records per store transaction"),
    "max_delay": Option(positive_float, 0.05, "seconds a record may wait to be batched"),
    "flush_timeout": Option(positive_float, 30.0,
                            "seconds shutdown waits for the store to commit the spool"),
}, SpoolSection)
