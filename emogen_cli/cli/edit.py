"""`emogen edit`, `intensity`, `grid --va` and `best-of`: beyond the paper.

Usage examples:
    emogen edit photo.jpg --emotion awe --strength 0.5
    emogen edit photos/ --emotion fear --prompt "{} a street" --until-confident 0.6 --min-ssim 0.4
    emogen edit photo.jpg --va 0.8,0.3 --intensity 1.5
    emogen intensity --emotion awe --intensity 0,0.5,1,1.5 -n 2
    emogen grid --va
    emogen best-of --emotion awe -k 8 -n 4 --keep-all
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from emogen_cli.cli._utils import (
    ConfigOpt, DeviceOpt, JsonOpt, ModelOpt, PrecisionOpt, RichReporter, SeedOpt, emit, out_console, overrides,
)

MapperOpt = Annotated[Path | None, typer.Option("--mapper", "-m", help="Mapper bundle (generate.mapper).", show_default=False)]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder.", show_default=False)]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Denoising steps (generate.steps).", show_default=False)]
GuidanceOpt = Annotated[float | None, typer.Option("--guidance", help="Classifier-free guidance scale (generate.guidance).",
                                                   show_default=False)]
PromptOpt = Annotated[str, typer.Option("--prompt", "-p", help="Template with {} for the emotion, e.g. '{} a street'.")]
ProbeOpt = Annotated[Path | None, typer.Option("--probe", help="CLIP emotion probe (default: the mapper bundle's "
                                               "emotion_probe.safetensors).", show_default=False)]
SigmaOpt = Annotated[float | None, typer.Option("--sigma", help="Width of the valence-arousal kernel (0.15).",
                                                show_default=False)]


def _config(o: dict[str, Any]):
    from emogen_cli.config import load_config

    return load_config(o["config"], overrides(
        generate__steps=o.get("steps"), generate__guidance=o.get("guidance"), model__pretrained=o.get("model"),
        runtime__device=o.get("device"), runtime__mixed_precision=o.get("mixed_precision"), runtime__seed=o.get("seed")))


def edit(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.", show_default=False)],
    emotion: Annotated[str | None, typer.Option("--emotion", "-e", help="Target emotion.", show_default=False)] = None,
    va: Annotated[str | None, typer.Option("--va", help="Target valence,arousal in [0, 1] instead of --emotion, "
                                           "e.g. 0.8,0.3.", show_default=False)] = None,
    strength: Annotated[float, typer.Option("--strength", "-s", help="How much to change: 0 keeps the image, "
                                            "1 regenerates it.", min=0.0, max=1.0)] = 0.5,
    prompt: PromptOpt = "{}",
    intensity: Annotated[float, typer.Option("--intensity", help="Emotion strength: 0 none, 1 EmoGen's, >1 stronger.",
                                             min=0.0)] = 1.0,
    until_confident: Annotated[float | None, typer.Option("--until-confident", help="Raise the strength until the "
                                                          "emotion probe gives the target this probability.",
                                                          show_default=False)] = None,
    min_ssim: Annotated[float, typer.Option("--min-ssim", help="With --until-confident: stop before the SSIM to the "
                                            "source falls below this.")] = 0.5,
    strength_step: Annotated[float, typer.Option("--strength-step", help="With --until-confident: strength increment.")] = 0.1,
    best_of: Annotated[int, typer.Option("--best-of", "-k", help="Edit K times (seeds S..S+K-1), keep the one the "
                                         "probe rates highest.", min=1)] = 1,
    keep_all: Annotated[bool, typer.Option("--keep-all", help="With --best-of: keep the others in rejected/.")] = False,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Refuse larger images (width x height).")] = 2048 * 2048,
    sigma: SigmaOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    probe: ProbeOpt = None,
    mapper: MapperOpt = None,
    out: OutOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    mixed_precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Edit photographs toward an emotion (img2img with the mapped emotion token); keeps their size."""
    from emogen_cli.edit import edit as run
    from emogen_cli.va import parse_point

    cfg = _config(locals())
    with RichReporter() as reporter:
        result = run(cfg, images, out, emotion, parse_point(va) if va else None, sigma, prompt, mapper, reporter,
                     strength=strength, steps=steps, guidance=guidance, intensity=intensity, until=until_confident,
                     min_ssim=min_ssim, strength_step=strength_step, best_of=best_of, keep_all=keep_all,
                     max_pixels=max_pixels, probe=probe)
    emit(result, json_, _render_edit)


def _render_edit(result: dict) -> None:
    from rich.table import Table

    table = Table(title=f"Edited {result['count']} image(s) toward {result.get('label')} into {result['out']}",
                  title_justify="left")
    for column in ("source", "strength", "SSIM", "p(target) before", "after", "stop"):
        table.add_column(column, justify="left" if column == "source" else "right")

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for e in result["edited"]:
        table.add_row(e["source"], f"{e['strength']:.2f}", fmt(e["ssim"]), fmt(e["p_target_before"]),
                      fmt(e["p_target_after"]), e["stop"] or "-")
    out_console.print(table)
    if result["skipped"]:
        out_console.print(f"[yellow]Skipped {len(result['skipped'])} input(s):[/yellow]")
        for s in result["skipped"]:
            out_console.print(f"  {s['path']}: {s['reason']}")


def intensity(
    emotion: Annotated[str, typer.Option("--emotion", "-e", help="Emotion name.")],
    intensity: Annotated[str, typer.Option("--intensity", help="Comma-separated strengths: 0 none, 1 EmoGen's, "
                                           ">1 stronger.")] = "0,0.5,1,1.5",
    num_images: Annotated[int, typer.Option("--num-images", "-n", help="Strips (one per seed).", min=1)] = 1,
    prompt: PromptOpt = "{}",
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    mapper: MapperOpt = None,
    out: OutOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    mixed_precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Generate an emotion at several strengths, one strip per seed (generate --intensity)."""
    from emogen_cli.intensity import intensity as run
    from emogen_cli.intensity import parse_intensities

    alphas = parse_intensities(intensity)
    cfg = _config(locals())
    with RichReporter() as reporter:
        result = run(cfg, emotion, alphas, prompt, num_images, out, mapper, reporter)
    emit(result, json_, lambda r: out_console.print(f"Wrote {r['count']} images and {len(r['strips'])} strip(s) "
                                                    f"to {r['out']}"))


def _floats(text: str | None, name: str) -> tuple[float, ...] | None:
    from emogen_cli.errors import EmogenError

    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise EmogenError(f"--{name} must be numbers separated by commas, got '{text}'.") from None


def grid(
    va: Annotated[bool, typer.Option("--va", help="A valence x arousal contact sheet (the only grid for now).")] = False,
    valence: Annotated[str | None, typer.Option("--valence", help="Valence columns (default 0.1,0.3,0.5,0.7,0.9).",
                                                show_default=False)] = None,
    arousal: Annotated[str | None, typer.Option("--arousal", help="Arousal rows (default 0.1,0.3,0.5,0.7,0.9).",
                                                show_default=False)] = None,
    sigma: SigmaOpt = None,
    prompt: PromptOpt = "{}",
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    mapper: MapperOpt = None,
    out: OutOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    mixed_precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Contact sheets; --va: valence (left to right) x arousal (bottom to top) by mixing the emotions."""
    from emogen_cli.errors import EmogenError
    from emogen_cli.va import DEFAULT_SIGMA, GRID
    from emogen_cli.va import grid as run

    if not va:
        raise EmogenError("Choose the grid to draw.", "For example: emogen grid --va.")
    cfg = _config(locals())
    with RichReporter() as reporter:
        result = run(cfg, out, _floats(valence, "valence") or GRID, _floats(arousal, "arousal") or GRID,
                     DEFAULT_SIGMA if sigma is None else sigma, prompt, mapper, reporter)
    emit(result, json_, lambda r: out_console.print(f"Wrote {r['count']} images and the sheet {r['sheet']}"))


def best_of(
    emotion: Annotated[str, typer.Option("--emotion", "-e", help="Emotion name, a comma-separated list, or 'all'.")] = "all",
    k: Annotated[int, typer.Option("--best-of", "-k", help="Candidates per kept image.", min=1)] = 4,
    num_images: Annotated[int, typer.Option("--num-images", "-n", help="Kept images per emotion.", min=1)] = 1,
    keep_all: Annotated[bool, typer.Option("--keep-all", help="Keep the rejected candidates in rejected/.")] = False,
    prompt: PromptOpt = "{}",
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    probe: ProbeOpt = None,
    mapper: MapperOpt = None,
    out: OutOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    mixed_precision: PrecisionOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Generate K candidates per image and keep those the emotion probe rates highest (generate --best-of)."""
    from emogen_cli.bestof import generate_best_of as run
    from emogen_cli.emotions import parse_emotions
    from emogen_cli.generate import Request

    template = prompt if "{}" in prompt else "{} " + prompt
    requests = [Request((e,), template, num_images) for e in parse_emotions([emotion])]
    cfg = _config(locals())
    with RichReporter() as reporter:
        result = run(cfg, requests, k, out, keep_all, mapper, probe, reporter)
    emit(result, json_, lambda r: out_console.print(f"Kept {r['count']} best-of-{r['k']} images in {r['out']}"
                                                    + (f" ({r['rejected']} rejected in rejected/)" if r["rejected"] else "")))


def register(app: typer.Typer) -> None:
    """Add this file's commands to the `emogen` app (one line in cli/__init__.py)."""
    app.command(name="edit")(edit)
    app.command(name="intensity")(intensity)
    app.command(name="grid")(grid)
    app.command(name="best-of")(best_of)
