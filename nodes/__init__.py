"""The node library, one module per stage. REGISTRY holds every node class, checked at import."""
from ..graph.registry import Registry
from . import comfy_standins, image, io

REGISTRY = Registry()
REGISTRY.register_modules([io, image, comfy_standins])
