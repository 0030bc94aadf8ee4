"""Output files of the edit and valence-arousal grid commands (generate's own files: writer.py).

PNGs carry their parameters as JSON in the "emogen" text chunk (what `emogen evaluate` reads);
`index.jsonl` lists them (both through writer.py, as `generate` writes them); contact sheets,
several rows of images scaled to one height, are named `grid-*` so galleries skip them. Every file is
written atomically, so an interrupted run never leaves a truncated image behind.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from PIL import Image

from emogen_cli.core.files import atomic_save_image

SHEET_HEIGHT = 256  # pixels per row of a contact sheet (big photos are shown scaled down)


def slug(text: str) -> str:
    """A short file-name-safe form of `text` ("My Photo (1)" -> "my-photo-1")."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("{}", "")).strip("-")[:40] or "image"


def save_png(path: Path, image: Image.Image, meta: dict[str, Any], summary: str = "") -> dict[str, Any]:
    """Write `image` with `meta` in its text chunks (writer.save_png: atomic); returns the index record."""
    from emogen_cli.inference.writer import save_png as write

    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, image, meta, summary)
    return {"path": str(path), **meta}


def append_index(out_dir: Path, records: list[dict[str, Any]]) -> None:
    """Add `records` to out_dir/index.jsonl (writer.merge_index: under the folder lock, atomically)."""
    from emogen_cli.inference.writer import merge_index

    merge_index(out_dir, records)


def _fit(image: Image.Image, height: int) -> Image.Image:
    w, h = image.size
    if h == height:
        return image.convert("RGB")
    return image.convert("RGB").resize((max(1, round(w * height / h)), height), Image.LANCZOS)


def sheet(rows: list[list[Image.Image]], height: int = SHEET_HEIGHT, gap: int = 4) -> Image.Image:
    """A contact sheet: each row's images side by side, scaled to `height` pixels, on white."""
    height = min(height, max(im.size[1] for row in rows for im in row))
    fitted = [[_fit(im, height) for im in row] for row in rows]
    width = max(sum(im.size[0] for im in row) + gap * (len(row) - 1) for row in fitted)
    canvas = Image.new("RGB", (width, len(fitted) * height + gap * (len(fitted) - 1)), "white")
    for r, row in enumerate(fitted):
        x = 0
        for im in row:
            canvas.paste(im, (x, r * (height + gap)))
            x += im.size[0] + gap
    return canvas


def save_sheet(path: Path, rows: list[list[Image.Image]], height: int = SHEET_HEIGHT) -> str:
    atomic_save_image(path, sheet(rows, height), format="PNG")
    return str(path)
