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
from typing import Annotated

import typer

from emogen_cli.core.choices import FUSION_MODES, MAX_IMAGES
from emogen_cli.cli._utils import (
    ClipOpt, ConfigOpt, DeviceOpt, JsonOpt, ModelOpt, OverwriteOpt, PrecisionOpt, ResolutionOpt, RichReporter, SeedOpt,
    command, emit, opt, out_console, plural, say,
)
from emogen_cli.core.config import Config

MapperOpt = Annotated[Path | None, opt("--mapper", "-m", key="generate.mapper", help="Mapper bundle folder.")]
OutOpt = Annotated[Path | None, opt("--out", "-o", key="generate.output", help="Output folder.")]
CountOpt = Annotated[int, typer.Option("--num-images", "-n", help="Images per emotion (and prompt).", min=1,
                                       max=MAX_IMAGES)]
StepsOpt = Annotated[int | None, opt("--steps", key="generate.steps", help="Denoising steps.")]
GuidanceOpt = Annotated[float | None, opt("--guidance", key="generate.guidance",
                                          help="Classifier-free guidance scale (0 or more; 1 or less turns it off).")]
SchedulerOpt = Annotated[str | None, opt("--scheduler", key="generate.scheduler", help="Sampler.")]
SizeOpt = Annotated[int | None, opt("--size", key="model.resolution", hidden=True, help="Alias of --resolution.")]
BatchOpt = Annotated[int | None, opt("--batch-size", key="generate.batch_size", help="Images per denoising batch.")]
BaselineOpt = Annotated[bool, typer.Option("--baseline", help="Plain SD with 'a photo that evokes {emotion}', same code path.")]
EmotionOpt = Annotated[str, typer.Option("--emotion", "-e", help="Emotion name, a comma-separated list, or 'all'.")]


def _run(requests: list, cfg: Config, baseline: bool, overwrite: bool, json_: bool) -> None:
    """Generate `requests` with the command's Config; print the result."""
    from emogen_cli.inference.writer import generate as run

    with RichReporter() as reporter:
        result = run(cfg, requests, overwrite=overwrite, baseline=baseline, reporter=reporter)
    emit(result, json_, lambda r: say(f"Wrote {plural(r['count'], 'image')} to {r['out']} (index.jsonl, grid-*.png)"))


@command(examples="""
emogen generate --emotion awe -n 8 --mapper runs/mapper --out runs/awe
emogen generate -e amusement,fear --steps 30 --scheduler ddim --seed 7
emogen generate --emotion all --baseline --json
accelerate launch -m emogen_cli generate --emotion all -n 1000
""", writes=["generate.output"])
def generate(
    emotion: EmotionOpt = "all",
    num_images: CountOpt = 4,
    mapper: MapperOpt = None,
    out: OutOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    scheduler: SchedulerOpt = None,
    resolution: ResolutionOpt = None,
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
    *,
    cfg: Config,
) -> None:
    """Generate images that evoke an emotion."""
    from emogen_cli.core.emotions import parse_emotions
    from emogen_cli.pipeline import Request

    requests = [Request((e,), "{}", num_images) for e in parse_emotions([emotion])]
    _run(requests, cfg, baseline, overwrite, json_)


@command(examples="""
emogen transfer --emotion fear "a cup"
emogen transfer -e awe,sadness --template "{} street at night" --template "a {} bag"
emogen transfer -e all --prompt-file prompts.txt -n 2
""", writes=["generate.output"])
def transfer(
    prompts: Annotated[list[str] | None, typer.Argument(help="Neutral content, e.g. 'a cup' or '{} street'.", show_default=False)] = None,
    emotion: EmotionOpt = "all",
    template: Annotated[list[str] | None, typer.Option("--template", "-t", help="Template with {} for the emotion, e.g. "
                                                       "'{} bag' ({{ and }} for literal braces).", show_default=False)] = None,
    prompt_file: Annotated[Path | None, typer.Option("--prompt-file", help="One prompt per line.", show_default=False)] = None,
    num_images: CountOpt = 4,
    mapper: MapperOpt = None,
    out: OutOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    scheduler: SchedulerOpt = None,
    resolution: ResolutionOpt = None,
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
    *,
    cfg: Config,
) -> None:
    """Put an emotion onto neutral objects or scenes ('{} cup'; text without {} gets the emotion in front)."""
    from emogen_cli.core import validate
    from emogen_cli.core.emotions import parse_emotions
    from emogen_cli.core.errors import EmogenError
    from emogen_cli.pipeline import Request

    texts = [(t, "Prompt") for t in prompts or []] + [(t, "--template") for t in template or []]
    if prompt_file is not None:
        if not prompt_file.is_file():
            raise EmogenError(f"Prompt file '{prompt_file}' does not exist.", "Pass an existing text file to --prompt-file.")
        try:
            lines = prompt_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise EmogenError(f"Cannot read the prompt file '{prompt_file}' ({exc}).",
                              "Pass a UTF-8 text file with one prompt per line.") from None
        texts += [(line.strip(), f"Line {i} of '{prompt_file}'") for i, line in enumerate(lines, 1) if line.strip()]
    if not texts:
        raise EmogenError("No prompt given.", "Pass one like 'a cup', or --template '{} bag', or --prompt-file FILE.")
    templates = [validate.template(text, where) for text, where in texts]
    requests = [Request((e,), t, num_images) for e in parse_emotions([emotion]) for t in templates]
    _run(requests, cfg, baseline, overwrite, json_)


@command(examples="""
emogen fuse amusement fear
emogen fuse amusement fear --mode embedding --weights 0.7,0.3
emogen fuse awe contentment --prompt "{} lake at dawn" -n 8
""", writes=["generate.output"])
def fuse(
    emotions: Annotated[list[str], typer.Argument(help="Two or more emotions, e.g. amusement fear.", show_default=False)],
    mode: Annotated[str, typer.Option("--mode", help="tokens: one token per emotion, side by side (the paper's); "
                                      "embedding / space: one token, weighted mix of mapped embeddings / emotion "
                                      f"vectors. One of: {', '.join(FUSION_MODES)}.",
                                      autocompletion=lambda incomplete: [m for m in FUSION_MODES
                                                                          if m.startswith(incomplete)])] = "tokens",
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="Mixing weights for embedding/space, "
                                                "e.g. 0.7,0.3 (normalised; default equal).", show_default=False)] = None,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Template with {} for the emotions, e.g. '{} street'.")] = "{}",
    num_images: CountOpt = 4,
    mapper: MapperOpt = None,
    out: OutOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    scheduler: SchedulerOpt = None,
    resolution: ResolutionOpt = None,
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
    *,
    cfg: Config,
) -> None:
    """Blend two or more emotions in one image."""
    from emogen_cli.core import validate
    from emogen_cli.core.emotions import validate_emotion
    from emogen_cli.pipeline import fusion_request

    names = [validate_emotion(part) for e in emotions for part in e.split(",") if part.strip()]
    values = validate.numbers(weights, "--weights") if weights is not None else None
    request = fusion_request(names, values, mode, validate.template(prompt, "--prompt"), num_images)
    _run([request], cfg, baseline, overwrite, json_)


@command(examples="""
emogen decompose awe --mapper runs/mapper --top 6
emogen decompose all --attributes my_attributes.txt --json
emogen decompose --images runs/awe
""", writes=["images"])
def decompose(
    emotion: Annotated[str | None, typer.Argument(help="Emotion name, a comma-separated list, or 'all'.",
                                                  show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", "-k", help="How many attributes to list per emotion.", min=1)] = 6,
    attributes: Annotated[Path | None, typer.Option("--attributes", help="Attribute names to rank: one per line, or a "
                                                    "JSON list (default: the mapper bundle's).", show_default=False)] = None,
    images: Annotated[Path | None, typer.Option("--images", help="Also label every image in this folder with its "
                                                "best-matching attribute (written to attribute_labels.jsonl).",
                                                show_default=False)] = None,
    samples: Annotated[int, typer.Option("--samples", help="Emotion-space samples averaged per emotion.", min=1,
                                         max=100_000)] = 64,
    mapper: MapperOpt = None,
    model: ModelOpt = None,
    clip: ClipOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    *,
    cfg: Config,
) -> None:
    """List the semantics (EmoSet objects and scenes) an emotion is made of."""
    from emogen_cli.evaluation.decompose import decompose as run
    from emogen_cli.core.emotions import parse_emotions

    with RichReporter() as reporter:
        result = run(cfg, parse_emotions([emotion]) if emotion else [], top, attributes, images, samples, None,
                     reporter)
    emit(result, json_, _render_decomposition)


def _render_decomposition(result: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    for entry in result.get("emotions", []):
        table = Table(title=escape(f"{entry['emotion']}: closest of {result['attributes']} attributes "
                                   f"({entry['samples']} samples)"), title_justify="left")
        for column in ("#", "attribute", "similarity", "confidence"):
            table.add_column(column, justify="left" if column == "attribute" else "right")
        for a in entry["attributes"]:
            c = "-" if a["confidence"] is None else f"{a['confidence']:.3f}"
            table.add_row(str(a["rank"]), escape(a["name"].replace("_", " ")), f"{a['similarity']:.4f}", c)
        out_console.print(table)
    if labels := result.get("labels"):
        table = Table(title=f"Labelled {plural(labels['count'], 'image')}", caption=escape(f"written to {labels['file']}"),
                      title_justify="left", caption_justify="left")
        table.add_column("emotion")
        table.add_column("most frequent attributes")
        for emotion, counts in labels["by_emotion"].items():
            table.add_row(escape(emotion), escape(", ".join(f"{name.replace('_', ' ')} ({n})" for name, n in counts)))
        out_console.print(table)
