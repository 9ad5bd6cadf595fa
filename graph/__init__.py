"""The GenArt engine: typed nodes, workflow formats, validation, cache, executor and CLI.

It knows nothing about VQGAN or diffusion; the node library lives in the sibling package `nodes`.
Import from the submodules (`from ..graph.node import Node`): keeping this file empty means
`python -m graph.run` does not load a second copy of the engine before handing over.
"""
