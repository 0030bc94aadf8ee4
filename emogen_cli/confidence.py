"""Emotion confidence c(attribute, emotion) from a CLIP-space emotion classifier.

The classifier (the paper's 83%-accurate probe) is a Linear(P, 8) on CLIP image features
(`get_image_features`). It is trained here on the prepared images (or the official
`{fc.weight, fc.bias}` .pth is loaded with weights_only=True); c(attribute, emotion) is the mean
probability it assigns to the emotion over the images having that attribute. Attributes whose
images spread over all emotions get low confidence: they are emotion-agnostic.
The official attr_coefficient_*.pkl tables can be converted to our JSON with a restricted
unpickler that only rebuilds numpy arrays, lists and dicts.
"""

from __future__ import annotations

import io
import json
import pickle
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emogen_cli.emotions import EMOTIONS, normalise_attribute
from emogen_cli.errors import EmogenError


def train_probe(features: torch.Tensor, labels: torch.Tensor, seed: int = 0, steps: int = 300,
                lr: float = 1e-2) -> tuple[nn.Linear, float]:
    """Full-batch AdamW logistic regression; returns the probe and its accuracy on a 20% hold-out."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(features), generator=g)
    held = order[: len(order) // 5] if len(order) >= 10 else order[:0]
    train = order[len(held):]
    probe = nn.Linear(features.shape[1], len(EMOTIONS))
    torch.manual_seed(seed)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(probe(features[train]), labels[train]).backward()
        opt.step()
    with torch.no_grad():
        test = held if len(held) else train
        accuracy = (probe(features[test]).argmax(1) == labels[test]).float().mean().item()
    return probe.eval(), accuracy


@torch.no_grad()
def confidence_table(probe: nn.Linear, features: torch.Tensor, attributes: list[str]) -> dict[str, list[float]]:
    """c(attribute, .) = mean emotion probability over the images with that attribute."""
    probs = probe(features).softmax(-1)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, attribute in enumerate(attributes):
        groups[attribute].append(i)
    return {a: probs[idx].mean(0).tolist() for a, idx in sorted(groups.items())}


def load_confidence(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        table = data["attributes"]
        order = data.get("emotions", list(EMOTIONS))
        if not all(isinstance(v, list) and len(v) == len(order) for v in table.values()):
            raise ValueError("every attribute needs one value per emotion")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmogenError(f"Cannot read the emotion confidence table '{path}' ({exc}).",
                          "Pass a JSON written by emogen (confidence.json) or converted with --import-official-confidence.") from None
    if list(order) != list(EMOTIONS):  # store everything in our order
        table = {a: [v[order.index(e)] for e in EMOTIONS] for a, v in table.items()}
    return {**data, "emotions": list(EMOTIONS), "attributes": table}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and scalars, and nothing else."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_official_pickle(path: Path) -> Any:
    try:
        return _ArraysOnly(io.BytesIO(Path(path).read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        raise EmogenError(f"Cannot read '{path}' as an official EmoGen table ({exc}).",
                          "Only plain tables of numpy arrays, lists and dicts are accepted.") from None


def import_official_confidence(src: str | Path, out: str | Path) -> dict[str, Any]:
    """dataset_balance/attr_coefficient_emotion_{object,scene}.pkl -> our confidence JSON."""
    src = Path(src)
    folder = src / "dataset_balance" if (src / "dataset_balance").is_dir() else src
    table: dict[str, list[float]] = {}
    for kind in ("scene", "object"):
        file = folder / f"attr_coefficient_emotion_{kind}.pkl"
        if not file.is_file():
            continue
        data = read_official_pickle(file)
        if not isinstance(data, dict):
            raise EmogenError(f"'{file}' is not an attribute -> coefficients table.")
        for name, values in data.items():
            row = np.asarray(values, dtype=np.float64).reshape(-1)
            if row.size != len(EMOTIONS):
                raise EmogenError(f"'{file}' gives {row.size} values for '{name}', expected {len(EMOTIONS)}.")
            table[normalise_attribute(str(name))] = row.tolist()
    if not table:
        raise EmogenError(f"No attr_coefficient_emotion_*.pkl found in '{folder}'.",
                          "Pass the official repository root or its dataset_balance/ folder.")
    result = {"emotions": list(EMOTIONS), "method": "official EmoGen attr_coefficient tables", "source": str(src),
              "attributes": dict(sorted(table.items()))}
    Path(out).write_text(json.dumps(result, indent=1))
    return result


def load_probe(path: str | Path) -> nn.Linear:
    """A CLIP-space emotion probe {fc.weight, fc.bias}: ours (.safetensors) or the official
    Clip_emotion_classifier .pth (read with weights_only=True). Outputs follow the official order."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        weight, bias = state["fc.weight"], state["fc.bias"]
    except Exception as exc:  # noqa: BLE001 - any failure means "not a probe file"
        raise EmogenError(f"Cannot read the emotion probe '{path}' ({str(exc).splitlines()[0][:200]}).",
                          "Pass emotion_probe.safetensors from a mapper bundle or the official classifier .pth.") from None
    probe = nn.Linear(weight.shape[1], weight.shape[0])
    probe.load_state_dict({"weight": weight, "bias": bias})
    return probe.eval()
