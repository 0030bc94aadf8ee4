"""Developer helpers (hidden): tiny random-weight models and a synthetic EmoSet for demos and tests.

Usage examples:
    emogen dev tiny-bundle runs/tiny
    emogen dev synthetic-emoset data/synthetic
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emogen_cli.cli._utils import JsonOpt, SeedOpt, emit, out_console

app = typer.Typer(help="Developer helpers: tiny models and synthetic data.", no_args_is_help=True)


@app.command("tiny-bundle")
def tiny_bundle(
    out: Annotated[Path, typer.Argument(help="Folder to write the tiny models to.")],
    size: Annotated[str, typer.Option("--size", help="tiny (tests, demo) or mid (CPU benchmarks).")] = "tiny",
    seed: SeedOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Write tiny random-weight SD/CLIP/ResNet models in their real folder layouts."""
    from emogen_cli.errors import EmogenError
    from emogen_cli.tiny import SIZES, build_tiny_bundle

    if size not in SIZES:
        raise EmogenError(f"Unknown size '{size}'.", f"Choose one of: {', '.join(SIZES)}.")
    path = build_tiny_bundle(out, seed=seed or 0, size=size)
    emit({"path": str(path)}, json_, lambda r: out_console.print(f"Tiny model bundle written to {r['path']}"))


@app.command("synthetic-emoset")
def synthetic_emoset(
    out: Annotated[Path, typer.Argument(help="Folder to write the dataset to.")],
    seed: SeedOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Write a small synthetic dataset in the real EmoSet layout (with a few broken entries)."""
    from emogen_cli.synthetic import make_synthetic_emoset

    expected = make_synthetic_emoset(out, seed=seed or 0)
    emit({"path": str(out), **expected}, json_,
         lambda r: out_console.print(f"Synthetic EmoSet ({r['total_kept']} usable images) written to {r['path']}"))
