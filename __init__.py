"""ComfyUI-GenArt: VQGAN + latent diffusion pipelines as typed nodes (ComfyUI entry point).

ComfyUI imports this file by path under the folder's name, beside its own top-level `nodes` module,
so every import of our own code here and below is relative.
"""
# Frontend extension: shows the text nodes report (metrics tables, training summaries) on the node.
WEB_DIRECTORY = "./web"

# pytest imports this file on its own, outside any package, when the checkout's folder name is not an
# identifier (custom_nodes/ComfyUI-GenArt); relative imports need the package that every real load gives.
if __package__:
    from .graph.comfy import node_class_mappings
    from .nodes import REGISTRY

    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_class_mappings(REGISTRY)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "REGISTRY", "WEB_DIRECTORY"]
