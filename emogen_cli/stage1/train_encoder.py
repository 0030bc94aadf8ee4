"""`emogen train-encoder`: stage 1 (ResNet-50 emotion classifier) and the emotion space.

A readable loop: seeded and resumable (checkpoints every N steps; the data order, crops and
dropout are functions of the seed and the step, so a resumed run equals an uninterrupted one),
validation accuracy per epoch, best weights kept, then per-emotion Gaussians (mean, unbiased std)
of the 768-d features over the images of `encoder.space_splits` (default: all of EmoSet, as the
official emo_translate.py).

Inputs (`encoder.preprocessing`): "official" is the official Resize(256) -> CenterCrop(224) ->
Normalize(0.5, 0.5) for everything deterministic (validation, the emotion space, and wherever the
bundle is applied later); "imagenet" is emogen's earlier bicubic resize-crop with ImageNet
statistics. The official stage-1 training script is not released, so training images get a
random square crop (35-100% of the area, resized, flipped half of the time) with the same
normalisation: augmentation only, the evaluation transform stays the official one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from emogen_cli.core.checkpoint import check_finite, list_checkpoints, resume_from, save_checkpoint
from emogen_cli.core.config import Config
from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.files import atomic_save_safetensors
from emogen_cli.core.images import load_rgb, random_resized_crop, stage1_image, stage1_stats, to_array
from emogen_cli.core.interrupts import StopRequested, StopSignals, fault_point, step_finished, stop_with_checkpoint
from emogen_cli.core.reporting import Reporter, progress
from emogen_cli.core.runtime import make_accelerator, step_seed
from emogen_cli.data.datasets import EpochSampler, LabelledImages, set_epoch
from emogen_cli.data.emoset import scan_emoset
from emogen_cli.stage1.encoder import EmotionClassifier, EmotionSpace, EncoderBundle, encoder_config

MIN_VAL_IMAGES = 50  # fewer validation images than this: the accuracy is reported with a warning


def run_fingerprint(config: Config, section: str, files: list[Path]) -> str:
    """What makes a training run the same run: its config section (less where it writes and how often it
    checkpoints), the model ids, seed and precision, and the bytes of the input files it reads."""
    from emogen_cli.core.files import file_digest

    free = {"output", "checkpoint_every", "keep_checkpoints"}
    values = {k: v for k, v in dataclasses.asdict(getattr(config, section)).items() if k not in free}
    values.update({"model": dataclasses.asdict(config.model), "seed": config.runtime.seed,
                   "precision": config.runtime.mixed_precision, "inputs": file_digest(*files)})
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def finished_run(out_dir: Path, fingerprint: str, what: str, reporter: Reporter) -> dict[str, Any] | None:
    """The recorded result when `out_dir` holds the finished output of this very run (re-running a command,
    such as the README's quick start, is then a no-op); None when it holds nothing finished; otherwise refuses."""
    from emogen_cli.core.files import read_json

    if not (out_dir / "config.json").is_file():
        return None
    recorded = read_json(out_dir / "config.json", f"{what.capitalize()} config")
    run = recorded.get("run") if isinstance(recorded, dict) else None
    if isinstance(run, dict) and run.get("fingerprint") == fingerprint and isinstance(run.get("result"), dict):
        reporter.info(f"'{out_dir}' already holds this {what}, trained with the same settings and data: nothing to do.")
        return {**run["result"], "already_done": True}
    raise EmogenError(f"'{out_dir}' already holds a trained {what} (from other settings or data).",
                      f"Choose another --out, pass --resume to continue its checkpoints, or delete it to start over "
                      f"(rm -rf {out_dir}).")


class Stage1Images(LabelledImages):
    """LabelledImages with the configured stage-1 preprocessing for the deterministic (eval) path."""

    def __init__(self, *args, preprocessing: str = "official", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.preprocessing = preprocessing

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = load_rgb(self.root / self.images[i])
        if self.train:
            image = random_resized_crop(image, self.size, random.Random(f"{self.seed}/{self.epoch}/{i}"))
        else:
            image = stage1_image(image, self.size, self.preprocessing)
        return torch.from_numpy(to_array(image, self.mean, self.std)), self.labels[i]


def _optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _settings(config: Config, precision: str, processes: int, steps_per_epoch: int, train, val) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the checkpoint (the length may change)."""
    free = {"output", "max_steps", "epochs", "checkpoint_every", "keep_checkpoints"}
    settings = {f"encoder.{k}": v for k, v in dataclasses.asdict(config.encoder).items() if k not in free}
    images = json.dumps([[s.image, s.emotion] for s in train] + [["val", s.image, s.emotion] for s in val])
    return {**settings, "runtime.seed": config.runtime.seed, "mixed_precision": precision, "processes": processes,
            "steps_per_epoch": steps_per_epoch, "data.images": hashlib.sha256(images.encode()).hexdigest()[:16]}


@torch.no_grad()
def _features(model: EmotionClassifier, loader: DataLoader, accelerator, should_stop=None,
              advance=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(emotion-space features, logits, labels) of every image in `loader`, gathered across processes;
    `advance(n)` is told how many images this process finished."""
    model.eval()
    feats, logits, labels = [], [], []
    for pixels, y in loader:
        if should_stop is not None and should_stop():
            raise StopRequested
        with accelerator.autocast():
            f = accelerator.unwrap_model(model).encode(pixels)
            out = accelerator.unwrap_model(model).fc_2(F.relu(f))
        f, out, y = accelerator.gather_for_metrics((f.float(), out.float(), y))
        feats.append(f.cpu())
        logits.append(out.cpu())
        labels.append(y.cpu())
        if advance is not None:
            advance(len(pixels))
    return torch.cat(feats), torch.cat(logits), torch.cat(labels)


def train_encoder(config: Config, data_root: str | Path | None = None, out: str | Path | None = None,
                  resume: bool = False, reporter: Reporter | None = None) -> dict[str, Any]:
    from transformers import ResNetModel

    from emogen_cli.core.pretrained import load, quiet_libraries

    reporter = reporter or Reporter()
    cfg = config.encoder
    seed = config.runtime.seed
    out_dir = Path(out or cfg.output)
    root = Path(data_root or config.data.root)
    split_files = [root / f"{split}.json" for split in ("train", "val", "test")]
    fingerprint = run_fingerprint(config, "encoder", [*split_files, Path(cfg.backbone) / "config.json",
                                                      Path(cfg.backbone) / "model.safetensors"])
    if not resume and (done := finished_run(out_dir, fingerprint, "encoder", reporter)) is not None:
        return done
    ckpt_dir = out_dir / "checkpoints"
    if list_checkpoints(ckpt_dir) and not resume:
        raise EmogenError(f"'{out_dir}' holds checkpoints of an unfinished run.", "Pass --resume to continue it.")

    accelerator = make_accelerator(config.runtime.mixed_precision, config.runtime.device)
    scan = scan_emoset(root, ["train", "val", "test"], config.data.verify_images, config.data.num_workers, reporter)
    train = [s for s in scan.samples if s.split in ("train", "all")]
    val = [s for s in scan.samples if s.split == "val"]
    if not val and len(train) >= 20:  # no split lists: hold out every 20th image (5%, as EmoSet's val share)
        val, train = train[::20], [s for i, s in enumerate(train) if i % 20]
    if not train:
        raise EmogenError(f"No usable training image found under '{root}'.", "Check the EmoSet root.")
    if val and len(val) < MIN_VAL_IMAGES:
        reporter.warn(f"The validation split has {len(val)} image(s): its accuracy moves in steps of "
                      f"{1 / len(val):.0%} and says little (EmoSet's has thousands).")
    index = {e: i for i, e in enumerate(EMOTIONS)}

    mean, std = stage1_stats(cfg.preprocessing)
    space_samples = [s for s in scan.samples if s.split in cfg.space_splits or s.split == "all"]
    if not space_samples:
        raise EmogenError(f"No image of the splits {', '.join(cfg.space_splits)} under '{root}' to build the "
                          "emotion space from.", "Set encoder.space_splits to splits that exist (default: all).")

    def dataset(samples, training: bool) -> LabelledImages:
        return Stage1Images(root, [s.image for s in samples], [index[s.emotion] for s in samples], cfg.image_size,
                            mean, std, training, seed, preprocessing=cfg.preprocessing)

    train_set = dataset(train, True)
    sampler = EpochSampler(len(train_set), seed)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=config.data.num_workers,
                        drop_last=len(train_set) > cfg.batch_size)
    eval_loader = lambda samples: DataLoader(dataset(samples, False), batch_size=cfg.batch_size,  # noqa: E731
                                             num_workers=config.data.num_workers)

    quiet_libraries()
    torch.manual_seed(seed)
    backbone = load(ResNetModel, cfg.backbone)
    model = EmotionClassifier(backbone.config, cfg.emotion_dim, len(EMOTIONS), cfg.dropout)
    model.backbone.load_state_dict(backbone.state_dict())
    optimizer = _optimizer(model, cfg)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    steps_per_epoch = len(loader)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    settings = _settings(config, accelerator.mixed_precision, accelerator.num_processes, steps_per_epoch, train, val)
    step, history, best, loss_value = 0, [], -1.0, float("nan")
    best_state: dict[str, torch.Tensor] | None = None  # the best validated weights: part of every checkpoint
    state = resume_from(ckpt_dir, resume, settings, accelerator.unwrap_model(model), optimizer, total, reporter,
                        tensors=("best",))
    if state is not None:
        step, history, best = state["step"], state["history"], state["best"]
        loss_value = float("nan") if state.get("loss") is None else state["loss"]
        best_state = state["_tensors"]["best"]
    saved_step = step if resume and step else -1

    def checkpoint() -> None:
        nonlocal saved_step
        if accelerator.is_main_process and saved_step != step:
            save_checkpoint(ckpt_dir, step, accelerator.unwrap_model(model).state_dict(), optimizer,
                            {"history": history, "best": best, "total": total, "settings": settings,
                             "loss": None if math.isnan(loss_value) else loss_value},
                            keep=cfg.keep_checkpoints, tensors={"best": best_state} if best_state else None)
        saved_step = step
        accelerator.wait_for_everyone()

    def validate() -> None:
        """Validation of an epoch's end: its score, the best weights and the history are checkpointed state."""
        nonlocal best, best_state, saved_step
        acc = None
        if val:
            fault_point("validation")
            _, logits, labels = _features(model, accelerator.prepare(eval_loader(val)), accelerator,
                                          lambda: stop.now(accelerator))
            acc = (logits.argmax(1) == labels).float().mean().item()
            if acc > best:
                best = acc
                best_state = {k: v.detach().cpu().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
                if accelerator.is_main_process:
                    atomic_save_safetensors(ckpt_dir / "best.safetensors", {k: v.contiguous() for k, v in best_state.items()})
        history.append({"epoch": step // steps_per_epoch, "step": step, "loss": loss_value, "val_accuracy": acc,
                        "val_images": len(val)})
        saved_step = -1  # the state changed: a checkpoint of this step must be written again
        if acc is not None:
            reporter.info(f"epoch {history[-1]['epoch']}: val accuracy {acc:.3f} on {len(val)} image(s)")
        model.train()

    stop = StopSignals()
    with progress(reporter, "Training encoder", total), stop, stop_with_checkpoint(stop, checkpoint, ckpt_dir,
                                                                                   lambda: step):
        reporter.advance("Training encoder", step)
        # A stop at an epoch's end (Ctrl-C during validation) left that validation to do: do it first.
        if step and step % steps_per_epoch == 0 and (not history or history[-1]["step"] != step):
            validate()
            checkpoint()
        while step < total:
            epoch, skip = divmod(step, steps_per_epoch)
            model.train()
            batches = accelerator.skip_first_batches(loader, skip) if skip else loader
            set_epoch(batches, sampler, train_set, epoch)
            for pixels, labels in batches:
                # dropout depends on the step only (and on the process, whose share of the batch it masks)
                torch.manual_seed(step_seed(seed, step, accelerator.process_index))
                with accelerator.autocast():
                    loss = F.cross_entropy(model(pixels), labels)
                check_finite(loss, step, "encoder.lr", ckpt_dir)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                fault_point("after_optimizer_step")
                step += 1
                loss_value = (accelerator.reduce(loss.detach().float(), reduction="mean").item()
                              if accelerator.num_processes > 1 else loss.item())  # the global batch's loss
                reporter.advance("Training encoder", 1, loss=loss_value, epoch=epoch + 1)
                if step % steps_per_epoch == 0:  # an epoch ended: validate before checkpointing
                    validate()
                if step_finished(step, total, cfg.checkpoint_every, checkpoint, stop, accelerator):
                    break
    checkpoint()

    reported = list(history)
    if val and (not history or history[-1]["step"] != step):
        # max_steps ended mid-epoch: score the final weights too (not checkpointed state: a longer resumed run
        # must not see it, as an uninterrupted one would not have run it)
        _, logits, labels = _features(model, accelerator.prepare(eval_loader(val)), accelerator)
        acc = (logits.argmax(1) == labels).float().mean().item()
        reported.append({"epoch": math.ceil(step / steps_per_epoch), "step": step, "loss": loss_value,
                         "val_accuracy": acc, "val_images": len(val)})
        if acc > best:
            best, best_state = acc, None  # the final weights are the best
    final = accelerator.unwrap_model(model)
    if best_state is not None:
        final.load_state_dict(best_state)
    space_loader = accelerator.prepare(eval_loader(space_samples))
    with progress(reporter, "Building emotion space", len(space_samples)):
        feats, logits, labels = _features(final, space_loader, accelerator,
                                          advance=lambda n: reporter.advance("Building emotion space",
                                                                             n * accelerator.num_processes))
    space = EmotionSpace.from_features(feats, labels, EMOTIONS)
    train_images = {s.image for s in train}
    in_train = torch.tensor([s.image in train_images for s in space_samples])
    train_acc = ((logits.argmax(1) == labels)[in_train].float().mean().item() if in_train.any() else None)
    train_acc_images = int(in_train.sum())  # the training images among the emotion space's, without augmentation
    result = {"path": str(out_dir), "steps": step, "final_loss": None if math.isnan(loss_value) else loss_value,
              "train_accuracy": train_acc,
              "train_accuracy_images": train_acc_images, "best_val_accuracy": best if val else None,
              "history": reported, "emotion_dim": cfg.emotion_dim, "emotions": list(EMOTIONS),
              "skipped": dict(scan.skipped), "train_images": len(train), "space_images": len(space_samples),
              "preprocessing": cfg.preprocessing, "val_images": len(val)}
    bundle = EncoderBundle(
        encoder_config(final.backbone.config, cfg.backbone, cfg.emotion_dim, cfg.dropout, cfg.image_size,
                       preprocessing=cfg.preprocessing, space_splits=list(cfg.space_splits),
                       space_images=len(space_samples), train_images=len(train), val_images=len(val),
                       best_val_accuracy=best if val else None, history=reported, seed=seed,
                       run={"fingerprint": fingerprint, "result": result if step >= total else None}),
        space, final.cpu().eval(),
    )
    if accelerator.is_main_process:
        bundle.save(out_dir)
    accelerator.wait_for_everyone()
    return result
