"""`emogen train-encoder` (stage 1) and `emogen train-mapper` (stage 2).

Usage examples:
    emogen train-encoder --data data/EmoSet --out runs/encoder
    emogen train-encoder --import-official path/to/EmoGen --out runs/encoder
    accelerate launch -m emogen_cli train-encoder --data data/EmoSet --out runs/encoder
    emogen train-mapper --prepared runs/prepared --encoder runs/encoder --out runs/mapper
    emogen train-mapper --out runs/mapper --resume
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from emogen_cli.cli._utils import (
    ConfigOpt, DeviceOpt, JsonOpt, PrecisionOpt, RichReporter, SeedOpt, emit, out_console, overrides,
)

ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder.", show_default=False)]
StepsOpt = Annotated[int | None, typer.Option("--max-steps", help="Stop after this many optimizer steps.", show_default=False)]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Images per step (per device).", show_default=False)]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Learning rate.", show_default=False)]
EveryOpt = Annotated[int | None, typer.Option("--checkpoint-every", help="Steps between checkpoints.", show_default=False)]


def train_encoder(
    data: Annotated[Path | None, typer.Option("--data", help="EmoSet root (data.root).", show_default=False)] = None,
    out: OutOpt = None,
    backbone: Annotated[str | None, typer.Option("--backbone", help="ResNet hub id or folder.", show_default=False)] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Training epochs.", show_default=False)] = None,
    max_steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    checkpoint_every: EveryOpt = None,
    import_official: Annotated[
        Path | None,
        typer.Option("--import-official", help="Convert the official EmoGen emo_space/ (+ image_encoder .pth) instead of training.",
                     show_default=False),
    ] = None,
    resume: ResumeOpt = False,
    device: DeviceOpt = None,
    mixed_precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Stage 1: train the ResNet-50 emotion classifier and build the per-emotion Gaussians."""
    from emogen_cli.config import load_config

    cfg = load_config(config, overrides(data__root=data and str(data), encoder__output=out and str(out),
                                        encoder__backbone=backbone, encoder__epochs=epochs, encoder__max_steps=max_steps,
                                        encoder__batch_size=batch_size, encoder__lr=lr,
                                        encoder__checkpoint_every=checkpoint_every, runtime__device=device,
                                        runtime__mixed_precision=mixed_precision, runtime__seed=seed))
    if import_official is not None:
        from emogen_cli.encoder import import_official as run_import
        from emogen_cli.errors import EmogenError

        target = Path(cfg.encoder.output)
        if (target / "config.json").exists():
            raise EmogenError(f"'{target}' already holds an encoder.", "Choose another --out.")
        bundle = run_import(import_official, target, cfg.encoder.image_size)
        result = {"path": str(target), "imported_from": str(import_official), "emotions": list(bundle.emotions),
                  "emotion_dim": bundle.space.dim, "has_classifier": bundle.model is not None}
        emit(result, json_, lambda r: out_console.print(
            f"Imported the official emotion space ({r['emotion_dim']}-d"
            f"{', with classifier' if r['has_classifier'] else ''}) into {r['path']}"))
        return
    from emogen_cli.train_encoder import train_encoder as run

    reporter = RichReporter()
    try:
        result = run(cfg, resume=resume, reporter=reporter)
    finally:
        reporter.close()
    emit(result, json_, _render_encoder)


def _render_encoder(result: dict[str, Any]) -> None:
    table = Table(title=f"Emotion encoder ({result['emotion_dim']}-d) -> {result['path']}")
    table.add_column("epoch", justify="right")
    table.add_column("step", justify="right")
    table.add_column("loss", justify="right")
    table.add_column("val accuracy", justify="right")
    for row in result["history"]:
        acc = "-" if row["val_accuracy"] is None else f"{row['val_accuracy']:.3f}"
        table.add_row(str(row["epoch"]), str(row["step"]), f"{row['loss']:.4f}", acc)
    out_console.print(table)
    out_console.print(f"Train accuracy {result['train_accuracy']:.3f} on {result['train_images']} images.")


def train_mapper(
    prepared: Annotated[Path | None, typer.Option("--prepared", help="`emogen prepare` output (data.prepared).",
                                                  show_default=False)] = None,
    encoder: Annotated[Path | None, typer.Option("--encoder", help="Stage-1 folder (mapper.encoder).", show_default=False)] = None,
    out: OutOpt = None,
    max_steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    checkpoint_every: EveryOpt = None,
    resume: ResumeOpt = False,
    device: DeviceOpt = None,
    mixed_precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Stage 2: train the mapping network from the emotion space to CLIP's text space."""
    from emogen_cli.errors import NotYetAvailable

    raise NotYetAvailable("`emogen train-mapper` is not available yet (tracked in issue 3).",
                          "Use `emogen train-encoder` and `emogen prepare` meanwhile.")
