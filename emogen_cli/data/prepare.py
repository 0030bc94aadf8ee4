"""`emogen prepare`: EmoSet -> balanced, filtered stage-2 manifest (+ optional latent cache)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from emogen_cli.core.config import Config
from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.reporting import Reporter
from emogen_cli.data.emoset import MANIFEST, PREPARED, filter_and_balance, load_prepared, scan_emoset, write_manifest


def prepare(config: Config, out: str | Path | None = None, cache_latents: bool = False, overwrite: bool = False,
            reporter: Reporter | None = None) -> dict[str, Any]:
    """Scan, filter, balance and write the manifest; returns the summary (also in prepared.json)."""
    reporter = reporter or Reporter()
    out_dir = Path(out or config.data.prepared)
    root = Path(config.data.root).resolve()
    # scene_is_first_object: how an image whose scene is its first object is listed (the manifest differs with it)
    settings = {"root": str(root), "splits": config.data.splits, "seed": config.runtime.seed,
                "balance": config.data.balance,
                "scene_is_first_object": "both kinds" if config.data.balance == "per_kind" else "scene"}
    existing = (out_dir / PREPARED).is_file()
    old_root = _old_root(out_dir) if existing else None
    if existing and not overwrite:
        prepared = load_prepared(out_dir)
        if {k: prepared.info.get(k) for k in settings} != settings:
            raise EmogenError(f"'{out_dir}' already holds a manifest prepared with other settings.",
                              "Pass --overwrite to replace it, or choose another --out.")
        reporter.info(f"Reusing the manifest in {out_dir} (same settings).")
        summary = prepared.info
        rows = prepared.rows
    else:
        scan = scan_emoset(root, config.data.splits, config.data.verify_images, config.data.num_workers, reporter)
        rows = filter_and_balance(scan, config.runtime.seed, config.data.balance)
        skipped = scan.skipped
        originals = [r for r in rows if r.copy == 0]
        if not originals:
            raise EmogenError(f"No usable image with a scene or object label was found under '{root}'.",
                              "Check that image/ and annotation/ match train.json/val.json/test.json.")
        summary = {
            **settings,
            "emotions": list(EMOTIONS),
            "scanned": len(scan.samples) + sum(skipped.values()) - skipped["no_scene_or_object"],
            "kept": len(originals),
            "kept_images": len({r.id for r in originals}),
            "listed_under_both_kinds": len(originals) - len({r.id for r in originals}),
            "total": len(rows),
            "per_emotion_before": {e: sum(r.emotion == e for r in originals) for e in EMOTIONS},
            "per_emotion_after": {e: sum(r.emotion == e for r in rows) for e in EMOTIONS},
            "per_kind_after": {k: {e: sum(r.emotion == e and r.kind == k for r in rows) for e in EMOTIONS}
                               for k in ("scene", "object")},
            "per_split": dict(Counter(r.split for r in originals)),
            "attributes": dict(sorted(Counter(r.attribute for r in originals).items(), key=lambda kv: (-kv[1], kv[0]))),
            "skipped": {reason: skipped[reason] for reason in sorted(skipped)},
            "skipped_examples": scan.examples,
        }
        # The old manifest stays until the new one is complete: only now is it replaced. prepared.json goes first
        # so that a stop between the two writes leaves no summary that describes the other manifest.
        (out_dir / PREPARED).unlink(missing_ok=True)
        write_manifest(out_dir, rows, summary)
        if existing and old_root != str(root):  # latents are keyed by image id, which is relative to the root
            shutil.rmtree(out_dir / "latents", ignore_errors=True)
    result = {**summary, "manifest": str(out_dir / MANIFEST)}
    if cache_latents:
        from emogen_cli.data.latents import cache_latents as run_cache

        if overwrite:
            _drop_stale_latents(out_dir / "latents", config)

        result["latents"] = run_cache(rows, root, out_dir / "latents", config.model.pretrained, config.model.revision,
                                      _resolution(config), batch_size=config.data.cache_batch_size,
                                      device=config.runtime.device, reporter=reporter,
                                      num_workers=config.data.num_workers)
    return result


def _resolution(config: Config) -> int:
    """The latents' size: model.resolution, or the model family's default when it is not set (SDXL: 1024)."""
    from emogen_cli.backbones import resolution, resolve

    return config.model.resolution if config.is_explicit("model.resolution") else resolution(config, resolve(config))


def _old_root(out_dir: Path) -> str | None:
    """The dataset root an earlier prepare recorded (None when its summary cannot be read)."""
    try:
        info = json.loads((out_dir / PREPARED).read_bytes().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return info.get("root") if isinstance(info, dict) else None


def _drop_stale_latents(folder: Path, config: Config) -> None:
    """--overwrite with another model, revision or resolution: the cached latents no longer apply.
    A matching cache is kept; the images it lacks are encoded by the run that follows."""
    from emogen_cli.data.latents import INDEX

    try:
        index = json.loads((folder / INDEX).read_bytes().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return  # no cache, or a damaged index that cache_latents rebuilds
    wanted = {"model": config.model.pretrained, "revision": config.model.revision, "resolution": _resolution(config)}
    if not isinstance(index, dict) or {k: index.get(k) for k in wanted} != wanted:
        shutil.rmtree(folder, ignore_errors=True)
