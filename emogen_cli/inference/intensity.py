"""Continuous emotion strength: `--intensity α` with exact endpoints.

Method: interpolate the text encoder's output (the UNet's prompt_embeds) between the prompt
without the emotion token ("neutral") and the EmoGen conditioning with it:
    c(α) = c_neutral + α (c_emotion − c_neutral)
α = 1 returns EmoGen's conditioning itself (not recomputed arithmetic, so it is bit-identical),
α = 0 returns the neutral conditioning itself, 0 < α < 1 weakens the emotion, α > 1 extrapolates
past it (the way LoRA sliders are pushed beyond 1). The neutral prompt is the template with the
token removed: "{} a street" -> "a street". For `generate`, whose prompt is the token alone, the
neutral prompt is the empty prompt "", so α = 0 is Stable Diffusion's empty-prompt conditioning:
with the default empty negative prompt both halves of classifier-free guidance are then equal and
the image is the model's unconditional sample for that seed.
Cost: one extra text-encoder pass per batch (no extra UNet pass); bench/intensity.py measures it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from emogen_cli.core.errors import EmogenError
from emogen_cli.core.reporting import Reporter, progress

MAX_INTENSITY = 4.0  # beyond this the extrapolated conditioning leaves anything the UNet has seen


def parse_intensities(text: str) -> list[float]:
    """'0,0.5,1,1.5' -> [0.0, 0.5, 1.0, 1.5] (each in [0, MAX_INTENSITY])."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EmogenError(f"--intensity must be numbers separated by commas, got '{text}'.",
                          "For example: --intensity 0,0.5,1,1.5.") from None
    if not values or any(not 0 <= v <= MAX_INTENSITY for v in values):
        raise EmogenError(f"Intensities must lie in [0, {MAX_INTENSITY:g}], got '{text}'.",
                          "0 = no emotion, 1 = EmoGen's emotion, above 1 = stronger.")
    return values


def neutral_prompt(template: str) -> str:
    """The prompt without its emotion token(s): "{} a street" -> "a street", "{}" -> ""."""
    return re.sub(r"\s+", " ", template.replace("{}", " ")).strip()


def neutral_conditioning(generator, request, count: int):
    """prompt_embeds [count, 77, D] of the request's prompt without the emotion."""
    import torch

    with torch.no_grad():
        ids = generator.prompts.tokenize([neutral_prompt(request.prompt)] * count)
        return generator.prompts.encode(ids)[0].to(generator.dtype)


def intensity_conditioning(generator, request, seeds: list[int], alpha: float):
    """prompt_embeds at emotion strength `alpha` (exactly EmoGen's at 1, exactly neutral at 0)."""
    if alpha == 1:
        return generator.conditioning(request, seeds)
    neutral = neutral_conditioning(generator, request, len(seeds))
    if alpha == 0:
        return neutral
    full = generator.conditioning(request, seeds)
    return (neutral.float() + alpha * (full.float() - neutral.float())).to(generator.dtype)


def text_to_image(generator, prompt_embeds, seeds: list[int]) -> list:
    """SD images from prompt_embeds with the generator's settings and one seeded generator per image,
    the same call as EmoGenPipeline.images with its default settings."""
    import torch

    g = generator.config.generate
    size = generator.config.model.resolution
    generators = [torch.Generator(generator.device).manual_seed(s) for s in seeds]
    return generator.pipe(prompt_embeds=prompt_embeds,
                          negative_prompt_embeds=generator.negative.expand(len(seeds), -1, -1),
                          num_inference_steps=g.steps, guidance_scale=g.guidance, height=size, width=size,
                          generator=generators, output_type="pil").images


def intensity_strips(generator, request, alphas: list[float], seeds: list[int], out_dir: str | Path,
                     reporter: Reporter | None = None) -> dict[str, Any]:
    """For every seed, one image per α (same seed, so only the emotion strength changes) and a strip
    `grid-intensity-<stem>-seed<S>.png` left to right in the order of `alphas`."""
    from emogen_cli.inference.pngio import append_index, next_number, save_png, save_sheet, slug

    reporter = reporter or Reporter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{request.name}-intensity" + (f"-{slug(request.prompt)}" if slug(request.prompt) != "image" else "")
    start = next_number(out, stem)
    batch = max(1, generator.config.generate.batch_size)
    images: dict[tuple[float, int], Any] = {}
    with progress(reporter, "Intensity", len(alphas) * len(seeds)):
        for alpha in alphas:
            for i in range(0, len(seeds), batch):
                chunk = seeds[i:i + batch]
                for seed, image in zip(chunk, text_to_image(generator, intensity_conditioning(generator, request, chunk,
                                                                                                  alpha), chunk)):
                    images[(alpha, seed)] = image
                reporter.advance("Intensity", len(chunk))
    records, strips = [], []
    n = start
    for seed in seeds:
        for alpha in alphas:
            meta = {**generator.metadata(request, seed), "intensity": alpha,
                    "neutral_prompt": neutral_prompt(request.prompt)}
            records.append(save_png(out / f"{stem}-{n:05d}.png", images[(alpha, seed)], meta,
                                    f"{generator.infotext(request, seed)}, Emogen intensity: {alpha:g}"))
            n += 1
        strips.append(save_sheet(out / f"grid-intensity-{slug(stem)}-seed{seed}-{start:05d}.png",
                                 [[images[(a, seed)] for a in alphas]]))
    append_index(out, records)
    return {"out": str(out), "count": len(records), "alphas": alphas, "seeds": seeds, "strips": strips,
            "images": records}


def intensity(config, emotion: str, alphas: list[float], prompt: str = "{}", count: int = 1,
              out: str | Path | None = None, mapper: str | Path | None = None,
              reporter: Reporter | None = None) -> dict[str, Any]:
    """`emogen intensity`: strips of `emotion` at each α, one per seed (runtime.seed + i, i < count)."""
    from emogen_cli.core.emotions import validate_emotion
    from emogen_cli.pipeline import EmoGenPipeline, Request

    from emogen_cli.core import validate

    template = validate.template(prompt, "--prompt")
    request = Request((validate_emotion(emotion),), template, count)
    out = Path(out) if out is not None else Path(config.generate.output).parent / "intensity"
    generator = EmoGenPipeline(config, mapper)
    seeds = [config.runtime.seed + i for i in range(count)]
    return intensity_strips(generator, request, alphas, seeds, out, reporter)
