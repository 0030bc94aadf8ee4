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
import math
import pickle
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emogen_cli.core.emotions import EMOTIONS, normalise_attribute
from emogen_cli.core.errors import EmogenError, load_failure
from emogen_cli.core.files import atomic_write_json, check_finite, read_json, read_safetensors


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
    """A confidence table {"attributes": {name: [one finite value per emotion]}, "emotions": [...]}, checked."""
    path = Path(path)
    hint = "Pass a JSON written by emogen (confidence.json) or converted with --import-official-confidence."
    data = read_json(path, "Emotion confidence table", hint)
    try:
        if not isinstance(data, dict) or not isinstance(data.get("attributes"), dict):
            raise ValueError("no 'attributes' object")
        table = data["attributes"]
        order = data.get("emotions", list(EMOTIONS))
        if not (isinstance(order, list) and sorted(map(str, order)) == sorted(EMOTIONS)):
            raise ValueError(f"its emotions {order!r} are not the eight EmoSet emotions")
        for name, v in table.items():
            if not (isinstance(v, list) and len(v) == len(order)
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
                raise ValueError(f"'{name}' needs one number per emotion ({len(order)})")
            if not all(math.isfinite(x) for x in v):
                raise ValueError(f"'{name}' holds NaN or infinite values")
    except ValueError as exc:
        raise EmogenError(f"Emotion confidence table '{path}' is not usable: {exc}.", hint) from None
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


MAX_PICKLE_BYTES = 256 << 20  # the official tables are a few MB


def read_official_pickle(path: Path) -> Any:
    """Unpickle numpy tables only; crafted files (other classes, absurd declared sizes, truncation, Git LFS
    pointers) are one line."""
    from emogen_cli.core.files import check_not_lfs_pointer

    hint = "Only plain tables of numpy arrays, lists and dicts are accepted."
    path = Path(path)
    check_not_lfs_pointer(path)
    if path.stat().st_size > MAX_PICKLE_BYTES:
        raise EmogenError(f"'{path}' is {path.stat().st_size >> 20} MB: too large for an official EmoGen table.", hint)
    try:
        return _ArraysOnly(io.BytesIO(path.read_bytes())).load()
    except MemoryError:
        raise EmogenError(f"Cannot read '{path}' as an official EmoGen table (it declares a data size larger than "
                          "memory).", hint) from None
    except Exception as exc:  # noqa: BLE001 - any failure of a restricted unpickle means "not a plain table"
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EmogenError(f"Cannot read '{path}' as an official EmoGen table ({first}).", hint) from None


def import_official_confidence(src: str | Path, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """dataset_balance/attr_coefficient_emotion_{object,scene}.pkl -> our confidence JSON (never over an
    existing file unless `overwrite`)."""
    src = Path(src)
    if Path(out).exists() and not overwrite:
        raise EmogenError(f"'{out}' already exists.", "Choose another --out, or pass --overwrite to replace it.")
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
            try:
                row = np.asarray(values, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise EmogenError(f"'{file}' gives '{name}' values that are not numbers.") from None
            if not np.isfinite(row).all():
                raise EmogenError(f"'{file}' gives '{name}' NaN or infinite values.")
            if row.size != len(EMOTIONS):
                raise EmogenError(f"'{file}' gives {row.size} values for '{name}', expected {len(EMOTIONS)}.")
            table[normalise_attribute(str(name))] = row.tolist()
    if not table:
        raise EmogenError(f"No attr_coefficient_emotion_*.pkl found in '{folder}'.",
                          "Pass the official repository root or its dataset_balance/ folder.")
    result = {"emotions": list(EMOTIONS), "method": "official EmoGen attr_coefficient tables", "source": str(src),
              "attributes": dict(sorted(table.items()))}
    atomic_write_json(out, result, indent=1)
    return result


def load_probe(path: str | Path, classes: int | None = None, in_dim: int | None = None) -> nn.Linear:
    """A CLIP-space emotion probe {fc.weight, fc.bias}: ours (.safetensors) or the official
    Clip_emotion_classifier .pth (read with weights_only=True). Outputs follow the official order.
    Wrong shapes (e.g. not `classes` outputs, not `in_dim` inputs) and NaN/inf are one line."""
    from emogen_cli.core.files import check_not_lfs_pointer

    path = Path(path)
    hint = "Pass emotion_probe.safetensors from a mapper bundle or the official classifier .pth."
    if path.suffix == ".safetensors":
        state = read_safetensors(path, "Emotion probe", hint)
    else:
        if not path.is_file():
            raise EmogenError(f"Emotion probe '{path}' is missing.", hint)
        check_not_lfs_pointer(path)
        with path.open("rb") as f:
            magic = f.read(2)
        if magic[:1] != b"\x80" and magic != b"PK":  # neither a pickle (protocol >= 2) nor torch's zip format
            raise EmogenError(f"Cannot read the emotion probe '{path}' (it is not a PyTorch file).", hint)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means "not a probe file"
            raise EmogenError(f"Cannot read the emotion probe '{path}' ({load_failure(exc)}).", hint) from None
    if not isinstance(state, dict):
        raise EmogenError(f"Emotion probe '{path}' is not a state dict.", hint)
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    weight, bias = state.get("fc.weight"), state.get("fc.bias")
    if not (torch.is_tensor(weight) and torch.is_tensor(bias) and weight.ndim == 2 and bias.shape == weight.shape[:1]):
        raise EmogenError(f"Emotion probe '{path}' has no fc.weight [classes, dim] with a matching fc.bias.", hint)
    if classes is not None and weight.shape[0] != classes:
        raise EmogenError(f"Emotion probe '{path}' has {weight.shape[0]} outputs, expected {classes} (one per emotion).",
                          hint)
    if in_dim is not None and weight.shape[1] != in_dim:
        raise EmogenError(f"Emotion probe '{path}' takes {weight.shape[1]}-d features, but the CLIP model gives "
                          f"{in_dim}-d.", hint)
    check_finite({"fc.weight": weight, "fc.bias": bias}, path, "Emotion probe", hint)
    probe = nn.Linear(weight.shape[1], weight.shape[0])
    probe.load_state_dict({"weight": weight.float(), "bias": bias.float()})
    return probe.eval()


# --- the emotional attribute vocabulary (the classes of L_attr) -----------------------------------------------------

EMOTIONAL_MARGIN = 2.0  # an attribute is emotional when its top emotion's confidence is >= 2x the row's mean
OFFICIAL_RESOURCE = "resources/official_emotional_attributes.json"
# mapper.emotional_attributes: null (auto) uses the shipped official lists when at least this share of the prepared
# images has one of their attributes (EmoSet: about 40%), else the list derived from the confidence table.
EMOSET_SHARE = 0.1
PROBE_METHOD = "mean probability of a CLIP-space emotion probe"  # confidence tables emogen computes itself


def _official_folder(src: Path) -> Path:
    return src / "dataset_balance" if (src / "dataset_balance").is_dir() else src


def _from_lists(lists: dict[str, Any], source: str, where: str) -> dict[str, Any]:
    """{"object"|"scene": {emotion: [names]}} -> the vocabulary, in the order of the official `read_attr`: object
    lists, then scene lists, each emotion's names in file order. "entries" keeps every listed name (the official
    L_attr classes, a name under two emotions twice), "names" each name once."""
    by_emotion: dict[str, list[str]] = {e: [] for e in EMOTIONS}
    entries: list[str] = []
    for kind in ("object", "scene"):
        table = lists.get(kind) or {}
        if not isinstance(table, dict):
            raise EmogenError(f"'{where}' has a '{kind}' entry that is not emotion -> list of names.")
        for key, names in table.items():
            emotion = str(key).removeprefix("attr_").lower()
            if emotion not in by_emotion or not isinstance(names, (list, tuple)) \
                    or not all(isinstance(n, str) for n in names):
                raise EmogenError(f"'{where}' has an entry '{key}' that is not {{emotion}} -> list of names.")
            normalised = [normalise_attribute(n) for n in names]
            by_emotion[emotion].extend(normalised)
            entries.extend(normalised)
    return {"names": list(dict.fromkeys(entries)), "entries": entries,
            "by_emotion": {e: list(dict.fromkeys(v)) for e, v in by_emotion.items()}, "source": source}


def official_emotional_attributes() -> dict[str, Any]:
    """The official per-emotion lists (dataset_balance/{object,scene}_attr.pkl of the EmoGen repository, shipped
    with emogen as JSON): 278 entries, 274 distinct names, in read_attr's order."""
    from importlib import resources

    data = json.loads(resources.files("emogen_cli").joinpath(OFFICIAL_RESOURCE).read_text())
    return _from_lists(data, "official EmoGen {object,scene}_attr.pkl lists (shipped with emogen: "
                             f"emogen_cli/{OFFICIAL_RESOURCE})", OFFICIAL_RESOURCE)


def read_official_attributes(src: str | Path) -> dict[str, Any]:
    """dataset_balance/{object,scene}_attr.pkl ("attr_{emotion}" -> names) -> the emotional vocabulary:
    {"names": each name once, "entries": the official concatenation (object, then scene, as read_attr; duplicates
    kept), "by_emotion": ..., "source"}."""
    src = Path(src)
    folder = _official_folder(src)
    lists: dict[str, Any] = {}
    for kind in ("object", "scene"):
        file = folder / f"{kind}_attr.pkl"
        if not file.is_file():
            continue
        data = read_official_pickle(file)
        if not isinstance(data, dict):
            raise EmogenError(f"'{file}' is not an attr_{{emotion}} -> names table.")
        lists[kind] = data
        _from_lists({kind: data}, "", str(file))  # checks each file, naming it
    if not lists:
        raise EmogenError(f"No object_attr.pkl / scene_attr.pkl found in '{folder}'.",
                          "Pass the official repository root or its dataset_balance/ folder.")
    return _from_lists(lists, f"official {{object,scene}}_attr.pkl in {folder}", str(folder))


def emotional_from_confidence(table: dict[str, list[float]], margin: float = EMOTIONAL_MARGIN) -> dict[str, Any]:
    """The emotional vocabulary derived from a confidence table: each attribute goes to the emotion it is
    most confidently tied to (argmax of its row), and is kept only if that confidence is at least `margin`
    times the row's mean (2x the uniform share: 0.25 for rows of eight probabilities summing to 1).
    Emotion-agnostic attributes (spread over the emotions) are left out, as in the official lists."""
    by_emotion: dict[str, list[str]] = {e: [] for e in EMOTIONS}
    for name, row in sorted(table.items()):
        values = np.asarray(row, dtype=np.float64)
        if values.size != len(EMOTIONS) or not np.isfinite(values).all() or values.sum() <= 0:
            continue
        if values.max() >= margin * values.mean():
            by_emotion[EMOTIONS[int(values.argmax())]].append(name)
    names = [n for e in EMOTIONS for n in by_emotion[e]]
    return {"names": names, "entries": list(names), "by_emotion": by_emotion,
            "source": f"derived from the confidence table (top emotion >= {margin:g}x the row mean)"}


def read_emotional_attributes(path: str | Path) -> dict[str, Any]:
    """mapper.emotional_attributes: the official folder (repo root or dataset_balance/) or a JSON file: a list of
    names, {"names": [...]}, {"object": {emotion: [...]}, "scene": {...}} (the official lists as JSON), or a mapper
    bundle's attributes.json (its L_attr vocabulary). A name listed twice stays twice in "entries"."""
    path = Path(path)
    if path.is_dir():
        return read_official_attributes(path)
    hint = "Pass the official dataset_balance/ folder or a JSON list of names."
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise EmogenError(f"Cannot read the emotional attribute list '{path}' ({why}).", hint) from None
    if isinstance(data, dict) and ("object" in data or "scene" in data) and "names" not in data:
        return _from_lists(data, str(path), str(path))
    inner = (data.get("vocabulary") or data) if isinstance(data, dict) else {"names": data}
    listed = (inner.get("classes") or inner.get("names")) if isinstance(inner, dict) else None
    if not isinstance(listed, list) or not listed or not all(isinstance(n, str) for n in listed):
        raise EmogenError(f"'{path}' holds no list of attribute names.", "Pass a JSON list of names.")
    entries = [normalise_attribute(n) for n in listed]
    by_emotion = inner.get("by_emotion")
    return {"names": list(dict.fromkeys(entries)), "entries": entries, "by_emotion": by_emotion, "source": str(path)}


def emotional_vocabulary(setting: str | None, confidence: dict[str, list[float]], image_attributes: list[str],
                         reporter: Any = None) -> dict[str, Any]:
    """mapper.emotional_attributes -> the emotional vocabulary. "official": the shipped official lists;
    "derived": the rule of `emotional_from_confidence`; a path: `read_emotional_attributes`; null (auto): the
    official lists for EmoSet (at least EMOSET_SHARE of the images have one of their attributes), else derived.
    Whenever the derived rule is used, `reporter` is told so."""
    if setting not in (None, "official", "derived"):
        return read_emotional_attributes(setting)
    if setting == "official":
        return official_emotional_attributes()
    derived_rule = (f"top emotion >= {EMOTIONAL_MARGIN:g}x the row mean of the confidence table, "
                    "see docs/faithfulness.md")
    if setting == "derived":
        if reporter is not None:
            reporter.info(f"Emotional attributes derived from the confidence table ({derived_rule}).")
        return emotional_from_confidence(confidence)
    official = official_emotional_attributes()
    known = set(official["names"])
    share = sum(a in known for a in image_attributes) / max(1, len(image_attributes))
    if share >= EMOSET_SHARE:
        return official
    if reporter is not None:
        reporter.warn(f"Only {share:.0%} of the prepared images have an attribute of the official EmoSet lists: "
                      f"the data does not look like EmoSet, so the emotional attributes are derived ({derived_rule}). "
                      "Set mapper.emotional_attributes to 'official', 'derived' or a list to choose.")
    return emotional_from_confidence(confidence)


def vocabulary_classes(vocabulary: dict[str, Any], duplicates: str = "official") -> list[str]:
    """The L_attr classes: every entry in order, duplicates included ("official": the official cross-entropy
    over the concatenated lists, 278 classes for the official lists), or each name once ("merge")."""
    entries = vocabulary.get("entries") or vocabulary["names"]
    return list(entries) if duplicates == "official" else list(dict.fromkeys(entries))


def attribute_texts(names: list[str], mode: str = "official") -> list[str]:
    """What CLIP reads for each attribute: the name as written ("official": `mountain_snowy`, as the official
    code feeds its lists to CLIP) or with spaces ("spaces": `mountain snowy`)."""
    return list(names) if mode == "official" else [n.replace("_", " ") for n in names]
