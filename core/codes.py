"""Codebook indices: usage statistics and the codebook vectors they stand for."""
from __future__ import annotations

import torch

from .handles import VQModelHandle


def code_usage(indices: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, int, float]:
    """(counts [num_codes] int64, codes used, perplexity) of a set of code indices.

    Perplexity is exp(entropy) of the usage distribution p = counts / total: 1 when one code is used
    everywhere, num_codes when every code is used equally often.
    """
    counts = torch.bincount(indices.reshape(-1).cpu(), minlength=num_codes)
    p = counts[counts > 0].double() / counts.sum()
    return counts, int((counts > 0).sum()), float(torch.exp(-(p * p.log()).sum()))


def codebook_entries(handle: VQModelHandle, indices: torch.Tensor) -> torch.Tensor:
    """Codebook vectors for indices [B, h, w]: a latent [B, vq_embed_dim, h, w] in the model's dtype."""
    b, h, w = indices.shape
    quantizer = handle.model.quantize
    flat = indices.reshape(-1).to(handle.device)
    return quantizer.get_codebook_entry(flat, (b, h, w, quantizer.vq_embed_dim))
