"""Image utilities later stages need: a test pattern, resize, crop, batch."""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..core.images import pattern_images
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs
from ..graph.safety import MAX_BATCH, MAX_PIXELS, MAX_RESOLUTION
from ..graph.types import Image, image_to_nchw, nchw_to_image


def pixel_budget(constants: dict[str, Any], batch_key: str | None = None) -> list[tuple[str, str]]:
    w, h = constants.get("width", 0), constants.get("height", 0)
    batch = constants.get(batch_key, 1) if batch_key else 1
    if w * h > MAX_PIXELS:
        return [("width", f"{w}x{h} = {w * h} pixels exceeds the limit of {MAX_PIXELS} per image")]
    if batch_key and w * h * batch > MAX_PIXELS * 4:
        return [(batch_key, f"{batch} images of {w}x{h} exceed the limit of {MAX_PIXELS * 4} pixels per batch")]
    return []


class PatternImage(Node):
    """Make a synthetic image batch (gradient, checkerboard or solid colour) for tests and demos."""

    CLASS_TYPE = "GenArtPatternImage"
    CATEGORY = "GenArt/image"

    class Outputs(NodeOutputs):
        image: Image = Field(description="the pattern, [B, H, W, 3] float32 in [0, 1]")

    pattern: Literal["gradient", "checkerboard", "solid"] = Field("gradient", description="what to draw")
    width: int = Field(64, ge=1, le=MAX_RESOLUTION, description="width in pixels")
    height: int = Field(64, ge=1, le=MAX_RESOLUTION, description="height in pixels")
    batch_size: int = Field(1, ge=1, le=MAX_BATCH, description="number of images; item i is shifted by i")
    cell: int = Field(8, ge=1, le=MAX_RESOLUTION, description="checkerboard cell size in pixels")
    red: float = Field(0.8, ge=0.0, le=1.0, description="colour for 'solid' and the light cells, red in [0, 1]")
    green: float = Field(0.4, ge=0.0, le=1.0, description="green in [0, 1]")
    blue: float = Field(0.2, ge=0.0, le=1.0, description="blue in [0, 1]")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return pixel_budget(constants, "batch_size")

    def run(self, ctx: RunContext) -> Outputs:
        images = pattern_images(self.pattern, self.batch_size, self.width, self.height, self.cell,
                                (self.red, self.green, self.blue))
        return self.Outputs(image=images)


class ResizeImage(Node):
    """Resize an image batch to a width and height (antialiased when shrinking)."""

    CLASS_TYPE = "GenArtResizeImage"
    CATEGORY = "GenArt/image"

    class Outputs(NodeOutputs):
        image: Image = Field(description="resized images, [B, height, width, C] float32 in [0, 1]")

    image: Image = Field(description="images, [B, H, W, C] float32 in [0, 1]")
    width: int = Field(512, ge=1, le=MAX_RESOLUTION, description="target width in pixels")
    height: int = Field(512, ge=1, le=MAX_RESOLUTION, description="target height in pixels")
    method: Literal["bilinear", "bicubic", "nearest", "area"] = Field("bicubic", description="interpolation")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return pixel_budget(constants)

    def run(self, ctx: RunContext) -> Outputs:
        x = image_to_nchw(self.image, "image")
        size = (self.height, self.width)
        if self.method in ("bilinear", "bicubic"):
            y = F.interpolate(x, size=size, mode=self.method, align_corners=False, antialias=True)
        else:
            y = F.interpolate(x, size=size, mode="nearest-exact" if self.method == "nearest" else "area")
        # Bicubic overshoots; IMAGE is defined on [0, 1].
        return self.Outputs(image=nchw_to_image(y.clamp(0, 1)))


class CropImage(Node):
    """Cut a rectangle out of every image in a batch."""

    CLASS_TYPE = "GenArtCropImage"
    CATEGORY = "GenArt/image"

    class Outputs(NodeOutputs):
        image: Image = Field(description="cropped images, [B, height, width, C] float32 in [0, 1]")

    image: Image = Field(description="images, [B, H, W, C] float32 in [0, 1]")
    x: int = Field(0, ge=0, le=MAX_RESOLUTION, description="left edge in pixels")
    y: int = Field(0, ge=0, le=MAX_RESOLUTION, description="top edge in pixels")
    width: int = Field(256, ge=1, le=MAX_RESOLUTION, description="crop width in pixels")
    height: int = Field(256, ge=1, le=MAX_RESOLUTION, description="crop height in pixels")

    def run(self, ctx: RunContext) -> Outputs:
        _, h, w, _ = self.image.shape
        if self.x + self.width > w or self.y + self.height > h:
            raise ValueError(
                f"crop x={self.x}, y={self.y}, {self.width}x{self.height} does not fit the {w}x{h} image; "
                f"the largest crop at that corner is {w - self.x}x{h - self.y}")
        crop = self.image[:, self.y:self.y + self.height, self.x:self.x + self.width, :]
        return self.Outputs(image=crop.contiguous())


class BatchImages(Node):
    """Join image batches of the same size into one batch (two to six of them, in input order)."""

    CLASS_TYPE = "GenArtBatchImages"
    CATEGORY = "GenArt/image"

    class Outputs(NodeOutputs):
        image: Image = Field(description="image_a, image_b, then the optional ones given, [Ba + Bb + ..., H, W, C]")

    image_a: Image = Field(description="first batch, [Ba, H, W, C] float32 in [0, 1]")
    image_b: Image = Field(description="second batch, [Bb, H, W, C], same H, W, C as image_a")
    image_c: Image | None = Field(None, description="optional third batch, same H, W, C")
    image_d: Image | None = Field(None, description="optional fourth batch, same H, W, C")
    image_e: Image | None = Field(None, description="optional fifth batch, same H, W, C")
    image_f: Image | None = Field(None, description="optional sixth batch, same H, W, C")

    def run(self, ctx: RunContext) -> Outputs:
        first = self.image_a
        given = {"image_b": self.image_b, "image_c": self.image_c, "image_d": self.image_d,
                 "image_e": self.image_e, "image_f": self.image_f}
        batches = [first]
        for name, image in given.items():
            if image is None:
                continue
            if image.shape[1:] != first.shape[1:]:
                raise ValueError(
                    f"{name} is {tuple(image.shape[1:])} (H, W, C) but image_a is {tuple(first.shape[1:])}; "
                    "resize one of them first (GenArt Resize Image)")
            batches.append(image.to(first.device))
        return self.Outputs(image=torch.cat(batches))


class SelectImages(Node):
    """Take a run of images out of a batch."""

    CLASS_TYPE = "GenArtSelectImages"
    CATEGORY = "GenArt/image"

    class Outputs(NodeOutputs):
        image: Image = Field(description="images start .. start+length-1, [length, H, W, C]")

    image: Image = Field(description="images, [B, H, W, C] float32 in [0, 1]")
    start: int = Field(0, ge=0, le=MAX_BATCH - 1, description="index of the first image to take")
    length: int = Field(1, ge=1, le=MAX_BATCH, description="how many images to take")

    def run(self, ctx: RunContext) -> Outputs:
        b = self.image.shape[0]
        if self.start + self.length > b:
            raise ValueError(f"start={self.start}, length={self.length} reaches past the batch of {b} images")
        return self.Outputs(image=self.image[self.start:self.start + self.length].contiguous())
