"""Visualizations: image grids (a decoded trajectory, a batch) and codebook usage histograms."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..core.images import image_grid
from ..core.plots import codebook_histogram
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs
from ..graph.safety import MAX_BATCH, MAX_PIXELS
from ..graph.types import Image, check_image
from .sockets import Codes


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
        return self.Outputs(image=image_grid(images, self.columns, self.padding, self.background, MAX_PIXELS))


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
        chart = codebook_histogram(self.codes.indices, self.codes.num_codes, self.width, self.height, self.order,
                                   self.scale)
        return self.Outputs(image=chart)
