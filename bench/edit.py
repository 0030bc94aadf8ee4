"""Cost of `emogen edit` relative to plain generation at the same steps and image size.

img2img runs int(steps × strength) denoising steps plus one VAE encode, so an edit at strength s
should cost about s of a generation plus the encode; timed at strength 1.0 and the default 0.5.

    python bench/edit.py [--size tiny|mid] [--steps 20] [--repeats 5] [--quick] [--json]
    python bench/edit.py --mapper runs/mapper --pretrained stable-diffusion-v1-5/stable-diffusion-v1-5  # GPU
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
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workdir", help="Where to build the random model chain (default: a temporary folder).")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.steps, args.repeats = "tiny", 4, 3

    from PIL import Image

    from emogen_cli.core.config import load_config
    from emogen_cli.inference.edit import DEFAULT_STRENGTH, Editor
    from emogen_cli.pipeline import EmoGenPipeline, Request

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"generate.steps": args.steps, "generate.batch_size": 1}
        if args.mapper:
            overrides.update({"generate.mapper": args.mapper,
                              **({"model.pretrained": args.pretrained} if args.pretrained else {})})
            cfg = load_config(None, overrides)
        else:
            cfg = load_config(workspace(Path(args.workdir or tmp), args.size), overrides)
        gen = EmoGenPipeline(cfg)
        editor = Editor(gen)
        request, size = Request(("awe",)), cfg.model.resolution
        source = Image.linear_gradient("L").convert("RGB").resize((size, size))
        embeds = gen.conditioning(request, [0])
        sync = cuda_sync()
        times: dict[str, list[float]] = {"plain": [], "edit_1.0": [], f"edit_{DEFAULT_STRENGTH}": []}
        runs = {"plain": lambda: gen.images(request, [0]), "edit_1.0": lambda: editor(source, embeds, 1.0, 0),
                f"edit_{DEFAULT_STRENGTH}": lambda: editor(source, embeds, DEFAULT_STRENGTH, 0)}
        for _ in range(args.repeats):  # interleaved, so drift affects all alike
            for name, fn in runs.items():
                times[name] += timings(fn, 1, warmup=0 if times[name] else 1, sync=sync)
    plain = median(times["plain"])
    result = {"model": (args.pretrained or gen.base_model) if args.mapper else args.size, "device": str(gen.device),
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
