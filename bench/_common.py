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
    and a mapper bundle under `root`/`size` (the tiny chain of emogen_cli.testing.chain); returns the config
    file (reused when it already exists)."""
    from emogen_cli.testing.chain import build_tiny_chain

    return build_tiny_chain(root / size, size, overrides={
        "encoder.max_steps": 1, "mapper.batch_size": batch_size, "mapper.max_steps": mapper_steps})


def emit(name: str, result: dict[str, Any], as_json: bool, summary: str) -> None:
    print(f"[{name}] {summary}", file=sys.stderr)
    if as_json:
        print(json.dumps({"benchmark": name, **result}, indent=2))
