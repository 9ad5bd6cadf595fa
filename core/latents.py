"""LATENT dicts as ComfyUI passes them: `samples` [B, C, h, w] (raw, unscaled), optional `noise_mask`
and `batch_index`."""
from __future__ import annotations

from typing import Any

import torch

# prepare_noise draws every index below the largest one: bound the work a workflow can ask for.
MAX_BATCH_INDEX = 65535


def latent_samples(latent: Any, input_name: str = "latent") -> torch.Tensor:
    """The `samples` tensor [B, C, h, w] of a LATENT, with an error that names the input otherwise."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        got = type(latent).__name__ if not isinstance(latent, dict) else f"keys {sorted(latent)}"
        if isinstance(samples, torch.Tensor):
            got = f"samples of shape {tuple(samples.shape)}"
        raise ValueError(f"{input_name} must be a LATENT dict with 'samples' [B, C, h, w]; got {got}")
    return samples


def batch_index_of(latent: dict[str, Any], batch: int, input_name: str = "latent") -> list[int] | None:
    """The latent's "batch_index" (ComfyUI's per-item noise indices), checked against its batch size."""
    index = latent.get("batch_index")
    if index is None:
        return None
    if (not isinstance(index, (list, tuple)) or len(index) != batch
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= MAX_BATCH_INDEX for i in index)):
        raise ValueError(f"{input_name}['batch_index'] must list one integer in [0, {MAX_BATCH_INDEX}] per item "
                         f"({batch} items), got {index!r}; drop the key to number the items 0..{batch - 1}")
    return list(index)
