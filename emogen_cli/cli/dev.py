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


def _refuse_non_empty(out: Path, overwrite: bool) -> None:
    """Never write random weights or synthetic images into a folder that holds something (a real EmoSet)."""
    from emogen_cli.core.errors import EmogenError

    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise EmogenError(f"'{out}' is not empty.", "Choose a new folder, or pass --overwrite to write into it anyway.")


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
    from emogen_cli.testing.tiny import build_tiny_bundle, sizes

    family = _family(cfg)
    if size not in sizes(family):
        raise EmogenError(f"Unknown size '{size}'.", f"Choose one of: {', '.join(sizes(family))}.")
    _refuse_non_empty(out, overwrite)
    path = build_tiny_bundle(out, seed=cfg.runtime.seed, size=size, family=family)
    emit({"path": str(path), "family": family}, json_,
         lambda r: say(f"Tiny model bundle ({r['family']}) written to {r['path']}"))


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
    from emogen_cli.testing.synthetic import make_synthetic_emoset

    _refuse_non_empty(out, overwrite)
    expected = make_synthetic_emoset(out, seed=cfg.runtime.seed)
    emit({"path": str(out), **expected}, json_,
         lambda r: say(f"Synthetic EmoSet ({r['total_kept']} usable images) written to {r['path']}"))


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
