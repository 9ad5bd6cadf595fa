"""Defenses as functions of NCHW images in [0, 1]: JPEG, Gaussian blur, median filter, bit-depth reduction,
randomized smoothing, DiffPure."""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

from .autoencoders import decode_latents, encode_images
from .denoising import begin_denoising, prepare_guidance
from .handles import Conditioning, DenoiserHandle, SchedulerHandle


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


def _check_pad(x: torch.Tensor, radius: int, name: str = "radius") -> None:
    h, w = x.shape[-2:]
    if radius >= min(h, w):
        raise ValueError(f"input {name!r} = {radius} needs images larger than {radius} pixels on each side "
                         f"(reflect padding); the images are {w}x{h}. Lower {name} or upscale the images")


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
    denoising.run(denoiser.model, guidance, denoising.total, on_step=on_step)
    return decode_latents(model, denoising.samples()).to(images.device)


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (), generator=generator))
