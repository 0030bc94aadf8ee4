"""The tiny chain's config, written in one place: tests, benchmarks, `emogen dev tiny-config` and
configs/tiny.yaml all take it from here, so a new key or a changed dimension reaches them all.

The chain is: tiny models (`build_tiny_bundle`) + a synthetic EmoSet -> prepared data with cached
latents -> stage-1 encoder -> stage-2 mapper -> generated images. `tiny_chain_config` lays out the
paths and the small dimensions; how long each stage trains is the caller's choice (overrides with
dotted keys, as `load_config` takes them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# What the one-minute CPU demo (configs/tiny.yaml) runs for: a few real checkpoints, visible losses.
DEMO_OVERRIDES: dict[str, Any] = {
    "encoder.epochs": 2, "encoder.checkpoint_every": 10,
    "mapper.max_steps": 20, "mapper.checkpoint_every": 10,
    "generate.steps": 4, "evaluate.pairs": 8,
}
DEMO_HEADER = """\
# The one-minute CPU demo: tiny random-weight models (`emogen dev tiny-bundle runs/tiny`) and a
# synthetic dataset in the real EmoSet layout (`emogen dev synthetic-emoset data/synthetic`).
# Images are noise, so the outputs are too; every code path is the real one.
# Written by `emogen dev tiny-config configs/tiny.yaml` (emogen_cli/testing/chain.py); a test keeps them equal.

"""
DEMO_HEADER_SDXL = """\
# The SDXL demo on CPU in a few minutes: a tiny random-weight SDXL (`emogen dev tiny-bundle runs/tiny-sdxl
# --family sdxl`: both text towers, SDXL's added conditioning, model_index.json naming StableDiffusionXLPipeline)
# and the synthetic EmoSet (`emogen dev synthetic-emoset data/synthetic`). model.family is auto: it is read from
# the model. Images are noise; every code path is the real SDXL one.
# Written by `emogen dev tiny-config configs/tiny-sdxl.yaml --family sdxl` (emogen_cli/testing/chain.py).

"""


def tiny_chain_config(models: str | Path, emoset: str | Path, out: str | Path, resolution: int = 16,
                      overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config (nested sections, as the YAML holds them) of a chain on the tiny models in `models`,
    the dataset at `emoset`, with every output under `out`; `overrides` set or add dotted keys."""
    models, out = Path(models), Path(out)
    config: dict[str, dict[str, Any]] = {
        "model": {"pretrained": str(models), "clip": str(models / "clip"), "resolution": resolution},
        "data": {"root": str(emoset), "prepared": str(out / "prepared"), "num_workers": 0},
        "encoder": {"backbone": str(models / "resnet"), "emotion_dim": 16, "image_size": 32, "batch_size": 8,
                    "output": str(out / "encoder")},
        "mapper": {"encoder": str(out / "encoder"), "hidden_dim": 32, "batch_size": 4, "output": str(out / "mapper")},
        "generate": {"mapper": str(out / "mapper"), "output": str(out / "generated")},
    }
    for key, value in (overrides or {}).items():
        section, name = key.split(".", 1)
        config.setdefault(section, {})[name] = str(value) if isinstance(value, Path) else value
    return config


def demo_config(models: str | Path | None = None, emoset: str | Path = "data/synthetic",
                out: str | Path | None = None, family: str = "sd15") -> dict[str, Any]:
    """The demo's config (configs/tiny.yaml with the defaults; configs/tiny-sdxl.yaml with family "sdxl"): the
    chain on `emogen dev tiny-bundle runs/tiny` (runs/tiny-sdxl) and `emogen dev synthetic-emoset data/synthetic`,
    outputs under runs/demo (runs/demo-sdxl), and the tiny ResNet classifier standing in for Sem-C's object and
    scene models."""
    from emogen_cli.testing.tiny import sizes

    suffix = "" if family == "sd15" else f"-{family}"
    models = models or f"runs/tiny{suffix}"
    out = out or f"runs/demo{suffix}"
    classifier = str(Path(models) / "classifier")
    return tiny_chain_config(models, emoset, out, sizes(family)["tiny"]["resolution"], overrides={
        **DEMO_OVERRIDES, "evaluate.object_model": classifier, "evaluate.scene_model": classifier})


def write_config(path: str | Path, config: Mapping[str, Any], header: str = "") -> Path:
    """Write `config` as YAML (sections in the builder's order, a blank line between them), atomically;
    `header` is prepended as is."""
    import yaml

    from emogen_cli.core.files import atomic_write_text

    sections = [yaml.safe_dump({name: values}, sort_keys=False) for name, values in config.items()]
    atomic_write_text(path, header + "\n".join(sections))
    return Path(path)


def build_tiny_chain(root: str | Path, size: str = "tiny", overrides: Mapping[str, Any] | None = None,
                     family: str = "sd15") -> Path:
    """Build the whole chain under `root` (models of `family`, synthetic EmoSet, prepared data with cached
    latents, encoder, mapper) and return its config file, root/chain.yaml. The file is written only once the
    chain is complete, so an existing one means a finished chain (and is reused as it is)."""
    from emogen_cli.core.config import load_config
    from emogen_cli.data.prepare import prepare
    from emogen_cli.stage1.train_encoder import train_encoder
    from emogen_cli.stage2.train_mapper import train_mapper
    from emogen_cli.testing.synthetic import make_synthetic_emoset
    from emogen_cli.testing.tiny import build_tiny_bundle, sizes

    root = Path(root)
    path = root / "chain.yaml"
    if path.is_file():
        return path
    resolution = sizes(family)[size]["resolution"]
    models = build_tiny_bundle(root / "models", size=size, family=family)
    make_synthetic_emoset(root / "EmoSet", broken=False, image_size=max(32, resolution))
    config = tiny_chain_config(models, root / "EmoSet", root, resolution, overrides)
    draft = write_config(root / "chain.draft.yaml", config)
    cfg = load_config(draft)
    prepare(cfg, cache_latents=True)
    train_encoder(cfg)
    train_mapper(cfg)
    draft.replace(path)
    return path


def build_or_match(out: str | Path, build, overwrite: bool = False, marker: str | None = None) -> tuple[Any, bool]:
    """Run `build(folder)` into `out`, or accept an `out` that already holds exactly what it writes.

    A missing or empty `out` (or `overwrite`) is built into directly. A non-empty one is compared, never
    rewritten: `build` runs into a temporary folder beside it and every file's path and bytes must match
    (so re-running `emogen dev tiny-bundle runs/tiny` is a no-op). Anything else is refused: the folder may
    be a real dataset. Without the file `marker` (one `build` always writes), it is refused at once, unbuilt.
    Returns (build's result, whether `out` was already there).
    """
    import filecmp
    import shutil
    import tempfile

    from emogen_cli.core.errors import EmogenError

    out = Path(out)
    refusal = EmogenError(f"'{out}' is not empty and does not hold what this command writes.",
                          "Choose a new folder, delete it to start over, or pass --overwrite to write into it anyway.")
    if overwrite or not out.is_dir() or not any(out.iterdir()):
        return build(out), False
    if marker is not None and not (out / marker).is_file():
        raise refusal
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".check", dir=out.parent))
    try:
        result = build(scratch)
        ours = sorted(p.relative_to(scratch) for p in scratch.rglob("*") if p.is_file())
        theirs = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
        same = ours == theirs and all(filecmp.cmp(scratch / rel, out / rel, shallow=False) for rel in ours)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not same:
        raise refusal
    return _repath(result, scratch, out), True


def _repath(value: Any, old: Path, new: Path) -> Any:
    """`value` with the temporary folder's path replaced by the real one (in strings, lists and dicts)."""
    if isinstance(value, Path):
        return new / value.relative_to(old) if value == old or old in value.parents else value
    if isinstance(value, str):
        return value.replace(str(old), str(new))
    if isinstance(value, dict):
        return {k: _repath(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_repath(v, old, new) for v in value]
    return value
