"""Evaluation against real data: image sets, feature extractors, and the distribution metrics papers report
(Frechet distance / FID, KID, precision, recall, density, coverage) plus a memorization check.

Image sets stream (a dataset split read from disk, samples made chunk by chunk), so 10,000 images never sit
in one tensor. GenArt Extract Features keeps its result in the run cache and in --cache-dir: a dataset
split's features are computed once per (files, extractor, resolution) and reused.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from ..core.distribution_metrics import (
    frechet_distance,
    kernel_distance,
    nearest_neighbours,
    precision_recall_density_coverage,
)
from ..core.features import FeatureSet, ModuleFeatures, VQEncoderFeatures, extract_features, same_space
from ..core.formats.common import ModelLoadError
from ..core.gan_models import NoiseKind
from ..core.gan_sampling import NoiseSettings, block_strengths
from ..core.image_sets import GANImages, ImageSet, RandomCodeImages, SampledImages, TensorImages, dataset_images
from ..core.images import image_grid
from ..core.inception import INCEPTION_FILE, load_fid_inception
from ..core.measurements import Measurement, MetricSet, measured
from ..core.vqgan_trainer import measure_reconstructions
from ..graph.cache import register_cache_type
from ..graph.context import RunContext
from ..graph.node import FileInput, Node, NodeOutputs
from ..graph.safety import MAX_BATCH, MAX_PIXELS, MAX_RESOLUTION, UnsafePathError
from ..graph.types import FloatSocket, Image, IntSocket, check_image, image_to_nchw, nchw_to_image
from .gan import block_strength_problems
from .models import DEVICE_HELP, DeviceChoice, device_problems, model_path, resolve_device
from .sockets import (
    GAN,
    Autoencoder,
    Denoiser,
    FeatureExtractorSocket,
    FeatureSetSocket,
    ImageDataset,
    ImageSetSocket,
    Metrics,
    Scheduler,
    VQModel,
)

register_cache_type(FeatureSet)

# Sets of generated images may be large; each costs sampling time, so a generous but finite bound.
MAX_SET = 100_000
LABEL_HELP = "prefix of the measurement's row in the report; the sets' sizes and the extractor are always added"


def _row(label: str, real: FeatureSet, generated: FeatureSet) -> str:
    text = f"{generated.label} vs {real.label} [{real.extractor}]"
    return f"{label}: {text}" if label else text


def _one(metric: str, value: float, row: str) -> Measurement:
    return Measurement(metric, value, (value,), row)


# --- image sets ---------------------------------------------------------------------------------------------

class DatasetImageSet(Node):
    """A dataset split as an image set, read from disk as it is used (center crop, no flip)."""

    CLASS_TYPE = "GenArtDatasetImageSet"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        image_set: ImageSetSocket = Field(description="the split's images (or the random subset)")
        count: IntSocket = Field(description="images in the set")

    dataset: ImageDataset = Field(description="the dataset (GenArt Load Image Folder)")
    split: Literal["train", "heldout"] = Field("heldout", description="which split")
    count: int = Field(0, ge=0, le=MAX_SET, description="0 = every image of the split in file order; otherwise a "
                       "random subset of this many (the same for the same seed)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the random subset")

    def run(self, ctx: RunContext) -> Outputs:
        images = dataset_images(self.dataset, self.split, self.count, self.seed, self.dataset.root.name)
        return self.Outputs(image_set=images, count=images.count)


class ImageBatchSet(Node):
    """An IMAGE batch as an image set (to measure images made elsewhere in the graph, or loaded)."""

    CLASS_TYPE = "GenArtImageBatchSet"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        image_set: ImageSetSocket = Field(description="the images as a set")

    image: Image = Field(description="images, [B, H, W, C] float32 in [0, 1]")
    label: str = Field("images", description="name of the set in metric labels (its size is added)")

    def run(self, ctx: RunContext) -> Outputs:
        check_image(self.image, "image")
        images = image_to_nchw(self.image.float(), "image")
        return self.Outputs(image_set=TensorImages(images, f"{self.label} ({images.shape[0]})"))


class SampleImageSet(Node):
    """Samples of an unconditional denoiser, decoded: made chunk by chunk as the set is read (with a progress
    bar through Extract Features), so thousands never sit in memory at once."""

    CLASS_TYPE = "GenArtSampleImageSet"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        image_set: ImageSetSocket = Field(description="the samples, made when read")

    denoiser: Denoiser = Field(description="an unconditional denoiser (UNet2DModel)")
    scheduler: Scheduler = Field(description="the sampler's scheduler (GenArt Load Scheduler)")
    count: int = Field(332, ge=1, le=MAX_SET, description="samples in the set")
    steps: int = Field(50, ge=1, le=1000, description="denoising steps per sample")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="noise seed: one generator draws every sample's noise "
                      "in order, so sample i is the same whatever the batch")
    batch: int = Field(64, ge=1, le=MAX_BATCH, description="samples made at once")
    vqmodel: VQModel | None = Field(None, description="decode with this VQ autoencoder (snapped to its codebook)")
    autoencoder: Autoencoder | None = Field(None, description="or with this KL autoencoder")

    def run(self, ctx: RunContext) -> Outputs:
        if (self.vqmodel is None) == (self.autoencoder is None):
            raise ValueError("connect exactly one of 'vqmodel' and 'autoencoder': the model that decodes the "
                             "denoiser's latents")
        if self.denoiser.conditional:
            raise ValueError("this denoiser is text-conditioned; Sample Image Set draws unconditional samples "
                             "only (sample with GenArt Sample Latent and use GenArt Image Batch Set)")
        config = self.denoiser.model.config
        size = config.sample_size
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        decoder = self.vqmodel.model if self.vqmodel is not None else self.autoencoder.model  # type: ignore[union-attr]
        source = self.denoiser.source or "denoiser"
        label = f"samples of {source} ({self.count}, {self.scheduler.class_name} {self.steps} steps, seed {self.seed})"
        images = SampledImages(self.denoiser, self.scheduler, decoder, self.count, self.steps, self.seed,
                               (int(config.in_channels), h, w), label, self.batch)
        return self.Outputs(image_set=images)


class GANImageSet(Node):
    """Samples of a GAN generator: made chunk by chunk as the set is read; item i is the same whatever the chunk."""

    CLASS_TYPE = "GenArtGANImageSet"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        image_set: ImageSetSocket = Field(description="the samples, made when read")

    gan: GAN = Field(description="the GAN generator (GenArt Load GAN, GenArt Train GAN)")
    count: int = Field(332, ge=1, le=MAX_SET, description="samples in the set")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of z: one CPU stream draws every sample's z in order")
    truncation_psi: float = Field(1.0, ge=0.0, le=2.0, description="truncation psi (1 = none; < 1 trades "
                                  "diversity for fidelity)")
    noise_strength: float = Field(1.0, ge=0.0, le=100.0, description="global factor on the learned layer-noise "
                                  "strengths (1 = as trained)")
    block_strengths: str = Field("", description="per-block factors on noise_strength, '1, 1, 0, 1' (empty = 1 "
                                 "on every block)")
    noise_kind: NoiseKind = Field(
        "gaussian", description="distribution of the injected noise (gaussian as trained)")
    noise_seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the layer noise (its own CPU stream)")
    batch: int = Field(128, ge=1, le=MAX_BATCH, description="samples made per chunk")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        return block_strength_problems(constants)

    def run(self, ctx: RunContext) -> Outputs:
        model = self.gan.model
        noise = NoiseSettings(block_strengths(self.noise_strength, self.block_strengths, model.num_blocks),
                              self.noise_kind, self.noise_seed, self.truncation_psi)
        changed = (self.noise_strength, self.block_strengths.strip(), self.noise_kind, self.noise_seed) != (
            1.0, "", "gaussian", 0)
        blocks = f" [{self.block_strengths.strip()}]" if self.block_strengths.strip() else ""
        extra = (f", noise {self.noise_kind} x{self.noise_strength:g}{blocks} seed {self.noise_seed}"
                 if changed else "")
        label = (f"samples of {self.gan.source or 'GAN'} ({self.count}, psi {self.truncation_psi:g}, seed "
                 f"{self.seed}{extra})")
        return self.Outputs(image_set=GANImages(model, self.count, self.seed, noise, label, self.batch))


class RandomCodesImageSet(Node):
    """Decoded maps of uniformly random VQ codes: the ceiling a denoiser over VQ latents must beat (a model
    that learnt nothing about how codes are arranged draws these)."""

    CLASS_TYPE = "GenArtRandomCodesImageSet"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        image_set: ImageSetSocket = Field(description="the decoded random code maps, made when read")

    vqmodel: VQModel = Field(description="the VQ autoencoder")
    count: int = Field(332, ge=1, le=MAX_SET, description="images in the set")
    resolution: int = Field(32, ge=8, le=MAX_RESOLUTION, description="image side in pixels (the code map is this "
                            "over the model's downscale factor)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the codes")

    def run(self, ctx: RunContext) -> Outputs:
        factor = 2 ** (len(self.vqmodel.model.config.block_out_channels) - 1)
        if self.resolution % factor:
            raise ValueError(f"input 'resolution' = {self.resolution} is not a multiple of the model's downscale "
                             f"factor {factor}")
        cells = self.resolution // factor
        label = f"random codes of {self.vqmodel.source or 'VQ model'} ({self.count}, seed {self.seed})"
        return self.Outputs(image_set=RandomCodeImages(self.vqmodel.model, self.count, cells, cells, self.seed,
                                                       label))


class ImageSetImages(Node):
    """Read images start .. start+count-1 of an image set as an IMAGE batch (to look at them)."""

    CLASS_TYPE = "GenArtImageSetImages"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        image: Image = Field(description="the images, [N, H, W, 3] float32 in [0, 1] (fewer at the set's end)")

    image_set: ImageSetSocket = Field(description="the image set")
    start: int = Field(0, ge=0, le=MAX_SET, description="first image")
    count: int = Field(64, ge=1, le=MAX_BATCH, description="images to read")

    def run(self, ctx: RunContext) -> Outputs:
        indices = list(range(self.start, min(self.start + self.count, self.image_set.count)))
        if not indices:
            raise ValueError(f"input 'start' = {self.start} is past the end of {self.image_set.label!r} "
                             f"({self.image_set.count} images)")
        return self.Outputs(image=nchw_to_image(self.image_set.take(indices)))


# --- feature extractors -------------------------------------------------------------------------------------

class VQEncoderFeatureExtractor(Node):
    """Features from a VQ encoder: its mid-block output, mean and standard deviation over space per channel.
    Needs no download; what the default model's card reports. Not comparable across models."""

    CLASS_TYPE = "GenArtVQEncoderFeatures"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        features: FeatureExtractorSocket = Field(description="the feature extractor")

    vqmodel: VQModel = Field(description="the VQ autoencoder whose encoder gives the features")

    def run(self, ctx: RunContext) -> Outputs:
        return self.Outputs(features=VQEncoderFeatures(self.vqmodel.model, self.vqmodel.source or "VQ model"))


INCEPTION_HELP = (f"the FID Inception weights ({INCEPTION_FILE}, the file pytorch-fid and torchmetrics download; "
                  "a .safetensors conversion works too) inside the models/inception folders")


class InceptionFeatureExtractor(Node):
    """The standard FID Inception v3 network's pool3 features (2048-d): Frechet distances with it are FIDs,
    comparable to published ones. Loads a weights file you already have; nothing is downloaded."""

    CLASS_TYPE = "GenArtInceptionFeatures"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        features: FeatureExtractorSocket = Field(description="the feature extractor")

    model_name: Annotated[str, FileInput("models/inception", (".pth", ".pt", ".safetensors"))] = Field(
        INCEPTION_FILE, description=INCEPTION_HELP)
    device: DeviceChoice = Field("auto", description=DEVICE_HELP)
    batch: int = Field(64, ge=1, le=MAX_BATCH, description="images per forward pass (each is resized to 299x299)")

    @classmethod
    def check_constants(cls, constants: dict[str, Any], ctx: RunContext) -> list[tuple[str, str]]:
        problems = device_problems(constants)
        name = constants.get("model_name")
        if isinstance(name, str):
            try:
                _inception_path(ctx, name)
            except (ModelLoadError, UnsafePathError) as err:
                problems.append(("model_name", str(err)))
        return problems

    def run(self, ctx: RunContext) -> Outputs:
        module = load_fid_inception(_inception_path(ctx, self.model_name)).to(resolve_device(self.device, ctx))
        return self.Outputs(features=ModuleFeatures(module, f"FID Inception pool3 ({self.model_name})", 2048,
                                                    self.batch))


def _inception_path(ctx: RunContext, name: str) -> Any:
    if not name:
        roots = ", ".join(str(r) for r in ctx.paths.roots("models/inception"))
        raise ModelLoadError(f"no Inception weights chosen; put {INCEPTION_FILE} (the FID Inception weights "
                             f"pytorch-fid downloads) in one of: {roots}")
    try:
        return model_path(ctx, "inception", name, "model_name")
    except ModelLoadError as err:
        raise ModelLoadError(f"{err}. Put {INCEPTION_FILE} (the FID Inception weights pytorch-fid and "
                             "torchmetrics download) there; GenArt never downloads it") from err


class ExtractFeatures(Node):
    """Features of every image of an image set, chunk by chunk. Cached (and kept in --cache-dir): a dataset
    split's reference features are computed once per set of files, extractor and resolution."""

    CLASS_TYPE = "GenArtExtractFeatures"
    CATEGORY = "GenArt/evaluate"
    PERSIST_OUTPUTS = True

    class Outputs(NodeOutputs):
        feature_set: FeatureSetSocket = Field(description="one feature vector per image, with the set's label and "
                                              "the extractor's name")
        count: IntSocket = Field(description="images measured")

    features: FeatureExtractorSocket = Field(description="the feature extractor (GenArt VQ Encoder Features, "
                                             "GenArt Inception Features)")
    image_set: ImageSetSocket = Field(description="the images")

    def run(self, ctx: RunContext) -> Outputs:
        images: ImageSet = self.image_set
        with ctx.progress(images.count, f"{ctx.node_id} features of {images.label}") as bar:
            feature_set = extract_features(self.features, images, bar.update)
        return self.Outputs(feature_set=feature_set, count=feature_set.count)


# --- metrics ------------------------------------------------------------------------------------------------

class FrechetDistance(Node):
    """Frechet distance between two feature sets (FID with Inception features): the distance between the
    Gaussians fitted to them. Lower is closer; two samples of one distribution give a small positive floor."""

    CLASS_TYPE = "GenArtFrechetDistance"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        metrics: Metrics = Field(description="the measurement 'frechet_distance', labelled with both sets and "
                                 "the extractor")
        distance: FloatSocket = Field(description="the Frechet distance")

    real: FeatureSetSocket = Field(description="features of the reference images (a dataset split)")
    generated: FeatureSetSocket = Field(description="features of the images to judge")
    label: str = Field("", description=LABEL_HELP)

    def run(self, ctx: RunContext) -> Outputs:
        same_space(self.real, self.generated, ("real", "generated"))
        value = frechet_distance(self.real.features, self.generated.features)
        m = _one("frechet_distance", value, _row(self.label, self.real, self.generated))
        return self.Outputs(metrics=MetricSet((m,)), distance=value)


class KernelDistance(Node):
    """Kernel distance (KID, Binkowski et al. 2018): unbiased polynomial-kernel MMD^2 averaged over random
    subsets, with its standard deviation. Unbiased, so usable on small sets where FD is biased."""

    CLASS_TYPE = "GenArtKernelDistance"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        metrics: Metrics = Field(description="the measurements 'kid' and 'kid_std'")
        kid: FloatSocket = Field(description="mean over subsets")
        kid_std: FloatSocket = Field(description="standard deviation over subsets (population, as torchmetrics)")

    real: FeatureSetSocket = Field(description="features of the reference images")
    generated: FeatureSetSocket = Field(description="features of the images to judge")
    subsets: int = Field(100, ge=1, le=10_000, description="random subsets averaged")
    subset_size: int = Field(1000, ge=0, le=MAX_SET, description="images per subset from each set (the usual "
                             "1000 needs 1000 images on each side); 0 = 1000 or half the smaller set, whichever is "
                             "less (subsets as large as a set would all be the same set: no spread)")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the subsets")
    label: str = Field("", description=LABEL_HELP)

    def run(self, ctx: RunContext) -> Outputs:
        same_space(self.real, self.generated, ("real", "generated"))
        size = self.subset_size or min(1000, min(self.real.count, self.generated.count) // 2)
        kid, std = kernel_distance(self.real.features, self.generated.features, self.subsets, size, self.seed)
        row = f"{_row(self.label, self.real, self.generated)} KID {self.subsets}x{size}"
        return self.Outputs(metrics=MetricSet((_one("kid", kid, row), _one("kid_std", std, row))), kid=kid,
                            kid_std=std)


class PrecisionRecall(Node):
    """Precision and recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020) with k-nearest-
    neighbour balls: precision = how many generated images look real (fidelity), recall = how much of the
    real data the generated images reach (diversity)."""

    CLASS_TYPE = "GenArtPrecisionRecall"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        metrics: Metrics = Field(description="the measurements 'precision', 'recall', 'density', 'coverage'")
        precision: FloatSocket = Field(description="share of generated images inside the real data's k-NN balls")
        recall: FloatSocket = Field(description="share of real images inside the generated data's k-NN balls")
        density: FloatSocket = Field(description="real balls holding each generated image, over k (1 = as dense "
                                     "as the real data)")
        coverage: FloatSocket = Field(description="share of real balls that hold some generated image")

    real: FeatureSetSocket = Field(description="features of the reference images")
    generated: FeatureSetSocket = Field(description="features of the images to judge")
    k: int = Field(5, ge=1, le=100, description="neighbours that set a ball's radius (5 in both papers)")
    label: str = Field("", description=LABEL_HELP)

    def run(self, ctx: RunContext) -> Outputs:
        same_space(self.real, self.generated, ("real", "generated"))
        r = precision_recall_density_coverage(self.real.features, self.generated.features, self.k)
        row = f"{_row(self.label, self.real, self.generated)} k={self.k}"
        values = {"precision": r.precision, "recall": r.recall, "density": r.density, "coverage": r.coverage}
        return self.Outputs(metrics=MetricSet(tuple(_one(n, v, row) for n, v in values.items())), **values)


class Memorization(Node):
    """Does the model copy its training images? For each generated image its nearest training image in feature
    space, and the ratio of that distance to the second nearest: a ratio far below 1 means one training image
    stands out as a near copy. The grid pairs the most suspicious samples with their nearest neighbours."""

    CLASS_TYPE = "GenArtMemorization"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        metrics: Metrics = Field(description="per generated image: 'nn_distance', 'nn_ratio'; and 'near_copies' "
                                 "(share with a ratio under the threshold)")
        grid: Image = Field(description="rows of [generated | nearest training image | second nearest], lowest "
                            "ratio first")
        lowest_ratio: FloatSocket = Field(description="the smallest nearest / second-nearest distance ratio")
        near_copies: FloatSocket = Field(description="share of generated images under the threshold")

    training: FeatureSetSocket = Field(description="features of the training images")
    generated: FeatureSetSocket = Field(description="features of the generated images")
    training_images: ImageSetSocket = Field(description="the image set 'training' was extracted from (for the grid)")
    generated_images: ImageSetSocket = Field(description="the image set 'generated' was extracted from")
    show: int = Field(16, ge=1, le=256, description="pairs in the grid")
    threshold: float = Field(1 / 3, gt=0.0, le=1.0, description="a ratio under this counts as a near copy (1/3, as "
                             "Carlini et al. 2023 flag extracted training images)")
    label: str = Field("", description=LABEL_HELP)

    def run(self, ctx: RunContext) -> Outputs:
        same_space(self.training, self.generated, ("training", "generated"))
        for features, images, name in ((self.training, self.training_images, "training"),
                                       (self.generated, self.generated_images, "generated")):
            if features.label != images.label or features.count != images.count:
                raise ValueError(f"input '{name}_images' is {images.label!r} but the features in {name!r} were "
                                 f"extracted from {features.label!r}; connect the image set they came from")
        distances, indices = nearest_neighbours(self.generated.features, self.training.features)
        ratio = distances[:, 0] / distances[:, 1].clamp_min(1e-12)
        row = _row(self.label, self.training, self.generated)
        copies = float((ratio < self.threshold).double().mean())
        metrics = MetricSet((measured("nn_distance", distances[:, 0], row), measured("nn_ratio", ratio, row),
                             _one("near_copies", copies, f"{row} ratio<{self.threshold:.3g}")))
        order = ratio.argsort()[:self.show].tolist()
        samples = self.generated_images.take(order)
        first = self.training_images.take(indices[order, 0].tolist())
        second = self.training_images.take(indices[order, 1].tolist())
        if not (samples.shape[1:] == first.shape[1:]):
            first = torch.nn.functional.interpolate(first, size=samples.shape[-2:], mode="bilinear")
            second = torch.nn.functional.interpolate(second, size=samples.shape[-2:], mode="bilinear")
        triples = torch.stack([samples, first, second], dim=1).flatten(0, 1)
        grid = image_grid(nchw_to_image(triples), 3, 2, 1.0, MAX_PIXELS)
        return self.Outputs(metrics=metrics, grid=grid, lowest_ratio=float(ratio.min()), near_copies=copies)


class EvaluateVQ(Node):
    """How well a VQ autoencoder reconstructs an image set: PSNR and SSIM per image (skimage's convention,
    Gaussian window, valid border) and the share of the codebook the set uses. Streams the set."""

    CLASS_TYPE = "GenArtEvaluateVQ"
    CATEGORY = "GenArt/evaluate"

    class Outputs(NodeOutputs):
        metrics: Metrics = Field(description="per image 'psnr' and 'ssim'; 'codebook_usage' and 'codes_used'")
        psnr: FloatSocket = Field(description="mean PSNR in dB")
        ssim: FloatSocket = Field(description="mean SSIM")
        codebook_usage: FloatSocket = Field(description="distinct codes used / codebook size")

    vqmodel: VQModel = Field(description="the VQ autoencoder")
    image_set: ImageSetSocket = Field(description="the images to reconstruct (e.g. the held-out split)")
    label: str = Field("", description=LABEL_HELP)

    def run(self, ctx: RunContext) -> Outputs:
        images: ImageSet = self.image_set
        with ctx.progress(images.count, f"{ctx.node_id} reconstruct {images.label}") as bar:
            r = measure_reconstructions(self.vqmodel.model, images.chunks(bar.update))
        row = f"{self.label + ': ' if self.label else ''}{self.vqmodel.source or 'VQ model'} on {images.label}"
        usage = r.codes_used / r.num_codes
        metrics = MetricSet((measured("psnr", r.psnr, row), measured("ssim", r.ssim, row),
                             _one("codebook_usage", usage, row), _one("codes_used", float(r.codes_used), row)))
        return self.Outputs(metrics=metrics, psnr=float(r.psnr.mean()), ssim=float(r.ssim.mean()),
                            codebook_usage=usage)
