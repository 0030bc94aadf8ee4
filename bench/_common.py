"""Shared benchmark helpers: timing, a throwaway model chain to benchmark on, and the output.

Every benchmark compares emogen (A) with a peer (B) in one process: the calls are taken in turn (A, B,
A, B, ...) with the same torch thread count on both sides (--threads), and the result is the median of
the per-pair time ratios A/B with their min and max (`pair_stats`), so that drift on a shared machine
reaches both sides of a pair alike. Benchmarks print a human summary on stderr and, with --json, one
JSON object on stdout; `python -m bench` runs them all into one file.
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
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads, the same for both sides of every pair (default 1: steadier on a shared CPU).")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse and apply --threads (torch.set_num_threads: both sides of a pair run in this process)."""
    args = p.parse_args(argv)
    set_threads(args.threads)
    return args


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))


def pair_stats(ours: list[float], peer: list[float]) -> dict[str, float]:
    """The median of the per-pair ratios ours[i] / peer[i] (time over time: below 1 is faster), their min and
    max, and the median times."""
    ratios = [a / b for a, b in zip(ours, peer)]
    return {"ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "pairs": len(ratios), "ours_s": statistics.median(ours), "peer_s": statistics.median(peer)}


def spread(stats: dict[str, float]) -> str:
    """'1.012x (0.98-1.05, 5 pairs)' for a summary line."""
    return f"{stats['ratio']:.3f}x ({stats['ratio_min']:.2f}-{stats['ratio_max']:.2f}, {stats['pairs']} pairs)"


def machine() -> dict[str, Any]:
    """What a result was measured on: CPU count, load average at the end, the GPU if any, torch threads."""
    import platform

    import torch

    info: dict[str, Any] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "platform": platform.platform(terse=True), "torch": torch.__version__}
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def chain_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--size and --workdir: the random model chain a benchmark builds (see `workspace`)."""
    p.add_argument("--size", default="mid", choices=["tiny", "mid"], help="Size of the random models (tiny: CI; mid: CPU benchmarks).")
    p.add_argument("--workdir", help="Where to build the random model chain (default: a temporary folder).")
    return p


def sampling_parser(description: str, batch: bool = True) -> argparse.ArgumentParser:
    """`parser` plus what the benchmarks that sample images take: a random chain or a trained --mapper, steps,
    batch and repeats (see `parse_sampling` for --quick)."""
    p = chain_args(parser(description))
    p.add_argument("--pretrained", help="SD model to use with --mapper (e.g. SD 1.5 on a GPU).")
    p.add_argument("--mapper", help="A trained mapper bundle (default: a random one on the --size model).")
    p.add_argument("--steps", type=int, default=20)
    if batch:
        p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", default="auto", choices=["auto", "no", "fp16", "bf16"],
                   help="runtime.mixed_precision (auto: bf16/fp16 on CUDA, fp32 on CPU); the peer uses the same dtype.")
    return p


def parse_sampling(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The arguments of a `sampling_parser`; --quick: the tiny model, 4 steps, 3 repeats."""
    args = parse(p, argv)
    if args.quick:
        args.size, args.steps, args.repeats = "tiny", 4, 3
    return args


def sampling_config(args: argparse.Namespace, tmp: str, batch_size: int) -> Any:
    """The Config to sample with: the trained --mapper (and --pretrained) when given, else a random chain built
    under --workdir or `tmp` (which must outlive the benchmark's use of the models)."""
    from emogen_cli.core.config import load_config

    overrides = {"generate.steps": args.steps, "generate.batch_size": batch_size,
                 "runtime.mixed_precision": getattr(args, "precision", "auto")}
    if args.mapper:
        overrides.update({"generate.mapper": args.mapper,
                          **({"model.pretrained": args.pretrained} if args.pretrained else {})})
        return load_config(None, overrides)
    return load_config(workspace(Path(args.workdir or tmp), args.size), overrides)


def model_label(args: argparse.Namespace, base_model: str) -> str:
    """What a sampling benchmark ran on, for its result: the real model, or the random chain's size."""
    return (args.pretrained or base_model) if args.mapper else args.size


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


def interleaved(runs: dict[str, Callable[[], Any]], repeats: int, sync: Callable[[], None]) -> dict[str, list[float]]:
    """`repeats` timed calls of each run, taken in turn so that drift on a busy machine affects all alike; the
    first call of each is an untimed warm-up."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name] += timings(fn, 1, warmup=0 if times[name] else 1, sync=sync)
    return times


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
    result.setdefault("machine", machine())
    print(f"[{name}] {summary}", file=sys.stderr)
    if as_json:
        print(json.dumps({"benchmark": name, **result}, indent=2))
