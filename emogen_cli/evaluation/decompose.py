"""`emogen decompose`: the semantics an emotion is made of, and what generated images show.

Ranking: `samples` emotion-space samples of the emotion are mapped and encoded as the "<emotion>"
prompt; the pooled state the mapper was trained with (its bundle's semantic_token: the placeholder,
as the official code, or end-of-text; bundles from before it was recorded: end-of-text) through
CLIP's text projection is the emotion's semantic vector, the space the attribute loss trained it
in. Attribute names are encoded the same way and ranked by their mean cosine similarity to those
vectors (the paper's Fig. 7: awe -> snowy mountain, valley, waterfall, ...). By default the names
are the bundle's L_attr vocabulary (the emotional attributes for an official-style bundle).

Labelling (`images`): as the official inference script does, every generated image gets the
attribute name whose CLIP text embedding best matches its CLIP image embedding; the score is
CLIP's logit (100 x cosine for the released models).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from emogen_cli.core.config import Config
from emogen_cli.core.emotions import EMOTIONS, attribute_text, normalise_attribute
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.files import atomic_write_text
from emogen_cli.core.reporting import Reporter
from emogen_cli.core.runtime import resolve_device
from emogen_cli.stage2.mapper import MapperBundle, load_mapper

LABELS_FILE = "attribute_labels.jsonl"


def _pickled_names(path: Path) -> list[str]:
    """Names from an official pickle: a list of names (all_attribute_object_scene.pkl), or a dict of
    lists ({object,scene}_attr.pkl: "attr_{emotion}" -> names; their union) or of names -> values."""
    from emogen_cli.stage2.confidence import read_official_pickle

    data = read_official_pickle(path)
    if isinstance(data, dict):
        values = list(data.values())
        if values and all(isinstance(v, (list, tuple)) for v in values):
            data = [n for v in values for n in v]
        else:
            data = list(data)
    if not isinstance(data, (list, tuple)) or not all(isinstance(n, str) for n in data):
        raise EmogenError(f"'{path}' holds no list of attribute names.",
                          "Pass all_attribute_object_scene.pkl, object_attr.pkl or scene_attr.pkl, or a text file.")
    return list(data)


def read_attributes(path: str | Path) -> list[str]:
    """Attribute names from a text file (one per line, '#' comments), a JSON list, or an official pickle."""
    from emogen_cli.core.files import check_not_lfs_pointer

    path = Path(path)
    if path.is_file():
        check_not_lfs_pointer(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EmogenError(f"Cannot read the attribute file '{path}' ({exc.strerror}).") from None
    if path.suffix == ".pkl" or raw[:1] == b"\x80":  # pickle protocol 2+
        names = _pickled_names(path)
        out = list(dict.fromkeys(normalise_attribute(n) for n in names if n.strip()))
        if not out:
            raise EmogenError(f"The attribute file '{path}' lists no names.")
        return out
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EmogenError(f"'{path}' is neither text nor an official EmoGen pickle.",
                          "Pass a text file (one name per line), a JSON list, or an official .pkl.") from None
    if path.suffix == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EmogenError(f"'{path}' is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
        names = names.get("names") if isinstance(names, dict) else names
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise EmogenError(f"'{path}' must hold a JSON list of attribute names.")
    else:
        names = [line.split("#", 1)[0] for line in text.splitlines()]
    out = list(dict.fromkeys(normalise_attribute(n) for n in names if n.strip()))
    if not out:
        raise EmogenError(f"The attribute file '{path}' lists no names.", "Put one attribute name per line.")
    return out


@torch.no_grad()
def rank_attributes(config: Config, bundle: MapperBundle, emotions: list[str], names: list[str], top: int,
                    samples: int, device: torch.device) -> list[dict[str, Any]]:
    """Per emotion, the `top` attribute names closest to its mapped semantics."""
    from emogen_cli.backbones import check_bundle, resolve
    from emogen_cli.stage2.conditioning import text_semantics
    from emogen_cli.stage2.confidence import attribute_texts

    base = bundle.base_model(config)
    backbone = resolve(config, base)
    check_bundle(bundle.config, backbone, base)
    parts = backbone.load_text(base, config.model.revision)
    for text_encoder in backbone.text_encoders(parts):
        text_encoder.to(device).eval()
    widths = backbone.text_widths(parts)
    bundle.check_text_width(sum(widths.values()), base)
    check_bundle(bundle.config, backbone, base, widths)
    placeholder = bundle.config["placeholder"]
    prompts = backbone.prompt_encoder(parts, [placeholder], bundle.semantic_token)
    attributes = text_semantics(prompts, attribute_texts(names, bundle.attribute_text), bundle.projection)
    mapper = bundle.mapper.to(device)
    seed = config.runtime.seed
    confidence = bundle.attributes.get("confidence") or {}
    results = []
    for emotion in emotions:
        vectors = bundle.space.samples(emotion, list(range(seed, seed + samples))).to(device)
        semantic = text_semantics(prompts, [placeholder] * samples, bundle.projection, mapper(vectors).unsqueeze(1))
        similarity = (semantic.cpu() @ attributes.T).mean(0)  # mean cosine over the samples
        order = similarity.argsort(descending=True)[:top].tolist()
        e = EMOTIONS.index(emotion)
        results.append({"emotion": emotion, "samples": samples, "attributes": [
            {"rank": r + 1, "name": names[i], "similarity": round(similarity[i].item(), 6),
             "confidence": confidence[names[i]][e] if confidence.get(names[i]) else None}
            for r, i in enumerate(order)]})
    return results


def _gallery(folder: Path) -> tuple[list[Any], list[str]]:
    """The readable images of `folder` (and the unreadable ones); none at all is an error."""
    from emogen_cli.evaluation.gallery import scan_gallery

    images, broken = scan_gallery(folder)
    if not images:
        raise EmogenError(f"No readable images in '{folder}'.", "Pass the --out folder of `emogen generate`.")
    return images, broken


@torch.no_grad()
def label_images(folder: Path, names: list[str], clip_model: str, device: torch.device,
                 reporter: Reporter, scanned: tuple[list[Any], list[str]] | None = None) -> dict[str, Any]:
    """Label every image in `folder` with its best-matching attribute; writes attribute_labels.jsonl."""
    from emogen_cli.core.clipspace import clip_image_features, clip_text_features, load_clip

    images, broken = scanned or _gallery(folder)
    clip, tokenizer = load_clip(clip_model, device)
    text = clip_text_features(clip, tokenizer, [attribute_text(n) for n in names], device)
    feats = clip_image_features(clip, [im.path for im in images], device, reporter=reporter, task="Labelling images")
    logits = clip.logit_scale.exp().item() * F.normalize(feats, dim=-1) @ text.T
    scores, best = logits.topk(min(3, len(names)), dim=-1)
    records, counts = [], {}
    for image, s, b in zip(images, scores.tolist(), best.tolist()):
        records.append({"path": str(image.path.relative_to(folder)), "emotion": image.emotion,
                        "attribute": names[b[0]], "score": round(s[0], 4),
                        "top": [[names[i], round(v, 4)] for i, v in zip(b, s)]})
        counts.setdefault(image.emotion or "unknown", Counter())[names[b[0]]] += 1
    atomic_write_text(folder / LABELS_FILE, "".join(json.dumps(r) + "\n" for r in records))
    return {"folder": str(folder), "file": str(folder / LABELS_FILE), "count": len(records), "unreadable": broken,
            "by_emotion": {e: c.most_common(5) for e, c in counts.items()}, "labels": records}


def decompose(config: Config, emotions: list[str], top: int = 6, attributes: str | Path | None = None,
              images: str | Path | None = None, samples: int = 64, mapper: str | Path | None = None,
              reporter: Reporter | None = None) -> dict[str, Any]:
    """Rank attribute names for `emotions` (needs a mapper bundle) and/or label the images in `images`."""
    reporter = reporter or Reporter()
    if not emotions and images is None:
        raise EmogenError("Nothing to decompose.", "Name an emotion (e.g. `emogen decompose awe`) or pass --images DIR.")
    device = resolve_device(config.runtime.device)
    listed = read_attributes(attributes) if attributes is not None else None  # bad files fail before models load
    scanned = _gallery(Path(images)) if images is not None else None
    bundle = load_mapper(mapper or config.generate.mapper) if emotions or attributes is None else None
    if listed is not None:
        names = listed
    elif emotions:  # rank within the L_attr vocabulary the mapper was trained on
        names = bundle.vocabulary
    else:  # label images with any attribute, as the official inference script
        names = list(bundle.attributes.get("names") or [])
    if not names:
        raise EmogenError("The mapper bundle lists no attribute names.", "Pass --attributes FILE (one name per line).")
    result: dict[str, Any] = {"attributes": len(names)}
    if emotions:
        reporter.info(f"Ranking {len(names)} attribute{'s' * (len(names) != 1)} for {', '.join(emotions)}.")
        result["emotions"] = rank_attributes(config, bundle, emotions, names, min(top, len(names)), samples, device)
    if images is not None:
        clip_model = bundle.clip_model(config) if bundle else config.model.clip
        result["labels"] = label_images(Path(images), names, clip_model, device, reporter, scanned)
    return result
