"""Run every benchmark and write one JSON file.

    python -m bench [--quick] [--out bench-results.json] [--only generate edit ...] [--threads 1]
    python -m bench --gpu-only [--model PATH]   # just the SD 1.5 run (CUDA)

Each benchmark runs in its own process (`python bench/NAME.py --json`), one after the other, so one's
memory and threads never reach the next; every one interleaves its A/B pairs in one process with the same
torch threads and reports the median per-pair ratio with min/max. --quick is the tiny-model mode the
test suite runs (seconds each); the default is the full mode on the `mid` random chain.

When CUDA is available it also runs generate on an SD 1.5-shaped model at 512 px in fp16 against a plain
diffusers StableDiffusionPipeline given the same prompt_embeds (`sd15_generate`): the random-weight model of
bench/sd15.py, or --model (a local SD 1.5 folder). The result file records the machine (CPUs, load average,
GPU) and, for each benchmark, its JSON or its error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("startup", "generate", "intensity", "edit", "serve", "train_mapper", "prepare", "scale")
SLOW = {"scale"}  # minutes even with --quick (220 images in four processes): only when named or --all


def run_script(name: str, args: list[str], timeout: float) -> dict:
    """One benchmark in its own process: its JSON, or {"error": ...}."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(HERE / f"{name}.py"), "--json", *args], capture_output=True,
                              text=True, timeout=timeout, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    summary = [line for line in done.stderr.splitlines() if line.startswith("[")]
    print(summary[-1] if summary else f"[{name}] exit {done.returncode}", file=sys.stderr, flush=True)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}",
                "wall_s": time.perf_counter() - start}
    return {**json.loads(done.stdout), "wall_s": time.perf_counter() - start}


def sd15_generate(work: Path, model: str | None, steps: int, batch: int, repeats: int, threads: int,
                  timeout: float) -> dict:
    """generate at 512 px in fp16 on CUDA: the SD 1.5-shaped model (or `model`) vs plain diffusers."""
    sys.path.insert(0, str(HERE))
    from _common import workspace
    from sd15 import build_sd15_model, sd15_mapper

    config = workspace(work, "tiny")  # the tiny chain's mapper bundle: its emotion space and attributes
    import yaml

    chain = yaml.safe_load(config.read_text())
    tiny_models, tiny_mapper = Path(chain["model"]["pretrained"]), Path(chain["generate"]["mapper"])
    base = Path(model) if model else build_sd15_model(work / "sd15-random", tiny_models)
    mapper = sd15_mapper(tiny_mapper, base, work / "sd15-mapper")
    result = run_script("generate", ["--mapper", str(mapper), "--pretrained", str(base), "--precision", "fp16",
                                     "--steps", str(steps), "--batch", str(batch), "--repeats", str(repeats),
                                     "--threads", str(threads)], timeout)
    return {**result, "weights": "given" if model else "random (SD 1.5-shaped)"}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="The tiny-model modes (seconds each).")
    p.add_argument("--out", default="bench-results.json", help="Where to write the JSON (default: %(default)s).")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, help="Run only these benchmarks.")
    p.add_argument("--all", action="store_true", help=f"Include the slow ones ({', '.join(sorted(SLOW))}).")
    p.add_argument("--threads", type=int, default=1, help="torch threads on both sides of every pair.")
    p.add_argument("--timeout", type=float, default=3600, help="Seconds allowed per benchmark.")
    p.add_argument("--gpu-only", action="store_true", help="Only the SD 1.5 generate run (needs CUDA).")
    p.add_argument("--model", help="A local SD 1.5 folder for the CUDA run (default: random SD 1.5-shaped weights).")
    p.add_argument("--gpu-steps", type=int, default=20)
    p.add_argument("--gpu-batch", type=int, default=1)
    p.add_argument("--gpu-repeats", type=int, default=5)
    p.add_argument("--workdir", help="Where the CUDA run builds its models (default: a temporary folder).")
    args = p.parse_args(argv)

    sys.path.insert(0, str(HERE))
    from _common import machine, set_threads

    set_threads(args.threads)  # what machine() records; each benchmark process sets its own from --threads

    names = [] if args.gpu_only else list(args.only or [n for n in BENCHMARKS if args.all or n not in SLOW])
    common = ["--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    results: dict = {"quick": args.quick, "machine": machine(), "benchmarks": {}}
    for name in names:
        results["benchmarks"][name] = run_script(name, common, args.timeout)
    import torch

    if torch.cuda.is_available():
        with tempfile.TemporaryDirectory() as tmp:
            results["benchmarks"]["sd15_generate"] = sd15_generate(
                Path(args.workdir or tmp), args.model, args.gpu_steps, args.gpu_batch, args.gpu_repeats, args.threads,
                args.timeout)
    elif args.gpu_only:
        raise SystemExit("--gpu-only needs CUDA (torch.cuda.is_available() is False).")
    else:
        results["benchmarks"]["sd15_generate"] = {"skipped": "no CUDA device"}
    results["machine"]["load_average_end"] = machine().get("load_average")
    Path(args.out).write_text(json.dumps(results, indent=2))
    failed = [n for n, r in results["benchmarks"].items() if "error" in r]
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    if failed:
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
