"""Device, precision and seeding helpers shared by training and inference."""

from __future__ import annotations

import torch

from emogen_cli.errors import EmogenError

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EmogenError(f"Device '{name}' was requested but CUDA is not available.", "Use --device cpu.")
    return device


def resolve_precision(setting: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA (fp16 where bf16 is unsupported), 'no' on CPU."""
    if setting != "auto":
        if setting != "no" and device.type != "cuda":
            return "no"  # half precision on CPU is slow and inaccurate: fall back quietly
        return setting
    if device.type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator that depends only on (seed, step): resumed runs draw exactly the same noise."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)


def make_accelerator(mixed_precision: str, device: str = "auto", gradient_accumulation_steps: int = 1):
    """An Accelerator for single-process, single-GPU or `accelerate launch` multi-GPU runs."""
    from accelerate import Accelerator

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    precision = resolve_precision(mixed_precision, torch.device("cpu" if cpu else "cuda"))
    return Accelerator(mixed_precision=precision, cpu=cpu, gradient_accumulation_steps=gradient_accumulation_steps)
