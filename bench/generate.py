"""`emogen generate` vs a plain diffusers StableDiffusionPipeline call with the same model, scheduler,
steps, batch and (precomputed) prompt_embeds. The ratio is our time over the baseline's; the
difference is emotion sampling + mapping + text encoding, the work our command adds.

    python bench/generate.py [--size tiny|mid] [--steps 20] [--batch 4] [--repeats 5] [--quick] [--json]
    python bench/generate.py --pretrained stable-diffusion-v1-5/stable-diffusion-v1-5 --mapper runs/mapper  # GPU
"""

from __future__ import annotations

import tempfile

from _common import cuda_sync, emit, interleaved, median, model_label, parse_sampling, sampling_config, sampling_parser


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
    ours_s, base_s = times["ours"], times["diffusers"]
    ratio = median(ours_s) / median(base_s)
    result = {"model": model_label(args, ours.base_model), "device": str(ours.device),
              "dtype": str(ours.dtype), "steps": args.steps, "batch": args.batch, "repeats": args.repeats,
              "ours_s": median(ours_s), "diffusers_s": median(base_s), "ratio": ratio,
              "overhead_percent": 100 * (ratio - 1)}
    emit("generate", result, args.json, f"{result['model']} on {result['device']}: emogen {median(ours_s):.3f} s vs "
                                        f"diffusers {median(base_s):.3f} s per batch of {args.batch} "
                                        f"({args.steps} steps): ratio {ratio:.3f} ({result['overhead_percent']:+.1f}%)")
    return result


if __name__ == "__main__":
    main()
