"""`emogen train-mapper` step time vs an official-style loop on the same model: batch 1, the image
decoded, VAE-encoded and passed through the stage-1 encoder at every step (as the official script
does). Ours uses cached VAE latents and stage-1 vectors and larger batches. The speed-up is
per training sample.

    python bench/train_mapper.py [--size tiny|mid] [--steps 20] [--batch 8] [--quick] [--json]
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from _common import chain_args, cuda_sync, emit, median, parser, workspace

from emogen_cli.core.reporting import Reporter


class StepClock(Reporter):
    """A Reporter that notes when each training step ends."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def advance(self, task: str, n: int = 1, **metrics) -> None:
        if task == "Training mapper" and metrics:
            self.stamps.append(time.perf_counter())

    def step_times(self, skip: int = 2) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])][skip:]


def ours(cfg, out: Path, steps: int, batch: int) -> float:
    """Median seconds per step of the real train_mapper."""
    from emogen_cli.stage2.train_mapper import train_mapper

    run = dataclasses.replace(cfg, mapper=dataclasses.replace(cfg.mapper, output=str(out), max_steps=steps + 3,
                                                              batch_size=batch, checkpoint_every=10**9),
                              runtime=dataclasses.replace(cfg.runtime, log_every=1))  # a stamp per step
    clock = StepClock()
    train_mapper(run, reporter=clock)
    return median(clock.step_times())


def official_style(cfg, steps: int) -> float:
    """Median seconds per step of a batch-1 loop that decodes, VAE-encodes and stage-1-encodes every image."""
    import torch
    import torch.nn.functional as F

    from emogen_cli.core.images import DIFFUSION_MEAN, DIFFUSION_STD, load_rgb, resize_center_crop, to_array
    from emogen_cli.core.pretrained import freeze, load_sd_components
    from emogen_cli.core.runtime import resolve_device
    from emogen_cli.data.emoset import load_prepared
    from emogen_cli.stage1.encoder import encoder_pixels, load_encoder
    from emogen_cli.stage2.conditioning import EmotionPromptEncoder
    from emogen_cli.stage2.mapper import MappingNetwork

    device = resolve_device(cfg.runtime.device)
    parts = load_sd_components(cfg.model.pretrained)
    tokenizer, text_encoder, unet, vae, scheduler = (parts[k] for k in ("tokenizer", "text_encoder", "unet", "vae",
                                                                        "noise_scheduler"))
    encoder = load_encoder(cfg.mapper.encoder)
    freeze(text_encoder, unet, vae, encoder.model)
    for module in (text_encoder, unet, vae, encoder.model):
        module.to(device)
    prompts = EmotionPromptEncoder(tokenizer, text_encoder, [cfg.mapper.placeholder])
    ids = prompts.tokenize([cfg.mapper.placeholder])
    mapper = MappingNetwork(encoder.space.dim, cfg.mapper.hidden_dim, text_encoder.config.hidden_size).to(device)
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=cfg.mapper.lr, weight_decay=cfg.mapper.weight_decay)
    prepared = load_prepared(cfg.data.prepared)
    sync = cuda_sync()
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        image = load_rgb(prepared.root / prepared.rows[step % len(prepared.rows)].image)
        pixels = torch.from_numpy(to_array(resize_center_crop(image, cfg.model.resolution), DIFFUSION_MEAN,
                                           DIFFUSION_STD))[None].to(device)
        with torch.no_grad():
            # the stage-1 preprocessing recorded in the encoder bundle, as train-mapper applies it
            vector = encoder.model.encode(torch.from_numpy(encoder_pixels(image, encoder.config))[None].to(device))
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        hidden, _ = prompts.encode(ids, mapper(vector)[:, None])
        noise = torch.randn_like(latents)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (1,), device=device)
        pred = unet(scheduler.add_noise(latents, noise, t), t, hidden).sample
        F.mse_loss(pred, noise).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - start)
    return median(times[2:])


def main(argv: list[str] | None = None) -> dict:
    p = chain_args(parser(__doc__.splitlines()[0]))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.steps, args.batch = "tiny", 6, 4

    from emogen_cli.core.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        cfg = load_config(workspace(root, args.size))
        official = official_style(cfg, args.steps)
        single = ours(cfg, Path(tmp) / "ours-1", args.steps, 1)
        batched = ours(cfg, Path(tmp) / f"ours-{args.batch}", args.steps, args.batch)
    result = {"model": args.size, "steps": args.steps, "batch": args.batch, "official_style_step_s": official,
              "ours_batch1_step_s": single, "ours_batched_step_s": batched,
              "speedup_batch1": official / single, "speedup_per_sample": official / (batched / args.batch)}
    result["ratio"] = result["speedup_per_sample"]
    emit("train-mapper", result, args.json,
         f"{args.size}: official-style {official * 1000:.1f} ms/sample; ours {single * 1000:.1f} ms at batch 1 "
         f"({result['speedup_batch1']:.2f}x), {batched / args.batch * 1000:.1f} ms/sample at batch {args.batch} "
         f"({result['speedup_per_sample']:.2f}x)")
    return result


if __name__ == "__main__":
    main()
