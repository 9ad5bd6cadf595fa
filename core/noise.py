"""Noise drawn on the CPU from a seed with ComfyUI's prepare_noise semantics, then moved to the device:
gaussian (per batch index), offset and pyramid noise."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# ComfyUI's seed range (KSampler's noise_seed): any unsigned 64-bit integer.
SEED_MAX = 0xFFFFFFFFFFFFFFFF


# Odd 64-bit constant (golden ratio) that spreads derived seeds for the extra noise components.
_SEED_STRIDE = 0x9E3779B97F4A7C15


def prepare_noise(shape: Sequence[int], seed: int, batch_index: Sequence[int] | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gaussian noise of `shape` [B, C, h, w], drawn on the CPU exactly as ComfyUI's prepare_noise.

    Without `batch_index` it is one draw of the whole shape from a generator seeded with `seed`.
    With it (ComfyUI's latent "batch_index"), draws of shape [1, C, h, w] are taken in order for
    indices 0..max, and item i gets the draw of its own index, so an item's noise does not depend on
    which other items are in the batch.
    """
    return prepare_noise_and_generator(shape, seed, batch_index, dtype)[0]


def prepare_noise_and_generator(shape: Sequence[int], seed: int, batch_index: Sequence[int] | None = None,
                                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Generator]:
    """`prepare_noise` and the generator that drew it, whose stream continues (stochastic schedulers
    go on drawing from it, as a diffusers pipeline continues its one generator)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if batch_index is None:
        return torch.randn(tuple(shape), dtype=dtype, generator=generator, device="cpu"), generator
    wanted = set(batch_index)
    draws = {}
    for i in range(max(wanted) + 1):
        draw = torch.randn((1, *shape[1:]), dtype=dtype, generator=generator, device="cpu")
        if i in wanted:
            draws[i] = draw
    return torch.cat([draws[i] for i in batch_index], dim=0), generator


def derived_seed(seed: int, component: int) -> int:
    """Seed of an extra noise component (offset, pyramid level): distinct per component, in [0, 2**64)."""
    return (seed + component * _SEED_STRIDE) % (SEED_MAX + 1)


def gaussian_like(samples: torch.Tensor, seed: int, batch_index: Sequence[int] | None) -> torch.Tensor:
    """ComfyUI's noise for a latent: prepare_noise in the latent's dtype, moved to its device."""
    return prepare_noise(samples.shape, seed, batch_index, dtype=samples.dtype).to(samples.device)


def offset_noise(shape: Sequence[int], seed: int, batch_index: Sequence[int] | None, offset: float) -> torch.Tensor:
    """Gaussian noise plus `offset` * a per-channel constant: randn(B, C, h, w) + offset * randn(B, C, 1, 1).

    The constant shifts each channel's mean, which lets a model learn to change overall brightness.
    """
    b, c = shape[0], shape[1]
    base = prepare_noise(shape, seed, batch_index)
    shift = prepare_noise((b, c, 1, 1), derived_seed(seed, 1), batch_index)
    return base + offset * shift


def pyramid_noise(shape: Sequence[int], seed: int, batch_index: Sequence[int] | None, discount: float,
                  levels: int) -> torch.Tensor:
    """Multi-resolution noise: sum over i = 0..levels of discount**i * (gaussian at size (h, w) / 2**i,
    bilinearly upsampled to (h, w)), stopping at the first level of 1x1; each item is then divided by
    its own standard deviation (so it has std 1 and does not depend on the other items)."""
    b, c, h, w = shape
    noise = prepare_noise(shape, seed, batch_index)
    for i in range(1, levels + 1):
        hi, wi = max(1, h >> i), max(1, w >> i)
        coarse = prepare_noise((b, c, hi, wi), derived_seed(seed, i), batch_index)
        noise = noise + discount**i * F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        if hi == 1 and wi == 1:
            break
    return noise / noise.std(dim=(1, 2, 3), keepdim=True)
