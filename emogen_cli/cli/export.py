"""`emogen export`: a trained emotion as a textual-inversion embedding for diffusers, AUTOMATIC1111, ComfyUI.

Usage examples:
    emogen export awe --out runs/embeddings                       # runs/embeddings/awe/learned_embeds.safetensors
    emogen export all --format a1111 --out sd-webui/embeddings    # awe.pt + awe.safetensors, ...
    emogen export fear --samples 4 --format a1111 --out runs/emb   # 4 vectors per embedding
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emogen_cli.cli._utils import ConfigOpt, JsonOpt, OverwriteOpt, RichReporter, SeedOpt, command, emit, opt, say
from emogen_cli.core.config import Config


@command(examples="""
emogen export awe --out runs/embeddings
emogen export all --format a1111 --out stable-diffusion-webui/embeddings
emogen export fear --samples 4 --format a1111 --out runs/emb
""", writes=["out"])
def export(
    emotion: Annotated[str, typer.Argument(help="Emotion name, a comma-separated list, or 'all'.")] = "all",
    format_: Annotated[str, typer.Option("--format", "-f", help="diffusers (learned_embeds.safetensors) or a1111 "
                                         "(.pt + .safetensors for AUTOMATIC1111 and ComfyUI).")] = "diffusers",
    samples: Annotated[int | None, typer.Option("--samples", "-k", help="Export K seeded samples of the emotion as K "
                                                "vectors of one embedding (default: the mapped mean, 1 vector).",
                                                min=1, show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/embeddings"),
    mapper: Annotated[str | None, opt("--mapper", "-m", key="generate.mapper",
                                      help="Mapper bundle folder or Hub repo id.")] = None,
    overwrite: OverwriteOpt = False,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    *,
    cfg: Config,
) -> None:
    """Export emotions as textual-inversion embeddings other Stable Diffusion 1.x tools load."""
    from emogen_cli.inference.export import export_embeddings

    with RichReporter() as reporter:
        result = export_embeddings(cfg.generate.mapper, [emotion], format_, out, samples, cfg.runtime.seed,
                                   overwrite, reporter)
    emit(result, json_, lambda r: say(
        f"Wrote {len(r['files'])} files for {len(r['emotions'])} emotions ({r['vectors']} x {r['dim']}-d) to "
        f"{r['out']}; prompt words: {', '.join(r['prompt_words'].values())}"))
