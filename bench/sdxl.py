"""emogen on SDXL: `generate` vs a plain diffusers StableDiffusionXLPipeline call with the same model,
scheduler, steps, batch and (precomputed) embeddings (prompt and pooled; timed in turn, so drift on a
busy machine affects both alike; goal: ratio <= 1.03), then train-mapper's steps per second; peak
memory of each (CUDA: peak allocated; CPU: the process's peak resident size after the phase).

    python bench/sdxl.py [--size tiny|mid] [--steps 20] [--batch 2] [--repeats 5] [--train-steps 8] [--quick] [--json]
    python bench/sdxl.py --pretrained stabilityai/stable-diffusion-xl-base-1.0 --mapper runs/mapper-xl  # GPU
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from _common import cuda_sync, emit, interleaved, median, parse_sampling, sampling_parser

from emogen_cli.core.reporting import Reporter


class StepClock(Reporter):
    """A Reporter that notes when each training step ends (train-mapper logs every step: runtime.log_every=1)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def advance(self, task: str, n: int = 1, **metrics) -> None:
        if task == "Training mapper" and metrics:
            self.stamps.append(time.perf_counter())

    def step_times(self, skip: int = 2) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])][skip:]

def _peak_mb(reset: bool = False) -> float:
    """Peak memory in MB: CUDA's peak allocated (then reset), else the process's peak resident size."""
    import torch

    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
        if reset:
            torch.cuda.reset_peak_memory_stats()
        return peak
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _chain(args, tmp: str) -> Path:
    from emogen_cli.testing.chain import build_tiny_chain

    root = Path(args.workdir or tmp) / f"sdxl-{args.size}"
    return build_tiny_chain(root, args.size, family="sdxl", overrides={
        "encoder.max_steps": 1, "mapper.batch_size": 2, "mapper.max_steps": 1})


def main(argv: list[str] | None = None) -> dict:
    p = sampling_parser(__doc__.splitlines()[0])
    p.add_argument("--train-steps", type=int, default=8, help="Timed train-mapper steps (after 2 untimed).")
    args = parse_sampling(p, argv)
    if "--batch" not in (argv if argv is not None else sys.argv):
        args.batch = 2
    if args.quick:
        args.train_steps = 3

    import diffusers
    import torch

    from emogen_cli.conditioning.request import Request
    from emogen_cli.core.config import load_config
    from emogen_cli.pipeline import SCHEDULERS, EmoGenPipeline

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"generate.steps": args.steps, "generate.batch_size": args.batch}
        if args.mapper:
            overrides.update({"generate.mapper": args.mapper,
                              **({"model.pretrained": args.pretrained} if args.pretrained else {})})
            config = None
        else:
            config = _chain(args, tmp)
        cfg = load_config(config, overrides)
        _peak_mb(reset=True)
        ours = EmoGenPipeline(cfg)
        if ours.backbone.family != "sdxl":
            raise SystemExit(f"{ours.base_model} is not an SDXL model")
        plain = diffusers.StableDiffusionXLPipeline.from_pretrained(ours.base_model, torch_dtype=ours.dtype)
        plain.scheduler = getattr(diffusers, SCHEDULERS[cfg.generate.scheduler]).from_config(plain.scheduler.config)
        plain.to(ours.device)
        plain.set_progress_bar_config(disable=True)
        request, seeds = Request(("awe",)), list(range(args.batch))
        embeds = ours.conditioning(request, seeds)
        negative = ours.negative.expand(args.batch)
        size = ours.config.model.resolution

        def baseline():
            generators = [torch.Generator(ours.device).manual_seed(s) for s in seeds]
            plain(prompt_embeds=embeds.prompt_embeds, pooled_prompt_embeds=embeds.pooled_prompt_embeds,
                  negative_prompt_embeds=negative.prompt_embeds,
                  negative_pooled_prompt_embeds=negative.pooled_prompt_embeds, num_inference_steps=args.steps,
                  guidance_scale=cfg.generate.guidance, height=size, width=size, generator=generators,
                  output_type="pil")

        times = interleaved({"ours": lambda: ours.sample(request, seeds), "diffusers": baseline}, args.repeats,
                            cuda_sync())
        generate_peak = _peak_mb(reset=True)
        device, dtype, base = str(ours.device), str(ours.dtype), ours.base_model

        train = None
        if config is not None:  # train-mapper on the random chain (a real SDXL run is the user's own)
            from emogen_cli.stage2.train_mapper import train_mapper

            # load_config, not dataclasses.replace: the config must remember that model.resolution was set (a
            # replaced Config forgets it, and SDXL's default 1024 px would apply)
            run = load_config(config, {**overrides, "mapper.output": str(Path(tmp) / "bench-mapper"),
                                       "mapper.max_steps": args.train_steps + 3, "mapper.checkpoint_every": 10**9,
                                       "runtime.log_every": 1})  # a stamp per step
            clock = StepClock()
            train_mapper(run, reporter=clock)
            train = median(clock.step_times())
    ours_s, base_s = median(times["ours"]), median(times["diffusers"])
    ratio = ours_s / base_s
    result = {"model": args.pretrained or (base if args.mapper else f"tiny SDXL ({args.size})"), "device": device,
              "dtype": dtype, "steps": args.steps, "batch": args.batch, "repeats": args.repeats, "size": size,
              "ours_s": ours_s, "diffusers_s": base_s, "ratio": ratio, "overhead_percent": 100 * (ratio - 1),
              "goal_ratio": 1.03, "generate_peak_mb": generate_peak,
              "train_step_s": train, "train_steps_per_s": None if train is None else 1 / train,
              "train_peak_mb": None if train is None else _peak_mb()}
    train_text = "" if train is None else (f"; train-mapper {1 / train:.2f} steps/s (peak {result['train_peak_mb']:.0f} "
                                           "MB)")
    emit("sdxl", result, args.json, f"{result['model']} on {device}: emogen {ours_s:.3f} s vs diffusers {base_s:.3f} s "
                                    f"per batch of {args.batch} ({args.steps} steps, {size} px): ratio {ratio:.3f} "
                                    f"(goal <= 1.03; peak {generate_peak:.0f} MB){train_text}")
    return result


if __name__ == "__main__":
    main()
