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
    ClipOpt, ConfigOpt, DeviceOpt, ModelOpt, ResolutionOpt, JsonOpt, PrecisionOpt, RichReporter, SeedOpt, emit, out_console, overrides,
)

ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder.", show_default=False)]
StepsOpt = Annotated[int | None, typer.Option("--max-steps", help="Stop after this many optimizer steps.", show_default=False)]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Images per step (per device).", show_default=False)]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Learning rate.", show_default=False)]
EveryOpt = Annotated[int | None, typer.Option("--checkpoint-every", help="Steps between checkpoints.", show_default=False)]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Let an import replace existing files in --out.")]


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
    overwrite: OverwriteOpt = False,
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

        target = Path(cfg.encoder.output)
        bundle = run_import(import_official, target, cfg.encoder.image_size, overwrite=overwrite)
        result = {"path": str(target), "imported_from": str(import_official), "emotions": list(bundle.emotions),
                  "emotion_dim": bundle.space.dim, "has_classifier": bundle.model is not None}
        emit(result, json_, lambda r: out_console.print(
            f"Imported the official emotion space ({r['emotion_dim']}-d"
            f"{', with classifier' if r['has_classifier'] else ''}) into {r['path']}"))
        return
    from emogen_cli.train_encoder import train_encoder as run

    with RichReporter() as reporter:
        result = run(cfg, resume=resume, reporter=reporter)
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
    lambda_attr: Annotated[float | None, typer.Option("--lambda-attr", help="Attribute-loss weight (0.01).", show_default=False)] = None,
    lambda_emo: Annotated[float | None, typer.Option("--lambda-emo", help="Emotion-loss weight (0).", show_default=False)] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Confidence below this counts as 0.", show_default=False)] = None,
    confidence: Annotated[Path | None, typer.Option("--confidence", help="Emotion-confidence JSON to use instead of computing it.",
                                                    show_default=False)] = None,
    import_official_confidence: Annotated[
        Path | None, typer.Option("--import-official-confidence", help="Convert the official attr_coefficient_*.pkl tables and exit.",
                                  show_default=False)] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing",
                                                                help="Trade compute for memory.", show_default=False)] = None,
    model: ModelOpt = None,
    clip: ClipOpt = None,
    resolution: ResolutionOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = None,
    mixed_precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Stage 2: train the mapping network from the emotion space to CLIP's text space."""
    from emogen_cli.config import load_config
    from emogen_cli.train_mapper import train_mapper as run

    cfg = load_config(config, overrides(data__prepared=prepared and str(prepared), mapper__encoder=encoder and str(encoder),
                                        mapper__output=out and str(out), mapper__max_steps=max_steps,
                                        mapper__batch_size=batch_size, mapper__lr=lr,
                                        mapper__checkpoint_every=checkpoint_every, mapper__lambda_attr=lambda_attr,
                                        mapper__lambda_emo=lambda_emo, mapper__threshold=threshold,
                                        mapper__confidence=confidence and str(confidence),
                                        mapper__gradient_checkpointing=gradient_checkpointing,
                                        model__pretrained=model, model__clip=clip, model__resolution=resolution,
                                        runtime__device=device, runtime__mixed_precision=mixed_precision,
                                        runtime__seed=seed))
    if import_official_confidence is not None:
        from emogen_cli.confidence import import_official_confidence as run_import

        target = Path(cfg.mapper.output) / "confidence.json"
        table = run_import(import_official_confidence, target, overwrite=overwrite)
        emit({"path": str(target), "attributes": len(table["attributes"])}, json_,
             lambda r: out_console.print(f"Converted {r['attributes']} official confidence rows to {r['path']}; "
                                         f"train with --confidence {r['path']}"))
        return
    with RichReporter() as reporter:
        result = run(cfg, resume=resume, reporter=reporter)
    emit(result, json_, _render_mapper)


def _render_mapper(result: dict[str, Any]) -> None:
    final = result["final"]
    table = Table(title=f"Mapper trained for {result['steps']} steps -> {result['path']}")
    for name in ("loss", "l_ldm", "l_attr", "l_emo"):
        table.add_column(name, justify="right")
    if final:
        table.add_row(*(f"{final[k]:.4f}" for k in ("loss", "l_ldm", "l_attr", "l_emo")))
    out_console.print(table)
    latents = "cached VAE latents" if result["cached_latents"] else "on-the-fly VAE encoding"
    out_console.print(f"{result['attributes']} attributes; {latents}.")
