"""Images between PIL and IMAGE tensors ([B, H, W, C] float32 in [0, 1], ComfyUI's layout), and grids."""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageOps


def pil_to_tensor(image: PILImage.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """(IMAGE [1, H, W, 3], MASK [1, H, W]) as ComfyUI's LoadImage makes them.

    The mask is 1 - alpha (ComfyUI's convention: 1 marks the area to inpaint), zeros without alpha.
    """
    image = ImageOps.exif_transpose(image) or image
    if image.mode == "I":
        image = image.point(lambda v: v * (1 / 255))
    rgb = torch.from_numpy(np.array(image.convert("RGB")).astype(np.float32) / 255.0)[None]
    if "A" in image.getbands():
        alpha = np.array(image.getchannel("A")).astype(np.float32) / 255.0
        mask = 1.0 - torch.from_numpy(alpha)
    else:
        mask = torch.zeros(rgb.shape[1:3], dtype=torch.float32)
    return rgb, mask[None]


def tensor_to_pil(image: torch.Tensor) -> PILImage.Image:
    """One [H, W, C] image in [0, 1] to 8-bit, truncating like ComfyUI's SaveImage (bit-compatible files)."""
    array = np.clip(255.0 * image.detach().float().cpu().numpy(), 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = array[..., 0]
    return PILImage.fromarray(array)


def image_grid(images: torch.Tensor, columns: int, padding: int = 2, background: float = 1.0,
               max_pixels: int | None = None) -> torch.Tensor:
    """IMAGE [B, H, W, C] laid out row by row, `columns` per row, as one IMAGE [1, rows * (H + padding) + padding,
    cols * (W + padding) + padding, C]; padding and empty cells filled with the grey level `background`."""
    b, h, w, c = images.shape
    cols = min(columns, b)
    rows = math.ceil(b / cols)
    grid_h, grid_w = rows * (h + padding) + padding, cols * (w + padding) + padding
    if max_pixels is not None and grid_h * grid_w > max_pixels:
        raise ValueError(f"the grid would be {grid_w}x{grid_h} = {grid_w * grid_h} pixels, over the limit of "
                         f"{max_pixels}; use fewer images (GenArt Select Images) or smaller ones")
    grid = torch.full((1, grid_h, grid_w, c), background, dtype=images.dtype, device=images.device)
    for i in range(b):
        y, x = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        grid[0, y:y + h, x:x + w] = images[i]
    return grid


def pattern_images(pattern: Literal["gradient", "checkerboard", "solid"], batch: int, width: int, height: int,
                   cell: int = 8, colour: tuple[float, float, float] = (0.8, 0.4, 0.2)) -> torch.Tensor:
    """A synthetic IMAGE [batch, height, width, 3]: a colour gradient, a checkerboard of `colour` and its
    complement with `cell`-pixel squares, or solid `colour`; item i is shifted i pixels to the right."""
    ys = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    xs = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    rgb = torch.tensor(colour)
    images = []
    for i in range(batch):
        if pattern == "gradient":
            u = (xs + i) % width / max(width - 1, 1)
            v = ys / max(height - 1, 1)
            img = torch.stack([u, v, 1 - 0.5 * (u + v)], dim=-1)
        elif pattern == "checkerboard":
            on = (((xs + i) // cell + ys // cell) % 2)[..., None]
            img = on * rgb + (1 - on) * (1 - rgb)
        else:
            img = rgb.expand(height, width, 3).clone()
        images.append(img)
    return torch.stack(images).contiguous()
