"""Autoencoders (diffusers VQModel or AutoencoderKL) as differentiable functions of NCHW images in [0, 1]."""
from __future__ import annotations

import copy
import weakref
from typing import Any

import torch


def is_vq(model: Any) -> bool:
    """True for a VQ autoencoder (it has a quantizer), False for a KL one."""
    return hasattr(model, "quantize")


# Grad-ready copies of models handed out under inference mode, kept while the original lives (handles are
# immutable, so a copy stays valid): an attack re-run with new settings does not copy again.
_GRAD_READY: weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module] = weakref.WeakKeyDictionary()


def grad_ready(model: torch.nn.Module) -> torch.nn.Module:
    """`model`, or a copy of it whose weights can be saved for backward.

    A model loaded under torch.inference_mode() (every node but attacks and training runs there, and all
    of ComfyUI) holds inference tensors, which autograd refuses to save; a deep copy made outside
    inference mode holds ordinary ones. The copy is made once per model and costs its memory again.
    The handle's model is never modified.
    """
    if not any(t.is_inference() for t in (*model.parameters(), *model.buffers())):
        return model
    ready = _GRAD_READY.get(model)
    if ready is None:
        with torch.inference_mode(False):
            ready = copy.deepcopy(model)
        _GRAD_READY[model] = ready
    return ready


def encode_images(model: Any, images: torch.Tensor) -> torch.Tensor:
    """The latent an autoencoder gives `images` ([B, C, H, W] in [0, 1]): the VQ encoder's output before
    quantization, or the KL posterior mean; float32 [B, c, h, w]."""
    param = next(model.parameters())
    x = images.to(device=param.device, dtype=param.dtype) * 2 - 1
    if is_vq(model):
        return model.encode(x).latents.float()
    return model.encode(x).latent_dist.mean.float()


def decode_latents(model: Any, latents: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Images [B, C, H, W] float32 in [0, 1] from latents; a VQ latent is snapped to the codebook first
    (as latent diffusion decodes) unless `quantize` is False (it already holds codebook vectors)."""
    param = next(model.parameters())
    z = latents.to(device=param.device, dtype=param.dtype)
    x = model.decode(z).sample if not is_vq(model) else model.decode(z, force_not_quantize=not quantize).sample
    return (x.float() / 2 + 0.5).clamp(0, 1)
