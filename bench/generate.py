"""`emogen generate` vs a plain diffusers StableDiffusionPipeline call with the same model, scheduler,
steps, batch, dtype, seeds and (precomputed) prompt_embeds, interleaved in one process. The ratio is
the median per-pair ratio of our time over the baseline's (min/max beside it); the difference is
emotion sampling + mapping + text encoding, the work our command adds.

    python bench/generate.py [--size tiny|mid] [--steps 20] [--batch 4] [--repeats 5] [--quick] [--json]
    python bench/generate.py --pretrained stable-diffusion-v1-5/stable-diffusion-v1-5 --mapper runs/mapper  # GPU
    python -m bench --gpu-only   # on CUDA: an SD 1.5-shaped model at 512 px in fp16 (see bench/sd15.py)
"""

from __future__ import annotations

import tempfile

from _common import (
    cuda_sync,
    emit,
    interleaved,
    model_label,
    pair_stats,
    parse_sampling,
    sampling_config,
    sampling_parser,
    spread,
)


def main(argv: list[str] | None = None) -> dict:
    args = parse_sampling(sampling_parser(__doc__.splitlines()[0]), argv)

    import diffusers
    import torch

    from emogen_cli.conditioning.request import Request
    from emogen_cli.pipeline import SCHEDULERS, EmoGenPipeline

    with tempfile.TemporaryDirectory() as tmp:
        cfg = sampling_config(args, tmp, args.batch)
        ours = EmoGenPipeline(cfg)
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

        times = interleaved({"ours": lambda: ours.sample(request, seeds), "diffusers": baseline}, args.repeats,
                            cuda_sync())
    stats = pair_stats(times["ours"], times["diffusers"])
    result = {"model": model_label(args, ours.base_model), "device": str(ours.device),
              "dtype": str(ours.dtype), "size": size, "steps": args.steps, "batch": args.batch,
              "repeats": args.repeats, **stats, "diffusers_s": stats["peer_s"],
              "overhead_percent": 100 * (stats["ratio"] - 1)}
    emit("generate", result, args.json, f"{result['model']} on {result['device']} ({result['dtype']}, {size} px): "
                                        f"emogen {stats['ours_s']:.3f} s vs diffusers {stats['peer_s']:.3f} s per "
                                        f"batch of {args.batch} ({args.steps} steps): ratio {spread(stats)}")
    return result


if __name__ == "__main__":
    main()
