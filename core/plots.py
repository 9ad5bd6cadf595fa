"""Charts drawn as IMAGE tensors: the codebook usage histogram."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from .codes import code_usage

BAR_COLOUR = (40, 90, 170)


UNUSED_COLOUR = (210, 50, 40)


TEXT_COLOUR = (20, 20, 20)


def column_values(values: torch.Tensor, width: int) -> torch.Tensor:
    """Values of `len(values)` bars drawn in `width` pixel columns: a column spanning several bars shows
    their maximum; a bar wider than a column repeats."""
    n = values.numel()
    if n >= width:
        column_of = torch.arange(n) * width // n
        return torch.zeros(width, dtype=values.dtype).scatter_reduce(0, column_of, values, "amax")
    return values[torch.arange(width) * n // width]


def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def codebook_histogram(indices: torch.Tensor, num_codes: int, width: int, height: int,
                       order: Literal["index", "count"] = "index",
                       scale: Literal["linear", "log"] = "linear") -> torch.Tensor:
    """How often each code is used, as IMAGE [1, height, width, 3]: one bar per code (a pixel column shows the
    largest count among its codes when codes outnumber columns), red ticks under unused codes, and codes used /
    total, perplexity and positions written on top."""
    counts, used, perplexity = code_usage(indices, num_codes)
    if order == "count":
        counts = counts.sort(descending=True).values
    values = counts.double()
    if scale == "log":
        values = values.log1p()

    picture = PILImage.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    font = load_font(max(10, height // 18))
    title = (f"{used}/{num_codes} codes used   perplexity {perplexity:.1f}   "
             f"{indices.numel()} positions   max count {int(counts.max())}")
    draw.text((4, 2), title, fill=TEXT_COLOUR, font=font)
    top = int(draw.textbbox((4, 2), title, font=font)[3]) + 6
    margin, tick = 4, 3
    base = height - margin - tick - 1
    plot_w = width - 2 * margin
    if base - top < 8:
        raise ValueError(f"height {height} leaves no room for bars under the title; use a larger height")

    heights = column_values(values, plot_w)
    peak = float(values.max()) or 1.0
    bar_tops = (base - (heights / peak * (base - top)).round()).long().tolist()
    for x, (y, h) in enumerate(zip(bar_tops, heights.tolist(), strict=True)):
        if h > 0:
            draw.line([(margin + x, y), (margin + x, base)], fill=BAR_COLOUR)
        else:
            draw.line([(margin + x, base + 1), (margin + x, base + tick)], fill=UNUSED_COLOUR)
    array = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)
    return array[None].contiguous()
