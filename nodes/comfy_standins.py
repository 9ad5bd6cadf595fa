"""Headless stand-ins for ComfyUI's own LoadImage, SaveImage and PreviewImage.

They take ComfyUI's class names and inputs so that workflows built in ComfyUI with its core image
nodes run headless. They are never registered inside ComfyUI, where the real ones exist.
"""
from __future__ import annotations

import secrets
from typing import Annotated, Any

from PIL import Image as PILImage
from pydantic import Field

from ..core.images import pil_to_tensor
from ..graph.context import RunContext
from ..graph.node import FileInput, Node, NodeOutputs
from ..graph.types import Image, Mask
from .io import IMAGE_EXTENSIONS, check_image_file, check_prefix, save_images


class ComfyLoadImage(Node):
    """Load Image (headless stand-in for ComfyUI's LoadImage)."""

    CLASS_TYPE = "LoadImage"
    CATEGORY = "image"
    DISPLAY_NAME = "Load Image"
    HEADLESS_ONLY = True

    class Outputs(NodeOutputs):
        IMAGE: Image = Field(description="the image, [1, H, W, 3] float32 in [0, 1]")
        MASK: Mask = Field(description="1 - alpha, [1, H, W]")

    image: Annotated[str, FileInput("input", IMAGE_EXTENSIONS, image_upload=True)] = Field(
        description="file name inside the input folder")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return check_image_file(constants, ctx)

    def run(self, ctx: RunContext) -> Outputs:
        with PILImage.open(ctx.paths.resolve_input("input", self.image)) as im:
            image, mask = pil_to_tensor(im)
        return self.Outputs(IMAGE=image, MASK=mask)


class ComfySaveImage(Node):
    """Save Image (headless stand-in for ComfyUI's SaveImage)."""

    CLASS_TYPE = "SaveImage"
    CATEGORY = "image"
    DISPLAY_NAME = "Save Image"
    OUTPUT_NODE = True
    HEADLESS_ONLY = True

    class Outputs(NodeOutputs):
        pass

    images: Image = Field(description="the images to save")
    filename_prefix: str = Field("ComfyUI", description="the prefix for the file to save")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return check_prefix(constants, ctx)

    def run(self, ctx: RunContext) -> Outputs:
        ctx.ui["images"] = save_images(self.images, ctx.paths.output_dir, self.filename_prefix, ctx, "output", True)
        return self.Outputs()


class ComfyPreviewImage(Node):
    """Preview Image (headless stand-in for ComfyUI's PreviewImage: writes to the temp folder)."""

    CLASS_TYPE = "PreviewImage"
    CATEGORY = "image"
    DISPLAY_NAME = "Preview Image"
    OUTPUT_NODE = True
    HEADLESS_ONLY = True

    class Outputs(NodeOutputs):
        pass

    images: Image = Field(description="the images to preview")

    def run(self, ctx: RunContext) -> Outputs:
        prefix = "ComfyUI_temp_" + secrets.token_hex(3)
        ctx.ui["images"] = save_images(self.images, ctx.paths.temp_dir, prefix, ctx, "temp", False)
        return self.Outputs()
