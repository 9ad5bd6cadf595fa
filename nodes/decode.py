"""Decode: latents to images with a VQ or a KL autoencoder."""
from __future__ import annotations

import torch
from pydantic import Field

from ..core.latents import latent_samples
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs
from ..graph.types import Image, Latent, nchw_to_image
from .sockets import Autoencoder, VQModel


def model_to_image(x: torch.Tensor) -> torch.Tensor:
    """Decoder output NCHW in [-1, 1] -> IMAGE [B, H, W, C] float32, clipped to [0, 1] where IMAGE is defined."""
    return nchw_to_image((x.float() / 2 + 0.5).clamp(0, 1))


def check_channels(samples: torch.Tensor, want: int, what: str) -> None:
    if samples.shape[1] != want:
        raise ValueError(f"latent has {samples.shape[1]} channels but this {what} decodes {want}; "
                         "decode with the model that made the latent")


class DecodeVQ(Node):
    """Decode VQ latents to images (the latent as given, or quantized first)."""

    CLASS_TYPE = "GenArtDecodeVQ"
    CATEGORY = "GenArt/decode"

    class Outputs(NodeOutputs):
        image: Image = Field(description="decoded images, [B, H, W, C] float32, clipped to [0, 1] (the decoder "
                             "overshoots a little; IMAGE is defined on [0, 1]), on the model's device")

    vqmodel: VQModel = Field(description="the VQ autoencoder (diffusers VQModel)")
    latent: Latent = Field(description="latent, samples [B, vq_embed_dim, h, w]: quantized (GenArt Quantize Latent, "
                           "Dequantize Codes) or continuous (a sampler's output, GenArt Encode VQ)")
    quantize_first: bool = Field(False, description="snap the latent to the codebook before decoding (diffusers' "
                                 "decode(force_not_quantize=False)); off decodes the latent exactly as given")

    def run(self, ctx: RunContext) -> Outputs:
        handle = self.vqmodel
        if getattr(handle.model.config, "lookup_from_codebook", False):
            raise ValueError("this VQModel is configured with lookup_from_codebook=True (its decode takes code "
                             "indices, not latents), which GenArt Decode VQ does not support")
        z = latent_samples(self.latent)
        check_channels(z, int(handle.model.quantize.vq_embed_dim), "VQ model")
        z = z.to(device=handle.device, dtype=handle.dtype)
        x = handle.model.decode(z, force_not_quantize=not self.quantize_first).sample
        return self.Outputs(image=model_to_image(x))


class DecodeKL(Node):
    """Decode raw (unscaled) latents to images with a KL autoencoder (a Stable Diffusion style VAE)."""

    CLASS_TYPE = "GenArtDecodeKL"
    CATEGORY = "GenArt/decode"

    class Outputs(NodeOutputs):
        image: Image = Field(description="decoded images, [B, H, W, C] float32, clipped to [0, 1] (the decoder "
                             "overshoots a little; IMAGE is defined on [0, 1]), on the model's device")

    autoencoder: Autoencoder = Field(description="the KL autoencoder (diffusers AutoencoderKL)")
    latent: Latent = Field(description="raw (unscaled) latent, samples [B, latent_channels, h, w]")

    def run(self, ctx: RunContext) -> Outputs:
        handle = self.autoencoder
        z = latent_samples(self.latent)
        check_channels(z, int(handle.model.config.latent_channels), "autoencoder")
        x = handle.model.decode(z.to(device=handle.device, dtype=handle.dtype)).sample
        return self.Outputs(image=model_to_image(x))
