"""Folders of generated images, each image with its emotion (PNG metadata, else its sub-folder name).

Works on emogen's own output (the "emogen" PNG text chunk) and on the official scripts' layout
(img/{emotion}/*.jpg), so both can be labelled and evaluated alike.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import EmogenError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
# Sub-folders that hold no gallery images: best-of candidates that lost (`--keep-all`) and the
# reports of `emogen evaluate` (metrics.png, ...), which must not be counted as generated images.
SKIPPED_FOLDERS = {"rejected", "evaluation"}
# The metadata keys evaluation reads (the emotion, and what the edit metrics need): a gallery keeps only
# these per image, so scanning 100,000 images holds ~100 bytes each, not each image's whole metadata.
KEPT_META = ("emotion", "kind", "target", "source", "source_sha256", "best_of")


@dataclass
class GalleryImage:
    path: Path
    emotion: str | None  # "awe", "amusement+fear" (fused), or None when nothing says
    meta: dict[str, Any] = field(default_factory=dict)


def read_metadata(path: Path) -> dict[str, Any]:
    """The "emogen" PNG text chunk as a dict ({} when absent). Raises OSError if the image does not decode."""
    with Image.open(path) as image:
        image.load()
        text = getattr(image, "text", {}) or {}
    try:
        meta = json.loads(text.get("emogen", "{}"))
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def scan_gallery(folder: str | Path) -> tuple[list[GalleryImage], list[str]]:
    """Every image under `folder` (contact sheets `grid-*` and the sub-folders SKIPPED_FOLDERS excluded)
    and the paths that failed to open."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EmogenError(f"'{folder}' is not a folder of images.", "Pass the --out folder of `emogen generate`.")
    images: list[GalleryImage] = []
    broken: list[str] = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith(("grid-", ".")):
            continue
        if SKIPPED_FOLDERS & set(path.relative_to(folder).parts[:-1]):
            continue
        try:
            meta = read_metadata(path)
        except (OSError, SyntaxError, ValueError):
            broken.append(str(path))
            continue
        emotion = meta.get("emotion")
        if emotion is None and path.parent != folder and path.parent.name.lower() in EMOTIONS:
            emotion = path.parent.name.lower()
        images.append(GalleryImage(path, emotion, {k: meta[k] for k in KEPT_META if k in meta}))
    return images, broken


def by_emotion(images: list[GalleryImage]) -> dict[str, list[GalleryImage]]:
    """Images grouped by emotion, in the official class order first, then fused and unlabelled groups."""
    groups: dict[str, list[GalleryImage]] = defaultdict(list)
    for image in images:
        groups[image.emotion or "unknown"].append(image)
    order = [e for e in EMOTIONS if e in groups] + sorted(g for g in groups if g not in EMOTIONS)
    return {g: groups[g] for g in order}
