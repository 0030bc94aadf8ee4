"""A small synthetic dataset in the real EmoSet layout, with deliberately broken entries.

Layout (as EmoSet-118K ships it)::

    root/image/{emotion}/{emotion}_{id:05d}.jpg
    root/annotation/{emotion}/{emotion}_{id:05d}.json   # emotion, scene, object[], brightness, ...
    root/train.json, val.json, test.json                # [[emotion, image path, annotation path], ...]

Each emotion's images share a hue, so a classifier can learn them. The returned `expected` dict
says exactly what `emogen prepare` must find, so tests can assert counts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from emogen_cli.core.emotions import EMOTIONS, normalise_attribute

DEFAULT_COUNTS = dict(zip(EMOTIONS, (9, 8, 7, 6, 6, 5, 4, 3)))
ATTRIBUTES: dict[str, tuple[str, str, str]] = {  # scene, object, second object
    "amusement": ("Amusement Park", "balloon", "person"),
    "awe": ("mountain snowy", "waterfall", "sky"),
    "contentment": ("bedroom", "flower", "plant"),
    "excitement": ("athletic field", "football", "person"),
    "anger": ("army base", "tiger", "fire"),
    "disgust": ("landfill", "rubbish", "dirt"),
    "fear": ("cemetery", "spider", "mask"),
    "sadness": ("cemetery", "sculpture", "rain"),
}
HUES = dict(zip(EMOTIONS, ((250, 200, 40), (60, 140, 250), (120, 220, 120), (250, 120, 20),
                           (200, 20, 20), (110, 130, 30), (40, 20, 60), (90, 90, 110))))


def _split(i: int) -> str:
    return "test" if i % 10 == 9 else "val" if i % 10 == 8 else "train"


def _image(emotion: str, rng: np.random.Generator, size: int) -> Image.Image:
    base = np.asarray(HUES[emotion], dtype=np.float32)
    pixels = base + rng.normal(0, 25, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype("uint8"))


def make_synthetic_emoset(
    root: str | Path, counts: dict[str, int] | None = None, seed: int = 0, image_size: int = 32, broken: bool = True
) -> dict[str, Any]:
    """Write the dataset under `root`; return what a correct reader must find there."""
    root = Path(root)
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    rng = np.random.default_rng(seed)
    py_rng = random.Random(seed)
    splits: dict[str, list[list[str]]] = {"train": [], "val": [], "test": []}
    attributes: dict[str, int] = {}
    kept: dict[str, int] = {}

    def write(emotion: str, number: int, annotation: dict[str, Any] | str | None, image: bool | bytes = True,
              split: str = "train") -> None:
        stem = f"{emotion}_{number:05d}"
        image_rel, ann_rel = f"image/{emotion}/{stem}.jpg", f"annotation/{emotion}/{stem}.json"
        (root / image_rel).parent.mkdir(parents=True, exist_ok=True)
        (root / ann_rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(image, bytes):
            (root / image_rel).write_bytes(image)
        elif image:
            _image(emotion if emotion in HUES else "sadness", rng, image_size).save(root / image_rel, quality=90)
        if isinstance(annotation, str):
            (root / ann_rel).write_text(annotation)
        elif annotation is not None:
            (root / ann_rel).write_text(json.dumps(annotation))
        splits[split].append([emotion, image_rel, ann_rel])

    for emotion in EMOTIONS:
        scene, obj, obj2 = ATTRIBUTES[emotion]
        for i in range(counts.get(emotion, 0)):
            annotation: dict[str, Any] = {
                "image_id": f"{emotion}_{i + 1:05d}", "emotion": emotion,
                "brightness": round(py_rng.random(), 2), "colorfulness": round(py_rng.random(), 2),
                "facial_expression": "happy" if emotion == "amusement" and i % 2 else None,
                "human_action": None,
            }
            kind = i % 3  # 0: scene + objects (scene wins), 1: objects only (first wins), 2: scene only
            if kind in (0, 2):
                annotation["scene"] = scene
            if kind in (0, 1):
                annotation["object"] = [obj, obj2]
            attribute = normalise_attribute(scene if kind in (0, 2) else obj)
            attributes[attribute] = attributes.get(attribute, 0) + 1
            kept[emotion] = kept.get(emotion, 0) + 1
            write(emotion, i + 1, annotation, split=_split(i))

    skipped: dict[str, int] = {}
    if broken:
        def base(emotion: str, number: int) -> dict[str, Any]:
            return {"image_id": f"{emotion}_{number:05d}", "emotion": emotion, "scene": "street", "object": ["car"]}

        write("amusement", 90001, base("amusement", 90001), image=b"\xff\xd8\xff\xe0 this is not a jpeg")
        write("awe", 90002, None)
        write("contentment", 90003, {"image_id": "contentment_90003", "emotion": "contentment", "object": []})
        write("boredom", 90004, base("boredom", 90004))
        write("fear", 90005, "{ not json")
        write("sadness", 90006, base("sadness", 90006), image=False)
        skipped = {"corrupt_image": 1, "missing_annotation": 1, "no_scene_or_object": 1, "unknown_emotion": 1,
                   "malformed_annotation": 1, "missing_image": 1}

    for split, rows in splits.items():
        (root / f"{split}.json").write_text(json.dumps(rows, indent=1))
    largest = max(kept.values())
    return {
        "kept": kept,
        "attributes": attributes,
        "skipped": skipped,
        "balanced": {e: largest for e in kept},
        "total_kept": sum(kept.values()),
        "total_balanced": largest * len(kept),
        # Stage 1 uses every labelled image, including those without scene/object.
        "stage1_usable": sum(kept.values()) + (1 if broken else 0),
    }
