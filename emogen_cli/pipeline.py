"""`EmoGenPipeline`: emogen as a Python library, in the style of a diffusers pipeline.

A mapper bundle (emotion space + mapping network) and the Stable Diffusion model it was trained on
turn an emotion into a "<emotion>" token embedding, which is written into the prompt's text
embeddings and handed to SD as `prompt_embeds`. The pipeline generates images itself, or gives those
embeddings to any SD 1.x diffusers pipeline (ControlNet, img2img, LoRA-patched, ...).

Image i of a call gets seed `seed + i` for both its emotion-space sample and its initial latents,
so results do not depend on the batch size, and `pipe(..., seed=0, num_images=4)` gives the same
images as `emogen generate -n 4 --seed 0` into an empty folder.

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

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from emogen_cli import __version__
from emogen_cli.core.choices import FUSION_MODES, MAX_IMAGES, MAX_SEED, MAX_STEPS, SCHEDULER_CLASSES
from emogen_cli.core.config import Config
from emogen_cli.core.emotions import validate_emotion
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.reporting import Reporter
from emogen_cli.core.runtime import DTYPES, resolve_device, resolve_precision
from emogen_cli.stage2.conditioning import EmotionPromptEncoder
from emogen_cli.stage2.mapper import MapperBundle, load_mapper

SCHEDULERS = SCHEDULER_CLASSES  # generate.scheduler -> diffusers class name (one table, in choices.py)
# The names AUTOMATIC1111 shows for the same samplers (its "Sampler:" infotext field).
SAMPLER_NAMES = {"unipc": "UniPC", "ddim": "DDIM", "euler": "Euler", "dpm": "DPM++ 2M", "pndm": "PLMS"}
BASELINE_PROMPT = "a photo that evokes {emotion}"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


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


MAX_SIZE = 8192  # image side in pixels (latents of 1024x1024: a 8192-pixel image needs ~64x SD's memory)


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


def placeholder_tokens(placeholder: str, count: int) -> list[str]:
    """The bundle's placeholder plus extra ones for fusion: <emotion>, <emotion_2>, <emotion_3>, ..."""
    stem, close = (placeholder[:-1], ">") if placeholder.endswith(">") else (placeholder, "")
    return [placeholder] + [f"{stem}_{k}{close}" for k in range(2, count + 1)]


def resolve_bundle(source: str | Path) -> Path:
    """A local mapper bundle folder, or a Hugging Face Hub repo id downloaded (or found in the cache)."""
    path = Path(source)
    text = str(source)
    if path.exists() or not _REPO_ID.fullmatch(text) or Path(text.split("/")[0]).is_dir():
        return path  # a local path (missing ones are reported by load_mapper as such, not as a network error)
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")
    try:
        return Path(snapshot_download(text, local_files_only=offline))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean "not available"
        why = ("HF_HUB_OFFLINE is set and it is not in the local cache" if offline else
               f"download failed: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}")
        raise EmogenError(f"'{text}' is not a local folder and the Hub repo '{text}' could not be loaded ({why}).",
                          f"Download it where you are online with `hf download {text} --local-dir DIR` and pass DIR, "
                          "or check the path.") from None


@dataclass(frozen=True)
class Settings:
    """The sampling settings of one call (defaults: the config's generate section)."""

    steps: int
    guidance: float
    size: int
    scheduler: str
    negative_prompt: str


@dataclass
class EmoGenOutput:
    """What `EmoGenPipeline.__call__` returns: images and, per image, the metadata its PNG would carry."""

    images: list[Image.Image]
    metadata: list[dict[str, Any]] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)  # AUTOMATIC1111 "parameters" text, per image
    rejected: list[Image.Image] = field(default_factory=list)  # best-of candidates not kept (keep_all=True)
    rejected_metadata: list[dict[str, Any]] = field(default_factory=list)


def _fill(template: str, words: str) -> str:
    """The template with "{}" replaced by `words` ("{{" and "}}" stand for literal braces)."""
    try:
        return template.format(words)
    except (KeyError, IndexError, ValueError):
        raise EmogenError(f"The prompt template {template!r} holds braces other than one '{{}}'.",
                          "Mark the emotion with '{}' only; write '{{' and '}}' for literal braces.") from None


def _a1111_value(value: Any) -> str:
    """A1111's quoting: values holding ',', ':' or a newline are JSON strings."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def _model_name(base_model: str) -> str:
    """A hub id as is; a local folder by its name (A1111 shows checkpoint names, not paths)."""
    return Path(base_model).name if Path(base_model).exists() else base_model


class EmoGenPipeline:
    """A mapper bundle + the Stable Diffusion pipeline it conditions: emotions in, images out.

    Build it with `from_pretrained` (a bundle folder or a Hub repo id). The old constructor form
    `EmoGenPipeline(config, mapper, baseline, tokens, device)` (as `EmoGenerator`) keeps working.
    """

    def __init__(self, config: Config | None = None, mapper: str | Path | None = None, baseline: bool = False,
                 tokens: int = 1, device: torch.device | str | None = None, *, torch_dtype: torch.dtype | None = None,
                 base_model: str | None = None, reporter: Reporter | None = None) -> None:
        from emogen_cli.core.pretrained import load, quiet_libraries

        quiet_libraries()
        from diffusers import StableDiffusionPipeline

        self.config = config = config or Config()
        self.baseline, self.reporter = baseline, reporter or Reporter()
        self.mapper_source = str(mapper or config.generate.mapper)
        self.mapper_path = resolve_bundle(self.mapper_source)
        self.bundle: MapperBundle = load_mapper(self.mapper_path)
        self.device = resolve_device(device if device is not None else config.runtime.device)
        self.dtype = torch_dtype or DTYPES[resolve_precision(config.runtime.mixed_precision, self.device)]
        self.base_model = base_model or self.bundle.base_model(config)
        self.bundle.check_base_model(self.base_model, config.model.revision, self.reporter, config.generate.strict)
        self.pipe = load(StableDiffusionPipeline, self.base_model, revision=config.model.revision, safety_checker=None,
                         requires_safety_checker=False)
        self.scheduler_name = ""
        self.set_scheduler(config.generate.scheduler)
        self.pipe.to(self.device, self.dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.bundle.check_text_width(self.pipe.text_encoder.config.hidden_size, self.base_model)
        self.placeholders: list[str] = []
        self.prompts: EmotionPromptEncoder
        self._ensure_tokens(max(tokens, 1))
        self.mapper = self.bundle.mapper.to(self.device)
        self.mapper_hash = hashlib.sha256((self.mapper_path / "mapper.safetensors").read_bytes()).hexdigest()[:16]
        self._warned: set[str] = set()
        self._negatives: dict[str, torch.Tensor] = {}
        self._scorers: dict[str, Any] = {}  # best-of's emotion probes, by path
        self.negative = self.negative_embeds()  # the config's negative prompt, encoded once

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, bundle_or_repo_id: str | Path, base_model: str | None = None,
                        torch_dtype: torch.dtype | None = None, device: torch.device | str | None = None, *,
                        config: Config | None = None, scheduler: str | None = None, baseline: bool = False,
                        reporter: Reporter | None = None) -> "EmoGenPipeline":
        """Load a mapper bundle folder or Hub repo id (e.g. "runs/mapper", "USER/NAME").

        `base_model` overrides the SD model the bundle names; `torch_dtype` defaults to bf16/fp16 on
        CUDA and float32 on CPU; `device` defaults to CUDA when present. `config` supplies the other
        defaults (steps, guidance, negative prompt, ...).
        """
        if torch_dtype is not None and not isinstance(torch_dtype, torch.dtype):
            raise EmogenError(f"torch_dtype must be a torch dtype, got {torch_dtype!r}.",
                              "For example: torch_dtype=torch.float16 (or leave it out: bf16/fp16 on CUDA, fp32 on CPU).")
        defaults = config is None
        config = config or Config()
        if scheduler is not None:
            if scheduler not in SCHEDULERS:
                raise EmogenError(f"Unknown scheduler '{scheduler}'.", f"Choose one of: {', '.join(SCHEDULERS)}.")
            config = replace(config, generate=replace(config.generate, scheduler=scheduler))
        pipe = cls(config, bundle_or_repo_id, baseline, 1, device, torch_dtype=torch_dtype, base_model=base_model,
                   reporter=reporter)
        if defaults:  # no config given: images default to the size the mapper was trained at
            size = int(pipe.bundle.config.get("resolution") or config.model.resolution)
            pipe.config = replace(config, model=replace(config.model, resolution=size))
        return pipe

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "EmoGenPipeline":
        """Move the SD pipeline (and the mapper) to `device` and/or `dtype`; returns self, as diffusers does."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        if device is not None:
            self.device = resolve_device(device if isinstance(device, torch.device) else str(device))
        self.dtype = dtype or self.dtype
        self.pipe.to(self.device, self.dtype)
        self.mapper = self.mapper.to(self.device)  # stays float32: its outputs are cast where they are used
        self._negatives.clear()
        self.negative = self.negative_embeds()
        return self

    def set_scheduler(self, name: str) -> None:
        """Switch the sampler (unipc, ddim, euler, dpm, pndm), keeping the model's schedule settings."""
        if name == self.scheduler_name:
            return
        if name not in SCHEDULERS:
            raise EmogenError(f"Unknown scheduler '{name}'.", f"Choose one of: {', '.join(SCHEDULERS)}.")
        import diffusers

        self.pipe.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(self.pipe.scheduler.config)
        self.scheduler_name = name

    def _ensure_tokens(self, count: int) -> None:
        """Register enough placeholder tokens for a fusion of `count` emotions side by side."""
        if count <= len(self.placeholders):
            return
        self.placeholders = placeholder_tokens(self.bundle.config["placeholder"], count)
        self.prompts = EmotionPromptEncoder(self.pipe.tokenizer, self.pipe.text_encoder, self.placeholders)

    # ----------------------------------------------------------------------------------- requests
    def request(self, emotion: str | list[str] | tuple[str, ...] | None = None, prompt: str = "{}",
                num_images: int = 1, fusion: str = "tokens", weights: list[float] | None = None, *,
                intensity: float | None = None, va: tuple[float, float] | None = None,
                sigma: float | None = None) -> Request:
        """A validated `Request` from the friendly arguments of `__call__`."""
        if intensity is not None:
            from emogen_cli.inference.intensity import check_intensity

            intensity = check_intensity(intensity)
        if va is not None:
            return self._va_request(emotion, prompt, num_images, va, sigma, intensity)
        if emotion is None:
            raise EmogenError("No emotion given.", "Pass emotion=\"awe\" (or va=(valence, arousal)).")
        if not isinstance(emotion, (str, list, tuple)) or not all(isinstance(n, str) for n in
                                                                     ([emotion] if isinstance(emotion, str) else emotion)):
            raise EmogenError(f"emotion must be a name or a list of names, got {emotion!r}.",
                              "For example: emotion=\"awe\" or emotion=[\"amusement\", \"fear\"].")
        if not isinstance(fusion, str):
            raise EmogenError(f"fusion must be one of {', '.join(FUSION_MODES)}, got {fusion!r}.")
        if sigma is not None:
            raise EmogenError("sigma sets the kernel width of a valence-arousal point; it needs va=(V, A).",
                              "Pass va=(valence, arousal) too, or drop sigma.")
        names = [emotion] if isinstance(emotion, str) else list(emotion)
        names = [validate_emotion(n, self.bundle.emotions) for name in names for n in name.split(",") if n.strip()]
        if not names:
            raise EmogenError("No emotion given.", f"Choose from: {', '.join(self.bundle.emotions)}.")
        if not isinstance(prompt, str) or prompt.count("{}") > 1:
            raise EmogenError(f"The prompt template {prompt!r} must hold at most one '{{}}'.",
                              "Use '{} street' to place the emotion, or plain text to put it in front.")
        template = prompt if "{}" in prompt else "{} " + prompt if prompt else "{}"
        _fill(template, "")  # stray braces fail here, before any model work
        whole(num_images, "num_images", 1, MAX_IMAGES)
        if weights is not None and (not isinstance(weights, (list, tuple)) or any(
                isinstance(w, bool) or not isinstance(w, (int, float)) for w in weights)):
            raise EmogenError(f"weights must be a list of numbers, got {weights!r}.", "For example: weights=[0.7, 0.3].")
        if len(names) > 1:
            return replace(fusion_request(names, weights, fusion, template, int(num_images)), intensity=intensity)
        if weights is not None:
            raise EmogenError("weights apply to a fusion of several emotions.", "Pass emotion=[...] with two or more.")
        return Request((names[0],), template, int(num_images), intensity=intensity)

    def _va_request(self, emotion: Any, prompt: str, num_images: int, va: Any, sigma: float | None,
                    intensity: float | None) -> Request:
        """A `space` mix of the bundle's Mikels emotions with the kernel weights of a valence-arousal point."""
        from emogen_cli.core.emotions import EMOTIONS
        from emogen_cli.inference.va import DEFAULT_SIGMA, check_point, va_request

        if emotion is not None:
            raise EmogenError("Give either an emotion or a valence-arousal point, not both.",
                              "Drop emotion=... (or va=...).")
        point = check_point(va)
        if not isinstance(prompt, str):
            raise EmogenError(f"The prompt template {prompt!r} must be text.", "For example: prompt=\"{} street\".")
        template = prompt if "{}" in prompt else "{} " + prompt if prompt else "{}"
        _fill(template, "")
        whole(num_images, "num_images", 1, MAX_IMAGES)
        emotions = tuple(e for e in EMOTIONS if e in self.bundle.emotions)
        request = va_request(*point, DEFAULT_SIGMA if sigma is None else sigma, template, int(num_images),
                             emotions)
        return replace(request, intensity=intensity)

    def prompt_text(self, request: Request) -> str:
        """The prompt SD reads, with placeholder tokens where the emotions go."""
        if self.baseline:
            return _fill(request.prompt, BASELINE_PROMPT.format(emotion=" and ".join(request.emotions)))
        self._ensure_tokens(request.tokens)
        return _fill(request.prompt, " ".join(self.placeholders[:request.tokens]))

    def display_prompt(self, request: Request) -> str:
        """The prompt as people read it: each emotion token named after its emotion ("<awe> street"),
        the names `emogen export` gives the embeddings."""
        if self.baseline:
            return self.prompt_text(request)
        words = [f"<{e}>" for e in request.emotions] if request.mode == "tokens" else [f"<{request.name}>"]
        return _fill(request.prompt, " ".join(words))

    def check(self, request: Request) -> None:
        """Fail now (not after minutes of generation) if the emotion token falls outside CLIP's window;
        warn once about words cut from the end of a long prompt."""
        self.tokenize([self.prompt_text(request)])

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.prompts.tokenize(texts, warn=self._warn_once)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.reporter.warn(message)

    # ----------------------------------------------------------------------------------- conditioning
    @torch.no_grad()
    def embeddings(self, request: Request, seeds: list[int]) -> torch.Tensor:
        """The placeholder embeddings [B, request.tokens, D], one emotion-space sample per emotion and seed."""
        vectors = torch.stack([self.bundle.space.samples(e, seeds) for e in request.emotions], 1).to(self.device)
        weights = torch.tensor(request.weights or [1.0], device=self.device).view(1, -1, 1)
        if request.mode == "space" and len(request.emotions) > 1:
            vectors = (weights * vectors).sum(1, keepdim=True)
        # One [B, D] mapper call per slot: the single emotion is computed with exactly the same shapes,
        # so weights (1, 0) reproduce it bit for bit on every CPU (BLAS kernels differ between shapes).
        embeddings = torch.stack([self.mapper(vectors[:, k]) for k in range(vectors.shape[1])], 1)
        if request.mode == "embedding" and len(request.emotions) > 1:
            embeddings = (weights * embeddings).sum(1, keepdim=True)
        return embeddings

    @torch.no_grad()
    def encode_prompt(self, texts: list[str], placeholder_values: torch.Tensor | None = None) -> torch.Tensor:
        """Text -> prompt_embeds [B, 77, D] in the pipeline's dtype, with placeholder tokens holding
        `placeholder_values` [B, K, D] (as diffusers' `encode_prompt`, plus the injected emotion)."""
        ids = self.tokenize(texts)
        return self.prompts.encode(ids, placeholder_values)[0].to(self.dtype)

    @torch.no_grad()
    def conditioning(self, request: Request, seeds: list[int]) -> torch.Tensor:
        """prompt_embeds [B, 77, D] for `request`, one emotion-space sample per seed (at the request's
        intensity: exactly EmoGen's at 1, exactly the prompt without the emotion at 0; intensity.py)."""
        if request.alpha != 1:
            from emogen_cli.inference.intensity import blend

            return blend(self, request, seeds)
        values = None if self.baseline else self.embeddings(request, seeds)
        return self.encode_prompt([self.prompt_text(request)] * len(seeds), values)

    @torch.no_grad()
    def negative_embeds(self, text: str | None = None) -> torch.Tensor:
        """[1, 77, D] embeddings of the negative prompt (default: the config's), cached per text."""
        text = self.config.generate.negative_prompt if text is None else text_arg(text, "negative_prompt")
        if text not in self._negatives:
            self._negatives[text] = self.prompts.encode(self.prompts.tokenize([text], warn=self._warn_once))[0].to(
                self.dtype)
        return self._negatives[text]

    def prompt_embeds(self, emotion: str | list[str] | None = None, prompt: str = "{}", seeds: list[int] | int = 0,
                      fusion: str = "tokens", weights: list[float] | None = None,
                      negative_prompt: str | None = None, *, intensity: float | None = None,
                      va: tuple[float, float] | None = None, sigma: float | None = None) -> dict[str, torch.Tensor]:
        """`prompt_embeds` and `negative_prompt_embeds` for any SD 1.x diffusers pipeline, one row per seed.

        Example (ControlNet, img2img, ... work the same way):
            >>> embeds = pipe.prompt_embeds(emotion="awe", prompt="{} cup", seeds=[0, 1])
            >>> generators = [torch.Generator(pipe.device).manual_seed(s) for s in (0, 1)]
            >>> images = sd(**embeds, generator=generators).images  # sd: a StableDiffusionPipeline

        With the same seeds, scheduler, steps and guidance, `sd` gives the images emogen gives.
        `intensity` and `va` work as in `__call__`.
        """
        seeds = _seeds(seeds)
        request = self.request(emotion, prompt, len(seeds), fusion, weights, intensity=intensity, va=va, sigma=sigma)
        self.check(request)
        positive = self.conditioning(request, seeds)
        negative = self.negative_embeds(negative_prompt).expand(len(seeds), -1, -1)
        return {"prompt_embeds": positive, "negative_prompt_embeds": negative}

    # ----------------------------------------------------------------------------------- images
    def settings(self, steps: int | None = None, guidance: float | None = None, size: int | None = None,
                 negative_prompt: str | None = None) -> Settings:
        """This call's settings: the given values, else the config's."""
        g = self.config.generate
        settings = Settings(whole(g.steps if steps is None else steps, "steps", 1, MAX_STEPS),
                            g.guidance if guidance is None else real(guidance, "guidance", 0, 1e4),
                            self.config.model.resolution if size is None else whole(size, "size", 8, MAX_SIZE),
                            self.scheduler_name,
                            g.negative_prompt if negative_prompt is None else text_arg(negative_prompt, "negative_prompt"))
        if settings.steps < 1 or settings.size < 8 or settings.size % 8:
            raise EmogenError(f"steps must be >= 1 and size a multiple of 8, got steps={settings.steps}, "
                              f"size={settings.size}.", "For example steps=50, size=512.")
        return settings

    @torch.no_grad()
    def images(self, request: Request, seeds: list[int], settings: Settings | None = None) -> list[Image.Image]:
        """One image per seed; seed s drives both the emotion-space sample and the initial latents."""
        s = settings or self.settings()
        generators = [torch.Generator(self.device).manual_seed(seed) for seed in seeds]
        return self.pipe(prompt_embeds=self.conditioning(request, seeds),
                         negative_prompt_embeds=self.negative_embeds(s.negative_prompt).expand(len(seeds), -1, -1),
                         num_inference_steps=s.steps, guidance_scale=s.guidance, height=s.size, width=s.size,
                         generator=generators, output_type="pil").images

    def metadata(self, request: Request, seed: int, settings: Settings | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything needed to make the image again (the PNG's `emogen` chunk and index.jsonl entry);
        `extra` adds entries (best-of's rank and score)."""
        s = settings or self.settings()
        fusion = ({"mode": request.mode, "weights": list(request.weights) if request.weights else None}
                  if len(request.emotions) > 1 else None)
        meta = {"emotion": request.name, "emotions": list(request.emotions), "fusion": fusion,
                "prompt": request.prompt, "seed": seed, "steps": s.steps,
                "guidance": s.guidance, "scheduler": s.scheduler, "size": s.size,
                "negative_prompt": s.negative_prompt, "base_model": self.base_model,
                "clip_model": self.bundle.config["clip_model"], "mapper": self.mapper_source,
                "mapper_sha256": self.mapper_hash, "baseline": self.baseline, "emogen_version": __version__,
                "intensity": request.alpha}
        if request.alpha != 1:
            from emogen_cli.inference.intensity import neutral_prompt

            meta["neutral_prompt"] = neutral_prompt(request.prompt)
        if request.va is not None:
            from emogen_cli.inference.va import va_metadata

            meta.update(va_metadata(request))
        return {**meta, **(extra or {})}

    def infotext(self, request: Request, seed: int, settings: Settings | None = None,
                 extra: dict[str, Any] | None = None) -> str:
        """The image's parameters in AUTOMATIC1111's infotext format (its `parameters` PNG chunk);
        `extra` adds fields."""
        s = settings or self.settings()
        fields = {"Steps": s.steps, "Sampler": SAMPLER_NAMES[s.scheduler], "CFG scale": s.guidance, "Seed": seed,
                  "Size": f"{s.size}x{s.size}", "Model": _model_name(self.base_model), "Emotion": request.name}
        if len(request.emotions) > 1:
            fields["Emotion fusion"] = request.mode + (
                " " + "/".join(f"{w:.3g}" for w in request.weights) if request.weights else "")
        if request.intensity is not None:
            fields["Emogen intensity"] = f"{request.alpha:g}"
        if request.va is not None:
            fields["Emogen valence-arousal"] = f"{request.va[0]:g}/{request.va[1]:g}"
        if self.baseline:
            fields["Emogen baseline"] = "true"
        fields["Emogen mapper"] = self.mapper_hash
        fields["Emogen version"] = __version__
        fields.update(extra or {})
        params = ", ".join(f"{k}: {_a1111_value(v)}" for k, v in fields.items())
        return f"{self.display_prompt(request)}\nNegative prompt: {s.negative_prompt}\n{params}"

    def save(self, image: Image.Image, path: Path, request: Request, seed: int,
             settings: Settings | None = None, extra: dict[str, Any] | None = None,
             fields: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write one PNG (atomically) with its parameters in text chunks; returns its index record.
        `extra` adds metadata entries, `fields` infotext fields."""
        from emogen_cli.inference.writer import save_png

        meta = self.metadata(request, seed, settings, extra)
        save_png(path, image, meta, self.infotext(request, seed, settings, fields))
        return {"path": str(path), **meta}

    def scorer(self, probe: str | Path | None = None) -> Any:
        """The CLIP-space emotion probe that ranks best-of candidates (default: the bundle's), loaded once."""
        key = str(probe or "")
        if key not in self._scorers:
            from emogen_cli.evaluation.edit_metrics import scorer_for

            self._scorers[key] = scorer_for(self, probe)
        return self._scorers[key]

    def __call__(self, emotion: str | list[str] | None = None, prompt: str = "{}", num_images: int = 1,
                 seed: int = 0, fusion: str = "tokens", weights: list[float] | None = None, steps: int | None = None,
                 guidance: float | None = None, size: int | None = None, negative_prompt: str | None = None,
                 scheduler: str | None = None, seeds: list[int] | None = None,
                 batch_size: int | None = None, *, intensity: float | None = None,
                 va: tuple[float, float] | None = None, sigma: float | None = None, best_of: int = 1,
                 probe: str | Path | None = None, keep_all: bool = False) -> EmoGenOutput:
        """Generate `num_images` images that evoke `emotion` (a name, or several names to fuse).

        Example (runs as is after the README's quick start, which trains `runs/demo/mapper` on CPU;
        a real bundle runs the same way, on CUDA in bf16/fp16 when present):
            >>> from emogen_cli import EmoGenPipeline
            >>> pipe = EmoGenPipeline.from_pretrained("runs/demo/mapper")
            >>> out = pipe(emotion="awe", prompt="{} street", num_images=2, seed=0, steps=4)
            >>> [m["seed"] for m in out.metadata], out.images[0].size
            ([0, 1], (16, 16))
            >>> out.infotexts[0].splitlines()[0]
            '<awe> street'
            >>> out = pipe(emotion=["amusement", "fear"], fusion="embedding", weights=[0.7, 0.3], steps=4)
            >>> out.metadata[0]["fusion"]
            {'mode': 'embedding', 'weights': [0.7, 0.3]}
            >>> out = pipe(emotion="awe", intensity=0.5, steps=4)  # half-strength awe
            >>> out = pipe(va=(0.8, 0.3), steps=4)  # pleasant and calm: a valence-arousal point
            >>> out.metadata[0]["va"]["valence"], out.metadata[0]["fusion"]["mode"]
            (0.8, 'space')
            >>> out = pipe(emotion="fear", best_of=3, steps=4)  # keep the probe's favourite of 3
            >>> out.metadata[0]["best_of"]["rank"], out.metadata[0]["best_of"]["k"]
            (1, 3)

        `prompt` marks the emotion with "{}" (text without it gets the emotion in front); image i uses
        seed `seed + i` (or `seeds[i]`). `steps`, `guidance`, `size`, `negative_prompt` and `scheduler`
        default to the config's generate section.

        `intensity` α scales the emotion (0: the prompt without it, exactly; 1: EmoGen's conditioning,
        exactly; above 1 extrapolates; at most 4). `va=(valence, arousal)`, both in [0, 1] on the NRC
        VAD scale, replaces `emotion`: the eight emotions are mixed in the emotion space with Gaussian
        kernel weights of width `sigma` (0.15) around the point (va.py). `best_of=K` draws K candidates
        per image - image i's have seeds `seed + i*K .. seed + i*K + K-1`, as `emogen generate
        --best-of K` (`seeds[i]*K + j` with `seeds`) - and keeps the one the CLIP-space
        emotion probe (`probe`, default the bundle's) rates highest for the target; its metadata holds
        `best_of: {k, rank, probe_score, candidate_seeds}`, and `keep_all=True` also returns the others
        in `rejected` / `rejected_metadata`.
        """
        # 1. Validate the request and settings before any model work.
        if scheduler is not None:
            self.set_scheduler(scheduler)
        if seeds is not None:
            image_seeds = _seeds(seeds)
        else:
            seed, count = whole(seed, "seed", 0, MAX_SEED), whole(num_images, "num_images", 1, MAX_IMAGES)
            image_seeds = _seeds([seed + i for i in range(count)])
        if not isinstance(keep_all, bool):
            raise EmogenError(f"keep_all must be True or False, got {keep_all!r}.")
        if probe is not None and not isinstance(probe, (str, Path)):
            raise EmogenError(f"probe must be a path to an emotion probe, got {probe!r}.")
        request = self.request(emotion, prompt, len(image_seeds), fusion, weights, intensity=intensity, va=va,
                               sigma=sigma)
        settings = self.settings(steps, guidance, size, negative_prompt)
        from emogen_cli.inference.bestof import check_best_of

        k = check_best_of(best_of, keep_all)
        # 2. Check the emotion tokens fit in CLIP's 77-token window (warn about any cut words).
        self.check(request)
        batch = self.config.generate.batch_size if batch_size is None else whole(batch_size, "batch_size", 1, 4096)
        if k > 1:  # 3b. K candidates per image, ranked by the emotion probe
            from emogen_cli.inference.bestof import candidate_fields, candidate_seeds, select

            groups = ([[s * k + j for j in range(k)] for s in image_seeds] if seeds is not None else
                      [candidate_seeds(int(seed), i, k) for i in range(len(image_seeds))])
            out = EmoGenOutput([])
            for sel in select(self, request, groups, self.scorer(probe), settings, batch):
                for cand in sel.candidates if keep_all else [sel.kept]:
                    extra, fields = candidate_fields(sel, cand)
                    meta = self.metadata(request, cand.seed, settings, extra)
                    if cand.rank == 1:
                        out.images.append(cand.image)
                        out.metadata.append(meta)
                        out.infotexts.append(self.infotext(request, cand.seed, settings, fields))
                    else:
                        out.rejected.append(cand.image)
                        out.rejected_metadata.append(meta)
            return out
        # 3. Generate in batches: each seed maps one emotion-space sample and starts its own latents.
        images: list[Image.Image] = []
        for i in range(0, len(image_seeds), batch):
            images += self.images(request, image_seeds[i:i + batch], settings)
        # 4. Describe each image as its PNG would (emogen metadata + A1111 infotext).
        return EmoGenOutput(images, [self.metadata(request, s, settings) for s in image_seeds],
                            [self.infotext(request, s, settings) for s in image_seeds])


def _seeds(seeds: Any) -> list[int]:
    """A seed or a list of seeds as ints in 0..MAX_SEED (the CLI's range)."""
    if isinstance(seeds, (int, float)) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, (list, tuple, range)):
        raise EmogenError(f"seeds must be a list of whole numbers, got {seeds!r}.", "For example: seeds=[0, 1].")
    return [whole(s, "seed", 0, MAX_SEED) for s in seeds]


EmoGenerator = EmoGenPipeline  # the name the CLI and older code used
