"""Developer helpers (hidden): tiny random-weight models and a synthetic EmoSet for demos and tests.

Usage examples:
    emogen dev tiny-bundle runs/tiny
    emogen dev synthetic-emoset data/synthetic
    emogen dev tiny-config configs/tiny.yaml
    emogen dev tiny-bundle runs/tiny-sdxl --family sdxl
    emogen dev tiny-config configs/tiny-sdxl.yaml --family sdxl
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emogen_cli.cli._utils import Command, Group, command, emit, epilog, say
from emogen_cli.cli.options import FamilyOpt, JsonOpt, OverwriteOpt, SeedOpt
from emogen_cli.core.config import Config

app = typer.Typer(cls=Group, help="Developer helpers: tiny models and synthetic data.", no_args_is_help=True)


@command(examples="emogen dev tiny-bundle runs/tiny\nemogen dev tiny-bundle runs/mid --size mid\n"
                  "emogen dev tiny-bundle runs/tiny-sdxl --family sdxl", writes=["out"])
def tiny_bundle(
    out: Annotated[Path, typer.Argument(help="Folder to write the tiny models to.")],
    size: Annotated[str, typer.Option("--size", help="tiny (tests, demo) or mid (CPU benchmarks).")] = "tiny",
    family: FamilyOpt = None,
    seed: SeedOpt = None,
    overwrite: OverwriteOpt = False,
    json_: JsonOpt = False,
    *,
    cfg: Config,
) -> None:
    """Write tiny random-weight SD 1.5 (or SDXL: --family sdxl)/CLIP/ResNet models in their real folder layouts."""
    from emogen_cli.core.errors import EmogenError
    from emogen_cli.testing.chain import build_or_match
    from emogen_cli.testing.tiny import build_tiny_bundle, sizes

    family = _family(cfg)
    if size not in sizes(family):
        raise EmogenError(f"Unknown size '{size}'.", f"Choose one of: {', '.join(sizes(family))}.")
    _, there = build_or_match(out, lambda folder: build_tiny_bundle(folder, seed=cfg.runtime.seed, size=size,
                                                                    family=family),
                              overwrite, marker="emogen_tiny.json")
    emit({"path": str(out), "family": family, "already_there": there}, json_, lambda r: say(
        f"{r['path']} already holds these tiny models (unchanged)" if there else
        f"Tiny model bundle ({r['family']}) written to {r['path']}"))


def _family(cfg: Config) -> str:
    """--family for the tiny models: sd15 unless sdxl is asked for (auto means sd15 here)."""
    return "sd15" if cfg.model.family == "auto" else cfg.model.family


@command(examples="emogen dev synthetic-emoset data/synthetic", writes=["out"])
def synthetic_emoset(
    out: Annotated[Path, typer.Argument(help="Folder to write the dataset to.")],
    seed: SeedOpt = None,
    overwrite: OverwriteOpt = False,
    json_: JsonOpt = False,
    *,
    cfg: Config,
) -> None:
    """Write a small synthetic dataset in the real EmoSet layout (with a few broken entries)."""
    from emogen_cli.testing.chain import build_or_match
    from emogen_cli.testing.synthetic import make_synthetic_emoset

    expected, there = build_or_match(out, lambda folder: make_synthetic_emoset(folder, seed=cfg.runtime.seed),
                                     overwrite, marker="train.json")
    emit({"path": str(out), **expected, "already_there": there}, json_, lambda r: say(
        f"{r['path']} already holds this synthetic EmoSet ({r['total_kept']} usable images, unchanged)" if there else
        f"Synthetic EmoSet ({r['total_kept']} usable images) written to {r['path']}"))


@command(examples="emogen dev tiny-config configs/tiny.yaml\n"
                  "emogen dev tiny-config configs/tiny-sdxl.yaml --family sdxl\n"
                  "emogen dev tiny-config runs/my.yaml --models runs/tiny --data data/synthetic --runs runs/my")
def tiny_config(
    out: Annotated[Path, typer.Argument(help="YAML file to write.")],
    models: Annotated[Path | None, typer.Option(help="Folder of `emogen dev tiny-bundle` (default runs/tiny, "
                                                "runs/tiny-sdxl for --family sdxl).", show_default=False)] = None,
    data: Annotated[Path, typer.Option(help="Folder of `emogen dev synthetic-emoset`.")] = Path("data/synthetic"),
    runs: Annotated[Path | None, typer.Option(help="Folder for the chain's outputs (default runs/demo, "
                                              "runs/demo-sdxl for --family sdxl).", show_default=False)] = None,
    family: FamilyOpt = None,
    json_: JsonOpt = False,
    *,
    cfg: Config,
) -> None:
    """Write the demo chain's config (configs/tiny.yaml and configs/tiny-sdxl.yaml are this command's output with
    the defaults)."""
    from emogen_cli.testing.chain import DEMO_HEADER, DEMO_HEADER_SDXL, demo_config, write_config

    family = _family(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = DEMO_HEADER_SDXL if family == "sdxl" else DEMO_HEADER
    path = write_config(out, demo_config(models, data, runs, family), header)
    emit({"path": str(path)}, json_, lambda r: say(f"Tiny chain config written to {r['path']}"))


app.command("tiny-bundle", cls=Command, epilog=epilog(tiny_bundle))(tiny_bundle)
app.command("synthetic-emoset", cls=Command, epilog=epilog(synthetic_emoset))(synthetic_emoset)
app.command("tiny-config", cls=Command, epilog=epilog(tiny_config))(tiny_config)
