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

import math
import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from emogen_cli.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from emogen_cli.config import Config
from emogen_cli.datasets import EpochSampler, LabelledImages, set_epoch
from emogen_cli.emoset import scan_emoset
from emogen_cli.emotions import EMOTIONS
from emogen_cli.encoder import EmotionClassifier, EmotionSpace, EncoderBundle, encoder_config
from emogen_cli.errors import EmogenError, Interrupted, TrainingDiverged
from emogen_cli.images import load_rgb, random_resized_crop, stage1_image, stage1_stats, to_array
from emogen_cli.reporting import Reporter, progress
from emogen_cli.runtime import make_accelerator


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


@torch.no_grad()
def _features(model: EmotionClassifier, loader: DataLoader, accelerator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(emotion-space features, logits, labels) of every image in `loader`, gathered across processes."""
    model.eval()
    feats, logits, labels = [], [], []
    for pixels, y in loader:
        with accelerator.autocast():
            f = accelerator.unwrap_model(model).encode(pixels)
            out = accelerator.unwrap_model(model).fc_2(F.relu(f))
        f, out, y = accelerator.gather_for_metrics((f.float(), out.float(), y))
        feats.append(f.cpu())
        logits.append(out.cpu())
        labels.append(y.cpu())
    return torch.cat(feats), torch.cat(logits), torch.cat(labels)


def train_encoder(config: Config, data_root: str | Path | None = None, out: str | Path | None = None,
                  resume: bool = False, reporter: Reporter | None = None) -> dict[str, Any]:
    from transformers import ResNetModel

    from emogen_cli.models import load, quiet_libraries

    reporter = reporter or Reporter()
    cfg = config.encoder
    seed = config.runtime.seed
    out_dir = Path(out or cfg.output)
    root = Path(data_root or config.data.root)
    if (out_dir / "config.json").is_file() and not resume:
        raise EmogenError(f"'{out_dir}' already holds a trained encoder.",
                          "Choose another --out, or pass --resume to continue its checkpoints.")
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
    step, history, best = 0, [], -1.0
    if resume and (ckpts := list_checkpoints(ckpt_dir)):
        weights, opt_state, state = load_checkpoint(ckpts[-1])
        accelerator.unwrap_model(model).load_state_dict(weights)
        optimizer.load_state_dict(opt_state)
        step, history, best = state["step"], state["history"], state["best"]
        reporter.info(f"Resuming from {ckpts[-1].name} (step {step}/{total}).")

    def checkpoint() -> None:
        if accelerator.is_main_process:
            save_checkpoint(ckpt_dir, step, accelerator.unwrap_model(model).state_dict(), optimizer,
                            {"history": history, "best": best, "total": total}, keep=cfg.keep_checkpoints)

    loss_value = float("nan")
    with progress(reporter, "Training encoder", total):
        reporter.advance("Training encoder", step)
        try:
            while step < total:
                epoch, skip = divmod(step, steps_per_epoch)
                model.train()
                batches = accelerator.skip_first_batches(loader, skip) if skip else loader
                set_epoch(batches, sampler, train_set, epoch)
                for pixels, labels in batches:
                    torch.manual_seed(seed * 1_000_003 + step)  # dropout depends on the step only
                    with accelerator.autocast():
                        loss = F.cross_entropy(model(pixels), labels)
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(f"The loss became {loss.item()} at step {step}.",
                                               "Lower encoder.lr; the last good checkpoint is kept in "
                                               f"{ckpt_dir} (resume with --resume).")
                    accelerator.backward(loss)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    loss_value = loss.item()
                    reporter.advance("Training encoder", 1, loss=loss_value, epoch=epoch + 1)
                    if step % cfg.checkpoint_every == 0:
                        checkpoint()
                    if step >= total:
                        break
                if step % steps_per_epoch == 0 or step >= total:  # an epoch ended: validate
                    acc = None
                    if val:
                        _, logits, labels = _features(model, accelerator.prepare(eval_loader(val)), accelerator)
                        acc = (logits.argmax(1) == labels).float().mean().item()
                        if acc > best and accelerator.is_main_process:
                            best = acc
                            ckpt_dir.mkdir(parents=True, exist_ok=True)
                            save_file({k: v.contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()},
                                      str(ckpt_dir / "best.safetensors"))
                    history.append({"epoch": math.ceil(step / steps_per_epoch), "step": step, "loss": loss_value,
                                    "val_accuracy": acc})
                    if acc is not None:
                        reporter.info(f"epoch {history[-1]['epoch']}: val accuracy {acc:.3f}")
        except KeyboardInterrupt:
            checkpoint()
            raise Interrupted(f"Interrupted at step {step}; checkpoint saved in {ckpt_dir}.",
                              "Run the same command with --resume to continue.") from None
    checkpoint()

    final = accelerator.unwrap_model(model)
    if (ckpt_dir / "best.safetensors").is_file():
        final.load_state_dict(load_file(str(ckpt_dir / "best.safetensors")))
    with progress(reporter, "Building emotion space", None):
        feats, logits, labels = _features(final, accelerator.prepare(eval_loader(space_samples)), accelerator)
    space = EmotionSpace.from_features(feats, labels, EMOTIONS)
    train_images = {s.image for s in train}
    in_train = torch.tensor([s.image in train_images for s in space_samples])
    train_acc = ((logits.argmax(1) == labels)[in_train].float().mean().item() if in_train.any() else None)
    bundle = EncoderBundle(
        encoder_config(final.backbone.config, cfg.backbone, cfg.emotion_dim, cfg.dropout, cfg.image_size,
                       preprocessing=cfg.preprocessing, space_splits=list(cfg.space_splits),
                       space_images=len(space_samples), train_images=len(train), val_images=len(val), best_val_accuracy=best if val else None,
                       history=history, seed=seed),
        space, final.cpu().eval(),
    )
    if accelerator.is_main_process:
        bundle.save(out_dir)
    accelerator.wait_for_everyone()
    return {"path": str(out_dir), "steps": step, "final_loss": loss_value, "train_accuracy": train_acc,
            "best_val_accuracy": best if val else None, "history": history, "emotion_dim": cfg.emotion_dim,
            "emotions": list(EMOTIONS), "skipped": dict(scan.skipped), "train_images": len(train),
            "space_images": len(space_samples), "preprocessing": cfg.preprocessing,
            "val_images": len(val)}
