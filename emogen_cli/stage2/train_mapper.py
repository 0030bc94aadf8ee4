"""`emogen train-mapper`: stage 2, the mapping network from the emotion space to CLIP's text space.

Per step: stage-1 emotion vectors -> mapper -> the "<emotion>" token's embedding -> frozen CLIP
text encoder(s) -> frozen UNet (LDM loss; the model family's conditioning, emogen_cli/backbones/: SDXL's two
towers, pooled embeds and each image's size and crop as micro-conditioning); the pooled state (mapper.semantic_token: the placeholder's
final hidden state, as the official code, or end-of-text) -> CLIP's text_projection -> the semantic
vector. The attribute loss is a cross-entropy over mapper.attribute_vocabulary (the official
emotional attributes by default; samples whose attribute is outside it get none), the emotion
loss a CLIP-space probe's cross-entropy; the attribute term is gated by the emotion confidence c of
the image's (attribute, emotion).

What makes it faster than the official loop: VAE latents come from `prepare --cache-latents`,
stage-1 emotion vectors are computed once (the encoder is frozen and deterministic), attribute
text features once, batches > 1, mixed precision on CUDA.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from emogen_cli.backbones import Backbone, get, resolution, resolve
from emogen_cli.core.checkpoint import check_finite, list_checkpoints, resume_from, save_checkpoint
from emogen_cli.core.config import Config
from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.files import atomic_save_safetensors, atomic_write_json, file_digest, read_safetensors
from emogen_cli.core.images import DIFFUSION_MEAN, DIFFUSION_STD, load_rgb, resize_center_crop, to_array
from emogen_cli.core.interrupts import StopSignals, fault_point, step_finished, stop_with_checkpoint
from emogen_cli.core.reporting import Reporter, progress
from emogen_cli.core.runtime import DTYPES, apply_runtime, make_accelerator, step_generator
from emogen_cli.data.datasets import EpochSampler, set_epoch
from emogen_cli.data.emoset import MANIFEST, Prepared, Row, load_prepared
from emogen_cli.stage1.encoder import EncoderBundle, encoder_pixels, load_encoder
from emogen_cli.stage2.card import write_model_card
from emogen_cli.stage2.conditioning import text_semantics
from emogen_cli.stage2.confidence import attribute_texts
from emogen_cli.stage2.mapper import FORMAT, MapperBundle, MappingNetwork, mapper_loss


class MapperSamples(Dataset):
    """Manifest rows -> emotion vector, latent distribution (or pixels), labels and confidence."""

    def __init__(self, rows: list[Row], root: Path, vectors: dict[str, torch.Tensor], latents, resolution: int,
                 attributes: list[str], confidence: dict[str, list[float]], time_ids: bool = False) -> None:
        self.rows, self.root, self.vectors, self.latents, self.resolution = rows, root, vectors, latents, resolution
        self.time_ids = time_ids  # SDXL: each image's original size and crop (micro-conditioning)
        # A name's first class (as the official `total_attr.index`; a name listed twice has two classes with equal
        # scores); -1: outside the vocabulary (no L_attr).
        self.attribute_index: dict[str, int] = {}
        for i, a in enumerate(attributes):
            self.attribute_index.setdefault(a, i)
        self.confidence = confidence

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        emotion = EMOTIONS.index(row.emotion)
        item = {"vector": self.vectors[row.id], "emotion": emotion, "attribute": self.attribute_index.get(row.attribute, -1),
                "confidence": torch.tensor(self.confidence.get(row.attribute, [0.0] * len(EMOTIONS))[emotion])}
        if self.latents is not None:
            item["latent_params"] = self.latents[row.id]
        else:
            image = resize_center_crop(load_rgb(self.root / row.image), self.resolution)
            item["pixels"] = torch.from_numpy(to_array(image, DIFFUSION_MEAN, DIFFUSION_STD))
        if self.time_ids:
            item["time_ids"] = crop_time_ids(self.root / row.image, self.resolution)
        return item


def crop_time_ids(path: Path, size: int) -> torch.Tensor:
    """SDXL's add_time_ids of a training image: its original (height, width), the top-left corner of the centre
    crop `resize_center_crop` takes (in the resized image, as diffusers' SDXL training scripts record it) and the
    target (size, size). Only the image's header is read."""
    from PIL import Image

    from emogen_cli.backbones.sdxl import time_ids

    with Image.open(path) as image:
        w, h = image.size
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    return time_ids((h, w), ((rh - size) // 2, (rw - size) // 2), (size, size))


@torch.no_grad()
def _emotion_vectors(encoder: EncoderBundle, prepared: Prepared, cache: Path, device: torch.device,
                     reporter: Reporter, encoder_digest: str = "", write: bool = True) -> dict[str, torch.Tensor]:
    """Stage-1 features of every unique image, computed once and cached (the encoder is frozen).

    The cache records the digest of the encoder that made it: another encoder's vectors, or a damaged
    file, are recomputed, never used.
    """
    ids = sorted({r.id: r.image for r in prepared.rows}.items())
    if cache.is_file():
        try:
            stored, metadata = read_safetensors(cache, "Emotion-vector cache", with_metadata=True)
        except EmogenError as exc:
            reporter.warn(f"{exc.message} Recomputing it.")
        else:
            if metadata.get("encoder", "") != encoder_digest:
                reporter.info(f"'{cache}' was made by another encoder: recomputing the emotion vectors.")
            elif all(i in stored and stored[i].shape == (encoder.space.dim,) for i, _ in ids):
                return stored
    model = encoder.model.to(device).eval()
    vectors: dict[str, torch.Tensor] = {}
    with progress(reporter, "Emotion vectors", len(ids)):
        for start in range(0, len(ids), 32):
            chunk = ids[start:start + 32]
            pixels = torch.from_numpy(np.stack([encoder_pixels(load_rgb(prepared.root / rel), encoder.config)
                                                for _, rel in chunk]))
            feats = model.encode(pixels.to(device)).float().cpu()
            vectors.update({i: f.contiguous() for (i, _), f in zip(chunk, feats)})
            reporter.advance("Emotion vectors", len(chunk))
    if write:
        atomic_save_safetensors(cache, vectors, metadata={"encoder": encoder_digest})
    return vectors


def encoder_digest(path: str | Path) -> str:
    """What identifies an encoder's emotion vectors: its config, weights and emotion space."""
    path = Path(path)
    return file_digest(path / "config.json", path / "model.safetensors", path / "emotion_space.safetensors")


def _settings(config: Config, encoder_id: str, prepared: Prepared, precision: str, processes: int,
              steps_per_epoch: int, cached_latents: bool, family: str = "sd15",
              size: int | None = None) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the checkpoint (max_steps may grow). The model family
    and the size it resolves to are recorded on families other than SD 1.5 (SD 1.5 checkpoints of earlier versions,
    which lack them, still resume)."""
    free = {"output", "max_steps", "checkpoint_every", "keep_checkpoints", "gradient_checkpointing", "encoder",
            "confidence"}
    settings = {f"mapper.{k}": v for k, v in dataclasses.asdict(config.mapper).items() if k not in free}
    settings.update({f"model.{k}": v for k, v in dataclasses.asdict(config.model).items() if k != "family"})
    if family != "sd15":
        settings.update({"model family": family, "model.resolution": size})
    confidence = config.mapper.confidence
    kept = Path(config.mapper.output) / "confidence.json"  # an imported table in --out is used as if given
    if not confidence and _imported_confidence(kept) is not None:
        confidence = kept
    return {**settings, "mapper.encoder (contents)": encoder_id[:16],
            "mapper.confidence (contents)": file_digest(confidence)[:16] if confidence else None,
            "prepared (manifest)": file_digest(prepared.path / MANIFEST)[:16], "runtime.seed": config.runtime.seed,
            "mixed_precision": precision, "processes": processes, "steps_per_epoch": steps_per_epoch,
            "cached_latents": cached_latents}


def _global_means(values: dict[str, torch.Tensor], accelerator) -> dict[str, float]:
    """Logged values as means over every process's batch (the global batch), not process 0's share."""
    if accelerator.num_processes > 1:
        stacked = accelerator.reduce(torch.stack([v.float() for v in values.values()]), reduction="mean")
        return dict(zip(values, stacked.tolist()))
    return {k: v.item() for k, v in values.items()}


def _confidence(config: Config, prepared: Prepared, out_dir: Path, clip, device, reporter: Reporter):
    """(confidence table, CLIP emotion probe or None, where the probe came from).

    The table is mapper.confidence if given, else the cached one, else computed on the prepared images
    with the probe: mapper.emotion_probe if set (e.g. the official Clip_emotion_classifier .pth), else
    one trained here. With a given table, the probe is mapper.emotion_probe or none.

    A confidence.json in the output folder that emogen did not compute (an official table imported with
    --import-official-confidence, or one the user put there) is never replaced: without mapper.confidence it is
    the table used, and the reporter says so."""
    from emogen_cli.core.clipspace import clip_image_features
    from emogen_cli.stage2.confidence import PROBE_METHOD, confidence_table, load_confidence, load_probe, train_probe

    given = load_probe(config.mapper.emotion_probe) if config.mapper.emotion_probe else None
    source = str(config.mapper.emotion_probe) if given is not None else None
    if config.mapper.confidence:
        return load_confidence(config.mapper.confidence), given, source
    cached, probe_file = out_dir / "confidence.json", out_dir / "emotion_probe.safetensors"
    if (imported := _imported_confidence(cached)) is not None:
        method = imported.get("method") or "not computed by emogen"
        reporter.info(f"Using the confidence table already in {cached} ({method}): it is kept, never replaced. "
                      "Pass --confidence FILE to use another one, or move it away to compute one.")
        return imported, given, source
    # What the cached table was computed from: another probe, dataset or CLIP model makes it stale.
    made_from = {"probe": file_digest(config.mapper.emotion_probe)[:16] if given is not None else "trained",
                 "manifest": file_digest(prepared.path / MANIFEST)[:16], "clip": config.model.clip,
                 "seed": config.runtime.seed}
    if cached.is_file() and probe_file.is_file():
        try:  # a damaged cache is recomputed, never trusted
            table = load_confidence(cached)
            if table.get("made_from") == made_from:
                return (table, given or load_probe(probe_file, classes=len(EMOTIONS)),
                        source or table.get("probe_source", "trained by emogen"))
            reporter.info(f"'{cached}' was computed from another probe, dataset or CLIP model: recomputing it.")
        except EmogenError as exc:
            reporter.warn(f"{exc.message} Recomputing the emotion confidence.")
    unique = prepared.unique_rows
    features = clip_image_features(clip, [prepared.root / r.image for r in unique], device, reporter=reporter)
    if given is not None:
        probe, accuracy = given, None
    else:
        labels = torch.tensor([EMOTIONS.index(r.emotion) for r in unique])
        probe, accuracy = train_probe(features, labels, seed=config.runtime.seed)
        reporter.info(f"CLIP emotion probe: held-out accuracy {accuracy:.3f}")
        source = "trained by emogen"
    table = {"emotions": list(EMOTIONS), "method": PROBE_METHOD,
             "probe_accuracy": accuracy, "probe_source": source, "made_from": made_from,
             "attributes": confidence_table(probe, features, [r.attribute for r in unique])}
    _save_probe(probe, probe_file)
    atomic_write_json(cached, table, indent=1)
    return table, probe, source


def _imported_confidence(path: Path) -> dict[str, Any] | None:
    """The table at `path` if it is one emogen did not compute (imported or the user's), else None. Such a table is
    read in full: a damaged one is one line, never silently replaced by a computed table."""
    from emogen_cli.stage2.confidence import PROBE_METHOD, load_confidence

    if not path.is_file():
        return None
    try:
        head = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None  # unreadable: nobody's table, recomputed (with a warning) as any damaged cache
    if isinstance(head, dict) and head.get("method") == PROBE_METHOD:
        return None  # emogen's own cache
    return load_confidence(path)


def _save_probe(probe: torch.nn.Linear, path: Path) -> None:
    """The probe used, beside the bundle: evaluate's Emo-A reads it by default."""
    atomic_save_safetensors(path, {"fc.weight": probe.weight.detach().cpu().contiguous(),
                                   "fc.bias": probe.bias.detach().cpu().contiguous()})


def _vocabulary(config: Config, prepared: Prepared, confidence: dict[str, list[float]],
                reporter: Reporter | None = None) -> dict[str, Any]:
    """The L_attr vocabulary: every prepared attribute ("all") or the emotional ones ("emotional":
    mapper.emotional_attributes, by default the official lists shipped with emogen for EmoSet, else derived from
    the confidence table, see confidence.emotional_vocabulary). "classes" are the L_attr classes
    (mapper.attribute_duplicates), "names" each name once, "text" what CLIP reads (mapper.attribute_text)."""
    from emogen_cli.stage2.confidence import emotional_vocabulary, vocabulary_classes

    cfg = config.mapper
    if cfg.attribute_vocabulary == "all":
        vocabulary = {"kind": "all", "names": prepared.attributes, "source": "every attribute of the prepared data"}
    else:
        emotional = emotional_vocabulary(cfg.emotional_attributes, confidence,
                                         [r.attribute for r in prepared.unique_rows], reporter)
        if not emotional["names"]:
            raise EmogenError("The emotional attribute vocabulary is empty: no attribute is tied to one emotion.",
                              "Set mapper.emotional_attributes: official (the official EmoSet lists), pass a list "
                              "with --import-official-attributes, or set mapper.attribute_vocabulary: all.")
        vocabulary = {"kind": "emotional", **emotional}
    vocabulary["classes"] = vocabulary_classes(vocabulary, cfg.attribute_duplicates)
    vocabulary["duplicates"], vocabulary["text"] = cfg.attribute_duplicates, cfg.attribute_text
    return vocabulary


def train_mapper(config: Config, prepared_dir: str | Path | None = None, resume: bool = False,
                 reporter: Reporter | None = None) -> dict[str, Any]:
    from transformers import CLIPModel

    from emogen_cli.core.pretrained import freeze, load, model_fingerprint, quiet_libraries
    from emogen_cli.data.latents import LatentCache

    reporter = reporter or Reporter()
    cfg, seed = config.mapper, config.runtime.seed
    out_dir, ckpt_dir = Path(cfg.output), Path(cfg.output) / "checkpoints"
    from emogen_cli.stage1.train_encoder import finished_run, run_fingerprint

    prepared_path = Path(prepared_dir or config.data.prepared)
    fingerprint = run_fingerprint(config, "mapper", [
        prepared_path / "prepared.json", prepared_path / MANIFEST, *(Path(cfg.encoder) / n for n in (
            "config.json", "model.safetensors", "emotion_space.safetensors")),
        *([Path(cfg.confidence)] if cfg.confidence else []), *([Path(cfg.emotion_probe)] if cfg.emotion_probe else [])])
    if not resume and (done := finished_run(out_dir, fingerprint, "mapper bundle", reporter)) is not None:
        return done
    if list_checkpoints(ckpt_dir) and not resume:
        raise EmogenError(f"'{out_dir}' holds checkpoints of an unfinished run.", "Pass --resume to continue it.")
    prepared = load_prepared(prepared_dir or config.data.prepared)
    encoder = load_encoder(cfg.encoder)
    listed = cfg.emotional_attributes not in (None, "official", "derived") and cfg.attribute_vocabulary == "emotional"
    if cfg.emotion_probe or listed:
        from emogen_cli.stage2.confidence import load_probe, read_emotional_attributes

        if cfg.emotion_probe:  # small files given by the user: a bad one fails now, before the models load
            load_probe(cfg.emotion_probe)
        if listed:
            read_emotional_attributes(cfg.emotional_attributes)
    accelerator = make_accelerator(config.runtime.mixed_precision, config.runtime.device)
    device, weight_dtype = accelerator.device, DTYPES[accelerator.mixed_precision]
    out_dir.mkdir(parents=True, exist_ok=True)

    quiet_libraries()
    backbone = resolve(config)
    size = resolution(config, backbone)
    latents = LatentCache.open_if_matching(prepared.path / "latents", config.model.pretrained, config.model.revision,
                                           size)
    if latents is not None and not all(r.id in latents for r in prepared.rows):
        latents = None
    reporter.info("Using cached VAE latents." if latents else "No complete latent cache: encoding images on the fly.")
    parts = backbone.load_parts(config.model.pretrained, config.model.revision, vae=latents is None)
    text_encoders, unet, scheduler = backbone.text_encoders(parts), parts["unet"], parts["noise_scheduler"]
    widths = backbone.text_widths(parts)
    vae = parts.get("vae")
    clip = load(CLIPModel, config.model.clip).to(device).eval()
    projection = backbone.semantic_projection(parts, clip)
    semantic_width = list(widths.values())[backbone.semantic_tower]
    if projection.shape[1] != semantic_width:
        raise EmogenError(f"CLIP '{config.model.clip}' projects {projection.shape[1]}-d text states but the text encoder "
                          f"of '{config.model.pretrained}' is {semantic_width}-d.",
                          "Use the CLIP model whose text tower the Stable Diffusion model uses.")
    freeze(*text_encoders, unet, clip, *([vae] if vae is not None else []))
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        for text_encoder in text_encoders:
            text_encoder.gradient_checkpointing_enable()
        unet.train()  # checkpointing is active in train mode only; the frozen UNet has no dropout
    for text_encoder in text_encoders:
        text_encoder.to(device, weight_dtype)
    unet.to(device, weight_dtype)
    unet = apply_runtime(config.runtime, unet=unet, device=device)  # runtime.* fast paths (core/runtime.py)
    if vae is not None:  # SDXL's VAE overflows in fp16 (force_upcast): it encodes in float32, as diffusers does
        vae.to(device, torch.float32 if getattr(vae.config, "force_upcast", False) else weight_dtype)

    table, probe, probe_source = _confidence(config, prepared, out_dir, clip, device, reporter)
    confidence = table["attributes"]
    if cfg.lambda_emo > 0 and probe is None:
        raise EmogenError(f"mapper.lambda_emo is {cfg.lambda_emo} but there is no emotion probe for L_emo "
                          "(a confidence table was given, so none is trained).",
                          "Pass --emotion-probe FILE (the official Clip_emotion_classifier .pth or an "
                          "emotion_probe.safetensors), or set --lambda-emo 0.")
    if probe is not None and config.mapper.emotion_probe and accelerator.is_main_process:
        _save_probe(probe, out_dir / "emotion_probe.safetensors")
    del clip
    encoder_id = encoder_digest(cfg.encoder)
    vectors = _emotion_vectors(encoder, prepared, out_dir / "emotion_vectors.safetensors", device, reporter,
                               encoder_id, write=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    encoder.model = None

    prompts = backbone.prompt_encoder(parts, [cfg.placeholder], cfg.semantic_token)
    vocabulary = _vocabulary(config, prepared, confidence, reporter)
    attributes = vocabulary["classes"]
    vocabulary_set = set(attributes)
    in_vocabulary = sum(r.attribute in vocabulary_set for r in prepared.unique_rows)
    repeated = len(attributes) - len(set(attributes))
    reporter.info(f"L_attr over {len(attributes)} {vocabulary['kind']} attribute classes"
                  f"{f' ({repeated} names listed twice)' if repeated else ''} ({vocabulary['source']}); "
                  f"{in_vocabulary} of {len(prepared.unique_rows)} images have one.")
    proj = projection.to(device)
    attribute_features = text_semantics(prompts, attribute_texts(attributes, cfg.attribute_text), proj)
    prompt_ids = prompts.tokenize([cfg.placeholder])
    if probe is not None:
        probe = probe.to(device)
        if probe.in_features != projection.shape[0] and backbone.family != "sd15" and cfg.lambda_emo == 0:
            reporter.info(f"The emotion probe takes {probe.in_features}-d CLIP features and the semantic vectors of "
                          f"{backbone.title} are {projection.shape[0]}-d: it scores the confidence table only "
                          "(L_emo is off).")
            probe_for_loss = None
        elif probe.in_features != projection.shape[0]:
            raise EmogenError(f"The emotion probe takes {probe.in_features}-d inputs but the semantic vectors of "
                              f"'{config.model.clip}' are {projection.shape[0]}-d.",
                              "Use a probe trained on the same CLIP model.")
        else:
            probe_for_loss = probe
    else:
        probe_for_loss = None

    dataset = MapperSamples(prepared.rows, prepared.root, vectors, latents, size, attributes, confidence,
                            time_ids=backbone.needs_time_ids())
    sampler = EpochSampler(len(dataset), seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=config.data.num_workers,
                        drop_last=len(dataset) > cfg.batch_size)
    torch.manual_seed(seed)
    mapper = MappingNetwork(encoder.space.dim, cfg.hidden_dim, sum(widths.values()), cfg.layers)
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    mapper, optimizer, loader = accelerator.prepare(mapper, optimizer, loader)

    step, total, steps_per_epoch = 0, cfg.max_steps, len(loader)
    settings = _settings(config, encoder_id, prepared, accelerator.mixed_precision, accelerator.num_processes,
                         steps_per_epoch, latents is not None, backbone.family, size)
    history: list[dict[str, float]] = []
    if (state := resume_from(ckpt_dir, resume, settings, accelerator.unwrap_model(mapper), optimizer, total,
                             reporter)) is not None:
        step, history = state["step"], state.get("history", [])
    saved_step = step if resume and step else -1

    log_every, window, window_steps = config.runtime.log_every, {}, 0

    def checkpoint() -> None:
        nonlocal saved_step
        if window:  # steps since the last read: no checkpoint of weights a NaN/inf loss has reached
            check_finite(window["loss"], step - 1, "mapper.lr", ckpt_dir)
        if accelerator.is_main_process and saved_step != step:
            save_checkpoint(ckpt_dir, step, accelerator.unwrap_model(mapper).state_dict(), optimizer,
                            {"total": total, "settings": settings, "history": history[-50:]},
                            keep=cfg.keep_checkpoints)
        saved_step = step
        accelerator.wait_for_everyone()

    scaling = (vae.config.scaling_factor if vae is not None else
               _vae_scaling(config.model.pretrained, config.model.revision))
    stop = StopSignals()
    with progress(reporter, "Training mapper", total), stop, stop_with_checkpoint(stop, checkpoint, ckpt_dir,
                                                                                  lambda: step):
        reporter.advance("Training mapper", step)
        while step < total:
            epoch, skip = divmod(step, steps_per_epoch)
            mapper.train()
            batches = accelerator.skip_first_batches(loader, skip) if skip else loader
            set_epoch(batches, sampler, dataset, epoch)
            for batch in batches:
                # each process its own noise for its share of the global batch
                g = step_generator(seed, step, process=accelerator.process_index)
                with accelerator.autocast():
                    terms = _loss_terms(batch, g, mapper, prompts, prompt_ids, unet, vae, scheduler, scaling, proj,
                                        attribute_features, probe_for_loss, weight_dtype, device, backbone)
                    loss = mapper_loss(terms["ldm"], terms["attr"], terms["emo"], batch["confidence"].float(),
                                       cfg.lambda_attr, cfg.lambda_emo, cfg.threshold).mean()
                # losses summed on the device; read (one sync) every runtime.log_every steps and at the end
                values = {"loss": loss.detach(), **{f"l_{k}": v.detach().mean() for k, v in terms.items()}}
                window = {k: window.get(k, 0) + v.float() for k, v in values.items()}
                window_steps += 1
                if (step + 1) % log_every == 0 or step + 1 == total:  # a NaN/inf in the window stops the run here
                    check_finite(window["loss"], step, "mapper.lr", ckpt_dir)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                fault_point("after_optimizer_step")  # a signal here waits for the counter: state stays whole
                step += 1
                if step % log_every == 0 or step == total:
                    logged = _global_means({k: v / window_steps for k, v in window.items()}, accelerator)
                    window, window_steps = {}, 0
                    history.append({"step": step, **logged})
                    reporter.advance("Training mapper", 1, **logged)
                else:
                    reporter.advance("Training mapper", 1)
                if step_finished(step, total, cfg.checkpoint_every, checkpoint, stop, accelerator):
                    break
    checkpoint()

    last = history[-1] if history else {}
    result = {"path": str(out_dir), "steps": step, "final": last, "history": history[-50:],
              "cached_latents": latents is not None, "attributes": len(attributes),
              "attribute_source": vocabulary["source"],
              "attribute_vocabulary": vocabulary["kind"], "semantic_token": cfg.semantic_token,
              "emotion_probe": probe_source, "probe_accuracy": table.get("probe_accuracy")}
    bundle = MapperBundle(
        config={
            "format": FORMAT, "version": 1, "emotions": list(EMOTIONS), "placeholder": cfg.placeholder,
            "base_model": config.model.pretrained, "clip_model": config.model.clip, "revision": config.model.revision,
            "base_model_fingerprint": model_fingerprint(config.model.pretrained, config.model.revision),
            "resolution": size, "in_dim": encoder.space.dim, "hidden_dim": cfg.hidden_dim,
            "out_dim": sum(widths.values()), "layers": cfg.layers, "family": backbone.family,
            "text_encoders": widths, "semantic_width": semantic_width, "steps": step, "seed": seed,
            "losses": {"lambda_attr": cfg.lambda_attr, "lambda_emo": cfg.lambda_emo, "threshold": cfg.threshold},
            "semantic_token": cfg.semantic_token, "attribute_vocabulary": vocabulary["kind"],
            "attribute_duplicates": cfg.attribute_duplicates, "attribute_text": cfg.attribute_text,
            "emotion_probe": {"source": probe_source, "used_by_loss": cfg.lambda_emo > 0,
                              "file": "emotion_probe.safetensors" if probe_source else None},
            "encoder": str(cfg.encoder), "prepared": str(prepared.path),
            "run": {"fingerprint": fingerprint, "result": result if step >= total else None},
        },
        mapper=accelerator.unwrap_model(mapper).cpu().float().eval(),
        space=encoder.space, projection=projection,
        attributes={"names": prepared.attributes,
                    "confidence": {a: confidence.get(a) for a in dict.fromkeys(prepared.attributes + attributes)},
                    "confidence_method": table.get("method"),
                    "vocabulary": {"kind": vocabulary["kind"], "source": vocabulary["source"],
                                   "names": vocabulary["names"], "classes": attributes,
                                   "duplicates": vocabulary["duplicates"], "text": vocabulary["text"],
                                   "by_emotion": vocabulary.get("by_emotion")}},
    )
    if accelerator.is_main_process:
        bundle.save(out_dir)
        write_model_card(out_dir, history[-1] if history else None)  # README.md: the bundle describes itself
    accelerator.wait_for_everyone()
    return result


def _vae_scaling(pretrained: str, revision: str | None) -> float:
    from diffusers import AutoencoderKL

    return AutoencoderKL.load_config(pretrained, subfolder="vae", revision=revision).get("scaling_factor", 0.18215)


def _loss_terms(batch, g, mapper, prompts, prompt_ids, unet, vae, scheduler, scaling, proj, attribute_features, probe,
                weight_dtype, device, backbone: Backbone | None = None) -> dict[str, torch.Tensor]:
    """Per-sample L_ldm, L_attr, L_emo for one batch (`backbone`: the model family, default SD 1.5); randomness
    only from `g`."""
    backbone = backbone or get("sd15")
    bsz = batch["vector"].shape[0]
    embeddings = mapper(batch["vector"].float())  # [B, D] (D: every text tower's width, side by side)
    hidden, pooled = prompts.encode(prompt_ids.expand(bsz, *prompt_ids.shape[1:]), embeddings.unsqueeze(1))
    if "latent_params" in batch:
        mean, logvar = batch["latent_params"].float().chunk(2, dim=1)
    else:
        with torch.no_grad():
            dist = vae.encode(batch["pixels"].to(device, vae.dtype)).latent_dist
        mean, logvar = dist.mean.float(), dist.logvar.float()
    eps = torch.randn(mean.shape, generator=g).to(device)
    latents = (mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps) * scaling
    noise = torch.randn(latents.shape, generator=g).to(device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (bsz,), generator=g).to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = backbone.unet_forward(unet, noisy, timesteps, hidden, batch, weight_dtype)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    l_ldm = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
    semantic = pooled.float() @ proj.T
    scores = F.normalize(semantic, dim=-1) @ attribute_features.T  # cosine similarities, as the official loss
    target = batch["attribute"]  # -1: the attribute is outside the vocabulary, no L_attr (as the official loop)
    l_attr = F.cross_entropy(scores, target.clamp(min=0), reduction="none") * (target >= 0).to(scores.dtype)
    l_emo = (F.cross_entropy(probe(semantic), batch["emotion"], reduction="none") if probe is not None
             else torch.zeros_like(l_ldm))
    return {"ldm": l_ldm, "attr": l_attr, "emo": l_emo}
