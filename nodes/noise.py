"""Noise: seeded on the CPU with ComfyUI's prepare_noise semantics, then moved to the device."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def prepare_noise(shape: Sequence[int], seed: int, batch_index: Sequence[int] | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gaussian noise of `shape` [B, C, h, w], drawn on the CPU exactly as ComfyUI's prepare_noise.

    Without `batch_index` it is one draw of the whole shape from a generator seeded with `seed`.
    With it (ComfyUI's latent "batch_index"), draws of shape [1, C, h, w] are taken in order for
    indices 0..max, and item i gets the draw of its own index, so an item's noise does not depend on
    which other items are in the batch.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if batch_index is None:
        return torch.randn(tuple(shape), dtype=dtype, generator=generator, device="cpu")
    wanted = sorted(set(batch_index))
    draws = {}
    for i in range(wanted[-1] + 1):
        draw = torch.randn((1, *shape[1:]), dtype=dtype, generator=generator, device="cpu")
        if i in wanted:
            draws[i] = draw
    return torch.cat([draws[i] for i in batch_index], dim=0)
