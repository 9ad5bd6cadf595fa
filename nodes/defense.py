"""Defenses: JPEG, Gaussian blur, median filter, bit-depth reduction, randomized smoothing, DiffPure.

Each node cleans an image batch and also hands out the same defense as a GENART_DEFENSE value, so an
attack node can be run *through* it (BPDA, EOT): the honest way to evaluate a defense.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from pydantic import Field

from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs
from ..graph.safety import MAX_STEPS
from ..graph.types import Image, Socket, image_to_nchw, nchw_to_image
from .attack_core import decode_latents, encode_images, grad_ready, is_vq
from .denoise import begin_denoising, prepare_guidance
from .handles import (
    Autoencoder,
    AutoencoderHandle,
    Conditioning,
    ConditioningSocket,
    Denoiser,
    DenoiserHandle,
    Scheduler,
    SchedulerHandle,
    VQModel,
    VQModelHandle,
)
from .noise import SEED_MAX


@dataclass(eq=False)
class DefenseTransform:
    """A defense as a function of NCHW images in [0, 1]. Socket GENART_DEFENSE.

    `apply(images, generator)` returns the defended images (same shape, [0, 1]) and draws any randomness
    from the CPU `generator`. `differentiable`: autograd through `apply` gives a useful gradient (else an
    attack must use BPDA). `randomized`: each call draws new randomness (EOT averages over it).
    """

    name: str
    apply: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    differentiable: bool
    randomized: bool
    params: dict[str, Any] = field(default_factory=dict)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, generator)

    def describe(self) -> str:
        return " ".join([self.name, *(f"{k}={v}" for k, v in self.params.items())])


Defense = Annotated[DefenseTransform, Socket("GENART_DEFENSE")]

DEFENSE_OUTPUT = ("this defense as a function (GENART_DEFENSE) for an attack's 'defense' input, so the attack "
                  "is adaptive (BPDA / EOT through it)")
IMAGE_IN = "images to defend, [B, H, W, C] float32 in [0, 1]"


def to_nchw(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    return image_to_nchw(image, name).float()


def _check_pad(x: torch.Tensor, radius: int, name: str = "radius") -> None:
    h, w = x.shape[-2:]
    if radius >= min(h, w):
        raise ValueError(f"input {name!r} = {radius} needs images larger than {radius} pixels on each side "
                         f"(reflect padding); the images are {w}x{h}. Lower {name} or upscale the images")


# The defenses as functions of NCHW images in [0, 1].

def jpeg_compress(images: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip through PIL at `quality` (PIL's default 4:2:0 chroma subsampling): each image is
    rounded to 8 bits, encoded, decoded and scaled back to [0, 1]. Not differentiable."""
    channels = images.shape[1]
    if channels not in (1, 3):
        raise ValueError(f"JPEG takes 1 (grey) or 3 (RGB) channels; the images have {channels}. "
                         "Drop the alpha channel first")
    array = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    out = []
    for item in array:
        pil = PILImage.fromarray(item[0] if channels == 1 else item.transpose(1, 2, 0))
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with PILImage.open(buffer) as decoded:
            back = np.array(decoded.convert("L" if channels == 1 else "RGB"))
        out.append(back[None] if channels == 1 else back.transpose(2, 0, 1))
    result = torch.from_numpy(np.stack(out)).float() / 255.0
    return result.to(images.device)


def gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    """Normalized 1-D Gaussian of 2 * radius + 1 taps, float64."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(images: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """Separable Gaussian blur, 2 * radius + 1 taps, reflect padding (scipy.ndimage's mode='mirror').
    Differentiable."""
    _check_pad(images, radius)
    b, c, h, w = images.shape
    kernel = gaussian_kernel(sigma, radius).to(device=images.device, dtype=images.dtype)
    x = images.reshape(b * c, 1, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return x.reshape(b, c, h, w)


def median_filter(images: torch.Tensor, radius: int) -> torch.Tensor:
    """Per-channel median over (2 * radius + 1)^2 windows, reflect padding (scipy.ndimage's mode='mirror').
    Its gradient flows to one pixel per window: use BPDA to attack it."""
    _check_pad(images, radius)
    k = 2 * radius + 1
    out = torch.empty_like(images)
    for i in range(images.shape[0]):  # one image at a time bounds the k*k-fold unfolded copy
        x = F.pad(images[i:i + 1], (radius, radius, radius, radius), mode="reflect")
        windows = x.unfold(2, k, 1).unfold(3, k, 1)  # [1, C, H, W, k, k]
        out[i:i + 1] = windows.reshape(*windows.shape[:4], k * k).median(dim=-1).values
    return out


def reduce_bit_depth(images: torch.Tensor, bits: int) -> torch.Tensor:
    """round(x * (2^bits - 1)) / (2^bits - 1), computed in float64 as ART's FeatureSqueezing does.
    Its gradient is zero almost everywhere: use BPDA to attack it."""
    levels = float(2**bits - 1)
    return (torch.round(images.double() * levels) / levels).to(images.dtype)


def randomized_smoothing(images: torch.Tensor, sigma: float, samples: int, aggregate: Literal["average", "majority"],
                         generator: torch.Generator, model: Any | None = None) -> torch.Tensor:
    """Add Gaussian noise of standard deviation `sigma` to `samples` copies and aggregate them.

    Without a model: the average of the noisy copies, clipped to [0, 1]. With an autoencoder: each copy is
    encoded; "average" decodes the mean latent, "majority" (VQ only) decodes, at each latent position,
    the codebook entry most copies quantize to (ties: the lowest index). Noise is drawn on the CPU.
    """
    noise = torch.randn((samples, *images.shape), generator=generator, dtype=images.dtype).to(images.device)
    noisy = images.unsqueeze(0) + sigma * noise  # [S, B, C, H, W]
    if model is None:
        return noisy.mean(dim=0).clamp(0, 1)
    b = images.shape[0]
    latents = torch.stack([encode_images(model, n) for n in noisy])  # [S, B, c, h, w]
    if aggregate == "average":
        return decode_latents(model, latents.mean(dim=0))
    s, _, c, h, w = latents.shape
    quantizer = model.quantize
    flat = latents.reshape(s * b, c, h, w).to(next(model.parameters()).dtype)
    indices = quantizer(flat)[2][2].reshape(s, b, h, w)
    # Votes per copy: how many copies chose the same code; the most voted wins, ties to the lowest code.
    counts = (indices.unsqueeze(0) == indices.unsqueeze(1)).sum(dim=1)  # [S, B, h, w]
    best = (counts * quantizer.n_e - indices).argmax(dim=0, keepdim=True)
    votes = indices.gather(0, best)[0]
    return decode_latents(model, quantizer.get_codebook_entry(votes.reshape(-1), (b, h, w, c)), quantize=False)


def diffpure(images: torch.Tensor, model: Any, denoiser: DenoiserHandle, scheduler: SchedulerHandle,
             t_star: float, steps: int, seed: int, conditioning: Conditioning | None = None,
             on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """DiffPure in latent space: encode, noise the latent to t* (img2img strength t_star of a `steps`-step
    schedule: the last int(steps * t_star) steps run), denoise with the scheduler, decode (a VQ latent is
    quantized first). Noise is drawn from `seed` with ComfyUI's prepare_noise semantics."""
    run = int(steps * t_star)
    if run == 0:
        raise ValueError(f"input 't_star' = {t_star} with steps={steps} runs int({steps} * {t_star}) = 0 "
                         f"denoising steps; raise t_star to at least {1 / steps:.4g} or raise steps")
    latent = {"samples": encode_images(model, images)}
    denoising = begin_denoising(denoiser, scheduler, latent, seed=seed, steps=steps, start=steps - run,
                                add_noise=True, noise=None, start_input="t_star")
    guidance = prepare_guidance(denoiser, conditioning, 1.0, images.shape[0])
    while not denoising.finished:
        denoising.step(denoiser.model, guidance)
        if on_step is not None:
            on_step()
    return decode_latents(model, denoising.samples()).to(images.device)


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


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (), generator=generator))


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
