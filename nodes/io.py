"""Image input and output: load from the input folder, save (PNG with the workflow inside), preview."""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Any

import torch
from PIL import Image as PILImage
from pydantic import Field

from ..core.images import pil_to_tensor, tensor_to_pil
from ..graph.context import RunContext
from ..graph.node import FileInput, Node, NodeOutputs
from ..graph.pngmeta import png_bytes
from ..graph.safety import MAX_PIXELS, UnsafePathError, atomic_write, next_counter, output_prefix, ui_file
from ..graph.types import Image, Mask

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def save_images(images: torch.Tensor, folder_root: Path, prefix: str, ctx: RunContext, kind: str,
                embed_workflow: bool) -> list[dict[str, str]]:
    """Write each image as `<prefix>_<counter>_.png` (ComfyUI's naming) atomically, inside `folder_root`."""
    folder, stem = output_prefix(folder_root, prefix)
    counter = next_counter(folder, stem)
    texts: dict[str, Any] = {}
    if embed_workflow:
        if ctx.prompt is not None:
            texts["prompt"] = ctx.prompt
        if ctx.workflow is not None:
            texts["workflow"] = ctx.workflow
    saved = []
    for i, image in enumerate(images):
        path = folder / f"{stem}_{counter + i:05}_.png"
        atomic_write(path, png_bytes(tensor_to_pil(image), texts))
        saved.append(ui_file(folder_root, path, kind))
    return saved


def check_image_file(constants: dict[str, Any], ctx: RunContext, name: str = "image") -> list[tuple[str, str]]:
    """The file exists, is an image, and is within the pixel limit (its header is read, not its pixels)."""
    path = ctx.paths.resolve_input("input", constants[name])
    if not path.is_file():
        roots = ", ".join(str(r) for r in ctx.paths.roots("input"))
        return [(name, f"Invalid image file: {constants[name]!r} not found in {roots}")]
    try:
        with PILImage.open(path) as im:
            w, h = im.size
    except (OSError, ValueError) as err:
        return [(name, f"Invalid image file: {constants[name]!r} cannot be read as an image ({err})")]
    if w * h > MAX_PIXELS:
        return [(name, f"Image {constants[name]!r} is {w}x{h} = {w * h} pixels; the limit is {MAX_PIXELS}")]
    return []


def check_prefix(constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
    """Refuse at validation a filename_prefix that would write outside the output folder."""
    try:
        output_prefix(ctx.paths.output_dir, constants["filename_prefix"])
    except UnsafePathError as err:
        return [("filename_prefix", str(err))]
    return []


class LoadImage(Node):
    """Load an image from the input folder, with a mask from its alpha channel."""

    CLASS_TYPE = "GenArtLoadImage"
    CATEGORY = "GenArt/io"

    class Outputs(NodeOutputs):
        image: Image = Field(description="the image, [1, H, W, 3] float32 in [0, 1]")
        mask: Mask = Field(description="1 - alpha, [1, H, W] float32 in [0, 1]; zeros if the file has no alpha")

    image: Annotated[str, FileInput("input", IMAGE_EXTENSIONS, image_upload=True)] = Field(
        description="file name inside the input folder (subfolders allowed; no absolute paths or '..')")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return check_image_file(constants, ctx)

    def run(self, ctx: RunContext) -> Outputs:
        with PILImage.open(ctx.paths.resolve_input("input", self.image)) as im:
            image, mask = pil_to_tensor(im)
        return self.Outputs(image=image, mask=mask)


class SaveImage(Node):
    """Save images as PNG in the output folder, with the workflow embedded so the file can be re-run."""

    CLASS_TYPE = "GenArtSaveImage"
    CATEGORY = "GenArt/io"
    OUTPUT_NODE = True

    class Outputs(NodeOutputs):
        pass

    images: Image = Field(description="images to save, [B, H, W, C] float32 in [0, 1]")
    filename_prefix: str = Field("GenArt", description="file name prefix; may contain subfolders "
                                 "('runs/cat'); files are named <prefix>_<counter>_.png")
    embed_workflow: bool = Field(True, description="write the prompt and workflow into the PNG "
                                 "(tEXt chunks, as ComfyUI does) so the image re-runs its workflow")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return check_prefix(constants, ctx)

    def run(self, ctx: RunContext) -> Outputs:
        ctx.ui["images"] = save_images(self.images, ctx.paths.output_dir, self.filename_prefix, ctx, "output",
                                       self.embed_workflow)
        return self.Outputs()


class PreviewImage(Node):
    """Show images without keeping them: written to the temp folder (headless) or shown in ComfyUI."""

    CLASS_TYPE = "GenArtPreviewImage"
    CATEGORY = "GenArt/io"
    OUTPUT_NODE = True

    class Outputs(NodeOutputs):
        pass

    images: Image = Field(description="images to preview, [B, H, W, C] float32 in [0, 1]")

    def run(self, ctx: RunContext) -> Outputs:
        prefix = "GenArt_temp_" + secrets.token_hex(3)
        ctx.ui["images"] = save_images(self.images, ctx.paths.temp_dir, prefix, ctx, "temp", False)
        return self.Outputs()
