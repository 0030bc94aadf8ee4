"""Stage 1: the ResNet-50 emotion classifier, the 768-d emotion space, and official-artefact import.

Classifier: ResNet (transformers) -> global average pool -> fc_1 Linear(C, 768) -> ReLU ->
Dropout(0.5) -> fc_2 Linear(768, 8). The *encoder* is everything up to fc_1's output; the
*emotion space* is one diagonal Gaussian (mean, std) of encoder features per emotion.

An encoder folder holds config.json (class order, dims, backbone config, preprocessing),
model.safetensors (absent for an imported emotion space only) and emotion_space.safetensors.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import EmogenError, load_failure
from emogen_cli.core.files import (
    atomic_save_safetensors,
    check_bundle_files,
    check_finite,
    check_not_lfs_pointer,
    check_shapes,
    read_bundle_config,
    read_safetensors,
    write_bundle,
)
from emogen_cli.core.images import stage1_image, stage1_stats, to_array

FORMAT = "emogen-encoder"
SPACE_FILE = "emotion_space.safetensors"


class EmotionClassifier(nn.Module):
    def __init__(self, backbone_config: Any, emotion_dim: int = 768, num_emotions: int = 8, dropout: float = 0.5) -> None:
        super().__init__()
        from transformers import ResNetModel

        self.backbone = ResNetModel(backbone_config)
        self.fc_1 = nn.Linear(backbone_config.hidden_sizes[-1], emotion_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc_2 = nn.Linear(emotion_dim, num_emotions)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images -> emotion-space vectors (fc_1 output, before the ReLU)."""
        return self.fc_1(self.backbone(pixel_values).pooler_output.flatten(1))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.fc_2(self.dropout(F.relu(self.encode(pixel_values))))


@dataclass
class EmotionSpace:
    """Per-emotion diagonal Gaussians over encoder features, with their class order."""

    emotions: tuple[str, ...]
    mean: torch.Tensor  # [E, D]
    std: torch.Tensor  # [E, D]
    count: torch.Tensor  # [E]

    @property
    def dim(self) -> int:
        return self.mean.shape[1]

    def index(self, emotion: str) -> int:
        return self.emotions.index(emotion)

    def sample(self, emotion: str, generator: torch.Generator) -> torch.Tensor:
        i = self.index(emotion)
        noise = torch.randn(self.dim, generator=generator, dtype=torch.float32)
        return self.mean[i] + self.std[i] * noise

    def samples(self, emotion: str, seeds: list[int]) -> torch.Tensor:
        """[len(seeds), dim]: one sample per seed, each from its own generator (batch-size independent)."""
        return torch.stack([self.sample(emotion, torch.Generator().manual_seed(s)) for s in seeds])

    @classmethod
    def from_features(cls, features: torch.Tensor, labels: torch.Tensor, emotions: tuple[str, ...]) -> "EmotionSpace":
        means, stds, counts = [], [], []
        for i in range(len(emotions)):
            f = features[labels == i].double()
            if len(f) == 0:
                raise EmogenError(f"No training image of emotion '{emotions[i]}' to build the emotion space from.")
            means.append(f.mean(0))
            stds.append(f.std(0, correction=1 if len(f) > 1 else 0))
            counts.append(len(f))
        return cls(emotions, torch.stack(means).float(), torch.stack(stds).float(), torch.tensor(counts))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.contiguous(), "std": self.std.contiguous(), "count": self.count}

    def metadata(self) -> dict[str, str]:
        return {"emotions": json.dumps(list(self.emotions))}

    def save(self, path: Path) -> None:
        atomic_save_safetensors(path, self.tensors(), metadata=self.metadata())

    def write(self, path: Path) -> None:
        """Write to exactly `path` (a bundle's staged temporary file)."""
        save_file(self.tensors(), str(path), metadata=self.metadata())

    @classmethod
    def load(cls, path: Path, dim: int | None = None) -> "EmotionSpace":
        """The space in `path`; damage, wrong shapes (or not `dim`-d), NaN/inf and bad class lists are one line."""
        path = Path(path)
        tensors, metadata = read_safetensors(path, "Emotion space", _SPACE_HINT, with_metadata=True)
        try:
            emotions = tuple(json.loads(metadata["emotions"]))
            if not emotions or not all(isinstance(e, str) for e in emotions) or len(set(emotions)) != len(emotions):
                raise ValueError("not a list of distinct names")
        except (KeyError, ValueError, TypeError) as exc:
            raise EmogenError(f"Emotion space '{path}' has no valid emotion list in its metadata ({exc}).",
                              _SPACE_HINT) from None
        n, d = len(emotions), (dim if dim is not None else tensors["mean"].shape[-1] if "mean" in tensors else 0)
        check_shapes(tensors, {"mean": (n, d), "std": (n, d), "count": (n,)}, path, "Emotion space", _SPACE_HINT)
        check_finite(tensors, path, "Emotion space", _SPACE_HINT)
        if (tensors["std"] < 0).any():
            raise EmogenError(f"Emotion space '{path}' has negative standard deviations.", _SPACE_HINT)
        return cls(emotions, tensors["mean"].float(), tensors["std"].float(), tensors["count"])


_SPACE_HINT = "Rebuild it with `emogen train-encoder` (or --import-official)."
_ENCODER_HINT = "Pass a folder written by `emogen train-encoder`, or train / import it again."


@dataclass
class EncoderBundle:
    """What stage 1 produces and stage 2 / inference consume."""

    config: dict[str, Any]
    space: EmotionSpace
    model: EmotionClassifier | None = None

    @property
    def emotions(self) -> tuple[str, ...]:
        return tuple(self.config["emotions"])

    def save(self, path: Path) -> None:
        """Replace the bundle only once its new files are all complete (config.json last)."""
        files: dict[str, Any] = {SPACE_FILE: self.space.write}
        if self.model is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            files["model.safetensors"] = lambda p: save_file(state, str(p))
        write_bundle(path, files, self.config)


def build_classifier(config: dict[str, Any]) -> EmotionClassifier:
    from transformers import ResNetConfig

    return EmotionClassifier(ResNetConfig.from_dict(config["backbone_config"]), config["emotion_dim"],
                             len(config["emotions"]), config.get("dropout", 0.5))


def _check_encoder_config(path: Path, config: dict[str, Any]) -> None:
    where = path / "config.json"
    emotions = config.get("emotions")
    if not (isinstance(emotions, list) and emotions and all(isinstance(e, str) for e in emotions)):
        raise EmogenError(f"Encoder config '{where}' has no list of emotion names.", _ENCODER_HINT)
    dim = config.get("emotion_dim")
    if not (isinstance(dim, int) and not isinstance(dim, bool) and dim > 0):
        raise EmogenError(f"Encoder config '{where}' has no positive integer emotion_dim (got {dim!r}).", _ENCODER_HINT)
    for key in ("image_size",):
        if not (isinstance(config.get(key), int) and config[key] > 0):
            raise EmogenError(f"Encoder config '{where}' has no positive integer {key} (got {config.get(key)!r}).",
                              _ENCODER_HINT)
    for key in ("image_mean", "image_std"):
        value = config.get(key)
        if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
            raise EmogenError(f"Encoder config '{where}' has no 3-value {key} (got {value!r}).", _ENCODER_HINT)


_BACKBONE_SIZES = {"num_channels": (1, 64), "embedding_size": (1, 1 << 14), "hidden_sizes": (1, 1 << 15),
                   "depths": (0, 256), "num_labels": (1, 1 << 16)}
MAX_ENCODER_PARAMETERS = 500_000_000  # ResNet-50 has 25M, ResNet-152 60M: more is a damaged or hostile config


def _buildable_classifier(path: Path, config: dict[str, Any]) -> EmotionClassifier:
    """The classifier `config` describes, first built on the meta device (no memory, no weights): a backbone_config
    that transformers refuses (any error type: it validates with its own), that has negative sizes, or that would
    allocate more than MAX_ENCODER_PARAMETERS is one line naming the bundle, before a byte is allocated."""
    where = path / "config.json"
    backbone = config.get("backbone_config")
    if not isinstance(backbone, dict):
        raise EmogenError(f"Encoder config '{where}' has no backbone_config.", _ENCODER_HINT)
    for key, (low, high) in _BACKBONE_SIZES.items():  # before building: a million-layer stage takes minutes even on meta
        value = backbone.get(key)
        values = value if isinstance(value, list) and len(value) <= 16 else [value]
        if value is not None and not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
                                         for v in values):
            expected = "a list of up to 16 integers" if isinstance(value, list) else "an integer"
            raise EmogenError(f"Encoder config '{where}' has backbone_config.{key} = {repr(value)[:80]}; expected "
                              f"{expected} in [{low}, {high}].", _ENCODER_HINT)
    try:
        with torch.device("meta"):
            shape = build_classifier(config)
    except Exception as exc:  # noqa: BLE001 - only the bundle's config went in: every failure is a bad config
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise EmogenError(f"Encoder config '{where}' describes no buildable ResNet in backbone_config ({reason}).",
                          _ENCODER_HINT) from None
    count = sum(p.numel() for p in shape.parameters())
    if count > MAX_ENCODER_PARAMETERS:
        raise EmogenError(f"Encoder config '{where}' describes a backbone of {count:,} parameters (at most "
                          f"{MAX_ENCODER_PARAMETERS:,}): its backbone_config is damaged.", _ENCODER_HINT)
    try:
        return build_classifier(config)
    except (RuntimeError, ValueError) as exc:  # what meta tensors cannot show (e.g. memory)
        raise EmogenError(f"Cannot build the encoder of '{where}' ({str(exc).splitlines()[0][:200]}).",
                          _ENCODER_HINT) from None


def load_encoder(path: str | Path, with_model: bool = True) -> EncoderBundle:
    """An encoder bundle, every file checked: damage, wrong shapes or class counts, NaN/inf are one line."""
    path = Path(path)
    config = read_bundle_config(path, FORMAT, "emogen train-encoder")
    _check_encoder_config(path, config)
    check_bundle_files(path, config, "Encoder", _ENCODER_HINT)
    space = EmotionSpace.load(path / SPACE_FILE, dim=config["emotion_dim"])
    if list(space.emotions) != list(config["emotions"]):
        raise EmogenError(f"Emotion space '{path / SPACE_FILE}' lists {list(space.emotions)}, but the encoder config "
                          f"lists {config['emotions']}.", _ENCODER_HINT)
    model = None
    if with_model:
        if not (path / "model.safetensors").is_file():
            raise EmogenError(f"The encoder in '{path}' holds an emotion space but no classifier weights, and this step "
                              "encodes images with the stage-1 classifier.",
                              "Put the official weights/image_encoder/*.pth in the EmoGen clone (`git lfs pull`) and run "
                              "`emogen train-encoder --import-official CLONE` again, or train one with `emogen train-encoder`.")
        model = _buildable_classifier(path, config)
        weights = read_safetensors(path / "model.safetensors", "Encoder weights", _ENCODER_HINT)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        check_shapes(weights, expected, path / "model.safetensors", "Encoder weights", _ENCODER_HINT)
        check_finite(weights, path / "model.safetensors", "Encoder weights", _ENCODER_HINT)
        model.load_state_dict(weights)
        model.eval()
    return EncoderBundle(config, space, model)


def encoder_config(backbone_config: Any, backbone: str, emotion_dim: int, dropout: float, image_size: int,
                   emotions: tuple[str, ...] = EMOTIONS, preprocessing: str = "official", **extra: Any) -> dict[str, Any]:
    mean, std = stage1_stats(preprocessing)
    return {
        "format": FORMAT, "version": 1, "emotions": list(emotions), "emotion_dim": emotion_dim, "dropout": dropout,
        "backbone": backbone, "backbone_config": backbone_config.to_dict(), "image_size": image_size,
        "preprocessing": preprocessing, "image_mean": list(mean), "image_std": list(std), **extra,
    }


def encoder_pixels(image: Any, config: dict[str, Any]):
    """A PIL image -> the CHW float array the encoder in `config` was trained on. Bundles written before
    `preprocessing` was recorded used the ImageNet pipeline."""
    preprocessing = config.get("preprocessing", "imagenet")
    return to_array(stage1_image(image, config["image_size"], preprocessing), config["image_mean"], config["image_std"])


# --- official EmoGen artefacts --------------------------------------------------------------------------------------

_SEQUENTIAL = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def torchvision_to_hf(key: str) -> str | None:
    """torchvision ResNet parameter name -> transformers ResNetModel name (None: not part of the backbone)."""
    if m := re.fullmatch(r"conv1\.(\w+)", key):
        return f"embedder.embedder.convolution.{m[1]}"
    if m := re.fullmatch(r"bn1\.(\w+)", key):
        return f"embedder.embedder.normalization.{m[1]}"
    if m := re.fullmatch(r"layer(\d)\.(\d+)\.conv(\d)\.(\w+)", key):
        return f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[3]) - 1}.convolution.{m[4]}"
    if m := re.fullmatch(r"layer(\d)\.(\d+)\.bn(\d)\.(\w+)", key):
        return f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[3]) - 1}.normalization.{m[4]}"
    if m := re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.([01])\.(\w+)", key):
        part = "convolution" if m[3] == "0" else "normalization"
        return f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.shortcut.{part}.{m[4]}"
    return None


def _official_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The torchvision-named backbone tensors of an official BackBone state dict ('cnn.*' or 'backbone.N.*')."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("cnn.") for k in state):
        return {k[4:]: v for k, v in state.items() if k.startswith("cnn.")}
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"backbone\.(\d)\.(.+)", key):
            if m[1] in _SEQUENTIAL:
                out[f"{_SEQUENTIAL[m[1]]}.{m[2]}"] = value
        elif not key.startswith(("fc_1.", "fc_2.", "fc.")):
            out[key] = value  # bare torchvision names
    return out


def _resnet_config_from_state(tv: dict[str, torch.Tensor]) -> Any:
    """Infer the ResNet architecture (depths, widths, block type) from torchvision tensors."""
    from transformers import ResNetConfig

    bottleneck = any(re.fullmatch(r"layer1\.0\.conv3\.weight", k) for k in tv)
    last_conv = "conv3" if bottleneck else "conv2"
    depths, hidden = [], []
    for stage in range(1, 5):
        blocks = {int(m[1]) for k in tv if (m := re.fullmatch(rf"layer{stage}\.(\d+)\..*", k))}
        if not blocks:
            break
        depths.append(max(blocks) + 1)
        hidden.append(tv[f"layer{stage}.0.{last_conv}.weight"].shape[0])
    return ResNetConfig(num_channels=3, embedding_size=tv["conv1.weight"].shape[0], hidden_sizes=hidden, depths=depths,
                        layer_type="bottleneck" if bottleneck else "basic", hidden_act="relu")


def resnet_from_torchvision(state: dict[str, torch.Tensor], prefix: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """A torchvision ResNet state dict -> (transformers ResNetConfig, its backbone tensors named `prefix` + HF names)."""
    converted = {f"{prefix}{torchvision_to_hf(k)}": v for k, v in state.items() if torchvision_to_hf(k)}
    return _resnet_config_from_state(state), converted


def load_tensors(path: Path) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, one clear error otherwise."""
    check_not_lfs_pointer(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a plain tensor file"
        raise EmogenError(f"Cannot read '{path}' as a plain tensor file: {load_failure(exc)}.",
                          "Only official EmoGen .pt/.pth files (tensors and state dicts) can be imported.") from None


def refuse_overwrite(out: Path, names: tuple[str, ...], overwrite: bool) -> None:
    """An import never replaces existing bundle files unless asked to."""
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise EmogenError(f"'{out}' already holds {', '.join(existing)}.", "Choose another --out, or pass --overwrite.")


def import_official(src: str | Path, out: str | Path, image_size: int = 224, overwrite: bool = False) -> EncoderBundle:
    """Convert emo_space/{emotion}_{mean,std}_v2.pt (+ the image_encoder .pth if present) into our format.

    The official encoder saw Resize(256) -> CenterCrop(224) -> Normalize(0.5, 0.5) inputs, so the bundle
    records the official preprocessing whatever encoder.preprocessing says."""
    src, out = Path(src), Path(out)
    refuse_overwrite(out, ("config.json", "model.safetensors", SPACE_FILE), overwrite)
    space_dir = next((p for p in [src / "emo_space", src] if (p / f"{EMOTIONS[0]}_mean_v2.pt").is_file()), None)
    if space_dir is None:
        raise EmogenError(f"No official emotion space found in '{src}' (expected emo_space/amusement_mean_v2.pt ...).",
                          "Pass the root of the official EmoGen repository or its emo_space/ folder.")
    means, stds = [], []
    for emotion in EMOTIONS:
        for kind, bucket in (("mean", means), ("std", stds)):
            file = space_dir / f"{emotion}_{kind}_v2.pt"
            if not file.is_file():
                raise EmogenError(f"Missing official file '{file}'.", "All 16 emo_space/*_v2.pt files are needed.")
            tensor = load_tensors(file)
            if not torch.is_tensor(tensor):
                raise EmogenError(f"'{file}' does not hold a tensor.")
            bucket.append(tensor.float().flatten())
    if len({t.numel() for t in means + stds}) != 1:
        raise EmogenError(f"The official emotion-space files in '{space_dir}' have different sizes.")
    space = EmotionSpace(EMOTIONS, torch.stack(means), torch.stack(stds), torch.zeros(len(EMOTIONS), dtype=torch.long))

    weights = sorted(src.glob("weights/image_encoder/*.pth")) + sorted(src.glob("*.pth"))
    model, backbone_config = None, None
    for file in weights:
        state = load_tensors(file)
        if not (isinstance(state, dict) and "fc_1.weight" in {k.removeprefix("module.") for k in state}):
            continue
        state = {k.removeprefix("module."): v for k, v in state.items()}
        backbone_config, converted = resnet_from_torchvision(_official_backbone(state), "backbone.")
        fc2 = next(k[: -len(".weight")] for k in ("fc_2.2.weight", "fc_2.weight") if k in state)
        converted.update({"fc_1.weight": state["fc_1.weight"], "fc_1.bias": state["fc_1.bias"],
                          "fc_2.weight": state[f"{fc2}.weight"], "fc_2.bias": state[f"{fc2}.bias"]})
        model = EmotionClassifier(backbone_config, state["fc_1.weight"].shape[0], state[f"{fc2}.weight"].shape[0])
        missing, unexpected = model.load_state_dict(converted, strict=False)
        if missing or unexpected:
            raise EmogenError(f"'{file}' does not match a torchvision ResNet + fc_1/fc_2 classifier "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]}).")
        if model.fc_1.out_features != space.dim:
            raise EmogenError(f"'{file}' encodes to {model.fc_1.out_features}-d but the emotion space is {space.dim}-d.")
        break
    from transformers import ResNetConfig

    config = encoder_config(backbone_config or ResNetConfig(), "official EmoGen (imported)", space.dim, 0.5, image_size,
                            preprocessing="official", source=str(src), has_model=model is not None,
                            space_splits="all EmoSet images (official emo_space)")
    check_finite({"mean": space.mean, "std": space.std}, space_dir, "Official emotion space")
    bundle = EncoderBundle(config, space, model)
    bundle.save(out)
    if model is None:
        (out / "model.safetensors").unlink(missing_ok=True)  # an overwritten bundle's old classifier is not ours
    return bundle
