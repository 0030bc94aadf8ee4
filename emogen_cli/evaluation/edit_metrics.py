"""How well an edit keeps its source and how far it moves the emotion.

Structure: SSIM (Wang et al. 2004: 11-tap Gaussian window, sigma 1.5, K1 0.01, K2 0.03, population
covariances, mean over RGB channels; implemented here in numpy, equal to scikit-image's
`structural_similarity(gaussian_weights=True, use_sample_covariance=False)`), LPIPS (AlexNet, when
the `lpips` package is installed) and the cosine similarity of CLIP image embeddings.
Emotion: the CLIP-space probe's target probability before and after, and EmoEditor's
S_emo = max(0, KL(t||p_src) - KL(t||p_edit)) / KL(t||p_src) with t the one-hot target: the share of
the distance to the target emotion the edit covered (1: the probe is certain after the edit).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.reporting import Reporter, progress

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scipy's radius rule: int(3.5 * 1.5 + 0.5) = 5, an 11-tap window


def _gaussian_kernel(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable filtering of [H, W] with edges mirrored half-sample (scipy's 'reflect')."""
    r = len(kernel) // 2
    padded = np.pad(image, r, mode="symmetric")
    rows = sum(kernel[i] * padded[:, i:i + image.shape[1]] for i in range(len(kernel)))
    return sum(kernel[i] * rows[i:i + image.shape[0], :] for i in range(len(kernel)))


def ssim(a: np.ndarray | Any, b: np.ndarray | Any, data_range: float = 255.0) -> float:
    """Mean SSIM of two same-sized images (PIL images or [H, W] / [H, W, C] arrays in 0..data_range)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs images of the same size, got {x.shape} and {y.shape}.")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    kernel = _gaussian_kernel()
    pad = len(kernel) // 2
    if min(x.shape[:2]) < len(kernel):
        raise ValueError(f"SSIM needs images of at least {len(kernel)}x{len(kernel)} pixels, got {x.shape[:2]}.")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for ch in range(x.shape[2]):
        p, q = x[..., ch], y[..., ch]
        mp, mq = _blur(p, kernel), _blur(q, kernel)
        vp = _blur(p * p, kernel) - mp * mp
        vq = _blur(q * q, kernel) - mq * mq
        cov = _blur(p * q, kernel) - mp * mq
        s = ((2 * mp * mq + c1) * (2 * cov + c2)) / ((mp * mp + mq * mq + c1) * (vp + vq + c2))
        values.append(s[pad:s.shape[0] - pad, pad:s.shape[1] - pad].mean())
    return float(np.mean(values))


def kl_divergence(target: np.ndarray | list[float], p: np.ndarray | list[float], eps: float = 1e-12) -> float:
    """KL(target || p) in nats, with 0 log 0 = 0 (for a one-hot target it is -log p[target])."""
    t = np.asarray(target, dtype=np.float64)
    q = np.clip(np.asarray(p, dtype=np.float64), eps, None)
    mask = t > 0
    return float(np.sum(t[mask] * np.log(t[mask] / q[mask])))


def emotion_shift(p_source: np.ndarray | list[float], p_edit: np.ndarray | list[float], target: int) -> float | None:
    """EmoEditor's S_emo for a one-hot target; None when the source is already certain (KL = 0)."""
    t = np.zeros(len(p_source))
    t[target] = 1.0
    before = kl_divergence(t, p_source)
    if before <= 0:
        return None
    return max(0.0, before - kl_divergence(t, p_edit)) / before


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ClipScorer:
    """CLIP image embeddings of PIL images and the bundle's CLIP-space emotion probe over them."""

    def __init__(self, clip, probe, device) -> None:
        self.clip, self.probe, self.device = clip, probe, device

    def features(self, images: list) -> "Any":
        import torch

        from emogen_cli.core.clipspace import _projected
        from emogen_cli.core.images import CLIP_MEAN, CLIP_STD, resize_center_crop, to_array

        size = self.clip.config.vision_config.image_size
        pixels = np.stack([to_array(resize_center_crop(im.convert("RGB"), size), CLIP_MEAN, CLIP_STD) for im in images])
        with torch.no_grad():
            out = self.clip.get_image_features(pixel_values=torch.from_numpy(pixels).to(self.device, self.clip.dtype))
        return _projected(out).float().cpu()

    def probabilities(self, images: list, features=None) -> np.ndarray:
        """[N, 8] emotion probabilities in the official order (emotions.EMOTIONS)."""
        import torch

        feats = self.features(images) if features is None else features
        with torch.no_grad():
            return self.probe(feats).softmax(-1).numpy().astype(np.float64)

    def target_probability(self, images: list, emotion: str) -> np.ndarray:
        return self.probabilities(images)[:, EMOTIONS.index(emotion)]


def load_scorer(clip_name: str, probe_path: str | Path, device) -> ClipScorer:
    """A ClipScorer from a CLIP hub id / folder and a probe file (.safetensors or the official .pth)."""
    from emogen_cli.core.clipspace import load_clip
    from emogen_cli.core.errors import EmogenError

    probe_path = Path(probe_path)
    if not probe_path.is_file():
        raise EmogenError(f"No CLIP emotion probe at '{probe_path}'.",
                          "Train the mapper with this version (it writes emotion_probe.safetensors) or pass --probe.")
    clip = load_clip(clip_name, device)[0]
    return ClipScorer(clip, checked_probe(probe_path, clip).to(device), device)


def checked_probe(path: str | Path, clip):
    """The emotion probe at `path`, refused with one line unless it maps this CLIP model's image embeddings
    (projection_dim wide) to the eight emotions: stage2.confidence.load_probe's check, as evaluate's Emo-A."""
    from emogen_cli.stage2.confidence import load_probe

    return load_probe(path, classes=len(EMOTIONS), in_dim=clip.config.projection_dim)


def _signed_tensor(image) -> Any:
    import torch

    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1


def evaluate_edits(images: list, scorer: ClipScorer, reporter: Reporter | None = None,
                   device=None) -> dict[str, Any]:
    """Structure preservation and emotion shift of every edit in `images` (gallery entries whose
    metadata says kind == "edit"), against the source file named in the metadata."""
    from PIL import Image

    from emogen_cli.core.images import load_rgb

    reporter = reporter or Reporter()
    try:
        import lpips  # optional (the `metrics` extra)

        lpips_model = lpips.LPIPS(net="alex", verbose=False).to(device or "cpu").eval()
    except ImportError:
        lpips_model = None
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    with progress(reporter, "Edit metrics", len(images)):
        for entry in images:
            meta = entry.meta
            source = Path(meta.get("source", ""))
            target = meta.get("target")
            if not source.is_file() or target not in EMOTIONS:
                missing.append(str(entry.path))
                reporter.advance("Edit metrics")
                continue
            edit, src = load_rgb(entry.path), load_rgb(source)
            if src.size != edit.size:
                src = src.resize(edit.size, Image.LANCZOS)
            feats = scorer.features([src, edit])
            probs = scorer.probabilities([], features=feats)
            t = EMOTIONS.index(target)
            cos = float(np.dot(feats[0].numpy(), feats[1].numpy())
                        / (np.linalg.norm(feats[0].numpy()) * np.linalg.norm(feats[1].numpy()) + 1e-12))
            row = {"path": str(entry.path), "source": str(source), "target": target,
                   "source_changed": meta.get("source_sha256") not in (None, file_sha256(source)),
                   "ssim": ssim(src, edit), "clip_similarity": cos,
                   "p_target_before": float(probs[0, t]), "p_target_after": float(probs[1, t]),
                   "s_emo": emotion_shift(probs[0], probs[1], t)}
            if lpips_model is not None:
                import torch

                with torch.no_grad():
                    row["lpips"] = float(lpips_model(_signed_tensor(src)[None].to(device or "cpu"),
                                                     _signed_tensor(edit)[None].to(device or "cpu")).item())
            rows.append(row)
            reporter.advance("Edit metrics")

    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    summary = {k: mean(k) for k in ("ssim", "lpips", "clip_similarity", "p_target_before", "p_target_after", "s_emo")}
    if lpips_model is None:
        summary["lpips_note"] = "LPIPS not computed: pip install lpips (or 'emogen[metrics]')."
    return {"edits": len(rows), "without_source": missing, "mean": summary, "per_image": rows,
            "backend": "SSIM: Gaussian 11x11, sigma 1.5, RGB mean; CLIP image cosine; probe: bundle's CLIP-space probe"}


def is_edit_folder(images: list) -> bool:
    """True when the gallery's images carry edit metadata (written by `emogen edit`)."""
    return any(im.meta.get("kind") == "edit" for im in images)


def evaluate_edit_folder(evaluation, images: list, reporter: Reporter | None = None) -> dict[str, Any]:
    """The `edit` section of `emogen evaluate` for a folder written by `emogen edit` (the hook in
    evaluate.py): reuses the evaluation's CLIP model and its probe (--probe or the bundle's)."""
    probe_path = Path(evaluation.config.evaluate.probe or evaluation.mapper_path / "emotion_probe.safetensors")
    if not probe_path.is_file():
        message = (f"Edit metrics not computed: no CLIP emotion probe at '{probe_path}'. Pass --mapper (the bundle "
                   "the edits were made with) or --probe.")
        (reporter or Reporter()).warn(message)
        return {"edits": 0, "unavailable": message}
    scorer = ClipScorer(evaluation.clip(), checked_probe(probe_path, evaluation.clip()).to(evaluation.device),
                        evaluation.device)
    edits = [im for im in images if im.meta.get("kind") == "edit"
             and (im.meta.get("best_of") or {}).get("rank", 1) == 1]  # not the rejected/ candidates
    return evaluate_edits(edits, scorer, reporter, evaluation.device)
