"""A resumable cache of VAE latent distributions for stage 2 (safetensors shards).

Each image is stored as the VAE's diagonal-Gaussian parameters (mean and log-variance, 2*C
channels), so training still draws a fresh latent sample every step exactly as encoding on the
fly would, without running the VAE encoder. `index.json` lists finished shards; an interrupted
run continues where it stopped.

Decoding overlaps encoding: a torch DataLoader with `data.num_workers` worker processes decodes,
resizes and normalises the images (the CPU cost: ~6 ms per 600x450 JPEG) while the main process
runs the VAE on batches of `data.cache_batch_size`. The values are those of encoding each image
alone up to float rounding (the VAE's convolutions see another batch shape; tests/test_prepare.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset

from emogen_cli.core.errors import EmogenError
from emogen_cli.core.files import atomic_save_safetensors, atomic_write_text
from emogen_cli.core.images import DIFFUSION_MEAN, DIFFUSION_STD, load_rgb, resize_center_crop, to_array
from emogen_cli.core.reporting import Reporter, progress
from emogen_cli.data.emoset import Row

INDEX = "index.json"


def _signature(model: str, revision: str | None, resolution: int) -> dict[str, Any]:
    return {"model": model, "revision": revision, "resolution": resolution}


class _Pixels(Dataset):
    """(image id, [3, R, R] VAE input) of each item, decoded in a DataLoader worker."""

    def __init__(self, items: list[tuple[str, str]], root: Path, resolution: int) -> None:
        self.items, self.root, self.resolution = items, Path(root), resolution

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor]:
        image_id, rel = self.items[i]
        pixels = to_array(resize_center_crop(load_rgb(self.root / rel), self.resolution), DIFFUSION_MEAN, DIFFUSION_STD)
        return image_id, torch.from_numpy(pixels)


def _collate(batch: list[tuple[str, torch.Tensor]]) -> tuple[list[str], torch.Tensor]:
    return [image_id for image_id, _ in batch], torch.stack([pixels for _, pixels in batch])


def cache_latents(rows: list[Row], root: Path, out_dir: Path, model: str, revision: str | None, resolution: int,
                  batch_size: int = 16, shard_size: int = 512, device: str = "auto", dtype: str = "float16",
                  reporter: Reporter | None = None, num_workers: int = 0) -> dict[str, Any]:
    """Encode every unique image of `rows` once; skip shards an earlier run already wrote. `num_workers`
    processes decode while the VAE encodes batches of `batch_size`; shards of `shard_size` images are
    written in order, each listed in index.json once complete."""
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
    loader = DataLoader(_Pixels(items, root, resolution), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_collate, pin_memory=dev.type == "cuda",
                        persistent_workers=False, prefetch_factor=4 if num_workers else None)
    shard_no = len(index["shards"])
    tensors: dict[str, torch.Tensor] = {}

    def flush() -> None:
        nonlocal shard_no, tensors
        while (name := f"shard-{shard_no:05d}.safetensors") in index["shards"]:
            shard_no += 1
        atomic_save_safetensors(out_dir / name, tensors, metadata={"format": "pt"})
        index["shards"][name] = list(tensors)
        atomic_write_text(out_dir / INDEX, json.dumps(index))
        shard_no += 1
        tensors = {}

    with progress(reporter, "Caching latents", len(items)):
        for ids, pixels in loader:
            with torch.inference_mode():
                params = vae.encode(pixels.to(dev, vae.dtype, non_blocking=True)).latent_dist.parameters
            params = params.to(store).cpu()
            for image_id, p in zip(ids, params):
                tensors[image_id] = p.contiguous()
                if len(tensors) == shard_size:
                    flush()
            reporter.advance("Caching latents", len(ids))
        if tensors:
            flush()
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
