"""The node library, one module per stage. REGISTRY holds every node class, checked at import."""
from ..graph.registry import Registry
from . import (
    comfy_standins,
    conditioning,
    decode,
    denoise,
    encode,
    image,
    io,
    models,
    noise,
    quantize,
    sample,
    visualize,
)

REGISTRY = Registry()
REGISTRY.register_modules([io, image, models, encode, quantize, decode, noise, conditioning, denoise, sample,
                           visualize, comfy_standins])
