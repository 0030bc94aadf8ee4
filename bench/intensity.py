"""Cost of `--intensity α` relative to plain generation at the same steps and batch.

An intermediate α needs the emotion conditioning, the neutral one (one more text-encoder pass) and
a blend; the UNet does the same work, so the ratio should stay close to 1. α = 1 is plain
generation (the same tensors), so it is not timed separately. On a busy machine the end-to-end ratio
is noisy, so the added conditioning work is also timed alone ("added_ratio" = 1 + added / plain).

    python bench/intensity.py [--size tiny|mid] [--steps 20] [--batch 4] [--repeats 5] [--quick] [--json]
    python bench/intensity.py --mapper runs/mapper --pretrained stable-diffusion-v1-5/stable-diffusion-v1-5  # GPU
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import cuda_sync, emit, median, parser, timings, workspace


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", default="mid", choices=["tiny", "mid"], help="Random model size when no --mapper.")
    p.add_argument("--pretrained", help="SD model to use with --mapper.")
    p.add_argument("--mapper", help="A trained mapper bundle (default: a random one on the --size model).")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workdir", help="Where to build the random model chain (default: a temporary folder).")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.steps, args.repeats = "tiny", 4, 3

    from emogen_cli.core.config import load_config
    from emogen_cli.inference.intensity import intensity_conditioning, text_to_image
    from emogen_cli.pipeline import EmoGenPipeline, Request

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"generate.steps": args.steps, "generate.batch_size": args.batch}
        if args.mapper:
            overrides.update({"generate.mapper": args.mapper,
                              **({"model.pretrained": args.pretrained} if args.pretrained else {})})
            cfg = load_config(None, overrides)
        else:
            cfg = load_config(workspace(Path(args.workdir or tmp), args.size), overrides)
        gen = EmoGenPipeline(cfg)
        request, seeds = Request(("awe",)), list(range(args.batch))
        sync = cuda_sync()
        plain_s, alpha_s = [], []
        for _ in range(args.repeats):  # interleaved, so drift affects both alike
            plain_s += timings(lambda: gen.images(request, seeds), 1, warmup=0 if plain_s else 1, sync=sync)
            alpha_s += timings(lambda: text_to_image(gen, intensity_conditioning(gen, request, seeds, args.alpha), seeds),
                               1, warmup=0 if alpha_s else 1, sync=sync)
        # The only added work is in the conditioning: time it alone, many times (robust on a busy machine).
        cond_plain = median(timings(lambda: gen.conditioning(request, seeds), 5 * args.repeats, sync=sync))
        cond_alpha = median(timings(lambda: intensity_conditioning(gen, request, seeds, args.alpha), 5 * args.repeats,
                                    sync=sync))
    ratio = median(alpha_s) / median(plain_s)
    added = max(cond_alpha - cond_plain, 0.0)
    result = {"model": (args.pretrained or gen.base_model) if args.mapper else args.size, "device": str(gen.device),
              "dtype": str(gen.dtype), "steps": args.steps, "batch": args.batch, "repeats": args.repeats,
              "alpha": args.alpha, "plain_s": median(plain_s), "intensity_s": median(alpha_s), "ratio": ratio,
              "overhead_percent": 100 * (ratio - 1), "conditioning_plain_s": cond_plain,
              "conditioning_intensity_s": cond_alpha, "added_s": added,
              "added_ratio": 1 + added / median(plain_s)}
    emit("intensity", result, args.json, f"{result['model']} on {result['device']}: intensity {args.alpha:g} "
                                         f"{median(alpha_s):.3f} s vs plain {median(plain_s):.3f} s per batch of "
                                         f"{args.batch} ({args.steps} steps): ratio {ratio:.3f}; the added "
                                         f"conditioning work is {1000 * added:.1f} ms per batch, a ratio of "
                                         f"{result['added_ratio']:.4f}")
    return result


if __name__ == "__main__":
    main()
