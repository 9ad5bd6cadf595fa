"""Visualizations: image grids (a decoded trajectory, a batch) and codebook usage histograms."""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from pydantic import Field

from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs
from ..graph.safety import MAX_BATCH, MAX_PIXELS
from ..graph.types import Image, check_image
from .handles import Codes
from .quantize import code_usage

BAR_COLOUR = (40, 90, 170)
UNUSED_COLOUR = (210, 50, 40)
TEXT_COLOUR = (20, 20, 20)


class ImageGrid(Node):
    """Lay out an image batch as one grid image, row by row (a decoded trajectory: columns = snapshots per item)."""

    CLASS_TYPE = "GenArtImageGrid"
    CATEGORY = "GenArt/visualize"

    class Outputs(NodeOutputs):
        image: Image = Field(description="the grid, [1, rows * (H + padding) + padding, "
                             "cols * (W + padding) + padding, C] float32 in [0, 1], rows = ceil(B / cols)")

    images: Image = Field(description="images, [B, H, W, C] float32 in [0, 1], placed left to right, then top to "
                          "bottom. A decoded trajectory is item-major (K snapshots of item 0, then of item 1, ...), "
                          "so columns = K gives one row per item")
    columns: int = Field(4, ge=1, le=MAX_BATCH, description="images per row (cols); fewer when the batch is smaller")
    padding: int = Field(2, ge=0, le=256, description="pixels between cells and around the grid")
    background: float = Field(1.0, ge=0.0, le=1.0, description="grey level of the padding and empty cells, in [0, 1]")

    def run(self, ctx: RunContext) -> Outputs:
        images = check_image(self.images, "images")
        b, h, w, c = images.shape
        cols = min(self.columns, b)
        rows = math.ceil(b / cols)
        pad = self.padding
        grid_h, grid_w = rows * (h + pad) + pad, cols * (w + pad) + pad
        if grid_h * grid_w > MAX_PIXELS:
            raise ValueError(f"the grid would be {grid_w}x{grid_h} = {grid_w * grid_h} pixels, over the limit of "
                             f"{MAX_PIXELS}; use fewer images (GenArt Select Images) or smaller ones")
        grid = torch.full((1, grid_h, grid_w, c), self.background, dtype=images.dtype, device=images.device)
        for i in range(b):
            y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
            grid[0, y:y + h, x:x + w] = images[i]
        return self.Outputs(image=grid)


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


class CodebookHistogram(Node):
    """Draw how often each codebook entry is used, with codes used / total and perplexity written on the chart."""

    CLASS_TYPE = "GenArtCodebookHistogram"
    CATEGORY = "GenArt/visualize"

    class Outputs(NodeOutputs):
        image: Image = Field(description="bar chart, [1, height, width, 3] float32 in [0, 1]: one bar per code (a "
                             "pixel column shows the largest count among its codes when codes outnumber columns), "
                             "red ticks under codes never used")

    codes: Codes = Field(description="codebook indices, int64 [B, h, w] (GenArt Quantize Latent); counted over the "
                         "whole batch")
    order: Literal["index", "count"] = Field("index", description="bars by code index, or sorted by count, most "
                                             "used first")
    scale: Literal["linear", "log"] = Field("linear", description="bar height proportional to the count, or to "
                                            "log(1 + count)")
    width: int = Field(512, ge=64, le=4096, description="image width in pixels")
    height: int = Field(256, ge=64, le=4096, description="image height in pixels")

    def run(self, ctx: RunContext) -> Outputs:
        codes = self.codes
        counts, used, perplexity = code_usage(codes.indices, codes.num_codes)
        if self.order == "count":
            counts = counts.sort(descending=True).values
        values = counts.double()
        if self.scale == "log":
            values = values.log1p()

        picture = PILImage.new("RGB", (self.width, self.height), (255, 255, 255))
        draw = ImageDraw.Draw(picture)
        font = load_font(max(10, self.height // 18))
        title = (f"{used}/{codes.num_codes} codes used   perplexity {perplexity:.1f}   "
                 f"{codes.indices.numel()} positions   max count {int(counts.max())}")
        draw.text((4, 2), title, fill=TEXT_COLOUR, font=font)
        top = int(draw.textbbox((4, 2), title, font=font)[3]) + 6
        margin, tick = 4, 3
        base = self.height - margin - tick - 1
        plot_w = self.width - 2 * margin
        if base - top < 8:
            raise ValueError(f"height {self.height} leaves no room for bars under the title; use a larger height")

        heights = column_values(values, plot_w)
        peak = float(values.max()) or 1.0
        bar_tops = (base - (heights / peak * (base - top)).round()).long().tolist()
        for x, (y, h) in enumerate(zip(bar_tops, heights.tolist(), strict=True)):
            if h > 0:
                draw.line([(margin + x, y), (margin + x, base)], fill=BAR_COLOUR)
            else:
                draw.line([(margin + x, base + 1), (margin + x, base + tick)], fill=UNUSED_COLOUR)
        array = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)
        return self.Outputs(image=array[None].contiguous())
