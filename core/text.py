"""Text conditioning: prompts through a frozen text encoder.

CLIP encoders are run as StableDiffusionPipeline.encode_prompt (padded to 77 tokens, no attention mask:
SD's UNets were trained to read the padding). Other encoders (BERT family, e.g. all-MiniLM-L6-v2) are run
with their attention mask, and the mask travels with the embeddings so the denoiser's cross-attention
ignores the padding too: then the padded length changes nothing.
"""
from __future__ import annotations

import logging

import torch

from .handles import TextEncoderHandle

log = logging.getLogger(__name__)

# Prompt length for masked encoders: the emoji names are under 20 word pieces; 64 leaves room for templates
# while keeping a batch of embeddings small. Padding beyond a prompt is masked out, so this is only a limit.
MASKED_MAX_TOKENS = 64


def uses_attention_mask(handle: TextEncoderHandle) -> bool:
    """Whether the encoder (and a denoiser trained on it) reads an attention mask: every family but CLIP,
    unless the CLIP config asks for one."""
    if _is_clip(handle):
        return bool(getattr(handle.text_encoder.config, "use_attention_mask", False))
    return True


def max_tokens(handle: TextEncoderHandle) -> int:
    """Sequence length prompts are padded to: the tokenizer's model_max_length, or the encoder's
    max_position_embeddings when the tokenizer sets no limit (a bare tokenizer says 10**30); at most
    MASKED_MAX_TOKENS for masked encoders."""
    positions = int(handle.text_encoder.config.max_position_embeddings)
    limit = min(int(handle.tokenizer.model_max_length), positions)
    if not _is_clip(handle):
        limit = min(limit, MASKED_MAX_TOKENS)
    return limit


def _is_clip(handle: TextEncoderHandle) -> bool:
    return getattr(handle.text_encoder.config, "model_type", "") in ("clip_text_model", "clip")


def encode_text(handle: TextEncoderHandle, text: str, max_length: int) -> torch.Tensor:
    """[1, max_length, dim] last hidden states, tokenized and encoded as StableDiffusionPipeline.encode_prompt."""
    return encode_texts(handle, [text], max_length)[0]


@torch.no_grad()
def encode_texts(handle: TextEncoderHandle, texts: list[str], max_length: int
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """([B, max_length, dim] last hidden states, [B, max_length] attention mask or None for CLIP)."""
    tokenizer, encoder = handle.tokenizer, handle.text_encoder
    tokens = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    ids = tokens.input_ids
    for text in texts:
        untruncated = tokenizer(text, padding="longest", return_tensors="pt").input_ids
        if untruncated.shape[-1] > ids.shape[-1]:
            removed = tokenizer.batch_decode(untruncated[:, max_length - 1:-1])
            log.warning("prompt longer than %d tokens; this part was cut off: %s", max_length, removed)
    device = handle.device
    masked = uses_attention_mask(handle)
    mask = tokens.attention_mask.to(device) if masked else None
    states = encoder(ids.to(device), attention_mask=mask)[0]
    return states, (mask if masked and not _is_clip(handle) else None)


def prompt_tokens(handle: TextEncoderHandle, text: str, max_length: int) -> list[str]:
    """The tokens a prompt becomes (special tokens included, padding not): the labels of per-token maps."""
    ids = handle.tokenizer(text, truncation=True, max_length=max_length).input_ids
    return [str(t) for t in handle.tokenizer.convert_ids_to_tokens(ids)]
