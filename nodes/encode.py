"""Encode: images to latents with a VQ autoencoder (before quantization) or a KL autoencoder."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..core.handles import AutoencoderHandle, VQModelHandle
from ..core.noise import SEED_MAX, prepare_noise
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs
from ..graph.types import Image, Latent, check_image, image_to_nchw
from .sockets import Autoencoder, VQModel


def image_to_model(image: torch.Tensor, handle: VQModelHandle | AutoencoderHandle) -> torch.Tensor:
    """IMAGE [B, H, W, C] in [0, 1] -> NCHW in [-1, 1] on the model's device and dtype (diffusers' input)."""
    check_image(image, "image")
    want = int(handle.model.config.in_channels)
    if image.shape[-1] != want:
        hint = " (an RGBA image: drop the alpha channel first)" if image.shape[-1] == 4 and want == 3 else ""
        raise ValueError(f"image has {image.shape[-1]} channels but the model takes {want}{hint}")
    return image_to_nchw(image, "image").to(device=handle.device, dtype=handle.dtype) * 2 - 1


class EncodeVQ(Node):
    """Encode images with a VQ autoencoder to its continuous latent, before quantization."""

    CLASS_TYPE = "GenArtEncodeVQ"
    CATEGORY = "GenArt/encode"

    class Outputs(NodeOutputs):
        latent: Latent = Field(description="pre-quantization latent, samples [B, vq_embed_dim, H/f, W/f] float32 "
                               "on the model's device (f = the model's downscale factor); quantize it with "
                               "GenArt Quantize Latent")

    vqmodel: VQModel = Field(description="the VQ autoencoder (diffusers VQModel)")
    image: Image = Field(description="images, [B, H, W, C] float32 in [0, 1], C = the model's in_channels")

    def run(self, ctx: RunContext) -> Outputs:
        handle = self.vqmodel
        x = image_to_model(self.image, handle)
        h = handle.model.encode(x).latents
        return self.Outputs(latent={"samples": h.float()})


class EncodeKL(Node):
    """Encode images with a KL autoencoder (a Stable Diffusion style VAE) to the mean or a seeded sample."""

    CLASS_TYPE = "GenArtEncodeKL"
    CATEGORY = "GenArt/encode"

    class Outputs(NodeOutputs):
        latent: Latent = Field(description="raw (unscaled) latent, samples [B, latent_channels, H/f, W/f] float32 "
                               "on the model's device")

    autoencoder: Autoencoder = Field(description="the KL autoencoder (diffusers AutoencoderKL)")
    image: Image = Field(description="images, [B, H, W, C] float32 in [0, 1], C = the model's in_channels")
    mode: Literal["mean", "sample"] = Field(
        "mean", description="'mean': the posterior mean (deterministic); 'sample': mean + std * noise, "
        "the noise drawn on the CPU from `seed` (the same as diffusers' latent_dist.sample with a CPU "
        "generator seeded with `seed`)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the posterior sample; unused for 'mean'")

    def run(self, ctx: RunContext) -> Outputs:
        handle = self.autoencoder
        x = image_to_model(self.image, handle)
        dist = handle.model.encode(x).latent_dist
        if self.mode == "mean":
            z = dist.mean
        else:
            eps = prepare_noise(dist.mean.shape, self.seed, dtype=dist.mean.dtype)
            z = dist.mean + dist.std * eps.to(dist.mean.device)
        return self.Outputs(latent={"samples": z.float()})
