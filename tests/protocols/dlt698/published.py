"""Loads the published DL/T 698.45 frames and APDUs in tests/fixtures/dlt698 (sources named
there)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dlt698"


def published() -> dict[str, bytes]:
    items: dict[str, bytes] = {}
    for line in (FIXTURES / "published_frames.txt").read_text("utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, text = line.partition("=")
        items[name.strip()] = bytes.fromhex(text)
    return items


ITEMS = published()
FRAMES = {k: v for k, v in ITEMS.items() if k.startswith("frame_")}
APDUS = {k: v for k, v in ITEMS.items() if k.startswith("apdu_")}
