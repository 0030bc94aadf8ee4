"""`emogen generate`, `transfer`, `fuse` and `decompose`.

Usage examples:
    emogen generate --emotion awe -n 8
    emogen transfer --emotion fear "a cup"
    emogen fuse amusement fear
    emogen decompose awe --top 6
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emogen_cli.cli._utils import (
    ConfigOpt, DeviceOpt, JsonOpt, ModelOpt, OverwriteOpt, PrecisionOpt, RichReporter, SeedOpt, emit, out_console,
    overrides,
)


def _pending(command: str) -> None:
    from emogen_cli.errors import NotYetAvailable

    raise NotYetAvailable(f"`emogen {command}` is not available yet (tracked in issue 4).",
                          "It needs a stage-2 mapper bundle from `emogen train-mapper`.")


MapperOpt = Annotated[Path | None, typer.Option("--mapper", "-m", help="Mapper bundle (generate.mapper).", show_default=False)]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (generate.output).", show_default=False)]
CountOpt = Annotated[int, typer.Option("--num-images", "-n", help="Images per emotion (and prompt).", min=1)]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Denoising steps (50).", show_default=False)]
GuidanceOpt = Annotated[float | None, typer.Option("--guidance", help="Classifier-free guidance scale (7.5).", show_default=False)]
SchedulerOpt = Annotated[str | None, typer.Option("--scheduler", help="unipc, ddim, euler, dpm or pndm.", show_default=False)]
SizeOpt = Annotated[int | None, typer.Option("--size", help="Image size in pixels (512).", show_default=False)]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Images per denoising batch.", show_default=False)]
BaselineOpt = Annotated[bool, typer.Option("--baseline", help="Plain SD with 'a photo that evokes {emotion}', same code path.")]


def _run(requests, out, mapper, overwrite, baseline, json_, **values) -> None:
    from emogen_cli.config import load_config
    from emogen_cli.generate import generate as run

    cfg = load_config(values.pop("config"), overrides(**values))
    with RichReporter() as reporter:
        result = run(cfg, requests, out=out, mapper=mapper, overwrite=overwrite, baseline=baseline, reporter=reporter)
    emit(result, json_, lambda r: out_console.print(f"Wrote {r['count']} images to {r['out']} (index.jsonl, grid-*.png)"))


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

    requests = [Request(e, "{}", num_images) for e in parse_emotions([emotion])]
    _run(requests, out, mapper, overwrite, baseline, json_, config=config, generate__steps=steps,
         generate__guidance=guidance, generate__scheduler=scheduler, model__resolution=size,
         generate__batch_size=batch_size, model__pretrained=model, runtime__device=device,
         runtime__mixed_precision=mixed_precision, runtime__seed=seed)


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
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = None,
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
    requests = [Request(e, t, num_images) for e in parse_emotions([emotion]) for t in templates]
    _run(requests, out, mapper, overwrite, baseline, json_, config=config, generate__steps=steps,
         generate__guidance=guidance, generate__scheduler=scheduler, model__resolution=size,
         generate__batch_size=batch_size, runtime__device=device, runtime__seed=seed)


def fuse(
    emotions: Annotated[list[str] | None, typer.Argument(help="Two or more emotions.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Blend two or more emotions in one image."""
    _pending("fuse")


def decompose(
    emotion: Annotated[str | None, typer.Argument(help="Emotion to decompose.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List the semantics (EmoSet objects and scenes) an emotion is made of."""
    _pending("decompose")
