"""Flat cost in the run's size: `emogen generate` of a small and a large count on the tiny model, the
cost per image of each (time and peak memory) and their ratio (large / small: 1.0 is flat).

Each count runs in its own fresh process (so peak RSS is that run's), after an untimed warm-up run that
loads the models. Time per image is the marginal cost: from the first batch written to the last,
divided by the images in between (model loading and the end-of-run contact sheets are per-run costs and
are reported apart). Memory: peak RSS of the process and the peak of Python's own heap during the run
(tracemalloc, in a separate run so that its overhead stays out of the timing).

    python bench/scale.py [--small 200] [--large 2000] [--quick] [--json]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, pair_stats, parse, parser, workspace

from emogen_cli.core.reporting import Reporter


class Stamps(Reporter):
    """Notes when each batch of images is written."""

    def __init__(self) -> None:
        self.stamps: list[tuple[float, int]] = []
        self.done = 0

    def advance(self, task: str, n: int = 1, **metrics) -> None:
        if task.startswith("Generating"):
            self.done += n
            self.stamps.append((time.perf_counter(), self.done))


def child(config: str, count: int, out: str, trace: bool) -> dict:
    """One measured run in this (fresh) process."""
    import tracemalloc

    from emogen_cli.conditioning.request import Request
    from emogen_cli.core.config import load_config
    from emogen_cli.outputs.generate import generate

    cfg = load_config(config)
    generate(cfg, [Request(("awe",), count=cfg.generate.batch_size)], Path(out) / "warmup")  # loads, warms up
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if trace:
        tracemalloc.start()
    stamps = Stamps()
    start = time.perf_counter()
    generate(cfg, [Request(("awe",), count=count)], Path(out) / "run", reporter=stamps)
    total = time.perf_counter() - start
    result = {"count": count, "total_s": total, "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "rss_before_mib": rss_before}
    if trace:
        result["python_heap_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    (t0, n0), (t1, n1) = stamps.stamps[0], stamps.stamps[-1]
    result["per_image_s"] = (t1 - t0) / (n1 - n0)
    result["fixed_s"] = total - result["per_image_s"] * count  # loading, first batch, sheets
    return result


def run_child(config: Path, count: int, tmp: str, trace: bool) -> dict:
    out = tempfile.mkdtemp(dir=tmp)
    cmd = [sys.executable, __file__, "--child", str(config), "--count", str(count), "--out", out]
    done = subprocess.run(cmd + (["--trace"] if trace else []), capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=200)
    p.add_argument("--large", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1, help="(small, large) pairs of timed runs, taken in turn.")
    p.add_argument("--workdir", help="Where to build the tiny model chain (default: a temporary folder).")
    p.add_argument("--child", help=argparse_hidden())
    p.add_argument("--count", type=int, help=argparse_hidden())
    p.add_argument("--out", help=argparse_hidden())
    p.add_argument("--trace", action="store_true", help=argparse_hidden())
    args = parse(p, argv)
    if args.child:
        print(json.dumps(child(args.child, args.count, args.out, args.trace)))
        return {}
    if args.quick:
        args.small, args.large = 20, 200
    with tempfile.TemporaryDirectory() as tmp:
        config = workspace(Path(args.workdir or tmp), "tiny")
        from emogen_cli.core.config import load_config

        cfg = load_config(config).to_dict()
        cfg["generate"].update(steps=1, batch_size=args.batch)
        cfg["runtime"]["device"] = "cpu"
        bench_config = Path(tmp) / "scale.yaml"
        bench_config.write_text(json.dumps(cfg))
        timed: dict[str, list[dict]] = {"small": [], "large": []}
        for _ in range(max(1, args.repeats)):  # pairs in turn: small, large, small, large, ...
            for label, count in (("small", args.small), ("large", args.large)):
                timed[label].append(run_child(bench_config, count, tmp, trace=False))
        runs = {}
        for label, count in (("small", args.small), ("large", args.large)):
            runs[label] = timed[label][0] | {  # memory from the first run, time per image the median
                "per_image_s": sorted(r["per_image_s"] for r in timed[label])[len(timed[label]) // 2]}
            runs[label]["python_heap_peak_mib"] = run_child(bench_config, count, tmp, trace=True)["python_heap_peak_mib"]
    small, large = runs["small"], runs["large"]
    stats = pair_stats([r["per_image_s"] for r in timed["large"]], [r["per_image_s"] for r in timed["small"]])
    result = {"model": "tiny", "steps": 1, "batch": args.batch, "small": small, "large": large,
              "time_per_image_ratio": stats["ratio"], "time_per_image_ratio_min": stats["ratio_min"],
              "time_per_image_ratio_max": stats["ratio_max"], "pairs": stats["pairs"],
              "rss_peak_ratio": large["rss_peak_mib"] / small["rss_peak_mib"],
              "python_heap_peak_ratio": large["python_heap_peak_mib"] / small["python_heap_peak_mib"]}
    result["ratio"] = result["time_per_image_ratio"]
    emit("scale", result, args.json,
         f"generate {args.small} vs {args.large} tiny images: per image {small['per_image_s'] * 1000:.2f} vs "
         f"{large['per_image_s'] * 1000:.2f} ms ({result['time_per_image_ratio']:.2f}x, "
         f"{stats['ratio_min']:.2f}-{stats['ratio_max']:.2f}, {stats['pairs']} pairs); peak RSS "
         f"{small['rss_peak_mib']:.0f} vs {large['rss_peak_mib']:.0f} MiB ({result['rss_peak_ratio']:.2f}x); "
         f"Python heap peak {small['python_heap_peak_mib']:.1f} vs {large['python_heap_peak_mib']:.1f} MiB "
         f"({result['python_heap_peak_ratio']:.2f}x)")
    return result


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
