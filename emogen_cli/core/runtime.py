"""Device, precision and seeding helpers shared by training and inference."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from emogen_cli.core.choices import check_device_name
from emogen_cli.core.errors import EmogenError

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: "str | torch.device" = "auto", option: str = "--device") -> torch.device:
    """The torch device for a runtime.device name; one clear error for a name torch does not know or a
    device this machine does not have (e.g. `cuda` without CUDA, `cuda:3` with two GPUs). The hints name
    `option` (the CLI's --device, or an argument of the Python API such as "device")."""
    use_cpu = f"Use {option} cpu (or auto)." if option.startswith("-") else f'Use {option}="cpu" (or "auto").'
    if isinstance(name, torch.device):
        return name  # already resolved (e.g. a process's own device under accelerate launch)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not check_device_name(name):
        raise EmogenError(f"Unknown device '{name}'.", "Use auto, cpu, mps, cuda or cuda:N.")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EmogenError(f"Device '{name}' was requested but CUDA is not available on this machine.",
                              use_cpu)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise EmogenError(f"Device '{name}' was requested but this machine has {torch.cuda.device_count()} "
                              "CUDA device(s).", f"Use cuda:0 .. cuda:{torch.cuda.device_count() - 1}.")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise EmogenError(f"Device '{name}' was requested but MPS is not available on this machine.",
                          use_cpu)
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


def step_seed(seed: int, step: int, process: int = 0) -> int:
    """The seed of training step `step`: it depends only on (seed, step), so resumed runs draw exactly the same
    random numbers; each extra process of a multi-process run gets its own, for its share of the global batch."""
    return hash((seed, step, process)) & 0x7FFF_FFFF_FFFF_FFFF if process else seed * 1_000_003 + step


def step_generator(seed: int, step: int, device: torch.device | str = "cpu", process: int = 0) -> torch.Generator:
    """A generator seeded with `step_seed(seed, step, process)`."""
    return torch.Generator(device=device).manual_seed(step_seed(seed, step, process))


def make_accelerator(mixed_precision: str, device: str = "auto", gradient_accumulation_steps: int = 1):
    """An Accelerator for single-process, single-GPU or `accelerate launch` multi-GPU runs."""
    from accelerate import Accelerator

    target = resolve_device(device)  # the same clear error as inference for `gpu`, or `cuda` without CUDA
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if target.type == "cuda" and target.index is not None and not launched:
        torch.cuda.set_device(target.index)  # the Accelerator trains on the current CUDA device: make it cuda:N
    cpu = target.type == "cpu"
    precision = resolve_precision(mixed_precision, target)
    return Accelerator(mixed_precision=precision, cpu=cpu, gradient_accumulation_steps=gradient_accumulation_steps)


@dataclass
class ProcessShare:
    """This process's place among those `accelerate launch` started (index 0 of 1 when run plainly)."""

    index: int = 0
    count: int = 1
    device: torch.device | None = None  # the process's own device under accelerate launch
    state: Any = None  # accelerate's PartialState when count > 1

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def wait(self) -> None:
        if self.count > 1:
            self.state.wait_for_everyone()

    def gather(self, items: list) -> list:
        """Every process's items, concatenated in process order."""
        if self.count == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)


def process_share(device: str = "auto") -> ProcessShare:
    """Join the process group when started by `accelerate launch` with several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ProcessShare()
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    return ProcessShare(state.process_index, state.num_processes, state.device, state)


def apply_runtime(runtime: Any, *, pipe: Any = None, unet: Any = None, device: "torch.device | str | None" = None) -> Any:
    """The GPU fast paths of `runtime.*` (config keys), applied in this one place to a diffusers pipeline
    (or an EmoGenPipeline, which wraps one) or to a bare UNet (the trainer's); returns the UNet to call.

    - tf32: TF32 matmuls/convolutions, on CUDA GPUs of compute capability 8 (Ampere) or newer only.
    - channels_last: the UNet (and the pipeline's VAE) in channels_last memory format.
    - attention_slicing, vae_tiling, cpu_offload: diffusers' memory switches (cpu_offload on CUDA only:
      model offload needs an accelerator; elsewhere it is a no-op).
    - compile: torch.compile of the UNet (the first call compiles: worth it for long runs).
    Everything is off by default; see README "Performance" for when each helps."""
    device = torch.device(device) if device is not None else None
    cuda = device is not None and device.type == "cuda"
    sd = getattr(pipe, "pipe", pipe)  # an EmoGenPipeline's diffusers pipeline, or the pipeline itself
    if sd is not None:
        unet = sd.unet
    if runtime.tf32 and cuda and torch.cuda.get_device_capability(device)[0] >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if runtime.channels_last:
        unet.to(memory_format=torch.channels_last)
        if sd is not None:
            sd.vae.to(memory_format=torch.channels_last)
    if sd is not None:
        if runtime.attention_slicing:
            sd.enable_attention_slicing()
        if runtime.vae_tiling:
            sd.vae.enable_tiling()
        if runtime.cpu_offload and cuda:
            pipe.enable_model_cpu_offload(device=device)
    if runtime.compile:
        unet = torch.compile(unet)
        if sd is not None:
            sd.unet = unet
    return unet
