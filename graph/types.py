"""Socket types, declared once.

ComfyUI's own names are used where they exist so our nodes plug into LoadImage, SaveImage, latent and
mask nodes without conversion. The node library declares its own `GENART_*` types beside the
payloads they carry (nodes/handles.py); the engine knows none of them. A field annotated with one of
these aliases becomes a socket (a link input or an output) of that type.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch


@dataclass(frozen=True)
class Socket:
    """Marks an annotation as a socket of ComfyUI type `name`."""

    name: str


IMAGE = "IMAGE"
LATENT = "LATENT"
MASK = "MASK"

# Tensor conventions (ComfyUI's): IMAGE float32 [B, H, W, C] in [0, 1]; MASK float [B, H, W] in [0, 1];
# LATENT a dict with "samples" [B, C, h, w] (raw, unscaled) and optional "noise_mask", "batch_index".
Image = Annotated[torch.Tensor, Socket(IMAGE)]
Mask = Annotated[torch.Tensor, Socket(MASK)]
Latent = Annotated[dict, Socket(LATENT)]


def check_image(image: object, name: str) -> torch.Tensor:
    """`image` itself when it is an IMAGE tensor [B, H, W, C]; an error naming input `name` otherwise."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        got = f"shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"input {name!r} must be an IMAGE [B, H, W, C]; got {got}")
    return image


def image_to_nchw(image: object, name: str) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> [B, C, H, W], contiguous. A plain movedim would hand kernels a channels-last
    view, and convolutions and resizes take another code path (other rounding) on that layout, so bits
    would depend on how the upstream tensor happened to be laid out (a cached one is contiguous)."""
    return check_image(image, name).movedim(-1, 1).contiguous()


def nchw_to_image(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> IMAGE [B, H, W, C], contiguous (every IMAGE handed out has one layout)."""
    return x.movedim(1, -1).contiguous()


# Plain values that may also travel over links (ComfyUI primitive sockets).
IntSocket = Annotated[int, Socket("INT")]
FloatSocket = Annotated[float, Socket("FLOAT")]
StringSocket = Annotated[str, Socket("STRING")]
