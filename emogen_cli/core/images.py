"""Image loading and preprocessing with PIL + numpy (no torchvision)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DIFFUSION_MEAN = (0.5, 0.5, 0.5)  # maps [0, 1] to [-1, 1] for the VAE
DIFFUSION_STD = (0.5, 0.5, 0.5)
OFFICIAL_MEAN = (0.5, 0.5, 0.5)  # the official stage-1 Normalize (emo_translate.py, main.py)
OFFICIAL_STD = (0.5, 0.5, 0.5)


def load_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def check_image(path: str | Path) -> str | None:
    """None if the image decodes, else the skip reason ('missing_image' or 'corrupt_image')."""
    path = Path(path)
    if not path.is_file():
        return "missing_image"
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, still reads all the data
            image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return "corrupt_image"
    return None


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (bicubic), then crop the centre square."""
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """torchvision's Resize(size) on a PIL image: shorter side to `size`, the longer one truncated
    (int(size * long / short)), bilinear with PIL's built-in antialiasing."""
    w, h = image.size
    short, long = min(w, h), max(w, h)
    if short == size:
        return image
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    return image.resize((new_w, new_h), Image.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision's CenterCrop(size): offsets int(round((side - size) / 2)) (Python's half-to-even round)."""
    w, h = image.size
    if w < size or h < size:  # torchvision pads; here the image is first resized up to `size`
        image = resize_shorter(image, size)
        w, h = image.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def official_resize(size: int) -> int:
    """The official Resize(256) before CenterCrop(224), scaled to other crop sizes (256/224)."""
    return round(size * 256 / 224)


def stage1_image(image: Image.Image, size: int, preprocessing: str) -> Image.Image:
    """The deterministic stage-1 input: official Resize(256) -> CenterCrop(224), or (imagenet)
    emogen's earlier bicubic resize-and-centre-crop to `size`."""
    if preprocessing == "official":
        return center_crop(resize_shorter(image, official_resize(size)), size)
    return resize_center_crop(image, size)


def stage1_stats(preprocessing: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the stage-1 Normalize: 0.5/0.5 (official) or ImageNet's."""
    return (OFFICIAL_MEAN, OFFICIAL_STD) if preprocessing == "official" else (IMAGENET_MEAN, IMAGENET_STD)


def random_resized_crop(image: Image.Image, size: int, rng: random.Random, scale: tuple[float, float] = (0.35, 1.0)) -> Image.Image:
    """A random crop of `scale` of the area (square), resized to `size`, flipped half of the time."""
    w, h = image.size
    side = int(min(w, h) * rng.uniform(*scale) ** 0.5)
    side = max(1, side)
    left, top = rng.randint(0, w - side), rng.randint(0, h - side)
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return image.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def to_array(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """HWC uint8 image -> normalised CHW float32 array."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))
