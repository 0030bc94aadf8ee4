"""`emogen edit` (its Editor: img2img with the emotion conditioning) vs a plain diffusers
StableDiffusionImg2ImgPipeline loaded on its own from the same model, given the same prompt_embeds,
negative embeds, source image, strength, steps, guidance, scheduler and seed, interleaved in one process.
The ratio is the median per-pair ratio of our time over diffusers' (min/max beside it), at strength 1.0
and at edit's default strength.

    python bench/edit.py [--size tiny|mid] [--steps 20] [--repeats 5] [--threads 1] [--quick] [--json]
    python bench/edit.py --mapper runs/mapper --pretrained stable-diffusion-v1-5/stable-diffusion-v1-5  # GPU
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
    args = parse_sampling(sampling_parser(__doc__.splitlines()[0], batch=False), argv)

    import diffusers
    import torch
    from PIL import Image

    from emogen_cli.conditioning.request import Request
    from emogen_cli.outputs.edit import DEFAULT_STRENGTH, Editor
    from emogen_cli.pipeline import SCHEDULERS, EmoGenPipeline

    strengths = (1.0, DEFAULT_STRENGTH)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = sampling_config(args, tmp, 1)
        gen = EmoGenPipeline(cfg)
        editor = Editor(gen)
        plain = diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(gen.base_model, safety_checker=None,
                                                                         requires_safety_checker=False)
        plain.scheduler = getattr(diffusers, SCHEDULERS[cfg.generate.scheduler]).from_config(plain.scheduler.config)
        plain.to(gen.device, gen.dtype)
        plain.set_progress_bar_config(disable=True)
        size = cfg.model.resolution
        source = Image.linear_gradient("L").convert("RGB").resize((size, size))
        embeds = gen.conditioning(Request(("awe",)), [0])

        def baseline(strength: float):
            generator = torch.Generator(gen.device).manual_seed(0)
            plain(prompt_embeds=embeds, negative_prompt_embeds=gen.negative, image=source, strength=strength,
                  num_inference_steps=editor.steps, guidance_scale=editor.guidance, generator=[generator],
                  output_type="pil")

        runs = {}
        for s in strengths:
            runs[f"ours_{s}"] = lambda s=s: editor(source, embeds, s, 0)
            runs[f"diffusers_{s}"] = lambda s=s: baseline(s)
        times = interleaved(runs, args.repeats, cuda_sync())
    full, default = (pair_stats(times[f"ours_{s}"], times[f"diffusers_{s}"]) for s in strengths)
    result = {"model": model_label(args, gen.base_model), "device": str(gen.device), "dtype": str(gen.dtype),
              "steps": args.steps, "size": size, "repeats": args.repeats, "default_strength": DEFAULT_STRENGTH,
              "strength_1": full, "strength_default": default, "ratio": full["ratio"],
              "ratio_min": full["ratio_min"], "ratio_max": full["ratio_max"], "pairs": full["pairs"],
              "ratio_default_strength": default["ratio"]}
    emit("edit", result, args.json, f"{result['model']} on {result['device']}, {size} px, {args.steps} steps: edit vs "
                                    f"diffusers img2img at strength 1.0 {full['ours_s']:.3f} s vs "
                                    f"{full['peer_s']:.3f} s, ratio {spread(full)}; at {DEFAULT_STRENGTH} "
                                    f"{default['ours_s']:.3f} s vs {default['peer_s']:.3f} s, ratio {spread(default)}")
    return result


if __name__ == "__main__":
    main()
