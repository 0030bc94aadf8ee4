"""`emogen generate` / `transfer` / `fuse`, as older code imports them.

The pieces now live where their names say: the model side (`EmoGenPipeline`, requests, fusion,
conditioning) in `emogen_cli.pipeline`, the file side (numbering, PNGs, index.jsonl, grids, the
split between processes) in `emogen_cli.writer`. `EmoGenerator` is `EmoGenPipeline`.
"""

from __future__ import annotations

from emogen_cli.pipeline import (
    BASELINE_PROMPT, FUSION_MODES, SCHEDULERS, EmoGenerator, EmoGenOutput, EmoGenPipeline, Request, fusion_request,
    placeholder_tokens,
)
from emogen_cli.writer import generate, plan

__all__ = ["BASELINE_PROMPT", "FUSION_MODES", "SCHEDULERS", "EmoGenOutput", "EmoGenPipeline", "EmoGenerator",
           "Request", "fusion_request", "generate", "placeholder_tokens", "plan"]
