"""`EmoGenPipeline`: emogen as a Python library, shaped like a diffusers pipeline.

A mapper bundle (emotion space + mapping network) and the Stable Diffusion model it was trained on
turn an emotion into a "<emotion>" token embedding, which is written into the prompt's text
embeddings and handed to SD as `prompt_embeds` (SDXL: both towers' `prompt_embeds` and the
`pooled_prompt_embeds`; the model family's `Backbone`, emogen_cli/backbones/, says how). The pipeline
loads, encodes, samples and returns; what a request means (fusion, intensity, valence-arousal, best-of ranking, the seed rule) is in
`emogen_cli.conditioning` below it, and writing folders of images is in `emogen_cli.outputs` above it.

Image i of a call gets seed `seed + i` for both its emotion-space sample and its initial latents,
so results do not depend on the batch size, and `pipe("awe", num_images_per_prompt=4, seed=0)`
gives the images `emogen generate -e awe -n 4 --seed 0` writes into an empty folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from emogen_cli import __version__
from emogen_cli.backbones import Backbone, check_bundle, family_of_pipeline, get, resolution, resolve
from emogen_cli.conditioning.intensity import blend, check_intensity, neutral_prompt
from emogen_cli.conditioning.request import Request, fill, fusion_request, real, template, text_arg, whole
from emogen_cli.conditioning.seeds import check_seeds
from emogen_cli.conditioning.selection import Candidate, Selection, candidate_fields, check_best_of, rank, target_score
from emogen_cli.conditioning.va import DEFAULT_SIGMA, check_point, va_metadata, va_request
from emogen_cli.core.choices import FUSION_MODES, MAX_IMAGES, MAX_SEED, MAX_STEPS, SCHEDULER_CLASSES
from emogen_cli.core.config import Config
from emogen_cli.core.emotions import EMOTIONS, split_names, validate_emotion
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.reporting import Reporter
from emogen_cli.core.runtime import DTYPES, apply_runtime, resolve_device, resolve_precision
from emogen_cli.stage2.mapper import MapperBundle, load_mapper, resolve_bundle

SCHEDULERS = SCHEDULER_CLASSES  # generate.scheduler -> diffusers class name (one table, in choices.py)
# The names AUTOMATIC1111 shows for the same samplers (its "Sampler:" infotext field).
SAMPLER_NAMES = {"unipc": "UniPC", "ddim": "DDIM", "euler": "Euler", "dpm": "DPM++ 2M", "pndm": "PLMS"}
BASELINE_PROMPT = "a photo that evokes {emotion}"
MAX_SIZE = 8192  # image side in pixels (latents of 1024x1024: a 8192-pixel image needs ~64x SD's memory)
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# emogen's names before 0.2 -> the diffusers names that replaced them (refused with one line)
RENAMED = {"steps": "num_inference_steps", "guidance": "guidance_scale", "size": "height and width",
           "num_images": "num_images_per_prompt"}
StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]

__all__ = ["EmoGenPipeline", "EmoGenOutput", "Request", "fusion_request", "SCHEDULERS"]


@dataclass(frozen=True)
class Settings:
    """The sampling settings of one call (defaults: the config's generate section)."""

    steps: int
    guidance: float
    height: int
    width: int
    scheduler: str
    negative_prompt: str

    @property
    def size(self) -> int | list[int]:
        """What metadata records: the side of a square image, else [width, height]."""
        return self.height if self.height == self.width else [self.width, self.height]


@dataclass
class EmoGenOutput:
    """What `EmoGenPipeline.__call__` returns.

    Args:
        images: the images, as `output_type` asked (PIL images; or one np.ndarray [N, H, W, 3] / torch
            tensor [N, 3, H, W] in [0, 1]; or the latents).
        metadata: per image, what its PNG's `emogen` chunk records (emotion, prompt, seed, settings, ...).
        infotexts: per image, AUTOMATIC1111's "parameters" text.
        rejected, rejected_metadata: best-of candidates not kept (with `keep_all=True`).
    """

    images: Any
    metadata: list[dict[str, Any]] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    rejected: list[Any] = field(default_factory=list)
    rejected_metadata: list[dict[str, Any]] = field(default_factory=list)


def _a1111_value(value: Any) -> str:
    """A1111's quoting: values holding ',', ':' or a newline are JSON strings."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def _model_name(base_model: str) -> str:
    """A hub id as is; a local folder by its name (A1111 shows checkpoint names, not paths)."""
    return Path(base_model).name if Path(base_model).exists() else base_model


def placeholder_tokens(placeholder: str, count: int) -> list[str]:
    """The bundle's placeholder plus extra ones for fusion: <emotion>, <emotion_2>, <emotion_3>, ..."""
    stem, close = (placeholder[:-1], ">") if placeholder.endswith(">") else (placeholder, "")
    return [placeholder] + [f"{stem}_{k}{close}" for k in range(2, count + 1)]


def _split(images: Any, output_type: str) -> list[Any]:
    """SD's output as one item per image."""
    return list(images) if output_type != "pil" else images


def _stack(items: list[Any], output_type: str) -> Any:
    """Items back into diffusers' shape for `output_type`."""
    if output_type == "pil" or not items:
        return items
    if output_type == "np":
        import numpy as np

        return np.stack(items)
    return torch.stack(items)


class EmoGenPipeline:
    """A mapper bundle + the Stable Diffusion (1.x or XL) pipeline it conditions: emotions in, images out.

    Build it with `from_pretrained` (a bundle folder or a Hub repo id) or `from_pipe` (a
    StableDiffusionPipeline already loaded). `pipe.pipe` is the wrapped diffusers pipeline.
    """

    def __init__(self, config: Config | None = None, mapper: str | Path | None = None, baseline: bool = False,
                 tokens: int = 1, device: torch.device | str | None = None, *, torch_dtype: torch.dtype | None = None,
                 base_model: str | None = None, reporter: Reporter | None = None, sd_pipeline: Any = None) -> None:
        from emogen_cli.core.pretrained import load, quiet_libraries

        quiet_libraries()
        import diffusers

        self.config = config = config or Config()
        self.baseline, self.reporter = baseline, reporter or Reporter()
        self.mapper_source = str(mapper or config.generate.mapper)
        self.mapper_path = resolve_bundle(self.mapper_source)
        self.bundle: MapperBundle = load_mapper(self.mapper_path)
        if sd_pipeline is not None:  # from_pipe: share the user's modules, keep their device and dtype
            self.backbone: Backbone = get(family_of_pipeline(sd_pipeline))
            self.pipe = getattr(diffusers, self.backbone.pipeline_class).from_pipe(sd_pipeline)
            self.device = torch.device(sd_pipeline.device)
            self.dtype = sd_pipeline.unet.dtype
            self.base_model = str(base_model or getattr(sd_pipeline, "name_or_path", None)
                                  or self.bundle.base_model(config))
        else:
            self.device = resolve_device(device if device is not None else config.runtime.device)
            self.dtype = torch_dtype or DTYPES[resolve_precision(config.runtime.mixed_precision, self.device)]
            self.base_model = base_model or self.bundle.base_model(config)
            self.backbone = resolve(config, self.base_model)
            check_bundle(self.bundle.config, self.backbone, self.base_model)  # before the model loads
            self.bundle.check_base_model(self.base_model, config.model.revision, self.reporter,
                                         config.generate.strict)
            self.pipe = load(getattr(diffusers, self.backbone.pipeline_class), self.base_model,
                             revision=config.model.revision, **self.backbone.pipeline_kwargs)
        size = resolution(config, self.backbone)
        if size != config.model.resolution:  # SDXL without model.resolution set: 1024
            self.config = config = _keep_explicit(config, replace(config, model=replace(config.model, resolution=size)))
        self.scheduler_name = ""
        self.set_scheduler(config.generate.scheduler)
        self.pipe.to(self.device, self.dtype)
        self.pipe.set_progress_bar_config(disable=True)
        widths = self.backbone.text_widths(self._text_parts())
        check_bundle(self.bundle.config, self.backbone, self.base_model)
        self.bundle.check_text_width(sum(widths.values()), self.base_model)
        check_bundle(self.bundle.config, self.backbone, self.base_model, widths)
        self.placeholders: list[str] = []
        self.prompts: Any  # the family's prompt encoder (backbones/): tokenize, encode
        self._ensure_tokens(max(tokens, 1))
        self.mapper = self.bundle.mapper.to(self.device)
        self.mapper_hash = hashlib.sha256((self.mapper_path / "mapper.safetensors").read_bytes()).hexdigest()
        self._warned: set[str] = set()
        self._negatives: dict[str, torch.Tensor] = {}
        self._scorers: dict[str, Any] = {}  # best-of's emotion probes, by path
        self._interrupt = False  # a step callback sets it to stop the current call (as in diffusers)
        self.negative = self.negative_embeds()  # the config's negative prompt, encoded once
        apply_runtime(config.runtime, pipe=self, device=self.device)  # runtime.* fast paths (core/runtime.py)

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, bundle_or_repo_id: str | Path, base_model: str | None = None,
                        torch_dtype: torch.dtype | None = None, device: torch.device | str | None = None, *,
                        config: Config | str | Path | None = None, scheduler: str | None = None,
                        baseline: bool = False, reporter: Reporter | None = None) -> "EmoGenPipeline":
        """Load a mapper bundle and the Stable Diffusion model it names.

        Args:
            bundle_or_repo_id: a bundle folder (`emogen train-mapper --out`) or a Hub repo id ("USER/NAME").
            base_model: the SD model to use instead of the one the bundle names (a folder or repo id).
            torch_dtype: defaults to bf16/fp16 on CUDA and float32 on CPU.
            device: "cpu", "cuda", "cuda:1" or a torch.device; defaults to CUDA when present.
            config: an emogen Config (or the path of a YAML config) for the other defaults (steps,
                guidance, negative prompt, ...).
            scheduler: the sampler, one of unipc, ddim, euler, dpm, pndm (default: the config's).

        Returns:
            `EmoGenPipeline`, ready on `device`.

        Examples:
            >>> pipe = EmoGenPipeline.from_pretrained("runs/demo/mapper")  # doctest: +SKIP
        """
        if torch_dtype is not None and not isinstance(torch_dtype, torch.dtype):
            raise EmogenError(f"torch_dtype must be a torch dtype, got {torch_dtype!r}.",
                              "For example: torch_dtype=torch.float16 (or leave it out: bf16/fp16 on CUDA, fp32 on CPU).")
        if device is not None and not isinstance(device, (str, torch.device)):
            raise EmogenError(f"device must be text such as \"cuda:0\" or a torch.device, got {device!r}.",
                              "For example: device=\"cuda\" or device=\"cpu\".")
        if base_model is not None and not isinstance(base_model, (str, Path)):
            raise EmogenError(f"base_model must be a model folder or Hub repo id, got {base_model!r}.",
                              "For example: base_model=\"stable-diffusion-v1-5/stable-diffusion-v1-5\".")
        if isinstance(config, (str, Path)):
            from emogen_cli.core.config import load_config

            config = load_config(config)
        elif config is not None and not isinstance(config, Config):
            raise EmogenError(f"config must be an emogen Config or the path of a YAML config, got {config!r}.",
                              "For example: config=\"configs/tiny.yaml\".")
        defaults = config is None
        config = config or Config()
        if scheduler is not None:
            config = _keep_explicit(config, replace(config, generate=replace(config.generate,
                                                                          scheduler=_scheduler(scheduler))))
        pipe = cls(config, bundle_or_repo_id, baseline, 1, device, torch_dtype=torch_dtype,
                   base_model=None if base_model is None else str(base_model), reporter=reporter)
        if defaults:  # no config given: images default to the size the mapper was trained at
            size = int(pipe.bundle.config.get("resolution") or config.model.resolution)
            pipe.config = _keep_explicit(config, replace(config, model=replace(config.model, resolution=size)))
        return pipe

    @classmethod
    def from_pipe(cls, sd_pipeline: Any, mapper: str | Path, *, config: Config | None = None,
                  scheduler: str | None = None, baseline: bool = False,
                  reporter: Reporter | None = None) -> "EmoGenPipeline":
        """Add emotions to a Stable Diffusion 1.x or SDXL pipeline already loaded (LoRA-patched, a fine-tune, ...).

        The new pipeline shares `sd_pipeline`'s modules (no copy) and keeps its device and dtype; it
        samples with emogen's scheduler (`scheduler`, default the config's: unipc) without changing
        `sd_pipeline`'s. The emotion tokens are added to the shared tokenizer. With the same model,
        the images equal those of `from_pretrained`.

        Args:
            sd_pipeline: any diffusers pipeline with SD 1.x or SDXL components (e.g. StableDiffusionPipeline,
                StableDiffusionXLPipeline); its family must be the bundle's.
            mapper: a bundle folder or Hub repo id trained on that model's text encoder.

        Returns:
            `EmoGenPipeline`.

        Examples:
            >>> sd = StableDiffusionPipeline.from_pretrained("runs/tiny")  # doctest: +SKIP
            >>> pipe = EmoGenPipeline.from_pipe(sd, mapper="runs/demo/mapper")  # doctest: +SKIP
        """
        if not all(hasattr(sd_pipeline, name) for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")):
            raise EmogenError(f"from_pipe needs a Stable Diffusion pipeline, got {type(sd_pipeline).__name__}.",
                              "For example: EmoGenPipeline.from_pipe(StableDiffusionPipeline.from_pretrained(...), "
                              "mapper=\"runs/mapper\").")
        config = config or Config()
        if scheduler is not None:
            config = _keep_explicit(config, replace(config, generate=replace(config.generate,
                                                                          scheduler=_scheduler(scheduler))))
        pipe = cls(config, mapper, baseline, 1, reporter=reporter, sd_pipeline=sd_pipeline)
        size = int(pipe.bundle.config.get("resolution") or config.model.resolution)
        pipe.config = _keep_explicit(config, replace(config, model=replace(config.model, resolution=size)))
        return pipe

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "EmoGenPipeline":
        """Move the SD pipeline (and the mapper) to `device` and/or `dtype`; returns self, as diffusers does."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        if device is not None and not isinstance(device, (str, torch.device)):
            raise EmogenError(f"device must be text such as \"cuda:0\" or a torch.device, got {device!r}.",
                              "For example: pipe.to(\"cuda\").")
        if device is not None:
            self.device = resolve_device(device if isinstance(device, torch.device) else str(device), "device")
        self.dtype = dtype or self.dtype
        self.pipe.to(self.device, self.dtype)
        self.mapper = self.mapper.to(self.device)  # stays float32: its outputs are cast where they are used
        self._negatives.clear()
        self.negative = self.negative_embeds()
        return self

    # Memory switches of the wrapped diffusers pipeline (see diffusers' documentation for each).
    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str = "cuda") -> None:
        """Keep each model on the CPU until it runs (diffusers' model offload); images stay the same.
        Without an accelerator the models already live in CPU memory: a warning, and nothing changes
        (diffusers raises there), so one script runs on a laptop and on a small GPU."""
        if self._offload_possible("enable_model_cpu_offload", device):
            self.pipe.enable_model_cpu_offload(gpu_id=gpu_id, device=device)
            self._follow_execution_device()

    def enable_sequential_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str = "cuda") -> None:
        """Move each layer to the GPU only while it runs (least memory, slowest); a no-op without one."""
        if self._offload_possible("enable_sequential_cpu_offload", device):
            self.pipe.enable_sequential_cpu_offload(gpu_id=gpu_id, device=device)
            self._follow_execution_device()

    def _offload_possible(self, name: str, device: torch.device | str) -> bool:
        kind = torch.device(device).type
        available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}.get(kind, False)
        if not available:
            self._warn_once(f"{name}() needs a GPU ({kind} is not available here); the models stay where they are "
                            f"({self.device}).")
        return available

    def enable_attention_slicing(self, slice_size: str | int | None = "auto") -> None:
        """Compute attention in slices (less memory)."""
        self.pipe.enable_attention_slicing(slice_size)

    def enable_vae_tiling(self) -> None:
        """Decode large images tile by tile."""
        self.pipe.enable_vae_tiling()

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """diffusers' tqdm bar of each denoising loop (off by default: emogen reports through its Reporter)."""
        self.pipe.set_progress_bar_config(**kwargs)

    def _follow_execution_device(self) -> None:
        """Generators and the mapper follow the device the offloaded models run on."""
        self.device = torch.device(self.pipe._execution_device)
        self.mapper = self.mapper.to(self.device)
        self._negatives.clear()
        self.negative = self.negative_embeds()

    def set_scheduler(self, name: str) -> None:
        """Switch the sampler (unipc, ddim, euler, dpm, pndm) for every later call, keeping the model's schedule."""
        if name == self.scheduler_name:
            return
        import diffusers

        self.pipe.scheduler = getattr(diffusers, SCHEDULERS[_scheduler(name)]).from_config(self.pipe.scheduler.config)
        self.scheduler_name = name

    def _ensure_tokens(self, count: int) -> None:
        """Register enough placeholder tokens for a fusion of `count` emotions side by side."""
        if count <= len(self.placeholders):
            return
        self.placeholders = placeholder_tokens(self.bundle.config["placeholder"], count)
        self.prompts = self.backbone.prompt_encoder(self._text_parts(), self.placeholders)

    def _text_parts(self) -> dict[str, Any]:
        """The wrapped pipeline's tokenizers and text encoders, by name."""
        return {name: getattr(self.pipe, name) for tower in self.backbone.towers
                for name in (tower.tokenizer, tower.text_encoder)}

    # ----------------------------------------------------------------------------------- requests
    def request(self, emotion: str | list[str] | tuple[str, ...] | None = None, prompt: str = "{}",
                count: int = 1, fusion: str = "tokens", weights: list[float] | None = None, *,
                intensity: float | None = None, va: tuple[float, float] | None = None,
                sigma: float | None = None) -> Request:
        """A validated `Request` from the friendly arguments of `__call__` (`count` images)."""
        if intensity is not None:
            intensity = check_intensity(intensity)
        prompt = template(prompt, "prompt")
        whole(count, "num_images_per_prompt", 1, MAX_IMAGES)
        if va is not None:
            if emotion is not None:
                raise EmogenError("Give either an emotion or a valence-arousal point, not both.",
                                  "Drop emotion=... (or va=...).")
            emotions = tuple(e for e in EMOTIONS if e in self.bundle.emotions)
            request = va_request(*check_point(va), DEFAULT_SIGMA if sigma is None else sigma, prompt, int(count),
                                 emotions)
            return replace(request, intensity=intensity)
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
        names = [validate_emotion(n, self.bundle.emotions)
                 for name in names for n in split_names(name, self.bundle.emotions)]
        if not names:
            raise EmogenError("No emotion given.", f"Choose from: {', '.join(self.bundle.emotions)}.")
        if weights is not None and (not isinstance(weights, (list, tuple)) or any(
                isinstance(w, bool) or not isinstance(w, (int, float)) for w in weights)):
            raise EmogenError(f"weights must be a list of numbers, got {weights!r}.", "For example: weights=[0.7, 0.3].")
        if len(names) > 1:
            return replace(fusion_request(names, weights, fusion, prompt, int(count)), intensity=intensity)
        if weights is not None:
            raise EmogenError("weights apply to a fusion of several emotions.", "Pass emotion=[...] with two or more.")
        return Request((names[0],), prompt, int(count), intensity=intensity)

    def prompt_text(self, request: Request) -> str:
        """The prompt SD reads, with placeholder tokens where the emotions go."""
        if self.baseline:
            return fill(request.prompt, BASELINE_PROMPT.format(emotion=" and ".join(request.emotions)))
        self._ensure_tokens(request.tokens)
        return fill(request.prompt, " ".join(self.placeholders[:request.tokens]))

    def display_prompt(self, request: Request) -> str:
        """The prompt as people read it: each emotion token named after its emotion ("<awe> street"),
        the names `emogen export` gives the embeddings."""
        if self.baseline:
            return self.prompt_text(request)
        words = [f"<{e}>" for e in request.emotions] if request.mode == "tokens" else [f"<{request.name}>"]
        return fill(request.prompt, " ".join(words))

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

    # ----------------------------------------------------------------------------------- encoding
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
    def _encode(self, texts: list[str], placeholder_values: torch.Tensor | None = None) -> torch.Tensor:
        """Text -> prompt_embeds [B, 77, D] in the pipeline's dtype, placeholder tokens holding `placeholder_values`."""
        return self.prompts.encode(self.tokenize(texts), placeholder_values)[0].to(self.dtype)

    @torch.no_grad()
    def conditioning(self, request: Request, seeds: list[int]) -> torch.Tensor:
        """prompt_embeds [B, 77, D] for `request`, one emotion-space sample per seed (at the request's
        intensity: exactly EmoGen's at 1, exactly the prompt without the emotion at 0; conditioning/intensity.py)."""
        if request.alpha != 1:
            neutral = self._encode([neutral_prompt(request.prompt)] * len(seeds))
            full = neutral if request.alpha == 0 else self.conditioning(replace(request, intensity=None), seeds)
            return blend(neutral, full, request.alpha)
        values = None if self.baseline else self.embeddings(request, seeds)
        return self._encode([self.prompt_text(request)] * len(seeds), values)

    @torch.no_grad()
    def negative_embeds(self, text: str | None = None) -> torch.Tensor:
        """[1, 77, D] embeddings of the negative prompt (default: the config's), cached per text."""
        text = self.config.generate.negative_prompt if text is None else text_arg(text, "negative_prompt")
        if text not in self._negatives:
            embeds = self.prompts.encode(self.prompts.tokenize([text], warn=self._warn_once))[0].to(self.dtype)
            if text == "" and self.backbone.zeros_for_empty_negative(self.pipe):  # as the family's pipelines do
                embeds = embeds.zeros_like() if hasattr(embeds, "zeros_like") else torch.zeros_like(embeds)
            self._negatives[text] = embeds
        return self._negatives[text]

    def encode_prompt(self, emotion: str | list[str] | None = None, prompt: str = "{}",
                      num_images_per_prompt: int = 1, negative_prompt: str | None = None, *,
                      seed: int | None = None, seeds: list[int] | None = None, fusion: str = "tokens",
                      weights: list[float] | None = None, intensity: float | None = None,
                      va: tuple[float, float] | None = None, sigma: float | None = None,
                      ) -> tuple[torch.Tensor, ...]:
        """Encode an emotion prompt for any diffusers pipeline of the model's family (ControlNet, img2img,
        LoRA-patched, ...).

        Args:
            emotion: an emotion name, or several to fuse (`fusion`, `weights` as in `__call__`).
            prompt: a template where "{}" marks the emotion.
            num_images_per_prompt: rows to encode; row i uses emotion-space seed `seed + i` (default seed 0).
            seeds: the seed of each row instead (`seed` and `num_images_per_prompt` then unused).
            negative_prompt: default the config's (empty).
            intensity, va, sigma: as in `__call__`.

        Returns:
            As the family's diffusers `encode_prompt`: SD 1.x `(prompt_embeds, negative_prompt_embeds)`, each
            [N, 77, 768]; SDXL `(prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds,
            negative_pooled_prompt_embeds)`, [N, 77, 2048] and [N, 1280].

        Examples:
            >>> prompt_embeds, negative_prompt_embeds = pipe.encode_prompt("awe", "{} cup", seeds=[0, 1])  # doctest: +SKIP
            >>> generators = [torch.Generator().manual_seed(s) for s in (0, 1)]  # doctest: +SKIP
            >>> images = sd(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            ...             generator=generators).images  # doctest: +SKIP

        With the same seeds, scheduler, steps and guidance, `sd` gives the images emogen gives. On SDXL:

            >>> embeds, negative, pooled, negative_pooled = pipe.encode_prompt("awe", seeds=[0])  # doctest: +SKIP
            >>> image = sdxl(prompt_embeds=embeds, negative_prompt_embeds=negative, pooled_prompt_embeds=pooled,
            ...              negative_pooled_prompt_embeds=negative_pooled).images[0]  # doctest: +SKIP
        """
        row_seeds = self._row_seeds(seed, seeds, num_images_per_prompt)
        request = self.request(emotion, prompt, len(row_seeds), fusion, weights, intensity=intensity, va=va,
                               sigma=sigma)
        self.check(request)
        positive = self.conditioning(request, row_seeds)
        negative = self.negative_embeds(negative_prompt).expand(len(row_seeds), -1, -1)
        if self.backbone.family == "sd15":
            return positive, negative
        return (positive.prompt_embeds, negative.prompt_embeds, positive.pooled_prompt_embeds,
                negative.pooled_prompt_embeds)

    def prompt_embeds(self, *args: Any, **kwargs: Any) -> Any:
        raise EmogenError("prompt_embeds(...) is now encode_prompt(...), returning (prompt_embeds, "
                          "negative_prompt_embeds) as diffusers does.",
                          "For example: prompt_embeds, negative_prompt_embeds = pipe.encode_prompt(\"awe\", seeds=[0]).")

    @staticmethod
    def _row_seeds(seed: Any, seeds: Any, count: Any) -> list[int]:
        if seeds is not None:
            if seed is not None:
                raise EmogenError("Give seed or seeds, not both.", "seeds=[...] lists every image's seed.")
            return check_seeds(seeds)
        first = whole(0 if seed is None else seed, "seed", 0, MAX_SEED)
        return check_seeds([first + i for i in range(whole(count, "num_images_per_prompt", 1, MAX_IMAGES))])

    # ----------------------------------------------------------------------------------- sampling
    def settings(self, num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 height: int | None = None, width: int | None = None, negative_prompt: str | None = None,
                 scheduler: str | None = None) -> Settings:
        """This call's settings: the given values, else the config's."""
        g = self.config.generate
        size = self.config.model.resolution
        settings = Settings(whole(g.steps if num_inference_steps is None else num_inference_steps,
                                  "num_inference_steps", 1, MAX_STEPS),
                            g.guidance if guidance_scale is None else real(guidance_scale, "guidance_scale", 0, 1e4),
                            size if height is None else whole(height, "height", 8, MAX_SIZE),
                            size if width is None else whole(width, "width", 8, MAX_SIZE),
                            self.scheduler_name if scheduler is None else _scheduler(scheduler),
                            g.negative_prompt if negative_prompt is None else text_arg(negative_prompt, "negative_prompt"))
        if settings.height % 8 or settings.width % 8:
            raise EmogenError(f"height and width must be multiples of 8, got {settings.height}x{settings.width}.",
                              "For example: height=512, width=512.")
        return settings

    @torch.no_grad()
    def sample(self, request: Request, seeds: list[int], settings: Settings | None = None, *,
               generators: torch.Generator | list[torch.Generator] | None = None, output_type: str = "pil",
               callback_on_step_end: StepCallback | None = None,
               callback_on_step_end_tensor_inputs: tuple[str, ...] | list[str] = ("latents",)) -> list[Any]:
        """One SD call: one image per seed; seed s drives the emotion-space sample and (unless `generators`
        are given) the initial latents. Returns one item per image."""
        s = settings or self.settings()
        if generators is None:
            generators = [torch.Generator(self.device).manual_seed(seed) for seed in seeds]
        previous = self.scheduler_name
        self.set_scheduler(s.scheduler)  # this call's sampler only: restored below
        try:
            out = self.pipe(**self.backbone.call_kwargs(
                                self.conditioning(request, seeds),
                                self.negative_embeds(s.negative_prompt).expand(len(seeds), -1, -1)),
                            num_inference_steps=s.steps, guidance_scale=s.guidance, height=s.height, width=s.width,
                            generator=generators, output_type=output_type,
                            callback_on_step_end=self._step_callback(callback_on_step_end),
                            callback_on_step_end_tensor_inputs=list(callback_on_step_end_tensor_inputs)).images
        finally:
            self.set_scheduler(previous)
        return _split(out, output_type)

    def _step_callback(self, user: StepCallback | None) -> StepCallback | None:
        """The user's callback, called with this pipeline (setting `pipe._interrupt = True` stops the call)."""
        if user is None:
            return None
        self._interrupt = False

        def step_end(sd: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            result = user(self, step, timestep, tensors)
            if self._interrupt:
                sd._interrupt = True
            return tensors if result is None else result

        return step_end

    def generate(self, request: Request, groups: list[list[int]], settings: Settings | None = None, *,
                 scorer: Any = None, batch_size: int | None = None,
                 generators: torch.Generator | list[torch.Generator] | None = None, output_type: str = "pil",
                 callback_on_step_end: StepCallback | None = None,
                 callback_on_step_end_tensor_inputs: tuple[str, ...] | list[str] = ("latents",),
                 ) -> Iterator[Selection]:
        """The one generation loop (`__call__`, generate, transfer, fuse, grid --va, best-of): one
        `Selection` per requested image, yielded as soon as its candidates are made, best first, each
        candidate with its metadata and infotext.

        `groups` holds each requested image's seeds (conditioning/seeds.py): one seed, or K best-of
        candidates ranked by `scorer`'s probability of the target. Candidates are sampled in batches of
        `batch_size` (a batch may span images; results do not depend on it)."""
        s = settings or self.settings()
        batch = max(1, batch_size or self.config.generate.batch_size)
        flat = [seed for group in groups for seed in group]
        if any(len(group) > 1 for group in groups) and scorer is None:
            scorer = self.scorer()
        made: list[Any] = []
        g = 0
        for b in range(0, len(flat), batch):
            gens = generators[b:b + batch] if isinstance(generators, list) else generators
            made += self.sample(request, flat[b:b + batch], s, generators=gens, output_type=output_type,
                                callback_on_step_end=callback_on_step_end,
                                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)
            while g < len(groups) and len(made) >= len(groups[g]):
                group, images, made = groups[g], made[:len(groups[g])], made[len(groups[g]):]
                if len(group) == 1:
                    selection = Selection(g, [Candidate(images[0], group[0])])
                else:
                    scores = target_score(scorer.probabilities(images), request.emotions, request.weights)
                    selection = rank(images, group, scores, g)
                for cand in selection.candidates:
                    extra, fields = candidate_fields(selection, cand) if len(group) > 1 else (None, None)
                    cand.metadata = self.metadata(request, cand.seed, s, extra)
                    cand.infotext = self.infotext(request, cand.seed, s, fields)
                yield selection
                g += 1

    # ----------------------------------------------------------------------------------- describing
    def metadata(self, request: Request, seed: int | None, settings: Settings | None = None,
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
                "intensity": request.alpha, "family": self.backbone.family}
        if request.alpha != 1:
            meta["neutral_prompt"] = neutral_prompt(request.prompt)
        if request.va is not None:
            meta.update(va_metadata(request))
        return {**meta, **(extra or {})}

    def infotext(self, request: Request, seed: int | None, settings: Settings | None = None,
                 extra: dict[str, Any] | None = None) -> str:
        """The image's parameters in AUTOMATIC1111's infotext format (its `parameters` PNG chunk);
        `extra` adds fields."""
        s = settings or self.settings()
        fields = {"Steps": s.steps, "Sampler": SAMPLER_NAMES[s.scheduler], "CFG scale": s.guidance, "Seed": seed,
                  "Size": f"{s.width}x{s.height}", "Model": _model_name(self.base_model), "Emotion": request.name}
        if len(request.emotions) > 1:
            fields["Emotion fusion"] = request.mode + (
                " " + "/".join(f"{w:.3g}" for w in request.weights) if request.weights else "")
        if request.intensity is not None:
            fields["Emogen intensity"] = f"{request.alpha:g}"
        if request.va is not None:
            fields["Emogen valence-arousal"] = f"{request.va[0]:g}/{request.va[1]:g}"
        if self.baseline:
            fields["Emogen baseline"] = "true"
        fields["Emogen mapper"] = self.mapper_hash[:16]  # a short hash, as A1111 shows its model hashes
        fields["Emogen version"] = __version__
        fields.update(extra or {})
        params = ", ".join(f"{k}: {_a1111_value(v)}" for k, v in fields.items())
        negative = f"Negative prompt: {s.negative_prompt}\n" if s.negative_prompt else ""  # A1111 omits it when empty
        return f"{self.display_prompt(request)}\n{negative}{params}"

    def scorer(self, probe: str | Path | None = None) -> Any:
        """The CLIP-space emotion probe that ranks best-of candidates (default: the bundle's), loaded once."""
        if probe is not None and not isinstance(probe, (str, Path)):
            raise EmogenError(f"probe must be a path to an emotion probe, got {probe!r}.")
        key = str(probe or "")
        if key not in self._scorers:
            from emogen_cli.evaluation.edit_metrics import load_scorer

            path = Path(probe) if probe else self.mapper_path / "emotion_probe.safetensors"
            self._scorers[key] = load_scorer(self.bundle.clip_model(self.config), path, self.device)
        return self._scorers[key]

    # ----------------------------------------------------------------------------------- the call
    def __call__(self, emotion: str | list[str] | None = None, prompt: str = "{}", num_images_per_prompt: int = 1,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 height: int | None = None, width: int | None = None, negative_prompt: str | None = None,
                 generator: torch.Generator | list[torch.Generator] | None = None, seed: int | None = None,
                 output_type: str = "pil", callback_on_step_end: StepCallback | None = None,
                 callback_on_step_end_tensor_inputs: tuple[str, ...] | list[str] = ("latents",), *,
                 intensity: float | None = None, va: tuple[float, float] | None = None, best_of: int = 1,
                 fusion: str = "tokens", weights: list[float] | None = None, sigma: float | None = None,
                 seeds: list[int] | None = None, scheduler: str | None = None, batch_size: int | None = None,
                 probe: str | Path | None = None, keep_all: bool = False, **renamed: Any) -> EmoGenOutput:
        """Generate images that evoke `emotion` (a name, or several names to fuse).

        Args:
            emotion: an emotion name ("awe"), or a list of names to fuse in one image.
            prompt: a template where "{}" marks the emotion ("{} street"); text without it gets the emotion
                in front.
            num_images_per_prompt: how many images.
            num_inference_steps, guidance_scale, negative_prompt: default the config's (50, 7.5, "").
            height, width: default the resolution the mapper was trained at; multiples of 8.
            generator: a `torch.Generator`, or one per image, as in diffusers; image i's emotion-space
                sample uses its generator's initial seed (+ i for one shared generator).
            seed: emogen's batch-independent shortcut: image i gets seed `seed + i` for both its
                emotion-space sample and its latents (default 0). Not together with `generator`.
            output_type: "pil", "np", "pt" or "latent", as in diffusers.
            callback_on_step_end: `fn(pipe, step, timestep, callback_kwargs) -> callback_kwargs`, called after
                every denoising step with the tensors named in `callback_on_step_end_tensor_inputs`;
                return changed latents to edit them, set `pipe._interrupt = True` to stop.
            intensity: the emotion's strength α: 0 the prompt without it (exactly), 1 EmoGen's (exactly),
                above 1 stronger (at most 4).
            va: a (valence, arousal) point in [0, 1]² (NRC VAD) instead of `emotion`: the eight emotions
                mixed in the emotion space with Gaussian kernel weights of width `sigma` (0.15).
            best_of: K candidates per image; the one the CLIP-space emotion probe (`probe`, default the
                bundle's) rates highest is kept. Candidate j of image i has seed `seed + i + j * 2**32`;
                `keep_all=True` also returns the others in `rejected`.
            fusion, weights: how several emotions combine ("tokens", "embedding", "space") and the mixing
                weights of the last two.
            seeds: every image's seed instead of `seed` (then `num_images_per_prompt` is their number).
            scheduler: this call's sampler (unipc, ddim, euler, dpm, pndm); later calls keep the pipeline's.
            batch_size: images per denoising batch (default the config's); results do not depend on it.

        Returns:
            `EmoGenOutput` with `images` and, per image, `metadata` and `infotexts`.

        Examples:
            Runs as is after the README's quick start (which trains `runs/demo/mapper` on CPU); a real
            bundle runs the same way, on CUDA in bf16/fp16 when present:

            >>> import torch
            >>> from emogen_cli import EmoGenPipeline
            >>> pipe = EmoGenPipeline.from_pretrained("runs/demo/mapper")
            >>> out = pipe("awe", prompt="{} street", num_images_per_prompt=2, num_inference_steps=4, seed=0)
            >>> [m["seed"] for m in out.metadata], out.images[0].size
            ([0, 1], (16, 16))
            >>> out.infotexts[0].splitlines()[0]
            '<awe> street'
            >>> same = pipe("awe", prompt="{} street", num_inference_steps=4, generator=torch.Generator().manual_seed(0))
            >>> same.images[0].tobytes() == out.images[0].tobytes()
            True
            >>> out = pipe(["amusement", "fear"], fusion="embedding", weights=[0.7, 0.3], num_inference_steps=4)
            >>> out.metadata[0]["fusion"]
            {'mode': 'embedding', 'weights': [0.7, 0.3]}
            >>> out = pipe("awe", intensity=0.5, num_inference_steps=4)  # half-strength awe
            >>> out = pipe(va=(0.8, 0.3), num_inference_steps=4)  # pleasant and calm: a valence-arousal point
            >>> out.metadata[0]["va"]["valence"], out.metadata[0]["fusion"]["mode"]
            (0.8, 'space')
            >>> out = pipe("fear", best_of=3, num_inference_steps=4)  # keep the probe's favourite of 3
            >>> out.metadata[0]["best_of"]["rank"], out.metadata[0]["best_of"]["k"]
            (1, 3)
        """
        # 1. Validate every argument before any model work.
        for old, new in RENAMED.items():
            if old in renamed:
                raise EmogenError(f"'{old}' is now '{new}' (diffusers' name).", f"Pass {new}=... instead.")
        if renamed:
            raise EmogenError(f"Unknown argument(s): {', '.join(sorted(renamed))}.",
                              "See help(EmoGenPipeline.__call__) for the arguments.")
        if output_type not in OUTPUT_TYPES:
            raise EmogenError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}.")
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise EmogenError(f"callback_on_step_end must be a function, got {callback_on_step_end!r}.")
        if not isinstance(keep_all, bool):
            raise EmogenError(f"keep_all must be True or False, got {keep_all!r}.")
        k = check_best_of(best_of, keep_all, probe)
        if generator is not None:
            gens = generator if isinstance(generator, list) else [generator]
            if seed is not None or seeds is not None:
                raise EmogenError("Give generator or seed (seeds), not both.",
                                  "seed=S is emogen's shortcut for one torch.Generator per image seeded S + i.")
            if not gens or not all(isinstance(g, torch.Generator) for g in gens):
                raise EmogenError(f"generator must be a torch.Generator or a list of them, got {generator!r}.")
            count = whole(num_images_per_prompt, "num_images_per_prompt", 1, MAX_IMAGES)
            if isinstance(generator, list) and len(generator) != count:
                raise EmogenError(f"Got {len(generator)} generators for {count} images.",
                                  "Pass one generator per image, or one for all.")
            if k > 1:
                raise EmogenError("best_of draws its own candidate seeds; it takes seed=..., not generator=...",
                                  "Pass seed=S instead.")
            image_seeds = ([g.initial_seed() for g in gens] if isinstance(generator, list) else
                           [generator.initial_seed() + i for i in range(count)])
        else:
            image_seeds = self._row_seeds(seed, seeds, num_images_per_prompt)
        if k > 1 and output_type != "pil":
            raise EmogenError("best_of ranks decoded images: it needs output_type=\"pil\".")
        request = self.request(emotion, prompt, len(image_seeds), fusion, weights, intensity=intensity, va=va,
                               sigma=sigma)
        settings = self.settings(num_inference_steps, guidance_scale, height, width, negative_prompt, scheduler)
        batch = self.config.generate.batch_size if batch_size is None else whole(batch_size, "batch_size", 1, 4096)
        # 2. Check the emotion tokens fit in CLIP's 77-token window (warn about any cut words).
        self.check(request)
        # 3. The one generation loop: a seed group per image (K candidates with best_of).
        from emogen_cli.conditioning.seeds import image_seeds as seed_rule

        groups = [seed_rule(s, 0, k) for s in image_seeds]
        out = EmoGenOutput([])
        for selection in self.generate(request, groups, settings, scorer=self.scorer(probe) if k > 1 else None,
                                       batch_size=batch, generators=generator, output_type=output_type,
                                       callback_on_step_end=callback_on_step_end,
                                       callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs):
            kept = selection.kept
            out.images.append(kept.image)
            out.metadata.append(kept.metadata)
            out.infotexts.append(kept.infotext)
            for cand in selection.rejected if keep_all else []:
                out.rejected.append(cand.image)
                out.rejected_metadata.append(cand.metadata)
        out.images = _stack(out.images, output_type)
        return out


def _keep_explicit(old: Config, new: Config) -> Config:
    """`new` (a dataclasses.replace of `old`) remembering which keys `old`'s file or options set."""
    if "_explicit" in old.__dict__:
        new.__dict__["_explicit"] = set(old.__dict__["_explicit"])
    return new


def _scheduler(name: Any) -> str:
    if not isinstance(name, str) or name not in SCHEDULERS:
        raise EmogenError(f"Unknown scheduler {name!r}.", f"Choose one of: {', '.join(SCHEDULERS)}.")
    return name
