"""`emogen prepare`: EmoSet -> balanced, filtered training manifest (+ optional latent cache).

Usage examples:
    emogen prepare --data data/EmoSet --out runs/prepared
    emogen prepare --data data/EmoSet --out runs/prepared --cache-latents --model stable-diffusion-v1-5/stable-diffusion-v1-5
    emogen prepare -c configs/tiny.yaml --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from emogen_cli.cli._utils import (
    ConfigOpt, DeviceOpt, JsonOpt, ModelOpt, OverwriteOpt, ResolutionOpt, RichReporter, SeedOpt, emit, out_console,
    overrides,
)


def prepare(
    data: Annotated[Path | None, typer.Option("--data", help="EmoSet root (data.root).", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (data.prepared).", show_default=False)] = None,
    splits: Annotated[str | None, typer.Option("--splits", help="Comma-separated: train,val,test.", show_default=False)] = None,
    balance: Annotated[bool | None, typer.Option("--balance/--no-balance", help="Oversample smaller emotions (per kind, as the official code).", show_default=False)] = None,
    balance_mode: Annotated[str | None, typer.Option("--balance-mode", help="per_kind (official: scene and object images separately), union or none (data.balance).",
                                                     show_default=False)] = None,
    cache_latents: Annotated[bool, typer.Option("--cache-latents", help="Pre-encode VAE latents for stage 2 (resumable).")] = False,
    model: ModelOpt = None,
    resolution: ResolutionOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Filter EmoSet to images with a scene/object label, balance emotions, write a manifest."""
    from emogen_cli.config import load_config
    from emogen_cli.prepare import prepare as run

    cfg = load_config(config, overrides(data__root=data and str(data), data__prepared=out and str(out),
                                        data__splits=splits, data__balance=balance_mode or balance, model__pretrained=model,
                                        model__resolution=resolution, runtime__device=device, runtime__seed=seed))
    with RichReporter() as reporter:
        result = run(cfg, cache_latents=cache_latents, overwrite=overwrite, reporter=reporter)
    emit(result, json_, _render)


def _render(result: dict[str, Any]) -> None:
    table = Table(title=f"Prepared {result['kept']} images -> {result['total']} training samples")
    table.add_column("emotion")
    table.add_column("before", justify="right")
    table.add_column("after balancing", justify="right")
    for emotion, before in result["per_emotion_before"].items():
        table.add_row(emotion, str(before), str(result["per_emotion_after"][emotion]))
    out_console.print(table)
    attributes = list(result["attributes"].items())
    top = ", ".join(f"{name} ({n})" for name, n in attributes[:10])
    out_console.print(f"{len(attributes)} attributes; most frequent: {top}")
    if result["skipped"]:
        skipped = Table(title="Skipped entries")
        skipped.add_column("reason")
        skipped.add_column("count", justify="right")
        skipped.add_column("examples")
        for reason, n in result["skipped"].items():
            skipped.add_row(reason, str(n), ", ".join(result.get("skipped_examples", {}).get(reason, [])))
        out_console.print(skipped)
    out_console.print(f"Manifest: {result['manifest']}")
    if "latents" in result:
        lat = result["latents"]
        out_console.print(f"Latents: {lat['cached']} cached ({lat['new']} new) in {lat['path']}")
