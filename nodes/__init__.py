"""The node library, one module per stage. REGISTRY holds every node class, checked at import."""
from ..graph.registry import Registry
from . import (
    attack,
    attention,
    classify,
    comfy_bridge,
    comfy_standins,
    conditioning,
    decode,
    defense,
    denoise,
    encode,
    evaluate,
    gan,
    image,
    io,
    metrics,
    models,
    noise,
    quantize,
    sample,
    train,
    visualize,
)

REGISTRY = Registry()
REGISTRY.register_modules([io, image, models, encode, quantize, decode, noise, conditioning, denoise, sample,
                           gan, visualize, attention, attack, defense, metrics, evaluate, classify, train,
                           comfy_bridge, comfy_standins])
