"""Text conditioning: a prompt and a negative prompt through a CLIP text encoder, as StableDiffusionPipeline."""
from __future__ import annotations

import logging
from typing import Annotated

import torch
from pydantic import Field

from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs, Widget
from .handles import Conditioning, ConditioningSocket, TextEncoder, TextEncoderHandle

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


class EncodeText(Node):
    """Encode a prompt and a negative prompt with a CLIP text encoder, for a text-conditioned denoiser.

    Tokenized to the model's maximum length with padding and encoded exactly as diffusers'
    StableDiffusionPipeline does, so samplers given this conditioning match that pipeline.
    """

    CLASS_TYPE = "GenArtEncodeText"
    CATEGORY = "GenArt/conditioning"

    class Outputs(NodeOutputs):
        conditioning: ConditioningSocket = Field(
            description="prompt embeddings [1, tokens, dim] and negative-prompt embeddings (same shape), float, "
                        "on the text encoder's device")

    text_encoder: TextEncoder = Field(description="CLIP tokenizer and text encoder")
    prompt: Annotated[str, Widget(multiline=True)] = Field(
        "", description="what to draw; at most the model's token limit (77 for CLIP), longer prompts are cut "
                        "there with a logged warning, as in diffusers")
    negative_prompt: Annotated[str, Widget(multiline=True)] = Field(
        "", description="what to steer away from under classifier-free guidance (cfg != 1); empty is diffusers' "
                        "default unconditional prompt")

    def run(self, ctx: RunContext) -> Outputs:
        length = max_tokens(self.text_encoder)
        cond = encode_text(self.text_encoder, self.prompt, length)
        uncond = encode_text(self.text_encoder, self.negative_prompt, length)
        return self.Outputs(conditioning=Conditioning(cond=cond, uncond=uncond))
