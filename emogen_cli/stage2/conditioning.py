"""Writing the mapped emotion token into prompts: the prompt encoders live with the backbones
(`emogen_cli.backbones.text`: one CLIP tower; each family combines its towers), re-exported here where
stage 2 and older code import them; `text_semantics` is the semantic space the attribute loss compares in."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from emogen_cli.backbones.text import EmotionPromptEncoder, PlaceholderEmbedding, check_prompt_window

__all__ = ["EmotionPromptEncoder", "PlaceholderEmbedding", "check_prompt_window", "text_semantics"]


@torch.no_grad()
def text_semantics(prompts: EmotionPromptEncoder, texts: list[str], projection: torch.Tensor,
                   values: torch.Tensor | None = None, batch_size: int = 64) -> torch.Tensor:
    """[N, P] L2-normalised semantic vectors of prompts (with placeholder `values` [N, K, D] if given): the
    pooled semantic state (see `EmotionPromptEncoder.pool_positions`) through CLIP's text projection, the
    space the attribute loss compares in."""
    feats = []
    for i in range(0, len(texts), batch_size):
        chunk = None if values is None else values[i:i + batch_size]
        _, pooled = prompts.encode(prompts.tokenize(texts[i:i + batch_size]), chunk)
        feats.append(pooled.float() @ projection.to(pooled.device).T)
    return F.normalize(torch.cat(feats), dim=-1)
