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

from emogen_cli.cli._utils import RichReporter, command, emit, plural, say
from emogen_cli.cli.options import ExportOutOpt, MapperOpt, OverwriteOpt, SamplesOpt, runtime_options
from emogen_cli.core.choices import EXPORT_FORMATS
from emogen_cli.core.config import Config


@command(examples="""
emogen export awe --out runs/embeddings
emogen export all --format a1111 --out stable-diffusion-webui/embeddings
emogen export fear --samples 4 --format a1111 --out runs/emb
""", writes=["out"], options=[runtime_options])
def export(
    emotion: Annotated[str, typer.Argument(help="Emotion name, a comma-separated list, or 'all'.")] = "all",
    format_: Annotated[str, typer.Option("--format", "-f", help=f"One of: {', '.join(EXPORT_FORMATS)} (diffusers: "
                                         "learned_embeds.safetensors; a1111: .pt + .safetensors for AUTOMATIC1111 "
                                         "and ComfyUI; an SDXL bundle writes one .safetensors with clip_l and "
                                         "clip_g).",
                                         autocompletion=lambda incomplete: [f for f in EXPORT_FORMATS
                                                                            if f.startswith(incomplete)])] = "diffusers",
    samples: SamplesOpt = None,
    out: ExportOutOpt = Path("runs/embeddings"),
    mapper: MapperOpt = None,
    overwrite: OverwriteOpt = False,
    *,
    json_: bool,
    cfg: Config,
) -> None:
    """Export emotions as textual-inversion embeddings other Stable Diffusion 1.x and SDXL tools load."""
    from emogen_cli.core.errors import EmogenError
    from emogen_cli.outputs.export import export_embeddings

    if format_.lower() not in EXPORT_FORMATS:  # before the bundle loads
        raise EmogenError(f"--format must be one of {', '.join(EXPORT_FORMATS)}; got '{format_}'.",
                          "Run `emogen export --help` to see what each format writes.")
    format_ = format_.lower()
    with RichReporter() as reporter:
        result = export_embeddings(cfg.generate.mapper, [emotion], format_, out, samples, cfg.runtime.seed,
                                   overwrite, reporter)
    emit(result, json_, lambda r: say(
        f"Wrote {plural(len(r['files']), 'file')} for {plural(len(r['emotions']), 'emotion')} "
        f"({r['vectors']} x {r['dim']}-d) to "
        f"{r['out']}; prompt words: {', '.join(r['prompt_words'].values())}"))
