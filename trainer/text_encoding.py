"""Prompt -> CLIP hidden states, with sd-scripts' clip_skip and 75/150/225-token chunking.

Shared by training and sampling so a LoRA sees the same conditioning in both. API (stable)::

    ids = tokenize(tokenizer, texts, max_token_length=75)          # (B, n_chunks, 77) int64
    states = encode_tokens(text_encoder, ids, clip_skip=None)      # (B, n_chunks*75 + 2, hidden)
    states = encode_prompts(tokenizer, text_encoder, texts, clip_skip=None, max_token_length=75)
    check_text_settings(clip_skip, max_token_length, num_layers=12) # UserError on bad values

Semantics (sd-scripts ``SdTokenizeStrategy`` / ``SdTextEncodingStrategy``, SD1 branch):
- tokenize to ``max_token_length + 2`` ids (BOS, text, EOS, padding with EOS); for 150/225 cut
  the middle into 75-token pieces and give each piece the first (BOS) and last id of the whole
  sequence, so every chunk is a 77-id CLIP input;
- encode all chunks, take ``hidden_states[-clip_skip]`` and apply the final layer norm (clip_skip
  1 or None = the normal last hidden state), then keep BOS of the first chunk, the 75 middle
  states of every chunk and the last state of the last chunk: ``n*75 + 2`` states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tagging.errors import UserError

CHUNK = 75  # CLIP's 77 positions minus BOS and EOS
ALLOWED_MAX_TOKENS = (75, 150, 225)


def check_text_settings(clip_skip: int | None, max_token_length: int | None, num_layers: int = 12) -> None:
    if max_token_length is not None and max_token_length not in ALLOWED_MAX_TOKENS:
        raise UserError(
            f"max_token_length = {max_token_length} is not supported.",
            hint="Use 75, 150 or 225 (multiples of CLIP's 75-token window), as sd-scripts does.",
        )
    if clip_skip is not None and not 1 <= clip_skip <= num_layers:
        raise UserError(
            f"clip_skip = {clip_skip} is out of range for a {num_layers}-layer text encoder.",
            hint="Use 1 (no skip) or 2 (the usual value for anime models).",
        )


def tokenize(tokenizer: Any, texts: str | Sequence[str], max_token_length: int | None = 75) -> torch.Tensor:
    """Token ids shaped (batch, chunks, 77), one chunk per 75 tokens of ``max_token_length``."""
    if isinstance(texts, str):
        texts = [texts]
    max_token_length = max_token_length or CHUNK
    check_text_settings(None, max_token_length)
    window = tokenizer.model_max_length  # 77
    length = max_token_length + 2
    ids = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=length, return_tensors="pt"
    ).input_ids
    if length <= window:
        return ids.unsqueeze(1)
    chunks = []
    for start in range(1, length - window + 2, window - 2):  # 1, 76, 151 for 225
        chunks.append(torch.cat([ids[:, :1], ids[:, start : start + window - 2], ids[:, -1:]], dim=1))
    return torch.stack(chunks, dim=1)


def encode_tokens(text_encoder: Any, input_ids: torch.Tensor, clip_skip: int | None = None) -> torch.Tensor:
    """Hidden states (batch, chunks*75 + 2, hidden) for ids from :func:`tokenize`."""
    batch, n_chunks, window = input_ids.shape
    flat = input_ids.reshape(batch * n_chunks, window).to(text_encoder.device)
    if clip_skip is None or clip_skip <= 1:
        states = text_encoder(flat, return_dict=True).last_hidden_state
    else:
        out = text_encoder(flat, output_hidden_states=True, return_dict=True)
        # transformers >= 5.6 flattened CLIPTextModel (no .text_model); support both layouts.
        norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
        states = norm(out.hidden_states[-clip_skip])
    states = states.reshape(batch, n_chunks * window, states.shape[-1])
    if n_chunks == 1:
        return states
    parts = [states[:, :1]]
    for start in range(1, n_chunks * window, window):
        parts.append(states[:, start : start + window - 2])
    parts.append(states[:, -1:])
    return torch.cat(parts, dim=1)


def encode_prompts(
    tokenizer: Any,
    text_encoder: Any,
    texts: str | Sequence[str],
    clip_skip: int | None = None,
    max_token_length: int | None = 75,
) -> torch.Tensor:
    """Tokenize and encode in one call (training captions and sampling prompts alike)."""
    return encode_tokens(text_encoder, tokenize(tokenizer, texts, max_token_length), clip_skip)
