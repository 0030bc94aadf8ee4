"""`emogen generate`, `transfer`, `fuse` and `decompose`.

Usage examples:
    emogen generate --emotion awe -n 8
    emogen transfer --emotion fear "a cup"
    emogen fuse amusement fear
    emogen fuse amusement fear --mode embedding --weights 0.7,0.3
    emogen decompose awe --top 6
    emogen decompose --images runs/generated
    accelerate launch -m emogen_cli generate --emotion all -n 1000   # images split across GPUs
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from emogen_cli.cli._utils import (
    ClipOpt, ConfigOpt, DeviceOpt, JsonOpt, ModelOpt, OverwriteOpt, PrecisionOpt, RichReporter, SeedOpt, emit,
    out_console, overrides,
)


MapperOpt = Annotated[Path | None, typer.Option("--mapper", "-m", help="Mapper bundle (generate.mapper).", show_default=False)]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (generate.output).", show_default=False)]
CountOpt = Annotated[int, typer.Option("--num-images", "-n", help="Images per emotion (and prompt).", min=1)]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Denoising steps (50).", show_default=False)]
GuidanceOpt = Annotated[float | None, typer.Option("--guidance", help="Classifier-free guidance scale (7.5).", show_default=False)]
SchedulerOpt = Annotated[str | None, typer.Option("--scheduler", help="unipc, ddim, euler, dpm or pndm.", show_default=False)]
SizeOpt = Annotated[int | None, typer.Option("--size", help="Image size in pixels (512).", show_default=False)]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Images per denoising batch.", show_default=False)]
BaselineOpt = Annotated[bool, typer.Option("--baseline", help="Plain SD with 'a photo that evokes {emotion}', same code path.")]


def _run(requests: list, options: dict[str, Any]) -> None:
    """Generate `requests` with a command's options (its locals()) as config overrides; print the result."""
    from emogen_cli.config import load_config
    from emogen_cli.writer import generate as run

    o = options
    cfg = load_config(o["config"], overrides(
        generate__steps=o["steps"], generate__guidance=o["guidance"], generate__scheduler=o["scheduler"],
        model__resolution=o["size"], generate__batch_size=o["batch_size"], model__pretrained=o["model"],
        runtime__device=o["device"], runtime__mixed_precision=o["mixed_precision"], runtime__seed=o["seed"]))
    with RichReporter() as reporter:
        result = run(cfg, requests, out=o["out"], mapper=o["mapper"], overwrite=o["overwrite"],
                     baseline=o["baseline"], reporter=reporter)
    emit(result, o["json_"], lambda r: out_console.print(f"Wrote {r['count']} images to {r['out']} "
                                                         "(index.jsonl, grid-*.png)"))


def generate(
    emotion: Annotated[str, typer.Option("--emotion", "-e", help="Emotion name, a comma-separated list, or 'all'.")] = "all",
    num_images: CountOpt = 4,
    mapper: MapperOpt = None,
    out: OutOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    scheduler: SchedulerOpt = None,
    size: SizeOpt = None,
    batch_size: BatchOpt = None,
    baseline: BaselineOpt = False,
    model: ModelOpt = None,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = None,
    mixed_precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Generate images that evoke an emotion."""
    from emogen_cli.emotions import parse_emotions
    from emogen_cli.generate import Request

    requests = [Request((e,), "{}", num_images) for e in parse_emotions([emotion])]
    _run(requests, locals())


def transfer(
    prompts: Annotated[list[str] | None, typer.Argument(help="Neutral content, e.g. 'a cup' or '{} street'.", show_default=False)] = None,
    emotion: Annotated[str, typer.Option("--emotion", "-e", help="Emotion name, a comma-separated list, or 'all'.")] = "all",
    template: Annotated[list[str] | None, typer.Option("--template", "-t", help="Template with {} for the emotion, e.g. '{} bag'.",
                                                       show_default=False)] = None,
    prompt_file: Annotated[Path | None, typer.Option("--prompt-file", help="One prompt per line.", show_default=False)] = None,
    num_images: CountOpt = 4,
    mapper: MapperOpt = None,
    out: OutOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    scheduler: SchedulerOpt = None,
    size: SizeOpt = None,
    batch_size: BatchOpt = None,
    baseline: BaselineOpt = False,
    model: ModelOpt = None,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = None,
    mixed_precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Put an emotion onto neutral objects or scenes ('{} cup'; text without {} gets the emotion in front)."""
    from emogen_cli.emotions import parse_emotions
    from emogen_cli.errors import EmogenError
    from emogen_cli.generate import Request

    texts = list(prompts or []) + list(template or [])
    if prompt_file is not None:
        if not prompt_file.is_file():
            raise EmogenError(f"Prompt file '{prompt_file}' does not exist.")
        texts += [line.strip() for line in prompt_file.read_text().splitlines() if line.strip()]
    if not texts:
        raise EmogenError("No prompt given.", "Pass one like 'a cup', or --template '{} bag', or --prompt-file FILE.")
    templates = [t if "{}" in t else "{} " + t for t in texts]
    requests = [Request((e,), t, num_images) for e in parse_emotions([emotion]) for t in templates]
    _run(requests, locals())


def fuse(
    emotions: Annotated[list[str], typer.Argument(help="Two or more emotions, e.g. amusement fear.", show_default=False)],
    mode: Annotated[str, typer.Option("--mode", help="tokens: one token per emotion, side by side (the paper's); "
                                      "embedding / space: one token, weighted mix of mapped embeddings / emotion "
                                      "vectors.")] = "tokens",
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="Mixing weights for embedding/space, "
                                                "e.g. 0.7,0.3 (normalised; default equal).", show_default=False)] = None,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Template with {} for the emotions, e.g. '{} street'.")] = "{}",
    num_images: CountOpt = 4,
    mapper: MapperOpt = None,
    out: OutOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    scheduler: SchedulerOpt = None,
    size: SizeOpt = None,
    batch_size: BatchOpt = None,
    baseline: BaselineOpt = False,
    model: ModelOpt = None,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = None,
    mixed_precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Blend two or more emotions in one image."""
    from emogen_cli.emotions import validate_emotion
    from emogen_cli.errors import EmogenError
    from emogen_cli.generate import fusion_request

    names = [validate_emotion(part) for e in emotions for part in e.split(",") if part.strip()]
    values = None
    if weights is not None:
        try:
            values = [float(w) for w in weights.split(",")]
        except ValueError:
            raise EmogenError(f"--weights must be numbers separated by commas, got '{weights}'.",
                              "For example: --weights 0.7,0.3.") from None
    template = prompt if "{}" in prompt else "{} " + prompt
    request = fusion_request(names, values, mode, template, num_images)
    _run([request], locals())


def decompose(
    emotion: Annotated[str | None, typer.Argument(help="Emotion name, a comma-separated list, or 'all'.",
                                                  show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", "-k", help="How many attributes to list per emotion.", min=1)] = 6,
    attributes: Annotated[Path | None, typer.Option("--attributes", help="Attribute names to rank: one per line, or a "
                                                    "JSON list (default: the mapper bundle's).", show_default=False)] = None,
    images: Annotated[Path | None, typer.Option("--images", help="Also label every image in this folder with its "
                                                "best-matching attribute (written to attribute_labels.jsonl).",
                                                show_default=False)] = None,
    samples: Annotated[int, typer.Option("--samples", help="Emotion-space samples averaged per emotion.", min=1)] = 64,
    mapper: MapperOpt = None,
    model: ModelOpt = None,
    clip: ClipOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the semantics (EmoSet objects and scenes) an emotion is made of."""
    from emogen_cli.config import load_config
    from emogen_cli.decompose import decompose as run
    from emogen_cli.emotions import parse_emotions

    cfg = load_config(config, overrides(model__pretrained=model, model__clip=clip, runtime__device=device,
                                        runtime__seed=seed))
    with RichReporter() as reporter:
        result = run(cfg, parse_emotions([emotion]) if emotion else [], top, attributes, images, samples, mapper,
                     reporter)
    emit(result, json_, _render_decomposition)


def _render_decomposition(result: dict) -> None:
    from rich.table import Table

    for entry in result.get("emotions", []):
        table = Table(title=f"{entry['emotion']}: closest of {result['attributes']} attributes "
                            f"({entry['samples']} samples)", title_justify="left")
        for column in ("#", "attribute", "similarity", "confidence"):
            table.add_column(column, justify="left" if column == "attribute" else "right")
        for a in entry["attributes"]:
            c = "-" if a["confidence"] is None else f"{a['confidence']:.3f}"
            table.add_row(str(a["rank"]), a["name"].replace("_", " "), f"{a['similarity']:.4f}", c)
        out_console.print(table)
    if labels := result.get("labels"):
        table = Table(title=f"Labelled {labels['count']} images", caption=f"written to {labels['file']}",
                      title_justify="left", caption_justify="left")
        table.add_column("emotion")
        table.add_column("most frequent attributes")
        for emotion, counts in labels["by_emotion"].items():
            table.add_row(emotion, ", ".join(f"{name.replace('_', ' ')} ({n})" for name, n in counts))
        out_console.print(table)
