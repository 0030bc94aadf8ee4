"""`emogen serve` vs the pipeline call alone: requests per minute through the HTTP API (live uvicorn on
loopback, one synchronous POST /v1/images/generations at a time, b64_json) against `pipe(...)` with the same
emotion, steps, size and seed, interleaved in one process (median per-pair ratio, min/max). The overhead is what the server adds per request:
HTTP, JSON, the queue, the PNG writer, index.jsonl and base64.

    python bench/serve.py [--size tiny|mid] [--steps 20] [--repeats 5] [--quick] [--json]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import emit, interleaved, pair_stats, parse_sampling, sampling_config, sampling_parser, spread

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv: list[str] | None = None) -> dict:
    args = parse_sampling(sampling_parser(__doc__.splitlines()[0], batch=False), argv)

    import httpx
    from serve_live import LiveServer

    from emogen_cli.pipeline import EmoGenPipeline
    from emogen_cli.serve.app import create_app
    from emogen_cli.serve.jobs import JobManager
    from emogen_cli.serve.service import Service

    with tempfile.TemporaryDirectory() as tmp:
        cfg = sampling_config(args, tmp, 1)
        pipe = EmoGenPipeline(cfg)
        manager = JobManager([pipe], queue_size=4)
        live = LiveServer(create_app(Service(cfg, manager, Path(tmp) / "served")))
        client = httpx.Client(base_url=live.url, timeout=600)
        body = {"emotion": "awe", "n": 1, "steps": args.steps, "seed": 0}

        def served():
            r = client.post("/v1/images/generations", json=body)
            assert r.status_code == 200, r.text

        def alone():
            pipe("awe", num_inference_steps=args.steps, seed=0)

        try:
            times = interleaved({"served": served, "pipeline": alone}, args.repeats, lambda: None)
        finally:
            client.close()
            live.stop()
            manager.close()
    stats = pair_stats(times["served"], times["pipeline"])
    served_s, alone_s, ratio = stats["ours_s"], stats["peer_s"], stats["ratio"]
    result = {"model": args.size, "device": str(pipe.device), "steps": args.steps, "repeats": args.repeats,
              "served_s": served_s, "pipeline_s": alone_s, **stats, "overhead_percent": 100 * (ratio - 1),
              "overhead_ms": 1000 * (served_s - alone_s), "requests_per_minute": 60 / served_s}
    emit("serve", result, args.json, f"{args.size} on {result['device']}, {args.steps} steps, 1 image: served "
         f"{served_s * 1000:.1f} ms vs pipeline {alone_s * 1000:.1f} ms per request ({result['overhead_ms']:+.1f} ms, "
         f"ratio {spread(stats)}); {result['requests_per_minute']:.0f} requests/minute")
    return result


if __name__ == "__main__":
    main()
