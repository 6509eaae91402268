"""Loads the published Q/GDW 1376.1 frames in tests/fixtures/gw3761 (sources named there)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gw3761"


def published_frames() -> dict[str, bytes]:
    frames: dict[str, bytes] = {}
    for line in (FIXTURES / "published_frames.txt").read_text("utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, text = line.partition("=")
        frames[name.strip()] = bytes.fromhex(text)
    return frames


FRAMES = published_frames()
GOOD = {name: raw for name, raw in FRAMES.items() if not name.startswith("bad_")}
