"""Noise: seeded on the CPU with ComfyUI's prepare_noise semantics, then moved to the device.

Also the latents that noise goes with: an empty latent, noise injected at a strength or timestep
(img2img), and ComfyUI's noise mask.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from ..core.denoising import STATE_KEY, begin_denoising, injection_step
from ..core.latents import batch_index_of, latent_samples
from ..core.noise import SEED_MAX, gaussian_like, offset_noise, pyramid_noise
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs
from ..graph.safety import MAX_BATCH, MAX_RESOLUTION, MAX_STEPS
from ..graph.types import IntSocket, Latent, Mask
from .image import pixel_budget
from .sockets import Denoiser, Scheduler


class EmptyLatent(Node):
    """Make a batch of all-zero latents for an image size, to start sampling from pure noise."""

    CLASS_TYPE = "GenArtEmptyLatent"
    CATEGORY = "GenArt/noise"

    class Outputs(NodeOutputs):
        latent: Latent = Field(description="zeros, samples [batch_size, channels, height / downscale_factor, "
                               "width / downscale_factor] float32 on the run's device")

    width: int = Field(512, ge=1, le=MAX_RESOLUTION, description="image width in pixels; a multiple of "
                       "downscale_factor")
    height: int = Field(512, ge=1, le=MAX_RESOLUTION, description="image height in pixels; a multiple of "
                        "downscale_factor")
    downscale_factor: int = Field(8, ge=1, le=64, description="pixels per latent cell of the autoencoder that will "
                                  "decode it (8 for Stable Diffusion's VAE; 2**(number of blocks - 1) for a "
                                  "diffusers VQModel or AutoencoderKL)")
    channels: int = Field(4, ge=1, le=64, description="latent channels (4 for Stable Diffusion; the VQ model's "
                          "vq_embed_dim)")
    batch_size: int = Field(1, ge=1, le=MAX_BATCH, description="number of latents")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        problems = []
        f = constants.get("downscale_factor")
        for name in ("width", "height"):
            size = constants.get(name)
            if f is not None and size is not None and size % f:
                lower, upper = size - size % f, size - size % f + f
                allowed = f"{lower} or {upper}" if lower else f"{upper}"
                problems.append((name, f"{name} {size} is not a multiple of downscale_factor {f}; use {allowed}"))
        return problems + pixel_budget(constants, "batch_size")

    def run(self, ctx: RunContext) -> Outputs:
        f = self.downscale_factor
        # Linked sizes skip validation's check: refuse here rather than floor.
        problems = self.check_constants(self.model_dump(), ctx)
        if problems:
            raise ValueError("; ".join(message for _, message in problems))
        shape = (self.batch_size, self.channels, self.height // f, self.width // f)
        return self.Outputs(latent={"samples": torch.zeros(shape, dtype=torch.float32, device=ctx.device)})


class Noise(Node):
    """Draw seeded noise the shape of a latent: gaussian (as ComfyUI's samplers), offset or pyramid noise.

    All noise is drawn on the CPU from the seed, so a seed gives the same noise on every machine, and
    honours the latent's "batch_index" as ComfyUI does: item i gets the noise of its own index.
    """

    CLASS_TYPE = "GenArtNoise"
    CATEGORY = "GenArt/noise"

    class Outputs(NodeOutputs):
        noise: Latent = Field(description="the noise as a LATENT: samples [B, C, h, w] in the latent's dtype and "
                              "device (other keys of the input latent kept)")

    latent: Latent = Field(description="gives the shape, dtype, device and batch_index; its values are not used")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="noise seed; 'gaussian' with the same seed and "
                      "batch_index is exactly the noise ComfyUI's KSampler draws")
    kind: Literal["gaussian", "offset", "pyramid"] = Field(
        "gaussian", description="'gaussian': N(0, 1), ComfyUI's prepare_noise; 'offset': gaussian + offset * a "
        "per-channel constant N(0, 1) (shifts overall brightness); 'pyramid': multi-resolution noise, gaussians "
        "at halving sizes weighted by discount**level, renormalized to std 1 per item")
    offset: float = Field(0.1, ge=0.0, le=10.0, description="'offset' only: weight of the per-channel constant")
    discount: float = Field(0.8, ge=0.0, le=1.0, description="'pyramid' only: weight factor per level "
                            "(level i is weighted discount**i)")
    levels: int = Field(6, ge=1, le=16, description="'pyramid' only: coarser levels added on top of the full-size "
                        "gaussian (fewer when the size reaches 1x1 first)")

    def run(self, ctx: RunContext) -> Outputs:
        samples = latent_samples(self.latent)
        index = batch_index_of(self.latent, samples.shape[0])
        if self.kind == "gaussian":
            noise = gaussian_like(samples, self.seed, index)
        elif self.kind == "offset":
            noise = offset_noise(samples.shape, self.seed, index, self.offset)
        else:
            if samples[0].numel() < 2:
                raise ValueError(f"latent items of shape {tuple(samples.shape[1:])} are too small for pyramid noise "
                                 "(it is normalized per item); use kind 'gaussian'")
            noise = pyramid_noise(samples.shape, self.seed, index, self.discount, self.levels)
        noise = noise.to(device=samples.device, dtype=samples.dtype)
        return self.Outputs(noise={**self.latent, "samples": noise})


class InjectNoiseOutputs(NodeOutputs):
    latent: Latent = Field(description="the noised latent: samples [B, C, h, w] raw (x_t / latent_scale, so a "
                           "decoder shows the noisy image), other keys kept (noise_mask, which the sampler "
                           "honours), and the denoising state at start_step that a sampler or step node resumes")
    timestep: IntSocket = Field(description="the timestep the latent was noised to; -1 when no noise was added "
                                "(strength too small for one step, or timestep below the schedule's last step)")
    start_step: IntSocket = Field(description="index into the scheduler's timesteps for `steps` steps where "
                                  "denoising resumes; equal to their count when no noise was added")


class InjectNoise(Node):
    """Noise a latent part way along a schedule (img2img), in the denoiser's space: x_t = add_noise(x_0 * s, eps, t).

    s is the denoiser's latent_scale (0.18215 for SD 1.x): the noise is added where the denoiser works, so
    GenArt Sample Latent or Denoise Step resuming at start_step gives exactly diffusers' img2img pipelines
    (and Sample Latent's own `denoise`). The scheduler's timesteps for N = steps are computed and the latent
    is noised to t = timesteps[start_step]. by='strength': int(N * strength) steps are left to run,
    start_step = (N - int(N * strength)) * scheduler.order; strength 1 noises to the first (noisiest) step,
    which still keeps a trace of the latent. by='timestep': the first step at or below the given training
    timestep (give steps = num_train_timesteps, with DDPM or DDIM, to hit any t exactly). ComfyUI's `denoise`
    is related but not equal: it runs N steps of a longer schedule instead of the last int(N * strength) of N.
    """

    CLASS_TYPE = "GenArtInjectNoise"
    CATEGORY = "GenArt/noise"
    # 2: noises in the denoiser's space (takes the denoiser); version 1 noised the raw latent.
    VERSION = 2

    Outputs = InjectNoiseOutputs

    latent: Latent = Field(description="clean latent x_0, samples [B, C, h, w] raw (unscaled)")
    denoiser: Denoiser = Field(description="the denoiser that will continue from the noised latent: its "
                               "latent_scale gives the space the noise is added in, its device and dtype the "
                               "output's")
    scheduler: Scheduler = Field(description="the diffusers scheduler whose add_noise and timesteps are used; "
                                 "connect the same one to the sampler that continues")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="noise seed (ComfyUI's prepare_noise, per batch_index); "
                      "stochastic schedulers continue its stream afterwards, as the sampler's own img2img does. "
                      "Unused for the draw when `noise` is linked")
    by: Literal["strength", "timestep"] = Field("strength", description="how the noise level is given: a fraction "
                                                "of the schedule, or a training timestep")
    strength: float = Field(0.5, ge=0.0, le=1.0, description="'strength': fraction of the N steps left to run")
    steps: int = Field(50, ge=1, le=MAX_STEPS, description="number of sampling steps N the schedule is split into")
    timestep: int = Field(500, ge=0, le=99999, description="'timestep': training timestep in "
                          "[0, num_train_timesteps); the latent is noised to the first step at or below it")
    noise: Latent | None = Field(None, description="optional noise LATENT (GenArt Noise: gaussian, offset, pyramid), "
                                 "unit noise in the denoiser's space, the latent's shape; when absent, gaussian "
                                 "noise is drawn from `seed`")

    def run(self, ctx: RunContext) -> InjectNoiseOutputs:
        x0 = latent_samples(self.latent)
        if self.noise is not None and latent_samples(self.noise, "noise").shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(self.noise['samples'].shape)} but the latent has "
                             f"{tuple(x0.shape)}; make the noise from this latent (GenArt Noise) or leave `noise` "
                             "unlinked")
        level = self.strength if self.by == "strength" else self.timestep
        start, total, t = injection_step(self.scheduler, self.steps, self.by, level)
        clean = {k: v for k, v in self.latent.items() if k != STATE_KEY}  # x_0 is what it holds now
        if start >= total:
            return InjectNoiseOutputs(latent=clean, timestep=-1, start_step=total)
        denoising = begin_denoising(self.denoiser, self.scheduler, clean, seed=self.seed, steps=self.steps,
                                    start=start, add_noise=True, noise=self.noise, start_input=self.by,
                                    from_latent=True)
        return InjectNoiseOutputs(latent=denoising.output(clean, denoising.samples()), timestep=t, start_step=start)


class SetNoiseMask(Node):
    """Limit sampling to a masked area, as ComfyUI's SetLatentNoiseMask (1 = regenerate, 0 = keep)."""

    CLASS_TYPE = "GenArtSetNoiseMask"
    CATEGORY = "GenArt/noise"

    class Outputs(NodeOutputs):
        latent: Latent = Field(description="the latent with noise_mask [B or 1, 1, H, W] (other keys kept)")

    latent: Latent = Field(description="latent, samples [B, C, h, w]")
    mask: Mask = Field(description="mask, [B, H, W] or [H, W] float in [0, 1], any resolution (the sampler resizes "
                       "it to the latent)")

    def run(self, ctx: RunContext) -> Outputs:
        latent_samples(self.latent)
        if self.mask.ndim not in (2, 3):
            raise ValueError(f"mask must be a MASK [B, H, W] or [H, W], got shape {tuple(self.mask.shape)}")
        return self.Outputs(latent={**self.latent,
                                    "noise_mask": self.mask.reshape(-1, 1, *self.mask.shape[-2:])})
