"""Text conditioning: prompts through a CLIP text encoder, as StableDiffusionPipeline.encode_prompt."""
from __future__ import annotations

import logging

import torch

from .handles import TextEncoderHandle

log = logging.getLogger(__name__)


def max_tokens(handle: TextEncoderHandle) -> int:
    """Sequence length prompts are padded to: the tokenizer's model_max_length, or the encoder's
    max_position_embeddings when the tokenizer sets no limit (a bare tokenizer says 10**30)."""
    positions = int(handle.text_encoder.config.max_position_embeddings)
    return min(int(handle.tokenizer.model_max_length), positions)


def encode_text(handle: TextEncoderHandle, text: str, max_length: int) -> torch.Tensor:
    """[1, max_length, dim] last hidden states, tokenized and encoded as StableDiffusionPipeline.encode_prompt."""
    tokenizer, encoder = handle.tokenizer, handle.text_encoder
    tokens = tokenizer(text, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    ids = tokens.input_ids
    untruncated = tokenizer(text, padding="longest", return_tensors="pt").input_ids
    if untruncated.shape[-1] > ids.shape[-1]:
        removed = tokenizer.batch_decode(untruncated[:, max_length - 1:-1])
        log.warning("prompt longer than %d tokens; this part was cut off: %s", max_length, removed)
    device = handle.device
    mask = tokens.attention_mask.to(device) if getattr(encoder.config, "use_attention_mask", False) else None
    return encoder(ids.to(device), attention_mask=mask)[0]
