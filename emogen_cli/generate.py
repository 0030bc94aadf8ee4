"""`emogen generate` / `transfer`: emotion vectors -> mapper -> "<emotion>" embedding -> SD 1.5.

Every image i of a request gets its own seed (seed + i) for both its emotion-space sample and its
initial latents, so results do not depend on the batch size, and the same seed gives the same
images. PNGs carry their parameters in text chunks; `index.jsonl` lists them; numbering continues
after existing files unless `overwrite`.
"""

from __future__ import annotations

import hashlib
import json
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
from emogen_cli.errors import EmogenError
from emogen_cli.mapper import MapperBundle, load_mapper
from emogen_cli.reporting import Reporter, progress
from emogen_cli.runtime import DTYPES, resolve_device, resolve_precision

SCHEDULERS = {"unipc": "UniPCMultistepScheduler", "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",
              "dpm": "DPMSolverMultistepScheduler", "pndm": "PNDMScheduler"}
BASELINE_PROMPT = "a photo that evokes {emotion}"


@dataclass
class Request:
    emotion: str
    prompt: str = "{}"  # "{}" marks where the emotion token goes
    count: int = 1


class EmoGenerator:
    """A loaded mapper bundle + Stable Diffusion pipeline that turns requests into images."""

    def __init__(self, config: Config, mapper: str | Path | None = None, baseline: bool = False) -> None:
        from emogen_cli.models import load, quiet_libraries

        quiet_libraries()
        import diffusers
        from diffusers import StableDiffusionPipeline

        self.config, self.baseline = config, baseline
        self.mapper_path = Path(mapper or config.generate.mapper)
        self.bundle: MapperBundle = load_mapper(self.mapper_path)
        self.device = resolve_device(config.runtime.device)
        self.dtype = DTYPES[resolve_precision(config.runtime.mixed_precision, self.device)]
        base = self.bundle.config["base_model"] if config.model.pretrained == Config().model.pretrained else config.model.pretrained
        self.base_model = base
        self.pipe = load(StableDiffusionPipeline, base, revision=config.model.revision, safety_checker=None,
                         requires_safety_checker=False)
        scheduler_cls = getattr(diffusers, SCHEDULERS[config.generate.scheduler])
        self.pipe.scheduler = scheduler_cls.from_config(self.pipe.scheduler.config)
        self.pipe.to(self.device, self.dtype)
        self.pipe.set_progress_bar_config(disable=True)
        width = self.pipe.text_encoder.config.hidden_size
        if self.bundle.config["out_dim"] != width:
            raise EmogenError(f"The mapper in '{self.mapper_path}' writes {self.bundle.config['out_dim']}-d embeddings but "
                              f"the text encoder of '{base}' is {width}-d.",
                              f"Generate with the base model it was trained on: {self.bundle.config['base_model']}.")
        self.placeholder = self.bundle.config["placeholder"]
        self.prompts = EmotionPromptEncoder(self.pipe.tokenizer, self.pipe.text_encoder, [self.placeholder])
        self.mapper = self.bundle.mapper.to(self.device)
        self.mapper_hash = hashlib.sha256((self.mapper_path / "mapper.safetensors").read_bytes()).hexdigest()[:16]
        with torch.no_grad():  # the negative prompt is the same for every image: encode it once
            negative_ids = self.prompts.tokenize([config.generate.negative_prompt])
            self.negative = self.prompts.encode(negative_ids)[0].to(self.dtype)

    def prompt_text(self, request: Request) -> str:
        if self.baseline:
            return request.prompt.format(BASELINE_PROMPT.format(emotion=request.emotion))
        return request.prompt.format(self.placeholder)

    @torch.no_grad()
    def conditioning(self, request: Request, seeds: list[int]) -> torch.Tensor:
        """prompt_embeds [B, 77, D] for `request`, one emotion-space sample per seed."""
        ids = self.prompts.tokenize([self.prompt_text(request)] * len(seeds))
        if self.baseline:
            return self.prompts.encode(ids)[0].to(self.dtype)
        vectors = torch.stack([self.bundle.space.sample(request.emotion, torch.Generator().manual_seed(s))
                               for s in seeds])
        embeddings = self.mapper(vectors.to(self.device)).unsqueeze(1)
        return self.prompts.encode(ids, embeddings)[0].to(self.dtype)

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
        return {"emotion": request.emotion, "prompt": request.prompt, "seed": seed, "steps": g.steps,
                "guidance": g.guidance, "scheduler": g.scheduler, "size": self.config.model.resolution,
                "negative_prompt": g.negative_prompt, "base_model": self.base_model,
                "clip_model": self.bundle.config["clip_model"], "mapper": str(self.mapper_path),
                "mapper_sha256": self.mapper_hash, "baseline": self.baseline, "emogen_version": __version__}


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


def generate(config: Config, requests: list[Request], out: str | Path | None = None, mapper: str | Path | None = None,
             overwrite: bool = False, baseline: bool = False, reporter: Reporter | None = None) -> dict[str, Any]:
    """Generate every request's images into `out`; returns the written records."""
    reporter = reporter or Reporter()
    out_dir = Path(out or config.generate.output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".emogen-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise EmogenError(f"Cannot write to the output folder '{out_dir}' ({exc.strerror}).",
                          "Choose a writable --out.") from None
    generator = EmoGenerator(config, mapper, baseline)
    batch, seed = config.generate.batch_size, config.runtime.seed
    records: list[dict[str, Any]] = []
    total = sum(r.count for r in requests)
    with progress(reporter, "Generating", total):
        for request in requests:
            stem = request.emotion + (f"-{_slug(request.prompt)}" if _slug(request.prompt) else "")
            stem += "-baseline" if baseline else ""
            start = 0 if overwrite else _next_index(out_dir, stem)
            written: list[Image.Image] = []
            for b in range(0, request.count, batch):
                seeds = [seed + i for i in range(b, min(b + batch, request.count))]
                for s, image in zip(seeds, generator.images(request, seeds)):
                    meta = generator.metadata(request, s)
                    info = PngInfo()
                    info.add_text("emogen", json.dumps(meta))
                    info.add_text("parameters", f"{generator.prompt_text(request)} | emotion: {request.emotion}, "
                                                f"seed: {s}, steps: {meta['steps']}, guidance: {meta['guidance']}, "
                                                f"scheduler: {meta['scheduler']}")
                    path = out_dir / f"{stem}-{start + s - seed:05d}.png"
                    image.save(path, pnginfo=info)
                    records.append({"path": str(path), **meta})
                    written.append(image)
                reporter.advance("Generating", len(seeds))
            if written:
                _grid(written).save(out_dir / f"grid-{stem}-{start:05d}.png")
    with (out_dir / "index.jsonl").open("a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return {"out": str(out_dir), "count": len(records), "images": records}
