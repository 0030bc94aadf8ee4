"""Writing mapped emotion embeddings into prompts without touching CLIP's embedding table (one text tower;
a backbone with several towers, e.g. SDXL's, holds one `EmotionPromptEncoder` per tower).

The placeholder tokens (e.g. "<emotion>") are added to the tokenizer only. The text encoder's
token embedding is wrapped by `PlaceholderEmbedding`, which returns the ordinary embedding for
ordinary ids and, for placeholder ids, the per-sample vectors handed to `encode`. Gradients
flow from the UNet loss back into those vectors (and the mapper) with no hooks, and the shared
table stays bit-identical.

The pooled "semantic" state follows `semantic_token`: "placeholder" (the official code's: SD 1.5's
text config has eos_token_id=2, so transformers pools at input_ids.argmax(-1), the highest id, which
is the added placeholder token) or "eos" (the first end-of-text token, what the paper's text names).
Prompts without a placeholder (attribute names) pool at end-of-text either way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from emogen_cli.core.choices import SEMANTIC_TOKENS
from emogen_cli.core.errors import EmogenError


class PlaceholderEmbedding(nn.Module):
    def __init__(self, base: nn.Module, placeholder_ids: list[int]) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("placeholder_ids", torch.tensor(placeholder_ids), persistent=False)
        self.values: torch.Tensor | None = None  # [B, K, D]: sample b's vector for placeholder k

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        match = input_ids.unsqueeze(-1) == self.placeholder_ids  # [B, L, K]
        is_placeholder = match.any(-1)
        out = self.base(input_ids.masked_fill(is_placeholder, 0))
        if not is_placeholder.any():
            return out
        if self.values is None:
            raise RuntimeError("A prompt holds a placeholder token but no emotion embedding was given.")
        slot = match.int().argmax(-1)  # [B, L]: which placeholder each position is
        values = self.values.to(out.dtype)
        picked = torch.gather(values, 1, slot.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
        return torch.where(is_placeholder.unsqueeze(-1), picked, out)


class EmotionPromptEncoder:
    """Tokenises prompts with placeholder tokens and encodes them with injected embeddings."""

    def __init__(self, tokenizer, text_encoder, placeholders: list[str], semantic_token: str = "placeholder") -> None:
        if semantic_token not in SEMANTIC_TOKENS:
            raise EmogenError(f"Unknown semantic token '{semantic_token}'.", f"Use one of {', '.join(SEMANTIC_TOKENS)}.")
        self.tokenizer, self.text_encoder, self.placeholders = tokenizer, text_encoder, placeholders
        self.semantic_token = semantic_token
        new = [p for p in placeholders if p not in tokenizer.get_vocab()]
        tokenizer.add_tokens(new)
        ids = tokenizer.convert_tokens_to_ids(placeholders)
        for token, i in zip(placeholders, ids):
            if tokenizer(token, add_special_tokens=False).input_ids != [i]:
                raise EmogenError(f"The placeholder '{token}' does not tokenize to one token.",
                                  "Choose a placeholder such as '<emotion>'.")
        embedding = text_encoder.get_input_embeddings()
        if not isinstance(embedding, PlaceholderEmbedding):
            embedding = PlaceholderEmbedding(embedding, ids)
            text_encoder.set_input_embeddings(embedding)
        else:
            embedding.placeholder_ids = torch.tensor(ids, device=embedding.placeholder_ids.device)
        self.embedding = embedding
        self.placeholder_ids = ids

    @property
    def width(self) -> int:
        return self.text_encoder.config.hidden_size

    def tokenize(self, prompts: list[str], warn: Callable[[str], None] | None = None) -> torch.Tensor:
        """Token ids [B, 77]. A placeholder beyond CLIP's window is an error (the emotion would be
        silently lost); words cut from the end of a long prompt are reported through `warn`
        (default: `warnings.warn`)."""
        for text in dict.fromkeys(prompts):  # each distinct prompt once
            cut = check_prompt_window(self.tokenizer, text, self.placeholder_ids)
            if cut:
                (warn or warnings.warn)(cut)
        ids = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length,
                             return_tensors="pt").input_ids
        return ids

    def encode(self, input_ids: torch.Tensor, values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden states [B, L, D] for the UNet, pooled semantic state [B, D]: see `pool_positions`)."""
        device = self.embedding.weight.device
        input_ids = input_ids.to(device)
        self.embedding.values = None if values is None else values.to(device)
        try:
            hidden = self.text_encoder(input_ids)[0]
        finally:
            self.embedding.values = None
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), self.pool_positions(input_ids)]
        return hidden, pooled

    def outputs(self, input_ids: torch.Tensor, values: torch.Tensor | None = None) -> Any:
        """The text encoder's whole output (`last_hidden_state`, every layer's `hidden_states`, and `text_embeds`
        for a tower with a projection) with the placeholders holding `values`: what a family that reads another
        layer than the last (SDXL: the penultimate) combines."""
        device = self.embedding.weight.device
        input_ids = input_ids.to(device)
        self.embedding.values = None if values is None else values.to(device)
        try:
            return self.text_encoder(input_ids, output_hidden_states=True)
        finally:
            self.embedding.values = None

    def eos_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B] positions of the first end-of-text token (where CLIP pools a prompt)."""
        return (input_ids == self.tokenizer.eos_token_id).int().argmax(-1)

    def pool_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B] positions of the semantic state: the first placeholder token ("placeholder", the official
        argmax-id pooling for one placeholder) or the first end-of-text token ("eos", and rows without one)."""
        eos = (input_ids == self.tokenizer.eos_token_id).int().argmax(-1)
        if self.semantic_token == "eos":
            return eos
        ids = torch.tensor(self.placeholder_ids, device=input_ids.device)
        is_placeholder = (input_ids.unsqueeze(-1) == ids).any(-1)
        return torch.where(is_placeholder.any(-1), is_placeholder.int().argmax(-1), eos)


def check_prompt_window(tokenizer, text: str, placeholder_ids: list[int]) -> str | None:
    """None if `text` fits CLIP's window; a warning naming the cut words if only ordinary words fall
    outside; EmogenError if a placeholder (an emotion token) does."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    room = tokenizer.model_max_length - 2  # start and end of text take two of the 77 positions
    if len(ids) <= room:
        return None
    placeholders = set(placeholder_ids)
    lost = [i for i, t in enumerate(ids) if t in placeholders and i >= room]
    if lost:
        token = tokenizer.convert_ids_to_tokens(ids[lost[0]])
        raise EmogenError(f"The prompt is {len(ids)} tokens long and its emotion token {token} is token {lost[0] + 1}; "
                          f"CLIP reads only the first {room}, so the emotion would be lost.",
                          "Shorten the prompt or put '{}' nearer the start.")
    cut = tokenizer.decode(ids[room:]).strip()
    return (f"The prompt is {len(ids)} tokens long; CLIP reads only the first {room}, so the end was cut: "
            f"'{cut}'.")
