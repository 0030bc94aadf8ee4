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
from safetensors.torch import load_file, save_file
from torch import nn

from emogen_cli.emotions import EMOTIONS
from emogen_cli.errors import EmogenError
from emogen_cli.images import stage1_image, stage1_stats, to_array

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

    def save(self, path: Path) -> None:
        save_file({"mean": self.mean.contiguous(), "std": self.std.contiguous(), "count": self.count},
                  str(path), metadata={"emotions": json.dumps(list(self.emotions))})

    @classmethod
    def load(cls, path: Path) -> "EmotionSpace":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            emotions = tuple(json.loads(f.metadata()["emotions"]))
            return cls(emotions, f.get_tensor("mean"), f.get_tensor("std"), f.get_tensor("count"))


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
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.config, indent=2))
        if self.model is not None:
            save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(path / "model.safetensors"))
        self.space.save(path / SPACE_FILE)


def build_classifier(config: dict[str, Any]) -> EmotionClassifier:
    from transformers import ResNetConfig

    return EmotionClassifier(ResNetConfig.from_dict(config["backbone_config"]), config["emotion_dim"],
                             len(config["emotions"]), config.get("dropout", 0.5))


def read_bundle_config(path: Path, expected: str, producer: str) -> dict[str, Any]:
    """config.json of an emogen output folder, checked to be of the `expected` format."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise EmogenError(f"'{path}' is not an {expected} folder (no readable config.json).",
                          f"Pass the folder written by `{producer}`.") from None
    if config.get("format") != expected:
        raise EmogenError(f"'{path}' holds a '{config.get('format', 'unknown')}' folder, not an {expected} folder.",
                          f"Pass the folder written by `{producer}`.")
    return config


def load_encoder(path: str | Path, with_model: bool = True) -> EncoderBundle:
    path = Path(path)
    config = read_bundle_config(path, FORMAT, "emogen train-encoder")
    space = EmotionSpace.load(path / SPACE_FILE)
    model = None
    if with_model:
        if not (path / "model.safetensors").is_file():
            raise EmogenError(f"The encoder in '{path}' holds an emotion space but no classifier weights, and this step "
                              "encodes images with the stage-1 classifier.",
                              "Put the official weights/image_encoder/*.pth in the EmoGen clone (`git lfs pull`) and run "
                              "`emogen train-encoder --import-official CLONE` again, or train one with `emogen train-encoder`.")
        model = build_classifier(config)
        model.load_state_dict(load_file(str(path / "model.safetensors")))
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


LFS_HEADER = b"version https://git-lfs"


def is_lfs_pointer(path: str | Path) -> bool:
    """A Git LFS pointer file (what a clone without `git lfs` holds instead of the data): tiny, text, fixed header."""
    try:
        with open(path, "rb") as f:
            return f.read(len(LFS_HEADER)) == LFS_HEADER and Path(path).stat().st_size < 1024
    except OSError:
        return False


def check_not_lfs_pointer(path: str | Path) -> None:
    """One line instead of an unpickling error when an official file is an LFS pointer."""
    if is_lfs_pointer(path):
        raise EmogenError(f"'{path}' is a Git LFS pointer, not the weights: run `git lfs pull` in the EmoGen clone.")


def load_tensors(path: Path) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, one clear error otherwise."""
    check_not_lfs_pointer(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a plain tensor file"
        raise EmogenError(f"Cannot read '{path}' as a plain tensor file: {str(exc).splitlines()[0][:200]}",
                          "Only official EmoGen .pt/.pth files (tensors and state dicts) can be imported.") from None


def import_official(src: str | Path, out: str | Path, image_size: int = 224) -> EncoderBundle:
    """Convert emo_space/{emotion}_{mean,std}_v2.pt (+ the image_encoder .pth if present) into our format.

    The official encoder saw Resize(256) -> CenterCrop(224) -> Normalize(0.5, 0.5) inputs, so the bundle
    records the official preprocessing whatever encoder.preprocessing says."""
    src, out = Path(src), Path(out)
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
    bundle = EncoderBundle(config, space, model)
    bundle.save(out)
    return bundle
