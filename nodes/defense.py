"""Defenses: JPEG, Gaussian blur, median filter, bit-depth reduction, randomized smoothing, DiffPure.

Each node cleans an image batch and also hands out the same defense as a GENART_DEFENSE value, so an
attack node can be run *through* it (BPDA, EOT): the honest way to evaluate a defense.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import torch
from pydantic import Field

from ..core.autoencoders import grad_ready, is_vq
from ..core.defenses import (
    DefenseTransform,
    _draw_seed,
    diffpure,
    gaussian_blur,
    jpeg_compress,
    median_filter,
    randomized_smoothing,
    reduce_bit_depth,
)
from ..core.handles import AutoencoderHandle, VQModelHandle
from ..core.noise import SEED_MAX
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs
from ..graph.safety import MAX_STEPS
from ..graph.types import Image, image_to_nchw, nchw_to_image
from .sockets import Autoencoder, ConditioningSocket, Defense, Denoiser, Scheduler, VQModel

DEFENSE_OUTPUT = ("this defense as a function (GENART_DEFENSE) for an attack's 'defense' input, so the attack "
                  "is adaptive (BPDA / EOT through it)")
IMAGE_IN = "images to defend, [B, H, W, C] float32 in [0, 1]"


def to_nchw(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    return image_to_nchw(image, name).float()


# The defenses as functions of NCHW images in [0, 1].


def pick_autoencoder(vqmodel: VQModelHandle | None, autoencoder: AutoencoderHandle | None) -> Any:
    """The one autoencoder model connected to a node's 'vqmodel' / 'autoencoder' inputs."""
    if vqmodel is not None and autoencoder is not None:
        raise ValueError("inputs 'vqmodel' and 'autoencoder' are both connected; connect only the one that "
                         "matches your pipeline (a VQ or a KL autoencoder)")
    if vqmodel is not None:
        return vqmodel.model
    if autoencoder is not None:
        return autoencoder.model
    raise ValueError("connect 'vqmodel' (a VQ autoencoder) or 'autoencoder' (a KL autoencoder): this node works "
                     "in its latent space")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


# Nodes.

class DefenseOutputs(NodeOutputs):
    image: Image = Field(description="defended images, [B, H, W, C] float32 in [0, 1], on the input's device")
    defense: Defense = Field(description=DEFENSE_OUTPUT)


class DefendJPEG(Node):
    """JPEG-compress images (PIL) to wash out small perturbations."""

    CLASS_TYPE = "GenArtDefendJPEG"
    CATEGORY = "GenArt/defense"

    Outputs = DefenseOutputs

    image: Image = Field(description=IMAGE_IN + "; 1 or 3 channels")
    quality: int = Field(75, ge=1, le=100, description="JPEG quality (PIL's scale; lower removes more)")

    def run(self, ctx: RunContext) -> DefenseOutputs:
        quality = self.quality
        transform = DefenseTransform("jpeg", lambda x, g: jpeg_compress(x, quality), differentiable=False,
                                     randomized=False, params={"quality": quality})
        return DefenseOutputs(image=nchw_to_image(transform(to_nchw(self.image), _generator(0))), defense=transform)


class DefendGaussianBlur(Node):
    """Blur images with a Gaussian kernel (differentiable)."""

    CLASS_TYPE = "GenArtDefendGaussianBlur"
    CATEGORY = "GenArt/defense"

    Outputs = DefenseOutputs

    image: Image = Field(description=IMAGE_IN)
    radius: int = Field(2, ge=1, le=31, description="kernel radius in pixels: 2 * radius + 1 taps; must be "
                        "smaller than the image side")
    sigma: float = Field(1.0, ge=0.1, le=10.0, description="standard deviation of the Gaussian, in pixels")

    def run(self, ctx: RunContext) -> DefenseOutputs:
        sigma, radius = self.sigma, self.radius
        transform = DefenseTransform("gaussian_blur", lambda x, g: gaussian_blur(x, sigma, radius),
                                     differentiable=True, randomized=False, params={"sigma": sigma, "radius": radius})
        return DefenseOutputs(image=nchw_to_image(transform(to_nchw(self.image), _generator(0))), defense=transform)


class DefendMedianFilter(Node):
    """Median-filter each channel of the images."""

    CLASS_TYPE = "GenArtDefendMedianFilter"
    CATEGORY = "GenArt/defense"

    Outputs = DefenseOutputs

    image: Image = Field(description=IMAGE_IN)
    radius: int = Field(1, ge=1, le=7, description="window radius: (2 * radius + 1)^2 pixels; must be smaller "
                        "than the image side")

    def run(self, ctx: RunContext) -> DefenseOutputs:
        radius = self.radius
        transform = DefenseTransform("median", lambda x, g: median_filter(x, radius), differentiable=False,
                                     randomized=False, params={"radius": radius})
        return DefenseOutputs(image=nchw_to_image(transform(to_nchw(self.image), _generator(0))), defense=transform)


class DefendBitDepth(Node):
    """Reduce the bit depth of the images (feature squeezing)."""

    CLASS_TYPE = "GenArtDefendBitDepth"
    CATEGORY = "GenArt/defense"

    Outputs = DefenseOutputs

    image: Image = Field(description=IMAGE_IN)
    bits: int = Field(4, ge=1, le=8, description="bits per channel kept: values snap to round(x * (2^bits - 1)) "
                      "/ (2^bits - 1)")

    def run(self, ctx: RunContext) -> DefenseOutputs:
        bits = self.bits
        transform = DefenseTransform("bit_depth", lambda x, g: reduce_bit_depth(x, bits), differentiable=False,
                                     randomized=False, params={"bits": bits})
        return DefenseOutputs(image=nchw_to_image(transform(to_nchw(self.image), _generator(0))), defense=transform)


class DefendRandomizedSmoothing(Node):
    """Randomized smoothing: add noise to many copies and average them, or vote on their VQ codes."""

    CLASS_TYPE = "GenArtDefendRandomizedSmoothing"
    CATEGORY = "GenArt/defense"

    Outputs = DefenseOutputs

    image: Image = Field(description=IMAGE_IN)
    sigma: float = Field(0.1, ge=0.0, le=2.0, description="standard deviation of the Gaussian noise, image units "
                         "([0, 1] scale)")
    samples: int = Field(16, ge=1, le=256, description="noisy copies per image")
    aggregate: Literal["average", "majority"] = Field(
        "average", description="'average': mean of the copies (in pixels, or of their latents with an "
        "autoencoder); 'majority': per latent position, the codebook entry most copies quantize to (needs "
        "'vqmodel')")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the noise (drawn on the CPU)")
    vqmodel: VQModel | None = Field(None, description="optional VQ autoencoder: smooth in its latent space "
                                    "(average of latents, or majority vote on codes)")
    autoencoder: Autoencoder | None = Field(None, description="optional KL autoencoder: average the latents of "
                                            "the copies and decode")

    def run(self, ctx: RunContext) -> DefenseOutputs:
        connected = self.vqmodel is not None or self.autoencoder is not None
        model = pick_autoencoder(self.vqmodel, self.autoencoder) if connected else None
        if self.aggregate == "majority" and (model is None or not is_vq(model)):
            raise ValueError("input 'aggregate' = 'majority' votes on codebook indices and needs 'vqmodel' "
                             "connected; connect a VQ autoencoder or use 'average'")
        sigma, samples, aggregate = self.sigma, self.samples, self.aggregate

        def apply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            return randomized_smoothing(x, sigma, samples, aggregate, g, model).to(x.device)

        transform = DefenseTransform("randomized_smoothing", apply, differentiable=model is None, randomized=True,
                                     params={"sigma": sigma, "samples": samples, "aggregate": aggregate})
        return DefenseOutputs(image=nchw_to_image(transform(to_nchw(self.image), _generator(self.seed))),
                              defense=transform)


class DefendDiffPure(Node):
    """DiffPure: noise the image's latent to t*, then denoise it with the loaded denoiser and scheduler."""

    CLASS_TYPE = "GenArtDefendDiffPure"
    CATEGORY = "GenArt/defense"

    Outputs = DefenseOutputs

    image: Image = Field(description=IMAGE_IN)
    denoiser: Denoiser = Field(description="the denoising UNet, trained on this autoencoder's latents")
    scheduler: Scheduler = Field(description="diffusers scheduler for the reverse process (a fresh copy per run)")
    t_star: float = Field(0.1, ge=0.0, le=1.0, description="diffusion time t* to noise to, as a fraction of the "
                          "schedule (DiffPure: 0.1 for CIFAR-10 L-inf, 0.15 for ImageNet); the last "
                          "int(steps * t_star) steps run")
    steps: int = Field(50, ge=1, le=MAX_STEPS, description="steps of the whole schedule (set_timesteps)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the forward-diffusion noise (CPU, "
                      "ComfyUI's prepare_noise semantics)")
    vqmodel: VQModel | None = Field(None, description="the VQ autoencoder (connect this or 'autoencoder')")
    autoencoder: Autoencoder | None = Field(None, description="the KL autoencoder (connect this or 'vqmodel')")
    conditioning: ConditioningSocket | None = Field(None, description="prompt embeddings for a conditional "
                                                    "denoiser (no guidance: cfg 1); leave empty for an "
                                                    "unconditional one")

    def run(self, ctx: RunContext) -> DefenseOutputs:
        model = pick_autoencoder(self.vqmodel, self.autoencoder)
        denoiser, scheduler, conditioning = self.denoiser, self.scheduler, self.conditioning
        t_star, steps = self.t_star, self.steps

        def apply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            if not torch.is_grad_enabled():
                return diffpure(x, model, denoiser, scheduler, t_star, steps, _draw_seed(g), conditioning)
            # An attack differentiates through the purification (PhotoGuard's diffusion attack: through the
            # whole edit): copies of the weights autograd can save; VQ quantization passes the gradient straight.
            ready = replace(denoiser, model=grad_ready(denoiser.model))
            return diffpure(x, grad_ready(model), ready, scheduler, t_star, steps, _draw_seed(g), conditioning)

        transform = DefenseTransform("diffpure", apply, differentiable=True, randomized=True,
                                     params={"t_star": t_star, "steps": steps})
        images = to_nchw(self.image)
        with ctx.progress(max(int(steps * t_star), 1)) as bar:
            out = diffpure(images, model, denoiser, scheduler, t_star, steps, self.seed, conditioning, bar.update)
        return DefenseOutputs(image=nchw_to_image(out), defense=transform)
