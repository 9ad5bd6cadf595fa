"""Feature extractors (an image batch to one vector per image) and the feature sets they make of image sets.

Generative metrics compare distributions in a fixed feature space: the FID Inception network's pool3
features (comparable to published FIDs when the standard weights file is used), or the project's own VQ
encoder (no download needed; what the model card uses). Features are float64 for the statistics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .image_sets import ImageSet, Progress


class FeatureExtractor:
    """NCHW float images in [0, 1] -> [N, dim] float64. Socket GENART_FEATURES. `name` goes into metric
    labels and, with `key`, identifies the feature space."""

    name: str
    dim: int
    batch: int = 128

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class VQEncoderFeatures(FeatureExtractor):
    """The VQ encoder's mid-block output, mean and standard deviation over space per channel: a small
    feature space of the project's own model, with no download."""

    def __init__(self, vq: Any, name: str) -> None:
        self.vq = vq
        self.dim = 2 * int(vq.encoder.mid_block.resnets[-1].out_channels)
        self.name = f"VQ encoder {name} ({self.dim}-d)"

    @property
    def device(self) -> torch.device:
        return next(self.vq.parameters()).device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        grabbed: list[torch.Tensor] = []
        hook = self.vq.encoder.mid_block.register_forward_hook(lambda _m, _i, out: grabbed.append(out))
        try:
            param = next(self.vq.parameters())
            self.vq.encode(images.to(device=param.device, dtype=param.dtype) * 2 - 1)
        finally:
            hook.remove()
        h = grabbed[0].flatten(2).double()
        return torch.cat([h.mean(2), h.std(2)], dim=1)


class ModuleFeatures(FeatureExtractor):
    """Any module mapping NCHW images in [0, 1] to [N, dim] (the FID Inception network, a classifier's
    penultimate layer)."""

    def __init__(self, module: torch.nn.Module, name: str, dim: int, batch: int = 64) -> None:
        self.module, self.name, self.dim, self.batch = module, name, dim, batch

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        param = next(self.module.parameters())
        return self.module(images.to(device=param.device, dtype=param.dtype)).double()


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Features of every image of an image set. Socket GENART_FEATURE_SET.

    `label` names the set and its size, `extractor` the feature space; metrics refuse to compare sets of
    different spaces.
    """

    features: torch.Tensor  # [N, dim] float64, on the CPU
    label: str
    extractor: str

    @property
    def count(self) -> int:
        return int(self.features.shape[0])

    def to_cache(self) -> dict[str, Any]:
        return {"features": self.features, "label": self.label, "extractor": self.extractor}

    @classmethod
    def from_cache(cls, data: dict[str, Any]) -> FeatureSet:
        return cls(data["features"], str(data["label"]), str(data["extractor"]))


def extract_features(extractor: FeatureExtractor, images: ImageSet,
                     on_items: Progress | None = None) -> FeatureSet:
    """Features of every image of `images`, chunk by chunk (in the extractor's batch size)."""
    out = []
    for chunk in images.chunks():
        for start in range(0, len(chunk), extractor.batch):
            out.append(extractor(chunk[start:start + extractor.batch]).cpu())
        if on_items is not None:
            on_items(len(chunk))
    features = torch.cat(out) if out else torch.zeros(0, extractor.dim, dtype=torch.float64)
    return FeatureSet(features, images.label, extractor.name)


def same_space(a: FeatureSet, b: FeatureSet, names: tuple[str, str]) -> None:
    if a.extractor != b.extractor:
        raise ValueError(f"inputs {names[0]!r} and {names[1]!r} hold features of different extractors "
                         f"({a.extractor!r} and {b.extractor!r}); extract both with the same one")


