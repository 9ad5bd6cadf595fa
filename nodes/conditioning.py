"""Text conditioning: a prompt and a negative prompt through a CLIP text encoder, as StableDiffusionPipeline."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..core.handles import Conditioning
from ..core.text import encode_texts, max_tokens, prompt_tokens
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs, Widget
from .sockets import ConditioningSocket, TextEncoder


class EncodeText(Node):
    """Encode a prompt and a negative prompt with a text encoder, for a text-conditioned denoiser.

    CLIP: tokenized to the model's maximum length with padding and encoded exactly as diffusers'
    StableDiffusionPipeline does, so samplers given this conditioning match that pipeline. BERT-family
    encoders (the shipped text model's all-MiniLM-L6-v2): encoded with their attention mask, which the
    conditioning carries so the denoiser ignores the padding.
    """

    CLASS_TYPE = "GenArtEncodeText"
    CATEGORY = "GenArt/conditioning"

    class Outputs(NodeOutputs):
        conditioning: ConditioningSocket = Field(
            description="prompt embeddings [1, tokens, dim] and negative-prompt embeddings (same shape), float, "
                        "on the text encoder's device")

    text_encoder: TextEncoder = Field(description="tokenizer and text encoder (CLIP or BERT family)")
    prompt: Annotated[str, Widget(multiline=True)] = Field(
        "", description="what to draw; at most the model's token limit (77 for CLIP, 64 for BERT-family "
                        "encoders), longer prompts are cut "
                        "there with a logged warning, as in diffusers")
    negative_prompt: Annotated[str, Widget(multiline=True)] = Field(
        "", description="what to steer away from under classifier-free guidance (cfg != 1); empty is diffusers' "
                        "default unconditional prompt")

    def run(self, ctx: RunContext) -> Outputs:
        length = max_tokens(self.text_encoder)
        cond, cond_mask = encode_texts(self.text_encoder, [self.prompt], length)
        uncond, uncond_mask = encode_texts(self.text_encoder, [self.negative_prompt], length)
        tokens = tuple(prompt_tokens(self.text_encoder, self.prompt, length))
        return self.Outputs(conditioning=Conditioning(cond, uncond, cond_mask, uncond_mask, tokens))
