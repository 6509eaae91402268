"""Published DLMS captures kept under tests/fixtures/dlms (each file names its source)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dlms"


def hex_fixture(name: str) -> bytes:
    """The bytes of a ``.hex`` fixture: hex pairs, ``#`` comment lines ignored."""
    text = (FIXTURES / name).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return bytes.fromhex(" ".join(lines))
