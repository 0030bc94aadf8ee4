"""Shared benchmark helpers: timing, a throwaway model chain to benchmark on, and the output.

Benchmarks print a human summary on stderr and, with --json, one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="Few repeats on the tiny model (CI).")
    p.add_argument("--json", action="store_true", help="Print the result as JSON on stdout.")
    return p


def timings(fn: Callable[[], Any], repeats: int, warmup: int = 1, sync: Callable[[], None] = lambda: None) -> list[float]:
    """Wall-clock seconds of `repeats` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - start)
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def cuda_sync() -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)


def workspace(root: Path, size: str, mapper_steps: int = 1, batch_size: int = 4) -> Path:
    """A tiny/mid model bundle, synthetic EmoSet, prepared data with cached latents, a stage-1 encoder
    and a mapper bundle under `root`; returns the config file (reused when it already exists)."""
    config_path = root / f"{size}.yaml"
    if config_path.is_file():
        return config_path
    from emogen_cli.core.config import load_config
    from emogen_cli.data.prepare import prepare
    from emogen_cli.testing.synthetic import make_synthetic_emoset
    from emogen_cli.testing.tiny import SIZES, build_tiny_bundle
    from emogen_cli.stage1.train_encoder import train_encoder
    from emogen_cli.stage2.train_mapper import train_mapper

    res = SIZES[size]["resolution"]
    bundle = build_tiny_bundle(root / f"models-{size}", size=size)
    make_synthetic_emoset(root / "EmoSet", broken=False, image_size=max(32, res))
    text = f"""
model: {{pretrained: {bundle}, clip: {bundle / 'clip'}, resolution: {res}}}
data: {{root: {root / 'EmoSet'}, prepared: {root / f'prepared-{size}'}, num_workers: 0}}
encoder: {{backbone: {bundle / 'resnet'}, emotion_dim: 16, image_size: 32, batch_size: 8, max_steps: 1,
          output: {root / f'encoder-{size}'}}}
mapper: {{encoder: {root / f'encoder-{size}'}, hidden_dim: 32, batch_size: {batch_size}, max_steps: {mapper_steps},
         output: {root / f'mapper-{size}'}}}
generate: {{mapper: {root / f'mapper-{size}'}}}
"""
    tmp = root / f"{size}.yaml.tmp"
    tmp.write_text(text)
    cfg = load_config(tmp)
    prepare(cfg, cache_latents=True)
    train_encoder(cfg)
    train_mapper(cfg)
    tmp.rename(config_path)
    return config_path


def emit(name: str, result: dict[str, Any], as_json: bool, summary: str) -> None:
    print(f"[{name}] {summary}", file=sys.stderr)
    if as_json:
        print(json.dumps({"benchmark": name, **result}, indent=2))
