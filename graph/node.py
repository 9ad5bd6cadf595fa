"""The node model: a pydantic class whose fields are inputs and whose `run(ctx)` returns its outputs.

    class ResizeImage(Node):
        '''Resize an image batch to a given size.'''
        CLASS_TYPE = "GenArtResizeImage"
        CATEGORY = "GenArt/image"

        class Outputs(NodeOutputs):
            image: Image = Field(description="resized image, [B, H, W, C] float32 in [0, 1]")

        image: Image = Field(description="input image, [B, H, W, C] float32 in [0, 1]")
        width: int = Field(512, ge=8, le=MAX_RESOLUTION, description="target width in pixels")

        def run(self, ctx: RunContext) -> Outputs: ...

One declaration gives constant validation, the ComfyUI V1 contract (graph.comfy), and the JSON
schema shown by `--list-nodes`. `graph.spec` turns the fields into `NodeSpec` once, at registration.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from .context import RunContext
    from .spec import NodeSpec


@dataclass(frozen=True)
class FileInput:
    """Marks a string field as a file name resolved inside an allowed root.

    `folder` names the root: "input" (the input directory) or "models/<kind>" (a models folder).
    The engine fingerprints the file (size + mtime; every file inside for a folder) for the cache
    key and refuses paths that leave the root; inside ComfyUI the widget becomes a list of the files
    in that folder.
    """

    folder: str = "input"
    extensions: tuple[str, ...] = ()
    image_upload: bool = False
    # Also offer model folders (diffusers layout: a folder with config.json and weights).
    folders: bool = False
    # Inside ComfyUI: a list of what is there (a combo), or False for a typed name (a text widget: a
    # dataset folder, whose files would swamp the list). Either way the engine fingerprints and confines it.
    listed: bool = True


@dataclass(frozen=True)
class Widget:
    """Extra widget options for ComfyUI that pydantic has no keyword for."""

    step: float | None = None
    multiline: bool = False
    force_input: bool = False
    control_after_generate: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class NodeOutputs(BaseModel):
    """Base of a node's outputs model: its fields, in order, are the node's outputs."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")


class Node(BaseModel):
    """Base class of every node. Subclasses declare inputs as fields and implement `run`."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    CLASS_TYPE: ClassVar[str]
    CATEGORY: ClassVar[str]
    DISPLAY_NAME: ClassVar[str | None] = None
    # Bump when behaviour changes: it is part of the cache key and of the saved workflow's meaning.
    VERSION: ClassVar[int] = 1
    OUTPUT_NODE: ClassVar[bool] = False
    # Random without a seed: never cached, and everything downstream re-runs.
    CACHEABLE: ClassVar[bool] = True
    # Attacks and training need autograd; everything else runs under torch.inference_mode().
    NEEDS_GRAD: ClassVar[bool] = False
    # Expensive and serializable: saved to the persistent --cache-dir when one is given.
    PERSIST_OUTPUTS: ClassVar[bool] = False
    # Only offered headless: never registered inside ComfyUI (stand-ins for ComfyUI's own nodes).
    HEADLESS_ONLY: ClassVar[bool] = False

    Outputs: ClassVar[type[NodeOutputs]]
    spec: ClassVar[NodeSpec]

    def run(self, ctx: RunContext) -> NodeOutputs:
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        """Checks across inputs or against files, run at validation time on the constant inputs.

        Returns (input_name, message) pairs; an empty list means valid. Override where a node has
        such rules (a pixel budget, a file that must exist).
        """
        return []
