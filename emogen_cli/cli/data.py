"""`emogen prepare`: EmoSet -> balanced, filtered training manifest (+ optional latent cache).

Usage examples:
    emogen prepare --data data/EmoSet --out runs/prepared
    emogen prepare --data data/EmoSet --out runs/prepared --cache-latents --model stable-diffusion-v1-5/stable-diffusion-v1-5
    emogen prepare -c configs/tiny.yaml --json
"""

from __future__ import annotations

from typing import Annotated, Any

from rich.markup import escape
from rich.table import Table

from emogen_cli.cli._utils import RichReporter, command, emit, out_console, plural, say
from emogen_cli.cli.options import (
    DataOpt,
    ModelOpt,
    OverwriteOpt,
    PrepareOutOpt,
    ResolutionOpt,
    flag,
    opt,
    runtime_options,
)
from emogen_cli.core.config import Config


@command(examples="""
emogen prepare --data data/EmoSet --out runs/prepared
emogen prepare --data data/EmoSet --out runs/prepared --cache-latents
emogen prepare --splits train --balance none --json
emogen prepare -c configs/tiny.yaml --cache-latents
""", writes=["data.prepared"], options=[runtime_options])
def prepare(
    data: DataOpt = None,
    out: PrepareOutOpt = None,
    splits: Annotated[str | None, opt("--splits", key="data.splits", help="Comma-separated splits to use.")] = None,
    balance: Annotated[str | None, opt("--balance", key="data.balance",
                                       help="Oversampling: per_kind balances scene and object images separately "
                                            "(the official code), union balances all images, none keeps them.")] = None,
    cache_latents: Annotated[bool, flag("--cache-latents", help="Pre-encode VAE latents for stage 2 (resumable).")] = False,
    model: ModelOpt = None,
    resolution: ResolutionOpt = None,
    overwrite: OverwriteOpt = False,
    *,
    json_: bool,
    cfg: Config,
) -> None:
    """Filter EmoSet to images with a scene/object label, balance emotions, write a manifest."""
    from emogen_cli.data.prepare import prepare as run

    with RichReporter() as reporter:
        result = run(cfg, cache_latents=cache_latents, overwrite=overwrite, reporter=reporter)
    emit(result, json_, _render)


def _render(result: dict[str, Any]) -> None:
    table = Table(title=f"Prepared {plural(result['kept'], 'image')} -> {plural(result['total'], 'training sample')}")
    table.add_column("emotion")
    table.add_column("before", justify="right")
    table.add_column("after balancing", justify="right")
    for emotion, before in result["per_emotion_before"].items():
        table.add_row(escape(emotion), str(before), str(result["per_emotion_after"][emotion]))
    out_console.print(table)
    attributes = list(result["attributes"].items())
    top = ", ".join(f"{name} ({n})" for name, n in attributes[:10])
    say(f"{plural(len(attributes), 'attribute')}; most frequent: {top}")
    if result["skipped"]:
        skipped = Table(title="Skipped entries")
        skipped.add_column("reason")
        skipped.add_column("count", justify="right")
        skipped.add_column("examples")
        for reason, n in result["skipped"].items():
            skipped.add_row(escape(reason), str(n), escape(", ".join(result.get("skipped_examples", {}).get(reason, []))))
        out_console.print(skipped)
    say(f"Manifest: {result['manifest']}")
    if "latents" in result:
        lat = result["latents"]
        say(f"Latents: {lat['cached']} cached ({lat['new']} new) in {lat['path']}")
