"""Cost of `emogen edit` relative to plain generation at the same steps and image size.

img2img runs int(steps × strength) denoising steps plus one VAE encode, so an edit at strength s
should cost about s of a generation plus the encode; timed at strength 1.0 and the default 0.5.

    python bench/edit.py [--size tiny|mid] [--steps 20] [--repeats 5] [--quick] [--json]
    python bench/edit.py --mapper runs/mapper --pretrained stable-diffusion-v1-5/stable-diffusion-v1-5  # GPU
"""

from __future__ import annotations

import tempfile

from _common import cuda_sync, emit, interleaved, median, model_label, parse_sampling, sampling_config, sampling_parser


def main(argv: list[str] | None = None) -> dict:
    args = parse_sampling(sampling_parser(__doc__.splitlines()[0], batch=False), argv)

    from PIL import Image

    from emogen_cli.conditioning.request import Request
    from emogen_cli.outputs.edit import DEFAULT_STRENGTH, Editor
    from emogen_cli.pipeline import EmoGenPipeline

    with tempfile.TemporaryDirectory() as tmp:
        cfg = sampling_config(args, tmp, 1)
        gen = EmoGenPipeline(cfg)
        editor = Editor(gen)
        request, size = Request(("awe",)), cfg.model.resolution
        source = Image.linear_gradient("L").convert("RGB").resize((size, size))
        embeds = gen.conditioning(request, [0])
        runs = {"plain": lambda: gen.sample(request, [0]), "edit_1.0": lambda: editor(source, embeds, 1.0, 0),
                f"edit_{DEFAULT_STRENGTH}": lambda: editor(source, embeds, DEFAULT_STRENGTH, 0)}
        times = interleaved(runs, args.repeats, cuda_sync())
    plain = median(times["plain"])
    result = {"model": model_label(args, gen.base_model), "device": str(gen.device),
              "dtype": str(gen.dtype), "steps": args.steps, "size": size, "repeats": args.repeats, "plain_s": plain,
              "edit_strength_1_s": median(times["edit_1.0"]), "edit_default_s": median(times[f"edit_{DEFAULT_STRENGTH}"]),
              "default_strength": DEFAULT_STRENGTH, "ratio": median(times["edit_1.0"]) / plain,
              "ratio_default_strength": median(times[f"edit_{DEFAULT_STRENGTH}"]) / plain}
    emit("edit", result, args.json, f"{result['model']} on {result['device']}, {size} px, {args.steps} steps: "
                                    f"plain {plain:.3f} s; edit at strength 1.0 ratio {result['ratio']:.3f}, at "
                                    f"{DEFAULT_STRENGTH} ratio {result['ratio_default_strength']:.3f}")
    return result


if __name__ == "__main__":
    main()
