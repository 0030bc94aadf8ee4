"""`emogen edit` and `grid va`: beyond the paper (generate's --intensity, --best-of and --va are in infer.py).

Usage examples:
    emogen edit photo.jpg --emotion awe --strength 0.5
    emogen edit photos/ --emotion fear --prompt "{} a street" --until-confident 0.6 --min-ssim 0.4
    emogen edit photo.jpg --va 0.8,0.3 --intensity 1.5
    emogen grid va
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emogen_cli.cli._utils import RichReporter, command, emit, out_console, plural, say
from emogen_cli.cli.options import (
    BestOfOpt,
    EditOutOpt,
    EmotionOpt,
    FamilyOpt,
    GridOutOpt,
    GuidanceOpt,
    IntensityOpt,
    KeepAllOpt,
    MapperOpt,
    ModelOpt,
    ProbeOpt,
    PromptOpt,
    SigmaOpt,
    StepsOpt,
    StrictOpt,
    VaOpt,
    precision_options,
    runtime_options,
)
from emogen_cli.core.config import Config


def edit_options(sigma: SigmaOpt = None, steps: StepsOpt = None, guidance: GuidanceOpt = None,
                 mapper: MapperOpt = None, model: ModelOpt = None, family: FamilyOpt = None,
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
""", writes=[_default_out("edits")], options=[edit_options, precision_options, runtime_options])
def edit(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.", show_default=False)],
    emotion: EmotionOpt = None,
    va: VaOpt = None,
    strength: Annotated[float, typer.Option("--strength", "-s", help="How much to change: 0 keeps the image, "
                                            "1 regenerates it.", min=0.0, max=1.0)] = 0.5,
    prompt: PromptOpt = "{}",
    intensity: IntensityOpt = None,
    until_confident: Annotated[float | None, typer.Option("--until-confident", help="Raise the strength until the "
                                                          "emotion probe gives the target this probability.",
                                                          show_default=False)] = None,
    min_ssim: Annotated[float | None, typer.Option("--min-ssim", help="With --until-confident: stop before the SSIM "
                                                   "to the source falls below this. [default: 0.5]",
                                                   show_default=False)] = None,
    strength_step: Annotated[float | None, typer.Option("--strength-step", help="With --until-confident: strength "
                                                        "increment. [default: 0.1]", show_default=False)] = None,
    best_of: BestOfOpt = None,
    keep_all: KeepAllOpt = False,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Refuse larger images (width x height).")] = 4194304,
    probe: ProbeOpt = None,
    out: EditOutOpt = None,
    *,
    sigma: float | None,
    json_: bool,
    cfg: Config,
) -> None:
    """Edit photographs toward an emotion (img2img with the mapped emotion token); keeps their size."""
    from emogen_cli.conditioning.intensity import parse_intensities
    from emogen_cli.conditioning.selection import check_best_of
    from emogen_cli.conditioning.va import parse_point
    from emogen_cli.outputs.edit import edit as run

    alphas = parse_intensities(intensity) if intensity is not None else [1.0]
    if len(alphas) != 1:
        from emogen_cli.core.errors import EmogenError

        raise EmogenError(f"edit takes one --intensity, got '{intensity}'.",
                          "Run edit once per strength, e.g. --intensity 1.5.")
    check_best_of(cfg.generate.best_of, keep_all)  # before models load
    # an explicit --probe goes to the core, whose check refuses one without a use; a config file's only when used
    if probe is None and (until_confident is not None or cfg.generate.best_of > 1):
        probe = cfg.evaluate.probe
    loop = {name: value for name, value in (("min_ssim", min_ssim), ("strength_step", strength_step))
            if value is not None}
    if loop and until_confident is None:
        from emogen_cli.core.errors import EmogenError

        flags = " and ".join("--" + name.replace("_", "-") for name in loop)
        raise EmogenError(f"{flags} only tune the --until-confident loop.", "Add --until-confident P, or drop them.")
    point = parse_point(va) if va else None
    with RichReporter() as reporter:
        result = run(cfg, images, out, emotion, point, sigma, prompt, None, reporter, strength=strength,
                     intensity=alphas[0], until=until_confident, best_of=cfg.generate.best_of,
                     keep_all=keep_all, max_pixels=max_pixels,
                     probe=probe, **loop)
    emit(edit_result(result), json_, _render_edit)


def edit_result(result: dict) -> dict:
    """The core's edit result in the one shape of image-writing commands (docs/json.md): each written image is
    `{"path", <its PNG metadata>}` plus the edit's own fields (source, strength, ssim, p_target_before/after,
    stop, attempts); `edited[].output` is that image's `path`."""
    rest = {k: v for k, v in result.items() if k not in ("images", "edited")}
    images = [{**record, **{k: v for k, v in edited.items() if k != "output"}, "path": edited["output"]}
              for record, edited in zip(result["images"], result["edited"], strict=True)]
    return {"out": rest.pop("out"), "count": rest.pop("count"), "images": images, **rest}


def _render_edit(result: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"Edited {plural(result['count'], 'image')} toward {result.get('label')} into "
                               f"{result['out']}"), title_justify="left")
    for column in ("source", "strength", "SSIM", "p(target) before", "after", "stop"):
        table.add_column(column, justify="left" if column == "source" else "right")

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for e in result["images"]:
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
emogen grid va
emogen grid va --valence 0.1,0.5,0.9 --arousal 0.3,0.8 --sigma 0.1 --prompt "{} a house"
""", writes=[_default_out("va-grid")], options=[edit_options, precision_options, runtime_options])
def grid(
    kind: Annotated[str, typer.Argument(metavar="KIND", help="The contact sheet to draw: va, valence (left to right) x arousal "
                                        "(bottom to top), the only one for now.")] = "va",
    valence: Annotated[str | None, typer.Option("--valence", help="Valence columns (default 0.1,0.3,0.5,0.7,0.9).",
                                                show_default=False)] = None,
    arousal: Annotated[str | None, typer.Option("--arousal", help="Arousal rows (default 0.1,0.3,0.5,0.7,0.9).",
                                                show_default=False)] = None,
    prompt: PromptOpt = "{}",
    out: GridOutOpt = None,
    *,
    sigma: float | None,
    json_: bool,
    cfg: Config,
) -> None:
    """Contact sheets; va: valence (left to right) x arousal (bottom to top) by mixing the emotions."""
    from emogen_cli.core.errors import EmogenError
    from emogen_cli.conditioning.va import DEFAULT_SIGMA, GRID
    from emogen_cli.outputs.generate import grid as run

    if kind != "va":
        raise EmogenError(f"Unknown grid '{kind}'.", "The grid there is: emogen grid va.")
    with RichReporter() as reporter:
        result = run(cfg, out, _floats(valence, "--valence") or GRID, _floats(arousal, "--arousal") or GRID,
                     DEFAULT_SIGMA if sigma is None else sigma, prompt, None, reporter)
    emit(result, json_, lambda r: say(f"Wrote {plural(r['count'], 'image')} and the sheet {r['sheet']}"))


def register(app: typer.Typer) -> None:
    """Add this file's commands to the `emogen` app (one line in cli/__init__.py)."""
    from emogen_cli.cli._utils import Command, epilog

    for name, fn in (("edit", edit), ("grid", grid)):
        app.command(name=name, cls=Command, epilog=epilog(fn))(fn)
