"""Reading EmoSet and building the stage-2 training manifest (paper: filter, then balance).

`scan_emoset` reads the official layout and returns every usable labelled image plus skip counts
by reason; `prepare_manifest` keeps images with a scene or object (scene preferred, else the first,
most confident object), normalises the attribute name and balances emotions by seeded random
oversampling (by default within the scene-labelled and the object-labelled images separately, as the
official dataset_balance.py; there, an image whose scene is also its first object is listed under both
kinds, and so it is here). The manifest is JSON Lines (one row per training sample, duplicates included) next
to `prepared.json`, which records the dataset root, the settings and the summary.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from emogen_cli.core.choices import BALANCE
from emogen_cli.core.emotions import EMOTIONS, normalise_attribute
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.files import atomic_path, atomic_write_text, read_json
from emogen_cli.core.images import check_image
from emogen_cli.core.reporting import Reporter, progress

MANIFEST = "manifest.jsonl"
PREPARED = "prepared.json"
SKIP_REASONS = ("missing_annotation", "malformed_annotation", "unknown_emotion", "missing_image", "corrupt_image",
                "no_scene_or_object", "malformed_entry", "unsafe_path", "duplicate")
ALL_SPLITS = ("train", "val", "test")


@dataclass
class Sample:
    """One labelled EmoSet image."""

    id: str
    emotion: str
    split: str
    image: str  # path relative to the dataset root
    scene: str | None = None
    objects: list[str] = field(default_factory=list)

    @property
    def attribute(self) -> tuple[str, str] | None:
        """(kind, normalised name): the scene if any, else the first object, else None."""
        if self.scene:
            return "scene", normalise_attribute(self.scene)
        if self.objects:
            return "object", normalise_attribute(self.objects[0])
        return None

    @property
    def listed_under_both_kinds(self) -> bool:
        """The scene is also the first object: the official lists hold the image as scene- and object-labelled."""
        return bool(self.scene and self.objects
                    and normalise_attribute(self.scene) == normalise_attribute(self.objects[0]))


@dataclass
class Row:
    """One manifest row: a stage-2 training sample."""

    id: str
    image: str
    emotion: str
    attribute: str
    kind: str
    split: str
    copy: int = 0  # 0 for the original, 1.. for oversampled duplicates


@dataclass
class ScanResult:
    samples: list[Sample]
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, what: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(what)


def safe_relative(path: str) -> bool:
    """A dataset path that stays inside the root: relative, with no '..' climbing out of it."""
    if not path or "\0" in path:
        return False
    pure = PurePosixPath(path.replace("\\", "/"))
    if pure.is_absolute() or PureWindowsPath(path).drive:
        return False
    depth = 0
    for part in pure.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return False
    return True


def inside_root(root: Path, relative: str, resolved_root: Path | None = None) -> bool:
    """`root / relative`, symbolic links followed, stays inside the (resolved) dataset root: a link out of the
    dataset is unsafe like a '..' path. A path that does not exist is judged by the part of it that does."""
    try:
        return (root / relative).resolve().is_relative_to(resolved_root or root.resolve())
    except (OSError, RuntimeError, ValueError):  # a link loop, a name the OS refuses
        return False


def _entries(root: Path, splits: list[str], result: "ScanResult") -> list[tuple[str, str, str, str]]:
    """(split, emotion, image path, annotation path) from the split lists, or a folder walk.

    Entries that are not [emotion, image path, annotation path] are counted as malformed_entry. An
    explicit subset of splits (e.g. only train) needs each of its lists: using every image instead
    would silently train on the test split.
    """
    missing = [s for s in splits if not (root / f"{s}.json").is_file()]
    if missing and set(splits) != set(ALL_SPLITS):
        raise EmogenError(f"The split list {', '.join(f'{s}.json' for s in missing)} is missing in '{root}'.",
                          f"Restore it from the EmoSet archive, or use every split (data.splits: {list(ALL_SPLITS)}).")
    lists = [s for s in splits if s not in missing]
    if lists:
        out = []
        for split in lists:
            file = root / f"{split}.json"
            try:
                rows = json.loads(file.read_bytes().decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise EmogenError(f"{file} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc.reason}).",
                                  "Restore the file from the EmoSet archive.") from None
            except RecursionError:
                raise EmogenError(f"{file} is not a split list: its JSON is nested too deeply to read.",
                                  "Restore the file from the EmoSet archive.") from None
            if not isinstance(rows, list):
                raise EmogenError(f"{file} holds a JSON {type(rows).__name__}, not a list of "
                                  "[emotion, image path, annotation path] entries.", "Restore the file from the EmoSet archive.")
            for row in rows:
                if not (isinstance(row, list) and len(row) == 3 and all(isinstance(x, str) for x in row)):
                    result.skip("malformed_entry", f"{split}.json: {str(row)[:60]}")
                    continue
                out.append((split, *row))
        return out
    if not (root / "annotation").is_dir():
        raise EmogenError(f"'{root}' does not look like EmoSet: no train.json/val.json/test.json and no annotation/ folder.",
                          "Point --data at the folder that holds image/, annotation/ and train.json.")
    return [("all", path.parent.name, f"image/{path.parent.name}/{path.stem}.jpg", str(path.relative_to(root)))
            for path in sorted((root / "annotation").glob("*/*.json"))]


def scan_emoset(root: str | Path, splits: list[str] | None = None, verify_images: bool = True,
                num_workers: int = 2, reporter: Reporter | None = None) -> ScanResult:
    """Read every labelled image of an EmoSet root; broken entries are skipped and counted.

    An image listed twice (in one split or two) is kept once (the first listing) and the repeat
    counted as a duplicate. Ids are file stems; when two different images share a stem (the same
    name under two emotions) both get their path as id, so caches keyed by id never mix them.
    """
    root = Path(root)
    reporter = reporter or Reporter()
    if not root.is_dir():
        raise EmogenError(f"EmoSet root '{root}' {'is a file, not a folder' if root.exists() else 'does not exist'}.",
                          "Download EmoSet and pass its folder with --data (or set data.root in the config).")
    result = ScanResult(samples=[])
    real_root = root.resolve()
    candidates: list[Sample] = []
    seen: set[str] = set()
    for split, emotion, image_rel, ann_rel in _entries(root, splits or list(ALL_SPLITS), result):
        stem = Path(ann_rel).stem
        if not (safe_relative(image_rel) and safe_relative(ann_rel)):
            result.skip("unsafe_path", image_rel if not safe_relative(image_rel) else ann_rel)
            continue
        image_inside = inside_root(root, image_rel, real_root)
        if not (image_inside and inside_root(root, ann_rel, real_root)):  # a symbolic link out of the dataset
            result.skip("unsafe_path", ann_rel if image_inside else image_rel)
            continue
        key = PurePosixPath(image_rel.replace("\\", "/")).as_posix().removeprefix("./")
        if key in seen:
            result.skip("duplicate", key)
            continue
        seen.add(key)
        if emotion.lower() not in EMOTIONS:
            result.skip("unknown_emotion", stem)
            continue
        ann_path = root / ann_rel
        if not ann_path.is_file():
            result.skip("missing_annotation", stem)
            continue
        try:
            ann = json.loads(ann_path.read_bytes().decode("utf-8"))
            if not isinstance(ann, dict):
                raise ValueError("not an object")
            scene = ann.get("scene") or None
            objects = ann.get("object") or []
            if isinstance(objects, str):
                objects = [objects]
            if not (scene is None or isinstance(scene, str)) or not isinstance(objects, list) \
                    or not all(isinstance(o, str) for o in objects):
                raise ValueError("scene/object of the wrong type")
            label = ann.get("emotion", emotion)
            if not isinstance(label, str):
                raise ValueError("emotion is not a string")
        except (ValueError, UnicodeDecodeError, OSError, RecursionError):  # RecursionError: nested too deeply
            result.skip("malformed_annotation", stem)
            continue
        label = label.lower()
        if label not in EMOTIONS:
            result.skip("unknown_emotion", stem)
            continue
        candidates.append(Sample(id=stem, emotion=label, split=split, image=key, scene=scene,
                                 objects=[o for o in objects if o.strip()]))
    stems = Counter(s.id for s in candidates)
    for sample in candidates:
        if stems[sample.id] > 1:  # the same file name for different images: the path tells them apart
            sample.id = str(PurePosixPath(sample.image).with_suffix(""))

    if verify_images:
        with progress(reporter, "Checking images", len(candidates)):
            def check(sample: Sample) -> str | None:
                reason = check_image(root / sample.image)
                reporter.advance("Checking images")
                return reason

            with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
                reasons = list(pool.map(check, candidates))
    else:
        reasons = [None if (root / s.image).is_file() else "missing_image" for s in candidates]
    for sample, reason in zip(candidates, reasons):
        if reason:
            result.skip(reason, sample.id)
        else:
            result.samples.append(sample)
    return result


def filter_and_balance(scan: ScanResult, seed: int, balance: str | bool = "per_kind") -> list[Row]:
    """The paper's subset: one attribute per image (scene > first object); oversample to balance.

    `balance`: "per_kind" (the official dataset_balance.py: the scene-labelled and the object-labelled
    images are balanced separately, each emotion oversampled to the largest emotion count within its
    kind), "union" (all kept images balanced together) or "none". Booleans of earlier versions read as
    per_kind (true) and none (false). Images without a scene or object are recorded in `scan` as skipped.

    With per_kind, an image whose scene equals its first object is listed under both kinds (two rows with
    copy 0, one per kind), as the official scene and object lists hold it: the object pass of
    dataset_balance.py keeps an image that has a scene when that scene is the object folder's name. union
    and none keep one row per image (the scene first), emogen's earlier rule.
    """
    if isinstance(balance, bool):
        balance = "per_kind" if balance else "none"
    if balance not in BALANCE:
        raise EmogenError(f"Unknown balancing '{balance}'.", f"Use one of {', '.join(BALANCE)}.")
    rows: list[Row] = []
    for s in scan.samples:
        attribute = s.attribute
        if attribute is None:
            scan.skip("no_scene_or_object", s.id)
            continue
        rows.append(Row(id=s.id, image=s.image, emotion=s.emotion, attribute=attribute[1], kind=attribute[0],
                        split=s.split))
        if balance == "per_kind" and attribute[0] == "scene" and s.listed_under_both_kinds:
            rows.append(Row(id=s.id, image=s.image, emotion=s.emotion, attribute=attribute[1], kind="object",
                            split=s.split))
    if balance == "none" or not rows:
        return rows
    rng = random.Random(seed)
    groups = [rows] if balance == "union" else [[r for r in rows if r.kind == k] for k in ("scene", "object")]
    out: list[Row] = []
    for group in groups:
        out.extend(_oversample(group, rng))
    return out


def _oversample(rows: list[Row], rng: random.Random) -> list[Row]:
    """Every emotion of `rows` up to the largest emotion's count: whole copies first, then a random subset
    for the remainder (as even as oversampling gets; emotions absent from `rows` stay absent)."""
    by_emotion = {e: [r for r in rows if r.emotion == e] for e in EMOTIONS}
    largest = max((len(v) for v in by_emotion.values()), default=0)
    out: list[Row] = []
    for originals in by_emotion.values():
        out.extend(originals)
        if not originals:
            continue
        need, copy = largest - len(originals), 1
        while need > 0:
            chosen = originals if need >= len(originals) else rng.sample(originals, need)
            out.extend(Row(**{**asdict(r), "copy": copy}) for r in chosen)
            need -= len(chosen)
            copy += 1
    return out


def write_manifest(out_dir: Path, rows: list[Row], info: dict[str, Any]) -> None:
    """Write manifest.jsonl and prepared.json atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / MANIFEST) as tmp, tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(asdict(row)) + "\n")
    atomic_write_text(out_dir / PREPARED, json.dumps(info, indent=2))


@dataclass
class Prepared:
    """A prepared training set: the dataset root, the manifest rows and the summary."""

    root: Path
    rows: list[Row]
    info: dict[str, Any]
    path: Path

    @property
    def attributes(self) -> list[str]:
        return sorted({r.attribute for r in self.rows})

    @property
    def unique_rows(self) -> list[Row]:
        """One row per image: the originals (copy 0), an image listed under both kinds once."""
        seen: set[str] = set()
        out = []
        for r in self.rows:
            if r.copy == 0 and r.id not in seen:
                seen.add(r.id)
                out.append(r)
        return out


def load_prepared(path: str | Path) -> Prepared:
    """A prepared folder; damaged, non-UTF-8 or mistyped manifests are one line naming the file."""
    path = Path(path)
    if not (path / PREPARED).is_file() or not (path / MANIFEST).is_file():
        raise EmogenError(f"'{path}' is not a prepared dataset (no {PREPARED} / {MANIFEST}).",
                          "Run `emogen prepare --out DIR` first and pass that DIR.")
    hint = "Run `emogen prepare --overwrite` again."
    info = read_json(path / PREPARED, "Prepared summary", hint)
    if not isinstance(info, dict) or not isinstance(info.get("root"), str):
        raise EmogenError(f"Prepared summary '{path / PREPARED}' is not an object with the dataset root.", hint)
    try:
        text = (path / MANIFEST).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EmogenError(f"Manifest '{path / MANIFEST}' is not UTF-8 text (byte {exc.start}).", hint) from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            row = Row(**data)
            if not all(isinstance(getattr(row, k), str) for k in ("id", "image", "emotion", "attribute", "kind", "split")) \
                    or not isinstance(row.copy, int):
                raise TypeError("a field has the wrong type")
        except (json.JSONDecodeError, TypeError) as exc:
            raise EmogenError(f"Manifest '{path / MANIFEST}' line {number} is damaged ({exc}).", hint) from None
        if row.emotion not in EMOTIONS or not safe_relative(row.image):
            raise EmogenError(f"Manifest '{path / MANIFEST}' line {number} has an unknown emotion or an unsafe path.",
                              hint)
        rows.append(row)
    if not rows:
        raise EmogenError(f"The manifest in '{path}' is empty.", "Check the dataset root and run `emogen prepare` again.")
    return Prepared(root=Path(info["root"]), rows=rows, info=info, path=path)
