"""Stage 2's mapping network and the self-describing mapper bundle that inference loads.

A bundle folder holds config.json (class order, placeholder token, base/CLIP model ids, the base
model's fingerprint, dims), mapper.safetensors, emotion_space.safetensors, text_projection.safetensors
(CLIP's, for the semantic space) and attributes.json (the attribute names, their emotion confidence and the L_attr
vocabulary: its source, names, classes as trained, duplicates and text settings). config.json also
records the semantic token, the attribute vocabulary kind, how duplicates and the attribute text were
treated, and the emotion probe used (emotion_probe.safetensors beside it when there is one).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from emogen_cli.core.config import Config
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.reporting import Reporter
from emogen_cli.core.files import (
    check_bundle_files,
    check_finite,
    check_shapes,
    read_bundle_config,
    read_json,
    read_safetensors,
    write_bundle,
)
from emogen_cli.stage1.encoder import EmotionSpace

FORMAT = "emogen-mapper"


class MappingNetwork(nn.Module):
    """Emotion space -> CLIP token embedding: Linear -> ReLU -> ... -> Linear (2 layers: 768-1024-768).

    On a family with several text towers the output is every tower's input embedding side by side (SDXL:
    768-1024-2048, the first 768 for `text_encoder`, the last 1280 for `text_encoder_2`; docs/backbones.md)."""

    def __init__(self, in_dim: int = 768, hidden_dim: int = 1024, out_dim: int = 768, layers: int = 2) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
        modules: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            modules.append(nn.Linear(a, b))
            if i < layers - 1:
                modules.append(nn.ReLU())
        self.mlp = nn.Sequential(*modules)

    def forward(self, emotion_vectors: torch.Tensor) -> torch.Tensor:
        return self.mlp(emotion_vectors)


def mapper_loss(l_ldm: torch.Tensor, l_attr: torch.Tensor, l_emo: torch.Tensor, confidence: torch.Tensor,
                lambda_attr: float, lambda_emo: float, threshold: float) -> torch.Tensor:
    """Per-sample EmoGen loss: (1 - c) L_ldm + lambda_attr c L_attr + lambda_emo L_emo, c < threshold -> 0."""
    c = torch.where(confidence < threshold, torch.zeros_like(confidence), confidence)
    return (1 - c) * l_ldm + lambda_attr * c * l_attr + lambda_emo * l_emo


_TRAINED_WITH = {"pretrained": "base_model", "clip": "clip_model"}


def trained_model(config: Config, key: str, bundle_config: dict[str, Any]) -> str:
    """config.model.<key> ("pretrained" or "clip") if the user set it (by file or option, even to the built-in
    default), else the model the mapper was trained with."""
    configured = getattr(config.model, key)
    if config.is_explicit(f"model.{key}"):
        return configured
    return bundle_config.get(_TRAINED_WITH[key]) or configured


@dataclass
class MapperBundle:
    config: dict[str, Any]
    mapper: MappingNetwork
    space: EmotionSpace
    projection: torch.Tensor  # [P, D]: CLIP's text_projection weight
    attributes: dict[str, Any]

    @property
    def emotions(self) -> tuple[str, ...]:
        return tuple(self.config["emotions"])

    @property
    def family(self) -> str:
        """The model family it was trained on (backbones/); bundles written before it was recorded: SD 1.5."""
        return self.config.get("family", "sd15")

    @property
    def semantic_width(self) -> int:
        """The width of the semantic tower's pooled state (the text projection's input): out_dim on SD 1.5."""
        return int(self.config.get("semantic_width") or self.config["out_dim"])

    @property
    def semantic_token(self) -> str:
        """Where the semantic vector is pooled; bundles written before it was recorded pooled at end-of-text."""
        return self.config.get("semantic_token", "eos")

    @property
    def attribute_text(self) -> str:
        """How CLIP read the attribute names in training ("official": as written; "spaces"); bundles written before
        it was recorded used spaces."""
        return self.config.get("attribute_text", "spaces")

    @property
    def vocabulary(self) -> list[str]:
        """The L_attr classes the mapper was trained with (all attribute names for older bundles)."""
        return list((self.attributes.get("vocabulary") or {}).get("names") or self.attributes.get("names") or [])

    def base_model(self, config: Config) -> str:
        return trained_model(config, "pretrained", self.config)

    def clip_model(self, config: Config) -> str:
        return trained_model(config, "clip", self.config)

    def check_base_model(self, base: str, revision: str | None, reporter: Reporter, strict: bool = False) -> None:
        """Warn (refuse with `strict`) when `base` is not the base model the mapper was trained on: the mapped token
        was learnt for that text encoder and UNet, and another model of the same width takes it without a word
        (a wider or narrower one is refused by `check_text_width`). The models are compared by the fingerprint the
        bundle records (`core.pretrained.model_fingerprint`: configs and sampled weight bytes of the text encoder
        and UNet, milliseconds to compute); bundles without one are compared by name."""
        from emogen_cli.core.pretrained import FINGERPRINTED, model_fingerprint

        trained = str(self.config.get("base_model") or "")
        recorded = self.config.get("base_model_fingerprint")
        hint = (f"Use the base model it was trained on (--model {trained}), or pass --strict to refuse other models."
                if not strict else f"Use the base model it was trained on: --model {trained}.")
        if not isinstance(recorded, dict) or not recorded:
            if base != trained:
                self._base_mismatch(f"The mapper was trained on '{trained}'; '{base}' is used instead, and the bundle "
                                    "records no fingerprint to tell whether they are the same model.", hint,
                                    reporter, strict)
            return
        current = model_fingerprint(base, revision)
        if current is None:
            if strict:
                raise EmogenError(f"Cannot check that '{base}' is the base model the mapper was trained on "
                                  f"('{trained}'): its files are not on this machine.", hint)
            return
        differ = [part for part in FINGERPRINTED if part in recorded and part in current and recorded[part] != current[part]]
        missing = [part for part in FINGERPRINTED if part in recorded and part not in current]
        if differ or missing:
            names = {"text_encoder": "text encoder", "unet": "UNet"}
            what = " and ".join(names[p] for p in differ + missing)
            self._base_mismatch(f"'{base}' is not the base model the mapper was trained on ('{trained}'): its {what} "
                                f"{'differ' if len(differ + missing) > 1 else 'differs'}, so the emotion may be weak "
                                "or lost.", hint, reporter, strict)

    @staticmethod
    def _base_mismatch(message: str, hint: str, reporter: Reporter, strict: bool) -> None:
        if strict:
            raise EmogenError(message, hint)
        reporter.warn(f"{message} {hint}")

    def check_text_width(self, width: int, base: str) -> None:
        """Refuse a text encoder whose width differs from the embeddings the mapper writes."""
        if self.config["out_dim"] != width:
            raise EmogenError(f"The mapper writes {self.config['out_dim']}-d embeddings but the text encoder of "
                              f"'{base}' is {width}-d.",
                              f"Use the base model it was trained on: {self.config['base_model']}.")

    def save(self, path: Path) -> None:
        """Replace the bundle only once every new file is complete (config.json last marks it complete)."""
        weights = {k: v.detach().cpu().contiguous() for k, v in self.mapper.state_dict().items()}
        projection = {"weight": self.projection.detach().cpu().contiguous()}
        attributes = json.dumps(self.attributes, indent=1, allow_nan=False)
        write_bundle(path, {
            "mapper.safetensors": lambda p: save_file(weights, str(p)),
            "emotion_space.safetensors": self.space.write,
            "text_projection.safetensors": lambda p: save_file(projection, str(p)),
            "attributes.json": lambda p: p.write_text(attributes),
        }, self.config)


_HINT = "Pass a folder written by `emogen train-mapper`, or train it again."
_DIMS = ("in_dim", "hidden_dim", "out_dim", "layers")


# Names a bundle gives (bundles come from the Hub: untrusted input) are checked when it loads. Emotion names become
# file and folder names (generate's `awe-00000.png`, export's `emogen-awe.pt`), so they are plain lower-case
# identifiers; the files config.json lists are plain file names inside the bundle folder; the placeholder is one
# tokenizer token (`<emotion>`); attribute names are CLIP text (EmoSet's, normalised: `mountain_snowy`), never
# paths, but still start with a letter or digit. None may hold `..`, a backslash, whitespace other than single
# spaces, or control characters.
EMOTION_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
PLACEHOLDER_NAME = re.compile(r"[\w<>*+.-]{1,64}")
ATTRIBUTE_NAME = re.compile(r"\w(?:[\w'&+.,()/-]| (?! )){0,99}")


def check_name(name: Any, kind: str, pattern: re.Pattern[str], where: Path, reserved: tuple[str, ...] = ()) -> str:
    """`name` if it is a string matching `pattern` in full, with no `..` and not `reserved`; else one line naming
    the file it came from."""
    if isinstance(name, str) and pattern.fullmatch(name) and ".." not in name and name not in reserved:
        return name
    shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
    raise EmogenError(f"Mapper bundle file '{where}' gives an unsafe or invalid {kind} name {shown}.",
                      "Bundle names must be plain identifiers (emotions like 'awe'); this bundle is damaged or "
                      "crafted: do not use it.")


def _check_attributes(path: Path, attributes: Any, emotions: int) -> None:
    """attributes.json: {"names": [...], "confidence": {name: [one value per emotion] | null}}."""
    names = attributes.get("names") if isinstance(attributes, dict) else None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise EmogenError(f"Attributes file '{path}' has no list of attribute names.", _HINT)
    vocabulary = attributes.get("vocabulary")
    vocabulary = vocabulary.get("names") if isinstance(vocabulary, dict) else None
    confidence = attributes.get("confidence") or {}
    if not isinstance(vocabulary or [], list) or not isinstance(confidence, dict):
        raise EmogenError(f"Attributes file '{path}' has a vocabulary or confidence table of the wrong type.", _HINT)
    for name in [*names, *confidence, *(vocabulary or [])]:
        check_name(name, "attribute", ATTRIBUTE_NAME, path)
    for name, row in (attributes.get("confidence") or {}).items():
        if row is None:
            continue
        if not (isinstance(row, list) and len(row) == emotions and all(isinstance(v, (int, float)) for v in row)):
            raise EmogenError(f"Attributes file '{path}' gives '{name}' a confidence that is not {emotions} numbers.",
                              _HINT)
        if not all(math.isfinite(v) for v in row):
            raise EmogenError(f"Attributes file '{path}' gives '{name}' a NaN or infinite confidence.", _HINT)


def load_mapper(path: str | Path) -> MapperBundle:
    """A mapper bundle, every file checked: damage, wrong shapes or dims, NaN/inf, bad text are one line."""
    path = Path(path)
    config = read_bundle_config(path, FORMAT, "emogen train-mapper")
    where = path / "config.json"
    for key in _DIMS:
        value = config.get(key)
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise EmogenError(f"Mapper config '{where}' has no positive integer {key} (got {value!r}).", _HINT)
    emotions = config.get("emotions")
    if not (isinstance(emotions, list) and emotions and all(isinstance(e, str) for e in emotions)):
        raise EmogenError(f"Mapper config '{where}' has no list of emotion names.", _HINT)
    if not isinstance(config.get("placeholder"), str) or not config["placeholder"]:
        raise EmogenError(f"Mapper config '{where}' has no placeholder token.", _HINT)
    for emotion in emotions:
        check_name(emotion, "emotion", EMOTION_NAME, where, reserved=("all",))  # `all` names every emotion
    if len(set(emotions)) != len(emotions):
        raise EmogenError(f"Mapper config '{where}' names an emotion twice.", _HINT)
    check_name(config["placeholder"], "placeholder token", PLACEHOLDER_NAME, where)
    if not isinstance(config.get("files") or {}, dict):
        raise EmogenError(f"Mapper config '{where}' has a 'files' entry that is not a table of file names.", _HINT)
    for name in config.get("files") or {}:
        check_name(name, "file", FILE_NAME, where)
    check_bundle_files(path, config, "Mapper", _HINT)
    mapper = MappingNetwork(config["in_dim"], config["hidden_dim"], config["out_dim"], config["layers"])
    weights = read_safetensors(path / "mapper.safetensors", "Mapper weights", _HINT)
    check_shapes(weights, {k: tuple(v.shape) for k, v in mapper.state_dict().items()}, path / "mapper.safetensors",
                 "Mapper weights", _HINT)
    check_finite(weights, path / "mapper.safetensors", "Mapper weights", _HINT)
    mapper.load_state_dict(weights)
    mapper.eval()
    space = EmotionSpace.load(path / "emotion_space.safetensors", dim=config["in_dim"])
    if list(space.emotions) != emotions:
        raise EmogenError(f"Emotion space '{path / 'emotion_space.safetensors'}' lists {list(space.emotions)}, but "
                          f"the mapper config lists {emotions}.", _HINT)
    semantic_width = config.get("semantic_width", config["out_dim"])
    if not (isinstance(semantic_width, int) and not isinstance(semantic_width, bool) and semantic_width > 0):
        raise EmogenError(f"Mapper config '{where}' has no positive integer semantic_width (got {semantic_width!r}).",
                          _HINT)
    projection = read_safetensors(path / "text_projection.safetensors", "Text projection", _HINT)
    if "weight" not in projection or projection["weight"].ndim != 2 or projection["weight"].shape[1] != semantic_width:
        shape = tuple(projection["weight"].shape) if "weight" in projection else None
        raise EmogenError(f"Text projection '{path / 'text_projection.safetensors'}' has weight of shape {shape}, "
                          f"expected (P, {semantic_width}).", _HINT)
    check_finite(projection, path / "text_projection.safetensors", "Text projection", _HINT)
    attributes = read_json(path / "attributes.json", "Attributes file", _HINT)
    _check_attributes(path / "attributes.json", attributes, len(emotions))
    return MapperBundle(config, mapper, space, projection["weight"], attributes)


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def resolve_bundle(source: str | Path) -> Path:
    """A local mapper bundle folder, or a Hugging Face Hub repo id downloaded (or found in the cache)."""
    if not isinstance(source, (str, Path)):
        raise EmogenError(f"A mapper bundle is a folder or a Hub repo id, got {type(source).__name__} {source!r}.",
                          "For example: \"runs/mapper\" or \"USER/NAME\".")
    path = Path(source)
    text = str(source)
    if path.exists() or not _REPO_ID.fullmatch(text) or Path(text.split("/")[0]).is_dir():
        return path  # a local path (missing ones are reported by load_mapper as such, not as a network error)
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")
    try:
        return Path(snapshot_download(text, local_files_only=offline))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean "not available"
        why = ("HF_HUB_OFFLINE is set and it is not in the local cache" if offline else
               f"download failed: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}")
        raise EmogenError(f"'{text}' is not a local folder and the Hub repo '{text}' could not be loaded ({why}).",
                          f"Download it where you are online with `hf download {text} --local-dir DIR` and pass DIR, "
                          "or check the path.") from None
