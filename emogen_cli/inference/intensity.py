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

from emogen_cli.core.errors import EmogenError

MAX_INTENSITY = 4.0  # beyond this the extrapolated conditioning leaves anything the UNet has seen


def check_intensity(value: float, option: str = "intensity") -> float:
    """α as a float in [0, MAX_INTENSITY] (NaN and infinities refused)."""
    if isinstance(value, bool):  # True would silently mean 1
        raise EmogenError(f"{option} must be a number, got {value!r}.", "0 = no emotion, 1 = EmoGen's.")
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise EmogenError(f"{option} must be a number, got {value!r}.", "0 = no emotion, 1 = EmoGen's.") from None
    if not 0 <= alpha <= MAX_INTENSITY:  # False for NaN too
        raise EmogenError(f"{option} must lie in [0, {MAX_INTENSITY:g}], got {value}.",
                          "0 = no emotion, 1 = EmoGen's emotion, above 1 = stronger.")
    return alpha + 0.0  # -0.0 -> 0.0: one file name ("intensity0", not "intensity-0") and one metadata value


def parse_intensities(text: str, option: str = "--intensity") -> list[float]:
    """'0,0.5,1,1.5' -> [0.0, 0.5, 1.0, 1.5]: finite, each in [0, MAX_INTENSITY], no repeats."""
    from emogen_cli.core.validate import numbers

    values = [check_intensity(v, option) for v in numbers(text, option)]
    if len(set(values)) != len(values):
        raise EmogenError(f"{option} lists a strength twice: '{text}'.", "Give each strength once, e.g. 0,0.5,1.")
    names = [f"{v:g}" for v in values]  # file names hold α to 6 significant digits (writer.file_stem)
    if len(set(names)) != len(names):
        same = sorted({n for n in names if names.count(n) > 1})
        raise EmogenError(f"{option} lists strengths too close to tell apart in file names ({', '.join(same)}): "
                          f"'{text}'.", "Make them differ within 6 significant digits, e.g. 0.1,0.2.")
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
    from dataclasses import replace

    return generator.conditioning(replace(request, intensity=alpha), seeds)


def blend(generator, request, seeds: list[int]):
    """EmoGenPipeline.conditioning of a request whose intensity is not 1: c_neutral + α (c_emotion − c_neutral)."""
    from dataclasses import replace

    alpha = request.alpha
    neutral = neutral_conditioning(generator, request, len(seeds))
    if alpha == 0:
        return neutral
    full = generator.conditioning(replace(request, intensity=None), seeds)
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
