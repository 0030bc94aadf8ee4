"""CLIP image and text features: the space the emotion probe, attribute labels and Sem-D live in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emogen_cli.core.images import CLIP_MEAN, CLIP_STD, load_rgb, resize_center_crop, to_array
from emogen_cli.core.reporting import Reporter, progress


def load_clip(name_or_path: str, device: torch.device):
    """CLIPModel (eval, on `device`) and its tokenizer, from a hub id or a local folder."""
    from transformers import CLIPModel, CLIPTokenizer

    from emogen_cli.core.pretrained import load, quiet_libraries

    quiet_libraries()
    return load(CLIPModel, name_or_path).to(device).eval(), load(CLIPTokenizer, name_or_path)


def _projected(out) -> torch.Tensor:
    return out.pooler_output if hasattr(out, "pooler_output") else out  # transformers 5 returns an output object


@torch.no_grad()
def iter_clip_image_features(clip, paths: list[Path], device: torch.device, batch_size: int = 32,
                             reporter: Reporter | None = None, task: str = "CLIP image features"):
    """`clip_image_features` one batch at a time ([B, P] float32 CPU tensors): memory O(batch) for any count."""
    reporter = reporter or Reporter()
    size = clip.config.vision_config.image_size
    with progress(reporter, task, len(paths)):
        for i in range(0, len(paths), batch_size):
            chunk = paths[i:i + batch_size]
            pixels = torch.from_numpy(np.stack([to_array(resize_center_crop(load_rgb(p), size), CLIP_MEAN, CLIP_STD)
                                                for p in chunk]))
            yield _projected(clip.get_image_features(pixel_values=pixels.to(device, clip.dtype))).float().cpu()
            reporter.advance(task, len(chunk))


def clip_image_features(clip, paths: list[Path], device: torch.device, batch_size: int = 32,
                        reporter: Reporter | None = None, task: str = "CLIP image features") -> torch.Tensor:
    """[N, P] unnormalised CLIP image embeddings (the probe's input, as in the official code)."""
    return torch.cat(list(iter_clip_image_features(clip, paths, device, batch_size, reporter, task)))


@torch.no_grad()
def clip_text_features(clip, tokenizer, texts: list[str], device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """[N, P] L2-normalised CLIP text embeddings."""
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, return_tensors="pt").to(device)
        out.append(_projected(clip.get_text_features(**tokens)).float().cpu())
    return F.normalize(torch.cat(out), dim=-1)
