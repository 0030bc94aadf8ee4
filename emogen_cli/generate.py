"""`emogen generate` / `transfer` / `fuse`: emotion vectors -> mapper -> "<emotion>" embedding -> SD 1.5.

Every image i of a request gets its own seed (seed + i) for both its emotion-space sample and its
initial latents, so results do not depend on the batch size or on how many processes share the
work (`accelerate launch` splits the images between GPUs), and the same seed gives the same
images. PNGs carry their parameters in text chunks; `index.jsonl` lists them; numbering continues
after existing files unless `overwrite`.

Fusion combines several emotions in one image in one of three ways:
- "tokens" (default, as the official code): one placeholder token per emotion, side by side, each
  holding its own mapped embedding. Every emotion keeps its own semantics, so content from both
  can appear (e.g. amusement's objects in fear's scene); this is what the paper shows.
- "embedding": one token holding the weighted mean of the emotions' mapped embeddings.
- "space": one token holding the mapping of the weighted mean of the emotion-space samples.
The two mixing modes take weights (normalised to sum to 1); weights (1, 0) reproduce the first
emotion alone exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from emogen_cli import __version__
from emogen_cli.conditioning import EmotionPromptEncoder
from emogen_cli.config import Config
from emogen_cli.errors import EmogenError, Interrupted
from emogen_cli.images import load_rgb
from emogen_cli.mapper import MapperBundle, load_mapper
from emogen_cli.reporting import Reporter, progress
from emogen_cli.runtime import DTYPES, ProcessShare, process_share, resolve_device, resolve_precision

SCHEDULERS = {"unipc": "UniPCMultistepScheduler", "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",
              "dpm": "DPMSolverMultistepScheduler", "pndm": "PNDMScheduler"}
BASELINE_PROMPT = "a photo that evokes {emotion}"
FUSION_MODES = ("tokens", "embedding", "space")


@dataclass(frozen=True)
class Request:
    """`count` images of one emotion (or several, fused) in a prompt where "{}" marks the emotion."""

    emotions: tuple[str, ...]
    prompt: str = "{}"
    count: int = 1
    mode: str = "tokens"  # how several emotions combine (FUSION_MODES)
    weights: tuple[float, ...] | None = None  # mixing weights, summing to 1 ("embedding" / "space")

    @property
    def name(self) -> str:
        return "+".join(self.emotions)

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
    if len(weights) != len(emotions) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise EmogenError(f"Got {len(weights)} weights for {len(emotions)} emotions: {weights}.",
                          "Give one non-negative weight per emotion, e.g. --weights 0.7,0.3.")
    total = sum(weights)
    return Request(tuple(emotions), prompt, count, mode, tuple(w / total for w in weights))


def placeholder_tokens(placeholder: str, count: int) -> list[str]:
    """The bundle's placeholder plus extra ones for fusion: <emotion>, <emotion_2>, <emotion_3>, ..."""
    stem, close = (placeholder[:-1], ">") if placeholder.endswith(">") else (placeholder, "")
    return [placeholder] + [f"{stem}_{k}{close}" for k in range(2, count + 1)]


class EmoGenerator:
    """A loaded mapper bundle + Stable Diffusion pipeline that turns requests into images."""

    def __init__(self, config: Config, mapper: str | Path | None = None, baseline: bool = False, tokens: int = 1,
                 device: torch.device | None = None) -> None:
        from emogen_cli.models import load, quiet_libraries

        quiet_libraries()
        import diffusers
        from diffusers import StableDiffusionPipeline

        self.config, self.baseline = config, baseline
        self.mapper_path = Path(mapper or config.generate.mapper)
        self.bundle: MapperBundle = load_mapper(self.mapper_path)
        self.device = device or resolve_device(config.runtime.device)
        self.dtype = DTYPES[resolve_precision(config.runtime.mixed_precision, self.device)]
        self.base_model = self.bundle.base_model(config)
        self.pipe = load(StableDiffusionPipeline, self.base_model, revision=config.model.revision, safety_checker=None,
                         requires_safety_checker=False)
        scheduler_cls = getattr(diffusers, SCHEDULERS[config.generate.scheduler])
        self.pipe.scheduler = scheduler_cls.from_config(self.pipe.scheduler.config)
        self.pipe.to(self.device, self.dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.bundle.check_text_width(self.pipe.text_encoder.config.hidden_size, self.base_model)
        self.placeholders = placeholder_tokens(self.bundle.config["placeholder"], tokens)
        self.prompts = EmotionPromptEncoder(self.pipe.tokenizer, self.pipe.text_encoder, self.placeholders)
        self.mapper = self.bundle.mapper.to(self.device)
        self.mapper_hash = hashlib.sha256((self.mapper_path / "mapper.safetensors").read_bytes()).hexdigest()[:16]
        with torch.no_grad():  # the negative prompt is the same for every image: encode it once
            negative_ids = self.prompts.tokenize([config.generate.negative_prompt])
            self.negative = self.prompts.encode(negative_ids)[0].to(self.dtype)

    def prompt_text(self, request: Request) -> str:
        if self.baseline:
            return request.prompt.format(BASELINE_PROMPT.format(emotion=" and ".join(request.emotions)))
        if request.tokens > len(self.placeholders):
            raise ValueError(f"This generator was built for {len(self.placeholders)} placeholder tokens.")
        return request.prompt.format(" ".join(self.placeholders[:request.tokens]))

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
    def conditioning(self, request: Request, seeds: list[int]) -> torch.Tensor:
        """prompt_embeds [B, 77, D] for `request`, one emotion-space sample per seed."""
        ids = self.prompts.tokenize([self.prompt_text(request)] * len(seeds))
        values = None if self.baseline else self.embeddings(request, seeds)
        return self.prompts.encode(ids, values)[0].to(self.dtype)

    @torch.no_grad()
    def images(self, request: Request, seeds: list[int]) -> list[Image.Image]:
        g = self.config.generate
        generators = [torch.Generator(self.device).manual_seed(s) for s in seeds]
        size = self.config.model.resolution
        return self.pipe(prompt_embeds=self.conditioning(request, seeds),
                         negative_prompt_embeds=self.negative.expand(len(seeds), -1, -1),
                         num_inference_steps=g.steps, guidance_scale=g.guidance, height=size, width=size,
                         generator=generators, output_type="pil").images

    def metadata(self, request: Request, seed: int) -> dict[str, Any]:
        g = self.config.generate
        fusion = ({"mode": request.mode, "weights": list(request.weights) if request.weights else None}
                  if len(request.emotions) > 1 else None)
        return {"emotion": request.name, "emotions": list(request.emotions), "fusion": fusion,
                "prompt": request.prompt, "seed": seed, "steps": g.steps,
                "guidance": g.guidance, "scheduler": g.scheduler, "size": self.config.model.resolution,
                "negative_prompt": g.negative_prompt, "base_model": self.base_model,
                "clip_model": self.bundle.config["clip_model"], "mapper": str(self.mapper_path),
                "mapper_sha256": self.mapper_hash, "baseline": self.baseline, "emogen_version": __version__}

    def save(self, image: Image.Image, path: Path, request: Request, seed: int) -> dict[str, Any]:
        """Write one PNG with its parameters in text chunks; returns its index record."""
        meta = self.metadata(request, seed)
        info = PngInfo()
        info.add_text("emogen", json.dumps(meta))
        info.add_text("parameters", f"{self.prompt_text(request)} | emotion: {request.name}, seed: {seed}, "
                                    f"steps: {meta['steps']}, guidance: {meta['guidance']}, "
                                    f"scheduler: {meta['scheduler']}")
        image.save(path, pnginfo=info)
        return {"path": str(path), **meta}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("{}", "")).strip("-")[:40]


def _next_index(out_dir: Path, stem: str) -> int:
    found = [int(m[1]) for p in out_dir.glob(f"{stem}-*.png") if (m := re.fullmatch(rf"{re.escape(stem)}-(\d+)", p.stem))]
    return max(found, default=-1) + 1


def _grid(images: list[Image.Image]) -> Image.Image:
    cols = min(len(images), 4)
    rows = (len(images) + cols - 1) // cols
    w, h = images[0].size
    sheet = Image.new("RGB", (cols * w, rows * h), "white")
    for i, image in enumerate(images):
        sheet.paste(image, ((i % cols) * w, (i // cols) * h))
    return sheet


def _stem(request: Request, baseline: bool) -> str:
    stem = request.name + (f"-{request.mode}" if len(request.emotions) > 1 and request.mode != "tokens" else "")
    stem += f"-{_slug(request.prompt)}" if _slug(request.prompt) else ""
    return stem + ("-baseline" if baseline else "")


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".emogen-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise EmogenError(f"Cannot write to the output folder '{out_dir}' ({exc.strerror}).",
                          "Choose a writable --out.") from None


def plan(requests: list[Request], share: ProcessShare, batch_size: int) -> list[tuple[int, list[int]]]:
    """This process's batches as (request index, image indices): image j of the flat list goes to
    process j % count, so N processes each get an even share whatever the requests."""
    jobs = [(r, i) for r, request in enumerate(requests) for i in range(request.count)][share.index::share.count]
    batches: list[tuple[int, list[int]]] = []
    for r, i in jobs:
        if batches and batches[-1][0] == r and len(batches[-1][1]) < batch_size:
            batches[-1][1].append(i)
        else:
            batches.append((r, [i]))
    return batches


def _write_index(out_dir: Path, records: list[dict[str, Any]]) -> None:
    """Append to index.jsonl; entries of files that were just rewritten (--overwrite) are replaced."""
    index = out_dir / "index.jsonl"
    rewritten = {r["path"] for r in records}
    kept = [line for line in (index.read_text().splitlines() if index.is_file() else [])
            if line.strip() and json.loads(line).get("path") not in rewritten]
    index.write_text("".join(line + "\n" for line in kept + [json.dumps(r) for r in records]))


def generate(config: Config, requests: list[Request], out: str | Path | None = None, mapper: str | Path | None = None,
             overwrite: bool = False, baseline: bool = False, reporter: Reporter | None = None) -> dict[str, Any]:
    """Generate every request's images into `out`; returns the written records (from all processes)."""
    reporter = reporter or Reporter()
    share = process_share(config.runtime.device)
    out_dir = Path(out or config.generate.output)
    _check_writable(out_dir)
    stems = [_stem(request, baseline) for request in requests]
    starts: list[int] = []  # the first file number of each request, fixed before anything is written
    taken: dict[str, int] = {}
    for request, stem in zip(requests, stems):
        if stem not in taken:
            taken[stem] = 0 if overwrite else _next_index(out_dir, stem)
        starts.append(taken[stem])
        taken[stem] += request.count
    share.wait()
    generator = EmoGenerator(config, mapper, baseline, max(r.tokens for r in requests), share.device)
    seed = config.runtime.seed
    batches = plan(requests, share, config.generate.batch_size)
    records: list[dict[str, Any]] = []
    with progress(reporter, "Generating", sum(len(indices) for _, indices in batches)):
        try:
            for r, indices in batches:
                request, seeds = requests[r], [seed + i for i in indices]
                for i, image in zip(indices, generator.images(request, seeds)):
                    path = out_dir / f"{stems[r]}-{starts[r] + i:05d}.png"
                    records.append(generator.save(image, path, request, seed + i))
                reporter.advance("Generating", len(indices))
        except KeyboardInterrupt:
            if share.count == 1:
                _write_index(out_dir, records)
            raise Interrupted(f"Interrupted after {len(records)} images; they are in {out_dir} and index.jsonl.",
                              "Run again to add more: numbering continues after the existing files.") from None
    records = sorted(share.gather(records), key=lambda rec: rec["path"])
    if share.is_main:
        _write_index(out_dir, records)
        for request, stem, start in zip(requests, stems, starts):
            paths = [out_dir / f"{stem}-{start + i:05d}.png" for i in range(request.count)]
            _grid([load_rgb(p) for p in paths]).save(out_dir / f"grid-{stem}-{start:05d}.png")
    share.wait()
    return {"out": str(out_dir), "count": len(records), "processes": share.count, "images": records}
