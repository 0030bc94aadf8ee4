"""`emogen evaluate`: the paper's five metrics over a folder of generated images.

Images are grouped by emotion (PNG metadata, else sub-folder). Per group and overall:
- FID against reference images (the prepared training subset by default; an EmoSet root: all its
  images, the official reference), on Inception features
  when torch-fidelity is installed, else on CLIP image features (the report says which);
- LPIPS: mean AlexNet-LPIPS of random pairs within a group (diversity; needs the `lpips` package);
- Emo-A: accuracy of the CLIP-space emotion probe (or the stage-1 classifier) on the target emotion;
- Sem-C: mean over images of max(top-1 prob of an ImageNet classifier, of a Places365 classifier),
  inputs Resize(256) -> CenterCrop(224) -> ImageNet Normalize as the official other_metrics.py;
- Sem-D: mean squared difference of the CLIP image embeddings of random pairs within a group.
Group averages follow the paper: LPIPS and Sem-D are averaged over emotions, Emo-A and Sem-C over
images.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emogen_cli.core.config import Config
from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    center_crop,
    load_rgb,
    resize_center_crop,
    resize_shorter,
    to_array,
)
from emogen_cli.core.reporting import Reporter, progress
from emogen_cli.core.runtime import resolve_device
from emogen_cli.evaluation import metrics as M
from emogen_cli.evaluation.gallery import GalleryImage, by_emotion, scan_gallery
from emogen_cli.evaluation.report_files import MIN_FID_IMAGES

PAPER = {"EmoGen": {"fid": 41.60, "lpips": 0.717, "emo-a": 0.7625, "sem-c": 0.633, "sem-d": 0.0335},
         "SD": {"fid": 44.05, "lpips": 0.687, "emo-a": 0.7077, "sem-c": 0.608, "sem-d": 0.0199}}


class Unavailable(EmogenError):
    """A metric's optional backend or input is missing."""


def _emotion_mean(per_group: dict[str, float]) -> float | None:
    """Mean over the eight emotions present (over every group if none is a plain emotion)."""
    values = [v for g, v in per_group.items() if g in EMOTIONS] or list(per_group.values())
    return float(np.mean(values)) if values else None


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def semc_pixels(path: Path) -> np.ndarray:
    """Sem-C's input, as the official other_metrics.py: Resize(256) -> CenterCrop(224) -> ImageNet Normalize."""
    return to_array(center_crop(resize_shorter(load_rgb(path), 256), 224), IMAGENET_MEAN, IMAGENET_STD)


@torch.no_grad()
def _iter_classify(model, paths: list[Path], device, batch_size: int, pixels):
    """Logits of an image classifier over `paths`, one [B, classes] batch at a time; `pixels(path)` gives
    each CHW input array."""
    for chunk in _batches(paths, batch_size):
        arrays = [pixels(p) for p in chunk]
        logits = model(torch.from_numpy(np.stack(arrays)).to(device))
        yield (logits.logits if hasattr(logits, "logits") else logits).float().cpu()


def _classify(model, paths: list[Path], device, batch_size: int, pixels) -> torch.Tensor:
    """Logits of an image classifier over `paths` ([N, classes]; for small N: metrics stream `_iter_classify`)."""
    return torch.cat(list(_iter_classify(model, paths, device, batch_size, pixels)))


class FeatureFile:
    """Per-image feature rows ([N, D] float32) kept in an anonymous temporary file instead of memory:
    written batch by batch, read back in chunks or by row. Memory O(chunk) whatever N (disk: 4·D bytes
    per image, e.g. 3 KiB for CLIP ViT-L, 8 KiB for Inception); the file goes when the object does."""

    def __init__(self) -> None:
        import tempfile

        self._file = tempfile.TemporaryFile()
        self.count, self.dim = 0, 0

    def append(self, rows: torch.Tensor) -> None:
        array = np.ascontiguousarray(rows.detach().float().cpu().numpy(), dtype=np.float32)
        self.dim = array.shape[1]
        self._file.seek(0, 2)
        self._file.write(array.tobytes())
        self.count += len(array)

    def __len__(self) -> int:
        return self.count

    def chunks(self, size: int = 1024):
        """(first row, [B, D] tensor) for consecutive rows."""
        for start in range(0, self.count, size):
            n = min(size, self.count - start)
            self._file.seek(start * self.dim * 4)
            yield start, torch.from_numpy(np.frombuffer(self._file.read(n * self.dim * 4), np.float32)
                                          .reshape(n, self.dim).copy())

    def rows(self, indices: list[int]) -> torch.Tensor:
        """The rows `indices` ([len(indices), D]), in that order."""
        out = np.empty((len(indices), self.dim), np.float32)
        for k, i in enumerate(indices):
            self._file.seek(i * self.dim * 4)
            out[k] = np.frombuffer(self._file.read(self.dim * 4), np.float32)
        return torch.from_numpy(out)

    def stats(self, members: set[int] | None = None, chunk: int = 1024) -> M.GaussianStats:
        """Running mean/covariance sums of the rows in `members` (all rows with None), one chunk at a time."""
        stats = M.GaussianStats()
        for start, block in self.chunks(chunk):
            if members is None:
                stats.update(block)
            else:
                keep = [k for k in range(len(block)) if start + k in members]
                stats.update(block[keep])
        return stats


def load_image_classifier(name: str, device: torch.device):
    """An image classifier by hub id / transformers folder, or a torchvision ResNet checkpoint such as
    the Places365 resnet50_places365.pth.tar (converted; read with weights_only=True)."""
    from transformers import AutoModelForImageClassification, ResNetForImageClassification

    from emogen_cli.core.pretrained import load, quiet_libraries
    from emogen_cli.stage1.encoder import load_tensors, resnet_from_torchvision

    quiet_libraries()
    path = Path(name)
    if not path.is_file():
        return load(AutoModelForImageClassification, name).to(device).eval()
    state = load_tensors(path)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or "fc.weight" not in {k.removeprefix("module.") for k in state}:
        raise EmogenError(f"'{path}' is not a torchvision ResNet classifier checkpoint (no fc.weight).",
                          "Pass a transformers image-classification model or resnet50_places365.pth.tar.")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    config, converted = resnet_from_torchvision(state, "resnet.")
    config.num_labels = state["fc.weight"].shape[0]
    model = ResNetForImageClassification(config)
    converted.update({"classifier.1.weight": state["fc.weight"], "classifier.1.bias": state["fc.bias"]})
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise EmogenError(f"'{path}' does not match a torchvision ResNet (missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}).")
    return model.to(device).eval()


def _reference_images(config: Config, rng: random.Random) -> list[GalleryImage]:
    """The FID reference: a prepared folder's unique images or a folder of images (a seeded subset of
    evaluate.max_reference), or every image of an EmoSet root (the official reference, never subsampled)."""
    from emogen_cli.data.emoset import load_prepared

    where = Path(config.evaluate.reference or config.data.prepared)
    if (where / "prepared.json").is_file():
        prepared = load_prepared(where)
        images = [GalleryImage(prepared.root / r.image, r.emotion) for r in prepared.unique_rows]
    elif (where / "image").is_dir() and (where / "annotation").is_dir():
        # An EmoSet root: every readable image (image/{emotion}/*.jpg), uncapped, as the official FID reference.
        images, _ = scan_gallery(where / "image")
        if len(images) < 2:
            raise Unavailable(f"The EmoSet root '{where}' has fewer than two readable images.")
        return images
    elif where.is_dir():
        images, _ = scan_gallery(where)
    else:
        raise Unavailable(f"No FID reference at '{where}'.", "Pass --reference with a prepared folder or a folder "
                                                             "of real images.")
    if len(images) < 2:
        raise Unavailable(f"The FID reference '{where}' has fewer than two images.")
    rng.shuffle(images)
    return images[:config.evaluate.max_reference]


class Evaluation:
    """Loads what each metric needs on first use; `run` fills the result dict."""

    def __init__(self, config: Config, images: list[GalleryImage], mapper: str | Path | None,
                 encoder: str | Path | None, reporter: Reporter) -> None:
        self.config, self.images, self.reporter = config, images, reporter
        position = {id(im): i for i, im in enumerate(images)}
        self.groups = {g: [position[id(im)] for im in members] for g, members in by_emotion(images).items()}
        self.mapper_path = Path(mapper or config.generate.mapper)
        self.encoder_path = Path(encoder or config.mapper.encoder)
        self.device = resolve_device(config.runtime.device)
        self.batch = config.evaluate.batch_size
        self._clip = None
        self._clip_features: FeatureFile | None = None
        self._pairs: dict[str, list[tuple[int, int]]] = {}

    # -- shared CLIP features ----------------------------------------------------------------------------------
    def clip_name(self) -> str:
        """The configured CLIP model, or the mapper bundle's when left at the default."""
        from emogen_cli.core.files import read_json
        from emogen_cli.stage2.mapper import trained_model

        bundle_config = self.mapper_path / "config.json"
        trained = read_json(bundle_config, "Mapper bundle config") if bundle_config.is_file() else {}
        trained = trained if isinstance(trained, dict) else {}
        return trained_model(self.config, "clip", trained)

    def clip(self):
        if self._clip is None:
            from emogen_cli.core.clipspace import load_clip

            self._clip = load_clip(self.clip_name(), self.device)[0]
        return self._clip

    def clip_features(self) -> FeatureFile:
        """Every image's CLIP embedding, computed once (streamed to a FeatureFile: Sem-D, Emo-A and CLIP FID
        read it back in chunks)."""
        if self._clip_features is None:
            from emogen_cli.core.clipspace import iter_clip_image_features

            features = FeatureFile()
            for batch in iter_clip_image_features(self.clip(), [im.path for im in self.images], self.device,
                                                  self.batch, self.reporter, "CLIP image features"):
                features.append(batch)
            self._clip_features = features
        return self._clip_features

    def pairs(self, group: str) -> list[tuple[int, int]]:
        """The group's random image pairs (seeded per group; LPIPS and Sem-D use the same ones)."""
        if group not in self._pairs:
            rng = random.Random(f"{self.config.runtime.seed}-{group}")
            members = self.groups[group]
            self._pairs[group] = [(members[a], members[b])
                                  for a, b in M.random_pairs(len(members), self.config.evaluate.pairs, rng)]
        return self._pairs[group]

    # -- metrics ----------------------------------------------------------------------------------------------
    def sem_d(self) -> dict[str, Any]:
        feats = self.clip_features()
        per, cos = {}, {}
        for group in self.groups:
            if pairs := self.pairs(group):
                members = sorted({i for pair in pairs for i in pair})  # only the paired images' rows are read
                where = {i: k for k, i in enumerate(members)}
                local, rows = [(where[a], where[b]) for a, b in pairs], feats.rows(members)
                per[group] = M.pair_mse(rows, local).mean().item()
                cos[group] = M.pair_cosine_distance(rows, local).mean().item()
        if not per:
            raise Unavailable("Sem-D needs at least two images of one emotion.")
        return {"value": _emotion_mean(per), "per_emotion": per, "cosine_distance": _emotion_mean(cos),
                "backend": f"CLIP image embeddings ({self.clip_name()}), {self.config.evaluate.pairs} pairs per emotion"}

    def emo_a(self) -> dict[str, Any]:
        targets = [(i, EMOTIONS.index(im.emotion)) for i, im in enumerate(self.images) if im.emotion in EMOTIONS]
        if not targets:
            raise Unavailable("Emo-A needs images of the eight emotions (none found in the metadata or folders).")
        target_of = dict(targets)
        if self.config.evaluate.emotion_classifier == "clip":
            from emogen_cli.evaluation.edit_metrics import checked_probe

            probe_path = Path(self.config.evaluate.probe or self.mapper_path / "emotion_probe.safetensors")
            if not probe_path.is_file():
                raise Unavailable(f"No CLIP emotion probe at '{probe_path}'.",
                                  "Pass --probe (emotion_probe.safetensors of a mapper bundle, or the official "
                                  "classifier .pth), or --emotion-classifier encoder.")
            probe = checked_probe(probe_path, self.clip())

            def batches():  # (image indices, logits), streamed from the CLIP feature file
                for start, block in self.clip_features().chunks(self.batch * 8):
                    rows = [k for k in range(len(block)) if start + k in target_of]
                    with torch.no_grad():
                        yield [start + k for k in rows], probe(block[rows])
            backend = f"CLIP-space probe {probe_path} on {self.clip_name()}"
        else:
            from emogen_cli.stage1.encoder import encoder_pixels, load_encoder

            bundle = load_encoder(self.encoder_path)
            order = [bundle.config["emotions"].index(e) for e in EMOTIONS]
            index = [i for i, _ in targets]

            def batches():
                logits = _iter_classify(bundle.model.to(self.device), [self.images[i].path for i in index], self.device,
                                        self.batch, lambda p: encoder_pixels(load_rgb(p), bundle.config))
                for k, raw in zip(range(0, len(index), self.batch), logits):
                    yield index[k:k + len(raw)], raw[:, order]
            backend = f"stage-1 classifier {self.encoder_path}"
        hits: dict[str, list[int]] = {}  # group -> [right, total]: counts, not a list of every prediction
        for idx, logits in batches():
            right = (logits.argmax(-1) == torch.tensor([target_of[i] for i in idx])).tolist()
            for i, ok in zip(idx, right):
                for key in (self.images[i].emotion, None):
                    counts = hits.setdefault(key, [0, 0])
                    counts[0] += ok
                    counts[1] += 1
        per = {g: hits[g][0] / hits[g][1] for g in self.groups if g in hits}
        return {"value": hits[None][0] / hits[None][1], "per_emotion": per, "backend": backend}

    def sem_c(self) -> dict[str, Any]:
        cfg = self.config.evaluate
        paths = [im.path for im in self.images]
        objects_model = load_image_classifier(cfg.object_model, self.device)
        scenes_model = load_image_classifier(cfg.scene_model, self.device) if cfg.scene_model else None
        group_of = {i: g for g, idx in self.groups.items() for i in idx}
        sums: dict[str | None, list[float]] = {}  # group -> [sum of clarity, images]: streamed, O(groups)
        with progress(self.reporter, "Sem-C classifiers", len(paths)):
            objects = _iter_classify(objects_model, paths, self.device, self.batch, semc_pixels)
            scenes = (_iter_classify(scenes_model, paths, self.device, self.batch, semc_pixels)
                      if scenes_model is not None else None)
            for start, object_logits in zip(range(0, len(paths), self.batch), objects):
                clarity = M.semantic_clarity(object_logits, next(scenes) if scenes is not None else None)
                for k, value in enumerate(clarity.double().tolist()):
                    for key in (group_of[start + k], None):
                        acc = sums.setdefault(key, [0.0, 0])
                        acc[0] += value
                        acc[1] += 1
                self.reporter.advance("Sem-C classifiers", len(clarity))
        per = {g: sums[g][0] / sums[g][1] for g in self.groups if g in sums}
        result = {"value": sums[None][0] / sums[None][1], "per_emotion": per,
                  "backend": f"objects: {cfg.object_model}; scenes: {cfg.scene_model or 'none'}"}
        if not cfg.scene_model:
            result["note"] = ("No scene classifier (evaluate.scene_model): Sem-C uses the object classifier only. "
                              "The paper also uses the Places365 ResNet-50 (resnet50_places365.pth.tar).")
        return result

    def lpips(self) -> dict[str, Any]:
        try:
            import lpips
        except ImportError:
            raise Unavailable("LPIPS needs the lpips package.", "pip install lpips (it also installs torchvision), "
                              "or pip install 'emogen-cli[metrics]'.") from None
        model = lpips.LPIPS(net="alex", verbose=False).to(self.device).eval()
        per = {}
        total = sum(len(self.pairs(g)) for g in self.groups)
        with progress(self.reporter, "LPIPS", total), torch.no_grad():
            for group in self.groups:
                distances = []
                for chunk in _batches(self.pairs(group), self.batch):
                    a = torch.stack([_signed(self.images[i].path) for i, _ in chunk])
                    b = torch.stack([_signed(self.images[j].path, a.shape[-1]) for _, j in chunk])
                    distances.append(model(a.to(self.device), b.to(self.device)).flatten().float().cpu())
                    self.reporter.advance("LPIPS", len(chunk))
                if distances:
                    per[group] = torch.cat(distances).mean().item()
        if not per:
            raise Unavailable("LPIPS needs at least two images of one emotion.")
        return {"value": _emotion_mean(per), "per_emotion": per,
                "backend": f"lpips AlexNet, {self.config.evaluate.pairs} pairs per emotion, images in [-1, 1] "
                           "(the range lpips expects; the official script passed [0, 1])"}

    def fid(self) -> dict[str, Any]:
        cfg = self.config.evaluate
        if importlib.util.find_spec("torchmetrics") is None:
            raise Unavailable("FID needs torchmetrics.", "pip install 'emogen-cli[metrics]'.")
        kind = cfg.fid_features
        if kind == "auto":
            kind = "inception" if importlib.util.find_spec("torch_fidelity") else "clip"
        reference = _reference_images(self.config, random.Random(self.config.runtime.seed))
        if len(self.images) < 2:
            raise Unavailable("FID needs at least two generated images.")
        if kind == "inception":
            if importlib.util.find_spec("torch_fidelity") is None:
                raise Unavailable("Inception FID needs torch-fidelity.", "pip install torch-fidelity, or --fid-features clip.")
            fake, real = self._inception([im.path for im in self.images]), self._inception([im.path for im in reference])
            backend = "Inception-v3 pool features (torch-fidelity), as the paper's"
        else:
            from emogen_cli.core.clipspace import iter_clip_image_features

            fake, real = self.clip_features(), FeatureFile()
            for batch in iter_clip_image_features(self.clip(), [im.path for im in reference], self.device, self.batch,
                                                  self.reporter, "Reference features"):
                real.append(batch)
            backend = f"CLIP image features ({self.clip_name()}); not comparable to Inception FIDs such as the paper's"
        # one group at a time from the feature files: memory O(D^2) for the two Gaussians, whatever the counts
        per, per_reference = {}, {}
        for group, idx in self.groups.items():
            ref = {k for k, im in enumerate(reference) if im.emotion == group}
            per_reference[group] = len(ref)
            if len(idx) >= 2 and len(ref) >= 2:
                per[group] = M.frechet_from_stats(real.stats(ref), fake.stats(set(idx)))
        where = self.config.evaluate.reference or self.config.data.prepared
        few = {g: len(idx) for g, idx in self.groups.items() if len(idx) < MIN_FID_IMAGES}
        if few:
            self.reporter.warn(
                f"FID of {', '.join(f'{g} ({n})' for g, n in few.items())} comes from under {MIN_FID_IMAGES} images "
                f"per emotion: such FIDs are mostly small-sample bias; generate at least {MIN_FID_IMAGES} (the paper "
                "used thousands) before comparing them.")
        return {"value": M.frechet_from_stats(real.stats(), fake.stats()), "per_emotion": per, "backend": backend,
                "features": kind, "reference_images": len(reference), "reference": str(where),
                "reference_per_emotion": per_reference, "few_images": few,
                "scope": "each emotion against the reference images of that emotion; overall: every image against "
                         "all reference images"}

    def _inception(self, paths: list[Path]) -> FeatureFile:
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"]).to(self.device)
        out = FeatureFile()
        with torch.no_grad():
            for chunk in _batches(paths, self.batch):
                pixels = torch.stack([torch.from_numpy(np.asarray(resize_center_crop(load_rgb(p), 299))).permute(2, 0, 1)
                                      for p in chunk])
                out.append(net(pixels.to(self.device)))
        return out


def _signed(path: Path, size: int | None = None) -> torch.Tensor:
    """An image as [3, H, W] in [-1, 1] (LPIPS' input range), resized to `size` if given and different."""
    image = load_rgb(path)
    if size is not None and image.size != (size, size):
        image = resize_center_crop(image, size)
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1


def _interrupted(stopped: str, chosen: list[str], results: dict[str, Any], folder: Path, images: list, broken: list,
                 run: Evaluation, config: Config, out_dir: Path) -> dict[str, Any]:
    """Write the report of the metrics finished before a stop (others marked interrupted), then stop."""
    from emogen_cli.core.errors import Interrupted
    from emogen_cli.evaluation.report_files import write_report

    done = [n for n in chosen if n in results]
    if not done:
        raise Interrupted(f"Interrupted during {stopped}; no metric was finished.")
    for name in chosen[len(done):]:
        results[name] = {"value": None, "failed": "interrupted before it finished"}
    result = {"folder": str(folder), "images": len(images), "unreadable": broken,
              "groups": {g: len(idx) for g, idx in run.groups.items()}, "metrics": results, "paper": PAPER,
              "seed": config.runtime.seed, "interrupted": True}
    files = write_report(result, out_dir)
    raise Interrupted(f"Interrupted during {stopped}; the finished metrics ({', '.join(done)}) are in {files['json']}.",
                      "Run again with --overwrite to compute every metric.")


def evaluate(config: Config, folder: str | Path, out: str | Path | None = None, metrics: list[str] | None = None,
             mapper: str | Path | None = None, encoder: str | Path | None = None, overwrite: bool = False,
             reporter: Reporter | None = None) -> dict[str, Any]:
    """Compute the metrics over `folder` and write report.json, report.md and metrics.png into `out`."""
    from emogen_cli.evaluation.report_files import write_report

    reporter = reporter or Reporter()
    folder = Path(folder)
    out_dir = Path(out) if out is not None else folder / "evaluation"
    if (out_dir / "report.json").is_file() and not overwrite:
        raise EmogenError(f"'{out_dir}' already holds an evaluation report.", "Pass --overwrite or choose another --out.")
    images, broken = scan_gallery(folder)
    # never count our own outputs (metrics.png of an earlier evaluation inside the folder)
    own = out_dir.resolve()
    images = [im for im in images if own not in Path(im.path).resolve().parents]
    broken = [b for b in broken if own not in Path(b).resolve().parents]
    if not images:
        raise EmogenError(f"No readable images in '{folder}'.", "Pass the --out folder of `emogen generate`.")
    if broken:
        reporter.warn(f"Skipping {len(broken)} unreadable image(s), e.g. {broken[0]}.")
    explicit = metrics is not None
    chosen = list(metrics if explicit else config.evaluate.metrics)
    given = mapper if mapper is not None else config.generate.mapper if config.is_explicit("generate.mapper") else None
    if given is not None and Path(given).is_dir():  # e.g. an encoder folder given as --mapper, before models load
        from emogen_cli.core.files import read_bundle_config

        read_bundle_config(Path(given), "emogen-mapper", "emogen train-mapper")
    reference = config.evaluate.reference
    if reference is not None and "fid" in chosen and not Path(reference).exists():  # a typo, before any model loads
        raise EmogenError(f"The FID reference '{reference}' does not exist.",
                          "Pass --reference with a prepared folder, an EmoSet root or a folder of real images.")
    all_images = images
    edits = [im for im in images if im.meta.get("kind") == "edit"]
    if edits and len(edits) < len(images):  # generation metrics of edited photos would be compared with the paper's
        images = [im for im in images if im.meta.get("kind") != "edit"]
        reporter.warn(f"'{folder}' mixes {len(images)} generated images and {len(edits)} edits: the generation "
                      "metrics cover the generated images only; the edits get the edit section.")
    run = Evaluation(config, images, mapper, encoder, reporter)
    results: dict[str, Any] = {}
    failed: list[str] = []
    stopped: str | None = None
    for name in chosen:
        reporter.info(f"Computing {name}.")
        try:
            results[name] = getattr(run, name.replace("-", "_"))()
        except EmogenError as exc:  # one metric's missing model or input must not lose the others' work
            reason = exc.message + (f" {exc.hint}" if exc.hint else "")
            if isinstance(exc, Unavailable) and not explicit:  # said once here; the table shows "-"
                results[name] = {"value": None, "unavailable": reason}
            else:
                results[name] = {"value": None, "failed": reason}
                failed.append(name)
            reporter.warn(f"{name}: {reason}")
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the metrics already computed are still written
            stopped = name
            break
    if stopped is not None:
        return _interrupted(stopped, chosen, results, folder, images, broken, run, config, out_dir)
    result = {"folder": str(folder), "images": len(images), "unreadable": broken,
              "groups": {g: len(idx) for g, idx in run.groups.items()}, "metrics": results, "paper": PAPER,
              "seed": config.runtime.seed}
    from emogen_cli.evaluation.edit_metrics import evaluate_edit_folder, is_edit_folder

    if is_edit_folder(all_images):  # written by `emogen edit`: structure kept and emotion shift, per edit
        result["edit"] = evaluate_edit_folder(run, all_images, reporter)
        if len(edits) < len(all_images):
            result["edits"] = len(edits)
    result["files"] = write_report(result, out_dir)
    if failed:
        first = results[failed[0]]["failed"]
        what = f"Metric {failed[0]} failed" if len(failed) == 1 else f"{len(failed)} metrics failed ({', '.join(failed)})"
        kept = (f"; the other results are written to {result['files']['json']}" if len(failed) < len(chosen)
                else f"; the report is written to {result['files']['json']}")
        raise EmogenError(f"{what}{kept}. {failed[0]}: {first}",
                          "Fix the cause and run again with --overwrite, or leave those metrics out with --metrics.")
    return result
