"""Loads the published DL/T 645 frames in tests/fixtures/dlt645 (sources named there)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dlt645"


def published_frames() -> dict[str, bytes]:
    frames: dict[str, bytes] = {}
    for line in (FIXTURES / "published_frames.txt").read_text("utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, text = line.partition("=")
        frames[name.strip()] = bytes.fromhex(text)
    return frames


FRAMES = published_frames()
