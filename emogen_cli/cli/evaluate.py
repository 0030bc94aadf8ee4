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

from emogen_cli.cli._utils import RichReporter, command, emit, out_console, say
from emogen_cli.cli.options import (
    ClipOpt,
    EncoderOpt,
    EvaluateOutOpt,
    MapperOpt,
    OverwriteOpt,
    ProbeOpt,
    opt,
    runtime_options,
)
from emogen_cli.core.config import Config


@command(examples="""
emogen evaluate runs/awe
emogen evaluate runs/generated --reference runs/prepared --metrics fid,emo-a
emogen evaluate runs/generated --emotion-classifier encoder --encoder runs/encoder
emogen evaluate runs/generated --scene-model resnet50_places365.pth.tar --json
""", writes=[lambda params, cfg: params["out"] or Path(params["folder"]) / "evaluation"], options=[runtime_options])
def evaluate(
    folder: Annotated[Path, typer.Argument(help="Folder of generated images (grouped by PNG metadata or sub-folder).",
                                           show_default=False)],
    reference: Annotated[Path | None, opt("--reference", "-r", key="evaluate.reference",
                                          help="FID reference: a prepared folder, an EmoSet root (all its "
                                               "images, the official reference) or a folder of real images "
                                               "(default: data.prepared).")] = None,
    metrics: Annotated[str | None, opt("--metrics", key="evaluate.metrics",
                                       help="Comma-separated subset (default: all that are available).")] = None,
    out: EvaluateOutOpt = None,
    fid_features: Annotated[str | None, opt("--fid-features", key="evaluate.fid_features",
                                            help="auto: Inception with torch-fidelity installed, else CLIP.")] = None,
    emotion_classifier: Annotated[str | None, opt("--emotion-classifier", key="evaluate.emotion_classifier",
                                                  help="Emo-A classifier: clip (CLIP-space probe) or encoder "
                                                       "(stage 1).")] = None,
    probe: ProbeOpt = None,
    mapper: MapperOpt = None,
    encoder: EncoderOpt = None,
    object_model: Annotated[str | None, opt("--object-model", key="evaluate.object_model",
                                            help="ImageNet classifier for Sem-C.")] = None,
    scene_model: Annotated[str | None, opt("--scene-model", key="evaluate.scene_model",
                                           help="Places365 classifier for Sem-C.")] = None,
    pairs: Annotated[int | None, opt("--pairs", key="evaluate.pairs",
                                     help="Random pairs per emotion for LPIPS and Sem-D.")] = None,
    clip: ClipOpt = None,
    overwrite: OverwriteOpt = False,
    *,
    json_: bool,
    cfg: Config,
) -> None:
    """Compute the paper's five metrics over a folder of generated images."""
    from emogen_cli.evaluation.evaluate import evaluate as run

    # metrics asked for by name (option or config file) must be computed; otherwise, all that are available
    chosen = [m.lower() for m in cfg.evaluate.metrics] if cfg.is_explicit("evaluate.metrics") else None
    with RichReporter() as reporter:
        result = run(cfg, folder, out, chosen, None, None, overwrite, reporter)
    emit(result, json_, _render)


def _render(result: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from emogen_cli.cli._utils import plural
    from emogen_cli.evaluation.report_files import fid_note, fmt, label, paper_cell

    names = list(result["metrics"])
    metrics = result["metrics"]
    caption = "\n".join(filter(None, [fid_note(result), f"report: {result['files']['markdown']}"]))
    table = Table(title=escape(f"{plural(result['images'], 'image')} in {result['folder']}"), title_justify="left",
                  caption=escape(caption), caption_justify="left")
    table.add_column("group")
    table.add_column("images", justify="right")
    for name in names:
        table.add_column(escape(label(name, metrics[name])), justify="right")
    for group, count in result["groups"].items():
        table.add_row(escape(group), str(count), *[fmt(n, (result["metrics"][n].get("per_emotion") or {}).get(group))
                                          for n in names])
    table.add_row("[bold]overall[/bold]", str(result["images"]),
                  *[f"[bold]{fmt(n, result['metrics'][n]['value'])}[/bold]" for n in names])
    for model, values in result["paper"].items():
        table.add_row(f"[dim]paper: {escape(model)}[/dim]", "",
                      *[f"[dim]{escape(paper_cell(n, values.get(n), metrics[n]))}[/dim]" for n in names])
    out_console.print(table)
    # a metric left out for a missing package was reported once while the run went on (stderr, also with --json)
    if (edit := result.get("edit")) and "mean" in edit:
        m = edit["mean"]

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        say(f"Edits ({edit['edits']} with their source): SSIM {f(m['ssim'])}, LPIPS {f(m['lpips'])}, CLIP "
            f"similarity {f(m['clip_similarity'])}, p(target) {f(m['p_target_before'])} -> "
            f"{f(m['p_target_after'])}, S_emo {f(m['s_emo'])}")
