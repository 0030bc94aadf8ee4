"""`Request` (what to generate: emotions, prompt template, count, fusion, intensity, V-A point) and
the checks of the values a caller passes (numbers, text, the prompt template) before any model work.

Fusion combines several emotions in one image in one of three ways:
- "tokens" (default): one placeholder token per emotion, side by side, each holding its own mapped
  embedding, so every emotion keeps its own semantics (the official script also gives each emotion its
  own token slot, by overwriting two existing rows instead; see docs/faithfulness.md).
- "embedding": one token holding the weighted mean of the emotions' mapped embeddings.
- "space": one token holding the mapping of the weighted mean of the emotion-space samples.
The two mixing modes take weights (normalised to sum to 1); weights (1, 0) reproduce the first
emotion alone exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from emogen_cli.core.choices import FUSION_MODES
from emogen_cli.core.errors import EmogenError


@dataclass(frozen=True)
class Request:
    """`count` images of one emotion (or several, fused) in a prompt where "{}" marks the emotion."""

    emotions: tuple[str, ...]
    prompt: str = "{}"
    count: int = 1
    mode: str = "tokens"  # how several emotions combine (FUSION_MODES)
    weights: tuple[float, ...] | None = None  # mixing weights, summing to 1 ("embedding" / "space")
    intensity: float | None = None  # emotion strength α (intensity.py); None: not asked for, i.e. 1
    va: tuple[float, float, float] | None = None  # (valence, arousal, sigma) when made from a V-A point (va.py)

    @property
    def name(self) -> str:
        return "+".join(self.emotions)

    @property
    def alpha(self) -> float:
        """The emotion strength used: 1 (EmoGen's conditioning) unless an intensity was asked for."""
        return 1.0 if self.intensity is None else float(self.intensity)

    @property
    def tokens(self) -> int:
        """How many placeholder tokens the prompt holds."""
        return len(self.emotions) if self.mode == "tokens" else 1


def fusion_request(emotions: list[str], weights: list[float] | None = None, mode: str = "tokens",
                   prompt: str = "{}", count: int = 1) -> Request:
    """A validated fusion of two or more emotions."""
    if len(emotions) < 2 or len(set(emotions)) != len(emotions):
        raise EmogenError("Fusion needs two or more different emotions.", "For example: emogen fuse amusement fear.")
    if mode not in FUSION_MODES:
        raise EmogenError(f"Unknown fusion mode '{mode}'.", f"Choose one of: {', '.join(FUSION_MODES)}.")
    if weights is None:
        return Request(tuple(emotions), prompt, count, mode,
                       None if mode == "tokens" else tuple(1 / len(emotions) for _ in emotions))
    if mode == "tokens":
        raise EmogenError("--weights applies to the mixing modes; the token mode gives each emotion its own word.",
                          "Add --mode embedding (or --mode space).")
    if len(weights) != len(emotions):
        raise EmogenError(f"Got {len(weights)} weights for {len(emotions)} emotions: {weights}.",
                          "Give one weight per emotion, e.g. --weights 0.7,0.3.")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise EmogenError(f"Fusion weights must be non-negative numbers, not all zero; got {weights}.",
                          "For example: --weights 0.7,0.3 (they are normalised to sum to 1).")
    total = sum(weights)
    return Request(tuple(emotions), prompt, count, mode, tuple(w / total for w in weights))


def whole(value: Any, name: str, low: int, high: int) -> int:
    """`value` as an int in [low, high]; bools, NaN, fractions and text refused with one clear line."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise EmogenError(f"{name} must be a whole number, got {value!r}.", f"For example: {name}={max(low, 1)}.")
    if not low <= value <= high:
        raise EmogenError(f"{name} must lie in {low}..{high}, got {value!r}.", f"For example: {name}={max(low, 1)}.")
    return int(value)


def real(value: Any, name: str, low: float, high: float) -> float:
    """`value` as a finite float in [low, high] (NaN, infinities, bools and text refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise EmogenError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}.",
                          f"For example: {name}={min(max(low, 1), high):g}.")
    return float(value)


def text_arg(value: Any, name: str) -> str:
    """`value` if it is a str (a number or None passed as text would reach the tokenizer's deep errors)."""
    if not isinstance(value, str):
        raise EmogenError(f"{name} must be text (str), got {type(value).__name__} {value!r}.",
                          f"For example: {name}=\"blurry\".")
    return value


def template(prompt: Any, name: str = "prompt") -> str:
    """The prompt as a template with one "{}" (the one rule, core.validate.template: text without it gets
    the emotion in front; "{{" and "}}" are literal braces); the empty prompt is the emotion alone."""
    from emogen_cli.core.validate import template as checked

    return checked(text_arg(prompt, name), name) if prompt else "{}"


def fill(prompt: str, words: str) -> str:
    """The template with "{}" replaced by `words`."""
    return prompt.format(words)
