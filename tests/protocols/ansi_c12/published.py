"""Loads the published C12.18 packets in tests/fixtures/ansi_c12 (sources named there)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ansi_c12"


def published_packets() -> dict[str, bytes]:
    packets: dict[str, bytes] = {}
    for line in (FIXTURES / "published_packets.txt").read_text("utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, text = line.partition("=")
        packets[name.strip()] = bytes.fromhex(text)
    return packets


PACKETS = published_packets()


def published_tables() -> dict[str, bytes]:
    """The published C12.19 table contents (tests/fixtures/ansi_c12/published_tables.txt)."""
    tables: dict[str, bytes] = {}
    for line in (FIXTURES / "published_tables.txt").read_text("utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, text = line.partition("=")
        tables[name.strip()] = bytes.fromhex(text)
    return tables


TABLES = published_tables()
