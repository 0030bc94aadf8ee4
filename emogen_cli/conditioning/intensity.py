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
EmoGenPipeline.conditioning computes both halves; this module holds the arithmetic and the checks.
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
    names = [f"{v:g}" for v in values]  # file names hold α to 6 significant digits (outputs/folder.py's file_stem)
    if len(set(names)) != len(names):
        same = sorted({n for n in names if names.count(n) > 1})
        raise EmogenError(f"{option} lists strengths too close to tell apart in file names ({', '.join(same)}): "
                          f"'{text}'.", "Make them differ within 6 significant digits, e.g. 0.1,0.2.")
    return values


def neutral_prompt(template: str) -> str:
    """The prompt without its emotion token(s): "{} a street" -> "a street", "{}" -> ""."""
    return re.sub(r"\s+", " ", template.replace("{}", " ")).strip()


def blend(neutral, full, alpha: float):
    """c_neutral + α (c_emotion − c_neutral) in float32, in the inputs' dtype; exactly `neutral` at α = 0
    and exactly `full` at α = 1 (no arithmetic on either endpoint)."""
    if alpha == 0:
        return neutral
    if alpha == 1:
        return full
    return (neutral.float() + alpha * (full.float() - neutral.float())).to(full.dtype)
