"""emogen: emotional image content generation with Stable Diffusion (EmoGen, CVPR 2024).

    from emogen_cli import EmoGenPipeline
    pipe = EmoGenPipeline.from_pretrained("runs/mapper")
    images = pipe("awe", prompt="{} street", num_images_per_prompt=4, seed=0).images

The library names are imported lazily (PEP 562), so `emogen --help` loads no torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "EmoGenPipeline": "emogen_cli.pipeline",
    "EmoGenOutput": "emogen_cli.pipeline",
    "Request": "emogen_cli.conditioning.request",
    "fusion_request": "emogen_cli.conditioning.request",
    "export_embeddings": "emogen_cli.outputs.export",
    "EmogenError": "emogen_cli.core.errors",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emogen_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
