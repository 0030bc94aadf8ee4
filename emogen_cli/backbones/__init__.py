"""Model families emogen runs on (the backbone seam): SD 1.5 and SDXL, one module each.

`get(name)` gives a family's `Backbone`; `detect(model)` reads a diffusers model's model_index.json
(`_class_name`) to tell its family; `resolve(config, model)` honours `model.family` (auto | sd15 | sdxl);
`resolution(config, backbone)` is model.resolution when set, else the family's default size.
docs/backbones.md says how to add a family.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emogen_cli.backbones.base import Backbone, TextTower
from emogen_cli.backbones.sd15 import SD15
from emogen_cli.backbones.sdxl import SDXL
from emogen_cli.core.errors import EmogenError

FAMILIES: dict[str, Backbone] = {b.family: b for b in (SD15(), SDXL())}
DEFAULT_FAMILY = "sd15"  # bundles written before the family was recorded were trained on SD 1.5

__all__ = ["FAMILIES", "Backbone", "TextTower", "detect", "family_of_pipeline", "get", "resolution", "resolve"]


def get(name: str) -> Backbone:
    if name not in FAMILIES:
        raise EmogenError(f"Unknown model family '{name}'.", f"Choose one of: auto, {', '.join(FAMILIES)}.")
    return FAMILIES[name]


def family_of_class(class_name: str, where: str) -> str:
    for backbone in FAMILIES.values():
        if class_name in backbone.class_names:
            return backbone.family
    raise EmogenError(f"'{where}' is a {class_name} model; emogen runs on {', '.join(FAMILIES)} "
                      f"({', '.join(b.title for b in FAMILIES.values())}).",
                      "Pass a Stable Diffusion 1.x or SDXL model (or set model.family if detection is wrong).")


def _model_index(model: str, revision: str | None) -> dict[str, Any] | None:
    path = Path(model)
    if path.is_dir():
        file = path / "model_index.json"
        try:
            return json.loads(file.read_text()) if file.is_file() else None
        except (OSError, UnicodeDecodeError, ValueError):
            raise EmogenError(f"Cannot read '{file}' (it is not JSON).",
                              "Restore the model's model_index.json.") from None
    try:
        from diffusers import DiffusionPipeline

        from emogen_cli.core.pretrained import quiet_libraries

        quiet_libraries()
        return DiffusionPipeline.load_config(model, revision=revision)
    except Exception:  # noqa: BLE001 - offline, unknown repo, ...: the name decides (and loading reports the rest)
        return None


def detect(model: str | Path, revision: str | None = None) -> str:
    """The family of a diffusers model (folder or Hub id) from model_index.json's `_class_name`; a model whose
    index cannot be read is told by its folders (text_encoder_2: SDXL) or its name ("xl": SDXL), else SD 1.5."""
    model = str(model)
    index = _model_index(model, revision)
    if isinstance(index, dict) and isinstance(index.get("_class_name"), str):
        return family_of_class(index["_class_name"], model)
    path = Path(model)
    if path.is_dir():
        return "sdxl" if (path / "text_encoder_2").is_dir() else DEFAULT_FAMILY
    return "sdxl" if "xl" in path.name.lower() else DEFAULT_FAMILY


def resolve(config: Any, model: str | Path | None = None) -> Backbone:
    """The backbone of `model` (default model.pretrained): model.family if set, else detected."""
    family = getattr(config.model, "family", "auto")
    if family != "auto":
        return get(family)
    return get(detect(model or config.model.pretrained, config.model.revision))


def resolution(config: Any, backbone: Backbone) -> int:
    """model.resolution when the config sets it (or holds another value than the built-in 512: a Config rebuilt with
    dataclasses.replace forgets which keys were set), else the family's default (SD 1.5: 512, SDXL: 1024)."""
    set_here = config.is_explicit("model.resolution") or config.model.resolution != type(config.model)().resolution
    if set_here or backbone.family == DEFAULT_FAMILY:
        return int(config.model.resolution)
    return backbone.default_resolution


def family_of_pipeline(pipe: Any) -> str:
    """The family of a loaded diffusers pipeline (`EmoGenPipeline.from_pipe`)."""
    name = type(pipe).__name__
    for backbone in FAMILIES.values():
        if name in backbone.class_names:
            return backbone.family
    return "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else DEFAULT_FAMILY


def check_bundle(bundle_config: dict[str, Any], backbone: Backbone, base: str,
                 widths: dict[str, int] | None = None) -> None:
    """Refuse a mapper bundle trained on another family, or on text encoders of other widths: one line naming both."""
    trained = bundle_config.get("family", DEFAULT_FAMILY)
    if trained != backbone.family:
        raise EmogenError(f"The mapper bundle was trained on {get(trained).title} ({trained}) but '{base}' is "
                          f"{backbone.title} ({backbone.family}).",
                          f"Use a {trained} base model (the bundle's: {bundle_config.get('base_model')}), or a bundle "
                          f"trained on {backbone.family}.")
    recorded = bundle_config.get("text_encoders")
    if widths and isinstance(recorded, dict) and recorded != widths:
        raise EmogenError(f"The mapper bundle was trained on text encoders of widths {recorded} but '{base}' has "
                          f"{widths}.", f"Use the base model it was trained on: {bundle_config.get('base_model')}.")
