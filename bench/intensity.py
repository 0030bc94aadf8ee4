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

from _common import (
    cuda_sync,
    emit,
    interleaved,
    median,
    model_label,
    pair_stats,
    parse_sampling,
    sampling_config,
    sampling_parser,
    spread,
    timings,
)


def main(argv: list[str] | None = None) -> dict:
    p = sampling_parser(__doc__.splitlines()[0])
    p.add_argument("--alpha", type=float, default=0.5)
    args = parse_sampling(p, argv)

    from dataclasses import replace

    from emogen_cli.conditioning.request import Request
    from emogen_cli.pipeline import EmoGenPipeline

    with tempfile.TemporaryDirectory() as tmp:
        gen = EmoGenPipeline(sampling_config(args, tmp, args.batch))
        request, seeds = Request(("awe",)), list(range(args.batch))
        weaker = replace(request, intensity=args.alpha)
        sync = cuda_sync()
        times = interleaved({"plain": lambda: gen.sample(request, seeds), "alpha": lambda: gen.sample(weaker, seeds)},
                            args.repeats, sync)
        plain_s, alpha_s = times["plain"], times["alpha"]
        # The only added work is in the conditioning: time it alone, many times (robust on a busy machine).
        cond_plain = median(timings(lambda: gen.conditioning(request, seeds), 5 * args.repeats, sync=sync))
        cond_alpha = median(timings(lambda: gen.conditioning(weaker, seeds), 5 * args.repeats, sync=sync))
    stats = pair_stats(alpha_s, plain_s)
    ratio = stats["ratio"]
    added = max(cond_alpha - cond_plain, 0.0)
    result = {"model": model_label(args, gen.base_model), "device": str(gen.device),
              "dtype": str(gen.dtype), "steps": args.steps, "batch": args.batch, "repeats": args.repeats,
              "alpha": args.alpha, "plain_s": median(plain_s), "intensity_s": median(alpha_s), "ratio": ratio,
              "overhead_percent": 100 * (ratio - 1),
              "ratio_min": stats["ratio_min"], "ratio_max": stats["ratio_max"], "pairs": stats["pairs"], "conditioning_plain_s": cond_plain,
              "conditioning_intensity_s": cond_alpha, "added_s": added,
              "added_ratio": 1 + added / median(plain_s)}
    emit("intensity", result, args.json, f"{result['model']} on {result['device']}: intensity {args.alpha:g} "
                                         f"{median(alpha_s):.3f} s vs plain {median(plain_s):.3f} s per batch of "
                                         f"{args.batch} ({args.steps} steps): ratio {spread(stats)}; the added "
                                         f"conditioning work is {1000 * added:.1f} ms per batch, a ratio of "
                                         f"{result['added_ratio']:.4f}")
    return result


if __name__ == "__main__":
    main()
