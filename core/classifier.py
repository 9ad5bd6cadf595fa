"""A small image classifier: an evaluation extractor (its penultimate features) and the judge of text-to-image
accuracy (does a sample prompted with a held-out emoji's name land in that emoji's category?).

ImageClassifier is a diffusers-style model (ModelMixin + ConfigMixin), so it saves and loads like the other
models (config.json + safetensors, offline). It takes NCHW images in [0, 1].
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .dataset import ImageFolder, Split, mix_seed
from .train_loop import learning_rate, set_learning_rate


class ImageClassifier(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers' two config_name types
    r"""Conv net: per level two 3x3 convs (GroupNorm, SiLU) and a 2x downsample, then the spatial mean, a
    dropout and a linear layer over `classes`.

    Args:
        classes (`list[str]`): the class names, in logit order.
        block_channels (`tuple[int, ...]`, defaults to `(32, 64, 128)`): channels per level.
        dropout (`float`, defaults to 0.2): before the last layer, in training.
    """

    @register_to_config
    def __init__(self, classes: list[str] | tuple[str, ...] = ("a", "b"),
                 block_channels: tuple[int, ...] = (32, 64, 128), dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = 3
        for ch in block_channels:
            layers += [nn.Conv2d(last, ch, 3, padding=1), nn.GroupNorm(8, ch), nn.SiLU(),
                       nn.Conv2d(ch, ch, 3, padding=1), nn.GroupNorm(8, ch), nn.SiLU(), nn.AvgPool2d(2)]
            last = ch
        self.body = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(last, len(classes))

    @property
    def classes(self) -> list[str]:
        return list(self.config.classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, block_channels[-1]]: the spatial mean of the last level (what the linear layer reads)."""
        return self.body(images * 2 - 1).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(images)))


class ClassifierFeatures(nn.Module):
    """The classifier's penultimate features as a module (for ModuleFeatures)."""

    def __init__(self, classifier: ImageClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


@dataclass(frozen=True)
class ClassifierConfig:
    block_channels: tuple[int, ...] = (32, 64, 128)
    dropout: float = 0.2
    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0


def labelled_files(data: ImageFolder, split: Split) -> tuple[list[str], list[str]]:
    """(files, categories) of a split, only files that have a category."""
    names = [n for n in data.files(split) if n in data.categories]
    return names, [data.categories[n] for n in names]


def train_classifier(data: ImageFolder, config: ClassifierConfig,
                     on_step: Callable[[int, dict[str, float]], None] | None = None) -> tuple[ImageClassifier, dict]:
    """Train on the categories of the train split (captions.json), with flips and small shifts; class-balanced
    cross-entropy so the large People & Body group does not swamp the small ones. Returns the model (eval
    mode) and its held-out accuracy."""
    names, labels = labelled_files(data, "train")
    if not names:
        raise ValueError(f"no training image of {data.root} has a category: the classifier needs captions.json "
                         "(tools/emoji_captions.py writes it for the emoji set)")
    classes = sorted(set(labels))
    target = torch.tensor([classes.index(c) for c in labels])
    images = torch.stack([data.load(n) for n in names])
    counts = torch.bincount(target, minlength=len(classes)).float()
    weight = counts.sum() / (len(classes) * counts)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ImageClassifier(classes, config.block_channels, config.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    model.train()
    for step in range(config.steps):
        gen = torch.Generator().manual_seed(mix_seed(config.seed, step))
        pick = torch.randint(len(names), (config.batch_size,), generator=gen)
        batch = augment(images[pick], random.Random(mix_seed(config.seed, step, 1)))
        set_learning_rate(optimizer, learning_rate(config.learning_rate, step, 0, config.steps))  # cosine to 0
        loss = F.cross_entropy(model(batch), target[pick], weight=weight, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step + 1, {"loss": float(loss)})
    model.eval().requires_grad_(False)
    summary = {"train_images": len(names), "classes": classes, **evaluate_classifier(model, data, "heldout")}
    return model, summary


def augment(images: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Left-right flips and shifts of up to 2 pixels (edge-padded), per image."""
    out = []
    padded = F.pad(images, (2, 2, 2, 2), mode="replicate")
    side = images.shape[-1]
    for image in padded:
        dx, dy = rng.randint(0, 4), rng.randint(0, 4)
        crop = image[:, dy:dy + side, dx:dx + side]
        out.append(crop.flip(-1) if rng.random() < 0.5 else crop)
    return torch.stack(out)


@torch.no_grad()
def predict(model: ImageClassifier, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Class indices of NCHW images in [0, 1]."""
    param = next(model.parameters())
    return torch.cat([model(images[s:s + batch].to(param.device, param.dtype)).argmax(-1).cpu()
                      for s in range(0, len(images), batch)])


def accuracy_report(predicted: list[str], expected: list[str], classes: list[str]) -> dict[str, Any]:
    """Accuracy, class-balanced accuracy, chance (1 / classes) and the share of the most common class."""
    hits = [p == e for p, e in zip(predicted, expected, strict=True)]
    per_class = {c: [h for h, e in zip(hits, expected, strict=True) if e == c] for c in classes}
    seen = {c: sum(v) / len(v) for c, v in per_class.items() if v}
    majority = max(expected.count(c) for c in set(expected)) / len(expected)
    return {"accuracy": sum(hits) / len(hits), "balanced_accuracy": sum(seen.values()) / len(seen),
            "chance": 1 / len(classes), "majority_share": majority, "count": len(hits),
            "per_class": seen}


def evaluate_classifier(model: ImageClassifier, data: ImageFolder, split: Split) -> dict[str, Any]:
    names, labels = labelled_files(data, split)
    if not names:
        return {}
    images = torch.stack([data.load(n) for n in names])
    predicted = [model.classes[int(i)] for i in predict(model, images)]
    return {f"{split}_{k}": v for k, v in accuracy_report(predicted, labels, model.classes).items()}
