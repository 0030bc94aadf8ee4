"""`emogen edit` and `grid --va`: beyond the paper (generate's --intensity, --best-of and --va are in infer.py).

Usage examples:
    emogen edit photo.jpg --emotion awe --strength 0.5
    emogen edit photos/ --emotion fear --prompt "{} a street" --until-confident 0.6 --min-ssim 0.4
    emogen edit photo.jpg --va 0.8,0.3 --intensity 1.5
    emogen grid --va
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emogen_cli.cli._utils import (
    GuidanceOpt,
    MapperOpt,
    ModelOpt,
    RichReporter,
    StepsOpt,
    StrictOpt,
    command,
    emit,
    out_console,
    plural,
    runtime_options,
    say,
)
from emogen_cli.core.config import Config

OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder.", show_default=False)]
PromptOpt = Annotated[str, typer.Option("--prompt", "-p", help="Template with {} for the emotion, e.g. '{} a street'.")]
ProbeOpt = Annotated[Path | None, typer.Option("--probe", help="CLIP emotion probe (default: the mapper bundle's "
                                               "emotion_probe.safetensors).", show_default=False)]
SigmaOpt = Annotated[float | None, typer.Option("--sigma", help="Width of the valence-arousal kernel (0.15).",
                                                show_default=False)]


def edit_options(sigma: SigmaOpt = None, steps: StepsOpt = None, guidance: GuidanceOpt = None,
                 mapper: MapperOpt = None, out: OutOpt = None, model: ModelOpt = None,
                 strict: StrictOpt = None) -> None:
    """Option group (see `command`): what edit and grid share besides `runtime_options`."""


def _default_out(name: str):
    """The command's output folder for the writability check: --out, else runs/<name> beside generate.output."""
    return lambda params, cfg: params["out"] or Path(cfg.generate.output).parent / name


@command(examples="""
emogen edit photo.jpg --emotion awe --strength 0.5 --out runs/edits
emogen edit photos/ --emotion fear --prompt "{} a street" --until-confident 0.6 --min-ssim 0.4
emogen edit photo.jpg --va 0.8,0.3 --intensity 1.5
emogen edit photo.jpg --emotion sadness --best-of 4 --keep-all --json
""", writes=[_default_out("edits")], options=[edit_options, runtime_options])
def edit(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.", show_default=False)],
    emotion: Annotated[str | None, typer.Option("--emotion", "-e", help="Target emotion.", show_default=False)] = None,
    va: Annotated[str | None, typer.Option("--va", help="Target valence,arousal in [0, 1] instead of --emotion, "
                                           "e.g. 0.8,0.3.", show_default=False)] = None,
    strength: Annotated[float, typer.Option("--strength", "-s", help="How much to change: 0 keeps the image, "
                                            "1 regenerates it.", min=0.0, max=1.0)] = 0.5,
    prompt: PromptOpt = "{}",
    intensity: Annotated[float, typer.Option("--intensity", help="Emotion strength: 0 none, 1 EmoGen's, >1 stronger.",
                                             min=0.0, max=4.0)] = 1.0,
    until_confident: Annotated[float | None, typer.Option("--until-confident", help="Raise the strength until the "
                                                          "emotion probe gives the target this probability.",
                                                          show_default=False)] = None,
    min_ssim: Annotated[float | None, typer.Option("--min-ssim", help="With --until-confident: stop before the SSIM "
                                                   "to the source falls below this. [default: 0.5]",
                                                   show_default=False)] = None,
    strength_step: Annotated[float | None, typer.Option("--strength-step", help="With --until-confident: strength "
                                                        "increment. [default: 0.1]", show_default=False)] = None,
    best_of: Annotated[int, typer.Option("--best-of", "-k", help="Edit K times (seeds S..S+K-1), keep the one the "
                                         "probe rates highest.", min=1)] = 1,
    keep_all: Annotated[bool, typer.Option("--keep-all", help="With --best-of: keep the others in rejected/.")] = False,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Refuse larger images (width x height).")] = 4194304,
    probe: ProbeOpt = None,
    *,
    sigma: float | None,
    out: Path | None,
    json_: bool,
    cfg: Config,
) -> None:
    """Edit photographs toward an emotion (img2img with the mapped emotion token); keeps their size."""
    from emogen_cli.inference.edit import edit as run
    from emogen_cli.inference.va import parse_point

    loop = {name: value for name, value in (("min_ssim", min_ssim), ("strength_step", strength_step))
            if value is not None}
    if loop and until_confident is None:
        from emogen_cli.core.errors import EmogenError

        flags = " and ".join("--" + name.replace("_", "-") for name in loop)
        raise EmogenError(f"{flags} only tune the --until-confident loop.", "Add --until-confident P, or drop them.")
    point = parse_point(va) if va else None
    with RichReporter() as reporter:
        result = run(cfg, images, out, emotion, point, sigma, prompt, None, reporter, strength=strength,
                     intensity=intensity, until=until_confident, best_of=best_of, keep_all=keep_all,
                     max_pixels=max_pixels, probe=probe, **loop)
    emit(result, json_, _render_edit)


def _render_edit(result: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"Edited {plural(result['count'], 'image')} toward {result.get('label')} into "
                               f"{result['out']}"), title_justify="left")
    for column in ("source", "strength", "SSIM", "p(target) before", "after", "stop"):
        table.add_column(column, justify="left" if column == "source" else "right")

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for e in result["edited"]:
        table.add_row(escape(e["source"]), f"{e['strength']:.2f}", fmt(e["ssim"]), fmt(e["p_target_before"]),
                      fmt(e["p_target_after"]), e["stop"] or "-")
    out_console.print(table)
    if result["skipped"]:
        say(f"Skipped {plural(len(result['skipped']), 'input')}:")
        for s in result["skipped"]:
            say(f"  {s['path']}: {s['reason']}")


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    from emogen_cli.core.validate import numbers

    return None if text is None else tuple(numbers(text, option))


@command(examples="""
emogen grid --va
emogen grid --va --valence 0.1,0.5,0.9 --arousal 0.3,0.8 --sigma 0.1 --prompt "{} a house"
""", writes=[_default_out("va-grid")], options=[edit_options, runtime_options])
def grid(
    va: Annotated[bool, typer.Option("--va", help="A valence x arousal contact sheet (the only grid for now).")] = False,
    valence: Annotated[str | None, typer.Option("--valence", help="Valence columns (default 0.1,0.3,0.5,0.7,0.9).",
                                                show_default=False)] = None,
    arousal: Annotated[str | None, typer.Option("--arousal", help="Arousal rows (default 0.1,0.3,0.5,0.7,0.9).",
                                                show_default=False)] = None,
    prompt: PromptOpt = "{}",
    *,
    sigma: float | None,
    out: Path | None,
    json_: bool,
    cfg: Config,
) -> None:
    """Contact sheets; --va: valence (left to right) x arousal (bottom to top) by mixing the emotions."""
    from emogen_cli.core.errors import EmogenError
    from emogen_cli.inference.va import DEFAULT_SIGMA, GRID
    from emogen_cli.inference.va import grid as run

    if not va:
        raise EmogenError("Choose the grid to draw.", "For example: emogen grid --va.")
    with RichReporter() as reporter:
        result = run(cfg, out, _floats(valence, "--valence") or GRID, _floats(arousal, "--arousal") or GRID,
                     DEFAULT_SIGMA if sigma is None else sigma, prompt, None, reporter)
    emit(result, json_, lambda r: say(f"Wrote {plural(r['count'], 'image')} and the sheet {r['sheet']}"))


def register(app: typer.Typer) -> None:
    """Add this file's commands to the `emogen` app (one line in cli/__init__.py)."""
    from emogen_cli.cli._utils import epilog

    for name, fn in (("edit", edit), ("grid", grid)):
        app.command(name=name, epilog=epilog(fn))(fn)
