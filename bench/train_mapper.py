"""`emogen train-mapper` steps vs an official-style loop written as the official EmoGen `main.py` does it, at
equal batch sizes, interleaved step by step in one process with the same torch threads.

emogen's side is the real `train_mapper` (cached VAE latents and stage-1 vectors, L_ldm + L_attr + L_emo);
after each of its steps (the Reporter's progress callback) one step of each peer runs. The peers do per step
what the official loop does:

- decode the batch's images (a DataLoader, 0 workers: the official default), VAE-encode them and pass
  them through the stage-1 encoder;
- map the emotion vector and write it into the placeholder's row of the token-embedding table (the
  official `token_embeds[placeholder_token_ids] = pred_emd`; one placeholder row per sample of the batch,
  since the official loop's one row only holds batch 1);
- the text encoder's pooled state through CLIP's text projection: L_attr (cross-entropy over cosine
  similarities with the attribute texts' CLIP features, computed once), L_emo (a linear emotion classifier,
  frozen) and L_ldm through the UNet, mixed by the confidence gate as the official loss;
- backward, then the official gradient hand-over: the embedding table's gradient rows are added to the
  mapper output's gradient by a hook during a second, zero-weighted backward; AdamW on the mapper.

"as_written" leaves the UNet and the stage-1 encoder requiring grad as the official script does (it
computes their weight gradients, never used); "frozen" freezes them (the encoder runs under no_grad).
Both keep the embedding-table write. The ratio is emogen's step time over the peer's, per pair; the
median with min/max is reported for each variant and batch size (below 1: emogen is faster).

    python bench/train_mapper.py [--size tiny|mid] [--steps 20] [--batches 1 8] [--threads 1] [--quick] [--json]
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from _common import chain_args, cuda_sync, emit, pair_stats, parse, parser, spread, workspace

from emogen_cli.core.reporting import Reporter

VARIANTS = ("as_written", "frozen")
WARMUP = 2  # pairs dropped at the start (first calls allocate, build the loader's iterator, ...)


class Interleave(Reporter):
    """After each of train_mapper's steps, one step of each peer; times both sides."""

    def __init__(self, peers: dict, sync) -> None:
        self.peers, self.sync = peers, sync
        self.ours: list[float] = []
        self.peer_times: dict[str, list[float]] = {name: [] for name in peers}
        self.mark: float | None = None

    def start(self, task: str, total: int | None = None) -> None:
        if task == "Training mapper":
            self.sync()
            self.mark = time.perf_counter()

    def advance(self, task: str, n: int = 1, **metrics) -> None:
        if task != "Training mapper" or n < 1 or self.mark is None:
            return
        self.sync()
        self.ours.append(time.perf_counter() - self.mark)
        for name, step in self.peers.items():
            start = time.perf_counter()
            step()
            self.sync()
            self.peer_times[name].append(time.perf_counter() - start)
        self.mark = time.perf_counter()


def attribute_names(cfg) -> list[str]:
    """The attribute classes emogen's run uses for L_attr (the chain's mapper bundle records them), so both
    sides score the same number of attribute texts."""
    import json

    attributes = json.loads((Path(cfg.mapper.output) / "attributes.json").read_text())
    return list((attributes.get("vocabulary") or {}).get("classes") or attributes["names"])


class OfficialStyle:
    """One official-style training step per call (see the module docstring)."""

    def __init__(self, cfg, batch: int, frozen: bool, seed: int = 0) -> None:
        import torch
        from torch.utils.data import DataLoader
        from transformers import CLIPModel, CLIPTokenizer

        from emogen_cli.core.emotions import EMOTIONS
        from emogen_cli.core.pretrained import load, load_sd_components
        from emogen_cli.core.runtime import resolve_device
        from emogen_cli.data.emoset import load_prepared
        from emogen_cli.stage1.encoder import load_encoder
        from emogen_cli.stage2.mapper import MappingNetwork

        torch.manual_seed(seed)
        self.torch, self.frozen, self.batch = torch, frozen, batch
        self.device = device = resolve_device(cfg.runtime.device)
        self.cfg = cfg.mapper
        parts = load_sd_components(cfg.model.pretrained, cfg.model.revision)
        self.tokenizer, self.text_encoder, self.unet, self.vae, self.scheduler = (
            parts[k] for k in ("tokenizer", "text_encoder", "unet", "vae", "noise_scheduler"))
        encoder = load_encoder(cfg.mapper.encoder)
        self.encoder = encoder.model.to(device).eval()
        self.vae.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        # the official tokens: one placeholder per sample of the batch (the official loop: one, batch 1)
        names = [f"<official{i}>" for i in range(batch)]
        self.tokenizer.add_tokens(names)
        self.placeholder_ids = self.tokenizer.convert_tokens_to_ids(names)
        self.text_encoder.resize_token_embeddings(len(self.tokenizer))
        table = self.text_encoder.get_input_embeddings().weight
        table.requires_grad_(True)  # the resized embedding learns, the rest of the text encoder is frozen
        with torch.no_grad():
            table[self.placeholder_ids] = table[self.tokenizer.encode("a", add_special_tokens=False)[0]].clone()
        self.unet.requires_grad_(not frozen)  # as written: the UNet is never frozen (weight gradients computed)
        self.encoder.requires_grad_(not frozen)  # as written: the image encoder is never frozen either
        for module in (self.text_encoder, self.unet, self.vae):
            module.to(device)
        clip = load(CLIPModel, cfg.model.clip).to(device).eval().requires_grad_(False)
        clip_tokenizer = load(CLIPTokenizer, cfg.model.clip)
        self.attributes = attribute_names(cfg)
        with torch.no_grad():
            texts = clip_tokenizer([a.replace("_", " ") for a in self.attributes], padding=True, return_tensors="pt")
            pooled = clip.text_model(**texts.to(device)).pooler_output  # CLIP's get_text_features
            self.attribute_features = clip.text_projection(pooled).detach()
        self.projection = clip.text_projection  # CLIP's text projection applied to the SD text encoder's pooled state
        width = self.text_encoder.config.hidden_size
        self.classifier = torch.nn.Linear(self.projection.out_features, len(EMOTIONS)).to(device).requires_grad_(False)
        self.mapper = MappingNetwork(encoder.space.dim, cfg.mapper.hidden_dim, width, cfg.mapper.layers).to(device)
        self.optimizer = torch.optim.AdamW(self.mapper.parameters(), lr=cfg.mapper.lr,
                                           weight_decay=cfg.mapper.weight_decay)
        generator = torch.Generator().manual_seed(seed)
        self.coefficient = {a: torch.rand(len(EMOTIONS), generator=generator).tolist() for a in self.attributes}
        prepared = load_prepared(cfg.data.prepared)
        dataset = _Images(prepared, encoder.config, cfg.model.resolution, self.attributes, self.tokenizer, names)
        self.loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0,
                                 drop_last=len(dataset) > batch, generator=torch.Generator().manual_seed(seed))
        self.batches = iter(())
        self.grad_rows = torch.zeros(batch, width, device=device)

    def next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def __call__(self) -> None:
        torch, F, device = self.torch, self.torch.nn.functional, self.device
        batch = self.next_batch()
        bsz = batch["pixel_values"].shape[0]
        ids = self.placeholder_ids[:bsz]
        if self.frozen:
            with torch.no_grad():
                emo_v = self.encoder.encode(batch["image"].to(device))
        else:
            emo_v = self.encoder.encode(batch["image"].to(device))
        pred = self.mapper(emo_v)
        grad_rows = self.grad_rows
        pred.register_hook(lambda grad: grad + grad_rows[:bsz])
        table = self.text_encoder.get_input_embeddings().weight
        table.data[ids] = pred  # the official write into the token-embedding table
        latents = self.vae.encode(batch["pixel_values"].to(device)).latent_dist.sample().detach()
        latents = latents * self.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (bsz,), device=device).long()
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        output = self.text_encoder(batch["input_ids"].to(device))
        hidden, pooled = output[0], output[1]
        semantic = self.projection(pooled)
        pred_noise = self.unet(noisy, timesteps, hidden).sample
        target = (noise if self.scheduler.config.prediction_type == "epsilon"
                  else self.scheduler.get_velocity(latents, noise, timesteps))
        l_rec = F.mse_loss(pred_noise.float(), target.float(), reduction="none").flatten(1).mean(1)
        scores = F.cosine_similarity(self.attribute_features[None], semantic[:, None], dim=-1)  # [B, attributes]
        attribute = batch["attribute"].to(device)
        l_attr = F.cross_entropy(scores, attribute.clamp(min=0), reduction="none") * (attribute >= 0)
        rate = torch.tensor([self.coefficient.get(self.attributes[a], [0.0] * 8)[e] if a >= 0 else 0.0
                             for a, e in zip(batch["attribute"].tolist(), batch["emotion"].tolist())], device=device)
        rate = torch.where(rate < self.cfg.threshold, torch.zeros_like(rate), rate)
        l_emo = F.cross_entropy(self.classifier(semantic), batch["emotion"].to(device), reduction="none")
        loss = ((1 - rate) * l_rec + self.cfg.lambda_attr * rate * l_attr + self.cfg.lambda_emo * l_emo).mean()
        loss.backward()
        grad_rows[:bsz] = table.grad[ids].detach()  # the official hand-over of the table's gradient
        (0 * pred.mean()).backward()
        table.grad[ids] *= 0
        self.optimizer.step()
        self.optimizer.zero_grad()


class _Images:
    """The official dataset's work per item: decode, the stage-1 encoder's input, the diffusion pixels
    (resize, random flip, [-1, 1]), the labels and the tokenized placeholder prompt."""

    def __init__(self, prepared, encoder_config, resolution, attributes, tokenizer, names) -> None:
        self.rows, self.root, self.encoder_config, self.resolution = prepared.rows, prepared.root, encoder_config, resolution
        self.index = {a: i for i, a in reversed(list(enumerate(attributes)))}
        self.tokenizer, self.names = tokenizer, names
        self.position = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        import numpy as np
        import torch
        from PIL import Image

        from emogen_cli.core.emotions import EMOTIONS
        from emogen_cli.core.images import load_rgb
        from emogen_cli.stage1.encoder import encoder_pixels

        row = self.rows[i]
        image = load_rgb(self.root / row.image)
        pixels = image.resize((self.resolution, self.resolution))
        if torch.rand(()) < 0.5:
            pixels = pixels.transpose(Image.FLIP_LEFT_RIGHT)
        name = self.names[self.position % len(self.names)]  # each sample of a batch its own placeholder row
        self.position += 1
        ids = self.tokenizer(name, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length,
                             return_tensors="pt").input_ids[0]
        return {"image": torch.from_numpy(encoder_pixels(image, self.encoder_config)),
                "pixel_values": torch.from_numpy((np.asarray(pixels, np.float32) / 127.5 - 1).transpose(2, 0, 1).copy()),
                "attribute": self.index.get(row.attribute, -1), "emotion": EMOTIONS.index(row.emotion),
                "input_ids": ids}


def run(cfg, out: Path, steps: int, batch: int, sync) -> dict:
    """emogen's real train_mapper at `batch`, each step followed by a step of each official-style variant."""
    from emogen_cli.stage2.train_mapper import train_mapper

    peers = {name: OfficialStyle(cfg, batch, frozen=name == "frozen") for name in VARIANTS}
    clock = Interleave(peers, sync)
    run_cfg = dataclasses.replace(cfg, mapper=dataclasses.replace(cfg.mapper, output=str(out), max_steps=steps + WARMUP,
                                                                  batch_size=batch, checkpoint_every=10**9))
    train_mapper(run_cfg, reporter=clock)
    ours = clock.ours[WARMUP:]
    return {name: pair_stats(ours, clock.peer_times[name][WARMUP:]) for name in VARIANTS}


def main(argv: list[str] | None = None) -> dict:
    p = chain_args(parser(__doc__.splitlines()[0]))
    p.add_argument("--steps", type=int, default=20, help="Timed pairs per batch size (after 2 warm-up pairs).")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="Batch sizes (the same on both sides).")
    args = parse(p, argv)
    if args.quick:
        args.size, args.steps, args.batches = "tiny", 3, [1, 2]

    from emogen_cli.core.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(workspace(Path(args.workdir or tmp), args.size))
        sync = cuda_sync()
        results = {f"batch_{b}": run(cfg, Path(tmp) / f"ours-{b}", args.steps, b, sync) for b in args.batches}
    headline = results[f"batch_{args.batches[0]}"]["frozen"]
    result = {"model": args.size, "steps": args.steps, "batches": args.batches, "variants": list(VARIANTS),
              **results, "ratio": headline["ratio"], "ratio_min": headline["ratio_min"],
              "ratio_max": headline["ratio_max"], "pairs": headline["pairs"]}
    lines = [f"batch {b} vs official-style {v}: emogen {results[f'batch_{b}'][v]['ours_s'] * 1000:.1f} ms vs "
             f"{results[f'batch_{b}'][v]['peer_s'] * 1000:.1f} ms per step, ratio {spread(results[f'batch_{b}'][v])}"
             for b in args.batches for v in VARIANTS]
    emit("train-mapper", result, args.json, f"{args.size}: " + "; ".join(lines))
    return result


if __name__ == "__main__":
    main()
