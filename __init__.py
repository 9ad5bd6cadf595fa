"""ComfyUI-GenArt: VQGAN + latent diffusion pipelines as typed nodes (ComfyUI entry point).

ComfyUI imports this file by path under the folder's name, beside its own top-level `nodes` module,
so every import of our own code here and below is relative.

Loaded that way (under any name but the package's own), the nodes are registered at once, as ComfyUI
expects. Imported as the package `comfyui_genart` (installed, or by `python -m graph.run`), they are
registered on first use of NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS or REGISTRY, so the library
`comfyui_genart.core` loads without the engine and the nodes. pytest may import this file alone, outside
any package (a checkout named custom_nodes/ComfyUI-GenArt): then nothing is registered.
"""
from typing import Any

# Frontend extension: shows the text nodes report (metrics tables, training summaries) on the node.
WEB_DIRECTORY = "./web"
PACKAGE = "comfyui_genart"
_REGISTERED = ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "REGISTRY")


def _register() -> None:
    from .graph.comfy import node_class_mappings
    from .nodes import REGISTRY

    mappings, display_names = node_class_mappings(REGISTRY)
    globals().update(NODE_CLASS_MAPPINGS=mappings, NODE_DISPLAY_NAME_MAPPINGS=display_names, REGISTRY=REGISTRY)


def __getattr__(name: str) -> Any:
    if name in _REGISTERED and __package__:
        _register()
        return globals()[name]
    if name == "run_workflow" and __package__:  # the one-call Python API (graph.api)
        from .graph.api import run_workflow

        return run_workflow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __package__ and __name__ != PACKAGE:
    _register()

__all__ = [*_REGISTERED, "WEB_DIRECTORY", "run_workflow"]
