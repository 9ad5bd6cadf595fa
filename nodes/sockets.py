"""The GENART_* socket types, declared once: annotate node fields and outputs with these.

A socket is a payload type from the library (`core/`) tagged with its ComfyUI type name, as ComfyUI's own
MODEL, VAE and CLIP sockets carry the library's ModelPatcher, VAE and CLIP objects.
"""
from __future__ import annotations

from typing import Annotated, Any

from ..core.attention_maps import AttentionRecord
from ..core.classifier import ImageClassifier
from ..core.dataset import ImageFolder
from ..core.defenses import DefenseTransform
from ..core.features import FeatureExtractor, FeatureSet
from ..core.handles import (
    AutoencoderHandle,
    CodeMap,
    Conditioning,
    DenoiserHandle,
    GANHandle,
    SchedulerHandle,
    TextEncoderHandle,
    VQModelHandle,
)
from ..core.image_sets import ImageSet
from ..core.measurements import MetricSet
from ..graph.types import Socket

VQModel = Annotated[VQModelHandle, Socket("GENART_VQMODEL")]
Autoencoder = Annotated[AutoencoderHandle, Socket("GENART_AUTOENCODER")]
Denoiser = Annotated[DenoiserHandle, Socket("GENART_DENOISER")]
GAN = Annotated[GANHandle, Socket("GENART_GAN")]
Scheduler = Annotated[SchedulerHandle, Socket("GENART_SCHEDULER")]
TextEncoder = Annotated[TextEncoderHandle, Socket("GENART_TEXT_ENCODER")]
ConditioningSocket = Annotated[Conditioning, Socket("GENART_CONDITIONING")]
Attention = Annotated[AttentionRecord, Socket("GENART_ATTENTION")]
Classifier = Annotated[ImageClassifier, Socket("GENART_CLASSIFIER")]
Codes = Annotated[CodeMap, Socket("GENART_CODES")]
ImageDataset = Annotated[ImageFolder, Socket("GENART_DATASET")]
Defense = Annotated[DefenseTransform, Socket("GENART_DEFENSE")]
Metrics = Annotated[MetricSet, Socket("GENART_METRICS")]
ImageSetSocket = Annotated[ImageSet, Socket("GENART_IMAGE_SET")]
FeatureExtractorSocket = Annotated[FeatureExtractor, Socket("GENART_FEATURES")]
FeatureSetSocket = Annotated[FeatureSet, Socket("GENART_FEATURE_SET")]

# ComfyUI's own model sockets. Inside ComfyUI they carry its ModelPatcher, CLIP, VAE and CONDITIONING list (read
# by core.comfy_bridge); headless, the stand-ins carry a core.ksampling.DiffusionModel, a TextEncoderHandle, an
# AutoencoderHandle and the same CONDITIONING list.
ComfyModel = Annotated[Any, Socket("MODEL")]
ComfyClip = Annotated[Any, Socket("CLIP")]
ComfyVAE = Annotated[Any, Socket("VAE")]
ComfyConditioning = Annotated[Any, Socket("CONDITIONING")]
