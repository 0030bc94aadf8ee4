"""`emogen generate` vs a plain diffusers StableDiffusionPipeline call with the same model, scheduler,
steps, batch and (precomputed) prompt_embeds. The ratio is our time over the baseline's; the
difference is emotion sampling + mapping + text encoding, the work our command adds.

    python bench/generate.py [--size tiny|mid] [--steps 20] [--batch 4] [--repeats 5] [--quick] [--json]
    python bench/generate.py --pretrained stable-diffusion-v1-5/stable-diffusion-v1-5 --mapper runs/mapper  # GPU
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import cuda_sync, emit, median, parser, timings, workspace


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", default="mid", choices=["tiny", "mid"], help="Random model size when no --mapper.")
    p.add_argument("--pretrained", help="SD model to use with --mapper (e.g. SD 1.5 on a GPU).")
    p.add_argument("--mapper", help="A trained mapper bundle (default: a random one on the --size model).")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workdir", help="Where to build the random model chain (default: a temporary folder).")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.steps, args.repeats = "tiny", 4, 3

    import diffusers
    import torch

    from emogen_cli.core.config import load_config
    from emogen_cli.pipeline import SCHEDULERS, EmoGenerator, Request

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"generate.steps": args.steps, "generate.batch_size": args.batch}
        if args.mapper:
            overrides.update({"generate.mapper": args.mapper, **({"model.pretrained": args.pretrained}
                                                                  if args.pretrained else {})})
            cfg = load_config(None, overrides)
        else:
            cfg = load_config(workspace(Path(args.workdir or tmp), args.size), overrides)
        ours = EmoGenerator(cfg)
        plain = diffusers.StableDiffusionPipeline.from_pretrained(ours.base_model, safety_checker=None,
                                                                  requires_safety_checker=False)
        plain.scheduler = getattr(diffusers, SCHEDULERS[cfg.generate.scheduler]).from_config(plain.scheduler.config)
        plain.to(ours.device, ours.dtype)
        plain.set_progress_bar_config(disable=True)
        request, seeds = Request(("awe",)), list(range(args.batch))
        embeds = ours.conditioning(request, seeds)
        negative = ours.negative.expand(args.batch, -1, -1)
        size = cfg.model.resolution

        def baseline():
            generators = [torch.Generator(ours.device).manual_seed(s) for s in seeds]
            plain(prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=args.steps,
                  guidance_scale=cfg.generate.guidance, height=size, width=size, generator=generators,
                  output_type="pil")

        sync = cuda_sync()
        ours_s, base_s = [], []
        for _ in range(args.repeats):  # interleaved, so drift affects both alike
            ours_s += timings(lambda: ours.images(request, seeds), 1, warmup=0 if ours_s else 1, sync=sync)
            base_s += timings(baseline, 1, warmup=0 if base_s else 1, sync=sync)
    ratio = median(ours_s) / median(base_s)
    result = {"model": args.pretrained or ours.base_model if args.mapper else args.size, "device": str(ours.device),
              "dtype": str(ours.dtype), "steps": args.steps, "batch": args.batch, "repeats": args.repeats,
              "ours_s": median(ours_s), "diffusers_s": median(base_s), "ratio": ratio,
              "overhead_percent": 100 * (ratio - 1)}
    emit("generate", result, args.json, f"{result['model']} on {result['device']}: emogen {median(ours_s):.3f} s vs "
                                        f"diffusers {median(base_s):.3f} s per batch of {args.batch} "
                                        f"({args.steps} steps): ratio {ratio:.3f} ({result['overhead_percent']:+.1f}%)")
    return result


if __name__ == "__main__":
    main()
