"""Classification as evaluation: a trained image classifier judges what a set of images shows (its own
held-out accuracy on a dataset split; text-to-image accuracy on samples prompted with held-out names), and
its penultimate layer is a feature extractor for the distribution metrics."""
from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from ..core.classifier import ClassifierFeatures, ImageClassifier, accuracy_report, predict
from ..core.features import ModuleFeatures
from ..core.formats.diffusers_folders import find_model, load_model
from ..core.image_sets import PromptedImages
from ..core.measurements import Measurement, MetricSet
from ..graph.context import RunContext
from ..graph.node import Node, NodeOutputs, Widget
from ..graph.safety import MAX_BATCH
from ..graph.types import FloatSocket, StringSocket
from .evaluate import MAX_SET
from .models import (
    DEVICE_HELP,
    MODEL_HELP,
    DeviceChoice,
    _model_file,
    model_file_problems,
    model_path,
    resolve_device,
)
from .sockets import (
    Classifier,
    Denoiser,
    FeatureExtractorSocket,
    ImageDataset,
    ImageSetSocket,
    Metrics,
    Scheduler,
    TextEncoder,
    VQModel,
)

CLASSIFIER_CLASSES = ("ImageClassifier",)


class LoadClassifier(Node):
    """Load an image classifier (GenArt's ImageClassifier, e.g. the shipped genart-emoji32-groups that tells
    the nine Unicode emoji groups apart)."""

    CLASS_TYPE = "GenArtLoadClassifier"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        classifier: Classifier = Field(description="the classifier, frozen, in eval mode")
        features: FeatureExtractorSocket = Field(description="its penultimate layer as a feature extractor")

    model_name: Annotated[str, _model_file("classifiers")] = Field(
        "genart-emoji32-groups", description=MODEL_HELP.format(kind="classifiers"))
    device: DeviceChoice = Field("auto", description=DEVICE_HELP)

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return model_file_problems(constants, ctx, "classifiers", CLASSIFIER_CLASSES, cls.CLASS_TYPE)

    def run(self, ctx: RunContext) -> Outputs:
        path = model_path(ctx, "classifiers", self.model_name, "model_name")
        source = find_model(path, self.model_name, "model_name", CLASSIFIER_CLASSES, self.CLASS_TYPE)
        model: ImageClassifier = load_model(source, self.model_name, resolve_device(self.device, ctx),
                                            torch.float32)
        dim = int(model.config.block_channels[-1])
        features = ModuleFeatures(ClassifierFeatures(model), f"classifier {self.model_name} ({dim}-d)", dim)
        return self.Outputs(classifier=model, features=features)


class PromptedImageSet(Node):
    """Samples of a text-conditioned denoiser, one per image of a dataset split, each prompted with one of that
    image's captions (captions.json): the set a text-to-image accuracy or a conditional FD is measured on. Its
    items carry the prompting image's category."""

    CLASS_TYPE = "GenArtPromptedImageSet"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        image_set: ImageSetSocket = Field(description="the samples, made when read, labelled with categories")
        prompts: StringSocket = Field(description="the prompt of each sample, one per line")

    denoiser: Denoiser = Field(description="a text-conditioned denoiser (UNet2DConditionModel)")
    scheduler: Scheduler = Field(description="the sampler's scheduler")
    text_encoder: TextEncoder = Field(description="the text encoder the denoiser was trained with")
    vqmodel: VQModel = Field(description="the VQ autoencoder that decodes the latents")
    dataset: ImageDataset = Field(description="the dataset whose captions give the prompts (GenArt Load Image "
                                  "Folder; needs captions.json)")
    split: Literal["train", "heldout"] = Field("heldout", description="whose captions: held-out names were never "
                                               "seen in training")
    caption: int = Field(0, ge=0, le=15, description="which of each image's captions (0 = the bare name)")
    count: int = Field(0, ge=0, le=MAX_SET, description="0 = one sample per image of the split; otherwise the "
                       "first this many")
    steps: int = Field(25, ge=1, le=1000, description="denoising steps per sample")
    cfg: Annotated[float, Widget(step=0.1)] = Field(4.0, ge=0.0, le=100.0, description="classifier-free guidance "
                                                    "scale (negative prompt empty)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="noise seed (sample i the same whatever the batch)")
    batch: int = Field(64, ge=1, le=MAX_BATCH, description="samples made at once")

    def run(self, ctx: RunContext) -> Outputs:
        if not self.denoiser.conditional:
            raise ValueError("input 'denoiser' is unconditional; Prompted Image Set needs a text-conditioned one "
                             "(use GenArt Sample Image Set for unconditional samples)")
        data = self.dataset
        names = [n for n in data.files(self.split) if n in data.captions]
        if not names:
            raise ValueError(f"no image of the {self.split} split of {data.root.name!r} has captions: put "
                             "captions.json beside the images (tools/emoji_captions.py writes it)")
        if self.count:
            names = names[:self.count]
        prompts = tuple(data.captions[n][min(self.caption, len(data.captions[n]) - 1)] for n in names)
        labels = tuple(data.categories[n] for n in names) if all(n in data.categories for n in names) else None
        config = self.denoiser.model.config
        size = config.sample_size
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        label = (f"{self.denoiser.source or 'denoiser'} prompted with {data.root.name} {self.split} names "
                 f"({len(prompts)}, cfg {self.cfg:g}, {self.steps} steps, seed {self.seed})")
        images = PromptedImages(self.denoiser, self.scheduler, self.vqmodel.model, self.text_encoder, prompts,
                                self.steps, self.cfg, self.seed, (int(config.in_channels), h, w), label, labels,
                                self.batch)
        return self.Outputs(image_set=images, prompts="\n".join(prompts))


class ClassifierAccuracy(Node):
    """How often a classifier puts the images of a set in their own category: on a dataset split, the
    classifier's accuracy; on prompted samples, text-to-image accuracy. Reports chance (1 / classes) and the
    largest category's share beside it, and the accuracy averaged over categories."""

    CLASS_TYPE = "GenArtClassifierAccuracy"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        metrics: Metrics = Field(description="accuracy, balanced_accuracy, chance, majority_share and one "
                                 "accuracy per category")
        accuracy: FloatSocket = Field(description="the fraction classified as their category")

    classifier: Classifier = Field(description="from GenArt Load Classifier")
    image_set: ImageSetSocket = Field(description="images with categories (a dataset split with captions.json, or "
                                      "GenArt Prompted Image Set)")
    label: str = Field("", description="row label in the report (the set's own label when empty)")

    def run(self, ctx: RunContext) -> Outputs:
        images = self.image_set
        if images.labels is None:
            raise ValueError(f"input 'image_set' ({images.label}) has no categories to compare with: use a dataset "
                             "split with captions.json or GenArt Prompted Image Set")
        classes = self.classifier.classes
        unknown = sorted(set(images.labels) - set(classes))
        if unknown:
            raise ValueError(f"input 'image_set' has categories the classifier does not know: {', '.join(unknown)}")
        predicted: list[str] = []
        with ctx.progress(images.count) as bar:
            for chunk in images.chunks(bar.update):
                predicted += [classes[int(i)] for i in predict(self.classifier, chunk)]
        report = accuracy_report(predicted, list(images.labels), classes)
        row = self.label or images.label
        ms = [Measurement(k, float(report[k]), (float(report[k]),), row)
              for k in ("accuracy", "balanced_accuracy", "chance", "majority_share")]
        ms += [Measurement(f"accuracy {c}", v, (v,), row) for c, v in sorted(report["per_class"].items())]
        return self.Outputs(metrics=MetricSet(tuple(ms)), accuracy=report["accuracy"])
