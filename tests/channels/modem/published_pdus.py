"""Loads the published SMS PDUs in tests/fixtures/sms (sources named there)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sms"


def published_pdus() -> dict[str, str]:
    pdus: dict[str, str] = {}
    for line in (FIXTURES / "published_pdus.txt").read_text("utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, text = line.partition("=")
        pdus[name.strip()] = text.strip()
    return pdus


PDUS = published_pdus()
