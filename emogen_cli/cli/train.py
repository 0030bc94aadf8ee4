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
from rich.markup import escape
from rich.table import Table

from emogen_cli.cli._utils import RichReporter, command, emit, out_console, plural, say
from emogen_cli.cli.options import (
    ClipOpt,
    DataOpt,
    EncoderOpt,
    EncoderOutOpt,
    MapperOutOpt,
    ModelOpt,
    ResolutionOpt,
    EncoderBatchOpt,
    EncoderCheckpointOpt,
    EncoderLrOpt,
    EncoderMaxStepsOpt,
    MapperBatchOpt,
    MapperCheckpointOpt,
    MapperLrOpt,
    MapperMaxStepsOpt,
    flag,
    opt,
    precision_options,
    runtime_options,
    trainer_options,
)
from emogen_cli.core.config import Config

# The options with long names get their own --help panel, so the others keep a readable width at 80 columns.
OFFICIAL = "Official EmoGen method and files"


@command(examples="""
emogen train-encoder --data data/EmoSet --out runs/encoder
emogen train-encoder --out runs/encoder --resume
emogen train-encoder --import-official path/to/EmoGen --out runs/encoder
accelerate launch -m emogen_cli train-encoder --data data/EmoSet --out runs/encoder
""", writes=["encoder.output"], options=[trainer_options, precision_options, runtime_options])
def train_encoder(
    data: DataOpt = None,
    out: EncoderOutOpt = None,
    backbone: Annotated[str | None, opt("--backbone", key="encoder.backbone", help="ResNet hub id or folder.")] = None,
    epochs: Annotated[int | None, opt("--epochs", key="encoder.epochs", help="Training epochs.")] = None,
    max_steps: EncoderMaxStepsOpt = None,
    batch_size: EncoderBatchOpt = None,
    lr: EncoderLrOpt = None,
    checkpoint_every: EncoderCheckpointOpt = None,
    import_official: Annotated[
        Path | None,
        typer.Option("--import-official", help="Convert the official EmoGen emo_space/ (+ image_encoder .pth) instead of training.",
                     show_default=False),
    ] = None,
    preprocessing: Annotated[str | None, opt("--preprocessing", key="encoder.preprocessing",
                                             help="Stage-1 inputs. official: Resize(256) -> CenterCrop(224) -> "
                                                  "Normalize(0.5, 0.5); imagenet: ImageNet statistics.")] = None,
    space_splits: Annotated[str | None, opt("--space-splits", key="encoder.space_splits",
                                            help="Comma-separated splits the emotion space is built from.")] = None,
    *,
    resume: bool,
    overwrite: bool,
    json_: bool,
    cfg: Config,
) -> None:
    """Stage 1: train the ResNet-50 emotion classifier and build the per-emotion Gaussians."""
    if import_official is not None:
        from emogen_cli.stage1.encoder import import_official as run_import

        target = Path(cfg.encoder.output)
        bundle = run_import(import_official, target, cfg.encoder.image_size, overwrite=overwrite)
        result = {"path": str(target), "imported_from": str(import_official), "emotions": list(bundle.emotions),
                  "emotion_dim": bundle.space.dim, "has_classifier": bundle.model is not None,
                  "preprocessing": bundle.config["preprocessing"]}
        emit(result, json_, lambda r: say(
            f"Imported the official emotion space ({r['emotion_dim']}-d"
            f"{', with classifier' if r['has_classifier'] else ''}) into {r['path']}"))
        return
    from emogen_cli.stage1.train_encoder import train_encoder as run

    with RichReporter() as reporter:
        result = run(cfg, resume=resume, reporter=reporter)
    emit(result, json_, _render_encoder)


def _render_encoder(result: dict[str, Any]) -> None:
    table = Table(title=escape(f"Emotion encoder ({result['emotion_dim']}-d) -> {result['path']}"))
    table.add_column("epoch", justify="right")
    table.add_column("step", justify="right")
    table.add_column("loss", justify="right")
    table.add_column(f"val accuracy ({plural(result['val_images'], 'image')})", justify="right")
    for row in result["history"]:
        acc = "-" if row["val_accuracy"] is None else f"{row['val_accuracy']:.3f}"
        table.add_row(str(row["epoch"]), str(row["step"]), f"{row['loss']:.4f}", acc)
    out_console.print(table)
    if result["train_accuracy"] is not None:
        counted = result.get("train_accuracy_images", result["train_images"])
        say(f"Train accuracy {result['train_accuracy']:.3f} on {plural(counted, 'training image')} (after training, "
            f"without augmentation); best val accuracy "
            + ("-" if result["best_val_accuracy"] is None else f"{result['best_val_accuracy']:.3f}")
            + f" on {plural(result['val_images'], 'validation image')}.")


@command(examples="""
emogen train-mapper --prepared runs/prepared --encoder runs/encoder --out runs/mapper
emogen train-mapper --out runs/mapper --resume
emogen train-mapper --lambda-attr 0.01 --max-steps 5000 --batch-size 8 --gradient-checkpointing
emogen train-mapper --import-official-confidence path/to/EmoGen --out runs/mapper
""", writes=["mapper.output"], options=[trainer_options, precision_options, runtime_options])
def train_mapper(
    prepared: Annotated[Path | None, opt("--prepared", key="data.prepared", help="`emogen prepare` output folder.")] = None,
    encoder: EncoderOpt = None,
    out: MapperOutOpt = None,
    max_steps: MapperMaxStepsOpt = None,
    batch_size: MapperBatchOpt = None,
    lr: MapperLrOpt = None,
    checkpoint_every: MapperCheckpointOpt = None,
    lambda_attr: Annotated[float | None, opt("--lambda-attr", key="mapper.lambda_attr", help="Attribute-loss weight.")] = None,
    lambda_emo: Annotated[float | None, opt("--lambda-emo", key="mapper.lambda_emo", help="Emotion-loss weight.")] = None,
    threshold: Annotated[float | None, opt("--threshold", key="mapper.threshold",
                                           help="Confidence below this counts as 0 (0 .. 1).")] = None,
    confidence: Annotated[Path | None, opt("--confidence", key="mapper.confidence",
                                           help="Emotion-confidence JSON to use instead of computing it.")] = None,
    import_official_confidence: Annotated[
        Path | None, typer.Option("--import-official-confidence", help="Convert the official attr_coefficient_*.pkl tables and exit.",
                                  show_default=False, rich_help_panel=OFFICIAL)] = None,
    attribute_vocabulary: Annotated[str | None, opt("--attribute-vocabulary", key="mapper.attribute_vocabulary",
                                                    help="L_attr classes: the emotional attributes (official) or all.",
                                                    rich_help_panel=OFFICIAL)] = None,
    import_official_attributes: Annotated[Path | None, opt(
        "--import-official-attributes", key="mapper.emotional_attributes",
        help="Emotional vocabulary: the official dataset_balance/ folder (or repo root) with {object,scene}_attr.pkl, "
             "a JSON list, or a bundle's attributes.json.", rich_help_panel=OFFICIAL)] = None,
    semantic_token: Annotated[str | None, opt("--semantic-token", key="mapper.semantic_token",
                                              help="Where the semantic vector is pooled: the placeholder (official) or "
                                                   "end-of-text.", rich_help_panel=OFFICIAL)] = None,
    emotion_probe: Annotated[Path | None, opt("--emotion-probe", key="mapper.emotion_probe",
                                              help="CLIP emotion probe for L_emo (official Clip_emotion_classifier "
                                                   ".pth or .safetensors).", rich_help_panel=OFFICIAL)] = None,
    gradient_checkpointing: Annotated[bool | None, flag("--gradient-checkpointing",
                                                       key="mapper.gradient_checkpointing",
                                                       help="Trade compute for memory.")] = None,
    model: ModelOpt = None,
    clip: ClipOpt = None,
    resolution: ResolutionOpt = None,
    *,
    resume: bool,
    overwrite: bool,
    json_: bool,
    cfg: Config,
) -> None:
    """Stage 2: train the mapping network from the emotion space to CLIP's text space."""
    if import_official_confidence is not None:
        from emogen_cli.stage2.confidence import import_official_confidence as run_import

        target = Path(cfg.mapper.output) / "confidence.json"
        table = run_import(import_official_confidence, target, overwrite=overwrite)
        emit({"path": str(target), "attributes": len(table["attributes"])}, json_,
             lambda r: say(f"Converted {r['attributes']} official confidence rows to {r['path']}; "
                           f"train with --confidence {r['path']}"))
        return
    from emogen_cli.stage2.train_mapper import train_mapper as run

    with RichReporter() as reporter:
        result = run(cfg, resume=resume, reporter=reporter)
    emit(result, json_, _render_mapper)


def _render_mapper(result: dict[str, Any]) -> None:
    final = result["final"]
    table = Table(title=escape(f"Mapper trained for {plural(result['steps'], 'step')} -> {result['path']}"))
    for name in ("loss", "l_ldm", "l_attr", "l_emo"):
        table.add_column(name, justify="right")
    if final:
        table.add_row(*(f"{final[k]:.4f}" for k in ("loss", "l_ldm", "l_attr", "l_emo")))
    out_console.print(table)
    latents = "cached VAE latents" if result["cached_latents"] else "on-the-fly VAE encoding"
    say(f"L_attr over {plural(result['attributes'], result.get('attribute_vocabulary', '') + ' attribute')}; "
        f"semantic vector at the {result.get('semantic_token', 'eos')} token; {latents}.")
