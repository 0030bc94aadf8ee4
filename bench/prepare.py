"""`emogen prepare --cache-latents` throughput on a synthetic EmoSet of JPEGs at EmoSet's real sizes
(about 600x450): images/s of decode, scan and cache, each against a plain loop doing the same work in
one thread, interleaved pair by pair (decode: load + resize + normalise; scan: read the annotation and verify the image; cache:
decode and VAE-encode at the same batch size).

The full EmoSet has 118,102 images (--count 118102 builds that many; writing them takes a while).
Throughput is per image, so a smaller --count measures the same rates; the summary says which count
ran. The VAE is the random `mid` model's at its resolution (on CPU the VAE is not SD's: the decode rate
is what bounds a GPU VAE).

    python bench/prepare.py [--count 2000] [--workers 2] [--batch 16] [--quick] [--json]
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path

from _common import emit, pair_stats, parse, parser

EMOSET_SIZE = 118_102
EMOTIONS = ("amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness")


def make_emoset(root: Path, count: int, size: tuple[int, int] = (600, 450), variants: int = 32) -> None:
    """`count` JPEGs (photo-like: smooth gradients plus noise, quality 90) with annotations and train.json.
    `variants` distinct images are encoded once and written under every name, so building 118k files
    costs file writes, not JPEG encodes; decoding each file still costs a full decode."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    blobs = []
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    for v in range(variants):
        base = np.stack([(x * (v + 1) / w * 255) % 255, (y * (v + 3) / h * 255) % 255, (x + y) * 0.2 % 255], -1)
        pixels = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    entries = []
    for emotion in EMOTIONS:
        (root / "image" / emotion).mkdir(parents=True, exist_ok=True)
        (root / "annotation" / emotion).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        emotion = EMOTIONS[i % 8]
        stem = f"{emotion}_{i:06d}"
        image_rel, ann_rel = f"image/{emotion}/{stem}.jpg", f"annotation/{emotion}/{stem}.json"
        (root / image_rel).write_bytes(blobs[i % variants])
        (root / ann_rel).write_text(json.dumps({"emotion": emotion, "scene": f"scene{i % 40}",
                                                "object": [f"object{i % 97}"]}))
        entries.append([emotion, image_rel, ann_rel])
    (root / "train.json").write_text(json.dumps(entries))
    for split in ("val", "test"):
        (root / f"{split}.json").write_text("[]")


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=2000, help=f"JPEGs to build (EmoSet: {EMOSET_SIZE}).")
    p.add_argument("--workers", type=int, default=2, help="data.num_workers")
    p.add_argument("--batch", type=int, default=16, help="data.cache_batch_size (and the plain loop's batch)")
    p.add_argument("--workdir", help="Where to build the dataset and models (default: a temporary folder).")
    p.add_argument("--repeats", type=int, default=3, help="Interleaved (plain, emogen) pairs per stage.")
    args = parse(p, argv)  # --threads (default 1): one compute thread on both sides; workers are extra processes
    if args.quick:
        args.count, args.repeats = 64, 1

    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from emogen_cli.core.images import DIFFUSION_MEAN, DIFFUSION_STD, load_rgb, resize_center_crop, to_array
    from emogen_cli.data.emoset import check_image, scan_emoset
    from emogen_cli.data.latents import _collate, _Pixels, cache_latents
    from emogen_cli.testing.tiny import build_tiny_bundle

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        root = work / f"emoset-{args.count}"
        if not (root / "train.json").is_file():
            build = timed(lambda: make_emoset(root, args.count))
        else:
            build = 0.0
        models = work / "mid"
        if not (models / "model_index.json").is_file():
            build_tiny_bundle(models, size="mid")
        resolution = json.loads((models / "unet" / "config.json").read_text())["sample_size"] * 2
        entries = json.loads((root / "train.json").read_text())
        items = [(Path(rel).stem, rel) for _, rel, _ in entries]

        def plain_decode():
            for _, rel in items:
                to_array(resize_center_crop(load_rgb(root / rel), resolution), DIFFUSION_MEAN, DIFFUSION_STD)

        def worker_decode():
            loader = DataLoader(_Pixels(items, root, resolution), batch_size=args.batch, num_workers=args.workers,
                                collate_fn=_collate, prefetch_factor=4 if args.workers else None)
            for _ in loader:
                pass

        def plain_scan():
            for _, rel, ann in entries:
                json.loads((root / ann).read_bytes())
                check_image(root / rel)

        def emogen_scan():
            scan_emoset(root, ["train", "val", "test"], True, args.workers)

        from emogen_cli.core.pretrained import load_vae

        vae = load_vae(str(models), None).eval()

        def plain_cache():
            for b in range(0, len(items), args.batch):
                part = items[b:b + args.batch]
                pixels = np.stack([to_array(resize_center_crop(load_rgb(root / rel), resolution), DIFFUSION_MEAN,
                                            DIFFUSION_STD) for _, rel in part])
                with torch.inference_mode():
                    vae.encode(torch.from_numpy(pixels)).latent_dist.parameters.half()

        from emogen_cli.data.emoset import Row

        rows = [Row(id=i, image=rel, emotion="awe", attribute="x", kind="scene", split="train") for i, rel in items]
        counter = iter(range(10**6))

        def emogen_cache():
            cache_latents(rows, root, work / f"latents-{next(counter)}", str(models), None, resolution,
                          batch_size=args.batch, device="cpu", num_workers=args.workers)

        n = len(items)
        pairs = {"decode": (plain_decode, worker_decode), "scan": (plain_scan, emogen_scan),
                 "cache": (plain_cache, emogen_cache)}
        result: dict = {"count": n, "image_size": [600, 450], "resolution": resolution, "workers": args.workers,
                        "batch": args.batch, "cpus": os.cpu_count(), "build_s": build,
                        "full_emoset": EMOSET_SIZE, "measured_on_full_emoset": n >= EMOSET_SIZE}
        for name, (plain, ours) in pairs.items():  # pairs in turn: plain, emogen, plain, emogen, ...
            plain_t, ours_t = [], []
            for _ in range(args.repeats):
                plain_t.append(timed(plain))
                ours_t.append(timed(ours))
            stats = pair_stats(ours_t, plain_t)
            plain_s, ours_s = stats["peer_s"], stats["ours_s"]
            result[name] = {"plain_images_per_s": rate(n, plain_s), "emogen_images_per_s": rate(n, ours_s),
                            "speedup": 1 / stats["ratio"], "speedup_min": 1 / stats["ratio_max"],
                            "speedup_max": 1 / stats["ratio_min"], **stats,
                            "full_emoset_minutes_estimate": EMOSET_SIZE / rate(n, ours_s) / 60}
    result["ratio"] = result["cache"]["ratio"]  # emogen's time over the plain loop's (below 1: faster)
    result["repeats"] = args.repeats
    emit("prepare", result, args.json, "; ".join(
        f"{k} {result[k]['emogen_images_per_s']:.0f} img/s vs plain {result[k]['plain_images_per_s']:.0f} "
        f"({result[k]['speedup']:.2f}x, {result[k]['speedup_min']:.2f}-{result[k]['speedup_max']:.2f})" for k in ("decode", "scan", "cache"))
        + f" [{n} JPEGs 600x450, {args.workers} workers, batch {args.batch}"
        + ("" if n >= EMOSET_SIZE else f"; full EmoSet {EMOSET_SIZE} extrapolated") + "]")
    return result


if __name__ == "__main__":
    main()
