"""`emogen evaluate`: FID, LPIPS, Emo-A, Sem-C and Sem-D over generated images.

Usage examples:
    emogen evaluate runs/awe
    emogen evaluate runs/generated --reference runs/prepared --metrics fid,emo-a
    emogen evaluate runs/generated --emotion-classifier encoder --encoder runs/encoder
    emogen evaluate runs/generated --scene-model resnet50_places365.pth.tar --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emogen_cli.cli._utils import (
    ClipOpt, ConfigOpt, DeviceOpt, JsonOpt, OverwriteOpt, RichReporter, SeedOpt, emit, out_console, overrides,
)


def evaluate(
    folder: Annotated[Path, typer.Argument(help="Folder of generated images (grouped by PNG metadata or sub-folder).",
                                           show_default=False)],
    reference: Annotated[Path | None, typer.Option("--reference", "-r", help="FID reference: a prepared folder or a "
                                                   "folder of real images (evaluate.reference).", show_default=False)] = None,
    metrics: Annotated[str | None, typer.Option("--metrics", help="Comma-separated subset of fid, lpips, emo-a, sem-c, "
                                                "sem-d (default: all that are available).", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report folder (default: FOLDER/evaluation).",
                                             show_default=False)] = None,
    fid_features: Annotated[str | None, typer.Option("--fid-features", help="auto, inception or clip.",
                                                     show_default=False)] = None,
    emotion_classifier: Annotated[str | None, typer.Option("--emotion-classifier", help="Emo-A classifier: clip "
                                                           "(CLIP-space probe) or encoder (stage 1).",
                                                           show_default=False)] = None,
    probe: Annotated[Path | None, typer.Option("--probe", help="CLIP emotion probe (.safetensors or the official .pth).",
                                               show_default=False)] = None,
    mapper: Annotated[Path | None, typer.Option("--mapper", "-m", help="Mapper bundle (for its probe and CLIP model).",
                                                show_default=False)] = None,
    encoder: Annotated[Path | None, typer.Option("--encoder", help="Stage-1 encoder for --emotion-classifier encoder.",
                                                 show_default=False)] = None,
    object_model: Annotated[str | None, typer.Option("--object-model", help="ImageNet classifier for Sem-C.",
                                                     show_default=False)] = None,
    scene_model: Annotated[str | None, typer.Option("--scene-model", help="Places365 classifier for Sem-C.",
                                                    show_default=False)] = None,
    pairs: Annotated[int | None, typer.Option("--pairs", help="Random pairs per emotion for LPIPS and Sem-D.",
                                              show_default=False)] = None,
    clip: ClipOpt = None,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Compute the paper's five metrics over a folder of generated images."""
    from emogen_cli.config import load_config
    from emogen_cli.evaluate import evaluate as run

    chosen = [m.strip().lower() for m in metrics.split(",") if m.strip()] if metrics else None
    cfg = load_config(config, overrides(evaluate__reference=reference, evaluate__fid_features=fid_features,
                                        evaluate__emotion_classifier=emotion_classifier, evaluate__probe=probe,
                                        evaluate__object_model=object_model, evaluate__scene_model=scene_model,
                                        evaluate__pairs=pairs, evaluate__metrics=chosen, model__clip=clip,
                                        runtime__device=device, runtime__seed=seed))
    with RichReporter() as reporter:
        result = run(cfg, folder, out, cfg.evaluate.metrics if chosen else None, mapper, encoder, overwrite, reporter)
    emit(result, json_, _render)


def _render(result: dict) -> None:
    from rich.table import Table

    from emogen_cli.report import LABELS, fmt

    names = list(result["metrics"])
    table = Table(title=f"{result['images']} images in {result['folder']}", title_justify="left",
                  caption=f"report: {result['files']['markdown']}", caption_justify="left")
    table.add_column("group")
    table.add_column("images", justify="right")
    for name in names:
        table.add_column(LABELS[name], justify="right")
    for group, count in result["groups"].items():
        table.add_row(group, str(count), *[fmt(n, (result["metrics"][n].get("per_emotion") or {}).get(group))
                                          for n in names])
    table.add_row("[bold]overall[/bold]", str(result["images"]),
                  *[f"[bold]{fmt(n, result['metrics'][n]['value'])}[/bold]" for n in names])
    for model, values in result["paper"].items():
        table.add_row(f"[dim]paper: {model}[/dim]", "", *[f"[dim]{fmt(n, values.get(n))}[/dim]" for n in names])
    out_console.print(table)
    for name in names:
        if note := result["metrics"][name].get("unavailable"):
            out_console.print(f"[yellow]{LABELS[name]} not computed:[/yellow] {note}")
    if (edit := result.get("edit")) and "mean" in edit:
        m = edit["mean"]

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        out_console.print(f"[bold]Edits[/bold] ({edit['edits']} with their source): SSIM {f(m['ssim'])}, "
                          f"LPIPS {f(m['lpips'])}, CLIP similarity {f(m['clip_similarity'])}, p(target) "
                          f"{f(m['p_target_before'])} -> {f(m['p_target_after'])}, S_emo {f(m['s_emo'])}")
