"""Typed configuration: defaults here, YAML files in configs/, per-option CLI overrides.

Every key is validated: unknown keys get a 'did you mean', wrong types name the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emogen_cli.core import choices
from emogen_cli.core.errors import EmogenError


@dataclass
class ModelConfig:
    pretrained: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # diffusers folder or hub id
    clip: str = "openai/clip-vit-large-patch14"  # text projection, image features
    revision: str | None = None
    resolution: int = 512  # SDXL: 1024 unless set
    family: str = "auto"  # auto (model_index.json's _class_name) | sd15 | sdxl


@dataclass
class DataConfig:
    root: str = "data/EmoSet"  # EmoSet root: image/, annotation/, train.json ...
    prepared: str = "runs/prepared"  # `emogen prepare` output folder
    splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])
    balance: str = "per_kind"  # per_kind (official) | union | none; old true/false read as per_kind/none
    verify_images: bool = True
    num_workers: int = 2  # decoding workers of the scan and of --cache-latents (0: in the main process)
    cache_batch_size: int = 16  # images per VAE encode of --cache-latents


@dataclass
class EncoderConfig:
    backbone: str = "microsoft/resnet-50"
    emotion_dim: int = 768
    dropout: float = 0.5
    image_size: int = 224
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 10
    max_steps: int | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    output: str = "runs/encoder"
    preprocessing: str = "official"  # official: Resize(256) -> CenterCrop(224) -> Normalize(0.5, 0.5); imagenet
    space_splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])  # images of the Gaussians


@dataclass
class MapperConfig:
    encoder: str = "runs/encoder"  # stage-1 output folder
    layers: int = 2
    hidden_dim: int = 1024
    placeholder: str = "<emotion>"
    lambda_attr: float = 0.01
    lambda_emo: float = 0.0
    threshold: float = 0.0
    confidence: str | None = None  # JSON from a previous run or an official import
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 1
    max_steps: int = 20000
    gradient_checkpointing: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    output: str = "runs/mapper"
    attribute_vocabulary: str = "emotional"  # emotional (official L_attr classes) | all
    # official (the shipped official lists) | derived (from the confidence table) | official dataset_balance/ (or repo
    # root) or a JSON list; null: official for EmoSet, derived for data that does not look like it
    emotional_attributes: str | None = None
    attribute_duplicates: str = "official"  # official: a name on two emotions' lists is two L_attr classes | merge
    attribute_text: str = "official"  # official: CLIP reads the names as written (mountain_snowy) | spaces
    semantic_token: str = "placeholder"  # placeholder (official pooling) | eos
    emotion_probe: str | None = None  # CLIP emotion probe for L_emo (official .pth or emotion_probe.safetensors)


@dataclass
class GenerateConfig:
    mapper: str = "runs/mapper"
    steps: int = 50
    guidance: float = 7.5
    scheduler: str = "unipc"
    batch_size: int = 4
    negative_prompt: str = ""
    output: str = "runs/generated"
    best_of: int = 1  # candidates per image; the emotion probe's favourite is kept (bestof.py)
    strict: bool = False  # refuse, instead of warning, a base model other than the one the mapper was trained on
    sheet_size: int = 64  # images per contact sheet (a request of more gets one sheet per page)
    max_sheets: int | None = 16  # contact sheets per request at most (null: every page; 0: none)


@dataclass
class EvaluateConfig:
    reference: str | None = None  # prepared folder or image folder for FID (null: data.prepared)
    metrics: list[str] = field(default_factory=lambda: ["fid", "lpips", "emo-a", "sem-c", "sem-d"])
    fid_features: str = "auto"  # auto: Inception with torch-fidelity installed, else CLIP image features
    emotion_classifier: str = "clip"  # clip: the CLIP-space probe (official Emo-A); encoder: stage 1
    probe: str | None = None  # CLIP emotion probe (null: the mapper bundle's emotion_probe.safetensors)
    object_model: str = "microsoft/resnet-50"  # ImageNet classifier for Sem-C
    scene_model: str | None = None  # Places365 classifier for Sem-C (transformers folder or resnet50_places365.pth.tar)
    pairs: int = 200  # random image pairs per emotion for LPIPS and Sem-D
    max_reference: int = 5000  # reference images used for FID (a seeded random subset)
    batch_size: int = 32


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # another host needs --token (or --insecure)
    port: int = 7860  # 0: any free port (the startup line says which)
    output: str = "runs/served"
    token: str | None = None  # bearer token every route checks (or the EMOGEN_TOKEN environment variable)
    queue_size: int = 16  # jobs waiting beyond the running ones; a full queue answers 429
    max_images: int = 8  # n per request
    max_steps: int = 150  # denoising steps per request
    max_best_of: int = 8  # best_of per request
    max_size: int = 1024  # image side in pixels per request
    max_upload_mb: float = 20.0  # edit uploads
    max_pixels: int = 4194304  # edit uploads: width x height


@dataclass
class RuntimeConfig:
    seed: int = 0
    mixed_precision: str = "auto"  # auto: bf16 (or fp16) on CUDA, fp32 on CPU
    device: str = "auto"
    # GPU fast paths (core/runtime.py `apply_runtime`); all off by default where they change numbers
    compile: bool = False  # torch.compile the UNet (training and sampling)
    channels_last: bool = False  # UNet (and VAE) in channels_last memory format
    tf32: bool = False  # TF32 matmuls and convolutions on Ampere or newer GPUs
    cpu_offload: bool = False  # diffusers enable_model_cpu_offload: one model on the GPU at a time
    attention_slicing: bool = False  # attention computed in slices (less memory, a little slower)
    vae_tiling: bool = False  # VAE decodes in tiles (large images on small GPUs)
    log_every: int = 10  # training: read losses from the device (a sync) every N steps


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    mapper: MapperConfig = field(default_factory=MapperConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def is_explicit(self, key: str) -> bool:
        """True when `key` ("model.pretrained") was set by an option (even to its built-in default) or by a config
        file to a value other than the built-in default. A file's key equal to the default behaves as the default,
        so a verbatim copy of configs/default.yaml changes nothing: the bundle's base model is still used and
        evaluate still computes "all that are available". To insist on the default value, pass its option."""
        return key in self.__dict__.get("_explicit", ())


CHOICES: dict[str, tuple[str, ...]] = choices.BY_KEY
# Values of earlier versions still accepted: data.balance was a boolean (true: balance as the paper,
# now the official per-kind balancing; false: none).
LEGACY: dict[str, dict[Any, str]] = {"data.balance": {True: "per_kind", False: "none", "true": "per_kind",
                                                      "false": "none", "yes": "per_kind", "no": "none"}}
POSITIVE = {
    "model.resolution", "encoder.emotion_dim", "encoder.image_size", "encoder.batch_size", "encoder.epochs",
    "encoder.checkpoint_every", "mapper.layers", "mapper.hidden_dim", "mapper.batch_size", "mapper.max_steps",
    "mapper.checkpoint_every", "generate.steps", "generate.batch_size", "encoder.keep_checkpoints",
    "mapper.keep_checkpoints", "evaluate.pairs", "evaluate.max_reference", "evaluate.batch_size",
    "encoder.lr", "mapper.lr", "encoder.max_steps", "generate.best_of",
    "serve.queue_size", "serve.max_images", "serve.max_steps", "serve.max_best_of", "serve.max_size",
    "serve.max_upload_mb", "serve.max_pixels",
    "generate.sheet_size", "data.cache_batch_size", "runtime.log_every",
}
NON_NEGATIVE = {
    "mapper.lambda_attr", "mapper.lambda_emo", "mapper.threshold", "generate.guidance", "encoder.weight_decay",
    "mapper.weight_decay", "encoder.momentum", "encoder.dropout", "data.num_workers", "generate.max_sheets",
}
# Inclusive upper bounds (on top of the lower bounds above); runtime.seed is 0 .. 2**32-1.
AT_MOST: dict[str, int | float] = {"runtime.seed": choices.MAX_SEED, "mapper.threshold": 1.0, "encoder.dropout": 0.99}
AT_MOST["generate.best_of"] = choices.MAX_BEST_OF
AT_MOST["generate.steps"] = choices.MAX_STEPS
AT_MOST.update({"serve.port": 65535, "serve.max_images": choices.MAX_IMAGES, "serve.max_steps": choices.MAX_STEPS,
                "serve.max_best_of": choices.MAX_BEST_OF, "serve.max_size": 8192})
MULTIPLE_OF_8 = {"model.resolution"}  # the VAE downsamples by 8


def _all_keys() -> list[str]:
    sections = typing.get_type_hints(Config)
    return [f"{name}.{f.name}" for name, cls in sections.items() for f in dataclasses.fields(cls)]


def _coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)

    def bad(expected: str) -> EmogenError:
        return _invalid(key, source, f"must be {expected}", f"{value!r} ({type(value).__name__})")

    if origin is list:
        items = [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise bad("a list")
        return [_coerce(key, item, args[0], source) for item in items]
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise bad("an integer")
        try:
            return int(value)
        except ValueError:
            raise bad("an integer") from None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad("a number")
        try:
            number = float(value)
        except ValueError:
            raise bad("a number") from None
        if not math.isfinite(number):
            raise bad("a finite number")
        return number
    if hint is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise bad("a string")
        return str(value)
    raise bad(str(hint))  # pragma: no cover - every field type is handled above


def _invalid(key: str, source: str, must: str, got: Any) -> EmogenError:
    """One line naming the option (or the config key and file) and the bad value."""
    if source.startswith("--"):
        return EmogenError(f"{source} {must}; got {got} (config key {key}).",
                           f"Run the command with --help to see what {source} takes.")
    return EmogenError(f"Config key '{key}' {must}; got {got} in {source}.",
                       "Fix the value in the config file or on the command line.")


def _check(key: str, value: Any, source: str) -> None:
    allowed = CHOICES.get(key)
    if allowed and isinstance(value, list) and not value:  # `--metrics ""` would silently do nothing
        raise _invalid(key, source, f"must name at least one of {', '.join(allowed)}", "nothing")
    for item in value if isinstance(value, list) else [value]:
        if allowed and item not in allowed:
            raise _invalid(key, source, f"must be one of {', '.join(allowed)}", f"'{item}'")
    if value is None or isinstance(value, (list, str, bool)):
        if key == "runtime.device" and isinstance(value, str) and not choices.check_device_name(value):
            raise _invalid(key, source, "must be auto, cpu, mps, cuda or cuda:N", f"'{value}'")
        return
    if key in POSITIVE and value <= 0:
        raise _invalid(key, source, "must be positive", value)
    if (key in NON_NEGATIVE or key in AT_MOST) and value < 0:
        raise _invalid(key, source, "must not be negative", value)
    if key in AT_MOST and value > AT_MOST[key]:
        raise _invalid(key, source, f"must be at most {AT_MOST[key]:,}".replace(",", "_"), value)
    if key in MULTIPLE_OF_8 and value % 8:
        raise _invalid(key, source, "must be a multiple of 8", value)


# Keys that name a file, a folder or a hub id: a name no file system accepts is one line when the config is built,
# not an OSError wherever the path is first touched.
PATH_KEYS = {
    "model.pretrained", "model.clip", "data.root", "data.prepared", "encoder.backbone", "encoder.output",
    "mapper.encoder", "mapper.confidence", "mapper.output", "mapper.emotional_attributes", "mapper.emotion_probe",
    "generate.mapper", "generate.output", "evaluate.reference", "evaluate.probe", "evaluate.object_model",
    "evaluate.scene_model",
}
# A config file is a few kilobytes (configs/default.yaml: 5 KB) and a few levels deep; larger or deeper input is
# refused before it is parsed (PyYAML takes minutes and gigabytes for a 1 GB string, and recurses per level).
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 32


def _set(config: Config, key: str, value: Any, source: str, explicit: bool = True) -> None:
    if key not in _all_keys():
        close = difflib.get_close_matches(key, _all_keys(), n=1)
        hint = f"Did you mean '{close[0]}'?" if close else "See configs/default.yaml for every key."
        raise EmogenError(f"Unknown config key '{key}' in {source}.", hint)
    section_name, name = key.split(".")
    section = getattr(config, section_name)
    hint = typing.get_type_hints(type(section))[name]
    legacy = LEGACY.get(key, {})
    if isinstance(value, (bool, str)) and (value.lower() if isinstance(value, str) else value) in legacy:
        value = legacy[value.lower() if isinstance(value, str) else value]
    coerced = _coerce(key, value, hint, source)
    if key in CHOICES:  # choices are lower case; "FID" means "fid"
        coerced = [v.lower() for v in coerced] if isinstance(coerced, list) else coerced.lower()
    _check(key, coerced, source)
    if key in PATH_KEYS and isinstance(coerced, str):
        from emogen_cli.core.validate import path_length

        if (why := path_length(coerced)) is not None:
            raise _invalid(key, source, f"is {why}", f"'{_short(coerced)}'")
    setattr(section, name, coerced)
    if explicit:
        config.__dict__.setdefault("_explicit", set()).add(key)
    else:  # a config file's value equal to the built-in default is the default (a verbatim copy of default.yaml)
        default = getattr(type(section)(), name)
        if coerced != default:
            config.__dict__.setdefault("_explicit", set()).add(key)
        else:
            config.__dict__.setdefault("_explicit", set()).discard(key)


def _short(text: str) -> str:
    from emogen_cli.core.files import short_path

    return short_path(text)


def _flatten(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in data.items():
        if not isinstance(values, Mapping):
            if f"{section}" in {s.name for s in dataclasses.fields(Config)}:
                raise EmogenError(f"Config section '{section}' must be a mapping of keys in {source}.")
            flat[str(section)] = values  # reported as an unknown key by _set
            continue
        for name, value in values.items():
            flat[f"{section}.{name}"] = value
    return flat


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                flags: Mapping[str, str] | None = None) -> Config:
    """Defaults <- YAML file (if any) <- overrides (dotted keys; None values are ignored).

    `flags` names the command-line option of each override key, so a bad value is reported as
    "--steps must be positive" rather than by its config key. Every override, and every file key whose value
    is not the built-in default, is remembered (`Config.is_explicit`)."""
    config = Config()
    if path is not None:
        import yaml

        path = Path(path)
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise EmogenError(f"Config file '{path}' {what}.", "Pass an existing YAML file to --config.")
        try:
            text = _read_config_text(path)
            _check_depth(yaml, text, path)
            data = yaml.safe_load(text) or {}
        except UnicodeDecodeError as exc:
            raise EmogenError(f"Config file '{path}' is not UTF-8 text (byte {exc.start}).",
                              "Save the YAML file as UTF-8.") from None
        except OSError as exc:
            raise EmogenError(f"Cannot read config file '{path}': {exc.strerror or exc}.") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise EmogenError(f"Config file '{path}' is not valid YAML{where}: {problem}.".replace("\n", " ")) from None
        if not isinstance(data, Mapping):
            raise EmogenError(f"Config file '{path}' must contain a mapping of sections.")
        for key, value in _flatten(data, str(path)).items():
            _set(config, key, value, str(path), explicit=False)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(config, key, value, (flags or {}).get(key, "command-line options"))
    return config


def _read_config_text(path: Path) -> str:
    """The file's text, refused unread when it is larger than any config (MAX_CONFIG_BYTES)."""
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        size = path.stat().st_size
        raise EmogenError(f"Config file '{path}' is {size / 2**20:.1f} MiB; a config file is at most "
                          f"{MAX_CONFIG_BYTES // 2**20} MiB.", "Pass the YAML config (configs/default.yaml is 5 KB), "
                          "not a data file.")
    return data.decode("utf-8")


def _check_depth(yaml: Any, text: str, path: Path) -> None:
    """Refuse nesting deeper than MAX_CONFIG_DEPTH before composing the document: PyYAML's parser is a state
    machine (no recursion), its composer recurses once per level."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                mark = event.start_mark
                where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
                raise EmogenError(f"Config file '{path}' nests more than {MAX_CONFIG_DEPTH} levels deep{where}.",
                                  "A config holds sections of keys: see configs/default.yaml.")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
