"""A resumable cache of VAE latent distributions for stage 2 (safetensors shards).

Each image is stored as the VAE's diagonal-Gaussian parameters (mean and log-variance, 2*C
channels), so training still draws a fresh latent sample every step exactly as encoding on the
fly would, without running the VAE encoder. `index.json` lists finished shards; an interrupted
run continues where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from emogen_cli.core.errors import EmogenError
from emogen_cli.core.files import atomic_save_safetensors, atomic_write_text
from emogen_cli.core.images import DIFFUSION_MEAN, DIFFUSION_STD, load_rgb, resize_center_crop, to_array
from emogen_cli.core.reporting import Reporter, progress
from emogen_cli.data.emoset import Row

INDEX = "index.json"


def _signature(model: str, revision: str | None, resolution: int) -> dict[str, Any]:
    return {"model": model, "revision": revision, "resolution": resolution}


def cache_latents(rows: list[Row], root: Path, out_dir: Path, model: str, revision: str | None, resolution: int,
                  batch_size: int = 8, shard_size: int = 512, device: str = "auto", dtype: str = "float16",
                  reporter: Reporter | None = None) -> dict[str, Any]:
    """Encode every unique image of `rows` once; skip shards an earlier run already wrote."""
    from emogen_cli.core.pretrained import load_vae
    from emogen_cli.core.runtime import resolve_device

    reporter = reporter or Reporter()
    out_dir.mkdir(parents=True, exist_ok=True)
    signature = _signature(model, revision, resolution)
    index = _read_index(out_dir, reporter) or {**signature, "shards": {}}
    if {k: index.get(k) for k in signature} != signature:
        raise EmogenError(f"The latent cache in '{out_dir}' was made with {({k: index.get(k) for k in signature})}, "
                          f"not {signature}.", "Use another --out folder or pass --overwrite to rebuild it.")
    done = {i for ids in index["shards"].values() for i in ids}
    todo: dict[str, str] = {}
    for row in rows:
        if row.id not in done:
            todo.setdefault(row.id, row.image)
    items = list(todo.items())
    if not items:
        return {"cached": len(done), "new": 0, "path": str(out_dir)}

    dev = resolve_device(device)
    vae = load_vae(model, revision)
    half = dev.type == "cuda" and not getattr(vae.config, "force_upcast", False)  # SDXL's VAE overflows in fp16
    vae = vae.to(dev, dtype=torch.float16 if half else torch.float32).eval()
    store = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    shard_no = len(index["shards"])
    with progress(reporter, "Caching latents", len(items)):
        for start in range(0, len(items), shard_size):
            chunk = items[start:start + shard_size]
            tensors: dict[str, torch.Tensor] = {}
            for b in range(0, len(chunk), batch_size):
                part = chunk[b:b + batch_size]
                pixels = np.stack([to_array(resize_center_crop(load_rgb(root / rel), resolution), DIFFUSION_MEAN,
                                            DIFFUSION_STD) for _, rel in part])
                with torch.inference_mode():
                    params = vae.encode(torch.from_numpy(pixels).to(dev, vae.dtype)).latent_dist.parameters
                for (image_id, _), p in zip(part, params):
                    tensors[image_id] = p.to(store).cpu().contiguous()
                reporter.advance("Caching latents", len(part))
            while (name := f"shard-{shard_no:05d}.safetensors") in index["shards"]:
                shard_no += 1
            atomic_save_safetensors(out_dir / name, tensors, metadata={"format": "pt"})
            index["shards"][name] = list(tensors)
            atomic_write_text(out_dir / INDEX, json.dumps(index))
            shard_no += 1
    return {"cached": len(done) + len(items), "new": len(items), "path": str(out_dir)}


def _shard_ok(path: Path) -> bool:
    """A shard whose header and data are whole (a truncated file fails to open)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if keys:
                f.get_slice(keys[-1])  # the last tensor's offsets lie within the file
        return True
    except Exception:  # noqa: BLE001 - any failure means the shard must be recomputed
        return False


def _read_index(out_dir: Path, reporter: Reporter | None = None) -> dict[str, Any] | None:
    """The cache index with only the shards that are whole on disk; None if there is no usable index."""
    file = out_dir / INDEX
    if not file.is_file():
        return None
    try:
        index = json.loads(file.read_bytes().decode("utf-8"))
        if not (isinstance(index, dict) and isinstance(index.get("shards"), dict)
                and all(isinstance(v, list) for v in index["shards"].values())):
            raise ValueError("not a cache index")
    except (ValueError, UnicodeDecodeError):
        if reporter:
            reporter.warn(f"The latent cache index '{file}' is damaged: rebuilding the cache.")
        return None
    damaged = [name for name in index["shards"] if not _shard_ok(out_dir / name)]
    for name in damaged:
        del index["shards"][name]
    if damaged and reporter:
        reporter.warn(f"{len(damaged)} damaged latent shard(s) in '{out_dir}' (e.g. {damaged[0]}): recomputing them.")
    return index


class LatentCache:
    """Read access to a finished cache: `cache[id]` -> [2C, h, w] float32 distribution parameters."""

    def __init__(self, path: Path, index: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.index = index if index is not None else _read_index(self.path) or {"shards": {}}
        self._where = {i: name for name, ids in self.index["shards"].items() for i in ids}
        self._handles: dict[str, Any] = {}

    @classmethod
    def open_if_matching(cls, path: Path, model: str, revision: str | None, resolution: int) -> "LatentCache | None":
        index = _read_index(Path(path))
        if index is None:
            return None
        cache = cls(path, index)
        if {k: cache.index.get(k) for k in ("model", "revision", "resolution")} != _signature(model, revision, resolution):
            return None
        return cache

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._where

    def __getitem__(self, image_id: str) -> torch.Tensor:
        name = self._where[image_id]
        if name not in self._handles:
            self._handles[name] = safe_open(str(self.path / name), framework="pt")
        return self._handles[name].get_tensor(image_id).float()
