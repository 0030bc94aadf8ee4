"""`emogen export`: a trained emotion as a textual-inversion embedding for diffusers, AUTOMATIC1111, ComfyUI.

Usage examples:
    emogen export awe --out runs/embeddings          # runs/embeddings/emogen-awe/learned_embeds.safetensors
    emogen export all --format a1111 --out sd-webui/embeddings    # emogen-awe.pt + emogen-awe.safetensors, ...
    emogen export fear --samples 4 --format a1111 --out runs/emb   # 4 vectors per embedding
    emogen export all --format a1111 --name "mood-{emotion}"       # mood-awe.pt, ...
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
emogen export all --format a1111 --name "mood-{emotion}"
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
    name: Annotated[str, typer.Option("--name", help="Embedding name, also the file name and the prompt word; "
                                      "{emotion} stands for the emotion. The default is a word no ordinary prompt "
                                      "holds (AUTOMATIC1111 replaces the name wherever it appears in a prompt).")
                    ] = "emogen-{emotion}",
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
                                   overwrite, reporter, name=name)
    emit(result, json_, _render)


def _render(r: dict) -> None:
    tools = {"diffusers": "diffusers", "a1111": "AUTOMATIC1111", "comfyui": "ComfyUI"}
    say(f"Wrote {plural(len(r['files']), 'file')} for {plural(len(r['emotions']), 'emotion')} "
        f"({r['vectors']} x {r['dim']}-d) to {r['out']}.")
    for tool, words in r["prompt_words_by_tool"].items():
        say(f"Prompt words ({tools[tool]}): {', '.join(words.values())}")
    say(f"For example: {r['example']}")
